"""Write tests/data/golden_archive_v1/ and golden_archive_v2/: a journal with
retention="archive" whose older days live only in its archive, in archive format 1
(whole rows and every link, zlib; what posfast 0.1 wrote) and format 2 (columns,
payload dictionary, links recomputed from the records), plus a JSON of every record.

Version 2 holds payments with an order_ref and a host_ref (format 1 did not keep
them); version 1 plain sales with receipts.  The format-1 segments are written with
the format-1 encoder kept in posfast.archive (_encode_body), byte for byte what 0.1
wrote.  Regenerate only on purpose (both versions must keep reading):

    python tests/data/make_golden_archive.py
"""
import json
import os
import shutil
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))


from posfast import DayRule, Journal, _core  # noqa: E402
from posfast import archive as A  # noqa: E402

RULE = DayRule(utc_offset="+08:00", starts_at="04:00")
DAY0 = 20_400


def receipt(seq):
    return ('{"m":"SHOP 42","no":%d,"it":[["Coffee",2,1550],["Bun",1,%d]],"tot":%d}'
            % (seq, 300 + seq % 7, 3400 + seq % 7)).encode()


def fill(path, refs):
    j = Journal.create(path, capacity=64, max_payload=256, durability="none", day_rule=RULE,
                       retention="archive")
    for day in range(DAY0, DAY0 + 5):
        start = RULE.day_start_us(day) + 5 * 3_600_000_000
        for k in range(40):
            ts = start + k * 60_000_000
            seq = j.head_seq + 1
            if refs and k % 5 == 0:
                txn = j.begin_payment(terminal=1 + k % 3, amount=100 + seq, currency=156,
                                      method="qr", order_ref="ORD-%d-%d" % (day, k), ts=ts,
                                      client_ref="c%d" % seq)
                j.finish_payment(txn, "approved", auth_code="A%05d" % seq, host_ref="H%d" % seq,
                                 payload=receipt(seq), ts=ts + 1_000_000)
            else:
                j.append(terminal=1 + k % 3, kind="sale", state="approved", method="card",
                         amount=100 + seq, currency=156, ts=ts, receipt_no=seq,
                         pan_last4="%04d" % (seq % 10000), rrn="%012d" % (seq * 7919),
                         payload=receipt(seq) if k % 2 else b"")
            j.set_sync_watermark(j.head_seq)
    return j


def to_v1(path):
    """Rewrite every segment and the manifest of `path`'s archive in format 1."""
    adir = path + ".archive"
    text, _ = open(os.path.join(adir, "MANIFEST"), "rb").read().rsplit(b"\n", 1)
    manifest = json.loads(text)
    archive = A.Archive(path, bytes.fromhex(manifest["journal_id"]), readonly=True)
    for entry in manifest["segments"]:
        seg = os.path.join(adir, entry["name"])
        data = open(seg, "rb").read()
        fields = list(A._HEAD.unpack_from(data))
        _, body = archive._read_segment_file(entry["name"])
        n = len(body.rows)
        raw = A._encode_body(body.rows, [body.payload_at(i) for i in range(n)],
                             [body.link_at(i) for i in range(n)], body.prev_link)
        comp = zlib.compress(raw, 6)
        fields[1], fields[2], fields[10], fields[11], fields[12] = 1, 1, len(raw), len(comp), \
            _core.crc32c(comp)
        head = A._HEAD.pack(*fields)
        with open(seg, "wb") as f:
            f.write(head + A._HEAD_CRC.pack(_core.crc32c(head)) + comp)
        entry["crc"], entry["nbytes"] = fields[12], A.HEADER_SIZE + len(comp)
    for name in os.listdir(adir):
        if name.startswith("dict-"):
            os.unlink(os.path.join(adir, name))
    manifest["version"] = 1
    manifest.pop("dicts", None)
    manifest["policy"].pop("dictionary", None)
    body = json.dumps(manifest, indent=0, sort_keys=True).encode()
    with open(os.path.join(adir, "MANIFEST"), "wb") as f:
        f.write(body + b"\n%d" % _core.crc32c(body))
    os.unlink(os.path.join(adir, "index"))     # rebuilt at open (format 1 wrote the same file)


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def main():
    for version in (1, 2):
        out = os.path.join(HERE, "golden_archive_v%d" % version)
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        path = os.path.join(out, "till.pfj")
        j = fill(path, refs=version == 2)
        j.archive.configure(dictionary=True)
        records = []
        for seq in range(1, j.head_seq + 1):
            r = j.get(seq)
            records.append({"seq": seq, "amount": r.amount, "terminal": r.terminal, "day": r.day,
                            "archived": r.archived, "payload_hex": r.payload.hex(),
                            "link_hex": r.link.hex(), "order_ref": _text(r.order_ref),
                            "host_ref": _text(r.host_ref), "client_ref": _text(r.client_ref),
                            "rrn": _text(r.rrn), "state": int(r.state)})
        oldest = j.oldest_seq
        j.close()
        if version == 1:
            to_v1(path)
        for extra in (".idx",):
            if os.path.exists(path + extra):
                os.unlink(path + extra)
        with open(os.path.join(out, "golden.json"), "w") as f:
            json.dump({"archive_version": version, "oldest_seq": oldest, "records": records}, f,
                      indent=0)
        print(out, oldest, len(records), sorted(os.listdir(path + ".archive")))


if __name__ == "__main__":
    main()
