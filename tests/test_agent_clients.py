"""Clients not written in Python call a real agent over its Unix socket: curl (record a
payment, read the last transaction, reprint), a single-file Java program (JDK 16+, no
library) and a Node.js script (its http module, nothing from npm).  Each skips with the
reason where its tool is missing; .ci/run installs a JDK."""
import json
import socket
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets here (Windows: "
                                "the agent's named pipes are not supported yet)")

from posfast.printing import printed_text  # noqa: E402

from _agent_helpers import HERE, RECEIPT, AgentProcess, new_journal  # noqa: E402

CLIENTS = HERE + "/clients"


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clients")
    proc = AgentProcess(new_journal(folder / "till.pfj"), "--printer", folder / "printer.bin")
    proc.printer = folder / "printer.bin"
    yield proc
    proc.stop()


def _lines(stdout):
    """``"<status> <json>"`` lines -> [(status, document)]."""
    out = []
    for line in stdout.strip().splitlines():
        status, _, doc = line.partition(" ")
        out.append((int(status), json.loads(doc)))
    return out


def curl(agent, method, path, body=None):
    args = ["curl", "-sS", "--unix-socket", agent.socket, "-X", method, "-w", "\n%{http_code}",
            "-H", "Content-Type: application/json", "http://localhost" + path]
    if body is not None:
        args += ["--data-binary", json.dumps(body)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text, _, status = proc.stdout.rpartition("\n")
    return int(status), json.loads(text)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_records_a_payment_reads_the_last_transaction_and_reprints(agent):
    status, begun = curl(agent, "POST", "/v1/payments",
                         {"terminal": 4, "amount": 4500, "client_ref": "CURL-1", "receipt": RECEIPT})
    assert status == 201 and begun["state"] == "pending"
    txn = begun["txn_id"]
    status, done = curl(agent, "POST", "/v1/payments/%d/finish" % txn, {"state": "approved", "auth_code": "CURL01"})
    assert (status, done["state"]) == (200, "approved")
    status, last = curl(agent, "GET", "/v1/terminals/4/last-transaction")
    assert (status, last["txn_id"], last["amount"], last["state"], last["auth_code"]) == \
        (200, txn, 4500, "approved", "CURL01")
    status, copy = curl(agent, "POST", "/v1/receipts/reprint", {"receipt_code": "4-%06d" % begun["receipt_no"]})
    assert (status, copy["outcome"], copy["copy"]) == (200, "ok", 1)
    text = printed_text(agent.printer.read_bytes())
    assert "COPY 1" in text and "CURL01" in text
    status, bad = curl(agent, "POST", "/v1/payments", {"terminal": 4, "amount": "45.00"})
    assert (status, bad["field"]) == (400, "amount")


@pytest.mark.skipif(shutil.which("java") is None, reason="no JDK here (java not on PATH): .ci/run installs one")
def test_a_java_client_records_a_payment_and_reads_it_back(agent):
    proc = subprocess.run(["java", CLIENTS + "/Client.java", agent.socket, "6", "1999", "JAVA-0001"],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "UnixDomainSocketAddress" in proc.stderr:
        pytest.skip("this JDK is older than 16 (no UnixDomainSocketAddress)")
    assert proc.returncode == 0, proc.stderr
    (s1, begun), (s2, done), (s3, last) = _lines(proc.stdout)
    assert (s1, begun["state"], begun["created"]) == (201, "pending", True)
    assert (s2, done["state"], done["txn_id"]) == (200, "approved", begun["txn_id"])
    assert (s3, last["txn_id"], last["amount"], last["state"], last["method"], last["channel"], last["host_ref"]) == \
        (200, begun["txn_id"], 1999, "approved", "qr", "alipay", "2026120122001400001234567890")
    # the same program again (a resend after a timeout): the same payment, not a second one
    again = subprocess.run(["java", CLIENTS + "/Client.java", agent.socket, "6", "1999", "JAVA-0001"],
                           capture_output=True, text=True, timeout=300)
    (s1, resent), _, _ = _lines(again.stdout)
    assert (s1, resent["txn_id"], resent["created"], resent["state"]) == (200, begun["txn_id"], False, "approved")


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_a_node_client_records_a_payment_and_finds_it_by_order_ref(agent):
    proc = subprocess.run(["node", CLIENTS + "/client.js", agent.socket, "9", "880", "WX-ORDER-77"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (s1, begun), (s2, done), (s3, found) = _lines(proc.stdout)
    assert s1 == 201 and s2 == 200 and s3 == 200
    assert (found["txn_id"], found["order_ref"], found["channel"], found["state"], found["auth_code"]) == \
        (begun["txn_id"], "WX-ORDER-77", "wechat", "approved", "NODE01")
