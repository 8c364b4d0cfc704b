"""posfast: a durable ring-buffer transaction journal for point-of-sale terminals.

>>> import posfast
>>> posfast.Kind.coerce("sale")
<Kind.SALE: 1>
"""
from ._core import Record, chain_link, genesis_link
from .errors import (BackOfficeFull, BackOfficeMissing, CorruptRecord, DayClosed, EscposParseError,
                     FormatVersionError, InvalidArgument, InvalidRecord, IOFailure, JournalClosed,
                     JournalExists, JournalFull, JournalLocked, JournalNotFound, PaymentError,
                     PosfastError, ReprintRefused, SettlementError, SyncBadAck, SyncConfigError,
                     SyncError, SyncRefused, SyncUnavailable, UnprintableText)
from .journal import Batch, Journal, Problem, VerifyReport
from .records import RECORD_DTYPE, DayRule, Flag, Kind, Method, State

from ._version import __version__


def build_info() -> dict:
    """How this build of the core was compiled and which checksum paths the CPU uses."""
    from . import _core
    import platform
    info = {"version": __version__, "format_version": _core.FORMAT_VERSION, "core": "compiled",
            "machine": platform.machine(), "python": platform.python_version()}
    info.update({"crc32c": _core.checksum_impl()["crc32c"], "sha256": _core.checksum_impl()["sha256"]})
    return info


__all__ = ["Journal", "Record", "RECORD_DTYPE", "Kind", "State", "Method", "Flag", "DayRule",
           "Batch", "Problem", "VerifyReport", "chain_link", "genesis_link", "build_info",
           "PosfastError", "CorruptRecord", "JournalFull", "JournalLocked", "FormatVersionError",
           "InvalidRecord", "JournalClosed", "IOFailure", "JournalExists", "JournalNotFound",
           "InvalidArgument", "PaymentError", "DayClosed", "ReprintRefused", "SyncError",
           "SyncRefused", "SyncUnavailable", "BackOfficeFull", "SyncConfigError",
           "BackOfficeMissing", "SyncBadAck", "SettlementError", "EscposParseError",
           "UnprintableText", "__version__"]
