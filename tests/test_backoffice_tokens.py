"""Tokens in the back-office database, the admin role, heartbeats and the fleet view
(issue 16), against a real sync server on loopback and real journals."""
import hashlib
import http.client
import json
import sqlite3
import time

import pytest

pytest.importorskip("aiohttp", reason="the sync server needs aiohttp (pip install 'posfast[server]')")

import posfast  # noqa: E402
from posfast.sync import HttpTarget, SqliteTarget, SyncRefused, Syncer  # noqa: E402
from posfast.sync.fleet import fleet, fleet_summary  # noqa: E402
from posfast.sync.server import start_in_thread  # noqa: E402
from posfast.sync.tokens import TokenAuth  # noqa: E402

from _sync_helpers import HandJournal  # noqa: E402


def raw(url, method, path, body=None, token=None):
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, json.loads(data) if data else None


@pytest.fixture
def bo(tmp_path):
    target = SqliteTarget(tmp_path / "back.db", create=True)
    yield target
    target.close()


def test_tokens_are_stored_hashed_and_listed_without_the_token(bo, tmp_path):
    a = HandJournal(0)
    token, info = bo.issue_token(a.journal_id, label="till 1")
    assert token.startswith("pft_") and len(token) == 47
    assert info.role == "terminal" and info.journal_id == a.journal_id and info.label == "till 1"
    raw_db = sqlite3.connect(tmp_path / "back.db")
    stored = raw_db.execute("SELECT token_id, sha256, role, journal_id FROM tokens").fetchall()
    raw_db.close()
    assert stored == [(info.token_id, hashlib.sha256(token.encode()).hexdigest(), "terminal", str(a.journal_id))]
    assert token not in (tmp_path / "back.db").read_bytes().decode("latin-1")
    assert [t.token_id for t in bo.tokens()] == [info.token_id]
    admin, ainfo = bo.issue_token(role="admin", label="head office")
    assert ainfo.journal_id is None
    assert bo.token_lookup(hashlib.sha256(admin.encode()).hexdigest()).role == "admin"
    with pytest.raises(posfast.errors.SyncConfigError, match="issued already"):
        bo.issue_token(a.journal_id, token=token)
    with pytest.raises(posfast.errors.SyncConfigError, match="for a journal"):
        bo.issue_token()
    with pytest.raises(posfast.errors.SyncConfigError, match="at least 16"):
        bo.issue_token(a.journal_id, token="short")
    revoked = bo.revoke_token(info.token_id)
    assert [t.token_id for t in revoked] == [info.token_id] and revoked[0].revoked
    assert bo.token_lookup(hashlib.sha256(token.encode()).hexdigest()) is None
    assert bo.revoke_token(info.token_id) == []            # already revoked: nothing more


def test_a_running_server_picks_up_issued_and_revoked_tokens(tmp_path, bo):
    a, b = HandJournal(0, terminal=1, seed=1), HandJournal(0, terminal=2, seed=2)
    a.extend(300)
    b.extend(200)
    srv = start_in_thread(f"sqlite:///{tmp_path / 'back.db'}", None, token_ttl=0.2)
    try:
        tok_a, info_a = bo.issue_token(a.journal_id)        # issued after the server started
        tok_b, _ = bo.issue_token(b.journal_id)
        assert Syncer(a, HttpTarget(srv.url, tok_a), batch=100).run_once().watermark == 300
        assert Syncer(b, HttpTarget(srv.url, tok_b)).run_once().watermark == 200
        # a terminal token can neither read nor push another journal
        status, doc = raw(srv.url, "GET", f"/v1/journals/{b.journal_id}", token=tok_a)
        assert status == 403 and doc["reason"] == "auth" and str(a.journal_id) in doc["message"]
        with pytest.raises(SyncRefused) as info:
            HttpTarget(srv.url, tok_a).push(b.batch(1, 10))
        assert info.value.status == 403
        status, doc = raw(srv.url, "POST", f"/v1/journals/{b.journal_id}/status", b"{}", token=tok_a)
        assert status == 403
        # an admin token reads journals and the health, but pushes nothing
        admin, _ = bo.issue_token(role="admin")
        status, doc = raw(srv.url, "GET", f"/v1/journals/{a.journal_id}", token=admin)
        assert status == 200 and doc["high_seq"] == 300
        a.extend(5)
        with pytest.raises(SyncRefused) as info:
            HttpTarget(srv.url, admin).push(a.batch(301, 305))
        assert info.value.status == 403 and "admin token cannot push" in str(info.value)
        # the admin API: the fleet as JSON, for the admin token only
        status, doc = raw(srv.url, "GET", "/v1/fleet", token=admin)
        assert status == 200 and {t["journal_id"] for t in doc["tills"]} == {str(a.journal_id), str(b.journal_id)}
        assert doc["summary"]["tills"] == 2
        assert raw(srv.url, "GET", "/v1/fleet", token=tok_a)[0] == 403
        assert raw(srv.url, "GET", "/v1/fleet")[0] == 401
        # revoked while the server runs: refused within the cache time, no restart
        bo.revoke_token(info_a.token_id)
        time.sleep(0.3)
        with pytest.raises(SyncRefused) as info:
            Syncer(a, HttpTarget(srv.url, tok_a)).run_once()
        assert info.value.status == 401
        assert a.sync_watermark == 300
        tok_a2, _ = bo.issue_token(a.journal_id, label="rotated")
        assert Syncer(a, HttpTarget(srv.url, tok_a2)).run_once().watermark == 305
    finally:
        srv.stop()
    assert bo.count(a.journal_id) == 305 and bo.count(b.journal_id) == 200


def test_static_tokens_still_work_beside_the_database(tmp_path, bo):
    a, b = HandJournal(0, seed=3), HandJournal(0, seed=4)
    a.extend(50)
    b.extend(40)
    tok_b, _ = bo.issue_token(b.journal_id)
    srv = start_in_thread(f"sqlite:///{tmp_path / 'back.db'}", {"static-token-0123456789": a.journal_id})
    try:
        assert Syncer(a, HttpTarget(srv.url, "static-token-0123456789")).run_once().watermark == 50
        assert Syncer(b, HttpTarget(srv.url, tok_b)).run_once().watermark == 40
        status, _ = raw(srv.url, "GET", f"/v1/journals/{b.journal_id}", token="static-token-0123456789")
        assert status == 403
    finally:
        srv.stop()


def test_token_auth_caches_for_its_ttl(bo):
    a = HandJournal(0)
    token, info = bo.issue_token(a.journal_id)
    clock = [100.0]
    auth = TokenAuth(bo, ttl=5, clock=lambda: clock[0])
    assert auth.identify(token).journal_id == a.journal_id
    assert auth.admin(token) is None                    # a terminal's token is no admin
    bo.revoke_token(info.token_id)
    assert auth.identify(token) is not None             # cached
    clock[0] += 5.1
    assert auth.identify(token) is None
    assert auth.identify("pft_unknown-token-xxxxxxxxxxxx") is None


def test_health_touches_the_database(tmp_path):
    db = tmp_path / "back.db"
    srv = start_in_thread(f"sqlite:///{db}", None, create=True)
    try:
        assert raw(srv.url, "GET", "/v1/health") == (200, {"ok": True, "database": "ok"})
        db.rename(tmp_path / "moved.db")
        status, doc = raw(srv.url, "GET", "/v1/health")
        assert status == 503 and doc["reason"] == "unavailable" and str(tmp_path) not in doc["message"]
    finally:
        srv.stop()


def _real_journal(path, terminal, n_sales, *, in_doubt=0, close_day=None):
    j = posfast.Journal.create(path, capacity=4096, day_rule=posfast.DayRule(utc_offset="+08:00"))
    ts0 = int(time.time() * 1e6) - 3 * 86_400_000_000
    for i in range(n_sales):
        j.append(terminal=terminal, kind="sale", state="approved", method="card", amount=100 + i,
                 ts=ts0 + i * 1_000_000)
    for _ in range(in_doubt):
        j.begin_payment(terminal, amount=999)
    if close_day is not None:
        j.close_day(close_day, force=True)
    return j


def test_fleet_lists_every_till_with_what_it_reported(tmp_path, bo):
    ok = _real_journal(tmp_path / "ok.pfj", 1, 20)
    ok.close_day(ok.day_rule.day_of(int(time.time() * 1e6)), force=True)
    doubt = _real_journal(tmp_path / "doubt.pfj", 2, 10, in_doubt=2)
    silent = HandJournal(0, seed=9)
    for j, till in ((ok, "till 1"), (doubt, "till 2"), (silent, "till 3")):
        bo.register(j.journal_id, store="SH-01", till=till, tid=till[-1] * 8)
    srv = start_in_thread(f"sqlite:///{tmp_path / 'back.db'}", None, token_ttl=0)
    try:
        for j in (ok, doubt):
            token, _ = bo.issue_token(j.journal_id)
            syncer = Syncer(j, HttpTarget(srv.url, token), batch=8)
            assert syncer.run_once().watermark == j.head_seq
            syncer.heartbeat_interval = 0
            assert syncer.run_once().sent == 0               # nothing to push: a heartbeat
    finally:
        srv.stop()
    rows = fleet(bo)
    assert [r["till"] for r in rows] == ["till 3", "till 2", "till 1"]   # attention first
    silent_row, doubt_row, ok_row = rows
    assert silent_row["attention"] == ["never_seen"] and silent_row["severity"] == 2
    assert silent_row["last_seen"] == "" and silent_row["unsynced"] is None
    assert doubt_row["in_doubt"] == 2 and "in_doubt" in doubt_row["attention"]
    assert doubt_row["unsynced"] == 0 and doubt_row["records"] == doubt.head_seq
    assert ok_row["attention"] == [] and ok_row["severity"] == 0
    assert ok_row["last_day_closed"] == ok.day_rule.day_of(int(time.time() * 1e6)).isoformat()
    assert 0 < ok_row["ring_fill"] < 0.05 and ok_row["ring_unsynced"] == 0.0
    assert ok_row["last_seen_age_s"] < 60 and ok_row["retention"] == "synced"
    assert fleet_summary(rows)["critical"] == 1
    ok.close()
    doubt.close()


def test_fleet_shows_the_day_a_late_z_report_closes_not_the_day_it_was_written(tmp_path, bo):
    """A day closed the next morning (or later, catching up) is that day, in the fleet."""
    j = _real_journal(tmp_path / "late.pfj", 1, 20)            # sales three days ago
    sold_on = j.day_rule.day_of(int(j.last(terminal=1).ts))
    today = j.day_rule.day_of(int(time.time() * 1e6))
    assert sold_on < today
    j.close_day(sold_on, force=True)                          # written today, closing that day
    bo.register(j.journal_id, store="SH-01", till="till 1", tid="11111111")
    assert Syncer(j, bo, batch=8).run_once().watermark == j.head_seq
    row, = fleet(bo)
    assert row["last_day_closed"] == sold_on.isoformat()
    j.close()


def test_fleet_shows_a_terminal_behind_and_refused(tmp_path, bo):
    j = _real_journal(tmp_path / "behind.pfj", 1, 30)
    bo.register(j.journal_id, store="SH-02", till="till 9")
    token, _ = bo.issue_token(j.journal_id)
    srv = start_in_thread(f"sqlite:///{tmp_path / 'back.db'}", None, token_ttl=0)
    try:
        Syncer(j, HttpTarget(srv.url, token), batch=10).run_once(max_records=10)
        # a forged batch for the same journal is refused: the fleet says so until a push succeeds
        forged = j.read_range(11, 12)
        forged.links[0] = b"\x00" * 16
        forged.status = {"head_seq": 30, "in_doubt": 0, "oldest_unsynced_ts": int(forged.rows["ts"][0])}
        with pytest.raises(SyncRefused):
            HttpTarget(srv.url, token).push(forged)
    finally:
        srv.stop()
    (row,) = fleet(bo, now=time.time() + 2 * 3600)
    assert row["unsynced"] == 20 and row["high_seq"] == 10 and row["unsynced_age_s"] > 3 * 86400
    assert row["attention"] == ["refused", "unsynced_old"]
    assert "chain" in row["last_refusal"] and row["refusals_24h"] == 1
    j.close()


# ----------------------------------------------------------------------------- the CLI, a real server process

import subprocess  # noqa: E402
import sys  # noqa: E402

from posfast.cli import main  # noqa: E402

from _child_env import CHILD_CWD, child_env  # noqa: E402


def _serve(args, tmp_path, log="serve.log"):
    proc = subprocess.Popen([sys.executable, "-m", "posfast", "serve", *args], stdout=subprocess.PIPE,
                            stderr=open(tmp_path / log, "ab"), text=True, env=child_env(), cwd=CHILD_CWD)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise AssertionError(f"server did not start: {line!r} {(tmp_path / log).read_text()}")
    return proc, line.split("listening on ")[1].split()[0]


def test_register_issues_lists_imports_and_revokes_tokens(tmp_path, capsys):
    db = tmp_path / "back.db"
    SqliteTarget(db, create=True).close()
    url = f"sqlite:///{db}"
    a, b = HandJournal(0, seed=5), HandJournal(0, seed=6)
    assert main(["register", "--db", url, str(a.journal_id), "--store", "SH-01", "--till", "till 1",
                 "--issue-token", "--label", "till 1", "--format", "json"]) == 0
    issued = json.loads(capsys.readouterr().out)
    assert issued["role"] == "terminal" and issued["journal_id"] == str(a.journal_id)
    assert issued["token"].startswith("pft_") and issued["label"] == "till 1"
    assert main(["register", "--db", url, "--admin", "--issue-token", "--token-out",
                 str(tmp_path / "admin.token")]) == 0
    assert "written to" in capsys.readouterr().out
    assert oct((tmp_path / "admin.token").stat().st_mode & 0o777) == "0o600"
    admin = (tmp_path / "admin.token").read_text().strip()
    (tmp_path / "tokens.txt").write_text(f"# old file\n{b.journal_id}=old-style-token-0123456789\n")
    assert main(["register", "--db", url, "--import-tokens", str(tmp_path / "tokens.txt")]) == 0
    capsys.readouterr()
    assert main(["register", "--db", url, "--list-tokens", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(t["role"], t["journal_id"]) for t in listed] == [
        ("terminal", str(a.journal_id)), ("admin", ""), ("terminal", str(b.journal_id))]
    assert all("token" not in t for t in listed)
    # the registry kept the till; the server takes all three tokens; no tokens file needed now
    proc, srv = _serve(["--db", url, "--port", "0"], tmp_path)
    try:
        a.extend(20)
        b.extend(10)
        assert Syncer(a, HttpTarget(srv, issued["token"])).run_once().watermark == 20
        assert Syncer(b, HttpTarget(srv, "old-style-token-0123456789")).run_once().watermark == 10
        conn = http.client.HTTPConnection(*srv.split("//")[1].split(":"), timeout=30)
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {admin}"})
        assert conn.getresponse().status == 200                 # the admin token from --token-out
        conn.close()
        assert main(["register", "--db", url, "--revoke", str(b.journal_id)]) == 0
        capsys.readouterr()
        deadline = time.time() + 15
        while raw(srv, "GET", f"/v1/journals/{b.journal_id}", token="old-style-token-0123456789")[0] != 401:
            assert time.time() < deadline, "the revoked token is still accepted"
            time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(30)
    assert main(["register", "--db", url, "--revoke", "x", "--list-tokens"]) == 2
    assert "one at a time" in capsys.readouterr().err
    assert main(["register", "--db", url, "--revoke", "nosuchtokenid"]) != 0
    assert "no token with id" in capsys.readouterr().err


def _metrics(text):
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_serve_config_file_json_logs_and_metrics(tmp_path):
    db = tmp_path / "back.db"
    bo = SqliteTarget(db, create=True)
    a = HandJournal(0, seed=7)
    bo.register(a.journal_id, store="SH-01", till="till 1")
    tok, _ = bo.issue_token(a.journal_id)
    admin, _ = bo.issue_token(role="admin")
    bo.close()
    (tmp_path / "serve.toml").write_text(
        f'db = "sqlite:///{db}"\nport = 1\nlog-level = "debug"\nlog_format = "json"\ntoken_ttl = 0\n'
        'max_batch = 50\n')
    # the flag overrides the file (port 1 would not start as root-less; 0 picks a free one)
    proc, srv = _serve(["--config", str(tmp_path / "serve.toml"), "--port", "0", "--max-batch", "100"], tmp_path)
    try:
        a.extend(250)
        result = Syncer(a, HttpTarget(srv, tok), batch=100).run_once()
        assert (result.sent, result.batches) == (250, 3)        # --max-batch 100 (not 50): 3 batches
        status, _ = raw(srv, "GET", "/metrics")
        assert status == 401
        assert raw(srv, "GET", "/metrics", token=tok)[0] == 403      # a terminal's token is no admin
        conn = http.client.HTTPConnection(*srv.split("//")[1].split(":"), timeout=30)
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {admin}"})
        resp = conn.getresponse()
        text = resp.read().decode()
        assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/plain; version=0.0.4")
        m = _metrics(text)
        labels = f'{{journal_id="{a.journal_id}",store="SH-01",till="till 1"}}'
        assert m[f"posfast_journal_records{labels}"] == 250
        assert m[f"posfast_journal_unsynced_records{labels}"] == 0
        assert m[f"posfast_journal_last_seen_age_seconds{labels}"] < 60
        assert m["posfast_records_stored"] == 250
        assert m['posfast_batches_total{outcome="stored"}'] == 3
        assert m["posfast_records_received_total"] == 250
        assert m['posfast_batch_seconds_bucket{le="+Inf"}'] == 3 == m["posfast_batch_seconds_count"]
        assert "# TYPE posfast_batch_seconds histogram" in text
    finally:
        proc.terminate()
        proc.wait(30)
    lines = [ln for ln in (tmp_path / "serve.log").read_text().splitlines() if ln.strip()]
    docs = [json.loads(ln) for ln in lines]                # every line is one JSON object
    assert {"ts", "level", "logger", "message"} <= set(docs[0])
    assert any(d["level"] == "INFO" and "stored journal" in d["message"] for d in docs)


def test_serve_config_errors_name_the_file_and_key(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text('db = "sqlite:///x.db"\nprot = 8080\n')
    assert main(["serve", "--config", str(tmp_path / "bad.toml")]) != 0
    err = capsys.readouterr().err
    assert "bad.toml" in err and "unknown option 'prot'" in err and "port" in err
    (tmp_path / "bad2.toml").write_text('db = "sqlite:///x.db"\nport = "eighty"\n')
    assert main(["serve", "--config", str(tmp_path / "bad2.toml")]) != 0
    assert "port = 'eighty' must be a whole number" in capsys.readouterr().err
    assert main(["serve"]) != 0
    assert "give --db URL" in capsys.readouterr().err


def test_log_level_warning_keeps_info_lines_out(tmp_path):
    db = tmp_path / "back.db"
    bo = SqliteTarget(db, create=True)
    a = HandJournal(0, seed=8)
    tok, _ = bo.issue_token(a.journal_id)
    bo.close()
    proc, srv = _serve(["--db", f"sqlite:///{db}", "--port", "0", "--log-level", "warning",
                        "--log-format", "json"], tmp_path, log="warn.log")
    try:
        a.extend(10)
        assert Syncer(a, HttpTarget(srv, tok)).run_once().watermark == 10
        assert raw(srv, "GET", "/v1/journals/" + str(a.journal_id), token="pft_not-a-token-at-all-xx")[0] == 401
    finally:
        proc.terminate()
        proc.wait(30)
    docs = [json.loads(ln) for ln in (tmp_path / "warn.log").read_text().splitlines() if ln.strip()]
    assert [d["level"] for d in docs] == ["WARNING"] and "unknown token" in docs[0]["message"]


def test_a_token_file_that_cannot_be_written_leaves_no_live_token(tmp_path, capsys):
    db = tmp_path / "back.db"
    SqliteTarget(db, create=True).close()
    url = f"sqlite:///{db}"
    assert main(["register", "--db", url, "--admin", "--issue-token", "--token-out",
                 str(tmp_path / "no" / "such" / "dir" / "admin.token")]) != 0
    (tmp_path / "taken.token").write_text("someone else's\n")
    assert main(["register", "--db", url, "--admin", "--issue-token", "--token-out",
                 str(tmp_path / "taken.token")]) != 0
    capsys.readouterr()
    assert main(["register", "--db", url, "--list-tokens", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out or "[]") == []          # nothing issued that nobody holds
    assert (tmp_path / "taken.token").read_text() == "someone else's\n"


def test_database_passwords_never_reach_messages_or_exports():
    from posfast.sync import safe_dsn
    assert safe_dsn("postgresql://bo:s3cret@db:5432/back?sslmode=require") == \
        "postgresql://bo:***@db:5432/back?sslmode=require"
    assert "s3cret" not in safe_dsn("postgresql://bo@db/back?password=s3cret&sslmode=require")
    assert "s3cret" not in safe_dsn("host=db dbname=back password=s3cret user=bo")
    assert "s 3cret" not in safe_dsn("host=db password='s 3cret' user=bo")
    assert safe_dsn("sqlite:///back.db") == "sqlite:///back.db"
