"""Record model: enums, the RECORD_DTYPE row layout, the business-day rule and
the validation that turns user input into rows (one place, used by append and
append_many alike)."""
from __future__ import annotations

import bisect
import datetime as _dt
import enum
import re
import struct
import threading
from operator import index as operator_index
import time
from dataclasses import dataclass
from typing import (TYPE_CHECKING, Any, ClassVar, Dict, Iterable, Optional, Sequence, Tuple,
                    TypeVar, Union)

import numpy as np

from . import _core
from .errors import InvalidArgument, InvalidRecord


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
_FIELD_AT: Dict[str, Any] = {name: RECORD_DTYPE.fields[name][:2]  # type: ignore[index]
                              for name in RECORD_DTYPE.names or ()}


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
            # cheap refusals first: fewer than 13 digits (a phone number), one unbroken run
            # of 20 digits or more (an identifier), or digits with letters glued to both ends:
            # a stretch of a hex digest or a token (a Z-report's SHA-256 held one in some 0.2%
            # of closes, and the close was refused), never a card number as written
            if digits >= 13 and not (digits > 19 and digits == end - start) and not (
                    data[start - 1:start].isalpha() and data[start:start + 1].isdigit()
                    and data[end - 1:end].isdigit() and data[end:end + 1].isalpha()):
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
    >>> find_card_number(b'"digest":"ab12cd5131000000032889ef99"')   # inside a hex string
    ''
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
    if payload:
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


# ------------------------------------------------------------------ time zones
_DAY_US = 86_400_000_000
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
#: A zone's UTC-offset changes are found by sampling its offset once a day (zoneinfo has no
#: public list of transitions) and bisecting to the second where two samples differ: only two
#: changes less than a day apart that cancel out could be missed, and the IANA database has
#: none (checked for every zone, 1900-2100, against its transition lists; weekly sampling
#: would miss Brazil's one-week summer time of 2000 and Gaza's of 2040).  A zone is sampled
#: lazily, in blocks of 2**25 s (~388 days) around the times asked, once per process.
_SAMPLE_S = 86_400
_BLOCK_S = 1 << 25
_MARGIN_S = 2 * 86_400      # sampled below a block too: a fall-back just before it is seen
#: The years a time zone's offsets are looked up in (block-aligned): before and after them the
#: offset at the window's edge applies (no journal holds such times: check_ts refuses them).
_ZONE_YEARS = (1900, 2200)
_WINDOW_BLOCKS = tuple(
    int((_dt.datetime(y, 1, 1, tzinfo=_dt.timezone.utc) - _EPOCH).total_seconds()) // _BLOCK_S
    for y in _ZONE_YEARS)


def _load_zone(name: str):
    """The ZoneInfo of an IANA name, or InvalidArgument naming the zone and the fix."""
    import zoneinfo
    try:
        return zoneinfo.ZoneInfo(name)
    except zoneinfo.ZoneInfoNotFoundError:
        pass
    except (ValueError, TypeError, OSError) as exc:
        raise InvalidArgument("posfast: tz=%r is not an IANA time zone name (%s); write it as "
                              "'Area/City', e.g. 'Asia/Shanghai', 'Europe/Berlin', "
                              "'America/New_York'" % (name, exc)) from None
    if re.fullmatch(r"(?:UTC|GMT)?[+-]\d{1,2}(?::?\d{2})?", name.strip()):
        raise InvalidArgument("posfast: tz=%r is a fixed UTC offset, not a time zone name: use "
                              "DayRule(utc_offset=%r), or the zone's IANA name (e.g. "
                              "'Asia/Shanghai') to follow its daylight-saving changes"
                              % (name, name.strip())) from None
    try:
        known = zoneinfo.available_timezones()
    except Exception:       # (an unreadable zone directory)
        known = set()
    if not known:
        raise InvalidArgument("posfast: time zone %r cannot be loaded: this machine has no time-zone "
                              "database (no system zoneinfo directory and no tzdata package); "
                              "install it with `pip install tzdata`" % (name,)) from None
    import difflib
    close = difflib.get_close_matches(name, sorted(known), n=3)
    raise InvalidArgument("posfast: unknown time zone %r: not in this machine's time-zone database "
                          "(%d zones)%s; give an IANA name such as 'Asia/Shanghai' or "
                          "'Europe/Berlin', or, if the zone is new, update the database "
                          "(`pip install -U tzdata`, or the system's tzdata package)"
                          % (name, len(known), "; did you mean %s?" % " or ".join(map(repr, close))
                             if close else "")) from None


class _ZoneTable:
    """The UTC-offset intervals of one zone, sampled lazily block by block and shared by
    every DayRule of the zone.  ``arrays`` is replaced whole, never changed in place:
    (version, starts [us], offsets [us], local ends [us], covered [lo, hi) in us, blocks)."""

    _tables: ClassVar[Dict[str, "_ZoneTable"]] = {}
    _tables_lock = threading.Lock()

    def __init__(self, zone):
        self.zone = zone
        self.lock = threading.Lock()
        self.first_offset = 0               # seconds, at the lowest second sampled
        self.changes: Dict[int, int] = {}   # UTC second -> offset (seconds) from then on
        self.arrays: Any = None

    @classmethod
    def of(cls, zone) -> "_ZoneTable":
        key = str(zone.key)
        table = cls._tables.get(key)
        if table is None:
            with cls._tables_lock:
                table = cls._tables.setdefault(key, cls(zone))
        return table

    def _offset(self, second: int) -> int:
        zone = self.zone
        moment = zone.fromutc(_dt.datetime(1970, 1, 1, tzinfo=zone) + _dt.timedelta(seconds=second))
        return moment.utcoffset() // _dt.timedelta(seconds=1)

    def _sample(self, a: int, b: int) -> int:
        """Record the offset changes in (a, b] (seconds); return the offset at a."""
        offset, zone = self._offset, self.zone
        fromutc, second, step = zone.fromutc, _dt.timedelta(seconds=1), _dt.timedelta(seconds=_SAMPLE_S)
        first = x_off = offset(a)
        x = a
        moment = _dt.datetime(1970, 1, 1, tzinfo=zone) + _dt.timedelta(seconds=a)
        while x < b:
            if x + _SAMPLE_S <= b:
                y = x + _SAMPLE_S
                moment += step
                y_off = fromutc(moment).utcoffset() // second
            else:
                y = b
                y_off = offset(y)
            while y_off != x_off:             # a change in (x, y]: the first second it shows
                lo, hi = x, y
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if offset(mid) == x_off:
                        lo = mid
                    else:
                        hi = mid
                x, x_off = hi, offset(hi)
                self.changes[x] = x_off
            x, x_off = y, y_off
        return first

    def covering(self, lo_us: int, hi_us: int):
        """The arrays, sampled at least over [lo_us, hi_us] (clamped to the zone window)."""
        b_lo = min(max(lo_us // 1_000_000 // _BLOCK_S, _WINDOW_BLOCKS[0]), _WINDOW_BLOCKS[1])
        b_hi = min(max(hi_us // 1_000_000 // _BLOCK_S, _WINDOW_BLOCKS[0]), _WINDOW_BLOCKS[1])
        arrays = self.arrays
        if arrays is not None and arrays[5][0] <= b_lo and b_hi <= arrays[5][1]:
            return arrays
        with self.lock:
            arrays = self.arrays
            if arrays is None:
                self.first_offset = self._sample(b_lo * _BLOCK_S - _MARGIN_S, (b_hi + 1) * _BLOCK_S)
                blocks = (b_lo, b_hi)
            else:
                blocks = arrays[5]
                if blocks[0] <= b_lo and b_hi <= blocks[1]:
                    return arrays
                if b_lo < blocks[0]:
                    self.first_offset = self._sample(b_lo * _BLOCK_S - _MARGIN_S,
                                                     blocks[0] * _BLOCK_S - _MARGIN_S)
                if b_hi > blocks[1]:
                    self._sample((blocks[1] + 1) * _BLOCK_S, (b_hi + 1) * _BLOCK_S)
                blocks = (min(b_lo, blocks[0]), max(b_hi, blocks[1]))
            changes = sorted(self.changes.items())
            starts = [_I64_MIN] + [t * 1_000_000 for t, _ in changes]
            offsets = [self.first_offset * 1_000_000] + [o * 1_000_000 for _, o in changes]
            # the local wall time at which each interval ends (exclusive); the last never ends
            ends = [starts[k + 1] + offsets[k] for k in range(len(changes))] + [_I64_MAX]
            # what is exact: the sampled blocks; past the window's edges the edge's offset holds
            covered = (_I64_MIN if blocks[0] == _WINDOW_BLOCKS[0] else blocks[0] * _BLOCK_S * 1_000_000,
                       _I64_MAX if blocks[1] == _WINDOW_BLOCKS[1] else (blocks[1] + 1) * _BLOCK_S * 1_000_000)
            version = (arrays[0] + 1) if arrays is not None else 1
            self.arrays = arrays = (version, starts, offsets, ends, covered, blocks)
        return arrays


class _RuleTable:
    """A zone table seen by one rule (its day start): per interval, the shift that turns a
    UTC time into days and the floor no day of it goes below, as lists (single times) and
    arrays (many)."""
    __slots__ = ("version", "starts", "shifts", "floors", "offsets", "run_ends", "covered", "active",
                 "a_starts", "a_shifts", "a_floors", "a_offsets", "a_run_ends")

    def __init__(self, arrays, start_us: int):
        version, starts, offsets, ends, covered, _blocks = arrays
        self.version, self.starts, self.offsets, self.covered = version, starts, offsets, covered
        self.shifts = [o - start_us for o in offsets]
        # A business day, once begun, is never left for the one before: after a fall-back
        # that crosses the day start the wall clock repeats the end of the old day, but the
        # day stays the new one.  floors[k]: the latest day any earlier interval reached.
        floors, best = [], _I64_MIN
        for k in range(len(starts)):
            floors.append(best)
            if k + 1 < len(starts):
                best = max(best, (ends[k] - 1 - start_us) // _DAY_US)
        self.floors = floors
        # intervals whose first days are held up by the floor (see above)
        self.active = np.array([k > 0 and floors[k] > (starts[k] + self.shifts[k]) // _DAY_US
                                for k in range(len(starts))], dtype=bool)
        run, best = [], _I64_MIN
        for e in ends:
            best = max(best, e)
            run.append(best)
        self.run_ends = run
        self.a_starts = np.array(starts, dtype=np.int64)
        self.a_shifts = np.array(self.shifts, dtype=np.int64)
        self.a_floors = np.array(floors, dtype=np.int64)
        self.a_offsets = np.array(offsets, dtype=np.int64)
        self.a_run_ends = np.array(run, dtype=np.int64)


@dataclass(frozen=True, eq=False, repr=False)
class DayRule:
    """How a timestamp maps to a business day: the shop's local time and the hour the
    trading day starts (a restaurant day that ends at 04:00).

    Local time is a fixed offset (``utc_offset="+08:00"``) or an IANA time zone
    (``tz="Europe/Berlin"``, through the standard library's zoneinfo), whose offset
    follows daylight saving.  The business day of a time is the local calendar date of
    (its local time minus ``starts_at``), the local time using the zone's offset at that
    moment; a day begins at the first instant the local wall clock reads its date and
    ``starts_at`` or later (on a spring-forward night whose gap holds ``starts_at``: the
    instant the clocks jump).  So a business day lasts 23 or 25 hours across a change,
    and once begun it never gives way to the day before: when a fall-back repeats the
    wall-clock hour in which a day starts (New York with starts_at 01:30, whose clocks go
    from 02:00 back to 01:00), the repeated stretch stays on the new day, where the local
    date of (local time minus starts_at) would say the day before.  ``offset_minutes`` of
    a time-zone rule is the zone's standard offset (utcoffset - dst, now): shown and
    stored for readers, never used for a day.

    >>> rule = DayRule(utc_offset="+08:00", starts_at="04:00")
    >>> rule.day_of(_dt.datetime(2026, 11, 20, 19, 30, tzinfo=_dt.timezone.utc))
    datetime.date(2026, 11, 20)
    >>> berlin = DayRule(tz="Europe/Berlin", starts_at="04:00")
    >>> berlin.describe(), berlin.day_of(_dt.datetime(2026, 3, 29, 2, 30))   # 04:30 CEST
    ('Europe/Berlin, day starts 04:00', datetime.date(2026, 3, 29))
    >>> hours = lambda day: (berlin.day_start_us(day + 1) - berlin.day_start_us(day)) // 3_600_000_000
    >>> hours(day_number("2026-03-28")), hours(day_number("2026-10-24"))  # clocks change the next night
    (23, 25)
    """
    utc_offset: object = None       # "+08:00", minutes or a timedelta; None: "+00:00" (or tz's)
    starts_at: object = "00:00"
    tz: object = None               # an IANA zone name (or a zoneinfo.ZoneInfo)
    if TYPE_CHECKING:   # per instance, set by __post_init__ (ClassVar: not dataclass fields)
        offset_minutes: ClassVar[int]
        start_minutes: ClassVar[int]
        tz_name: ClassVar[str]
        _zone: ClassVar[Optional[_dt.tzinfo]]      # the ZoneInfo of a time-zone rule
        _zone_table: ClassVar[_ZoneTable]
        _table: ClassVar[Optional[_RuleTable]]
        _hot: ClassVar[Tuple[int, int, int, int]]
        _shift: ClassVar[int]                     # a fixed rule's (offset - start) in us

    def __post_init__(self):
        # parsed once: day_number runs on every append
        start = _clock_minutes(self.starts_at)
        object.__setattr__(self, "start_minutes", start)
        if self.tz is None:
            offset = _offset_minutes("+00:00" if self.utc_offset is None else self.utc_offset)
            if not -14 * 60 <= offset <= 14 * 60:
                raise ValueError("utc_offset %r is beyond ±14:00" % (self.utc_offset,))
            object.__setattr__(self, "offset_minutes", offset)
            object.__setattr__(self, "tz_name", "")
            object.__setattr__(self, "_zone", None)
            object.__setattr__(self, "_shift", (offset - start) * 60_000_000)
            return
        if self.utc_offset is not None:
            raise InvalidArgument("posfast: DayRule takes utc_offset= or tz=, not both "
                                  "(utc_offset=%r, tz=%r): a time zone gives the offset at every "
                                  "moment, daylight saving included; drop utc_offset"
                                  % (self.utc_offset, str(self.tz)))
        name = getattr(self.tz, "key", self.tz)     # a ZoneInfo is taken by its name
        if not isinstance(name, str) or not name.strip():
            raise InvalidArgument("posfast: tz=%r: give an IANA time zone name such as "
                                  "'Asia/Shanghai' (a str)" % (self.tz,))
        zone = _load_zone(name.strip())
        object.__setattr__(self, "tz_name", str(zone.key))
        object.__setattr__(self, "_zone", zone)
        object.__setattr__(self, "_zone_table", _ZoneTable.of(zone))
        object.__setattr__(self, "_table", None)
        object.__setattr__(self, "_hot", (0, 0, 0, 0))      # (lo, hi, shift, floor): day_number's cache
        # offset_minutes of a zone: its standard (non-daylight-saving) offset now, i.e.
        # utcoffset - dst; informational only, no day is computed from it
        now = _dt.datetime.now(zone)
        std = (now.utcoffset() or _dt.timedelta(0)) - (now.dst() or _dt.timedelta(0))
        object.__setattr__(self, "offset_minutes", int(std.total_seconds() // 60))
        object.__setattr__(self, "day_number", self._zone_day_number)

    @classmethod
    def from_header(cls, offset_minutes: int, start_minutes: int, tz_name: str = "") -> DayRule:
        """The rule a journal header holds: its UTC offset and day start in minutes, and its
        time zone's name ("" for a fixed offset).  With a zone name the offset is not used
        (it is the zone's standard offset when the header was written, for a reader that
        cannot load the zone); an unknown zone is an error, never a silent fixed offset.

        >>> DayRule.from_header(480, 240) == DayRule(utc_offset="+08:00", starts_at="04:00")
        True
        """
        if tz_name:
            return cls(starts_at=int(start_minutes), tz=str(tz_name))
        return cls(utc_offset=int(offset_minutes), starts_at=int(start_minutes))

    # ------------------------------------------------------------ identity
    def _key(self):
        return (self.tz_name, self.start_minutes, None if self.tz_name else self.offset_minutes)

    def __eq__(self, other):
        if not isinstance(other, DayRule):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        start = "%02d:%02d" % divmod(self.start_minutes, 60)
        if self.tz_name:
            return "DayRule(tz=%r, starts_at=%r)" % (self.tz_name, start)
        sign = "-" if self.offset_minutes < 0 else "+"
        return "DayRule(utc_offset=%r, starts_at=%r)" % (
            "%s%02d:%02d" % ((sign,) + divmod(abs(self.offset_minutes), 60)), start)

    def __reduce__(self):
        return (DayRule.from_header, (self.offset_minutes, self.start_minutes, self.tz_name))

    # ------------------------------------------------------------ the rule
    @property
    def tzinfo(self) -> _dt.tzinfo:
        """The rule's local time: the ZoneInfo of a time-zone rule, else the fixed offset."""
        if self._zone is not None:
            return self._zone
        return _dt.timezone(_dt.timedelta(minutes=self.offset_minutes))

    @property
    def day_shift(self) -> int:
        """A fixed rule's (UTC offset - day start) in microseconds: its day_number is
        (ts + day_shift) // one day.  (A time-zone rule's shift changes with the zone's.)"""
        return self._shift

    def day_number(self, ts_us: int) -> int:
        """Business day (days since 1970-01-01) of a time in microseconds since the epoch."""
        return (int(ts_us) + self._shift) // 86_400_000_000      # (a time zone's: below)

    def _rule_table(self, lo_us: int, hi_us: int) -> _RuleTable:
        arrays = self._zone_table.covering(lo_us, hi_us)
        table = self._table
        if table is None or table.version != arrays[0]:
            table = _RuleTable(arrays, self.start_minutes * 60_000_000)
            object.__setattr__(self, "_table", table)
        return table

    def _zone_day_number(self, ts_us: int) -> int:
        # a time-zone rule's day_number (set on the instance): the interval of the last
        # time asked is cached, so the common case is two comparisons
        ts = int(ts_us)
        lo, hi, shift, floor = self._hot
        if lo <= ts < hi:
            day = (ts + shift) // _DAY_US
            return day if day > floor else floor
        table = self._rule_table(ts, ts)
        k = bisect.bisect_right(table.starts, ts) - 1
        lo, hi = table.covered
        end = table.starts[k + 1] if k + 1 < len(table.starts) else _I64_MAX
        object.__setattr__(self, "_hot", (max(table.starts[k], lo), min(end, hi),
                                          table.shifts[k], table.floors[k]))
        day = (ts + table.shifts[k]) // _DAY_US
        return max(day, table.floors[k])

    def day_numbers(self, ts_us) -> np.ndarray:
        """Business days of many times at once (an int32 array; ``day_number`` of each):
        numpy over the zone's offset intervals, no zoneinfo call per time."""
        ts = np.asarray(ts_us)
        if ts.dtype != np.int64:
            ts = ts.astype(np.int64)
        if self._zone is None:
            return ((ts + self._shift) // _DAY_US).astype(np.int32)
        if ts.size == 0:
            return np.zeros(ts.shape, dtype=np.int32)
        lo, hi = int(ts.min()), int(ts.max())
        table = self._rule_table(lo, hi)
        first = bisect.bisect_right(table.starts, lo) - 1
        last = bisect.bisect_right(table.starts, hi) - 1
        if first == last:                       # the usual batch: one offset throughout
            days = (ts + table.shifts[first]) // _DAY_US
            floor = table.floors[first]
            if floor > (lo + table.shifts[first]) // _DAY_US:
                np.maximum(days, floor, out=days)
            return days.astype(np.int32)
        changes = table.a_starts[first + 1:last + 1]       # the offset changes within the times
        j = None
        base = lo - lo % _DAY_US
        buckets = (hi - base) // _DAY_US + 1
        if buckets <= max(1 << 16, ts.size):
            # by UTC day: the interval each day starts in and the change inside it, if any
            # (a gather per time instead of a binary search: 2-3x faster on unsorted times)
            edges = base + np.arange(buckets + 1, dtype=np.int64) * _DAY_US
            at_start = np.searchsorted(changes, edges[:-1], side="right")
            inside = np.searchsorted(changes, edges[1:] - 1, side="right") - at_start
            if inside.max() <= 1:
                nxt = np.where(inside > 0, changes[np.minimum(at_start, len(changes) - 1)], _I64_MAX)
                bucket = ts - base
                bucket //= _DAY_US
                bucket = bucket.astype(np.intp)     # < buckets: an index on a 32-bit CPU too
                j = at_start.take(bucket)
                j += ts >= nxt.take(bucket)
        if j is None:
            j = np.searchsorted(changes, ts, side="right")
        days = table.a_shifts[first:last + 1].take(j)
        days += ts
        days //= _DAY_US
        if table.active[first:last + 1].any():           # a fall-back across a day start
            np.maximum(days, table.a_floors[first:last + 1].take(j), out=days)
        return days.astype(np.int32)

    def day_table(self, lo_us: int, hi_us: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rule as offset intervals, for code that computes days without Python (a core
        that derives the day column itself): ``(starts, shifts, floors)``, int64 arrays, with
        the day of ``ts`` in [lo_us, hi_us] = ``max((ts + shifts[k]) // 86_400_000_000,
        floors[k])`` for the last ``k`` with ``starts[k] <= ts`` (``starts[0]`` is the int64
        minimum; a fixed offset is one interval).  The same days as :meth:`day_number`."""
        if self._zone is None:
            shift = (self.offset_minutes - self.start_minutes) * 60_000_000
            return (np.array([_I64_MIN], np.int64), np.array([shift], np.int64),
                    np.array([_I64_MIN], np.int64))
        table = self._rule_table(int(lo_us), int(hi_us))
        return table.a_starts.copy(), table.a_shifts.copy(), table.a_floors.copy()

    def local_to_us(self, wall_us):
        """UTC microseconds of local wall-clock times (a local date and time written as
        microseconds since 1970-01-01 00:00 *local*), an int or an int array.  A time the
        clocks skip (spring forward) gives the instant of the jump, a time they show twice
        (fall back) the first of the two: the first instant at or after that wall time."""
        if self._zone is None:
            shift = self.offset_minutes * 60_000_000
            return int(wall_us) - shift if np.ndim(wall_us) == 0 else \
                np.asarray(wall_us, dtype=np.int64) - shift
        pad = 2 * _DAY_US + self.offset_minutes * 60_000_000
        if np.ndim(wall_us) == 0:
            wall = int(wall_us)
            table = self._rule_table(wall - pad, wall - pad + 4 * _DAY_US)
            k = min(bisect.bisect_right(table.run_ends, wall), len(table.starts) - 1)
            return max(table.starts[k], wall - table.offsets[k])
        wall = np.asarray(wall_us, dtype=np.int64)
        if wall.size == 0:
            return wall.copy()
        table = self._rule_table(int(wall.min()) - pad, int(wall.max()) - pad + 4 * _DAY_US)
        k = np.searchsorted(table.a_run_ends, wall, side="right")
        np.minimum(k, len(table.starts) - 1, out=k)
        return np.maximum(table.a_starts[k], wall - table.a_offsets[k])

    def day_of(self, when: TimeLike) -> _dt.date:
        """Business day of a datetime (naive = UTC) or of microseconds since epoch."""
        return _dt.date(1970, 1, 1) + _dt.timedelta(days=self.day_number(to_us(when)))

    def day_start_us(self, day: DayLike) -> int:
        """First microsecond (UTC) of a business day: when the local wall clock first reads
        the day's date and ``starts_at`` or later (see the class doc)."""
        if self._zone is None:
            return (day_number(day) * 86_400_000_000
                    - (self.offset_minutes - self.start_minutes) * 60_000_000)
        return self.local_to_us(day_number(day) * _DAY_US + self.start_minutes * 60_000_000)

    def describe(self) -> str:
        if self.tz_name:
            return "%s, day starts %02d:%02d" % ((self.tz_name,) + divmod(self.start_minutes, 60))
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
#: Where each RECORD_DTYPE field is: its place among a row's values (`row_values`,
#: `unpack_row`) and its byte offset in a row.
ROW_INDEX: Dict[str, int] = dict(_ROW_ORDER)
ROW_OFFSET: Dict[str, int] = {name: spec[1] for name, spec in _ROW_FIELDS.items()}
#: One RECORD_DTYPE row as a struct (the padding bytes are x): `pack_row`.
_ROW_STRUCT = struct.Struct("<QqqQQiIIIHBBBB4s6s12s16sHBx10s6x")
assert _ROW_STRUCT.size == RECORD_DTYPE.itemsize and RECORD_DTYPE.names == (
    "seq", "ts", "amount", "txn_id", "ref_seq", "day", "terminal", "receipt_no", "operator",
    "currency", "kind", "state", "method", "flags", "pan_last4", "auth_code", "rrn",
    "client_ref", "payload_len", "ext_len", "channel")
#: Each enum field's members by lower-case name (the usual spelling, looked up first; the
#: core's fast path of one append takes them too).
ENUM_NAMES = {name: {m.name.lower(): int(m) for m in cls} for name, cls in _ENUM_FIELDS.items()}


def row_values(fields: dict, day_rule: DayRule) -> list:
    """Validate keyword fields of one record into its values in RECORD_DTYPE order (what
    `pack_row` packs): the single-append path, with no arrays."""
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
            known = ENUM_NAMES[name].get(value) if type(value) is str else None
            value = known if known is not None else int(_ENUM_FIELDS[name].coerce(value, name))
        elif name in _TEXT_FIELDS:
            if type(value) is not bytes or len(value) > _TEXT_FIELDS[name] or \
                    name == "pan_last4" or value.endswith(b"\0"):
                value = _text(name, value)          # (plain short bytes are already right)
        elif name == "ts":
            value = ts = check_ts(to_us(value))
        elif type(value) is not int or not _INT_FIELDS[name][0] <= value <= _INT_FIELDS[name][1]:
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
    return values


def pack_row(values: Sequence) -> bytes:
    """The RECORD_DTYPE bytes of one record's values (in RECORD_DTYPE order)."""
    return _ROW_STRUCT.pack(*values)


def unpack_row(row: bytes) -> tuple:
    """The values (RECORD_DTYPE order) of one row's bytes: `pack_row` undone."""
    return _ROW_STRUCT.unpack(row)


def make_row(fields: dict, day_rule: DayRule) -> np.ndarray:
    """Validate keyword fields of one record into a 1-row RECORD_DTYPE array."""
    return np.frombuffer(bytearray(pack_row(row_values(fields, day_rule))), dtype=RECORD_DTYPE)


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
    if arr.size == 0 and isinstance(col, (list, tuple)):
        arr = np.zeros(0, dtype=np.int64)       # (numpy reads an empty list as floats)
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
    values: dict = {}           # validated columns, packed into rows at the end
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
            if arr.size == 0 and isinstance(col, (list, tuple)):
                arr = np.zeros(0, dtype=np.int64)   # (numpy reads an empty list as floats)
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
            values[name] = arr
        elif name in _TEXT_FIELDS:
            values[name] = _text_column(name, col, n)
        else:
            arr = _int_column(name, col, n)
            lo, hi = _INT_FIELDS[name]
            if n and arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
                i = int(np.argmax(np.broadcast_to((arr < lo) | (arr > hi), (n,))))
                raise InvalidRecord("posfast: row %d: %s=%d is out of range [%d, %d]"
                                    % (i, name, int(np.broadcast_to(arr, (n,))[i]), lo, hi))
            values[name] = arr
    if not n:
        return np.zeros(0, dtype=RECORD_DTYPE)      # (scalars given for no rows: never read)
    if "ts" not in columns or columns["ts"] is None:
        values["ts"] = np.int64(now_us())
    ts = np.broadcast_to(np.asarray(values["ts"]).astype(np.int64, copy=False), (n,))
    if "ts" in columns and columns["ts"] is not None:
        hi = now_us() + TS_FUTURE_US
        bad = (ts < TS_MIN_US) | (ts > hi)
        if bad.any():
            i = int(np.argmax(bad))
            check_ts(int(ts[i]), "row %d: " % i, now=hi - TS_FUTURE_US)
    kinds = _column(values, "kind", n)
    payment = IS_PAYMENT_KIND[kinds]
    if payment.any():
        amounts = _column(values, "amount", n)
        currency = _column(values, "currency", n) if "currency" in values else None
        bad = payment & (amounts < 0)
        if currency is not None:
            bad |= payment & ((currency == 0) | (currency == 999))
        if bad.any():
            i = int(np.argmax(bad))
            _check_money(int(kinds[i]), int(amounts[i]),
                         None if currency is None else int(currency[i]), "row %d: " % i)
    values["day"] = day_rule.day_numbers(ts)
    rows = np.zeros(n, dtype=RECORD_DTYPE)
    _core.pack_columns(rows.view(np.uint8).reshape(n, RECORD_DTYPE.itemsize),
                       [(_FIELD_AT[name][1], _packable(name, arr, n))
                        for name, arr in values.items()])
    return rows


def _column(values: dict, name: str, n: int) -> np.ndarray:
    """A validated column as the row field's dtype, one value per row (0 where not given)."""
    dtype = _FIELD_AT[name][0]
    if name not in values:
        return np.zeros(n, dtype=dtype)
    return np.broadcast_to(np.asarray(values[name]).astype(dtype, copy=False), (n,))


def _packable(name: str, arr, n: int) -> np.ndarray:
    """A validated column as `pack_columns` takes it: the field's dtype, C-contiguous, one
    value per row or a single value (a scalar or a broadcast one) for all rows."""
    arr = np.asarray(arr)
    if arr.ndim == 0 or (arr.ndim == 1 and len(arr) and arr.strides[0] == 0):
        arr = arr.reshape(-1)[:1]
    return np.ascontiguousarray(arr, dtype=_FIELD_AT[name][0])


#: Sign of an approved payment of each kind in net totals: +1 sale and completion, -1 refund,
#: void and reversal, 0 pre-authorisation and cash drawer moves (not turnover).
KIND_SIGN = {Kind.SALE: 1, Kind.COMPLETION: 1, Kind.REFUND: -1, Kind.VOID: -1,
             Kind.REVERSAL: -1, Kind.PREAUTH: 0, Kind.CASH_IN: 0, Kind.CASH_OUT: 0}
#: :data:`KIND_SIGN` as a lookup table indexed by kind value (``KIND_SIGN_TABLE[rows["kind"]]``).
KIND_SIGN_TABLE = np.zeros(256, dtype=np.int64)
for _kind, _sign in KIND_SIGN.items():
    KIND_SIGN_TABLE[int(_kind)] = _sign
del _kind, _sign


def print_jobs(prints: np.ndarray, finals: bool = False):
    """One row per print job from PRINT records (``Journal.query(kind="print")`` rows):
    the job's first record, with ``state`` the job's outcome.

    A job is journaled UNKNOWN before its bytes go out and finalised by a second
    PRINT record (``ref_seq`` = the first one's seq) with OK / FAILED / UNKNOWN
    once the printer answered; a job that was never finalised (a crash while
    printing) stays UNKNOWN.  A single record (written by posfast 0.1) is a job
    on its own.  With ``finals=True`` also the seq of each job's finalising record
    (0 where there is none), aligned with the jobs.

    >>> rows = np.zeros(3, dtype=[("seq", "u8"), ("ref_seq", "u8"), ("state", "u1")])
    >>> rows["seq"], rows["ref_seq"], rows["state"] = [5, 6, 7], [2, 5, 2], [8, 6, 8]
    >>> [(int(r["seq"]), State(int(r["state"])).name) for r in print_jobs(rows)]
    [(5, 'FAILED'), (7, 'UNKNOWN')]
    """
    finishing = np.isin(prints["ref_seq"], prints["seq"])
    jobs = prints[~finishing].copy()
    done = prints[finishing]
    final_seqs = np.zeros(len(jobs), dtype=np.uint64)
    if len(done):
        at = np.searchsorted(jobs["seq"], done["ref_seq"])
        jobs["state"][at] = done["state"]
        final_seqs[at] = done["seq"]
    return (jobs, final_seqs) if finals else jobs
