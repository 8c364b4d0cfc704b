"""Converting a back office of posfast 0.x (text fields as BLOB / bytea) to this version's
schema: the time the first writable open takes.  Prints one table.

    python bench/bench_migrate.py                    # 200,000 records, ~1 min on 2 cores
    python bench/bench_migrate.py --records 50000 --no-postgres

An old back office is built from ``tests/data/backoffice_0x_*.sql`` (the 0.x schema) with the
rows as 0.x inserted them, then opened with ``SqliteTarget`` / ``PostgresTarget``.  The floor
row is plain SQLite copying the same table with its primary key and indexes and no conversion:
what any rebuild of that table costs on this machine.
"""
import argparse
import os
import sqlite3
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]

from posfast.sync import PostgresTarget, SqliteTarget  # noqa: E402
from posfast.sync.backoffice import RECORDS_INDEXES, schema_statements  # noqa: E402

from _sync_helpers import HandJournal  # noqa: E402

DATA = os.path.join(REPO, "tests", "data")


def old_rows(hj):
    rows = hj.rows
    cols = []
    for name in rows.dtype.names:
        c = rows[name]
        if c.dtype.kind == "u" and c.dtype.itemsize == 8:
            c = c.astype("<u8").view("<i8")
        cols.append(c.tolist())
    n = len(rows)
    return cols, n


def build_sqlite(path, hj):
    cols, n = old_rows(hj)
    con = sqlite3.connect(path)
    con.executescript(open(os.path.join(DATA, "backoffice_0x_sqlite.sql")).read())
    con.executemany("INSERT INTO records VALUES (%s)" % ",".join("?" * (len(cols) + 5)),
                    zip([str(hj.journal_id)] * n, *cols, hj.payloads, hj.links, [""] * n, [""] * n))
    con.execute("INSERT INTO journals VALUES (?, 1, ?, ?, ?, 1, 2, 480, 240, '')",
                (str(hj.journal_id), n, hj.links[-1], n))
    con.commit()
    con.close()


def floor_sqlite(path):
    """The same table copied into one with the new schema's key and indexes, nothing converted."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("PRAGMA cache_size = -65536")
    create = next(st for st in schema_statements("sqlite") if "TABLE IF NOT EXISTS records " in st)
    con.execute("BEGIN IMMEDIATE")
    t0 = time.perf_counter()
    con.execute(create.replace("TABLE IF NOT EXISTS records ", "TABLE copy_of_records ", 1))
    names = [r[1] for r in con.execute("PRAGMA table_info(records)")]
    cols = ", ".join(f'"{c}"' for c in names)
    con.execute(f"INSERT INTO copy_of_records ({cols}) SELECT {cols} FROM records ORDER BY journal_id, seq")
    for stmt in RECORDS_INDEXES:
        con.execute(stmt.replace("ON records", "ON copy_of_records").replace("EXISTS records_", "EXISTS copy_"))
    con.execute("COMMIT")
    dt = time.perf_counter() - t0
    con.close()
    return dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    hj = HandJournal(args.records, seed=1)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        floor_db = os.path.join(tmp, "floor.db")
        build_sqlite(floor_db, hj)
        results.append(("floor: plain SQLite copy with key + indexes", floor_sqlite(floor_db)))
        db = os.path.join(tmp, "old.db")
        build_sqlite(db, hj)
        t0 = time.perf_counter()
        SqliteTarget(db).close()
        results.append(("SqliteTarget: 0.x back office converted", time.perf_counter() - t0))
    if not args.no_postgres:
        import _pg
        base = _pg.base_dsn()
        if base is None:
            print("PostgreSQL skipped:", _pg.SKIP_REASON)
        else:
            import psycopg
            dsn = _pg.fresh_database(base)
            cols, n = old_rows(hj)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(open(os.path.join(DATA, "backoffice_0x_postgres.sql")).read())
                with conn.cursor() as cur:
                    with cur.copy("COPY records FROM STDIN") as cp:
                        for r in zip([hj.journal_id] * n, *cols, hj.payloads, hj.links, [""] * n, [""] * n):
                            cp.write_row(r)
                conn.execute("INSERT INTO journals VALUES (%s, 1, %s, %s, %s, 1, 2, 480, 240, '')",
                             (hj.journal_id, n, hj.links[-1], n))
            t0 = time.perf_counter()
            PostgresTarget(dsn).close()
            results.append(("PostgresTarget: 0.x back office converted", time.perf_counter() - t0))
    print(f"{args.records:,} records (2 cores; other work on the machine shows in these numbers)")
    print(f"{'what':<46} {'seconds':>8} {'records/s':>10}")
    for what, dt in results:
        print(f"{what:<46} {dt:8.1f} {args.records / dt:10,.0f}")


if __name__ == "__main__":
    main()
