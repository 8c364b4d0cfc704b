"""posfast sync server: the back office's HTTP door for terminals (``posfast serve``).

Terminals push batches with :class:`posfast.sync.HttpTarget`; the server checks
them exactly as a local target would (gap-free, hash chain intact, no fork, one
record per ``(journal_id, seq)``) and writes them to SQLite or PostgreSQL::

    posfast serve --db sqlite:///back.db --port 8080 --tokens-file tokens.txt
    posfast serve --db postgresql://bo@db/backoffice --token 5f0c...-9a1e=s3cret

Built on aiohttp; database work runs in a small thread pool so one slow commit
does not stall other terminals.  The wire format is described in
:mod:`posfast.sync` (JSON, columnar, bytes in base64).

Authentication: every journal has its own bearer token (``Authorization:
Bearer TOKEN``).  Tokens come from ``--token JOURNAL_ID=TOKEN`` (repeatable) or
a tokens file with one ``JOURNAL_ID=TOKEN`` per line (``#`` comments, blank
lines ignored); one journal may have several tokens (rotation), a token maps to
exactly one journal.  A token may only read and write its own journal: another
journal's id gets 403, an unknown or missing token 401.  Tokens are kept only
as SHA-256 digests in memory.

Limits: bodies over ``max_body`` bytes get 413 before they are read, batches of
more than ``max_batch`` records 413 (the syncer halves its batch and retries),
malformed bodies 400; every error is JSON ``{"ok": false, "reason", "message"}``
and nothing of a refused batch is stored.  Refusals are logged (logger
``posfast.server``) and recorded in the back office's ``sync_refusals`` table.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import logging
import signal
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Mapping, Optional, Union

from .sync import (MAX_BATCH, PostgresTarget, SqliteTarget, SyncRefused, SyncUnavailable, decode_batch,
                   target_from_url)

log = logging.getLogger("posfast.server")

DEFAULT_MAX_BODY = 32 * 1024 * 1024
DEFAULT_MAX_BATCH = MAX_BATCH
_REASON_STATUS = {"gap": 409, "fork": 409, "chain": 409, "invalid": 400, "auth": 403}

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_BODY", "RunningServer", "load_tokens", "make_app", "main",
           "parse_tokens", "serve", "start_in_thread"]


def _web():
    try:
        from aiohttp import web
    except ImportError as exc:
        raise ImportError("the posfast sync server needs aiohttp: pip install 'posfast[server]'") from exc
    return web


# --------------------------------------------------------------------------- tokens

def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def parse_tokens(specs: Iterable[str]) -> dict:
    """``["JOURNAL_ID=TOKEN", ...]`` -> ``{token: journal_id}``.

    >>> parse_tokens(["0b1c9f3e-8a3d-4a55-9f0e-6f1d2c3b4a59=s3cret"])
    {'s3cret': UUID('0b1c9f3e-8a3d-4a55-9f0e-6f1d2c3b4a59')}
    """
    tokens: dict = {}
    for spec in specs:
        journal, sep, token = spec.strip().partition("=")
        if not sep or not token.strip():
            raise ValueError(f"token spec {spec!r} is not JOURNAL_ID=TOKEN")
        try:
            journal_id = uuid.UUID(journal.strip())
        except ValueError:
            raise ValueError(f"token spec {spec!r}: {journal.strip()!r} is not a journal id (UUID)") from None
        token = token.strip()
        if tokens.get(token, journal_id) != journal_id:
            raise ValueError(f"token for journal {journal_id} is already the token of journal {tokens[token]}")
        tokens[token] = journal_id
    return tokens


def load_tokens(path) -> dict:
    """Read a tokens file (``JOURNAL_ID=TOKEN`` per line) -> ``{token: journal_id}``."""
    with open(path, encoding="utf-8") as fh:
        lines = [ln for ln in (raw.strip() for raw in fh) if ln and not ln.startswith("#")]
    try:
        return parse_tokens(lines)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _token_table(tokens) -> dict:
    if tokens is None:
        return {}
    if isinstance(tokens, Mapping):
        return {_digest(str(tok)): uuid.UUID(str(jid)) for tok, jid in tokens.items()}
    return {_digest(tok): jid for tok, jid in parse_tokens(tokens).items()}


# --------------------------------------------------------------------------- app

class _Refused(Exception):
    def __init__(self, status: int, reason: str, message: str, **extra):
        super().__init__(message)
        self.status, self.reason, self.message, self.extra = status, reason, message, extra


def open_back_office(db: Union[str, SqliteTarget, PostgresTarget]):
    """The database behind the server: ``sqlite:///...`` or ``postgresql://...`` (or a target)."""
    if isinstance(db, (SqliteTarget, PostgresTarget)):
        return db
    if not isinstance(db, str) or db.split(":", 1)[0].lower() not in ("sqlite", "postgresql", "postgres"):
        raise ValueError(f"--db must be sqlite:///FILE or postgresql://..., not {db!r}")
    return target_from_url(db)


def make_app(db_url, tokens, *, max_body: int = DEFAULT_MAX_BODY, max_batch: int = DEFAULT_MAX_BATCH,
             workers: int = 4):
    """Build the aiohttp application (serve it with ``aiohttp.web.run_app`` or :func:`serve`).

    ``tokens``: ``{token: journal_id}`` or an iterable of ``"JOURNAL_ID=TOKEN"``.

    >>> app = make_app("sqlite:///back.db", {"s3cret": "0b1c9f3e-8a3d-4a55-9f0e-6f1d2c3b4a59"})  # doctest: +SKIP
    """
    web = _web()
    table = _token_table(tokens)
    target = open_back_office(db_url)
    target.max_batch = max_batch
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="posfast-sync")

    def authorize(request, journal_id: uuid.UUID) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refused(401, "auth", "missing bearer token (Authorization: Bearer <journal token>)")
        owner = table.get(_digest(token.strip()))
        if owner is None:
            raise _Refused(401, "auth", "unknown token")
        if owner != journal_id:
            raise _Refused(403, "auth", f"this token belongs to journal {owner}, not {journal_id}")

    def path_journal(request) -> uuid.UUID:
        text = request.match_info["journal_id"]
        try:
            return uuid.UUID(text)
        except ValueError:
            raise _Refused(400, "invalid", f"{text!r} is not a journal id (UUID)") from None

    def ingest(body: bytes, journal_id: uuid.UUID) -> dict:
        try:
            batch, anchor = decode_batch(body, max_batch=max_batch)
        except SyncRefused as exc:
            exc.journal_id = exc.journal_id or journal_id
            target._refused(exc)
            raise
        if batch.journal_id != journal_id:
            raise _Refused(403, "auth", f"batch of journal {batch.journal_id} posted to journal {journal_id}")
        ack = target.push(batch, anchor=anchor)
        return {"ok": True, "journal_id": str(ack.journal_id), "high_seq": ack.high_seq, "stored": ack.stored,
                "duplicates": ack.duplicates}

    def held(journal_id: uuid.UUID) -> dict:
        st = target.state(journal_id)
        return {"ok": True, "journal_id": str(journal_id), "anchor_seq": st.anchor_seq if st else 0,
                "high_seq": st.high_seq if st else 0, "records": st.records if st else 0,
                "last_link": base64.b64encode(st.last_link if st else b"").decode("ascii")}

    @web.middleware
    async def json_errors(request, handler):
        try:
            return await handler(request)
        except _Refused as exc:
            if exc.reason == "auth":
                log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote,
                            exc.message)
            body = {"ok": False, "reason": exc.reason, "message": exc.message, **exc.extra}
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            return web.json_response(body, status=exc.status, headers=headers)
        except SyncRefused as exc:
            status = exc.status or _REASON_STATUS[exc.reason]
            return web.json_response(exc.to_json(), status=status)
        except SyncUnavailable as exc:
            log.error("back office unavailable: %s", exc)
            return web.json_response({"ok": False, "reason": "unavailable", "message": str(exc)}, status=503)
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"ok": False, "reason": "invalid",
                                      "message": f"body larger than {max_body} bytes"}, status=413)
        except web.HTTPException as exc:
            return web.json_response({"ok": False, "reason": "invalid", "message": exc.reason},
                                     status=exc.status)
        except Exception:
            log.exception("error handling %s %s", request.method, request.path)
            return web.json_response({"ok": False, "reason": "internal", "message": "internal server error"},
                                     status=500)

    async def post_batch(request):
        journal_id = path_journal(request)
        authorize(request, journal_id)
        if request.content_length is not None and request.content_length > max_body:
            raise _Refused(413, "invalid", f"body of {request.content_length} bytes exceeds the limit of "
                           f"{max_body}; send smaller batches")
        body = await request.read()
        doc = await asyncio.get_running_loop().run_in_executor(executor, ingest, body, journal_id)
        return web.json_response(doc)

    async def get_journal(request):
        journal_id = path_journal(request)
        authorize(request, journal_id)
        doc = await asyncio.get_running_loop().run_in_executor(executor, held, journal_id)
        return web.json_response(doc)

    async def health(request):
        return web.json_response({"ok": True})

    async def cleanup(app):
        executor.shutdown(wait=True)
        target.close()

    app = web.Application(client_max_size=max_body, middlewares=[json_errors])
    app.router.add_post("/v1/journals/{journal_id}/batches", post_batch)
    app.router.add_get("/v1/journals/{journal_id}", get_journal)
    app.router.add_get("/v1/health", health)
    app.on_cleanup.append(cleanup)
    return app


# --------------------------------------------------------------------------- running

def _collect_tokens(tokens, tokens_file, token_specs) -> dict:
    merged: dict = {}
    if tokens_file:
        merged.update(load_tokens(tokens_file))
    if token_specs:
        merged.update(parse_tokens(token_specs))
    if tokens:
        merged.update(tokens if isinstance(tokens, Mapping) else parse_tokens(tokens))
    if not merged:
        raise ValueError("no journal tokens: pass --token JOURNAL_ID=TOKEN or --tokens-file FILE")
    return merged


async def _start(app, host: str, port: int):
    web = _web()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    return runner, bound[1]


def serve(db_url, host: str = "127.0.0.1", port: int = 8080, *, tokens=None, tokens_file=None,
          token_specs: Optional[Iterable[str]] = None, max_body: int = DEFAULT_MAX_BODY,
          max_batch: int = DEFAULT_MAX_BATCH, workers: int = 4, out=sys.stdout) -> None:
    """Run the sync server until SIGINT/SIGTERM (what ``posfast serve`` calls).

    Prints ``posfast sync server listening on http://HOST:PORT`` once it accepts
    connections (``port=0`` picks a free port).

    >>> serve("sqlite:///back.db", port=8080, tokens_file="tokens.txt")   # doctest: +SKIP
    """
    table = _collect_tokens(tokens, tokens_file, token_specs)

    async def run():
        app = make_app(db_url, table, max_body=max_body, max_batch=max_batch, workers=workers)
        runner, bound_port = await _start(app, host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread / Windows
                pass
        print(f"posfast sync server listening on http://{host}:{bound_port} ({len(table)} tokens)",
              file=out, flush=True)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(run())


class RunningServer:
    """A sync server running in a background thread (tests, embedding); ``stop()`` ends it."""

    def __init__(self, db_url, tokens, host="127.0.0.1", port=0, **options):
        self.host = host
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None
        self._runner = None
        self.port = None
        self._thread = threading.Thread(target=self._run, args=(db_url, tokens, port, options),
                                        name="posfast-serve", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        self.url = f"http://{host}:{self.port}"

    def _run(self, db_url, tokens, port, options):
        asyncio.set_event_loop(self._loop)
        try:
            app = make_app(db_url, tokens, **options)
            self._runner, self.port = self._loop.run_until_complete(_start(app, self.host, port))
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

    >>> with start_in_thread("sqlite:///back.db", {"s3cret": journal_id}) as srv:   # doctest: +SKIP
    ...     Syncer(journal, HttpTarget(srv.url, "s3cret")).run_once()
    """
    return RunningServer(db_url, tokens, host, port, **options)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``posfast serve`` (for the CLI to reuse)."""
    parser.add_argument("--db", required=True, help="back-office database: sqlite:///FILE or postgresql://...")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--tokens-file", help="file of JOURNAL_ID=TOKEN lines")
    parser.add_argument("--token", action="append", default=[], metavar="JOURNAL_ID=TOKEN",
                        help="a journal's token (repeatable)")
    parser.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY, help="largest request body, bytes")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="largest batch, records")
    parser.add_argument("--workers", type=int, default=4, help="database worker threads")


def run_from_args(args) -> int:
    """Run ``posfast serve`` from parsed :func:`add_arguments` options; returns the exit code."""
    try:
        serve(args.db, args.host, args.port, tokens_file=args.tokens_file, token_specs=args.token,
              max_body=args.max_body, max_batch=args.max_batch, workers=args.workers)
    except (ValueError, OSError) as exc:
        print(f"posfast serve: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    """``python -m posfast.server --db sqlite:///back.db --token JID=TOKEN``."""
    parser = argparse.ArgumentParser(prog="posfast serve", description="posfast back-office sync server")
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
