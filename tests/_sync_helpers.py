"""Hand-made record streams for the sync tests (plain module, imported by the test files).

``HandJournal`` builds records exactly as a journal would hand them to a syncer
(RECORD_DTYPE rows, payloads, chained links) without the ring file, so targets and
the server can be tested in isolation; it also quacks enough like a Journal
(``sync_watermark``, ``head_seq``, ``oldest_seq``, ``read_range``...) to drive a
Syncer where a test needs eviction or failure injection a real journal cannot give.
"""
import subprocess
import sys
import threading
import uuid

import numpy as np

import posfast
from posfast.sync import RecordBatch
from _child_env import CHILD_CWD, child_env

RECORD_DTYPE = posfast.RECORD_DTYPE


def genesis(journal_id):
    return bytes(posfast.genesis_link(journal_id.bytes))


class HandJournal:
    def __init__(self, n=0, *, journal_id=None, terminal=1, seed=0, capacity=1_000_000, max_payload=300,
                 day_rule=None):
        self.journal_id = journal_id or uuid.uuid4()
        self.day_rule = day_rule or posfast.DayRule(utc_offset="+08:00", starts_at="04:00")
        self.terminal = terminal
        self.capacity = capacity
        self.max_payload = max_payload
        self.rng = np.random.default_rng(seed)
        self.rows = np.zeros(0, dtype=RECORD_DTYPE)
        self.payloads = []
        self.links = []
        self.exts = []
        self.sync_watermark = 0
        self.oldest_seq = 1
        self._lock = threading.Lock()
        self.extend(n)

    @property
    def head_seq(self):
        return len(self.rows)

    def extend(self, n):
        rng = self.rng
        start = len(self.rows) + 1
        rows = np.zeros(n, dtype=RECORD_DTYPE)
        rows["seq"] = np.arange(start, start + n)
        rows["ts"] = 1_763_000_000_000_000 + rows["seq"].astype(np.int64) * 1_000_000
        rows["amount"] = rng.integers(1, 100_000, n)
        rows["txn_id"] = rows["seq"]
        rows["ts"] += rows["seq"].astype(np.int64) // 500 * 86_400_000_000   # a new day every 500 records
        rows["day"] = [self.day_rule.day_number(int(t)) for t in rows["ts"]]
        rows["terminal"] = self.terminal
        rows["receipt_no"] = rows["seq"]
        rows["operator"] = rng.integers(1, 9, n)
        rows["currency"] = 156
        rows["kind"] = rng.integers(1, 8, n)
        rows["state"] = rng.integers(0, 8, n)
        rows["method"] = rng.integers(0, 6, n)
        rows["pan_last4"] = [b"%04d" % x for x in rng.integers(0, 10_000, n)]
        rows["auth_code"] = b"A1B2C3"
        rows["rrn"] = [b"%012d" % x for x in rng.integers(0, 10**12, n)]
        rows["client_ref"] = [b"order-%d" % s for s in rows["seq"]]
        payloads = [rng.bytes(int(k)) for k in rng.integers(0, self.max_payload + 1, n)]
        rows["payload_len"] = [len(p) for p in payloads]
        rows["channel"] = b"wechat"
        # format 2: the extension holds the client_ref and, on every third record, order and
        # host references (as Journal.append writes them)
        exts = [posfast._core.encode_ext(bytes(rows["client_ref"][i]),
                                         "WX%030d" % s if s % 3 == 0 else "",
                                         "42%026d" % s if s % 3 == 0 else "")
                for i, s in enumerate(rows["seq"].tolist())]
        rows["ext_len"] = [len(e) for e in exts]
        prev = self.links[-1] if self.links else genesis(self.journal_id)
        links = []
        for i in range(n):
            prev = bytes(posfast.chain_link(prev, rows[i], payloads[i], exts[i]))
            links.append(prev)
        with self._lock:
            grown = np.zeros(len(self.rows) + n, dtype=RECORD_DTYPE)   # concatenate would drop padding
            grown[:len(self.rows)] = self.rows
            grown[len(self.rows):] = rows
            self.rows = grown
            self.payloads += payloads
            self.links += links
            self.exts += exts
        return range(start, start + n)

    def batch(self, first, last):
        """Records first..last (seqs, inclusive) as a batch."""
        return RecordBatch(self.journal_id, self.rows[first - 1:last].copy(),
                           list(self.payloads[first - 1:last]), list(self.links[first - 1:last]), self.day_rule,
                           list(self.exts[first - 1:last]))

    # -- the slice of the Journal API a Syncer uses
    def read_range(self, first, last):
        if first < self.oldest_seq:
            raise KeyError(first)
        return self.batch(first, last)

    def set_sync_watermark(self, seq):
        assert seq >= self.sync_watermark
        self.sync_watermark = seq

    def evict_to(self, seq):
        self.oldest_seq = seq

    class _Rec:
        def __init__(self, row):
            self.ts = int(row["ts"])

    def get(self, seq):
        return self._Rec(self.rows[seq - 1])

    def status(self):
        head, wm = self.head_seq, self.sync_watermark
        unsynced = max(0, head - max(wm, self.oldest_seq - 1))
        first = max(wm + 1, self.oldest_seq)
        return {"head_seq": head, "oldest_seq": self.oldest_seq, "sync_watermark": wm, "unsynced": unsynced,
                "capacity": self.capacity, "live_records": head - self.oldest_seq + 1,
                "used_slots": head - self.oldest_seq + 1,
                "oldest_unsynced_ts": int(self.rows["ts"][first - 1]) if unsynced else None}


def assert_same_records(held, expected_rows, expected_payloads, expected_links):
    """Back office content equals the journal's, record for record, every column."""
    assert len(held.rows) == len(expected_rows)
    for name in RECORD_DTYPE.names:
        np.testing.assert_array_equal(held.rows[name], expected_rows[name], err_msg=name)
    assert held.payloads == list(expected_payloads)
    assert held.links == list(expected_links)


def fill_journal(journal, n, *, seed=0, terminal=1, ts0=None, max_payload=300, chunk=5000):
    """Append n varied records (every column used, payloads of random size) to a real Journal."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < n:
        k = min(chunk, n - done)
        cols = {
            "terminal": terminal,
            "kind": rng.choice(["sale", "refund", "void", "print", "preauth", "note"], k),
            "state": rng.choice(["approved", "declined", "pending", "ok", "failed"], k),
            "method": rng.choice(["card", "cash", "qr", "wallet"], k),
            "amount": rng.integers(1, 1_000_000, k),
            "currency": rng.choice([156, 978, 840], k),
            "receipt_no": np.arange(done + 1, done + k + 1),
            "operator": rng.integers(1, 20, k),
            "flags": rng.choice([0, 1, 2, 4], k),
            "ref_seq": rng.integers(0, 50, k),
            "pan_last4": [b"%04d" % x for x in rng.integers(0, 10_000, k)],
            "auth_code": [b"%06d" % x for x in rng.integers(0, 10**6, k)],
            "rrn": [b"%012d" % x for x in rng.integers(0, 10**12, k)],
            "client_ref": [b"ord-%d-%d" % (terminal, done + i) for i in range(k)],
        }
        if ts0 is not None:
            cols["ts"] = ts0 + np.arange(done, done + k, dtype=np.int64) * 1_000_000
        payloads = [rng.bytes(int(x)) for x in rng.integers(0, max_payload + 1, k)]
        journal.append_many(cols, payloads=payloads)
        done += k


def assert_back_office_equals_journal(target, journal, first=1, last=None):
    last = journal.head_seq if last is None else last
    want = journal.read_range(first, last)
    held = target.read_range(journal.journal_id, first, last)
    assert_same_records(held, want.rows, want.payloads, want.links)


def start_serve_process(db_url, tokens_file, tmp_path, *extra):
    """Run `python -m posfast serve` on 127.0.0.1, a free port; returns (process, url)."""
    env = child_env()
    proc = subprocess.Popen([sys.executable, "-m", "posfast", "serve", "--db", db_url, "--port", "0",
                             "--tokens-file", str(tokens_file), "--create", *extra],
                            stdout=subprocess.PIPE, stderr=open(tmp_path / "serve.log", "ab"), text=True, env=env, cwd=CHILD_CWD)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise AssertionError(f"server did not start: {line!r} {(tmp_path / 'serve.log').read_text()}")
    return proc, line.split("listening on ")[1].split()[0]
