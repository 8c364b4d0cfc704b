"""The back office as BI tools read it (issue 16): text as TEXT, v_records and v_payments,
the (journal_id, day, terminal) index, the same on SQLite and PostgreSQL, and the migration
of a back office made by posfast before (text fields as BLOB / bytea)."""
import datetime as dt
import pathlib
import sqlite3
import zoneinfo

import numpy as np
import pytest

import posfast
from posfast.sync import SqliteTarget, Syncer

from _sync_helpers import assert_back_office_equals_journal

DATA = pathlib.Path(__file__).parent / "data"
RRN = "215565210905"
T0 = int(dt.datetime(2026, 11, 20, 1, 30, tzinfo=dt.timezone.utc).timestamp() * 1e6)   # 09:30 in Shanghai


def _journal(path, tz="Asia/Shanghai"):
    """A till's day: a card sale (pending, then approved with RRN), a declined QR payment, a
    refund, a training sale, a print, a text field that is not UTF-8 and one with a NUL."""
    rule = posfast.DayRule(tz=tz, starts_at="04:00")
    j = posfast.Journal.create(path, capacity=4096, day_rule=rule)
    sale = j.begin_payment(1, amount=12_50, method="card", ts=T0, order_ref="ORD-1")
    j.finish_payment(sale, "approved", auth_code="A1B2C3", rrn=RRN, pan_last4="4242", ts=T0 + 5_000_000,
                     host_ref="HR-77")
    qr = j.begin_payment(2, amount=8_00, method="qr", ts=T0 + 60_000_000, channel="wechat")
    j.finish_payment(qr, "declined", ts=T0 + 61_000_000)
    refund = j.begin_payment(1, kind="refund", amount=2_50, method="card", ref_seq=sale, ts=T0 + 120_000_000)
    j.finish_payment(refund, "approved", rrn="215565210906", ts=T0 + 121_000_000)
    j.append(terminal=1, kind="sale", state="approved", method="cash", amount=99_00, flags=1,
             ts=T0 + 180_000_000)                                                       # training
    j.append(terminal=1, kind="print", state="ok", ref_seq=sale, ts=T0 + 6_000_000)
    j.append(terminal=3, kind="note", state="none", auth_code=b"\xff\xfeab", client_ref=b"x\x00y",
             ts=T0 + 240_000_000)
    return j, {"sale": sale, "qr": qr, "refund": refund}


def _local(ts_us, tz="Asia/Shanghai"):
    return dt.datetime.fromtimestamp(ts_us / 1e6, zoneinfo.ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")


def _rows(cur, sql, params=()):
    cur_ = cur.execute(sql, params)
    names = [d[0] for d in cur_.description]
    return [dict(zip(names, r)) for r in cur_.fetchall()]


def _check_views(rows_of, j, txn):
    """What a BI tool sees: the same whichever database (rows_of runs a query)."""
    found = rows_of(f"SELECT seq, rrn, store, till FROM records NATURAL JOIN registry WHERE rrn = '{RRN}'")
    assert [(r["seq"], r["rrn"], r["store"], r["till"]) for r in found] == [(txn["sale"] + 1, RRN, "SH-01", "till 1")]
    recs = rows_of("SELECT * FROM v_records ORDER BY seq")
    assert len(recs) == j.head_seq
    first = recs[0]
    assert (first["kind"], first["state"], first["method"], first["store"], first["till"], first["tid"]) == \
        ("sale", "pending", "card", "SH-01", "till 1", "T0000001")
    assert first["local_time"] == _local(T0) == "2026-11-20 09:30:00" and first["day"] == "2026-11-20"
    assert first["order_ref"] == "ORD-1" and first["amount"] == 1250 and first["training"] == 0
    approved = recs[1]
    assert (approved["state"], approved["rrn"], approved["auth_code"], approved["pan_last4"], approved["host_ref"]) \
        == ("approved", RRN, "A1B2C3", "4242", "HR-77")
    note = recs[-1]
    assert note["kind"] == "note" and note["auth_code"] == "\ufffd\ufffdab" and note["client_ref"] == "x\ufffdy"
    assert [r["training"] for r in recs if r["amount"] == 9900] == [1]
    pays = rows_of("SELECT * FROM v_payments ORDER BY txn_id")
    assert [(p["txn_id"], p["kind"], p["final_state"], p["method"], p["signed"], p["net"], p["records"])
            for p in pays] == [(txn["sale"], "sale", "approved", "card", 1250, 1250, 2),
                               (txn["qr"], "sale", "declined", "qr", 800, 0, 2),
                               (txn["refund"], "refund", "approved", "card", -250, -250, 2)]
    assert pays[0]["rrn"] == RRN and pays[0]["local_time"] == "2026-11-20 09:30:00"
    assert pays[0]["final_local_time"] == "2026-11-20 09:30:05" and pays[0]["day"] == "2026-11-20"
    assert pays[1]["channel"] == "wechat" and pays[1]["terminal"] == 2 and pays[1]["till"] == "till 1"
    # the day's net by method, as a BI tool would ask it
    by = rows_of("SELECT method, sum(net) AS net FROM v_payments WHERE store = 'SH-01' AND day = '2026-11-20' "
                 "GROUP BY method ORDER BY method")
    assert [(r["method"], int(r["net"])) for r in by] == [("card", 1000), ("qr", 0)]


def _register(bo, j):
    bo.register(j.journal_id, merchant_id="1900000109", store="SH-01", till="till 1", tid="T0000001")


def test_sqlite_back_office_reads_as_text_with_views(tmp_path):
    j, txn = _journal(tmp_path / "till.pfj")
    bo = SqliteTarget(tmp_path / "back.db", create=True)
    _register(bo, j)
    assert Syncer(j, bo, batch=3).run_once().watermark == j.head_seq
    assert_back_office_equals_journal(bo, j)         # the bytes of every field, exactly
    bo.close()
    con = sqlite3.connect(tmp_path / "back.db")
    types = {r[1]: r[2] for r in con.execute("PRAGMA table_info(records)")}
    assert all(types[c] == "TEXT" for c in ("pan_last4", "auth_code", "rrn", "client_ref", "channel"))
    assert con.execute("SELECT typeof(rrn) FROM records WHERE rrn = ?", (RRN,)).fetchone() == ("text",)
    assert con.execute("SELECT count(*) FROM records WHERE text_raw IS NOT NULL").fetchone() == (1,)
    plan = " ".join(r[3] for r in con.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM records WHERE journal_id = ? AND day = ? AND terminal = ?",
        (str(j.journal_id), 20777, 1)))
    assert "records_journal_day_terminal" in plan
    _check_views(lambda sql: _rows(con, sql), j, txn)
    con.close()
    j.close()


def test_views_are_the_same_on_postgresql(tmp_path, dsn):
    pytest.importorskip("psycopg", reason="PostgresTarget needs psycopg 3 (pip install 'psycopg[binary]')")
    import psycopg
    from posfast.sync import PostgresTarget
    j, txn = _journal(tmp_path / "till.pfj")
    pg = PostgresTarget(dsn)
    lite = SqliteTarget(tmp_path / "back.db", create=True)
    for bo in (pg, lite):
        _register(bo, j)
    Syncer(j, pg, batch=4).run_once()
    lite.push(j.read_range(1, j.head_seq), day_rule=j.day_rule)     # the same records, to SQLite
    assert_back_office_equals_journal(pg, j)
    assert_back_office_equals_journal(lite, j)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT data_type FROM information_schema.columns WHERE table_name = 'records' "
                            "AND column_name = 'rrn'").fetchone() == ("text",)

        def pg_rows(sql):
            with conn.cursor() as cur:
                return _rows(cur, sql)
        _check_views(pg_rows, j, txn)
        con = sqlite3.connect(tmp_path / "back.db")
        for view in ("v_records ORDER BY seq", "v_payments ORDER BY txn_id"):
            a = pg_rows(f"SELECT * FROM {view}")
            b = _rows(con, f"SELECT * FROM {view}")
            for r in a:
                r["journal_id"] = str(r["journal_id"])
            assert a == b, view
        con.close()
        idx = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'records_journal_day_terminal'"
                           ).fetchone()[0]
        assert "(journal_id, day, terminal)" in idx
    pg.close()
    lite.close()
    j.close()


# ----------------------------------------------------------------------------- migration

def _old_rows(j):
    """Rows as posfast before issue 16 inserted them: text fields as bytes (BLOB / bytea)."""
    batch = j.read_range(1, j.head_seq)
    rows = batch.rows
    out = []
    for i in range(len(rows)):
        values = []
        for name in rows.dtype.names:
            v = rows[name][i]
            if rows.dtype.fields[name][0].kind == "S":
                values.append(bytes(v))
            elif rows.dtype.fields[name][0] == np.dtype("<u8"):
                values.append(int(np.array(v, "<u8").view("<i8")))
            else:
                values.append(int(v))
        order_ref, host_ref = batch_refs(batch, i)
        out.append((str(j.journal_id), *values, bytes(batch.payloads[i]), bytes(batch.links[i]), order_ref, host_ref))
    return out, batch


def batch_refs(batch, i):
    from posfast._core import decode_ext
    ext = batch.exts[i] if batch.exts else b""
    if not ext:
        return "", ""
    _c, order, host = decode_ext(ext)
    return order.decode(), host.decode()


def _old_sqlite(path, j):
    con = sqlite3.connect(path)
    con.executescript((DATA / "backoffice_0x_sqlite.sql").read_text())
    rows, batch = _old_rows(j)
    con.executemany(f"INSERT INTO records VALUES ({', '.join('?' * len(rows[0]))})", rows)
    con.execute("INSERT INTO journals VALUES (?, 1, ?, ?, ?, 1, 2, 0, 240, 'Asia/Shanghai')",
                (str(j.journal_id), j.head_seq, bytes(batch.links[-1]), j.head_seq))
    con.execute("INSERT INTO registry VALUES (?, '1900000109', 'SH-01', 'till 1', 'T0000001', '', 1)",
                (str(j.journal_id),))
    con.commit()
    assert con.execute("SELECT count(*) FROM records WHERE rrn = ?", (RRN,)).fetchone() == (0,)   # the old trouble
    con.close()


def test_an_old_sqlite_back_office_is_migrated(tmp_path):
    j, txn = _journal(tmp_path / "till.pfj")
    _old_sqlite(tmp_path / "back.db", j)
    ro = SqliteTarget(tmp_path / "back.db", readonly=True)        # read as it is, not migrated
    assert_back_office_equals_journal(ro, j)
    ro.close()
    bo = SqliteTarget(tmp_path / "back.db")                       # opened for writing: migrated
    assert_back_office_equals_journal(bo, j)
    j.set_sync_watermark(j.head_seq)
    more = j.append(terminal=1, kind="sale", state="approved", method="cash", amount=5_00, ts=T0 + 300_000_000)
    assert Syncer(j, bo).run_once().watermark == more          # the chain continues after it
    bo.close()
    con = sqlite3.connect(tmp_path / "back.db")
    assert con.execute("SELECT seq, typeof(rrn) FROM records WHERE rrn = ?", (RRN,)).fetchall() == \
        [(txn["sale"] + 1, "text")]
    assert con.execute("SELECT local_time FROM records WHERE seq = 1").fetchone() == ("2026-11-20 09:30:00",)
    assert con.execute("SELECT local_time FROM records WHERE seq = ?", (more,)).fetchone() == (_local(T0 + 300_000_000),)
    names = {r[1] for r in con.execute("PRAGMA index_list(records)")}
    assert {"records_journal_day_terminal", "records_day_terminal"} <= names
    con.close()


def test_an_old_postgresql_back_office_is_migrated(tmp_path, dsn):
    pytest.importorskip("psycopg", reason="PostgresTarget needs psycopg 3 (pip install 'psycopg[binary]')")
    import psycopg
    from posfast.sync import PostgresTarget
    j, txn = _journal(tmp_path / "till.pfj")
    rows, batch = _old_rows(j)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute((DATA / "backoffice_0x_postgres.sql").read_text())
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO records VALUES ({', '.join(['%s'] * len(rows[0]))})", rows)
        conn.execute("INSERT INTO journals VALUES (%s, 1, %s, %s, %s, 1, 2, 0, 240, 'Asia/Shanghai')",
                     (j.journal_id, j.head_seq, bytes(batch.links[-1]), j.head_seq))
        conn.execute("INSERT INTO registry VALUES (%s, '1900000109', 'SH-01', 'till 1', 'T0000001', '', 1)",
                     (j.journal_id,))
        assert conn.execute("SELECT count(*) FROM records WHERE rrn = %s", (RRN.encode(),)).fetchone() == (1,)
    ro = PostgresTarget(dsn, readonly=True)
    assert_back_office_equals_journal(ro, j)
    ro.close()
    pg = PostgresTarget(dsn)
    assert_back_office_equals_journal(pg, j)
    j.set_sync_watermark(j.head_seq)
    more = j.append(terminal=1, kind="sale", state="approved", method="cash", amount=5_00, ts=T0 + 300_000_000)
    assert Syncer(j, pg).run_once().watermark == more
    pg.close()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT seq FROM records WHERE rrn = %s", (RRN,)).fetchall() == [(txn["sale"] + 1,)]
        assert conn.execute("SELECT local_time FROM records WHERE seq = 1").fetchone() == ("2026-11-20 09:30:00",)
        assert conn.execute("SELECT local_time FROM records WHERE seq = %s", (more,)).fetchone() == \
            (_local(T0 + 300_000_000),)
        assert conn.execute("SELECT count(*) FROM records WHERE text_raw IS NOT NULL").fetchone() == (1,)
        assert conn.execute("SELECT auth_code FROM v_records WHERE kind = 'note'").fetchone() == ("\ufffd\ufffdab",)
    j.close()


def test_local_time_follows_the_zone_across_daylight_saving(tmp_path):
    from posfast.sync.backoffice import local_times
    zone = "Europe/Berlin"
    # 2026-10-25 01:30 UTC is 02:30 CET (after the change at 01:00 UTC); 00:30 UTC is 02:30 CEST
    ts = [int(dt.datetime(2026, 10, 25, h, 30, tzinfo=dt.timezone.utc).timestamp() * 1e6) for h in (0, 1, 12)]
    assert local_times(np.array(ts), (0, 0, zone)) == [_local(t, zone) for t in ts] == \
        ["2026-10-25 02:30:00", "2026-10-25 02:30:00", "2026-10-25 13:30:00"]
    assert local_times(np.array(ts[:1]), (480, 240, "")) == ["2026-10-25 08:30:00"]
