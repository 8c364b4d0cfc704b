"""Archive size: bytes per payment record and per receipt, posfast's archive against
DuckDB and SQLite on the same records, in the same run.

    python bench/bench_archive.py                    # 200,000 records per workload, ~1 min
    python bench/bench_archive.py --records 1000000 --json out.json

Two workloads of payment records without payload, 2,000 a day:
* regular: the bench/retention.py store (8 terminals in turn, evenly spaced times,
  amounts in a cycle, receipt numbers per day) - the workload the issue's 7.6 B/record
  for DuckDB was measured on;
* card-heavy: bench/compare_sqlite.py's records (random times, lognormal amounts, random
  12-digit RRNs, 6-character auth codes and card last-4 on most records): these random
  strings alone carry about 10 bytes of entropy a record, which no store can go below.
posfast: a journal with retention="archive" and a small ring, synced as it goes, so
every record passes through the archive; bytes are the archive directory (segments,
index, manifest, dictionary) over the records it holds.  DuckDB: the same columns in
one table (CHECKPOINTed file).  SQLite: the same table, no secondary index (VACUUMed).

Receipts: demo receipts (posfast.receipt.Receipt.to_payload, compact JSON, 1-4 items,
Chinese and English names), one per record; posfast stores them as the records'
payloads; SQLite as TEXT in a table (seq INTEGER PRIMARY KEY, receipt TEXT).  posfast
with zlib and a preset dictionary trained on the store's own receipts (stdlib, every
terminal), without a dictionary, and with zstd + trained dictionary where the optional
zstandard package is installed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

from posfast import Journal  # noqa: E402
from posfast.archive import _zstd  # noqa: E402

import compare_sqlite as cs  # noqa: E402

PER_DAY = 2000
TERMINALS = 8


def regular(n):
    """Columns of the bench/retention.py workload."""
    idx = np.arange(n, dtype=np.int64)
    day = 20_000 + idx // PER_DAY
    spacing = 12 * 3_600_000_000 // PER_DAY
    ts = day * 86_400_000_000 - (cs.DAY_RULE.offset_minutes - cs.DAY_RULE.start_minutes) * 60_000_000 \
        + 4 * 3_600_000_000 + (idx % PER_DAY) * spacing
    z = np.zeros(n, "S1")
    return {"ts": ts, "terminal": (idx % TERMINALS + 1).astype(np.uint32),
            "kind": np.where(idx % 50 == 7, 2, 1).astype(np.uint8), "state": np.full(n, 2, np.uint8),
            "method": (idx % 3 + 1).astype(np.uint8), "currency": np.full(n, 156, np.uint16),
            "amount": 100 + idx % 9973, "receipt_no": (idx % PER_DAY + 1).astype(np.uint32),
            "ref_seq": np.zeros(n, np.uint64), "operator": np.zeros(n, np.uint32),
            "pan_last4": z.astype("S4"), "auth_code": z.astype("S6"), "rrn": z.astype("S12"),
            "client_ref": z.astype("S16")}


def card_heavy(n):
    cols = cs.make_workload(n)
    # 2,000 a day rather than compare_sqlite's 90 days, so days hold the same volume
    order = np.arange(n)
    start = cols["ts"][0]
    cols["ts"] = start + order * (86_400_000_000 // PER_DAY) // 2 + (cols["ts"] - start) % 1_000_000
    return cols


def receipts(n, seed=1):
    from posfast.cli.demo import _receipt
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        method = ("card", "cash", "qr")[i % 3]
        rec, _ = _receipt(rng, i + 1, i % TERMINALS + 1, "2026-11-%02dT%02d:%02d:%02d+08:00"
                          % (1 + i // PER_DAY % 28, 8 + i % 12, i % 60, (i * 7) % 60), method,
                          "%04d" % rng.integers(0, 10000) if method == "card" else "")
        out.append(rec.to_payload())
    return out


def _dir_bytes(path):
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def posfast_archive(work, cols, payloads=None, codec="zlib", dictionary=True):
    n = len(cols["ts"])
    path = os.path.join(work, "a-%s.pfj" % codec)
    maxp = max(map(len, payloads)) if payloads else 0
    slot = 192 if cols["client_ref"].any() else 128
    j = Journal.create(path, capacity=4096 if not payloads else 16384, slot_size=slot,
                       max_payload=maxp, durability="none", day_rule=cs.DAY_RULE,
                       retention="archive")
    j.archive.configure(codec=codec, dictionary=dictionary)
    t0 = time.perf_counter()
    step = 500
    for s in range(0, n, step):
        c = {k: v[s:s + step] for k, v in cols.items()}
        seqs = j.append_many(c, payloads[s:s + step] if payloads else None)
        j.set_sync_watermark(seqs[-1])
    j.close()
    seconds = time.perf_counter() - t0
    with Journal.open(path, readonly=True) as j:
        st = j.archive.status()
        seq = st["first_seq"] + 7
        rec = j.get(seq)
        assert rec.archived and rec.amount == int(cols["amount"][seq - 1])
        if payloads:
            assert rec.payload == payloads[seq - 1]
    adir = path + ".archive"
    segs = sum(os.path.getsize(os.path.join(adir, f)) for f in os.listdir(adir) if f.endswith(".pfa"))
    out = {"records": st["records"], "segments_bytes": segs, "dir_bytes": _dir_bytes(adir),
           "seconds": seconds}
    if payloads:
        archived = payloads[st["first_seq"] - 1:st["last_seq"]]
        out["payload_raw_bytes"] = sum(map(len, archived))
    os.unlink(path)
    shutil.rmtree(adir)
    return out


def duck(work, cols):
    try:
        import duckdb  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError:
        return None
    n = len(cols["ts"])
    path = os.path.join(work, "d.duckdb")
    days = (cols["ts"] + (cs.DAY_RULE.offset_minutes - cs.DAY_RULE.start_minutes) * 60_000_000) \
        // 86_400_000_000
    store = cs.DuckStore(path, create=True)
    store.bulk(cs.duckdb_input(cols, days))
    store.checkpoint()
    store.con.close()
    size = sum(os.path.getsize(f) for f in cs.DuckStore.files(path) if os.path.exists(f))
    os.unlink(path)
    return {"records": n, "bytes": size}


def sqlite_rows(work, cols):
    path = os.path.join(work, "s.sqlite")
    con = sqlite3.connect(path)
    con.executescript(cs.SCHEMA.split("CREATE INDEX")[0])
    con.executemany(cs.SQL_INSERT, cs.sqlite_rows(cols))
    con.commit()
    con.execute("VACUUM")
    con.close()
    size = os.path.getsize(path)
    os.unlink(path)
    return {"records": len(cols["ts"]), "bytes": size}


def sqlite_text(work, payloads):
    path = os.path.join(work, "r.sqlite")
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE receipts (seq INTEGER PRIMARY KEY, receipt TEXT NOT NULL)")
    con.executemany("INSERT INTO receipts VALUES (?, ?)",
                    ((i + 1, p.decode()) for i, p in enumerate(payloads)))
    con.commit()
    con.execute("VACUUM")
    con.close()
    size = os.path.getsize(path)
    os.unlink(path)
    return size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--receipts", type=int, default=100_000)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="posfast-bench-archive-", dir=args.dir)
    load = os.getloadavg()[0]
    result = {"machine": platform.machine(), "python": platform.python_version(),
              "load_before": load, "zstandard": _zstd() is not None}
    codecs = ["zlib", "lzma"] + (["zstd"] if _zstd() else [])
    try:
        print("| workload (records without payload) | store | bytes / record (all files) | "
              "segments only |")
        print("|---|---|---|---|")
        for name, make in (("regular", regular), ("card-heavy", card_heavy)):
            cols = make(args.records)
            rows = result.setdefault(name, {})
            for codec in codecs:
                r = posfast_archive(work, cols, codec=codec)
                rows["posfast_" + codec] = r
                print("| %s | posfast archive (%s) | %.2f | %.2f |" % (
                    name, codec, r["dir_bytes"] / r["records"], r["segments_bytes"] / r["records"]),
                    flush=True)
            d = duck(work, cols)
            if d:
                rows["duckdb"] = d
                print("| %s | DuckDB table | %.2f | |" % (name, d["bytes"] / d["records"]), flush=True)
            s = sqlite_rows(work, cols)
            rows["sqlite"] = s
            print("| %s | SQLite table (no index) | %.2f | |" % (name, s["bytes"] / s["records"]),
                  flush=True)
        print()
        cols = regular(args.receipts)
        pays = receipts(args.receipts)
        text = sqlite_text(work, pays)
        raw = sum(map(len, pays))
        result["receipts"] = {"count": len(pays), "raw_bytes": raw, "sqlite_text_bytes": text}
        print("Receipts (%s demo receipts, %.0f bytes of JSON each on average):"
              % ("{:,}".format(len(pays)), raw / len(pays)))
        print()
        print("| store | bytes / receipt | vs SQLite TEXT |")
        print("|---|---|---|")
        print("| SQLite TEXT column | %.1f | 1.00 |" % (text / len(pays)))
        for codec, dictionary in [("zlib", True), ("zlib", False)] + \
                ([("zstd", True), ("zstd", False)] if _zstd() else []):
            r = posfast_archive(work, cols, pays, codec=codec, dictionary=dictionary)
            per = r["dir_bytes"] / r["records"]
            result["receipts"]["%s_%s" % (codec, "dict" if dictionary else "nodict")] = r
            print("| posfast archive, %s%s (record + receipt, all files) | %.1f | %.1f× smaller |"
                  % (codec, " + trained dictionary" if dictionary else "", per,
                     (text / len(pays)) / per), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["load_after"] = os.getloadavg()[0]
    print()
    print("(%s, Python %s; load average %.1f before, %.1f after)" % (
        platform.machine(), platform.python_version(), load, result["load_after"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
