"""posfast sync server (aiohttp) and HttpTarget, on loopback."""
import base64
import http.client
import json
import threading
import time
import uuid

import pytest

pytest.importorskip("aiohttp", reason="the sync server needs aiohttp (pip install 'posfast[server]')")

from posfast.server import load_tokens, parse_tokens, start_in_thread  # noqa: E402
from posfast.sync import (HttpTarget, SqliteTarget, SyncRefused, SyncResult, SyncUnavailable, Syncer,  # noqa: E402
                          encode_batch)

from _sync_helpers import HandJournal, assert_same_records, start_serve_process  # noqa: E402

TOK_A = "tok-a-4f8e2c9d1b7a"
TOK_B = "tok-b-7b2d4a6c3c9a"
TOK_T = "t-3c9a5e1f7b2d4a6c"

@pytest.fixture
def two_terminals():
    return HandJournal(0, terminal=1, seed=1), HandJournal(0, terminal=2, seed=2)


@pytest.fixture
def server(tmp_path, two_terminals):
    a, b = two_terminals
    db = tmp_path / "back.db"
    srv = start_in_thread(f"sqlite:///{db}", {TOK_A: a.journal_id, TOK_B: b.journal_id}, create=True)
    srv.db = db
    yield srv
    srv.stop()


def raw(url, method, path, body=None, token=None, headers=None):
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=body, headers=hdrs)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, json.loads(data) if data else None


def held_count(db):
    t = SqliteTarget(db)
    try:
        return t.count()
    finally:
        t.close()


def test_sync_over_http_record_for_record(server, two_terminals):
    a, b = two_terminals
    a.extend(2300)
    b.extend(400)
    ra = Syncer(a, HttpTarget(server.url, TOK_A), batch=500).run_once()
    rb = Syncer(b, HttpTarget(server.url, TOK_B), batch=500).run_once()
    assert ra == SyncResult(2300, 5, 2300) and rb == SyncResult(400, 1, 400)
    back = SqliteTarget(server.db)
    assert_same_records(back.read_range(a.journal_id), a.rows, a.payloads, a.links)
    assert_same_records(back.read_range(b.journal_id), b.rows, b.payloads, b.links)
    back.close()
    st = HttpTarget(server.url, TOK_A).state(a.journal_id)
    assert (st.high_seq, st.records, st.last_link, st.anchor_seq) == (2300, 2300, a.links[-1], 1)
    assert HttpTarget(server.url, TOK_B).state(b.journal_id).high_seq == 400


def test_replay_over_http_is_idempotent(server, two_terminals):
    a, _ = two_terminals
    a.extend(300)
    target = HttpTarget(server.url, TOK_A)
    target.push(a.batch(1, 300))
    ack = target.push(a.batch(101, 300))
    assert (ack.high_seq, ack.stored, ack.duplicates) == (300, 0, 200)
    assert held_count(server.db) == 300


def test_tokens_only_write_their_own_journal(server, two_terminals):
    a, b = two_terminals
    a.extend(10)
    b.extend(10)
    with pytest.raises(SyncRefused) as info:
        HttpTarget(server.url, TOK_B).push(a.batch(1, 10))           # b's token, a's journal
    assert (info.value.reason, info.value.status) == ("auth", 403)
    with pytest.raises(SyncRefused) as info:
        HttpTarget(server.url, "wrong-token-00000000").push(a.batch(1, 10))
    assert (info.value.reason, info.value.status) == ("auth", 401)
    # b's token, b's URL, but the body claims journal a
    status, doc = raw(server.url, "POST", f"/v1/journals/{b.journal_id}/batches", encode_batch(a.batch(1, 10)),
                      token=TOK_B)
    assert (status, doc["reason"]) == (403, "auth") and str(a.journal_id) in doc["message"]
    status, doc = raw(server.url, "POST", f"/v1/journals/{a.journal_id}/batches", encode_batch(a.batch(1, 10)))
    assert (status, doc["reason"]) == (401, "auth")
    status, doc = raw(server.url, "GET", f"/v1/journals/{a.journal_id}", token=TOK_B)
    assert status == 403
    assert held_count(server.db) == 0


def test_refusals_come_back_as_sync_refused(server, two_terminals):
    a, _ = two_terminals
    a.extend(300)
    target = HttpTarget(server.url, TOK_A)
    target.push(a.batch(1, 100))
    with pytest.raises(SyncRefused) as info:
        target.push(a.batch(150, 200))
    assert (info.value.reason, info.value.status, info.value.high_seq) == ("gap", 409, 100)
    forged = a.batch(101, 200)
    forged.rows["amount"][5] = 1
    with pytest.raises(SyncRefused) as info:
        target.push(forged)
    assert (info.value.reason, info.value.status) == ("chain", 409)
    other = HandJournal(100, journal_id=a.journal_id, seed=42)
    with pytest.raises(SyncRefused) as info:
        target.push(other.batch(1, 100))
    assert (info.value.reason, info.value.status) == ("fork", 409)
    back = SqliteTarget(server.db)
    assert back.count() == 100
    assert [r["reason"] for r in back.refusals()] == ["gap", "chain", "fork"]
    back.close()


def test_malformed_bodies_get_clear_4xx_and_store_nothing(server, two_terminals):
    a, _ = two_terminals
    a.extend(5)
    path = f"/v1/journals/{a.journal_id}/batches"
    good = json.loads(encode_batch(a.batch(1, 5)))

    def post(doc_or_bytes):
        body = doc_or_bytes if isinstance(doc_or_bytes, bytes) else json.dumps(doc_or_bytes).encode()
        return raw(server.url, "POST", path, body, token=TOK_A)

    cases = [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        ({**good, "count": "5"}, "'count' must be int"),
        ({**good, "count": True}, "'count' must be int"),
        ({**good, "anchor": 1}, "'anchor' must be bool"),
        ({k: v for k, v in good.items() if k != "links"}, "missing field 'links'"),
        ({**good, "rows": "!!!"}, "not valid base64"),
        ({**good, "rows": good["rows"][:-8]}, "rows hold"),
        ({**good, "count": 4}, "rows hold"),
        ({**good, "first_seq": 2}, "first_seq 2"),
        ({**good, "layout": "0000"}, "layout"),
        ({**good, "format": "v0"}, "unsupported format"),
        ({**good, "journal_id": "xyz"}, "not a UUID"),
        ({**good, "payloads": base64.b64encode(b"short").decode()}, "payload_len"),
    ]
    for body, expected in cases:
        status, doc = post(body)
        assert status == 400, (body, doc)
        assert doc["ok"] is False and doc["reason"] == "invalid" and expected in doc["message"], doc
    status, doc = raw(server.url, "POST", "/v1/journals/not-a-uuid/batches", b"{}", token=TOK_A)
    assert status == 400 and "UUID" in doc["message"]
    status, doc = raw(server.url, "GET", "/v1/nowhere")
    assert status == 404 and doc["ok"] is False
    assert held_count(server.db) == 0
    assert len(SqliteTarget(server.db).refusals()) == len(cases)


def test_size_limits_413_and_syncer_halves_its_batch(tmp_path):
    hj = HandJournal(1000, max_payload=100)
    with start_in_thread(f"sqlite:///{tmp_path}/b.db", {TOK_T: hj.journal_id}, max_batch=300, create=True,
                         max_body=64 * 1024) as srv:
        target = HttpTarget(srv.url, TOK_T)
        with pytest.raises(SyncRefused) as info:
            target.push(hj.batch(1, 400))                  # 400 records > max_batch
        assert (info.value.status, info.value.reason) == (413, "invalid")
        status, doc = raw(srv.url, "POST", f"/v1/journals/{hj.journal_id}/batches", b"x" * 70_000, token=TOK_T)
        assert status == 413 and "limit" in doc["message"]
        # 1000 -> 500 -> 250 (-> 125) records a batch, until a batch's body fits 64 KiB
        result = Syncer(hj, target, batch=1000).run_once()
        assert (result.sent, result.watermark) == (1000, 1000) and result.batches in (4, 8)
        back = SqliteTarget(f"{tmp_path}/b.db")
        assert_same_records(back.read_range(hj.journal_id), hj.rows, hj.payloads, hj.links)


def test_unreachable_server_is_unavailable_not_refused(tmp_path):
    hj = HandJournal(10)
    srv = start_in_thread(f"sqlite:///{tmp_path}/b.db", {TOK_T: hj.journal_id}, create=True)
    url = srv.url
    srv.stop()
    target = HttpTarget(url, TOK_T, timeout=2)
    with pytest.raises(SyncUnavailable):
        target.push(hj.batch(1, 10))
    assert hj.sync_watermark == 0


def test_tokens_file_and_specs(tmp_path):
    j1, j2 = uuid.uuid4(), uuid.uuid4()
    f = tmp_path / "tokens.txt"
    f.write_text(f"# terminals of store 12\n{j1}=alpha-0123456789ab\n\n {j2} = beta-0123456789abc \n"
                 f"{j2}=beta-rotated-0123456789\n")
    assert load_tokens(f) == {"alpha-0123456789ab": j1, "beta-0123456789abc": j2, "beta-rotated-0123456789": j2}
    with pytest.raises(ValueError, match="JOURNAL_ID=TOKEN"):
        parse_tokens(["justatoken"])
    with pytest.raises(ValueError, match="UUID"):
        parse_tokens(["store12=alpha-0123456789ab"])
    with pytest.raises(ValueError, match="already the token"):
        parse_tokens([f"{j1}=same-0123456789abcd", f"{j2}=same-0123456789abcd"])


# ----------------------------------------------------------------------------- the real `serve` process

def test_fifty_terminals_sync_concurrently_through_serve(tmp_path):
    terminals, per_terminal, batch = 50, 240, 40
    journals = [HandJournal(per_terminal, terminal=t, seed=t, max_payload=120) for t in range(terminals)]
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text("".join(f"{j.journal_id}=token-{i}-5e1f7b2d4a6c\n" for i, j in enumerate(journals)))
    db = tmp_path / "back.db"
    proc, url = start_serve_process(f"sqlite:///{db}", tokens_file, tmp_path)
    try:
        results, errors = {}, []
        start = threading.Barrier(terminals)

        def terminal(i):
            try:
                syncer = Syncer(journals[i], HttpTarget(url, f"token-{i}-5e1f7b2d4a6c", timeout=60), batch=batch)
                start.wait(30)
                t0 = time.monotonic()
                while journals[i].sync_watermark < per_terminal and time.monotonic() - t0 < 60:
                    try:
                        results[i] = syncer.run_once()
                    except SyncUnavailable:
                        time.sleep(0.05)
            except Exception as exc:  # pragma: no cover - asserted below
                errors.append(exc)

        threads = [threading.Thread(target=terminal, args=(i,)) for i in range(terminals)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        elapsed = time.monotonic() - t0
    finally:
        proc.terminate()
        proc.wait(30)
    assert errors == [] and elapsed < 120
    assert all(j.sync_watermark == per_terminal for j in journals)
    back = SqliteTarget(db)
    assert back.count() == terminals * per_terminal
    states = {s.journal_id: s for s in back.journals()}
    assert len(states) == terminals
    for j in journals:
        st = states[j.journal_id]
        assert (st.high_seq, st.records, st.last_link) == (per_terminal, per_terminal, j.links[-1])
    assert back.refusals() == []
    spot = journals[17]
    assert_same_records(back.read_range(spot.journal_id), spot.rows, spot.payloads, spot.links)
    back.close()
