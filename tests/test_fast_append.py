"""The core's fast path of one append (src/fields.pxi) agrees with Python's row_values.

The fast path packs the common case of `Journal.append(**fields)` in C and declines the rest,
which posfast.records.row_values then accepts or refuses.  These tests hold it to that: for any
fields, either it declines, or it packs exactly the row Python would, and Python accepts them;
and a journal written through it holds the same records, links included, as one written
through Python's path.
"""
import datetime as dt
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import posfast
from posfast import DayRule, InvalidRecord, Journal, Kind, Method, State, _core
from posfast.records import pack_row, row_values

TS = 1_764_000_000_000_000          # 2025-11-24
RULES = [DayRule(utc_offset="+08:00", starts_at="04:00"), DayRule(),
         DayRule(tz="Europe/Berlin", starts_at="03:00")]

# values of each field: valid ones in every spelling users give (VALID), and the odd ones
# the fast path must leave to Python (ODD: floats, bools, negative amounts, text that does
# not fit ...).  A drawn record has mostly valid fields, so that one odd value decides.
VALID = {
    "ts": st.integers(TS - 10**12, TS + 10**12),
    "terminal": st.integers(0, 2**32 - 1), "receipt_no": st.integers(0, 2**32 - 1),
    "operator": st.integers(0, 99), "flags": st.integers(0, 255),
    "txn_id": st.integers(0, 2**63 - 1), "ref_seq": st.integers(0, 9),
    "currency": st.sampled_from([156, 978, 840, 998, 1, 997]),
    "amount": st.integers(0, 10**9),
    "kind": st.one_of(st.sampled_from(["sale", "refund", "void", "reversal", "print"]),
                      st.sampled_from(list(Kind)), st.sampled_from([int(k) for k in Kind])),
    "state": st.one_of(st.sampled_from([s.name.lower() for s in State]),
                       st.sampled_from(list(State))),
    "method": st.one_of(st.sampled_from([m.name.lower() for m in Method]),
                        st.sampled_from(list(Method))),
    "client_ref": st.one_of(st.binary(max_size=16).filter(lambda b: not b.endswith(b"\0")),
                            st.text(alphabet="ABC-0123456789", max_size=16)),
    "pan_last4": st.sampled_from([b"4242", "4242", b"", "1"]),
    "auth_code": st.text(alphabet="A1B2C3", max_size=6),
    "rrn": st.text(alphabet="0123456789", max_size=12),
    "channel": st.sampled_from(["wechat", "alipay", "", b"unionpay"]),
}
_odd_int = st.one_of(st.integers(-2**65, -1), st.integers(2**32, 2**64), st.just(True),
                     st.just(1.0), st.just(np.int64(3)), st.just("7"))
ODD = {
    "ts": st.one_of(st.just(TS * 1000), st.just(1), st.just(dt.datetime(2025, 11, 24, 12)),
                    st.just(2**70), st.just(TS + 10**15)),
    "terminal": _odd_int, "receipt_no": _odd_int, "operator": _odd_int,
    "flags": st.one_of(_odd_int, st.just(256)), "txn_id": st.one_of(_odd_int, st.just(2**63)),
    "ref_seq": _odd_int,
    "currency": st.one_of(st.sampled_from([0, 999, 1000, -1]), _odd_int),
    "amount": st.one_of(st.integers(-10**6, -1), st.just(2**63), st.just(12.5),
                        st.just(False)),
    "kind": st.one_of(st.sampled_from(["SALE", "Sale", "nope", " sale", "day-close"]),
                      st.integers(0, 300), st.just(1.0)),
    "state": st.one_of(st.sampled_from(["x", "APPROVED"]), st.integers(0, 300)),
    "method": st.one_of(st.sampled_from(["wallet?"]), st.integers(0, 300)),
    "client_ref": st.one_of(st.binary(min_size=17, max_size=18), st.text(max_size=17),
                            st.just(b"a\0"), st.just(7)),
    "pan_last4": st.one_of(st.sampled_from([b"12345", "４２"]), st.binary(max_size=5)),
    "auth_code": st.one_of(st.binary(max_size=7), st.text(max_size=7), st.just(123456)),
    "rrn": st.one_of(st.binary(max_size=13), st.text(max_size=13)),
    "channel": st.one_of(st.sampled_from(["渠道", "abcdefghijk"]), st.binary(max_size=11)),
    "colour": st.just("red"),
}


@st.composite
def field_dicts(draw):
    fields = {}
    for name in sorted(ODD):
        if draw(st.integers(0, 2)) == 0:
            continue                                  # not given
        odd = name not in VALID or draw(st.integers(0, 15)) == 0
        fields[name] = draw(ODD[name] if odd else VALID[name])
    if draw(st.booleans()):
        fields["ts"] = draw(VALID["ts"])             # (else maybe none: the clock's time)
    return fields


def _python_row(fields, rule):
    try:
        return pack_row(row_values(dict(fields), rule))
    except InvalidRecord:
        return None


# no deadline and no too-slow health check: a slow CPU (an armhf core under emulation) takes
# longer per example, which says nothing about the fast path's correctness
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=field_dicts(), which=st.integers(0, len(RULES) - 1))
def test_fast_path_packs_what_python_packs_or_declines(fields, which):
    rule = RULES[which]
    day_args = (0, rule.day_number) if rule.tz_name else (rule.day_shift, None)
    fast = _core.pack_fields(dict(fields), *day_args)
    if fast is None:
        return                              # declined: Python decides (and words a refusal)
    python = _python_row(fields, rule)
    if python is not None and "ts" not in fields:     # the clock's time: read twice
        python, fast = python[:8] + python[16:40] + python[44:], fast[:8] + fast[16:40] + fast[44:]
    assert python == fast, fields


@pytest.mark.parametrize("fields", [
    dict(kind="sale", state="approved", amount=1250, currency=156, method="card",
         terminal=3, ts=TS, pan_last4=b"4242", auth_code="A1B2C3", rrn=b"612345678901",
         client_ref=b"T03-000001", receipt_no=7, operator=11, flags=0, channel="wechat"),
    dict(kind="print", terminal=1, ts=TS, ref_seq=1),
    dict(kind=Kind.REFUND, state=State.PENDING, method=Method.CASH, amount=5, currency=978,
         terminal=2**32 - 1, ts=TS, txn_id=2**63 - 1),
])
def test_the_common_case_takes_the_fast_path(fields):
    """What POS code passes (names, enums, ASCII text, ints) is packed by the core itself."""
    for rule in RULES:
        day_args = (0, rule.day_number) if rule.tz_name else (rule.day_shift, None)
        fast = _core.pack_fields(dict(fields), *day_args)
        assert fast is not None and fast == pack_row(row_values(dict(fields), rule))


@pytest.mark.parametrize("change", [
    dict(amount=12.5), dict(terminal=True), dict(amount=-1), dict(currency=0),
    dict(ts=TS * 1000), dict(ts=dt.datetime(2025, 11, 24, 12)), dict(kind="nope"),
    dict(client_ref="订单"), dict(client_ref=b"x" * 17), dict(pan_last4="12345"),
    dict(colour="red"), dict(terminal=np.int64(3)), dict(currency=999), dict(flags=256),
])
def test_anything_else_is_left_to_python(change):
    fields = dict(kind="sale", state="approved", amount=1250, currency=156, terminal=3, ts=TS)
    fields.update(change)
    assert _core.pack_fields(fields, 0, None) is None


def _twins(tmp_path, rule):
    jid = uuid.uuid4()
    return [Journal.create(str(tmp_path / ("%s.pfj" % name)), capacity=64, day_rule=rule,
                           journal_id=jid, durability="none") for name in ("fast", "python")]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.describe())
def test_journals_written_both_ways_hold_the_same_records(tmp_path, rule):
    fast, slow = _twins(tmp_path, rule)
    appends = [
        dict(kind="sale", state="pending", amount=1250, currency=156, method="qr", terminal=3,
             ts=TS, client_ref=b"K-1", channel="alipay"),
        dict(kind="sale", state="approved", amount=1250, currency=156, method="qr", terminal=3,
             ts=TS + 5, txn_id=1, rrn="612345678901"),
        dict(kind="print", terminal=3, ts=TS + 9, ref_seq=1, payload=b"receipt"),
        dict(kind="refund", state="approved", amount=50, currency=156, terminal=4,
             ts=TS + 86_400_000_000, order_ref="WX20251124-0001", host_ref="4200001234"),
        dict(kind="sale", state="approved", amount=7, currency=156, terminal=4, ts=TS + 99,
             client_ref=b"A\x00B"),                  # a NUL inside the key is the key's own
    ]
    for a in appends:
        a = dict(a)
        payload = a.pop("payload", b"")
        fast.append(payload, **a)
        refs = {k: a.pop(k).encode() for k in ("order_ref", "host_ref") if k in a}
        slow._append_one(row_values(a, rule), payload, **refs)
    assert fast.head_seq == slow.head_seq == len(appends)
    for seq in range(1, len(appends) + 1):
        a, b = fast.get(seq), slow.get(seq)
        assert (a.seq, a.ts, a.day, a.kind, a.state, a.txn_id, a.terminal, a.amount, a.channel,
                a.client_ref, a.order_ref, a.host_ref, a.payload, a.link) == \
               (b.seq, b.ts, b.day, b.kind, b.state, b.txn_id, b.terminal, b.amount, b.channel,
                b.client_ref, b.order_ref, b.host_ref, b.payload, b.link)
    assert fast.get(1).txn_id == 1 and fast.get(3).txn_id == 0       # payments name themselves
    assert list(fast.query(terminal=3)["seq"]) == [1, 2, 3]
    assert fast.get(5).client_ref == b"A\x00B" and fast.find(client_ref=b"A\x00B")["txn_id"] == 5
    assert fast.get(4).order_ref == "WX20251124-0001" and fast.last(4).seq == 5
    for j in (fast, slow):
        assert j.verify().ok
        j.close()


def test_a_refusal_reads_the_same_through_the_fast_path(tmp_path):
    """A declined append gets Python's own refusal, and nothing is written."""
    j = Journal.create(str(tmp_path / "t.pfj"), capacity=16, durability="none")
    with pytest.raises(InvalidRecord, match="amount=-5 is negative"):
        j.append(kind="sale", state="approved", amount=-5, currency=156, terminal=1)
    with pytest.raises(InvalidRecord, match="must be an integer of minor units"):
        j.append(kind="sale", amount=12.5, currency=156, terminal=1)
    assert j.head_seq == 0
    j.append(kind="sale", amount=5, currency=156, terminal=1, client_ref="订单-1")   # Python's path
    assert j.get(1).client_ref == "订单-1".encode()
    j.close()


def test_format_1_journal_refuses_a_channel_as_before(tmp_path):
    j = Journal.create(str(tmp_path / "v1.pfj"), capacity=16, format_version=1)
    j.append(kind="sale", state="approved", amount=5, currency=156, terminal=1, client_ref=b"k")
    assert j.get(1).client_ref == b"k"
    with pytest.raises(posfast.PosfastError, match="format-1"):
        j.append(kind="sale", amount=5, currency=156, terminal=1, channel="wechat")
    assert j.head_seq == 1
    j.close()


def test_payment_maps_fed_at_append_equal_a_fresh_read(tmp_path):
    """The client_ref / order_ref / host_ref maps and the pending set, fed one append at a
    time, hold what reading the records afresh gives (catch_up)."""
    from posfast.payments import _Catchup
    j = Journal.create(str(tmp_path / "p.pfj"), capacity=4096, durability="none")
    j.find(client_ref="warm-up")                      # the maps exist from here on
    txns = []
    for i in range(300):
        t = j.begin_payment(terminal=1 + i % 3, amount=100 + i, client_ref="K-%d" % i,
                            order_ref="WX-%d" % i if i % 2 else None,
                            channel="wechat" if i % 2 else None,
                            payload=b"receipt %d" % i if i % 3 == 0 else b"")
        txns.append(t)
        if i % 5:
            j.finish_payment(t, "approved" if i % 7 else "declined", host_ref="H%d" % i)
        if i % 11 == 0:
            j.append(kind="print", terminal=1, ref_seq=t, txn_id=t, state="ok")
    fed = j._payments._catchup
    fresh = _Catchup()
    fresh.catch_up(j._storage)
    assert fed.upto == fresh.upto == j.head_seq
    assert fed.pending == fresh.pending == {t for i, t in enumerate(txns) if i % 5 == 0}
    for i in range(300):
        # (a map may keep only a key's first seq while it is small: find reads from there)
        assert fed.by_client_ref.find(("K-%d" % i).encode()) == [txns[i]]
        for name, key in (("by_order_ref", b"WX-%d" % i), ("by_host_ref", b"H%d" % i)):
            assert getattr(fed, name).find(key)[:1] == sorted(getattr(fresh, name).find(key))[:1]
    for i in range(300):
        key = (1 + i % 3) << 32 | j.get(txns[i]).receipt_no
        assert fed.by_receipt_code.find(key) == fresh.by_receipt_code.find(key) == \
            ([txns[i]] if i % 3 == 0 else [])
    assert j.find(order_ref="WX-7")["txn_id"] == txns[7]
    assert j.find(host_ref="H8")["state"] == "approved"
    assert [r.txn_id for r in j.in_doubt()] == [t for i, t in enumerate(txns) if i % 5 == 0]
    # idempotent by either key: the same payment, no second record
    head = j.head_seq
    assert j.begin_payment(terminal=1, amount=100, client_ref="K-0") == txns[0]
    assert j.begin_payment(terminal=2, amount=101, order_ref="WX-1") == txns[1]
    assert j.head_seq == head
    j.close()
