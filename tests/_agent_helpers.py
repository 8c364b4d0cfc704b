"""A real `posfast agent` process for the agent tests: started as a user would (python -m
posfast agent ...), ready once it printed its "listening" line, stopped with SIGTERM (or
SIGKILLed by the crash tests)."""
import os
import signal
import subprocess
import sys
import threading
import time

import posfast
from _child_env import CHILD_CWD, child_env

HERE = os.path.dirname(os.path.abspath(__file__))


class AgentProcess:
    def __init__(self, journal, *args, env=None):
        self.journal = str(journal)
        self.lines = []
        full_env = child_env(**(env or {}))
        self.proc = subprocess.Popen([sys.executable, "-m", "posfast", "agent", self.journal, *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env, cwd=CHILD_CWD)
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(60):
            self.kill()
            raise AssertionError("the agent did not start:\n" + "".join(self.lines)[-3000:])
        if self.proc.poll() is not None:
            raise AssertionError("the agent stopped (exit %s):\n%s" % (self.proc.returncode,
                                                                      "".join(self.lines)[-3000:]))
        listening = next(line for line in self.lines if "listening on" in line)
        where = listening.split("listening on ", 1)[1].split(" (journal")[0]
        self.socket = next((w[5:] for w in where.split(" and ") if w.startswith("unix:")), None)
        self.url = next((w for w in where.split(" and ") if w.startswith("http")), None)

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            if "listening on" in line:
                self._ready.set()
        self._ready.set()

    def client(self, **kwargs):
        from posfast.agent import AgentClient
        if self.socket:
            return AgentClient(socket_path=self.socket, **kwargs)
        return AgentClient(url=self.url, **kwargs)

    def output(self):
        return "".join(self.lines)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def new_journal(path, capacity=4096):
    posfast.Journal.create(str(path), capacity=capacity,
                           day_rule=posfast.DayRule(utc_offset="+08:00")).close()
    return str(path)


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


#: A receipt as a POS in another language sends it (posfast.receipt.Receipt's fields).
RECEIPT = {"merchant": "好又多 Store 12", "items": [{"name": "宫保鸡丁", "unit_price": 3800},
                                                   {"name": "Tea", "qty": 2, "unit_price": 350}],
           "payments": [{"method": "card", "amount": 4500}]}
