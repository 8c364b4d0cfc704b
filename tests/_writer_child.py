"""Deterministic record contents, and the writer child process of the crash tests.

``expected(seq)`` gives the fields and payload of record ``seq`` as a pure function
of the seq, so a test can check any record it finds after a crash against what the
writer was told to write, byte for byte, without the writer telling it.

Run as a script it is the crash-test writer:

    python _writer_child.py PATH ROUNDSEED

It opens the journal at PATH for writing (fsync durability), appends records
(single appends and append_many batches, payloads up to spanning several slots),
now and then saves the index (flush) and moves the sync watermark, and after each
append returns writes the acknowledged seqs to stdout, one line each, flushed.
The parent SIGKILLs it at a random moment.
"""
import random
import sys

# kinds the generator uses: every kind but DAY_CLOSE (whose payload verify() parses)
KINDS = (1, 2, 3, 4, 5, 6, 7, 9, 10, 11)
TS_BASE = 1_790_000_000_000_000          # 2026-09-22, microseconds since epoch
MAX_PAYLOAD = 600                        # crash/state-machine journals use max_payload=600


def expected(seq, max_payload=MAX_PAYLOAD):
    """(fields, payload) of record `seq`: what every writer in these tests appends."""
    rng = random.Random(seq * 1_000_003 + 12_345)
    fields = {
        "ts": TS_BASE + seq * 997_000_013 % 86_400_000_000 * 3 + rng.randrange(1000),
        "terminal": rng.randrange(1, 6),
        "kind": rng.choice(KINDS),
        "state": rng.randrange(0, 9),
        "method": rng.randrange(0, 7),
        "flags": rng.randrange(0, 32),
        "currency": rng.choice((156, 978, 840)),
        "amount": abs(rng.randrange(-1_000_000, 10**12)),   # payments: a magnitude
        "txn_id": rng.randrange(1, 2**40),
        "ref_seq": rng.randrange(0, seq + 1),
        "receipt_no": rng.randrange(0, 2**32),
        "operator": rng.randrange(0, 2**32),
        "client_ref": b"ord-%d-%x" % (seq, rng.randrange(16**4)),
        "pan_last4": b"%04d" % rng.randrange(10_000),
        "auth_code": b"A%05X" % rng.randrange(16**5),
        "rrn": b"%012d" % rng.randrange(10**12),
    }
    # format 2: half the records carry a channel and order/host references (the extension)
    if rng.random() < 0.5:
        fields["channel"] = rng.choice(("wechat", "alipay", "unionpay", "adyen"))
        fields["order_ref"] = ("%d%027d" % (seq, rng.randrange(10**27)))[:rng.randrange(1, 65)]
        fields["host_ref"] = "42%026d" % rng.randrange(10**26)
    else:
        fields.update(channel="", order_ref="", host_ref="")
    roll = rng.random()
    if roll < 0.25:
        size = 0
    elif roll < 0.7:
        size = rng.randrange(1, 64)
    else:                                 # spanning records: up to several slots
        size = rng.randrange(64, max_payload + 1)
    return fields, rng.randbytes(size)


def expected_dict(seq, day_rule, max_payload=MAX_PAYLOAD):
    """What ``Journal.get(seq).to_dict()`` must return for a record of `expected(seq)`."""
    fields, payload = expected(seq, max_payload)
    d = dict(fields)
    d["seq"] = seq
    d["day"] = day_rule.day_number(fields["ts"])
    d["payload"] = payload
    return d


def columns_for(seqs, max_payload=MAX_PAYLOAD):
    """append_many columns and payloads for consecutive `seqs`."""
    records = [expected(s, max_payload) for s in seqs]
    columns = {name: [f[name] for f, _ in records] for name in records[0][0]}
    return columns, [p for _, p in records]


def _main(path, seed):
    import posfast

    rng = random.Random(seed)
    out = sys.stdout
    with posfast.Journal.open(path, durability="fsync") as journal:
        out.write("open %d\n" % journal.head_seq)
        out.flush()
        while True:
            first = journal.head_seq + 1
            roll = rng.random()
            try:
                if roll < 0.6:
                    fields, payload = expected(first)
                    seq = journal.append(payload=payload, **fields)
                    assert seq == first
                    acked = [seq]
                elif roll < 0.9:
                    seqs = range(first, first + rng.randrange(2, 12))
                    columns, payloads = columns_for(seqs)
                    acked = list(journal.append_many(columns, payloads))
                    assert acked == list(seqs)
                else:
                    acked = None
            except posfast.JournalFull:
                # retention "synced": the back office catches up, then the till carries on
                journal.set_sync_watermark(journal.head_seq)
                out.write("wm %d\n" % journal.head_seq)
                out.flush()
                continue
            if acked is not None:
                out.write("".join("ack %d\n" % s for s in acked))
                out.flush()
                continue
            if roll < 0.95:
                journal.flush()               # index saved: the next crash replays only the tail
            else:
                target = max(journal.sync_watermark, journal.head_seq - rng.randrange(0, 50))
                journal.set_sync_watermark(target)
                out.write("wm %d\n" % target)
                out.flush()


if __name__ == "__main__":
    _main(sys.argv[1], int(sys.argv[2]))
