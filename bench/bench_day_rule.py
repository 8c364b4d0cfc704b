"""What deriving the business day costs: DayRule.day_number per record (make_row, on every
append) and DayRule.day_numbers for a bulk append (make_rows), fixed offset vs time zone.

    .venv/bin/python bench/bench_day_rule.py            # 1M rows, best of 5
"""
import sys
import time
import timeit

import numpy as np

from posfast import DayRule
from posfast.records import make_row, make_rows, now_us

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
RULES = {"fixed +08:00": DayRule(utc_offset="+08:00", starts_at="04:00"),
         "tz Asia/Shanghai": DayRule(tz="Asia/Shanghai", starts_at="04:00"),
         "tz Europe/Berlin": DayRule(tz="Europe/Berlin", starts_at="04:00"),
         "tz America/New_York": DayRule(tz="America/New_York", starts_at="04:00")}


def best(stmt, number, repeat=5):
    return min(timeit.repeat(stmt, number=number, repeat=repeat)) / number


def main():
    now = now_us()
    rng = np.random.default_rng(1)
    day_us = 86_400_000_000
    # a bulk append: N rows of the last 30 days, in time order (one DST change inside for
    # Berlin / New York when run in late March or October, none otherwise), and N rows
    # spread over 2000..now (every change of 26 years)
    recent = np.sort(now - rng.integers(0, 30 * day_us, N))
    spread = rng.integers(946_684_800_000_000, now, N)
    fields = {"kind": "sale", "amount": 1250, "currency": 156, "terminal": 3, "ts": int(now)}
    print("%-20s %14s %14s %16s %16s %14s" % ("rule", "day_number", "make_row",
                                             "day_numbers 1M", "day_numbers 1M", "make_rows 1M"))
    print("%-20s %14s %14s %16s %16s %14s" % ("", "(us/call)", "(us/call)", "30 days (ms)",
                                             "2000..now (ms)", "(ms)"))
    for name, rule in RULES.items():
        rule.day_numbers(spread)                       # the zone's table, sampled once
        ts = int(now)
        one = best(lambda: rule.day_number(ts), 200_000)
        row = best(lambda: make_row(fields, rule), 20_000)
        vec = best(lambda: rule.day_numbers(recent), 1)
        vec_spread = best(lambda: rule.day_numbers(spread), 1)
        cols = {"kind": "sale", "amount": 1250, "currency": 156, "terminal": 3, "ts": recent}
        bulk = best(lambda: make_rows(cols, rule), 1, repeat=3)
        print("%-20s %14.3f %14.2f %16.1f %16.1f %14.1f" % (name, one * 1e6, row * 1e6, vec * 1e3,
                                                            vec_spread * 1e3, bulk * 1e3))
    # the first use of a zone: sampling its offsets (zoneinfo), lazily per ~388-day block
    t0 = time.perf_counter()
    DayRule(tz="America/Chicago").day_number(now)
    t1 = time.perf_counter()
    DayRule(tz="Europe/Paris").day_numbers(spread)
    t2 = time.perf_counter()
    print("first use of a zone: one time %.1f ms, 2000..now %.1f ms" % ((t1 - t0) * 1e3,
                                                                        (t2 - t1) * 1e3))


if __name__ == "__main__":
    main()
