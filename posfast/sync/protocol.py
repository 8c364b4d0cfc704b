"""The sync wire format and the rules every back office applies to a batch.

Batch shape and hash-chain validation (:func:`normalize_batch`), the day-rule
check (:func:`check_days`), the continuity rules that decide what of a batch is
new or why it is refused (:func:`plan_batch`), the JSON wire format of
``posfast serve`` (:func:`encode_batch`, :func:`decode_batch`) and the values a
target answers with (:class:`Ack`, :class:`JournalState`, :class:`SyncResult`).
The rules themselves are described in :mod:`posfast.sync`.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from .._core import FORMAT_VERSION, chain_link, decode_ext, encode_ext, genesis_link
from ..errors import (ECHO_LIMIT, SYNC_REFUSAL_REASONS, BackOfficeFull, BackOfficeMissing, SyncBadAck,
                      SyncConfigError, SyncError, SyncRefused, SyncUnavailable, clip)
from ..records import RECORD_DTYPE, DayRule

__all__ = [
    "safe_dsn",
    "Ack", "BackOfficeFull", "BackOfficeMissing", "BatchPlan", "DEFAULT_DAY_RULE", "ECHO_LIMIT", "JournalState",
    "LINK_SIZE", "MAX_BATCH", "MAX_SEQ", "REASONS", "RecordBatch", "SyncBadAck", "SyncConfigError", "SyncError",
    "SyncRefused", "SyncResult", "SyncUnavailable", "STATUS_FIELDS", "WIRE_FORMAT", "as_uuid", "check_days",
    "clean_status", "clip", "day_rule_tuple", "decode_batch", "decode_status", "encode_batch", "layout_fingerprint", "normalize_batch", "plan_batch",
    "rule_text",
]

#: Reason codes carried by :class:`SyncRefused`.
REASONS = SYNC_REFUSAL_REASONS
WIRE_FORMAT = "posfast-batch/1"
LINK_SIZE = 16
#: Largest batch a target accepts (records); the server may lower it.
MAX_BATCH = 10_000
#: Largest seq a back office stores (both databases hold seq as a signed 64-bit integer).
MAX_SEQ = (1 << 63) - 1
#: The day rule assumed for a journal when none was sent nor recorded: UTC, day starts 00:00
#: (``DayRule()``, what ``Journal.create`` uses by default).
DEFAULT_DAY_RULE = (0, 0, "")



def _refusal(reason: str, message: str, **where) -> SyncRefused:
    return SyncRefused(message, reason, **where)


# --------------------------------------------------------------------------- values

@dataclass(frozen=True)
class Ack:
    """A target's acknowledgement: everything up to ``high_seq`` is committed."""
    journal_id: uuid.UUID
    high_seq: int
    stored: int
    duplicates: int
    first_seq: Optional[int] = None   # the batch acknowledged (seq range and its last link)
    last_seq: Optional[int] = None
    last_link: Optional[bytes] = None


@dataclass(frozen=True)
class JournalState:
    """What a back office holds of one journal."""
    journal_id: uuid.UUID
    anchor_seq: int
    high_seq: int
    last_link: bytes
    records: int
    day_rule: Optional[tuple] = None   # (utc offset min, day start min, zone) the copy was anchored with


@dataclass
class RecordBatch:
    """Records of one journal in seq order (same shape as ``Journal.read_range``)."""
    journal_id: uuid.UUID
    rows: np.ndarray
    payloads: list
    links: list
    day_rule: Any = None   # the journal's DayRule (or (offset_min, start_min)); sent with the batch
    exts: Optional[list] = None   # format 2: each record's extension (client_ref, order_ref, host_ref)
    format_version: int = FORMAT_VERSION   # the journal's file format: how its links are made
    #: what the terminal says of itself with the batch (:func:`terminal_status`; wire field
    #: ``terminal``): the back office keeps the last one for the fleet view, never checks by it
    status: Optional[dict] = None

    def __post_init__(self):
        if self.exts is None:
            self.exts = [b""] * len(self.rows)

    def refs(self, i: int) -> tuple:
        """(order_ref, host_ref) of record i, as text."""
        _client, order_ref, host_ref = decode_ext(self.exts[i]) if self.exts[i] else (b"", b"", b"")
        return order_ref.decode("utf-8", "replace"), host_ref.decode("utf-8", "replace")

    def link_of(self, i: int, prev: bytes) -> bytes:
        """The link record i must carry after `prev`."""
        return bytes(chain_link(prev, self.rows[i], self.payloads[i], self.exts[i],
                                self.format_version))

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class SyncResult:
    """Outcome of :meth:`Syncer.run_once`."""
    sent: int
    batches: int
    watermark: int
    duplicates: int = 0


# --------------------------------------------------------------------------- posfast API

def _genesis_link(journal_id: uuid.UUID) -> bytes:
    """link(0) of a journal: what its seq 1 chains from."""
    return bytes(genesis_link(journal_id.bytes))


_layout_cache: dict = {}


def layout_fingerprint(dtype: Optional[np.dtype] = None) -> str:
    """Short fingerprint of the record layout, so mismatched posfast versions refuse cleanly."""
    dtype = RECORD_DTYPE if dtype is None else dtype
    fp = _layout_cache.get(dtype)
    if fp is None:
        desc = [(n, dtype.fields[n][0].str, dtype.fields[n][1]) for n in dtype.names]
        fp = hashlib.sha256(repr((desc, dtype.itemsize)).encode()).hexdigest()[:16]
        _layout_cache[dtype] = fp
    return fp


def as_uuid(value) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


# --------------------------------------------------------------------------- validation

def normalize_batch(batch, *, max_batch: int = MAX_BATCH) -> RecordBatch:
    """Check a batch's shape and its internal hash chain; return it normalized.

    Raises SyncRefused("invalid" | "gap" | "chain").
    """
    dtype = RECORD_DTYPE
    try:
        journal_id = as_uuid(batch.journal_id)
    except (ValueError, AttributeError, TypeError):
        raise _refusal("invalid", f"journal id {clip(getattr(batch, 'journal_id', None))!r} is not a UUID")
    rows = batch.rows
    if isinstance(rows, np.ndarray) and rows.dtype != dtype and rows.dtype.names == dtype.names and all(
            rows.dtype.fields[n][0] == dtype.fields[n][0] for n in dtype.names):
        rows = rows.astype(dtype)  # same fields, other padding (numpy drops it when concatenating)
    if not isinstance(rows, np.ndarray) or rows.dtype != dtype or rows.ndim != 1:
        raise _refusal("invalid", "rows must be a 1-d RECORD_DTYPE array", journal_id=journal_id)
    count = len(rows)
    if count == 0:
        raise _refusal("invalid", "empty batch", journal_id=journal_id)
    if count > max_batch:
        raise _refusal("invalid", f"batch of {count} records exceeds the limit of {max_batch}",
                       journal_id=journal_id, status=413)
    payloads = [bytes(p) for p in batch.payloads]
    links = [bytes(link) for link in batch.links]
    version = getattr(batch, "format_version", FORMAT_VERSION)
    if version not in (1, FORMAT_VERSION) or isinstance(version, bool):
        raise _refusal("invalid", f"format_version {clip(version)!r}: posfast journals are format 1 or "
                       f"{FORMAT_VERSION}", journal_id=journal_id)
    exts = getattr(batch, "exts", None)
    exts = [b""] * count if exts is None or (version == 1 and not any(exts)) else \
        [bytes(e) for e in exts]
    if len(exts) != count:
        raise _refusal("invalid", f"{count} rows but {len(exts)} extensions", journal_id=journal_id)
    if len(payloads) != count or len(links) != count:
        raise _refusal("invalid", f"{count} rows but {len(payloads)} payloads and {len(links)} links",
                       journal_id=journal_id)
    if int(rows["seq"].max()) > MAX_SEQ:
        raise _refusal("invalid", f"seq {int(rows['seq'].max())} is beyond the largest seq a back office holds "
                       f"({MAX_SEQ}); no journal reaches it", journal_id=journal_id)
    seqs = rows["seq"].astype(np.int64)
    first = int(rows["seq"][0])
    last = int(rows["seq"][-1])
    if first < 1:
        raise _refusal("invalid", "seq 0 is not a record", journal_id=journal_id)
    steps = np.diff(seqs)
    if count > 1 and not (steps == 1).all():
        bad = int(np.flatnonzero(steps != 1)[0])
        a, b = int(seqs[bad]), int(seqs[bad + 1])
        if b > a:
            raise _refusal("gap", f"batch jumps from seq {a} to seq {b} (records {a + 1}..{b - 1} missing)",
                           journal_id=journal_id, first_seq=first, last_seq=last)
        raise _refusal("invalid", f"batch seqs are not increasing (seq {b} after seq {a})",
                       journal_id=journal_id, first_seq=first, last_seq=last)
    if any(len(link) != LINK_SIZE for link in links):
        raise _refusal("invalid", f"every link must be {LINK_SIZE} bytes", journal_id=journal_id,
                       first_seq=first, last_seq=last)
    lens = rows["payload_len"]
    for i, p in enumerate(payloads):
        if len(p) != lens[i]:
            raise _refusal("invalid", f"seq {first + i}: payload is {len(p)} bytes but payload_len says "
                           f"{int(lens[i])}", journal_id=journal_id, first_seq=first, last_seq=last)
    ext_lens = rows["ext_len"]
    client = rows["client_ref"]
    for i, ext in enumerate(exts):
        if len(ext) != ext_lens[i] or (version == 1 and ext):
            raise _refusal("invalid", f"seq {first + i}: extension is {len(ext)} bytes but ext_len says "
                           f"{int(ext_lens[i])}", journal_id=journal_id, first_seq=first, last_seq=last)
        if version >= 2:
            try:
                refs = decode_ext(ext) if ext else (b"", b"", b"")
            except ValueError as exc:
                raise _refusal("invalid", f"seq {first + i}: extension: {exc}", journal_id=journal_id,
                               first_seq=first, last_seq=last) from None
            if refs[0] != bytes(client[i]) or encode_ext(*refs) != ext:
                raise _refusal("invalid", f"seq {first + i}: the extension does not hold the row's client_ref "
                               "in posfast's canonical layout", journal_id=journal_id, first_seq=first,
                               last_seq=last)
    inc = RecordBatch(journal_id, rows, payloads, links, day_rule_tuple(getattr(batch, "day_rule", None)),
                      exts, version, clean_status(getattr(batch, "status", None)))
    for i in range(1, count):
        if inc.link_of(i, links[i - 1]) != links[i]:
            raise _refusal("chain", f"seq {first + i}: link does not follow from seq {first + i - 1} "
                           "(record or link altered)", journal_id=journal_id, first_seq=first, last_seq=last)
    return inc


def day_rule_tuple(rule) -> Optional[tuple]:
    """A day rule as ``(utc_offset_minutes, day_start_minutes, zone)`` (None stays None):
    `zone` is an IANA time-zone name, or "" for a fixed offset (a zone rule's offset is 0:
    the zone decides it).

    Accepts a :class:`posfast.DayRule`, a 2- or 3-tuple, or the wire form
    ``{"utc_offset_min": 480, "starts_at_min": 240}`` (plus ``"tz": "Europe/Berlin"`` for a
    zone rule).  Raises SyncRefused("invalid").
    """
    if rule is None:
        return None
    if isinstance(rule, dict):
        rule = (rule.get("utc_offset_min", 0), rule.get("starts_at_min"), rule.get("tz", ""))
    elif hasattr(rule, "offset_minutes") and hasattr(rule, "start_minutes"):
        rule = (rule.offset_minutes, rule.start_minutes, getattr(rule, "tz_name", ""))
    if (not isinstance(rule, (tuple, list)) or len(rule) not in (2, 3)
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in rule[:2])
            or (len(rule) == 3 and not isinstance(rule[2], str))):
        raise _refusal("invalid", "day_rule must be {\"utc_offset_min\": int, \"starts_at_min\": int} "
                       "and, for a time-zone rule, \"tz\": an IANA zone name")
    off, start = int(rule[0]), int(rule[1])
    zone = rule[2] if len(rule) == 3 else ""
    if not -14 * 60 <= off <= 14 * 60 or not 0 <= start < 24 * 60:
        raise _refusal("invalid", f"day_rule utc_offset_min={off} / starts_at_min={start} is out of range "
                       "(offset within +-14:00, day start 00:00..23:59)")
    if zone:
        if len(zone) > 32 or not zone.isascii():
            raise _refusal("invalid", f"day_rule tz {clip(zone)!r} is not a zone name (at most 32 ASCII "
                           "characters, such as Asia/Shanghai)")
        try:
            DayRule.from_header(0, start, zone)
        except Exception as exc:       # (zoneinfo raises several kinds for a name it cannot load)
            raise _refusal("invalid", f"day_rule tz {clip(zone)!r} is not a time zone this back office "
                           f"knows ({clip(str(exc))}); install tzdata, or check the name") from None
        return 0, start, zone
    return off, start, ""


def rule_text(rule: tuple) -> str:
    """``UTC+08:00, day starts 04:00`` for ``(480, 240)``; a zone rule by its zone."""
    return DayRule.from_header(*rule).describe()


def check_days(inc: RecordBatch, rule: tuple, where: dict) -> None:
    """Every row's ``day`` must be what the journal's day rule gives for its ``ts``."""
    ts = inc.rows["ts"].astype(np.int64)
    if len(ts) and int(np.abs(ts).max()) > (1 << 62):
        i = int(np.argmax(np.abs(ts) > (1 << 62)))
        raise _refusal("invalid", f"seq {int(inc.rows['seq'][i])}: ts {int(ts[i])} is not a time", **where)
    expected = DayRule.from_header(*rule).day_numbers(ts).astype(np.int64)
    bad = np.flatnonzero(expected != inc.rows["day"].astype(np.int64))
    if len(bad):
        i = int(bad[0])
        raise _refusal("invalid", f"seq {int(inc.rows['seq'][i])}: day {int(inc.rows['day'][i])} does not match "
                       f"its ts under the journal's day rule ({rule_text(rule)} gives day {int(expected[i])}); "
                       "a record's business day is derived from its time, never sent on its own", **where)


@dataclass
class BatchPlan:
    new_from: int          # index of the first record not yet held
    duplicates: int
    anchor_seq: int        # anchor to record when the journal is new (0: keep)
    day_rule: tuple = DEFAULT_DAY_RULE   # the rule the journal's copy is (or becomes) anchored with


def plan_batch(inc: RecordBatch, state: Optional[JournalState],
          read_held: Callable[[int, int], RecordBatch], *, anchor: bool) -> BatchPlan:
    """Decide what of ``inc`` is new, or refuse it (the continuity rules of the module doc)."""
    jid = inc.journal_id
    first = int(inc.rows["seq"][0])
    count = len(inc.rows)
    last = first + count - 1
    where = dict(journal_id=jid, first_seq=first, last_seq=last)
    held_rule = state.day_rule if state is not None else None
    rule = inc.day_rule or held_rule or DEFAULT_DAY_RULE
    if inc.day_rule and held_rule and day_rule_tuple(inc.day_rule) != day_rule_tuple(held_rule):
        raise _refusal("invalid", f"day rule {rule_text(inc.day_rule)} differs from the rule this back office's "
                       f"copy of journal {jid} was anchored with ({rule_text(held_rule)})",
                       high_seq=state.high_seq, **where)
    check_days(inc, rule, where)
    if state is None or state.high_seq == 0:
        if first == 1:
            if inc.link_of(0, _genesis_link(jid)) != inc.links[0]:
                raise _refusal("chain", f"seq 1 does not link to the genesis link of journal {jid}", high_seq=0,
                               **where)
            return BatchPlan(0, 0, 1, rule)
        if anchor:
            return BatchPlan(0, 0, first, rule)
        raise _refusal("gap", f"back office holds nothing of journal {jid}, batch starts at seq {first} "
                       f"(records 1..{first - 1} missing). If this back office is meant to start here (the "
                       "journal was synced elsewhere before, or evicted records unsynced), sync with "
                       "anchor=True", high_seq=0, **where)
    high = state.high_seq
    if first > high + 1:
        raise _refusal("gap", f"batch starts at seq {first} but back office holds journal {jid} only up to "
                       f"seq {high} (records {high + 1}..{first - 1} missing)", high_seq=high, **where)
    if first < state.anchor_seq:
        raise _refusal("gap", f"batch starts at seq {first}, below seq {state.anchor_seq} where this back "
                       f"office's copy of journal {jid} starts", high_seq=high, **where)
    duplicates = 0
    overlap_hi = min(last, high)
    if first <= overlap_hi:
        held = read_held(first, overlap_hi)
        n = overlap_hi - first + 1
        if len(held.rows) != n:
            raise SyncUnavailable(f"back office is missing held records of journal {jid} in {first}..{overlap_hi}")
        mismatch = np.zeros(n, dtype=bool)
        mine = inc.rows[:n]
        for name in mine.dtype.names:
            mismatch |= held.rows[name] != mine[name]
        for k in range(n):
            if mismatch[k] or held.payloads[k] != inc.payloads[k] or held.links[k] != inc.links[k] \
                    or held.exts[k] != inc.exts[k]:
                raise _refusal("fork", f"seq {first + k} differs from the record the back office already "
                               f"holds for journal {jid} (same seq, different bytes or link)",
                               high_seq=high, **where)
        duplicates = n
    if last > high and first == high + 1:
        if inc.link_of(0, state.last_link) != inc.links[0]:
            raise _refusal("chain", f"seq {first} does not link to seq {high} held by the back office "
                           f"for journal {jid}", high_seq=high, **where)
    return BatchPlan(min(count, max(0, high + 1 - first)), duplicates, 0, rule)


# --------------------------------------------------------------------------- wire format

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_batch(batch, *, anchor: bool = False, day_rule=None) -> bytes:
    """Encode a batch as the JSON body ``posfast serve`` accepts (see the module doc).

    >>> body = encode_batch(journal.read_range(1, 10))    # doctest: +SKIP
    """
    dtype = RECORD_DTYPE
    rows = np.ascontiguousarray(batch.rows)
    if rows.dtype != dtype:
        raise _refusal("invalid", "rows must be a RECORD_DTYPE array")
    doc = {
        "format": WIRE_FORMAT, "layout": layout_fingerprint(dtype),
        "journal_id": str(as_uuid(batch.journal_id)),
        "first_seq": int(rows["seq"][0]) if len(rows) else 0, "count": len(rows), "anchor": bool(anchor),
        "rows": _b64(rows.tobytes()),
        "links": _b64(b"".join(bytes(x) for x in batch.links)),
        "payloads": _b64(b"".join(bytes(x) for x in batch.payloads)),
        "exts": _b64(b"".join(bytes(x) for x in (getattr(batch, "exts", None) or []))),
        "format_version": int(getattr(batch, "format_version", FORMAT_VERSION)),
    }
    rule = day_rule_tuple(day_rule if day_rule is not None else getattr(batch, "day_rule", None))
    if rule is not None:
        doc["day_rule"] = {"utc_offset_min": rule[0], "starts_at_min": rule[1]}
        if rule[2]:
            doc["day_rule"]["tz"] = rule[2]
    status = clean_status(getattr(batch, "status", None))
    if status:
        doc["terminal"] = status
    return json.dumps(doc, separators=(",", ":")).encode("ascii")


#: What a terminal reports of itself (wire field ``terminal`` of a batch or a heartbeat):
#: name -> (type, lowest, highest).  Unknown names are ignored, so either side may be newer.
STATUS_FIELDS = {
    "at_us": (int, 0, MAX_SEQ),                 # when the terminal composed it (its clock)
    "head_seq": (int, 0, MAX_SEQ),              # the journal's newest seq then
    "oldest_unsynced_ts": (int, -(1 << 62), 1 << 62),   # ts of its oldest record not yet acknowledged
    "ring_fill": (float, 0.0, 1.0),             # share of the ring's slots in use
    "ring_unsynced": (float, 0.0, 1.0),         # share held by records not yet acknowledged
    "in_doubt": (int, 0, MAX_SEQ),              # payments begun and never finished
    "retention": (str, 0, 16),                  # the ring's retention policy (refuse, overwrite, archive)
}


def clean_status(doc) -> Optional[dict]:
    """A terminal's status report, checked: only :data:`STATUS_FIELDS` of the right type and
    range (None values and other names dropped); None when nothing usable is left.  A status is
    advisory: a malformed one is dropped, never a reason to refuse the records it came with."""
    if not isinstance(doc, dict):
        return None
    out: dict = {}
    for name, (kind, lo, hi) in STATUS_FIELDS.items():
        value = doc.get(name)
        if value is None or isinstance(value, bool):
            continue
        if kind is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, kind):
            continue
        if kind is str:
            if len(value) <= hi and value.isascii() and value.isprintable():
                out[name] = value
        elif lo <= value <= hi:
            out[name] = value
    return out or None


def decode_status(body: bytes) -> dict:
    """The JSON body of a heartbeat (``POST /v1/journals/<id>/status``):
    ``{"terminal": {...}}``; raises SyncRefused("invalid") when it is not JSON."""
    try:
        doc = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _refusal("invalid", "body is not JSON") from None
    if not isinstance(doc, dict):
        raise _refusal("invalid", "body must be a JSON object")
    return clean_status(doc.get("terminal")) or {}


def decode_batch(body: bytes, *, max_batch: int = MAX_BATCH) -> tuple:
    """Parse and check a JSON batch body; return ``(RecordBatch, anchor)``.

    Every malformation raises ``SyncRefused(reason="invalid", message=...)`` naming the field.
    """
    dtype = RECORD_DTYPE
    try:
        doc = json.loads(body)
    except RecursionError:
        raise _refusal("invalid", "body is nested too deeply to be a batch") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _refusal("invalid", f"body is not JSON ({clip(str(exc))})") from None
    if not isinstance(doc, dict):
        raise _refusal("invalid", "body must be a JSON object")

    def field(name, kind):
        if name not in doc:
            raise _refusal("invalid", f"missing field {name!r}")
        value = doc[name]
        ok = (isinstance(value, kind) and not isinstance(value, bool)) if kind is int else isinstance(value, kind)
        if not ok:
            raise _refusal("invalid", f"field {name!r} must be {kind.__name__}, not {type(value).__name__}")
        return value

    def blob(name):
        try:
            return base64.b64decode(field(name, str), validate=True)
        except (binascii.Error, ValueError):
            raise _refusal("invalid", f"field {name!r} is not valid base64")

    if field("format", str) != WIRE_FORMAT:
        raise _refusal("invalid", f"unsupported format {clip(doc['format'])!r} (expected {WIRE_FORMAT!r})")
    if field("layout", str) != layout_fingerprint(dtype):
        raise _refusal("invalid", "record layout differs from this server's posfast version "
                       "(upgrade the terminal or the server)")
    jid_text = field("journal_id", str)
    try:
        journal_id = uuid.UUID(jid_text)
    except ValueError:
        raise _refusal("invalid", f"journal_id {clip(jid_text)!r} is not a UUID")
    first_seq = field("first_seq", int)
    count = field("count", int)
    anchor = field("anchor", bool)
    day_rule = day_rule_tuple(field("day_rule", dict)) if doc.get("day_rule") is not None else None
    if count < 1:
        raise _refusal("invalid", "count must be at least 1", journal_id=journal_id)
    if count > max_batch:
        raise _refusal("invalid", f"batch of {count} records exceeds the limit of {max_batch}",
                       journal_id=journal_id, status=413)
    raw_rows, raw_links, raw_payloads = blob("rows"), blob("links"), blob("payloads")
    if len(raw_rows) != count * dtype.itemsize:
        raise _refusal("invalid", f"rows hold {len(raw_rows)} bytes, expected {count} x {dtype.itemsize}",
                       journal_id=journal_id)
    if len(raw_links) != count * LINK_SIZE:
        raise _refusal("invalid", f"links hold {len(raw_links)} bytes, expected {count} x {LINK_SIZE}",
                       journal_id=journal_id)
    rows = np.frombuffer(raw_rows, dtype=dtype).copy()
    if int(rows["seq"][0]) != first_seq:
        raise _refusal("invalid", f"first_seq {first_seq} but the first row has seq {int(rows['seq'][0])}",
                       journal_id=journal_id)
    ends = np.cumsum(rows["payload_len"], dtype=np.int64)
    if int(ends[-1]) != len(raw_payloads):
        raise _refusal("invalid", f"payloads hold {len(raw_payloads)} bytes but payload_len adds up to "
                       f"{int(ends[-1])}", journal_id=journal_id)
    starts = ends - rows["payload_len"]
    payloads = [raw_payloads[s:e] for s, e in zip(starts.tolist(), ends.tolist())]
    links = [raw_links[i:i + LINK_SIZE] for i in range(0, len(raw_links), LINK_SIZE)]
    version = field("format_version", int) if "format_version" in doc else 1
    raw_exts = blob("exts") if "exts" in doc else b""
    ext_ends = np.cumsum(rows["ext_len"], dtype=np.int64)
    if int(ext_ends[-1]) != len(raw_exts):
        raise _refusal("invalid", f"exts hold {len(raw_exts)} bytes but ext_len adds up to {int(ext_ends[-1])}",
                       journal_id=journal_id)
    ext_starts = ext_ends - rows["ext_len"]
    exts = [raw_exts[s:e] for s, e in zip(ext_starts.tolist(), ext_ends.tolist())]
    return RecordBatch(journal_id, rows, payloads, links, day_rule, exts, version,
                       clean_status(doc.get("terminal"))), anchor


_KW_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def safe_dsn(dsn) -> str:
    """A database URL or DSN with its password masked, in every form libpq takes it:
    ``postgresql://user:PW@host/db``, ``...?password=PW`` and ``host=h password=PW``.

    >>> safe_dsn("postgresql://bo:s3cret@db/back?password=s3cret&sslmode=require")
    'postgresql://bo:***@db/back?password=***&sslmode=require'
    >>> safe_dsn("host=db dbname=back password='s 3cret' user=bo")
    'host=db dbname=back password=*** user=bo'
    """
    text = str(dsn)
    if "://" not in text:
        return _KW_PASSWORD.sub(r"\1***", text)
    try:
        parts = urllib.parse.urlsplit(text)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, hostport = netloc.rpartition("@")
            netloc = "%s:***@%s" % (userinfo.split(":", 1)[0], hostport)
        query = "&".join("%s=***" % k.split("=", 1)[0] if k.split("=", 1)[0].lower() == "password" else k
                         for k in parts.query.split("&")) if parts.query else ""
        if (netloc, query) == (parts.netloc, parts.query):
            return text                      # nothing to hide (and sqlite:/// stays as written)
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:                       # not even a URL: say nothing of it
        return "<a database URL that does not parse>"
