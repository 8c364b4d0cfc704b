"""The agent's application: one handler per operation of ``openapi.json``, routed from
the document itself (so every route is documented and every documented route exists).

Payment writes (begin, finish, resolve) run on the event loop itself, one at a time in
arrival order: a 2xx is sent only after the journal's append returned, which in its ``fsync``
durability means after the record's fdatasync.  (A hop to a writer thread cost some 250 us a
request, twice the fdatasync, and bought nothing: the journal's lock serialises the appends,
and a lookup waits for it either way.)  A day close runs on one writer thread; prints,
reprints, sync and verify on a second pool (a printer's timeout never holds a payment up);
lookups run on the event loop (microseconds each).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

from ..errors import (CorruptRecord, DayClosed, InvalidRecord, IOFailure, JournalClosed,
                      JournalFull, PaymentError, PosfastError, ReprintRefused, SyncError,
                      SyncRefused, SyncUnavailable)
from ..records import Flag, Kind, Method, State, format_day, ts_datetime
from .http1 import Router, error_body
from .schema import BadRequest, compile_check, compile_params, load_openapi

log = logging.getLogger("posfast.agent")

#: Largest request body (a receipt with many items fits many times over).
MAX_BODY = 256 * 1024
_ECHO = 200

__all__ = ["MAX_BODY", "AgentApp", "make_app", "record_dict"]


# --------------------------------------------------------------------------- JSON views
def _name(enum_cls, value) -> str:
    try:
        return enum_cls(int(value)).name.lower()
    except ValueError:
        return str(int(value))


def _text(value) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).rstrip(b"\0").decode("utf-8", "replace")
    return "" if value is None else str(value)


def record_dict(rec, tz=None) -> dict:
    """A journal Record as the agent's JSON ``Record`` (enum names, references as text)."""
    when = ts_datetime(rec.ts)
    try:
        time_text = when.astimezone(tz).isoformat(timespec="microseconds") if when else ""
    except (OverflowError, ValueError):
        time_text = ""
    return {"seq": rec.seq, "ts": rec.ts, "time": time_text, "day": format_day(rec.day),
            "terminal": rec.terminal, "kind": _name(Kind, rec.kind), "state": _name(State, rec.state),
            "method": _name(Method, rec.method), "amount": rec.amount, "currency": rec.currency,
            "txn_id": rec.txn_id, "ref_seq": rec.ref_seq, "receipt_no": rec.receipt_no,
            "operator": rec.operator, "flags": rec.flags, "pan_last4": _text(rec.pan_last4),
            "auth_code": _text(rec.auth_code), "rrn": _text(rec.rrn),
            "client_ref": _text(rec.client_ref), "order_ref": _text(rec.order_ref),
            "host_ref": _text(rec.host_ref), "channel": _text(rec.channel),
            "payload_bytes": len(rec.payload)}


def _summary_dict(summary: dict) -> dict:
    return {k: (_text(v) if isinstance(v, (bytes, bytearray)) else v) for k, v in summary.items()}


def _sum(s) -> dict:
    return {"count": s.count, "amount": s.amount, "net": s.net}


def _totals_dict(totals, day: str, terminal) -> dict:
    return {"day": day, "terminal": terminal, "currencies": {
        str(currency): {"count": t.count, "amount": t.amount, "net": t.net,
                        **{name: {str(k): _sum(v) for k, v in getattr(t, name).items()}
                           for name in ("by_state", "by_kind", "by_method", "by_terminal")}}
        for currency, t in totals.items()}}


def _print_dict(result) -> dict:
    return {"outcome": result.outcome, "error": result.error, "bytes_sent": result.bytes_sent,
            "printer": result.printer, "seq": result.seq, "copy": result.copy, "text": result.text,
            "status": list(result.status)}


# --------------------------------------------------------------------------- errors
class _Answer(PosfastError):
    """An error reply on its way out of a handler (never leaves the agent)."""

    def __init__(self, status: int, reason: str, message: str, field: Optional[str] = None):
        super().__init__(message)
        self.status, self.reason, self.message, self.field = status, reason, message, field


def _field_in(message: str, fields) -> Optional[str]:
    """The request field a journal error speaks of (its message names it), if one does."""
    for name in fields:
        if re.search(r"\b%s\b" % re.escape(name), message):
            return name
    return None


def _error_for(exc: BaseException, fields=(), key_field: Optional[str] = None) -> _Answer:
    message = " ".join(str(exc).split())
    if message.startswith("posfast:"):
        message = message[len("posfast:"):].lstrip()
    if isinstance(exc, _Answer):
        return exc
    if isinstance(exc, BadRequest):
        return _Answer(400, "invalid", exc.detail, exc.field)
    if isinstance(exc, KeyError):
        return _Answer(404, "not_found", "not in the journal: %s" % message, key_field)
    if isinstance(exc, PaymentError) and message.startswith("no payment"):
        return _Answer(404, "not_found", message, "txn_id")
    if isinstance(exc, (PaymentError, DayClosed, ReprintRefused)):
        return _Answer(409, "conflict", message, _field_in(message, fields))
    if isinstance(exc, JournalFull):
        return _Answer(503, "full", message)
    if isinstance(exc, SyncRefused):
        return _Answer(409, "conflict", "the back office refused the batch: %s" % message)
    if isinstance(exc, SyncUnavailable):
        return _Answer(503, "unavailable", "back office unavailable: %s" % message)
    if isinstance(exc, SyncError) and isinstance(exc, ValueError):
        return _Answer(400, "invalid", message, _field_in(message, fields) or "to")
    if isinstance(exc, SyncError):
        return _Answer(503, "unavailable", message)
    if isinstance(exc, (CorruptRecord, IOFailure, JournalClosed, OSError)):
        return _Answer(503, "unavailable", "the journal cannot answer: %s" % message)
    if isinstance(exc, (InvalidRecord, ValueError, TypeError)):
        return _Answer(400, "invalid", message, _field_in(message, fields))
    if isinstance(exc, PosfastError):
        return _Answer(409, "conflict", message, _field_in(message, fields))
    raise exc


# --------------------------------------------------------------------------- the app
class _Ops:
    """The operations, each ``async (params, body) -> (status, document)``."""

    def __init__(self, journal, printer=None, syncers=(), info=None, make_target=None,
                 printer_profile=None):
        self.j = journal
        self.printer = printer
        self.printer_profile = printer_profile   # what prints use when a request names none
        self.syncers = list(syncers)
        self.info = dict(info or {})
        self.make_target = make_target
        self.started = time.time()
        self.tz = journal.day_rule.tzinfo
        # a day close (it reads the whole day) off the loop; prints, sync, verify on their own pool
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="posfast-agent-write")
        self.slow = ThreadPoolExecutor(2, thread_name_prefix="posfast-agent-io")

    async def _write(self, fn: Callable, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self.writer, lambda: fn(*args, **kwargs))

    async def _slow(self, fn: Callable, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self.slow, lambda: fn(*args, **kwargs))

    def close(self):
        self.writer.shutdown(wait=True)
        self.slow.shutdown(wait=True)

    # ---------------------------------------------------------------- health, status
    def getOpenapi(self, params, body):
        return 200, load_openapi()

    def health(self, params, body):
        return 200, {"ok": True, "journal_id": str(self.j.journal_id)}

    def status(self, params, body):
        from ..sync import sync_status
        doc = self.j.status()
        doc["sync"] = sync_status(self.j)
        doc["agent"] = dict(self.info, pid=os.getpid(), uptime_s=round(time.time() - self.started, 3),
                            printer=self.printer.describe() if self.printer is not None else None,
                            syncers=[{"target": name, "failures": s.failures,
                                      "last_error": None if s.last_error is None else str(s.last_error),
                                      "last_success_at": s.last_success_at}
                                     for name, s in self.syncers])
        return 200, doc

    async def verify(self, params, body):
        report = await self._slow(self.j.verify)
        return 200, {"ok": report.ok, "checked": report.checked, "oldest_seq": report.oldest_seq,
                     "head_seq": report.head_seq, "torn": [s for s, _ in report.torn],
                     "problems": [{"seq": p.seq, "slot": p.slot, "code": p.code, "cause": p.cause}
                                  for p in report.problems]}

    # ---------------------------------------------------------------- payments
    def beginPayment(self, params, body):
        fields = dict(body)
        receipt = fields.pop("receipt", None)
        if fields.pop("training", False):
            fields["flags"] = int(Flag.TRAINING)
        j = self.j

        def begin():
            if receipt is not None:
                for key in ("client_ref", "order_ref"):      # a resend: nothing to number
                    found = j.find(**{key: fields[key]}) if key in fields else None
                    if found is not None:
                        return 200, {"txn_id": found["txn_id"], "state": found["state"],
                                     "created": False, "receipt_no": found["receipt_no"],
                                     "terminal": found["terminal"]}
                if "receipt_no" not in fields:   # the slip shows the number the journal keeps
                    fields["receipt_no"] = j.next_receipt_no(fields["terminal"])
                fields["payload"] = _receipt_payload(receipt, fields)
            head = j.head_seq
            txn = j.begin_payment(**fields)
            if txn > head:                       # written now: a PENDING record
                return 201, _begun(txn, j.get(txn).receipt_no, fields["terminal"])
            current = j.payment(txn)             # an earlier begin with this key
            return 200, {"txn_id": txn, "state": _name(State, current.state), "created": False,
                         "receipt_no": current.receipt_no, "terminal": current.terminal}
        return begin()          # on the loop: one fdatasync, no thread hop (see the module docstring)

    def _finish(self, params, body, resolve: bool):
        txn = params["txn_id"]
        fn = self.j.resolve if resolve else self.j.finish_payment
        seq = fn(txn, body["state"], **{k: v for k, v in body.items() if k != "state"})
        return 200, _finished(txn, seq, body["state"])

    def finishPayment(self, params, body):
        return self._finish(params, body, False)

    def resolvePayment(self, params, body):
        return self._finish(params, body, True)

    def getPayment(self, params, body):
        return 200, record_dict(self.j.payment(params["txn_id"]), self.tz)

    def inDoubt(self, params, body):
        return 200, {"payments": [record_dict(r, self.tz) for r in self.j.in_doubt(params.get("terminal"))]}

    def findPayment(self, params, body):
        if len(params) != 1:
            raise _Answer(400, "invalid", "give exactly one of client_ref, order_ref, host_ref, "
                          "receipt_code", "client_ref" if not params else sorted(params)[1])
        found = self.j.find(**params)
        if found is None:
            name, value = next(iter(params.items()))
            raise _Answer(404, "not_found", "no payment with %s %s" % (name, value[:_ECHO]), name)
        return 200, _summary_dict(found)

    def lastTransaction(self, params, body):
        summary = self.j.last_transaction(params["terminal"])
        if summary is None:
            raise _Answer(404, "not_found", "terminal %d has no payment" % params["terminal"], "terminal")
        return 200, _summary_dict(summary)

    # ---------------------------------------------------------------- records, totals
    def query(self, params, body):
        _check_day(params)
        limit = params.pop("limit", 100)
        after = params.pop("after_seq", 0)
        rows = self.j.query(**params)
        seqs = rows["seq"]
        seqs = seqs[seqs > after][:limit + 1].tolist()
        page, more = seqs[:limit], len(seqs) > limit
        records = []
        for seq in page:
            try:
                records.append(record_dict(self.j.get(seq), self.tz))
            except (KeyError, CorruptRecord):
                continue                    # evicted meanwhile or damaged: verify reports it
        return 200, {"records": records, "next_after_seq": page[-1] if more else None}

    def getRecord(self, params, body):
        return 200, record_dict(self.j.get(params["seq"]), self.tz)

    def totals(self, params, body):
        _check_day(params)
        totals = self.j.totals(params["day"], terminal=params.get("terminal"))
        return 200, _totals_dict(totals, params["day"], params.get("terminal"))

    # ---------------------------------------------------------------- printing
    def _printer_for(self, spec: Optional[str]):
        if spec is not None:
            from ..printing import open_printer
            return open_printer(spec, what="printer")
        if self.printer is None:
            raise _Answer(409, "conflict", "this agent has no printer: start it with --printer URL, "
                          "or give printer in the request", "printer")
        return self.printer

    async def printReceipt(self, params, body):
        from ..printing import print_receipt
        printer = self._printer_for(None)
        options = {k: body[k] for k in ("profile", "width", "operator") if k in body}
        if self.printer_profile and "profile" not in options:
            options["profile"] = self.printer_profile
        result = await self._slow(print_receipt, self.j, body["txn_id"], printer, **options)
        return 200, _print_dict(result)

    async def reprint(self, params, body):
        from ..printing import reprint
        chosen = [k for k in ("seq", "receipt_code", "receipt_no") if k in body]
        if len(chosen) != 1:
            raise _Answer(400, "invalid", "give exactly one of seq, receipt_code and receipt_no",
                          chosen[1] if chosen else "seq")
        if "terminal" in body and "receipt_no" not in body:
            raise _Answer(400, "invalid", "terminal goes with receipt_no (a receipt code holds "
                          "its terminal)", "terminal")
        printer = None if body.get("preview") else self._printer_for(body.get("printer"))
        options = {k: body[k] for k in ("seq", "receipt_code", "receipt_no", "terminal", "max_copies",
                                        "profile", "width", "operator", "text") if k in body}
        if self.printer_profile and "profile" not in options:
            options["profile"] = self.printer_profile
        result = await self._slow(reprint, self.j, printer=printer, **options)
        return 200, _print_dict(result)

    # ---------------------------------------------------------------- day close, sync
    async def closeDay(self, params, body):
        from ..printing import render_z_report, tax_totals
        _check_day(body)
        width = body.pop("width", 42)
        close = await self._write(self.j.close_day, body["day"], terminal=body.get("terminal"),
                                  force=bool(body.get("force", False)), operator=body.get("operator", 0),
                                  catch_up=bool(body.get("catch_up", False)))
        doc = close.to_dict()
        doc["z_report_text"] = render_z_report(close, width=width, tz=self.tz,
                                               taxes=tax_totals(self.j, close))
        return 200, doc

    async def syncNow(self, params, body):
        from ..sync import Syncer
        if "to" in body:
            if self.make_target is None:
                raise _Answer(409, "conflict", "this agent cannot open back offices", "to")
            options = {k: body[k] for k in ("token", "create") if k in body}
            target = self.make_target(body["to"], **options)
            pairs = [(body["to"], Syncer(self.j, target, batch=body.get("batch", 1000)))]
        elif not self.syncers:
            raise _Answer(409, "conflict", "this agent syncs to no back office: start it with "
                          "--sync-to URL, or give to in the request", "to")
        else:
            pairs = self.syncers

        def run():
            out = []
            try:
                for name, syncer in pairs:
                    result = syncer.run_once()
                    out.append({"target": name, "sent": result.sent, "batches": result.batches,
                                "watermark": result.watermark, "duplicates": result.duplicates})
            finally:
                if "to" in body:
                    pairs[0][1].target.close()
            return out
        results = await self._slow(run)
        return 200, {"results": results, "sync_watermark": self.j.sync_watermark}


def _begun(txn_id: int, receipt_no: int, terminal: int) -> bytes:
    """A new payment's ``BeginResult``, as ``json.dumps`` writes it: formatted, not encoded (the
    encoder cost some 10 us of a begin's reply, after the fdatasync, with cold caches).

    >>> _begun(12, 5, 3) == json.dumps({"txn_id": 12, "state": "pending", "created": True,
    ...                                 "receipt_no": 5, "terminal": 3}).encode()
    True
    """
    return b'{"txn_id": %d, "state": "pending", "created": true, "receipt_no": %d, "terminal": %d}' % (
        int(txn_id), int(receipt_no), int(terminal))


_FINAL_STATES = frozenset(("approved", "declined", "failed", "reversed", "voided"))


def _finished(txn_id: int, seq: int, state: str):
    """A finish's or resolve's ``FinishResult`` (bytes as ``json.dumps`` writes it, for the
    states the document allows; the document itself for anything else).

    >>> _finished(12, 13, "approved")
    b'{"txn_id": 12, "seq": 13, "state": "approved"}'
    """
    if state in _FINAL_STATES:
        return b'{"txn_id": %d, "seq": %d, "state": "%s"}' % (int(txn_id), int(seq), state.encode())
    return {"txn_id": txn_id, "seq": seq, "state": state}


def _encoder() -> Callable[[Any], str]:
    """``json.dumps(doc, ensure_ascii=False, default=str)``, its C encoder built once rather
    than per reply (where the C accelerator exists; the same output either way).

    >>> _encoder()({"a": [1, "é", None]})
    '{"a": [1, "é", null]}'
    """
    from json import encoder as json_encoder
    fallback = json.JSONEncoder(ensure_ascii=False, default=str).encode
    make = getattr(json_encoder, "c_make_encoder", None)
    if make is None:
        return fallback
    # as JSONEncoder.iterencode builds it for these options, less the check for circular
    # documents (its memo would be shared by every reply; no handler builds a circular one)
    iterencode = make(None, str, json_encoder.encode_basestring, None, ": ", ", ", False, False, True)

    def encode(doc) -> str:
        if isinstance(doc, str):
            return fallback(doc)
        return "".join(iterencode(doc, 0))
    return encode


def _check_day(where: dict) -> None:
    import datetime
    if "day" in where:
        try:
            datetime.date.fromisoformat(where["day"])
        except ValueError:
            raise BadRequest("day", "%r is not a date (YYYY-MM-DD)" % where["day"][:40]) from None


def _receipt_payload(receipt: dict, fields: dict) -> bytes:
    from ..receipt import Receipt
    doc = dict(receipt)
    doc.setdefault("terminal", fields["terminal"])
    if "receipt_no" in fields:
        doc.setdefault("receipt_no", fields["receipt_no"])
    doc.setdefault("currency", fields.get("currency", 156))
    try:
        built = Receipt(**doc)
    except TypeError as exc:
        raise BadRequest("receipt", " ".join(str(exc).split())[:_ECHO]) from None
    except ValueError as exc:            # InvalidReceipt: names the receipt's field
        raise BadRequest("receipt", " ".join(str(exc).split())[:_ECHO]) from None
    return built.to_payload()


class AgentApp:
    """The agent's application: ``router`` (every operation of ``openapi.json``), ``ops`` (the
    operations over the journal) and ``call(handler, request)`` for :class:`.http1.HttpServer`."""

    def __init__(self, router, ops, max_body: int):
        self.router, self.ops, self.max_body = router, ops, max_body

    def call(self, handler, request):
        return handler(request)

    def close(self) -> None:
        self.ops.close()


def make_app(journal, *, printer=None, syncers=(), token: Optional[str] = None, info=None,
             make_target=None, max_body: int = MAX_BODY, printer_profile: Optional[str] = None) -> AgentApp:
    """The agent's application over an open (writable) journal, served by
    :class:`posfast.agent.http1.HttpServer`.

    ``printer``: a :class:`posfast.printing.Printer` for print and reprint (its capabilities
    from ``printer_profile``, an escpos-printer-db profile, unless a request names one); ``syncers``:
    ``[(name, Syncer)]`` that ``POST /v1/sync`` runs; ``token``: every request must carry
    ``Authorization: Bearer TOKEN`` (TCP); ``make_target(url, token=, create=)``: the back
    office a ``POST /v1/sync`` with ``to`` names.

    >>> app = make_app(journal, printer=open_printer("tcp://192.168.1.50:9100"))  # doctest: +SKIP
    """
    import hmac
    spec = load_openapi()
    ops = _Ops(journal, printer, syncers, info, make_target, printer_profile)
    expected = token.encode("utf-8") if token else None

    encode = _encoder()

    def reply(status: int, doc) -> tuple:
        if doc.__class__ is bytes:             # a payment's reply, written as it is
            return status, doc, None
        return status, encode(doc).encode("utf-8"), None

    def refusal(answer: _Answer, headers=None) -> tuple:
        return answer.status, error_body(answer.reason, answer.message[:2 * _ECHO], answer.field), headers

    def answer_error(exc: BaseException, fields, key_field) -> tuple:
        try:
            return refusal(_error_for(exc, fields, key_field))
        except Exception:
            log.exception("error handling a request")
            return refusal(_Answer(500, "internal", "internal error (logged by the agent)"))

    async def later(pending, fields, key_field) -> tuple:
        try:
            status, doc = await pending
        except Exception as exc:            # the journal's refusals, as JSON
            return answer_error(exc, fields, key_field)
        return reply(status, doc)

    def handler_for(operation: dict, method: Callable):
        parameters = operation.get("parameters", [])
        body_spec = operation.get("requestBody")
        body_schema = body_spec["content"]["application/json"]["schema"] if body_spec else None
        body_required = bool(body_spec and body_spec.get("required"))
        fields = list((spec["components"]["schemas"].get(body_schema["$ref"].rsplit("/", 1)[1], {})
                       .get("properties", {}) if body_schema else {}))
        fields += [p["name"] for p in parameters]
        public = operation.get("security") == []
        path_params = [p["name"] for p in parameters if p["in"] == "path"]
        key_field = path_params[0] if path_params else next(
            (name for name in ("txn_id", "seq") if name in fields), None)
        # the checks of this operation's parameters and body, built once from the document
        parse_params = compile_params(spec, parameters)
        check_body = compile_check(spec, body_schema) if body_schema is not None else None

        def handle(request):
            if expected is not None and not public:
                # the header's bytes as sent (UTF-8 for a token that is not ASCII); the scheme's
                # name is case-insensitive (RFC 9110 11.1)
                scheme, _, given = request.headers.get("authorization", "").partition(" ")
                if not (hmac.compare_digest(given.encode("latin-1"), expected)
                        and scheme.lower() == "bearer"):
                    return refusal(_Answer(401, "auth", "missing or wrong bearer token "
                                                        "(Authorization: Bearer <--token-file's token>)",
                                           "Authorization"), {"WWW-Authenticate": "Bearer"})
            try:
                params = parse_params(request.query, request.match)
                body: dict = {}
                raw = request.body
                if check_body is not None:
                    if body_required or raw.strip():
                        body = _parse_json(raw)
                        check_body(body, "")
                elif raw.strip():
                    raise _Answer(400, "invalid", "this request takes no body")
                result = method(params, body)
            except Exception as exc:        # the journal's refusals, as JSON
                return answer_error(exc, fields, key_field)
            if isinstance(result, tuple):
                return reply(*result)
            return later(result, fields, key_field)
        return handle

    router = Router()
    for path, item in spec["paths"].items():
        for verb, operation in item.items():
            router.add(verb.upper(), path, handler_for(operation, getattr(ops, operation["operationId"])))
    return AgentApp(router, ops, max_body)


def _no_constant(name):
    raise ValueError("%s is not JSON" % name)


_DECODE = json.JSONDecoder(parse_constant=_no_constant).decode     # built once, not per request


def _parse_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
        if text.startswith("\ufeff"):          # as json.loads says it
            raise ValueError("Unexpected UTF-8 BOM (decode using utf-8-sig)")
        doc = _DECODE(text)
    except UnicodeDecodeError:
        raise BadRequest(None, "the body is not UTF-8 text") from None
    except RecursionError:
        raise BadRequest(None, "the body nests too deeply") from None
    except ValueError as exc:
        raise BadRequest(None, "the body is not JSON (%s)" % str(exc)[:_ECHO]) from None
    if not isinstance(doc, dict):
        raise BadRequest(None, "the body must be a JSON object")
    return doc
