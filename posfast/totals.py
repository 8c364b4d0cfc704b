"""Day totals kept as records are appended: what ``Journal.totals(day, terminal)``
answers with dict lookups, and what ``close_day`` writes into the Z-report.

The numbers are those of the fold in ``posfast.dayclose.payment_transactions``
(one payment per txn_id):

* a payment is the non-training payment-kind records sharing a ``txn_id``; it
  begins with the record whose seq is that txn_id and belongs to that record's
  business day, terminal and kind;
* its state, method, currency and amount are those of its newest record
  (``finish_payment`` / ``resolve`` append one more record of the same txn_id);
  a void, refund or reversal is a payment of its own (its kind's sign, -1), and
  its ``ref_seq`` changes nothing in the payment it names;
* an outcome dated before its payment's business day is not folded (the day's
  scan starts at the day), one dated later is (``close_day`` widens its scan to
  it: ``Totals.last_day``);
* a record whose payment's first record is no longer in the ring (txn_id below
  the oldest live seq when the record is folded) counts for its own day, as the
  fold counts it.

:class:`DayTotals` keeps, per business day and per (business day, terminal),
the counts and sums per currency: by state, kind, method and terminal, and the
Z-report's two tables (kind x state x method, terminal x state).  A payment
whose numbers can still move is remembered (its records, a few tuples): the
PENDING ones (the next record of their txn_id moves them from PENDING to their
outcome), and those whose records fall on more than one business day while
their first record is live (the fold moves them to their outcome's day once the
ring evicts that first record).  Everything else is forgotten once folded: a
record that changes a payment no longer remembered (a raw ``append`` with the
txn_id of a finished payment) is placed by reading that payment's records back
through ``lookup`` (rare; never on the paths of the payment API).

Eviction: a day's totals are kept while any record folded into them is live,
and dropped with the last of them.  So the Z-report of a day whose oldest
records the ring has already overwritten still shows the whole day, as the
totals saw it (``close_day`` marks it, ``records[0]`` below the oldest seq, and
``verify`` does not compare it); a rebuild from the ring (at open) sees only
what is live.

Where the totals and a fold of the live records part (none of it on the paths of
the payment API): a day the ring partly overwrote after the totals folded it
(above); an outcome appended raw for a PENDING payment whose first record the
ring already dropped (the totals move it within its first record's day, the fold
counts it for the outcome's day); a record naming a txn_id above its own seq
(not folded: the fold would make it the first record of the payment begun later
with that seq); the records of one payment on several terminals or kinds (the
first record's everywhere, also in one terminal's totals); an outcome dated
after ``close_day``'s scan (counted; the close widens its scan).  The journal
builds the totals from the ring: with retention "archive", ``close_day`` of a
day with payment records archived before that computes from the records.

>>> import posfast, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "till.pfj")
>>> with posfast.Journal.create(path, capacity=1024) as j:
...     txn = j.begin_payment(terminal=3, amount=1250, currency=156, ts=1795140000_000000)
...     seq = j.finish_payment(txn, "approved")
...     seq = j.append(terminal=3, kind="refund", state="approved", amount=250, currency=156,
...                    method="card", ref_seq=txn, ts=1795140060_000000)
...     t = j.totals("2026-11-20")
>>> t[156].count, t[156].amount, t[156].net
(2, 1500, 1000)
>>> t[156].by_kind
{'sale': Sum(count=1, amount=1250, net=1250), 'refund': Sum(count=1, amount=250, net=-250)}
"""
from __future__ import annotations

import datetime as _dt
import heapq
import math
import struct
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .records import (IS_PAYMENT_KIND, KIND_SIGN_TABLE, RECORD_DTYPE, Flag, Kind, Method, State,
                      day_to_date)

__all__ = ["DayTotals", "Totals", "CurrencyTotals", "Sum", "FrozenDict"]

_TRAINING = int(Flag.TRAINING)
_PENDING = int(State.PENDING)
_APPROVED = int(State.APPROVED)
_IS_PAY = tuple(bool(v) for v in IS_PAYMENT_KIND)
_SIGN = tuple(int(v) for v in KIND_SIGN_TABLE)
_NO_SEQ = 1 << 64
_NO_DAY = -(1 << 31)


def _names(enum_cls) -> Tuple[str, ...]:
    out = [str(v) for v in range(256)]
    for member in enum_cls:
        out[int(member)] = member.name.lower()
    return tuple(out)


_STATE_NAMES, _KIND_NAMES, _METHOD_NAMES = _names(State), _names(Kind), _names(Method)

# A record as the totals remember it: (seq, day, terminal, kind, state, method, currency, amount)
Rec = Tuple[int, int, int, int, int, int, int, int]
# What one payment adds to one day: (day, terminal, kind, state, method, currency, amount,
# records folded, first seq, last seq, last day)
Contribution = Tuple[int, int, int, int, int, int, int, int, int, int, int]
#: ``lookup(wanted, before)``: {txn_id: [Rec, ...]} of the live payment records of those txn
#: ids with seq below `before` (`wanted` maps each txn id to terminals that may hold them)
Lookup = Callable[[Dict[int, set], int], Dict[int, List[Rec]]]


# ---------------------------------------------------------------- what totals() returns
class Sum(NamedTuple):
    """Payments of one group: how many, their amounts as recorded (unsigned), and their
    net (the amounts signed by kind, approved payments only)."""
    count: int          # type: ignore[assignment]   # (a field, over tuple.count)
    amount: int
    net: int


class FrozenDict(dict):
    """A dict that refuses changes: ``totals()`` hands out one cached object per day until
    the day changes.  ``dict(t)`` is a copy you may change."""
    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("posfast: totals are read-only; copy them with dict(...) to change them")

    __setitem__ = __delitem__ = _refuse                        # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _refuse      # type: ignore[assignment]
    __ior__ = _refuse                                          # type: ignore[assignment]

    def __reduce__(self):
        return (self.__class__, (dict(self),))

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


class CurrencyTotals(NamedTuple):
    """One currency's payments of a day (and scope): ``count``, ``amount`` (unsigned sum),
    ``net`` (sales and completions minus refunds, voids and reversals, approved only; the
    Z-report's net) and the same three numbers by final state, kind and method (lower-case
    names: ``by_state["approved"]``) and by terminal (its number)."""
    count: int          # type: ignore[assignment]   # (a field, over tuple.count)
    amount: int
    net: int
    by_state: Mapping[str, Sum]
    by_kind: Mapping[str, Sum]
    by_method: Mapping[str, Sum]
    by_terminal: Mapping[int, Sum]


class Totals(FrozenDict):
    """``{currency: CurrencyTotals}`` of one business day and scope, read-only, currencies in
    ascending order; ``day`` (a day number; ``date`` the date) and ``terminal`` (None: every
    terminal) say which.  ``txns`` and ``terminals`` are the Z-report's two tables,
    ``records`` the payment records folded and ``first_seq`` the oldest of them, ``last_day``
    the latest business day among them.  Compares equal to a plain dict of the same content.
    """
    __slots__ = ("day", "terminal", "first_seq", "records", "last_day", "_cube", "_term")
    day: int
    terminal: Optional[int]
    first_seq: int
    records: int
    last_day: int
    _cube: Dict[int, dict]
    _term: Dict[int, dict]

    def __reduce__(self):
        return (_rebuild_totals, (dict(self), self.day, self.terminal, self.first_seq,
                                  self.records, self.last_day, self._cube, self._term))

    @property
    def date(self) -> _dt.date:
        return day_to_date(self.day)

    @property
    def txns(self) -> list:
        """[(kind, state, method, currency, count, amount)], sorted: the Z-report's ``txns``."""
        return sorted((kind, state, method, currency, n, amount)
                      for currency, cube in self._cube.items()
                      for (kind, state, method), (n, amount) in cube.items())

    @property
    def terminals(self) -> list:
        """[(terminal, state, currency, count, amount, signed)], sorted: the Z-report's
        ``terminals`` (``signed``: the amounts with their kind's sign, whatever the state)."""
        return sorted((terminal, state, currency, n, amount, signed)
                      for currency, term in self._term.items()
                      for (terminal, state), (n, amount, signed) in term.items())

    def net(self, currency: int) -> int:
        """Net turnover in `currency` (0 if the day has none)."""
        cur = self.get(int(currency))
        return cur.net if cur is not None else 0

    def as_dict(self) -> dict:
        """Plain nested dicts and lists (JSON-friendly)."""
        return {currency: {"count": c.count, "amount": c.amount, "net": c.net,
                           **{name: {key: s._asdict() for key, s in getattr(c, name).items()}
                              for name in ("by_state", "by_kind", "by_method", "by_terminal")}}
                for currency, c in self.items()}

    def __repr__(self):
        return "Totals(day=%s, terminal=%r, %s)" % (
            self.date.isoformat() if -700_000 < self.day < 2_900_000 else self.day,
            self.terminal, dict.__repr__(self))


def _rebuild_totals(content, day, terminal, first_seq, records, last_day, cube, term):
    out = Totals(content)
    out.day, out.terminal, out.first_seq, out.records, out.last_day = (
        day, terminal, first_seq, records, last_day)
    out._cube, out._term = cube, term
    return out


# ---------------------------------------------------------------- the fold of one payment
def fold(txn: int, recs: List[Rec], oldest: int) -> List[Contribution]:
    """What payment `txn` adds to the days, from its records `recs` (seq order), by the rules
    of ``payment_transactions``: one contribution to its first record's day, or, with its first
    record gone (`txn` below `oldest`), one to each day holding one of its records."""
    if not recs:
        return []
    for r in recs:
        if r[0] == txn:
            day = r[1]
            group = [g for g in recs if g[0] >= txn and g[1] >= day]
            last = group[-1]
            return [(day, r[2], r[3], last[4], last[5], last[6], last[7], len(group), txn,
                     last[0], max(g[1] for g in group))]
    if txn >= oldest:
        return []       # no payment began with this seq (a print, a training payment ...)
    out = []
    for day in sorted({r[1] for r in recs}):
        group = [g for g in recs if g[1] >= day]
        first, last = group[0], group[-1]
        out.append((day, first[2], first[3], last[4], last[5], last[6], last[7], len(group),
                    first[0], last[0], max(g[1] for g in group)))
    return out


def _bump(d: dict, key, count: int, amount: int, net: int) -> None:
    # (a sum goes when all of it is zero: a payment moved before the cells it is counted in
    # were summed -- totals loaded from the index -- passes through a count of 0 with an
    # amount or net that is not)
    s = d.get(key)
    if s is None:
        d[key] = (count, amount, net)
        return
    n, a, t = s[0] + count, s[1] + amount, s[2] + net
    if n or a or t:
        d[key] = (n, a, t)
    else:
        del d[key]


def _bump2(d: dict, key, count: int, amount: int) -> None:
    s = d.get(key)
    if s is None:
        d[key] = (count, amount)
        return
    n, a = s[0] + count, s[1] + amount
    if n or a:
        d[key] = (n, a)
    else:
        del d[key]


class _Cur:
    """One currency of one scope (internal: int keys, tuple values)."""
    __slots__ = ("count", "amount", "net", "by_state", "by_kind", "by_method", "by_terminal",
                 "cube", "term")

    def __init__(self):
        self.count = self.amount = self.net = 0
        self.by_state: dict = {}
        self.by_kind: dict = {}
        self.by_method: dict = {}
        self.by_terminal: dict = {}
        self.cube: dict = {}        # (kind, state, method) -> (count, amount)
        self.term: dict = {}        # (terminal, state) -> (count, amount, signed)


class _Scope:
    """One business day, or one (business day, terminal)."""
    __slots__ = ("cur", "first_seq", "records", "last_seq", "last_day", "snap", "terminals")

    def __init__(self):
        self.cur: Dict[int, _Cur] = {}
        self.first_seq = _NO_SEQ
        self.records = 0
        self.last_seq = 0
        self.last_day = _NO_DAY
        self.snap: Optional[Totals] = None
        self.terminals: set = set()   # (the day's scope only) terminals with a scope


def _sums(d: dict, names) -> FrozenDict:
    return FrozenDict({names[k] if names is not None else k: tuple.__new__(Sum, v)
                       for k, v in sorted(d.items())})


_REC_FIELDS = ["seq", "day", "terminal", "kind", "state", "method", "currency", "amount"]


def _take(cols: Dict[str, np.ndarray], mask: np.ndarray) -> Dict[str, np.ndarray]:
    return {name: col[mask] for name, col in cols.items()}


def _tuples(cols: Dict[str, np.ndarray], mask: np.ndarray) -> List[tuple]:
    """(seq, day, terminal, kind, state, method, currency, amount, txn_id) of the masked rows:
    a Rec and its txn id, as Python ints."""
    return list(zip(*(cols[name][mask].tolist() for name in _REC_FIELDS + ["txn_id"])))

# blob layout (little-endian, packed)
# version, floor, upto, oldest, then how many scopes, cells, remembered records and dropped
# days follow (in that order: _SCOPE_DT, _CELL_DT and _REC_DT rows, then <i4 day numbers)
_BLOB_HEAD = struct.Struct("<BQQQIIII")
_SCOPE_DT = np.dtype([("day", "<i4"), ("terminal", "<u4"), ("first_seq", "<u8"),
                      ("records", "<i8"), ("last_seq", "<u8"), ("last_day", "<i4")])
_CELL_DT = np.dtype([("day", "<i4"), ("terminal", "<u4"), ("kind", "u1"), ("state", "u1"),
                     ("method", "u1"), ("currency", "<u2"), ("count", "<i8"), ("amount", "<i8")])
_REC_DT = np.dtype([("txn", "<u8"), ("seq", "<u8"), ("day", "<i4"), ("terminal", "<u4"),
                    ("kind", "u1"), ("state", "u1"), ("method", "u1"), ("currency", "<u2"),
                    ("amount", "<i8")])


# cells queued by a bulk append for `DayTotals._flush` (one business day's, per array)
_QUEUE_DT = np.dtype([("terminal", "<u4"), ("kind", "u1"), ("state", "u1"), ("method", "u1"),
                      ("currency", "<u2"), ("count", "<i8"), ("amount", "<i8")])
_QUEUE_FROM = 256     # groups in one append from which their cells are queued


def _group(cols):
    """(group id of each element, number of groups, index of each group's first element) of
    the elements of equal integer columns `cols`; no sort when the values' ranges are small."""
    n = len(cols[0])
    spans = []
    for col in cols:
        low, high = int(col.min()), int(col.max())
        if high > low:
            spans.append([high - low + 1, low, col])
    limit = max(4 * n, 1 << 20)
    # the widest columns, while the key space is too big, as dense codes of the values present
    # (currencies 156..978 are 3 codes, not 823); past 2**20 values, by sorting
    for entry in sorted(spans, key=lambda e: -e[0]):
        if math.prod(e[0] for e in spans) <= limit:     # Python ints: no overflow, any numpy
            break
        span, low, col = entry
        if span <= (1 << 20):
            # value - low in the column's own type, then an index: a terminal id past 2**31
            # does not fit a 32-bit CPU's intp, its offset from the lowest one does
            code = (col - col.dtype.type(low)).astype(np.intp)
            present = np.flatnonzero(np.bincount(code, minlength=span))
            table = np.zeros(span, dtype=np.int32)
            table[present] = np.arange(len(present), dtype=np.int32)
            entry[:] = [len(present), 0, table[code]]
        else:
            values, code = np.unique(col, return_inverse=True)
            entry[:] = [len(values), 0, code.ravel()]
    key = np.zeros(n, dtype=np.int64)
    size = 1
    for span, low, col in spans:
        if size * span >= (1 << 62):
            values, key = np.unique(key, return_inverse=True)
            key, size = key.astype(np.int64).ravel(), len(values)
        key *= span
        key += col
        if low:
            key -= low
        size *= span
    if size <= limit:
        key = key.astype(np.intp)           # < size: fits a 32-bit CPU's intp (bincount wants it)
        present = np.flatnonzero(np.bincount(key, minlength=size))
        table = np.zeros(size, dtype=np.int32)
        table[present] = np.arange(len(present), dtype=np.int32)
        gid = table[key]
        groups = len(present)
    else:
        present, gid = np.unique(key, return_inverse=True)
        gid, groups = gid.ravel(), len(present)
    # one element of each group (any: they share the columns); a repeated index keeps one
    rep = np.zeros(groups, dtype=np.intp)
    rep[gid] = np.arange(n, dtype=np.intp)
    return gid, groups, rep


def _grouped(day, terminal, kind, state, method, currency, amount, first, records=None,
             last_seq=None) -> Optional[tuple]:
    """One element per group of equal (day, terminal, kind, state, method, currency): those
    six, the count, the amounts' sum, records, the lowest first seq and the highest last."""
    if not len(day):
        return None
    gid, groups, rep = _group((day, terminal, kind, state, method, currency))
    count = np.bincount(gid, minlength=groups)
    sums = np.zeros(groups, dtype=np.int64)
    np.add.at(sums, gid, amount.astype(np.int64, copy=False))
    lo_seq = np.full(groups, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(lo_seq, gid, first)
    hi_seq = np.full(groups, -1, dtype=np.int64)
    np.maximum.at(hi_seq, gid, first if last_seq is None else last_seq)
    if records is None:
        nrec = count
    else:
        nrec = np.zeros(groups, dtype=np.int64)
        np.add.at(nrec, gid, records.astype(np.int64))
    return (day[rep], terminal[rep], kind[rep], state[rep], method[rep], currency[rep], count,
            sums, nrec, lo_seq, hi_seq)


# What the totals read of a record sits in four of its 8-byte words: amount, txn_id,
# day + terminal, and currency + kind + state + method + flags.  Reading (gathering) those
# four words, not nine fields, reads a bulk append's 104-byte rows far fewer times.
_WORDS_DT = np.dtype({"names": ["amount", "txn_id", "day_terminal", "money"],
                      "formats": ["<i8", "<u8", "<u8", "<u8"], "offsets": [16, 24, 40, 56],
                      "itemsize": RECORD_DTYPE.itemsize})
_FIELDS: Dict[str, Any] = dict(RECORD_DTYPE.fields or {})
assert [_FIELDS[f][1] for f in ("amount", "txn_id", "day", "terminal", "currency", "kind",
                                "state", "method", "flags")] == [16, 24, 40, 44, 56, 58, 59, 60, 61]


def _payment_cols(rows: np.ndarray) -> Optional[Dict[str, np.ndarray]]:
    """The columns of the payment rows (not training) among `rows`, or None.  Columns, not
    rows: a row is 104 bytes, and copying whole rows of a bulk append would cost more than the
    totals themselves."""
    n = len(rows)
    if rows.dtype != RECORD_DTYPE:
        rows = np.ascontiguousarray(rows, dtype=RECORD_DTYPE)
    words = rows.view(_WORDS_DT)
    money = np.ascontiguousarray(words["money"])
    octets = money.view(np.uint8).reshape(n, 8)
    keep = IS_PAYMENT_KIND[octets[:, 2]]
    flags = octets[:, 5]
    if flags.any():
        keep &= (flags & _TRAINING) == 0
    every = bool(keep.all())
    where = None if every else np.flatnonzero(keep)
    if where is not None and not len(where):
        return None
    s0 = int(rows["seq"][0])
    if int(rows["seq"][-1]) - s0 == n - 1:          # consecutive seqs (an append)
        seq = np.arange(n, dtype=np.uint64) if where is None else where.astype(np.uint64)
        seq += np.uint64(s0)
    else:
        seq = rows["seq"] if where is None else rows["seq"][where]
    if where is None:
        day_terminal = np.ascontiguousarray(words["day_terminal"])
        amount, txn = np.ascontiguousarray(words["amount"]), np.ascontiguousarray(words["txn_id"])
    else:
        money = money[where]
        day_terminal = words["day_terminal"][where]
        amount, txn = words["amount"][where], words["txn_id"][where]
    octets = money.view(np.uint8).reshape(-1, 8)
    return {"seq": seq, "day": day_terminal.view("<i4")[0::2],
            "terminal": day_terminal.view("<u4")[1::2], "kind": octets[:, 2],
            "state": octets[:, 3], "method": octets[:, 4], "currency": money.view("<u2")[0::4],
            "amount": amount, "txn_id": txn}


def _plan_begins(cols: Dict[str, np.ndarray]) -> Tuple[List[Rec], Optional[tuple]]:
    """(Recs of the PENDING ones, `_grouped` of all) of first records of new payments."""
    pending = cols["state"] == _PENDING
    recs = [r[:8] for r in _tuples(cols, pending)] if pending.any() else []
    return recs, _grouped(cols["day"], cols["terminal"], cols["kind"], cols["state"],
                          cols["method"], cols["currency"], cols["amount"],
                          cols["seq"].view(np.int64))        # (seqs are below 2**63)


def _plan_rows(rows: np.ndarray) -> tuple:
    """The numpy half of `DayTotals.add_rows`: reads `rows`, changes nothing."""
    upto = int(rows["seq"][-1]) if len(rows) else 0
    if len(rows) < 2:
        return ("rows", upto, rows)
    cols = _payment_cols(rows)
    if cols is None:
        return ("none", upto)
    if bool((cols["seq"] == cols["txn_id"]).all()):
        pending, grouped = _plan_begins(cols)
        return ("begins", upto, pending, grouped)
    return ("cols", upto, cols)


class DayTotals:
    """Payment totals per business day and terminal, kept current by `add_rows` (see the
    module docstring for the rules).  `Journal` feeds it every appended record and asks it
    through ``Journal.totals``; on its own:

    >>> import numpy as np, posfast
    >>> rows = np.zeros(3, posfast.RECORD_DTYPE)
    >>> rows["seq"] = [1, 2, 3]; rows["txn_id"] = [1, 2, 1]; rows["day"] = 20777
    >>> rows["kind"] = 1; rows["state"] = [1, 2, 2]; rows["amount"] = [900, 500, 900]
    >>> rows["currency"] = 156; rows["terminal"] = 4; rows["method"] = 2
    >>> book = DayTotals()
    >>> book.add_rows(rows[:2], oldest=1); book.totals(20777)[156].by_state
    {'pending': Sum(count=1, amount=900, net=0), 'approved': Sum(count=1, amount=500, net=500)}
    >>> book.add_rows(rows[2:], oldest=1); book.totals(20777, terminal=4)[156].net
    1400
    >>> DayTotals.from_bytes(book.to_bytes()).totals(20777) == book.totals(20777)
    True
    """

    VERSION = 1

    def __init__(self, lookup: Optional[Lookup] = None):
        self.lookup = lookup
        self.floor = 1              # oldest live seq when folding began (older ones unseen)
        self.upto = 0               # newest seq folded
        self.oldest = 1             # oldest live seq as last told (add_rows, note_oldest)
        self._scopes: Dict[Tuple[int, Optional[int]], _Scope] = {}
        # payments whose numbers can still move: txn -> its records (what they add to the days
        # is fold(txn, records, oldest): the same whenever asked, see _remember)
        self._open: Dict[int, Tuple[Rec, ...]] = {}
        self._spread: List[int] = []     # heap of txn ids remembered for spanning days
        self._spread_set: set = set()
        self._drop_at = _NO_SEQ          # no day's last record is older than this
        self._queued: Dict[int, List[np.ndarray]] = {}   # day -> cells not yet in its dicts
        self.dropped: set = set()        # days dropped with the last of their records

    # ------------------------------------------------------------ answers
    def totals(self, day: int, terminal: Optional[int] = None) -> Totals:
        """The `Totals` of business day `day` (a day number) and `terminal` (None: every
        terminal): a dict lookup while the day is unchanged."""
        if day in self._queued:
            self._flush(day)
        scope = self._scopes.get((day, terminal))
        if scope is None:
            return self._snapshot(_Scope(), day, terminal)
        snap = scope.snap
        if snap is None:
            snap = scope.snap = self._snapshot(scope, day, terminal)
        return snap

    def in_doubt(self, day: int, terminal: Optional[int] = None) -> List[int]:
        """txn ids of the day's payments (of `terminal`) whose newest state is PENDING."""
        return sorted(txn for txn, recs in self._open.items()
                      if any(c[0] == day and c[3] == _PENDING and
                             (terminal is None or c[1] == terminal)
                             for c in fold(txn, list(recs), self.oldest)))

    def days(self) -> List[int]:
        """Business days the totals hold, ascending."""
        return sorted(day for day, terminal in self._scopes if terminal is None)

    @property
    def remembered(self) -> int:
        """How many payments are remembered (PENDING ones, and those spanning days)."""
        return len(self._open)

    @staticmethod
    def _snapshot(scope: _Scope, day: int, terminal: Optional[int]) -> Totals:
        out = Totals({currency: tuple.__new__(CurrencyTotals, (
            cur.count, cur.amount, cur.net, _sums(cur.by_state, _STATE_NAMES),
            _sums(cur.by_kind, _KIND_NAMES), _sums(cur.by_method, _METHOD_NAMES),
            _sums(cur.by_terminal, None)))
            for currency, cur in sorted(scope.cur.items())})
        out.day, out.terminal, out.records = day, terminal, scope.records
        out.first_seq = scope.first_seq if scope.first_seq != _NO_SEQ else 0
        out.last_day = max(scope.last_day, day)
        out._cube = {currency: dict(cur.cube) for currency, cur in scope.cur.items()}
        out._term = {currency: dict(cur.term) for currency, cur in scope.cur.items()}
        return out

    # ------------------------------------------------------------ the sums
    def _add(self, day: int, terminal: int, kind: int, state: int, method: int, currency: int,
             count: int, amount: int, records: int, first: int, last: int, last_day: int) -> None:
        """Add `count` payments (negative: take them away) of one group to its two scopes."""
        signed = amount * _SIGN[kind]
        net = signed if state == _APPROVED else 0
        scopes = self._scopes
        for key in ((day, None), (day, terminal)):
            scope = scopes.get(key)
            if scope is None:
                scope = self._scope(key)
            scope.snap = None
            scope.records += records
            if count > 0:
                if first < scope.first_seq:
                    scope.first_seq = first
                if last > scope.last_seq:
                    scope.last_seq = last
                if last_day > scope.last_day:
                    scope.last_day = last_day
            cur = scope.cur.get(currency)
            if cur is None:
                cur = scope.cur[currency] = _Cur()
            cur.count += count
            cur.amount += amount
            cur.net += net
            _bump(cur.by_state, state, count, amount, net)
            _bump(cur.by_kind, kind, count, amount, net)
            _bump(cur.by_method, method, count, amount, net)
            _bump(cur.by_terminal, terminal, count, amount, net)
            _bump2(cur.cube, (kind, state, method), count, amount)
            _bump(cur.term, (terminal, state), count, amount, signed)
            if not cur.count and not cur.cube:
                del scope.cur[currency]

    def _put(self, c: Contribution, sign: int) -> None:
        self._add(c[0], c[1], c[2], c[3], c[4], c[5], sign, sign * c[6], sign * c[7],
                  c[8], c[9], c[10])

    def _move(self, txn: int, recs: List[Rec], before: Tuple[Contribution, ...]) -> None:
        """Payment `txn` now has records `recs`: move its numbers from `before` to their
        new place and decide whether to remember it."""
        after = tuple(fold(txn, recs, self.oldest))
        if after != before:
            for c in before:
                self._put(c, -1)
            for c in after:
                self._put(c, 1)
        self._remember(txn, recs, after)

    def _remember(self, txn: int, recs, contribs: Tuple[Contribution, ...]) -> None:
        pending = any(c[3] == _PENDING for c in contribs)
        spread = False
        if recs and recs[0][0] == txn and txn >= self.oldest:
            day = recs[0][1]
            spread = any(r[1] != day for r in recs)
        # (remembered: the records hold their first record, or the txn was below the oldest
        # seq already, so the fold of them gives these contributions whatever `oldest` becomes)
        if pending or spread:
            self._open[txn] = tuple(recs)
            if spread and txn not in self._spread_set:
                self._spread_set.add(txn)
                heapq.heappush(self._spread, txn)
        else:
            self._open.pop(txn, None)

    # ------------------------------------------------------------ feeding
    def add_rows(self, rows: np.ndarray, oldest: int, evict: bool = True) -> None:
        """Fold appended RECORD_DTYPE rows (seq set, ascending); `oldest` is the oldest live
        seq once they are written.  Vectorized for payments whose first record is in `rows`
        (the bulk case: final-state sales); one dict step per outcome of a remembered
        payment.  Then `note_oldest(oldest)` (``evict=False``: not; records read back from an
        archive, say)."""
        self._add_plan(_plan_rows(rows), oldest, evict)

    def _add_plan(self, plan: tuple, oldest: int, evict: bool = True) -> None:
        """Fold what `_plan_rows` made of the rows (that half changes nothing: it could run on
        another thread)."""
        what, upto = plan[0], plan[1]
        if oldest > self.oldest:
            self.oldest = oldest
        if upto > self.upto:
            self.upto = upto
        if what == "rows":
            self._fold_rows(plan[2])
        elif what == "begins":
            for r in plan[2]:
                self._open[r[0]] = (r,)
            self._apply_grouped(plan[3])
        elif what == "cols":
            self._fold_cols(plan[2])
        if evict:
            self.note_oldest(oldest)

    def add_one(self, values: Sequence, oldest: int) -> None:
        """`add_rows` of one appended record given as its RECORD_DTYPE values in order (a
        tuple or list, seq set): the single-append path, with no arrays."""
        seq = values[0]
        if oldest > self.oldest:
            self.oldest = oldest
        if seq > self.upto:
            self.upto = seq
        self._fold_one(values)
        self.note_oldest(oldest)

    def _fold_one(self, values: Sequence) -> None:
        (seq, _ts, amount, txn, _ref, day, terminal, _rno, _op, currency, kind, state,
         method, flags) = values[:14]
        if not _IS_PAY[kind] or flags & _TRAINING:
            return
        rec = (seq, day, terminal, kind, state, method, currency, amount)
        if seq == txn:
            c = (day, terminal, kind, state, method, currency, amount, 1, seq, seq, day)
            self._put(c, 1)
            if state == _PENDING:
                self._open[seq] = (rec,)
        elif txn < seq:
            self._outcomes({txn: [rec]}, seq)

    def _fold_rows(self, rows: np.ndarray) -> None:
        if len(rows) == 1:
            self._fold_one(rows[0].item())
            return
        cols = _payment_cols(rows)
        if cols is not None:
            self._fold_cols(cols)

    def _fold_cols(self, cols: Dict[str, np.ndarray]) -> None:
        seq, txn = cols["seq"], cols["txn_id"]
        begin = seq == txn
        if begin.all():
            self._add_begins(cols)
            return
        outcome = txn < seq
        lo, hi = int(seq[0]), int(seq[-1])
        # payments begun in these rows that also get an outcome in them
        if hi - lo < 4 * len(seq) + 1024:
            answered = np.zeros(hi - lo + 1, dtype=bool)
            inner = outcome & (txn >= lo)
            answered[(txn[inner] - np.uint64(lo)).astype(np.intp)] = True
            both = begin & answered[(seq - np.uint64(lo)).astype(np.intp)]
            began_here = np.zeros(hi - lo + 1, dtype=bool)
            began_here[(seq[both] - np.uint64(lo)).astype(np.intp)] = True
            inner_out = np.zeros(len(seq), dtype=bool)
            inner_out[inner] = began_here[(txn[inner] - np.uint64(lo)).astype(np.intp)]
        else:
            both = begin & np.isin(seq, txn[outcome])
            inner_out = outcome & np.isin(txn, seq[both])
        alone = begin & ~both
        if alone.any():
            self._add_begins(_take(cols, alone))
        if both.any():
            self._fold_here(_take(cols, both | inner_out))
        rest = outcome & ~inner_out
        if rest.any():
            by_txn: Dict[int, List[Rec]] = {}
            for r in _tuples(cols, rest):
                by_txn.setdefault(r[8], []).append(r[:8])
            self._outcomes(by_txn, lo)
        # (records with a txn_id above their own seq name no payment begun yet: not folded)

    def _add_begins(self, cols: Dict[str, np.ndarray]) -> None:
        """First records of new payments (no outcome among the rows fed with them)."""
        pending, grouped = _plan_begins(cols)
        for r in pending:
            self._open[r[0]] = (r,)
        self._apply_grouped(grouped)

    def _fold_here(self, cols: Dict[str, np.ndarray]) -> None:
        """Payments begun in these rows with their outcomes in them too (seq order)."""
        seq, txn, day = cols["seq"], cols["txn_id"], cols["day"]
        n = len(seq)
        lo = int(seq[0])
        gid = (txn - np.uint64(lo)).astype(np.intp)
        size = int(gid.max()) + 1
        idx = np.arange(n, dtype=np.int64)
        first = np.full(size, n, dtype=np.int64)
        np.minimum.at(first, gid, idx)
        last = np.full(size, -1, dtype=np.int64)
        np.maximum.at(last, gid, idx)
        day64 = day.astype(np.int64)
        lo_day = np.full(size, 1 << 40, dtype=np.int64)
        np.minimum.at(lo_day, gid, day64)
        hi_day = np.full(size, -(1 << 40), dtype=np.int64)
        np.maximum.at(hi_day, gid, day64)
        count = np.bincount(gid, minlength=size)
        present = np.flatnonzero(count)
        f, la = first[present], last[present]
        # one day, final: folded here, vectorized; else record by record
        simple = ((lo_day[present] == day64[f]) & (hi_day[present] == day64[f])
                  & (cols["state"][la] != _PENDING))
        if simple.any():
            fs, ls = f[simple], la[simple]
            self._add_groups(day[fs], cols["terminal"][fs], cols["kind"][fs],
                             cols["state"][ls], cols["method"][ls], cols["currency"][ls],
                             cols["amount"][ls], seq[fs].astype(np.int64),
                             records=count[present][simple], last_seq=seq[ls].astype(np.int64))
        if not simple.all():
            slow = np.zeros(size, dtype=bool)
            slow[present[~simple]] = True
            by_txn: Dict[int, List[Rec]] = {}
            for r in _tuples(cols, slow[gid]):
                by_txn.setdefault(r[8], []).append(r[:8])
            for txn_id, recs in by_txn.items():
                self._move(txn_id, recs, ())

    def _add_groups(self, day, terminal, kind, state, method, currency, amount, first,
                    records=None, last_seq=None) -> None:
        """Add one payment per element (its first record's day, terminal and kind, its final
        state, method, currency and amount), grouped with numpy (`_grouped`)."""
        if len(day) == 1:
            f = int(first[0])
            ls = int(last_seq[0]) if last_seq is not None else f
            self._add(int(day[0]), int(terminal[0]), int(kind[0]), int(state[0]),
                      int(method[0]), int(currency[0]), 1, int(amount[0]),
                      int(records[0]) if records is not None else 1, f, ls, int(day[0]))
            return
        self._apply_grouped(_grouped(day, terminal, kind, state, method, currency, amount, first,
                                     records, last_seq))

    def _apply_grouped(self, grouped: Optional[tuple]) -> None:
        """Few groups: one `_add` each; many (a bulk import of weeks): the scopes' seq ranges
        now, the cells queued per day and summed into the dicts when that day is first asked
        for (`_flush`)."""
        if grouped is None:
            return
        g_day, terminal, kind, state, method, currency, count, sums, nrec, lo_seq, hi_seq = grouped
        groups = len(g_day)
        if groups <= _QUEUE_FROM:
            for g in zip(g_day.tolist(), terminal.tolist(), kind.tolist(), state.tolist(),
                         method.tolist(), currency.tolist(), count.tolist(), sums.tolist(),
                         nrec.tolist(), lo_seq.tolist(), hi_seq.tolist()):
                self._add(g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], g[10],
                          g[0])
            return
        cells = np.zeros(groups, dtype=_QUEUE_DT)
        for name, col in (("terminal", terminal), ("kind", kind), ("state", state),
                          ("method", method), ("currency", currency)):
            cells[name] = col
        cells["count"], cells["amount"] = count, sums
        self._queue(g_day, cells, nrec, lo_seq, hi_seq)

    def _queue(self, day, cells, records, first, last) -> None:
        """Cells of many groups (`_QUEUE_DT`, each of business day `day[i]`) for `_flush`;
        the seq ranges and record counts of their scopes are kept at once."""
        sid, nscopes, rep = _group((day, cells["terminal"]))
        agg_records = np.zeros(nscopes, dtype=np.int64)
        np.add.at(agg_records, sid, records.astype(np.int64))
        lo = np.full(nscopes, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(lo, sid, np.asarray(first, dtype=np.int64))
        hi = np.full(nscopes, -1, dtype=np.int64)
        np.maximum.at(hi, sid, np.asarray(last, dtype=np.int64))
        for d, terminal, n, f, la in zip(day[rep].tolist(), cells["terminal"][rep].tolist(),
                                         agg_records.tolist(), lo.tolist(), hi.tolist()):
            for key in ((d, None), (d, terminal)):
                scope = self._scope(key)
                scope.snap = None
                scope.records += n
                if n or f < _NO_SEQ:
                    if f < scope.first_seq:
                        scope.first_seq = f
                    if la > scope.last_seq:
                        scope.last_seq = la
                    if d > scope.last_day:
                        scope.last_day = d
        order = np.argsort(day, kind="stable")
        day, cells = day[order], cells[order]
        cut = np.flatnonzero(day[1:] != day[:-1]) + 1
        for lo_i, hi_i in zip(np.concatenate(([0], cut)).tolist(),
                              np.concatenate((cut, [len(day)])).tolist()):
            self._queued.setdefault(int(day[lo_i]), []).append(cells[lo_i:hi_i])

    def _flush(self, day: int) -> None:
        """Sum the cells queued for `day` into its dicts."""
        add = self._add
        for cells in self._queued.pop(day, ()):
            for terminal, kind, state, method, currency, count, amount in cells.tolist():
                add(day, terminal, kind, state, method, currency, count, amount, 0, _NO_SEQ, 0,
                    _NO_DAY)

    def _flush_all(self) -> None:
        for day in list(self._queued):
            self._flush(day)

    def _scope(self, key: Tuple[int, Optional[int]]) -> _Scope:
        scope = self._scopes.get(key)
        if scope is None:
            scope = self._scopes[key] = _Scope()
            if key[1] is None:
                self._drop_at = min(self._drop_at, 0)     # recomputed at the next drop check
            else:
                self._scope((key[0], None)).terminals.add(key[1])
        return scope

    def _outcomes(self, by_txn: Dict[int, List[Rec]], before: int) -> None:
        """Records of payments begun before seq `before`."""
        unknown: Dict[int, List[Rec]] = {}
        for txn, new in by_txn.items():
            known = self._open.get(txn)
            if known is None:
                unknown[txn] = new
            else:
                self._move(txn, list(known) + new, tuple(fold(txn, list(known), self.oldest)))
        if not unknown:
            return
        prior = {}
        if self.lookup is not None:
            prior = self.lookup({txn: {r[2] for r in new} for txn, new in unknown.items()},
                                before)
        for txn, new in unknown.items():
            old = sorted(prior.get(txn, ()))
            self._move(txn, old + new, tuple(fold(txn, old, self.oldest)))

    def note_oldest(self, oldest: int) -> None:
        """The ring's oldest live seq is now `oldest`: payments spanning days whose first
        record went move as the fold moves them; days with no record left are dropped."""
        if oldest > self.oldest:
            self.oldest = oldest
        heap = self._spread
        while heap and heap[0] < oldest:
            txn = heapq.heappop(heap)
            self._spread_set.discard(txn)
            known = self._open.get(txn)
            if known is None:
                continue
            live = [r for r in known if r[0] >= oldest]
            if live:
                self._move(txn, live, tuple(fold(txn, list(known), oldest)))
            else:
                self._open.pop(txn, None)     # all gone: its day keeps what it had
        if oldest > self._drop_at:
            self._drop_days(oldest)

    def _drop_days(self, oldest: int) -> None:
        scopes = self._scopes
        gone = {day for (day, terminal), scope in scopes.items()
                if terminal is None and scope.last_seq < oldest}
        self.dropped |= gone
        for day in gone:
            for terminal in scopes[(day, None)].terminals:
                scopes.pop((day, terminal), None)
            del scopes[(day, None)]
            self._queued.pop(day, None)
        if gone:
            for txn in [t for t, recs in self._open.items()
                        if all(r[0] < oldest for r in recs)
                        and all(c[0] in gone for c in fold(t, list(recs), oldest))]:
                del self._open[txn]
        self._drop_at = min((scope.last_seq for (day, terminal), scope in scopes.items()
                             if terminal is None), default=_NO_SEQ)

    # ------------------------------------------------------------ bytes
    def to_bytes(self) -> bytes:
        """Everything as one compact little-endian blob (version byte first).  Cells still
        queued by a bulk append are written as they are (from_bytes queues them again)."""
        scopes, cells = [], []
        for (day, terminal), scope in sorted(self._scopes.items(),
                                             key=lambda kv: (kv[0][0], -1 if kv[0][1] is None
                                                             else kv[0][1])):
            if terminal is None:
                continue
            scopes.append((day, terminal, scope.first_seq if scope.first_seq != _NO_SEQ else 0,
                           scope.records, scope.last_seq, scope.last_day))
            for currency, cur in sorted(scope.cur.items()):
                for (kind, state, method), (n, amount) in sorted(cur.cube.items()):
                    cells.append((day, terminal, kind, state, method, currency, n, amount))
        queued = []
        for day, parts in sorted(self._queued.items()):
            for part in parts:
                block = np.zeros(len(part), dtype=_CELL_DT)
                block["day"] = day
                for name in _QUEUE_DT.names or ():
                    block[name] = part[name]
                queued.append(block)
        cells_blob = np.array(cells, dtype=_CELL_DT).tobytes() + b"".join(
            block.tobytes() for block in queued)
        recs = [(txn,) + r for txn, rs in sorted(self._open.items()) for r in rs]
        return b"".join((
            _BLOB_HEAD.pack(self.VERSION, self.floor, self.upto, self.oldest, len(scopes),
                            len(cells_blob) // _CELL_DT.itemsize, len(recs), len(self.dropped)),
            np.array(scopes, dtype=_SCOPE_DT).tobytes(),
            cells_blob,
            np.array(recs, dtype=_REC_DT).tobytes(),
            np.array(sorted(self.dropped), dtype="<i4").tobytes()))

    @classmethod
    def from_bytes(cls, data: bytes, lookup: Optional[Lookup] = None) -> "DayTotals":
        """The DayTotals `to_bytes` wrote (ValueError if `data` is not one)."""
        data = bytes(data)
        if len(data) < _BLOB_HEAD.size or data[0] != cls.VERSION:
            raise ValueError("posfast: not a day-totals blob of version %d" % cls.VERSION)
        version, floor, upto, oldest, nscopes, ncells, nrecs, ndropped = \
            _BLOB_HEAD.unpack_from(data)
        sizes = (nscopes * _SCOPE_DT.itemsize, ncells * _CELL_DT.itemsize,
                 nrecs * _REC_DT.itemsize, ndropped * 4)
        if _BLOB_HEAD.size + sum(sizes) != len(data):
            raise ValueError("posfast: day-totals blob of %d bytes, its header says %d"
                             % (len(data), _BLOB_HEAD.size + sum(sizes)))
        offset = _BLOB_HEAD.size
        parts = []
        for dtype, count, size in zip((_SCOPE_DT, _CELL_DT, _REC_DT, np.dtype("<i4")),
                                      (nscopes, ncells, nrecs, ndropped), sizes):
            parts.append(np.frombuffer(data, dtype=dtype, count=count, offset=offset))
            offset += size
        out = cls(lookup)
        out.floor, out.upto, out.oldest = floor, upto, oldest
        out.dropped = set(parts[3].tolist())
        cells = parts[1]
        if len(cells):          # summed into the dicts when their day is first asked for
            queued = np.zeros(len(cells), dtype=_QUEUE_DT)
            for name in _QUEUE_DT.names or ():
                queued[name] = cells[name]
            order = np.argsort(cells["day"], kind="stable")
            day, queued = cells["day"][order], queued[order]
            cut = np.flatnonzero(day[1:] != day[:-1]) + 1
            for lo, hi in zip(np.concatenate(([0], cut)).tolist(),
                              np.concatenate((cut, [len(day)])).tolist()):
                out._queued.setdefault(int(day[lo]), []).append(queued[lo:hi])
        scopes = out._scopes
        for day, terminal, first_seq, records, last_seq, last_day in parts[0].tolist():
            for key in ((day, None), (day, terminal)):
                scope = out._scope(key)
                scope.records += records
                if records and first_seq < scope.first_seq:
                    scope.first_seq = first_seq
                scope.last_seq = max(scope.last_seq, last_seq)
                scope.last_day = max(scope.last_day, last_day)
        out._drop_at = min((scope.last_seq for (day, terminal), scope in scopes.items()
                            if terminal is None), default=_NO_SEQ)
        remembered: Dict[int, List[Rec]] = {}
        for txn, *rec in parts[2].tolist():
            remembered.setdefault(txn, []).append(tuple(rec))   # type: ignore[arg-type]
        for txn, recs in remembered.items():
            out._remember(txn, recs, tuple(fold(txn, recs, oldest)))
        return out

    def __eq__(self, other: object) -> bool:
        """Same totals and the same payments remembered (whatever was fed when)."""
        if not isinstance(other, DayTotals):
            return NotImplemented
        self._flush_all()
        other._flush_all()
        return self.to_bytes()[_BLOB_HEAD.size:] == other.to_bytes()[_BLOB_HEAD.size:]

    __hash__ = None       # type: ignore[assignment]

