"""A whole store at head office: every journal registered to the store in the back office
(:meth:`posfast.sync.BackOffice.register`), as synced there, against one statement of
the merchant account: :func:`reconcile_store`.  A statement row belongs to the till whose
registered terminal id (TID) it names; rows of another store's TIDs are left out, so no
till's sales show up as another till's ``missing_in_journal``.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import PosfastError
from ..records import DayRule, day_number, day_to_date
from ..sync import PostgresTarget, SqliteTarget
from .checks import (_Builder, against_statement, concat_payments, finish_checks, finish_report,
                     journal_payments)
from .hosts import host_source, safe_dsn
from .report import ReconcileReport
from .settlement import Settlement, read_settlement

__all__ = ["reconcile_store"]


def _open(back_office):
    """(target, label, whether to close it) of a back office given as a URL, path or target."""
    if hasattr(back_office, "registrations"):
        return back_office, repr(back_office), False
    source = host_source(back_office)
    if source.kind != "back_office":
        raise ValueError("reconcile_store reads a back office (sqlite:///back.db or "
                         "postgresql://...), not %r" % (back_office,))
    if source.path is not None:
        if not os.path.exists(source.path):
            raise FileNotFoundError("posfast: no back-office database %s" % source.path)
        return SqliteTarget(source.path, readonly=True), source.path, True
    return PostgresTarget(source.dsn, readonly=True), safe_dsn(source.dsn), True


def reconcile_store(back_office, settlement, day, store, window=300, settled_methods=None,
                    encoding=None, format="auto", column_map=None, channel=None, fee_rates=None,
                    summary=False, day_rule=None, file_date=None, record=True) -> ReconcileReport:
    """Reconcile every journal of `store`, as synced to `back_office`, against one statement.

    `back_office`: ``"sqlite:///back.db"``, a ``postgresql://`` DSN or a target;
    `settlement`: a statement path or a :class:`Settlement`.  The day rule is the one the
    store's journals recorded in the back office (`day_rule` overrides it).  The other
    options are :func:`posfast.reconcile.reconcile`'s.  Each discrepancy names its till
    (``till``) and that journal's back-office seqs; the report's ``tills`` maps journal
    ids to tills.  Print records are not checked here (reconcile each till's journal for
    its receipts).  ``record``: keep the result in the back office (its ``reconciliations``
    table, one row per till: what ``posfast fleet`` shows as the till's last reconciliation);
    when the back office cannot be written, the report's notes say so.

    >>> report = reconcile_store("sqlite:///back.db", "wechat_20261120.csv",      # doctest: +SKIP
    ...                          day="2026-11-20", store="SH-01")
    >>> report.counts()["missing_in_journal"]                                     # doctest: +SKIP
    0
    """
    wanted = day_number(day)
    target, label, close = _open(back_office)
    try:
        regs = target.registrations(store=store)
        if not regs:
            raise PosfastError("posfast: no journal is registered to store %r in %s; register "
                               "each till first: posfast register --db ... JOURNAL_ID --store %s "
                               "--till NAME --tid TID" % (store, label, store))
        states = {r.journal_id: target.state(r.journal_id) for r in regs}
        rule = day_rule
        if rule is None:
            recorded = [st.day_rule for st in states.values() if st is not None and st.day_rule]
            rule = DayRule.from_header(*recorded[0]) if recorded else DayRule()
        if not isinstance(settlement, Settlement):
            settlement = read_settlement(settlement, format=format, utc_offset=rule,
                                         encoding=encoding, column_map=column_map,
                                         file_date=file_date)
        tills = [r.till or str(r.journal_id) for r in regs]
        report = ReconcileReport(journal="store %s" % store, journal_id="", day=day_to_date(wanted),
                                 terminal=None, host="", host_rows_are="line", store=str(store),
                                 tills={str(r.journal_id): t for r, t in zip(regs, tills)})
        days, neighbours = [], []
        for k, reg in enumerate(regs):
            state = states[reg.journal_id]
            if state is None:
                report.notes.append("journal %s (till %s) was never synced to %s: none of its "
                                    "payments can be matched" % (reg.journal_id, tills[k], label))
                continue
            held = target.read_day(reg.journal_id, wanted - 1, wanted + 2)
            for d, into in ((wanted, days), (wanted - 1, neighbours), (wanted + 1, neighbours)):
                txns = journal_payments(held.rows, d, state.anchor_seq, held.refs_of)
                txns["till"], txns["terminal"] = k, k + 1
                into.append(txns)
        if not days:
            raise PosfastError("posfast: no journal of store %r was ever synced to %s" % (store,
                                                                                          label))
        settlement = _store_rows(settlement, regs, target.registrations(), report)
        out = _Builder(rule.tzinfo, summary=summary, tills=tills)
        jtx = concat_payments(days)
        partner = against_statement(jtx, concat_payments(neighbours), settlement, wanted, rule,
                                    None, window, settled_methods, out, report, channel, fee_rates)
        report.host = "settlement %s, back office %s" % (os.path.basename(settlement.path), label)
        finish_checks(jtx, partner, out, report)
        report = finish_report(report, out, summary)
        if record:
            _record(back_office, target, report, regs, wanted)
        return report
    finally:
        if close:
            target.close()


def _record(back_office, target, report, regs, day) -> None:
    """Keep the result in the back office's ``reconciliations`` (one row per till)."""
    counts = report.counts()
    total = sum(counts.values())
    per_till: dict = {}
    if not report.summary_only:
        for d in report.discrepancies:
            if d.till:
                per_till.setdefault(d.till, {}).setdefault(d.category, 0)
                per_till[d.till][d.category] += 1
    rows = []
    for reg in regs:
        till = reg.till or str(reg.journal_id)
        mine = per_till.get(till, {}) if not report.summary_only else {c: n for c, n in counts.items() if n}
        n = sum(mine.values())
        rows.append({"journal_id": str(reg.journal_id), "till": till, "ok": n == 0, "discrepancies": n,
                     "counts": mine})
    writer, close = target, False
    try:
        if getattr(target, "readonly", False):
            source = host_source(back_office) if isinstance(back_office, (str, os.PathLike)) else None
            if source is None or source.kind != "back_office":
                raise PosfastError("the back office was given opened read-only")
            writer = SqliteTarget(source.path) if source.path is not None else PostgresTarget(source.dsn)
            close = True
        writer.record_reconciliation(str(report.store), day, rows, store_ok=report.ok,
                                     store_discrepancies=total, host=report.host)
    except (PosfastError, OSError) as exc:
        report.notes.append("the result was not recorded in the back office (%s); posfast fleet "
                            "does not show it" % (" ".join(str(exc).split())[:200],))
    finally:
        if close:
            writer.close()


def _store_rows(settlement, regs, everyone, report):
    """The statement's rows of this store, each row's ``terminal`` set to its till's number
    (1 + index in `regs`; 0 for rows without a TID or with a TID no one registered).  A
    statement of terminal numbers only (posfast's CSV) is read against TIDs of digits."""
    if settlement.tid is not None:
        tid = settlement.tid
        def key(text):
            return text.encode("utf-8")
    else:
        tid = settlement.rows["terminal"]
        def key(text):
            return int(text) if text.isdigit() else -1
    if not len(tid) or not (tid != tid.dtype.type()).any():
        report.notes.append("%s names no terminal ids: its rows are matched by reference and "
                            "amount only, and cover every store of the merchant account"
                            % os.path.basename(settlement.path))
        out = settlement.take(np.ones(len(tid), bool))
        out.rows["terminal"] = 0
        return out
    mine = {key(r.tid): k + 1 for k, r in enumerate(regs) if r.tid}
    elsewhere = {key(r.tid) for r in everyone if r.tid} - set(mine)
    other_store = np.isin(tid, list(elsewhere)) if elsewhere else np.zeros(len(tid), bool)
    if other_store.any():
        report.notes.append("%d row(s) of other stores' terminals left out" % int(other_store.sum()))
    out = settlement.take(~other_store)
    tid = tid[~other_store]
    number = np.zeros(len(out.rows), np.uint32)
    for value, k in mine.items():
        number[tid == value] = k
    unknown = sorted({(bytes(t).decode("utf-8", "replace") if isinstance(t, bytes) else str(t))
                      for t in tid[number == 0].tolist() if t})
    if unknown:
        report.notes.append("terminal id(s) %s are registered to no journal: their rows can only "
                            "match by reference" % ", ".join(unknown))
    out.rows["terminal"] = number
    return out
