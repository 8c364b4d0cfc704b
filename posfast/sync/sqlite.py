"""The embedded back office: :class:`SqliteTarget`, one SQLite file."""
from __future__ import annotations

import os
import sqlite3
import threading
import urllib.parse
import logging
import uuid
from typing import Optional

import numpy as np

from ..records import RECORD_DTYPE, now_us
from .backoffice import (RECORDS_INDEXES, TEXT_COLUMNS, BackOffice, added_columns, batch_from_db, db_rows,
                         local_times, readable, schema_statements, seq_or_none, text_raw, view_statements,
                         views_version)
from .protocol import (ECHO_LIMIT, Ack, BackOfficeFull, BackOfficeMissing, JournalState, RecordBatch,
                       SyncConfigError, SyncRefused, SyncUnavailable, as_uuid, clip, plan_batch)

__all__ = ["SqliteTarget"]

log = logging.getLogger("posfast.sync")


def _is_full(exc: BaseException) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == 13 or "disk is full" in str(exc) or "No space" in str(exc)


class SqliteTarget(BackOffice):
    """The embedded back office: one SQLite file (WAL), one transaction per batch.

    Thread-safe; several processes may share the file (writers queue on SQLite's lock).

    >>> bo = SqliteTarget("/tmp/back.db")                 # doctest: +SKIP
    >>> Syncer(journal, bo).run_once().watermark          # doctest: +SKIP
    1200
    """

    def __init__(self, path, *, synchronous: str = "FULL", timeout: float = 30.0, create: bool = False,
                 readonly: bool = False):
        self.path = str(path)
        self._lock = threading.RLock()
        full = os.path.abspath(self.path)
        where = full if full == self.path else f"{full} (from {self.path!r}, relative to the current directory)"
        directory = os.path.dirname(full)
        if readonly:
            self._open_readonly(full, where, timeout)
            return
        if not os.path.exists(full):
            if not os.path.isdir(directory):
                raise BackOfficeMissing(f"no back office at {where}: directory {directory} does not exist; "
                                        "check the path (sqlite:///rel.db is relative, sqlite:////abs.db absolute)")
            if not create:
                raise BackOfficeMissing(
                    f"no back office at {where}; check the path (sqlite:///rel.db is relative to the current "
                    "directory, sqlite:////abs/back.db is absolute) or create a new one with --create "
                    "(SqliteTarget(path, create=True))")
            if not os.access(directory, os.W_OK | os.X_OK):
                raise SyncConfigError(f"cannot create back office {full}: directory {directory} is not writable")
        elif not os.access(full, os.R_OK | os.W_OK) or not os.access(directory, os.W_OK | os.X_OK):
            raise SyncConfigError(f"back office {full} is read-only here (the file or its directory {directory} "
                                  "is not writable, and SQLite needs both); fix the permissions")
        try:
            self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                                         check_same_thread=False)
            if not create:
                tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if "journals" not in tables or "records" not in tables:
                    self._conn.close()
                    raise BackOfficeMissing(f"{where} is not a posfast back office (no journals/records tables); "
                                            "check the path, or pass --create to make it one")
            self._conn.execute("PRAGMA journal_mode=WAL")
            # The terminal forgets what we acknowledge: an ack must survive a power cut here.
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
            with self._lock:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in schema_statements("sqlite"):
                        self._conn.execute(stmt)
                    for stmt in added_columns("sqlite", lambda table: {
                            r[1] for r in self._conn.execute(f"PRAGMA table_info({table})")}):
                        self._conn.execute(stmt)
                    self._migrate_text()
                    self._make_views()
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            if _is_full(exc):
                raise BackOfficeFull(f"cannot open back office {full}: the disk is full; free space") from exc
            raise SyncConfigError(f"cannot open back office {full}: {exc}") from exc
        names = RECORD_DTYPE.names
        self._insert_sql = (f"INSERT INTO records (journal_id, {self._column_list()}, payload, link, order_ref, host_ref, "
                            f"text_raw, local_time) VALUES ({', '.join('?' * (len(names) + 7))}) "
                            "ON CONFLICT DO NOTHING")

    def _migrate_text(self) -> None:
        """A back office of posfast 0.x held the row's text fields as BLOB: rebuild ``records``
        with them as TEXT (exact bytes kept in text_raw where TEXT cannot hold them) and each
        record's local time, in the open transaction.  Minutes for millions of records, once."""
        conn = self._conn
        info = {r[1]: (r[2] or "").upper() for r in conn.execute("PRAGMA table_info(records)")}
        if info.get("rrn") == "TEXT" and "text_raw" in info and "local_time" in info:
            return
        log.warning("back office %s: converting the records table to TEXT columns and local times "
                    "(once; a large back office takes a while)", self.path)
        conn.create_function("pf_text", 1, readable, deterministic=True)
        conn.create_function("pf_raw", len(TEXT_COLUMNS), lambda *v: text_raw(
            [b"" if x is None else x.encode("utf-8") if isinstance(x, str) else bytes(x) for x in v]),
            deterministic=True)
        conn.create_function("pf_local", 4, lambda ts, off, start, zone: local_times(
            np.array([ts], np.int64), (off or 0, start or 0, zone or ""))[0], deterministic=True)
        conn.execute("DROP TABLE IF EXISTS records__new")
        create = next(st for st in schema_statements("sqlite") if "TABLE IF NOT EXISTS records " in st)
        conn.execute(create.replace("TABLE IF NOT EXISTS records ", "TABLE records__new ", 1))
        names = list(RECORD_DTYPE.names or ())
        select = ", ".join(f'pf_text(r."{n}")' if n in TEXT_COLUMNS else f'r."{n}"' for n in names)
        raw_args = ", ".join(f'r."{n}"' for n in TEXT_COLUMNS)
        conn.execute(
            f"INSERT INTO records__new (journal_id, {self._column_list()}, payload, link, order_ref, host_ref, "
            f"text_raw, local_time) SELECT r.journal_id, {select}, r.payload, r.link, r.order_ref, r.host_ref, "
            f"pf_raw({raw_args}), pf_local(r.ts, j.day_offset_min, j.day_start_min, j.day_tz) "
            "FROM records r LEFT JOIN journals j ON j.journal_id = r.journal_id")
        conn.execute("DROP TABLE records")
        conn.execute("ALTER TABLE records__new RENAME TO records")
        for stmt in RECORDS_INDEXES:
            conn.execute(stmt)

    def _make_views(self) -> None:
        """(Re)make v_records and v_payments when their definitions changed."""
        conn = self._conn
        version = views_version("sqlite")
        held = conn.execute("SELECT value FROM posfast_meta WHERE key = 'views'").fetchone()
        if held is not None and held[0] == version:
            return
        conn.execute("DROP VIEW IF EXISTS v_records")
        conn.execute("DROP VIEW IF EXISTS v_payments")
        for stmt in view_statements("sqlite"):
            conn.execute(stmt)
        conn.execute("INSERT INTO posfast_meta (key, value) VALUES ('views', ?) ON CONFLICT (key) DO UPDATE "
                     "SET value = excluded.value", (version,))

    def __repr__(self):
        return f"SqliteTarget({self.path!r})"

    def _open_readonly(self, full: str, where: str, timeout: float) -> None:
        """``readonly=True``: read an existing back office (``read_day``, ``read_range``, ...)
        without creating, migrating or writing anything, on a read-only file too."""
        self.readonly = True
        if not os.path.exists(full):
            raise BackOfficeMissing(f"no back office at {where}; check the path")
        uri = "file:%s?mode=ro" % urllib.parse.quote(full)
        try:
            self._conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None,
                                         check_same_thread=False)
            tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error as exc:
            raise SyncConfigError(f"cannot open back office {full}: {exc}") from exc
        if "records" not in tables:
            self._conn.close()
            raise BackOfficeMissing(f"{where} is not a posfast back office (no records table)")
        columns = {r[1] for r in self._conn.execute("PRAGMA table_info(records)")}
        if "text_raw" not in columns:         # a back office of posfast 0.x, read as it is
            self._raw_expr = "NULL"

    def _registry_read(self, sql: str, params: list) -> list:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):    # a back office of an older posfast, read-only
                    return []
                raise SyncConfigError(f"back office {self.path}: {exc}") from exc

    def ping(self) -> None:
        """Touch the database: the file must still be there and answer a query."""
        if not os.path.exists(self.path):
            raise SyncUnavailable(f"back office {self.path} is gone (deleted or moved)")
        super().ping()

    def _registry_write(self, sql: str, params: list) -> None:
        with self._lock:
            try:
                self._conn.execute(sql, params)
            except sqlite3.Error as exc:
                raise SyncUnavailable(f"back office {self.path}: {exc}") from exc

    def _select_day(self, sql: str, params: list, jid_param) -> tuple:
        with self._lock:
            fetched = self._conn.execute(sql, params).fetchall()
            held = self._conn.execute("SELECT count(*) FROM records WHERE journal_id = ?", (jid_param,)).fetchone()[0]
        return fetched, held

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _state(self, jid: uuid.UUID) -> Optional[JournalState]:
        row = self._conn.execute("SELECT anchor_seq, high_seq, last_link, records, day_offset_min, day_start_min, day_tz "
                                 "FROM journals WHERE journal_id = ?", (str(jid),)).fetchone()
        return None if row is None else JournalState(jid, row[0], row[1], bytes(row[2]), row[3],
                                                     None if row[4] is None else (row[4], row[5], row[6]))

    def _recent_refusals(self, journal_id, since_us: int) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM sync_refusals WHERE journal_id IS ? AND at_us >= ?",
                                      (None if journal_id is None else str(journal_id), since_us)).fetchone()[0]

    def _read(self, jid: uuid.UUID, first: int, last: int) -> RecordBatch:
        fetched = self._conn.execute(
            f"SELECT {self._column_list()}, payload, link, order_ref, host_ref, {self._raw_expr} FROM records "
            "WHERE journal_id = ? AND seq "
            "BETWEEN ? AND ? ORDER BY seq", (str(jid), first, last)).fetchall()
        return batch_from_db(jid, fetched)

    def push(self, batch, *, anchor: bool = False, day_rule=None) -> Ack:
        """Store a batch in one transaction; return the ack or raise SyncRefused.

        ``day_rule``: the journal's :class:`posfast.DayRule` (default: ``batch.day_rule``, else
        the rule this back office recorded for the journal, else UTC / 00:00); every row's
        ``day`` must follow from its ``ts`` by it.
        """
        inc = self._incoming(batch, day_rule)
        jid = inc.journal_id
        first_seq, last_seq = int(inc.rows["seq"][0]), int(inc.rows["seq"][-1])
        high = 0
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    state = self._state(jid)
                    high = state.high_seq if state is not None else 0
                    plan = plan_batch(inc, state, lambda a, b: self._read(jid, a, b), anchor=anchor)
                    stored = len(inc.rows) - plan.new_from
                    if stored:
                        cur = conn.executemany(self._insert_sql, db_rows(str(jid), inc, plan.new_from,
                                                                         plan.day_rule))
                        if cur.rowcount != stored:
                            raise SyncUnavailable(f"journal {jid}: expected to store {stored} records, "
                                                  f"stored {cur.rowcount}; back office inconsistent")
                        now = now_us()
                        conn.execute(
                            "INSERT INTO journals (journal_id, anchor_seq, high_seq, last_link, records, "
                            "first_synced_us, last_synced_us, day_offset_min, day_start_min, day_tz) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                            "ON CONFLICT (journal_id) DO UPDATE SET high_seq = excluded.high_seq, "
                            "last_link = excluded.last_link, records = records + excluded.records, "
                            "last_synced_us = excluded.last_synced_us, "
                            "day_tz = CASE WHEN journals.day_offset_min IS NULL THEN excluded.day_tz "
                            "ELSE journals.day_tz END, "
                            "day_offset_min = coalesce(journals.day_offset_min, excluded.day_offset_min), "
                            "day_start_min = coalesce(journals.day_start_min, excluded.day_start_min)",
                            (str(jid), plan.anchor_seq, int(inc.rows["seq"][-1]), inc.links[-1], stored,
                             now, now, plan.day_rule[0], plan.day_rule[1], plan.day_rule[2]))
                        high = int(inc.rows["seq"][-1])
                        conn.execute("UPDATE journals SET format_version = ? WHERE journal_id = ?",
                                     (int(inc.format_version), str(jid)))
                        closed = self._closed_day(inc, plan.new_from)
                        if closed is not None:
                            conn.execute("UPDATE journals SET last_day_closed = max(coalesce(last_day_closed, ?), ?) "
                                         "WHERE journal_id = ?", (closed, closed, str(jid)))
                    else:
                        high = state.high_seq
                    conn.execute(*self._status_statement(jid, inc.status, ok_us=now_us()))
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:   # SQLite rolls back by itself on some errors (disk full)
                        conn.execute("ROLLBACK")
                    raise
            except SyncRefused as exc:
                self._refused(exc, inc.status)
                raise
            except sqlite3.Error as exc:
                if _is_full(exc):
                    raise BackOfficeFull(
                        f"back office {self.path}: the disk is full; nothing of journal {jid} past seq {high} "
                        f"was stored or acknowledged (batch {first_seq}..{last_seq}); free space and sync "
                        "again") from exc
                raise SyncUnavailable(f"back office {self.path}: {exc}") from exc
        ack = Ack(jid, high, stored, plan.duplicates, first_seq, last_seq, inc.links[-1])
        self._stored_log(ack)
        return ack

    def _record_refusal(self, exc: SyncRefused) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO sync_refusals (at_us, journal_id, reason, first_seq, last_seq, message) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (now_us(), None if exc.journal_id is None else str(exc.journal_id), exc.reason,
                 seq_or_none(exc.first_seq), seq_or_none(exc.last_seq), clip(exc.detail, 2 * ECHO_LIMIT)))

    def state(self, journal_id) -> Optional[JournalState]:
        """What this back office holds of a journal (None if nothing)."""
        with self._lock:
            return self._state(as_uuid(journal_id))

    def journals(self) -> list:
        with self._lock:
            rows = self._conn.execute("SELECT journal_id, anchor_seq, high_seq, last_link, records, "
                                      "day_offset_min, day_start_min, day_tz FROM journals ORDER BY journal_id"
                                      ).fetchall()
        return [JournalState(uuid.UUID(r[0]), r[1], r[2], bytes(r[3]), r[4], None if r[5] is None else (r[5], r[6], r[7]))
                for r in rows]

    def read_range(self, journal_id, first_seq: int = 1, last_seq: Optional[int] = None) -> RecordBatch:
        """Held records of a journal in ``first_seq..last_seq`` (default: up to the high-water mark)."""
        jid = as_uuid(journal_id)
        with self._lock:
            return self._read(jid, first_seq, (1 << 63) - 1 if last_seq is None else last_seq)

    def count(self, journal_id=None) -> int:
        with self._lock:
            if journal_id is None:
                return self._conn.execute("SELECT count(*) FROM records").fetchone()[0]
            return self._conn.execute("SELECT count(*) FROM records WHERE journal_id = ?",
                                      (str(as_uuid(journal_id)),)).fetchone()[0]

    def refusals(self) -> list:
        with self._lock:
            cur = self._conn.execute("SELECT at_us, journal_id, reason, first_seq, last_seq, message "
                                     "FROM sync_refusals ORDER BY id")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]
