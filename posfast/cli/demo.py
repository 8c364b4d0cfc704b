"""`posfast demo`: a week of trading in one store, then the questions merchants ask.

Everything here goes through the public API, the way a POS application would.
"""
from __future__ import annotations

import csv
import datetime as _dt
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from ..dayclose import payment_transactions
from ..journal import Journal
from ..printing import FilePrinter, print_receipt, print_z_report, render_z_report
from ..receipt import Payment, Receipt, ReceiptItem
from ..reconcile import SETTLEMENT_COLUMNS, reconcile
from ..records import DayRule, Kind, Method, State, day_number, day_to_date, now_us
from ..sync import SqliteTarget, Syncer
from .output import local_time

STORE = "好又多超市 Haoyouduo Market"
ITEMS = [("宫保鸡丁 Kung Pao chicken", 3800), ("Cola 330ml", 350), ("米饭 Rice", 200),
         ("Green tea 绿茶", 600), ("Dumplings 饺子 x12", 2400), ("Coffee", 1800),
         ("Bread 面包", 900), ("Milk 牛奶 1L", 1250)]
RULE = DayRule(utc_offset="+08:00", starts_at="04:00")
CNY = 156


def _say(text=""):
    print(text, flush=True)


def _timeit(fn, repeat=2000):
    fn()
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat * 1e6


def _receipt(rng, receipt_no, terminal, issued_at, method, pan_last4=""):
    from ..receipt import Payment, Receipt, ReceiptItem
    picks = rng.choice(len(ITEMS), size=int(rng.integers(1, 5)), replace=False)
    items = [ReceiptItem(ITEMS[i][0], qty=int(rng.integers(1, 3)), unit_price=ITEMS[i][1])
             for i in picks]
    total = sum(item.qty * item.unit_price for item in items)
    receipt = Receipt(merchant=STORE, receipt_no=receipt_no, terminal=terminal,
                      issued_at=issued_at, currency=CNY, items=items, total=total,
                      payments=[Payment(method, total, pan_last4=pan_last4)],
                      footer=["谢谢惠顾 Thank you!"])
    return receipt, total


def _local(ts_us):
    return (_dt.datetime.fromtimestamp(ts_us / 1e6, _dt.timezone.utc)
            .astimezone(RULE.tzinfo))


def _history(journal, rng, days, terminals, today):
    """The past days: sales, refunds, voids and declines, appended in bulk per day."""
    receipt_no = {t: 0 for t in range(1, terminals + 1)}
    written = 0
    for back in range(days - 1, 0, -1):
        day = today - back
        opening = RULE.day_start_us(day) + 5 * 3600 * 10**6          # 09:00 local
        n = int(rng.integers(180, 260))
        ts = np.sort(opening + rng.integers(0, 12 * 3600 * 10**6, size=n))
        terms = rng.integers(1, terminals + 1, size=n)
        method = rng.choice([int(Method.CARD), int(Method.CASH), int(Method.QR)], size=n,
                            p=[0.5, 0.2, 0.3])
        declined = (method == Method.CARD) & (rng.random(n) < 0.04)
        cols = {k: [] for k in ("ts", "terminal", "kind", "state", "method", "amount",
                                "currency", "receipt_no", "pan_last4", "auth_code", "rrn")}
        payloads = []
        for i in range(n):
            t = int(terms[i])
            receipt_no[t] += 1
            meth = Method(int(method[i])).name.lower()
            last4 = "%04d" % rng.integers(0, 10000) if meth == "card" else ""
            receipt, total = _receipt(rng, receipt_no[t], t, _local(int(ts[i])).isoformat(), meth,
                                      last4)
            cols["ts"].append(int(ts[i]))
            cols["terminal"].append(t)
            cols["kind"].append(int(Kind.SALE))
            cols["state"].append(int(State.DECLINED if declined[i] else State.APPROVED))
            cols["method"].append(int(method[i]))
            cols["amount"].append(total)
            cols["currency"].append(CNY)
            cols["receipt_no"].append(receipt_no[t])
            cols["pan_last4"].append(last4.encode())
            cols["auth_code"].append(b"" if declined[i] else b"%06d" % rng.integers(0, 10**6))
            cols["rrn"].append(b"%012d" % rng.integers(0, 10**12))
            payloads.append(receipt.to_payload())
        seqs = journal.append_many({k: np.array(v) for k, v in cols.items()}, payloads=payloads)
        written += len(seqs)
        # a few refunds and voids of that day's approved card sales
        approved = [s for s, st, m in zip(seqs, cols["state"], cols["method"])
                    if st == State.APPROVED and m == Method.CARD]
        for original in rng.choice(approved, size=3, replace=False).tolist():
            rec = journal.get(original)
            kind = "refund" if rng.random() < 0.6 else "void"
            amount = rec.amount // 2 if kind == "refund" else rec.amount
            receipt_no[rec.terminal] += 1
            txn = journal.begin_payment(terminal=rec.terminal, kind=kind, amount=amount,
                                        currency=CNY, method="card", ref_seq=original,
                                        receipt_no=receipt_no[rec.terminal],
                                        ts=rec.ts + 600 * 10**6)
            journal.finish_payment(txn, "approved", auth_code="%06d" % rng.integers(0, 10**6),
                                   ts=rec.ts + 601 * 10**6)
            written += 2
    return written


def run_demo(directory=None, days=7, terminals=4, seed=20261120):
    from ..printing import FilePrinter, print_receipt, reprint
    days, terminals = max(2, days), max(3, terminals)   # the walkthrough uses terminals 2 and 3
    rng = np.random.default_rng(seed)
    directory = directory or tempfile.mkdtemp(prefix="posfast-demo-")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "store.pfj")
    for suffix in ("", ".idx"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    today = RULE.day_number(time.time_ns() // 1000)

    _say("posfast demo: one store, %d terminals, %d business days (UTC+08:00, day starts 04:00)"
         % (terminals, days))
    _say("journal: %s" % path)
    started = time.perf_counter()
    journal = Journal.create(path, capacity=100_000, slot_size=128, max_payload=2048,
                             day_rule=RULE, durability="fsync")
    written = _history(journal, rng, days, terminals, today)
    _say("\n1. Recorded %d records of past trading (sales, refunds, voids, declined cards) in %.2f s,"
         " durably (fsync per commit group)." % (written, time.perf_counter() - started))

    # ---- today, live: every payment pending before the host, receipts printed and journaled
    printer_file = os.path.join(directory, "printer.escpos")
    printer = FilePrinter(printer_file)
    now = time.time_ns() // 1000
    _say("\n2. Today, live at the tills: each payment is written PENDING before the card host is "
         "asked, then finished; every receipt print is journaled.")
    live = []
    for i in range(8):
        t = i % terminals + 1
        meth = ["card", "qr", "cash", "card"][i % 4]
        receipt_no = journal.next_receipt_no(t)
        receipt, total = _receipt(rng, receipt_no, t, _local(now).isoformat(), meth,
                                  "4242" if meth == "card" else "")
        started = time.perf_counter()
        txn = journal.begin_payment(terminal=t, amount=total, currency=CNY, method=meth,
                                    client_ref="T%d-%06d" % (t, receipt_no), receipt_no=receipt_no,
                                    payload=receipt.to_payload())
        outcome = "declined" if i == 3 else "approved"
        journal.finish_payment(txn, outcome, auth_code="" if outcome == "declined" else "A%05d" % i,
                               rrn="%012d" % (900000000000 + i), pan_last4="4242" if meth == "card" else "")
        took = (time.perf_counter() - started) * 1000
        if outcome == "approved":
            print_receipt(journal, txn, printer)
        live.append(txn)
        _say("   terminal %d  receipt %4d  %-5s %9s  %-8s (begin+finish durable in %.1f ms)"
             % (t, receipt_no, meth, _money(total), outcome.upper(), took))

    # ---- a crash mid-payment: a real process killed between begin and finish
    _say("\n3. Power cut mid-payment: terminal 2 starts a card sale and its process is killed "
         "(SIGKILL) before the host answers.")
    journal.close()
    child = subprocess.run([sys.executable, "-c", _CRASH_CHILD, path], capture_output=True, text=True)
    crashed_txn = int(child.stdout.strip() or 0)
    journal = Journal.open(path, durability="fsync")
    _say("   the till process died (exit %s); reopening the journal..." % child.returncode)
    info = journal.last_transaction(2)
    _say("   posfast last --terminal 2  ->  txn %d: %s, %s, receipt printed: %s"
         % (info["txn_id"], info["state"].upper(), _money(info["amount"]),
            "yes" if info["receipt_printed"] else "no"))
    doubt = journal.in_doubt()
    _say("   posfast in-doubt            ->  %d payment(s) in doubt: %s"
         % (len(doubt), ", ".join("txn %d on terminal %d (%s)" % (r.seq, r.terminal, _money(r.amount))
                                   for r in doubt)))
    if crashed_txn:
        journal.resolve(crashed_txn, "reversed")
        _say("   the host had no record of it: resolved as REVERSED; nothing printed, nothing charged.")

    # ---- lookups
    _say("\n4. The last transaction of each terminal (the question after any crash or timeout):")
    for t in range(1, terminals + 1):
        info = journal.last_transaction(t)
        _say("   terminal %d: txn %-5d %-6s %-9s %10s  auth %-7s receipt %d%s"
             % (t, info["txn_id"], info["kind"], info["state"], _money(info["amount"]),
                info["auth_code"] or "-", info["receipt_no"],
                "" if info["receipt_printed"] else "  (no receipt printed)"))
    last_us = _timeit(lambda: journal.last(3))
    lt_us = _timeit(lambda: journal.last_transaction(3), repeat=300)

    day3 = today - min(3, days - 1)
    rows = journal.query(day=day3, terminal=3)
    q_us = _timeit(lambda: journal.query(day=day3, terminal=3), repeat=300)
    _say("\n5. Every record of terminal 3 on %s (%d records; first 8 shown):"
         % (day_to_date(day3), len(rows)))
    from .output import format_rows, journal_tz
    _say("   " + format_rows(rows[:8], tz=journal_tz(journal.day_rule)).replace("\n", "\n   "))

    _say("\n6. Day totals (approved sales minus refunds and voids, by method), last %d days:" % days)
    for back in range(days - 1, -1, -1):
        day = today - back
        drows = journal.query(day=day)
        pay = drows[np.isin(drows["kind"], [Kind.SALE, Kind.REFUND, Kind.VOID])]
        # the newest record of each payment is its state
        _, last_idx = np.unique(pay["txn_id"][::-1], return_index=True)
        final = pay[::-1][last_idx]
        ok = final[final["state"] == State.APPROVED]
        sign = np.where(ok["kind"] == Kind.SALE, 1, -1)
        net = int((ok["amount"] * sign).sum())
        by_method = {Method(m).name.lower(): int((ok["amount"] * sign)[ok["method"] == m].sum())
                     for m in np.unique(ok["method"])}
        declined = int((final["state"] == State.DECLINED).sum())
        _say("   %s  %4d payments  net %12s  %s  declined %d"
             % (day_to_date(day), len(final), _money(net),
                " ".join("%s %s" % (k, _money(v)) for k, v in by_method.items()), declined))

    _say("\n7. Reprint (补打) of a receipt from %d day(s) ago, terminal 3:" % (today - day3))
    first = rows[(rows["kind"] == Kind.SALE) & (rows["payload_len"] > 0)][0]
    result = reprint(journal, receipt_no=int(first["receipt_no"]), terminal=3, printer=printer,
                     text=True)
    _say("   " + (result.text or "").replace("\n", "\n   "))
    _say("   -> copy %d sent to the printer (%s) and journaled as PRINT seq %d"
         % (result.copy, result.outcome, result.seq))

    _say("\n8. Offline: the store link was down all week, so everything is still unsynced.")
    status = journal.status()
    _say("   posfast status -> %d records unsynced, watermark %d, ring %.1f%% full"
         % (status["unsynced"], status["sync_watermark"], status["fill"] * 100))
    back_db = os.path.join(directory, "backoffice.db")
    from ..sync import SqliteTarget, Syncer
    started = time.perf_counter()
    result = Syncer(journal, SqliteTarget(back_db, create=True), batch=1000).run_once()
    took = time.perf_counter() - started
    _say("   link back: synced %d records in %d batches to %s in %.2f s; watermark now %d"
         % (result.sent, result.batches, back_db, took, journal.sync_watermark))
    again = Syncer(journal, SqliteTarget(back_db), batch=1000).run_once()
    _say("   syncing again sends %d: the back office holds every record exactly once" % again.sent)

    _say("\n9. Reconciliation and day close:")
    demo_reconcile(journal, back_db, _say)

    started = time.perf_counter()
    report = journal.verify()
    v_ms = (time.perf_counter() - started) * 1000
    _say("\n10. verify: %s" % str(report).replace("\n", "\n   "))
    _say("    (checksums, seq continuity and the SHA-256 hash chain of every record, %.0f ms)" % v_ms)

    _say("\nLookup times on this machine (%d records):" % journal.head_seq)
    _say("   last(terminal)            %7.1f µs" % last_us)
    _say("   last_transaction(terminal)%7.1f µs" % lt_us)
    _say("   query(day, terminal)      %7.1f µs  (%d rows)" % (q_us, len(rows)))
    journal.close()
    _say("\nTry: posfast last %s --terminal 2 ; posfast query %s --day %s --terminal 3"
         % (path, path, day_to_date(day3)))
    return 0


def _money(amount):
    from ..receipt import format_amount
    return "¥" + format_amount(int(amount), CNY)


_CRASH_CHILD = r"""
import os, signal, sys
import posfast
j = posfast.Journal.open(sys.argv[1])
txn = j.begin_payment(terminal=2, amount=8800, currency=156, method="card", client_ref="T2-CRASH")
print(txn, flush=True)
os.kill(os.getpid(), signal.SIGKILL)   # power cut: no finish, no close
"""


def demo_reconcile(journal, back_office=None, out=print, day=None):
    """End of ``posfast demo``: plant a receipt without a transaction and a payment the
    host never saw, reconcile against the back office (and an acquirer settlement file
    written from it), close the day and print its Z-report.

    `back_office` is the demo's back-office SQLite file (a temporary one is
    made and synced when None); `out` prints a line.
    """
    if callable(back_office) and out is print:
        back_office, out = None, back_office
    directory = os.path.dirname(os.path.abspath(journal.path))
    if back_office is None:
        back_office = os.path.join(tempfile.mkdtemp(prefix="posfast-bo-"), "backoffice.db")
        Syncer(journal, SqliteTarget(back_office, create=True), batch=1000).run_once()
    rule = journal.day_rule
    wanted = day_number(day) if day is not None else rule.day_number(now_us())
    printer = FilePrinter(os.path.join(directory, "printer.escpos"))
    today = journal.query(day=wanted)
    txns, _ = payment_transactions(today, wanted, journal.oldest_seq)

    # 1. a receipt came out for a payment the host declined (a till printing too early)
    declined = txns[txns["state"] == State.DECLINED]
    if len(declined):
        target = journal.get(int(declined["final_seq"][0]))
    else:
        txn = journal.begin_payment(terminal=1, amount=4200, currency=156, method="card")
        journal.finish_payment(txn, "declined")
        target = journal.payment(txn)
    seq = journal.append(terminal=target.terminal, kind=Kind.PRINT, state=State.OK,
                         txn_id=target.txn_id, ref_seq=target.seq, receipt_no=target.receipt_no,
                         currency=target.currency,
                         payload=b'{"copy":0,"printer":"demo: printed before the host answered"}')
    out("   planted: a receipt printed (PRINT seq %d) for txn %d, which the host declined"
        % (seq, target.txn_id))
    # 2. an approved card payment after the last sync: the back office never saw it
    receipt = Receipt(merchant="Demo", receipt_no=0, terminal=1, currency=156,
                      items=[ReceiptItem("Coffee", unit_price=1800)], total=1800,
                      payments=[Payment("card", 1800, pan_last4="4242")])
    unsynced = journal.begin_payment(terminal=1, amount=1800, currency=156, method="card",
                                     payload=receipt.to_payload())
    journal.finish_payment(unsynced, "approved", auth_code="D00001", rrn="999000000001",
                           pan_last4="4242")
    print_receipt(journal, unsynced, printer)
    out("   planted: an approved card sale (txn %d) after the last sync: the back office never "
        "saw it" % unsynced)

    report = reconcile(journal, "sqlite:///" + os.path.abspath(back_office), day=wanted)
    out("\n   posfast reconcile --host sqlite:///%s" % back_office)
    out("   " + report.to_table(detail_width=48).replace("\n", "\n   "))

    # the acquirer's settlement file: what the card host settled (it never saw the unsynced sale)
    settled = [t for t in txns if t["state"] == State.APPROVED
               and t["method"] not in (Method.CASH, Method.VOUCHER)]
    csv_path = os.path.join(directory, "settlement-%s.csv" % day_to_date(wanted))
    tz = rule.tzinfo
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SETTLEMENT_COLUMNS)
        for t in settled:
            writer.writerow([int(t["terminal"]), local_time(int(t["ts"]) + 2_000_000, tz, human=False), bytes(t["rrn"]).decode("ascii", "replace"),
                             bytes(t["auth_code"]).decode("ascii", "replace"), int(t["amount"]), int(t["currency"]),
                             Kind(int(t["kind"])).name.lower()])
    report2 = reconcile(journal, csv_path, day=wanted)
    out("\n   posfast reconcile --host %s" % csv_path)
    out("   " + report2.summary())

    close = journal.close_day(wanted, force=True)
    result = print_z_report(journal, close, printer)
    out("\n   posfast close-day --day %s  (Z-report also sent to the printer: %s, PRINT seq %d)"
        % (day_to_date(wanted), result.outcome, result.seq))
    out("   " + render_z_report(close, width=42, tz=tz).rstrip("\n").replace("\n", "\n   "))
    return report
