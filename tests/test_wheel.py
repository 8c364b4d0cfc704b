"""What a built wheel must get right on every platform it is built for: build_info
names the checksum paths this CPU really uses, the compiled core matches the
format, and journal sizes are handled in 64-bit offsets (refused clearly where a
32-bit terminal cannot map them).  cibuildwheel and .ci/wheel-check run this
file, with the rest of the suite, against the installed wheel."""
import importlib.machinery
import json
import os
import platform
import struct
import sys
import uuid

import pytest

import posfast
from posfast import FormatVersionError, Journal, _core

MACHINE = platform.machine().lower()
X86 = MACHINE in ("x86_64", "amd64", "i386", "i686", "x86")
ARM64 = MACHINE in ("aarch64", "arm64", "armv8l")
BITS = struct.calcsize("P") * 8


def _cpu_flags():
    """x86 feature words from /proc/cpuinfo (Linux), else None."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return None
    words = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "flags":
            words.update(value.split())
    return words or None


def _arm64_hwcaps():
    """AT_HWCAP from /proc/self/auxv: what the kernel (or qemu-user) says this CPU has."""
    try:
        with open("/proc/self/auxv", "rb") as f:
            data = f.read()
    except OSError:
        return None
    for key, value in struct.iter_unpack("<QQ", data[:len(data) // 16 * 16]):
        if key == 16:                      # AT_HWCAP
            return value
    return None


def test_build_info_reports_the_build():
    info = posfast.build_info()
    assert info["version"] == posfast.__version__
    assert info["format_version"] == _core.FORMAT_VERSION == 2
    assert info["core"] == "compiled"
    assert info["machine"] == platform.machine()
    assert info["python"] == platform.python_version()


def test_build_info_names_the_checksum_paths_this_cpu_uses():
    info = posfast.build_info()
    if X86 and BITS == 64:
        crc, sha = {"sse4.2", "table"}, {"sha-ni", "portable"}
    elif ARM64 and BITS == 64:
        crc, sha = {"armv8", "table"}, {"armv8-ce", "portable"}
    else:                                    # armv7l and anything else: the portable code
        crc, sha = {"table"}, {"portable"}
    assert info["crc32c"] in crc
    assert info["sha256"] in sha
    if not sys.platform.startswith("linux"):
        return
    # the run-time dispatch must take the hardware path whenever the CPU has it
    if X86 and BITS == 64:
        flags = _cpu_flags()
        if flags is not None:
            assert (info["crc32c"] == "sse4.2") == ("sse4_2" in flags)
            assert (info["sha256"] == "sha-ni") == ("sha_ni" in flags)
    elif ARM64 and BITS == 64:
        hwcap = _arm64_hwcaps()          # /proc/cpuinfo is the host's under qemu-user
        if hwcap is not None:
            assert (info["crc32c"] == "armv8") == bool(hwcap & (1 << 7))     # HWCAP_CRC32
            assert (info["sha256"] == "armv8-ce") == bool(hwcap & (1 << 6))  # HWCAP_SHA2


def test_hardware_and_portable_paths_give_the_same_checksums():
    data = bytes(range(256)) * 41 + b"tail"
    fast = (_core.crc32c(data), _core.sha256(data), _core.crc32c(data[3:]))
    _core._force_portable_checksums(True)
    try:
        assert posfast.build_info()["crc32c"] == "table"
        assert posfast.build_info()["sha256"] == "portable"
        assert (_core.crc32c(data), _core.sha256(data), _core.crc32c(data[3:])) == fast
    finally:
        _core._force_portable_checksums(False)
    assert _core.crc32c(b"123456789") == 0xE3069283


def test_installed_distribution_matches_the_package():
    try:
        from importlib.metadata import PackageNotFoundError, distribution
        dist = distribution("posfast")
    except PackageNotFoundError:
        pytest.skip("posfast is imported from a source tree, not an installed wheel")
    source_tree = os.path.dirname(os.path.dirname(os.path.abspath(posfast.__file__)))
    if os.path.exists(os.path.join(source_tree, "setup.py")) or \
            json.loads(dist.read_text("direct_url.json") or "{}").get("dir_info", {}).get("editable"):
        pytest.skip("posfast runs from its source tree (pip install -e): no wheel to check")
    if os.path.dirname(os.path.abspath(posfast.__file__)) not in \
            [os.path.dirname(os.path.abspath(str(dist.locate_file("posfast/__init__.py"))))]:
        pytest.skip("an installed posfast exists but this run imports another copy")
    assert dist.version == posfast.__version__
    files = {str(f) for f in dist.files or ()}
    assert any(f.startswith("posfast/_core") for f in files)
    assert "posfast/py.typed" in files


def test_core_is_a_compiled_extension_of_this_interpreter():
    assert any(_core.__file__.endswith(suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES)
    assert (_core.ROW_SIZE, _core.HEAD_SIZE, _core.DATA_OFFSET) == (120, 128, 8192)
    assert posfast.RECORD_DTYPE.itemsize == _core.ROW_SIZE


def _sparse_journal(path, total_bytes, slot_size=65536):
    """A valid empty journal of `total_bytes`, made sparse (no blocks written)."""
    capacity = (total_bytes - _core.DATA_OFFSET) // slot_size
    jid = uuid.uuid4().bytes
    with open(path, "wb") as f:
        for copy in range(2):
            f.seek(copy * _core.HEADER_COPY_SIZE)
            f.write(_core.Ring.encode_header(copy, slot_size, 4096, capacity, jid, 0, 0, 0, 1, 0))
        f.truncate(_core.DATA_OFFSET + capacity * slot_size)
    return capacity


def test_journal_over_1_gib_opens_on_64_bit_and_is_refused_clearly_on_32_bit(tmp_path):
    path = str(tmp_path / "big.pfj")
    try:
        capacity = _sparse_journal(path, (1 << 30) + 2 * 65536 + _core.DATA_OFFSET)   # just over 1 GiB
    except OSError as exc:
        pytest.skip("no sparse 1 GiB file here: %s" % exc)
    assert os.path.getsize(path) > 1 << 30
    if BITS < 64:
        with pytest.raises(FormatVersionError, match="64-bit"):
            Journal.open(path)
        return
    with Journal.open(path, durability="none") as j:
        assert j.capacity == capacity and j.head_seq == 0
        seqs = [j.append(terminal=1, kind="sale", state="approved", amount=100 * k, currency=156)
                for k in range(1, 4)]
    with Journal.open(path, readonly=True) as j:
        assert [j.get(s).amount for s in seqs] == [100, 200, 300]
        assert j.verify().ok


@pytest.mark.slow
@pytest.mark.skipif(BITS < 64, reason="journals over 1 GiB need a 64-bit CPU")
def test_records_past_the_2_gib_offset_round_trip(tmp_path):
    """64-bit file offsets end to end: a 2.25 GiB ring written past its 2 GiB mark (about 2 GiB
    of page-cache writes), reopened by a scan and by the index."""
    path = str(tmp_path / "huge.pfj")
    try:
        capacity = _sparse_journal(path, (9 << 28) + _core.DATA_OFFSET)
    except OSError as exc:
        pytest.skip("no sparse 2.25 GiB file here: %s" % exc)
    past = (2 << 30) // 65536 + 10                       # first slot wholly past 2 GiB, and some
    with Journal.open(path, durability="none") as j:
        for start in range(0, past + 5, 4096):
            n = min(4096, past + 5 - start)
            j.append_many({"terminal": 1, "kind": "sale", "amount": list(range(start, start + n))})
        tail = j.head_seq
        assert j.get(tail).amount == tail - 1
        assert (tail - 1) * 65536 + _core.DATA_OFFSET > 2 << 30
    os.unlink(path + ".idx")                             # recovery by scan
    with Journal.open(path, readonly=True) as j:
        assert j.head_seq == tail and j.get(tail).amount == tail - 1
        assert j.query(terminal=1)["amount"][-1] == tail - 1
    assert capacity > tail
