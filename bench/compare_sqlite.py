"""posfast against stdlib sqlite3 on the same workload, in the same run, on the same disk.

    python bench/compare_sqlite.py                      # 1,000,000 records, ~2 min on 2 cores
    python bench/compare_sqlite.py --records 100000 --json out.json
    python bench/compare_sqlite.py --dir /var/tmp       # where the files go (a real disk,
                                                        # never tmpfs: fdatasync must cost)

Workload: N records over 16 terminals and 90 business days (UTC+08:00, day starts
04:00), timestamps in trading hours in time order, amounts in minor units (fen),
kinds mostly sale with some refund and void, states approved/declined, methods
card/cash/qr, short pan_last4 / auth_code / rrn / client_ref strings.  Both stores
receive exactly the same rows; every query result is cross-checked (row counts,
totals, the last record) before anything is printed.

SQLite is set up the way a careful POS developer would: one table with the same
columns, seq as INTEGER PRIMARY KEY, indexes on (day, terminal) and (terminal, seq)
created before the data arrives, journal_mode=WAL, synchronous=FULL, a 64 MiB page
cache and a 1 GiB mmap (the pragmas are printed with the table).  The bulk insert is
one transaction with executemany over tuples built outside the timer; durable single
appends commit one row per transaction.  posfast runs in its default durability
mode (fsync: every append is on stable storage when it returns).

Each ratio is sqlite3 / posfast, so > 1 means posfast is faster (or smaller).  The
physical floor of a durable append is one pwrite of 128 bytes plus one fdatasync
at fresh positions of a file made by Journal.create (so preallocated exactly the way
posfast preallocates its ring), in the same directory.  Floor, posfast and SQLite durable appends run round-robin,
one of each at a time, so that a burst of disk load from elsewhere hits all three alike.
Micro-operations report the median per operation over many repetitions, timed
with time.perf_counter.  Open-to-first-query runs with the files in the page
cache (the common case: a POS process restarting on a running terminal).
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

import posfast  # noqa: E402
from posfast import DayRule, Journal, Kind, Method, State  # noqa: E402

TERMINALS = 16
DAYS = 90
FIRST_DAY = dt.date(2026, 8, 1)
DAY_RULE = DayRule(utc_offset="+08:00", starts_at="04:00")
CURRENCY = 156
SQLITE_PRAGMAS = [
    ("journal_mode", "WAL"),
    ("synchronous", "FULL"),
    ("cache_size", "-65536"),        # 64 MiB
    ("mmap_size", str(1 << 30)),
    ("temp_store", "MEMORY"),
]
COLUMNS = ["seq", "ts", "amount", "txn_id", "ref_seq", "day", "terminal", "receipt_no",
           "operator", "currency", "kind", "state", "method", "flags", "pan_last4",
           "auth_code", "rrn", "client_ref"]
SCHEMA = """
CREATE TABLE tx (
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, amount INTEGER NOT NULL,
    txn_id INTEGER NOT NULL, ref_seq INTEGER NOT NULL, day INTEGER NOT NULL,
    terminal INTEGER NOT NULL, receipt_no INTEGER NOT NULL, operator INTEGER NOT NULL,
    currency INTEGER NOT NULL, kind INTEGER NOT NULL, state INTEGER NOT NULL,
    method INTEGER NOT NULL, flags INTEGER NOT NULL, pan_last4 BLOB NOT NULL,
    auth_code BLOB NOT NULL, rrn BLOB NOT NULL, client_ref BLOB NOT NULL);
CREATE INDEX tx_day_terminal ON tx (day, terminal);
CREATE INDEX tx_terminal_seq ON tx (terminal, seq);
"""
SELECT_COLS = ", ".join(COLUMNS)
SQL_INSERT = "INSERT INTO tx (%s) VALUES (%s)" % (SELECT_COLS, ", ".join("?" * len(COLUMNS)))
SQL_DAY_TERMINAL = "SELECT %s FROM tx WHERE day = ? AND terminal = ? ORDER BY seq" % SELECT_COLS
SQL_DAY = "SELECT %s FROM tx WHERE day = ? ORDER BY seq" % SELECT_COLS
SQL_TOTALS = "SELECT kind, SUM(amount), COUNT(*) FROM tx WHERE day = ? GROUP BY kind"
SQL_LAST = "SELECT %s FROM tx WHERE terminal = ? ORDER BY seq DESC LIMIT 1" % SELECT_COLS


# ---------------------------------------------------------------------------- workload
def _digits(rng, n, width):
    return (rng.integers(0, 10, (n, width), dtype=np.uint8) + ord("0")).view("S%d" % width).ravel()


def make_workload(n: int, seed: int = 20261120) -> dict:
    """The N records both stores receive, as numpy columns in seq (= time) order."""
    rng = np.random.default_rng(seed)
    day0 = (FIRST_DAY - dt.date(1970, 1, 1)).days
    # trading hours 07:00-23:00 local, more in the evening; business day by the day rule
    day = rng.integers(0, DAYS, n)
    minute = np.clip(rng.normal(15 * 60, 3.5 * 60, n), 7 * 60, 23 * 60 - 1)
    local_us = ((day0 + day) * 86_400 + minute * 60).astype(np.int64) * 1_000_000 \
        + rng.integers(0, 60_000_000, n)
    ts = np.sort(local_us - DAY_RULE.offset_minutes * 60_000_000)
    terminal = rng.integers(1, TERMINALS + 1, n).astype(np.uint32)
    u = rng.random(n)
    kind = np.where(u < 0.92, int(Kind.SALE), np.where(u < 0.97, int(Kind.REFUND),
                                                      int(Kind.VOID))).astype(np.uint8)
    u = rng.random(n)
    method = np.where(u < 0.55, int(Method.CARD), np.where(u < 0.80, int(Method.CASH),
                                                          int(Method.QR))).astype(np.uint8)
    declined = (rng.random(n) < 0.04) & (method != int(Method.CASH)) & (kind == int(Kind.SALE))
    state = np.where(declined, int(State.DECLINED), int(State.APPROVED)).astype(np.uint8)
    amount = np.maximum(100, np.round(rng.lognormal(7.6, 1.0, n))).astype(np.int64)   # fen
    seq = np.arange(1, n + 1, dtype=np.int64)
    back = rng.integers(1, 500, n)
    ref_seq = np.where(kind != int(Kind.SALE), np.maximum(1, seq - back), 0).astype(np.uint64)
    # receipt numbers count up per terminal
    order = np.argsort(terminal, kind="stable")
    counts = np.bincount(terminal, minlength=TERMINALS + 1)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    receipt_no = np.empty(n, np.uint32)
    receipt_no[order] = np.arange(n) - np.repeat(starts, counts) + 1
    operator = (terminal * 10 + rng.integers(1, 5, n)).astype(np.uint32)
    electronic = method != int(Method.CASH)
    approved_e = electronic & (state == int(State.APPROVED))
    pan_last4 = np.where(method == int(Method.CARD), _digits(rng, n, 4), b"")
    alnum = np.frombuffer(b"ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", np.uint8)
    auth = alnum[rng.integers(0, len(alnum), (n, 6))].view("S6").ravel()
    auth_code = np.where(approved_e, auth, b"")
    rrn = np.where(electronic, _digits(rng, n, 12), b"")
    client_ref = np.char.add(np.char.add(b"T", np.char.zfill(terminal.astype("S2"), 2)),
                             np.char.add(b"-", np.char.zfill(receipt_no.astype("S7"), 7)))
    return {"ts": ts, "terminal": terminal, "kind": kind, "state": state, "method": method,
            "currency": np.full(n, CURRENCY, np.uint16), "amount": amount, "ref_seq": ref_seq,
            "receipt_no": receipt_no, "operator": operator, "pan_last4": pan_last4.astype("S4"),
            "auth_code": auth_code.astype("S6"), "rrn": rrn.astype("S12"),
            "client_ref": client_ref.astype("S16")}


def sqlite_rows(cols: dict, first_seq: int = 1) -> list:
    """The same records as SQLite tuples (txn_id = own seq, as posfast sets it for payments)."""
    n = len(cols["ts"])
    seq = list(range(first_seq, first_seq + n))
    days = ((cols["ts"] + (DAY_RULE.offset_minutes - DAY_RULE.start_minutes) * 60_000_000)
            // 86_400_000_000)
    lists = {"seq": seq, "txn_id": seq, "day": days.tolist(), "flags": [0] * n}
    for name in COLUMNS:
        if name not in lists:
            lists[name] = cols[name].tolist()
    return list(zip(*[lists[name] for name in COLUMNS]))


# ---------------------------------------------------------------------------- timing
def per_op(fn, args, rounds=15):
    """Median over `rounds` of (time for fn(*a) over all of args) / len(args)."""
    results = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for a in args:
            fn(*a)
        results.append((time.perf_counter() - t0) / len(args))
    return statistics.median(results)


def each_op(fn, args):
    """Median of individually timed calls (for operations of tens of microseconds or more)."""
    times = []
    for a in args:
        t0 = time.perf_counter()
        fn(*a)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fmt_time(s):
    if s is None:
        return "-"
    if s >= 1:
        return "%.2f s" % s
    if s >= 1e-3:
        return "%.2f ms" % (s * 1e3)
    return "%.2f µs" % (s * 1e6)


def sqlite_connect(path):
    con = sqlite3.connect(path, isolation_level=None)
    for name, value in SQLITE_PRAGMAS:
        con.execute("PRAGMA %s=%s" % (name, value))
    return con


def dir_on_repo_disk():
    repo_dev = os.stat(REPO).st_dev
    for cand in (tempfile.gettempdir(), os.path.dirname(REPO), REPO):
        try:
            if os.stat(cand).st_dev == repo_dev and not cand.startswith("/dev/shm"):
                return cand
        except OSError:
            pass
    return REPO


def fs_type(path):
    try:
        best = ("", "?")
        with open("/proc/mounts") as f:
            for line in f:
                dev, mnt, fstype = line.split()[:3]
                if os.path.abspath(path).startswith(mnt) and len(mnt) > len(best[0]):
                    best = (mnt, "%s on %s" % (fstype, dev))
        return best[1]
    except OSError:
        return "?"


# ---------------------------------------------------------------------------- benchmark
def run(args):
    n = args.records
    rng = np.random.default_rng(7)
    base = args.dir or dir_on_repo_disk()
    os.makedirs(base, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="posfast-bench-", dir=base)
    pf_path = os.path.join(workdir, "bench.pfj")
    db_path = os.path.join(workdir, "bench.db")
    floor_path = os.path.join(workdir, "floor.bin")
    warm = 10
    extra = args.durable + warm                  # durable appends: the journal ends exactly full
    results = {}
    t_start = time.perf_counter()
    print("posfast %s vs sqlite3 %s (Python %s, numpy %s) on %s, %d CPUs"
          % (getattr(posfast, "__version__", "?"), sqlite3.sqlite_version, platform.python_version(),
             np.__version__, platform.platform(), os.cpu_count()), flush=True)
    print("files in %s (%s)" % (workdir, fs_type(workdir)), flush=True)
    try:
        # Touch (then free) memory first: on a VM the first touch of guest memory can cost
        # ~10 µs a page, which would fall on whichever store allocates first.
        scratch = np.ones(min(3 << 30, max(256 << 20, n * 1500)), dtype=np.uint8)
        del scratch
        cols = make_workload(n)
        rows = sqlite_rows(cols)
        gc.collect()
        print("workload: %s records, %d terminals, %d business days (%s .. %s)  [%.1f s]"
              % (format(n, ","), TERMINALS, DAYS, FIRST_DAY, FIRST_DAY + dt.timedelta(DAYS - 1),
                 time.perf_counter() - t_start), flush=True)

        # ---------------- bulk append: everything durable at the end, index included.
        # Repeated (fresh files each time, alternating which store goes first) so that
        # a burst of load from elsewhere, or the VM's first touch of fresh memory, does
        # not decide the ratio; the median is reported, the last files are kept.
        pf_runs, sq_runs = [], []
        j = con = None
        for rep in range(args.bulk_reps):
            for store in (("posfast", "sqlite") if rep % 2 == 0 else ("sqlite", "posfast")):
                gc.collect()
                if store == "posfast":
                    if j is not None:
                        j.close()
                        for suffix in ("", ".idx"):
                            os.unlink(pf_path + suffix)
                    j = Journal.create(pf_path, capacity=n + extra, slot_size=128,
                                       durability="fsync", day_rule=DAY_RULE)
                    gc.disable()
                    t0 = time.perf_counter()
                    got = j.append_many(cols)
                    j.flush()
                    pf_runs.append(time.perf_counter() - t0)
                    gc.enable()
                    assert got == range(1, n + 1), got
                else:
                    if con is not None:
                        con.close()
                        for suffix in ("", "-wal", "-shm"):
                            if os.path.exists(db_path + suffix):
                                os.unlink(db_path + suffix)
                    con = sqlite_connect(db_path)
                    con.executescript(SCHEMA)
                    gc.disable()
                    t0 = time.perf_counter()
                    con.execute("BEGIN")
                    con.executemany(SQL_INSERT, rows)
                    con.execute("COMMIT")
                    sq_runs.append(time.perf_counter() - t0)
                    gc.enable()
        del rows
        gc.collect()
        pf_bulk, sq_bulk = statistics.median(pf_runs), statistics.median(sq_runs)
        results["bulk_append"] = (pf_bulk, sq_bulk)
        print("bulk append done: posfast %s s, sqlite3 %s s"
              % (" / ".join("%.2f" % x for x in pf_runs), " / ".join("%.2f" % x for x in sq_runs)),
              flush=True)

        # ---------------- queries (same random (day, terminal) pairs for both)
        day0 = (FIRST_DAY - dt.date(1970, 1, 1)).days
        pairs = [(int(day0 + d), int(t)) for d, t in
                 zip(rng.integers(0, DAYS, args.reps), rng.integers(1, TERMINALS + 1, args.reps))]
        days = [(int(day0 + d),) for d in rng.integers(0, DAYS, max(10, args.reps // 4))]
        terms = [(int(t),) for t in rng.integers(1, TERMINALS + 1, 1000)]
        plan = " ".join(str(r[-1]) for r in con.execute("EXPLAIN QUERY PLAN " + SQL_DAY_TERMINAL,
                                                        (day0, 1)))
        # cross-check results once
        for d, t in pairs[:20]:
            a = j.query(day=d, terminal=t)
            b = con.execute(SQL_DAY_TERMINAL, (d, t)).fetchall()
            assert len(a) == len(b) and a["seq"].tolist() == [r[0] for r in b], (d, t)
            assert a["amount"].tolist() == [r[2] for r in b]
        for (t,) in terms[:TERMINALS]:
            r = j.last(t)
            b = con.execute(SQL_LAST, (t,)).fetchone()
            assert r.seq == b[0] and r.amount == b[2] and r.rrn == b[16], (t, r, b)

        def pf_q_dt(d, t):
            return j.query(day=d, terminal=t)

        def sq_q_dt(d, t):
            return con.execute(SQL_DAY_TERMINAL, (d, t)).fetchall()

        def pf_q_day(d):
            return j.query(day=d)

        def sq_q_day(d):
            return con.execute(SQL_DAY, (d,)).fetchall()

        def pf_totals(d):
            r = j.query(day=d)
            kinds = r["kind"]
            amounts = r["amount"]
            return {int(k): (int(amounts[kinds == k].sum()), int((kinds == k).sum()))
                    for k in np.unique(kinds)}

        def sq_totals(d):
            return {k: (s, c) for k, s, c in con.execute(SQL_TOTALS, (d,))}

        for (d,) in days[:5]:
            assert pf_totals(d) == sq_totals(d), d

        def sq_last(t):
            return con.execute(SQL_LAST, (t,)).fetchone()

        for fn, a in ((pf_q_dt, pairs), (sq_q_dt, pairs), (j.last, terms), (sq_last, terms)):
            each_op(fn, a[:50])                                                   # warm up
        dt_rows = statistics.mean(len(j.query(day=d, terminal=t)) for d, t in pairs[:50])
        day_rows = statistics.mean(len(j.query(day=d)) for (d,) in days)
        results["day_terminal_query"] = (each_op(pf_q_dt, pairs), each_op(sq_q_dt, pairs))
        results["day_query"] = (each_op(pf_q_day, days), each_op(sq_q_day, days))
        results["day_totals"] = (each_op(pf_totals, days), each_op(sq_totals, days))
        results["last_transaction"] = (per_op(j.last, terms), per_op(sq_last, terms))
        print("queries done  [%.1f s]" % (time.perf_counter() - t_start), flush=True)

        # ---------------- durable single appends, interleaved with the physical floor
        # The floor writes into a file made by Journal.create itself (then closed and written
        # raw), so that its blocks are allocated exactly as posfast's ring is: fresh positions
        # of the same kind of file, whatever create does (posix_fallocate alone left unwritten
        # extents, whose first write costs an extent conversion in the fdatasync).
        Journal.create(floor_path, capacity=extra + 1, slot_size=128, durability="fsync",
                       day_rule=DAY_RULE).close()
        if os.path.exists(floor_path + ".idx"):
            os.unlink(floor_path + ".idx")
        fd = os.open(floor_path, os.O_RDWR)
        ts_next = int(cols["ts"][-1]) + 1_000_000
        slot = [0]

        def floor_op(i):
            os.pwrite(fd, b"\x5a" * 128, 8192 + 128 * slot[0])
            os.fdatasync(fd)
            slot[0] += 1

        seq_next = [n + 1]

        def pf_append(i):
            j.append(ts=ts_next + i, terminal=1 + i % TERMINALS, kind="sale", state="approved",
                     amount=1250 + i, currency=CURRENCY, method="card", receipt_no=900000 + i,
                     operator=11, pan_last4=b"4242", auth_code=b"A1B2C3", rrn=b"612345678901",
                     client_ref=b"T01-0900000")

        def sq_append(i):
            s = seq_next[0]
            seq_next[0] += 1
            d = (ts_next + i + (DAY_RULE.offset_minutes - DAY_RULE.start_minutes) * 60_000_000) \
                // 86_400_000_000
            con.execute("BEGIN")
            con.execute(SQL_INSERT, (s, ts_next + i, 1250 + i, s, 0, d, 1 + i % TERMINALS,
                                     900000 + i, 11, CURRENCY, int(Kind.SALE), int(State.APPROVED),
                                     int(Method.CARD), 0, b"4242", b"A1B2C3", b"612345678901",
                                     b"T01-0900000"))
            con.execute("COMMIT")

        # round-robin, one operation of each at a time: disk load from elsewhere hits all alike
        floor_t, pf_t, sq_t = [], [], []
        for i in range(args.durable + warm):
            for fn, out in ((floor_op, floor_t), (pf_append, pf_t), (sq_append, sq_t)):
                t0 = time.perf_counter()
                fn(i)
                dt_ = time.perf_counter() - t0
                if i >= warm:
                    out.append(dt_)
        os.close(fd)
        floor = statistics.median(floor_t)
        results["durable_append"] = (statistics.median(pf_t), statistics.median(sq_t))
        results["fdatasync_floor"] = (floor, floor)
        assert j.head_seq == j.capacity, (j.head_seq, j.capacity)   # full
        print("durable appends done (%d each)  [%.1f s]"
              % (len(pf_t), time.perf_counter() - t_start), flush=True)

        # ---------------- bytes per record (closed files; SQLite checkpointed)
        j.close()
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        pf_records = n + extra
        pf_bytes = os.path.getsize(pf_path) + os.path.getsize(pf_path + ".idx")
        sq_bytes = sum(os.path.getsize(p) for p in (db_path, db_path + "-wal") if os.path.exists(p))
        results["bytes_per_record"] = (pf_bytes / pf_records, sq_bytes / pf_records)

        # ---------------- open a full journal + first query (page cache warm)
        d, t = pairs[0]
        pf_open, sq_open = [], []
        for _ in range(args.open_reps):
            t0 = time.perf_counter()
            j = Journal.open(pf_path)
            r1 = j.query(day=d, terminal=t)
            pf_open.append(time.perf_counter() - t0)
            j.close()
            t0 = time.perf_counter()
            con = sqlite_connect(db_path)
            r2 = con.execute(SQL_DAY_TERMINAL, (d, t)).fetchall()
            sq_open.append(time.perf_counter() - t0)
            con.close()
            assert len(r1) == len(r2)
        results["open_first_query"] = (statistics.median(pf_open), statistics.median(sq_open))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    total = time.perf_counter() - t_start

    # ---------------------------------------------------------------- table
    pf_b, sq_b = results["bulk_append"]
    pf_d, sq_d = results["durable_append"]
    table = [
        ("bulk append %s records (1 call / 1 txn)" % format(n, ","), pf_b, sq_b, "≥ 10×",
         sq_b / pf_b >= 10, "%.0f k/s" % (n / pf_b / 1e3), "%.0f k/s" % (n / sq_b / 1e3)),
        ("durable single append (median)", pf_d, sq_d, "≤ 1.5× floor (%.2f×)" % (pf_d / floor),
         pf_d <= 1.5 * floor, None, None),
        ("  physical floor: pwrite 128 B + fdatasync", floor, None, "", None, None, None),
        ("day ∩ terminal query (~%.0f rows)" % dt_rows, *results["day_terminal_query"], "≥ 30×",
         results["day_terminal_query"][1] / results["day_terminal_query"][0] >= 30, None, None),
        ("day query (~%s rows)" % format(round(day_rows), ","), *results["day_query"], "", None,
         None, None),
        ("day totals (SUM amount GROUP BY kind)", *results["day_totals"], "", None, None, None),
        ("last transaction of a terminal", *results["last_transaction"], "≤ 2 µs",
         results["last_transaction"][0] <= 2e-6, None, None),
        ("open full journal + first query", *results["open_first_query"], "≤ 50 ms",
         results["open_first_query"][0] <= 0.050, None, None),
    ]
    header = ("operation", "posfast", "sqlite3", "ratio", "target", "met?")
    lines = []
    for name, pf, sq, target, met, pf_x, sq_x in table:
        ratio = "%.2f×" % (sq / pf) if sq is not None else ""
        if ratio and sq / pf >= 10:
            ratio = "%.0f×" % (sq / pf)
        pf_s = fmt_time(pf) + (" (%s)" % pf_x if pf_x else "")
        sq_s = fmt_time(sq) + (" (%s)" % sq_x if sq_x else "") if sq is not None else ""
        lines.append((name, pf_s, sq_s, ratio, target, "" if met is None else
                      ("yes" if met else "NO")))
    pf_bpr, sq_bpr = results["bytes_per_record"]
    lines.append(("bytes per record (files / records)", "%.1f B" % pf_bpr, "%.1f B" % sq_bpr,
                  "%.2f×" % (sq_bpr / pf_bpr), "", ""))
    widths = [max(len(str(row[i])) for row in lines + [header]) for i in range(6)]
    sep = "-+-".join("-" * w for w in widths)
    print()
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print(sep)
    for row in lines:
        print(" | ".join(str(c).ljust(w) if i == 0 or i == 4 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths))))
    print()
    print("ratio = sqlite3 / posfast (> 1: posfast faster or smaller).  Medians per operation; "
          "durable appends: %d each, round-robin with the floor." % len(pf_t))
    print("posfast: Journal(slot_size=128, durability='fsync', retention='synced'), capacity %s "
          "(ends full), bytes = ring + .idx" % format(n + extra, ","))
    print("sqlite3: %s; indexes (day, terminal) and (terminal, seq); bulk = one BEGIN/executemany/"
          "COMMIT over pre-built tuples; durable = BEGIN/INSERT/COMMIT per row; bytes = db + wal "
          "after wal_checkpoint(TRUNCATE)"
          % ", ".join("%s=%s" % p for p in SQLITE_PRAGMAS))
    print("sqlite3 plan for day ∩ terminal: %s" % plan)
    print("queries return: posfast a RECORD_DTYPE numpy array (19 columns), sqlite3 fetchall() of "
          "the same 18 stored columns; last = j.last(t) (a Record) vs ORDER BY seq DESC LIMIT 1")
    print("open = Journal.open(path) (writer, index file present) + 1 query vs sqlite3.connect + "
          "pragmas + 1 query, page cache warm, median of %d" % args.open_reps)
    print("total run time %.0f s" % total)
    if args.json:
        out = {"records": n, "terminals": TERMINALS, "days": DAYS, "seconds": total,
               "machine": platform.platform(), "cpus": os.cpu_count(),
               "sqlite_version": sqlite3.sqlite_version, "sqlite_pragmas": dict(SQLITE_PRAGMAS),
               "dir": workdir, "filesystem": fs_type(workdir),
               "results": {k: {"posfast": v[0], "sqlite3": v[1]} for k, v in results.items()},
               "bulk_runs": {"posfast": pf_runs, "sqlite3": sq_runs},
               "durable_samples": {"posfast": pf_t, "sqlite3": sq_t, "floor": floor_t},
               "targets_met": {"bulk_append": sq_b / pf_b >= 10,
                               "durable_append": pf_d <= 1.5 * floor,
                               "day_terminal_query": results["day_terminal_query"][1]
                               / results["day_terminal_query"][0] >= 30,
                               "last_transaction": results["last_transaction"][0] <= 2e-6,
                               "open_first_query": results["open_first_query"][0] <= 0.050}}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        print("wrote %s" % args.json)
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--dir", default=None, help="directory for the files (default: a temp dir on "
                   "the repository's disk; not tmpfs)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--durable", type=int, default=600, help="durable single appends per store")
    p.add_argument("--reps", type=int, default=400, help="query repetitions")
    p.add_argument("--open-reps", type=int, default=9)
    p.add_argument("--bulk-reps", type=int, default=3, help="bulk appends per store (median)")
    p.add_argument("--keep", action="store_true", help="keep the files")
    args = p.parse_args(argv)
    if args.records < 1000:
        p.error("--records: at least 1000")
    run(args)


if __name__ == "__main__":
    main()
