"""Printing that journals: the original receipt of a payment, numbered copies,
and how often a receipt went to a printer.

:func:`print_receipt` prints the original receipt of a payment record and
:func:`reprint` a numbered copy (重印 / COPY n); both append a PRINT record
(``ref_seq`` = the payment, ``state`` = OK / FAILED / UNKNOWN, ``flags`` COPY for
copies) so reconciliation can match paper to payments.  The package docstring
(:mod:`posfast.printing`) has a runnable example.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import time
from typing import TYPE_CHECKING, Optional

import numpy as np

from posfast.errors import PosfastError, ReprintRefused
from posfast.payments import parse_receipt_code
from posfast.printing.escpos import render_escpos
from posfast.printing.printers import FAILED, OK, UNKNOWN, Printer, PrintResult
from posfast.printing.profiles import profile_columns
from posfast.receipt import InvalidReceipt, Receipt, render_text
from posfast.records import RECEIPT_KINDS, Flag, Kind, State, print_jobs

if TYPE_CHECKING:  # the Journal is passed in; printing never imports it at run time
    from posfast.journal import Journal

__all__ = [
    "ReprintRefused",
    "print_receipt",
    "reprint",
    "print_counts",
    "print_jobs",
    "print_note",
    "send_journaled",
    "journal_timezone",
    "outcome_state",
]

_OUTCOME_STATE = {OK: State.OK, FAILED: State.FAILED, UNKNOWN: State.UNKNOWN}
_RECEIPT_KIND_VALUES = np.array(sorted(int(k) for k in RECEIPT_KINDS), dtype=np.uint8)


def outcome_state(outcome: str) -> State:
    """The PRINT record state of a printer outcome: OK, FAILED, or UNKNOWN for
    anything else (the paper may or may not show it).

    >>> outcome_state("ok").name, outcome_state("failed").name, outcome_state("unknown").name
    ('OK', 'FAILED', 'UNKNOWN')
    """
    return _OUTCOME_STATE.get(outcome, State.UNKNOWN)


def journal_timezone(journal) -> _dt.tzinfo:
    """The local time of the journal's day rule, its fixed offset or its time zone (the
    local time printed on reprints and Z-reports); this machine's zone for a journal
    without one.

    >>> from types import SimpleNamespace
    >>> from posfast.records import DayRule
    >>> journal_timezone(SimpleNamespace(day_rule=DayRule(utc_offset="+08:00")))
    datetime.timezone(datetime.timedelta(seconds=28800))
    """
    rule = getattr(journal, "day_rule", None)
    if rule is None:
        return _dt.datetime.now().astimezone().tzinfo
    return rule.tzinfo


def _payment_record(journal, seq: int):
    try:
        rec = journal.get(int(seq))
    except KeyError:
        raise ReprintRefused(f"no record seq {seq} in journal {journal.path}: it was never written or "
                             f"has been evicted; look it up by receipt number or in the back office") from None
    if int(rec.kind) == Kind.PRINT and rec.ref_seq:
        return _payment_record(journal, rec.ref_seq)  # a PRINT record stands for the payment it printed
    if int(rec.kind) not in RECEIPT_KINDS:
        raise ReprintRefused(f"record seq {seq} in journal {journal.path} is a {Kind(int(rec.kind)).name} "
                             f"record, not a payment; give the seq of the sale/refund to print")
    if not rec.payload:
        raise ReprintRefused(f"payment seq {seq} in journal {journal.path} carries no receipt: store "
                             f"Receipt.to_payload() in the payment's payload to print it")
    return rec


def _print_records(journal, payment) -> np.ndarray:
    """PRINT records of this payment's receipt.

    Matched by ref_seq, and by (terminal, txn_id, receipt_no) so that prints
    made through another record of the same transaction (pending/final) count,
    and the records that finalise those prints (their ref_seq is the print's).
    """
    records = getattr(journal, "txn_records", None)
    prints = None
    if callable(records) and payment.txn_id == payment.seq and payment.seq >= journal.oldest_seq:
        # a live payment's begin: its prints name it (txn_id, ref_seq), and so do their final
        # records (txn_id): found through the journal's referrer map, not a scan of every print
        try:
            rows = records(int(payment.seq))
            rows = rows[rows["kind"] == Kind.PRINT]
            # (and the records finalising those prints by their ref_seq alone)
            rows = np.concatenate([rows] + [records(int(s)) for s in rows["seq"].tolist()])
        except (KeyError, PosfastError):
            pass
        else:
            rows = rows[rows["kind"] == Kind.PRINT]
            prints = rows[np.unique(rows["seq"], return_index=True)[1]]
    if prints is None:
        prints = journal.query(kind=Kind.PRINT)
    mine = prints["ref_seq"] == payment.seq
    if payment.receipt_no:
        mine |= ((prints["txn_id"] == payment.txn_id) & (prints["receipt_no"] == payment.receipt_no)
                 & (prints["terminal"] == payment.terminal))
    mine |= np.isin(prints["ref_seq"], prints["seq"][mine])
    return prints[mine]


def print_counts(journal: Journal, seq: int) -> dict:
    """How often a payment's receipt went to a printer, from its print jobs
    (:func:`print_jobs`).

    Returns ``{"original": n, "copies": n, "failed": n, "unknown": n}``:
    originals and copies count OK and UNKNOWN prints (either may be on paper).

    (A runnable example is in the module docstring.)
    """
    prints = print_jobs(_print_records(journal, _payment_record(journal, seq)))
    state, flags = prints["state"], prints["flags"]
    taken = (state == State.OK) | (state == State.UNKNOWN)
    is_copy = (flags & int(Flag.COPY)) != 0
    return {"original": int(np.count_nonzero(taken & ~is_copy)),
            "copies": int(np.count_nonzero(taken & is_copy)),
            "failed": int(np.count_nonzero(state == State.FAILED)),
            "unknown": int(np.count_nonzero(state == State.UNKNOWN))}


def print_note(result: PrintResult, **fields) -> bytes:
    """The payload of a PRINT record: what was printed (``fields``: copy, z), where, and
    the printer's answer (``error``, ``status``), compact UTF-8 JSON."""
    note = dict(fields, printer=result.printer[:80])
    if result.error:
        note["error"] = result.error[:300]
    if result.status:
        note["status"] = list(result.status)
    return json.dumps(note, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def send_journaled(journal, printer: Printer, data: bytes, fields: dict, note: dict) -> PrintResult:
    """Send a job to a printer with its fate journaled: a PRINT record of outcome UNKNOWN
    before the first byte goes out, then one that finalises it (``ref_seq`` = the first)
    with OK / FAILED / UNKNOWN and the printer's answer; a crash at any point leaves
    the job on record, and never a second original.  ``fields`` are the records'
    columns (terminal, txn_id, ref_seq, ...), ``note`` their payload's keys.
    Returns the printer's result with ``seq`` = the finalising record."""
    begun = PrintResult(UNKNOWN, "", None, printer.describe())
    begin = journal.append(kind=Kind.PRINT, state=State.UNKNOWN, payload=print_note(begun, **note),
                           **fields)
    result = printer.send(data)
    final = dict(fields, ref_seq=begin, ts=time.time_ns() // 1000)
    result.seq = journal.append(kind=Kind.PRINT, state=outcome_state(result.outcome),
                                payload=print_note(result, **note), **final)
    return result


def _print_fields(payment, copy: int, operator: int, ts_us: int) -> dict:
    flags = int(Flag.COPY) if copy else 0
    if int(payment.flags) & int(Flag.TRAINING):
        flags |= int(Flag.TRAINING)
    return dict(terminal=int(payment.terminal), amount=0, currency=int(payment.currency), ts=ts_us,
                txn_id=int(payment.txn_id), ref_seq=int(payment.seq), receipt_no=int(payment.receipt_no),
                operator=int(operator), flags=flags)


def _current_record(journal, payment):
    """The payment's newest record (its state after finish/resolve), via the journal's
    payment lifecycle lookup where there is one."""
    finder = getattr(journal, "payment", None)
    if callable(finder) and payment.txn_id:
        try:
            return finder(int(payment.txn_id))
        except (KeyError, PosfastError):
            pass
    return payment


def _receipt_of(journal, payment) -> Receipt:
    """The stored receipt, completed with the host's answer, refused unless approved.

    The receipt is stored when the payment begins; the authorisation code,
    reference number and card's last digits arrive with the final record, so
    a card payment on the receipt that lacks them takes them from it.  The
    final record never changes, so a reprint shows the same values.
    """
    try:
        receipt = Receipt.from_payload(payment.payload)
    except InvalidReceipt as exc:
        raise InvalidReceipt(f"payment seq {payment.seq} in journal {journal.path}: {exc}") from None
    current = _current_record(journal, payment)
    state = State(int(current.state))
    if state != State.APPROVED:
        advice = ("it is still in doubt: finish or resolve the payment first" if state == State.PENDING
                  else "only an approved payment gets a receipt, or the paper would show a sale "
                       "that did not happen")
        raise ReprintRefused(f"payment txn {int(payment.txn_id)} (receipt {receipt.receipt_code}, seq "
                             f"{payment.seq}) is {state.name}: {advice}")
    method = {1: "cash", 2: "card", 3: "qr", 4: "wallet", 5: "voucher", 6: "other"}.get(int(current.method))
    matching = [i for i, p in enumerate(receipt.payments) if p.method == method]
    if len(matching) == 1:
        i = matching[0]
        pay = receipt.payments[i]
        fill = {}
        for name in ("auth_code", "rrn") + (("pan_last4",) if method == "card" else ()):
            recorded = getattr(current, name).rstrip(b"\0").decode("ascii", "replace")
            if recorded and not getattr(pay, name):
                fill[name] = recorded
        if fill:
            payments = list(receipt.payments)
            payments[i] = dataclasses.replace(pay, **fill)
            receipt = dataclasses.replace(receipt, payments=payments)
    return receipt


def print_receipt(journal: Journal, txn_seq: int, printer: Printer, operator: int = 0,
                  width: Optional[int] = None, encoding: Optional[str] = None, code: Optional[str] = "qr",
                  profile="default", drawer: bool = False, logo=None) -> PrintResult:
    """Print the original receipt of payment record ``txn_seq``, its fate journaled.

    Before the first byte goes out a PRINT record says UNKNOWN; once the
    printer answered a second one (its ``ref_seq`` the first's) says OK /
    FAILED / UNKNOWN (:func:`send_journaled`), so a crash at any point leaves
    the print on record.  Both have the payment's txn_id, terminal and
    receipt_no and ``flags`` TRAINING for a training payment; the payload is
    ``{"copy": 0, "printer": ..., "error": ..., "status": [...]}`` (``status``:
    what the printer reported, e.g. ``"paper out"``).  A printer fault gives a
    FAILED or UNKNOWN result, not an exception.  ``profile``, ``encoding``,
    ``width``, ``drawer`` (kick the cash drawer for a cash payment) and ``logo``
    are :func:`posfast.printing.render_escpos`'s.

    Only an approved payment is printed (its current state, after
    ``finish_payment``/``resolve``); a pending or declined one raises
    :class:`ReprintRefused`.  A card payment on the stored receipt that lacks
    the authorisation code, RRN or last four digits gets them from the
    payment's final record.  After an "ok" or "unknown" original, a second
    original is refused: print a copy with :func:`reprint`.  After "failed",
    printing the original again is allowed.

    >>> import os, tempfile
    >>> from posfast import Journal
    >>> from posfast.receipt import Receipt
    >>> journal = Journal.create(os.path.join(tempfile.mkdtemp(), "doc.pfj"), capacity=100)
    >>> seq = journal.append(terminal=1, kind="sale", state="approved", amount=0,
    ...                      payload=Receipt(merchant="Shop").to_payload())
    >>> from posfast.printing import TcpPrinter
    >>> off = TcpPrinter("127.0.0.1", 1, timeout=0.5)         # nothing listens on port 1
    >>> result = print_receipt(journal, seq, off)
    >>> result.outcome, journal.get(result.seq).state == State.FAILED
    ('failed', True)
    >>> journal.close()
    """
    payment = _payment_record(journal, txn_seq)
    receipt = _receipt_of(journal, payment)
    counts = print_jobs(_print_records(journal, payment))
    taken = counts[((counts["state"] == State.OK) | (counts["state"] == State.UNKNOWN))
                   & ((counts["flags"] & int(Flag.COPY)) == 0)]
    if len(taken):
        first = taken[0]
        raise ReprintRefused(
            f"the original receipt {receipt.receipt_code} of payment seq {payment.seq} was already "
            f"printed ({State(int(first['state'])).name} print, seq {int(first['seq'])}); print a copy "
            f"with reprint() instead of a second original")
    training = bool(int(payment.flags) & int(Flag.TRAINING))
    data = render_escpos(receipt, width=width, training=training, encoding=encoding, code=code,
                         profile=profile, drawer=drawer, logo=logo)
    return send_journaled(journal, printer, data, _print_fields(payment, 0, operator, time.time_ns() // 1000),
                          {"copy": 0})


def _find_by_receipt_no(journal, receipt_no: int, terminal: Optional[int]):
    where = f" on terminal {terminal}" if terminal is not None else ""
    if terminal is not None:  # a receipt code: one lookup in the journal's receipt-code map
        found_txns = journal.receipt_payments(terminal, receipt_no)
        if len(found_txns) > 1:
            raise ReprintRefused(f"receipt code {terminal}-{receipt_no:06d} matches {len(found_txns)} "
                                 f"payments of terminal {terminal} (txn {', '.join(map(str, found_txns[:5]))}); "
                                 f"pass seq= to choose one")
        if found_txns:
            return found_txns[0]
    # no terminal, or not among the live records (the archive of evicted records): a scan
    rows = journal.query(terminal=terminal) if terminal is not None else journal.query()
    kinds = rows["kind"]
    match = ((rows["receipt_no"] == receipt_no) & (rows["payload_len"] > 0)
             & np.isin(kinds, _RECEIPT_KIND_VALUES))
    found = rows[match]
    if len(found) == 0:
        raise ReprintRefused(f"no payment with receipt number {receipt_no}{where} in journal {journal.path}; "
                             f"check the number (and terminal), or it has been evicted")
    transactions = np.unique(found["txn_id"])  # txn_id is a seq: unique across terminals
    if len(transactions) > 1:
        listed = ", ".join(
            f"terminal {int(found['terminal'][found['txn_id'] == t][-1])} seq {int(found['seq'][found['txn_id'] == t][-1])}"
            for t in transactions[:5])
        raise ReprintRefused(f"receipt number {receipt_no}{where} matches {len(transactions)} payments "
                             f"({listed}); pass terminal= or seq= to choose one")
    return int(found["seq"][-1])  # newest record of the transaction: its final state


def reprint(journal: Journal, seq: Optional[int] = None, receipt_no: Optional[int] = None,
            terminal: Optional[int] = None, printer: Optional[Printer] = None, max_copies: int = 3,
            operator: int = 0, width: Optional[int] = None, text: bool = False,
            encoding: Optional[str] = None, code: Optional[str] = "qr", now=None,
            receipt_code: Optional[str] = None, profile="default") -> PrintResult:
    """Print copy n (重印 / COPY n, with the reprint time) of a payment's receipt.

    Find the payment by ``receipt_code`` (``"3-000200"``, printed on the slip and
    in its QR code: one index lookup), ``seq``, or ``receipt_no`` (plus
    ``terminal`` when receipt numbers repeat across terminals).  ``profile``
    is the printer model (:func:`posfast.printing.render_escpos`).  Copies already printed (OK or
    UNKNOWN copy PRINT records) are counted from the journal; past
    ``max_copies`` the reprint is refused with :class:`ReprintRefused`.  The
    attempt is journaled as a PRINT record with flags COPY and payload
    ``{"copy": n, ...}``; a failed copy does not use up its number.  As with
    :func:`print_receipt`, only an approved payment is printed.

    With ``printer=None`` nothing is sent or journaled: the result carries the
    rendered text (outcome ``"preview"``).  ``text=True`` adds the text to a
    real print's result too.  ``now`` (datetime or microseconds) fixes the
    reprint time; it defaults to the clock, shown in the journal's time zone.

    >>> import os, tempfile
    >>> from posfast import Journal
    >>> from posfast.receipt import Receipt
    >>> journal = Journal.create(os.path.join(tempfile.mkdtemp(), "doc.pfj"), capacity=100)
    >>> _ = journal.append(terminal=3, kind="sale", state="approved", amount=0, receipt_no=7,
    ...                    payload=Receipt(merchant="Shop", terminal=3, receipt_no=7).to_payload())
    >>> preview = reprint(journal, receipt_no=7, terminal=3, now=1_795_000_000_000_000)
    >>> print(preview.text.splitlines()[1].strip())
    重印 / COPY 1
    >>> journal.close()
    """
    if sum(v is not None for v in (seq, receipt_no, receipt_code)) != 1:
        raise ValueError("give exactly one of seq=, receipt_no= or receipt_code= to choose the receipt "
                         "to reprint")
    if receipt_code is not None:
        terminal, receipt_no = parse_receipt_code(receipt_code)
    if seq is None:
        seq = _find_by_receipt_no(journal, int(receipt_no), terminal)
    payment = _payment_record(journal, seq)
    if terminal is not None and int(payment.terminal) != int(terminal):
        raise ReprintRefused(f"payment seq {payment.seq} belongs to terminal {int(payment.terminal)}, "
                             f"not terminal {terminal}")
    receipt = _receipt_of(journal, payment)
    prints = print_jobs(_print_records(journal, payment))
    taken = np.count_nonzero(((prints["state"] == State.OK) | (prints["state"] == State.UNKNOWN))
                             & ((prints["flags"] & int(Flag.COPY)) != 0))
    copy = int(taken) + 1
    if now is None:
        now_us = time.time_ns() // 1000
    elif isinstance(now, _dt.datetime):
        aware = now if now.tzinfo else now.replace(tzinfo=_dt.timezone.utc)
        now_us = (aware - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)) // _dt.timedelta(microseconds=1)
    else:
        now_us = int(now)
    reprinted_at = (_dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(microseconds=now_us)
                    ).astimezone(journal_timezone(journal))
    training = bool(int(payment.flags) & int(Flag.TRAINING))
    rendered = None
    if printer is None or text:
        rendered = render_text(receipt, width=width or profile_columns(profile), copy=copy, reprinted_at=reprinted_at, training=training)
    if printer is None:
        return PrintResult("preview", "", 0, "", 0, copy, rendered)
    if taken >= max_copies:
        raise ReprintRefused(
            f"receipt {receipt.receipt_code} (payment seq {payment.seq}) already has {int(taken)} "
            f"cop{'y' if taken == 1 else 'ies'}, the limit is max_copies={max_copies}; a supervisor can "
            f"allow more with a higher max_copies")
    data = render_escpos(receipt, width=width, copy=copy, reprinted_at=reprinted_at, training=training,
                         encoding=encoding, code=code, profile=profile)
    result = send_journaled(journal, printer, data, _print_fields(payment, copy, operator, now_us),
                            {"copy": copy})
    result.copy = copy
    result.text = rendered
    return result
