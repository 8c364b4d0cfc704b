"""Record model: enums, the RECORD_DTYPE row layout, the business-day rule and
the validation that turns user input into rows (one place, used by append and
append_many alike)."""
from __future__ import annotations

import datetime as _dt
import enum
import re
from operator import index as operator_index
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Dict, Iterable, Optional, Tuple, TypeVar, Union

import numpy as np

from .errors import InvalidRecord


# What the API accepts as a time (None = now) and as a business day.
TimeLike = Union[_dt.datetime, _dt.date, int, np.integer, None]
DayLike = Union[_dt.date, str, int, np.integer]
PayloadLike = Union[bytes, bytearray, memoryview, None]
_Enum = TypeVar("_Enum", bound="_NamedEnum")


class _NamedEnum(enum.IntEnum):
    @classmethod
    def coerce(cls: type[_Enum], value: Any, field: Optional[str] = None) -> _Enum:
        """Accept the enum, its int value or its name (any case): ``Kind.coerce("sale")``."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls[value.strip().upper().replace("-", "_")]
            except KeyError:
                pass
        elif isinstance(value, (bool, np.bool_, float, np.floating)):
            raise InvalidRecord("posfast: %s=%r is not a %s: give its name or its integer value, "
                                "never a %s; use one of %s"
                                % (field or cls.__name__.lower(), value, cls.__name__,
                                   type(value).__name__,
                                   ", ".join(m.name.lower() for m in cls)))
        else:
            try:
                return cls(operator_index(value))
            except (ValueError, TypeError):
                pass
        raise InvalidRecord("posfast: %s=%r is not a %s; use one of %s"
                            % (field or cls.__name__.lower(), value, cls.__name__,
                               ", ".join(m.name.lower() for m in cls)))


class Kind(_NamedEnum):
    """What a record is: a payment kind, a print, a day close."""
    SALE = 1
    REFUND = 2
    VOID = 3
    REVERSAL = 4
    PREAUTH = 5
    COMPLETION = 6
    PRINT = 7
    DAY_CLOSE = 8
    CASH_IN = 9
    CASH_OUT = 10
    NOTE = 11


#: The kinds that are payments (one home: every module takes them from here)
PAYMENT_KINDS = frozenset({Kind.SALE, Kind.REFUND, Kind.VOID, Kind.REVERSAL, Kind.PREAUTH,
                           Kind.COMPLETION, Kind.CASH_IN, Kind.CASH_OUT})
#: payments a customer gets a receipt for (not the cash drawer's CASH_IN / CASH_OUT)
RECEIPT_KINDS = PAYMENT_KINDS - {Kind.CASH_IN, Kind.CASH_OUT}
#: the payment kinds as a sorted uint8 array (for np.isin on a kind column)
PAYMENT_KIND_VALUES = np.array(sorted(int(k) for k in PAYMENT_KINDS), dtype=np.uint8)
#: the same as a table by kind value (``IS_PAYMENT_KIND[rows["kind"]]``: no np.isin per append)
IS_PAYMENT_KIND = np.zeros(256, dtype=bool)
IS_PAYMENT_KIND[PAYMENT_KIND_VALUES] = True


class State(_NamedEnum):
    """State of a payment, or outcome of a print (OK / FAILED / UNKNOWN)."""
    NONE = 0
    PENDING = 1
    APPROVED = 2
    DECLINED = 3
    REVERSED = 4
    VOIDED = 5
    FAILED = 6
    OK = 7
    UNKNOWN = 8


class Method(_NamedEnum):
    """How a payment was tendered."""
    NONE = 0
    CASH = 1
    CARD = 2
    QR = 3
    WALLET = 4
    VOUCHER = 5
    OTHER = 6


class Flag(enum.IntFlag):
    """Bit flags of a record."""
    TRAINING = 1
    OFFLINE = 2
    COPY = 4
    ARCHIVED = 8
    FORCED = 16


RECORD_DTYPE = np.dtype({
    "names": ["seq", "ts", "amount", "txn_id", "ref_seq", "day", "terminal", "receipt_no",
              "operator", "currency", "kind", "state", "method", "flags", "pan_last4",
              "auth_code", "rrn", "client_ref", "payload_len", "ext_len", "channel"],
    "formats": ["<u8", "<i8", "<i8", "<u8", "<u8", "<i4", "<u4", "<u4", "<u4", "<u2", "u1", "u1",
                "u1", "u1", "S4", "S6", "S12", "S16", "<u2", "u1", "S10"],
    "offsets": [0, 8, 16, 24, 32, 40, 44, 48, 52, 56, 58, 59, 60, 61, 62, 66, 72, 84, 100, 102,
                104],
    "itemsize": 120,
})
"""One decoded record: the columns `Journal.query` returns (little-endian on every CPU).
`ext_len` is the size of the record's extension (format 2: client_ref, order_ref, host_ref,
which `Journal.get` returns on the Record); `channel` is empty in format-1 journals."""

_TEXT_FIELDS = {"pan_last4": 4, "auth_code": 6, "rrn": 12, "client_ref": 16, "channel": 10}
#: Order and host references (format 2): opaque text of at most 64 bytes each, stored in the
#: record's extension, returned on the Record (str), found by `Journal.find`.
REF_FIELDS = ("order_ref", "host_ref")
REF_SIZE = 64
_INT_FIELDS = {"terminal": (0, 2**32 - 1), "receipt_no": (0, 2**32 - 1),
               "operator": (0, 2**32 - 1), "currency": (0, 999), "txn_id": (0, 2**63 - 1),
               "ref_seq": (0, 2**63 - 1), "amount": (-(2**63), 2**63 - 1),
               "ts": (-(2**62), 2**62), "flags": (0, 255)}
_ENUM_FIELDS = {"kind": Kind, "state": State, "method": Method}
_ENUM_TABLES = {}
for _name, _cls in _ENUM_FIELDS.items():
    _ENUM_TABLES[_name] = np.zeros(256, dtype=bool)
    _ENUM_TABLES[_name][[int(m) for m in _cls]] = True
FIELD_NAMES = ("ts", "terminal", "kind", "state", "method", "flags", "currency", "amount",
               "txn_id", "ref_seq", "receipt_no", "operator", "client_ref", "pan_last4",
               "auth_code", "rrn", "channel")
_DIGITS13 = re.compile(rb"\d{13,19}")

# ------------------------------------------------------------------ timestamps
#: The oldest `ts` an append accepts: 2000-01-01 00:00 UTC (history imported from an
#: older system is welcome from then on).
TS_MIN_US = 946_684_800_000_000
#: How far ahead of this terminal's clock a `ts` may be (clock skew between tills).
TS_FUTURE_US = 86_400_000_000
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def _ts_hint(ts: int, hi: int) -> str:
    """Why a `ts` outside [TS_MIN_US, hi] is wrong, in the user's terms."""
    if ts > hi:
        for divisor, unit, fix in ((1000, "nanoseconds", "time.time_ns() // 1000"),):
            if TS_MIN_US <= ts // divisor <= hi:
                return ("this looks like %s (%s gives microseconds): ts is microseconds since "
                        "1970-01-01 UTC" % (unit, fix))
        return ("it is more than a day ahead of this terminal's clock (%s); check the clock, "
                "ts is microseconds since 1970-01-01 UTC" % format_ts(hi - TS_FUTURE_US))
    for factor, unit, fix in ((1000, "milliseconds", "multiply by 1000"),
                              (1_000_000, "seconds", "multiply by 1,000,000, or pass a datetime")):
        if TS_MIN_US <= ts * factor <= hi:
            return ("this looks like %s (%s): ts is microseconds since 1970-01-01 UTC"
                    % (unit, fix))
    return ("posfast accepts times from 2000-01-01 UTC to a day ahead of the clock; ts is "
            "microseconds since 1970-01-01 UTC")


def check_ts(ts: int, where: str = "", now: Optional[int] = None) -> int:
    """`ts` if it is a plausible record time (2000-01-01 UTC .. a day ahead of the clock),
    else InvalidRecord saying what it looks like (nanoseconds, milliseconds, seconds)."""
    hi = (now_us() if now is None else int(now)) + TS_FUTURE_US
    if not TS_MIN_US <= ts <= hi:
        when = ts_datetime(ts)
        shown = (when.isoformat(timespec="seconds") if when is not None else
                 "about the year {:,}".format(int(1970 + ts / 31_556_952_000_000)))
        raise InvalidRecord("posfast: %sts=%d is an impossible time (%s): %s"
                            % (where, ts, shown, _ts_hint(ts, hi)))
    return ts


def ts_datetime(ts: int) -> Optional[_dt.datetime]:
    """The UTC datetime of `ts` (microseconds), or None when no calendar date can show it."""
    try:
        return _EPOCH + _dt.timedelta(microseconds=int(ts))
    except (OverflowError, ValueError):
        return None


def format_ts(ts: int, timespec: str = "seconds", fmt: Optional[str] = None) -> str:
    """ISO time of a stored `ts`, whatever it holds: a value no calendar can show (a
    journal written by an older posfast, or crafted) reads ``impossible time (ts=N)``."""
    when = ts_datetime(ts)
    if when is None:
        return "impossible time (ts=%d)" % int(ts)
    return when.strftime(fmt) if fmt else when.isoformat(timespec=timespec)


def format_day(day: int) -> str:
    """ISO date of a stored business day number, or ``impossible day (N)``."""
    try:
        return day_to_date(int(day)).isoformat()
    except (OverflowError, ValueError):
        return "impossible day (%d)" % int(day)


# ------------------------------------------------------------------ card numbers
# A card number (PAN) as it appears in text: 13-19 digits in one unbroken run, or split
# by single spaces or dashes in the layouts printed on cards and slips (4-4-4-4[-3] as
# "4111 1111 1111 1111", 4-6-5 / 4-6-4 as Amex "3782 822463 10005"; any layout with 13
# digits in a row is caught too).  An unbroken run of 20 digits or more is an identifier
# (a wallet transaction id), not a card.  The pre-check translates the bytes (digits ->
# "0", space and dash -> "-", anything else -> "x"), blanks runs of 20+ digits, and looks
# for those layouts: C-speed substring searches over every payload of a bulk append at
# once.  Only the runs they find are split and checked for Luhn and a card IIN.
_PAN_TABLE = bytes(ord("0") if 48 <= c <= 57 else ord("-") if c in (32, 45) else ord("x")
                   for c in range(256))
_NEEDLES = (b"0000000000000", b"0000-0000-0000", b"0000-000000-0000")
_LONG_RUN = b"0" * 20
_SEPARATORS = re.compile(rb"[ -]")
_TRACK2_TAIL = re.compile(rb"[=D^][0-9]{4}")
_LUHN_DOUBLE = bytes(range(256)).translate(bytes.maketrans(b"0123456789", bytes(
    [(2 * d if d < 5 else 2 * d - 9) + 48 for d in range(10)])))


def luhn_ok(digits: bytes) -> bool:
    """The Luhn check digit test on ASCII digits (byte sums in C, no per-digit Python)."""
    kept, doubled = digits[-1::-2], digits[-2::-2].translate(_LUHN_DOUBLE)
    return (sum(kept) + sum(doubled) - 48 * len(digits)) % 10 == 0


def card_iin(digits: bytes) -> bool:
    """Does this digit string start like a payment card (Visa, Mastercard, Amex, Discover,
    UnionPay, JCB, Diners, Maestro, Mir, RuPay)?"""
    d1 = digits[0]
    if d1 in b"456":
        return True     # Visa 4; Mastercard 51-55, Maestro 50/56-58; 6: Discover, UnionPay 62, Maestro, RuPay
    if d1 == 0x33:      # Amex 34/37, JCB 35, Diners 30/36/38/39
        return digits[1:2] in (b"0", b"4", b"5", b"6", b"7", b"8", b"9")
    if d1 == 0x32:      # Mastercard 2221-2720, Mir 2200-2204
        four = int(digits[:4])
        return 2221 <= four <= 2720 or 2200 <= four <= 2204
    if d1 == 0x38:      # UnionPay 81, RuPay 82
        return digits[1:2] in (b"1", b"2")
    return False


# A number right after one of these labels is an identifier (an order or merchant number,
# a host reference), not a card number, however it looks: `"ref":"4111..."`, `订单号: ...`.
_REFERENCE_LABELS = ("ref", "reference", "order", "order_no", "orderno", "order_id", "trade_no",
                     "out_trade_no", "transaction_id", "txn", "txn_id", "invoice", "mid",
                     "merchant_id", "tid", "rrn", "auth", "\u8ba2\u5355\u53f7", "\u8ba2\u5355",
                     "\u4ea4\u6613\u53f7", "\u6d41\u6c34\u53f7", "\u53c2\u8003\u53f7",
                     "\u5546\u6237\u53f7", "\u7ec8\u7aef\u53f7")   # 订单号 订单 交易号 流水号 参考号 商户号 终端号
_REFERENCE_LABEL = re.compile(
    ("(?i)(?:%s)(?:[\"' :=#.]|\uff1a){0,4}$" % "|".join(map(re.escape, _REFERENCE_LABELS)))
    .encode("utf-8"))


_SEPARATOR_TO_SPACE = bytes.maketrans(b"-", b" ")


def _pan_in_run(run: bytes):
    """The card number in a run of digits, spaces and dashes, or None."""
    if run.isdigit():
        return run if 13 <= len(run) <= 19 and card_iin(run) and luhn_ok(run) else None
    # groups; an empty group is a double, leading or trailing separator: no number spans it
    groups = run.translate(_SEPARATOR_TO_SPACE).split(b" ")
    # every group-aligned stretch of 13-19 digits ("12 4111 1111 1111 1111")
    for first in range(len(groups)):
        head = groups[first]
        if not head:
            continue
        if len(head) < 4:
            head = b"".join(groups[first:first + 3])
        if len(head) < 4 or not card_iin(head):          # the IIN: the first 4 digits
            continue
        digits = b""
        for last in range(first, len(groups)):
            group = groups[last]
            if not group:
                break
            digits += group
            n = len(digits)
            if n > 19:
                break
            if n >= 13 and luhn_ok(digits):
                return digits
    return None


def _translate(data: bytes):
    """(translated, searched): `searched` has runs of 20+ digits blanked to "x"."""
    t = data.translate(_PAN_TABLE)
    if _NEEDLES[0] not in t:          # no 13 digits in a row, so no 20 either
        return t, t
    return t, t.replace(_LONG_RUN, b"x" * 20) if _LONG_RUN in t else t


def _card_numbers(data: bytes, translated=None):
    """(start, end, pan) of every run of `data` holding a card number (a generator)."""
    t, searched = _translate(data) if translated is None else translated
    for needle in _NEEDLES:
        pos = searched.find(needle)
        while pos >= 0:
            start = t.rfind(b"x", 0, pos) + 1
            end = t.find(b"x", pos)
            end = len(t) if end < 0 else end
            digits = t.count(b"0", start, end)
            # cheap refusals first: fewer than 13 digits (a phone number), or one unbroken
            # run of 20 digits or more (an identifier)
            if digits >= 13 and not (digits > 19 and digits == end - start):
                pan = _pan_in_run(data[start:end])
                if pan is not None:
                    yield start, end, pan
            pos = searched.find(needle, end)


def find_card_number(data: Union[bytes, str]) -> str:
    """A description of the first card number (or track-2 data) in `data`, or "".

    A number right after a reference label (``ref``, ``order``, ``mid``, ``订单号`` ...) is
    an identifier and is not reported.

    >>> find_card_number(b"Card 4111 1111 1111 1111"), find_card_number(b"order 20150806125346")
    ('a card number (4111...1111)', '')
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    for start, end, pan in _card_numbers(data):
        if _REFERENCE_LABEL.search(data, max(0, start - 24), start):
            continue
        tail = data[end:end + 5]
        what = "track-2 card data" if _TRACK2_TAIL.match(tail) else "a card number"
        return "%s (%s...%s)" % (what, pan[:4].decode(), pan[-4:].decode())
    return ""


def refuse_card_number(where: str, data: Union[bytes, str]) -> None:
    """InvalidRecord when `data` (bytes or text) holds a whole card number or track-2 data."""
    found = find_card_number(data)
    if found:
        raise InvalidRecord("posfast: %s holds %s: a card number is never stored whole; store only "
                            "its last four digits (pan_last4)" % (where, found))


def _payload_bytes(payload: PayloadLike, where: str) -> bytes:
    """A payload as bytes (bytes, bytearray, memoryview; None = empty); text is refused."""
    if type(payload) is bytes:
        return payload
    if payload is None:
        return b""
    if isinstance(payload, str):
        raise InvalidRecord("posfast: %s=%r is text; a payload is bytes: encode it first "
                            "(e.g. text.encode('utf-8'))" % (where, _short(payload)))
    try:
        return bytes(payload)
    except TypeError:
        raise InvalidRecord("posfast: %s is a %s; a payload is bytes" % (where, type(payload).__name__)) \
            from None


def check_payload(payload: PayloadLike, where: str = "payload") -> bytes:
    """A payload as bytes (bytes, bytearray, memoryview; None = empty), refused when it is
    text or holds a card number."""
    payload = _payload_bytes(payload, where)
    refuse_card_number(where, payload)
    return payload


def check_payloads(payloads: Iterable[PayloadLike]) -> list:
    """check_payload of each, with one pre-check over all of them for card numbers."""
    if type(payloads) is list and set(map(type, payloads)) <= {bytes}:
        out = payloads                    # the usual case: nothing to convert
    else:
        out = [_payload_bytes(p, "row %d: payload" % i) for i, p in enumerate(payloads)]
    joined = b"\n".join(out)
    t = joined.translate(_PAN_TABLE)        # one pass over every payload
    long_runs = _NEEDLES[0] in t
    if not long_runs and _NEEDLES[1] not in t and _NEEDLES[2] not in t:
        return out                          # the usual case: three substring searches
    searched = t.replace(_LONG_RUN, b"x" * 20) if long_runs and _LONG_RUN in t else t
    if not any(needle in searched for needle in _NEEDLES):
        return out
    starts = None
    for start, _end, _pan in _card_numbers(joined, (t, searched)):
        if starts is None:
            starts = np.cumsum([0] + [len(p) + 1 for p in out])
        i = int(np.searchsorted(starts, start, side="right")) - 1
        refuse_card_number("row %d: payload" % i, out[i])   # raises unless labelled a reference
    return out


def _short(value, limit=40):
    return value if len(value) <= limit else value[:limit] + "..."


def now_us() -> int:
    return time.time_ns() // 1000


def _offset_minutes(text) -> int:
    if isinstance(text, (int, np.integer)):
        return int(text)
    if isinstance(text, _dt.timedelta):
        return int(text.total_seconds() // 60)
    m = re.fullmatch(r"(?:UTC)?([+-])(\d{1,2}):?(\d{2})?", str(text).strip())
    if not m:
        raise ValueError("utc_offset %r: write it as '+08:00' or '-05:30'" % (text,))
    minutes = int(m.group(2)) * 60 + int(m.group(3) or 0)
    return -minutes if m.group(1) == "-" else minutes


def _clock_minutes(text) -> int:
    if isinstance(text, (int, np.integer)):
        return int(text)
    if isinstance(text, _dt.time):
        return text.hour * 60 + text.minute
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", str(text).strip())
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError("starts_at %r: write it as 'HH:MM', e.g. '04:00'" % (text,))
    return int(m.group(1)) * 60 + int(m.group(2))


@dataclass(frozen=True)
class DayRule:
    """How a timestamp maps to a business day: local time zone offset and the
    hour the trading day starts (a restaurant day that ends at 04:00).

    >>> rule = DayRule(utc_offset="+08:00", starts_at="04:00")
    >>> rule.day_of(_dt.datetime(2026, 11, 20, 19, 30, tzinfo=_dt.timezone.utc))
    datetime.date(2026, 11, 20)
    """
    utc_offset: object = "+00:00"
    starts_at: object = "00:00"
    if TYPE_CHECKING:   # per instance, set by __post_init__ (ClassVar: not dataclass fields)
        offset_minutes: ClassVar[int]
        start_minutes: ClassVar[int]

    def __post_init__(self):
        # parsed once: day_number runs on every append
        object.__setattr__(self, "offset_minutes", _offset_minutes(self.utc_offset))
        object.__setattr__(self, "start_minutes", _clock_minutes(self.starts_at))
        if not -14 * 60 <= self.offset_minutes <= 14 * 60:
            raise ValueError("utc_offset %r is beyond ±14:00" % (self.utc_offset,))

    @property
    def tzinfo(self) -> _dt.timezone:
        """The rule's local time (a fixed offset): how the shop reads its times."""
        return _dt.timezone(_dt.timedelta(minutes=self.offset_minutes))

    def day_number(self, ts_us: int) -> int:
        shifted = int(ts_us) + (self.offset_minutes - self.start_minutes) * 60_000_000
        return shifted // 86_400_000_000

    def day_of(self, when: TimeLike) -> _dt.date:
        """Business day of a datetime (naive = UTC) or of microseconds since epoch."""
        return _dt.date(1970, 1, 1) + _dt.timedelta(days=self.day_number(to_us(when)))

    def day_start_us(self, day: DayLike) -> int:
        """First microsecond (UTC) of a business day."""
        return (day_number(day) * 86_400_000_000
                - (self.offset_minutes - self.start_minutes) * 60_000_000)

    def describe(self) -> str:
        sign = "-" if self.offset_minutes < 0 else "+"
        off = abs(self.offset_minutes)
        return "UTC%s%02d:%02d, day starts %02d:%02d" % (sign, off // 60, off % 60,
                                                          self.start_minutes // 60,
                                                          self.start_minutes % 60)


def to_us(when: TimeLike) -> int:
    """Microseconds since epoch from a datetime (naive = UTC), a date, or an int."""
    if when is None:
        return now_us()
    if isinstance(when, (int, np.integer)):
        return int(when)
    if isinstance(when, _dt.datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=_dt.timezone.utc)
        return int((when - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc))
                   // _dt.timedelta(microseconds=1))
    if isinstance(when, _dt.date):
        return (when - _dt.date(1970, 1, 1)).days * 86_400_000_000
    raise InvalidRecord("posfast: cannot read %r as a time; give a datetime or microseconds" % (when,))


def day_number(day: DayLike) -> int:
    """Business day as days since 1970-01-01 from a date, an ISO string or an int."""
    if isinstance(day, (int, np.integer)):
        return int(day)
    if isinstance(day, _dt.datetime):
        day = day.date()
    if isinstance(day, _dt.date):
        return (day - _dt.date(1970, 1, 1)).days
    if isinstance(day, str):
        try:
            return (_dt.date.fromisoformat(day.strip()) - _dt.date(1970, 1, 1)).days
        except ValueError:
            pass
    raise InvalidRecord("posfast: day=%r: give a date, 'YYYY-MM-DD' or days since 1970-01-01" % (day,))


def day_to_date(day: int) -> _dt.date:
    return _dt.date(1970, 1, 1) + _dt.timedelta(days=int(day))


#: Reference fields: opaque identifiers (a merchant order number, a host reference, an
#: authorisation code).  They are never scanned for card numbers: order numbers such as
#: WeChat Pay's 20150806125346 are long digit strings by design.
REFERENCE_FIELDS = frozenset({"client_ref", "rrn", "auth_code", "order_ref", "host_ref"})
#: Currency codes a payment may not carry: 0 (not an ISO 4217 code) and 999 (XXX, "no
#: currency").  998 (XTS, reserved for testing) is accepted, for training tills.
NO_CURRENCY = {0: "0 is not an ISO 4217 currency code",
               999: "999 is ISO 4217's XXX, 'no currency'"}


def _text(field, value, where="") -> bytes:
    """One text field as the bytes stored: str is UTF-8, None is empty; refused when it
    does not fit, is not text, or ends with a NUL (the fixed-width field would drop it)."""
    if value is None:
        return b""
    if isinstance(value, str):
        try:
            value = value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRecord("posfast: %s%s=%r is not valid Unicode text (%s at position %d); "
                                "give UTF-8 text or bytes" % (where, field, value, exc.reason,
                                                             exc.start)) from None
    elif isinstance(value, (bytes, bytearray, memoryview, np.bytes_)):
        value = bytes(value)
    else:
        raise InvalidRecord("posfast: %s%s=%r must be text or bytes, not %s"
                            % (where, field, value, type(value).__name__))
    width = _TEXT_FIELDS[field]
    if field == "pan_last4" and (len(value) > 4 or _DIGITS13.search(value)):
        raise InvalidRecord("posfast: %span_last4 must hold at most the last 4 digits of the card "
                            "number, got %d characters; never store a full card number"
                            % (where, len(value)))
    if len(value) > width:
        if where:       # append_many: "row 3: client_ref is 18 bytes ... (value ...)"
            raise InvalidRecord("posfast: %s%s is %d bytes, the field holds %d (value %r)"
                                % (where, field, len(value), width, value))
        raise InvalidRecord("posfast: %s=%r is %d bytes, the field holds %d"
                            % (field, value, len(value), width))
    if value.endswith(b"\0"):
        raise InvalidRecord("posfast: %s%s=%r ends with a NUL byte, which the fixed-width field "
                            "cannot keep (it would read back as %r); remove it"
                            % (where, field, value, value.rstrip(b"\0")))
    return value


def check_ref(field: str, value, where: str = "") -> bytes:
    """An order or host reference as stored: UTF-8 text of at most 64 bytes (str or bytes;
    None is none).  Opaque: a 19-digit order number is an order number, never refused as a
    card number."""
    if value is None:
        return b""
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
    elif isinstance(value, (bytes, bytearray, memoryview, np.bytes_)):
        raw = bytes(value)
    else:
        raise InvalidRecord("posfast: %s%s=%r must be text, not %s"
                            % (where, field, value, type(value).__name__))
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRecord("posfast: %s%s=%r is not UTF-8 text (byte %d); give the reference as "
                            "text" % (where, field, raw, exc.start)) from None
    if len(raw) > REF_SIZE:
        raise InvalidRecord("posfast: %s%s is %d bytes; a reference holds at most %d (value %r)"
                            % (where, field, len(raw), REF_SIZE, _short(raw.decode("utf-8"))))
    if b"\0" in raw:
        raise InvalidRecord("posfast: %s%s=%r holds a NUL byte; remove it" % (where, field, raw))
    return raw


def _refuse_pan(field, value):
    """InvalidRecord when a text value holds a whole card number (kept for callers)."""
    if isinstance(value, (bytes, str)):
        refuse_card_number(field, value)


def _integer(name, value, where=""):
    if isinstance(value, (float, bool, np.bool_, np.floating)) or \
            not isinstance(value, (int, np.integer)):
        raise InvalidRecord("posfast: %s%s=%r must be an integer%s, not a %s" % (
            where, name, value, " of minor units (cents, fen), never a float"
            if name == "amount" else "", type(value).__name__))
    lo, hi = _INT_FIELDS[name]
    value = int(value)
    if not lo <= value <= hi:
        raise InvalidRecord("posfast: %s%s=%d is out of range [%d, %d]" % (where, name, value, lo, hi))
    return value


def _check_money(kind, amount, currency, where=""):
    """A payment's amount is a magnitude; its currency a real ISO 4217 code."""
    if not IS_PAYMENT_KIND[kind]:
        return
    if amount < 0:
        raise InvalidRecord("posfast: %samount=%d is negative: a %s's amount is a magnitude in "
                            "minor units (a refund, void or reversal says the direction by its "
                            "kind); give %d" % (where, amount, Kind(kind).name.lower(), -amount))
    if currency in NO_CURRENCY:
        raise InvalidRecord("posfast: %scurrency=%d: %s; a %s needs its currency's ISO 4217 "
                            "numeric code, e.g. 156 for CNY, 978 for EUR, 840 for USD"
                            % (where, currency, NO_CURRENCY[currency], Kind(kind).name.lower()))


_FIELD_SET = frozenset(FIELD_NAMES)
_ROW_NAMES: Tuple[str, ...] = RECORD_DTYPE.names or ()
_ROW_FIELDS: Dict[str, Any] = dict(RECORD_DTYPE.fields or {})
_ROW_ORDER = {name: i for i, name in enumerate(_ROW_NAMES)}
_ROW_ZERO = tuple(b"" if _ROW_FIELDS[name][0].kind == "S" else 0 for name in _ROW_NAMES)


def make_row(fields: dict, day_rule: DayRule) -> np.ndarray:
    """Validate keyword fields of one record into a 1-row RECORD_DTYPE array."""
    if not _FIELD_SET.issuperset(fields):
        unknown = set(fields) - _FIELD_SET
        raise InvalidRecord("posfast: unknown record field(s) %s; fields are %s"
                            % (", ".join(sorted(unknown)), ", ".join(FIELD_NAMES)))
    values = list(_ROW_ZERO)
    ts = None
    for name, value in fields.items():
        if value is None:
            continue
        if name in _ENUM_FIELDS:
            value = int(_ENUM_FIELDS[name].coerce(value, name))
        elif name in _TEXT_FIELDS:
            value = _text(name, value)
        elif name == "ts":
            value = ts = check_ts(to_us(value))
        else:
            value = _integer(name, value)
        values[_ROW_ORDER[name]] = value
    if fields.get("kind") is None:
        raise InvalidRecord("posfast: a record needs kind= (sale, refund, print, ...)")
    given_currency = fields.get("currency")
    _check_money(values[_ROW_ORDER["kind"]], values[_ROW_ORDER["amount"]],
                 None if given_currency is None else values[_ROW_ORDER["currency"]])
    if ts is None:
        ts = values[_ROW_ORDER["ts"]] = now_us()
    values[_ROW_ORDER["day"]] = day_rule.day_number(ts)
    return np.array([tuple(values)], dtype=RECORD_DTYPE)


def _first_bad_type(name, col, kinds):
    """Row index and value of the first element of a list column whose type is in `kinds`
    (bools and floats that numpy would silently turn into integers)."""
    for i, v in enumerate(col):
        if isinstance(v, kinds):
            return i, v
    return None


_NOT_INTEGER = (bool, np.bool_, float, np.floating)


def _int_column(name, col, n):
    """An integer column as an array, refusing bools, floats, text and 2-D input."""
    if isinstance(col, (list, tuple)) and col and not {bool, float, np.bool_, np.float64,
                                                       np.float32}.isdisjoint(map(type, col)):
        i, v = _first_bad_type(name, col, _NOT_INTEGER)
        raise InvalidRecord("posfast: row %d: %s=%r must be an integer%s, not a %s" % (
            i, name, v, " of minor units, never a float" if name == "amount" else "",
            type(v).__name__))
    try:
        arr = np.asarray(col)
    except (OverflowError, ValueError) as exc:
        raise InvalidRecord("posfast: column %s cannot be read as integers (%s)" % (name, exc)) \
            from None
    if arr.ndim > 1:
        raise InvalidRecord("posfast: column %s has shape %s; a column is one value per record "
                            "(one-dimensional)" % (name, arr.shape))
    if arr.dtype.kind == "f":
        raise InvalidRecord("posfast: column %s is floating point; %s must be integers%s"
                            % (name, name, " of minor units" if name == "amount" else ""))
    if arr.dtype.kind == "b":
        raise InvalidRecord("posfast: column %s holds booleans; %s must be integers" % (name, name))
    if arr.dtype.kind == "M" and name == "ts":
        arr = arr.astype("datetime64[us]").astype(np.int64)
    if arr.dtype.kind == "O" and n:
        for i, v in enumerate(np.broadcast_to(arr, (n,)).tolist()):
            _integer(name, v, "row %d: " % i)          # names the first bad value
    if arr.dtype.kind not in "iu" and n:
        raise InvalidRecord("posfast: column %s must be integers, got %s" % (name, arr.dtype))
    return arr


def _text_column(name, col, n):
    """A text column as an S array: None is empty, str is UTF-8; refused as `_text` does."""
    if isinstance(col, np.ndarray) and col.dtype.kind == "S":
        arr = col                                  # (numpy already dropped trailing NULs)
    elif col is None or isinstance(col, (str, bytes, bytearray, np.bytes_)):
        arr = np.array(_text(name, col), dtype="S")
    else:
        values = []
        for i, v in enumerate(col):
            t = type(v)
            if t is bytes and not v.endswith(b"\0"):
                values.append(v)
            elif t is str and v.isascii() and not v.endswith("\0"):
                values.append(v.encode())
            else:
                values.append(_text(name, v, "row %d: " % i))
        arr = np.array(values, dtype="S") if values else np.zeros(0, dtype="S1")
    if arr.ndim > 1:
        raise InvalidRecord("posfast: column %s has shape %s; a column is one value per record "
                            "(one-dimensional)" % (name, arr.shape))
    arr = np.broadcast_to(arr, (n,))
    width = arr.dtype.itemsize
    limit = _TEXT_FIELDS[name]
    if width > limit and n:
        lens = np.char.str_len(arr)
        i = int(np.argmax(lens > limit))
        if lens[i] > limit:
            if name == "pan_last4":
                _text(name, bytes(arr[i]), "row %d: " % i)
            raise InvalidRecord("posfast: row %d: %s is %d bytes, the field holds %d (value %r)"
                                % (i, name, lens[i], limit, bytes(arr[i])))
    return arr


def make_rows(columns: dict, day_rule: DayRule) -> np.ndarray:
    """Validate a dict of equal-length columns into a RECORD_DTYPE array, vectorized."""
    unknown = set(columns) - set(FIELD_NAMES)
    if unknown:
        raise InvalidRecord("posfast: unknown column(s) %s; columns are %s"
                            % (", ".join(sorted(unknown)), ", ".join(FIELD_NAMES)))
    lengths = {name: len(col) for name, col in columns.items()
               if col is not None and not np.isscalar(col)
               and not isinstance(col, (str, bytes, bytearray))
               and not (isinstance(col, np.ndarray) and col.ndim == 0)}
    if not lengths:
        raise InvalidRecord("posfast: append_many needs at least one column of values")
    n = next(iter(lengths.values()))
    if any(length != n for length in lengths.values()):
        raise InvalidRecord("posfast: columns differ in length: %s" % lengths)
    if "kind" not in columns:
        raise InvalidRecord("posfast: append_many needs a kind column (or a scalar kind=)")
    rows = np.zeros(n, dtype=RECORD_DTYPE)
    for name, col in columns.items():
        if name in _ENUM_FIELDS:
            enum_cls = _ENUM_FIELDS[name]
            if isinstance(col, (list, tuple)) and not {bool, float, np.bool_, np.float64,
                                                       np.float32}.isdisjoint(map(type, col)):
                i, v = _first_bad_type(name, col, _NOT_INTEGER)
                enum_cls.coerce(v, "row %d: %s" % (i, name))     # raises, naming the value
            arr = np.asarray(col)
            if arr.ndim > 1:
                raise InvalidRecord("posfast: column %s has shape %s; a column is one value per "
                                    "record (one-dimensional)" % (name, arr.shape))
            if arr.dtype.kind in "fbc":
                flat = arr.ravel()
                enum_cls.coerce(flat[0].item() if flat.size else 0.5,
                                "%s%s" % ("row 0: " if arr.ndim else "", name))
            if arr.dtype.kind in "US" or arr.dtype == object:
                if isinstance(col, (list, tuple)):
                    arr = np.array(col, dtype=object)   # ints among names must not become "6"
                mapping = {v: int(enum_cls.coerce(v.decode() if isinstance(v, bytes) else v, name))
                           for v in set(arr.ravel().tolist())}
                arr = np.vectorize(mapping.__getitem__, otypes=[np.int64])(arr) if n else \
                    np.zeros(0, np.int64)
            arr = np.broadcast_to(np.asarray(arr, dtype=np.int64), (n,))
            bad = (arr < 0) | (arr > 255)
            if not bad.any():
                bad = ~_ENUM_TABLES[name][arr]          # a 256-entry lookup: isin sorts
            if bad.any():
                i = int(np.argmax(bad))
                raise InvalidRecord("posfast: row %d: %s=%d is not a %s" % (i, name, arr[i],
                                                                            enum_cls.__name__))
            rows[name] = arr
        elif name in _TEXT_FIELDS:
            rows[name] = _text_column(name, col, n)
        else:
            arr = _int_column(name, col, n)
            lo, hi = _INT_FIELDS[name]
            if n and arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
                i = int(np.argmax(np.broadcast_to((arr < lo) | (arr > hi), (n,))))
                raise InvalidRecord("posfast: row %d: %s=%d is out of range [%d, %d]"
                                    % (i, name, int(np.broadcast_to(arr, (n,))[i]), lo, hi))
            rows[name] = arr
    if "ts" not in columns or columns["ts"] is None:
        rows["ts"] = now_us()
    elif n:
        hi = now_us() + TS_FUTURE_US
        ts = rows["ts"]
        bad = (ts < TS_MIN_US) | (ts > hi)
        if bad.any():
            i = int(np.argmax(bad))
            check_ts(int(ts[i]), "row %d: " % i, now=hi - TS_FUTURE_US)
    if n:
        payment = IS_PAYMENT_KIND[rows["kind"]]
        if payment.any():
            bad = payment & (rows["amount"] < 0)
            if "currency" in columns and columns["currency"] is not None:
                cur = rows["currency"]
                bad |= payment & ((cur == 0) | (cur == 999))
            if bad.any():
                i = int(np.argmax(bad))
                _check_money(int(rows["kind"][i]), int(rows["amount"][i]),
                             int(rows["currency"][i]) if "currency" in columns else None,
                             "row %d: " % i)
    shifted = rows["ts"] + (day_rule.offset_minutes - day_rule.start_minutes) * 60_000_000
    rows["day"] = shifted // 86_400_000_000
    return rows


#: Sign of an approved payment of each kind in net totals: +1 sale and completion, -1 refund,
#: void and reversal, 0 pre-authorisation and cash drawer moves (not turnover).
KIND_SIGN = {Kind.SALE: 1, Kind.COMPLETION: 1, Kind.REFUND: -1, Kind.VOID: -1,
             Kind.REVERSAL: -1, Kind.PREAUTH: 0, Kind.CASH_IN: 0, Kind.CASH_OUT: 0}
#: :data:`KIND_SIGN` as a lookup table indexed by kind value (``KIND_SIGN_TABLE[rows["kind"]]``).
KIND_SIGN_TABLE = np.zeros(256, dtype=np.int64)
for _kind, _sign in KIND_SIGN.items():
    KIND_SIGN_TABLE[int(_kind)] = _sign
del _kind, _sign
