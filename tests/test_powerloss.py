"""Power-loss simulation (issue 7): crash images at every sync point of recorded runs.

The recording layer and the image builder live in tests/_powerloss.py (read its
docstring for the crash model and the oracle).  The default suite checks a
sample of images of every workload; `-m slow` checks thousands, with every
keep/drop combination of small tails and second sessions started from crash
images.
"""
import dataclasses
import os
import random
import shutil
import tempfile

import pytest

import posfast

import _powerloss as pl
from _powerloss import DATA, Images, Recorder, Workload


@pytest.fixture
def workdir():
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    d = tempfile.mkdtemp(prefix="posfast-powerloss-", dir=base)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _session_round(workdir, wl, per_point, exhaustive, chained, recovery_variants, readonly_every):
    rng = random.Random(wl.seed)
    rec = pl.run_workload(workdir, wl)
    keep = []
    tally = pl.check_recording(rec, workdir, rng, per_point=per_point, exhaustive=exhaustive,
                               recovery_variants=recovery_variants, readonly_every=readonly_every,
                               keep_images=keep)
    torn = [kept for kept in keep if kept[0]]        # prefer images whose recovery wrote
    pool = torn if len(torn) >= chained else keep
    for _, k, image, with_index in rng.sample(pool, min(chained, len(pool))):
        rec2 = pl.chain_session(rec, workdir, image, with_index,
                                dataclasses.replace(wl, steps=max(10, wl.steps // 2)), rng)
        tally.add(pl.check_recording(rec2, workdir, rng, per_point=per_point,
                                     recovery_variants=recovery_variants,
                                     readonly_every=readonly_every))
    return tally


# ----------------------------------------------------------------------------- sampled rounds
@pytest.mark.parametrize("wl", pl.WORKLOADS, ids=lambda w: w.name)
def test_crash_images_at_every_sync_point(workdir, wl):
    """Every sync point of a recorded run, two random images each (torn, dropped, reordered)."""
    tally = _session_round(workdir, wl, per_point=4, exhaustive=False, chained=1,
                           recovery_variants=2, readonly_every=3)
    pl.report("powerloss-default-" + wl.name, **dataclasses.asdict(tally))
    assert tally.crash_points >= 20 and tally.images >= 4 * tally.crash_points - 4
    assert tally.sessions == 2, "a second session was started from a crash image"


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("wl", pl.WORKLOADS, ids=lambda w: w.name)
def test_crash_images_thousands(workdir, wl, seed):
    """Every keep/drop combination of small tails plus random tears, and chained sessions."""
    wl = dataclasses.replace(wl, seed=wl.seed * 1000 + seed, steps=wl.steps + 20)
    tally = _session_round(workdir, wl, per_point=6, exhaustive=True, chained=3,
                           recovery_variants=4, readonly_every=1)
    pl.report("powerloss-slow-%s-%d" % (wl.name, seed), **dataclasses.asdict(tally))
    assert tally.images > 300


# ----------------------------------------------------------------------------- the recording
def test_recorder_sees_every_write_and_sync_of_an_append(workdir):
    path = os.path.join(workdir, "r.pfj")
    j = posfast.Journal.create(path, capacity=32)
    rec = Recorder(j)
    seq = j.append(terminal=1, kind="sale", amount=5, payload=b"p" * 100)
    rec.appended([seq])
    rec.set_watermark(1)
    j.close()
    ops = [(op, off, None if data is None else len(data)) for op, off, data in rec.ops]
    # format 2: the first append after a clean open marks the tail (the older header copy +
    # sync) before the record (2 slots) + sync; the watermark goes to the other copy + sync;
    # close marks the journal clean again (the older copy + sync)
    assert ops == [("write", 0, 256), ("sync", 0, None), ("write", DATA, 256), ("sync", 0, None),
                   ("write", 4096, 256), ("sync", 0, None), ("write", 0, 256), ("sync", 0, None)]
    exp = rec.expected[1]
    assert exp.last_op == 2 and exp.payload == b"p" * 100 and len(exp.raw) == 128 + 100


def test_image_builder_tears_at_sector_boundaries():
    pieces = pl.split_sectors(8192 + 384, bytes(range(256)) * 4, 512)
    assert [(off, len(d)) for off, d in pieces] == [(8576, 128), (8704, 512), (9216, 384)]
    assert b"".join(d for _, d in pieces) == bytes(range(256)) * 4
    assert pl.split_sectors(100, b"x" * 10, 4096) == [(100, b"x" * 10)]


# ----------------------------------------------------------------------------- regressions
def _fresh(workdir, name, **kw):
    path = os.path.join(workdir, name)
    return posfast.Journal.create(path, **kw), path


def test_watermark_header_never_reaches_disk_before_its_records(workdir):
    """Regression: in batch mode the header (watermark 3) could land while records 1..3 did not,
    leaving watermark > head_seq after a crash, so seqs 1..3 would be issued again."""
    j, path = _fresh(workdir, "wm.pfj", capacity=32)
    j.close()
    j = posfast.Journal.open(path, durability="batch", batch_records=100, batch_ms=10**7)
    rec = Recorder(j)
    for n in range(3):
        rec.appended([j.append(terminal=1, kind="sale", amount=n)])
    rec.set_watermark(3)
    j.close()
    kinds = ["header" if op == "write" and off < DATA else op for op, off, _ in rec.ops]
    # (format 2: the first append marks the tail first; the watermark's header comes after)
    assert kinds[:2] == ["header", "sync"]
    first_header = kinds.index("header", 2)
    assert kinds[2:first_header] == ["write"] * 3 + ["sync"]
    images = Images(rec)
    # crash before the first header sync completed: keep the header write, drop the records
    for k in images.crash_points:
        tail = images.tail_writes(k)
        if any(off < DATA for off, _ in tail):
            fates = ["keep" if off < DATA else "drop" for off, _ in tail]
            image = images.build(k, fates, random.Random(0))
            state = pl.check_image(rec, images, k, image, False, os.path.join(workdir, "i.pfj"),
                                   "header only")
            assert state[2] <= state[1]      # watermark <= head


def _torn_over_the_oldest(workdir):
    """A full overwrite ring (1..16, index saved), then a batch group 17..19 of which only 18 lands.

    18 sits in slot 1, where seq 2 was: the torn group had overwritten the oldest records."""
    j, path = _fresh(workdir, "ghost.pfj", capacity=16, retention="overwrite")
    for n in range(16):
        j.append(terminal=1, kind="sale", amount=n)
    j.close()
    j = posfast.Journal.open(path, durability="batch", batch_records=100, batch_ms=10**7)
    rec = Recorder(j)
    for n in range(3):
        rec.appended([j.append(terminal=2, kind="sale", amount=100 + n)])
    rec.detach()
    j.close()
    images = Images(rec)
    # (crash point 0 is before the tail mark the first append writes; 1 after its sync)
    assert rec.ops[0][1] < DATA and len(images.tail_writes(1)) == 3
    image = images.build(1, ["drop", "keep", "drop"], random.Random(0))
    return rec, images, image, path


def test_torn_group_over_the_oldest_records_is_dropped_with_or_without_index(workdir):
    """Regression: opening with the saved index missed torn record 18 (it lay beyond the oldest
    record's lap), left its head on disk, and after the next append it came back as a ghost
    seq 18 (never acknowledged, its hash chain from another history)."""
    rec, images, image, path = _torn_over_the_oldest(workdir)
    img = os.path.join(workdir, "img.pfj")
    for with_index in (True, False):
        pl.write_image(img, image, rec.index if with_index else None)
        with posfast.Journal.open(img) as j:
            assert [s for s, _ in j._ring.torn] == [18]
            assert (j.oldest_seq, j.head_seq) == (3, 16) and j.verify().ok
            assert j.append(terminal=9, kind="note") == 17
        with posfast.Journal.open(img) as j:
            assert j.head_seq == 17 and j.get(17).terminal == 9 and j.verify().ok
            with pytest.raises(KeyError):
                j.get(18)


def test_recovery_zeroes_evicted_heads_before_the_torn_ones(workdir):
    """Regression: zeroing torn heads first erased the evidence of what the torn group had
    evicted; a crash right after (or any later open) then reported seqs 1..2 as damaged."""
    rec, images, image, path = _torn_over_the_oldest(workdir)
    img = os.path.join(workdir, "img.pfj")
    pl.write_image(img, image, None)
    ops = pl.recovery_writes(img, with_index=False)
    kinds = [(op, (off - DATA) // 128 if op == "write" else None) for op, off, _ in ops]
    # seq 1 (slot 0) is stale now: its head goes first, synced; then torn 18 (slot 1)
    assert kinds == [("write", 0), ("sync", None), ("write", 1), ("sync", None)]
    pl.write_image(img, image, None)
    for c in range(len(ops) + 1):        # crash after any prefix of recovery's own I/O
        buf = bytearray(image)
        for op, off, data in ops[:c]:
            if op == "write":
                buf[off:off + len(data)] = data
        pl.write_image(img, bytes(buf), None)
        with posfast.Journal.open(img) as j:
            assert (j.oldest_seq, j.head_seq) == (3, 16), c
            assert j.verify().ok and not j._ring.damaged


def test_an_append_in_flight_that_wrapped_onto_records_1_2_is_no_damage(workdir):
    """Regression: a scan reported "records 1..2 lost" when a torn wrapping group had garbled
    slots 0-1 of a ring that had not wrapped yet (retention=overwrite: they were evicted)."""
    j, path = _fresh(workdir, "wrap.pfj", capacity=16, retention="overwrite")
    for n in range(14):
        j.append(terminal=1, kind="sale", amount=n)
    j.close()
    j = posfast.Journal.open(path)
    rec = Recorder(j)
    rec.appended(j.append_many({"terminal": [2] * 4, "kind": "sale", "amount": [7] * 4}))
    j.close()
    images = Images(rec)
    tail = images.tail_writes(1)            # (after the tail mark of the first append)
    assert [(off - DATA) // 128 for off, _ in tail] == [14, 0]      # the group wraps
    image = bytearray(images.durable(1))
    off, data = tail[1]
    image[off:off + len(data)] = b"\xa5" * len(data)                 # garbage; slots 14-15 lost
    img = os.path.join(workdir, "i.pfj")
    state = pl.check_image(rec, images, 1, bytes(image), False, img, "wrapped garbage")
    assert state[:2] == (3, 14)
    os.unlink(img + ".idx")                      # the scan is where the false report came from
    with posfast.Journal.open(img) as again:
        assert not again._ring.damaged and again.verify().ok


def test_a_commit_group_never_spans_more_than_half_the_ring(workdir):
    """Regression: a batch group large enough to wrap onto the previous (synced) group could,
    torn, destroy that group's first records; recovery then took the synced group for the torn
    one and dropped acknowledged records.  Replays the original crash: every image must keep
    every acknowledged record."""
    wl = Workload("half", durability="batch", retention="overwrite", capacity=16,
                  batch_records=100, setup_records=16, steps=0)
    rec = pl.run_workload(workdir, wl)
    j = posfast.Journal.open(rec.path, durability="batch", batch_records=100, batch_ms=10**7)
    rec2 = Recorder(j)
    rec2.appended(j.append_many({"terminal": [1] * 6, "kind": "sale", "amount": list(range(6))}))
    j.flush()                                                        # group 17..22 is synced
    rec2.appended(j.append_many({"terminal": [2] * 12, "kind": "sale", "amount": list(range(12))}))
    j.close()
    rec2.detach()
    unsynced = 0
    for op, off, data in rec2.ops:
        unsynced = 0 if op == "sync" else unsynced + (len(data) // 128 if off >= DATA else 0)
        assert unsynced <= 8
    tally = pl.check_recording(rec2, workdir, random.Random(1), per_point=16, exhaustive=True)
    assert tally.images > 50


def test_torn_header_copies_leave_the_old_or_the_new_watermark(workdir):
    """set_sync_watermark writes both header copies with a sync between: tear every write."""
    j, path = _fresh(workdir, "h.pfj", capacity=8)
    j.close()
    j = posfast.Journal.open(path)
    rec = Recorder(j)
    rec.appended([j.append(terminal=1, kind="sale", amount=1)])
    rec.set_watermark(1)
    j.close()
    images = Images(rec)
    rng = random.Random(3)
    for k in images.crash_points:
        for _ in range(6):
            pl.check_image(rec, images, k, images.build(k, ["torn"] * len(images.tail_writes(k)),
                                                        rng, 512), False,
                           os.path.join(workdir, "i.pfj"), "header tear k=%d" % k)


def test_durability_none_damage_is_not_taken_for_a_torn_tail(workdir):
    """Regression: with durability="none" every record since open shared one commit group, so
    after a clean close a flipped byte in record 3 of 40 looked like a torn tail: recovery
    dropped (and zeroed) records 4..40.  It must report seq 3 and keep the rest."""
    j, path = _fresh(workdir, "none.pfj", capacity=256, durability="none")
    for n in range(40):
        j.append(terminal=1, kind="sale", amount=n)
    j.close()
    os.unlink(path + ".idx")
    with open(path, "r+b") as f:
        f.seek(DATA + 2 * 128 + 56)             # seq 3's amount
        f.write(b"\xff")
    with posfast.Journal.open(path) as again:
        assert again.head_seq == 40 and not again._ring.torn
        assert [p.seq for p in again.verify().problems] == [3]
        assert again.get(40).amount == 39


def test_read_range_for_sync_makes_batch_records_durable_first(workdir):
    """Regression: in batch mode read_range (what sync sends to the back office) handed out
    records no fdatasync had covered yet; a power cut could then lose them and reissue their
    seqs with other records, which the back office already held."""
    j, path = _fresh(workdir, "sync.pfj", capacity=32)
    j.close()
    j = posfast.Journal.open(path, durability="batch", batch_records=100, batch_ms=10**7)
    rec = Recorder(j)
    for n in range(3):
        rec.appended([j.append(terminal=1, kind="sale", amount=n)])
    mark = ["write", "sync"]        # format 2: the first append marks the tail (header + sync)
    assert [op for op, _, _ in rec.ops] == mark + ["write"] * 3
    batch = j.read_range(1, 3)
    assert len(batch) == 3 and [op for op, _, _ in rec.ops] == mark + ["write"] * 3 + ["sync"]
    rec.detach()
    j.close()
