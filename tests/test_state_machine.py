"""A hypothesis state machine drives a real journal and a trivial model side by side.

The model is a dict seq -> (fields, payload) plus what the ring rules say: capacity in
slots, slot positions (a record takes ceil((128 + payload) / slot) slots), the sync
watermark and the retention policy.  Steps: append, append_many, sync watermark moves,
flush (index saved), reopen (clean, or without the index file), crash (the writer dies
without saving the index), a snapshot of the file restored later (a crash at that moment,
with the index of then, of later, or none), corrupting a byte of a record, and appends a
full ring must refuse; payments too (first records pending or final, outcomes, some on a
later day, begin and outcome in one append_many).  After every step the journal must agree
with the model: same head, the oldest record where the ring rules put it, every live record
byte for byte, the index equal to a brute-force scan, damaged records reported by verify
and never returned as good, and the day totals (``Journal.totals``) equal to a brute force
over ``Journal.payments(day=...)``: every day right after an open that built the totals
from the records, and every day whose payments' records are all live and intact otherwise
(a day the ring has partly overwritten, or a record of which was damaged after it was
counted, keeps its totals as they were -- also across an open that loads the totals saved
with a trusted index).
"""
import copy
import hashlib
import os
import shutil

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import posfast
from posfast import CorruptRecord, JournalFull

from conftest import (FIXED_JID, assert_index_matches_scan, drop_without_close, expected,
                      flip_byte, record_span, totals_of_payments)
from _writer_child import TS_BASE

SLOT = 128
MAX_PAYLOAD = 600
PAYMENT_KINDS = sorted(int(k) for k in posfast.records.PAYMENT_KINDS)
TRAINING = int(posfast.Flag.TRAINING)
DAY_US = 86_400_000_000


def is_payment(fields):
    return fields["kind"] in posfast.records.PAYMENT_KINDS and not fields["flags"] & TRAINING


def payment_fields(txn_id, terminal, kind, state, ts, amount, currency=156, method=2, flags=0):
    """All the fields `expected` gives a record, for a payment record."""
    return {"ts": ts, "terminal": terminal, "kind": kind, "state": state, "method": method,
            "flags": flags, "currency": currency, "amount": amount, "txn_id": txn_id,
            "ref_seq": 0, "receipt_no": txn_id % 100_000, "operator": 7,
            "client_ref": b"", "pan_last4": b"4242", "auth_code": b"", "rrn": b"",
            "channel": "", "order_ref": "", "host_ref": ""}


def ext_len(fields):
    """Bytes of a record's format-2 extension (its client_ref, order_ref and host_ref)."""
    return len(posfast._core.encode_ext(fields.get("client_ref"), fields.get("order_ref"),
                                        fields.get("host_ref")))


def nslots(payload_len):
    return -(-(128 + payload_len) // SLOT)


def payload_for(seq, size):
    base = expected(seq)[1] or b"\x5a"
    return (base * (size // len(base) + 1))[:size]


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Model:
    def __init__(self, capacity, retention, durability):
        self.capacity = capacity
        self.retention = retention
        self.durability = durability
        self.records = {}        # seq -> (fields, payload), live
        self.pos = {}            # seq -> slot position (1, 2, ...)
        self.next_pos = 1
        self.head = 0
        self.oldest = 1
        self.watermark = 0
        self.corrupted = set()   # live seqs whose bytes a test damaged
        self.history = {}        # seq -> fields of every record ever appended (never dropped)
        self.damaged_since_open = set()   # seqs damaged since the journal was last opened
        self.open_payments = {}  # txn -> fields of its first record, still PENDING
        self.lost = set()        # damaged seqs gone from the live range, reported lost
        # Lower bound of the first seq of the commit group holding the newest record: damage
        # at or after it cannot be told from a torn tail (the group may be dropped at open).
        # fsync/none: each append call starts a group; batch: only the first call after a sync
        # this test knows of (flush, watermark, reopen) surely does.
        self.group_floor = 1
        self.synced = True

    def plan(self, sizes, records=None):
        """(seqs the append would evict, whether the ring must refuse it)."""
        slots = sum(nslots(n + ext_len(expected(self.head + 1 + k)[0] if records is None
                                       else records[k])) for k, n in enumerate(sizes))
        end = self.next_pos + slots
        evicted = []
        for s in range(self.oldest, self.head + 1):
            if self.pos[s] + self.capacity >= end:
                break
            evicted.append(s)
        refuse = self.retention == "synced" and (
            slots > self.capacity or (evicted and evicted[-1] > self.watermark))
        return evicted, refuse

    def append(self, sizes, records=None):
        first = self.head + 1
        for k, n in enumerate(sizes):
            self.head += 1
            fields = dict(expected(self.head)[0]) if records is None else dict(records[k])
            self.records[self.head] = (fields, payload_for(self.head, n) if records is None else b"")
            self.history[self.head] = fields
            if is_payment(fields):
                if fields["txn_id"] == self.head and fields["state"] == posfast.State.PENDING:
                    self.open_payments[self.head] = fields
                elif fields["txn_id"] != self.head:
                    self.open_payments.pop(fields["txn_id"], None)
            self.pos[self.head] = self.next_pos
            self.next_pos += nslots(n + ext_len(fields))
        if self.durability != "batch" or self.synced:
            self.group_floor = first
        self.synced = False
        if first == 1:
            self.oldest = 1
        # a record goes once a later one's slots reach its first slot
        while self.oldest <= self.head and self.pos[self.oldest] + self.capacity < self.next_pos:
            self.drop(self.oldest)
            self.oldest += 1

    def drop(self, s):
        self.records.pop(s, None)
        self.pos.pop(s, None)
        self.corrupted.discard(s)

    def clean_day(self, day, day_rule):
        """Are all records of the payments begun on `day` live and intact since the journal was
        opened, and no live record of `day` one of a payment whose first record is gone?  Then
        the totals kept since the open are what the records give."""
        txns = {s for s, f in self.history.items() if is_payment(f) and f["txn_id"] == s
                and day_rule.day_number(f["ts"]) == day}
        for s, f in self.history.items():
            if is_payment(f) and f["txn_id"] in txns and (
                    s < self.oldest or s in self.corrupted or s in self.damaged_since_open):
                return False
        return not any(is_payment(f) and f["txn_id"] < self.oldest <= s
                       and day_rule.day_number(f["ts"]) == day
                       for s, (f, _p) in self.records.items())

    def want(self, seq, day_rule):
        fields, payload = self.records[seq]
        d = dict(fields)
        d.update(seq=seq, day=day_rule.day_number(fields["ts"]), payload=payload)
        return d


class JournalMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.journal = None

    # ------------------------------------------------------------ set-up
    @initialize(capacity=st.sampled_from([12, 24, 40]), retention=st.sampled_from(["synced", "overwrite"]),
                durability=st.sampled_from(["fsync", "fsync", "batch", "none"]))
    def create(self, capacity, retention, durability):
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="pf-sm-")
        self.path = os.path.join(self.dir, "sm.pfj")
        self.journal = posfast.Journal.create(self.path, capacity=capacity, slot_size=SLOT,
                                              max_payload=MAX_PAYLOAD, retention=retention,
                                              journal_id=FIXED_JID, **self.modes(durability))
        self.model = Model(capacity, retention, durability)
        self.snapshot = None

    @staticmethod
    def modes(durability):
        # batch: commit groups of 8 records and no timer (group boundaries stay deterministic)
        return dict(durability=durability, batch_records=8, batch_ms=10**7)

    def open(self):
        self.journal = posfast.Journal.open(self.path, **self.modes(self.model.durability))
        self.model.synced = True
        self.model.damaged_since_open = set()
        self._after_open()

    def teardown(self):
        if self.journal is not None:
            self.journal.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ appends
    def _append(self, sizes, records=None):
        model, j = self.model, self.journal
        _, refuse = model.plan(sizes, records)
        first = model.head + 1
        before = digest(self.path)
        try:
            if records is not None and len(sizes) == 1:
                got = range(j.append(**records[0]), first + 1)
            elif records is not None:
                columns = {name: [f[name] for f in records] for name in records[0]}
                got = j.append_many(columns)
            elif len(sizes) == 1:
                fields = expected(first)[0]
                got = range(j.append(payload=payload_for(first, sizes[0]), **fields), first + 1)
            else:
                seqs = range(first, first + len(sizes))
                columns = {name: [expected(s)[0][name] for s in seqs] for name in expected(first)[0]}
                got = j.append_many(columns, [payload_for(s, n) for s, n in zip(seqs, sizes)])
        except JournalFull as exc:
            assert refuse or self._damage_in_the_way(sizes, records), "JournalFull not predicted: %s" % exc
            assert "Nothing was written" in str(exc) or "append fewer" in str(exc)
            assert digest(self.path) == before and j.head_seq == model.head
            return
        assert not refuse, "the ring should have refused %s (watermark %d)" % (sizes, model.watermark)
        assert got == range(first, first + len(sizes))
        model.append(sizes, records)
        self._reconcile_oldest()

    def _damage_in_the_way(self, sizes, records=None):
        """Records found damaged at open have no known position: the ring counts them as
        evicted as soon as eviction reaches them, so one above the watermark blocks appends."""
        model = self.model
        evicted, _ = model.plan(sizes, records)
        s = model.oldest
        while s <= model.head and (s in evicted or s in model.corrupted):
            if s in model.corrupted and s > model.watermark:
                return True
            s += 1
        return False

    @rule(size=st.one_of(st.integers(0, 20), st.sampled_from([0, 127, 128, 129, 255, 256, 300]),
                         st.integers(0, MAX_PAYLOAD)))
    def append(self, size):
        self._append([size])

    @rule(sizes=st.lists(st.integers(0, MAX_PAYLOAD) | st.just(0), min_size=2, max_size=8))
    def append_many(self, sizes):
        self._append(sizes)

    @rule(data=st.data(), count=st.integers(1, 4), pair=st.booleans())
    def pay(self, data, count, pair):
        """Payments: first records PENDING or final (single-record sales from a bulk import),
        and with `pair` a begin and its outcome in the same append_many."""
        first = self.model.head + 1
        records = []
        for _ in range(count):
            txn = first + len(records)
            ts = TS_BASE + data.draw(st.integers(0, 3 * DAY_US - 1))
            begin = payment_fields(
                txn, data.draw(st.integers(1, 5)), data.draw(st.sampled_from(PAYMENT_KINDS)),
                data.draw(st.sampled_from([1, 1, 2, 2, 3, 4, 5, 6])), ts,
                data.draw(st.integers(0, 10**6)), data.draw(st.sampled_from([156, 978])),
                data.draw(st.integers(0, 6)), data.draw(st.sampled_from([0, 0, 0, TRAINING])))
            records.append(begin)
            if pair:
                outcome = dict(begin, state=data.draw(st.sampled_from([2, 3, 6])),
                               ts=ts + data.draw(st.integers(0, 4 * 3_600_000_000)))
                records.append(outcome)
        self._append([0] * len(records), records)

    @precondition(lambda self: any(t >= self.model.oldest for t in self.model.open_payments))
    @rule(data=st.data())
    def finish(self, data):
        """The outcome of a payment in doubt whose first record is live (sometimes on a later
        business day: it then spans two days)."""
        live = sorted(t for t in self.model.open_payments if t >= self.model.oldest)
        txn = data.draw(st.sampled_from(live))
        begin = self.model.open_payments[txn]
        self._append([0], [dict(begin, state=data.draw(st.sampled_from([2, 2, 3, 4, 5, 6])),
                                ts=begin["ts"] + data.draw(st.integers(0, 6 * 3_600_000_000)))])

    @rule(data=st.data())
    def fill_until_full(self, data):
        """Appends until the ring refuses (synced) or wraps (overwrite)."""
        for _ in range(self.model.capacity + 2):
            self._append([data.draw(st.integers(0, 300))])

    # ------------------------------------------------------------ sync
    @precondition(lambda self: self.model.head > self.model.watermark)
    @rule(data=st.data())
    def sync_watermark(self, data):
        target = data.draw(st.integers(self.model.watermark + 1, self.model.head))
        self.journal.set_sync_watermark(target)
        self.model.watermark = target
        self.model.synced = True            # the header waits for pending records to sync

    @rule()
    def flush(self):
        self.journal.flush()
        self.model.synced = True

    # ------------------------------------------------------------ reopen / crash
    def _reconcile_oldest(self):
        """Damage at the oldest end may go before the model says (at open it cannot be told
        from eviction; a record found damaged at open goes as soon as eviction reaches it)."""
        model, j = self.model, self.journal
        if model.head < model.oldest or j.oldest_seq <= model.oldest:
            return
        report = j.verify(check_index=False)
        while model.oldest < j.oldest_seq:
            s = model.oldest
            assert s in model.corrupted, "seq %d vanished (oldest now %d)" % (s, j.oldest_seq)
            if model.retention == "synced" and s > model.watermark:
                # never evictable: it must at least be reported as lost
                assert any(p.seq <= s and "lost" in p.cause for p in report.problems), report
                model.lost.add(s)
            model.drop(s)
            model.oldest += 1

    _after_open = _reconcile_oldest

    @rule(drop_index=st.booleans())
    def reopen_clean(self, drop_index):
        self.journal.close()
        if drop_index:
            os.unlink(self.path + ".idx")
        self.open()

    @rule()
    def crash(self):
        drop_without_close(self.journal)
        self.open()

    @rule()
    def take_snapshot(self):
        image = os.path.join(self.dir, "snap.pfj")
        shutil.copyfile(self.path, image)
        idx = self.path + ".idx"
        if os.path.exists(idx):
            shutil.copyfile(idx, image + ".idx")
        elif os.path.exists(image + ".idx"):
            os.unlink(image + ".idx")
        self.snapshot = copy.deepcopy(self.model)

    @precondition(lambda self: self.snapshot is not None)
    @rule(index=st.sampled_from(["then", "now", "none"]))
    def crash_back_to_snapshot(self, index):
        """The machine died when the snapshot was taken: the file as it was then."""
        drop_without_close(self.journal)
        image = os.path.join(self.dir, "snap.pfj")
        shutil.copyfile(image, self.path)
        idx = self.path + ".idx"
        if index == "then":
            if os.path.exists(image + ".idx"):
                shutil.copyfile(image + ".idx", idx)
            elif os.path.exists(idx):
                os.unlink(idx)
        elif index == "none" and os.path.exists(idx):
            os.unlink(idx)
        self.model = copy.deepcopy(self.snapshot)
        self.open()

    # ------------------------------------------------------------ damage
    def _corruptible(self):
        m = self.model
        return [s for s in range(m.oldest, m.head + 1)
                if s in m.records and s not in m.corrupted and s < m.group_floor]

    @precondition(lambda self: bool(self._corruptible()))
    @rule(data=st.data())
    def corrupt_a_byte(self, data):
        seq = data.draw(st.sampled_from(self._corruptible()))
        span = record_span(self.journal, seq)
        offset = data.draw(st.sampled_from(span[:128]) | st.sampled_from(span))
        flip_byte(self.path, offset, data.draw(st.sampled_from([0x01, 0x80, 0xFF])))
        self.model.corrupted.add(seq)
        self.model.damaged_since_open.add(seq)
        with pytest.raises(CorruptRecord, match="seq %d " % seq):
            self.journal.get(seq)

    # ------------------------------------------------------------ invariants
    @invariant()
    def agrees_with_model(self):
        if self.journal is None:
            return
        model, j = self.model, self.journal
        assert j.head_seq == model.head
        assert j.sync_watermark == model.watermark
        if model.head >= model.oldest:
            assert j.oldest_seq == model.oldest, (j.oldest_seq, model.oldest)
        if model.retention == "synced":
            # nothing unsynced ever evicted (damaged ones may be gone, reported lost)
            assert set(range(model.watermark + 1, j.oldest_seq)) <= model.lost
        good = [s for s in range(model.oldest, model.head + 1) if s not in model.corrupted]
        rows = j.query()
        assert rows["seq"].tolist() == good
        payloads = j.payloads(rows["seq"])
        for s, payload in zip(good, payloads):
            assert payload == model.records[s][1]
        for s in good:
            assert j.get(s).to_dict() == model.want(s, j.day_rule)
        report = j.verify(check_index=False)
        reported = {p.seq for p in report.problems if p.seq >= model.oldest}
        assert reported == set(model.corrupted), (report, model.corrupted)
        for s in model.corrupted:
            with pytest.raises(CorruptRecord):
                j.get(s)
        assert_index_matches_scan(j)

    @invariant()
    def totals_match_the_payments(self):
        if self.journal is None:
            return
        model, j = self.model, self.journal
        rule = j.day_rule
        # first call since the open, and no totals saved with the index: built from the records
        rebuilt = j._totals is None and j._saved_totals() is None
        j.totals(0)
        days = set(j._totals.days()) | {rule.day_number(f["ts"]) for f, _p in model.records.values()
                                        if is_payment(f)}
        for day in sorted(days):
            if not (rebuilt or model.clean_day(day, rule)):
                continue
            pays = j.payments(day=day)
            for terminal in (None, 1, 2, 3, 4, 5):
                mine = pays if terminal is None else pays[pays["terminal"] == terminal]
                assert j.totals(day, terminal) == totals_of_payments(mine), (day, terminal, rebuilt)


JournalMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_journal_against_model = JournalMachine.TestCase


class LongJournalMachine(JournalMachine):
    pass


LongJournalMachine.TestCase.settings = settings(
    max_examples=400, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_journal_against_model_long = pytest.mark.slow(LongJournalMachine.TestCase)
