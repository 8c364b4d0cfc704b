"""Printing: receipts and Z-reports to ESC/POS, printers, and print jobs journaled.

The package holds, each module using only those listed after it and the
storage core's public API (``receipt``, ``records``, ``errors``):

* :mod:`~posfast.printing.jobs`: :func:`print_receipt`, :func:`reprint`,
  :func:`print_counts`: printing that journals a PRINT record per attempt;
* :mod:`~posfast.printing.zreport`: the Z-report (日结报表) as text and ESC/POS,
  and :func:`print_z_report`;
* :mod:`~posfast.printing.printers`: :class:`FilePrinter`, :class:`TcpPrinter`,
  :class:`EscposPrinter` and their :class:`PrintResult`;
* :mod:`~posfast.printing.escpos`: :class:`EscposBuilder` and
  :func:`render_escpos` (receipt to ESC/POS bytes);
* :mod:`~posfast.printing.escpos_decode`: :func:`parse`, :func:`printed_lines`:
  ESC/POS bytes back to commands and text, as a printer reads them.

Printers take ESC/POS bytes and report what happened, never raising for a
printer fault:

* ``"ok"``: the printer took every byte (over TCP: it read the whole job and
  closed its side, and its TCP stack acknowledged every byte).
* ``"failed"``: nothing reached the printer (connection refused, host down,
  a timeout or error before the first byte left this machine): nothing printed.
* ``"unknown"``: the printer took some or all of the bytes, then an error or a
  timeout: the receipt may or may not have printed.  Print a *copy* next,
  never a second original.

:func:`print_receipt` prints the original receipt of a payment record and
:func:`reprint` a numbered copy (重印 / COPY n); both append a PRINT record
(``ref_seq`` = the payment, ``state`` = OK / FAILED / UNKNOWN, ``flags`` COPY for
copies) so reconciliation can match paper to payments.

>>> import os, tempfile
>>> from posfast import Journal
>>> from posfast.receipt import Receipt, ReceiptItem
>>> folder = tempfile.mkdtemp()
>>> journal = Journal.create(os.path.join(folder, "doc.pfj"), capacity=1000)
>>> receipt = Receipt(merchant="好又多", terminal=3, receipt_no=123,
...                   items=[ReceiptItem("宫保鸡丁", unit_price=3800)])
>>> txn = journal.begin_payment(terminal=3, amount=3800, method="cash", receipt_no=123,
...                             payload=receipt.to_payload())
>>> _ = journal.finish_payment(txn, "approved")
>>> printer = FilePrinter(os.path.join(folder, "printer.bin"))
>>> print_receipt(journal, txn, printer)  # doctest: +ELLIPSIS
PrintResult(outcome='ok', error='', bytes_sent=..., printer='file:...printer.bin', seq=3, copy=0, text=None)
>>> result = reprint(journal, receipt_no=123, terminal=3, printer=printer)
>>> result.outcome, result.copy, journal.get(result.seq).ref_seq == txn
('ok', 1, True)
>>> print_counts(journal, txn)
{'original': 1, 'copies': 1, 'failed': 0, 'unknown': 0}
>>> journal.close()
"""
from posfast.printing.escpos import (CHINESE_ENCODINGS, CODE_PAGES, QR_ERROR_LEVELS, EscposBuilder,
                                     emit_lines, printer_measure, printer_prepare, render_escpos)
from posfast.printing.escpos_decode import (EscposParseError, PrintedLine, Segment, commands, parse,
                                            printed_lines, printed_text)
from posfast.printing.printers import (ESCPOS_EXTRA, FAILED, OK, UNKNOWN, EscposPrinter, FilePrinter,
                                       Printer, PrintResult, TcpPrinter)
from posfast.printing.jobs import (ReprintRefused, journal_timezone, outcome_state, print_counts,
                                   print_receipt, reprint)
from posfast.printing.zreport import print_z_report, render_z_escpos, render_z_report

__all__ = [
    # printers
    "EscposPrinter",
    "FilePrinter",
    "PrintResult",
    "Printer",
    "TcpPrinter",
    "ESCPOS_EXTRA",
    "OK",
    "FAILED",
    "UNKNOWN",
    # print jobs (journaled)
    "ReprintRefused",
    "print_receipt",
    "reprint",
    "print_counts",
    "journal_timezone",
    "outcome_state",
    # the Z-report
    "render_z_report",
    "render_z_escpos",
    "print_z_report",
    # ESC/POS encoding
    "EscposBuilder",
    "emit_lines",
    "printer_measure",
    "printer_prepare",
    "render_escpos",
    "CODE_PAGES",
    "CHINESE_ENCODINGS",
    "QR_ERROR_LEVELS",
    # ESC/POS decoding
    "EscposParseError",
    "PrintedLine",
    "Segment",
    "commands",
    "parse",
    "printed_lines",
    "printed_text",
]
