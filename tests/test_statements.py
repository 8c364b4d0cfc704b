"""The statements merchants really receive (tests/data/settlement/): each golden sample is
read in its own format, detected from its header or preamble, reconciled against one
store's journal, and the report compared with the expected one beside it
(``<sample>.expected.json``; POSFAST_WRITE_GOLDEN=1 rewrites them for review).  Malformed
statements are refused naming file, line, column and value."""
import json
import os
import pathlib
import shutil
import zipfile

import pytest

from posfast import DayRule, Journal
from posfast.cli import main
from posfast.reconcile import SettlementError, read_settlement, reconcile
from posfast.reconcile.amounts import decimal_units, parse_rate

DATA = pathlib.Path(__file__).parent / "data" / "settlement"
RULE = DayRule(utc_offset="+08:00")
DAY = "2026-11-20"

#: (seconds after 2026-11-20 00:00 +08:00, kind, amount, currency, method, channel, order, host)
PAYMENTS = [
    (-120, "sale", 990, 156, "qr", "wechat", "ORD-0000", "4200001234202611190000000000"),
    (36_000, "sale", 1250, 156, "qr", "wechat", "ORD-0001", "4200001234202611201111111111"),
    (39_600, "sale", 800, 156, "qr", "wechat", "ORD-0002", "4200001234202611202222222222"),
    (43_200, "refund", 500, 156, "qr", "wechat", "REF-0001", "50300001234202611203333333333"),
    (46_800, "sale", 3000, 156, "qr", "alipay", "ORD-0003", "2026112022001400001234567890"),
    (50_400, "sale", 1500, 156, "qr", "alipay", "ORD-0004", "2026112022001400001234567891"),
    (52_000, "sale", 2000, 156, "cash", "", "", ""),
    (54_000, "sale", 10000, 156, "card", "unionpay", "UP-0001", "112026112010000012345"),
    (57_600, "sale", 2500, 978, "card", "adyen", "ADY-0001", "8816178952380553"),
    (61_200, "sale", 4000, 840, "card", "stripe", "STR-0001", "pi_3Ox1234567890abcdEFGH"),
    (64_800, "sale", 6660, 156, "card", "chinaums", "", ""),
]
START = RULE.day_start_us(DAY)


@pytest.fixture
def store_journal(tmp_path):
    j = Journal.create(tmp_path / "till-a.pfj", capacity=1024, day_rule=RULE)
    for offset, kind, amount, currency, method, channel, order, host in PAYMENTS:
        fields = dict(terminal=1, kind=kind, state="approved", amount=amount, currency=currency,
                      method=method, ts=START + offset * 1_000_000)
        if channel:
            fields.update(channel=channel, order_ref=order or None, host_ref=host or None)
        if channel == "chinaums":
            fields.update(rrn="112233445566", auth_code="A1B2C3")
        j.append(**fields)
    yield j
    j.close()


SAMPLES = {  # sample -> (format, reconcile options)
    "wechat_all_20261120.csv": ("wechat", {"fee_rates": {"wechat": "0.60%"}}),
    "alipay_trade_20261120.csv": ("alipay", {"fee_rates": {"alipay": "0.60%"}}),
    "INN26112001ZM_777290058110097": ("unionpay", {"fee_rates": {"unionpay": "0.60%"}}),
    "chinaums_20261120.csv": ("mapped", {"column_map": DATA / "chinaums.toml",
                                         "fee_rates": {"card": "0.60%"}}),
    "adyen_settlement_detail_report_batch_7.csv": ("adyen", {}),
    "stripe_itemized_payout_reconciliation.csv": ("stripe", {}),
    "posfast_20261120.csv": ("posfast", {}),
}


def _view(report):
    doc = report.to_dict()
    for volatile in ("journal", "journal_id"):
        doc.pop(volatile)
    return doc


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_golden_statement(store_journal, sample):
    fmt, options = SAMPLES[sample]
    path = DATA / sample
    if fmt != "mapped":
        assert read_settlement(path, utc_offset=RULE).format == fmt          # detected
    report = reconcile(store_journal, str(path), day=DAY, format=fmt, check_receipts=False,
                       **options)
    expected_path = DATA / (sample + ".expected.json")
    got = json.loads(json.dumps(_view(report), ensure_ascii=False))
    if os.environ.get("POSFAST_WRITE_GOLDEN"):
        expected_path.write_text(json.dumps(got, ensure_ascii=False, indent=1) + "\n")
    assert got == json.loads(expected_path.read_text())


def test_wechat_bill_values(store_journal):
    """What a user checks on the WeChat bill: only WeChat payments are expected, fees are
    exact to the bill's five decimals, the D-1 payment the bill lists is settled_other_day."""
    s = read_settlement(DATA / "wechat_all_20261120.csv", utc_offset=RULE)
    assert s.channel == "wechat" and s.has_fees
    assert s.rows["amount"].tolist() == [990, 1250, 500, 700]
    assert s.rows["fee"].tolist() == [5_940, 10_000, -3_000, 4_200]      # 0.05940 yuan = 5.94 fen
    assert s.host_ref[2] == b"50300001234202611203333333333"                # the refund's own id
    report = reconcile(store_journal, s, day=DAY, check_receipts=False,
                       fee_rates={"wechat": "0.60%"})
    by = {c: [(d.order_ref, d.host_rows) for d in report.by_category(c)]
          for c, n in report.counts().items() if n}
    assert by == {"missing_at_host": [("ORD-0002", ())],
                  "missing_in_journal": [("ORD-9999", (5,))],
                  "fee_mismatch": [("ORD-0001", (3,))],
                  "settled_other_day": [("ORD-0000", (2,))]}
    # alipay, cash, card payments of the same journal are not reported as missing_at_host
    assert report.journal_payments == 3
    assert report.totals[156] == {"rows": 4, "gross": 990 + 1250 - 500 + 700, "fee_milli": 17_140,
                                  "net_milli": 2_440_000 - 17_140}
    # channel=any expects every non-cash payment of the journal
    wide = reconcile(store_journal, s, day=DAY, check_receipts=False, channel="any")
    assert wide.counts()["missing_at_host"] == 7


def test_alipay_zip_and_gbk(store_journal, tmp_path):
    """Alipay sends a zip of the 业务明细 bill and its 汇总 (GBK file names)."""
    raw = (DATA / "alipay_trade_20261120.csv").read_bytes()
    zipped = tmp_path / "20881234567890120156_20261120.csv.zip"

    class GbkName(zipfile.ZipInfo):        # names in GBK, no UTF-8 flag: as Alipay writes them
        def _encodeFilenameFlags(self):
            return self.filename.encode("gbk"), self.flag_bits

    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr(GbkName("20881234567890120156_20261120_业务明细.csv"), raw)
        z.writestr(GbkName("20881234567890120156_20261120_业务明细(汇总).csv"), "#汇总\n".encode("gbk"))
    s = read_settlement(zipped, utc_offset=RULE)
    assert (s.format, len(s), s.rows["amount"].tolist()) == ("alipay", 3, [3000, 3000, 300])
    assert s.rows["fee"].tolist() == [18_000, 18_000, -2_000]
    report = reconcile(store_journal, s, day=DAY, check_receipts=False)
    assert report.counts()["duplicate"] == 1
    assert [d.host_rows for d in report.by_category("duplicate")] == [(6, 7)]
    truncated = tmp_path / "cut.zip"
    truncated.write_bytes(zipped.read_bytes()[:60])
    with pytest.raises(SettlementError, match="damaged or truncated zip"):
        read_settlement(truncated)


def test_unionpay_and_adyen_and_stripe_fields(store_journal):
    up = read_settlement(DATA / "INN26112001ZM_777290058110097", utc_offset=RULE)
    assert up.rows["amount"].tolist() == [10000, 4500]
    assert up.rows["fee"].tolist() == [60_000, 27_000]
    assert up.host_ref.tolist() == [b"112026112010000012345", b"112026112010000099999"]
    assert int(up.rows["ts"][0]) == START + (15 * 3600 + 4) * 1_000_000
    ad = read_settlement(DATA / "adyen_settlement_detail_report_batch_7.csv")
    assert ad.batches == ("7",) and ad.rows["fee"].tolist() == [25_000, 0]
    assert any("MerchantPayout" in n for n in ad.notes)
    # Adyen's CET: 09:00:07 CET is 08:00:07 UTC
    assert int(ad.rows["ts"][0]) % 86_400_000_000 == (8 * 3600 + 7) * 1_000_000
    st = read_settlement(DATA / "stripe_itemized_payout_reconciliation.csv")
    assert st.rows["amount"].tolist() == [4000, 1000] and st.rows["currency"].tolist() == [840, 840]
    assert st.order_ref.tolist() == [b"STR-0001", b"STR-0001"]
    report = reconcile(store_journal, st, day=DAY, check_receipts=False)
    assert report.batch_totals == {"po_1Ox9ZZ2eZvKYlo2Cpayout1": {840: {
        "rows": 2, "gross": 3000, "fee_milli": 146_000, "net_milli": 3_000_000 - 146_000}}}


def test_mapped_xlsx(store_journal, tmp_path):
    openpyxl = pytest.importorskip("openpyxl", reason="XLSX statements need openpyxl "
                                   "(pip install 'posfast[xlsx]')")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["银联商务 商户交易明细"])
    sheet.append(["交易日期", "交易时间", "终端号", "参考号", "授权码", "交易类型", "交易金额", "手续费",
                  "批次号", "凭证号"])
    sheet.append(["20261120", "180001", "00000001", "112233445566", "A1B2C3", "消费", 66.6, 0.4,
                  "000012", "000101"])
    path = tmp_path / "chinaums.xlsx"
    book.save(path)
    s = read_settlement(path, format="mapped", column_map=DATA / "chinaums.toml", utc_offset=RULE)
    assert s.rows["amount"].tolist() == [6660] and s.rows["fee"].tolist() == [40_000]
    report = reconcile(store_journal, s, day=DAY, check_receipts=False)
    assert report.matched == 1 and report.counts()["missing_at_host"] == 0


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("`12.50,`0.00,`0", "`12.505,`0.00,`0", 1),
     "line 3, column 应结订单金额: '12.505' has 3 decimals"),
    (lambda t: t.replace("`4,`29.40", "`5,`29.40"), "the summary says 总交易单数"),
    (lambda t: t.replace("`0.17140", "`0.17141"), "the summary says 手续费总金额"),
    (lambda t: t.split("总交易单数")[0], "has no summary"),
    (lambda t: t.replace("`REFUND,", "`CLOSED,"), "line 4, column 交易状态: 'CLOSED'"),
])
def test_wechat_refusals(tmp_path, edit, message):
    bad = tmp_path / "bill.csv"
    bad.write_text(edit((DATA / "wechat_all_20261120.csv").read_text(encoding="utf-8")),
                   encoding="utf-8")
    with pytest.raises(SettlementError, match=message) as err:
        read_settlement(bad, format="wechat")
    assert str(bad) in str(err.value)


def test_more_refusals(tmp_path):
    text = (DATA / "alipay_trade_20261120.csv").read_bytes().decode("gbk")
    bad = tmp_path / "alipay.csv"
    bad.write_bytes(text.replace("交易合计：2笔", "交易合计：3笔").encode("gbk"))
    with pytest.raises(SettlementError, match="交易合计 .rows."):
        read_settlement(bad)
    bad.write_bytes(text.split("#-----------------------------------------业务明细列表结束")[0]
                    .encode("gbk"))
    with pytest.raises(SettlementError, match="truncated"):
        read_settlement(bad)
    bad.write_bytes(text.encode("utf-8"))
    with pytest.raises(SettlementError, match="not gbk"):
        read_settlement(bad, format="alipay", encoding="gbk")
    umz = tmp_path / "chinaums.csv"
    umz.write_bytes((DATA / "chinaums_20261120.csv").read_bytes().replace(b"66.60", b"66.605"))
    with pytest.raises(SettlementError, match="line 4, column 交易金额: '66.605' has 3 decimals"):
        read_settlement(umz, column_map=DATA / "chinaums.toml")
    other = tmp_path / "odd.csv"
    other.write_text("Datum,Betrag\n2026-11-20,1\n")
    with pytest.raises(SettlementError, match="not one posfast recognises"):
        read_settlement(other)
    stripe = tmp_path / "stripe.csv"
    stripe.write_text((DATA / "stripe_itemized_payout_reconciliation.csv").read_text()
                      .replace("usd,40.00", "usd,40.001"))
    with pytest.raises(SettlementError, match="line 2, column gross: '40.001' has 3 decimals"):
        read_settlement(stripe)


def test_decimal_units_exact():
    values = ["0.01", "12.5", "-3", "+7.00", "90071992547409.93"]
    assert decimal_units(values, 2, "f", range(5), "a").tolist() == [
        1, 1250, -300, 700, 9007199254740993]
    assert decimal_units(["5"], 0, "f", [1], "a").tolist() == [5]
    assert decimal_units(["", "1.5"], 3, "f", [1, 2], "a", blank=0).tolist() == [0, 1500]
    for bad in ("1.2.3", "1,50", "abc", "1e5", "--1", "."):
        with pytest.raises(SettlementError, match="not a decimal amount"):
            decimal_units([bad], 2, "f", [9], "a")
    assert (parse_rate("0.38%"), parse_rate(0.006)) == (3800, 6000)
    # never through float: a value float would round
    assert decimal_units(["0.29"], 2, "f", [1], "a").tolist() == [29] and int(0.29 * 100) == 28


def test_unionpay_file_date(store_journal, tmp_path, capsys):
    renamed = tmp_path / "settle.txt"
    shutil.copy(DATA / "INN26112001ZM_777290058110097", renamed)
    with pytest.raises(SettlementError, match="times have no year"):
        read_settlement(renamed, format="unionpay")
    s = read_settlement(renamed, format="unionpay", file_date="2026-11-20", utc_offset=RULE)
    assert int(s.rows["ts"][0]) == START + (15 * 3600 + 4) * 1_000_000
    path = str(store_journal.path)
    store_journal.close()
    assert main(["reconcile", path, "--day", DAY, "--host", str(renamed), "--format", "unionpay",
                 "--file-date", "2026-11-20", "--no-receipts", "--report", "json"]) == 1
    assert json.loads(capsys.readouterr().out)["matched"] == 1


def test_cli_format(store_journal, tmp_path, capsys):
    path = str(store_journal.path)
    store_journal.close()
    code = main(["reconcile", path, "--day", DAY, "--host", str(DATA / "wechat_all_20261120.csv"),
                 "--format", "wechat", "--format", "json", "--no-receipts"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["statement"]["format"] == "wechat"
    assert doc["counts"]["missing_at_host"] == 1
    code = main(["reconcile", path, "--day", DAY, "--host", str(DATA / "chinaums_20261120.csv"),
                 "--format", "mapped", "--map", str(DATA / "chinaums.toml"), "--report", "csv",
                 "--no-receipts"])
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("category,terminal")
    assert "missing_in_journal" in out


@pytest.mark.parametrize("block", [1, 2, 3, 1 << 16])
def test_blocks_read_alike(monkeypatch, tmp_path, block):
    """Whatever the block size (a summary or a quoted cell in any block), a bill reads the
    same: blocks without quotes are split on commas at once, the others by the csv module."""
    import posfast.reconcile.formats as formats
    text = (DATA / "wechat_all_20261120.csv").read_text(encoding="utf-8")
    quoted = text.replace("`咖啡", '"`咖啡, ""double""\n shot"')      # a comma, a quote, a break
    expected = read_settlement(DATA / "wechat_all_20261120.csv")
    monkeypatch.setattr(formats, "_BLOCK_ROWS", block)
    for body in (text, quoted):
        path = tmp_path / "bill.csv"
        path.write_text(body, encoding="utf-8")
        got = read_settlement(path)
        assert got.rows[["amount", "fee", "kind", "ts"]].tolist() == \
            expected.rows[["amount", "fee", "kind", "ts"]].tolist()
        assert got.host_ref.tolist() == expected.host_ref.tolist()
        assert got.rows["line"].tolist() == ([2, 4, 5, 6] if body is quoted else [2, 3, 4, 5])
