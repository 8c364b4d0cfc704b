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
import struct
from typing import Optional

import numpy as np

from .errors import CorruptRecord, InvalidRecord, PaymentError, PosfastError
from .dayclose import TXN_DTYPE, payment_transactions
from .records import (KIND_SIGN_TABLE, PAYMENT_KIND_VALUES, PAYMENT_KINDS, RECEIPT_KINDS, ROW_INDEX,
                      ROW_OFFSET, Flag, Kind, Method, State, check_ref, day_number, now_us,
                      unpack_row)
from .storage import Storage

_KIND_AT, _CLIENT_REF_AT = ROW_OFFSET["kind"], ROW_OFFSET["client_ref"]
_TXN_AT, _REF_AT = ROW_OFFSET["txn_id"], ROW_OFFSET["ref_seq"]
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
        # what the index file holds (`load`): read-only arrays mapped from it, searched beside
        # the ones in memory (which then hold only the keys added since)
        self.saved_packed = np.zeros(0, dtype=np.uint64)
        self.saved_keys = np.zeros(0, dtype=self.key_dtype)
        self.saved_seqs = np.zeros(0, dtype=np.uint64)
        self._check = None          # (load: run on first use)

    def nbytes(self) -> int:
        """Bytes of memory the pairs take (not counting those mapped from the index file)."""
        return (self.packed.nbytes if self.packed is not None else 0) + self.keys.nbytes + self.seqs.nbytes

    def load(self, base: Optional[int], packed: np.ndarray, keys: np.ndarray, seqs: np.ndarray,
             check=None) -> None:
        """Take the sorted pairs saved in the index file (before any key is added); `check`
        runs when they are first used (why they are unusable, or "")."""
        self.base = base
        self.saved_packed, self.saved_keys, self.saved_seqs = packed, keys, seqs
        self._check = check

    def _verify(self) -> None:
        check, self._check = self._check, None
        why = check() if check is not None else ""
        if why:
            raise _MapsDamaged(why)

    def saved_layout(self) -> tuple:
        """(base, packed pieces, packed count, key pieces, seq pieces, wide count): every pair,
        sorted, as pieces of the mapped and the in-memory arrays (nothing copied whole)."""
        if self._check is not None:
            self._verify()
        self._merge()
        packed = self.packed if self.packed is not None else np.zeros(0, dtype=np.uint64)
        packed_pieces = _merged_pieces(self.saved_packed, packed, [(self.saved_packed, packed)])[0]
        key_pieces, seq_pieces = _merged_pieces(self.saved_keys, self.keys,
                                                [(self.saved_keys, self.keys),
                                                 (self.saved_seqs, self.seqs)])
        return (self.base if self.base is not None and self.base >= 0 else 0, packed_pieces,
                len(self.saved_packed) + len(packed), key_pieces, seq_pieces,
                len(self.saved_keys) + len(self.keys))

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
        if self._check is not None:
            self._verify()
        parts = ([self.packed] if self.packed is not None else []) + \
            ([self.saved_packed] if len(self.saved_packed) else []) + \
            [p for p in self._pending if isinstance(p, np.ndarray)]
        self.saved_packed = np.zeros(0, dtype=np.uint64)
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
        if self._check is not None:
            self._verify()
        self._merge()
        out = []
        for packed in (self.saved_packed, self.packed):
            if packed is not None and len(packed):
                lo_key = np.uint64(int(key) << 32)
                hi_key = np.uint64(int(key) << 32 | 0xFFFF_FFFF)
                lo = int(packed.searchsorted(lo_key, side="left"))
                hi = int(packed.searchsorted(hi_key, side="right"))
                base = self.base or 0
                out += [base + (int(x) & 0xFFFF_FFFF) for x in packed[lo:hi].tolist()]
        for keys, seqs in ((self.saved_keys, self.saved_seqs), (self.keys, self.seqs)):
            if len(keys):
                k = self.key_dtype.type(key)
                lo = int(keys.searchsorted(k, side="left"))
                hi = int(keys.searchsorted(k, side="right"))
                out += [int(x) for x in seqs[lo:hi].tolist()]
        return sorted(out)


def _merged_pieces(big: np.ndarray, small: np.ndarray, columns: list) -> list:
    """Two sorted arrays merged in order, as pieces (slices of each, in turn) rather than one
    new array: for each (of big, of small) column pair in `columns`, its list of pieces."""
    out: list = [[] for _ in columns]
    if not len(small) or not len(big):
        for k, (a, b) in enumerate(columns):
            out[k] = [x for x in (a, b) if len(x)]
        return out
    at = np.searchsorted(big, small, side="right")
    cuts = np.flatnonzero(np.diff(at)) + 1
    starts = [0] + cuts.tolist()
    ends = cuts.tolist() + [len(small)]
    prev = 0
    for lo, hi in zip(starts, ends):
        where = int(at[lo])
        for k, (a, b) in enumerate(columns):
            if where > prev:
                out[k].append(a[prev:where])
            out[k].append(b[lo:hi])
        prev = where
    for k, (a, _b) in enumerate(columns):
        if prev < len(a):
            out[k].append(a[prev:])
    return out


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

    def fold(self) -> None:
        """The recent dict into the sorted arrays (before they are saved)."""
        if self.recent:
            keys, seqs = list(self.recent), list(self.recent.values())
            self.recent = {}
            hashes = (_hash_refs(np.array(keys, dtype="S")) >> np.uint64(32)).astype(np.uint32)
            self.pairs.extend(hashes, np.array(seqs, dtype=np.uint64))


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


_CODE_MIX = 0x9E37_79B9_7F4A_7C15       # odd: code * this mod 2^64, high 32 bits: its hash


def _code_hashes(keys: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return ((keys.astype(np.uint64) * np.uint64(_CODE_MIX)) >> np.uint64(32)).astype(np.uint32)


def _code_hash(key: int) -> int:
    return (key * _CODE_MIX & 0xFFFF_FFFF_FFFF_FFFF) >> 32


class _CodeMap:
    """(terminal, receipt_no) -> seqs of the payments whose receipt has that code: like the
    refs maps, a small dict of recent keys folded into sorted (hash, seq) arrays once it grows
    (8 bytes a receipt: the code's 32-bit hash and the seq; a shared hash only costs reading
    the other record, which the caller checks), every seq of a reused code kept."""

    def __init__(self):
        self.pairs = _Pairs(np.uint32)
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
            self.pairs.extend(_code_hashes(np.array([k for k, _ in held], dtype=np.uint64)),
                              np.array([q for _, q in held], dtype=np.uint64))
        if len(keys):
            self.pairs.extend(_code_hashes(np.asarray(keys, dtype=np.uint64)), seqs)

    def find(self, key: int) -> list:
        """Seqs that may be this code's payments (a shared hash adds another code's)."""
        return sorted(set(self.recent.get(key, []) + self.pairs.find(_code_hash(key))))

    def fold(self) -> None:
        """The recent dict into the sorted arrays (before they are saved)."""
        if self.recent:
            self._fold(np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint64))


class _Referrers:
    """seq -> seqs of the records that name it: as their txn_id (a payment's outcome, its
    prints) or their ref_seq (a refund, void or reversal of it; a print's final record).
    What a payment's records are found by, without reading its terminal's records since.
    Exact keys: those below 2^32 packed with the seq (8 bytes a pair), the rest wide."""

    def __init__(self):
        self.low = _Pairs(np.uint32)
        self.high = _Pairs(np.uint64)
        self.recent: dict = {}

    def add(self, keys, seqs) -> None:
        if len(keys) < 64 and len(self.recent) < 4096:
            for key, seq in zip(keys, seqs):
                self.recent.setdefault(int(key), []).append(int(seq))
            return
        self.fold()
        self._extend(np.asarray(keys, dtype=np.uint64), np.asarray(seqs, dtype=np.uint64))

    def _extend(self, keys: np.ndarray, seqs: np.ndarray) -> None:
        low = keys < np.uint64(1 << 32)
        self.low.extend(keys[low].astype(np.uint32), seqs[low])
        if not low.all():
            self.high.extend(keys[~low], seqs[~low])

    def fold(self) -> None:
        """The recent dict into the sorted arrays (before they are saved)."""
        if self.recent:
            held = [(key, seq) for key, listed in self.recent.items() for seq in listed]
            self.recent = {}
            self._extend(np.array([k for k, _ in held], dtype=np.uint64),
                         np.array([q for _, q in held], dtype=np.uint64))

    def find(self, key: int) -> list:
        found = self.recent.get(key, []) + (self.low.find(key) if key < 1 << 32 else self.high.find(key))
        return sorted(set(found))


def _referring(txn_ids: np.ndarray, ref_seqs: np.ndarray, seqs: np.ndarray):
    """(keys, seqs) of what `_Referrers` holds for these records: (txn_id, seq) where the
    txn_id is another record's, (ref_seq, seq) where there is one (and not the same)."""
    by_txn = (txn_ids != seqs) & (txn_ids != 0)
    by_ref = (ref_seqs != 0) & ~(by_txn & (ref_seqs == txn_ids))
    return (np.concatenate((txn_ids[by_txn], ref_seqs[by_ref])),
            np.concatenate((seqs[by_txn], seqs[by_ref])))


_RECEIPT_KIND_VALUES = np.array(sorted(int(k) for k in RECEIPT_KINDS), dtype=np.uint8)


_CATCHUP_CHUNK = 1 << 15
_TRIM_AFTER = 1 << 17      # records read by one catch-up after which the heap is trimmed

# The maps saved with the index (its blob ``paymaps``, FORMAT.md §2): a head (version,
# number of maps, CRC32C of the heads and the in-doubt list, the seq they cover up to, the
# in-doubt count), a head per map (packing base, packed pairs, wide pairs, key bytes, CRC32C
# of its arrays), the in-doubt txn ids, then each map's arrays; 8-byte aligned.
MAPS_BLOB = b"paymaps"
MAPS_VERSION = 1
SAVE_MAPS_FROM = 1024      # live records from which the maps are saved with the index
SAVE_CATCHUP_MAX = 1 << 16  # records the maps may be behind for a save to bring them current
_MAPS_HEAD = struct.Struct("<BB2xIQQ")       # version, maps, CRC32C, upto, in-doubt count
_MAPS_SECTION = struct.Struct("<QQQB3xI")    # base, packed, wide, key bytes, CRC32C of its arrays
_SECTION_NAMES = ("client_ref", "order_ref", "host_ref", "receipt code", "referrer", "referrer")
_CHECK_CHUNK = 1 << 16


class _MapsDamaged(PosfastError):
    """A map saved with the index fails its check when first used (the lookup's caller
    rebuilds the maps from the records and reports it)."""


def _crc_of(crc32c, pieces) -> int:
    crc = 0
    for piece in pieces:
        if len(piece):
            crc = crc32c(memoryview(piece).cast("B"), crc)
    return crc


def _saved_check(crc32c, name, body, crc, packed, keys, seqs, base, upto):
    """What `_Pairs` runs on first using a map mapped from the file: why it is unusable, or ""."""
    def check() -> str:
        if _crc_of(crc32c, [body]) != crc:
            return "(the %s map) fail their checksum" % name
        if not (_ascending(packed) and _ascending(keys)):
            return "(the %s map) are not sorted" % name
        if (len(packed) and _top(packed, 0xFFFF_FFFF) + base > upto) or _top(seqs, 0) > upto:
            return "(the %s map) name seqs past %d, the newest they cover" % (name, upto)
        return ""
    return check


def _ascending(values: np.ndarray) -> bool:
    """Sorted (ascending, ties allowed), checked 64k values at a time (little scratch)."""
    for start in range(0, len(values) - 1, _CHECK_CHUNK):
        part = values[start:start + _CHECK_CHUNK + 1]
        if (part[1:] < part[:-1]).any():
            return False
    return True


def _top(values: np.ndarray, mask: int) -> int:
    """The largest value (of its low bits under `mask`, if given), 64k values at a time."""
    top = 0
    for start in range(0, len(values), _CHECK_CHUNK):
        part = values[start:start + _CHECK_CHUNK]
        top = max(top, int((part & np.uint64(mask)).max() if mask else part.max()))
    return top


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
        self.by_referrer = _Referrers()
        self.pending: set = set()
        self.from_file = False      # loaded from the index file (load_saved), not from the records

    def _sections(self) -> list:
        return [self.by_client_ref.pairs, self.by_order_ref.pairs, self.by_host_ref.pairs,
                self.by_receipt_code.pairs, self.by_referrer.low, self.by_referrer.high]

    def saved_pieces(self, crc32c) -> list:
        """The maps as the index file's ``paymaps`` blob (FORMAT.md §2), a list of buffers:
        the arrays already mapped from the file and those in memory, never joined in one."""
        for folding in (self.by_client_ref, self.by_order_ref, self.by_host_ref,
                        self.by_receipt_code, self.by_referrer):
            folding.fold()
        sections = self._sections()
        heads, bodies = [], []
        for pairs in sections:
            base, packed, n_packed, keys, seqs, n_wide = pairs.saved_layout()
            width = pairs.key_dtype.itemsize
            body: list = [np.ascontiguousarray(a, dtype="<u8") for a in packed]
            body += [np.ascontiguousarray(a, dtype="<u%d" % width) for a in keys]
            if (n_wide * width) % 8:
                body.append(bytes(-(n_wide * width) % 8))
            body += [np.ascontiguousarray(a, dtype="<u8") for a in seqs]
            body = [b for b in body if len(b)]
            heads.append(_MAPS_SECTION.pack(base, n_packed, n_wide, width, _crc_of(crc32c, body)))
            bodies.append(body)
        pending = np.array(sorted(self.pending), dtype="<u8")
        head = _MAPS_HEAD.pack(MAPS_VERSION, len(sections), 0, self.upto, len(pending))
        crc = _crc_of(crc32c, [head] + heads + [pending])
        head = _MAPS_HEAD.pack(MAPS_VERSION, len(sections), crc, self.upto, len(pending))
        pieces: list = [head] + heads + [pending]
        for body in bodies:
            pieces += body
        return [p for p in pieces if len(p)]

    def load_saved(self, view, at: int, crc32c) -> None:
        """Take the maps from a ``paymaps`` blob of the index this open trusted, saved when it
        covered the records up to `at`; their arrays stay mapped, each map checked (its CRC,
        order and seqs) when first used, so a lookup reads only the pages of the maps it
        needs.  ValueError (saying why) if the blob is not that: then nothing is taken."""
        size = len(view)
        if size < _MAPS_HEAD.size:
            raise ValueError("are a blob of %d bytes" % size)
        version, count, crc, upto, n_pending = _MAPS_HEAD.unpack_from(view, 0)
        if version != MAPS_VERSION:
            raise ValueError("are of version %d (this posfast reads %d)" % (version, MAPS_VERSION))
        sections = self._sections()
        heads_end = _MAPS_HEAD.size + len(sections) * _MAPS_SECTION.size
        if count != len(sections) or heads_end + n_pending * 8 > size:
            raise ValueError("hold %d maps, not %d, or are cut short" % (count, len(sections)))
        pending = np.frombuffer(view, dtype="<u8", count=n_pending, offset=heads_end)
        zeroed = _MAPS_HEAD.pack(version, count, 0, upto, n_pending)
        if _crc_of(crc32c, [zeroed, view[_MAPS_HEAD.size:heads_end], pending]) != crc:
            raise ValueError("fail their checksum")
        if upto != at:
            raise ValueError("cover the records up to seq %d, the index up to %d" % (upto, at))
        offset = heads_end + n_pending * 8
        taken = []
        for k, pairs in enumerate(sections):
            base, n_packed, n_wide, width, body_crc = _MAPS_SECTION.unpack_from(
                view, _MAPS_HEAD.size + k * _MAPS_SECTION.size)
            wide_bytes = n_wide * width + (-(n_wide * width) % 8)
            if width != pairs.key_dtype.itemsize or \
                    offset + n_packed * 8 + wide_bytes + n_wide * 8 > size:
                raise ValueError("are cut short or of another layout")
            body = view[offset:offset + n_packed * 8 + wide_bytes + n_wide * 8]
            packed = np.frombuffer(view, dtype="<u8", count=n_packed, offset=offset)
            offset += n_packed * 8
            keys = np.frombuffer(view, dtype="<u%d" % width, count=n_wide, offset=offset)
            offset += wide_bytes
            seqs = np.frombuffer(view, dtype="<u8", count=n_wide, offset=offset)
            offset += n_wide * 8
            taken.append((base if n_packed else None, packed, keys, seqs,
                          _saved_check(crc32c, _SECTION_NAMES[k], body, body_crc, packed, keys, seqs,
                                       base, upto)))
        if offset != size:
            raise ValueError("are %d bytes, their counts say %d" % (size, offset))
        for pairs, (base, packed, keys, seqs, check) in zip(sections, taken):
            pairs.load(base, packed, keys, seqs, check)
        self.pending = set(pending.tolist())
        self.upto = upto
        self.from_file = True

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
            for pairs in self._sections():
                pairs.find(0)                      # merge now, then trim what the merge freed
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
        txn = int.from_bytes(row[_TXN_AT:_TXN_AT + 8], "little")
        ref = int.from_bytes(row[_REF_AT:_REF_AT + 8], "little")
        if ref or (txn != seq and txn):
            if txn != seq and txn:
                self.by_referrer.add([txn], [seq])
            if ref and not (txn != seq and ref == txn):
                self.by_referrer.add([ref], [seq])
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
        keys, seqs = _referring(rows["txn_id"], rows["ref_seq"], rows["seq"])
        if len(keys):
            self.by_referrer.add(keys, seqs)
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
        self._saved_tried = False           # the maps saved with the index were looked for
        self._summary_cache: dict = {}      # (what, key) -> (terminal's newest seq, summary)
        self._receipt_counters: dict = {}   # terminal -> last receipt_no handed out

    def appended(self, seq: int, row: bytes, order_ref: bytes = b"", host_ref: bytes = b"",
                 payload_len: int = 0) -> None:
        """The journal appended one record (`seq`, its RECORD_DTYPE bytes, its references, the
        length of its payload): the derived maps take it now, without reading it back."""
        self._catchup.absorb_one(self._store, seq, row, order_ref, host_ref, payload_len)

    def _seen(self, name: str, ref: bytes) -> bool:
        """Whether any record may carry this reference (False: certainly none does)."""
        return bool(self._looked_up(lambda derived: (
            derived.by_client_ref if name == "client_ref" else derived.by_order_ref).find(ref)))

    def _derived(self) -> _Catchup:
        if not self._saved_tried:
            self._load_saved()
        try:
            self._catchup.catch_up(self._store)
        except _MapsDamaged as exc:
            self._maps_damaged(exc)
            self._catchup.catch_up(self._store)
        return self._catchup

    def _maps_damaged(self, exc) -> None:
        self._catchup = _Catchup()
        self._maps_problem("its payment maps %s" % exc)

    def _looked_up(self, lookup):
        """`lookup(maps)`, the maps current; maps from the file that fail their check on
        this first use are rebuilt from the records (reported) and asked again."""
        try:
            return lookup(self._derived())
        except _MapsDamaged as exc:
            self._maps_damaged(exc)
            return lookup(self._derived())

    def _load_saved(self) -> None:
        """The maps saved with the index this open trusted (mapped, not read: the first
        lookup reads no record but those appended since), else they are built from the
        records at the first lookup."""
        self._saved_tried = True
        saved_blob = getattr(self._store, "saved_blob", None)
        crc32c = getattr(self._store, "crc32c", None)
        saved = saved_blob(MAPS_BLOB) if saved_blob is not None and crc32c is not None \
            and not self._catchup.upto else None
        if saved is None:
            return
        view, at = saved
        try:
            self._catchup.load_saved(view, at, crc32c)
        except ValueError as exc:
            self._catchup = _Catchup()
            self._maps_problem("its payment maps %s" % exc)

    def _maps_problem(self, why: str) -> None:
        problem = getattr(self._store, "index_problem", None)
        if problem is not None:
            problem("%s; the maps are rebuilt from the records" % why)

    def _maps_disagree(self, why: str) -> bool:
        """A map read from the index file names a record that does not fit it: report it and
        drop the maps (rebuilt from the records at the next lookup); True if it did (then the
        lookup is asked again).  Maps built from the records here are not doubted."""
        if not self._catchup.from_file:
            return False
        self._catchup = _Catchup()
        self._maps_problem("its payment maps disagree with the records (%s)" % why)
        return True

    def maps_wanted(self) -> bool:
        """Whether the maps are worth saving with the index: from SAVE_MAPS_FROM live records
        on (below, building them reads a few hundred KB; a small journal's index, and so the
        digest its header names, stays what it was)."""
        return self._store.head_seq - self._store.oldest_seq + 1 >= SAVE_MAPS_FROM

    def saved_maps(self) -> Optional[list]:
        """The maps, current to the newest record, as the buffers of the index file's
        ``paymaps`` blob (the journal saves them with the index), or None.  None also when
        they are more than SAVE_CATCHUP_MAX records behind (after a bulk import: bringing
        them current would make that flush or close read every record): the next save after
        a lookup built them has them."""
        if not self._saved_tried:
            self._load_saved()
        behind = self._store.head_seq - max(self._catchup.upto, self._store.oldest_seq - 1)
        if behind > SAVE_CATCHUP_MAX:
            return None
        derived = self._derived()
        crc32c = getattr(self._store, "crc32c", None)
        if derived.upto != self._store.head_seq or not derived.upto or crc32c is None:
            return None
        return self._looked_up(lambda maps: maps.saved_pieces(crc32c))

    # ---------------------------------------------------------------- queries
    def txn_records(self, txn_id: int) -> np.ndarray:
        """Every live record of payment `txn_id` and of payments referring to it, seq order:
        its first record and those the referrer map names (their txn_id or ref_seq is it),
        each checked by its own columns."""
        txn_id = int(txn_id)
        with self._store.lock:
            self._store.get(txn_id)          # KeyError if it is not in the journal
            for _attempt in range(2):
                oldest = self._store.oldest_seq
                found = [s for s in self._looked_up(lambda maps: maps.by_referrer.find(txn_id))
                         if s >= oldest]
                seqs = sorted(set(found + ([txn_id] if txn_id >= oldest else [])))
                rows = self._store.read_rows(np.array(seqs, dtype=np.uint64))
                mine = (rows["txn_id"] == txn_id) | (rows["ref_seq"] == txn_id)
                # (the record `txn_id` itself is mine only if it is a payment's first record)
                wrong = ~mine & (rows["seq"] != txn_id)
                if not wrong.any() or not self._maps_disagree(
                        "seq %d is filed as naming seq %d, it does not"
                        % (int(rows["seq"][wrong][0]), txn_id)):
                    break
        return rows[mine]

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
            for seq in self._looked_up(lambda maps: getattr(maps, "by_" + name).find(ref)):
                if seq < self._store.oldest_seq:
                    continue
                try:
                    rec = self._store.get(seq)
                except (KeyError, CorruptRecord):
                    continue            # gone or damaged: verify reports it
                if not (getattr(rec, name) and (name != "client_ref" or rec.txn_id == rec.seq)):
                    # (a shared hash names another key's record; this one carries none)
                    if self._maps_disagree("seq %d is filed under a %s it does not carry"
                                           % (seq, name)):
                        return self.find(**{name: value})
                    continue
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
            key = receipt_code_key(terminal, receipt_no)
            for seq in self._looked_up(lambda maps: maps.by_receipt_code.find(key)):
                if seq < self._store.oldest_seq:
                    continue
                try:
                    rec = self._store.get(int(seq))
                except (KeyError, CorruptRecord):
                    continue            # gone or damaged: verify reports it
                begins = rec.txn_id == rec.seq and rec.receipt_no and rec.kind in RECEIPT_KINDS
                if begins and rec.terminal == terminal and rec.receipt_no == receipt_no:
                    found.append(int(seq))
                elif not begins and self._maps_disagree(
                        "seq %d is filed under a receipt code, it begins no payment with a receipt"
                        % seq):
                    return self.receipt_payments(terminal, receipt_no)
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
