"""The agent's HTTP/1.1 server: the standard library's asyncio and nothing else.

The agent answers one POS application on its own machine, over a Unix socket or loopback
TCP, with small JSON documents; what it must be is quick (a payment's request sits between the
till and the card host) and small (it runs on the terminal).  A general web framework cost some
80 us of CPU a request here, more than the journal's own work; this server parses a request
in a few microseconds.  It speaks what clients send (keep-alive, pipelining, ``Content-Length``
or ``chunked`` bodies, ``Expect: 100-continue``, HTTP/1.0) and refuses the rest with a JSON
error, always a 4xx (a client's mistake is never answered as the agent's): a request head over
:data:`MAX_HEAD` (431), a body over the server's limit (413), both ``Content-Length`` and
``Transfer-Encoding``, another transfer coding than chunked, another HTTP version, a malformed
line or length (400, and the connection is closed, as nothing after it can be framed).

A handler takes a :class:`Request` and returns ``(status, body, headers)``, or an awaitable of
that when it has to wait (a print, a sync); requests on one connection are answered in order.
"""
from __future__ import annotations

import asyncio
import http
import json
import logging
import re
from typing import Any, Callable, Optional
from urllib.parse import parse_qsl, unquote

from ..errors import PosfastError

#: Largest request line + headers.
MAX_HEAD = 16 * 1024
#: Seconds a connection may stay idle (or sit on a partial request) before it is closed.
IDLE_TIMEOUT = 75.0
_MAX_FIELDS = 100

log = logging.getLogger("posfast.agent")

__all__ = ["HttpServer", "MAX_HEAD", "Request", "Router", "error_body"]


def error_body(reason: str, message: str, field: Optional[str] = None) -> bytes:
    """The agent's ``Error`` document."""
    return json.dumps({"ok": False, "reason": reason, "field": field, "message": message},
                      ensure_ascii=False).encode("utf-8")


class _Refusal(PosfastError):
    def __init__(self, status: int, reason: str, message: str, headers=None, close: bool = True):
        super().__init__(message)
        self.status, self.reason, self.message, self.close = status, reason, message, close
        self.headers = headers or {}


class Request:
    """One request: ``method``, ``path`` (decoded), ``query`` (``{name: [values]}``),
    ``headers`` (lower-case names), ``body`` (bytes), ``match`` (the path's parameters)."""

    __slots__ = ("method", "path", "query", "headers", "body", "match")

    def __init__(self, method: str, path: str, query: dict, headers: dict, body: bytes):
        self.method, self.path, self.query, self.headers, self.body = method, path, query, headers, body
        self.match: dict = {}


class Router:
    """Routes by path template (``/v1/payments/{txn_id}/finish``) and method."""

    def __init__(self):
        self._routes: list = []          # (template, compiled, {METHOD: handler})

    def add(self, method: str, template: str, handler: Callable) -> None:
        for known, _, methods in self._routes:
            if known == template:
                methods[method.upper()] = handler
                return
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        self._routes.append((template, re.compile(pattern + r"\Z"), {method.upper(): handler}))

    def routes(self) -> list:
        """``[(method, template)]`` of every route."""
        return [(m, t) for t, _, methods in self._routes for m in methods]

    def resolve(self, method: str, path: str):
        allowed: list = []
        for _, compiled, methods in self._routes:
            found = compiled.match(path)
            if found is None:
                continue
            if method in methods:
                return methods[method], found.groupdict()
            allowed += methods
        if allowed:
            raise _Refusal(405, "invalid", "%s %s: Method Not Allowed" % (method, path[:200]),
                           {"Allow": ", ".join(sorted(set(allowed)))}, close=False)
        raise _Refusal(404, "not_found", "%s %s: Not Found" % (method, path[:200]), close=False)


class _Connection(asyncio.Protocol):
    def __init__(self, server: "HttpServer"):
        self.server = server
        self.buf = bytearray()
        self.transport: Any = None
        self.busy = False                 # a handler is waiting: later requests queue in buf
        self.paused = False               # the peer is not reading its replies
        self.continued = False            # 100 Continue sent for the request in buf
        self.skip = 0                     # bytes still to come of a body refused as too large
        self.timer: Optional[asyncio.TimerHandle] = None

    # ------------------------------------------------------------------ asyncio callbacks
    def connection_made(self, transport):
        self.transport = transport
        self.server.connections.add(self)
        self._arm()

    def connection_lost(self, exc):
        self.server.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()

    def data_received(self, data):
        if self.skip:                     # the rest of a refused body: read, dropped
            cut = min(self.skip, len(data))
            self.skip -= cut
            data = data[cut:]
        self.buf += data
        if not self.busy and not self.paused:
            self._serve()

    def eof_received(self):
        return False

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        if not self.busy:
            self._serve()

    # ------------------------------------------------------------------ requests
    def _arm(self):
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(IDLE_TIMEOUT, self._idle)

    def _idle(self):
        if not self.busy and self.transport is not None:
            self.transport.close()

    def _serve(self):
        while self.buf and not self.transport.is_closing() and not self.paused:
            try:
                parsed = self._parse()
            except _Refusal as refusal:
                self._write(refusal.status, error_body(refusal.reason, refusal.message),
                            refusal.headers, close=refusal.close)
                if refusal.close:
                    return
                continue
            if parsed is None:
                return
            request, keep = parsed
            self._arm()
            try:
                handler, request.match = self.server.router.resolve(request.method, request.path)
            except _Refusal as refusal:
                self._write(refusal.status, error_body(refusal.reason, refusal.message),
                            refusal.headers, close=not keep)
                continue
            try:
                result = self.server.call(handler, request)
            except Exception:                 # (the app answers its own errors: this is a bug)
                log.exception("error answering %s %s", request.method, request.path[:80])
                result = (500, error_body("internal", "internal error (logged by the agent)"), None)
            if isinstance(result, tuple):
                status, body, headers = result
                self._write(status, body, headers, close=not keep)
                continue
            self.busy = True
            asyncio.ensure_future(self._later(result, keep))
            return

    async def _later(self, pending, keep: bool):
        try:
            result = await pending
        except Exception:
            log.exception("error answering a request")
            result = (500, error_body("internal", "internal error (logged by the agent)"), None)
        finally:
            self.busy = False
        if self.transport.is_closing():
            return
        status, body, headers = result
        self._write(status, body, headers, close=not keep)
        self._arm()
        self._serve()

    def _write(self, status: int, body: bytes, headers=None, close: bool = False):
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Status"
        head = ["HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\n"
                "Content-Length: %d\r\n" % (status, phrase, len(body))]
        for name, value in (headers or {}).items():
            head.append("%s: %s\r\n" % (name, value))
        if close:
            head.append("Connection: close\r\n")
        head.append("\r\n")
        self.transport.write("".join(head).encode("latin-1") + body)
        if close:
            self.transport.close()

    def _parse(self):
        """The next whole request in ``buf`` (taken out of it) and whether the connection stays
        open after it; None while it is still arriving."""
        buf = self.buf
        end = buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
        if end < 0:
            if len(buf) > MAX_HEAD:
                raise _Refusal(431, "invalid", "request head over %d bytes" % MAX_HEAD)
            return None
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        while lines and not lines[0]:                 # blank lines between requests (RFC 9112 2.2)
            lines.pop(0)
        parts = lines[0].split(" ") if lines else []
        if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith("/"):
            raise _Refusal(400, "invalid", "malformed request line")
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise _Refusal(400, "invalid", "HTTP/1.1 or HTTP/1.0 only, not %r" % version[:20])
        headers: dict = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip() or " " in name:
                raise _Refusal(400, "invalid", "malformed header line %r" % line[:60])
            name, value = name.lower(), value.strip(" \t")
            if name in headers and name in ("content-length", "transfer-encoding", "host"):
                raise _Refusal(400, "invalid", "%s given twice" % name)
            headers[name] = "%s, %s" % (headers[name], value) if name in headers else value
        start = end + 4
        if "transfer-encoding" in headers:
            if "content-length" in headers:
                raise _Refusal(400, "invalid", "both Content-Length and Transfer-Encoding")
            if headers["transfer-encoding"].lower() != "chunked":
                raise _Refusal(400, "invalid", "Transfer-Encoding %r is not supported (chunked is)"
                               % headers["transfer-encoding"][:40])
            chunked = self._chunked(start)
            if chunked is None:
                return self._continue(headers, version)
            body, stop = chunked
        else:
            length_text = headers.get("content-length", "0")
            if not length_text.isdigit() or len(length_text) > 18:
                raise _Refusal(400, "invalid", "malformed Content-Length %r" % length_text[:40])
            length = int(length_text)
            if length > self.server.max_body:
                # a body up to a few times the limit is read and dropped, so that the client,
                # still sending it, gets the 413 rather than a broken pipe; a larger one closes
                message = "body over %d bytes" % self.server.max_body
                if length > 4 * self.server.max_body:
                    raise _Refusal(413, "too_large", message)
                take = min(length, len(buf) - start)
                del buf[:start + take]
                self.skip = length - take
                raise _Refusal(413, "too_large", message, close=False)
            if len(buf) - start < length:
                return self._continue(headers, version)
            body, stop = bytes(buf[start:start + length]), start + length
        del buf[:stop]
        self.continued = False
        connection = headers.get("connection", "").lower()
        keep = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        path, _, query_text = target.partition("?")
        try:
            path = unquote(path, errors="strict")
            query: dict = {}
            for name, value in parse_qsl(query_text, keep_blank_values=True, errors="strict",
                                         max_num_fields=_MAX_FIELDS):
                query.setdefault(name, []).append(value)
        except UnicodeDecodeError:
            raise _Refusal(400, "invalid", "the request target is not UTF-8", close=not keep) from None
        except ValueError:
            raise _Refusal(400, "invalid", "more than %d query parameters" % _MAX_FIELDS,
                           close=not keep) from None
        return Request(method, path, query, headers, body), keep

    def _continue(self, headers: dict, version: str):
        if (not self.continued and version == "HTTP/1.1"
                and headers.get("expect", "").lower() == "100-continue"):
            self.continued = True
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None

    def _chunked(self, pos: int):
        """``(body, end)`` of a whole chunked body starting at ``pos``; None while it arrives."""
        buf, limit, body = self.buf, self.server.max_body, bytearray()
        while True:
            eol = buf.find(b"\r\n", pos, pos + 1024)
            if eol < 0:
                if len(buf) - pos > 1024:
                    raise _Refusal(400, "invalid", "malformed chunk size line")
                return None
            size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _Refusal(400, "invalid", "malformed chunk size %r" % size_text[:20]) from None
            if size < 0 or len(body) + size > limit:
                raise _Refusal(413, "too_large", "body over %d bytes" % limit)
            pos = eol + 2
            if size == 0:
                while True:                        # trailer fields, then the closing blank line
                    eol = buf.find(b"\r\n", pos, pos + MAX_HEAD)
                    if eol < 0:
                        if len(buf) - pos > MAX_HEAD:
                            raise _Refusal(431, "invalid", "chunked trailer over %d bytes" % MAX_HEAD)
                        return None
                    if eol == pos:
                        return bytes(body), eol + 2
                    pos = eol + 2
            if len(buf) < pos + size + 2:
                return None
            if buf[pos + size:pos + size + 2] != b"\r\n":
                raise _Refusal(400, "invalid", "malformed chunk (no CRLF after its data)")
            body += buf[pos:pos + size]
            pos += size + 2


class HttpServer:
    """Serves `router` on listening sockets: ``await server.start_unix(sock)``,
    ``await server.start_tcp(host, port, ssl=...)``, then ``await server.close()``.

    ``call(handler, request)`` runs a handler (the app wraps its errors into replies).
    """

    def __init__(self, router: Router, max_body: int, call: Optional[Callable] = None):
        self.router = router
        self.max_body = max_body
        self.call = call or (lambda handler, request: handler(request))
        self.connections: set = set()
        self.servers: list = []

    async def start_unix(self, sock) -> asyncio.AbstractServer:
        server = await asyncio.get_running_loop().create_unix_server(lambda: _Connection(self), sock=sock)
        self.servers.append(server)
        return server

    async def start_tcp(self, host: str, port: int, ssl=None) -> asyncio.AbstractServer:
        server = await asyncio.get_running_loop().create_server(lambda: _Connection(self), host, port, ssl=ssl)
        self.servers.append(server)
        return server

    async def close(self, grace: float = 30.0) -> None:
        """Stop accepting, let the requests being answered finish (up to `grace` s), close."""
        for server in self.servers:
            server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(c.busy for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        for server in self.servers:
            await server.wait_closed()
