"""Shared helpers of the core tests: file surgery on ring files and the brute-force
index check.  (Fixtures here are opt-in; nothing is autouse.)"""
import os
import shutil
import struct
import uuid

import numpy as np
import pytest
from pyroaring import BitMap64

import posfast
from posfast import CorruptRecord, _core
from posfast.index import Index

from _writer_child import MAX_PAYLOAD, columns_for, expected, expected_dict  # noqa: F401

try:
    from hypothesis import HealthCheck, settings
except ImportError:             # (only the property tests need it)
    pass
else:
    # Every property test asserts what it finds, never how fast: no per-example deadline and
    # no too-slow health check, so a slow CPU (armhf under emulation) cannot fail them.  A
    # test's own @settings still override this for what they name.
    settings.register_profile("posfast", deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("posfast")

FIXED_JID = uuid.UUID("5f0c7a3e-2b1d-4c8e-9a6f-0123456789ab")
DATA_OFFSET = _core.DATA_OFFSET
HEAD = _core.HEAD_SIZE


def ring_file_offset(journal, seq):
    """Byte offset in the file of the head of live record `seq`."""
    return DATA_OFFSET + journal._ring.slot_of(seq) * journal.slot_size


def record_span(journal, seq):
    """File offsets of every byte of record `seq` (head + payload, wrapping at the ring end)."""
    slot = journal._ring.slot_of(seq)
    head_offset = DATA_OFFSET + slot * journal.slot_size
    (plen,) = struct.unpack("<H", read_at(journal.path, head_offset + 4, 2))
    if journal._ring.version >= 2:      # format 2: the extension lies between head and payload
        plen += struct.unpack("<H", read_at(journal.path, head_offset + 100, 2))[0]
    ring_bytes = journal.capacity * journal.slot_size
    start = slot * journal.slot_size
    return [DATA_OFFSET + (start + i) % ring_bytes for i in range(HEAD + plen)]


def data_script(name):
    """The tests/data script `name` (make_golden, make_golden_v2) loaded as a module."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", name + ".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def file_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def read_at(path, offset, n):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(n)


def write_at(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def flip_byte(path, offset, mask=0x40):
    old = read_at(path, offset, 1)[0]
    write_at(path, offset, bytes([old ^ mask]))


def crash_copy(path, dest):
    """Copy a journal file as a crash would leave it (no index)."""
    shutil.copyfile(path, dest)
    return dest


def drop_without_close(journal):
    """Simulate the writer process dying: no index save, lock gone (a SIGKILL's leftovers)."""
    journal._stop.set()
    journal._ring.close()          # fsync mode: nothing pending: closes the fd (and its lock)


def record_dicts(journal, seqs):
    return [journal.get(int(s)).to_dict() for s in seqs]


def live_rows(journal):
    """Every live, intact record as RECORD_DTYPE rows, by reading each seq (no index)."""
    ring = journal._ring
    seqs = np.arange(journal.oldest_seq, journal.head_seq + 1, dtype=np.uint64)
    out = np.zeros(len(seqs), dtype=posfast.RECORD_DTYPE)
    status = ring.read_rows(seqs, out.view(np.uint8).reshape(len(seqs), posfast.RECORD_DTYPE.itemsize))
    return out[status == 0]


def _without(index, bad):
    """A copy of `index` without the seqs in `bad` (damaged records: indexed, never returned)."""
    out = Index()
    drop = BitMap64(bad)
    for name in ("by_day", "by_terminal", "by_kind"):
        setattr(out, "_" + name, {k: BitMap64(bm) - drop for k, bm in getattr(index, name).items()})
    return out


def assert_index_matches_scan(journal):
    """The bitmap index gives exactly what a brute-force numpy scan of the live rows gives.

    Damaged live records are in neither: a scan cannot read them and lookups skip them."""
    rows = live_rows(journal)
    bad = sorted(set(range(journal.oldest_seq, journal.head_seq + 1)) - set(rows["seq"].tolist()))
    everything = journal.query()
    assert everything["seq"].tolist() == rows["seq"].tolist()
    assert everything.tolist() == rows.tolist()     # field by field (padding bytes are not data)
    for name in ("day", "terminal", "kind"):
        for value in np.unique(rows[name]).tolist():
            got = journal.query(**{name: int(value)})["seq"].tolist()
            assert got == rows["seq"][rows[name] == value].tolist(), (name, value)
            good = int((rows[name] == value).sum())
            assert good <= journal.count(**{name: int(value)}) <= good + len(bad)
    for terminal in np.unique(rows["terminal"]).tolist():
        mine = rows[rows["terminal"] == terminal]
        for kind in [None] + np.unique(mine["kind"]).tolist():
            want = mine if kind is None else mine[mine["kind"] == kind]
            got = journal.query(terminal=int(terminal), kind=kind)["seq"].tolist()
            assert got == want["seq"].tolist()
            try:
                newest = journal.last(terminal=int(terminal), kind=kind)
            except CorruptRecord:
                assert bad and max(bad) > got[-1]      # the newest of them is the damaged one
                continue
            assert newest is not None and newest.seq == got[-1]
    # a value nobody used gives nothing
    assert len(journal.query(terminal=999_999)) == 0
    rebuilt = Index()
    rebuilt.add_rows(rows)
    live_index = _without(journal.index, bad) if bad else journal.index
    assert rebuilt.equals(live_index, journal.oldest_seq)
    assert live_index.equals(rebuilt, journal.oldest_seq)


def index_equal(a, b, oldest):
    return a.equals(b, oldest) and b.equals(a, oldest)


def state_of(journal):
    """What a user would compare between two opens of the same file."""
    report = journal.verify()
    rows = journal.query()
    return {
        "head": journal.head_seq,
        "oldest": journal.oldest_seq,
        "watermark": journal.sync_watermark,
        "ok": report.ok,
        "problems": sorted((p.seq, p.slot, p.code) for p in report.problems),
        "rows": rows.tolist(),
        "payloads": journal.payloads(rows["seq"]),
    }


def header_bytes(path, copy=0):
    return read_at(path, copy * _core.HEADER_COPY_SIZE, 256)     # (format 1 uses the first 128)


def unpack_header(raw):
    """Header copy fields at the offsets pf_format.h documents (little-endian)."""
    magic, version, size, generation, slot, max_payload, capacity = struct.unpack_from("<8sIIQIIQ", raw, 0)
    jid = raw[40:56]
    created, off_min, start_min, retention, flags, watermark = struct.unpack_from("<qiiIIQ", raw, 56)
    (crc,) = struct.unpack_from("<I", raw, 124)
    return {"magic": magic, "version": version, "header_size": size, "generation": generation,
            "slot_size": slot, "max_payload": max_payload, "capacity": capacity,
            "journal_id": uuid.UUID(bytes=jid), "created_us": created, "day_offset_min": off_min,
            "day_start_min": start_min, "retention": retention, "flags": flags,
            "sync_watermark": watermark, "crc": crc}


def append_expected(journal, seqs):
    """Append the deterministic records of `seqs` (consecutive, starting at head + 1)."""
    seqs = list(seqs)
    assert seqs[0] == journal.head_seq + 1
    if len(seqs) == 1:
        fields, payload = expected(seqs[0], journal.max_payload)
        return range(journal.append(payload=payload, **fields), seqs[0] + 1)
    columns, payloads = columns_for(seqs, journal.max_payload)
    return journal.append_many(columns, payloads)


@pytest.fixture
def jpath(tmp_path):
    return str(tmp_path / "till.pfj")


@pytest.fixture
def make_journal(jpath):
    opened = []

    def make(**kw):
        kw.setdefault("capacity", 64)
        kw.setdefault("max_payload", MAX_PAYLOAD)
        kw.setdefault("journal_id", FIXED_JID)
        journal = posfast.Journal.create(kw.pop("path", jpath), **kw)
        opened.append(journal)
        return journal

    yield make
    for journal in opened:
        journal.close()


def _enum_name(enum_cls, value):
    try:
        return enum_cls(value).name.lower()
    except ValueError:
        return str(value)


def totals_of_payments(pays):
    """{currency: CurrencyTotals} of a ``Journal.payments()`` array, by plain Python: what
    ``Journal.totals`` must give for the same day and terminal."""
    from posfast.totals import CurrencyTotals, Sum
    names = pays.dtype.names
    rows = [dict(zip(names, r)) for r in pays.tolist()]
    out = {}
    for currency in sorted({p["currency"] for p in rows}):
        mine = [p for p in rows if p["currency"] == currency]

        def by(key):
            groups = {}
            for p in mine:
                k = key(p)
                c, a, n = groups.get(k, (0, 0, 0))
                groups[k] = (c + 1, a + p["amount"], n + p["net"])
            return {k: Sum(*v) for k, v in groups.items()}
        out[currency] = CurrencyTotals(
            len(mine), sum(p["amount"] for p in mine), sum(p["net"] for p in mine),
            by(lambda p: _enum_name(posfast.State, p["state"])),
            by(lambda p: _enum_name(posfast.Kind, p["kind"])),
            by(lambda p: _enum_name(posfast.Method, p["method"])),
            by(lambda p: p["terminal"]))
    return out


# ---------------------------------------------------------------- PostgreSQL (tests/_pg.py)
@pytest.fixture(scope="module")
def server_dsn():
    """A real PostgreSQL on loopback (started by tests/_pg.py), or skip with the reason."""
    pytest.importorskip("psycopg", reason="PostgresTarget needs psycopg 3 (pip install 'psycopg[binary]')")
    import _pg
    dsn = _pg.base_dsn()
    if dsn is None:
        pytest.skip(_pg.SKIP_REASON)
    return dsn


@pytest.fixture
def dsn(server_dsn):
    """A fresh database on it."""
    import _pg
    return _pg.fresh_database(server_dsn)
