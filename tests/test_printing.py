"""Printers (file, raw TCP 9100, python-escpos adapter) and journaled print / reprint.

TCP printers are real servers on loopback: one that reads the job and closes
(a healthy printer), one that accepts and never answers, one that reads a
little then drops the connection, and a closed port.
"""
import datetime as dt
import doctest
import json
import socket
import sys

import pytest
from _printer_emulator import PrinterEmulator

import posfast
import posfast.printing
from posfast import DayRule, Flag, Journal, Kind, State
from posfast.errors import PosfastError, ReprintRefused
from posfast.printing import commands, printed_lines, printed_text
from posfast.printing import (EscposPrinter, FilePrinter, PrintResult, TcpPrinter, print_counts, print_jobs, print_receipt,
                              reprint)
from posfast.receipt import Payment, Receipt, ReceiptItem, display_width, render_text

SHORT = 2.0  # seconds: bounds waits that end as soon as the printer answers (roomy for a loaded CI box)


def FakePrinter(mode="print", drop_after=16):
    """A raw-TCP 'printer' on 127.0.0.1 (tests/_printer_emulator.py).

    mode "print": read the job until the client half-closes, then close (what
    real port-9100 printers do); "hang": accept and never read nor close;
    "drop": read `drop_after` bytes then close with data unread (a reset);
    "stay": read the job but never close.
    """
    return PrinterEmulator(pause_after=0 if mode == "hang" else None, hold=mode == "stay",
                           drop_after=drop_after if mode == "drop" else None)


@pytest.fixture
def fake_printer():
    servers = []

    def start(mode="print", **kw):
        server = FakePrinter(mode, **kw)
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.close()


@pytest.fixture
def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------- printers
def test_file_printer_appends(tmp_path):
    path = tmp_path / "printer.bin"
    printer = FilePrinter(path)
    assert printer.send(b"\x1b@one\n") == PrintResult("ok", "", 6, f"file:{path}")
    assert printer.send(b"two\n").outcome == "ok"
    assert path.read_bytes() == b"\x1b@one\ntwo\n"


def test_file_printer_that_cannot_be_opened_fails(tmp_path):
    result = FilePrinter(tmp_path / "no-such-dir" / "lp0").send(b"x")
    assert (result.outcome, result.bytes_sent) == ("failed", 0)
    assert "cannot open printer file" in result.error and "no such file or directory" in result.error


def test_tcp_printer_delivers_the_whole_job(fake_printer):
    server = fake_printer("print")
    job = b"\x1b@" + "合计 48.50\n".encode("gb18030") * 500  # larger than one TCP segment
    result = TcpPrinter("127.0.0.1", server.port, timeout=SHORT).send(job)
    assert (result.outcome, result.error, result.bytes_sent) == ("ok", "", len(job))
    assert result.printer == f"tcp:127.0.0.1:{server.port}"
    assert server.jobs == [job]


def test_tcp_printer_switched_off_is_failed(closed_port):
    result = TcpPrinter("127.0.0.1", closed_port, timeout=SHORT).send(b"\x1b@x\n")
    assert (result.outcome, result.bytes_sent) == ("failed", 0)
    assert "connection refused" in result.error and "nothing was printed" in result.error


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="relies on Linux dropping SYNs on a full backlog")
def test_tcp_printer_that_never_answers_the_connect_is_failed():
    # A listener with a full accept queue drops new SYNs: the connect times out, like a host that is down
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        result = TcpPrinter("127.0.0.1", port, timeout=0.3).send(b"x" * 100)
    finally:
        for s in fillers:
            s.close()
        listener.close()
    assert (result.outcome, result.bytes_sent) == ("failed", 0)
    assert "timed out" in result.error


def test_tcp_printer_that_hangs_after_accepting_is_unknown(fake_printer):
    server = fake_printer("hang")
    result = TcpPrinter("127.0.0.1", server.port, timeout=0.3).send(b"\x1b@" + b"x" * 2000)
    assert result.outcome == "unknown"
    assert result.bytes_sent == 2002
    assert "did not close the connection within 0.3 s" in result.error
    assert "may have printed" in result.error


def test_tcp_printer_that_drops_the_connection_mid_job_is_unknown(fake_printer):
    server = fake_printer("drop", drop_after=100)
    result = TcpPrinter("127.0.0.1", server.port, timeout=SHORT).send(b"y" * 50_000)
    assert result.outcome == "unknown"
    assert result.bytes_sent > 0
    assert "may have printed" in result.error


def test_tcp_printer_that_keeps_the_connection_open(fake_printer):
    server = fake_printer("stay")
    result = TcpPrinter("127.0.0.1", server.port, timeout=0.3).send(b"job")
    assert result.outcome == "unknown"  # confirm="close": no close, no confirmation
    if sys.platform.startswith("linux"):
        result = TcpPrinter("127.0.0.1", server.port, timeout=SHORT, confirm="ack").send(b"job")
        assert (result.outcome, result.error) == ("ok", "")
    assert server.jobs[-1] == b"job"


def test_escpos_adapter_with_a_dummy_printer():
    escpos_printer = pytest.importorskip("escpos.printer", reason="python-escpos (posfast[escpos]) not installed")
    dummy = escpos_printer.Dummy()
    result = EscposPrinter(dummy).send(b"\x1b@hello\n")
    assert (result.outcome, result.bytes_sent) == ("ok", 8)
    assert dummy.output == b"\x1b@hello\n"


def test_escpos_adapter_network_backend(fake_printer, closed_port):
    pytest.importorskip("escpos.printer", reason="python-escpos (posfast[escpos]) not installed")
    server = fake_printer("print")
    printer = EscposPrinter.network("127.0.0.1", server.port, timeout=SHORT)
    assert printer.send(b"\x1b@net\n").outcome == "ok"
    assert printer.send(b"\x1b@again\n").outcome == "ok"  # reopened after each job
    assert server.wait_jobs(2) == [b"\x1b@net\n", b"\x1b@again\n"]
    off = EscposPrinter.network("127.0.0.1", closed_port, timeout=SHORT).send(b"x")
    assert (off.outcome, off.bytes_sent) == ("failed", 0)
    assert "cannot open escpos-network:127.0.0.1" in off.error


def test_escpos_adapter_error_while_sending_is_unknown():
    class Broken:
        _device = object()

        def _raw(self, data):
            raise OSError(5, "Input/output error")

        def close(self):
            pass

    result = EscposPrinter(Broken()).send(b"data")
    assert (result.outcome, result.bytes_sent) == ("unknown", None)
    assert "input/output error" in result.error and "may have printed" in result.error


def test_escpos_adapter_refuses_other_objects():
    with pytest.raises(TypeError, match="python-escpos printer object"):
        EscposPrinter(object())


# ---------------------------------------------------------------- journaled printing
def row(label, value, width=42):
    """A label/amount line as a person reads it: the value flush with the right edge."""
    return label + " " * (width - display_width(label) - display_width(value)) + value


def make_receipt(receipt_no=123, terminal=3, **overrides):
    fields = dict(merchant="老北京饭庄", terminal=terminal, receipt_no=receipt_no, operator=7,
                  issued_at="2026-11-20T13:45:12+08:00",
                  items=[ReceiptItem("北京烤鸭", unit_price=16800), ReceiptItem("啤酒", qty=2, unit_price=1500)],
                  payments=[Payment("card", 19800, pan_last4="6789", auth_code="A1B2C3")],
                  footer=["谢谢惠顾"])
    fields.update(overrides)
    return Receipt(**fields)


@pytest.fixture
def journal(tmp_path):
    j = Journal.create(tmp_path / "t.pfj", capacity=4096, durability="none",
                       day_rule=DayRule(utc_offset="+08:00", starts_at="04:00"))
    yield j
    j.close()


def add_payment(journal, receipt, flags=0):
    return journal.append(terminal=receipt.terminal, kind="sale", state="approved", amount=receipt.total,
                          currency=receipt.currency, method="card", receipt_no=receipt.receipt_no,
                          operator=receipt.operator, flags=flags, pan_last4=b"6789", auth_code=b"A1B2C3",
                          payload=receipt.to_payload())


def job_record(journal, seq):
    """The first PRINT record of the job that PRINT record ``seq`` finalises (written UNKNOWN
    before the bytes went out), checked to be that job's."""
    final = journal.get(seq)
    first = journal.get(final.ref_seq)
    assert first.kind == Kind.PRINT and first.state == State.UNKNOWN and first.seq < final.seq
    assert (first.txn_id, first.terminal, first.receipt_no, first.flags) == (
        final.txn_id, final.terminal, final.receipt_no, final.flags)
    return first


def test_print_receipt_prints_the_original_and_journals_it(journal, fake_printer):
    server = fake_printer("print")
    receipt = make_receipt()
    seq = add_payment(journal, receipt)
    result = print_receipt(journal, seq, TcpPrinter("127.0.0.1", server.port, timeout=SHORT), operator=9)
    assert (result.outcome, result.copy) == ("ok", 0)
    # what came out of the printer
    text = printed_text(server.jobs[0])
    assert "北京烤鸭" in text and "COPY" not in text and "重印" not in text
    assert ("QR_STORE", (b"3-000123",)) in commands(server.jobs[0])
    # the PRINT record
    rec = journal.get(result.seq)
    first = job_record(journal, result.seq)
    assert (first.kind, first.state, first.ref_seq, first.txn_id, first.terminal, first.receipt_no,
            first.amount, first.operator, first.flags) == (Kind.PRINT, State.UNKNOWN, seq, seq, 3, 123, 0, 9, 0)
    assert (rec.kind, rec.state, rec.ref_seq, rec.operator) == (Kind.PRINT, State.OK, first.seq, 9)
    assert json.loads(rec.payload) == {"copy": 0, "printer": f"tcp:127.0.0.1:{server.port}"}


def test_a_second_original_is_refused(journal, tmp_path):
    seq = add_payment(journal, make_receipt())
    print_receipt(journal, seq, FilePrinter(tmp_path / "p.bin"))
    with pytest.raises(ReprintRefused, match=r"original receipt 3-000123 of payment seq 1 was already printed "
                                             r"\(OK print, seq 2\); print a copy with reprint\(\)"):
        print_receipt(journal, seq, FilePrinter(tmp_path / "p.bin"))
    assert issubclass(ReprintRefused, PosfastError)


def test_printer_off_gives_a_journaled_failed_print_and_the_original_can_be_retried(journal, closed_port,
                                                                                    fake_printer):
    seq = add_payment(journal, make_receipt())
    result = print_receipt(journal, seq, TcpPrinter("127.0.0.1", closed_port, timeout=SHORT))
    assert result.outcome == "failed" and "connection refused" in result.error
    rec = journal.get(result.seq)
    assert (rec.kind, rec.state, job_record(journal, rec.seq).ref_seq) == (Kind.PRINT, State.FAILED, seq)
    assert "connection refused" in json.loads(rec.payload)["error"]
    server = fake_printer("print")
    retry = print_receipt(journal, seq, TcpPrinter("127.0.0.1", server.port, timeout=SHORT))
    assert retry.outcome == "ok"
    assert print_counts(journal, seq) == {"original": 1, "copies": 0, "failed": 1, "unknown": 0}


def test_printer_hanging_gives_a_journaled_unknown_print(journal, fake_printer):
    seq = add_payment(journal, make_receipt())
    server = fake_printer("hang")
    result = print_receipt(journal, seq, TcpPrinter("127.0.0.1", server.port, timeout=0.3))
    assert result.outcome == "unknown"
    assert journal.get(result.seq).state == State.UNKNOWN
    # an unknown original may be on paper: the next print must be a copy
    with pytest.raises(ReprintRefused, match="UNKNOWN print"):
        print_receipt(journal, seq, TcpPrinter("127.0.0.1", server.port, timeout=0.3))


def test_reprint_days_later_reproduces_the_original_with_a_copy_marker(journal, tmp_path):
    receipt = make_receipt()
    seq = add_payment(journal, receipt)
    spool = tmp_path / "printer.bin"
    print_receipt(journal, seq, FilePrinter(spool))
    original = spool.read_bytes()
    spool.write_bytes(b"")
    later = dt.datetime(2026, 11, 23, 2, 5, 0, tzinfo=dt.timezone.utc)  # 10:05 in the journal's +08:00
    result = reprint(journal, receipt_no=123, terminal=3, printer=FilePrinter(spool), now=later, text=True)
    assert (result.outcome, result.copy) == ("ok", 1)
    copy = spool.read_bytes()
    copy_lines = [line.text for line in printed_lines(copy)]
    marker_lines = ["重印 / COPY 1", row("重印时间", "2026-11-23 10:05:00")]
    assert copy_lines.count("重印 / COPY 1") == 2 and marker_lines[1] in copy_lines
    assert [t for t in copy_lines if t not in marker_lines] == [line.text for line in printed_lines(original)]
    assert result.text == render_text(receipt, width=42, copy=1,
                                      reprinted_at=dt.datetime(2026, 11, 23, 10, 5, tzinfo=dt.timezone(
                                          dt.timedelta(hours=8))))
    rec = journal.get(result.seq)
    first = job_record(journal, rec.seq)
    assert (rec.kind, rec.state, first.ref_seq, rec.flags, first.ts) == (
        Kind.PRINT, State.OK, seq, Flag.COPY, int(later.timestamp() * 1_000_000))
    assert json.loads(rec.payload)["copy"] == 1


def test_copies_are_numbered_and_limited(journal, tmp_path, closed_port, fake_printer):
    seq = add_payment(journal, make_receipt())
    spool = FilePrinter(tmp_path / "p.bin")
    assert [reprint(journal, seq=seq, printer=spool).copy for _ in range(2)] == [1, 2]
    # a failed copy does not use up its number ...
    failed = reprint(journal, seq=seq, printer=TcpPrinter("127.0.0.1", closed_port, timeout=SHORT))
    assert (failed.outcome, failed.copy) == ("failed", 3)
    # ... an unknown one does (it may be on paper)
    hang = fake_printer("hang")
    unknown = reprint(journal, seq=seq, printer=TcpPrinter("127.0.0.1", hang.port, timeout=0.3))
    assert (unknown.outcome, unknown.copy) == ("unknown", 3)
    with pytest.raises(ReprintRefused, match=r"receipt 3-000123 \(payment seq 1\) already has 3 copies, "
                                             r"the limit is max_copies=3"):
        reprint(journal, seq=seq, printer=spool)
    assert reprint(journal, seq=seq, printer=spool, max_copies=4).copy == 4
    prints = print_jobs(journal.query(kind="print"))
    assert list(prints["state"]) == [State.OK, State.OK, State.FAILED, State.UNKNOWN, State.OK]
    assert [json.loads(p)["copy"] for p in journal.payloads(prints["seq"])] == [1, 2, 3, 3, 4]
    assert print_counts(journal, seq) == {"original": 0, "copies": 4, "failed": 1, "unknown": 1}


def test_reprint_preview_neither_prints_nor_journals(journal):
    seq = add_payment(journal, make_receipt())
    result = reprint(journal, seq=seq, now=dt.datetime(2026, 11, 23, 2, 5, tzinfo=dt.timezone.utc))
    assert (result.outcome, result.copy, result.seq) == ("preview", 1, 0)
    assert "重印 / COPY 1" in result.text and "2026-11-23 10:05:00" in result.text
    assert len(journal.query(kind="print")) == 0


def test_reprint_by_receipt_number_across_terminals(journal, tmp_path):
    seq_t3 = add_payment(journal, make_receipt(receipt_no=55, terminal=3))
    seq_t4 = add_payment(journal, make_receipt(receipt_no=55, terminal=4, merchant="分店"))
    with pytest.raises(ReprintRefused, match="receipt number 55 matches 2 payments .*pass terminal= or seq="):
        reprint(journal, receipt_no=55, printer=FilePrinter(tmp_path / "p.bin"))
    result = reprint(journal, receipt_no=55, terminal=4, printer=FilePrinter(tmp_path / "p.bin"))
    assert job_record(journal, result.seq).ref_seq == seq_t4
    assert "分店" in printed_text((tmp_path / "p.bin").read_bytes())
    with pytest.raises(ReprintRefused, match="no payment with receipt number 56 on terminal 3"):
        reprint(journal, receipt_no=56, terminal=3, printer=FilePrinter(tmp_path / "p.bin"))
    assert seq_t3 != seq_t4


def test_reprint_of_a_training_payment_is_marked(journal, tmp_path):
    seq = add_payment(journal, make_receipt(), flags=Flag.TRAINING)
    result = reprint(journal, seq=seq, printer=FilePrinter(tmp_path / "p.bin"))
    assert journal.get(result.seq).flags == Flag.COPY | Flag.TRAINING
    texts = [line.text for line in printed_lines((tmp_path / "p.bin").read_bytes())]
    assert texts.count("TRAINING / 培训") == 2


def test_records_that_cannot_be_printed(journal, tmp_path):
    bare = journal.append(terminal=1, kind="sale", state="approved", amount=100, currency=156)
    note = journal.append(terminal=1, kind="note")
    printer = FilePrinter(tmp_path / "p.bin")
    with pytest.raises(ReprintRefused, match="payment seq 1 .* carries no receipt"):
        print_receipt(journal, bare, printer)
    with pytest.raises(ReprintRefused, match="record seq 2 .* is a NOTE record, not a payment"):
        reprint(journal, seq=note, printer=printer)
    with pytest.raises(ReprintRefused, match="no record seq 99"):
        reprint(journal, seq=99, printer=printer)
    with pytest.raises(ValueError, match="exactly one of seq=, receipt_no= or receipt_code="):
        reprint(journal, printer=printer)
    assert not (tmp_path / "p.bin").exists()


def test_payment_lifecycle_receipt_carries_the_hosts_answer(journal, tmp_path):
    # the receipt is stored when the payment begins; auth code and RRN arrive with the final record
    receipt = make_receipt(payments=[Payment("card", 19800)])
    txn = journal.begin_payment(terminal=3, amount=receipt.total, currency=156, method="card",
                                receipt_no=123, payload=receipt.to_payload())
    with pytest.raises(ReprintRefused, match=r"payment txn 1 \(receipt 3-000123, seq 1\) is PENDING: it is "
                                             r"still in doubt: finish or resolve the payment first"):
        print_receipt(journal, txn, FilePrinter(tmp_path / "p.bin"))
    journal.finish_payment(txn, "approved", auth_code="A00042", rrn="900000000042", pan_last4="4242")
    spool = tmp_path / "p.bin"
    result = print_receipt(journal, txn, FilePrinter(spool))
    texts = [line.text for line in printed_lines(spool.read_bytes())]
    assert row("银行卡 **** 4242", "198.00") in texts
    assert row("  授权码", "A00042") in texts
    assert row("  参考号", "900000000042") in texts
    assert journal.last_transaction(3)["receipt_printed"] is True
    copy = reprint(journal, receipt_no=123, terminal=3, printer=None)
    assert "A00042" in copy.text and "900000000042" in copy.text
    assert journal.get(result.seq).txn_id == txn


def test_declined_payment_gets_no_receipt(journal, tmp_path):
    receipt = make_receipt()
    txn = journal.begin_payment(terminal=3, amount=receipt.total, currency=156, method="card",
                                receipt_no=123, payload=receipt.to_payload())
    journal.finish_payment(txn, "declined")
    with pytest.raises(ReprintRefused, match="is DECLINED: only an approved payment gets a receipt"):
        print_receipt(journal, txn, FilePrinter(tmp_path / "p.bin"))
    with pytest.raises(ReprintRefused, match="is DECLINED"):
        reprint(journal, receipt_no=123, terminal=3, printer=FilePrinter(tmp_path / "p.bin"))
    assert len(journal.query(kind="print")) == 0


def test_docstring_examples_run():
    result = doctest.testmod(posfast.printing, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 3 and result.failed == 0


@pytest.mark.parametrize("module", ["printers", "jobs", "zreport", "escpos", "escpos_decode"])
def test_every_printing_module_runs_its_examples(module):
    import importlib
    mod = importlib.import_module(f"posfast.printing.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 1 and result.failed == 0


def test_the_escpos_compatibility_module_and_the_error_tree():
    import posfast.escpos
    from posfast.errors import EscposParseError
    for name in posfast.escpos.__all__:
        assert getattr(posfast.escpos, name) is getattr(posfast.printing, name)
    assert issubclass(EscposParseError, PosfastError) and issubclass(EscposParseError, ValueError)
    with pytest.raises(PosfastError):
        posfast.printing.parse(b"\x1b\x7e")


def test_printing_imports_point_down_and_name_no_private_helper():
    """printing -> receipt, records, errors, dayclose (its DayClose); the storage core never
    imports printing at module level, and no module imports another's private name."""
    import ast
    import pathlib
    root = pathlib.Path(posfast.__file__).parent
    files = sorted((root / "printing").glob("*.py")) + [root / "receipt.py", root / "dayclose.py"]
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [a.name for a in node.names]
                assert not [n for n in names if n.startswith("_")], (path.name, node.module, names)
        if path.parent.name != "printing":
            top = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
            modules = [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
            modules += [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
            assert not [m for m in modules if "printing" in m or "escpos" in m], (path.name, modules)
        else:
            top = [node for node in tree.body if isinstance(node, ast.ImportFrom)]
            for node in top:
                assert node.module.split(".")[:2] != ["posfast", "journal"], path.name


# ---------------------------------------------------------------- receipt codes
def test_find_by_receipt_code_across_terminals(tmp_path):
    from posfast.errors import InvalidRecord
    path = tmp_path / "codes.pfj"
    with Journal.create(path, capacity=4096, durability="none") as j:
        for terminal in (3, 4):
            for number in range(1, 301):
                txn = j.begin_payment(terminal=terminal, amount=100 * number, method="cash", receipt_no=number,
                                      payload=make_receipt(receipt_no=number, terminal=terminal,
                                                           items=[ReceiptItem("茶", unit_price=100 * number)],
                                                           payments=[]).to_payload())
                j.finish_payment(txn, "approved")
        # the same receipt number on two terminals, the code tells them apart
        three, four = j.find(receipt_code="3-000200"), j.find(receipt_code="4-000200")
        assert (three["terminal"], three["receipt_no"], three["amount"]) == (3, 200, 20000)
        assert (four["terminal"], four["receipt_no"], four["state"]) == (4, 200, "approved")
        assert three["txn_id"] != four["txn_id"]
        assert j.find(receipt_code="5-000200") is None and j.find(receipt_code="3-000301") is None
        assert j.receipt_payments(4, 200) == [four["txn_id"]]
        # one lookup: once the map is built, finding a code's payment (what reprint --code
        # does) reads no rows of the journal, only the candidate record
        reads = []
        real = j._storage.read_rows
        j._storage.read_rows = lambda seqs: reads.append(len(seqs)) or real(seqs)
        txn = j.receipt_payments(3, 17)
        assert (len(txn), j.get(txn[0]).amount, reads) == (1, 1700, [])
        j._storage.read_rows = real
        # appended after the map was built: found too
        late = j.append(terminal=3, kind="sale", state="approved", amount=5, receipt_no=999,
                        payload=make_receipt(receipt_no=999, items=[ReceiptItem("x", unit_price=5)],
                                             payments=[]).to_payload())
        assert j.find(receipt_code="3-000999")["txn_id"] == late
        # a code reused on one terminal (a till whose counter was reset): both are kept, find
        # gives the newer, a reprint by that code asks which
        again = j.append(terminal=3, kind="sale", state="approved", amount=6, receipt_no=999,
                         payload=make_receipt(receipt_no=999, items=[ReceiptItem("y", unit_price=6)],
                                              payments=[]).to_payload())
        assert j.receipt_payments(3, 999) == [late, again] and j.find(receipt_code="3-000999")["amount"] == 6
        with pytest.raises(ReprintRefused, match="receipt code 3-000999 matches 2 payments"):
            reprint(j, receipt_code="3-000999")
        with pytest.raises(InvalidRecord, match="TERMINAL-NUMBER"):
            j.find(receipt_code="three-200")
    with Journal.open(path) as j:                     # rebuilt on open
        assert j.find(receipt_code="4-000300")["amount"] == 30000
        result = reprint(j, receipt_code="4-000300", now=1_795_000_000_000_000)
        assert result.outcome == "preview" and "4-000300" in result.text


def test_the_z_report_totals_tax_per_rate(tmp_path):
    from posfast.printing import print_z_report, render_z_report, tax_totals
    with Journal.create(tmp_path / "z.pfj", capacity=1024, durability="none",
                        day_rule=DayRule(utc_offset="+08:00")) as j:
        ts = 1_795_000_000_000_000
        items = [ReceiptItem("宫保鸡丁", unit_price=10600, tax_key="A", tax_rate=600),
                 ReceiptItem("啤酒", unit_price=1130, tax_key="B", tax_rate=1300)]
        sale = make_receipt(items=items, payments=[Payment("cash", 11730)])
        j.append(terminal=3, kind="sale", state="approved", amount=11730, currency=156, ts=ts,
                 receipt_no=123, payload=sale.to_payload())
        refund = make_receipt(receipt_no=124, kind="refund", items=items[1:], payments=[Payment("cash", 1130)])
        j.append(terminal=3, kind="refund", state="approved", amount=1130, currency=156, ts=ts + 1,
                 receipt_no=124, payload=refund.to_payload())
        declined = make_receipt(receipt_no=125, items=items[:1], payments=[Payment("card", 10600)])
        j.append(terminal=3, kind="sale", state="declined", amount=10600, currency=156, ts=ts + 2,
                 receipt_no=125, payload=declined.to_payload())
        close = j.close_day(dt.datetime.fromtimestamp(ts / 1e6, dt.timezone(dt.timedelta(hours=8))).date())
        assert tax_totals(j, close) == {156: [("A", 600, 10000, 600, 10600), ("B", 1300, 0, 0, 0)]}
        lines = render_z_report(close, width=42, taxes=tax_totals(j, close)).splitlines()
        at = lines.index("Tax by rate (approved, net of refunds)")
        assert lines[at + 2:at + 5] == ["  Rate                            Net  Tax",
                                        "  A 6%                         100.00 6.00",
                                        "  B 13%                          0.00 0.00"]
        result = print_z_report(j, close, FilePrinter(tmp_path / "z.bin"))
        assert result.outcome == "ok" and "A 6%" in printed_text((tmp_path / "z.bin").read_bytes())
        assert job_record(j, result.seq).ref_seq == close.seq
