"""One writer per file (a clear JournalLocked naming the holder's pid), readers in other
processes that only ever see complete records, and thread safety within a process."""
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import posfast
from posfast import JournalLocked
from _child_env import CHILD_CWD, child_env

from conftest import MAX_PAYLOAD, append_expected

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = child_env()       # the posfast this process imported (tests/_child_env.py)


def test_second_writer_in_the_same_process_is_refused_naming_the_pid(make_journal):
    j = make_journal()
    j.append(terminal=1, kind="sale", amount=1)
    with pytest.raises(JournalLocked, match=r"open for writing by process %d" % os.getpid()):
        posfast.Journal.open(j.path)
    # readers are welcome meanwhile
    with posfast.Journal.open(j.path, readonly=True) as ro:
        assert ro.get(1).amount == 1
    j.close()
    with posfast.Journal.open(j.path) as again:         # the lock went with close
        assert again.append(terminal=1, kind="sale", amount=2) == 2


def test_second_writer_in_another_process_is_refused_naming_the_pid(make_journal):
    j = make_journal()
    script = textwrap.dedent("""
        import sys, posfast
        try:
            posfast.Journal.open(sys.argv[1])
        except posfast.JournalLocked as exc:
            print("LOCKED", exc)
        else:
            print("OPENED")
    """)
    out = subprocess.run([sys.executable, "-c", script, j.path], capture_output=True, text=True,
                         env=ENV, cwd=CHILD_CWD, timeout=60)
    assert out.stdout.startswith("LOCKED"), out.stderr
    assert "process %d" % os.getpid() in out.stdout and j.path in out.stdout
    j.close()
    out = subprocess.run([sys.executable, "-c", script, j.path], capture_output=True, text=True,
                         env=ENV, cwd=CHILD_CWD, timeout=60)
    assert out.stdout.strip() == "OPENED", out.stderr


def test_killed_writer_releases_the_lock(make_journal):
    j = make_journal()
    j.close()
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time, posfast
        j = posfast.Journal.open(sys.argv[1])
        j.append(terminal=1, kind="sale", amount=5)
        print("ready", flush=True)
        time.sleep(60)
    """), j.path], stdout=subprocess.PIPE, env=ENV, cwd=CHILD_CWD)
    try:
        assert child.stdout.readline().strip() == b"ready"
        with pytest.raises(JournalLocked, match="process %d" % child.pid):
            posfast.Journal.open(j.path)
    finally:
        child.kill()
        child.wait()
    with posfast.Journal.open(j.path) as again:
        assert again.head_seq == 1 and again.get(1).amount == 5


READER = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    import posfast
    from _writer_child import expected, expected_dict

    path, stop_file, progress = sys.argv[1], sys.argv[2], sys.argv[3]
    polls, problems, counts, heads, gone, told = 0, [], [], [], 0, False
    with posfast.Journal.open(path, readonly=True) as j:
        print("ready", flush=True)
        while not os.path.exists(stop_file):
            head = j.head_seq
            rows = j.query()
            payloads = j.payloads(rows["seq"])
            seqs = rows["seq"].tolist()
            if seqs and seqs != list(range(seqs[0], seqs[-1] + 1)):
                # only records the writer overwrote while we read may be missing
                j.head_seq
                missing = set(range(seqs[0], seqs[-1] + 1)) - set(seqs)
                if max(missing) >= j.oldest_seq:
                    problems.append("live seq %d missing in %s..%s" % (max(missing), seqs[0],
                                                                      seqs[-1]))
            for row, payload in zip(rows, payloads):
                seq = int(row["seq"])
                fields, want = expected(seq)
                if any(row[k] != (v.encode() if k == "channel" else v) for k, v in fields.items()
                       if k not in ("order_ref", "host_ref")) or row["payload_len"] != len(want):
                    problems.append("row of seq %d differs from what was written" % seq)
                if payload == b"" and want:
                    # b"" is what payloads() gives for a record the writer evicted since
                    j.head_seq                      # (catch up with the writer)
                    if seq >= j.oldest_seq:
                        problems.append("payload of live seq %d missing" % seq)
                elif payload != want:
                    problems.append("payload of seq %d differs (%d bytes)" % (seq, len(payload)))
            if seqs:
                try:
                    rec = j.get(seqs[-1])
                except KeyError:
                    gone += 1         # overwritten since: the ring moved on
                else:
                    if rec.to_dict() != expected_dict(seqs[-1], j.day_rule):
                        problems.append("get(%d) differs" % seqs[-1])
            counts.append(len(seqs))
            heads.append(head)
            polls += 1
            if polls % 10 == 0:
                report = j.verify()         # while the writer goes on: no false damage
                if not report.ok:
                    problems.append(str(report))
            if not told and polls >= 3 and heads[-1] > heads[0]:
                # it saw the writer's progress: tell the writer (it goes on until all have)
                open(os.path.join(progress, "reader-%d" % os.getpid()), "w").close()
                told = True
        report = j.verify()
    print(json.dumps({"polls": polls, "problems": problems[:20], "counts": counts, "gone": gone,
                      "heads": heads, "verify_ok": report.ok}), flush=True)
""")


@pytest.mark.parametrize("retention, capacity", [("synced", 20_000), ("overwrite", 300)])
def test_readers_in_other_processes_see_only_complete_records(make_journal, retention, capacity):
    """The writer appends for 2.5 s and on until each reader polled 3 times and saw the head
    move (no speed is assumed: an emulated ARM core polls far less often), then the readers
    stop and report."""
    j = make_journal(capacity=capacity, retention=retention, durability="none")
    append_expected(j, range(1, 11))
    stop, progress = j.path + ".stop", j.path + ".progress"
    os.mkdir(progress)
    readers = [subprocess.Popen([sys.executable, "-c", READER, j.path, stop, progress],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                                cwd=CHILD_CWD, text=True) for _ in range(2)]
    for r in readers:
        assert r.stdout.readline().strip() == "ready", r.stderr.read()
    rng = np.random.default_rng(3)
    seq = 10
    started = time.time()
    # a synced journal must not fill (it would refuse appends): the cap leaves room
    cap = 1 << 62 if retention == "overwrite" else capacity * 3 // 4
    while time.time() < started + 2.5 or len(os.listdir(progress)) < len(readers):
        if any(r.poll() is not None for r in readers) or time.time() > started + 600:
            break                          # a reader died, or none saw progress: reported below
        if seq < min(cap, 5000) and time.time() < started + 2.5:
            n = int(rng.integers(1, 6))
            seq = append_expected(j, range(seq + 1, seq + n + 1))[-1]
            time.sleep(0.0005)
        elif seq < cap:                             # waiting for a slow reader: slower
            seq = append_expected(j, range(seq + 1, seq + 2))[-1]
            time.sleep(0.02)
        else:
            time.sleep(0.02)
    open(stop, "w").close()
    results = []
    for r in readers:
        out, err = r.communicate(timeout=300)
        assert r.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    for res in results:
        assert res["problems"] == [] and res["verify_ok"]
        assert res["polls"] >= 3                     # (the writer waited for 3 each)
        assert res["heads"] == sorted(res["heads"])                  # the head only grows
        if retention == "synced":
            assert res["counts"] == sorted(res["counts"])            # and nothing disappears
        assert res["heads"][-1] > res["heads"][0]                    # it saw the writer's progress
    assert j.head_seq == seq


@pytest.mark.parametrize("durability", ["fsync", "batch"])
def test_threads_appending_and_querying(make_journal, durability):
    j = make_journal(capacity=20_000, durability=durability, max_payload=MAX_PAYLOAD)
    writers, per_writer = 4, 60
    errors = []
    stop = threading.Event()

    def write(w):
        try:
            for i in range(per_writer):
                ref = b"w%d-%d" % (w, i)
                if i % 3 == 2:
                    got = j.append_many({"terminal": [w + 1, w + 1], "kind": "sale",
                                         "amount": [i, i], "client_ref": [ref + b"a", ref + b"b"]},
                                        payloads=[ref, ref * 3])
                    assert len(got) == 2 and got[1] == got[0] + 1
                else:
                    j.append(terminal=w + 1, kind="sale", amount=i, client_ref=ref, payload=ref)
        except Exception as exc:            # pragma: no cover - reported below
            errors.append(repr(exc))

    def read():
        try:
            while not stop.is_set():
                rows = j.query(kind="sale")
                seqs = rows["seq"].tolist()
                assert seqs == list(range(1, len(seqs) + 1))
                for w in range(writers):
                    mine = j.query(terminal=w + 1)["amount"].tolist()
                    assert mine == sorted(mine)      # each writer's records in its own order
                j.verify(check_index=False)
        except Exception as exc:            # pragma: no cover
            errors.append(repr(exc))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads[:writers]:
        t.join(120)
    stop.set()
    for t in threads[writers:]:
        t.join(60)
    assert errors == []
    per_thread = per_writer + per_writer // 3           # every third call appends two
    assert j.head_seq == writers * per_thread and j.count() == writers * per_thread
    rows = j.query()
    assert rows["seq"].tolist() == list(range(1, writers * per_thread + 1))
    for w in range(writers):
        mine = j.query(terminal=w + 1)
        assert len(mine) == per_thread
        assert sorted(set(mine["client_ref"].tolist())) == sorted(
            [b"w%d-%d" % (w, i) for i in range(per_writer) if i % 3 != 2] +
            [b"w%d-%d%s" % (w, i, s) for i in range(per_writer) if i % 3 == 2 for s in (b"a", b"b")])
    j.close()
    with posfast.Journal.open(j.path) as again:
        assert again.head_seq == writers * per_thread and again.verify().ok


def test_reader_lapped_by_the_writer_catches_up(make_journal):
    j = make_journal(capacity=64, retention="overwrite", durability="none")
    append_expected(j, range(1, 11))
    with posfast.Journal.open(j.path, readonly=True) as ro:
        assert ro.head_seq == 10
        append_expected(j, range(11, 300))             # several laps while the reader looks away
        assert (ro.head_seq, ro.oldest_seq) == (j.head_seq, j.oldest_seq)
        assert ro.query().tolist() == j.query().tolist()
        for terminal in range(1, 6):
            assert ro.query(terminal=terminal).tolist() == j.query(terminal=terminal).tolist()
        with pytest.raises(KeyError):
            ro.get(5)
        assert ro.verify().ok


def test_reader_asking_for_a_record_evicted_since_it_looked(make_journal):
    j = make_journal(capacity=64, retention="overwrite", durability="none")
    for s in range(1, 41):
        j.append(terminal=1, kind="sale", amount=s)
    with posfast.Journal.open(j.path, readonly=True) as ro:
        assert (ro.oldest_seq, ro.head_seq) == (1, 40)
        for s in range(41, 81):                       # evicts 1..16, on another terminal
            j.append(terminal=2, kind="sale", amount=s)
        # the reader has not looked since: the record is gone, not damaged
        with pytest.raises(KeyError):
            ro._ring.get(3)
        with pytest.raises(KeyError):
            ro.get(3)
        # and what the writer added since is indexed for the reader's lookups
        assert ro.query(terminal=2)["amount"].tolist() == list(range(41, 81))
        assert ro.last(terminal=2).seq == 80
        assert ro.query(terminal=1)["amount"].tolist() == list(range(17, 41))


def test_reader_lapped_by_the_writer_reports_no_false_loss(make_journal):
    # retention "synced": the writer evicts only what the back office acknowledged; a reader
    # that opened before those acknowledgements must not call the evicted records lost
    writer = make_journal(capacity=64, retention="synced")
    for _ in range(40):
        writer.append(terminal=1, kind="sale", amount=1)
    writer.set_sync_watermark(writer.head_seq)
    reader = posfast.Journal.open(writer.path, readonly=True)
    for _ in range(100):
        writer.append(terminal=1, kind="sale", amount=2)
        writer.set_sync_watermark(writer.head_seq)
    try:
        assert writer.verify().ok
        report = reader.verify()
        assert report.ok, str(report)                       # 0.1.0: "records 41..76 lost"
        assert reader.status()["damaged_at_open"] == 0
        assert reader.head_seq == writer.head_seq == 140
        assert reader.get(140).amount == 2
    finally:
        reader.close()
