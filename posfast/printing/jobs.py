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
import os
import select
import socket
import stat
import sys
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from posfast.errors import PosfastError, ReprintRefused
from posfast.printing.escpos import render_escpos
from posfast.receipt import InvalidReceipt, Receipt, render_text
from posfast.records import Flag, Kind, State

__all__ = [
    "EscposPrinter",
    "FilePrinter",
    "PrintResult",
    "Printer",
    "ReprintRefused",
    "TcpPrinter",
    "print_receipt",
    "reprint",
    "print_counts",
    "ESCPOS_EXTRA",
]

#: The optional dependency behind ``posfast[escpos]``.
ESCPOS_EXTRA = "python-escpos>=3.0"

OK, FAILED, UNKNOWN = "ok", "failed", "unknown"
_OUTCOME_STATE = {OK: State.OK, FAILED: State.FAILED, UNKNOWN: State.UNKNOWN}
_PAYMENT_KINDS = (Kind.SALE, Kind.REFUND, Kind.VOID, Kind.REVERSAL, Kind.PREAUTH, Kind.COMPLETION)


@dataclass
class PrintResult:
    """What a print attempt did.

    ``outcome`` is ``"ok"``, ``"failed"`` or ``"unknown"`` (``"preview"`` when
    :func:`reprint` only rendered text); ``error`` says why, in words a
    cashier or support can act on; ``bytes_sent`` counts bytes that left this
    machine (None where the backend cannot tell); ``seq`` is the journaled
    PRINT record (0 if none), ``copy`` the copy number (0 = the original) and
    ``text`` the rendered text when asked for.
    """

    outcome: str
    error: str = ""
    bytes_sent: Optional[int] = 0
    printer: str = ""
    seq: int = 0
    copy: int = 0
    text: Optional[str] = None

    @property
    def ok(self) -> bool:
        """True only when the printer took the whole receipt."""
        return self.outcome == OK


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if exc.strerror[:1].isupper() else exc.strerror
    return str(exc) or type(exc).__name__


class Printer:
    """Base of the printers: ``send(data) -> PrintResult``; never raises for a printer fault."""

    def describe(self) -> str:
        return type(self).__name__

    def send(self, data: bytes) -> PrintResult:  # pragma: no cover - interface
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class FilePrinter(Printer):
    """Append the bytes to a file or a character device (``/dev/usb/lp0``).

    A regular file is fsynced, so "ok" means the bytes are on disk.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "spool.bin")
    >>> FilePrinter(path).send(b"abc").outcome, open(path, "rb").read()
    ('ok', b'abc')
    """

    def __init__(self, path):
        self.path = os.fspath(path)

    def describe(self) -> str:
        return f"file:{self.path}"

    def send(self, data: bytes) -> PrintResult:
        data = bytes(data)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            return PrintResult(FAILED, f"cannot open printer file {self.path}: {_reason(exc)}; "
                                       f"check the path and its permissions", 0, self.describe())
        written = 0
        try:
            view = memoryview(data)
            while written < len(data):
                written += os.write(fd, view[written:])
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.fsync(fd)
        except OSError as exc:
            outcome = FAILED if written == 0 else UNKNOWN
            return PrintResult(outcome, f"writing to {self.path} failed after {written} of {len(data)} "
                                        f"bytes: {_reason(exc)}", written, self.describe())
        finally:
            os.close(fd)
        return PrintResult(OK, "", written, self.describe())


def _unacknowledged(sock: socket.socket) -> Optional[int]:
    """Bytes sent but not yet acknowledged by the peer (Linux SIOCOUTQ), None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import fcntl
    import struct
    import termios
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return None
    return struct.unpack("i", raw)[0]


class TcpPrinter(Printer):
    """A network receipt printer on raw TCP (port 9100, "JetDirect"/"AppSocket").

    One connection per job: connect, send, half-close, then wait for the
    printer to read the job and close its side (``confirm="close"``, what
    raw-port printers do) -- only then is the outcome "ok".  A printer that
    keeps the connection open after the job can use ``confirm="ack"``: "ok"
    once its TCP stack acknowledged every byte (Linux; elsewhere once sent).

    ``timeout`` bounds the connect, each send, and the wait for confirmation.

    >>> TcpPrinter("127.0.0.1", 1, timeout=0.5).send(b"x").outcome
    'failed'
    """

    def __init__(self, host: str, port: int = 9100, timeout: float = 5.0, confirm: str = "close"):
        if confirm not in ("close", "ack"):
            raise ValueError(f"confirm must be 'close' or 'ack', got {confirm!r}")
        self.host, self.port, self.timeout, self.confirm = host, int(port), float(timeout), confirm

    def describe(self) -> str:
        return f"tcp:{self.host}:{self.port}"

    def send(self, data: bytes) -> PrintResult:
        data = bytes(data)
        where = f"printer {self.host}:{self.port}"
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            return PrintResult(FAILED, f"cannot connect to {where}: {_reason(exc)}; check that it is "
                                       f"switched on, online and reachable (nothing was printed)",
                               0, self.describe())
        sent = 0
        try:
            view = memoryview(data)
            while sent < len(data):
                sent += sock.send(view[sent:])
            sock.shutdown(socket.SHUT_WR)
            problem = self._confirm(sock)
        except OSError as exc:
            if sent == 0:
                return PrintResult(FAILED, f"{where} took no data: {_reason(exc)} (nothing was printed)",
                                   0, self.describe())
            return PrintResult(UNKNOWN, f"{where} failed after taking {sent} of {len(data)} bytes: "
                                        f"{_reason(exc)}; the receipt may have printed: check the paper, "
                                        f"print a copy if it did not", sent, self.describe())
        finally:
            sock.close()
        if problem:
            return PrintResult(UNKNOWN, f"{where} took {sent} of {len(data)} bytes but {problem}; the "
                                        f"receipt may have printed: check the paper, print a copy if it "
                                        f"did not", sent, self.describe())
        return PrintResult(OK, "", sent, self.describe())

    def _confirm(self, sock: socket.socket) -> str:
        """Wait until the printer has the whole job; '' when confirmed, else what went wrong."""
        deadline = time.monotonic() + self.timeout
        if self.confirm == "close":
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return f"did not close the connection within {self.timeout:g} s"
                sock.settimeout(remaining)
                try:
                    chunk = sock.recv(4096)  # status bytes (ASB) are read and ignored
                except socket.timeout:
                    return f"did not close the connection within {self.timeout:g} s"
                if not chunk:
                    break
        # Closed (or ack mode): every byte must be acknowledged; a printer that closed
        # before reading the job resets the connection instead.
        delay = 0.0005
        while True:
            pending = _unacknowledged(sock)
            failure = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if failure:
                return f"then the connection failed: {os.strerror(failure).lower()}"
            if not pending:
                return ""
            if time.monotonic() >= deadline:
                return f"did not acknowledge the last {pending} bytes within {self.timeout:g} s"
            if self.confirm == "ack":
                readable, _, _ = select.select([sock], [], [], delay)
                if readable:
                    try:
                        sock.recv(4096)
                    except OSError as exc:
                        return f"then the connection failed: {_reason(exc)}"
            else:
                time.sleep(delay)
            delay = min(delay * 2, 0.02)


class EscposPrinter(Printer):
    """Adapter for a python-escpos printer object (USB, serial, network, ...).

    Needs the optional extra: ``pip install 'posfast[escpos]'`` (python-escpos).
    Opening the device failing is "failed"; an error while sending is
    "unknown" (python-escpos cannot tell how much was written).  The device is
    closed after each job (``close_after=False`` keeps it open).

    >>> from escpos.printer import Dummy                      # doctest: +SKIP
    >>> dummy = Dummy()                                      # doctest: +SKIP
    >>> EscposPrinter(dummy).send(b"\\x1b@hi\\n").outcome      # doctest: +SKIP
    'ok'
    """

    def __init__(self, printer, close_after: bool = True):
        if not callable(getattr(printer, "_raw", None)):
            raise TypeError(f"expected a python-escpos printer object (with _raw), got {type(printer).__name__}")
        self.printer = printer
        self.close_after = close_after

    @staticmethod
    def _escpos_printer_module():
        try:
            import escpos.printer
        except ImportError:
            raise ImportError("python-escpos is not installed: pip install 'posfast[escpos]' "
                              "(or pip install python-escpos)") from None
        return escpos.printer

    @classmethod
    def usb(cls, vendor_id: int, product_id: int, **kwargs) -> "EscposPrinter":
        """A USB printer by vendor and product id (python-escpos ``Usb``)."""
        return cls(cls._escpos_printer_module().Usb(vendor_id, product_id, **kwargs))

    @classmethod
    def serial(cls, devfile: str = "/dev/ttyS0", baudrate: int = 9600, **kwargs) -> "EscposPrinter":
        """A serial printer (python-escpos ``Serial``)."""
        return cls(cls._escpos_printer_module().Serial(devfile=devfile, baudrate=baudrate, **kwargs))

    @classmethod
    def network(cls, host: str, port: int = 9100, timeout: float = 5.0) -> "EscposPrinter":
        """A network printer through python-escpos (``Network``); see also :class:`TcpPrinter`."""
        return cls(cls._escpos_printer_module().Network(host, port=port, timeout=timeout))

    def describe(self) -> str:
        p = self.printer
        name = type(p).__name__.lower()
        for attrs in (("host", "port"), ("devfile",), ("idVendor", "idProduct")):
            values = [getattr(p, a, None) for a in attrs]
            if all(v is not None for v in values):
                return f"escpos-{name}:" + ":".join(str(v) for v in values)
        return f"escpos-{name}"

    def send(self, data: bytes) -> PrintResult:
        data = bytes(data)
        p = self.printer
        try:
            if hasattr(p, "open") and not getattr(p, "_device", None):
                p.open()
        except Exception as exc:  # python-escpos raises its own DeviceNotFoundError and others
            self._close()
            return PrintResult(FAILED, f"cannot open {self.describe()}: {_reason(exc)}; check that the "
                                       f"printer is connected and switched on (nothing was printed)",
                               0, self.describe())
        try:
            p._raw(data)
        except Exception as exc:
            self._close()
            return PrintResult(UNKNOWN, f"sending to {self.describe()} failed: {_reason(exc)}; the receipt "
                                        f"may have printed: check the paper, print a copy if it did not",
                               None, self.describe())
        if self.close_after:
            self._close()
        return PrintResult(OK, "", len(data), self.describe())

    def _close(self):
        try:
            self.printer.close()
        except Exception:
            pass


# ---------------------------------------------------------------------------
# Journal-facing service
# ---------------------------------------------------------------------------

def _journal_tz(journal) -> _dt.timezone:
    rule = getattr(journal, "day_rule", None)
    try:
        return _dt.timezone(_dt.timedelta(minutes=rule.offset_minutes))
    except (AttributeError, TypeError, ValueError):
        return _dt.datetime.now().astimezone().tzinfo


def _payment_record(journal, seq: int):
    try:
        rec = journal.get(int(seq))
    except KeyError:
        raise ReprintRefused(f"no record seq {seq} in journal {journal.path}: it was never written or "
                             f"has been evicted; look it up by receipt number or in the back office") from None
    if int(rec.kind) == Kind.PRINT and rec.ref_seq:
        return _payment_record(journal, rec.ref_seq)  # a PRINT record stands for the payment it printed
    if int(rec.kind) not in _PAYMENT_KINDS:
        raise ReprintRefused(f"record seq {seq} in journal {journal.path} is a {Kind(int(rec.kind)).name} "
                             f"record, not a payment; give the seq of the sale/refund to print")
    if not rec.payload:
        raise ReprintRefused(f"payment seq {seq} in journal {journal.path} carries no receipt: store "
                             f"Receipt.to_payload() in the payment's payload to print it")
    return rec


def _print_records(journal, payment) -> np.ndarray:
    """PRINT records of this payment's receipt.

    Matched by ref_seq, and by (terminal, txn_id, receipt_no) so that prints
    made through another record of the same transaction (pending/final) count.
    """
    prints = journal.query(kind=Kind.PRINT)
    mine = prints["ref_seq"] == payment.seq
    if payment.receipt_no:
        mine |= ((prints["txn_id"] == payment.txn_id) & (prints["receipt_no"] == payment.receipt_no)
                 & (prints["terminal"] == payment.terminal))
    return prints[mine]


def print_counts(journal, seq: int) -> dict:
    """How often a payment's receipt went to a printer, from its PRINT records.

    Returns ``{"original": n, "copies": n, "failed": n, "unknown": n}``:
    originals and copies count OK and UNKNOWN prints (either may be on paper).

    (A runnable example is in the module docstring.)
    """
    prints = _print_records(journal, _payment_record(journal, seq))
    state, flags = prints["state"], prints["flags"]
    taken = (state == State.OK) | (state == State.UNKNOWN)
    is_copy = (flags & int(Flag.COPY)) != 0
    return {"original": int(np.count_nonzero(taken & ~is_copy)),
            "copies": int(np.count_nonzero(taken & is_copy)),
            "failed": int(np.count_nonzero(state == State.FAILED)),
            "unknown": int(np.count_nonzero(state == State.UNKNOWN))}


def _journal_print(journal, payment, result: PrintResult, copy: int, operator: int, ts_us: int) -> int:
    flags = int(Flag.COPY) if copy else 0
    if int(payment.flags) & int(Flag.TRAINING):
        flags |= int(Flag.TRAINING)
    note = {"copy": copy, "printer": result.printer[:80]}
    if result.error:
        note["error"] = result.error[:300]
    return journal.append(
        terminal=int(payment.terminal), kind=Kind.PRINT, state=_OUTCOME_STATE[result.outcome], amount=0,
        currency=int(payment.currency), ts=ts_us, txn_id=int(payment.txn_id), ref_seq=int(payment.seq),
        receipt_no=int(payment.receipt_no), operator=int(operator), flags=flags,
        payload=json.dumps(note, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8"))


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


def print_receipt(journal, txn_seq: int, printer: Printer, operator: int = 0, width: int = 42,
                  encoding: str = "gb18030", code: Optional[str] = "qr") -> PrintResult:
    """Print the original receipt of payment record ``txn_seq`` and journal a PRINT record.

    The PRINT record has ``ref_seq=txn_seq``, the payment's txn_id, terminal
    and receipt_no, ``state`` OK / FAILED / UNKNOWN and ``flags`` TRAINING for
    a training payment; its payload is ``{"copy": 0, "printer": ..., "error": ...}``.
    A printer fault gives a FAILED or UNKNOWN result, not an exception.

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
    >>> off = TcpPrinter("127.0.0.1", 1, timeout=0.5)         # nothing listens on port 1
    >>> result = print_receipt(journal, seq, off)
    >>> result.outcome, journal.get(result.seq).state == State.FAILED
    ('failed', True)
    >>> journal.close()
    """
    payment = _payment_record(journal, txn_seq)
    receipt = _receipt_of(journal, payment)
    counts = _print_records(journal, payment)
    taken = counts[((counts["state"] == State.OK) | (counts["state"] == State.UNKNOWN))
                   & ((counts["flags"] & int(Flag.COPY)) == 0)]
    if len(taken):
        first = taken[0]
        raise ReprintRefused(
            f"the original receipt {receipt.receipt_code} of payment seq {payment.seq} was already "
            f"printed ({State(int(first['state'])).name} print, seq {int(first['seq'])}); print a copy "
            f"with reprint() instead of a second original")
    training = bool(int(payment.flags) & int(Flag.TRAINING))
    data = render_escpos(receipt, width=width, training=training, encoding=encoding, code=code)
    result = printer.send(data)
    result.seq = _journal_print(journal, payment, result, 0, operator, time.time_ns() // 1000)
    return result


def _find_by_receipt_no(journal, receipt_no: int, terminal: Optional[int]):
    rows = journal.query(terminal=terminal) if terminal is not None else journal.query()
    kinds = rows["kind"]
    match = ((rows["receipt_no"] == receipt_no) & (rows["payload_len"] > 0)
             & np.isin(kinds, np.array([int(k) for k in _PAYMENT_KINDS], dtype=kinds.dtype)))
    found = rows[match]
    where = f" on terminal {terminal}" if terminal is not None else ""
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


def reprint(journal, seq: Optional[int] = None, receipt_no: Optional[int] = None,
            terminal: Optional[int] = None, printer: Optional[Printer] = None, max_copies: int = 3,
            operator: int = 0, width: int = 42, text: bool = False, encoding: str = "gb18030",
            code: Optional[str] = "qr", now=None) -> PrintResult:
    """Print copy n (重印 / COPY n, with the reprint time) of a payment's receipt.

    Find the payment by ``seq`` or by ``receipt_no`` (plus ``terminal`` when
    receipt numbers repeat across terminals).  Copies already printed (OK or
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
    if (seq is None) == (receipt_no is None):
        raise ValueError("give exactly one of seq= or receipt_no= to choose the receipt to reprint")
    if seq is None:
        seq = _find_by_receipt_no(journal, int(receipt_no), terminal)
    payment = _payment_record(journal, seq)
    if terminal is not None and int(payment.terminal) != int(terminal):
        raise ReprintRefused(f"payment seq {payment.seq} belongs to terminal {int(payment.terminal)}, "
                             f"not terminal {terminal}")
    receipt = _receipt_of(journal, payment)
    prints = _print_records(journal, payment)
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
                    ).astimezone(_journal_tz(journal))
    training = bool(int(payment.flags) & int(Flag.TRAINING))
    rendered = None
    if printer is None or text:
        rendered = render_text(receipt, width=width, copy=copy, reprinted_at=reprinted_at, training=training)
    if printer is None:
        return PrintResult("preview", "", 0, "", 0, copy, rendered)
    if taken >= max_copies:
        raise ReprintRefused(
            f"receipt {receipt.receipt_code} (payment seq {payment.seq}) already has {int(taken)} "
            f"cop{'y' if taken == 1 else 'ies'}, the limit is max_copies={max_copies}; a supervisor can "
            f"allow more with a higher max_copies")
    data = render_escpos(receipt, width=width, copy=copy, reprinted_at=reprinted_at, training=training,
                         encoding=encoding, code=code)
    result = printer.send(data)
    result.copy = copy
    result.text = rendered
    result.seq = _journal_print(journal, payment, result, copy, operator, now_us)
    return result
