"""Card-number scanning cost (python bench/bench_pan_scan.py): append_many of 100k records with ~300-byte receipt payloads, durability none, best of 5:
(a) receipts with short numbers only; (b) every receipt with a 21-digit order number and a
3-4-4 phone number; (c) the same as (b) plus a grouped 19-digit non-card number."""
import os
import shutil
import tempfile
import time
import numpy as np
import posfast
from posfast.receipt import Receipt, ReceiptItem, Payment

n = 100_000
def make(i, footer):
    return Receipt(merchant="好又多超市 Store 42", receipt_no=i + 1, terminal=3,
                   issued_at="2026-11-20T13:45:12+08:00", items=[
                       ReceiptItem("宫保鸡丁", unit_price=3800), ReceiptItem("Cola 330ml", qty=3, unit_price=350)],
                   footer=footer, payments=[Payment("card", 4850, pan_last4="1234", rrn="%012d" % i)]).to_payload()
tmpl = {"a": make(0, ["Thank you", "Tel 62345678"]),
        "b": make(0, ["订单号 202611201345120000000", "Tel 021-6234-5678"]),
        "c": make(0, ["订单号 202611201345120000000", "Tel 021-6234-5678", "Member 1234 5678 9012 3456 789"])}
ts0 = 1_795_000_000_000_000
cols = {"ts": ts0 + np.arange(n, dtype=np.int64) * 1000, "terminal": (np.arange(n) % 4) + 1,
        "kind": 1, "state": 2, "method": 2, "currency": 156, "amount": 100 + np.arange(n) % 9000,
        "receipt_no": np.arange(n) + 1, "client_ref": [b"ord-%d" % i for i in range(n)]}
for case, p in tmpl.items():
    payloads = [p.replace(b'"rrn":"000000000000"', b'"rrn":"%012d"' % i) for i in range(n)]
    best = 9e9
    for rep in range(5):
        d = tempfile.mkdtemp(dir=None)
        with posfast.Journal.create(os.path.join(d, "b.pfj"), capacity=400_000, max_payload=1024,
                                    durability="none", retention="overwrite") as j:
            t = time.perf_counter()
            j.append_many(cols, payloads)
            best = min(best, time.perf_counter() - t)
        shutil.rmtree(d, ignore_errors=True)
    print("(%s) payload %d B: append_many 100k best of 5: %.1f ms" % (case, len(p), best * 1e3))
