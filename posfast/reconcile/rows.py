"""A parsed statement: :data:`SETTLEMENT_DTYPE` rows in a :class:`Settlement`, and the
helpers every statement reader shares (times, currencies, refusals)."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import SettlementError

__all__ = ["OPTIONAL_COLUMNS", "SETTLEMENT_DTYPE", "Settlement"]

_US = 1_000_000


#: Optional columns of the posfast CSV: the host's and the merchant's references, the fee
#: (integer minor units) and the batch or payout the row was settled in.
OPTIONAL_COLUMNS = ("host_ref", "order_ref", "fee", "batch")

#: One settled payment.  ``state``: 0 (NONE) or APPROVED for a settled payment, REVERSED for
#: one the host revoked; ``fee``: the acquirer's fee in thousandths of a minor unit
#: (``amounts.FEE_SCALE``), signed as charged; ``batch``: 1 + index into
#: ``Settlement.batches`` (0: none).  ``terminal`` is the terminal number where the
#: statement's terminal id is digits (its text is ``Settlement.tid``).
SETTLEMENT_DTYPE = np.dtype([("line", "<u4"), ("terminal", "<u4"), ("ts", "<i8"), ("amount", "<i8"),
                             ("currency", "<u2"), ("kind", "u1"), ("rrn", "S12"),
                             ("auth_code", "S6"), ("state", "u1"), ("fee", "<i8"),
                             ("batch", "<u4")])


@dataclass
class Settlement:
    """A statement, parsed: one SETTLEMENT_DTYPE row per payment line.

    ``format`` names the layout it was read as; ``channel`` the payment channel it covers
    (``"wechat"``, ``"alipay"``, ``"unionpay"``, ``"adyen"``, ``"stripe"``; None: any);
    ``order_ref`` / ``host_ref`` are byte-string arrays beside the rows (None: the
    statement has no such column), and so are ``tid`` (the terminal id as the statement
    writes it; None: it names none, or, posfast's CSV, only terminal numbers) and
    ``voucher`` (the slip's voucher number, carried for the reader); ``batches`` the batch or payout names; ``has_fees``
    whether it states fees; ``notes`` what was read but is not a payment (summaries,
    payouts, fee lines)."""
    path: str
    rows: np.ndarray
    order_ref: Optional[np.ndarray] = None
    host_ref: Optional[np.ndarray] = None
    format: str = "posfast"
    channel: Optional[str] = None
    batches: tuple = ()
    has_fees: bool = False
    notes: list = field(default_factory=list)
    tid: Optional[np.ndarray] = None
    voucher: Optional[np.ndarray] = None

    def __len__(self):
        return len(self.rows)

    def take(self, which) -> "Settlement":
        """The same statement with only the rows `which` (a mask or indices) selects."""
        def pick(column):
            return None if column is None else column[which]
        return dataclasses.replace(self, rows=self.rows[which], order_ref=pick(self.order_ref),
                                   host_ref=pick(self.host_ref), tid=pick(self.tid),
                                   voucher=pick(self.voucher))


_TRIM = []


def release_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim; nothing
    elsewhere).  A statement is read block by block: a million rows leave ~150 MB of freed
    block buffers in the heap that glibc keeps resident, and RSS is what a 500 MB budget
    counts."""
    if not _TRIM:
        import ctypes
        import ctypes.util
        import sys
        trim = None
        if sys.platform.startswith("linux"):
            try:
                trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
                trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
            except (OSError, AttributeError):
                trim = None
        _TRIM.append(trim)
    if _TRIM[0] is not None:
        _TRIM[0](0)


def _column_error(path, line, column, value, why):
    return SettlementError("posfast: settlement file %s, line %d, column %s: %r %s"
                           % (path, line, column, value, why), path, line, column, value)


def _find_bad(path, lines, column, values, check, why):
    """Error path: the first value failing `check` (a callable raising on bad input)."""
    for line, value in zip(lines, values):
        try:
            check(value)
        except (ValueError, TypeError, OverflowError, UnicodeError, KeyError):
            raise _column_error(path, line, column, value, why) from None
    raise SettlementError("posfast: settlement file %s: column %s could not be read" % (path, column),
                          path, None, column, None)


def _currency_codes():
    from ..receipt import CURRENCIES
    return {alpha: number for number, (alpha, _exp) in CURRENCIES.items()}


def _parse_times(path, lines, values, rule):
    """ISO 8601 strings to UTC microseconds; naive times are local time of `rule` (a DayRule:
    its fixed offset, or its time zone's offset at that wall time, see DayRule.local_to_us).

    numpy parses the usual shapes at once; anything else is parsed value by value
    with datetime.fromisoformat, and the first value neither can read is an error."""
    arr = np.asarray([v.strip() for v in values], dtype=str)
    n = len(arr)
    if not n:
        return np.zeros(0, np.int64)
    width = arr.dtype.itemsize // 4
    codes = arr.view(np.uint32).reshape(n, width) if width else np.zeros((n, 0), np.uint32)
    lengths = np.char.str_len(arr)
    has_zone = np.zeros(n, bool)
    if width > 10:
        tail = codes[:, 10:]
        has_zone = ((tail == ord("Z")) | (tail == ord("z")) | (tail == ord("+"))
                    | (tail == ord("-"))).any(axis=1)
    has_clock = (lengths >= 16) & np.isin(codes[:, 10] if width > 10 else np.zeros(n, np.uint32),
                                          [ord("T"), ord(" "), ord("t")])
    out = np.zeros(n, np.int64)
    try:
        if not has_clock.all():
            raise ValueError("date without a time")
        naive = ~has_zone
        if naive.any():
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                stamps = arr[naive].astype("datetime64[us]").astype(np.int64)
            out[naive] = rule.local_to_us(stamps)
        for i in np.flatnonzero(has_zone).tolist():
            moment = _dt.datetime.fromisoformat(arr[i].strip().replace("z", "Z"))
            out[i] = (moment - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)) \
                // _dt.timedelta(microseconds=1)
    except (ValueError, TypeError, OverflowError, Warning):
        epoch = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
        for i, (line, value) in enumerate(zip(lines, values)):
            text = value.strip()
            try:
                if len(text) < 16 or text[10] not in "Tt ":
                    raise ValueError("no time of day")
                moment = _dt.datetime.fromisoformat(text.replace("z", "Z"))
            except ValueError:
                raise _column_error(path, line, "time", value, "is not an ISO 8601 time with "
                                    "date and clock (2026-11-20T13:45:12[+08:00])") from None
            if moment.tzinfo is None:
                out[i] = rule.local_to_us((moment - epoch.replace(tzinfo=None))
                                          // _dt.timedelta(microseconds=1))
            else:
                out[i] = (moment - epoch) // _dt.timedelta(microseconds=1)
    return out
