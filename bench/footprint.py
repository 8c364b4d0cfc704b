"""Footprint on a terminal: resident memory and storage I/O per operation, posfast beside
SQLite on the same records, in the same run.

    python bench/footprint.py                      # 1,000,000 records, ~2 min on 2 cores
    python bench/footprint.py --records 200000 --json out.json
    python bench/footprint.py --dir /var/tmp       # where the files go (a real disk)

The store: N payments of 2,000 a business day on 8 terminals (kinds sale/refund, card,
cash and QR, a client_ref per payment, a Receipt.to_payload receipt on one payment in
ten), once in a posfast journal whose ring holds them all (the index file beside it, as
after a normal restart) and once in SQLite (WAL; the same columns, receipts as TEXT,
indexes on (terminal, seq) and client_ref).

1. Memory.  Each store is opened in a fresh interpreter (bytecode compiled, as an
   installed wheel has it) that then does what a terminal does: the last record of each
   terminal, `last_transaction` of each terminal, 100 `find(client_ref)`, 20 reprints of
   receipts from about a month back (posfast: `posfast.printing.reprint` preview; SQLite:
   SELECT the receipt, Receipt.from_payload, render_text).  After each step: VmRSS and its
   parts from /proc/self/status and /proc/self/smaps: RssAnon (memory the process owns),
   file-backed pages of the store's own files (page cache the kernel can drop at any time,
   shared with every process), and the other file-backed pages (the interpreter and its
   libraries).  The target (RSS <= 40 MB) is about what the terminal must have free:
   anonymous memory plus libraries, without the store's page cache; both are printed.
   A final step does 1,000 random reprints to show how the store's page cache grows.
2. Bytes read per operation, from /proc/self/io: rchar (bytes through read/pread; an
   mmap'd ring reads without a syscall, so it is 0 there) and read_bytes (bytes the
   storage device delivered), with the store's files evicted from the page cache first
   (posix_fadvise DONTNEED on each: only these files' pages are dropped), so every step
   reads from the device what it needs: open, then last_transaction, then one reprint of
   last month's receipt.
3. Bytes written per durable append and per day of trading, counted from the system calls
   (strace -f: pwrite/write offsets and lengths, fdatasync/fsync) of a fresh process doing
   200 durable payments (begin_payment, then finish_payment with the receipt; posfast
   durability "fsync"; SQLite WAL synchronous=FULL, INSERT then UPDATE, one transaction
   each): bytes, distinct 4 KiB pages and 512-byte sectors touched per payment, syncs per
   payment.  A day is 2,000 payments plus what the store does besides: posfast rewrites its
   index file every CHECKPOINT_SECONDS (300 s) while records arrive, so a 12-hour trading
   day adds 144 index saves of the index's size without its payment maps (written at close,
   once); SQLite checkpoints its WAL into the
   database (each page written twice).  Without strace the table says so and shows the
   /proc/self/io write_bytes only.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

PER_DAY = 2000
TERMINALS = 8
RECEIPT_EVERY = 10
PAYMENTS = 200          # durable payments in the write measurement
TRADING_HOURS = 12


# ------------------------------------------------------------------ building the stores
def _workload(n):
    import numpy as np
    from posfast.cli.demo import _receipt
    rng = np.random.default_rng(17)
    idx = np.arange(n, dtype=np.int64)
    first_day = int(time.time() // 86400) - n // PER_DAY - 2        # the history ends yesterday
    day = first_day + idx // PER_DAY
    ts = (day * 86_400 + (idx % PER_DAY) * (TRADING_HOURS * 3600 // PER_DAY)) * 1_000_000 \
        - 8 * 3_600_000_000 + 8 * 3_600_000_000 + rng.integers(0, 10_000_000, n)
    ts = np.maximum.accumulate(ts)
    terminal = (idx % TERMINALS + 1).astype(np.uint32)
    kind = np.where(idx % 40 == 17, 2, 1).astype(np.uint8)              # sale, some refunds
    method = np.array([1, 2, 3], np.uint8)[idx % 3]
    amount = np.maximum(100, np.round(rng.lognormal(7.6, 1.0, n))).astype(np.int64)
    receipt_no = (idx // TERMINALS + 1).astype(np.uint32)
    client_ref = np.char.add(np.char.add(b"T", terminal.astype("S1")),
                             np.char.add(b"-", np.char.zfill(receipt_no.astype("S7"), 7)))
    payloads = []
    for i in range(n):
        if i % RECEIPT_EVERY == 0:
            at = time.strftime("%Y-%m-%dT%H:%M:%S+08:00", time.gmtime(int(ts[i]) // 1_000_000 + 8 * 3600))
            rec, _ = _receipt(rng, int(receipt_no[i]), int(terminal[i]), at,
                              ("card", "cash", "qr")[i % 3], "1234" if i % 3 == 0 else "")
            payloads.append(rec.to_payload())
        else:
            payloads.append(b"")
    return {"ts": ts, "terminal": terminal, "kind": kind, "state": 2, "method": method,
            "currency": 156, "amount": amount, "receipt_no": receipt_no,
            "client_ref": client_ref.astype("S16")}, payloads


def build_posfast(path, cols, payloads):
    from posfast import DayRule, Journal
    from posfast.retention import slots_per_record
    n = len(payloads)
    slots = sum(slots_per_record(2 + 16 + len(p), 128) for p in payloads)   # head + ext + payload
    with Journal.create(path, capacity=slots + 64, slot_size=128, max_payload=2048,
                        durability="none", day_rule=DayRule(utc_offset="+08:00", starts_at="00:00"),
                        retention="overwrite") as j:
        for s in range(0, n, 100_000):
            j.append_many({k: (v[s:s + 100_000] if hasattr(v, "__len__") else v)
                           for k, v in cols.items()}, payloads[s:s + 100_000])
        assert j.head_seq == n and j.oldest_seq == 1, (j.head_seq, j.oldest_seq)
        # A terminal's payments (begin_payment, finish_payment) keep its payment maps current,
        # so its close saves them; this bulk build does not, and a save does not read a million
        # records to make them: one lookup builds them, as a till's first would.
        j.find(client_ref=bytes(cols["client_ref"][0]))


SQLITE_SCHEMA = """
CREATE TABLE tx (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, terminal INTEGER NOT NULL,
    kind INTEGER NOT NULL, state INTEGER NOT NULL, method INTEGER NOT NULL,
    currency INTEGER NOT NULL, amount INTEGER NOT NULL, receipt_no INTEGER NOT NULL,
    client_ref TEXT NOT NULL, receipt TEXT);
CREATE INDEX tx_terminal_seq ON tx (terminal, seq);
CREATE INDEX tx_client_ref ON tx (client_ref);
"""


def build_sqlite(path, cols, payloads):
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(SQLITE_SCHEMA)
    n = len(payloads)
    rows = zip(range(1, n + 1), cols["ts"].tolist(), cols["terminal"].tolist(),
               cols["kind"].tolist(), [2] * n, cols["method"].tolist(), [156] * n,
               cols["amount"].tolist(), cols["receipt_no"].tolist(),
               [c.decode() for c in cols["client_ref"].tolist()],
               [p.decode() if p else None for p in payloads])
    con.executemany("INSERT INTO tx VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def store_files(engine, path):
    if engine == "posfast":
        return [path, path + ".idx"]
    return [path, path + "-wal", path + "-shm"]


def evict(files):
    for f in files:
        if os.path.exists(f):
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fdatasync(fd) if os.access(f, os.W_OK) else None
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


# ------------------------------------------------------------------ child: memory + reads
def _mem(prefixes):
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                status[key] = int(line.split()[1])
    store = 0
    cur = ""
    with open("/proc/self/smaps") as f:
        for line in f:
            parts = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                cur = parts[5] if len(parts) > 5 else ""
            elif parts[0] == "Rss:" and any(cur.startswith(p) for p in prefixes):
                store += int(parts[1])
    files = status.get("RssFile", 0) + status.get("RssShmem", 0)
    return {"rss_kb": status.get("VmRSS", 0), "anon_kb": status.get("RssAnon", 0),
            "store_kb": store, "libs_kb": files - store}


def _io():
    out = {}
    with open("/proc/self/io") as f:
        for line in f:
            key, value = line.split(":")
            out[key] = int(value)
    return out


def child(engine, path, n, cold):
    """A terminal's session in this fresh interpreter; prints JSON steps."""
    steps = []
    prefixes = [path]

    def step(name, io_before):
        io_after = _io()
        entry = {"step": name, **_mem(prefixes),
                 "rchar": io_after["rchar"] - io_before["rchar"],
                 "read_bytes": io_after["read_bytes"] - io_before["read_bytes"]}
        steps.append(entry)
        return _io()

    io0 = _io()
    if engine == "posfast":
        import posfast
        from posfast.printing import reprint
    else:
        import sqlite3 as sq
        from posfast.receipt import Receipt, render_text
    io0 = step("import", io0)
    # receipts of about a month back (30 days before the newest day)
    month_back = max(1, n - 30 * PER_DAY)
    reprint_seqs = [1 + ((month_back - 1 + k * 97) // RECEIPT_EVERY) * RECEIPT_EVERY for k in range(20)]
    refs = ["T%d-%07d" % (1 + (s - 1) % TERMINALS, (s - 1) // TERMINALS + 1)
            for s in range(max(1, n - 50_000), n, 500)][:100]
    if engine == "posfast":
        j = posfast.Journal.open(path, durability="none")
        io0 = step("open", io0)
        j.last_transaction(3)
        io0 = step("last_transaction (one terminal)", io0)
        one = reprint(j, seq=reprint_seqs[0], printer=None, now=1_795_000_000_000_000)
        assert "COPY" in one.text
        io0 = step("reprint a receipt of last month", io0)
        for t in range(1, TERMINALS + 1):
            j.last(terminal=t)
            j.last_transaction(t)
        for ref in refs:
            assert j.find(ref), ref
        for s in reprint_seqs:
            reprint(j, seq=s, printer=None, now=1_795_000_000_000_000)
        io0 = step("a shift's lookups: last + last_transaction x8, find x100, reprint x20", io0)
        for k in range(1000):
            reprint(j, seq=1 + ((k * 7919) % (n // RECEIPT_EVERY)) * RECEIPT_EVERY, printer=None,
                    now=1_795_000_000_000_000)
        io0 = step("1,000 more reprints across the whole history", io0)
        j.close()
    else:
        con = sq.connect(path)
        con.execute("PRAGMA mmap_size=0")
        io0 = step("open", io0)

        def last_tx(t):
            return con.execute("SELECT seq, state, amount, receipt_no FROM tx WHERE terminal = ? "
                               "AND kind IN (1, 2) ORDER BY seq DESC LIMIT 1", (t,)).fetchone()

        def reprint_sql(seq):
            text = con.execute("SELECT receipt FROM tx WHERE seq = ?", (seq,)).fetchone()[0]
            return render_text(Receipt.from_payload(text.encode()), width=32)
        last_tx(3)
        io0 = step("last_transaction (one terminal)", io0)
        reprint_sql(reprint_seqs[0])
        io0 = step("reprint a receipt of last month", io0)
        for t in range(1, TERMINALS + 1):
            con.execute("SELECT * FROM tx WHERE terminal = ? ORDER BY seq DESC LIMIT 1", (t,)).fetchone()
            last_tx(t)
        for ref in refs:
            assert con.execute("SELECT seq FROM tx WHERE client_ref = ?", (ref,)).fetchall(), ref
        for s in reprint_seqs:
            reprint_sql(s)
        io0 = step("a shift's lookups: last + last_transaction x8, find x100, reprint x20", io0)
        for k in range(1000):
            reprint_sql(1 + ((k * 7919) % (n // RECEIPT_EVERY)) * RECEIPT_EVERY)
        io0 = step("1,000 more reprints across the whole history", io0)
        con.close()
    print(json.dumps(steps))


def run_child(engine, path, n, cold):
    if cold:
        evict(store_files(engine, path))
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", engine, path, str(n),
                          "cold" if cold else "warm"], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ child: writes
def child_write(engine, path):
    from posfast.cli.demo import _receipt
    import numpy as np
    rng = np.random.default_rng(3)
    receipts = [_receipt(rng, 900_000 + k, 3, "2026-11-20T12:00:00+08:00", "card", "1234")
                for k in range(PAYMENTS)]
    if engine == "posfast":
        import posfast
        j = posfast.Journal.open(path, durability="fsync")
        j.flush()
        print("BEGIN", flush=True)
        os.write(2, b"BEGIN-MARK\n")
        for k, (rec, total) in enumerate(receipts):
            txn = j.begin_payment(terminal=3, amount=total, currency=156, method="card",
                                  client_ref="W-%d-%d" % (os.getpid(), k), receipt_no=900_000 + k)
            j.finish_payment(txn, "approved", auth_code="123456", payload=rec.to_payload())
        os.write(2, b"END-MARK\n")
        j.close()
    else:
        con = sqlite3.connect(path, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA wal_autocheckpoint=0")        # checkpoints counted apart
        os.write(2, b"BEGIN-MARK\n")
        head = con.execute("SELECT max(seq) FROM tx").fetchone()[0]
        for k, (rec, total) in enumerate(receipts):
            seq = head + 1 + k
            con.execute("INSERT INTO tx VALUES (?,?,?,?,?,?,?,?,?,?,NULL)",
                        (seq, int(time.time() * 1e6), 3, 1, 1, 1, 156, total, 900_000 + k,
                         "W-%d-%d" % (os.getpid(), k)))
            con.execute("UPDATE tx SET state = 2, receipt = ? WHERE seq = ?",
                        (rec.to_payload().decode(), seq))
        os.write(2, b"END-MARK\n")
        before = os.path.getsize(path + "-wal")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        print(json.dumps({"wal_bytes": before}))


_CALL = re.compile(r"^(?:\[pid\s+\d+\]\s+)?(?:\d+\s+)?(\w+)\((\d+)(.*)\)\s+=\s+(-?\d+)")


def parse_strace(text, files_fds=None):
    """Counts between the BEGIN/END marks: writes (bytes, 4 KiB pages, 512 B sectors) and syncs."""
    inside = False
    out = {"write_calls": 0, "bytes": 0, "pages": 0, "sectors": 0, "syncs": 0}
    for line in text.splitlines():
        if "BEGIN-MARK" in line:
            inside = True
            continue
        if "END-MARK" in line:
            inside = False
            continue
        if not inside:
            continue
        m = _CALL.match(line.strip())
        if not m:
            continue
        call, fd, args, ret = m.group(1), int(m.group(2)), m.group(3), int(m.group(4))
        if call in ("fdatasync", "fsync"):
            out["syncs"] += 1
        elif call in ("pwrite64", "pwrite") and ret > 0 and fd > 2:
            offset = int(args.rsplit(",", 1)[1])
            out["write_calls"] += 1
            out["bytes"] += ret
            out["pages"] += (offset + ret - 1) // 4096 - offset // 4096 + 1
            out["sectors"] += (offset + ret - 1) // 512 - offset // 512 + 1
        elif call == "write" and ret > 0 and fd > 2:
            out["write_calls"] += 1
            out["bytes"] += ret
            out["pages"] += -(-ret // 4096)           # offset unknown: at least this many
            out["sectors"] += -(-ret // 512)
    return out


def run_write(engine, path):
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    cmd = [sys.executable, os.path.abspath(__file__), "--child-write", engine, path]
    strace = shutil.which("strace")
    trace = path + ".strace"
    if strace:
        cmd = [strace, "-f", "-qq", "-s", "12", "-e", "trace=pwrite64,write,fdatasync,fsync",
               "-e", "signal=none", "-o", trace] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    result = {"strace": bool(strace)}
    if strace:
        with open(trace) as f:
            result.update(parse_strace(f.read()))
        os.unlink(trace)
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            result.update(json.loads(line))
    return result


# ------------------------------------------------------------------ output
def _maps_bytes(path):
    """Bytes of the payment maps blob in the index file (saved at close and flush, left out
    of the timed checkpoints)."""
    from posfast import Journal
    from posfast.index import Index
    from posfast.payments import MAPS_BLOB
    with Journal.open(path, readonly=True) as j:
        jid = j.journal_id.bytes
    loaded = Index.load(path + ".idx", jid)
    spec = loaded[0]._blob_specs.get(MAPS_BLOB) if loaded else None
    return spec[1] if spec else 0


def _mb(kb):
    return "%.1f" % (kb / 1024)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--store", default=None,
                        help="keep the built stores in this directory and reuse them next time "
                             "(the write step appends to them)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--child-write", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), args.child[3] == "cold")
        return 0
    if args.child_write:
        child_write(*args.child_write)
        return 0
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(REPO, "posfast")],
                   check=False, stdout=subprocess.DEVNULL)
    started = time.perf_counter()
    work = args.store or tempfile.mkdtemp(prefix="posfast-bench-footprint-", dir=args.dir)
    os.makedirs(work, exist_ok=True)
    load = os.getloadavg()[0]
    n = args.records
    result = {"machine": platform.machine(), "python": platform.python_version(), "records": n,
              "load_before": load}
    try:
        paths = {"posfast": os.path.join(work, "till.pfj"), "sqlite": os.path.join(work, "till.sqlite")}
        if not (args.store and all(os.path.exists(p) for p in paths.values())):
            print("building %s payments (posfast and SQLite) ..." % "{:,}".format(n), flush=True)
            cols, payloads = _workload(n)
            build_posfast(paths["posfast"], cols, payloads)
            build_sqlite(paths["sqlite"], cols, payloads)
        result["sizes"] = {e: sum(os.path.getsize(f) for f in store_files(e, p) if os.path.exists(f))
                           for e, p in paths.items()}
        for engine, path in paths.items():
            run_child(engine, path, n, cold=False)           # warms the page cache
            result[engine + "_warm"] = run_child(engine, path, n, cold=False)
            result[engine + "_cold"] = run_child(engine, path, n, cold=True)
        idx_bytes = os.path.getsize(paths["posfast"] + ".idx")
        result["maps_bytes"] = _maps_bytes(paths["posfast"])
        for engine, path in paths.items():
            result[engine + "_write"] = run_write(engine, path)
        result["index_bytes"] = idx_bytes
    finally:
        if not args.store:
            shutil.rmtree(work, ignore_errors=True)
    result["load_after"] = os.getloadavg()[0]
    result["seconds"] = time.perf_counter() - started
    report(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


def report(r):
    n = r["records"]
    print()
    print("### Memory, fresh process, page cache warm (%s records; MB)" % "{:,}".format(n))
    print()
    print("| step | posfast RSS | anon | libraries | journal files (page cache) | anon + libraries "
          "| SQLite RSS | anon | libraries | db files | anon + libraries |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for a, b in zip(r["posfast_warm"], r["sqlite_warm"]):
        print("| %s | %s | %s | %s | %s | **%s** | %s | %s | %s | %s | **%s** |" % (
            a["step"], _mb(a["rss_kb"]), _mb(a["anon_kb"]), _mb(a["libs_kb"]), _mb(a["store_kb"]),
            _mb(a["anon_kb"] + a["libs_kb"]), _mb(b["rss_kb"]), _mb(b["anon_kb"]),
            _mb(b["libs_kb"]), _mb(b["store_kb"]), _mb(b["anon_kb"] + b["libs_kb"])))
    print()
    print("### Bytes read per operation, the store's files evicted from the page cache first")
    print()
    print("| operation | posfast read_bytes (device) | posfast rchar (syscalls) | SQLite read_bytes | "
          "SQLite rchar |")
    print("|---|---|---|---|---|")
    for a, b in zip(r["posfast_cold"], r["sqlite_cold"]):
        if a["step"] == "import":
            continue
        print("| %s | %s | %s | %s | %s |" % (a["step"], _kib(a["read_bytes"]), _kib(a["rchar"]),
                                            _kib(b["read_bytes"]), _kib(b["rchar"])))
    print()
    print("### Bytes written per durable payment (begin_payment + finish_payment with its receipt; "
          "SQLite INSERT + UPDATE)")
    print()
    pw, sw = r["posfast_write"], r["sqlite_write"]
    if not pw.get("strace"):
        print("(strace not installed: no system-call counts)")
        return
    print("| per payment | posfast | SQLite (WAL, synchronous=FULL) |")
    print("|---|---|---|")
    for key, label in (("write_calls", "write calls"), ("bytes", "bytes written"),
                       ("pages", "4 KiB pages touched"), ("sectors", "512-byte sectors touched"),
                       ("syncs", "fdatasync/fsync")):
        print("| %s | %.1f | %.1f |" % (label, pw[key] / PAYMENTS, sw[key] / PAYMENTS))
    saves = TRADING_HOURS * 3600 // 300
    day_p = pw["bytes"] / PAYMENTS * PER_DAY
    day_pages = pw["pages"] / PAYMENTS * PER_DAY
    day_s = sw["bytes"] / PAYMENTS * PER_DAY + sw.get("wal_bytes", 0) / PAYMENTS * PER_DAY
    maps = r.get("maps_bytes", 0)
    checkpoint = r["index_bytes"] - maps
    print()
    print("A day of trading (%s payments over %d hours): posfast %s in the ring (%s 4 KiB pages, "
          "%d syncs) + %d index saves of %s (one every 300 s while records arrive; the timed "
          "checkpoints leave out the payment maps, %s, written at close) + one close with them "
          "= %s; SQLite %s in the WAL + the same again checkpointed into the database = %s."
          % ("{:,}".format(PER_DAY), TRADING_HOURS, _kib(day_p), "{:,}".format(int(day_pages)),
             pw["syncs"] / PAYMENTS * PER_DAY, saves, _kib(checkpoint), _kib(maps),
             _kib(day_p + saves * checkpoint + r["index_bytes"]),
             _kib(sw["bytes"] / PAYMENTS * PER_DAY), _kib(day_s)))
    print()
    print("(%s, Python %s; load average %.1f before, %.1f after; %.0f s)" % (
        r["machine"], r["python"], r["load_before"], r["load_after"], r["seconds"]))


def _kib(b):
    if b >= 10 << 20:
        return "%.1f MiB" % (b / (1 << 20))
    if b >= 1 << 10:
        return "%.1f KiB" % (b / 1024)
    return "%d B" % b


if __name__ == "__main__":
    sys.exit(main())
