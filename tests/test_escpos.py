"""ESC/POS encoding of receipts, checked by decoding the bytes the way a printer would."""
import doctest

import pytest
from hypothesis import given, settings, strategies as st

import posfast.printing.escpos
from posfast.printing import (EscposBuilder, EscposParseError, commands, parse, printed_lines, printed_text,
                              render_escpos)
from posfast.receipt import Payment, Receipt, ReceiptItem, render_text


def shop_receipt(**overrides):
    fields = dict(
        merchant="好又多超市",
        header=["深圳市南山区科技园路1号"],
        terminal=3, receipt_no=123, operator=7,
        issued_at="2026-11-20T13:45:12+08:00",
        items=[ReceiptItem("宫保鸡丁", unit_price=3800),
               ReceiptItem("可口可乐 Coca-Cola 330ml", qty=3, unit_price=350)],
        payments=[Payment("card", 4850, pan_last4="1234", auth_code="A1B2C3")],
        footer=["谢谢惠顾"],
    )
    fields.update(overrides)
    return Receipt(**fields)


def gb_columns(text):
    """Columns on a GB18030 printer: one-byte characters are half-width, multi-byte full-width."""
    return sum(1 if len(ch.encode("gb18030")) == 1 else 2 for ch in text)


# ---------------------------------------------------------------- the encoder, byte for byte
def test_builder_commands_byte_for_byte():
    b = EscposBuilder("gb18030")
    b.init().select_encoding().align(1).bold(True).size(2, 2).text("中").newline()
    b.size(1, 1).bold(False).align(0).feed(2).cut(partial=True)
    assert bytes(b) == (b"\x1b@" b"\x1c&" b"\x1ba\x01" b"\x1bE\x01" b"\x1d!\x11" b"\xd6\xd0\n"
                        b"\x1d!\x00" b"\x1bE\x00" b"\x1ba\x00" b"\x1bd\x02" b"\x1dVB\x00")


def test_latin_code_page_leaves_chinese_mode_first():
    assert bytes(EscposBuilder("cp858").init().select_encoding()) == b"\x1b@\x1c.\x1bt\x13"
    assert bytes(EscposBuilder("CP437").select_encoding()) == b"\x1c.\x1bt\x00"
    with pytest.raises(ValueError, match="no ESC/POS character set for 'utf-8'"):
        EscposBuilder("utf-8")


def test_qr_sequence_byte_for_byte():
    data = bytes(EscposBuilder().qr("3-000123", module_size=6, error_level="M"))
    assert data == (b"\x1d(k\x04\x001A2\x00"      # model 2
                    b"\x1d(k\x03\x001C\x06"       # module size 6 dots
                    b"\x1d(k\x03\x001E1"          # error level M
                    b"\x1d(k\x0b\x001P03-000123"  # store 8 bytes (pL = 8 + 3)
                    b"\x1d(k\x03\x001Q0")         # print


def test_qr_matches_python_escpos():
    escpos_printer = pytest.importorskip("escpos.printer", reason="python-escpos (posfast[escpos]) not installed")
    from escpos.constants import QR_ECLEVEL_M
    dummy = escpos_printer.Dummy()
    dummy.qr("3-000123", ec=QR_ECLEVEL_M, size=6, native=True)
    assert bytes(EscposBuilder().qr("3-000123", module_size=6, error_level="M")) == dummy.output


def test_builder_never_sends_control_characters_as_text():
    data = bytes(EscposBuilder().text("A\x1b@B\x1dV\x00C"))
    assert data == b"A @B V C"


# ---------------------------------------------------------------- a rendered receipt, decoded
def test_gb18030_receipt_decodes_to_what_the_text_rendering_shows():
    r = shop_receipt()
    data = render_escpos(r, width=32)
    cmds = commands(data)
    assert cmds[:2] == [("INIT", ()), ("CHINESE_ON", ())]
    assert cmds[-2:] == [("FEED", (2,)), ("CUT", (66, 0))]
    lines = printed_lines(data)
    title = lines[0]
    assert (title.text, title.bold, title.width, title.height, title.align) == ("好又多超市", True, 2, 2, 1)
    # the paper shows exactly the text rendering (the printer centres what ESC a 1 marks)
    on_paper = [" " * ((32 - gb_columns(line.text)) // 2) + line.text if line.align == 1 else line.text
                for line in lines[1:] if line.text]
    assert on_paper == render_text(r, width=32).splitlines()[1:]
    total = next(line for line in lines if line.text.startswith("合计"))
    assert (total.text, total.bold, total.height) == ("合计 CNY" + "48.50".rjust(32 - 8), True, 2)
    for line in lines:
        assert gb_columns(line.text) * line.width <= 32


def test_qr_code_of_the_receipt_number_is_printed_centred():
    data = render_escpos(shop_receipt(), width=42)
    segments = parse(data)
    qr = [seg for seg in segments if not isinstance(seg, str) and seg[0].startswith("QR_")]
    assert qr == [("QR_MODEL", (2,)), ("QR_SIZE", (6,)), ("QR_ERROR", ("M",)),
                  ("QR_STORE", (b"3-000123",)), ("QR_PRINT", ())]
    before = segments[:segments.index(("QR_MODEL", (2,)))]
    assert [seg for seg in before if not isinstance(seg, str) and seg[0] == "ALIGN"][-1] == ("ALIGN", (1,))


def test_code128_instead_of_qr():
    data = render_escpos(shop_receipt(), width=42, code="code128")
    assert ("BARCODE", (73, b"{B3-000123")) in commands(data)
    assert not any(name.startswith("QR_") for name, _ in commands(data))
    assert not any(name.startswith(("QR_", "BARCODE")) for name, _ in commands(
        render_escpos(shop_receipt(), width=42, code=None)))


def test_copy_and_training_markers_on_paper():
    data = render_escpos(shop_receipt(), width=42, copy=2, reprinted_at="2026-11-23T10:00:00+08:00",
                         training=True)
    lines = printed_lines(data)
    markers = [(line.text, line.bold, line.align) for line in lines if "COPY" in line.text or "TRAINING" in line.text]
    assert markers == [("TRAINING / 培训", True, 1), ("重印 / COPY 2", True, 1),
                       ("重印 / COPY 2", True, 1), ("TRAINING / 培训", True, 1)]
    assert any(line.text == "重印时间" + "2026-11-23 10:00:00".rjust(42 - 8) for line in lines)


def test_latin_printer_gets_english_labels_and_question_marks_for_missing_glyphs():
    data = render_escpos(shop_receipt(), width=32, encoding="cp437", copy=1, training=True)
    assert commands(data)[:3] == [("INIT", ()), ("CHINESE_OFF", ()), ("CODEPAGE", (0,))]
    texts = [line.text for line in printed_lines(data)]
    assert "SALE" in texts and "COPY 1" in texts and "TRAINING" in texts
    assert "????" + "38.00".rjust(32 - 4) in texts
    assert "Card **** 1234" + "48.50".rjust(32 - 14) in texts
    assert all(len(t) <= 32 for t in texts)


def test_cp858_prints_the_euro_sign():
    r = Receipt(merchant="Café Zürich", lang="en", currency=978,
                items=[ReceiptItem("Crème brûlée €", unit_price=650)])
    data = render_escpos(r, width=32, encoding="cp858")
    assert "Crème brûlée €" + "6.50".rjust(32 - 14) in printed_text(data).splitlines()
    assert b"\xd5" in data  # € is 0xD5 in code page 858


def test_ambiguous_width_characters_are_double_width_on_a_chinese_printer():
    # '×' and '€' are one column in a terminal but a full-width glyph in GB18030 mode
    r = Receipt(merchant="M", items=[ReceiptItem("×€" * 10, unit_price=100)])
    for line in printed_lines(render_escpos(r, width=32)):
        assert gb_columns(line.text) * line.width <= 32
    assert "×€×€×€×€×€×€×€×€" in printed_text(render_escpos(r, width=32))  # 16 chars = 32 columns


def test_item_names_cannot_inject_commands():
    r = Receipt(merchant="M", items=[ReceiptItem("Tea\x1b@\x1dVA\x00\x1bp\x00\x19\xfa", unit_price=100)])
    cmds = commands(render_escpos(r, width=32))
    assert [name for name, _ in cmds].count("INIT") == 1
    assert [name for name, _ in cmds].count("CUT") == 1
    assert "CASH_DRAWER" not in [name for name, _ in cmds]


def test_decoding_python_escpos_output():
    escpos_printer = pytest.importorskip("escpos.printer", reason="python-escpos (posfast[escpos]) not installed")
    dummy = escpos_printer.Dummy()
    dummy.set(align="center", bold=True, double_height=True, double_width=True)
    dummy.textln("TOTAL 9.00")
    dummy.set(normal_textsize=True)
    dummy.textln("thanks")
    dummy.cut()
    lines = printed_lines(dummy.output)
    assert [(line.text, line.bold, line.width, line.height, line.align) for line in lines if line.text] == [
        ("TOTAL 9.00", True, 2, 2, 1), ("thanks", False, 1, 1, 1)]
    assert commands(dummy.output)[-1][0] == "CUT"


# ---------------------------------------------------------------- the parser itself
def test_parse_follows_the_character_set_commands():
    data = b"\x1c&\xd6\xd0\x1c.\x1bt\x02\x9b\n"   # GB18030 中, then cp850 0x9B = ø
    assert parse(data) == [("CHINESE_ON", ()), "中", ("CHINESE_OFF", ()), ("CODEPAGE", (2,)), "ø\n"]


def test_parse_rejects_unknown_and_truncated_commands():
    with pytest.raises(EscposParseError, match="unknown ESC/POS command 1b 7e at byte 1"):
        parse(b"A\x1b~")
    assert parse(b"A\x1b~", strict=False) == ["A", ("UNKNOWN", (b"\x1b~",))]
    with pytest.raises(EscposParseError, match="truncated GS \\("):
        parse(b"\x1d(k\x10\x001P0abc")
    with pytest.raises(EscposParseError, match="unexpected control byte 0x07"):
        parse(b"\x07")


def test_parse_raster_image_and_status_request():
    image = b"\x1dv0\x00\x01\x00\x02\x00" + b"\xff\x00"
    assert parse(image + b"\x10\x04\x01") == [("RASTER_IMAGE", (8, 2)), ("REALTIME_STATUS", (1,))]


_texts = st.text(st.one_of(st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                           st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
                           st.sampled_from(["×", "€", "é", "\u0301", "👍", " ", "\x1b", "\x1d"])),
                 min_size=1, max_size=50)


@settings(max_examples=100, deadline=None)
@given(names=st.lists(_texts, min_size=1, max_size=5), merchant=_texts, width=st.sampled_from([32, 42, 48]),
       amounts=st.lists(st.integers(-10 ** 12, 10 ** 12), min_size=5, max_size=5),
       encoding=st.sampled_from(["gb18030", "cp437"]), copy=st.integers(0, 2))
def test_no_printed_line_exceeds_the_paper(names, merchant, width, amounts, encoding, copy):
    r = Receipt(merchant=merchant, receipt_no=5,
                items=[ReceiptItem(n, unit_price=a) for n, a in zip(names, amounts)])
    data = render_escpos(r, width=width, encoding=encoding, copy=copy, reprinted_at="2026-11-23T10:00:00")
    cmds = commands(data, chinese_encoding="gb18030")
    assert [name for name, _ in cmds].count("INIT") == 1 and cmds[-1][0] == "CUT"
    measure = gb_columns if encoding == "gb18030" else len
    for line in printed_lines(data):
        assert measure(line.text) * line.width <= width
    assert r.amount_text(r.total) in printed_text(data)


def test_docstring_examples_run():
    result = doctest.testmod(posfast.printing.escpos, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 5 and result.failed == 0
