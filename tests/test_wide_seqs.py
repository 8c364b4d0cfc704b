"""Numbers past 2**31 and 2**32, where a 32-bit CPU's Py_ssize_t, long and size_t end.

A terminal writing 2,000 records a day reaches seq 2**31 in three thousand years, but a seq
is a u64 on disk and a crafted or long-lived (merged, renumbered) journal may hold any: the
core must recover, walk, look up, verify and append such seqs on armv7l exactly as on x86_64.
`.ci/arm-check` runs this file under armhf emulation; the normal suite runs it here.

The journals are made by posfast, then renumbered by file surgery (FORMAT.md §1.3): every
seq and position shifted, links and CRCs recomputed, the tail mark and the index dropped,
so the opens below run the full recovery scan over seqs straddling the boundary."""
import glob
import hashlib
import os
import struct
import uuid

import pytest

import posfast
from posfast import _core

JID = uuid.UUID("3b5e0d2a-7c41-4f6e-8a19-52c0ffee0b17")
DATA_OFFSET = _core.DATA_OFFSET
HEAD = _core.HEAD_SIZE
TS = 1_767_225_600_000_000          # 2026-01-01 00:00 UTC
N = 100


def _fields(i, seq):
    # each record its own payment (a payment begins where txn_id == seq)
    return {"txn_id": seq, "terminal": 7 + i % 3, "kind": "sale", "state": "approved", "method": "card",
            "currency": 978, "amount": 100 + i, "receipt_no": i, "ts": TS + i * 60_000_000}


def _made(tmp_path):
    path = str(tmp_path / "wide.pfj")
    with posfast.Journal.create(path, capacity=256, slot_size=128, journal_id=JID) as j:
        for i in range(N):
            j.append(b"receipt %03d" % i, **_fields(i, i + 1))
    return path


def _renumber(path, first_seq):
    """Rewrite the records 1..N of `path` as first_seq..first_seq+N-1 (same slots)."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    hdr = data[:256]
    assert hdr[:8] == b"POSFJRNL" and struct.unpack_from("<I", hdr, 8)[0] == 2
    slot_size, = struct.unpack_from("<I", hdr, 24)
    capacity, = struct.unpack_from("<Q", hdr, 32)
    jid = bytes(hdr[40:56])
    ds = first_seq - 1                                  # seq shift
    dp = -(-ds // capacity) * capacity                  # position shift: slots stay, seq <= pos
    link = hashlib.sha256(b"posfast-chain-v1" + jid).digest()[:16]
    pos, seq = 1, 1
    while True:
        off = DATA_OFFSET + (pos - 1) % capacity * slot_size
        h = data[off:off + HEAD]
        if struct.unpack_from("<Q", h, 8)[0] != seq:
            break
        body_len = struct.unpack_from("<H", h, 4)[0] + struct.unpack_from("<H", h, 100)[0]
        assert (pos - 1) % capacity * slot_size + HEAD + body_len <= capacity * slot_size
        body = bytes(data[off + HEAD:off + HEAD + body_len])
        struct.pack_into("<QQ", data, off + 8, seq + ds, pos + dp)
        for field in (64, 72):                          # txn_id, ref_seq: seqs too
            value, = struct.unpack_from("<Q", data, off + field)
            if value:
                struct.pack_into("<Q", data, off + field, value + ds)
        link = hashlib.sha256(link + bytes(data[off + 8:off + 16]) + bytes(data[off + 24:off + 112])
                              + body).digest()[:16]
        data[off + 112:off + 128] = link
        struct.pack_into("<I", data, off, _core.crc32c(jid + bytes(data[off + 4:off + HEAD + body_len])))
        pos += -(-(HEAD + body_len) // slot_size)
        seq += 1
    assert seq == N + 1
    for copy in (0, 4096):
        # no tail mark (scan the whole ring), no index; the back office has every seq before
        # first_seq (a long-lived journal: they were synced, then evicted)
        struct.pack_into("<QQQ", data, copy + 120, 0, 0, 0)
        data[copy + 144:copy + 192] = bytes(48)
        struct.pack_into("<Q", data, copy + 80, first_seq - 1)
        struct.pack_into("<I", data, copy + 252, _core.crc32c(bytes(data[copy:copy + 252])))
    with open(path, "wb") as f:
        f.write(data)
    for side in glob.glob(path + ".*"):
        os.unlink(side)


def _damage(path, seqs):
    """Flip a payload byte of each of `seqs` (the CRC no longer matches)."""
    with posfast.Journal.open(path, readonly=True) as j:
        offsets = [DATA_OFFSET + j._ring.slot_of(s) * j.slot_size + HEAD + 3 for s in seqs]
    with open(path, "r+b") as f:
        for off in offsets:
            f.seek(off)
            b = f.read(1)
            f.seek(off)
            f.write(bytes([b[0] ^ 0x40]))


@pytest.fixture(params=[2**31, 2**32], ids=["2^31", "2^32"])
def boundary(request):
    return request.param


def test_journal_with_seqs_across_the_boundary_recovers_reads_and_appends(tmp_path, boundary):
    path = _made(tmp_path)
    first = boundary - 40                     # seqs boundary-40 ... boundary+59
    _renumber(path, first)
    last = first + N - 1
    with posfast.Journal.open(path) as j:
        assert (j.oldest_seq, j.head_seq) == (first, last)
        assert j._ring.damaged == [] and j._ring.torn == []
        for i, seq in enumerate(range(first, last + 1)):
            r = j.get(seq)
            assert (r.seq, r.amount, r.receipt_no, r.terminal, r.payload) == \
                (seq, 100 + i, i, 7 + i % 3, b"receipt %03d" % i)
        newest7 = max(s for s in range(first, last + 1) if (s - first) % 3 == 0)
        got = j.last_transaction(7)
        assert (got["txn_id"], got["state"], got["amount"]) == (newest7, "approved", 100 + newest7 - first)
        assert sorted(int(s) for s in j.query(terminal=8)["seq"]) == \
            [s for s in range(first, last + 1) if (s - first) % 3 == 1]
        report = j.verify()
        assert report.ok, report.problems
        assert report.checked == N
        # appends continue the numbering past the boundary
        more = [j.append(b"after %d" % k, **_fields(N + k, last + 1 + k)) for k in range(5)]
        assert more == list(range(last + 1, last + 6))
    # reopened through the index file the close saved (positions of seqs above the boundary)
    with posfast.Journal.open(path, readonly=True) as j:
        assert j.index_problems == [] and (j.oldest_seq, j.head_seq) == (first, last + 5)
        assert j.get(boundary).receipt_no == 40 and j.get(last + 5).payload == b"after 4"
        assert j.verify().ok


def test_damage_across_the_boundary_is_reported_seq_by_seq(tmp_path, boundary):
    path = _made(tmp_path)
    first = boundary - 40
    _renumber(path, first)
    lost = [boundary - 1, boundary, boundary + 1]
    _damage(path, lost)
    with posfast.Journal.open(path) as j:
        assert (j.oldest_seq, j.head_seq) == (first, first + N - 1)
        assert [d[0] for d in j._ring.damaged] == lost
        assert all("record lost to damage: followed by intact seq %d" % (boundary + 2) in d[2]
                   for d in j._ring.damaged)
        for seq in lost:
            with pytest.raises((KeyError, posfast.CorruptRecord)):
                j.get(seq)
        assert j.get(boundary - 2).receipt_no == 38 and j.get(boundary + 2).receipt_no == 42
        report = j.verify()
        assert sorted({p.seq for p in report.problems}) == lost
        assert report.checked == N - 3
        assert j.append(b"next", **_fields(N, first + N)) == first + N


def test_totals_group_terminal_ids_above_2_31(tmp_path):
    # Terminal ids are u32: a day's totals grouped by them (posfast.totals._group narrows a
    # wide column by value - low, which a 32-bit intp cannot hold before the subtraction)
    path = str(tmp_path / "terminals.pfj")
    t0 = 3_000_000_000
    terminals = [t0 + (i * 997) % 3000 for i in range(400)]
    days = [i % 400 for i in range(400)]          # product of the spans: well past 2**20
    with posfast.Journal.create(path, capacity=4096) as j:
        j.append_many({"terminal": terminals, "kind": "sale", "state": "approved", "method": "card",
                       "currency": 978, "amount": [1000 + i for i in range(400)],
                       "ts": [TS - 500 * 86_400_000_000 + d * 86_400_000_000 for d in days]})
        day0 = j.get(1).day
        for i in (0, 1, 399):
            tot = j.totals(day0 + days[i], terminal=terminals[i])
            assert tot[978].net == 1000 + i
