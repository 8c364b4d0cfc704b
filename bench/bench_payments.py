"""Last-transaction inquiry, idempotency lookup, receipt rendering and reprint at scale.

    python bench/bench_payments.py                 # 1,000,000 records, ~1 min on 2 cores
    python bench/bench_payments.py --records 200000

The journal holds N records over 16 terminals written the way the payment
lifecycle writes them: a PENDING begin, the host's answer (same txn_id) and a PRINT
record per payment; one payment in ten carries its receipt (a 12-line receipt as
payload) and every payment a client_ref.  Measured (median per operation):
`last_transaction(terminal)`, `find(client_ref)` of a recent and of an old payment,
`last(terminal)`, rendering a 40-line receipt to text and to ESC/POS (native QR, and
a ZJ-5870's raster QR), a receipt code's payment through the code map against a scan
of the terminal's records, and a reprint end to end (code lookup + render +
FilePrinter + the two PRINT records of a print, fsync) of a receipt from days ago.  Targets (issue 3): last_transaction and find
<= 2 µs.  A summary is cached until its terminal's newest record changes, so the
uncached rows show the first inquiry after a new record.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402

from posfast import DayRule, Journal, Kind, State  # noqa: E402
from posfast.printing import render_escpos  # noqa: E402
from posfast.printing import FilePrinter, reprint  # noqa: E402
from posfast.receipt import Payment, Receipt, ReceiptItem, render_text  # noqa: E402

TERMINALS = 16
RULE = DayRule(utc_offset="+08:00", starts_at="04:00")


def median_us(fn, repeat):
    fn()
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e6


def receipt(lines, receipt_no=1, terminal=1):
    items = [ReceiptItem("商品 Item %02d 宫保鸡丁" % i, qty=1 + i % 3, unit_price=100 + 37 * i)
             for i in range(lines)]
    total = sum(item.qty * item.unit_price for item in items)
    return Receipt(merchant="好又多超市 Haoyouduo", receipt_no=receipt_no, terminal=terminal,
                   issued_at="2026-11-20T13:45:12+08:00", currency=156, items=items, total=total,
                   payments=[Payment("card", total, pan_last4="4242")])


def build(path, records):
    payments = records // 3
    rng = np.random.default_rng(7)
    j = Journal.create(path, capacity=int(records * 1.3) + 16, max_payload=4096,
                       durability="none", day_rule=RULE, retention="overwrite")
    start_us = 1_787_000_000_000_000
    ts = np.sort(start_us + rng.integers(0, 60 * 86_400_000_000, size=payments))
    terminal = rng.integers(1, TERMINALS + 1, size=payments).astype(np.uint32)
    receipt_no = np.zeros(payments, dtype=np.uint32)
    for t in range(1, TERMINALS + 1):
        mask = terminal == t
        receipt_no[mask] = np.arange(1, mask.sum() + 1)
    amount = rng.integers(100, 50_000, size=payments)
    payload = receipt(12).to_payload()
    chunk = 30_000
    for lo in range(0, payments, chunk):
        hi = min(payments, lo + chunk)
        n = hi - lo
        first = j.head_seq + 1
        begin_seq = first + 3 * np.arange(n, dtype=np.uint64)
        cols = {
            "ts": np.repeat(ts[lo:hi], 3) + np.tile([0, 1_500_000, 2_000_000], n),
            "terminal": np.repeat(terminal[lo:hi], 3),
            "kind": np.tile([Kind.SALE, Kind.SALE, Kind.PRINT], n),
            "state": np.tile([State.PENDING, State.APPROVED, State.OK], n),
            "amount": np.repeat(amount[lo:hi], 3) * np.tile([1, 1, 0], n),
            "currency": np.full(3 * n, 156),
            "receipt_no": np.repeat(receipt_no[lo:hi], 3),
            "txn_id": np.repeat(begin_seq, 3),
            "ref_seq": np.tile(np.array([0, 0, 1], dtype=np.uint64), n) * np.repeat(begin_seq, 3),
            "client_ref": np.repeat(np.array([b"C%09d" % i for i in range(lo, hi)]), 3),
            "auth_code": np.tile([b"", b"A12345", b""], n),
        }
        payloads = [payload if (k % 3 == 0 and (lo + k // 3) % 10 == 0) else b""
                    for k in range(3 * n)]
        j.append_many(cols, payloads=payloads)
    j.close()
    return payments


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args(argv)
    directory = tempfile.mkdtemp(prefix="posfast-bench-pay-", dir=args.dir)
    path = os.path.join(directory, "pay.pfj")
    started = time.perf_counter()
    payments = build(path, args.records)
    print("built %d records (%d payments) in %.1f s" % (3 * payments, payments,
                                                          time.perf_counter() - started))
    rows = []
    with Journal.open(path, durability="fsync") as j:
        assert j.last_transaction(5)["state"] == "approved"
        rows.append(("last_transaction(terminal)", median_us(lambda: j.last_transaction(5), 2000),
                     "<= 2 µs"))
        recent = "C%09d" % (payments - 3)
        old = "C%09d" % (payments // 2)
        assert j.find(recent)["state"] == "approved" and j.find(old)["state"] == "approved"
        rows.append(("find(client_ref), recent payment", median_us(lambda: j.find(recent), 2000),
                     "<= 2 µs"))
        rows.append(("find(client_ref), payment from weeks ago", median_us(lambda: j.find(old), 300),
                     "<= 2 µs"))
        def uncached(fn):
            def run():
                j._payments._summary_cache.clear()     # as on the first inquiry after a new record
                return fn()
            return run
        rows.append(("  uncached (first inquiry after a new record)",
                     median_us(uncached(lambda: j.last_transaction(5)), 1000), ""))
        rows.append(("  find, recent, uncached", median_us(uncached(lambda: j.find(recent)), 1000), ""))
        rows.append(("  find, weeks ago, uncached", median_us(uncached(lambda: j.find(old)), 100), ""))
        rows.append(("last(terminal)", median_us(lambda: j.last(5), 5000), ""))
        big = receipt(40)
        rows.append(("render 40-line receipt to text", median_us(lambda: render_text(big, width=42), 200), ""))
        rows.append(("render 40-line receipt to ESC/POS", median_us(lambda: render_escpos(big, width=42), 200), ""))
        rows.append(("render 40-line receipt to ESC/POS, ZJ-5870 (raster QR, GBK)",
                     median_us(lambda: render_escpos(big, profile="ZJ-5870"), 200), ""))
        printer = FilePrinter(os.path.join(directory, "printer.bin"))
        target = j.query(terminal=5, kind="sale")
        target = target[(target["payload_len"] > 0)][len(target) // 40]
        code = "5-%06d" % int(target["receipt_no"])
        assert j.receipt_payments(5, int(target["receipt_no"])) == [int(target["txn_id"])]
        rows.append(("receipt code -> payment (receipt_payments, the code map)",
                     median_us(lambda: j.receipt_payments(5, int(target["receipt_no"])), 2000), ""))
        rows.append(("find(receipt_code=%s), cached summary" % code,
                     median_us(lambda: j.find(receipt_code=code), 2000), ""))

        def scan():   # what a reprint by receipt number did before the code map: read the terminal
            rows_ = j.query(terminal=5)
            return rows_[(rows_["receipt_no"] == target["receipt_no"]) & (rows_["payload_len"] > 0)]
        rows.append(("  the same by a scan of the terminal's records (posfast 0.1's reprint)",
                     median_us(scan, 30), ""))
        rows.append(("reprint end to end (code lookup, render, print, 2 fsync'd PRINT records)",
                     median_us(lambda: reprint(j, receipt_no=int(target["receipt_no"]), terminal=5,
                                               printer=printer, max_copies=10**6), 30), ""))
        records = j.head_seq
    width = max(len(r[0]) for r in rows)
    print("\n%s | %12s | target" % ("operation at %d records" % records, "median"))
    print("-" * (width + 28))
    for name, us, target in rows:
        value = "%.2f µs" % us if us < 1000 else "%.2f ms" % (us / 1000)
        print("%s | %12s | %s" % (name.ljust(width), value, target))


if __name__ == "__main__":
    main()
