"""The result of a reconciliation: :class:`Discrepancy`, :class:`ReconcileReport` and
its writers (table, JSON, CSV; streamed)."""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
from dataclasses import dataclass, field, fields
from typing import Optional

import numpy as np

from ..errors import PosfastError

__all__ = ["CATEGORIES", "CategoryTally", "Discrepancy", "ReconcileReport"]

CATEGORIES = ("missing_at_host", "missing_in_journal", "amount_mismatch", "state_mismatch",
              "fee_mismatch", "settled_other_day", "duplicate", "receipt_without_transaction",
              "transaction_without_receipt", "print_unknown", "in_doubt")


@dataclass
class Discrepancy:
    """One finding: its category, the journal records and host rows involved, why."""
    category: str
    terminal: int
    txn_id: int = 0
    journal_seqs: tuple = ()
    host_rows: tuple = ()
    amount: Optional[int] = None
    host_amount: Optional[int] = None
    currency: int = 0
    kind: str = ""
    state: str = ""
    host_state: str = ""
    time: str = ""
    rrn: str = ""
    auth_code: str = ""
    detail: str = ""
    order_ref: str = ""
    host_ref: str = ""
    till: str = ""                          # store mode: the till (journal) it belongs to

    def to_dict(self) -> dict:
        # (asdict's deep copy is a tenth of a report's write time: every field is a
        # str, an int, None or a tuple of ints, so a shallow dict is the same)
        out = {name: getattr(self, name) for name in _FIELDS}
        out["journal_seqs"] = list(self.journal_seqs)
        out["host_rows"] = list(self.host_rows)
        return out


_FIELDS = tuple(f.name for f in fields(Discrepancy))


@dataclass
class ReconcileReport:
    """Result of :func:`reconcile`: ``ok`` when there is no discrepancy."""
    journal: str
    journal_id: str
    day: _dt.date
    terminal: Optional[int]
    host: str
    host_rows_are: str                      # "seq" (back office) or "line" (settlement file)
    discrepancies: list = field(default_factory=list)
    journal_payments: int = 0
    host_payments: int = 0
    matched: int = 0
    journal_net: dict = field(default_factory=dict)   # currency -> net of approved payments
    host_net: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    #: summary mode (``reconcile(..., summary=True)``): the discrepancies were counted and
    #: totalled, not kept; ``discrepancies`` is empty and ``category_totals`` holds them
    summary_only: bool = False
    #: a statement's own figures: its format, the channel matched, and per currency (and
    #: per batch or payout) its rows, gross (signed minor units), fee and net (thousandths
    #: of a minor unit: ``fee_milli``, ``net_milli``; None when it states no fees)
    statement_format: str = ""
    channel: str = ""
    totals: dict = field(default_factory=dict)
    batch_totals: dict = field(default_factory=dict)
    #: store mode (``reconcile_store``): the store and its tills (journal id -> till)
    store: Optional[str] = None
    tills: dict = field(default_factory=dict)
    _totals: Optional[dict] = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        if self.summary_only:
            return not any(t["count"] for t in self.category_totals().values())
        return not self.discrepancies

    def counts(self) -> dict:
        """{category: number of discrepancies}, every category present."""
        if self.summary_only:
            return {c: t["count"] for c, t in self.category_totals().items()}
        out = {c: 0 for c in CATEGORIES}
        counted = getattr(self.discrepancies, "category_counts", None)
        if counted is not None:        # bulk findings counted without making each of them
            out.update(counted())
            return out
        for d in self.discrepancies:
            out[d.category] += 1
        return out

    def category_totals(self) -> dict:
        """{category: {"count": n, "amount": {currency: sum}}}, every category present.

        The amount of a discrepancy is the journal's where the journal holds the
        payment, else the host's; amounts are unsigned minor units as listed."""
        if self._totals is not None:
            return self._totals
        tally = CategoryTally()
        for d in self.discrepancies:
            tally.append(d)
        return tally.totals

    def by_category(self, category: str) -> list:
        return [d for d in self.discrepancies if d.category == category]

    def summary(self) -> str:
        counts = {c: n for c, n in self.counts().items() if n}
        return ("%s %s, %s: %d journal payments, %d host payments, %d matched: %s" % (
            self.day.isoformat(), "terminal %d" % self.terminal if self.terminal is not None
            else "all terminals", self.host, self.journal_payments, self.host_payments,
            self.matched, "no discrepancies" if not counts else "%d discrepancies (%s)" % (
                sum(counts.values()), ", ".join("%s %d" % kv for kv in counts.items()))))

    def _head(self) -> dict:
        out = {"journal": self.journal, "journal_id": self.journal_id,
               "day": self.day.isoformat(), "terminal": self.terminal, "host": self.host,
               "host_rows_are": self.host_rows_are, "ok": self.ok, "counts": self.counts(),
               "journal_payments": self.journal_payments, "host_payments": self.host_payments,
               "matched": self.matched,
               "journal_net": {str(c): v for c, v in sorted(self.journal_net.items())},
               "host_net": {str(c): v for c, v in sorted(self.host_net.items())},
               "notes": self.notes}
        if self.statement_format:
            out["statement"] = {
                "format": self.statement_format, "channel": self.channel,
                "totals": {str(c): v for c, v in sorted(self.totals.items())},
                "batches": {b: {str(c): v for c, v in sorted(t.items())}
                            for b, t in sorted(self.batch_totals.items())}}
        if self.store is not None:
            out["store"], out["tills"] = self.store, dict(self.tills)
        if self.summary_only:
            out["summary_only"] = True
            out["totals"] = {c: {"count": t["count"],
                                 "amount": {str(k): v for k, v in sorted(t["amount"].items())}}
                             for c, t in self.category_totals().items()}
        return out

    def to_dict(self) -> dict:
        out = self._head()
        out["discrepancies"] = [d.to_dict() for d in self.discrepancies]
        return out

    def to_json(self, indent=1) -> str:
        buf = io.StringIO()
        self.write_json(buf, indent=indent)
        return buf.getvalue()

    def write_json(self, out, indent=1) -> None:
        """The text of :meth:`to_json`, written to the text file `out` one
        discrepancy at a time (memory does not grow with the report)."""
        head = dict(self._head(), discrepancies=[])
        text = json.dumps(head, ensure_ascii=False, indent=indent)
        tail = text.rindex("[]")
        out.write(text[:tail + 1])
        step = None if indent is None else (indent if isinstance(indent, str) else " " * indent)
        pad = None if step is None else "\n" + step * 2
        first = True
        for d in self.discrepancies:
            item = json.dumps(d.to_dict(), ensure_ascii=False, indent=indent)
            if pad is None:
                out.write(item if first else ", " + item)
            else:
                out.write(("" if first else ",") + pad + item.replace("\n", pad))
            first = False
        if not first and pad is not None:
            out.write("\n" + step)
        out.write(text[tail + 1:])

    _CSV = ("category", "terminal", "txn_id", "journal_seqs", "host_rows", "amount", "host_amount",
            "currency", "kind", "state", "host_state", "time", "rrn", "auth_code", "detail",
            "order_ref", "host_ref", "till")
    _CSV_SUMMARY = ("category", "count", "currency", "amount")

    def to_csv(self) -> str:
        """One line per discrepancy; seq and row lists are space-separated.  In
        summary mode: one line per category and currency (count, amount)."""
        buf = io.StringIO()
        self.write_csv(buf)
        return buf.getvalue()

    def write_csv(self, out) -> None:
        """The text of :meth:`to_csv`, written to `out` one line at a time."""
        writer = csv.writer(out, lineterminator="\n")
        if self.summary_only:
            writer.writerow(self._CSV_SUMMARY)
            for category, t in self.category_totals().items():
                amounts = sorted(t["amount"].items()) or [("", "")]
                for currency, amount in amounts:
                    writer.writerow((category, t["count"], currency, amount))
            return
        writer.writerow(self._CSV)
        for d in self.discrepancies:
            values = d.to_dict()
            values["journal_seqs"] = " ".join(map(str, d.journal_seqs))
            values["host_rows"] = " ".join(map(str, d.host_rows))
            writer.writerow(["" if values[c] is None else values[c] for c in self._CSV])

    def write(self, out, fmt: str = "table") -> None:
        """Write the report as `fmt` (table, json, csv) to the text file `out`,
        streamed: a report of a million discrepancies never exists as one string."""
        if fmt == "json":
            self.write_json(out)
        elif fmt == "csv":
            self.write_csv(out)
        elif fmt == "table":
            for line in self._table_lines():
                out.write(line + "\n")
        else:
            raise ValueError("format must be table, json or csv, not %r" % (fmt,))

    def _summary_table(self):
        from ..receipt import format_amount
        cells = [("category", "count", "amount")]
        for category, t in self.category_totals().items():
            if not t["count"]:
                continue
            amounts = []
            for currency, amount in sorted(t["amount"].items()):
                try:
                    amounts.append(format_amount(amount, currency or 156)
                                   + ("" if currency in (0, 156) else " (%d)" % currency))
                except PosfastError:
                    amounts.append("%d (%d)" % (amount, currency))
            cells.append((category, str(t["count"]), ", ".join(amounts)))
        if len(cells) == 1:
            return []
        widths = [max(len(row[i]) for row in cells) for i in range(3)]
        lines = []
        for n, row in enumerate(cells):
            lines.append("  ".join(v.rjust(w) if i == 1 else v.ljust(w)
                                   for i, (v, w) in enumerate(zip(row, widths))).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        return lines

    def to_table(self, detail_width=70) -> str:
        return "\n".join(self._table_lines(detail_width))

    def _table_lines(self, detail_width=70):
        """The table's lines: two passes over the discrepancies (widths, then rows)."""
        from ..receipt import format_amount
        yield self.summary()
        for n in self.notes:
            yield "note: " + n
        for currency, t in sorted(self.totals.items()):
            yield "statement %s %d: %d rows, gross %d%s" % (
                self.statement_format, currency, t["rows"], t["gross"], "" if t["fee_milli"] is None
                else ", fees %s, net %s (minor units)" % (_milli(t["fee_milli"]), _milli(t["net_milli"])))
        for batch, by_currency in sorted(self.batch_totals.items()):
            for currency, t in sorted(by_currency.items()):
                yield "  batch %s %d: %d rows, gross %d%s" % (
                    batch, currency, t["rows"], t["gross"], "" if t["fee_milli"] is None
                    else ", fees %s, net %s" % (_milli(t["fee_milli"]), _milli(t["net_milli"])))
        if self.summary_only:
            yield from self._summary_table()
            return
        if not self.discrepancies:
            return
        head = ("category", "term", "txn", "journal seqs", "host " + self.host_rows_are + "s",
                "amount", "detail")

        def cells(d):
            try:
                amount = "" if d.amount is None else format_amount(d.amount, d.currency or 156)
            except PosfastError:
                amount = str(d.amount)
            detail = d.detail if len(d.detail) <= detail_width else d.detail[:detail_width - 3] + "..."
            return (d.category, str(d.terminal), str(d.txn_id or ""),
                    " ".join(map(str, d.journal_seqs)) or "-",
                    " ".join(map(str, d.host_rows)) or "-", amount, detail)

        widths = [len(v) for v in head]
        for d in self.discrepancies:
            widths = [max(w, len(v)) for w, v in zip(widths, cells(d))]

        def line(row):
            return "  ".join(v.rjust(w) if i in (1, 2, 5) else v.ljust(w)
                             for i, (v, w) in enumerate(zip(row, widths))).rstrip()
        yield line(head)
        yield "  ".join("-" * w for w in widths)
        for d in self.discrepancies:
            yield line(cells(d))

    def format(self, fmt: str = "table") -> str:
        return {"table": self.to_table, "json": self.to_json, "csv": self.to_csv}[fmt]()

    def __str__(self):
        return self.to_table()


def _milli(value: int) -> str:
    """Thousandths of a minor unit as minor units, exactly: 17140 -> '17.14'."""
    whole, part = divmod(abs(int(value)), 1000)
    text = str(whole) if not part else ("%d.%03d" % (whole, part)).rstrip("0")
    return ("-" if value < 0 else "") + text


class CategoryTally:
    """Stands in for the list of discrepancies in summary mode: each appended one
    is counted and totalled, then dropped (only the last is kept, for edits)."""

    def __init__(self):
        self.totals = {c: {"count": 0, "amount": {}} for c in CATEGORIES}
        self._last = None

    def append(self, d):
        t = self.totals[d.category]
        t["count"] += 1
        amount = d.amount if d.amount is not None else d.host_amount
        if amount is not None:
            t["amount"][d.currency] = t["amount"].get(d.currency, 0) + int(amount)
        self._last = d

    def __getitem__(self, i):
        if i != -1 or self._last is None:
            raise IndexError(i)
        return self._last

    def bulk(self, category, amounts, currencies):
        t = self.totals[category]
        t["count"] += len(amounts)
        for currency in np.unique(currencies).tolist():
            total = int(amounts[currencies == currency].astype(np.int64).sum())
            t["amount"][int(currency)] = t["amount"].get(int(currency), 0) + total
