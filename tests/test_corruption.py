"""Damaged files: truncation, bit flips (headers, records, index), stale records from an
earlier lap or another journal, edited records with a recomputed CRC, deleted records,
torn tail vs mid-file damage, and garbage files.  A damaged record is reported (verify:
slot, seq, cause), get raises CorruptRecord, query skips it: never returned as good."""
import os
import random
import shutil
import struct
import uuid

import numpy as np
import pytest

import posfast
from posfast import CorruptRecord, FormatVersionError, PosfastError
from posfast import _core

from conftest import (DATA_OFFSET, append_expected, assert_index_matches_scan, drop_without_close,
                      expected_dict, flip_byte, header_bytes, read_at, record_span, state_of,
                      write_at)

def build(make_journal, n=40, capacity=256, **kw):
    """A journal of n deterministic records written one append each, closed."""
    j = make_journal(capacity=capacity, **kw)
    for s in range(1, n + 1):
        append_expected(j, [s])
    return j


def check_nothing_bad_returned(journal):
    """Whatever the journal returns equals what was written for that seq."""
    rows = journal.query()
    payloads = journal.payloads(rows["seq"])
    for row, payload in zip(rows, payloads):
        s = int(row["seq"])
        want = expected_dict(s, journal.day_rule)
        assert payload == want["payload"], s
        for name in ("ts", "amount", "terminal", "kind", "client_ref", "rrn"):
            assert row[name] == want[name], (s, name)
    for s in range(journal.oldest_seq, journal.head_seq + 1):
        try:
            rec = journal.get(s)
        except CorruptRecord:
            assert s not in rows["seq"]
            continue
        assert rec.to_dict() == expected_dict(s, journal.day_rule)
    return rows


def assert_reported(journal, seq, *codes):
    report = journal.verify(check_index=False)
    found = [p for p in report.problems if p.seq == seq]
    assert found, "seq %d not reported: %s" % (seq, report)
    problem = found[0]
    if codes:
        assert problem.code in codes, (problem, codes)
    assert problem.cause and str(seq) in str(problem)
    return problem


def assert_not_returned(journal, seq):
    with pytest.raises(CorruptRecord, match=r"seq %d of .*%s" % (seq, os.path.basename(journal.path))):
        journal.get(seq)
    assert seq not in journal.query()["seq"].tolist()
    assert journal.payloads([seq]) == [b""]


# ------------------------------------------------------------------ truncation

def test_truncation_at_arbitrary_offsets(make_journal, tmp_path):
    j = build(make_journal, n=60, capacity=256, retention="overwrite")
    j.close()
    size = os.path.getsize(j.path)
    used_end = DATA_OFFSET + 60 * 4 * 128
    rng = random.Random(3)
    cuts = [0, 1, 64, 127, 128, 4095, 4096, 4100, 4224, 8191, 8192, 8193, 8192 + 127, size - 1]
    cuts += [rng.randrange(DATA_OFFSET, min(size, used_end)) for _ in range(30)]
    for cut in cuts:
        for readonly in (True, False):
            copy = str(tmp_path / "cut.pfj")
            shutil.copyfile(j.path, copy)
            with open(copy, "r+b") as f:
                f.truncate(cut)
            try:
                opened = posfast.Journal.open(copy, readonly=readonly)
            except PosfastError:
                assert cut < DATA_OFFSET, cut          # only a lost header refuses to open
                continue
            with opened:
                rows = check_nothing_bad_returned(opened)
                assert rows["seq"].tolist() == list(range(1, len(rows) + 1))
                if cut < size:
                    assert not opened.verify().ok       # the truncation is reported
            for suffix in (".idx",):
                if os.path.exists(copy + suffix):
                    os.unlink(copy + suffix)


# ------------------------------------------------------------------ headers

@pytest.mark.parametrize("copy", [0, 1])
@pytest.mark.parametrize("where", [0, 9, 30, 45, 81, 124])
def test_one_damaged_header_copy_opens_with_the_other(make_journal, copy, where):
    j = build(make_journal, n=20)
    j.set_sync_watermark(7)
    j.close()
    flip_byte(j.path, copy * 4096 + where)
    with posfast.Journal.open(j.path) as again:
        assert again.journal_id == j.journal_id and again.sync_watermark == 7
        assert again.head_seq == 20 and again.verify().ok
        check_nothing_bad_returned(again)
        again.set_sync_watermark(9)     # format 2 writes the older copy: the damaged one
    copies = [posfast._core.Ring.decode_header(header_bytes(j.path, c)) for c in (0, 1)]
    assert max(copies, key=lambda c: c["generation"])["sync_watermark"] == 9
    assert copies[copy]["sync_watermark"] == 9      # healed


def test_both_header_copies_damaged_raise_corrupt_record_naming_the_file(make_journal):
    j = build(make_journal, n=5)
    j.close()
    flip_byte(j.path, 30)
    flip_byte(j.path, 4096 + 50)
    for readonly in (True, False):
        with pytest.raises(CorruptRecord, match=r"both header copies of %s" % j.path):
            posfast.Journal.open(j.path, readonly=readonly)


def test_header_of_a_newer_format_version_is_refused(make_journal):
    j = build(make_journal, n=3)
    j.close()
    for c in (0, 1):
        raw = bytearray(header_bytes(j.path, c))
        raw[8:12] = struct.pack("<I", 3)
        raw[252:256] = struct.pack("<I", _core.crc32c(bytes(raw[:252])))
        write_at(j.path, c * 4096, bytes(raw))
    with pytest.raises(FormatVersionError, match="format version 3"):
        posfast.Journal.open(j.path)


# ------------------------------------------------------------------ records

def test_bit_flip_anywhere_in_a_record_is_caught(make_journal):
    j = make_journal(capacity=64, max_payload=600)
    for s in range(1, 4):
        append_expected(j, [s])
    victim = j.append(terminal=3, kind="print", state="ok", payload=bytes(range(256)) + b"q" * 44)
    for s in range(victim + 1, victim + 4):
        j.append(terminal=4, kind="note", amount=s)
    span = record_span(j, victim)
    assert len(span) == 128 + 300
    for offset in span:
        flip_byte(j.path, offset, 0x10)
        assert j._ring.check(victim) != 0, offset
        assert_not_returned(j, victim)
        problem = assert_reported(j, victim)
        assert problem.slot == j._ring.slot_of(victim)
        flip_byte(j.path, offset, 0x10)
    assert j.verify().ok and j.get(victim).payload == bytes(range(256)) + b"q" * 44


@pytest.mark.parametrize("field_offset", [0, 4, 8, 16, 24, 40, 56, 112, 200])
def test_flipped_record_in_the_middle_is_reported_after_reopen(make_journal, field_offset):
    j = build(make_journal, n=40)
    victim = 17
    span = record_span(j, victim)
    slot = j._ring.slot_of(victim)
    j.close()
    flip_byte(j.path, span[field_offset % len(span)], 0x01)
    states = []
    for readonly in (True, False, False, True):
        with posfast.Journal.open(j.path, readonly=readonly) as again:
            states.append({k: v for k, v in state_of(again).items() if k != "problems"}
                          | {"reported": sorted(p.seq for p in again.verify().problems)})
            assert (again.oldest_seq, again.head_seq) == (1, 40)
            assert_not_returned(again, victim)
            problem = assert_reported(again, victim)
            assert problem.slot in (slot, None)
            rows = check_nothing_bad_returned(again)
            assert rows["seq"].tolist() == [s for s in range(1, 41) if s != victim]
            assert again.get(40).to_dict() == expected_dict(40, again.day_rule)
    assert all(state == states[0] for state in states)       # every open says the same
    assert states[0]["reported"] == [victim]


def test_damaged_record_stays_reported_as_the_journal_grows(make_journal):
    j = build(make_journal, n=30, capacity=512)
    flip_byte(j.path, record_span(j, 12)[60])
    drop_without_close(j)
    with posfast.Journal.open(j.path) as again:
        append_expected(again, range(31, 51))
        assert_reported(again, 12)
        assert_not_returned(again, 12)
        assert_index_matches_scan(again)
    with posfast.Journal.open(j.path) as again:
        assert again.head_seq == 50
        assert_reported(again, 12)
        check_nothing_bad_returned(again)


def test_stale_record_from_an_earlier_lap_is_never_returned(make_journal):
    j = make_journal(capacity=32, retention="overwrite", max_payload=600)
    for s in range(1, 33):
        j.append(terminal=1, kind="sale", amount=s)     # one slot each: seq s in slot s-1
    old_image = read_at(j.path, DATA_OFFSET + 9 * 128, 128)   # seq 10, first lap
    for s in range(33, 60):
        j.append(terminal=1, kind="sale", amount=s)
    assert j._ring.slot_of(42) == 9
    write_at(j.path, DATA_OFFSET + 9 * 128, old_image)        # the old lap's bytes come back
    assert_not_returned(j, 42)
    assert_reported(j, 42, 1, 5)                              # not a head here / stale
    with pytest.raises(KeyError):
        j.get(10)
    drop_without_close(j)
    for readonly in (True, False):
        with posfast.Journal.open(j.path, readonly=readonly) as again:
            assert again.head_seq == 59
            assert_not_returned(again, 42)
            assert_reported(again, 42)
            assert 10 not in again.query()["seq"].tolist()
            assert again.query()["amount"].tolist() == [s for s in range(again.oldest_seq, 60) if s != 42]


def test_stale_copy_of_the_same_position_from_another_journal_fails_its_crc(make_journal, tmp_path):
    a = make_journal(capacity=64)
    b = make_journal(path=str(tmp_path / "twin.pfj"), capacity=64, journal_id=uuid.uuid4())
    for j in (a, b):
        for s in range(1, 21):
            append_expected(j, [s])
    offset = DATA_OFFSET + a._ring.slot_of(8) * 128
    span = record_span(a, 8)
    assert record_span(b, 8) == span
    twin_bytes = [read_at(b.path, off, 1) for off in span]
    assert read_at(a.path, offset + 8, 104) == read_at(b.path, offset + 8, 104)   # same fields...
    for off, byte in zip(span, twin_bytes):
        write_at(a.path, off, byte)
    assert_not_returned(a, 8)                                                     # ...other journal
    assert_reported(a, 8, 2)


def recompute_crc(journal, seq):
    head = DATA_OFFSET + journal._ring.slot_of(seq) * journal.slot_size
    body = b"".join(read_at(journal.path, off, 1) for off in record_span(journal, seq)[4:])
    crc = _core.crc32c(body, _core.crc32c(journal.journal_id.bytes))
    assert crc == _core.crc32c(journal.journal_id.bytes + body)
    write_at(journal.path, head, struct.pack("<I", crc))


def test_edited_record_with_recomputed_crc_is_a_chain_break(make_journal):
    j = build(make_journal, n=30)
    head = DATA_OFFSET + j._ring.slot_of(12) * 128
    original = j.get(12).amount
    write_at(j.path, head + 56, struct.pack("<q", original + 100_00))     # amount edited
    recompute_crc(j, 12)
    assert j._ring.check(12) == 0                                         # the CRC passes...
    problem = assert_reported(j, 12, 6)                                   # ...the chain does not
    assert "hash chain" in problem.cause and problem.slot == j._ring.slot_of(12)
    j.close()
    with posfast.Journal.open(j.path, readonly=True) as again:
        problems = again.verify().problems
        assert [(p.seq, p.code) for p in problems] == [(12, 6)]


def test_edited_record_with_recomputed_crc_and_link_breaks_the_next_link(make_journal):
    j = build(make_journal, n=30)
    head = DATA_OFFSET + j._ring.slot_of(12) * 128
    write_at(j.path, head + 56, struct.pack("<q", 1))                     # amount edited
    prev = j.link(11)
    fields = expected_dict(12, j.day_rule)
    row = np.zeros(1, dtype=posfast.RECORD_DTYPE)
    for name in ("ts", "txn_id", "ref_seq", "terminal", "receipt_no", "operator", "currency",
                 "kind", "state", "method", "flags", "pan_last4", "auth_code", "rrn", "client_ref",
                 "day", "channel"):
        row[name] = fields[name]
    row["seq"], row["amount"] = 12, 1
    write_at(j.path, head + 112, posfast.chain_link(prev, row[0], fields["payload"],
                                                    order_ref=fields["order_ref"],
                                                    host_ref=fields["host_ref"]))
    recompute_crc(j, 12)
    assert j._ring.check(12) == 0 and j.get(12).amount == 1
    report = j.verify(check_index=False)
    assert [(p.seq, p.code) for p in report.problems] == [(13, 6)]       # the forger cannot fix 13..


def test_deleted_middle_record_is_reported(make_journal):
    j = build(make_journal, n=30)
    span = record_span(j, 15)
    slot = j._ring.slot_of(15)
    for off in span:
        write_at(j.path, off, b"\0")
    assert_not_returned(j, 15)
    assert_reported(j, 15, 1)
    drop_without_close(j)
    for readonly in (True, False, False):
        with posfast.Journal.open(j.path, readonly=readonly) as again:
            assert again.head_seq == 30
            problem = assert_reported(again, 15)
            assert problem.slot in (slot, None)
            assert_not_returned(again, 15)
            rows = check_nothing_bad_returned(again)
            assert rows["seq"].tolist() == [s for s in range(1, 31) if s != 15]


def test_deleted_oldest_record_is_reported(make_journal):
    j = build(make_journal, n=30)
    for off in record_span(j, 1):
        write_at(j.path, off, b"\0")
    j.close()
    os.unlink(j.path + ".idx")
    with posfast.Journal.open(j.path) as again:
        report = again.verify()
        assert not report.ok
        assert any(p.seq == 1 for p in report.problems), report
        with pytest.raises((CorruptRecord, KeyError)):
            again.get(1)
        check_nothing_bad_returned(again)


def test_deleted_oldest_unsynced_record_of_a_wrapped_ring_is_reported(make_journal):
    """Retention 'synced': a record above the watermark cannot have been evicted, so a missing
    oldest record is damage, even after the ring wrapped."""
    j = make_journal(capacity=16, retention="synced")
    for s in range(1, 17):
        j.append(terminal=1, kind="sale", amount=s)
    j.set_sync_watermark(8)
    for s in range(17, 25):
        j.append(terminal=1, kind="sale", amount=s)
    assert (j.oldest_seq, j.head_seq) == (9, 24)
    for off in record_span(j, 9):
        write_at(j.path, off, b"\0")                 # the oldest, not acknowledged: must be reported
    j.close()
    os.unlink(j.path + ".idx")
    with posfast.Journal.open(j.path) as again:
        report = again.verify()
        assert any(p.seq == 9 for p in report.problems), report
        with pytest.raises((CorruptRecord, KeyError)):
            again.get(9)
        assert again.query()["amount"].tolist() == list(range(10, 25))


def test_tail_tear_and_mid_file_damage_are_told_apart(make_journal):
    j = build(make_journal, n=30)
    mid, tail = 12, 30
    flip_byte(j.path, record_span(j, mid)[70])
    flip_byte(j.path, record_span(j, tail)[70])
    drop_without_close(j)
    with posfast.Journal.open(j.path) as again:
        # the newest record was never acknowledged as far as recovery can tell: dropped
        assert again.head_seq == 29
        with pytest.raises(KeyError):
            again.get(30)
        # the older one is damage: reported, skipped, later records still returned
        assert_reported(again, mid)
        assert_not_returned(again, mid)
        assert again.get(mid + 1).to_dict() == expected_dict(mid + 1, again.day_rule)
        assert again.query()["seq"].tolist() == [s for s in range(1, 30) if s != mid]
        # the journal carries on; the dropped seq is written anew
        append_expected(again, [30])
        assert again.get(30).to_dict() == expected_dict(30, again.day_rule)


def test_tear_in_the_newest_group_is_listed_as_torn(make_journal):
    j = build(make_journal, n=20)
    append_expected(j, range(21, 27))                 # newest commit group: 21..26
    for off in record_span(j, 23)[:128]:
        write_at(j.path, off, b"\xff")
    drop_without_close(j)
    with posfast.Journal.open(j.path) as again:
        assert again.head_seq == 22
        assert [s for s, _ in again._ring.torn] == [24, 25, 26]
        assert again.verify().ok
        check_nothing_bad_returned(again)


# ------------------------------------------------------------------ garbage files

def test_garbage_files_raise_posfast_errors_only(tmp_path):
    rng = np.random.default_rng(11)
    cases = {
        "empty": b"",
        "tiny": b"POSF",
        "random": rng.bytes(8192 + 128 * 64),
        "magic-only": b"POSFJRNL" + rng.bytes(20_000),
        "zeros": bytes(50_000),
    }
    for name, data in cases.items():
        path = str(tmp_path / (name + ".pfj"))
        with open(path, "wb") as f:
            f.write(data)
        for readonly in (True, False):
            with pytest.raises((FormatVersionError, CorruptRecord), match=path.replace(".", r"\.")):
                posfast.Journal.open(path, readonly=readonly)


def forged_header(slot_size, max_payload, capacity, generation=1):
    return _core.Ring.encode_header(generation, slot_size, max_payload, capacity, uuid.uuid4().bytes,
                                    0, 0, 0, 0, 0)


@pytest.mark.parametrize("slot_size, max_payload, capacity", [
    (128, 600, 2**62), (128, 600, 2**40), (128, 600, (1 << 40) // 128), (128, 600, 10**9),
    (64, 600, 100), (1 << 20, 600, 100), (128, 70_000, 100), (128, 600, 0), (128, 600, 1)])
def test_header_claiming_absurd_sizes_is_refused_without_allocating(tmp_path, slot_size,
                                                                     max_payload, capacity):
    path = str(tmp_path / "absurd.pfj")
    raw = forged_header(slot_size, max_payload, capacity)
    with open(path, "wb") as f:
        for c in (0, 1):
            f.seek(c * 4096)
            f.write(raw)
        f.truncate(8192 + 128 * 100)
    for readonly in (True, False):
        with pytest.raises(CorruptRecord, match=r"absurd\.pfj"):
            posfast.Journal.open(path, readonly=readonly)
    assert os.path.getsize(path) == 8192 + 128 * 100       # never extended to the claimed size


def test_valid_header_over_random_slots_returns_nothing_as_good(tmp_path):
    path = str(tmp_path / "noise.pfj")
    rng = np.random.default_rng(5)
    with open(path, "wb") as f:
        raw = forged_header(128, 600, 256)
        f.write(raw + bytes(4096 - 128) + raw + bytes(4096 - 128))
        f.write(rng.bytes(256 * 128))
    for readonly in (True, False):
        with posfast.Journal.open(path, readonly=readonly) as j:
            assert j.head_seq == 0 and len(j.query()) == 0 and j.verify().ok


def test_verify_blames_the_damaged_record_not_the_index(make_journal):
    j = build(make_journal, n=30)
    flip_byte(j.path, record_span(j, 9)[70])
    report = j.verify()                              # index check included
    assert [(p.seq, p.code) for p in report.problems] == [(9, 2)]
    assert "checksum mismatch" in report.problems[0].cause
    assert_index_matches_scan(j)


def test_lost_unsynced_oldest_record_is_reported_on_every_open(make_journal):
    """Retention 'synced': the index file saved after the first open must not make the
    next opens forget that seq 1, never acknowledged, is lost."""
    j = build(make_journal, n=10, capacity=64)
    flip_byte(j.path, record_span(j, 1)[20])
    j.close()
    os.unlink(j.path + ".idx")
    for _ in range(3):
        with posfast.Journal.open(j.path) as again:
            assert again.oldest_seq == 2
            problems = again.verify().problems
            assert [(p.seq, "lost" in p.cause) for p in problems] == [(1, True)]
