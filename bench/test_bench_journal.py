"""pytest-benchmark micro-benchmarks of the Journal on a 100k-record journal.

    pytest bench/ --benchmark-only -q
    pytest bench/ --benchmark-only -q --benchmark-columns=median,ops,rounds

Not collected by a plain ``pytest`` (pyproject's testpaths is ``tests``).  The
journal lives on the repository's disk (not tmpfs) so that fsync costs what it
costs; bench/compare_sqlite.py holds the side-by-side comparison with SQLite.
"""
from __future__ import annotations

import datetime as dt
import itertools
import os
import shutil
import sys
import tempfile

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from posfast import Journal  # noqa: E402

from compare_sqlite import DAY_RULE, DAYS, FIRST_DAY, TERMINALS, dir_on_repo_disk, make_workload  # noqa: E402

RECORDS = 100_000
DAY0 = (FIRST_DAY - dt.date(1970, 1, 1)).days
SINGLE = dict(terminal=3, kind="sale", state="approved", amount=1250, currency=156, method="card",
              receipt_no=900001, operator=31, pan_last4=b"4242", auth_code=b"A1B2C3",
              rrn=b"612345678901", client_ref=b"T03-0900001")


@pytest.fixture(scope="module")
def workdir():
    d = tempfile.mkdtemp(prefix="posfast-bench-", dir=dir_on_repo_disk())
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def columns():
    return make_workload(RECORDS)


@pytest.fixture(scope="module")
def journal(workdir, columns):
    """100k records over 16 terminals and 90 days, read-only use by the lookup benchmarks."""
    j = Journal.create(os.path.join(workdir, "lookups.pfj"), capacity=RECORDS, durability="none",
                       day_rule=DAY_RULE)
    j.append_many(columns)
    j.flush()
    yield j
    j.close()


def _cycle(values):
    it = itertools.cycle(values)
    return lambda: next(it)


def test_last(benchmark, journal):
    nxt = _cycle(range(1, TERMINALS + 1))
    rec = benchmark(lambda: journal.last(nxt()))
    assert rec is not None


def test_get(benchmark, journal):
    rng = np.random.default_rng(1)
    nxt = _cycle(rng.integers(1, RECORDS + 1, 4096).tolist())
    rec = benchmark(lambda: journal.get(nxt()))
    assert rec.seq >= 1


def test_query_day_terminal(benchmark, journal):
    rng = np.random.default_rng(2)
    pairs = list(zip((DAY0 + rng.integers(0, DAYS, 512)).tolist(),
                     rng.integers(1, TERMINALS + 1, 512).tolist()))
    nxt = _cycle(pairs)

    def run():
        day, terminal = nxt()
        return journal.query(day=day, terminal=terminal)

    rows = benchmark(run)
    assert len(rows) > 0


def test_count_day(benchmark, journal):
    nxt = _cycle(range(DAY0, DAY0 + DAYS))
    assert benchmark(lambda: journal.count(day=nxt())) > 0


@pytest.mark.parametrize("durability", ["none", "fsync"])
def test_append(benchmark, workdir, durability):
    rounds = 2000 if durability == "none" else 300
    j = Journal.create(os.path.join(workdir, "append-%s.pfj" % durability), capacity=rounds + 64,
                       durability=durability, day_rule=DAY_RULE)
    try:
        benchmark.pedantic(lambda: j.append(**SINGLE), rounds=rounds, warmup_rounds=10)
        assert j.head_seq == rounds + 10
    finally:
        j.close()


def test_append_many_10k(benchmark, workdir, columns):
    """One append_many of 10k records into a fresh fsync-mode journal (validation, encoding,
    hash chain, checksums, write, fdatasync and the index update)."""
    batch = {name: col[:10_000] for name, col in columns.items()}
    counter = itertools.count()
    opened = []

    def setup():
        while opened:                      # close and remove the previous round's journal
            old = opened.pop()
            old.close()
            for suffix in ("", ".idx"):
                os.unlink(old.path + suffix)
        path = os.path.join(workdir, "many-%d.pfj" % next(counter))
        opened.append(Journal.create(path, capacity=10_000, durability="fsync",
                                     day_rule=DAY_RULE))
        return (opened[-1],), {}

    try:
        got = benchmark.pedantic(lambda j: j.append_many(batch), setup=setup, rounds=15,
                                 warmup_rounds=1)
        assert got == range(1, 10_001)
    finally:
        for j in opened:
            j.close()
