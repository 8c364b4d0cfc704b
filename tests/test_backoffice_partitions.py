"""A PostgreSQL back office whose records table is partitioned by business day (one range
partition per month, partition_sql), on a real server (tests/_pg.py): pushes land in the
right partitions, duplicates and forks are still told apart, racing pushers store each
record once, and dropping a month (retention) leaves the rest serving."""
import threading

import numpy as np
import pytest

psycopg = pytest.importorskip("psycopg", reason="PostgresTarget needs psycopg 3 (pip install 'psycopg[binary]')")

from posfast.records import day_to_date  # noqa: E402
from posfast.sync import PostgresTarget, SyncRefused, Syncer  # noqa: E402
from posfast.sync.postgres import partition_sql  # noqa: E402

import _pg  # noqa: E402
from _sync_helpers import HandJournal, assert_same_records  # noqa: E402


@pytest.fixture
def dsn():
    base = _pg.base_dsn()
    if base is None:
        pytest.skip(_pg.SKIP_REASON)
    dsn = _pg.fresh_database(base)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(partition_sql("2025-11", 1))      # November 2025; December goes to the default
    return dsn


def by_partition(dsn):
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT tableoid::regclass::text, count(*) FROM records GROUP BY 1").fetchall())


def test_partition_sql_months_and_errors():
    text = partition_sql("2026-11", 3, create_table=False).splitlines()
    assert [line.split()[5] for line in text] == ["records_2026_11", "records_2026_12", "records_2027_01"]
    assert "FROM (20788) TO (20819)" in text[1]          # 2026-12-01 .. 2027-01-01 as day numbers
    assert str(day_to_date(20788)) == "2026-12-01" and str(day_to_date(20819)) == "2027-01-01"
    with pytest.raises(ValueError):
        partition_sql("2026-13", 1)


def test_pushes_land_in_their_month_and_are_stored_once(dsn):
    hj = HandJournal(16_000, max_payload=60)        # a new day every 500 records: 2025-11-13 .. 2025-12-15
    target = PostgresTarget(dsn)
    with psycopg.connect(dsn) as conn:
        kind = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'records'").fetchone()[0]
        idx = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'records_2025_11'")}
    assert kind == "p" and any("day" in name for name in idx)       # partitioned, indexes on each partition

    errors = []

    def pusher():                                    # two pushers of one journal at once (two servers)
        t = PostgresTarget(dsn, pool_size=1)
        try:
            for first in range(1, 16_001, 1000):
                t.push(hj.batch(first, first + 999))
        except Exception as exc:
            errors.append(exc)
        finally:
            t.close()

    threads = [threading.Thread(target=pusher) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    days = np.array([day_to_date(int(d)).month for d in hj.rows["day"]])
    assert by_partition(dsn) == {"records_2025_11": int((days == 11).sum()), "records_default": int((days == 12).sum())}
    assert target.count() == 16_000 and target.state(hj.journal_id).records == 16_000
    assert_same_records(target.read_range(hj.journal_id), hj.rows, hj.payloads, hj.links)

    # a replay is told as duplicates, a changed record as a fork
    ack = target.push(hj.batch(14_001, 16_000))
    assert (ack.stored, ack.duplicates) == (0, 2000)
    forked = hj.batch(15_001, 15_010)
    forked.rows["amount"][3] += 1
    with pytest.raises(SyncRefused) as info:
        target.push(forked)
    assert info.value.reason in ("fork", "chain")

    # retention: November dropped as a whole; December and new records carry on
    nov = int((days == 11).sum())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE records DETACH PARTITION records_2025_11")
        conn.execute("DROP TABLE records_2025_11")
    assert target.count() == 16_000 - nov
    hj.sync_watermark = 16_000                      # (the till's, as acknowledged by the pushes above)
    hj.extend(500)
    assert Syncer(hj, target, batch=200).run_once().watermark == 16_500
    assert target.state(hj.journal_id).high_seq == 16_500
    first_dec = int(np.argmax(days == 12)) + 1
    held = target.read_range(hj.journal_id, first_dec, 16_500)
    assert_same_records(held, hj.rows[first_dec - 1:], hj.payloads[first_dec - 1:], hj.links[first_dec - 1:])
    target.close()
