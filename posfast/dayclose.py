"""Day close (日结, the Z-report): the totals of a business day, written into the
journal as a DAY_CLOSE record, checked again by ``verify()``.

``journal.close_day(day)`` summarises the payments begun on that business day
(one terminal, or every terminal) and appends a DAY_CLOSE record, chained like
every record, whose payload is compact JSON:

``{"v": 1, "day": "2026-11-20", "scope": null | terminal, "z": n, ...}``

* ``txns``: ``[kind, state, method, currency, count, amount]`` rows: payments
  by kind, final state, method and currency (a payment counts once, in the state
  of its newest record; its amount is that record's);
* ``terminals``: ``[terminal, state, currency, count, amount, net]`` rows (``net``:
  the amounts signed as in the grand totals);
* ``grand``: ``[currency, gross, absolute]``: the perpetual grand totals of the
  scope, never reset: each close adds its day's approved payments to the
  previous close's (``gross`` += sales and completions minus refunds, voids and
  reversals; ``absolute`` += the same amounts without their signs, so it only
  ever grows);
* ``records``: ``[first_seq, last_seq, count]`` of the payment records it
  summarises, ``digest``: a SHA-256 of them, ``scan``: the days read;
* ``prev``: seq of the scope's previous DAY_CLOSE (0 for the first; also in
  ``ref_seq``), ``in_doubt``: txn ids still PENDING (only with ``force=True``;
  the record then carries ``Flag.FORCED``);
* ``bad_time`` (only when there are some): seqs of payments with an impossible
  time (before 2000-01-01 or more than a day ahead of the clock, as an older
  posfast could store) that no business day holds.  Without ``force=True`` the
  close is refused, naming them; with it, they are listed here, left out.

Training payments (``Flag.TRAINING``) are left out everywhere.  The record has
``kind=DAY_CLOSE``, ``state=OK``, ``terminal`` = the scope (0 for every
terminal), ``receipt_no`` = the Z number and, for a one-currency day, ``amount``
= the day's net in ``currency``.

A payment belongs to the business day of its first (PENDING) record; its
outcome may arrive after the cut-off and is read from the later days too.

>>> import posfast, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "till.pfj")
>>> with posfast.Journal.create(path, capacity=1024) as j:
...     seq = j.append(terminal=1, kind="sale", state="approved", amount=1250,
...                    currency=156, ts=1795140000_000000)      # 2026-11-20 02:00 UTC
...     z = j.close_day("2026-11-20")
...     (z.z_no, z.net(156), z.grand[156])
(1, 1250, (1250, 1250))
"""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from . import _core
from .errors import DayClosed, InvalidRecord
from .records import KIND_SIGN, KIND_SIGN_TABLE  # noqa: F401  (KIND_SIGN: also read from here)
from .records import (PAYMENT_KIND_VALUES, Flag, Kind, Method, State, day_number, day_to_date,
                      now_us)
from .records import TS_FUTURE_US, TS_MIN_US, format_ts
from .storage import Problem, Storage

__all__ = ["DayClose", "DayBook", "TXN_DTYPE", "payment_transactions", "day_summary"]

_TRAINING = int(Flag.TRAINING)

#: One payment (transaction): its first and newest records folded together.
TXN_DTYPE = np.dtype([
    ("txn_id", "<u8"), ("first_seq", "<u8"), ("final_seq", "<u8"), ("records", "<u4"),
    ("terminal", "<u4"), ("ts", "<i8"), ("amount", "<i8"), ("first_amount", "<i8"),
    ("currency", "<u2"), ("kind", "u1"), ("state", "u1"), ("method", "u1"), ("flags", "u1"),
    ("receipt_no", "<u4"), ("ref_seq", "<u8"), ("day", "<i4"), ("rrn", "S12"),
    ("auth_code", "S6"), ("client_ref", "S16")])

# Columns covered by a close's digest (everything a record says about money).
_DIGEST_FIELDS = ("seq", "ts", "amount", "txn_id", "ref_seq", "terminal", "receipt_no", "operator",
                  "currency", "kind", "state", "method", "flags", "pan_last4", "auth_code", "rrn",
                  "client_ref")

#: Problem codes of ``verify()`` findings about day closes (the core's are below 100).
CLOSE_MISMATCH, GRAND_TOTAL_BREAK, CLOSE_UNREADABLE = 100, 101, 102


# ---------------------------------------------------------------- the numbers
def payment_transactions(rows: np.ndarray, day: int, oldest_seq: int = 1):
    """Fold payment records into one row per payment begun on business `day`.

    `rows` are RECORD_DTYPE records in seq order covering `day` and the days
    after it that may hold outcomes.  Returns ``(txns, positions)``: a TXN_DTYPE
    array in txn_id order (state, amount, rrn and auth code of the newest
    record; terminal, kind, time and client_ref of the first) and the
    positions in `rows` of the payment records folded, in seq order.  Training
    records are skipped; a record whose first record was evicted (txn_id below
    `oldest_seq`) counts for its own day.  Vectorized.

    >>> import numpy as np, posfast
    >>> rows = np.zeros(2, posfast.RECORD_DTYPE)
    >>> rows["seq"] = rows["txn_id"] = 5; rows["seq"][1] = 6
    >>> rows["kind"] = 1; rows["state"] = [1, 2]; rows["amount"] = 900; rows["day"] = 20777
    >>> txns, positions = payment_transactions(rows, 20777)
    >>> txns[["txn_id", "first_seq", "final_seq", "state"]].tolist(), positions.tolist()
    ([(5, 5, 6, 2)], [0, 1])
    """
    kind, txn = rows["kind"], rows["txn_id"]
    pay = np.flatnonzero(np.isin(kind, PAYMENT_KIND_VALUES) & ((rows["flags"] & _TRAINING) == 0))
    ptxn, pseq = txn[pay], rows["seq"][pay]
    ids = ptxn[(rows["day"][pay] == day) & ((pseq == ptxn) | (ptxn < oldest_seq))]
    # (every payment record one of the day's payments, in txn order: a day of single-record
    # payments, as a statement's day often is; no million-row isin or sort)
    every = len(ids) == len(ptxn)
    positions = pay if every else pay[np.isin(ptxn, ids)]
    del pseq
    if not len(positions):
        return np.zeros(0, TXN_DTYPE), positions
    mine = ptxn if every else txn[positions]
    del ptxn
    if len(mine) < 2 or bool((mine[1:] >= mine[:-1]).all()):
        grouped, tid = positions, mine               # seq order within a payment already
    else:
        order = np.argsort(mine, kind="stable")      # seq order within a payment
        grouped, tid = positions[order], mine[order]
        del order
    cut = np.flatnonzero(tid[1:] != tid[:-1]) + 1
    if len(cut) == len(grouped) - 1:                 # one record each: first and last alike
        first = last = grouped
        out = np.zeros(len(grouped), TXN_DTYPE)
        out["txn_id"] = tid
        out["records"] = 1
    else:
        first_idx = np.concatenate(([0], cut))
        last_idx = np.concatenate((cut - 1, [len(grouped) - 1]))
        first, last = grouped[first_idx], grouped[last_idx]
        out = np.zeros(len(first_idx), TXN_DTYPE)
        out["txn_id"] = tid[first_idx]
        out["records"] = np.diff(np.append(first_idx, len(grouped)))
        del first_idx, last_idx
    del cut, tid
    pick_first: Any = first
    pick_last: Any = last
    if first is last and len(first) == len(rows) and bool((first[1:] > first[:-1]).all()):
        pick_first = pick_last = slice(None)         # every record once, in order: as they are
    out["first_seq"] = rows["seq"][pick_first]
    out["final_seq"] = rows["seq"][pick_last]
    for name in ("terminal", "ts", "kind", "flags", "receipt_no", "ref_seq", "day", "client_ref"):
        out[name] = rows[name][pick_first]
    for name in ("amount", "currency", "state", "method", "rrn", "auth_code"):
        out[name] = rows[name][pick_last]
    out["first_amount"] = rows["amount"][pick_first]
    return out, positions


def _groups(columns, amount):
    """[(key values..., count, sum)] grouped by the integer columns; int64 sums."""
    n = len(amount)
    if not n:
        return []
    key = np.zeros(n, dtype=np.int64)
    for col, width in columns:
        key = key * (1 << width) + col.astype(np.int64)
    order = np.argsort(key, kind="stable")
    k = key[order]
    starts = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
    counts = np.diff(np.append(starts, n))
    sums = np.add.reduceat(amount[order].astype(np.int64), starts)
    cols = [col[order][starts].tolist() for col, _ in columns]
    return [tuple(int(v) for v in values) + (int(c), int(s))
            for *values, c, s in zip(*cols, counts.tolist(), sums.tolist())]


def _digest(records: np.ndarray) -> str:
    # the core's SHA-256 (hashlib would load libcrypto, 3 MB resident, into every terminal)
    parts = [len(records).to_bytes(8, "little")]
    parts += [np.ascontiguousarray(records[name]).tobytes() for name in _DIGEST_FIELDS]
    return _core.sha256(b"".join(parts)).hex()[:32]


def _net(txns_cube) -> dict:
    """{currency: (net, absolute)} of the approved payments of a txns cube."""
    out: dict = {}
    for kind, state, _method, currency, _count, amount in txns_cube:
        if state != State.APPROVED:
            continue
        sign = int(KIND_SIGN_TABLE[kind])
        net, absolute = out.get(currency, (0, 0))
        out[currency] = (net + sign * amount, absolute + abs(sign) * abs(amount))
    return out


def day_summary(rows: np.ndarray, day: int, oldest_seq: int = 1, numbers: bool = True) -> dict:
    """Totals of the payments begun on `day` (see the module docstring for the shape).

    Returns a dict with ``txns`` and ``terminals`` (lists of tuples), ``records``
    ([first_seq, last_seq, count] of the records summarised), ``digest`` and
    ``in_doubt`` (txn ids whose newest state is PENDING), ``transactions`` (the
    TXN_DTYPE array).  ``numbers=False`` leaves ``txns`` and ``terminals`` empty
    (``close_day`` takes them from the journal's day totals, ``posfast.totals``).
    """
    txns, positions = payment_transactions(rows, day, oldest_seq)
    records = rows[positions]
    cube: list = []
    terminals: list = []
    if numbers:
        cube = _groups([(txns["kind"], 8), (txns["state"], 8), (txns["method"], 8),
                        (txns["currency"], 16)], txns["amount"])
        keys = [(txns["terminal"], 32), (txns["state"], 8), (txns["currency"], 16)]
        terminals = _groups(keys, txns["amount"])
        signed = _groups(keys, txns["amount"] * KIND_SIGN_TABLE[txns["kind"]])
        terminals = [row + (net[-1],) for row, net in zip(terminals, signed)]
    seqs = records["seq"]
    return {
        "txns": cube, "terminals": terminals,
        "records": [int(seqs.min()) if len(seqs) else 0, int(seqs.max()) if len(seqs) else 0,
                    int(len(seqs))],
        "digest": _digest(records),
        "in_doubt": txns["txn_id"][txns["state"] == State.PENDING].tolist(),
        "transactions": txns,
    }


# ---------------------------------------------------------------- the record
@dataclass
class DayClose:
    """A DAY_CLOSE record, decoded: the Z-report of one business day and scope."""
    seq: int
    ts: int
    day: _dt.date
    terminal: Optional[int]          # None: every terminal
    z_no: int
    txns: list                       # (kind, state, method, currency, count, amount)
    terminals: list                  # (terminal, state, currency, count, amount, net)
    grand: dict                      # currency -> (gross, absolute), never reset
    records: tuple                   # (first_seq, last_seq, count) summarised
    digest: str
    scan: tuple                      # (first day, last day) read, as day numbers
    prev_seq: int = 0
    in_doubt: list = field(default_factory=list)
    forced: bool = False
    operator: int = 0
    #: seqs of payments with an impossible time (no business day) this forced close left out
    bad_time: list = field(default_factory=list)

    @classmethod
    def from_payload(cls, seq, ts, payload: bytes, operator: int = 0) -> "DayClose":
        try:
            doc = json.loads(payload.decode("utf-8"))
            return cls(
                seq=int(seq), ts=int(ts), day=_dt.date.fromisoformat(doc["day"]),
                terminal=doc["scope"], z_no=int(doc["z"]),
                txns=[tuple(int(v) for v in row) for row in doc["txns"]],
                terminals=[tuple(int(v) for v in row) for row in doc["terminals"]],
                grand={int(c): (int(g), int(a)) for c, g, a in doc["grand"]},
                records=tuple(int(v) for v in doc["records"]), digest=str(doc["digest"]),
                scan=tuple(int(v) for v in doc["scan"]), prev_seq=int(doc.get("prev", 0)),
                in_doubt=[int(t) for t in doc.get("in_doubt", [])],
                forced=bool(doc.get("forced", False)), operator=int(operator),
                bad_time=[int(t) for t in doc.get("bad_time", [])])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise InvalidRecord("posfast: DAY_CLOSE seq %d has an unreadable payload (%s: %s)"
                                % (seq, type(exc).__name__, exc)) from None

    @classmethod
    def from_record(cls, rec) -> "DayClose":
        return cls.from_payload(rec.seq, rec.ts, rec.payload, rec.operator)

    def payload(self) -> bytes:
        doc = {"v": 1, "day": self.day.isoformat(), "scope": self.terminal, "z": self.z_no,
               "records": list(self.records), "scan": list(self.scan), "digest": self.digest,
               "txns": [list(r) for r in self.txns], "terminals": [list(r) for r in self.terminals],
               "grand": [[c, g, a] for c, (g, a) in sorted(self.grand.items())],
               "prev": self.prev_seq, "in_doubt": self.in_doubt, "forced": self.forced}
        if self.bad_time:
            doc["bad_time"] = self.bad_time
        return json.dumps(doc, separators=(",", ":")).encode("utf-8")

    # ------------------------------------------------------------ views
    @property
    def day_number(self) -> int:
        return day_number(self.day)

    @property
    def currencies(self) -> list:
        return sorted({row[3] for row in self.txns} | set(self.grand))

    def day_totals(self) -> dict:
        """{currency: (net, absolute)} of the day's approved payments."""
        return _net(self.txns)

    def net(self, currency: int) -> int:
        """Net turnover of the day in `currency`: approved sales and completions minus
        refunds, voids and reversals."""
        return self.day_totals().get(int(currency), (0, 0))[0]

    def by(self, dimension: str, currency: int, state=State.APPROVED) -> dict:
        """{kind|method|state|terminal value: (count, amount)} in one currency.

        `state` filters (None for every state); amounts are as recorded
        (unsigned), except by terminal, where they are net (signed).
        """
        out: dict = {}
        if dimension == "terminal":
            for terminal, st, cur, count, _amount, net in self.terminals:
                if cur == currency and (state is None or st == state):
                    c, a = out.get(terminal, (0, 0))
                    out[terminal] = (c + count, a + net)
            return out
        position = {"kind": 0, "state": 1, "method": 2}[dimension]
        for row in self.txns:
            if row[3] != currency or (state is not None and row[1] != state):
                continue
            c, a = out.get(row[position], (0, 0))
            out[row[position]] = (c + row[4], a + row[5])
        return out

    def to_dict(self) -> dict:
        def name(enum_cls, value):
            try:
                return enum_cls(value).name.lower()
            except ValueError:
                return str(value)
        return {
            "seq": self.seq, "day": self.day.isoformat(), "terminal": self.terminal,
            "z_no": self.z_no,
            "closed_at": format_ts(self.ts),
            "records": {"first_seq": self.records[0], "last_seq": self.records[1],
                        "count": self.records[2]},
            "transactions": [{"kind": name(Kind, k), "state": name(State, s),
                              "method": name(Method, m), "currency": c, "count": n, "amount": a}
                             for k, s, m, c, n, a in self.txns],
            "terminals": [{"terminal": t, "state": name(State, s), "currency": c, "count": n,
                           "amount": a, "net": net} for t, s, c, n, a, net in self.terminals],
            "day_totals": {str(c): {"net": n, "absolute": a}
                           for c, (n, a) in sorted(self.day_totals().items())},
            "grand_totals": {str(c): {"gross": g, "absolute": a}
                             for c, (g, a) in sorted(self.grand.items())},
            "previous_close_seq": self.prev_seq, "in_doubt": self.in_doubt, "forced": self.forced,
            "impossible_time_left_out": self.bad_time,
            "digest": self.digest,
        }


def _add_totals(before: dict, day: dict) -> dict:
    out = dict(before)
    for currency, (net, absolute) in day.items():
        gross, total = out.get(currency, (0, 0))
        out[currency] = (gross + net, total + absolute)
    return out


# ---------------------------------------------------------------- the journal side
class DayBook:
    """The day closes (Z-reports) of one journal and their verification (see module
    docstring); the `Journal` composes one and offers its methods (``j.close_day(...)``).
    It sees the journal only through a `Storage`."""

    def __init__(self, store: Storage):
        self._store = store

    def day_closes(self, terminal=None, every_scope=False) -> list:
        """Live DAY_CLOSE records of a scope (one terminal, or None for every terminal),
        decoded, oldest first.  ``every_scope=True`` returns all of them."""
        rows = self._store.query(kind=Kind.DAY_CLOSE)
        out = []
        payloads = self._store.payloads(rows["seq"]) if len(rows) else []
        for row, payload in zip(rows, payloads):
            try:
                close = DayClose.from_payload(int(row["seq"]), int(row["ts"]), payload,
                                              int(row["operator"]))
            except InvalidRecord:
                continue     # verify() reports it
            if every_scope or close.terminal == (None if terminal is None else int(terminal)):
                out.append(close)
        return out

    def day_close(self, day, terminal=None) -> Optional[DayClose]:
        """The Z-report of a business day and scope, or None if it was not closed."""
        wanted = day_number(day)
        for close in self.day_closes(terminal):
            if close.day_number == wanted:
                return close
        return None

    def _day_summary(self, day: int, scan_to: int, terminal, upto_seq: int,
                     from_records: bool = True, numbers: bool = True) -> dict:
        # A Z-report is permanent: its records and digest are read from the records themselves,
        # never found by the index (verify, which has just checked the index against every
        # record, may use it)
        days = list(range(day, scan_to + 1))
        rows = (self._store.records_where(days, terminal) if from_records
                else self._store.query(day=days, terminal=terminal))
        rows = rows[rows["seq"] <= upto_seq]
        return day_summary(rows, day, self._store.oldest_seq, numbers=numbers)

    def close_day(self, day, terminal=None, force=False, operator=0, catch_up=False) -> DayClose:
        """Close a business day: write its Z-report as a DAY_CLOSE record and return it.

        `terminal` closes one terminal's day (None: every terminal).  A day is
        closed once per scope, in order; a day with payments still in doubt is
        refused (:class:`posfast.errors.DayClosed`) unless ``force=True``, which
        records their txn ids in the close.  Training payments are left out.
        With ``catch_up=True`` the days before `day` that hold payments and were
        never closed (since the scope's last close) are closed first, oldest first,
        each with its own Z-report: a skipped day is not lost once a later one closes.

        >>> z = j.close_day("2026-11-20")                            # doctest: +SKIP
        >>> z.net(156), z.grand[156]                                 # doctest: +SKIP
        (1184250, (83120500, 84011250))
        """
        wanted = day_number(day)
        scope = None if terminal is None else int(terminal)
        where = "terminal %d" % scope if scope is not None else "every terminal"
        with self._store.lock:
            self._store.check_writable("close a day")
            if catch_up:
                for skipped in self._skipped_days(wanted, scope):
                    self.close_day(skipped, terminal=scope, force=force, operator=operator)
            closes = self.day_closes(scope)
            for close in closes:
                if close.day_number == wanted:
                    raise DayClosed(
                        "posfast: business day %s of %s is already closed in %s (Z-report %d, "
                        "DAY_CLOSE seq %d); a day closes once: reprint that Z-report instead"
                        % (day_to_date(wanted), where, self._store.path, close.z_no, close.seq))
            later = [c for c in closes if c.day_number > wanted]
            if later:
                raise DayClosed(
                    "posfast: business day %s of %s cannot be closed after day %s (DAY_CLOSE seq "
                    "%d): days close in order and the grand totals only move forward"
                    % (day_to_date(wanted), where, later[-1].day, later[-1].seq))
            today = self._store.day_rule.day_number(now_us())
            if wanted > today:
                raise DayClosed("posfast: business day %s has not begun yet (today is %s by %s)"
                                % (day_to_date(wanted), day_to_date(today),
                                   self._store.day_rule.describe()))
            scan_to = max(wanted + 1, today)
            upto = self._store.head_seq
            # the numbers: the journal's day totals, kept as the records were appended (the same
            # fold of one payment per txn_id); None when part of the day is only in the archive
            totals = self._store.day_totals(wanted, scope)
            if totals is not None:
                scan_to = max(scan_to, totals.last_day)     # an outcome dated later than the scan
            summary = self._day_summary(wanted, scan_to, scope, upto, numbers=totals is None)
            if totals is not None:
                txns, terminals = totals.txns, totals.terminals
                in_doubt = self._store.in_doubt_of_day(wanted, scope)
                # the first seq is the totals' own: below the oldest live seq when the ring has
                # overwritten part of the day since (verify then does not compare the close)
                records = (totals.first_seq, upto, totals.records)
            else:
                txns, terminals, in_doubt = summary["txns"], summary["terminals"], summary["in_doubt"]
                records = (summary["records"][0], upto, summary["records"][2])
            if in_doubt and not force:
                shown = ", ".join(str(t) for t in in_doubt[:10])
                raise DayClosed(
                    "posfast: business day %s of %s has %d payment(s) in doubt (txn %s%s); "
                    "resolve them with the host first (`posfast in-doubt %s`), or close with "
                    "force=True / --force to record them as in doubt"
                    % (day_to_date(wanted), where, len(in_doubt), shown,
                       ", ..." if len(in_doubt) > 10 else "", self._store.path))
            prev = closes[-1] if closes else None
            bad_time = self._impossible_time_payments(scope, prev.records[1] if prev else 0)
            if bad_time and not force:
                shown = ", ".join("seq %d (%s %s, ts=%d)" % (seq, kind, amount, ts)
                                  for seq, kind, amount, ts in bad_time[:5])
                raise DayClosed(
                    "posfast: %d payment(s) of %s have an impossible time, so no business day "
                    "holds them and this close would leave them out: %s%s. They were written "
                    "by an older posfast or with a wrong clock; check them with `posfast show "
                    "%s SEQ`, then close with force=True / --force to record them in this "
                    "Z-report as left out" % (len(bad_time), where, shown,
                                              ", ..." if len(bad_time) > 5 else "", self._store.path))
            day_totals = _net(txns)
            close = DayClose(
                seq=0, ts=now_us(), day=day_to_date(wanted), terminal=scope,
                z_no=(prev.z_no + 1) if prev else 1, txns=txns, terminals=terminals,
                grand=_add_totals(prev.grand if prev else {}, day_totals),
                records=records,
                digest=summary["digest"], scan=(wanted, scan_to),
                prev_seq=prev.seq if prev else 0, in_doubt=in_doubt,
                forced=bool(in_doubt) or bool(bad_time), operator=int(operator),
                bad_time=[seq for seq, _k, _a, _t in bad_time])
            payload = close.payload()
            if len(payload) > self._store.max_payload:
                raise DayClosed(
                    "posfast: the Z-report of %s needs %d bytes but %s holds at most %d per record "
                    "(max_payload); close each terminal separately (terminal=N)"
                    % (day_to_date(wanted), len(payload), self._store.path, self._store.max_payload))
            currencies = sorted(day_totals)
            close.seq = self._store.append(
                payload=payload, ts=close.ts, terminal=scope or 0, kind=Kind.DAY_CLOSE,
                state=State.OK, amount=day_totals[currencies[0]][0] if len(currencies) == 1 else 0,
                currency=currencies[0] if len(currencies) == 1 else 0, ref_seq=close.prev_seq,
                receipt_no=close.z_no, operator=int(operator),
                flags=int(Flag.FORCED) if close.forced else 0)
            return close

    def _skipped_days(self, wanted: int, scope) -> list:
        """Days before `wanted` and after the scope's last close that hold live payments (of
        that terminal, for a terminal's scope), oldest first: what ``catch_up`` closes."""
        closes = self.day_closes(scope)
        after = closes[-1].day_number if closes else None
        lo = self._store.day_rule.day_number(TS_MIN_US)
        days = sorted(d for d in list(self._store.index.by_day)
                      if lo <= d < wanted and (after is None or d > after))
        out = []
        for d in days:
            rows = self._store.query(day=d, terminal=scope)
            if np.isin(rows["kind"], PAYMENT_KIND_VALUES).any():
                out.append(d)
        return out

    def _impossible_time_payments(self, scope, after_seq: int) -> list:
        """[(seq, kind, amount, ts)] of live payments newer than `after_seq` whose time is
        impossible (before 2000-01-01 or more than a day ahead of the clock): their
        business day is not one a close will ever cover.  Found from the index's days."""
        lo = self._store.day_rule.day_number(TS_MIN_US)
        hi_us = now_us() + TS_FUTURE_US
        hi = self._store.day_rule.day_number(hi_us)
        days = [d for d in list(self._store.index.by_day) if d < lo or d > hi]
        if not days:
            return []
        rows = self._store.query(day=days, terminal=scope)
        rows = rows[np.isin(rows["kind"], PAYMENT_KIND_VALUES) & ((rows["flags"] & _TRAINING) == 0)
                    & (rows["seq"] > after_seq)
                    & ((rows["ts"] < TS_MIN_US) | (rows["ts"] > hi_us))]
        return [(int(r["seq"]), Kind(int(r["kind"])).name.lower(), int(r["amount"]), int(r["ts"]))
                for r in rows]

    def verify_into(self, report, index_checked=False) -> None:
        """Add to a VerifyReport what no longer matches in the DAY_CLOSE records: totals
        against the live records they summarise, and the grand totals' continuity."""
        store = self._store
        rows = self._store.query(kind=Kind.DAY_CLOSE)
        if not len(rows):
            return
        payloads = self._store.payloads(rows["seq"])

        def slot(seq):
            try:
                return store.slot_of(seq)
            except KeyError:
                return None

        scopes: dict = {}
        for row, payload in zip(rows, payloads):
            seq = int(row["seq"])
            try:
                close = DayClose.from_payload(seq, int(row["ts"]), payload, int(row["operator"]))
            except InvalidRecord as exc:
                report.problems.append(Problem(seq, slot(seq), str(exc).replace("posfast: ", ""),
                                               CLOSE_UNREADABLE))
                continue
            scopes.setdefault(close.terminal, []).append(close)
            first, upto, count = close.records
            if count and first < self._store.oldest_seq:
                continue       # part of the day was evicted: nothing left to compare with
            what = "day close of %s (%s, Z-report %d)" % (
                close.day, "terminal %d" % close.terminal if close.terminal is not None
                else "every terminal", close.z_no)
            now = self._day_summary(close.scan[0], close.scan[1], close.terminal, upto,
                                    from_records=not index_checked)
            changes = []
            if now["txns"] != close.txns or now["terminals"] != close.terminals:
                before, after = _net(close.txns), _net(now["txns"])
                for currency in sorted(set(before) | set(after)):
                    if before.get(currency) != after.get(currency):
                        changes.append("net %s was %d, the records now give %d" % (
                            currency, before.get(currency, (0, 0))[0],
                            after.get(currency, (0, 0))[0]))
                if not changes:
                    changes.append("the totals by kind, state, method or terminal differ")
            if now["records"][2] != count:
                changes.append("%d payment records summarised, %d now" % (count, now["records"][2]))
            if now["digest"] != close.digest and not changes:
                changes.append("a summarised record changed (the digest differs)")
            elif now["digest"] != close.digest:
                changes.append("the records' digest differs")
            if changes:
                report.problems.append(Problem(
                    seq, slot(seq), "%s no longer matches the records it summarises (seq %d..%d): "
                    "%s; history was edited after the close" % (what, first, upto,
                                                                 "; ".join(changes)),
                    CLOSE_MISMATCH))
        for scope, closes in scopes.items():
            previous = None
            for close in closes:
                where = "day close seq %d (%s, %s)" % (
                    close.seq, close.day,
                    "terminal %d" % scope if scope is not None else "every terminal")
                if previous is None:
                    if close.prev_seq and close.prev_seq >= self._store.oldest_seq:
                        report.problems.append(Problem(
                            close.seq, slot(close.seq), "%s names seq %d as the previous close, "
                            "which is not a live close of this scope" % (where, close.prev_seq),
                            GRAND_TOTAL_BREAK))
                    elif not close.prev_seq:
                        expected = _add_totals({}, close.day_totals())
                        if close.grand != expected or close.z_no != 1:
                            report.problems.append(Problem(
                                close.seq, slot(close.seq), "%s is the first close but its grand "
                                "totals %s are not its day's totals %s" % (
                                    where, _fmt_grand(close.grand), _fmt_grand(expected)),
                                GRAND_TOTAL_BREAK))
                else:
                    expected = _add_totals(previous.grand, close.day_totals())
                    if close.prev_seq != previous.seq:
                        report.problems.append(Problem(
                            close.seq, slot(close.seq), "%s names seq %d as the previous close, "
                            "the journal holds seq %d" % (where, close.prev_seq, previous.seq),
                            GRAND_TOTAL_BREAK))
                    elif close.grand != expected or close.z_no != previous.z_no + 1:
                        report.problems.append(Problem(
                            close.seq, slot(close.seq), "%s: grand totals %s (Z %d) do not continue "
                            "from seq %d: %s + the day = %s (Z %d)" % (
                                where, _fmt_grand(close.grand), close.z_no, previous.seq,
                                _fmt_grand(previous.grand), _fmt_grand(expected),
                                previous.z_no + 1), GRAND_TOTAL_BREAK))
                previous = close


def _fmt_grand(grand: dict) -> str:
    return "{%s}" % ", ".join("%d: gross %d absolute %d" % (c, g, a)
                              for c, (g, a) in sorted(grand.items()))


