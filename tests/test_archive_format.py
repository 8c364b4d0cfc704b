"""Archive format versions: golden archives of format 1 (posfast 0.1) and format 2 read
back record for record, verify clean, and keep working when new segments join them;
format 2 keeps a payment record without payload in a few bytes."""
import json
import os
import shutil

import numpy as np
import pytest

from posfast import Journal
from posfast import archive as A
from posfast.archive import segment_info
from posfast.records import DayRule

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
RULE = DayRule(utc_offset="+08:00", starts_at="04:00")


def _copy(tmp_path, version):
    src = os.path.join(DATA, "golden_archive_v%d" % version)
    dst = str(tmp_path / ("v%d" % version))
    shutil.copytree(src, dst)
    with open(os.path.join(src, "golden.json")) as f:
        return os.path.join(dst, "till.pfj"), json.load(f)


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _check(j, golden, grown=False):
    archived = 0
    for want in golden["records"]:
        rec = j.get(want["seq"])
        archived += rec.archived
        assert (rec.amount, rec.terminal, rec.day, rec.payload.hex(), rec.link.hex(),
                int(rec.state)) == (want["amount"], want["terminal"], want["day"],
                                    want["payload_hex"], want["link_hex"], want["state"]), want["seq"]
        assert rec.archived == (want["archived"] or grown), want["seq"]
        assert (_text(rec.rrn), _text(rec.client_ref)) == (want["rrn"], want["client_ref"])
        if rec.archived and golden["archive_version"] >= 2:
            assert (_text(rec.order_ref), _text(rec.host_ref)) == (want["order_ref"], want["host_ref"])
    return archived


@pytest.mark.parametrize("version", [1, 2])
def test_golden_archive_reads_and_verifies(tmp_path, version):
    path, golden = _copy(tmp_path, version)
    names = [n for n in os.listdir(path + ".archive") if n.endswith(".pfa")]
    assert {segment_info(os.path.join(path + ".archive", n))["version"] for n in names} == {version}
    with Journal.open(path, readonly=True) as j:
        assert j.oldest_seq == golden["oldest_seq"]
        assert _check(j, golden) == golden["oldest_seq"] - 1
        report = j.verify()
        assert report.ok, str(report)


@pytest.mark.parametrize("version", [1, 2])
def test_golden_archive_grows_in_the_current_format(tmp_path, version):
    """A writer opens an old archive: its segments stay as they are, new ones are format 2,
    the chain runs across both, everything old still reads."""
    path, golden = _copy(tmp_path, version)
    with Journal.open(path, durability="none") as j:
        before = set(os.listdir(path + ".archive"))
        start = RULE.day_start_us(20_410) + 5 * 3_600_000_000
        for k in range(150):
            j.append(terminal=2, kind="sale", state="approved", amount=7 + k, currency=156,
                     ts=start + k * 1_000_000, payload=b"receipt %d" % k)
            j.set_sync_watermark(j.head_seq)
        new = sorted(n for n in set(os.listdir(path + ".archive")) - before if n.endswith(".pfa"))
        assert new and {segment_info(os.path.join(path + ".archive", n))["version"] for n in new} == {2}
        report = j.verify()
        assert report.ok, str(report)
        _check(j, golden, grown=True)
    with Journal.open(path, readonly=True) as j:
        assert j.verify().ok
        assert j.get(golden["records"][-1]["seq"] + 1).amount == 7


def test_damaged_dictionary_is_reported(tmp_path):
    path, golden = _copy(tmp_path, 2)
    dicts = [n for n in os.listdir(path + ".archive") if n.startswith("dict-")]
    assert len(dicts) == 1
    with open(os.path.join(path + ".archive", dicts[0]), "r+b") as f:
        f.seek(40)
        f.write(b"\xff\xff")
    with Journal.open(path, readonly=True) as j:
        report = j.verify()
        assert any("dictionary" in p.cause and "damaged" in p.cause for p in report.problems), str(report)
        with_payload = next(r for r in golden["records"] if r["archived"] and r["payload_hex"])
        with pytest.raises(posfast_corrupt()):
            j.get(with_payload["seq"])


def posfast_corrupt():
    from posfast import CorruptRecord
    return CorruptRecord


@pytest.mark.parametrize("rows_kind", ["plain", "odd"])
def test_columns_round_trip_any_values(rows_kind):
    """The column transforms fall back to raw bytes for values they cannot carry (text that
    is not all digits, receipt numbers that jump, refs above the seq): nothing changes."""
    from posfast import RECORD_DTYPE
    rng = np.random.default_rng(5)
    n = 300
    rows = np.zeros(n, RECORD_DTYPE)
    rows["seq"] = np.arange(1000, 1000 + n)
    rows["ts"] = np.cumsum(rng.integers(0, 10**7, n)) + 1_700_000_000_000_000
    rows["terminal"] = rng.integers(1, 5, n)
    rows["receipt_no"] = np.arange(n) // 4 + 1
    rows["amount"] = rng.integers(-10**6, 10**12, n)
    rows["rrn"] = ["%012d" % x for x in rng.integers(0, 10**12, n)]
    rows["txn_id"] = rows["seq"]
    if rows_kind == "odd":
        rows["rrn"][5] = b"12AB"
        rows["pan_last4"][7] = b"12"
        rows["ref_seq"][9] = rows["seq"][9] + 1      # a ref the ref transform cannot encode
        rows["receipt_no"][3] = 2**32 - 1
        rows["txn_id"][4] = 2**64 - 1
        rows["ts"][10] = -5
    payloads = [b"p%d" % i if i % 3 else b"" for i in range(n)]
    rows["payload_len"] = [len(p) for p in payloads]
    links = [bytes(rng.integers(0, 256, 16, dtype=np.uint8)) for _ in range(n)]
    exts = [b""] * n
    raw = A._encode_columns(rows, payloads, exts, links, b"", 2)
    body = A._decode_columns(raw, n, b"".join(payloads))
    assert body.rows.tobytes() == rows.tobytes()
    assert [body.link_at(i) for i in range(n)] == links          # all anchors: random links
    assert [body.payload_at(i) for i in range(n)] == payloads


@pytest.mark.parametrize("codec", ["zlib", "lzma", "zstd"])
@pytest.mark.parametrize("dictionary", [False, True])
def test_every_codec_with_and_without_a_dictionary(tmp_path, codec, dictionary):
    """Receipts and records archived with each codec come back byte for byte and verify;
    with a dictionary it is written once beside the segments and named by them."""
    if codec == "zstd":
        pytest.importorskip("zstandard", reason="the zstd codec needs the zstandard package")
    path = str(tmp_path / "till.pfj")
    j = Journal.create(path, capacity=128, max_payload=512, durability="none", day_rule=RULE,
                       retention="archive")
    j.archive.configure(codec=codec, dictionary=dictionary)
    want = {}
    for day in range(20_400, 20_404):
        start = RULE.day_start_us(day) + 5 * 3_600_000_000
        for k in range(60):
            payload = ('{"m":"SHOP","no":%d,"it":[["Tea",%d]]}' % (k, 600 + k)).encode()
            seq = j.append(terminal=1 + k % 2, kind="sale", state="approved", amount=k, currency=156,
                           ts=start + k * 1_000_000, payload=payload, order_ref="O-%d-%d" % (day, k))
            j.set_sync_watermark(seq)
            want[seq] = payload
    j.close()
    names = os.listdir(path + ".archive")
    assert (len([n for n in names if n.startswith("dict-")]) == 1) == (dictionary and codec != "lzma")
    with Journal.open(path, readonly=True) as again:
        assert again.verify().ok
        archived = [s for s in want if s < again.oldest_seq]
        assert len(archived) > 100
        for seq in archived:
            rec = again.get(seq)
            assert rec.archived and rec.payload == want[seq] and rec.order_ref.startswith("O-")
        segs = [n for n in names if n.endswith(".pfa")]
        assert {segment_info(os.path.join(path + ".archive", n))["codec"] for n in segs} == {codec}


def test_payment_records_take_a_few_bytes_each_in_the_archive(tmp_path):
    """2,000 payments a day on 8 terminals (amounts, times, kinds and methods varying; no
    receipt, no card strings): the archive keeps them in at most 12 bytes a record, all its
    files counted (segments, manifest, index)."""
    rng = np.random.default_rng(3)
    path = str(tmp_path / "till.pfj")
    j = Journal.create(path, capacity=4000, durability="none", day_rule=RULE, retention="archive")
    n_days, per_day = 12, 2000
    for day in range(20_400, 20_400 + n_days):
        ts = np.sort(RULE.day_start_us(day) + 4 * 3_600_000_000 + rng.integers(0, 12 * 3_600_000_000, per_day))
        terminal = rng.integers(1, 9, per_day)
        cols = {"ts": ts, "terminal": terminal, "kind": np.where(rng.random(per_day) < 0.95, 1, 2),
                "state": 2, "method": rng.integers(1, 4, per_day), "currency": 156,
                "amount": np.maximum(100, np.round(rng.lognormal(7.6, 1.0, per_day))).astype(np.int64),
                "receipt_no": np.arange(1, per_day + 1)}
        for s in range(0, per_day, 500):
            seqs = j.append_many({k: (v[s:s + 500] if isinstance(v, np.ndarray) else v)
                                  for k, v in cols.items()})
            j.set_sync_watermark(seqs[-1])
    j.close()
    adir = path + ".archive"
    total = sum(os.path.getsize(os.path.join(adir, f)) for f in os.listdir(adir))
    with Journal.open(path, readonly=True) as again:
        records = again.archive.status()["records"]
        assert records >= (n_days - 3) * per_day
        assert again.verify().ok
    assert total / records <= 12, total / records
