"""Vectorized matching helpers: exact dense key ids, de-duplication, joins and the
time-window pairing of settlement rows (no Python loop per record).

>>> import numpy as np
>>> key_ids(np.array([b"a", b"b", b"a"], dtype="S1")).tolist()
[0, 1, 0]
"""
from __future__ import annotations

import numpy as np

from ..errors import PosfastError

__all__ = ["Columns", "HashedKeys", "dedupe", "hashes", "join", "key_ids", "pair_keys", "split_ids",
           "split_ids_at", "window_pairs"]

_MIX = np.uint64(0x9E3779B97F4A7C15)


class Columns:
    """Equal-length columns by name: a structured array's fields (views, not copies) and
    arrays beside them, read like the structured array would be: ``t["amount"]`` a column,
    ``t[i]`` a row (``row["amount"]``), ``t[mask or indices]`` the rows picked.  A payment
    table of a million rows is then never copied whole to add a column.

    >>> t = Columns({"a": np.arange(3), "b": np.array([b"x", b"y", b"z"])})
    >>> len(t), bytes(t[1]["b"]), t[np.array([0, 2])]["a"].tolist(), t.dtype.names
    (3, b'y', [0, 2], ('a', 'b'))
    """

    def __init__(self, columns: dict, n=None):
        self.columns = dict(columns)
        self._n = len(next(iter(self.columns.values()))) if n is None else n

    @classmethod
    def of(cls, array, **extra) -> "Columns":
        """The fields of structured `array` (views) and the `extra` columns."""
        columns = {name: array[name] for name in array.dtype.names}
        columns.update(extra)
        return cls(columns, len(array))

    def __len__(self):
        return self._n

    @property
    def dtype(self):            # code written for structured arrays asks dtype.names
        return self

    @property
    def names(self):
        return tuple(self.columns)

    def __contains__(self, name):
        return name in self.columns

    def __getitem__(self, key):
        if isinstance(key, str):
            return self.columns[key]
        if isinstance(key, (int, np.integer)):
            return _Row(self.columns, int(key))
        picked = {name: column[key] for name, column in self.columns.items()}
        return Columns(picked, len(next(iter(picked.values()))))

    def __setitem__(self, name, value):
        self.columns[name][...] = value


class _Row:
    """One row of :class:`Columns`."""
    __slots__ = ("_columns", "_i")

    def __init__(self, columns, i):
        self._columns, self._i = columns, i

    def __getitem__(self, name):
        return self._columns[name][self._i]

    @property
    def dtype(self):
        return Columns(self._columns, 0)


#: Rows hashed (and checked) at a time: the byte matrix of a chunk only, never of all rows.
_CHUNK = 1 << 18


def _row_bytes(columns, sizes, width, lo, hi):
    """The row-wise bytes of rows lo:hi of `columns`, zero-padded to `width` (a multiple of 8)."""
    raw = np.zeros((hi - lo, width), np.uint8)
    offset = 0
    for c, size in zip(columns, sizes):
        part = np.ascontiguousarray(c[lo:hi])
        raw[:, offset:offset + size] = part.view(np.uint8).reshape(hi - lo, size)
        offset += size
    return raw


def _mix_words(words: np.ndarray) -> np.ndarray:
    """One 64-bit hash per row of `words` (rows of uint64 words): FNV's offset basis, then per
    word an xor, a multiply by _MIX and an xorshift."""
    part = np.full(len(words), 0xCBF29CE484222325, np.uint64)
    for k in range(words.shape[1]):
        part ^= words[:, k]
        part *= _MIX
        part ^= part >> np.uint64(29)
    return part


def key_ids(*columns, at=None) -> np.ndarray:
    """Exact dense ids (0..groups-1) of the row-wise values of several columns (of their
    rows `at`, an index array, when given: no copy of the picked rows is made).

    The columns' bytes are folded into a 64-bit hash for a fast integer sort;
    equal hashes are then checked byte for byte, and a collision (never seen in
    practice) falls back to sorting the raw bytes, so the ids are always exact.
    Both steps go a chunk of rows at a time (memory: the hashes, not the bytes).
    """
    if at is not None:
        at = np.asarray(at, np.int64)
    n = len(columns[0]) if at is None else len(at)
    if not n:
        return np.zeros(0, np.int64)

    def rows(c, lo, hi):
        return c[lo:hi] if at is None else c[at[lo:hi]]
    sizes = [np.asarray(c[:1]).dtype.itemsize for c in columns]
    width = -(-sum(sizes) // 8) * 8
    h = np.empty(n, np.uint64)
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        words = _row_bytes([rows(c, lo, hi) for c in columns], sizes, width, 0, hi - lo).view("<u8")
        h[lo:hi] = _mix_words(words)
        del words
    # np.unique(h, return_index=True, return_inverse=True), its buffers let go as it goes
    order = np.argsort(h, kind="stable")
    sorted_h = h[order]
    del h
    new = np.empty(n, bool)
    new[0] = True
    np.not_equal(sorted_h[1:], sorted_h[:-1], out=new[1:])
    del sorted_h
    first = order[new]
    group = np.cumsum(new, dtype=np.int64)
    group -= 1
    del new
    inverse = np.empty(n, np.int64)
    inverse[order] = group
    del group, order
    same = True
    if width > 8:       # one word is the value itself: no collision possible
        for lo in range(0, n, _CHUNK):
            hi = min(n, lo + _CHUNK)
            rep = first[inverse[lo:hi]]
            if not all(bool((np.asarray(rows(c, lo, hi)) == c[
                    rep if at is None else at[rep]]).all()) for c in columns):
                same = False
                break
    if not same:
        picked = columns if at is None else [np.asarray(c)[at] for c in columns]
        raw = _row_bytes(picked, sizes, width, 0, n)
        _, inverse = np.unique(raw.view("V%d" % width).ravel(), return_inverse=True)
        inverse = inverse.reshape(-1).astype(np.int64, copy=False)
    return inverse


def hashes(columns, at, dtypes=None) -> np.ndarray:
    """The 64-bit hash key_ids folds the row-wise values of `columns` (at their rows `at`,
    each column as `dtypes`, e.g. the wider of two sides' byte strings) into; equal
    values, equal hashes (the converse is checked by whoever relies on it)."""
    at = np.asarray(at, np.int64)
    n = len(at)
    dtypes = dtypes or [c.dtype for c in columns]
    sizes = [np.dtype(d).itemsize for d in dtypes]
    width = -(-sum(sizes) // 8) * 8
    h = np.empty(n, np.uint64)
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        words = _row_bytes([c[at[lo:hi]].astype(d, copy=False) for c, d in zip(columns, dtypes)],
                           sizes, width, 0, hi - lo).view("<u8")
        h[lo:hi] = _mix_words(words)
    return h


def _same(columns, a, b) -> bool:
    """Whether rows `a` and rows `b` of `columns` hold equal values, pair by pair."""
    for lo in range(0, len(a), _CHUNK):
        for c in columns:
            if not bool((c[a[lo:lo + _CHUNK]] == c[b[lo:lo + _CHUNK]]).all()):
                return False
    return True


class HashedKeys:
    """The rows `at` of `columns` grouped by value through their hashes, sorted once:
    ``rep`` (a mask over `at`) marks each group's representative, the first by `prefer`
    ascending, then position (what ``dedupe(key_ids(...), prefer)`` picks), ``rep_of``
    the position of each row's representative.  ``exact`` is False when two different
    values share a hash (never seen in practice): the caller then takes key_ids."""

    def __init__(self, columns, at, prefer=None, dtypes=None, rep_of=True):
        self.columns, self.at = columns, np.asarray(at, np.int64)
        n = len(self.at)
        h = hashes(columns, self.at, dtypes)
        order = np.argsort(h, kind="stable")
        sorted_h = h[order]
        del h
        new = np.empty(n, bool)
        new[:1] = True
        np.not_equal(sorted_h[1:], sorted_h[:-1], out=new[1:])
        self.exact = True
        if new.all():                              # every hash once: the usual case
            del new
            self.rep = np.ones(n, bool)
            self.rep_of = np.arange(n) if rep_of else None
            self.unique_h, self.unique_pos = sorted_h, order
            return
        starts = np.flatnonzero(new)
        first = order[starts]                      # (stable: the earliest of each hash)
        group = np.cumsum(new) - 1
        del new
        many = np.flatnonzero(np.diff(np.append(starts, n))[group] > 1)   # sorted places
        if prefer is not None and prefer[order[many]].any():
            pick = np.lexsort((order[many], prefer[order[many]], group[many]))
            head = np.concatenate(([True], group[many][pick][1:] != group[many][pick][:-1]))
            first[group[many][pick][head]] = order[many][pick][head]
        self.exact = _same(columns, self.at[order[many]], self.at[first[group[many]]])
        full = np.empty(n, np.int64)
        full[order] = first[group]
        del order, group
        self.rep = full == np.arange(n)
        self.rep_of = full if rep_of else None
        self.unique_h, self.unique_pos = sorted_h[starts], first   # sorted hashes, their reps


def pair_keys(j_columns, j_at, h_columns, h_at, prefer=None):
    """``(a, b, j rep mask)``: of the rows `j_at` and `h_at` (of their own columns) with
    equal values, one pair per value, between the representatives of each side (see
    HashedKeys; a as positions in `j_at` ascending, b in `h_at`), or None when a hash
    is shared by different values (the caller takes key_ids)."""
    dtypes = [np.result_type(a.dtype, b.dtype) for a, b in zip(j_columns, h_columns)]
    j = HashedKeys(j_columns, j_at, prefer, dtypes, rep_of=False)
    if not j.exact:
        return None
    h = HashedKeys(h_columns, h_at, None, dtypes, rep_of=False)
    if not (j.exact and h.exact):
        return None
    # both sides' hashes are sorted: a search with sorted keys (numpy starts each from
    # the last), then the pairs put in journal order by a scatter, not a sort
    place = np.searchsorted(h.unique_h, j.unique_h)
    place[place >= len(h.unique_h)] = 0
    hit = (np.flatnonzero(h.unique_h[place] == j.unique_h) if len(h.unique_h)
           else np.zeros(0, np.int64))
    partner = np.full(len(j.at), -1, np.int64)
    partner[j.unique_pos[hit]] = h.unique_pos[place[hit]]
    a = np.flatnonzero(partner >= 0)
    b = partner[a]
    del partner
    if not _same_pairs(j_columns, j.at[a], h_columns, h.at[b]):
        return None
    return a, b, j.rep


def _same_pairs(a_columns, a, b_columns, b) -> bool:
    for lo in range(0, len(a), _CHUNK):
        for x, y in zip(a_columns, b_columns):
            if not bool((x[a[lo:lo + _CHUNK]] == y[b[lo:lo + _CHUNK]]).all()):
                return False
    return True


def dedupe(ids, prefer):
    """Representative of each id (dense, from key_ids: first by `prefer` ascending,
    then position) and the position of each element's representative."""
    n = len(ids)
    if not n:
        return np.zeros(0, bool), np.zeros(0, np.int64)
    # stable sorts: among equals, the earlier position comes first
    order = (np.argsort(ids, kind="stable") if not prefer.any()
             else np.lexsort((prefer, ids)))
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_ids[1:] != sorted_ids[:-1])))
    rep_of_id = np.empty(int(sorted_ids[-1]) + 1, np.int64)
    rep_of_id[sorted_ids[starts]] = order[starts]
    rep = rep_of_id[ids]
    return rep == np.arange(n), rep


def join(j_ids, h_ids):
    """Pairs (j index, h index) of equal non-negative ids, unique on each side.

    >>> [a.tolist() for a in join(np.array([3, 0, 5]), np.array([5, 1, 3]))]
    [[0, 2], [2, 0]]
    """
    if not len(j_ids) or not len(h_ids):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    top = int(max(j_ids.max(), h_ids.max()))
    if top > 4 * (len(j_ids) + len(h_ids)):       # sparse ids (txn ids): sort them
        _, ji, hi = np.intersect1d(j_ids, h_ids, assume_unique=True, return_indices=True)
        return ji.astype(np.int64), hi.astype(np.int64)
    # dense ids (key_ids): a table from id to host position, no sort
    at = np.full(top + 1, -1, np.int64)
    at[h_ids] = np.arange(len(h_ids))
    hit = at[j_ids]
    ji = np.flatnonzero(hit >= 0)
    return ji.astype(np.int64), hit[ji]


def split_ids(j_columns, h_columns):
    """key_ids over both sides at once, split back: equal ids mean equal values."""
    ids = key_ids(*[np.concatenate((a, b)) for a, b in zip(j_columns, h_columns)])
    return ids[:len(j_columns[0])], ids[len(j_columns[0]):]


class _Joined:
    """The rows `j_idx` of `a` followed by the rows `h_idx` of `b`, read as key_ids reads a
    column (``[lo:hi]``, ``[indices]``) and made only a chunk at a time: what
    ``np.concatenate((a[j_idx], b[h_idx]))`` holds, never held whole."""

    def __init__(self, a, j_idx, b, h_idx):
        self.a, self.j_idx, self.b, self.h_idx = a, j_idx, b, h_idx
        self.nj = len(j_idx)
        self.dtype = np.result_type(a.dtype, b.dtype)

    def __len__(self):
        return self.nj + len(self.h_idx)

    def __array__(self, dtype=None, copy=None):
        return self[np.arange(len(self))]

    def __getitem__(self, key):
        if isinstance(key, slice):
            key = np.arange(*key.indices(len(self)))
        key = np.asarray(key, np.int64)
        out = np.empty(len(key), self.dtype)
        mine = key < self.nj
        out[mine] = self.a[self.j_idx[key[mine]]]
        out[~mine] = self.b[self.h_idx[key[~mine] - self.nj]]
        return out


def split_ids_at(j_table, j_idx, h_table, h_idx, names):
    """split_ids of the columns `names` of rows `j_idx` of `j_table` and `h_idx` of
    `h_table`: the picked rows are read a chunk at a time (never a copy of each side and
    then their join: a million references each)."""
    nj = len(j_idx)
    ids = key_ids(*[_Joined(j_table[name], j_idx, h_table[name], h_idx) for name in names])
    return ids[:nj], ids[nj:]


def window_pairs(j_group, j_ts, h_group, h_ts, window_us, max_rounds=100_000):
    """Pair journal and host rows of equal group id whose times are within the
    window, nearest first; rounds of proposals, conflicts won by the nearest."""
    nj, nh = len(j_group), len(h_group)
    if not nj or not nh:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    groups, inverse = np.unique(np.concatenate((j_group, h_group)), return_inverse=True)
    inverse = inverse.reshape(-1)
    t0 = min(int(j_ts.min()), int(h_ts.min()))
    span = max(int(j_ts.max()), int(h_ts.max())) - t0 + 2 * window_us + 1
    if len(groups) * span >= 2**62:
        raise PosfastError("posfast: settlement rows span too long a time to match by window")
    jk = inverse[:nj].astype(np.int64) * span + (j_ts - t0 + window_us)
    hk = inverse[nj:].astype(np.int64) * span + (h_ts - t0 + window_us)
    j_left, h_left = np.arange(nj), np.arange(nh)
    out_j, out_h = [], []
    for _ in range(max_rounds):
        if not len(j_left) or not len(h_left):
            break
        order = np.argsort(hk[h_left], kind="stable")
        h_sorted = h_left[order]
        keys = hk[h_sorted]
        q = jk[j_left]
        pos = np.searchsorted(keys, q)
        best = np.full(len(q), -1, np.int64)
        best_dt = np.full(len(q), np.iinfo(np.int64).max, np.int64)
        for cand in (pos - 1, pos):
            ok = (cand >= 0) & (cand < len(keys))
            c = np.clip(cand, 0, len(keys) - 1)
            dt = np.abs(keys[c] - q)
            better = ok & (dt <= window_us) & (dt < best_dt)
            best = np.where(better, c, best)
            best_dt = np.where(better, dt, best_dt)
        proposing = best >= 0
        if not proposing.any():
            break
        pj, ph, pdt = j_left[proposing], h_sorted[best[proposing]], best_dt[proposing]
        order = np.lexsort((pj, pdt, ph))
        ph_sorted = ph[order]
        win = order[np.concatenate(([True], ph_sorted[1:] != ph_sorted[:-1]))]
        out_j.append(pj[win])
        out_h.append(ph[win])
        # journal rows without any host row in the window never will have one
        j_left = np.setdiff1d(j_left[proposing], pj[win], assume_unique=True)
        h_left = np.setdiff1d(h_left, ph[win], assume_unique=True)
        if len(j_left):
            h_left = h_left[np.isin(inverse[nj:][h_left], inverse[:nj][j_left])]
    if not out_j:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_j), np.concatenate(out_h)
