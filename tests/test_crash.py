"""Crash tests: a real writer process (tests/_writer_child.py, fsync durability) is
SIGKILLed at random moments.  It reports every seq after append returned; after each
kill every acknowledged record must be there byte for byte (the child writes
`expected(seq)`, a pure function of the seq), seqs run without a gap, and opening the
file twice (read-only, writable, writable again) gives the same state."""
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

import posfast
from _child_env import CHILD_CWD, child_env

from conftest import FIXED_JID, MAX_PAYLOAD, expected, expected_dict, state_of

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, "_writer_child.py")


MIN_ACKS_A_ROUND = 5     # on average: each round kills after 1..9 acknowledged records


def nslots(payload_len, slot_size=128):
    return -(-(128 + payload_len) // slot_size)


def run_child_and_kill(path, seed, rng):
    """Start the writer, SIGKILL it at a random moment; (acked seqs, watermarks it was told)."""
    env = child_env()
    proc = subprocess.Popen([sys.executable, CHILD, path, str(seed)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=CHILD_CWD)
    lines = []
    progress = threading.Condition()
    # the kill comes after the writer acknowledged a few records (however slow the CPU: an
    # emulated ARM core takes far longer per append), then at a random moment
    wanted = rng.randint(1, 2 * MIN_ACKS_A_ROUND - 1)

    def read():
        for raw in proc.stdout:
            if not raw.endswith(b"\n"):
                break                          # cut off by the kill: not a report
            with progress:
                lines.append(raw.decode().split())
                progress.notify_all()
        with progress:
            progress.notify_all()              # the child ended (by itself: reported below)

    def acks():
        return sum(1 for w in lines if w[0] == "ack")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with progress:
        if not progress.wait_for(lambda: acks() >= wanted or proc.poll() is not None, 300):
            proc.kill()
            pytest.fail("writer child acknowledged %d record(s) in 300 s: %s"
                        % (acks(), proc.stderr.read().decode()[-2000:]))
    time.sleep(rng.uniform(0.0, 0.25))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader.join(10)
    err = proc.stderr.read().decode()
    assert proc.returncode == -signal.SIGKILL, "writer died by itself:\n" + err[-3000:]
    acked = [int(w[1]) for w in lines if w[0] == "ack"]
    told = [int(w[1]) for w in lines if w[0] == "wm"]
    return acked, told


def check_after_crash(path, acked, told, capacity):
    states = []
    with posfast.Journal.open(path, readonly=True) as ro:
        states.append(state_of(ro))
        torn = list(ro._ring.torn)
    for _ in range(2):
        with posfast.Journal.open(path) as j:
            states.append(state_of(j))
    assert states[1] == states[0] and states[2] == states[0]
    state = states[0]
    with posfast.Journal.open(path, readonly=True) as j:
        head, oldest = j.head_seq, j.oldest_seq
        assert state["ok"], j.verify()
        if acked:
            assert head >= max(acked), "acknowledged seq %d lost (head %d)" % (max(acked), head)
        # every live record is what the writer wrote for that seq, acknowledged or not
        rows = j.query()
        assert rows["seq"].tolist() == list(range(oldest, head + 1))         # no gap
        payloads = j.payloads(rows["seq"])
        for seq, payload in zip(range(oldest, head + 1), payloads):
            assert payload == expected(seq)[1]
            assert j.get(seq).to_dict() == expected_dict(seq, j.day_rule)
        # acknowledged records older than `oldest` went only because the ring wrapped over them
        if oldest > 1:
            used = j.status()["used_slots"]
            gone_fields, gone = expected(oldest - 1)
            ext = len(posfast._core.encode_ext(gone_fields["client_ref"], gone_fields["order_ref"],
                                               gone_fields["host_ref"]))
            assert used + nslots(len(gone) + ext) > capacity or torn, \
                "seq %d is gone but the ring had room for it" % (oldest - 1)
        if j.retention == "synced":
            assert oldest <= j.sync_watermark + 1
        if told:
            assert j.sync_watermark >= max(told)
        assert j.sync_watermark <= head
    return head


def crash_rounds(tmp_path, rounds, retention, capacity, seed):
    path = str(tmp_path / "till.pfj")
    posfast.Journal.create(path, capacity=capacity, max_payload=MAX_PAYLOAD, retention=retention,
                           journal_id=FIXED_JID).close()
    rng = random.Random(seed)
    all_acked = 0
    heads = []
    for r in range(rounds):
        acked, told = run_child_and_kill(path, seed * 1000 + r, rng)
        all_acked += len(acked)
        heads.append(check_after_crash(path, acked, told, capacity))
    assert heads == sorted(heads)          # acknowledged history only grows
    return all_acked


def test_sigkilled_writer_loses_nothing_acknowledged(tmp_path):
    # each round kills the writer after it acknowledged 1..9 records (run_child_and_kill
    # waits for them), at a random moment after: the checks are check_after_crash's
    crash_rounds(tmp_path, rounds=5, retention="overwrite", capacity=300, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("retention, capacity", [("overwrite", 300), ("synced", 600),
                                                 ("overwrite", 5000)])
def test_sigkilled_writer_many_rounds(tmp_path, retention, capacity):
    crash_rounds(tmp_path, rounds=60, retention=retention, capacity=capacity,
                 seed=capacity + len(retention))
