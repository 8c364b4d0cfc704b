"""Crash tests: SIGKILL a real syncer process, and the sync server, at random points.

After every kill: nothing lost, nothing twice, and the journal's watermark never
ahead of what the back office committed.  The default run does a few rounds;
``-m slow`` runs many.
"""
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import posfast
from posfast.sync import SqliteTarget, SyncUnavailable, Syncer

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL does not exist on Windows")

from _sync_helpers import (assert_back_office_equals_journal, assert_same_records, fill_journal,  # noqa: E402
                           start_serve_process)
from _child_env import CHILD_CWD, child_env  # noqa: E402

CHILD = r"""
import sys, threading, time
from posfast import Journal
from posfast.sync import Syncer, target_from_url
path, url, batch, appends = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
token = sys.argv[5] if len(sys.argv) > 5 else None
journal = Journal.open(path, durability="none")
target = target_from_url(url, token=token)

def cashier():              # the till keeps selling while the syncer runs
    for i in range(appends):
        journal.append(terminal=9, kind="sale", state="approved", amount=i + 1, currency=156,
                       payload=b"r" * (i % 90))
        time.sleep(0.0005)

till = threading.Thread(target=cashier)
till.start()
print("ready", flush=True)
syncer = Syncer(journal, target, batch=batch)
while True:
    result = syncer.run_once()
    if result.sent == 0 and not till.is_alive():
        break
till.join()
syncer.run_once()
journal.close()
print("done", flush=True)
"""


def spawn_syncer(path, url, batch, appends, token=None):
    args = [sys.executable, "-c", CHILD, str(path), url, str(batch), str(appends)] + ([token] if token else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=CHILD_CWD)
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError(f"syncer child did not start: {line!r} {proc.stderr.read()}")
    return proc


class Copy:
    """Every record a journal ever held, kept aside (the ring evicts synced ones)."""

    def __init__(self):
        self.rows, self.payloads, self.links = [], [], []

    def take(self, journal):
        have = sum(len(r) for r in self.rows)
        if journal.head_seq > have:
            b = journal.read_range(have + 1, journal.head_seq)
            assert int(b.rows["seq"][0]) == have + 1
            self.rows.append(b.rows)
            self.payloads += b.payloads
            self.links += b.links

    def check(self, target, journal_id, high):
        rows = np.concatenate(self.rows)[:high] if self.rows else None
        held = target.read_range(journal_id, 1, high)
        assert_same_records(held, rows.astype(posfast.RECORD_DTYPE), self.payloads[:high], self.links[:high])


def check_consistent(path, target):
    """No loss, no duplicate, watermark <= what the back office committed; returns (watermark, high)."""
    with posfast.Journal.open(path, readonly=True) as j:
        watermark = j.sync_watermark
        state = target.state(j.journal_id)
        high = state.high_seq if state else 0
        assert watermark <= high, f"watermark {watermark} ahead of back office high-water {high}"
        assert high <= j.head_seq
        assert target.count(j.journal_id) == high and (state is None or state.records == high)
        if high >= j.oldest_seq:   # older synced records may already be evicted from the ring
            assert_back_office_equals_journal(target, j, j.oldest_seq, high)
        return watermark, high


def make_backlog(path, n, capacity=60_000):
    j = posfast.Journal.create(path, capacity=capacity, durability="none")
    fill_journal(j, n, seed=11)
    j.close()


def kill_syncer_rounds(tmp_path, url, target, rounds, seed, token=None):
    rng = random.Random(seed)
    path = tmp_path / "till.pfj"
    make_backlog(path, 8000)
    seen = []
    for _ in range(rounds):
        proc = spawn_syncer(path, url, rng.choice([37, 250, 1000, 3000]), 400, token)
        time.sleep(rng.uniform(0.0, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
        proc.stderr.close()
        seen.append(check_consistent(path, target))
    proc = spawn_syncer(path, url, 500, 50, token)          # finally let it finish
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    watermark, high = check_consistent(path, target)
    with posfast.Journal.open(path, readonly=True) as j:
        assert watermark == high == j.head_seq >= 8050   # the backlog, and what the tills added
        assert_back_office_equals_journal(target, j, j.oldest_seq)
    return seen


def test_sigkill_syncer_at_random_points(tmp_path):
    url = f"sqlite:///{tmp_path}/back.db"
    target = SqliteTarget(tmp_path / "back.db", create=True)
    seen = kill_syncer_rounds(tmp_path, url, target, rounds=4, seed=1)
    assert any(0 < high for _, high in seen)   # kills did land while it was syncing
    target.close()


@pytest.mark.slow
def test_sigkill_syncer_many_rounds(tmp_path):
    target = SqliteTarget(tmp_path / "back.db", create=True)
    kill_syncer_rounds(tmp_path, f"sqlite:///{tmp_path}/back.db", target, rounds=30, seed=2)
    target.close()


def test_sigkill_syncer_into_postgres(tmp_path):
    pytest.importorskip("psycopg")
    import _pg
    if _pg.base_dsn() is None:
        pytest.skip(_pg.SKIP_REASON)
    from posfast.sync import PostgresTarget
    dsn = _pg.fresh_database()
    target = PostgresTarget(dsn)
    kill_syncer_rounds(tmp_path, dsn, target, rounds=3, seed=3)
    target.close()


def kill_server_rounds(tmp_path, rounds, seed):
    pytest.importorskip("aiohttp")
    from posfast.sync import HttpTarget
    rng = random.Random(seed)
    path = tmp_path / "till.pfj"
    make_backlog(path, 12_000, capacity=(12_000 + 4000 * rounds) * 4)   # room even if no round syncs
    with posfast.Journal.open(path, readonly=True) as j:
        jid = j.journal_id
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"{jid}=till-token-9d1b7a4f8e2c\n")
    db = tmp_path / "back.db"
    url = f"sqlite:///{db}"
    interrupted = 0
    copy = Copy()
    for _ in range(rounds):
        server, base = start_serve_process(url, tokens, tmp_path)
        journal = posfast.Journal.open(path, durability="none")
        copy.take(journal)
        fill_journal(journal, 4000, seed=rng.randrange(1 << 30))    # a fresh backlog every round
        copy.take(journal)
        outcome = []

        def sync():
            try:
                outcome.append(Syncer(journal, HttpTarget(base, "till-token-9d1b7a4f8e2c", timeout=10),
                                      batch=rng.choice([300, 1500, 4000])).run_once())
            except SyncUnavailable as exc:
                outcome.append(exc)

        thread = threading.Thread(target=sync)
        thread.start()
        time.sleep(rng.uniform(0.01, 0.15))
        server.send_signal(signal.SIGKILL)                 # mid-batch, most of the time
        server.wait(30)
        server.stdout.close()
        thread.join(60)
        journal.close()
        interrupted += isinstance(outcome[0], SyncUnavailable)
        target = SqliteTarget(db)
        _, high = check_consistent(path, target)
        copy.check(target, jid, high)            # evicted history too, record for record
        target.close()
    server, base = start_serve_process(url, tokens, tmp_path)
    try:
        with posfast.Journal.open(path) as journal:
            Syncer(journal, HttpTarget(base, "till-token-9d1b7a4f8e2c"), batch=2000).run_once()
    finally:
        server.terminate()
        server.wait(30)
        server.stdout.close()
    target = SqliteTarget(db)
    watermark, high = check_consistent(path, target)
    assert watermark == high == 12_000 + 4000 * rounds
    copy.check(target, jid, high)
    target.close()
    return interrupted


def test_sigkill_server_mid_batch(tmp_path):
    interrupted = kill_server_rounds(tmp_path, rounds=3, seed=4)
    assert interrupted >= 1


@pytest.mark.slow
def test_sigkill_server_many_rounds(tmp_path):
    assert kill_server_rounds(tmp_path, rounds=20, seed=5) >= 10
