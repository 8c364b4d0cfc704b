"""Retention planning: days of history a storage budget holds, computed from the
format and measured by filling a real journal (posfast/retention.py)."""
import argparse
import datetime
import os

import numpy as np
import pytest

import posfast
from posfast.cli.commands import cmd_capacity as cli_capacity
from posfast.retention import (HEADER_BYTES, capacity_plan, format_size, parse_size,
                               slots_per_record)


@pytest.mark.parametrize("text, expected", [
    ("64MB", 64 << 20), ("64 MiB", 64 << 20), ("8m", 8 << 20), ("2GB", 2 << 30), ("1.5GiB", 3 << 29),
    ("512k", 512 << 10), ("4096", 4096), (1000, 1000), ("12 B", 12), ("1TB", 1 << 40)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "MB", "64 XB", "-5MB", "six megs", -1])
def test_parse_size_refuses_nonsense(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


def test_format_size_round_trips_through_parse_size():
    assert format_size(64 << 20) == "64.0 MB"
    assert parse_size(format_size(2 << 30).replace(" ", "")) == 2 << 30


@pytest.mark.parametrize("payload, slot, expected", [
    (0, 128, 1), (1, 128, 2), (128, 128, 2), (129, 128, 3), (300, 128, 4), (300, 512, 1),
    (4096, 128, 33), (65535, 65536, 2)])
def test_slots_per_record_follows_the_format(payload, slot, expected):
    assert slots_per_record(payload, slot) == expected


def test_plan_is_the_format_arithmetic():
    plan = capacity_plan("64MB", per_day=800, payload_bytes=300)
    assert plan.slots_per_record == 4
    assert plan.ring_bytes == HEADER_BYTES + plan.capacity * 128
    assert plan.records == plan.capacity // 4
    assert plan.days == pytest.approx(plan.records / 800)
    # ring and two index copies (atomic rewrite) stay within the budget, with little waste
    assert plan.total_bytes <= plan.budget_bytes
    assert plan.total_bytes > 0.99 * plan.budget_bytes
    # four times the volume holds a quarter of the days
    assert capacity_plan("64MB", per_day=3200, payload_bytes=300).days == pytest.approx(plan.days / 4)


def test_bigger_slots_trade_space_for_payload():
    small = capacity_plan("64MB", per_day=2000, payload_bytes=0, slot_size=128)
    wide = capacity_plan("64MB", per_day=2000, payload_bytes=0, slot_size=256)
    assert wide.records < small.records


def test_plan_refuses_impossible_inputs():
    with pytest.raises(ValueError, match="too small"):
        capacity_plan("4KB", per_day=100)
    with pytest.raises(ValueError, match="per_day"):
        capacity_plan("64MB", per_day=0)
    with pytest.raises(ValueError, match="slot_size"):
        capacity_plan("64MB", per_day=10, slot_size=100)


def test_plan_warns_about_32_bit_terminals_over_1_gib():
    assert any("32-bit" in note for note in capacity_plan("2GB", per_day=2000).notes)
    assert not capacity_plan("512MB", per_day=2000).notes


@pytest.mark.parametrize("budget, per_day, payload", [
    ("8MB", 200, 0), ("8MB", 2000, 300), ("8MB", 20000, 0), ("8MB", 600, 1000), ("16MB", 2000, 60)])
def test_computed_and_measured_agree_within_one_day(tmp_path, budget, per_day, payload):
    plan = capacity_plan(budget, per_day=per_day, payload_bytes=payload, measure=True,
                         workdir=str(tmp_path))
    assert plan.measured_days is not None
    assert abs(plan.measured_days - plan.days) < 1.0
    assert plan.measured_records == plan.records
    # the real files fit the budget, the index included (twice, for its atomic rewrite)
    assert plan.measured_ring_bytes == plan.ring_bytes
    assert plan.measured_ring_bytes + 2 * plan.measured_index_bytes <= plan.budget_bytes
    assert os.listdir(tmp_path) == []       # the trial journal is cleaned up


def test_capacity_command_prints_the_plan(capsys):
    args = argparse.Namespace(budget="8MB", per_day=800, payload_bytes=300, slot_size=128, measure=True)
    assert cli_capacity(args) == 0
    out = capsys.readouterr().out
    plan = capacity_plan("8MB", per_day=800, payload_bytes=300)
    assert "%.1f days of history" % plan.days in out
    assert "measured           %.1f days" % plan.days in out
    assert "Journal.create(path, capacity=%d, slot_size=128, max_payload=300)" % plan.capacity in out


def test_plan_capacity_creates_a_journal_that_fits(tmp_path):
    plan = capacity_plan("1MB", per_day=100, payload_bytes=200)
    path = str(tmp_path / "fits.pfj")
    with posfast.Journal.create(path, capacity=plan.capacity, max_payload=plan.max_payload,
                                durability="none") as j:
        j.append(terminal=1, kind="sale", state="approved", amount=1, currency=156, payload=b"x" * 200)
    assert os.path.getsize(path) == plan.ring_bytes <= plan.budget_bytes


def test_archive_capacity_matches_a_real_journal_and_archive(tmp_path):
    """`posfast capacity --archive` predicts the archive's bytes a day; trading a few days
    through the real payment path (begin_payment, finish_payment with a demo receipt) into
    a journal with retention="archive" grows its archive by about that much a day."""
    from posfast.cli.demo import _receipt
    from posfast.retention import archive_plan
    per_day = 1000
    plan = archive_plan("512MB", per_day, payload_bytes=300, ring_days=14, workdir=str(tmp_path))
    assert plan.archive_bytes_per_day > 0 and plan.years > 1
    assert plan.years == pytest.approx((plan.ring_days + plan.archive_days) / 365.25)
    assert "512.0 MB card holds" in plan.sentence() and "reprintable" in plan.sentence()

    rule = posfast.DayRule(utc_offset="+08:00", starts_at="04:00")
    rng = np.random.default_rng(11)
    path = str(tmp_path / "till.pfj")
    j = posfast.Journal.create(path, capacity=per_day * 5, max_payload=1024, durability="none",
                               day_rule=rule, retention="archive")
    sizes = []
    adir = path + ".archive"
    for day in range(20_100, 20_106):
        j.archive.flush()
        sizes.append(sum(os.path.getsize(os.path.join(adir, f)) for f in os.listdir(adir))
                     if os.path.isdir(adir) else 0)
        start = rule.day_start_us(day) + 4 * 3_600_000_000
        for k in range(per_day):
            ts = start + k * 40_000_000 + int(rng.integers(0, 30_000_000))
            method = ("card", "cash", "qr")[k % 3]
            last4 = "%04d" % rng.integers(0, 10000) if method == "card" else ""
            at = datetime.datetime.fromtimestamp(ts / 1e6, datetime.timezone(datetime.timedelta(hours=8)))
            receipt, total = _receipt(rng, k + 1, k % 8 + 1, at.isoformat(timespec="seconds"), method,
                                      last4)
            txn = j.begin_payment(terminal=k % 8 + 1, amount=total, currency=156, method=method,
                                  receipt_no=k + 1, ts=ts)
            j.finish_payment(txn, "approved", auth_code="%06d" % rng.integers(0, 10**6),
                             rrn="%012d" % rng.integers(0, 10**12) if method != "cash" else None,
                             pan_last4=last4 or None, payload=receipt.to_payload(), ts=ts + 1_500_000)
        j.set_sync_watermark(j.head_seq)
    j.close()
    sizes.append(sum(os.path.getsize(os.path.join(adir, f)) for f in os.listdir(adir)))
    growth = [b - a for a, b in zip(sizes, sizes[1:])]
    measured = float(np.median(growth[2:]))      # whole days archived, past the first lap
    print("archive bytes a day: measured %.0f, predicted %.0f" % (measured, plan.archive_bytes_per_day))
    assert measured == pytest.approx(plan.archive_bytes_per_day, rel=0.25), (growth, plan.summary())
    with posfast.Journal.open(path, readonly=True) as again:
        old = again.get(5)
        assert old.archived and again.verify().ok


def test_capacity_cli_with_archive(capsys):
    import argparse
    args = argparse.Namespace(budget="64MB", per_day=200, payload_bytes=300, slot_size=128,
                              measure=False, archive=True, ring_days=7, records_per_payment=2,
                              format="table")
    assert cli_capacity(args) == 0
    out = capsys.readouterr().out
    assert "64.0 MB card holds" in out and "years" in out and "retention=\"archive\"" in out
