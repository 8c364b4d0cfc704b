"""Printer status: a TCP printer emulator that answers real-time status (DLE EOT) with
paper out, cover open, paper near end, or goes offline mid-job; what posfast journals,
shows and reconciles from it."""
import json
import subprocess
import sys

import numpy as np
import pytest

from posfast import DayRule, Journal, State
from posfast.records import day_to_date
from posfast.printing import (FilePrinter, PrinterStatus, TcpPrinter, open_printer, print_counts,
                              print_receipt, printed_text)
from posfast.receipt import Payment, Receipt, ReceiptItem

from _printer_emulator import PrinterEmulator
from posfast.printing.printers import STATUS_QUERY
from _child_env import CHILD_CWD, child_env

RECEIPT = Receipt(merchant="好又多", terminal=3, receipt_no=123, issued_at="2026-11-20T13:45:12+08:00",
                  items=[ReceiptItem("宫保鸡丁", unit_price=3800)], payments=[Payment("cash", 3800)])


@pytest.fixture
def emulator():
    started = []

    def start(**kw):
        started.append(PrinterEmulator(**kw))
        return started[-1]
    yield start
    for printer in started:
        printer.close()


@pytest.fixture
def journal(tmp_path):
    j = Journal.create(tmp_path / "t.pfj", capacity=4096, durability="none",
                       day_rule=DayRule(utc_offset="+08:00"))
    yield j
    j.close()


def sale(journal):
    return journal.append(terminal=3, kind="sale", state="approved", amount=3800, method="cash",
                          receipt_no=123, payload=RECEIPT.to_payload())


def test_status_bytes_decode_as_epson_documents_them():
    assert PrinterStatus.from_realtime(b"\x12\x12\x12").problems == ()
    assert PrinterStatus.from_realtime(b"\x1a\x12\x72").problems == ("offline", "paper out")
    assert PrinterStatus.from_realtime(b"\x1a\x16\x12").problems == ("offline", "cover open")
    assert PrinterStatus.from_realtime(b"\x12\x12\x1e").problems == ("paper near end",)
    assert PrinterStatus.from_realtime(b"\x12\x12\x1e").ready
    assert PrinterStatus.from_realtime(b"abc") is None                # not status bytes
    assert PrinterStatus.from_asb(b"\x18\x00\x0c\x00").problems == ("offline", "paper out")


def test_a_ready_printer_prints_and_the_status_is_asked_before_and_after(journal, emulator):
    printer = emulator()
    result = print_receipt(journal, sale(journal), open_printer(printer.url))
    assert (result.outcome, result.status) == ("ok", ())
    assert printer.queries == 2 and "宫保鸡丁" in printed_text(printer.jobs[0])


def test_paper_out_before_the_job_is_failed_with_the_reason_and_nothing_is_sent(journal, emulator):
    printer = emulator(conditions={"paper out"})
    seq = sale(journal)
    result = print_receipt(journal, seq, open_printer(printer.url))
    assert result.outcome == "failed" and "paper out" in result.error and "load paper" in result.error
    assert printer.wait_jobs(1) == [b""]                             # the job never went out
    rec = journal.get(result.seq)
    assert rec.state == State.FAILED
    assert json.loads(rec.payload)["status"] == ["offline", "paper out"]
    assert print_counts(journal, seq) == {"original": 0, "copies": 0, "failed": 1, "unknown": 0}
    printer.conditions.clear()                                       # paper loaded: print again
    assert print_receipt(journal, seq, open_printer(printer.url)).outcome == "ok"


def test_cover_open_before_the_job_is_failed(journal, emulator):
    printer = emulator(conditions={"cover open"})
    result = print_receipt(journal, sale(journal), open_printer(printer.url))
    assert result.outcome == "failed" and "close the cover" in result.error
    assert result.status == ("offline", "cover open")


def test_going_offline_mid_job_is_unknown_with_the_reason(journal, emulator, tmp_path):
    printer = emulator(offline_after=40)
    seq = sale(journal)
    result = print_receipt(journal, seq, open_printer(printer.url))
    assert result.outcome == "unknown" and "then reported offline, cover open" in result.error
    rec = journal.get(result.seq)
    assert (rec.state, json.loads(rec.payload)["status"]) == (State.UNKNOWN, ["offline", "cover open"])
    # the next print is a copy, and the reason is what `posfast show` and reconciliation say
    shown = subprocess.run([sys.executable, "-m", "posfast", "show", journal.path, str(result.seq)],
                           capture_output=True, text=True, env=child_env(), cwd=CHILD_CWD)
    assert "printer reported  offline, cover open" in shown.stdout
    first = subprocess.run([sys.executable, "-m", "posfast", "show", journal.path,
                            str(journal.get(result.seq).ref_seq)], capture_output=True, text=True,
                           env=child_env(), cwd=CHILD_CWD)
    assert "finalised by      seq %d: UNKNOWN" % result.seq in first.stdout
    from posfast.reconcile import reconcile
    from posfast.reconcile.settlement import SETTLEMENT_DTYPE, Settlement
    day = day_to_date(journal.get(seq).day)
    report = reconcile(journal, Settlement("none.csv", np.zeros(0, SETTLEMENT_DTYPE)), day,
                       settled_methods=())
    unknown = [d for d in report.discrepancies if d.category == "print_unknown"]
    assert len(unknown) == 1 and "offline, cover open" in unknown[0].detail


def test_automatic_status_back_reports_the_cover_opened_mid_job(journal, emulator):
    printer = emulator(offline_after=40)
    result = print_receipt(journal, sale(journal), open_printer(printer.url + "?status=asb"))
    assert result.outcome == "unknown" and result.status == ("offline", "cover open")
    assert printer.queries == 0 and printer.jobs[0].startswith(b"\x1da\x0e")   # GS a, no DLE EOT
    ready = emulator()
    ok = print_receipt(journal, sale(journal), open_printer(ready.url + "?status=asb"))
    assert (ok.outcome, ok.status) == ("ok", ())


def test_paper_near_end_prints_and_is_noted(journal, emulator):
    printer = emulator(conditions={"paper near end"})
    result = print_receipt(journal, sale(journal), open_printer(printer.url))
    assert (result.outcome, result.status) == ("ok", ("paper near end",))
    assert json.loads(journal.get(result.seq).payload)["status"] == ["paper near end"]


def test_a_printer_that_ignores_status_requests_still_prints(journal, emulator):
    printer = emulator(answers_status=False)
    p = TcpPrinter("127.0.0.1", printer.port, status="realtime", status_timeout=0.2)
    assert print_receipt(journal, sale(journal), p).outcome == "ok"
    assert p.status() is None


def test_printer_status_command(emulator):
    ready, out = emulator(), emulator(conditions={"paper out"})
    run = [sys.executable, "-m", "posfast", "printer-status"]
    good = subprocess.run(run + [ready.url], capture_output=True, text=True, env=child_env(), cwd=CHILD_CWD)
    assert (good.returncode, good.stdout.strip()) == (0, "tcp:127.0.0.1:%d: ready" % ready.port)
    bad = subprocess.run(run + [out.url, "--format", "json"], capture_output=True, text=True,
                         env=child_env(), cwd=CHILD_CWD)
    assert bad.returncode != 0 and json.loads(bad.stdout)["problems"] == "offline, paper out"


def test_transport_addresses(tmp_path):
    assert open_printer("tcp://10.0.0.9:9100").describe() == "tcp:10.0.0.9:9100"
    assert open_printer("tcp://10.0.0.9:9100?status=asb").status_mode == "asb"
    assert open_printer("tcp://10.0.0.9:9100?status=off").status_mode is None
    assert open_printer("bt://00:11:22:33:44:55").describe() == "bt:00:11:22:33:44:55:1"
    assert open_printer("rfcomm://00:11:22:33:44:55/2").describe() == "bt:00:11:22:33:44:55:2"
    assert isinstance(open_printer(str(tmp_path / "spool.bin")), FilePrinter)
    assert open_printer("file://" + str(tmp_path / "x.bin")).path == str(tmp_path / "x.bin")
    for bad in ("tcp://host", "usb://nothex:1", "bt://00:11", "gopher://x"):
        with pytest.raises(ValueError):
            open_printer(bad)


def test_usb_serial_cups_win32_go_through_python_escpos():
    escpos_printer = pytest.importorskip("escpos.printer", reason="python-escpos (posfast[printer]) not installed")
    usb = open_printer("usb://04b8:0e15")
    assert isinstance(usb.printer, escpos_printer.Usb)
    assert usb.printer.usb_args == {"idVendor": 0x04B8, "idProduct": 0x0E15}
    serial = open_printer("serial:///dev/ttyS0?baud=115200")
    assert (serial.printer.devfile, serial.printer.baudrate) == ("/dev/ttyS0", 115200)
    for url, cls, needs in (("cups://Kitchen", escpos_printer.CupsPrinter, "pycups"),
                            ("win32://EPSON TM-T20II Receipt", escpos_printer.Win32Raw, "pywin32")):
        if cls.is_usable():
            assert open_printer(url).printer.printer_name == url.split("://")[1]
        else:
            with pytest.raises(ImportError, match="needs %s" % needs):
                open_printer(url)


@pytest.mark.skipif(not hasattr(__import__("os"), "openpty"), reason="needs a pseudo-terminal (POSIX)")
def test_serial_printer_on_a_pty_prints_and_answers_status(tmp_path):
    pytest.importorskip("serial", reason="pyserial (posfast[printer]) not installed")
    import os
    import threading
    master, slave = os.openpty()
    device = os.ttyname(slave)
    got = bytearray()

    def printer_side():                         # the printer at the other end of the line
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            got.extend(chunk)
            if got.endswith(STATUS_QUERY):
                os.write(master, b"\x12\x12\x1e")       # ready, paper near end
    threading.Thread(target=printer_side, daemon=True).start()
    printer = open_printer("serial://%s?baud=115200" % device)
    assert printer.status().problems == ("paper near end",)
    result = printer.send(b"\x1b@hello\n")
    assert (result.outcome, result.status) == ("ok", ("paper near end",))
    os.close(slave)
    assert b"hello" in got
