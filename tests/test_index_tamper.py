"""An edited index file gives no wrong answer.

The `.idx` file is a cache with an unkeyed CRC: anyone who can write it can recompute the CRC.
posfast 0.1.0 trusted it: an edited index made `query(terminal=2)` return a terminal-1 sale,
hid a sale from a day, and `close_day` wrote the wrong total into the permanent DAY_CLOSE
record.  Each edit below is made the way an attacker would (load, change a bitmap, save with
a fresh CRC), and each test failed on 0.1.0.
"""
import numpy as np
import pytest
from pyroaring import BitMap64

import posfast
from posfast import DayRule, Journal
from posfast.index import Index

RULE = DayRule(utc_offset="+08:00", starts_at="04:00")
DAY = posfast.records.day_number("2025-11-20")
HOUR = 3_600_000_000


def at(day, hours):
    return RULE.day_start_us(day) + int(hours * HOUR)


@pytest.fixture
def till(tmp_path):
    """Two terminals, two days: day DAY has 10,045 of approved sales (1,001 of them the
    one sale the edits move or hide), day DAY+1 has 700."""
    path = str(tmp_path / "till.pfj")
    with Journal.create(path, capacity=1024, day_rule=RULE) as j:
        j.append(ts=at(DAY, 1), terminal=1, kind="sale", state="approved", amount=3000, currency=156)
        j.append(ts=at(DAY, 2), terminal=2, kind="sale", state="approved", amount=6044, currency=156)
        j.append(ts=at(DAY, 3), terminal=1, kind="sale", state="approved", amount=1001, currency=156)
        j.append(ts=at(DAY + 1, 1), terminal=2, kind="sale", state="approved", amount=700,
                 currency=156)
    return path


def edit_index(path, change):
    """What an attacker does: decode the index, change it, write it back with a valid CRC."""
    with Journal.open(path, readonly=True) as j:
        jid = j.journal_id.bytes
    index, head, oldest, link, positions = Index.load(path + ".idx", jid)[:5]
    change(index)
    index.save(path + ".idx", jid, head, oldest, link, np.array(positions))
    assert Index.load(path + ".idx", jid) is not None      # the CRC passes


def move(mapping, seq, src, dst):
    mapping[src].discard(seq)
    mapping.setdefault(dst, BitMap64()).add(seq)


def assert_reported(j):
    assert j.status()["index_problems"], "the rebuild was not reported"
    report = j.verify()
    assert not report.ok and "index" in str(report) and str(j.path) in str(report)


def test_record_moved_to_another_terminal_is_never_returned_for_it(till):
    edit_index(till, lambda ix: move(ix.by_terminal, 3, 1, 2))    # terminal 1's sale -> 2
    with Journal.open(till) as j:
        rows = j.query(terminal=2)
        assert rows["terminal"].tolist() == [2, 2]
        assert rows["amount"].tolist() == [6044, 700]
        assert j.query(terminal=1)["amount"].tolist() == [3000, 1001]   # rebuilt: none hidden
        assert_reported(j)


def test_record_filed_under_a_second_terminal_is_caught_at_open(till):
    edit_index(till, lambda ix: ix.by_terminal[2].add(3))
    with Journal.open(till, readonly=True) as j:
        assert "filed under two terminals" in j.status()["index_problems"][0]
        assert j.query(terminal=2)["seq"].tolist() == [2, 4]


def test_sale_hidden_from_its_day_still_counts(till):
    edit_index(till, lambda ix: ix.by_day[DAY].discard(3))
    with Journal.open(till) as j:
        assert int(j.query(day=DAY)["amount"].sum()) == 10045         # 0.1.0: 9,044
        assert j.count(day=DAY) == 3
        z = j.close_day(DAY)
        assert z.net(156) == 10045
        assert j.get(z.seq).amount == 10045                           # the permanent record
        assert_reported(j)


def test_sale_moved_to_another_day_does_not_leave_the_z_report(till):
    # a move between two days keeps every bitmap family a partition, so open cannot tell:
    # the Z-report is computed from the records, and the lookup of the other day checks rows
    edit_index(till, lambda ix: move(ix.by_day, 3, DAY, DAY + 1))
    with Journal.open(till) as j:
        z = j.close_day(DAY)
        assert z.net(156) == 10045
        assert "lists 2 record(s) of business day 2025-11-20, the records hold 3" in j.status()["index_problems"][0]
        assert j.query(day=DAY + 1)["amount"].tolist() == [700]
        assert j.verify().problems[0].seq == 0


def test_day_moved_record_is_dropped_from_the_other_day_query(till):
    edit_index(till, lambda ix: move(ix.by_day, 3, DAY, DAY + 1))
    with Journal.open(till, readonly=True) as j:
        rows = j.query(day=DAY + 1)
        assert rows["amount"].tolist() == [700]
        assert "files seq 3" in j.status()["index_problems"][0]
        assert j.query(day=DAY)["amount"].tolist() == [3000, 6044, 1001]


def test_forged_newest_record_does_not_change_the_last_transaction(till):
    def forge(ix):
        ix.newest[(2, None)] = 3          # terminal 1's sale as terminal 2's last
        move(ix.by_terminal, 3, 1, 2)
    edit_index(till, forge)
    with Journal.open(till) as j:
        last = j.last(terminal=2)
        assert (last.seq, last.terminal, last.amount) == (4, 2, 700)
        assert j.last_transaction(2)["amount"] == 700
        assert j.last(terminal=1).amount == 1001


def test_index_of_records_that_do_not_exist_is_rebuilt(till):
    edit_index(till, lambda ix: ix.by_kind[int(posfast.Kind.SALE)].add(999))
    with Journal.open(till) as j:
        assert j.status()["index_problems"]
        assert j.query(kind="sale")["seq"].tolist() == [1, 2, 3, 4]
    # the writer saved the rebuilt index: the next open trusts it and reports nothing
    with Journal.open(till) as j:
        assert j.status()["index_problems"] == []
        assert j.verify().ok
