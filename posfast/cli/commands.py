"""Every verb of the `posfast` command: ``cmd_<verb>(args) -> exit code``.

Each verb returns a code of the table in :mod:`posfast.cli` (EX_OK, EX_FINDINGS, EX_WARNING,
...); errors it raises are mapped to their code by :func:`posfast.cli.main`.
"""
from __future__ import annotations

import json
import os
import sys
import time
import uuid

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


#: ``posfast serve`` options: name -> (type, default); each is a ``--flag`` and a key of
#: ``--config serve.toml`` (the flag wins over the file, the file over the default).
def _serve_options() -> dict:
    from ..sync import server
    from ..sync.tokens import DEFAULT_TOKEN_TTL
    return {
        "db": (str, None), "create": (bool, False), "host": (str, "127.0.0.1"), "port": (int, 8080),
        "tokens_file": (str, None), "token": (list, []), "tls_cert": (str, None), "tls_key": (str, None),
        "client_ca": (str, None), "max_body": (int, server.DEFAULT_MAX_BODY),
        "max_batch": (int, server.DEFAULT_MAX_BATCH), "workers": (int, 4),
        "header_timeout": (float, server.DEFAULT_HEADER_TIMEOUT),
        "body_timeout": (float, server.DEFAULT_BODY_TIMEOUT),
        "idle_timeout": (float, server.DEFAULT_IDLE_TIMEOUT),
        "max_connections": (int, server.DEFAULT_MAX_CONNECTIONS),
        "token_ttl": (float, DEFAULT_TOKEN_TTL), "metrics": (str, "admin"),
        "log_level": (str, "info"), "log_format": (str, "text"),
    }


def add_serve_arguments(parser) -> None:
    """The options of ``posfast serve`` (every one may come from ``--config FILE`` too)."""
    from ..sync import server
    from ..sync.tokens import DEFAULT_TOKEN_TTL
    parser.add_argument("--config", metavar="FILE",
                        help="a TOML file of these options (keys as the flags, with _ or -: db, port, "
                             "tls_cert, ...); flags given here override it")
    parser.add_argument("--db", default=None,
                        help="back-office database: sqlite:///rel/back.db (relative), sqlite:////abs/back.db "
                             "(absolute) or postgresql://... (required, here or in --config)")
    parser.add_argument("--create", action="store_true", default=None,
                        help="create the SQLite back office if it does not exist (else refuse to start)")
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--tokens-file", default=None,
                        help="file of JOURNAL_ID=TOKEN lines, beside the back office's tokens (posfast "
                             "register --issue-token); move them there with posfast register --import-tokens")
    parser.add_argument("--token", action="append", default=None, metavar="JOURNAL_ID=TOKEN",
                        help="a journal's token (repeatable; visible in the process list: prefer the back "
                             "office's tokens)")
    parser.add_argument("--tls-cert", metavar="FILE", default=None,
                        help="serve HTTPS with this certificate (PEM, chain first)")
    parser.add_argument("--tls-key", metavar="FILE", default=None, help="private key of --tls-cert (PEM)")
    parser.add_argument("--client-ca", metavar="FILE", default=None,
                        help="mutual TLS: require client certificates signed by this CA (PEM)")
    parser.add_argument("--max-body", type=int, default=None,
                        help=f"largest request body, bytes (default {server.DEFAULT_MAX_BODY})")
    parser.add_argument("--max-batch", type=int, default=None,
                        help=f"largest batch, records (default {server.DEFAULT_MAX_BATCH})")
    parser.add_argument("--workers", type=int, default=None, help="database worker threads (default 4)")
    parser.add_argument("--header-timeout", type=float, default=None,
                        help=f"seconds to receive a request's headers (default {server.DEFAULT_HEADER_TIMEOUT:.0f})")
    parser.add_argument("--body-timeout", type=float, default=None,
                        help=f"seconds to receive a request's body (default {server.DEFAULT_BODY_TIMEOUT:.0f})")
    parser.add_argument("--idle-timeout", type=float, default=None,
                        help=f"seconds an idle keep-alive connection stays open "
                             f"(default {server.DEFAULT_IDLE_TIMEOUT:.0f})")
    parser.add_argument("--max-connections", type=int, default=None,
                        help=f"open connections at most (default {server.DEFAULT_MAX_CONNECTIONS})")
    parser.add_argument("--token-ttl", type=float, default=None,
                        help=f"seconds a token's lookup in the back office is trusted: issued and revoked "
                             f"tokens take effect within it (default {DEFAULT_TOKEN_TTL:.0f}; 0: every request)")
    parser.add_argument("--metrics", choices=("admin", "open", "off"), default=None,
                        help="/metrics (Prometheus text format): admin (default: an admin bearer token), "
                             "open (no token: a scrape port behind a firewall) or off")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=None,
                        help="log level (default info)")
    parser.add_argument("--log-format", choices=("text", "json"), default=None,
                        help="text (default) or json: one JSON object per line on stderr")


def serve_config(args) -> dict:
    """The options of ``posfast serve``: flags over ``--config FILE`` over the defaults."""
    options = _serve_options()
    config: dict = {}
    if getattr(args, "config", None):
        config = _read_serve_config(args.config, options)
    out = {}
    for name, (_kind, default) in options.items():
        given = getattr(args, name, None)
        out[name] = given if given is not None else config.get(name, default)
    if not out["db"]:
        raise errors.InvalidArgument("posfast serve: no back office: give --db URL (or db = \"...\" in "
                                     "--config)")
    return out


def _read_serve_config(path, options) -> dict:
    try:
        import tomllib
    except ImportError:             # Python < 3.11
        raise errors.InvalidArgument("posfast serve --config needs Python 3.11 or later (tomllib)") from None
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError("posfast serve: no config file %s" % path) from None
    except OSError as exc:
        raise errors.InvalidArgument("posfast serve: cannot read config file %s: %s" % (path, exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise errors.InvalidArgument("posfast serve: config file %s is not TOML: %s" % (path, exc)) from None
    doc = doc.get("serve", doc) if isinstance(doc.get("serve"), dict) else doc
    out = {}
    base = os.path.dirname(os.path.abspath(path))
    for key, value in doc.items():
        name = key.replace("-", "_")
        if name not in options:
            raise errors.InvalidArgument("posfast serve: config file %s: unknown option %r; options are %s"
                                         % (path, key, ", ".join(sorted(options))))
        kind = options[name][0]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if name == "token" and isinstance(value, str):
            value = [value]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if ok and kind is list:
            ok = all(isinstance(v, str) for v in value)
        if not ok:
            raise errors.InvalidArgument("posfast serve: config file %s: %s = %r must be %s" % (
                path, key, value, {str: "text", int: "a whole number", float: "a number", bool: "true or false",
                                   list: "a list of texts"}[kind]))
        if name in ("tokens_file", "tls_cert", "tls_key", "client_ca") and not os.path.isabs(value):
            value = os.path.join(base, value)    # files named in the config: beside the config
        out[name] = value
    for name, allowed in (("metrics", ("admin", "open", "off")), ("log_level", ("debug", "info", "warning",
                                                                                  "error")),
                          ("log_format", ("text", "json"))):
        if name in out and out[name] not in allowed:
            raise errors.InvalidArgument("posfast serve: config file %s: %s = %r: one of %s"
                                         % (path, name, out[name], ", ".join(allowed)))
    return out


def cmd_serve(args):
    """Run ``posfast serve``; its errors (bad options, no back office) go to the exit-code table."""
    from ..sync import server
    from ..sync import SyncConfigError
    opts = serve_config(args)
    server.configure_logging(opts["log_level"], opts["log_format"])
    for name in ("header_timeout", "body_timeout", "idle_timeout"):
        if not opts[name] > 0:
            raise SyncConfigError(f"--{name.replace('_', '-')} must be more than 0 seconds")
    if not opts["token_ttl"] >= 0:
        raise SyncConfigError("--token-ttl must be 0 seconds or more")
    if opts["max_connections"] < 1 or opts["max_body"] < 1 or opts["max_batch"] < 1 or opts["workers"] < 1:
        raise SyncConfigError("--max-connections, --max-body, --max-batch and --workers must be at least 1")
    server.serve(opts["db"], opts["host"], opts["port"], tokens_file=opts["tokens_file"], token_specs=opts["token"],
                 max_body=opts["max_body"], max_batch=opts["max_batch"], workers=opts["workers"],
                 tls_cert=opts["tls_cert"], tls_key=opts["tls_key"], client_ca=opts["client_ca"],
                 create=bool(opts["create"]), header_timeout=opts["header_timeout"],
                 body_timeout=opts["body_timeout"], idle_timeout=opts["idle_timeout"],
                 max_connections=opts["max_connections"], token_ttl=opts["token_ttl"], metrics=opts["metrics"])
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


_TOKEN_FIELDS = ("token_id", "role", "journal_id", "label", "issued", "revoked")


def _token_rows(infos) -> list:
    return [dict(t.to_dict(), issued=local_time(t.issued_us, human=False),
                 revoked=local_time(t.revoked_us, human=False) if t.revoked_us else "") for t in infos]


def _open_secret(path) -> int:
    """A new file for a token, only its owner reads (created 0600; an existing file is refused)."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise errors.InvalidArgument("--token-out %s exists already; a token file is never overwritten "
                                     "(remove it, or give another name)" % path) from None


def cmd_register(args):
    """Register a journal in the back office (or list the registry); issue, revoke, list and
    import sync tokens."""
    from ..sync import safe_dsn, target_from_url
    target = target_from_url(args.db)
    if not hasattr(target, "register"):
        target.close()
        raise errors.InvalidArgument("posfast register: --db is the back-office database "
                                     "(sqlite:///back.db or postgresql://...), not %s" % safe_dsn(args.db))
    token_verbs = [name for name, on in (("--issue-token", args.issue_token), ("--revoke", args.revoke),
                                         ("--list-tokens", args.list_tokens),
                                         ("--import-tokens", args.import_tokens)) if on]
    if len(token_verbs) > 1:
        target.close()
        raise errors.InvalidArgument("posfast register: %s go one at a time" % " and ".join(token_verbs))
    if (args.admin or args.token_out or args.label) and not args.issue_token:
        target.close()
        raise errors.InvalidArgument("posfast register: --admin, --label and --token-out go with --issue-token")
    try:
        journal_id = args.journal_id
        if journal_id and os.path.exists(journal_id):
            with Journal.open(journal_id, readonly=True) as journal:
                journal_id = journal.journal_id
        if args.revoke:
            text = args.revoke.strip()
            try:
                jid = uuid.UUID(text)
            except ValueError:
                revoked = target.revoke_token(text)
            else:
                revoked = target.revoke_token(journal_id=jid)
            print(format_dicts(_token_rows(revoked), args.format, _TOKEN_FIELDS))
            if args.format == "table":
                print("%d token(s) revoked; running servers refuse them within their token cache time "
                      "(posfast serve --token-ttl, default 5 s)" % len(revoked), file=sys.stderr)
            return EX_OK
        if args.list_tokens:
            print(format_dicts(_token_rows(target.tokens(journal_id)), args.format, _TOKEN_FIELDS))
            return EX_OK
        if args.import_tokens:
            from ..sync.server import load_tokens
            from ..sync.tokens import token_digest, token_id_of
            table = load_tokens(args.import_tokens)
            held = {t.token_id for t in target.tokens()}
            added = []
            for token, jid in table.items():
                if token_id_of(token_digest(token)) in held:
                    continue
                added.append(target.issue_token(jid, token=token, label="imported from %s"
                                                % os.path.basename(args.import_tokens))[1])
            print(format_dicts(_token_rows(added), args.format, _TOKEN_FIELDS))
            if args.format == "table":
                print("%d token(s) imported, %d held already; serve without --tokens-file %s now"
                      % (len(added), len(table) - len(added), args.import_tokens), file=sys.stderr)
            return EX_OK
        if args.issue_token and args.admin:
            if journal_id:
                raise errors.InvalidArgument("posfast register --admin --issue-token: an admin token "
                                             "belongs to no journal; leave JOURNAL_ID out")
            return _issued(args, lambda: target.issue_token(role="admin", label=args.label))
        if journal_id:
            if any(v is not None for v in (args.merchant, args.store, args.till, args.tid, args.serial)) or \
                    not args.issue_token:
                target.register(journal_id, merchant_id=args.merchant, store=args.store, till=args.till,
                                tid=args.tid, device_serial=args.serial)
            if args.issue_token:
                return _issued(args, lambda: target.issue_token(journal_id, label=args.label))
        elif args.issue_token:
            raise errors.InvalidArgument("posfast register --issue-token: give the JOURNAL_ID (or a "
                                         "journal file) the token is for, or --admin")
        regs = [r.to_dict() for r in target.registrations(store=args.store if not journal_id
                                                                   else None)]
    finally:
        target.close()
    print(format_dicts(regs, args.format, ("journal_id", "merchant_id", "store", "till", "tid",
                                           "device_serial")))
    return EX_OK


def _issued(args, issue) -> int:
    # the file first: a token the back office accepts must never exist that nobody holds
    fd = _open_secret(args.token_out) if args.token_out else None
    try:
        token, info = issue()
    except BaseException:
        if fd is not None:
            os.close(fd)
            os.unlink(args.token_out)
        raise
    row = _token_rows([info])[0]
    if fd is not None:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(token + "\n")
        row["token_file"] = os.path.abspath(args.token_out)
    else:
        row["token"] = token
    if args.format == "table":
        who = "admin" if info.role == "admin" else "journal %s" % info.journal_id
        if args.token_out:
            print("issued token %s for %s, written to %s (mode 0600)" % (info.token_id, who,
                                                                        row["token_file"]))
        else:
            print(token)
            print("issued token %s for %s; it is shown only now (the back office keeps its SHA-256)"
                  % (info.token_id, who), file=sys.stderr)
    else:
        print(format_dicts([row], args.format, _TOKEN_FIELDS + ("token", "token_file")) if args.format == "csv"
              else json.dumps(row, ensure_ascii=False, indent=1))
    return EX_OK


def _fleet_cell(row) -> dict:
    """A fleet row as the table shows it (people's units)."""
    rec = row["last_reconciliation"]
    def pct(v):
        return "-" if v is None else "%.0f%%" % (100 * v)
    return {
        "store": row["store"] or "-", "till": row["till"] or "(unregistered)", "tid": row["tid"] or "-",
        "status": {2: "CRITICAL", 1: "warning", 0: "ok"}[row["severity"]],
        "attention": ", ".join(row["attention"]) or "-",
        "last_seen": "never" if row["last_seen_age_s"] is None else age(row["last_seen_age_s"]),
        "unsynced": "-" if row["unsynced"] is None else
        "%d (%s)" % (row["unsynced"], age(row["unsynced_age_s"])) if row["unsynced"] else "0",
        "ring": "%s / %s" % (pct(row["ring_fill"]), pct(row["ring_unsynced"])),
        "in_doubt": "-" if row["in_doubt"] is None else str(row["in_doubt"]),
        "last_closed": row["last_day_closed"] or "never",
        "reconciled": "-" if rec is None else "%s %s" % (rec["day"], "ok" if rec["ok"] else
                                                         "%d discrepancies" % rec["discrepancies"]),
        "refusals_24h": str(row["refusals_24h"]),
    }


_FLEET_TABLE = ("status", "store", "till", "tid", "last_seen", "unsynced", "ring", "in_doubt", "last_closed",
                "reconciled", "refusals_24h", "attention")


def cmd_fleet(args):
    """Every till of a back office, the ones needing attention first; EX_WARNING when any does."""
    from ..sync import SyncConfigError, safe_dsn, target_from_url
    from ..sync.fleet import FLEET_COLUMNS, fleet
    if args.db.split(":", 1)[0].lower() not in ("sqlite", "postgresql", "postgres"):
        raise SyncConfigError("posfast fleet: --db is the back-office database (sqlite:///back.db or "
                              "postgresql://...), not %s" % safe_dsn(args.db))
    if not args.stale_hours > 0:
        raise SyncConfigError("--stale-hours must be more than 0")
    target = target_from_url(args.db, readonly=True)
    try:
        rows = fleet(target, stale_after=args.stale_hours * 3600, store=args.store)
    finally:
        target.close()
    if args.format == "json":
        print(json.dumps(rows, ensure_ascii=False, indent=1))
    elif args.format == "csv":
        print(format_dicts(rows, "csv", FLEET_COLUMNS))
    else:
        print(format_dicts([_fleet_cell(r) for r in rows], "table", _FLEET_TABLE))
        if not rows:
            print("(no till registered, synced or seen in %s)" % args.db, file=sys.stderr)
    return EX_WARNING if any(r["severity"] for r in rows) else EX_OK


def cmd_export(args):
    """The auditor's export; EX_FINDINGS when a link does not follow (the transcript says where)."""
    from ..reconcile import audit_export
    if args.out:
        try:
            fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise errors.InvalidArgument("--out %s exists already; an export never overwrites a file"
                                         % args.out) from None
        out = os.fdopen(fd, "w", encoding="utf-8", newline="")
    else:
        out = sys.stdout
    try:
        result = audit_export(args.db, args.store, args.first_day, args.last_day, out, format=args.format,
                              transcript=sys.stderr)
    finally:
        if args.out:
            out.close()
    print("exported %d record(s) of %d till(s), %d day close(s); %s" % (
        result.records, result.journals, result.day_closes,
        "every link follows from the one before" if result.ok else
        "%d link(s) do NOT follow: %s" % (len(result.failures), "; ".join(
            "journal %s seq %d" % (j, s) for j, s, _why in result.failures[:5]))),
        file=sys.stderr)
    return EX_OK if result.ok else EX_FINDINGS


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
