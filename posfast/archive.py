"""The archive: synced records the ring is about to overwrite, kept in compressed,
checksummed segments beside it, so old receipts stay reachable.

A journal created with ``retention="archive"`` calls ``on_evict(first, last)``
before overwriting records (only synced ones are ever overwritten).  The archive
writes them, and the rest of that business day that is already synced, into
``<journal>.archive/`` before the append proceeds; if it cannot, the append
fails and nothing is overwritten.  ``Journal.get``, ``query``, ``last`` and
``payloads`` fall back to it, so a reprint from three months ago works on a
ring that holds three weeks: archived records come back with
``Record.archived`` True and ``Flag.ARCHIVED`` set in query rows.

>>> import posfast, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "till.pfj")
>>> j = posfast.Journal.create(path, capacity=64, retention="archive", durability="none")
>>> for i in range(200):
...     seq = j.append(terminal=1, kind="sale", state="approved", amount=100 + i, currency=156)
...     j.set_sync_watermark(seq)
>>> j.get(1).amount, j.get(1).archived, j.get(200).archived
(100, True, False)
>>> j.verify().ok
True
>>> j.close()

Layout of ``<journal>.archive/``:

``YYYY-MM-DD_<first seq>-<last seq>.pfa``
    one segment: a 76-byte header (magic, version, journal id, seq range, business
    days, codec, CRC-32C of the compressed body, CRC-32C of the header) and a body
    holding the records of a run of one business day (a busy day is split at
    ``segment_bytes``).  Version 2 (written now): the RECORD_DTYPE fields as
    transformed, byte-shuffled columns, the payloads as a stream of their own
    (optionally with the archive's dictionary), and the hash-chain links the records
    cannot give back plus one in CHECK_EVERY; version 1 (still read): whole rows,
    payloads and every link.  Written to a temp file, synced, renamed; never changed.
``dict-<id>.pfd``
    a payload dictionary (``configure(dictionary=True)``), never changed.
``MANIFEST``
    JSON, rewritten atomically after every change: every segment with its seq
    range, days, size and checksum, records lost before they could be archived,
    where retention pruned the archive, and the policy (codec, age and size
    limits).  A segment listed here and absent or damaged on disk is reported
    by ``verify`` and by any lookup that needs it, never skipped.
``index``
    the archive's own day/terminal/kind bitmaps (the ``<journal>.idx`` format),
    valid up to the seq it records; newer segments are replayed at open.
"""
from __future__ import annotations

import bisect
import json
import lzma
import os
import re
import struct
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np

from . import _core
from ._files import open_new
from .errors import CorruptRecord, IOFailure
from .index import Index
from .records import RECORD_DTYPE, Flag, day_to_date

_MAGIC = b"POSFARC1"
# Segment and manifest version written (FORMAT.md §4).  Version 1 (posfast 0.1) segments
# hold whole RECORD_DTYPE rows and every link; version 2 columns, payloads compressed on
# their own with the archive's dictionary, and only the links the records cannot give back.
_VERSION = 2
_READS = (1, 2)
CHECK_EVERY = 64      # version 2: a stored link every this many records
# magic, version, codec, reserved, first day, last day, journal id, first seq, last seq,
# count, raw body length, compressed body length, body CRC-32C; then the header's own CRC-32C
_HEAD = struct.Struct("<8sHBBii16sQQIIQI")
_HEAD_CRC = struct.Struct("<I")
HEADER_SIZE = _HEAD.size + _HEAD_CRC.size
_CODECS = {"zlib": 1, "lzma": 2, "zstd": 3}
_CODEC_NAMES = {v: k for k, v in _CODECS.items()}
_DICT_MAGIC = b"POSFADCT"
_DICT_HEAD = struct.Struct("<8sHBBII")    # magic, version 1, codec, reserved, length, CRC-32C
_DICT_NAME = "dict-%08x.pfd"
_DICT_MAX = {"zlib": 32768, "zstd": 16384}   # zlib uses at most a 32 KiB window of it
_DICT_MIN_SAMPLES = 16
_SEGMENT_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})_(\d{12,20})-(\d{12,20})\.pfa$")
_ROW = RECORD_DTYPE.itemsize
_LINK = 16
_ARCHIVED = np.uint8(int(Flag.ARCHIVED))

DEFAULT_POLICY = {
    "codec": "zlib",
    "level": 6,
    "segment_records": 65536,        # at most this many records per segment
    "segment_bytes": 4 << 20,        # and at most this many uncompressed bytes
    "max_age_days": None,            # prune segments older than this many business days
    "max_total_bytes": None,         # prune the oldest segments beyond this size on disk
    "dictionary": False,             # train a payload dictionary on the first receipts archived
}


def _zstd():
    """The optional `zstandard` module (no armv7l wheel on PyPI: Debian's python3-zstandard,
    or stay with zlib), or None."""
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


def _compress(codec, data, level, zdict=b""):
    if codec == "lzma":
        return lzma.compress(data, preset=min(int(level), 9))
    if codec == "zstd":
        zstd = _zstd()
        if zstd is None:
            raise ValueError("codec 'zstd' needs the zstandard package (pip install zstandard)")
        cdict = zstd.ZstdCompressionDict(zdict) if zdict else None
        return zstd.ZstdCompressor(level=int(level), dict_data=cdict).compress(data)
    if zdict:
        comp = zlib.compressobj(int(level), zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, zdict)
        return comp.compress(data) + comp.flush()
    return zlib.compress(data, int(level))


def _decompress(codec_id, data, zdict=b""):
    if codec_id == _CODECS["lzma"]:
        return lzma.decompress(data)
    if codec_id == _CODECS["zstd"]:
        zstd = _zstd()
        if zstd is None:
            raise ValueError("it is compressed with zstd and the zstandard package is not "
                             "installed (pip install zstandard, or Debian's python3-zstandard)")
        ddict = zstd.ZstdCompressionDict(zdict) if zdict else None
        return zstd.ZstdDecompressor(dict_data=ddict).decompress(data)
    if codec_id == _CODECS["zlib"]:
        if zdict:
            dec = zlib.decompressobj(15, zdict)
            return dec.decompress(data) + dec.flush()
        return zlib.decompress(data)
    raise ValueError("unknown codec %d" % codec_id)


def _train_dictionary(codec, samples):
    """A payload dictionary for `codec` from sample payloads (b"" if there are too few)."""
    samples = [bytes(x) for x in samples if x]
    if len(samples) < _DICT_MIN_SAMPLES or codec not in _DICT_MAX:
        return b""
    size = _DICT_MAX[codec]
    if codec == "zstd":
        try:
            return _zstd().train_dictionary(size, samples).as_bytes()
        except Exception:         # zstd refuses samples it cannot learn from: no dictionary
            return b""
    # zlib: a preset dictionary is text the stream may refer back to, the nearest the
    # end the cheapest; the most recent receipts, newest last, up to 32 KiB
    out, used = [], 0
    for sample in reversed(samples):
        if used + len(sample) > size:
            break
        out.append(sample)
        used += len(sample)
    return b"".join(reversed(out))


@dataclass
class Segment:
    """One archive segment as the manifest lists it."""
    name: str
    first_seq: int
    last_seq: int
    count: int
    first_day: int
    last_day: int
    ts_min: int
    ts_max: int
    nbytes: int
    crc: int          # CRC-32C of the compressed body

    def to_json(self):
        return dict(self.__dict__)

    def describe(self):
        days = str(day_to_date(self.first_day))
        if self.last_day != self.first_day:
            days += ".." + str(day_to_date(self.last_day))
        return "archive segment %s (seq %d..%d, business day %s)" % (self.name, self.first_seq,
                                                                      self.last_seq, days)


class _Body:
    """A decoded segment: rows, payloads, extensions and links of its records.

    Version 1 stores every link.  Version 2 stores only the links the records cannot give
    back (`anchors`: a record without a predecessor in the segment, or one whose stored
    link does not follow from it) and the link of every `check_every`-th record and of
    the last (`checks`); `link_at` recomputes the others, one block at a time."""
    __slots__ = ("rows", "offsets", "payload", "links", "prev_link", "version", "exts",
                 "fmt", "every", "anchors", "checks", "_raw_rows", "_blocks")

    def __init__(self, rows, offsets, payload, links, prev_link, version=1, exts=None, fmt=2,
                 every=CHECK_EVERY, anchors=None, checks=None):
        self.rows, self.offsets, self.payload, self.links, self.prev_link = \
            rows, offsets, payload, links, prev_link
        self.version, self.exts, self.fmt, self.every = version, exts, fmt, every
        self.anchors = anchors or {}
        self.checks = checks or []
        self._raw_rows = rows.tobytes() if version >= 2 else b""
        self._blocks: Dict[int, list] = {}

    def index_of(self, seq):
        i = int(np.searchsorted(self.rows["seq"], seq))
        if i < len(self.rows) and int(self.rows["seq"][i]) == seq:
            return i
        return -1

    def payload_at(self, i):
        return self.payload[int(self.offsets[i]):int(self.offsets[i + 1])]

    def ext_at(self, i):
        """The record's format-2 extension (rebuilt from its client_ref unless stored)."""
        if self.exts is not None and self.exts[i] is not None:
            return self.exts[i]
        return _core.encode_ext(bytes(self.rows["client_ref"][i]))

    def refs_at(self, i):
        """(order_ref, host_ref) of record i as text ('' when none)."""
        if self.exts is None or self.exts[i] is None:
            return "", ""
        try:
            _, order, host = _core.decode_ext(self.exts[i])
        except ValueError:
            return "", ""
        return order.decode("utf-8", "replace"), host.decode("utf-8", "replace")

    def _computed(self, i, prev):
        return _core.chain_link(prev, self._raw_rows[i * _ROW:(i + 1) * _ROW], self.payload_at(i),
                                self.ext_at(i) if self.fmt >= 2 else None, self.fmt)

    def _follows(self, i):
        return i > 0 and int(self.rows["seq"][i - 1]) + 1 == int(self.rows["seq"][i])

    def link_at(self, i):
        if self.version == 1:
            return self.links[i * _LINK:(i + 1) * _LINK]
        b = i // self.every
        block = self._blocks.get(b)
        if block is None:
            start = b * self.every
            if start == 0:
                prev = self.prev_link if self.prev_link.strip(b"\0") else None
            else:
                prev = self.checks[b - 1] if self._follows(start) else None
            block = []
            for k in range(start, min(start + self.every, len(self.rows))):
                if k > start and not self._follows(k):
                    prev = None
                link = self.anchors.get(k)
                if link is None:
                    link = self._computed(k, prev) if prev is not None else b"\0" * _LINK
                block.append(link)
                prev = link
            self._blocks[b] = block
        return self._blocks[b][i - b * self.every]

    def chain_problems(self):
        """(seq, cause) wherever the records do not give the links stored with them:
        an anchor that does not follow its predecessor, a checkpoint the recomputed chain
        does not reach (version 2; `Archive.verify` checks version 1 bodies itself)."""
        out = []
        n = len(self.rows)
        seqs = self.rows["seq"].tolist()
        link = self.prev_link if self.prev_link.strip(b"\0") else None
        for i in range(n):
            if i > 0 and seqs[i - 1] + 1 != seqs[i]:
                link = None
            stored = self.anchors.get(i)
            if stored is not None:
                if link is not None and self._computed(i, link) != stored:
                    out.append((seqs[i], "archived record seq %d does not match its hash-chain "
                                "link (altered after it was written)" % seqs[i]))
                link = stored
            elif link is None:
                out.append((seqs[i], "archived record seq %d has no link to check it by (its "
                            "segment is damaged)" % seqs[i]))
                link = b"\0" * _LINK
            else:
                link = self._computed(i, link)
            if i % self.every == self.every - 1 or i == n - 1:
                stored = self.checks[i // self.every]
                if stored != link:
                    first = seqs[(i // self.every) * self.every]
                    out.append((first, "archived records seq %d..%d do not match the hash-chain "
                                "link stored at seq %d (altered after they were written)"
                                % (first, seqs[i], seqs[i])))
                    link = stored
        return out


def _encode_body(rows, payloads, links, prev_link):
    """A version-1 body (what posfast before archive version 2 wrote; tests write them)."""
    lengths = np.fromiter(map(len, payloads), dtype=np.uint64, count=len(payloads))
    offsets = np.zeros(len(rows) + 1, dtype="<u4")
    np.cumsum(lengths, out=offsets[1:], dtype=np.uint64) if len(rows) else None
    return b"".join([np.ascontiguousarray(rows, dtype=RECORD_DTYPE).tobytes(), offsets.tobytes(),
                     b"".join(payloads), b"".join(links), (prev_link or b"").ljust(_LINK, b"\0")])


def _decode_body(raw, count):
    rows_end = count * _ROW
    offs_end = rows_end + (count + 1) * 4
    if len(raw) < offs_end + count * _LINK + _LINK:
        raise ValueError("body is %d bytes, too short for %d records" % (len(raw), count))
    rows = np.frombuffer(raw, dtype=RECORD_DTYPE, count=count).copy()
    offsets = np.frombuffer(raw, dtype="<u4", count=count + 1, offset=rows_end).astype(np.int64)
    total = int(offsets[-1]) if count else 0
    if total != len(raw) - offs_end - count * _LINK - _LINK or (count and (np.diff(offsets) < 0).any()):
        raise ValueError("payload offsets do not match the body length")
    payload = raw[offs_end:offs_end + total]
    links = raw[offs_end + total:offs_end + total + count * _LINK]
    prev_link = raw[offs_end + total + count * _LINK:]
    return _Body(rows, offsets, payload, links, prev_link)


# ------------------------------------------------------------ segment body, version 2
# Each RECORD_DTYPE field is a column of its own, transformed (deltas, differences to the
# seq) and byte-shuffled (the first bytes of all values, then the second bytes, ...), so
# the compressor sees long runs of alike bytes; payloads are a stream of their own,
# compressed with the archive's dictionary.  FORMAT.md §4 describes the layout.
_T_RAW, _T_DELTA, _T_MINUS_SEQ, _T_REF, _T_TERMINAL_DELTA, _T_DIGITS = 0, 1, 2, 3, 4, 5
_TRANSFORMS = {"seq": _T_DELTA, "ts": _T_DELTA, "day": _T_DELTA, "receipt_no": _T_TERMINAL_DELTA,
               "txn_id": _T_MINUS_SEQ, "ref_seq": _T_REF, "pan_last4": _T_DIGITS,
               "rrn": _T_DIGITS}
_V2_HEAD = struct.Struct("<BBHI16s")   # journal format, flags (1: prev link), check_every, count, prev link
_V2_BODY = struct.Struct("<III")       # compressed columns length, dictionary id, payload bytes


def _by_terminal(terminal):
    order = np.argsort(terminal, kind="stable")
    first = np.ones(len(order), dtype=bool)
    first[1:] = terminal[order][1:] != terminal[order][:-1]
    return order, first


def _digits_encode(col):
    """Text of all digits (or empty) as u64 number + 1 (0: empty); None if another value."""
    width = col.dtype.itemsize
    planes = np.frombuffer(col.tobytes(), np.uint8).reshape(len(col), width)
    empty = (planes == 0).all(axis=1)
    digits = ((planes >= 48) & (planes <= 57)).all(axis=1)
    if not (empty | digits).all() or width > 18:
        return None
    value = np.zeros(len(col), dtype=np.uint64)
    for k in range(width):
        value = value * np.uint64(10) + (planes[:, k].astype(np.uint64) - np.uint64(48)) * digits
    return np.where(empty, np.uint64(0), value + np.uint64(1))


def _digits_decode(enc, width):
    out = np.zeros((len(enc), width), dtype=np.uint8)
    value = np.where(enc == 0, np.uint64(0), enc - np.uint64(1))
    for k in range(width - 1, -1, -1):
        out[:, k] = (value % np.uint64(10)).astype(np.uint8) + 48
        value //= np.uint64(10)
    out[enc == 0] = 0
    return out.view("S%d" % width).reshape(len(enc))


def _transform(kind, u, seq, terminal=None):
    if kind == _T_TERMINAL_DELTA:
        order, first = _by_terminal(terminal)
        v = u[order]
        d = v.copy()
        d[1:] = v[1:] - v[:-1]
        d[first] = v[first]
        out = np.empty_like(u)
        out[order] = d
        return out
    if kind == _T_DELTA:
        out = u.copy()
        out[1:] = u[1:] - u[:-1]
        return out
    if kind == _T_MINUS_SEQ:
        return u - seq
    if kind == _T_REF:
        return np.where(u == 0, np.uint64(0), seq - u + np.uint64(1))
    return u


def _untransform(kind, enc, seq, terminal=None):
    if kind == _T_TERMINAL_DELTA:
        order, first = _by_terminal(terminal)
        d = enc[order]
        total = np.cumsum(d, dtype=d.dtype)
        starts = np.flatnonzero(first)
        base = np.repeat(total[starts] - d[starts], np.diff(np.append(starts, len(d))))
        out = np.empty_like(enc)
        out[order] = total - base
        return out
    if kind == _T_DELTA:
        return np.cumsum(enc, dtype=enc.dtype)
    if kind == _T_MINUS_SEQ:
        return enc + seq
    if kind == _T_REF:
        return np.where(enc == 0, np.uint64(0), seq - enc + np.uint64(1))
    if kind == _T_RAW:
        return enc
    raise ValueError("unknown column transform %d" % kind)


def _shuffle(arr, width):
    return np.ascontiguousarray(np.frombuffer(arr.tobytes(), np.uint8).reshape(len(arr), width).T).tobytes()


def _encode_columns(rows, payloads, exts, links, prev_link, fmt, every=CHECK_EVERY):
    """The columns part of a version-2 segment body, uncompressed (FORMAT.md §4)."""
    n = len(rows)
    rows = np.ascontiguousarray(rows, dtype=RECORD_DTYPE)
    seq = rows["seq"].astype(np.uint64)
    prev_link = bytes(prev_link or b"")
    parts = [_V2_HEAD.pack(fmt, 1 if prev_link.strip(b"\0") else 0, every, n, prev_link.ljust(_LINK, b"\0"))]
    with np.errstate(over="ignore"):
        for name in RECORD_DTYPE.names:
            col = rows[name]
            width = col.dtype.itemsize
            kind = _TRANSFORMS.get(name, _T_RAW)
            enc = col
            if kind == _T_DIGITS:
                enc = _digits_encode(col)
                if enc is None or not np.array_equal(_digits_decode(enc, width), col):
                    kind, enc = _T_RAW, col
                else:
                    width = 8
            elif kind:
                u = col.view("<u%d" % width)
                enc = _transform(kind, u, seq.astype(u.dtype), rows["terminal"])
                if not np.array_equal(_untransform(kind, enc, seq.astype(u.dtype), rows["terminal"]), u):
                    kind, enc = _T_RAW, col          # would not come back exactly
            parts.append(bytes((kind,)))
            parts.append(_shuffle(np.ascontiguousarray(enc), width))
    # extensions: 0 = the canonical one of the row's client_ref, else stored (length + 1)
    codes = np.zeros(n, dtype="<u2")
    stored = []
    raw_rows = rows.tobytes()
    ext_list = [bytes(e or b"") for e in exts] if exts else [b""] * n
    for i in range(n):
        if fmt >= 2 and ext_list[i] != _core.encode_ext(bytes(rows["client_ref"][i])):
            codes[i] = len(ext_list[i]) + 1
            stored.append(ext_list[i])
    parts.append(_shuffle(codes, 2))
    parts.append(b"".join(stored))
    # links the records cannot give back, then the checkpoints
    anchors = []
    prev = prev_link if prev_link.strip(b"\0") else None
    for i in range(n):
        if i > 0 and int(seq[i - 1]) + 1 != int(seq[i]):
            prev = None
        link = bytes(links[i])
        if prev is None or _core.chain_link(prev, raw_rows[i * _ROW:(i + 1) * _ROW], payloads[i],
                                            ext_list[i] if fmt >= 2 else None, fmt) != link:
            anchors.append(struct.pack("<I", i) + link)
        prev = link
    checks = [bytes(links[min(k * every + every - 1, n - 1)]) for k in range(-(-n // every))]
    parts += [struct.pack("<I", len(anchors))] + anchors
    parts += [struct.pack("<I", len(checks))] + checks
    return b"".join(parts)


def _decode_columns(raw, count, payload):
    """A _Body from the columns part and the payload stream of a version-2 segment."""
    if len(raw) < _V2_HEAD.size:
        raise ValueError("body is %d bytes, shorter than its column header" % len(raw))
    fmt, flags, every, n, prev_link = _V2_HEAD.unpack_from(raw)
    if n != count or every < 1 or fmt not in (1, 2):
        raise ValueError("column header says %d records (header %d), check_every %d, format %d"
                         % (n, count, every, fmt))
    pos = _V2_HEAD.size
    rows = np.zeros(n, dtype=RECORD_DTYPE)
    seq = None
    for name in RECORD_DTYPE.names:
        dtype = RECORD_DTYPE.fields[name][0]
        width = dtype.itemsize
        kind = raw[pos] if pos < len(raw) else 0
        if kind == _T_DIGITS:
            if dtype.kind != "S" or pos + 1 + n * 8 > len(raw):
                raise ValueError("column %s: digits transform on a number, or past the end" % name)
            enc = np.ascontiguousarray(np.frombuffer(raw, np.uint8, n * 8, pos + 1).reshape(8, n).T)
            rows[name] = _digits_decode(enc.view("<u8").reshape(n), width)
            pos += 1 + n * 8
            continue
        if pos + 1 + n * width > len(raw):
            raise ValueError("column %s runs past the end of the body" % name)
        plane = np.frombuffer(raw, np.uint8, n * width, pos + 1).reshape(width, n).T
        pos += 1 + n * width
        values = np.ascontiguousarray(plane).view(dtype if kind == _T_RAW or dtype.kind not in "iu"
                                                  else np.dtype("<u%d" % width)).reshape(n)
        if kind != _T_RAW:
            if dtype.kind not in "iu":
                raise ValueError("column %s: transform %d on text" % (name, kind))
            with np.errstate(over="ignore"):
                values = _untransform(kind, values, seq.astype(values.dtype) if seq is not None
                                      else values, rows["terminal"]).view(dtype)
        rows[name] = values
        if name == "seq":
            seq = rows["seq"].astype(np.uint64)
    if pos + 2 * n > len(raw):
        raise ValueError("extension codes run past the end of the body")
    codes = np.ascontiguousarray(np.frombuffer(raw, np.uint8, 2 * n, pos).reshape(2, n).T).view("<u2").reshape(n)
    pos += 2 * n
    exts = None
    if codes.any():
        exts = []
        for code in codes.tolist():
            if code:
                exts.append(raw[pos:pos + code - 1])
                pos += code - 1
            else:
                exts.append(None)
        if pos > len(raw):
            raise ValueError("stored extensions run past the end of the body")

    def take(k):
        nonlocal pos
        if pos + k > len(raw):
            raise ValueError("link table runs past the end of the body")
        out = raw[pos:pos + k]
        pos += k
        return out
    n_anchor = struct.unpack("<I", take(4))[0]
    anchors = {}
    for _ in range(n_anchor):
        entry = take(4 + _LINK)
        i = struct.unpack_from("<I", entry)[0]
        if i >= n:
            raise ValueError("anchor link for record %d of %d" % (i, n))
        anchors[i] = entry[4:]
    n_check = struct.unpack("<I", take(4))[0]
    if n_check != -(-n // every):
        raise ValueError("%d checkpoint links for %d records" % (n_check, n))
    checks = [take(_LINK) for _ in range(n_check)]
    if pos != len(raw):
        raise ValueError("%d bytes left after the link table" % (len(raw) - pos))
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(rows["payload_len"], out=offsets[1:])
    if int(offsets[-1]) != len(payload):
        raise ValueError("payloads are %d bytes, the records say %d" % (len(payload), int(offsets[-1])))
    return _Body(rows, offsets, payload, b"", prev_link if flags & 1 else b"\0" * _LINK, version=2,
                 exts=exts, fmt=fmt, every=every, anchors=anchors, checks=checks)


def _fsync_dir(path):
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Archive:
    """Archived records of one journal (``journal.archive`` when retention="archive").

    Use it through the Journal; `configure` sets the archive's own retention:

    >>> j.archive.configure(max_age_days=400, max_total_bytes=256 << 20)   # doctest: +SKIP
    """

    def __init__(self, journal_path, journal_id: bytes, readonly=True, durable=True):
        self.journal_path = journal_path
        self.dir = journal_path + ".archive"
        self.manifest_path = os.path.join(self.dir, "MANIFEST")
        self.index_path = os.path.join(self.dir, "index")
        self.journal_id = bytes(journal_id)
        self.readonly = readonly
        self.durable = durable
        self.policy: Dict[str, Any] = dict(DEFAULT_POLICY)
        self.segments: list[Segment] = []
        self._firsts: list[int] = []
        self.lost: list = []                  # [first, last, cause]: evicted but never archived
        self.pruned_below = 1                 # seqs below were dropped by the archive's retention
        self.through = 0                      # newest archived seq
        self.last_link = b""
        self.index = Index()
        self.index_through = 0
        self.notes: list = []                 # what open found wrong (reported by verify)
        self.unreadable: dict = {}            # segment name -> why it cannot be read
        self._cache: OrderedDict = OrderedDict()
        self._mutex = threading.RLock()
        self._manifest_stamp = None
        self._unsaved_segments = 0
        self.storage: Any = None   # the journal's posfast.storage.Storage, once attached
        self.dict_ids: Dict[str, int] = {}     # codec -> id of the payload dictionary new segments use
        self._dicts: Dict[int, bytes] = {}     # id -> dictionary bytes (loaded when first needed)
        self.format_version = _core.FORMAT_VERSION   # the journal's record format (for the links)

    # ------------------------------------------------------------ open
    @classmethod
    def attach(cls, storage, durable: bool = True) -> "Archive":
        """Open the archive of the journal behind `storage` (called by Journal.open, which
        then hooks `on_evict` into its appends)."""
        archive = cls(storage.path, storage.journal_id, readonly=storage.readonly, durable=durable)
        archive.storage = storage
        archive._load()
        return archive

    def _load(self):
        with self._mutex:
            self.segments, self.lost, self.notes, self.unreadable = [], [], [], {}
            self.pruned_below, self.through, self.last_link = 1, 0, b""
            self.dict_ids = {}
            self._cache.clear()
            manifest = self._read_manifest()
            names = self._segment_files()
            if manifest is not None:
                self._apply_manifest(manifest)
            elif names:
                self.notes.append((0, "MANIFEST", "archive manifest of %s is missing or damaged; "
                                   "rebuilt from the %d segment files (a lost segment at either end "
                                   "cannot be detected)" % (self.dir, len(names))))
            listed = {s.name for s in self.segments}
            for name in sorted(set(names) - listed, key=lambda n: int(_SEGMENT_NAME.match(n).group(2))):
                self._adopt(name, rebuilding=manifest is None)
            if not self.readonly:
                for name in os.listdir(self.dir) if os.path.isdir(self.dir) else ():
                    if name.endswith(".tmp"):
                        os.unlink(os.path.join(self.dir, name))
                if manifest is None and self.segments:
                    self._write_manifest()
            self._load_index()

    def _segment_files(self):
        if not os.path.isdir(self.dir):
            return []
        return [n for n in os.listdir(self.dir) if _SEGMENT_NAME.match(n)]

    def _read_manifest(self):
        try:
            with open(self.manifest_path, "rb") as f:
                data = f.read()
            st = os.stat(self.manifest_path)
            self._manifest_stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            self._manifest_stamp = None
            return None
        try:
            body, crc = data.rsplit(b"\n", 1)
            if int(crc) != _core.crc32c(body):
                raise ValueError("checksum mismatch")
            manifest = json.loads(body)
            if manifest.get("format") != "posfast-archive" or manifest.get("version") not in _READS:
                raise ValueError("not a posfast archive manifest of version %s"
                                 % " or ".join(map(str, _READS)))
            if bytes.fromhex(manifest["journal_id"]) != self.journal_id:
                raise ValueError("it belongs to journal %s" % manifest["journal_id"])
            return manifest
        except (ValueError, KeyError, TypeError) as exc:
            self.notes.append((0, "MANIFEST", "archive manifest %s is damaged (%s)"
                               % (self.manifest_path, exc)))
            return None

    def _apply_manifest(self, manifest):
        self.policy.update(manifest.get("policy", {}))
        self.segments = [Segment(**s) for s in manifest["segments"]]
        self.segments.sort(key=lambda s: s.first_seq)
        self._firsts = [s.first_seq for s in self.segments]
        self.lost = [list(x) for x in manifest.get("lost", [])]
        self.pruned_below = int(manifest.get("pruned_below", 1))
        self.through = int(manifest.get("through", 0))
        self.last_link = bytes.fromhex(manifest.get("last_link", ""))
        self.dict_ids = {str(k): int(v) for k, v in manifest.get("dicts", {}).items()}

    def _adopt(self, name, rebuilding):
        """A segment file the manifest does not list: a crash between writing it and the
        manifest (adopted), a leftover of pruning (removed), or something else (reported)."""
        match = _SEGMENT_NAME.match(name)
        first, last = int(match.group(2)), int(match.group(3))
        path = os.path.join(self.dir, name)
        if last < self.pruned_below:
            if not self.readonly:
                os.unlink(path)
            return
        if not rebuilding and first != self.through + 1:
            self.notes.append((first, name, "archive segment %s is not listed in the manifest and "
                               "does not continue the archive (seq %d..%d)" % (name, first, last)))
            return
        try:
            seg, body = self._read_segment_file(name)
        except CorruptRecord as exc:
            self.notes.append((first, name, str(exc)))
            return
        if rebuilding and self.segments and first <= self.through:
            self.notes.append((first, name, "archive segment %s overlaps another" % name))
            return
        if rebuilding and not self.segments:
            self.pruned_below = first
        elif first > self.through + 1:
            self.lost.append([self.through + 1, first - 1, "no segment holds these records"])
        self.segments.append(seg)
        self._firsts.append(seg.first_seq)
        self.through = seg.last_seq
        self.last_link = body.link_at(len(body.rows) - 1) if len(body.rows) else self.last_link
        if not rebuilding and not self.readonly:
            self._write_manifest()

    def _load_index(self):
        loaded = Index.load(self.index_path, self.journal_id)
        if loaded is not None and loaded[1] <= self.through:
            self.index, self.index_through = loaded[0], loaded[1]
        else:
            self.index, self.index_through = Index(), 0
        for seg in self.segments:
            if seg.last_seq > self.index_through:
                try:
                    body = self._body(seg)
                except CorruptRecord:
                    continue
                rows = body.rows[body.rows["seq"] > self.index_through]
                self.index.add_rows(rows)
        self.index_through = self.through
        self.index.compacted_below = min(self.index.compacted_below, self.pruned_below)
        self.index.rebuild = self._rebuild_index

    def _rebuild_index(self, index, why):
        """The archive index found one of its own bitmaps damaged (read when first used): it
        is filled again from the segments, reported by verify and rewritten on close."""
        self.notes.append((0, "index", "archive index %s is damaged (%s); rebuilt from the "
                           "segments" % (self.index_path, why)))
        for seg in self.segments:
            try:
                body = self._body(seg)
            except CorruptRecord:
                continue                # (verify reports the segment itself)
            index.add_rows(body.rows[body.rows["seq"] >= self.pruned_below])
        self._unsaved_segments += 1

    def _reload_if_changed(self):
        """Readers in other processes pick up segments the writer added since."""
        if not self.readonly:
            return
        try:
            st = os.stat(self.manifest_path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp != self._manifest_stamp:
            self._load()

    # ------------------------------------------------------------ policy
    def configure(self, **policy) -> dict:
        """Set and persist the archive policy; returns it.

        ``codec`` ("zlib", "lzma", or "zstd" with the zstandard package) and ``level``
        apply to new segments; ``dictionary`` (False) trains a payload dictionary on the
        first receipts archived and compresses every later segment's payloads with it;
        ``max_age_days`` prunes segments whose last business day is more than
        that many days before the newest archived one; ``max_total_bytes``
        prunes the oldest segments until the archive fits (the newest segment is
        always kept); ``segment_records`` / ``segment_bytes`` cap one segment.
        Pass None to lift a limit.
        """
        unknown = set(policy) - set(DEFAULT_POLICY)
        if unknown:
            raise ValueError("unknown archive setting(s) %s; use %s"
                             % (", ".join(sorted(unknown)), ", ".join(DEFAULT_POLICY)))
        if "codec" in policy and policy["codec"] not in _CODECS:
            raise ValueError("codec=%r: use 'zlib', 'lzma' or 'zstd'" % (policy["codec"],))
        if policy.get("codec") == "zstd" and _zstd() is None:
            raise ValueError("codec='zstd' needs the zstandard package (pip install zstandard; "
                             "Debian: python3-zstandard); 'zlib' needs nothing")
        for key in ("max_age_days", "max_total_bytes"):
            if policy.get(key) is not None and int(policy[key]) < 0:
                raise ValueError("%s must be positive or None" % key)
        if self.readonly:
            raise PermissionError("posfast: the archive of %s is open read-only" % self.journal_path)
        with self._mutex:
            self.policy.update(policy)
            self._prune()
            self._write_manifest()
            return dict(self.policy)

    # ------------------------------------------------------------ archiving
    def on_evict(self, first_seq: int, last_seq: int) -> None:
        """Archive records first_seq..last_seq (and what else of their day is synced)
        before the ring overwrites them.  Raises IOFailure if they cannot be archived,
        which makes the append fail with nothing overwritten."""
        if last_seq < first_seq or last_seq <= self.through:
            return
        with self._mutex:
            ring = self.storage
            start = self.through + 1
            if start < first_seq:
                self._note_lost(start, first_seq - 1, "evicted before the archive saw them (the "
                                "journal was written without its archive, or the archive was removed)")
                self.through, self.last_link = first_seq - 1, b""
                start = first_seq
            # Archive ahead, to the end of the business day, what is synced already: one
            # segment per day rather than one per append.
            horizon = max(last_seq, min(ring.sync_watermark, ring.head_seq))
            limit = max(1, int(self.policy["segment_records"]))
            while start <= last_seq:
                end = min(start + limit - 1, horizon)
                rows, payloads, exts, links, prev_link, damaged = self._read(start, end)
                for seq, cause in damaged:
                    self._note_lost(seq, seq, "damaged in the ring before it was archived (%s)" % cause)
                if len(rows) == 0:
                    self.through, self.last_link = end, b""
                    start = end + 1
                    continue
                start = self._write_run(rows, payloads, exts, links, prev_link, last_seq) + 1
            self._prune()
            self._write_manifest()
            if self._unsaved_segments >= 16:
                self._save_index()

    def _note_lost(self, first, last, cause):
        for entry in self.lost:
            if entry[0] <= first and last <= entry[1]:
                return
        if self.lost and self.lost[-1][1] + 1 == first and self.lost[-1][2] == cause:
            self.lost[-1][1] = last
        else:
            self.lost.append([first, last, cause])

    def _read(self, first, last):
        """Rows, payloads and links of first..last from the ring; damaged ones listed apart."""
        storage = self.storage
        try:
            batch = storage.read_range(first, last)
            prev = self.last_link if self.through == first - 1 and self.last_link else batch.prev_link
            self.format_version = int(getattr(batch, "format_version", self.format_version))
            exts = list(batch.exts) if len(getattr(batch, "exts", ())) == len(batch.rows) \
                else [b""] * len(batch.rows)
            return batch.rows, batch.payloads, exts, batch.links, prev, []
        except CorruptRecord:
            pass
        seqs = np.arange(first, last + 1, dtype=np.uint64)
        out = np.zeros(len(seqs), dtype=RECORD_DTYPE)
        status = storage.read_rows_status(seqs, out)
        good = status == 0
        damaged = [(int(s), _core.CAUSES.get(int(c), "damaged")) for s, c in
                   zip(seqs[~good].tolist(), status[~good].tolist())]
        rows = out[good]
        ok = seqs[good]
        prev = self.last_link if self.through == first - 1 and good[0] else b""
        exts = [_core.encode_ext(bytes(rows["client_ref"][i]), o, h) if self.format_version >= 2 else b""
                for i, (o, h) in enumerate(storage.refs(ok))] if len(ok) else []
        return rows, storage.payloads(ok), exts, storage.links(ok), prev, damaged

    def _write_run(self, rows, payloads, exts, links, prev_link, need_to):
        """Write rows as segments (one business day each, size-capped) at least through
        `need_to`; the segment holding `need_to` runs on to the end of its day's run in
        `rows`.  Returns the last seq written."""
        limit_bytes = int(self.policy["segment_bytes"])
        days = rows["day"]
        sizes = np.fromiter(map(len, payloads), dtype=np.int64, count=len(payloads)) + (_ROW + _LINK + 4)
        i, n = 0, len(rows)
        last_written = 0
        while i < n:
            j = i + 1
            day = days[i]
            used = int(sizes[i])
            while j < n and days[j] == day and used + int(sizes[j]) <= limit_bytes:
                used += int(sizes[j])
                j += 1
            seq_prev = int(rows["seq"][i]) - 1
            prev = prev_link if i == 0 else (links[i - 1] if int(rows["seq"][i - 1]) == seq_prev else b"")
            self._write_segment(rows[i:j], payloads[i:j], exts[i:j], links[i:j], prev)
            last_written = int(rows["seq"][j - 1])
            if last_written >= need_to:
                break
            i = j
        return last_written

    def _write_segment(self, rows, payloads, exts, links, prev_link):
        codec = self.policy["codec"]
        level = int(self.policy["level"])
        payloads = [bytes(p) for p in payloads]
        if [len(p) for p in payloads] != rows["payload_len"].tolist():
            raise IOFailure("posfast: cannot archive seq %d..%d of %s: payload lengths do not match "
                            "the records" % (int(rows["seq"][0]), int(rows["seq"][-1]), self.journal_path))
        columns = _encode_columns(rows, payloads, exts, links, prev_link, self.format_version)
        payload = b"".join(payloads)
        dict_id = self._dictionary_for(codec, payloads) if payload else 0
        cols = _compress(codec, columns, level)
        pays = _compress(codec, payload, level, self._dict(dict_id) if dict_id else b"") if payload else b""
        body = _V2_BODY.pack(len(cols), dict_id, len(payload)) + cols + pays
        raw_len = len(columns) + len(payload)
        first, last = int(rows["seq"][0]), int(rows["seq"][-1])
        first_day, last_day = int(rows["day"].min()), int(rows["day"].max())
        head = _HEAD.pack(_MAGIC, _VERSION, _CODECS[codec], 0, first_day, last_day, self.journal_id,
                          first, last, len(rows), raw_len, len(body), _core.crc32c(body))
        head += _HEAD_CRC.pack(_core.crc32c(head))
        name = "%s_%012d-%012d.pfa" % (day_to_date(first_day), first, last)
        path = os.path.join(self.dir, name)
        try:
            os.makedirs(self.dir, exist_ok=True)
            tmp = path + ".tmp"
            with open_new(tmp) as f:
                f.write(head)
                f.write(body)
                f.flush()
                if self.durable:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
            if self.durable:
                _fsync_dir(self.dir)
        except OSError as exc:
            try:
                os.unlink(path + ".tmp")
            except OSError:
                pass
            raise IOFailure("posfast: cannot archive seq %d..%d of %s to %s: %s; nothing was "
                            "overwritten. Free space there or lower the archive's max_total_bytes "
                            "(journal.archive.configure)" % (first, last, self.journal_path, self.dir,
                                                            exc.strerror or exc)) from exc
        seg = Segment(name=name, first_seq=first, last_seq=last, count=len(rows), first_day=first_day,
                      last_day=last_day, ts_min=int(rows["ts"].min()), ts_max=int(rows["ts"].max()),
                      nbytes=len(head) + len(body), crc=_core.crc32c(body))
        self.segments.append(seg)
        self._firsts.append(first)
        self.through = last
        self.last_link = bytes(links[-1])
        self.index.add_rows(rows)
        self.index_through = last
        self._unsaved_segments += 1
        self._cache[name] = _decode_columns(columns, len(rows), payload)
        self._trim_cache()

    def _dictionary_for(self, codec, payloads) -> int:
        """Id of the payload dictionary for `codec` (trained on these payloads and written
        beside the segments if the archive has none yet), or 0 for none."""
        if codec not in _DICT_MAX or not self.policy.get("dictionary", True):
            return 0
        if codec in self.dict_ids:
            return self.dict_ids[codec]
        zdict = _train_dictionary(codec, payloads)
        if not zdict:
            return 0
        dict_id = _core.crc32c(zdict) or 1
        head = _DICT_HEAD.pack(_DICT_MAGIC, 1, _CODECS[codec], 0, len(zdict), _core.crc32c(zdict))
        path = os.path.join(self.dir, _DICT_NAME % dict_id)
        try:
            os.makedirs(self.dir, exist_ok=True)
            with open_new(path + ".tmp") as f:
                f.write(head + _HEAD_CRC.pack(_core.crc32c(head)) + zdict)
                f.flush()
                if self.durable:
                    os.fsync(f.fileno())
            os.replace(path + ".tmp", path)
            if self.durable:
                _fsync_dir(self.dir)
        except OSError as exc:
            raise IOFailure("posfast: cannot write the archive's payload dictionary %s: %s; nothing "
                            "was overwritten" % (path, exc.strerror or exc)) from exc
        self._dicts[dict_id] = zdict
        self.dict_ids[codec] = dict_id
        return dict_id

    def _dict(self, dict_id) -> bytes:
        """The payload dictionary `dict_id` (ValueError if missing or damaged)."""
        zdict = self._dicts.get(dict_id)
        if zdict is not None:
            return zdict
        path = os.path.join(self.dir, _DICT_NAME % dict_id)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ValueError("its payload dictionary %s cannot be read (%s)"
                             % (_DICT_NAME % dict_id, exc.strerror or exc)) from None
        size = _DICT_HEAD.size + _HEAD_CRC.size
        if len(data) < size or _HEAD_CRC.unpack_from(data, _DICT_HEAD.size)[0] != \
                _core.crc32c(data[:_DICT_HEAD.size]):
            raise ValueError("its payload dictionary %s is damaged (header)" % (_DICT_NAME % dict_id))
        magic, version, _, _, length, crc = _DICT_HEAD.unpack_from(data)
        zdict = data[size:]
        if magic != _DICT_MAGIC or version != 1 or len(zdict) != length or _core.crc32c(zdict) != crc \
                or (_core.crc32c(zdict) or 1) != dict_id:
            raise ValueError("its payload dictionary %s is damaged" % (_DICT_NAME % dict_id))
        self._dicts[dict_id] = zdict
        return zdict

    def _prune(self):
        """Apply max_age_days / max_total_bytes: drop the oldest whole segments."""
        if not self.segments:
            return
        drop = 0
        max_age = self.policy.get("max_age_days")
        if max_age is not None:
            newest_day = max(s.last_day for s in self.segments)
            while drop < len(self.segments) - 1 and \
                    self.segments[drop].last_day < newest_day - int(max_age):
                drop += 1
        max_total = self.policy.get("max_total_bytes")
        if max_total is not None:
            total = sum(s.nbytes for s in self.segments[drop:])
            while drop < len(self.segments) - 1 and total > int(max_total):
                total -= self.segments[drop].nbytes
                drop += 1
        if not drop:
            return
        gone, self.segments = self.segments[:drop], self.segments[drop:]
        self._firsts = [s.first_seq for s in self.segments]
        self.pruned_below = self.segments[0].first_seq
        self.lost = [x for x in self.lost if x[1] >= self.pruned_below]
        self._write_manifest()          # the manifest first: a crash leaves leftovers, not holes
        for seg in gone:
            self._cache.pop(seg.name, None)
            self.unreadable.pop(seg.name, None)
            try:
                os.unlink(os.path.join(self.dir, seg.name))
            except FileNotFoundError:
                pass
        self.index.compact(self.pruned_below)

    def _write_manifest(self):
        manifest = {"format": "posfast-archive", "version": _VERSION,
                    "journal": os.path.basename(self.journal_path),
                    "journal_id": self.journal_id.hex(), "policy": self.policy,
                    "through": self.through, "last_link": bytes(self.last_link).hex(),
                    "pruned_below": self.pruned_below, "lost": self.lost, "dicts": self.dict_ids,
                    "segments": [s.to_json() for s in self.segments]}
        body = json.dumps(manifest, indent=0, sort_keys=True).encode()
        os.makedirs(self.dir, exist_ok=True)
        tmp = self.manifest_path + ".tmp"
        try:
            with open_new(tmp) as f:
                f.write(body + b"\n%d" % _core.crc32c(body))
                f.flush()
                if self.durable:
                    os.fsync(f.fileno())
            os.replace(tmp, self.manifest_path)
            if self.durable:
                _fsync_dir(self.dir)
        except OSError as exc:
            raise IOFailure("posfast: cannot write the archive manifest %s: %s"
                            % (self.manifest_path, exc.strerror or exc)) from exc

    def _save_index(self):
        if self.readonly or not self.segments and not os.path.isdir(self.dir):
            return
        self.index.save(self.index_path, self.journal_id, self.index_through, self.pruned_below,
                        bytes(self.last_link).ljust(_LINK, b"\0"), np.zeros(0, dtype=np.uint64))
        self._unsaved_segments = 0

    def flush(self):
        """Save the archive index (the manifest and segments are always current)."""
        with self._mutex:
            if not self.readonly and self._unsaved_segments:
                self._save_index()

    close = flush

    # ------------------------------------------------------------ reading
    def _segment_of(self, seq):
        i = bisect.bisect_right(self._firsts, seq) - 1
        if i >= 0 and self.segments[i].last_seq >= seq:
            return self.segments[i]
        return None

    def _read_segment_file(self, name, expect: Optional[Segment] = None):
        path = os.path.join(self.dir, name)
        where = expect.describe() if expect else "archive segment %s" % name
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise CorruptRecord("posfast: %s is missing from %s; restore it from a backup (the back "
                                "office holds these records too)" % (where, self.dir)) from None
        except OSError as exc:
            raise CorruptRecord("posfast: %s cannot be read: %s" % (where, exc.strerror)) from None

        def bad(why):
            return CorruptRecord("posfast: %s is damaged (%s); restore it from a backup (the back "
                                 "office holds these records too)" % (where, why))
        if len(data) < HEADER_SIZE:
            raise bad("%d bytes, shorter than its header" % len(data))
        fields = _HEAD.unpack_from(data)
        (magic, version, codec, _, first_day, last_day, jid, first, last, count, raw_len,
         comp_len, body_crc) = fields
        if magic != _MAGIC:
            raise bad("no segment magic")
        if _HEAD_CRC.unpack_from(data, _HEAD.size)[0] != _core.crc32c(data[:_HEAD.size]):
            raise bad("header checksum mismatch")
        if version not in _READS:
            raise bad("segment format version %d, this posfast reads %s"
                      % (version, " and ".join(map(str, _READS))))
        if jid != self.journal_id:
            raise bad("it belongs to another journal")
        body = data[HEADER_SIZE:]
        if len(body) != comp_len:
            raise bad("body is %d bytes, header says %d (truncated?)" % (len(body), comp_len))
        if _core.crc32c(body) != body_crc:
            raise bad("body checksum mismatch")
        if expect is not None and (expect.first_seq, expect.last_seq, expect.count, expect.crc) != \
                (first, last, count, body_crc):
            raise bad("it is not the segment the manifest lists (seq %d..%d)" % (first, last))
        try:
            if codec not in _CODEC_NAMES:
                raise ValueError("unknown codec %d" % codec)
            if version == 1:
                raw = _decompress(codec, body)
                if len(raw) != raw_len:
                    raise ValueError("%d bytes uncompressed, header says %d" % (len(raw), raw_len))
                decoded = _decode_body(raw, count)
            else:
                if len(body) < _V2_BODY.size:
                    raise ValueError("body shorter than its part table")
                cols_len, dict_id, pay_len = _V2_BODY.unpack_from(body)
                if _V2_BODY.size + cols_len > len(body):
                    raise ValueError("columns part runs past the end of the body")
                columns = _decompress(codec, body[_V2_BODY.size:_V2_BODY.size + cols_len])
                rest = body[_V2_BODY.size + cols_len:]
                payload = _decompress(codec, rest, self._dict(dict_id) if dict_id else b"") \
                    if pay_len or rest else b""
                if len(payload) != pay_len or len(columns) + len(payload) != raw_len:
                    raise ValueError("%d bytes uncompressed, header says %d"
                                     % (len(columns) + len(payload), raw_len))
                decoded = _decode_columns(columns, count, payload)
        except (ValueError, zlib.error, lzma.LZMAError) as exc:
            raise bad(str(exc)) from None
        except Exception as exc:        # zstd's own error type (optional package)
            if type(exc).__module__.startswith("zstandard"):
                raise bad(str(exc)) from None
            raise
        seqs = decoded.rows["seq"]
        if count and (int(seqs[0]) != first or int(seqs[-1]) != last or (np.diff(seqs) <= 0).any()):
            raise bad("its records are not seq %d..%d in order" % (first, last))
        seg = expect or Segment(name=name, first_seq=first, last_seq=last, count=count,
                                first_day=first_day, last_day=last_day,
                                ts_min=int(decoded.rows["ts"].min()) if count else 0,
                                ts_max=int(decoded.rows["ts"].max()) if count else 0,
                                nbytes=len(data), crc=body_crc)
        return seg, decoded

    def _body(self, seg: Segment) -> _Body:
        body = self._cache.get(seg.name)
        if body is not None:
            self._cache.move_to_end(seg.name)
            return body
        try:
            _, body = self._read_segment_file(seg.name, seg)
        except CorruptRecord as exc:
            self.unreadable[seg.name] = str(exc)
            raise
        self.unreadable.pop(seg.name, None)
        self._cache[seg.name] = body
        self._trim_cache()
        return body

    def _trim_cache(self):
        while len(self._cache) > 4:
            self._cache.popitem(last=False)

    def _missing_cause(self, seq):
        for first, last, cause in self.lost:
            if first <= seq <= last:
                return cause
        return None

    def get(self, seq: int):
        """The archived Record of `seq` (``archived`` True).  KeyError if the archive never
        held it or its retention dropped it; CorruptRecord if its segment is missing or damaged."""
        with self._mutex:
            self._reload_if_changed()
            seq = int(seq)
            if seq < self.pruned_below and self.through:
                raise KeyError("seq %d was archived and later dropped by the archive's retention "
                               "(it keeps seq %d on)" % (seq, self.pruned_below))
            seg = self._segment_of(seq)
            if seg is None:
                cause = self._missing_cause(seq)
                if cause is not None:
                    raise CorruptRecord("posfast: record seq %d of %s was lost: %s"
                                        % (seq, self.journal_path, cause))
                raise KeyError(seq)
            body = self._body(seg)
            i = body.index_of(seq)
            if i < 0:
                raise CorruptRecord("posfast: record seq %d of %s was lost: %s" % (
                    seq, self.journal_path, self._missing_cause(seq) or "absent from " + seg.describe()))
            row = body.rows[i:i + 1].copy()
            row["flags"] |= _ARCHIVED
            order_ref, host_ref = body.refs_at(i)
            return _core.Record.from_row(row, body.payload_at(i), body.link_at(i), True,
                                         order_ref=order_ref, host_ref=host_ref)

    def last(self, terminal, kind=None):
        """Newest archived Record of a terminal (optionally of one kind), or None."""
        with self._mutex:
            self._reload_if_changed()
            seq = self.index.newest_of(terminal, kind)
            if not seq or seq < self.pruned_below:
                return None
            return self.get(seq)

    def select(self, day=None, terminal=None, kind=None, below=None) -> np.ndarray:
        """Archived seqs matching the filters (ints or lists, as Index.select), below `below`."""
        with self._mutex:
            self._reload_if_changed()
            head = self.through if below is None else min(self.through, int(below) - 1)
            if not self.segments or head < self.pruned_below:
                return np.zeros(0, dtype=np.uint64)
            return self.index.select(self.pruned_below, head, day=day, terminal=terminal, kind=kind)

    def rows(self, seqs) -> np.ndarray:
        """RECORD_DTYPE rows of archived seqs (Flag.ARCHIVED set), in the order given.
        Raises CorruptRecord naming the segment if one that holds them is missing or damaged."""
        seqs = np.asarray(seqs, dtype=np.uint64)
        out = np.zeros(len(seqs), dtype=RECORD_DTYPE)
        with self._mutex:
            for k, seg, idx in self._locate(seqs):
                body = self._body(seg)
                pos = np.searchsorted(body.rows["seq"], seqs[idx])
                out[idx] = body.rows[np.minimum(pos, len(body.rows) - 1)]
        out["flags"] |= _ARCHIVED
        return out

    def _locate(self, seqs):
        """(segment index, Segment, positions in seqs) for each segment holding some of seqs."""
        if len(seqs) == 0:
            return []
        which = np.searchsorted(np.asarray(self._firsts, dtype=np.uint64), seqs, side="right") - 1
        groups = []
        for k in np.unique(which).tolist():
            idx = np.flatnonzero(which == k)
            if k < 0 or seqs[idx].max() > self.segments[k].last_seq:
                bad = int(seqs[idx][0]) if k < 0 else int(seqs[idx][seqs[idx] > self.segments[k].last_seq][0])
                raise CorruptRecord("posfast: archived record seq %d of %s is in no segment: %s"
                                    % (bad, self.journal_path, self._missing_cause(bad) or "unknown"))
            groups.append((k, self.segments[k], idx))
        return groups

    def payloads(self, seqs) -> list:
        """Payload bytes of archived seqs, in order."""
        seqs = np.asarray(seqs, dtype=np.uint64)
        out = [b""] * len(seqs)
        with self._mutex:
            for k, seg, idx in self._locate(seqs):
                body = self._body(seg)
                for i in idx.tolist():
                    j = body.index_of(int(seqs[i]))
                    if j >= 0:
                        out[i] = body.payload_at(j)
        return out

    def extend_query(self, live_rows, oldest_seq, day=None, terminal=None, kind=None):
        """Archived rows matching the filters, followed by `live_rows` (for Journal.query)."""
        seqs = self.select(day=day, terminal=terminal, kind=kind, below=oldest_seq)
        if len(seqs) == 0:
            return live_rows
        return np.concatenate([self.rows(seqs), live_rows])

    def fill_payloads(self, seqs, payloads, oldest_seq):
        """Journal.payloads: fill in the payloads of seqs the ring no longer holds."""
        seqs = np.asarray(seqs, dtype=np.uint64)
        old = np.flatnonzero((seqs < oldest_seq) & (seqs >= self.pruned_below) & (seqs <= self.through))
        if len(old):
            for i, payload in zip(old.tolist(), self.payloads(seqs[old])):
                payloads[i] = payload
        return payloads

    # ------------------------------------------------------------ health
    def status(self) -> dict:
        with self._mutex:
            self._reload_if_changed()
            return {"dir": self.dir, "segments": len(self.segments),
                    "records": sum(s.count for s in self.segments),
                    "bytes": sum(s.nbytes for s in self.segments),
                    "first_seq": self.segments[0].first_seq if self.segments else None,
                    "last_seq": self.through or None,
                    "first_day": str(day_to_date(self.segments[0].first_day)) if self.segments else None,
                    "pruned_below": self.pruned_below, "lost": sum(b - a + 1 for a, b, _ in self.lost),
                    "policy": dict(self.policy)}

    def verify(self, ring_oldest=None):
        """Check every segment (presence, checksums, seqs, hash chain within and across
        segments and into the ring) and the archive index.  Returns a list of
        (seq, where, cause) and the number of archived records checked."""
        checked = 0
        rebuilt = Index()
        with self._mutex:
            self._reload_if_changed()
            problems = list(self.notes)
            prev_seg, prev_last_link = None, None
            for seg in self.segments:
                try:
                    _, body = self._read_segment_file(seg.name, seg)
                except CorruptRecord as exc:
                    self.unreadable[seg.name] = str(exc)
                    problems.append((seg.first_seq, seg.name, str(exc)))
                    prev_seg, prev_last_link = seg, None
                    continue
                rows = body.rows
                checked += len(rows)
                rebuilt.add_rows(rows)
                # the hash chain inside the segment, from its stored predecessor link
                link = body.prev_link if body.prev_link.strip(b"\0") else None
                if prev_seg is not None and prev_seg.last_seq + 1 == seg.first_seq and \
                        prev_last_link is not None and link is not None and link != prev_last_link:
                    problems.append((seg.first_seq, seg.name, "hash chain broken between %s and %s"
                                     % (prev_seg.name, seg.name)))
                seqs = rows["seq"].tolist()
                if body.version >= 2:
                    for seq, cause in body.chain_problems()[:1]:
                        problems.append((seq, seg.name, cause.replace(" (", " in %s (" % seg.name, 1)))
                for i, seq in enumerate(seqs if body.version == 1 else ()):
                    stored = body.link_at(i)
                    if link is not None and \
                            _core.chain_link(link, rows[i:i + 1], body.payload_at(i)) != stored:
                        problems.append((seq, seg.name, "archived record seq %d in %s does not match "
                                         "its hash-chain link (altered after it was written)"
                                         % (seq, seg.name)))
                        break
                    link = stored if i + 1 < len(seqs) and seqs[i + 1] == seq + 1 else None
                prev_seg, prev_last_link = seg, body.link_at(len(rows) - 1)
            for first, last, cause in self.lost:
                problems.append((first, None, "records seq %d..%d were never archived: %s"
                                 % (first, last, cause)))
            if ring_oldest is not None and ring_oldest - 1 > self.through and ring_oldest > 1 \
                    and ring_oldest - 1 >= self.pruned_below:
                problems.append((self.through + 1, None,
                                 "records seq %d..%d are neither in the ring nor in the archive %s"
                                 % (self.through + 1, ring_oldest - 1, self.dir)))
            storage = self.storage
            if storage is not None and ring_oldest and self._segment_of(ring_oldest - 1) is not None \
                    and storage.head_seq >= ring_oldest:
                try:
                    batch = storage.read_range(ring_oldest, ring_oldest)
                    exts = getattr(batch, "exts", None) or []
                    if len(batch.rows) and not self.chain_into(
                            ring_oldest, batch.rows[0:1], batch.payloads[0], batch.links[0],
                            exts[0] if len(exts) else None,
                            int(getattr(batch, "format_version", self.format_version))):
                        problems.append((ring_oldest, None, "the ring's oldest record seq %d does not "
                                         "continue the archive's hash chain" % ring_oldest))
                except CorruptRecord:
                    pass      # the ring's own verify reports it
            if not self.unreadable and not rebuilt.equals(self.index, self.pruned_below):
                problems.append((0, "index", "archive index disagrees with the segments (rebuilt "
                                 "in memory; rewritten on close)"))
                rebuilt.rebuild = self._rebuild_index
                self.index = rebuilt
                self._unsaved_segments += 1
        return problems, checked

    def chain_into(self, oldest_seq, row, payload, link, ext=None, version=None):
        """True if the ring's oldest record continues the archive's hash chain (or the
        archive does not hold its predecessor).  `ext`: the record's extension (format 2;
        None rebuilds it from the row's client_ref alone)."""
        seg = self._segment_of(oldest_seq - 1)
        if seg is None:
            return True
        body = self._body(seg)
        i = body.index_of(oldest_seq - 1)
        if i < 0:
            return True
        version = self.format_version if version is None else int(version)
        return _core.chain_link(body.link_at(i), row, payload, ext if version >= 2 else None,
                                version) == link


def segment_info(path) -> dict:
    """Header of one segment file, for tools and tests (checks the header checksum only)."""
    with open(path, "rb") as f:
        data = f.read(HEADER_SIZE)
    fields = _HEAD.unpack_from(data)
    keys = ("magic", "version", "codec", "reserved", "first_day", "last_day", "journal_id",
            "first_seq", "last_seq", "count", "raw_len", "comp_len", "body_crc")
    info = dict(zip(keys, fields))
    info["codec"] = _CODEC_NAMES.get(info["codec"], info["codec"])
    info["header_ok"] = _HEAD_CRC.unpack_from(data, _HEAD.size)[0] == _core.crc32c(data[:_HEAD.size])
    return info

