"""ESC/POS: encode receipts for thermal printers, and decode ESC/POS bytes back.

:func:`render_escpos` turns a :class:`posfast.receipt.Receipt` into the bytes
a receipt printer executes: ``ESC @`` (initialise), the character set
(``FS &`` Chinese mode for GB18030 text on Chinese printers, or ``FS .`` then
``ESC t n`` for a Latin code page), a bold double-size title (``ESC E``,
``GS !``), alignment (``ESC a``), a QR code of the receipt number
(``GS ( k``: model, module size, error level, store, print) or a CODE128
barcode (``GS k``), and a partial cut (``GS V``).

:func:`parse` decodes such bytes into commands and text the way a printer
would (it follows ``FS &`` / ``ESC t`` to pick the character set), and
:func:`printed_lines` gives the lines a person would read on the paper, with
their style.  Tests and support tools use them to check what a printer got.

>>> from posfast.receipt import Receipt, ReceiptItem
>>> r = Receipt(merchant="好又多", receipt_no=9, items=[ReceiptItem("茶", unit_price=500)])
>>> data = render_escpos(r, width=32)
>>> [line.text for line in printed_lines(data) if "茶" in line.text]
['茶                          5.00']
>>> [args for name, args in commands(data) if name == "QR_STORE"]
[(b'000009',)]
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, List, Optional, Tuple, Union

from posfast.receipt import CENTER, LEFT, Receipt, layout, _sanitize

__all__ = [
    "EscposBuilder",
    "EscposParseError",
    "PrintedLine",
    "commands",
    "parse",
    "printed_lines",
    "printed_text",
    "render_escpos",
    "CODE_PAGES",
    "CHINESE_ENCODINGS",
]

ESC, GS, FS, DLE = 0x1B, 0x1D, 0x1C, 0x10

#: Python codec -> ESC t page number on Epson-compatible printers.
CODE_PAGES = {
    "cp437": 0, "cp850": 2, "cp860": 3, "cp863": 4, "cp865": 5,
    "cp1252": 16, "cp866": 17, "cp852": 18, "cp858": 19,
}
_PAGE_CODECS = {number: name for name, number in CODE_PAGES.items()}

#: Double-byte encodings selected with FS & (Chinese/Kanji mode) on Chinese printers.
CHINESE_ENCODINGS = ("gb18030", "gbk", "gb2312", "big5")

_QR_ERROR_LEVELS = "LMQH"


class EscposParseError(ValueError):
    """The bytes hold a command this parser does not know, or a truncated one."""


def _codec_name(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise ValueError(f"unknown text encoding {encoding!r}: use one of "
                         f"{', '.join(CHINESE_ENCODINGS + tuple(CODE_PAGES))}") from None


class EscposBuilder:
    """Accumulates ESC/POS commands and encoded text.

    >>> b = EscposBuilder("cp437")
    >>> b.init().select_encoding().align(1).bold(True).text("Hi").newline().cut()
    <EscposBuilder 20 bytes, cp437>
    >>> bytes(b)
    b'\\x1b@\\x1c.\\x1bt\\x00\\x1ba\\x01\\x1bE\\x01Hi\\n\\x1dVB\\x00'
    """

    def __init__(self, encoding: str = "gb18030"):
        self.encoding = _codec_name(encoding)
        if self.encoding not in CHINESE_ENCODINGS and self.encoding not in CODE_PAGES:
            raise ValueError(f"no ESC/POS character set for {encoding!r}: use one of "
                             f"{', '.join(CHINESE_ENCODINGS + tuple(CODE_PAGES))}")
        self.chinese = self.encoding in CHINESE_ENCODINGS
        self.buffer = bytearray()

    def __bytes__(self) -> bytes:
        return bytes(self.buffer)

    def __len__(self) -> int:
        return len(self.buffer)

    def __repr__(self) -> str:
        return f"<EscposBuilder {len(self.buffer)} bytes, {self.encoding}>"

    def raw(self, data: bytes) -> "EscposBuilder":
        self.buffer += data
        return self

    def init(self) -> "EscposBuilder":
        """ESC @: clear the buffer and reset modes."""
        self.buffer += b"\x1b@"
        return self

    def select_encoding(self) -> "EscposBuilder":
        """FS & for a Chinese encoding; otherwise FS . (leave Chinese mode, on by
        default on many Chinese printers) and ESC t n."""
        if self.chinese:
            self.buffer += b"\x1c&"
        else:
            self.buffer += b"\x1c.\x1bt" + bytes([CODE_PAGES[self.encoding]])
        return self

    def text(self, text: str) -> "EscposBuilder":
        """Encoded text; characters the encoding lacks print as '?'; control
        characters are never sent (they would be commands)."""
        text = "".join(ch if ch >= " " else " " for ch in text)
        self.buffer += text.encode(self.encoding, "replace")
        return self

    def newline(self) -> "EscposBuilder":
        self.buffer += b"\n"
        return self

    def bold(self, on: bool) -> "EscposBuilder":
        """ESC E n."""
        self.buffer += b"\x1bE" + (b"\x01" if on else b"\x00")
        return self

    def size(self, width: int = 1, height: int = 1) -> "EscposBuilder":
        """GS ! n: character width and height multipliers 1..8."""
        if not (1 <= width <= 8 and 1 <= height <= 8):
            raise ValueError(f"character size multipliers must be 1..8, got {width}x{height}")
        self.buffer += b"\x1d!" + bytes([(width - 1) << 4 | (height - 1)])
        return self

    def align(self, alignment: int) -> "EscposBuilder":
        """ESC a n: 0 left, 1 centre, 2 right."""
        if alignment not in (0, 1, 2):
            raise ValueError(f"alignment must be 0 (left), 1 (centre) or 2 (right), got {alignment}")
        self.buffer += b"\x1ba" + bytes([alignment])
        return self

    def feed(self, lines: int = 1) -> "EscposBuilder":
        """ESC d n: print and feed n lines."""
        self.buffer += b"\x1bd" + bytes([max(0, min(255, lines))])
        return self

    def cut(self, partial: bool = True) -> "EscposBuilder":
        """GS V m 0: feed to the cutter and cut (m = 66 partial, 65 full)."""
        self.buffer += b"\x1dV" + (b"B" if partial else b"A") + b"\x00"
        return self

    def qr(self, data: Union[str, bytes], module_size: int = 6, error_level: str = "M",
           model: int = 2) -> "EscposBuilder":
        """GS ( k: QR model, module size (1..16 dots), error level (L/M/Q/H), store, print."""
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        if not 1 <= module_size <= 16:
            raise ValueError(f"QR module size must be 1..16 dots, got {module_size}")
        if error_level not in _QR_ERROR_LEVELS:
            raise ValueError(f"QR error level must be one of L, M, Q, H, got {error_level!r}")
        if model not in (1, 2):
            raise ValueError(f"QR model must be 1 or 2, got {model}")
        if not 0 < len(payload) <= 7089:
            raise ValueError(f"QR data must be 1..7089 bytes, got {len(payload)}")

        def function(fn: int, body: bytes) -> bytes:
            n = len(body) + 2
            return b"\x1d(k" + bytes([n & 0xFF, n >> 8, 0x31, fn]) + body

        self.buffer += function(0x41, bytes([0x30 + model, 0]))
        self.buffer += function(0x43, bytes([module_size]))
        self.buffer += function(0x45, bytes([0x30 + _QR_ERROR_LEVELS.index(error_level)]))
        self.buffer += function(0x50, b"0" + payload)
        self.buffer += function(0x51, b"0")
        return self

    def barcode128(self, data: str, height: int = 64, module_width: int = 2,
                   hri_below: bool = True) -> "EscposBuilder":
        """GS h / GS w / GS H then GS k 73 (CODE128, code set B)."""
        body = b"{B" + data.encode("ascii")
        if len(body) > 255:
            raise ValueError(f"CODE128 data must be at most 253 characters, got {len(data)}")
        self.buffer += b"\x1dh" + bytes([height]) + b"\x1dw" + bytes([module_width])
        self.buffer += b"\x1dH" + (b"\x02" if hri_below else b"\x00")
        self.buffer += b"\x1dkI" + bytes([len(body)]) + body
        return self


@lru_cache(maxsize=None)
def _printer_measure(encoding: str) -> Callable[[str], int]:
    """On the printer a character's width follows its encoding: one byte is a
    half-width (ASCII or code-page) glyph, a multi-byte GB18030/Big5 character
    is a full-width Chinese-font glyph -- even '×' or '€', which a terminal
    draws one column wide."""

    @lru_cache(maxsize=4096)
    def measure(ch: str) -> int:
        if ch < "\x80":
            return 1
        try:
            return 1 if len(ch.encode(encoding)) == 1 else 2
        except UnicodeEncodeError:
            return 1  # printed as '?'
    return measure


@lru_cache(maxsize=None)
def _printer_prepare(encoding: str) -> Callable[[str], str]:
    from posfast.receipt import char_width

    def prepare(text: str) -> str:
        text = _sanitize(text)
        if text.isascii():
            return text
        out = []
        for ch in text:
            if ch < "\x80":
                out.append(ch)
                continue
            if char_width(ch) == 0:
                continue  # combining marks, joiners and selectors do not compose on a thermal head
            try:
                ch.encode(encoding)
            except UnicodeEncodeError:
                ch = "?"
            out.append(ch)
        return "".join(out)
    return prepare


def render_escpos(receipt: Receipt, width: int = 42, copy: int = 0, reprinted_at=None,
                  training: bool = False, encoding: str = "gb18030", code: Optional[str] = "qr",
                  cut: bool = True, qr_module_size: int = 6) -> bytes:
    """Render a receipt to ESC/POS bytes for a ``width``-column printer.

    ``encoding`` is ``"gb18030"`` (or gbk/big5) for Chinese printers, or a
    Latin code page (cp437, cp850, cp858, cp1252, ...): Chinese labels then
    fall back to English and characters the page lacks print as '?'.
    ``code`` is ``"qr"`` (default), ``"code128"`` or None; ``copy`` and
    ``training`` mark reprints and training slips as in
    :func:`posfast.receipt.render_text`.

    >>> from posfast.receipt import Receipt
    >>> data = render_escpos(Receipt(merchant="Shop", lang="en"), width=32, encoding="cp437", copy=1)
    >>> data[:7]
    b'\\x1b@\\x1c.\\x1bt\\x00'
    >>> [l.text for l in printed_lines(data) if "COPY" in l.text]
    ['COPY 1', 'COPY 1']
    """
    builder = EscposBuilder(encoding)
    if code not in ("qr", "code128", None):
        raise ValueError(f"code must be 'qr', 'code128' or None, got {code!r}")
    lines = layout(receipt, width, copy, reprinted_at, training,
                   measure=_printer_measure(builder.encoding),
                   prepare=_printer_prepare(builder.encoding),
                   chinese=builder.chinese, double_title=True)
    return emit_lines(builder, lines, code=code, qr_module_size=qr_module_size, cut=cut)


def emit_lines(builder: "EscposBuilder", lines, code: Optional[str] = "qr", qr_module_size: int = 6,
               cut: bool = True) -> bytes:
    """Laid-out lines (receipt or Z-report) to ESC/POS: init, styles as they change, cut."""
    builder.init().select_encoding()
    align, bold, size = LEFT, False, (1, 1)
    for line in lines:
        if line.code:
            if code is None:
                continue
            if bold:
                builder.bold(False)
                bold = False
            if size != (1, 1):
                builder.size(1, 1)
                size = (1, 1)
            if align != CENTER:
                builder.align(CENTER)
                align = CENTER
            if code == "qr":
                builder.qr(line.text, module_size=qr_module_size)
                builder.newline()
            else:
                builder.barcode128(line.text)
                builder.newline()
            continue
        line_size = (2 if line.wide else 1, 2 if line.tall else 1)
        if line.align != align:
            builder.align(line.align)
            align = line.align
        if line.bold != bold:
            builder.bold(line.bold)
            bold = line.bold
        if line_size != size:
            builder.size(*line_size)
            size = line_size
        builder.text(line.text.rstrip(" ") if line.align == LEFT else line.text.strip(" ")).newline()
    if bold:
        builder.bold(False)
    if size != (1, 1):
        builder.size(1, 1)
    if align != LEFT:
        builder.align(LEFT)
    if cut:
        builder.feed(2).cut(partial=True)
    return bytes(builder)


# ---------------------------------------------------------------------------
# Decoder
# ---------------------------------------------------------------------------

Segment = Union[str, Tuple[str, tuple]]

# ESC x with a fixed number of single-byte arguments
_ESC_FIXED = {
    0x40: ("INIT", 0), 0x74: ("CODEPAGE", 1), 0x45: ("BOLD", 1), 0x47: ("DOUBLE_STRIKE", 1),
    0x61: ("ALIGN", 1), 0x64: ("FEED", 1), 0x4A: ("FEED_DOTS", 1), 0x21: ("PRINT_MODE", 1),
    0x4D: ("FONT", 1), 0x2D: ("UNDERLINE", 1), 0x32: ("LINE_SPACING_DEFAULT", 0),
    0x33: ("LINE_SPACING", 1), 0x70: ("CASH_DRAWER", 3), 0x7B: ("UPSIDE_DOWN", 1),
    0x52: ("INTERNATIONAL", 1), 0x20: ("RIGHT_SPACING", 1), 0x56: ("ROTATE", 1),
    0x63: ("PANEL_BUTTONS", 2), 0x69: ("CUT", 0), 0x6D: ("CUT", 0),
}
_GS_FIXED = {
    0x21: ("SIZE", 1), 0x68: ("BARCODE_HEIGHT", 1), 0x77: ("BARCODE_WIDTH", 1),
    0x48: ("BARCODE_HRI", 1), 0x66: ("BARCODE_HRI_FONT", 1), 0x42: ("REVERSE", 1),
    0x4C: ("LEFT_MARGIN", 2), 0x57: ("PRINT_AREA_WIDTH", 2), 0x61: ("AUTO_STATUS_BACK", 1),
    0x72: ("STATUS_REQUEST", 1),
}
_FS_FIXED = {
    0x26: ("CHINESE_ON", 0), 0x2E: ("CHINESE_OFF", 0), 0x21: ("CHINESE_PRINT_MODE", 1),
    0x43: ("KANJI_CODE", 1), 0x2D: ("CHINESE_UNDERLINE", 1),
}


def parse(data: bytes, chinese_encoding: str = "gb18030", strict: bool = True) -> List[Segment]:
    """Decode ESC/POS bytes into text (``str``) and commands (``(name, args)``).

    Text is decoded as the printer would: with ``chinese_encoding`` after
    ``FS &`` and with the ``ESC t`` code page otherwise.  Line feeds are part
    of the text (``"\\n"``).  Unknown commands raise :class:`EscposParseError`
    naming the offset, or come out as ``("UNKNOWN", (bytes,))`` when
    ``strict=False``.

    >>> parse(b"\\x1b@\\x1c&\\x1ba\\x01\\xd6\\xd0\\xce\\xc4\\n\\x1dVB\\x00")
    [('INIT', ()), ('CHINESE_ON', ()), ('ALIGN', (1,)), '中文\\n', ('CUT', (66, 0))]
    """
    data = bytes(data)
    out: List[Segment] = []
    chinese = False
    code_page = "cp437"
    i, n = 0, len(data)

    def need(count: int, what: str):
        if i + count > n:
            raise EscposParseError(f"truncated {what} at byte {i}: needs {count} bytes, {n - i} left")

    def emit_text(raw: bytes):
        text = raw.decode(chinese_encoding if chinese else code_page, "replace")
        if out and isinstance(out[-1], str):
            out[-1] += text
        else:
            out.append(text)

    while i < n:
        b = data[i]
        if b >= 0x20 or b in (0x0A, 0x0D, 0x09):
            j = i
            while j < n and (data[j] >= 0x20 or data[j] in (0x0A, 0x0D, 0x09)):
                j += 1
            emit_text(data[i:j])
            i = j
            continue
        start = i
        if b in (ESC, GS, FS):
            need(2, "command")
            op = data[i + 1]
            table = {ESC: _ESC_FIXED, GS: _GS_FIXED, FS: _FS_FIXED}[b]
            if op in table:
                name, argc = table[op]
                need(2 + argc, name)
                args = tuple(data[i + 2:i + 2 + argc])
                i += 2 + argc
                if name == "CODEPAGE":
                    code_page = _PAGE_CODECS.get(args[0], "cp437")
                elif name == "CHINESE_ON":
                    chinese = True
                elif name == "CHINESE_OFF":
                    chinese = False
                elif name == "INIT":
                    code_page = "cp437"  # ESC @ resets the code page, not Chinese mode
                elif name == "SIZE":
                    args = ((args[0] >> 4) + 1, (args[0] & 0x0F) + 1)
                out.append((name, args))
                continue
            if b == GS and op == 0x56:  # GS V m [n]
                need(3, "CUT")
                m = data[i + 2]
                if m in (65, 66, 97, 98, 103, 104):
                    need(4, "CUT")
                    out.append(("CUT", (m, data[i + 3])))
                    i += 4
                else:
                    out.append(("CUT", (m,)))
                    i += 3
                continue
            if b == GS and op == 0x6B:  # GS k m ...
                need(3, "BARCODE")
                m = data[i + 2]
                if m <= 6:
                    end = data.find(b"\x00", i + 3)
                    if end < 0:
                        raise EscposParseError(f"unterminated barcode at byte {i}")
                    out.append(("BARCODE", (m, data[i + 3:end])))
                    i = end + 1
                else:
                    need(4, "BARCODE")
                    length = data[i + 3]
                    need(4 + length, "BARCODE")
                    out.append(("BARCODE", (m, data[i + 4:i + 4 + length])))
                    i += 4 + length
                continue
            if b == GS and op == 0x28:  # GS ( fn pL pH ...
                need(5, "GS (")
                fn_letter = data[i + 2]
                length = data[i + 3] | data[i + 4] << 8
                need(5 + length, "GS (")
                body = data[i + 5:i + 5 + length]
                i += 5 + length
                if fn_letter == 0x6B and len(body) >= 2 and body[0] == 0x31:
                    fn = body[1]
                    if fn == 0x41:
                        out.append(("QR_MODEL", (body[2] - 0x30,)))
                    elif fn == 0x43:
                        out.append(("QR_SIZE", (body[2],)))
                    elif fn == 0x45:
                        out.append(("QR_ERROR", (_QR_ERROR_LEVELS[body[2] - 0x30],)))
                    elif fn == 0x50:
                        out.append(("QR_STORE", (bytes(body[3:]),)))
                    elif fn == 0x51:
                        out.append(("QR_PRINT", ()))
                    else:
                        out.append(("QR_FUNCTION", (fn, bytes(body[2:]))))
                else:
                    out.append(("GS(" + chr(fn_letter), (bytes(body),)))
                continue
            if b == GS and op == 0x76:  # GS v 0 m xL xH yL yH d...: raster image
                need(8, "RASTER_IMAGE")
                x = data[i + 4] | data[i + 5] << 8
                y = data[i + 6] | data[i + 7] << 8
                need(8 + x * y, "RASTER_IMAGE")
                out.append(("RASTER_IMAGE", (x * 8, y)))
                i += 8 + x * y
                continue
            if strict:
                raise EscposParseError(
                    f"unknown ESC/POS command {data[start:start + 2].hex(' ')} at byte {start}; "
                    f"pass strict=False to skip it")
            out.append(("UNKNOWN", (data[i:i + 2],)))
            i += 2
            continue
        if b == DLE and i + 1 < n and data[i + 1] == 0x04:  # DLE EOT n: real-time status
            need(3, "DLE EOT")
            out.append(("REALTIME_STATUS", (data[i + 2],)))
            i += 3
            continue
        if strict:
            raise EscposParseError(f"unexpected control byte 0x{b:02x} at byte {i}; pass strict=False to skip it")
        out.append(("CONTROL", (b,)))
        i += 1
    return out


def commands(data: bytes, chinese_encoding: str = "gb18030") -> List[Tuple[str, tuple]]:
    """Only the commands of :func:`parse`, in order.

    >>> commands(b"\\x1b@A\\x1dV\\x01")
    [('INIT', ()), ('CUT', (1,))]
    """
    return [seg for seg in parse(data, chinese_encoding) if not isinstance(seg, str)]


def printed_text(data: bytes, chinese_encoding: str = "gb18030") -> str:
    """All the text of :func:`parse` joined: what a person reads on the paper.

    >>> printed_text(b"\\x1b@\\x1bE\\x01Total\\x1bE\\x00 9.00\\n")
    'Total 9.00\\n'
    """
    return "".join(seg for seg in parse(data, chinese_encoding) if isinstance(seg, str))


@dataclass
class PrintedLine:
    """One printed text line with the style in force when it started.

    ``width`` and ``height`` are the GS ! multipliers, ``align`` 0/1/2.
    """

    text: str
    align: int = 0
    bold: bool = False
    width: int = 1
    height: int = 1


def printed_lines(data: bytes, chinese_encoding: str = "gb18030") -> List[PrintedLine]:
    """The text lines a printer prints from ``data``, each with its style.

    >>> [(l.text, l.bold, l.width) for l in printed_lines(b"\\x1d!\\x11\\x1bE\\x01Big\\n\\x1d!\\x00\\x1bE\\x00x\\n")]
    [('Big', True, 2), ('x', False, 1)]
    """
    lines: List[PrintedLine] = []
    style = {"align": 0, "bold": False, "width": 1, "height": 1}
    current: Optional[PrintedLine] = None
    for seg in parse(data, chinese_encoding):
        if isinstance(seg, str):
            parts = seg.split("\n")
            for k, part in enumerate(parts):
                if current is None and (part or k < len(parts) - 1):
                    current = PrintedLine("", **style)
                if current is not None:
                    current.text += part
                if k < len(parts) - 1:
                    lines.append(current)
                    current = None
            continue
        name, args = seg
        if name == "INIT":
            style = {"align": 0, "bold": False, "width": 1, "height": 1}
        elif name == "ALIGN":
            style["align"] = args[0] % 48 if args[0] >= 48 else args[0]
        elif name == "BOLD":
            style["bold"] = bool(args[0] & 1)
        elif name == "SIZE":
            style["width"], style["height"] = args
        elif name == "PRINT_MODE":  # ESC ! n: bit 3 bold, bit 4 double height, bit 5 double width
            style["bold"] = bool(args[0] & 0x08)
            style["height"] = 2 if args[0] & 0x10 else 1
            style["width"] = 2 if args[0] & 0x20 else 1
        elif name in ("FEED", "QR_PRINT", "BARCODE", "CUT") and current is not None:
            lines.append(current)  # these print the pending line
            current = None
    if current is not None:
        lines.append(current)
    return lines
