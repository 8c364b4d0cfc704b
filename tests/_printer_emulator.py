"""A raw-TCP receipt printer on 127.0.0.1 that answers real-time status requests.

It reads jobs as a port-9100 printer does (until the client half-closes, then closes its
side), answers each ``DLE EOT 1, DLE EOT 2, DLE EOT 4`` query (posfast's
``STATUS_QUERY``) with the status bytes of its condition, Epson's bit layout:

* ``conditions``: a set of "paper out", "paper near end", "cover open", "offline";
  paper out and cover open also take the printer offline, as on a real one;
* ``offline_after=N``: the cover is opened after N bytes of a job (offline mid-job);
* ``pause_after=N``: stop reading after N bytes of a job (``paused`` is set), so the
  sender is stuck mid-send;
* ``hold=True``: after the whole job, keep the connection open (``got_all`` is set),
  so the sender is stuck waiting for the printer's confirmation;
* ``drop_after=N``: read N bytes of a job, then close with the rest unread (a reset);
* ``answers_status=False``: a printer that ignores DLE EOT (and GS a);
* a job that starts with ``GS a`` (automatic status back on) gets a 4-byte ASB message
  of the condition at its end, before the printer closes.

``jobs`` holds each connection's job bytes with the status queries taken out.
"""
import socket
import threading
import time

from posfast.printing.printers import STATUS_QUERY


class PrinterEmulator:
    def __init__(self, conditions=(), offline_after=None, pause_after=None, hold=False,
                 answers_status=True, drop_after=None):
        self.conditions = set(conditions)
        self.offline_after, self.pause_after, self.hold = offline_after, pause_after, hold
        self.drop_after = drop_after
        self.answers_status = answers_status
        self.jobs = []
        self.queries = 0
        self.paused, self.got_all = threading.Event(), threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.02)
        self.port = self.listener.getsockname()[1]
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.held = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def status_bytes(self) -> bytes:
        c = self.conditions
        offline = bool(c & {"offline", "paper out", "cover open"})
        printer = 0x12 | (0x08 if offline else 0)
        cause = 0x12 | (0x04 if "cover open" in c else 0) | (0x20 if "paper out" in c else 0)
        paper = 0x12 | (0x0C if "paper near end" in c else 0) | (0x60 if "paper out" in c else 0)
        return bytes([printer, cause, paper])

    def asb_bytes(self) -> bytes:
        """An automatic status back message (GS a) of the condition now."""
        c = self.conditions
        offline = bool(c & {"offline", "paper out", "cover open"})
        first = 0x10 | (0x08 if offline else 0) | (0x20 if "cover open" in c else 0)
        paper = (0x03 if "paper near end" in c else 0) | (0x0C if "paper out" in c else 0)
        return bytes([first, 0, paper, 0])

    def _serve(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn):
        job = bytearray()
        conn.settimeout(10)
        try:
            while True:
                if self.pause_after is not None and len(job) >= self.pause_after:
                    self.paused.set()
                    self.held.append(conn)
                    self.jobs.append(bytes(job))
                    return
                limit = self.pause_after if self.pause_after is not None else self.drop_after
                chunk = conn.recv(65536 if limit is None else max(1, limit - len(job)))
                if not chunk:
                    break
                job += chunk
                if self.drop_after is not None and len(job) >= self.drop_after:
                    break
                if self.offline_after is not None and len(job) >= self.offline_after:
                    self.conditions |= {"cover open"}
                while job.endswith(STATUS_QUERY):   # a status request: answer it now
                    del job[-len(STATUS_QUERY):]
                    self.queries += 1
                    if self.answers_status:
                        conn.sendall(self.status_bytes())
            if job.startswith(b"\x1da") and self.answers_status:   # ASB on: say how it ended
                conn.sendall(self.asb_bytes())
        except OSError:
            pass
        self.jobs.append(bytes(job))
        if self.hold:
            self.got_all.set()
            self.held.append(conn)
        else:
            conn.close()

    def wait_jobs(self, count, timeout=5.0):
        """The jobs, once `count` connections ended (a refused job closes before the printer)."""
        deadline = time.monotonic() + timeout
        while len(self.jobs) < count and time.monotonic() < deadline:
            time.sleep(0.001)
        return self.jobs

    def close(self):
        self.stopping.set()
        self.listener.close()
        for conn in self.held:
            try:
                conn.close()
            except OSError:
                pass
        self.thread.join(2)
