"""The reconciliation itself: one business day of a journal against the back office
or a settlement file, and against its own print records (see :mod:`posfast.reconcile`).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..dayclose import TXN_DTYPE, payment_transactions
from ..errors import PosfastError
from ..records import (KIND_SIGN_TABLE, PAYMENT_KIND_VALUES, RECEIPT_KINDS, Flag, Kind, Method,
                       State, day_number, day_to_date, print_jobs)
from .hosts import host_source
from .matching import (Columns, HashedKeys, dedupe, join, key_ids, pair_keys, split_ids_at,
                       window_pairs)
from .report import CATEGORIES, CategoryTally, Discrepancy, ReconcileReport, _milli
from .rows import release_heap
from .settlement import Settlement, read_settlement

if TYPE_CHECKING:
    from ..journal import Journal

__all__ = ["reconcile"]

_ORDER = {c: i for i, c in enumerate(CATEGORIES)}
# an approved payment of these kinds should have printed a slip (a reversal is the terminal's
# own undo after a timeout: no customer slip)
_NEEDS_RECEIPT = np.array(sorted(int(k) for k in RECEIPT_KINDS - {Kind.REVERSAL}), dtype=np.uint8)
_NOT_SETTLED_METHODS = (Method.CASH, Method.VOUCHER)
_NOT_SETTLED_KINDS = np.array([Kind.CASH_IN, Kind.CASH_OUT], dtype=np.uint8)
_APPROVED, _PENDING = int(State.APPROVED), int(State.PENDING)
_PAPER = np.array([State.OK, State.UNKNOWN], dtype=np.uint8)
_US = 1_000_000


def _name(enum_cls, value) -> str:
    try:
        return enum_cls(int(value)).name.lower()
    except ValueError:
        return str(int(value))


def _iso(ts_us: int, tz) -> str:
    return (_dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
            + _dt.timedelta(microseconds=int(ts_us))).astimezone(tz).isoformat(timespec="seconds")


def _text(value: bytes) -> str:
    return bytes(value).rstrip(b"\0").decode("ascii", "replace")


def _net_by_currency(kinds, states, amounts, currencies) -> dict:
    approved = states == _APPROVED
    signed = KIND_SIGN_TABLE[kinds[approved]] * amounts[approved].astype(np.int64)
    cur = currencies[approved]
    return {int(c): int(signed[cur == c].sum()) for c in np.unique(cur)}


class _Builder:
    """Collects discrepancies; the only per-item Python work happens here.

    Findings that come in bulk (missing at host, missing in the journal: up to a
    whole file of them) are kept as index arrays into the payment tables and made
    into :class:`Discrepancy` objects only when the report is read or written."""

    def __init__(self, tz, summary=False, tills=None):
        self.tz = tz
        self.tills = tills        # store mode: the till names, by the payments' till index
        self.items = CategoryTally() if summary else []
        self.bulks = []           # (kind, category, table, indices, detail, explicit items before)

    def _txn(self, category, t, host=(), host_amount=None, host_state="", detail="",
             extra_seqs=()):
        seqs = tuple(dict.fromkeys(tuple(extra_seqs) + (int(t["first_seq"]), int(t["final_seq"]))))
        return Discrepancy(
            category=category, terminal=int(t["terminal"]), txn_id=int(t["txn_id"]),
            journal_seqs=seqs, host_rows=tuple(host), amount=int(t["amount"]),
            host_amount=host_amount, currency=int(t["currency"]), kind=_name(Kind, t["kind"]),
            state=_name(State, t["state"]), host_state=host_state, time=_iso(t["ts"], self.tz),
            rrn=_text(t["rrn"]), auth_code=_text(t["auth_code"]), detail=detail, **self._refs(t))

    def _host_only(self, category, h, rows, detail):
        return Discrepancy(
            category=category, terminal=int(h["terminal"]), txn_id=int(h["txn_id"]),
            journal_seqs=(), host_rows=tuple(rows), amount=None, host_amount=int(h["amount"]),
            currency=int(h["currency"]), kind=_name(Kind, h["kind"]), state="",
            host_state=_name(State, h["state"]), time=_iso(h["ts"], self.tz), rrn=_text(h["rrn"]),
            auth_code=_text(h["auth_code"]), detail=detail, **self._refs(h, host=True))

    def _refs(self, row, host=False) -> dict:
        names = row.dtype.names
        out = {name: bytes(row[name]).decode("utf-8", "replace") for name in ("order_ref", "host_ref")
               if name in names}
        if self.tills and host:        # a statement row: the till its TID names (store mode)
            number = int(row["terminal"])
            out["till"] = self.tills[number - 1] if 0 < number <= len(self.tills) else ""
        elif self.tills and "till" in names:
            out["till"] = self.tills[int(row["till"])]
        return out

    def txn(self, category, t, **kw):
        self.items.append(self._txn(category, t, **kw))

    def host_only(self, category, h, rows, detail):
        self.items.append(self._host_only(category, h, rows, detail))

    def bulk(self, kind, category, table, indices, detail):
        """Many findings of one category and detail: `kind` "txn" (journal payments,
        as txn() makes them) or "host" (host rows, as host_only() with _host_seqs)."""
        indices = np.asarray(indices, np.int64)
        if not len(indices):
            return
        if isinstance(self.items, CategoryTally):
            self.items.bulk(category, table["amount"][indices], table["currency"][indices])
            return
        self.bulks.append((kind, category, table, indices, detail, len(self.items)))

    def make(self, b, i):
        kind, category, table, indices, detail, _ = self.bulks[b]
        row = table[indices[i]]
        if kind == "txn":
            return self._txn(category, row, detail=detail)
        return self._host_only(category, row, _host_seqs(row), detail)

    def finish(self):
        """The discrepancies in report order: category, terminal, first journal seq,
        first host row, then the order they were found in."""
        items = self.items
        if not self.bulks:
            items.sort(key=lambda d: (_ORDER[d.category], d.terminal,
                                      d.journal_seqs[0] if d.journal_seqs else 0,
                                      d.host_rows[0] if d.host_rows else 0))
            return items
        n = len(items)
        sizes = [len(b[3]) for b in self.bulks]
        marks = np.array([b[5] for b in self.bulks], np.int64)
        before = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
        cat = [np.array([_ORDER[d.category] for d in items], np.int64)]
        term = [np.array([d.terminal for d in items], np.int64)]
        seq0 = [np.array([d.journal_seqs[0] if d.journal_seqs else 0 for d in items], np.int64)]
        host0 = [np.array([d.host_rows[0] if d.host_rows else 0 for d in items], np.int64)]
        # explicit item k comes after every bulk added once k items existed
        ahead = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        found = [np.arange(n, dtype=np.int64)
                 + ahead[np.searchsorted(marks, np.arange(n), side="right")]]
        src = [np.full(n, -1, np.int32)]
        pos = [np.arange(n, dtype=np.int64)]
        for b, (kind, category, table, indices, _detail, mark) in enumerate(self.bulks):
            m = len(indices)
            first = table["first_seq"][indices].astype(np.int64)
            cat.append(np.full(m, _ORDER[category], np.int64))
            term.append(table["terminal"][indices].astype(np.int64))
            seq0.append(first if kind == "txn" else np.zeros(m, np.int64))
            host0.append(np.zeros(m, np.int64) if kind == "txn" else first)
            found.append(mark + before[b] + np.arange(m, dtype=np.int64))
            src.append(np.full(m, b, np.int32))
            pos.append(np.arange(m, dtype=np.int64))
        order = np.lexsort(tuple(np.concatenate(k) for k in (found, host0, seq0, term, cat)))
        return _Discrepancies(self, items, np.concatenate(src)[order], np.concatenate(pos)[order])


class _Discrepancies(Sequence):
    """The report's discrepancies: a read-only sequence whose bulk findings are
    made into :class:`Discrepancy` objects as they are read (so a report of a
    million findings holds 12 bytes for each, plus the payment tables)."""

    def __init__(self, builder, items, src, pos):
        self._builder, self._items, self._src, self._pos = builder, items, src, pos

    def __len__(self):
        return len(self._src)

    def category_counts(self) -> dict:
        """{category: number of findings} of the categories present, none made an object."""
        out: dict = {}
        for d in self._items:
            out[d.category] = out.get(d.category, 0) + 1
        for kind, category, table, indices, detail, mark in self._builder.bulks:
            out[category] = out.get(category, 0) + len(indices)
        return out

    def _at(self, k):
        b = int(self._src[k])
        return self._items[int(self._pos[k])] if b < 0 else self._builder.make(b, int(self._pos[k]))

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self._at(i) for i in range(*k.indices(len(self)))]
        n = len(self)
        if not -n <= k < n:
            raise IndexError(k)
        return self._at(k % n)

    def __iter__(self):
        for k in range(len(self)):
            yield self._at(k)

    def __eq__(self, other):
        if isinstance(other, (list, tuple, Sequence)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self):
        return "<%d discrepancies>" % len(self)


#: What reconcile adds to a TXN_DTYPE payment to match it with a statement: the references,
#: the channel, the statement's fee and batch and (store mode) the till.
_EXTRA = (("channel", "S10"), ("fee", "<i8"), ("batch", "<u4"), ("till", "<u4"),
          ("host_state", "u1"))
_BACK = np.array([Kind.REFUND, Kind.VOID, Kind.REVERSAL], dtype=np.uint8)
_DAY_US = 86_400 * _US


def widen(txns, order_ref=None, host_ref=None, **columns) -> Columns:
    """`txns` (TXN_DTYPE) as :class:`Columns` (its fields viewed, not copied) with the
    columns of _EXTRA (zero unless given) and ``order_ref`` / ``host_ref`` (b"" unless
    given)."""
    n = len(txns)
    extra = {name: np.zeros(n, dtype) for name, dtype in _EXTRA if name not in columns}
    for name, values in columns.items():
        extra[name] = np.ascontiguousarray(np.broadcast_to(np.asarray(values, dict(_EXTRA)[name]),
                                                           (n,)))
    for name, values in (("order_ref", order_ref), ("host_ref", host_ref)):
        extra[name] = values if values is not None else np.zeros(n, "S1")
    return Columns.of(txns, **extra)


def _host_txns_from_settlement(settlement: Settlement) -> Columns:
    """The statement's rows as payments (views of its columns where they are the same)."""
    s = settlement.rows
    n = len(s)

    def constant(value, dtype):     # one value for every row: a zero-stride view, no memory
        return np.broadcast_to(np.asarray(value, dtype), (n,))
    columns = {name: s[name] for name in ("terminal", "ts", "amount", "currency", "kind", "rrn",
                                          "auth_code", "fee", "batch")}
    columns.update(first_seq=s["line"], final_seq=s["line"], first_amount=s["amount"],
                   txn_id=constant(0, np.uint64), records=constant(1, np.uint32),
                   state=constant(_APPROVED, np.uint8), method=constant(0, np.uint8),
                   till=constant(0, np.uint32),
                   host_state=np.where(s["state"] == 0, _APPROVED, s["state"]).astype(np.uint8),
                   channel=constant((settlement.channel or "").encode("ascii"), "S10"),
                   client_ref=constant(b"", "S16"))
    for name in ("order_ref", "host_ref"):
        values = getattr(settlement, name)
        columns[name] = values if values is not None else constant(b"", "S1")
    return Columns(columns, n)


def concat_payments(parts) -> Columns:
    """Payment tables (:func:`widen`) joined, their reference columns sized to the widest."""
    parts = [p for p in parts if len(p)] or parts[:1]
    return Columns({name: np.concatenate([p[name] for p in parts]) for name in parts[0].names})


def journal_payments(rows, day, oldest, refs=None, ref_columns=None) -> Columns:
    """The widened payments (see :func:`widen`) begun on `day` of RECORD_DTYPE `rows` (seq
    order): channel of the first record; order and host references of the newest, from
    `ref_columns` (a callable seqs -> (order_ref array, host_ref array), e.g.
    ``Journal.ref_columns``) or `refs` (a callable seqs -> [(order_ref, host_ref)], e.g.
    ``Journal.refs``) when given."""
    if len(rows) and not (rows["day"] == day).any():
        txns = np.zeros(0, TXN_DTYPE)          # nothing begun that day: no scan of the rows
    else:
        txns, _ = payment_transactions(rows, day, oldest)
        release_heap()                      # the fold's buffers, before the references
    at = np.clip(np.searchsorted(rows["seq"], txns["first_seq"]), 0, max(len(rows) - 1, 0))
    channel = rows["channel"][at] if len(rows) else np.zeros(0, "S10")
    del at
    order_ref = host_ref = None
    if ref_columns is not None and len(txns):
        order_ref, host_ref = ref_columns(txns["final_seq"])
    elif refs is not None and len(txns):
        order_ref, host_ref = _refs_arrays(refs, txns["final_seq"])
    return widen(txns, order_ref, host_ref, channel=channel)


def _refs_arrays(refs, seqs, chunk=1 << 16):
    """(order_ref, host_ref) byte-string arrays of `seqs`, read `chunk` at a time (a list of
    a million reference tuples would cost ~180 MB)."""
    orders, hosts = [], []
    for lo in range(0, len(seqs), chunk):
        got = refs(seqs[lo:lo + chunk])
        orders.append(np.array([r[0] for r in got], dtype=bytes))
        hosts.append(np.array([r[1] for r in got], dtype=bytes))
        del got
    return np.concatenate(orders), np.concatenate(hosts)


def reconcile(journal: Journal, host, day, terminal=None, window=300, check_receipts=True,
              settled_methods=None, encoding=None, summary=False, format="auto",
              column_map=None, channel=None, fee_rates=None, file_date=None) -> ReconcileReport:
    """Reconcile one business day of `journal` against `host` (see the module docstring).

    `host`: ``"sqlite:///back.db"``, a ``postgresql://`` DSN, a SqliteTarget or
    PostgresTarget, a statement path or a :class:`Settlement`.  `terminal`
    limits both sides to one terminal; `window` (seconds) bounds the time
    difference of a settlement row matched by terminal + amount; with
    `check_receipts` False the print checks are skipped; `settled_methods`
    (methods expected in a settlement file) defaults to all but cash and voucher;
    `encoding`, `format`, `column_map` and `file_date` say how to read a statement (see
    :func:`read_settlement`).  `channel` is the payment channel the statement covers
    (default: what its format implies, e.g. ``"wechat"`` for a WeChat Pay bill; ``"any"``
    expects every channel).  `fee_rates` ({channel or method: rate}, e.g. ``{"wechat":
    "0.38%", "card": "0.60%"}``) checks each settled fee (``fee_mismatch``).  With
    `summary` True the discrepancies are counted and totalled per category
    (:meth:`ReconcileReport.category_totals`) but not kept: the report's memory does not
    grow with their number.

    >>> report = reconcile(j, "sqlite:///back.db", day="2026-11-20")      # doctest: +SKIP
    >>> report.counts()["missing_at_host"], report.ok                     # doctest: +SKIP
    (1, False)
    """
    wanted = day_number(day)
    rule = journal.day_rule
    tz = rule.tzinfo
    source = host_source(host)
    settlement = None
    if source.kind == "settlement":     # read (and refuse) the file before anything else
        settlement = (source.settlement if source.settlement is not None
                      else read_settlement(source.path, format=format, utc_offset=rule,
                                           encoding=encoding, column_map=column_map,
                                           file_date=file_date))
    first = wanted - 1 if settlement is not None else wanted
    rows = journal.query(day=list(range(first, wanted + 3 if settlement is not None else wanted + 2)),
                         terminal=terminal)
    training = (rows["flags"] & int(Flag.TRAINING)) != 0
    if training.any():                 # (a copy of a million rows costs 120 MB: only if needed)
        rows = rows[~training]
    del training
    oldest = journal.oldest_seq
    refs = journal.ref_columns if settlement is not None and (
        settlement.host_ref is not None or settlement.order_ref is not None) else None
    jtx = journal_payments(rows, wanted, oldest)
    if settlement is not None:
        neighbours = concat_payments([journal_payments(rows, d, oldest)
                                      for d in (wanted - 1, wanted + 1)])
        rows = rows[(rows["day"] >= wanted) & (rows["day"] <= wanted + 1)] if check_receipts \
            else np.zeros(0, rows.dtype)    # only the print checks read the records again
        release_heap()                      # the records and the fold's buffers let go
        if refs is not None:                # (read after the records are let go)
            for table in (jtx, neighbours):
                if len(table):
                    table.columns["order_ref"], table.columns["host_ref"] = refs(table["final_seq"])
    out = _Builder(tz, summary=summary)
    report = ReconcileReport(journal=str(journal.path), journal_id=str(journal.journal_id),
                             day=day_to_date(wanted), terminal=terminal, host="",
                             host_rows_are="seq" if settlement is None else "line")
    if settlement is not None:
        partner = against_statement(jtx, neighbours, settlement, wanted, rule, terminal, window,
                                    settled_methods, out, report, channel, fee_rates)
    else:
        report.journal_payments = len(jtx)
        report.journal_net = _net_by_currency(jtx["kind"], jtx["state"], jtx["amount"],
                                              jtx["currency"])
        held_day = source.read_day(journal.journal_id, wanted, wanted + 1, terminal)
        hrows, held = held_day.rows, held_day.held
        report.host = "back office %s" % source.label
        if not held:
            report.notes.append("the back office holds no record of journal %s: it was never "
                                "synced there" % journal.journal_id)
        # the journal's eviction horizon on both sides: a payment whose first record the
        # journal no longer holds counts on the day of its records, here and there alike
        htx, _ = payment_transactions(hrows, wanted, oldest)
        partner = _against_back_office(jtx, htx, oldest, out, report)
    finish_checks(jtx, partner, out, report)
    if check_receipts:
        _receipts(journal, rows, jtx, wanted, out)
    return finish_report(report, out, summary)


def finish_checks(jtx, partner, out, report) -> None:
    """in_doubt and duplicate findings of the journal side (`partner` names host rows)."""
    for i in np.flatnonzero(jtx["state"] == _PENDING).tolist():
        host_rows, host_state, host_amount = partner(i) or ((), "", None)
        if host_rows and host_state != "pending":
            detail = ("payment begun, never finished; the host has it as %s (%s %s): resolve it "
                      "accordingly" % (host_state, report.host_rows_are,
                                       " ".join(map(str, host_rows))))
        else:
            detail = ("payment begun, never finished%s: ask the card host, then resolve it "
                      "(posfast in-doubt)" % (" (pending at the back office too)" if host_rows
                                              else ""))
        out.txn("in_doubt", jtx[i], host=host_rows, host_state=host_state, host_amount=host_amount,
                detail=detail)
    for (name, key), members in _duplicates(jtx).items():
        seqs, host_rows = [], []
        for m in members.tolist():
            seqs += [int(jtx["first_seq"][m]), int(jtx["final_seq"][m])]
            host_rows += list((partner(m) or ((),))[0])
        out.txn("duplicate", jtx[members[0]], host=tuple(dict.fromkeys(host_rows)),
                extra_seqs=tuple(dict.fromkeys(seqs)),
                detail="%d approved payments with %s %s (txn %s)" % (
                    len(members), name, key.rstrip(b"\0").decode("ascii", "replace"),
                    ", ".join(str(int(t)) for t in jtx["txn_id"][members])))


def finish_report(report, out, summary) -> ReconcileReport:
    if summary:
        report.summary_only, report._totals = True, out.items.totals
        return report
    report.discrepancies = out.finish()
    return report


def _duplicates(txns) -> dict:
    """{(field, key): txn indices} of approved payments of one kind sharing a non-empty
    RRN, or a non-empty client reference (the POS's idempotency key)."""
    groups = {}
    approved = txns["state"] == _APPROVED
    for name in ("rrn", "client_ref"):
        idx = np.flatnonzero(approved & (txns[name] != b""))
        if len(idx) < 2:
            continue
        till = txns["till"][idx] if "till" in txns.dtype.names else np.zeros(len(idx), np.uint32)
        keys = (key_ids(txns[name][idx], txns["kind"][idx], till) if name == "rrn"
                else key_ids(txns[name][idx], till))
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        for g in np.flatnonzero(counts > 1).tolist():
            members = idx[inverse == g]
            groups.setdefault((name, bytes(txns[name][members[0]])), members)
    return groups


def _host_seqs(h):
    first, final = int(h["first_seq"]), int(h["final_seq"])
    return (first,) if first == final else (first, final)


def _against_back_office(jtx, htx, oldest, out, report):
    """Back office: payments matched on txn_id.  Returns partner(journal index) ->
    (host rows, host state, host amount) or None."""
    report.host_payments = len(htx)
    report.host_net = _net_by_currency(htx["kind"], htx["state"], htx["amount"], htx["currency"])
    ji, hi = join(jtx["txn_id"], htx["txn_id"])
    report.matched = len(ji)
    j_matched = np.zeros(len(jtx), bool)
    j_matched[ji] = True
    h_matched = np.zeros(len(htx), bool)
    h_matched[hi] = True
    out.bulk("txn", "missing_at_host", jtx, np.flatnonzero(~j_matched),
             "the back office has no record of this payment (never synced, or lost there)")
    evicted = htx["txn_id"] < oldest
    out.bulk("host", "missing_in_journal", htx, np.flatnonzero(~h_matched & evicted),
             "evicted from the journal (seq below its oldest live seq %d)" % oldest)
    out.bulk("host", "missing_in_journal", htx, np.flatnonzero(~h_matched & ~evicted),
             "the journal has no such payment (deleted, or never written in this journal)")
    j, h = jtx[ji], htx[hi]
    amount_off = ((j["amount"] != h["amount"]) | (j["currency"] != h["currency"])
                  | (j["first_amount"] != h["first_amount"]))
    state_off = (j["state"] != h["state"]) & (j["state"] != _PENDING)
    for k in np.flatnonzero(amount_off).tolist():
        a, b = j[k], h[k]
        out.txn("amount_mismatch", a, host=_host_seqs(b), host_amount=int(b["amount"]),
                host_state=_name(State, b["state"]),
                detail="journal %d (currency %d), back office %d (currency %d)" % (
                    int(a["amount"]), int(a["currency"]), int(b["amount"]), int(b["currency"]))
                + ("" if a["first_amount"] == b["first_amount"] else
                   "; first record %d vs %d" % (int(a["first_amount"]), int(b["first_amount"]))))
    for k in np.flatnonzero(state_off).tolist():
        a, b = j[k], h[k]
        behind = int(b["final_seq"]) < int(a["final_seq"])
        out.txn("state_mismatch", a, host=_host_seqs(b), host_amount=int(b["amount"]),
                host_state=_name(State, b["state"]),
                detail="journal %s (seq %d), back office %s (seq %d)%s" % (
                    _name(State, a["state"]), int(a["final_seq"]), _name(State, b["state"]),
                    int(b["final_seq"]), ": the outcome was not synced yet" if behind else ""))
    j_to_h = np.full(len(jtx), -1, np.int64)
    j_to_h[ji] = hi

    def partner(i):
        b = int(j_to_h[i])
        return None if b < 0 else (_host_seqs(htx[b]), _name(State, htx["state"][b]),
                                   int(htx["amount"][b]))
    return partner


def _expected(jtx, settled_methods, channel, report):
    """Which journal payments the statement should list: not cash or voucher (or the
    methods given), not cash moves, and of the statement's channel."""
    if settled_methods is None:
        expected = ~np.isin(jtx["method"], [int(m) for m in _NOT_SETTLED_METHODS])
    else:
        expected = np.isin(jtx["method"], [int(Method.coerce(m, "method")) for m in settled_methods])
    expected &= ~np.isin(jtx["kind"], _NOT_SETTLED_KINDS)
    if channel and channel != "any" and len(jtx):
        named = jtx["channel"] != b""
        if named.any():
            expected &= jtx["channel"] == channel.encode("ascii")
        elif report is not None:
            report.notes.append("the journal names no payment channel: every payment not in cash "
                                "or voucher is expected in this %s statement" % channel)
    return expected


def _pair(jtx, jidx, htx, hidx, names, approved):
    """Pairs (journal, host) of equal values of `names`: the approved journal payment
    represents its key; returns (j pairs, h pairs, journal payments set aside)."""
    got = pair_keys([jtx[n] for n in names], jidx, [htx[n] for n in names], hidx,
                    (~approved[jidx]).astype(np.int8))
    if got is not None:             # (each side's hashes sorted once: no key_ids of both)
        a, b, rep = got
        return jidx[a], hidx[b], jidx[~rep & approved[jidx]]
    jids, hids = split_ids_at(jtx, jidx, htx, hidx, names)
    rep, _ = dedupe(jids, (~approved[jidx]).astype(np.int8))
    hrep, _ = dedupe(hids, np.zeros(len(hidx), np.int8))
    a, b = join(jids[rep], hids[hrep])
    return jidx[rep][a], hidx[hrep][b], jidx[~rep & approved[jidx]]


def _fee_off(jtx, htx, pj, ph, fee_rates):
    """Indices k of pairs whose settled fee is off its configured rate by a minor unit or
    more (a statement in whole minor units rounds its fees, up or down), and the expected
    fee of each pair in millionths of a minor unit."""
    from .amounts import parse_rate
    rates = {str(k).lower(): parse_rate(v) for k, v in fee_rates.items()}
    ppm = np.full(len(pj), -1, np.int64)
    for key, rate in rates.items():
        code = key.encode("ascii", "replace")
        method = Method.__members__.get(key.upper())
        hit = (jtx["channel"][pj] == code) | (htx["channel"][ph] == code)
        if method is not None:
            hit |= jtx["method"][pj] == int(method)
        ppm = np.where((ppm < 0) & hit, rate, ppm)
    sign = np.where(np.isin(htx["kind"][ph], _BACK), -1, 1)
    # exact: fee (1/1000 minor) * 1000 against amount (minor) * rate (per million)
    expected_x1000 = sign * htx["amount"][ph].astype(np.int64) * ppm
    off = (ppm >= 0) & (np.abs(htx["fee"][ph] * 1000 - expected_x1000) >= 1000 * 1000)
    return np.flatnonzero(off), expected_x1000


def against_statement(jtx, neighbours, settlement, wanted, rule, terminal, window,
                      settled_methods, out, report, channel=None, fee_rates=None):
    """A statement against widened journal payments of the day (`jtx`) and of the days
    beside it (`neighbours`): host reference, order reference, RRN (all with the type),
    then terminal + auth code, then terminal + amount + currency + type within the window.
    Returns partner() as _against_back_office does."""
    channel = channel if channel is not None else settlement.channel
    window_us = int(window * _US)
    start = rule.day_start_us(wanted)
    end = rule.day_start_us(wanted + 1)       # 23 or 25 hours on a daylight-saving change
    s = settlement.rows
    report.host = "settlement %s" % os.path.basename(settlement.path)
    report.notes.extend(settlement.notes)
    report.statement_format, report.channel = settlement.format, channel or "any"
    report.totals, report.batch_totals = statement_totals(settlement, rule, wanted)
    near = (s["ts"] >= start - _DAY_US - window_us) & (s["ts"] < end + _DAY_US + window_us)
    if terminal is not None:
        near &= s["terminal"] == int(terminal)
    htx = _host_txns_from_settlement(settlement if near.all() else settlement.take(near))
    inside = (htx["ts"] >= start) & (htx["ts"] < end)
    in_window = (htx["ts"] >= start - window_us) & (htx["ts"] < end + window_us)
    if len(s) and not inside.any():
        tz = rule.tzinfo
        report.notes.append("no row of %s falls on business day %s%s (its rows run from %s to %s)"
                            % (settlement.path, day_to_date(wanted),
                               "" if terminal is None else " for terminal %d" % terminal,
                               _iso(int(s["ts"].min()), tz), _iso(int(s["ts"].max()), tz)))
    expected = _expected(jtx, settled_methods, channel, report)
    report.journal_payments = int(expected.sum())
    report.journal_net = _net_by_currency(jtx["kind"][expected], jtx["state"][expected],
                                          jtx["amount"][expected], jtx["currency"][expected])
    approved = jtx["state"] == _APPROVED
    j_done = ~expected                 # matched, set aside, or not expected at the acquirer
    h_done = np.zeros(len(htx), bool)
    pairs_j, pairs_h = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]

    def take(a, b):
        pairs_j.append(a)
        pairs_h.append(b)
        j_done[a] = True
        h_done[b] = True

    # host rows listed twice: the same host reference and type, else the same rrn and type,
    # else identical rows
    h_dupes = {}
    has_ref = htx["host_ref"] != b""
    has_rrn = (htx["rrn"] != b"") & ~has_ref
    for mask, names in ((has_ref, ("host_ref", "kind")), (has_rrn, ("rrn", "kind")),
                        (~has_rrn & ~has_ref, ("terminal", "ts", "amount", "currency", "kind",
                                               "auth_code"))):
        idx = np.flatnonzero(mask)
        keys = HashedKeys([htx[name] for name in names], idx)
        rep, rep_of = (keys.rep, keys.rep_of) if keys.exact else dedupe(
            key_ids(*[htx[name] for name in names], at=idx), np.zeros(len(idx), np.int8))
        del keys
        for extra in np.flatnonzero(~rep).tolist():
            h_dupes.setdefault(int(idx[rep_of[extra]]), []).append(int(idx[extra]))
            h_done[idx[extra]] = True
    # by reference (any row of the three days): host ref, order ref, rrn; each with the type
    for name in ("host_ref", "order_ref", "rrn"):
        idx = np.flatnonzero(~j_done & (jtx[name] != b""))
        hidx = np.flatnonzero(~h_done & (htx[name] != b""))
        if len(idx) and len(hidx):
            a, b, set_aside = _pair(jtx, idx, htx, hidx, (name, "kind"), approved)
            j_done[set_aside] = True
            take(a, b)
    # terminal, authorisation code and type (rows of the day and the window around it)
    idx = np.flatnonzero(~j_done & (jtx["auth_code"] != b""))
    hidx = np.flatnonzero(~h_done & in_window & (htx["auth_code"] != b""))
    a, b, _ = _pair(jtx, idx, htx, hidx, ("terminal", "auth_code", "kind"), approved)
    take(a, b)
    # terminal + amount + currency + type within the window (approved, then pending)
    names = ("terminal", "amount", "currency", "kind")
    for state in (_APPROVED, _PENDING):
        idx = np.flatnonzero(~j_done & (jtx["state"] == state))
        hidx = np.flatnonzero(~h_done & in_window)
        if len(idx) and len(hidx):
            jids, hids = split_ids_at(jtx, idx, htx, hidx, names)
            a, b = window_pairs(jids, jtx["ts"][idx], hids, htx["ts"][hidx], window_us)
            take(idx[a], hidx[b])
    pj, ph = np.concatenate(pairs_j), np.concatenate(pairs_h)
    report.matched = len(pj)
    report.host_payments = int(inside.sum())
    report.host_net = _net_by_currency(htx["kind"][inside], htx["host_state"][inside],
                                       htx["amount"][inside], htx["currency"][inside])
    lines = htx["first_seq"]
    # a payment of the day settled on the day before or after: matched, said so
    other_day = np.flatnonzero(~in_window[ph])      # beyond clock skew: the next or last day
    for k in other_day.tolist():
        a, b = jtx[pj[k]], htx[ph[k]]
        out.txn("settled_other_day", a, host=(int(b["first_seq"]),), host_amount=int(b["amount"]),
                host_state="settled", detail="settled on %s (line %d); the journal's business day "
                "is %s" % (_local_day(int(b["ts"]), rule), int(b["first_seq"]), day_to_date(wanted)))
    # a row of the day whose payment the journal has on the day before or after
    left = np.flatnonzero(~h_done & inside)
    if len(left) and len(neighbours):
        n_expected = _expected(neighbours, settled_methods, channel, None)
        n_done = ~n_expected
        n_approved = neighbours["state"] == _APPROVED
        for name in ("host_ref", "order_ref", "rrn"):
            idx = np.flatnonzero(~n_done & (neighbours[name] != b""))
            hidx = left[~h_done[left] & (htx[name][left] != b"")]
            if not len(idx) or not len(hidx):
                continue
            a, b, _ = _pair(neighbours, idx, htx, hidx, (name, "kind"), n_approved)
            n_done[a] = True
            h_done[b] = True
            for x, y in zip(a.tolist(), b.tolist()):
                t = neighbours[x]
                out.txn("settled_other_day", t, host=(int(lines[y]),),
                        host_amount=int(htx["amount"][y]), host_state="settled",
                        detail="the journal has it on business day %s; the statement settled it "
                        "on %s (line %d)" % (day_to_date(int(t["day"])), day_to_date(wanted),
                                             int(lines[y])))

    out.bulk("txn", "missing_at_host", jtx, np.flatnonzero(approved & ~j_done),
             "approved here, not in the acquirer's settlement (not settled, or settled on "
             "another day)")
    out.bulk("host", "missing_in_journal", htx, np.flatnonzero(~h_done & inside),
             "settled by the acquirer, no such payment in the journal")
    jstate = jtx["state"][pj]
    hstate = htx["host_state"][ph]
    settled = jstate != _PENDING                       # pending: in_doubt, reported by the caller
    amount_off = settled & ((jtx["amount"][pj] != htx["amount"][ph])
                            | (jtx["currency"][pj] != htx["currency"][ph]))
    undone = np.isin(jstate, [int(State.REVERSED), int(State.VOIDED)])
    state_off = settled & np.where(hstate == _APPROVED, jstate != _APPROVED, ~undone)
    for k in np.flatnonzero(amount_off).tolist():
        a, b = jtx[pj[k]], htx[ph[k]]
        out.txn("amount_mismatch", a, host=(int(b["first_seq"]),), host_amount=int(b["amount"]),
                host_state="settled", detail="journal %d (currency %d), settlement %d "
                "(currency %d)" % (int(a["amount"]), int(a["currency"]), int(b["amount"]),
                                   int(b["currency"])))
    for k in np.flatnonzero(state_off).tolist():
        a, b = jtx[pj[k]], htx[ph[k]]
        revoked = int(b["host_state"]) != _APPROVED
        out.txn("state_mismatch", a, host=(int(b["first_seq"]),), host_amount=int(b["amount"]),
                host_state="revoked" if revoked else "settled",
                detail=("the journal has it as %s, the host revoked it" if revoked else
                        "the journal has it as %s, the acquirer settled it")
                % _name(State, a["state"]))
    if fee_rates and settlement.has_fees and len(pj):
        off, expected_x1000 = _fee_off(jtx, htx, pj, ph, fee_rates)
        for k in off.tolist():
            a, b = jtx[pj[k]], htx[ph[k]]
            out.txn("fee_mismatch", a, host=(int(b["first_seq"]),), host_amount=int(b["amount"]),
                    host_state="settled", detail="fee %s, the configured rate makes it %s (minor "
                    "units)" % (_milli(int(b["fee"])), _milli(int(expected_x1000[k]) // 1000)))
    j_to_h = np.full(len(jtx), -1, np.int64)
    j_to_h[pj] = ph
    h_to_j = np.full(len(htx), -1, np.int64)
    h_to_j[ph] = pj

    def partner(i):
        h = int(j_to_h[i])
        return None if h < 0 else ((int(lines[h]),), "settled", int(htx["amount"][h]))

    for rep_idx, extras in h_dupes.items():
        if not inside[rep_idx]:
            continue
        rows = (int(lines[rep_idx]),) + tuple(int(lines[e]) for e in extras)
        h = htx[rep_idx]
        why = "settled %d times (lines %s)" % (len(rows), ", ".join(map(str, rows)))
        if h_to_j[rep_idx] >= 0:
            out.txn("duplicate", jtx[h_to_j[rep_idx]], host=rows, host_amount=int(h["amount"]),
                    host_state="settled", detail=why)
        else:
            out.host_only("duplicate", h, rows, why + ", no such payment in the journal")
    return partner


def _local_day(ts_us: int, rule) -> _dt.date:
    return day_to_date(int(rule.day_number(ts_us)))


def statement_totals(settlement, rule, wanted):
    """({currency: totals}, {batch: {currency: totals}}) of the whole statement: rows,
    gross (signed minor units: sales +, refunds -), fee and net (thousandths of a minor
    unit, ``fee_milli``, ``net_milli``: fees are stated finer than a minor unit); revoked
    rows are left out of the money."""
    s = settlement.rows
    live = (s["state"] == 0) | (s["state"] == _APPROVED)
    sign = np.where(np.isin(s["kind"], _BACK), -1, np.where(np.isin(s["kind"], [
        int(Kind.PREAUTH)]), 0, 1)).astype(np.int64)
    gross = sign * s["amount"].astype(np.int64) * live
    fee = s["fee"] * live

    def totals(mask):
        out = {}
        for currency in np.unique(s["currency"][mask]).tolist():
            m = mask & (s["currency"] == currency)
            g, f = int(gross[m].sum()), int(fee[m].sum())
            out[int(currency)] = {"rows": int(m.sum()), "gross": g,
                                  "fee_milli": f if settlement.has_fees else None,
                                  "net_milli": g * 1000 - f if settlement.has_fees else None}
        return out
    everything = np.ones(len(s), bool)
    batches = {name: totals(s["batch"] == k + 1) for k, name in enumerate(settlement.batches)}
    return totals(everything), batches


def _receipts(journal, rows, jtx, wanted, out):
    """receipt_without_transaction, transaction_without_receipt, print_unknown."""
    # one row per print job: journaled UNKNOWN before the bytes, finalised after
    prints, final_seqs = print_jobs(rows[rows["kind"] == Kind.PRINT], finals=True)
    finished = dict(zip(prints["seq"].tolist(), final_seqs.tolist()))
    # a print naming only its payment's seq (txn_id 0): take the txn_id from that record
    unnamed = np.flatnonzero(prints["txn_id"] == 0)
    if len(unnamed) and len(rows):
        at = np.clip(np.searchsorted(rows["seq"], prints["ref_seq"][unnamed]), 0, len(rows) - 1)
        named = ((rows["seq"][at] == prints["ref_seq"][unnamed])
                 & np.isin(rows["kind"][at], PAYMENT_KIND_VALUES))
        prints["txn_id"][unnamed[named]] = rows["txn_id"][at[named]]
    ids = jtx["txn_id"]
    if len(ids):
        pos = np.clip(np.searchsorted(ids, prints["txn_id"]), 0, len(ids) - 1)
        in_day = ids[pos] == prints["txn_id"]
    else:
        pos, in_day = np.zeros(len(prints), np.int64), np.zeros(len(prints), bool)
    # this day's prints, and the next day's prints of this day's payments
    keep = (prints["day"] == wanted) | in_day
    prints, pos, in_day = prints[keep], pos[keep], in_day[keep]

    def why(seqs) -> str:
        """PRINT seqs, each with the printer's answer stored in its payload."""
        return ", ".join(str(seq) + _print_reason(journal, finished.get(seq) or seq) for seq in seqs)

    state = prints["state"]
    paper = np.isin(state, _PAPER)
    # prints of other days' payments, or naming only a seq: looked up one by one (few)
    others = {}
    for k in np.flatnonzero(~in_day & paper).tolist():
        key = (int(prints["txn_id"][k]), int(prints["ref_seq"][k]))
        if key not in others:
            others[key] = _lookup_payment(journal, *key)
    for k in np.flatnonzero(paper).tolist():
        p = prints[k]
        if in_day[k]:
            t = jtx[pos[k]]
            if t["state"] == _APPROVED:
                continue
            why_not = "txn %d is %s" % (int(t["txn_id"]), _name(State, t["state"]))
            seqs = (int(p["seq"]), int(t["first_seq"]), int(t["final_seq"]))
            amount, currency, txn_id = int(t["amount"]), int(t["currency"]), int(t["txn_id"])
        else:
            info = others[(int(p["txn_id"]), int(p["ref_seq"]))]
            if info is None or info[0] == _APPROVED:
                continue
            _state, found, why_not, amount, currency, txn_id = info
            seqs = (int(p["seq"]),) + found
        copy = " copy" if int(p["flags"]) & int(Flag.COPY) else ""
        out.items.append(Discrepancy(
            category="receipt_without_transaction", terminal=int(p["terminal"]), txn_id=txn_id,
            journal_seqs=tuple(dict.fromkeys(seqs)), amount=amount,
            currency=currency or int(p["currency"]), kind="print", state=_name(State, p["state"]),
            time=_iso(p["ts"], out.tz),
            detail="receipt%s printed (%s, PRINT seq %d) but %s" % (
                copy, _name(State, p["state"]), int(p["seq"]), why_not)))
    # approved payments and their prints
    needs = (jtx["state"] == _APPROVED) & np.isin(jtx["kind"], _NEEDS_RECEIPT)
    ok = np.bincount(pos[in_day & (state == State.OK)].astype(np.intp), minlength=len(jtx))
    unknown = np.bincount(pos[in_day & (state == State.UNKNOWN)].astype(np.intp), minlength=len(jtx))
    for i in np.flatnonzero(needs & (ok == 0) & (unknown == 0)).tolist():
        failed = prints["seq"][in_day & (pos == i)].tolist()
        out.txn("transaction_without_receipt", jtx[i], extra_seqs=(),
                detail="approved, no receipt printed" + (
                    " (failed print seq %s)" % why(failed) if failed else ""))
    for i in np.flatnonzero(needs & (ok == 0) & (unknown > 0)).tolist():
        unsure = prints["seq"][in_day & (pos == i) & (state == State.UNKNOWN)].tolist()
        out.txn("print_unknown", jtx[i], extra_seqs=(),
                detail="the printer's outcome is unknown (PRINT seq %s): check the paper, print "
                "a copy if it is not there" % why(unsure))
        out.items[-1].journal_seqs += tuple(unsure)


def _print_reason(journal, seq) -> str:
    """``": paper out"``: what the printer said of a print (its PRINT record's payload)."""
    try:
        note = json.loads(journal.get(int(seq)).payload or b"{}")
    except (KeyError, PosfastError, ValueError):
        return ""
    if not isinstance(note, dict):
        return ""
    said = ", ".join(note.get("status") or ()) or str(note.get("error", ""))[:120]
    return ": " + said if said else ""


def _lookup_payment(journal, txn_id, ref_seq):
    """(state, seqs, why, amount, currency, txn_id) of the payment a PRINT names, None if
    the PRINT is not of a payment (a Z-report), from the journal itself."""
    if not txn_id:
        try:
            named = journal.get(ref_seq)
        except KeyError:
            return (-1, (), "it names seq %d, which is not in the journal" % ref_seq, None, 0, 0)
        except PosfastError:
            return (-1, (), "it names seq %d, which is damaged" % ref_seq, None, 0, 0)
        if named.kind not in [int(k) for k in PAYMENT_KIND_VALUES]:
            return None          # a Z-report or note print
        txn_id = named.txn_id
    try:
        current = journal.payment(txn_id)
    except KeyError:
        where = ("evicted from the journal" if txn_id < journal.oldest_seq
                 else "not in the journal")
        return (-1, (), "its payment txn %d is %s" % (txn_id, where), None, 0, txn_id)
    except PosfastError as exc:
        return (-1, (), "its payment txn %d cannot be read (%s)" % (txn_id, exc), None, 0, txn_id)
    state = int(current.state)
    seqs = tuple(dict.fromkeys((txn_id, int(current.seq))))
    return (state, seqs, "txn %d is %s" % (txn_id, _name(State, state)), int(current.amount),
            int(current.currency), txn_id)
