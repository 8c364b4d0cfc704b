"""Format v1 golden file: a journal written once (tests/data/make_golden.py) must keep
opening with every field intact, and its bytes must keep meaning what pf_format.h
says they mean (decoded here with struct, independently of the core)."""
import hashlib
import json
import os
import shutil
import struct
import uuid

import pytest

import posfast
from posfast import _core

from conftest import data_script, file_bytes

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
GOLDEN = os.path.join(DATA, "golden_v1.pfj")
GOLDEN_SHA256 = "95e85fc80c72a04a4c2711b4b4482b861e5b8daa09a56c5399b59be8027fbc2c"
TEXT = ("client_ref", "pan_last4", "auth_code", "rrn")


@pytest.fixture(scope="module")
def want():
    with open(os.path.join(DATA, "golden_v1.json")) as f:
        return json.load(f)


@pytest.fixture
def golden_copy(tmp_path):
    path = str(tmp_path / "golden_v1.pfj")
    shutil.copyfile(GOLDEN, path)
    return path


def business_day(ts, offset_min=480, start_min=240):
    return (ts + (offset_min - start_min) * 60_000_000) // 86_400_000_000


def test_golden_file_is_the_committed_one():
    assert hashlib.sha256(file_bytes(GOLDEN)).hexdigest() == GOLDEN_SHA256
    assert os.path.getsize(GOLDEN) == 8192 + 64 * 128


def test_every_record_reads_back_field_by_field(golden_copy, want):
    with posfast.Journal.open(golden_copy, readonly=True) as j:
        assert j.journal_id == uuid.UUID(want["journal_id"]) == uuid.UUID("0badc0de-f00d-4e11-9a55-7e57da7a0001")
        assert (j.capacity, j.slot_size, j.max_payload) == (64, 128, 1024)
        assert (j.head_seq, j.oldest_seq, j.sync_watermark) == (6, 1, 3)
        assert j.created_us == want["created_us"] == 1_795_000_000_000_000
        assert j.retention == "synced"
        assert (j.day_rule.offset_minutes, j.day_rule.start_minutes) == (480, 240)
        assert len(want["records"]) == 6
        for expected in want["records"]:
            seq = expected["seq"]
            rec = j.get(seq)
            got = rec.to_dict()
            for name, value in expected.items():
                if name in ("payload_hex", "link_hex", "slot"):
                    continue
                if name in TEXT:
                    value = value.encode("ascii")
                assert got[name] == value, (seq, name)
            assert rec.payload == bytes.fromhex(expected["payload_hex"])
            assert rec.link == bytes.fromhex(expected["link_hex"])
            assert j._ring.slot_of(seq) == expected["slot"]
            assert rec.day == business_day(rec.ts)
        # the documented content, spelled out
        sale = j.get(2)
        assert (sale.kind, sale.state, sale.amount, sale.currency, sale.pan_last4, sale.auth_code,
                sale.rrn) == (1, 2, 3100, 156, b"4242", b"A1B2C3", b"632400000001")
        assert j.get(3).payload.startswith(b"SHOP 42  TILL 3\n")
        spanning = j.get(4)
        assert len(spanning.payload) == 256 + 45 and spanning.amount == -1200
        # seq 5 is 02:00 local on the 23rd: the 22nd's business day (+08:00, starts 04:00)
        assert j.query(day="2026-11-22")["seq"].tolist() == [1, 2, 3, 4, 5]
        assert j.query(day="2026-11-23")["seq"].tolist() == [6]
        assert j.query(terminal=5)["seq"].tolist() == [5, 6]
        report = j.verify()
        assert report.ok and report.checked == 6
    assert hashlib.sha256(file_bytes(GOLDEN)).hexdigest() == GOLDEN_SHA256    # the original untouched


HEADER = struct.Struct("<8sIIQIIQ16sqiiIIQ")     # magic .. sync watermark, offsets 0..87


def test_raw_header_copies_decode_little_endian(golden_copy, want):
    data = file_bytes(golden_copy)
    generations = []
    for copy in (0, 1):
        block = data[copy * 4096:copy * 4096 + 128]
        (magic, version, header_size, generation, slot_size, max_payload, capacity, jid, created,
         offset_min, start_min, retention, flags, watermark) = HEADER.unpack_from(block, 0)
        assert magic == b"POSFJRNL" and version == 1 and header_size == 128
        assert (slot_size, max_payload, capacity) == (128, 1024, 64)
        assert uuid.UUID(bytes=jid) == uuid.UUID(want["journal_id"])
        assert created == 1_795_000_000_000_000
        assert (offset_min, start_min, retention, flags) == (480, 240, 0, 0)
        assert watermark == 3
        assert block[88:124] == bytes(36)                             # reserved
        assert struct.unpack_from("<I", block, 124)[0] == _core.crc32c(block[:124])
        assert data[copy * 4096 + 128:(copy + 1) * 4096] == bytes(4096 - 128)
        generations.append(generation)
    assert generations == [2, 2]             # created as 0 and 1; the watermark write made both 2


RECORD_HEAD = struct.Struct("<IHHQQqIBBBBH4s6sIqQQI12s16s16s")        # pf_format.h PFR_*, 128 bytes


def test_raw_records_decode_at_the_documented_offsets(golden_copy, want):
    assert RECORD_HEAD.size == 128
    data = file_bytes(golden_copy)
    jid = uuid.UUID(want["journal_id"]).bytes
    prev_link = hashlib.sha256(b"posfast-chain-v1" + jid).digest()[:16]
    position = 1
    for expected in want["records"]:
        offset = 8192 + expected["slot"] * 128
        (crc, payload_len, group_off, seq, pos, ts, terminal, kind, state, method, flags, currency,
         pan_last4, auth_code, receipt_no, amount, txn_id, ref_seq, operator, rrn, client_ref,
         link) = RECORD_HEAD.unpack_from(data, offset)
        payload = data[offset + 128:offset + 128 + payload_len]
        assert seq == expected["seq"] and pos == position == expected["slot"] + 1
        assert group_off == 0                                         # fsync: one record per group
        assert (ts, terminal, kind, state, method, flags, currency, amount, txn_id, ref_seq,
                receipt_no, operator) == tuple(expected[k] for k in (
                    "ts", "terminal", "kind", "state", "method", "flags", "currency", "amount",
                    "txn_id", "ref_seq", "receipt_no", "operator"))
        for name, value in (("pan_last4", pan_last4), ("auth_code", auth_code), ("rrn", rrn),
                            ("client_ref", client_ref)):
            assert value.rstrip(b"\0") == expected[name].encode("ascii")
        assert payload.hex() == expected["payload_hex"]
        # CRC32C over the journal id and bytes [4, 128 + payload_len)
        assert crc == _core.crc32c(jid + data[offset + 4:offset + 128 + payload_len])
        # link = SHA-256(previous link || seq || bytes [24, 112) || payload)[:16]
        chained = hashlib.sha256(prev_link + data[offset + 8:offset + 16] +
                                 data[offset + 24:offset + 112] + payload).digest()[:16]
        assert link == chained == bytes.fromhex(expected["link_hex"])
        # the rest of the record's last slot is zero
        slots = -(-(128 + payload_len) // 128)
        assert data[offset + 128 + payload_len:offset + slots * 128] == bytes(slots * 128 - 128 - payload_len)
        prev_link = link
        position += slots
    assert data[8192 + (position - 1) * 128:] == bytes(len(data) - 8192 - (position - 1) * 128)


def test_make_golden_reproduces_the_file(tmp_path, want):
    module = data_script("make_golden")
    path = str(tmp_path / "again.pfj")
    assert module.build(path) == want
    assert file_bytes(path) == file_bytes(GOLDEN)


def test_a_writable_copy_carries_on(golden_copy):
    with posfast.Journal.open(golden_copy) as j:
        seq = j.append(terminal=3, kind="sale", state="approved", amount=100, currency=156)
        assert seq == 7 and j.get(6).amount == 50_000
        j.set_sync_watermark(6)
    with posfast.Journal.open(golden_copy, readonly=True) as j:
        assert j.head_seq == 7 and j.sync_watermark == 6 and j.verify().ok
    assert hashlib.sha256(file_bytes(GOLDEN)).hexdigest() == GOLDEN_SHA256
