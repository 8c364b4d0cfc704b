"""Receipt data model, payload encoding, amount formatting, display width and text rendering."""
import datetime as dt
import doctest
import json
import unicodedata

import pytest
from hypothesis import given, settings, strategies as st

import posfast.receipt
from posfast.errors import InvalidRecord, PosfastError
from posfast.receipt import (InvalidReceipt, Payment, Receipt, ReceiptItem, char_width, currency_alpha,
                             currency_exponent, display_width, format_amount, render_text, wrap_text)


def restaurant_receipt(**overrides):
    fields = dict(
        merchant="老北京饭庄",
        header=["北京市朝阳区建国路88号", "电话 010-12345678"],
        merchant_id="898110058120001",
        terminal=3, receipt_no=123, operator=7,
        issued_at="2026-11-20T13:45:12+08:00",
        currency=156,
        items=[ReceiptItem("北京烤鸭", unit_price=16800),
               ReceiptItem("Coca-Cola Zero 330ml", qty=3, unit_price=500),
               ReceiptItem("鲜猪肉", qty=535, qty_exp=3, unit="kg", unit_price=2680)],
        adjustments=[("会员折扣", -1000)],
        total=16800 + 1500 + 1434 - 1000,
        payments=[Payment("card", 10000, pan_last4="6789", auth_code="A1B2C3", rrn="123456789012"),
                  Payment("cash", 10000)],
        change=20000 - (16800 + 1500 + 1434 - 1000),
        footer=["谢谢惠顾 欢迎再次光临"],
    )
    fields.update(overrides)
    return Receipt(**fields)


# ---------------------------------------------------------------- amounts
@pytest.mark.parametrize("minor, currency, expected", [
    (123450, 156, "1,234.50"), (5, 156, "0.05"), (-5, 840, "-0.05"), (0, 978, "0.00"),
    (1250, 392, "1,250"), (1250000, 410, "1,250,000"), (1005, 414, "1.005"), (-1, 48, "-0.001"),
    (100, 344, "1.00"), (99, 826, "0.99"), (123456, 901, "1,234.56"), (10, 702, "0.10"),
    (2 ** 63 - 1, 156, "92,233,720,368,547,758.07"), (-(2 ** 63), 156, "-92,233,720,368,547,758.08"),
])
def test_format_amount_uses_the_currency_exponent(minor, currency, expected):
    assert format_amount(minor, currency) == expected


def test_iso_4217_table_has_the_common_codes():
    expected = {156: ("CNY", 2), 344: ("HKD", 2), 392: ("JPY", 0), 410: ("KRW", 0), 840: ("USD", 2),
                978: ("EUR", 2), 826: ("GBP", 2), 48: ("BHD", 3), 414: ("KWD", 3), 901: ("TWD", 2),
                702: ("SGD", 2), 458: ("MYR", 2), 764: ("THB", 2), 356: ("INR", 2)}
    for code, (alpha, exponent) in expected.items():
        assert (currency_alpha(code), currency_exponent(code)) == (alpha, exponent)


def test_amounts_are_never_floats():
    with pytest.raises(InvalidReceipt, match="minor units"):
        format_amount(12.5, 156)
    with pytest.raises(InvalidReceipt, match="minor units"):
        ReceiptItem("tea", unit_price=3.5)
    with pytest.raises(InvalidReceipt):
        ReceiptItem("tea", unit_price=True)


def test_unknown_currency_needs_an_explicit_exponent():
    with pytest.raises(InvalidReceipt, match="unknown ISO 4217 numeric currency code 999: pass exponent="):
        Receipt(merchant="M", currency=999)
    r = Receipt(merchant="M", currency=999, exponent=3, items=[ReceiptItem("x", unit_price=1234)])
    assert "TOTAL 999" in render_text(r, 32).replace("合计", "TOTAL") or "合计 999" in render_text(r, 32)
    assert "1.234" in render_text(r, 32)


def test_errors_belong_to_the_posfast_hierarchy():
    assert issubclass(InvalidReceipt, InvalidRecord)
    assert issubclass(InvalidReceipt, PosfastError)
    assert issubclass(InvalidReceipt, ValueError)


# ---------------------------------------------------------------- display width
@pytest.mark.parametrize("text, width", [
    ("abc", 3), ("中文", 4), ("ＡＢ", 4), ("Café", 4), ("Cafe\u0301", 4), ("한국어", 6),
    ("ｶﾀｶﾅ", 4),  # half-width katakana are narrow
    ("👍", 2), ("a\u200db", 2), ("❤\ufe0f", 1), ("北京 Beijing", 12), ("", 0),
])
def test_display_width(text, width):
    assert display_width(text) == width


def test_char_width_of_hangul_jamo_and_combining_marks():
    decomposed = unicodedata.normalize("NFD", "한")  # leading consonant + vowel + final consonant
    assert [char_width(c) for c in decomposed] == [2, 0, 0]
    assert display_width(decomposed) == 2


def test_wrap_never_splits_a_wide_character_across_the_edge():
    # 5 columns: "ab" + two wide chars would need 6 columns: the second wide char moves down
    assert wrap_text("ab中文", 5) == ["ab中", "文"]
    assert wrap_text("中文中文中", 5) == ["中文", "中文", "中"]
    for line in wrap_text("a中b文c字d" * 7, 7):
        assert display_width(line) <= 7


def test_wrap_prefers_spaces_and_keeps_combining_marks_with_their_base():
    assert wrap_text("Coca-Cola Zero Sugar", 10) == ["Coca-Cola", "Zero Sugar"]
    assert wrap_text("abcdefghij", 4) == ["abcd", "efgh", "ij"]
    lines = wrap_text("e\u0301" * 6, 3)
    assert lines == ["e\u0301" * 3, "e\u0301" * 3]


# ---------------------------------------------------------------- data model
def test_item_amount_defaults_to_qty_times_price_rounded_half_away_from_zero():
    assert ReceiptItem("x", qty=3, unit_price=350).amount == 1050
    assert ReceiptItem("x", qty=535, qty_exp=3, unit_price=2680).amount == 1434  # 14.338 -> 14.34
    assert ReceiptItem("x", qty=5, qty_exp=1, unit_price=1).amount == 1          # 0.5 -> 1
    assert ReceiptItem("x", qty=-5, qty_exp=1, unit_price=1).amount == -1
    assert ReceiptItem("x", qty=2, unit_price=500, amount=900).amount == 900     # discounted line


def test_total_must_add_up():
    with pytest.raises(InvalidReceipt, match=r"total 999 does not add up: items 1000 \+ adjustments 0 = 1000"):
        Receipt(merchant="M", items=[ReceiptItem("x", unit_price=1000)], total=999)
    with pytest.raises(InvalidReceipt, match="payments 500 less change 0 = 500 does not match the total 1000"):
        Receipt(merchant="M", items=[ReceiptItem("x", unit_price=1000)], payments=[Payment("cash", 500)])
    assert Receipt(merchant="M", items=[ReceiptItem("x", unit_price=1000)]).total == 1000


def test_a_whole_card_number_is_refused():
    with pytest.raises(InvalidReceipt, match="never store a whole card number"):
        Payment("card", 100, pan_last4="4111111111111111")


def test_kind_and_method_accept_names_and_numbers():
    import posfast
    r = Receipt(merchant="M", kind=posfast.Kind.REFUND, payments=[Payment(posfast.Method.QR, 0)])
    assert (r.kind, r.payments[0].method) == ("refund", "qr")
    with pytest.raises(InvalidReceipt, match="receipt kind must be one of"):
        Receipt(merchant="M", kind="print")


def test_issued_at_accepts_datetime_and_iso_text():
    tz = dt.timezone(dt.timedelta(hours=8))
    r = Receipt(merchant="M", issued_at=dt.datetime(2026, 11, 20, 13, 45, 12, tzinfo=tz))
    assert r.issued_at == "2026-11-20T13:45:12+08:00"
    with pytest.raises(InvalidReceipt, match="ISO 8601"):
        Receipt(merchant="M", issued_at="20/11/2026")


# ---------------------------------------------------------------- payload
def test_payload_is_compact_sorted_utf8_json_and_round_trips_exactly():
    r = restaurant_receipt()
    payload = r.to_payload()
    text = payload.decode("utf-8")
    assert "北京烤鸭" in text                     # UTF-8, not \\u escapes
    assert ": " not in text and ", " not in text.replace("Coca-Cola Zero 330ml", "")
    assert json.dumps(json.loads(text), ensure_ascii=False, sort_keys=True, separators=(",", ":")) == text
    back = Receipt.from_payload(payload)
    assert back == r
    assert back.to_payload() == payload
    assert len(payload) < 700


def test_payload_size_of_a_40_line_receipt_fits_the_default_max_payload():
    items = [ReceiptItem(f"菜品{i} 特价套餐", qty=1 + i % 3, unit_price=1000 + 37 * i) for i in range(40)]
    r = Receipt(merchant="老北京饭庄", items=items, receipt_no=1)
    assert len(r.to_payload()) < 4096
    assert Receipt.from_payload(r.to_payload()) == r


@pytest.mark.parametrize("payload, message", [
    (b"", "payload is empty"),
    (b"\xff\xfe", "not UTF-8 JSON"),
    (b'{"copy":1}', "not a posfast receipt"),
    (b'{"v":2,"m":"M","tot":0}', "version 2"),
    (b'{"v":1,"m":"M","tot":1.5}', "non-integer amount 1.5"),
    (b'{"v":1,"m":"M","tot":0,"zz":1}', "unknown keys"),
    (b'{"v":1,"m":"M","tot":0,"it":[{"n":"x"}]}', "malformed"),
])
def test_bad_payloads_raise_clear_errors(payload, message):
    with pytest.raises(InvalidReceipt, match=message):
        Receipt.from_payload(payload)


# ---------------------------------------------------------------- text rendering
GOLDEN_32 = """\
           老北京饭庄
     北京市朝阳区建国路88号
       电话 010-12345678
================================
消费
商户号           898110058120001
终端号                         3
票据号                  3-000123
操作员                         7
日期         2026-11-20 13:45:12
--------------------------------
北京烤鸭                  168.00
Coca-Cola Zero 330ml
  3 x 5.00                 15.00
鲜猪肉
  0.535kg x 26.80          14.34
--------------------------------
小计                      197.34
会员折扣                  -10.00
合计 CNY                  187.34
--------------------------------
银行卡 **** 6789          100.00
  授权码                  A1B2C3
  参考号            123456789012
现金                      100.00
找零                       12.66
--------------------------------
     谢谢惠顾 欢迎再次光临
"""


def test_render_text_golden_58mm():
    assert render_text(restaurant_receipt(), width=32) == GOLDEN_32


@pytest.mark.parametrize("width", [32, 42, 48])
def test_prices_are_right_aligned_to_the_paper_edge(width):
    lines = render_text(restaurant_receipt(), width=width).splitlines()
    assert all(display_width(line) <= width for line in lines)
    for label, amount in [("北京烤鸭", "168.00"), ("合计 CNY", "187.34"), ("找零", "12.66")]:
        line = next(line for line in lines if line.startswith(label))
        assert line.endswith(amount) and display_width(line) == width
    qty_line = next(line for line in lines if line.startswith("  3 x 5.00"))
    assert qty_line.endswith("15.00") and display_width(qty_line) == width


def test_english_receipt_in_a_currency_without_minor_units():
    r = Receipt(merchant="Tokyo Ramen", lang="en", currency=392, receipt_no=77,
                items=[ReceiptItem("Tonkotsu ramen", unit_price=1200), ReceiptItem("Gyoza", qty=2, unit_price=450)],
                payments=[Payment("cash", 3000)], change=900)
    lines = render_text(r, width=32).splitlines()
    assert "SALE" in lines
    assert "Tonkotsu ramen" + "1,200".rjust(32 - 14) in lines
    assert "  2 x 450" + "900".rjust(32 - 9) in lines
    assert "TOTAL JPY" + "2,100".rjust(32 - 9) in lines
    assert "Change" + "900".rjust(32 - 6) in lines


def test_copy_marker_and_reprint_time_and_otherwise_identical():
    r = restaurant_receipt()
    original = render_text(r, width=42).splitlines()
    tz = dt.timezone(dt.timedelta(hours=8))
    copy = render_text(Receipt.from_payload(r.to_payload()), width=42, copy=2,
                       reprinted_at=dt.datetime(2026, 11, 23, 10, 5, 0, tzinfo=tz)).splitlines()
    markers = [line for line in copy if "COPY" in line]
    assert [m.strip() for m in markers] == ["重印 / COPY 2", "重印 / COPY 2"]
    reprint_time = next(line for line in copy if line.startswith("重印时间"))
    assert reprint_time.endswith("2026-11-23 10:05:00")
    assert [line for line in copy if line not in markers and line != reprint_time] == original


def test_training_marker():
    lines = render_text(restaurant_receipt(), width=32, training=True).splitlines()
    assert [line.strip() for line in lines if "TRAINING" in line] == ["TRAINING / 培训"] * 2


def test_reprint_time_in_microseconds():
    text = render_text(restaurant_receipt(), width=48, copy=1, reprinted_at=1_795_000_000_000_000)
    assert "2026-11-18 11:06:40" in text  # UTC


def test_control_characters_never_reach_the_paper():
    r = Receipt(merchant="M", items=[ReceiptItem("Tea\x1b@\x1dV\x00\nmilk", unit_price=100)])
    text = render_text(r, width=32)
    assert "\x1b" not in text and "\x1d" not in text and "\x00" not in text
    assert any(line.startswith("Tea @ V  milk") for line in text.splitlines())


def test_invalid_width_is_refused():
    with pytest.raises(ValueError, match="paper width must be 16..160 columns"):
        render_text(restaurant_receipt(), width=8)


# ---------------------------------------------------------------- property: no line exceeds the width
_name_chars = st.one_of(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),            # ASCII
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),        # CJK ideographs
    st.characters(min_codepoint=0xFF01, max_codepoint=0xFF5E),        # fullwidth forms
    st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3),        # Hangul syllables
    st.sampled_from(["\u0301", "\u0308", "é", "ß", "€", "×", "·", " ", "\t", "\u200d", "👍", "ｶ"]),
)
_names = st.text(_name_chars, min_size=1, max_size=60)
_amounts = st.integers(min_value=-(10 ** 15), max_value=10 ** 15)
_items = st.lists(st.builds(ReceiptItem, name=_names, qty=st.integers(1, 999), unit_price=_amounts,
                            qty_exp=st.integers(0, 3), unit=st.sampled_from(["", "kg", "份"])),
                  min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(items=_items, merchant=_names, width=st.sampled_from([32, 42, 48]), copy=st.integers(0, 3),
       training=st.booleans(), currency=st.sampled_from([156, 392, 414, 978]),
       footer=st.lists(_names, max_size=2))
def test_no_line_ever_exceeds_the_width(items, merchant, width, copy, training, currency, footer):
    r = Receipt(merchant=merchant, items=items, currency=currency, footer=footer, receipt_no=1, terminal=2,
                payments=[Payment("card", sum(i.amount for i in items), pan_last4="1234")])
    text = render_text(r, width=width, copy=copy, reprinted_at="2026-11-23T10:00:00", training=training)
    lines = text.splitlines()
    assert max(display_width(line) for line in lines) <= width
    flat = text.replace("\n", "").replace(" ", "")
    for item in items:
        # every item's amount is printed whole, and no character of its name is lost by wrapping
        assert format_amount(item.amount, currency) in text
        name = unicodedata.normalize("NFC", item.name.replace("\t", " ")).replace(" ", "")
        assert name in flat
    assert Receipt.from_payload(r.to_payload()) == r


def test_docstring_examples_run():
    result = doctest.testmod(posfast.receipt, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 10 and result.failed == 0


# ---------------------------------------------------------------- tax, currencies, languages
def _taxed(**overrides):
    fields = dict(merchant="好又多", terminal=3, receipt_no=200,
                  items=[ReceiptItem("宫保鸡丁", unit_price=3800, tax_key="A", tax_rate=600),
                         ReceiptItem("Cola", qty=2, unit_price=350, tax_key="B", tax_rate=1300),
                         ReceiptItem("米饭", unit_price=200, tax_key="A", tax_rate=600),
                         ReceiptItem("Bag", unit_price=50)],
                  payments=[Payment("cash", 5000)], change=250)
    fields.update(overrides)
    return Receipt(**fields)


def test_tax_lines_per_item_and_the_summary_per_rate():
    r = _taxed()
    duck = r.items[0]
    assert (duck.tax_key, duck.tax_rate, duck.net, duck.tax, duck.gross) == ("A", 600, 3585, 215, 3800)
    assert r.tax_summary() == [("A", 600, 3774, 226, 4000), ("B", 1300, 619, 81, 700)]
    assert Receipt.from_payload(r.to_payload()) == r
    lines = render_text(r, width=32).splitlines()
    assert "宫保鸡丁                 38.00 A" in lines and "Bag                       0.50 -" in lines
    at = lines.index("税率                 不含税 税额")
    assert lines[at + 1:at + 3] == ["A 6%                  37.74 2.26", "B 13%                  6.19 0.81"]
    assert max(display_width(line) for line in lines) <= 32
    # net and tax given by the till (its own rounding) are kept, and must add up
    assert ReceiptItem("x", unit_price=1000, tax_rate=1300, net=885, tax=115).tax == 115
    with pytest.raises(InvalidReceipt, match="net 880 \\+ tax 115 is not its amount 1000"):
        ReceiptItem("x", unit_price=1000, tax_rate=1300, net=880, tax=115)
    with pytest.raises(InvalidReceipt, match="hundredths of a percent"):
        ReceiptItem("x", unit_price=1000, tax_rate=13.0)
    with pytest.raises(InvalidReceipt, match="no tax_rate"):
        ReceiptItem("x", unit_price=1000, tax_key="A")


def test_every_iso_4217_currency_with_a_minor_unit():
    from posfast.receipt import CURRENCIES
    assert currency_exponent(504) == 2 and currency_alpha(504) == "MAD"
    assert format_amount(123456, 504) == "1,234.56"
    assert (currency_alpha(952), currency_exponent(952)) == ("XOF", 0)
    assert (currency_alpha(512), currency_exponent(512)) == ("OMR", 3)
    assert (currency_alpha(990), currency_exponent(990)) == ("CLF", 4)
    assert (currency_alpha(925), currency_alpha(975)) == ("SLE", "BGN")     # new, and withdrawn 2026
    assert len(CURRENCIES) >= 160 and len({alpha for alpha, _ in CURRENCIES.values()}) == len(CURRENCIES)
    r = Receipt(merchant="Café Atlas", currency=504, lang="fr", items=[ReceiptItem("Thé", unit_price=1500)])
    assert "TOTAL MAD                  15.00" in render_text(r, width=32)


def test_receipt_languages_are_pluggable():
    from posfast.receipt import LANGUAGES, register_language
    fr = render_text(_taxed(lang="fr", currency=504), width=32).splitlines()
    assert "VENTE" in fr and "N° ticket               3-000200" in fr and "Espèces                    50.00" in fr
    assert "TVA                      HT  TVA" in fr
    en = render_text(_taxed(lang="en"), width=32)
    assert "Receipt No" in en and "Rate" in en and "票据号" not in en
    register_language("de", {"total": "SUMME", "cash": "Bar", "change": "Rückgeld"})
    try:
        de = render_text(_taxed(lang="de"), width=32)
        assert "SUMME CNY" in de and "Rückgeld" in de and "Receipt No" in de    # the rest from English
        stored = _taxed(lang="de").to_payload()
        assert Receipt.from_payload(stored).lang == "de"
    finally:
        del LANGUAGES["de"]
    # read where "de" is not registered (posfast reprint in another process): English labels
    elsewhere = Receipt.from_payload(stored)
    assert elsewhere.lang == "de" and "TOTAL CNY" in render_text(elsewhere, width=32)
    with pytest.raises(InvalidReceipt, match="lang must be one of en, fr, zh"):
        Receipt(merchant="M", lang="xx")
    # a label the printer's font cannot print falls back to English
    from posfast.printing import printed_lines, render_escpos
    register_language("el", {"cash": "Μετρητά", "total": "ΣΥΝΟΛΟ"})
    try:
        receipt = _taxed(lang="el", merchant="Atlas", items=[ReceiptItem("Tea", unit_price=4700)], change=300)
        greek = [line.text for line in printed_lines(render_escpos(receipt, encoding="cp437", width=32))]
        assert "Cash                       50.00" in greek and "TOTAL CNY                  47.00" in greek
        assert "Μετρητά                    50.00" in render_text(receipt, width=32).splitlines()
    finally:
        del LANGUAGES["el"]
