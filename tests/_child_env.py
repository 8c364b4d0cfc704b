"""How the tests start child Python processes: importing the very posfast package this test
process imported (an installed wheel, or the repository's in-place build), never a source
tree without the compiled core that happens to lie above tests/ (an unpacked sdist: the
child would fail with ``No module named 'posfast._core'``).  So the suite proves the same
thing run from the repository, from the sdist and against an installed wheel."""
import os
import site
import sys

import posfast

TESTS = os.path.dirname(os.path.abspath(__file__))
#: the directory holding the posfast package this process runs
POSFAST_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(posfast.__file__)))
#: a working directory for children: `python -c` and `-m` put the working directory first on
#: the path, and this one holds no posfast/ (the checkout or sdist root may)
CHILD_CWD = TESTS


def _site_dirs():
    dirs = list(getattr(site, "getsitepackages", lambda: [])())
    if getattr(site, "ENABLE_USER_SITE", False):
        dirs.append(site.getusersitepackages())
    return {os.path.abspath(d) for d in dirs}


def child_pythonpath(*front):
    """PYTHONPATH for a child: `front`, the imported posfast's directory (unless it is a
    site-packages directory, which the child has anyway), tests/, then the caller's."""
    parts = list(front)
    if POSFAST_PARENT not in _site_dirs():
        parts.append(POSFAST_PARENT)
    parts.append(TESTS)
    parts += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    seen, out = set(), []
    for p in parts:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return os.pathsep.join(out)


def child_env(*front, **extra):
    """os.environ with PYTHONPATH from `child_pythonpath(*front)`, then `extra`."""
    return dict(os.environ, PYTHONPATH=child_pythonpath(*front), **extra)


def imported_from_here(env=None, cwd=CHILD_CWD):
    """(A check for the tests of this module.)  Where a child started with `env` in `cwd`
    imports posfast from."""
    import subprocess
    out = subprocess.run([sys.executable, "-c", "import posfast, os; "
                          "print(os.path.dirname(os.path.abspath(posfast.__file__)))"],
                         env=child_env() if env is None else env, cwd=cwd, capture_output=True,
                         text=True, timeout=120, check=True)
    return out.stdout.strip()
