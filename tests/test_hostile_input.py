"""Hostile and careless input to records, receipts and the CLI (issue 10): every bad
field is an InvalidRecord naming the field and the value (and the row for append_many),
the same for append and append_many; no card number is stored whole; identifiers are
never mistaken for card numbers; stored impossible times never crash a reader; every
CLI failure is one line with one prefix and a non-zero exit."""
import datetime as dt
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import posfast
from posfast import InvalidRecord
from posfast.cli import main
from posfast.receipt import InvalidReceipt, Payment, Receipt, ReceiptItem

SALE = dict(terminal=1, kind="sale", state="approved", amount=100, currency=156)
NOW_US = time.time_ns() // 1000


def both(j, field, value, **extra):
    """The InvalidRecord messages of append and of append_many (bad value in row 1)."""
    fields = dict(SALE, **extra)
    fields[field] = value
    with pytest.raises(InvalidRecord) as one:
        j.append(**fields)
    columns = {k: [v, v] for k, v in dict(SALE, **extra).items()}
    columns[field] = [columns.get(field, [SALE.get(field)])[0] if field in SALE or field in extra
                      else None, value]
    with pytest.raises(InvalidRecord) as many:
        j.append_many(columns)
    assert j.head_seq == 0
    return str(one.value), str(many.value)


# ---------------------------------------------------------------- finding 2: validation
def test_none_client_ref_is_empty_in_append_many_as_in_append(make_journal):
    j = make_journal()
    a = j.append(client_ref=None, **SALE)
    many = j.append_many({"terminal": [1, 1], "kind": "sale", "amount": [1, 2], "currency": 156,
                          "client_ref": [None, "x"]})
    assert j.get(a).client_ref == b""
    assert [j.get(s).client_ref for s in many] == [b"", b"x"]      # not b"None"


@pytest.mark.parametrize("field, value, words", [
    ("kind", 1.9, "kind=1.9 is not a Kind"),
    ("kind", True, "kind=True is not a Kind"),
    ("state", 2.7, "state=2.7 is not a State"),
    ("method", 2.0, "method=2.0 is not a Method"),
    ("amount", -500, "amount=-500 is negative"),
    ("currency", 0, "currency=0: 0 is not an ISO 4217"),
    ("currency", 999, "currency=999: 999 is ISO 4217's XXX, 'no currency'"),
    ("client_ref", "order-7\0", "client_ref=b'order-7\\x00' ends with a NUL byte"),
    ("auth_code", b"A1\0", "auth_code=b'A1\\x00' ends with a NUL byte"),
    ("client_ref", "\ud800abc", "client_ref='\\ud800abc' is not valid Unicode"),
    ("amount", True, "amount=True must be an integer"),
    ("terminal", 1.0, "terminal=1.0 must be an integer"),
    ("client_ref", 42, "client_ref=42 must be text or bytes"),
])
def test_bad_field_is_named_with_its_value_by_append_and_append_many(make_journal, field, value,
                                                                      words):
    one, many = both(make_journal(), field, value)
    assert words in one.replace("posfast: ", "")
    assert ("row 1: " + words) in many


def test_refund_amount_is_a_magnitude_but_other_records_may_be_signed(make_journal):
    j = make_journal()
    with pytest.raises(InvalidRecord, match="amount=-1200 is negative: a refund's amount"):
        j.append(terminal=1, kind="refund", state="approved", amount=-1200, currency=156)
    assert j.append(terminal=1, kind="note", amount=-5) == 1      # not money: signed is fine
    assert j.append(terminal=1, kind="print", state="ok", currency=0) == 2
    assert j.append(terminal=1, kind="sale", amount=5, currency=998) == 3   # XTS: testing code
    assert j.get(3).currency == 998


def test_text_payload_two_d_column_and_negative_watermark_are_invalid_records(make_journal):
    j = make_journal()
    with pytest.raises(InvalidRecord, match="payload='receipt text' is text; a payload is bytes"):
        j.append("receipt text", **SALE)
    with pytest.raises(InvalidRecord, match="row 1: payload='x' is text"):
        j.append_many({"terminal": [1, 1], "kind": "note"}, payloads=[b"", "x"])
    with pytest.raises(InvalidRecord, match=r"column terminal has shape \(2, 2\)"):
        j.append_many({"terminal": np.ones((2, 2), dtype=int), "kind": "note"})
    with pytest.raises(InvalidRecord, match=r"column kind has shape \(2, 2\)"):
        j.append_many({"terminal": [1, 1], "kind": np.ones((2, 2), dtype=int)})
    with pytest.raises(InvalidRecord, match=r"set_sync_watermark\(-1\)"):
        j.set_sync_watermark(-1)
    with pytest.raises(InvalidRecord, match=r"set_sync_watermark\(1.5\)"):
        j.set_sync_watermark(1.5)
    assert j.head_seq == 0 and j.sync_watermark == 0


def test_float_enum_arrays_and_bool_lists_are_refused_not_truncated(make_journal):
    j = make_journal()
    with pytest.raises(InvalidRecord, match="row 0: kind=1.0 is not a Kind"):
        j.append_many({"terminal": [1, 1], "kind": np.array([1.0, 2.0])})
    with pytest.raises(InvalidRecord, match="row 1: amount=True must be an integer"):
        j.append_many({"terminal": [1, 1], "kind": "sale", "amount": [5, True]})
    with pytest.raises(InvalidRecord, match="column amount holds booleans"):
        j.append_many({"terminal": [1, 1], "kind": "sale", "amount": np.array([True, False])})
    assert j.head_seq == 0


# ---------------------------------------------------------------- finding 3: card numbers
@pytest.mark.parametrize("payload, what", [
    (b";4111111111111111=25121011000000000000?", "track-2 card data (4111...1111)"),
    (b"4111111111111111D25121011000", "track-2 card data (4111...1111)"),
    (b'{"m":"Shop","f":["Card 4111 1111 1111 1111"]}', "a card number (4111...1111)"),
    (b"amex 3782-822463-10005 ok", "a card number (3782...0005)"),
    (b"unionpay 6212345678901232", "a card number (6212...1232)"),
    (b"mc 2223000048400011", "a card number (2223...0011)"),
])
def test_payload_with_a_card_number_is_refused(make_journal, payload, what):
    j = make_journal()
    with pytest.raises(InvalidRecord, match=r"payload holds %s" % what.replace("(", r"\(")
                       .replace(")", r"\)").replace(".", r"\.") + ".*pan_last4"):
        j.append(payload, **SALE)
    with pytest.raises(InvalidRecord, match=r"row 2: payload holds"):
        j.append_many({"terminal": [1, 1, 1], "kind": "note"}, payloads=[b"a", b"b", payload])
    assert j.head_seq == 0


@pytest.mark.parametrize("payload", [
    b"order 20150806125346",                              # WeChat Pay's example out_trade_no
    b'{"transaction_id":"4200000001201508061234567890"}',  # 28 digits: not a card
    b'{"ref":"6217000000000000004"}',                      # Luhn-valid 19 digits, labelled a ref
    "订单号：4111111111111111".encode(),                    # an order number, labelled as one
    b"4111111111111112",                                   # fails Luhn
    b"1234567890123456",                                   # no card IIN
    b"\x00receipt\xff" * 20,
])
def test_payload_without_a_card_number_is_kept(make_journal, payload):
    j = make_journal(max_payload=600)
    seq = j.append(payload, **SALE)
    assert j.get(seq).payload == payload


@pytest.mark.parametrize("ref", ["20150806125346", "4111111111111111", "6217000000000006"])
def test_identifiers_are_never_refused_for_being_long_digit_strings(make_journal, ref):
    j = make_journal()
    a = j.append(client_ref=ref, **SALE)
    many = j.append_many({"terminal": [1], "kind": "sale", "amount": [1], "currency": 156,
                          "client_ref": [ref]})
    assert j.get(a).client_ref == j.get(many[0]).client_ref == ref.encode()
    assert j.find(ref)["txn_id"] == a
    txn = j.begin_payment(terminal=2, amount=5, client_ref=ref[::-1][:16])
    assert j.find(ref[::-1][:16])["txn_id"] == txn


def test_receipt_text_with_a_card_number_is_refused_but_references_are_kept():
    with pytest.raises(InvalidReceipt, match="footer line 'Card 4111 1111 1111 1111' holds a card "
                                             "number.*pan_last4"):
        Receipt(merchant="Shop", footer=["Card 4111 1111 1111 1111"])
    with pytest.raises(InvalidReceipt, match="item name .* holds a card number"):
        ReceiptItem("gift card 4111111111111111", unit_price=100)
    with pytest.raises(InvalidReceipt, match="payment label 'Visa 4111111111111111' holds"):
        Payment("card", 100, label="Visa 4111111111111111")
    with pytest.raises(InvalidReceipt, match="header line"):
        Receipt(merchant="Shop", header=["5500-0000-0000-0004"])
    r = Receipt(merchant="Shop", merchant_id="6217000000000000004",
                footer=["订单号 20150806125346"], items=[ReceiptItem("Tea", unit_price=100)],
                payments=[Payment("card", 100, pan_last4="1111", rrn="632400000001")])
    assert Receipt.from_payload(r.to_payload()) == r
    assert r.merchant_id == "6217000000000000004"
