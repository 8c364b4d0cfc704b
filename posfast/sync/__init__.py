"""Offline sync: push a journal's unacknowledged records to the back office.

A terminal keeps selling while its link is down; when the link returns, a
:class:`Syncer` pushes every record the back office has not acknowledged
(``seq > journal.sync_watermark``) in seq order, in batches, each with its
payload and its hash-chain link.  Only after the target has *committed* a batch
does the syncer advance the journal's durable sync watermark, so:

* a crash before the target commits loses nothing (the batch is re-sent);
* a crash between the target's commit and the watermark save re-sends the
  batch too, and the target de-duplicates on ``(journal_id, seq)``: the back
  office still holds each record exactly once;
* the watermark is never ahead of what the back office has committed.

Targets
-------
``SqliteTarget(path, create=False)``
    The embedded default back office: one SQLite file (WAL,
    ``synchronous=FULL``), one transaction per batch.  A file that does not
    exist is created only with ``create=True`` (``posfast sync --create``);
    otherwise :class:`BackOfficeMissing` names the absolute path, so a typo
    cannot send records to a stray file that acknowledges them.
``PostgresTarget(dsn)``
    The same schema in PostgreSQL (psycopg 3).  A batch is COPYed into a
    temporary table and inserted with ``ON CONFLICT DO NOTHING`` inside one
    transaction; continuity is checked under ``SELECT ... FOR UPDATE`` on the
    journal's row, so two syncers of the same journal cannot interleave.
``HttpTarget(url, token, ca_file=None, client_cert=None)``
    Standard-library HTTP(S) client for ``posfast serve`` (:mod:`posfast.server`),
    which writes to either database.  ``client_cert``: a PEM path holding
    certificate and key, or a ``(cert_file, key_file)`` tuple.

``target_from_url("sqlite:///back.db" | "postgresql://..." | "https://host:8443",
token=None, create=False)`` builds one from a URL.  SQLite URLs follow SQLAlchemy:
``sqlite:///var/back.db`` is the *relative* path ``var/back.db`` (from the current
directory); ``sqlite:////var/back.db`` is the absolute ``/var/back.db``.

The first batch a back office stores for a journal *anchors* its copy: the seq
it starts at (1, or the anchor), its link, and the journal's day rule.  Later
batches must continue that chain with that rule.

Back-office schema (both databases)
-----------------------------------
``records``: primary key ``(journal_id, seq)``, every ``RECORD_DTYPE`` column
(unsigned 64-bit columns are stored as their two's-complement signed 64-bit
value, so nothing overflows; :meth:`read_range` gives the original values
back; the fixed-width text fields as TEXT, their exact bytes in ``text_raw`` when TEXT
cannot hold them), ``payload`` and ``link`` blobs, ``local_time`` (the till's wall clock);
indexes ``(journal_id, day, terminal)`` and ``(day, terminal)``.
``journals``: one row per journal: ``anchor_seq`` (the first seq held),
``high_seq`` (the high-water mark), ``last_link``, ``records``, times.
``sync_refusals``: every refused batch (reason, seqs, message), so a refusal
is reported in the back office too, not only on the terminal.
``registry``: one row per journal for head office: merchant id, store, till, the
terminal id (TID, up to 8 characters, as the acquirer's statements print it) and the
device serial (:meth:`BackOffice.register`, :meth:`BackOffice.registrations`,
``posfast register``); what ``posfast.reconcile.reconcile_store`` reads a store by.
The schema is owned by this package (:mod:`posfast.sync.backoffice`): other
parts of posfast read a back office through a target, e.g.
:meth:`SqliteTarget.read_day` (what ``posfast reconcile`` reads), opened with
``readonly=True`` when nothing is to be written.

Continuity rules (what a target accepts)
----------------------------------------
1. A batch is ``count >= 1`` records of one journal with consecutive seqs;
   each record's link must equal ``posfast.chain_link(previous link, row,
   payload)`` inside the batch, else ``SyncRefused(reason="chain")``.
2. The first batch a target ever receives for a journal must start at seq 1,
   whose link must follow from ``posfast.genesis_link(journal_id.bytes)``.
   *Anchor*: a batch sent with ``anchor=True`` may start at any seq when the
   target holds nothing for that journal; its first link is then
   trusted as given (trust on first use) and recorded as ``anchor_seq``.  The
   :class:`Syncer` sets ``anchor`` by itself only when the journal has never
   been synced (watermark 0) and its oldest live record is past seq 1 (it was
   created with a retention policy that evicted records before any sync);
   ``Syncer(anchor=True)`` forces it, e.g. to start a brand-new back office
   for a journal synced elsewhere before.  Once a target holds records of a
   journal, ``anchor`` is ignored.
3. Later batches must start at or below ``high_seq + 1``: a later start is a
   ``gap``.  Records the target already holds must be identical in every
   column, payload and link, else ``fork``; they are counted as duplicates
   and not written again.  The first new record must link to the held
   ``last_link``, else ``chain``.  A batch starting below ``anchor_seq`` is a
   ``gap`` (that history is not in this back office).
4. An identical replay of a held batch is accepted: the ack carries the held
   high-water mark and ``stored == 0``.

5. ``day`` must be what the journal's day rule gives for the row's ``ts``
   (``(ts + (utc_offset - day_start) minutes) // 1 day``).  The rule travels with
   the batch (``RecordBatch.day_rule``, wire field ``day_rule``); the first stored
   batch records it for the journal and a later batch with another rule is
   refused.  Without a rule sent or recorded, UTC / 00:00 (``DayRule()``) applies.
   A time-zone rule (``DayRule(tz=...)``) travels with its zone's name (wire field
   ``day_rule.tz``; the back office's ``journals.day_tz``) and days are checked by the
   zone, across daylight-saving changes; a zone the back office cannot load is ``invalid``.
   So a token holder cannot file a record under another business day, and the
   genuine record is never shut out as a ``fork`` by such a forgery.
6. Seqs above ``2**63 - 1`` are ``invalid`` (no journal reaches them).

Refusals raise :class:`SyncRefused` (a ``PosfastError``) with ``.reason`` in
``gap / fork / chain / auth / invalid``; ``invalid`` is ``.permanent`` and
:meth:`Syncer.run_forever` does not re-send it.  Connectivity problems (and
HTTP 408/429/5xx) raise :class:`SyncUnavailable` and are retried; a full disk on
the back office is :class:`BackOfficeFull` (a SyncUnavailable).  An answer that
does not acknowledge exactly the batch sent raises :class:`SyncBadAck`.

HTTP wire format (``posfast serve``)
------------------------------------
``POST /v1/journals/<journal_id>/batches`` with ``Authorization: Bearer
<token>`` and a JSON body (columnar, bytes in base64)::

    {"format": "posfast-batch/1", "layout": "<RECORD_DTYPE fingerprint>",
     "journal_id": "<uuid>", "first_seq": 1, "count": 1000, "anchor": false,
     "rows": "<base64: count x RECORD_DTYPE.itemsize little-endian bytes>",
     "links": "<base64: count x 16 bytes>",
     "payloads": "<base64: payloads concatenated; lengths = rows.payload_len>",
     "day_rule": {"utc_offset_min": 480, "starts_at_min": 240}}

``200 {"ok": true, "journal_id", "first_seq", "last_seq", "count", "high_seq",
"stored", "duplicates", "last_link": "<base64 link of last_seq>"}``; the client
counts the batch as synced only if journal id, first/last seq and count are those
it sent, ``stored + duplicates == count``, ``high_seq >= last_seq`` and
``last_link`` is its own link of the last seq.  Errors are JSON ``{"ok": false,
"reason", "message", ...}`` with 400 (invalid), 401/403 (auth), 408 (body too
slow), 409 (gap / fork / chain), 413 (too large), 429 (too many failed tokens),
503 (database unavailable: no path, DSN or database error is disclosed).
``GET /v1/journals/<journal_id>`` returns the held state, ``GET /v1/health``
``{"ok": true, "database": "ok"}`` (503 when the database does not answer).  A batch may
carry the terminal's status (wire field ``terminal``, :func:`posfast.sync.syncer.terminal_status`);
``POST /v1/journals/<journal_id>/status`` with ``{"terminal": {...}}`` is a heartbeat.

Also in the back office (issue 16): ``tokens`` (:mod:`posfast.sync.tokens`), what each
terminal last reported (``terminal_status``), every store reconciliation
(``reconciliations``), and the views ``v_records`` / ``v_payments`` for BI tools; the
fleet view is :func:`posfast.sync.fleet.fleet`.
"""
from .backoffice import TID_SIZE, BackOffice, DayRecords, Registration
from .http import HttpTarget, target_from_url
from .postgres import PostgresTarget
from .protocol import (DEFAULT_DAY_RULE, ECHO_LIMIT, LINK_SIZE, MAX_BATCH, MAX_SEQ, REASONS, WIRE_FORMAT, Ack,
                       BackOfficeFull, BackOfficeMissing, JournalState, RecordBatch, SyncBadAck, SyncConfigError,
                       SyncError, SyncRefused, SyncResult, SyncUnavailable, clip, day_rule_tuple, decode_batch,
                       encode_batch, layout_fingerprint, safe_dsn)
from .sqlite import SqliteTarget
from .syncer import Syncer, sync_status

__all__ = [
    "safe_dsn",
    "Ack", "BackOffice", "BackOfficeFull", "BackOfficeMissing", "DayRecords", "HttpTarget", "JournalState",
    "PostgresTarget", "REASONS", "RecordBatch", "Registration", "SqliteTarget", "TID_SIZE", "SyncBadAck", "SyncConfigError", "SyncError",
    "SyncRefused", "SyncResult", "SyncUnavailable", "Syncer", "clip", "day_rule_tuple", "decode_batch",
    "encode_batch", "sync_status", "target_from_url",
    # constants of the wire format and the continuity rules
    "DEFAULT_DAY_RULE", "ECHO_LIMIT", "LINK_SIZE", "MAX_BATCH", "MAX_SEQ", "WIRE_FORMAT", "layout_fingerprint",
]
