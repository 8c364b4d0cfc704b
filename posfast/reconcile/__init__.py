"""Reconciliation (对账): what the journal says was paid, against what the host saw
and what was printed, for one business day.

``reconcile(journal, host, day=..., terminal=None)`` returns a
:class:`ReconcileReport` with one :class:`Discrepancy` per finding, each naming
the journal records (seqs) and the host rows (back-office seqs, or settlement
file line numbers) involved, in one of these categories:

``missing_at_host``
    a payment of the journal the host does not hold (back office: any state,
    the record was never synced; settlement file: an approved payment the
    acquirer did not settle).
``missing_in_journal``
    a host row with no payment in the journal (deleted, never written here, or
    evicted: the detail says which).
``amount_mismatch``
    matched, but amount or currency differ (back office: the first record's
    amount too).  Type is part of every match key, so a sale settled as a
    refund shows as missing on both sides.
``state_mismatch``
    matched, but the states differ (back office behind, or the acquirer
    settled a payment the journal holds as declined, failed, reversed, voided).
``fee_mismatch``
    matched, but the fee the statement charged is a minor unit or more off the
    configured rate of its channel or method (``fee_rates={"wechat": "0.38%"}``).
``settled_other_day``
    matched, but the acquirer settled it on the business day before or after the
    journal's (a payment just before midnight, the acquirer's own cut-off): not missing.
``duplicate``
    the same payment twice: two approved journal payments with one RRN or one
    client reference, or a settlement row listed twice.
``receipt_without_transaction``
    a receipt on paper (PRINT record OK or UNKNOWN) whose payment is missing,
    pending, declined, failed, reversed or voided.
``transaction_without_receipt``
    an approved sale, refund, void, pre-authorisation or completion with no
    print at all.
``print_unknown``
    an approved payment whose only prints have an UNKNOWN outcome (the paper
    may or may not exist).
``in_doubt``
    a payment still PENDING (begun, never finished); names the host row when
    the host has an answer for it.

Hosts
-----
* the back office of :mod:`posfast.sync` (``"sqlite:///back.db"``, a
  ``postgresql://`` DSN, a SqliteTarget / PostgresTarget, or a path to the
  SQLite file): its ``records`` table is read for the journal id and the day
  and folded into payments exactly like the journal; matched on txn_id.
* a statement (a path, or a :class:`Settlement` from :func:`read_settlement`):
  a WeChat Pay bill, an Alipay bill (GBK, zipped or not), a UnionPay online
  settlement file, any bank statement through a column map (``format="mapped"``),
  Adyen's Settlement details report, Stripe's itemized payout reconciliation, or
  posfast's own CSV (see :mod:`posfast.reconcile.formats`; the format is detected
  from the header or preamble).  A statement covers one channel: only the journal's
  payments of that channel are expected in it (``channel=`` overrides).  Rows match
  by host reference, then order reference, then RRN (each with the type), then
  terminal + authorisation code, then the time window below.  The report gains
  the statement's own gross, fee and net per currency and per batch or payout.
  posfast's CSV: columns (header row required, any order, extra columns ignored):

  ``terminal``   terminal number (integer)
  ``time``       ISO 8601, ``2026-11-20T13:45:12`` or ``2026-11-20 13:45:12``,
                 optional fraction and ``Z`` / ``+08:00`` offset; without an
                 offset it is local time of the journal's day rule
  ``rrn``        retrieval reference number (up to 12 characters, may be empty)
  ``auth_code``  authorisation code (up to 6 characters, may be empty)
  ``amount``     integer minor units (1250 for 12.50), positive; refunds,
                 voids and reversals may be negative
  ``currency``   ISO 4217 numeric (156) or alphabetic (CNY)
  ``type``       sale, refund, void, reversal, preauth or completion
  (optional)     ``host_ref``, ``order_ref``, ``fee`` (integer minor units), ``batch``

  A row matches a journal payment by RRN first, then by terminal +
  authorisation code, then by terminal + amount + currency + type within
  ``window`` seconds (default 300) of the payment's time.  Only payments not
  paid in cash or voucher are expected in a settlement file.  A malformed file
  raises :class:`SettlementError` naming the line, the column and the value;
  nothing is reconciled from it.

:func:`reconcile_store` reconciles every journal of a store, as synced to the back
office and registered there (merchant, store, till, TID), against one statement.

A payment belongs to the business day of its first record; its outcome and
receipt are looked for until the end of the next business day.  Training
records are left out.  The report renders as Python objects, JSON
(:meth:`ReconcileReport.to_json`), CSV (:meth:`~ReconcileReport.to_csv`) and a
table (:meth:`~ReconcileReport.to_table`).  The matching is vectorized with
numpy: no Python loop runs per record, only per discrepancy.

>>> import posfast, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "till.pfj")
>>> j = posfast.Journal.create(path, capacity=1024)
>>> seq = j.append(terminal=1, kind="sale", state="approved", amount=1250, method="card",
...                currency=156, rrn="000000000042", ts=1795140000_000000)
>>> csv_path = os.path.join(os.path.dirname(path), "settlement.csv")
>>> _ = open(csv_path, "w").write("terminal,time,rrn,auth_code,amount,currency,type\\n"
...                               "1,2026-11-20T02:00:05Z,000000000042,,1250,CNY,sale\\n")
>>> report = reconcile(j, csv_path, day="2026-11-20")
>>> [(d.category, d.journal_seqs, d.host_rows) for d in report.discrepancies]
[('transaction_without_receipt', (1,), ())]
>>> j.close()
"""
from ..errors import SettlementError
from .checks import reconcile
from .hosts import DayReader, HostSource, host_source
from .report import CATEGORIES, Discrepancy, ReconcileReport
from .formats import FORMATS
from .settlement import SETTLEMENT_COLUMNS, SETTLEMENT_DTYPE, Settlement, read_settlement
from .store import reconcile_store
from .audit import AuditResult, audit_export

__all__ = ["CATEGORIES", "Discrepancy", "FORMATS", "ReconcileReport", "Settlement", "SettlementError",
           "SETTLEMENT_COLUMNS", "SETTLEMENT_DTYPE", "read_settlement", "reconcile",
           "reconcile_store", "DayReader", "HostSource", "host_source", "AuditResult", "audit_export"]
