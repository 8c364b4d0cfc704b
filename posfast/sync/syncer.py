"""The :class:`Syncer` (push a journal's unacknowledged records to a target) and :func:`sync_status`."""
from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable, Optional

import numpy as np

from ..errors import JournalClosed, PosfastError
from .._core import FORMAT_VERSION
from .protocol import RecordBatch, SyncBadAck, SyncConfigError, SyncRefused, SyncResult, SyncUnavailable

log = logging.getLogger("posfast.sync")

__all__ = ["Syncer", "sync_status", "terminal_status"]


class Syncer:
    """Push a journal's unacknowledged records to a target, advancing the sync watermark.

    >>> syncer = Syncer(journal, SqliteTarget("back.db"), batch=1000)   # doctest: +SKIP
    >>> syncer.run_once()                                                 # doctest: +SKIP
    SyncResult(sent=2500, batches=3, watermark=2500, duplicates=0)

    In a background thread, alongside the POS appending (the journal is thread-safe
    and the syncer holds no journal lock while it waits on the network)::

        stop = threading.Event()
        threading.Thread(target=syncer.run_forever, args=(stop,), daemon=True).start()

    ``anchor``: ``"auto"`` (default) anchors only a never-synced journal whose oldest
    live record is past seq 1; ``True`` always asks for an anchor (start a new back
    office for a journal synced elsewhere before); ``False`` never.
    """

    #: Seconds between heartbeats (a status report without records) while there is nothing
    #: to push, so the back office's fleet view sees the terminal alive.
    heartbeat_interval = 60.0

    def __init__(self, journal, target, batch: int = 1000, *, anchor="auto"):
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise SyncConfigError(f"batch size must be a whole number of records, at least 1 (got {batch!r})")
        if anchor not in ("auto", True, False):
            raise ValueError("anchor must be 'auto', True or False")
        self.journal = journal
        self.target = target
        self.batch = int(batch)
        self.anchor = anchor
        self.last_error: Optional[BaseException] = None
        self.last_result: Optional[SyncResult] = None
        self.last_success_at: Optional[float] = None
        self.failures = 0  # consecutive failed rounds of run_forever
        self._last_report = 0.0   # monotonic time of the last status the target was told

    def __repr__(self):
        return f"Syncer({self.journal!r}, {self.target!r}, batch={self.batch})"

    def _first_unsynced(self, watermark: int) -> tuple:
        oldest = self.journal.oldest_seq
        first = watermark + 1
        if oldest and first < oldest:
            # Records past the watermark were evicted before they were synced.
            first = oldest
        anchor = self.anchor is True or (self.anchor == "auto" and watermark == 0 and first > 1)
        return first, anchor

    def run_once(self, max_records: Optional[int] = None) -> SyncResult:
        """Push every unacknowledged record (up to ``max_records``) once; raise on failure.

        Batches are sent in seq order; the watermark advances after each acknowledged
        batch, so a failure part-way keeps the progress made so far.
        """
        journal = self.journal
        watermark = journal.sync_watermark
        head = journal.head_seq
        sent = batches = duplicates = 0
        if head <= watermark:
            self._heartbeat()
            return self._done(SyncResult(0, 0, watermark))
        first, anchor = self._first_unsynced(watermark)
        status = terminal_status(journal)
        if max_records is not None:
            head = min(head, first + max_records - 1)
        size = self.batch
        while first <= head:
            last = min(first + size - 1, head)
            batch = journal.read_range(first, last)
            rule = getattr(journal, "day_rule", None)
            if rule is not None and getattr(batch, "day_rule", None) is None:
                try:
                    batch.day_rule = rule          # the back office checks every day against it
                except AttributeError:
                    batch = RecordBatch(batch.journal_id, batch.rows, batch.payloads, batch.links, rule,
                                        getattr(batch, "exts", None),
                                        getattr(batch, "format_version", FORMAT_VERSION))
            if status is not None:
                if len(batch.rows):                # the oldest record not acknowledged yet: this one
                    status["oldest_unsynced_ts"] = int(batch.rows["ts"][0])
                try:
                    batch.status = dict(status)
                except AttributeError:
                    pass
            try:
                ack = self.target.push(batch, anchor=anchor)
            except SyncRefused as exc:
                if exc.status == 413 and last > first:
                    size = max(1, (last - first + 1) // 2)  # the server's body limit: smaller batches
                    continue
                raise
            if ack.first_seq is not None and (ack.first_seq, ack.last_seq) != (first, last):
                raise SyncBadAck(f"target acknowledged seqs {ack.first_seq}..{ack.last_seq} of journal "
                                 f"{journal.journal_id} for a batch of {first}..{last}")
            if ack.high_seq < last:
                raise SyncUnavailable(f"target acknowledged journal {journal.journal_id} only up to seq "
                                      f"{ack.high_seq} after a batch ending at {last}")
            self._advance(last)
            self._last_report = time.monotonic()
            watermark = last
            sent += last - first + 1
            duplicates += ack.duplicates
            batches += 1
            anchor = False  # the target now holds this journal: later batches just continue it
            first = last + 1
        return self._done(SyncResult(sent, batches, watermark, duplicates))

    def _advance(self, last: int) -> None:
        """Move the watermark to ``last``, unless another syncer of this journal (a second
        link to the back office, pushing through another server) already moved it past."""
        journal = self.journal
        if journal.sync_watermark >= last:
            return
        try:
            journal.set_sync_watermark(last)
        except ValueError:
            if journal.sync_watermark < last:   # not that race: a real error
                raise

    def _heartbeat(self) -> None:
        """Nothing to push: tell the target the terminal is alive (and its status) every
        :attr:`heartbeat_interval` seconds, if it listens (``report_status``)."""
        report = getattr(self.target, "report_status", None)
        if report is None or time.monotonic() - self._last_report < self.heartbeat_interval:
            return
        status = terminal_status(self.journal)
        if status is None:
            return
        report(self.journal.journal_id, status)
        self._last_report = time.monotonic()

    def _done(self, result: SyncResult) -> SyncResult:
        self.last_result = result
        self.last_error = None
        self.last_success_at = time.time()
        return result

    def run_forever(self, stop_event: Optional[threading.Event] = None, interval: float = 5.0, *,
                    max_backoff: float = 300.0, on_error: Optional[Callable[[BaseException], None]] = None,
                    on_sync: Optional[Callable[[SyncResult], None]] = None) -> None:
        """Sync until ``stop_event`` is set: every ``interval`` s when idle, with backoff on failures.

        A failed round waits ``min(max_backoff, interval * 2**failures)`` scaled by a
        random factor in [0.5, 1.0] (jitter, so a fleet of terminals coming back
        online does not hammer the server in step).  A refusal (gap, fork, chain,
        auth), a bad acknowledgement, a damaged record or any other error needs a
        human: it is logged at ERROR, passed to ``on_error`` and retried at the
        slowest pace.  A batch the target can never accept (``SyncRefused.permanent``,
        reason ``invalid``) is not re-sent: the loop logs it, calls ``on_error`` and
        returns (``last_error`` keeps it).  Returns when the journal is closed too.
        Appends are never blocked.
        """
        stop_event = stop_event or threading.Event()
        while not stop_event.is_set():
            if getattr(self.journal, "closed", False):
                log.info("journal %s closed: syncer stops", self.journal.journal_id)
                return
            try:
                result = self.run_once()
            except JournalClosed:
                log.info("journal %s closed: syncer stops", self.journal.journal_id)
                return
            except Exception as exc:
                self.last_error = exc
                self.failures += 1
                if isinstance(exc, SyncRefused) and exc.permanent:
                    log.error("sync of journal %s stopped for good: %s (the batch can never be accepted; "
                              "not retried)", self.journal.journal_id, exc)
                    if on_error is not None:
                        on_error(exc)
                    return
                if isinstance(exc, SyncUnavailable):
                    log.warning("sync of journal %s failed (attempt %d): %s", self.journal.journal_id,
                                self.failures, exc)
                    delay = min(max_backoff, interval * (2 ** min(self.failures, 30)))
                else:  # refused, a damaged record, a bug: needs a human, retry slowly
                    log.error("sync of journal %s stopped: %s", self.journal.journal_id, exc,
                              exc_info=not isinstance(exc, PosfastError))
                    delay = max_backoff
                if on_error is not None:
                    on_error(exc)
                stop_event.wait(delay * random.uniform(0.5, 1.0))
                continue
            self.failures = 0
            if on_sync is not None and result.sent:
                on_sync(result)
            if self.journal.head_seq > result.watermark and result.sent:
                continue  # more arrived while we were sending
            stop_event.wait(interval)


# --------------------------------------------------------------------------- status

def terminal_status(journal) -> Optional[dict]:
    """What a terminal tells the back office of itself with each push (wire field
    ``terminal``, :data:`posfast.sync.protocol.STATUS_FIELDS`): its head seq, the time of
    its oldest unsynced record, ring fullness, payments in doubt, retention.  None when
    the journal cannot say (not a posfast Journal)."""
    try:
        st = journal.status()
    except Exception:
        return None
    if not isinstance(st, dict) or "head_seq" not in st:
        return None
    capacity = int(st.get("capacity") or 0)
    live, used, unsynced = int(st.get("live_records") or 0), int(st.get("used_slots") or 0), int(st.get("unsynced") or 0)
    unsynced_slots = round(used * unsynced / live) if live and used else unsynced
    try:
        in_doubt = len(journal.in_doubt())
    except Exception:
        in_doubt = None
    out = {"at_us": int(time.time() * 1e6), "head_seq": int(st["head_seq"]),
           "oldest_unsynced_ts": st.get("oldest_unsynced_ts") if unsynced else None,
           "ring_fill": min(1.0, used / capacity) if capacity else None,
           "ring_unsynced": min(1.0, unsynced_slots / capacity) if capacity else None,
           "in_doubt": in_doubt, "retention": str(st.get("retention") or "")[:16]}
    return {k: v for k, v in out.items() if v is not None}


def sync_status(journal, deadline_hours: float = 72, *, now: Optional[float] = None,
                full_fraction: float = 0.8) -> dict:
    """How far behind the back office a journal is, with a warning flag.

    >>> sync_status(journal)["warning"]          # doctest: +SKIP
    False

    ``warning`` is True when the oldest unsynced record is older than
    ``deadline_hours`` (``state == "overdue"``) or unsynced records fill more than
    ``full_fraction`` of the ring's slots (``state == "ring_filling"``; appends will
    soon fail with ``JournalFull``).  ``lost_unsynced`` counts records evicted before
    they were synced (only possible with retention ``overwrite``/``archive``); all
    the reasons that apply are listed in ``reasons``, the first is ``state``.
    """
    now = time.time() if now is None else now
    st = journal.status()
    watermark, head, oldest = int(st["sync_watermark"]), int(st["head_seq"]), int(st["oldest_seq"])
    capacity, unsynced = int(st["capacity"]), int(st["unsynced"])
    live, used = int(st.get("live_records") or 0), int(st.get("used_slots") or 0)
    # A record may span several slots: estimate the unsynced share of the used slots.
    unsynced_slots = round(used * unsynced / live) if live and used else unsynced
    fraction = unsynced_slots / capacity if capacity else 0.0
    lost = max(0, min(head, oldest - 1) - watermark) if head else 0
    oldest_ts = st.get("oldest_unsynced_ts") if unsynced else None
    oldest_age = None if oldest_ts is None else max(0.0, now - oldest_ts / 1e6)
    reasons = []
    if oldest_age is not None and oldest_age > deadline_hours * 3600:
        reasons.append("overdue")
    if fraction > full_fraction:
        reasons.append("ring_filling")
    if lost:
        reasons.append("lost_unsynced")
    return {
        "journal_id": str(journal.journal_id),
        "sync_watermark": watermark,
        "head_seq": head,
        "unsynced": unsynced,
        "oldest_unsynced_seq": max(watermark + 1, oldest) if unsynced else None,
        "oldest_unsynced_ts": oldest_ts,
        "oldest_unsynced_age_s": oldest_age,
        "unsynced_slots": unsynced_slots,
        "unsynced_fraction": fraction,
        "capacity": capacity,
        "deadline_hours": deadline_hours,
        "lost_unsynced": lost,
        "warning": bool(reasons),
        "state": reasons[0] if reasons else "ok",
        "reasons": reasons,
    }
