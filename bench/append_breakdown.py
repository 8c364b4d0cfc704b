"""Where the time of one Journal.append goes, stage by stage, in microseconds.

    python bench/append_breakdown.py                 # 2,000 appends per condition, ~10 s
    python bench/append_breakdown.py --appends 5000 --dir /var/tmp

The stages mirror Journal.append(payload=b"", **fields) -> records.make_row ->
Journal._append_rows -> Ring.append -> Index.add_rows of this commit line by line (the copy
is checked: the records it writes must equal those Journal.append writes, else the script
stops -- rewrite it along with journal.py / records.py):

  check_payload    records.check_payload(b"")
  make_row: fields the validation loop of make_row (enums, texts, integers, money, day)
  make_row: array  np.array([tuple(values)], dtype=RECORD_DTYPE)
  _append_rows     lock, seq arange, payment txn_id, seq column, byte view
  ring.append      the core: encode, CRC, hash link, pwrite (+ fdatasync when durable)
  index.add_rows   the roaring bitmaps and newest-per-terminal of the one row
  rest             maybe_compact, lock release, the returned range

Three conditions, run round-robin one append at a time so that disk load hits all alike:

  none, hot        durability="none", appends back to back (what a profiler shows)
  none, after sync durability="none", each append right after an untimed pwrite+fdatasync
                   of another file: the same CPU work, started cold as in fsync mode
  fsync            durability="fsync" (the default): ring.append includes the sync

and the floor: one 128-byte pwrite + fdatasync at fresh positions of a file made by
Journal.create (the way posfast makes its own, so block allocation is the same).

Then the same pwrite + fdatasync on three files side by side: one posix_fallocate'd
(unwritten extents, what Journal.create made before it wrote the zeros), one with the
zeros written after posix_fallocate, and one made by Journal.create; the first write into
each 4 KiB block is reported apart (on ext4/XFS it converts an unwritten extent).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

from posfast import Journal  # noqa: E402
from posfast import records as R  # noqa: E402
from posfast.records import IS_PAYMENT_KIND, RECORD_DTYPE  # noqa: E402

STAGES = ["check_payload", "make_row: fields", "make_row: array", "_append_rows",
          "ring.append", "index.add_rows", "rest"]
FIELDS = dict(terminal=1, kind="sale", state="approved", amount=1250, currency=156,
              method="card", receipt_no=900000, operator=11, pan_last4=b"4242",
              auth_code=b"A1B2C3", rrn=b"612345678901", client_ref=b"T01-0900000")


def make_row_values(fields, day_rule):
    """records.make_row up to the numpy row (a copy; checked against make_row below)."""
    if not R._FIELD_SET.issuperset(fields):
        raise R.InvalidRecord("unknown field")
    values = list(R._ROW_ZERO)
    ts = None
    for name, value in fields.items():
        if value is None:
            continue
        if name in R._ENUM_FIELDS:
            value = int(R._ENUM_FIELDS[name].coerce(value, name))
        elif name in R._TEXT_FIELDS:
            value = R._text(name, value)
        elif name == "ts":
            value = ts = R.check_ts(R.to_us(value))
        else:
            value = R._integer(name, value)
        values[R._ROW_ORDER[name]] = value
    if fields.get("kind") is None:
        raise R.InvalidRecord("kind")
    given_currency = fields.get("currency")
    R._check_money(values[R._ROW_ORDER["kind"]], values[R._ROW_ORDER["amount"]],
                   None if given_currency is None else values[R._ROW_ORDER["currency"]])
    if ts is None:
        ts = values[R._ROW_ORDER["ts"]] = R.now_us()
    values[R._ROW_ORDER["day"]] = day_rule.day_number(ts)
    return values


def staged_append(j, out, payload=b"", **fields):
    """Journal.append(payload=b"", **fields), with a time stamp after each stage."""
    pc = time.perf_counter
    t0 = pc()
    payload = R.check_payload(payload)
    assert not payload
    t1 = pc()
    values = make_row_values(fields, j.day_rule)
    t2 = pc()
    rows = np.array([tuple(values)], dtype=RECORD_DTYPE)
    t3 = pc()
    n = len(rows)
    with j._mutex:
        j._check_open()
        ring = j._ring
        first = ring.head_seq + 1
        seqs = np.arange(first, first + n, dtype=np.uint64)
        payment = IS_PAYMENT_KIND[rows["kind"]] & (rows["txn_id"] == 0)
        if payment.any():
            rows["txn_id"] = np.where(payment, seqs, rows["txn_id"])
        assert j.on_evict is None
        rows["seq"] = seqs
        raw = rows.view(np.uint8).reshape(n, RECORD_DTYPE.itemsize)
        t4 = pc()
        got = ring.append(raw, None, None)
        t5 = pc()
        j.index.add_rows(rows)
        t6 = pc()
        assert got == first
        j.index.maybe_compact(ring.oldest_seq, ring.capacity)
        result = range(first, first + n)[0]
    t7 = pc()
    for k, (a, b) in enumerate(((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6),
                                (t6, t7))):
        out[STAGES[k]].append(b - a)
    out["total"].append(t7 - t0)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--appends", type=int, default=2000, help="appends per condition")
    p.add_argument("--dir", default=None, help="directory for the files (a real disk, not tmpfs)")
    args = p.parse_args(argv)
    n = args.appends
    warm = 20
    workdir = tempfile.mkdtemp(prefix="posfast-breakdown-", dir=args.dir or os.path.dirname(REPO))
    try:
        cap = n + warm + 10
        mk = {d: Journal.create(os.path.join(workdir, "%s.pfj" % d), capacity=cap,
                                durability=d)
              for d in ("none", "fsync")}
        hot = Journal.create(os.path.join(workdir, "hot.pfj"), capacity=cap, durability="none")
        ref = Journal.create(os.path.join(workdir, "ref.pfj"), capacity=2 * cap, durability="none")
        # the floor file and the "sleep" file: made by posfast's own create, then written raw
        Journal.create(os.path.join(workdir, "floor.pfj"), capacity=2 * cap).close()
        floor_fd = os.open(os.path.join(workdir, "floor.pfj"), os.O_RDWR)
        slot = [0]
        blob = b"\x5a" * 128

        def floor_op():
            os.pwrite(floor_fd, blob, 8192 + 128 * slot[0])
            os.fdatasync(floor_fd)
            slot[0] += 1

        ts0 = int(time.time() * 1e6) - 3_600_000_000
        assert (make_row_values(dict(FIELDS, ts=ts0), ref.day_rule)
                == make_row_values(dict(FIELDS, ts=ts0), ref.day_rule))
        assert np.array([tuple(make_row_values(dict(FIELDS, ts=ts0), ref.day_rule))],
                        dtype=RECORD_DTYPE).tobytes() \
            == R.make_row(dict(FIELDS, ts=ts0), ref.day_rule).tobytes()
        res = {c: {s: [] for s in STAGES + ["total"]}
               for c in ("none, hot", "none, after sync", "fsync")}
        floor_t = []
        hot_block = []
        for i in range(n + warm):
            f = dict(FIELDS, ts=ts0 + i, terminal=1 + i % 16, amount=1250 + i,
                     receipt_no=900000 + i)
            sink = {s: [] for s in STAGES + ["total"]}
            # floor
            t0 = time.perf_counter()
            floor_op()
            ft = time.perf_counter() - t0
            # fsync journal, right after the floor's sync as in compare_sqlite's round-robin
            staged_append(mk["fsync"], res["fsync"] if i >= warm else sink, **f)
            # durability none, right after a sync of another file
            floor_op()
            staged_append(mk["none"], res["none, after sync"] if i >= warm else sink, **f)
            ref.append(**f)
            if i >= warm:
                floor_t.append(ft)
        # hot: back to back (after the others, so the disk does not matter)
        for i in range(n + warm):
            f = dict(FIELDS, ts=ts0 + i, terminal=1 + i % 16, amount=1250 + i,
                     receipt_no=900000 + i)
            staged_append(hot, res["none, hot"] if i >= warm else
                          {s: [] for s in STAGES + ["total"]}, **f)
        t0 = time.perf_counter()
        for i in range(n):
            ref.append(**dict(FIELDS, ts=ts0 + n + warm + i, terminal=1 + i % 16))
        hot_block.append((time.perf_counter() - t0) / n)
        # the copy wrote what Journal.append writes
        want = ref.query()[: n + warm]
        for j in (mk["none"], mk["fsync"], hot):
            got = j.query()
            assert got.tobytes() == want.tobytes(), "staged_append no longer mirrors Journal.append"
            assert j.verify().ok
        floor = statistics.median(floor_t)
        print("median µs per append over %d appends per condition (after %d warm-up)" % (n, warm))
        cols = list(res)
        w = max(len(s) for s in STAGES + ["total"]) + 2
        print("%-*s" % (w, "stage") + "".join("%18s" % c for c in cols))
        for s in STAGES + ["total"]:
            if s == "total":
                print("-" * (w + 18 * len(cols)))
            print("%-*s" % (w, s) + "".join("%18.1f" % (statistics.median(res[c][s]) * 1e6)
                                            for c in cols))
        sum_py = {c: sum(statistics.median(res[c][s]) for s in STAGES if s != "ring.append")
                  for c in cols}
        print("%-*s" % (w, "Python outside the core") + "".join("%18.1f" % (sum_py[c] * 1e6)
                                                              for c in cols))
        print()
        fs = statistics.median(res["fsync"]["total"])
        ra = statistics.median(res["fsync"]["ring.append"])
        print("floor (pwrite 128 B + fdatasync, file made by Journal.create): %.1f µs" % (floor * 1e6))
        print("fsync append total %.1f µs = %.2f× floor;  ring.append alone %.1f µs = %.2f× floor"
              % (fs * 1e6, fs / floor, ra * 1e6, ra / floor))
        print("Journal.append, durability none, back to back (no stamps): %.1f µs"
              % (hot_block[0] * 1e6))
        extents(workdir, max(640, n // 2))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def extents(workdir, n):
    """pwrite 128 B + fdatasync at fresh positions of differently prepared files."""
    size = 8192 + 128 * (n + 64)
    fds = {}
    for how in ("posix_fallocate only", "fallocate + zeros", "Journal.create"):
        path = os.path.join(workdir, "ext-%d" % len(fds))
        if how == "Journal.create":
            Journal.create(path, capacity=n + 64).close()
            fds[how] = os.open(path, os.O_RDWR)
            continue
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        os.posix_fallocate(fd, 0, size)
        if how == "fallocate + zeros":
            zeros = bytes(1 << 20)
            off = 0
            while off < size:
                off += os.pwrite(fd, zeros[: min(len(zeros), size - off)], off)
        os.fsync(fd)
        fds[how] = fd
    t = {how: [] for how in fds}
    blob = b"\x5a" * 128
    for i in range(n):
        for how, fd in fds.items():
            t0 = time.perf_counter()
            os.pwrite(fd, blob, 8192 + 128 * i)
            os.fdatasync(fd)
            t[how].append(time.perf_counter() - t0)
    print()
    print("pwrite 128 B + fdatasync at fresh positions, %d each, round-robin (median µs):" % n)
    for how, v in t.items():
        first = [x for i, x in enumerate(v) if i % 32 == 0]
        rest = [x for i, x in enumerate(v) if i % 32]
        print("  %-22s all %7.1f   first write into a 4 KiB block %7.1f (%d)   others %7.1f   "
              "mean %7.1f" % (how, statistics.median(v) * 1e6, statistics.median(first) * 1e6,
                              len(first), statistics.median(rest) * 1e6,
                              statistics.mean(v) * 1e6))
    for fd in fds.values():
        os.close(fd)


if __name__ == "__main__":
    main()
