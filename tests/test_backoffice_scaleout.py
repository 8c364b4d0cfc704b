"""Scale-out: several stateless `posfast serve` processes in front of one PostgreSQL.

Real server processes on loopback ports, a real PostgreSQL (tests/_pg.py), one journal
pushed through two servers at once; a server SIGKILLed mid-batch, another frozen
(SIGSTOP) inside its transaction.  After each: every record stored exactly once (the
rows in PostgreSQL), the journal's sync completes through the server that is left.
"""
import os
import signal
import sys
import threading
import time

import pytest

psycopg = pytest.importorskip("psycopg", reason="PostgresTarget needs psycopg 3 (pip install 'psycopg[binary]')")
pytest.importorskip("aiohttp", reason="posfast serve needs aiohttp")
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL/SIGSTOP do not exist on Windows")

import posfast  # noqa: E402
from posfast.sync import HttpTarget, PostgresTarget, SyncUnavailable, Syncer  # noqa: E402

from _sync_helpers import assert_back_office_equals_journal, fill_journal, start_serve_process  # noqa: E402

TOKEN = "till-token-5c1e0b9d7f3a"


class Servers:
    """`posfast serve` processes on one database; all killed at the end."""

    def __init__(self, tmp_path, db_url, tokens):
        self.tmp_path, self.db_url, self.tokens, self.procs = tmp_path, db_url, tokens, []

    def start(self):
        proc, url = start_serve_process(self.db_url, self.tokens, self.tmp_path)
        self.procs.append(proc)
        return proc, url

    def close(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait(30)
            proc.stdout.close()


@pytest.fixture
def journal(tmp_path):
    j = posfast.Journal.create(tmp_path / "till.pfj", capacity=100_000, durability="none")
    fill_journal(j, 12_000, seed=21, max_payload=200)
    yield j
    j.close()


@pytest.fixture
def servers(tmp_path, dsn, journal):
    PostgresTarget(dsn).close()          # the schema once, before the servers race to start
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"{journal.journal_id}={TOKEN}\n")
    s = Servers(tmp_path, dsn, tokens)
    yield s
    s.close()


def held_rows(dsn, journal_id):
    """(rows, distinct seqs, min, max) of the journal in PostgreSQL, and its journals row."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM records "
                            "WHERE journal_id = %s", (journal_id,)).fetchone()
        jrow = conn.execute("SELECT high_seq, records FROM journals WHERE journal_id = %s",
                            (journal_id,)).fetchone()
        refusals = conn.execute("SELECT reason, message FROM sync_refusals").fetchall()
    return tuple(rows), tuple(jrow) if jrow else None, refusals


class Pusher(threading.Thread):
    """A Syncer through one server, round after round, until the journal is synced or it fails."""

    def __init__(self, journal, url, batch, *, stop_on_error=True, deadline=90.0):
        super().__init__(daemon=True)
        self.target = HttpTarget(url, TOKEN, timeout=20)
        self.syncer = Syncer(journal, self.target, batch=batch)
        self.journal, self.stop_on_error, self.deadline = journal, stop_on_error, deadline
        self.acks = []              # (monotonic time, ack) of every acknowledged push
        self.errors = []
        self.in_flight = threading.Event()
        inner = self.target.push

        def push(batch, **kw):
            self.in_flight.set()
            try:
                ack = inner(batch, **kw)
            finally:
                self.in_flight.clear()
            self.acks.append((time.monotonic(), ack))
            return ack
        self.target.push = push

    def run(self):
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.deadline:
            try:
                self.syncer.run_once()
            except SyncUnavailable as exc:
                self.errors.append(exc)
                if self.stop_on_error:
                    return
                time.sleep(0.2)
                continue
            except Exception as exc:    # a refusal or a bad ack would be a bug of the scale-out
                self.errors.append(exc)
                return
            if self.journal.sync_watermark >= self.journal.head_seq and self.done.is_set():
                return

    done = threading.Event()


def test_one_journal_through_two_servers_at_once_sigkill_one_mid_batch(journal, servers, dsn):
    proc_a, url_a = servers.start()
    proc_b, url_b = servers.start()
    stop_selling = threading.Event()

    def cashier():                      # the till keeps selling while both servers take its records
        i = 0
        while not stop_selling.is_set() and i < 3000:
            journal.append(terminal=1, kind="sale", state="approved", amount=100 + i, currency=156,
                           payload=b"s" * (i % 120))
            i += 1
            time.sleep(0.0005)

    till = threading.Thread(target=cashier, daemon=True)
    a = Pusher(journal, url_a, batch=1500)
    b = Pusher(journal, url_b, batch=400, stop_on_error=False)
    b.done = threading.Event()
    till.start()
    a.start()
    b.start()
    # both pushing: wait until each has had a batch acknowledged, then catch A in the middle of one
    deadline = time.monotonic() + 60
    while (not a.acks or not b.acks) and time.monotonic() < deadline and a.is_alive():
        time.sleep(0.01)
    assert a.acks and b.acks, (a.errors, b.errors)
    assert a.in_flight.wait(30)
    time.sleep(0.01)                    # the batch is on the wire or in A's transaction
    killed_at = time.monotonic()
    proc_a.send_signal(signal.SIGKILL)
    proc_a.wait(30)
    a.join(60)
    assert not a.is_alive()
    assert len(a.errors) == 1 and isinstance(a.errors[0], SyncUnavailable), a.errors   # the push was cut
    stop_selling.set()
    till.join(30)
    b.done.set()
    b.join(120)
    assert not b.is_alive() and [e for e in b.errors if not isinstance(e, SyncUnavailable)] == []
    assert any(t > killed_at for t, _ in b.acks), "the other server kept serving after the kill"
    head = journal.head_seq
    assert head >= 12_000 and journal.sync_watermark == head

    (rows, distinct, lo, hi), jrow, refusals = held_rows(dsn, journal.journal_id)
    assert (rows, distinct, lo, hi) == (head, head, 1, head)     # every record exactly once
    assert jrow == (head, head)
    assert refusals == []                # overlapping pushes are duplicates, never gaps or forks
    duplicates = sum(ack.duplicates for _, ack in a.acks + b.acks)
    assert duplicates > 0                # the two servers really took the same records at once
    target = PostgresTarget(dsn, readonly=True)
    assert_back_office_equals_journal(target, journal)
    target.close()
    # the server that is left still answers for the journal
    assert HttpTarget(url_b, TOKEN).state(journal.journal_id).high_seq == head


def _in_transaction(dsn, pid):
    """Is a back-office session of server process `pid` inside a transaction on the journals row?"""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
            "WHERE a.application_name = %s AND a.xact_start IS NOT NULL AND l.relation = 'journals'::regclass "
            "AND l.mode = 'RowShareLock'", (f"posfast serve {pid}",)).fetchone()[0] > 0


def test_server_frozen_inside_its_transaction_does_not_stall_the_other(journal, servers, dsn, monkeypatch):
    """SIGSTOP (a hung machine, a partition) while a server holds the journal's row lock: the
    other answers 503 after lock_timeout instead of hanging, the database ends the frozen
    session after idle_in_transaction_session_timeout, and the sync completes."""
    # (shorter than the defaults, SESSION_DEFAULTS, which the servers keep when nothing is set)
    monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=1000 -c idle_in_transaction_session_timeout=3000")
    proc_a, url_a = servers.start()
    proc_b, url_b = servers.start()
    a = Pusher(journal, url_a, batch=3000)
    a.start()
    frozen = False
    deadline = time.monotonic() + 60
    with psycopg.connect(dsn, autocommit=True) as watch:
        query = ("SELECT count(*) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
                 "WHERE a.application_name = %s AND a.xact_start IS NOT NULL "
                 "AND l.relation = 'journals'::regclass AND l.mode = 'RowShareLock'")
        name = f"posfast serve {proc_a.pid}"
        while not frozen and time.monotonic() < deadline and a.is_alive():
            if watch.execute(query, (name,)).fetchone()[0]:
                proc_a.send_signal(signal.SIGSTOP)
                if watch.execute(query, (name,)).fetchone()[0]:
                    frozen = True           # stopped with the row lock held
                else:
                    proc_a.send_signal(signal.SIGCONT)
    assert frozen, "could not catch server A inside a push transaction"
    t0 = time.monotonic()
    b = Pusher(journal, url_b, batch=2000, stop_on_error=False, deadline=60)
    b.done = threading.Event()
    b.done.set()
    b.start()
    b.join(90)
    took = time.monotonic() - t0
    assert not b.is_alive() and journal.sync_watermark == journal.head_seq == 12_000, b.errors
    assert [e for e in b.errors if not isinstance(e, SyncUnavailable)] == []
    # B's server waited lock_timeout (1 s) for the frozen row, answered 503, and B's terminal retried
    # until the database ended A's session (3 s idle in its transaction)
    assert any("503" in str(e) for e in b.errors), b.errors
    assert took < 40
    proc_a.send_signal(signal.SIGCONT)     # A wakes up: its session is gone, it answers again
    a.join(60)
    assert not a.is_alive()
    (rows, distinct, lo, hi), jrow, refusals = held_rows(dsn, journal.journal_id)
    assert (rows, distinct, lo, hi) == (12_000, 12_000, 1, 12_000) and jrow == (12_000, 12_000)
    assert refusals == []
    assert HttpTarget(url_a, TOKEN).state(journal.journal_id).high_seq == 12_000
    assert not _in_transaction(dsn, proc_a.pid)
    os.kill(proc_a.pid, 0)                  # A is still alive and serving


def test_servers_start_together_on_an_empty_database_and_beside_busy_ones(tmp_path, dsn, journal):
    """Three servers started at once on a database with no tables (they race to create the
    schema); then one more started while another server's push transaction is open on the
    records table (a rolling restart): it starts at once, it does not queue the pushes."""
    import subprocess
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"{journal.journal_id}={TOKEN}\n")
    servers = Servers(tmp_path, dsn, tokens)
    try:
        from _child_env import CHILD_CWD, child_env
        procs = [subprocess.Popen([sys.executable, "-m", "posfast", "serve", "--db", dsn, "--port", "0",
                                   "--tokens-file", str(tokens)], stdout=subprocess.PIPE,
                                  stderr=open(tmp_path / "serve.log", "ab"), text=True, env=child_env(),
                                  cwd=CHILD_CWD) for _ in range(3)]
        servers.procs += procs
        urls = []
        for proc in procs:
            line = proc.stdout.readline()
            assert "listening on" in line, (tmp_path / "serve.log").read_text()
            urls.append(line.split("listening on ")[1].split()[0])
        for i, url in enumerate(urls):          # each serves: a third of the backlog through each
            Syncer(journal, HttpTarget(url, TOKEN), batch=1000).run_once(max_records=4000)
            assert journal.sync_watermark == 4000 * (i + 1)
        with psycopg.connect(dsn) as busy:      # a push transaction left open by a busy server
            busy.execute("LOCK TABLE records IN ROW EXCLUSIVE MODE")
            release = threading.Timer(20, busy.rollback)    # (a server that waits would wait this long)
            release.start()
            t0 = time.monotonic()
            _, url = servers.start()
            took = time.monotonic() - t0
            release.cancel()
            busy.rollback()
            assert took < 10, f"a server took {took:.1f} s to start beside an open push transaction"
        assert HttpTarget(url, TOKEN).state(journal.journal_id).high_seq == 12_000
    finally:
        servers.close()
    (rows, distinct, lo, hi), jrow, _ = held_rows(dsn, journal.journal_id)
    assert (rows, distinct, lo, hi, jrow) == (12_000, 12_000, 1, 12_000, (12_000, 12_000))


def test_sigterm_lets_the_batch_in_flight_finish_rolling_restart(journal, servers, dsn):
    """A rolling restart: SIGTERM a server while a push is in flight; that push is still
    acknowledged (or, if cut, retried through the other server), the server exits 0, and the
    sync completes through the other one."""
    proc_a, url_a = servers.start()
    proc_b, url_b = servers.start()
    a = Pusher(journal, url_a, batch=3000)
    a.start()
    deadline = time.monotonic() + 60
    while not _in_transaction(dsn, proc_a.pid) and time.monotonic() < deadline and a.is_alive():
        time.sleep(0.002)
    assert a.is_alive() and not a.acks, "could not catch server A inside its first push"
    proc_a.send_signal(signal.SIGTERM)          # with its first batch inside its transaction
    assert proc_a.wait(60) == 0
    a.join(60)
    assert not a.is_alive()
    b = Pusher(journal, url_b, batch=3000, stop_on_error=False)
    b.done = threading.Event()
    b.done.set()
    b.start()
    b.join(60)
    assert journal.sync_watermark == journal.head_seq == 12_000, (a.errors, b.errors)
    assert [ack.last_seq for _, ack in a.acks][:1] == [3000], a.errors   # the batch in flight was acknowledged
    (rows, distinct, lo, hi), jrow, refusals = held_rows(dsn, journal.journal_id)
    assert (rows, distinct, lo, hi, jrow, refusals) == (12_000, 12_000, 1, 12_000, (12_000, 12_000), [])
