"""Day close (Z-report): totals against an independent computation, refusals, the
perpetual grand totals, verify() catching edited history, and the report on paper."""
import json
import struct

import numpy as np
import pytest

import posfast
from posfast import DayRule, Flag, Journal, Kind, State, _core
from posfast.cli import main
from posfast.dayclose import CLOSE_MISMATCH, GRAND_TOTAL_BREAK, KIND_SIGN, DayClose
from posfast.errors import DayClosed, PosfastError
from posfast.printing import FilePrinter, print_z_report, printed_lines, render_z_escpos, render_z_report
from posfast.receipt import display_width
from posfast.reconcile import Settlement, SETTLEMENT_DTYPE, reconcile

from conftest import read_at, record_span

RULE = DayRule(utc_offset="+08:00", starts_at="04:00")
D = posfast.records.day_number("2025-11-20")
START = RULE.day_start_us(D)
MIN = 60_000_000
CHK_CHAIN = 6
PAYMENTS = {int(k) for k in posfast.records.PAYMENT_KINDS}


def at(day, minutes):
    return RULE.day_start_us(day) + int(minutes * MIN)


@pytest.fixture
def journal(tmp_path):
    j = Journal.create(tmp_path / "till.pfj", capacity=4096, day_rule=RULE, durability="none")
    yield j
    j.close()


def trade(j, day, seed, n=300):
    """A business day: bulk single-record payments of every kind, state, method, currency
    and three terminals, plus begin/finish payments, a refund, training and prints."""
    rng = np.random.default_rng(seed)
    kinds = [int(k) for k in (Kind.SALE, Kind.REFUND, Kind.VOID, Kind.REVERSAL, Kind.PREAUTH,
                              Kind.COMPLETION, Kind.CASH_IN, Kind.CASH_OUT)]
    j.append_many({
        "ts": np.sort(at(day, 30) + rng.integers(0, 20 * 60 * MIN, n)),
        "terminal": rng.integers(1, 4, n), "kind": rng.choice(kinds, n),
        "state": rng.choice([int(State.APPROVED)] * 5 + [int(State.DECLINED), int(State.FAILED),
                                                         int(State.REVERSED)], n),
        "method": rng.choice([1, 2, 3], n), "currency": rng.choice([156, 156, 156, 978], n),
        "amount": rng.integers(1, 100_000, n),
        "flags": np.where(rng.random(n) < 0.05, int(Flag.TRAINING), 0).astype(np.uint8)})
    sale = j.begin_payment(terminal=1, amount=12_345, currency=156, method="card", ts=at(day, 60))
    j.finish_payment(sale, "approved", ts=at(day, 61))
    j.append(terminal=1, kind="print", state="ok", txn_id=sale, ref_seq=sale, ts=at(day, 62))
    refund = j.begin_payment(terminal=1, kind="refund", amount=2_345, ref_seq=sale, currency=156,
                             method="card", ts=at(day, 70))
    j.finish_payment(refund, "approved", ts=at(day, 71))
    j.append(terminal=2, kind="note", ts=at(day, 80), payload=b"drawer count")
    # begun just before the cut-off, answered just after it: belongs to this day
    late = j.begin_payment(terminal=2, amount=777, currency=156, method="qr", ts=at(day, 24 * 60 - 1))
    j.finish_payment(late, "approved", ts=at(day, 24 * 60 + 1))
    return sale, refund, late


def independent(j, day):
    """Plain Python over every record: the newest record of each payment begun on `day`."""
    by_txn = {}
    for seq in range(j.oldest_seq, j.head_seq + 1):
        rec = j.get(seq)
        if rec.kind in PAYMENTS and not rec.flags & Flag.TRAINING:
            by_txn.setdefault(rec.txn_id, []).append(rec)
    cube, terminals, net = {}, {}, {}
    records = 0
    for txn_id, recs in by_txn.items():
        first, last = recs[0], recs[-1]
        if first.seq != txn_id or first.day != day:
            continue
        records += len(recs)
        key = (first.kind, last.state, last.method, last.currency)
        count, total = cube.get(key, (0, 0))
        cube[key] = (count + 1, total + last.amount)
        sign = KIND_SIGN[Kind(first.kind)]
        key = (first.terminal, last.state, last.currency)
        count, total, signed = terminals.get(key, (0, 0, 0))
        terminals[key] = (count + 1, total + last.amount, signed + sign * last.amount)
        if last.state == State.APPROVED:
            n, a = net.get(last.currency, (0, 0))
            net[last.currency] = (n + sign * last.amount, a + abs(sign) * last.amount)
    return ([k + v for k, v in sorted(cube.items())], [k + v for k, v in sorted(terminals.items())],
            net, records)


def test_totals_match_an_independent_computation(journal):
    trade(journal, D - 1, seed=1, n=50)
    sale, refund, late = trade(journal, D, seed=2)
    trade(journal, D + 1, seed=3, n=50)
    close = journal.close_day(D)
    cube, terminals, net, records = independent(journal, D)
    assert close.txns == cube
    assert close.terminals == terminals
    assert close.day_totals() == net
    assert close.grand == net                                  # the first close
    assert close.records[2] == records and close.records[1] == journal.head_seq - 1
    assert set(net) == {156, 978}
    # the late payment counts on its own day, in its final state; training is left out
    assert late in journal.query(day=D + 1)["txn_id"].tolist()
    training = journal.query(day=D)
    training = training[(training["flags"] & Flag.TRAINING) != 0]
    assert len(training) > 3 and sale and refund


def test_the_day_close_record(journal):
    sale = journal.append(terminal=2, kind="sale", state="approved", amount=5000, currency=156,
                          method="card", ts=at(D, 10))
    journal.append(terminal=2, kind="refund", state="approved", amount=1200, currency=156,
                   method="card", ref_seq=sale, ts=at(D, 20))
    close = journal.close_day("2025-11-20", operator=7)
    rec = journal.get(close.seq)
    assert (rec.kind, rec.state, rec.terminal, rec.receipt_no, rec.amount, rec.currency,
            rec.ref_seq, rec.operator, rec.flags) == (Kind.DAY_CLOSE, State.OK, 0, 1, 3800, 156, 0,
                                                      7, 0)
    doc = json.loads(rec.payload)
    assert b" " not in rec.payload                     # compact JSON
    assert (doc["day"], doc["scope"], doc["z"], doc["grand"], doc["in_doubt"]) == \
        ("2025-11-20", None, 1, [[156, 3800, 6200]], [])
    assert DayClose.from_record(rec) == close
    assert journal.day_close(D) == close and journal.day_close(D + 1) is None
    assert journal.verify().ok


def test_grand_totals_continue_and_are_never_reset(journal):
    totals = {}
    for k, day in enumerate((D, D + 1, D + 2)):
        journal.append(terminal=1, kind="sale", state="approved", amount=1000 * (k + 1),
                       currency=156, ts=at(day, 5))
        journal.append(terminal=1, kind="void", state="approved", amount=100, currency=156,
                       ts=at(day, 6))
        journal.append(terminal=2, kind="sale", state="approved", amount=50, currency=156,
                       ts=at(day, 7))
        totals[day] = journal.close_day(day)
    first, second, third = totals[D], totals[D + 1], totals[D + 2]
    assert [c.grand[156] for c in (first, second, third)] == [
        (950, 1150), (950 + 1950, 1150 + 2150), (950 + 1950 + 2950, 1150 + 2150 + 3150)]
    assert (second.prev_seq, third.prev_seq, third.z_no) == (first.seq, second.seq, 3)
    # a terminal's own closes keep their own chain and Z numbers
    t2 = journal.close_day(D, terminal=2)
    assert (t2.z_no, t2.grand, t2.terminal) == (1, {156: (50, 50)}, 2)
    assert journal.get(t2.seq).terminal == 2
    assert journal.verify().ok


def test_refusals(journal, tmp_path):
    journal.append(terminal=1, kind="sale", state="approved", amount=100, currency=156, ts=at(D, 5))
    doubt = journal.begin_payment(terminal=3, amount=900, currency=156, ts=at(D, 9))
    with pytest.raises(DayClosed, match=r"1 payment\(s\) in doubt \(txn %d\).*force" % doubt):
        journal.close_day(D)
    journal.begin_payment(terminal=3, amount=50, currency=156, ts=at(D, 10),
                          flags=Flag.TRAINING)                    # training: never in doubt
    closed = journal.close_day(D, force=True)
    assert closed.in_doubt == [doubt] and closed.forced
    assert journal.get(closed.seq).flags == Flag.FORCED
    assert closed.by("state", 156, state=None) == {State.APPROVED: (1, 100), State.PENDING: (1, 900)}
    with pytest.raises(DayClosed, match="already closed.*Z-report 1, DAY_CLOSE seq %d" % closed.seq):
        journal.close_day("2025-11-20")
    journal.close_day(D + 2)
    with pytest.raises(DayClosed, match="days close in order"):
        journal.close_day(D + 1)
    with pytest.raises(DayClosed, match="has not begun"):
        journal.close_day("2999-01-01")
    journal.flush()
    with Journal.open(journal.path, readonly=True) as ro:
        with pytest.raises(PosfastError, match="read-only"):
            ro.close_day(D + 3)


def patch_record(journal, seq, edit):
    """Rewrite record `seq` in the file with `edit(bytearray of head + payload)`, its CRC32C
    recomputed (so only the hash chain can tell), then reopen the journal."""
    offsets = record_span(journal, seq)
    path, jid = journal.path, journal.journal_id.bytes
    journal.close()
    raw = bytearray(read_at(path, o, 1)[0] for o in offsets)
    edit(raw)
    raw[0:4] = struct.pack("<I", _core.crc32c(jid + bytes(raw[4:])))
    with open(path, "r+b") as f:
        for offset, value in zip(offsets, raw):
            f.seek(offset)
            f.write(bytes([value]))
    return Journal.open(path)


def test_verify_reports_an_edited_summarised_amount(tmp_path):
    j = Journal.create(tmp_path / "till.pfj", capacity=4096, day_rule=RULE, durability="none")
    sale, refund, late = trade(j, D, seed=5, n=40)
    close = j.close_day(D)
    j.append(terminal=1, kind="sale", state="approved", amount=1, currency=156, ts=at(D + 1, 5))
    assert j.verify().ok
    final = int(j.payment(sale).seq)

    def pay_less(raw):
        raw[56:64] = struct.pack("<q", 45)                # amount of the approved sale: 123.45 -> 0.45
    j = patch_record(j, final, pay_less)
    assert j.get(final).amount == 45                       # the CRC passes: only the chain can tell
    report = j.verify()
    problems = sorted((p.seq, p.code) for p in report.problems)
    assert problems == [(final, CHK_CHAIN), (close.seq, CLOSE_MISMATCH)]
    text = [p.cause for p in report.problems if p.code == CLOSE_MISMATCH][0]
    assert "day close of 2025-11-20" in text
    before = dict(close.day_totals())[156][0]
    assert "was %d, the records now give %d" % (before, before - 12_300) in text
    assert [p.slot for p in report.problems if p.code == CLOSE_MISMATCH][0] == j._ring.slot_of(close.seq)
    assert not report.ok and "history was edited" in str(report)
    j.close()


def test_verify_reports_edited_grand_totals(tmp_path):
    j = Journal.create(tmp_path / "till.pfj", capacity=4096, day_rule=RULE, durability="none")
    for day in (D, D + 1):
        j.append(terminal=1, kind="sale", state="approved", amount=1000, currency=156, ts=at(day, 5))
    first = j.close_day(D)
    second = j.close_day(D + 1)
    assert j.verify().ok

    def inflate(raw):
        at_ = bytes(raw).index(b'"grand":[[156,1000,1000]]')
        raw[at_:at_ + 25] = b'"grand":[[156,9000,9000]]'
    j = patch_record(j, first.seq, inflate)
    assert j.day_close(D).grand == {156: (9000, 9000)}
    problems = sorted((p.seq, p.code) for p in j.verify().problems)
    assert problems == [(first.seq, CHK_CHAIN), (first.seq, GRAND_TOTAL_BREAK),
                        (second.seq, GRAND_TOTAL_BREAK)]
    j.close()


def test_evicted_days_are_not_compared(tmp_path):
    j = Journal.create(tmp_path / "small.pfj", capacity=16, day_rule=RULE, durability="none",
                       retention="overwrite", max_payload=1024)
    for k in range(4):
        j.append(terminal=1, kind="sale", state="approved", amount=100, currency=156, ts=at(D, k))
    close = j.close_day(D)
    for k in range(11):            # the DAY_CLOSE record spans 3 slots of 128 bytes
        j.append(terminal=1, kind="sale", state="approved", amount=100, currency=156, ts=at(D + 1, k))
    assert j.oldest_seq == 3 and j.get(close.seq).kind == Kind.DAY_CLOSE
    assert j.verify().ok
    j.close()


def test_z_report_text_and_escpos(journal, tmp_path):
    trade(journal, D, seed=9, n=80)
    close = journal.close_day(D)
    for width in (32, 42, 48):
        text = render_z_report(close, width=width, merchant="好又多超市")
        assert all(display_width(line) <= width for line in text.splitlines())
    text = render_z_report(close, width=42)
    lines = text.splitlines()
    net = close.net(156)
    assert "Z-REPORT / 日结报表" in lines[0]
    assert any(line.startswith("NET CNY") and line.endswith(posfast.receipt.format_amount(net, 156))
               for line in lines)
    assert any(line.startswith("NET EUR") for line in lines)
    assert any(line.startswith("Business day") and line.endswith("2025-11-20") for line in lines)
    data = render_z_escpos(close, width=42)
    printed = [line.text for line in printed_lines(data)]
    assert any("NET CNY" in t for t in printed) and any("日结报表" in t for t in printed)
    assert data.endswith(b"\x1dV\x42\x00") or b"\x1dV" in data[-8:]
    latin = render_z_escpos(close, width=32, encoding="cp437")
    assert "日结" not in "".join(line.text for line in printed_lines(latin, "cp437"))
    # printed through the printing layer and journaled as a PRINT of the DAY_CLOSE: UNKNOWN
    # before the bytes went out, then finalised
    result = print_z_report(journal, close.seq, FilePrinter(tmp_path / "printer.bin"))
    rec = journal.get(result.seq)
    first = journal.get(rec.ref_seq)
    assert (result.outcome, rec.kind, first.ref_seq, rec.txn_id, rec.state, first.state) == (
        "ok", Kind.PRINT, close.seq, 0, State.OK, State.UNKNOWN)
    assert (tmp_path / "printer.bin").read_bytes() == render_z_escpos(
        close, tz=journal.day_rule.tzinfo)
    # a Z-report's print is not a receipt without a transaction
    empty = Settlement("none.csv", np.zeros(0, SETTLEMENT_DTYPE))
    report = reconcile(journal, empty, day=rec.day)
    assert not report.by_category("receipt_without_transaction")


def test_cli_close_day(tmp_path, capsys):
    path = str(tmp_path / "till.pfj")
    with Journal.create(path, capacity=1024, day_rule=RULE) as j:
        j.append(terminal=3, kind="sale", state="approved", amount=1250, currency=156, ts=at(D, 5))
        doubt = j.begin_payment(terminal=4, amount=500, currency=156, ts=at(D + 1, 5))
    assert main(["close-day", path, "--day", "2025-11-20"]) == 0
    out = capsys.readouterr().out
    assert "Z-REPORT" in out and "12.50" in out
    assert main(["close-day", path, "--day", "2025-11-20"]) == 73   # EX_CANTCREAT
    assert "already closed" in capsys.readouterr().err
    assert main(["close-day", path, "--day", "2025-11-21", "--terminal", "4"]) == 73
    assert "in doubt (txn %d)" % doubt in capsys.readouterr().err
    assert main(["close-day", path, "--day", "2025-11-21", "--terminal", "4", "--force",
                 "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["terminal"], doc["in_doubt"], doc["forced"], doc["z_no"]) == (4, [doubt], True, 1)
    assert main(["verify", path]) == 0
