"""Write tests/data/golden_v2.pfj and golden_v2.json: a small journal of format 2.

The file is reproducible byte for byte: fixed journal id, fixed creation time, fixed
record timestamps.  It holds what format 2 adds to format 1: a time-zone day rule
(Asia/Shanghai, business day starts 04:00) in the header, the business day and the
payment channel in the record head, and record extensions (client_ref, order_ref,
host_ref) between the head and the payload; records of one, two and three slots.
Regenerate only on purpose (format-2 files must keep opening):

    python tests/data/make_golden_v2.py
"""
import os
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_golden import record_entry, write_golden  # noqa: E402  (as for format 1)

GOLDEN_JID = uuid.UUID("0badc0de-f00d-4e11-9a55-7e57da7a0002")
CREATED_US = 1_795_000_000_000_000          # 2026-11-18 UTC; records are of the 22nd and 23rd
CAPACITY, SLOT_SIZE, MAX_PAYLOAD = 32, 128, 1024
TZ, DAY_OFFSET_MIN, DAY_START_MIN = "Asia/Shanghai", 480, 240   # +08:00, day starts 04:00
RETENTION = 0                                # synced
WATERMARK = 3

RECEIPT = ("SHOP 42  TILL 3\n2x Coffee        31.00\nTOTAL CNY        31.00\n"
           "WECHAT PAY  ORDER ORD-20261122-0001\n").encode()
RECORDS = [
    # a WeChat Pay sale: pending, then approved with the host's transaction reference
    (dict(ts=1_795_320_000_000_000, terminal=3, kind=1, state=1, method=2, currency=156,
          amount=3100, receipt_no=1001, operator=7, client_ref=b"pos3-0001", channel="wechat",
          order_ref="ORD-20261122-0001"), b""),
    (dict(ts=1_795_320_004_500_000, terminal=3, kind=1, state=2, method=2, currency=156,
          amount=3100, txn_id=1, receipt_no=1001, operator=7, client_ref=b"pos3-0001",
          channel="wechat", order_ref="ORD-20261122-0001",
          host_ref="4200002026112200000000000001", rrn=b"632400000001"), b""),
    # the receipt: head + 128 bytes of payload, two slots
    (dict(ts=1_795_320_006_000_000, terminal=3, kind=7, state=7, ref_seq=2, receipt_no=1001,
          operator=7, order_ref="ORD-20261122-0001"), RECEIPT),
    # an Alipay refund of part of it, three slots (extension + 270 payload bytes)
    (dict(ts=1_795_330_800_000_000, terminal=3, kind=2, state=2, method=2, currency=156,
          amount=1200, ref_seq=2, receipt_no=1002, operator=8, flags=2, channel="alipay",
          client_ref=b"pos3-0002", order_ref="RFD-20261122-0001",
          host_ref="2026112222001400000000000002"), bytes(range(256)) + b"refund-reason:"),
    # 02:00 local on the 23rd: still the 22nd's business day (it starts at 04:00)
    (dict(ts=1_795_370_400_000_000, terminal=5, kind=11, state=0), b"note: drawer opened"),
    # a UnionPay card sale of the 23rd, only a host_ref in its extension
    (dict(ts=1_795_379_400_000_000, terminal=5, kind=1, state=2, method=1, currency=156,
          amount=50_000, txn_id=2, flags=1, channel="unionpay", pan_last4=b"6222",
          auth_code=b"UP0001", host_ref="UP-63240000000002"), b""),
]


def build(path):
    """Create the golden journal at `path` (which must not exist)."""
    from posfast import Journal, _core

    _core.Ring.create(path, CAPACITY, SLOT_SIZE, MAX_PAYLOAD, GOLDEN_JID.bytes, CREATED_US,
                      DAY_OFFSET_MIN, DAY_START_MIN, RETENTION, 2, TZ)
    with Journal.open(path) as journal:
        for fields, payload in RECORDS:
            journal.append(payload=payload, **fields)
        journal.set_sync_watermark(WATERMARK)
        expected = {
            "journal_id": str(GOLDEN_JID), "created_us": CREATED_US, "capacity": CAPACITY,
            "slot_size": SLOT_SIZE, "max_payload": MAX_PAYLOAD, "day_offset_min": DAY_OFFSET_MIN,
            "day_start_min": DAY_START_MIN, "tz": TZ, "retention": RETENTION,
            "sync_watermark": WATERMARK, "format_version": 2,
            "head_seq": journal.head_seq, "oldest_seq": journal.oldest_seq,
            "records": [],
        }
        for seq in range(1, journal.head_seq + 1):
            expected["records"].append(record_entry(journal, seq, position=True))
    for suffix in (".idx",):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    return expected


def main():
    write_golden("golden_v2", build)


if __name__ == "__main__":
    main()
