"""The bitmap index: roaring bitmaps of live seqs per business day, terminal and kind.

Kept in step with appends; evictions are applied lazily (every lookup clips to
the live range, and bitmaps are compacted once a good share has gone).  Saved
beside the ring as ``<journal>.idx`` with a checksum and the seq it is valid up
to, so opening loads it and replays only the tail.
"""
from __future__ import annotations

import array
import os
import struct

import numpy as np
from pyroaring import BitMap64

from . import _core
from ._files import open_new

_MAGIC = b"POSFIDX1"
_HEAD = struct.Struct("<8sI16sQQ16sQ")   # magic, version, journal id, head seq, oldest seq, head link, n positions
_VERSION = 1


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


class Index:
    """Bitmaps by day, terminal and kind, plus the newest seq per (terminal, kind)."""

    def __init__(self):
        self.by_day: dict[int, BitMap64] = {}
        self.by_terminal: dict[int, BitMap64] = {}
        self.by_kind: dict[int, BitMap64] = {}
        self.newest: dict[tuple, int] = {}      # (terminal, kind) and (terminal, None) -> seq
        self.compacted_below = 1

    def add_rows(self, rows: np.ndarray) -> None:
        """Index decoded rows (RECORD_DTYPE with seq set)."""
        n = len(rows)
        if n == 0:
            return
        seqs = rows["seq"]
        if n == 1:
            seq = int(seqs[0])
            terminal, kind = int(rows["terminal"][0]), int(rows["kind"][0])
            self.by_day.setdefault(int(rows["day"][0]), BitMap64()).add(seq)
            self.by_terminal.setdefault(terminal, BitMap64()).add(seq)
            self.by_kind.setdefault(kind, BitMap64()).add(seq)
            self.newest[(terminal, kind)] = max(seq, self.newest.get((terminal, kind), 0))
            self.newest[(terminal, None)] = max(seq, self.newest.get((terminal, None), 0))
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
             head_link: bytes, positions: np.ndarray) -> None:
        """Write through a temp file and a rename; the readers check it before trusting it."""
        self.compact(oldest_seq)
        chunks = [_HEAD.pack(_MAGIC, _VERSION, journal_id, head_seq, oldest_seq, head_link,
                             len(positions)),
                  np.ascontiguousarray(positions, dtype="<u8").tobytes()]
        for mapping in (self.by_day, self.by_terminal, self.by_kind):
            chunks.append(struct.pack("<I", len(mapping)))
            for key, bm in sorted(mapping.items()):
                blob = bm.serialize()
                chunks.append(struct.pack("<qI", key, len(blob)))
                chunks.append(blob)
        chunks.append(struct.pack("<I", len(self.newest)))
        for (terminal, kind), seq in sorted(self.newest.items(), key=lambda kv: (kv[0][0], kv[0][1] or -1)):
            chunks.append(struct.pack("<Iiq", terminal, -1 if kind is None else kind, seq))
        body = b"".join(chunks)
        tmp = path + ".tmp"
        with open_new(tmp) as f:
            f.write(body)
            f.write(struct.pack("<I", _core.crc32c(body)))
        # No fsync: the index is a cache.  A crash can leave it torn or stale, and then its
        # CRC or its seq/link hint (checked against the ring at open) sends open to a rebuild.
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str, journal_id: bytes):
        """(index, head_seq, oldest_seq, head_link, positions) or None if missing or unusable."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return None
        if len(data) < _HEAD.size + 4:
            return None
        body, crc = data[:-4], struct.unpack("<I", data[-4:])[0]
        if _core.crc32c(body) != crc:
            return None
        magic, version, jid, head_seq, oldest_seq, head_link, npos = _HEAD.unpack_from(body)
        if magic != _MAGIC or version != _VERSION or jid != journal_id:
            return None
        offset = _HEAD.size
        if npos * 8 > len(body) - offset:
            return None
        positions = np.frombuffer(body, dtype="<u8", count=npos, offset=offset).astype(np.uint64)
        offset += npos * 8
        index = cls()
        try:
            for mapping in (index.by_day, index.by_terminal, index.by_kind):
                (count,) = struct.unpack_from("<I", body, offset)
                offset += 4
                for _ in range(count):
                    key, size = struct.unpack_from("<qI", body, offset)
                    offset += 12
                    mapping[key] = BitMap64.deserialize(body[offset:offset + size])
                    offset += size
            (count,) = struct.unpack_from("<I", body, offset)
            offset += 4
            for _ in range(count):
                terminal, kind, seq = struct.unpack_from("<Iiq", body, offset)
                offset += 16
                index.newest[(terminal, None if kind < 0 else kind)] = seq
        except (struct.error, ValueError):
            return None
        index.compacted_below = oldest_seq
        return index, head_seq, oldest_seq, head_link, positions
