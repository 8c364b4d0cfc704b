"""Record model: enums, the RECORD_DTYPE row layout, the business-day rule and
the validation that turns user input into rows (one place, used by append and
append_many alike)."""
from __future__ import annotations

import datetime as _dt
import enum
import re
import time
from dataclasses import dataclass

import numpy as np

from .errors import InvalidRecord


class _NamedEnum(enum.IntEnum):
    @classmethod
    def coerce(cls, value, field=None):
        """Accept the enum, its int value or its name (any case): ``Kind.coerce("sale")``."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls[value.strip().upper().replace("-", "_")]
            except KeyError:
                pass
        else:
            try:
                return cls(int(value))
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


PAYMENT_KINDS = frozenset({Kind.SALE, Kind.REFUND, Kind.VOID, Kind.REVERSAL, Kind.PREAUTH,
                           Kind.COMPLETION, Kind.CASH_IN, Kind.CASH_OUT})


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
              "auth_code", "rrn", "client_ref", "payload_len"],
    "formats": ["<u8", "<i8", "<i8", "<u8", "<u8", "<i4", "<u4", "<u4", "<u4", "<u2", "u1", "u1",
                "u1", "u1", "S4", "S6", "S12", "S16", "<u2"],
    "offsets": [0, 8, 16, 24, 32, 40, 44, 48, 52, 56, 58, 59, 60, 61, 62, 66, 72, 84, 100],
    "itemsize": 104,
})
"""One decoded record: the columns `Journal.query` returns (little-endian on every CPU)."""

_TEXT_FIELDS = {"pan_last4": 4, "auth_code": 6, "rrn": 12, "client_ref": 16}
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
               "auth_code", "rrn")
_DIGITS13 = re.compile(rb"\d{13,19}")


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

    def __post_init__(self):
        # parsed once: day_number runs on every append
        object.__setattr__(self, "offset_minutes", _offset_minutes(self.utc_offset))
        object.__setattr__(self, "start_minutes", _clock_minutes(self.starts_at))
        if not -14 * 60 <= self.offset_minutes <= 14 * 60:
            raise ValueError("utc_offset %r is beyond ±14:00" % (self.utc_offset,))

    def day_number(self, ts_us: int) -> int:
        shifted = int(ts_us) + (self.offset_minutes - self.start_minutes) * 60_000_000
        return shifted // 86_400_000_000

    def day_of(self, when) -> _dt.date:
        """Business day of a datetime (naive = UTC) or of microseconds since epoch."""
        return _dt.date(1970, 1, 1) + _dt.timedelta(days=self.day_number(to_us(when)))

    def day_start_us(self, day) -> int:
        """First microsecond (UTC) of a business day."""
        return (day_number(day) * 86_400_000_000
                - (self.offset_minutes - self.start_minutes) * 60_000_000)

    def describe(self) -> str:
        sign = "-" if self.offset_minutes < 0 else "+"
        off = abs(self.offset_minutes)
        return "UTC%s%02d:%02d, day starts %02d:%02d" % (sign, off // 60, off % 60,
                                                          self.start_minutes // 60,
                                                          self.start_minutes % 60)


def to_us(when) -> int:
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


def day_number(day) -> int:
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


def _text(field, value) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        value = value.encode("utf-8")
    value = bytes(value)
    width = _TEXT_FIELDS[field]
    if field == "pan_last4" and (len(value) > 4 or _DIGITS13.search(value)):
        raise InvalidRecord("posfast: pan_last4 must hold at most the last 4 digits of the card "
                            "number, got %d characters; never store a full card number" % len(value))
    if len(value) > width:
        raise InvalidRecord("posfast: %s=%r is %d bytes, the field holds %d"
                            % (field, value, len(value), width))
    return value


def _refuse_pan(field, value):
    if isinstance(value, (bytes, str)):
        raw = value.encode() if isinstance(value, str) else value
        if _DIGITS13.search(raw.replace(b" ", b"").replace(b"-", b"")):
            raise InvalidRecord("posfast: %s looks like a full card number; store only pan_last4"
                                % field)


_FIELD_SET = frozenset(FIELD_NAMES)
_ROW_ORDER = {name: i for i, name in enumerate(RECORD_DTYPE.names)}
_ROW_ZERO = tuple(b"" if RECORD_DTYPE.fields[name][0].kind == "S" else 0
                  for name in RECORD_DTYPE.names)


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
            if name != "pan_last4":
                _refuse_pan(name, value)
            value = _text(name, value)
        elif name == "ts":
            value = ts = to_us(value)
        else:
            if isinstance(value, (float, bool)) or not isinstance(value, (int, np.integer)):
                raise InvalidRecord("posfast: %s=%r must be an integer%s" % (
                    name, value, " of minor units (cents, fen), never a float"
                    if name == "amount" else ""))
            lo, hi = _INT_FIELDS[name]
            value = int(value)
            if not lo <= value <= hi:
                raise InvalidRecord("posfast: %s=%d is out of range [%d, %d]" % (name, value, lo, hi))
        values[_ROW_ORDER[name]] = value
    if fields.get("kind") is None:
        raise InvalidRecord("posfast: a record needs kind= (sale, refund, print, ...)")
    if ts is None:
        ts = values[_ROW_ORDER["ts"]] = now_us()
    values[_ROW_ORDER["day"]] = day_rule.day_number(ts)
    return np.array([tuple(values)], dtype=RECORD_DTYPE)


def make_rows(columns: dict, day_rule: DayRule) -> np.ndarray:
    """Validate a dict of equal-length columns into a RECORD_DTYPE array, vectorized."""
    unknown = set(columns) - set(FIELD_NAMES)
    if unknown:
        raise InvalidRecord("posfast: unknown column(s) %s; columns are %s"
                            % (", ".join(sorted(unknown)), ", ".join(FIELD_NAMES)))
    lengths = {name: len(col) for name, col in columns.items()
               if not np.isscalar(col) and not isinstance(col, (str, bytes))}
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
            arr = np.asarray(col)
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
            try:
                arr = np.asarray(col, dtype="S")
            except UnicodeEncodeError:
                # non-ASCII text (a Chinese order reference) is stored as UTF-8, as append does
                arr = np.asarray(col.encode("utf-8") if isinstance(col, str) else
                                 [v.encode("utf-8") if isinstance(v, str) else v for v in col],
                                 dtype="S")
            arr = np.broadcast_to(arr, (n,))
            width = arr.dtype.itemsize
            if width > _TEXT_FIELDS[name]:
                lens = np.char.str_len(arr)
                i = int(np.argmax(lens > _TEXT_FIELDS[name]))
                if lens[i] > _TEXT_FIELDS[name]:
                    raise InvalidRecord("posfast: row %d: %s is %d bytes, the field holds %d"
                                        % (i, name, lens[i], _TEXT_FIELDS[name]))
            # (a pan_last4 longer than 4 bytes, a full card number, was refused just above)
            if name != "pan_last4" and width >= 13 and n:
                # as append refuses it: a field wide enough to hold a card number must not hold one
                raw = np.ascontiguousarray(arr).view(np.uint8).reshape(n, width)
                for i in np.flatnonzero(((raw >= 48) & (raw <= 57)).sum(axis=1) >= 13).tolist():
                    _refuse_pan("row %d: %s" % (i, name), bytes(arr[i]))
            rows[name] = arr
        else:
            arr = np.asarray(col)
            if arr.dtype.kind == "f":
                raise InvalidRecord("posfast: column %s is floating point; %s must be integers%s"
                                    % (name, name, " of minor units" if name == "amount" else ""))
            if arr.dtype.kind == "M":
                arr = arr.astype("datetime64[us]").astype(np.int64)
            if arr.dtype.kind not in "iu" and n:
                raise InvalidRecord("posfast: column %s must be integers, got %s" % (name, arr.dtype))
            lo, hi = _INT_FIELDS[name]
            if n and arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
                i = int(np.argmax((arr < lo) | (arr > hi)))
                raise InvalidRecord("posfast: row %d: %s=%d is out of range [%d, %d]"
                                    % (i, name, int(np.broadcast_to(arr, (n,))[i]), lo, hi))
            rows[name] = arr
    if "ts" not in columns:
        rows["ts"] = now_us()
    shifted = rows["ts"] + (day_rule.offset_minutes - day_rule.start_minutes) * 60_000_000
    rows["day"] = shifted // 86_400_000_000
    return rows
