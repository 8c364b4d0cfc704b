"""The posfast command, run as a user would (in-process through cli.main)."""
import json

import pytest

import posfast
from posfast.cli import main


@pytest.fixture
def journal_path(tmp_path):
    path = tmp_path / "till.pfj"
    rule = posfast.DayRule(utc_offset="+08:00", starts_at="04:00")
    with posfast.Journal.create(path, capacity=1024, day_rule=rule) as j:
        # 2026-11-20 10:00 +08:00 and 2026-11-21 03:00 +08:00 (still the 20th's business day)
        j.append(terminal=3, kind="sale", state="approved", amount=1250, currency=156,
                 ts=1795140000_000000, auth_code="A1")
        j.append(terminal=3, kind="refund", state="approved", amount=250, currency=156,
                 ts=1795201200_000000)
        j.append(terminal=4, kind="sale", state="declined", amount=999, currency=156,
                 ts=1795140060_000000)
        txn = j.begin_payment(terminal=4, amount=500, ts=1795140120_000000)
    return str(path), txn


def test_query_json_matches_the_journal(journal_path, capsys):
    path, _ = journal_path
    assert main(["query", path, "--day", "2026-11-20", "--terminal", "3", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["seq"], r["kind"], r["amount"], r["day"]) for r in rows] == \
        [(1, "sale", 1250, "2026-11-20"), (2, "refund", 250, "2026-11-20")]


def test_query_csv_and_kind_filter(journal_path, capsys):
    path, _ = journal_path
    assert main(["query", path, "--day", "2026-11-20", "--kind", "sale", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("seq,time,day,terminal,kind")
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "3", "4"]


def test_last_and_in_doubt(journal_path, capsys):
    path, txn = journal_path
    assert main(["last", path, "--terminal", "4", "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["txn_id"], info["state"], info["in_doubt"]) == (txn, "pending", True)
    assert main(["in-doubt", path, "--format", "json"]) == 1      # exit 1 (findings): something in doubt
    assert [r["seq"] for r in json.loads(capsys.readouterr().out)] == [txn]
    assert main(["last", path, "--terminal", "9"]) == 66   # EX_NOINPUT


def test_show_status_verify(journal_path, capsys):
    path, _ = journal_path
    assert main(["show", path, "1", "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["amount"], shown["auth_code"], shown["terminal"]) == (1250, "A1", 3)
    assert main(["status", path, "--format", "json"]) == 3     # exit 3 (warning): sync overdue
    status = json.loads(capsys.readouterr().out)
    assert (status["head_seq"], status["unsynced"], status["capacity"]) == (4, 4, 1024)
    assert main(["verify", path]) == 0
    assert "4 records checked (seq 1..4): OK" in capsys.readouterr().out
    assert main(["show", path, "77"]) == 66     # EX_NOINPUT


def test_errors_are_one_line_with_exit_66(tmp_path, capsys):
    assert main(["status", str(tmp_path / "missing.pfj")]) == 66   # EX_NOINPUT
    err = capsys.readouterr().err
    assert "no journal at" in err and "missing.pfj" in err


def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--dir", str(tmp_path), "--days", "3"]) == 0
    out = capsys.readouterr().out
    assert "1 payment(s) in doubt" in out
    assert "resolved as REVERSED" in out
    assert "重印 / COPY 1" in out
    assert "syncing again sends 0" in out
    assert "): OK" in out                                  # verify passed
    with posfast.Journal.open(tmp_path / "store.pfj", readonly=True) as j:
        assert j.verify().ok
        assert j.in_doubt() == []
        assert j.sync_watermark > 0
