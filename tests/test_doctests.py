"""Every module's doctests run in the suite: the examples in the docstrings are the
tutorials (STYLE.md: every public function has a short runnable example), so they must run.

The Python modules run through ``pytest --doctest-modules`` over the installed package
(whatever modules and subpackages it has); the compiled core's examples through doctest
(pytest does not collect extension modules).  Examples that create journals use
``tempfile.mkdtemp()``: TMPDIR points into this test's tmp_path, so nothing is left behind.
"""
import doctest
import os
import pathlib
import re
import subprocess
import sys

import posfast
from posfast import _core

PACKAGE = pathlib.Path(posfast.__file__).resolve().parent


def test_every_python_module_s_doctests_pass(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "--doctest-modules",
                           "-p", "no:cacheprovider", "-o", "addopts=", str(PACKAGE)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) >= 40, proc.stdout[-2000:]
    # the examples wrote their journals under tmp_path, not into the checkout or /tmp
    assert any(tmp_path.rglob("*.pfj"))


def test_the_compiled_core_s_doctests_pass():
    result = doctest.testmod(_core, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted >= 2          # crc32c and sha256 test vectors
