"""CRC-32C and SHA-256 as exposed by posfast._core (src/pf_crc32c.c, src/pf_sha256.c).

Every check runs twice: with the portable C paths forced and with the path the CPU
selects, so a broken hardware path cannot hide behind a working portable one (or the
other way round).  The C-level suite with misaligned inputs and benchmarks is
tests/c/test_checksums.c.
"""
import contextlib
import hashlib
import platform
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

core = pytest.importorskip("posfast._core")

PATHS = pytest.mark.parametrize("forced", [True, False], ids=["portable", "auto"])

# st.binary() alone rarely goes past a few dozen bytes; the hardware loops and the
# SHA-256 block boundaries need lengths spread over the whole range.
blobs = st.integers(0, 2000).flatmap(lambda n: st.binary(min_size=n, max_size=n))


@contextlib.contextmanager
def checksum_path(forced):
    core._force_portable_checksums(forced)
    try:
        yield
    finally:
        core._force_portable_checksums(False)


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        table.append(c)
    return table


_TABLE = _crc32c_table()


def ref_crc32c(data, crc=0):
    """Byte-at-a-time table CRC-32C, independent of the C code."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


CRC_VECTORS = [
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),  # RFC 3720 B.4
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
]

SHA_VECTORS = [  # FIPS 180-2 appendix B
    (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    (
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    ),
    (b"a" * 1_000_000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
]


def test_reference_crc_matches_vectors():
    # The pure-Python reference is only useful if it is itself right.
    for data, expected in CRC_VECTORS:
        assert ref_crc32c(data) == expected


@PATHS
@pytest.mark.parametrize("data,expected", CRC_VECTORS, ids=["ascii", "zeros", "ones", "incr", "decr"])
def test_crc32c_vectors(forced, data, expected):
    with checksum_path(forced):
        got = core.crc32c(data)
    assert isinstance(got, int)
    assert got == expected, f"{got:#010x} != {expected:#010x}"


@PATHS
def test_crc32c_empty_keeps_running_value(forced):
    with checksum_path(forced):
        assert core.crc32c(b"") == 0
        assert core.crc32c(b"", 0x12345678) == 0x12345678
        assert core.crc32c(b"", crc=0xFFFFFFFF) == 0xFFFFFFFF


@PATHS
@pytest.mark.parametrize("data,expected", SHA_VECTORS, ids=["empty", "abc", "448bit", "million_a"])
def test_sha256_vectors(forced, data, expected):
    with checksum_path(forced):
        got = core.sha256(data)
    assert isinstance(got, bytes) and len(got) == 32
    assert got.hex() == expected


def _cpu_flags():
    """CPU feature words from /proc/cpuinfo (Linux only; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return set()
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def test_checksum_impl_names():
    with checksum_path(True):
        assert core.checksum_impl() == {"crc32c": "table", "sha256": "portable"}
    auto = core.checksum_impl()
    assert auto["crc32c"] in ("sse4.2", "armv8", "table")
    assert auto["sha256"] in ("sha-ni", "armv8-ce", "portable")

    # Where the CPU advertises the instructions, a build that ignores them is a bug
    # (e.g. the hardware path compiled out by build flags).
    flags = _cpu_flags()
    machine = platform.machine().lower()
    if sys.platform.startswith("linux") and machine in ("x86_64", "amd64", "i686", "i386"):
        if "sse4_2" in flags:
            assert auto["crc32c"] == "sse4.2"
        if "sha_ni" in flags and "sse4_1" in flags and "ssse3" in flags:
            assert auto["sha256"] == "sha-ni"
    elif sys.platform.startswith("linux") and machine in ("aarch64", "arm64"):
        if "crc32" in flags:
            assert auto["crc32c"] == "armv8"
        if "sha2" in flags:
            assert auto["sha256"] == "armv8-ce"
    elif sys.platform == "darwin" and machine == "arm64":
        assert auto == {"crc32c": "armv8", "sha256": "armv8-ce"}


def test_force_portable_is_reversible():
    auto = core.checksum_impl()
    core._force_portable_checksums(True)
    core._force_portable_checksums(False)
    assert core.checksum_impl() == auto


@PATHS
@settings(max_examples=200, deadline=None)
@given(data=blobs)
def test_matches_references(forced, data):
    with checksum_path(forced):
        assert core.crc32c(data) == ref_crc32c(data)
        assert core.sha256(data) == hashlib.sha256(data).digest()


@settings(max_examples=200, deadline=None)
@given(data=blobs, seed_crc=st.integers(0, 0xFFFFFFFF))
def test_paths_agree(data, seed_crc):
    with checksum_path(True):
        portable = (core.crc32c(data, seed_crc), core.sha256(data))
    with checksum_path(False):
        auto = (core.crc32c(data, seed_crc), core.sha256(data))
    assert auto == portable


@PATHS
@settings(max_examples=200, deadline=None)
@given(data=blobs, cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_crc32c_chaining(forced, data, cuts):
    bounds = [0] + sorted(c for c in cuts if c <= len(data)) + [len(data)]
    with checksum_path(forced):
        crc = 0
        for lo, hi in zip(bounds, bounds[1:]):
            crc = core.crc32c(data[lo:hi], crc)
        assert crc == core.crc32c(data) == ref_crc32c(data)


@PATHS
def test_misaligned_buffers(forced):
    """Offsets 0..15 into one buffer, if _core accepts buffer objects (not promised)."""
    blob = bytes((i * 131 + 7) & 0xFF for i in range(600))
    view = memoryview(blob)
    with checksum_path(forced):
        try:
            core.crc32c(view[1:9])
        except TypeError:
            pytest.skip("_core.crc32c takes bytes only")
        for off in range(16):
            for length in (0, 1, 3, 7, 8, 9, 63, 64, 65, 128, 129, 500):
                chunk = view[off:off + length]
                assert core.crc32c(chunk) == ref_crc32c(bytes(chunk))
                assert core.sha256(chunk) == hashlib.sha256(chunk).digest()
