"""Side files beside a journal (the index and its temp file) and what a failure to write them
tells the user.  Each test failed on posfast 0.1.0."""
import os

import pytest

import posfast
from posfast import DayRule, Journal
from posfast.errors import DayClosed, IOFailure

RULE = DayRule(utc_offset="+08:00")
DAY = posfast.records.day_number("2025-11-20")


def test_planted_index_temp_symlink_is_not_followed(make_journal, tmp_path):
    victim = tmp_path / "prices.csv"
    victim.write_text("coffee,1800\n")
    path = str(tmp_path / "j.pfj")
    os.symlink(str(victim), path + ".idx.tmp")          # 0.1.0 overwrote the target
    j = make_journal(path=path)
    j.append(terminal=1, kind="sale", amount=1)
    j.close()
    assert victim.read_text() == "coffee,1800\n"
    assert not os.path.lexists(path + ".idx.tmp")
    with Journal.open(path) as again:                   # the index written is the real one
        assert again.status()["index_problems"] == [] and again.last(terminal=1).amount == 1


@pytest.mark.skipif(os.name != "posix", reason="directory permissions are POSIX here")
def test_index_save_refused_by_permissions_says_so(make_journal, tmp_path, monkeypatch):
    j = make_journal(path=str(tmp_path / "j.pfj"))
    j.append(terminal=1, kind="sale", amount=1)

    def refuse(path, *a, **kw):
        raise PermissionError(13, "Permission denied", path)
    monkeypatch.setattr(posfast.index, "open_new", refuse)
    with pytest.raises(IOFailure) as err:
        j.flush()
    message = str(err.value)
    assert "permissions" in message and "Free storage" not in message
    assert "every record is safe" in message


def test_index_save_on_a_full_disk_says_free_storage(make_journal, monkeypatch):
    j = make_journal()
    j.append(terminal=1, kind="sale", amount=1)

    def full(path, *a, **kw):
        raise OSError(28, "No space left on device", path)
    monkeypatch.setattr(posfast.index, "open_new", full)
    with pytest.raises(IOFailure, match="Free storage"):
        j.flush()


def test_failed_index_save_does_not_hide_day_closed(tmp_path, monkeypatch, caplog):
    path = str(tmp_path / "till.pfj")
    with Journal.create(path, capacity=256, day_rule=RULE) as j:
        j.append(ts=RULE.day_start_us(DAY) + 3_600_000_000, terminal=1, kind="sale",
                 state="approved", amount=500, currency=156)
        j.close_day(DAY)

    def full(path, *a, **kw):
        raise OSError(28, "No space left on device", path)
    monkeypatch.setattr(posfast.index, "open_new", full)
    with pytest.raises(DayClosed, match="already closed"):       # 0.1.0: IOFailure
        with Journal.open(path) as j:
            j.append(terminal=1, kind="note")           # (an index to save at close)
            j.close_day(DAY)
    assert "could not save the index" in caplog.text
