"""The printing child process of tests/test_print_crash.py.

    python _print_child.py JOURNAL PRINTER_URL STEP

Opens the journal for writing and prints the original receipt of payment seq 1 to
the printer.  At STEP it tells the parent on stdout and waits to be SIGKILLed:

* ``before-send``: the PRINT record is journaled, no byte has gone out;
* ``before-finalise``: the printer took the job, its result is not journaled yet.

For ``mid-send`` and ``after-send`` the parent's printer emulator stops reading
half-way, or keeps the connection open after the whole job, and the parent kills
this process while it is stuck in ``send``.
"""
import sys

from posfast import Journal
from posfast.printing import Printer, open_printer, print_receipt


class Announcing(Printer):
    """A printer that stops at the test's step, says so, and waits for the kill."""

    def __init__(self, inner, step):
        self.inner, self.step = inner, step

    def describe(self):
        return self.inner.describe()

    def _stop_here(self, name):
        if self.step == name:
            print(name, flush=True)
            sys.stdin.read()          # the parent SIGKILLs us while we wait

    def send(self, data):
        self._stop_here("before-send")
        print("sending", flush=True)
        result = self.inner.send(data)
        self._stop_here("before-finalise")
        return result


def main():
    path, url, step = sys.argv[1:4]
    journal = Journal.open(path, readonly=False)
    result = print_receipt(journal, 1, Announcing(open_printer(url, timeout=30), step))
    print("printed", result.outcome, flush=True)
    journal.close()


if __name__ == "__main__":
    main()
