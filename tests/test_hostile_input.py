"""Hostile and careless input to records, receipts and the CLI (issue 10): every bad
field is an InvalidRecord naming the field and the value (and the row for append_many),
the same for append and append_many; no card number is stored whole; identifiers are
never mistaken for card numbers; stored impossible times never crash a reader; every
CLI failure is one line with one prefix and a non-zero exit."""
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import posfast
from posfast import InvalidRecord
from posfast.cli import main
from posfast.receipt import InvalidReceipt, Payment, Receipt, ReceiptItem

SALE = dict(terminal=1, kind="sale", state="approved", amount=100, currency=156)
NOW_US = time.time_ns() // 1000


def both(j, field, value, good=None):
    """The InvalidRecord messages of append and of append_many (bad value in row 1, a good
    one in row 0)."""
    fields = dict(SALE)
    fields[field] = value
    with pytest.raises(InvalidRecord) as one:
        j.append(**fields)
    columns = {k: [v, v] for k, v in SALE.items()}
    columns[field] = [SALE.get(field, good), value]
    with pytest.raises(InvalidRecord) as many:
        j.append_many(columns)
    assert j.head_seq == 0
    return str(one.value), str(many.value)


# ---------------------------------------------------------------- finding 2: validation
def test_none_client_ref_is_empty_in_append_many_as_in_append(make_journal):
    j = make_journal()
    a = j.append(client_ref=None, **SALE)
    many = j.append_many({"terminal": [1, 1], "kind": "sale", "amount": [1, 2], "currency": 156,
                          "client_ref": [None, "x"]})
    assert j.get(a).client_ref == b""
    assert [j.get(s).client_ref for s in many] == [b"", b"x"]      # not b"None"


@pytest.mark.parametrize("field, value, words", [
    ("kind", 1.9, "kind=1.9 is not a Kind"),
    ("kind", True, "kind=True is not a Kind"),
    ("state", 2.7, "state=2.7 is not a State"),
    ("method", 2.0, "method=2.0 is not a Method"),
    ("amount", -500, "amount=-500 is negative"),
    ("currency", 0, "currency=0: 0 is not an ISO 4217"),
    ("currency", 999, "currency=999: 999 is ISO 4217's XXX, 'no currency'"),
    ("client_ref", "order-7\0", "client_ref=b'order-7\\x00' ends with a NUL byte"),
    ("auth_code", b"A1\0", "auth_code=b'A1\\x00' ends with a NUL byte"),
    ("client_ref", "\ud800abc", "client_ref='\\ud800abc' is not valid Unicode"),
    ("amount", True, "amount=True must be an integer"),
    ("terminal", 1.0, "terminal=1.0 must be an integer"),
    ("client_ref", 42, "client_ref=42 must be text or bytes"),
])
def test_bad_field_is_named_with_its_value_by_append_and_append_many(make_journal, field, value,
                                                                      words):
    one, many = both(make_journal(), field, value)
    assert words in one.replace("posfast: ", "")
    assert ("row 1: " + words) in many


def test_refund_amount_is_a_magnitude_but_other_records_may_be_signed(make_journal):
    j = make_journal()
    with pytest.raises(InvalidRecord, match="amount=-1200 is negative: a refund's amount"):
        j.append(terminal=1, kind="refund", state="approved", amount=-1200, currency=156)
    assert j.append(terminal=1, kind="note", amount=-5) == 1      # not money: signed is fine
    assert j.append(terminal=1, kind="print", state="ok", currency=0) == 2
    assert j.append(terminal=1, kind="sale", amount=5, currency=998) == 3   # XTS: testing code
    assert j.get(3).currency == 998


def test_text_payload_two_d_column_and_negative_watermark_are_invalid_records(make_journal):
    j = make_journal()
    with pytest.raises(InvalidRecord, match="payload='receipt text' is text; a payload is bytes"):
        j.append("receipt text", **SALE)
    with pytest.raises(InvalidRecord, match="row 1: payload='x' is text"):
        j.append_many({"terminal": [1, 1], "kind": "note"}, payloads=[b"", "x"])
    with pytest.raises(InvalidRecord, match=r"column terminal has shape \(2, 2\)"):
        j.append_many({"terminal": np.ones((2, 2), dtype=int), "kind": "note"})
    with pytest.raises(InvalidRecord, match=r"column kind has shape \(2, 2\)"):
        j.append_many({"terminal": [1, 1], "kind": np.ones((2, 2), dtype=int)})
    with pytest.raises(InvalidRecord, match=r"set_sync_watermark\(-1\)"):
        j.set_sync_watermark(-1)
    with pytest.raises(InvalidRecord, match=r"set_sync_watermark\(1.5\)"):
        j.set_sync_watermark(1.5)
    assert j.head_seq == 0 and j.sync_watermark == 0


def test_float_enum_arrays_and_bool_lists_are_refused_not_truncated(make_journal):
    j = make_journal()
    with pytest.raises(InvalidRecord, match="row 0: kind=1.0 is not a Kind"):
        j.append_many({"terminal": [1, 1], "kind": np.array([1.0, 2.0])})
    with pytest.raises(InvalidRecord, match="row 1: amount=True must be an integer"):
        j.append_many({"terminal": [1, 1], "kind": "sale", "amount": [5, True]})
    with pytest.raises(InvalidRecord, match="column amount holds booleans"):
        j.append_many({"terminal": [1, 1], "kind": "sale", "amount": np.array([True, False])})
    assert j.head_seq == 0


# ---------------------------------------------------------------- finding 3: card numbers
@pytest.mark.parametrize("payload, what", [
    (b";4111111111111111=25121011000000000000?", "track-2 card data (4111...1111)"),
    (b"4111111111111111D25121011000", "track-2 card data (4111...1111)"),
    (b'{"m":"Shop","f":["Card 4111 1111 1111 1111"]}', "a card number (4111...1111)"),
    (b"amex 3782-822463-10005 ok", "a card number (3782...0005)"),
    (b"unionpay 6212345678901232", "a card number (6212...1232)"),
    (b"mc 2223000048400011", "a card number (2223...0011)"),
])
def test_payload_with_a_card_number_is_refused(make_journal, payload, what):
    j = make_journal()
    with pytest.raises(InvalidRecord, match=r"payload holds %s" % what.replace("(", r"\(")
                       .replace(")", r"\)").replace(".", r"\.") + ".*pan_last4"):
        j.append(payload, **SALE)
    with pytest.raises(InvalidRecord, match=r"row 2: payload holds"):
        j.append_many({"terminal": [1, 1, 1], "kind": "note"}, payloads=[b"a", b"b", payload])
    assert j.head_seq == 0


@pytest.mark.parametrize("payload", [
    b"order 20150806125346",                              # WeChat Pay's example out_trade_no
    b'{"transaction_id":"4200000001201508061234567890"}',  # 28 digits: not a card
    b'{"ref":"6217000000000000004"}',                      # Luhn-valid 19 digits, labelled a ref
    "订单号：4111111111111111".encode(),                    # an order number, labelled as one
    b"4111111111111112",                                   # fails Luhn
    b"1234567890123456",                                   # no card IIN
    b"\x00receipt\xff" * 20,
    b'{"digest":"ab12cd5131000000032889ef99"}',            # Luhn-valid digits inside a hex digest
])
def test_payload_without_a_card_number_is_kept(make_journal, payload):
    j = make_journal(max_payload=600)
    seq = j.append(payload, **SALE)
    assert j.get(seq).payload == payload


@pytest.mark.parametrize("ref", ["20150806125346", "4111111111111111", "6217000000000006"])
def test_identifiers_are_never_refused_for_being_long_digit_strings(make_journal, ref):
    j = make_journal()
    a = j.append(client_ref=ref, **SALE)
    many = j.append_many({"terminal": [1], "kind": "sale", "amount": [1], "currency": 156,
                          "client_ref": [ref]})
    assert j.get(a).client_ref == j.get(many[0]).client_ref == ref.encode()
    assert j.find(ref)["txn_id"] == a
    txn = j.begin_payment(terminal=2, amount=5, client_ref=ref[::-1][:16])
    assert j.find(ref[::-1][:16])["txn_id"] == txn


def test_a_z_report_whose_digest_holds_a_card_like_run_is_written(make_journal, monkeypatch):
    """A day close's SHA-256 (hex) with 16 Luhn-valid digits in it, as about 0.2% of them
    have: the close is written, not refused as a card number."""
    import posfast.dayclose as dc
    monkeypatch.setattr(dc, "_digest", lambda records: "ab12cd5131000000032889ef99" + "0" * 38)
    j = make_journal()
    j.append(**SALE)
    close = j.close_day(j.get(1).day, force=True)
    assert close.seq == 2 and b"5131000000032889" in j.get(2).payload


def test_receipt_text_with_a_card_number_is_refused_but_references_are_kept():
    with pytest.raises(InvalidReceipt, match="footer line 'Card 4111 1111 1111 1111' holds a card "
                                             "number.*pan_last4"):
        Receipt(merchant="Shop", footer=["Card 4111 1111 1111 1111"])
    with pytest.raises(InvalidReceipt, match="item name .* holds a card number"):
        ReceiptItem("gift card 4111111111111111", unit_price=100)
    with pytest.raises(InvalidReceipt, match="payment label 'Visa 4111111111111111' holds"):
        Payment("card", 100, label="Visa 4111111111111111")
    with pytest.raises(InvalidReceipt, match="header line"):
        Receipt(merchant="Shop", header=["5500-0000-0000-0004"])
    r = Receipt(merchant="Shop", merchant_id="6217000000000000004",
                footer=["订单号 20150806125346"], items=[ReceiptItem("Tea", unit_price=100)],
                payments=[Payment("card", 100, pan_last4="1111", rrn="632400000001")])
    assert Receipt.from_payload(r.to_payload()) == r
    assert r.merchant_id == "6217000000000000004"


# ---------------------------------------------------------------- finding 1: impossible times
@pytest.mark.parametrize("ts, words", [
    (time.time_ns(), "this looks like nanoseconds"),
    (time.time_ns() // 1_000_000, "this looks like milliseconds"),
    (int(time.time()), "this looks like seconds"),
    (946_684_800_000_000 - 1, "1999-12-31T23:59:59"),
    (NOW_US + 3 * 86_400_000_000, "more than a day ahead of this terminal's clock"),
    (2**62, "about the year 148,"),
])
def test_impossible_timestamp_is_refused_saying_what_it_looks_like(make_journal, ts, words):
    j = make_journal()
    one, many = both(j, "ts", ts, good=NOW_US)
    assert "ts=%d is an impossible time" % ts in one and words in one
    assert ("row 1: ts=%d is an impossible time" % ts) in many and words in many
    with pytest.raises(InvalidRecord, match="impossible time"):
        j.begin_payment(terminal=1, amount=5, ts=ts)
    assert j.head_seq == 0


def test_history_from_2000_on_and_a_little_clock_skew_are_accepted(make_journal):
    j = make_journal()
    old = j.append(ts=dt.datetime(2000, 1, 1), **SALE)
    skew = j.append(ts=NOW_US + 3_600_000_000, **SALE)         # a till an hour ahead
    many = j.append_many({"terminal": [1, 1], "kind": "sale", "amount": [1, 2], "currency": 156,
                          "ts": [946_684_800_000_000, NOW_US]})
    assert j.get(old).ts == 946_684_800_000_000 and j.get(skew).ts == NOW_US + 3_600_000_000
    assert len(many) == 2


def _craft(j, ts, amount=1250, terminal=1, receipt_no=2, payload=b""):
    """A stored record with any ts, as an older posfast (or a crafted file) could hold."""
    row = np.zeros(1, posfast.RECORD_DTYPE)
    row["ts"], row["terminal"], row["kind"], row["state"] = ts, terminal, 1, 2
    row["amount"], row["currency"], row["receipt_no"], row["method"] = amount, 156, receipt_no, 2
    row["day"] = j.day_rule.day_number(ts)
    return j._append_rows(row, [payload] if payload else None)[0]


@pytest.fixture
def crafted(tmp_path):
    path = str(tmp_path / "till.pfj")
    with posfast.Journal.create(path, capacity=256) as j:
        j.append(terminal=1, kind="sale", state="approved", amount=500, currency=156,
                 receipt_no=1)
        bad = _craft(j, time.time_ns(), payload=Receipt(
            merchant="Shop", terminal=1, receipt_no=2,
            items=[ReceiptItem("Tea", unit_price=1250)]).to_payload())
    return path, bad


def test_readers_show_a_stored_impossible_time_instead_of_a_traceback(crafted, capsys):
    path, bad = crafted
    assert main(["query", path, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[1]["seq"] == bad and rows[1]["amount"] == 1250
    assert rows[1]["time"].startswith("impossible time (ts=") and rows[1]["ts"] > 10**18
    assert rows[1]["day"].startswith("impossible day (")
    assert main(["query", path]) == 0
    assert "impossible time (ts=" in capsys.readouterr().out
    assert main(["query", path, "--format", "csv"]) == 0
    assert capsys.readouterr().out.count("\n") == 3                # header and two rows
    assert main(["show", path, str(bad)]) == 0
    out = capsys.readouterr().out
    assert "impossible time (ts=" in out and "12.50" in out        # and its receipt
    assert main(["last", path, "--terminal", "1"]) == 0
    assert "at impossible time (ts=" in capsys.readouterr().out
    assert main(["last", path, "--terminal", "1", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["amount"] == 1250
    assert main(["reprint", path, "--seq", str(bad)]) == 0
    assert "重印 / COPY 1" in capsys.readouterr().out


def test_close_day_refuses_to_leave_out_a_sale_with_an_impossible_time(crafted, capsys):
    path, bad = crafted
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    assert main(["close-day", path, "--day", today]) == 73
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("posfast: error: 1 payment(s)")
    assert "seq %d (sale 1250" % bad in err and "--force" in err
    with posfast.Journal.open(path, readonly=True) as j:
        assert j.day_closes() == []                               # nothing was written
    assert main(["close-day", path, "--day", today, "--force", "--format", "json"]) == 0
    z = json.loads(capsys.readouterr().out)
    assert z["impossible_time_left_out"] == [bad] and z["forced"] is True
    assert z["day_totals"]["156"]["net"] == 500
    with posfast.Journal.open(path) as j:
        assert j.day_closes()[0].bad_time == [bad]               # recorded in the Z-report
        assert j.verify().ok
    assert main(["close-day", path, "--day", today]) == 73        # closed once, as always
    assert "already closed" in capsys.readouterr().err


def test_z_report_text_lists_the_payments_left_out(crafted, capsys):
    path, bad = crafted
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    assert main(["close-day", path, "--day", today, "--force"]) == 0
    out = capsys.readouterr().out
    assert "Left out, impossible time: 1 payment(s)" in out and "seq %d" % bad in out


# ---------------------------------------------------------------- finding 4: CLI failures
def run_cli(*argv, user=None):
    """The real `posfast` command in a subprocess: (exit code, stdout, stderr)."""
    prefix = []
    if user == "nobody":
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot run the CLI as another user")
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        probe = subprocess.run(prefix + [sys.executable, "-c", "import posfast"], cwd="/",
                               capture_output=True, text=True, timeout=60)
        if probe.returncode != 0:
            pytest.skip("user nobody cannot import this posfast (%s)" % probe.stderr.strip()[-200:])
    proc = subprocess.run(prefix + [sys.executable, "-m", "posfast.cli", *argv],
                          capture_output=True, text=True, timeout=120, cwd="/")
    return proc.returncode, proc.stdout, proc.stderr


def one_line_error(err):
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("posfast: error: ")
    assert err.count("posfast:") == 1, err
    return err


@pytest.mark.parametrize("argv, words", [
    (["capacity", "--budget", "lots", "--per-day", "800"], "size 'lots': write a number"),
    (["capacity", "--budget", "64MB", "--per-day", "0"], "--per-day): give the number of"),
    (["capacity", "--budget", "0MB", "--per-day", "800"], "a budget of 0 B is too small"),
    (["capacity", "--budget", "64MB", "--per-day", "800", "--slot-size", "100"],
     "slot_size=100: use a multiple of 64"),
])
def test_capacity_refusals_are_one_line(argv, words):
    code, out, err = run_cli(*argv)
    assert code == 2 and words in one_line_error(err)


def test_reprint_to_a_bad_printer_address_is_one_line(crafted):
    path, _ = crafted
    for spec in ("tcp://127.0.0.1:notaport", "tcp://127.0.0.1:99999", "tcp://:9100"):
        code, out, err = run_cli("reprint", path, "--seq", "1", "--printer", spec)
        assert code == 2 and ("--printer %s: give tcp://HOST:PORT" % spec) in one_line_error(err)
    with posfast.Journal.open(path, readonly=True) as j:
        assert len(j.query(kind="print")) == 0          # nothing journaled


def test_error_messages_carry_the_prefix_once(tmp_path, capsys):
    assert main(["status", str(tmp_path / "missing.pfj")]) == 66
    one_line_error(capsys.readouterr().err)
    path = str(tmp_path / "t.pfj")
    posfast.Journal.create(path, capacity=16).close()
    assert main(["query", path, "--kind", "sell"]) == 2
    assert "kind='sell' is not a Kind" in one_line_error(capsys.readouterr().err)


@pytest.fixture
def unwritable(tmp_path):
    """A journal this user cannot write: 0444 (and, as root, run the CLI as nobody)."""
    import tempfile
    directory = tempfile.mkdtemp(prefix="posfast-ro-")
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "till.pfj")
    with posfast.Journal.create(path, capacity=64) as j:
        j.append(terminal=1, kind="sale", state="approved", amount=500, currency=156, receipt_no=1,
                 payload=Receipt(merchant="Shop", terminal=1, receipt_no=1,
                                 items=[ReceiptItem("Tea", unit_price=500)]).to_payload())
    user = None
    if os.geteuid() == 0:
        for name in (directory, path, path + ".idx"):
            os.chown(name, 65534, 65534)
        user = "nobody"
    os.chmod(path, 0o444)
    yield path, user
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("argv", [["close-day", "{p}", "--day", "2026-12-01"],
                                  ["reprint", "{p}", "--seq", "1", "--out", "{d}/copy.bin"],
                                  ["verify", "{p}", "--repair-index"]])
def test_write_verbs_on_an_unwritable_journal_say_so_in_one_line(unwritable, argv):
    path, user = unwritable
    argv = [a.format(p=path, d=os.path.dirname(path)) for a in argv]
    code, out, err = run_cli(*argv, user=user)
    line = one_line_error(err)
    assert code == 77 and "Permission denied" in line and path in line
    assert "run it as the journal's owner or fix the file's permissions" in line


@pytest.mark.parametrize("argv, words", [(["query", "{p}"], "1 record(s)"),
                                         (["last", "{p}", "--terminal", "1"], "APPROVED"),
                                         (["status", "{p}"], "head_seq"),
                                         (["show", "{p}", "1"], "Tea"),
                                         (["reprint", "{p}", "--seq", "1"], "COPY 1")])
def test_read_only_verbs_work_on_an_unwritable_journal(unwritable, argv, words):
    path, user = unwritable
    code, out, err = run_cli(*[a.format(p=path) for a in argv], user=user)
    assert code == 0 and words in out and "Traceback" not in err
