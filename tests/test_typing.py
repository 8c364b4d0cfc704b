"""The typed API stays typed: the _core stub matches the compiled module (stubtest), mypy
passes on the package, and a user's script is checked against the real signatures (a
misspelt Journal method fails type checking)."""
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import posfast

pytest.importorskip("mypy", reason="mypy is in the test extra (pip install -e '.[test]'); "
                                   "it needs Python 3.10+")

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE_PARENT = pathlib.Path(posfast.__file__).resolve().parents[1]
CONFIG = ROOT / "pyproject.toml"


def _mypy_env():
    env = dict(os.environ)
    # An editable install is an import hook mypy cannot follow: point it at the source tree.
    # (Installed from a wheel, posfast sits in site-packages, where mypy finds it anyway.)
    if "site-packages" not in str(PACKAGE_PARENT):
        env["MYPYPATH"] = str(PACKAGE_PARENT)
    return env


def run(*args, cwd):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=_mypy_env(),
                          capture_output=True, text=True, timeout=600)


def _config_args(flag="--config-file"):
    return [flag, str(CONFIG)] if CONFIG.exists() else []


def test_core_stub_matches_the_compiled_module(tmp_path):
    allowlist = pathlib.Path(__file__).with_name("stubtest_allowlist.txt")
    proc = run("-m", "mypy.stubtest", *_config_args("--mypy-config-file"), "--allowlist", str(allowlist),
               "posfast._core", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success: no issues found in 1 module" in proc.stdout


def test_mypy_passes_on_the_package(tmp_path):
    proc = run("-m", "mypy", "--no-incremental", *_config_args(), "-p", "posfast", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("Success: no issues found"), proc.stdout


GOOD = '''
    import datetime

    from posfast import DayRule, Journal, Kind, Record, VerifyReport
    from posfast.records import check_payload, day_number


    def till(path: str) -> int:
        with Journal.create(path, capacity=1000, day_rule=DayRule(utc_offset="+08:00")) as j:
            seq: int = j.append(b"", terminal=3, kind=Kind.SALE, amount=1250, currency=156)
            rec: Record = j.get(seq)
            last = j.last(3)
            newest: int = last.seq if last is not None else 0
            rows = j.query(day=datetime.date(2026, 11, 20), terminal=3)
            report: VerifyReport = j.verify()
            kind: Kind = Kind.coerce("refund")
            day: int = day_number("2026-11-20") - j.day_rule.day_number(rec.ts)
            return (rec.amount + newest + int(rows["amount"].sum()) + int(report.ok) + kind
                    + day + len(check_payload(rec.payload)))
'''

BAD = '''
    from posfast import Journal

    j = Journal.open("till.pfj")
    j.apend(b"", terminal=3, amount=1250)
'''


def _check_user_script(tmp_path, name, source):
    script = tmp_path / name
    script.write_text(textwrap.dedent(source))
    # --follow-imports=silent: posfast is checked as a user sees it, an installed library
    return run("-m", "mypy", "--no-incremental", "--follow-imports=silent", "--strict",
               str(script), cwd=tmp_path)


def test_a_correct_user_script_passes_type_checking(tmp_path):
    proc = _check_user_script(tmp_path, "till.py", GOOD)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_misspelt_journal_method_fails_type_checking(tmp_path):
    proc = _check_user_script(tmp_path, "typo.py", BAD)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert '"Journal" has no attribute "apend"; maybe "append"?' in proc.stdout
    assert "Found 1 error in 1 file" in proc.stdout
