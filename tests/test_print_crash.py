"""The slip's fate survives a crash: a real printing process SIGKILLed at every step of a
print (before send, mid-send, after send, before finalise) leaves the print journaled as
UNKNOWN, so the next print of that payment is a copy, never a second original."""
import os
import signal
import subprocess
import sys

import pytest

from posfast import Journal, Kind, State
from posfast.errors import ReprintRefused
from posfast.printing import FilePrinter, print_counts, print_receipt, reprint
from posfast.receipt import Payment, Receipt, ReceiptItem
from _child_env import CHILD_CWD, child_env

from _printer_emulator import PrinterEmulator

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")

CHILD = os.path.join(os.path.dirname(__file__), "_print_child.py")
RECEIPT = Receipt(merchant="老北京饭庄", terminal=3, receipt_no=200,
                  items=[ReceiptItem("北京烤鸭", unit_price=16800)], payments=[Payment("cash", 16800)])


def _journal_with_a_sale(path):
    with Journal.create(path, capacity=1024) as j:
        seq = j.append(terminal=3, kind="sale", state="approved", amount=16800, method="cash",
                       receipt_no=200, payload=RECEIPT.to_payload())
    assert seq == 1


def _kill_at(path, printer, step):
    env = child_env()
    proc = subprocess.Popen([sys.executable, CHILD, str(path), printer.url, step], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=CHILD_CWD)
    try:
        if step in ("before-send", "before-finalise"):
            for line in proc.stdout:                      # the child says where it stopped
                if line.strip() == step.encode():
                    break
            else:
                pytest.fail("the child never reached %s: %s" % (step, proc.stderr.read().decode()[-2000:]))
        else:
            event = printer.paused if step == "mid-send" else printer.got_all
            assert event.wait(30), "the printer never got the job: " + step
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]


@pytest.mark.parametrize("step", ["before-send", "mid-send", "after-send", "before-finalise"])
def test_a_print_killed_at_any_step_is_on_record_and_the_next_print_is_a_copy(tmp_path, step):
    path = tmp_path / "till.pfj"
    _journal_with_a_sale(path)
    printer = PrinterEmulator(pause_after=120 if step == "mid-send" else None, hold=step == "after-send")
    try:
        _kill_at(path, printer, step)
    finally:
        printer.close()
    got = b"".join(printer.jobs)
    if step == "before-send":
        assert got == b""                                  # killed before a byte went out ...
    elif step == "mid-send":
        assert 0 < len(got) <= 120                         # ... half-way through the job ...
    else:
        assert "北京烤鸭".encode("gb18030") in got            # ... or once the printer had it all
    with Journal.open(path, readonly=False) as j:
        prints = j.query(kind=Kind.PRINT)
        # one PRINT record, written before the first byte, never finalised: UNKNOWN
        assert [(int(p["state"]), int(p["ref_seq"]), int(p["receipt_no"])) for p in prints] == [
            (State.UNKNOWN, 1, 200)]
        assert print_counts(j, 1) == {"original": 1, "copies": 0, "failed": 0, "unknown": 1}
        assert j.last_transaction(3)["print_attempts"] == 1
        with pytest.raises(ReprintRefused, match=r"already printed \(UNKNOWN print, seq 2\)"):
            print_receipt(j, 1, FilePrinter(tmp_path / "next.bin"))
        copy = reprint(j, receipt_code="3-000200", printer=FilePrinter(tmp_path / "next.bin"))
        assert (copy.outcome, copy.copy) == ("ok", 1)
        assert print_counts(j, 1) == {"original": 1, "copies": 1, "failed": 0, "unknown": 1}
