"""The bitmap index file: saved on close, loaded on open with only the tail replayed,
ignored and rebuilt when stale, damaged or from another journal."""
import os
import struct
import shutil
import uuid

import numpy as np
import pytest

import posfast
from posfast.index import Index

from conftest import (append_expected, assert_index_matches_scan, crash_copy, drop_without_close,
                      expected_dict, flip_byte, index_equal, record_span)


@pytest.fixture
def replays(monkeypatch):
    """Records which seq ranges each open indexes from the ring: (saved head + 1, head) when the
    index file was used, (oldest, head) when it was rebuilt."""
    calls = []
    original = posfast.journal.Journal._index_range

    def spy(self, first, last, *args, **kw):
        calls.append((first, last))
        return original(self, first, last, *args, **kw)

    monkeypatch.setattr(posfast.journal.Journal, "_index_range", spy)
    return calls


def test_index_is_saved_on_close_and_loaded_on_open(make_journal, replays):
    j = make_journal(capacity=128)
    append_expected(j, range(1, 31))
    j.close()
    loaded = Index.load(j.path + ".idx", j.journal_id.bytes)
    assert loaded is not None
    index, head, oldest, link, positions = loaded[:5]
    assert (head, oldest) == (30, 1) and len(positions) == 30 and link == j._ring.head_link
    replays.clear()
    with posfast.Journal.open(j.path) as again:
        assert replays == [(31, 30)]                # nothing to replay: the file was current
        assert again.head_seq == 30
        assert_index_matches_scan(again)
        assert index_equal(again.index, index, 1)


def test_single_appends_not_yet_in_the_bitmaps_are_saved_and_found(make_journal, replays):
    """Single appends go into the bitmaps 64 at a time or at the next read: a save, a
    lookup and a reopen in between must all see them."""
    j = make_journal(capacity=256)
    append_expected(j, range(1, 41))
    for seq in range(41, 51):                    # 10 single appends: fewer than a batch
        append_expected(j, [seq])
    assert j.index._due                          # (still waiting: what this test is about)
    assert_index_matches_scan(j)                 # a read takes them in first
    for seq in range(51, 61):
        append_expected(j, [seq])
    last_terminal = j.get(60).terminal
    assert j.last(last_terminal).seq == 60
    for seq in range(61, 66):
        append_expected(j, [seq])
    terminal = j.get(65).terminal
    j.close()                                    # the save takes in the 5 still due
    replays.clear()
    with posfast.Journal.open(j.path) as again:
        assert replays == [(66, 65)]             # the file covered all 65: nothing replayed
        assert_index_matches_scan(again)
        assert list(again.query(terminal=terminal)["seq"])[-1] == 65


def test_records_appended_after_an_index_save_are_found_after_a_crash(make_journal, replays):
    j = make_journal(capacity=256)
    append_expected(j, range(1, 51))
    j.flush()                                       # index saved at seq 50
    append_expected(j, range(51, 81))
    append_expected(j, [81])
    drop_without_close(j)                           # the writer dies: index still says 50
    assert Index.load(j.path + ".idx", j.journal_id.bytes)[1] == 50
    replays.clear()
    with posfast.Journal.open(j.path) as again:
        assert replays == [(51, 81)]                # only the tail was read from the ring
        assert again.head_seq == 81
        for s in (1, 50, 51, 80, 81):
            assert again.get(s).to_dict() == expected_dict(s, again.day_rule)
        assert_index_matches_scan(again)
        tail_terminal = expected_dict(81, again.day_rule)["terminal"]
        assert again.last(terminal=tail_terminal).seq == 81


def test_rebuilt_index_equals_the_loaded_one(make_journal, replays):
    j = make_journal(capacity=64, retention="overwrite")
    append_expected(j, range(1, 150))
    j.close()
    with posfast.Journal.open(j.path) as loaded:
        assert replays[-1] == (150, 149)
        loaded_index, oldest = loaded.index, loaded.oldest_seq
    os.unlink(j.path + ".idx")
    replays.clear()
    with posfast.Journal.open(j.path) as rebuilt:
        assert replays == [(oldest, 149)]
        assert index_equal(rebuilt.index, loaded_index, oldest)
        assert_index_matches_scan(rebuilt)


def test_index_of_another_journal_is_ignored(make_journal, replays, tmp_path):
    a = make_journal(capacity=64)
    append_expected(a, range(1, 21))
    a.close()
    b = make_journal(path=str(tmp_path / "other.pfj"), capacity=64, journal_id=uuid.uuid4())
    b.append_many({"terminal": [9] * 20, "kind": "note", "amount": list(range(20))})
    b.close()
    shutil.copyfile(a.path + ".idx", b.path + ".idx")
    replays.clear()
    with posfast.Journal.open(b.path) as again:
        assert replays == [(1, 20)]                 # rebuilt
        assert again.query(terminal=9)["amount"].tolist() == list(range(20))
        assert_index_matches_scan(again)


def test_index_older_than_the_ring_by_more_than_a_lap_is_rebuilt(make_journal, replays, tmp_path):
    j = make_journal(capacity=32, retention="overwrite")
    append_expected(j, range(1, 21))
    j.flush()
    old_index = str(tmp_path / "old.idx")
    shutil.copyfile(j.path + ".idx", old_index)
    append_expected(j, range(21, 200))               # several laps later
    j.close()
    shutil.copyfile(old_index, j.path + ".idx")
    replays.clear()
    with posfast.Journal.open(j.path) as again:
        assert replays == [(again.oldest_seq, 199)]
        assert again.head_seq == 199 and again.oldest_seq > 160
        assert_index_matches_scan(again)
        for s in range(again.oldest_seq, 200):
            assert again.get(s).to_dict() == expected_dict(s, again.day_rule)


def test_index_within_a_lap_replays_with_evictions(make_journal, replays):
    j = make_journal(capacity=64, retention="overwrite")
    append_expected(j, range(1, 61))
    j.flush()
    append_expected(j, range(61, 90))                # evicts records the saved index listed
    drop_without_close(j)
    replays.clear()
    with posfast.Journal.open(j.path) as again:
        assert again.head_seq == 89
        assert_index_matches_scan(again)
        for s in range(again.oldest_seq, 90):
            assert again.get(s).to_dict() == expected_dict(s, again.day_rule)


def test_index_newer_than_the_ring_is_rebuilt(make_journal, replays, tmp_path):
    """The ring file restored from an older copy while the index beside it is newer."""
    j = make_journal(capacity=512)
    append_expected(j, range(1, 31))
    older_ring = crash_copy(j.path, str(tmp_path / "ring-at-30"))
    append_expected(j, range(31, 61))
    j.close()                                       # index at 60
    shutil.copyfile(older_ring, j.path)
    replays.clear()
    with posfast.Journal.open(j.path) as again:
        assert replays == [(1, 30)]
        assert again.head_seq == 30
        assert_index_matches_scan(again)


def test_index_of_a_forked_copy_is_rebuilt(make_journal, replays, tmp_path):
    """Same journal id and head seq, different records: the head link tells them apart."""
    j = make_journal(capacity=512)
    append_expected(j, range(1, 31))
    fork = crash_copy(j.path, str(tmp_path / "fork.pfj"))
    append_expected(j, range(31, 41))
    j.close()
    with posfast.Journal.open(fork) as f:
        f.append_many({"terminal": [7] * 10, "kind": "note", "amount": list(range(10))})
    shutil.copyfile(j.path + ".idx", fork + ".idx")
    replays.clear()
    with posfast.Journal.open(fork) as f:
        assert replays == [(1, 40)]
        assert f.query(terminal=7)["seq"].tolist() == list(range(31, 41))
        assert_index_matches_scan(f)


@pytest.mark.parametrize("damage", ["flip-directory", "flip-bitmap", "flip-position", "truncate",
                                    "empty", "garbage", "other-version"])
def test_damaged_index_file_is_ignored_and_rebuilt(make_journal, replays, damage):
    j = make_journal(capacity=128)
    append_expected(j, range(1, 41))
    j.close()
    idx = j.path + ".idx"
    size = os.path.getsize(idx)
    head = struct.unpack_from("<8sI16sQQ16sQQQI", open(idx, "rb").read())
    pos_offset, dir_len = head[8], head[9]
    if damage == "flip-directory":          # the header and directory: checked at open
        flip_byte(idx, 88 + dir_len // 2)
    elif damage == "flip-bitmap":           # a bitmap: checked when a lookup first reads it
        flip_byte(idx, 88 + dir_len + 4 + 3)
    elif damage == "flip-position":         # a record position: checked against the record
        flip_byte(idx, pos_offset + 8 * 17 + 1)
    elif damage == "truncate":
        with open(idx, "r+b") as f:
            f.truncate(size - 9)
    elif damage == "empty":
        open(idx, "wb").close()
    elif damage == "garbage":
        with open(idx, "wb") as f:
            f.write(np.random.default_rng(1).bytes(size))
    else:
        data = bytearray(open(idx, "rb").read())
        data[8] = 9                                  # another index version, checksum recomputed
        sealed = 88 + dir_len
        data[sealed:sealed + 4] = posfast._core.crc32c(bytes(data[:sealed])).to_bytes(4, "little")
        open(idx, "wb").write(bytes(data))
    replays.clear()
    with posfast.Journal.open(j.path) as again:
        # open reads only the header and directory: damage there sends it to a scan; damage
        # further in is found where a lookup reads it, and repaired from the records
        assert replays == ([(41, 40)] if damage in ("flip-bitmap", "flip-position") else [(1, 40)])
        assert again.head_seq == 40
        for s in range(1, 41):
            assert again.get(s).to_dict() == expected_dict(s, again.day_rule)
        assert_index_matches_scan(again)
        problems = again.status()["index_problems"]
        assert bool(problems) == (damage in ("flip-bitmap", "flip-position")), problems
        assert all(idx in p for p in problems)
        report = again.verify()
        assert all(p.seq == 0 and "index" in p.cause for p in report.problems), str(report)
    # and the rebuilt index was saved on close
    assert Index.load(idx, j.journal_id.bytes)[1] == 40


def test_verify_replaces_an_index_that_disagrees_with_the_records(make_journal):
    j = make_journal(capacity=64)
    append_expected(j, range(1, 21))
    terminal = expected_dict(5, j.day_rule)["terminal"]
    j.index.by_terminal[terminal].discard(5)          # an index out of step with the ring
    report = j.verify()
    assert not report.ok and any("index" in p.cause for p in report.problems)
    assert 5 in j.query(terminal=terminal)["seq"].tolist()
    assert j.verify().ok
    assert_index_matches_scan(j)


def test_readonly_reader_does_not_write_the_index(make_journal):
    j = make_journal(capacity=64)
    append_expected(j, range(1, 11))
    j.close()
    os.unlink(j.path + ".idx")
    with posfast.Journal.open(j.path, readonly=True) as ro:
        assert ro.head_seq == 10
        assert_index_matches_scan(ro)
    assert not os.path.exists(j.path + ".idx")


@pytest.mark.parametrize("victim", ["middle", "oldest"])
def test_index_saved_while_a_record_was_damaged_does_not_outlive_a_restored_file(
        make_journal, tmp_path, victim):
    """Damage found at open is in the index file saved after; restoring the ring file from a
    copy brings the record back, and the next open must see it again."""
    j = make_journal(capacity=32, retention="overwrite")
    for s in range(1, 61):
        append_expected(j, [s])
    backup = crash_copy(j.path, str(tmp_path / "backup.pfj"))
    seq = j.oldest_seq if victim == "oldest" else j.oldest_seq + 3
    flip_byte(j.path, record_span(j, seq)[40])
    before = (j.oldest_seq, j.head_seq)
    j.close()
    os.unlink(j.path + ".idx")
    with posfast.Journal.open(j.path) as damaged:      # finds the damage, saves its index
        assert seq not in damaged.query()["seq"].tolist()
    shutil.copyfile(backup, j.path)
    with posfast.Journal.open(j.path) as restored:
        assert (restored.oldest_seq, restored.head_seq) == before
        assert restored.verify().ok
        assert restored.get(seq).to_dict() == expected_dict(seq, restored.day_rule)
        assert_index_matches_scan(restored)


def test_time_day_and_state_filters_equal_a_scan(make_journal):
    j = make_journal(capacity=512, day_rule=posfast.DayRule(utc_offset="+08:00", starts_at="04:00"))
    rng = np.random.default_rng(4)
    base = 1_795_320_000_000_000
    n = 300
    j.append_many({"terminal": rng.integers(1, 4, n), "kind": rng.choice([1, 2, 7], n),
                   "state": rng.integers(0, 9, n), "ts": base + rng.integers(0, 6 * 86_400_000_000, n)})
    rows = j.query()
    for since, until in [(base, base + 86_400_000_000), (base + 5 * 3_600_000_000, base + 3 * 86_400_000_000 + 7),
                         (base - 10, base + 10**12), (base + 10**9, base + 10**9)]:
        want = (rows["ts"] >= since) & (rows["ts"] < until)
        assert j.query(since=since, until=until)["seq"].tolist() == rows["seq"][want].tolist()
        both = want & (rows["terminal"] == 2) & np.isin(rows["state"], [2, 3])
        assert j.query(since=since, until=until, terminal=2, state=["approved", "declined"])["seq"].tolist() \
            == rows["seq"][both].tolist()
    for day in np.unique(rows["day"]).tolist():
        assert j.query(day=day)["seq"].tolist() == rows["seq"][rows["day"] == day].tolist()
        assert j.query(day=[day, day + 1])["seq"].tolist() == \
            rows["seq"][np.isin(rows["day"], [day, day + 1])].tolist()
    assert j.query(kind=["sale", "print"])["seq"].tolist() == rows["seq"][np.isin(rows["kind"], [1, 7])].tolist()
