"""PostgreSQL back office against a real server on loopback (tests/_pg.py starts one)."""
import threading
import time

import pytest

psycopg = pytest.importorskip("psycopg", reason="PostgresTarget needs psycopg 3 (pip install 'psycopg[binary]')")

import posfast  # noqa: E402
from posfast.sync import PostgresTarget, SyncRefused, SyncResult, Syncer, target_from_url  # noqa: E402

from _sync_helpers import (HandJournal, assert_back_office_equals_journal, assert_same_records,  # noqa: E402
                           fill_journal)


@pytest.fixture
def pg(dsn):
    target = PostgresTarget(dsn)
    yield target
    target.close()


def refused(target, batch, reason, **kw):
    with pytest.raises(SyncRefused) as info:
        target.push(batch, **kw)
    assert info.value.reason == reason, info.value
    return info.value


def test_journal_syncs_record_for_record(pg, tmp_path):
    j = posfast.Journal.create(tmp_path / "t.pfj", capacity=20_000, durability="none")
    fill_journal(j, 3000, seed=4)
    assert Syncer(j, pg, batch=700).run_once() == SyncResult(3000, 5, 3000)
    assert_back_office_equals_journal(pg, j)
    st = pg.state(j.journal_id)
    assert (st.anchor_seq, st.high_seq, st.records, st.last_link) == (1, 3000, 3000, j.link(3000))
    j.close()


def test_schema_columns_types_and_index(pg, dsn):
    with psycopg.connect(dsn) as conn:
        cols = dict(conn.execute("SELECT column_name, data_type FROM information_schema.columns "
                                 "WHERE table_name = 'records'").fetchall())
        idx = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'records'")}
    assert set(posfast.RECORD_DTYPE.names) <= set(cols)
    assert (cols["journal_id"], cols["seq"], cols["terminal"], cols["payload"], cols["link"]) == (
        "uuid", "bigint", "bigint", "bytea", "bytea")
    assert "records_day_terminal" in idx and "records_pkey" in idx


def test_unsigned_64_bit_values_survive(pg):
    hj = HandJournal(0)
    hj.extend(2)
    hj.rows["txn_id"][0] = 2**64 - 1
    from _sync_helpers import genesis
    prev, hj.links = genesis(hj.journal_id), []
    for i in range(2):
        prev = bytes(posfast.chain_link(prev, hj.rows[i], hj.payloads[i], hj.exts[i]))
        hj.links.append(prev)
    pg.push(hj.batch(1, 2))
    assert int(pg.read_range(hj.journal_id).rows["txn_id"][0]) == 2**64 - 1


def test_replay_gap_fork_chain(pg):
    hj = HandJournal(400)
    pg.push(hj.batch(1, 200))
    ack = pg.push(hj.batch(101, 300))
    assert (ack.high_seq, ack.stored, ack.duplicates) == (300, 100, 100)
    ack = pg.push(hj.batch(1, 300))
    assert (ack.high_seq, ack.stored, ack.duplicates) == (300, 0, 300)
    refused(pg, hj.batch(302, 400), "gap")
    bad = hj.batch(301, 400)
    bad.rows["amount"][50] = 0
    refused(pg, bad, "chain")
    refused(pg, HandJournal(50, journal_id=hj.journal_id, seed=77).batch(1, 50), "fork")
    refused(pg, HandJournal(50, seed=3).batch(20, 50), "gap")
    assert pg.count() == 300 and pg.count(hj.journal_id) == 300
    assert [r["reason"] for r in pg.refusals()] == ["gap", "chain", "fork", "gap"]
    assert_same_records(pg.read_range(hj.journal_id), hj.rows[:300], hj.payloads[:300], hj.links[:300])


def test_anchor(pg):
    hj = HandJournal(100)
    refused(pg, hj.batch(40, 60), "gap")
    assert pg.push(hj.batch(40, 60), anchor=True).stored == 21
    assert pg.state(hj.journal_id).anchor_seq == 40
    refused(pg, hj.batch(30, 70), "gap")
    assert pg.push(hj.batch(50, 100)).high_seq == 100


def test_concurrent_syncers_of_one_journal_do_not_interleave(dsn):
    """Row lock on the journal: racing pushers of overlapping batches store each record once."""
    hj = HandJournal(3000)
    PostgresTarget(dsn).close()
    errors = []

    def pusher(offset):
        target = PostgresTarget(dsn, pool_size=1)
        try:
            for first in range(1 + offset, 3001, 250):
                target.push(hj.batch(first, min(first + 249, 3000)))
        except Exception as exc:     # without the row lock, racers would collide here
            errors.append(exc)
        finally:
            target.close()

    threads = [threading.Thread(target=pusher, args=(0,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    target = PostgresTarget(dsn)
    assert target.count() == 3000 and target.state(hj.journal_id).records == 3000
    assert_same_records(target.read_range(hj.journal_id), hj.rows, hj.payloads, hj.links)
    target.close()


def test_many_journals_in_parallel_threads_share_the_pool(pg):
    journals = [HandJournal(300, terminal=t, seed=t) for t in range(12)]

    def sync(hj):
        Syncer(hj, pg, batch=64).run_once()

    threads = [threading.Thread(target=sync, args=(hj,)) for hj in journals]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pg.count() == 12 * 300
    assert all(hj.sync_watermark == 300 for hj in journals)
    assert {s.journal_id for s in pg.journals()} == {hj.journal_id for hj in journals}


def test_target_from_url_postgres(dsn):
    t = target_from_url(dsn)
    assert isinstance(t, PostgresTarget) and t.count() == 0
    t.close()


def test_unreachable_database_is_unavailable():
    from posfast.sync import SyncUnavailable
    with pytest.raises(SyncUnavailable):
        PostgresTarget("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")


def test_http_server_on_postgres_fifty_terminals(dsn, tmp_path):
    pytest.importorskip("aiohttp")
    from posfast.server import start_in_thread
    from posfast.sync import HttpTarget, SyncUnavailable
    journals = [HandJournal(120, terminal=t, seed=t, max_payload=80) for t in range(50)]
    tokens = {f"tok-{i}-9d1b7a4f8e2c": hj.journal_id for i, hj in enumerate(journals)}
    errors = []
    with start_in_thread(dsn, tokens, workers=4) as srv:
        def terminal(i):
            syncer = Syncer(journals[i], HttpTarget(srv.url, f"tok-{i}-9d1b7a4f8e2c"), batch=40)
            t0 = time.monotonic()
            while journals[i].sync_watermark < 120 and time.monotonic() - t0 < 60:
                try:
                    syncer.run_once()
                except SyncUnavailable:
                    time.sleep(0.05)
                except Exception as exc:  # pragma: no cover
                    errors.append(exc)
                    return
        threads = [threading.Thread(target=terminal, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
    assert errors == []
    target = PostgresTarget(dsn)
    assert target.count() == 50 * 120
    assert sorted(s.records for s in target.journals()) == [120] * 50
    target.close()
