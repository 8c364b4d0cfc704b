"""Journals written on one CPU, read on another (.ci/arm-check).

    python arm_interchange.py write DIR      # deterministic journals (+ their index files)
    python arm_interchange.py dump FILE...   # what posfast reads from them, as JSON

`write` makes the same bytes on every CPU: fixed journal ids, creation times and record
times, a ring lapped several times (evictions, records wrapping the ring end), a bulk
append, payment flows, a time-zone day rule.  `dump` prints every header field and record
(fields, payload, link), the verify result, index lookups and day totals; arm-check compares
the dump of a file made on x86_64 and read under emulation with the same file read on
x86_64, and the other way round, and the files' bytes with each other.
"""
import json
import os
import sys
import uuid

import posfast
from posfast import _core

TS0 = 1_795_320_000_000_000          # 2026-11-22 UTC
CREATED_US = 1_795_000_000_000_000


def _content(i):
    payload = (b"receipt %05d " % i) * (i % 23)          # 0 .. 22 x 14 bytes: 1 to 4 slots
    return dict(ts=TS0 + i * 37_000_000, terminal=1 + i % 5, kind="sale", state="approved",
                method=("cash", "card", "qr")[i % 3], currency=(156, 978, 840)[i % 3],
                amount=100 + i * 7, receipt_no=i, operator=i % 4,
                client_ref=b"c%06d" % i), payload


def write(out):
    os.makedirs(out, exist_ok=True)
    # 1. a small ring lapped several times, fsync appends one by one (overwrite retention)
    path = os.path.join(out, "lapped.pfj")
    _core.Ring.create(path, 96, 128, 1024, uuid.UUID(int=0xA11CE).bytes, CREATED_US, 480, 240,
                      1, 2, "Asia/Shanghai")
    with posfast.Journal.open(path) as j:
        for i in range(260):
            fields, payload = _content(i)
            j.append(payload=payload, **fields)
    # 2. synced retention: payments with outcomes and a bulk append
    path = os.path.join(out, "payments.pfj")
    _core.Ring.create(path, 4096, 256, 2048, uuid.UUID(int=0xB0B).bytes, CREATED_US, 60, 0,
                      0, 2, "")
    with posfast.Journal.open(path) as j:
        for k in range(40):
            txn = j.begin_payment(terminal=1 + k % 3, amount=500 + k, currency=978,
                                  ts=TS0 + k * 60_000_000)
            j.finish_payment(txn, ("approved", "declined")[k % 7 == 3], ts=TS0 + k * 60_000_000 + 900_000)
        n = 500
        j.append_many({"terminal": [7 + i % 4 for i in range(n)], "kind": "sale",
                       "state": "approved", "method": "card", "currency": 156,
                       "amount": [1000 + i for i in range(n)],
                       "ts": [TS0 + 3_600_000_000 + i * 1_000_000 for i in range(n)],
                       "order_ref": ["ORD-%05d" % i for i in range(n)]},
                      payloads=[b"bulk %d" % i for i in range(n)])
        j.set_sync_watermark(100)


def _dump(path):
    with posfast.Journal.open(path, readonly=True) as j:
        ring = j._ring
        records = []
        for seq in range(j.oldest_seq, j.head_seq + 1):
            r = j.get(seq)
            d = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in r.to_dict().items()}
            d["link"] = r.link.hex()
            d["slot"] = ring.slot_of(seq)
            records.append(d)
        report = j.verify()
        days = sorted({d["day"] for d in records})
        terminals = sorted({d["terminal"] for d in records})
        return {
            "header": {k: getattr(ring, k) for k in (
                "capacity", "slot_size", "max_payload", "day_offset_min", "day_start_min",
                "retention", "sync_watermark", "version", "tz_name", "created_us")},
            "journal_id": str(j.journal_id), "oldest_seq": j.oldest_seq, "head_seq": j.head_seq,
            "index_problems": list(j.index_problems),
            "verify": [report.ok, report.checked, [str(p) for p in report.problems]],
            "records": records,
            "by_terminal": {t: [int(s) for s in j.query(terminal=t)["seq"]] for t in terminals},
            "by_day": {d: [int(s) for s in j.query(day=d)["seq"]] for d in days},
            "totals": {d: j.totals(d).as_dict() for d in days},
            "last_transaction": {t: j.last_transaction(t) for t in terminals},
        }


def main(argv):
    if len(argv) >= 2 and argv[0] == "write":
        write(argv[1])
    elif len(argv) >= 2 and argv[0] == "dump":
        out = {os.path.basename(p): _dump(p) for p in argv[1:]}
        json.dump(out, sys.stdout, indent=0, sort_keys=True, default=str)
        sys.stdout.write("\n")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
