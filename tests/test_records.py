"""Record model: every field round-trips, payload sizes, enums by name, the day rule,
and the refusals (full card numbers, float money, out-of-range fields)."""
import datetime as dt

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import posfast
from posfast import DayRule, InvalidRecord, Kind, Method, State

from conftest import MAX_PAYLOAD, expected, expected_dict

CST = dt.timezone(dt.timedelta(hours=8))

FULL = dict(ts=1_795_000_000_123_456, terminal=4_000_000_001, kind="refund", state="approved",
            method="card", flags=posfast.Flag.OFFLINE | posfast.Flag.FORCED, currency=978,
            amount=2**62 - 7, txn_id=2**63 - 1, ref_seq=41, receipt_no=2**32 - 1,
            operator=77, client_ref=b"order-2026-00042", pan_last4=b"4242", auth_code=b"Z9Y8X7",
            rrn=b"123456789012", channel="wechat", order_ref="4200001234202611201234567890123",
            host_ref="2026112022001499991234567890")


def test_every_field_round_trips_through_get_query_and_reopen(make_journal):
    j = make_journal()
    seq = j.append(payload=b"\x00receipt\xff" * 3, **FULL)
    want = {"seq": seq, "ts": FULL["ts"], "day": DayRule().day_number(FULL["ts"]),
            "terminal": 4_000_000_001, "kind": 2, "state": 2, "method": 2, "flags": 18,
            "currency": 978, "amount": 2**62 - 7, "txn_id": 2**63 - 1, "ref_seq": 41,
            "receipt_no": 2**32 - 1, "operator": 77, "client_ref": b"order-2026-00042",
            "pan_last4": b"4242", "auth_code": b"Z9Y8X7", "rrn": b"123456789012",
            "channel": "wechat", "order_ref": "4200001234202611201234567890123",
            "host_ref": "2026112022001499991234567890", "payload": b"\x00receipt\xff" * 3}
    rec = j.get(seq)
    assert rec.to_dict() == want
    assert rec["amount"] == rec.amount == 2**62 - 7
    assert rec.kind == Kind.REFUND and rec.state == State.APPROVED and rec.method == Method.CARD
    row = j.query(terminal=4_000_000_001)
    assert len(row) == 1
    for name, value in want.items():
        if name not in ("payload", "order_ref", "host_ref"):      # (refs: on the Record)
            assert row[name][0] == (value.encode() if name == "channel" else value), name
    assert row["payload_len"][0] == 27
    assert j.payloads(row["seq"]) == [want["payload"]]
    j.close()
    with posfast.Journal.open(j.path, readonly=True) as again:
        assert again.get(seq).to_dict() == want
        assert again.last(terminal=4_000_000_001, kind="refund").to_dict() == want


def test_append_many_round_trips_like_append(make_journal):
    j = make_journal(capacity=512)
    seqs = range(1, 41)
    columns = {name: [expected(s)[0][name] for s in seqs] for name in expected(1)[0]}
    payloads = [expected(s)[1] for s in seqs]
    got = j.append_many(columns, payloads)
    assert got == range(1, 41)
    for s in seqs:
        assert j.get(s).to_dict() == expected_dict(s, j.day_rule)
    rows = j.query()
    assert rows["seq"].tolist() == list(seqs)
    assert rows["amount"].tolist() == columns["amount"]
    assert rows["payload_len"].tolist() == [len(p) for p in payloads]
    assert j.payloads(rows["seq"]) == payloads


@pytest.mark.parametrize("slot_size", [128, 256])
def test_every_payload_size_from_zero_to_the_limit(make_journal, slot_size):
    j = make_journal(capacity=8192, slot_size=slot_size, max_payload=MAX_PAYLOAD, durability="none")
    payloads = [bytes((size * 31 + i) & 0xFF for i in range(size)) for size in range(MAX_PAYLOAD + 1)]
    for size, payload in enumerate(payloads):
        assert j.append(terminal=1, kind="note", amount=size, payload=payload) == size + 1
    j.close()
    j = posfast.Journal.open(j.path, readonly=True)
    try:
        assert j.head_seq == MAX_PAYLOAD + 1 and j.oldest_seq == 1
        for size, payload in enumerate(payloads):
            rec = j.get(size + 1)
            assert rec.amount == size and rec.payload == payload
        rows = j.query()
        assert rows["payload_len"].tolist() == list(range(MAX_PAYLOAD + 1))
        # records of head + payload > slot_size take several slots (and move positions)
        assert j.verify().ok
        assert j.status()["used_slots"] == sum(-(-(128 + n) // slot_size) for n in range(MAX_PAYLOAD + 1))
    finally:
        j.close()


def test_payload_beyond_max_payload_is_refused_and_nothing_written(make_journal):
    j = make_journal(max_payload=300)
    j.append(terminal=1, kind="sale", amount=1, payload=b"x" * 300)
    with pytest.raises(InvalidRecord, match="payload.*301 bytes.*at most 300"):
        j.append(terminal=1, kind="sale", amount=2, payload=b"x" * 301)
    with pytest.raises(InvalidRecord, match="payload of record 1 is 301 bytes"):
        j.append_many({"terminal": [1, 1], "kind": "sale"}, payloads=[b"", b"y" * 301])
    assert j.head_seq == 1 and j.query()["amount"].tolist() == [1]


@pytest.mark.parametrize("value, want", [
    ("sale", Kind.SALE), ("SALE", Kind.SALE), ("Refund", Kind.REFUND), (" void ", Kind.VOID),
    ("day-close", Kind.DAY_CLOSE), ("day_close", Kind.DAY_CLOSE), (Kind.PRINT, Kind.PRINT),
    (4, Kind.REVERSAL), (np.uint8(6), Kind.COMPLETION)])
def test_kind_accepts_enum_int_and_name(make_journal, value, want):
    j = make_journal()
    seq = j.append(terminal=1, kind=value, amount=0)
    assert j.get(seq).kind == want
    assert j.query(kind=value)["seq"].tolist() == [seq]
    assert Kind.coerce(value) is want


def test_state_and_method_accept_names_in_append_and_append_many(make_journal):
    j = make_journal()
    j.append(terminal=1, kind="sale", state="Declined", method="qr", amount=5)
    j.append_many({"terminal": [1, 2, 3], "kind": ["sale", "REFUND", 6],
                   "state": ["approved", "pending", State.VOIDED],
                   "method": ["wallet", Method.CASH, "voucher"], "amount": [1, 2, 3]})
    rows = j.query()
    assert rows["kind"].tolist() == [1, 1, 2, 6]
    assert rows["state"].tolist() == [3, 2, 1, 5]
    assert rows["method"].tolist() == [3, 4, 1, 5]
    assert j.query(state="approved")["seq"].tolist() == [2]
    assert j.query(state=["pending", "voided"])["seq"].tolist() == [3, 4]


@pytest.mark.parametrize("field, value", [("kind", "sell"), ("state", "done"), ("method", "cheque"),
                                          ("kind", 99), ("state", -1)])
def test_unknown_enum_value_names_the_field(make_journal, field, value):
    j = make_journal()
    fields = {"terminal": 1, "kind": "sale", field: value}
    with pytest.raises(InvalidRecord, match=r"%s=" % field):
        j.append(**fields)
    with pytest.raises(InvalidRecord, match=field):
        j.append_many({"terminal": [1, 1], "kind": "sale", field: ["sale" if field == "kind" else 0,
                                                                   value]})
    assert j.head_seq == 0


@pytest.mark.parametrize("field, value", [
    ("pan_last4", "4111111111111111"), ("pan_last4", b"4111 1111 1111 1111"), ("pan_last4", "41111"),
    ("auth_code", "4111111111111")])
def test_full_card_number_is_refused(make_journal, field, value):
    j = make_journal()
    with pytest.raises(InvalidRecord, match=field if field == "pan_last4" else "card number|%s" % field):
        j.append(terminal=1, kind="sale", amount=100, **{field: value})
    assert j.head_seq == 0


@pytest.mark.parametrize("field, value", [
    ("pan_last4", b"4111111111111111"), ("pan_last4", b"12345")])
def test_full_card_number_is_refused_by_append_many(make_journal, field, value):
    j = make_journal()
    with pytest.raises(InvalidRecord, match=field):
        j.append_many({"terminal": [1, 1], "kind": "sale", "amount": [1, 2], field: [b"", value]})
    assert j.head_seq == 0


def test_last_four_digits_are_kept(make_journal):
    j = make_journal()
    seq = j.append(terminal=1, kind="sale", amount=100, pan_last4="0042")
    assert j.get(seq).pan_last4 == b"0042"


@pytest.mark.parametrize("amount", [12.5, 12.0, np.float64(3.0), np.float32(1.0)])
def test_float_amount_is_refused(make_journal, amount):
    j = make_journal()
    with pytest.raises(InvalidRecord, match="amount.*minor units"):
        j.append(terminal=1, kind="sale", amount=amount)
    with pytest.raises(InvalidRecord, match="amount.*minor units"):
        j.append_many({"terminal": [1, 1], "kind": "sale", "amount": [1, amount]})
    with pytest.raises(InvalidRecord, match="amount"):
        j.append_many({"terminal": [1], "kind": "sale", "amount": np.array([1.0])})
    assert j.head_seq == 0


@pytest.mark.parametrize("field, value, pattern", [
    ("terminal", -1, "terminal=-1 is out of range"),
    ("terminal", 2**32, "terminal=4294967296 is out of range"),
    ("currency", 1000, "currency=1000 is out of range"),
    ("flags", 256, "flags=256 is out of range"),
    ("receipt_no", 1.0, "receipt_no=1.0 must be an integer"),
    ("operator", "7", "operator='7' must be an integer"),
    ("txn_id", True, "txn_id=True must be an integer"),
    ("auth_code", b"ABCDEFG", "auth_code=b'ABCDEFG' is 7 bytes, the field holds 6"),
    ("rrn", "ABCDEFGHIJKLMN", "rrn=.* is 14 bytes, the field holds 12"),
    ("client_ref", b"x" * 17, "client_ref=.* is 17 bytes, the field holds 16"),
    ("ts", "yesterday", "cannot read 'yesterday' as a time"),
])
def test_invalid_record_message_names_the_field(make_journal, field, value, pattern):
    j = make_journal()
    fields = {"terminal": 1, "kind": "sale", "amount": 1}
    fields[field] = value
    with pytest.raises(InvalidRecord, match=pattern):
        j.append(**fields)
    assert j.head_seq == 0


def test_unknown_field_and_missing_kind_are_named(make_journal):
    j = make_journal()
    with pytest.raises(InvalidRecord, match="amout"):
        j.append(terminal=1, kind="sale", amout=5)
    with pytest.raises(InvalidRecord, match="kind="):
        j.append(terminal=1, amount=5)
    with pytest.raises(InvalidRecord, match="row 2: currency=1001 is out of range"):
        j.append_many({"terminal": [1, 2, 3], "kind": "sale", "currency": [156, 978, 1001]})
    with pytest.raises(InvalidRecord, match="differ in length"):
        j.append_many({"terminal": [1, 2, 3], "kind": "sale", "amount": [1, 2]})
    with pytest.raises(InvalidRecord, match="3 payloads for 2 records"):
        j.append_many({"terminal": [1, 2], "kind": "sale"}, payloads=[b"", b"", b""])
    assert j.head_seq == 0


def test_append_many_is_validated_as_a_whole(make_journal):
    j = make_journal()
    j.append(terminal=1, kind="sale", amount=1)
    with pytest.raises(InvalidRecord, match="row 3"):
        j.append_many({"terminal": [1, 2, 3, -4, 5], "kind": "sale", "amount": [1, 2, 3, 4, 5]})
    assert j.head_seq == 1
    assert j.append(terminal=1, kind="sale", amount=2) == 2


def test_txn_id_defaults_to_own_seq_for_payment_kinds_only(make_journal):
    j = make_journal()
    j.append(terminal=1, kind="note", amount=0)
    sale = j.append(terminal=1, kind="sale", amount=100)
    printed = j.append(terminal=1, kind="print", state="ok", ref_seq=sale)
    refund = j.append(terminal=1, kind="refund", amount=100, txn_id=sale)
    many = j.append_many({"terminal": [1, 1], "kind": ["void", "print"], "amount": [0, 0]})
    assert j.get(sale).txn_id == sale
    assert j.get(printed).txn_id == 0 and j.get(printed).ref_seq == sale
    assert j.get(refund).txn_id == sale
    assert j.get(1).txn_id == 0
    assert j.get(many[0]).txn_id == many[0] and j.get(many[1]).txn_id == 0


def test_ts_defaults_to_now_and_accepts_datetimes(make_journal):
    j = make_journal()
    before = posfast.records.now_us()
    a = j.append(terminal=1, kind="sale", amount=1)
    after = posfast.records.now_us()
    b = j.append(terminal=1, kind="sale", amount=1, ts=dt.datetime(2026, 11, 20, 12, 0, tzinfo=CST))
    c = j.append(terminal=1, kind="sale", amount=1, ts=dt.datetime(2026, 11, 20, 4, 0))  # naive = UTC
    assert before <= j.get(a).ts <= after
    assert j.get(b).ts == j.get(c).ts == 1_795_147_200_000_000     # 2026-11-20 04:00 UTC


def local_us(*args):
    return posfast.records.to_us(dt.datetime(*args, tzinfo=CST))


def test_day_follows_the_day_rule_offset_and_cutoff(make_journal):
    rule = DayRule(utc_offset="+08:00", starts_at="04:00")
    j = make_journal(day_rule=rule)
    stamps = {
        "evening": local_us(2026, 11, 20, 21, 30),       # 20th
        "2am": local_us(2026, 11, 21, 2, 0),              # still the 20th's business day
        "3:59": local_us(2026, 11, 21, 3, 59, 59),        # still the 20th
        "4am": local_us(2026, 11, 21, 4, 0),              # the 21st begins
        "utc_midnight": posfast.records.to_us(dt.datetime(2026, 11, 21, 0, 0)),  # 08:00 local: 21st
    }
    seqs = {name: j.append(terminal=1, kind="sale", amount=1, ts=ts) for name, ts in stamps.items()}
    day20 = (dt.date(2026, 11, 20) - dt.date(1970, 1, 1)).days
    assert j.get(seqs["evening"]).day == day20
    assert j.get(seqs["2am"]).day == day20
    assert j.get(seqs["3:59"]).day == day20
    assert j.get(seqs["4am"]).day == day20 + 1
    assert j.get(seqs["utc_midnight"]).day == day20 + 1
    assert rule.day_of(stamps["2am"]) == dt.date(2026, 11, 20)
    assert j.query(day="2026-11-20")["seq"].tolist() == [seqs["evening"], seqs["2am"], seqs["3:59"]]
    assert j.query(day=dt.date(2026, 11, 21))["seq"].tolist() == [seqs["4am"], seqs["utc_midnight"]]
    assert j.query(day=day20 + 1)["seq"].tolist() == [seqs["4am"], seqs["utc_midnight"]]
    assert rule.day_start_us("2026-11-21") == stamps["4am"]
    # append_many derives the same days
    j.append_many({"terminal": [2] * 5, "kind": "sale", "ts": list(stamps.values())})
    assert j.query(terminal=2)["day"].tolist() == [day20, day20, day20, day20 + 1, day20 + 1]
    # the rule lives in the file header
    j.close()
    with posfast.Journal.open(j.path, readonly=True) as again:
        assert again.day_rule.offset_minutes == 480 and again.day_rule.start_minutes == 240
        assert again.get(seqs["2am"]).day == day20


def test_day_rule_negative_offset_and_times_before_1970():
    rule = DayRule(utc_offset="-05:30", starts_at="06:00")
    ts = posfast.records.to_us(dt.datetime(2026, 3, 1, 11, 0))      # 05:30 local on the 1st
    assert rule.day_of(ts) == dt.date(2026, 2, 28)
    assert rule.day_of(ts + 30 * 60 * 1_000_000) == dt.date(2026, 3, 1)
    assert DayRule().day_number(-1) == -1
    assert DayRule().day_of(dt.datetime(1969, 12, 31, 23, 59)) == dt.date(1969, 12, 31)
    with pytest.raises(ValueError, match="utc_offset"):
        DayRule(utc_offset="+15:00")
    with pytest.raises(ValueError, match="starts_at"):
        DayRule(starts_at="25:00")


def test_hash_chain_links_recompute_from_rows(make_journal):
    j = make_journal(capacity=256)
    for s in range(1, 21):
        fields, payload = expected(s)
        j.append(payload=payload, **fields)
    prev = posfast.genesis_link(j.journal_id.bytes)
    batch = j.read_range(1, 20)
    assert batch.prev_link == prev
    for i, s in enumerate(range(1, 21)):
        link = posfast.chain_link(prev, batch.rows[i], batch.payloads[i], batch.exts[i])
        assert link == j.link(s) == batch.links[i]
        prev = link
    # the link covers the fields: change one and it no longer matches
    row = batch.rows[4].copy()
    row["amount"] += 1
    assert posfast.chain_link(j.link(4), row, batch.payloads[4]) != j.link(5)


def test_non_ascii_text_is_stored_as_utf8_by_append_and_append_many(make_journal):
    j = make_journal()
    a = j.append(terminal=1, kind="sale", amount=1, client_ref="订单-7")
    many = j.append_many({"terminal": [1, 1], "kind": "sale", "client_ref": ["订单-7", b"plain"]})
    assert j.get(a).client_ref == j.get(many[0]).client_ref == "订单-7".encode("utf-8")
    assert j.get(many[1]).client_ref == b"plain"
    with pytest.raises(InvalidRecord, match="row 0: client_ref is 18 bytes, the field holds 16"):
        j.append_many({"terminal": [1], "kind": "sale", "client_ref": ["订单订单订单"]})
    with pytest.raises(InvalidRecord, match="client_ref=.* is 18 bytes, the field holds 16"):
        j.append(terminal=1, kind="sale", client_ref="订单订单订单")


@pytest.mark.parametrize("seq", [0, -1, 2**64, 2**70, 2])
def test_get_of_a_seq_not_in_the_journal_is_a_key_error(make_journal, seq):
    j = make_journal()
    j.append(terminal=1, kind="sale", amount=1)
    with pytest.raises(KeyError):
        j.get(seq)


def test_bulk_client_refs_are_stored_as_single_appends_store_them(make_journal):
    """append_many builds the extensions of client_ref-only records at once; they must be the
    bytes encode_ext makes for append one by one (same reads, a chain that verifies), with and
    without payloads."""
    bulk = make_journal(capacity=512)
    one = make_journal(capacity=512, path=bulk.path + "-one.pfj")
    refs = [b"", b"k", b"order-%04d" % 7, b"x" * 16, b"", b"ab"]
    payloads = [b"", b"p" * 3, b"", b"q" * 200, b"r", b""]
    for pays in (None, payloads):
        first = bulk.append_many({"terminal": 1, "kind": "note", "client_ref": refs}, pays)
        for i, ref in enumerate(refs):
            one.append(payload=pays[i] if pays else b"", terminal=1, kind="note", client_ref=ref)
        exts = bulk._ring.exts(np.arange(first[0], first[-1] + 1, dtype=np.uint64))
        assert exts == [posfast._core.encode_ext(ref) for ref in refs]
        for seq in first:
            a, b = bulk.get(seq), one.get(seq)
            assert (a.client_ref, a.payload) == (b.client_ref, b.payload) == (
                refs[seq - first[0]], pays[seq - first[0]] if pays else b"")
    assert bulk.verify().ok and one.verify().ok


_COLUMN_VALUES = {
    "ts": st.integers(1_700_000_000_000_000, 1_790_000_000_000_000),
    "terminal": st.integers(0, 2**32 - 1), "kind": st.sampled_from(["sale", "refund", "print"]),
    "state": st.sampled_from(["approved", "pending", "declined"]),
    "method": st.sampled_from(["card", "cash", "qr"]), "flags": st.integers(0, 255),
    "currency": st.sampled_from([156, 978, 840]), "amount": st.integers(0, 2**62),
    "txn_id": st.integers(0, 2**63 - 1), "ref_seq": st.integers(0, 2**63 - 1),
    "receipt_no": st.integers(0, 2**32 - 1), "operator": st.integers(0, 2**32 - 1),
    "client_ref": st.binary(min_size=1, max_size=16).filter(lambda b: not b.endswith(b"\0")),
    "pan_last4": st.sampled_from([b"", b"4242", b"0005"]),
    "auth_code": st.text("ABC123", max_size=6), "rrn": st.text("0123456789", max_size=12),
    "channel": st.sampled_from(["", "wechat", "alipay", "unionpay"]),
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.integers(1, 40))
def test_append_many_rows_equal_single_record_validation(data, n):
    """make_rows (validated columns packed by the core in one pass) gives each row exactly
    what row_values + pack_row give that record alone: columns as numpy arrays, lists or one
    value for every row, text narrower than its field, fields left out."""
    from posfast.records import make_rows, pack_row, row_values
    rule = DayRule(utc_offset="+08:00", starts_at="04:00")
    names = data.draw(st.sets(st.sampled_from(sorted(_COLUMN_VALUES))), label="fields") | {"ts"}
    columns, per_row = {"kind": "sale"}, [{"kind": "sale"} for _ in range(n)]
    for name in sorted(names):
        how = data.draw(st.sampled_from(["list", "array"] if name == "ts" else
                                        ["scalar", "list", "array"]), label=name)
        if how == "scalar":
            value = data.draw(_COLUMN_VALUES[name], label=name)
            columns[name] = value
            for fields in per_row:
                fields[name] = value
            continue
        values = [data.draw(_COLUMN_VALUES[name], label=name) for _ in range(n)]
        for fields, value in zip(per_row, values):
            fields[name] = value
        if how == "array" and name not in ("kind", "state", "method", "channel", "auth_code",
                                           "rrn"):
            columns[name] = np.array(values, dtype="S16" if name in ("client_ref", "pan_last4")
                                     else np.uint64 if name in ("txn_id", "ref_seq")
                                     else np.int64)
        else:
            columns[name] = values
    rows = make_rows(columns, rule)
    assert len(rows) == n
    for i, fields in enumerate(per_row):
        assert rows[i].tobytes() == pack_row(row_values(fields, rule)), (i, fields)


@pytest.mark.parametrize("value", [None, "abc", b"abc", 2**70, "1234567890123456789"])
@pytest.mark.parametrize("name", ["terminal", "amount", "currency", "flags", "ts", "operator"])
def test_append_many_of_no_rows_reads_no_scalar(make_journal, name, value):
    """A batch of no rows with a scalar column writes nothing and refuses nothing, as before
    the core packed the rows (the scalar would fill no row)."""
    j = make_journal()
    assert j.append_many({"kind": "sale", "receipt_no": np.zeros(0, np.int64), name: value}) \
        == range(1, 1)
    assert j.head_seq == 0


def test_append_many_of_empty_lists_writes_nothing(make_journal):
    """Empty lists (a batch with nothing in it) are no rows, not 'floating point' columns."""
    j = make_journal()
    assert j.append_many({"terminal": [], "kind": [], "amount": [], "client_ref": []}) \
        == range(1, 1)
    assert j.append_many({"terminal": [], "kind": "sale"}) == range(1, 1)
    assert j.head_seq == 0
