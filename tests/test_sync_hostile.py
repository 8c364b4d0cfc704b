"""Hostile and careless input against the sync server, HttpTarget and `posfast sync` (issue 10).

Real server on loopback, real TLS (a test CA made with the openssl CLI), real slow
clients over sockets.  Each test names the case it holds in tests/RELIABILITY.md.
"""
import base64
import http.client
import http.server
import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid

import numpy as np
import pytest

pytest.importorskip("aiohttp", reason="the sync server needs aiohttp (pip install 'posfast[server]')")

import posfast  # noqa: E402
from posfast import server as server_mod  # noqa: E402
from posfast.cli import main  # noqa: E402
from posfast.server import load_tokens, parse_tokens, server_ssl_context, start_in_thread  # noqa: E402
from posfast.sync import (BackOfficeFull, BackOfficeMissing, HttpTarget, SqliteTarget,  # noqa: E402
                          SyncBadAck, SyncConfigError, SyncRefused, SyncUnavailable, Syncer, encode_batch,
                          target_from_url)

from _sync_helpers import HandJournal, fill_journal, start_serve_process  # noqa: E402

TOK = "till-1-Zq3xR8vL2mPwK9"
TOK2 = "till-2-Hs7Yt4Nc1Bv6Qe"


@pytest.fixture
def hj():
    return HandJournal(0, seed=3)


@pytest.fixture
def srv(tmp_path, hj):
    s = start_in_thread(f"sqlite:///{tmp_path}/back.db", {TOK: hj.journal_id}, create=True)
    s.db = tmp_path / "back.db"
    yield s
    s.stop()


def held(db, jid=None):
    t = SqliteTarget(db)
    try:
        return t.count(jid)
    finally:
        t.close()


def request(url, method, path, body=None, headers=None, context=None):
    host, port = url.split("//")[1].rsplit(":", 1)
    if url.startswith("https"):
        conn = http.client.HTTPSConnection(host, int(port), timeout=30, context=context)
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, resp.getheader("Content-Type"), data


def relink(batch, prev_link):
    """Recompute the links of a (possibly altered) batch from prev_link: what a token holder can do."""
    links = []
    for i in range(len(batch.rows)):
        prev_link = bytes(posfast.chain_link(prev_link, batch.rows[i], batch.payloads[i], batch.exts[i]))
        links.append(prev_link)
    batch.links = links
    return batch


# ----------------------------------------------------------------------------- 1. forged business day

def test_forged_day_is_refused_and_the_genuine_record_still_syncs(srv, hj):
    hj.extend(20)
    target = HttpTarget(srv.url, TOK)
    target.push(hj.batch(1, 10))
    forged = relink(hj.batch(11, 11), hj.links[9])
    forged.rows["day"][0] += 3                              # valid link, another business day
    with pytest.raises(SyncRefused) as info:
        target.push(forged)
    assert (info.value.status, info.value.reason) == (400, "invalid")
    assert "day" in info.value.detail and "seq 11" in info.value.detail
    assert held(srv.db) == 10                               # nothing of the forged batch stored
    ack = target.push(hj.batch(11, 20))                     # the genuine record is not a "fork"
    assert (ack.high_seq, ack.stored) == (20, 10)


def test_day_rule_cannot_change_after_the_first_batch(srv, hj):
    hj.extend(20)
    target = HttpTarget(srv.url, TOK)
    target.push(hj.batch(1, 10))
    other_rule = posfast.DayRule(utc_offset="-05:00")
    lie = hj.batch(11, 20)
    lie.rows["day"] = [other_rule.day_number(int(t)) for t in lie.rows["ts"]]
    lie.day_rule = other_rule
    lie = relink(lie, hj.links[9])
    with pytest.raises(SyncRefused) as info:
        target.push(lie)
    assert info.value.status == 400 and "anchored with" in info.value.detail
    assert held(srv.db) == 10


def test_real_journal_with_a_day_rule_syncs_over_http(tmp_path):
    rule = posfast.DayRule(utc_offset="+08:00", starts_at="04:00")
    with posfast.Journal.create(tmp_path / "till.pfj", capacity=8192, day_rule=rule) as j:
        fill_journal(j, 1500, ts0=1_795_140_000_000_000)
        with start_in_thread(f"sqlite:///{tmp_path}/b.db", {TOK: j.journal_id}, create=True) as s:
            result = Syncer(j, HttpTarget(s.url, TOK), batch=400).run_once()
        assert result.watermark == 1500
    back = SqliteTarget(tmp_path / "b.db")
    assert back.state(j.journal_id).day_rule == (480, 240, "")
    back.close()


# ----------------------------------------------------------------------------- 2. TLS and exact acks

def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA, a server certificate for 127.0.0.1 and a client certificate (openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=posfast test CA", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client", "other"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "2", "-extfile", "san.ext", cwd=d)
    _openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "client.crt", "-days", "2", cwd=d)
    # "other": self-signed, not from the CA
    _openssl("x509", "-req", "-in", "other.csr", "-signkey", "other.key", "-out", "other.crt", "-days", "2", cwd=d)
    (d / "client.pem").write_text((d / "client.crt").read_text() + (d / "client.key").read_text())
    return d


def test_tls_sync_trusts_only_the_given_ca(tmp_path, pki, hj):
    hj.extend(300)
    ctx = server_ssl_context(pki / "server.crt", pki / "server.key")
    with start_in_thread(f"sqlite:///{tmp_path}/b.db", {TOK: hj.journal_id}, create=True, ssl_context=ctx) as s:
        assert s.url.startswith("https://127.0.0.1:")
        with pytest.raises(SyncUnavailable, match="not trusted"):       # system trust store: unknown CA
            HttpTarget(s.url, TOK).push(hj.batch(1, 10))
        with pytest.raises(SyncUnavailable, match="not trusted"):       # the wrong CA
            HttpTarget(s.url, TOK, ca_file=pki / "other.crt").push(hj.batch(1, 10))
        with pytest.raises(SyncUnavailable):                            # plain HTTP to the TLS port
            HttpTarget(s.url.replace("https", "http"), TOK, timeout=5).push(hj.batch(1, 10))
        assert hj.sync_watermark == 0 and held(tmp_path / "b.db") == 0
        result = Syncer(hj, HttpTarget(s.url, TOK, ca_file=pki / "ca.crt"), batch=100).run_once()
        assert (result.sent, result.watermark) == (300, 300)
    assert held(tmp_path / "b.db") == 300


def test_mutual_tls_requires_a_client_certificate(tmp_path, pki, hj):
    hj.extend(40)
    ctx = server_ssl_context(pki / "server.crt", pki / "server.key", client_ca=pki / "ca.crt")
    with start_in_thread(f"sqlite:///{tmp_path}/b.db", {TOK: hj.journal_id}, create=True, ssl_context=ctx) as s:
        with pytest.raises(SyncUnavailable):
            HttpTarget(s.url, TOK, ca_file=pki / "ca.crt", timeout=5).push(hj.batch(1, 10))
        with pytest.raises(SyncUnavailable):                            # a certificate the CA did not sign
            HttpTarget(s.url, TOK, ca_file=pki / "ca.crt", timeout=5,
                       client_cert=(pki / "other.crt", pki / "other.key")).push(hj.batch(1, 10))
        assert held(tmp_path / "b.db") == 0
        HttpTarget(s.url, TOK, ca_file=pki / "ca.crt",
                   client_cert=(str(pki / "client.crt"), str(pki / "client.key"))).push(hj.batch(1, 20))
        HttpTarget(s.url, TOK, ca_file=pki / "ca.crt", client_cert=str(pki / "client.pem")).push(hj.batch(21, 40))
    assert held(tmp_path / "b.db") == 40


def test_serve_and_sync_cli_over_tls(tmp_path, pki, capsys, monkeypatch):
    path = tmp_path / "till.pfj"
    with posfast.Journal.create(path, capacity=1024) as j:
        fill_journal(j, 120)
        jid = j.journal_id
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"{jid}={TOK}\n")
    proc, url = start_serve_process(f"sqlite:///{tmp_path}/b.db", tokens, tmp_path, "--tls-cert",
                                    str(pki / "server.crt"), "--tls-key", str(pki / "server.key"),
                                    "--client-ca", str(pki / "ca.crt"))
    try:
        assert url.startswith("https://")
        monkeypatch.setenv("POSFAST_SYNC_TOKEN", TOK)                # the token from the environment
        assert main(["sync", str(path), "--to", url, "--ca-file", str(pki / "ca.crt"),
                     "--client-cert", str(pki / "client.crt"), "--client-key", str(pki / "client.key")]) == 0
        assert "watermark now 120" in capsys.readouterr().out
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stdout.close()
    assert held(tmp_path / "b.db") == 120


class _FakeServer:
    """An HTTP server that answers every POST with 200 and a body of our choosing."""

    def __init__(self, body_for):
        outer = self
        self.body_for = body_for
        self.posts = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.posts += 1
                body = outer.body_for(doc)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _honest_ack(doc):
    rows = np.frombuffer(base64.b64decode(doc["rows"]), dtype=posfast.RECORD_DTYPE)
    links = base64.b64decode(doc["links"])
    first, count = doc["first_seq"], doc["count"]
    return {"ok": True, "journal_id": doc["journal_id"], "first_seq": first, "last_seq": first + count - 1,
            "count": count, "high_seq": int(rows["seq"][-1]), "stored": count, "duplicates": 0,
            "last_link": base64.b64encode(links[-16:]).decode()}


FAKE_ACKS = {
    "plain text OK": lambda d: b"OK",
    "empty JSON object": lambda d: b"{}",
    "0.1.0-style ack": lambda d: json.dumps({"ok": True, "journal_id": d["journal_id"], "high_seq": 30,
                                             "stored": 30, "duplicates": 0}).encode(),
    "other journal": lambda d: json.dumps({**_honest_ack(d), "journal_id": str(uuid.uuid4())}).encode(),
    "other seq range": lambda d: json.dumps({**_honest_ack(d), "last_seq": d["first_seq"]}).encode(),
    "counts do not add up": lambda d: json.dumps({**_honest_ack(d), "stored": 1}).encode(),
    "wrong last link": lambda d: json.dumps({**_honest_ack(d), "last_link": base64.b64encode(b"x" * 16).decode()
                                             }).encode(),
    "ok false": lambda d: json.dumps({**_honest_ack(d), "ok": False}).encode(),
    "bool counts": lambda d: json.dumps({**_honest_ack(d), "stored": True, "duplicates": 29}).encode(),
}


@pytest.mark.parametrize("case", sorted(FAKE_ACKS))
def test_a_fake_200_never_counts_as_synced(case):
    hj = HandJournal(30, seed=9)
    fake = _FakeServer(FAKE_ACKS[case])
    try:
        with pytest.raises(SyncBadAck):
            Syncer(hj, HttpTarget(fake.url, TOK), batch=30).run_once()
        assert hj.sync_watermark == 0 and fake.posts == 1
    finally:
        fake.close()


def test_an_honest_ack_from_the_fake_is_accepted():
    """The control case: the checks accept what posfast serve really answers."""
    hj = HandJournal(30, seed=9)
    fake = _FakeServer(lambda d: json.dumps(_honest_ack(d)).encode())
    try:
        assert Syncer(hj, HttpTarget(fake.url, TOK), batch=10).run_once().watermark == 30
    finally:
        fake.close()


# ----------------------------------------------------------------------------- 3. slow clients

@pytest.fixture
def strict(tmp_path, hj):
    s = start_in_thread(f"sqlite:///{tmp_path}/back.db", {TOK: hj.journal_id}, create=True, header_timeout=1.0,
                        body_timeout=1.0, idle_timeout=1.0, max_connections=4)
    s.db = tmp_path / "back.db"
    yield s
    s.stop()


def _connect(url):
    sock = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10)
    return sock


def _closed_within(sock, seconds, trickle=None):
    """Seconds until the server closes `sock` (trickle(i) sends a little every 0.2 s meanwhile)."""
    started = time.monotonic()
    sock.settimeout(0.2)
    data = b""
    i = 0
    while time.monotonic() - started < seconds:
        try:
            chunk = sock.recv(65536)
            if not chunk:
                return time.monotonic() - started, data
            data += chunk
        except socket.timeout:
            pass
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started, data
        if trickle is not None:
            try:
                trickle(i)
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started, data
            i += 1
    return None, data


def test_idle_connection_is_closed(strict):
    sock = _connect(strict.url)
    took, _ = _closed_within(sock, 6)
    assert took is not None and took < 1.0 + 1.5
    sock.close()


def test_trickled_headers_are_cut_off(strict, hj):
    sock = _connect(strict.url)
    sock.sendall(f"POST /v1/journals/{hj.journal_id}/batches HTTP/1.1\r\n".encode())
    took, _ = _closed_within(sock, 6, trickle=lambda i: sock.sendall(b"X-Slow-%d: x\r\n" % i))
    assert took is not None and took < 1.0 + 1.5
    sock.close()


def test_trickled_body_is_cut_off_with_408(strict, hj):
    hj.extend(5)
    sock = _connect(strict.url)
    sock.sendall(f"POST /v1/journals/{hj.journal_id}/batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOK}"
                 f"\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n".encode())
    took, data = _closed_within(sock, 8, trickle=lambda i: sock.sendall(b" "))
    assert took is not None and took < 1.0 + 2.0
    assert data.startswith(b"HTTP/1.1 408") and b'"reason": "invalid"' in data
    sock.close()
    assert held(strict.db) == 0


def test_idle_keep_alive_is_closed_after_a_request(strict):
    sock = _connect(strict.url)
    sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    took, _ = _closed_within(sock, 6)
    assert took is not None and took < 1.0 + 1.5
    sock.close()


def test_connection_cap_answers_503_json(strict):
    held_open = [_connect(strict.url) for _ in range(4)]
    time.sleep(0.2)
    extra = _connect(strict.url)
    took, data = _closed_within(extra, 3)
    assert took is not None and data.startswith(b"HTTP/1.1 503") and b"too many connections" in data
    for s in held_open + [extra]:
        s.close()
    time.sleep(0.3)
    assert request(strict.url, "GET", "/v1/health")[0] == 200      # the slots come back


# ----------------------------------------------------------------------------- 4. bounded echoes

def test_huge_values_are_not_echoed_whole(srv, hj, caplog):
    hj.extend(3)
    doc = json.loads(encode_batch(hj.batch(1, 3)))
    huge = "F" * 4_000_000
    caplog.set_level(logging.INFO)
    for bad in ({**doc, "format": huge}, {**doc, "journal_id": huge}):
        status, ctype, data = request(srv.url, "POST", f"/v1/journals/{hj.journal_id}/batches",
                                      json.dumps(bad).encode(), {"Authorization": f"Bearer {TOK}"})
        assert status == 400 and ctype.startswith("application/json") and len(data) < 1200
    status, _, data = request(srv.url, "POST", "/v1/journals/" + "z" * 100_000 + "/batches", b"{}",
                              {"Authorization": f"Bearer {TOK}"})
    assert status in (400, 414, 431) and len(data) < 1200
    assert max(len(r.getMessage()) for r in caplog.records) < 1200
    back = SqliteTarget(srv.db)
    rows = back.refusals()
    back.close()
    assert rows and max(len(r["message"]) for r in rows) < 1200


def test_refusal_rows_are_capped_per_journal_per_hour(srv, hj, monkeypatch, caplog):
    monkeypatch.setattr(SqliteTarget, "max_refusals_per_hour", 5)
    hj.extend(3)
    caplog.set_level(logging.WARNING, logger="posfast.sync")
    for _ in range(20):
        status, _, _ = request(srv.url, "POST", f"/v1/journals/{hj.journal_id}/batches", b"{not json",
                               {"Authorization": f"Bearer {TOK}"})
        assert status == 400
    back = SqliteTarget(srv.db)
    assert len(back.refusals()) == 5
    back.close()
    assert len([r for r in caplog.records if r.name == "posfast.sync"]) <= 6


# ----------------------------------------------------------------------------- 5. token hygiene

def test_failed_tokens_are_rate_limited_and_logged_boundedly(srv, hj, caplog):
    hj.extend(3)
    caplog.set_level(logging.WARNING, logger="posfast.server")
    statuses = []
    for i in range(30):
        status, ctype, data = request(srv.url, "GET", f"/v1/journals/{hj.journal_id}",
                                      headers={"Authorization": f"Bearer guess-{i:016d}"})
        statuses.append(status)
        assert ctype.startswith("application/json")
    assert statuses[:10] == [401] * 10 and set(statuses[10:]) == {429}
    # the real token from that address waits too (the limit is checked before any token)
    assert request(srv.url, "GET", f"/v1/journals/{hj.journal_id}", headers={"Authorization": f"Bearer {TOK}"}
                   )[0] == 429
    warnings = [r for r in caplog.records if r.name == "posfast.server" and r.levelno == logging.WARNING]
    assert 1 <= len(warnings) <= server_mod.AUTH_LOG_BURST
    assert "not logged" in warnings[-1].getMessage()


def test_short_tokens_are_refused_everywhere(tmp_path):
    jid = uuid.uuid4()
    with pytest.raises(SyncConfigError, match="at least 16"):
        parse_tokens([f"{jid}=s3cret"])
    f = tmp_path / "tokens.txt"
    f.write_text(f"{jid}=only-15-chars!!\n")
    with pytest.raises(SyncConfigError, match="tokens.txt.*at least 16"):
        load_tokens(f)
    with pytest.raises(SyncConfigError, match="at least 16"):
        start_in_thread(f"sqlite:///{tmp_path}/b.db", {"short": jid}, create=True)
    assert "s3cret" not in str(pytest.raises(SyncConfigError, parse_tokens, [f"{jid}=s3cret"]).value)


def test_one_token_for_two_journals_across_file_and_flag(tmp_path, capsys):
    j1, j2 = uuid.uuid4(), uuid.uuid4()
    f = tmp_path / "tokens.txt"
    f.write_text(f"{j1}={TOK}\n")
    code = main(["serve", "--db", f"sqlite:///{tmp_path}/b.db", "--create", "--port", "0", "--tokens-file", str(f),
                 "--token", f"{j2}={TOK}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("posfast: error: one token is given to journal")
    assert str(j1) in err and str(j2) in err and TOK not in err


# ----------------------------------------------------------------------------- 6. JSON 4xx, not 500/503

def test_non_utf8_authorization_is_401_json_without_traceback(srv, hj, caplog):
    caplog.set_level(logging.INFO)
    sock = _connect(srv.url)
    sock.sendall(f"GET /v1/journals/{hj.journal_id} HTTP/1.1\r\nHost: x\r\n".encode()
                 + b"Authorization: Bearer \xff\xfe\xc3\x28-not-utf8-token\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401") and b"application/json" in head
    assert json.loads(body)["reason"] == "auth"
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_deeply_nested_json_is_400(srv, hj):
    status, ctype, data = request(srv.url, "POST", f"/v1/journals/{hj.journal_id}/batches", b"[" * 200_000,
                                  {"Authorization": f"Bearer {TOK}"})
    assert status == 400 and "nested" in json.loads(data)["message"]


def _huge_seq_batch():
    hj = HandJournal(2, seed=4)
    b = hj.batch(1, 2)
    b.rows["seq"] = [2**63, 2**63 + 1]
    return hj, relink(b, bytes(posfast.genesis_link(hj.journal_id.bytes)))


def test_seqs_beyond_2_63_are_400_and_not_retried(tmp_path):
    hj, b = _huge_seq_batch()
    with start_in_thread(f"sqlite:///{tmp_path}/b.db", {TOK: hj.journal_id}, create=True) as s:
        with pytest.raises(SyncRefused) as info:
            HttpTarget(s.url, TOK).push(b, anchor=True)
        assert (info.value.status, info.value.reason, info.value.permanent) == (400, "invalid", True)


def test_seqs_beyond_2_63_on_postgres_are_400(tmp_path):
    pytest.importorskip("psycopg")
    import _pg
    base = _pg.base_dsn()
    if base is None:
        pytest.skip(_pg.SKIP_REASON)
    dsn = _pg.fresh_database(base)
    hj, b = _huge_seq_batch()
    with start_in_thread(dsn, {TOK: hj.journal_id}) as s:
        with pytest.raises(SyncRefused) as info:
            HttpTarget(s.url, TOK).push(b, anchor=True)
        assert (info.value.status, info.value.reason) == (400, "invalid")


def test_a_batch_that_can_never_be_accepted_is_not_retried(srv, hj):
    hj.extend(10)
    hj.rows["day"][4] += 1                                   # a damaged record: refused as invalid
    hj.links[4:] = relink(hj.batch(5, 10), hj.links[3]).links
    errors = []
    syncer = Syncer(hj, HttpTarget(srv.url, TOK), batch=10)
    thread = threading.Thread(target=syncer.run_forever, kwargs=dict(interval=0.01, max_backoff=0.05,
                                                                    on_error=errors.append))
    thread.start()
    thread.join(5)
    assert not thread.is_alive()                              # it stopped by itself
    assert len(errors) == 1 and errors[0].permanent and hj.sync_watermark == 0
    back = SqliteTarget(srv.db)
    assert len(back.refusals()) == 1
    back.close()


def test_http_layer_parse_errors_are_json(srv):
    for raw in (b"GARBAGE\r\n\r\n", b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n",
                b"GET /v1/health HTTP/1.1\r\nBad Header\r\n\r\n"):
        sock = _connect(srv.url)
        sock.sendall(raw)
        data = b""
        sock.settimeout(5)
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        sock.close()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.split(b" ")[1].startswith(b"4"), data[:200]
        assert b"application/json" in head and json.loads(body)["ok"] is False
        assert len(body) < 1200


def test_503_does_not_disclose_the_back_office_path(tmp_path, hj):
    hj.extend(5)
    db = tmp_path / "secret-location" / "back.db"
    db.parent.mkdir()
    target = SqliteTarget(db, create=True, timeout=0.2)
    with start_in_thread(target, {TOK: hj.journal_id}) as s:
        blocker = __import__("sqlite3").connect(db, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            status, ctype, data = request(s.url, "POST", f"/v1/journals/{hj.journal_id}/batches",
                                          encode_batch(hj.batch(1, 5)), {"Authorization": f"Bearer {TOK}"})
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert status == 503 and ctype.startswith("application/json")
        assert b"secret-location" not in data and b"back.db" not in data and b"locked" not in data
        blocker = __import__("sqlite3").connect(db, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(SyncUnavailable) as info:          # the client: transient, retry later
                HttpTarget(s.url, TOK).push(hj.batch(1, 5))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert "secret-location" not in str(info.value)


# ----------------------------------------------------------------------------- 7. CLI: one line, no traceback

@pytest.fixture
def till(tmp_path):
    path = tmp_path / "till.pfj"
    with posfast.Journal.create(path, capacity=1024) as j:
        fill_journal(j, 50)
    return str(path)


def _one_line_error(capsys, code, *needles):
    out = capsys.readouterr()
    assert code not in (0, None), out
    err = out.err.strip()
    assert "Traceback" not in out.err and err.count("\n") == 0, out.err
    assert err.startswith("posfast: error: ") and "posfast: error: posfast" not in err
    for n in needles:
        assert n in err, err
    return err


CLI_CASES = {
    "http without token": (["--to", "http://127.0.0.1:1"], ["token", "POSFAST_SYNC_TOKEN"]),
    "unknown scheme": (["--to", "ftp://example/x"], ["unknown sync target", "sqlite:///"]),
    "broken IPv6 URL": (["--to", "http://[::1", "--token", TOK], ["malformed", "http(s)://HOST:PORT"]),
    "port 99999": (["--to", "http://127.0.0.1:99999", "--token", TOK], ["malformed", "Port"]),
    "missing directory": (["--to", "sqlite:///{tmp}/no/such/dir/back.db", "--create"], ["does not exist"]),
    "batch 0": (["--to", "sqlite:///{tmp}/b.db", "--batch", "0"], ["--batch 0", "at least 1"]),
    "batch negative": (["--to", "sqlite:///{tmp}/b.db", "--batch", "-5"], ["--batch -5"]),
    "missing back office": (["--to", "sqlite:///{tmp}/typo.db"], ["no back office at", "typo.db", "--create"]),
    "ca-file on http": (["--to", "http://127.0.0.1:1", "--token", TOK, "--ca-file", "x.pem"], ["https://"]),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_sync_cli_errors_are_one_line(case, till, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("POSFAST_SYNC_TOKEN", raising=False)
    args, needles = CLI_CASES[case]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    _one_line_error(capsys, main(["sync", till, *args]), *needles)
    assert not (tmp_path / "typo.db").exists() and not (tmp_path / "b.db").exists()


def test_sync_opens_the_journal_before_the_back_office(tmp_path, capsys):
    code = main(["sync", str(tmp_path / "nope.pfj"), "--to", f"sqlite:///{tmp_path}/b.db", "--create"])
    _one_line_error(capsys, code, "nope.pfj")
    assert not (tmp_path / "b.db").exists()


def test_serve_port_99999_is_one_line(tmp_path, capsys):
    code = main(["serve", "--db", f"sqlite:///{tmp_path}/b.db", "--create", "--port", "99999",
                 "--token", f"{uuid.uuid4()}={TOK}"])
    _one_line_error(capsys, code, "--port 99999", "0..65535")


def test_serve_refuses_a_missing_back_office_without_create(tmp_path, capsys):
    code = main(["serve", "--db", f"sqlite:///{tmp_path}/typo.db", "--port", "0", "--token", f"{uuid.uuid4()}={TOK}"])
    _one_line_error(capsys, code, "no back office at", "--create")
    assert not (tmp_path / "typo.db").exists()


def test_ctrl_c_during_sync_says_where_it_stopped(till, tmp_path, capsys, monkeypatch):
    real_push = SqliteTarget.push
    calls = []

    def push(self, batch, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_push(self, batch, **kw)

    monkeypatch.setattr(SqliteTarget, "push", push)
    code = main(["sync", till, "--to", f"sqlite:///{tmp_path}/b.db", "--create", "--batch", "10"])
    err = capsys.readouterr().err
    assert code == 130 and "up to seq 20 (watermark)" in err and "30 record(s) still to sync" in err
    with posfast.Journal.open(till, readonly=True) as j:
        assert j.sync_watermark == 20


def _mount_tmpfs(where, options):
    where.mkdir(exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")


def test_back_office_on_a_full_disk_says_so(tmp_path, capsys):
    till = str(tmp_path / "big.pfj")
    with posfast.Journal.create(till, capacity=16384) as j:
        fill_journal(j, 3000, seed=7, max_payload=200)
    mnt = tmp_path / "small"
    _mount_tmpfs(mnt, "size=192k")
    try:
        code = main(["sync", till, "--to", f"sqlite:///{mnt}/back.db", "--create", "--batch", "100"])
        assert code == 75
        err = _one_line_error(capsys, code, "disk is full", "nothing past seq")
        assert "cannot rollback" not in err
        with posfast.Journal.open(till, readonly=True) as j:
            wm = j.sync_watermark
        assert f"nothing past seq {wm} was acknowledged" in err and wm < 3000
        back = SqliteTarget(mnt / "back.db")
        assert back.count() == wm                          # what was acknowledged is exactly what is held
        back.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_back_office_in_a_read_only_directory(till, tmp_path, capsys):
    mnt = tmp_path / "ro"
    _mount_tmpfs(mnt, "size=64k,ro")
    try:
        _one_line_error(capsys, main(["sync", till, "--to", f"sqlite:///{mnt}/back.db", "--create"]),
                        "not writable")
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_full_disk_through_the_python_api_names_the_acknowledged_seq(tmp_path):
    hj = HandJournal(400, seed=2)
    back = SqliteTarget(tmp_path / "b.db", create=True)
    back.push(hj.batch(1, 100))
    back._conn.execute("PRAGMA max_page_count = %d" % back._conn.execute("PRAGMA page_count").fetchone()[0])
    with pytest.raises(BackOfficeFull) as info:
        back.push(hj.batch(101, 400))
    assert "disk is full" in str(info.value) and "past seq 100" in str(info.value)
    assert "rollback" not in str(info.value)
    assert back.count() == 100
    back.close()


# ----------------------------------------------------------------------------- 8. back office path and create

def test_missing_back_office_is_not_created_silently(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BackOfficeMissing) as info:
        target_from_url("sqlite:///var/back.db")
    msg = str(info.value)
    assert str(tmp_path / "var" / "back.db") in msg and "relative to the current directory" in msg
    assert not (tmp_path / "var").exists()
    with pytest.raises(BackOfficeMissing, match="--create"):
        SqliteTarget(tmp_path / "typo.db")
    assert not (tmp_path / "typo.db").exists()
    SqliteTarget(tmp_path / "typo.db", create=True).close()
    SqliteTarget(tmp_path / "typo.db").close()                    # exists now: opens without create


def test_a_sqlite_file_that_is_not_a_back_office_is_refused(tmp_path):
    import sqlite3
    other = tmp_path / "pos-settings.db"
    c = sqlite3.connect(other)
    c.execute("CREATE TABLE settings (k, v)")
    c.commit()
    c.close()
    with pytest.raises(BackOfficeMissing, match="not a posfast back office"):
        SqliteTarget(other)


def test_successful_pushes_are_logged_at_info(tmp_path, caplog):
    hj = HandJournal(250, seed=1)
    caplog.set_level(logging.INFO, logger="posfast.sync")
    back = SqliteTarget(tmp_path / "b.db", create=True)
    Syncer(hj, back, batch=100).run_once()
    back.push(hj.batch(1, 100))                                  # a replay stores nothing: not logged
    back.close()
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert lines == [f"stored journal {hj.journal_id} seqs 1..100: 100 new, 0 already held (high seq 100)",
                     f"stored journal {hj.journal_id} seqs 101..200: 100 new, 0 already held (high seq 200)",
                     f"stored journal {hj.journal_id} seqs 201..250: 50 new, 0 already held (high seq 250)"]


def test_sync_forever_stops_on_a_batch_that_can_never_be_accepted(tmp_path, capsys, monkeypatch):
    path = tmp_path / "till.pfj"
    with posfast.Journal.create(path, capacity=1024) as j:
        fill_journal(j, 20)
    SqliteTarget(tmp_path / "b.db", create=True).close()
    # a journal whose records break the day rule it sends: refused as invalid, permanently
    real_read = posfast.Journal.read_range

    def damaged(self, first, last):
        b = real_read(self, first, last)
        b.rows["day"] += 1
        # (format 2's links cover the day: relinked, as a forger would, so the day rule is what
        # refuses it)
        prev = b.prev_link
        for i in range(len(b.rows)):
            prev = b.links[i] = bytes(posfast.chain_link(prev, b.rows[i], b.payloads[i], b.exts[i]))
        return b

    monkeypatch.setattr(posfast.Journal, "read_range", damaged)
    started = time.monotonic()
    code = main(["sync", str(path), "--to", f"sqlite:///{tmp_path}/b.db", "--forever", "--interval", "0.05"])
    err = capsys.readouterr().err
    assert code == 65 and time.monotonic() - started < 10   # EX_DATAERR: refused
    assert "refused the batch (invalid)" in err and "watermark stays at 0" in err
