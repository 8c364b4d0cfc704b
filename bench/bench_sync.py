"""Sync throughput: a 100k-record offline backlog pushed to each target, and the sync
server under 50 concurrent terminals.  Prints one table.

    python bench/bench_sync.py                 # ~30 s on 2 cores
    python bench/bench_sync.py --records 20000 --terminals 20

Targets: SQLite (WAL, synchronous=FULL), PostgreSQL (a throwaway cluster from
tests/_pg.py with fsync on, or POSFAST_PG_DSN), and HTTP through ``posfast serve``
(separate process on 127.0.0.1) into SQLite and into PostgreSQL.  The baseline
row is what the SQLite target is measured against: stdlib sqlite3 inserting the
same rows (same schema and index, same batch transactions, same pragmas) with no
checks at all, i.e. the ceiling of a SQLite back office on this machine.
"""
import argparse
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]

import posfast  # noqa: E402
from posfast.sync import HttpTarget, PostgresTarget, RecordBatch, SqliteTarget, Syncer, SyncUnavailable  # noqa: E402
from posfast.sync.backoffice import db_rows, schema_statements  # noqa: E402

from _sync_helpers import fill_journal  # noqa: E402


def make_journal(path, n, *, terminal=1, seed=0, max_payload=240):
    j = posfast.Journal.create(path, capacity=n * 3 + 16, durability="none")
    fill_journal(j, n, seed=seed, terminal=terminal, max_payload=max_payload)
    return j


def timed_sync(journal, target, batch):
    t0 = time.perf_counter()
    result = Syncer(journal, target, batch=batch).run_once()
    dt = time.perf_counter() - t0
    assert result.watermark == journal.head_seq, result
    return result.sent, dt


def baseline_sqlite(db, journal, batch):
    """Plain sqlite3: the same inserts with no continuity checks, as fast as SQLite goes."""
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    for stmt in schema_statements("sqlite"):
        con.execute(stmt)
    names = posfast.RECORD_DTYPE.names
    sql = (f"INSERT INTO records (journal_id, {', '.join(chr(34) + n + chr(34) for n in names)}, payload, link, "
           f"order_ref, host_ref, text_raw, local_time) VALUES ({', '.join('?' * (len(names) + 7))})")
    head = journal.head_seq
    batches = [journal.read_range(a, min(a + batch - 1, head)) for a in range(1, head + 1, batch)]
    batches = [RecordBatch(b.journal_id, b.rows, b.payloads, b.links, None, b.exts) for b in batches]
    jid = str(journal.journal_id)
    t0 = time.perf_counter()
    for b in batches:
        con.execute("BEGIN")
        con.executemany(sql, db_rows(jid, b, 0))
        con.execute("COMMIT")
    dt = time.perf_counter() - t0
    con.close()
    return head, dt


def start_server(db_url, tokens_file, log):
    proc = subprocess.Popen([sys.executable, "-m", "posfast", "serve", "--db", db_url, "--port", "0",
                             "--tokens-file", tokens_file, "--create"], stdout=subprocess.PIPE, stderr=log, text=True,
                            env=dict(os.environ, PYTHONPATH=REPO))
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, line.split("listening on ")[1].split()[0]


def stop_server(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


def fleet(tmp, db_url, terminals, per_terminal, batch, log, tag):
    """`terminals` threads, each its own journal and token, syncing at once."""
    journals = [make_journal(os.path.join(tmp, f"fleet-{tag}-{i}.pfj"), per_terminal, terminal=i + 1, seed=i,
                             max_payload=160) for i in range(terminals)]
    tokens_file = os.path.join(tmp, "fleet-tokens.txt")
    with open(tokens_file, "w") as fh:
        fh.writelines(f"{j.journal_id}=bench-token-{i:06d}\n" for i, j in enumerate(journals))
    proc, url = start_server(db_url, tokens_file, log)
    barrier = threading.Barrier(terminals + 1)
    requests = [0] * terminals

    def terminal(i):
        syncer = Syncer(journals[i], HttpTarget(url, f"bench-token-{i:06d}", timeout=120), batch=batch)
        barrier.wait()
        while journals[i].sync_watermark < per_terminal:
            try:
                requests[i] += syncer.run_once().batches
            except SyncUnavailable:
                time.sleep(0.05)

    threads = [threading.Thread(target=terminal, args=(i,)) for i in range(terminals)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    stop_server(proc)
    for j in journals:
        j.close()
    return terminals * per_terminal, dt, sum(requests)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--terminals", type=int, default=50)
    ap.add_argument("--per-terminal", type=int, default=2000)
    ap.add_argument("--fleet-batch", type=int, default=100)
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="posfast-bench-sync-")
    log = open(os.path.join(tmp, "server.log"), "ab")
    rows = []   # (what, records, seconds, extra)
    cluster = None
    try:
        n, b = args.records, args.batch
        t0 = time.perf_counter()
        src = make_journal(os.path.join(tmp, "base.pfj"), n)
        print(f"built a {n}-record backlog in {time.perf_counter() - t0:.1f}s "
              f"(avg payload {src.read_range(1, 1000).rows['payload_len'].astype(int).mean():.0f} B)", file=sys.stderr)
        recs, dt = baseline_sqlite(os.path.join(tmp, "baseline.db"), src, b)
        rows.append(("raw sqlite3 executemany (baseline)", recs, dt, ""))
        src.close()

        def fresh(name):
            return make_journal(os.path.join(tmp, name), n)

        j = fresh("sqlite.pfj")
        target = SqliteTarget(os.path.join(tmp, "back.db"), create=True)
        recs, dt = timed_sync(j, target, b)
        rows.append(("SqliteTarget (Syncer.run_once)", recs, dt, ""))
        target.close()
        j.close()

        tokens_file = os.path.join(tmp, "tokens.txt")
        j = fresh("http.pfj")
        with open(tokens_file, "w") as fh:
            fh.write(f"{j.journal_id}=bench-token-0123456\n")
        proc, url = start_server(f"sqlite:///{tmp}/http-back.db", tokens_file, log)
        recs, dt = timed_sync(j, HttpTarget(url, "bench-token-0123456"), b)
        rows.append(("HTTP -> posfast serve -> SQLite", recs, dt, ""))
        stop_server(proc)
        j.close()

        pg_dsn = None
        if not args.no_postgres:
            try:
                import psycopg  # noqa: F401
                import _pg
                if os.environ.get("POSFAST_PG_DSN"):
                    pg_dsn = _pg.fresh_database(os.environ["POSFAST_PG_DSN"])
                elif _pg.find_bindir():
                    cluster = _pg.Cluster(_pg.find_bindir(), fsync=True)
                    pg_dsn = _pg.fresh_database(cluster.dsn)
            except ImportError:
                pass
        if pg_dsn:
            j = fresh("pg.pfj")
            target = PostgresTarget(pg_dsn)
            recs, dt = timed_sync(j, target, b)
            rows.append(("PostgresTarget (Syncer.run_once)", recs, dt, "fsync on"))
            target.close()
            j.close()
            j = fresh("http-pg.pfj")
            with open(tokens_file, "w") as fh:
                fh.write(f"{j.journal_id}=bench-token-0123456\n")
            proc, url = start_server(_pg.fresh_database(cluster.dsn if cluster else pg_dsn), tokens_file, log)
            recs, dt = timed_sync(j, HttpTarget(url, "bench-token-0123456"), b)
            rows.append(("HTTP -> posfast serve -> PostgreSQL", recs, dt, "fsync on"))
            stop_server(proc)
            j.close()
        else:
            print("PostgreSQL rows skipped: no psycopg or no PostgreSQL binaries", file=sys.stderr)

        recs, dt, reqs = fleet(tmp, f"sqlite:///{tmp}/fleet.db", args.terminals, args.per_terminal,
                               args.fleet_batch, log, "sqlite")
        rows.append((f"{args.terminals} terminals -> serve -> SQLite", recs, dt,
                     f"{reqs / dt:.0f} batches/s, batch {args.fleet_batch}"))
        if pg_dsn:
            recs, dt, reqs = fleet(tmp, _pg.fresh_database(cluster.dsn if cluster else pg_dsn), args.terminals,
                                   args.per_terminal, args.fleet_batch, log, "pg")
            rows.append((f"{args.terminals} terminals -> serve -> PostgreSQL", recs, dt,
                         f"{reqs / dt:.0f} batches/s, batch {args.fleet_batch}"))
    finally:
        log.close()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    base = rows[0][1] / rows[0][2]
    print(f"\nposfast sync, {args.records} records, batch {args.batch} (fleet: {args.terminals} x "
          f"{args.per_terminal}), {os.cpu_count()} cores")
    print(f"{'path':40} {'records':>8} {'seconds':>8} {'records/s':>10} {'vs raw sqlite3':>15}  note")
    for what, recs, dt, note in rows:
        rate = recs / dt
        print(f"{what:40} {recs:8d} {dt:8.2f} {rate:10.0f} {rate / base:14.2f}x  {note}")


if __name__ == "__main__":
    main()
