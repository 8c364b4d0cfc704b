"""The `posfast` command: every service reachable from a shell.

    posfast demo                      a week of trading on four terminals, end to end
    posfast status JOURNAL            sizes, seqs, sync backlog
    posfast verify JOURNAL            check every record and the hash chain
    posfast last JOURNAL --terminal 3 the last transaction of a terminal (after a crash)
    posfast in-doubt JOURNAL          payments begun but never finished
    posfast show JOURNAL SEQ          one record
    posfast query JOURNAL --day 2026-11-20 --terminal 3 [--kind sale] [--format table|json|csv]
    posfast reprint JOURNAL --receipt-no N [--terminal T] [--printer tcp://host:9100 | --out FILE] [--text]
    posfast sync JOURNAL --to sqlite:///back.db | postgresql://... | http://host:8080 [--token T] [--forever]
    posfast serve --db sqlite:///back.db --port 8080 --token JOURNAL_ID=TOKEN
    posfast reconcile JOURNAL --day D --host sqlite:///back.db | postgresql://... | settlement.csv
    posfast close-day JOURNAL --day D [--terminal N] [--force]
    posfast capacity --budget 64MB --per-day 800 [--payload-bytes 300] [--measure]
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time

import numpy as np

from . import errors
from .journal import Journal
from .records import RECORD_DTYPE, Kind, Method, State, day_to_date  # noqa: F401
from .records import format_day, format_ts

_FORMATS = ("table", "json", "csv")


# ------------------------------------------------------------------ output helpers
def _enum_name(enum_cls, value):
    try:
        return enum_cls(int(value)).name.lower()
    except ValueError:
        return str(int(value))


def row_dict(row, day_rule=None) -> dict:
    """A RECORD_DTYPE row (or Record) as a JSON-friendly dict with enum names and ISO times."""
    get = row.__getitem__
    ts = int(get("ts"))
    out = {
        "seq": int(get("seq")),
        "time": format_ts(ts),         # "impossible time (ts=N)" when no calendar shows it
        "day": format_day(get("day")),
        "terminal": int(get("terminal")),
        "kind": _enum_name(Kind, get("kind")),
        "state": _enum_name(State, get("state")),
        "method": _enum_name(Method, get("method")),
        "amount": int(get("amount")),
        "currency": int(get("currency")),
        "txn_id": int(get("txn_id")),
        "ref_seq": int(get("ref_seq")),
        "receipt_no": int(get("receipt_no")),
        "operator": int(get("operator")),
        "flags": int(get("flags")),
        "pan_last4": bytes(get("pan_last4")).decode(errors="replace"),
        "auth_code": bytes(get("auth_code")).decode(errors="replace"),
        "rrn": bytes(get("rrn")).decode(errors="replace"),
        "client_ref": bytes(get("client_ref")).decode(errors="replace"),
        "ts": ts,                      # the stored value, microseconds since 1970-01-01 UTC
    }
    return out


_TABLE_COLUMNS = ("seq", "time", "terminal", "kind", "state", "method", "amount", "currency",
                  "txn_id", "receipt_no", "auth_code")


def format_rows(rows, fmt="table", columns=_TABLE_COLUMNS) -> str:
    dicts = [row_dict(r) for r in rows]
    if fmt == "json":
        return json.dumps(dicts, ensure_ascii=False, indent=1)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(dicts[0]) if dicts else list(columns))
        writer.writeheader()
        writer.writerows(dicts)
        return buf.getvalue().rstrip("\n")
    return table([{c: d[c] for c in columns} for d in dicts], columns)


def table(dicts, columns) -> str:
    cells = [[str(c) for c in columns]] + [[str(d.get(c, "")) for c in columns] for d in dicts]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(v.rjust(w) if v.lstrip("-").isdigit() else v.ljust(w)
                       for v, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def money(amount: int, currency: int = 156) -> str:
    try:
        from .receipt import format_amount
        return format_amount(int(amount), int(currency))
    except Exception:   # pragma: no cover - receipt module missing
        return "%d" % amount


def _open(path, readonly=True):
    return Journal.open(path, readonly=readonly)


# ------------------------------------------------------------------ verbs
def cmd_status(args):
    with _open(args.journal) as j:
        status = j.status()
        try:
            from .sync import sync_status
            extra = sync_status(j)
            status.update({"sync_" + k: extra[k] for k in
                           ("warning", "state", "reasons", "oldest_unsynced_age_s",
                            "unsynced_fraction", "lost_unsynced") if k in extra})
        except Exception:
            pass
    if args.format == "json":
        print(json.dumps(status, indent=1, default=str))
        return 0
    for key, value in status.items():
        print("%-24s %s" % (key, value))
    if status["unsynced"] and status["fill"] > 0.8 and status["retention"] != "overwrite":
        print("\nwarning: the ring is %.0f%% full and %d records are not yet synced: run "
              "`posfast sync %s --to ...` before appends are refused" % (
                  100 * status["fill"], status["unsynced"], args.journal))
        return 2
    return 0


def cmd_verify(args):
    with _open(args.journal, readonly=not args.repair_index) as j:
        started = time.perf_counter()
        report = j.verify()
        took = time.perf_counter() - started
    print(report)
    print("verified in %.1f ms" % (took * 1000))
    if not report.ok:
        print("next step: restore the damaged records from the back office (posfast sync keeps a "
              "copy of every synced record) and keep this file for investigation")
    return 0 if report.ok else 1


def cmd_last(args):
    with _open(args.journal) as j:
        info = j.last_transaction(args.terminal)
    if info is None:
        print("terminal %d has no payment in %s" % (args.terminal, args.journal))
        return 1
    if args.format == "json":
        info = dict(info, client_ref=info["client_ref"].decode(errors="replace"))
        print(json.dumps(info, ensure_ascii=False, indent=1))
        return 0
    print(_last_text(info))
    if info.get("damaged_newer"):
        print("WARNING: newer record(s) %s of this journal are damaged and may belong to terminal %d: "
              "this may not be its last transaction. Ask the host, and run `posfast verify`."
              % (", ".join(map(str, info["damaged_newer"][:10])), info["terminal"]))
        return 4
    return 0


def _last_text(info) -> str:
    when = format_ts(info["ts"], fmt="%Y-%m-%d %H:%M:%S UTC")
    verdict = {"approved": "APPROVED", "declined": "DECLINED", "failed": "FAILED",
               "pending": "IN DOUBT: the host's answer was never recorded; ask the host, then "
                          "resolve it (approved/declined) or reverse it",
               }.get(info["state"], info["state"].upper())
    return ("terminal %d, txn %d (%s, receipt %d) at %s: %s %s %s\n  state: %s%s\n  receipt %s"
            % (info["terminal"], info["txn_id"], info["kind"], info["receipt_no"], when,
               info["method"], money(info["amount"], info["currency"]),
               "card *%s" % info["pan_last4"] if info["pan_last4"] else "",
               verdict, ", auth %s" % info["auth_code"] if info["auth_code"] else "",
               "printed" if info["receipt_printed"] else
               "NOT printed (%d attempt(s))" % info["print_attempts"]))


def cmd_in_doubt(args):
    with _open(args.journal) as j:
        seqs = [rec.seq for rec in j.in_doubt(terminal=args.terminal)]
        rows = j.query(terminal=args.terminal) if seqs else np.zeros(0, RECORD_DTYPE)
        rows = rows[np.isin(rows["seq"], seqs)]
    if not len(rows):
        print("no payment in doubt in %s" % args.journal)
        return 0
    print(format_rows(rows, args.format))
    if args.format == "table":
        print("\n%d payment(s) in doubt: ask the host for each, then resolve or reverse it" % len(rows))
    return 3


def cmd_show(args):
    with _open(args.journal) as j:
        try:
            rec = j.get(args.seq)
        except KeyError:
            print("posfast: seq %d is not in %s (live records are %d..%d)"
                  % (args.seq, args.journal, j.oldest_seq, j.head_seq), file=sys.stderr)
            return 1
    info = row_dict(rec)
    info["payload_bytes"] = len(rec.payload)
    info["link"] = rec.link.hex()
    if args.format == "json":
        print(json.dumps(info, ensure_ascii=False, indent=1))
    else:
        for key, value in info.items():
            print("%-12s %s" % (key, value))
        if rec.payload:
            try:
                from .receipt import Receipt, render_text
                print()
                print(render_text(Receipt.from_payload(rec.payload), width=42))
            except Exception:
                pass
    return 0


def cmd_query(args):
    with _open(args.journal) as j:
        started = time.perf_counter()
        rows = j.query(day=args.day, terminal=args.terminal, kind=args.kind, state=args.state)
        took = time.perf_counter() - started
    print(format_rows(rows, args.format))
    if args.format == "table":
        print("\n%d record(s), total %s, found in %.0f µs" % (
            len(rows), money(int(rows["amount"].sum())) if len(rows) else 0, took * 1e6))
    return 0


def _printer_from(spec):
    from .printing import FilePrinter, TcpPrinter
    if spec.startswith("tcp://"):
        address = spec[6:].rstrip("/")
        if address.startswith("["):                       # tcp://[::1]:9100
            host, _, rest = address[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else rest
        else:
            host, _, port = address.rpartition(":") if ":" in address else (address, "", "")
        if not port.isdigit() or not 1 <= int(port) <= 65535 or not host:
            raise errors.InvalidArgument(
                "--printer %s: give tcp://HOST:PORT with a port from 1 to 65535, e.g. "
                "tcp://192.168.1.50:9100 (a receipt printer's raw port is usually 9100)" % spec)
        return TcpPrinter(host, int(port))
    if spec.startswith("file://"):
        return FilePrinter(spec[7:])
    return FilePrinter(spec)


def cmd_reprint(args):
    from .printing import reprint
    printer = None
    if args.printer:
        printer = _printer_from(args.printer)
    elif args.out:
        from .printing import FilePrinter
        printer = FilePrinter(args.out)
    with Journal.open(args.journal, readonly=printer is None) as j:
        result = reprint(j, seq=args.seq, receipt_no=args.receipt_no, terminal=args.terminal,
                         printer=printer, max_copies=args.max_copies, width=args.width,
                         text=args.text or printer is None)
    if getattr(result, "text", None):
        print(result.text)
    if printer is not None:
        print("reprint copy %s: %s%s" % (getattr(result, "copy", "?"), result.outcome,
                                         " (%s)" % result.error if result.error else ""))
        return 0 if result.outcome == "ok" else 4
    return 0


def _sync_token(args):
    """The journal's token: --token-file, else --token (visible in `ps`), else $POSFAST_SYNC_TOKEN."""
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as fh:
                token = fh.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise errors.PosfastError("cannot read --token-file %s: %s" % (args.token_file, exc)) from None
        if not token:
            raise errors.PosfastError("--token-file %s is empty" % args.token_file)
        return token
    return args.token or os.environ.get("POSFAST_SYNC_TOKEN")


def cmd_sync(args):
    from .sync import SyncBadAck, SyncConfigError, SyncRefused, SyncUnavailable, Syncer, target_from_url
    if args.batch < 1:
        raise SyncConfigError("--batch %d: a batch is at least 1 record (default 1000)" % args.batch)
    if not args.interval > 0:
        raise SyncConfigError("--interval must be more than 0 seconds")
    anchor = {"auto": "auto", "yes": True, "no": False}[args.anchor]
    options = {}
    scheme = args.to.split(":", 1)[0].lower()
    if args.ca_file or args.client_cert:
        if scheme != "https":
            raise SyncConfigError("--ca-file / --client-cert need an https:// --to URL")
        if args.ca_file:
            options["ca_file"] = args.ca_file
        if args.client_cert:
            options["client_cert"] = (args.client_cert, args.client_key) if args.client_key else args.client_cert
    elif args.client_key:
        raise SyncConfigError("--client-key goes with --client-cert")
    if args.create:
        if scheme != "sqlite":
            raise SyncConfigError("--create is for a SQLite back office (sqlite:///FILE)")
        options["create"] = True
    with Journal.open(args.journal) as j:             # the journal first: no back office for a wrong path
        target = target_from_url(args.to, token=_sync_token(args), **options)
        try:
            return _sync(args, j, target, anchor, Syncer)
        except SyncRefused as exc:
            print("posfast: error: the back office refused the batch (%s): %s; watermark stays at %d"
                  % (exc.reason, exc.detail, j.sync_watermark), file=sys.stderr)
            return 3
        except SyncBadAck as exc:
            print("posfast: error: %s; watermark stays at %d" % (exc, j.sync_watermark), file=sys.stderr)
            return 3
        except SyncUnavailable as exc:
            print("posfast: error: back office unavailable: %s; nothing past seq %d was acknowledged, the records "
                  "stay queued: try again later" % (exc, j.sync_watermark), file=sys.stderr)
            return 75
        except KeyboardInterrupt:
            print("\nposfast: interrupted: the back office has acknowledged journal %s up to seq %d (watermark); "
                  "%d record(s) still to sync: run the same command again to continue"
                  % (j.journal_id, j.sync_watermark, max(0, j.head_seq - j.sync_watermark)), file=sys.stderr)
            return 130
        finally:
            target.close()


def _sync(args, j, target, anchor, Syncer):
    syncer = Syncer(j, target, batch=args.batch, anchor=anchor)
    if args.forever:
        print("syncing %s to %s every %.0f s (Ctrl-C to stop)" % (args.journal, args.to, args.interval))
        syncer.run_forever(interval=args.interval,
                           on_sync=lambda r: r.sent and print("synced %d, watermark %d" % (r.sent, r.watermark)),
                           on_error=lambda e: print("sync failed: %s" % e, file=sys.stderr))
        if getattr(syncer.last_error, "permanent", False):
            raise syncer.last_error        # a batch that can never be accepted: stop, say so, exit 3
        return 0
    backlog = j.head_seq - j.sync_watermark
    started = time.perf_counter()
    total = 0
    chunk = max(args.batch * 10, 10_000)
    while True:
        result = syncer.run_once(max_records=chunk)
        total += result.sent
        if backlog > chunk:
            _progress(total, backlog, started)
        if result.sent == 0 or j.head_seq <= j.sync_watermark:
            break
    if backlog > chunk:
        print(file=sys.stderr)
    took = time.perf_counter() - started
    print("synced %d record(s) to %s in %.2f s; watermark now %d" % (total, args.to, took, j.sync_watermark))
    return 0


def _progress(done, total, started):
    frac = min(1.0, done / total) if total else 1.0
    bar = "#" * int(30 * frac)
    rate = done / max(time.perf_counter() - started, 1e-9)
    print("\r[%-30s] %d/%d records  %.0f rec/s" % (bar, done, total, rate), end="", file=sys.stderr,
          flush=True)


def cmd_serve(args):
    import logging
    from . import server
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return server.run_from_args(args)


def cmd_reconcile(args):
    from . import reconcile
    return reconcile.cli_reconcile(args)


def cmd_close_day(args):
    from . import dayclose
    return dayclose.cli_close_day(args)


def cmd_capacity(args):
    from . import retention
    return retention.cli_capacity(args)


def cmd_demo(args):
    from .demo import run_demo
    return run_demo(args.dir, days=args.days, terminals=args.terminals)


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posfast", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--version", action="version", version="posfast " + _version())
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("demo", help="record a realistic week on several terminals and show the lookups")
    p.add_argument("--dir", help="where to create the demo journal (default: a new temp dir)")
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--terminals", type=int, default=4)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("status", help="sizes, seqs and sync backlog of a journal")
    p.add_argument("journal")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("verify", help="check every record, the hash chain and the index")
    p.add_argument("journal")
    p.add_argument("--repair-index", action="store_true",
                   help="open for writing so a stale index is rewritten")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("last", help="the last transaction of a terminal and its state")
    p.add_argument("journal")
    p.add_argument("--terminal", type=int, required=True)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_last)

    p = sub.add_parser("in-doubt", help="payments begun but never finished (exit 3 if any)")
    p.add_argument("journal")
    p.add_argument("--terminal", type=int)
    p.add_argument("--format", choices=_FORMATS, default="table")
    p.set_defaults(func=cmd_in_doubt)

    p = sub.add_parser("show", help="one record (and its receipt)")
    p.add_argument("journal")
    p.add_argument("seq", type=int)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("query", help="records of a day / terminal / kind")
    p.add_argument("journal")
    p.add_argument("--day")
    p.add_argument("--terminal", type=int)
    p.add_argument("--kind")
    p.add_argument("--state")
    p.add_argument("--format", choices=_FORMATS, default="table")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("reprint", help="print a copy of an earlier receipt")
    p.add_argument("journal")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--receipt-no", type=int)
    g.add_argument("--seq", type=int)
    p.add_argument("--terminal", type=int)
    g2 = p.add_mutually_exclusive_group()
    g2.add_argument("--printer", help="tcp://host:9100 or a file path")
    g2.add_argument("--out", help="write the ESC/POS bytes to this file")
    p.add_argument("--text", action="store_true", help="also show the receipt as text")
    p.add_argument("--width", type=int, default=42)
    p.add_argument("--max-copies", type=int, default=3)
    p.set_defaults(func=cmd_reprint)

    p = sub.add_parser("sync", help="push unsynced records to the back office")
    p.add_argument("journal")
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
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--forever", action="store_true")
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--anchor", choices=("auto", "yes", "no"), default="auto",
                   help="start the chain at this journal's oldest record on a new back office")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("serve", help="run the back-office sync server")
    from .server import add_arguments as serve_arguments     # aiohttp is imported only when run
    serve_arguments(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("reconcile", help="journal vs host vs printed receipts for a day (exit 1 on discrepancies)")
    p.add_argument("journal")
    p.add_argument("--day", required=True)
    p.add_argument("--host", required=True, help="sqlite:///back.db, postgresql://... or settlement.csv")
    p.add_argument("--terminal", type=int)
    p.add_argument("--format", choices=_FORMATS, default="table")
    p.add_argument("--encoding", help="text encoding of a settlement file (default utf-8, BOM "
                   "or not; e.g. gbk, gb18030 for Chinese bank exports)")
    p.add_argument("--summary", action="store_true",
                   help="counts and totals per category only, not one line per discrepancy")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("close-day", help="write the Z-report (DAY_CLOSE) of a business day")
    p.add_argument("journal")
    p.add_argument("--day", required=True)
    p.add_argument("--terminal", type=int)
    p.add_argument("--force", action="store_true", help="close even with payments in doubt (recorded)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_close_day)

    p = sub.add_parser("capacity", help="how many days of history a storage budget holds")
    p.add_argument("--budget", required=True, help="e.g. 64MB, 2GB")
    p.add_argument("--per-day", type=int, required=True, help="transactions per business day")
    p.add_argument("--payload-bytes", type=int, default=0)
    p.add_argument("--slot-size", type=int, default=128)
    p.add_argument("--measure", action="store_true", help="fill a journal of that size to check")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_capacity)
    return parser


def _version():
    from . import __version__
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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except errors.PosfastError as exc:
        print(_error_line(exc), file=sys.stderr)
        return 2
    except (FileNotFoundError, FileExistsError) as exc:
        print(_error_line(exc), file=sys.stderr)
        return 2
    except PermissionError as exc:
        journal = getattr(args, "journal", None)
        print(_error_line(exc) + (
            "; `posfast %s` writes to %s and this user may not: run it as the journal's owner "
            "or fix the file's permissions (%s only read, and work as they are)"
            % (args.verb, journal, _READ_ONLY_VERBS) if journal else
            "; check the permissions of that path"), file=sys.stderr)
        return 2
    except OSError as exc:
        print(_error_line(exc) + "; nothing more was written", file=sys.stderr)
        return 2
    except ValueError as exc:         # a value no verb could use (a width, a count)
        print(_error_line(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
