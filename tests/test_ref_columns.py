"""Journal.ref_columns (the core's bulk reference decoder) reads what Journal.refs reads, and
a large read hands the journal's mapped pages back (RSS holds the rows, not the file)."""
import os

import numpy as np
import pytest

from posfast import Journal, _core

import posfast.journal as journal_module


def _fill(j, n, seed=3):
    rng = np.random.default_rng(seed)
    for i in range(n):
        pick = rng.integers(0, 4)
        j.append(terminal=1 + i % 3, kind="sale", state="approved", amount=100 + i, currency=156,
                 order_ref="" if pick in (0, 2) else "ORD-%d" % i,
                 host_ref="" if pick in (0, 1) else "4200%0*d" % (int(rng.integers(1, 40)), i),
                 client_ref="c%d" % i if pick == 3 else None)


def test_ref_columns_match_refs_across_chunks_laps_and_gone_seqs(tmp_path, monkeypatch):
    path = str(tmp_path / "t.pfj")
    with Journal.create(path, capacity=300, slot_size=128, retention="overwrite") as j:
        _fill(j, 700)                       # the ring laps twice: extensions wrap its end
        seqs = np.arange(1, j.head_seq + 3, dtype=np.uint64)       # evicted and future ones too
        expected = j.refs(seqs)
        for chunk in (7, 64, 1 << 16):
            monkeypatch.setattr(journal_module, "_BULK_CHUNK", chunk)
            order, host = j._ref_columns(seqs, chunk)
            assert order.tolist() == [r[0] for r in expected]
            assert host.tolist() == [r[1] for r in expected]
        assert j.ref_columns(seqs[:0])[0].tolist() == []
    with Journal.open(path, readonly=True) as r:
        order, host = r.ref_columns(seqs)
        assert host.tolist() == [x[1] for x in expected]
        assert order.tolist() == [x[0] for x in expected]


def test_ref_columns_of_a_v1_journal_are_empty(tmp_path):
    with Journal.create(str(tmp_path / "v1.pfj"), capacity=64, format_version=1) as j:
        j.append(terminal=1, kind="sale", state="approved", amount=5, currency=156)
        order, host = j.ref_columns([1])
        assert order.tolist() == [b""] and host.tolist() == [b""]


def test_refs_into_checks_its_buffers(tmp_path):
    with Journal.create(str(tmp_path / "b.pfj"), capacity=64) as j:
        j.append(terminal=1, kind="sale", amount=5, currency=156, host_ref="H1")
        seqs = np.array([1], np.uint64)
        with pytest.raises(ValueError):
            _core.ring_refs_into(j._ring, seqs, np.zeros((1, 8), np.uint8),
                                 np.zeros((1, _core.REF_SIZE), np.uint8))


def _rss_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux RSS")
def test_a_large_query_leaves_the_file_out_of_rss(tmp_path):
    path = str(tmp_path / "big.pfj")
    n = 200_000
    with Journal.create(path, capacity=n + 10, slot_size=192, durability="none") as j:
        j.append_many({"ts": 1795140000_000000 + np.arange(n), "terminal": 1, "kind": "sale",
                       "state": "approved", "amount": 100, "currency": 156})
    with Journal.open(path, readonly=True) as r:
        before = _rss_kb()
        rows = r.query(day=r.day_rule.day_number(1795140000_000000))
        grown = _rss_kb() - before
        assert len(rows) == n
        # the rows (120 bytes each) stay; the 192-byte slots of the file are handed back
        assert grown < (n * 120 + n * 192 // 2) // 1024, grown
        assert _core.ring_drop_pages(r._ring) == 0
        assert r.query(day=r.day_rule.day_number(1795140000_000000))["amount"].sum() == 100 * n
