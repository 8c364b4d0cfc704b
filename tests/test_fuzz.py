"""Fuzzing (issue 7): arbitrary bytes opened as a journal, header and index file included.

The target is tests/fuzz/fuzz_journal.py (atheris).  The default suite replays its corpus
(tests/fuzz/corpus: seeds from make_corpus.py plus every input a fuzz run ever failed on)
with the plain build; ``-m slow`` builds the core with AddressSanitizer + UBSan into
/tmp/asan-build (never over the in-tree build) and fuzzes for 60 seconds.  Regression tests
for the findings sit at the end of this file.
"""
import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
import time

import pytest

import posfast
from posfast import _core
from _child_env import CHILD_CWD, child_env

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FUZZ = os.path.join(HERE, "fuzz")
CORPUS = os.path.join(FUZZ, "corpus")
ASAN_DIR = os.environ.get("POSFAST_ASAN_BUILD", "/tmp/asan-build")

sys.path.insert(0, FUZZ)


@pytest.fixture(scope="module")
def target():
    import importlib
    saved = sys.modules.get("atheris", "absent")
    sys.modules["atheris"] = None          # replay mode: no instrumentation, plain build
    try:
        module = importlib.import_module("fuzz_journal")
    finally:
        if saved == "absent":
            del sys.modules["atheris"]
        else:
            sys.modules["atheris"] = saved
    yield module
    shutil.rmtree(os.path.dirname(module.PATH), ignore_errors=True)


def test_corpus_replays_clean(target):
    """Every corpus input: only posfast's documented errors, bounded sizes, stable reopen."""
    names = sorted(os.listdir(CORPUS))
    assert len(names) >= 12 and any(n.startswith("seed-") for n in names)
    ran = target.replay([CORPUS])
    assert ran == len(names)


def test_compact_layout_round_trips(target, tmp_path):
    path = str(tmp_path / "j.pfj")
    with posfast.Journal.create(path, capacity=8) as j:
        j.append(terminal=1, kind="sale", amount=5, payload=b"abc")
    with open(path, "rb") as f:
        raw = f.read()
    flags, idx, body = target.decode(target.encode(raw, b"IDX"))
    assert body == raw and idx == b"IDX" and flags & target.FLAG_INDEX


# ----------------------------------------------------------------------------- fuzz pass (slow)
def _sources_digest():
    h = hashlib.sha256()
    for d in ("src", "posfast"):
        for name in sorted(os.listdir(os.path.join(ROOT, d))):
            p = os.path.join(ROOT, d, name)
            if os.path.isfile(p) and name.endswith((".pyx", ".pxi", ".pxd", ".h", ".c", ".py")) \
                    and name != "_core.c":
                with open(p, "rb") as f:
                    h.update(name.encode() + f.read())
    return h.hexdigest()


def build_asan_core():
    """Build posfast._core with ASan + UBSan (clang, libFuzzer coverage) into ASAN_DIR."""
    clang = shutil.which("clang")
    if clang is None:
        pytest.skip("clang is needed for the sanitizer build (apt-get install clang)")
    stamp = os.path.join(ASAN_DIR, ".posfast-sources")
    digest = _sources_digest()
    if os.path.exists(stamp) and open(stamp).read() == digest:
        return
    shutil.rmtree(ASAN_DIR, ignore_errors=True)
    os.makedirs(ASAN_DIR)
    for item in ("setup.py", "pyproject.toml", "README.md"):
        if os.path.exists(os.path.join(ROOT, item)):
            shutil.copy(os.path.join(ROOT, item), ASAN_DIR)
    shutil.copytree(os.path.join(ROOT, "src"), os.path.join(ASAN_DIR, "src"),
                    ignore=shutil.ignore_patterns("_core.c", "*.html"))
    shutil.copytree(os.path.join(ROOT, "posfast"), os.path.join(ASAN_DIR, "posfast"),
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    flags = "-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined " \
            "-fno-omit-frame-pointer -g -O1"
    env = dict(os.environ, CC=clang, LDSHARED=clang + " -shared", CFLAGS=flags,
               LDFLAGS="-fsanitize=address,undefined")
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=ASAN_DIR,
                   env=env, check=True, capture_output=True, timeout=1800)
    with open(stamp, "w") as f:
        f.write(digest)


def run_fuzzer(seconds, workdir, extra=()):
    """Time-boxed atheris run on the sanitizer build; returns (returncode, output, executions)."""
    try:
        import atheris
    except ImportError:
        pytest.skip("atheris is not installed (pip install atheris)")
    preload = os.path.join(atheris.path(), "asan_with_fuzzer.so")
    if not os.path.exists(preload):
        pytest.skip("atheris has no asan_with_fuzzer.so")
    build_asan_core()
    corpus = os.path.join(workdir, "corpus")
    shutil.copytree(CORPUS, corpus)
    artifacts = os.path.join(workdir, "artifacts") + os.sep
    os.makedirs(artifacts)
    env = dict(os.environ, LD_PRELOAD=preload, PYTHONPATH=ASAN_DIR,
               ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    cmd = [sys.executable, os.path.join(FUZZ, "fuzz_journal.py"), "-max_total_time=%d" % seconds,
           "-max_len=24000", "-len_control=0", "-timeout=30", "-rss_limit_mb=3000",
           "-malloc_limit_mb=1024", "-print_final_stats=1", "-artifact_prefix=" + artifacts,
           *extra, corpus]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 600)
    out = proc.stdout + proc.stderr
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", out)
    found = os.listdir(artifacts)
    return proc.returncode, out, int(m.group(1)) if m else 0, found


@pytest.mark.slow
def test_fuzz_pass_under_asan_and_ubsan(tmp_path):
    seconds = int(os.environ.get("POSFAST_FUZZ_SECONDS", "60"))
    code, out, executions, found = run_fuzzer(seconds, str(tmp_path))
    try:
        import _powerloss
        _powerloss.report("fuzz-slow", seconds=seconds, executions=executions, findings=len(found))
    except ImportError:
        pass
    assert code == 0 and not found, "fuzzer finding %s:\n%s" % (found, out[-6000:])
    assert executions > 1000


# ----------------------------------------------------------------------------- regressions
def _reseal(path, slot, edit, slot_size=128):
    """Edit the head in `slot` and recompute its CRC: a crafted record that passes the check."""
    with open(path, "r+b") as f:
        jid = f.read(128)[40:56]
        off = _core.DATA_OFFSET + slot * slot_size
        f.seek(off)
        head = bytearray(f.read(128))
        edit(head)
        plen = struct.unpack_from("<H", head, 4)[0]
        f.seek(off + 128)
        payload = f.read(plen)
        crc = _core.crc32c(bytes(head[4:]) + payload, _core.crc32c(jid))
        struct.pack_into("<I", head, 0, crc)
        f.seek(off)
        f.write(head)


def _every_other_damaged(path, n):
    with posfast.Journal.create(path, capacity=n, durability="none") as j:
        for start in range(0, n - 2, 2):        # one commit group per pair
            j.append_many({"terminal": [1, 2], "kind": "sale", "amount": [start, start + 1]})
    os.unlink(path + ".idx")
    with open(path, "r+b") as f:
        for slot in range(0, n - 4, 2):          # first record of each pair: amount byte flipped
            f.seek(_core.DATA_OFFSET + slot * 128 + 56)
            f.write(b"\xff")


@pytest.mark.parametrize("n", [2_000, pytest.param(64_000, marks=pytest.mark.slow)])
def test_many_damaged_records_open_in_linear_time(tmp_path, n):
    """Regression: recovery rescanned a whole lap at every gap, so a file with many damaged
    records took quadratic time to open (16k slots: 5 s, 64k: ~80 s, 1M: hours); now 64k
    slots with every other record damaged open in a fraction of a second."""
    path = str(tmp_path / "gaps.pfj")
    _every_other_damaged(path, n)
    started = time.perf_counter()
    with posfast.Journal.open(path, readonly=True) as j:
        took = time.perf_counter() - started
        assert j.head_seq == n - 2
        assert [seq for seq, _, _ in j._ring.damaged] == list(range(1, n - 4, 2))
    if n > 10_000:
        assert took < 10.0, "open took %.1f s" % took


def test_a_crafted_head_claiming_a_huge_seq_is_not_a_continuation(tmp_path):
    """Regression: after a damaged record, a record that passes its CRC but claims seq 2**62
    made recovery note 2**62 lost seqs (memory and time without bound).  The lost seqs must
    fit in the slots between; such a record is not one of this ring's.  (Opened in a child
    with a memory cap, so a regression fails instead of taking the machine down.)"""
    path = str(tmp_path / "huge.pfj")
    with posfast.Journal.create(path, capacity=16) as j:
        for n in range(6):
            j.append(terminal=1, kind="sale", amount=n)
    os.unlink(path + ".idx")
    with open(path, "r+b") as f:                # damage seq 5 (slot 4)
        f.seek(_core.DATA_OFFSET + 4 * 128 + 56)
        f.write(b"\xff")
    _reseal(path, 5, lambda h: struct.pack_into("<Q", h, 8, 2 ** 62))      # seq 6 -> 2**62
    child = (
        "import resource, sys, posfast\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31))\n"
        "with posfast.Journal.open(sys.argv[1]) as j:\n"
        "    print(j.head_seq, len(j._ring.damaged), j.verify().ok)\n")
    env = child_env()
    proc = subprocess.run([sys.executable, "-c", child, path], capture_output=True, text=True,
                          timeout=60, env=env, cwd=CHILD_CWD)
    assert proc.returncode == 0, proc.stderr[-2000:]
    head, damaged, ok = proc.stdout.split()
    assert int(head) == 4 and int(damaged) == 0 and ok == "True"   # the damaged tail is dropped


@pytest.mark.parametrize("field, offset, value", [
    ("utc offset", 64, 1795162112), ("day start", 68, 24 * 60), ("retention", 72, 7)])
def test_a_header_with_an_impossible_day_rule_or_retention_is_corrupt(tmp_path, field, offset,
                                                                      value):
    """Fuzz finding: a header copy with a valid CRC but a UTC offset of 1795162112 minutes made
    Journal.open raise a bare ValueError from DayRule (and retention 7 a KeyError later, in
    status()); both header copies are checked like the sizes: CorruptRecord naming the file."""
    path = str(tmp_path / "hdr.pfj")
    posfast.Journal.create(path, capacity=8).close()
    with open(path, "r+b") as f:
        for copy in (0, 4096):
            f.seek(copy)
            head = bytearray(f.read(256))
            struct.pack_into("<I", head, offset, value & 0xFFFFFFFF)
            struct.pack_into("<I", head, 252, _core.crc32c(bytes(head[:252])))     # (format 2)
            f.seek(copy)
            f.write(head)
    for readonly in (True, False):
        with pytest.raises(posfast.CorruptRecord, match=r"hdr\.pfj holds an impossible day rule"):
            posfast.Journal.open(path, readonly=readonly)


def test_a_crafted_head_with_seq_beyond_its_position_is_not_a_record(tmp_path):
    """Fuzz finding: a head with a valid CRC claiming seq 1.7e19 at position 5.4e18 became the
    newest record (head_seq near 2**64) and close() then failed packing it into the index with
    struct.error.  Every record takes a slot, so seq <= pos: such a head is not a record."""
    path = str(tmp_path / "seq.pfj")
    with posfast.Journal.create(path, capacity=8) as j:
        for n in range(3):
            j.append(terminal=1, kind="sale", amount=n)
    os.unlink(path + ".idx")
    # slot 3 (empty): a head for position 5.4e18 (slot 3 of a far lap) claiming seq 1.7e19
    pos = 5352056807292848714 - (5352056807292848714 - 4) % 8
    _reseal(path, 3, lambda h: (struct.pack_into("<Q", h, 8, 16717361816799281152),
                                struct.pack_into("<Q", h, 16, pos)))
    with posfast.Journal.open(path) as j:
        assert (j.oldest_seq, j.head_seq) == (1, 3) and j.verify().ok
    with posfast.Journal.open(path) as j:                   # the index close() saved loads
        assert j.head_seq == 3


def test_append_with_64k_slots_allocates_what_it_writes(tmp_path):
    """Fuzz finding (out-of-memory: malloc(2155937919) in append): append took a buffer of
    65536 slots whatever it wrote, 4 GiB with the 64 KiB slots create allows.  Appending to
    such a journal under a 1.5 GiB address-space cap must work."""
    path = str(tmp_path / "big.pfj")
    posfast.Journal.create(path, capacity=4, slot_size=65536, max_payload=65535).close()
    child = (
        "import resource, sys, posfast\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29))\n"
        "with posfast.Journal.open(sys.argv[1]) as j:\n"
        "    j.append(terminal=1, kind='note', payload=b'x' * 65535)\n"
        "    j.append_many({'terminal': [1, 2], 'kind': 'sale'})\n"
        "    print(j.head_seq, len(j.get(1).payload))\n")
    env = child_env()
    proc = subprocess.run([sys.executable, "-c", child, path], capture_output=True, text=True,
                          timeout=60, env=env, cwd=CHILD_CWD)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["3", "65535"]


def test_heads_ahead_that_recovery_does_not_adopt_are_dropped(tmp_path):
    """Fuzz finding: recovery stopped at seq 3 (its head sat one slot too far, at position 4)
    and left the heads ahead of the tail in place; after the writer appended seq 3, the next
    open took the stale seq 5 for a record behind damage (seq 4 "lost") -- a record this
    history never wrote.  Heads ahead that recovery does not adopt are dropped like a torn tail."""
    path = str(tmp_path / "ahead.pfj")
    with posfast.Journal.create(path, capacity=12) as j:
        for n in range(5):
            j.append(terminal=1, kind="sale", amount=n)
    os.unlink(path + ".idx")
    with open(path, "r+b") as f:                 # move seq 3's head from slot 2 to slot 3
        f.seek(_core.DATA_OFFSET + 2 * 128)
        head3 = f.read(128)
        f.seek(_core.DATA_OFFSET + 2 * 128)
        f.write(bytes(128))
        f.seek(_core.DATA_OFFSET + 3 * 128)
        f.write(head3)
    _reseal(path, 3, lambda h: struct.pack_into("<Q", h, 16, 4))          # claims position 4
    with posfast.Journal.open(path) as j:
        assert j.head_seq == 2 and sorted(s for s, _ in j._ring.torn) == [3, 5]
        assert j.append(terminal=9, kind="note") == 3
    with posfast.Journal.open(path) as j:
        assert j.head_seq == 3 and j.get(3).terminal == 9 and j.verify().ok
        with pytest.raises(KeyError):
            j.get(5)


def test_a_journal_at_the_end_of_its_positions_refuses_appends(tmp_path):
    """Fuzz finding: a crafted head at position 2**62 (the most a head may claim) was adopted,
    and the writer appended past it, at a position no open accepts, so the record it had
    acknowledged was gone on reopen.  Appends that would go past 2**62 are refused."""
    path = str(tmp_path / "end.pfj")
    with posfast.Journal.create(path, capacity=12, retention="overwrite") as j:
        j.append(terminal=1, kind="sale", amount=1)
    os.unlink(path + ".idx")
    slot = (2 ** 62 - 1) % 12                            # the slot of position 2**62
    with open(path, "r+b") as f:                         # a copy of seq 1's head there...
        f.seek(_core.DATA_OFFSET)
        head = f.read(128)
        f.seek(_core.DATA_OFFSET + slot * 128)
        f.write(head)
    _reseal(path, slot, lambda h: (struct.pack_into("<Q", h, 8, 2),            # ...as seq 2
                                   struct.pack_into("<Q", h, 16, 2 ** 62)))    # at 2**62
    with posfast.Journal.open(path) as j:
        assert j.head_seq == 2 and j._ring.next_pos == 2 ** 62 + 1
        with pytest.raises(posfast.JournalFull, match="used up its record positions"):
            j.append(terminal=1, kind="sale", amount=2)
    with posfast.Journal.open(path) as j:
        assert j.head_seq == 2
