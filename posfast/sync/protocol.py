"""Offline sync: push a journal's unacknowledged records to the back office.

A terminal keeps selling while its link is down; when the link returns, a
:class:`Syncer` pushes every record the back office has not acknowledged
(``seq > journal.sync_watermark``) in seq order, in batches, each with its
payload and its hash-chain link.  Only after the target has *committed* a batch
does the syncer advance the journal's durable sync watermark, so:

* a crash before the target commits loses nothing (the batch is re-sent);
* a crash between the target's commit and the watermark save re-sends the
  batch too, and the target de-duplicates on ``(journal_id, seq)``: the back
  office still holds each record exactly once;
* the watermark is never ahead of what the back office has committed.

Targets
-------
``SqliteTarget(path, create=False)``
    The embedded default back office: one SQLite file (WAL,
    ``synchronous=FULL``), one transaction per batch.  A file that does not
    exist is created only with ``create=True`` (``posfast sync --create``);
    otherwise :class:`BackOfficeMissing` names the absolute path, so a typo
    cannot send records to a stray file that acknowledges them.
``PostgresTarget(dsn)``
    The same schema in PostgreSQL (psycopg 3).  A batch is COPYed into a
    temporary table and inserted with ``ON CONFLICT DO NOTHING`` inside one
    transaction; continuity is checked under ``SELECT ... FOR UPDATE`` on the
    journal's row, so two syncers of the same journal cannot interleave.
``HttpTarget(url, token, ca_file=None, client_cert=None)``
    Standard-library HTTP(S) client for ``posfast serve`` (:mod:`posfast.server`),
    which writes to either database.  ``client_cert``: a PEM path holding
    certificate and key, or a ``(cert_file, key_file)`` tuple.

``target_from_url("sqlite:///back.db" | "postgresql://..." | "https://host:8443",
token=None, create=False)`` builds one from a URL.  SQLite URLs follow SQLAlchemy:
``sqlite:///var/back.db`` is the *relative* path ``var/back.db`` (from the current
directory); ``sqlite:////var/back.db`` is the absolute ``/var/back.db``.

The first batch a back office stores for a journal *anchors* its copy: the seq
it starts at (1, or the anchor), its link, and the journal's day rule.  Later
batches must continue that chain with that rule.

Back-office schema (both databases)
-----------------------------------
``records``: primary key ``(journal_id, seq)``, every ``RECORD_DTYPE`` column
(unsigned 64-bit columns are stored as their two's-complement signed 64-bit
value, so nothing overflows; :meth:`read_range` gives the original values
back), ``payload`` and ``link`` blobs; index ``(day, terminal)``.
``journals``: one row per journal: ``anchor_seq`` (the first seq held),
``high_seq`` (the high-water mark), ``last_link``, ``records``, times.
``sync_refusals``: every refused batch (reason, seqs, message), so a refusal
is reported in the back office too, not only on the terminal.

Continuity rules (what a target accepts)
----------------------------------------
1. A batch is ``count >= 1`` records of one journal with consecutive seqs;
   each record's link must equal ``posfast.chain_link(previous link, row,
   payload)`` inside the batch, else ``SyncRefused(reason="chain")``.
2. The first batch a target ever receives for a journal must start at seq 1,
   whose link must follow from ``posfast.genesis_link(journal_id.bytes)``.
   *Anchor*: a batch sent with ``anchor=True`` may start at any seq when the
   target holds nothing for that journal; its first link is then
   trusted as given (trust on first use) and recorded as ``anchor_seq``.  The
   :class:`Syncer` sets ``anchor`` by itself only when the journal has never
   been synced (watermark 0) and its oldest live record is past seq 1 (it was
   created with a retention policy that evicted records before any sync);
   ``Syncer(anchor=True)`` forces it, e.g. to start a brand-new back office
   for a journal synced elsewhere before.  Once a target holds records of a
   journal, ``anchor`` is ignored.
3. Later batches must start at or below ``high_seq + 1``: a later start is a
   ``gap``.  Records the target already holds must be identical in every
   column, payload and link, else ``fork``; they are counted as duplicates
   and not written again.  The first new record must link to the held
   ``last_link``, else ``chain``.  A batch starting below ``anchor_seq`` is a
   ``gap`` (that history is not in this back office).
4. An identical replay of a held batch is accepted: the ack carries the held
   high-water mark and ``stored == 0``.

5. ``day`` must be what the journal's day rule gives for the row's ``ts``
   (``(ts + (utc_offset - day_start) minutes) // 1 day``).  The rule travels with
   the batch (``RecordBatch.day_rule``, wire field ``day_rule``); the first stored
   batch records it for the journal and a later batch with another rule is
   refused.  Without a rule sent or recorded, UTC / 00:00 (``DayRule()``) applies.
   So a token holder cannot file a record under another business day, and the
   genuine record is never shut out as a ``fork`` by such a forgery.
6. Seqs above ``2**63 - 1`` are ``invalid`` (no journal reaches them).

Refusals raise :class:`SyncRefused` (a ``PosfastError``) with ``.reason`` in
``gap / fork / chain / auth / invalid``; ``invalid`` is ``.permanent`` and
:meth:`Syncer.run_forever` does not re-send it.  Connectivity problems (and
HTTP 408/429/5xx) raise :class:`SyncUnavailable` and are retried; a full disk on
the back office is :class:`BackOfficeFull` (a SyncUnavailable).  An answer that
does not acknowledge exactly the batch sent raises :class:`SyncBadAck`.

HTTP wire format (``posfast serve``)
------------------------------------
``POST /v1/journals/<journal_id>/batches`` with ``Authorization: Bearer
<token>`` and a JSON body (columnar, bytes in base64)::

    {"format": "posfast-batch/1", "layout": "<RECORD_DTYPE fingerprint>",
     "journal_id": "<uuid>", "first_seq": 1, "count": 1000, "anchor": false,
     "rows": "<base64: count x RECORD_DTYPE.itemsize little-endian bytes>",
     "links": "<base64: count x 16 bytes>",
     "payloads": "<base64: payloads concatenated; lengths = rows.payload_len>",
     "day_rule": {"utc_offset_min": 480, "starts_at_min": 240}}

``200 {"ok": true, "journal_id", "first_seq", "last_seq", "count", "high_seq",
"stored", "duplicates", "last_link": "<base64 link of last_seq>"}``; the client
counts the batch as synced only if journal id, first/last seq and count are those
it sent, ``stored + duplicates == count``, ``high_seq >= last_seq`` and
``last_link`` is its own link of the last seq.  Errors are JSON ``{"ok": false,
"reason", "message", ...}`` with 400 (invalid), 401/403 (auth), 408 (body too
slow), 409 (gap / fork / chain), 413 (too large), 429 (too many failed tokens),
503 (database unavailable: no path, DSN or database error is disclosed).
``GET /v1/journals/<journal_id>`` returns the held state, ``GET /v1/health``
``{"ok": true}``.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import json
import logging
import os
import random
import sqlite3
import threading
import time
import urllib.parse
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from .. import errors as _errors
from ..errors import PosfastError

log = logging.getLogger("posfast.sync")

__all__ = [
    "Ack", "BackOfficeFull", "BackOfficeMissing", "HttpTarget", "JournalState", "PostgresTarget", "REASONS",
    "RecordBatch", "SqliteTarget", "SyncBadAck", "SyncConfigError", "SyncError", "SyncRefused", "SyncResult",
    "SyncUnavailable", "Syncer", "clip", "day_rule_tuple", "decode_batch", "encode_batch", "sync_status",
    "target_from_url",
]

#: Reason codes carried by :class:`SyncRefused`.
REASONS = ("gap", "fork", "chain", "auth", "invalid")
WIRE_FORMAT = "posfast-batch/1"
LINK_SIZE = 16
#: Largest batch a target accepts (records); the server may lower it.
MAX_BATCH = 10_000
#: Largest seq a back office stores (both databases hold seq as a signed 64-bit integer).
MAX_SEQ = (1 << 63) - 1
#: The day rule assumed for a journal when none was sent nor recorded: UTC, day starts 00:00
#: (``DayRule()``, what ``Journal.create`` uses by default).
DEFAULT_DAY_RULE = (0, 0)


# --------------------------------------------------------------------------- errors

class SyncError(PosfastError):
    """Base class of sync failures."""


class SyncRefused(SyncError, _errors.SyncRefused):
    """The target refused a batch; retrying the same batch will not help.

    ``reason`` is one of :data:`REASONS`: ``gap`` (records missing before the
    batch), ``fork`` (a held seq with different bytes or link), ``chain`` (a link
    that does not follow from the previous one), ``auth`` (bad or foreign token),
    ``invalid`` (malformed or oversized batch).  Also a ``posfast.errors.SyncRefused``.

    >>> e = SyncRefused("batch starts at seq 7, back office holds up to 5", "gap")
    >>> e.reason, str(e)
    ('gap', 'gap: batch starts at seq 7, back office holds up to 5')
    """

    def __init__(self, message: str, reason: str = "invalid", *, journal_id=None, first_seq=None,
                 last_seq=None, high_seq=None, status=None):
        if reason not in REASONS:
            raise ValueError(f"unknown sync refusal reason {reason!r}")
        _errors.SyncRefused.__init__(self, f"{reason}: {message}", reason)
        self.detail = message
        self.journal_id = journal_id
        self.first_seq = first_seq
        self.last_seq = last_seq
        self.high_seq = high_seq
        self.status = status  # HTTP status when it came over HTTP

    @property
    def permanent(self) -> bool:
        """True when re-sending the same batch can never succeed (a malformed or impossible batch).

        ``gap``, ``fork``, ``chain`` and ``auth`` may be resolved on the back office (a
        restored database, a new token); ``invalid`` cannot: the syncer does not retry it.
        """
        return self.reason == "invalid"

    def to_json(self) -> dict:
        return {"ok": False, "reason": self.reason, "message": clip(self.detail, 2 * ECHO_LIMIT),
                "journal_id": None if self.journal_id is None else str(self.journal_id),
                "first_seq": self.first_seq, "last_seq": self.last_seq, "high_seq": self.high_seq}


def _refusal(reason: str, message: str, **where) -> SyncRefused:
    return SyncRefused(message, reason, **where)


class SyncUnavailable(SyncError):
    """The target could not be reached or could not commit; retry later."""


class BackOfficeFull(SyncUnavailable):
    """The back office's disk is full: nothing of the batch was stored; free space and sync again."""


class SyncConfigError(SyncError, ValueError):
    """A sync target is mis-configured (URL, token, certificate, batch size); fix the setting."""


class BackOfficeMissing(SyncConfigError):
    """No back office at that path (and creating one was not asked for)."""


class SyncBadAck(SyncError):
    """The target answered, but not with an acknowledgement of the batch that was sent.

    The watermark does not move.  A server that answers 200 without naming the
    journal, the exact seq range, the stored + duplicate count and the last link
    is not a posfast back office (a proxy's error page, a fake server).
    """


#: Longest value from a request echoed into a message, the log or ``sync_refusals``.
ECHO_LIMIT = 200


def clip(value, limit: int = ECHO_LIMIT) -> str:
    """``repr``-free, bounded text of a value taken from a request (for messages and logs).

    >>> clip("x" * 300)[-30:]
    'xxxxxxxxxx... (300 chars, cut)'
    """
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    return text[:limit] + f"... ({len(text)} chars, cut)"


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
    day_rule: Optional[tuple] = None   # (utc offset minutes, day start minutes) the copy was anchored with


@dataclass
class RecordBatch:
    """Records of one journal in seq order (same shape as ``Journal.read_range``)."""
    journal_id: uuid.UUID
    rows: np.ndarray
    payloads: list
    links: list
    day_rule: Any = None   # the journal's DayRule (or (offset_min, start_min)); sent with the batch

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

def _record_dtype() -> np.dtype:
    from .. import RECORD_DTYPE
    return RECORD_DTYPE


def _chain_link_fn() -> Callable[[bytes, Any, bytes], bytes]:
    from .. import chain_link
    return chain_link


def _genesis_link(journal_id: uuid.UUID) -> bytes:
    """link(0) of a journal: what its seq 1 chains from."""
    from .. import genesis_link
    return bytes(genesis_link(journal_id.bytes))


_layout_cache: dict = {}


def layout_fingerprint(dtype: Optional[np.dtype] = None) -> str:
    """Short fingerprint of the record layout, so mismatched posfast versions refuse cleanly."""
    dtype = _record_dtype() if dtype is None else dtype
    fp = _layout_cache.get(dtype)
    if fp is None:
        desc = [(n, dtype.fields[n][0].str, dtype.fields[n][1]) for n in dtype.names]
        fp = hashlib.sha256(repr((desc, dtype.itemsize)).encode()).hexdigest()[:16]
        _layout_cache[dtype] = fp
    return fp


def _db_dtype(dtype: np.dtype) -> np.dtype:
    """RECORD_DTYPE with unsigned 64-bit fields as signed (same offsets): how databases hold them."""
    formats = []
    for name in dtype.names:
        ft = dtype.fields[name][0]
        formats.append(np.dtype("<i8") if ft.kind == "u" and ft.itemsize == 8 else ft)
    return np.dtype({"names": list(dtype.names), "formats": formats,
                     "offsets": [dtype.fields[n][1] for n in dtype.names], "itemsize": dtype.itemsize})


def _as_uuid(value) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


# --------------------------------------------------------------------------- validation

def _normalize(batch, *, max_batch: int = MAX_BATCH) -> RecordBatch:
    """Check a batch's shape and its internal hash chain; return it normalized.

    Raises SyncRefused("invalid" | "gap" | "chain").
    """
    dtype = _record_dtype()
    try:
        journal_id = _as_uuid(batch.journal_id)
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
    chain_link = _chain_link_fn()
    for i in range(1, count):
        if bytes(chain_link(links[i - 1], rows[i], payloads[i])) != links[i]:
            raise _refusal("chain", f"seq {first + i}: link does not follow from seq {first + i - 1} "
                           "(record or link altered)", journal_id=journal_id, first_seq=first, last_seq=last)
    return RecordBatch(journal_id, rows, payloads, links, day_rule_tuple(getattr(batch, "day_rule", None)))


def day_rule_tuple(rule) -> Optional[tuple]:
    """A day rule as ``(utc_offset_minutes, day_start_minutes)`` (None stays None).

    Accepts a :class:`posfast.DayRule`, a 2-tuple of ints or the wire form
    ``{"utc_offset_min": 480, "starts_at_min": 240}``.  Raises SyncRefused("invalid").
    """
    if rule is None:
        return None
    if isinstance(rule, dict):
        rule = (rule.get("utc_offset_min"), rule.get("starts_at_min"))
    elif hasattr(rule, "offset_minutes") and hasattr(rule, "start_minutes"):
        rule = (rule.offset_minutes, rule.start_minutes)
    if (not isinstance(rule, (tuple, list)) or len(rule) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in rule)):
        raise _refusal("invalid", "day_rule must be {\"utc_offset_min\": int, \"starts_at_min\": int}")
    off, start = int(rule[0]), int(rule[1])
    if not -14 * 60 <= off <= 14 * 60 or not 0 <= start < 24 * 60:
        raise _refusal("invalid", f"day_rule utc_offset_min={off} / starts_at_min={start} is out of range "
                       "(offset within +-14:00, day start 00:00..23:59)")
    return off, start


def _rule_text(rule: tuple) -> str:
    off, start = rule
    sign = "-" if off < 0 else "+"
    return "UTC%s%02d:%02d, day starts %02d:%02d" % (sign, abs(off) // 60, abs(off) % 60, start // 60, start % 60)


def _check_days(inc: RecordBatch, rule: tuple, where: dict) -> None:
    """Every row's ``day`` must be what the journal's day rule gives for its ``ts``."""
    ts = inc.rows["ts"].astype(np.int64)
    if len(ts) and int(np.abs(ts).max()) > (1 << 62):
        i = int(np.argmax(np.abs(ts) > (1 << 62)))
        raise _refusal("invalid", f"seq {int(inc.rows['seq'][i])}: ts {int(ts[i])} is not a time", **where)
    off, start = rule
    expected = (ts + (off - start) * 60_000_000) // 86_400_000_000
    bad = np.flatnonzero(expected != inc.rows["day"].astype(np.int64))
    if len(bad):
        i = int(bad[0])
        raise _refusal("invalid", f"seq {int(inc.rows['seq'][i])}: day {int(inc.rows['day'][i])} does not match "
                       f"its ts under the journal's day rule ({_rule_text(rule)} gives day {int(expected[i])}); "
                       "a record's business day is derived from its time, never sent on its own", **where)


@dataclass
class _Plan:
    new_from: int          # index of the first record not yet held
    duplicates: int
    anchor_seq: int        # anchor to record when the journal is new (0: keep)
    day_rule: tuple = DEFAULT_DAY_RULE   # the rule the journal's copy is (or becomes) anchored with


def _plan(inc: RecordBatch, state: Optional[JournalState],
          read_held: Callable[[int, int], RecordBatch], *, anchor: bool) -> _Plan:
    """Decide what of ``inc`` is new, or refuse it (the continuity rules of the module doc)."""
    jid = inc.journal_id
    first = int(inc.rows["seq"][0])
    count = len(inc.rows)
    last = first + count - 1
    where = dict(journal_id=jid, first_seq=first, last_seq=last)
    held_rule = state.day_rule if state is not None else None
    rule = inc.day_rule or held_rule or DEFAULT_DAY_RULE
    if inc.day_rule and held_rule and tuple(inc.day_rule) != tuple(held_rule):
        raise _refusal("invalid", f"day rule {_rule_text(inc.day_rule)} differs from the rule this back office's "
                       f"copy of journal {jid} was anchored with ({_rule_text(held_rule)})",
                       high_seq=state.high_seq, **where)
    _check_days(inc, rule, where)
    if state is None or state.high_seq == 0:
        if first == 1:
            if bytes(_chain_link_fn()(_genesis_link(jid), inc.rows[0], inc.payloads[0])) != inc.links[0]:
                raise _refusal("chain", f"seq 1 does not link to the genesis link of journal {jid}", high_seq=0,
                               **where)
            return _Plan(0, 0, 1, rule)
        if anchor:
            return _Plan(0, 0, first, rule)
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
            if mismatch[k] or held.payloads[k] != inc.payloads[k] or held.links[k] != inc.links[k]:
                raise _refusal("fork", f"seq {first + k} differs from the record the back office already "
                               f"holds for journal {jid} (same seq, different bytes or link)",
                               high_seq=high, **where)
        duplicates = n
    if last > high and first == high + 1:
        if bytes(_chain_link_fn()(state.last_link, inc.rows[0], inc.payloads[0])) != inc.links[0]:
            raise _refusal("chain", f"seq {first} does not link to seq {high} held by the back office "
                           f"for journal {jid}", high_seq=high, **where)
    return _Plan(min(count, max(0, high + 1 - first)), duplicates, 0, rule)


# --------------------------------------------------------------------------- wire format

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_batch(batch, *, anchor: bool = False, day_rule=None) -> bytes:
    """Encode a batch as the JSON body ``posfast serve`` accepts (see the module doc).

    >>> body = encode_batch(journal.read_range(1, 10))    # doctest: +SKIP
    """
    dtype = _record_dtype()
    rows = np.ascontiguousarray(batch.rows)
    if rows.dtype != dtype:
        raise _refusal("invalid", "rows must be a RECORD_DTYPE array")
    doc = {
        "format": WIRE_FORMAT, "layout": layout_fingerprint(dtype),
        "journal_id": str(_as_uuid(batch.journal_id)),
        "first_seq": int(rows["seq"][0]) if len(rows) else 0, "count": len(rows), "anchor": bool(anchor),
        "rows": _b64(rows.tobytes()),
        "links": _b64(b"".join(bytes(x) for x in batch.links)),
        "payloads": _b64(b"".join(bytes(x) for x in batch.payloads)),
    }
    rule = day_rule_tuple(day_rule if day_rule is not None else getattr(batch, "day_rule", None))
    if rule is not None:
        doc["day_rule"] = {"utc_offset_min": rule[0], "starts_at_min": rule[1]}
    return json.dumps(doc, separators=(",", ":")).encode("ascii")


def decode_batch(body: bytes, *, max_batch: int = MAX_BATCH) -> tuple:
    """Parse and check a JSON batch body; return ``(RecordBatch, anchor)``.

    Every malformation raises ``SyncRefused(reason="invalid", message=...)`` naming the field.
    """
    dtype = _record_dtype()
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
    return RecordBatch(journal_id, rows, payloads, links, day_rule), anchor


# --------------------------------------------------------------------------- databases

def _now_us() -> int:
    return time.time_ns() // 1000


def _seq_or_none(seq):
    return seq if isinstance(seq, int) and 0 <= seq <= MAX_SEQ else None


def _is_full(exc: BaseException) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == 13 or "disk is full" in str(exc) or "No space" in str(exc)


def _sql_type(ft: np.dtype, dialect: str) -> str:
    if ft.kind == "S":
        return "BLOB" if dialect == "sqlite" else "bytea"
    if dialect == "sqlite":
        return "INTEGER"
    if ft.itemsize == 8 or (ft.kind == "u" and ft.itemsize == 4):
        return "bigint"
    if ft.itemsize == 4 or (ft.kind == "u" and ft.itemsize == 2):
        return "integer"
    return "smallint"


def _schema(dialect: str) -> list:
    dtype = _record_dtype()
    jid = "TEXT" if dialect == "sqlite" else "uuid"
    blob = "BLOB" if dialect == "sqlite" else "bytea"
    big = "INTEGER" if dialect == "sqlite" else "bigint"
    cols = ",\n  ".join(f'"{n}" {_sql_type(dtype.fields[n][0], dialect)} NOT NULL' for n in dtype.names)
    serial = "INTEGER PRIMARY KEY AUTOINCREMENT" if dialect == "sqlite" else "bigserial PRIMARY KEY"
    return [
        f"""CREATE TABLE IF NOT EXISTS journals (
  journal_id {jid} PRIMARY KEY,
  anchor_seq {big} NOT NULL,
  high_seq {big} NOT NULL,
  last_link {blob} NOT NULL,
  records {big} NOT NULL,
  first_synced_us {big} NOT NULL,
  last_synced_us {big} NOT NULL,
  day_offset_min {big},
  day_start_min {big})""",
        f"""CREATE TABLE IF NOT EXISTS records (
  journal_id {jid} NOT NULL,
  {cols},
  payload {blob} NOT NULL,
  link {blob} NOT NULL,
  PRIMARY KEY (journal_id, seq))""",
        "CREATE INDEX IF NOT EXISTS records_day_terminal ON records (day, terminal)",
        f"""CREATE TABLE IF NOT EXISTS sync_refusals (
  id {serial},
  at_us {big} NOT NULL,
  journal_id TEXT,
  reason TEXT NOT NULL,
  first_seq {big},
  last_seq {big},
  message TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS sync_refusals_journal_at ON sync_refusals (journal_id, at_us)",
    ]


#: Columns added to ``journals`` after 0.1.0 (added to an older back office when it is opened).
_ADDED_JOURNAL_COLUMNS = ("day_offset_min", "day_start_min")


def _db_rows(jid_value, batch: RecordBatch, start: int) -> Iterator[tuple]:
    """Insert tuples for records ``start:`` of a batch: journal id, columns, payload, link."""
    rows = batch.rows[start:]
    cols = []
    for name in rows.dtype.names:
        col = rows[name]
        if col.dtype.kind == "u" and col.dtype.itemsize == 8:
            col = col.astype("<u8").view("<i8")
        cols.append(col.tolist())
    return zip(repeat(jid_value), *cols, batch.payloads[start:], batch.links[start:])


def _batch_from_db(journal_id: uuid.UUID, fetched: Sequence[tuple]) -> RecordBatch:
    dtype = _record_dtype()
    n = len(dtype.names)
    if not fetched:
        return RecordBatch(journal_id, np.zeros(0, dtype=dtype), [], [])
    rows = np.array([tuple(r[:n]) for r in fetched], dtype=_db_dtype(dtype)).view(dtype)
    return RecordBatch(journal_id, rows, [bytes(r[n]) for r in fetched], [bytes(r[n + 1]) for r in fetched])


class _BackOffice:
    """Shared logic of the database targets."""

    max_batch = MAX_BATCH
    #: Refusals recorded (and logged) per journal per hour; further ones are only counted.
    max_refusals_per_hour = 100

    def _column_list(self) -> str:
        return ", ".join(f'"{n}"' for n in _record_dtype().names)

    def _refused(self, exc: SyncRefused) -> None:
        try:
            recent = self._recent_refusals(exc.journal_id, _now_us() - 3_600_000_000)
        except Exception:
            recent = 0
        if recent >= self.max_refusals_per_hour:
            key = (str(exc.journal_id), int(time.time() // 3600))
            suppressed = getattr(self, "_suppressed", None)
            if suppressed is None:
                suppressed = self._suppressed = set()
            if key not in suppressed:
                suppressed.add(key)
                log.warning("journal %s: more than %d sync refusals in the last hour; further ones are "
                            "not recorded or logged this hour", exc.journal_id, self.max_refusals_per_hour)
            return
        log.warning("sync refused for journal %s seqs %s..%s: %s", exc.journal_id, exc.first_seq,
                    exc.last_seq, clip(str(exc), 2 * ECHO_LIMIT))
        try:
            self._record_refusal(exc)
        except Exception as err:  # reporting must not hide the refusal itself
            log.error("could not record the sync refusal in the back office: %s", clip(str(err)))

    @staticmethod
    def _stored_log(ack: "Ack") -> None:
        if ack.stored:
            log.info("stored journal %s seqs %d..%d: %d new, %d already held (high seq %d)", ack.journal_id,
                     ack.first_seq, ack.last_seq, ack.stored, ack.duplicates, ack.high_seq)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class SqliteTarget(_BackOffice):
    """The embedded back office: one SQLite file (WAL), one transaction per batch.

    Thread-safe; several processes may share the file (writers queue on SQLite's lock).

    >>> bo = SqliteTarget("/tmp/back.db")                 # doctest: +SKIP
    >>> Syncer(journal, bo).run_once().watermark          # doctest: +SKIP
    1200
    """

    def __init__(self, path, *, synchronous: str = "FULL", timeout: float = 30.0, create: bool = False):
        self.path = str(path)
        self._lock = threading.RLock()
        full = os.path.abspath(self.path)
        where = full if full == self.path else f"{full} (from {self.path!r}, relative to the current directory)"
        directory = os.path.dirname(full)
        if not os.path.exists(full):
            if not os.path.isdir(directory):
                raise BackOfficeMissing(f"no back office at {where}: directory {directory} does not exist; "
                                        "check the path (sqlite:///rel.db is relative, sqlite:////abs.db absolute)")
            if not create:
                raise BackOfficeMissing(
                    f"no back office at {where}; check the path (sqlite:///rel.db is relative to the current "
                    "directory, sqlite:////abs/back.db is absolute) or create a new one with --create "
                    "(SqliteTarget(path, create=True))")
            if not os.access(directory, os.W_OK | os.X_OK):
                raise SyncConfigError(f"cannot create back office {full}: directory {directory} is not writable")
        elif not os.access(full, os.R_OK | os.W_OK) or not os.access(directory, os.W_OK | os.X_OK):
            raise SyncConfigError(f"back office {full} is read-only here (the file or its directory {directory} "
                                  "is not writable, and SQLite needs both); fix the permissions")
        try:
            self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                                         check_same_thread=False)
            if not create:
                tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if "journals" not in tables or "records" not in tables:
                    self._conn.close()
                    raise BackOfficeMissing(f"{where} is not a posfast back office (no journals/records tables); "
                                            "check the path, or pass --create to make it one")
            self._conn.execute("PRAGMA journal_mode=WAL")
            # The terminal forgets what we acknowledge: an ack must survive a power cut here.
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
            with self._lock:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in _schema("sqlite"):
                        self._conn.execute(stmt)
                    have = {r[1] for r in self._conn.execute("PRAGMA table_info(journals)")}
                    for col in _ADDED_JOURNAL_COLUMNS:
                        if col not in have:
                            self._conn.execute(f"ALTER TABLE journals ADD COLUMN {col} INTEGER")
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            if _is_full(exc):
                raise BackOfficeFull(f"cannot open back office {full}: the disk is full; free space") from exc
            raise SyncConfigError(f"cannot open back office {full}: {exc}") from exc
        names = _record_dtype().names
        self._insert_sql = (f"INSERT INTO records (journal_id, {self._column_list()}, payload, link) "
                            f"VALUES ({', '.join('?' * (len(names) + 3))}) ON CONFLICT DO NOTHING")

    def __repr__(self):
        return f"SqliteTarget({self.path!r})"

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _state(self, jid: uuid.UUID) -> Optional[JournalState]:
        row = self._conn.execute("SELECT anchor_seq, high_seq, last_link, records, day_offset_min, day_start_min "
                                 "FROM journals WHERE journal_id = ?", (str(jid),)).fetchone()
        return None if row is None else JournalState(jid, row[0], row[1], bytes(row[2]), row[3],
                                                     None if row[4] is None else (row[4], row[5]))

    def _recent_refusals(self, journal_id, since_us: int) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM sync_refusals WHERE journal_id IS ? AND at_us >= ?",
                                      (None if journal_id is None else str(journal_id), since_us)).fetchone()[0]

    def _read(self, jid: uuid.UUID, first: int, last: int) -> RecordBatch:
        fetched = self._conn.execute(
            f"SELECT {self._column_list()}, payload, link FROM records WHERE journal_id = ? AND seq "
            "BETWEEN ? AND ? ORDER BY seq", (str(jid), first, last)).fetchall()
        return _batch_from_db(jid, fetched)

    def push(self, batch, *, anchor: bool = False, day_rule=None) -> Ack:
        """Store a batch in one transaction; return the ack or raise SyncRefused.

        ``day_rule``: the journal's :class:`posfast.DayRule` (default: ``batch.day_rule``, else
        the rule this back office recorded for the journal, else UTC / 00:00); every row's
        ``day`` must follow from its ``ts`` by it.
        """
        try:
            inc = _normalize(batch, max_batch=self.max_batch)
            if day_rule is not None:
                inc.day_rule = day_rule_tuple(day_rule)
        except SyncRefused as exc:
            self._refused(exc)
            raise
        jid = inc.journal_id
        first_seq, last_seq = int(inc.rows["seq"][0]), int(inc.rows["seq"][-1])
        high = 0
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    state = self._state(jid)
                    high = state.high_seq if state is not None else 0
                    plan = _plan(inc, state, lambda a, b: self._read(jid, a, b), anchor=anchor)
                    stored = len(inc.rows) - plan.new_from
                    if stored:
                        cur = conn.executemany(self._insert_sql, _db_rows(str(jid), inc, plan.new_from))
                        if cur.rowcount != stored:
                            raise SyncUnavailable(f"journal {jid}: expected to store {stored} records, "
                                                  f"stored {cur.rowcount}; back office inconsistent")
                        now = _now_us()
                        conn.execute(
                            "INSERT INTO journals (journal_id, anchor_seq, high_seq, last_link, records, "
                            "first_synced_us, last_synced_us, day_offset_min, day_start_min) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                            "ON CONFLICT (journal_id) DO UPDATE SET high_seq = excluded.high_seq, "
                            "last_link = excluded.last_link, records = records + excluded.records, "
                            "last_synced_us = excluded.last_synced_us, "
                            "day_offset_min = coalesce(journals.day_offset_min, excluded.day_offset_min), "
                            "day_start_min = coalesce(journals.day_start_min, excluded.day_start_min)",
                            (str(jid), plan.anchor_seq, int(inc.rows["seq"][-1]), inc.links[-1], stored,
                             now, now, plan.day_rule[0], plan.day_rule[1]))
                        high = int(inc.rows["seq"][-1])
                    else:
                        high = state.high_seq
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:   # SQLite rolls back by itself on some errors (disk full)
                        conn.execute("ROLLBACK")
                    raise
            except SyncRefused as exc:
                self._refused(exc)
                raise
            except sqlite3.Error as exc:
                if _is_full(exc):
                    raise BackOfficeFull(
                        f"back office {self.path}: the disk is full; nothing of journal {jid} past seq {high} "
                        f"was stored or acknowledged (batch {first_seq}..{last_seq}); free space and sync "
                        "again") from exc
                raise SyncUnavailable(f"back office {self.path}: {exc}") from exc
        ack = Ack(jid, high, stored, plan.duplicates, first_seq, last_seq, inc.links[-1])
        self._stored_log(ack)
        return ack

    def _record_refusal(self, exc: SyncRefused) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO sync_refusals (at_us, journal_id, reason, first_seq, last_seq, message) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (_now_us(), None if exc.journal_id is None else str(exc.journal_id), exc.reason,
                 _seq_or_none(exc.first_seq), _seq_or_none(exc.last_seq), clip(exc.detail, 2 * ECHO_LIMIT)))

    def state(self, journal_id) -> Optional[JournalState]:
        """What this back office holds of a journal (None if nothing)."""
        with self._lock:
            return self._state(_as_uuid(journal_id))

    def journals(self) -> list:
        with self._lock:
            rows = self._conn.execute("SELECT journal_id, anchor_seq, high_seq, last_link, records, "
                                      "day_offset_min, day_start_min FROM journals ORDER BY journal_id").fetchall()
        return [JournalState(uuid.UUID(r[0]), r[1], r[2], bytes(r[3]), r[4], None if r[5] is None else (r[5], r[6]))
                for r in rows]

    def read_range(self, journal_id, first_seq: int = 1, last_seq: Optional[int] = None) -> RecordBatch:
        """Held records of a journal in ``first_seq..last_seq`` (default: up to the high-water mark)."""
        jid = _as_uuid(journal_id)
        with self._lock:
            return self._read(jid, first_seq, (1 << 63) - 1 if last_seq is None else last_seq)

    def count(self, journal_id=None) -> int:
        with self._lock:
            if journal_id is None:
                return self._conn.execute("SELECT count(*) FROM records").fetchone()[0]
            return self._conn.execute("SELECT count(*) FROM records WHERE journal_id = ?",
                                      (str(_as_uuid(journal_id)),)).fetchone()[0]

    def refusals(self) -> list:
        with self._lock:
            cur = self._conn.execute("SELECT at_us, journal_id, reason, first_seq, last_seq, message "
                                     "FROM sync_refusals ORDER BY id")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]


class _PgPool:
    """A few psycopg connections shared by threads (the server's workers)."""

    def __init__(self, dsn: str, size: int, setup: Callable):
        self._dsn = dsn
        self._setup = setup
        self._idle: list = []
        self._mutex = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)

    @contextmanager
    def connection(self):
        import psycopg
        self._slots.acquire()
        conn = None
        try:
            with self._mutex:
                conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed:
                conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)
                self._setup(conn)
            yield conn
        except BaseException:
            if conn is not None and (conn.closed or conn.info.transaction_status != 0):
                conn.close()
            raise
        finally:
            if conn is not None and not conn.closed:
                with self._mutex:
                    self._idle.append(conn)
            self._slots.release()

    def close(self):
        with self._mutex:
            for conn in self._idle:
                conn.close()
            self._idle.clear()


class PostgresTarget(_BackOffice):
    """Back office in PostgreSQL (psycopg 3, ``pip install 'posfast[postgres]'``).

    One transaction per batch: the journal's row is locked (``SELECT ... FOR UPDATE``)
    while continuity is checked, the batch is COPYed into a temporary table and
    inserted with ``ON CONFLICT DO NOTHING``.  Thread-safe (a small connection pool).

    >>> bo = PostgresTarget("postgresql://pos@127.0.0.1/backoffice")   # doctest: +SKIP
    """

    def __init__(self, dsn: str, *, pool_size: int = 4, create: bool = True):
        # ``create`` is accepted for symmetry with SqliteTarget: the database itself must
        # exist (a mistyped DSN fails to connect); posfast creates its tables in it.
        import importlib.util
        if importlib.util.find_spec("psycopg") is None:
            raise ImportError("PostgresTarget needs psycopg 3: pip install 'posfast[postgres]' "
                              "(psycopg[binary])")
        self.dsn = dsn
        self._pool = _PgPool(dsn, pool_size, self._setup_connection)
        self._copy_sql = f"COPY _pf_incoming (journal_id, {self._column_list()}, payload, link) FROM STDIN"
        self._insert_sql = ("INSERT INTO records SELECT * FROM _pf_incoming ORDER BY seq "
                            "ON CONFLICT (journal_id, seq) DO NOTHING")
        self._create_schema()

    def __repr__(self):
        return f"PostgresTarget({self._safe_dsn()!r})"

    def _safe_dsn(self) -> str:
        parts = urllib.parse.urlsplit(self.dsn)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
        return self.dsn

    def _create_schema(self):
        import psycopg
        try:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
                with conn.transaction():
                    # Concurrent first starts (the server's workers) must not race on CREATE TABLE.
                    conn.execute("SELECT pg_advisory_xact_lock(7402381)")
                    for stmt in _schema("postgres"):
                        conn.execute(stmt)
                    have = {r[0] for r in conn.execute(
                        "SELECT column_name FROM information_schema.columns WHERE table_name = 'journals' "
                        "AND table_schema = current_schema()").fetchall()}
                    for col in _ADDED_JOURNAL_COLUMNS:   # ALTER locks the table even when nothing is added
                        if col not in have:
                            conn.execute(f"ALTER TABLE journals ADD COLUMN IF NOT EXISTS {col} bigint")
        except psycopg.Error as exc:
            raise SyncUnavailable(f"back office {self._safe_dsn()}: {exc}".strip()) from exc

    @staticmethod
    def _setup_connection(conn):
        conn.execute("CREATE TEMP TABLE _pf_incoming (LIKE records) ON COMMIT DELETE ROWS")

    def _run(self, fn):
        import psycopg
        try:
            with self._pool.connection() as conn:
                return fn(conn)
        except psycopg.Error as exc:   # connection lost, deadlock, disk full...: nothing was committed
            raise SyncUnavailable(f"back office {self._safe_dsn()}: {type(exc).__name__}: {exc}".strip()) from exc

    def close(self) -> None:
        self._pool.close()

    @staticmethod
    def _state_in(conn, jid, lock=False) -> Optional[JournalState]:
        row = conn.execute("SELECT anchor_seq, high_seq, last_link, records, day_offset_min, day_start_min "
                           "FROM journals WHERE journal_id = %s" + (" FOR UPDATE" if lock else ""),
                           (jid,)).fetchone()
        return None if row is None else JournalState(jid, row[0], row[1], bytes(row[2]), row[3],
                                                     None if row[4] is None else (row[4], row[5]))

    def _recent_refusals(self, journal_id, since_us: int) -> int:
        jid = None if journal_id is None else str(journal_id)
        return self._run(lambda conn: conn.execute(
            "SELECT count(*) FROM sync_refusals WHERE journal_id IS NOT DISTINCT FROM %s AND at_us >= %s",
            (jid, since_us)).fetchone()[0])

    def _read_in(self, conn, jid, first, last) -> RecordBatch:
        fetched = conn.execute(f"SELECT {self._column_list()}, payload, link FROM records WHERE journal_id = %s "
                               "AND seq BETWEEN %s AND %s ORDER BY seq", (jid, first, last)).fetchall()
        return _batch_from_db(jid, fetched)

    def push(self, batch, *, anchor: bool = False, day_rule=None) -> Ack:
        """Store a batch in one transaction; return the ack or raise SyncRefused (see SqliteTarget.push)."""
        try:
            inc = _normalize(batch, max_batch=self.max_batch)
            if day_rule is not None:
                inc.day_rule = day_rule_tuple(day_rule)
        except SyncRefused as exc:
            self._refused(exc)
            raise
        jid = inc.journal_id
        first_seq, last_seq = int(inc.rows["seq"][0]), int(inc.rows["seq"][-1])

        def work(conn):
            with conn.transaction():
                now = _now_us()
                conn.execute("INSERT INTO journals (journal_id, anchor_seq, high_seq, last_link, records, "
                             "first_synced_us, last_synced_us) VALUES (%s, 0, 0, '', 0, %s, %s) "
                             "ON CONFLICT (journal_id) DO NOTHING", (jid, now, now))
                state = self._state_in(conn, jid, lock=True)
                plan = _plan(inc, state, lambda a, b: self._read_in(conn, jid, a, b), anchor=anchor)
                stored = len(inc.rows) - plan.new_from
                if not stored:
                    return Ack(jid, state.high_seq, 0, plan.duplicates, first_seq, last_seq, inc.links[-1])
                with conn.cursor() as cur:
                    with cur.copy(self._copy_sql) as copy:
                        for row in _db_rows(jid, inc, plan.new_from):
                            copy.write_row(row)
                    cur.execute(self._insert_sql)
                    if cur.rowcount != stored:
                        raise SyncUnavailable(f"journal {jid}: expected to store {stored} records, stored "
                                              f"{cur.rowcount}; back office inconsistent")
                high = int(inc.rows["seq"][-1])
                conn.execute("UPDATE journals SET high_seq = %s, last_link = %s, records = records + %s, "
                             "last_synced_us = %s, anchor_seq = CASE WHEN anchor_seq = 0 THEN %s ELSE anchor_seq "
                             "END, day_offset_min = coalesce(day_offset_min, %s), "
                             "day_start_min = coalesce(day_start_min, %s) WHERE journal_id = %s",
                             (high, inc.links[-1], stored, now, plan.anchor_seq, plan.day_rule[0],
                              plan.day_rule[1], jid))
                return Ack(jid, high, stored, plan.duplicates, first_seq, last_seq, inc.links[-1])

        try:
            ack = self._run(work)
            self._stored_log(ack)
            return ack
        except SyncRefused as exc:
            self._refused(exc)
            raise

    def _record_refusal(self, exc: SyncRefused) -> None:
        self._run(lambda conn: conn.execute(
            "INSERT INTO sync_refusals (at_us, journal_id, reason, first_seq, last_seq, message) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (_now_us(), None if exc.journal_id is None else str(exc.journal_id), exc.reason,
             _seq_or_none(exc.first_seq), _seq_or_none(exc.last_seq), clip(exc.detail, 2 * ECHO_LIMIT))))

    def state(self, journal_id) -> Optional[JournalState]:
        """What this back office holds of a journal (None if nothing)."""
        jid = _as_uuid(journal_id)
        st = self._run(lambda conn: self._state_in(conn, jid))
        return None if st is None or st.high_seq == 0 else st

    def journals(self) -> list:
        rows = self._run(lambda conn: conn.execute(
            "SELECT journal_id, anchor_seq, high_seq, last_link, records, day_offset_min, day_start_min "
            "FROM journals WHERE high_seq > 0 ORDER BY journal_id").fetchall())
        return [JournalState(r[0], r[1], r[2], bytes(r[3]), r[4], None if r[5] is None else (r[5], r[6]))
                for r in rows]

    def read_range(self, journal_id, first_seq: int = 1, last_seq: Optional[int] = None) -> RecordBatch:
        """Held records of a journal in ``first_seq..last_seq`` (default: up to the high-water mark)."""
        jid = _as_uuid(journal_id)
        last = (1 << 63) - 1 if last_seq is None else last_seq
        return self._run(lambda conn: self._read_in(conn, jid, first_seq, last))

    def count(self, journal_id=None) -> int:
        if journal_id is None:
            return self._run(lambda conn: conn.execute("SELECT count(*) FROM records").fetchone()[0])
        jid = _as_uuid(journal_id)
        return self._run(lambda conn: conn.execute("SELECT count(*) FROM records WHERE journal_id = %s",
                                                   (jid,)).fetchone()[0])

    def refusals(self) -> list:
        def fetch(conn):
            cur = conn.execute("SELECT at_us, journal_id, reason, first_seq, last_seq, message "
                               "FROM sync_refusals ORDER BY id")
            names = [d.name for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]
        return self._run(fetch)


# --------------------------------------------------------------------------- HTTP client

class HttpTarget:
    """Client of ``posfast serve`` using only the standard library.

    One keep-alive connection, re-opened once on a dropped connection (a re-sent
    batch is safe: the server de-duplicates).  HTTP 409/400/401/403/413 become
    :class:`SyncRefused`; connection errors, time-outs, 408/429 and 5xx
    :class:`SyncUnavailable`.  A 200 counts only if it acknowledges exactly the
    batch sent (journal id, first and last seq, stored + duplicates = count, the
    last record's link), else :class:`SyncBadAck` and the watermark stays.

    TLS (``https://``): the server's certificate is checked against the system's
    trust store, or only against ``ca_file`` (a PEM file of CA certificates) when
    given.  ``client_cert`` for mutual TLS (``posfast serve --client-ca``) is either
    the path of one PEM file holding the certificate and its private key, or a
    ``(cert_file, key_file)`` tuple.

    >>> target = HttpTarget("https://bo.example:8443", token=tok, ca_file="store-ca.pem",
    ...                     client_cert=("till-7.crt", "till-7.key"))       # doctest: +SKIP
    """

    def __init__(self, url: str, token: str, *, timeout: float = 30.0, ca_file=None, client_cert=None):
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise SyncConfigError(f"sync URL {clip(url)!r} is malformed ({exc}); write it as "
                                  "http(s)://HOST:PORT, e.g. https://10.0.0.5:8443 or http://[::1]:8080") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SyncConfigError(f"not an http(s) URL: {clip(url)!r}; write it as http(s)://HOST:PORT")
        if not token:
            raise SyncConfigError(f"{clip(url)} needs the journal's token: --token-file FILE, or the "
                                  "POSFAST_SYNC_TOKEN environment variable")
        if (ca_file or client_cert) and parts.scheme != "https":
            raise SyncConfigError(f"--ca-file / client certificates need an https:// URL, not {clip(url)!r}")
        self.url = url.rstrip("/")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = port
        self._prefix = parts.path.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.ca_file = None if ca_file is None else str(ca_file)
        self.client_cert = client_cert
        self._ssl = self._ssl_context() if parts.scheme == "https" else None
        self._conn: Optional[http.client.HTTPConnection] = None
        self._lock = threading.Lock()

    def _ssl_context(self):
        import ssl
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise SyncConfigError(f"cannot read CA file {self.ca_file}: {exc}") from None
        cert = self.client_cert
        if cert is not None:
            certfile, keyfile = (cert, None) if isinstance(cert, (str, os.PathLike)) else tuple(cert)
            try:
                ctx.load_cert_chain(str(certfile), None if keyfile is None else str(keyfile))
            except (OSError, ssl.SSLError) as exc:
                raise SyncConfigError(f"cannot load client certificate {certfile} (key {keyfile}): {exc}") from None
        return ctx

    def __repr__(self):
        return f"HttpTarget({self.url!r})"

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._scheme == "https":
                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout,
                                                         context=self._ssl)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        return self._conn

    def _request(self, method: str, path: str, body: Optional[bytes] = None) -> tuple:
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        with self._lock:
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    conn.request(method, self._prefix + path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    if resp.will_close:
                        conn.close()
                        self._conn = None
                    return resp.status, data
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                        http.client.BadStatusLine) as exc:
                    conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise SyncUnavailable(f"{self.url}: connection lost ({exc})") from exc
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    self._conn = None
                    import ssl
                    if isinstance(exc, ssl.SSLCertVerificationError):
                        raise SyncUnavailable(f"{self.url}: the server's TLS certificate is not trusted "
                                              f"({exc.verify_message or exc}); pass the CA that signed it "
                                              "with --ca-file") from exc
                    raise SyncUnavailable(f"{self.url}: {exc or type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    @staticmethod
    def _error(status: int, data: bytes, where: dict):
        try:
            doc = json.loads(data)
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        message = doc.get("message")
        message = clip(message if isinstance(message, str) and message else
                       data[:ECHO_LIMIT].decode("utf-8", "replace") or f"HTTP {status}")
        if status >= 500 or status in (408, 429) or not 400 <= status < 500:
            return SyncUnavailable(f"server answered {status}: {message}")
        reason = doc.get("reason")
        if reason not in REASONS:
            reason = "auth" if status in (401, 403) else "invalid"
        high = doc.get("high_seq")
        return SyncRefused(message, reason, high_seq=high if isinstance(high, int) else None,
                           status=status, **where)

    def push(self, batch, *, anchor: bool = False, day_rule=None) -> Ack:
        """POST a batch; return the server's ack or raise SyncRefused / SyncUnavailable / SyncBadAck."""
        jid = _as_uuid(batch.journal_id)
        body = encode_batch(batch, anchor=anchor, day_rule=day_rule)
        seqs = batch.rows["seq"]
        first, last, count = int(seqs[0]), int(seqs[-1]), len(seqs)
        where = dict(journal_id=jid, first_seq=first, last_seq=last)
        status, data = self._request("POST", f"/v1/journals/{jid}/batches", body)
        if status != 200:
            raise self._error(status, data, where)
        return self._check_ack(data, jid, first, last, count, bytes(batch.links[-1]))

    def _check_ack(self, data: bytes, jid, first: int, last: int, count: int, last_link: bytes) -> Ack:
        """The 200's body must acknowledge exactly this batch; anything else is SyncBadAck."""
        def bad(why):
            return SyncBadAck(f"{self.url} answered 200 but {why}; the records of journal {jid} seqs {first}..{last} "
                              "are not counted as synced (is this URL really a posfast sync server?)")
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            raise bad(f"not with JSON ({clip(data[:ECHO_LIMIT].decode('utf-8', 'replace'))!r})") from None
        if not isinstance(doc, dict) or doc.get("ok") is not True:
            raise bad("not with an acknowledgement")
        ints = {k: doc.get(k) for k in ("high_seq", "stored", "duplicates", "first_seq", "last_seq", "count")}
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in ints.values()):
            raise bad("the acknowledgement lacks the seq range and counts")
        if doc.get("journal_id") != str(jid):
            raise bad(f"for journal {clip(doc.get('journal_id'))!r}")
        if (ints["first_seq"], ints["last_seq"], ints["count"]) != (first, last, count):
            raise bad(f"for seqs {ints['first_seq']}..{ints['last_seq']} ({ints['count']} records), not the "
                      f"{count} sent")
        if ints["stored"] + ints["duplicates"] != count:
            raise bad(f"says {ints['stored']} stored + {ints['duplicates']} duplicates for {count} records")
        if ints["high_seq"] < last:
            raise bad(f"holds only up to seq {ints['high_seq']}")
        try:
            link = base64.b64decode(doc.get("last_link") or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            link = b""
        if link != last_link:
            raise bad(f"with another link for seq {last} than the journal's")
        return Ack(jid, ints["high_seq"], ints["stored"], ints["duplicates"], first, last, link)

    def state(self, journal_id) -> Optional[JournalState]:
        """What the server's back office holds of this journal (None if nothing)."""
        jid = _as_uuid(journal_id)
        status, data = self._request("GET", f"/v1/journals/{jid}")
        if status != 200:
            raise self._error(status, data, dict(journal_id=jid))
        doc = json.loads(data)
        if not doc.get("high_seq"):
            return None
        return JournalState(jid, doc["anchor_seq"], doc["high_seq"], base64.b64decode(doc["last_link"]),
                            doc["records"])


def target_from_url(url: str, token: Optional[str] = None, **options):
    """Build a target from a URL (what ``posfast sync --to URL`` takes).

    >>> target_from_url("sqlite:///back.db")                          # doctest: +SKIP
    SqliteTarget('back.db')
    >>> target_from_url("http://10.0.0.5:8080", token="s3cret")       # doctest: +SKIP
    HttpTarget('http://10.0.0.5:8080')

    ``sqlite:///relative.db`` and ``sqlite:////absolute/path.db`` (SQLAlchemy style);
    ``postgresql://`` / ``postgres://`` DSNs; ``http(s)://`` needs ``token``.
    """
    create = options.pop("create", False)
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        if not url.startswith("sqlite:///"):
            raise SyncConfigError(f"SQLite URLs look like sqlite:///back.db (relative to the current directory) "
                                  f"or sqlite:////abs/back.db (absolute), not {clip(url)!r}")
        path = url[len("sqlite:///"):]
        if not path:
            raise SyncConfigError(f"no database file in {clip(url)!r}")
        return SqliteTarget(path, create=create, **options)
    if scheme in ("postgresql", "postgres"):
        return PostgresTarget(url, **options)
    if scheme in ("http", "https"):
        if not token:
            raise SyncConfigError(f"{clip(url)} needs a token (the journal's token on the sync server): pass "
                                  "--token-file FILE or set POSFAST_SYNC_TOKEN")
        return HttpTarget(url, token, **options)
    raise SyncConfigError(f"unknown sync target {clip(url)!r}: use sqlite:///FILE, postgresql://... or "
                          "http(s)://HOST:PORT")


# --------------------------------------------------------------------------- syncer

class Syncer:
    """Push a journal's unacknowledged records to a target, advancing the sync watermark.

    >>> syncer = Syncer(journal, SqliteTarget("back.db"), batch=1000)   # doctest: +SKIP
    >>> syncer.run_once()                                                 # doctest: +SKIP
    SyncResult(sent=2500, batches=3, watermark=2500, duplicates=0)

    In a background thread, alongside the POS appending (the journal is thread-safe
    and the syncer holds no journal lock while it waits on the network)::

        stop = threading.Event()
        threading.Thread(target=syncer.run_forever, args=(stop,), daemon=True).start()

    ``anchor``: ``"auto"`` (default) anchors only a never-synced journal whose oldest
    live record is past seq 1; ``True`` always asks for an anchor (start a new back
    office for a journal synced elsewhere before); ``False`` never.
    """

    def __init__(self, journal, target, batch: int = 1000, *, anchor="auto"):
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise SyncConfigError(f"batch size must be a whole number of records, at least 1 (got {batch!r})")
        if anchor not in ("auto", True, False):
            raise ValueError("anchor must be 'auto', True or False")
        self.journal = journal
        self.target = target
        self.batch = int(batch)
        self.anchor = anchor
        self.last_error: Optional[BaseException] = None
        self.last_result: Optional[SyncResult] = None
        self.last_success_at: Optional[float] = None
        self.failures = 0  # consecutive failed rounds of run_forever

    def __repr__(self):
        return f"Syncer({self.journal!r}, {self.target!r}, batch={self.batch})"

    def _first_unsynced(self, watermark: int) -> tuple:
        oldest = self.journal.oldest_seq
        first = watermark + 1
        if oldest and first < oldest:
            # Records past the watermark were evicted before they were synced.
            first = oldest
        anchor = self.anchor is True or (self.anchor == "auto" and watermark == 0 and first > 1)
        return first, anchor

    def run_once(self, max_records: Optional[int] = None) -> SyncResult:
        """Push every unacknowledged record (up to ``max_records``) once; raise on failure.

        Batches are sent in seq order; the watermark advances after each acknowledged
        batch, so a failure part-way keeps the progress made so far.
        """
        journal = self.journal
        watermark = journal.sync_watermark
        head = journal.head_seq
        sent = batches = duplicates = 0
        if head <= watermark:
            return self._done(SyncResult(0, 0, watermark))
        first, anchor = self._first_unsynced(watermark)
        if max_records is not None:
            head = min(head, first + max_records - 1)
        size = self.batch
        while first <= head:
            last = min(first + size - 1, head)
            batch = journal.read_range(first, last)
            rule = getattr(journal, "day_rule", None)
            if rule is not None and getattr(batch, "day_rule", None) is None:
                try:
                    batch.day_rule = rule          # the back office checks every day against it
                except AttributeError:
                    batch = RecordBatch(batch.journal_id, batch.rows, batch.payloads, batch.links, rule)
            try:
                ack = self.target.push(batch, anchor=anchor)
            except SyncRefused as exc:
                if exc.status == 413 and last > first:
                    size = max(1, (last - first + 1) // 2)  # the server's body limit: smaller batches
                    continue
                raise
            if ack.first_seq is not None and (ack.first_seq, ack.last_seq) != (first, last):
                raise SyncBadAck(f"target acknowledged seqs {ack.first_seq}..{ack.last_seq} of journal "
                                 f"{journal.journal_id} for a batch of {first}..{last}")
            if ack.high_seq < last:
                raise SyncUnavailable(f"target acknowledged journal {journal.journal_id} only up to seq "
                                      f"{ack.high_seq} after a batch ending at {last}")
            journal.set_sync_watermark(last)
            watermark = last
            sent += last - first + 1
            duplicates += ack.duplicates
            batches += 1
            anchor = False  # the target now holds this journal: later batches just continue it
            first = last + 1
        return self._done(SyncResult(sent, batches, watermark, duplicates))

    def _done(self, result: SyncResult) -> SyncResult:
        self.last_result = result
        self.last_error = None
        self.last_success_at = time.time()
        return result

    def run_forever(self, stop_event: Optional[threading.Event] = None, interval: float = 5.0, *,
                    max_backoff: float = 300.0, on_error: Optional[Callable[[BaseException], None]] = None,
                    on_sync: Optional[Callable[[SyncResult], None]] = None) -> None:
        """Sync until ``stop_event`` is set: every ``interval`` s when idle, with backoff on failures.

        A failed round waits ``min(max_backoff, interval * 2**failures)`` scaled by a
        random factor in [0.5, 1.0] (jitter, so a fleet of terminals coming back
        online does not hammer the server in step).  A refusal (gap, fork, chain,
        auth), a bad acknowledgement, a damaged record or any other error needs a
        human: it is logged at ERROR, passed to ``on_error`` and retried at the
        slowest pace.  A batch the target can never accept (``SyncRefused.permanent``,
        reason ``invalid``) is not re-sent: the loop logs it, calls ``on_error`` and
        returns (``last_error`` keeps it).  Returns when the journal is closed too.
        Appends are never blocked.
        """
        stop_event = stop_event or threading.Event()
        while not stop_event.is_set():
            if getattr(self.journal, "closed", False):
                log.info("journal %s closed: syncer stops", self.journal.journal_id)
                return
            try:
                result = self.run_once()
            except _errors.JournalClosed:
                log.info("journal %s closed: syncer stops", self.journal.journal_id)
                return
            except Exception as exc:
                self.last_error = exc
                self.failures += 1
                if isinstance(exc, SyncRefused) and exc.permanent:
                    log.error("sync of journal %s stopped for good: %s (the batch can never be accepted; "
                              "not retried)", self.journal.journal_id, exc)
                    if on_error is not None:
                        on_error(exc)
                    return
                if isinstance(exc, SyncUnavailable):
                    log.warning("sync of journal %s failed (attempt %d): %s", self.journal.journal_id,
                                self.failures, exc)
                    delay = min(max_backoff, interval * (2 ** min(self.failures, 30)))
                else:  # refused, a damaged record, a bug: needs a human, retry slowly
                    log.error("sync of journal %s stopped: %s", self.journal.journal_id, exc,
                              exc_info=not isinstance(exc, PosfastError))
                    delay = max_backoff
                if on_error is not None:
                    on_error(exc)
                stop_event.wait(delay * random.uniform(0.5, 1.0))
                continue
            self.failures = 0
            if on_sync is not None and result.sent:
                on_sync(result)
            if self.journal.head_seq > result.watermark and result.sent:
                continue  # more arrived while we were sending
            stop_event.wait(interval)


# --------------------------------------------------------------------------- status

def sync_status(journal, deadline_hours: float = 72, *, now: Optional[float] = None,
                full_fraction: float = 0.8) -> dict:
    """How far behind the back office a journal is, with a warning flag.

    >>> sync_status(journal)["warning"]          # doctest: +SKIP
    False

    ``warning`` is True when the oldest unsynced record is older than
    ``deadline_hours`` (``state == "overdue"``) or unsynced records fill more than
    ``full_fraction`` of the ring's slots (``state == "ring_filling"``; appends will
    soon fail with ``JournalFull``).  ``lost_unsynced`` counts records evicted before
    they were synced (only possible with retention ``overwrite``/``archive``); all
    the reasons that apply are listed in ``reasons``, the first is ``state``.
    """
    now = time.time() if now is None else now
    st = journal.status()
    watermark, head, oldest = int(st["sync_watermark"]), int(st["head_seq"]), int(st["oldest_seq"])
    capacity, unsynced = int(st["capacity"]), int(st["unsynced"])
    live, used = int(st.get("live_records") or 0), int(st.get("used_slots") or 0)
    # A record may span several slots: estimate the unsynced share of the used slots.
    unsynced_slots = round(used * unsynced / live) if live and used else unsynced
    fraction = unsynced_slots / capacity if capacity else 0.0
    lost = max(0, min(head, oldest - 1) - watermark) if head else 0
    oldest_ts = st.get("oldest_unsynced_ts") if unsynced else None
    oldest_age = None if oldest_ts is None else max(0.0, now - oldest_ts / 1e6)
    reasons = []
    if oldest_age is not None and oldest_age > deadline_hours * 3600:
        reasons.append("overdue")
    if fraction > full_fraction:
        reasons.append("ring_filling")
    if lost:
        reasons.append("lost_unsynced")
    return {
        "journal_id": str(journal.journal_id),
        "sync_watermark": watermark,
        "head_seq": head,
        "unsynced": unsynced,
        "oldest_unsynced_seq": max(watermark + 1, oldest) if unsynced else None,
        "oldest_unsynced_ts": oldest_ts,
        "oldest_unsynced_age_s": oldest_age,
        "unsynced_slots": unsynced_slots,
        "unsynced_fraction": fraction,
        "capacity": capacity,
        "deadline_hours": deadline_hours,
        "lost_unsynced": lost,
        "warning": bool(reasons),
        "state": reasons[0] if reasons else "ok",
        "reasons": reasons,
    }
