"""``/metrics`` of ``posfast serve``: the Prometheus text format (version 0.0.4).

Per journal (labels ``journal_id``, ``store``, ``till``), read from the back office at each
scrape, so every server process in front of one database answers the same:

* ``posfast_journal_records``: records held;
* ``posfast_journal_unsynced_records``: records the terminal said it holds past what the
  back office holds (as of its last push or heartbeat);
* ``posfast_journal_unsynced_age_seconds``: age of the oldest of them (0: none);
* ``posfast_journal_last_seen_age_seconds``: seconds since the terminal's last push or heartbeat;
* ``posfast_journal_in_doubt_payments``: payments in doubt it reported;
* ``posfast_journal_attention``: 0 fine, 1 warning, 2 critical (``posfast fleet``).

Back office: ``posfast_records_stored`` (all journals), ``posfast_journals``,
``posfast_sync_refusals_recorded{reason}`` (the ``sync_refusals`` table).

This process (since it started): ``posfast_batches_total{outcome}`` (stored, duplicate,
refused, unavailable), ``posfast_records_received_total`` and the histogram
``posfast_batch_seconds`` (time to check and commit a batch, from its body read to its ack).
"""
from __future__ import annotations

import bisect
import threading
import time
from typing import Optional

from .fleet import fleet

__all__ = ["BATCH_BUCKETS", "CONTENT_TYPE", "Metrics", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Upper bounds (seconds) of the batch latency histogram's buckets.
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OUTCOMES = ("stored", "duplicate", "refused", "unavailable")


class Metrics:
    """What one server process counts (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.batches = dict.fromkeys(OUTCOMES, 0)
        self.records = 0
        self.buckets = [0] * (len(BATCH_BUCKETS) + 1)
        self.seconds = 0.0
        self.started = time.time()

    def batch(self, outcome: str, seconds: float, stored: int = 0) -> None:
        with self._lock:
            self.batches[outcome] = self.batches.get(outcome, 0) + 1
            self.records += int(stored)
            self.buckets[bisect.bisect_left(BATCH_BUCKETS, seconds)] += 1
            self.seconds += seconds

    def snapshot(self) -> dict:
        with self._lock:
            return {"batches": dict(self.batches), "records": self.records, "buckets": list(self.buckets),
                    "seconds": self.seconds}


def _label(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**kv) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in kv.items()) + "}"


def _num(value) -> str:
    if value is None:
        return "NaN"
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(int(value))


def render_metrics(target, metrics: Optional[Metrics] = None, *, now: Optional[float] = None) -> str:
    """The metrics page (text) of a back office and, when given, a process's counters."""
    now = time.time() if now is None else now
    rows = fleet(target, now=now)
    lines: list = []

    def family(name, kind, doc, samples):
        lines.append(f"# HELP {name} {doc}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {_num(value)}" for labels, value in samples)

    def per_journal(key, only_known=True):
        out = []
        for r in rows:
            value = r[key]
            if value is None and only_known:
                continue
            out.append((_labels(journal_id=r["journal_id"], store=r["store"], till=r["till"]), value))
        return out

    family("posfast_journal_records", "gauge", "Records of the journal held by the back office.",
           per_journal("records"))
    family("posfast_journal_unsynced_records", "gauge",
           "Records the terminal reported holding past what the back office holds (as of its last push).",
           per_journal("unsynced"))
    family("posfast_journal_unsynced_age_seconds", "gauge",
           "Age of the oldest record the back office does not hold yet (0: none).", per_journal("unsynced_age_s"))
    family("posfast_journal_last_seen_age_seconds", "gauge",
           "Seconds since the terminal's last push or heartbeat.", per_journal("last_seen_age_s"))
    family("posfast_journal_in_doubt_payments", "gauge", "Payments in doubt the terminal reported.",
           per_journal("in_doubt"))
    family("posfast_journal_attention", "gauge", "0 fine, 1 warning, 2 critical (see posfast fleet).",
           per_journal("severity"))
    stored = sum(r["records"] for r in rows)
    family("posfast_records_stored", "gauge", "Records held by the back office, all journals.", [("", stored)])
    family("posfast_journals", "gauge", "Journals the back office knows (registered, synced or seen).",
           [("", len(rows))])
    counts = target.refusal_counts() if hasattr(target, "refusal_counts") else {}
    family("posfast_sync_refusals_recorded", "gauge",
           "Refused batches recorded in the back office's sync_refusals table, by reason.",
           [(_labels(reason=reason), n) for reason, n in sorted(counts.items())])
    if metrics is not None:
        snap = metrics.snapshot()
        family("posfast_batches_total", "counter", "Batches this server process answered, by outcome.",
               [(_labels(outcome=k), v) for k, v in snap["batches"].items()])
        family("posfast_records_received_total", "counter", "Records this server process stored.",
               [("", snap["records"])])
        lines.append("# HELP posfast_batch_seconds Time to check and commit a batch (this process).")
        lines.append("# TYPE posfast_batch_seconds histogram")
        cumulative = 0
        for bound, n in zip(BATCH_BUCKETS + (float("inf"),), snap["buckets"]):
            cumulative += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'posfast_batch_seconds_bucket{{le="{le}"}} {cumulative}')
        lines.append(f"posfast_batch_seconds_sum {round(snap['seconds'], 6)!r}")
        lines.append(f"posfast_batch_seconds_count {cumulative}")
    return "\n".join(lines) + "\n"
