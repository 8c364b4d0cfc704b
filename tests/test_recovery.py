"""Recovery at open: clean and crashed writers, torn tails, torn header writes, and
the same state whichever way (index or scan, read-only or writable) and however
often the file is opened."""
import errno
import hashlib
import os
import random
import shutil

import pytest

import posfast
from posfast import IOFailure

from conftest import (DATA_OFFSET, append_expected, assert_index_matches_scan, drop_without_close,
                      expected_dict, header_bytes, record_span, state_of, unpack_header, write_at)


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def open_states(path, *, with_index=True):
    """State from a read-only open, then two writable opens, then a scan-only open."""
    states = []
    with posfast.Journal.open(path, readonly=True) as ro:
        states.append(state_of(ro))
    for _ in range(2):
        with posfast.Journal.open(path) as j:
            states.append(state_of(j))
            assert_index_matches_scan(j)
    if os.path.exists(path + ".idx"):
        os.unlink(path + ".idx")
    with posfast.Journal.open(path) as j:
        states.append(state_of(j))
    return states


def fill(journal, rng, upto):
    seq = journal.head_seq
    while seq < upto:
        n = min(rng.choice([1, 1, 2, 4]), upto - seq)
        seq = append_expected(journal, range(seq + 1, seq + n + 1))[-1]


def test_clean_reopen_gives_identical_state(make_journal):
    j = make_journal(capacity=48, retention="overwrite")
    fill(j, random.Random(1), 300)
    before = state_of(j)
    j.close()
    states = open_states(j.path)
    assert all(s == before for s in states)
    assert before["head"] == 300 and before["ok"]


@pytest.mark.parametrize("retention", ["synced", "overwrite"])
@pytest.mark.parametrize("save_index", [False, True])
def test_crashed_writer_keeps_every_acknowledged_record(make_journal, retention, save_index):
    rng = random.Random(len(retention) * 10 + save_index)
    j = make_journal(capacity=128, retention=retention)
    total = 70 if retention == "synced" else 250
    fill(j, rng, 40)
    j.set_sync_watermark(35)                    # lets "synced" evict up to 35
    if save_index:
        j.flush()                               # the crash then leaves an index 30+ records old
    fill(j, rng, total)
    assert j.oldest_seq > 1
    expect_oldest = j.oldest_seq
    drop_without_close(j)
    states = open_states(j.path)
    assert all(s == states[0] for s in states[1:])
    state = states[0]
    assert state["head"] == total and state["oldest"] == expect_oldest and state["ok"]
    with posfast.Journal.open(j.path) as again:
        for s in range(again.oldest_seq, total + 1):
            assert again.get(s).to_dict() == expected_dict(s, again.day_rule)
        # and the journal goes on from there
        append_expected(again, [total + 1])
        assert again.get(total + 1).to_dict() == expected_dict(total + 1, again.day_rule)


def zero_head(journal, seq):
    write_at(journal.path, DATA_OFFSET + journal._ring.slot_of(seq) * journal.slot_size, bytes(128))


def test_torn_newest_group_is_dropped_and_listed(make_journal):
    j = make_journal(capacity=128)
    append_expected(j, range(1, 11))            # groups of their own (fsync per append)
    for s in range(11, 21):
        append_expected(j, [s])
    append_expected(j, range(21, 26))           # one commit group: 21..25
    slots = {s: j._ring.slot_of(s) for s in range(21, 26)}
    # a crash mid-write: seq 22's head never reached the disk, 23..25 did
    zero_head(j, 22)
    drop_without_close(j)
    untouched = digest(j.path)
    with posfast.Journal.open(j.path, readonly=True) as ro:
        assert ro.head_seq == 21
        assert ro._ring.torn == [(23, slots[23]), (24, slots[24]), (25, slots[25])]
        report = ro.verify()
        assert report.ok and [s for s, _ in report.torn] == [23, 24, 25]
        with pytest.raises(KeyError):
            ro.get(22)
    assert digest(j.path) == untouched          # a reader changes nothing on disk
    with posfast.Journal.open(j.path) as again:
        assert again.head_seq == 21 and again._ring.torn == [(23, slots[23]), (24, slots[24]),
                                                             (25, slots[25])]
        assert again.status()["torn_at_open"] == 3 and again.verify().ok
        assert len(again.query()) == 21
    # the writable open zeroed the torn heads: the next open finds a clean tail
    with posfast.Journal.open(j.path) as again:
        assert again.head_seq == 21 and again._ring.torn == [] and again.verify().ok
        append_expected(again, range(22, 30))
        assert [again.get(s).to_dict() for s in range(1, 30)] == \
            [expected_dict(s, again.day_rule) for s in range(1, 30)]


def test_garbage_in_the_newest_record_is_dropped(make_journal):
    j = make_journal(capacity=128)
    append_expected(j, range(1, 13))
    span = record_span(j, 12)
    for off in span[40:]:
        write_at(j.path, off, b"\xa5")
    drop_without_close(j)
    states = open_states(j.path)
    assert all(s == states[0] for s in states)
    assert states[0]["head"] == 11 and states[0]["ok"]


@pytest.mark.parametrize("format_version", [1, 2])
def test_torn_header_write_keeps_a_valid_copy(make_journal, format_version):
    # format 1 writes both copies, each synced; format 2 only the older one: either way a
    # failed header write leaves a valid copy with the old or the new state
    j = make_journal(capacity=64, format_version=format_version)
    for n in range(1, 11):
        j.append(terminal=1, kind="sale", state="approved", amount=n)
    j.set_sync_watermark(4)
    header_writes = []

    def copy_fails(op, offset, data):
        if op == "write" and offset < DATA_OFFSET:
            header_writes.append(offset)
            if len(header_writes) == (2 if format_version == 1 else 1):
                raise OSError(errno.EIO, "power cut")

    j._ring.io_hook = copy_fails
    with pytest.raises(IOFailure):
        j.set_sync_watermark(9)
    drop_without_close(j)
    copies = [unpack_header(header_bytes(j.path, c)) for c in (0, 1)]
    newest = max(copies, key=lambda c: c["generation"])["sync_watermark"]
    if format_version == 1:
        assert sorted(c["sync_watermark"] for c in copies) == [4, 9] and newest == 9
    else:
        assert newest == 4
    with posfast.Journal.open(j.path) as again:
        assert again.sync_watermark == newest      # the newest valid copy wins
        assert again.head_seq == 10 and again.verify().ok


def test_half_written_header_copy_is_ignored(make_journal):
    j = make_journal(capacity=64)
    append_expected(j, range(1, 11))
    j.set_sync_watermark(4)
    j.close()
    h = unpack_header(header_bytes(j.path, 0))
    newer = posfast._core.Ring.encode_header(h["generation"] + 1, 128, h["max_payload"], 64,
                                             j.journal_id.bytes, h["created_us"], 0, 0, 0, 9)
    target = 0 if h["generation"] < unpack_header(header_bytes(j.path, 1))["generation"] else 1
    write_at(j.path, target * 4096, newer[:64])     # torn: only the first half reached the disk
    with posfast.Journal.open(j.path) as again:
        assert again.sync_watermark == 4 and again.head_seq == 10 and again.verify().ok
        again.set_sync_watermark(6)                 # writing heals the torn copy
    copies = [unpack_header(header_bytes(j.path, c)) for c in (0, 1)]
    assert max(copies, key=lambda c: c["generation"])["sync_watermark"] == 6
    with posfast.Journal.open(j.path) as again:
        assert again.sync_watermark == 6 and again.verify().ok


def test_index_and_scan_recover_the_same_state_after_a_crash(make_journal, tmp_path):
    rng = random.Random(5)
    j = make_journal(capacity=40, retention="overwrite")
    fill(j, rng, 120)
    j.flush()
    fill(j, rng, 150)
    drop_without_close(j)
    image = str(tmp_path / "image")
    shutil.copyfile(j.path, image)
    shutil.copyfile(j.path + ".idx", image + ".idx")
    with posfast.Journal.open(j.path) as by_index:
        a = state_of(by_index)
    os.unlink(image + ".idx")
    with posfast.Journal.open(image) as by_scan:
        b = state_of(by_scan)
    assert a == b and a["head"] == 150 and a["ok"]


@pytest.mark.parametrize("readonly", [True, False])
def test_truncated_file_is_reported_not_silently_shortened(make_journal, readonly):
    j = make_journal(capacity=256)
    append_expected(j, range(1, 31))
    used_bytes = DATA_OFFSET + j.status()["used_slots"] * 128
    j.close()
    with open(j.path, "r+b") as f:
        f.truncate(used_bytes - 128 * 10)
    with posfast.Journal.open(j.path, readonly=readonly) as opened:
        report = opened.verify()
        assert not report.ok
        assert any(p.seq == 0 and "truncated to %d" % (used_bytes - 1280) in p.cause
                   for p in report.problems)
        survivors = opened.query()["seq"].tolist()
        assert survivors == list(range(1, opened.head_seq + 1)) and 20 < opened.head_seq < 30
        for s in survivors:
            assert opened.get(s).to_dict() == expected_dict(s, opened.day_rule)
