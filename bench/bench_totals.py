"""Day totals (``Journal.totals``) at scale: the lookup, and what they add to a bulk append.

    python bench/bench_totals.py                  # 1,000,000 records, ~1 min on 2 cores
    python bench/bench_totals.py --records 200000

Measured in one run:

* ``append_many`` of N final-state payments (30 business days, 16 terminals, 3 currencies,
  sales, refunds, voids, completions, prints) into a fresh journal whose totals are not
  built (nothing fed: the append as before) and into one whose totals are built (every row
  fed to DayTotals.add_rows), alternately, median of the rounds;
* ``totals(day)`` and ``totals(day, terminal)`` at N records, by timeit (the day unchanged:
  a dict lookup), and the first call after an append changed the day (a fresh snapshot);
* the first ``totals()`` call of an open (built from the N records), ``to_bytes`` /
  ``from_bytes`` and the blob's size;
* the memory kept per PENDING payment (tracemalloc over 100,000 of them).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import timeit
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402

from posfast import DayRule, Journal  # noqa: E402
from posfast.totals import DayTotals  # noqa: E402

RULE = DayRule(utc_offset="+08:00", starts_at="04:00")
START_US = 1_787_000_000_000_000
DAY_US = 86_400_000_000


def workload(n, seed=1, days=30):
    rng = np.random.default_rng(seed)
    return {"ts": np.sort(START_US + rng.integers(0, days * DAY_US, n)),
            "terminal": rng.integers(1, 17, n), "kind": rng.choice([1, 1, 1, 1, 2, 3, 6, 7], n),
            "state": rng.choice([2, 2, 2, 2, 3, 6], n), "method": rng.choice([1, 2, 3, 4], n),
            "currency": rng.choice([156, 156, 978, 840], n), "amount": rng.integers(100, 50_000, n),
            "receipt_no": np.arange(n) % 100_000}


_FEEDING = []


def _timed_add_rows(real):
    def add_rows(self, rows, oldest, evict=True):
        t = time.perf_counter()
        real(self, rows, oldest, evict)
        _FEEDING.append(time.perf_counter() - t)
    return add_rows


DayTotals.add_rows = _timed_add_rows(DayTotals.add_rows)     # (to show its share)


def bulk_append(directory, columns, fed, k):
    path = os.path.join(directory, "bulk-%d-%d.pfj" % (k, fed))
    j = Journal.create(path, capacity=len(columns["ts"]) + 1024, durability="none", day_rule=RULE)
    if fed:
        j.totals(0)                       # built (empty): every appended row is fed
    t = time.perf_counter()
    j.append_many(columns)
    elapsed = time.perf_counter() - t
    j.close()
    os.unlink(path)
    os.unlink(path + ".idx")
    return elapsed


def best_us(fn, number=20000):
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args(argv)
    n = args.records
    directory = tempfile.mkdtemp(prefix="posfast-bench-totals-", dir=args.dir)
    columns = workload(n)
    rows = []

    for days in (30, 1):
        cols = columns if days == 30 else workload(n, days=1)
        before, after = [], []
        bulk_append(directory, cols, True, -1)            # warm-up
        del _FEEDING[:]
        for k in range(args.rounds):
            before.append(bulk_append(directory, cols, False, k))
            after.append(bulk_append(directory, cols, True, k))
        for how, pick in (("median", statistics.median), ("best", min)):
            b, a = pick(before) * 1e3, pick(after) * 1e3
            rows.append(("append_many(%d) over %d day(s), %s: without totals / fed"
                         % (n, days, how), "%.0f ms / %.0f ms" % (b, a),
                         "%+.0f ms (%+.1f%%)" % (a - b, (a / b - 1) * 100)))
        rows.append(("  of which DayTotals.add_rows (median / best)", "%.0f ms / %.0f ms" % (
            statistics.median(_FEEDING) * 1e3, min(_FEEDING) * 1e3), ""))

    path = os.path.join(directory, "till.pfj")
    with Journal.create(path, capacity=n + 1024, durability="none", day_rule=RULE) as j:
        j.append_many(columns)
    with Journal.open(path, durability="none") as j:
        day = RULE.day_number(int(columns["ts"][n // 2]))
        t = time.perf_counter()
        first = j.totals(day)
        rows.append(("first totals() after open (built from %d records)" % n,
                     "%.0f ms" % ((time.perf_counter() - t) * 1e3), ""))
        assert first[156].count > 0
        rows.append(("totals(day), day unchanged", "%.2f µs" % best_us(lambda: j.totals(day)),
                     "<= 5 µs"))
        rows.append(("totals(day, terminal=3), day unchanged",
                     "%.2f µs" % best_us(lambda: j.totals(day, terminal=3)), "<= 5 µs"))
        iso = str(first.date)
        rows.append(("totals('%s') (ISO day string)" % iso,
                     "%.2f µs" % best_us(lambda: j.totals(iso)), ""))
        ts = int(columns["ts"][n // 2])

        def changed():
            j.append(terminal=3, kind="sale", state="approved", amount=100, currency=156, ts=ts)
            t = time.perf_counter()
            j.totals(day)
            return time.perf_counter() - t
        samples = [changed() for _ in range(300)]
        rows.append(("totals(day) right after an append to that day (new snapshot)",
                     "%.2f µs" % (statistics.median(samples) * 1e6), ""))
        def single_append_us(journal):
            samples = []
            for _ in range(500):
                t = time.perf_counter()
                journal.append(terminal=3, kind="sale", state="approved", amount=100,
                               currency=156, ts=ts)
                samples.append(time.perf_counter() - t)
            return statistics.median(samples) * 1e6
        fed = single_append_us(j)
        with Journal.create(os.path.join(directory, "plain.pfj"), capacity=4096,
                            durability="none", day_rule=RULE) as plain:
            unfed = single_append_us(plain)
        rows.append(("append() of one sale (durability none): without totals / fed",
                     "%.1f µs / %.1f µs" % (unfed, fed), "+%.1f µs" % (fed - unfed)))
        book = j._totals
        t = time.perf_counter()
        blob = book.to_bytes()
        t2 = time.perf_counter()
        again = DayTotals.from_bytes(blob)
        t3 = time.perf_counter()
        assert again.totals(day) == book.totals(day)
        rows.append(("to_bytes / from_bytes (%d days, %d bytes)" % (len(book.days()), len(blob)),
                     "%.1f ms / %.1f ms" % ((t2 - t) * 1e3, (t3 - t2) * 1e3), ""))

    pending = 100_000
    rng = np.random.default_rng(3)
    cols = {"ts": START_US + rng.integers(0, DAY_US, pending), "terminal": rng.integers(1, 17, pending),
            "kind": "sale", "state": "pending", "method": "card", "currency": 156,
            "amount": rng.integers(100, 50_000, pending)}
    with Journal.create(os.path.join(directory, "open.pfj"), capacity=pending + 1024,
                        durability="none", day_rule=RULE) as j:
        j.totals(0)
        tracemalloc.start()
        j.append_many(cols)
        mine = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, "*%stotals.py" % os.sep)])
        held = sum(stat.size for stat in mine.statistics("filename"))
        tracemalloc.stop()
        blob = j._totals.to_bytes()
        rows.append(("memory per PENDING payment (%d in doubt)" % j._totals.remembered,
                     "%.0f bytes" % (held / pending), "%.0f bytes in to_bytes()" % (
                         (len(blob) - len(DayTotals().to_bytes())) / pending)))

    width = max(len(r[0]) for r in rows)
    print("posfast day totals, %d records\n" % n)
    for name, value, note in rows:
        print("%s | %18s | %s" % (name.ljust(width), value, note))


if __name__ == "__main__":
    main()
