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

import pytest

import posfast
from posfast import JournalLocked

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ENV = dict(os.environ, PYTHONPATH=REPO + os.pathsep + HERE)


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
                             stdout=subprocess.PIPE, text=True, env=ENV)
    line = child.stdout.readline().split()
    assert line == ["ready", "1", "50"], line
    return child


def _contend(path, prefix=()):
    return subprocess.run(list(prefix) + [sys.executable, "-c", CONTENDER, path],
                          capture_output=True, text=True, env=ENV, timeout=60)


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
        # a private mount namespace: the bind mount vanishes with the child
        inside = os.path.join(str(mount_point), os.path.basename(j.path))
        out = subprocess.run(
            ["unshare", "-m", "sh", "-c", 'mount --bind "$0" "$1" && exec "$2" -c "$3" "$4"',
             os.path.dirname(j.path), str(mount_point), sys.executable, CONTENDER, inside],
            capture_output=True, text=True, env=ENV, timeout=60)
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
