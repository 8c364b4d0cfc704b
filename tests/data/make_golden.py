"""Write tests/data/golden_v1.pfj and golden_v1.json: a small journal of format v1.

The file is reproducible byte for byte: fixed journal id, fixed creation time, fixed
record timestamps.  Regenerate only on purpose (a new format version gets a new
golden file; v1 files must keep opening):

    python tests/data/make_golden.py
"""
import json
import os
import sys
import uuid

GOLDEN_JID = uuid.UUID("0badc0de-f00d-4e11-9a55-7e57da7a0001")
CREATED_US = 1_795_000_000_000_000          # 2026-11-18 UTC; records are of the 22nd and 23rd
CAPACITY, SLOT_SIZE, MAX_PAYLOAD = 64, 128, 1024
DAY_OFFSET_MIN, DAY_START_MIN = 480, 240     # +08:00, business day starts 04:00
WATERMARK = 3

RECEIPT = ("SHOP 42  TILL 3\n2x Coffee        31.00\nTOTAL CNY        31.00\n"
           "CARD ****4242  AUTH A1B2C3\n").encode()
RECORDS = [
    (dict(ts=1_795_320_000_000_000, terminal=3, kind=1, state=1, method=2, currency=156,
          amount=3100, receipt_no=1001, operator=7, client_ref=b"order-0001"), b""),
    (dict(ts=1_795_320_004_500_000, terminal=3, kind=1, state=2, method=2, currency=156,
          amount=3100, txn_id=1, receipt_no=1001, operator=7, client_ref=b"order-0001",
          pan_last4=b"4242", auth_code=b"A1B2C3", rrn=b"632400000001"), b""),
    (dict(ts=1_795_320_006_000_000, terminal=3, kind=7, state=7, ref_seq=2, receipt_no=1001,
          operator=7), RECEIPT),
    (dict(ts=1_795_330_800_000_000, terminal=3, kind=2, state=2, method=2, currency=156,
          amount=-1200, ref_seq=2, txn_id=0, receipt_no=1002, operator=8, flags=2,
          pan_last4=b"4242", rrn=b"632400000002"), bytes(range(256)) + b"spanning-record" * 3),
    # 02:00 local on the 23rd: still the 22nd's business day (it starts at 04:00)
    (dict(ts=1_795_370_400_000_000, terminal=5, kind=11, state=0), b"note: drawer opened"),
    (dict(ts=1_795_379_400_000_000, terminal=5, kind=9, state=2, method=1, currency=978,
          amount=50_000, flags=1), b""),
]


def _append_as_0_1_0(journal, fields, payload):
    """posfast 0.1.0 stored a refund's amount signed; append now refuses a negative payment
    amount, so this record of the v1 file is written as 0.1.0 did, past the validation."""
    import numpy as np
    from posfast.records import RECORD_DTYPE

    row = np.zeros(1, dtype=RECORD_DTYPE)
    for name, value in fields.items():
        row[name] = value
    row["day"] = journal.day_rule.day_number(fields["ts"])
    journal._append_rows(row, [payload] if payload else None)


def record_entry(journal, seq, drop=(), position=False):
    """What a golden file's JSON says of record `seq`: its fields (text as str), payload and
    link in hex, its slot (and, with `position`, its slot position)."""
    rec = journal.get(seq)
    d = {k: (v.decode("ascii") if isinstance(v, bytes) else v)
         for k, v in rec.to_dict().items() if k != "payload" and k not in drop}
    d["payload_hex"] = rec.payload.hex()
    d["link_hex"] = rec.link.hex()
    d["slot"] = journal._ring.slot_of(seq)
    if position:
        d["position"] = journal._ring.position_of(seq)
    return d


def build(path):
    """Create the golden journal at `path` (which must not exist)."""
    from posfast import Journal, _core

    _core.Ring.create(path, CAPACITY, SLOT_SIZE, MAX_PAYLOAD, GOLDEN_JID.bytes, CREATED_US,
                      DAY_OFFSET_MIN, DAY_START_MIN, 0, 1)           # retention synced, format 1
    with Journal.open(path) as journal:
        for fields, payload in RECORDS:
            if fields.get("amount", 0) < 0:
                _append_as_0_1_0(journal, fields, payload)
            else:
                journal.append(payload=payload, **fields)
        journal.set_sync_watermark(WATERMARK)
        expected = {
            "journal_id": str(GOLDEN_JID), "created_us": CREATED_US, "capacity": CAPACITY,
            "slot_size": SLOT_SIZE, "max_payload": MAX_PAYLOAD, "day_offset_min": DAY_OFFSET_MIN,
            "day_start_min": DAY_START_MIN, "retention": 0, "sync_watermark": WATERMARK,
            "head_seq": journal.head_seq, "oldest_seq": journal.oldest_seq,
            "records": [],
        }
        for seq in range(1, journal.head_seq + 1):
            # (format 2's fields are not part of this format-1 file's expectations)
            expected["records"].append(record_entry(journal, seq,
                                                    drop=("channel", "order_ref", "host_ref")))
    for suffix in (".idx",):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    return expected


def write_golden(name, build):
    """Make tests/data/NAME.pfj anew with `build(path)` and write what it returns to NAME.json
    (both golden scripts' main)."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.dirname(os.path.dirname(here)))
    path = os.path.join(here, name + ".pfj")
    if os.path.exists(path):
        os.unlink(path)
    expected = build(path)
    with open(os.path.join(here, name + ".json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    print("wrote %s (%d bytes) and %s.json" % (path, os.path.getsize(path), name))


def main():
    write_golden("golden_v1", build)


if __name__ == "__main__":
    main()
