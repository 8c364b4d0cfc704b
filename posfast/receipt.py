"""Receipts: the data stored with a payment, and their rendering to text.

A receipt is *data*, not print-ready text: the merchant header, the line
items, the totals, the payments and the footer are stored in the payment
record's payload (:meth:`Receipt.to_payload`, compact UTF-8 JSON) and rendered
on demand, so that a reprint days later reproduces the original slip exactly,
plus the copy marker (``重印 / COPY n`` and the reprint time).

Money is an integer number of minor units everywhere (fen, cents, yen); it is
formatted with the ISO 4217 exponent of the currency, never through a float.

Rendering lays out fixed-width lines for 58 mm (32 columns) and 80 mm paper
(42 or 48 columns).  East Asian Wide and Fullwidth characters take two
columns, combining marks none; no line ever exceeds the width.

>>> r = Receipt(merchant="好又多超市", receipt_no=123, terminal=3,
...             issued_at="2026-11-20T13:45:12+08:00", currency=156,
...             items=[ReceiptItem("宫保鸡丁", unit_price=3800),
...                    ReceiptItem("Cola", qty=3, unit_price=350)],
...             total=4850, payments=[Payment("card", 4850, pan_last4="1234")])
>>> Receipt.from_payload(r.to_payload()) == r
True
>>> text = render_text(r, width=32)
>>> max(display_width(line) for line in text.splitlines()) <= 32
True
>>> [line for line in text.splitlines() if "宫保" in line]
['宫保鸡丁                   38.00']
"""
from __future__ import annotations

import datetime as _dt
import json
import operator
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from posfast.errors import InvalidRecord
from posfast.records import find_card_number

__all__ = [
    "CURRENCIES",
    "LANGUAGES",
    "CENTER",
    "InvalidReceipt",
    "LEFT",
    "Layout",
    "Line",
    "Payment",
    "Receipt",
    "ReceiptItem",
    "char_width",
    "currency_alpha",
    "currency_exponent",
    "display_width",
    "format_amount",
    "format_rate",
    "register_language",
    "render_text",
    "wrap_text",
    "PAPER_WIDTHS",
    "RIGHT",
    "check_width",
    "layout",
    "lines_to_text",
    "sanitize",
]

#: Columns of Font A on common paper: 58 mm -> 32, 80 mm -> 42 (512-dot heads) or 48 (576-dot heads).
PAPER_WIDTHS = (32, 42, 48)
_MIN_WIDTH, _MAX_WIDTH = 16, 160

PAYLOAD_VERSION = 1


class InvalidReceipt(InvalidRecord):
    """Receipt data is inconsistent, out of range, or a payload is not a posfast receipt."""


# ---------------------------------------------------------------------------
# Currencies (ISO 4217 numeric code -> alphabetic code, minor-unit exponent)
# ---------------------------------------------------------------------------

#: ISO 4217 numeric code -> (alphabetic code, exponent).  Exponent 0: yen and won
#: have no minor unit; exponent 3: the Gulf dinars have fils of 1/1000.
CURRENCIES = {
    # ISO 4217 list one as published for 2026-01-01: every current currency and fund with a
    # minor unit (precious metals, SDR, testing and "no currency" have none and are left out)
    8: ("ALL", 2), 12: ("DZD", 2), 32: ("ARS", 2), 36: ("AUD", 2), 44: ("BSD", 2), 48: ("BHD", 3),
    50: ("BDT", 2), 51: ("AMD", 2), 52: ("BBD", 2), 60: ("BMD", 2), 64: ("BTN", 2),
    68: ("BOB", 2), 72: ("BWP", 2), 84: ("BZD", 2), 90: ("SBD", 2), 96: ("BND", 2),
    104: ("MMK", 2), 108: ("BIF", 0), 116: ("KHR", 2), 124: ("CAD", 2), 132: ("CVE", 2),
    136: ("KYD", 2), 144: ("LKR", 2), 152: ("CLP", 0), 156: ("CNY", 2), 170: ("COP", 2),
    174: ("KMF", 0), 188: ("CRC", 2), 192: ("CUP", 2), 203: ("CZK", 2), 208: ("DKK", 2),
    214: ("DOP", 2), 222: ("SVC", 2), 230: ("ETB", 2), 232: ("ERN", 2), 238: ("FKP", 2),
    242: ("FJD", 2), 262: ("DJF", 0), 270: ("GMD", 2), 292: ("GIP", 2), 320: ("GTQ", 2),
    324: ("GNF", 0), 328: ("GYD", 2), 332: ("HTG", 2), 340: ("HNL", 2), 344: ("HKD", 2),
    348: ("HUF", 2), 352: ("ISK", 0), 356: ("INR", 2), 360: ("IDR", 2), 364: ("IRR", 2),
    368: ("IQD", 3), 376: ("ILS", 2), 388: ("JMD", 2), 392: ("JPY", 0), 396: ("XAD", 2),
    398: ("KZT", 2), 400: ("JOD", 3), 404: ("KES", 2), 408: ("KPW", 2), 410: ("KRW", 0),
    414: ("KWD", 3), 417: ("KGS", 2), 418: ("LAK", 2), 422: ("LBP", 2), 426: ("LSL", 2),
    430: ("LRD", 2), 434: ("LYD", 3), 446: ("MOP", 2), 454: ("MWK", 2), 458: ("MYR", 2),
    462: ("MVR", 2), 480: ("MUR", 2), 484: ("MXN", 2), 496: ("MNT", 2), 498: ("MDL", 2),
    504: ("MAD", 2), 512: ("OMR", 3), 516: ("NAD", 2), 524: ("NPR", 2), 532: ("XCG", 2),
    533: ("AWG", 2), 548: ("VUV", 0), 554: ("NZD", 2), 558: ("NIO", 2), 566: ("NGN", 2),
    578: ("NOK", 2), 586: ("PKR", 2), 590: ("PAB", 2), 598: ("PGK", 2), 600: ("PYG", 0),
    604: ("PEN", 2), 608: ("PHP", 2), 634: ("QAR", 2), 643: ("RUB", 2), 646: ("RWF", 0),
    654: ("SHP", 2), 682: ("SAR", 2), 690: ("SCR", 2), 702: ("SGD", 2), 704: ("VND", 0),
    706: ("SOS", 2), 710: ("ZAR", 2), 728: ("SSP", 2), 748: ("SZL", 2), 752: ("SEK", 2),
    756: ("CHF", 2), 760: ("SYP", 2), 764: ("THB", 2), 776: ("TOP", 2), 780: ("TTD", 2),
    784: ("AED", 2), 788: ("TND", 3), 800: ("UGX", 0), 807: ("MKD", 2), 818: ("EGP", 2),
    826: ("GBP", 2), 834: ("TZS", 2), 840: ("USD", 2), 858: ("UYU", 2), 860: ("UZS", 2),
    882: ("WST", 2), 886: ("YER", 2), 901: ("TWD", 2), 924: ("ZWG", 2), 925: ("SLE", 2),
    926: ("VED", 2), 927: ("UYW", 4), 928: ("VES", 2), 929: ("MRU", 2), 930: ("STN", 2),
    933: ("BYN", 2), 934: ("TMT", 2), 936: ("GHS", 2), 938: ("SDG", 2), 940: ("UYI", 0),
    941: ("RSD", 2), 943: ("MZN", 2), 944: ("AZN", 2), 946: ("RON", 2), 947: ("CHE", 2),
    948: ("CHW", 2), 949: ("TRY", 2), 950: ("XAF", 0), 951: ("XCD", 2), 952: ("XOF", 0),
    953: ("XPF", 0), 967: ("ZMW", 2), 968: ("SRD", 2), 969: ("MGA", 2), 970: ("COU", 2),
    971: ("AFN", 2), 972: ("TJS", 2), 973: ("AOA", 2), 976: ("CDF", 2), 977: ("BAM", 2),
    978: ("EUR", 2), 979: ("MXV", 2), 980: ("UAH", 2), 981: ("GEL", 2), 984: ("BOV", 2),
    985: ("PLN", 2), 986: ("BRL", 2), 990: ("CLF", 4), 997: ("USN", 2),
    # withdrawn, still on records written before: Croatian kuna (2023), Sierra Leone's old
    # leone (2024), Bulgarian lev (2026)
    191: ("HRK", 2), 694: ("SLL", 2), 975: ("BGN", 2),
}


def currency_exponent(currency: int) -> int:
    """Minor-unit exponent of an ISO 4217 numeric currency code.

    >>> currency_exponent(156), currency_exponent(392), currency_exponent(48)
    (2, 0, 3)
    """
    try:
        return CURRENCIES[int(currency)][1]
    except KeyError:
        raise InvalidReceipt(
            f"unknown ISO 4217 numeric currency code {currency}: pass exponent= "
            f"(digits after the decimal point) explicitly, or use a code from "
            f"posfast.receipt.CURRENCIES") from None


def currency_alpha(currency: int) -> str:
    """Alphabetic ISO 4217 code for a numeric one (the number itself if unknown).

    >>> currency_alpha(978), currency_alpha(999)
    ('EUR', '999')
    """
    entry = CURRENCIES.get(int(currency))
    return entry[0] if entry else "%03d" % int(currency)


def _as_int(value, what: str) -> int:
    """An exact integer (numpy integers welcome); bools, floats and strings refused."""
    if isinstance(value, bool) or isinstance(value, float):
        raise InvalidReceipt(f"{what} must be an integer number of minor units, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise InvalidReceipt(f"{what} must be an integer, got {type(value).__name__} {value!r}") from None


def _format_fixed(units: int, exponent: int, grouping: bool) -> str:
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10 ** exponent)
    whole_text = f"{whole:,}" if grouping else str(whole)
    if exponent:
        return f"{sign}{whole_text}.{frac:0{exponent}d}"
    return sign + whole_text


def format_amount(minor_units: int, currency: int = 156, exponent: Optional[int] = None,
                  grouping: bool = True) -> str:
    """Format an integer amount of minor units with its currency's exponent.

    >>> format_amount(123450, 156), format_amount(-5, 840), format_amount(1250, 392)
    ('1,234.50', '-0.05', '1,250')
    >>> format_amount(1005, 414), format_amount(123450, 978, grouping=False)
    ('1.005', '1234.50')
    """
    units = _as_int(minor_units, "amount")
    if exponent is None:
        exponent = currency_exponent(currency)
    return _format_fixed(units, exponent, grouping)


# ---------------------------------------------------------------------------
# Display width (a wcwidth for receipts)
# ---------------------------------------------------------------------------

def char_width(ch: str) -> int:
    """Columns one character takes on a fixed-pitch receipt: 0, 1 or 2.

    East Asian Wide (W) and Fullwidth (F) characters take two columns;
    combining marks, format characters (zero-width joiner, variation
    selectors) and Hangul medial/final jamo take none.

    >>> char_width("a"), char_width("中"), char_width("Ａ"), char_width("\\u0301")
    (1, 2, 2, 0)
    """
    if ch < "\u0300":  # Latin fast path; C0/C1 controls are replaced before layout
        return 1
    if unicodedata.combining(ch):
        return 0
    category = unicodedata.category(ch)
    if category in ("Mn", "Me", "Cf") or "\u1160" <= ch <= "\u11ff":
        return 0
    if unicodedata.east_asian_width(ch) in ("W", "F"):
        return 2
    return 1


def display_width(text: str) -> int:
    """Columns a string takes on a fixed-pitch receipt (see :func:`char_width`).

    >>> display_width("宫保鸡丁 x2"), display_width("café"), display_width("cafe\\u0301")
    (11, 4, 4)
    """
    if text.isascii():
        return len(text)
    return sum(char_width(ch) for ch in text)


def sanitize(text: str) -> str:
    """Control characters never reach the paper: on an ESC/POS printer an ESC or GS
    inside an item name would be a command.  Tabs and newlines become spaces; text
    is NFC-normalised (a base letter and its combining accent become one character).

    >>> sanitize("Tea\\x1bE\\tx2"), sanitize("cafe\\u0301") == "caf\\u00e9"
    ('Tea E x2', True)
    """
    if text.isprintable():
        return unicodedata.normalize("NFC", text) if not text.isascii() else text
    cleaned = "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in text)
    return unicodedata.normalize("NFC", cleaned)


def wrap_text(text: str, width: int, measure: Callable[[str], int] = char_width) -> List[str]:
    """Wrap text into lines of at most ``width`` columns.

    Breaks after spaces where it can and between wide (CJK) characters, never
    inside a double-width character; a combining mark stays with its base.

    >>> wrap_text("Coca-Cola Zero Sugar 330ml can", 12)
    ['Coca-Cola', 'Zero Sugar', '330ml can']
    >>> wrap_text("北京烤鸭半只配荷叶饼", 9)
    ['北京烤鸭', '半只配荷', '叶饼']
    """
    if width < 2:
        raise ValueError(f"wrap width must be at least 2 columns, got {width}")
    text = text.strip(" ")
    if not text:
        return [""]
    lines: List[str] = []
    current: List[str] = []   # characters of the current line
    widths: List[int] = []    # their widths
    used = 0
    last_break = -1           # index in current after which a break is allowed
    for ch in text:
        w = measure(ch)
        if used + w > width and current:
            if ch == " ":
                lines.append("".join(current).rstrip(" "))
                current, widths, used, last_break = [], [], 0, -1
                continue
            if last_break >= 0:
                head, tail = current[: last_break + 1], current[last_break + 1:]
                tail_widths = widths[last_break + 1:]
            else:
                head, tail, tail_widths = current, [], []
            lines.append("".join(head).rstrip(" "))
            current, widths = tail, tail_widths
            while current and current[0] == " ":
                current.pop(0)
                widths.pop(0)
            used = sum(widths)
            last_break = -1
            for i, c in enumerate(current):
                if c == " " or widths[i] == 2:
                    last_break = i
        if not current and ch == " ":
            continue
        if w == 2 and current and last_break != len(current) - 1:
            last_break = len(current) - 1  # a break is allowed before a wide character
        current.append(ch)
        widths.append(w)
        used += w
        if ch == " " or w == 2:
            last_break = len(current) - 1
    if current or not lines:
        lines.append("".join(current).rstrip(" "))
    return lines


# ---------------------------------------------------------------------------
# Data model
# ---------------------------------------------------------------------------

_KINDS = ("sale", "refund", "void", "reversal", "preauth", "completion")
# Same numbers as posfast.Kind, so an IntEnum member or its int is accepted here
_KIND_NUMBERS = {1: "sale", 2: "refund", 3: "void", 4: "reversal", 5: "preauth", 6: "completion"}
_METHODS = ("cash", "card", "qr", "wallet", "voucher", "other")
_METHOD_NUMBERS = {1: "cash", 2: "card", 3: "qr", 4: "wallet", 5: "voucher", 6: "other"}


def _as_name(value, table_numbers, names, what):
    if isinstance(value, int) and not isinstance(value, bool):
        name = table_numbers.get(int(value))
    elif isinstance(value, str):
        name = value.strip().lower()
        name = {"pre_auth": "preauth", "pre-auth": "preauth"}.get(name, name)
    else:
        name = None
    if name not in names:
        raise InvalidReceipt(f"{what} must be one of {', '.join(names)}, got {value!r}")
    return name


def _as_text(value, what: str, limit: int = 200, reference: bool = False) -> str:
    """Receipt text, checked.  Printed text (names, labels, header and footer lines) must
    not hold a whole card number; `reference` fields (merchant id, auth code, RRN) are
    opaque identifiers and are not scanned."""
    if not isinstance(value, str):
        raise InvalidReceipt(f"{what} must be a str, got {type(value).__name__} {value!r}")
    if len(value) > limit:
        raise InvalidReceipt(f"{what} is {len(value)} characters long; at most {limit} fit a receipt")
    if not reference and len(value) >= 13:
        found = find_card_number(value)
        if found:
            raise InvalidReceipt(f"{what} {value!r} holds {found}: a receipt never shows a whole card "
                                 f"number; keep only its last four digits (pan_last4)")
    return value


def _as_lines(value, what: str) -> Tuple[str, ...]:
    if isinstance(value, str):
        value = (value,) if value else ()
    return tuple(_as_text(v, f"{what} line") for v in value)


def _set(obj, name, value):
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class ReceiptItem:
    """One line item: name, quantity, unit price and line amount (minor units).

    ``qty`` is an integer scaled by ``qty_exp`` decimal places, so 0.535 kg is
    ``qty=535, qty_exp=3, unit="kg"``.  ``amount`` defaults to qty x unit price
    (rounded half away from zero to the minor unit); pass it explicitly for a
    discounted line.

    Tax: ``tax_key`` names the rate on the receipt ("A", "B"...), ``tax_rate`` is
    in hundredths of a percent (1300 = 13 %); the line amount is the gross, and
    ``tax`` defaults to the tax it includes (gross x rate / (100 % + rate),
    rounded half away from zero), ``net`` to gross less tax.

    >>> ReceiptItem("Cola", qty=3, unit_price=350).amount
    1050
    >>> ReceiptItem("猪肉", qty=535, qty_exp=3, unit="kg", unit_price=2680).amount
    1434
    >>> item = ReceiptItem("宫保鸡丁", unit_price=3800, tax_key="A", tax_rate=600)
    >>> item.net, item.tax, item.gross
    (3585, 215, 3800)
    """

    name: str
    qty: int = 1
    unit_price: int = 0
    amount: Optional[int] = None
    qty_exp: int = 0
    unit: str = ""
    tax_key: str = ""
    tax_rate: Optional[int] = None
    net: Optional[int] = None
    tax: Optional[int] = None

    def __post_init__(self):
        _set(self, "name", _as_text(self.name, "item name"))
        _set(self, "unit", _as_text(self.unit, "item unit", 8))
        qty = _as_int(self.qty, f"quantity of item {self.name!r}")
        qty_exp = _as_int(self.qty_exp, f"qty_exp of item {self.name!r}")
        if not 0 <= qty_exp <= 4:
            raise InvalidReceipt(f"qty_exp of item {self.name!r} must be 0..4, got {qty_exp}")
        price = _as_int(self.unit_price, f"unit_price of item {self.name!r}")
        _set(self, "qty", qty)
        _set(self, "qty_exp", qty_exp)
        _set(self, "unit_price", price)
        if self.amount is None:
            product, scale = qty * price, 10 ** qty_exp
            rounded = (abs(product) * 2 + scale) // (2 * scale)
            _set(self, "amount", -rounded if product < 0 else rounded)
        else:
            _set(self, "amount", _as_int(self.amount, f"amount of item {self.name!r}"))
        for what, v in (("amount", self.amount), ("unit_price", price), ("quantity", qty)):
            if not -(2 ** 63) < v < 2 ** 63:
                raise InvalidReceipt(f"{what} of item {self.name!r} is out of the 64-bit range: {v}")
        self._check_tax()

    def _check_tax(self):
        _set(self, "tax_key", _as_text(self.tax_key, f"tax key of item {self.name!r}", 4))
        if self.tax_rate is None:
            if self.tax_key or self.net is not None or self.tax is not None:
                raise InvalidReceipt(f"item {self.name!r} has tax fields but no tax_rate (hundredths of "
                                     f"a percent: 1300 for 13 %)")
            return
        if isinstance(self.tax_rate, float):
            raise InvalidReceipt(f"tax_rate of item {self.name!r} is an integer of hundredths of a percent "
                                 f"(1300 = 13 %), got {self.tax_rate!r}")
        rate = _as_int(self.tax_rate, f"tax_rate of item {self.name!r}")
        if not 0 <= rate <= 10000:
            raise InvalidReceipt(f"tax_rate of item {self.name!r} is hundredths of a percent, 0..10000 "
                                 f"(1300 = 13 %), got {rate}")
        _set(self, "tax_rate", rate)
        gross = self.gross
        if self.tax is None:
            scale = 10000 + rate
            tax = (abs(gross) * rate * 2 + scale) // (2 * scale)
            _set(self, "tax", -tax if gross < 0 else tax)
        _set(self, "tax", _as_int(self.tax, f"tax of item {self.name!r}"))
        if self.net is None:
            _set(self, "net", gross - self.tax)
        _set(self, "net", _as_int(self.net, f"net of item {self.name!r}"))
        if self.net + self.tax != gross:
            raise InvalidReceipt(f"item {self.name!r}: net {self.net} + tax {self.tax} is not its amount "
                                 f"{gross} (the gross, minor units)")

    @property
    def gross(self) -> int:
        """The line amount, tax included."""
        return self.amount or 0


@dataclass(frozen=True)
class Payment:
    """One tender: method, amount (minor units) and the card/QR details to print.

    ``method`` is cash, card, qr, wallet, voucher or other (or a posfast
    ``Method``); ``label`` overrides the printed name ("支付宝", "Visa").  Only
    the last four digits of a card number may be stored.

    >>> Payment("card", 4850, pan_last4="1234", auth_code="A1B2C3").method
    'card'
    """

    method: str
    amount: int
    label: str = ""
    pan_last4: str = ""
    auth_code: str = ""
    rrn: str = ""

    def __post_init__(self):
        _set(self, "method", _as_name(self.method, _METHOD_NUMBERS, _METHODS, "payment method"))
        _set(self, "amount", _as_int(self.amount, f"amount of the {self.method} payment"))
        for name, limit in (("label", 40), ("pan_last4", 4), ("auth_code", 6), ("rrn", 12)):
            value = getattr(self, name)
            if isinstance(value, bytes):
                value = value.decode("ascii", "replace")
            if name == "pan_last4" and isinstance(value, str) and len(value) > 4:
                raise InvalidReceipt(
                    "pan_last4 takes at most the last four digits of the card number, got "
                    f"{len(value)} characters: never store a whole card number")
            _set(self, name, _as_text(value, f"payment {name}", limit, reference=name != "label"))


def _as_item(value) -> ReceiptItem:
    if isinstance(value, ReceiptItem):
        return value
    if isinstance(value, dict):
        return ReceiptItem(**value)
    raise InvalidReceipt(f"an item must be a ReceiptItem or a dict of its fields, got {value!r}")


def _as_payment(value) -> Payment:
    if isinstance(value, Payment):
        return value
    if isinstance(value, dict):
        return Payment(**value)
    raise InvalidReceipt(f"a payment must be a Payment or a dict of its fields, got {value!r}")


def _as_issued_at(value) -> str:
    if isinstance(value, _dt.datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, str):
        if value == "":
            return value
        try:
            _dt.datetime.fromisoformat(value)
        except ValueError:
            raise InvalidReceipt(
                f"issued_at must be ISO 8601 like '2026-11-20T13:45:12+08:00', got {value!r}") from None
        return value
    raise InvalidReceipt(f"issued_at must be a datetime or an ISO 8601 string, got {value!r}")


@dataclass(frozen=True)
class Receipt:
    """Everything printed on a payment receipt, stored in the payment's payload.

    ``total`` must equal the sum of the item amounts plus the adjustments
    (discounts negative, surcharges positive, each a ``(label, amount)``), and,
    when payments are given, the payments less ``change``.

    >>> r = Receipt(merchant="Café Zürich", currency=978, receipt_no=7,
    ...             items=[ReceiptItem("Espresso", qty=2, unit_price=250)],
    ...             adjustments=[("Rabatt", -50)], total=450,
    ...             payments=[Payment("cash", 500)], change=50, lang="en")
    >>> r.subtotal, r.receipt_code
    (500, '000007')
    """

    merchant: str
    items: Sequence[ReceiptItem] = ()
    total: Optional[int] = None
    currency: int = 156
    exponent: Optional[int] = None
    kind: str = "sale"
    receipt_no: int = 0
    terminal: int = 0
    operator: int = 0
    merchant_id: str = ""
    issued_at: str = ""
    header: Sequence[str] = ()
    adjustments: Sequence[Tuple[str, int]] = ()
    payments: Sequence[Payment] = ()
    change: int = 0
    footer: Sequence[str] = ()
    lang: str = "zh"

    def __post_init__(self):
        _set(self, "merchant", _as_text(self.merchant, "merchant"))
        _set(self, "header", _as_lines(self.header, "header"))
        _set(self, "footer", _as_lines(self.footer, "footer"))
        _set(self, "merchant_id", _as_text(self.merchant_id, "merchant_id", 32, reference=True))
        _set(self, "kind", _as_name(self.kind, _KIND_NUMBERS, _KINDS, "receipt kind"))
        if self.lang not in LANGUAGES:
            raise InvalidReceipt(f"lang must be one of {', '.join(sorted(LANGUAGES))} (add one with "
                                 f"posfast.receipt.register_language), got {self.lang!r}")
        for name in ("receipt_no", "terminal", "operator"):
            value = _as_int(getattr(self, name), name)
            if not 0 <= value < 2 ** 32:
                raise InvalidReceipt(f"{name} must fit the journal's u32 field, got {value}")
            _set(self, name, value)
        currency = _as_int(self.currency, "currency")
        if not 0 < currency < 1000:
            raise InvalidReceipt(f"currency must be an ISO 4217 numeric code (e.g. 156 for CNY), got {currency}")
        _set(self, "currency", currency)
        if self.exponent is None:
            currency_exponent(currency)  # unknown code: clear error now, not at print time
        else:
            exponent = _as_int(self.exponent, "exponent")
            if not 0 <= exponent <= 4:
                raise InvalidReceipt(f"exponent must be 0..4, got {exponent}")
            _set(self, "exponent", exponent)
        _set(self, "issued_at", _as_issued_at(self.issued_at))
        _set(self, "items", tuple(_as_item(i) for i in self.items))
        adjustments = []
        for adj in self.adjustments:
            if not isinstance(adj, (tuple, list)) or len(adj) != 2:
                raise InvalidReceipt(f"an adjustment is a (label, amount) pair, got {adj!r}")
            label = _as_text(adj[0], "adjustment label", 40)
            adjustments.append((label, _as_int(adj[1], f"adjustment {label!r}")))
        _set(self, "adjustments", tuple(adjustments))
        _set(self, "payments", tuple(_as_payment(p) for p in self.payments))
        _set(self, "change", _as_int(self.change, "change"))
        expected = self.subtotal + sum(a for _, a in self.adjustments)
        if self.total is None:
            _set(self, "total", expected)
        else:
            _set(self, "total", _as_int(self.total, "total"))
            if self.total != expected:
                raise InvalidReceipt(
                    f"total {self.total} does not add up: items {self.subtotal} + adjustments "
                    f"{expected - self.subtotal} = {expected} (minor units); fix the items or "
                    f"add the missing discount/rounding as an adjustment")
        if self.payments:
            tendered = sum(p.amount for p in self.payments)
            if tendered - self.change != self.total:
                raise InvalidReceipt(
                    f"payments {tendered} less change {self.change} = {tendered - self.change} "
                    f"does not match the total {self.total} (minor units)")
        elif self.change:
            raise InvalidReceipt(f"change {self.change} given without any payment")

    # -- derived values ----------------------------------------------------
    @property
    def subtotal(self) -> int:
        """Sum of the item amounts, in minor units."""
        return sum(item.amount or 0 for item in self.items)   # (set by __post_init__)

    def tax_summary(self) -> List[Tuple[str, int, int, int, int]]:
        """``(tax_key, tax_rate, net, tax, gross)`` per rate of the taxed items, by key then
        rate (minor units; the rate in hundredths of a percent).

        >>> Receipt(merchant="M", items=[ReceiptItem("a", unit_price=1060, tax_key="A", tax_rate=600),
        ...                              ReceiptItem("b", unit_price=530, tax_key="A", tax_rate=600),
        ...                              ReceiptItem("c", unit_price=1130, tax_key="B", tax_rate=1300)]
        ...         ).tax_summary()
        [('A', 600, 1500, 90, 1590), ('B', 1300, 1000, 130, 1130)]
        """
        sums: dict = {}
        for item in self.items:
            if item.tax_rate is None:
                continue
            key = (item.tax_key, item.tax_rate)
            net, tax, gross = sums.get(key, (0, 0, 0))
            sums[key] = (net + (item.net or 0), tax + (item.tax or 0), gross + item.gross)
        return [(key, rate, net, tax, gross) for (key, rate), (net, tax, gross) in sorted(sums.items())]

    @property
    def minor_exponent(self) -> int:
        """Digits after the decimal point for this receipt's currency."""
        return self.exponent if self.exponent is not None else currency_exponent(self.currency)

    @property
    def receipt_code(self) -> str:
        """The receipt number as printed and put in the QR code: ``"3-000123"``
        (terminal, dash, six-digit receipt number), or just the number without
        a terminal."""
        if self.terminal:
            return f"{self.terminal}-{self.receipt_no:06d}"
        return f"{self.receipt_no:06d}"

    def amount_text(self, minor_units: int) -> str:
        """``minor_units`` formatted in this receipt's currency (no symbol)."""
        return _format_fixed(minor_units, self.minor_exponent, True)

    # -- payload -----------------------------------------------------------
    def to_payload(self) -> bytes:
        """Compact, stable encoding for the payment record's payload.

        UTF-8 JSON, sorted keys, no whitespace, default values left out; the
        same receipt always gives the same bytes, and
        ``Receipt.from_payload(r.to_payload()) == r``.

        >>> Receipt(merchant="M", items=[ReceiptItem("x", unit_price=5)]).to_payload()
        b'{"it":[{"a":5,"n":"x","p":5}],"m":"M","tot":5,"v":1}'
        """
        doc = {"v": PAYLOAD_VERSION, "m": self.merchant, "tot": self.total}
        optional: Tuple[Tuple[str, Any, Any], ...] = (
            ("h", list(self.header), []), ("f", list(self.footer), []),
            ("mid", self.merchant_id, ""), ("k", self.kind, "sale"), ("no", self.receipt_no, 0),
            ("t", self.terminal, 0), ("op", self.operator, 0), ("at", self.issued_at, ""),
            ("cur", self.currency, 156), ("exp", self.exponent, None), ("chg", self.change, 0),
            ("lang", self.lang, "zh"),
            ("adj", [[label, amount] for label, amount in self.adjustments], []),
        )
        for key, value, default in optional:
            if value != default:
                doc[key] = value
        items = []
        for item in self.items:
            entry = {"n": item.name, "p": item.unit_price, "a": item.amount}
            if item.qty != 1:
                entry["q"] = item.qty
            if item.qty_exp:
                entry["qe"] = item.qty_exp
            if item.unit:
                entry["u"] = item.unit
            if item.tax_rate is not None:
                entry.update(tr=item.tax_rate, tn=item.net, tt=item.tax)
                if item.tax_key:
                    entry["tk"] = item.tax_key
            items.append(entry)
        if items:
            doc["it"] = items
        payments = []
        for p in self.payments:
            entry = {"m": p.method, "a": p.amount}
            for key, value in (("l", p.label), ("c", p.pan_last4), ("ac", p.auth_code), ("rrn", p.rrn)):
                if value:
                    entry[key] = value
            payments.append(entry)
        if payments:
            doc["pay"] = payments
        return json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_payload(cls, payload: bytes) -> "Receipt":
        """Decode a payload written by :meth:`to_payload`.

        Raises :class:`InvalidReceipt` naming the problem when the bytes are
        not a posfast receipt (empty payload, other JSON, newer version).

        >>> Receipt.from_payload(b'{"m":"M","tot":0,"v":1}').merchant
        'M'
        """
        if not payload:
            raise InvalidReceipt("the payload is empty: this record carries no receipt "
                                 "(store Receipt.to_payload() in the payment record's payload)")

        def no_float(text):
            raise InvalidReceipt(f"receipt payload holds a non-integer amount {text}: amounts are minor units")

        try:
            doc = json.loads(bytes(payload).decode("utf-8"), parse_float=no_float,
                             parse_constant=no_float)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidReceipt(f"payload is not a posfast receipt (not UTF-8 JSON: {exc})") from None
        if not isinstance(doc, dict) or "v" not in doc or "m" not in doc:
            raise InvalidReceipt("payload is not a posfast receipt (JSON without the 'v' and 'm' keys)")
        if doc["v"] != PAYLOAD_VERSION:
            raise InvalidReceipt(f"receipt payload version {doc['v']!r} is not {PAYLOAD_VERSION}: "
                                 f"it was written by another posfast version; upgrade posfast to read it")
        known = {"v", "m", "tot", "h", "f", "mid", "k", "no", "t", "op", "at", "cur", "exp",
                 "chg", "lang", "adj", "it", "pay"}
        unknown = set(doc) - known
        if unknown:
            raise InvalidReceipt(f"receipt payload has unknown keys {sorted(unknown)}")
        try:
            items = [ReceiptItem(name=i["n"], qty=i.get("q", 1), unit_price=i["p"], amount=i["a"],
                                 qty_exp=i.get("qe", 0), unit=i.get("u", ""), tax_key=i.get("tk", ""),
                                 tax_rate=i.get("tr"), net=i.get("tn"), tax=i.get("tt"))
                     for i in doc.get("it", [])]
            payments = [Payment(method=p["m"], amount=p["a"], label=p.get("l", ""),
                                pan_last4=p.get("c", ""), auth_code=p.get("ac", ""), rrn=p.get("rrn", ""))
                        for p in doc.get("pay", [])]
            lang = doc.get("lang", "zh")
            receipt = cls(
                merchant=doc["m"], items=items, total=doc["tot"], currency=doc.get("cur", 156),
                exponent=doc.get("exp"), kind=doc.get("k", "sale"), receipt_no=doc.get("no", 0),
                terminal=doc.get("t", 0), operator=doc.get("op", 0), merchant_id=doc.get("mid", ""),
                issued_at=doc.get("at", ""), header=doc.get("h", []),
                adjustments=[tuple(a) for a in doc.get("adj", [])], payments=payments,
                change=doc.get("chg", 0), footer=doc.get("f", []),
                lang=lang if lang in LANGUAGES else "en")
            if lang != receipt.lang and isinstance(lang, str):
                # a language registered in the process that stored it, not in this one: kept,
                # and its labels print in English here
                _set(receipt, "lang", lang)
            return receipt
        except (KeyError, TypeError, AttributeError) as exc:
            raise InvalidReceipt(f"receipt payload is malformed ({type(exc).__name__}: {exc})") from None


# ---------------------------------------------------------------------------
# Layout (shared by render_text, posfast.printing's ESC/POS renderer and Z-report)
# ---------------------------------------------------------------------------

LEFT, CENTER, RIGHT = 0, 1, 2


@dataclass
class Line:
    """One laid-out line: text plus the style an ESC/POS printer applies to it.

    ``wide`` and ``tall`` are double width / double height: a wide line was
    laid out for half the columns.  ``code`` marks a QR/barcode slot whose data
    is ``text`` (text rendering prints nothing for it).
    """

    text: str
    align: int = LEFT
    bold: bool = False
    wide: bool = False
    tall: bool = False
    code: bool = False


#: Receipt languages: label key -> text.  ``Receipt(lang=...)`` picks one; a label the
#: printer's font cannot print falls back to English.  Add one with :func:`register_language`.
LANGUAGES: Dict[str, Dict[str, str]] = {
    "en": {
        "sale": "SALE", "refund": "REFUND", "void": "VOID", "reversal": "REVERSAL",
        "preauth": "PRE-AUTH", "completion": "AUTH COMPLETION", "merchant_id": "Merchant ID",
        "terminal": "Terminal", "receipt_no": "Receipt No", "operator": "Operator", "date": "Date",
        "subtotal": "Subtotal", "total": "TOTAL", "change": "Change", "auth": "Auth code",
        "rrn": "Ref no", "reprinted": "Reprinted", "cash": "Cash", "card": "Card", "qr": "QR pay",
        "wallet": "Wallet", "voucher": "Voucher", "other": "Other", "tax_rate": "Rate", "net": "Net",
        "tax": "Tax", "gross": "Gross",
    },
    "zh": {
        "sale": "消费", "refund": "退货", "void": "撤销", "reversal": "冲正", "preauth": "预授权",
        "completion": "预授权完成", "merchant_id": "商户号", "terminal": "终端号", "receipt_no": "票据号",
        "operator": "操作员", "date": "日期", "subtotal": "小计", "total": "合计", "change": "找零",
        "auth": "授权码", "rrn": "参考号", "reprinted": "重印时间", "cash": "现金", "card": "银行卡",
        "qr": "扫码支付", "wallet": "钱包", "voucher": "券", "other": "其他", "tax_rate": "税率",
        "net": "不含税", "tax": "税额", "gross": "含税",
    },
    # the example of a third language: French (Morocco's MAD, the franc zone's XOF/XAF)
    "fr": {
        "sale": "VENTE", "refund": "REMBOURSEMENT", "void": "ANNULATION", "reversal": "EXTOURNE",
        "preauth": "PRÉ-AUTORISATION", "completion": "CLÔTURE PRÉ-AUTORISATION",
        "merchant_id": "N° commerçant", "terminal": "Terminal", "receipt_no": "N° ticket",
        "operator": "Caissier", "date": "Date", "subtotal": "Sous-total", "total": "TOTAL",
        "change": "Rendu", "auth": "N° autorisation", "rrn": "Référence", "reprinted": "Réimprimé le",
        "cash": "Espèces", "card": "Carte", "qr": "Paiement QR", "wallet": "Portefeuille",
        "voucher": "Bon d'achat", "other": "Autre", "tax_rate": "TVA", "net": "HT", "tax": "TVA",
        "gross": "TTC",
    },
}


def register_language(code: str, labels: Dict[str, str], base: str = "en") -> None:
    """Add (or replace) a receipt language: ``labels`` for the keys of
    ``LANGUAGES["en"]``; the keys it leaves out come from ``base``.

    >>> register_language("de", {"total": "SUMME", "cash": "Bar", "change": "Rückgeld"})
    >>> LANGUAGES["de"]["total"], LANGUAGES["de"]["card"]
    ('SUMME', 'Card')
    """
    if not isinstance(code, str) or not code.strip():
        raise ValueError(f"a language code is a non-empty str such as 'de', got {code!r}")
    unknown = set(labels) - set(LANGUAGES["en"])
    if unknown:
        raise ValueError(f"unknown receipt label keys {sorted(unknown)}: the keys are "
                         f"{', '.join(sorted(LANGUAGES['en']))}")
    LANGUAGES[code] = dict(LANGUAGES[base], **labels)


def format_rate(rate: int) -> str:
    """A tax rate in hundredths of a percent as printed: ``"13%"``, ``"5.5%"``.

    >>> format_rate(1300), format_rate(550), format_rate(0)
    ('13%', '5.5%', '0%')
    """
    whole, frac = divmod(int(rate), 100)
    return f"{whole}%" if not frac else f"{whole}.{frac:02d}".rstrip("0") + "%"


def _format_time(value) -> str:
    if isinstance(value, _dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (int,)) and not isinstance(value, bool):  # microseconds since epoch, UTC
        from posfast.records import format_ts
        return format_ts(value, fmt="%Y-%m-%d %H:%M:%S")   # "impossible time (ts=N)" if none
    if isinstance(value, str):
        try:
            return _dt.datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            return value
    raise TypeError(f"a time must be a datetime, an ISO 8601 string or microseconds, got {value!r}")


def check_width(width) -> int:
    """A paper width in columns, checked: an int of 16..160 (32, 42 or 48 on real paper).

    >>> check_width(32)
    32
    """
    width = operator.index(width)
    if not _MIN_WIDTH <= width <= _MAX_WIDTH:
        raise ValueError(f"paper width must be {_MIN_WIDTH}..{_MAX_WIDTH} columns "
                         f"(32 for 58 mm paper, 42 or 48 for 80 mm), got {width}")
    return width


class Layout:
    """Builds a list of :class:`Line` for one target (a paper width and a printer's
    character set): the receipt and the Z-report are both laid out with it.

    ``measure`` gives a character's columns on the target, ``prepare`` maps text
    to what the target can print, ``chinese`` says whether Chinese labels can be
    printed, ``double_title`` lays titles out for double-size print.

    >>> out = Layout(20, char_width, sanitize, chinese=True, double_title=False)
    >>> out.add(out.marker("TOTAL", "合计", True), CENTER); out.rule(); out.pair("Tea", "12.00")
    >>> [line.text for line in out.lines]
    ['合计 / TOTAL', '--------------------', 'Tea            12.00']
    """

    def __init__(self, width: int, measure: Callable[[str], int], prepare: Callable[[str], str],
                 chinese: bool, double_title: bool, printable: Optional[Callable[[str], str]] = None):
        self.width = width
        self.char_width = measure
        self.prepare = prepare
        #: text as the target prints it, without side effects (label fallback checks)
        self.printable = printable or prepare
        self.chinese = chinese
        self.double_title = double_title
        self.lines: List[Line] = []

    def measure(self, text: str) -> int:
        if text.isascii():
            return len(text)
        return sum(self.char_width(ch) for ch in text)

    def label(self, key: str, lang: str) -> str:
        """A receipt label (``"total"``, ``"cash"``...) in ``lang`` where the target can
        print it (Chinese needs a Chinese font; any label the target would print with
        '?' falls back to English)."""
        english = LANGUAGES["en"][key]
        text = LANGUAGES.get(lang, LANGUAGES["en"]).get(key, english)
        if text == english or (lang == "zh" and not self.chinese):
            return english
        return text if "?" in text or "?" not in self.printable(text) else english

    def marker(self, english: str, chinese: str, order_chinese_first: bool) -> str:
        """A bilingual marker (``重印 / COPY 1``), English only where Chinese cannot print."""
        if not self.chinese:
            return english
        return f"{chinese} / {english}" if order_chinese_first else f"{english} / {chinese}"

    def add(self, text: str, align=LEFT, bold=False, wide=False, tall=False):
        """Text wrapped to the width (half of it for a ``wide`` line)."""
        text = self.prepare(text)
        columns = self.width // 2 if wide else self.width
        for piece in wrap_text(text, columns, self.char_width):
            self.lines.append(Line(piece, align, bold, wide, tall))

    def rule(self, ch="-"):
        """A full-width rule."""
        self.lines.append(Line(ch * self.width))

    def pair(self, label: str, value: str, indent: int = 0, bold=False, tall=False):
        """Label on the left, value right-aligned; wraps the label, and moves
        the value to its own line when both do not fit."""
        label, value = self.prepare(label), self.prepare(value)
        pad = " " * indent
        value_width = self.measure(value)
        if value_width > self.width:
            for piece in wrap_text(pad + label, self.width, self.char_width):
                self.lines.append(Line(piece, LEFT, bold, False, tall))
            for piece in wrap_text(value, self.width, self.char_width):
                self.lines.append(Line(piece, RIGHT, bold, False, tall))
            return
        label_lines = wrap_text(label, self.width - indent, self.char_width) if label else [""]
        label_lines = [pad + piece if piece else piece for piece in label_lines]
        for piece in label_lines[:-1]:
            self.lines.append(Line(piece, LEFT, bold, False, tall))
        last = label_lines[-1]
        gap = self.width - self.measure(last) - value_width
        if last and gap < 1:
            self.lines.append(Line(last, LEFT, bold, False, tall))
            last, gap = "", self.width - value_width
        self.lines.append(Line(last + " " * gap + value, LEFT, bold, False, tall))

    def tax_table(self, rows, amount: Callable[[int], str], lang: str, indent: int = 0):
        """Tax per rate: a header, then ``key rate`` with net and tax right-aligned in
        columns, for rows of ``(key, rate, net, tax, gross)``."""
        if not rows:
            return
        cells = [(f"{key} {format_rate(rate)}".strip(), amount(net), amount(tax)) for key, rate, net, tax, _ in rows]
        head = (self.label("tax_rate", lang), self.label("net", lang), self.label("tax", lang))
        net_w = max(self.measure(self.prepare(c[1])) for c in cells + [head])
        tax_w = max(self.measure(self.prepare(c[2])) for c in cells + [head])

        def right(text, width):
            return " " * (width - self.measure(self.prepare(text))) + text
        self.rule()
        for label, net, tax in [head] + cells:
            self.pair(label, right(net, net_w) + " " + right(tax, tax_w), indent=indent)

    def build(self, receipt: Receipt, copy: int, reprinted_at, training: bool) -> List[Line]:
        """Lay out one receipt (see :func:`layout`); returns :attr:`lines`."""
        lang = receipt.lang
        amount = receipt.amount_text
        title_wide = self.double_title
        self.add(receipt.merchant, CENTER, bold=True, wide=title_wide, tall=title_wide)
        for text in receipt.header:
            self.add(text, CENTER)
        if training:
            self.add(self.marker("TRAINING", "培训", False), CENTER, bold=True)
        if copy:
            self.add(self.marker(f"COPY {copy}", "重印", True), CENTER, bold=True)
            if reprinted_at is not None:
                self.pair(self.label("reprinted", lang), _format_time(reprinted_at))
        self.rule("=")
        self.add(self.label(receipt.kind, lang), LEFT, bold=True)
        if receipt.merchant_id:
            self.pair(self.label("merchant_id", lang), receipt.merchant_id)
        if receipt.terminal:
            self.pair(self.label("terminal", lang), str(receipt.terminal))
        self.pair(self.label("receipt_no", lang), receipt.receipt_code)
        if receipt.operator:
            self.pair(self.label("operator", lang), str(receipt.operator))
        if receipt.issued_at:
            self.pair(self.label("date", lang), _format_time(receipt.issued_at))
        self.rule()
        keyed = any(item.tax_key for item in receipt.items)
        for item in receipt.items:
            simple = item.qty == 1 and item.qty_exp == 0 and not item.unit
            line_amount = amount(item.amount or 0)
            if keyed:   # the rate key after each amount, as the tax summary names it
                line_amount += " " + (item.tax_key or "-")   # "-": no tax rate
            if simple:
                self.pair(item.name, line_amount)
            else:
                self.add(item.name)
                qty = _format_fixed(item.qty, item.qty_exp, False) + item.unit
                self.pair(f"{qty} x {amount(item.unit_price)}", line_amount, indent=2)
        self.rule()
        if receipt.adjustments:
            self.pair(self.label("subtotal", lang), amount(receipt.subtotal))
            for label, value in receipt.adjustments:
                self.pair(label, amount(value))
        total_label = f"{self.label('total', lang)} {currency_alpha(receipt.currency)}"
        self.pair(total_label, amount(receipt.total or 0), bold=True, tall=self.double_title)
        self.tax_table(receipt.tax_summary(), amount, lang)
        if receipt.payments:
            self.rule()
            for p in receipt.payments:
                name = p.label or self.label(p.method, lang)
                if p.pan_last4:
                    name = f"{name} **** {p.pan_last4}"
                self.pair(name, amount(p.amount))
                if p.auth_code:
                    self.pair(self.label("auth", lang), p.auth_code, indent=2)
                if p.rrn:
                    self.pair(self.label("rrn", lang), p.rrn, indent=2)
            if receipt.change:
                self.pair(self.label("change", lang), amount(receipt.change))
        if receipt.footer:
            self.rule()
            for text in receipt.footer:
                self.add(text, CENTER)
        self.lines.append(Line(receipt.receipt_code, CENTER, code=True))
        if copy:
            self.add(self.marker(f"COPY {copy}", "重印", True), CENTER, bold=True)
        if training:
            self.add(self.marker("TRAINING", "培训", False), CENTER, bold=True)
        return self.lines


def layout(receipt: Receipt, width: int = 42, copy: int = 0, reprinted_at=None, training: bool = False,
           measure: Callable[[str], int] = char_width, prepare: Callable[[str], str] = sanitize,
           chinese: bool = True, double_title: bool = False,
           printable: Optional[Callable[[str], str]] = None) -> List[Line]:
    """Lay a receipt out as styled :class:`Line` objects (used by both renderers).

    ``measure`` gives a character's columns on the target, ``prepare`` maps
    text to what the target can print, ``chinese`` says whether Chinese labels
    can be printed, ``double_title`` lays the title out for double-size print;
    ``printable`` is ``prepare`` without side effects (to choose labels).

    >>> [l.text for l in layout(Receipt(merchant="M"), width=16)][:2]
    ['M', '================']
    """
    width = check_width(width)
    copy = operator.index(copy)
    if copy < 0:
        raise ValueError(f"copy must be 0 (the original) or a copy number >= 1, got {copy}")
    if not isinstance(receipt, Receipt):
        raise TypeError(f"expected a posfast.receipt.Receipt, got {type(receipt).__name__}")
    return Layout(width, measure, prepare, chinese, double_title, printable).build(
        receipt, copy, reprinted_at, training)


def render_text(receipt: Receipt, width: int = 42, copy: int = 0, reprinted_at=None,
                training: bool = False) -> str:
    """Render a receipt as plain text lines of at most ``width`` display columns.

    ``copy`` >= 1 marks a reprint (``重印 / COPY n``, plus ``reprinted_at``, a
    datetime, ISO string or microseconds since the epoch); ``training`` marks a
    training-mode slip (``TRAINING / 培训``).  The result ends with a newline.

    >>> r = Receipt(merchant="Shop", receipt_no=42, lang="en",
    ...             items=[ReceiptItem("Tea", unit_price=1200)])
    >>> print(render_text(r, width=20, copy=2, reprinted_at="2026-11-23T09:00:00"), end="")
            Shop
       重印 / COPY 2
    Reprinted
     2026-11-23 09:00:00
    ====================
    SALE
    Receipt No    000042
    --------------------
    Tea            12.00
    --------------------
    TOTAL CNY      12.00
       重印 / COPY 2
    """
    width = check_width(width)
    return lines_to_text(layout(receipt, width, copy, reprinted_at, training), width)


def lines_to_text(lines: Sequence[Line], width: int) -> str:
    """Laid-out lines as plain text: centred and right-aligned lines padded to
    ``width`` columns, trailing spaces dropped, code slots left out; ends with a newline.

    >>> print(lines_to_text([Line("Shop", CENTER), Line("QR", code=True), Line("12.00", RIGHT)], 10), end="")
       Shop
         12.00
    """
    out = []
    for line in lines:
        if line.code:
            continue
        text = line.text
        if line.align != LEFT and text:
            free = width - display_width(text)
            text = " " * (free // 2 if line.align == CENTER else free) + text
        out.append(text.rstrip(" "))
    return "\n".join(out) + "\n"
