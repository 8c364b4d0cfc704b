"""Write the seed corpus of tests/fuzz/fuzz_journal.py: small real journals in every shape
(empty, spanning records, wrapped, torn tail, damaged record, watermark, old index), in the
target's compact input layout.  (Fixed journal id and timestamps; only the creation time in
the header differs from run to run.)

    python tests/fuzz/make_corpus.py tests/fuzz/corpus
"""
import os
import shutil
import sys
import tempfile
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import posfast  # noqa: E402
from posfast import _core  # noqa: E402

import fuzz_journal as target  # noqa: E402

JID = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
TS = 1_790_000_000_000_000


def _journal(d, name, capacity=8, slot_size=128, retention="synced", max_payload=600):
    path = os.path.join(d, name)
    return posfast.Journal.create(path, capacity=capacity, slot_size=slot_size,
                                  max_payload=max_payload, retention=retention, journal_id=JID), path


def _fill(j, n, payload=lambda i: b"", start=0):
    for i in range(start, start + n):
        j.append(terminal=i % 3 + 1, kind=("sale", "print", "refund")[i % 3], state="approved",
                 amount=100 * i, currency=156, ts=TS + i * 60_000_000, receipt_no=i,
                 payload=payload(i))


def _read(path):
    with open(path, "rb") as f:
        data = f.read()
    try:
        with open(path + ".idx", "rb") as f:
            idx = f.read()
    except FileNotFoundError:
        idx = None
    return data, idx


def seeds():
    d = tempfile.mkdtemp()
    out = {}
    try:
        j, p = _journal(d, "empty")
        j.close()
        out["empty"] = target.encode(*_read(p))

        j, p = _journal(d, "few")
        _fill(j, 3)
        j.close()
        data, idx = _read(p)
        out["few-index"] = target.encode(data, idx)
        out["few-readonly"] = target.encode(data, idx, flags=target.FLAG_INDEX | target.FLAG_READONLY)
        out["few-append"] = target.encode(data, None, flags=target.FLAG_APPEND)

        j, p = _journal(d, "span", capacity=12)
        _fill(j, 5, payload=lambda i: bytes([i]) * (60 * i))
        j.set_sync_watermark(2)
        j.close()
        data, idx = _read(p)
        out["spanning-watermark"] = target.encode(data, idx, flags=target.FLAG_INDEX | target.FLAG_APPEND)

        j, p = _journal(d, "wrap", capacity=6, retention="overwrite")
        _fill(j, 4)
        j.close()
        _, old_idx = _read(p)
        j = posfast.Journal.open(p)
        _fill(j, 9, payload=lambda i: b"w" * (i % 2) * 100, start=4)
        j.close()
        data, idx = _read(p)
        out["wrapped"] = target.encode(data, idx)
        out["wrapped-stale-index"] = target.encode(data, old_idx)

        # a torn tail: the last record's head survives, the one before it is zeroed
        j, p = _journal(d, "torn", capacity=8)
        _fill(j, 5)
        pos4 = j._ring.slot_of(4)
        j.close()
        data = bytearray(_read(p)[0])
        off = _core.DATA_OFFSET + pos4 * 128
        data[off:off + 128] = bytes(128)
        out["torn-tail"] = target.encode(bytes(data), None, flags=target.FLAG_APPEND)
        # the same record with one flipped byte: damage followed by an intact record
        data = bytearray(_read(p)[0])
        data[_core.DATA_OFFSET + 40] ^= 0x40          # seq 1, slot 0: its amount field
        out["damaged-first"] = target.encode(bytes(data), None)

        # one header copy torn
        data = bytearray(_read(p)[0])
        data[60] ^= 0xFF
        out["header-copy-torn"] = target.encode(bytes(data), None)

        j, p = _journal(d, "big-slot", capacity=8, slot_size=256, max_payload=1000)
        _fill(j, 3, payload=lambda i: b"b" * 300)
        j.close()
        out["slot256"] = target.encode(*_read(p))

        data, _ = _read(p)
        out["raw-truncated"] = bytes([target.FLAG_RAW, 0, 0]) + data[:8192 + 300]

        # resealed: what the fuzzer mutates in these reaches recovery as valid-CRC records
        for name in ("few-append", "wrapped", "torn-tail", "spanning-watermark"):
            blob = bytearray(out[name])
            blob[0] |= target.FLAG_RESEAL
            out[name + "-resealed"] = bytes(blob)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return out


def main(directory):
    os.makedirs(directory, exist_ok=True)
    for name, blob in seeds().items():
        with open(os.path.join(directory, "seed-" + name), "wb") as f:
            f.write(blob)
    print("wrote %d seeds to %s" % (len(seeds()), directory))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus"))
