"""retention="archive": evicted records go to compressed, checksummed segments that
get/query/last/payloads and reprint still reach; verify reports what is missing."""
import errno
import json
import os
import shutil

import numpy as np
import pytest

import posfast
from posfast import CorruptRecord, Flag, IOFailure, Journal, JournalFull
from posfast.archive import HEADER_SIZE, segment_info
from posfast.records import DayRule, day_to_date

RULE = DayRule(utc_offset="+08:00", starts_at="04:00")
DAY0 = 20_400            # 2025-11-08


def _payload(seq):
    return (b"receipt %d " % seq) * (seq % 23)


def trade(j, model, days, per_day, first_day=DAY0, terminals=(1, 2, 3), batch=7, sync=True):
    """Append `per_day` records a day (small batches, synced as they go); remember them."""
    for day in range(first_day, first_day + days):
        start = RULE.day_start_us(day) + 3_600_000_000
        for k in range(0, per_day, batch):
            n = min(batch, per_day - k)
            idx = np.arange(k, k + n)
            seq0 = j.head_seq + 1
            cols = {"ts": start + idx * 60_000_000, "terminal": [terminals[(seq0 + i) % len(terminals)]
                                                                  for i in range(n)],
                    "kind": "sale", "state": "approved", "method": "card", "currency": 156,
                    "amount": [(seq0 + i) * 7 for i in range(n)],
                    "receipt_no": [seq0 + i for i in range(n)]}
            payloads = [_payload(seq0 + i) for i in range(n)]
            seqs = j.append_many(cols, payloads)
            for i, seq in enumerate(seqs):
                model[seq] = {"amount": cols["amount"][i], "terminal": cols["terminal"][i],
                              "day": day, "payload": payloads[i]}
            if sync:
                j.set_sync_watermark(seqs[-1])


@pytest.fixture
def archived(tmp_path):
    """A small ring (about 2 days) after 12 days of trading: 10 days live only in the archive."""
    path = str(tmp_path / "till.pfj")
    j = Journal.create(path, capacity=256, max_payload=400, durability="none", day_rule=RULE,
                       retention="archive")
    model = {}
    trade(j, model, days=12, per_day=40)
    yield j, model, path
    j.close()


def _segments(path):
    return sorted(n for n in os.listdir(path + ".archive") if n.endswith(".pfa"))


def test_round_trip_after_many_laps(archived):
    j, model, path = archived
    assert j.oldest_seq > 200                        # the ring has lapped several times
    for seq, want in model.items():
        rec = j.get(seq)
        assert (rec.seq, rec.amount, rec.terminal, rec.day, rec.payload) == \
            (seq, want["amount"], want["terminal"], want["day"], want["payload"])
        assert rec.archived == (seq < j.oldest_seq)
        assert bool(rec.flags & Flag.ARCHIVED) == (seq < j.oldest_seq)
    report = j.verify()
    assert report.ok, str(report)
    j.close()
    with Journal.open(path, readonly=True) as again:   # index and manifest from disk
        assert again.get(1).amount == model[1]["amount"]
        assert again.get(1).payload == model[1]["payload"]
        assert again.verify().ok


def test_one_segment_per_business_day(archived):
    j, model, path = archived
    names = _segments(path)
    days = {n.split("_")[0] for n in names}
    evicted_days = {str(day_to_date(model[s]["day"])) for s in model if s < j.oldest_seq}
    assert days == evicted_days
    for name in names:
        info = segment_info(os.path.join(path + ".archive", name))
        assert info["header_ok"] and info["first_day"] == info["last_day"]
        assert info["codec"] == "zlib" and info["comp_len"] < info["raw_len"]
        assert name.startswith(str(day_to_date(info["first_day"])))


def test_query_last_payloads_and_reprint_reach_the_archive(archived):
    j, model, path = archived
    old_day = DAY0 + 1
    rows = j.query(day=old_day, terminal=2)
    want = sorted(s for s, m in model.items() if m["day"] == old_day and m["terminal"] == 2)
    assert rows["seq"].tolist() == want
    assert (rows["flags"] & int(Flag.ARCHIVED) == int(Flag.ARCHIVED)).all()
    assert rows["amount"].tolist() == [model[s]["amount"] for s in want]
    # a query over every day returns archived then live rows, in seq order, nothing missing
    everything = j.query()
    assert everything["seq"].tolist() == sorted(model)
    live = everything["seq"] >= j.oldest_seq
    assert not (everything["flags"][live] & int(Flag.ARCHIVED)).any()
    assert j.payloads(np.array(want[:3] + [j.head_seq])) == \
        [model[s]["payload"] for s in want[:3]] + [model[j.head_seq]["payload"]]
    # last(): the newest record of a terminal that still trades is the live one
    rec = j.last(terminal=2, kind="sale")
    assert rec.seq == max(s for s, m in model.items() if m["terminal"] == 2) and not rec.archived
    assert j.last(terminal=9) is None


def test_last_of_a_terminal_seen_only_in_archived_days(tmp_path):
    path = str(tmp_path / "t.pfj")
    with Journal.create(path, capacity=64, durability="none", day_rule=RULE, retention="archive") as j:
        model = {}
        trade(j, model, days=1, per_day=10, terminals=(7,))
        trade(j, model, days=3, per_day=40, first_day=DAY0 + 1, terminals=(1, 2))
        rec = j.last(terminal=7)
        assert rec.archived and rec.seq == 10 and rec.amount == model[10]["amount"]
        assert j.last(terminal=7, kind="refund") is None


def test_reprint_a_receipt_the_ring_no_longer_holds(tmp_path):
    from posfast.printing import reprint
    from posfast.receipt import Receipt, ReceiptItem
    path = str(tmp_path / "shop.pfj")
    with Journal.create(path, capacity=128, durability="none", day_rule=RULE, retention="archive",
                        max_payload=1024) as j:
        receipt = Receipt(merchant="好又多", terminal=3, receipt_no=4711,
                          items=[ReceiptItem("宫保鸡丁", unit_price=3800)])
        txn = j.append(terminal=3, kind="sale", state="approved", amount=3800, currency=156,
                       receipt_no=4711, ts=RULE.day_start_us(DAY0) + 5, payload=receipt.to_payload())
        j.set_sync_watermark(txn)
        trade(j, {}, days=90, per_day=4, first_day=DAY0 + 1, terminals=(1,))   # three months later
        assert txn < j.oldest_seq
        preview = reprint(j, receipt_no=4711, terminal=3, now=RULE.day_start_us(DAY0 + 95))
        assert preview.outcome == "preview"
        assert "宫保鸡丁" in preview.text and "COPY 1" in preview.text
        assert j.get(txn).archived


def test_lzma_codec_and_reopen(tmp_path):
    path = str(tmp_path / "x.pfj")
    model = {}
    with Journal.create(path, capacity=64, durability="none", day_rule=RULE, retention="archive",
                        max_payload=400) as j:
        j.archive.configure(codec="lzma")
        trade(j, model, days=4, per_day=30)
    infos = [segment_info(os.path.join(path + ".archive", n)) for n in _segments(path)]
    assert infos and all(i["codec"] == "lzma" for i in infos)
    with Journal.open(path) as j:
        assert j.archive.policy["codec"] == "lzma"      # the policy persists
        assert all(j.get(s).payload == m["payload"] for s, m in model.items())


def test_unsynced_records_are_neither_archived_nor_overwritten(tmp_path):
    path = str(tmp_path / "u.pfj")
    with Journal.create(path, capacity=32, durability="none", retention="archive") as j:
        for i in range(32):
            j.append(terminal=1, kind="sale", state="approved", amount=i, currency=156)
        with pytest.raises(JournalFull):
            j.append(terminal=1, kind="sale", state="approved", amount=99, currency=156)
        assert j.archive.through == 0 and not os.path.exists(path + ".archive/MANIFEST")
        j.set_sync_watermark(5)
        j.append(terminal=1, kind="sale", state="approved", amount=99, currency=156)
        assert j.get(1).archived and j.archive.through <= 5


def test_missing_segment_is_reported_never_skipped(archived):
    j, model, path = archived
    names = _segments(path)
    victim = names[len(names) // 2]
    info = segment_info(os.path.join(path + ".archive", victim))
    os.unlink(os.path.join(path + ".archive", victim))
    report = j.verify()
    assert not report.ok
    assert any(victim in str(p) and "missing" in p.cause and p.seq == info["first_seq"]
               for p in report.problems), str(report)
    with pytest.raises(CorruptRecord, match="missing"):
        j.get(info["first_seq"])
    with pytest.raises(CorruptRecord, match=victim):
        j.query(day=info["first_day"])
    with pytest.raises(CorruptRecord):
        j.query()                                      # a full history cannot silently leave a day out
    # other days stay readable
    assert j.get(1).amount == model[1]["amount"]
    assert len(j.query(day=DAY0)) == 40


def test_damaged_segment_is_reported(archived):
    j, model, path = archived
    name = _segments(path)[1]
    seg = os.path.join(path + ".archive", name)
    info = segment_info(seg)
    with open(seg, "r+b") as f:
        f.seek(HEADER_SIZE + 20)
        byte = f.read(1)
        f.seek(HEADER_SIZE + 20)
        f.write(bytes([byte[0] ^ 0x40]))
    j.archive._cache.clear()
    report = j.verify()
    assert any(name in str(p) and "damaged" in p.cause for p in report.problems), str(report)
    with pytest.raises(CorruptRecord, match="checksum"):
        j.get(info["first_seq"])


def _rewrite_segment(path, name, alter, version):
    """Rewrite one segment in `version` (1 or 2) with `alter(rows)` applied to its records and
    every checksum fixed (segment header, body, manifest): what someone editing it would do."""
    import zlib
    from posfast import _core
    from posfast import archive as A
    seg = os.path.join(path + ".archive", name)
    data = open(seg, "rb").read()
    fields = list(A._HEAD.unpack_from(data))
    archive = A.Archive(path, bytes(fields[6]), readonly=True)
    _, body = archive._read_segment_file(name)
    n = len(body.rows)
    links = [body.link_at(i) for i in range(n)]
    payloads = [body.payload_at(i) for i in range(n)]
    exts = [body.ext_at(i) for i in range(n)]
    rows = body.rows.copy()
    if version == 1:
        alter(rows)
        raw = A._encode_body(rows, payloads, links, body.prev_link)
        new_body = zlib.compress(raw)
    else:
        # edited in place, as a hex editor would: the links stored with it stay as they were
        columns = bytearray(A._encode_columns(rows, payloads, exts, links, body.prev_link, 2))
        altered = rows.copy()
        alter(altered)
        at = A._V2_HEAD.size
        for field in posfast.RECORD_DTYPE.names:
            width = posfast.RECORD_DTYPE.fields[field][0].itemsize
            if field == "amount":
                assert columns[at] == A._T_RAW
                planes = np.frombuffer(altered["amount"].astype("<i8").tobytes(), np.uint8).reshape(n, 8).T
                columns[at + 1:at + 1 + 8 * n] = np.ascontiguousarray(planes).tobytes()
            at += 1 + width * n
        columns = bytes(columns)
        payload = b"".join(payloads)
        cols = zlib.compress(columns)
        pays = zlib.compress(payload) if payload else b""
        new_body = A._V2_BODY.pack(len(cols), 0, len(payload)) + cols + pays
        raw = columns + payload
    fields[1], fields[2], fields[10], fields[11], fields[12] = \
        version, 1, len(raw), len(new_body), _core.crc32c(new_body)
    head = A._HEAD.pack(*fields)
    with open(seg, "wb") as f:
        f.write(head + A._HEAD_CRC.pack(_core.crc32c(head)) + new_body)
    manifest_path = path + ".archive/MANIFEST"
    text, _ = open(manifest_path, "rb").read().rsplit(b"\n", 1)
    manifest = json.loads(text)
    for entry in manifest["segments"]:
        if entry["name"] == name:
            entry["crc"], entry["nbytes"] = fields[12], HEADER_SIZE + len(new_body)
    body_json = json.dumps(manifest).encode()
    with open(manifest_path, "wb") as f:
        f.write(body_json + b"\n%d" % _core.crc32c(body_json))
    return fields


@pytest.mark.parametrize("version", [1, 2])
def test_altered_record_with_recomputed_checksums_breaks_the_chain(archived, version):
    """Someone rewrites an archived amount and fixes every CRC: the hash chain catches it,
    in a segment of either version (2 stores one link in 64 and recomputes the rest)."""
    j, model, path = archived
    name = _segments(path)[2]
    j.close()

    def alter(rows):
        rows["amount"][3] = 1                       # the 4th record's amount -> 0.01
    fields = _rewrite_segment(path, name, alter, version)
    with Journal.open(path) as again:
        assert again.get(fields[7] + 3).amount == 1
        report = again.verify()
        assert not report.ok
        hits = [p for p in report.problems if "hash-chain" in p.cause]
        assert hits, str(report)
        # version 1 names the record; version 2 the block of up to 64 it lies in
        assert hits[0].seq == (fields[7] + 3 if version == 1 else fields[7]), str(report)
        assert name in str(hits[0])


def test_unaltered_rewrite_in_either_version_verifies(archived):
    """The same records rewritten as a version-1 segment beside version-2 ones: old
    archives still read, and their chain still checks."""
    j, model, path = archived
    names = _segments(path)
    j.close()
    _rewrite_segment(path, names[1], lambda rows: None, 1)
    with Journal.open(path) as again:
        report = again.verify()
        assert report.ok, str(report)
        for seq, want in model.items():
            if seq < again.oldest_seq:
                rec = again.get(seq)
                assert rec.archived and rec.amount == want["amount"] and rec.payload == want["payload"]


def test_archive_retention_by_total_size_and_age(archived):
    j, model, path = archived
    before = j.archive.status()
    j.archive.configure(max_total_bytes=before["bytes"] // 2)
    after = j.archive.status()
    assert after["bytes"] <= before["bytes"] // 2 and after["segments"] < before["segments"]
    pruned = after["first_seq"] - 1
    with pytest.raises(KeyError, match="retention"):
        j.get(pruned)
    assert j.get(pruned + 1).amount == model[pruned + 1]["amount"]
    assert j.verify().ok                        # pruned on purpose is not missing
    assert j.query()["seq"][0] == pruned + 1
    j.archive.configure(max_total_bytes=None, max_age_days=3)
    newest_day = max(model[s]["day"] for s in range(1, j.archive.through + 1))
    kept = j.query()["day"]
    assert kept.min() >= newest_day - 3 and j.verify().ok
    j.close()
    with Journal.open(path) as again:
        assert again.archive.policy["max_age_days"] == 3
        assert again.verify().ok


def test_archive_failure_blocks_the_overwrite(archived, monkeypatch):
    j, model, path = archived
    oldest = j.oldest_seq
    import posfast.archive as archive_mod

    def full(*args, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(archive_mod.os, "replace", full)
    ts = RULE.day_start_us(DAY0 + 12)
    with pytest.raises(IOFailure, match="nothing was overwritten"):
        for i in range(300):       # what was archived ahead is overwritten; then it must stop
            head, oldest = j.head_seq, j.oldest_seq
            seq = j.append(terminal=1, kind="sale", state="approved", amount=5, currency=156, ts=ts + i)
            model[seq] = {"amount": 5, "terminal": 1, "day": DAY0 + 12, "payload": b""}
            j.set_sync_watermark(seq)
    assert j.head_seq == head and j.oldest_seq == oldest       # the failed append wrote nothing
    assert j.archive.through == oldest - 1                      # everything evicted is archived
    assert not j.get(oldest).archived
    monkeypatch.undo()
    trade(j, model, days=1, per_day=40, first_day=DAY0 + 13)
    assert j.get(oldest).archived and j.get(oldest).amount == model[oldest]["amount"]
    assert not [n for n in os.listdir(path + ".archive") if n.endswith(".tmp")]
    assert j.verify().ok


def test_crash_before_the_manifest_and_a_lost_index_recover(archived):
    j, model, path = archived
    manifest = path + ".archive/MANIFEST"
    shutil.copy(manifest, manifest + ".old")
    trade(j, model, days=1, per_day=40, first_day=DAY0 + 12)      # writes one more segment
    j.close()
    # as if the writer died after renaming that segment and before the manifest
    os.replace(manifest + ".old", manifest)
    os.unlink(path + ".archive/index")
    with Journal.open(path) as again:
        assert again.verify().ok
        assert all(again.get(s).amount == m["amount"] for s, m in model.items())
        assert again.query(day=DAY0 + 2)["seq"].tolist() == \
            sorted(s for s, m in model.items() if m["day"] == DAY0 + 2)


def test_damaged_bitmap_of_the_archive_index_is_rebuilt_and_reported(archived):
    """A bitmap of the archive's index that fails its checksum when first read: the lookup
    still answers from the segments (and so does the next one), and verify says so."""
    j, model, path = archived
    journal_id = j.journal_id.bytes
    j.close()
    from posfast.index import Index
    index = Index.load(path + ".archive/index", journal_id)[0]
    day = DAY0 + 2
    offset, length, _ = index.by_day._pending[day]
    index._map.close()
    with open(path + ".archive/index", "r+b") as f:
        f.seek(offset + length // 2)
        byte = f.read(1)
        f.seek(offset + length // 2)
        f.write(bytes([byte[0] ^ 0x55]))
    want = sorted(s for s, m in model.items() if m["day"] == day)
    assert want and want[-1] < 200                   # (archived only: the ring lapped)
    with Journal.open(path) as again:
        assert again.query(day=day)["seq"].tolist() == want
        assert again.query(day=day)["seq"].tolist() == want
        report = again.verify()
        assert any("archive index" in p.cause and "fails its checksum" in p.cause
                   for p in report.problems), report.problems
    with Journal.open(path) as third:                # rewritten on close: whole again
        assert third.query(day=day)["seq"].tolist() == want
        assert third.verify().ok


def test_damaged_manifest_is_reported_and_rebuilt(archived):
    j, model, path = archived
    j.close()
    with open(path + ".archive/MANIFEST", "r+b") as f:
        f.seek(30)
        f.write(b"#")
    with Journal.open(path) as again:
        report = again.verify()
        assert any("manifest" in p.cause for p in report.problems)
        assert again.get(2).amount == model[2]["amount"]
    with Journal.open(path) as third:                 # rewritten from the segments
        assert third.verify().ok


def test_removed_archive_is_reported_as_a_gap(archived):
    j, model, path = archived
    j.close()
    shutil.rmtree(path + ".archive")
    with Journal.open(path) as again:
        report = again.verify()
        assert any("neither in the ring nor in the archive" in p.cause for p in report.problems)
        with pytest.raises(KeyError):
            again.get(1)
        trade(again, model, days=1, per_day=40, first_day=DAY0 + 12)
        report = again.verify()
        assert any("never archived" in p.cause for p in report.problems), str(report)
        with pytest.raises(CorruptRecord, match="lost"):
            again.get(1)


def test_reader_in_another_handle_follows_the_writer(archived):
    j, model, path = archived
    reader = Journal.open(path, readonly=True)
    try:
        seen = reader.archive.through
        trade(j, model, days=2, per_day=40, first_day=DAY0 + 12)
        assert j.archive.through > seen
        newest_archived = j.oldest_seq - 1           # evicted since the reader opened
        assert newest_archived > seen
        assert reader.get(newest_archived).amount == model[newest_archived]["amount"]
        assert reader.get(newest_archived).archived
    finally:
        reader.close()


def test_other_retentions_have_no_archive(tmp_path):
    with Journal.create(str(tmp_path / "o.pfj"), capacity=16, retention="overwrite",
                        durability="none") as j:
        for i in range(40):
            j.append(terminal=1, kind="sale", state="approved", amount=i, currency=156)
        assert j.archive is None
        with pytest.raises(KeyError):
            j.get(1)
    assert not os.path.exists(str(tmp_path / "o.pfj.archive"))
    assert posfast.Flag.ARCHIVED == 8
