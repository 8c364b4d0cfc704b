"""The `posfast` command: every service reachable from a shell.

    posfast demo                      a week of trading on four terminals, end to end
    posfast status JOURNAL            sizes, seqs, sync backlog (ages, local time)
    posfast verify JOURNAL            check every record and the hash chain
    posfast last JOURNAL --terminal 3 the last transaction of a terminal (after a crash)
    posfast in-doubt JOURNAL          payments begun but never finished
    posfast resolve JOURNAL TXN approved|declined|reversed [--auth-code A] [--rrn R]
    posfast show JOURNAL SEQ          one record
    posfast query JOURNAL --day 2026-11-20 --terminal 3 [--kind sale] [--format table|json|csv]
    posfast reprint JOURNAL --code 3-000200 | --receipt-no N [--terminal T] | --seq S
                    [--printer tcp://host:9100 | usb://VID:PID | serial:///dev/ttyS0?baud=115200 |
                     cups://QUEUE | win32://NAME | bt://ADDR | FILE] [--out FILE] [--profile ZJ-5870] [--text]
    posfast printer-status tcp://host:9100   paper, cover, online (DLE EOT real-time status)
    posfast sync JOURNAL --to sqlite:///back.db | postgresql://... | http://host:8080 [--token T] [--forever]
    posfast serve --db sqlite:///back.db --port 8080 --token JOURNAL_ID=TOKEN
    posfast agent JOURNAL [--socket PATH | --listen 127.0.0.1:PORT --token-file F]
                  [--sync-to URL ...] [--printer URL]   the journal's one writer, for any language
    posfast reconcile JOURNAL --day D --host sqlite:///back.db | postgresql://... | STATEMENT
                    [--format wechat|alipay|unionpay|mapped --map M.toml|adyen|stripe|posfast]
    posfast reconcile --db sqlite:///back.db --store S --settlement STATEMENT --day D
    posfast register --db sqlite:///back.db JOURNAL_ID --store S --till T --tid TID [--issue-token]
    posfast register --db URL --admin --issue-token | --revoke TOKEN_ID | --list-tokens
    posfast fleet --db URL [--format table|json|csv]   every till, the ones needing attention first
    posfast export --db URL --store S --from D1 --to D2 --format audit-jsonl|csv   for an auditor
    posfast close-day JOURNAL --day D [--terminal N] [--force]
    posfast capacity --budget 64MB --per-day 800 [--payload-bytes 300] [--measure]
    posfast capacity --budget 512MB --per-day 2000 --payload-bytes 300 --archive [--ring-days 14]

While an agent holds a journal, the write verbs (resolve, reprint to a printer, close-day,
sync) go through it; the read verbs open the journal read-only as always.

Read verbs take --format table|json|csv; tables show the journal's local time (its day rule),
JSON and CSV ISO 8601 with that offset.

Layout: this package's __init__ holds the parser and main(); cli/codes.py the exit-code
table, cli/output.py the formatting, cli/commands.py every verb, cli/demo.py `posfast demo`.
"""
from __future__ import annotations

import argparse
import os
import sys

from .. import errors

from .codes import (EX_CANTCREAT, EX_DATAERR, EX_FINDINGS, EX_INTERRUPTED,  # noqa: F401
                    EX_IOERR, EX_NOINPUT, EX_NOPERM, EX_OK, EX_PROTOCOL, EX_SOFTWARE, EX_TEMPFAIL,
                    EX_UNAVAILABLE, EX_USAGE, EX_WARNING, EXIT_CODE_MEANINGS, exit_code,
                    exit_code_epilog, exit_codes)


def _fmt(p, choices=None):
    from .output import FORMATS
    p.add_argument("--format", choices=choices or FORMATS, default="table",
                   help="table (for people, local time), json or csv (ISO 8601 times with offset)")


def build_parser() -> argparse.ArgumentParser:
    from . import commands as c
    parser = argparse.ArgumentParser(prog="posfast", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1].split("\n\nLayout:")[0]
                                     + "\n\n" + exit_code_epilog())
    parser.add_argument("--version", action="version", version="posfast " + _version(),
                        help="show the version and exit")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = sub.add_parser("demo", help="record a realistic week on several terminals and show the lookups")
    p.add_argument("--dir", help="where to create the demo journal (default: a new temp dir)")
    p.add_argument("--days", type=int, default=7, help="business days of history (default 7)")
    p.add_argument("--terminals", type=int, default=4, help="terminals in the store (default 4)")
    p.set_defaults(func=c.cmd_demo)

    p = sub.add_parser("status", help="sizes, seqs and sync backlog of a journal (exit 3 on a warning)")
    p.add_argument("journal", help="the journal file (.pfj)")
    _fmt(p)
    p.set_defaults(func=c.cmd_status)

    p = sub.add_parser("verify", help="check every record, the hash chain and the index (exit 1 on damage)")
    p.add_argument("journal", help="the journal file (.pfj)")
    p.add_argument("--repair-index", action="store_true",
                   help="open for writing so a stale index is rewritten")
    _fmt(p)
    p.set_defaults(func=c.cmd_verify)

    p = sub.add_parser("last", help="the last transaction of a terminal and its state")
    p.add_argument("journal", help="the journal file (.pfj)")
    p.add_argument("--terminal", type=int, required=True, help="terminal number")
    _fmt(p)
    p.set_defaults(func=c.cmd_last)

    p = sub.add_parser("in-doubt", help="payments begun but never finished (exit 1 if any)")
    p.add_argument("journal", help="the journal file (.pfj)")
    p.add_argument("--terminal", type=int, help="only this terminal")
    _fmt(p)
    p.set_defaults(func=c.cmd_in_doubt)

    p = sub.add_parser("resolve", help="record the host's answer for a payment in doubt")
    p.add_argument("journal", help="the journal file (.pfj)")
    p.add_argument("txn", type=int, metavar="TXN", help="the payment's txn id (from `posfast in-doubt`)")
    p.add_argument("state", choices=("approved", "declined", "reversed"),
                   help="what the host says happened to it")
    p.add_argument("--auth-code", help="the host's authorisation code (approved payments)")
    p.add_argument("--rrn", help="the host's retrieval reference number")
    p.set_defaults(func=c.cmd_resolve)

    p = sub.add_parser("show", help="one record (and its receipt)")
    p.add_argument("journal", help="the journal file (.pfj)")
    p.add_argument("seq", type=int, help="the record's seq")
    _fmt(p)
    p.set_defaults(func=c.cmd_show)

    p = sub.add_parser("query", help="records of a day / terminal / kind, with the net per currency")
    p.add_argument("journal", help="the journal file (.pfj)")
    p.add_argument("--day", help="business day, YYYY-MM-DD")
    p.add_argument("--terminal", type=int, help="terminal number")
    p.add_argument("--kind", help="sale, refund, void, reversal, print, day_close, ...")
    p.add_argument("--state", help="pending, approved, declined, ...")
    _fmt(p)
    p.set_defaults(func=c.cmd_query)

    p = sub.add_parser("reprint", help="print a copy of an earlier receipt")
    p.add_argument("journal", help="the journal file (.pfj)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--code", help="the receipt code printed on the slip, TERMINAL-NUMBER (e.g. 3-000200)")
    g.add_argument("--receipt-no", type=int, help="the receipt number (with --terminal when numbers repeat)")
    g.add_argument("--seq", type=int, help="the payment record's seq")
    p.add_argument("--terminal", type=int, help="terminal of --receipt-no")
    g2 = p.add_mutually_exclusive_group()
    g2.add_argument("--printer", help="tcp://host:9100, usb://VID:PID, serial:///dev/ttyS0?baud=115200, "
                    "cups://QUEUE, win32://NAME, bt://AA:BB:CC:DD:EE:FF or a file path")
    g2.add_argument("--out", help="write the ESC/POS bytes to this file")
    p.add_argument("--profile", default="default",
                   help="printer model (escpos-printer-db name: TM-T20II, ZJ-5870, POS-5890, Sunmi-V2, "
                   "...; default: an Epson-compatible 80 mm printer)")
    p.add_argument("--text", action="store_true", help="also show the receipt as text")
    p.add_argument("--width", type=int, help="paper width in columns: 32, 42 or 48 (default: the profile's)")
    p.add_argument("--max-copies", type=int, default=3, help="refuse past this many copies (default 3)")
    p.set_defaults(func=c.cmd_reprint)

    p = sub.add_parser("printer-status", help="ask a receipt printer for paper, cover and online status")
    p.add_argument("printer", help="tcp://host:9100, usb://VID:PID, serial:///dev/ttyS0?baud=115200, "
                   "bt://AA:BB:CC:DD:EE:FF")
    _fmt(p)
    p.set_defaults(func=c.cmd_printer_status)

    p = sub.add_parser("sync", help="push unsynced records to the back office")
    p.add_argument("journal", help="the journal file (.pfj)")
    p.add_argument("--to", required=True,
                   help="sqlite:///rel/back.db (relative), sqlite:////abs/back.db (absolute), postgresql://..., "
                        "http(s)://host:8080")
    p.add_argument("--token", help="the journal's token (visible in the process list: prefer --token-file or "
                                   "the POSFAST_SYNC_TOKEN environment variable)")
    p.add_argument("--token-file", help="file holding the journal's token")
    p.add_argument("--ca-file", help="https: trust only server certificates signed by this CA (PEM)")
    p.add_argument("--client-cert", help="https with mutual TLS: client certificate (PEM; may hold the key too)")
    p.add_argument("--client-key", help="private key of --client-cert when it is a separate file")
    p.add_argument("--create", action="store_true",
                   help="create the SQLite back office if it does not exist (else: error, so a typo cannot "
                        "send records to a stray file)")
    p.add_argument("--batch", type=int, default=1000, help="records per batch (default 1000)")
    p.add_argument("--forever", action="store_true", help="keep syncing every --interval seconds")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between syncs with --forever (default 5)")
    p.add_argument("--anchor", choices=("auto", "yes", "no"), default="auto",
                   help="start the chain at this journal's oldest record on a new back office")
    p.set_defaults(func=c.cmd_sync)

    p = sub.add_parser("serve", help="run the back-office sync server")
    c.add_serve_arguments(p)                     # aiohttp is imported only when run
    p.set_defaults(func=c.cmd_serve)

    p = sub.add_parser("agent", help="run the local service POS software in any language calls (the journal's one writer)")
    c.add_agent_arguments(p)
    p.set_defaults(func=c.cmd_agent)

    p = sub.add_parser("reconcile", help="journal vs host vs printed receipts for a day; or a whole "
                       "store's journals at head office vs one statement (exit 1 on discrepancies)")
    p.add_argument("journal", nargs="?", help="the journal file (.pfj); not with --store")
    p.add_argument("--day", required=True, help="business day, YYYY-MM-DD")
    p.add_argument("--host", help="sqlite:///back.db, postgresql://... or a statement file")
    p.add_argument("--db", help="store mode: the back office (sqlite:///back.db or postgresql://...)")
    p.add_argument("--store", help="store mode: every journal registered to this store")
    p.add_argument("--settlement", help="store mode: the statement file")
    p.add_argument("--terminal", type=int, help="only this terminal")
    p.add_argument("--format", action="append", default=[], metavar="FORMAT",
                   choices=("table", "json", "csv", "auto", "posfast", "wechat", "alipay", "unionpay",
                            "mapped", "adyen", "stripe"),
                   help="the statement's format: auto (default), posfast, wechat, alipay, unionpay, "
                   "mapped, adyen, stripe; or the report's: table (default), json, csv (give "
                   "--format twice for both, e.g. --format wechat --format json)")
    p.add_argument("--report", choices=("table", "json", "csv"), help="the report's format")
    p.add_argument("--map", help="the column map (TOML) of a --format mapped statement")
    p.add_argument("--channel", help="the payment channel the statement covers (default: its "
                   "format's, e.g. wechat; 'any': every channel)")
    p.add_argument("--fee-rate", action="append", default=[], metavar="KEY=RATE",
                   help="expected fee rate per channel or method, e.g. wechat=0.38%% card=0.60%% "
                   "(fee_mismatch); repeatable")
    p.add_argument("--file-date", help="a UnionPay file's date when its name does not carry it")
    p.add_argument("--no-receipts", action="store_true", help="skip the print (receipt) checks")
    p.add_argument("--encoding", help="text encoding of a settlement file (default utf-8, BOM "
                   "or not; e.g. gbk, gb18030 for Chinese bank exports)")
    p.add_argument("--summary", action="store_true",
                   help="counts and totals per category only, not one line per discrepancy")
    p.set_defaults(func=c.cmd_reconcile)

    p = sub.add_parser("register", help="register a journal in the back office: merchant, store, "
                       "till, terminal id (TID), device serial; or list the registry")
    p.add_argument("--db", required=True, help="the back office: sqlite:///back.db or postgresql://...")
    p.add_argument("journal_id", nargs="?", help="the journal id (UUID), or a journal file (.pfj); "
                   "without it: list the registry")
    p.add_argument("--merchant", help="merchant id (as on the acquirer's statement)")
    p.add_argument("--store", help="store name or code")
    p.add_argument("--till", help="till name")
    p.add_argument("--tid", help="terminal id on the acquirer's statement (up to 8 characters)")
    p.add_argument("--serial", help="device serial number")
    p.add_argument("--issue-token", action="store_true",
                   help="issue a sync token for JOURNAL_ID (or, with --admin, an admin token); shown once, "
                   "stored only as its SHA-256 digest; running servers accept it within seconds")
    p.add_argument("--admin", action="store_true",
                   help="with --issue-token: an admin token (admin API, /metrics, dashboard; no journal)")
    p.add_argument("--label", default="", help="a note kept with an issued token (who or what holds it)")
    p.add_argument("--token-out", metavar="FILE",
                   help="write the issued token to FILE (mode 0600; what posfast sync --token-file reads) "
                   "instead of printing it")
    p.add_argument("--revoke", metavar="TOKEN_ID|JOURNAL_ID",
                   help="revoke a token (by its id, from --list-tokens) or every token of a journal")
    p.add_argument("--list-tokens", action="store_true", help="list the tokens issued (never the tokens)")
    p.add_argument("--import-tokens", metavar="FILE",
                   help="move a tokens file (JOURNAL_ID=TOKEN lines, posfast serve --tokens-file) into "
                   "the back office: the same tokens keep working, stored hashed")
    _fmt(p)
    p.set_defaults(func=c.cmd_register)

    p = sub.add_parser("fleet", help="every till of a back office: last seen, unsynced, ring, in doubt, "
                       "last close and reconciliation; the ones needing attention first (exit 3 if any)")
    p.add_argument("--db", required=True, help="the back office: sqlite:///back.db or postgresql://...")
    p.add_argument("--store", help="only this store's tills")
    p.add_argument("--stale-hours", type=float, default=24.0,
                   help="a till not seen for longer needs attention (default 24)")
    _fmt(p)
    p.set_defaults(func=c.cmd_fleet)

    p = sub.add_parser("export", help="an auditor's export of a store: every record decoded with its links, "
                       "the day closes and a verification transcript (exit 1 when a link does not follow)")
    p.add_argument("--db", required=True, help="the back office: sqlite:///back.db or postgresql://...")
    p.add_argument("--store", required=True, help="the store (as registered)")
    p.add_argument("--from", dest="first_day", required=True, help="first business day, YYYY-MM-DD")
    p.add_argument("--to", dest="last_day", required=True, help="last business day, YYYY-MM-DD")
    p.add_argument("--format", choices=("audit-jsonl", "csv"), default="audit-jsonl",
                   help="audit-jsonl (default: one JSON object per line, the transcript included) or csv "
                   "(one row per record; the transcript on stderr)")
    p.add_argument("--out", help="write to this file (default: stdout)")
    p.set_defaults(func=c.cmd_export)

    p = sub.add_parser("close-day", help="write the Z-report (DAY_CLOSE) of a business day")
    p.add_argument("journal", help="the journal file (.pfj)")
    p.add_argument("--day", required=True, help="business day, YYYY-MM-DD")
    p.add_argument("--terminal", type=int, help="close one terminal's day (default: every terminal)")
    p.add_argument("--force", action="store_true", help="close even with payments in doubt (recorded)")
    p.add_argument("--catch-up", action="store_true",
                   help="first close, in order, the days since the last close that were skipped")
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="table (the Z-report as printed) or json")
    p.set_defaults(func=c.cmd_close_day)

    p = sub.add_parser("capacity", help="how many days of history a storage budget holds")
    p.add_argument("--budget", required=True, help="e.g. 64MB, 2GB")
    p.add_argument("--per-day", type=int, required=True, help="transactions per business day")
    p.add_argument("--payload-bytes", type=int, default=0, help="receipt payload bytes per payment (default 0)")
    p.add_argument("--slot-size", type=int, default=128, help="slot size in bytes, a multiple of 64 (default 128)")
    p.add_argument("--measure", action="store_true", help="fill a journal of that size to check")
    p.add_argument("--archive", action="store_true",
                   help="retention=archive: a ring of --ring-days plus the archive of older days, "
                        "its bytes a day measured on a real journal and archive")
    p.add_argument("--ring-days", type=int, default=14, help="with --archive: days the ring holds (default 14)")
    p.add_argument("--records-per-payment", type=int, default=2, choices=(1, 2),
                   help="with --archive: 2 for begin_payment + finish_payment (default), 1 for append")
    _fmt(p)
    p.set_defaults(func=c.cmd_capacity)
    return parser


def _version():
    from .._version import __version__
    return __version__


_READ_ONLY_VERBS = "query, last, show, status, verify, in-doubt"


def _error_line(exc) -> str:
    """One line, one "posfast: error:" prefix, whatever the message already starts with."""
    if isinstance(exc, OSError) and not isinstance(exc, errors.PosfastError) and exc.strerror:
        text = str(exc.strerror)
        if exc.filename and str(exc.filename) not in text:
            text = "%s: %s" % (exc.filename, text)
    else:
        text = str(exc)
    text = " ".join(text.split())
    while True:
        if text.startswith("[Errno"):
            text = text.split("]", 1)[-1].lstrip()
        elif text.startswith("posfast:"):
            text = text[len("posfast:"):].lstrip()
        else:
            return "posfast: error: " + text


def _quiet_broken_pipe() -> int:
    """stdout's reader went away (`posfast query ... | head`): stop quietly, exit 0."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
    return EX_OK


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)   # usage errors: argparse exits with EX_USAGE (2)
    try:
        code = args.func(args) or EX_OK
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt:
        return EX_INTERRUPTED
    except (errors.PosfastError, OSError, ValueError, ImportError) as exc:
        line = _error_line(exc)
        if isinstance(exc, PermissionError):
            journal = getattr(args, "journal", None)
            line += ("; `posfast %s` writes to %s and this user may not: run it as the journal's owner "
                     "or fix the file's permissions (%s only read, and work as they are)"
                     % (args.verb, journal, _READ_ONLY_VERBS) if journal else
                     "; check the permissions of that path")
        elif isinstance(exc, OSError) and not isinstance(exc, (errors.PosfastError, FileNotFoundError,
                                                                FileExistsError, ConnectionError,
                                                                TimeoutError)):
            line += "; nothing more was written"
        try:
            print(line, file=sys.stderr)
        except BrokenPipeError:
            pass
        return exit_code(exc)


__all__ = ["main", "build_parser", "exit_code", "exit_codes", "EXIT_CODE_MEANINGS", "EX_OK", "EX_FINDINGS",
           "EX_USAGE", "EX_WARNING", "EX_DATAERR", "EX_NOINPUT", "EX_SOFTWARE", "EX_UNAVAILABLE",
           "EX_CANTCREAT", "EX_IOERR", "EX_TEMPFAIL", "EX_PROTOCOL", "EX_NOPERM", "EX_INTERRUPTED"]
