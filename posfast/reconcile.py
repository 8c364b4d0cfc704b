"""Reconciliation (对账): what the journal says was paid, against what the host saw
and what was printed, for one business day.

``reconcile(journal, host, day=..., terminal=None)`` returns a
:class:`ReconcileReport` with one :class:`Discrepancy` per finding, each naming
the journal records (seqs) and the host rows (back-office seqs, or settlement
file line numbers) involved, in one of these categories:

``missing_at_host``
    a payment of the journal the host does not hold (back office: any state,
    the record was never synced; settlement file: an approved payment the
    acquirer did not settle).
``missing_in_journal``
    a host row with no payment in the journal (deleted, never written here, or
    evicted: the detail says which).
``amount_mismatch``
    matched, but amount or currency differ (back office: the first record's
    amount too).  Type is part of every match key, so a sale settled as a
    refund shows as missing on both sides.
``state_mismatch``
    matched, but the states differ (back office behind, or the acquirer
    settled a payment the journal holds as declined, failed, reversed, voided).
``duplicate``
    the same payment twice: two approved journal payments with one RRN or one
    client reference, or a settlement row listed twice.
``receipt_without_transaction``
    a receipt on paper (PRINT record OK or UNKNOWN) whose payment is missing,
    pending, declined, failed, reversed or voided.
``transaction_without_receipt``
    an approved sale, refund, void, pre-authorisation or completion with no
    print at all.
``print_unknown``
    an approved payment whose only prints have an UNKNOWN outcome (the paper
    may or may not exist).
``in_doubt``
    a payment still PENDING (begun, never finished); names the host row when
    the host has an answer for it.

Hosts
-----
* the back office of :mod:`posfast.sync` (``"sqlite:///back.db"``, a
  ``postgresql://`` DSN, a SqliteTarget / PostgresTarget, or a path to the
  SQLite file): its ``records`` table is read for the journal id and the day
  and folded into payments exactly like the journal; matched on txn_id.
* an acquirer settlement file in CSV (a path ending ``.csv``, or a
  :class:`Settlement` from :func:`read_settlement`).  Columns (header row
  required, any order, extra columns ignored):

  ``terminal``   terminal number (integer)
  ``time``       ISO 8601, ``2026-11-20T13:45:12`` or ``2026-11-20 13:45:12``,
                 optional fraction and ``Z`` / ``+08:00`` offset; without an
                 offset it is local time of the journal's day rule
  ``rrn``        retrieval reference number (up to 12 characters, may be empty)
  ``auth_code``  authorisation code (up to 6 characters, may be empty)
  ``amount``     integer minor units (1250 for 12.50), positive; refunds,
                 voids and reversals may be negative
  ``currency``   ISO 4217 numeric (156) or alphabetic (CNY)
  ``type``       sale, refund, void, reversal, preauth or completion

  A row matches a journal payment by RRN first, then by terminal +
  authorisation code, then by terminal + amount + currency + type within
  ``window`` seconds (default 300) of the payment's time.  Only payments not
  paid in cash or voucher are expected in a settlement file.  A malformed file
  raises :class:`SettlementError` naming the line, the column and the value;
  nothing is reconciled from it.

A payment belongs to the business day of its first record; its outcome and
receipt are looked for until the end of the next business day.  Training
records are left out.  The report renders as Python objects, JSON
(:meth:`ReconcileReport.to_json`), CSV (:meth:`~ReconcileReport.to_csv`) and a
table (:meth:`~ReconcileReport.to_table`).  The matching is vectorized with
numpy: no Python loop runs per record, only per discrepancy.

>>> import posfast, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "till.pfj")
>>> j = posfast.Journal.create(path, capacity=1024)
>>> seq = j.append(terminal=1, kind="sale", state="approved", amount=1250, method="card",
...                currency=156, rrn="000000000042", ts=1795140000_000000)
>>> csv_path = os.path.join(os.path.dirname(path), "settlement.csv")
>>> _ = open(csv_path, "w").write("terminal,time,rrn,auth_code,amount,currency,type\\n"
...                               "1,2026-11-20T02:00:05Z,000000000042,,1250,CNY,sale\\n")
>>> report = reconcile(j, csv_path, day="2026-11-20")
>>> [(d.category, d.journal_seqs, d.host_rows) for d in report.discrepancies]
[('transaction_without_receipt', (1,), ())]
>>> j.close()
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import sqlite3
import urllib.parse
import warnings
from dataclasses import asdict, dataclass, field
from collections.abc import Sequence
from typing import Optional

import numpy as np

from .dayclose import PAYMENT_KIND_VALUES, TXN_DTYPE, payment_transactions, _SIGN_TABLE
from .errors import PosfastError
from .records import RECORD_DTYPE, Flag, Kind, Method, State, day_number, day_to_date, now_us

__all__ = ["CATEGORIES", "Discrepancy", "ReconcileReport", "Settlement", "SettlementError",
           "SETTLEMENT_COLUMNS", "read_settlement", "reconcile", "demo_reconcile"]

CATEGORIES = ("missing_at_host", "missing_in_journal", "amount_mismatch", "state_mismatch",
              "duplicate", "receipt_without_transaction", "transaction_without_receipt",
              "print_unknown", "in_doubt")
_ORDER = {c: i for i, c in enumerate(CATEGORIES)}
SETTLEMENT_COLUMNS = ("terminal", "time", "rrn", "auth_code", "amount", "currency", "type")
_ALIASES = {"auth": "auth_code", "authcode": "auth_code", "auth_no": "auth_code",
            "approval_code": "auth_code", "timestamp": "time", "datetime": "time",
            "date_time": "time", "kind": "type", "txn_type": "type", "transaction_type": "type",
            "terminal_id": "terminal", "tid": "terminal", "reference": "rrn",
            "retrieval_reference_number": "rrn", "ref_no": "rrn"}
_RECEIPT_KINDS = np.array([Kind.SALE, Kind.REFUND, Kind.VOID, Kind.PREAUTH, Kind.COMPLETION],
                          dtype=np.uint8)
_NOT_SETTLED_METHODS = (Method.CASH, Method.VOUCHER)
_NOT_SETTLED_KINDS = np.array([Kind.CASH_IN, Kind.CASH_OUT], dtype=np.uint8)
_SETTLEMENT_KINDS = (Kind.SALE, Kind.REFUND, Kind.VOID, Kind.REVERSAL, Kind.PREAUTH, Kind.COMPLETION)
_APPROVED, _PENDING = int(State.APPROVED), int(State.PENDING)
_PAPER = np.array([State.OK, State.UNKNOWN], dtype=np.uint8)
_US = 1_000_000


class SettlementError(PosfastError, ValueError):
    """A settlement file cannot be read: names the file, the line, the column and the value."""

    def __init__(self, message, path=None, line=None, column=None, value=None):
        super().__init__(message)
        self.path, self.line, self.column, self.value = path, line, column, value


# ---------------------------------------------------------------- report objects
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

    def to_dict(self) -> dict:
        out = asdict(self)
        out["journal_seqs"] = list(self.journal_seqs)
        out["host_rows"] = list(self.host_rows)
        return out


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
        for d in self.discrepancies:
            out[d.category] += 1
        return out

    def category_totals(self) -> dict:
        """{category: {"count": n, "amount": {currency: sum}}}, every category present.

        The amount of a discrepancy is the journal's where the journal holds the
        payment, else the host's; amounts are unsigned minor units as listed."""
        if self._totals is not None:
            return self._totals
        tally = _Tally()
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
            "currency", "kind", "state", "host_state", "time", "rrn", "auth_code", "detail")
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
        from .receipt import format_amount
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
        from .receipt import format_amount
        yield self.summary()
        for n in self.notes:
            yield "note: " + n
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


# ---------------------------------------------------------------- settlement files
SETTLEMENT_DTYPE = np.dtype([("line", "<u4"), ("terminal", "<u4"), ("ts", "<i8"), ("amount", "<i8"),
                             ("currency", "<u2"), ("kind", "u1"), ("rrn", "S12"),
                             ("auth_code", "S6")])


@dataclass
class Settlement:
    """An acquirer settlement file, parsed: one SETTLEMENT_DTYPE row per line."""
    path: str
    rows: np.ndarray

    def __len__(self):
        return len(self.rows)


def _column_error(path, line, column, value, why):
    return SettlementError("posfast: settlement file %s, line %d, column %s: %r %s"
                           % (path, line, column, value, why), path, line, column, value)


def _find_bad(path, lines, column, values, check, why):
    """Error path: the first value failing `check` (a callable raising on bad input)."""
    for line, value in zip(lines, values):
        try:
            check(value)
        except (ValueError, TypeError, OverflowError, UnicodeError, KeyError):
            raise _column_error(path, line, column, value, why) from None
    raise SettlementError("posfast: settlement file %s: column %s could not be read" % (path, column),
                          path, None, column, None)


def _currency_codes():
    from .receipt import CURRENCIES
    return {alpha: number for number, (alpha, _exp) in CURRENCIES.items()}


def _parse_times(path, lines, values, offset_minutes):
    """ISO 8601 strings to UTC microseconds; naive times are local (offset_minutes).

    numpy parses the usual shapes at once; anything else is parsed value by value
    with datetime.fromisoformat, and the first value neither can read is an error."""
    arr = np.asarray([v.strip() for v in values], dtype=str)
    n = len(arr)
    if not n:
        return np.zeros(0, np.int64)
    width = arr.dtype.itemsize // 4
    codes = arr.view(np.uint32).reshape(n, width) if width else np.zeros((n, 0), np.uint32)
    lengths = np.char.str_len(arr)
    has_zone = np.zeros(n, bool)
    if width > 10:
        tail = codes[:, 10:]
        has_zone = ((tail == ord("Z")) | (tail == ord("z")) | (tail == ord("+"))
                    | (tail == ord("-"))).any(axis=1)
    has_clock = (lengths >= 16) & np.isin(codes[:, 10] if width > 10 else np.zeros(n, np.uint32),
                                          [ord("T"), ord(" "), ord("t")])
    out = np.zeros(n, np.int64)
    try:
        if not has_clock.all():
            raise ValueError("date without a time")
        naive = ~has_zone
        if naive.any():
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                stamps = arr[naive].astype("datetime64[us]").astype(np.int64)
            out[naive] = stamps - offset_minutes * 60 * _US
        for i in np.flatnonzero(has_zone).tolist():
            moment = _dt.datetime.fromisoformat(arr[i].strip().replace("z", "Z"))
            out[i] = (moment - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)) \
                // _dt.timedelta(microseconds=1)
    except (ValueError, TypeError, OverflowError, Warning):
        local = _dt.timezone(_dt.timedelta(minutes=offset_minutes))
        epoch = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
        for i, (line, value) in enumerate(zip(lines, values)):
            text = value.strip()
            try:
                if len(text) < 16 or text[10] not in "Tt ":
                    raise ValueError("no time of day")
                moment = _dt.datetime.fromisoformat(text.replace("z", "Z"))
            except ValueError:
                raise _column_error(path, line, "time", value, "is not an ISO 8601 time with "
                                    "date and clock (2026-11-20T13:45:12[+08:00])") from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=local)
            out[i] = (moment - epoch) // _dt.timedelta(microseconds=1)
    return out


#: Characters of text parsed at a time: the file is read, split and converted
#: block by block, so only one block's Python strings exist at once and the
#: parsed rows (SETTLEMENT_DTYPE, 45 bytes each) are all that grows with the file.
_BLOCK_CHARS = 1 << 21


def _codec(encoding):
    """The codec name to decode with: UTF-8 (the default) strips a byte-order mark."""
    import codecs
    name = "utf-8" if encoding is None else str(encoding)
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise SettlementError("posfast: unknown encoding %r for the settlement file (try utf-8, "
                              "gbk, gb18030, latin-1, cp1252)" % name, None, None, None,
                              name) from None
    return "utf-8-sig" if info.name in ("utf-8", "utf-8-sig") else info.name


def read_settlement(source, utc_offset=0, path=None, encoding=None) -> Settlement:
    """Parse an acquirer settlement CSV (a path, or an open text file).

    `utc_offset` (minutes, or a DayRule) is the local time of rows without an
    offset.  `encoding` is the file's text encoding (default UTF-8, with or
    without a byte-order mark; e.g. ``"gbk"`` or ``"gb18030"`` for Chinese bank
    exports); it applies to paths, not to text streams.  Line endings may be
    LF, CRLF or CR alone.  The file is read in blocks: memory grows with the
    parsed rows only (45 bytes a row), not with the text.  Raises
    :class:`SettlementError` with line, column and value on the first malformed
    value; never returns part of a file.

    >>> import io
    >>> s = read_settlement(io.StringIO("terminal,time,rrn,auth_code,amount,currency,type\\n"
    ...                                 "3,2026-11-20 13:45:12,123456789012,A1B2C3,1250,156,sale\\n"),
    ...                     utc_offset=480)
    >>> s.rows[["line", "terminal", "amount", "rrn"]].tolist()
    [(2, 3, 1250, b'123456789012')]
    >>> read_settlement(io.StringIO("terminal,time,rrn,auth_code,amount,currency,type\\n"
    ...                             "3,2026-11-20 13:45:12,1,,12.50,156,sale\\n"))
    Traceback (most recent call last):
    ...
    posfast.reconcile.SettlementError: posfast: settlement file <stream>, line 2, column amount: '12.50' is not an integer number of minor units (write 1250 for 12.50)
    """
    offset = getattr(utc_offset, "offset_minutes", utc_offset)
    if isinstance(source, (str, os.PathLike)):
        path = path or os.fspath(source)
        codec = _codec(encoding)
        try:
            with open(source, encoding=codec, newline="") as handle:
                return _read_settlement(handle, path, int(offset))
        except UnicodeDecodeError as exc:
            raise _undecodable(path, codec, encoding, exc) from None
    return _read_settlement(source, path or getattr(source, "name", "<stream>"), int(offset))


def _undecodable(path, codec, asked, exc):
    """The error for a file that is not text in `codec`: names the first bad line
    (found by decoding the file again line by line) and suggests --encoding."""
    line, bad = None, exc.object[exc.start:exc.end]
    try:
        with open(path, "rb") as handle:
            number = 0
            for raw in handle:
                for piece in raw.rstrip(b"\n").rstrip(b"\r").split(b"\r"):
                    number += 1
                    try:
                        piece.decode(codec)
                    except UnicodeDecodeError as err:
                        line, bad = number, piece[err.start:err.end]
                        break
                if line is not None:
                    break
    except OSError:
        pass
    name = {"utf-8-sig": "UTF-8"}.get(codec, codec)
    hint = ("it may be in another encoding: give it with --encoding (e.g. --encoding gbk for a "
            "Chinese bank export; API: read_settlement(..., encoding='gbk'))" if asked is None
            else "check the --encoding given (%s)" % asked)
    return SettlementError("posfast: settlement file %s%s: bytes %r are not %s text; %s"
                           % (path, "" if line is None else ", line %d" % line, bytes(bad), name,
                              hint), path, line, None, bytes(bad))


def _text_blocks(handle):
    """(first line number, text) of blocks of whole lines, newlines made "\\n" (LF,
    CRLF and CR alone all end a line).  A block never ends inside a quoted field."""
    line, carry = 1, ""
    while True:
        chunk = handle.read(_BLOCK_CHARS)
        if not isinstance(chunk, str):
            raise TypeError("read_settlement reads text: open the file in text mode, or give "
                            "its path (and encoding=...)")
        text = carry + chunk
        if not chunk:
            if text:
                yield line, text.replace("\r\n", "\n").replace("\r", "\n")
            return
        # a CR at the end may be the first half of a CRLF: keep it for the next block
        cut = len(text) - 1 if text.endswith("\r") else len(text)
        end = max(text.rfind("\n", 0, cut), text.rfind("\r", 0, cut)) + 1
        if end <= 0 or text.count('"', 0, end) % 2:
            carry = text                   # no whole line yet, or inside a quoted field
            continue
        block, carry = text[:end], text[end:]
        if "\r" in block:
            block = block.replace("\r\n", "\n").replace("\r", "\n")
        yield line, block
        line += block.count("\n")


def _split_block(text, line0, path, width, header_line):
    """(header or None, its line, data line numbers, columns) of one block of text.

    `width` is None until the header is found (then the block's first non-blank
    row is the header).  Blocks without quotes are split with str.split (several
    times faster than the csv module, same result); others go through csv."""
    header = None
    if '"' not in text:
        numbered = [(number, line) for number, line in enumerate(text.split("\n"), line0)
                    if line.strip()]
        if width is None:
            if not numbered:
                return None, 0, [], []
            (header_line, first), numbered = numbered[0], numbered[1:]
            header = first.split(",")
            width = len(header)
        lines = [number for number, _ in numbered]
        data = [line for _, line in numbered]
        commas = np.fromiter(map(str.count, data, [","] * len(data)), np.int64, len(data))
        if (commas != width - 1).any():
            i = int(np.argmax(commas != width - 1))
            raise SettlementError("posfast: settlement file %s, line %d: %d fields, the header "
                                  "(line %d) has %d" % (path, lines[i], commas[i] + 1, header_line,
                                                        width), path, lines[i])
        cells = ",".join(data).split(",") if data else []
        return header, header_line, lines, [cells[k::width] for k in range(width)]
    reader = csv.reader(io.StringIO(text))
    lines, records = [], []
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if width is None:
                header, header_line, width = row, line0 - 1 + reader.line_num, len(row)
                continue
            if len(row) != width:
                number = line0 - 1 + reader.line_num
                raise SettlementError("posfast: settlement file %s, line %d: %d fields, the header "
                                      "(line %d) has %d" % (path, number, len(row), header_line,
                                                            width), path, number)
            lines.append(line0 - 1 + reader.line_num)
            records.append(row)
    except csv.Error as exc:
        number = line0 - 1 + reader.line_num
        raise SettlementError("posfast: settlement file %s, line %d: %s" % (path, number, exc),
                              path, number) from None
    columns = [list(c) for c in zip(*records)] if records else [[] for _ in range(width or 0)]
    return header, header_line, lines, columns


def _column_names(header, header_line, path):
    """The SETTLEMENT_COLUMNS position of each column; refuses a header that lacks
    a column or names one twice (directly, or through an alias)."""
    if header:
        header = [header[0].lstrip("\ufeff")] + list(header[1:])
    keys = [h.strip().lower().replace(" ", "_").replace("-", "_") for h in header]
    names = [_ALIASES.get(k, k) for k in keys]
    where = {}
    for i, name in enumerate(names):
        if name not in SETTLEMENT_COLUMNS:
            continue
        if name in where:
            j = where[name]
            raise SettlementError(
                "posfast: settlement file %s, line %d: the header names column %s twice: %r "
                "(field %d) and %r (field %d); keep one of them, or rename the other"
                % (path, header_line, name, header[j].strip(), j + 1, header[i].strip(), i + 1),
                path, header_line, name, (header[j].strip(), header[i].strip()))
        where[name] = i
    missing = [c for c in SETTLEMENT_COLUMNS if c not in where]
    if missing:
        raise SettlementError("posfast: settlement file %s, line %d: header lacks column(s) %s; "
                              "columns are %s" % (path, header_line, ", ".join(missing),
                                                  ",".join(SETTLEMENT_COLUMNS)),
                              path, header_line, missing[0])
    return where


def _read_settlement(handle, path, offset) -> Settlement:
    header = where = width = None
    header_line = 0
    parts = []
    for line0, text in _text_blocks(handle):
        found, header_line, lines, columns = _split_block(text, line0, path, width, header_line)
        if found is not None:
            header, width = found, len(found)
            where = _column_names(header, header_line, path)
        if lines:
            col = {name: columns[i] for name, i in where.items()}
            parts.append(_settlement_rows(col, lines, path, offset))
        del text, lines, columns
    if header is None:
        raise SettlementError("posfast: settlement file %s is empty; it needs a header row: %s"
                              % (path, ",".join(SETTLEMENT_COLUMNS)), path, 1)
    if len(parts) == 1:
        return Settlement(path, parts[0])
    return Settlement(path, np.concatenate(parts) if parts else np.zeros(0, SETTLEMENT_DTYPE))


def _settlement_rows(col, lines, path, offset) -> np.ndarray:
    """SETTLEMENT_DTYPE rows of one block: {column: list of text values}, line numbers."""
    n = len(lines)
    rows = np.zeros(n, SETTLEMENT_DTYPE)
    rows["line"] = lines

    def integers(name, why, lo, hi):
        values = col[name]
        try:
            arr = np.fromiter(map(int, values), np.int64, n)
        except (ValueError, OverflowError):
            for line, value in zip(lines, values):
                try:
                    number = int(value)
                except ValueError:
                    raise _column_error(path, line, name, value, why) from None
                if not lo <= number <= hi:
                    raise _column_error(path, line, name, value,
                                        "is out of range %d..%d" % (lo, hi)) from None
            raise
        bad = (arr < lo) | (arr > hi)
        if bad.any():
            i = int(np.argmax(bad))
            raise _column_error(path, lines[i], name, values[i], "is out of range %d..%d" % (lo, hi))
        return arr

    def lookup(name, table, dtype):
        # few distinct values (types, currencies): each is checked once
        known = {}
        for value in set(col[name]):
            known[value] = table(value.strip())
            if known[value] is None:
                i = col[name].index(value)
                raise _column_error(path, lines[i], name, value, {
                    "type": "is not a payment type; use sale, refund, void, reversal, preauth or "
                            "completion",
                    "currency": "is not an ISO 4217 currency code (156 or CNY)"}[name])
        return np.fromiter(map(known.__getitem__, col[name]), dtype, n)

    rows["terminal"] = integers("terminal", "is not a terminal number", 0, 2**32 - 1)
    joined = "\x00".join(col["amount"])
    if "." in joined or "," in joined:
        i = next(k for k, v in enumerate(col["amount"]) if "." in v or "," in v)
        raise _column_error(path, lines[i], "amount", col["amount"][i],
                            "is not an integer number of minor units (write 1250 for 12.50)")
    del joined
    amount = integers("amount", "is not an integer number of minor units", -(2**62), 2**62)

    def kind_of(text):
        name = text.lower().replace("-", "_")
        kind = Kind.__members__.get({"pre_auth": "preauth"}.get(name, name).upper())
        return int(kind) if kind in _SETTLEMENT_KINDS else None

    alpha = {}

    def currency_of(text):
        if text.isdigit() and len(text) <= 3:
            return int(text)
        if not alpha:
            alpha.update(_currency_codes())
        return alpha.get(text.upper())

    rows["kind"] = lookup("type", kind_of, np.uint8)
    rows["currency"] = lookup("currency", currency_of, np.uint16)
    negative = amount < 0
    if negative.any():
        bad = negative & (_SIGN_TABLE[rows["kind"]] >= 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise _column_error(path, lines[i], "amount", col["amount"][i],
                                "is negative for a %s; only refunds, voids and reversals may be "
                                "negative" % Kind(int(rows["kind"][i])).name.lower())
    rows["amount"] = np.abs(amount)
    for name, size in (("rrn", 12), ("auth_code", 6)):
        values = col[name]
        if " " in "".join(values):
            values = [v.strip() for v in values]
        if max(map(len, values)) > size:
            i = next(k for k, v in enumerate(values) if len(v) > size)
            raise _column_error(path, lines[i], name, col[name][i], "is longer than %d characters"
                                % size)
        try:
            rows[name] = np.array(values, dtype="S%d" % size)
        except UnicodeEncodeError:
            _find_bad(path, lines, name, col[name], lambda v: v.encode("ascii"),
                      "holds characters that are not ASCII")
    rows["ts"] = _parse_times(path, lines, col["time"], offset)
    return rows


# ---------------------------------------------------------------- host sources
# what the matching reads of a back-office record (training records are skipped in SQL)
_HOST_COLUMNS = ("seq", "ts", "amount", "txn_id", "day", "terminal", "currency", "kind", "state",
                 "auth_code", "rrn", "client_ref")


def _host_source(host):
    """('settlement', Settlement|path) | ('sqlite', path) | ('postgres', dsn)."""
    if isinstance(host, Settlement):
        return "settlement", host
    path = getattr(host, "path", None)
    if path is not None and type(host).__name__ == "SqliteTarget":
        return "sqlite", str(path)
    dsn = getattr(host, "dsn", None)
    if dsn is not None and type(host).__name__ == "PostgresTarget":
        return "postgres", dsn
    if isinstance(host, os.PathLike):
        host = os.fspath(host)
    if not isinstance(host, str):
        raise TypeError("host must be a back-office URL or target, a settlement CSV path or a "
                        "Settlement, not %s" % type(host).__name__)
    lower = host.lower()
    if lower.startswith("sqlite:///"):
        return "sqlite", host[len("sqlite:///"):]
    if lower.startswith(("postgresql://", "postgres://")):
        return "postgres", host
    if lower.startswith(("http://", "https://")):
        raise ValueError("reconcile reads the back-office database itself: give the database the "
                         "sync server writes to (sqlite:///FILE or postgresql://...), not %s" % host)
    if not os.path.exists(host):
        raise FileNotFoundError("posfast: no host file %s (give a settlement .csv, a back-office "
                                "SQLite file, sqlite:///FILE or postgresql://...)" % host)
    with open(host, "rb") as handle:
        magic = handle.read(16)
    if magic == b"SQLite format 3\x00":
        return "sqlite", host
    return "settlement", host


def _rows_from_db(fetched) -> np.ndarray:
    db_dtype = np.dtype([(n, "<i8" if RECORD_DTYPE.fields[n][0] == np.dtype("<u8")
                          else RECORD_DTYPE.fields[n][0]) for n in _HOST_COLUMNS])
    rows = np.zeros(len(fetched), RECORD_DTYPE)
    if fetched:
        got = np.array(fetched, dtype=db_dtype)
        for name in _HOST_COLUMNS:
            rows[name] = got[name].astype(RECORD_DTYPE.fields[name][0])
    return rows[np.argsort(rows["seq"], kind="stable")]


def _back_office_rows(kind, where, journal_id, first_day, last_day, terminal):
    columns = ", ".join('"%s"' % c for c in _HOST_COLUMNS)
    kinds = ", ".join(str(int(k)) for k in PAYMENT_KIND_VALUES)
    if kind == "sqlite":
        if not os.path.exists(where):
            raise FileNotFoundError("posfast: no back-office database %s" % where)
        uri = "file:%s?mode=ro" % urllib.parse.quote(os.path.abspath(where))
        conn = sqlite3.connect(uri, uri=True)
        mark = "?"
        jid = str(journal_id)
    else:
        try:
            import psycopg
        except ImportError:
            raise ImportError("reconciling against PostgreSQL needs psycopg 3: "
                              "pip install 'psycopg[binary]'") from None
        conn = psycopg.connect(where, connect_timeout=10)
        mark = "%s"
        jid = journal_id
    sql = ("SELECT %s FROM records WHERE journal_id = %s AND day BETWEEN %s AND %s AND kind IN (%s) "
           "AND (flags & %d) = 0" % (columns, mark, mark, mark, kinds, int(Flag.TRAINING)))
    params = [jid, first_day, last_day]
    if terminal is not None:
        sql += " AND terminal = %s" % mark
        params.append(int(terminal))
    try:
        try:
            fetched = conn.execute(sql, params).fetchall()
            held = conn.execute("SELECT count(*) FROM records WHERE journal_id = %s" % mark,
                                [jid]).fetchone()[0]
        except Exception as exc:
            if "records" in str(exc) or "no such table" in str(exc):
                raise PosfastError("posfast: %s is not a posfast back office (no records table: "
                                   "%s)" % (where, exc)) from None
            raise
    finally:
        conn.close()
    return _rows_from_db([tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                          for r in fetched] if kind != "sqlite" else fetched), held


# ---------------------------------------------------------------- matching helpers
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _key_ids(*columns) -> np.ndarray:
    """Exact dense ids (0..groups-1) of the row-wise values of several columns.

    The columns' bytes are folded into a 64-bit hash for a fast integer sort;
    equal hashes are then checked byte for byte, and a collision (never seen in
    practice) falls back to sorting the raw bytes, so the ids are always exact.
    """
    n = len(columns[0])
    if not n:
        return np.zeros(0, np.int64)
    sizes = [np.asarray(c).dtype.itemsize for c in columns]
    width = -(-sum(sizes) // 8) * 8
    raw = np.zeros((n, width), np.uint8)
    offset = 0
    for c, size in zip(columns, sizes):
        raw[:, offset:offset + size] = np.ascontiguousarray(c).view(np.uint8).reshape(n, size)
        offset += size
    words = raw.view("<u8")
    h = np.full(n, 0xCBF29CE484222325, np.uint64)
    for k in range(words.shape[1]):
        h ^= words[:, k]
        h *= _MIX
        h ^= h >> np.uint64(29)
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if words.shape[1] > 1 and not (words == words[first[inverse]]).all():
        _, inverse = np.unique(raw.view("V%d" % width).ravel(), return_inverse=True)
        inverse = inverse.reshape(-1)
    return inverse.astype(np.int64)


def _dedupe(ids, prefer):
    """Representative of each id (dense, from _key_ids: first by `prefer` ascending,
    then position) and the position of each element's representative."""
    n = len(ids)
    if not n:
        return np.zeros(0, bool), np.zeros(0, np.int64)
    # stable sorts: among equals, the earlier position comes first
    order = (np.argsort(ids, kind="stable") if not prefer.any()
             else np.lexsort((prefer, ids)))
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_ids[1:] != sorted_ids[:-1])))
    rep_of_id = np.empty(int(sorted_ids[-1]) + 1, np.int64)
    rep_of_id[sorted_ids[starts]] = order[starts]
    rep = rep_of_id[ids]
    return rep == np.arange(n), rep


def _join(j_ids, h_ids):
    """Pairs (j index, h index) of equal ids; ids unique on each side."""
    if not len(j_ids) or not len(h_ids):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    _, ji, hi = np.intersect1d(j_ids, h_ids, assume_unique=True, return_indices=True)
    return ji.astype(np.int64), hi.astype(np.int64)


def _split_ids(j_columns, h_columns):
    """_key_ids over both sides at once, split back: equal ids mean equal values."""
    ids = _key_ids(*[np.concatenate((a, b)) for a, b in zip(j_columns, h_columns)])
    return ids[:len(j_columns[0])], ids[len(j_columns[0]):]


def _window_pairs(j_group, j_ts, h_group, h_ts, window_us, max_rounds=100_000):
    """Pair journal and host rows of equal group id whose times are within the
    window, nearest first; rounds of proposals, conflicts won by the nearest."""
    nj, nh = len(j_group), len(h_group)
    if not nj or not nh:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    groups, inverse = np.unique(np.concatenate((j_group, h_group)), return_inverse=True)
    inverse = inverse.reshape(-1)
    t0 = min(int(j_ts.min()), int(h_ts.min()))
    span = max(int(j_ts.max()), int(h_ts.max())) - t0 + 2 * window_us + 1
    if len(groups) * span >= 2**62:
        raise PosfastError("posfast: settlement rows span too long a time to match by window")
    jk = inverse[:nj].astype(np.int64) * span + (j_ts - t0 + window_us)
    hk = inverse[nj:].astype(np.int64) * span + (h_ts - t0 + window_us)
    j_left, h_left = np.arange(nj), np.arange(nh)
    out_j, out_h = [], []
    for _ in range(max_rounds):
        if not len(j_left) or not len(h_left):
            break
        order = np.argsort(hk[h_left], kind="stable")
        h_sorted = h_left[order]
        keys = hk[h_sorted]
        q = jk[j_left]
        pos = np.searchsorted(keys, q)
        best = np.full(len(q), -1, np.int64)
        best_dt = np.full(len(q), np.iinfo(np.int64).max, np.int64)
        for cand in (pos - 1, pos):
            ok = (cand >= 0) & (cand < len(keys))
            c = np.clip(cand, 0, len(keys) - 1)
            dt = np.abs(keys[c] - q)
            better = ok & (dt <= window_us) & (dt < best_dt)
            best = np.where(better, c, best)
            best_dt = np.where(better, dt, best_dt)
        proposing = best >= 0
        if not proposing.any():
            break
        pj, ph, pdt = j_left[proposing], h_sorted[best[proposing]], best_dt[proposing]
        order = np.lexsort((pj, pdt, ph))
        ph_sorted = ph[order]
        win = order[np.concatenate(([True], ph_sorted[1:] != ph_sorted[:-1]))]
        out_j.append(pj[win])
        out_h.append(ph[win])
        # journal rows without any host row in the window never will have one
        j_left = np.setdiff1d(j_left[proposing], pj[win], assume_unique=True)
        h_left = np.setdiff1d(h_left, ph[win], assume_unique=True)
        if len(j_left):
            h_left = h_left[np.isin(inverse[nj:][h_left], inverse[:nj][j_left])]
    if not out_j:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_j), np.concatenate(out_h)


# ---------------------------------------------------------------- the reconciliation
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
    signed = _SIGN_TABLE[kinds[approved]] * amounts[approved].astype(np.int64)
    cur = currencies[approved]
    return {int(c): int(signed[cur == c].sum()) for c in np.unique(cur)}


class _Tally:
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


class _Builder:
    """Collects discrepancies; the only per-item Python work happens here.

    Findings that come in bulk (missing at host, missing in the journal: up to a
    whole file of them) are kept as index arrays into the payment tables and made
    into :class:`Discrepancy` objects only when the report is read or written."""

    def __init__(self, tz, summary=False):
        self.tz = tz
        self.items = _Tally() if summary else []
        self.bulks = []           # (kind, category, table, indices, detail, explicit items before)

    def _txn(self, category, t, host=(), host_amount=None, host_state="", detail="",
             extra_seqs=()):
        seqs = tuple(dict.fromkeys(tuple(extra_seqs) + (int(t["first_seq"]), int(t["final_seq"]))))
        return Discrepancy(
            category=category, terminal=int(t["terminal"]), txn_id=int(t["txn_id"]),
            journal_seqs=seqs, host_rows=tuple(host), amount=int(t["amount"]),
            host_amount=host_amount, currency=int(t["currency"]), kind=_name(Kind, t["kind"]),
            state=_name(State, t["state"]), host_state=host_state, time=_iso(t["ts"], self.tz),
            rrn=_text(t["rrn"]), auth_code=_text(t["auth_code"]), detail=detail)

    def _host_only(self, category, h, rows, detail):
        return Discrepancy(
            category=category, terminal=int(h["terminal"]), txn_id=int(h["txn_id"]),
            journal_seqs=(), host_rows=tuple(rows), amount=None, host_amount=int(h["amount"]),
            currency=int(h["currency"]), kind=_name(Kind, h["kind"]), state="",
            host_state=_name(State, h["state"]), time=_iso(h["ts"], self.tz), rrn=_text(h["rrn"]),
            auth_code=_text(h["auth_code"]), detail=detail)

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
        if isinstance(self.items, _Tally):
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


def _host_txns_from_settlement(settlement: Settlement) -> np.ndarray:
    s = settlement.rows
    out = np.zeros(len(s), TXN_DTYPE)
    out["first_seq"] = out["final_seq"] = s["line"]
    for name in ("terminal", "ts", "amount", "currency", "kind", "rrn", "auth_code"):
        out[name] = s[name]
    out["first_amount"] = s["amount"]
    out["state"] = _APPROVED
    out["records"] = 1
    return out


def reconcile(journal, host, day, terminal=None, window=300, check_receipts=True,
              settled_methods=None, encoding=None, summary=False) -> ReconcileReport:
    """Reconcile one business day of `journal` against `host` (see the module docstring).

    `host`: ``"sqlite:///back.db"``, a ``postgresql://`` DSN, a SqliteTarget or
    PostgresTarget, a settlement CSV path or a :class:`Settlement`.  `terminal`
    limits both sides to one terminal; `window` (seconds) bounds the time
    difference of a settlement row matched by terminal + amount; with
    `check_receipts` False the print checks are skipped; `settled_methods`
    (methods expected in a settlement file) defaults to all but cash and voucher;
    `encoding` is a settlement file's text encoding (default UTF-8, see
    :func:`read_settlement`).  With `summary` True the discrepancies are counted
    and totalled per category (:meth:`ReconcileReport.category_totals`) but not
    kept: the report's memory does not grow with their number.

    >>> report = reconcile(j, "sqlite:///back.db", day="2026-11-20")      # doctest: +SKIP
    >>> report.counts()["missing_at_host"], report.ok                     # doctest: +SKIP
    (1, False)
    """
    wanted = day_number(day)
    rule = journal.day_rule
    tz = _dt.timezone(_dt.timedelta(minutes=rule.offset_minutes))
    source, where = _host_source(host)
    settlement = None
    if source == "settlement":     # read (and refuse) the file before anything else
        settlement = (where if isinstance(where, Settlement)
                      else read_settlement(where, rule, encoding=encoding))
    rows = journal.query(day=[wanted, wanted + 1], terminal=terminal)
    rows = rows[(rows["flags"] & int(Flag.TRAINING)) == 0]
    oldest = journal.oldest_seq
    jtx, _records = payment_transactions(rows, wanted, oldest)
    out = _Builder(tz, summary=summary)
    report = ReconcileReport(journal=str(journal.path), journal_id=str(journal.journal_id),
                             day=day_to_date(wanted), terminal=terminal, host="",
                             host_rows_are="seq" if settlement is None else "line")
    report.journal_payments = len(jtx)
    report.journal_net = _net_by_currency(jtx["kind"], jtx["state"], jtx["amount"],
                                          jtx["currency"])
    if settlement is not None:
        report.host = "settlement %s" % os.path.basename(settlement.path)
        partner = _against_settlement(jtx, settlement, wanted, rule, terminal, window,
                                                 settled_methods, out, report)
    else:
        hrows, held = _back_office_rows(source, where, journal.journal_id, wanted, wanted + 1,
                                        terminal)
        report.host = "back office %s" % (where if source == "sqlite" else _safe_dsn(where))
        if not held:
            report.notes.append("the back office holds no record of journal %s: it was never "
                                "synced there" % journal.journal_id)
        # the journal's eviction horizon on both sides: a payment whose first record the
        # journal no longer holds counts on the day of its records, here and there alike
        htx, _ = payment_transactions(hrows, wanted, oldest)
        partner = _against_back_office(jtx, htx, oldest, out, report)
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
    if check_receipts:
        _receipts(journal, rows, jtx, wanted, out)
    if summary:
        report.summary_only, report._totals = True, out.items.totals
        return report
    report.discrepancies = out.finish()
    return report


def _safe_dsn(dsn: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    if parts.password:
        return urllib.parse.urlunsplit(parts._replace(
            netloc=parts.netloc.replace(":%s@" % parts.password, ":***@")))
    return dsn


def _duplicates(txns) -> dict:
    """{(field, key): txn indices} of approved payments of one kind sharing a non-empty
    RRN, or a non-empty client reference (the POS's idempotency key)."""
    groups = {}
    approved = txns["state"] == _APPROVED
    for name in ("rrn", "client_ref"):
        idx = np.flatnonzero(approved & (txns[name] != b""))
        if len(idx) < 2:
            continue
        keys = _key_ids(txns[name][idx], txns["kind"][idx]) if name == "rrn" else txns[name][idx]
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
    ji, hi = _join(jtx["txn_id"], htx["txn_id"])
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


def _against_settlement(jtx, settlement, wanted, rule, terminal, window, settled_methods, out,
                        report):
    """Acquirer settlement: rrn, then terminal + auth code, then terminal + amount +
    currency + type within the window.  Returns partner() as _against_back_office does."""
    window_us = int(window * _US)
    start = rule.day_start_us(wanted)
    end = start + 86_400 * _US
    s = settlement.rows
    near = (s["ts"] >= start - window_us) & (s["ts"] < end + window_us)
    if terminal is not None:
        near &= s["terminal"] == int(terminal)
    htx = _host_txns_from_settlement(Settlement(settlement.path, s[near]))
    inside = (htx["ts"] >= start) & (htx["ts"] < end)
    if len(s) and not inside.any():
        tz = _dt.timezone(_dt.timedelta(minutes=rule.offset_minutes))
        report.notes.append("no row of %s falls on business day %s%s (its rows run from %s to %s)"
                            % (settlement.path, day_to_date(wanted),
                               "" if terminal is None else " for terminal %d" % terminal,
                               _iso(int(s["ts"].min()), tz), _iso(int(s["ts"].max()), tz)))
    if settled_methods is None:
        expected = ~np.isin(jtx["method"], [int(m) for m in _NOT_SETTLED_METHODS])
    else:
        expected = np.isin(jtx["method"], [int(Method.coerce(m, "method")) for m in settled_methods])
    expected &= ~np.isin(jtx["kind"], _NOT_SETTLED_KINDS)
    approved = jtx["state"] == _APPROVED
    j_done = ~expected                 # matched, set aside, or not expected at the acquirer
    h_done = np.zeros(len(htx), bool)
    pairs_j, pairs_h = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]

    def take(a, b):
        pairs_j.append(a)
        pairs_h.append(b)
        j_done[a] = True
        h_done[b] = True

    # host rows listed twice: the same rrn and type, or identical rows without an rrn
    h_dupes = {}
    has_rrn = htx["rrn"] != b""
    for mask, names in ((has_rrn, ("rrn", "kind")),
                        (~has_rrn, ("terminal", "ts", "amount", "currency", "kind", "auth_code"))):
        idx = np.flatnonzero(mask)
        rep, rep_of = _dedupe(_key_ids(*[htx[name][idx] for name in names]),
                              np.zeros(len(idx), np.int8))
        for extra in np.flatnonzero(~rep).tolist():
            h_dupes.setdefault(int(idx[rep_of[extra]]), []).append(int(idx[extra]))
            h_done[idx[extra]] = True
    # pass 1: rrn and type; an approved payment represents its rrn, other approved
    # payments with the same rrn are duplicates (reported by the caller)
    idx = np.flatnonzero(expected & (jtx["rrn"] != b""))
    hidx = np.flatnonzero(~h_done & has_rrn)
    jids, hids = _split_ids([jtx["rrn"][idx], jtx["kind"][idx]],
                            [htx["rrn"][hidx], htx["kind"][hidx]])
    rep, _ = _dedupe(jids, (~approved[idx]).astype(np.int8))
    set_aside = idx[~rep & approved[idx]]
    j_done[set_aside] = True
    a, b = _join(jids[rep], hids)
    take(idx[rep][a], hidx[b])
    # pass 2: terminal, authorisation code and type
    idx = np.flatnonzero(~j_done & (jtx["auth_code"] != b""))
    hidx = np.flatnonzero(~h_done & (htx["auth_code"] != b""))
    names = ("terminal", "auth_code", "kind")
    jids, hids = _split_ids([jtx[n][idx] for n in names], [htx[n][hidx] for n in names])
    jrep, _ = _dedupe(jids, (~approved[idx]).astype(np.int8))
    hrep, _ = _dedupe(hids, np.zeros(len(hidx), np.int8))
    a, b = _join(jids[jrep], hids[hrep])
    take(idx[jrep][a], hidx[hrep][b])
    # pass 3: terminal + amount + currency + type within the window (approved, then pending)
    names = ("terminal", "amount", "currency", "kind")
    for state in (_APPROVED, _PENDING):
        idx = np.flatnonzero(~j_done & (jtx["state"] == state))
        hidx = np.flatnonzero(~h_done)
        if len(idx) and len(hidx):
            jids, hids = _split_ids([jtx[n][idx] for n in names], [htx[n][hidx] for n in names])
            a, b = _window_pairs(jids, jtx["ts"][idx], hids, htx["ts"][hidx], window_us)
            take(idx[a], hidx[b])
    pj, ph = np.concatenate(pairs_j), np.concatenate(pairs_h)
    report.matched = len(pj)
    report.host_payments = int(inside.sum())
    hin = htx[inside]
    report.host_net = _net_by_currency(hin["kind"], hin["state"], hin["amount"], hin["currency"])
    lines = htx["first_seq"]

    out.bulk("txn", "missing_at_host", jtx, np.flatnonzero(approved & ~j_done),
             "approved here, not in the acquirer's settlement (not settled, or settled on "
             "another day)")
    out.bulk("host", "missing_in_journal", htx, np.flatnonzero(~h_done & inside),
             "settled by the acquirer, no such payment in the journal")
    jstate = jtx["state"][pj]
    settled = jstate != _PENDING                       # pending: in_doubt, reported by the caller
    amount_off = settled & ((jtx["amount"][pj] != htx["amount"][ph])
                            | (jtx["currency"][pj] != htx["currency"][ph]))
    state_off = settled & (jstate != _APPROVED)
    for k in np.flatnonzero(amount_off).tolist():
        a, b = jtx[pj[k]], htx[ph[k]]
        out.txn("amount_mismatch", a, host=(int(b["first_seq"]),), host_amount=int(b["amount"]),
                host_state="settled", detail="journal %d (currency %d), settlement %d "
                "(currency %d)" % (int(a["amount"]), int(a["currency"]), int(b["amount"]),
                                   int(b["currency"])))
    for k in np.flatnonzero(state_off).tolist():
        a, b = jtx[pj[k]], htx[ph[k]]
        out.txn("state_mismatch", a, host=(int(b["first_seq"]),), host_amount=int(b["amount"]),
                host_state="settled", detail="the journal has it as %s, the acquirer settled it"
                % _name(State, a["state"]))
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


def _receipts(journal, rows, jtx, wanted, out):
    """receipt_without_transaction, transaction_without_receipt, print_unknown."""
    prints = rows[rows["kind"] == Kind.PRINT]
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
            why = "txn %d is %s" % (int(t["txn_id"]), _name(State, t["state"]))
            seqs = (int(p["seq"]), int(t["first_seq"]), int(t["final_seq"]))
            amount, currency, txn_id = int(t["amount"]), int(t["currency"]), int(t["txn_id"])
        else:
            info = others[(int(p["txn_id"]), int(p["ref_seq"]))]
            if info is None or info[0] == _APPROVED:
                continue
            _state, found, why, amount, currency, txn_id = info
            seqs = (int(p["seq"]),) + found
        copy = " copy" if int(p["flags"]) & int(Flag.COPY) else ""
        out.items.append(Discrepancy(
            category="receipt_without_transaction", terminal=int(p["terminal"]), txn_id=txn_id,
            journal_seqs=tuple(dict.fromkeys(seqs)), amount=amount,
            currency=currency or int(p["currency"]), kind="print", state=_name(State, p["state"]),
            time=_iso(p["ts"], out.tz),
            detail="receipt%s printed (%s, PRINT seq %d) but %s" % (
                copy, _name(State, p["state"]), int(p["seq"]), why)))
    # approved payments and their prints
    needs = (jtx["state"] == _APPROVED) & np.isin(jtx["kind"], _RECEIPT_KINDS)
    ok = np.bincount(pos[in_day & (state == State.OK)].astype(np.intp), minlength=len(jtx))
    unknown = np.bincount(pos[in_day & (state == State.UNKNOWN)].astype(np.intp), minlength=len(jtx))
    for i in np.flatnonzero(needs & (ok == 0) & (unknown == 0)).tolist():
        failed = prints["seq"][in_day & (pos == i)].tolist()
        out.txn("transaction_without_receipt", jtx[i], extra_seqs=(),
                detail="approved, no receipt printed" + (
                    " (failed print seq %s)" % ", ".join(map(str, failed)) if failed else ""))
    for i in np.flatnonzero(needs & (ok == 0) & (unknown > 0)).tolist():
        unsure = prints["seq"][in_day & (pos == i) & (state == State.UNKNOWN)].tolist()
        out.txn("print_unknown", jtx[i], extra_seqs=(),
                detail="the printer's outcome is unknown (PRINT seq %s): check the paper, print "
                "a copy if it is not there" % ", ".join(map(str, unsure)))
        out.items[-1].journal_seqs += tuple(unsure)


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


# ---------------------------------------------------------------- demo
def demo_reconcile(journal, back_office=None, out=print, day=None):
    """End of ``posfast demo``: plant a receipt without a transaction and a payment the
    host never saw, reconcile against the back office (and an acquirer settlement file
    written from it), close the day and print its Z-report.

    `back_office` is the demo's back-office SQLite file (a temporary one is
    made and synced when None); `out` prints a line.
    """
    import tempfile
    from .dayclose import print_z_report, render_z_report
    from .printing import FilePrinter, print_receipt
    from .receipt import Payment, Receipt, ReceiptItem
    from .sync import SqliteTarget, Syncer
    if callable(back_office) and out is print:
        back_office, out = None, back_office
    directory = os.path.dirname(os.path.abspath(journal.path))
    if back_office is None:
        back_office = os.path.join(tempfile.mkdtemp(prefix="posfast-bo-"), "backoffice.db")
        Syncer(journal, SqliteTarget(back_office, create=True), batch=1000).run_once()
    rule = journal.day_rule
    wanted = day_number(day) if day is not None else rule.day_number(now_us())
    printer = FilePrinter(os.path.join(directory, "printer.escpos"))
    today = journal.query(day=wanted)
    txns, _ = payment_transactions(today, wanted, journal.oldest_seq)

    # 1. a receipt came out for a payment the host declined (a till printing too early)
    declined = txns[txns["state"] == State.DECLINED]
    if len(declined):
        target = journal.get(int(declined["final_seq"][0]))
    else:
        txn = journal.begin_payment(terminal=1, amount=4200, currency=156, method="card")
        journal.finish_payment(txn, "declined")
        target = journal.payment(txn)
    seq = journal.append(terminal=target.terminal, kind=Kind.PRINT, state=State.OK,
                         txn_id=target.txn_id, ref_seq=target.seq, receipt_no=target.receipt_no,
                         currency=target.currency,
                         payload=b'{"copy":0,"printer":"demo: printed before the host answered"}')
    out("   planted: a receipt printed (PRINT seq %d) for txn %d, which the host declined"
        % (seq, target.txn_id))
    # 2. an approved card payment after the last sync: the back office never saw it
    receipt = Receipt(merchant="Demo", receipt_no=0, terminal=1, currency=156,
                      items=[ReceiptItem("Coffee", unit_price=1800)], total=1800,
                      payments=[Payment("card", 1800, pan_last4="4242")])
    unsynced = journal.begin_payment(terminal=1, amount=1800, currency=156, method="card",
                                     payload=receipt.to_payload())
    journal.finish_payment(unsynced, "approved", auth_code="D00001", rrn="999000000001",
                           pan_last4="4242")
    print_receipt(journal, unsynced, printer)
    out("   planted: an approved card sale (txn %d) after the last sync: the back office never "
        "saw it" % unsynced)

    report = reconcile(journal, "sqlite:///" + os.path.abspath(back_office), day=wanted)
    out("\n   posfast reconcile --host sqlite:///%s" % back_office)
    out("   " + report.to_table(detail_width=48).replace("\n", "\n   "))

    # the acquirer's settlement file: what the card host settled (it never saw the unsynced sale)
    settled = [t for t in txns if t["state"] == State.APPROVED
               and t["method"] not in (Method.CASH, Method.VOUCHER)]
    csv_path = os.path.join(directory, "settlement-%s.csv" % day_to_date(wanted))
    tz = _dt.timezone(_dt.timedelta(minutes=rule.offset_minutes))
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SETTLEMENT_COLUMNS)
        for t in settled:
            writer.writerow([int(t["terminal"]), _iso(int(t["ts"]) + 2 * _US, tz), _text(t["rrn"]),
                             _text(t["auth_code"]), int(t["amount"]), int(t["currency"]),
                             _name(Kind, t["kind"])])
    report2 = reconcile(journal, csv_path, day=wanted)
    out("\n   posfast reconcile --host %s" % csv_path)
    out("   " + report2.summary())

    close = journal.close_day(wanted, force=True)
    result = print_z_report(journal, close, printer)
    out("\n   posfast close-day --day %s  (Z-report also sent to the printer: %s, PRINT seq %d)"
        % (day_to_date(wanted), result.outcome, result.seq))
    out("   " + render_z_report(close, width=42, tz=tz).rstrip("\n").replace("\n", "\n   "))
    return report
