"""The exit codes of the `posfast` command: one table, shown in ``posfast --help``."""
from __future__ import annotations

import errno

from .. import errors

# ------------------------------------------------------------------ the exit-code table
EX_OK = 0            #: done, nothing to report
EX_FINDINGS = 1      #: discrepancies, damaged records, payments in doubt
EX_USAGE = 2         #: usage errors only: argparse errors, bad option values
EX_WARNING = 3       #: warnings: ring filling, sync overdue, a damaged newer record near the answer
EX_DATAERR = 65      #: bad input data (a settlement file, a refused batch, a payment's state)
EX_NOINPUT = 66      #: journal, file or the record asked for is missing
EX_SOFTWARE = 70     #: an exception outside the table (a bug: please report it)
EX_UNAVAILABLE = 69  #: back office or printer unreachable, an optional dependency missing
EX_CANTCREAT = 73    #: cannot create what was asked (day already closed, copy limit, file exists)
EX_IOERR = 74        #: I/O error, damage that stops the verb
EX_TEMPFAIL = 75     #: retry later: journal locked by another writer, journal or disk full
EX_PROTOCOL = 76     #: the back office answered, but not with an acknowledgement
EX_NOPERM = 77       #: permissions
EX_INTERRUPTED = 130  #: Ctrl-C (128 + SIGINT)

#: What each code means, in the order `posfast --help` and the README show them.
EXIT_CODE_MEANINGS = {
    EX_OK: "ok",
    EX_FINDINGS: "findings: discrepancies, damage, payments in doubt",
    EX_USAGE: "usage error: bad command line or option value",
    EX_WARNING: "warning: ring filling, sync overdue, a damaged newer record near the answer",
    EX_DATAERR: "EX_DATAERR: bad input data (settlement file, refused batch, payment state, not a back office)",
    EX_NOINPUT: "EX_NOINPUT: journal, file or record missing",
    EX_UNAVAILABLE: "EX_UNAVAILABLE: back office or printer unreachable, aiohttp missing",
    EX_SOFTWARE: "EX_SOFTWARE: an exception outside this table (a bug: please report it)",
    EX_CANTCREAT: "EX_CANTCREAT: cannot create it (day already closed, copy limit, file exists)",
    EX_IOERR: "EX_IOERR: I/O error or damage that stops the verb",
    EX_TEMPFAIL: "EX_TEMPFAIL: retry later (journal locked by another writer, journal or disk full)",
    EX_PROTOCOL: "EX_PROTOCOL: the back office's answer is not an acknowledgement",
    EX_NOPERM: "EX_NOPERM: permission denied",
    EX_INTERRUPTED: "interrupted (Ctrl-C)",
}


def _exit_codes() -> dict:
    return {
        # posfast's own errors
        errors.InvalidArgument: EX_USAGE,
        errors.InvalidRecord: EX_USAGE,          # a field given on the command line
        errors.SyncConfigError: EX_USAGE,               # a bad --to, --token, --batch, --port ...
        errors.PaymentError: EX_DATAERR,         # resolve a payment that is not in doubt
        errors.SettlementError: EX_DATAERR,
        errors.EscposParseError: EX_DATAERR,
        errors.FormatVersionError: EX_DATAERR,   # not a posfast journal
        errors.SyncRefused: EX_DATAERR,          # the back office refused the records
        errors.BackOfficeMissing: EX_NOINPUT,
        errors.JournalNotFound: EX_NOINPUT,
        errors.JournalExists: EX_CANTCREAT,
        errors.SyncUnavailable: EX_UNAVAILABLE,
        errors.SyncError: EX_UNAVAILABLE,
        errors.SyncBadAck: EX_PROTOCOL,
        errors.DayClosed: EX_CANTCREAT,
        errors.ReprintRefused: EX_CANTCREAT,
        errors.CorruptRecord: EX_IOERR,
        errors.IOFailure: EX_IOERR,
        errors.JournalClosed: EX_IOERR,
        errors.JournalLocked: EX_TEMPFAIL,
        errors.JournalFull: EX_TEMPFAIL,
        errors.BackOfficeFull: EX_TEMPFAIL,
        errors.PosfastError: EX_DATAERR,         # any other refusal: the journal, file or back office
        # the builtins a verb may meet
        FileNotFoundError: EX_NOINPUT,
        NotADirectoryError: EX_NOINPUT,
        FileExistsError: EX_CANTCREAT,
        IsADirectoryError: EX_CANTCREAT,
        PermissionError: EX_NOPERM,
        ConnectionError: EX_UNAVAILABLE,
        TimeoutError: EX_UNAVAILABLE,
        ImportError: EX_UNAVAILABLE,             # an optional extra (aiohttp, psycopg) not installed
        OSError: EX_IOERR,                       # ENOSPC / EDQUOT: EX_TEMPFAIL (see exit_code)
        ValueError: EX_USAGE,                    # a value no verb could use (a width, a count)
        KeyboardInterrupt: EX_INTERRUPTED,
    }


_TABLE = None


def exit_codes() -> dict:
    """The one table: exception class -> exit code.  An exception takes the code of the
    first class of its MRO found here (so a subclass listed on its own wins)."""
    global _TABLE
    if _TABLE is None:
        _TABLE = _exit_codes()
    return _TABLE


def exit_code(exc: BaseException) -> int:
    """The exit code of an exception by the table (a full disk is EX_TEMPFAIL)."""
    table = exit_codes()
    for cls in type(exc).__mro__:
        if cls in table:
            code = table[cls]
            if code == EX_IOERR and getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
                return EX_TEMPFAIL
            return code
    return EX_SOFTWARE


def exit_code_epilog() -> str:
    return "exit codes:\n" + "\n".join("  %3d  %s" % (code, text) for code, text in EXIT_CODE_MEANINGS.items())


# ------------------------------------------------------------------ parser
