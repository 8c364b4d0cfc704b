"""Printers: where ESC/POS bytes go, and what happened to them.

Printers take ESC/POS bytes and report what happened, never raising for a
printer fault:

* ``"ok"``: the printer took every byte (over TCP: it read the whole job and
  closed its side, and its TCP stack acknowledged every byte).
* ``"failed"``: nothing reached the printer (connection refused, host down,
  a timeout or error before the first byte left this machine): nothing printed.
* ``"unknown"``: the printer took some or all of the bytes, then an error or a
  timeout: the receipt may or may not have printed.  Print a *copy* next,
  never a second original.

Backends: :class:`FilePrinter` (a file or ``/dev/usb/lp0``), :class:`TcpPrinter`
(raw port 9100) and :class:`EscposPrinter` (a python-escpos device, with the
``posfast[escpos]`` extra).  Journaling the attempt is :mod:`posfast.printing.jobs`'s.
"""
from __future__ import annotations

import os
import select
import socket
import stat
import sys
import time
from dataclasses import dataclass
from typing import Optional

__all__ = [
    "EscposPrinter",
    "FilePrinter",
    "PrintResult",
    "Printer",
    "TcpPrinter",
    "ESCPOS_EXTRA",
    "OK",
    "FAILED",
    "UNKNOWN",
]

#: The optional dependency behind ``posfast[escpos]``.
ESCPOS_EXTRA = "python-escpos>=3.0"

#: The outcomes of :meth:`Printer.send` (:attr:`PrintResult.outcome`).
OK, FAILED, UNKNOWN = "ok", "failed", "unknown"


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
