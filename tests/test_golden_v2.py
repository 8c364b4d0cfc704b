"""Format 2 golden file: a journal written once (tests/data/make_golden_v2.py) must keep
opening with every field intact, and its bytes must keep meaning what FORMAT.md and
pf_format.h say they mean (decoded here with struct, independently of the core)."""
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
GOLDEN = os.path.join(DATA, "golden_v2.pfj")
GOLDEN_SHA256 = "5c9d9d2707a84b53e13c101847e296e4e8c9a17db47a0ceab8e0cd5d66065411"
TEXT = ("client_ref", "pan_last4", "auth_code", "rrn")
SKIP = ("payload_hex", "link_hex", "slot", "position")


@pytest.fixture(scope="module")
def want():
    with open(os.path.join(DATA, "golden_v2.json")) as f:
        return json.load(f)


@pytest.fixture
def golden_copy(tmp_path):
    path = str(tmp_path / "golden_v2.pfj")
    shutil.copyfile(GOLDEN, path)
    return path


def test_golden_file_is_the_committed_one():
    assert hashlib.sha256(file_bytes(GOLDEN)).hexdigest() == GOLDEN_SHA256
    assert os.path.getsize(GOLDEN) == 8192 + 32 * 128


def test_every_record_reads_back_field_by_field(golden_copy, want):
    with posfast.Journal.open(golden_copy, readonly=True) as j:
        assert j.journal_id == uuid.UUID(want["journal_id"]) == uuid.UUID("0badc0de-f00d-4e11-9a55-7e57da7a0002")
        assert (j.capacity, j.slot_size, j.max_payload) == (32, 128, 1024)
        assert (j.head_seq, j.oldest_seq, j.sync_watermark) == (6, 1, 3)
        assert j.created_us == want["created_us"] == 1_795_000_000_000_000
        assert j.retention == "synced"
        assert j.day_rule == posfast.DayRule(tz="Asia/Shanghai", starts_at="04:00")
        assert (j.day_rule.offset_minutes, j.day_rule.start_minutes) == (480, 240)
        assert len(want["records"]) == 6
        for expected in want["records"]:
            seq = expected["seq"]
            rec = j.get(seq)
            got = rec.to_dict()
            assert set(got) == set(expected) - set(SKIP) | {"payload"}
            for name, value in expected.items():
                if name in SKIP:
                    continue
                if name in TEXT:
                    value = value.encode("ascii")
                assert got[name] == value, (seq, name)
            assert rec.payload == bytes.fromhex(expected["payload_hex"])
            assert rec.link == bytes.fromhex(expected["link_hex"])
            assert j._ring.slot_of(seq) == expected["slot"]
            assert j._ring.position_of(seq) == expected["position"]
            assert rec.day == j.day_rule.day_number(rec.ts)
        # the documented content, spelled out
        sale = j.get(2)
        assert (sale.kind, sale.state, sale.amount, sale.currency, sale.channel, sale.client_ref,
                sale.order_ref, sale.host_ref, sale.rrn) == (
                    1, 2, 3100, 156, "wechat", b"pos3-0001", "ORD-20261122-0001",
                    "4200002026112200000000000001", b"632400000001")
        assert j.get(3).payload.startswith(b"SHOP 42  TILL 3\n")
        refund = j.get(4)
        assert (refund.channel, refund.amount, refund.ref_seq, len(refund.payload)) == ("alipay", 1200, 2, 270)
        assert j.get(6).channel == "unionpay" and j.get(6).host_ref == "UP-63240000000002"
        assert [expected["position"] for expected in want["records"]] == [1, 3, 5, 7, 11, 13]
        # seq 5 is 02:00 local on the 23rd: the 22nd's business day (Shanghai, starts 04:00)
        assert j.query(day="2026-11-22")["seq"].tolist() == [1, 2, 3, 4, 5]
        assert j.query(day="2026-11-23")["seq"].tolist() == [6]
        assert j.query(terminal=5)["seq"].tolist() == [5, 6]
        report = j.verify()
        assert report.ok and report.checked == 6
    assert hashlib.sha256(file_bytes(GOLDEN)).hexdigest() == GOLDEN_SHA256    # the original untouched


HEADER = struct.Struct("<8sIIQIIQ16sqiiIIQ32sQQQ16sII16sQ")   # FORMAT.md header, offsets 0..191


def test_raw_header_copies_decode_little_endian(golden_copy, want):
    assert HEADER.size == 192
    data = file_bytes(golden_copy)
    copies = []
    for copy in (0, 1):
        block = data[copy * 4096:copy * 4096 + 256]
        fields = HEADER.unpack_from(block, 0)
        (magic, version, header_size, generation, slot_size, max_payload, capacity, jid, created,
         offset_min, start_min, retention, flags, watermark, tz, ckpt_seq, ckpt_pos, ckpt_window,
         ckpt_link, clean, flags2, index_digest, index_head) = fields
        assert magic == b"POSFJRNL" and version == 2 and header_size == 256
        assert (slot_size, max_payload, capacity) == (128, 1024, 32)
        assert uuid.UUID(bytes=jid) == uuid.UUID(want["journal_id"])
        assert created == 1_795_000_000_000_000
        assert (offset_min, start_min, retention, flags, flags2) == (480, 240, 0, 0, 0)
        assert tz == b"Asia/Shanghai".ljust(32, b"\0")
        assert ckpt_window == 32                                       # min(65536, capacity)
        assert block[192:252] == bytes(60)                             # reserved
        assert struct.unpack_from("<I", block, 252)[0] == _core.crc32c(block[:252])
        assert data[copy * 4096 + 256:(copy + 1) * 4096] == bytes(4096 - 256)
        assert generation % 2 == copy           # v2 writes one copy, alternating
        copies.append((generation, watermark, ckpt_seq, ckpt_pos, ckpt_link, clean, index_digest,
                       index_head))
    newest = max(copies)
    # the newest copy: closed cleanly after seq 6, whose record ends before position 15
    assert newest[:4] == (4, 3, 6, 15) and newest[5] == 1 and newest[7] == 6
    assert newest[4] == bytes.fromhex(want["records"][-1]["link_hex"])
    assert newest[6] != bytes(16)            # names the index saved at close (removed since)
    assert copies[1][:2] == (3, 3)           # the watermark write


RECORD_HEAD = struct.Struct("<IHHQQqIBBBBH4s6sIqQQI12siH10s16s")     # format 2 record head, 128 bytes


def ext_fields(ext):
    out, i, last = {}, 0, 0
    while i < len(ext):
        tag, n = ext[i], ext[i + 1]
        assert last < tag <= 3 and n > 0
        out[tag] = ext[i + 2:i + 2 + n]
        last, i = tag, i + 2 + n
    assert i == len(ext)
    return out


def test_raw_records_decode_at_the_documented_offsets(golden_copy, want):
    assert RECORD_HEAD.size == 128
    data = file_bytes(golden_copy)
    jid = uuid.UUID(want["journal_id"]).bytes
    prev_link = hashlib.sha256(b"posfast-chain-v1" + jid).digest()[:16]
    position = 1
    for expected in want["records"]:
        offset = 8192 + (position - 1) % 32 * 128
        (crc, payload_len, group_off, seq, pos, ts, terminal, kind, state, method, flags, currency,
         pan_last4, auth_code, receipt_no, amount, txn_id, ref_seq, operator, rrn, day, ext_len,
         channel, link) = RECORD_HEAD.unpack_from(data, offset)
        body = data[offset + 128:offset + 128 + ext_len + payload_len]
        ext, payload = body[:ext_len], body[ext_len:]
        assert seq == expected["seq"] and pos == position == expected["position"]
        assert group_off == 0                                         # fsync: one record per group
        assert (ts, day, terminal, kind, state, method, flags, currency, amount, txn_id, ref_seq,
                receipt_no, operator) == tuple(expected[k] for k in (
                    "ts", "day", "terminal", "kind", "state", "method", "flags", "currency",
                    "amount", "txn_id", "ref_seq", "receipt_no", "operator"))
        for name, value in (("pan_last4", pan_last4), ("auth_code", auth_code), ("rrn", rrn),
                            ("channel", channel)):
            assert value.rstrip(b"\0") == expected[name].encode("ascii")
        refs = ext_fields(ext)
        assert refs.get(1, b"") == expected["client_ref"].encode()
        assert refs.get(2, b"") == expected["order_ref"].encode()
        assert refs.get(3, b"") == expected["host_ref"].encode()
        assert payload.hex() == expected["payload_hex"]
        # CRC32C over the journal id and bytes [4, 128 + ext_len + payload_len)
        assert crc == _core.crc32c(jid + data[offset + 4:offset + 128 + len(body)])
        # link = SHA-256(previous link || seq || bytes [24, 112) || extension || payload)[:16]
        chained = hashlib.sha256(prev_link + data[offset + 8:offset + 16] +
                                 data[offset + 24:offset + 112] + body).digest()[:16]
        assert link == chained == bytes.fromhex(expected["link_hex"])
        # the rest of the record's last slot is zero
        slots = -(-(128 + len(body)) // 128)
        assert data[offset + 128 + len(body):offset + slots * 128] == bytes(slots * 128 - 128 - len(body))
        prev_link = link
        position += slots
    assert data[8192 + (position - 1) * 128:] == bytes(len(data) - 8192 - (position - 1) * 128)


def test_make_golden_v2_reproduces_the_file(tmp_path, want):
    module = data_script("make_golden_v2")
    path = str(tmp_path / "again.pfj")
    assert module.build(path) == want
    assert file_bytes(path) == file_bytes(GOLDEN)
    assert not os.path.exists(path + ".idx")


def test_a_writable_copy_carries_on(golden_copy):
    with posfast.Journal.open(golden_copy) as j:
        seq = j.append(terminal=3, kind="sale", state="approved", amount=100, currency=156,
                       channel="wechat", order_ref="ORD-20261123-0009")
        assert seq == 7 and j.get(6).amount == 50_000 and j.get(7).order_ref == "ORD-20261123-0009"
        j.set_sync_watermark(6)
    with posfast.Journal.open(golden_copy, readonly=True) as j:
        assert j.head_seq == 7 and j.sync_watermark == 6 and j.verify().ok
    assert hashlib.sha256(file_bytes(GOLDEN)).hexdigest() == GOLDEN_SHA256
