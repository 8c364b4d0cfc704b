"""FORMAT.md is enough to read a journal: tests/c/pf_reader.c, a reader written in C from
FORMAT.md alone (only the CRC32C and SHA-256 primitives are posfast's), must read every
record of the golden files exactly as posfast does, check every CRC and link, and notice
when a byte of a record changes."""
import json
import os
import shutil
import struct
import subprocess
import uuid

import pytest

import posfast
from posfast import _core

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
DATA = os.path.join(HERE, "data")
GOLDEN = {1: os.path.join(DATA, "golden_v1.pfj"), 2: os.path.join(DATA, "golden_v2.pfj")}
INT_FIELDS = ("seq", "ts", "day", "terminal", "kind", "state", "method", "flags", "currency",
              "amount", "txn_id", "ref_seq", "receipt_no", "operator")
BYTES_FIELDS = ("client_ref", "pan_last4", "auth_code", "rrn")
STR_FIELDS = ("channel", "order_ref", "host_ref")


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: the C reader of FORMAT.md (tests/c/pf_reader.c) "
                    "cannot be compiled")
    out = str(tmp_path_factory.mktemp("reader") / "pf_reader")
    probe = out + "-probe.c"
    with open(probe, "w") as f:
        f.write("int main(void) { return 0; }\n")
    tried = subprocess.run([gcc, probe, "-o", out + "-probe"], capture_output=True, text=True)
    if tried.returncode != 0:
        # (.ci/wheel-check runs the suite where every compiler is a stub, as on a terminal)
        pytest.skip("no working C compiler here (%s): the C reader of FORMAT.md cannot be built"
                    % (tried.stderr.strip().splitlines() or ["gcc failed"])[0])
    subprocess.run([gcc, "-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", "-Werror",
                    "-I" + SRC, os.path.join(HERE, "c", "pf_reader.c"),
                    os.path.join(SRC, "pf_crc32c.c"), os.path.join(SRC, "pf_sha256.c"),
                    "-o", out], check=True, capture_output=True, text=True)
    return out


def run(reader, path):
    """(records by seq, header, exit status) as the C reader reports them."""
    proc = subprocess.run([reader, path], capture_output=True)
    assert proc.returncode in (0, 1), proc.stderr
    lines = proc.stdout.decode("utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    header = json.loads(proc.stderr.decode().splitlines()[0])
    return {r["seq"]: r for r in records}, header, proc.returncode


def assert_matches_posfast(path, got, first_link_checked=True):
    with posfast.Journal.open(path, readonly=True) as j:
        assert sorted(got) == list(range(j.oldest_seq, j.head_seq + 1))
        for seq in range(j.oldest_seq, j.head_seq + 1):
            rec, c = j.get(seq), got[seq]
            for name in INT_FIELDS:
                assert c[name] == getattr(rec, name), (seq, name)
            for name in BYTES_FIELDS:
                assert c[name].encode("utf-8") == getattr(rec, name), (seq, name)
            for name in STR_FIELDS:
                assert c[name] == getattr(rec, name), (seq, name)
            assert bytes.fromhex(c["payload"]) == rec.payload, seq
            assert bytes.fromhex(c["link"]) == rec.link, seq
            assert c["pos"] == j._ring.position_of(seq) and c["slot"] == j._ring.slot_of(seq)
            assert c["crc_ok"] is True and c["ext_ok"] is True, seq
            if seq == j.oldest_seq and not first_link_checked:
                assert c["link_ok"] is None          # no record before it to chain from
            else:
                assert c["link_ok"] is True, seq


@pytest.mark.parametrize("version", [1, 2])
def test_reads_the_golden_files_as_posfast_does(reader, version, tmp_path):
    path = str(tmp_path / "golden.pfj")
    shutil.copyfile(GOLDEN[version], path)
    got, header, status = run(reader, path)
    assert status == 0 and len(got) == 6
    assert header["version"] == version and header["copy"] == header["generation"] % 2
    assert (header["day_offset_min"], header["day_start_min"]) == (480, 240)
    assert header["tz"] == ("Asia/Shanghai" if version == 2 else "")
    assert_matches_posfast(path, got)


def record_offset(path, seq):
    with posfast.Journal.open(path, readonly=True) as j:
        return 8192 + j._ring.slot_of(seq) * j.slot_size, j.journal_id.bytes


@pytest.mark.parametrize("version", [1, 2])
def test_a_changed_amount_fails_the_crc_and_then_the_chain(reader, version, tmp_path):
    path = str(tmp_path / "golden.pfj")
    shutil.copyfile(GOLDEN[version], path)
    offset, jid = record_offset(path, 4)
    with open(path, "r+b") as f:
        f.seek(offset)
        head = bytearray(f.read(128))
        body_len = struct.unpack_from("<H", head, 4)[0] + (
            struct.unpack_from("<H", head, 100)[0] if version == 2 else 0)
        f.seek(offset + 56)                      # amount, i64 at 56
        f.write(bytes([head[56] ^ 0x01]))
    got, _, status = run(reader, path)
    assert status == 1 and len(got) == 6         # the walk goes on past the damaged record
    assert got[4]["crc_ok"] is False and got[4]["amount"] != 1200 * (1 if version == 2 else -1)
    assert [seq for seq, r in got.items() if not r["crc_ok"]] == [4]
    with posfast.Journal.open(path, readonly=True) as j:
        assert [p.seq for p in j.verify().problems] == [4]
    # recompute the CRC as an editor would: the CRC passes, the chain does not
    with open(path, "r+b") as f:
        f.seek(offset)
        record = f.read(128 + body_len)
        f.seek(offset)
        f.write(struct.pack("<I", _core.crc32c(jid + record[4:])))
    got, _, status = run(reader, path)
    assert status == 1 and all(r["crc_ok"] for r in got.values())
    assert [seq for seq, r in got.items() if not r["link_ok"]] == [4]   # seq 5 chains from 4's link
    with posfast.Journal.open(path, readonly=True) as j:
        assert not j.verify().ok


def test_a_damaged_newest_header_copy_falls_back_to_the_other(reader, tmp_path):
    path = str(tmp_path / "golden.pfj")
    shutil.copyfile(GOLDEN[2], path)
    _, header, _ = run(reader, path)
    newest = header["copy"]
    with open(path, "r+b") as f:
        f.seek(newest * 4096 + 40)               # a byte of the journal id
        byte = f.read(1)
        f.seek(newest * 4096 + 40)
        f.write(bytes([byte[0] ^ 0xFF]))
    got, header, status = run(reader, path)
    assert header["copy"] == 1 - newest and header["generation"] == 3 and status == 0
    assert_matches_posfast(path, got)


def test_a_wrapped_ring_reads_from_its_oldest_record(reader, tmp_path):
    path = str(tmp_path / "wrapped.pfj")
    with posfast.Journal.create(path, capacity=8, slot_size=128, max_payload=1024,
                                retention="overwrite", journal_id=uuid.UUID(int=7),
                                day_rule=posfast.DayRule(tz="Asia/Shanghai",
                                                         starts_at="04:00")) as j:
        j.append(terminal=1, kind="note", state="approved")            # one slot
        for i in range(1, 8):                                            # two slots each
            j.append(payload=bytes([i]) * 40, terminal=1, kind="sale", state="approved",
                     amount=100 + i, currency=156, channel="wechat", order_ref="ORD-%04d" % i)
        spans_end = []
        for s in range(j.oldest_seq, j.head_seq + 1):
            rec = j.get(s)
            body = len(_core.encode_ext(rec.client_ref, rec.order_ref, rec.host_ref)) + len(rec.payload)
            if j._ring.slot_of(s) + -(-(128 + body) // 128) > 8:
                spans_end.append(s)
        assert spans_end, "no record spans the ring end"
        assert j.oldest_seq > 1
    got, header, status = run(reader, path)
    assert status == 0
    assert_matches_posfast(path, got, first_link_checked=False)
