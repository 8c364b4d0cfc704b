"""The `posfast` command's conventions (issue 11): one exit-code table, local times, the same
CSV header with or without rows, --format on every read verb, quiet on a closed pipe, help on
every option, `resolve`, `reprint --code`, progress only on a terminal, net per currency."""
import argparse
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import posfast
from posfast import errors
from posfast.cli import EXIT_CODE_MEANINGS, build_parser, exit_code, exit_codes, main
from posfast.cli.commands import parse_receipt_code
from posfast.cli.output import Progress, age, progress_enabled
from posfast.reconcile import SettlementError
from posfast.receipt import Receipt, ReceiptItem
from posfast.sync import (BackOfficeFull, BackOfficeMissing, SyncBadAck, SyncConfigError, SyncRefused,
                          SyncUnavailable)

from _child_env import CHILD_CWD, child_env

RULE = posfast.DayRule(utc_offset="+08:00", starts_at="04:00")
T0 = 1795140000_000000          # 2026-11-20 10:00:00 +08:00


@pytest.fixture
def till(tmp_path):
    path = tmp_path / "till.pfj"
    with posfast.Journal.create(path, capacity=1024, day_rule=RULE) as j:
        j.append(terminal=3, kind="sale", state="approved", amount=1250, currency=156, ts=T0,
                 auth_code="A1", receipt_no=200,
                 payload=Receipt(merchant="Shop", terminal=3, receipt_no=200,
                                 items=[ReceiptItem("Tea", unit_price=1250)], total=1250).to_payload())
        j.append(terminal=3, kind="refund", state="approved", amount=250, currency=156, ts=T0 + 60_000_000)
        j.append(terminal=4, kind="sale", state="declined", amount=999, currency=156, ts=T0 + 120_000_000)
        usd = j.begin_payment(terminal=4, amount=700, currency=840, ts=T0 + 150_000_000)
        j.finish_payment(usd, "approved", ts=T0 + 160_000_000)
        txn = j.begin_payment(terminal=4, amount=500, currency=156, ts=T0 + 180_000_000)
    return str(path), txn


def run(*argv, **kw):
    return subprocess.run([sys.executable, "-m", "posfast", *argv], capture_output=True, text=True,
                          timeout=120, **{"env": child_env(), "cwd": CHILD_CWD, **kw})


# ---------------------------------------------------------------- the exit-code table
EXPECTED = {
    errors.InvalidArgument: 2, errors.InvalidRecord: 2, SyncConfigError: 2, ValueError: 2,
    errors.PaymentError: 65, SettlementError: 65, errors.FormatVersionError: 65, SyncRefused: 65,
    errors.SyncRefused: 65,
    BackOfficeMissing: 66, FileNotFoundError: 66, NotADirectoryError: 66,
    SyncUnavailable: 69, ConnectionError: 69, TimeoutError: 69, ImportError: 69,
    errors.PosfastError: 65,
    errors.DayClosed: 73, errors.ReprintRefused: 73, FileExistsError: 73, IsADirectoryError: 73,
    errors.CorruptRecord: 74, errors.IOFailure: 74, errors.JournalClosed: 74, OSError: 74,
    errors.JournalLocked: 75, errors.JournalFull: 75, BackOfficeFull: 75,
    SyncBadAck: 76, PermissionError: 77, KeyboardInterrupt: 130,
}


def test_the_exit_code_table_is_pinned():
    table = exit_codes()
    assert {cls: table[cls] for cls in EXPECTED} == EXPECTED
    assert set(table.values()) <= set(EXIT_CODE_MEANINGS)
    # every error class of posfast.errors has a code of its own or through its base
    for name in dir(errors):
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, Exception):
            assert any(base in table for base in cls.__mro__), name


@pytest.mark.parametrize("exc, code", [
    (errors.JournalLocked("posfast: locked"), 75),
    (BackOfficeFull("disk full"), 75),                       # a subclass listed on its own wins
    (SyncRefused("gap", "gap"), 65),
    (OSError(28, "No space left on device"), 75),            # ENOSPC: retry later
    (OSError(5, "Input/output error"), 74),
    (PermissionError(13, "Permission denied"), 77),
    (errors.InvalidRecord("kind"), 2),
    (RuntimeError("?"), 70),
])
def test_exit_code_of_an_instance(exc, code):
    assert exit_code(exc) == code


def test_help_shows_the_exit_code_table():
    text = build_parser().format_help()
    assert "exit codes:" in text
    for code, meaning in EXIT_CODE_MEANINGS.items():
        assert "%3d  %s" % (code, meaning) in text
    proc = run("--help")
    assert proc.returncode == 0 and "75  EX_TEMPFAIL" in proc.stdout and "77  EX_NOPERM" in proc.stdout


def test_usage_errors_are_2_and_runtime_failures_sysexits(till, tmp_path, capsys):
    path, txn = till
    with pytest.raises(SystemExit) as info:
        main(["query", path, "--format", "xml"])
    assert info.value.code == 2
    assert main(["query", path, "--kind", "sell"]) == 2                     # a bad option value
    assert main(["status", str(tmp_path / "missing.pfj")]) == 66
    assert main(["in-doubt", path]) == 1                                    # findings
    assert main(["last", path, "--terminal", "77"]) == 66
    other = tmp_path / "not-a-journal.pfj"
    other.write_bytes(b"hello" * 100)
    assert main(["status", str(other)]) == 65
    with posfast.Journal.open(path):                                        # another writer holds it
        assert main(["resolve", path, str(txn), "approved"]) == 75
    capsys.readouterr()


# ---------------------------------------------------------------- help, --format
def _actions(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((name + " " + a[0], a[1]) for a in _actions(sub))
        else:
            yield (action.dest, action)


def test_every_option_has_help_text():
    missing = [name for name, action in _actions(build_parser())
               if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip()]
    assert missing == []


READ_VERBS = ("status", "verify", "last", "in-doubt", "show", "query", "capacity", "reconcile")


def test_format_on_every_read_verb():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for verb in READ_VERBS:
        fmt = next(a for a in sub.choices[verb]._actions if a.dest == "format")
        # reconcile's --format also names the statement's format (given twice for both)
        choices = tuple(fmt.choices)[:3] if verb == "reconcile" else tuple(fmt.choices)
        assert choices == ("table", "json", "csv"), verb


@pytest.mark.parametrize("argv", [["status", "{p}"], ["verify", "{p}"], ["last", "{p}", "--terminal", "3"],
                                  ["in-doubt", "{p}"], ["show", "{p}", "1"], ["query", "{p}"]])
@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_every_read_verb_answers_in_every_format(till, capsys, argv, fmt):
    path, _ = till
    assert main([a.format(p=path) for a in argv] + ["--format", fmt]) in (0, 1, 3)
    out = capsys.readouterr().out
    if fmt == "json":
        json.loads(out)
    assert out.strip()


def test_csv_header_is_the_same_with_or_without_rows_and_json_of_nothing_is_empty(till, capsys):
    path, _ = till
    assert main(["query", path, "--day", "2026-11-20", "--format", "csv"]) == 0
    full = capsys.readouterr().out.splitlines()
    assert main(["query", path, "--day", "2020-01-01", "--format", "csv"]) == 0
    empty = capsys.readouterr().out.splitlines()
    assert len(full) > 1 and empty == full[:1]
    assert main(["query", path, "--day", "2020-01-01", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["in-doubt", path, "--terminal", "3", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["in-doubt", path, "--terminal", "3", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == full[:1]


# ---------------------------------------------------------------- local time, ages
def test_human_output_in_local_time_json_in_iso_with_offset(till, capsys):
    path, _ = till
    assert main(["query", path, "--terminal", "3"]) == 0
    assert "2026-11-20 10:00:00 +08:00" in capsys.readouterr().out
    assert main(["query", path, "--terminal", "3", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["time"] == "2026-11-20T10:00:00+08:00" and rows[0]["ts"] == T0
    assert main(["last", path, "--terminal", "3"]) == 0
    assert "2026-11-20 10:01:00 +08:00" in capsys.readouterr().out


def test_status_shows_ages_not_microseconds(till, capsys):
    path, _ = till
    main(["status", path])
    out = capsys.readouterr().out
    line = next(li for li in out.splitlines() if li.startswith("oldest_unsynced "))
    assert "2026-11-20 10:00:00 +08:00" in line and line.endswith("ago)") and str(T0) not in out
    main(["status", path, "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["oldest_unsynced_ts"] == T0 and doc["oldest_unsynced_time"] == "2026-11-20T10:00:00+08:00"
    assert doc["oldest_unsynced_age"].endswith(" ago")


def test_age():
    assert [age(s) for s in (5, 120, 3 * 3600 + 12 * 60, 3600, 50 * 3600)] == \
        ["5 s ago", "2 min ago", "3 h 12 min ago", "1 h ago", "2 d 2 h ago"]


# ---------------------------------------------------------------- pipes
def test_query_into_head_exits_quietly(tmp_path):
    path = str(tmp_path / "big.pfj")
    with posfast.Journal.create(path, capacity=8192, durability="none") as j:
        for i in range(3000):
            j.append(terminal=1 + i % 4, kind="sale", state="approved", amount=100 + i, currency=156)
    for fmt in ("table", "csv", "json"):
        proc = subprocess.Popen([sys.executable, "-m", "posfast", "query", path, "--format", fmt],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=child_env(), cwd=CHILD_CWD)
        first = proc.stdout.readline()
        proc.stdout.close()                                   # `| head -1` goes away
        err = proc.stderr.read().decode()
        code = proc.wait(60)
        assert first and code == 0 and err == "", (fmt, code, err)
    shell = subprocess.run("set -o pipefail; %s -m posfast query %s | head -n 2" % (sys.executable, path),
                           shell=True, executable="/bin/bash", capture_output=True, text=True,
                           env=child_env(), cwd=CHILD_CWD)
    assert shell.returncode == 0 and shell.stderr == "" and len(shell.stdout.splitlines()) == 2


# ---------------------------------------------------------------- resolve, reprint --code
def test_resolve_a_payment_in_doubt(till, capsys):
    path, txn = till
    assert main(["in-doubt", path]) == 1
    assert main(["resolve", path, str(txn), "approved", "--auth-code", "H12345", "--rrn", "123456789012"]) == 0
    assert "resolved as APPROVED" in capsys.readouterr().out
    assert main(["in-doubt", path]) == 0
    with posfast.Journal.open(path, readonly=True) as j:
        rec = j.payment(txn)
        assert (rec.state, rec.auth_code, rec.rrn) == (posfast.State.APPROVED, b"H12345", b"123456789012")
    assert main(["resolve", path, str(txn), "declined"]) == 65           # not in doubt any more
    assert "not in doubt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["resolve", path, str(txn), "maybe"])
    assert info.value.code == 2


def test_reprint_by_the_code_on_the_slip(till, capsys):
    path, _ = till
    assert parse_receipt_code("3-000200") == (3, 200) and parse_receipt_code("000200") == (None, 200)
    assert main(["reprint", path, "--code", "3-000200"]) == 0
    out = capsys.readouterr().out
    assert "COPY 1" in out and "3-000200" in out
    assert main(["reprint", path, "--code", "3-0002x0"]) == 2
    assert "TERMINAL-NUMBER" in capsys.readouterr().err
    assert main(["reprint", path, "--code", "3-000200", "--terminal", "4"]) == 2


# ---------------------------------------------------------------- progress
class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_only_on_a_terminal():
    plain, tty = io.StringIO(), _Tty()
    assert not progress_enabled(plain) and progress_enabled(tty)
    for stream in (plain, tty):
        bar = Progress(100, stream)
        bar.update(50)
        bar.finish()
    assert plain.getvalue() == "" and "50/100 records" in tty.getvalue()


# ---------------------------------------------------------------- payments() and the query footer
def test_payments_one_row_per_payment_with_signed_amounts(till):
    path, txn = till
    with posfast.Journal.open(path, readonly=True) as j:
        pays = j.payments()
        day = j.payments(day="2026-11-20")
        four = j.payments(terminal=4)
        assert len(j.payments(day="2026-11-19")) == 0
    assert pays["txn_id"].tolist() == [1, 2, 3, 4, txn] and day.tolist() == pays.tolist()
    assert pays["signed"].tolist() == [1250, -250, 999, 700, 500]
    assert pays["net"].tolist() == [1250, -250, 0, 700, 0]          # declined and pending: 0
    assert pays["state"][3] == posfast.State.APPROVED and pays["final_seq"][3] == 5
    assert four["txn_id"].tolist() == [3, 4, txn]
    nets = {int(c): int(pays["net"][pays["currency"] == c].sum()) for c in np.unique(pays["currency"])}
    assert nets == {156: 1000, 840: 700}


def test_query_footer_shows_net_per_currency(till, capsys):
    path, _ = till
    assert main(["query", path, "--day", "2026-11-20"]) == 0
    footer = capsys.readouterr().out.strip().splitlines()[-1]
    assert "6 record(s), 5 payment(s) (3 approved): net CNY 10.00, USD 7.00" in footer


# ---------------------------------------------------------------- imports point down
def _imports(path):
    import ast
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield "." * node.level + (node.module or ""), [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


def test_no_domain_module_imports_the_cli_and_no_cli_demo_cycle():
    package = os.path.dirname(os.path.abspath(posfast.__file__))   # the checkout or the wheel
    for root, _dirs, files in os.walk(package):
        if os.path.join(package, "cli") in root:
            continue
        for name in files:
            if name.endswith(".py") and name != "__main__.py":
                for module, names in _imports(os.path.join(root, name)):
                    assert "cli" not in module.split(".") and "cli" not in names, (name, module)
    for name in ("output.py", "demo.py"):
        for module, names in _imports(os.path.join(package, "cli", name)):
            assert module not in (".", ".commands", "posfast.cli", "posfast.cli.commands"), (name, module)
    for domain in ("dayclose.py", "retention.py", "server.py", "reconcile", "sync"):
        path = os.path.join(package, domain)
        sources = [os.path.join(path, f) for f in os.listdir(path)] if os.path.isdir(path) else [path]
        for source_path in sources:
            if source_path.endswith(".py"):
                source = open(source_path, encoding="utf-8").read()
                assert "def cli_" not in source and "def run_from_args" not in source, source_path


def test_payments_finished_on_a_later_day_count_once_for_the_day_they_began(tmp_path):
    with posfast.Journal.create(tmp_path / "t.pfj", capacity=64, day_rule=RULE) as j:
        txn = j.begin_payment(terminal=1, amount=800, currency=156, ts=T0 + 17 * 3600 * 10**6)  # 03:00 next day
        j.finish_payment(txn, "approved", ts=T0 + 19 * 3600 * 10**6)        # 05:00: the next business day
        refund = j.begin_payment(terminal=1, kind="refund", ref_seq=txn, amount=300, currency=156,
                                 ts=T0 + 20 * 3600 * 10**6)
        j.finish_payment(refund, "approved", ts=T0 + 20 * 3600 * 10**6 + 1)
        day1, day2, every = j.payments(day="2026-11-20"), j.payments(day="2026-11-21"), j.payments()
    assert day1[["txn_id", "state", "net"]].tolist() == [(txn, posfast.State.APPROVED, 800)]
    assert day2[["txn_id", "net"]].tolist() == [(refund, -300)]
    assert every["txn_id"].tolist() == [txn, refund] and every["day"].tolist() == [day1["day"][0], day2["day"][0]]
    assert int(every["net"].sum()) == 500
