"""No second writer, ever: the writer lock belongs to the journal file itself (its inode).

posfast 0.1.0 locked a side file `<path>.lock` named after the path it was given: a symlink, a
hard link, a bind mount or a deleted `.lock` gave a second writer, both writers handed out the
same seqs into the same slots, and half the fsync-acknowledged records were gone.  Every test
here failed on 0.1.0.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

import posfast
from posfast import JournalLocked, _core
from _child_env import CHILD_CWD, child_env

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = child_env()       # the posfast this process imported (tests/_child_env.py)


def _fingerprint(path):
    """Everything a losing writer could have touched: the journal's bytes and its side files."""
    directory = os.path.dirname(path)
    out = {}
    for name in sorted(os.listdir(directory)):
        full = os.path.join(directory, name)
        if os.path.isfile(full) and not os.path.islink(full):
            with open(full, "rb") as f:
                out[name] = (hashlib.sha256(f.read()).hexdigest(), os.stat(full).st_mtime_ns)
    return out


def _refused(path, holder_pid):
    with pytest.raises(JournalLocked) as err:
        posfast.Journal.open(path)
    assert "process %d" % holder_pid in str(err.value)
    return str(err.value)


@pytest.fixture
def writer(make_journal):
    j = make_journal()
    for amount in (100, 200, 300):
        j.append(terminal=1, kind="sale", state="approved", amount=amount)
    j.flush()
    return j


def test_symlink_gives_no_second_writer(writer, tmp_path):
    link = str(tmp_path / "alias.pfj")
    os.symlink(writer.path, link)
    before = _fingerprint(writer.path)
    message = _refused(link, os.getpid())
    assert link in message                       # names the path the user gave
    assert _fingerprint(writer.path) == before   # the loser wrote no byte
    assert writer.append(terminal=1, kind="sale", amount=400) == 4


def test_symlink_writer_locks_out_the_real_path(make_journal, tmp_path):
    j = make_journal()
    j.close()
    link = str(tmp_path / "alias.pfj")
    os.symlink(j.path, link)
    with posfast.Journal.open(link) as through_link:
        through_link.append(terminal=2, kind="sale", amount=5)
        _refused(j.path, os.getpid())
    with posfast.Journal.open(j.path) as again:
        assert again.last(terminal=2).amount == 5


def test_hard_link_gives_no_second_writer(writer, tmp_path):
    other_name = str(tmp_path / "hardlink.pfj")
    os.link(writer.path, other_name)
    before = _fingerprint(writer.path)
    _refused(other_name, os.getpid())
    assert _fingerprint(writer.path) == before


def test_deleting_a_lock_file_frees_nothing(writer):
    # 0.1.0's reaction to a "stale lock": rm journal.lock, then open -> a second writer
    assert not os.path.exists(writer.path + ".lock")     # there is no side file to delete
    with open(writer.path + ".lock", "w") as f:           # nor one to plant or remove
        f.write("12345\n")
    os.remove(writer.path + ".lock")
    _refused(writer.path, os.getpid())


def test_planted_lock_symlink_is_never_followed(make_journal, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("the merchant's price list\n")
    path = str(tmp_path / "j.pfj")
    os.symlink(victim, path + ".lock")                  # 0.1.0 truncated the victim to 0 bytes
    j = make_journal(path=path)
    j.append(terminal=1, kind="sale", amount=1)
    j.close()
    assert victim.read_text() == "the merchant's price list\n"


def test_two_handles_in_one_process(writer):
    message = _refused(writer.path, os.getpid())
    assert "this process" in message
    with posfast.Journal.open(writer.path, readonly=True) as reader:   # readers keep working
        assert [reader.get(s).amount for s in (1, 2, 3)] == [100, 200, 300]
    # closing that reader (another descriptor of the same file) did not drop the writer's lock
    _refused(writer.path, os.getpid())
    writer.close()
    with posfast.Journal.open(writer.path) as next_writer:
        assert next_writer.append(terminal=1, kind="sale", amount=400) == 4


HOLDER = textwrap.dedent("""
    import sys, time, posfast
    j = posfast.Journal.open(sys.argv[1])
    acked = [j.append(terminal=7, kind="sale", state="approved", amount=i) for i in range(1, 51)]
    print("ready", acked[0], acked[-1], flush=True)
    sys.stdin.readline()          # hold the lock until told
    acked += [j.append(terminal=7, kind="sale", state="approved", amount=i) for i in range(51, 101)]
    j.close()
    print("done", acked[-1], flush=True)
""")

CONTENDER = textwrap.dedent("""
    import sys, posfast
    try:
        j = posfast.Journal.open(sys.argv[1])
    except posfast.JournalLocked as exc:
        print("LOCKED", exc, flush=True)
        sys.exit(0)
    seqs = [j.append(terminal=8, kind="sale", state="approved", amount=1) for _ in range(50)]
    j.close()
    print("WROTE", seqs[0], seqs[-1], flush=True)
""")


def _hold(path):
    child = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=ENV, cwd=CHILD_CWD)
    line = child.stdout.readline().split()
    assert line == ["ready", "1", "50"], line
    return child


def _contend(path, prefix=()):
    return subprocess.run(list(prefix) + [sys.executable, "-c", CONTENDER, path],
                          capture_output=True, text=True, env=ENV, cwd=CHILD_CWD, timeout=60)


def _release(child):
    out, _ = child.communicate("go\n", timeout=60)
    assert out.split() == ["done", "100"]


def _all_acknowledged_survive(path, writers):
    with posfast.Journal.open(path, readonly=True) as j:
        report = j.verify()
        assert report.ok, str(report)
        assert j.head_seq == 100 + 50 * writers
        rows = j.query(terminal=7)
        assert rows["amount"].tolist() == list(range(1, 101))   # every acknowledged sale


def test_two_processes_by_symlink_and_hard_link(make_journal, tmp_path):
    j = make_journal(capacity=1024)
    j.close()
    os.symlink(j.path, str(tmp_path / "sym.pfj"))
    os.link(j.path, str(tmp_path / "hard.pfj"))
    child = _hold(j.path)
    try:
        before = _fingerprint(j.path)
        for name in ("sym.pfj", "hard.pfj", os.path.basename(j.path)):
            out = _contend(str(tmp_path / name))
            assert out.stdout.startswith("LOCKED"), out.stderr
            assert "process %d" % child.pid in out.stdout
        assert _fingerprint(j.path) == before
    finally:
        _release(child)
    # once the holder is gone the next writer continues the same sequence
    out = _contend(str(tmp_path / "sym.pfj"))
    assert out.stdout.split() == ["WROTE", "101", "150"], out.stderr
    _all_acknowledged_survive(j.path, writers=1)


def test_bind_mount_gives_no_second_writer(make_journal, tmp_path):
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("a bind mount needs root and unshare(1) (run as root, as CI does)")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("no mount namespaces here: %s" % probe.stderr.decode().strip())
    j = make_journal(capacity=1024)
    j.close()
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    child = _hold(j.path)
    try:
        before = _fingerprint(j.path)
        # the journal file itself bind-mounted over another name in another directory, in a
        # private mount namespace (the mount vanishes with the child)
        inside = os.path.join(str(mount_point), "other-name.pfj")
        open(inside, "wb").close()
        out = subprocess.run(
            ["unshare", "-m", "sh", "-c", 'mount --bind "$0" "$1" && exec "$2" -c "$3" "$1"',
             j.path, inside, sys.executable, CONTENDER],
            capture_output=True, text=True, env=ENV, cwd=CHILD_CWD, timeout=60)
        assert out.stdout.startswith("LOCKED"), out.stdout + out.stderr
        assert "process %d" % child.pid in out.stdout
        assert _fingerprint(j.path) == before
    finally:
        _release(child)
    _all_acknowledged_survive(j.path, writers=0)


def test_writer_killed_while_contended_loses_nothing(make_journal):
    j = make_journal(capacity=1024)
    j.close()
    child = _hold(j.path)
    assert _contend(j.path).stdout.startswith("LOCKED")
    child.kill()                       # SIGKILL: the kernel drops the lock with the process
    child.wait()
    out = _contend(j.path)
    assert out.stdout.split() == ["WROTE", "51", "100"], out.stderr
    with posfast.Journal.open(j.path, readonly=True) as ro:
        assert ro.verify().ok
        assert ro.query(terminal=7)["amount"].tolist() == list(range(1, 51))


# ---------------------------------------------------------------- a file two writers wrote
# The lock makes this impossible through posfast; an edited file, a restored backup or another
# program can still produce one.  Each writer below starts from the same journal, and its
# writes are recorded through the core's I/O hook, then replayed onto one file in an order two
# racing writers could produce (the page cache makes both see each other's bytes).

def _writes_of(path, tag, payload_len, durability="fsync", n=50):
    journal = posfast.Journal.open(path, durability=durability)
    writes = []
    journal._ring.io_hook = lambda op, offset, data: writes.append((offset, data)) \
        if op == "write" else None
    acked = [(journal.append(bytes([tag]) * payload_len, terminal=tag, kind="sale",
                             state="approved", amount=100 * tag + i), 100 * tag + i)
             for i in range(n)]
    journal.flush()
    journal._ring.io_hook = None
    journal._ring.close()
    return writes, acked


def _two_writer_file(make_journal, tmp_path, order, a_len, b_len, a_durability="fsync"):
    base = make_journal(capacity=512, path=str(tmp_path / "base.pfj"))
    for i in range(10):
        base.append(terminal=9, kind="sale", amount=i + 1)
    base.close()
    os.remove(base.path + ".idx")
    for name in ("a.pfj", "b.pfj", "both.pfj"):
        shutil.copyfile(base.path, str(tmp_path / name))
    a_writes, a_acked = _writes_of(str(tmp_path / "a.pfj"), 1, a_len, a_durability)
    b_writes, b_acked = _writes_of(str(tmp_path / "b.pfj"), 2, b_len)
    with open(str(tmp_path / "both.pfj"), "r+b") as f:
        for offset, data in order(a_writes, b_writes):
            f.seek(offset)
            f.write(data)
    return str(tmp_path / "both.pfj"), a_acked + b_acked


def _interleaved(seed):
    import random

    def order(a, b):
        who = [0] * len(a) + [1] * len(b)
        random.Random(seed).shuffle(who)
        queues = [list(a), list(b)]
        return [queues[w].pop(0) for w in who]
    return order


def _lost(path, acked):
    with posfast.Journal.open(path, readonly=True) as j:
        found = 0
        for seq, amount in acked:
            try:
                found += j.get(seq).amount == amount
            except (KeyError, posfast.CorruptRecord):
                pass
        return len(acked) - found, j.verify()


@pytest.mark.parametrize("seed", range(4))
def test_two_interleaved_writers_never_pass_verify(make_journal, tmp_path, seed):
    path, acked = _two_writer_file(make_journal, tmp_path, _interleaved(seed), 0, 0)
    lost, report = _lost(path, acked)
    assert lost == 50                         # one writer's 50 acknowledged sales are gone ...
    assert not report.ok                      # ... and verify says so (0.1.0 could say OK)
    assert {p.code for p in report.problems} & {_core.CHK_CHAIN_BROKEN, _core.CHK_CONFLICTING}


def test_second_writer_after_the_first_leaves_duplicated_seqs(make_journal, tmp_path):
    # writer A wrote 50 long records, then writer B 50 short ones over the same seqs:
    # B's chain is whole, but A's records past B's end still claim seqs 11..60
    path, acked = _two_writer_file(make_journal, tmp_path, lambda a, b: a + b, 300, 0)
    lost, report = _lost(path, acked)
    assert lost == 50
    assert not report.ok
    duplicated = [p for p in report.problems if p.code == _core.CHK_CONFLICTING]
    assert duplicated and all(11 <= p.seq <= 60 for p in duplicated)
    assert "stored a second time" in str(duplicated[0])


def test_commit_groups_of_two_writers_are_reported(make_journal, tmp_path):
    # A writes in batch mode (one group: offsets 0, 1, 2 ...), B one group per append
    # (offset 0 each); a file with B's first records and then A's shows a group out of order
    def order(a, b):
        # B's records 11..13 over A's (B's header write, its tail mark, left out)
        return a + [w for w in b if w[0] >= _core.DATA_OFFSET][:3]
    path, acked = _two_writer_file(make_journal, tmp_path, order, 0, 0, a_durability="batch")
    with posfast.Journal.open(path, readonly=True) as j:
        assert [j.get(s).terminal for s in (13, 14)] == [2, 1]
        report = j.verify()
    groups = [p for p in report.problems if p.code == _core.CHK_GROUP_ORDER]
    assert [p.seq for p in groups] == [14]
    assert "record 3 of its group" in str(groups[0])


def test_healthy_wrapped_journal_shows_no_conflict(make_journal):
    # stale records of earlier laps and multi-slot payloads are what one writer leaves
    j = make_journal(capacity=64, retention="overwrite")
    for i in range(500):
        j.append(b"x" * (i % 300), terminal=1 + i % 3, kind="sale", amount=i)
    assert j.verify().ok
    j.close()
    with posfast.Journal.open(j.path, readonly=True) as ro:
        assert ro.verify().ok


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_neither_writes_nor_keeps_the_lock(make_journal):
    # a fork shares the writer's open file description, and with it the lock: the child lets go
    j = make_journal()
    j.append(terminal=1, kind="sale", amount=1)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                                          # the child
        try:
            j.append(terminal=1, kind="sale", amount=2)
            answer = b"WROTE"
        except posfast.JournalClosed:
            answer = b"CLOSED"
        except BaseException:
            answer = b"ERROR"
        os.write(write_end, answer)
        time.sleep(3)                                     # still alive while the parent reopens
        os._exit(0)
    try:
        os.close(write_end)
        assert os.read(read_end, 16) == b"CLOSED"
        assert j.append(terminal=1, kind="sale", amount=3) == 2    # the parent writes on
        j.close()
        with posfast.Journal.open(j.path) as again:       # 0.1.0 / flock alone: JournalLocked
            assert [again.get(s).amount for s in (1, 2)] == [1, 3]
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(read_end)
