"""The back-office schema (SQLite and PostgreSQL) and the base class of the database targets.

The schema is owned here; everything that reads a back office (``posfast
reconcile``, the server) reads it through a target's methods
(:meth:`BackOffice.read_range`, :meth:`BackOffice.read_day`, ...), never with
its own SQL.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from itertools import repeat
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from ..records import PAYMENT_KINDS, RECORD_DTYPE, Flag, Kind, day_number, now_us
from .protocol import (ECHO_LIMIT, MAX_BATCH, MAX_SEQ, Ack, RecordBatch, SyncConfigError, SyncRefused,
                       SyncUnavailable, as_uuid, clean_status, clip, day_rule_tuple, encode_ext, normalize_batch)
from .reads import DashboardReads
from .tokens import ROLES, TERMINAL, TokenInfo, check_token_text, new_token, token_digest, token_id_of

log = logging.getLogger("posfast.sync")

__all__ = ["ADDED_JOURNAL_COLUMNS", "BackOffice", "added_columns", "DAY_COLUMNS", "DayRecords", "Registration", "TID_SIZE",
           "batch_from_db", "day_rows", "db_rows", "schema_statements", "seq_or_none"]


def _db_dtype(dtype: np.dtype) -> np.dtype:
    """RECORD_DTYPE with unsigned 64-bit fields as signed (same offsets): how databases hold them."""
    formats = []
    for name in dtype.names:
        ft = dtype.fields[name][0]
        formats.append(np.dtype("<i8") if ft.kind == "u" and ft.itemsize == 8 else ft)
    return np.dtype({"names": list(dtype.names), "formats": formats,
                     "offsets": [dtype.fields[n][1] for n in dtype.names], "itemsize": dtype.itemsize})


def seq_or_none(seq):
    return seq if isinstance(seq, int) and 0 <= seq <= MAX_SEQ else None


def _sql_type(ft: np.dtype, dialect: str) -> str:
    if ft.kind == "S":
        return "TEXT"
    if dialect == "sqlite":
        return "INTEGER"
    if ft.itemsize == 8 or (ft.kind == "u" and ft.itemsize == 4):
        return "bigint"
    if ft.itemsize == 4 or (ft.kind == "u" and ft.itemsize == 2):
        return "integer"
    return "smallint"


#: The indexes of ``records`` (besides its primary key (journal_id, seq)): a store's or a till's
#: day, and every journal's day.
RECORDS_INDEXES = (
    "CREATE INDEX IF NOT EXISTS records_journal_day_terminal ON records (journal_id, day, terminal)",
    "CREATE INDEX IF NOT EXISTS records_day_terminal ON records (day, terminal)",
)


def schema_statements(dialect: str) -> list:
    dtype = RECORD_DTYPE
    jid = "TEXT" if dialect == "sqlite" else "uuid"
    blob = "BLOB" if dialect == "sqlite" else "bytea"
    big = "INTEGER" if dialect == "sqlite" else "bigint"
    cols = ",\n  ".join(f'"{n}" {_sql_type(dtype.fields[n][0], dialect)} NOT NULL' for n in dtype.names)
    serial = "INTEGER PRIMARY KEY AUTOINCREMENT" if dialect == "sqlite" else "bigserial PRIMARY KEY"
    real = "REAL" if dialect == "sqlite" else "double precision"
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
  day_start_min {big},
  day_tz TEXT NOT NULL DEFAULT '',
  last_day_closed {big},
  format_version {big})""",
        f"""CREATE TABLE IF NOT EXISTS records (
  journal_id {jid} NOT NULL,
  {cols},
  payload {blob} NOT NULL,
  link {blob} NOT NULL,
  order_ref TEXT NOT NULL DEFAULT '',
  host_ref TEXT NOT NULL DEFAULT '',
  text_raw {blob},
  local_time TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (journal_id, seq))""",
        *RECORDS_INDEXES,
        f"""CREATE TABLE IF NOT EXISTS sync_refusals (
  id {serial},
  at_us {big} NOT NULL,
  journal_id TEXT,
  reason TEXT NOT NULL,
  first_seq {big},
  last_seq {big},
  message TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS sync_refusals_journal_at ON sync_refusals (journal_id, at_us)",
        f"""CREATE TABLE IF NOT EXISTS registry (
  journal_id {jid} PRIMARY KEY,
  merchant_id TEXT NOT NULL DEFAULT '',
  store TEXT NOT NULL DEFAULT '',
  till TEXT NOT NULL DEFAULT '',
  tid TEXT NOT NULL DEFAULT '',
  device_serial TEXT NOT NULL DEFAULT '',
  registered_us {big} NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS registry_store ON registry (store)",
        # sync tokens, kept as SHA-256 digests (hex) only: a terminal's (role 'terminal', one
        # journal) or head office's (role 'admin', no journal); revoked_us set = revoked
        f"""CREATE TABLE IF NOT EXISTS tokens (
  token_id TEXT PRIMARY KEY,
  sha256 TEXT NOT NULL UNIQUE,
  role TEXT NOT NULL,
  journal_id {jid},
  label TEXT NOT NULL DEFAULT '',
  issued_us {big} NOT NULL,
  revoked_us {big})""",
        "CREATE INDEX IF NOT EXISTS tokens_journal ON tokens (journal_id)",
        # what each terminal said of itself in its last push or heartbeat (the fleet view)
        f"""CREATE TABLE IF NOT EXISTS terminal_status (
  journal_id {jid} PRIMARY KEY,
  seen_us {big} NOT NULL,
  reported_us {big},
  head_seq {big},
  oldest_unsynced_ts {big},
  ring_fill {real},
  ring_unsynced {real},
  in_doubt {big},
  retention TEXT NOT NULL DEFAULT '',
  last_ok_us {big},
  last_refusal_us {big},
  last_refusal TEXT NOT NULL DEFAULT '')""",
        # every reconciliation of a store (posfast.reconcile.reconcile_store): one row per till
        f"""CREATE TABLE IF NOT EXISTS reconciliations (
  id {serial},
  at_us {big} NOT NULL,
  store TEXT NOT NULL,
  day {big} NOT NULL,
  journal_id {jid},
  till TEXT NOT NULL DEFAULT '',
  ok {big} NOT NULL,
  discrepancies {big} NOT NULL,
  store_ok {big} NOT NULL,
  store_discrepancies {big} NOT NULL,
  counts TEXT NOT NULL DEFAULT '{{}}',
  host TEXT NOT NULL DEFAULT '')""",
        "CREATE INDEX IF NOT EXISTS reconciliations_journal_at ON reconciliations (journal_id, at_us)",
        "CREATE TABLE IF NOT EXISTS posfast_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ]


#: Columns added to ``journals`` after 0.1.0, as (column, type).
ADDED_JOURNAL_COLUMNS = (("day_offset_min", "big"), ("day_start_min", "big"), ("day_tz", "text"),
                         ("last_day_closed", "big"), ("format_version", "big"))


def added_columns(dialect: str, have: Callable[[str], set]) -> list:
    """``ALTER TABLE`` statements that bring an older back office (0.1) up to this schema:
    the journals columns added since, and the records columns of format 2 (the row's new
    fields, order_ref and host_ref), each with a default that reads as "none".  `have(table)`
    gives the column names a table has."""
    big = "INTEGER" if dialect == "sqlite" else "bigint"
    text = "TEXT NOT NULL DEFAULT ''"
    out = []
    journals = have("journals")
    for column, kind in ADDED_JOURNAL_COLUMNS:
        if column not in journals:
            out.append(f"ALTER TABLE journals ADD COLUMN {column} {big if kind == 'big' else text}")
            if column == "last_day_closed":
                out.append("UPDATE journals SET last_day_closed = (SELECT max(day) FROM records r WHERE "
                           f"r.journal_id = journals.journal_id AND r.kind = {int(Kind.DAY_CLOSE)})")
    records = have("records")
    for name in RECORD_DTYPE.names or ():
        if name not in records:
            ft = RECORD_DTYPE.fields[name][0]
            default = "''" if ft.kind == "S" else "0"
            out.append(f'ALTER TABLE records ADD COLUMN "{name}" {_sql_type(ft, dialect)} '
                       f"NOT NULL DEFAULT {default}")
    for name in ("order_ref", "host_ref"):
        if name not in records:
            out.append(f"ALTER TABLE records ADD COLUMN {name} {text}")
    return out


def _enum_case(column: str, enum_cls) -> str:
    whens = " ".join(f"WHEN {int(m)} THEN '{m.name.lower()}'" for m in enum_cls)
    return f"CASE {column} {whens} ELSE CAST({column} AS TEXT) END"


def _iso_day(column: str, dialect: str) -> str:
    if dialect == "sqlite":
        return f"date({column} * 86400, 'unixepoch')"
    return f"to_char(DATE '1970-01-01' + {column}, 'YYYY-MM-DD')"


def view_statements(dialect: str) -> list:
    """``v_records`` and ``v_payments``, the back office as BI tools read it (README, "Reading
    the back office with SQL"): enum names, the till's local date-time and ISO business day,
    store and till from the registry; one row per payment with its final state."""
    from ..records import KIND_SIGN, Method, State
    kind, state, method = (lambda c: _enum_case(c, Kind)), (lambda c: _enum_case(c, State)), \
        (lambda c: _enum_case(c, Method))
    training = int(Flag.TRAINING)
    sign = "CASE f.kind " + " ".join(f"WHEN {int(k)} THEN {v}" for k, v in sorted(KIND_SIGN.items())) + " ELSE 0 END"
    payment_kinds = ", ".join(str(int(k)) for k in sorted(PAYMENT_KINDS))
    records = f"""CREATE VIEW v_records AS
SELECT r.journal_id, g.merchant_id, g.store, g.till, g.tid, r.seq,
  r.local_time, {_iso_day('r.day', dialect)} AS day, r.ts AS ts_us, r.terminal,
  {kind('r.kind')} AS kind, {state('r.state')} AS state, {method('r.method')} AS method,
  r.amount, r.currency, r.txn_id, r.ref_seq, r.receipt_no, r.operator, r.flags,
  CASE WHEN (r.flags & {training}) <> 0 THEN 1 ELSE 0 END AS training,
  r.pan_last4, r.auth_code, r.rrn, r.client_ref, r.channel, r.order_ref, r.host_ref,
  r.payload_len, r.day AS day_number
FROM records r LEFT JOIN registry g ON g.journal_id = r.journal_id"""
    payments = f"""CREATE VIEW v_payments AS
SELECT p.journal_id, g.merchant_id, g.store, g.till, g.tid, p.txn_id, p.first_seq, p.final_seq,
  p.records, f.terminal, f.local_time AS local_time, {_iso_day('f.day', dialect)} AS day,
  {kind('f.kind')} AS kind, {state('l.state')} AS final_state, {method('l.method')} AS method,
  l.amount, l.currency, l.amount * ({sign}) AS signed,
  CASE WHEN l.state = {int(State.APPROVED)} THEN l.amount * ({sign}) ELSE 0 END AS net,
  l.rrn, l.auth_code, f.client_ref, l.channel, f.order_ref, l.host_ref, f.receipt_no,
  l.local_time AS final_local_time, f.day AS day_number
FROM (SELECT journal_id, txn_id, min(seq) AS first_seq, max(seq) AS final_seq, count(*) AS records
      FROM records WHERE kind IN ({payment_kinds}) AND (flags & {training}) = 0
      GROUP BY journal_id, txn_id) p
JOIN records f ON f.journal_id = p.journal_id AND f.seq = p.first_seq
JOIN records l ON l.journal_id = p.journal_id AND l.seq = p.final_seq
LEFT JOIN registry g ON g.journal_id = p.journal_id"""
    return [records, payments]


def views_version(dialect: str) -> str:
    """A digest of the views' definitions (kept in ``posfast_meta``: views are remade when it changes)."""
    import hashlib
    return hashlib.sha256("\n".join(view_statements(dialect)).encode()).hexdigest()[:16]


#: The row's fixed-width text fields (``char[n]`` in FORMAT.md), held as TEXT in a back office.
TEXT_COLUMNS = tuple(n for n in RECORD_DTYPE.names or () if RECORD_DTYPE.fields[n][0].kind == "S")
_TEXT_WIDTHS = tuple(RECORD_DTYPE.fields[n][0].itemsize for n in TEXT_COLUMNS)
#: Bytes of ``records.text_raw``: the text fields NUL-padded, in :data:`TEXT_COLUMNS` order.
TEXT_RAW_SIZE = sum(_TEXT_WIDTHS)


def readable(value) -> str:
    """A text field's bytes as TEXT: UTF-8, with what is not (bad bytes, NUL) as U+FFFD.
    Exactly the bytes when they are UTF-8 without NUL (then ``text_raw`` stays NULL)."""
    if isinstance(value, str):
        return value
    return bytes(value).decode("utf-8", "replace").replace("\x00", "\ufffd")


def _clean(value: bytes) -> bool:
    """Whether TEXT holds these bytes exactly: UTF-8 and no NUL."""
    if b"\x00" in value:
        return False
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def text_raw(values: Sequence[bytes]) -> Optional[bytes]:
    """``records.text_raw`` of one row's text fields (in :data:`TEXT_COLUMNS` order): None when
    each reads back exactly from its TEXT, else the fields NUL-padded (48 bytes)."""
    if all(_clean(bytes(v)) for v in values):
        return None
    return b"".join(bytes(v).ljust(w, b"\0") for v, w in zip(values, _TEXT_WIDTHS))


def _text_cells(col: np.ndarray) -> tuple:
    """(TEXT values, row positions that need text_raw) of one fixed-width text column."""
    width = col.dtype.itemsize
    u8 = np.ascontiguousarray(col).view(np.uint8).reshape(len(col), width)
    inner_nul = (u8[:, :-1] == 0) & (u8[:, 1:] != 0) if width > 1 else np.zeros((len(col), 0), bool)
    if not (u8 & 0x80).any() and not inner_nul.any():           # ASCII without NUL: the usual
        return np.char.decode(col, "ascii").tolist(), ()
    out, bad = [], []
    for i, v in enumerate(col.tolist()):
        if _clean(v):
            out.append(v.decode("utf-8"))
        else:
            out.append(readable(v))
            bad.append(i)
    return out, bad


def local_times(ts: np.ndarray, rule) -> list:
    """``YYYY-MM-DD HH:MM:SS`` wall-clock times of `ts` (microseconds) under a day rule
    (``(utc_offset_min, day_start_min, zone)``; a zone's offsets across its changes)."""
    from ..records import DayRule
    ts = np.asarray(ts, np.int64)
    if not len(ts):
        return []
    off, _start, zone = day_rule_tuple(rule) if rule is not None else (0, 0, "")
    if zone:
        starts, shifts, _floors = DayRule.from_header(0, 0, zone).day_table(int(ts.min()), int(ts.max()))
        local = ts + shifts[np.searchsorted(starts, ts, side="right") - 1]
    else:
        local = ts + int(off) * 60_000_000
    text = np.datetime_as_string(local.astype("datetime64[us]"), unit="s")
    return np.char.replace(text, "T", " ").tolist()


def db_rows(jid_value, batch: RecordBatch, start: int, rule=None) -> Iterator[tuple]:
    """Insert tuples for records ``start:`` of a batch: journal id, columns (text fields as
    text), payload, link, order_ref, host_ref, text_raw, local_time (`rule`: the journal's
    day rule, whose wall clock local_time shows)."""
    rows = batch.rows[start:]
    cols = []
    raw_rows: set = set()
    for name in rows.dtype.names:
        col = rows[name]
        if col.dtype.kind == "S":
            values, bad = _text_cells(col)
            raw_rows.update(bad)
            cols.append(values)
            continue
        if col.dtype.kind == "u" and col.dtype.itemsize == 8:
            col = col.astype("<u8").view("<i8")
        cols.append(col.tolist())
    raws: list = [None] * len(rows)
    for i in raw_rows:
        raws[i] = text_raw([rows[name][i] for name in TEXT_COLUMNS])
    refs = [batch.refs(i) for i in range(start, len(batch.rows))]
    return zip(repeat(jid_value), *cols, batch.payloads[start:], batch.links[start:],
               [r[0] for r in refs], [r[1] for r in refs], raws, local_times(rows["ts"], rule))


def _text_back(value, raw, k: int) -> bytes:
    """A text field's bytes from its TEXT (or an older back office's BLOB) and text_raw."""
    if raw is not None:
        at = sum(_TEXT_WIDTHS[:k])
        return bytes(raw[at:at + _TEXT_WIDTHS[k]]).rstrip(b"\0")
    if isinstance(value, str):
        return value.encode("utf-8")
    return b"" if value is None else bytes(value)


def _bytes_rows(fetched: Sequence[tuple], names: Sequence[str], raw_at: int) -> list:
    """Database tuples with their text fields (among `names`, the tuples' first columns) as
    bytes, read exactly (text_raw at position `raw_at` of each tuple, when present)."""
    where = [(i, TEXT_COLUMNS.index(c)) for i, c in enumerate(names) if c in TEXT_COLUMNS]
    out = []
    for r in fetched:
        raw = r[raw_at] if len(r) > raw_at else None
        r = list(r[:len(names)])
        for i, k in where:
            r[i] = _text_back(r[i], raw, k)
        out.append(tuple(r))
    return out


def batch_from_db(journal_id: uuid.UUID, fetched: Sequence[tuple]) -> RecordBatch:
    """A RecordBatch of tuples: the row's columns, payload, link, order_ref, host_ref, text_raw."""
    dtype = RECORD_DTYPE
    n = len(dtype.names)
    if not fetched:
        return RecordBatch(journal_id, np.zeros(0, dtype=dtype), [], [])
    rows = np.array(_bytes_rows(fetched, dtype.names, n + 4), dtype=_db_dtype(dtype)).view(dtype)
    # the extension is canonical: rebuilt from the row's client_ref and the stored references
    exts = [encode_ext(bytes(row["client_ref"]), r[n + 2], r[n + 3]) if row["ext_len"] else b""
            for row, r in zip(rows, fetched)]
    return RecordBatch(journal_id, rows, [bytes(r[n]) for r in fetched], [bytes(r[n + 1]) for r in fetched],
                       None, exts)


#: The columns of the rows :meth:`BackOffice.read_day` returns (the others are zero): what a
#: payment is folded and matched on.
DAY_COLUMNS = ("seq", "ts", "amount", "txn_id", "day", "terminal", "currency", "kind", "state",
               "method", "auth_code", "rrn", "client_ref", "channel")
_DAY_DB_DTYPE = np.dtype([(n, "<i8" if RECORD_DTYPE.fields[n][0] == np.dtype("<u8") else RECORD_DTYPE.fields[n][0])
                          for n in DAY_COLUMNS])
_PAYMENT_KIND_LIST = ", ".join(str(int(k)) for k in sorted(PAYMENT_KINDS))


@dataclass
class DayRecords:
    """What a back office holds of a journal's business days (:meth:`BackOffice.read_day`).

    ``rows``: a ``RECORD_DTYPE`` array in seq order of the journal's payment records
    (``posfast.records.PAYMENT_KINDS``, training records left out) of those days; only
    :data:`DAY_COLUMNS` are filled.  ``held``: how many records of the journal the back
    office holds, any day and kind (0: the journal was never synced there).
    """
    journal_id: uuid.UUID
    rows: np.ndarray
    held: int
    #: (order_ref, host_ref) bytes of each row, in the rows' order
    refs: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def refs_of(self, seqs) -> list:
        """(order_ref, host_ref) of these seqs (held rows of the days read), like ``Journal.refs``."""
        at = np.searchsorted(self.rows["seq"], np.asarray(seqs, np.uint64))
        return [self.refs[i] if i < len(self.refs) and self.rows["seq"][i] == s else (b"", b"")
                for i, s in zip(at.tolist(), np.asarray(seqs).tolist())]


def day_rows(fetched: Sequence[tuple]) -> np.ndarray:
    """``RECORD_DTYPE`` rows, in seq order, from database tuples of :data:`DAY_COLUMNS`."""
    return _day_rows(fetched)[0]


def _reconciliation_dict(r) -> dict:
    import json
    try:
        counts = json.loads(r[10] or "{}")
    except ValueError:
        counts = {}
    return {"id": int(r[0]), "at_us": int(r[1]), "store": r[2], "day": int(r[3]),
            "journal_id": "" if r[4] is None else str(r[4]), "till": r[5], "ok": bool(r[6]),
            "discrepancies": int(r[7]), "store_ok": bool(r[8]), "store_discrepancies": int(r[9]),
            "counts": counts, "host": r[11]}


def _day_rows(fetched: Sequence[tuple]):
    """(rows in seq order, their (order_ref, host_ref)) of tuples of DAY_COLUMNS, then
    optionally order_ref and host_ref (text) and text_raw."""
    n = len(DAY_COLUMNS)
    rows = np.zeros(len(fetched), RECORD_DTYPE)
    if fetched:
        got = np.array(_bytes_rows(fetched, DAY_COLUMNS, n + 2), dtype=_DAY_DB_DTYPE)
        for name in DAY_COLUMNS:
            rows[name] = got[name].astype(RECORD_DTYPE.fields[name][0])
    order = np.argsort(rows["seq"], kind="stable")
    refs = [((r[n] or "").encode("utf-8"), (r[n + 1] or "").encode("utf-8")) if len(r) > n + 1
            else (b"", b"") for r in fetched]
    return rows[order], [refs[i] for i in order.tolist()]


#: Characters of a terminal id (TID) as acquirers print it on their statements.
TID_SIZE = 8


@dataclass
class Registration:
    """Who a journal is, for head office: merchant id, store, till name, the terminal id
    (TID) the acquirer's statements name it by, and the device's serial number."""
    journal_id: uuid.UUID
    merchant_id: str = ""
    store: str = ""
    till: str = ""
    tid: str = ""
    device_serial: str = ""
    registered_us: int = 0

    def to_dict(self) -> dict:
        return {"journal_id": str(self.journal_id), "merchant_id": self.merchant_id,
                "store": self.store, "till": self.till, "tid": self.tid,
                "device_serial": self.device_serial, "registered_us": self.registered_us}


_REGISTRY_COLUMNS = ("journal_id", "merchant_id", "store", "till", "tid", "device_serial",
                     "registered_us")


class BackOffice(DashboardReads):
    """Shared logic of the database targets (:class:`~posfast.sync.SqliteTarget`,
    :class:`~posfast.sync.PostgresTarget`).

    Subclasses give ``_mark`` (the driver's parameter marker), ``_journal_param`` (the
    journal id as the driver binds it) and ``_select_day(sql, params, jid_param)``.
    """

    max_batch = MAX_BATCH
    #: Refusals recorded (and logged) per journal per hour; further ones are only counted.
    max_refusals_per_hour = 100

    #: True when opened with ``readonly=True``: :meth:`push` refuses, nothing is created.
    readonly = False
    _mark = "?"
    #: what stands for text_raw in a SELECT: NULL for a back office of posfast 0.x opened read-only
    _raw_expr = "text_raw"

    @staticmethod
    def _journal_param(jid: uuid.UUID):
        return str(jid)

    def _check_writable(self) -> None:
        if self.readonly:
            raise SyncConfigError(f"{self!r} was opened read-only: it cannot store batches")

    def read_day(self, journal_id, first_day, last_day, terminal=None) -> DayRecords:
        """The payment records of a journal whose business day is in ``first_day..last_day``.

        Days are day numbers (days since 1970-01-01), dates or ``"YYYY-MM-DD"``;
        ``terminal`` limits the rows to one terminal.  Returns :class:`DayRecords`:
        the rows (``RECORD_DTYPE``, seq order, :data:`DAY_COLUMNS` filled; training
        records left out) and how many records of the journal are held at all.
        This is how ``posfast reconcile`` reads a back office.
        """
        jid = as_uuid(journal_id)
        mark = self._mark
        columns = ", ".join(f'"{c}"' for c in DAY_COLUMNS) + f", order_ref, host_ref, {self._raw_expr}"
        sql = (f"SELECT {columns} FROM records WHERE journal_id = {mark} AND day BETWEEN {mark} AND {mark} "
               f"AND kind IN ({_PAYMENT_KIND_LIST}) AND (flags & {int(Flag.TRAINING)}) = 0")
        jid_param = self._journal_param(jid)
        params = [jid_param, day_number(first_day), day_number(last_day)]
        if terminal is not None:
            sql += f" AND terminal = {mark}"
            params.append(int(terminal))
        fetched, held = self._select_day(sql, params, jid_param)
        rows, refs = _day_rows(fetched)
        return DayRecords(jid, rows, int(held), refs)

    # ------------------------------------------------------------ the registry
    def register(self, journal_id, *, merchant_id=None, store=None, till=None, tid=None,
                 device_serial=None) -> Registration:
        """Register (or update) a journal: what head office knows it by.  Fields left None
        keep their registered value.  A TID is at most 8 characters and names one journal
        of a merchant; a second journal with the same merchant and TID is refused.

        >>> bo.register(j.journal_id, store="SH-01", till="till 1", tid="00000001")  # doctest: +SKIP
        Registration(journal_id=UUID('...'), merchant_id='', store='SH-01', till='till 1', ...)
        """
        self._check_writable()
        jid = as_uuid(journal_id)
        known = {r.journal_id: r for r in self.registrations()}
        now = known[jid] if jid in known else Registration(jid)
        given = {"merchant_id": merchant_id, "store": store, "till": till, "tid": tid,
                 "device_serial": device_serial}
        for name, value in given.items():
            if value is not None:
                text = str(value).strip()
                if len(text) > (TID_SIZE if name == "tid" else 128):
                    raise SyncConfigError(f"{name} {text!r} is longer than "
                                          f"{TID_SIZE if name == 'tid' else 128} characters")
                setattr(now, name, text)
        if now.tid:
            for other in known.values():
                if other.journal_id != jid and other.tid == now.tid and \
                        other.merchant_id == now.merchant_id:
                    raise SyncConfigError(
                        f"TID {now.tid!r} of merchant {now.merchant_id!r} is registered to journal "
                        f"{other.journal_id} already (store {other.store!r}, till {other.till!r}); "
                        "a statement could not tell them apart")
        now.registered_us = now_us()
        mark = self._mark
        values = [self._journal_param(jid), now.merchant_id, now.store, now.till, now.tid,
                  now.device_serial, now.registered_us]
        self._registry_write(
            f"INSERT INTO registry ({', '.join(_REGISTRY_COLUMNS)}) VALUES ({', '.join([mark] * 7)}) "
            "ON CONFLICT (journal_id) DO UPDATE SET merchant_id = excluded.merchant_id, "
            "store = excluded.store, till = excluded.till, tid = excluded.tid, "
            "device_serial = excluded.device_serial, registered_us = excluded.registered_us", values)
        return now

    def registrations(self, store=None) -> list:
        """The registry (one :class:`Registration` per journal), ordered by store, till and
        journal id; `store` keeps one store's."""
        mark = self._mark
        sql = f"SELECT {', '.join(_REGISTRY_COLUMNS)} FROM registry"
        params: list = []
        if store is not None:
            sql += f" WHERE store = {mark}"
            params.append(str(store))
        fetched = self._registry_read(sql + " ORDER BY store, till, journal_id", params)
        return [Registration(as_uuid(r[0]), *r[1:6], int(r[6])) for r in fetched]

    # ------------------------------------------------------------ tokens
    def issue_token(self, journal_id=None, *, role: str = TERMINAL, label: str = "",
                    token: Optional[str] = None) -> tuple:
        """Issue a token: ``(token, TokenInfo)``.  The token is returned this once and stored
        only as its SHA-256 digest.  ``role="terminal"`` (default) needs the journal it may push
        and read; ``role="admin"`` (head office: admin API, metrics, dashboard) has none.
        ``token``: keep a token that exists already (an old tokens file's) instead of a new one.

        >>> token, info = bo.issue_token(j.journal_id, label="till 1")     # doctest: +SKIP
        """
        self._check_writable()
        if role not in ROLES:
            raise SyncConfigError(f"token role {role!r}: roles are {', '.join(ROLES)}")
        jid = None
        if role == TERMINAL:
            if journal_id is None:
                raise SyncConfigError("a terminal token is issued for a journal: give its journal id "
                                      "(or issue an admin token)")
            jid = as_uuid(journal_id)
        elif journal_id is not None:
            raise SyncConfigError("an admin token belongs to no journal: leave the journal id out")
        label = str(label or "").strip()
        if len(label) > 128:
            raise SyncConfigError(f"token label is {len(label)} characters, at most 128")
        text = new_token() if token is None else check_token_text(str(token).strip(), jid)
        digest = token_digest(text)
        held = self._registry_read(f"SELECT token_id, role, journal_id FROM tokens WHERE sha256 = {self._mark}",
                                   [digest])
        if held:
            raise SyncConfigError(f"this token is issued already (token id {held[0][0]}, {held[0][1]}"
                                  f"{' of journal ' + str(held[0][2]) if held[0][2] else ''}); a token "
                                  "maps to exactly one journal")
        info = TokenInfo(token_id_of(digest), role, jid, label, now_us(), None)
        mark = self._mark
        self._registry_write(
            f"INSERT INTO tokens (token_id, sha256, role, journal_id, label, issued_us) VALUES "
            f"({', '.join([mark] * 6)})",
            [info.token_id, digest, role, None if jid is None else self._journal_param(jid), label,
             info.issued_us])
        return text, info

    def revoke_token(self, token_id: Optional[str] = None, *, journal_id=None) -> list:
        """Revoke one token (by its id, or the token itself) or every token of a journal;
        returns the :class:`TokenInfo` revoked now.  Running servers refuse them within their
        token cache time (``posfast serve --token-ttl``, 5 s)."""
        self._check_writable()
        if (token_id is None) == (journal_id is None):
            raise SyncConfigError("revoke a token by its id, or every token of a journal: one of the two")
        if token_id is not None:
            key = str(token_id).strip()
            if len(key) != 12:           # the token itself
                key = token_id_of(token_digest(key))
            found = [t for t in self.tokens() if t.token_id == key]
            if not found:
                raise SyncConfigError(f"no token with id {clip(key, 40)!r} in {self!r}; list them with "
                                      "posfast register --db ... --list-tokens")
        else:
            jid = as_uuid(journal_id)
            found = [t for t in self.tokens() if t.journal_id == jid]
            if not found:
                raise SyncConfigError(f"journal {jid} has no token in {self!r}")
        now = now_us()
        out = []
        for t in found:
            if t.revoked_us is None:
                self._registry_write(f"UPDATE tokens SET revoked_us = {self._mark} WHERE token_id = {self._mark} "
                                     "AND revoked_us IS NULL", [now, t.token_id])
                out.append(TokenInfo(t.token_id, t.role, t.journal_id, t.label, t.issued_us, now))
        return out

    def tokens(self, journal_id=None) -> list:
        """Every token issued (revoked ones too), as :class:`TokenInfo`, oldest first."""
        sql = "SELECT token_id, role, journal_id, label, issued_us, revoked_us FROM tokens"
        params: list = []
        if journal_id is not None:
            sql += f" WHERE journal_id = {self._mark}"
            params.append(self._journal_param(as_uuid(journal_id)))
        rows = self._registry_read(sql + " ORDER BY issued_us, token_id", params)
        return [TokenInfo(r[0], r[1], None if r[2] is None else as_uuid(r[2]), r[3], int(r[4]),
                          None if r[5] is None else int(r[5])) for r in rows]

    def token_lookup(self, digest_hex: str) -> Optional[TokenInfo]:
        """The live (not revoked) token of this SHA-256 digest, or None."""
        rows = self._read_live("SELECT token_id, role, journal_id, label, issued_us FROM tokens WHERE "
                               f"sha256 = {self._mark} AND revoked_us IS NULL", [str(digest_hex)])
        if not rows:
            return None
        r = rows[0]
        return TokenInfo(r[0], r[1], None if r[2] is None else as_uuid(r[2]), r[3], int(r[4]), None)

    def ping(self) -> None:
        """Touch the database (what ``/v1/health`` does); raises SyncUnavailable when it cannot."""
        self._read_live("SELECT count(*) FROM journals", [])

    def _read_live(self, sql: str, params: list) -> list:
        """A read a running server depends on: any database error is SyncUnavailable (503)."""
        try:
            return self._registry_read(sql, params)
        except SyncConfigError as exc:
            raise SyncUnavailable(str(exc)) from exc

    # ------------------------------------------------------------ what terminals say
    def _status_statement(self, journal_id, status, *, ok_us=None, refusal: str = "") -> tuple:
        """(sql, params) that keep a terminal's last status, last seen time and outcome."""
        now = now_us()
        st = clean_status(status) or {}
        given = bool(st)
        mark = self._mark
        cols = ("journal_id", "seen_us", "reported_us", "head_seq", "oldest_unsynced_ts", "ring_fill",
                "ring_unsynced", "in_doubt", "retention", "last_ok_us", "last_refusal_us", "last_refusal")
        values = [self._journal_param(as_uuid(journal_id)), now, st.get("at_us", now) if given else None,
                  st.get("head_seq"), st.get("oldest_unsynced_ts"), st.get("ring_fill"), st.get("ring_unsynced"),
                  st.get("in_doubt"), st.get("retention", ""), ok_us, now if refusal else None,
                  clip(refusal, 2 * ECHO_LIMIT) if refusal else ""]
        reported = ", ".join(f"{c} = CASE WHEN excluded.reported_us IS NULL THEN terminal_status.{c} "
                             f"ELSE excluded.{c} END" for c in cols[2:9])
        sql = (f"INSERT INTO terminal_status ({', '.join(cols)}) VALUES ({', '.join([mark] * len(cols))}) "
               f"ON CONFLICT (journal_id) DO UPDATE SET seen_us = excluded.seen_us, {reported}, "
               "last_ok_us = coalesce(excluded.last_ok_us, terminal_status.last_ok_us), "
               "last_refusal = CASE WHEN excluded.last_refusal_us IS NULL THEN terminal_status.last_refusal "
               "ELSE excluded.last_refusal END, "
               "last_refusal_us = coalesce(excluded.last_refusal_us, terminal_status.last_refusal_us)")
        return sql, values

    def report_status(self, journal_id, status: Optional[dict]) -> None:
        """Keep what a terminal says of itself (a heartbeat: ``Syncer`` sends one when it has
        nothing to push, ``POST /v1/journals/<id>/status``): last seen now, and the status."""
        self._check_writable()
        sql, params = self._status_statement(journal_id, status)
        self._registry_write(sql, params)

    @staticmethod
    def _closed_day(inc: RecordBatch, start: int) -> Optional[int]:
        """The newest business day a batch's new records close (DAY_CLOSE), or None."""
        rows = inc.rows[start:]
        closes = rows["day"][rows["kind"] == int(Kind.DAY_CLOSE)]
        return int(closes.max()) if len(closes) else None

    # ------------------------------------------------------------ reconciliations
    def record_reconciliation(self, store: str, day, rows: Sequence[dict], *, store_ok: bool,
                              store_discrepancies: int, host: str = "") -> None:
        """Keep a store's reconciliation result: one row per till (``rows``: dicts of
        journal_id, till, ok, discrepancies, counts), what ``posfast fleet`` shows as the
        till's last reconciliation.  :func:`posfast.reconcile.reconcile_store` calls it."""
        import json
        self._check_writable()
        at = now_us()
        mark = self._mark
        for r in rows:
            jid = r.get("journal_id")
            self._registry_write(
                "INSERT INTO reconciliations (at_us, store, day, journal_id, till, ok, discrepancies, store_ok, "
                f"store_discrepancies, counts, host) VALUES ({', '.join([mark] * 11)})",
                [at, str(store), day_number(day), None if not jid else self._journal_param(as_uuid(jid)),
                 str(r.get("till", "")), int(bool(r.get("ok"))), int(r.get("discrepancies", 0)), int(bool(store_ok)),
                 int(store_discrepancies), json.dumps(r.get("counts") or {}, sort_keys=True), clip(host, 200)])

    def reconciliations(self, store=None, limit: int = 100) -> list:
        """The newest reconciliation rows (dicts), newest first; ``store`` keeps one store's."""
        sql = ("SELECT id, at_us, store, day, journal_id, till, ok, discrepancies, store_ok, store_discrepancies, "
               "counts, host FROM reconciliations")
        params: list = []
        if store is not None:
            sql += f" WHERE store = {self._mark}"
            params.append(str(store))
        rows = self._registry_read(sql + f" ORDER BY id DESC LIMIT {int(limit)}", params)
        return [_reconciliation_dict(r) for r in rows]

    def seq_bounds(self, journal_id, first_day, last_day) -> Optional[tuple]:
        """(lowest, highest) seq of a journal's held records whose business day is in
        ``first_day..last_day`` (any kind), or None."""
        mark = self._mark
        rows = self._registry_read(f"SELECT min(seq), max(seq) FROM records WHERE journal_id = {mark} AND day "
                                   f"BETWEEN {mark} AND {mark}", [self._journal_param(as_uuid(journal_id)),
                                                                  day_number(first_day), day_number(last_day)])
        if not rows or rows[0][0] is None:
            return None
        return int(rows[0][0]), int(rows[0][1])

    def day_closes_after(self, journal_id, seq: int) -> list:
        """(seq, payload) of a journal's held DAY_CLOSE records past `seq`, in seq order (a day
        is closed after it ends: its Z-report is a record of a later day)."""
        mark = self._mark
        rows = self._registry_read(f"SELECT seq, payload FROM records WHERE journal_id = {mark} AND kind = "
                                   f"{int(Kind.DAY_CLOSE)} AND seq > {mark} ORDER BY seq",
                                   [self._journal_param(as_uuid(journal_id)), int(seq)])
        return [(int(r[0]), bytes(r[1])) for r in rows]

    def journal_format(self, journal_id) -> Optional[int]:
        """The journal file format its links were made with (1 or 2), as its pushes said;
        None when this back office did not record it (posfast 0.x)."""
        try:
            rows = self._registry_read(f"SELECT format_version FROM journals WHERE journal_id = {self._mark}",
                                       [self._journal_param(as_uuid(journal_id))])
        except (SyncConfigError, SyncUnavailable):
            return None
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def refusal_counts(self) -> dict:
        """Refusals recorded in ``sync_refusals``, by reason."""
        return {r[0]: int(r[1]) for r in self._read_live(
            "SELECT reason, count(*) FROM sync_refusals GROUP BY reason", [])}

    # ------------------------------------------------------------ the fleet's raw facts
    def fleet_facts(self, since_us: int) -> dict:
        """What :func:`posfast.sync.fleet.fleet` is computed from, read in a few queries:
        ``registry`` (Registrations), ``journals`` (journal id -> (anchor_seq, high_seq,
        records, first_synced_us, last_synced_us, last_day_closed)), ``status`` (journal id ->
        terminal_status dict), ``refusals`` (journal id -> (count since `since_us`, newest at_us,
        newest reason)), ``reconciliations`` (journal id -> the newest row's dict)."""
        mark = self._mark
        sql = ("SELECT journal_id, anchor_seq, high_seq, records, first_synced_us, last_synced_us, {} "
               "FROM journals WHERE high_seq > 0")
        try:
            held = self._registry_read(sql.format("last_day_closed"), [])
        except (SyncConfigError, SyncUnavailable):     # a back office of posfast 0.x, opened read-only
            held = self._registry_read(sql.format("NULL"), [])
        journals = {as_uuid(r[0]): tuple(r[1:]) for r in held}
        cols = ("seen_us", "reported_us", "head_seq", "oldest_unsynced_ts", "ring_fill", "ring_unsynced", "in_doubt",
                "retention", "last_ok_us", "last_refusal_us", "last_refusal")
        status = {as_uuid(r[0]): dict(zip(cols, r[1:])) for r in self._registry_read(
            f"SELECT journal_id, {', '.join(cols)} FROM terminal_status", [])}
        refusals: dict = {}
        for r in self._registry_read(
                "SELECT journal_id, count(*), max(at_us) FROM sync_refusals WHERE journal_id IS NOT NULL AND "
                f"at_us >= {mark} GROUP BY journal_id", [int(since_us)]):
            try:
                refusals[as_uuid(r[0])] = (int(r[1]), int(r[2]))
            except ValueError:
                continue
        recs = {}
        for r in self._registry_read(
                "SELECT id, at_us, store, day, journal_id, till, ok, discrepancies, store_ok, store_discrepancies, "
                "counts, host FROM reconciliations WHERE id IN (SELECT max(id) FROM reconciliations "
                "WHERE journal_id IS NOT NULL GROUP BY journal_id)", []):
            recs[as_uuid(r[4])] = _reconciliation_dict(r)
        return {"registry": self.registrations(), "journals": journals, "status": status,
                "refusals": refusals, "reconciliations": recs}

    def _column_list(self) -> str:
        """The row's columns (callers add payload, link, order_ref and host_ref by name)."""
        return ", ".join(f'"{n}"' for n in RECORD_DTYPE.names)

    def _incoming(self, batch, day_rule) -> RecordBatch:
        """The batch a push was given, checked and normalized, with the day rule to check its
        days by; a refusal is recorded (sync_refusals, log) and raised."""
        self._check_writable()
        try:
            inc = normalize_batch(batch, max_batch=self.max_batch)
            if day_rule is not None:
                inc.day_rule = day_rule_tuple(day_rule)
        except SyncRefused as exc:
            self._refused(exc, clean_status(getattr(batch, "status", None)))
            raise
        return inc

    def _refused(self, exc: SyncRefused, status: Optional[dict] = None) -> None:
        try:
            recent = self._recent_refusals(exc.journal_id, now_us() - 3_600_000_000)
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
            if exc.journal_id is not None and not self.readonly:
                sql, params = self._status_statement(exc.journal_id, status,
                                                     refusal=f"{exc.reason}: {exc.detail}")
                self._registry_write(sql, params)
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
