"""Retention: how many days of history a storage budget holds, computed and measured.

A terminal gives the journal a fixed budget of flash (say 64 MB).  The ring is
created once at full size and never grows, so the question "how far back can
the cashier reprint?" has an exact answer from the format: every record takes
``ceil((128 + payload) / slot_size)`` slots, the file adds an 8 KiB header, and
the index file beside it (``<journal>.idx``) adds about 14 bytes per record
(its saved positions and the day/terminal/kind bitmaps), twice over for the
moment it is rewritten.

>>> from posfast.retention import capacity_plan, parse_size
>>> plan = capacity_plan(parse_size("64MB"), per_day=800, payload_bytes=300)
>>> plan.slots_per_record, plan.capacity, round(plan.days, 1)
(4, 496981, 155.3)

``capacity_plan(..., measure=True)`` fills a real journal of that capacity in a
temporary directory (retention="overwrite", durability="none"), lapping the ring,
and reports the whole business days it really held and the real file sizes.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import _core
from .errors import InvalidArgument

HEAD_BYTES = _core.HEAD_SIZE        # record head (PFR_HEAD_SIZE in src/pf_format.h)
HEADER_BYTES = _core.DATA_OFFSET    # two header copies before the first slot
INDEX_BYTES_PER_RECORD = 14   # .idx: 8-byte saved position + bitmaps (measured 10-13 B)
INDEX_FIXED_BYTES = 4096
# The index is rewritten atomically (a temp file, then rename), so for a moment two
# copies exist: the budget must hold the ring plus twice the index.
INDEX_COPIES = 2
LIMIT_32BIT = 1 << 30     # src/ring.pxi refuses journals over 1 GiB on 32-bit CPUs

_UNITS = {"": 1, "b": 1,
          "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
          "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
          "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text) -> int:
    """Bytes from a size such as ``"64MB"``, ``"1.5 GiB"``, ``"512k"`` or ``4096``.

    Storage budgets on terminals are given in binary units, so MB means MiB
    (1,048,576 bytes); write the plain number of bytes for anything else.

    >>> parse_size("64MB"), parse_size("2 GiB"), parse_size("8m"), parse_size(1000)
    (67108864, 2147483648, 8388608, 1000)
    """
    if isinstance(text, (int, np.integer)):
        if text < 0:
            raise InvalidArgument("size %d is negative" % text)
        return int(text)
    match = _SIZE.match(str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise InvalidArgument("size %r: write a number with an optional unit B, KB, MB, GB or TB "
                         "(binary: 1 MB = 1,048,576 bytes), e.g. 64MB" % (text,))
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_size(nbytes: int) -> str:
    """``67108864 -> '64.0 MB'`` (binary units, as `parse_size` reads them)."""
    for unit, scale in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if nbytes >= scale:
            return "%.1f %s" % (nbytes / scale, unit)
    return "%d B" % nbytes


def slots_per_record(payload_bytes: int, slot_size: int = 128) -> int:
    """Slots one record takes: ``ceil((128 + payload) / slot_size)``.

    >>> slots_per_record(0), slots_per_record(300), slots_per_record(300, 512)
    (1, 4, 1)
    """
    return -(-(HEAD_BYTES + int(payload_bytes)) // int(slot_size))


@dataclass
class CapacityPlan:
    """What a storage budget holds at a given volume (see `capacity_plan`)."""
    budget_bytes: int
    per_day: int
    payload_bytes: int
    slot_size: int
    slots_per_record: int
    capacity: int            # slots: pass as Journal.create(capacity=...)
    max_payload: int         # smallest max_payload that admits payload_bytes
    ring_bytes: int          # the journal file
    index_bytes: int         # estimate of <journal>.idx when full
    records: int             # records the full ring holds
    days: float              # records / per_day
    notes: list = field(default_factory=list)
    measured_days: Optional[float] = None       # whole days held + the oldest partial day, from a real journal
    measured_records: Optional[int] = None
    measured_ring_bytes: Optional[int] = None
    measured_index_bytes: Optional[int] = None
    measured_seconds: Optional[float] = None

    @property
    def total_bytes(self) -> int:
        """Peak storage: the ring plus two copies of the index while it is rewritten."""
        return self.ring_bytes + INDEX_COPIES * self.index_bytes

    @property
    def whole_days(self) -> int:
        return int(self.days)

    def summary(self) -> str:
        """The plan as the `posfast capacity` command prints it."""
        lines = [
            "budget             %s (%s bytes)" % (format_size(self.budget_bytes),
                                                  "{:,}".format(self.budget_bytes)),
            "volume             %s transactions per business day, %d-byte payloads, %d-byte slots"
            % ("{:,}".format(self.per_day), self.payload_bytes, self.slot_size),
            "slots per record   %d  (128-byte head + %d-byte payload in %d-byte slots)"
            % (self.slots_per_record, self.payload_bytes, self.slot_size),
            "journal            capacity=%s slots: ring file %s + index ~%s (x2 while rewritten) = %s"
            % ("{:,}".format(self.capacity), format_size(self.ring_bytes),
               format_size(self.index_bytes), format_size(self.total_bytes)),
            "holds              %s records = %.1f days of history (%d whole business days)"
            % ("{:,}".format(self.records), self.days, self.whole_days),
        ]
        if self.measured_days is not None:
            lines.append("measured           %.1f days: a real journal of that capacity lapped with "
                         "%s-a-day trading held %s records; ring %s, index %s (%.1f s)"
                         % (self.measured_days, "{:,}".format(self.per_day),
                            "{:,}".format(self.measured_records or 0),
                            format_size(self.measured_ring_bytes or 0),
                            format_size(self.measured_index_bytes or 0), self.measured_seconds or 0.0))
        lines.append("create it with     Journal.create(path, capacity=%d, slot_size=%d, "
                     "max_payload=%d)" % (self.capacity, self.slot_size, self.max_payload))
        lines += ["note               " + note for note in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        out["total_bytes"] = self.total_bytes
        return out


def capacity_plan(budget_bytes, per_day: int, payload_bytes: int = 0, slot_size: int = 128,
                  measure: bool = False, workdir=None) -> CapacityPlan:
    """Days of history that `budget_bytes` of storage holds at `per_day` records a day.

    Computed from the format: the ring (8 KiB header + capacity slots) and its
    index file together stay within the budget.  With ``measure=True`` a real
    journal of that capacity is created in a temporary directory (under
    `workdir` if given), filled past one lap of the ring at `per_day` records per
    business day, and the days it really holds are counted from its index; this
    writes about ``budget_bytes`` to disk.

    >>> plan = capacity_plan(8 << 20, per_day=2000)
    >>> plan.capacity, plan.records, round(plan.days, 2)
    (53668, 53668, 26.83)
    """
    budget = parse_size(budget_bytes)
    per_day = int(per_day)
    payload_bytes = int(payload_bytes)
    slot_size = int(slot_size)
    if per_day <= 0:
        raise InvalidArgument("per_day=%d (--per-day): give the number of transactions in a business "
                              "day, at least 1" % per_day)
    if not 0 <= payload_bytes <= 65535:
        raise InvalidArgument("payload_bytes=%d: a payload holds 0 to 65535 bytes" % payload_bytes)
    if not (_core.MIN_SLOT <= slot_size <= _core.MAX_SLOT) or slot_size % 64:
        raise InvalidArgument("slot_size=%d: use a multiple of 64 between %d and %d"
                              % (slot_size, _core.MIN_SLOT, _core.MAX_SLOT))
    spr = slots_per_record(payload_bytes, slot_size)
    usable = budget - HEADER_BYTES - INDEX_COPIES * INDEX_FIXED_BYTES
    # ring + index copies within the budget:
    #   capacity * slot + INDEX_COPIES * (capacity / spr) * INDEX_BYTES_PER_RECORD <= usable
    per_index = INDEX_COPIES * INDEX_BYTES_PER_RECORD
    capacity = int(usable * spr // (slot_size * spr + per_index)) if usable > 0 else 0
    if capacity < 2 * spr:
        raise InvalidArgument("a budget of %s is too small for a journal of %d-byte records: it needs "
                         "at least %s" % (format_size(budget), HEAD_BYTES + payload_bytes,
                                          format_size(HEADER_BYTES + INDEX_FIXED_BYTES
                                                      + 2 * spr * (slot_size + 2 * INDEX_BYTES_PER_RECORD))))
    records = capacity // spr
    ring_bytes = HEADER_BYTES + capacity * slot_size
    plan = CapacityPlan(budget_bytes=budget, per_day=per_day, payload_bytes=payload_bytes,
                        slot_size=slot_size, slots_per_record=spr, capacity=capacity,
                        max_payload=max(payload_bytes, 0), ring_bytes=ring_bytes,
                        index_bytes=INDEX_FIXED_BYTES + records * INDEX_BYTES_PER_RECORD,
                        records=records, days=records / per_day)
    if ring_bytes > LIMIT_32BIT:
        plan.notes.append("the ring file is over 1 GiB: 32-bit terminals (armv7l) refuse to open "
                          "it; split the budget or use a 64-bit terminal")
    if plan.days < 1:
        plan.notes.append("less than one business day fits: raise the budget or lower the volume")
    if measure:
        _measure(plan, workdir)
    return plan


def _measure(plan: CapacityPlan, workdir=None) -> None:
    """Fill a real journal of the planned capacity and count the business days it holds."""
    from .journal import Journal
    from .records import DayRule

    started = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="posfast-capacity-", dir=workdir)
    try:
        path = os.path.join(tmp, "plan.pfj")
        rule = DayRule(utc_offset="+00:00", starts_at="00:00")
        first_day = 20_000                              # 2024-10-04: any day will do
        # Whole days only, one day more than a lap, so the ring has wrapped and the
        # oldest day is partly overwritten exactly as on a terminal in service.
        n_days = int(math.ceil(plan.records / plan.per_day)) + 1
        spacing = 86_400_000_000 // plan.per_day
        rng = np.random.default_rng(1)
        payload = bytes(rng.integers(0, 256, plan.payload_bytes, dtype=np.uint8))
        with Journal.create(path, capacity=plan.capacity, slot_size=plan.slot_size,
                            max_payload=plan.max_payload, durability="none", day_rule=rule,
                            retention="overwrite") as journal:
            chunk = max(1, min(plan.per_day, 1 << 16))
            for day in range(first_day, first_day + n_days):
                day_start = rule.day_start_us(day)
                for start in range(0, plan.per_day, chunk):
                    n = min(chunk, plan.per_day - start)
                    idx = np.arange(start, start + n, dtype=np.int64)
                    columns = {"ts": day_start + idx * spacing, "terminal": (idx % 4) + 1,
                               "kind": 1, "state": 2, "method": 2, "currency": 156,
                               "amount": 100 + (idx % 9000), "receipt_no": idx + 1}
                    journal.append_many(columns, [payload] * n if plan.payload_bytes else None)
            live = journal.status()["live_records"]
            counts = [journal.count(day=d) for d in range(first_day, first_day + n_days)]
        whole = sum(1 for c in counts if c == plan.per_day)
        partial = [c for c in counts if 0 < c < plan.per_day]
        plan.measured_days = whole + (partial[0] / plan.per_day if partial else 0.0)
        plan.measured_records = live
        plan.measured_ring_bytes = os.path.getsize(path)
        plan.measured_index_bytes = os.path.getsize(path + ".idx")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    plan.measured_seconds = time.perf_counter() - started
