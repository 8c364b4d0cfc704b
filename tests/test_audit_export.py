"""posfast export --format audit-jsonl | csv (issue 16): the chain is recomputed here from
FORMAT.md's description with hashlib and struct only (not posfast's code), and a row edited in
the back office shows in the transcript."""
import csv
import hashlib
import io
import json
import sqlite3
import struct
import uuid

import pytest

import posfast
from posfast.cli import main
from posfast.receipt import Receipt, ReceiptItem
from posfast.records import day_to_date
from posfast.sync import SqliteTarget, Syncer

DAY1, DAY2, DAY3 = "2026-11-19", "2026-11-20", "2026-11-21"


def _link(prev, rec, version):
    """FORMAT.md 1.3, written from the text: SHA-256(prev ‖ seq ‖ head[24,112) ‖ body)[:16]."""
    t = {k: bytes.fromhex(v) for k, v in rec["text_hex"].items()}

    def pad(b, n):
        return b + b"\0" * (n - len(b))
    head = b"".join([
        struct.pack("<q", rec["ts_us"]), struct.pack("<I", rec["terminal"]),
        bytes([rec["kind_value"], rec["state_value"], rec["method_value"], rec["flags"]]),
        struct.pack("<H", rec["currency"]), pad(t["pan_last4"], 4), pad(t["auth_code"], 6),
        struct.pack("<I", rec["receipt_no"]), struct.pack("<q", rec["amount"]),
        struct.pack("<Q", rec["txn_id"]), struct.pack("<Q", rec["ref_seq"]),
        struct.pack("<I", rec["operator"]), pad(t["rrn"], 12)])
    ext, payload = bytes.fromhex(rec["ext_hex"]), bytes.fromhex(rec["payload_hex"])
    if version == 2:
        head += struct.pack("<i", rec["day_number"]) + struct.pack("<H", len(ext)) + pad(t["channel"], 10)
        body = ext + payload
    else:
        head += pad(t["client_ref"], 16)
        body = payload
    assert len(head) == 88
    return hashlib.sha256(prev + struct.pack("<Q", rec["seq"]) + head + body).digest()[:16]


def _genesis(journal_id):
    return hashlib.sha256(b"posfast-chain-v1" + uuid.UUID(journal_id).bytes).digest()[:16]


def _recompute(docs):
    """{journal id: [seqs whose held link does not follow]} from the export's lines alone."""
    journals = {d["journal_id"]: d for d in docs if d["type"] == "journal"}
    broken, prev = {}, {}
    for d in docs:
        if d["type"] != "record":
            continue
        jid = d["journal_id"]
        j = journals[jid]
        if jid not in prev:
            prev[jid] = _genesis(jid) if j["first_seq"] == 1 else bytes.fromhex(d["prev_link"])
        if _link(prev[jid], d, j["format_version"]) != bytes.fromhex(d["link"]):
            broken.setdefault(jid, []).append(d["seq"])
        prev[jid] = bytes.fromhex(d["link"])
    return broken


@pytest.fixture
def store(tmp_path):
    """Two tills over three days, day closes, receipts as payloads, synced and registered."""
    rule = posfast.DayRule(utc_offset="+08:00", starts_at="04:00")
    back = SqliteTarget(tmp_path / "back.db", create=True)
    journals = []
    for n in (1, 2):
        j = posfast.Journal.create(tmp_path / f"till{n}.pfj", capacity=2048, day_rule=rule)
        for day in (DAY1, DAY2, DAY3):
            t0 = rule.day_start_us(day) + 3_600_000_000
            for k in range(4):
                receipt = Receipt(merchant="Café Zürich", currency=156, receipt_no=k + 1,
                                          items=[ReceiptItem("Tea", qty=1, unit_price=300 + k)],
                                          total=300 + k)
                txn = j.begin_payment(n, amount=300 + k, method="qr", ts=t0 + k * 60_000_000,
                                      order_ref=f"{day}-{n}-{k}", channel="wechat",
                                      payload=receipt.to_payload())
                j.finish_payment(txn, "approved", rrn="%012d" % (n * 1000 + k), ts=t0 + k * 60_000_000 + 2_000_000,
                                 host_ref=f"H{n}{k}")
            j.append(terminal=n, kind="note", state="none", auth_code=b"\xff\x01", ts=t0 + 500_000_000)
        journals.append(j)
    for j in journals:
        for day in (DAY1, DAY2):
            j.close_day(day)
        Syncer(j, back, batch=7).run_once()
        back.register(j.journal_id, merchant_id="1900000109", store="SH-01", till=f"till {journals.index(j) + 1}",
                      tid=f"T000000{journals.index(j) + 1}")
    back.close()
    yield tmp_path, journals
    for j in journals:
        j.close()


def _export(capsys, url, *extra):
    code = main(["export", "--db", url, "--store", "SH-01", "--from", DAY2, "--to", DAY3, *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_audit_jsonl_recomputes_from_format_md(store, capsys):
    tmp_path, journals = store
    url = f"sqlite:///{tmp_path / 'back.db'}"
    code, out, err = _export(capsys, url)
    assert code == 0, err
    docs = [json.loads(line) for line in out.splitlines()]
    assert docs[0]["type"] == "export" and docs[0]["format"] == "posfast-audit/1"
    assert docs[-1] == {"type": "end", "journals": 2, "records": docs[-1]["records"], "day_closes": 2,
                        "ok": True, "broken_links": 0}
    assert _recompute(docs) == {}                      # every link follows, by FORMAT.md alone
    recs = [d for d in docs if d["type"] == "record"]
    for j in journals:
        mine = [d for d in recs if d["journal_id"] == str(j.journal_id)]
        first = mine[0]["seq"]
        assert mine[0]["day"] == DAY2 and str(day_to_date(j.get(first - 1).day)) == DAY1   # the range starts there
        assert [d["seq"] for d in mine] == list(range(first, mine[-1]["seq"] + 1))   # unbroken
        assert {d["day"] for d in mine if d["in_range"]} <= {DAY2, DAY3}
        held = j.read_range(first, mine[-1]["seq"])
        assert [bytes.fromhex(d["link"]) for d in mine] == [bytes(x) for x in held.links]
        assert bytes.fromhex(mine[0]["prev_link"]) == bytes(j.read_range(first - 1, first - 1).links[0])
    sale = next(d for d in recs if d["kind"] == "sale" and d["state"] == "approved")
    assert sale["rrn"].isdigit() and sale["order_ref"].startswith(DAY2) and sale["channel"] == "wechat"
    begun = next(d for d in recs if d["kind"] == "sale" and d["state"] == "pending")
    assert begun["payload"]["receipt"]["merchant"] == "Café Zürich" and begun["payload"]["receipt"]["total"] >= 300
    note = next(d for d in recs if d["kind"] == "note")
    assert note["text_hex"]["auth_code"] == "ff01"
    closes = [d for d in docs if d["type"] == "day_close"]
    assert [c["day"] for c in closes] == [DAY2, DAY2] and all(c["z_no"] >= 1 for c in closes)
    ver = [d for d in docs if d["type"] == "verification"]
    assert [v["ok"] for v in ver] == [True, True] and all("link of seq" in v["start_link_source"] for v in ver)
    assert "every link follows" in err


def test_a_row_edited_in_the_back_office_shows(store, capsys):
    tmp_path, journals = store
    url = f"sqlite:///{tmp_path / 'back.db'}"
    code, out, _ = _export(capsys, url)
    seqs = [d["seq"] for d in map(json.loads, out.splitlines()) if d["type"] == "record"
            and d["journal_id"] == str(journals[1].journal_id) and d["kind"] == "sale" and d["state"] == "approved"]
    victim = seqs[2]
    con = sqlite3.connect(tmp_path / "back.db")
    con.execute("UPDATE records SET amount = amount + 1000 WHERE journal_id = ? AND seq = ?",
                (str(journals[1].journal_id), victim))
    con.commit()
    con.close()
    code, out, err = _export(capsys, url)
    assert code == 1
    docs = [json.loads(line) for line in out.splitlines()]
    assert _recompute(docs) == {str(journals[1].journal_id): [victim]}   # the auditor's own check
    ver = {d["journal_id"]: d for d in docs if d["type"] == "verification"}
    assert ver[str(journals[0].journal_id)]["ok"] is True
    bad = ver[str(journals[1].journal_id)]
    assert bad["ok"] is False and [f["seq"] for f in bad["failures"]] == [victim]
    assert docs[-1]["ok"] is False and docs[-1]["broken_links"] == 1
    assert f"seq {victim}" in err and "do NOT follow" in err


def test_csv_export_and_its_transcript(store, capsys):
    tmp_path, journals = store
    url = f"sqlite:///{tmp_path / 'back.db'}"
    code, out, err = _export(capsys, url, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows and {r["till"] for r in rows} == {"till 1", "till 2"}
    assert all(r["link_ok"] == "True" for r in rows)
    assert rows[0]["link"] == rows[0]["recomputed_link"] and len(rows[0]["prev_link"]) == 32
    assert err.count("verified") == 2
    assert main(["export", "--db", url, "--store", "nowhere", "--from", DAY2, "--to", DAY3]) != 0
    assert "no journal is registered to store 'nowhere'" in capsys.readouterr().err
    assert main(["export", "--db", url, "--store", "SH-01", "--from", DAY3, "--to", DAY2]) != 0
    assert "before --from" in capsys.readouterr().err


def test_postgresql_gives_the_same_export(store, capsys):
    pytest.importorskip("psycopg", reason="PostgresTarget needs psycopg 3 (pip install 'psycopg[binary]')")
    import _pg
    base = _pg.base_dsn()
    if base is None:
        pytest.skip(_pg.SKIP_REASON)
    import psycopg
    from posfast.sync import PostgresTarget
    tmp_path, journals = store
    dsn = _pg.fresh_database(base)
    pg = PostgresTarget(dsn)
    for n, j in enumerate(journals, 1):
        pg.push(j.read_range(1, j.head_seq), day_rule=j.day_rule)
        pg.register(j.journal_id, merchant_id="1900000109", store="SH-01", till=f"till {n}", tid=f"T000000{n}")
    pg.close()
    lite = _export(capsys, f"sqlite:///{tmp_path / 'back.db'}")[1]
    code, out, _ = _export(capsys, dsn)
    assert code == 0

    def body(text):
        return [d for d in map(json.loads, text.splitlines()) if d["type"] not in ("export",)]
    assert body(out) == body(lite)
    victim = [d["seq"] for d in body(out) if d["type"] == "record" and d["journal_id"] == str(journals[0].journal_id)][3]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE records SET rrn = '999999999999' WHERE journal_id = %s AND seq = %s",
                     (journals[0].journal_id, victim))
    code, out, err = _export(capsys, dsn)
    assert code == 1 and _recompute([json.loads(x) for x in out.splitlines()]) == {str(journals[0].journal_id): [victim]}


def test_a_format_1_journal_copied_from_its_anchor_exports_clean(tmp_path, capsys):
    """The golden format-1 journal synced with an anchor into a back office that does not
    record the format (as one made by 0.x): the version is read from the links, and an
    intact chain is reported intact."""
    import shutil
    import os
    data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    shutil.copy(os.path.join(data, "golden_v1.pfj"), tmp_path / "v1.pfj")
    j = posfast.Journal.open(tmp_path / "v1.pfj")
    back = SqliteTarget(tmp_path / "back.db", create=True)
    back.register(j.journal_id, store="V1", till="old till")
    assert Syncer(j, back, anchor=True).run_once().watermark == j.head_seq
    back.close()
    con = sqlite3.connect(tmp_path / "back.db")
    con.execute("UPDATE journals SET format_version = NULL")
    con.commit()
    con.close()
    days = sorted({str(day_to_date(j.get(s).day)) for s in range(j.oldest_seq, j.head_seq + 1)})
    held = j.head_seq - j.oldest_seq + 1
    j.close()
    code = main(["export", "--db", f"sqlite:///{tmp_path / 'back.db'}", "--store", "V1",
                 "--from", days[0], "--to", days[-1]])
    out = capsys.readouterr()
    assert code == 0, out.err
    docs = [json.loads(line) for line in out.out.splitlines()]
    assert held >= 2 and docs[-1]["records"] >= 2         # the anchor and links after it
    assert docs[-1]["ok"] is True and docs[-1]["broken_links"] == 0
