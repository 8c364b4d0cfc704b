"""posfast sync server: the back office's HTTP door for terminals (``posfast serve``).

Terminals push batches with :class:`posfast.sync.HttpTarget`; the server checks
them exactly as a local target would (gap-free, hash chain intact, no fork, one
record per ``(journal_id, seq)``) and writes them to SQLite or PostgreSQL::

    posfast serve --db sqlite:///back.db --create --port 8080 --tokens-file tokens.txt
    posfast serve --db postgresql://bo@db/backoffice --tokens-file tokens.txt \
        --tls-cert bo.crt --tls-key bo.key [--client-ca terminals-ca.pem]

Built on aiohttp; database work runs in a small thread pool so one slow commit
does not stall other terminals.  The wire format is described in
:mod:`posfast.sync` (JSON, columnar, bytes in base64).

Authentication: every journal has its own bearer token (``Authorization:
Bearer TOKEN``).  Tokens come from ``--token JOURNAL_ID=TOKEN`` (repeatable) or
a tokens file with one ``JOURNAL_ID=TOKEN`` per line (``#`` comments, blank
lines ignored); one journal may have several tokens (rotation), a token maps to
exactly one journal.  A token may only read and write its own journal: another
journal's id gets 403, an unknown or missing token 401.  Tokens are kept only
as SHA-256 digests in memory; they must be at least 16 characters, and a token
given to two journals (across ``--token`` and ``--tokens-file``) stops the start.
More than 10 failed tokens a minute from one address get 429; at most 5 WARNING
lines a minute per address are logged.

TLS: ``--tls-cert FILE --tls-key FILE`` serve HTTPS; ``--client-ca FILE`` also
requires client certificates signed by that CA (mutual TLS).  Or run on loopback
behind a TLS-terminating reverse proxy (README, "Security of the sync server").

Slow clients: request headers must arrive within ``--header-timeout`` (10 s), a
body within ``--body-timeout`` (60 s, else 408); an idle keep-alive connection
is closed after ``--idle-timeout`` (15 s); beyond ``--max-connections`` (256)
open connections a client gets 503 and is closed.

Limits: bodies over ``max_body`` bytes get 413 before they are read, batches of
more than ``max_batch`` records 413 (the syncer halves its batch and retries),
malformed bodies 400 (HTTP-level parse errors too); every error is JSON
``{"ok": false, "reason", "message"}`` with values from the request cut to 200
characters, a 503 says nothing of the database (path, DSN, error), and nothing
of a refused batch is stored.  Refusals are logged (logger
``posfast.server``) and recorded in the back office's ``sync_refusals`` table.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Union

from ..errors import SyncError
from .dashboard import add_dashboard
from .http import target_from_url
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics, render_metrics
from .postgres import PostgresTarget
from .protocol import (ECHO_LIMIT, MAX_BATCH, SyncConfigError, SyncRefused, SyncUnavailable, clip,
                       decode_batch, decode_status)
from .sqlite import SqliteTarget
from .tokens import DEFAULT_TOKEN_TTL, MIN_TOKEN_LENGTH, Principal, TokenAuth, check_token_text

log = logging.getLogger("posfast.server")

DEFAULT_MAX_BODY = 32 * 1024 * 1024
DEFAULT_MAX_BATCH = MAX_BATCH
#: Seconds a client has to send a request's complete headers (from its first byte, or from connecting).
DEFAULT_HEADER_TIMEOUT = 10.0
#: Seconds a client has to send a request's body once its headers are in.
DEFAULT_BODY_TIMEOUT = 60.0
#: Seconds an idle keep-alive connection stays open between requests.
DEFAULT_IDLE_TIMEOUT = 15.0
#: Open connections at most; more are answered 503 and closed.
DEFAULT_MAX_CONNECTIONS = 256
#: Failed tokens per client address per minute before it gets 429s.
DEFAULT_AUTH_FAILURES = 10
#: WARNING lines per client address per minute about failed tokens (then one "suppressed" line).
AUTH_LOG_BURST = 5
_REASON_STATUS = {"gap": 409, "fork": 409, "chain": 409, "invalid": 400, "auth": 403}

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_BODY", "JsonFormatter", "MIN_TOKEN_LENGTH", "RunningServer",
           "ServerContext", "configure_logging", "load_tokens", "make_app", "parse_tokens", "request_token", "require_admin", "serve",
           "server_context", "server_ssl_context", "start_in_thread"]


def _web():
    try:
        from aiohttp import web
    except ImportError as exc:
        raise ImportError("the posfast sync server needs aiohttp: pip install 'posfast[server]'") from exc
    return web


# --------------------------------------------------------------------------- tokens

def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _check_token(token: str, journal_id, where: str = "") -> str:
    return check_token_text(token, journal_id, where)


def parse_tokens(specs: Iterable[str], *, where: str = "") -> dict:
    """``["JOURNAL_ID=TOKEN", ...]`` -> ``{token: journal_id}``.

    Tokens shorter than :data:`MIN_TOKEN_LENGTH` characters are refused, and so is a
    token given to two journals.  Errors never repeat a token.

    >>> parse_tokens(["0b1c9f3e-8a3d-4a55-9f0e-6f1d2c3b4a59=till-7-Zq3xR8vL2mPw"])
    {'till-7-Zq3xR8vL2mPw': UUID('0b1c9f3e-8a3d-4a55-9f0e-6f1d2c3b4a59')}
    """
    tokens: dict = {}
    for spec in specs:
        journal, sep, token = spec.strip().partition("=")
        if not sep or not token.strip():
            raise SyncConfigError(f"{where}token spec {clip(journal.strip(), 40)!r}... is not JOURNAL_ID=TOKEN")
        try:
            journal_id = uuid.UUID(journal.strip())
        except ValueError:
            raise SyncConfigError(f"{where}token spec: {clip(journal.strip(), 40)!r} is not a journal id "
                                  "(UUID); write JOURNAL_ID=TOKEN") from None
        token = _check_token(token.strip(), journal_id, where)
        if tokens.get(token, journal_id) != journal_id:
            raise SyncConfigError(f"{where}the token of journal {journal_id} is already the token of journal "
                                  f"{tokens[token]}; a token maps to exactly one journal")
        tokens[token] = journal_id
    return tokens


def load_tokens(path) -> dict:
    """Read a tokens file (``JOURNAL_ID=TOKEN`` per line) -> ``{token: journal_id}``."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [ln for ln in (raw.strip() for raw in fh) if ln and not ln.startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise SyncConfigError(f"cannot read tokens file {path}: {exc}") from None
    return parse_tokens(lines, where=f"{path}: ")


def _merge_tokens(*sources) -> dict:
    """Merge ``(name, {token: journal_id})`` sources; a token given to two journals is an error."""
    merged: dict = {}
    origin: dict = {}
    for name, table in sources:
        for token, jid in table.items():
            if token in merged and merged[token] != jid:
                raise SyncConfigError(f"one token is given to journal {merged[token]} ({origin[token]}) and to "
                                      f"journal {jid} ({name}); a token maps to exactly one journal")
            merged[token], origin[token] = jid, name
    return merged


def _token_table(tokens) -> dict:
    if tokens is None:
        return {}
    if isinstance(tokens, Mapping):
        table = {}
        for tok, jid in tokens.items():
            jid = uuid.UUID(str(jid))
            table[_digest(_check_token(str(tok), jid))] = jid
        return table
    return {_digest(tok): jid for tok, jid in parse_tokens(tokens).items()}


class _AuthLimiter:
    """Failed tokens per client address: 429 after ``limit`` a minute, and a bounded log."""

    def __init__(self, limit: int = DEFAULT_AUTH_FAILURES, window: float = 60.0, log_burst: int = AUTH_LOG_BURST,
                 max_addresses: int = 10_000):
        self.limit, self.window, self.log_burst, self.max_addresses = limit, window, log_burst, max_addresses
        self._failures: dict = {}   # address -> list of monotonic times
        self._lock = threading.Lock()

    def _recent(self, addr, now):
        times = [t for t in self._failures.get(addr, ()) if now - t < self.window]
        if times:
            self._failures[addr] = times
        else:
            self._failures.pop(addr, None)
        return times

    def retry_after(self, addr) -> float:
        """Seconds until ``addr`` may try a token again (0: now)."""
        if not self.limit:
            return 0.0
        with self._lock:
            now = time.monotonic()
            times = self._recent(addr, now)
            if len(times) < self.limit:
                return 0.0
            return max(1.0, self.window - (now - times[-self.limit]))

    def failed(self, addr) -> str:
        """Count a failure; return ``"log"``, ``"last"`` (log and say the rest is suppressed) or ``""``."""
        with self._lock:
            now = time.monotonic()
            if addr not in self._failures and len(self._failures) >= self.max_addresses:
                self._failures.pop(next(iter(self._failures)))
            times = self._recent(addr, now)
            times.append(now)
            self._failures[addr] = times
            n = len(times)
        return "log" if n < self.log_burst else "last" if n == self.log_burst else ""


# --------------------------------------------------------------------------- app

@dataclass
class ServerContext:
    """What the routes of a ``posfast serve`` app share (``server_context(app)``): the back
    office, who tokens are, the database thread pool, the failed-token limiter."""
    target: object
    auth: TokenAuth
    executor: ThreadPoolExecutor
    limiter: "_AuthLimiter"
    metrics: Metrics

    async def run(self, fn, *args):
        """Run a blocking (database) call in the server's thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


_app_key: dict = {}


def _context_key():
    if "key" not in _app_key:
        web = _web()
        # AppKey names itself after the module that makes it, found by walking up to a module
        # frame: made here lazily (aiohttp is imported only when a server runs), as if at import
        ns = {"__name__": __name__, "AppKey": web.AppKey, "ServerContext": ServerContext}
        exec("KEY = AppKey('context', ServerContext)", ns)   # noqa: S102 (a constant statement)
        _app_key["key"] = ns["KEY"]
    return _app_key["key"]


def server_context(app) -> ServerContext:
    """The :class:`ServerContext` of an app made by :func:`make_app` (for routes added to it,
    such as the dashboard's)."""
    return app[_context_key()]


def request_token(request) -> str:
    """The bearer token of a request (``Authorization: Bearer TOKEN``), or ""."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def require_admin(request, token: Optional[str] = None) -> Principal:
    """The admin :class:`~posfast.sync.tokens.Principal` of a request (its bearer token, or
    `token`, e.g. a login form's), else a JSON 401 / 403 / 429 refusal (raised as the app's
    error, which its middleware answers).  Failed tokens count toward the address's limit."""
    ctx = server_context(request.app)
    addr = request.remote or "?"
    wait = ctx.limiter.retry_after(addr)
    if wait:
        raise _Refused(429, "auth", f"too many failed tokens from {addr}; retry in {wait:.0f} s",
                       headers={"Retry-After": str(int(wait + 0.999))})
    token = request_token(request) if token is None else token.strip()
    if not token:
        _auth_failed(ctx, request, "missing bearer token (Authorization: Bearer <admin token>)")
    who = await ctx.run(ctx.auth.identify, token)
    if who is None:
        _auth_failed(ctx, request, "unknown or revoked token")
    if not who.is_admin:
        log.warning("refused %s %s from %s: a terminal token (journal %s) used for the admin API", request.method,
                    clip(request.path, 80), addr, who.journal_id)
        raise _Refused(403, "auth", "this is a terminal's token; the admin API needs an admin token "
                       "(posfast register --db ... --admin --issue-token)")
    return who


def _auth_failed(ctx: ServerContext, request, message: str):
    addr = request.remote or "?"
    verdict = ctx.limiter.failed(addr)
    if verdict:
        log.warning("refused %s %s from %s: %s%s", request.method, clip(request.path, 80), addr, message,
                    "; further token failures from this address this minute are not logged"
                    if verdict == "last" else "")
    raise _Refused(401, "auth", message, headers={"WWW-Authenticate": "Bearer"})


class _Refused(SyncError):
    """A refusal on its way to becoming the JSON 4xx reply (it never leaves the server)."""

    def __init__(self, status: int, reason: str, message: str, headers=None, **extra):
        super().__init__(message)
        self.status, self.reason, self.message, self.extra, self.headers = status, reason, message, extra, headers


def open_back_office(db: Union[str, SqliteTarget, PostgresTarget], *, create: bool = False):
    """The database behind the server: ``sqlite:///...`` or ``postgresql://...`` (or a target).

    A SQLite file that does not exist is created only with ``create=True`` (``posfast serve --create``).
    """
    if isinstance(db, (SqliteTarget, PostgresTarget)):
        return db
    if not isinstance(db, str) or db.split(":", 1)[0].lower() not in ("sqlite", "postgresql", "postgres"):
        raise SyncConfigError(f"--db must be sqlite:///FILE or postgresql://..., not {clip(db)!r}")
    if db.split(":", 1)[0].lower() == "sqlite":
        return target_from_url(db, create=create)
    # one name per server process in pg_stat_activity: which of several servers holds what
    return target_from_url(db, application_name=f"posfast serve {os.getpid()}")


_UNAVAILABLE = ("back office temporarily unavailable: the batch was not stored; the terminal keeps it and "
                "retries later")


def make_app(db_url, tokens, *, max_body: int = DEFAULT_MAX_BODY, max_batch: int = DEFAULT_MAX_BATCH,
             workers: int = 4, body_timeout: float = DEFAULT_BODY_TIMEOUT, create: bool = False,
             auth_failures_per_minute: int = DEFAULT_AUTH_FAILURES, token_ttl: float = DEFAULT_TOKEN_TTL,
             metrics: str = "admin"):
    """Build the aiohttp application (serve it with :func:`serve` or :func:`start_in_thread`).

    ``tokens``: static tokens, ``{token: journal_id}`` or an iterable of ``"JOURNAL_ID=TOKEN"``
    (None or empty: only the back office's ``tokens`` table, looked up live and cached for
    ``token_ttl`` seconds).  ``create``: create a SQLite back office that does not exist yet
    (else refuse to start).  ``metrics``: ``/metrics`` needs an admin token (``"admin"``),
    none (``"open"``), or is not served (``"off"``).

    >>> app = make_app("sqlite:///back.db", {tok: "0b1c9f3e-8a3d-4a55-9f0e-6f1d2c3b4a59"})  # doctest: +SKIP
    """
    web = _web()
    table = _token_table(tokens)
    target = open_back_office(db_url, create=create)
    target.max_batch = max_batch
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="posfast-sync")
    limiter = _AuthLimiter(auth_failures_per_minute)
    auth = TokenAuth(target, table, ttl=token_ttl)
    ctx = ServerContext(target, auth, executor, limiter, Metrics())
    if metrics not in ("admin", "open", "off"):
        raise SyncConfigError(f"metrics={metrics!r}: admin, open or off")

    async def authorize(request, journal_id: uuid.UUID, *, write: bool = True) -> Principal:
        addr = request.remote or "?"
        wait = limiter.retry_after(addr)
        if wait:
            raise _Refused(429, "auth", f"too many failed tokens from {addr}; retry in {wait:.0f} s",
                           headers={"Retry-After": str(int(wait + 0.999))})
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            _auth_failed(ctx, request, "missing bearer token (Authorization: Bearer <journal token>)")
        try:
            token.strip().encode("utf-8")
        except UnicodeError:
            _auth_failed(ctx, request, "the Authorization header is not valid UTF-8 text")
        who = await ctx.run(auth.identify, token.strip())
        if who is None:
            _auth_failed(ctx, request, "unknown token")
        if who.is_admin:
            if not write:
                return who
            log.warning("refused %s %s from %s: an admin token cannot push records", request.method,
                        clip(request.path, 80), addr)
            raise _Refused(403, "auth", "an admin token cannot push records; use the journal's own token")
        if who.journal_id != journal_id:
            log.warning("refused %s %s from %s: token of journal %s used for journal %s", request.method,
                        clip(request.path, 80), addr, who.journal_id, journal_id)
            raise _Refused(403, "auth", f"this token belongs to journal {who.journal_id}, not {journal_id}")
        return who

    def path_journal(request) -> uuid.UUID:
        text = request.match_info["journal_id"]
        try:
            return uuid.UUID(text)
        except ValueError:
            raise _Refused(400, "invalid", f"{clip(text)!r} is not a journal id (UUID)") from None

    def ingest(body: bytes, journal_id: uuid.UUID) -> dict:
        try:
            batch, anchor = decode_batch(body, max_batch=max_batch)
        except SyncRefused as exc:
            exc.journal_id = exc.journal_id or journal_id
            target._refused(exc)
            raise
        if batch.journal_id != journal_id:
            raise _Refused(403, "auth", f"batch of journal {batch.journal_id} posted to journal {journal_id}")
        started = time.perf_counter()
        try:
            ack = target.push(batch, anchor=anchor)
        except SyncRefused:
            ctx.metrics.batch("refused", time.perf_counter() - started)
            raise
        except SyncUnavailable:
            ctx.metrics.batch("unavailable", time.perf_counter() - started)
            raise
        ctx.metrics.batch("stored" if ack.stored else "duplicate", time.perf_counter() - started, ack.stored)
        return {"ok": True, "journal_id": str(ack.journal_id), "first_seq": ack.first_seq,
                "last_seq": ack.last_seq, "count": len(batch), "high_seq": ack.high_seq, "stored": ack.stored,
                "duplicates": ack.duplicates, "last_link": base64.b64encode(ack.last_link).decode("ascii")}

    def held(journal_id: uuid.UUID) -> dict:
        st = target.state(journal_id)
        return {"ok": True, "journal_id": str(journal_id), "anchor_seq": st.anchor_seq if st else 0,
                "high_seq": st.high_seq if st else 0, "records": st.records if st else 0,
                "last_link": base64.b64encode(st.last_link if st else b"").decode("ascii")}

    def refusal(status, reason, message, headers=None, **extra):
        body = {"ok": False, "reason": reason, "message": clip(message, 2 * ECHO_LIMIT), **extra}
        return web.json_response(body, status=status, headers=headers)

    @web.middleware
    async def json_errors(request, handler):
        guard = getattr(request.protocol, "_pf_busy", None)
        if guard is not None:
            guard()
        try:
            return await handler(request)
        except _Refused as exc:
            return refusal(exc.status, exc.reason, exc.message, exc.headers, **exc.extra)
        except SyncRefused as exc:
            status = exc.status or _REASON_STATUS[exc.reason]
            return web.json_response(exc.to_json(), status=status)
        except SyncUnavailable as exc:
            log.error("back office unavailable: %s", clip(str(exc), 2 * ECHO_LIMIT))
            return refusal(503, "unavailable", _UNAVAILABLE, {"Retry-After": "30"})
        except web.HTTPRequestEntityTooLarge:
            return refusal(413, "invalid", f"body larger than {max_body} bytes")
        except web.HTTPException as exc:
            return refusal(exc.status, "invalid", exc.reason)
        except Exception:
            log.exception("error handling %s %s", request.method, clip(request.path, 80))
            return refusal(500, "internal", "internal server error")
        finally:
            idle = getattr(request.protocol, "_pf_idle", None)
            if idle is not None:
                idle()

    async def post_batch(request):
        journal_id = path_journal(request)
        await authorize(request, journal_id)
        if request.content_length is not None and request.content_length > max_body:
            raise _Refused(413, "invalid", f"body of {request.content_length} bytes exceeds the limit of "
                           f"{max_body}; send smaller batches")
        try:
            body = await asyncio.wait_for(request.read(), body_timeout)
        except asyncio.TimeoutError:
            log.warning("closed %s %s from %s: body not received within %.0f s", request.method,
                        clip(request.path, 80), request.remote, body_timeout)
            resp = refusal(408, "invalid", f"request body not received within {body_timeout:.0f} s")
            resp.force_close()
            return resp
        except ValueError as exc:   # aiohttp: malformed chunked body and the like
            raise _Refused(400, "invalid", f"malformed request body ({clip(str(exc))})") from None
        doc = await asyncio.get_running_loop().run_in_executor(executor, ingest, body, journal_id)
        return web.json_response(doc)

    async def get_journal(request):
        journal_id = path_journal(request)
        await authorize(request, journal_id, write=False)
        doc = await asyncio.get_running_loop().run_in_executor(executor, held, journal_id)
        return web.json_response(doc)

    async def post_status(request):
        journal_id = path_journal(request)
        await authorize(request, journal_id)
        try:
            body = await asyncio.wait_for(request.read(), body_timeout)
        except asyncio.TimeoutError:
            raise _Refused(408, "invalid", f"request body not received within {body_timeout:.0f} s") from None
        status = decode_status(body)
        await ctx.run(target.report_status, journal_id, status)
        return web.json_response({"ok": True, "journal_id": str(journal_id)})

    async def health(request):
        try:
            await ctx.run(target.ping)
        except Exception as exc:     # SyncUnavailable, or anything the driver raises
            log.error("health check: back office unavailable: %s", clip(str(exc), 2 * ECHO_LIMIT))
            return refusal(503, "unavailable", "back office database unavailable", {"Retry-After": "30"})
        return web.json_response({"ok": True, "database": "ok"})

    async def get_metrics(request):
        if metrics == "admin":
            await require_admin(request)
        text = await ctx.run(render_metrics, target, ctx.metrics)
        return web.Response(body=text.encode("utf-8"), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def cleanup(app):
        executor.shutdown(wait=True)
        target.close()

    app = web.Application(client_max_size=max_body, middlewares=[json_errors])
    app[_context_key()] = ctx
    app.router.add_post("/v1/journals/{journal_id}/batches", post_batch)
    app.router.add_get("/v1/journals/{journal_id}", get_journal)
    app.router.add_post("/v1/journals/{journal_id}/status", post_status)
    app.router.add_get("/v1/health", health)
    if metrics != "off":
        app.router.add_get("/metrics", get_metrics)
    add_dashboard(app, ctx)          # /ui: the dashboard, behind the admin login
    app.on_cleanup.append(cleanup)
    return app


# --------------------------------------------------------------------------- connections

_BUSY_BODY = b'{"ok": false, "reason": "unavailable", "message": "server busy: too many connections; retry later"}'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 5\r\n"
         b"Connection: close\r\nContent-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY)
_guarded_cache: dict = {}


def _guarded_runner_class():
    """AppRunner whose connections are guarded: header / idle timeouts, a connection cap, JSON parse errors."""
    if "runner" in _guarded_cache:
        return _guarded_cache["runner"]
    web = _web()
    from aiohttp.web_protocol import RequestHandler

    class GuardedHandler(RequestHandler):
        __slots__ = ("_pf_limits", "_pf_timer", "_pf_state", "_pf_counted")

        def connection_made(self, transport):
            manager = self._manager
            self._pf_limits = limits = manager._pf_limits
            self._pf_timer = None
            self._pf_state = "new"
            self._pf_counted = False
            super().connection_made(transport)
            if limits["open"] >= limits["max_connections"]:
                log.warning("refused a connection: %d open connections (limit)", limits["open"])
                transport.write(_BUSY)
                transport.close()
                return
            limits["open"] += 1
            self._pf_counted = True
            self._pf_arm(limits["header_timeout"], "request headers not received")

        def _pf_arm(self, seconds, why):
            if self._pf_timer is not None:
                self._pf_timer.cancel()
            self._pf_timer = self._loop.call_later(seconds, self._pf_expire, why, seconds) if seconds else None

        def _pf_expire(self, why, seconds):
            self._pf_timer = None
            transport = self.transport
            if transport is not None and not transport.is_closing():
                peer = transport.get_extra_info("peername")
                log.info("closed connection from %s: %s within %.0f s", peer and peer[0], why, seconds)
                transport.abort()

        def _pf_busy(self):        # headers complete: the handler runs (the body has its own timeout)
            self._pf_state = "busy"
            self._pf_arm(0, "")

        def _pf_idle(self):        # response done: idle keep-alive until the next request's first byte
            self._pf_state = "idle"
            self._pf_arm(self._pf_limits["idle_timeout"], "idle")

        def data_received(self, data):
            if self._pf_state == "idle" and data:
                self._pf_state = "headers"
                self._pf_arm(self._pf_limits["header_timeout"], "request headers not received")
            super().data_received(data)

        def connection_lost(self, exc):
            if getattr(self, "_pf_timer", None) is not None:
                self._pf_timer.cancel()
                self._pf_timer = None
            if getattr(self, "_pf_counted", False):
                self._pf_counted = False
                self._pf_limits["open"] -= 1
            super().connection_lost(exc)

        def handle_error(self, request, status=500, exc=None, message=None):
            if request.writer.output_size > 0:
                raise ConnectionError("response already sent")
            if status >= 500:
                log.error("error handling a request from %s: %s", request.remote, clip(repr(exc)))
                body = {"ok": False, "reason": "internal", "message": "internal server error"}
            else:
                text = clip(str(message or (exc and str(exc)) or "bad request"), ECHO_LIMIT)
                log.info("malformed HTTP request from %s: %s", request.remote, text)
                body = {"ok": False, "reason": "invalid", "message": f"malformed HTTP request: {text}"}
            resp = web.json_response(body, status=status)
            resp.force_close()
            return resp

    class GuardedServer(web.Server):
        def __call__(self):
            return GuardedHandler(self, loop=self._loop, **self._kwargs)

    class GuardedRunner(web.AppRunner):
        def __init__(self, app, *, limits, **kwargs):
            super().__init__(app, **kwargs)
            self._pf_limits = limits

        async def _make_server(self):
            server = await super()._make_server()
            server.__class__ = GuardedServer
            server._pf_limits = self._pf_limits
            return server

    _guarded_cache["runner"] = GuardedRunner
    return GuardedRunner


def server_ssl_context(cert_file, key_file, client_ca=None):
    """TLS for ``posfast serve``: the server's certificate and key (PEM); ``client_ca`` turns on
    mutual TLS (clients must present a certificate signed by that CA)."""
    import ssl
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert_file), None if key_file is None else str(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise SyncConfigError(f"cannot load TLS certificate {cert_file} / key {key_file}: {exc}") from None
    if client_ca:
        try:
            ctx.load_verify_locations(cafile=str(client_ca))
        except (OSError, ssl.SSLError) as exc:
            raise SyncConfigError(f"cannot read client CA file {client_ca}: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _check_port(port) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise SyncConfigError(f"--port {port} is not a TCP port (0..65535; 0 picks a free one)")
    return port


# --------------------------------------------------------------------------- logging

class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (ISO 8601 UTC, ms), ``level``, ``logger``,
    ``message``, ``exc`` (the traceback, when there is one) and ``process``."""

    def format(self, record: logging.LogRecord) -> str:
        import datetime as _dt
        import json
        doc = {"ts": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(timespec="milliseconds")
               .replace("+00:00", "Z"), "level": record.levelname, "logger": record.name,
               "message": record.getMessage(), "process": record.process}
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def configure_logging(level: str = "info", fmt: str = "text", stream=None) -> None:
    """The root logger of ``posfast serve``: `level` (debug, info, warning, error) and `fmt`
    ``text`` (``time LEVEL logger: message``) or ``json`` (:class:`JsonFormatter`), on stderr."""
    levels = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
    if level not in levels or fmt not in ("text", "json"):
        raise SyncConfigError(f"log level {level!r} / format {fmt!r}: levels are {', '.join(levels)}, "
                              "formats text and json")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(levels[level])


# --------------------------------------------------------------------------- running

def _collect_tokens(tokens, tokens_file, token_specs) -> dict:
    sources = []
    if tokens_file:
        sources.append((f"tokens file {tokens_file}", load_tokens(tokens_file)))
    if token_specs:
        sources.append(("--token", parse_tokens(token_specs, where="--token: ")))
    if tokens:
        table = {str(k): uuid.UUID(str(v)) for k, v in tokens.items()} if isinstance(tokens, Mapping) \
            else parse_tokens(tokens)
        for tok, jid in table.items():
            _check_token(tok, jid)
        sources.append(("tokens", table))
    return _merge_tokens(*sources)


async def _start(app, host: str, port: int, *, ssl_context=None, header_timeout=DEFAULT_HEADER_TIMEOUT,
                 idle_timeout=DEFAULT_IDLE_TIMEOUT, max_connections=DEFAULT_MAX_CONNECTIONS):
    web = _web()
    _check_port(port)
    limits = {"header_timeout": float(header_timeout), "idle_timeout": float(idle_timeout),
              "max_connections": int(max_connections), "open": 0}
    runner = _guarded_runner_class()(app, limits=limits, access_log=None, keepalive_timeout=float(idle_timeout))
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise SyncConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound = runner.addresses[0]
    return runner, bound[1]


def serve(db_url, host: str = "127.0.0.1", port: int = 8080, *, tokens=None, tokens_file=None,
          token_specs: Optional[Iterable[str]] = None, max_body: int = DEFAULT_MAX_BODY,
          max_batch: int = DEFAULT_MAX_BATCH, workers: int = 4, out=sys.stdout, tls_cert=None, tls_key=None,
          client_ca=None, create: bool = False, header_timeout: float = DEFAULT_HEADER_TIMEOUT,
          body_timeout: float = DEFAULT_BODY_TIMEOUT, idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
          max_connections: int = DEFAULT_MAX_CONNECTIONS, token_ttl: float = DEFAULT_TOKEN_TTL,
          metrics: str = "admin") -> None:
    """Run the sync server until SIGINT/SIGTERM (what ``posfast serve`` calls).

    Prints ``posfast sync server listening on http(s)://HOST:PORT`` once it accepts
    connections (``port=0`` picks a free port).  ``tls_cert`` + ``tls_key`` serve
    HTTPS; ``client_ca`` also requires client certificates (mutual TLS).

    >>> serve("sqlite:///back.db", port=8443, tokens_file="tokens.txt",
    ...       tls_cert="bo.crt", tls_key="bo.key")   # doctest: +SKIP
    """
    _check_port(port)
    table = _collect_tokens(tokens, tokens_file, token_specs)
    if bool(tls_cert) != bool(tls_key):
        raise SyncConfigError("--tls-cert and --tls-key go together")
    if client_ca and not tls_cert:
        raise SyncConfigError("--client-ca needs --tls-cert and --tls-key (mutual TLS is TLS)")
    ssl_context = server_ssl_context(tls_cert, tls_key, client_ca) if tls_cert else None
    app = make_app(db_url, table, max_body=max_body, max_batch=max_batch, workers=workers,
                   body_timeout=body_timeout, create=create, token_ttl=token_ttl, metrics=metrics)
    ctx = server_context(app)
    in_db = ctx.target.tokens() if hasattr(ctx.target, "tokens") else []
    live = sum(1 for t in in_db if not t.revoked)
    if not table and not live:
        log.warning("no tokens yet: issue them with posfast register --db ... JOURNAL_ID --issue-token "
                    "(picked up while the server runs, within %.0f s)", token_ttl)

    async def run():
        runner, bound_port = await _start(app, host, port, ssl_context=ssl_context, header_timeout=header_timeout,
                                          idle_timeout=idle_timeout, max_connections=max_connections)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread / Windows
                pass
        scheme = "https" if ssl_context else "http"
        print(f"posfast sync server listening on {scheme}://{host}:{bound_port} ({live} tokens in the "
              f"back office{f', {len(table)} from --token/--tokens-file' if table else ''}"
              f"{', client certificates required' if client_ca else ''})", file=out, flush=True)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(run())


_START_OPTIONS = ("ssl_context", "header_timeout", "idle_timeout", "max_connections")


class RunningServer:
    """A sync server running in a background thread (tests, embedding); ``stop()`` ends it.

    Options: those of :func:`make_app`, plus ``ssl_context`` (see :func:`server_ssl_context`),
    ``header_timeout``, ``idle_timeout`` and ``max_connections``.
    """

    def __init__(self, db_url, tokens, host="127.0.0.1", port=0, **options):
        self.host = host
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None
        self._runner = None
        self.port = None
        start_options = {k: options.pop(k) for k in _START_OPTIONS if k in options}
        self._thread = threading.Thread(target=self._run, args=(db_url, tokens, port, options, start_options),
                                        name="posfast-serve", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        scheme = "https" if start_options.get("ssl_context") else "http"
        self.url = f"{scheme}://{host}:{self.port}"

    def _run(self, db_url, tokens, port, options, start_options):
        asyncio.set_event_loop(self._loop)
        try:
            app = make_app(db_url, tokens, **options)
            self._runner, self.port = self._loop.run_until_complete(_start(app, self.host, port, **start_options))
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()


def start_in_thread(db_url, tokens, host: str = "127.0.0.1", port: int = 0, **options) -> RunningServer:
    """Start a sync server in a background thread; returns it once it listens.

    >>> with start_in_thread("sqlite:///back.db", {token: journal_id}, create=True) as srv:   # doctest: +SKIP
    ...     Syncer(journal, HttpTarget(srv.url, token)).run_once()
    """
    return RunningServer(db_url, tokens, host, port, **options)
