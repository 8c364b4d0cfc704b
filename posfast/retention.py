"""Retention: how many days of history a storage budget holds, computed and measured.

A terminal gives the journal a fixed budget of flash (say 64 MB).  The ring is
created once at full size and never grows, so the question "how far back can
the cashier reprint?" has an exact answer from the format: every record takes
``ceil((128 + payload) / slot_size)`` slots, the file adds an 8 KiB header, and
the index file beside it (``<journal>.idx``) adds about 22 bytes per record
(its saved positions, the day/terminal/kind bitmaps and the payment maps), twice
over for the moment it is rewritten.

>>> from posfast.retention import capacity_plan, parse_size
>>> plan = capacity_plan(parse_size("64MB"), per_day=800, payload_bytes=300)
>>> plan.slots_per_record, plan.capacity, round(plan.days, 1)
(4, 482679, 150.8)

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
# .idx: 8-byte saved position + bitmaps (measured 10-13 B) + the payment maps saved at close
# (8 bytes for each key a record gives them: a receipt code, a client_ref, its outcome)
INDEX_BYTES_PER_RECORD = 22
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
    (48675, 48675, 24.34)
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
        # Whole days only, one day more than a lap, so the ring has wrapped and the
        # oldest day is partly overwritten exactly as on a terminal in service; the days
        # end before today (a journal refuses times more than a day ahead of the clock).
        n_days = int(math.ceil(plan.records / plan.per_day)) + 1
        first_day = int(time.time() // 86_400) - n_days - 2
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


# ------------------------------------------------------------------ ring + archive
@dataclass
class ArchivePlan:
    """What a card holds with retention="archive": a ring of `ring_days` plus the archive
    of every older day, each day's archive bytes measured on a real journal and archive
    filled with a few days of records like the store's (see `archive_plan`)."""
    budget_bytes: int
    per_day: int                 # payments per business day
    records_per_payment: int     # 1 (append) or 2 (begin_payment + finish_payment)
    payload_bytes: int           # receipt bytes per payment (0: none)
    ring_days: int
    ring: CapacityPlan           # the ring and its index
    sample_days: int             # days filled into the trial journal and archive
    archive_bytes_per_day: float     # measured: archive directory growth per business day
    archive_bytes_per_record: float
    receipt_ratio: Optional[float]   # receipt bytes / their share of the archive, if any
    archive_days: float              # days the rest of the budget holds in the archive
    measured_seconds: float
    notes: list = field(default_factory=list)

    @property
    def years(self) -> float:
        return (self.ring_days + self.archive_days) / 365.25

    def sentence(self) -> str:
        return ("a %s card holds %.1f years of a %s-payments-a-day store%s, reprintable"
                % (format_size(self.budget_bytes), self.years, "{:,}".format(self.per_day),
                   " with receipts" if self.payload_bytes else ""))

    def summary(self) -> str:
        lines = [
            "budget             %s (%s bytes)" % (format_size(self.budget_bytes),
                                                  "{:,}".format(self.budget_bytes)),
            "volume             %s payments per business day (%d record%s each)%s"
            % ("{:,}".format(self.per_day), self.records_per_payment,
               "s" if self.records_per_payment > 1 else "",
               ", %d-byte receipts" % self.payload_bytes if self.payload_bytes else ", no receipts"),
            "ring               %d days: capacity=%s slots, ring file %s + index ~%s (x2 while "
            "rewritten) = %s" % (self.ring_days, "{:,}".format(self.ring.capacity),
                                 format_size(self.ring.ring_bytes), format_size(self.ring.index_bytes),
                                 format_size(self.ring.total_bytes)),
            "archive            %s a business day (%.1f bytes a record), measured on %d days "
            "written to a real journal and archive (%.1f s)"
            % (format_size(int(self.archive_bytes_per_day)), self.archive_bytes_per_record,
               self.sample_days, self.measured_seconds),
        ]
        if self.receipt_ratio:
            lines.append("receipts           the archive (records and receipts) takes %.1fx less than "
                         "the receipts' text alone" % self.receipt_ratio)
        lines += [
            "archive holds      %.0f days in the rest of the budget (%s)"
            % (self.archive_days, format_size(max(0, self.budget_bytes - self.ring.total_bytes))),
            "holds              %s" % self.sentence(),
            "create it with     Journal.create(path, capacity=%d, slot_size=%d, max_payload=%d, "
            "retention=\"archive\")" % (self.ring.capacity, self.ring.slot_size,
                                        self.ring.max_payload),
        ]
        lines += ["note               " + note for note in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "ring"}
        out["ring"] = self.ring.to_dict()
        out["years"] = self.years
        out["sentence"] = self.sentence()
        return out


def sample_receipt(rng, receipt_no, payload_bytes, ts_us=0) -> bytes:
    """A receipt payload of about `payload_bytes`, laid out as `Receipt.to_payload` lays
    one out (compact JSON: issue time, items from a menu, totals, payment, footer): what
    the archive is measured with."""
    import datetime as dt
    menu = [("宫保鸡丁 Kung Pao chicken", 3800), ("Cola 330ml", 350), ("米饭 Rice", 200),
            ("Green tea 绿茶", 600), ("Dumplings 饺子 x12", 2400), ("Coffee", 1800),
            ("Bread 面包", 900), ("Milk 牛奶 1L", 1250), ("Noodles 面条", 1500),
            ("Orange juice", 700), ("Tofu 豆腐", 850), ("Apples 1kg", 1290)]
    at = (dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=int(ts_us))
          + dt.timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M:%S+08:00")
    items, total = [], 0
    while True:
        name, price = menu[int(rng.integers(0, len(menu)))]
        qty = int(rng.integers(1, 3))
        items.append('{"a":%d,"n":"%s","p":%d%s}' % (qty * price, name, price,
                                                     ',"q":%d' % qty if qty > 1 else ""))
        total += qty * price
        out = ('{"at":"%s","f":["谢谢惠顾 Thank you!"],"it":[%s],"m":"好又多超市 Haoyouduo Market",'
               '"no":%d,"pay":[{"a":%d,"c":"%04d","m":"card"}],"t":%d,"tot":%d,"v":1}'
               % (at, ",".join(items), receipt_no, total, int(rng.integers(0, 10000)),
                  receipt_no % 8 + 1, total)).encode()
        if len(out) >= payload_bytes or len(items) > 40:
            return out


def archive_plan(budget_bytes, per_day: int, payload_bytes: int = 0, ring_days: int = 14,
                 records_per_payment: int = 2, sample_days: int = 3, workdir=None) -> ArchivePlan:
    """Years of history a card holds with retention="archive": a ring of `ring_days`
    (enough to trade offline that long) and the archive of every older day.

    The archive's bytes per day are measured, not assumed: a real journal with a ring of
    one day is filled with `sample_days` + 1 days of `per_day` payments (times through
    trading hours, card/cash/QR, random amounts, card last-4, RRN and auth code on card
    payments, and a receipt of about `payload_bytes` on each), synced, so that the ring
    archives `sample_days` whole days; the archive directory's size over those days is
    the rate the rest of the budget is divided by."""
    from .journal import Journal
    from .records import DayRule

    budget = parse_size(budget_bytes)
    per_day, records_per_payment = int(per_day), int(records_per_payment)
    if records_per_payment not in (1, 2):
        raise InvalidArgument("records_per_payment=%d: 1 (append) or 2 (begin_payment and "
                              "finish_payment)" % records_per_payment)
    if int(ring_days) < 1:
        raise InvalidArgument("ring_days=%d (--ring-days): the ring holds at least one day" % ring_days)
    rec_per_day = per_day * records_per_payment
    # the ring: ring_days of records; with two records a payment only the second has the receipt
    spr = slots_per_record(payload_bytes)
    avg_slots = spr if records_per_payment == 1 else (1 + spr) / 2
    capacity = int(math.ceil(rec_per_day * int(ring_days) * avg_slots))
    ring = CapacityPlan(budget_bytes=budget, per_day=rec_per_day, payload_bytes=payload_bytes,
                        slot_size=128, slots_per_record=spr, capacity=capacity,
                        max_payload=max(payload_bytes, 0), ring_bytes=HEADER_BYTES + capacity * 128,
                        index_bytes=INDEX_FIXED_BYTES + rec_per_day * int(ring_days) * INDEX_BYTES_PER_RECORD,
                        records=rec_per_day * int(ring_days), days=float(ring_days))
    if ring.total_bytes >= budget:
        raise InvalidArgument("a %d-day ring (%s) does not fit a budget of %s: lower --ring-days"
                              % (ring_days, format_size(ring.total_bytes), format_size(budget)))
    started = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="posfast-capacity-", dir=workdir)
    try:
        path = os.path.join(tmp, "plan.pfj")
        rule = DayRule(utc_offset="+08:00", starts_at="04:00")
        rng = np.random.default_rng(7)
        first_day = 20_000
        one_day = int(math.ceil(rec_per_day * avg_slots)) + 2 * spr
        receipt_bytes = 0
        with Journal.create(path, capacity=one_day, max_payload=max(payload_bytes * 2, 256),
                            durability="none", day_rule=rule, retention="archive") as j:
            marks = []
            for day in range(first_day, first_day + sample_days + 2):
                status = j.archive.status()
                marks.append((status["bytes"], status["records"]))
                n = per_day
                ts = np.sort(rule.day_start_us(day) + 3 * 3_600_000_000
                             + rng.integers(0, 14 * 3_600_000_000, n))
                terminal = rng.integers(1, 9, n)
                method = rng.choice([1, 2, 3], n, p=[0.55, 0.25, 0.20])   # card, cash, qr
                card = method == 1
                amount = np.maximum(100, np.round(rng.lognormal(7.6, 1.0, n))).astype(np.int64)
                receipt_no = np.arange(1, n + 1)
                last4 = np.where(card, np.char.zfill(rng.integers(0, 10000, n).astype("S4"), 4), b"")
                rrn = np.where(method != 2, np.char.zfill(rng.integers(0, 10**12, n).astype("S12"), 12), b"")
                auth = np.where(method != 2, np.char.zfill(rng.integers(0, 10**6, n).astype("S6"), 6), b"")
                payloads = [sample_receipt(rng, int(r), payload_bytes, int(t))
                            for r, t in zip(receipt_no, ts)] \
                    if payload_bytes else [b""] * n
                receipt_bytes += sum(map(len, payloads))
                cols = {"ts": ts, "terminal": terminal, "kind": 1, "state": 2, "method": method,
                        "currency": 156, "amount": amount, "receipt_no": receipt_no,
                        "pan_last4": last4, "rrn": rrn, "auth_code": auth}
                if records_per_payment == 2:
                    # the pending record (no receipt), then the answer, 1-3 s later
                    both: dict = {k: (np.repeat(v, 2) if isinstance(v, np.ndarray) else v)
                                  for k, v in cols.items()}
                    both["ts"] = both["ts"] + np.tile([0, 1_500_000], n)
                    both["state"] = np.tile([1, 2], n)
                    for key in ("pan_last4", "rrn", "auth_code"):
                        both[key] = np.where(np.tile([True, False], n), b"", both[key])
                    payloads = [x for p in payloads for x in (b"", p)]
                    cols = both
                for s in range(0, len(payloads), 1000):
                    seqs = j.append_many({k: (v[s:s + 1000] if isinstance(v, np.ndarray) else v)
                                          for k, v in cols.items()}, payloads[s:s + 1000])
                    j.set_sync_watermark(seqs[-1])
            status = j.archive.status()
            marks.append((status["bytes"], status["records"]))
        # bytes the archive grew by over the whole days it archived (the first day is
        # partly in the ring's first lap, the last still in the ring)
        (b0, r0), (b1, r1) = marks[1], marks[-1]
        days = max(1.0, (r1 - r0) / rec_per_day)
        per_day_bytes = (b1 - b0) / days + INDEX_ARCHIVE_BYTES_PER_RECORD * rec_per_day
        per_record = per_day_bytes / rec_per_day
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    left = budget - ring.total_bytes - ARCHIVE_FIXED_BYTES
    plan = ArchivePlan(budget_bytes=budget, per_day=per_day, records_per_payment=records_per_payment,
                       payload_bytes=payload_bytes, ring_days=int(ring_days), ring=ring,
                       sample_days=int(round(days)), archive_bytes_per_day=per_day_bytes,
                       archive_bytes_per_record=per_record,
                       receipt_ratio=(receipt_bytes / (sample_days + 2) / per_day_bytes)
                       if payload_bytes else None,
                       archive_days=max(0.0, left / per_day_bytes),
                       measured_seconds=time.perf_counter() - started)
    if ring.ring_bytes > LIMIT_32BIT:
        plan.notes.append("the ring file is over 1 GiB: 32-bit terminals (armv7l) refuse to open it")
    plan.notes.append("the archive index and manifest grow with it (counted: %d bytes a record); "
                      "keep 10%% of the card free for the file system" % INDEX_ARCHIVE_BYTES_PER_RECORD)
    return plan


# The archive's own index (day/terminal/kind bitmaps) and its manifest, per record archived:
# measured 1.3-2.4 bytes (bench/bench_archive.py), so 3 for the plan; plus a fixed allowance.
INDEX_ARCHIVE_BYTES_PER_RECORD = 3
ARCHIVE_FIXED_BYTES = 1 << 20
