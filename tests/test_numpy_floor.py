"""The oldest numpy the README supports (1.19, Debian 11's python3-numpy on 32-bit ARM
terminals) has every numpy function posfast calls: names numpy added later are refused here,
so that x86_64 runs (with a newer numpy) catch what only an emulated armhf run would.

`posfast demo` failed on Debian 11 armhf with `sliding_window_view` (numpy 1.20) in the
statement tokenizer; `.ci/arm-check armhf` found it."""
import pathlib
import re

import posfast

PACKAGE = pathlib.Path(posfast.__file__).resolve().parent

# numpy functions added after 1.19 (numpy's release notes), as they would be called
NEWER = {
    "sliding_window_view": "1.20", "bitwise_count": "2.0", "unique_values": "2.0",
    "unique_counts": "2.0", "unique_inverse": "2.0", "unique_all": "2.0", "isdtype": "2.0",
    "trapezoid": "2.0", "cumulative_sum": "2.1", "cumulative_prod": "2.1", "unstack": "2.1",
    "permute_dims": "2.0", "matrix_transpose": "2.0", "vecdot": "2.0", "np.astype": "2.0",
    "np.concat": "2.0", "np.strings": "2.0", "np.exceptions": "1.25", "np.dtypes": "1.25",
}


def test_no_numpy_function_newer_than_the_oldest_supported():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for name, version in NEWER.items():
            pattern = re.escape(name) + r"\b" if name.startswith("np.") else \
                r"\b" + re.escape(name) + r"\s*\("
            for m in re.finditer(pattern, text):
                line = text.count("\n", 0, m.start()) + 1
                if '"""' not in text.splitlines()[line - 1] and \
                        not text.splitlines()[line - 1].lstrip().startswith("#"):
                    found.append("%s:%d: %s (numpy %s)" % (path.relative_to(PACKAGE), line,
                                                           name, version))
    assert not found, "numpy newer than 1.19 (README platform table):\n" + "\n".join(found)
