"""The dashboard at /ui of `posfast serve`: a real server on loopback over a back office
filled by real journals through the Syncer, read in headless Chromium (tests/_browser.py,
the DevTools protocol): the rendered DOM is asserted on and screenshots are saved (to
$POSFAST_ARTIFACTS if set, else the test's tmp dir).  Plain-HTTP checks (login, escaping,
the admin check) run without a browser."""
import datetime as dt
import http.client
import os
import re
import urllib.parse

import pytest

pytest.importorskip("aiohttp", reason="posfast serve needs aiohttp")

import posfast  # noqa: E402
from posfast.sync import SqliteTarget, Syncer  # noqa: E402
from posfast.sync.server import start_in_thread  # noqa: E402

import _browser  # noqa: E402

HOSTILE_STORE = '<script>window.__xss=1</script>Mall & "Co" \'1\''
HOSTILE_REF = '<img src=x onerror="window.__xss=2">'
RULE = posfast.DayRule(utc_offset="+08:00", starts_at="04:00")
# yesterday (UTC): a business day that has ended under the +08:00 / 04:00 rule, whatever the clock,
# and recent, as the pages' default windows (payments in doubt, days closed) expect
DAY = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)


def at(hour, minute=0, day=DAY):
    """A UTC microsecond time for a local (UTC+8) wall time of `day`."""
    local = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    return int(local.timestamp() * 1_000_000)


def paid(j, terminal, amount, method, hour, minute=0, *, order_ref=None, rrn=None, host_ref=None,
         state="approved", kind="sale", ref_seq=0):
    """A payment begun at local hour:minute; returns its txn id."""
    txn = j.begin_payment(terminal, kind=kind, amount=amount, currency=156, method=method, order_ref=order_ref,
                          ts=at(hour, minute), ref_seq=ref_seq)
    if state is not None:
        j.finish_payment(txn, state, rrn=rrn, host_ref=host_ref, auth_code="A1B2C3" if rrn else None,
                         ts=at(hour, minute + 1))
    return txn


@pytest.fixture(scope="module")
def back_office(tmp_path_factory):
    """Two stores: the hostile-named one with two synced tills (one has a payment in doubt and
    a forced day close), SH-02 with a till that never synced; a failed reconciliation."""
    tmp = tmp_path_factory.mktemp("dash")
    db = tmp / "back.db"
    target = SqliteTarget(db, create=True)
    t1 = posfast.Journal.create(tmp / "t1.pfj", capacity=4096, durability="none", day_rule=RULE)
    t2 = posfast.Journal.create(tmp / "t2.pfj", capacity=4096, durability="none", day_rule=RULE)
    paid(t1, 1, 1250, "card", 10, 15, order_ref=HOSTILE_REF, rrn="215565210905", host_ref="HOST-77")
    paid(t1, 1, 800, "cash", 12, 30)
    big = paid(t1, 1, 2000, "card", 12, 45, rrn="215565210906")
    paid(t1, 1, 300, "card", 13, 5, kind="refund", rrn="215565210907", ref_seq=big)
    paid(t1, 1, 999, "card", 14, 0, state="declined")
    doubt = paid(t1, 1, 4321, "qr", 19, 5, order_ref="ORD-DOUBT-1", state=None)
    t1.close_day(DAY.isoformat(), force=True)
    paid(t2, 2, 5000, "qr", 12, 10, order_ref="ORD-Q-5")
    paid(t2, 2, 700, "cash", 20, 50)
    t2.close_day(DAY.isoformat())
    for j in (t1, t2):
        Syncer(j, target).run_once()
    pg_dsn = _pg_copy(t1, t2)
    target.register(t1.journal_id, store=HOSTILE_STORE, till="till <1>", tid="T0000001")
    target.register(t2.journal_id, store=HOSTILE_STORE, till="till 2", tid="T0000002")
    import uuid
    ghost = uuid.uuid4()
    target.register(ghost, store="SH-02", till="till 9", tid="T0000009")
    target.record_reconciliation(HOSTILE_STORE, DAY.isoformat(), [
        {"journal_id": str(t1.journal_id), "till": "till <1>", "ok": False, "discrepancies": 2,
         "counts": {"missing_in_journal": 1, "amount_mismatch": 1}},
        {"journal_id": str(t2.journal_id), "till": "till 2", "ok": True, "discrepancies": 0, "counts": {}}],
        store_ok=False, store_discrepancies=2, host=f"statement-{DAY.isoformat()}.csv")
    admin, _ = target.issue_token(role="admin", label="head office")
    terminal_token, _ = target.issue_token(t1.journal_id, label="till 1")
    facts = {"t1": t1.journal_id, "t2": t2.journal_id, "ghost": ghost, "doubt_txn": doubt, "admin": admin,
             "terminal_token": terminal_token, "db": db, "pg_dsn": pg_dsn}
    t1.close()
    t2.close()
    target.close()
    with start_in_thread(f"sqlite:///{db}", None) as srv:
        facts["url"] = srv.url
        yield facts


def _pg_copy(*journals):
    """The same journals synced into a PostgreSQL back office too (None without PostgreSQL)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None
    import _pg
    if _pg.base_dsn() is None:
        return None
    from posfast.sync import PostgresTarget
    dsn = _pg.fresh_database()
    pg = PostgresTarget(dsn)
    for j in journals:
        Syncer(j, pg, anchor=True).run_once() if False else _push_all(j, pg)
    pg.close()
    return dsn


def _push_all(journal, target):
    batch = journal.read_range(1, journal.head_seq)
    batch.day_rule = journal.day_rule
    target.push(batch)


def request(url, path, *, method="GET", body=None, headers=None):
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read().decode("utf-8", "replace")
    conn.close()
    return resp, data


def login_cookie(bo):
    resp, _ = request(bo["url"], "/ui/login", method="POST",
                      body=urllib.parse.urlencode({"token": bo["admin"], "next": "/ui"}),
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 303, resp.status
    return resp.getheader("Set-Cookie")


# ------------------------------------------------------------------ without a browser

def test_pages_need_the_admin_login(back_office):
    bo = back_office
    for path in ("/ui", "/ui/store?store=x", "/ui/doubt", "/ui/search?q=1", "/ui/zreports", "/ui/reconciliations"):
        resp, _ = request(bo["url"], path)
        assert resp.status == 303 and resp.getheader("Location").startswith("/ui/login?next="), path
    resp, _ = request(bo["url"], "/ui", headers={"Authorization": f"Bearer {bo['terminal_token']}"})
    assert resp.status == 303                      # a till's token is no admin
    resp, page = request(bo["url"], "/ui/login", method="POST",
                         body=urllib.parse.urlencode({"token": bo["terminal_token"]}),
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 401 and "not an admin token" in page and resp.getheader("Set-Cookie") is None
    cookie = login_cookie(bo)
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    resp, page = request(bo["url"], "/ui", headers={"Cookie": cookie.split(";")[0]})
    assert resp.status == 200 and "script-src" not in resp.getheader("Content-Security-Policy")
    assert "default-src 'none'" in resp.getheader("Content-Security-Policy")
    resp, _ = request(bo["url"], "/ui/doubt", headers={"Authorization": f"Bearer {bo['admin']}"})
    assert resp.status == 200
    # the login's next= only goes back into the dashboard
    resp, _ = request(bo["url"], "/ui/login", method="POST",
                      body=urllib.parse.urlencode({"token": bo["admin"], "next": "//evil.example/"}),
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.getheader("Location") == "/ui"


def test_hostile_store_name_and_order_ref_are_escaped_in_the_html(back_office):
    bo = back_office
    headers = {"Authorization": f"Bearer {bo['admin']}"}
    store_q = urllib.parse.urlencode({"store": HOSTILE_STORE, "day": DAY.isoformat()})
    for path in ("/ui", f"/ui/store?{store_q}", "/ui/search?" + urllib.parse.urlencode({"q": HOSTILE_REF}),
                 "/ui/reconciliations", "/ui/zreports", "/ui/search?q=215565210905"):
        resp, page = request(bo["url"], path, headers=headers)
        assert resp.status == 200, path
        assert "<script" not in page and "<img" not in page, path
        assert "window.__xss" not in page.replace("window.__xss=1</script>", "") or \
            "&lt;script&gt;window.__xss=1&lt;/script&gt;" in page, path
    resp, page = request(bo["url"], f"/ui/store?{store_q}", headers=headers)
    assert html_unescaped_title(page) == f"Store {HOSTILE_STORE}"
    resp, page = request(bo["url"], "/ui/search?" + urllib.parse.urlencode({"q": HOSTILE_REF}), headers=headers)
    assert "&lt;img src=x onerror=&quot;window.__xss=2&quot;&gt;" in page


def html_unescaped_title(page):
    import html
    return html.unescape(re.search(r"<h1>(.*?)</h1>", page).group(1))


# ------------------------------------------------------------------ in Chromium

@pytest.fixture(scope="module")
def browser():
    if _browser.find_chromium() is None:
        pytest.skip(_browser.SKIP_REASON)
    b = _browser.Browser()
    yield b
    b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    where = os.environ.get("POSFAST_ARTIFACTS")
    path = os.path.join(where, "dashboard") if where else str(tmp_path_factory.mktemp("screenshots"))
    os.makedirs(path, exist_ok=True)
    return path


def test_browser_login_fleet_store_day_doubt_search_z_reconciliation(back_office, browser, shots):
    bo, b = back_office, browser
    b.goto(bo["url"] + "/ui")
    assert b.js("location.pathname") == "/ui/login"
    b.submit("#login", {"token": "pft_not-a-token-at-all-0000"})
    assert "not an admin token" in b.text("#login-error")
    b.submit("#login", {"token": bo["admin"]})
    assert b.js("location.pathname") == "/ui"
    assert b.js("document.cookie") == ""                # HttpOnly: no script can read the token
    assert [c["name"] for c in b.cookies() if c["httpOnly"]] == ["posfast_admin"]
    b.screenshot(os.path.join(shots, "fleet.png"))

    # fleet: attention first; the hostile store name is text, nothing of it ran
    assert b.js("window.__xss === undefined") and b.js("document.scripts.length") == 0
    rows = b.js("Array.from(document.querySelectorAll('table.fleet tbody tr'), tr => "
                "[tr.className, ...Array.from(tr.cells, td => td.textContent)])")
    assert [r[0] for r in rows] == ["critical", "warning", "ok"]
    assert rows[0][2:4] == ["SH-02", "till 9"] and "never seen" in rows[0][11]
    tills = {r[3]: r for r in rows}
    assert tills["till <1>"][2] == HOSTILE_STORE and tills["till <1>"][8] == "1"        # in doubt
    assert "reconciliation failed" in tills["till <1>"][11]
    assert tills["till 2"][10] == f"{DAY.isoformat()}: ok" and tills["till 2"][11] == ""
    assert b.text("#count-critical") == "1 critical"

    # a store's day: totals by method and terminal, the hour chart, reached by clicking the store
    b.js("document.querySelector('table.fleet a[href^=\"/ui/store\"]').href")
    link = b.js("Array.from(document.querySelectorAll('table.fleet a')).find(a => a.textContent === "
                f"{HOSTILE_STORE!r}).getAttribute('href')")
    b.goto(bo["url"] + link)
    assert b.text("h1") == f"Store {HOSTILE_STORE}" and b.js("window.__xss === undefined")
    assert b.text("#day") == DAY.isoformat()
    # approved: card 1250 + 2000 - refund 300, cash 800 + 700, qr 5000; declined and in doubt left out
    assert b.text("#net") == "94.50"
    methods = b.js("Array.from(document.querySelectorAll('table.by-method tbody tr'), tr => "
                   "Array.from(tr.cells, td => td.textContent))")
    assert methods == [["card", "156", "3", "29.50"], ["cash", "156", "2", "15.00"], ["qr", "156", "1", "50.00"]]
    terms = b.js("Array.from(document.querySelectorAll('table.by-terminal tbody tr'), tr => "
                 "Array.from(tr.cells, td => td.textContent))")
    assert terms == [["till 2", "2", "156", "2", "57.00", "0"], ["till <1>", "1", "156", "4", "37.50", "1"]]
    bars = b.js("Array.from(document.querySelectorAll('svg.chart rect.bar'), r => "
                "[+r.dataset.hour, +r.dataset.amount, r.getBBox().height])")
    assert len(bars) == 24
    assert {h: a for h, a, _ in bars if a} == {10: 1250, 12: 800 + 2000 + 5000, 13: -300, 20: 700}
    heights = {h: ht for h, _, ht in bars}
    assert heights[12] > heights[10] > heights[20] > 0 and heights[13] == 0 and heights[3] == 0
    b.screenshot(os.path.join(shots, "store-day.png"))

    # payments in doubt
    b.goto(bo["url"] + "/ui/doubt")
    assert b.text("#doubt-count").startswith("1 payments in doubt")
    row = b.js("Array.from(document.querySelector('table.records tbody tr').cells, td => td.textContent)")
    assert row[0] == HOSTILE_STORE and row[1] == "till <1>" and row[5] == "pending" and row[9] == "ORD-DOUBT-1"
    assert row[7] == "43.21" and row[2] == f"{DAY.isoformat()} 19:05:00 +0800"
    b.screenshot(os.path.join(shots, "doubt.png"))

    # search: by RRN, by receipt code, by host ref, by the hostile order ref (typed into the box)
    b.submit("form[role=search]", {"q": "215565210905"})
    assert b.text("#result-count") == "1 records match 215565210905."
    found = b.js("Array.from(document.querySelector('table.records tbody tr').cells, td => td.textContent)")
    assert found[4:8] == ["sale", "approved", "card", "12.50"] and found[9] == HOSTILE_REF and found[10] == "HOST-77"
    assert b.js("document.images.length") == 0 and b.js("window.__xss === undefined")
    receipt = found[8]
    assert re.fullmatch(r"1-\d{6}", receipt)
    b.submit("form[role=search]", {"q": receipt})
    assert b.texts("table.records tbody tr td:nth-child(9)") == [receipt, receipt]   # pending + approved record
    b.submit("form[role=search]", {"q": HOSTILE_REF})
    assert b.text("#result-count") == f"2 records match {HOSTILE_REF}."
    assert b.js("document.images.length") == 0 and b.js("window.__xss === undefined")
    b.submit("form[role=search]", {"q": "HOST-77"})
    assert b.texts("table.records tbody tr td:nth-child(12)") == ["215565210905"]
    b.screenshot(os.path.join(shots, "search.png"))

    # Z-reports: one per till, till 1's forced with the payment in doubt
    b.goto(bo["url"] + "/ui/zreports")
    z = b.js("Array.from(document.querySelectorAll('table.zreports > tbody > tr'), tr => "
             "[tr.className, ...Array.from(tr.cells).slice(0, 7).map(td => td.textContent)])")
    assert sorted(z, key=lambda r: r[2]) == [
        ["", HOSTILE_STORE, "till 2", DAY.isoformat(), "1", "all", "57.00", "0"],
        ["warning", HOSTILE_STORE, "till <1>", DAY.isoformat(), "1", "all", "37.50", "1"]]
    b.screenshot(os.path.join(shots, "zreports.png"))

    # reconciliation reports
    b.goto(bo["url"] + "/ui/reconciliations")
    rec = b.js("Array.from(document.querySelectorAll('table.reconciliations tbody tr'), tr => "
               "[tr.className, ...Array.from(tr.cells, td => td.textContent)])")
    assert {r[4]: (r[0], r[5], r[6], r[7]) for r in rec} == {
        "till <1>": ("critical", "2 discrepancies", "amount_mismatch 1, missing_in_journal 1", "2 discrepancies"),
        "till 2": ("", "ok", "", "2 discrepancies")}
    b.screenshot(os.path.join(shots, "reconciliations.png"))

    # log out: the cookie is gone and the pages ask for the login again
    b.js("document.querySelector('header form[action=\"/ui/logout\"]').requestSubmit()")
    import time
    deadline = time.monotonic() + 10
    while b.js("location.pathname") != "/ui/login" and time.monotonic() < deadline:
        time.sleep(0.05)
    b.goto(bo["url"] + "/ui/doubt")
    assert b.js("location.pathname") == "/ui/login"


def test_the_dashboard_reads_are_the_same_on_postgresql(back_office):
    """What the pages show, read from the SQLite and the PostgreSQL back office of the same tills."""
    if back_office["pg_dsn"] is None:
        import _pg
        pytest.skip(_pg.SKIP_REASON)
    from posfast.sync import PostgresTarget
    lite, pg = SqliteTarget(back_office["db"], readonly=True), PostgresTarget(back_office["pg_dsn"], readonly=True)
    try:
        jids = [back_office["t1"], back_office["t2"]]
        for t in (lite, pg):
            assert t.latest_day(jids) == posfast.records.day_number(DAY)
        assert lite.day_payments(jids, DAY) == pg.day_payments(jids, DAY)
        assert len(lite.day_payments(jids, DAY)) == 8
        doubt = pg.payments_in_doubt()
        assert lite.payments_in_doubt() == doubt and [(d["order_ref"], d["amount"]) for d in doubt] == [
            ("ORD-DOUBT-1", 4321)]
        d = posfast.records.day_number(DAY)
        assert pg.newest_day() == lite.newest_day() >= d
        assert [len(t.payments_in_doubt(d)) for t in (lite, pg)] == [1, 1]
        assert [t.payments_in_doubt(d + 2) for t in (lite, pg)] == [[], []]    # begun before the window
        for q in ("215565210905", HOSTILE_REF, "HOST-77", "ORD-Q-5", "2-000001", "nothing-like-it"):
            assert lite.search(q) == pg.search(q), q
        assert [r["rrn"] for r in pg.search("215565210905")] == ["215565210905"]
        assert len(pg.search("2-000001")) == 2
        z_lite, z_pg = lite.day_closes(jids), pg.day_closes(jids)
        assert z_lite == z_pg and sorted(z["report"]["day"] for z in z_pg) == [DAY.isoformat()] * 2
    finally:
        lite.close()
        pg.close()


def test_a_login_on_one_server_works_on_another_of_the_same_database(back_office):
    """Several stateless servers on one PostgreSQL: the login cookie one of them set is
    honoured by the other (it holds the admin token, checked against the database), and a
    revoked admin token is refused by both within the token cache's ttl."""
    if back_office["pg_dsn"] is None:
        import _pg
        pytest.skip(_pg.SKIP_REASON)
    from posfast.sync import PostgresTarget
    pg = PostgresTarget(back_office["pg_dsn"])
    admin, info = pg.issue_token(role="admin", label="dashboard on two servers")
    pg.register(back_office["t1"], store="PG-STORE", till="till 1")
    with start_in_thread(back_office["pg_dsn"], None, token_ttl=0) as a, \
            start_in_thread(back_office["pg_dsn"], None, token_ttl=0) as b:
        resp, _ = request(a.url, "/ui/login", method="POST", body=urllib.parse.urlencode({"token": admin}),
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        cookie = resp.getheader("Set-Cookie").split(";")[0]
        resp, page = request(b.url, "/ui/store?" + urllib.parse.urlencode({"store": "PG-STORE",
                                                                           "day": DAY.isoformat()}),
                             headers={"Cookie": cookie})
        assert resp.status == 200 and re.search(r'id="net">([^<]*)<', page).group(1) == "37.50"
        pg.revoke_token(info.token_id)
        for srv in (a, b):
            resp, _ = request(srv.url, "/ui", headers={"Cookie": cookie})
            assert resp.status == 303 and resp.getheader("Location").startswith("/ui/login")
    pg.close()


def test_wrong_tokens_at_the_pages_count_toward_the_address_limit(back_office):
    """Guessing the admin token through /ui (bearer or cookie) is limited like the login form."""
    bo = back_office
    with start_in_thread(f"sqlite:///{bo['db']}", None, auth_failures_per_minute=3) as srv:
        for n in range(3):
            resp, _ = request(srv.url, "/ui", headers={"Authorization": "Bearer pft_wrong%d" % n})
            assert resp.status == 303
        # the address is now over its limit: even the right token waits, at the form and the API
        resp, page = request(srv.url, "/ui/login", method="POST",
                             body=urllib.parse.urlencode({"token": bo["admin"], "next": "/ui"}),
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert resp.status == 429 and "too many failed tokens" in page
        resp, _ = request(srv.url, "/v1/fleet", headers={"Authorization": f"Bearer {bo['admin']}"})
        assert resp.status == 429


def test_amounts_are_written_with_their_currency_s_decimals():
    from posfast.sync.dashboard import money
    assert (money(123456, 156), money(1234, 392), money(1234, 414), money(1234, 352), money(-5, 840)) == \
        ("1,234.56", "1,234", "1.234", "1,234", "-0.05")
