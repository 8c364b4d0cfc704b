"""The Journal: the public object a POS application embeds.

>>> import posfast, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "till.pfj")
>>> with posfast.Journal.create(path, capacity=1024) as j:
...     seq = j.append(terminal=3, kind="sale", state="approved", amount=1250, currency=156)
...     j.last(terminal=3).amount
1250
"""
from __future__ import annotations

import errno
import logging
import os
import sys
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from . import _core
from ._core import Record
from .archive import Archive
from .errors import (CorruptRecord, InvalidArgument, InvalidRecord, IOFailure, JournalClosed,
                     JournalExists, JournalNotFound, PosfastError)
from .index import Index
from .dayclose import DayBook, DayClose
from .payments import MAPS_BLOB, Payments
from .storage import Problem
from .records import (IS_PAYMENT_KIND, PAYMENT_KIND_VALUES, RECORD_DTYPE, DayRule, Flag, Kind,
                      State, day_number, day_to_date, make_rows, now_us, pack_row, row_values,
                      to_us, unpack_row)
from .totals import DayTotals, Totals
from .records import (ENUM_NAMES, PAYMENT_KINDS, ROW_INDEX, TS_FUTURE_US, TS_MIN_US, check_payload,
                      check_payloads, check_ref)

# positions of RECORD_DTYPE's fields in a row's values (`row_values`)
_SEQ, _TXN_ID, _DAY, _TERMINAL, _KIND, _CLIENT_REF, _CHANNEL = (
    ROW_INDEX[name] for name in ("seq", "txn_id", "day", "terminal", "kind", "client_ref",
                                 "channel"))
_core.set_field_tables(ENUM_NAMES["kind"], ENUM_NAMES["state"], ENUM_NAMES["method"],
                       PAYMENT_KINDS, TS_MIN_US, TS_FUTURE_US)

_DURABILITY = {"none": _core.DURABILITY_NONE, "batch": _core.DURABILITY_BATCH,
               "fsync": _core.DURABILITY_FSYNC}
_RETENTION = {"synced": _core.RETENTION_SYNCED, "overwrite": _core.RETENTION_OVERWRITE,
              "archive": _core.RETENTION_ARCHIVE}
_RETENTION_NAMES = {v: k for k, v in _RETENTION.items()}
_EMPTY = np.zeros(0, dtype=RECORD_DTYPE)
_PARALLEL_INDEX_ROWS = 50_000   # bulk appends from this size index on a second thread
_SCAN_CHUNK = 1 << 16           # records read at a time by scans that do not trust the index
# Index checkpoints (format 2): a writer saves the index, and names it in the header, once this
# many records were appended since the last save, or this many seconds passed with records
# unsaved (checked at each append), and at flush() and close().  Recovery after a crash then
# reads the records appended since (at most these many, plus the last append call's) and the
# slots the header's tail mark leaves the writer (PF_CKPT_WINDOW, 65536), never the ring.
_TOTALS_BLOB = b"totals"     # the index file's blob of the day totals (DayTotals.to_bytes)
_TOTALS_DUE = 64    # single appends the day totals fold at once, at most
CHECKPOINT_RECORDS = 65536
CHECKPOINT_SECONDS = 300.0
_PAYMENT_KIND_LIST = PAYMENT_KIND_VALUES.tolist()
_TRAINING = int(Flag.TRAINING)
_TXN_FIELDS = ["seq", "day", "terminal", "kind", "state", "method", "currency", "amount", "txn_id"]
_log = logging.getLogger("posfast")

# Writers open in this process.  A child forked from it shares their open file descriptions
# and so their writer locks: it lets go of them at once (the parent keeps writing; the
# child's copy of the handle is closed), so that no child can write the journal or keep the
# parent's lock alive after the parent closed it.
_WRITERS: "weakref.WeakSet[Journal]" = weakref.WeakSet()


def _drop_writers_in_child() -> None:
    for journal in list(_WRITERS):
        journal._ring.drop_inherited()
    _WRITERS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_writers_in_child)


def _day_rule_of(ring) -> DayRule:
    """The day rule a journal's header holds (a zone name in format 2, else the offset)."""
    return DayRule.from_header(ring.day_offset_min, ring.day_start_min, ring.tz_name)


def _v2_only(path, what) -> InvalidRecord:
    return InvalidRecord(
        "posfast: %s is a format-1 journal, which cannot store %s (format 2 can). New journals "
        "are format 2; to use it here, sync this journal to the back office and create a new "
        "one (Journal.create / posfast demo), which is format 2." % (path, what))


def _days_text(days) -> str:
    if isinstance(days, (list, tuple, set, frozenset, range)):
        days = sorted(int(d) for d in days)
        if len(days) > 1:
            return "%s..%s" % (day_to_date(days[0]), day_to_date(days[-1]))
        days = days[0] if days else 0
    return str(day_to_date(int(days)))


_MANY = (list, tuple, set, frozenset, range)     # a filter of several values
_ROW_SIZE = RECORD_DTYPE.itemsize
#: Records read at a time by the bulk reads (a day's query, its references): after each
#: chunk the journal's mapped pages are handed back, so RSS holds the rows, not the file.
_BULK_CHUNK = 1 << 16


def _match(rows: np.ndarray, column: str, wanted) -> np.ndarray:
    """Rows whose own `column` holds `wanted` (a value or a collection of values)."""
    if isinstance(wanted, (list, tuple, set, frozenset, range)):
        return np.isin(rows[column], np.fromiter((int(w) for w in wanted), dtype=np.int64))
    return rows[column] == int(wanted)


@dataclass
class VerifyReport:
    """Result of `Journal.verify()`: ``ok`` is True when nothing is damaged."""
    path: str
    checked: int
    oldest_seq: int
    head_seq: int
    problems: list = field(default_factory=list)
    torn: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self):
        lines = ["%s: %d records checked (seq %d..%d): %s" % (
            self.path, self.checked, self.oldest_seq, self.head_seq,
            "OK" if self.ok else "%d problem(s)" % len(self.problems))]
        lines += ["  " + str(p) for p in self.problems[:50]]
        if len(self.problems) > 50:
            lines.append("  ... %d more" % (len(self.problems) - 50))
        if self.torn:
            lines.append("  dropped at open: %d unacknowledged record(s) torn by a crash (seq %s)"
                         % (len(self.torn), ", ".join(str(s) for s, _ in self.torn[:10])))
        return "\n".join(lines)


@dataclass
class Batch:
    """Records of a seq range, as sync hands them to the back office."""
    journal_id: uuid.UUID
    rows: np.ndarray
    payloads: list
    links: list
    prev_link: bytes
    exts: list = field(default_factory=list)   # format 2: each record's extension (b"" = none)
    format_version: int = _core.FORMAT_VERSION

    def __len__(self):
        return len(self.rows)


class _JournalStorage:
    """The `posfast.storage.Storage` a Journal hands its parts (payments, day closes, the
    archive): the journal's own reads and appends, under its lock."""

    def __init__(self, journal: "Journal"):
        self._journal = journal
        self.lock = journal._mutex
        self.path = journal.path
        self.journal_id = journal._ring.journal_id
        self.readonly = journal.readonly
        self.day_rule = journal.day_rule
        # the journal's own append (the payment path's appends: no second call layer)
        self.append: Callable[..., int] = journal.append

    index = property(lambda self: self._journal.index)
    oldest_seq = property(lambda self: self._journal._ring.oldest_seq)
    head_seq = property(lambda self: self._journal._ring.head_seq)
    sync_watermark = property(lambda self: self._journal._ring.sync_watermark)
    max_payload = property(lambda self: self._journal._ring.max_payload)
    damaged = property(lambda self: self._journal._ring.damaged)

    def refresh(self):
        self._journal._refresh()

    def check_writable(self, what):
        self._journal._check_open()
        if self.readonly:
            raise PosfastError("posfast: %s is open read-only; open it for writing to %s"
                               % (self.path, what))

    def get(self, seq):
        return self._journal.get(seq)

    def get_live(self, seq):
        return self._journal._ring.get(seq)

    def slot_of(self, seq):
        return self._journal._ring.slot_of(seq)

    def read_rows(self, seqs):
        return self._journal._gather(seqs)

    def read_rows_status(self, seqs, out):
        return self._journal._ring.read_rows(seqs, out.view(np.uint8).reshape(
            len(seqs), RECORD_DTYPE.itemsize))

    def read_range(self, first_seq, last_seq):
        return self._journal.read_range(first_seq, last_seq)

    def query(self, **filters):
        return self._journal.query(**filters)

    def records_where(self, days, terminal=None):
        return self._journal._records_where(days, terminal)

    def payloads(self, seqs):
        return self._journal.payloads(seqs)

    def links(self, seqs):
        return self._journal._ring.links(np.ascontiguousarray(seqs, dtype=np.uint64))

    def refs(self, seqs):
        return [_core.decode_ext(ext)[1:] if ext else (b"", b"") for ext in
                self._journal._ring.exts(np.ascontiguousarray(seqs, dtype=np.uint64))]

    def ref_columns(self, seqs, chunk=_BULK_CHUNK):
        return self._journal._ref_columns(seqs, chunk)

    def distrust_index(self, why):
        self._journal._distrust_index(why)

    def saved_blob(self, name):
        """(a view of blob `name`, the head it was saved at) of the index this open trusted as
        the one its writer saved (as the day totals are), else None.  Its CRC is not checked
        here: the caller checks its parts."""
        journal = self._journal
        at = journal._totals_saved_at
        if not at or at > journal._ring.head_seq or journal.index.blob_offset(name) < 0:
            return None
        # (not CRC-checked whole: the payment maps check their head, then each map when it is
        # first used, so a lookup reads the pages of the map it needs, not the whole blob)
        view = journal.index.blob_view(name, check=False)
        return None if view is None else (view, at)

    crc32c = staticmethod(_core.crc32c)

    def index_problem(self, why):
        message = "index %s.idx: %s" % (self.path, why)
        _log.warning("posfast: %s", message)
        self._journal.index_problems.append(message)

    def day_totals(self, day, terminal=None):
        return self._journal._day_totals(day, terminal)

    def in_doubt_of_day(self, day, terminal=None):
        return self._journal._day_totals_book().in_doubt(day, terminal)


class Journal:
    """An open posfast journal (use `Journal.create` or `Journal.open`)."""

    def __init__(self, ring, readonly, batch_ms):
        self._ring = ring
        self.path = ring.path
        self.readonly = readonly
        self._mutex = threading.RLock()
        self.journal_id = uuid.UUID(bytes=ring.journal_id)
        self.day_rule = _day_rule_of(ring)
        # how the core's single append finds the business day: a fixed rule's shift, or the
        # zone rule's own day_number
        self._day_args = (self.day_rule.day_shift, None) if not self.day_rule.tz_name else \
            (0, self.day_rule.day_number)
        self.index = Index()
        self.index_problems = []  # why the index was found untrustworthy and rebuilt (status, verify)
        # day totals (posfast.totals): built from the records on the first totals() call, then
        # fed every appended record
        self._totals: Optional[DayTotals] = None
        # single appends' rows (RECORD_DTYPE bytes) the totals have yet to fold: folded at the
        # next read of the totals, index save, bulk append or every _TOTALS_DUE of them (so a
        # durable append does not pay for it right after its fdatasync)
        self._totals_due: list = []
        self._totals_due_max = max(1, min(_TOTALS_DUE, ring.capacity // 8))
        self._totals_saved_at = 0           # (set by _recover)
        self._stop = threading.Event()
        self._flusher = None
        self.on_evict = None     # archive hook: called with (first_seq, last_seq) before eviction
        self.archive = None      # posfast.archive.Archive when retention == "archive"
        self._saved_head = 0     # head seq of the last index saved (checkpoints)
        self._maps_saved: Optional[bool] = None   # its payment maps too (None: as loaded)
        self._repairs_noted = 0  # index positions the core found wrong, already reported
        self._repairs_at = 0
        self._saved_at = time.monotonic()
        self._storage = _JournalStorage(self)   # what its parts see of it
        self._payments = Payments(self._storage)
        self._days = DayBook(self._storage)
        if ring.durability == _core.DURABILITY_BATCH and not readonly:
            self._flusher = threading.Thread(target=self._flush_loop, args=(batch_ms / 1000.0,),
                                             name="posfast-group-commit", daemon=True)
            self._flusher.start()

    # ------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, path: str | os.PathLike[str], capacity: int = 1_000_000,
               slot_size: int = 128, max_payload: int = 4096, durability: str = "fsync",
               day_rule: DayRule | None = None, retention: str = "synced",
               journal_id: uuid.UUID | bytes | None = None, batch_records: int = 64,
               batch_ms: float = 50, format_version: int = _core.FORMAT_VERSION) -> Journal:
        """Create a journal file of `capacity` slots at full size, then open it for writing.

        `format_version` 2 (the default) is FORMAT.md's current format; 1 makes a journal an
        older posfast (0.1) can read, without order/host references, channels or zones.

        >>> j = Journal.create("/tmp/doc-create.pfj", capacity=1000)   # doctest: +SKIP
        """
        path = os.fspath(path)
        day_rule = day_rule or DayRule()
        if retention not in _RETENTION:
            raise InvalidArgument("retention=%r: use 'synced', 'overwrite' or 'archive'" % (retention,))
        if durability not in _DURABILITY:
            raise InvalidArgument("durability=%r: use 'fsync', 'batch' or 'none'" % (durability,))
        if not (_core.MIN_SLOT <= slot_size <= _core.MAX_SLOT) or slot_size % 64:
            raise InvalidArgument("slot_size=%d: use a multiple of 64 between %d and %d"
                                  % (slot_size, _core.MIN_SLOT, _core.MAX_SLOT))
        if not 0 <= max_payload <= _core.MAX_PAYLOAD:
            raise InvalidArgument("max_payload=%d: at most %d bytes"
                                  % (max_payload, _core.MAX_PAYLOAD))
        if capacity < 2:
            raise InvalidArgument("capacity=%d: a journal needs at least 2 slots" % capacity)
        if sys.maxsize < 2**32 and _core.DATA_OFFSET + capacity * slot_size > 1 << 30:
            raise InvalidArgument(
                "capacity=%d of %d-byte slots makes a %d-byte journal: over 1 GiB needs a 64-bit "
                "CPU; use a smaller capacity on this terminal (posfast capacity --budget ...)"
                % (capacity, slot_size, _core.DATA_OFFSET + capacity * slot_size))
        jid = (journal_id or uuid.uuid4())
        jid = jid.bytes if isinstance(jid, uuid.UUID) else bytes(jid)
        if os.path.exists(path):
            raise JournalExists("posfast: %s already exists; open it with Journal.open or choose "
                                "a new path" % path)
        if format_version not in (1, _core.FORMAT_VERSION):
            raise InvalidArgument("format_version=%r: posfast writes 1 and %d"
                                  % (format_version, _core.FORMAT_VERSION))
        tz_name = day_rule.tz_name
        if tz_name and format_version < 2:
            raise InvalidArgument("day rule %s: a time-zone day rule needs a format-2 journal "
                                  "(format_version=2, the default), whose header stores the zone"
                                  % day_rule.describe())
        if len(tz_name) > _core.TZ_NAME_SIZE or not tz_name.isascii():
            raise InvalidArgument("day rule %s: the zone name is longer than the %d ASCII "
                                  "characters a journal header holds" % (day_rule.describe(),
                                                                         _core.TZ_NAME_SIZE))
        _core.Ring.create(path, capacity, slot_size, max_payload, jid, now_us(),
                          day_rule.offset_minutes, day_rule.start_minutes, _RETENTION[retention],
                          format_version, tz_name)
        return cls.open(path, durability=durability, batch_records=batch_records, batch_ms=batch_ms)

    @classmethod
    def open(cls, path: str | os.PathLike[str], readonly: bool = False,
             durability: str = "fsync", batch_records: int = 64,
             batch_ms: float = 50) -> Journal:
        """Open an existing journal; recovery runs here (torn tail dropped, damage noted)."""
        path = os.fspath(path)
        if durability not in _DURABILITY:
            raise InvalidArgument("durability=%r: use 'fsync', 'batch' or 'none'" % (durability,))
        if not os.path.exists(path):
            raise JournalNotFound("posfast: no journal at %s (create one with Journal.create or "
                                    "`posfast demo`)" % path)
        # a writer locks the file itself (its inode) in the core, before any byte is written:
        # a second writer by any path, link or mount gets JournalLocked naming the holder
        ring = _core.Ring.open(path, not readonly)
        try:
            ring.durability = _DURABILITY[durability]
            ring.batch_records = max(1, int(batch_records))
            journal = cls(ring, readonly, batch_ms)
            journal._recover()
            if ring.retention == _core.RETENTION_ARCHIVE:
                journal.archive = Archive.attach(journal._storage,
                                                 durable=ring.durability != _core.DURABILITY_NONE)
                if not readonly:
                    journal.on_evict = journal.archive.on_evict
        except BaseException:
            ring.close()
            raise
        if not readonly:
            _WRITERS.add(journal)
        return journal

    def _recover(self):
        ring = self._ring
        self._totals = None             # from the index's blob, or the records, when first asked
        self._totals_due = []
        self._totals_saved_at = 0       # the index head a totals blob may be loaded at (0: none)
        loaded = Index.load(self.path + ".idx", ring.journal_id)
        if loaded is not None:
            index, head, oldest, link, positions, lost, digest = loaded
            if ring.recover_from(head, oldest, link, positions, bool(lost)):
                index.rebuild = self._rebuild_into
                self.index = index
                self._saved_head = head
                if ring.version >= 2 and digest == ring.index_digest and head == ring.index_head:
                    # the index its writer saved (its blobs' CRCs are in the digest the header
                    # names): its day totals hold the records up to `head`
                    self._totals_saved_at = head
                # The index is a cache anyone can edit (its CRCs are no seal).  A format-2
                # header names the digest of the index its writer saved: that one is used as
                # it is (each bitmap checked as it is read, each record a lookup returns checked
                # by its own columns).  Any other index must partition the records it covers
                # (all its bitmaps read), or it is rebuilt from the records.
                if not (ring.version >= 2 and digest == ring.index_digest
                        and head == ring.index_head):
                    live = positions[max(0, ring.oldest_seq - oldest):]
                    flaw = index.partition_flaw(ring.oldest_seq, min(head, ring.head_seq),
                                                int(np.count_nonzero(live)))
                    if flaw:
                        self._distrust_index(flaw)
                        return
                self._index_range(head + 1, ring.head_seq)
                self.index.maybe_compact(ring.oldest_seq, ring.capacity)
                return
        ring.recover_scan()
        self.index = Index()
        self.index.rebuild = self._rebuild_into
        self._index_range(ring.oldest_seq, ring.head_seq)

    def _rebuild_into(self, index, why):
        """The index found one of its own bitmaps damaged: it is filled again from the records."""
        message = "index %s.idx is damaged (%s); rebuilt from the journal" % (self.path, why)
        _log.warning("posfast: %s", message)
        self.index_problems.append(message)
        self._index_range(self._ring.oldest_seq, self._ring.head_seq, index=index)

    def _index_range(self, first, last, index=None, chunk=1 << 20):
        """Index the readable records first..last (into `index`, default the journal's own);
        returns their seqs."""
        index = self.index if index is None else index
        readable = [np.zeros(0, dtype=np.uint64)]
        for start in range(first, last + 1, chunk):
            seqs = np.arange(start, min(last, start + chunk - 1) + 1, dtype=np.uint64)
            rows = self._gather(seqs)
            index.add_rows(rows)
            readable.append(rows["seq"])
        return np.concatenate(readable)

    def _distrust_index(self, why):
        """The index contradicts the records: rebuild it from them (a writer saves the new one
        at flush and close), and report it in `status()`, `verify()` and the log."""
        ring = self._ring
        message = ("index %s.idx disagrees with the records (%s); rebuilt from the journal"
                   % (self.path, why))
        _log.warning("posfast: %s", message)
        self.index_problems.append(message)
        rebuilt = Index()
        rebuilt.rebuild = self._rebuild_into
        self._index_range(ring.oldest_seq, ring.head_seq, index=rebuilt)
        self.index = rebuilt

    def _note_repairs(self):
        """Positions of the index file that no record claims (walked to from their neighbours
        by the core): reported once, and the index is saved anew at the next checkpoint."""
        repairs = self._ring.idx_repairs
        if repairs > self._repairs_noted:
            message = ("index %s.idx holds wrong record positions (%d found so far); the records "
                       "were found from their neighbours and the index is saved anew"
                       % (self.path, repairs))
            if self._repairs_noted == 0:
                _log.warning("posfast: %s", message)
                self.index_problems.append(message)
            else:
                self.index_problems[self._repairs_at] = message
            self._repairs_at = self.index_problems.index(message)
            self._repairs_noted = repairs
            self.index.dirty = True

    def _records_where(self, days, terminal=None):
        """Live records of business days `days` (and a terminal), found by reading every live
        record, not by the index: what permanent results (Z-reports) are computed from."""
        ring = self._ring
        found = [_EMPTY]
        for start in range(ring.oldest_seq, ring.head_seq + 1, _SCAN_CHUNK):
            rows = self._gather(np.arange(start, min(ring.head_seq, start + _SCAN_CHUNK - 1) + 1,
                                          dtype=np.uint64))
            keep = _match(rows, "day", days)
            if terminal is not None:
                keep &= _match(rows, "terminal", terminal)
            found.append(rows[keep])
        rows = np.concatenate(found)
        # does the index file each of these records under its own day?  (It may hold more:
        # records that became unreadable since; never fewer.)
        days_found, counts = np.unique(rows["day"], return_counts=True)
        for day, count in zip(days_found.tolist(), counts.tolist()):
            bitmap = self.index.by_day.get(day)
            indexed = bitmap.range_cardinality(ring.oldest_seq, ring.head_seq + 1) if bitmap else 0
            if indexed < count:
                self._distrust_index("it lists %d record(s) of business day %s, the records hold "
                                     "%d" % (indexed, _days_text(day), count))
                break
        if self.archive is not None:
            rows = self.archive.extend_query(rows, ring.oldest_seq, day=days, terminal=terminal)
        return rows

    def _flush_loop(self, interval):
        while not self._stop.wait(interval):
            with self._mutex:
                ring = self._ring
                if ring.closed or ring.failed:
                    return
                if ring.unsynced_writes:
                    try:
                        ring.sync()
                    except Exception:
                        return   # the handle is retired; the next append reports it

    def flush(self) -> None:
        """Make every appended record durable (batch/none modes) and save the index."""
        with self._mutex:
            self._check_open()
            if not self.readonly:
                if self._ring.unsynced_writes or self._ring.failed:
                    self._ring.sync()         # a retired handle says so (JournalClosed)
                self._save_index()
                if self.archive is not None:
                    self.archive.flush()

    def _save_index(self, name_it=True, maps=True):
        """Save the index; in format 2 also name it in the header (`name_it`; close names it
        with the clean mark instead), which makes it an index checkpoint.  `maps`: with the
        payment maps (close and flush; the timed checkpoints leave them out, 8 bytes a
        payment not rewritten every 300 s)."""
        ring = self._ring
        if ring.failed:
            return
        self._note_repairs()
        maps_due = maps and ring.version >= 2 and self._payments.maps_wanted()
        maps_kept = self._maps_saved if self._maps_saved is not None else \
            self.index.blob_offset(MAPS_BLOB) >= 0          # (the loaded file holds them)
        if not self.index.dirty and self._saved_head == ring.head_seq \
                and os.path.exists(self.path + ".idx") and (maps_kept or not maps_due):
            return
        # the day totals go with the index when they hold exactly the records it covers
        totals = self._totals_book()
        self.index.set_blob(_TOTALS_BLOB, totals.to_bytes() if totals is not None
                            and totals.upto == ring.head_seq and ring.version >= 2 else None)
        maps_blob = self._payments.saved_maps() if maps_due else None
        self.index.set_blob(MAPS_BLOB, maps_blob)
        try:
            digest = self.index.save(self.path + ".idx", ring.journal_id, ring.head_seq,
                                     ring.oldest_seq, ring.head_link, ring.positions(),
                                     durable=ring.version >= 2
                                     and ring.durability != _core.DURABILITY_NONE)
        except OSError as exc:      # a full or failing disk: the records are safe, the index is a cache
            try:
                os.unlink(self.path + ".idx.tmp")
            except OSError:
                pass
            if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                action = "Free storage on that file system."
            elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                action = ("Let this user write to %s (permissions, or a read-only mount)."
                          % (os.path.dirname(os.path.abspath(self.path)) or "."))
            else:
                action = "Check the storage (posfast verify %s)." % self.path
            raise IOFailure(exc.errno, "posfast: could not save the index %s.idx (%s); every record "
                            "is safe in %s and the next open rebuilds the index from it. %s"
                            % (self.path, exc.strerror or exc, self.path, action)) from exc
        # (the maps' pieces are their own arrays: not kept a second time by the index)
        self.index.blobs.pop(MAPS_BLOB, None)
        self._maps_saved = maps_blob is not None
        self._saved_head = ring.head_seq
        self._saved_at = time.monotonic()
        ring.name_index(digest, ring.head_seq, name_it)

    def _maybe_checkpoint(self):
        """An index checkpoint when enough records or time went by (format 2, writers)."""
        ring = self._ring
        if ring.version < 2 or self.readonly or ring.failed:
            return
        unsaved = ring.head_seq - self._saved_head
        if unsaved >= CHECKPOINT_RECORDS or (
                unsaved and time.monotonic() - self._saved_at >= CHECKPOINT_SECONDS):
            try:
                self._save_index(maps=False)
            except IOFailure as exc:        # the records are safe; the next open re-reads more
                _log.warning("%s", exc)

    def close(self) -> None:
        """Flush, save the index and release the writer lock.  Safe to call twice."""
        with self._mutex:
            if self._ring.closed:
                return
            self._stop.set()
            try:
                if not self.readonly and not self._ring.failed:
                    if self._ring.unsynced_writes:
                        self._ring.sync()
                    self._save_index(name_it=False)    # the clean mark names it
                    if self.archive is not None:
                        self.archive.close()
            finally:
                self._ring.close()      # (writes the clean mark, releases the writer lock)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        # an error is on its way out (DayClosed, JournalFull ...): that is what the caller must
        # see; a failure to save the index (a cache) while closing is logged, not raised over it
        try:
            self.close()
        except IOFailure as close_error:
            _log.warning("%s", close_error)

    def __repr__(self):
        return "<posfast.Journal %s seq %d..%d of capacity %d%s>" % (
            self.path, self._ring.oldest_seq, self._ring.head_seq, self._ring.capacity,
            ", read-only" if self.readonly else "")

    def _check_open(self):
        if self._ring.closed:
            raise JournalClosed("posfast: journal %s is closed" % self.path)

    def _refresh(self):
        if self.readonly:
            self._check_open()
            before = self._ring.head_seq
            added = self._ring.refresh()
            if added < 0:
                # the writer lapped this reader: read the file afresh, as an open does (the
                # header's sync watermark has moved on too; a rescan with the one read at
                # open took records evicted after their sync for records lost before it)
                lapped = self._ring
                self._ring = _core.Ring.open(self.path, False)
                lapped.close()
                self.index = Index()
                self._recover()
            elif added:
                self._index_range(before + 1, self._ring.head_seq)
                if self._totals is not None:
                    self._feed_totals(self._totals, before + 1, self._ring.head_seq)

    # ------------------------------------------------------------ properties
    @property
    def closed(self) -> bool:
        return self._ring.closed

    @property
    def capacity(self) -> int:
        return self._ring.capacity

    @property
    def slot_size(self) -> int:
        return self._ring.slot_size

    @property
    def max_payload(self) -> int:
        return self._ring.max_payload

    @property
    def head_seq(self) -> int:
        with self._mutex:
            self._check_open()
            self._refresh()
            return self._ring.head_seq

    @property
    def oldest_seq(self) -> int:
        return self._ring.oldest_seq

    @property
    def sync_watermark(self) -> int:
        return self._ring.sync_watermark

    @property
    def retention(self) -> str:
        return _RETENTION_NAMES[self._ring.retention]

    @property
    def created_us(self) -> int:
        return self._ring.created_us

    # ------------------------------------------------------------ append
    def append(self, payload: bytes = b"", **fields: Any) -> int:
        """Append one record and return its seq (durable on return in fsync mode).

        >>> j.append(terminal=3, kind="sale", state="approved", amount=1250,   # doctest: +SKIP
        ...          currency=156, method="card", pan_last4="4242")
        1
        """
        order_ref = host_ref = b""
        if "order_ref" in fields or "host_ref" in fields:
            order_ref = check_ref("order_ref", fields.pop("order_ref", None))
            host_ref = check_ref("host_ref", fields.pop("host_ref", None))
        if type(payload) is not bytes or payload:
            payload = check_payload(payload)
        if self.on_evict is None:
            # the common case, validated, packed and written in the core (fields.pxi); it
            # declines anything else, which row_values then accepts or refuses
            with self._mutex:
                ring = self._ring       # (append_fields refuses a closed or read-only journal)
                oldest = ring.oldest_seq
                got = ring.append_fields(fields, payload, order_ref, host_ref, *self._day_args)
                if got is not None:
                    seq, day, terminal, kind, row = got
                    self._took_one(seq, day, terminal, kind, row, oldest, order_ref, host_ref,
                                   len(payload))
                    return seq
        return self._append_one(row_values(fields, self.day_rule), payload, order_ref, host_ref)

    def _append_one(self, values: list, payload: bytes, order_ref: bytes = b"",
                    host_ref: bytes = b"") -> int:
        """Append one record given as its validated RECORD_DTYPE values (`row_values`): the
        path of a durable single append, with no arrays (the core packs, checks and writes
        it; the index and the day totals take it as scalars)."""
        ring = self._ring
        key = values[_CLIENT_REF]
        if ring.version >= 2:
            ext = _core.encode_ext(key, order_ref, host_ref) if key or order_ref or host_ref \
                else b""
        elif order_ref or host_ref:
            raise _v2_only(self.path, "order_ref or host_ref")
        elif values[_CHANNEL]:
            raise _v2_only(self.path, "a channel")
        else:
            ext = b""
        body = ext + payload if ext else payload
        with self._mutex:
            self._check_open()
            if self.on_evict is not None and ring.retention == _core.RETENTION_ARCHIVE:
                last_evicted, _ = ring.plan(np.array([len(body)], dtype=np.uint32))
                if last_evicted >= ring.oldest_seq:
                    self.on_evict(ring.oldest_seq, min(last_evicted, ring.sync_watermark))
            seq = ring.head_seq + 1
            values[_SEQ] = seq
            kind = values[_KIND]
            if kind in PAYMENT_KINDS and not values[_TXN_ID]:
                values[_TXN_ID] = seq           # a payment's first record names it
            row = pack_row(values)
            oldest = ring.oldest_seq
            got = ring.append_one(row, body, len(ext))
            assert got == seq
            self._took_one(seq, values[_DAY], values[_TERMINAL], kind, row, oldest, order_ref,
                           host_ref, len(payload))
            return seq

    def _took_one(self, seq: int, day: int, terminal: int, kind: int, row: bytes, oldest: int,
                  order_ref: bytes, host_ref: bytes, payload_len: int) -> None:
        """What follows one appended record (`oldest`: the oldest seq before it): the index,
        the payment maps, the day totals, a checkpoint when due -- each step as cheap as it
        gets, for this runs right after the fdatasync, with cold caches."""
        self.index.add_one(seq, day, terminal, kind)
        ring = self._ring
        if ring.oldest_seq != oldest:           # it evicted: the bitmaps may shed old seqs
            self.index.maybe_compact(ring.oldest_seq, ring.capacity)
        if self._totals is not None:
            self._totals_took(row, oldest)
        self._payments.appended(seq, row, order_ref, host_ref, payload_len)
        if seq - self._saved_head >= CHECKPOINT_RECORDS or \
                time.monotonic() - self._saved_at >= CHECKPOINT_SECONDS:
            self._maybe_checkpoint()

    def append_many(self, columns: dict, payloads: Sequence[bytes] | None = None) -> range:
        """Append many records from a dict of equal-length columns; returns their seq range.

        Validated as a whole first: a bad value or a full journal writes nothing.

        >>> j.append_many({"terminal": [1, 2], "kind": "sale", "amount": [100, 250]})  # doctest: +SKIP
        range(1, 3)
        """
        columns = dict(columns)
        given = {name: columns.pop(name) for name in ("order_ref", "host_ref") if name in columns}
        rows = make_rows(columns, self.day_rule)
        if payloads is not None:
            payloads = check_payloads(payloads)
            if len(payloads) != len(rows):
                raise InvalidRecord("posfast: %d payloads for %d records" % (len(payloads), len(rows)))
        refs = None
        if given:
            refs = []
            for name in ("order_ref", "host_ref"):
                col = given.get(name)
                if col is None or isinstance(col, (str, bytes)):
                    refs.append([check_ref(name, col)] * len(rows))
                    continue
                col = list(col)
                if len(col) != len(rows):
                    raise InvalidRecord("posfast: column %s has %d values for %d records"
                                        % (name, len(col), len(rows)))
                refs.append([check_ref(name, v, "row %d: " % i) for i, v in enumerate(col)])
        return self._append_rows(rows, payloads, refs)

    def _bodies(self, rows: np.ndarray, payloads, refs):
        """(buf, lengths, ext_lens) of the records' bodies, or Nones when none has one.  In
        format 2 a body is the record's extension, then its payload: records with order or
        host references get theirs built here (ext_lens says how long); otherwise the core
        makes each record's extension of its client_ref itself, and ext_lens is None."""
        n = len(rows)
        with_refs = None
        if refs is not None:
            with_refs = np.fromiter((bool(o or h) for o, h in zip(*refs)), dtype=bool, count=n)
            if not with_refs.any():
                with_refs = None
        if self._ring.version < 2:
            if with_refs is not None:
                raise _v2_only(self.path, "order_ref or host_ref")
            if (rows["channel"] != b"").any():
                raise _v2_only(self.path, "a channel")
        if with_refs is None:
            if not payloads:
                return None, None, None
            return (b"".join(payloads), np.fromiter(map(len, payloads), dtype=np.uint64, count=n),
                    None)
        # records with order or host references: each extension encoded on its own
        assert refs is not None
        bodies = list(payloads) if payloads else [b""] * n
        ext_lens = np.zeros(n, dtype=np.uint16)
        client = rows["client_ref"]
        for i in np.flatnonzero(with_refs | (client != b"")).tolist():
            ext = _core.encode_ext(bytes(client[i]), refs[0][i], refs[1][i])
            ext_lens[i] = len(ext)
            bodies[i] = ext + bodies[i]
        return (b"".join(bodies), np.fromiter(map(len, bodies), dtype=np.uint64, count=n),
                ext_lens)

    def _append_rows(self, rows: np.ndarray, payloads, refs=None) -> range:
        n = len(rows)
        buf, lengths, ext_lens = self._bodies(rows, payloads, refs)
        if buf is not None:
            own = lengths - ext_lens if ext_lens is not None else lengths
            too_big = np.flatnonzero(own > self._ring.max_payload)
            if len(too_big):
                i = int(too_big[0])
                raise InvalidRecord("posfast: payload of record %d is %d bytes; %s allows at most %d "
                                    "(max_payload at create)" % (i, own[i], self.path,
                                                                 self._ring.max_payload))
            offsets = np.zeros(n + 1, dtype=np.uint64)
            np.cumsum(lengths, out=offsets[1:])
        else:
            offsets = None
        with self._mutex:
            self._check_open()
            ring = self._ring
            if self._totals_due:
                self._fold_due()            # (as of now: this append may evict)
            first = ring.head_seq + 1
            seqs = np.arange(first, first + n, dtype=np.uint64)
            payment = IS_PAYMENT_KIND[rows["kind"]] & (rows["txn_id"] == 0)
            if payment.any():
                rows["txn_id"] = np.where(payment, seqs, rows["txn_id"])
            if self.on_evict is not None and ring.retention == _core.RETENTION_ARCHIVE:
                lens = np.diff(offsets).astype(np.uint32) if offsets is not None else \
                    np.zeros(n, dtype=np.uint32)
                last_evicted, _ = ring.plan(lens)
                if last_evicted >= ring.oldest_seq:
                    self.on_evict(ring.oldest_seq, min(last_evicted, ring.sync_watermark))
            rows["seq"] = seqs              # the core assigns seqs itself; the index needs them
            raw = rows.view(np.uint8).reshape(n, RECORD_DTYPE.itemsize)
            if n < _PARALLEL_INDEX_ROWS:
                got = ring.append(raw, buf, offsets, ext_lens)
                self.index.add_rows(rows)
            else:
                # The core releases the GIL while it encodes, hashes and writes: build this
                # batch's bitmaps meanwhile, and merge them only once the records are written.
                # (The day totals are not: the index keeps the second core busy for longer
                # than the write already; beside it they take as long as after it.)
                pending = Index()
                worker = threading.Thread(target=pending.add_rows, args=(rows,),
                                          name="posfast-index", daemon=True)
                worker.start()
                try:
                    got = ring.append(raw, buf, offsets, ext_lens)
                finally:
                    worker.join()
                self.index.merge(pending)
            assert got == first
            self.index.maybe_compact(ring.oldest_seq, ring.capacity)
            if self._totals is not None:
                self._totals.add_rows(rows, ring.oldest_seq)
            self._maybe_checkpoint()
            return range(first, first + n)

    def set_sync_watermark(self, seq: int) -> None:
        """Durably record that the back office holds every record up to `seq` (never backwards)."""
        if isinstance(seq, (bool, float)) or not isinstance(seq, (int, np.integer)) \
                or not 0 <= int(seq) < 1 << 64:
            raise InvalidRecord("posfast: set_sync_watermark(%r): give the seq (an integer from 0 "
                                "up to the newest record) the back office acknowledged" % (seq,))
        with self._mutex:
            self._check_open()
            self._ring.set_sync_watermark(int(seq))

    # ------------------------------------------------------------ parts: payments, day closes
    # The payment lifecycle (`posfast.payments.Payments`) and the day closes
    # (`posfast.dayclose.DayBook`) are parts the journal composes; these are their doors.
    def begin_payment(self, terminal, kind="sale", amount=0, currency=156, method="card",
                      client_ref=None, payload=b"", ref_seq=0, receipt_no=None, operator=0,
                      flags=0, ts=None, order_ref=None, channel=None) -> int:
        """Write a PENDING payment durably before the host is asked; returns its txn_id
        (`Payments.begin_payment`)."""
        return self._payments.begin_payment(
            terminal, kind=kind, amount=amount, currency=currency, method=method,
            client_ref=client_ref, payload=payload, ref_seq=ref_seq, receipt_no=receipt_no,
            operator=operator, flags=flags, ts=ts, order_ref=order_ref, channel=channel)

    def next_receipt_no(self, terminal: int) -> int:
        """Take the terminal's next receipt number (`Payments.next_receipt_no`)."""
        return self._payments.next_receipt_no(terminal)

    def finish_payment(self, txn_id, state, auth_code=None, rrn=None, pan_last4=None,
                       payload=b"", ts=None, host_ref=None) -> int:
        """Record the host's answer for a pending payment (`Payments.finish_payment`)."""
        return self._payments.finish_payment(txn_id, state, auth_code=auth_code, rrn=rrn,
                                             pan_last4=pan_last4, payload=payload, ts=ts,
                                             host_ref=host_ref)

    def resolve(self, txn_id, state, **fields) -> int:
        """Close an in-doubt payment after asking the host (`Payments.resolve`)."""
        return self._payments.resolve(txn_id, state, **fields)

    def payment(self, txn_id: int):
        """Current state of a payment: its newest Record (`Payments.payment`)."""
        return self._payments.payment(txn_id)

    def txn_records(self, txn_id: int) -> np.ndarray:
        """Every live record of payment `txn_id` and of those referring to it
        (`Payments.txn_records`)."""
        return self._payments.txn_records(txn_id)

    def find(self, client_ref=None, *, order_ref=None, host_ref=None, receipt_code=None):
        """The payment begun with this idempotency key (`client_ref`), with this merchant order
        number (`order_ref`), answered with this host reference (`host_ref`), or whose receipt
        carries this code (`receipt_code`, ``"3-000200"``: terminal and receipt number as
        printed on the slip and in its QR code): its current Record, or None
        (`Payments.find`).  Each is one lookup in a map kept current as records are appended.

        >>> j.find(order_ref="4200001234202611201234567890").state     # doctest: +SKIP
        2
        >>> j.find(receipt_code="3-000200")["txn_id"]                   # doctest: +SKIP
        812
        """
        return self._payments.find(client_ref, order_ref=order_ref, host_ref=host_ref,
                                   receipt_code=receipt_code)

    def receipt_payments(self, terminal: int, receipt_no: int) -> list:
        """txn_ids of the payments whose receipt code is (terminal, receipt_no), oldest first
        (`Payments.receipt_payments`)."""
        return self._payments.receipt_payments(int(terminal), int(receipt_no))

    def refs(self, seqs: Iterable[int]) -> list[tuple[bytes, bytes]]:
        """(order_ref, host_ref) bytes of each live seq, in order (b"" where a record has
        none): what statements are matched on, read for many records at once."""
        with self._mutex:
            self._refresh()
            return self._storage.refs(seqs)

    def ref_columns(self, seqs: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """(order_ref, host_ref) of each live seq as two byte-string arrays (as wide as the
        widest value; b"" where a record has none): what `refs` gives, decoded in the core
        a chunk at a time, for the million records of a statement's day.

        >>> order_ref, host_ref = j.ref_columns(j.query(day="2026-11-20")["seq"])  # doctest: +SKIP
        """
        with self._mutex:
            self._refresh()
            return self._ref_columns(seqs, _BULK_CHUNK)

    def _ref_columns(self, seqs, chunk):
        ring = self._ring
        seqs = np.ascontiguousarray(seqs, dtype=np.uint64)
        n = len(seqs)
        orders, hosts = [], []
        order = np.zeros(min(n, chunk), "S%d" % _core.REF_SIZE)
        host = np.zeros(min(n, chunk), "S%d" % _core.REF_SIZE)
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            order[:] = b""
            host[:] = b""
            o_raw = order[:hi - lo].view(np.uint8).reshape(hi - lo, _core.REF_SIZE)
            h_raw = host[:hi - lo].view(np.uint8).reshape(hi - lo, _core.REF_SIZE)
            status, wo, wh = _core.ring_refs_into(ring, seqs[lo:hi], o_raw, h_raw)
            if status.any():             # not canonical: decode_ext's own refusal
                bad = int(np.flatnonzero(status)[0])
                _core.decode_ext(ring.exts(seqs[lo + bad:lo + bad + 1])[0])
            orders.append(order[:hi - lo].astype("S%d" % max(wo, 1)))
            hosts.append(host[:hi - lo].astype("S%d" % max(wh, 1)))
            if n > chunk:
                _core.ring_drop_pages(ring)     # a scan of the day: not the file in RSS
        if not orders:
            return np.zeros(0, "S1"), np.zeros(0, "S1")
        if len(orders) == 1:
            return orders[0], hosts[0]
        return np.concatenate(orders), np.concatenate(hosts)

    def in_doubt(self, terminal=None) -> list:
        """Payments begun and never finished, oldest first (`Payments.in_doubt`)."""
        return self._payments.in_doubt(terminal=terminal)

    def last_transaction(self, terminal: int):
        """The terminal's newest payment as a cashier needs it after a crash
        (`Payments.last_transaction`)."""
        return self._payments.last_transaction(terminal)

    def payments(self, day=None, terminal=None) -> np.ndarray:
        """One row per payment with its final state and signed amount (`Payments.payments`).

        >>> pays = j.payments(day="2026-11-20")                          # doctest: +SKIP
        >>> int(pays["net"][pays["currency"] == 156].sum())              # doctest: +SKIP
        1184250
        """
        return self._payments.payments(day=day, terminal=terminal)

    def totals(self, day: Any, terminal: Optional[int] = None) -> Totals:
        """The payment totals of a business day (one terminal's, or every terminal's): counts
        and net per currency, by final state, kind, method and terminal, the numbers
        ``close_day`` writes into the Z-report.  Kept current as records are appended, so a
        call is a dict lookup (the first one reads the journal once).

        Returns a read-only ``{currency: CurrencyTotals}`` (``posfast.totals.Totals``); each
        ``CurrencyTotals`` has ``count``, ``amount``, ``net`` and ``by_state``, ``by_kind``,
        ``by_method`` (lower-case names) and ``by_terminal`` dicts of ``Sum(count, amount,
        net)``.  Payments belong to the day of their first record, in their newest state, as
        in ``payments(day=...)``.

        >>> t = j.totals("2026-11-20")                                   # doctest: +SKIP
        >>> t[156].net, t[156].by_state["approved"]                      # doctest: +SKIP
        (1184250, Sum(count=412, amount=1190350, net=1184250))
        >>> t[156].by_terminal[3].count, j.totals("2026-11-20", terminal=3)[156].count  # doctest: +SKIP
        (97, 97)
        """
        with self._mutex:
            self._check_open()
            if self.readonly:
                self._refresh()
            book = self._day_totals_book()
            day = day if type(day) is int else day_number(day)
            terminal = None if terminal is None else int(terminal)
            if self.archive is not None and not self._totals_hold(book, day):
                return self._totals_from_records(day, terminal)
            return book.totals(day, terminal)

    def _day_totals_book(self) -> DayTotals:
        """The day totals, current (built now if they are not yet)."""
        book = self._totals_book()
        return book if book is not None else self._build_totals()

    def _totals_book(self) -> Optional[DayTotals]:
        """The day totals kept so far, with every appended record folded (None: not built)."""
        if self._totals_due:
            self._fold_due()
        return self._totals

    def _totals_took(self, row: bytes, oldest: int) -> None:
        """One appended record for the day totals (`oldest`: the oldest seq before it): due
        until the next fold, unless it evicted records -- then what was due is folded as of
        before it, and it too, so that every record is folded with the oldest seq of its time."""
        ring, book = self._ring, self._totals
        if ring.oldest_seq != oldest and book is not None:
            self._fold_due(oldest)
            book.add_one(unpack_row(row), ring.oldest_seq)
            return
        self._totals_due.append(row)
        if len(self._totals_due) >= self._totals_due_max:
            self._fold_due(oldest)

    def _fold_due(self, oldest: Optional[int] = None) -> None:
        """Fold the rows due into the day totals, as of `oldest` (default: the ring's now;
        nothing evicted them since they were appended)."""
        due, self._totals_due = self._totals_due, []
        if not due or self._totals is None:
            return
        oldest = self._ring.oldest_seq if oldest is None else oldest
        if len(due) == 1:
            self._totals.add_one(unpack_row(due[0]), oldest)
        else:
            self._totals.add_rows(np.frombuffer(b"".join(due), dtype=RECORD_DTYPE), oldest)

    def _totals_hold(self, book: DayTotals, day: int) -> bool:
        """Do the day totals hold all of `day`?  Not when part of it went to the archive before
        they were built, or all of it went (they dropped the day); only the archive has it."""
        return self.archive is None or (day not in book.dropped and not len(self.archive.select(
            day=day, kind=_PAYMENT_KIND_LIST, below=book.floor)))

    def _totals_from_records(self, day: int, terminal: Optional[int]) -> Totals:
        """The totals of an archived day, folded from its records (archive included) as
        ``payments(day=...)`` folds them: what `totals` answers for such a day."""
        today = self.day_rule.day_number(now_us())
        rows = self.query(day=list(range(day, max(day + 1, today + 1) + 1)),
                          terminal=terminal, kind=_PAYMENT_KIND_LIST)
        once = DayTotals()
        once.add_rows(rows, self._ring.oldest_seq, evict=False)
        return once.totals(day, terminal)

    def _day_totals(self, day, terminal=None) -> Optional[Totals]:
        """`totals` for a Z-report, or None when they do not hold all of the day (archive):
        then the close computes from the records."""
        with self._mutex:
            book = self._day_totals_book()
            if not self._totals_hold(book, int(day)):
                return None
            return book.totals(int(day), None if terminal is None else int(terminal))

    def _build_totals(self) -> DayTotals:
        """The day totals: those saved with the index, fed the records since, or else built
        from every record."""
        ring = self._ring
        book = self._saved_totals()
        if book is not None:
            self._feed_totals(book, book.upto + 1, ring.head_seq)
        else:
            book = DayTotals(lookup=self._payment_records_before)
            book.floor = book.oldest = ring.oldest_seq
            self._feed_totals(book, ring.oldest_seq, ring.head_seq)
        book.upto = max(book.upto, ring.head_seq)
        self._totals = book
        return book

    def _saved_totals(self) -> Optional[DayTotals]:
        """The DayTotals saved with the index this open trusted, if they hold exactly the
        records up to its head (else None: build them from the records)."""
        at = self._totals_saved_at
        data = self.index.blob(_TOTALS_BLOB) if at else None
        if data is None or at > self._ring.head_seq:
            return None
        try:
            book = DayTotals.from_bytes(data, lookup=self._payment_records_before)
        except ValueError as exc:
            _log.warning("posfast: %s.idx: day totals not read (%s); built from the records",
                         self.path, exc)
            return None
        return book if book.upto == at else None

    def _feed_totals(self, book: DayTotals, first: int, last: int, chunk: int = 1 << 20) -> None:
        for start in range(first, last + 1, chunk):
            rows = self._gather(np.arange(start, min(last, start + chunk - 1) + 1,
                                          dtype=np.uint64))
            book.add_rows(rows, self._ring.oldest_seq)
        book.note_oldest(self._ring.oldest_seq)

    def _payment_records_before(self, wanted: dict, before: int) -> dict:
        """{txn_id: [(seq, day, terminal, kind, state, method, currency, amount), ...]}: the
        live, readable payment records (not training) of the txn ids in `wanted` with seq below
        `before`, found through the bitmaps of their terminals (`wanted` maps each txn id to
        the terminals its new records name; its first record's terminal is added).  What
        DayTotals reads to move a payment it no longer remembers."""
        ring = self._ring
        oldest = ring.oldest_seq
        terminals: set = set()
        for txn, hints in wanted.items():
            terminals.update(hints)
            if oldest <= txn < before:
                try:
                    terminals.add(ring.get(txn).terminal)
                except (KeyError, CorruptRecord):
                    pass
        lo = max(oldest, min(wanted))
        if lo >= before or not terminals:
            return {}
        rows = self._gather(self.index.select(lo, before - 1, terminal=sorted(terminals),
                                              kind=_PAYMENT_KIND_LIST))
        rows = rows[np.isin(rows["txn_id"], np.fromiter(wanted, dtype=np.uint64, count=len(wanted)))
                    & IS_PAYMENT_KIND[rows["kind"]] & ((rows["flags"] & _TRAINING) == 0)]
        out: dict = {}
        for r in rows[_TXN_FIELDS].tolist():
            out.setdefault(r[8], []).append(r[:8])
        return out

    def close_day(self, day, terminal=None, force=False, operator=0, catch_up=False) -> DayClose:
        """Write the Z-report of a business day as a DAY_CLOSE record (`DayBook.close_day`);
        ``catch_up=True`` first closes the skipped days before it, in order."""
        return self._days.close_day(day, terminal=terminal, force=force, operator=operator,
                                    catch_up=catch_up)

    def day_closes(self, terminal=None, every_scope=False) -> list:
        """Live DAY_CLOSE records of a scope, oldest first (`DayBook.day_closes`)."""
        return self._days.day_closes(terminal=terminal, every_scope=every_scope)

    def day_close(self, day, terminal=None) -> Optional[DayClose]:
        """The Z-report of a business day and scope, or None (`DayBook.day_close`)."""
        return self._days.day_close(day, terminal=terminal)

    # ------------------------------------------------------------ lookups
    def get(self, seq: int) -> Record:
        """The Record of `seq`.  KeyError if it is not in the journal; CorruptRecord if damaged."""
        with self._mutex:
            self._refresh()
            if not 0 < int(seq) < 1 << 64:
                raise KeyError(seq)             # (not an OverflowError from the core's u64)
            try:
                return self._ring.get(int(seq))
            except KeyError:
                if self.archive is None or int(seq) >= self._ring.oldest_seq:
                    raise
                return self.archive.get(int(seq))

    def last(self, terminal: int, kind: Any = None) -> Record | None:
        """Newest Record of a terminal (optionally of one kind), or None."""
        with self._mutex:
            if self.readonly:
                self._refresh()
            if type(terminal) is not int:
                terminal = int(terminal)
            kind_value = None if kind is None else int(Kind.coerce(kind, "kind"))
            # the usual case first: the index names a live record, and it is the terminal's
            seq = self.index.newest.get((terminal, kind_value), 0)
            if seq >= self._ring.oldest_seq:
                record = self._ring.get(seq)
                if record.terminal == terminal and (kind_value is None or record.kind == kind_value):
                    return record
            for attempt in range(2):
                seq = self.index.newest_of(terminal, kind_value)
                if seq < self._ring.oldest_seq:
                    return None if self.archive is None else self.archive.last(terminal, kind_value)
                record = self._ring.get(seq)
                if record.terminal == int(terminal) and kind_value in (None, int(record.kind)):
                    return record
                self._distrust_index("it names seq %d (terminal %d, kind %d) as the newest of "
                                     "terminal %d" % (seq, record.terminal, record.kind, terminal))
            return None

    def _gather(self, seqs: np.ndarray) -> np.ndarray:
        seqs = np.ascontiguousarray(seqs, dtype=np.uint64)
        out = np.empty(len(seqs), dtype=RECORD_DTYPE)      # (rows not read are dropped below)
        if len(seqs) == 0:
            return out
        status = self._ring.read_rows(seqs, out.view(np.uint8).reshape(len(seqs), RECORD_DTYPE.itemsize))
        if status.any():
            out = out[status == 0]
        return out

    def query(self, day: Any = None, terminal: Any = None, kind: Any = None, since: Any = None,
              until: Any = None, state: Any = None) -> np.ndarray:
        """Records matching every given filter, in seq order, as a RECORD_DTYPE array.

        `day` is a date, 'YYYY-MM-DD' or a day number; `terminal`, `kind` and
        `state` a value or a list of values; `since`/`until` bound `ts`
        (datetime or microseconds, until exclusive).  Damaged records are skipped.

        >>> rows = j.query(day="2026-11-20", terminal=3)          # doctest: +SKIP
        >>> int(rows["amount"].sum())                             # doctest: +SKIP
        48210
        """
        with self._mutex:
            self._refresh()
            ring = self._ring
            days = None
            if day is not None:
                days = ([day_number(d) for d in day] if isinstance(day, (list, tuple, set))
                        else day_number(day))
            elif since is not None and until is not None:
                lo = self.day_rule.day_number(to_us(since))
                hi = self.day_rule.day_number(to_us(until) - 1)
                if hi - lo < 400:
                    days = list(range(lo, hi + 1))
            kinds = None
            if kind is not None:
                kinds = ([int(Kind.coerce(k, "kind")) for k in kind]
                         if isinstance(kind, (list, tuple, set)) else int(Kind.coerce(kind, "kind")))
            rows = self._select_checked(days, terminal, kinds)
            if self.archive is not None:
                rows = self.archive.extend_query(rows, ring.oldest_seq, day=days, terminal=terminal,
                                                 kind=kinds)
        if since is not None:
            rows = rows[rows["ts"] >= to_us(since)]
        if until is not None:
            rows = rows[rows["ts"] < to_us(until)]
        if state is not None:
            states = [int(State.coerce(s, "state")) for s in
                      (state if isinstance(state, (list, tuple, set)) else [state])]
            rows = rows[np.isin(rows["state"], states)]
        return rows

    def _read_rows_dropping(self, seqs, rows, single, chunk=_BULK_CHUNK) -> np.ndarray:
        """ring.read_rows of `seqs` into `rows`; a large read goes a chunk at a time and
        hands the mapped pages back after each (the rows stay: the file's pages need not)."""
        ring, n = self._ring, len(seqs)
        raw = rows.view(np.uint8).reshape(n, _ROW_SIZE)
        if n <= chunk:
            return ring.read_rows(seqs, raw, **single)
        seqs = np.ascontiguousarray(seqs, dtype=np.uint64)
        status = np.empty(n, np.uint8)
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            status[lo:hi] = ring.read_rows(seqs[lo:hi], raw[lo:hi], **single)
            _core.ring_drop_pages(ring)
        return status

    def _select_checked(self, days, terminal, kinds) -> np.ndarray:
        """Live records the index names for the filters, each checked against the filters by its
        own columns: an index that names one that does not match is rebuilt, never trusted.
        (The core checks a filter of one value as it reads; this, one of several.)"""
        ring = self._ring
        filters = [(c, w) for c, w in (("day", days), ("terminal", terminal), ("kind", kinds))
                   if w is not None]
        single = {c: int(w) for c, w in filters if not isinstance(w, _MANY)}
        many = [(c, w) for c, w in filters if isinstance(w, _MANY)]
        for attempt in range(2):
            seqs = self.index.select(ring.oldest_seq, ring.head_seq, day=days,
                                     terminal=terminal, kind=kinds)
            rows = np.empty(len(seqs), dtype=RECORD_DTYPE)
            if not len(seqs):
                return rows
            status = self._read_rows_dropping(seqs, rows, single)
            if not many and not status.any():
                return rows                     # (the usual case: every row read and matching)
            keep = status == 0
            for column, wanted in many:
                keep &= _match(rows, column, wanted)
            if keep.all():
                return rows
            wrong = (status == _core.CHK_NOT_FILTERED) | ((status == 0) & ~keep)
            if not wrong.any():
                return rows[keep]               # (damaged or gone: skipped, as every lookup does)
            if attempt == 0:
                bad = rows[wrong][0]
                self._distrust_index("it files seq %d (day %d, terminal %d, kind %d) under %s" % (
                    bad["seq"], bad["day"], bad["terminal"], bad["kind"],
                    ", ".join("%s %s" % (c, _days_text(w) if c == "day" else w)
                              for c, w in filters)))
        return rows[keep]

    def count(self, day: Any = None, terminal: Any = None, kind: Any = None) -> int:
        """How many live records match (from the bitmaps alone, no record is read)."""
        with self._mutex:
            self._refresh()
            kinds = None if kind is None else int(Kind.coerce(kind, "kind"))
            days = None if day is None else day_number(day)
            return len(self.index.select(self._ring.oldest_seq, self._ring.head_seq, day=days,
                                         terminal=terminal, kind=kinds))

    def payloads(self, seqs: Iterable[int]) -> list[bytes]:
        """Payload bytes of each seq, in order (b"" where a record is gone or damaged)."""
        with self._mutex:
            self._refresh()
            seqs = np.ascontiguousarray(seqs, dtype=np.uint64)
            if self.archive is not None:
                return self.archive.fill_payloads(seqs, self._ring.payloads(seqs), self._ring.oldest_seq)
            return self._ring.payloads(seqs)

    def link(self, seq: int) -> bytes:
        """The 16-byte hash-chain link stored in record `seq`."""
        return self.get(seq).link

    def read_range(self, first_seq: int, last_seq: int) -> Batch:
        """Records first_seq..last_seq (inclusive) with payloads and links, for sync."""
        asked = int(first_seq)
        with self._mutex:
            if not self.readonly and self._ring.unsynced_writes:
                # what leaves the terminal must survive a power cut here first (batch mode),
                # or the seqs could be issued again with other records after one
                self._ring.sync()
            for attempt in range(4):
                self._refresh()
                ring = self._ring
                first_seq = max(asked, ring.oldest_seq)
                last_seq = min(int(last_seq), ring.head_seq)
                if last_seq < first_seq:
                    return Batch(self.journal_id, _EMPTY.copy(), [], [], b"", [], ring.version)
                seqs = np.arange(first_seq, last_seq + 1, dtype=np.uint64)
                out = np.zeros(len(seqs), dtype=RECORD_DTYPE)
                status = ring.read_rows(seqs, out.view(np.uint8).reshape(len(seqs),
                                                                          RECORD_DTYPE.itemsize))
                payloads, links, exts = ring.payloads(seqs), ring.links(seqs), ring.exts(seqs)
                if self.readonly and not status.any():
                    # a reader re-checks: the writer may have lapped a record while we copied
                    status = np.array([0 if link is not None and len(p) == n and len(e) == m
                                       else 5  # stale
                                       for p, link, e, n, m in zip(payloads, links, exts,
                                                                   out["payload_len"].tolist(),
                                                                   out["ext_len"].tolist())])
                if not status.any():
                    break
                bad = int(seqs[np.flatnonzero(status)[0]])
                if self.readonly and attempt < 3:
                    self._refresh()
                    if bad < ring.oldest_seq:
                        continue        # lapped by the writer, not damaged: read again
                raise CorruptRecord(
                    "posfast: record seq %d of %s is damaged (%s); it cannot be sent. Run `posfast "
                    "verify %s` and restore it before syncing further."
                    % (bad, self.path, _core.CAUSES.get(int(status[np.flatnonzero(status)[0]]), "?"),
                       self.path))
            if first_seq == 1:
                prev = _core.genesis_link(ring.journal_id)
            else:
                prev = ring.links(np.array([first_seq - 1], dtype=np.uint64))[0] or b""
            return Batch(self.journal_id, out, payloads, links, prev, exts, ring.version)

    # ------------------------------------------------------------ health
    def status(self) -> dict:
        """Where the journal stands: sizes, seqs, sync backlog, damage found at open."""
        with self._mutex:
            self._refresh()
            self._note_repairs()
            ring = self._ring
            unsynced = max(0, ring.head_seq - max(ring.sync_watermark, ring.oldest_seq - 1))
            oldest_unsynced_ts = None
            if unsynced:
                first = max(ring.sync_watermark + 1, ring.oldest_seq)
                rows = self._gather(np.array([first], dtype=np.uint64))
                if len(rows):
                    oldest_unsynced_ts = int(rows["ts"][0])
            return {
                "path": self.path,
                "journal_id": str(self.journal_id),
                "format_version": ring.version,
                "capacity": ring.capacity,
                "slot_size": ring.slot_size,
                "max_payload": ring.max_payload,
                "file_bytes": os.path.getsize(self.path),
                "head_seq": ring.head_seq,
                "oldest_seq": ring.oldest_seq,
                "live_records": ring.live_records,
                "used_slots": ring.used_slots,
                "fill": ring.used_slots / ring.capacity,
                "sync_watermark": ring.sync_watermark,
                "unsynced": unsynced,
                "oldest_unsynced_ts": oldest_unsynced_ts,
                "retention": self.retention,
                "durability": {v: k for k, v in _DURABILITY.items()}[ring.durability],
                "day_rule": self.day_rule.describe(),
                "readonly": self.readonly,
                "damaged_at_open": len(ring.damaged),
                "index_problems": list(self.index_problems),
                "torn_at_open": len(ring.torn),
                "archive": self.archive.status() if self.archive is not None else None,
            }

    def verify(self, check_index: bool = True) -> VerifyReport:
        """Check every live record (checksum, seq, position, hash chain) and the index.

        Damage is reported with slot, seq and cause; nothing is changed.
        """
        with self._mutex:
            self._refresh()
            ring = self._ring
            checked, problems = ring.verify()
            self._note_repairs()
            report = VerifyReport(self.path, checked, ring.oldest_seq, ring.head_seq,
                                  [Problem(seq, slot, detail, code)
                                   for seq, slot, code, detail in problems],
                                  list(ring.torn))
            report.problems += [Problem(0, None, why) for why in self.index_problems]
            if check_index:
                rebuilt = Index()
                readable = self._index_range(ring.oldest_seq, ring.head_seq, index=rebuilt)
                # records that cannot be read back (damaged, or evicted meanwhile by the writer
                # of a read-only handle) are indexed all the same: not the index's fault
                seqs = np.arange(ring.oldest_seq, ring.head_seq + 1, dtype=np.uint64)
                unreadable = np.setdiff1d(seqs, readable).tolist()
                if not rebuilt.equals(self.index, ring.oldest_seq, ignore=unreadable):
                    report.problems.append(Problem(0, None, "index file disagrees with the records "
                                                   "(rebuilt in memory; it is rewritten on close)"))
                    self.index = rebuilt
            if self.archive is not None:
                problems, archived = self.archive.verify(ring.oldest_seq)
                report.problems += [Problem(seq, "archive" if where is None else "archive/%s" % where,
                                            cause) for seq, where, cause in problems]
                report.checked += archived
            self._days.verify_into(report, index_checked=check_index)
            return report
