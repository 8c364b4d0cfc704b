"""ESC/POS decoding: bytes back to commands and text, the way a printer reads them.

:func:`parse` decodes ESC/POS bytes into commands and text as a printer
would (it follows ``FS &`` / ``ESC t`` to pick the character set), and
:func:`printed_lines` gives the lines a person would read on the paper, with
their style.  Tests and support tools use them to check what a printer got
(:func:`posfast.printing.render_escpos` is the encoder).

>>> data = b"\\x1b@\\x1c&\\x1ba\\x01\\x1bE\\x01\\xba\\xcf\\xbc\\xc6\\n\\x1dVB\\x00"
>>> [(line.text, line.align, line.bold) for line in printed_lines(data)]
[('合计', 1, True)]
>>> [name for name, args in commands(data)]
['INIT', 'CHINESE_ON', 'ALIGN', 'BOLD', 'CUT']
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

from posfast.errors import EscposParseError
from posfast.printing.escpos import CODE_PAGES, QR_ERROR_LEVELS

__all__ = [
    "EscposParseError",
    "PrintedLine",
    "Segment",
    "commands",
    "parse",
    "printed_lines",
    "printed_text",
    "raster_images",
]

ESC, GS, FS, DLE = 0x1B, 0x1D, 0x1C, 0x10
_PAGE_CODECS = {number: name for name, number in CODE_PAGES.items()}

#: One element of :func:`parse`: text, or a command ``(name, args)``.
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


def parse(data: bytes, chinese_encoding: str = "gb18030", strict: bool = True,
          code_pages: Optional[dict] = None) -> List[Segment]:
    """Decode ESC/POS bytes into text (``str``) and commands (``(name, args)``).

    Text is decoded as the printer would: with ``chinese_encoding`` after
    ``FS &`` and with the ``ESC t`` code page otherwise.  Line feeds are part
    of the text (``"\\n"``).  Unknown commands raise :class:`EscposParseError`
    naming the offset, or come out as ``("UNKNOWN", (bytes,))`` when
    ``strict=False``.  ``code_pages`` maps ``ESC t`` numbers to codecs for a printer
    model whose numbers are not Epson's (``{v: k for k, v in profile.code_pages.items()}``).

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
                    code_page = (code_pages or _PAGE_CODECS).get(args[0], "cp437")
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
                        out.append(("QR_ERROR", (QR_ERROR_LEVELS[body[2] - 0x30],)))
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


def raster_images(data: bytes) -> List[List[List[bool]]]:
    """The raster images (``GS v 0``) in ESC/POS bytes, each as rows of pixels (True =
    black); consecutive bands with nothing between them are one image, as on paper.

    >>> raster_images(b"\\x1b@\\x1dv0\\x00\\x01\\x00\\x02\\x00\\x80\\x01")
    [[[True, False, False, False, False, False, False, False], [False, False, False, False, False, False, False, True]]]
    """
    data = bytes(data)
    images: List[List[List[bool]]] = []
    i, end_of_last = 0, -1
    while True:
        i = data.find(b"\x1dv0", i)
        if i < 0 or i + 8 > len(data):
            return images
        x = data[i + 4] | data[i + 5] << 8
        y = data[i + 6] | data[i + 7] << 8
        body = data[i + 8:i + 8 + x * y]
        rows = [[bool(body[r * x + (c >> 3)] & (0x80 >> (c & 7))) for c in range(x * 8)]
                for r in range(len(body) // x if x else 0)]
        if i == end_of_last and images:
            images[-1].extend(rows)
        else:
            images.append(rows)
        i = end_of_last = i + 8 + x * y
