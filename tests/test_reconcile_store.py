"""A whole store at head office: two tills synced to one back office, registered with
their TIDs, against one WeChat Pay bill of the merchant account (which also lists another
store's till); the registry in SQLite and PostgreSQL alike; close_day(catch_up=True)."""
import json

import pytest

from posfast import DayRule, Journal
from posfast.cli import main
from posfast.errors import DayClosed, PosfastError
from posfast.reconcile import reconcile, reconcile_store
from posfast.sync import SqliteTarget, SyncConfigError, Syncer

RULE = DayRule(utc_offset="+08:00")
DAY = "2026-11-20"
START = RULE.day_start_us(DAY)
HEADER = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,"
          "付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,"
          "退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注")

#: (till, seconds into the day, amount, order ref, host ref)
SALES = [("A", 36_000, 1250, "A-0001", "4200001234202611200000000001"),
         ("A", 37_000, 800, "A-0002", "4200001234202611200000000002"),
         ("B", 38_000, 3000, "B-0001", "4200001234202611200000000003"),
         ("B", 39_000, 990, "B-0002", "4200001234202611200000000004")]


def _bill(rows):
    """A WeChat ALL bill of `rows` (device, time text, amount text, order, host, fee text)."""
    lines = [HEADER]
    for device, when, amount, order, host, fee in rows:
        cells = [when, "wx2421b1c4370ec43b", "1900000109", "0", device, host, order, "oUpF8u",
                 "MICROPAY", "SUCCESS", "CMB_DEBIT", "CNY", amount, "0.00", "0", "0", "0.00",
                 "0.00", "", "", "goods", "", fee, "0.60%", amount, "0.00", ""]
        lines.append(",".join("`" + c for c in cells))
    total = sum(int(r[2].replace(".", "")) for r in rows)
    fees = sum(int(r[5].replace(".", "")) for r in rows)
    lines.append("总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额")
    lines.append(",".join("`" + c for c in (str(len(rows)), "%d.%02d" % divmod(total, 100), "0.00",
                                            "0.00", "%d.%05d" % divmod(fees, 100_000),
                                            "%d.%02d" % divmod(total, 100), "0.00")))
    return "\n".join(lines) + "\n"


def _time(offset):
    import datetime as dt
    return (dt.datetime(2026, 11, 20) + dt.timedelta(seconds=offset)).strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture
def store(tmp_path):
    """Two tills' journals synced to a SQLite back office and registered (TIDs T0000001/2),
    and a bill listing every sale of both tills plus one of another store (TID T0000009)."""
    back = SqliteTarget(tmp_path / "back.db", create=True)
    journals = {}
    for till, tid in (("A", "T0000001"), ("B", "T0000002")):
        j = Journal.create(tmp_path / ("till-%s.pfj" % till), capacity=1024, day_rule=RULE)
        for t, offset, amount, order, host in SALES:
            if t == till:
                j.append(terminal=1, kind="sale", state="approved", amount=amount, currency=156,
                         method="qr", channel="wechat", order_ref=order, host_ref=host,
                         ts=START + offset * 1_000_000)
        Syncer(j, back).run_once()
        back.register(j.journal_id, merchant_id="1900000109", store="SH-01", till="till " + till,
                      tid=tid, device_serial="SN-%s" % till)
        journals[till] = j
    other = Journal.create(tmp_path / "other.pfj", capacity=64, day_rule=RULE)
    back.register(other.journal_id, merchant_id="1900000109", store="BJ-02", till="till X",
                  tid="T0000009")
    rows = [("T000000%d" % (1 if t == "A" else 2), _time(offset + 3), "%d.%02d" % divmod(amount, 100),
             order, host, "%d.%05d" % divmod(amount * 6, 100_000)) for t, offset, amount, order, host
            in SALES]
    rows.append(("T0000009", _time(40_000), "5.00", "X-0001", "4200001234202611200000000099",
                 "0.03000"))
    bill = tmp_path / "wechat_20261120.csv"
    bill.write_text(_bill(rows), encoding="utf-8")
    back.bill_rows = rows
    yield back, journals, bill, tmp_path
    for j in list(journals.values()) + [other]:
        j.close()
    back.close()


def test_store_has_no_cross_till_noise(store):
    back, journals, bill, tmp_path = store
    # per journal: each till's reconcile calls the other till's sales missing_in_journal
    alone = reconcile(journals["A"], str(bill), day=DAY, check_receipts=False)
    assert alone.counts()["missing_in_journal"] == 3
    report = reconcile_store("sqlite:///" + str(tmp_path / "back.db"), str(bill), day=DAY,
                             store="SH-01")
    assert report.ok, report.to_table()
    assert (report.matched, report.journal_payments, report.host_payments) == (4, 4, 4)
    assert report.tills == {str(journals["A"].journal_id): "till A",
                            str(journals["B"].journal_id): "till B"}
    assert "1 row(s) of other stores' terminals left out" in report.notes
    assert report.totals[156]["gross"] == 1250 + 800 + 3000 + 990     # this store's rows only


def test_store_findings_name_their_till(store):
    back, journals, bill, tmp_path = store
    # the bill without till B's second sale
    bill.write_text(_bill([r for r in back.bill_rows if r[3] != "B-0002"]), encoding="utf-8")
    report = reconcile_store(back, str(bill), day=DAY, store="SH-01")
    found = [(d.category, d.till, d.order_ref, d.journal_seqs) for d in report.discrepancies]
    assert found == [("missing_at_host", "till B", "B-0002", (2,))]


def test_register_refuses_ambiguous_tid(store):
    back, journals, _bill_path, _ = store
    with pytest.raises(SyncConfigError, match="TID 'T0000001' of merchant '1900000109' is registered"):
        back.register("6f1c2a70-0000-4000-8000-000000000001", merchant_id="1900000109",
                      tid="T0000001")
    with pytest.raises(SyncConfigError, match="longer than 8"):
        back.register(journals["A"].journal_id, tid="T00000001")
    again = back.register(journals["A"].journal_id, till="till A1")      # other fields kept
    assert (again.store, again.tid, again.till) == ("SH-01", "T0000001", "till A1")
    with pytest.raises(PosfastError, match="no journal is registered to store 'nowhere'"):
        reconcile_store(back, "unused.csv", day=DAY, store="nowhere")


def test_cli_register_and_store(store, capsys):
    back, journals, bill, tmp_path = store
    url = "sqlite:///" + str(tmp_path / "back.db")
    assert main(["register", "--db", url, str(journals["A"].path), "--serial", "SN-A2",
                 "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["till"], r["device_serial"]) for r in listed if r["store"] == "SH-01"] == [
        ("till A", "SN-A2"), ("till B", "SN-B")]
    code = main(["reconcile", "--db", url, "--store", "SH-01", "--settlement", str(bill),
                 "--day", DAY, "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["store"] == "SH-01" and doc["matched"] == 4
    assert main(["reconcile", "--db", url, "--store", "SH-01", "--day", DAY]) == 2


def test_store_on_postgres(store):
    pytest.importorskip("psycopg", reason="needs psycopg 3 (pip install 'psycopg[binary]')")
    import _pg
    server = _pg.base_dsn()
    if server is None:
        pytest.skip(_pg.SKIP_REASON)
    from posfast.sync import PostgresTarget
    _, journals, bill, _ = store
    dsn = _pg.fresh_database(server)
    pg = PostgresTarget(dsn)
    try:
        for till, tid in (("A", "T0000001"), ("B", "T0000002")):
            pg.push(journals[till].read_range(1, journals[till].head_seq))    # synced to SQLite already
            pg.register(journals[till].journal_id, merchant_id="1900000109", store="SH-01",
                        till="till " + till, tid=tid)
        assert [r.till for r in pg.registrations(store="SH-01")] == ["till A", "till B"]
    finally:
        pg.close()
    report = reconcile_store(dsn, str(bill), day=DAY, store="SH-01")
    assert report.matched == 4 and report.counts()["missing_at_host"] == 0
    assert "terminal id(s) T0000009 are registered to no journal" in " ".join(report.notes)
    assert report.counts()["missing_in_journal"] == 1          # BJ-02's till is unknown here


def test_close_day_catch_up(tmp_path):
    j = Journal.create(tmp_path / "t.pfj", capacity=1024, day_rule=RULE)
    for day, amount in (("2026-11-17", 100), ("2026-11-18", 200), ("2026-11-20", 400)):
        j.append(terminal=1, kind="sale", state="approved", amount=amount, currency=156,
                 method="card", ts=RULE.day_start_us(day) + 3_600_000_000)
    j.close_day("2026-11-17")
    z = j.close_day("2026-11-20", catch_up=True)
    closes = [(c.day.isoformat(), c.z_no, c.grand[156]) for c in j.day_closes()]
    assert closes == [("2026-11-17", 1, (100, 100)), ("2026-11-18", 2, (300, 300)),
                      ("2026-11-20", 3, (700, 700))]
    assert z.z_no == 3
    # without catch_up the skipped day is refused once a later one is closed, as before
    j.append(terminal=1, kind="sale", state="approved", amount=50, currency=156, method="card",
             ts=RULE.day_start_us("2026-11-19") + 3_600_000_000)
    with pytest.raises(DayClosed, match="cannot be closed after day"):
        j.close_day("2026-11-19")
    j.close()
    k = Journal.create(tmp_path / "k.pfj", capacity=1024, day_rule=RULE)
    for day in ("2026-11-17", "2026-11-18"):
        k.append(terminal=1, kind="sale", state="approved", amount=100, currency=156,
                 method="card", ts=RULE.day_start_us(day) + 3_600_000_000)
    k.close()
    assert main(["close-day", str(tmp_path / "k.pfj"), "--day", "2026-11-18", "--catch-up",
                 "--format", "json"]) == 0
    with Journal.open(tmp_path / "k.pfj", readonly=True) as k:
        assert [c.day.isoformat() for c in k.day_closes()] == ["2026-11-17", "2026-11-18"]


def test_store_with_terminal_numbers(store):
    """posfast's CSV names terminals by number: registered TIDs of digits match them."""
    back, journals, _bill, tmp_path = store
    back.register(journals["A"].journal_id, tid="00000011")
    back.register(journals["B"].journal_id, tid="00000012")
    lines = ["terminal,time,rrn,auth_code,amount,currency,type,host_ref"]
    for till, offset, amount, _order, host in SALES:
        if host.endswith("4"):
            continue                                        # till B's second sale not settled
        lines.append("%d,%s,,,%d,CNY,sale,%s" % (11 if till == "A" else 12, _time(offset),
                                                  amount, host))
    lines.append("19,%s,,,700,CNY,sale," % _time(41_000))  # a terminal no one registered
    path = tmp_path / "acquirer.csv"
    path.write_text("\n".join(lines) + "\n")
    report = reconcile_store(back, str(path), day=DAY, store="SH-01")
    found = sorted((d.category, d.till or "-", d.host_rows) for d in report.discrepancies)
    assert found == [("missing_at_host", "till B", ()), ("missing_in_journal", "-", (5,))]
    assert report.matched == 3
    assert "terminal id(s) 19 are registered to no journal" in " ".join(report.notes)


def test_the_result_is_kept_for_the_fleet(store, capsys):
    back, journals, bill, tmp_path = store
    url = "sqlite:///" + str(tmp_path / "back.db")
    assert reconcile_store(url, str(bill), day=DAY, store="SH-01").ok     # opened read-only, kept anyway
    bill.write_text(_bill([r for r in back.bill_rows if r[3] != "B-0002"]), encoding="utf-8")
    assert main(["reconcile", "--db", url, "--store", "SH-01", "--settlement", str(bill), "--day", DAY]) == 1
    capsys.readouterr()
    kept = back.reconciliations(store="SH-01")
    assert [(r["till"], r["ok"], r["discrepancies"], r["counts"], r["store_ok"]) for r in kept] == [
        ("till B", False, 1, {"missing_at_host": 1}, False), ("till A", True, 0, {}, False),
        ("till B", True, 0, {}, True), ("till A", True, 0, {}, True)]
    code = main(["fleet", "--db", url, "--format", "json"])
    rows = {r["till"]: r for r in json.loads(capsys.readouterr().out)}
    assert code == 3                                   # some till needs attention
    assert rows["till B"]["last_reconciliation"]["ok"] is False
    assert rows["till B"]["last_reconciliation"]["discrepancies"] == 1
    assert "reconciliation_failed" in rows["till B"]["attention"]
    assert rows["till A"]["last_reconciliation"] == {"day": DAY, "at": rows["till A"]["last_reconciliation"]["at"],
                                                     "ok": True, "discrepancies": 0, "store_ok": False,
                                                     "store_discrepancies": 1}
    assert rows["till X"]["attention"] == ["never_seen"]
    assert main(["fleet", "--db", url, "--store", "SH-01"]) == 3
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["status", "store", "till"]
    assert table[2].split()[:4] == ["warning", "SH-01", "till", "B"] and "2026-11-20 1 discrepancies" in table[2]
    assert table[3].split()[:4] == ["warning", "SH-01", "till", "A"] and "2026-11-20 ok" in table[3]
    assert main(["fleet", "--db", url, "--format", "csv", "--store", "BJ-02"]) == 3
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("store,till,tid,journal_id,severity,attention") and len(lines) == 2
