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
line or length (400, and the connection is closed, as nothing after it can be framed), an
HTTP/1.1 request without ``Host`` (400, RFC 9112 3.2; the connection goes on).  The path is
split into segments before it is decoded, so ``%2F`` is a slash inside a segment.

A handler takes a :class:`Request` and returns ``(status, body, headers)``, or an awaitable of
that when it has to wait (a print, a sync); requests on one connection are answered in order.
"""
from __future__ import annotations

import asyncio
import http
import json
import logging
import re
import time
from typing import Any, Callable, Optional
from urllib.parse import parse_qsl, unquote

from ..errors import PosfastError

#: Largest request line + headers.
MAX_HEAD = 16 * 1024
#: Seconds a connection may stay idle (or sit on a partial request) before it is closed.
IDLE_TIMEOUT = 75.0
#: Most connections held open at once (fewer when the process has few file descriptors): one
#: over it closes the connection idle the longest, so a client holding many open (slowloris)
#: cannot starve the till of descriptors for its journal, printer and back office.
MAX_CONNECTIONS = 256
#: Seconds a TLS client has for its handshake.
TLS_HANDSHAKE_TIMEOUT = 10.0
#: Connections asyncio accepts at once before the server sees any (its listen backlog too), and
#: the descriptors kept for the journal, printer, back offices and threads.
_BACKLOG = 100
_RESERVED = _BACKLOG + 60
_MAX_FIELDS = 100
#: Bytes of requests read ahead while a handler waits or the peer does not read its replies;
#: past it the server stops reading (the peer's sends block) instead of buffering without end.
_READ_AHEAD = 64 * 1024
_HEX = b"0123456789abcdefABCDEF"
#: Header fields a request may give once only.
_ONCE = frozenset(("content-length", "transfer-encoding", "host"))

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
    ``headers`` (lower-case names), ``body`` (bytes), ``match`` (the path's parameters),
    ``segments`` (the path's segments, each decoded on its own: ``%2F`` is a slash inside one,
    never a separator; None when nothing in the path was percent-encoded)."""

    __slots__ = ("method", "path", "query", "headers", "body", "match", "segments")

    def __init__(self, method: str, path: str, query: dict, headers: dict, body: bytes,
                 segments: Optional[list] = None):
        self.method, self.path, self.query, self.headers, self.body = method, path, query, headers, body
        self.segments = segments
        self.match: dict = {}


class Router:
    """Routes by path template (``/v1/payments/{txn_id}/finish``) and method.

    A path is matched segment by segment against the templates of as many segments, in the
    order they were added (the first that matches with the method wins), not by trying a
    regular expression of every route.

    >>> router = Router()
    >>> router.add("POST", "/v1/payments/{txn_id}/finish", "finish")
    >>> router.resolve("POST", "/v1/payments/12/finish")
    ('finish', {'txn_id': '12'})
    """

    def __init__(self):
        self._routes: list = []          # (template, segments, {METHOD: handler})
        self._by_length: dict = {}       # segment count -> [(segments, {METHOD: handler})]

    def add(self, method: str, template: str, handler: Callable) -> None:
        for known, _, methods in self._routes:
            if known == template:
                methods[method.upper()] = handler
                return
        # each segment: (literal text, None) or (None, parameter name)
        segments = tuple((None, part[1:-1]) if re.fullmatch(r"\{\w+\}", part) else (part, None)
                         for part in template.split("/"))
        methods = {method.upper(): handler}
        self._routes.append((template, segments, methods))
        self._by_length.setdefault(len(segments), []).append((segments, methods))

    def routes(self) -> list:
        """``[(method, template)]`` of every route."""
        return [(m, t) for t, _, methods in self._routes for m in methods]

    def resolve(self, method: str, path: str, segments: Optional[list] = None):
        """``(handler, {parameter: value})`` of `path` (its `segments` when given: decoded one
        by one, so that an encoded slash stays inside its segment)."""
        allowed: list = []
        parts = path.split("/") if segments is None else segments
        for segments, methods in self._by_length.get(len(parts), ()):
            found = {}
            for part, (literal, name) in zip(parts, segments):
                if name is None:
                    if part != literal:
                        break
                elif part:
                    found[name] = part
                else:
                    break
            else:
                if method in methods:
                    return methods[method], found
                allowed += methods
        if allowed:
            raise _Refusal(405, "invalid", "%s %s: Method Not Allowed" % (method, path[:200]),
                           {"Allow": ", ".join(sorted(set(allowed)))}, close=False)
        raise _Refusal(404, "not_found", "%s %s: Not Found" % (method, path[:200]), close=False)


class _Connection(asyncio.Protocol):
    def __init__(self, server: "HttpServer", tls=None):
        self.server = server
        self.tls = tls                    # the SSLContext of a TLS listener: the handshake is ours
        self.handshaking = tls is not None  # requests wait in buf until the handshake is done
        self.buf = bytearray()
        self.transport: Any = None
        self.busy = False                 # a handler is waiting: later requests queue in buf
        self.paused = False               # the peer is not reading its replies
        self.continued = False            # 100 Continue sent for the request in buf
        self.skip = 0                     # bytes still to come of a body refused as too large
        self.armed = time.monotonic()     # the idle clock's start: connect, a request, a reply
        self.head: Optional[tuple] = None # the parsed head of the request arriving (taken from buf)
        self.scan = 0                     # where the search for the head's end goes on
        self.chunks: Optional[list] = None  # [body so far, trailer bytes or -1] of a chunked body
        self.reading = True               # False: reading paused (read-ahead full)
        self.eof = False                  # the peer half-closed: answer what it sent, then close
        self.alive10 = False              # the reply confirms an HTTP/1.0 keep-alive
        self.last = time.monotonic()      # last bytes received (the longest idle is closed first)
        self.task: Optional[asyncio.Future] = None

    # ------------------------------------------------------------------ asyncio callbacks
    def connection_made(self, transport):
        self.transport = transport
        if not self.server.admit(self):
            return
        self.server.connections.add(self)
        if self.tls is not None:
            # counted from the accept, not from a finished handshake (asyncio's own TLS
            # listener calls connection_made only then, so a client that never finishes one
            # held a descriptor outside the cap)
            self.tls_task: Optional[asyncio.Future] = asyncio.ensure_future(self._start_tls(transport))

    async def _start_tls(self, raw) -> None:
        try:
            self.transport = await asyncio.get_running_loop().start_tls(
                raw, self, self.tls, server_side=True, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        except (OSError, EOFError, asyncio.TimeoutError, asyncio.CancelledError):   # ssl.SSLError is an OSError
            self.server.connections.discard(self)   # start_tls closed it
            return
        # requests that came with the handshake's last flight reached data_received before
        # start_tls returned the transport to answer them on
        self.handshaking = False
        if self.buf or self.eof:
            self._serve()

    def connection_lost(self, exc):
        self.server.connections.discard(self)

    def data_received(self, data):
        self.last = time.monotonic()
        if self.skip:                     # the rest of a refused body: read, dropped
            cut = min(self.skip, len(data))
            self.skip -= cut
            data = data[cut:]
        self.buf += data
        if not self.busy and not self.paused and not self.handshaking:
            self._serve()
        elif len(self.buf) > _READ_AHEAD and self.reading:
            self.reading = False
            self.transport.pause_reading()

    def eof_received(self):
        # a client may half-close once it sent its requests: it still reads the replies
        self.eof = True
        return (self.busy or self.paused) and self.transport.get_extra_info("sslcontext") is None

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        if not self.busy:
            self._serve()

    # ------------------------------------------------------------------ requests
    def _arm(self):
        # the server's sweep closes a connection idle this long (one timer for all of them:
        # re-arming a timer per request cost more than parsing the request's head)
        self.armed = time.monotonic()

    def drop(self):
        """Close now: replies a peer does not read are not waited for."""
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()

    def _serve(self):
        self._serve_buffered()
        transport = self.transport
        if self.busy or self.paused or transport.is_closing():
            return
        if self.eof:
            transport.close()
        elif not self.reading:
            self.reading = True
            transport.resume_reading()

    def _serve_buffered(self):
        while self.buf and not self.transport.is_closing() and not self.paused:
            try:
                parsed = self._parse()
            except _Refusal as refusal:
                self.head = self.chunks = None
                self.scan = 0
                self._write(refusal.status, error_body(refusal.reason, refusal.message),
                            refusal.headers, close=refusal.close)
                if refusal.close:
                    return
                continue
            if parsed is None:
                return
            request, keep = parsed
            self.armed = time.monotonic()        # (_arm, inline: once a request)
            try:
                handler, request.match = self.server.router.resolve(request.method, request.path,
                                                                    request.segments)
            except _Refusal as refusal:
                self._write(refusal.status, error_body(refusal.reason, refusal.message),
                            refusal.headers, close=not keep)
                continue
            try:
                call = self.server.call
                result = handler(request) if call is None else call(handler, request)
            except Exception:                 # (the app answers its own errors: this is a bug)
                log.exception("error answering %s %s", request.method, request.path[:80])
                result = (500, error_body("internal", "internal error (logged by the agent)"), None)
            if isinstance(result, tuple):
                status, body, headers = result
                self._write(status, body, headers, close=not keep)
                continue
            self.busy = True
            self.task = asyncio.ensure_future(self._later(result, keep))
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
        start = _STATUS_LINES.get(status)
        if start is None:
            start = _status_line(status)
        if headers or close or self.alive10:
            extra = ["Content-Length: %d\r\n" % len(body)]
            for name, value in (headers or {}).items():
                extra.append("%s: %s\r\n" % (name, value))
            if close:
                extra.append("Connection: close\r\n")
            elif self.alive10:
                extra.append("Connection: keep-alive\r\n")
            extra.append("\r\n")
            self.transport.write(start + "".join(extra).encode("latin-1") + body)
        else:
            self.transport.write(b"%sContent-Length: %d\r\n\r\n%s" % (start, len(body), body))
        if close:
            self.transport.close()

    def _parse(self):
        """The next whole request in ``buf`` (taken out of it) and whether the connection stays
        open after it; None while it is still arriving.  The head is parsed once, a chunked
        body decoded as it arrives: a request sent in many small pieces costs no more."""
        buf = self.buf
        if self.head is None:
            end = buf.find(b"\r\n\r\n", max(0, self.scan - 3), MAX_HEAD + 4)
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise _Refusal(431, "invalid", "request head over %d bytes" % MAX_HEAD)
                self.scan = len(buf)
                return None
            self.scan = 0
            self.head = self._head(end)
        method, target, version, headers, length = self.head
        if length is None:
            body = self._chunked()
            if body is None:
                return self._continue(headers, version)
        else:
            if len(buf) < length:
                return self._continue(headers, version)
            body = bytes(buf[:length])
            del buf[:length]
        self.head = self.chunks = None
        self.continued = False
        connection = headers.get("connection", "").lower()
        keep = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        self.alive10 = keep and version == "HTTP/1.0"
        if version == "HTTP/1.1" and "host" not in headers:
            # refused once its body is read, so the connection goes on (RFC 9112 3.2: a 400)
            raise _Refusal(400, "invalid", "an HTTP/1.1 request needs a Host header (any name "
                           "will do over the Unix socket, e.g. Host: localhost)", close=not keep)
        path, _, query_text = target.partition("?")
        try:
            # the target's bytes are UTF-8, raw or percent-encoded (never read as Latin-1)
            if not target.isascii():
                path = path.encode("latin-1").decode("utf-8")
                query_text = query_text.encode("latin-1").decode("utf-8")
            segments = None
            if "%" in path:
                # decoded segment by segment: /v1/x%2Fy is the one segment "x/y" after v1 (RFC
                # 3986 2.2: an encoded delimiter is data), never the path /v1/x/y
                segments = [unquote(part, errors="strict") if "%" in part else part
                            for part in path.split("/")]
                path = "/".join(segments)
            query: dict = {}
            if query_text:
                for name, value in parse_qsl(query_text, keep_blank_values=True, errors="strict",
                                             max_num_fields=_MAX_FIELDS):
                    query.setdefault(name, []).append(value)
        except UnicodeDecodeError:
            raise _Refusal(400, "invalid", "the request target is not UTF-8", close=not keep) from None
        except ValueError:
            raise _Refusal(400, "invalid", "more than %d query parameters" % _MAX_FIELDS,
                           close=not keep) from None
        return Request(method, path, query, headers, body, segments), keep

    def _head(self, end: int) -> tuple:
        """``(method, target, version, headers, length)`` of the head ending at `end` in
        ``buf``, taken out of it (`length` None: a chunked body follows)."""
        buf = self.buf
        text = buf[:end].decode("latin-1")
        del buf[:end + 4]
        while text.startswith("\r\n"):               # blank lines between requests (RFC 9112 2.2)
            text = text[2:]
        line, _, fields = text.partition("\r\n")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith("/"):
            raise _Refusal(400, "invalid", "malformed request line")
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise _Refusal(400, "invalid", "HTTP/1.1 or HTTP/1.0 only, not %r" % version[:20])
        headers: dict = {}
        if fields:
            # a client sends the same fields request after request: the ones parsed last
            known = self.server.heads.get(fields)
            if known is not None:
                headers = dict(known)
            else:
                # the usual head (token names, each once) in two regular-expression passes;
                # any other goes line by line
                pairs = _FIELD.findall(fields) if _FIELDS.fullmatch(fields) else None
                if pairs is not None:
                    headers = {name.lower(): value for name, value in pairs}
                if pairs is None or len(headers) != len(pairs):
                    headers = _fields(fields.split("\r\n"))
                if len(fields) <= 1024:
                    heads = self.server.heads
                    if len(heads) >= 64:
                        heads.clear()
                    heads[fields] = dict(headers)
        if "transfer-encoding" in headers:
            if "content-length" in headers:
                raise _Refusal(400, "invalid", "both Content-Length and Transfer-Encoding")
            if headers["transfer-encoding"].lower() != "chunked":
                raise _Refusal(400, "invalid", "Transfer-Encoding %r is not supported (chunked is)"
                               % headers["transfer-encoding"][:40])
            return method, target, version, headers, None
        length_text = headers.get("content-length", "0")
        if not (length_text.isascii() and length_text.isdigit()) or len(length_text) > 18:
            raise _Refusal(400, "invalid", "malformed Content-Length %r" % length_text[:40])
        length = int(length_text)
        if length > self.server.max_body:
            # a body up to a few times the limit is read and dropped, so that the client,
            # still sending it, gets the 413 rather than a broken pipe; a larger one closes, and
            # so does one the client holds back until a 100 Continue it will never get
            message = "body over %d bytes" % self.server.max_body
            if (length > 4 * self.server.max_body
                    or headers.get("expect", "").lower() == "100-continue"):
                raise _Refusal(413, "too_large", message)
            take = min(length, len(buf))
            del buf[:take]
            self.skip = length - take
            raise _Refusal(413, "too_large", message, close=False)
        return method, target, version, headers, length

    def _continue(self, headers: dict, version: str):
        if (not self.continued and version == "HTTP/1.1"
                and headers.get("expect", "").lower() == "100-continue"):
            self.continued = True
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None

    def _chunked(self) -> Optional[bytes]:
        """The whole chunked body, once it arrived; None while it arrives.  Each chunk is taken
        out of ``buf`` as it comes, the trailer fields too (at most :data:`MAX_HEAD` bytes)."""
        buf, limit = self.buf, self.server.max_body
        if self.chunks is None:
            self.chunks = [bytearray(), -1]
        state = self.chunks
        body = state[0]
        while True:
            if state[1] >= 0:                      # trailer fields, then the closing blank line
                eol = buf.find(b"\r\n", 0, MAX_HEAD + 2)
                if eol < 0:
                    if state[1] + len(buf) > MAX_HEAD:
                        raise _Refusal(431, "invalid", "chunked trailer over %d bytes" % MAX_HEAD)
                    return None
                del buf[:eol + 2]
                if eol == 0:
                    return bytes(body)
                state[1] += eol + 2
                if state[1] > MAX_HEAD:
                    raise _Refusal(431, "invalid", "chunked trailer over %d bytes" % MAX_HEAD)
                continue
            eol = buf.find(b"\r\n", 0, 1024)
            if eol < 0:
                if len(buf) > 1024:
                    raise _Refusal(400, "invalid", "malformed chunk size line")
                return None
            size_text = bytes(buf[:eol]).split(b";", 1)[0].strip(b" \t")
            if not size_text or size_text.strip(_HEX):
                raise _Refusal(400, "invalid", "malformed chunk size %r" % size_text[:20])
            size = int(size_text, 16)
            if len(body) + size > limit:
                raise _Refusal(413, "too_large", "body over %d bytes" % limit)
            if size == 0:
                del buf[:eol + 2]
                state[1] = 0
                continue
            if len(buf) < eol + 2 + size + 2:
                return None
            if buf[eol + 2 + size:eol + 4 + size] != b"\r\n":
                raise _Refusal(400, "invalid", "malformed chunk (no CRLF after its data)")
            body += buf[eol + 2:eol + 2 + size]
            del buf[:eol + 4 + size]


def _status_line(status: int) -> bytes:
    """The reply's status line and Content-Type (every reply is JSON)."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Status"
    return ("HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\n"
            % (status, phrase)).encode("latin-1")


_STATUS_LINES = {int(s): _status_line(int(s)) for s in http.HTTPStatus}

_TOKEN = r"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_FIELDS = re.compile(r"%s:[^\r\n]*(?:\r\n%s:[^\r\n]*)*" % (_TOKEN, _TOKEN))
_FIELD = re.compile(r"(%s):[ \t]*([^\r\n]*?)[ \t]*(?=\r\n|\Z)" % _TOKEN)


def _fields(lines: list) -> dict:
    """The header fields of `lines` (lower-case names), a name given twice joined with ", "
    (RFC 9110 5.3) unless it is one a request may give once only."""
    headers: dict = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or " " in name:
            raise _Refusal(400, "invalid", "malformed header line %r" % line[:60])
        name = name.lower()
        if name in headers:
            if name in _ONCE:
                raise _Refusal(400, "invalid", "%s given twice" % name)
            headers[name] = "%s, %s" % (headers[name], value.strip(" \t"))
        else:
            headers[name] = value.strip(" \t")
    return headers


_BUSY = error_body("unavailable", "every connection the agent holds is answering a request: try again")


class HttpServer:
    """Serves `router` on listening sockets: ``await server.start_unix(sock)``,
    ``await server.start_tcp(host, port, ssl=...)``, then ``await server.close()``.

    ``call(handler, request)``, if given, runs each handler (default: ``handler(request)``;
    the app's handlers wrap their own errors into replies).
    """

    def __init__(self, router: Router, max_body: int, call: Optional[Callable] = None):
        self.router = router
        self.max_body = max_body
        self.call = call                  # None: handler(request)
        self.connections: set = set()
        self.servers: list = []
        self.max_connections = MAX_CONNECTIONS
        try:
            import resource
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (ImportError, OSError, ValueError):
            soft = -1
        if soft > 0:
            self.max_connections = max(8, min(MAX_CONNECTIONS, (soft - _RESERVED) // 2))
        self._dropped = 0
        self._dropped_logged = 0.0
        self._sweeper: Optional[asyncio.TimerHandle] = None
        #: the header fields of recent request heads, as text -> as parsed (at most 64)
        self.heads: dict = {}

    def _sweep(self) -> None:
        """Close the connections idle (no request answered, none being answered) for
        :data:`IDLE_TIMEOUT` seconds or more, then come back in a tenth of it."""
        now = time.monotonic()
        for conn in list(self.connections):
            if not conn.busy and now - conn.armed >= IDLE_TIMEOUT and conn.transport is not None:
                conn.drop()
        self._sweeper = asyncio.get_running_loop().call_later(max(0.05, IDLE_TIMEOUT / 10), self._sweep)

    def admit(self, conn: "_Connection") -> bool:
        """Make room for `conn`: over :attr:`max_connections`, the connection idle the longest
        (no request being answered) is closed; when every one is answering, `conn` is refused."""
        if len(self.connections) < self.max_connections:
            return True
        idle = [c for c in self.connections if not c.busy]
        if idle:
            victim = min(idle, key=lambda c: c.last)
            self.connections.discard(victim)
            victim.drop()
            admitted = True
        else:
            conn.transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; "
                                 b"charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                                 % (len(_BUSY), _BUSY))
            conn.transport.close()
            admitted = False
        self._dropped += 1
        now = time.monotonic()
        if now - self._dropped_logged > 60:          # one line a minute, not one a connection
            log.warning("%d connections closed or refused: over the limit of %d open connections",
                        self._dropped, self.max_connections)
            self._dropped, self._dropped_logged = 0, now
        return admitted

    def _quiet_accept_errors(self) -> None:
        """Out of descriptors, asyncio logs a traceback for every failed accept (megabytes a
        second): one line a minute says it instead."""
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()
        said = [0.0]

        def handler(loop, context):
            if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
                now = time.monotonic()
                if now - said[0] > 60:
                    said[0] = now
                    log.error("cannot accept connections: %s (%d open)",
                              context.get("exception"), len(self.connections))
                return
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)
        loop.set_exception_handler(handler)

    async def start_unix(self, sock) -> asyncio.AbstractServer:
        if not self.servers:
            self._quiet_accept_errors()
            self._sweep()
        server = await asyncio.get_running_loop().create_unix_server(lambda: _Connection(self), sock=sock,
                                                                  backlog=_BACKLOG)
        self.servers.append(server)
        return server

    async def start_tcp(self, host: str, port: int, ssl=None) -> asyncio.AbstractServer:
        if not self.servers:
            self._quiet_accept_errors()
            self._sweep()
        server = await asyncio.get_running_loop().create_server(lambda: _Connection(self, ssl), host, port,
                                                             backlog=_BACKLOG)
        self.servers.append(server)
        return server

    async def close(self, grace: float = 30.0) -> None:
        """Stop accepting, let the requests being answered finish (up to `grace` s), close."""
        for server in self.servers:
            server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(c.busy for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        for server in self.servers:
            await server.wait_closed()
