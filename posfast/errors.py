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


class SyncRefused(PosfastError):
    """The back office refused a batch (gap, fork, broken chain, auth, invalid)."""

    def __init__(self, message, reason="invalid"):
        super().__init__(message)
        self.reason = reason


class ReprintRefused(PosfastError):
    """A reprint was refused (copy limit reached, no such receipt)."""


class PaymentError(PosfastError, ValueError):
    """A payment operation is not allowed in the payment's current state."""


class DayClosed(PosfastError):
    """The business day was already closed, or cannot be closed yet (payments in doubt)."""


class InvalidArgument(PosfastError, ValueError):
    """A value given to a command or a planning function is not usable (a size, a count,
    a printer address); the message says what to give instead."""
