"""The auditor's export of a store (``posfast export``): every record of its tills over a
range of business days, decoded, with its hash-chain link and the previous one, the day
closes (Z-reports), and a verification transcript, so a third party can recompute the
chain from FORMAT.md alone (§1.3: the link, and the head layout it hashes).

``audit-jsonl`` (one JSON object per line, ``type`` first):

* ``export``: what was exported (store, days, back office, when) and how to verify;
* ``journal``: one per till (registry, format version, the copy's anchor and high seq);
* ``record``: one per record, in seq order per journal: the decoded fields, the exact bytes
  the link covers (``text_hex`` of the fixed-width text fields, ``ext_hex``, ``payload_hex``),
  ``payload`` decoded (a receipt's or a day close's JSON), ``prev_link``, ``link`` (as held)
  and ``recomputed_link`` / ``link_ok`` (from the held previous link);
* ``day_close``: each DAY_CLOSE record's Z-report, after its record;
* ``verification``: per journal, the transcript: the range checked, where its first
  previous link came from, every record whose link does not follow, and whether the last
  link is the one the back office recorded for the journal;
* ``end``: the totals.

A journal's range is every held record from the first to the last of those whose business
day is in the range (records of other days in between are exported with
``"in_range": false``, so the chain is unbroken).  ``csv``: one row per record (the same
fields, links and ``link_ok``); the transcript goes to the `transcript` stream.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Optional

from ..dayclose import DayClose
from ..errors import PosfastError
from ..receipt import Receipt
from ..records import Kind, Method, State, day_number, day_to_date
from .store import _open

__all__ = ["AUDIT_FORMAT", "AuditResult", "audit_export", "record_link"]

AUDIT_FORMAT = "posfast-audit/1"
_TEXT = ("pan_last4", "auth_code", "rrn", "client_ref", "channel")
_HEAD = struct.Struct("<qIBBBBH4s6sIqQQI12s")      # head bytes [24, 96)
_V2_TAIL = struct.Struct("<iH10s")                 # [96, 112) in format 2
_V1_TAIL = struct.Struct("<16s")                   # [96, 112) in format 1
_CHUNK = 5000
HOW = ("link(seq) = SHA-256(link(seq-1) 16 bytes || seq u64 LE || head bytes [24,112) || body)[:16] "
       "(FORMAT.md 1.3); head [24,96): ts i64, terminal u32, kind u8, state u8, method u8, flags u8, "
       "currency u16, pan_last4 char[4], auth_code char[6], receipt_no u32, amount i64, txn_id u64, "
       "ref_seq u64, operator u32, rrn char[12]; format 2 [96,112): day i32, ext_len u16, channel char[10], "
       "body = extension || payload; format 1 [96,112): client_ref char[16], body = payload; text fields "
       "NUL-padded (text_hex holds their bytes); link(0) = SHA-256('posfast-chain-v1' || journal id 16 "
       "bytes)[:16]")


def genesis(journal_id) -> bytes:
    return hashlib.sha256(b"posfast-chain-v1" + journal_id.bytes).digest()[:16]


def record_link(prev: bytes, row, ext: bytes, payload: bytes, version: int) -> bytes:
    """A record's link as FORMAT.md §1.3 defines it (posfast's core is not used here)."""
    def text(name):
        return bytes(row[name])
    head = _HEAD.pack(int(row["ts"]), int(row["terminal"]), int(row["kind"]), int(row["state"]),
                      int(row["method"]), int(row["flags"]), int(row["currency"]), text("pan_last4"),
                      text("auth_code"), int(row["receipt_no"]), int(row["amount"]), int(row["txn_id"]),
                      int(row["ref_seq"]), int(row["operator"]), text("rrn"))
    if version >= 2:
        head += _V2_TAIL.pack(int(row["day"]), len(ext), text("channel"))
        body = bytes(ext) + bytes(payload)
    else:
        head += _V1_TAIL.pack(text("client_ref"))
        body = bytes(payload)
    return hashlib.sha256(bytes(prev) + struct.pack("<Q", int(row["seq"])) + head + body).digest()[:16]


@dataclass
class AuditResult:
    """What :func:`audit_export` wrote: journals, records, day closes, and the broken links."""
    journals: int = 0
    records: int = 0
    day_closes: int = 0
    failures: list = field(default_factory=list)      # (journal id, seq, why)

    @property
    def ok(self) -> bool:
        return not self.failures


def _name(enum_cls, value) -> str:
    try:
        return enum_cls(int(value)).name.lower()
    except ValueError:
        return str(int(value))


def _iso(us: int) -> str:
    try:
        return (_dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(microseconds=int(us))) \
            .isoformat().replace("+00:00", "Z")
    except OverflowError:
        return ""


def _decoded_payload(row, payload: bytes):
    """``{"day_close": Z-report}``, ``{"receipt": the receipt's fields}``, ``{"json": ...}`` (other
    JSON) or None (empty, or bytes posfast cannot read: payload_hex has them)."""
    if not payload:
        return None
    if int(row["kind"]) == int(Kind.DAY_CLOSE):
        try:
            return {"day_close": DayClose.from_payload(int(row["seq"]), int(row["ts"]), bytes(payload)).to_dict()}
        except PosfastError:
            return None
    try:
        return {"receipt": dataclasses.asdict(Receipt.from_payload(bytes(payload)))}
    except PosfastError:
        pass
    try:
        return {"json": json.loads(bytes(payload).decode("utf-8"))}
    except (ValueError, UnicodeDecodeError):
        return None


def _record_doc(jid, row, ext, payload, prev, link, recomputed, first_day, last_day, tz, refs) -> dict:
    day = int(row["day"])
    return {
        "type": "record", "journal_id": str(jid), "seq": int(row["seq"]),
        "in_range": first_day <= day <= last_day,
        "time_utc": _iso(int(row["ts"])), "local_time": _local(int(row["ts"]), tz), "ts_us": int(row["ts"]),
        "day": day_to_date(day).isoformat(), "day_number": day, "terminal": int(row["terminal"]),
        "kind": _name(Kind, row["kind"]), "state": _name(State, row["state"]),
        "method": _name(Method, row["method"]), "kind_value": int(row["kind"]), "state_value": int(row["state"]),
        "method_value": int(row["method"]), "flags": int(row["flags"]), "amount": int(row["amount"]),
        "currency": int(row["currency"]), "txn_id": int(row["txn_id"]), "ref_seq": int(row["ref_seq"]),
        "receipt_no": int(row["receipt_no"]), "operator": int(row["operator"]),
        **{name: bytes(row[name]).decode("utf-8", "replace") for name in _TEXT},
        "order_ref": refs[0], "host_ref": refs[1],
        "text_hex": {name: bytes(row[name]).hex() for name in _TEXT},
        "ext_hex": bytes(ext).hex(), "payload_hex": bytes(payload).hex(),
        "payload": _decoded_payload(row, payload),
        "prev_link": prev.hex(), "link": bytes(link).hex(), "recomputed_link": recomputed.hex(),
        "link_ok": recomputed == bytes(link),
    }


def _local(ts: int, tz) -> str:
    try:
        when = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(microseconds=ts)
        return when.astimezone(tz).isoformat(timespec="seconds")
    except (OverflowError, ValueError):
        return ""


CSV_COLUMNS = ("journal_id", "store", "till", "seq", "in_range", "time_utc", "local_time", "day", "terminal",
               "kind", "state", "method", "flags", "amount", "currency", "txn_id", "ref_seq", "receipt_no",
               "operator", "pan_last4", "auth_code", "rrn", "client_ref", "channel", "order_ref", "host_ref",
               "ext_hex", "payload_hex", "payload", "prev_link", "link", "recomputed_link", "link_ok")


def audit_export(back_office, store: str, first_day, last_day, out, *, format: str = "audit-jsonl",
                 transcript=None, now: Optional[float] = None) -> AuditResult:
    """Write the auditor's export of `store`'s tills over ``first_day..last_day`` to `out`
    (a text stream); returns :class:`AuditResult` (``ok``: every link recomputes).

    `back_office`: ``sqlite:///back.db``, a ``postgresql://`` DSN or a target.  ``format``:
    ``audit-jsonl`` (the module doc) or ``csv`` (rows; the transcript, as text lines, to
    `transcript`).
    """
    import time
    from ..records import DayRule
    if format not in ("audit-jsonl", "csv"):
        raise ValueError("format must be audit-jsonl or csv, not %r" % (format,))
    lo, hi = day_number(first_day), day_number(last_day)
    if hi < lo:
        raise PosfastError("posfast export: --to %s is before --from %s" % (day_to_date(hi), day_to_date(lo)))
    target, label, close = _open(back_office)
    result = AuditResult()
    jsonl = format == "audit-jsonl"

    def emit(doc):
        out.write(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n")

    def say(doc):
        if jsonl:
            emit(doc)
        elif transcript is not None and doc["type"] == "verification":
            transcript.write("journal %s (%s): %s %d records, seqs %s..%s, start link %s; %s\n" % (
                doc["journal_id"], doc["till"], "verified" if doc["ok"] else "BROKEN", doc["records"],
                doc["first_seq"], doc["last_seq"], doc["start_link_source"],
                "; ".join("seq %d: %s" % (f["seq"], f["why"]) for f in doc["failures"]) or "every link follows"))
    try:
        regs = target.registrations(store=store)
        if not regs:
            raise PosfastError("posfast export: no journal is registered to store %r in %s" % (store, label))
        writer = None
        if jsonl:
            emit({"type": "export", "format": AUDIT_FORMAT, "store": store, "from": day_to_date(lo).isoformat(),
                  "to": day_to_date(hi).isoformat(), "back_office": label,
                  "generated_at": _iso(int((time.time() if now is None else now) * 1e6)),
                  "journals": [str(r.journal_id) for r in regs], "how_to_verify": HOW})
        else:
            writer = csv.DictWriter(out, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
            writer.writeheader()
        for reg in regs:
            result.journals += 1
            jid = reg.journal_id
            state = target.state(jid)
            rule = DayRule.from_header(*state.day_rule) if state is not None and state.day_rule else DayRule()
            version = target.journal_format(jid) if hasattr(target, "journal_format") else None
            bounds = target.seq_bounds(jid, lo, hi) if state is not None else None
            doc = {"type": "journal", "journal_id": str(jid), "merchant_id": reg.merchant_id, "store": reg.store,
                   "till": reg.till, "tid": reg.tid, "device_serial": reg.device_serial,
                   "anchor_seq": state.anchor_seq if state else 0, "high_seq": state.high_seq if state else 0,
                   "day_rule": rule.describe(), "format_version": version,
                   "first_seq": bounds[0] if bounds else None, "last_seq": bounds[1] if bounds else None}
            if bounds is None:
                if jsonl:
                    emit(doc)
                say({"type": "verification", "journal_id": str(jid), "till": reg.till, "records": 0,
                     "first_seq": None, "last_seq": None, "start_link_source": "-", "ok": True, "failures": [],
                     "note": "no record of these days is held" if state else "never synced to this back office"})
                continue
            first, last = bounds
            for close_seq, payload in target.day_closes_after(jid, last):
                try:                        # the Z-report of a day in the range, written later
                    closed = DayClose.from_payload(close_seq, 0, payload).day
                except PosfastError:
                    continue
                if lo <= day_number(closed) <= hi:
                    last = close_seq
            doc["last_seq"] = last
            if jsonl:
                emit(doc)
            if first == 1:
                prev, source = genesis(jid), "genesis link of the journal id"
            elif first > state.anchor_seq:
                prev = bytes(target.read_range(jid, first - 1, first - 1).links[0])
                source = "link of seq %d as held (the record before the range)" % (first - 1)
            else:
                prev, source = None, "the back office's copy starts here (anchor): its first link is trusted"
            failures: list = []
            count = 0
            seq = expect = first
            while seq <= last:
                batch = target.read_range(jid, seq, min(last, seq + _CHUNK - 1))
                for i in range(len(batch.rows)):
                    row = batch.rows[i]
                    ext, payload, link = batch.exts[i], batch.payloads[i], bytes(batch.links[i])
                    if int(row["seq"]) != expect:
                        failures.append({"seq": expect, "why": "seqs %d..%d are missing from the back office"
                                         % (expect, int(row["seq"]) - 1)})
                    expect = int(row["seq"]) + 1
                    if prev is None:          # the anchor: its link is where the chain starts
                        recomputed = link
                        start_prev = b""
                    else:
                        if version is None:   # not recorded at push: the first link after a known one says
                            version = next((v for v in (2, 1) if record_link(prev, row, ext, payload, v) == link),
                                           None)
                        recomputed = record_link(prev, row, ext, payload, version or 2)
                        start_prev = prev
                    refs = batch.refs(i) if hasattr(batch, "refs") else ("", "")
                    rec = _record_doc(jid, row, ext, payload, start_prev, link, recomputed, lo, hi, rule.tzinfo, refs)
                    if not rec["link_ok"]:
                        failures.append({"seq": int(row["seq"]), "why": "link %s held, %s recomputed from the "
                                         "fields and the previous link" % (link.hex(), recomputed.hex())})
                    if jsonl:
                        emit(rec)
                    else:
                        assert writer is not None
                        writer.writerow(dict(rec, store=reg.store, till=reg.till,
                                             payload="" if rec["payload"] is None else
                                             json.dumps(rec["payload"], ensure_ascii=False)))
                    close_doc = (rec["payload"] or {}).get("day_close")
                    if close_doc is not None and lo <= day_number(close_doc["day"]) <= hi:
                        result.day_closes += 1
                        if jsonl:
                            emit({"type": "day_close", "journal_id": str(jid), "till": reg.till, **close_doc})
                    prev = link
                    count += 1
                seq = int(batch.rows["seq"][-1]) + 1 if len(batch.rows) else seq + _CHUNK
            end_ok = last != state.high_seq or prev == state.last_link
            if not end_ok:
                failures.append({"seq": last, "why": "the last link differs from the one the back office "
                                 "recorded for the journal (%s)" % state.last_link.hex()})
            result.records += count
            result.failures += [(str(jid), f["seq"], f["why"]) for f in failures]
            say({"type": "verification", "journal_id": str(jid), "till": reg.till, "records": count,
                 "first_seq": first, "last_seq": last, "start_link_source": source,
                 "format_version": version or 2, "ok": not failures, "failures": failures,
                 "end_link": prev.hex() if prev else "",
                 "journal_last_link": state.last_link.hex() if last == state.high_seq else None,
                 "method": HOW})
        if jsonl:
            emit({"type": "end", "journals": result.journals, "records": result.records,
                  "day_closes": result.day_closes, "ok": result.ok, "broken_links": len(result.failures)})
    finally:
        if close:
            target.close()
    return result
