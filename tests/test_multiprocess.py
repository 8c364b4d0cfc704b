"""Multi-process (issue 7): a writer process appending continuously, reader processes
(readonly=True) querying and verifying at the same time.

Every record's content is a pure function of its seq, so a reader can check whatever it is
handed: rows, payloads, get(), and read_range() batches whose hash chain it recomputes with
posfast.chain_link.  Readers must never see a partial or invalid record, their head must only
grow, and (retention "synced", nothing evicted) their counts only grow.  The writer spans
records over several slots, wraps the ring (retention "overwrite"), moves the sync watermark,
and in one round is SIGKILLed mid-append and replaced by a new writer process (which runs
recovery) while the readers keep reading.

(test_concurrency.py covers readers beside a writer in the test process itself; here the
writer is a separate process too, and dies.)
"""
import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import posfast
from _child_env import CHILD_CWD, child_env

ENV = child_env()       # the posfast this process imported (tests/_child_env.py)

CONTENT = textwrap.dedent("""
    import hashlib
    TS0 = 1_790_000_000_000_000

    def content(seq):
        # everything a record holds, from its seq alone
        h = hashlib.sha256(b"%d" % seq).digest()
        n = (0, 0, 10, 150, 300, 700)[h[0] % 6]
        fields = dict(terminal=seq % 7 + 1, kind=("sale", "refund", "print", "note")[seq % 4],
                      state="approved", amount=abs(seq * 101 - 5000), currency=156,
                      ts=TS0 + seq * 1_000_000, receipt_no=seq, client_ref=h[:16].rstrip(b"\\0"))
        return fields, (h * 22)[:n]
""")

WRITER = CONTENT + textwrap.dedent("""
    import os, sys, time
    import posfast
    path, durability, seconds, lag = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    progress, readers, min_seq = sys.argv[5], int(sys.argv[6]), int(sys.argv[7])
    j = posfast.Journal.open(path, durability=durability, batch_records=8, batch_ms=20)
    print("ready %d" % j.head_seq, flush=True)
    # Writes for `seconds`, and on until every reader has polled MIN_POLLS times beside it
    # and the head passed min_seq: the round proves the same on a slow core as on a fast
    # one, it only takes longer (at most HARD_LIMIT seconds; the test then says why)
    deadline = time.time() + seconds
    hard_limit = time.time() + 300
    step = 0
    while (time.time() < deadline or j.head_seq < min_seq or len(os.listdir(progress)) < readers) \
            and time.time() < hard_limit:
        first = j.head_seq + 1
        n = 1 + step % 4
        cols = {}
        payloads = []
        for seq in range(first, first + n):
            fields, payload = content(seq)
            for k, v in fields.items():
                cols.setdefault(k, []).append(v)
            payloads.append(payload)
        got = j.append_many(cols, payloads=payloads)
        assert got == range(first, first + n), (got, first, n)
        if lag and j.head_seq - lag > j.sync_watermark and step % 5 == 0:
            j.set_sync_watermark(j.head_seq - lag)
        step += 1
        time.sleep(0.001)
    head = j.head_seq
    j.close()
    print("done %d" % head, flush=True)
""")

READER = CONTENT + textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    import posfast
    path, stop_file, grows, progress = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
    MIN_POLLS = 5
    polls, problems, heads, counts, chained, stale_reads = 0, [], [], [], 0, 0
    KINDS = {"sale": 1, "refund": 2, "print": 7, "note": 11}

    def check_row(row, payload, where):
        seq = int(row["seq"])
        fields, want = content(seq)
        for k, v in fields.items():
            got = row[k]
            if k == "kind":
                v = KINDS[v]
            elif k == "state":
                v = 2
            elif k == "client_ref":             # numpy "S16" drops trailing NULs
                got, v = bytes(got), v.rstrip(bytes(1))
            if got != v:
                problems.append("%s: seq %d field %s is %r, written %r" % (where, seq, k, got, v))
                return
        if payload is not None and payload != want:
            problems.append("%s: payload of seq %d differs (%d bytes)" % (where, seq, len(payload)))

    with posfast.Journal.open(path, readonly=True) as j:
        print("ready", flush=True)
        while not os.path.exists(stop_file):
            head = j.head_seq
            if heads and head < heads[-1]:
                problems.append("head went back from %d to %d" % (heads[-1], head))
            heads.append(head)
            rows = j.query()
            counts.append(len(rows))
            payloads = j.payloads(rows["seq"])
            for row, payload in zip(rows, payloads):
                if payload == b"" and content(int(row["seq"]))[1]:
                    j.head_seq                      # evicted since? catch up and look again
                    if int(row["seq"]) >= j.oldest_seq:
                        problems.append("payload of live seq %d missing" % int(row["seq"]))
                    continue
                check_row(row, payload, "query")
            if head >= 1 and j.oldest_seq > head:
                # lapped since `head` was taken (format 2 records are larger: in a small ring
                # the writer can evict everything this poll saw): nothing of it is left to read
                stale_reads += 1
            elif head >= 1:
                first = max(j.oldest_seq, head - 12)
                try:
                    batch = j.read_range(first, head)
                except posfast.CorruptRecord as exc:
                    j.head_seq
                    if first >= j.oldest_seq:
                        problems.append("read_range(%d, %d): %s" % (first, head, exc))
                    stale_reads += 1
                else:
                    prev = batch.prev_link
                    for i, row in enumerate(batch.rows):
                        check_row(row, batch.payloads[i], "read_range")
                        if prev:
                            link = posfast.chain_link(prev, row, batch.payloads[i], batch.exts[i])
                            if link != batch.links[i]:
                                problems.append("hash chain broken at seq %d" % int(row["seq"]))
                            chained += 1
                        prev = batch.links[i]
                seq = int(np.random.randint(min(head, max(j.oldest_seq, head - 40)), head + 1))
                try:
                    rec = j.get(seq)
                except KeyError:
                    stale_reads += 1                # evicted under us (retention overwrite)
                else:
                    fields, want = content(seq)
                    if rec.amount != fields["amount"] or rec.payload != want:
                        problems.append("get(%d) differs" % seq)
            if polls % 25 == 0:
                report = j.verify(check_index=False)
                bad = [p for p in report.problems if p.seq >= j.oldest_seq]
                if bad:
                    j.head_seq
                    bad = [p for p in bad if p.seq >= j.oldest_seq]
                    if bad:
                        problems.append("verify: %s" % bad[0])
            polls += 1
            if polls == MIN_POLLS:             # tell the writer (it goes on until all have)
                open(os.path.join(progress, "reader-%d" % os.getpid()), "w").close()
            time.sleep(0.002)
    if grows and counts != sorted(counts):
        problems.append("the count went down")
    print(json.dumps({"polls": polls, "problems": problems[:20], "heads": heads[-1:] + heads[:1],
                      "chained": chained, "stale": stale_reads}), flush=True)
""")


def _start(script, *args):
    return subprocess.Popen([sys.executable, "-c", script] + [str(a) for a in args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=CHILD_CWD, text=True)


def _ready(proc):
    line = proc.stdout.readline().strip()
    assert line.startswith("ready"), proc.stderr.read()[-3000:]
    return line


def run_round(tmp_path, retention, capacity, durability, seconds, readers, kill_at=None,
              lag=0, min_seq=0):
    """A writer for `seconds` (and until each reader polled 5 times beside it, and its head
    passed `min_seq`: no speed is assumed), `readers` read-only processes checking every
    record they see; returns what they did."""
    path = str(tmp_path / "shared.pfj")
    posfast.Journal.create(path, capacity=capacity, retention=retention, max_payload=800).close()
    stop = str(tmp_path / "stop")
    progress = tmp_path / "progress"
    progress.mkdir()
    writer = _start(WRITER, path, durability, seconds, lag, progress, readers, min_seq)
    _ready(writer)
    procs = [_start(READER, path, stop, int(retention == "synced" and not lag), progress)
             for _ in range(readers)]
    for r in procs:
        _ready(r)
    restarts = 0
    if kill_at is not None:
        time.sleep(kill_at)
        writer.send_signal(signal.SIGKILL)             # mid-append, lock held, group unsynced
        writer.wait()
        restarts += 1
        writer = _start(WRITER, path, durability, max(0.5, seconds - kill_at), lag, progress, readers,
                        min_seq)
        _ready(writer)
    out, err = writer.communicate(timeout=420)
    assert writer.returncode == 0, err[-3000:]
    final = int(out.strip().splitlines()[-1].split()[1])
    time.sleep(0.2)
    open(stop, "w").close()
    results = []
    for r in procs:
        out, err = r.communicate(timeout=120)
        assert r.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    for res in results:
        assert res["problems"] == [], res["problems"]
        # (the writer went on until each reader had polled 5 times beside it)
        assert res["polls"] >= 5, "a reader polled %d times in 300 s of writing" % res["polls"]
        assert res["chained"] > 0                               # it checked hash links
        assert res["heads"][0] > res["heads"][1]                # it saw the writer's progress
        assert res["heads"][0] <= final
    with posfast.Journal.open(path) as j:
        assert j.head_seq == final and j.verify().ok
    got = dict(final_seq=final, polls=sum(r["polls"] for r in results),
               chained=sum(r["chained"] for r in results), restarts=restarts, readers=readers)
    import _powerloss
    _powerloss.report("multiprocess-%s-%s" % (retention, durability), **got)
    return got


def test_readers_beside_a_writer_that_is_killed_and_replaced(tmp_path):
    """fsync writer, nothing evicted: readers' heads and counts only grow, through a SIGKILL
    of the writer and the new writer's recovery."""
    got = run_round(tmp_path, "synced", 20_000, "fsync", seconds=3.0, readers=3, kill_at=1.2)
    assert got["final_seq"] > 50 and got["restarts"] == 1


def test_readers_beside_a_wrapping_batch_writer(tmp_path):
    """Group commit and a 160-slot ring lapped many times under the readers."""
    got = run_round(tmp_path, "overwrite", 160, "batch", seconds=2.5, readers=3, min_seq=3 * 160)
    assert got["final_seq"] >= 3 * 160     # 3 laps: every record takes one slot at least


@pytest.mark.slow
@pytest.mark.parametrize("retention, capacity, durability, lag", [
    ("synced", 50_000, "fsync", 0), ("synced", 400, "batch", 50), ("overwrite", 64, "fsync", 0),
    ("overwrite", 300, "batch", 0)])
def test_readers_long_rounds(tmp_path, retention, capacity, durability, lag):
    got = run_round(tmp_path, retention, capacity, durability, seconds=15.0, readers=4,
                    kill_at=7.0, lag=lag)
    assert got["polls"] > 100


def test_a_reader_lapped_by_the_writer_gets_keyerror_not_corruption(tmp_path):
    """Regression: a read-only handle asked for a record the writer had lapped since the
    reader's last look (its slot now holding a newer record's payload) raised CorruptRecord
    ("no record head ... restore it from the back office"), a false alarm: it is gone."""
    path = str(tmp_path / "lap.pfj")
    with posfast.Journal.create(path, capacity=16, retention="overwrite") as j:
        for n in range(8):
            j.append(terminal=1, kind="sale", amount=n)            # slots 0..7
        with posfast.Journal.open(path, readonly=True) as ro:
            assert ro.head_seq == 8
            for n in range(4):                                      # 3 slots each: 8..19
                j.append(terminal=2, kind="note", payload=b"x" * 300)
            # slot 0 (seq 1) now holds the payload of seq 11; the reader has not looked yet
            with pytest.raises(KeyError):
                ro._ring.get(1)
            assert ro.head_seq == 12 and ro.oldest_seq > 1       # the Journal catches up on its next look
            batch = ro.read_range(1, 12)
            assert batch.rows["seq"].tolist() == list(range(ro.oldest_seq, 13))
            assert all(len(p) == 300 for p in batch.payloads[-4:])
