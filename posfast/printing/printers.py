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
(raw port 9100), :class:`BluetoothPrinter` (RFCOMM) and :class:`EscposPrinter` (a
python-escpos device: USB, serial, CUPS, Windows; the ``posfast[printer]`` extra),
each from an address with :func:`open_printer`.  Two-way printers report their
:class:`PrinterStatus` (``DLE EOT`` real-time status, or automatic status back)
before and after a job: a problem before is "failed" with the reason, after it
"unknown" with the reason.  Journaling the attempt is :mod:`posfast.printing.jobs`'s.
"""
from __future__ import annotations

import os
import select
import socket
import stat
import sys
import time
from dataclasses import dataclass
from typing import Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from posfast.errors import InvalidArgument
from posfast.printing.profiles import PRINTER_EXTRA

__all__ = [
    "BluetoothPrinter",
    "EscposPrinter",
    "FilePrinter",
    "PrintResult",
    "Printer",
    "PrinterStatus",
    "open_printer",
    "TcpPrinter",
    "ESCPOS_EXTRA",
    "OK",
    "FAILED",
    "UNKNOWN",
]

#: The optional dependency behind ``posfast[printer]`` (also ``posfast[escpos]``, its 0.1 name).
ESCPOS_EXTRA = PRINTER_EXTRA

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
    ``text`` the rendered text when asked for; ``status`` what the printer reported
    (``"paper out"``, ``"cover open"``, ``"offline"``, ``"error"``, ``"paper near end"``)
    before the job when it failed there, else after it.
    """

    outcome: str
    error: str = ""
    bytes_sent: Optional[int] = 0
    printer: str = ""
    seq: int = 0
    copy: int = 0
    text: Optional[str] = None
    status: Tuple[str, ...] = ()

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


#: DLE EOT 1 (printer), 2 (offline cause), 4 (roll paper sensor): the real-time status queries.
STATUS_QUERY = b"\x10\x04\x01\x10\x04\x02\x10\x04\x04"


@dataclass(frozen=True)
class PrinterStatus:
    """What a printer reported: from real-time status (``DLE EOT 1, 2, 4``) or an
    automatic status back message (``GS a``, 4 bytes).

    >>> PrinterStatus.from_realtime(b"\\x1a\\x12\\x72").problems     # offline, paper out
    ('offline', 'paper out')
    >>> PrinterStatus.from_asb(b"\\x30\\x00\\x00\\x00").problems  # cover open
    ('cover open',)
    """

    offline: bool = False
    paper_out: bool = False
    paper_near_end: bool = False
    cover_open: bool = False
    error: bool = False

    @property
    def problems(self) -> Tuple[str, ...]:
        """The conditions that stop printing, then the warnings (paper near end)."""
        names = (("offline", self.offline), ("paper out", self.paper_out),
                 ("cover open", self.cover_open), ("error", self.error),
                 ("paper near end", self.paper_near_end))
        return tuple(name for name, on in names if on)

    @property
    def ready(self) -> bool:
        """True unless the printer cannot print now (paper near end still prints)."""
        return not (self.offline or self.paper_out or self.cover_open or self.error)

    @classmethod
    def from_realtime(cls, answers: bytes) -> Optional["PrinterStatus"]:
        """The three answers to :data:`STATUS_QUERY`; None unless they are status bytes."""
        if len(answers) != 3 or any(b & 0x93 != 0x12 for b in answers):
            return None
        printer, offline, paper = answers
        return cls(offline=bool(printer & 0x08), paper_out=bool(paper & 0x60) or bool(offline & 0x20),
                   paper_near_end=bool(paper & 0x0C), cover_open=bool(offline & 0x04),
                   error=bool(offline & 0x40))

    @classmethod
    def from_asb(cls, message: bytes) -> Optional["PrinterStatus"]:
        """A 4-byte automatic status back message; None unless it is one."""
        if len(message) != 4 or message[0] & 0x93 != 0x10 or any(b & 0x90 for b in message[1:]):
            return None
        return cls(offline=bool(message[0] & 0x08), cover_open=bool(message[0] & 0x20),
                   error=bool(message[1] & 0x6C), paper_near_end=bool(message[2] & 0x03),
                   paper_out=bool(message[2] & 0x0C))


def _advice(status: PrinterStatus) -> str:
    steps = {"offline": "bring the printer online", "paper out": "load paper",
             "cover open": "close the cover", "error": "clear the printer's error (switch it off and on)"}
    return ", ".join(steps[p] for p in status.problems if p in steps) or "check the printer"


def _last_asb(received: bytes) -> Optional[PrinterStatus]:
    """The newest 4-byte automatic status back message in what the printer sent."""
    for end in range(len(received), 3, -1):
        found = PrinterStatus.from_asb(received[end - 4:end])
        if found is not None:
            return found
    return None


class Printer:
    """Base of the printers: ``send(data) -> PrintResult``; never raises for a printer fault.
    ``status()`` asks the printer how it is (None where it cannot tell)."""

    def describe(self) -> str:
        return type(self).__name__

    def status(self) -> Optional[PrinterStatus]:
        return None

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

    ``status="realtime"`` asks the printer (``DLE EOT``) on the job's connection
    before the job -- offline, paper out or cover open there is "failed" with the
    reason, nothing sent -- and after it: a problem then is "unknown" with the
    reason.  ``status="asb"`` instead turns on automatic status back (``GS a``)
    and reads the printer's last message after the job.  A printer that does not
    answer within ``status_timeout`` prints as without status.

    ``timeout`` bounds the connect, each send, and the wait for confirmation.

    >>> TcpPrinter("127.0.0.1", 1, timeout=0.5).send(b"x").outcome
    'failed'
    """

    def __init__(self, host: str, port: int = 9100, timeout: float = 5.0, confirm: str = "close",
                 status: Optional[str] = None, status_timeout: float = 1.0):
        if confirm not in ("close", "ack"):
            raise ValueError(f"confirm must be 'close' or 'ack', got {confirm!r}")
        if status not in (None, "realtime", "asb"):
            raise ValueError(f"status must be None, 'realtime' or 'asb', got {status!r}")
        self.host, self.port, self.timeout, self.confirm = host, int(port), float(timeout), confirm
        self.status_mode, self.status_timeout = status, float(status_timeout)
        self._asb = b""

    def describe(self) -> str:
        return f"tcp:{self.host}:{self.port}"

    def _where(self) -> str:
        return f"printer {self.host}:{self.port}"

    def _connect(self) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=self.timeout)

    def _query(self, sock: socket.socket) -> Optional[PrinterStatus]:
        """DLE EOT 1, 2, 4 on this connection; None if the printer does not answer them."""
        sock.sendall(STATUS_QUERY)
        answers = b""
        deadline = time.monotonic() + self.status_timeout
        while len(answers) < 3:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(3 - len(answers))
            except socket.timeout:
                return None
            if not chunk:
                return None
            answers += chunk
        sock.settimeout(self.timeout)
        return PrinterStatus.from_realtime(answers)

    def status(self) -> Optional[PrinterStatus]:
        """Ask the printer now (``DLE EOT``); None when it cannot be reached or does not answer."""
        try:
            sock = self._connect()
        except OSError:
            return None
        try:
            return self._query(sock)
        except OSError:
            return None
        finally:
            sock.close()

    def send(self, data: bytes) -> PrintResult:
        data = bytes(data)
        where = self._where()
        try:
            sock = self._connect()
        except OSError as exc:
            return PrintResult(FAILED, f"cannot connect to {where}: {_reason(exc)}; check that it is "
                                       f"switched on, online and reachable (nothing was printed)",
                               0, self.describe())
        sent = 0
        after: Optional[PrinterStatus] = None
        self._asb = b""
        try:
            if self.status_mode == "realtime":
                before = self._query(sock)
                if before is not None and not before.ready:
                    return PrintResult(FAILED, f"{where} reports {', '.join(before.problems)} before the "
                                               f"job (nothing was printed): {_advice(before)}, then print "
                                               f"again", 0, self.describe(), status=before.problems)
            elif self.status_mode == "asb":
                data = b"\x1da\x0e" + data   # GS a: send online/offline, error and paper sensor changes
            view = memoryview(data)
            while sent < len(data):
                sent += sock.send(view[sent:])
            if self.status_mode == "realtime":
                after = self._query(sock)
            sock.shutdown(socket.SHUT_WR)
            problem = self._confirm(sock)
            if self.status_mode == "asb":
                after = _last_asb(self._asb)
        except OSError as exc:
            if sent == 0:
                return PrintResult(FAILED, f"{where} took no data: {_reason(exc)} (nothing was printed)",
                                   0, self.describe())
            return PrintResult(UNKNOWN, f"{where} failed after taking {sent} of {len(data)} bytes: "
                                        f"{_reason(exc)}; the receipt may have printed: check the paper, "
                                        f"print a copy if it did not", sent, self.describe())
        finally:
            sock.close()
        reported = after.problems if after is not None else ()
        if after is not None and not after.ready:
            problem = f"then reported {', '.join(after.problems)}" + (f" and {problem}" if problem else "")
        if problem:
            return PrintResult(UNKNOWN, f"{where} took {sent} of {len(data)} bytes but {problem}; the "
                                        f"receipt may have printed: check the paper, print a copy if it "
                                        f"did not", sent, self.describe(), status=reported)
        return PrintResult(OK, "", sent, self.describe(), status=reported)

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
                    chunk = sock.recv(4096)  # status bytes (ASB), kept for status="asb"
                except socket.timeout:
                    return f"did not close the connection within {self.timeout:g} s"
                if not chunk:
                    break
                self._asb = (self._asb + chunk)[-64:]
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
                        self._asb = (self._asb + sock.recv(4096))[-64:]
                    except OSError as exc:
                        return f"then the connection failed: {_reason(exc)}"
            else:
                time.sleep(delay)
            delay = min(delay * 2, 0.02)


class BluetoothPrinter(TcpPrinter):
    """A Bluetooth receipt printer over RFCOMM (serial port profile), by its address and
    channel, as :class:`TcpPrinter` does it (status, confirmation), on a system whose
    Python has ``socket.AF_BLUETOOTH`` (Linux with BlueZ).  A printer bound to
    ``/dev/rfcomm0`` is also a :class:`FilePrinter` or a ``serial://`` device.
    It keeps the link open after a job, so "ok" is its acknowledgement of every byte.

    >>> BluetoothPrinter("00:11:22:33:44:55", 1).describe()
    'bt:00:11:22:33:44:55:1'
    """

    def __init__(self, address: str, channel: int = 1, timeout: float = 5.0, confirm: str = "ack",
                 status: Optional[str] = None, status_timeout: float = 1.0):
        super().__init__(address, channel, timeout, confirm, status, status_timeout)

    def describe(self) -> str:
        return f"bt:{self.host}:{self.port}"

    def _where(self) -> str:
        return f"Bluetooth printer {self.host} channel {self.port}"

    def _connect(self) -> socket.socket:
        family = getattr(socket, "AF_BLUETOOTH", None)
        if family is None:
            raise OSError("this system's Python has no Bluetooth sockets (AF_BLUETOOTH); bind the "
                          "printer to /dev/rfcomm0 and print to that file")
        sock = socket.socket(family, socket.SOCK_STREAM, getattr(socket, "BTPROTO_RFCOMM", 3))
        sock.settimeout(self.timeout)
        try:
            sock.connect((self.host, self.port))
        except OSError:
            sock.close()
            raise
        return sock


class EscposPrinter(Printer):
    """Adapter for a python-escpos printer object (USB, serial, network, ...).

    Needs the optional extra: ``pip install 'posfast[printer]'`` (python-escpos).
    Opening the device failing is "failed"; an error while sending is
    "unknown" (python-escpos cannot tell how much was written).  The device is
    closed after each job (``close_after=False`` keeps it open).

    >>> from escpos.printer import Dummy                      # doctest: +SKIP
    >>> dummy = Dummy()                                      # doctest: +SKIP
    >>> EscposPrinter(dummy).send(b"\\x1b@hi\\n").outcome      # doctest: +SKIP
    'ok'
    """

    def __init__(self, printer, close_after: bool = True, status: bool = False):
        if not callable(getattr(printer, "_raw", None)):
            raise TypeError(f"expected a python-escpos printer object (with _raw), got {type(printer).__name__}")
        self.printer = printer
        self.close_after = close_after
        self.ask_status = status

    @staticmethod
    def _escpos_printer_module():
        try:
            import escpos.printer
        except ImportError:
            raise ImportError("python-escpos is not installed: pip install 'posfast[printer]' "
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

    @classmethod
    def cups(cls, queue: str, **kwargs) -> "EscposPrinter":
        """A CUPS queue (python-escpos ``CupsPrinter``, needs pycups): raw jobs, no status."""
        return cls(cls._device("CupsPrinter", "pycups", printer_name=queue, **kwargs))

    @classmethod
    def win32(cls, name: str, **kwargs) -> "EscposPrinter":
        """A Windows printer by name (python-escpos ``Win32Raw``, needs pywin32): no status."""
        return cls(cls._device("Win32Raw", "pywin32", printer_name=name, **kwargs))

    @classmethod
    def _device(cls, name: str, needs: str, **kwargs):
        device_class = getattr(cls._escpos_printer_module(), name)
        if hasattr(device_class, "is_usable") and not device_class.is_usable():
            raise ImportError(f"python-escpos's {name} needs {needs}, which is not installed here: "
                              f"pip install {needs}")
        return device_class(**kwargs)

    def _query(self) -> Optional[PrinterStatus]:
        """DLE EOT 1, 2, 4 through the open device; None if it gives no status."""
        p = self.printer
        if not callable(getattr(p, "_read", None)):
            return None
        p._raw(STATUS_QUERY)
        answers = b""
        for _ in range(3):               # a device read returns what came within its timeout
            answers += bytes(p._read() or b"")
            if len(answers) >= 3:
                break
        if len(answers) < 3:
            return None
        answers = answers[-3:]
        return PrinterStatus.from_realtime(answers)

    def status(self) -> Optional[PrinterStatus]:
        """Ask the printer now (``DLE EOT``, on USB, serial and network devices); None
        where the device cannot be opened or gives no status."""
        try:
            self._open()
            return self._query()
        except Exception:
            return None
        finally:
            if self.close_after:
                self._close()

    def _open(self):
        p = self.printer
        if hasattr(p, "open") and not getattr(p, "_device", None):
            p.open()

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
            self._open()
            before = self._query() if self.ask_status else None
        except Exception as exc:  # python-escpos raises its own DeviceNotFoundError and others
            self._close()
            return PrintResult(FAILED, f"cannot open {self.describe()}: {_reason(exc)}; check that the "
                                       f"printer is connected and switched on (nothing was printed)",
                               0, self.describe())
        if before is not None and not before.ready:
            self._close()
            return PrintResult(FAILED, f"{self.describe()} reports {', '.join(before.problems)} before the "
                                       f"job (nothing was printed): {_advice(before)}, then print again",
                               0, self.describe(), status=before.problems)
        try:
            p._raw(data)
            after = self._query() if self.ask_status else None
        except Exception as exc:
            self._close()
            return PrintResult(UNKNOWN, f"sending to {self.describe()} failed: {_reason(exc)}; the receipt "
                                        f"may have printed: check the paper, print a copy if it did not",
                               None, self.describe())
        if self.close_after:
            self._close()
        if after is not None and not after.ready:
            return PrintResult(UNKNOWN, f"{self.describe()} took the job but then reported "
                                        f"{', '.join(after.problems)}; the receipt may have printed: check "
                                        f"the paper, print a copy if it did not", len(data), self.describe(),
                               status=after.problems)
        return PrintResult(OK, "", len(data), self.describe(), status=after.problems if after else ())

    def _close(self):
        try:
            self.printer.close()
        except Exception:
            pass


def open_printer(url: str, status: bool = True, timeout: float = 5.0, what: str = "printer") -> Printer:
    """A printer from its address, as the CLI's ``--printer`` takes it:

    * ``tcp://host:9100`` -- raw TCP (:class:`TcpPrinter`); ``?status=asb`` for
      automatic status back, ``?confirm=ack`` for printers that keep the link open;
    * ``usb://VID:PID`` (hex, e.g. ``usb://04b8:0e15``) and
      ``serial:///dev/ttyS0?baud=115200`` -- through python-escpos;
    * ``cups://queue`` and ``win32://Printer Name`` -- through python-escpos (no status);
    * ``bt://AA:BB:CC:DD:EE:FF`` or ``rfcomm://AA:BB:CC:DD:EE:FF/2`` -- Bluetooth
      RFCOMM, channel 1 unless given (:class:`BluetoothPrinter`);
    * ``file:///dev/usb/lp0`` or a plain path -- :class:`FilePrinter`.

    ``status`` asks two-way printers for their real-time status before and after
    each job (``?status=off`` in the address turns it off).  An address that is not
    one of these raises :class:`posfast.errors.InvalidArgument` naming it as ``what``.

    >>> open_printer("tcp://192.168.1.50:9100")
    <TcpPrinter tcp:192.168.1.50:9100>
    >>> open_printer("tcp://printer")
    Traceback (most recent call last):
    ...
    posfast.errors.InvalidArgument: printer tcp://printer: give tcp://HOST:PORT ...
    """
    spec = str(url)
    parts = urlsplit(spec)
    scheme = parts.scheme.lower() if "://" in spec else ""
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    ask = status and query.get("status", "on").lower() not in ("off", "0", "no", "none")
    if scheme == "tcp":
        try:
            host, port = parts.hostname, parts.port
        except ValueError:
            host, port = None, None
        if not host or not port:
            raise InvalidArgument(f"{what} {spec}: give tcp://HOST:PORT with a port from 1 to 65535, e.g. "
                                  f"tcp://192.168.1.50:9100 (a receipt printer's raw port is usually 9100)")
        mode = "asb" if query.get("status", "").lower() == "asb" else ("realtime" if ask else None)
        return TcpPrinter(host, port, timeout=timeout, confirm=query.get("confirm", "close"), status=mode)
    if scheme in ("bt", "bluetooth", "rfcomm"):
        address, _, channel = (parts.netloc + parts.path).partition("/")
        if address.count(":") != 5 or (channel and not channel.isdigit()):
            raise InvalidArgument(f"{what} {spec}: give bt://AA:BB:CC:DD:EE:FF or "
                                  f"rfcomm://AA:BB:CC:DD:EE:FF/CHANNEL")
        return BluetoothPrinter(address, int(channel or 1), timeout=timeout,
                                status="realtime" if ask else None)
    if scheme == "usb":
        vid, _, pid = parts.netloc.partition(":")
        try:
            ids = int(vid, 16), int(pid, 16)
        except ValueError:
            raise InvalidArgument(f"{what} {spec}: give usb://VID:PID in hex, e.g. usb://04b8:0e15 "
                                  f"(lsusb shows them)") from None
        return EscposPrinter(EscposPrinter._device("Usb", "pyusb", idVendor=ids[0], idProduct=ids[1],
                                                   timeout=int(timeout * 1000)), status=ask)
    if scheme == "serial":
        device = unquote(parts.path) or "/dev/ttyS0"
        baud = query.get("baud", "9600")
        if not baud.isdigit():
            raise InvalidArgument(f"{what} {spec}: baud must be a number, e.g. ?baud=115200")
        # the read timeout bounds each status answer (a job's writes are not timed)
        return EscposPrinter(EscposPrinter._device("Serial", "pyserial", devfile=device, baudrate=int(baud),
                                                   timeout=min(timeout, 0.5)), status=ask)
    if scheme == "cups":
        return EscposPrinter.cups(unquote(parts.netloc + parts.path))
    if scheme == "win32":
        return EscposPrinter.win32(unquote(spec.split("://", 1)[1]))
    if scheme == "file":
        return FilePrinter(unquote(parts.path))
    if scheme:
        raise InvalidArgument(f"{what} {spec}: unknown kind {scheme}://; give tcp://, usb://, serial://, "
                              f"cups://, win32://, bt:// or a file path")
    return FilePrinter(spec)
