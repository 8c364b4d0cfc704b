"""The Z-report (日结报表) on paper: a day close as text and ESC/POS, and printed.

A :class:`posfast.dayclose.DayClose` (what ``journal.close_day`` wrote) renders
to text lines for a paper width (:func:`render_z_report`) or to ESC/POS bytes
(:func:`render_z_escpos`); :func:`print_z_report` sends it to a printer and
journals a PRINT record of it, like every print.

>>> print(render_z_report(_example(), width=32, merchant="好又多超市"), end="")  # doctest: +ELLIPSIS
           好又多超市
      Z-REPORT / 日结报表
================================
Business day          2026-11-20
Terminal                     all
Z no.                       0001
...
NET CNY                    45.00
...
"""
from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING, Dict, List, Union

from posfast.dayclose import DayClose
from posfast.records import KIND_SIGN
from posfast.printing.escpos import EscposBuilder, emit_lines
from posfast.printing.jobs import journal_timezone, send_journaled
from posfast.printing.printers import Printer, PrintResult
from posfast.receipt import (CENTER, InvalidReceipt, Layout, Line, Receipt, char_width, check_width,
                             currency_alpha, format_amount, lines_to_text, sanitize)
from posfast.records import Kind, Method, State, format_ts, ts_datetime

if TYPE_CHECKING:  # the Journal is passed in; printing never imports it at run time
    from posfast.journal import Journal

__all__ = ["render_z_report", "render_z_escpos", "print_z_report", "tax_totals"]


def _example() -> DayClose:
    """A small day close for the examples."""
    return DayClose(seq=9, ts=0, day=_dt.date(2026, 11, 20), terminal=None, z_no=1,
                    txns=[(1, 2, 2, 156, 3, 4500)], terminals=[(1, 2, 156, 3, 4500, 4500)],
                    grand={156: (4500, 4500)}, records=(1, 8, 6), digest="", scan=(0, 0))


def tax_totals(journal: Journal, close: Union[DayClose, int]) -> Dict[int, list]:
    """Tax per rate of a closed day's approved payments, from their receipts:
    ``{currency: [(tax_key, tax_rate, net, tax, gross), ...]}``, refunds, voids and
    reversals counted negative (the Z-report's "Tax by rate").

    >>> import os, tempfile
    >>> from posfast import Journal
    >>> from posfast.receipt import Receipt, ReceiptItem
    >>> j = Journal.create(os.path.join(tempfile.mkdtemp(), "z.pfj"), capacity=100)
    >>> r = Receipt(merchant="M", items=[ReceiptItem("tea", unit_price=1060, tax_key="A", tax_rate=600)])
    >>> _ = j.append(terminal=1, kind="sale", state="approved", amount=1060, currency=156,
    ...              payload=r.to_payload(),
    ...              ts=1_795_000_000_000_000)
    >>> tax_totals(j, j.close_day("2026-11-18"))
    {156: [('A', 600, 1000, 60, 1060)]}
    >>> j.close()
    """
    if not isinstance(close, DayClose):
        close = DayClose.from_record(journal.get(int(close)))
    pays = journal.payments(day=close.day, terminal=close.terminal)
    pays = pays[pays["state"] == State.APPROVED]
    sums: Dict[tuple, tuple] = {}
    for row, payload in zip(pays, journal.payloads(pays["first_seq"])):
        sign = KIND_SIGN.get(int(row["kind"]), 0)
        if not payload or not sign:
            continue
        try:
            receipt = Receipt.from_payload(payload)
        except InvalidReceipt:
            continue    # a payment without a posfast receipt carries no tax lines
        for key, rate, net, tax, gross in receipt.tax_summary():
            at = (int(row["currency"]), key, rate)
            n, t, g = sums.get(at, (0, 0, 0))
            sums[at] = (n + sign * net, t + sign * tax, g + sign * gross)
    out: Dict[int, list] = {}
    for (currency, key, rate), (net, tax, gross) in sorted(sums.items()):
        out.setdefault(currency, []).append((key, rate, net, tax, gross))
    return out


def _z_lines(close: DayClose, width: int, measure, prepare, chinese: bool, double_title: bool,
             merchant: str = "", tz=None, taxes=None) -> List[Line]:
    out = Layout(width, measure, prepare, chinese, double_title)
    if merchant:
        out.add(merchant, CENTER, bold=True)
    out.add(out.marker("Z-REPORT", "日结报表", False), CENTER, bold=True, wide=double_title,
            tall=double_title)
    if close.forced:
        out.add(out.marker("FORCED CLOSE", "强制日结", False), CENTER, bold=True)
    out.rule("=")
    out.pair("Business day", close.day.isoformat())
    out.pair("Terminal", str(close.terminal) if close.terminal is not None else "all")
    out.pair("Z no.", "%04d" % close.z_no)
    tz = tz or _dt.timezone.utc
    closed_at = ts_datetime(close.ts)
    out.pair("Closed at", closed_at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
             if closed_at is not None and 1 < closed_at.year < 9999 else format_ts(close.ts))
    out.pair("Records", "seq %d..%d (%d)" % close.records if close.records[2]
             else "none")

    def row(label, count, amount, currency):
        out.pair(label, "%5d %14s" % (count, format_amount(amount, currency)), indent=2)

    def name(enum_cls, value):
        try:
            return enum_cls(value).name.lower()
        except ValueError:
            return str(value)

    for currency in close.currencies:
        alpha = currency_alpha(currency)
        out.rule("=")
        out.add("%s  (%d)" % (alpha, currency), bold=True)
        out.add("Payments by state")
        for state, (count, amount) in sorted(close.by("state", currency, state=None).items()):
            row(name(State, state), count, amount, currency)
        out.add("Approved, by kind")
        for kind, (count, amount) in sorted(close.by("kind", currency).items()):
            row(name(Kind, kind), count, (KIND_SIGN.get(kind, 0) or 1) * amount, currency)
        signed = {}
        for kind, state, method, cur, count, amount in close.txns:
            if cur == currency and state == State.APPROVED:
                c, a = signed.get(method, (0, 0))
                signed[method] = (c + count, a + KIND_SIGN.get(kind, 0) * amount)
        out.add("Approved, by method (net)")
        for method, (count, amount) in sorted(signed.items()):
            row(name(Method, method), count, amount, currency)
        out.add("Approved, by terminal (net)")
        for terminal, (count, amount) in sorted(close.by("terminal", currency).items()):
            row("terminal %d" % terminal, count, amount, currency)
        if taxes and taxes.get(currency):
            out.add("Tax by rate (approved, net of refunds)")
            out.tax_table(taxes[currency], lambda units, c=currency: format_amount(units, c), "en", indent=2)
        out.rule()
        out.pair("NET " + alpha, format_amount(close.net(currency), currency), bold=True)
        gross, absolute = close.grand.get(currency, (0, 0))
        out.add(out.marker("Grand totals (never reset)", "累计总额", False))
        out.pair("gross", format_amount(gross, currency), indent=2)
        out.pair("absolute", format_amount(absolute, currency), indent=2)
    if close.bad_time:
        out.rule("=")
        out.add("Left out, impossible time: %d payment(s)" % len(close.bad_time), bold=True)
        out.add("seq " + ", ".join(str(t) for t in close.bad_time))
    if close.in_doubt:
        out.rule("=")
        out.add("In doubt at close: %d payment(s)" % len(close.in_doubt), bold=True)
        out.add("txn " + ", ".join(str(t) for t in close.in_doubt))
    out.rule("=")
    out.add("DAY_CLOSE seq %d" % close.seq if close.seq else "not written", CENTER)
    return out.lines


def render_z_report(close: DayClose, width: int = 42, merchant: str = "", tz=None, taxes=None) -> str:
    """The Z-report as text lines of at most `width` columns (ends with a newline);
    ``taxes`` (:func:`tax_totals`) adds the totals per tax rate.

    >>> z = DayClose(seq=9, ts=0, day=_dt.date(2026, 11, 20), terminal=None, z_no=1,
    ...              txns=[(1, 2, 2, 156, 3, 4500)], terminals=[(1, 2, 156, 3, 4500, 4500)],
    ...              grand={156: (4500, 4500)}, records=(1, 8, 6), digest="", scan=(0, 0))
    >>> z == _example()
    True
    >>> [l for l in render_z_report(z, width=32).splitlines() if l.startswith("NET")]
    ['NET CNY                    45.00']
    """
    width = check_width(width)
    return lines_to_text(_z_lines(close, width, char_width, sanitize, True, False, merchant, tz, taxes),
                         width)


def render_z_escpos(close: DayClose, width: int = 42, encoding: str = "gb18030", merchant: str = "",
                    tz=None, cut: bool = True, taxes=None, profile="default") -> bytes:
    """The Z-report as ESC/POS bytes for a `width`-column receipt printer
    (``encoding`` and ``profile`` as in :func:`posfast.printing.render_escpos`; no QR
    code; ``taxes`` as in :func:`render_z_report`).

    >>> from posfast.printing.escpos_decode import printed_lines
    >>> [(l.text, l.width) for l in printed_lines(render_z_escpos(_example(), width=32))][:3]
    [('Z-REPORT / 日结', 2), ('报表', 2), ('================================', 1)]
    """
    builder = EscposBuilder(encoding, profile=profile)
    lines = _z_lines(close, check_width(width), builder.measure, builder.prepare, builder.chinese, True,
                     merchant, tz, taxes)
    return emit_lines(builder, lines, code=None, cut=cut)


def print_z_report(journal: Journal, close: Union[DayClose, int], printer: Printer, width: int = 42,
                   encoding: str = "gb18030", merchant: str = "", operator: int = 0,
                   profile="default") -> PrintResult:
    """Print a Z-report (a DayClose or its seq, with its totals per tax rate) and journal
    it like every print (:func:`posfast.printing.send_journaled`: UNKNOWN before the
    bytes, then OK / FAILED / UNKNOWN; ``ref_seq`` = the DAY_CLOSE seq, ``txn_id`` 0).

    Returns the printer's :class:`posfast.printing.PrintResult` with ``seq`` set.
    """
    if not isinstance(close, DayClose):
        close = DayClose.from_record(journal.get(int(close)))
    data = render_z_escpos(close, width=width, encoding=encoding, merchant=merchant,
                           tz=journal_timezone(journal), taxes=tax_totals(journal, close), profile=profile)
    fields = dict(terminal=close.terminal or 0, ref_seq=close.seq, receipt_no=close.z_no,
                  operator=int(operator))
    return send_journaled(journal, printer, data, fields, {"z": close.z_no})
