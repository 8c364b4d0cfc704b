"""Sync: SQLite back office, continuity rules, Syncer and sync_status."""
import sqlite3
import threading
import time
import uuid

import numpy as np
import pytest

import posfast
from posfast.sync import (HttpTarget, RecordBatch, SqliteTarget, SyncRefused, SyncResult, SyncUnavailable,
                          Syncer, sync_status, target_from_url)

from _sync_helpers import HandJournal, assert_same_records


@pytest.fixture
def back(tmp_path):
    target = SqliteTarget(tmp_path / "back.db", create=True)
    yield target
    target.close()


def push_all(target, hj, batch=1000):
    for first in range(1, hj.head_seq + 1, batch):
        target.push(hj.batch(first, min(first + batch - 1, hj.head_seq)))


# ----------------------------------------------------------------------------- target: accepted

def test_batches_arrive_record_for_record(back):
    hj = HandJournal(2500, terminal=7)
    acks = [back.push(hj.batch(a, min(a + 999, 2500))) for a in range(1, 2501, 1000)]
    assert [(a.high_seq, a.stored, a.duplicates) for a in acks] == [(1000, 1000, 0), (2000, 1000, 0),
                                                                     (2500, 500, 0)]
    held = back.read_range(hj.journal_id)
    assert_same_records(held, hj.rows, hj.payloads, hj.links)
    state = back.state(hj.journal_id)
    assert (state.anchor_seq, state.high_seq, state.last_link, state.records) == (1, 2500, hj.links[-1], 2500)


def test_unsigned_64_bit_columns_round_trip(back):
    hj = HandJournal(0)
    hj.extend(3)
    # txn_id is caller-chosen u8: values past 2**63 must survive the signed database column
    hj.rows["txn_id"][1] = 2**64 - 5
    hj.rows["ref_seq"][2] = 2**63
    hj.links = []
    prev = __import__("_sync_helpers").genesis(hj.journal_id)
    for i in range(3):
        prev = bytes(posfast.chain_link(prev, hj.rows[i], hj.payloads[i], hj.exts[i]))
        hj.links.append(prev)
    back.push(hj.batch(1, 3))
    held = back.read_range(hj.journal_id)
    assert int(held.rows["txn_id"][1]) == 2**64 - 5 and int(held.rows["ref_seq"][2]) == 2**63
    assert_same_records(held, hj.rows, hj.payloads, hj.links)


def test_identical_replay_is_acknowledged_with_held_high_water(back):
    hj = HandJournal(300)
    back.push(hj.batch(1, 200))
    ack = back.push(hj.batch(1, 200))
    assert (ack.high_seq, ack.stored, ack.duplicates) == (200, 0, 200)
    ack = back.push(hj.batch(101, 150))   # an older, smaller slice: still held, still fine
    assert (ack.high_seq, ack.stored, ack.duplicates) == (200, 0, 50)
    ack = back.push(hj.batch(151, 300))   # overlaps the held end, then continues
    assert (ack.high_seq, ack.stored, ack.duplicates) == (300, 100, 50)
    assert back.count(hj.journal_id) == 300
    assert back.state(hj.journal_id).records == 300
    assert back.refusals() == []


def test_two_journals_share_one_back_office(back):
    a, b = HandJournal(1200, terminal=1, seed=1), HandJournal(700, terminal=2, seed=2)
    for first in range(1, 1201, 400):   # interleaved, as two terminals would arrive
        back.push(a.batch(first, first + 399))
        if first <= 700:
            back.push(b.batch(first, min(first + 399, 700)))
    assert back.count() == 1900
    assert back.count(a.journal_id) == 1200 and back.count(b.journal_id) == 700
    assert_same_records(back.read_range(a.journal_id), a.rows, a.payloads, a.links)
    assert_same_records(back.read_range(b.journal_id), b.rows, b.payloads, b.links)
    # day/terminal lookups are indexed
    con = sqlite3.connect(back.path)
    plan = " ".join(r[3] for r in con.execute("EXPLAIN QUERY PLAN SELECT * FROM records WHERE day = 20401 "
                                              "AND terminal = 2"))
    assert "records_day_terminal" in plan
    n = con.execute("SELECT count(*) FROM records WHERE day = 20401 AND terminal = 2").fetchone()[0]
    assert n == int(((b.rows["day"] == 20401)).sum())
    con.close()


# ----------------------------------------------------------------------------- target: refused

def refused(target, batch, reason, **kw):
    with pytest.raises(SyncRefused) as info:
        target.push(batch, **kw)
    assert info.value.reason == reason, info.value
    assert isinstance(info.value, posfast.errors.PosfastError)
    return info.value


def test_gap_is_refused_and_reported(back):
    hj = HandJournal(300)
    back.push(hj.batch(1, 100))
    err = refused(back, hj.batch(102, 200), "gap")
    assert err.high_seq == 100 and "101..101 missing" in str(err)
    assert back.state(hj.journal_id).high_seq == 100 and back.count() == 100
    (rep,) = back.refusals()
    assert (rep["reason"], rep["journal_id"], rep["first_seq"], rep["last_seq"]) == (
        "gap", str(hj.journal_id), 102, 200)


def test_gap_inside_a_batch_is_refused(back):
    hj = HandJournal(10)
    b = hj.batch(1, 10)
    keep = [0, 1, 2, 3, 5, 6]
    batch = RecordBatch(b.journal_id, b.rows[keep], [b.payloads[i] for i in keep], [b.links[i] for i in keep])
    err = refused(back, batch, "gap")
    assert "seq 4 to seq 6" in str(err)
    assert back.count() == 0


def test_first_batch_must_start_at_seq_1_unless_anchored(back):
    hj = HandJournal(600)
    refused(back, hj.batch(201, 300), "gap")
    ack = back.push(hj.batch(201, 300), anchor=True)
    assert (ack.high_seq, ack.stored) == (300, 100)
    assert back.state(hj.journal_id).anchor_seq == 201
    back.push(hj.batch(301, 600), anchor=True)   # anchor is ignored once held: plain continuation
    assert back.state(hj.journal_id).anchor_seq == 201
    refused(back, hj.batch(150, 250), "gap")     # history below the anchor is not here


def test_fork_same_seq_different_bytes_is_refused(back):
    hj = HandJournal(200, seed=1)
    back.push(hj.batch(1, 150))
    # A second history of the same journal: seq 101.. rewritten with consistent links.
    forged = HandJournal(0, journal_id=hj.journal_id)
    forged.rows, forged.payloads, forged.links = hj.rows[:100].copy(), hj.payloads[:100], hj.links[:100]
    forged.exts = hj.exts[:100]
    forged.rng = np.random.default_rng(99)
    forged.extend(100)
    err = refused(back, forged.batch(101, 200), "fork")
    assert "seq 101" in str(err)
    assert back.count() == 150 and back.read_range(hj.journal_id).links == hj.links[:150]


def test_altered_record_breaks_the_chain(back):
    hj = HandJournal(100)
    back.push(hj.batch(1, 50))
    tampered = hj.batch(51, 100)
    tampered.rows["amount"][10] += 1            # edited after the fact, link left as it was
    err = refused(back, tampered, "chain")
    assert "seq 61" in str(err)
    tampered = hj.batch(51, 100)
    tampered.payloads[0] = b"x" + tampered.payloads[0]
    tampered.rows["payload_len"][0] += 1
    refused(back, tampered, "chain")            # first new record must link to held seq 50
    replay = hj.batch(1, 50)
    replay.rows["amount"][0] = 1                # a doctored replay of a held record is a fork
    refused(back, replay, "fork")
    assert back.count() == 50
    assert [r["reason"] for r in back.refusals()] == ["chain", "chain", "fork"]


def test_other_journals_records_do_not_continue_this_one(back):
    a, b = HandJournal(100, seed=1), HandJournal(100, seed=2)
    back.push(a.batch(1, 50))
    foreign = b.batch(51, 100)
    foreign.journal_id = a.journal_id
    refused(back, foreign, "chain")


@pytest.mark.parametrize("breakage", ["payload_len", "link_size", "empty", "backwards", "seq0", "dtype",
                                      "counts", "journal_id"])
def test_malformed_batches_are_invalid(back, breakage):
    hj = HandJournal(20)
    b = hj.batch(1, 20)
    if breakage == "payload_len":
        b.rows["payload_len"][4] += 1
    elif breakage == "link_size":
        b.links[3] = b.links[3][:8]
    elif breakage == "empty":
        b = RecordBatch(b.journal_id, b.rows[:0], [], [])
    elif breakage == "backwards":
        b.rows["seq"][5] = 3
    elif breakage == "seq0":
        b.rows["seq"] -= 1
    elif breakage == "dtype":
        b.rows = b.rows.astype([(n, "<i4" if n == "amount" else b.rows.dtype.fields[n][0])
                                for n in b.rows.dtype.names])
    elif breakage == "counts":
        b.payloads = b.payloads[:-1]
    elif breakage == "journal_id":
        b.journal_id = "not-a-uuid"
    refused(back, b, "invalid")
    assert back.count() == 0


def test_concurrent_pushers_of_one_journal_do_not_interleave(tmp_path):
    hj = HandJournal(2000)
    path = tmp_path / "back.db"
    SqliteTarget(path, create=True).close()
    errors = []

    def pusher():
        target = SqliteTarget(path)   # its own connection, as another process would have
        try:
            for first in range(1, 2001, 100):
                target.push(hj.batch(first, first + 99))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            target.close()

    threads = [threading.Thread(target=pusher) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    back = SqliteTarget(path)
    assert back.count() == 2000 and back.state(hj.journal_id).records == 2000
    assert_same_records(back.read_range(hj.journal_id), hj.rows, hj.payloads, hj.links)
    back.close()


# ----------------------------------------------------------------------------- syncer (hand-made journal)

class CrashAfterCommit:
    """Target that commits, then dies before the ack reaches the syncer."""

    def __init__(self, inner, crash_on):
        self.inner, self.crash_on, self.calls = inner, set(crash_on), 0

    def push(self, batch, *, anchor=False):
        self.calls += 1
        ack = self.inner.push(batch, anchor=anchor)
        if self.calls in self.crash_on:
            raise SyncUnavailable("connection reset after commit")
        return ack


def test_syncer_pushes_in_batches_and_advances_watermark(back):
    hj = HandJournal(2345)
    result = Syncer(hj, back, batch=500).run_once()
    assert result == SyncResult(sent=2345, batches=5, watermark=2345, duplicates=0)
    assert hj.sync_watermark == 2345
    assert Syncer(hj, back).run_once() == SyncResult(0, 0, 2345)
    hj.extend(10)
    assert Syncer(hj, back).run_once() == SyncResult(10, 1, 2355)
    assert_same_records(back.read_range(hj.journal_id), hj.rows, hj.payloads, hj.links)


def test_crash_between_commit_and_watermark_resends_without_duplicates(back):
    hj = HandJournal(1000)
    flaky = CrashAfterCommit(back, crash_on={3})
    syncer = Syncer(hj, flaky, batch=100)
    with pytest.raises(SyncUnavailable):
        syncer.run_once()
    assert hj.sync_watermark == 200                   # batch 3 committed, but not acknowledged
    assert back.state(hj.journal_id).high_seq == 300  # never behind the watermark
    result = syncer.run_once()
    assert result == SyncResult(sent=800, batches=8, watermark=1000, duplicates=100)
    assert back.count() == 1000
    assert_same_records(back.read_range(hj.journal_id), hj.rows, hj.payloads, hj.links)


def test_syncer_anchors_a_never_synced_journal_with_evicted_records(back):
    hj = HandJournal(1000)
    hj.evict_to(401)                   # retention let seq 1..400 go before any sync
    result = Syncer(hj, back, batch=250).run_once()
    assert (result.sent, result.watermark) == (600, 1000)
    assert back.state(hj.journal_id).anchor_seq == 401
    assert_same_records(back.read_range(hj.journal_id), hj.rows[400:], hj.payloads[400:], hj.links[400:])


def test_syncer_reports_records_lost_before_sync_as_gap(back):
    hj = HandJournal(1000)
    Syncer(hj, back).run_once(max_records=300)
    hj.evict_to(501)                   # 301..500 evicted unsynced (non-default retention)
    with pytest.raises(SyncRefused) as info:
        Syncer(hj, back).run_once()
    assert info.value.reason == "gap" and hj.sync_watermark == 300
    assert sync_status(hj)["lost_unsynced"] == 200


def test_run_forever_backs_off_then_catches_up_and_never_blocks(back):
    hj = HandJournal(500)

    class Flaky:
        def __init__(self):
            self.failures_left = 3
            self.times = []

        def push(self, batch, *, anchor=False):
            self.times.append(time.monotonic())
            if self.failures_left:
                self.failures_left -= 1
                raise SyncUnavailable("network down")
            return back.push(batch, anchor=anchor)

    flaky = Flaky()
    syncer = Syncer(hj, flaky, batch=100)
    stop = threading.Event()
    errors = []
    thread = threading.Thread(target=syncer.run_forever, args=(stop,),
                              kwargs=dict(interval=0.02, max_backoff=0.5, on_error=errors.append))
    thread.start()
    deadline = time.monotonic() + 10
    while hj.sync_watermark < 500 and time.monotonic() < deadline:
        time.sleep(0.01)
    hj.extend(50)                      # appended while the syncer runs: picked up next round
    while hj.sync_watermark < 550 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert hj.sync_watermark == 550 and back.count() == 550
    assert len(errors) == 3 and all(isinstance(e, SyncUnavailable) for e in errors)
    gaps = np.diff(flaky.times[:4])
    # backoff doubles (0.04, 0.08, 0.16 s before jitter in [0.5, 1.0])
    assert gaps[0] >= 0.02 and gaps[2] >= 0.08 and gaps[2] > gaps[0]
    assert syncer.failures == 0 and syncer.last_error is None


def test_run_forever_refusal_is_reported_and_not_hot_looped(back):
    hj = HandJournal(100)
    other = HandJournal(100, journal_id=hj.journal_id, seed=5)
    back.push(other.batch(1, 100))     # the back office holds another history of this id
    errors = []
    stop = threading.Event()
    syncer = Syncer(hj, back)
    thread = threading.Thread(target=syncer.run_forever, args=(stop,),
                              kwargs=dict(interval=0.01, max_backoff=0.3, on_error=errors.append))
    thread.start()
    time.sleep(0.5)
    stop.set()
    thread.join(5)
    assert 1 <= len(errors) <= 4 and all(e.reason == "fork" for e in errors)
    assert hj.sync_watermark == 0


# ----------------------------------------------------------------------------- status, factory

def test_sync_status_flags_overdue_and_filling_ring():
    hj = HandJournal(100, capacity=1000)
    first_ts = int(hj.rows["ts"][0]) / 1e6
    st = sync_status(hj, deadline_hours=72, now=first_ts + 3600)
    assert st["unsynced"] == 100 and st["oldest_unsynced_seq"] == 1 and st["sync_watermark"] == 0
    assert st["oldest_unsynced_ts"] == int(hj.rows["ts"][0])
    assert st["oldest_unsynced_age_s"] == pytest.approx(3600)
    assert (st["warning"], st["state"]) == (False, "ok")
    st = sync_status(hj, deadline_hours=72, now=first_ts + 73 * 3600)
    assert (st["warning"], st["state"], st["reasons"]) == (True, "overdue", ["overdue"])
    hj.set_sync_watermark(60)
    st = sync_status(hj, deadline_hours=72, now=first_ts + 73 * 3600)
    assert st["unsynced"] == 40 and st["oldest_unsynced_seq"] == 61
    hj.extend(800)
    st = sync_status(hj, deadline_hours=1e9, now=first_ts)
    assert st["unsynced"] == 840 and st["unsynced_fraction"] == pytest.approx(0.84)
    assert (st["warning"], st["state"]) == (True, "ring_filling")
    hj.set_sync_watermark(900)
    st = sync_status(hj, now=first_ts)
    assert (st["unsynced"], st["oldest_unsynced_ts"], st["warning"]) == (0, None, False)


def test_target_from_url(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t = target_from_url("sqlite:///back.db", create=True)
    assert isinstance(t, SqliteTarget) and t.path == "back.db"
    t.close()
    t = target_from_url(f"sqlite:///{tmp_path}/abs.db", create=True)
    assert t.path == f"{tmp_path}/abs.db"
    t.close()
    t = target_from_url("http://127.0.0.1:8080/", token="tok-0123456789abcdef")
    assert isinstance(t, HttpTarget) and t.url == "http://127.0.0.1:8080"
    with pytest.raises(ValueError, match="token"):
        target_from_url("http://127.0.0.1:8080")
    with pytest.raises(ValueError, match="unknown sync target"):
        target_from_url("ftp://x")
    with pytest.raises(ValueError):
        target_from_url("sqlite://back.db")


def test_refusal_message_names_reason_and_is_a_posfast_error():
    err = SyncRefused("seq 5 differs", "fork", journal_id=uuid.uuid4(), first_seq=5, last_seq=9)
    assert isinstance(err, posfast.errors.PosfastError) and isinstance(err, posfast.errors.SyncRefused)
    assert str(err) == "fork: seq 5 differs" and err.reason == "fork"
    with pytest.raises(ValueError):
        SyncRefused("x", "bogus")


# ----------------------------------------------------------------------------- with real journals

from _sync_helpers import assert_back_office_equals_journal, fill_journal  # noqa: E402


@pytest.fixture
def make_journal(tmp_path):
    opened = []

    def make(name="t.pfj", capacity=50_000, **kw):
        kw.setdefault("durability", "none")
        j = posfast.Journal.create(tmp_path / name, capacity=capacity, **kw)
        opened.append(j)
        return j

    yield make
    for j in opened:
        j.close()


def test_offline_for_many_batches_then_sync_equals_journal(make_journal, back):
    j = make_journal()
    for day in range(5):                      # five offline days of trading
        fill_journal(j, 1500, seed=day, ts0=1_763_000_000_000_000 + day * 86_400_000_000)
    assert sync_status(j)["unsynced"] == 7500
    result = Syncer(j, back, batch=257).run_once()
    assert result == SyncResult(sent=7500, batches=30, watermark=7500)
    assert j.sync_watermark == 7500 and j.status()["unsynced"] == 0
    assert_back_office_equals_journal(back, j)
    assert back.state(j.journal_id).last_link == j.link(7500)
    # payloads and every column, spot-checked through the journal's own Record too
    rec, held = j.get(4321), back.read_range(j.journal_id, 4321, 4321)
    assert (int(held.rows["amount"][0]), held.payloads[0], held.links[0]) == (rec.amount, rec.payload, rec.link)
    fill_journal(j, 10, seed=99)
    assert Syncer(j, back).run_once().sent == 10
    assert back.count() == 7510
    st = sync_status(j)
    assert (st["unsynced"], st["warning"], st["sync_watermark"]) == (0, False, 7510)


def test_reopened_journal_resumes_from_durable_watermark(tmp_path, back):
    path = tmp_path / "t.pfj"
    j = posfast.Journal.create(path, capacity=10_000)
    fill_journal(j, 900)
    Syncer(j, back, batch=100).run_once(max_records=450)
    j.close()
    j = posfast.Journal.open(path)
    assert j.sync_watermark == 450
    assert Syncer(j, back, batch=100).run_once() == SyncResult(450, 5, 900)
    assert_back_office_equals_journal(back, j)
    j.close()


def test_two_terminal_journals_and_refused_batches(make_journal, back):
    j1, j2 = make_journal("t1.pfj"), make_journal("t2.pfj")
    fill_journal(j1, 1200, terminal=1, seed=1)
    fill_journal(j2, 800, terminal=2, seed=2)
    Syncer(j1, back, batch=300).run_once()
    Syncer(j2, back, batch=300).run_once()
    assert back.count(j1.journal_id) == 1200 and back.count(j2.journal_id) == 800
    # replayed: acknowledged, nothing stored twice
    ack = back.push(j1.read_range(901, 1200))
    assert (ack.stored, ack.duplicates, ack.high_seq) == (0, 300, 1200)
    fill_journal(j1, 200, terminal=1, seed=3)
    # gapped: 1301.. without 1201..1300
    refused(back, j1.read_range(1301, 1400), "gap")
    # forged: an edited amount in an otherwise genuine batch
    forged = j1.read_range(1201, 1400)
    forged.rows["amount"][7] += 100
    refused(back, forged, "chain")
    # another terminal's batch pretending to be this journal
    foreign = j2.read_range(1, 50)
    foreign.journal_id = j1.journal_id
    refused(back, foreign, "fork")
    assert back.count() == 2000
    assert Syncer(j1, back).run_once().sent == 200
    assert_back_office_equals_journal(back, j1)
    assert_back_office_equals_journal(back, j2)


def test_overwrite_journal_anchors_at_its_oldest_record(make_journal, back):
    j = make_journal(capacity=100, retention="overwrite")
    for i in range(150):
        j.append(terminal=1, kind="sale", state="approved", amount=i + 1, currency=156)
    assert (j.oldest_seq, sync_status(j)["lost_unsynced"]) == (51, 50)
    assert Syncer(j, back, batch=30).run_once() == SyncResult(100, 4, 150)
    assert back.state(j.journal_id).anchor_seq == 51
    assert_back_office_equals_journal(back, j, 51)
    for i in range(10):
        j.append(terminal=1, kind="sale", state="approved", amount=7, currency=156)
    assert Syncer(j, back).run_once().sent == 10
    assert Syncer(j, back, anchor=False).run_once().sent == 0


def test_sync_frees_a_full_journal(make_journal, back):
    j = make_journal(capacity=200)
    for i in range(200):
        j.append(terminal=1, kind="sale", state="approved", amount=i + 1, currency=156)
    st = sync_status(j)
    assert (st["state"], st["unsynced_fraction"]) == ("ring_filling", 1.0)
    with pytest.raises(posfast.JournalFull):
        j.append(terminal=1, kind="sale", state="approved", amount=1, currency=156)
    Syncer(j, back).run_once()
    j.append(terminal=1, kind="sale", state="approved", amount=1, currency=156)
    assert sync_status(j)["state"] == "ok" and back.count() == 200


def test_sync_status_deadline_on_a_real_journal(make_journal):
    j = make_journal()
    old = int((time.time() - 80 * 3600) * 1e6)
    j.append(terminal=1, kind="sale", state="approved", amount=100, currency=156, ts=old)
    j.append(terminal=1, kind="sale", state="approved", amount=100, currency=156)
    st = sync_status(j, deadline_hours=72)
    assert st["warning"] and st["state"] == "overdue" and st["oldest_unsynced_ts"] == old
    assert 79 * 3600 < st["oldest_unsynced_age_s"] < 81 * 3600
    assert not sync_status(j, deadline_hours=100)["warning"]


def test_background_syncer_never_blocks_appends(make_journal, back):
    j = make_journal()

    class SlowNetwork:
        def push(self, batch, *, anchor=False):
            time.sleep(0.15)                  # a slow uplink
            return back.push(batch, anchor=anchor)

    syncer = Syncer(j, SlowNetwork(), batch=50)
    stop = threading.Event()
    thread = threading.Thread(target=syncer.run_forever, args=(stop,), kwargs=dict(interval=0.01))
    thread.start()
    worst = 0.0
    for i in range(300):
        t0 = time.perf_counter()
        j.append(terminal=1, kind="sale", state="approved", amount=i + 1, currency=156, payload=b"r" * 40)
        worst = max(worst, time.perf_counter() - t0)
        time.sleep(0.002)
    deadline = time.monotonic() + 20
    while j.sync_watermark < 300 and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(10)
    assert worst < 0.1, f"an append waited {worst:.3f}s on the syncer"
    assert j.sync_watermark == 300 and back.count() == 300
    assert_back_office_equals_journal(back, j)


def test_run_forever_survives_target_bugs_and_stops_when_journal_closes(make_journal, back):
    j = make_journal()
    fill_journal(j, 100)

    class Buggy:
        calls = 0

        def push(self, batch, *, anchor=False):
            Buggy.calls += 1
            if Buggy.calls == 1:
                raise RuntimeError("driver bug")
            return back.push(batch, anchor=anchor)

    errors = []
    stop = threading.Event()
    thread = threading.Thread(target=Syncer(j, Buggy()).run_forever, args=(stop,),
                              kwargs=dict(interval=0.01, max_backoff=0.05, on_error=errors.append))
    thread.start()
    deadline = time.monotonic() + 10
    while j.sync_watermark < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert j.sync_watermark == 100 and [type(e) for e in errors] == [RuntimeError]
    assert thread.is_alive()
    stop.set()
    thread.join(5)
    assert not thread.is_alive()


def test_run_forever_ends_when_the_journal_closes(back):
    hj = HandJournal(10)
    thread = threading.Thread(target=Syncer(hj, back).run_forever, kwargs=dict(interval=0.01))
    thread.start()
    deadline = time.monotonic() + 5
    while hj.sync_watermark < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    hj.closed = True                   # the POS shuts the journal: the syncer thread ends by itself
    thread.join(5)
    assert not thread.is_alive() and back.count() == 10
