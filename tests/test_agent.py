"""posfast agent: a real agent process on a Unix socket (and loopback TCP), called as a POS
in another language would call it: JSON over HTTP.  Values a cashier or a POS developer
checks: the txn ids, states, amounts, receipt copies, the refusal's field."""
import json
import socket
import os
import stat

import pytest

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets here (Windows: "
                                "the agent's named pipes are not supported yet)")

import posfast  # noqa: E402
from posfast.agent import find_agent, load_openapi  # noqa: E402
from posfast.cli import main  # noqa: E402
from posfast.printing import printed_text  # noqa: E402

from _agent_helpers import RECEIPT, AgentProcess, new_journal  # noqa: E402


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    folder = tmp_path_factory.mktemp("agent")
    path = new_journal(folder / "till.pfj")
    proc = AgentProcess(path, "--printer", folder / "printer.bin")
    proc.folder = folder
    yield proc
    assert proc.stop() == 0, proc.output()


@pytest.fixture
def client(agent):
    with agent.client() as c:
        yield c


def begin(client, **fields):
    return client.call("POST", "/v1/payments", fields)


def test_socket_is_beside_the_journal_mode_0600_with_a_live_discovery_file(agent):
    assert agent.socket == agent.journal + ".sock"
    assert stat.S_IMODE(os.stat(agent.socket).st_mode) == 0o600
    info = json.load(open(agent.journal + ".agent"))
    assert stat.S_IMODE(os.stat(agent.journal + ".agent").st_mode) == 0o600
    assert (info["socket"], info["pid"]) == (agent.socket, agent.proc.pid)
    found = find_agent(agent.journal)
    assert found is not None and found.socket_path == agent.socket
    found.close()


def test_begin_is_pending_then_finish_approves_and_resends_are_the_same_payment(client):
    status, doc = begin(client, terminal=3, amount=4500, currency=156, client_ref="T3-0001",
                        order_ref="ORD-20261201-0001", channel="unionpay", receipt=RECEIPT)
    assert status == 201
    assert doc["created"] is True and doc["state"] == "pending" and doc["terminal"] == 3
    txn = doc["txn_id"]
    # the POS timed out and resends: the same payment, nothing new written
    status, again = begin(client, terminal=3, amount=4500, client_ref="T3-0001", receipt=RECEIPT)
    assert (status, again["txn_id"], again["created"], again["receipt_no"]) == (200, txn, False, doc["receipt_no"])
    status, by_order = begin(client, terminal=3, amount=4500, order_ref="ORD-20261201-0001")
    assert (status, by_order["txn_id"]) == (200, txn)
    status, last = client.call("GET", "/v1/terminals/3/last-transaction")
    assert (status, last["txn_id"], last["state"], last["in_doubt"]) == (200, txn, "pending", True)

    status, done = client.call("POST", "/v1/payments/%d/finish" % txn,
                               {"state": "approved", "auth_code": "A1B2C3", "rrn": "000000123456",
                                "pan_last4": "4242", "host_ref": "4200001234202612011234567890"})
    assert status == 200 and done["state"] == "approved" and done["seq"] > txn
    status, repeat = client.call("POST", "/v1/payments/%d/finish" % txn, {"state": "approved"})
    assert (status, repeat["seq"]) == (200, done["seq"])          # the same answer: idempotent
    status, refused = client.call("POST", "/v1/payments/%d/finish" % txn, {"state": "declined"})
    assert status == 409 and refused["reason"] == "conflict" and "already approved" in refused["message"]

    status, last = client.call("GET", "/v1/terminals/3/last-transaction")
    assert (last["txn_id"], last["state"], last["amount"], last["auth_code"], last["pan_last4"]) == \
        (txn, "approved", 4500, "A1B2C3", "4242")
    for query in ("order_ref=ORD-20261201-0001", "host_ref=4200001234202612011234567890",
                  "client_ref=T3-0001", "receipt_code=3-%06d" % doc["receipt_no"]):
        status, found = client.call("GET", "/v1/payments/find?" + query)
        assert (status, found["txn_id"], found["state"]) == (200, txn, "approved"), query
    status, missing = client.call("GET", "/v1/payments/find?order_ref=NOPE")
    assert (status, missing["field"]) == (404, "order_ref")


def test_print_then_reprint_by_receipt_code_are_journaled_with_their_outcome(agent, client):
    _, doc = begin(client, terminal=5, amount=4500, client_ref="T5-print", receipt=RECEIPT)
    txn, code = doc["txn_id"], "5-%06d" % doc["receipt_no"]
    status, refused = client.call("POST", "/v1/receipts/print", {"txn_id": txn})
    assert status == 409 and "PENDING" in refused["message"]       # no slip for a payment in doubt
    client.call("POST", "/v1/payments/%d/finish" % txn, {"state": "approved", "auth_code": "OK1234"})
    printer = agent.folder / "printer.bin"
    before = printer.stat().st_size if printer.exists() else 0
    status, original = client.call("POST", "/v1/receipts/print", {"txn_id": txn})
    assert status == 200 and (original["outcome"], original["copy"]) == ("ok", 0)
    status, again = client.call("POST", "/v1/receipts/print", {"txn_id": txn})
    assert status == 409 and "copy" in again["message"]            # never a second original
    status, copy = client.call("POST", "/v1/receipts/reprint", {"receipt_code": code})
    assert status == 200 and (copy["outcome"], copy["copy"]) == ("ok", 1)
    text = printed_text(printer.read_bytes()[before:])
    assert "宫保鸡丁" in text and "COPY 1" in text and code in text
    status, rec = client.call("GET", "/v1/records/%d" % copy["seq"])
    assert (rec["kind"], rec["state"], rec["txn_id"]) == ("print", "ok", txn)
    status, last = client.call("GET", "/v1/terminals/5/last-transaction")
    assert last["receipt_printed"] is True
    status, preview = client.call("POST", "/v1/receipts/reprint", {"seq": txn, "preview": True})
    assert (status, preview["outcome"], preview["copy"]) == (200, "preview", 2) and "COPY 2" in preview["text"]


def test_in_doubt_query_pages_and_totals(client):
    _, a = begin(client, terminal=7, amount=1000, client_ref="T7-a")
    client.call("POST", "/v1/payments/%d/finish" % a["txn_id"], {"state": "approved"})
    _, b = begin(client, terminal=7, amount=250, client_ref="T7-b")
    client.call("POST", "/v1/payments/%d/finish" % b["txn_id"], {"state": "declined"})
    _, c = begin(client, terminal=7, amount=99, client_ref="T7-c")
    status, doubt = client.call("GET", "/v1/payments/in-doubt?terminal=7")
    assert status == 200 and [p["txn_id"] for p in doubt["payments"]] == [c["txn_id"]]
    seqs, after = [], 0
    while True:                                   # pages of 2 until next_after_seq is null
        status, page = client.call("GET", "/v1/records?terminal=7&limit=2&after_seq=%d" % after)
        assert status == 200 and len(page["records"]) <= 2
        seqs += [r["seq"] for r in page["records"]]
        if page["next_after_seq"] is None:
            break
        after = page["next_after_seq"]
    assert len(seqs) == 5 and seqs == sorted(seqs)
    day = page["records"][0]["day"]
    status, sales = client.call("GET", "/v1/records?terminal=7&kind=sale&state=approved&day=" + day)
    assert [r["txn_id"] for r in sales["records"]] == [a["txn_id"]]
    status, totals = client.call("GET", "/v1/totals?terminal=7&day=" + day)
    cny = totals["currencies"]["156"]
    assert (cny["net"], cny["by_state"]["approved"]["count"], cny["by_state"]["declined"]["amount"]) == (1000, 1, 250)
    assert cny["by_state"]["pending"]["count"] == 1


def test_status_verify_and_openapi(client):
    status, doc = client.call("GET", "/v1/status")
    assert status == 200 and doc["agent"]["pid"] > 0 and doc["readonly"] is False
    assert doc["agent"]["printer"].startswith("file:")
    status, report = client.call("GET", "/v1/verify")
    assert status == 200 and report["ok"] is True and report["checked"] == doc["head_seq"]
    status, spec = client.call("GET", "/openapi.json")
    assert status == 200 and spec == load_openapi() and spec["openapi"] == "3.1.0"


BAD = [
    # (path, body, expected status, field)
    ("/v1/payments", b"{not json", 400, None),
    ("/v1/payments", b"[1, 2]", 400, None),
    ("/v1/payments", b"", 400, None),
    ("/v1/payments", b'{"terminal": 3}', 400, "amount"),
    ("/v1/payments", b'{"terminal": "3", "amount": 1}', 400, "terminal"),
    ("/v1/payments", b'{"terminal": 3, "amount": 12.5}', 400, "amount"),
    ("/v1/payments", b'{"terminal": 3, "amount": true}', 400, "amount"),
    ("/v1/payments", b'{"terminal": 3, "amount": -1}', 400, "amount"),
    ("/v1/payments", b'{"terminal": 3, "amount": NaN}', 400, None),
    ("/v1/payments", b'{"terminal": 3, "amount": 1, "colour": "red"}', 400, "colour"),
    ("/v1/payments", b'{"terminal": 3, "amount": 1, "kind": "gift"}', 400, "kind"),
    ("/v1/payments", b'{"terminal": 3, "amount": 1, "client_ref": "12345678901234567"}', 400, "client_ref"),
    ("/v1/payments", b'{"terminal": 4294967296, "amount": 1}', 400, "terminal"),
    ("/v1/payments", b'{"terminal": 3, "amount": 1, "receipt": {"items": []}}', 400, "receipt.merchant"),
    ("/v1/payments", b'{"terminal": 3, "amount": 1, "receipt": {"merchant": "M", "colour": 1}}', 400, "receipt"),
    ("/v1/payments", b'{"terminal": 3, "amount": 1, "kind": "refund"}', 409, "ref_seq"),
    ("/v1/payments", "[" * 100000, 400, None),
    ("/v1/payments", b'{"terminal": 3, "amount": 1, "receipt": {"merchant": "%s"}}' % (b"x" * 300000), 413, None),
    ("/v1/payments/abc/finish", b'{"state": "approved"}', 400, "txn_id"),
    ("/v1/payments/999999/finish", b'{"state": "approved"}', 404, "txn_id"),
    ("/v1/payments/1/finish", b'{"state": "pending"}', 400, "state"),
    ("/v1/payments/1/finish", b'{}', 400, "state"),
    ("/v1/payments/1/finish", b'{"state": "approved", "pan_last4": "4111111111111111"}', 400, "pan_last4"),
    ("/v1/payments/999999/resolve", b'{"state": "approved"}', 404, "txn_id"),
    ("/v1/receipts/reprint", b'{"seq": 1, "receipt_code": "3-1"}', 400, "receipt_code"),
    ("/v1/receipts/reprint", b'{"receipt_code": "three"}', 400, "receipt_code"),
    ("/v1/receipts/reprint", b'{"seq": 999999}', 409, "seq"),
    ("/v1/receipts/print", b'{"txn_id": 0}', 400, "txn_id"),
    ("/v1/days/close", b'{"day": "2026-13-45"}', 400, "day"),
    ("/v1/days/close", b'{"day": "tomorrow"}', 400, "day"),
    ("/v1/sync", b'{"to": "ftp://x"}', 400, "to"),
    ("/v1/sync", b'{}', 409, "to"),
]


@pytest.mark.parametrize("path,body,expected,field", BAD)
def test_every_bad_request_is_a_4xx_json_error_naming_the_field(client, path, body, expected, field):
    status, doc = _raw(client, path, body)
    assert status == expected, doc
    assert doc["ok"] is False and doc["field"] == field and doc["message"]
    assert "Traceback" not in doc["message"]


def _raw(client, path, body):
    conn = client._connection()
    conn.request("POST", path, body=body if isinstance(body, bytes) else body.encode(),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    raw = resp.read()
    return resp.status, json.loads(raw)


@pytest.mark.parametrize("path,status,field", [
    ("/v1/records?terminal=x", 400, "terminal"),
    ("/v1/records?limit=0", 400, "limit"),
    ("/v1/records?limit=5000", 400, "limit"),
    ("/v1/records?colour=red", 400, "colour"),
    ("/v1/records?terminal=1&terminal=2", 400, "terminal"),
    ("/v1/records?kind=gift", 400, "kind"),
    ("/v1/totals", 400, "day"),
    ("/v1/payments/find", 400, "client_ref"),
    ("/v1/payments/find?client_ref=a&order_ref=b", 400, "order_ref"),
    ("/v1/records/0", 400, "seq"),
    ("/v1/records/99999999", 404, "seq"),
    ("/v1/payments/99999999", 404, "txn_id"),
    ("/v1/terminals/999/last-transaction", 404, "terminal"),
    ("/v1/no-such-thing", 404, None),
])
def test_bad_queries_and_paths_are_4xx_json_naming_the_field(client, path, status, field):
    got, doc = client.call("GET", path)
    assert (got, doc["ok"], doc["field"]) == (status, False, field), doc


def test_wrong_method_is_405_json(client):
    status, doc = client.call("DELETE", "/v1/payments")
    assert status == 405 and doc["ok"] is False


def test_cli_write_verbs_go_through_the_running_agent(agent, client, tmp_path, capsys, monkeypatch):
    _, doc = begin(client, terminal=8, amount=4500, client_ref="T8-1", receipt=RECEIPT)
    txn = doc["txn_id"]
    # the journal is the agent's: opening it for writing is refused, the CLI goes through the agent
    with pytest.raises(posfast.JournalLocked):
        posfast.Journal.open(agent.journal)
    assert main(["resolve", agent.journal, str(txn), "approved", "--auth-code", "CLI001"]) == 0
    out = capsys.readouterr().out
    assert "resolved as APPROVED" in out and "through the agent" in out
    assert client.call("GET", "/v1/payments/%d" % txn)[1]["auth_code"] == "CLI001"
    assert main(["resolve", agent.journal, str(txn), "declined"]) == 65       # not in doubt: EX_DATAERR
    assert "not in doubt" in capsys.readouterr().err
    out_file = tmp_path / "copy.bin"
    assert main(["reprint", agent.journal, "--code", "8-%06d" % doc["receipt_no"], "--out", str(out_file)]) == 0
    assert "reprint copy 1: ok through the agent" in capsys.readouterr().out
    assert "COPY 1" in printed_text(out_file.read_bytes())
    monkeypatch.chdir(tmp_path)           # a relative back office is this shell's, not the agent's
    assert main(["sync", agent.journal, "--to", "sqlite:///back.db", "--create"]) == 0
    out = capsys.readouterr().out
    head = client.call("GET", "/v1/status")[1]["head_seq"]
    assert "watermark now %d through the agent" % head in out
    from posfast.sync import SqliteTarget
    back = SqliteTarget(str(tmp_path / "back.db"))
    assert back.count() == head
    back.close()
    # read verbs still open the journal read-only beside the agent
    assert main(["last", agent.journal, "--terminal", "8", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["auth_code"] == "CLI001"


def test_close_day_through_the_agent_and_a_second_close_refused(tmp_path, capsys):
    path = new_journal(tmp_path / "day.pfj")
    with AgentProcess(path) as agent, agent.client() as client:
        _, doc = begin(client, terminal=2, amount=700, client_ref="D1", ts=1795140000_000000)
        client.call("POST", "/v1/payments/%d/finish" % doc["txn_id"], {"state": "approved"})
        assert main(["close-day", path, "--day", "2026-11-20", "--format", "json"]) == 0
        z = json.loads(capsys.readouterr().out)
        assert (z["day"], z["z_no"], z["day_totals"]["156"]["net"]) == ("2026-11-20", 1, 700)
        assert main(["close-day", path, "--day", "2026-11-20"]) == 73           # EX_CANTCREAT
        assert "already closed" in capsys.readouterr().err
        status, refused = client.call("POST", "/v1/days/close", {"day": "2026-11-20"})
        assert status == 409 and refused["reason"] == "conflict"
    # stopped cleanly: socket and discovery file gone, the CLI writes directly again
    assert not os.path.exists(path + ".sock") and not os.path.exists(path + ".agent")
    assert find_agent(path) is None
    assert main(["close-day", path, "--day", "2026-11-20"]) == 73


def test_a_second_agent_on_the_same_journal_is_refused(agent, tmp_path):
    import subprocess
    import sys

    from _child_env import CHILD_CWD, child_env
    proc = subprocess.run([sys.executable, "-m", "posfast", "agent", agent.journal, "--socket",
                           str(tmp_path / "other.sock")], capture_output=True, text=True, timeout=60,
                          env=child_env(), cwd=CHILD_CWD)
    assert proc.returncode == 75                                          # EX_TEMPFAIL
    assert "open for writing by process %d" % agent.proc.pid in proc.stderr


def test_tcp_needs_the_bearer_token_and_non_loopback_needs_tls(tmp_path):
    path = new_journal(tmp_path / "tcp.pfj")
    token_file = tmp_path / "token"
    token_file.write_text("agent-token-3c9a5e1f7b2d\n")
    with AgentProcess(path, "--listen", "127.0.0.1:0", "--token-file", token_file) as agent:
        assert agent.socket is None and agent.url.startswith("http://127.0.0.1:")
        with agent.client() as anonymous:
            status, doc = anonymous.call("GET", "/v1/status")
            assert (status, doc["reason"], doc["field"]) == (401, "auth", "Authorization")
            assert anonymous.call("GET", "/openapi.json")[0] == 200          # the document is public
        with agent.client(token="agent-token-3c9a5e1f7b2d") as client:
            status, doc = client.call("POST", "/v1/payments", {"terminal": 1, "amount": 5})
            assert status == 201 and doc["txn_id"] == 1
        found = find_agent(path)                   # the CLI finds it and reads its token file
        assert found is not None and found.token == "agent-token-3c9a5e1f7b2d"
        found.close()
    assert main(["agent", path, "--listen", "0.0.0.0:0", "--token-file", str(token_file)]) == 2
    assert main(["agent", path, "--listen", "127.0.0.1:0"]) == 2               # no token file


def test_background_sync_to_the_back_office_and_sync_now(tmp_path):
    from posfast.sync import SqliteTarget
    from _agent_helpers import wait_for
    back = tmp_path / "back.db"
    SqliteTarget(str(back), create=True).close()
    path = new_journal(tmp_path / "synced.pfj")
    with AgentProcess(path, "--sync-to", "sqlite:///%s" % back, "--sync-interval", "0.2") as agent, \
            agent.client() as client:
        for n in range(5):
            _, doc = begin(client, terminal=1, amount=100 + n, client_ref="S%d" % n)
            client.call("POST", "/v1/payments/%d/finish" % doc["txn_id"], {"state": "approved"})

        def held():
            target = SqliteTarget(str(back))
            try:
                return target.count()
            finally:
                target.close()
        assert wait_for(lambda: held() == 10, 30), held()           # the syncer thread sent them
        # (the back office commits before the journal's watermark moves: wait for both)
        assert wait_for(lambda: client.call("GET", "/v1/status")[1]["sync_watermark"] == 10, 30)
        status, doc = client.call("GET", "/v1/status")
        assert doc["sync_watermark"] == 10 and doc["agent"]["syncers"][0]["last_error"] is None
        begin(client, terminal=1, amount=7, client_ref="S-now")
        status, synced = client.call("POST", "/v1/sync")            # no body: the --sync-to targets, now
        assert status == 200 and synced["sync_watermark"] == 11 and synced["results"][0]["watermark"] == 11


def test_tls_on_the_tcp_listener(tmp_path):
    import shutil
    import ssl
    import subprocess
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "agent.key", "-out",
                    "agent.crt", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   cwd=tmp_path, check=True, capture_output=True)
    token_file = tmp_path / "token"
    token_file.write_text("agent-token-tls-5e1f7b2d4a6c")
    path = new_journal(tmp_path / "tls.pfj")
    with AgentProcess(path, "--listen", "127.0.0.1:0", "--token-file", token_file, "--tls-cert",
                      tmp_path / "agent.crt", "--tls-key", tmp_path / "agent.key") as agent:
        assert agent.url.startswith("https://127.0.0.1:")
        with agent.client(token="agent-token-tls-5e1f7b2d4a6c", ca_file=str(tmp_path / "agent.crt")) as client:
            assert client.call("POST", "/v1/payments", {"terminal": 2, "amount": 9})[0] == 201
        with agent.client(token="agent-token-tls-5e1f7b2d4a6c") as untrusting:    # the system's CAs
            with pytest.raises(ssl.SSLError):
                untrusting.call("GET", "/v1/health")


def test_an_agent_started_with_a_printer_profile_prints_what_that_printer_can(tmp_path):
    """`--printer-profile ZJ-5870` (a cheap 58 mm printer: no native QR, no cutter): the
    agent's slips carry a raster QR and a feed, never GS ( k or GS V."""
    pytest.importorskip("escpos", reason="printer profiles come with python-escpos (posfast[printer])")
    path = new_journal(tmp_path / "till.pfj")
    printer = tmp_path / "zj.bin"
    proc = AgentProcess(path, "--printer", printer, "--printer-profile", "ZJ-5870")
    try:
        with proc.client() as c:
            _, doc = c.call("POST", "/v1/payments", {"terminal": 2, "amount": 900, "receipt": RECEIPT})
            c.call("POST", "/v1/payments/%d/finish" % doc["txn_id"], {"state": "approved"})
            status, out = c.call("POST", "/v1/receipts/print", {"txn_id": doc["txn_id"]})
            assert (status, out["outcome"]) == (200, "ok")
        sent = printer.read_bytes()
        assert b"\x1d(k" not in sent and b"\x1dV" not in sent     # no native QR, no cut
        assert b"\x1dv0" in sent                                   # the QR as a raster image
        assert "宫保鸡丁" in printed_text(sent)
    finally:
        assert proc.stop() == 0, proc.output()
