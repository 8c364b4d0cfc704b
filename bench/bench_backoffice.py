"""Back office scale-out: 1,000 simulated terminals with backlogs pushing through N
`posfast serve` processes into one PostgreSQL.  Prints one table: records/s and push
latency (p50, p99) for each N, and each against N=1.

    python bench/bench_backoffice.py                        # 1,000 terminals x 200 records, N = 1 2 4
    python bench/bench_backoffice.py --terminals 200 --backlog 100 --servers 1 2

Each terminal is a hand-built journal (tests/_sync_helpers.HandJournal: real rows,
payloads, format-2 extensions and chain links) whose backlog is cut into batches and
encoded the way HttpTarget sends them before the clock starts; terminal i talks to
server i mod N (what DNS round robin or a load balancer does).  At most --concurrency
terminals push at a time (a fleet comes online over a while, not in one instant); each
pushes its batches one after the other and retries a 503 after 50 ms.  Every run starts
on a fresh database of one PostgreSQL cluster (tests/_pg.py, fsync on, or
POSFAST_PG_DSN) and ends by counting the rows: every record exactly once.

The load generator (one asyncio process) runs on the same 2 cores as the servers and
PostgreSQL, so this shows how far N processes get on this machine, not how they would
spread over machines: past 2 processes they compete for the same cores.
"""
import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]

import numpy as np  # noqa: E402

from posfast.sync.protocol import encode_batch  # noqa: E402

from _sync_helpers import HandJournal  # noqa: E402


def build_fleet(terminals, backlog, batch, max_payload):
    """[(journal_id, token, [(last_seq, body), ...])] for every terminal."""
    fleet = []
    for i in range(terminals):
        hj = HandJournal(backlog, terminal=i + 1, seed=i, max_payload=max_payload)
        bodies = []
        for first in range(1, backlog + 1, batch):
            last = min(first + batch - 1, backlog)
            bodies.append((last, encode_batch(hj.batch(first, last))))
        fleet.append((hj.journal_id, f"bench-terminal-{i:06d}-token", bodies))
    return fleet


def start_servers(n, db_url, tokens_file, log, workers):
    procs = []
    for _ in range(n):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "posfast", "serve", "--db", db_url, "--port", "0", "--tokens-file",
             tokens_file, "--workers", str(workers)],
            stdout=subprocess.PIPE, stderr=log, text=True, env=dict(os.environ, PYTHONPATH=REPO)))
    urls = []
    for proc in procs:
        line = proc.stdout.readline()
        if "listening on" not in line:
            for p in procs:
                p.kill()
            raise RuntimeError(f"server did not start: {line!r} (see {log.name})")
        urls.append(line.split("listening on ")[1].split()[0])
    return procs, urls


def stop_servers(procs):
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(60)
        proc.stdout.close()


async def push_fleet(fleet, urls, concurrency):
    import aiohttp
    latencies = []
    retries = [0]
    gate = asyncio.Semaphore(concurrency)
    sessions = [aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=concurrency),
                                      timeout=aiohttp.ClientTimeout(total=300)) for url in urls]

    async def terminal(i, jid, token, bodies):
        session = sessions[i % len(sessions)]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        async with gate:
            for last, body in bodies:
                while True:
                    t0 = time.perf_counter()
                    async with session.post(f"/v1/journals/{jid}/batches", data=body, headers=headers) as resp:
                        doc = await resp.read()
                    if resp.status == 503:
                        retries[0] += 1
                        await asyncio.sleep(0.05)
                        continue
                    if resp.status != 200:
                        raise RuntimeError(f"push of journal {jid} to {last}: HTTP {resp.status}: {doc[:300]!r}")
                    latencies.append(time.perf_counter() - t0)
                    if json.loads(doc)["high_seq"] < last:
                        raise RuntimeError(f"journal {jid}: acknowledged below {last}")
                    break

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(terminal(i, *t) for i, t in enumerate(fleet)))
    finally:
        for s in sessions:
            await s.close()
    return time.perf_counter() - t0, np.array(latencies), retries[0]


def count_rows(dsn):
    import psycopg
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*), count(DISTINCT (journal_id, seq)) FROM records").fetchone()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--terminals", type=int, default=1000)
    ap.add_argument("--backlog", type=int, default=200, help="records per terminal")
    ap.add_argument("--batch", type=int, default=50, help="records per push")
    ap.add_argument("--max-payload", type=int, default=160)
    ap.add_argument("--concurrency", type=int, default=200, help="terminals pushing at a time")
    ap.add_argument("--workers", type=int, default=4, help="database threads per server process")
    ap.add_argument("--servers", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args()
    try:
        import psycopg  # noqa: F401
        import aiohttp  # noqa: F401
    except ImportError as exc:
        sys.exit(f"bench_backoffice needs psycopg and aiohttp: pip install 'posfast[server,postgres]' ({exc})")
    import _pg

    tmp = tempfile.mkdtemp(prefix="posfast-bench-bo-")
    log = open(os.path.join(tmp, "servers.log"), "ab")
    cluster = None
    if os.environ.get("POSFAST_PG_DSN"):
        base = os.environ["POSFAST_PG_DSN"]
    else:
        bindir = _pg.find_bindir()
        if bindir is None:
            sys.exit(_pg.SKIP_REASON)
        cluster = _pg.Cluster(bindir, fsync=True)
        base = cluster.dsn
    try:
        t0 = time.perf_counter()
        fleet = build_fleet(args.terminals, args.backlog, args.batch, args.max_payload)
        total = args.terminals * args.backlog
        pushes = sum(len(b) for _, _, b in fleet)
        print(f"built {args.terminals} terminals x {args.backlog} records ({pushes} pushes of <= {args.batch}) "
              f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        tokens_file = os.path.join(tmp, "tokens.txt")
        with open(tokens_file, "w") as fh:
            fh.writelines(f"{jid}={token}\n" for jid, token, _ in fleet)
        results = []
        for n in args.servers:
            dsn = _pg.fresh_database(base)
            from posfast.sync import PostgresTarget
            PostgresTarget(dsn).close()                 # the schema, outside the timing
            procs, urls = start_servers(n, dsn, tokens_file, log, args.workers)
            try:
                took, lat, retries = asyncio.run(push_fleet(fleet, urls, args.concurrency))
            finally:
                stop_servers(procs)
            rows, distinct = count_rows(dsn)
            if (rows, distinct) != (total, total):
                raise SystemExit(f"N={n}: {rows} rows ({distinct} distinct) in PostgreSQL, expected {total}")
            results.append((n, total / took, float(np.percentile(lat, 50)) * 1e3,
                            float(np.percentile(lat, 99)) * 1e3, retries, took))
            print(f"N={n}: {total / took:,.0f} records/s", file=sys.stderr)
    finally:
        log.close()
        if cluster is not None:
            cluster.stop()

    cores = os.cpu_count()
    print(f"\n{args.terminals} terminals x {args.backlog} records, batches of {args.batch}, {args.concurrency} "
          f"pushing at once, {args.workers} DB threads per server; PostgreSQL fsync on; {cores} cores shared by "
          "the servers, PostgreSQL and the load generator")
    print(f"{'server processes':>16} | {'records/s':>10} | {'vs N=1':>6} | {'p50 push ms':>11} | "
          f"{'p99 push ms':>11} | {'p99 vs N=1':>10} | {'503 retries':>11} | {'wall s':>6}")
    print("-" * 101)
    base_rate, base_p99 = results[0][1], results[0][3]
    for n, rate, p50, p99, retries, took in results:
        print(f"{n:>16} | {rate:>10,.0f} | {rate / base_rate:>5.2f}x | {p50:>11.1f} | {p99:>11.1f} | "
              f"{p99 / base_p99:>9.2f}x | {retries:>11} | {took:>6.1f}")
    print(f"every run: {total:,} rows in PostgreSQL, each (journal_id, seq) once")


if __name__ == "__main__":
    main()
