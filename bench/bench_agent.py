"""Latency of the posfast agent over its Unix socket, against the issue's targets.

    python bench/bench_agent.py [--requests 3000] [--payments 300] [--clients 50] [--dir DIR]
                                [--beside CHECKOUT]

A real agent process (``python -m posfast agent``, fsync durability) on a fresh journal in
DIR (default: a temp dir; put it on the terminal's own storage to measure that), called over
keep-alive connections with pre-built HTTP/1.1 requests (so the figures are the agent's, not
a Python HTTP client's):

* ``GET /v1/terminals/T/last-transaction``: p50 and p99 (target p50 <= 150 us, p99 <= 1 ms);
* ``POST /v1/payments`` then ``POST /v1/payments/N/finish``: p50 of the pair, against the
  floor measured here in the same round-robin, two fdatasyncs of a 128-byte pwrite in the same
  directory + 300 us (the target);
  and against the same pair called in this process on a journal of its own (what the agent
  adds is the difference), and through the least server there can be on asyncio: the journal's
  begin_payment/finish_payment behind a protocol that only frames these requests (no checks,
  no routing; what is left of the target once the socket's round trips and the journal are
  paid);
* the same pair with durability ``none``, through a second agent and in-process, side by side:
  what the agent's HTTP layer costs a request, with the disk out of the figure (a shared
  machine's disk moves the durable figures run to run);
* 50 clients at once, each with its own connection, beginning and finishing payments: every
  request must get its 2xx, and every payment must be there afterwards.

``--beside CHECKOUT`` runs a second agent from another checkout (with its compiled core, e.g. a
``git worktree`` of main) and times its last-transaction and begin + finish requests in the
same round-robin, one of its requests beside each of this one's: old and new under the same
moment of a shared machine.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

import posfast  # noqa: E402


class Conn:
    """One keep-alive HTTP/1.1 connection over the agent's Unix socket."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""

    def send(self, method, path, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.sock.sendall(b"%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (method.encode(), path.encode(), len(data), data))
        return self.read()

    def send_raw(self, request):
        self.sock.sendall(request)
        return self.read()

    def read(self):
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(rest) < length:
            rest += self._recv()
        self.buf = rest[length:]
        return int(head[9:12]), rest[:length]

    def _recv(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the agent closed the connection")
        return chunk

    def close(self):
        self.sock.close()


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


class Floor:
    """The physical floor: an fdatasync after a 128-byte pwrite in the journal's directory,
    sampled in the same round-robin as the agent's requests (a shared disk's load moves
    both alike)."""

    def __init__(self, folder):
        self.path = os.path.join(folder, "floor.bin")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.pwrite(self.fd, b"\0" * (1 << 20), 0)
        os.fsync(self.fd)
        self.times, self.n = [], 0

    def sample(self):
        self.n += 1
        os.pwrite(self.fd, os.urandom(128), (self.n * 128) % (1 << 20))
        t = time.perf_counter()
        os.fdatasync(self.fd)
        self.times.append(time.perf_counter() - t)

    def close(self):
        os.close(self.fd)
        os.unlink(self.path)


#: The least an asyncio server can do for the bench's begin and finish: frame the request, call
#: the journal, answer (no checks, no routing, no JSON schema): a bound, not an agent.
LEAST_SERVER = r"""
import asyncio, json, sys
import posfast
journal = posfast.Journal.open(sys.argv[1])


class Least(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buf = transport, b""

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if len(self.buf) < end + 4 + length:
                return
            body, self.buf = self.buf[end + 4:end + 4 + length], self.buf[end + 4 + length:]
            if head.startswith(b"POST /v1/payments "):
                doc = json.loads(body)
                txn = journal.begin_payment(terminal=doc["terminal"], amount=doc["amount"],
                                            client_ref=doc["client_ref"])
                out, status = json.dumps({"txn_id": txn}).encode(), b"201 Created"
            else:
                journal.finish_payment(int(head.split(b"/")[3]), json.loads(body)["state"])
                out, status = b"{}", b"200 OK"
            self.transport.write(b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status, len(out), out))


async def main():
    await asyncio.get_running_loop().create_unix_server(Least, sys.argv[1] + ".sock")
    print("listening", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def start_least_server(folder, env):
    journal = os.path.join(folder, "least.pfj")
    posfast.Journal.create(journal, capacity=1 << 17).close()
    proc = subprocess.Popen([sys.executable, "-c", LEAST_SERVER, journal], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env)
    line = proc.stdout.readline().decode()
    if "listening" not in line:
        raise SystemExit("the least server did not start: " + line + proc.stdout.read().decode())
    return proc, Conn(journal + ".sock")


def pair_without_disk(folder, env, payments):
    """begin + finish through an agent with durability none, and in-process, alternating."""
    journal = os.path.join(folder, "nodisk.pfj")
    posfast.Journal.create(journal, capacity=1 << 17).close()
    code = "import sys; from posfast.agent import run_agent; run_agent(sys.argv[1], durability='none')"
    proc = subprocess.Popen([sys.executable, "-c", code, journal], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env)
    try:
        line = proc.stdout.readline().decode()
        if "listening" not in line:
            raise SystemExit("the agent did not start: " + line + proc.stdout.read().decode())
        conn = Conn(journal + ".sock")
        own = posfast.Journal.create(os.path.join(folder, "nodisk-direct.pfj"), capacity=1 << 17,
                                     durability="none")
        through, direct = [], []
        for n in range(payments + 50):
            t = time.perf_counter()
            txn = own.begin_payment(terminal=4, amount=500, client_ref="n%d" % n)
            own.finish_payment(txn, "approved")
            took = time.perf_counter() - t
            t = time.perf_counter()
            status, body = conn.send("POST", "/v1/payments", {"terminal": 4, "amount": 500, "client_ref": "n%d" % n})
            assert status == 201, body
            status, body = conn.send("POST", "/v1/payments/%d/finish" % json.loads(body)["txn_id"],
                                     {"state": "approved"})
            assert status == 200, body
            if n >= 50:                           # the first 50: warm-up
                through.append(time.perf_counter() - t)
                direct.append(took)
        conn.close()
        own.close()
    finally:
        proc.terminate()
        proc.wait(30)
    return through, direct


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000, help="last-transaction requests timed")
    ap.add_argument("--payments", type=int, default=300, help="begin+finish pairs timed")
    ap.add_argument("--clients", type=int, default=50, help="concurrent clients")
    ap.add_argument("--per-client", type=int, default=20, help="payments per concurrent client")
    ap.add_argument("--dir", help="where to put the journal (default: a temp dir)")
    ap.add_argument("--beside", metavar="CHECKOUT", help="also time the agent of this checkout, "
                    "request by request beside this one's")
    args = ap.parse_args()
    folder = tempfile.mkdtemp(prefix="bench-agent-", dir=args.dir)
    journal = os.path.join(folder, "till.pfj")
    posfast.Journal.create(journal, capacity=1 << 17).close()
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, "-m", "posfast", "agent", journal], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env)
    beside_proc = beside = None
    try:
        line = proc.stdout.readline().decode()
        if "listening" not in line:
            raise SystemExit("the agent did not start: " + line + proc.stdout.read().decode())
        sock_path = journal + ".sock"
        conn = Conn(sock_path)
        if args.beside:
            other = os.path.join(folder, "beside.pfj")
            posfast.Journal.create(other, capacity=1 << 17).close()
            beside_proc = subprocess.Popen([sys.executable, "-m", "posfast", "agent", other], stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, cwd=folder,
                                           env=dict(os.environ, PYTHONPATH=os.path.abspath(args.beside)))
            line = beside_proc.stdout.readline().decode()
            if "listening" not in line:
                raise SystemExit("the agent of %s did not start: %s%s" % (args.beside, line,
                                                                          beside_proc.stdout.read().decode()))
            beside = Conn(other + ".sock")
        conns = [conn] + ([beside] if beside else [])
        for c in conns:
            for n in range(50):                   # some history on terminal 3
                status, body = c.send("POST", "/v1/payments", {"terminal": 3, "amount": 100 + n})
                txn = json.loads(body)["txn_id"]
                c.send("POST", "/v1/payments/%d/finish" % txn, {"state": "approved"})
        last_req = b"GET /v1/terminals/3/last-transaction HTTP/1.1\r\nHost: localhost\r\n\r\n"
        for _ in range(200):
            for c in conns:
                c.send_raw(last_req)
        last, last_beside = [], []
        for n in range(args.requests):
            for c in (conns if n % 2 else conns[::-1]):
                t = time.perf_counter()
                status, _ = c.send_raw(last_req)
                (last if c is conn else last_beside).append(time.perf_counter() - t)
                assert status == 200
        pairs, pairs_beside, direct, least, floor_of = [], [], [], [], Floor(folder)
        own = posfast.Journal.create(os.path.join(folder, "direct.pfj"), capacity=1 << 17)
        least_proc, least_conn = start_least_server(folder, env)
        for n in range(args.payments):
            floor_of.sample()
            floor_of.sample()
            t = time.perf_counter()
            txn = own.begin_payment(terminal=4, amount=500, client_ref="b%d" % n)
            own.finish_payment(txn, "approved")
            direct.append(time.perf_counter() - t)
            t = time.perf_counter()
            status, body = least_conn.send("POST", "/v1/payments", {"terminal": 4, "amount": 500,
                                                                    "client_ref": "b%d" % n})
            least_conn.send("POST", "/v1/payments/%d/finish" % json.loads(body)["txn_id"], {"state": "approved"})
            least.append(time.perf_counter() - t)
            for c in (conns if n % 2 else conns[::-1]):
                t = time.perf_counter()
                status, body = c.send("POST", "/v1/payments", {"terminal": 4, "amount": 500, "client_ref": "b%d" % n})
                assert status == 201, body
                txn = json.loads(body)["txn_id"]
                status, body = c.send("POST", "/v1/payments/%d/finish" % txn, {"state": "approved"})
                (pairs if c is conn else pairs_beside).append(time.perf_counter() - t)
                assert status == 200, body
        if beside is not None:
            beside.close()
            beside_proc.terminate()
            beside_proc.wait(30)
        floor = statistics.median(floor_of.times)
        floor_of.close()
        own.close()
        conn.close()
        least_conn.close()
        least_proc.terminate()
        least_proc.wait(30)

        errors, done = [], []

        def client(k):
            try:
                c = Conn(sock_path)
                for n in range(args.per_client):
                    status, body = c.send("POST", "/v1/payments", {"terminal": 100 + k, "amount": 1 + n,
                                                                   "client_ref": "c%d-%d" % (k, n)})
                    if status != 201:
                        errors.append((status, body))
                        return
                    txn = json.loads(body)["txn_id"]
                    status, body = c.send("POST", "/v1/payments/%d/finish" % txn, {"state": "approved"})
                    if status != 200:
                        errors.append((status, body))
                        return
                    status, body = c.send("GET", "/v1/terminals/%d/last-transaction" % (100 + k))
                    if status != 200 or json.loads(body)["txn_id"] != txn:
                        errors.append((status, body))
                        return
                    done.append(txn)
                c.close()
            except Exception as exc:              # counted, never hidden
                errors.append(repr(exc))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        concurrent_s = time.perf_counter() - t
        check = Conn(sock_path)
        missing = 0
        for k in range(args.clients):
            for n in range(args.per_client):
                status, body = check.send("GET", "/v1/payments/find?client_ref=c%d-%d" % (k, n))
                if status != 200 or json.loads(body)["state"] != "approved":
                    missing += 1
        check.close()
        proc.terminate()
        proc.wait(30)
        lean, lean_direct = pair_without_disk(folder, env, args.payments)
    finally:
        for running in (proc, beside_proc):
            if running is not None and running.poll() is None:
                running.terminate()
                running.wait(30)
        shutil.rmtree(folder, ignore_errors=True)

    us = 1e6
    target_pair = 2 * floor + 300e-6
    rows = [
        ("last-transaction p50", "%.0f us" % (pct(last, 50) * us), "<= 150 us", pct(last, 50) <= 150e-6),
        ("last-transaction p99", "%.0f us" % (pct(last, 99) * us), "<= 1000 us", pct(last, 99) <= 1e-3),
        ("begin + finish p50", "%.0f us" % (pct(pairs, 50) * us),
         "<= %.0f us (2 x fdatasync %.0f us + 300)" % (target_pair * us, floor * us), pct(pairs, 50) <= target_pair),
        ("begin + finish p99", "%.0f us" % (pct(pairs, 99) * us), "-", True),
        ("  the same in-process p50", "%.0f us" % (pct(direct, 50) * us),
         "(Journal.begin_payment + finish_payment, no agent)", True),
        ("  the same through the least server p50", "%.0f us" % (pct(least, 50) * us),
         "(asyncio, the journal, no checks: %.0f us over 2 x fdatasync)" % ((pct(least, 50) - 2 * floor) * us),
         True),
        ("begin + finish p50, durability none", "%.0f us" % (pct(lean, 50) * us),
         "(in-process %.0f us: the HTTP layer costs %.0f us a request)" % (
             pct(lean_direct, 50) * us, (pct(lean, 50) - pct(lean_direct, 50)) / 2 * us), True),
    ]
    if args.beside:
        name = os.path.basename(os.path.abspath(args.beside))
        rows += [
            ("last-transaction p50, p99 (%s)" % name, "%.0f, %.0f us" % (pct(last_beside, 50) * us,
                                                                    pct(last_beside, 99) * us), "(beside)", True),
            ("begin + finish p50, p99 (%s)" % name, "%.0f, %.0f us" % (pct(pairs_beside, 50) * us,
                                                                  pct(pairs_beside, 99) * us), "(beside)", True),
        ]
    rows += [
        ("%d clients x %d payments" % (args.clients, args.per_client),
         "%d errors, %d missing, %.2f s (%.0f payments/s)" % (len(errors), missing, concurrent_s,
                                                              len(done) / concurrent_s),
         "no error", not errors and not missing),
    ]
    width = max(len(r[0]) for r in rows)
    wide = max(len(r[1]) for r in rows)
    print("%-*s  %-*s  %s" % (width, "measure", wide, "measured", "target"))
    for name, value, target, ok in rows:
        print("%-*s  %-*s  %s %s" % (width, name, wide, value, target, "ok" if ok else "MISSED"))
    print("(load average %.2f, %d CPUs; python %s)" % (os.getloadavg()[0], os.cpu_count() or 0,
                                                     sys.version.split()[0]))
    if errors:
        print("errors:", errors[:5])


if __name__ == "__main__":
    main()
