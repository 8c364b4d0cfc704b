"""Printer profiles: what a receipt printer model can do, so the bytes fit it.

A :class:`PrinterProfile` says which ``ESC t`` number selects each code page,
whether the printer has a native QR code (``GS ( k``), a cutter (``GS V``),
barcodes (``GS k``), raster images (``GS v 0``) and a drawer kick (``ESC p``),
how many columns Font A has, how many dots the head is wide, and which Chinese
encodings its font holds.

The profiles are python-escpos's capabilities database (the escpos-printer-db
project: ``TM-T20II``, ``ZJ-5870``, ``POS-5890``, ``Sunmi-V2``, ...) when the
``posfast[printer]`` extra is installed; without it only the built-in
``"default"`` profile (an Epson-compatible 80 mm printer with a GB18030 font)
is known.  The database does not say which Chinese fonts a model has, so
posfast adds that (:data:`CHINESE_FONTS`): GB18030 only where the font really
has it, GBK on the cheap 58 mm printers.

>>> default = get_profile("default")
>>> default.qr, default.cut, default.columns, default.chinese
(True, True, 42, ('gb18030', 'gbk'))
>>> default.code_page("cp858")
19
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, Optional, Tuple

__all__ = ["PrinterProfile", "get_profile", "profile_columns", "profile_names", "CHINESE_FONTS",
           "DEFAULT_PROFILE", "PRINTER_EXTRA"]

#: The optional dependency behind ``posfast[printer]``: python-escpos (with its QR encoder,
#: ``qrcode``) and the USB and serial libraries its devices need.
PRINTER_EXTRA = "python-escpos[usb,serial]>=3.0"

#: Chinese encodings of the font of each profile, best first; a model not listed has
#: no Chinese font (Latin code pages only).  Not in escpos-printer-db: from the makers'
#: manuals (Chinese-market ZiJiang / Netum 58 mm heads carry a GB2312/GBK font, Epson's
#: TM-T20II and TM-T88 Chinese models GB18030, Sunmi's built-in printer GB18030).
CHINESE_FONTS: Dict[str, Tuple[str, ...]] = {
    "default": ("gb18030", "gbk"),
    "TM-T20II": ("gb18030", "gbk"), "TM-T20II-42col": ("gb18030", "gbk"),
    "TM-T88IV": ("gb18030", "gbk"), "TM-T88V": ("gb18030", "gbk"),
    "Sunmi-V2": ("gb18030", "gbk"),
    "ZJ-5870": ("gbk",), "POS-5890": ("gbk",), "NT-5890K": ("gbk",), "RP326": ("gbk",),
}

# Epson's ESC t numbers: the built-in default profile's code pages.
_EPSON_PAGES = {"cp437": 0, "cp850": 2, "cp860": 3, "cp863": 4, "cp865": 5, "cp1252": 16,
                "cp866": 17, "cp852": 18, "cp858": 19}


@dataclass(frozen=True)
class PrinterProfile:
    """One printer model's capabilities (see the module docstring).

    ``code_pages`` maps a Python codec name to its ``ESC t`` number on this model;
    ``dots`` is the printable width in dots (for raster images), 0 when unknown.
    """

    name: str
    columns: int = 42
    code_pages: Dict[str, int] = field(default_factory=dict)
    qr: bool = True
    cut: bool = True
    barcode: bool = True
    raster: bool = True
    drawer: bool = True
    dots: int = 512
    chinese: Tuple[str, ...] = ()
    vendor: str = ""

    def code_page(self, codec: str) -> Optional[int]:
        """The ``ESC t`` number of a Python codec on this model, None if it has none."""
        return self.code_pages.get(codecs.lookup(codec).name)

    def default_encoding(self) -> str:
        """The encoding receipts use unless told otherwise: the font's best Chinese
        encoding, else cp858 (Latin with €), else cp437."""
        if self.chinese:
            return self.chinese[0]
        for codec in ("cp858", "cp1252", "cp437"):
            if codec in self.code_pages:
                return codec
        return next(iter(self.code_pages), "cp437")

    def describe(self) -> dict:
        """What receipts get on this model (the README's table).

        >>> get_profile("default").describe()["qr"]
        'native'
        """
        return {"profile": self.name, "columns": self.columns,
                "qr": "native" if self.qr else ("raster" if self.raster else "none"),
                "cut": "cut" if self.cut else "feed", "barcode": self.barcode,
                "chinese": "/".join(self.chinese) or "none", "drawer": self.drawer}


DEFAULT_PROFILE = PrinterProfile("default", 42, dict(_EPSON_PAGES), chinese=CHINESE_FONTS["default"],
                                 vendor="Generic")


def _codec(name: str) -> Optional[str]:
    """The Python codec of a database code page, None unless it is a single-byte one
    (``ESC t`` selects single-byte pages; the database's CP932 is only its katakana)."""
    try:
        codec = codecs.lookup(name.replace("ISO_", "iso").replace("_", "-")).name
    except LookupError:
        return None
    return codec if len(bytes(range(256)).decode(codec, "replace")) == 256 else None


@lru_cache(maxsize=1)
def _database() -> dict:
    try:
        from escpos import capabilities
    except ImportError:
        return {}
    return capabilities.CAPABILITIES.get("profiles", {})


def profile_columns(name="default") -> int:
    """Font A's columns of a printer model: what a text preview needs, found without loading
    the printer database (about 5 MB resident) for the built-in ``"default"`` profile, whose
    columns the database's own "default" entry shares (tests/test_printer_profiles.py)."""
    if isinstance(name, PrinterProfile):
        return name.columns
    if name == "default":
        return DEFAULT_PROFILE.columns
    return get_profile(name).columns


def profile_names() -> Tuple[str, ...]:
    """The profile names known here (``("default",)`` without the printer extra)."""
    return tuple(sorted(set(_database()) | {"default"}))


@lru_cache(maxsize=None)
def get_profile(name: str = "default") -> PrinterProfile:
    """The profile of a printer model by its escpos-printer-db name (``"TM-T20II"``,
    ``"ZJ-5870"``, ...), or the built-in ``"default"``.

    >>> get_profile("no-such-printer")
    Traceback (most recent call last):
    ...
    ValueError: unknown printer profile 'no-such-printer': ...
    """
    if isinstance(name, PrinterProfile):
        return name
    entry = _database().get(name)
    if entry is None:
        if name == "default":
            return DEFAULT_PROFILE
        known = profile_names()
        hint = (f"one of {', '.join(known)}" if len(known) > 1 else
                f"'default', or install the printer extra (pip install 'posfast[printer]', "
                f"{PRINTER_EXTRA}) for the escpos-printer-db profiles")
        raise ValueError(f"unknown printer profile {name!r}: use {hint}")
    features = entry.get("features", {})
    pages: Dict[str, int] = {}
    for number, page in sorted(entry.get("codePages", {}).items(), key=lambda kv: int(kv[0])):
        codec = _codec(str(page))
        if codec and codec not in pages:
            pages[codec] = int(number)
    fonts = entry.get("fonts", {})
    columns = int(fonts.get("0", {}).get("columns", 42))
    pixels = entry.get("media", {}).get("width", {}).get("pixels")
    return PrinterProfile(
        name=name, columns=columns, code_pages=pages, qr=bool(features.get("qrCode")),
        cut=bool(features.get("paperPartCut") or features.get("paperFullCut")),
        barcode=bool(features.get("barcodeB")), raster=bool(features.get("bitImageRaster")),
        drawer=bool(features.get("pulseStandard")),
        dots=int(pixels) if isinstance(pixels, int) else columns * 12,
        chinese=CHINESE_FONTS.get(name, ()), vendor=str(entry.get("vendor", "")))
