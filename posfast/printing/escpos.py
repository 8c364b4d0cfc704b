"""ESC/POS: encode receipts (and other laid-out lines) for thermal printers.

:func:`render_escpos` turns a :class:`posfast.receipt.Receipt` into the bytes
a receipt printer executes: ``ESC @`` (initialise), the character set
(``FS &`` Chinese mode for GB18030 text on Chinese printers, or ``FS .`` then
``ESC t n`` for a Latin code page), a bold double-size title (``ESC E``,
``GS !``), alignment (``ESC a``), a QR code of the receipt number
(``GS ( k``: model, module size, error level, store, print) or a CODE128
barcode (``GS k``), and a partial cut (``GS V``).

The decoder, :mod:`posfast.printing.escpos_decode`, reads such bytes back
the way a printer would; tests and support tools use it to check what a
printer got.

>>> from posfast.printing.escpos_decode import commands, printed_lines
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
from functools import lru_cache
from typing import Callable, Iterable, Optional, Union

from posfast.receipt import CENTER, LEFT, Line, Receipt, char_width, layout, sanitize

__all__ = [
    "EscposBuilder",
    "emit_lines",
    "printer_measure",
    "printer_prepare",
    "render_escpos",
    "CODE_PAGES",
    "CHINESE_ENCODINGS",
    "QR_ERROR_LEVELS",
]

#: Python codec -> ESC t page number on Epson-compatible printers.
CODE_PAGES = {
    "cp437": 0, "cp850": 2, "cp860": 3, "cp863": 4, "cp865": 5,
    "cp1252": 16, "cp866": 17, "cp852": 18, "cp858": 19,
}

#: Double-byte encodings selected with FS & (Chinese/Kanji mode) on Chinese printers.
CHINESE_ENCODINGS = ("gb18030", "gbk", "gb2312", "big5")

#: QR error correction levels, in the order of their ESC/POS codes (0x30 + index).
QR_ERROR_LEVELS = "LMQH"


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
        if error_level not in QR_ERROR_LEVELS:
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
        self.buffer += function(0x45, bytes([0x30 + QR_ERROR_LEVELS.index(error_level)]))
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
def printer_measure(encoding: str) -> Callable[[str], int]:
    """A character's columns on a printer using ``encoding`` (a Python codec name).

    On the printer a character's width follows its encoding: one byte is a
    half-width (ASCII or code-page) glyph, a multi-byte GB18030/Big5 character
    is a full-width Chinese-font glyph -- even '×' or '€', which a terminal
    draws one column wide.

    >>> measure = printer_measure("gb18030")
    >>> measure("a"), measure("中"), measure("€"), printer_measure("cp858")("€")
    (1, 2, 2, 1)
    """

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
def printer_prepare(encoding: str) -> Callable[[str], str]:
    """Text as a printer using ``encoding`` can print it: control characters
    removed (:func:`posfast.receipt.sanitize`), zero-width marks dropped (they do
    not compose on a thermal head), characters the encoding lacks as '?'.

    >>> printer_prepare("cp437")("Caf\u00e9 \u4e2d\u0301")
    'Café ?'
    """

    def prepare(text: str) -> str:
        text = sanitize(text)
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
    >>> from posfast.printing.escpos_decode import printed_lines
    >>> [l.text for l in printed_lines(data) if "COPY" in l.text]
    ['COPY 1', 'COPY 1']
    """
    builder = EscposBuilder(encoding)
    if code not in ("qr", "code128", None):
        raise ValueError(f"code must be 'qr', 'code128' or None, got {code!r}")
    lines = layout(receipt, width, copy, reprinted_at, training,
                   measure=printer_measure(builder.encoding),
                   prepare=printer_prepare(builder.encoding),
                   chinese=builder.chinese, double_title=True)
    return emit_lines(builder, lines, code=code, qr_module_size=qr_module_size, cut=cut)


def emit_lines(builder: EscposBuilder, lines: Iterable[Line], code: Optional[str] = "qr",
               qr_module_size: int = 6, cut: bool = True) -> bytes:
    """Laid-out lines (a receipt's or a Z-report's, see :class:`posfast.receipt.Layout`)
    to ESC/POS: init, character set, styles as they change, QR or CODE128 for a code
    line (``code=None`` leaves them out), feed and cut.  Returns the builder's bytes.

    >>> from posfast.receipt import Line
    >>> emit_lines(EscposBuilder("cp437"), [Line("Hi", align=1, bold=True)], cut=False)
    b'\\x1b@\\x1c.\\x1bt\\x00\\x1ba\\x01\\x1bE\\x01Hi\\n\\x1bE\\x00\\x1ba\\x00'
    """
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
