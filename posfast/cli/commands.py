"""Every verb of the `posfast` command: ``cmd_<verb>(args) -> exit code``.

Each verb returns a code of the table in :mod:`posfast.cli` (EX_OK, EX_FINDINGS, EX_WARNING,
...); errors it raises are mapped to their code by :func:`posfast.cli.main`.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from .. import errors
from ..journal import Journal
from ..records import PAYMENT_KINDS, RECORD_DTYPE, Kind, State, now_us
from .codes import EX_FINDINGS, EX_NOINPUT, EX_OK, EX_UNAVAILABLE, EX_WARNING, exit_code
from .output import (FORMATS, Progress, age, format_dicts, format_mapping, format_rows, journal_tz,
                     local_time, money, money_with_code, row_dict)


def _open(path, readonly=True):
    return Journal.open(path, readonly=readonly)


def _open_writer_or_agent(path):
    """(journal opened for writing, None), or (None, the agent's client) when a running agent
    holds the journal (the write verbs then go through it instead of failing JournalLocked)."""
    try:
        return Journal.open(path, readonly=False), None
    except errors.JournalLocked:
        from ..agent import find_agent
        agent = find_agent(path)
        if agent is None:
            raise
        return None, agent


def _print(text):
    if text:
        print(text)


# ------------------------------------------------------------------ status, verify
def cmd_status(args):
    with _open(args.journal) as j:
        status = j.status()
        tz = journal_tz(j.day_rule)
        try:
            from ..sync import sync_status
            extra = sync_status(j)
            status.update({"sync_" + k: extra[k] for k in
                           ("warning", "state", "reasons", "oldest_unsynced_age_s",
                            "unsynced_fraction", "lost_unsynced") if k in extra})
        except Exception:
            pass
    ts = status.get("oldest_unsynced_ts")
    age_s = status.get("sync_oldest_unsynced_age_s")
    if age_s is None and ts is not None:
        age_s = (now_us() - int(ts)) / 1e6
    status["oldest_unsynced_time"] = None if ts is None else local_time(ts, tz, human=False)
    status["oldest_unsynced_age"] = None if ts is None else age(age_s)
    filling = bool(status["unsynced"] and status["fill"] > 0.8 and status["retention"] != "overwrite")
    code = EX_WARNING if filling or status.get("sync_warning") else EX_OK
    if args.format != "table":
        print(format_mapping(status, args.format))
        return code
    shown = {}
    for key, value in status.items():
        if key in ("oldest_unsynced_time", "oldest_unsynced_age", "sync_oldest_unsynced_age_s"):
            continue
        if key == "oldest_unsynced_ts":
            key, value = "oldest_unsynced", ("-" if ts is None else "%s (%s)" % (
                local_time(ts, tz), status["oldest_unsynced_age"]))
        elif key == "fill":
            value = "%.1f%%" % (100 * value)
        shown[key] = value
    print(format_mapping(status, "table", shown))
    if filling:
        print("\nwarning: the ring is %.0f%% full and %d records are not yet synced: run "
              "`posfast sync %s --to ...` before appends are refused" % (
                  100 * status["fill"], status["unsynced"], args.journal))
    elif status.get("sync_warning"):
        print("\nwarning: sync is %s (%s): run `posfast sync %s --to ...`" % (
            status.get("sync_state"), ", ".join(map(str, status.get("sync_reasons") or ())),
            args.journal))
    return code


_PROBLEM_FIELDS = ("seq", "slot", "code", "cause")


def cmd_verify(args):
    with _open(args.journal, readonly=not args.repair_index) as j:
        started = time.perf_counter()
        report = j.verify()
        took = time.perf_counter() - started
    problems = [{"seq": p.seq, "slot": p.slot, "code": p.code, "cause": p.cause} for p in report.problems]
    if args.format == "json":
        print(json.dumps({"path": report.path, "ok": report.ok, "checked": report.checked,
                          "oldest_seq": report.oldest_seq, "head_seq": report.head_seq,
                          "problems": problems, "torn": [s for s, _ in report.torn],
                          "seconds": round(took, 6)}, ensure_ascii=False, indent=1, default=str))
    elif args.format == "csv":
        print(format_dicts(problems, "csv", _PROBLEM_FIELDS))
    else:
        print(report)
        print("verified in %.1f ms" % (took * 1000))
        if not report.ok:
            print("next step: restore the damaged records from the back office (posfast sync keeps a "
                  "copy of every synced record) and keep this file for investigation")
    return EX_OK if report.ok else EX_FINDINGS


# ------------------------------------------------------------------ lookups
_LAST_FIELDS = ("terminal", "txn_id", "seq", "time", "kind", "state", "method", "amount", "currency",
                "receipt_no", "auth_code", "rrn", "pan_last4", "client_ref", "in_doubt",
                "receipt_printed", "print_attempts", "damaged_newer", "ts")


def cmd_last(args):
    with _open(args.journal) as j:
        info = j.last_transaction(args.terminal)
        tz = journal_tz(j.day_rule)
    if info is None:
        if args.format == "table":
            print("terminal %d has no payment in %s" % (args.terminal, args.journal))
        else:
            print(format_dicts([], args.format, _LAST_FIELDS))
        return EX_NOINPUT
    damaged = bool(info.get("damaged_newer"))
    code = EX_WARNING if damaged else EX_OK
    if args.format != "table":
        info = dict(info, client_ref=info["client_ref"].decode(errors="replace"))
        info["time"] = local_time(info["ts"], tz, human=False)
        if args.format == "json":
            print(json.dumps(info, ensure_ascii=False, indent=1, default=str))
        else:
            print(format_dicts([info], "csv", _LAST_FIELDS))
        return code
    print(_last_text(info, tz))
    if damaged:
        print("WARNING: newer record(s) %s of this journal are damaged and may belong to terminal %d: "
              "this may not be its last transaction. Ask the host, and run `posfast verify`."
              % (", ".join(map(str, info["damaged_newer"][:10])), info["terminal"]))
    return code


def _last_text(info, tz=None) -> str:
    when = local_time(info["ts"], tz)
    verdict = {"approved": "APPROVED", "declined": "DECLINED", "failed": "FAILED",
               "pending": "IN DOUBT: the host's answer was never recorded; ask the host, then "
                          "`posfast resolve JOURNAL %d approved|declined|reversed`" % info["txn_id"],
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
        tz = journal_tz(j.day_rule)
    if not len(rows) and args.format == "table":
        print("no payment in doubt in %s" % args.journal)
        return EX_OK
    print(format_rows(rows, args.format, tz=tz))
    if args.format == "table":
        print("\n%d payment(s) in doubt: ask the host for each, then `posfast resolve %s TXN "
              "approved|declined|reversed`" % (len(rows), args.journal))
    return EX_FINDINGS if len(rows) else EX_OK


def cmd_show(args):
    with _open(args.journal) as j:
        tz = journal_tz(j.day_rule)
        try:
            rec = j.get(args.seq)
        except KeyError:
            print("posfast: error: seq %d is not in %s (live records are %d..%d)"
                  % (args.seq, args.journal, j.oldest_seq, j.head_seq), file=sys.stderr)
            return EX_NOINPUT
        finals = None
        if int(rec.kind) == Kind.PRINT:   # the record that finalised this print, if any
            prints = j.query(kind=Kind.PRINT)
            finals = prints[prints["ref_seq"] == rec.seq]
    info = row_dict(rec, tz, human=args.format == "table")
    info["payload_bytes"] = len(rec.payload)
    info["link"] = rec.link.hex()
    if args.format != "table":
        print(format_mapping(info, args.format))
        return EX_OK
    print(format_mapping(info, "table"))
    if rec.payload and int(rec.kind) == Kind.PRINT:
        print()
        print(_print_note_text(rec))
        if finals is not None and len(finals):
            final = finals[-1]
            print("%-17s seq %d: %s (show it for the printer's answer)"
                  % ("finalised by", int(final["seq"]), State(int(final["state"])).name))
        elif finals is not None and int(rec.state) == State.UNKNOWN:
            print("%-17s never: posfast stopped while printing; the slip may be on paper, "
                  "so the next print is a copy" % "finalised")
    elif rec.payload:
        try:
            from ..receipt import Receipt, render_text
            print()
            print(render_text(Receipt.from_payload(rec.payload), width=42))
        except Exception:
            pass
    return EX_OK


def _print_note_text(rec) -> str:
    """A PRINT record's payload for people: copy, printer, its answer (error, status)."""
    try:
        note = json.loads(rec.payload)
    except ValueError:
        return "payload: %r" % bytes(rec.payload[:80])
    if not isinstance(note, dict):
        return "payload: %r" % (note,)
    lines = []
    for key, label in (("copy", "copy"), ("z", "Z no."), ("printer", "printer"), ("status", "printer reported"),
                       ("error", "reason")):
        if key in note:
            value = note[key]
            lines.append("%-17s %s" % (label, ", ".join(value) if isinstance(value, list) else value))
    return "\n".join(lines)


def net_by_currency(payments) -> dict:
    """{currency: net} of a ``Journal.payments()`` array (approved payments, signed)."""
    out = {}
    for currency in np.unique(payments["currency"]):
        out[int(currency)] = int(payments["net"][payments["currency"] == currency].sum())
    return out


def cmd_query(args):
    with _open(args.journal) as j:
        started = time.perf_counter()
        rows = j.query(day=args.day, terminal=args.terminal, kind=args.kind, state=args.state)
        took = time.perf_counter() - started
        tz = journal_tz(j.day_rule)
        pays = None
        if args.format == "table" and len(rows) and np.isin(rows["kind"], list(map(int, PAYMENT_KINDS))).any():
            pays = j.payments(day=args.day, terminal=args.terminal)
            pays = pays[np.isin(pays["txn_id"], rows["txn_id"])]
    print(format_rows(rows, args.format, tz=tz))
    if args.format == "table":
        print("\n" + _query_footer(rows, pays, took))
    return EX_OK


def _query_footer(rows, pays, took) -> str:
    text = "%d record(s)" % len(rows)
    if pays is not None and len(pays):
        nets = net_by_currency(pays)
        settled = int((pays["state"] == State.APPROVED).sum())
        text += ", %d payment(s) (%d approved): net %s" % (
            len(pays), settled, ", ".join(money_with_code(v, c) for c, v in sorted(nets.items())))
    return text + ", found in %.0f µs" % (took * 1e6)


# ------------------------------------------------------------------ payments
def cmd_resolve(args):
    fields = {}
    if args.auth_code is not None:
        fields["auth_code"] = args.auth_code
    if args.rrn is not None:
        fields["rrn"] = args.rrn
    journal, agent = _open_writer_or_agent(args.journal)
    if agent is not None:
        with agent:
            seq = agent.request("POST", "/v1/payments/%d/resolve" % args.txn, dict(fields, state=args.state),
                                conflict=errors.PaymentError)["seq"]
            current = agent.request("GET", "/v1/payments/%d" % args.txn, conflict=errors.PaymentError)
        amount, currency, auth = current["amount"], current["currency"], current["auth_code"]
    else:
        with journal as j:
            seq = j.resolve(args.txn, args.state, **fields)
            record = j.payment(args.txn)
        amount, currency = record.amount, record.currency
        auth = record.auth_code.decode(errors="replace")
    print("payment txn %d resolved as %s (seq %d, %s %s)%s" % (
        args.txn, args.state.upper(), seq, money_with_code(amount, currency),
        "auth %s" % auth if auth else "no auth code", _via(agent)))
    return EX_OK


def _via(agent) -> str:
    return " through the agent on %s" % agent.describe() if agent is not None else ""


# ------------------------------------------------------------------ printing
def _printer_from(spec):
    """--printer: tcp://, usb://, serial://, cups://, win32://, bt:// or a file
    (`posfast.printing.open_printer`)."""
    from ..printing import open_printer
    return open_printer(spec, what="--printer")


def parse_receipt_code(code):
    """``"3-000200"`` (terminal, dash, receipt number, as printed on the slip and in its QR
    code) -> ``(3, 200)``; ``"000200"`` (a receipt without a terminal) -> ``(None, 200)``
    (`posfast.payments.parse_receipt_code`, with the command's error)."""
    from ..payments import parse_receipt_code as parse
    try:
        terminal, number = parse(code)
    except errors.InvalidRecord:
        raise errors.InvalidArgument(
            "--code %r: give the receipt code printed on the slip, TERMINAL-NUMBER such as 3-000200 "
            "(or just the number)" % code) from None
    return (terminal if "-" in str(code) else None), number


def cmd_reprint(args):
    from ..printing import reprint
    receipt_no, terminal = args.receipt_no, args.terminal
    if args.code is not None:
        code_terminal, receipt_no = parse_receipt_code(args.code)
        if code_terminal is not None and terminal is not None and terminal != code_terminal:
            raise errors.InvalidArgument("--code %s is a receipt of terminal %d, not --terminal %d"
                                         % (args.code, code_terminal, terminal))
        terminal = code_terminal if code_terminal is not None else terminal
    printer = None
    if args.printer:
        printer = _printer_from(args.printer)
    elif args.out:
        from ..printing import FilePrinter
        printer = FilePrinter(args.out)
    journal, agent = (Journal.open(args.journal, readonly=True), None) if printer is None else \
        _open_writer_or_agent(args.journal)
    if agent is not None:
        result = _reprint_through(agent, args, receipt_no, terminal)
    else:
        with journal as j:
            result = reprint(j, seq=args.seq, receipt_no=receipt_no, terminal=terminal,
                             printer=printer, max_copies=args.max_copies, width=args.width,
                             text=args.text or printer is None, profile=args.profile)
    if getattr(result, "text", None):
        print(result.text)
    if printer is not None:
        print("reprint copy %s: %s%s%s" % (getattr(result, "copy", "?"), result.outcome,
                                           " (%s)" % result.error if result.error else "", _via(agent)))
        return EX_OK if result.outcome == "ok" else EX_UNAVAILABLE
    return EX_OK


def _reprint_through(agent, args, receipt_no, terminal):
    """`reprint` by the agent that holds the journal: it prints to the same --printer / --out
    (a file path made absolute: the agent runs elsewhere) and journals the copy."""
    from types import SimpleNamespace
    spec = args.printer or args.out
    if "://" not in spec:
        spec = os.path.abspath(spec)
    body = {"printer": spec, "max_copies": args.max_copies, "profile": args.profile,
            "text": bool(args.text)}
    if args.width is not None:
        body["width"] = args.width
    if args.seq is not None:
        body["seq"] = args.seq
    else:
        body["receipt_no"] = receipt_no
        if terminal is not None:
            body["terminal"] = terminal
    with agent:
        doc = agent.request("POST", "/v1/receipts/reprint", body, conflict=errors.ReprintRefused)
    return SimpleNamespace(**doc)


def cmd_printer_status(args):
    printer = _printer_from(args.printer)
    status = printer.status()
    info = {"printer": printer.describe(), "answered": status is not None,
            "ready": bool(status and status.ready),
            "problems": ", ".join(status.problems) if status else ""}
    if args.format != "table":
        print(format_mapping(info, args.format))
    elif status is None:
        print("%s gave no status: it is off, unreachable, or does not answer DLE EOT" % info["printer"])
    else:
        print("%s: %s" % (info["printer"], "ready" if status.ready else "NOT ready")
              + (" (%s)" % info["problems"] if status.problems else ""))
    return EX_OK if info["ready"] else EX_UNAVAILABLE


# ------------------------------------------------------------------ sync, serve
def _sync_token(args):
    """The journal's token: --token-file, else --token (visible in `ps`), else $POSFAST_SYNC_TOKEN."""
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as fh:
                token = fh.read().strip()
        except FileNotFoundError:
            raise FileNotFoundError("cannot read --token-file %s: no such file" % args.token_file) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise errors.InvalidArgument("cannot read --token-file %s: %s" % (args.token_file, exc)) from None
        if not token:
            raise errors.InvalidArgument("--token-file %s is empty" % args.token_file)
        return token
    return args.token or os.environ.get("POSFAST_SYNC_TOKEN")


def cmd_sync(args):
    from ..sync import SyncBadAck, SyncConfigError, SyncRefused, SyncUnavailable, Syncer, target_from_url
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
    journal, agent = _open_writer_or_agent(args.journal)   # the journal first: no back office for a wrong path
    if agent is not None:
        return _sync_through(agent, args, options)
    with journal as j:
        target = target_from_url(args.to, token=_sync_token(args), **options)
        try:
            return _sync(args, j, target, anchor, Syncer)
        except SyncRefused as exc:
            print("posfast: error: the back office refused the batch (%s): %s; watermark stays at %d"
                  % (exc.reason, exc.detail, j.sync_watermark), file=sys.stderr)
            return exit_code(exc)
        except SyncBadAck as exc:
            print("posfast: error: %s; watermark stays at %d" % (exc, j.sync_watermark), file=sys.stderr)
            return exit_code(exc)
        except SyncUnavailable as exc:
            print("posfast: error: back office unavailable: %s; nothing past seq %d was acknowledged, the records "
                  "stay queued: try again later" % (exc, j.sync_watermark), file=sys.stderr)
            return exit_code(exc)
        except KeyboardInterrupt as exc:
            print("\nposfast: interrupted: the back office has acknowledged journal %s up to seq %d (watermark); "
                  "%d record(s) still to sync: run the same command again to continue"
                  % (j.journal_id, j.sync_watermark, max(0, j.head_seq - j.sync_watermark)), file=sys.stderr)
            return exit_code(exc)
        finally:
            target.close()


def _sync_through(agent, args, options):
    """`sync` by the agent that holds the journal: one round to --to, now."""
    if args.forever:
        raise errors.InvalidArgument("an agent holds %s and syncs it in the background: give it --sync-to %s "
                                     "instead of --forever (or POST /v1/sync to sync now)" % (args.journal, args.to))
    if set(options) - {"create"} or args.anchor != "auto":
        raise errors.InvalidArgument("an agent holds %s: --ca-file, --client-cert and --anchor cannot go "
                                     "through it; sync with the agent's --sync-to" % args.journal)
    from ..sync import SyncUnavailable
    to = args.to
    if to.lower().startswith("sqlite:///") and not to[len("sqlite:///"):].startswith("/"):
        # relative to this shell's directory, not the agent's
        to = "sqlite:///" + os.path.abspath(to[len("sqlite:///"):])
    body = {"to": to, "batch": args.batch, **options}
    token = _sync_token(args)
    if token:
        body["token"] = token
    started = time.perf_counter()
    with agent:
        doc = agent.request("POST", "/v1/sync", body, conflict=errors.PosfastError, unavailable=SyncUnavailable)
    sent = sum(r["sent"] for r in doc["results"])
    print("synced %d record(s) to %s in %.2f s; watermark now %d%s" % (
        sent, args.to, time.perf_counter() - started, doc["sync_watermark"], _via(agent)))
    return EX_OK


def _sync(args, j, target, anchor, Syncer):
    syncer = Syncer(j, target, batch=args.batch, anchor=anchor)
    if args.forever:
        print("syncing %s to %s every %.0f s (Ctrl-C to stop)" % (args.journal, args.to, args.interval))
        syncer.run_forever(interval=args.interval,
                           on_sync=lambda r: r.sent and print("synced %d, watermark %d" % (r.sent, r.watermark)),
                           on_error=lambda e: print("sync failed: %s" % e, file=sys.stderr))
        if getattr(syncer.last_error, "permanent", False):
            raise syncer.last_error        # a batch that can never be accepted: stop, say so
        return EX_OK
    backlog = j.head_seq - j.sync_watermark
    started = time.perf_counter()
    total = 0
    chunk = max(args.batch * 10, 10_000)
    bar = Progress(backlog) if backlog > chunk else None
    while True:
        result = syncer.run_once(max_records=chunk)
        total += result.sent
        if bar is not None:
            bar.update(total)
        if result.sent == 0 or j.head_seq <= j.sync_watermark:
            break
    if bar is not None:
        bar.finish()
    took = time.perf_counter() - started
    print("synced %d record(s) to %s in %.2f s; watermark now %d" % (total, args.to, took, j.sync_watermark))
    return EX_OK


def add_serve_arguments(parser) -> None:
    """The options of ``posfast serve``."""
    from ..sync import server
    parser.add_argument("--db", required=True,
                        help="back-office database: sqlite:///rel/back.db (relative), sqlite:////abs/back.db "
                             "(absolute) or postgresql://...")
    parser.add_argument("--create", action="store_true",
                        help="create the SQLite back office if it does not exist (else refuse to start)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--tokens-file", help="file of JOURNAL_ID=TOKEN lines (preferred: keeps tokens out of "
                                              "the process list)")
    parser.add_argument("--token", action="append", default=[], metavar="JOURNAL_ID=TOKEN",
                        help="a journal's token (repeatable; visible in the process list: prefer --tokens-file)")
    parser.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate (PEM, chain first)")
    parser.add_argument("--tls-key", metavar="FILE", help="private key of --tls-cert (PEM)")
    parser.add_argument("--client-ca", metavar="FILE",
                        help="mutual TLS: require client certificates signed by this CA (PEM)")
    parser.add_argument("--max-body", type=int, default=server.DEFAULT_MAX_BODY, help="largest request body, bytes")
    parser.add_argument("--max-batch", type=int, default=server.DEFAULT_MAX_BATCH, help="largest batch, records")
    parser.add_argument("--workers", type=int, default=4, help="database worker threads")
    parser.add_argument("--header-timeout", type=float, default=server.DEFAULT_HEADER_TIMEOUT,
                        help=f"seconds to receive a request's headers (default {server.DEFAULT_HEADER_TIMEOUT:.0f})")
    parser.add_argument("--body-timeout", type=float, default=server.DEFAULT_BODY_TIMEOUT,
                        help=f"seconds to receive a request's body (default {server.DEFAULT_BODY_TIMEOUT:.0f})")
    parser.add_argument("--idle-timeout", type=float, default=server.DEFAULT_IDLE_TIMEOUT,
                        help=f"seconds an idle keep-alive connection stays open "
                             f"(default {server.DEFAULT_IDLE_TIMEOUT:.0f})")
    parser.add_argument("--max-connections", type=int, default=server.DEFAULT_MAX_CONNECTIONS,
                        help=f"open connections at most (default {server.DEFAULT_MAX_CONNECTIONS})")


def cmd_serve(args):
    """Run ``posfast serve``; its errors (bad options, no back office) go to the exit-code table."""
    import logging
    from ..sync import server
    from ..sync import SyncConfigError
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("header_timeout", "body_timeout", "idle_timeout"):
        if not getattr(args, name) > 0:
            raise SyncConfigError(f"--{name.replace('_', '-')} must be more than 0 seconds")
    if args.max_connections < 1 or args.max_body < 1 or args.max_batch < 1 or args.workers < 1:
        raise SyncConfigError("--max-connections, --max-body, --max-batch and --workers must be at least 1")
    server.serve(args.db, args.host, args.port, tokens_file=args.tokens_file, token_specs=args.token,
                 max_body=args.max_body, max_batch=args.max_batch, workers=args.workers,
                 tls_cert=args.tls_cert, tls_key=args.tls_key, client_ca=args.client_ca, create=args.create,
                 header_timeout=args.header_timeout, body_timeout=args.body_timeout,
                 idle_timeout=args.idle_timeout, max_connections=args.max_connections)
    return EX_OK


def add_agent_arguments(parser) -> None:
    """The options of ``posfast agent``."""
    parser.add_argument("journal", help="the journal file (.pfj) the agent writes (its one writer)")
    parser.add_argument("--socket", help="Unix socket to listen on (default JOURNAL.sock beside the journal, mode 0600)")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="TCP instead (127.0.0.1:PORT; another address only with --tls-cert/--tls-key), "
                             "with --token-file")
    parser.add_argument("--token-file", help="file holding the bearer token TCP clients must send (16+ characters)")
    parser.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS on --listen with this certificate (PEM)")
    parser.add_argument("--tls-key", metavar="FILE", help="private key of --tls-cert (PEM)")
    parser.add_argument("--sync-to", action="append", default=[], metavar="URL",
                        help="back office to sync to in the background (repeatable): sqlite:///..., "
                             "postgresql://..., http(s)://host:8080")
    parser.add_argument("--sync-token-file", help="file holding the journal's token at an http(s) back office "
                                                  "(or $POSFAST_SYNC_TOKEN)")
    parser.add_argument("--sync-interval", type=float, default=5.0, help="seconds between background syncs (default 5)")
    parser.add_argument("--printer", help="receipt printer for print and reprint: tcp://host:9100, usb://VID:PID, "
                                          "serial://..., cups://QUEUE, bt://ADDR or a file path")
    parser.add_argument("--printer-profile", metavar="PROFILE",
                        help="the printer's model for what it can do (code pages, native QR, cutter, "
                             "Chinese fonts): an escpos-printer-db profile such as TM-T20II or ZJ-5870 "
                             "(default: the built-in one); a request's own profile wins")


def cmd_agent(args):
    """Run ``posfast agent`` until SIGTERM / Ctrl-C."""
    import logging
    from ..agent import run_agent
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.sync_interval > 0:
        raise errors.InvalidArgument("--sync-interval must be more than 0 seconds")
    from types import SimpleNamespace
    token = _sync_token(SimpleNamespace(token_file=args.sync_token_file, token=None))
    run_agent(args.journal, socket_path=os.path.abspath(args.socket) if args.socket else None,
              listen=args.listen, token_file=args.token_file, sync_to=args.sync_to, sync_token=token,
              sync_interval=args.sync_interval, printer=args.printer, tls_cert=args.tls_cert,
              tls_key=args.tls_key, printer_profile=args.printer_profile)
    return EX_OK


# ------------------------------------------------------------------ reconcile, close-day, capacity
_REPORT_FORMATS = ("table", "json", "csv")


def _reconcile_formats(args):
    """(statement format, report format) of --format given once or twice, and --report."""
    from ..reconcile import FORMATS as STATEMENTS
    statement, report = "auto", args.report
    for value in args.format:
        value = value.lower()
        if value in _REPORT_FORMATS:
            report = value
        elif value in STATEMENTS or value == "auto":
            statement = value
        else:
            raise errors.InvalidArgument(
                "posfast reconcile: --format %s is neither a statement format (auto, %s) nor a "
                "report format (%s)" % (value, ", ".join(STATEMENTS), ", ".join(_REPORT_FORMATS)))
    return statement, report or "table"


def _fee_rates(args):
    rates = {}
    for item in args.fee_rate:
        key, sep, rate = item.partition("=")
        if not sep or not key.strip():
            raise errors.InvalidArgument("posfast reconcile: --fee-rate %r: write CHANNEL=RATE or "
                                         "METHOD=RATE, e.g. wechat=0.38%%" % item)
        rates[key.strip()] = rate.strip()
    return rates or None


def cmd_reconcile(args):
    """Writes the report to stdout, streamed; EX_FINDINGS when there are discrepancies."""
    from ..reconcile import reconcile, reconcile_store
    statement, report_format = _reconcile_formats(args)
    options = dict(encoding=args.encoding, summary=bool(args.summary), format=statement,
                   column_map=args.map, channel=args.channel, fee_rates=_fee_rates(args),
                   file_date=args.file_date)
    if args.store is not None or args.db is not None:
        missing = [name for name, value in (("--db", args.db), ("--store", args.store),
                                            ("--settlement", args.settlement)) if not value]
        if missing or args.journal or args.host:
            raise errors.InvalidArgument(
                "posfast reconcile: a store is reconciled with --db URL --store S --settlement FILE "
                "(no JOURNAL, no --host)%s" % ("; missing %s" % ", ".join(missing) if missing else ""))
        report = reconcile_store(args.db, args.settlement, day=args.day, store=args.store, **options)
    else:
        if not args.journal or not (args.host or args.settlement):
            raise errors.InvalidArgument("posfast reconcile: give JOURNAL and --host (a back office or a "
                                         "statement), or --db, --store and --settlement for a store")
        with Journal.open(args.journal, readonly=True) as journal:
            report = reconcile(journal, args.host or args.settlement, day=args.day,
                               terminal=args.terminal, check_receipts=not args.no_receipts, **options)
    report.write(sys.stdout, report_format)
    sys.stdout.flush()
    return EX_OK if report.ok else EX_FINDINGS


def cmd_register(args):
    """Register a journal in the back office (or list the registry)."""
    from ..sync import target_from_url
    target = target_from_url(args.db)
    if not hasattr(target, "register"):
        target.close()
        raise errors.InvalidArgument("posfast register: --db is the back-office database "
                                     "(sqlite:///back.db or postgresql://...), not %s" % args.db)
    try:
        if args.journal_id:
            journal_id = args.journal_id
            if os.path.exists(journal_id):
                with Journal.open(journal_id, readonly=True) as journal:
                    journal_id = journal.journal_id
            target.register(journal_id, merchant_id=args.merchant, store=args.store, till=args.till,
                            tid=args.tid, device_serial=args.serial)
        regs = [r.to_dict() for r in target.registrations(store=args.store if not args.journal_id
                                                                   else None)]
    finally:
        target.close()
    print(format_dicts(regs, args.format, ("journal_id", "merchant_id", "store", "till", "tid",
                                           "device_serial")))
    return EX_OK


def cmd_close_day(args):
    """Write the Z-report and print it; refusals (already closed, in doubt) raise DayClosed."""
    from ..printing import render_z_report, tax_totals
    opened, agent = _open_writer_or_agent(args.journal)
    if agent is not None:
        body = {"day": args.day, "force": bool(args.force)}
        if getattr(args, "catch_up", False):
            body["catch_up"] = True
        if args.terminal is not None:
            body["terminal"] = args.terminal
        with agent:
            doc = agent.request("POST", "/v1/days/close", body, conflict=errors.DayClosed)
        text = doc.pop("z_report_text")
        if args.format == "json":
            print(json.dumps(doc, ensure_ascii=False, indent=1))
        else:
            print(text, end="")
        return EX_OK
    with opened as journal:
        close = journal.close_day(args.day, terminal=args.terminal, force=bool(args.force),
                                  catch_up=bool(getattr(args, "catch_up", False)))
        tz = journal_tz(journal.day_rule)
        taxes = tax_totals(journal, close) if args.format != "json" else None
    if args.format == "json":
        print(json.dumps(close.to_dict(), ensure_ascii=False, indent=1))
    else:
        print(render_z_report(close, width=getattr(args, "width", 42) or 42, tz=tz, taxes=taxes), end="")
    return EX_OK


def cmd_capacity(args):
    from ..retention import archive_plan, capacity_plan
    if getattr(args, "archive", False):
        plan = archive_plan(args.budget, args.per_day, payload_bytes=getattr(args, "payload_bytes", 0),
                            ring_days=getattr(args, "ring_days", 14),
                            records_per_payment=getattr(args, "records_per_payment", 2))
    else:
        plan = capacity_plan(args.budget, args.per_day, payload_bytes=getattr(args, "payload_bytes", 0),
                             slot_size=getattr(args, "slot_size", 128),
                             measure=getattr(args, "measure", False))
    fmt = getattr(args, "format", None) or "table"
    if fmt == "json":
        print(json.dumps(plan.to_dict(), indent=1))
    elif fmt == "csv":
        print(format_mapping(plan.to_dict(), "csv"))
    else:
        print(plan.summary())
    return EX_OK


def cmd_demo(args):
    from .demo import run_demo
    return run_demo(args.dir, days=args.days, terminals=args.terminals)


__all__ = [name for name in dir() if name.startswith("cmd_")] + ["parse_receipt_code", "net_by_currency",
                                                                  "add_serve_arguments", "add_agent_arguments",
                                                                  "FORMATS"]
