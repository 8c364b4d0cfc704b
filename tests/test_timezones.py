"""DayRule with IANA time zones (zoneinfo): business days and day starts across the 2026
daylight-saving changes (Berlin, New York, Sydney), a zone without any (Shanghai), the
vectorized day_numbers against day_number and against zoneinfo itself, the day-start
invariant, rows from make_row / make_rows, the header round trip and the refusals."""
import datetime as dt
import pickle
import zoneinfo

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import posfast
from posfast import DayRule, InvalidArgument
from posfast.records import day_number, make_row, make_rows, to_us

UTC = dt.timezone.utc
H = 3_600_000_000
ZONES = ["Europe/Berlin", "America/New_York", "Asia/Shanghai", "Australia/Sydney",
         "America/Santiago", "Asia/Kolkata", "Europe/Dublin", "Africa/Casablanca",
         "Pacific/Apia", "Asia/Kathmandu"]


def utc_us(*args):
    return to_us(dt.datetime(*args, tzinfo=UTC))


def d(text):
    return day_number(text)


def day_hours(rule, day):
    return (rule.day_start_us(d(day) + 1) - rule.day_start_us(d(day))) / H


def literal_day(rule, ts):
    """The definition, straight from zoneinfo: the local date of (local time - starts_at)."""
    local = (dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=int(ts))
             ).astimezone(rule.tzinfo).replace(tzinfo=None)
    return ((local - dt.timedelta(minutes=rule.start_minutes)).date() - dt.date(1970, 1, 1)).days


# ------------------------------------------------------------------ DST changes
def test_berlin_2026_midnight_days_follow_summer_time():
    rule = DayRule(tz="Europe/Berlin")
    # clocks go 02:00 CET -> 03:00 CEST on 2026-03-29 (01:00 UTC), back on 2026-10-25
    assert rule.day_start_us("2026-03-29") == utc_us(2026, 3, 28, 23)        # 00:00 CET
    assert rule.day_start_us("2026-03-30") == utc_us(2026, 3, 29, 22)        # 00:00 CEST
    assert day_hours(rule, "2026-03-29") == 23
    assert day_hours(rule, "2026-10-25") == 25
    assert rule.day_number(utc_us(2026, 3, 29, 22, 30)) == d("2026-03-30")   # 00:30 CEST
    # (a fixed +01:00 puts that on the 29th: the bug tz rules fix)
    assert DayRule(utc_offset="+01:00").day_number(utc_us(2026, 3, 29, 22, 30)) == d("2026-03-29")
    assert rule.day_number(utc_us(2026, 3, 29, 21, 59, 59)) == d("2026-03-29")
    assert rule.day_number(utc_us(2026, 10, 25, 22, 59, 59)) == d("2026-10-25")   # 23:59:59 CET
    assert rule.day_number(utc_us(2026, 10, 25, 23)) == d("2026-10-26")
    assert rule.day_number(utc_us(2026, 10, 24, 22)) == d("2026-10-25")           # 00:00 CEST


def test_berlin_2026_four_am_days():
    rule = DayRule(tz="Europe/Berlin", starts_at="04:00")
    assert rule.day_start_us("2026-03-28") == utc_us(2026, 3, 28, 3)         # 04:00 CET
    assert rule.day_start_us("2026-03-29") == utc_us(2026, 3, 29, 2)         # 04:00 CEST
    assert day_hours(rule, "2026-03-28") == 23 and day_hours(rule, "2026-03-29") == 24
    assert day_hours(rule, "2026-10-24") == 25 and day_hours(rule, "2026-10-25") == 24
    # 03:30 CEST on the 29th (01:30 UTC) is still the 28th's business day; 04:00 CEST is not
    assert rule.day_number(utc_us(2026, 3, 29, 1, 30)) == d("2026-03-28")
    assert rule.day_number(utc_us(2026, 3, 29, 2)) == d("2026-03-29")
    # the night of the 25th October: 03:59 CET (02:59 UTC) still belongs to the 24th
    assert rule.day_number(utc_us(2026, 10, 25, 2, 59)) == d("2026-10-24")
    assert rule.day_number(utc_us(2026, 10, 25, 3)) == d("2026-10-25")


def test_new_york_2026_midnight_and_four_am():
    for starts, first in (("00:00", (2026, 3, 8, 5)), ("04:00", (2026, 3, 8, 8))):
        rule = DayRule(tz="America/New_York", starts_at=starts)
        assert rule.day_start_us("2026-03-08") == utc_us(*first)
        assert day_hours(rule, "2026-03-08" if starts == "00:00" else "2026-03-07") == 23
        assert day_hours(rule, "2026-11-01" if starts == "00:00" else "2026-10-31") == 25
    rule = DayRule(tz="America/New_York", starts_at="04:00")
    assert rule.day_number(utc_us(2026, 3, 8, 7, 59)) == d("2026-03-07")      # 03:59 EDT
    assert rule.day_number(utc_us(2026, 3, 8, 8)) == d("2026-03-08")          # 04:00 EDT
    assert rule.day_number(utc_us(2026, 11, 1, 8, 59)) == d("2026-10-31")     # 03:59 EST
    assert rule.day_number(utc_us(2026, 11, 1, 9)) == d("2026-11-01")


def test_new_york_half_past_two_start_in_the_spring_forward_gap():
    # 2026-03-08: 02:00 EST -> 03:00 EDT at 07:00 UTC; 02:30 never shows on the wall clock
    rule = DayRule(tz="America/New_York", starts_at="02:30")
    assert rule.day_start_us("2026-03-07") == utc_us(2026, 3, 7, 7, 30)      # 02:30 EST
    assert rule.day_start_us("2026-03-08") == utc_us(2026, 3, 8, 7)          # the jump: 03:00 EDT
    assert rule.day_start_us("2026-03-09") == utc_us(2026, 3, 9, 6, 30)      # 02:30 EDT
    assert day_hours(rule, "2026-03-07") == 23.5 and day_hours(rule, "2026-03-08") == 23.5
    assert rule.day_number(utc_us(2026, 3, 8, 7) - 1) == d("2026-03-07")     # 01:59:59.999999 EST
    assert rule.day_number(utc_us(2026, 3, 8, 7)) == d("2026-03-08")
    assert rule.local_to_us(to_us(dt.datetime(2026, 3, 8, 2, 30))) == utc_us(2026, 3, 8, 7)


def test_a_fall_back_that_repeats_the_day_start_stays_on_the_new_day():
    # 2026-11-01 02:00 EDT -> 01:00 EST at 06:00 UTC: 01:30 shows twice.  The day begins at
    # the first 01:30 (EDT); the repeated 01:00-01:30 EST does not fall back to October 31.
    rule = DayRule(tz="America/New_York", starts_at="01:30")
    assert rule.day_start_us("2026-11-01") == utc_us(2026, 11, 1, 5, 30)
    repeated = utc_us(2026, 11, 1, 6, 15)                                    # 01:15 EST
    assert literal_day(rule, repeated) == d("2026-10-31")
    assert rule.day_number(repeated) == d("2026-11-01")
    assert rule.day_numbers(np.array([repeated]))[0] == d("2026-11-01")
    assert day_hours(rule, "2026-10-31") == 24 and day_hours(rule, "2026-11-01") == 25
    # an ambiguous wall time is its first occurrence
    assert rule.local_to_us(to_us(dt.datetime(2026, 11, 1, 1, 15))) == utc_us(2026, 11, 1, 5, 15)


def test_sydney_southern_summer_time():
    rule = DayRule(tz="Australia/Sydney")
    # daylight saving ends 2026-04-05 03:00 AEDT -> 02:00 AEST, starts 2026-10-04 02:00 -> 03:00
    assert rule.day_start_us("2026-04-05") == utc_us(2026, 4, 4, 13)          # 00:00 AEDT (+11)
    assert day_hours(rule, "2026-04-05") == 25 and day_hours(rule, "2026-10-04") == 23
    assert rule.day_number(utc_us(2026, 1, 15, 13, 30)) == d("2026-01-16")    # 00:30 AEDT
    assert rule.day_number(utc_us(2026, 7, 15, 13, 30)) == d("2026-07-15")    # 23:30 AEST
    four = DayRule(tz="Australia/Sydney", starts_at="04:00")
    assert four.day_start_us("2026-10-04") == utc_us(2026, 10, 3, 17)         # 04:00 AEDT
    assert day_hours(four, "2026-10-03") == 23


def test_shanghai_is_a_fixed_plus_eight():
    tz, fixed = DayRule(tz="Asia/Shanghai", starts_at="04:00"), DayRule("+08:00", "04:00")
    ts = np.random.default_rng(8).integers(utc_us(1992, 1, 1), utc_us(2040, 1, 1), 50_000)
    assert np.array_equal(tz.day_numbers(ts), fixed.day_numbers(ts))
    for day in range(d("1995-01-01"), d("2039-01-01"), 97):
        assert tz.day_start_us(day) == fixed.day_start_us(day)
    assert tz.offset_minutes == 480 and tz.describe() == "Asia/Shanghai, day starts 04:00"


# ------------------------------------------------------------------ vectorized = scalar = zoneinfo
@pytest.mark.parametrize("name", ZONES)
@pytest.mark.parametrize("starts", ["00:00", "04:00"])
def test_day_numbers_match_day_number_and_zoneinfo(name, starts):
    rule = DayRule(tz=name, starts_at=starts)
    rng = np.random.default_rng(abs(hash((name, starts))) % 2**32)
    ts = rng.integers(utc_us(1990, 1, 1), utc_us(2040, 1, 1), 100_000)
    days = rule.day_numbers(ts)
    assert days.dtype == np.int32
    fresh = DayRule(tz=name, starts_at=starts)            # its own one-interval cache
    assert days.tolist() == [fresh.day_number(t) for t in ts.tolist()]
    # sorted times keep hitting the cached interval: the same days
    order = np.sort(ts)
    assert rule.day_numbers(order).tolist() == [fresh.day_number(t) for t in order.tolist()]
    sample = ts[:3000].tolist()
    assert days[:3000].tolist() == [literal_day(rule, t) for t in sample]
    for t, day in zip(sample, days[:3000].tolist()):
        assert rule.day_start_us(day) <= t < rule.day_start_us(day + 1)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(ZONES), start=st.integers(0, 24 * 60 - 1),
       ts=st.integers(utc_us(1990, 1, 1), utc_us(2040, 1, 1)))
def test_every_time_lies_in_its_business_day(name, start, ts):
    rule = DayRule(tz=name, starts_at=start)
    day = rule.day_number(ts)
    assert rule.day_start_us(day) <= ts < rule.day_start_us(day + 1)
    assert rule.day_numbers(np.array([ts - H, ts, ts + H])).tolist() == \
        [rule.day_number(ts - H), day, rule.day_number(ts + H)]
    assert rule.day_number(ts - H) <= day <= rule.day_number(ts + H)        # days never go back
    # away from a change, the day is what zoneinfo's local time says
    off = rule.tzinfo.utcoffset
    near = {off((dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=ts + k * H)))
            for k in (-27, 0, 27)}
    if len(near) == 1:
        assert day == literal_day(rule, ts)


def test_day_table_gives_the_same_days():
    for rule in (DayRule(tz="America/New_York", starts_at="01:30"), DayRule("+05:45", "04:00")):
        lo, hi = utc_us(2020, 1, 1), utc_us(2030, 1, 1)
        starts, shifts, floors = rule.day_table(lo, hi)
        ts = np.random.default_rng(3).integers(lo, hi, 20_000)
        k = np.searchsorted(starts, ts, side="right") - 1
        days = np.maximum((ts + shifts[k]) // 86_400_000_000, floors[k])
        assert days.tolist() == rule.day_numbers(ts).tolist()


def test_far_times_and_empty_input():
    rule = DayRule(tz="Europe/Berlin")
    assert rule.day_numbers(np.zeros(0, np.int64)).tolist() == []
    assert rule.day_numbers([]).dtype == np.int32
    for ts in (-(2**62), 0, 2**62, utc_us(1850, 7, 1), utc_us(2300, 7, 1)):
        day = rule.day_number(ts)
        assert rule.day_numbers(np.array([ts]))[0] == day
        assert rule.day_start_us(day) <= ts < rule.day_start_us(day + 1)
    # a few times over centuries (searched, not bucketed by day) and many over decades (bucketed)
    rng = np.random.default_rng(5)
    for ts in (np.concatenate([rng.integers(utc_us(1990, 1, 1), utc_us(2040, 1, 1), 1000),
                               [utc_us(1850, 7, 1), utc_us(2300, 7, 1)]]),
               rng.integers(utc_us(1890, 1, 1), utc_us(2210, 1, 1), 200_000)):
        sample = ts[-2000:].tolist()
        assert rule.day_numbers(ts)[-2000:].tolist() == [rule.day_number(t) for t in sample]
    # before 1900 and from 2200 on the offset at those edges holds (no journal holds such times)
    assert rule.day_of(dt.datetime(2300, 7, 1, 23, 30)) == dt.date(2300, 7, 2)   # CEST in 2199
    assert rule.day_of(dt.datetime(1970, 7, 1, 23, 30)) == dt.date(1970, 7, 2)   # CET, no DST then


# ------------------------------------------------------------------ rows
def test_make_row_and_make_rows_derive_tz_days():
    rule = DayRule(tz="America/New_York", starts_at="02:30")
    stamps = [utc_us(2026, 3, 8, 6, 59), utc_us(2026, 3, 8, 7), utc_us(2026, 11, 1, 6, 15),
              utc_us(2026, 11, 1, 7, 29), utc_us(2026, 11, 1, 7, 30), utc_us(2026, 7, 4, 12)]
    want = [d("2026-03-07"), d("2026-03-08"), d("2026-10-31"), d("2026-10-31"), d("2026-11-01"),
            d("2026-07-04")]
    assert [int(make_row({"kind": "note", "ts": t}, rule)["day"][0]) for t in stamps] == want
    rows = make_rows({"kind": "note", "ts": stamps}, rule)
    assert rows["day"].tolist() == want
    berlin = DayRule(tz="Europe/Berlin")
    ts = np.arange(utc_us(2026, 3, 28), utc_us(2026, 3, 31), 10 * 60 * 1_000_000)
    rows = make_rows({"kind": "note", "ts": ts}, berlin)
    assert rows["day"].tolist() == [berlin.day_number(t) for t in ts.tolist()]
    # ten-minute steps from 01:00 CET on the 28th: 23 hours of it, the 23-hour 29th, the 30th
    assert np.bincount(rows["day"] - d("2026-03-28")).tolist() == [6 * 23, 6 * 23, 6 * 24, 6 * 2]


def test_local_times_print_with_the_offset_in_force():
    from posfast.cli.output import journal_tz, local_time
    tz = journal_tz(DayRule(tz="Europe/Berlin"))
    assert local_time(utc_us(2026, 1, 15, 12), tz) == "2026-01-15 13:00:00 +01:00"
    assert local_time(utc_us(2026, 7, 15, 12), tz, human=False) == "2026-07-15T14:00:00+02:00"


def test_settlement_times_without_offset_are_the_zone_s_local_time():
    import io
    from posfast.reconcile import read_settlement
    text = ("terminal,time,rrn,auth_code,amount,currency,type\n"
            "3,2026-01-15 13:00:00,1,,1250,978,sale\n"
            "3,2026-07-15 14:00:00,2,,1250,978,sale\n"
            "3,2026-07-15T14:00:00+02:00,3,,1250,978,sale\n")
    got = read_settlement(io.StringIO(text), DayRule(tz="Europe/Berlin"))
    assert got.rows["ts"].tolist() == [utc_us(2026, 1, 15, 12), utc_us(2026, 7, 15, 12),
                                       utc_us(2026, 7, 15, 12)]
    odd = text.replace("2026-07-15 14:00:00", "2026-07-15 14:00:00.5 ")   # the slow parser
    assert read_settlement(io.StringIO(odd), DayRule(tz="Europe/Berlin")).rows["ts"][1] == \
        utc_us(2026, 7, 15, 12) + 500_000


# ------------------------------------------------------------------ identity, header, errors
def test_rule_properties_and_header_round_trip():
    for rule, std in ((DayRule(tz="Europe/Berlin", starts_at="04:00"), 60),
                      (DayRule(tz="America/New_York"), -300), (DayRule(tz="Australia/Sydney"), 600),
                      (DayRule(tz=zoneinfo.ZoneInfo("Asia/Shanghai")), 480)):
        assert rule.offset_minutes == std                  # the zone's standard offset
        assert isinstance(rule.tzinfo, zoneinfo.ZoneInfo) and rule.tzinfo.key == rule.tz_name
        again = DayRule.from_header(rule.offset_minutes, rule.start_minutes, rule.tz_name)
        assert again == rule and hash(again) == hash(rule) and again.describe() == rule.describe()
        assert DayRule.from_header(0, rule.start_minutes, rule.tz_name) == rule   # offset unused
        assert pickle.loads(pickle.dumps(rule)) == rule
        assert eval(repr(rule), {"DayRule": DayRule}) == rule
    fixed = DayRule(utc_offset="-05:30", starts_at="06:00")
    assert fixed.tz_name == "" and fixed.describe() == "UTC-05:30, day starts 06:00"
    back = DayRule.from_header(fixed.offset_minutes, fixed.start_minutes, fixed.tz_name)
    assert back == fixed and back.tzinfo == fixed.tzinfo
    assert DayRule() == DayRule(utc_offset="+00:00") == DayRule.from_header(0, 0)
    assert DayRule(tz="Europe/Berlin") != DayRule("+01:00")
    assert DayRule(tz="Europe/Berlin", starts_at="04:00").describe() == "Europe/Berlin, day starts 04:00"
    assert repr(DayRule(tz="Asia/Shanghai", starts_at="04:00")) == \
        "DayRule(tz='Asia/Shanghai', starts_at='04:00')"


def test_refusals_name_the_zone_and_the_fix():
    with pytest.raises(InvalidArgument, match=r"utc_offset= or tz=, not both.*Europe/Berlin"):
        DayRule(utc_offset="+01:00", tz="Europe/Berlin")
    with pytest.raises(InvalidArgument, match=r"unknown time zone 'Europe/Berlinn'.*did you mean "
                                              r"'Europe/Berlin'.*tzdata"):
        DayRule(tz="Europe/Berlinn")
    with pytest.raises(ValueError, match=r"'Mars/Olympus_Mons'"):
        DayRule(tz="Mars/Olympus_Mons")
    with pytest.raises(InvalidArgument, match=r"fixed UTC offset.*utc_offset='\+08:00'"):
        DayRule(tz="+08:00")
    with pytest.raises(InvalidArgument, match="IANA time zone name"):
        DayRule(tz="../etc/passwd")
    with pytest.raises(InvalidArgument, match="IANA time zone name"):
        DayRule(tz=480)
    with pytest.raises(ValueError, match="starts_at"):
        DayRule(tz="Europe/Berlin", starts_at="24:00")
    with pytest.raises(ValueError, match="unknown time zone 'Nowhere/Atall'"):
        DayRule.from_header(60, 0, "Nowhere/Atall")


def test_a_format_2_journal_keeps_its_zone_and_its_days_across_daylight_saving(tmp_path):
    # Berlin, day starts 04:00: 2026-03-29 is the spring-forward day (02:00 -> 03:00)
    rule = DayRule(tz="Europe/Berlin", starts_at="04:00")
    path = tmp_path / "tz.pfj"
    before = int(dt.datetime(2026, 3, 29, 2, 30, tzinfo=dt.timezone.utc).timestamp() * 1e6)
    with posfast.Journal.create(path, capacity=64, day_rule=rule) as j:
        # 01:30 UTC = 03:30 CEST (before 04:00: still the 28th); 02:30 UTC = 04:30 CEST: the 29th
        a = j.append(ts=before - 3_600_000_000, terminal=1, kind="sale", amount=100, currency=978)
        b = j.append(ts=before, terminal=1, kind="sale", amount=200, currency=978)
    with posfast.Journal.open(path, readonly=True) as again:
        assert again.day_rule == rule and again.day_rule.tz_name == "Europe/Berlin"
        assert str(again.get(a).day) and again.get(a).day == rule.day_number(before - 3_600_000_000)
        assert [int(s) for s in again.query(day="2026-03-28")["seq"]] == [a]
        assert [int(s) for s in again.query(day="2026-03-29")["seq"]] == [b]
        assert "Europe/Berlin" in again.status()["day_rule"]


def test_a_format_1_journal_refuses_a_zone(tmp_path):
    with pytest.raises(InvalidArgument, match=r"Europe/Berlin, day starts 04:00.*format-2 journal"):
        posfast.Journal.create(tmp_path / "tz.pfj", capacity=64, format_version=1,
                               day_rule=DayRule(tz="Europe/Berlin", starts_at="04:00"))
    assert not (tmp_path / "tz.pfj").exists()


def test_a_zone_journal_syncs_across_a_daylight_saving_change(tmp_path):
    """A Europe/Berlin journal's records around the October change go to a real back office
    (SQLite, over the sync protocol's wire form too): each day checked by the zone, the rule
    recorded with the journal, another rule for it refused."""
    from posfast.sync import (RecordBatch, SqliteTarget, SyncRefused, Syncer, day_rule_tuple,
                              decode_batch, encode_batch)
    rule = DayRule(tz="Europe/Berlin", starts_at="04:00")
    assert day_rule_tuple(rule) == (0, 240, "Europe/Berlin")
    assert day_rule_tuple(DayRule("+08:00", "04:00")) == (480, 240, "")
    j = posfast.Journal.create(tmp_path / "berlin.pfj", capacity=4096, day_rule=rule)
    # 2026-10-25: clocks go back 03:00 CEST -> 02:00 CET; every 20 minutes for two days
    start = int(dt.datetime(2026, 10, 24, 0, 0, tzinfo=dt.timezone.utc).timestamp() * 1e6)
    seqs = [j.append(kind="sale", state="approved", amount=100 + i, currency=978, terminal=1,
                     ts=start + i * 20 * 60_000_000) for i in range(150)]
    days = j.query()["day"]
    assert len(set(days.tolist())) == 3                    # the 25-hour day included
    back = SqliteTarget(tmp_path / "back.db", create=True)
    assert Syncer(j, back, batch=64).run_once().sent == len(seqs)
    held = back.read_range(j.journal_id)
    assert held.rows["day"].tolist() == days.tolist()
    assert back.state(j.journal_id).day_rule == (0, 240, "Europe/Berlin")
    # the wire form carries the zone
    batch = j.read_range(1, 3)
    batch.day_rule = rule
    wire = encode_batch(batch)
    assert b'"tz":"Europe/Berlin"' in wire
    assert decode_batch(wire)[0].day_rule == (0, 240, "Europe/Berlin")
    # a forged day is refused by the zone's own rule
    forged = j.read_range(1, 1)
    rows = forged.rows.copy()
    rows["day"] += 1
    with pytest.raises(SyncRefused, match="does not match its ts under the journal's day rule "
                       r"\(Europe/Berlin, day starts 04:00"):
        back.push(RecordBatch(j.journal_id, rows, forged.payloads, forged.links, day_rule=rule,
                              exts=forged.exts, format_version=forged.format_version))
    # the same journal under another zone: refused
    more = j.append(kind="sale", state="approved", amount=5, currency=978, terminal=1,
                    ts=start + 151 * 20 * 60_000_000)
    other = j.read_range(more, more)
    other.day_rule = DayRule(tz="Europe/London", starts_at="04:00")
    with pytest.raises(SyncRefused, match="differs from the rule"):
        back.push(other)
    with pytest.raises(SyncRefused, match="not a time zone"):
        day_rule_tuple({"utc_offset_min": 0, "starts_at_min": 0, "tz": "Mars/Olympus_Mons"})
    back.close()
    j.close()


def test_a_0_1_back_office_takes_format_2_records(tmp_path):
    """A back office made by posfast 0.1 (no channel, ext_len, order/host ref or zone columns)
    is brought up to this schema when opened, and keeps what it held."""
    import sqlite3
    from posfast.sync import SqliteTarget, Syncer
    old = tmp_path / "old.db"
    con = sqlite3.connect(old)
    con.executescript("""
        CREATE TABLE journals (journal_id TEXT PRIMARY KEY, anchor_seq INTEGER NOT NULL,
          high_seq INTEGER NOT NULL, last_link BLOB NOT NULL, records INTEGER NOT NULL,
          first_synced_us INTEGER NOT NULL, last_synced_us INTEGER NOT NULL);
        CREATE TABLE records (journal_id TEXT NOT NULL, "seq" INTEGER NOT NULL,
          "ts" INTEGER NOT NULL, "amount" INTEGER NOT NULL, "txn_id" INTEGER NOT NULL,
          "ref_seq" INTEGER NOT NULL, "day" INTEGER NOT NULL, "terminal" INTEGER NOT NULL,
          "receipt_no" INTEGER NOT NULL, "operator" INTEGER NOT NULL, "currency" INTEGER NOT NULL,
          "kind" INTEGER NOT NULL, "state" INTEGER NOT NULL, "method" INTEGER NOT NULL,
          "flags" INTEGER NOT NULL, "pan_last4" BLOB NOT NULL, "auth_code" BLOB NOT NULL,
          "rrn" BLOB NOT NULL, "client_ref" BLOB NOT NULL, "payload_len" INTEGER NOT NULL,
          payload BLOB NOT NULL, link BLOB NOT NULL, PRIMARY KEY (journal_id, seq));
        INSERT INTO records VALUES ('00000000-0000-0000-0000-000000000001', 1, 0, 5, 1, 0, 0,
          1, 0, 0, 156, 1, 2, 0, 0, X'', X'', X'', X'', 0, X'', X'00');
    """)
    con.commit()
    con.close()
    back = SqliteTarget(old)
    j = posfast.Journal.create(tmp_path / "t.pfj", capacity=64,
                               day_rule=DayRule(tz="Asia/Shanghai", starts_at="04:00"))
    t = j.begin_payment(terminal=3, amount=1250, order_ref="WX-20261201-7", channel="wechat")
    j.finish_payment(t, "approved", host_ref="4200000001202612017")
    assert Syncer(j, back).run_once().sent == 2
    held = back.read_range(j.journal_id)
    assert held.rows["channel"].tolist() == [b"wechat", b"wechat"]
    assert [held.refs(i) for i in range(2)] == [("WX-20261201-7", ""),
                                                ("WX-20261201-7", "4200000001202612017")]
    assert back.state(j.journal_id).day_rule == (0, 240, "Asia/Shanghai")
    assert back.count() == 3                          # the 0.1 record is still there
    back.close()
    j.close()


