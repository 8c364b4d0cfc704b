"""Compatibility module: ESC/POS moved to :mod:`posfast.printing`.

The encoder is :mod:`posfast.printing.escpos` and the decoder
:mod:`posfast.printing.escpos_decode`; import them from ``posfast.printing``.
This module keeps ``from posfast.escpos import render_escpos, parse, ...`` of
posfast 0.1.0 working.
"""
from posfast.printing.escpos import (CHINESE_ENCODINGS, CODE_PAGES, EscposBuilder, emit_lines,
                                     render_escpos)
from posfast.printing.escpos_decode import (EscposParseError, PrintedLine, commands, parse,
                                            printed_lines, printed_text)

__all__ = [
    "EscposBuilder",
    "EscposParseError",
    "PrintedLine",
    "commands",
    "emit_lines",
    "parse",
    "printed_lines",
    "printed_text",
    "render_escpos",
    "CODE_PAGES",
    "CHINESE_ENCODINGS",
]
