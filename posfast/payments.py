"""Payment lifecycle on top of the journal: pending before the host is asked,
final after; in-doubt payments after a crash; the last-transaction answer.

A payment's first record is written PENDING and its seq becomes its `txn_id`;
`finish_payment` appends the outcome as a second record of the same kind with
the same txn_id (and the same `ref_seq`, which for refunds, voids and
reversals names the original payment).  The newest record of a txn_id is the
payment's state.  Nothing is ever rewritten.
"""
from __future__ import annotations

import operator
from typing import Optional

import numpy as np

from .errors import CorruptRecord, InvalidRecord, PaymentError
from .dayclose import TXN_DTYPE, payment_transactions
from .records import (KIND_SIGN_TABLE, PAYMENT_KIND_VALUES, PAYMENT_KINDS, RECEIPT_KINDS, ROW_INDEX,
                      ROW_OFFSET, Flag, Kind, Method, State, check_ref, day_number, now_us,
                      unpack_row)
from .storage import Storage

_KIND_AT, _CLIENT_REF_AT = ROW_OFFSET["kind"], ROW_OFFSET["client_ref"]
_TXN_FIELD, _STATE_FIELD, _CLIENT_FIELD = ROW_INDEX["txn_id"], ROW_INDEX["state"], ROW_INDEX["client_ref"]
_RECEIPT_FIELD, _TERMINAL_FIELD = ROW_INDEX["receipt_no"], ROW_INDEX["terminal"]
_KIND_BY_NAME = {k.name.lower(): k for k in Kind}      # (the usual spelling, looked up first)
_STATE_BY_NAME = {s.name.lower(): s for s in State}
_FINAL_STATES = {State.APPROVED, State.DECLINED, State.FAILED, State.REVERSED, State.VOIDED}
_REFERRING = {Kind.REFUND, Kind.VOID, Kind.REVERSAL, Kind.COMPLETION}
_LOOKBACK = 256          # records of one terminal walked back to find its newest payment


def _client_ref_key(value) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8")
    value = bytes(value)
    if not value or len(value) > 16:
        raise InvalidRecord("posfast: client_ref must be 1..16 bytes, got %d" % len(value))
    return value


def _own_payment_rows(rows, txn_id: int):
    """The payment records of one txn (its begin and outcome; not its prints), seq order."""
    return rows[(rows["txn_id"] == txn_id) & np.isin(rows["kind"], PAYMENT_KIND_VALUES)]


# odd 64-bit weights, one per key byte: np.random.default_rng(20261201).integers(1, 2**63,
# size=64, dtype=np.uint64) | 1, written out so that importing posfast does not load
# numpy.random (3 MB resident); tests/test_footprint.py checks they are still those values
_HASH_WEIGHTS = np.array([
    6148704915929784737, 518163415786077709, 3583786286356579093, 3258764487610844151,
    5746943172592403185, 1428862904329287295, 3238463367112195849, 4571061408484110557,
    1733629243116545217, 4632599240432550791, 749261329530964927, 2237499347742025085,
    2654202547607546379, 8573483306706637885, 4738754628144520711, 1875766385771404181,
    4791848078863842967, 4965321888889768109, 6141843817490660151, 3850823758887841991,
    6611006299866501383, 4913196526683142767, 2714489634447502949, 3187916108541680539,
    3869570472095903765, 7326854047654956375, 7582495497044875727, 6158305538487399403,
    4363701303760709267, 2479985214868096129, 2372373714687054745, 8339882015512652021,
    8004503345052470881, 8052098053094335931, 134905276714059261, 901377571338179407,
    1606966844086558105, 1197899123071150501, 831189666429786077, 8022322526962836971,
    3684518921004421467, 5841550571282413279, 8572983227700456095, 337424094118985957,
    4255154866810042545, 2374043762160708639, 2940928429912511045, 3116207701517360921,
    3896574411216149985, 3203423979926515847, 3213112949572905547, 7445450321412359089,
    7371502588198573659, 373753143185787547, 1432297197889075221, 6986578761224539653,
    3988580127084080771, 342318026993821487, 3445694050715010171, 377387327725740199,
    4809939428659194121, 8819437036635211399, 8989647209538619277, 931429136784146339], dtype=np.uint64)


def _hash_refs(refs: np.ndarray) -> np.ndarray:
    """Keys of up to 64 bytes (an S array) folded to 64 bits, the same on every CPU and run;
    collisions are resolved by reading the record.  Only as wide as the longest key (the
    padding's zero bytes add nothing) and 4,096 keys at a time: at most 2 MB of scratch."""
    refs = np.asarray(refs)
    width = max(1, min(64, refs.dtype.itemsize))
    out = np.empty(len(refs), dtype=np.uint64)
    weights = _HASH_WEIGHTS[:width]
    for start in range(0, len(refs), 4096):
        part = refs[start:start + 4096]
        raw = np.zeros(len(part), dtype="S%d" % width)
        raw[:] = part
        mat = raw.view(np.uint8).reshape(-1, width).astype(np.uint64)
        with np.errstate(over="ignore"):
            out[start:start + 4096] = (mat * weights).sum(axis=1, dtype=np.uint64)
    return out


_HASH_WEIGHT_INTS = [int(w) for w in _HASH_WEIGHTS]


def _hash_one(ref: bytes) -> int:
    """`_hash_refs` of one key, in Python ints (the padding's zero bytes add nothing)."""
    return sum(map(operator.mul, ref, _HASH_WEIGHT_INTS)) & 0xFFFF_FFFF_FFFF_FFFF


class _Pairs:
    """Sorted (key, seq) pairs.  32-bit keys: one u64 array of ``key << 32 | (seq - base)``
    while the seqs span less than 2^32 (8 bytes a pair, sorted in place); otherwise, and for
    64-bit keys, a key array and a seq array.  Chunks added in bulk are merged once, when
    next read, so building a map over a whole journal sorts once."""

    def __init__(self, key_dtype):
        self.key_dtype = np.dtype(key_dtype)
        self.packed: Optional[np.ndarray] = None        # 32-bit keys, seqs within 2^32 of base
        self.keys = np.zeros(0, dtype=self.key_dtype)
        self.seqs = np.zeros(0, dtype=np.uint64)
        self.base: Optional[int] = None
        self._pending: list = []

    def nbytes(self) -> int:
        return (self.packed.nbytes if self.packed is not None else 0) + self.keys.nbytes + self.seqs.nbytes

    def extend(self, keys, seqs) -> None:
        keys = np.asarray(keys, dtype=self.key_dtype)
        seqs = np.asarray(seqs, dtype=np.uint64)
        if not len(keys):
            return
        if self.key_dtype.itemsize == 4 and self.base != -1:
            if self.base is None:
                self.base = int(seqs.min())
            if int(seqs.min()) >= self.base and int(seqs.max()) - self.base < 1 << 32:
                rel = seqs - np.uint64(self.base)
                self._pending.append(keys.astype(np.uint64) << np.uint64(32) | rel)
                return
            self._unpack()
        self._pending.append((keys, seqs))

    def _unpack(self) -> None:
        """Leave the packed layout (a seq outside base .. base + 2^32)."""
        parts = ([self.packed] if self.packed is not None else []) + \
            [p for p in self._pending if isinstance(p, np.ndarray)]
        self._pending = [p for p in self._pending if not isinstance(p, np.ndarray)]
        self.packed = None
        for part in parts:
            self._pending.append(((part >> np.uint64(32)).astype(self.key_dtype),
                                  (part & np.uint64(0xFFFF_FFFF)) + np.uint64(self.base or 0)))
        self.base = -1          # never packed again

    def _merge(self) -> None:
        if not self._pending:
            return
        packed = [p for p in self._pending if isinstance(p, np.ndarray)]
        pairs = [p for p in self._pending if not isinstance(p, np.ndarray)]
        self._pending = []
        if packed:
            merged = np.concatenate(([self.packed] if self.packed is not None else []) + packed)
            merged.sort()
            self.packed = merged
        if pairs:
            keys = np.concatenate([self.keys] + [k for k, _ in pairs])
            seqs = np.concatenate([self.seqs] + [q for _, q in pairs])
            order = np.argsort(keys, kind="stable")
            self.keys, self.seqs = keys[order], seqs[order]

    def find(self, key) -> list:
        self._merge()
        out = []
        if self.packed is not None and len(self.packed):
            lo_key = np.uint64(int(key) << 32)
            hi_key = np.uint64(int(key) << 32 | 0xFFFF_FFFF)
            lo = int(self.packed.searchsorted(lo_key, side="left"))
            hi = int(self.packed.searchsorted(hi_key, side="right"))
            base = self.base or 0
            out += [base + (int(x) & 0xFFFF_FFFF) for x in self.packed[lo:hi].tolist()]
        if len(self.keys):
            k = self.key_dtype.type(key)
            lo = int(self.keys.searchsorted(k, side="left"))
            hi = int(self.keys.searchsorted(k, side="right"))
            out += [int(x) for x in self.seqs[lo:hi].tolist()]
        return sorted(out)


class _RefMap:
    """key -> seqs of the records that carry it: a small dict of recent keys, folded into
    sorted (hash, seq) arrays once it grows (8 bytes a key: the hash's high 32 bits and the
    seq; a shared hash only costs reading the other record, which the caller checks)."""

    def __init__(self):
        self.pairs = _Pairs(np.uint32)
        self.recent: dict = {}

    def add(self, keys, seqs):
        if len(keys) < 64 and len(self.recent) < 4096:
            for key, seq in zip(keys, seqs):
                self.recent.setdefault(key, seq)
            return
        keys = list(self.recent) + list(keys)
        seqs = list(self.recent.values()) + list(seqs)
        self.recent = {}
        hashes = (_hash_refs(np.array(keys, dtype="S")) >> np.uint64(32)).astype(np.uint32)
        self.pairs.extend(hashes, np.array(seqs, dtype=np.uint64))

    def find(self, key: bytes) -> list:
        out = []
        if key in self.recent:
            out.append(self.recent[key])
        out.extend(self.pairs.find(_hash_one(key) >> 32))
        return out


# ---------------------------------------------------------------- receipt codes
def receipt_code_key(terminal: int, receipt_no: int) -> int:
    """The receipt code ``"3-000200"`` (terminal, receipt number) as one 64-bit key."""
    return int(terminal) << 32 | int(receipt_no)


def parse_receipt_code(code) -> tuple:
    """``"3-000200"`` (as printed on the slip and in its QR code) -> ``(3, 200)``;
    ``"000200"`` (a receipt without a terminal) -> ``(0, 200)``."""
    text = str(code).strip()
    terminal, dash, number = text.rpartition("-")
    if not number.isdigit() or (dash and not terminal.isdigit()) or \
            int(number) >= 2 ** 32 or (dash and int(terminal) >= 2 ** 32):
        raise InvalidRecord("posfast: receipt code %r: give TERMINAL-NUMBER as printed on the slip, "
                            "such as 3-000200 (or just the number)" % (code,))
    return (int(terminal) if dash else 0), int(number)


class _CodeMap:
    """(terminal, receipt_no) -> seqs of the payments whose receipt has that code: like the
    refs maps, a small dict of recent keys folded into sorted (key, seq) arrays once it grows,
    with the exact 64-bit key (no hash collisions) and every seq of a reused code kept."""

    def __init__(self):
        self.pairs = _Pairs(np.uint64)
        self.recent: dict = {}

    def add_rows(self, rows):
        """The payments among `rows` that carry a receipt (their begin record)."""
        mine = rows[(rows["payload_len"] > 0) & (rows["receipt_no"] != 0) & (rows["txn_id"] == rows["seq"])
                    & np.isin(rows["kind"], _RECEIPT_KIND_VALUES)]
        if not len(mine):
            return
        keys = mine["terminal"].astype(np.uint64) << np.uint64(32) | mine["receipt_no"].astype(np.uint64)
        seqs = mine["seq"].astype(np.uint64)
        if len(keys) < 64 and len(self.recent) < 4096:
            for key, seq in zip(keys.tolist(), seqs.tolist()):
                self.recent.setdefault(key, []).append(seq)
            return
        self._fold(keys, seqs)

    def add_one(self, key: int, seq: int) -> None:
        """`add_rows` of one payment that carries a receipt (the single-append path)."""
        if len(self.recent) < 4096:
            self.recent.setdefault(key, []).append(seq)
        else:
            self._fold(np.array([key], dtype=np.uint64), np.array([seq], dtype=np.uint64))

    def _fold(self, keys, seqs) -> None:
        """The recent dict and these keys into the sorted arrays."""
        held = [(key, seq) for key, listed in self.recent.items() for seq in listed]
        self.recent = {}
        if held:
            self.pairs.extend(np.array([k for k, _ in held], dtype=np.uint64),
                              np.array([q for _, q in held], dtype=np.uint64))
        self.pairs.extend(keys, seqs)

    def find(self, key: int) -> list:
        return sorted(set(self.recent.get(key, []) + self.pairs.find(key)))


_RECEIPT_KIND_VALUES = np.array(sorted(int(k) for k in RECEIPT_KINDS), dtype=np.uint8)


_CATCHUP_CHUNK = 1 << 15
_TRIM_AFTER = 1 << 17      # records read by one catch-up after which the heap is trimmed


def _give_back_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's malloc_trim).  Building the
    maps over a whole journal passes through scratch arrays several times their final size;
    glibc keeps the freed pages (20-30 MB after a 1M-record journal) unless asked."""
    try:
        import ctypes
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
        if trim is not None:
            trim(0)
    except Exception:            # not glibc (musl, macOS, Windows): nothing to give back
        pass


class _Catchup:
    """Derived lookups (the client_ref, order_ref and host_ref maps, the pending set) built
    lazily, then kept current by reading only the records appended since (so appends stay
    untouched)."""

    def __init__(self):
        self.upto = 0
        self.by_client_ref = _RefMap()
        self.by_order_ref = _RefMap()
        self.by_host_ref = _RefMap()
        self.by_receipt_code = _CodeMap()
        self.pending: set = set()

    def catch_up(self, store: Storage):
        first = max(self.upto + 1, store.oldest_seq)
        if first > store.head_seq:
            return
        # in chunks of 32k records (3.75 MB of rows at a time, whatever the journal's size)
        for start in range(first, store.head_seq + 1, _CATCHUP_CHUNK):
            seqs = np.arange(start, min(store.head_seq, start + _CATCHUP_CHUNK - 1) + 1, dtype=np.uint64)
            self._absorb(store, store.read_rows(seqs))
        self.upto = store.head_seq
        if store.head_seq - first >= _TRIM_AFTER:
            for refmap in (self.by_client_ref, self.by_order_ref, self.by_host_ref):
                refmap.pairs.find(0)               # merge now, then trim what the merge freed
            self.by_receipt_code.pairs.find(0)
            _give_back_memory()

    def absorb_one(self, store: Storage, seq: int, row: bytes, order_ref: bytes,
                   host_ref: bytes, payload_len: int) -> None:
        """`_absorb` of the record just appended as `seq` (its RECORD_DTYPE bytes, its
        references and payload length), if the maps are current up to the one before; else
        the next catch_up reads it.  The single-append path: no arrays, no read back."""
        if self.upto != seq - 1 or seq < store.oldest_seq:
            return
        self.upto = seq
        kind = row[_KIND_AT]
        if row[_CLIENT_REF_AT] or order_ref or host_ref or kind in PAYMENT_KINDS:
            values = unpack_row(row)
            txn_id, state = values[_TXN_FIELD], values[_STATE_FIELD]
            client_ref = values[_CLIENT_FIELD].rstrip(b"\0")
            if client_ref and txn_id == seq:
                self.by_client_ref.add([client_ref], [seq])
            receipt_no = values[_RECEIPT_FIELD]
            if payload_len and receipt_no and txn_id == seq and kind in RECEIPT_KINDS:
                self.by_receipt_code.add_one(receipt_code_key(values[_TERMINAL_FIELD],
                                                              receipt_no), seq)
            if order_ref:
                self.by_order_ref.add([order_ref], [seq])
            if host_ref:
                self.by_host_ref.add([host_ref], [seq])
            if kind in PAYMENT_KINDS:
                if state != State.PENDING:
                    self.pending.discard(txn_id)
                elif txn_id == seq:
                    self.pending.add(seq)

    def find_ref(self, ref: bytes) -> list:
        return self.by_client_ref.find(ref)

    def _absorb(self, store, rows):
        self.by_receipt_code.add_rows(rows)
        with_ref = rows[rows["client_ref"] != b""]
        if len(with_ref):
            begins = with_ref[with_ref["txn_id"] == with_ref["seq"]]
            self.by_client_ref.add(begins["client_ref"].tolist(), begins["seq"].tolist())
        # records whose extension holds more than their client_ref: order and host refs
        more = rows["ext_len"].astype(np.int64) > np.where(
            rows["client_ref"] != b"", np.char.str_len(rows["client_ref"]) + 2, 0)
        if more.any():
            seqs = rows["seq"][more]
            orders, hosts = [], []
            for seq, (order_ref, host_ref) in zip(seqs.tolist(), store.refs(seqs)):
                if order_ref:
                    orders.append((order_ref, seq))
                if host_ref:
                    hosts.append((host_ref, seq))
            for refmap, pairs in ((self.by_order_ref, orders), (self.by_host_ref, hosts)):
                if pairs:
                    refmap.add([k for k, _ in pairs], [q for _, q in pairs])
        pay = rows[np.isin(rows["kind"], PAYMENT_KIND_VALUES)]
        if len(pay):
            opened = pay["seq"][(pay["state"] == State.PENDING) & (pay["txn_id"] == pay["seq"])]
            closed = pay["txn_id"][pay["state"] != State.PENDING]
            self.pending.update(opened.tolist())
            self.pending.difference_update(closed.tolist())


class Payments:
    """The payment lifecycle of one journal (see module docstring); the `Journal` composes
    one and offers its methods (``j.begin_payment(...)`` and so on).  It sees the journal only
    through a `Storage`."""

    def __init__(self, store: Storage):
        self._store = store
        self._catchup = _Catchup()         # client_ref map and pending set, kept current
        self._summary_cache: dict = {}      # (what, key) -> (terminal's newest seq, summary)
        self._receipt_counters: dict = {}   # terminal -> last receipt_no handed out

    def appended(self, seq: int, row: bytes, order_ref: bytes = b"", host_ref: bytes = b"",
                 payload_len: int = 0) -> None:
        """The journal appended one record (`seq`, its RECORD_DTYPE bytes, its references, the
        length of its payload): the derived maps take it now, without reading it back."""
        self._catchup.absorb_one(self._store, seq, row, order_ref, host_ref, payload_len)

    def _seen(self, name: str, ref: bytes) -> bool:
        """Whether any record may carry this reference (False: certainly none does)."""
        derived = self._derived()
        return bool((derived.by_client_ref if name == "client_ref" else
                     derived.by_order_ref).find(ref))

    def _derived(self) -> _Catchup:
        self._catchup.catch_up(self._store)
        return self._catchup

    # ---------------------------------------------------------------- queries
    def txn_records(self, txn_id: int) -> np.ndarray:
        """Every live record of payment `txn_id` and of payments referring to it, seq order."""
        txn_id = int(txn_id)
        with self._store.lock:
            first = self._store.get(txn_id)
            seqs = self._store.index.select(max(txn_id, self._store.oldest_seq), self._store.head_seq,
                                     terminal=first.terminal)
            rows = self._store.read_rows(seqs)
        return rows[(rows["txn_id"] == txn_id) | (rows["ref_seq"] == txn_id)]

    def payment(self, txn_id: int):
        """Current state of a payment: its newest record (a `Record`)."""
        rows = self.txn_records(txn_id)
        own = _own_payment_rows(rows, int(txn_id))
        if not len(own):
            raise KeyError(txn_id)
        return self._store.get(int(own["seq"][-1]))

    def _effective(self, txn_id: int):
        rows = self.txn_records(txn_id)
        own = _own_payment_rows(rows, txn_id)
        current = own[-1]
        others = rows[(rows["ref_seq"] == txn_id) & (rows["txn_id"] != txn_id)]
        newest = {}
        for row in others:               # few rows: the refunds/voids of one payment
            newest[int(row["txn_id"])] = row
        approved = [r for r in newest.values() if r["state"] == State.APPROVED]
        refunded = sum(int(r["amount"]) for r in approved if r["kind"] == Kind.REFUND)
        voided = any(r["kind"] == Kind.VOID for r in approved)
        reversed_ = any(r["kind"] == Kind.REVERSAL for r in approved)
        return current, refunded, voided, reversed_

    def find(self, client_ref=None, order_ref=None, host_ref=None, receipt_code=None):
        """The payment begun with this idempotency key (`client_ref`), with this merchant order
        number (`order_ref`), answered with this host reference (`host_ref`) or whose receipt
        carries this code (`receipt_code`, "3-000200"): its summary (as `last_transaction`
        gives it), or None.  Give exactly one of them."""
        given = [(name, v) for name, v in (("client_ref", client_ref), ("order_ref", order_ref),
                                           ("host_ref", host_ref), ("receipt_code", receipt_code))
                 if v is not None]
        if len(given) != 1:
            raise InvalidRecord("posfast: find() takes one of client_ref=, order_ref=, host_ref=, "
                                "receipt_code=")
        name, value = given[0]
        if name == "receipt_code":
            return self._find_receipt(*parse_receipt_code(value))
        if name == "client_ref":
            ref = _client_ref_key(value)
        else:
            ref = check_ref(name, value)
            if not ref:
                raise InvalidRecord("posfast: find(%s=%r): give a non-empty reference" % (name, value))
        text = ref.decode("utf-8", "replace")
        with self._store.lock:
            self._store.refresh()
            hit = self._cache_hit((name, ref))
            if hit is not None:
                return hit
            derived = self._derived()
            refmap = getattr(derived, "by_" + name)
            for seq in refmap.find(ref):
                if seq < self._store.oldest_seq:
                    continue
                try:
                    rec = self._store.get(seq)
                except (KeyError, CorruptRecord):
                    continue            # gone or damaged: verify reports it
                if (rec.client_ref == ref if name == "client_ref" else getattr(rec, name) == text):
                    begin = rec
                    if rec.txn_id != rec.seq:
                        try:
                            begin = self._store.get(rec.txn_id)
                        except (KeyError, CorruptRecord):
                            pass
                    return self._cached((name, ref), rec.terminal, lambda: self._summary(begin))
        return None

    def receipt_payments(self, terminal: int, receipt_no: int) -> list:
        """txn_ids of the live payments whose receipt is (terminal, receipt_no), oldest first:
        one lookup in the receipt-code map, each candidate checked on its record."""
        with self._store.lock:
            self._store.refresh()
            found = []
            for seq in self._derived().by_receipt_code.find(receipt_code_key(terminal, receipt_no)):
                if seq < self._store.oldest_seq:
                    continue
                try:
                    rec = self._store.get(int(seq))
                except (KeyError, CorruptRecord):
                    continue            # gone or damaged: verify reports it
                if rec.terminal == terminal and rec.receipt_no == receipt_no and rec.txn_id == rec.seq:
                    found.append(int(seq))
            return found

    def _find_receipt(self, terminal: int, receipt_no: int):
        key = ("receipt_code", (terminal, receipt_no))
        with self._store.lock:
            self._store.refresh()
            hit = self._cache_hit(key)
            if hit is not None:
                return hit
            found = self.receipt_payments(terminal, receipt_no)
            if not found:
                return None
            begin = self._store.get(found[-1])   # a code reused on one terminal: the newest
            return self._cached(key, begin.terminal, lambda: self._summary(begin))

    def _cache_hit(self, key):
        hit = self._summary_cache.get(key)
        if hit is not None:
            newest = self._store.index.newest_of(hit[1]["terminal"])
            if hit[0] == newest and newest >= self._store.oldest_seq:
                return dict(hit[1])
        return None

    def _cached(self, key, terminal, compute) -> Optional[dict]:
        # A payment summary depends only on its terminal's records, so it stays valid
        # until that terminal's newest seq moves: repeated inquiries cost a dict lookup.
        hit = self._cache_hit(key)
        if hit is not None:
            return hit
        cache = self._summary_cache
        newest = self._store.index.newest_of(terminal)
        summary = compute()
        if summary is not None:
            if len(cache) > 4096:
                cache.clear()
            cache[key] = (newest, summary)
            return dict(summary)
        return None

    def in_doubt(self, terminal=None) -> list:
        """Payments whose newest state is PENDING (begun, never finished): oldest first."""
        with self._store.lock:
            pending = sorted(s for s in self._derived().pending if s >= self._store.oldest_seq)
            out = []
            for seq in pending:
                rec = self._store.get(seq)
                if terminal is None or rec.terminal == int(terminal):
                    out.append(rec)
            return out

    def last_transaction(self, terminal: int):
        """What a cashier needs after a crash: the terminal's newest payment, its state,
        amount, auth code, receipt number and whether its receipt printed.  Returns a
        dict (None when the terminal has no payment).  Reads only the terminal's newest
        few records, newest first, down to the newest payment's first record."""
        with self._store.lock:
            self._store.refresh()
            terminal = int(terminal)
            return self._cached(("last", terminal), terminal,
                                lambda: self._last_transaction(terminal))

    def _last_transaction(self, terminal):
        walked = self._walk_back(terminal, stop_at_begin=True)
        if not walked:
            return None
        summary = self._summary_of(walked[-1], walked)
        # A damaged record cannot say which terminal it was: any newer than the answer
        # may be this terminal's real last transaction, so the answer says so.
        summary["damaged_newer"] = sorted(seq for seq, _slot, _why in self._store.damaged
                                          if summary["seq"] < seq <= self._store.head_seq)
        return summary

    def _walk_back(self, terminal, stop_at_begin=False, down_to=0, limit=_LOOKBACK):
        # Newest-first records of one terminal until the newest payment begin (or seq
        # down_to).  Returns [] when nothing qualifies or the walk exceeds `limit`.
        walked = self._walk_back_once(terminal, stop_at_begin, down_to, limit)
        if walked is None:          # the index filed another terminal's record here: rebuilt
            walked = self._walk_back_once(terminal, stop_at_begin, down_to, limit) or []
        return walked

    def _walk_back_once(self, terminal, stop_at_begin, down_to, limit):
        bm = self._store.index.by_terminal.get(terminal)
        if not bm:
            return []
        store = self._store
        out = []
        for back in range(1, min(len(bm), limit) + 1):
            seq = bm[-back]
            if seq < store.oldest_seq or seq < down_to:
                break
            try:
                rec = store.get_live(seq)
            except Exception:
                continue           # damaged: verify reports it; skip like any lookup
            if rec.terminal != terminal:
                self._store.distrust_index("it files seq %d of terminal %d under terminal %d"
                                     % (seq, rec.terminal, terminal))
                return None
            out.append(rec)
            if rec.kind in PAYMENT_KINDS and rec.txn_id == rec.seq and (
                    stop_at_begin or rec.seq == down_to):
                return out
        return []

    def _summary_of(self, begin, walked) -> dict:
        txn_id = begin.txn_id
        current = next(r for r in walked if r.txn_id == txn_id and r.kind in PAYMENT_KINDS)
        prints = [r for r in walked if r.kind == Kind.PRINT and r.txn_id == txn_id]
        return self._summary_dict(current, prints)

    def _summary(self, begin) -> dict:
        walked = self._walk_back(begin.terminal, down_to=begin.seq, limit=64)
        if walked:
            return self._summary_of(begin, walked)
        rows = self.txn_records(begin.txn_id)
        own = _own_payment_rows(rows, begin.txn_id)
        current = self._store.get(int(own["seq"][-1])) if len(own) else begin
        prints = [self._store.get(int(s)) for s in
                  rows["seq"][(rows["kind"] == Kind.PRINT) & (rows["txn_id"] == begin.txn_id)]]
        return self._summary_dict(current, prints)

    def _summary_dict(self, current, prints) -> dict:
        state = State(current.state)
        return {
            "txn_id": current.txn_id,
            "terminal": current.terminal,
            "kind": Kind(current.kind).name.lower(),
            "state": state.name.lower(),
            "in_doubt": state == State.PENDING,
            "amount": current.amount,
            "currency": current.currency,
            "method": Method(current.method).name.lower() if current.method in
            Method._value2member_map_ else current.method,
            "auth_code": current.auth_code.decode(errors="replace"),
            "rrn": current.rrn.decode(errors="replace"),
            "pan_last4": current.pan_last4.decode(errors="replace"),
            "receipt_no": current.receipt_no,
            "client_ref": current.client_ref,
            "order_ref": current.order_ref,
            "host_ref": current.host_ref,
            "channel": current.channel,
            "ts": current.ts,
            "seq": current.seq,
            "receipt_printed": any(p.state == State.OK for p in prints),
            # a print is journaled UNKNOWN, then finalised by a PRINT naming it (ref_seq)
            "print_attempts": len(prints) - len({p.ref_seq for p in prints} & {p.seq for p in prints}),
            "training": bool(current.flags & Flag.TRAINING),
            "damaged_newer": [],
        }

    # ---------------------------------------------------------------- writes
    def next_receipt_no(self, terminal: int) -> int:
        """Hand out the terminal's next receipt number (they count up per terminal)."""
        counters = self._receipt_counters
        if terminal not in counters:
            rows = self._store.query(terminal=terminal, kind=sorted(PAYMENT_KINDS))
            counters[terminal] = int(rows["receipt_no"].max()) if len(rows) else 0
        counters[terminal] += 1
        return counters[terminal]

    def begin_payment(self, terminal, kind="sale", amount=0, currency=156, method="card",
                      client_ref=None, payload=b"", ref_seq=0, receipt_no=None, operator=0,
                      flags=0, ts=None, order_ref=None, channel=None) -> int:
        """Write a PENDING payment durably *before* the host is contacted; returns its txn_id.

        The same `client_ref`, or the same `order_ref` (the merchant's order number, up to 64
        bytes of text: WeChat Pay's out_trade_no, Alipay's out_trade_no), twice returns the
        existing payment's txn_id (no second sale).  `channel` names the wallet or acquirer
        (wechat, alipay, unionpay, ...; at most 10 bytes).
        Refunds, voids and reversals name the original with `ref_seq` and are checked.

        >>> txn = j.begin_payment(terminal=3, amount=1250, currency=156, client_ref="T3-0001")  # doctest: +SKIP
        >>> j.finish_payment(txn, "approved", auth_code="A1B2C3", rrn="123456789012")        # doctest: +SKIP
        """
        kind_enum = _KIND_BY_NAME.get(kind) if type(kind) is str else None
        if kind_enum is None:
            kind_enum = Kind.coerce(kind, "kind")
        if kind_enum not in PAYMENT_KINDS:
            raise InvalidRecord("posfast: kind=%s is not a payment kind" % kind_enum.name.lower())
        if isinstance(amount, float) or not isinstance(amount, (int, np.integer)) or amount < 0:
            raise InvalidRecord("posfast: amount=%r must be a non-negative integer of minor units"
                                % (amount,))
        with self._store.lock:
            # idempotent: the same key again is the same payment (a key never seen is the
            # usual case, answered by the maps alone)
            if client_ref and self._seen("client_ref", _client_ref_key(client_ref)):
                existing = self.find(client_ref)
                if existing is not None:
                    return existing["txn_id"]
            if order_ref and self._seen("order_ref", check_ref("order_ref", order_ref)):
                existing = self.find(order_ref=order_ref)
                if existing is not None:
                    return existing["txn_id"]
            if kind_enum in _REFERRING:
                self._check_reference(kind_enum, int(ref_seq), int(amount))
            if receipt_no is None:
                receipt_no = self.next_receipt_no(int(terminal))
            return self._store.append(payload=payload, terminal=terminal, kind=kind_enum,
                               state=State.PENDING, amount=amount, currency=currency,
                               method=method, client_ref=client_ref, ref_seq=ref_seq,
                               receipt_no=receipt_no, operator=operator, flags=flags, ts=ts,
                               **({"order_ref": order_ref} if order_ref else {}),
                               **({"channel": channel} if channel else {}))

    def _check_reference(self, kind, ref_seq, amount):
        if not ref_seq:
            raise PaymentError("posfast: a %s needs ref_seq= naming the original payment"
                               % kind.name.lower())
        try:
            original = self._store.get(ref_seq)
        except KeyError:
            raise PaymentError("posfast: %s refers to seq %d, which is not in journal %s"
                               % (kind.name.lower(), ref_seq, self._store.path)) from None
        if original.txn_id != original.seq or original.kind not in (Kind.SALE, Kind.PREAUTH,
                                                                     Kind.COMPLETION):
            raise PaymentError("posfast: seq %d is not the first record of a sale or "
                               "pre-authorisation; refer to its txn_id" % ref_seq)
        current, refunded, voided, reversed_ = self._effective(ref_seq)
        if current["state"] != State.APPROVED and not (kind == Kind.REVERSAL and
                                                       current["state"] == State.PENDING):
            raise PaymentError("posfast: payment %d is %s, not approved: it cannot be %s"
                               % (ref_seq, State(int(current["state"])).name.lower(),
                                  {Kind.REFUND: "refunded", Kind.VOID: "voided",
                                   Kind.REVERSAL: "reversed",
                                   Kind.COMPLETION: "completed"}[kind]))
        if voided or reversed_:
            raise PaymentError("posfast: payment %d was already %s" % (
                ref_seq, "voided" if voided else "reversed"))
        if kind == Kind.REFUND and refunded + amount > int(current["amount"]):
            raise PaymentError("posfast: refund of %d would exceed payment %d: paid %d, already "
                               "refunded %d" % (amount, ref_seq, int(current["amount"]), refunded))

    def finish_payment(self, txn_id, state, auth_code=None, rrn=None, pan_last4=None,
                       payload=b"", ts=None, host_ref=None) -> int:
        """Record the host's answer for a pending payment; returns the new record's seq.

        `host_ref` is the wallet's or acquirer's own id of the payment (WeChat Pay's
        transaction_id, Alipay's trade_no, Adyen's PSP reference): what statements key on."""
        state_enum = _STATE_BY_NAME.get(state) if type(state) is str else None
        if state_enum is None:
            state_enum = State.coerce(state, "state")
        if state_enum not in _FINAL_STATES:
            raise InvalidRecord("posfast: finish_payment state must be approved, declined, failed, "
                                "reversed or voided, not %s" % state_enum.name.lower())
        with self._store.lock:
            try:
                begin = self._store.get(int(txn_id))
            except KeyError:
                raise PaymentError("posfast: no payment %s in journal %s" % (txn_id, self._store.path)) \
                    from None
            if begin.txn_id != begin.seq or begin.kind not in PAYMENT_KINDS:
                raise PaymentError("posfast: seq %s is not the start of a payment" % txn_id)
            # in the pending set: no outcome was written (the usual answer to a begin), so
            # nothing needs reading back; else its newest record says what it is
            current = begin if begin.seq in self._derived().pending else self.payment(txn_id)
            if current.state != State.PENDING:
                if current.state == state_enum:
                    return current.seq       # the same answer again: idempotent
                raise PaymentError("posfast: payment %d is already %s; it cannot become %s"
                                   % (txn_id, State(current.state).name.lower(),
                                      state_enum.name.lower()))
            seq = self._store.append(payload=payload, terminal=begin.terminal, kind=begin.kind,
                              state=state_enum, amount=begin.amount, currency=begin.currency or None,
                              method=begin.method, client_ref=begin.client_ref,
                              txn_id=begin.txn_id, ref_seq=begin.ref_seq,
                              receipt_no=begin.receipt_no, operator=begin.operator,
                              flags=begin.flags,
                              auth_code=auth_code if auth_code is not None else begin.auth_code,
                              rrn=rrn if rrn is not None else begin.rrn,
                              pan_last4=pan_last4 if pan_last4 is not None else begin.pan_last4,
                              ts=ts, **self._refs_of(begin, host_ref))
            return seq

    @staticmethod
    def _refs_of(begin, host_ref):
        """The begin record's order ref and channel, carried on to its outcome, and its host ref
        (format 2 only: a format-1 journal stores none)."""
        refs = {}
        if begin.order_ref:
            refs["order_ref"] = begin.order_ref
        if begin.channel:
            refs["channel"] = begin.channel
        if host_ref:
            refs["host_ref"] = host_ref
        return refs

    def resolve(self, txn_id, state, **fields) -> int:
        """Close an in-doubt payment after asking the host; refuses payments not in doubt."""
        with self._store.lock:
            current = self.payment(txn_id)
            if current.state != State.PENDING:
                raise PaymentError("posfast: payment %d is not in doubt (it is %s)"
                                   % (txn_id, State(current.state).name.lower()))
            return self.finish_payment(txn_id, state, **fields)

    def payments(self, day=None, terminal=None) -> np.ndarray:
        """One row per payment, in txn_id order: its final state and its signed amount.

        `day` (a date, 'YYYY-MM-DD' or a day number) keeps the payments begun on that
        business day (their outcomes may come later); `terminal` one terminal's.  The
        rows are ``posfast.dayclose.TXN_DTYPE`` (first and newest record folded by
        ``payment_transactions``: kind, terminal and time of the first record; state,
        amount and references of the newest) plus ``signed`` (the amount with the
        kind's sign: sale and completion +, refund, void and reversal -, pre-auth and
        cash moves 0) and ``net`` (what it adds to the day's net: ``signed`` when
        approved, 0 when declined, pending, failed, reversed or voided).  Training
        payments are left out.  Currencies are not mixed: sum ``net`` per currency.

        >>> pays = j.payments(day="2026-11-20")                          # doctest: +SKIP
        >>> {int(c): int(pays["net"][pays["currency"] == c].sum())       # doctest: +SKIP
        ...  for c in np.unique(pays["currency"])}
        {156: 1184250}
        """
        dtype = np.dtype(TXN_DTYPE.descr + [("signed", "<i8"), ("net", "<i8")])
        kinds = sorted(PAYMENT_KINDS)
        store = self._store
        oldest = store.oldest_seq
        if day is not None:
            # the day's payments and their outcomes, which may come on later days (up to the
            # clock's day + 1, the furthest ahead a record may be)
            wanted = day_number(day)
            today = store.day_rule.day_number(now_us())
            rows = store.query(day=list(range(wanted, max(wanted + 1, today + 1) + 1)),
                              terminal=terminal, kind=kinds)
            txns, _ = payment_transactions(rows, wanted, oldest)
        else:
            # every payment in one fold: one business day for all, then each its own back
            rows = store.query(terminal=terminal, kind=kinds)
            flat = rows.copy()
            flat["day"] = 0
            txns, _ = payment_transactions(flat, 0, oldest)
            txns["day"] = rows["day"][np.searchsorted(rows["seq"], txns["first_seq"])]
        out = np.zeros(len(txns), dtype)
        for name in TXN_DTYPE.names or ():
            out[name] = txns[name]
        out["signed"] = txns["amount"] * KIND_SIGN_TABLE[txns["kind"]]
        out["net"] = np.where(txns["state"] == int(State.APPROVED), out["signed"], 0)
        return out
