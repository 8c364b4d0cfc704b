"""The back office is read through the sync package: read_day, read-only targets, and
reconcile reading any object with read_day."""
import pathlib
import uuid

import numpy as np
import pytest

import posfast
from posfast import DayRule, Journal
from posfast.reconcile import DayReader, reconcile
from posfast.sync import BackOffice, DayRecords, SqliteTarget, SyncConfigError, Syncer
from posfast.sync.backoffice import DAY_COLUMNS

RULE = DayRule(utc_offset="+08:00", starts_at="04:00")
DAY = "2025-11-20"
START = RULE.day_start_us(DAY)


@pytest.fixture
def synced(tmp_path):
    j = Journal.create(tmp_path / "till.pfj", capacity=256, day_rule=RULE, durability="none")
    txns = []
    for k, terminal in enumerate((1, 2, 1)):
        txn = j.begin_payment(terminal=terminal, amount=100 * (k + 1), currency=156, method="card",
                              ts=START + k * 60_000_000)
        j.finish_payment(txn, "approved", rrn="%012d" % k, ts=START + k * 60_000_000 + 1)
        txns.append(txn)
    j.append(terminal=1, kind="print", state="ok", txn_id=txns[0], ref_seq=txns[0], currency=156,
             ts=START + 5 * 60_000_000)
    j.append(terminal=1, kind="sale", state="approved", amount=7, currency=156, ts=START + 6 * 60_000_000,
             flags=posfast.Flag.TRAINING)
    j.append(terminal=1, kind="sale", state="approved", amount=9, currency=156, ts=START + 86_400_000_000)
    back = tmp_path / "back.db"
    with SqliteTarget(back, create=True) as target:
        Syncer(j, target).run_once()
    yield j, back
    j.close()


def test_read_day_returns_the_payment_records_of_the_days(synced):
    j, back = synced
    day = RULE.day_number(START)
    with SqliteTarget(back, readonly=True) as target:
        assert isinstance(target, BackOffice) and isinstance(target, DayReader)
        got = target.read_day(j.journal_id, day, day)
        assert isinstance(got, DayRecords) and got.journal_id == j.journal_id
        assert got.held == j.head_seq
        rows = j.query(day=day)
        want = rows[np.isin(rows["kind"], [int(k) for k in posfast.records.PAYMENT_KINDS])
                    & ((rows["flags"] & int(posfast.Flag.TRAINING)) == 0)]
        assert got.rows.dtype == posfast.RECORD_DTYPE
        assert got.rows["seq"].tolist() == want["seq"].tolist()
        for name in DAY_COLUMNS:
            assert (got.rows[name] == want[name]).all(), name
        assert target.read_day(str(j.journal_id), DAY, DAY, terminal=2).rows["terminal"].tolist() == [2, 2]
        assert len(target.read_day(j.journal_id, day, day + 1)) == len(want) + 1
        nobody = target.read_day(uuid.uuid4(), day, day)
        assert (len(nobody), nobody.held) == (0, 0)


def test_a_read_only_target_refuses_to_store_and_writes_nothing(synced, tmp_path):
    j, back = synced
    before = pathlib.Path(back).read_bytes()
    with SqliteTarget(back, readonly=True) as target:
        with pytest.raises(SyncConfigError, match="read-only"):
            target.push(j.read_range(1, 1))
    assert pathlib.Path(back).read_bytes() == before
    with pytest.raises(posfast.PosfastError, match="no back office"):
        SqliteTarget(tmp_path / "missing.db", readonly=True)
    (tmp_path / "other.db").write_bytes(b"")
    import sqlite3
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(posfast.PosfastError, match="not a posfast back office"):
        SqliteTarget(tmp_path / "other.db", readonly=True)


def test_reconcile_reads_any_day_reader(synced):
    j, back = synced

    class Reader:
        def __init__(self):
            self.calls = []
            self.target = SqliteTarget(back, readonly=True)

        def read_day(self, journal_id, first_day, last_day, terminal=None):
            self.calls.append((first_day, last_day, terminal))
            return self.target.read_day(journal_id, first_day, last_day, terminal)

    reader = Reader()
    via_reader = reconcile(j, reader, day=DAY)
    via_url = reconcile(j, "sqlite:///" + str(back), day=DAY)
    assert reader.calls == [(RULE.day_number(START), RULE.day_number(START) + 1, None)]
    assert [d.to_dict() for d in via_reader.discrepancies] == [d.to_dict() for d in via_url.discrepancies]
    assert via_reader.matched == via_url.matched == 3
    reader.target.close()


def test_reconcile_writes_no_sql():
    source = "".join(p.read_text() for p in pathlib.Path(posfast.__file__).parent.joinpath("reconcile").glob("*.py"))
    assert "SELECT" not in source and "sqlite3" not in source and "psycopg" not in source
