"""Fuzz target: arbitrary bytes opened as a posfast journal (both header copies, the slots and
the index file ``<path>.idx``), then read, verified and (writable) appended to and reopened.

Run it with atheris against the core built with AddressSanitizer + UBSan (never over the
in-tree build; tests/test_fuzz.py builds one into /tmp/asan-build):

    LD_PRELOAD=$(python -c "import atheris, os; print(os.path.join(atheris.path(), 'asan_with_fuzzer.so'))") \\
    PYTHONPATH=/tmp/asan-build python tests/fuzz/fuzz_journal.py -max_total_time=60 \\
        -max_len=24000 corpus-copy/ tests/fuzz/corpus/

Without atheris, ``python tests/fuzz/fuzz_journal.py FILE...`` replays inputs (the default
suite does that over the corpus with the plain build).

Input layout (compact, so mutations land on fields rather than on header padding):
    byte 0         flags: 1 read-only, 2 keep the index, 4 raw file (no re-layout), 8 append,
                   16 reseal: recompute the CRC of both header copies and of every record head
                   (so mutated fields reach recovery as valid-looking, crafted records)
    bytes 1-2      index length n (little-endian)
    n bytes        the index file
    rest           raw: the journal file as is; otherwise header copy 0 (128 bytes), header
                   copy 1 (128 bytes), then the slots; each header copy is padded to its 4 KiB
                   place.  A short input is a truncated file.
The only exceptions allowed out are posfast's own (PosfastError), KeyError from get() of a
seq that is not live, and ValueError from set_sync_watermark moving backwards.  Sizes stay
bounded by the file; and (inputs not resealed) a reopen shows the live range the writable
open left.
"""
import atexit
import os
import shutil
import struct
import sys
import tempfile

try:
    import atheris
except ImportError:          # replay mode
    atheris = None

if atheris is not None:
    with atheris.instrument_imports(include=["posfast"]):
        import posfast
        from posfast import _core
else:
    import posfast
    from posfast import _core

import numpy as np

HEADER_COPY = _core.HEADER_COPY_SIZE
HEADER = 256        # a format-2 header copy (format 1 uses its first 128 bytes)
FLAG_READONLY, FLAG_INDEX, FLAG_RAW, FLAG_APPEND, FLAG_RESEAL = 1, 2, 4, 8, 16
_DIR = tempfile.mkdtemp(prefix="posfast-fuzz-",
                        dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
PATH = os.path.join(_DIR, "j.pfj")
atexit.register(shutil.rmtree, _DIR, True)


def encode(journal_bytes, index_bytes=None, flags=FLAG_INDEX):
    """Compact input from a real journal file (the corpus is made with this)."""
    idx = index_bytes or b""
    if index_bytes is None:
        flags &= ~FLAG_INDEX
    body = (journal_bytes[:HEADER] + journal_bytes[HEADER_COPY:HEADER_COPY + HEADER]
            + journal_bytes[2 * HEADER_COPY:])
    return bytes([flags]) + struct.pack("<H", len(idx)) + idx + body


def decode(data):
    """(flags, index bytes or None, journal file bytes)."""
    if len(data) < 3:
        return 0, None, b""
    flags = data[0]
    n = struct.unpack_from("<H", data, 1)[0]
    idx = data[3:3 + n]
    body = data[3 + n:]
    if not flags & FLAG_RAW:
        out = bytearray(body[:HEADER])
        if len(body) > HEADER:
            out += bytes(HEADER_COPY - HEADER) + body[HEADER:2 * HEADER]
        if len(body) > 2 * HEADER:
            out += bytes(HEADER_COPY - HEADER) + body[2 * HEADER:]
        body = bytes(out)
    return flags, (idx if flags & FLAG_INDEX else None), body


def reseal(journal_bytes):
    """Recompute the header copies' CRCs, then every plausible record head's CRC."""
    buf = bytearray(journal_bytes)
    for off in (0, HEADER_COPY):
        if len(buf) >= off + HEADER and buf[off:off + 8] == b"POSFJRNL":
            crc_at = 124 if struct.unpack_from("<I", buf, off + 8)[0] == 1 else 252
            struct.pack_into("<I", buf, off + crc_at, _core.crc32c(bytes(buf[off:off + crc_at])))
    if len(buf) < HEADER or buf[:8] != b"POSFJRNL":
        return bytes(buf)
    slot_size, max_payload, capacity = struct.unpack_from("<IIQ", buf, 24)
    if not 128 <= slot_size <= 65536 or not 2 <= capacity <= 1 << 16:
        return bytes(buf)
    jid_crc = _core.crc32c(bytes(buf[40:56]))
    version, = struct.unpack_from("<I", buf, 8)
    ring = 2 * HEADER_COPY
    slots = max(0, min(capacity, (len(buf) - ring) // slot_size))
    for slot in range(slots):
        off = ring + slot * slot_size
        plen, = struct.unpack_from("<H", buf, off + 4)
        pos, = struct.unpack_from("<Q", buf, off + 16)
        if pos == 0 or (pos - 1) % capacity != slot or plen > max_payload:
            continue
        length = 128 + plen + (struct.unpack_from("<H", buf, off + 100)[0] if version >= 2 else 0)
        data = bytes(buf[off + 4:off + length])
        if len(data) < length - 4:             # wraps at the ring end (or the file is short)
            data += bytes(buf[ring:ring + length - 4 - len(data)])
        struct.pack_into("<I", buf, off, _core.crc32c(data, jid_crc))
    return bytes(buf)


def _write_files(index_bytes, journal_bytes):
    for extra in (PATH + ".idx", PATH + ".idx.tmp"):
        if os.path.exists(extra):
            os.unlink(extra)
    with open(PATH, "wb") as f:
        f.write(journal_bytes)
    if index_bytes is not None:
        with open(PATH + ".idx", "wb") as f:
            f.write(index_bytes)


def _bounded(j, file_size):
    """Nothing the header says may make the ring larger than the file can back."""
    ring = j._ring
    assert ring.capacity * ring.slot_size <= 2 * file_size + (1 << 20), "capacity unbounded"
    assert ring.live_records <= ring.capacity, "more live records than slots"
    assert 1 <= ring.oldest_seq <= ring.head_seq + 1, (ring.oldest_seq, ring.head_seq)


def _allowed(call, *extra):
    """Run one API call; posfast's documented errors are fine, anything else is a finding."""
    try:
        return call()
    except (posfast.PosfastError,) + extra:
        return None


def _exercise(j, flags, file_size):
    ring = j._ring
    _bounded(j, file_size)
    oldest, head = ring.oldest_seq, ring.head_seq
    good = []
    for seq in range(oldest, head + 1):
        rec = _allowed(lambda: j.get(seq), KeyError)
        if rec is not None:
            assert rec.seq == seq and len(rec.payload) <= j.max_payload
            good.append(seq)
    rows = _allowed(j.query)
    if rows is not None:
        assert set(rows["seq"].tolist()) <= set(range(oldest, head + 1))
        for terminal in set(rows["terminal"].tolist()[:3]):
            _allowed(lambda: j.last(terminal=terminal))
    _allowed(j.count)
    _allowed(lambda: j.payloads(np.array(good[:50], dtype=np.uint64)))
    _allowed(lambda: j.read_range(oldest, head))
    report = _allowed(j.verify)
    if report is not None:
        assert report.checked <= ring.capacity
    _allowed(j.status)
    if not flags & FLAG_READONLY and flags & FLAG_APPEND:
        _allowed(lambda: j.append(terminal=1, kind="sale", amount=5, payload=b"fuzz"))
        _allowed(lambda: j.set_sync_watermark(j.head_seq), ValueError)


def _intact_range(ring):
    """(first intact live seq, head): damaged records at the old end of a wrapped ring cannot be
    told from evicted ones by a scan, so a reopen may drop them (a documented limit)."""
    seq = ring.oldest_seq
    while seq <= ring.head_seq and ring.check(seq) != 0:
        seq += 1
    return seq, ring.head_seq


def TestOneInput(data):
    flags, index_bytes, journal_bytes = decode(bytes(data))
    if flags & FLAG_RESEAL:
        journal_bytes = reseal(journal_bytes)
    _write_files(index_bytes, journal_bytes)
    readonly = bool(flags & FLAG_READONLY)
    try:
        j = posfast.Journal.open(PATH, readonly=readonly)
    except posfast.PosfastError:
        return
    try:
        _exercise(j, flags, len(journal_bytes))
        first = _intact_range(j._ring)
    finally:
        _allowed(j.close)
    if readonly or flags & FLAG_RESEAL:
        # A resealed input holds crafted records with valid checksums: the CRC covers the
        # journal id but is no MAC, and a crafted far-future head can redirect a later scan
        # (a documented limit; the hash chain and the back office catch tampering).  The
        # stability check holds for everything that damage, not forgery, can produce.
        return
    # what a writable open decided (and wrote) must stand when opened again
    with posfast.Journal.open(PATH, readonly=True) as again:
        _bounded(again, len(journal_bytes))
        assert _intact_range(again._ring) == first, \
            ("reopen changed the live range", first, _intact_range(again._ring))


def replay(paths):
    """Run every input file (or directory of files) once; returns how many ran."""
    n = 0
    for p in paths:
        files = [os.path.join(p, f) for f in sorted(os.listdir(p))] if os.path.isdir(p) else [p]
        for name in files:
            with open(name, "rb") as f:
                TestOneInput(f.read())
            n += 1
    return n


if __name__ == "__main__":
    if atheris is None:
        print("replayed %d inputs" % replay(sys.argv[1:]))
    else:
        atheris.Setup(sys.argv, TestOneInput)
        atheris.Fuzz()
