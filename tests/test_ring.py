"""The ring file: layout at create, spanning records, wrap-around, retention and the
full ring, the sync watermark, durability modes and failed I/O."""
import errno
import hashlib
import os
import random

import numpy as np
import pytest

import posfast
from posfast import IOFailure, InvalidRecord, JournalClosed, JournalFull

from conftest import (DATA_OFFSET, FIXED_JID, append_expected, assert_index_matches_scan,
                      expected_dict, header_bytes, read_at, unpack_header)


def file_digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def slots_of(payload_len, slot_size=128):
    return -(-(128 + payload_len) // slot_size)


def test_create_writes_full_size_zeroed_file_with_two_header_copies(make_journal):
    j = make_journal(capacity=100, slot_size=192, max_payload=1000, retention="overwrite")
    assert os.path.getsize(j.path) == DATA_OFFSET + 100 * 192
    assert read_at(j.path, DATA_OFFSET, 100 * 192) == bytes(100 * 192)
    copies = [unpack_header(header_bytes(j.path, c)) for c in (0, 1)]
    for h in copies:
        assert h["magic"] == b"POSFJRNL" and h["version"] == 2 and h["capacity"] == 100
        assert h["slot_size"] == 192 and h["max_payload"] == 1000 and h["journal_id"] == FIXED_JID
        assert h["retention"] == 1 and h["sync_watermark"] == 0
    assert j.journal_id == FIXED_JID and j.capacity == 100 and j.head_seq == 0
    assert j.status()["live_records"] == 0 and j.verify().ok
    with pytest.raises(KeyError):
        j.get(1)
    assert j.last(terminal=1) is None and len(j.query()) == 0


def test_create_refuses_an_existing_file_and_bad_sizes(make_journal, jpath, tmp_path):
    make_journal()
    with pytest.raises(FileExistsError, match="already exists"):
        posfast.Journal.create(jpath)
    with pytest.raises(ValueError, match="slot_size"):
        posfast.Journal.create(str(tmp_path / "b.pfj"), slot_size=100)
    with pytest.raises(ValueError, match="capacity"):
        posfast.Journal.create(str(tmp_path / "c.pfj"), capacity=1)
    with pytest.raises(ValueError, match="max_payload"):
        posfast.Journal.create(str(tmp_path / "d.pfj"), max_payload=70_000)
    assert not os.path.exists(tmp_path / "b.pfj")


def test_single_slot_records_live_in_slot_seq_minus_one_mod_capacity(make_journal):
    j = make_journal(capacity=8, retention="overwrite")
    for s in range(1, 30):
        j.append(terminal=1, kind="sale", amount=s)
        assert j._ring.slot_of(s) == (s - 1) % 8
        assert j._ring.position_of(s) == s
    assert (j.oldest_seq, j.head_seq) == (22, 29)
    assert [j.get(s).amount for s in range(22, 30)] == list(range(22, 30))


def test_spanning_records_round_trip_and_take_consecutive_slots(make_journal):
    j = make_journal(capacity=64, slot_size=128, max_payload=1000)
    sizes = [0, 1, 127, 128 - 0, 129, 300, 1000, 5, 900]
    payloads = [bytes([i + 1]) * n for i, n in enumerate(sizes)]
    for p in payloads:
        j.append(terminal=2, kind="print", state="ok", payload=p)
    pos = 1
    for s, n in enumerate(sizes, start=1):
        assert j._ring.position_of(s) == pos
        pos += slots_of(n)
        assert j.get(s).payload == payloads[s - 1]
    assert j.status()["used_slots"] == sum(slots_of(n) for n in sizes)
    # the payload bytes follow the head in the file, on into the next slots
    off = DATA_OFFSET + j._ring.slot_of(7) * 128
    assert read_at(j.path, off + 128, 1000) == payloads[6]
    assert j.payloads(np.arange(1, 10)) == payloads
    assert j.verify().ok


def test_spanning_record_wraps_at_the_ring_end(make_journal):
    j = make_journal(capacity=10, slot_size=128, max_payload=600, retention="overwrite")
    for s in range(1, 9):
        j.append(terminal=1, kind="note", amount=s)
    big = bytes(range(256)) * 2          # 512 bytes: head + payload = 5 slots, 8..12 -> wraps
    seq = j.append(terminal=1, kind="note", payload=big)
    assert j._ring.slot_of(seq) == 8
    assert j.get(seq).payload == big
    assert read_at(j.path, DATA_OFFSET + 9 * 128, 128) == big[:128]      # slot 9, the last
    assert read_at(j.path, DATA_OFFSET, 384) == big[128:]               # slots 0..2
    # it overwrote slots 0..2: seqs 1..3 are gone, 4.. remain
    assert j.oldest_seq == 4
    assert [j.get(s).amount for s in range(4, 9)] == list(range(4, 9))
    j.close()
    with posfast.Journal.open(j.path) as again:
        assert (again.oldest_seq, again.head_seq) == (4, 9)
        assert again.get(9).payload == big and again.verify().ok


def test_wrap_around_many_laps_keeps_index_equal_to_a_scan(make_journal):
    rng = random.Random(7)
    j = make_journal(capacity=32, slot_size=128, max_payload=600, retention="overwrite",
                     durability="none")
    seq = 0
    while seq < 32 * 12:                       # a dozen laps of the ring
        n = rng.choice([1, 1, 1, 2, 5])
        got = append_expected(j, range(seq + 1, seq + n + 1))
        seq = got[-1]
        assert j.head_seq == seq
        assert j.status()["used_slots"] <= 32
        assert_index_matches_scan(j)
        for s in (j.oldest_seq, seq):
            assert j.get(s).to_dict() == expected_dict(s, j.day_rule)
        with pytest.raises(KeyError):
            j.get(j.oldest_seq - 1)
    # everything live is intact, and the eviction kept as many records as fit
    assert j.verify().ok
    used = j.status()["used_slots"]
    fields_older = expected_dict(j.oldest_seq - 1, j.day_rule)
    assert used + slots_of(len(fields_older["payload"])) > 32
    j.close()
    with posfast.Journal.open(j.path) as again:
        assert again.head_seq == seq
        assert_index_matches_scan(again)


def test_full_ring_of_unsynced_records_refuses_and_writes_nothing(make_journal):
    j = make_journal(capacity=16, retention="synced")
    for s in range(1, 17):
        j.append(terminal=1, kind="sale", amount=s)
    before = file_digest(j.path)
    with pytest.raises(JournalFull, match=r"is full: 16 records are not yet acknowledged.*Nothing was "
                                          r"written.*posfast sync"):
        j.append(terminal=1, kind="sale", amount=17)
    with pytest.raises(JournalFull):
        j.append_many({"terminal": [1, 1], "kind": "sale", "amount": [17, 18]})
    assert file_digest(j.path) == before
    assert (j.oldest_seq, j.head_seq) == (1, 16) and len(j.query()) == 16
    # acknowledging frees exactly the acknowledged records
    j.set_sync_watermark(3)
    assert j.append_many({"terminal": [1, 1, 1], "kind": "sale", "amount": [17, 18, 19]}) == range(17, 20)
    assert (j.oldest_seq, j.head_seq) == (4, 19)
    with pytest.raises(JournalFull, match="would overwrite seq 4"):
        j.append(terminal=1, kind="sale", amount=20)
    # a spanning record needs as many acknowledged records as it takes slots
    j.set_sync_watermark(5)
    with pytest.raises(JournalFull):
        j.append(terminal=1, kind="sale", payload=b"x" * 300)     # 4 slots, only 2 free
    j.set_sync_watermark(7)
    assert j.append(terminal=1, kind="sale", amount=21, payload=b"x" * 300) == 20
    assert j.oldest_seq == 8 and j.status()["unsynced"] == 13
    assert j.get(20).payload == b"x" * 300
    assert_index_matches_scan(j)


def test_append_many_larger_than_the_ring(make_journal):
    j = make_journal(capacity=16, retention="synced")
    with pytest.raises(JournalFull, match="append fewer"):
        j.append_many({"terminal": list(range(20)), "kind": "sale"})
    assert j.head_seq == 0
    k = make_journal(path=j.path + "2", capacity=16, retention="overwrite")
    got = k.append_many({"terminal": list(range(50)), "kind": "sale", "amount": list(range(50))})
    assert got == range(1, 51)
    assert (k.oldest_seq, k.head_seq) == (35, 50)
    assert k.query()["amount"].tolist() == list(range(34, 50))
    k.close()
    with posfast.Journal.open(k.path) as again:
        assert (again.oldest_seq, again.head_seq) == (35, 50) and again.verify().ok


def test_a_record_larger_than_the_ring_is_refused(make_journal):
    j = make_journal(capacity=2, max_payload=600, retention="overwrite")
    j.append(terminal=1, kind="note", payload=b"y" * 128)       # 2 slots: fits exactly
    with pytest.raises(InvalidRecord, match="needs 3 slots.*only 2"):
        j.append(terminal=1, kind="note", payload=b"y" * 129)
    assert j.head_seq == 1 and j.get(1).payload == b"y" * 128


def test_sync_watermark_moves_forward_only_and_is_durable(make_journal):
    j = make_journal()
    for _ in range(5):
        j.append(terminal=1, kind="sale", amount=1)
    j.set_sync_watermark(3)
    with pytest.raises(ValueError, match="only moves forward"):
        j.set_sync_watermark(2)
    with pytest.raises(ValueError, match="newest record is 5"):
        j.set_sync_watermark(6)
    j.set_sync_watermark(3)                   # same value: fine, nothing written
    assert j.sync_watermark == 3 and j.status()["unsynced"] == 2
    # (format 2 writes the older header copy only: the newest copy holds it)
    copies = [unpack_header(header_bytes(j.path, c)) for c in (0, 1)]
    assert max(copies, key=lambda c: c["generation"])["sync_watermark"] == 3
    j.close()
    with posfast.Journal.open(j.path, readonly=True) as again:
        assert again.sync_watermark == 3


@pytest.mark.parametrize("durability", ["batch", "none"])
def test_batch_and_none_durability_keep_records_across_close(make_journal, durability):
    j = make_journal(capacity=256, durability=durability, batch_records=8)
    append_expected(j, range(1, 21))
    for s in range(21, 41):
        append_expected(j, [s])
    j.set_sync_watermark(30)
    j.close()
    with posfast.Journal.open(j.path) as again:
        assert again.head_seq == 40 and again.sync_watermark == 30
        for s in range(1, 41):
            assert again.get(s).to_dict() == expected_dict(s, again.day_rule)
        assert again.verify().ok


def test_closed_and_readonly_journals_refuse(make_journal):
    j = make_journal()
    j.append(terminal=1, kind="sale", amount=1)
    j.close()
    j.close()                                  # twice is fine
    for call in (lambda: j.append(terminal=1, kind="sale"), lambda: j.get(1), lambda: j.query(),
                 lambda: j.set_sync_watermark(1)):
        with pytest.raises(JournalClosed, match="closed"):
            call()
    with posfast.Journal.open(j.path, readonly=True) as ro:
        with pytest.raises(JournalClosed, match="read-only"):
            ro.append(terminal=1, kind="sale")
        assert ro.get(1).amount == 1


def test_failed_write_retires_the_handle_and_reopen_keeps_acknowledged(make_journal):
    j = make_journal(capacity=64)
    for s in range(1, 6):
        append_expected(j, [s])

    def fail(op, offset, data):
        if op == "write":
            raise OSError(errno.EIO, "injected")

    j._ring.io_hook = fail
    with pytest.raises(IOFailure, match="write of .* failed"):
        append_expected(j, [6])
    j._ring.io_hook = None
    with pytest.raises(JournalClosed, match="failed write"):
        append_expected(j, [6])
    assert j.head_seq == 5 and j.get(5).to_dict() == expected_dict(5, j.day_rule)
    j.close()
    with posfast.Journal.open(j.path) as again:
        assert again.head_seq == 5 and again.verify().ok
        append_expected(again, [6])
        assert again.get(6).to_dict() == expected_dict(6, again.day_rule)


def test_failed_fsync_retires_the_handle(make_journal):
    j = make_journal(capacity=64)
    append_expected(j, range(1, 4))

    def fail(op, offset, data):
        if op == "sync":
            raise OSError(errno.EIO, "injected")

    j._ring.io_hook = fail
    with pytest.raises(IOFailure, match="fdatasync"):
        append_expected(j, [4])
    j._ring.io_hook = None
    with pytest.raises(JournalClosed):
        j.set_sync_watermark(2)
    j.close()
    with posfast.Journal.open(j.path) as again:
        # the record reached the page cache, so it may be there; 1..3 certainly are
        assert again.head_seq in (3, 4) and again.verify().ok
        for s in range(1, again.head_seq + 1):
            assert again.get(s).to_dict() == expected_dict(s, again.day_rule)


def test_short_writes_are_completed(make_journal):
    j = make_journal(capacity=64)
    calls = []

    def short(op, offset, data):
        if op == "write":
            calls.append(len(data))
            return max(1, len(data) // 3)
        return None

    j._ring.io_hook = short
    append_expected(j, range(1, 6))
    j.set_sync_watermark(2)
    j._ring.io_hook = None
    assert len(calls) > 5
    j.close()
    with posfast.Journal.open(j.path) as again:
        assert again.head_seq == 5 and again.sync_watermark == 2 and again.verify().ok
        for s in range(1, 6):
            assert again.get(s).to_dict() == expected_dict(s, again.day_rule)


def test_read_range_across_the_ring_end(make_journal):
    j = make_journal(capacity=16, retention="overwrite")
    append_expected(j, range(1, 41))
    batch = j.read_range(0, 10**9)
    assert batch.rows["seq"].tolist() == list(range(j.oldest_seq, 41))
    assert batch.links == [j.link(s) for s in range(j.oldest_seq, 41)]
    assert batch.payloads == [expected_dict(s, j.day_rule)["payload"] for s in range(j.oldest_seq, 41)]
    assert len(j.read_range(41, 50)) == 0
