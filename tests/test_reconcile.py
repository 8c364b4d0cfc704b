"""Reconciliation: journal vs back office / acquirer settlement file vs printed receipts.

Each scenario plants every category once and asserts the whole report exactly
(category, journal seqs, host rows), so a finding that appears, disappears or
changes side is caught.
"""
import csv
import datetime as dt
import io
import json
import sqlite3

import numpy as np
import pytest

import posfast
from posfast import DayRule, Journal, Kind
from posfast.cli import main
from posfast.reconcile import (CATEGORIES, SettlementError, read_settlement,
                               reconcile)
from posfast.reconcile.matching import window_pairs as _window_pairs
from posfast.sync import SqliteTarget, Syncer

# only a statement can show these (fees, settlement days): not a back office
STATEMENT_ONLY = {"fee_mismatch", "settled_other_day"}

RULE = DayRule(utc_offset="+08:00", starts_at="04:00")
DAY = "2025-11-20"
START = RULE.day_start_us(DAY)          # 2025-11-20 04:00 +08:00
MIN = 60_000_000
HEADER = "terminal,time,rrn,auth_code,amount,currency,type\n"


def at(minutes):
    return START + int(minutes * MIN)


def local(ts_us):
    """The settlement file's naive local time (+08:00) of a microsecond timestamp."""
    moment = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=ts_us, hours=8)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


class Till:
    """Writes payments and prints the way a POS does (begin, finish, print)."""

    def __init__(self, journal):
        self.j = journal

    def pay(self, terminal, amount, minute, state="approved", printed="ok", method="card",
            rrn="", auth="", kind="sale", ref_seq=0, flags=0, client_ref=None):
        txn = self.j.begin_payment(terminal=terminal, kind=kind, amount=amount, currency=156,
                                   method=method, ts=at(minute), ref_seq=ref_seq, flags=flags,
                                   client_ref=client_ref)
        final = None
        if state != "pending":
            final = self.j.finish_payment(txn, state, auth_code=auth, rrn=rrn, ts=at(minute) + 2_000_000)
        prints = []
        for outcome in ([printed] if isinstance(printed, str) else list(printed or [])):
            prints.append(self.print(txn, final or txn, outcome, minute))
        return txn, final, prints

    def print(self, txn, seq, outcome, minute, copy=False):
        rec = self.j.get(seq)
        return self.j.append(terminal=rec.terminal, kind="print", state=outcome, txn_id=txn,
                             ref_seq=seq, receipt_no=rec.receipt_no, currency=156,
                             flags=posfast.Flag.COPY if copy else 0,
                             ts=at(minute) + 3_000_000, payload=b'{"copy":0}')


def found(report):
    return [(d.category, d.journal_seqs, d.host_rows) for d in report.discrepancies]


@pytest.fixture
def journal(tmp_path):
    j = Journal.create(tmp_path / "till.pfj", capacity=4096, day_rule=RULE, durability="none")
    yield j
    j.close()


# ------------------------------------------------------------------ back office
def test_back_office_every_category_exactly(journal, tmp_path):
    till = Till(journal)
    # previous day: an approved sale whose copy is reprinted today (fine)
    old, old_final, _ = till.pay(1, 700, -600, rrn="000000000099")
    clean = till.pay(1, 1000, 10, rrn="000000000001", auth="A00001")
    amount_edit = till.pay(2, 2000, 20, rrn="000000000002")
    dup_a = till.pay(1, 3000, 30, rrn="000000000003")
    dup_b = till.pay(2, 3000, 31, rrn="000000000003")
    declined_printed = till.pay(1, 4000, 40, state="declined", printed="ok")
    no_receipt = till.pay(2, 5000, 50, printed="failed")
    unknown_print = till.pay(1, 6000, 60, printed="unknown")
    in_doubt = till.pay(2, 7000, 70, state="pending", printed=None)
    training = till.pay(1, 9999, 75, printed=None, flags=posfast.Flag.TRAINING)
    cash = till.pay(2, 1500, 80, method="cash")
    late = journal.begin_payment(terminal=1, amount=8000, currency=156, method="card", ts=at(90))
    reprint = till.print(old, old_final, "ok", 95, copy=True)
    orphan_print = journal.append(terminal=2, kind="print", state="ok", txn_id=123456, ref_seq=123456,
                                  currency=156, ts=at(96))
    by_seq_only = till.pay(1, 2500, 97, printed=None)       # its print names only the seq
    journal.append(terminal=1, kind="print", state="ok", ref_seq=by_seq_only[1], ts=at(97) + 5_000_000)
    # next business day (after the 04:00 cut-off): outside this day
    till.pay(1, 1234, 24 * 60 + 5, printed=None)

    back = tmp_path / "back.db"
    Syncer(journal, SqliteTarget(back, create=True), batch=100).run_once()
    # after the sync: the late payment's outcome and receipt, and a payment the host never saw
    late_final = journal.finish_payment(late, "approved", ts=at(91))
    late_print = till.print(late, late_final, "ok", 91)
    unsynced = till.pay(2, 1111, 100, rrn="000000000111")
    # the back office: one amount edited there, one payment that is not in the journal
    with sqlite3.connect(back) as db:
        db.execute("UPDATE records SET amount = 2100 WHERE seq = ?", (amount_edit[1],))
        cols = [r[1] for r in db.execute("PRAGMA table_info(records)")]
        row = dict(zip(cols, db.execute("SELECT * FROM records WHERE seq = ?", (clean[1],)).fetchone()))
        row.update(seq=5000, txn_id=5000, ref_seq=0, rrn=b"000000000500", amount=555)
        db.execute("INSERT INTO records (%s) VALUES (%s)" % (",".join('"%s"' % c for c in cols),
                                                              ",".join("?" * len(cols))),
                   [row[c] for c in cols])

    report = reconcile(journal, "sqlite:///%s" % back, day=DAY)
    assert found(report) == [
        ("missing_at_host", (unsynced[0], unsynced[1]), ()),
        ("missing_in_journal", (), (5000,)),
        ("amount_mismatch", (amount_edit[0], amount_edit[1]), (amount_edit[0], amount_edit[1])),
        ("state_mismatch", (late, late_final), (late,)),
        ("duplicate", (dup_a[0], dup_a[1], dup_b[0], dup_b[1]),
         (dup_a[0], dup_a[1], dup_b[0], dup_b[1])),
        ("receipt_without_transaction", (declined_printed[2][0], declined_printed[0],
                                         declined_printed[1]), ()),
        ("receipt_without_transaction", (orphan_print,), ()),
        ("transaction_without_receipt", (no_receipt[0], no_receipt[1]), ()),
        ("print_unknown", (unknown_print[0], unknown_print[1], unknown_print[2][0]), ()),
        ("in_doubt", (in_doubt[0],), (in_doubt[0],)),
    ]
    assert set(d.category for d in report.discrepancies) == set(CATEGORIES) - STATEMENT_ONLY
    by = {d.category: d for d in report.discrepancies}
    assert (by["amount_mismatch"].amount, by["amount_mismatch"].host_amount) == (2000, 2100)
    assert (by["state_mismatch"].state, by["state_mismatch"].host_state) == ("approved", "pending")
    assert "not synced yet" in by["state_mismatch"].detail
    assert by["in_doubt"].host_state == "pending"
    assert "declined" in report.by_category("receipt_without_transaction")[0].detail
    assert "not in the journal" in report.by_category("receipt_without_transaction")[1].detail
    assert "failed print seq %d" % no_receipt[2][0] in by["transaction_without_receipt"].detail
    assert report.host_rows_are == "seq" and not report.ok
    # 12 payments begun that day (training left out); the host holds 11 of them plus its own
    assert report.journal_payments == 12 and report.host_payments == 12 and report.matched == 11
    approved = [clean, amount_edit, dup_a, dup_b, no_receipt, unknown_print, cash, unsynced,
                by_seq_only]
    assert report.journal_net == {156: sum(journal.get(p[1]).amount for p in approved) + 8000}
    assert (reprint, late_print, training) and late_print  # written, and silent in the report


def test_terminal_filter_and_clean_day(journal, tmp_path):
    till = Till(journal)
    a = till.pay(1, 1000, 10, rrn="000000000001")
    till.pay(2, 2000, 20, printed=None)              # terminal 2: no receipt
    back = tmp_path / "back.db"
    Syncer(journal, SqliteTarget(back, create=True)).run_once()
    report = reconcile(journal, SqliteTarget(back), day=DAY, terminal=1)
    assert report.ok and report.matched == 1 and found(report) == []
    assert report.journal_net == report.host_net == {156: 1000}
    report = reconcile(journal, str(back), day=DAY, terminal=2)
    assert [d.category for d in report.discrepancies] == ["transaction_without_receipt"]
    assert a


def test_back_office_that_never_saw_the_journal(journal, tmp_path):
    txn, final, _ = Till(journal).pay(1, 1000, 10)
    back = tmp_path / "empty.db"
    SqliteTarget(back, create=True).close()
    report = reconcile(journal, back, day=DAY)
    assert found(report) == [("missing_at_host", (txn, final), ())]
    assert "never synced" in report.notes[0]


def test_records_evicted_from_the_journal_are_named(tmp_path):
    j = Journal.create(tmp_path / "small.pfj", capacity=8, day_rule=RULE, durability="none",
                       retention="overwrite")
    till = Till(j)
    back = tmp_path / "back.db"
    first = [till.pay(1, 100 * k, k, printed=None) for k in range(1, 5)]
    Syncer(j, SqliteTarget(back, create=True)).run_once()
    for k in range(5, 9):
        till.pay(1, 100 * k, k, printed=None)
    assert j.oldest_seq == first[-1][1] + 1          # the first four payments are gone
    Syncer(j, SqliteTarget(back)).run_once()
    report = reconcile(j, back, day=DAY, check_receipts=False)
    evicted = report.by_category("missing_in_journal")
    assert [d.host_rows for d in evicted] == [(t, f) for t, f, _ in first]
    assert all("evicted" in d.detail for d in evicted)
    assert {d.category for d in report.discrepancies} == {"missing_in_journal"}
    j.close()


# ------------------------------------------------------------------ settlement file
def write_settlement(path, rows):
    with open(path, "w", newline="") as f:
        f.write(HEADER)
        csv.writer(f).writerows(rows)
    return str(path)


def test_settlement_every_category_exactly(journal, tmp_path):
    till = Till(journal)
    by_rrn = till.pay(1, 1000, 10, rrn="100000000001", auth="A00001")
    by_auth = till.pay(1, 1100, 11, auth="B00002")
    by_time = till.pay(2, 1200, 12, method="qr")
    never_settled = till.pay(1, 1300, 13, rrn="100000000004")
    amount_off = till.pay(2, 1400, 14, rrn="100000000006")
    declined = till.pay(1, 1500, 15, state="declined", rrn="100000000007", printed=None)
    settled_twice = till.pay(2, 1600, 16, rrn="100000000008")
    pending = till.pay(1, 1700, 17, state="pending", printed=None)
    till.pay(2, 1800, 18, method="cash")                       # cash: not at the acquirer
    refund = till.pay(1, 500, 19, kind="refund", ref_seq=by_rrn[0], rrn="100000000001")
    twins = [till.pay(3, 900, 30 + k, method="qr") for k in range(3)]   # equal amounts
    path = write_settlement(tmp_path / "settle.csv", [
        (1, local(at(10)), "100000000001", "A00001", 1000, "CNY", "sale"),       # line 2
        (1, local(at(11) + 5 * MIN), "", "B00002", 1100, "156", "sale"),         # line 3
        (2, local(at(12) + 40_000_000), "", "", 1200, "CNY", "sale"),            # line 4
        (1, local(at(20)), "100000000005", "E00005", 4242, "CNY", "sale"),       # line 5
        (2, local(at(14)), "100000000006", "", 1450, "CNY", "sale"),             # line 6
        (1, local(at(15)), "100000000007", "", 1500, "CNY", "sale"),             # line 7
        (2, local(at(16)), "100000000008", "", 1600, "CNY", "sale"),             # line 8
        (2, local(at(16)), "100000000008", "", 1600, "CNY", "sale"),             # line 9
        (1, local(at(17) + 30_000_000), "", "", 1700, "CNY", "sale"),            # line 10
        (1, local(at(19)), "100000000001", "", -500, "CNY", "refund"),           # line 11
        (3, local(at(32) + 10_000_000), "", "", 900, "CNY", "sale"),             # line 12
        (3, local(at(30) + 10_000_000), "", "", 900, "CNY", "sale"),             # line 13
        (3, local(at(31) + 10_000_000), "", "", 900, "CNY", "sale"),             # line 14
        (1, local(at(-24 * 60)), "100000000009", "", 999, "CNY", "sale"),        # the day before
    ])
    report = reconcile(journal, path, day=DAY)
    assert found(report) == [
        ("missing_at_host", (never_settled[0], never_settled[1]), ()),
        ("missing_in_journal", (), (5,)),
        ("amount_mismatch", (amount_off[0], amount_off[1]), (6,)),
        ("state_mismatch", (declined[0], declined[1]), (7,)),
        ("duplicate", (settled_twice[0], settled_twice[1]), (8, 9)),
        ("in_doubt", (pending[0],), (10,)),
    ]
    assert report.matched == 11 and report.host_rows_are == "line"
    assert report.host_payments == 13
    doubt = report.by_category("in_doubt")[0]
    assert doubt.host_state == "settled" and "line 10" in doubt.detail
    assert report.by_category("amount_mismatch")[0].host_amount == 1450
    # the window pairs the three equal QR sales nearest first, one row each
    assert all(p for p in (by_auth, by_time, refund, twins))


def test_settlement_time_window_and_offsets(journal, tmp_path):
    till = Till(journal)
    sale = till.pay(1, 1000, 10, method="qr")
    far = write_settlement(tmp_path / "far.csv", [(1, local(at(10) + 6 * MIN), "", "", 1000, "156", "sale")])
    report = reconcile(journal, far, day=DAY)
    assert [d.category for d in report.discrepancies] == ["missing_at_host", "missing_in_journal"]
    report = reconcile(journal, far, day=DAY, window=400)
    assert report.ok and report.matched == 1
    # an explicit offset (UTC here) is honoured; the file's local time is the journal's
    utc = (dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=at(10))).strftime("%Y-%m-%dT%H:%M:%SZ")
    report = reconcile(journal, write_settlement(tmp_path / "utc.csv", [(1, utc, "", "", 1000, "CNY", "sale")]),
                       day=DAY)
    assert report.ok, found(report)
    assert sale


def test_settlement_of_another_day_and_unusual_times(journal, tmp_path):
    till = Till(journal)
    sale = till.pay(1, 1000, 10, method="qr")
    # a comma fraction: numpy's parser refuses it, datetime.fromisoformat reads it
    report = reconcile(journal, write_settlement(tmp_path / "odd.csv", [
        (1, local(at(10)) + ",5", "", "", 1000, "CNY", "sale")]), day=DAY)
    assert report.ok and report.matched == 1, found(report)
    report = reconcile(journal, write_settlement(tmp_path / "late.csv", [
        (1, "2025-11-22 10:00:00", "", "", 1000, "CNY", "sale")]), day=DAY)
    assert [d.category for d in report.discrepancies] == ["missing_at_host"]
    assert "no row of" in report.notes[0] and "2025-11-22T10:00:00+08:00" in report.notes[0]
    assert sale


def test_window_pairs_nearest_first():
    group = np.array([b"a", b"a", b"a"], dtype="S1").view("V1")
    j_ts = np.array([100, 200, 300], np.int64)
    h_ts = np.array([305, 190, 120, 5000], np.int64)
    hg = np.array([b"a"] * 4, dtype="S1").view("V1")
    ji, hi = _window_pairs(group, j_ts, hg, h_ts, 50)
    assert sorted(zip(ji.tolist(), hi.tolist())) == [(0, 2), (1, 1), (2, 0)]
    ji, hi = _window_pairs(group, j_ts, np.array([b"b"] * 4, dtype="S1").view("V1"), h_ts, 50)
    assert len(ji) == 0


@pytest.mark.parametrize("body, line, column, value, words", [
    ("1,2025-11-20 10:00:00,1,,12.50,156,sale\n", 2, "amount", "12.50", "minor units"),
    ("1,2025-11-20 10:00:00,1,,1250,156,sale\n1,20/11/2025 10:00,2,,1,156,sale\n", 3, "time",
     "20/11/2025 10:00", "ISO 8601"),
    ("1,2025-11-20,1,,1250,156,sale\n", 2, "time", "2025-11-20", "ISO 8601"),
    ("x1,2025-11-20 10:00:00,1,,1250,156,sale\n", 2, "terminal", "x1", "terminal"),
    ("1,2025-11-20 10:00:00,1,,1250,XYZ,sale\n", 2, "currency", "XYZ", "ISO 4217"),
    ("1,2025-11-20 10:00:00,1,,1250,156,sale\n1,2025-11-20 10:00:00,1,,1250,156,tip\n", 3, "type",
     "tip", "payment type"),
    ("1,2025-11-20 10:00:00,1234567890123,,1250,156,sale\n", 2, "rrn", "1234567890123", "12"),
    ("1,2025-11-20 10:00:00,1,,-5,156,sale\n", 2, "amount", "-5", "negative"),
    ("1,2025-11-20 10:00:00,12\u00e9,,5,156,sale\n", 2, "rrn", "12\u00e9", "ASCII"),
])
def test_malformed_settlement_names_line_column_value(tmp_path, body, line, column, value, words):
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + body)
    with pytest.raises(SettlementError) as info:
        read_settlement(path)
    err = info.value
    assert (err.line, err.column, err.value) == (line, column, value)
    assert "line %d" % line in str(err) and words in str(err) and str(path) in str(err)


def test_malformed_settlement_structure(tmp_path, journal):
    path = tmp_path / "bad.csv"
    path.write_text("terminal,time,amount,currency,type\n1,2025-11-20 10:00:00,5,156,sale\n")
    with pytest.raises(SettlementError, match="lacks column.*rrn, auth_code"):
        read_settlement(path)
    path.write_text(HEADER + "1,2025-11-20 10:00:00,1,,1250,156,sale\n\n1,2025-11-20 10:00:00,1\n")
    with pytest.raises(SettlementError, match="line 4: 3 fields, the header .line 1. has 7"):
        read_settlement(path)
    path.write_text("")
    with pytest.raises(SettlementError, match="empty"):
        read_settlement(path)
    # reconcile refuses the whole file too: nothing partial
    path.write_text(HEADER + "1,2025-11-20 10:00:00,1,,1250,156,sale\n1,2025-11-20 10:00:00,2,,1.5,156,sale\n")
    with pytest.raises(SettlementError, match="line 3, column amount"):
        reconcile(journal, str(path), day=DAY)
    assert main(["reconcile", journal.path, "--day", DAY, "--host", str(path)]) == 65   # EX_DATAERR


def test_quoted_and_crlf_files_read_like_plain_ones():
    plain = (HEADER + "3,2025-11-20 10:00:00,000000000001,A1,1250,156,sale\n\n"
             "7,2025-11-20 11:00:00,,,99,978,refund\n")
    quoted = plain.replace("000000000001", '"000000000001"').replace("\n", "\r\n")
    a, b = read_settlement(io.StringIO(plain)).rows, read_settlement(io.StringIO(quoted)).rows
    assert a.tolist() == b.tolist() and a["line"].tolist() == [2, 4]
    with pytest.raises(SettlementError, match="line 3: 2 fields"):
        read_settlement(io.StringIO(quoted.replace("\r\n\r\n", '\r\n"x",1\r\n')))


def test_settlement_columns_any_order_aliases_and_bom(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("\ufeffType,Amount,Currency,Auth Code,RRN,Time,Terminal ID,extra\n"
                    "refund,-250,cny,A1,000000000001,2025-11-20T10:00:00+08:00,7,x\n", encoding="utf-8")
    rows = read_settlement(path).rows
    assert rows[["line", "terminal", "amount", "currency", "kind", "rrn", "auth_code"]].tolist() == \
        [(2, 7, 250, 156, int(Kind.REFUND), b"000000000001", b"A1")]
    assert int(rows["ts"][0]) == int(dt.datetime(2025, 11, 20, 2, tzinfo=dt.timezone.utc).timestamp()) * 10**6


# ------------------------------------------------------------------ output
def test_report_as_json_csv_and_table(journal, tmp_path):
    till = Till(journal)
    txn, final, _ = till.pay(1, 1000, 10, printed=None)
    back = tmp_path / "back.db"
    SqliteTarget(back, create=True).close()
    report = reconcile(journal, back, day=DAY)
    doc = json.loads(report.to_json())
    assert doc["ok"] is False and doc["counts"]["missing_at_host"] == 1
    assert doc["counts"]["transaction_without_receipt"] == 1 and sum(doc["counts"].values()) == 2
    assert doc["discrepancies"][0]["journal_seqs"] == [txn, final]
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert [(r["category"], r["journal_seqs"], r["amount"]) for r in rows] == [
        ("missing_at_host", "%d %d" % (txn, final), "1000"),
        ("transaction_without_receipt", "%d %d" % (txn, final), "1000")]
    table = report.to_table()
    assert "missing_at_host" in table and "10.00" in table and "2 discrepancies" in table


def test_cli_reconcile_exit_status(journal, tmp_path, capsys):
    Till(journal).pay(1, 1000, 10, rrn="000000000001")
    back = tmp_path / "back.db"
    Syncer(journal, SqliteTarget(back, create=True)).run_once()
    journal.flush()
    url = "sqlite:///%s" % back
    assert main(["reconcile", journal.path, "--day", DAY, "--host", url]) == 0
    assert "no discrepancies" in capsys.readouterr().out
    Till(journal).pay(1, 2000, 20)
    journal.flush()
    assert main(["reconcile", journal.path, "--day", DAY, "--host", url, "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["counts"]["missing_at_host"] == 1
    assert main(["reconcile", journal.path, "--day", DAY, "--host", url, "--terminal", "2",
                 "--format", "csv"]) == 0


def test_large_day_is_vectorized(tmp_path):
    """20,000 payments against 20,000 settlement rows: every one matched by one of the
    three passes (no timing assertion here: bench/bench_reconcile.py measures)."""
    j = Journal.create(tmp_path / "big.pfj", capacity=50_000, day_rule=RULE, durability="none")
    n = 20_000
    rng = np.random.default_rng(7)
    ts = np.sort(START + rng.integers(0, 86_400 * 10**6, n))
    terminal = rng.integers(1, 20, n)
    amount = rng.integers(100, 5000, n)
    rrn = np.char.mod("%012d", np.arange(n)).astype("S12")
    rrn[::3] = b""                              # a third without rrn: matched by auth or by time
    auth = np.char.mod("%06d", np.arange(n)).astype("S6")
    auth[::6] = b""
    j.append_many({"ts": ts, "terminal": terminal, "kind": "sale", "state": "approved",
                   "amount": amount, "currency": 156, "method": "card", "rrn": rrn, "auth_code": auth})
    buf = io.StringIO()
    buf.write(HEADER)
    shifted = ts + rng.integers(-30, 30, n) * 10**6
    for i in rng.permutation(n):
        buf.write("%d,%s,%s,%s,%d,156,sale\n" % (terminal[i], local(int(shifted[i])), rrn[i].decode(),
                                                auth[i].decode(), amount[i]))
    buf.seek(0)
    settlement = read_settlement(buf, RULE)
    report = reconcile(j, settlement, day=DAY, check_receipts=False)
    assert report.matched == n and report.ok, report.counts()
    j.close()


def test_postgres_back_office(journal, tmp_path):
    """The same reading of the records table through a real PostgreSQL server."""
    pytest.importorskip("psycopg", reason="needs psycopg 3 (pip install 'psycopg[binary]')")
    import _pg
    from posfast.sync import PostgresTarget
    server = _pg.base_dsn()
    if server is None:
        pytest.skip(_pg.SKIP_REASON)
    dsn = _pg.fresh_database(server)
    till = Till(journal)
    clean = till.pay(1, 1000, 10, rrn="000000000001")
    doubt = till.pay(2, 7000, 70, state="pending", printed=None)
    target = PostgresTarget(dsn)
    try:
        Syncer(journal, target).run_once()
    finally:
        target.close()
    unsynced = till.pay(2, 1111, 100)
    report = reconcile(journal, dsn, day=DAY)
    assert found(report) == [("missing_at_host", (unsynced[0], unsynced[1]), ()),
                             ("in_doubt", (doubt[0],), (doubt[0],))]
    assert report.matched == 2 and report.host_net == {156: 1000} and clean
    assert report.host.startswith("back office postgresql://")


# ------------------------------------------------------------------ hostile settlement files
ROW = "1,2025-11-20 10:00:00,000000000001,A1,1250,156,sale\n"


@pytest.mark.parametrize("header, first, second", [
    ("terminal,time,rrn,auth_code,amount,currency,type,rrn", "rrn", "rrn"),
    ("terminal,time,reference,auth_code,amount,currency,type,rrn", "reference", "rrn"),
    ("tid,time,rrn,auth_code,amount,currency,type,Terminal", "tid", "Terminal"),
    ("terminal,time,rrn,auth_code,amount,currency,type,Transaction Type", "type",
     "Transaction Type"),
])
def test_header_naming_a_column_twice_is_refused(tmp_path, header, first, second):
    path = tmp_path / "dup.csv"
    path.write_text(header + "\n" + ROW.rstrip("\n") + ",x\n")
    with pytest.raises(SettlementError) as info:
        read_settlement(path)
    message = str(info.value)
    assert "twice" in message and repr(first) in message and repr(second) in message
    assert info.value.line == 1 and "line 1" in message


def test_cr_only_line_endings_parse_like_lf(tmp_path):
    lf = HEADER + ROW + "\n" + "7,2025-11-20 11:00:00,,,99,978,refund\n"
    path = tmp_path / "mac.csv"
    path.write_bytes(lf.replace("\n", "\r").encode())
    rows = read_settlement(path).rows
    assert rows.tolist() == read_settlement(io.StringIO(lf)).rows.tolist()
    assert rows["line"].tolist() == [2, 4] and rows["amount"].tolist() == [1250, 99]
    # quoted fields, and a CR-only stream
    quoted = lf.replace("000000000001", '"000000000001"').replace("\n", "\r")
    assert read_settlement(io.StringIO(quoted)).rows.tolist() == rows.tolist()
    # an error in a CR-only file names the right line
    path.write_bytes((HEADER + ROW + ROW.replace("1250", "12.50")).replace("\n", "\r").encode())
    with pytest.raises(SettlementError, match="line 3, column amount: '12.50'"):
        read_settlement(path)


@pytest.mark.parametrize("amount", ["12345678901234567890", "-99999999999999999999",
                                    "4611686018427387905"])
def test_out_of_range_amount_names_line_column_value(tmp_path, amount):
    path = tmp_path / "big.csv"
    path.write_text(HEADER + ROW + ROW.replace("1250", amount).replace("sale", "refund"))
    with pytest.raises(SettlementError) as info:
        read_settlement(path)
    err = info.value
    assert (err.line, err.column, err.value) == (3, "amount", amount)
    assert "line 3, column amount: %r is out of range" % amount in str(err)


def test_encoding_option_and_undecodable_bytes(tmp_path, journal, capsys):
    header = HEADER.replace("terminal", "终端")
    text = header + ROW + ROW.replace("000000000001", "000000000002")
    path = tmp_path / "gbk.csv"
    path.write_bytes(text.encode("gbk"))
    # read as UTF-8 (the default): refused, naming the line and the way out
    with pytest.raises(SettlementError) as info:
        read_settlement(path)
    message = str(info.value)
    assert info.value.line == 1 and "line 1" in message and "--encoding" in message
    assert "UTF-8" in message
    # "终端" is not a column name: with the encoding given, it is read and the header lacks terminal
    with pytest.raises(SettlementError, match="lacks column.*terminal"):
        read_settlement(path, encoding="gbk")
    path.write_bytes((HEADER.replace("type", "type,备注") + ROW.replace("\n", ",现金\n")
                      + ROW.replace("000000000001", "000000000002").replace("\n", ",银联\n"))
                     .encode("gbk"))
    rows = read_settlement(path, encoding="gbk").rows
    assert rows["rrn"].tolist() == [b"000000000001", b"000000000002"]
    # a bad byte deep in the file: its line is named
    path.write_bytes(HEADER.encode() + ROW.encode() * 5 + b"1,2025-11-20 10:00:00,1,,5,156,sale\xff\n")
    with pytest.raises(SettlementError, match="line 7: bytes b'\\\\xff' are not UTF-8 text"):
        read_settlement(path)
    with pytest.raises(SettlementError, match="unknown encoding 'klingon'"):
        read_settlement(path, encoding="klingon")
    # the CLI: --encoding reaches the reader; a wrong one is one line, exit 65
    path.write_bytes((HEADER.replace("type", "type,note") + ROW.replace("\n", ",现金\n")).encode("gbk"))
    assert main(["reconcile", journal.path, "--day", DAY, "--host", str(path)]) == 65   # EX_DATAERR
    err = capsys.readouterr().err
    assert "--encoding" in err and "line 2" in err and "Traceback" not in err
    assert main(["reconcile", journal.path, "--day", DAY, "--host", str(path), "--encoding",
                 "gbk"]) == 1
    assert "missing_in_journal" in capsys.readouterr().out
    # UTF-8 with a BOM, given explicitly or not
    path.write_bytes(("\ufeff" + HEADER + ROW).encode("utf-8"))
    assert read_settlement(path).rows["amount"].tolist() == [1250]
    assert read_settlement(path, encoding="utf-8").rows["amount"].tolist() == [1250]


def test_blocks_join_like_one_read(tmp_path, monkeypatch):
    """The reader works block by block: a file many blocks long reads exactly like
    one read whole, whatever falls on a block boundary (a CRLF, a quoted newline)."""
    import posfast.reconcile.settlement as rec
    body = []
    for k in range(300):
        rrn = '"%012d"' % k if k % 7 == 0 else "%012d" % k
        body.append("%d,2025-11-20 10:%02d:00,%s,A%d,%d,156,sale" % (k % 9 + 1, k % 60, rrn, k, 100 + k))
        if k % 50 == 0:
            body.append("")
    text = HEADER.replace("\n", "\r\n") + "\r\n".join(body) + "\r\n"
    whole = read_settlement(io.StringIO(text)).rows
    for size in (7, 64, 1000):
        monkeypatch.setattr(rec, "_BLOCK_CHARS", size)
        assert read_settlement(io.StringIO(text)).rows.tolist() == whole.tolist()
        assert read_settlement(io.StringIO(text.replace("\r\n", "\r"))).rows.tolist() == whole.tolist()
    assert len(whole) == 300 and whole["line"][-1] == 300 + 6 + 1
    # a quoted field holding a newline, across a block boundary
    monkeypatch.setattr(rec, "_BLOCK_CHARS", 5)
    rows = read_settlement(io.StringIO(HEADER + ROW + '1,2025-11-20 10:00:00,"1\n2",,5,156,sale\n'
                                       + ROW)).rows
    assert rows["rrn"].tolist() == [b"000000000001", b"1\n2", b"000000000001"]
    assert rows["line"].tolist() == [2, 4, 5]


# ------------------------------------------------------------------ large reports
def _many_findings(journal, tmp_path, rows=40):
    Till(journal).pay(1, 1000, 10, printed=None)
    return write_settlement(tmp_path / "many.csv", [
        (k % 5 + 1, local(at(20 + k)), "%012d" % (500 + k), "", 100 + k, "CNY", "sale")
        for k in range(rows)])


def test_streamed_report_is_the_same_text(journal, tmp_path):
    report = reconcile(journal, _many_findings(journal, tmp_path), day=DAY)
    report.notes.append("收银台 ünïcode note")
    assert report.counts()["missing_in_journal"] == 40
    for indent in (None, 0, 1, 2, "\t"):
        assert report.to_json(indent=indent) == json.dumps(report.to_dict(), ensure_ascii=False,
                                                           indent=indent)
    for fmt in ("json", "csv", "table"):
        buf = io.StringIO()
        report.write(buf, fmt)
        assert buf.getvalue().rstrip("\n") == report.format(fmt).rstrip("\n")
    # the discrepancies read like a list (bulk findings are made as they are read)
    listed = list(report.discrepancies)
    assert len(report.discrepancies) == 42 and report.discrepancies == listed
    assert report.discrepancies[-1] == listed[-1] and report.discrepancies[1:3] == listed[1:3]
    assert [d.host_rows for d in report.by_category("missing_in_journal")][:3] == [(2,), (7,), (12,)]
    assert listed[1].detail == "settled by the acquirer, no such payment in the journal"
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert len(rows) == 42 and rows[-1]["category"] == "transaction_without_receipt"
    assert rows[1]["host_rows"] == "2" and rows[1]["amount"] == "" and rows[1]["host_amount"] == "100"
    empty = reconcile(journal, write_settlement(tmp_path / "none.csv", []), day=DAY,
                      check_receipts=False, settled_methods=["voucher"])
    assert empty.ok and json.loads(empty.to_json())["discrepancies"] == []
    assert empty.to_json() == json.dumps(empty.to_dict(), ensure_ascii=False, indent=1)


def test_summary_mode_counts_and_totals(journal, tmp_path, capsys):
    path = _many_findings(journal, tmp_path)
    full = reconcile(journal, path, day=DAY)
    brief = reconcile(journal, path, day=DAY, summary=True)
    assert brief.summary_only and brief.discrepancies == [] and not brief.ok
    assert brief.counts() == full.counts()
    assert brief.category_totals() == full.category_totals()
    totals = brief.category_totals()
    assert totals["missing_in_journal"] == {"count": 40, "amount": {156: sum(range(100, 140))}}
    assert totals["transaction_without_receipt"] == {"count": 1, "amount": {156: 1000}}
    assert totals["duplicate"] == {"count": 0, "amount": {}}
    doc = json.loads(brief.to_json())
    assert doc["totals"]["missing_in_journal"] == {"count": 40, "amount": {"156": 4780}}
    assert doc["discrepancies"] == [] and doc["counts"]["missing_in_journal"] == 40
    assert list(csv.reader(io.StringIO(brief.to_csv())))[1:3] == [
        ["missing_at_host", "1", "156", "1000"], ["missing_in_journal", "40", "156", "4780"]]
    # the CLI: one line per category, none per discrepancy; exit 1 as for the full report
    assert main(["reconcile", journal.path, "--day", DAY, "--host", path, "--summary"]) == 1
    out = capsys.readouterr().out
    assert "42 discrepancies" in out and "47.80" in out and out.count("\n") < 10
    assert "missing_in_journal" in out and "%012d" % 500 not in out
    assert main(["reconcile", journal.path, "--day", DAY, "--host", path, "--summary",
                 "--format", "json"]) == 1
    assert json.loads(capsys.readouterr().out)["totals"]["missing_in_journal"]["count"] == 40
    clean = reconcile(journal, write_settlement(tmp_path / "none.csv", []), day=DAY,
                      check_receipts=False, settled_methods=["voucher"], summary=True)
    assert clean.ok and "no discrepancies" in clean.to_table()
