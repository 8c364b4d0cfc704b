"""ruff with the small config in pyproject.toml ([tool.ruff]) over the package, the tests and
the benchmarks: unused imports and names, undefined names, statement style."""
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytest.importorskip("ruff", reason="ruff is in the test extra (pip install -e '.[test]')")


@pytest.mark.skipif(not (ROOT / "posfast" / "__init__.py").exists(),
                    reason="needs the source tree (run from a checkout, not an installed wheel)")
def test_ruff_finds_nothing():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache",
                           "posfast", "tests", "bench"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All checks passed!" in proc.stdout
