"""Reconciliation of one business day: posfast (numpy) against the same matching in
SQL in SQLite (stdlib sqlite3, indexed), in the same run.  Prints one table.

    python bench/bench_reconcile.py                    # 100,000 records a side, ~15 s on 2 cores
    python bench/bench_reconcile.py --records 20000
    python bench/bench_reconcile.py --memory           # peak RSS: parse + report of 1,000,000 rows

``--memory`` writes a settlement CSV of ``--rows`` rows (default 1,000,000, all on
one business day, none of them in the journal: every row is a ``missing_in_journal``
finding, the largest report such a file can give) and measures, each in a fresh
subprocess, the peak RSS (``VmHWM``; ``ru_maxrss`` would carry the forking parent's size
over the exec) of parsing it, of reconciling it and
writing the JSON report to a file, the same for CSV, and of the summary mode.
``--module FILE`` loads another copy of ``posfast/reconcile.py`` (e.g. the one of
an older commit, ``git show REV:posfast/reconcile.py > /tmp/old.py``) as the
module under test, so that before and after are measured by the same script.

Measured on the shared 2-core x86_64 machine (other engineers' builds and tests
running: noisy; RSS is less affected than time), Python 3.11, 1,000,000 rows
(58 MB of CSV), peak RSS of a fresh process (the imports alone take ~42 MB):

    git show 9c8eecb:posfast/reconcile.py > /tmp/before.py
    python bench/bench_reconcile.py --memory --module /tmp/before.py   # 0.1.0 code
    python bench/bench_reconcile.py --memory                           # this tree

    task                                 0.1.0 peak (over start)   now peak (over start)
    read_settlement                        882 MB (839 MB, 879 B/row)  173 MB (131 MB, 137 B/row)
    reconcile + JSON report to a file     4283 MB (4239 MB)            438 MB (396 MB)
    reconcile + CSV report to a file      1097 MB (1054 MB)            436 MB (394 MB)
    reconcile --summary                    (no such mode)              439 MB (397 MB)

The report files are the same text as before (JSON 429 MB, CSV 161 MB for a
million findings); the summary is a few lines.  What remains per row is the
parsed settlement (45 bytes), the matching's payment table and key arrays, and
12 bytes per finding: the findings become objects only as they are written.

Two workloads, each 100,000 journal records of one business day against 100,000
host rows, with about 1% planted discrepancies of every kind:

* settlement: 100,000 card/QR payments against an acquirer settlement CSV of
  100,000 rows (shuffled, clocks off by up to +-30 s, a third without RRN, a
  sixth without auth code): RRN, then terminal + auth code, then terminal +
  amount + currency + type in a 300 s window, nearest first.  posfast times the
  CSV parse and the reconcile separately; SQLite loads both sides into indexed
  tables (timed apart) and runs the same three passes as SQL (the window pass
  in rounds of nearest proposals, as posfast does).
* back office: 33,670 payments (PENDING + final record each) and the
  receipt prints of the approved ones in the journal (100,000 records),
  synced to a SQLite back office (100,000 records there too): posfast reads the back office and reconciles, print
  checks included; SQLite folds both sides into payments with window
  functions over the same rows (the journal's day loaded into a table, timed
  apart) and runs the same comparisons and print checks as SQL.

Each side's category counts are printed so that both can be seen to agree.

``--scale`` (issue 13): a statement of ``--rows`` rows (default 1,000,000; posfast CSV
with host and order references and fees, or ``--scale-format wechat``: a WeChat Pay ALL
bill) against a journal of as many payments, with 0.3% planted of each of
missing at host, missing in the journal and amount mismatch; 90% of rows carry the host
reference, 8% the order reference only, 2% neither (matched by terminal + amount in the
window).  Each measurement runs in a fresh process and prints wall time and peak RSS of
reading the statement, reconciling, and streaming the report to a JSON or CSV file, and the
process's CPU time (user + system: on this loaded, shared machine wall times ran at 2-4x
it); the same matching is then done in SQL (SQLite, indexed tables; load timed apart;
``--no-sql`` leaves it out).  ``--against DIR`` measures another tree's posfast in the same
run (``--code DIR`` only that one), e.g. the commit before the statement tokenizer:

    git worktree add ../before 145019b
    (cd ../before && python setup.py build_ext --inplace)      # its own posfast/_core
    python bench/bench_reconcile.py --scale --against ../before
    python bench/bench_reconcile.py --scale --scale-format wechat --against ../before --no-sql

Measured 2026-12-01, load average 6-11 (other sessions' builds and suites), CPU s of the
JSON / CSV / summary lines (wall: total s):

    posfast CSV (82 MB)    before 6.26-7.53 CPU s (10.6-34.3 s)   now 3.45-3.85 CPU s (3.45-23.1 s)
    WeChat bill (191 MB)   before 8.54-9.53 CPU s (18.0-43.0 s)   now 4.30-4.85 CPU s (6.2-17.3 s)
    peak RSS               before 442-457 MB                      now 435-465 MB

and at load average 2-3, late (wall s, CPU about the same):

    posfast CSV            before 5.69-7.04 s                     now 3.15-4.36 s    (<= 441 MB)
    WeChat bill            before 8.52-10.67 s                    now 4.89-5.33 s    (<= 449 MB)

Now: posfast CSV read 1.0 CPU s (was ~3), match 2.0, JSON report 0.35; the WeChat bill's
read 2-2.6.  The reports are byte for byte those of the code before.
"""
import argparse
import csv
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
if "--code" in sys.argv[:-1]:     # another tree's posfast (before and after, one script)
    sys.path.insert(0, os.path.abspath(sys.argv[sys.argv.index("--code") + 1]))

import posfast  # noqa: E402
from posfast import DayRule, Journal, Kind, State  # noqa: E402
from posfast.reconcile import read_settlement, reconcile  # noqa: E402
from posfast.sync import SqliteTarget, Syncer  # noqa: E402

RULE = DayRule(utc_offset="+08:00", starts_at="04:00")
DAY = posfast.records.day_number("2025-11-20")
START = RULE.day_start_us(DAY)
WINDOW = 300 * 10**6
PAY_KINDS = "(1,2,3,4,5,6,9,10)"


def best(fn, repeat):
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


# ------------------------------------------------------------------ settlement workload
def settlement_workload(directory, n, seed=1):
    rng = np.random.default_rng(seed)
    j = Journal.create(os.path.join(directory, "settle.pfj"), capacity=n + 1000, day_rule=RULE,
                       durability="none")
    ts = np.sort(START + rng.integers(0, 86_400 * 10**6 - 60 * 10**6, n))
    terminal = rng.integers(1, 41, n).astype(np.uint32)
    amount = rng.integers(100, 50_000, n)
    kind = np.where(rng.random(n) < 0.03, int(Kind.REFUND), int(Kind.SALE)).astype(np.uint8)
    state = np.where(rng.random(n) < 0.01, int(State.DECLINED), int(State.APPROVED)).astype(np.uint8)
    method = np.where(rng.random(n) < 0.3, 3, 2).astype(np.uint8)
    rrn = np.char.mod("%012d", rng.permutation(10**7)[:n] + 10**11).astype("S12")
    rrn[rng.random(n) < 1 / 3] = b""
    auth = np.char.mod("%06X", rng.integers(0, 16**6, n)).astype("S6")
    auth[rng.random(n) < 1 / 6] = b""
    j.append_many({"ts": ts, "terminal": terminal, "kind": kind, "state": state, "method": method,
                   "amount": amount, "currency": 156, "rrn": rrn, "auth_code": auth})
    # the acquirer's view: approved payments, plus planted differences
    keep = state == State.APPROVED
    k = max(1, n // 300)
    idx = np.flatnonzero(keep)
    drop = rng.choice(idx, k, replace=False)                 # missing at host
    keep[drop] = False
    rows_idx = np.flatnonzero(keep)
    host_amount = amount.copy()
    off = rng.choice(rows_idx[rrn[rows_idx] != b""], k, replace=False)
    host_amount[off] += 1                                    # amount mismatch
    declined_settled = rng.choice(np.flatnonzero(state != State.APPROVED), min(k, int((state != 2).sum())),
                                  replace=False)             # state mismatch (by rrn, when it has one)
    dup = rng.choice(rows_idx[rrn[rows_idx] != b""], k, replace=False)   # settled twice
    order = np.concatenate([rows_idx, declined_settled, dup])
    shift = rng.integers(-30, 31, len(order)) * 10**6
    extra = k                                                # missing in journal
    lines = []
    names = {int(Kind.SALE): "sale", int(Kind.REFUND): "refund"}
    for pos, i in enumerate(order.tolist()):
        local = np.datetime64(int(ts[i] + shift[pos] + 8 * 3600 * 10**6), "us").astype(str)[:19]
        lines.append((int(terminal[i]), local, rrn[i].decode(), auth[i].decode(), int(host_amount[i]),
                      156, names[int(kind[i])]))
    for e in range(extra):
        local = np.datetime64(int(START + 3600 * 10**6 + e * 10**6 + 8 * 3600 * 10**6), "us").astype(str)[:19]
        lines.append((99, local, "%012d" % (900000000000 + e), "", 4242, 156, "sale"))
    perm = rng.permutation(len(lines))
    path = os.path.join(directory, "settlement.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("terminal", "time", "rrn", "auth_code", "amount", "currency", "type"))
        w.writerows(lines[p] for p in perm.tolist())
    return j, path, len(lines)


def sql_settlement(journal, settlement_rows, repeat):
    """The same three-pass matching in SQL; returns (load s, match s, counts)."""
    con = sqlite3.connect(":memory:")
    rows = journal.query(day=[DAY, DAY + 1])

    def load():
        con.executescript("""
            DROP TABLE IF EXISTS rec; DROP TABLE IF EXISTS ht;
            CREATE TABLE rec (seq INTEGER PRIMARY KEY, txn_id INT, ts INT, day INT, terminal INT,
              amount INT, currency INT, kind INT, state INT, method INT, flags INT, rrn BLOB, auth BLOB);
            CREATE TABLE ht (line INTEGER PRIMARY KEY, terminal INT, ts INT, amount INT, currency INT,
              kind INT, rrn BLOB, auth BLOB);""")
        con.executemany("INSERT INTO rec VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", zip(
            *(rows[c].tolist() for c in ("seq", "txn_id", "ts", "day", "terminal", "amount",
                                         "currency", "kind", "state", "method", "flags", "rrn",
                                         "auth_code"))))
        s = settlement_rows
        con.executemany("INSERT INTO ht VALUES (?,?,?,?,?,?,?,?)", zip(
            *(s[c].tolist() for c in ("line", "terminal", "ts", "amount", "currency", "kind", "rrn",
                                      "auth_code"))))
        con.execute("CREATE INDEX rec_txn ON rec (txn_id, seq)")
        con.execute("CREATE INDEX ht_rrn ON ht (rrn, kind)")
        con.execute("CREATE INDEX ht_auth ON ht (terminal, auth, kind)")
        con.execute("CREATE INDEX ht_win ON ht (terminal, amount, currency, kind, ts)")
        con.commit()

    def match():
        start, end = START, START + 86_400 * 10**6
        con.executescript(f"""
            DROP TABLE IF EXISTS jt; DROP TABLE IF EXISTS pairs; DROP TABLE IF EXISTS hs;
            CREATE TABLE jt AS
              WITH pay AS (SELECT * FROM rec WHERE kind IN {PAY_KINDS} AND flags & 1 = 0),
                   fin AS (SELECT txn_id, MAX(seq) AS final FROM pay
                           WHERE txn_id IN (SELECT seq FROM pay WHERE seq = txn_id AND day = {DAY})
                           GROUP BY txn_id)
              SELECT p.txn_id AS idx, p.terminal, b.ts, p.amount, p.currency, b.kind, p.state,
                     p.rrn, p.auth, 0 AS done
              FROM fin JOIN pay p ON p.seq = fin.final JOIN pay b ON b.seq = fin.txn_id
              WHERE p.method NOT IN (1, 5) AND b.kind NOT IN (9, 10);
            CREATE INDEX jt_idx ON jt (idx);
            CREATE TABLE hs AS SELECT *, 0 AS done FROM ht
              WHERE ts >= {start - WINDOW} AND ts < {end + WINDOW};
            CREATE INDEX hs_line ON hs (line);
            CREATE INDEX hs_rrn ON hs (rrn, kind);
            CREATE INDEX hs_auth ON hs (terminal, auth, kind);
            CREATE INDEX hs_win ON hs (terminal, amount, currency, kind, ts);
            CREATE TABLE pairs (j INT, h INT);
            -- host rows listed twice
            UPDATE hs SET done = 2 WHERE rrn != x'' AND line NOT IN
              (SELECT MIN(line) FROM hs WHERE rrn != x'' GROUP BY rrn, kind);
            -- pass 1: rrn
            INSERT INTO pairs SELECT j.idx, h.line FROM
              (SELECT rrn, kind, MIN(idx) AS idx FROM jt WHERE rrn != x'' GROUP BY rrn, kind) j
              JOIN hs h ON h.rrn = j.rrn AND h.kind = j.kind AND h.done = 0;
            UPDATE jt SET done = 1 WHERE idx IN (SELECT j FROM pairs);
            UPDATE hs SET done = 1 WHERE line IN (SELECT h FROM pairs);
            -- pass 2: terminal + auth code
            INSERT INTO pairs SELECT j.idx, h.line FROM
              (SELECT idx, terminal, auth, kind FROM (SELECT idx, terminal, auth, kind,
                 ROW_NUMBER() OVER (PARTITION BY terminal, auth, kind ORDER BY state != 2, idx) AS rn
                 FROM jt WHERE done = 0 AND auth != x'') WHERE rn = 1) j
              JOIN (SELECT terminal, auth, kind, MIN(line) AS line FROM hs WHERE done = 0 AND auth != x''
                    GROUP BY terminal, auth, kind) h
              ON h.terminal = j.terminal AND h.auth = j.auth AND h.kind = j.kind;
            UPDATE jt SET done = 1 WHERE done = 0 AND idx IN (SELECT j FROM pairs);
            UPDATE hs SET done = 1 WHERE done = 0 AND line IN (SELECT h FROM pairs);""")
        # pass 3: nearest proposals within the window, conflicts won by the nearest, in rounds
        for state in (2, 1):
            while True:
                con.executescript(f"""
                    DROP TABLE IF EXISTS prop;
                    CREATE TEMP TABLE prop AS SELECT j, h FROM (
                      SELECT j.idx AS j, h.line AS h, ROW_NUMBER() OVER (PARTITION BY j.idx
                        ORDER BY abs(h.ts - j.ts), h.line) AS rn
                      FROM jt j JOIN hs h ON h.done = 0 AND h.terminal = j.terminal
                        AND h.amount = j.amount AND h.currency = j.currency AND h.kind = j.kind
                        AND h.ts BETWEEN j.ts - {WINDOW} AND j.ts + {WINDOW}
                      WHERE j.done = 0 AND j.state = {state}) WHERE rn = 1;
                    UPDATE jt SET done = 3 WHERE done = 0 AND state = {state}
                      AND idx NOT IN (SELECT j FROM prop);""")
                added = con.execute("""
                    INSERT INTO pairs SELECT j, h FROM (
                      SELECT p.j, p.h, ROW_NUMBER() OVER (PARTITION BY p.h
                        ORDER BY abs(hs.ts - jt.ts), p.j) AS rn
                      FROM prop p JOIN jt ON jt.idx = p.j JOIN hs ON hs.line = p.h) WHERE rn = 1""").rowcount
                if added <= 0:
                    break
                con.executescript("""
                    UPDATE jt SET done = 1 WHERE done = 0 AND idx IN (SELECT j FROM pairs);
                    UPDATE hs SET done = 1 WHERE done = 0 AND line IN (SELECT h FROM pairs);""")
        def q(sql):
            return con.execute(sql).fetchone()[0]
        return {
            "missing_at_host": q("SELECT count(*) FROM jt WHERE state = 2 AND done != 1"),
            "missing_in_journal": q(f"SELECT count(*) FROM hs WHERE done = 0 AND ts >= {start} AND ts < {end}"),
            "amount_mismatch": q("SELECT count(*) FROM pairs p JOIN jt ON jt.idx = p.j JOIN hs ON hs.line = p.h "
                                 "WHERE jt.state != 1 AND (jt.amount != hs.amount OR jt.currency != hs.currency)"),
            "state_mismatch": q("SELECT count(*) FROM pairs p JOIN jt ON jt.idx = p.j WHERE jt.state NOT IN (1, 2)"),
            "duplicate": q(f"SELECT count(DISTINCT h.rrn) FROM hs h WHERE h.done = 2 AND ts >= {start} AND ts < {end}"),
            "in_doubt": q("SELECT count(*) FROM jt WHERE state = 1"),
            "matched": q("SELECT count(*) FROM pairs"),
        }

    t_load, _ = best(load, 1)
    t_match, counts = best(match, repeat)
    con.close()
    return t_load, t_match, counts


# ------------------------------------------------------------------ back-office workload
def back_office_workload(directory, n, seed=2):
    """About n records: payments (begin + final) and the receipts of the approved ones."""
    rng = np.random.default_rng(seed)
    payments = int(n / 2.97)
    j = Journal.create(os.path.join(directory, "bo.pfj"), capacity=n + 1000, day_rule=RULE,
                       durability="none")
    ts = np.sort(START + rng.integers(0, 86_400 * 10**6 - 60 * 10**6, payments))
    terminal = rng.integers(1, 41, payments).astype(np.uint32)
    amount = rng.integers(100, 50_000, payments)
    final = rng.choice([int(State.APPROVED)] * 97 + [int(State.DECLINED)] * 3, payments).astype(np.uint8)
    final[rng.choice(payments, max(1, payments // 1000), replace=False)] = int(State.PENDING)
    rrn = np.char.mod("%012d", rng.permutation(10**7)[:payments] + 10**11).astype("S12")
    first = 1
    begins = {"ts": ts, "terminal": terminal, "kind": "sale", "state": "pending", "amount": amount,
              "currency": 156, "method": "card"}
    j.append_many(begins)                       # seqs 1..payments: txn_id = seq
    txn = np.arange(first, first + payments, dtype=np.uint64)
    done = final != State.PENDING
    j.append_many({"ts": ts[done] + 2 * 10**6, "terminal": terminal[done], "kind": "sale",
                   "state": final[done], "amount": amount[done], "currency": 156, "method": "card",
                   "txn_id": txn[done], "rrn": rrn[done]})
    # receipts of approved payments; a few failed, unknown, or printed for a declined payment
    approved = np.flatnonzero(final == State.APPROVED)
    printed = approved
    pstate = rng.choice([int(State.OK)] * 995 + [int(State.FAILED)] * 3 + [int(State.UNKNOWN)] * 2,
                        len(printed)).astype(np.uint8)
    declined = np.flatnonzero(final == State.DECLINED)[:max(1, n // 10000)]
    printed = np.concatenate([printed, declined])
    pstate = np.concatenate([pstate, np.full(len(declined), int(State.OK), np.uint8)])
    order = np.argsort(ts[printed], kind="stable")
    printed, pstate = printed[order], pstate[order]
    j.append_many({"ts": ts[printed] + 3 * 10**6, "terminal": terminal[printed], "kind": "print",
                   "state": pstate, "txn_id": txn[printed], "ref_seq": txn[printed],
                   "currency": 156})
    back = os.path.join(directory, "back.db")
    Syncer(j, SqliteTarget(back, synchronous="OFF", create=True), batch=10_000).run_once()
    # the back office differs: a few payments edited there, some never synced
    k = max(1, n // 1000)
    con = sqlite3.connect(back)
    victims = rng.choice(approved, 2 * k, replace=False) + 1
    con.executemany("UPDATE records SET amount = amount + 1 WHERE txn_id = ?", [(int(t),) for t in victims[:k]])
    con.executemany("UPDATE records SET state = 3 WHERE txn_id = ? AND seq != txn_id",
                    [(int(t),) for t in victims[k:]])
    con.commit()
    con.close()
    j.append_many({"ts": START + rng.integers(0, 80_000, k) * 10**6, "terminal": 1, "kind": "sale",
                   "state": "approved", "amount": 999, "currency": 156, "method": "cash"})
    return j, back


def sql_back_office(journal, back, repeat):
    con = sqlite3.connect(back)
    rows = journal.query(day=[DAY, DAY + 1])
    jid = str(journal.journal_id)

    def load():
        con.executescript("DROP TABLE IF EXISTS temp.jrec; CREATE TEMP TABLE jrec (seq INTEGER PRIMARY KEY, "
                          "txn_id INT, ts INT, day INT, terminal INT, amount INT, currency INT, kind INT, "
                          "state INT, method INT, flags INT, rrn BLOB, client_ref BLOB)")
        con.executemany("INSERT INTO jrec VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", zip(
            *(rows[c].tolist() for c in ("seq", "txn_id", "ts", "day", "terminal", "amount", "currency",
                                         "kind", "state", "method", "flags", "rrn", "client_ref"))))
        con.execute("CREATE INDEX temp.jrec_txn ON jrec (txn_id, seq)")
        con.commit()

    def fold(table, where):
        return f"""
            WITH pay AS (SELECT * FROM {table} WHERE {where} AND kind IN {PAY_KINDS} AND flags & 1 = 0),
                 ids AS (SELECT seq AS txn_id FROM pay WHERE seq = txn_id AND day = {DAY}),
                 agg AS (SELECT txn_id, MIN(seq) AS first, MAX(seq) AS final FROM pay
                         WHERE txn_id IN (SELECT txn_id FROM ids) GROUP BY txn_id)
            SELECT agg.txn_id, agg.first, agg.final, f.terminal, f.amount, f.currency, f.state, f.rrn,
                   b.kind, b.amount AS first_amount, b.client_ref
            FROM agg JOIN pay f ON f.seq = agg.final JOIN pay b ON b.seq = agg.first"""

    def match():
        con.executescript(f"""
            DROP TABLE IF EXISTS temp.jtx; DROP TABLE IF EXISTS temp.htx; DROP TABLE IF EXISTS temp.pr;
            CREATE TEMP TABLE jtx AS {fold("jrec", "1")};
            CREATE TEMP TABLE htx AS {fold("main.records", f"journal_id = '{jid}' AND day BETWEEN {DAY} AND {DAY + 1}")};
            CREATE INDEX temp.jtx_id ON jtx (txn_id);
            CREATE INDEX temp.htx_id ON htx (txn_id);
            CREATE TEMP TABLE pr AS SELECT * FROM jrec WHERE kind = 7 AND flags & 1 = 0
              AND (day = {DAY} OR txn_id IN (SELECT txn_id FROM jtx));
            CREATE INDEX temp.pr_txn ON pr (txn_id, state);""")
        def q(sql):
            return con.execute(sql).fetchone()[0]
        return {
            "missing_at_host": q("SELECT count(*) FROM jtx WHERE txn_id NOT IN (SELECT txn_id FROM htx)"),
            "missing_in_journal": q("SELECT count(*) FROM htx WHERE txn_id NOT IN (SELECT txn_id FROM jtx)"),
            "amount_mismatch": q("SELECT count(*) FROM jtx j JOIN htx h USING (txn_id) WHERE j.amount != h.amount "
                                 "OR j.currency != h.currency OR j.first_amount != h.first_amount"),
            "state_mismatch": q("SELECT count(*) FROM jtx j JOIN htx h USING (txn_id) WHERE j.state != h.state "
                                "AND j.state != 1"),
            "duplicate": q("SELECT count(*) FROM (SELECT rrn FROM jtx WHERE state = 2 AND rrn != x'' "
                           "GROUP BY rrn, kind HAVING count(*) > 1)") +
                         q("SELECT count(*) FROM (SELECT client_ref FROM jtx WHERE state = 2 AND "
                           "client_ref != x'' GROUP BY client_ref HAVING count(*) > 1)"),
            "receipt_without_transaction": q("SELECT count(*) FROM pr p LEFT JOIN jtx j USING (txn_id) "
                                             "WHERE p.state IN (7, 8) AND j.txn_id IS NOT NULL AND j.state != 2"),
            "transaction_without_receipt": q(
                "SELECT count(*) FROM jtx j WHERE j.state = 2 AND j.kind IN (1, 2, 3, 5, 6) AND NOT EXISTS "
                "(SELECT 1 FROM pr p WHERE p.txn_id = j.txn_id AND p.state IN (7, 8))"),
            "print_unknown": q(
                "SELECT count(*) FROM jtx j WHERE j.state = 2 AND j.kind IN (1, 2, 3, 5, 6) AND NOT EXISTS "
                "(SELECT 1 FROM pr p WHERE p.txn_id = j.txn_id AND p.state = 7) AND EXISTS "
                "(SELECT 1 FROM pr p WHERE p.txn_id = j.txn_id AND p.state = 8)"),
            "in_doubt": q("SELECT count(*) FROM jtx WHERE state = 1"),
            "matched": q("SELECT count(*) FROM jtx WHERE txn_id IN (SELECT txn_id FROM htx)"),
        }

    t_load, _ = best(load, 1)
    t_match, counts = best(match, repeat)
    con.close()
    return t_load, t_match, counts


# ------------------------------------------------------------------ memory
def write_big_settlement(path, rows, seed=3):
    """`rows` settlement rows of business day DAY, written in blocks (no row list)."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        f.write("terminal,time,rrn,auth_code,amount,currency,type\n")
        block = 100_000
        for start in range(0, rows, block):
            n = min(block, rows - start)
            ts = START + rng.integers(0, 86_400 * 10**6 - 10**6, n) + 8 * 3600 * 10**6
            times = np.datetime_as_string(ts.astype("datetime64[us]"), unit="s")
            rrn = np.char.mod("%012d", np.arange(start, start + n) + 10**11)
            auth = np.char.mod("%06X", rng.integers(0, 16**6, n))
            terminal = rng.integers(1, 41, n)
            amount = rng.integers(100, 50_000, n)
            f.write("".join("%d,%s,%s,%s,%d,156,sale\n" % row for row in
                            zip(terminal.tolist(), np.char.replace(times, "T", " ").tolist(),
                                rrn.tolist(), auth.tolist(), amount.tolist())))


def _rss_kb(field="VmRSS:"):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def _peak_kb():
    """This process's peak RSS: VmHWM, not ru_maxrss (which Linux carries over an exec from
    the forking parent, so a child of a big parent would report the parent's size)."""
    return _rss_kb("VmHWM:")


def memory_child(task, module_file, csv_path, journal_path, out_path):
    """One measurement in this (fresh) process: prints 'baseline_kb peak_kb out_bytes'."""
    import importlib.util
    if module_file:
        spec = importlib.util.spec_from_file_location("posfast._reconcile_under_test", module_file)
        rec = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = rec
        spec.loader.exec_module(rec)
    else:
        from posfast import reconcile as rec
    j = Journal.open(journal_path, readonly=True) if task != "parse" else None
    baseline = _rss_kb()
    size = 0
    if task == "parse":
        s = rec.read_settlement(csv_path, RULE)
        size = len(s)
    elif task == "summary":
        report = rec.reconcile(j, csv_path, day=DAY, check_receipts=False, summary=True)
        with open(out_path, "w") as f:
            f.write(report.to_table())
        size = os.path.getsize(out_path)
    else:
        report = rec.reconcile(j, csv_path, day=DAY, check_receipts=False)
        with open(out_path, "w", encoding="utf-8", newline="") as f:
            if hasattr(report, "write"):
                report.write(f, task)                    # streamed
            else:
                f.write(report.format(task))              # built whole (0.1.0)
        size = os.path.getsize(out_path)
    peak = _peak_kb()
    print(baseline, peak, size)


def memory_main(args):
    import subprocess
    directory = tempfile.mkdtemp(prefix="posfast-bench-memory-")
    csv_path = os.path.join(directory, "settlement.csv")
    journal_path = os.path.join(directory, "empty.pfj")
    print("writing a %d-row settlement file..." % args.rows, flush=True)
    write_big_settlement(csv_path, args.rows)
    Journal.create(journal_path, capacity=1024, day_rule=RULE, durability="none").close()
    print("settlement file: %s, %.0f MB; module: %s" % (
        csv_path, os.path.getsize(csv_path) / 1e6, args.module or "posfast.reconcile (this tree)"))
    tasks = ["parse", "json", "csv"] + ([] if args.module else ["summary"])
    print("%-34s %12s %12s %14s %12s" % ("task (fresh process each)", "peak RSS", "minus start",
                                          "per input row", "output"))
    for task in tasks:
        out_path = os.path.join(directory, "report." + task)
        got = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child", task,
                              args.module or "", csv_path, journal_path, out_path],
                             capture_output=True, text=True)
        if got.returncode:
            print("%-34s failed: %s" % (task, got.stderr.strip().splitlines()[-1]))
            continue
        baseline, peak, size = map(int, got.stdout.split()[-3:])
        label = {"parse": "read_settlement", "json": "reconcile + JSON report to a file",
                 "csv": "reconcile + CSV report to a file",
                 "summary": "reconcile --summary"}[task]
        print("%-34s %9.0f MB %9.0f MB %10.0f B/row %9.1f MB" % (
            label, peak / 1024, (peak - baseline) / 1024, (peak - baseline) * 1024 / args.rows,
            size / 1e6 if task != "parse" else 0))
        if task != "parse":
            os.remove(out_path)
    os.remove(csv_path)


# ------------------------------------------------------------------ --scale (issue 13)
def scale_workload(directory, n, fmt="posfast", seed=5):
    """A journal of `n` payments and a statement of about `n` rows (see the module docstring)."""
    rng = np.random.default_rng(seed)
    path = os.path.join(directory, "scale.pfj")
    j = Journal.create(path, capacity=n + 1000, day_rule=RULE, durability="none", slot_size=192)
    ts = np.sort(START + rng.integers(0, 86_400 * 10**6 - 60 * 10**6, n))
    terminal = rng.integers(1, 41, n).astype(np.uint32)
    amount = rng.integers(100, 50_000, n)
    seq = np.arange(n)
    host = np.char.mod("42000012342025112%011d", seq)
    order = np.char.mod("ORD%09d", seq)
    for lo in range(0, n, 200_000):
        hi = min(n, lo + 200_000)
        j.append_many({"ts": ts[lo:hi], "terminal": terminal[lo:hi], "kind": "sale",
                       "state": "approved", "method": "qr", "amount": amount[lo:hi],
                       "currency": 156, "channel": "wechat", "order_ref": order[lo:hi].tolist(),
                       "host_ref": host[lo:hi].tolist()})
    j.close()
    k = max(1, n // 300)
    keep = np.ones(n, bool)
    keep[rng.choice(n, k, replace=False)] = False                 # missing at host
    idx = np.flatnonzero(keep)
    host_amount = amount.copy()
    host_amount[rng.choice(idx, k, replace=False)] += 1           # amount mismatch
    which = rng.random(len(idx))
    shift = rng.integers(-30, 31, len(idx)) * 10**6
    stmt = os.path.join(directory, "statement.csv")
    local = (ts[idx] + shift + 8 * 3600 * 10**6).astype("datetime64[us]")
    times = np.char.replace(np.datetime_as_string(local, unit="s"), "T", " ")
    hosts = np.where(which < 0.9, host[idx], "")
    orders = np.where(which < 0.98, order[idx], "")
    extra_t = np.char.replace(np.datetime_as_string(
        (START + 3600 * 10**6 + np.arange(k) * 10**6 + 8 * 3600 * 10**6).astype("datetime64[us]"),
        unit="s"), "T", " ")
    fee = host_amount[idx] * 6                                   # thousandths of a fen: 0.6%
    with open(stmt, "w", encoding="utf-8", newline="") as f:
        if fmt == "posfast":
            f.write("terminal,time,rrn,auth_code,amount,currency,type,host_ref,order_ref,fee\n")
            f.write("".join("%d,%s,,,%d,156,sale,%s,%s,%d\n" % r for r in zip(
                terminal[idx].tolist(), times.tolist(), host_amount[idx].tolist(),
                hosts.tolist(), orders.tolist(), ((fee + 500) // 1000).tolist())))
            f.write("".join("99,%s,,,4242,156,sale,49%026d,,25\n" % (t, e)
                            for e, t in enumerate(extra_t.tolist())))
        else:
            f.write("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,"
                    "交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,"
                    "充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,"
                    "费率备注\n")
            yuan = ["%d.%02d" % divmod(a, 100) for a in host_amount[idx].tolist()]
            fee_text = ["%d.%05d" % divmod(f, 100_000) for f in fee.tolist()]
            f.write("".join("`%s,`wx1,`1900000109,`0,`%d,`%s,`%s,`o1,`MICROPAY,`SUCCESS,`CMB,`CNY,`%s,"
                            "`0.00,`0,`0,`0.00,`0.00,`,`,`g,`,`%s,`0.60%%,`%s,`0.00,`\n"
                            % (t, d, h, o, a, fe, a) for t, d, h, o, a, fe in zip(
                                times.tolist(), terminal[idx].tolist(), hosts.tolist(),
                                orders.tolist(), yuan, fee_text)))
            f.write("".join("`%s,`wx1,`1900000109,`0,`99,`49%026d,`,`o1,`MICROPAY,`SUCCESS,`CMB,`CNY,"
                            "`42.42,`0.00,`0,`0,`0.00,`0.00,`,`,`g,`,`0.25452,`0.60%%,`42.42,`0.00,`\n"
                            % (t, e) for e, t in enumerate(extra_t.tolist())))
            total = int(host_amount[idx].sum()) + 4242 * k
            fees = int(fee.sum()) + 25452 * k
            f.write("总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\n")
            f.write("`%d,`%d.%02d,`0.00,`0.00,`%d.%05d,`%d.%02d,`0.00\n" % (
                len(idx) + k, total // 100, total % 100, fees // 100_000, fees % 100_000,
                total // 100, total % 100))
    return path, stmt, len(idx) + k


def scale_child(task, journal_path, stmt, out_path):
    """One --scale measurement in this fresh process: prints 'seconds baseline_kb peak_kb'."""
    j = Journal.open(journal_path, readonly=True)
    baseline = _rss_kb()
    t0, c0 = time.perf_counter(), time.process_time()
    settlement = read_settlement(stmt, utc_offset=RULE)
    t_read = time.perf_counter() - t0
    report = reconcile(j, settlement, day=DAY, check_receipts=False,
                       summary=task == "summary", fee_rates={"wechat": "0.6%"})
    t_match = time.perf_counter() - t0 - t_read
    with open(out_path, "w", encoding="utf-8", newline="") as f:
        report.write(f, "table" if task == "summary" else task)
    total = time.perf_counter() - t0
    cpu = time.process_time() - c0
    peak = _peak_kb()
    print(t_read, t_match, total, baseline, peak, cpu, json.dumps(
        {k: v for k, v in report.counts().items() if v}))


def sql_scale(journal_path, stmt):
    """The same matching in SQLite: host ref, order ref, then terminal + amount in the
    window (nearest, one round); returns (load s, match s, counts)."""
    j = Journal.open(journal_path, readonly=True)
    rows = j.query(day=[DAY, DAY + 1])
    refs = j.refs(rows["seq"])
    j.close()
    s = read_settlement(stmt, utc_offset=RULE)
    con = sqlite3.connect(":memory:")
    t0 = time.perf_counter()
    con.executescript("""
        CREATE TABLE jt (idx INTEGER PRIMARY KEY, terminal INT, ts INT, amount INT, state INT,
          host TEXT, ord TEXT, done INT DEFAULT 0);
        CREATE TABLE hs (line INTEGER PRIMARY KEY, terminal INT, ts INT, amount INT, host TEXT,
          ord TEXT, done INT DEFAULT 0);""")
    con.executemany("INSERT INTO jt (idx, terminal, ts, amount, state, host, ord) VALUES (?,?,?,?,?,?,?)",
                    zip(rows["seq"].tolist(), rows["terminal"].tolist(), rows["ts"].tolist(),
                        rows["amount"].tolist(), rows["state"].tolist(),
                        [r[1].decode() for r in refs], [r[0].decode() for r in refs]))
    con.executemany("INSERT INTO hs (line, terminal, ts, amount, host, ord) VALUES (?,?,?,?,?,?)",
                    zip(s.rows["line"].tolist(), s.rows["terminal"].tolist(), s.rows["ts"].tolist(),
                        s.rows["amount"].tolist(), [h.decode() for h in s.host_ref.tolist()],
                        [o.decode() for o in s.order_ref.tolist()]))
    con.executescript("""
        CREATE INDEX jt_host ON jt (host); CREATE INDEX jt_ord ON jt (ord);
        CREATE INDEX hs_host ON hs (host); CREATE INDEX hs_ord ON hs (ord);
        CREATE INDEX hs_win ON hs (terminal, amount, ts);""")
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    con.executescript(f"""
        CREATE TABLE pairs (j INT, h INT);
        INSERT INTO pairs SELECT j.idx, h.line FROM jt j JOIN hs h ON h.host = j.host WHERE j.host != '';
        UPDATE jt SET done = 1 WHERE idx IN (SELECT j FROM pairs);
        UPDATE hs SET done = 1 WHERE line IN (SELECT h FROM pairs);
        INSERT INTO pairs SELECT j.idx, h.line FROM jt j JOIN hs h ON h.ord = j.ord
          WHERE j.ord != '' AND j.done = 0 AND h.done = 0;
        UPDATE jt SET done = 1 WHERE done = 0 AND idx IN (SELECT j FROM pairs);
        UPDATE hs SET done = 1 WHERE done = 0 AND line IN (SELECT h FROM pairs);
        INSERT INTO pairs SELECT j, h FROM (
          SELECT j.idx AS j, h.line AS h, ROW_NUMBER() OVER (PARTITION BY j.idx
            ORDER BY abs(h.ts - j.ts), h.line) AS rn
          FROM jt j JOIN hs h ON h.done = 0 AND h.terminal = j.terminal AND h.amount = j.amount
            AND h.ts BETWEEN j.ts - {WINDOW} AND j.ts + {WINDOW}
          WHERE j.done = 0) WHERE rn = 1;
        UPDATE jt SET done = 1 WHERE done = 0 AND idx IN (SELECT j FROM pairs);
        UPDATE hs SET done = 1 WHERE done = 0 AND line IN (SELECT h FROM pairs);""")
    q = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
    counts = {"missing_at_host": q("SELECT count(*) FROM jt WHERE done = 0"),
              "missing_in_journal": q("SELECT count(*) FROM hs WHERE done = 0"),
              "amount_mismatch": q("SELECT count(*) FROM pairs p JOIN jt ON jt.idx = p.j "
                                   "JOIN hs ON hs.line = p.h WHERE jt.amount != hs.amount")}
    t_match = time.perf_counter() - t0
    con.close()
    return t_load, t_match, counts


def scale_main(args):
    import subprocess
    directory = tempfile.mkdtemp(prefix="posfast-bench-scale-")
    print("building a %d-payment journal and a %s statement of as many rows..." % (
        args.rows, args.scale_format), flush=True)
    journal_path, stmt, rows = scale_workload(directory, args.rows, args.scale_format)
    print("statement %s: %d rows, %.0f MB" % (os.path.basename(stmt), rows,
                                              os.path.getsize(stmt) / 1e6))
    print("%-36s %9s %9s %9s %9s %11s %11s" % ("task (fresh process each)", "read s", "match s",
                                               "total s", "CPU s", "peak RSS", "minus start"))
    for code in [args.code] + ([args.against] if args.against else []):
        if args.against:
            print("code: %s" % (code or os.path.dirname(HERE)))
        extra = ["--code", code] if code else []
        for task in ("json", "csv", "summary"):
            out_path = os.path.join(directory, "report." + task)
            got = subprocess.run([sys.executable, os.path.abspath(__file__), "--scale-child", task,
                                  journal_path, stmt, out_path] + extra, capture_output=True,
                                 text=True)
            if got.returncode:
                print("%-36s failed: %s" % (task, got.stderr.strip().splitlines()[-1]))
                continue
            fields = got.stdout.split(None, 6)
            t_read, t_match, total = map(float, fields[:3])
            baseline, peak, cpu = int(fields[3]), int(fields[4]), float(fields[5])
            label = {"json": "read + reconcile + JSON report",
                     "csv": "read + reconcile + CSV report",
                     "summary": "read + reconcile --summary"}[task]
            print("%-36s %9.2f %9.2f %9.2f %9.2f %8.0f MB %8.0f MB   (report %.0f MB)" % (
                label, t_read, t_match, total, cpu, peak / 1024, (peak - baseline) / 1024,
                os.path.getsize(out_path) / 1e6))
            if task == "json":
                print("  findings: %s" % fields[6].strip())
            os.remove(out_path)
    if args.no_sql:
        shutil.rmtree(directory)
        return
    t_load, t_sql, counts = sql_scale(journal_path, stmt)
    print("%-36s %9.2f %9.2f %9.2f   (SQLite :memory:, the load is both sides into indexed "
          "tables)" % ("same matching in SQL", t_load, t_sql, t_load + t_sql))
    print("  SQL findings: %s" % json.dumps(counts))
    shutil.rmtree(directory)


# ------------------------------------------------------------------ main
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--memory-child"]:
        return memory_child(*argv[1:6])
    if argv[:1] == ["--scale-child"]:
        return scale_child(*argv[1:5])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory", action="store_true",
                        help="measure peak RSS of parsing and reporting a large settlement file")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--module", help="another copy of posfast/reconcile.py to measure")
    parser.add_argument("--scale", action="store_true",
                        help="issue 13: --rows statement rows against as many journal payments")
    parser.add_argument("--scale-format", choices=("posfast", "wechat"), default="posfast")
    parser.add_argument("--code", help="the tree whose posfast is measured (default: this one)")
    parser.add_argument("--against", help="--scale: measure another tree too, in the same run "
                        "(e.g. a git worktree of an older commit, its posfast/_core built)")
    parser.add_argument("--no-sql", action="store_true", help="--scale: leave out the SQL run")
    args = parser.parse_args(argv)
    if args.memory:
        return memory_main(args)
    if args.scale:
        return scale_main(args)
    n = args.records
    directory = tempfile.mkdtemp(prefix="posfast-bench-reconcile-")
    print("posfast reconcile benchmark: %d journal records vs ~%d host rows per workload, 2 workloads"
          % (n, n))
    print("(building the journals, the settlement file and the back office...)", flush=True)
    j, path, host_rows = settlement_workload(directory, n)
    t_parse, settlement = best(lambda: read_settlement(path, RULE), args.repeat)
    t_ours, report = best(lambda: reconcile(j, settlement, day=DAY, check_receipts=False), args.repeat)
    t_sql_load, t_sql, sql_counts = sql_settlement(j, settlement.rows, args.repeat)
    ours = report.counts()
    ours["matched"] = report.matched
    j.close()

    jb, back = back_office_workload(directory, n)
    t_bo, report_bo = best(lambda: reconcile(jb, "sqlite:///" + back, day=DAY), args.repeat)
    t_bo_load, t_bo_sql, bo_sql_counts = sql_back_office(jb, back, args.repeat)
    ours_bo = report_bo.counts()
    ours_bo["matched"] = report_bo.matched
    bo_rows = SqliteTarget(back).count(jb.journal_id)
    jb_records = jb.head_seq
    jb.close()

    print()
    print("%-46s %14s %14s %8s" % ("", "posfast/numpy", "SQLite SQL", "ratio"))
    print("%-46s %11.0f ms %11.0f ms" % ("settlement: read the CSV (%d rows)" % host_rows,
                                         t_parse * 1000, t_sql_load * 1000))
    print("%-46s %11.0f ms %11.0f ms %7.1fx" % ("settlement: match + report (%d records)" % n,
                                                t_ours * 1000, t_sql * 1000, t_sql / t_ours))
    print("%-46s %11.0f ms %11.0f ms %7.1fx" % ("settlement: total", (t_parse + t_ours) * 1000,
                                                (t_sql_load + t_sql) * 1000,
                                                (t_sql_load + t_sql) / (t_parse + t_ours)))
    print("%-46s %14s %11.0f ms" % ("back office: load the journal's day into SQLite", "-",
                                    t_bo_load * 1000))
    print("%-46s %11.0f ms %11.0f ms %7.1fx" % ("back office: read + match + prints (%d/%d)"
                                                % (jb_records, bo_rows), t_bo * 1000, t_bo_sql * 1000,
                                                t_bo_sql / t_bo))
    print()
    print("(SQLite columns: the load puts both sides in indexed tables; the match is the same three")
    print(" passes / comparisons in SQL.  posfast: best of %d, the CSV parse timed apart.)" % args.repeat)
    print()
    keys = [k for k in ours if ours[k] or sql_counts.get(k)]
    print("settlement findings   posfast: %s" % ", ".join("%s %d" % (k, ours[k]) for k in keys))
    print("                      SQLite:  %s" % ", ".join("%s %s" % (k, sql_counts.get(k, "-")) for k in keys))
    keys = [k for k in ours_bo if ours_bo[k] or bo_sql_counts.get(k)]
    print("back-office findings  posfast: %s" % ", ".join("%s %d" % (k, ours_bo[k]) for k in keys))
    print("                      SQLite:  %s" % ", ".join("%s %s" % (k, bo_sql_counts.get(k, "-"))
                                                         for k in keys))


if __name__ == "__main__":
    main()
