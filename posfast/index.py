"""The bitmap index: roaring bitmaps of live seqs per business day, terminal and kind.

Kept in step with appends; evictions are applied lazily (every lookup clips to
the live range, and bitmaps are compacted once a good share has gone).  Saved
beside the ring as ``<journal>.idx`` with the seq it is valid up to, so opening
replays only the tail.  The file (FORMAT.md, "Index file") is read lazily: opening
reads its header and directory; each bitmap is read, and its CRC checked, the first
time a lookup needs it, and the record positions are mapped, not read.
"""
from __future__ import annotations

import array
import os
import struct

import numpy as np
from pyroaring import BitMap64

from . import _core
from ._files import open_new
from .errors import PosfastError

import mmap

_MAGIC = b"POSFIDX2"
# magic, version, journal id, head seq, oldest seq, head link, n positions, lost positions,
# offset of the positions, directory bytes
_HEAD = struct.Struct("<8sI16sQQ16sQQQI")
_VERSION = 2
_ENTRY = struct.Struct("<qQII")         # key, offset, length, CRC32C of the blob
_NEWEST = struct.Struct("<Iiq")         # terminal, kind (-1 = any), seq
_BLOB = struct.Struct("<8sQII")         # name, offset, length, CRC32C
_FAMILIES = ("day", "terminal", "kind")
_PAGE = 4096


class IndexBlobDamaged(PosfastError):
    """A bitmap of the index file fails its checksum (raised inside the index only)."""


class _Family(dict):
    """Bitmaps of one family (by day, terminal or kind), read from the index file on first
    use: a plain dict to its users, with the keys of unread bitmaps in `_pending`."""

    def __init__(self, index=None, name="", pending=None):
        super().__init__()
        self._index = index
        self._name = name
        self._pending: dict = pending or {}

    def _load(self, key):
        spec = self._pending.pop(key)
        bm = self._index._read_bitmap(self._name, key, spec)
        if bm is None:               # damaged: the index rebuilt itself from the records
            return dict.get(self, key)
        dict.__setitem__(self, key, bm)
        return bm

    def _load_all(self):
        for key in list(self._pending):
            if key in self._pending:
                self._load(key)

    def __missing__(self, key):
        if key in self._pending:
            bm = self._load(key)
            if bm is not None:
                return bm
        raise KeyError(key)

    def get(self, key, default=None):
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        if key in self._pending:
            bm = self._load(key)
            return default if bm is None else bm
        return default

    def __contains__(self, key):
        return dict.__contains__(self, key) or key in self._pending

    def setdefault(self, key, default=None):
        if key in self._pending:
            self._load(key)
        return dict.setdefault(self, key, default)

    def __setitem__(self, key, value):
        self._pending.pop(key, None)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key):
        had = self._pending.pop(key, None) is not None
        if dict.__contains__(self, key):
            dict.__delitem__(self, key)
        elif not had:
            raise KeyError(key)

    def pop(self, key, *default):
        if key in self._pending:
            self._load(key)
        return dict.pop(self, key, *default)

    def clear(self):
        self._pending.clear()
        dict.clear(self)

    def __iter__(self):
        return iter(list(dict.keys(self)) + list(self._pending))

    def keys(self):  # type: ignore[override]
        return list(self)

    def __len__(self):
        return dict.__len__(self) + len(self._pending)

    def items(self):  # type: ignore[override]
        self._load_all()
        return dict.items(self)

    def values(self):  # type: ignore[override]
        self._load_all()
        return dict.values(self)

    def copy(self):
        self._load_all()
        return dict(dict.items(self))


def _as_q(seqs: np.ndarray) -> array.array:
    # pyroaring takes array('Q') through the buffer protocol, 4x faster than numpy input
    out = array.array("Q")
    out.frombytes(np.ascontiguousarray(seqs, dtype="<u8").tobytes())
    return out


def _add_seqs(mapping: dict, key: int, seqs: np.ndarray, ascending: bool) -> None:
    bm = mapping.get(key)
    if bm is None:
        bm = mapping[key] = BitMap64()
    if ascending and int(seqs[-1]) - int(seqs[0]) == len(seqs) - 1:
        bm.add_range(int(seqs[0]), int(seqs[-1]) + 1)     # a run: a day's records, one kind only
    else:
        bm.update(_as_q(seqs))


def _add_grouped(mapping: dict, keys: np.ndarray, seqs: np.ndarray, ascending: bool = False) -> None:
    """Add seqs to mapping[key] for each key; `ascending`: seqs strictly increase."""
    if len(keys) == 0:
        return
    first = keys[0]
    if (keys == first).all():
        _add_seqs(mapping, int(first), seqs, ascending)
        return
    if (keys[1:] >= keys[:-1]).all():       # already grouped (days of rows in time order)
        sorted_keys, sorted_seqs = keys, seqs
    else:
        low = keys.min()
        if int(keys.max()) - int(low) < 65536:
            # a stable sort of 16-bit keys is a radix sort: ~5x faster than on wider keys
            order = np.argsort((keys - low).astype(np.uint16), kind="stable")
        else:
            order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        sorted_seqs = seqs[order]
    bounds = np.flatnonzero(np.diff(sorted_keys)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [len(keys)]))
    for start, end in zip(starts.tolist(), ends.tolist()):
        _add_seqs(mapping, int(sorted_keys[start]), sorted_seqs[start:end], ascending)


_DUE_MAX = 64     # single appends noted before they go into the bitmaps


class Index:
    """Bitmaps by day, terminal and kind, plus the newest seq per (terminal, kind)."""

    def __init__(self):
        self._by_day: dict[int, BitMap64] = _Family(self, "day")
        self._by_terminal: dict[int, BitMap64] = _Family(self, "terminal")
        self._by_kind: dict[int, BitMap64] = _Family(self, "kind")
        self._newest: dict[tuple, int] = {}     # (terminal, kind) and (terminal, None) -> seq
        # Single appends waiting to go into the bitmaps, as (seq, day, terminal, kind): every
        # read of the index takes them in first (the properties below), so none is ever missed.
        self._due: list = []
        self.compacted_below = 1
        self.blobs: dict[bytes, bytes] = {}      # other parts' state saved with the index
        self.dirty = False                       # changed since it was loaded or saved
        self.rebuild = None     # set by the journal: re-index every record into this index
        self._map = None        # the mapped index file of a lazy load
        self._blob_specs: dict = {}

    def _read_bitmap(self, family, key, spec):
        offset, length, crc = spec
        data = self._map[offset:offset + length] if self._map is not None else b""
        if len(data) == length and _core.crc32c(data) == crc:
            try:
                return BitMap64.deserialize(data)
            except (ValueError, OverflowError):
                pass
        self._rebuild("its %s bitmap %d fails its checksum" % (family, key))
        return None

    def _rebuild(self, why):
        self._due = []          # (the rebuild reads every record, those due included)
        for family in (self._by_day, self._by_terminal, self._by_kind):
            family.clear()
        self._newest.clear()
        if self.rebuild is None:
            raise IndexBlobDamaged(why)
        self.rebuild(self, why)

    def blob(self, name: bytes):
        """Bytes another part saved with the index under `name` (read now, on first use),
        or None."""
        if name in self.blobs:
            return self.blobs[name]
        spec = self._blob_specs.pop(name, None)
        if spec is None or self._map is None:
            return None
        offset, length, crc = spec
        data = bytes(self._map[offset:offset + length])
        if len(data) != length or _core.crc32c(data) != crc:
            return None
        self.blobs[name] = data
        return data

    def blob_view(self, name: bytes, check: bool = True):
        """`blob`, as a read-only view of the mapped index file (not copied into memory: its
        pages are page cache, read where used), CRC-checked; None if absent or damaged.
        `check=False`: the CRC is not checked here (a blob that checks its own parts as they
        are used, so that a lookup reads only the pages it needs)."""
        spec = self._blob_specs.get(name)
        if spec is None or self._map is None:
            return None
        offset, length, crc = spec
        if offset + length > len(self._map):
            return None
        view = memoryview(self._map)[offset:offset + length]
        if check and _core.crc32c(view) != crc:
            view.release()
            return None
        return view

    def blob_offset(self, name: bytes) -> int:
        """Where the blob `name` of the loaded file starts in it (-1: none)."""
        spec = self._blob_specs.get(name)
        return -1 if spec is None else spec[0]

    def set_blob(self, name: bytes, data) -> None:
        """What another part saves with the index under `name` from the next save on (None:
        nothing, and the one read from the file is dropped).  Names are at most 8 bytes.
        `data` is bytes, or a list of buffers saved one after the other (no copy joins them)."""
        if len(name) > 8:
            raise ValueError("index blob name %r is longer than 8 bytes" % (name,))
        self._blob_specs.pop(name, None)
        if data is None:
            self.blobs.pop(name, None)
        else:
            self.blobs[name] = data

    # Reads go through these: they take in the single appends due first.
    @property
    def by_day(self) -> dict[int, BitMap64]:
        if self._due:
            self._settle()
        return self._by_day

    @property
    def by_terminal(self) -> dict[int, BitMap64]:
        if self._due:
            self._settle()
        return self._by_terminal

    @property
    def by_kind(self) -> dict[int, BitMap64]:
        if self._due:
            self._settle()
        return self._by_kind

    @property
    def newest(self) -> dict[tuple, int]:
        if self._due:
            self._settle()
        return self._newest

    def add_one(self, seq: int, day: int, terminal: int, kind: int) -> None:
        """Index one appended record (the single-append path: no arrays, no loop).  It is
        noted now and goes into the bitmaps at the next read of the index, or with the 63
        after it: a durable append runs this right after its fdatasync, when every cache is
        cold, and 64 bitmap updates in a row cost less than one after a sync."""
        self.dirty = True
        due = self._due
        due.append((seq, day, terminal, kind))
        if len(due) >= _DUE_MAX:
            self._settle()

    def _settle(self) -> None:
        due, self._due = self._due, []
        by_day, by_terminal, by_kind = self._by_day, self._by_terminal, self._by_kind
        newest = self._newest
        for seq, day, terminal, kind in due:
            # dict.get: the bitmap if it is loaded (the usual case), else _Family's own get
            bitmap = dict.get(by_day, day) or by_day.get(day)
            if bitmap is None:
                bitmap = by_day[day] = BitMap64()
            bitmap.add(seq)
            bitmap = dict.get(by_terminal, terminal) or by_terminal.get(terminal)
            if bitmap is None:
                bitmap = by_terminal[terminal] = BitMap64()
            bitmap.add(seq)
            bitmap = dict.get(by_kind, kind) or by_kind.get(kind)
            if bitmap is None:
                bitmap = by_kind[kind] = BitMap64()
            bitmap.add(seq)
            if seq > newest.get((terminal, kind), 0):
                newest[(terminal, kind)] = seq
            if seq > newest.get((terminal, None), 0):
                newest[(terminal, None)] = seq

    def add_rows(self, rows: np.ndarray) -> None:
        """Index decoded rows (RECORD_DTYPE with seq set)."""
        n = len(rows)
        if n == 0:
            return
        self.dirty = True
        seqs = rows["seq"]
        if n == 1:
            self.add_one(int(seqs[0]), int(rows["day"][0]), int(rows["terminal"][0]),
                         int(rows["kind"][0]))
            return
        ascending = bool((seqs[1:] > seqs[:-1]).all())
        _add_grouped(self.by_day, rows["day"], seqs, ascending)
        _add_grouped(self.by_terminal, rows["terminal"], seqs, ascending)
        _add_grouped(self.by_kind, rows["kind"], seqs, ascending)
        self._note_newest(rows["terminal"].astype(np.uint64) << np.uint64(8)
                          | rows["kind"].astype(np.uint64), seqs, with_kind=True)
        self._note_newest(rows["terminal"].astype(np.uint64), seqs, with_kind=False)

    def _note_newest(self, keys, seqs, with_kind):
        low, high = int(keys.min()), int(keys.max())
        if high - low < (1 << 20):
            # newest seq per key without sorting (a lexsort of 1M rows costs ~50 ms)
            top = np.zeros(high - low + 1, dtype=np.uint64)
            np.maximum.at(top, (keys - np.uint64(low)).astype(np.intp), seqs.astype(np.uint64))
            present = np.flatnonzero(top)
            pairs = zip((present + low).tolist(), top[present].tolist())
        else:
            order = np.lexsort((seqs, keys))
            sorted_keys = keys[order]
            last = np.flatnonzero(np.append(np.diff(sorted_keys) != 0, True))
            pairs = zip(sorted_keys[last].tolist(), seqs[order][last].tolist())
        for key, seq in pairs:
            name = (key >> 8, key & 0xFF) if with_kind else (key, None)
            if seq > self.newest.get(name, 0):
                self.newest[name] = seq

    def merge(self, other: "Index") -> None:
        """Add everything `other` indexes (built beside an append) to this index."""
        self.dirty = True
        for mine, theirs in ((self.by_day, other.by_day), (self.by_terminal, other.by_terminal),
                             (self.by_kind, other.by_kind)):
            for key, bm in theirs.items():
                if key in mine:
                    mine[key] |= bm
                else:
                    mine[key] = bm
        for name, seq in other.newest.items():
            if seq > self.newest.get(name, 0):
                self.newest[name] = seq

    def compact(self, oldest: int) -> None:
        """Drop evicted seqs (below `oldest`) from every bitmap."""
        if oldest <= self.compacted_below:
            return
        self.dirty = True
        for mapping in (self.by_day, self.by_terminal, self.by_kind):
            for key in list(mapping):
                bm = mapping[key]
                if bm and bm.max() < oldest:
                    del mapping[key]
                else:
                    bm.remove_range(0, oldest)
        for name in [k for k, seq in self.newest.items() if seq < oldest]:
            del self.newest[name]
        self.compacted_below = oldest

    def maybe_compact(self, oldest: int, capacity: int) -> None:
        if oldest - self.compacted_below > max(capacity // 8, 1024):
            self.compact(oldest)

    def select(self, oldest: int, head: int, day=None, terminal=None, kind=None) -> np.ndarray:
        """Live seqs matching every given filter, ascending, as uint64.

        `day`, `terminal` and `kind` are ints or iterables of ints (any of them).
        """
        parts = []
        for mapping, wanted in ((self.by_day, day), (self.by_terminal, terminal),
                                (self.by_kind, kind)):
            if wanted is None:
                continue
            if isinstance(wanted, (list, tuple, set, frozenset, range)):
                bm = BitMap64.union(BitMap64(), *[mapping.get(int(w), BitMap64()) for w in wanted])
            else:
                bm = mapping.get(int(wanted))  # type: ignore[assignment]  # None: tested next
                if bm is None:
                    return np.zeros(0, dtype=np.uint64)
            parts.append(bm)
        if not parts:
            if head < oldest:
                return np.zeros(0, dtype=np.uint64)
            return np.arange(oldest, head + 1, dtype=np.uint64)
        parts.sort(key=len)
        result = parts[0] if len(parts) == 1 else BitMap64.intersection(*parts)
        seqs = np.frombuffer(result.to_array(), dtype=np.uint64)
        if len(seqs) and (seqs[0] < oldest or seqs[-1] > head):
            seqs = seqs[(seqs >= oldest) & (seqs <= head)]
        return seqs

    def partition_flaw(self, oldest: int, last: int, live: int) -> str:
        """Why these bitmaps cannot be the index of `live` readable records oldest..last, or "".

        Every record has one day, one terminal and one kind: each family of bitmaps must hold
        each live seq exactly once and nothing outside the range.  Cardinalities only, so it
        costs a few microseconds per bitmap; a record moved between two bitmaps of a family
        passes, and is caught when it is read (lookups check each row's own columns)."""
        if last < oldest:
            return ""
        for name, mapping in (("day", self.by_day), ("terminal", self.by_terminal),
                              ("kind", self.by_kind)):
            held = sum(bm.range_cardinality(oldest, last + 1) for bm in mapping.values())
            union = BitMap64.union(BitMap64(), *mapping.values()) if mapping else BitMap64()
            distinct = union.range_cardinality(oldest, last + 1)
            if held != distinct:
                return "%d seq(s) filed under two %ss" % (held - distinct, name)
            if distinct != live:
                return ("its %s bitmaps hold %d of the %d readable records seq %d..%d"
                        % (name, distinct, live, oldest, last))
            if union and union.max() > last:
                return "its %s bitmaps hold seq %d, past the newest record it covers (%d)" % (
                    name, union.max(), last)
        for (terminal, kind), seq in self.newest.items():
            if seq > last or (seq >= oldest and seq not in self.by_terminal.get(terminal, ())):
                return "its newest record of terminal %d is seq %d, not one of its records" % (
                    terminal, seq)
        return ""

    def newest_of(self, terminal: int, kind=None) -> int:
        return self.newest.get((int(terminal), None if kind is None else int(kind)), 0)

    def equals(self, other: "Index", oldest: int, ignore=()) -> bool:
        """Same live content (used by tests and verify to compare a loaded and a rebuilt index),
        leaving out the seqs in `ignore`."""
        skip = BitMap64(ignore)

        def live(mapping):
            out = {}
            for key, bm in mapping.items():
                clipped = BitMap64(bm)
                clipped.remove_range(0, oldest)
                clipped -= skip
                if clipped:
                    out[key] = clipped
            return out
        return all(live(a) == live(b) for a, b in ((self.by_day, other.by_day),
                                                     (self.by_terminal, other.by_terminal),
                                                     (self.by_kind, other.by_kind)))

    # ------------------------------------------------------------------ file
    def save(self, path: str, journal_id: bytes, head_seq: int, oldest_seq: int,
             head_link: bytes, positions: np.ndarray, durable: bool = False) -> bytes:
        """Write through a temp file and a rename; returns the digest of its directory, which
        the journal's header names (FORMAT.md, "Index file").  `durable`: fsync it first."""
        self.compact(oldest_seq)
        positions = np.ascontiguousarray(positions, dtype="<u8")
        blobs = []          # (family or None, key, bytes)
        directory = []
        newest = sorted(self.newest.items(), key=lambda kv: (kv[0][0], -1 if kv[0][1] is None
                                                              else kv[0][1]))
        directory.append(struct.pack("<I", len(newest)))
        directory += [_NEWEST.pack(t, -1 if k is None else k, seq) for (t, k), seq in newest]
        fam_entries = []
        for mapping in (self.by_day, self.by_terminal, self.by_kind):
            entries = []
            for key, bm in sorted(mapping.items()):
                entries.append((key, bm.serialize()))
            fam_entries.append(entries)
        extra = sorted((name, data) for name, data in self._all_blobs().items())
        dir_len = (len(b"".join(directory)) + sum(4 + len(e) * _ENTRY.size for e in fam_entries)
                   + 4 + len(extra) * _BLOB.size)
        offset = _HEAD.size + dir_len + 4          # blobs follow the directory and its CRC
        for entries in fam_entries:
            directory.append(struct.pack("<I", len(entries)))
            for key, blob in entries:
                directory.append(_ENTRY.pack(key, offset, len(blob), _core.crc32c(blob)))
                blobs.append(blob)
                offset += len(blob)
        directory.append(struct.pack("<I", len(extra)))
        for name, data in extra:
            # named blobs start at a multiple of 8 (zeros before): their arrays map aligned
            pad = -offset % 8
            if pad:
                blobs.append(bytes(pad))
                offset += pad
            pieces = data if isinstance(data, list) else [data]
            length, crc = 0, 0
            for piece in pieces:
                piece = memoryview(piece).cast("B")
                crc = _core.crc32c(piece, crc)
                length += len(piece)
            directory.append(_BLOB.pack(name, offset, length, crc))
            blobs.extend(pieces)
            offset += length
        pos_offset = -(-offset // _PAGE) * _PAGE      # page-aligned: mapped, read where used
        lost = int(np.count_nonzero(positions == 0))
        head = _HEAD.pack(_MAGIC, _VERSION, journal_id, head_seq, oldest_seq, head_link,
                          len(positions), lost, pos_offset, dir_len)
        sealed = head + b"".join(directory)
        assert len(sealed) == _HEAD.size + dir_len
        tmp = path + ".tmp"
        with open_new(tmp) as f:
            f.write(sealed)
            f.write(struct.pack("<I", _core.crc32c(sealed)))
            for blob in blobs:
                f.write(blob)
            f.write(b"\0" * (pos_offset - offset))
            f.write(positions.tobytes())
            if durable:
                f.flush()
                os.fsync(f.fileno())
        # The index is a cache: a crash can leave it torn or stale, and then its checks (CRCs,
        # the header's digest, its seq/link hint checked against the ring) send open to a rebuild.
        os.replace(tmp, path)
        self.dirty = False
        return _core.sha256(sealed)[:16]

    def _all_blobs(self):
        for name in list(self._blob_specs):
            self.blob(name)
        return self.blobs

    @classmethod
    def load(cls, path: str, journal_id: bytes):
        """(index, head_seq, oldest_seq, head_link, positions, lost, digest) or None if missing
        or unusable.  Reads the header and the directory; bitmaps are read when first used and
        the positions stay mapped."""
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < _HEAD.size + 4:
                    return None
                first = f.read(_PAGE)
                magic, version, jid, head_seq, oldest_seq, head_link, npos, lost, pos_offset, \
                    dir_len = _HEAD.unpack_from(first)
                if magic != _MAGIC or version != _VERSION or jid != journal_id \
                        or _HEAD.size + dir_len + 4 > size or pos_offset + npos * 8 > size:
                    return None
                sealed = first[:_HEAD.size + dir_len + 4]
                if len(sealed) < _HEAD.size + dir_len + 4:
                    sealed += f.read(_HEAD.size + dir_len + 4 - len(sealed))
                body, crc = sealed[:-4], struct.unpack("<I", sealed[-4:])[0]
                if _core.crc32c(body) != crc:
                    return None
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        except (OSError, ValueError, struct.error):
            return None
        index = cls()
        index._map = mapped
        try:
            offset = _HEAD.size
            (count,) = struct.unpack_from("<I", body, offset)
            offset += 4
            for _ in range(count):
                terminal, kind, seq = _NEWEST.unpack_from(body, offset)
                offset += _NEWEST.size
                index.newest[(terminal, None if kind < 0 else kind)] = seq
            for name in _FAMILIES:
                (count,) = struct.unpack_from("<I", body, offset)
                offset += 4
                pending = {}
                for _ in range(count):
                    key, blob_offset, length, blob_crc = _ENTRY.unpack_from(body, offset)
                    offset += _ENTRY.size
                    if blob_offset + length > size:
                        return None
                    pending[key] = (blob_offset, length, blob_crc)
                getattr(index, "by_" + name)._pending.update(pending)
            (count,) = struct.unpack_from("<I", body, offset)
            offset += 4
            for _ in range(count):
                name, blob_offset, length, blob_crc = _BLOB.unpack_from(body, offset)
                offset += _BLOB.size
                index._blob_specs[name.rstrip(b"\0")] = (blob_offset, length, blob_crc)
        except struct.error:
            return None
        positions = np.frombuffer(mapped, dtype="<u8", count=npos, offset=pos_offset) \
            if npos and mapped is not None else np.zeros(0, dtype="<u8")
        index.compacted_below = oldest_seq
        return index, head_seq, oldest_seq, head_link, positions, lost, _core.sha256(body)[:16]
