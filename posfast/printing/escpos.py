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
import warnings
from functools import lru_cache
from typing import Callable, Dict, Iterable, List, Optional, Union

import numpy as np

from posfast.errors import UnprintableText
from posfast.printing.profiles import PrinterProfile, get_profile
from posfast.receipt import CENTER, LEFT, Line, Receipt, char_width, layout, sanitize

__all__ = [
    "EscposBuilder",
    "emit_lines",
    "printer_measure",
    "printer_prepare",
    "qr_matrix",
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
    """Accumulates ESC/POS commands and encoded text for one printer profile.

    ``profile`` is a printer model (:func:`posfast.printing.profiles.get_profile`:
    ``"TM-T20II"``, ``"ZJ-5870"``, ... or the built-in ``"default"``); it decides
    the code page numbers, native or raster QR, cut or feed.  ``encoding`` defaults
    to the profile's (its font's best Chinese encoding, else a Latin code page); a
    GB18030 request on a GBK-font printer is sent as GBK.

    >>> b = EscposBuilder("cp437")
    >>> b.init().select_encoding().align(1).bold(True).text("Hi").newline().cut()
    <EscposBuilder 20 bytes, cp437, default>
    >>> bytes(b)
    b'\\x1b@\\x1c.\\x1bt\\x00\\x1ba\\x01\\x1bE\\x01Hi\\n\\x1dVB\\x00'
    >>> zj = EscposBuilder(profile="ZJ-5870")                # doctest: +SKIP
    >>> zj.encoding, bytes(zj.text("¥5").cut())              # doctest: +SKIP
    ('gbk', b'\\xa3\\xa45\\x1bd\\x04')
    """

    def __init__(self, encoding: Optional[str] = None, profile: Union[str, PrinterProfile] = "default"):
        self.profile = get_profile(profile)
        if encoding is None:
            encoding = self.profile.default_encoding()
        self.encoding = _codec_name(encoding)
        fonts = self.profile.chinese
        if self.encoding in CHINESE_ENCODINGS:
            if self.encoding not in fonts and self.profile.name == "default":
                pass  # the built-in profile takes any Chinese encoding, as posfast 0.1 did
            elif self.encoding not in fonts and self.encoding != "big5" and "gbk" in fonts:
                self.encoding = "gbk"  # GB18030's 4-byte sequences garble a GBK font
            elif self.encoding not in fonts:
                raise ValueError(f"printer profile {self.profile.name} has no {self.encoding} font "
                                 f"(its Chinese fonts: {', '.join(fonts) or 'none'}); use one of its "
                                 f"code pages: {', '.join(self.profile.code_pages)}")
        elif self.profile.code_page(self.encoding) is None:
            raise ValueError(f"no ESC/POS character set for {encoding!r} on printer profile "
                             f"{self.profile.name}: use one of "
                             f"{', '.join(tuple(fonts) + tuple(self.profile.code_pages))}")
        self.chinese = self.encoding in CHINESE_ENCODINGS
        self.buffer = bytearray()
        #: characters the font lacks, printed as '?': character -> times
        self.replaced: Dict[str, int] = {}
        #: text as this printer prints it, without counting replacements
        self.printable = self._prepare = printer_prepare(self.encoding)
        self.measure = printer_measure(self.encoding)

    def __bytes__(self) -> bytes:
        return bytes(self.buffer)

    def __len__(self) -> int:
        return len(self.buffer)

    def __repr__(self) -> str:
        return f"<EscposBuilder {len(self.buffer)} bytes, {self.encoding}, {self.profile.name}>"

    def prepare(self, text: str) -> str:
        """Text as this printer can print it (:func:`printer_prepare`), counting in
        :attr:`replaced` each character it lacks (printed as '?')."""
        prepared = self._prepare(text)
        if "?" in prepared and prepared.count("?") != text.count("?"):
            for ch in sanitize(text):
                if ch >= "\x80" and char_width(ch) and self._prepare(ch) == "?":
                    self.replaced[ch] = self.replaced.get(ch, 0) + 1
        return prepared

    def warn_replaced(self) -> None:
        """Warn (:class:`posfast.errors.UnprintableText`) if any character was replaced."""
        if self.replaced:
            shown = ", ".join(f"{ch!r} (U+{ord(ch):04X}) x{n}" for ch, n in self.replaced.items())
            warnings.warn(UnprintableText(
                f"printer profile {self.profile.name} ({self.encoding} font) cannot print {shown}: "
                f"printed as '?'"), stacklevel=3)

    def raw(self, data: bytes) -> "EscposBuilder":
        self.buffer += data
        return self

    def init(self) -> "EscposBuilder":
        """ESC @: clear the buffer and reset modes."""
        self.buffer += b"\x1b@"
        return self

    def select_encoding(self) -> "EscposBuilder":
        """FS & for a Chinese encoding; otherwise FS . (leave Chinese mode, on by
        default on many Chinese printers) and ESC t n with the profile's number."""
        if self.chinese:
            self.buffer += b"\x1c&"
        else:
            self.buffer += b"\x1c.\x1bt" + bytes([self.profile.code_page(self.encoding) or 0])
        return self

    def text(self, text: str) -> "EscposBuilder":
        """Encoded text; characters the font lacks print as '?' (counted in
        :attr:`replaced`), ``¥`` as ``￥`` on a GBK font; control characters are never
        sent (they would be commands)."""
        self.buffer += self.prepare(text).encode(self.encoding, "replace")
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
        """GS V m 0: feed to the cutter and cut (m = 66 partial, 65 full); on a printer
        without a cutter (the profile says so), feed the slip out to tear it off instead."""
        if not self.profile.cut:
            return self.feed(4)
        self.buffer += b"\x1dV" + (b"B" if partial else b"A") + b"\x00"
        return self

    def drawer_kick(self, pin: int = 0, on_ms: int = 100, off_ms: int = 500) -> "EscposBuilder":
        """ESC p m t1 t2: pulse the cash drawer on connector pin 2 (``pin=0``) or 5 (``1``)."""
        if pin not in (0, 1):
            raise ValueError(f"drawer pin must be 0 (connector pin 2) or 1 (pin 5), got {pin}")
        self.buffer += b"\x1bp" + bytes([pin, max(1, min(255, on_ms // 2)), max(1, min(255, off_ms // 2))])
        return self

    def qr(self, data: Union[str, bytes], module_size: int = 6, error_level: str = "M",
           model: int = 2) -> "EscposBuilder":
        """A QR code: native (GS ( k: model, module size 1..16 dots, error level L/M/Q/H,
        store, print) where the profile has it, else a raster image of it (GS v 0, needs the
        ``qrcode`` package of the printer extra)."""
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        if not 1 <= module_size <= 16:
            raise ValueError(f"QR module size must be 1..16 dots, got {module_size}")
        if error_level not in QR_ERROR_LEVELS:
            raise ValueError(f"QR error level must be one of L, M, Q, H, got {error_level!r}")
        if model not in (1, 2):
            raise ValueError(f"QR model must be 1 or 2, got {model}")
        if not 0 < len(payload) <= 7089:
            raise ValueError(f"QR data must be 1..7089 bytes, got {len(payload)}")
        if not self.profile.qr:
            return self.qr_raster(payload, module_size, error_level)

        def function(fn: int, body: bytes) -> bytes:
            n = len(body) + 2
            return b"\x1d(k" + bytes([n & 0xFF, n >> 8, 0x31, fn]) + body

        self.buffer += function(0x41, bytes([0x30 + model, 0]))
        self.buffer += function(0x43, bytes([module_size]))
        self.buffer += function(0x45, bytes([0x30 + QR_ERROR_LEVELS.index(error_level)]))
        self.buffer += function(0x50, b"0" + payload)
        self.buffer += function(0x51, b"0")
        return self

    def qr_raster(self, data: Union[str, bytes], module_size: int = 6,
                  error_level: str = "M") -> "EscposBuilder":
        """A QR code as a raster image (GS v 0), for printers without native QR; the
        module size shrinks to fit the head.  Needs ``qrcode`` (``posfast[printer]``)."""
        matrix = qr_matrix(data, error_level)
        if not self.profile.raster:
            raise ValueError(f"printer profile {self.profile.name} has neither native QR codes nor "
                             f"raster images: print the receipt with code=None or 'code128'")
        dots = self.profile.dots or 384
        module_size = max(1, min(module_size, dots // len(matrix[0])))
        modules = np.array(matrix, dtype=bool)
        return self.image(np.repeat(np.repeat(modules, module_size, axis=0), module_size, axis=1))

    def image(self, picture) -> "EscposBuilder":
        """A monochrome image as GS v 0 raster bands (of at most 256 rows): a PIL image
        (a logo; dark pixels print, wider than the head is refused), a 2-D array or rows
        of truthy (black) / falsy (white) pixels."""
        pixels = _bitmap(picture)
        height, width = pixels.shape
        if not height or not width:
            raise ValueError("the image is empty")
        if self.profile.dots and width > self.profile.dots:
            raise ValueError(f"the image is {width} dots wide; printer profile {self.profile.name} "
                             f"prints at most {self.profile.dots}: scale it down first")
        packed = np.packbits(pixels, axis=1)          # 8 dots a byte, the leftmost the high bit
        row_bytes = packed.shape[1]
        for top in range(0, height, 256):
            band = packed[top:top + 256]
            self.buffer += b"\x1dv0\x00" + bytes([row_bytes & 0xFF, row_bytes >> 8,
                                                     len(band) & 0xFF, len(band) >> 8])
            self.buffer += band.tobytes()
        return self

    def barcode(self, data: str, symbology: str = "CODE128", height: int = 64, module_width: int = 2,
                hri_below: bool = True) -> "EscposBuilder":
        """GS h / GS w / GS H then GS k m n data: CODE128 (code set B), CODE39, EAN13, EAN8,
        ITF, CODABAR or UPC-A; refused on a printer whose profile has no barcodes."""
        if not self.profile.barcode:
            raise ValueError(f"printer profile {self.profile.name} prints no barcodes (GS k): "
                             f"use a QR code (printed as an image there)")
        number = _BARCODES.get(symbology.upper())
        if number is None:
            raise ValueError(f"barcode symbology must be one of {', '.join(_BARCODES)}, got {symbology!r}")
        body = (b"{B" if number == 73 else b"") + data.encode("ascii")
        if len(body) > 255:
            raise ValueError(f"barcode data must be at most 253 characters, got {len(data)}")
        self.buffer += b"\x1dh" + bytes([height]) + b"\x1dw" + bytes([module_width])
        self.buffer += b"\x1dH" + (b"\x02" if hri_below else b"\x00")
        self.buffer += b"\x1dk" + bytes([number, len(body)]) + body
        return self

    def barcode128(self, data: str, height: int = 64, module_width: int = 2,
                   hri_below: bool = True) -> "EscposBuilder":
        """GS h / GS w / GS H then GS k 73 (CODE128, code set B): :meth:`barcode`."""
        return self.barcode(data, "CODE128", height, module_width, hri_below)


#: GS k m (the "m = 65.." form with a length byte) of each symbology.
_BARCODES = {"UPC-A": 65, "EAN13": 67, "EAN8": 68, "CODE39": 69, "ITF": 70, "CODABAR": 71,
             "CODE128": 73}


def qr_matrix(data: Union[str, bytes], error_level: str = "M") -> List[List[bool]]:
    """The modules of a QR code (True = black), with a 4-module quiet zone, from the
    ``qrcode`` package (imported only when a printer needs a raster QR code).

    >>> m = qr_matrix("3-000200")                                   # doctest: +SKIP
    >>> len(m), len(m[0])                                            # doctest: +SKIP
    (29, 29)
    """
    try:
        import qrcode
        import qrcode.constants
    except ImportError:
        raise ImportError("this printer has no native QR codes and posfast prints them as an image "
                          "made with the qrcode package: pip install 'posfast[printer]' (or qrcode)"
                          ) from None
    level = getattr(qrcode.constants, "ERROR_CORRECT_" + error_level)
    code = qrcode.QRCode(error_correction=level, border=4)
    code.add_data(data)
    code.make(fit=True)
    return [list(row) for row in code.get_matrix()]


def _bitmap(picture) -> np.ndarray:
    """A picture as a 2-D bool array, True = black: a PIL image (dark pixels black), a
    2-D array, or rows of truthy / falsy values."""
    if isinstance(picture, np.ndarray):
        return picture.astype(bool, copy=False)
    if hasattr(picture, "convert") and hasattr(picture, "size"):   # a PIL image
        mono = picture.convert("L")
        width, height = mono.size
        return np.frombuffer(mono.tobytes(), dtype=np.uint8).reshape(height, width) < 128
    rows = [list(row) for row in picture]
    width = max((len(row) for row in rows), default=0)
    out = np.zeros((len(rows), width), dtype=bool)
    for y, row in enumerate(rows):
        out[y, :len(row)] = [bool(v) for v in row]
    return out


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
        ch = _FONT_SUBSTITUTES.get(encoding, {}).get(ch, ch)
        if encoding in CHINESE_ENCODINGS and ch > "\uffff":
            return 1  # no printer font has the supplementary planes (emoji): printed as '?'
        try:
            return 1 if len(ch.encode(encoding)) == 1 else 2
        except UnicodeEncodeError:
            return 1  # printed as '?'
    return measure


# Characters a font prints under another code point: GBK has no '¥' (GB18030 sends it as a
# 4-byte sequence a GBK font garbles) but has the full-width '￥'.
_FONT_SUBSTITUTES = {"gbk": {"\u00a5": "\uffe5"}, "gb2312": {"\u00a5": "\uffe5"}}


@lru_cache(maxsize=None)
def printer_prepare(encoding: str) -> Callable[[str], str]:
    """Text as a printer using ``encoding`` can print it: control characters
    removed (:func:`posfast.receipt.sanitize`), zero-width marks dropped (they do
    not compose on a thermal head), characters the encoding lacks as '?'.

    On a GBK font ``¥`` prints as ``￥``; characters beyond the Basic Multilingual
    Plane (emoji) are in no printer's font and print as '?'.

    >>> printer_prepare("cp437")("Caf\u00e9 \u4e2d\u0301")
    'Café ?'
    >>> printer_prepare("gbk")("\u00a5 12 \U0001f600")
    '￥ 12 ?'
    """
    substitutes = _FONT_SUBSTITUTES.get(encoding, {})
    chinese = encoding in CHINESE_ENCODINGS

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
            ch = substitutes.get(ch, ch)
            try:
                ch.encode(encoding)
                if chinese and ch > "\uffff":
                    ch = "?"
            except UnicodeEncodeError:
                ch = "?"
            out.append(ch)
        return "".join(out)
    return prepare


def render_escpos(receipt: Receipt, width: Optional[int] = None, copy: int = 0, reprinted_at=None,
                  training: bool = False, encoding: Optional[str] = None, code: Optional[str] = "qr",
                  cut: bool = True, qr_module_size: int = 6,
                  profile: Union[str, PrinterProfile] = "default", drawer: bool = False,
                  logo=None) -> bytes:
    """Render a receipt to ESC/POS bytes for a printer model (``profile``, see
    :class:`EscposBuilder`) of ``width`` columns (default: the profile's Font A).

    ``encoding`` defaults to the profile's: GB18030 (or GBK) for Chinese fonts,
    else a Latin code page (cp437, cp850, cp858, cp1252, ...): Chinese labels then
    fall back to English.  Characters the font lacks print as '?' with an
    :class:`posfast.errors.UnprintableText` warning.  ``code`` is ``"qr"``
    (default; a raster image where the printer has no native QR), ``"code128"``
    (a QR code where the printer has no barcodes) or None; ``copy`` and
    ``training`` mark reprints and training slips as in
    :func:`posfast.receipt.render_text`.  ``drawer=True`` opens the cash drawer
    (``ESC p``) when the receipt has a cash payment; ``logo`` is an image printed
    above the header (see :meth:`EscposBuilder.image`).

    >>> from posfast.receipt import Receipt
    >>> data = render_escpos(Receipt(merchant="Shop", lang="en"), width=32, encoding="cp437", copy=1)
    >>> data[:7]
    b'\\x1b@\\x1c.\\x1bt\\x00'
    >>> from posfast.printing.escpos_decode import printed_lines
    >>> [l.text for l in printed_lines(data) if "COPY" in l.text]
    ['COPY 1', 'COPY 1']
    """
    builder = EscposBuilder(encoding, profile=profile)
    if code not in ("qr", "code128", None):
        raise ValueError(f"code must be 'qr', 'code128' or None, got {code!r}")
    lines = layout(receipt, width or builder.profile.columns, copy, reprinted_at, training,
                   measure=builder.measure, prepare=builder.prepare,
                   chinese=builder.chinese, double_title=True, printable=builder.printable)
    kick = drawer and builder.profile.drawer and any(p.method == "cash" for p in receipt.payments)
    return emit_lines(builder, lines, code=code, qr_module_size=qr_module_size, cut=cut,
                      drawer=kick, logo=logo)


def emit_lines(builder: EscposBuilder, lines: Iterable[Line], code: Optional[str] = "qr",
               qr_module_size: int = 6, cut: bool = True, drawer: bool = False, logo=None) -> bytes:
    """Laid-out lines (a receipt's or a Z-report's, see :class:`posfast.receipt.Layout`)
    to ESC/POS: init, character set, drawer kick and logo when asked, styles as they
    change, QR or CODE128 for a code line (``code=None`` leaves them out), feed and cut
    (feed only on a printer without a cutter).  Returns the builder's bytes, and warns
    (:class:`posfast.errors.UnprintableText`) if the font lacked characters.

    >>> from posfast.receipt import Line
    >>> emit_lines(EscposBuilder("cp437"), [Line("Hi", align=1, bold=True)], cut=False)
    b'\\x1b@\\x1c.\\x1bt\\x00\\x1ba\\x01\\x1bE\\x01Hi\\n\\x1bE\\x00\\x1ba\\x00'
    """
    builder.init().select_encoding()
    if drawer:
        builder.drawer_kick()
    align, bold, size = LEFT, False, (1, 1)
    if logo is not None:
        builder.align(CENTER).image(logo).newline()
        align = CENTER
    if code == "code128" and not builder.profile.barcode:
        code = "qr"
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
        # laid-out text is prepared for this printer already (Layout.prepare): encode it
        text = line.text.rstrip(" ") if line.align == LEFT else line.text.strip(" ")
        builder.raw(text.encode(builder.encoding, "replace")).newline()
    if bold:
        builder.bold(False)
    if size != (1, 1):
        builder.size(1, 1)
    if align != LEFT:
        builder.align(LEFT)
    if cut:
        builder.feed(2).cut(partial=True)
    builder.warn_replaced()
    return bytes(builder)
