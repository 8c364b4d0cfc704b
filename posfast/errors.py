"""posfast's one exception hierarchy.

Every message names the file, the record (seq or field) and what to do next,
so that a cashier's screen or a support log is enough to act on.
"""


class PosfastError(Exception):
    """Base class of every error posfast raises on purpose."""


class CorruptRecord(PosfastError):
    """A record (or header, or index) failed its checksum, seq or chain check.

    The damaged record is never returned as good; ``Journal.verify()`` lists it.
    """


class JournalFull(PosfastError):
    """The ring is full of records the back office has not acknowledged yet.

    Nothing was written.  Sync (``posfast sync``) to free space, or create the
    journal with ``retention="overwrite"`` where losing old records is fine.
    """


class JournalExists(PosfastError, FileExistsError):
    """``Journal.create`` found a file at the path; open it with ``Journal.open``, or choose a
    new path.  Still a ``FileExistsError`` for code written against posfast 0.1.0."""


class JournalNotFound(PosfastError, FileNotFoundError):
    """``Journal.open`` found no journal at the path; create one with ``Journal.create``
    (or ``posfast demo``).  Still a ``FileNotFoundError`` for code written against 0.1.0."""


class JournalLocked(PosfastError):
    """Another process holds the journal open for writing."""


class FormatVersionError(PosfastError):
    """The file is not a posfast journal, or of a format version this build cannot read."""


class InvalidRecord(PosfastError, ValueError):
    """A field of a record is out of range, of the wrong type, or not allowed (a full card number)."""


class JournalClosed(PosfastError):
    """The journal was closed, or its handle was retired after a failed write or sync."""


class IOFailure(PosfastError, OSError):
    """A write, sync or allocation failed; nothing after it was acknowledged.

    The handle refuses further writes; reopen the journal, which re-checks the
    file from disk.
    """


#: Longest value taken from a request (or a file) that is echoed into a message or a log line.
ECHO_LIMIT = 200


def clip(value, limit: int = ECHO_LIMIT) -> str:
    """``repr``-free, bounded text of a value taken from a request (for messages and logs).

    >>> clip("x" * 300)[-30:]
    'xxxxxxxxxx... (300 chars, cut)'
    """
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    return text[:limit] + f"... ({len(text)} chars, cut)"


# ---------------------------------------------------------------- sync (posfast.sync)

class SyncError(PosfastError):
    """Base class of sync failures."""


#: Reason codes carried by :class:`SyncRefused`.
SYNC_REFUSAL_REASONS = ("gap", "fork", "chain", "auth", "invalid")


class SyncRefused(SyncError):
    """The back office refused a batch; retrying the same batch will not help.

    ``reason`` is one of :data:`SYNC_REFUSAL_REASONS` (``posfast.sync.REASONS``): ``gap``
    (records missing before the batch), ``fork`` (a held seq with different bytes or link),
    ``chain`` (a link that does not follow from the previous one), ``auth`` (bad or foreign
    token), ``invalid`` (malformed or oversized batch).

    >>> e = SyncRefused("batch starts at seq 7, back office holds up to 5", "gap")
    >>> e.reason, str(e), e.permanent
    ('gap', 'gap: batch starts at seq 7, back office holds up to 5', False)
    """

    def __init__(self, message: str, reason: str = "invalid", *, journal_id=None, first_seq=None,
                 last_seq=None, high_seq=None, status=None):
        if reason not in SYNC_REFUSAL_REASONS:
            raise ValueError(f"unknown sync refusal reason {reason!r}")
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.detail = message
        self.journal_id = journal_id
        self.first_seq = first_seq
        self.last_seq = last_seq
        self.high_seq = high_seq
        self.status = status  # HTTP status when it came over HTTP

    @property
    def permanent(self) -> bool:
        """True when re-sending the same batch can never succeed (a malformed or impossible batch).

        ``gap``, ``fork``, ``chain`` and ``auth`` may be resolved on the back office (a
        restored database, a new token); ``invalid`` cannot: the syncer does not retry it.
        """
        return self.reason == "invalid"

    def to_json(self) -> dict:
        return {"ok": False, "reason": self.reason, "message": clip(self.detail, 2 * ECHO_LIMIT),
                "journal_id": None if self.journal_id is None else str(self.journal_id),
                "first_seq": self.first_seq, "last_seq": self.last_seq, "high_seq": self.high_seq}


class SyncUnavailable(SyncError):
    """The target could not be reached or could not commit; retry later."""


class BackOfficeFull(SyncUnavailable):
    """The back office's disk is full: nothing of the batch was stored; free space and sync again."""


class SyncConfigError(SyncError, ValueError):
    """A sync target is mis-configured (URL, token, certificate, batch size); fix the setting."""


class BackOfficeMissing(SyncConfigError):
    """No back office at that path (and creating one was not asked for)."""


class SyncBadAck(SyncError):
    """The target answered, but not with an acknowledgement of the batch that was sent.

    The watermark does not move.  A server that answers 200 without naming the
    journal, the exact seq range, the stored + duplicate count and the last link
    is not a posfast back office (a proxy's error page, a fake server).
    """


# ---------------------------------------------------------------- reconciliation (posfast.reconcile)

class SettlementError(PosfastError, ValueError):
    """A settlement file cannot be read: names the file, the line, the column and the value."""

    def __init__(self, message, path=None, line=None, column=None, value=None):
        super().__init__(message)
        self.path, self.line, self.column, self.value = path, line, column, value


# ---------------------------------------------------------------- payments, receipts, day close

class ReprintRefused(PosfastError):
    """A reprint was refused (copy limit reached, no such receipt)."""


class PaymentError(PosfastError, ValueError):
    """A payment operation is not allowed in the payment's current state."""


class DayClosed(PosfastError):
    """The business day was already closed, or cannot be closed yet (payments in doubt)."""


class UnprintableText(PosfastError, UserWarning):
    """A warning (``warnings.warn``): receipt text holds characters the printer's font
    lacks; they print as '?' (never dropped silently).  The message lists them."""


class InvalidArgument(PosfastError, ValueError):
    """A value given to a command or a planning function is not usable (a size, a count,
    a printer address); the message says what to give instead."""


class EscposParseError(PosfastError, ValueError):
    """ESC/POS bytes hold a command the decoder (:func:`posfast.printing.parse`) does
    not know, or a truncated one; the message names the byte offset."""
