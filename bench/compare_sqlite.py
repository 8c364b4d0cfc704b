"""posfast against stdlib sqlite3, LMDB and DuckDB on the same workload, in the same run, on the same disk.

    python bench/compare_sqlite.py                      # 1,000,000 records, ~1.5 min on 2 cores
    python bench/compare_sqlite.py --records 100000 --json out.json
    python bench/compare_sqlite.py --records 10000000 --bulk-reps 1   # ~4 min, ~12 GB of RAM
    python bench/compare_sqlite.py --dir /var/tmp       # where the files go (a real disk,
                                                        # never tmpfs: fdatasync must cost)
    python bench/compare_sqlite.py --skip lmdb,duckdb   # posfast and sqlite3 only

LMDB and DuckDB come from the bench extra (pip install -e ".[bench]": lmdb, duckdb,
pyarrow); without them their columns read "not installed" and the rest runs as before.

Workload: N records over 16 terminals and 90 business days (UTC+08:00, day starts
04:00), timestamps in trading hours in time order, amounts in minor units (fen),
kinds mostly sale with some refund and void, states approved/declined, methods
card/cash/qr, short pan_last4 / auth_code / rrn / client_ref strings.  All stores
receive exactly the same rows; every query result is cross-checked (row counts,
totals, the last record) before anything is printed.

SQLite is set up the way a careful POS developer would: one table with the same
columns, seq as INTEGER PRIMARY KEY, indexes on (day, terminal) and (terminal, seq)
created before the data arrives, journal_mode=WAL, synchronous=FULL, a 64 MiB page
cache and a 1 GiB mmap (the pragmas are printed with the table).  The bulk insert is
one transaction with executemany over tuples built outside the timer; durable single
appends commit one row per transaction.  posfast runs in its default durability
mode (fsync: every append is on stable storage when it returns).

LMDB (py-lmdb, sync=True and metasync=True, its durable defaults) holds the same 18
columns as one packed 100-byte value per record under an 8-byte big-endian seq key, plus
two hand-built secondary indexes as key-only sub-databases, the same two SQLite has:
day|terminal|seq (16-byte keys) and terminal|seq (12-byte keys).  The bulk load is one
write transaction of three putmulti(append=True) over keys and values built outside the
timer; a durable append is one write transaction of three puts.  Lookups walk an index
with a cursor, fetch the records with getmulti and decode them with numpy.

DuckDB gets the same table (no ART index: the rows arrive in time order, so its zone
maps already prune by day); the bulk load is one INSERT ... SELECT from an Arrow table
built outside the timer, a durable append one autocommitted INSERT (WAL synced at
commit), queries are SQL with parameters, results fetched with fetchnumpy().

Each ratio is sqlite3 / posfast, so > 1 means posfast is faster (or smaller).  The
physical floor of a durable append is one pwrite of 128 bytes plus one fdatasync
at fresh positions of a file made by Journal.create (so preallocated exactly the way
posfast preallocates its ring), in the same directory.  The floor and every store's durable
appends run round-robin, one of each at a time, so that a burst of disk load from
elsewhere hits all alike.  Micro-operations report the median per operation over many
repetitions, timed with time.perf_counter.  Open-to-first-query runs with the files in
the page cache (the common case: a POS process restarting on a running terminal):
in-process for the posfast/sqlite3 table, and, for the table of all engines, in a fresh
subprocess per open (imports done before the clock starts, nothing dropped from the page
cache), which also counts the bytes the open reads: the growth of /proc/self/io rchar
(read/pread) plus the resident size of the process's mappings of the store's files
(mmap), as /proc/self/smaps reports it right after the first query.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib
import itertools
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import struct
import subprocess
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
# day totals of the engines table: count and sum of the approved sales of one day
SQL_SALES = "SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM tx WHERE day = ? AND kind = ? AND state = ?"
ENGINES = ("posfast", "sqlite3", "lmdb", "duckdb")


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


# ---------------------------------------------------------------------------- LMDB, DuckDB
def _optional(name):
    """The module, or None when the bench extra is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def day_column(cols: dict) -> np.ndarray:
    return ((cols["ts"] + (DAY_RULE.offset_minutes - DAY_RULE.start_minutes) * 60_000_000)
            // 86_400_000_000)


# One LMDB value: the 18 stored columns, packed little-endian (100 bytes), in COLUMNS order.
LMDB_DTYPE = np.dtype([("seq", "<i8"), ("ts", "<i8"), ("amount", "<i8"), ("txn_id", "<i8"),
                       ("ref_seq", "<u8"), ("day", "<i4"), ("terminal", "<u4"),
                       ("receipt_no", "<u4"), ("operator", "<u4"), ("currency", "<u2"),
                       ("kind", "u1"), ("state", "u1"), ("method", "u1"), ("flags", "u1"),
                       ("pan_last4", "S4"), ("auth_code", "S6"), ("rrn", "S12"),
                       ("client_ref", "S16")])
LMDB_ROW = struct.Struct("<qqqqQiIIIHBBBB4s6s12s16s")
assert LMDB_ROW.size == LMDB_DTYPE.itemsize and list(LMDB_DTYPE.names) == COLUMNS
LMDB_SEQ = struct.Struct(">Q")            # big-endian keys sort as numbers
LMDB_DAY_TERMINAL = struct.Struct(">IIQ")  # day | terminal | seq
LMDB_TERMINAL = struct.Struct(">IQ")       # terminal | seq
_DT_PREFIX = struct.Struct(">II")
_DAY_PREFIX = struct.Struct(">I")
_T_PREFIX = struct.Struct(">I")


def lmdb_map_size(n: int) -> int:
    return max(1 << 30, n * 1024)


def _split(buf: bytes, size: int, n: int) -> list:
    return [buf[i * size:(i + 1) * size] for i in range(n)]


def lmdb_inputs(cols: dict, days: np.ndarray) -> tuple:
    """Keys and values of the three sub-databases, each list in key order (built untimed)."""
    n = len(cols["ts"])
    seq = np.arange(1, n + 1, dtype=np.int64)
    rec = np.zeros(n, LMDB_DTYPE)
    for name in COLUMNS:
        if name in ("seq", "txn_id"):
            rec[name] = seq
        elif name == "day":
            rec[name] = days
        elif name != "flags":
            rec[name] = cols[name]
    values = _split(rec.tobytes(), LMDB_DTYPE.itemsize, n)
    keys = _split(seq.astype(">u8").tobytes(), 8, n)
    del rec
    order = np.lexsort((seq, cols["terminal"], days))
    k = np.zeros(n, [("d", ">u4"), ("t", ">u4"), ("s", ">u8")])
    k["d"], k["t"], k["s"] = days[order], cols["terminal"][order], seq[order]
    dt_keys = _split(k.tobytes(), 16, n)
    order = np.lexsort((seq, cols["terminal"]))
    k = np.zeros(n, [("t", ">u4"), ("s", ">u8")])
    k["t"], k["s"] = cols["terminal"][order], seq[order]
    t_keys = _split(k.tobytes(), 12, n)
    return keys, values, dt_keys, t_keys


class LmdbStore:
    """LMDB with the records under their seq and two key-only secondary indexes."""

    def __init__(self, path: str, n: int):
        lmdb = importlib.import_module("lmdb")
        self.path = path
        self.env = lmdb.open(path, map_size=lmdb_map_size(n), max_dbs=4, subdir=True,
                             sync=True, metasync=True)
        self.tx = self.env.open_db(b"tx")
        self.by_day_terminal = self.env.open_db(b"day_terminal")
        self.by_terminal = self.env.open_db(b"terminal_seq")

    @staticmethod
    def files(path: str) -> list:
        return [os.path.join(path, "data.mdb"), os.path.join(path, "lock.mdb")]

    def bulk(self, inputs) -> None:
        keys, values, dt_keys, t_keys = inputs
        empty = itertools.repeat(b"")
        with self.env.begin(write=True) as txn:
            added = [txn.cursor(self.tx).putmulti(zip(keys, values), append=True)[1],
                     txn.cursor(self.by_day_terminal).putmulti(zip(dt_keys, empty), append=True)[1],
                     txn.cursor(self.by_terminal).putmulti(zip(t_keys, empty), append=True)[1]]
        assert added == [len(keys)] * 3, added

    def append(self, row: tuple) -> None:
        """One durable record (a tuple in COLUMNS order): one write transaction, three puts."""
        s, day, terminal = row[0], row[5], row[6]
        with self.env.begin(write=True) as txn:
            txn.put(LMDB_SEQ.pack(s), LMDB_ROW.pack(*row), db=self.tx, append=True)
            txn.put(LMDB_DAY_TERMINAL.pack(day, terminal, s), b"", db=self.by_day_terminal)
            txn.put(LMDB_TERMINAL.pack(terminal, s), b"", db=self.by_terminal)

    def _records(self, txn, prefix: bytes) -> np.ndarray:
        cur = txn.cursor(self.by_day_terminal)
        keys = []
        if cur.set_range(prefix):
            cut = len(prefix)
            for k in cur.iternext(values=False):
                if k[:cut] != prefix:
                    break
                keys.append(k[8:])
        got = txn.cursor(self.tx).getmulti(keys)
        return np.frombuffer(b"".join([v for _, v in got]), LMDB_DTYPE)

    def query(self, day: int, terminal: int) -> np.ndarray:
        with self.env.begin() as txn:
            return self._records(txn, _DT_PREFIX.pack(day, terminal))

    def sales(self, day: int) -> tuple:
        with self.env.begin() as txn:
            r = self._records(txn, _DAY_PREFIX.pack(day))
        ok = (r["kind"] == int(Kind.SALE)) & (r["state"] == int(State.APPROVED))
        return int(ok.sum()), int(r["amount"][ok].sum())

    def last(self, terminal: int):
        with self.env.begin() as txn:
            cur = txn.cursor(self.by_terminal)
            found = cur.prev() if cur.set_range(_T_PREFIX.pack(terminal + 1)) else cur.last()
            if not found:
                return None
            k = cur.key()
            if k[:4] != _T_PREFIX.pack(terminal):
                return None
            return LMDB_ROW.unpack(txn.get(k[4:], db=self.tx))

    def size(self) -> int:
        return os.path.getsize(os.path.join(self.path, "data.mdb"))

    def close(self) -> None:
        self.env.close()


DUCK_SCHEMA = """
CREATE TABLE tx (
    seq BIGINT NOT NULL, ts BIGINT NOT NULL, amount BIGINT NOT NULL, txn_id BIGINT NOT NULL,
    ref_seq BIGINT NOT NULL, day INTEGER NOT NULL, terminal UINTEGER NOT NULL,
    receipt_no UINTEGER NOT NULL, operator UINTEGER NOT NULL, currency USMALLINT NOT NULL,
    kind UTINYINT NOT NULL, state UTINYINT NOT NULL, method UTINYINT NOT NULL,
    flags UTINYINT NOT NULL, pan_last4 BLOB NOT NULL, auth_code BLOB NOT NULL,
    rrn BLOB NOT NULL, client_ref BLOB NOT NULL)
"""


def duckdb_input(cols: dict, days: np.ndarray):
    """The records as one Arrow table in COLUMNS order (built untimed)."""
    pa = importlib.import_module("pyarrow")
    n = len(cols["ts"])
    seq = np.arange(1, n + 1, dtype=np.int64)
    data = {"seq": seq, "txn_id": seq, "day": days.astype(np.int32),
            "ref_seq": cols["ref_seq"].astype(np.int64), "flags": np.zeros(n, np.uint8)}
    arrays = []
    for name in COLUMNS:
        col = data[name] if name in data else cols[name]
        if col.dtype.kind == "S":      # as SQLite gets them: bytes without the numpy padding
            arrays.append(pa.array(col.tolist(), pa.binary()))
        else:
            arrays.append(pa.array(col))
    return pa.Table.from_arrays(arrays, names=COLUMNS)


class DuckStore:
    """DuckDB: one table, SQL with parameters."""

    def __init__(self, path: str, create: bool = False):
        duckdb = importlib.import_module("duckdb")
        self.path = path
        self.con = duckdb.connect(path)
        if create:
            self.con.execute(DUCK_SCHEMA)

    @staticmethod
    def files(path: str) -> list:
        return [path, path + ".wal"]

    def bulk(self, table) -> None:
        self.con.register("bulk_rows", table)
        self.con.execute("INSERT INTO tx SELECT * FROM bulk_rows")
        self.con.unregister("bulk_rows")

    def checkpoint(self) -> None:
        self.con.execute("CHECKPOINT")

    def append(self, row: tuple) -> None:
        self.con.execute(SQL_INSERT, row)          # autocommit: durable when it returns

    def query(self, day: int, terminal: int) -> dict:
        return self.con.execute(SQL_DAY_TERMINAL, [day, terminal]).fetchnumpy()

    def sales(self, day: int) -> tuple:
        c, s = self.con.execute(SQL_SALES, [day, int(Kind.SALE), int(State.APPROVED)]).fetchone()
        return int(c), int(s)

    def last(self, terminal: int):
        return self.con.execute(SQL_LAST, [terminal]).fetchone()

    def size(self) -> int:
        return sum(os.path.getsize(p) for p in self.files(self.path) if os.path.exists(p))

    def close(self) -> None:
        self.con.close()


def pf_sales_reference(j, day: int) -> tuple:
    """Count and sum of the approved sales of a day, from posfast's query (the reference)."""
    r = j.query(day=day)
    ok = (r["kind"] == int(Kind.SALE)) & (r["state"] == int(State.APPROVED))
    return int(ok.sum()), int(r["amount"][ok].sum())


def _numbers_in(obj, depth=0) -> set:
    """Every integer inside a result of unknown shape (tuples, dicts, attributes)."""
    if isinstance(obj, (bool, np.bool_)):
        return set()
    if isinstance(obj, (int, np.integer)):
        return {int(obj)}
    if depth > 2:
        return set()
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        items = list(obj)
    elif hasattr(obj, "__dict__") or hasattr(obj, "__slots__"):
        names = [a for a in dir(obj) if not a.startswith("_")]
        items = []
        for a in names:
            try:
                v = getattr(obj, a)
            except Exception:
                continue
            if not callable(v):
                items.append(v)
    else:
        return set()
    out = set()
    for v in items:
        out |= _numbers_in(v, depth + 1)
    return out


# ---------------------------------------------------------------------------- open probe
def _rchar():
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


_SMAPS_HEAD = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$")


def mapped_bytes(paths) -> int | None:
    """Resident bytes of this process's mappings of `paths` (/proc/self/smaps Rss)."""
    want = {os.path.realpath(p) for p in paths}
    total, current = 0, False
    try:
        with open("/proc/self/smaps") as f:
            for line in f:
                m = _SMAPS_HEAD.match(line)
                if m:
                    current = m.group(1).strip() in want
                elif current and line.startswith("Rss:"):
                    total += int(line.split()[1]) * 1024
    except OSError:
        return None
    return total


def store_files(engine: str, path: str) -> list:
    if engine == "posfast":
        return [path, path + ".idx"]
    if engine == "sqlite3":
        return [path, path + "-wal", path + "-shm"]
    if engine == "lmdb":
        return LmdbStore.files(path)
    return DuckStore.files(path)


def open_probe(engine: str, path: str, terminal: int, n: int) -> dict:
    """In this (fresh) process: open the store and fetch the newest record of `terminal`.

    Imports happen before the clock starts; the time and the bytes read cover the open
    and that first query only."""
    if engine in ("lmdb", "duckdb"):
        importlib.import_module(engine)
    gc.collect()
    r0 = _rchar()
    t0 = time.perf_counter()
    store = None
    if engine == "posfast":
        store = Journal.open(path)
        got = store.last(terminal).seq
    elif engine == "sqlite3":
        store = sqlite_connect(path)
        got = store.execute(SQL_LAST, (terminal,)).fetchone()[0]
    elif engine == "lmdb":
        store = LmdbStore(path, n)
        got = store.last(terminal)[0]
    else:
        store = DuckStore(path)
        got = store.last(terminal)[0]
    t1 = time.perf_counter()
    r1 = _rchar()
    mapped = mapped_bytes(store_files(engine, path))
    store.close()
    return {"engine": engine, "seconds": t1 - t0, "seq": int(got),
            "rchar": None if r0 is None or r1 is None else r1 - r0, "mapped": mapped}


def run_open_probe(engine: str, path: str, terminal: int, n: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--records", str(n), "--open-probe",
           engine, "--probe-path", path, "--probe-terminal", str(terminal)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError("open probe of %s failed: %s" % (engine, proc.stderr[-3000:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt_bytes(b):
    if b is None:
        return "-"
    if b >= 1 << 20:
        return "%.1f MiB" % (b / (1 << 20))
    if b >= 1 << 10:
        return "%.0f KiB" % (b / (1 << 10))
    return "%d B" % b


# ---------------------------------------------------------------------------- benchmark
def run(args):
    n = args.records
    rng = np.random.default_rng(7)
    base = args.dir or dir_on_repo_disk()
    os.makedirs(base, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="posfast-bench-", dir=base)
    pf_path = os.path.join(workdir, "bench.pfj")
    db_path = os.path.join(workdir, "bench.db")
    lm_path = os.path.join(workdir, "bench.lmdb")
    dk_path = os.path.join(workdir, "bench.duckdb")
    floor_path = os.path.join(workdir, "floor.bin")
    warm = 10
    extra = args.durable + warm                  # durable appends: the journal ends exactly full
    results = {}
    t_start = time.perf_counter()
    skip = {s.strip() for s in (args.skip or "").split(",") if s.strip()}
    missing = {}
    lmdb = None if "lmdb" in skip else _optional("lmdb")
    duckdb = None if "duckdb" in skip else _optional("duckdb")
    pa = None if duckdb is None else _optional("pyarrow")
    if "lmdb" not in skip and lmdb is None:
        missing["lmdb"] = "not installed"
    if "duckdb" not in skip and (duckdb is None or pa is None):
        missing["duckdb"] = "not installed"
        duckdb = None
    for name in skip & {"lmdb", "duckdb"}:
        missing[name] = "skipped"
    engines = [e for e in ENGINES if e not in missing]
    print("posfast %s vs sqlite3 %s (Python %s, numpy %s) on %s, %d CPUs"
          % (getattr(posfast, "__version__", "?"), sqlite3.sqlite_version, platform.python_version(),
             np.__version__, platform.platform(), os.cpu_count()), flush=True)
    print("also: lmdb %s, duckdb %s (pyarrow %s)"
          % ("%s (LMDB %s)" % (lmdb.__version__, ".".join(map(str, lmdb.version())))
             if lmdb else missing.get("lmdb"),
             duckdb.__version__ if duckdb else missing.get("duckdb"),
             pa.__version__ if pa else "-"), flush=True)
    print("files in %s (%s)" % (workdir, fs_type(workdir)), flush=True)
    lm = dk = None
    try:
        # Touch (then free) memory first: on a VM the first touch of guest memory can cost
        # ~10 µs a page, which would fall on whichever store allocates first.
        scratch = np.ones(min(3 << 30, max(256 << 20, n * 1500)), dtype=np.uint8)
        del scratch
        cols = make_workload(n)
        rows = sqlite_rows(cols)
        day_col = day_column(cols)
        lm_input = lmdb_inputs(cols, day_col) if lmdb else None
        dk_input = duckdb_input(cols, day_col) if duckdb else None
        del day_col
        gc.collect()
        print("workload: %s records, %d terminals, %d business days (%s .. %s)  [%.1f s]"
              % (format(n, ","), TERMINALS, DAYS, FIRST_DAY, FIRST_DAY + dt.timedelta(DAYS - 1),
                 time.perf_counter() - t_start), flush=True)

        # ---------------- bulk append: everything durable at the end, index included.
        # Repeated (fresh files each time, rotating which store goes first) so that
        # a burst of load from elsewhere, or the VM's first touch of fresh memory, does
        # not decide the ratio; the median is reported, the last files are kept.
        runs = {e: [] for e in engines}
        j = con = None
        for rep in range(args.bulk_reps):
            k = rep % len(engines)
            for store in engines[k:] + engines[:k]:
                gc.collect()
                if store == "posfast":
                    if j is not None:
                        j.close()
                        for suffix in ("", ".idx"):
                            os.unlink(pf_path + suffix)
                    j = Journal.create(pf_path, capacity=n + extra, slot_size=192,   # (format 2: client_ref in the extension)
                                       durability="fsync", day_rule=DAY_RULE)
                    gc.disable()
                    t0 = time.perf_counter()
                    got = j.append_many(cols)
                    j.flush()
                    runs[store].append(time.perf_counter() - t0)
                    gc.enable()
                    assert got == range(1, n + 1), got
                elif store == "sqlite3":
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
                    runs[store].append(time.perf_counter() - t0)
                    gc.enable()
                elif store == "lmdb":
                    if lm is not None:
                        lm.close()
                        shutil.rmtree(lm_path)
                    lm = LmdbStore(lm_path, n + extra)
                    gc.disable()
                    t0 = time.perf_counter()
                    lm.bulk(lm_input)
                    runs[store].append(time.perf_counter() - t0)
                    gc.enable()
                else:
                    if dk is not None:
                        dk.close()
                        for p in DuckStore.files(dk_path):
                            if os.path.exists(p):
                                os.unlink(p)
                    dk = DuckStore(dk_path, create=True)
                    gc.disable()
                    t0 = time.perf_counter()
                    dk.bulk(dk_input)
                    runs[store].append(time.perf_counter() - t0)
                    gc.enable()
        del rows, lm_input, dk_input
        if dk is not None:
            dk.checkpoint()          # (untimed) later opens read the table, not the WAL
        gc.collect()
        pf_runs, sq_runs = runs["posfast"], runs["sqlite3"]
        pf_bulk, sq_bulk = statistics.median(pf_runs), statistics.median(sq_runs)
        results["bulk_append"] = (pf_bulk, sq_bulk)
        bulk = {e: statistics.median(runs[e]) for e in engines}
        print("bulk append done: posfast %s s, sqlite3 %s s"
              % (" / ".join("%.2f" % x for x in pf_runs), " / ".join("%.2f" % x for x in sq_runs))
              + "".join(", %s %s s" % (e, " / ".join("%.2f" % x for x in runs[e]))
                        for e in engines if e not in ("posfast", "sqlite3")),
              flush=True)

        # ---------------- queries (same random (day, terminal) pairs for all)
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
            for other in (lm, dk):
                if other is not None:
                    c = other.query(d, t)
                    assert c["seq"].tolist() == [r[0] for r in b], (type(other), d, t)
                    assert c["amount"].tolist() == [r[2] for r in b], (type(other), d, t)
        for (t,) in terms[:TERMINALS]:
            r = j.last(t)
            b = con.execute(SQL_LAST, (t,)).fetchone()
            assert r.seq == b[0] and r.amount == b[2] and r.rrn == b[16], (t, r, b)
            for other in (lm, dk):
                if other is not None:
                    c = other.last(t)
                    assert c[0] == b[0] and c[2] == b[2], (type(other), t, c, b)

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

        def sq_sales(d):
            return con.execute(SQL_SALES, (d, int(Kind.SALE), int(State.APPROVED))).fetchone()

        # posfast's day totals: Journal.totals(day, terminal=None) when this posfast has it
        pf_has_totals = hasattr(j, "totals")
        totals_note = "Journal.totals: not in this posfast (n/a)"
        for (d,) in days[:5]:
            want = pf_sales_reference(j, d)
            assert tuple(sq_sales(d)) == want, (d, sq_sales(d), want)
            for other in (lm, dk):
                if other is not None:
                    assert other.sales(d) == want, (type(other), d, other.sales(d), want)
        if pf_has_totals:
            d = days[0][0]
            want = pf_sales_reference(j, d)
            got = j.totals(d)
            sale = got[CURRENCY].by_kind.get("sale") if CURRENCY in got else None
            if set(want) <= _numbers_in(got):
                totals_note = ("Journal.totals(day) cross-checked: it holds the count and sum "
                               "of the approved sales (%d, %d)" % want)
            elif sale is not None and sale.net == want[1]:
                # (Totals sums by state and by kind, not both: the approved sales' sum is the
                # sales' net; their count is not a figure it keeps)
                totals_note = ("Journal.totals(day) cross-checked: its sales' net is the sum of "
                               "the approved sales (%d)" % want[1])
            else:
                totals_note = ("Journal.totals(day) NOT cross-checked: it returned %r; the "
                               "approved sales are count %d, sum %d" % ((got,) + want))

        for fn, a in ((pf_q_dt, pairs), (sq_q_dt, pairs), (j.last, terms), (sq_last, terms)):
            each_op(fn, a[:50])                                                   # warm up
        dt_rows = statistics.mean(len(j.query(day=d, terminal=t)) for d, t in pairs[:50])
        day_rows = statistics.mean(len(j.query(day=d)) for (d,) in days)
        results["day_terminal_query"] = (each_op(pf_q_dt, pairs), each_op(sq_q_dt, pairs))
        results["day_query"] = (each_op(pf_q_day, days), each_op(sq_q_day, days))
        results["day_totals"] = (each_op(pf_totals, days), each_op(sq_totals, days))
        results["last_transaction"] = (per_op(j.last, terms), per_op(sq_last, terms))
        # the engines table: the same operations for the other stores
        q_dt = {"posfast": results["day_terminal_query"][0],
                "sqlite3": results["day_terminal_query"][1]}
        last = {"posfast": results["last_transaction"][0], "sqlite3": results["last_transaction"][1]}
        sales = {"posfast": None, "sqlite3": each_op(sq_sales, days)}
        if pf_has_totals:
            each_op(j.totals, days[:20])
            sales["posfast"] = each_op(j.totals, days)
        for name, other in (("lmdb", lm), ("duckdb", dk)):
            if other is not None:
                each_op(other.query, pairs[:20])
                q_dt[name] = each_op(other.query, pairs)
                sales[name] = each_op(other.sales, days)
                each_op(other.last, terms[:50])
                last[name] = per_op(other.last, terms) if name == "lmdb" else \
                    each_op(other.last, terms[:200])
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

        def pf_append(i):
            j.append(ts=ts_next + i, terminal=1 + i % TERMINALS, kind="sale", state="approved",
                     amount=1250 + i, currency=CURRENCY, method="card", receipt_no=900000 + i,
                     operator=11, pan_last4=b"4242", auth_code=b"A1B2C3", rrn=b"612345678901",
                     client_ref=b"T01-0900000")

        def durable_row(i):
            """The record of durable append i, as a tuple in COLUMNS order (seq n + 1 + i)."""
            s = n + 1 + i
            d = (ts_next + i + (DAY_RULE.offset_minutes - DAY_RULE.start_minutes) * 60_000_000) \
                // 86_400_000_000
            return (s, ts_next + i, 1250 + i, s, 0, d, 1 + i % TERMINALS, 900000 + i, 11,
                    CURRENCY, int(Kind.SALE), int(State.APPROVED), int(Method.CARD), 0, b"4242",
                    b"A1B2C3", b"612345678901", b"T01-0900000")

        # begin_payment, durable, into a journal of its own (the same kind of file): the
        # payment path's extra work (idempotency lookup, receipt number) on top of an append
        pay_path = os.path.join(workdir, "pay.pfj")
        pay_j = Journal.create(pay_path, capacity=extra + 16, slot_size=192, durability="fsync",
                               day_rule=DAY_RULE)

        def pf_begin(i):
            pay_j.begin_payment(terminal=1 + i % TERMINALS, amount=1250 + i, currency=CURRENCY,
                                method="card", client_ref="T01-%07d" % i, ts=ts_next + i)

        def sq_append(i):
            row = durable_row(i)
            con.execute("BEGIN")
            con.execute(SQL_INSERT, row)
            con.execute("COMMIT")

        def lm_append(i):
            lm.append(durable_row(i))

        def dk_append(i):
            dk.append(durable_row(i))

        # round-robin, one operation of each at a time: disk load from elsewhere hits all alike
        durable_t = {"floor": [], "posfast": [], "sqlite3": [], "lmdb": [], "duckdb": [],
                     "begin_payment": []}
        ops = [("floor", floor_op), ("posfast", pf_append), ("begin_payment", pf_begin),
               ("sqlite3", sq_append)]
        if lm is not None:
            ops.append(("lmdb", lm_append))
        if dk is not None:
            ops.append(("duckdb", dk_append))
        for i in range(args.durable + warm):
            for name, fn in ops:
                t0 = time.perf_counter()
                fn(i)
                dt_ = time.perf_counter() - t0
                if i >= warm:
                    durable_t[name].append(dt_)
        os.close(fd)
        floor_t, pf_t, sq_t = durable_t["floor"], durable_t["posfast"], durable_t["sqlite3"]
        floor = statistics.median(floor_t)
        results["durable_append"] = (statistics.median(pf_t), statistics.median(sq_t))
        results["fdatasync_floor"] = (floor, floor)
        durable = {e: statistics.median(durable_t[e]) for e in engines}
        begin_durable = statistics.median(durable_t["begin_payment"])
        pay_j.close()
        assert j.head_seq == j.capacity, (j.head_seq, j.capacity)   # full
        print("durable appends done (%d each)  [%.1f s]"
              % (len(pf_t), time.perf_counter() - t_start), flush=True)
        # what a fresh process must find: the newest record of the probed terminal
        probe_t = terms[0][0]
        probe_seq = sq_last(probe_t)[0]
        assert j.last(probe_t).seq == probe_seq
        for other in (lm, dk):
            if other is not None:
                assert other.last(probe_t)[0] == probe_seq, type(other)

        # ---------------- bytes per record (closed files; SQLite checkpointed)
        j.close()
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        pf_records = n + extra
        pf_bytes = os.path.getsize(pf_path) + os.path.getsize(pf_path + ".idx")
        sq_bytes = sum(os.path.getsize(p) for p in (db_path, db_path + "-wal") if os.path.exists(p))
        results["bytes_per_record"] = (pf_bytes / pf_records, sq_bytes / pf_records)
        bpr = {"posfast": pf_bytes / pf_records, "sqlite3": sq_bytes / pf_records}
        if lm is not None:
            bpr["lmdb"] = lm.size() / pf_records
            lm.close()
            lm = None
        if dk is not None:
            dk.checkpoint()
            bpr["duckdb"] = dk.size() / pf_records
            dk.close()
            dk = None

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

        # ---------------- open + last in a fresh process, with the bytes it reads
        paths = {"posfast": pf_path, "sqlite3": db_path, "lmdb": lm_path, "duckdb": dk_path}
        probes = {e: [] for e in engines}
        for rep in range(args.open_reps + 1):        # the first round warms up, untimed
            for e in engines:
                p = run_open_probe(e, paths[e], probe_t, n + extra)
                assert p["seq"] == probe_seq, (e, p, probe_seq)
                if rep:
                    probes[e].append(p)
        open_last = {}
        for e in engines:
            ps = probes[e]
            rchar = [p["rchar"] for p in ps if p["rchar"] is not None]
            mapped = [p["mapped"] for p in ps if p["mapped"] is not None]
            r_med = statistics.median(rchar) if rchar else None
            m_med = statistics.median(mapped) if mapped else None
            total = None if r_med is None or m_med is None else r_med + m_med
            open_last[e] = {"seconds": statistics.median(p["seconds"] for p in ps),
                            "rchar": r_med, "mapped": m_med, "bytes": total,
                            "runs": [p["seconds"] for p in ps]}
        print("open probes done (%d per store)  [%.1f s]"
              % (args.open_reps, time.perf_counter() - t_start), flush=True)
    finally:
        for store in (lm, dk):
            if store is not None:
                try:
                    store.close()
                except Exception:
                    pass
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
    print_table(header, lines, left=(0, 4))
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

    # ---------------------------------------------------------------- engines side by side
    targets = engine_targets(engines, bulk, durable, floor, open_last, q_dt, sales, last,
                             begin_durable)
    print()
    print("all engines, same workload, same run (targets are posfast's):")
    cols_ = list(ENGINES)

    def cells(fn):
        return [missing[e] if e in missing else fn(e) for e in cols_]

    rows_ = [
        ("bulk append %s records" % format(n, ","),
         cells(lambda e: "%s (%.0f k/s)" % (fmt_time(bulk[e]), n / bulk[e] / 1e3))),
        ("durable single append (median)",
         cells(lambda e: "%s (%.2f× floor)" % (fmt_time(durable[e]), durable[e] / floor))),
        ("  fdatasync floor (pwrite 128 B)", [fmt_time(floor)] + [""] * (len(cols_) - 1)),
        ("open + last, fresh process: time", cells(lambda e: fmt_time(open_last[e]["seconds"]))),
        ("  bytes read to open (rchar + mapped)",
         cells(lambda e: fmt_bytes(open_last[e]["bytes"]))),
        ("query(day, terminal) (~%.0f rows)" % dt_rows, cells(lambda e: fmt_time(q_dt[e]))),
        ("day totals: count + sum approved sales",
         cells(lambda e: "n/a" if sales[e] is None else fmt_time(sales[e]))),
        ("last record of a terminal", cells(lambda e: fmt_time(last[e]))),
        ("bytes per record (files / records)", cells(lambda e: "%.1f B" % bpr[e])),
    ]
    header2 = ("operation",) + tuple(cols_)
    print_table(header2, [(name,) + tuple(v) for name, v in rows_], left=(0,))
    print()
    print_table(("target (posfast)", "posfast", "met?"),
                [(t["target"], t["value"], t["met"]) for t in targets], left=(0, 1))
    print()
    print("open + last: a fresh `python %s --open-probe <engine>` per open (imports before the "
          "clock), page cache warm (nothing dropped), median of %d after one warm-up round; "
          "bytes = /proc/self/io rchar growth + smaps Rss of the store's files:"
          % (os.path.basename(__file__), args.open_reps))
    print("  " + "; ".join("%s %s read + %s mapped" % (e, fmt_bytes(open_last[e]["rchar"]),
                                                      fmt_bytes(open_last[e]["mapped"]))
                           for e in engines))
    if "lmdb" in engines:
        print("lmdb: sync=True, metasync=True (a commit syncs the data, then the meta page), "
              "map_size %s; values = 100-byte packed rows; indexes day|terminal|seq and "
              "terminal|seq (key-only sub-databases); queries: cursor walk + getmulti + numpy; "
              "bytes = data.mdb" % fmt_bytes(lmdb_map_size(n + extra)))
    if "duckdb" in engines:
        print("duckdb: one table, no ART index (zone maps); bulk = INSERT ... SELECT from an "
              "Arrow table; durable = one autocommitted INSERT; query results by fetchnumpy(); "
              "bytes = database file after CHECKPOINT")
    print("day totals: SQL COUNT/SUM WHERE day AND kind=sale AND state=approved; lmdb: day prefix "
          "of the day|terminal index + numpy; posfast: %s" % totals_note)
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
                               "open_first_query": results["open_first_query"][0] <= 0.050},
               "engines": {"versions": {"lmdb": lmdb.__version__ if lmdb else None,
                                        "duckdb": duckdb.__version__ if duckdb else None},
                           "missing": missing,
                           "bulk_append": bulk, "bulk_runs": runs,
                           "durable_append": durable, "fdatasync_floor": floor,
                           "durable_begin_payment": begin_durable,
                           "durable_samples": {e: durable_t[e] for e in engines},
                           "open_last": open_last, "day_terminal_query": q_dt,
                           "day_totals_approved_sales": sales, "last": last,
                           "bytes_per_record": bpr,
                           "targets": targets}}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        print("wrote %s" % args.json)
    return results


def engine_targets(engines, bulk, durable, floor, open_last, q_dt, sales, last,
                   begin_durable) -> list:
    """posfast's targets against the engines table: (target, posfast's value, met?)."""
    out = []
    o = open_last["posfast"]
    out.append({"target": "open + last ≤ 2 MiB read and ≤ 3 ms",
                "value": "%s, %s" % (fmt_bytes(o["bytes"]), fmt_time(o["seconds"])),
                "met": "yes" if o["bytes"] is not None and o["bytes"] <= 2 << 20
                and o["seconds"] <= 3e-3 else "NO"})
    out.append({"target": "day totals ≤ 5 µs",
                "value": "n/a" if sales["posfast"] is None else fmt_time(sales["posfast"]),
                "met": "n/a" if sales["posfast"] is None else
                ("yes" if sales["posfast"] <= 5e-6 else "NO")})
    out.append({"target": "durable append ≤ 1.15× floor",
                "value": "%.2f× (%s / %s)" % (durable["posfast"] / floor,
                                              fmt_time(durable["posfast"]), fmt_time(floor)),
                "met": "yes" if durable["posfast"] <= 1.15 * floor else "NO"})
    out.append({"target": "durable begin_payment ≤ 1.15× floor",
                "value": "%.2f× (%s / %s)" % (begin_durable / floor, fmt_time(begin_durable),
                                              fmt_time(floor)),
                "met": "yes" if begin_durable <= 1.15 * floor else "NO"})
    sq_x = bulk["sqlite3"] / bulk["posfast"]
    if "duckdb" in bulk:
        vs_duck = "%.2f× DuckDB's" % (bulk["duckdb"] / bulk["posfast"])
        met = sq_x >= 15 and bulk["posfast"] < bulk["duckdb"]
    else:
        vs_duck = "DuckDB not run"
        met = False
    out.append({"target": "bulk ≥ 15× SQLite and faster than DuckDB's ingest",
                "value": "%.1f× SQLite, %s" % (sq_x, vs_duck), "met": "yes" if met else "NO"})
    out.append({"target": "query(day, terminal) ≤ 20 µs", "value": fmt_time(q_dt["posfast"]),
                "met": "yes" if q_dt["posfast"] <= 20e-6 else "NO"})
    out.append({"target": "last ≤ 1 µs", "value": fmt_time(last["posfast"]),
                "met": "yes" if last["posfast"] <= 1e-6 else "NO"})
    return out


def print_table(header, lines, left=(0,)):
    widths = [max(len(str(row[i])) for row in list(lines) + [header]) for i in range(len(header))]
    sep = "-+-".join("-" * w for w in widths)
    print()
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print(sep)
    for row in lines:
        print(" | ".join(str(c).ljust(w) if i in left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths))))


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
    p.add_argument("--skip", default="", help="comma-separated stores to leave out: lmdb, duckdb")
    p.add_argument("--keep", action="store_true", help="keep the files")
    p.add_argument("--open-probe", default=None, choices=ENGINES, help=argparse.SUPPRESS)
    p.add_argument("--probe-path", default=None, help=argparse.SUPPRESS)
    p.add_argument("--probe-terminal", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.records < 1000:
        p.error("--records: at least 1000")
    if args.open_probe:
        print(json.dumps(open_probe(args.open_probe, args.probe_path, args.probe_terminal,
                                    args.records)))
        return
    run(args)


if __name__ == "__main__":
    main()
