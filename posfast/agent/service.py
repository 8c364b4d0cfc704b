"""Running the agent (``posfast agent``): the journal opened for writing, the syncers on
their threads, the HTTP application on a Unix socket or loopback TCP, the discovery file.

A Unix socket is created mode 0600 (the umask is narrowed around its bind, so there is no
moment it is wider), beside the journal unless ``--socket`` says where; a stale socket file
left by a killed agent is replaced, a live one (another agent) stops the start.  TCP needs a
bearer token (``--token-file``, at least 16 characters); an address that is not loopback also
needs TLS (``--tls-cert`` / ``--tls-key``, as ``posfast serve`` has them).
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
import socket
import stat
import sys
import threading
import time
from typing import Iterable, Optional
from urllib.parse import urlsplit, urlunsplit

from ..errors import InvalidArgument
from .client import discovery_path, socket_path_for

__all__ = ["parse_listen", "read_token_file", "run_agent"]

_SOCKET_PATH_MAX = 100      # sun_path is 108 bytes on Linux, 104 on macOS


def parse_listen(text: str) -> tuple:
    """``"127.0.0.1:8765"`` -> ``("127.0.0.1", 8765, True)`` (host, port, is loopback).

    >>> parse_listen("127.0.0.1:8765"), parse_listen("[::1]:0")[2], parse_listen("0.0.0.0:9")[2]
    (('127.0.0.1', 8765, True), True, False)
    """
    host, sep, port = str(text).rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidArgument("--listen %s: give HOST:PORT, e.g. 127.0.0.1:8765 (port 0 picks one)" % text)
    if host == "localhost":
        loopback = True
    else:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            raise InvalidArgument("--listen %s: give an IP address (127.0.0.1, ::1 or, with TLS, "
                                  "this machine's address), not a name" % text) from None
    return host, int(port), loopback


def read_token_file(path) -> str:
    """The bearer token in `path` (whitespace stripped), at least 16 characters."""
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except FileNotFoundError:
        raise FileNotFoundError("cannot read --token-file %s: no such file" % path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument("cannot read --token-file %s: %s" % (path, exc)) from None
    if len(token) < 16 or any(c.isspace() or not c.isprintable() for c in token):
        raise InvalidArgument("--token-file %s: the token must be at least 16 printable characters "
                              "without spaces (make one: python3 -c 'import secrets; "
                              "print(secrets.token_urlsafe(24))')" % path)
    return token


def _unix_socket(path: str) -> socket.socket:
    if len(os.fsencode(path)) > _SOCKET_PATH_MAX:
        raise InvalidArgument("socket path %s is %d bytes, over the %d a Unix socket path may have: "
                              "give a shorter --socket" % (path, len(os.fsencode(path)), _SOCKET_PATH_MAX))
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None:
        if not stat.S_ISSOCK(mode):
            raise InvalidArgument("%s exists and is not a socket: give another --socket" % path)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)              # left by an agent that was killed
        else:
            raise InvalidArgument("another agent listens on %s" % path)
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(256)
    return sock


def _write_discovery(path: str, info: dict) -> None:
    tmp = "%s.%d.tmp" % (path, os.getpid())
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, path)


def _safe_url(url: str) -> str:
    """A back office's URL without its password (status pages and logs show it)."""
    parts = urlsplit(url)
    if parts.password:
        netloc = "%s:***@%s" % (parts.username or "", parts.hostname or "")
        if parts.port:
            netloc += ":%d" % parts.port
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def run_agent(journal_path, socket_path: Optional[str] = None, listen: Optional[str] = None,
              token_file: Optional[str] = None, sync_to: Iterable[str] = (),
              sync_token: Optional[str] = None, sync_interval: float = 5.0,
              printer: Optional[str] = None, tls_cert: Optional[str] = None,
              tls_key: Optional[str] = None, durability: str = "fsync", out=sys.stdout,
              printer_profile: Optional[str] = None) -> None:
    """Run ``posfast agent`` until SIGTERM or SIGINT: the one writer of `journal_path`.

    Prints ``posfast agent listening on unix:PATH`` (or ``http://HOST:PORT``) once it accepts
    requests, and leaves the journal closed, the socket and discovery file removed.

    >>> run_agent("till.pfj", sync_to=["https://bo.example:8443"], printer="tcp://10.0.0.9:9100")  # doctest: +SKIP
    """
    from ..journal import Journal
    from .app import make_app
    journal_path = os.path.abspath(os.fspath(journal_path))
    token = ssl_context = None
    if listen is not None:
        host, port, loopback = parse_listen(listen)
        if token_file is None:
            raise InvalidArgument("--listen needs --token-file: every TCP request carries its bearer token")
        token = read_token_file(token_file)
        if bool(tls_cert) != bool(tls_key):
            raise InvalidArgument("--tls-cert and --tls-key go together")
        if not loopback and not tls_cert:
            raise InvalidArgument("--listen %s is not a loopback address: the agent listens there only "
                                  "with TLS (--tls-cert FILE --tls-key FILE)" % listen)
        if tls_cert:
            from ..sync.server import server_ssl_context
            ssl_context = server_ssl_context(tls_cert, tls_key)
    elif token_file or tls_cert or tls_key:
        raise InvalidArgument("--token-file, --tls-cert and --tls-key go with --listen (the Unix socket "
                              "is guarded by its file mode)")
    if listen is None and socket_path is None:
        socket_path = socket_path_for(journal_path)
    if not hasattr(socket, "AF_UNIX") and socket_path is not None:
        raise InvalidArgument("this system has no Unix sockets (Windows named pipes are not supported "
                              "yet): run the agent with --listen 127.0.0.1:PORT --token-file FILE")
    printer_obj = None
    if printer_profile is not None:
        from ..printing.profiles import get_profile
        get_profile(printer_profile)            # an unknown profile stops the start, named
    if printer is not None:
        from ..printing import open_printer
        printer_obj = open_printer(printer, what="--printer")
    from ..sync import Syncer, target_from_url
    journal = Journal.open(journal_path, durability=durability)   # JournalLocked: another writer
    stop_sync = threading.Event()
    threads, syncers, targets = [], [], []
    try:
        for url in sync_to:
            target = target_from_url(url, token=sync_token)
            targets.append(target)
            syncer = Syncer(journal, target)
            syncers.append((_safe_url(url), syncer))
            thread = threading.Thread(target=syncer.run_forever, args=(stop_sync, sync_interval),
                                      name="posfast-agent-sync", daemon=True)
            threads.append(thread)

        def make_target(url, token=None, create=False):
            return target_from_url(url, token=token, **({"create": True} if create else {}))

        info = {"journal": journal_path, "socket": socket_path, "url": None,
                "token_file": os.path.abspath(token_file) if token_file else None,
                "journal_id": str(journal.journal_id), "pid": os.getpid(), "started_at": time.time()}
        app = make_app(journal, printer=printer_obj, syncers=syncers, token=token, info=info,
                       make_target=make_target, printer_profile=printer_profile)
        asyncio.run(_serve(app, journal_path, socket_path, listen, ssl_context, info, threads, out))
    finally:
        stop_sync.set()
        for thread in threads:
            if thread.is_alive():
                thread.join(30)
        for target in targets:
            try:
                target.close()
            except Exception:
                pass
        journal.close()


async def _serve(app, journal_path, socket_path, listen, ssl_context, info, threads, out):
    from .http1 import HttpServer
    server = HttpServer(app.router, app.max_body)         # the app's handlers answer their own errors
    where, made = [], []
    try:
        if socket_path is not None:
            sock = _unix_socket(socket_path)
            made.append(socket_path)
            await server.start_unix(sock)
            where.append("unix:%s" % socket_path)
        if listen is not None:
            host, port, _ = parse_listen(listen)
            try:
                tcp = await server.start_tcp(host, port, ssl=ssl_context)
            except OSError as exc:
                raise InvalidArgument("cannot listen on %s: %s" % (listen, exc.strerror or exc)) from None
            bound = tcp.sockets[0].getsockname()
            scheme = "https" if ssl_context else "http"
            host = bound[0] if ":" not in bound[0] else "[%s]" % bound[0]
            info["url"] = "%s://%s:%d" % (scheme, host, bound[1])
            where.append(info["url"])
        for thread in threads:
            thread.start()
        _write_discovery(discovery_path(journal_path), info)
        made.append(discovery_path(journal_path))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):      # Windows, not the main thread
                pass
        print("posfast agent listening on %s (journal %s, pid %d)" % (
            " and ".join(where), journal_path, os.getpid()), file=out, flush=True)
        await stop.wait()
    finally:
        await server.close()
        app.close()
        for path in made:                # only what this agent made: never another's socket
            try:
                os.unlink(path)
            except OSError:
                pass
