"""The PostgreSQL back office: :class:`PostgresTarget` (psycopg 3, imported only when used)."""
from __future__ import annotations

import logging
import re
import threading
from contextlib import contextmanager
from typing import Callable, Optional

from ..records import now_us
from .backoffice import (RECORDS_INDEXES, TEXT_COLUMNS, BackOffice, added_columns, batch_from_db, db_rows,
                         make_views, readable, schema_statements, seq_or_none, text_raw)
from .protocol import (DEFAULT_DAY_RULE, ECHO_LIMIT, Ack, BackOfficeMissing, JournalState, RecordBatch, SyncRefused,
                       SyncUnavailable, as_uuid, clip, plan_batch, safe_dsn)

__all__ = ["PostgresTarget", "partition_sql"]

_INDEX_DDL = re.compile(r"\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+IF\s+NOT\s+EXISTS\s+(\w+)\s", re.I)


#: Session settings a back-office connection gets unless the DSN, ``PGOPTIONS`` or the
#: role/database already set them (a value other than 0): a push waits at most
#: ``lock_timeout`` for the journal's row (then 503: the terminal retries), and a session
#: left inside a transaction by a frozen server (a hung machine, a network partition)
#: is ended by the database after ``idle_in_transaction_session_timeout``, which frees
#: the journal for the other servers.
SESSION_DEFAULTS = (("lock_timeout", "10s"), ("idle_in_transaction_session_timeout", "60s"))
#: libpq connection parameters added unless the DSN gives them: TCP keepalives, so a
#: connection to a database machine that vanished is noticed in about a minute.
CONNECT_DEFAULTS = {"keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10",
                    "keepalives_count": "3"}


def _connect_options(dsn: str, application_name: Optional[str]) -> dict:
    """Keyword parameters for psycopg.connect: the defaults the DSN does not set itself."""
    from psycopg.conninfo import conninfo_to_dict
    given = conninfo_to_dict(dsn)
    extra = {k: v for k, v in CONNECT_DEFAULTS.items() if k not in given}
    if application_name and "application_name" not in given:
        extra["fallback_application_name"] = application_name   # PGAPPNAME still wins
    return extra


def _session_defaults(conn) -> None:
    for name, value in SESSION_DEFAULTS:
        if conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0] in ("0", ""):
            conn.execute(f"SET {name} = '{value}'")


def _month_start(year: int, month: int) -> int:
    import datetime as dt
    return (dt.date(year, month, 1) - dt.date(1970, 1, 1)).days


def partition_sql(first_month: str, months: int, *, create_table: bool = True) -> str:
    """SQL that makes the ``records`` table of a new PostgreSQL back office partitioned by
    business day, one range partition per month (``records_YYYY_MM``), from `first_month`
    (``"2026-01"``) for `months` months, and a DEFAULT partition for any other day.  Run it
    on the empty database before the first ``posfast serve`` (which then creates the other
    tables and the indexes, on every partition).  ``create_table=False``: only the month
    partitions (add the coming months ahead of time, e.g. monthly from cron; a month
    must be added before a record of it arrives, else its records land in the default
    partition and that month can no longer be added).

    >>> print(partition_sql("2026-01", 2, create_table=False))
    CREATE TABLE IF NOT EXISTS records_2026_01 PARTITION OF records FOR VALUES FROM (20454) TO (20485);
    CREATE TABLE IF NOT EXISTS records_2026_02 PARTITION OF records FOR VALUES FROM (20485) TO (20513);
    """
    try:
        year, month = (int(x) for x in first_month.split("-"))
        if not 1 <= month <= 12 or not 1970 <= year <= 9999 or months < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"first_month {first_month!r}: give YYYY-MM, and months >= 1") from None
    out = []
    if create_table:
        create = next(stmt for stmt in schema_statements("postgres") if "TABLE IF NOT EXISTS records (" in stmt)
        create = create.replace("PRIMARY KEY (journal_id, seq))", "PRIMARY KEY (journal_id, seq, day))\n"
                                "PARTITION BY RANGE (day)")
        out.append(create + ";")
    for _ in range(months):
        nxt = (year + month // 12, month % 12 + 1)
        out.append(f"CREATE TABLE IF NOT EXISTS records_{year:04d}_{month:02d} PARTITION OF records FOR VALUES "
                   f"FROM ({_month_start(year, month)}) TO ({_month_start(*nxt)});")
        year, month = nxt
    if create_table:
        out.append("CREATE TABLE IF NOT EXISTS records_default PARTITION OF records DEFAULT;")
    return "\n".join(out)


log = logging.getLogger("posfast.sync")


class _PgPool:
    """A few psycopg connections shared by threads (the server's workers)."""

    def __init__(self, dsn: str, size: int, setup: Callable, options: Optional[dict] = None):
        self._dsn = dsn
        self._options = options or {}
        self._setup = setup
        self._idle: list = []
        self._mutex = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)

    @contextmanager
    def connection(self):
        import psycopg
        self._slots.acquire()
        conn = None
        try:
            with self._mutex:
                conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed:
                conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=10, **self._options)
                _session_defaults(conn)
                self._setup(conn)
            yield conn
        except BaseException:
            if conn is not None and (conn.closed or conn.info.transaction_status != 0):
                conn.close()
            raise
        finally:
            if conn is not None and not conn.closed:
                with self._mutex:
                    self._idle.append(conn)
            self._slots.release()

    def close(self):
        with self._mutex:
            for conn in self._idle:
                conn.close()
            self._idle.clear()


class PostgresTarget(BackOffice):
    """Back office in PostgreSQL (psycopg 3, ``pip install 'posfast[postgres]'``).

    One transaction per batch: the batch is COPYed into a temporary table, the journal's
    row is locked (``SELECT ... FOR UPDATE``) while continuity is checked against what is
    held (inside the database), and the new records are inserted with ``ON CONFLICT DO
    NOTHING``.  Safe with several server processes on one database (see :meth:`push`).
    Thread-safe (a small connection pool).

    >>> bo = PostgresTarget("postgresql://pos@127.0.0.1/backoffice")   # doctest: +SKIP
    """

    _mark = "%s"

    @staticmethod
    def _journal_param(jid):
        return jid

    def __init__(self, dsn: str, *, pool_size: int = 4, create: bool = True, readonly: bool = False,
                 application_name: Optional[str] = "posfast"):
        # ``create`` is accepted for symmetry with SqliteTarget: the database itself must
        # exist (a mistyped DSN fails to connect); posfast creates its tables in it.
        import importlib.util
        if importlib.util.find_spec("psycopg") is None:
            raise ImportError("PostgresTarget needs psycopg 3: pip install 'posfast[postgres]' "
                              "(psycopg[binary])")
        self.dsn = dsn
        self.readonly = bool(readonly)
        # application_name: what pg_stat_activity shows ("posfast serve PID" for a server process)
        self._connect_options = _connect_options(dsn, application_name)
        if self.readonly:   # read an existing back office: no tables created, no temporary table
            self._pool = _PgPool(dsn, pool_size, lambda conn: None, self._connect_options)
            try:
                columns = self._run(lambda conn: {r[0] for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = 'records' "
                    "AND table_schema = current_schema()").fetchall()})
            except SyncUnavailable:
                columns = set()
            if columns and "text_raw" not in columns:     # a back office of posfast 0.x, read as it is
                self._raw_expr = "NULL"
            return
        self._pool = _PgPool(dsn, pool_size, self._setup_connection, self._connect_options)
        self._copy_sql = (f"COPY _pf_incoming (journal_id, {self._column_list()}, payload, link, order_ref, host_ref, "
                          "text_raw, local_time) FROM STDIN")
        # (no conflict target: a records table partitioned by day has its key as (journal_id, seq, day))
        self._insert_sql = ("INSERT INTO records SELECT * FROM _pf_incoming WHERE seq >= %s ORDER BY seq "
                            "ON CONFLICT DO NOTHING")
        self._create_schema()

    def __repr__(self):
        return f"PostgresTarget({self._safe_dsn()!r})"

    def _safe_dsn(self) -> str:
        return safe_dsn(self.dsn)

    def _create_schema(self):
        import psycopg
        try:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10, **self._connect_options) as conn:
                with conn.transaction():
                    # Concurrent first starts (the server's workers) must not race on CREATE TABLE.
                    conn.execute("SELECT pg_advisory_xact_lock(7402381)")
                    for stmt in schema_statements("postgres"):
                        index = _INDEX_DDL.match(stmt)
                        # CREATE INDEX IF NOT EXISTS takes a SHARE lock on the table before it
                        # looks: a server starting beside busy ones would queue every push behind
                        # the open ones.  An index that exists is left alone without a lock.
                        if index and conn.execute("SELECT to_regclass(%s)", (index.group(1),)).fetchone()[0]:
                            continue
                        conn.execute(stmt)
                    # (only what is missing: ALTER locks the table even when nothing is added)
                    for stmt in added_columns("postgres", lambda table: {r[0] for r in conn.execute(
                            "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                            "AND table_schema = current_schema()", (table,)).fetchall()}):
                        conn.execute(stmt)
                    self._migrate_text(conn)
                    make_views(conn, "postgres")
        except psycopg.Error as exc:
            raise SyncUnavailable(f"back office {self._safe_dsn()}: {exc}".strip()) from exc

    def _migrate_text(self, conn) -> None:
        """A back office of posfast 0.x held the row's text fields as bytea: make them text
        (exact bytes kept in text_raw where text cannot hold them: not UTF-8, or a NUL) and
        fill each record's local time, in the open transaction.  Rewrites the table, once."""
        types = dict(conn.execute("SELECT column_name, data_type FROM information_schema.columns WHERE "
                                  "table_name = 'records' AND table_schema = current_schema()").fetchall())
        if types.get("rrn") == "text" and "text_raw" in types and "local_time" in types:
            return
        log.warning("back office %s: converting the records table to text columns and local times (once; "
                    "a large back office takes a while)", self._safe_dsn())
        if "text_raw" not in types:
            conn.execute("ALTER TABLE records ADD COLUMN text_raw bytea")
        if "local_time" not in types:
            conn.execute("ALTER TABLE records ADD COLUMN local_time text NOT NULL DEFAULT ''")
        blobs = [c for c in TEXT_COLUMNS if types.get(c) == "bytea"]
        if blobs:
            # candidates: a byte >= 0x80 or a NUL (plain ASCII converts as it is); checked here
            cols = ", ".join(f'"{c}"' for c in TEXT_COLUMNS)
            suspect = " OR ".join(f"encode(\"{c}\", 'hex') !~ '^([0-7][0-9a-f])*$' OR "
                                  f"position('\\x00'::bytea IN \"{c}\") > 0" for c in blobs)
            for row in conn.execute(f"SELECT journal_id, seq, {cols} FROM records WHERE {suspect}").fetchall():
                values = [b"" if v is None else v.encode("utf-8") if isinstance(v, str) else bytes(v)
                          for v in row[2:]]
                raw = text_raw(values)
                if raw is None:             # UTF-8 text: converts as it is
                    continue
                sets = ", ".join(f'"{c}" = %s' for c in blobs)
                conn.execute(f"UPDATE records SET text_raw = %s, {sets} WHERE journal_id = %s AND seq = %s",
                             [raw] + [readable(values[TEXT_COLUMNS.index(c)]).encode("utf-8")
                                      for c in blobs] + [row[0], row[1]])
            conn.execute("ALTER TABLE records " + ", ".join(
                f'ALTER COLUMN "{c}" TYPE text USING convert_from("{c}", \'UTF8\')' for c in blobs))
        conn.execute(
            "UPDATE records r SET local_time = to_char(CASE WHEN coalesce(j.day_tz, '') <> '' "
            "THEN to_timestamp(floor(r.ts / 1000000.0)) AT TIME ZONE j.day_tz "
            "ELSE to_timestamp(floor(r.ts / 1000000.0)) AT TIME ZONE 'UTC' "
            "+ make_interval(mins => coalesce(j.day_offset_min, 0)::int) END, 'YYYY-MM-DD HH24:MI:SS') "
            "FROM journals j WHERE j.journal_id = r.journal_id AND r.local_time = ''")
        for stmt in RECORDS_INDEXES:
            conn.execute(stmt)

    @staticmethod
    def _setup_connection(conn):
        conn.execute("CREATE TEMP TABLE _pf_incoming (LIKE records) ON COMMIT DELETE ROWS")

    def _run(self, fn):
        import psycopg
        try:
            with self._pool.connection() as conn:
                return fn(conn)
        except psycopg.Error as exc:   # connection lost, deadlock, disk full...: nothing was committed
            raise SyncUnavailable(f"back office {self._safe_dsn()}: {type(exc).__name__}: {exc}".strip()) from exc

    def close(self) -> None:
        self._pool.close()

    def _registry_read(self, sql: str, params: list) -> list:
        import psycopg
        try:
            with self._pool.connection() as conn:
                return conn.execute(sql, params).fetchall()
        except psycopg.errors.UndefinedTable:
            return []                  # a back office of an older posfast, opened read-only
        except psycopg.Error as exc:
            raise SyncUnavailable(f"back office {self._safe_dsn()}: {type(exc).__name__}: {exc}".strip()) from exc

    def _registry_write(self, sql: str, params: list) -> None:
        self._run(lambda conn: conn.execute(sql, params))

    def _select_day(self, sql: str, params: list, jid_param) -> tuple:
        import psycopg

        def fetch(conn):
            fetched = conn.execute(sql, params).fetchall()
            held = conn.execute("SELECT count(*) FROM records WHERE journal_id = %s", (jid_param,)).fetchone()[0]
            return fetched, held
        try:
            with self._pool.connection() as conn:
                fetched, held = fetch(conn)
        except psycopg.errors.UndefinedTable as exc:
            raise BackOfficeMissing(f"{self._safe_dsn()} is not a posfast back office (no records table: "
                                    f"{exc})".strip()) from None
        except psycopg.Error as exc:
            raise SyncUnavailable(f"back office {self._safe_dsn()}: {type(exc).__name__}: {exc}".strip()) from exc
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in fetched], held

    @staticmethod
    def _state_in(conn, jid, lock=False) -> Optional[JournalState]:
        row = conn.execute("SELECT anchor_seq, high_seq, last_link, records, day_offset_min, day_start_min, day_tz "
                           "FROM journals WHERE journal_id = %s" + (" FOR UPDATE" if lock else ""),
                           (jid,)).fetchone()
        return None if row is None else JournalState(jid, row[0], row[1], bytes(row[2]), row[3],
                                                     None if row[4] is None else (row[4], row[5], row[6]))

    def _recent_refusals(self, journal_id, since_us: int) -> int:
        jid = None if journal_id is None else str(journal_id)
        return self._run(lambda conn: conn.execute(
            "SELECT count(*) FROM sync_refusals WHERE journal_id IS NOT DISTINCT FROM %s AND at_us >= %s",
            (jid, since_us)).fetchone()[0])

    def _read_in(self, conn, jid, first, last) -> RecordBatch:
        fetched = conn.execute(f"SELECT {self._column_list()}, payload, link, order_ref, host_ref, {self._raw_expr} "
                               "FROM records WHERE journal_id = %s "
                               "AND seq BETWEEN %s AND %s ORDER BY seq", (jid, first, last)).fetchall()
        return batch_from_db(jid, fetched)

    def _held_like_incoming(self, conn, jid, inc: RecordBatch, first: int, last: int) -> RecordBatch:
        """What the back office holds of ``first..last`` (for plan_batch), compared in the
        database against the batch already in ``_pf_incoming``: only a count and the first
        differing seq come back, never the held rows themselves.  Rows equal to the
        incoming ones are returned as the incoming ones (they are the same bytes); the
        first differing row is read as held, so plan_batch names it as a fork."""
        held, differs = conn.execute(
            "SELECT count(r.seq), min(CASE WHEN ROW(i.*) IS DISTINCT FROM ROW(r.*) THEN r.seq END) "
            "FROM _pf_incoming i JOIN records r ON r.journal_id = i.journal_id AND r.seq = i.seq "
            "WHERE i.seq BETWEEN %s AND %s", (first, last)).fetchone()
        n = last - first + 1
        base = first - int(inc.rows["seq"][0])
        if held != n:                       # plan_batch reports the missing rows
            return self._read_in(conn, jid, first, last)
        rows = inc.rows[base:base + n].copy()
        payloads, links = list(inc.payloads[base:base + n]), list(inc.links[base:base + n])
        exts = list(inc.exts[base:base + n])
        if differs is not None:
            k = int(differs) - first
            one = self._read_in(conn, jid, int(differs), int(differs))
            rows[k], payloads[k], links[k], exts[k] = one.rows[0], one.payloads[0], one.links[0], one.exts[0]
        return RecordBatch(jid, rows, payloads, links, None, exts)

    def push(self, batch, *, anchor: bool = False, day_rule=None) -> Ack:
        """Store a batch in one transaction; return the ack or raise SyncRefused (see SqliteTarget.push).

        Several server processes may push the same journal at once.  The batch is COPYed
        into the session's temporary table first, before any lock is taken; only then is
        the journal's row locked (``SELECT ... FOR UPDATE``, waited for at most
        ``lock_timeout``), the batch checked against what is held (compared inside the
        database) and the new rows inserted.  So while the lock is held the server sends
        and receives only short statements: a server frozen in there leaves its session
        idle in a transaction, which the database ends after
        ``idle_in_transaction_session_timeout`` (:data:`SESSION_DEFAULTS`)."""
        inc = self._incoming(batch, day_rule)
        jid = inc.journal_id
        first_seq, last_seq = int(inc.rows["seq"][0]), int(inc.rows["seq"][-1])

        def copy_in(cur, rule):
            with cur.copy(self._copy_sql) as copy:
                for row in db_rows(jid, inc, 0, rule):
                    copy.write_row(row)

        def work(conn):
            with conn.transaction():
                # the rule local_time is computed by: the batch's, else the one the journal's copy
                # is anchored with (read without the lock: it is set once, at anchoring)
                held = None if inc.day_rule else self._state_in(conn, jid)
                rule = inc.day_rule or (held.day_rule if held is not None else None) or DEFAULT_DAY_RULE
                with conn.cursor() as cur:
                    copy_in(cur, rule)
                now = now_us()
                conn.execute("INSERT INTO journals (journal_id, anchor_seq, high_seq, last_link, records, "
                             "first_synced_us, last_synced_us) VALUES (%s, 0, 0, '', 0, %s, %s) "
                             "ON CONFLICT (journal_id) DO NOTHING", (jid, now, now))
                state = self._state_in(conn, jid, lock=True)
                plan = plan_batch(inc, state, lambda a, b: self._held_like_incoming(conn, jid, inc, a, b),
                                  anchor=anchor)
                stored = len(inc.rows) - plan.new_from
                conn.execute(*self._status_statement(jid, inc.status, ok_us=now))
                if not stored:
                    return Ack(jid, state.high_seq, 0, plan.duplicates, first_seq, last_seq, inc.links[-1])
                with conn.cursor() as cur:
                    if tuple(plan.day_rule) != tuple(rule):    # (a rule anchored meanwhile: copy again)
                        cur.execute("DELETE FROM _pf_incoming")
                        copy_in(cur, plan.day_rule)
                    cur.execute(self._insert_sql, (first_seq + plan.new_from,))
                    if cur.rowcount != stored:
                        raise SyncUnavailable(f"journal {jid}: expected to store {stored} records, stored "
                                              f"{cur.rowcount}; back office inconsistent")
                high = int(inc.rows["seq"][-1])
                conn.execute("UPDATE journals SET high_seq = %s, last_link = %s, records = records + %s, "
                             f"format_version = {int(inc.format_version)}, "
                             "last_synced_us = %s, anchor_seq = CASE WHEN anchor_seq = 0 THEN %s ELSE anchor_seq "
                             "END, day_tz = CASE WHEN day_offset_min IS NULL THEN %s ELSE day_tz END, "
                             "day_offset_min = coalesce(day_offset_min, %s), "
                             "day_start_min = coalesce(day_start_min, %s) WHERE journal_id = %s",
                             (high, inc.links[-1], stored, now, plan.anchor_seq, plan.day_rule[2],
                              plan.day_rule[0], plan.day_rule[1], jid))
                closed = self._closed_day(inc, plan.new_from)
                if closed is not None:
                    conn.execute("UPDATE journals SET last_day_closed = greatest(last_day_closed, %s) "
                                 "WHERE journal_id = %s", (closed, jid))
                return Ack(jid, high, stored, plan.duplicates, first_seq, last_seq, inc.links[-1])

        try:
            ack = self._run(work)
            self._stored_log(ack)
            return ack
        except SyncRefused as exc:
            self._refused(exc, inc.status)
            raise

    def _record_refusal(self, exc: SyncRefused) -> None:
        self._run(lambda conn: conn.execute(
            "INSERT INTO sync_refusals (at_us, journal_id, reason, first_seq, last_seq, message) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (now_us(), None if exc.journal_id is None else str(exc.journal_id), exc.reason,
             seq_or_none(exc.first_seq), seq_or_none(exc.last_seq), clip(exc.detail, 2 * ECHO_LIMIT))))

    def state(self, journal_id) -> Optional[JournalState]:
        """What this back office holds of a journal (None if nothing)."""
        jid = as_uuid(journal_id)
        st = self._run(lambda conn: self._state_in(conn, jid))
        return None if st is None or st.high_seq == 0 else st

    def journals(self) -> list:
        rows = self._run(lambda conn: conn.execute(
            "SELECT journal_id, anchor_seq, high_seq, last_link, records, day_offset_min, day_start_min, day_tz "
            "FROM journals WHERE high_seq > 0 ORDER BY journal_id").fetchall())
        return [JournalState(r[0], r[1], r[2], bytes(r[3]), r[4], None if r[5] is None else (r[5], r[6], r[7]))
                for r in rows]

    def read_range(self, journal_id, first_seq: int = 1, last_seq: Optional[int] = None) -> RecordBatch:
        """Held records of a journal in ``first_seq..last_seq`` (default: up to the high-water mark)."""
        jid = as_uuid(journal_id)
        last = (1 << 63) - 1 if last_seq is None else last_seq
        return self._run(lambda conn: self._read_in(conn, jid, first_seq, last))

    def count(self, journal_id=None) -> int:
        if journal_id is None:
            return self._run(lambda conn: conn.execute("SELECT count(*) FROM records").fetchone()[0])
        jid = as_uuid(journal_id)
        return self._run(lambda conn: conn.execute("SELECT count(*) FROM records WHERE journal_id = %s",
                                                   (jid,)).fetchone()[0])

    def refusals(self) -> list:
        def fetch(conn):
            cur = conn.execute("SELECT at_us, journal_id, reason, first_seq, last_seq, message "
                               "FROM sync_refusals ORDER BY id")
            names = [d.name for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]
        return self._run(fetch)
