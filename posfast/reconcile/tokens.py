"""A statement block's cells straight from its bytes into numpy columns, without a Python
string per cell: the fast path of the CSV readers (posfast's CSV and the WeChat Pay bill).

Every function here either returns the exact result of the text path it stands in for
(``settlement._split_block`` and ``_settlement_rows``, ``formats._stream_table`` and
``_wechat_block``) or None, never an error: on anything it does not handle plainly (a
quote, a line with another number of fields, a blank inside a cell, a digit that is not
ASCII, a time of another shape, an out-of-range value, ...) the caller reads the block
again through the text path, which accepts it or refuses it naming line, column and
value as it always did.  tests/test_tokens.py holds both paths against each other.

>>> block = Fields.of(b"3,2026-11-20 13:45:12,A1\\n\\n12,2026-11-21 00:00:00,\\n", 3)
>>> block.lines.tolist(), integers(*block.right(0), 0, 2**32 - 1).tolist()
([0, 2], [3, 12])
>>> Fields.of(b"3,x\\n4\\n", 2) is None          # a line of another width: the text path
True
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["Fields", "printable", "digit_cells", "integers", "signed_integers", "naive_times",
           "fixed_decimals", "decimals", "byte_strings",
           "distinct"]

#: Zero bytes after a block, so that any cell of up to this many bytes can be cut out of
#: it as one row of a strided window (no index matrix); wider cells take the text path.
_PAD = 256
_POW10 = 10 ** np.arange(19, dtype=np.int64)
_DAYS_BEFORE = np.array([0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334], np.int64)
_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int64)


class Fields:
    """The cells of a block of CSV lines without quotes, every non-blank line of exactly
    `width` fields: ``lines`` the index (from 0) of each kept line in the block."""

    def __init__(self, buf, lines, starts, sep, width):
        self.buf, self.lines, self.width = buf, lines, width
        self._starts, self._sep = starts, sep
        self._bounds: dict = {}

    @classmethod
    def of(cls, data: bytes, width: int, blank_lines: bool = True) -> Optional["Fields"]:
        """`data`: lines ended by b"\\n" (the last one may lack it).  None when a line
        other than an empty one has another number of fields than `width` (or, without
        `blank_lines`, when a line is empty), or the block holds a quote or a NUL."""
        if width < 2 or b'"' in data or b"\x00" in data:
            return None
        if data and not data.endswith(b"\n"):
            data += b"\n"
        buf = np.frombuffer(bytes(_PAD) + data + bytes(_PAD), np.uint8)
        is_newline = buf == 10                  # (positions in buf: the pads hold neither)
        newline = np.flatnonzero(is_newline)
        is_sep = buf == 44
        is_sep |= is_newline
        del is_newline
        sep = np.flatnonzero(is_sep)
        del is_sep
        if len(sep) == width * len(newline):
            sep = sep.reshape(-1, width)
            if np.array_equal(sep[:, -1], newline):
                # width - 1 commas before each newline, no empty line: the usual block
                starts = np.empty(len(sep), np.int64)
                starts[:1] = _PAD
                starts[1:] = sep[:-1, -1] + 1
                return cls(buf, np.arange(len(sep)), starts, sep, width)
        # empty lines among them (or a line of another width: then None)
        starts = np.concatenate(([_PAD], newline[:-1] + 1))
        full = newline > starts
        if not full.all() and not blank_lines:
            return None
        lines = np.flatnonzero(full)
        sep = np.flatnonzero(buf == 44)
        if len(sep) != (width - 1) * len(lines):
            return None
        per_line = np.searchsorted(sep, newline[lines]) - np.searchsorted(sep, starts[lines])
        if (per_line != width - 1).any():
            return None
        sep = np.concatenate((sep.reshape(len(lines), width - 1), newline[lines, None]), axis=1)
        return cls(buf, lines, starts[lines], sep, width)

    def __len__(self):
        return len(self.lines)

    def bounds(self, k, backtick=False):
        """(start, end) offsets in the buffer of field `k` (from 0) of every line;
        `backtick`: a leading ` is not part of the cell (WeChat Pay's cells)."""
        got = self._bounds.get((k, backtick))
        if got is None:
            start = self._starts if k == 0 else self._sep[:, k - 1] + 1
            end = self._sep[:, k]
            if backtick and len(start):
                start = start + (self.buf[start] == 96) * (end > start)
            got = self._bounds[k, backtick] = (start, end)
        return got

    def column(self, k, backtick=False, zero=True):
        """(bytes matrix n x w of field `k`, its cells left-aligned, zero beyond each cell
        unless not `zero`, and each cell's length).  The matrix is None for a cell wider
        than the pad (the caller takes the text path)."""
        start, end = self.bounds(k, backtick)
        length = end - start
        width = int(length.max()) if len(length) else 0
        if width > _PAD:
            return None, length
        if width == 0:
            return np.zeros((len(length), 0), np.uint8), length
        mat = _windows(self.buf, width)[start]
        if zero and int(length.min()) < width:
            mat *= np.arange(width, dtype=np.int64)[None, :] < length[:, None]
        return mat, length

    def right(self, k, backtick=False):
        """(bytes matrix n x w of field `k`, its cells right-aligned: the bytes before a
        shorter cell are whatever precedes it, and each cell's length)."""
        start, end = self.bounds(k, backtick)
        length = end - start
        width = int(length.max()) if len(length) else 0
        if width > _PAD:
            return None, length
        return _windows(self.buf, width)[end - width], length


def _windows(buf, width):
    """Every `width` consecutive bytes of `buf`, as rows of a read-only view (no copy):
    numpy's sliding_window_view, which Debian 11's numpy 1.19 does not have."""
    n = len(buf) - width + 1
    return np.lib.stride_tricks.as_strided(buf, shape=(max(n, 0), width),
                                           strides=(buf.strides[0], buf.strides[0]),
                                           writeable=False)


def printable(mat, length, utf8=False) -> bool:
    """Whether every cell holds no blank or control byte (nothing str.strip could take
    off) and, unless `utf8`, only ASCII."""
    total = int(length.sum())         # (the matrix is zero beyond each cell: Fields.column)
    if utf8:
        return int(np.count_nonzero(mat > 32)) == total
    return int(np.count_nonzero((mat - 33) < 94)) == total       # (uint8: 33..126 only)


def byte_strings(mat, length, size=None) -> Optional[np.ndarray]:
    """The cells as a byte-string array as wide as the widest (at least 1; `size`: that
    width), as ``np.array(list of bytes)`` makes it."""
    if mat is None:
        return None
    n, width = mat.shape
    out = np.ascontiguousarray(mat).view("S%d" % width).reshape(n) if width else \
        np.zeros(n, "S1")
    return out if size is None else out.astype("S%d" % size)


def _digits(mat, length, lo_col=0):
    """int64 value of each row's ASCII digits (a right-aligned matrix, ``Fields.right``;
    `lo_col` bytes of each cell before them: a sign), or None when a cell holds anything
    but digits there, has none, or more than 18."""
    if mat is None:
        return None
    n, width = mat.shape
    if not n:
        return np.zeros(0, np.int64)
    count = length - lo_col
    if width > 18 + lo_col or (count < 1).any() or (count > 18).any():
        return None
    digit = mat - 48                  # (uint8: a byte below "0" wraps round above 9)
    if int(count.min()) == width:
        if (digit > 9).any():
            return None
        return digit.astype(np.int64) @ _POW10[width - 1::-1]
    inside = np.arange(width)[None, :] >= (width - count)[:, None]
    if ((digit > 9) & inside).any():
        return None
    return (digit * inside).astype(np.int64) @ _POW10[width - 1::-1]


def digit_cells(mat, length, most):
    """(whether each cell is 1..`most` ASCII digits, its value there, else 0) of a
    right-aligned matrix (``Fields.right``)."""
    n, width = mat.shape
    if not n or not width:
        return np.zeros(n, bool), np.zeros(n, np.int64)
    width = min(width, most)
    mat = mat[:, mat.shape[1] - width:]
    inside = np.arange(width)[None, :] >= (width - np.minimum(length, width))[:, None]
    digit = mat - 48
    ok = ((digit <= 9) | ~inside).all(axis=1) & (length >= 1) & (length <= most)
    value = (digit * inside).astype(np.int64) @ _POW10[width - 1::-1]
    return ok, np.where(ok, value, 0)


def integers(mat, length, lo, hi) -> Optional[np.ndarray]:
    """Unsigned decimal integers in lo..hi, as int() reads plain ASCII digits, or None."""
    value = _digits(mat, length)
    if value is None or (len(value) and ((value < lo) | (value > hi)).any()):
        return None
    return value


def signed_integers(mat, length, blank=None) -> Optional[np.ndarray]:
    """Integers with an optional leading "-" (at most 18 digits) of a right-aligned
    matrix; `blank` for empty cells (None: an empty cell is not handled here), or None."""
    if mat is None:
        return None
    n = len(length)
    if not n:
        return np.zeros(0, np.int64)
    empty = length == 0
    if empty.any() and blank is None:
        return None
    width = mat.shape[1]
    first = mat[np.arange(n), np.minimum(width - length, width - 1)] if width else \
        np.zeros(n, np.uint8)
    minus = (first == 45) & ~empty
    if not minus.any() and not empty.any():
        return _digits(mat, length)
    out = np.zeros(n, np.int64)
    for lead in (0, 1):
        rows = ~empty & (minus == bool(lead))
        if rows.any():
            value = _digits(mat[rows], length[rows] - lead)
            if value is None:
                return None
            out[rows] = -value if lead else value
    if blank is not None:
        out[empty] = blank
    return out


def decimals(mat, length, exponent, blank=None) -> Optional[np.ndarray]:
    """``amounts.decimal_units`` of cells of digits with at most one ".", an optional
    leading "-" and at most `exponent` decimals (an int or one per row), or None."""
    if mat is None:
        return None
    n, width = mat.shape
    if not n:
        return np.zeros(0, np.int64)
    exps = np.broadcast_to(np.asarray(exponent, np.int64), (n,))
    empty = length == 0
    if empty.any() and blank is None:
        return None
    if width > 24:
        return None
    if width == 0:                            # every cell empty (and `blank` given)
        return np.full(n, blank, np.int64)
    col = np.arange(width)[None, :]
    inside = col < length[:, None]
    minus = (mat[:, 0] == 45) if width else np.zeros(n, bool)
    body = inside & ~((col == 0) & minus[:, None])
    dot = (mat == 46) & body
    digit = ((mat - 48) <= 9) & body
    if (body & ~digit & ~dot).any():
        return None
    dots = dot.sum(axis=1)
    if (dots > 1).any() or (~empty & ~digit.any(axis=1)).any():
        return None
    has_dot = dots == 1
    dot_at = np.where(has_dot, np.argmax(dot, axis=1), length)
    places_after = np.where(has_dot, length - dot_at - 1, 0)
    if (places_after > exps).any():
        return None
    places = np.where(col < dot_at[:, None], dot_at[:, None] - 1 - col, dot_at[:, None] - col) \
        + exps[:, None]
    if ((places >= 18) & digit).any():
        return None
    value = (np.where(digit, mat - 48, 0).astype(np.int64) * _POW10[np.clip(places, 0, 18)]).sum(axis=1)
    out = np.where(minus, -value, value)
    if blank is not None:
        out[empty] = blank
    return out


def fixed_decimals(mat, length, exponent, blank=None) -> Optional[np.ndarray]:
    """decimals() of the usual column, from a right-aligned matrix (``Fields.right``):
    every cell digits, a dot and exactly the one exponent's decimals (or empty, with
    `blank`); None otherwise (then decimals() reads it the general way)."""
    if mat is None or not len(length):
        return None
    exps = np.broadcast_to(np.asarray(exponent, np.int64), (len(length),))
    exp = int(exps[0])
    if not 0 < exp < 10 or (exps != exp).any() or mat.shape[1] < exp + 2:
        return None
    empty = length == 0
    if empty.any():
        if blank is None or empty.all():
            return None
        full = ~empty
        mat, length = mat[full], length[full]
    dot = mat.shape[1] - 1 - exp                 # where the dot is in a right-aligned row
    if (mat[:, dot] != 46).any() or (length > 19).any():    # (at most 18 digits: int64)
        return None
    whole = _digits(mat[:, :dot], length - exp - 1)
    frac = _digits(mat[:, dot + 1:], np.full(len(length), exp))
    if whole is None or frac is None:
        return None
    value = whole * _POW10[exp] + frac
    if not empty.any():
        return value
    out = np.full(len(empty), blank, np.int64)
    out[~empty] = value
    return out


def naive_times(mat, length) -> Optional[np.ndarray]:
    """Microseconds since 1970 (wall time, no zone) of cells written exactly
    ``YYYY-MM-DD HH:MM:SS`` (or with ``T``), years 1..9999, a valid date and clock; None
    for any other shape (the text path reads those)."""
    if mat is None:
        return None
    n = len(length)
    if not n:
        return np.zeros(0, np.int64)
    if mat.shape[1] != 19 or (length != 19).any():
        return None
    sep = mat[:, [4, 7, 10, 13, 16]]
    if not ((sep[:, 0] == 45).all() and (sep[:, 1] == 45).all() and (sep[:, 3] == 58).all()
            and (sep[:, 4] == 58).all() and ((sep[:, 2] == 32) | (sep[:, 2] == 84)).all()):
        return None
    d = mat[:, [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]] - 48
    if (d > 9).any():
        return None
    d = d.astype(np.int64)
    year = d[:, 0] * 1000 + d[:, 1] * 100 + d[:, 2] * 10 + d[:, 3]
    month = d[:, 4] * 10 + d[:, 5]
    day = d[:, 6] * 10 + d[:, 7]
    hour, minute, second = (d[:, 8] * 10 + d[:, 9], d[:, 10] * 10 + d[:, 11],
                            d[:, 12] * 10 + d[:, 13])
    if ((year < 1) | (month < 1) | (month > 12) | (day < 1) | (hour > 23) | (minute > 59)
            | (second > 59)).any():
        return None
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    if (day > _MONTH_DAYS[month] + (leap & (month == 2))).any():
        return None
    y = year - 1
    days = (y * 365 + y // 4 - y // 100 + y // 400 + _DAYS_BEFORE[month] + (leap & (month > 2))
            + day - 1) - 719162                     # days from 0001-01-01 to 1970-01-01
    return ((days * 24 + hour) * 60 + minute) * 60_000_000 + second * 1_000_000


def distinct(mat, length, limit=64):
    """(the distinct cells as bytes, each row's index into them) of a column of few
    values, or None beyond `limit` distinct values."""
    if mat is None:
        return None
    n, width = mat.shape
    if not n:
        return [], np.zeros(0, np.intp)
    if width <= 8:                  # (cells hold no NUL: Fields.of refuses a block with one)
        keys = np.zeros((n, 8), np.uint8)
        keys[:, :width] = mat
        names, inverse = np.unique(keys.view("<u8").reshape(n), return_inverse=True)
        if len(names) > limit:
            return None
        return ([bytes(k).rstrip(b"\x00") for k in names.astype("<u8").view("S8").tolist()],
                inverse.reshape(-1))
    names, inverse = np.unique(byte_strings(mat, length), return_inverse=True)
    if len(names) > limit:
        return None
    return names.tolist(), inverse.reshape(-1)
