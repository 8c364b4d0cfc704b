"""The agent's own HTTP/1.1 server (posfast/agent/http1.py) on a raw Unix socket: what real
clients send (keep-alive, pipelining, chunked bodies, Expect: 100-continue, HTTP/1.0) is
answered, and what no client should send is refused with a JSON error, never a hang, a 5xx
or a dead agent."""
import json
import socket

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets here")

from _agent_helpers import AgentProcess, new_journal  # noqa: E402


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    folder = tmp_path_factory.mktemp("agent-http")
    proc = AgentProcess(new_journal(folder / "till.pfj"))
    yield proc
    assert proc.stop() == 0, proc.output()
    assert "Traceback" not in proc.output(), proc.output()


def connect(agent):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(agent.socket)
    return sock


def read_replies(sock, count):
    """`count` replies from `sock`: [(status, headers, doc)]."""
    buf, out = b"", []
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if status == 100:
            continue
        length = int(headers["content-length"])
        while len(buf) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
        out.append((status, headers, json.loads(buf[:length])))
        buf = buf[length:]
    return out


def post(path, body, extra=b""):
    data = json.dumps(body).encode()
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
            % (path.encode(), extra, len(data), data))


def test_pipelined_requests_are_answered_in_order_on_one_connection(agent):
    sock = connect(agent)
    sock.sendall(b"".join(post("/v1/payments", {"terminal": 7, "amount": 100 + n, "client_ref": "pipe-%d" % n})
                          for n in range(5)))
    replies = read_replies(sock, 5)
    assert [s for s, _, _ in replies] == [201] * 5
    txns = [doc["txn_id"] for _, _, doc in replies]
    assert txns == sorted(txns) and len(set(txns)) == 5
    sock.sendall(b"GET /v1/terminals/7/last-transaction HTTP/1.1\r\nHost: x\r\n\r\n")
    (status, headers, doc), = read_replies(sock, 1)
    assert (status, doc["txn_id"], doc["amount"]) == (200, txns[-1], 104)
    assert headers["content-type"].startswith("application/json")
    sock.close()


def test_a_request_split_into_single_bytes_is_one_request(agent):
    sock = connect(agent)
    for byte in post("/v1/payments", {"terminal": 7, "amount": 555, "client_ref": "bytewise"}):
        sock.send(bytes([byte]))
    (status, _, doc), = read_replies(sock, 1)
    assert status == 201 and doc["created"] is True
    sock.close()


def test_a_chunked_body_with_expect_100_continue_is_read_whole(agent):
    sock = connect(agent)
    data = json.dumps({"terminal": 7, "amount": 321, "client_ref": "chunky"}).encode()
    sock.sendall(b"POST /v1/payments HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 b"Expect: 100-continue\r\nContent-Type: application/json\r\n\r\n")
    assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
    sock.sendall(b"%x\r\n%s\r\n%x;ext=1\r\n%s\r\n0\r\nX-Trailer: 1\r\n\r\n"
                 % (5, data[:5], len(data) - 5, data[5:]))
    (status, _, doc), = read_replies(sock, 1)
    assert status == 201
    sock.sendall(b"GET /v1/payments/%d HTTP/1.1\r\nHost: x\r\n\r\n" % doc["txn_id"])
    (_, _, payment), = read_replies(sock, 1)
    assert (payment["amount"], payment["client_ref"]) == (321, "chunky")
    sock.close()


def test_http_1_0_gets_its_answer_and_the_connection_closes(agent):
    sock = connect(agent)
    sock.sendall(b"GET /v1/health HTTP/1.0\r\n\r\n")
    (status, headers, doc), = read_replies(sock, 1)
    assert status == 200 and doc["ok"] is True and headers["connection"] == "close"
    assert sock.recv(10) == b""
    sock.close()


@pytest.mark.parametrize("raw,status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /v1/health HTTP/2.0\r\n\r\n", 400),
    (b"GET v1/health HTTP/1.1\r\n\r\n", 400),
    (b"GET /v1/health HTTP/1.1\r\nNo-Colon-Here\r\n\r\n", 400),
    (b"POST /v1/payments HTTP/1.1\r\nContent-Length: 12x\r\n\r\n", 400),
    (b"POST /v1/payments HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
    (b"POST /v1/payments HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST /v1/payments HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    (b"POST /v1/payments HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"POST /v1/payments HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", 413),
    (b"GET /v1/payments/find?client_ref=%ff HTTP/1.1\r\n\r\n", 400),
    (b"GET /v1/health HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
])
def test_malformed_requests_are_a_json_4xx_and_the_agent_lives_on(agent, raw, status):
    sock = connect(agent)
    sock.sendall(raw)
    (got, _, doc), = read_replies(sock, 1)
    assert got == status, doc
    assert doc["ok"] is False and doc["reason"] in ("invalid", "too_large") and doc["message"]
    sock.close()
    sock = connect(agent)
    sock.sendall(b"GET /v1/health HTTP/1.1\r\n\r\n")
    assert read_replies(sock, 1)[0][0] == 200
    sock.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300), st.sampled_from([b"", b"GET / HTTP/1.1\r\n", b"POST /v1/payments HTTP/1.1\r\n"]))
def test_random_bytes_never_get_a_5xx_and_never_stop_the_agent(agent, junk, prefix):
    sock = connect(agent)
    sock.settimeout(0.3)
    try:
        sock.sendall(prefix + junk)
        sock.shutdown(socket.SHUT_WR)
        for status, _, doc in read_replies(sock, 10):
            assert status < 500, doc
    except socket.timeout:            # still waiting for the rest of a request: allowed
        pass
    finally:
        sock.close()
    probe = connect(agent)
    probe.sendall(b"GET /v1/health HTTP/1.1\r\n\r\n")
    assert read_replies(probe, 1)[0][0] == 200
    probe.close()


def test_a_body_over_the_limit_is_drained_and_refused_and_the_connection_goes_on(agent):
    sock = connect(agent)
    big = json.dumps({"terminal": 7, "amount": 1, "receipt": {"merchant": "x" * 300_000}}).encode()
    sock.sendall(b"POST /v1/payments HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big))
    (status, headers, doc), = read_replies(sock, 1)
    assert (status, doc["reason"]) == (413, "too_large") and "connection" not in headers
    sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_replies(sock, 1)[0][0] == 200
    sock.close()
