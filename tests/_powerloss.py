"""Power-loss simulation for the journal core: a recording layer and a crash-image builder.

Recording
    `Recorder` sits on ``ring.io_hook``, through which the core sends every
    pwrite (offset, bytes) and every fdatasync.  It keeps them in order, with
    what the workload was told: which seqs each append returned and which sync
    watermark `set_sync_watermark` stored.

Crash images
    For a crash after the k-th completed sync, the file holds
      * the file as recording began, plus every write issued before that sync,
        in order (the disk promised them);
      * plus any subset of the writes issued after it (before the next sync
        completed): each write kept, dropped, or torn at sector granularity
        (512 B or 4 KiB pieces, each piece kept, dropped or garbage-filled),
        the surviving pieces applied in any order;
    and the index file ``<path>.idx`` is absent, the one the last clean close
    left, or a torn copy of that (it is written by plain Python I/O at close/flush,
    never through the hook, and not fsynced: a crash leaves an older or torn one).

    Assumption: powersafe overwrite, as SQLite's unix VFS assumes by default
    (SQLITE_IOCAP_POWERSAFE_OVERWRITE): a torn write damages only the bytes it
    was writing, never neighbouring bytes of the same sector.

Oracle (`check_image`)
    acknowledged = records whose bytes were all written before the last completed
    sync (in fsync mode: every append that returned; in batch mode: every record
    a completed sync covered).  A record may legitimately be gone only if a write
    issued later covered its first slot (the ring evicted it: retention
    "overwrite", or seq <= watermark under "synced"), and then every older record
    may be gone too.  Every live record must equal, byte for byte, what the
    writer wrote for that seq; live seqs run oldest..head without a gap;
    verify() finds nothing; seqs dropped as torn were never acknowledged; the
    watermark is one that was stored, and at least the last one made durable;
    opening again (read-only, with the index the first open saved, without
    any index) gives the same state.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import numpy as np

import posfast
from posfast import _core
from posfast.index import Index

DATA = _core.DATA_OFFSET
HEAD = _core.HEAD_SIZE
SECTORS = (512, 4096)


# --------------------------------------------------------------------------- recording
@dataclass
class Expected:
    """What the writer wrote for one seq."""
    seq: int
    pos: int
    raw: bytes            # record head + payload, as on disk
    payload: bytes
    link: bytes
    ranges: list          # file byte ranges [(start, end)) of the record's slots
    last_op: int          # index of the last write op covering its slots (-1: before recording)


@dataclass
class WatermarkSet:
    value: int
    first_op: int         # len(ops) when set_sync_watermark was called
    durable_at: int       # index of the sync that made the first header copy durable (or None)


class Recorder:
    """Record every write and sync of an open writable Journal (from now on).

    What the writer wrote for each seq is read back from a shadow copy of the file
    that every recorded write is applied to (a record is known once its CRC holds
    there), so records an append evicted again before returning are known too.
    """

    def __init__(self, journal):
        self.journal = journal
        ring = journal._ring
        self.path = journal.path
        self.capacity = ring.capacity
        self.slot_size = ring.slot_size
        self.max_payload = ring.max_payload
        self.version = ring.version
        self.jid_crc = _core.crc32c(ring.journal_id)
        self.retention = journal.retention
        with open(self.path, "rb") as f:
            self.base = f.read()
        try:
            with open(self.path + ".idx", "rb") as f:
                self.index = f.read()
        except FileNotFoundError:
            self.index = None
        self.shadow = bytearray(self.base)
        self.ops: list = []                    # ("write", offset, bytes) | ("sync", 0, None)
        self.expected: dict = {}
        self.watermarks: list = []
        self.initial_watermark = ring.sync_watermark
        self.initial_seqs = range(ring.oldest_seq, ring.head_seq + 1)
        for seq in self.initial_seqs:
            slot = ring.slot_of(seq)
            got = self._record_at(slot)
            assert got is not None and got.seq == seq, "live seq %d unreadable at start" % seq
            self.expected[seq] = got
        self.fault = None                      # optional extra hook (fault injection)
        ring.io_hook = self._hook

    def _hook(self, op, offset, data):
        if self.fault is not None:
            result = self.fault(op, offset, data)      # may raise OSError: not recorded then
            if op == "write" and result is not None and result < len(data):
                data = data[:result]
        else:
            result = None
        self.ops.append((op, offset, data))
        if op == "write":
            _apply(self.shadow, offset, data)
            self._learn(len(self.ops) - 1, offset, len(data))
        return result

    def detach(self):
        self.journal._ring.io_hook = None

    # -- what the writer wrote
    def record_ranges(self, pos, nbytes):
        slot = (pos - 1) % self.capacity
        nslots = -(-nbytes // self.slot_size)
        first = min(nslots, self.capacity - slot)
        ranges = [(DATA + slot * self.slot_size, DATA + (slot + first) * self.slot_size)]
        if first < nslots:
            ranges.append((DATA, DATA + (nslots - first) * self.slot_size))
        return ranges

    def _record_at(self, slot, last_op=-1):
        """The intact record whose head is in `slot` of the shadow, or None."""
        ss, cap = self.slot_size, self.capacity
        start = DATA + slot * ss
        head = bytes(self.shadow[start:start + HEAD])
        if len(head) < HEAD:
            return None
        pos = int.from_bytes(head[16:24], "little")
        seq = int.from_bytes(head[8:16], "little")
        plen = int.from_bytes(head[4:6], "little")
        ext = body_extension(head, self.version)       # format 2: the extension, then the payload
        if pos == 0 or seq == 0 or (pos - 1) % cap != slot or plen > self.max_payload:
            return None
        ranges = self.record_ranges(pos, HEAD + ext + plen)
        raw = b"".join(bytes(self.shadow[a:b]) for a, b in ranges)[:HEAD + ext + plen]
        if int.from_bytes(raw[:4], "little") != _core.crc32c(raw[4:], self.jid_crc):
            return None
        return Expected(seq, pos, raw, raw[HEAD + ext:], raw[112:128], ranges, last_op)

    def _learn(self, op_index, offset, length):
        if offset < DATA:
            return
        ss, cap = self.slot_size, self.capacity
        first = (offset - DATA) // ss
        last = min(cap - 1, (offset + length - 1 - DATA) // ss)
        reach = -(-(HEAD + _core.MAX_EXT + self.max_payload) // ss)   # a head may lie this far back
        slots = set(range(first, last + 1)) | {(first - d) % cap for d in range(1, reach)}
        for slot in slots:
            got = self._record_at(slot, op_index)
            if got is None:
                continue
            known = self.expected.get(got.seq)
            if known is None:
                self.expected[got.seq] = got
            elif known.raw != got.raw:
                raise AssertionError("seq %d written twice with different bytes" % got.seq)
            elif any(offset < b and offset + length > a for a, b in known.ranges):
                known.last_op = op_index       # more of its own bytes (a split or short write)

    def appended(self, seqs):
        """Call after an append returned these seqs: cross-check the shadow with the live ring."""
        ring = self.journal._ring
        for seq in seqs:
            seq = int(seq)
            exp = self.expected.get(seq)
            assert exp is not None, "seq %d was returned but never written" % seq
            if ring.oldest_seq <= seq:
                rec = ring.get(seq)
                assert rec.payload == exp.payload and rec.link == exp.link

    def set_watermark(self, value):
        start = len(self.ops)
        try:
            self.journal.set_sync_watermark(value)
        finally:            # even a failed attempt may have made its first header copy durable
            self._note_watermark(value, start)

    def _note_watermark(self, value, start):
        durable_at = None
        seen_header = False
        for i in range(start, len(self.ops)):
            op, off, _ = self.ops[i]
            if op == "write" and off < DATA:
                seen_header = True
            elif op == "sync" and seen_header:
                durable_at = i
                break
        self.watermarks.append(WatermarkSet(value, start, durable_at))

    # -- crash points
    def sync_indices(self):
        return [i for i, (op, _, _) in enumerate(self.ops) if op == "sync"]


# --------------------------------------------------------------------------- images
class Images:
    """Crash images of one recording."""

    def __init__(self, rec: Recorder):
        self.rec = rec
        self.syncs = rec.sync_indices()
        self._durable = {0: bytes(rec.base)}
        self._durable_k = 0

    @property
    def crash_points(self):
        """k = number of completed syncs: 0 .. len(syncs)."""
        return range(len(self.syncs) + 1)

    def durable(self, k):
        """File content after the k-th completed sync (all earlier writes applied in order)."""
        if k not in self._durable:
            prev = max(j for j in self._durable if j < k)
            buf = bytearray(self._durable[prev])
            start = self.syncs[prev - 1] + 1 if prev else 0
            for op, off, data in self.rec.ops[start:self.syncs[k - 1]]:
                if op == "write":
                    _apply(buf, off, data)
            self._durable[k] = bytes(buf)
        return self._durable[k]

    def tail(self, k):
        """(start, end): ops issued after the k-th sync and before the next one completed."""
        start = self.syncs[k - 1] + 1 if k else 0
        end = self.syncs[k] if k < len(self.syncs) else len(self.rec.ops)
        return start, end

    def tail_writes(self, k):
        start, end = self.tail(k)
        return [(off, data) for op, off, data in self.rec.ops[start:end] if op == "write"]

    def build(self, k, fates, rng, sector=512):
        """Image for crash point k; fates[i] in keep / drop / torn for each tail write."""
        buf = bytearray(self.durable(k))
        pieces = []
        for (off, data), fate in zip(self.tail_writes(k), fates):
            if fate == "keep":
                pieces.append((off, data))
            elif fate == "torn":
                for p_off, p_data in split_sectors(off, data, sector):
                    roll = rng.random()
                    if roll < 0.45:
                        pieces.append((p_off, p_data))
                    elif roll < 0.75:
                        pieces.append((p_off, garbage(rng, len(p_data))))
                    # else: the sector kept its old content
        rng.shuffle(pieces)
        for off, data in pieces:
            _apply(buf, off, data)
        return bytes(buf)

    def random_fates(self, k, rng):
        n = len(self.tail_writes(k))
        return [rng.choice(("keep", "keep", "drop", "torn", "torn")) for _ in range(n)]


def _apply(buf, off, data):
    end = off + len(data)
    if end > len(buf):
        buf.extend(bytes(end - len(buf)))
    buf[off:end] = data


def split_sectors(off, data, sector):
    """Cut a write at the device's sector boundaries (absolute file offsets)."""
    out = []
    pos, end = off, off + len(data)
    while pos < end:
        stop = min(end, (pos // sector + 1) * sector)
        out.append((pos, data[pos - off:stop - off]))
        pos = stop
    return out


def garbage(rng, n):
    kind = rng.random()
    if kind < 0.5:
        return rng.randbytes(n)
    if kind < 0.75:
        return b"\xff" * n
    return bytes(n)


# --------------------------------------------------------------------------- checking
class ImageFailure(AssertionError):
    pass


def index_for(rec, with_index):
    """The index file of an image: none, the last clean close's, or ("torn") a torn copy of it."""
    if not with_index or rec.index is None:
        return None
    if with_index == "torn":
        cut = len(rec.index) * 2 // 3
        return rec.index[:cut] + bytes(min(512, len(rec.index) - cut))
    return rec.index


def write_image(path, image, index_bytes):
    with open(path, "wb") as f:
        f.write(image)
    for extra in (path + ".idx",):
        if os.path.exists(extra):
            os.unlink(extra)
    if index_bytes is not None:
        with open(path + ".idx", "wb") as f:
            f.write(index_bytes)


def body_extension(head, version):
    """Bytes of a record's extension (format 2: between the head and the payload)."""
    return int.from_bytes(head[100:102], "little") if version >= 2 else 0


def raw_of(path, ring, seq):
    """Bytes (head + payload) of live seq as the file now holds them."""
    pos = ring.position_of(seq)
    if not pos:
        return None
    slot = (pos - 1) % ring.capacity
    with open(path, "rb") as f:
        f.seek(DATA + slot * ring.slot_size)
        head = f.read(HEAD)
        plen = int.from_bytes(head[4:6], "little")
        length = HEAD + body_extension(head, ring.version) + plen
        ring_end = DATA + ring.capacity * ring.slot_size
        start = DATA + slot * ring.slot_size
        f.seek(start)
        first = f.read(min(length, ring_end - start))
        if len(first) < length:
            f.seek(DATA)
            first += f.read(length - len(first))
    return first


def state_of(journal):
    """What a user can observe: live range, watermark, every live record's bytes (None if damaged)."""
    ring = journal._ring
    raws = []
    for seq in range(ring.oldest_seq, ring.head_seq + 1):
        try:
            journal.get(seq)
        except posfast.CorruptRecord:
            raws.append(None)
        else:
            raws.append(raw_of(journal.path, ring, seq))
    return (ring.oldest_seq, ring.head_seq, ring.sync_watermark, tuple(raws))


@dataclass
class Oracle:
    """What a crash image must show, from the recording."""
    acked: set            # acknowledged seqs
    need: set             # acknowledged and not evicted by any write issued before the crash
    doomed_top: int       # seqs up to this may be gone (evicted by a write in flight or before)
    top: int              # highest seq written before the crash
    wm_min: int           # watermark made durable
    wm_allowed: set       # watermarks ever stored


def oracle(rec: Recorder, images: Images, k) -> Oracle:
    ack_end = images.syncs[k - 1] if k else -1          # writes before this op index are durable
    _, issue_end = images.tail(k)
    acked = {s for s, e in rec.expected.items() if e.last_op < ack_end}
    doomed_top = 0
    for s, e in rec.expected.items():
        for i in range(e.last_op + 1, issue_end):
            op, off, data = rec.ops[i]
            if op == "write" and off >= DATA and any(off < b and off + len(data) > a
                                                     for a, b in e.ranges):
                doomed_top = max(doomed_top, s)
                break
    need = {s for s in acked if s > doomed_top}
    issued = [s for s, e in rec.expected.items() if e.last_op < issue_end]
    wm_min = rec.initial_watermark
    wm_allowed = {rec.initial_watermark}
    for w in rec.watermarks:
        if w.first_op < issue_end:
            wm_allowed.add(w.value)
        if w.durable_at is not None and w.durable_at <= ack_end:
            wm_min = max(wm_min, w.value)
    return Oracle(acked, need, doomed_top, max(issued, default=0), wm_min, wm_allowed)


def check_open(journal, rec, orc: Oracle, what):
    """Assert every promise on one opened image; returns its state."""
    ring = journal._ring

    def fail(msg):
        raise ImageFailure("%s: %s (oldest %d head %d wm %d damaged %r torn %r)" % (
            what, msg, ring.oldest_seq, ring.head_seq, ring.sync_watermark, ring.damaged[:5],
            ring.torn[:5]))

    missing = sorted(s for s in orc.need if not ring.oldest_seq <= s <= ring.head_seq)
    if missing:
        fail("acknowledged seqs lost: %s" % missing[:10])
    if orc.acked and ring.head_seq < max(orc.acked):
        fail("head %d below the newest acknowledged seq %d: seqs would be reissued"
             % (ring.head_seq, max(orc.acked)))
    if ring.head_seq > orc.top:
        fail("head %d beyond the highest seq written (%d)" % (ring.head_seq, orc.top))
    for seq, _slot, _detail in ring.damaged:
        if seq in orc.need or seq > orc.doomed_top:
            fail("damage reported on retained seq %d" % seq)
    for seq, _slot in ring.torn:
        if seq in orc.acked:
            fail("acknowledged seq %d dropped as torn" % seq)
    if ring.sync_watermark not in orc.wm_allowed or ring.sync_watermark < orc.wm_min:
        fail("watermark %d not in %s / below %d" % (ring.sync_watermark, sorted(orc.wm_allowed),
                                                    orc.wm_min))
    if ring.sync_watermark > ring.head_seq:
        fail("watermark %d above the newest record %d" % (ring.sync_watermark, ring.head_seq))
    damaged = set()
    for seq in range(ring.oldest_seq, ring.head_seq + 1):
        exp = rec.expected.get(seq)
        if exp is None:
            fail("seq %d is live but was never written" % seq)
        try:
            got = journal.get(seq)
        except posfast.CorruptRecord as e:
            if seq in orc.need or seq > orc.doomed_top:
                fail("retained seq %d unreadable: %s" % (seq, e))
            damaged.add(seq)
            continue
        if got.payload != exp.payload or got.link != exp.link or got.seq != seq:
            fail("seq %d differs from what was written" % seq)
        if raw_of(journal.path, ring, seq) != exp.raw:
            fail("seq %d: bytes on disk differ from what was written" % seq)
    report = journal.verify()
    # seq 0: "index file disagrees" -- a saved index still lists the damaged seqs
    reported = {p.seq for p in report.problems} - ({0} if damaged else set())
    if reported != damaged and not (damaged <= reported and reported - damaged <= {1}):
        fail("verify reports %s, reads fail for %s" % (sorted(reported), sorted(damaged)))
    for p in report.problems:
        if p.seq == 0 and damaged:
            continue
        if p.seq == 0 or p.seq in orc.need or p.seq > orc.doomed_top or not p.cause:
            fail("verify: %s" % p)
    seqs = journal.query()["seq"]
    live = [s for s in range(ring.oldest_seq, ring.head_seq + 1) if s not in damaged]
    if not np.array_equal(seqs, np.array(live, dtype=np.uint64)):
        fail("query() does not return exactly the intact live seqs")
    return state_of(journal)


def check_image(rec, images, k, image, with_index, path, what, readonly_too=True):
    """Open one crash image every way and check it.  Returns its state.

    With $POSFAST_POWERLOSS_KEEP set to a directory, a failing image (and its index) is
    saved there for a post-mortem."""
    try:
        return _check_image(rec, images, k, image, with_index, path, what, readonly_too)
    except ImageFailure:
        keep = os.environ.get("POSFAST_POWERLOSS_KEEP")
        if keep:
            os.makedirs(keep, exist_ok=True)
            n = len(os.listdir(keep))
            write_image(os.path.join(keep, "fail%d.pfj" % n), image,
                        index_for(rec, with_index))
            with open(os.path.join(keep, "fail%d.txt" % n), "w") as f:
                f.write(what + "\n")
        raise


def _check_image(rec, images, k, image, with_index, path, what, readonly_too):
    orc = oracle(rec, images, k)
    idx = index_for(rec, with_index)
    write_image(path, image, idx)
    ro_state = None
    if readonly_too:
        with posfast.Journal.open(path, readonly=True) as j:
            ro_state = check_open(j, rec, orc, what + " [read-only]")
    j = posfast.Journal.open(path)
    try:
        first = check_open(j, rec, orc, what + " [first open]")
    finally:
        j.close()
    if ro_state is not None and ro_state[:2] != first[:2]:
        raise ImageFailure("%s: read-only open saw seq %d..%d, writable open %d..%d"
                           % (what, ro_state[0], ro_state[1], first[0], first[1]))
    with posfast.Journal.open(path) as j:
        again = check_open(j, rec, orc, what + " [second open, saved index]")
    if again != first:
        raise ImageFailure("%s: opening twice gave different states" % what)
    os.unlink(path + ".idx")
    with posfast.Journal.open(path) as j:
        scanned = check_open(j, rec, orc, what + " [third open, no index]")
    if scanned != first:
        raise ImageFailure("%s: the index and a full scan disagree" % what)
    return first


def recovery_writes(path, with_index):
    """Run the core's recovery on the file at `path` with its writes recorded (as Journal.open does)."""
    ring = _core.Ring.open(path, True)
    ops = []
    ring.io_hook = lambda op, off, data: ops.append((op, off, data))
    loaded = Index.load(path + ".idx", ring.journal_id) if with_index else None
    if loaded is None or not ring.recover_from(loaded[1], loaded[2], loaded[3], loaded[4]):
        ring.recover_scan()
    ring.io_hook = None
    ring.close()
    return ops


def check_recovery_crashes(rec, images, k, image, with_index, path, what, rng, expected_state,
                           variants=6):
    """Crash the recovery of `image` part-way (its own writes kept/dropped/torn); re-open must agree.

    Returns how many images were checked."""
    idx = index_for(rec, with_index)
    write_image(path, image, idx)
    ops = recovery_writes(path, with_index)
    if not any(op == "write" for op, _, _ in ops):
        return 0
    syncs = [i for i, (op, _, _) in enumerate(ops) if op == "sync"]
    orc = oracle(rec, images, k)
    checked = 0
    for v in range(variants):
        # crash after the c-th sync of recovery: writes before it landed, later ones in any state
        c = rng.randrange(len(syncs) + 1)
        start = syncs[c - 1] + 1 if c else 0
        end = syncs[c] if c < len(syncs) else len(ops)
        buf = bytearray(image)
        for op, off, data in ops[:start]:
            if op == "write":
                _apply(buf, off, data)
        pieces = []
        for op, off, data in ops[start:end]:
            if op != "write":
                continue
            fate = rng.choice(("keep", "drop", "torn")) if v else ("keep" if rng.random() < 0.5
                                                                    else "drop")
            if fate == "keep":
                pieces.append((off, data))
            elif fate == "torn":
                for p in split_sectors(off, data, rng.choice(SECTORS)):
                    r = rng.random()
                    if r < 0.5:
                        pieces.append(p)
                    elif r < 0.75:
                        pieces.append((p[0], garbage(rng, len(p[1]))))
        rng.shuffle(pieces)
        for off, data in pieces:
            _apply(buf, off, data)
        write_image(path, bytes(buf), idx)
        tag = "%s, recovery crashed after its sync %d (variant %d)" % (what, c, v)
        with posfast.Journal.open(path) as j:
            state = check_open(j, rec, orc, tag)
        if state != expected_state:
            raise ImageFailure("%s: re-running recovery gave %d..%d, the uninterrupted one %d..%d"
                               % (tag, state[0], state[1], expected_state[0], expected_state[1]))
        checked += 1
    return checked


# --------------------------------------------------------------------------- workloads
@dataclass
class Workload:
    """A journal configuration and a random stream of appends, syncs and watermark moves."""
    name: str
    capacity: int = 64
    slot_size: int = 128
    durability: str = "fsync"
    retention: str = "synced"
    max_payload: int = 600
    batch_records: int = 4
    setup_records: int = 6
    steps: int = 40
    payload_sizes: tuple = (0, 0, 0, 20, 100, 200, 300, 500)
    many_max: int = 4
    flush_every: int = 5           # batch mode: explicit flush() now and then
    watermark_lag: int = 3         # synced retention: keep the watermark this far behind
    seed: int = 0
    stats: dict = field(default_factory=dict)


def _fields(rng, seq_hint):
    return dict(terminal=rng.randrange(1, 5), kind=rng.choice(("sale", "refund", "print", "note")),
                state=rng.choice(("approved", "pending", "ok")), amount=abs(rng.randrange(-10**6, 10**9)),
                currency=rng.choice((156, 978, 840)), receipt_no=seq_hint,
                client_ref=rng.randbytes(rng.choice((0, 16))).rstrip(b"\0"))


def run_workload(directory, wl: Workload) -> Recorder:
    """Create a journal, fill it a little, close it cleanly, reopen and record the workload."""
    rng = random.Random(wl.seed)
    path = os.path.join(directory, "%s.pfj" % wl.name)
    for extra in (path, path + ".idx"):
        if os.path.exists(extra):
            os.unlink(extra)
    j = posfast.Journal.create(path, capacity=wl.capacity, slot_size=wl.slot_size,
                               max_payload=wl.max_payload, retention=wl.retention)
    for i in range(wl.setup_records):
        j.append(payload=rng.randbytes(rng.choice(wl.payload_sizes)), **_fields(rng, i))
        if wl.retention == "synced" and j.head_seq > wl.watermark_lag:
            j.set_sync_watermark(j.head_seq - wl.watermark_lag)
    j.close()
    return record_session(path, wl, rng)


def record_session(path, wl: Workload, rng) -> Recorder:
    """Open the journal at `path` (recovery runs unrecorded) and record wl.steps steps."""
    j = posfast.Journal.open(path, durability=wl.durability, batch_records=wl.batch_records,
                             batch_ms=10**7)
    rec = Recorder(j)
    try:
        for step in range(wl.steps):
            roll = rng.random()
            if wl.durability == "batch" and step % wl.flush_every == wl.flush_every - 1:
                j.flush()
                continue
            if roll < 0.25 and wl.many_max > 1:
                n = rng.randrange(2, wl.many_max + 1)
                sizes = [rng.choice(wl.payload_sizes) for _ in range(n)]
                cols = {k: [v] * n for k, v in _fields(rng, step).items()}
                cols["amount"] = [rng.randrange(10**6) for _ in range(n)]
                payloads = [rng.randbytes(s) for s in sizes]
                seqs = _append_room(j, rec, wl, lambda: j.append_many(cols, payloads=payloads))
            else:
                payload = rng.randbytes(rng.choice(wl.payload_sizes))
                fields_ = _fields(rng, step)
                seqs = _append_room(j, rec, wl, lambda: [j.append(payload=payload, **fields_)])
            rec.appended(seqs)
            if wl.retention == "synced" and rng.random() < 0.3 and \
                    j.head_seq - wl.watermark_lag > j.sync_watermark:
                rec.set_watermark(j.head_seq - wl.watermark_lag)
        j.close()        # syncs (recorded); the index it saves is not part of any image
    finally:
        rec.detach()
        if not j._ring.closed:
            j.close()
    return rec


def _append_room(j, rec, wl, do):
    try:
        return do()
    except posfast.JournalFull:
        rec.set_watermark(j.head_seq)
        return do()


WORKLOADS = [
    Workload("fsync_synced", durability="fsync", retention="synced", capacity=48, seed=1),
    Workload("batch_synced", durability="batch", retention="synced", capacity=48, seed=2),
    Workload("fsync_overwrite", durability="fsync", retention="overwrite", capacity=16,
             payload_sizes=(0, 0, 50, 150, 300), many_max=3, seed=3),
    Workload("batch_overwrite", durability="batch", retention="overwrite", capacity=16,
             payload_sizes=(0, 0, 50, 150, 300), many_max=3, batch_records=3, seed=4),
    Workload("batch_slot256", durability="batch", retention="synced", capacity=24, slot_size=256,
             payload_sizes=(0, 100, 200, 400, 900), max_payload=1000, seed=5),
    # append_many of more slots than the ring holds: split into commit groups of half a ring
    Workload("fsync_overwrite_wide", durability="fsync", retention="overwrite", capacity=16,
             payload_sizes=(0, 0, 0, 150), many_max=14, steps=30, seed=6),
]


# --------------------------------------------------------------------------- driving
@dataclass
class Tally:
    """What a round checked (the figures RELIABILITY.md quotes)."""
    crash_points: int = 0
    images: int = 0
    opens: int = 0
    torn_images: int = 0          # images whose recovery dropped a torn tail
    recovery_crash_images: int = 0
    sessions: int = 0
    false_alarms: int = 0         # images where records a write in flight had evicted read as damaged

    def add(self, other):
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def exhaustive_fates(n, limit=64):
    """Every keep/drop combination of n tail writes (if there are at most log2(limit))."""
    if 2 ** n > limit:
        return []
    return [["keep" if mask >> i & 1 else "drop" for i in range(n)] for mask in range(2 ** n)]


def check_recording(rec, workdir, rng, per_point=2, exhaustive=False, recovery_variants=2,
                    readonly_every=1, keep_images=None):
    """Check crash images at every sync point of one recording; returns a Tally.

    keep_images: optional list that receives (recovery wrote, k, image, with_index) of every
    image (to chain a second session from)."""
    images = Images(rec)
    tally = Tally(sessions=1)
    path = os.path.join(workdir, "image.pfj")
    n = 0
    for k in images.crash_points:
        tally.crash_points += 1
        plans = []
        if exhaustive:
            plans += [(f, 512) for f in exhaustive_fates(len(images.tail_writes(k)))]
        plans += [(images.random_fates(k, rng), rng.choice(SECTORS)) for _ in range(per_point)]
        for v, (fates, sector) in enumerate(plans):
            with_index = rec.index is not None and (v + k) % 2 == 0
            if with_index and (v + k) % 3 == 0:
                with_index = "torn"        # the index is not fsynced: a crash can tear it
            image = images.build(k, fates, rng, sector)
            what = "%s: crash after sync %d of %d, tail writes %s, %d-byte sectors, %s" % (
                os.path.basename(rec.path), k, len(images.syncs), fates, sector,
                {True: "old index", "torn": "torn old index"}.get(with_index, "no index"))
            n += 1
            state = check_image(rec, images, k, image, with_index, path, what,
                                readonly_too=(n % readonly_every == 0))
            tally.images += 1
            tally.opens += 4 if n % readonly_every == 0 else 3
            if None in state[3]:
                tally.false_alarms += 1
            got = 0
            if recovery_variants:
                got = check_recovery_crashes(rec, images, k, image, with_index, path, what, rng,
                                             state, variants=recovery_variants)
                if got:
                    tally.torn_images += 1
                    tally.recovery_crash_images += got
            if keep_images is not None:
                keep_images.append((bool(got), k, image, with_index))
    return tally


def chain_session(rec, workdir, image, with_index, wl, rng):
    """Open a crash image (recovery runs) and record a second session on top of it."""
    path = os.path.join(workdir, "chained-%s.pfj" % wl.name)
    write_image(path, image, index_for(rec, with_index))
    return record_session(path, wl, rng)


def report(test, **figures):
    """Append one JSON line of figures to $POSFAST_RELIABILITY_LOG (how RELIABILITY.md was measured)."""
    import json
    target = os.environ.get("POSFAST_RELIABILITY_LOG")
    if target:
        with open(target, "a") as f:
            f.write(json.dumps(dict(test=test, **figures)) + "\n")
