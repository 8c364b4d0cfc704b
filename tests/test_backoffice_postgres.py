"""Tokens, heartbeats, the fleet, metrics and /v1/health with the back office in PostgreSQL
(a real server on loopback, tests/_pg.py), through a real sync server (issue 16)."""
import http.client
import json
import time

import pytest

psycopg = pytest.importorskip("psycopg", reason="PostgresTarget needs psycopg 3 (pip install 'psycopg[binary]')")
pytest.importorskip("aiohttp", reason="the sync server needs aiohttp (pip install 'posfast[server]')")

import posfast  # noqa: E402
from posfast.sync import HttpTarget, PostgresTarget, SyncRefused, Syncer  # noqa: E402
from posfast.sync.fleet import fleet  # noqa: E402
from posfast.sync.server import start_in_thread  # noqa: E402

import _pg  # noqa: E402


def raw(url, method, path, token=None):
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(method, path, headers={"Authorization": f"Bearer {token}"} if token else {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def test_tokens_fleet_and_metrics_on_postgresql(server_dsn, tmp_path):
    dsn = _pg.fresh_database(server_dsn)
    bo = PostgresTarget(dsn)
    rule = posfast.DayRule(utc_offset="+08:00")
    j = posfast.Journal.create(tmp_path / "till.pfj", capacity=1024, day_rule=rule)
    for i in range(30):
        j.append(terminal=1, kind="sale", state="approved", method="card", amount=100 + i)
    j.begin_payment(1, amount=500)
    other = posfast.Journal.create(tmp_path / "other.pfj", capacity=1024, day_rule=rule)
    other.append(terminal=2, kind="sale", state="approved", method="cash", amount=1)
    bo.register(j.journal_id, store="SH-01", till="till 1")
    bo.register(other.journal_id, store="SH-01", till="till 2")
    srv = start_in_thread(dsn, None, token_ttl=0)
    try:
        tok, info = bo.issue_token(j.journal_id)
        tok2, _ = bo.issue_token(other.journal_id)
        admin, _ = bo.issue_token(role="admin")
        assert Syncer(j, HttpTarget(srv.url, tok), batch=10).run_once().watermark == 31
        status, _ = raw(srv.url, "GET", f"/v1/journals/{other.journal_id}", tok)
        assert status == 403                                   # not its journal
        with pytest.raises(SyncRefused):
            Syncer(other, HttpTarget(srv.url, tok)).run_once()
        assert Syncer(other, HttpTarget(srv.url, tok2)).run_once().watermark == 1
        status, body = raw(srv.url, "GET", "/metrics", admin)
        assert status == 200
        text = body.decode()
        assert f'posfast_journal_records{{journal_id="{j.journal_id}",store="SH-01",till="till 1"}} 31' in text
        assert 'posfast_sync_refusals_recorded{reason="auth"}' not in text    # a 403 is not a batch refusal
        bo.revoke_token(info.token_id)
        j.append(terminal=1, kind="sale", state="approved", method="card", amount=7)
        with pytest.raises(SyncRefused) as refused:
            Syncer(j, HttpTarget(srv.url, tok)).run_once()
        assert refused.value.status == 401
        assert raw(srv.url, "GET", "/v1/health")[0] == 200
    finally:
        srv.stop()
    rows = {r["till"]: r for r in fleet(bo)}
    assert rows["till 1"]["in_doubt"] == 1 and rows["till 1"]["records"] == 31
    assert rows["till 1"]["attention"][0] == "in_doubt" and rows["till 1"]["unsynced"] == 0
    assert rows["till 2"]["records"] == 1 and rows["till 2"]["attention"] == []   # new today: nothing to close yet
    later = {r["till"]: r for r in fleet(bo, now=time.time() + 3 * 86400, stale_after=7 * 86400)}
    assert later["till 2"]["attention"] == ["day_not_closed"]
    assert [t.revoked for t in bo.tokens(j.journal_id)] == [True]
    bo.close()
    j.close()
    other.close()


def test_health_is_503_while_postgresql_refuses_connections(server_dsn):
    dsn = _pg.fresh_database(server_dsn)
    if dsn == server_dsn:
        pytest.skip("the test server does not allow CREATE DATABASE: no database of our own to cut off")
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    srv = start_in_thread(dsn, None)
    try:
        assert raw(srv.url, "GET", "/v1/health") == (200, b'{"ok": true, "database": "ok"}')
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            try:
                status, body = raw(srv.url, "GET", "/v1/health")
                assert status == 503 and json.loads(body)["reason"] == "unavailable"
                assert name.encode() not in body and b"postgres" not in body.lower()
            finally:
                admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        deadline = time.time() + 10
        while raw(srv.url, "GET", "/v1/health")[0] != 200:
            assert time.time() < deadline
            time.sleep(0.2)
    finally:
        srv.stop()
