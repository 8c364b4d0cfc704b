"""The fleet view: every till a back office knows, the ones needing attention first.

:func:`fleet` returns plain dicts (what ``posfast fleet`` prints as a table, JSON or CSV
and what the dashboard renders), computed from the registry, the journals the back
office holds, what each terminal said of itself in its last push or heartbeat (ring
fullness, unsynced records, payments in doubt: :data:`posfast.sync.protocol.STATUS_FIELDS`),
the refusals of its batches and the last reconciliation of its store.

A till needs attention (``attention``: the reasons, worst first; ``severity``: 2 critical,
1 warning, 0 fine) when:

* ``never_seen``: registered, but it never pushed nor sent a heartbeat (critical);
* ``not_seen``: not seen for more than ``stale_after`` seconds (default 24 h; critical);
* ``refused``: its last push was refused, and no push succeeded since (critical);
* ``ring_filling``: unsynced records fill more than ``ring_warn`` (80 %) of its ring (critical);
* ``unsynced_old``: its oldest unsynced record is older than ``unsynced_after`` (1 h; warning);
* ``in_doubt``: it holds payments in doubt (warning);
* ``reconciliation_failed``: the last reconciliation found discrepancies on it (warning);
* ``day_not_closed``: its last closed day is more than ``close_after_days`` (2) days old (warning).
"""
from __future__ import annotations

import datetime as _dt
import time
from typing import Optional

from ..records import day_to_date

__all__ = ["ATTENTION", "FLEET_COLUMNS", "fleet", "fleet_summary"]

#: Attention reasons and their severity (2 critical, 1 warning), in the order they are listed.
ATTENTION = {"never_seen": 2, "not_seen": 2, "refused": 2, "ring_filling": 2, "unsynced_old": 1,
             "in_doubt": 1, "reconciliation_failed": 1, "day_not_closed": 1}

#: The columns of ``posfast fleet --format table|csv`` (JSON has every key of the dicts).
FLEET_COLUMNS = ("store", "till", "tid", "journal_id", "severity", "attention", "last_seen", "last_seen_age_s",
                 "unsynced", "unsynced_age_s", "ring_fill", "ring_unsynced", "in_doubt", "last_day_closed",
                 "last_reconciliation", "refusals_24h", "records")


def _iso(us: Optional[int]) -> str:
    if us is None:
        return ""
    return _dt.datetime.fromtimestamp(us / 1e6, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def fleet(target, *, now: Optional[float] = None, stale_after: float = 24 * 3600.0,
          unsynced_after: float = 3600.0, ring_warn: float = 0.8, close_after_days: int = 2,
          store: Optional[str] = None) -> list:
    """Every till of the back office `target` (a :class:`~posfast.sync.SqliteTarget` or
    :class:`~posfast.sync.PostgresTarget`), one dict each, the tills needing attention
    first (severity, then store and till).  ``store`` keeps one store's.

    Keys: journal_id, merchant_id, store, till, tid, device_serial, registered (bool),
    last_seen (ISO UTC, "" never), last_seen_us, last_seen_age_s, high_seq, records,
    unsynced (records the terminal said it holds past what the back office holds, as of
    last seen), unsynced_age_s (age of the oldest of them, now), ring_fill and
    ring_unsynced (0..1, as reported), in_doubt, retention, last_day_closed (ISO date or
    ""), last_reconciliation (dict or None: day, at, ok, discrepancies, store_ok),
    refusals_24h, last_refusal, last_refusal_at, severity (0/1/2), attention (list).

    >>> [t["till"] for t in fleet(SqliteTarget("back.db", readonly=True))]   # doctest: +SKIP
    ['till 3', 'till 1', 'till 2']
    """
    now = time.time() if now is None else float(now)
    now_us = int(now * 1e6)
    facts = target.fleet_facts(now_us - 24 * 3600 * 1_000_000)
    regs = {r.journal_id: r for r in facts["registry"]}
    ids = set(regs) | set(facts["journals"]) | set(facts["status"])
    today = int(now // 86400)
    out = []
    for jid in ids:
        reg = regs.get(jid)
        if store is not None and (reg is None or reg.store != store):
            continue
        held = facts["journals"].get(jid)
        st = facts["status"].get(jid) or {}
        anchor, high, records, _first, last_synced, closed = held if held else (0, 0, 0, None, None, None)
        seen = st.get("seen_us") or last_synced
        head = st.get("head_seq")
        unsynced = max(0, int(head) - int(high)) if head is not None else None
        oldest = st.get("oldest_unsynced_ts")
        unsynced_age = max(0.0, (now_us - int(oldest)) / 1e6) if unsynced and oldest is not None else \
            (0.0 if unsynced == 0 else None)
        rec = facts["reconciliations"].get(jid)
        refused_n, refused_at = facts["refusals"].get(jid, (0, None))
        last_refusal_us = st.get("last_refusal_us")
        last_ok = st.get("last_ok_us")
        row = {
            "journal_id": str(jid),
            "merchant_id": reg.merchant_id if reg else "", "store": reg.store if reg else "",
            "till": reg.till if reg else "", "tid": reg.tid if reg else "",
            "device_serial": reg.device_serial if reg else "", "registered": reg is not None,
            "last_seen": _iso(seen), "last_seen_us": seen,
            "last_seen_age_s": None if seen is None else round(max(0.0, (now_us - int(seen)) / 1e6), 1),
            "anchor_seq": int(anchor), "high_seq": int(high), "records": int(records),
            "head_seq": None if head is None else int(head),
            "unsynced": unsynced, "unsynced_age_s": None if unsynced_age is None else round(unsynced_age, 1),
            "ring_fill": st.get("ring_fill"), "ring_unsynced": st.get("ring_unsynced"),
            "in_doubt": st.get("in_doubt"), "retention": st.get("retention") or "",
            "last_day_closed": "" if closed is None else day_to_date(int(closed)).isoformat(),
            "last_reconciliation": None if rec is None else {
                "day": day_to_date(rec["day"]).isoformat(), "at": _iso(rec["at_us"]), "ok": rec["ok"],
                "discrepancies": rec["discrepancies"], "store_ok": rec["store_ok"],
                "store_discrepancies": rec["store_discrepancies"]},
            "refusals_24h": refused_n,
            "last_refusal": st.get("last_refusal") or "",
            "last_refusal_at": _iso(last_refusal_us or refused_at),
        }
        reasons = []
        if seen is None:
            reasons.append("never_seen")
        elif now_us - int(seen) > stale_after * 1e6:
            reasons.append("not_seen")
        if last_refusal_us is not None and (last_ok is None or last_ok < last_refusal_us):
            reasons.append("refused")
        if row["ring_unsynced"] is not None and row["ring_unsynced"] > ring_warn:
            reasons.append("ring_filling")
        if unsynced and unsynced_age is not None and unsynced_age > unsynced_after:
            reasons.append("unsynced_old")
        if row["in_doubt"]:
            reasons.append("in_doubt")
        if rec is not None and not rec["ok"]:
            reasons.append("reconciliation_failed")
        if held and (closed is None or today - int(closed) > close_after_days) and records:
            reasons.append("day_not_closed")
        reasons.sort(key=lambda r: -ATTENTION[r])
        row["attention"] = reasons
        row["severity"] = max((ATTENTION[r] for r in reasons), default=0)
        out.append(row)
    out.sort(key=lambda r: (-r["severity"], -len(r["attention"]), r["store"], r["till"], r["journal_id"]))
    return out


def fleet_summary(rows: list) -> dict:
    """Counts of a :func:`fleet` list: tills, critical, warning, fine, and by reason."""
    by: dict = {}
    for r in rows:
        for reason in r["attention"]:
            by[reason] = by.get(reason, 0) + 1
    return {"tills": len(rows), "critical": sum(r["severity"] == 2 for r in rows),
            "warning": sum(r["severity"] == 1 for r in rows), "fine": sum(r["severity"] == 0 for r in rows),
            "by_reason": by}

