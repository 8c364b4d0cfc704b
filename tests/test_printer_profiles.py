"""Printer profiles: the bytes fit the printer a shop really has (escpos-printer-db profiles
through python-escpos, or the built-in default): raster QR where there is no native QR, feed
where there is no cutter, the font's encoding, the drawer, a logo, barcodes."""
import os
import re
import warnings

import pytest

from posfast.errors import UnprintableText
from posfast.printing import (EscposBuilder, EscposPrinter, commands, get_profile, printed_lines,
                              raster_images, render_escpos)
from posfast.printing import profiles as profiles_module
from posfast.receipt import Payment, Receipt, ReceiptItem

pytest.importorskip("escpos.capabilities", reason="python-escpos (posfast[printer]) not installed: "
                                                 "only the built-in default profile is known")

RECEIPT = Receipt(merchant="好又多超市", terminal=3, receipt_no=200, issued_at="2026-11-20T13:45:12+08:00",
                  items=[ReceiptItem("宫保鸡丁", unit_price=3800), ReceiptItem("Cola", qty=2, unit_price=350)],
                  payments=[Payment("cash", 5000)], change=500, footer=["谢谢惠顾"])


def names(data):
    return [name for name, _ in commands(data, "gbk")]


def qr_text(bitmap):
    """What a QR scanner reads in a printed bitmap (pyzbar, over Debian's libzbar0)."""
    try:
        from pyzbar import pyzbar
    except ImportError as exc:            # pyzbar missing, or the zbar library it loads
        pytest.skip("no QR decoder: pyzbar (test extra) needs the zbar library "
                    "(apt-get install libzbar0; brew install zbar): %s" % exc)
    height, width = len(bitmap), len(bitmap[0])
    pixels = bytes(0 if black else 255 for row in bitmap for black in row)
    return [found.data.decode("utf-8") for found in pyzbar.decode((pixels, width, height))]


def test_zj5870_gets_no_native_qr_and_no_cut_and_the_same_text():
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # nothing on this receipt is outside a GBK font
        zj = render_escpos(RECEIPT, profile="ZJ-5870")
    assert b"\x1d(k" not in zj and b"\x1dV" not in zj
    assert "RASTER_IMAGE" in names(zj) and "QR_STORE" not in names(zj)
    reference = render_escpos(RECEIPT, width=32)    # the default profile: native QR, cut
    assert "QR_STORE" in names(reference) and "CUT" in names(reference)
    assert [line.text for line in printed_lines(zj, "gbk") if line.text] == [
        line.text for line in printed_lines(reference) if line.text]
    assert "宫保鸡丁                   38.00" in [line.text for line in printed_lines(zj, "gbk")]


def test_the_raster_qr_decodes_back_to_the_receipt_code():
    images = raster_images(render_escpos(RECEIPT, profile="ZJ-5870"))
    assert len(images) == 1 and len(images[0][0]) <= get_profile("ZJ-5870").dots
    assert qr_text(images[0]) == ["3-000200"]


def test_profiles_from_the_database():
    t20, zj, tsp = get_profile("TM-T20II"), get_profile("ZJ-5870"), get_profile("TSP600")
    assert (t20.qr, t20.cut, t20.columns, t20.chinese[0]) == (True, True, 48, "gb18030")
    assert (zj.qr, zj.cut, zj.columns, zj.chinese, zj.dots) == (False, False, 32, ("gbk",), 384)
    assert tsp.code_page("cp1252") == 32 and get_profile("default").code_page("cp1252") == 16
    data = render_escpos(Receipt(merchant="Café", lang="en"), profile="TSP600", encoding="cp1252")
    assert b"\x1bt\x20" in data and b"Caf\xe9" in data
    with pytest.raises(ValueError, match="no .*gb18030 font|no ESC/POS character set"):
        EscposBuilder("gb18030", profile="TSP600")   # a Star in ESC/POS mode: no Chinese font


def test_gbk_fonts_get_fullwidth_yen_and_unprintable_characters_visibly_replaced():
    builder = EscposBuilder("gb18030", profile="ZJ-5870")   # GB18030 asked, the font is GBK
    assert builder.encoding == "gbk"
    assert bytes(builder.text("¥12")) == "￥12".encode("gbk") == b"\xa3\xa412"
    assert bytes(EscposBuilder().text("¥")) == b"\x81\x30\x84\x36"   # a GB18030 font has it
    with pytest.warns(UnprintableText, match=r"ZJ-5870 \(gbk font\) cannot print '😀' \(U\+1F600\) x1"):
        data = render_escpos(Receipt(merchant="Tea 😀 ¥", lang="en"), profile="ZJ-5870")
    assert [line.text for line in printed_lines(data, "gbk")][0] == "Tea ? ￥"


def test_the_drawer_opens_for_cash_when_configured():
    assert "CASH_DRAWER" in names(render_escpos(RECEIPT, profile="ZJ-5870", drawer=True))
    assert "CASH_DRAWER" not in names(render_escpos(RECEIPT, profile="ZJ-5870"))
    card = Receipt(merchant="M", items=[ReceiptItem("x", unit_price=5)], payments=[Payment("card", 5)])
    assert "CASH_DRAWER" not in names(render_escpos(card, drawer=True))
    assert [args for name, args in commands(EscposBuilder().drawer_kick().buffer)] == [(0, 50, 250)]


def test_a_logo_prints_as_a_raster_image_above_the_header():
    from PIL import Image, ImageDraw
    logo = Image.new("1", (64, 24), 1)
    ImageDraw.Draw(logo).rectangle((8, 4, 55, 19), fill=0)
    data = render_escpos(RECEIPT, profile="TM-T20II", logo=logo)
    first_image = names(data).index("RASTER_IMAGE")
    assert first_image < names(data).index("QR_STORE") and first_image == 3   # after init, charset, align
    image = raster_images(data)[0]
    assert (len(image), len(image[0])) == (24, 64)
    assert image[10][8] and image[10][55] and not image[10][7] and not image[2][30]
    with pytest.raises(ValueError, match="400 dots wide; printer profile ZJ-5870 prints at most 384"):
        EscposBuilder(profile="ZJ-5870").image(Image.new("1", (400, 8)))


def test_barcodes_where_the_printer_has_them():
    data = bytes(EscposBuilder(profile="TM-T20II").barcode("4006381333931", "EAN13"))
    assert ("BARCODE", (67, b"4006381333931")) in commands(data)
    with pytest.raises(ValueError, match="prints no barcodes"):
        EscposBuilder(profile="ZJ-5870").barcode("4006381333931", "EAN13")
    # a receipt asked with a CODE128 code gets a QR image on a printer without barcodes
    zj = render_escpos(RECEIPT, profile="ZJ-5870", code="code128")
    assert "BARCODE" not in names(zj) and qr_text(raster_images(zj)[0]) == ["3-000200"]


def test_python_escpos_dummy_printer_takes_the_profiles_bytes():
    from escpos.printer import Dummy
    dummy = Dummy()
    data = render_escpos(RECEIPT, profile="ZJ-5870")
    result = EscposPrinter(dummy).send(data)
    assert (result.outcome, result.bytes_sent, dummy.output) == ("ok", len(data), data)


def test_without_python_escpos_only_the_default_profile(monkeypatch):
    monkeypatch.setattr(profiles_module, "_database", lambda: {})
    profiles_module.get_profile.cache_clear()
    try:
        assert profiles_module.get_profile("default").qr
        with pytest.raises(ValueError, match=r"install the printer extra \(pip install 'posfast\[printer\]'"):
            profiles_module.get_profile("ZJ-5870")
    finally:
        profiles_module.get_profile.cache_clear()


_README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


@pytest.mark.skipif(not os.path.exists(_README),
                    reason="needs the source tree's README (run from a checkout, not the wheel check)")
def test_the_readme_table_of_tested_profiles_is_what_they_get():
    with open(_README, encoding="utf-8") as fh:
        readme = fh.read()
    table = readme.split("<!-- profiles -->")[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()
            if line.startswith("| `")]
    assert len(rows) >= 6
    for name, columns, qr, cut, barcode, chinese, *_ in rows:
        got = get_profile(name.strip("`")).describe()
        assert [columns, qr, cut, barcode, chinese] == [
            str(got["columns"]), got["qr"], got["cut"], "yes" if got["barcode"] else "no", got["chinese"]], name
        data = render_escpos(RECEIPT, profile=name.strip("`"))
        assert (b"\x1d(k" in data) == (got["qr"] == "native") and (b"\x1dV" in data) == (got["cut"] == "cut")
    assert re.search(r"ZJ-5870", table)


def test_a_preview_knows_the_default_columns_without_the_database():
    """profile_columns("default") answers without loading the printer database (a preview or
    reprint on screen needs no printer model); it is what the database's own "default" says."""
    assert profiles_module.profile_columns("default") == get_profile("default").columns == 42
    assert profiles_module.profile_columns("ZJ-5870") == get_profile("ZJ-5870").columns

