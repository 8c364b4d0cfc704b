"""What the dashboard reads from a back office (a mixin of :class:`~posfast.sync.backoffice.BackOffice`).

Plain SQL that runs the same on SQLite and PostgreSQL, through the target's own
``_registry_read``; every method returns plain Python values (dicts, lists), never
database rows.  A payment is folded as the day close folds it: it belongs to the
business day of its first record, and counts once, in the state and amount of its
newest record; training records are left out.
"""
from __future__ import annotations

import json
import uuid
from typing import Optional, Sequence

from ..records import KIND_SIGN, PAYMENT_KINDS, RECEIPT_KINDS, DayRule, Flag, Kind, State, day_number

__all__ = ["DashboardReads", "IN_DOUBT_STATES", "SEARCH_COLUMNS", "net_amount"]

#: The final states of a payment whose outcome nobody knows yet.
IN_DOUBT_STATES = (int(State.PENDING), int(State.UNKNOWN))
#: The record columns a dashboard row carries.
SEARCH_COLUMNS = ("journal_id", "seq", "ts", "day", "terminal", "receipt_no", "kind", "state", "method",
                  "amount", "currency", "txn_id", "rrn", "auth_code", "client_ref", "order_ref", "host_ref")
_PAYMENT_LIST = ", ".join(str(int(k)) for k in sorted(PAYMENT_KINDS))
_RECEIPT_LIST = ", ".join(str(int(k)) for k in sorted(RECEIPT_KINDS))
_NOT_TRAINING = f"(flags & {int(Flag.TRAINING)}) = 0"


def _text(value) -> str:
    """A text column as str, whether the back office keeps it as TEXT or as bytes."""
    if value is None:
        return ""
    if isinstance(value, memoryview):
        value = bytes(value)
    if isinstance(value, bytes):
        return value.rstrip(b"\0").decode("utf-8", "replace")
    return str(value)


def _row(r: Sequence) -> dict:
    d = dict(zip(SEARCH_COLUMNS, r))
    d["journal_id"] = str(uuid.UUID(str(d["journal_id"])))
    for name in ("rrn", "auth_code", "client_ref", "order_ref", "host_ref"):
        d[name] = _text(d[name])
    for name in ("seq", "ts", "day", "terminal", "receipt_no", "kind", "state", "method", "amount",
                 "currency", "txn_id"):
        d[name] = int(d[name])
    d["txn_id"] &= (1 << 64) - 1           # kept signed in the database
    return d


class DashboardReads:
    """Reads of the dashboard; mixed into BackOffice (needs ``_registry_read`` and ``_mark``)."""

    _text_params: Optional[bool] = None

    def _blob_param(self, text: str):
        """`text` as the parameter a fixed-width text column (rrn, client_ref) compares with:
        bytes where the back office keeps them as BLOB/bytea, str where as TEXT."""
        if self._text_params is None:
            got = self._registry_read("SELECT rrn FROM records LIMIT 1", [])
            if not got:
                return text.encode("utf-8")
            self._text_params = isinstance(got[0][0], str)
        return text if self._text_params else text.encode("utf-8")

    def _cols(self, prefix: str = "") -> str:
        return ", ".join(f'{prefix}"{c}"' if c not in ("order_ref", "host_ref") else f"{prefix}{c}"
                         for c in SEARCH_COLUMNS)

    def day_rules(self) -> dict:
        """journal id -> its :class:`~posfast.records.DayRule` (as anchored; UTC when unknown)."""
        out = {}
        for r in self._registry_read("SELECT journal_id, day_offset_min, day_start_min, day_tz FROM journals", []):
            jid = uuid.UUID(str(r[0]))
            out[jid] = DayRule.from_header(int(r[1] or 0), int(r[2] or 0), r[3] or "") if r[1] is not None \
                else DayRule()
        return out

    def latest_day(self, journal_ids: Sequence) -> Optional[int]:
        """The newest business day with a payment of these journals (a day number), or None."""
        if not journal_ids:
            return None
        marks = ", ".join([self._mark] * len(journal_ids))
        got = self._registry_read(
            f"SELECT max(day) FROM records WHERE journal_id IN ({marks}) AND kind IN ({_PAYMENT_LIST})",
            [self._journal_param(uuid.UUID(str(j))) for j in journal_ids])
        return None if not got or got[0][0] is None else int(got[0][0])

    def day_payments(self, journal_ids: Sequence, day, *, window: int = 7) -> list:
        """The payments of these journals that belong to business day `day`: one dict per
        payment (its newest record's columns, plus ``first_ts``: the time of its first
        record), in the order they began.  Records of `window` days either side are read
        to find each payment's first and newest record (an outcome that came more than
        `window` days after its payment began is not seen)."""
        if not journal_ids:
            return []
        d = day_number(day)
        mark = self._mark
        marks = ", ".join([mark] * len(journal_ids))
        params = [self._journal_param(uuid.UUID(str(j))) for j in journal_ids]
        rows = self._registry_read(
            f"SELECT {self._cols()} FROM records WHERE journal_id IN ({marks}) AND kind IN ({_PAYMENT_LIST}) "
            f"AND {_NOT_TRAINING} AND day BETWEEN {mark} AND {mark} ORDER BY journal_id, seq",
            params + [d - window, d + window])
        first: dict = {}
        last: dict = {}
        for r in rows:
            row = _row(r)
            key = (row["journal_id"], row["txn_id"] or -row["seq"])   # (no txn id: a payment of its own)
            first.setdefault(key, row)
            last[key] = row
        out = []
        for key, f in first.items():
            if f["day"] != d:
                continue
            row = dict(last[key])
            row["first_ts"] = f["ts"]
            out.append(row)
        out.sort(key=lambda p: (p["first_ts"], p["journal_id"], p["seq"]))
        return out

    def payments_in_doubt(self, since_day=None, limit: int = 500) -> list:
        """Payments whose newest record is PENDING or UNKNOWN (since `since_day`), oldest first."""
        mark = self._mark
        params: list = []
        where = ""
        if since_day is not None:
            where = f" AND day >= {mark}"
            params.append(day_number(since_day))
        states = ", ".join(str(s) for s in IN_DOUBT_STATES)
        sql = (f"SELECT {self._cols('r.')} FROM records r JOIN ("
               f"SELECT journal_id, txn_id, max(seq) AS last_seq FROM records WHERE kind IN ({_PAYMENT_LIST}) "
               f"AND {_NOT_TRAINING}{where} GROUP BY journal_id, txn_id) f "
               f"ON r.journal_id = f.journal_id AND r.seq = f.last_seq WHERE r.state IN ({states}) "
               f"ORDER BY r.ts LIMIT {int(limit)}")
        return [_row(r) for r in self._registry_read(sql, params)]

    def search(self, query: str, limit: int = 200) -> list:
        """Records whose order ref, host ref, client ref or RRN is `query`, or whose receipt
        code it is (``"3-000123"``: terminal 3, receipt 123; ``"000123"``: receipt 123 of any
        terminal); newest first."""
        q = query.strip()
        if not q:
            return []
        mark = self._mark
        conds = [f"order_ref = {mark}", f"host_ref = {mark}", f'"rrn" = {mark}', f'"client_ref" = {mark}']
        params: list = [q, q, self._blob_param(q), self._blob_param(q)]
        terminal, dash, number = q.rpartition("-")
        if number.isdigit() and (not dash or terminal.isdigit()) and len(number) <= 10:
            cond = f'("receipt_no" = {mark} AND "kind" IN ({_RECEIPT_LIST})'
            params.append(int(number))
            if dash:
                cond += f' AND "terminal" = {mark}'
                params.append(int(terminal))
            conds.append(cond + ")")
        sql = (f"SELECT {self._cols()} FROM records WHERE ({' OR '.join(conds)}) "
               f"ORDER BY ts DESC LIMIT {int(limit)}")
        return [_row(r) for r in self._registry_read(sql, params)]

    def day_closes(self, journal_ids: Optional[Sequence] = None, limit: int = 100) -> list:
        """Z-reports (DAY_CLOSE records), newest day first: their row columns plus the
        decoded ``report`` (the payload's JSON, ``{}`` when it does not decode)."""
        mark = self._mark
        params: list = []
        where = f'"kind" = {int(Kind.DAY_CLOSE)}'
        if journal_ids is not None:
            if not journal_ids:
                return []
            where += f" AND journal_id IN ({', '.join([mark] * len(journal_ids))})"
            params = [self._journal_param(uuid.UUID(str(j))) for j in journal_ids]
        out = []
        for r in self._registry_read(f"SELECT {self._cols()}, payload FROM records WHERE {where} "
                                     f"ORDER BY day DESC, ts DESC LIMIT {int(limit)}", params):
            row = _row(r[:len(SEARCH_COLUMNS)])
            try:
                report = json.loads(bytes(r[len(SEARCH_COLUMNS)]).decode("utf-8"))
            except (ValueError, TypeError):
                report = {}
            row["report"] = report if isinstance(report, dict) else {}
            out.append(row)
        return out


def net_amount(payment: dict) -> int:
    """A folded payment's signed amount in the day's net: approved sales and completions
    count plus, refunds, voids and reversals minus, anything else 0."""
    if payment["state"] != int(State.APPROVED):
        return 0
    try:
        return KIND_SIGN.get(Kind(payment["kind"]), 0) * payment["amount"]
    except ValueError:
        return 0
