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
  :func:`render_escpos` (receipt to ESC/POS bytes, by printer profile);
* :mod:`~posfast.printing.profiles`: :func:`get_profile`, the printer models'
  capabilities (escpos-printer-db through python-escpos, or a built-in default);
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
copies) so reconciliation can match paper to payments.  Each print is journaled
UNKNOWN before its bytes go out and finalised (OK / FAILED / UNKNOWN, the
printer's answer and status in the payload) once the printer answered
(:func:`send_journaled`): a crash at any point leaves the slip on record, and
the next print of it is a copy.  :func:`print_jobs` folds the two records of a job.

>>> import os, tempfile
>>> from posfast import Journal, State
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
PrintResult(outcome='ok', error='', bytes_sent=..., printer='file:...printer.bin', seq=4, copy=0, text=None, status=())
>>> result = reprint(journal, receipt_no=123, terminal=3, printer=printer)
>>> result.outcome, result.copy
('ok', 1)
>>> first = journal.get(journal.get(result.seq).ref_seq)   # journaled before the bytes went out
>>> first.ref_seq == txn, State(first.state).name
(True, 'UNKNOWN')
>>> print_counts(journal, txn)
{'original': 1, 'copies': 1, 'failed': 0, 'unknown': 0}
>>> journal.close()
"""
from posfast.printing.profiles import (CHINESE_FONTS, PRINTER_EXTRA, PrinterProfile, get_profile,
                                       profile_names)
from posfast.printing.escpos import (CHINESE_ENCODINGS, CODE_PAGES, QR_ERROR_LEVELS, EscposBuilder,
                                     emit_lines, printer_measure, printer_prepare, qr_matrix,
                                     render_escpos)
from posfast.printing.escpos_decode import (EscposParseError, PrintedLine, Segment, commands, parse,
                                            printed_lines, printed_text, raster_images)
from posfast.printing.printers import (ESCPOS_EXTRA, FAILED, OK, UNKNOWN, BluetoothPrinter, EscposPrinter,
                                       FilePrinter, Printer, PrinterStatus, PrintResult, TcpPrinter,
                                       open_printer)
from posfast.printing.jobs import (ReprintRefused, journal_timezone, outcome_state, print_counts,
                                   print_jobs, print_note, print_receipt, reprint, send_journaled)
from posfast.printing.zreport import print_z_report, render_z_escpos, render_z_report, tax_totals

__all__ = [
    # printer profiles
    "PrinterProfile",
    "get_profile",
    "profile_names",
    "CHINESE_FONTS",
    "PRINTER_EXTRA",
    # printers
    "BluetoothPrinter",
    "EscposPrinter",
    "FilePrinter",
    "PrintResult",
    "Printer",
    "TcpPrinter",
    "PrinterStatus",
    "open_printer",
    "ESCPOS_EXTRA",
    "OK",
    "FAILED",
    "UNKNOWN",
    # print jobs (journaled)
    "ReprintRefused",
    "print_receipt",
    "reprint",
    "print_counts",
    "print_jobs",
    "print_note",
    "send_journaled",
    "journal_timezone",
    "outcome_state",
    # the Z-report
    "render_z_report",
    "render_z_escpos",
    "print_z_report",
    "tax_totals",
    # ESC/POS encoding
    "EscposBuilder",
    "emit_lines",
    "printer_measure",
    "printer_prepare",
    "qr_matrix",
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
    "raster_images",
]
