"""Payment lifecycle: pending before the host, in-doubt after a crash, last transaction."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import posfast
from posfast.errors import InvalidRecord, PaymentError
from _child_env import CHILD_CWD, child_env


@pytest.fixture
def journal(tmp_path):
    j = posfast.Journal.create(tmp_path / "till.pfj", capacity=4096)
    yield j
    j.close()


def test_begin_writes_pending_then_finish_approves(journal):
    txn = journal.begin_payment(terminal=3, amount=1250, currency=156, method="card",
                                client_ref="T3-1")
    assert journal.get(txn).state == posfast.State.PENDING
    assert journal.get(txn).txn_id == txn
    assert [r.seq for r in journal.in_doubt()] == [txn]
    done = journal.finish_payment(txn, "approved", auth_code="A1B2C3", rrn="123456789012",
                                  pan_last4="4242")
    assert done == txn + 1
    info = journal.last_transaction(3)
    assert (info["txn_id"], info["state"], info["amount"], info["auth_code"], info["pan_last4"]) == \
        (txn, "approved", 1250, "A1B2C3", "4242")
    assert info["in_doubt"] is False and info["receipt_printed"] is False
    assert journal.in_doubt() == []


def test_client_ref_is_idempotent_and_findable(journal):
    first = journal.begin_payment(terminal=1, amount=500, client_ref="POS-77")
    again = journal.begin_payment(terminal=1, amount=500, client_ref="POS-77")
    assert again == first
    assert journal.head_seq == first            # no second sale written
    assert journal.find("POS-77")["txn_id"] == first
    assert journal.find("POS-77")["state"] == "pending"
    journal.finish_payment(first, "declined")
    assert journal.find("POS-77")["state"] == "declined"
    assert journal.find("nope") is None


def test_find_survives_reopen_with_many_refs(tmp_path):
    path = tmp_path / "t.pfj"
    with posfast.Journal.create(path, capacity=8192) as j:
        txns = [j.begin_payment(terminal=i % 4, amount=100 + i, client_ref="R%05d" % i)
                for i in range(300)]
    with posfast.Journal.open(path) as j:
        for i in (0, 150, 299):
            assert j.find("R%05d" % i)["txn_id"] == txns[i]
            assert j.find("R%05d" % i)["amount"] == 100 + i


def test_refund_void_reversal_rules(journal):
    sale = journal.begin_payment(terminal=2, amount=1000)
    journal.finish_payment(sale, "approved")
    refund = journal.begin_payment(terminal=2, kind="refund", amount=600, ref_seq=sale)
    journal.finish_payment(refund, "approved")
    with pytest.raises(PaymentError, match="exceed"):
        journal.begin_payment(terminal=2, kind="refund", amount=500, ref_seq=sale)
    ok = journal.begin_payment(terminal=2, kind="refund", amount=400, ref_seq=sale)
    journal.finish_payment(ok, "approved")
    void = journal.begin_payment(terminal=2, kind="void", amount=1000, ref_seq=sale)
    journal.finish_payment(void, "approved")
    with pytest.raises(PaymentError, match="already voided"):
        journal.begin_payment(terminal=2, kind="void", amount=1000, ref_seq=sale)
    with pytest.raises(PaymentError, match="not in journal"):
        journal.begin_payment(terminal=2, kind="refund", amount=1, ref_seq=9999)
    declined = journal.begin_payment(terminal=2, amount=300)
    journal.finish_payment(declined, "declined")
    with pytest.raises(PaymentError, match="declined, not approved"):
        journal.begin_payment(terminal=2, kind="refund", amount=100, ref_seq=declined)
    with pytest.raises(PaymentError, match="needs ref_seq"):
        journal.begin_payment(terminal=2, kind="refund", amount=100)


def test_finish_rules(journal):
    txn = journal.begin_payment(terminal=1, amount=100)
    with pytest.raises(InvalidRecord):
        journal.finish_payment(txn, "pending")
    seq = journal.finish_payment(txn, "approved")
    assert journal.finish_payment(txn, "approved") == seq      # same answer: idempotent
    with pytest.raises(PaymentError, match="already approved"):
        journal.finish_payment(txn, "declined")
    with pytest.raises(PaymentError, match="not in doubt"):
        journal.resolve(txn, "reversed")
    with pytest.raises(InvalidRecord, match="minor units"):
        journal.begin_payment(terminal=1, amount=12.5)


def test_last_transaction_is_the_newest_payment_not_the_newest_record(journal):
    a = journal.begin_payment(terminal=5, amount=100)
    b = journal.begin_payment(terminal=5, amount=200)
    journal.finish_payment(a, "approved")                 # newest record belongs to a
    info = journal.last_transaction(5)
    assert (info["txn_id"], info["state"], info["amount"]) == (b, "pending", 200)
    journal.append(terminal=5, kind="print", state="ok", txn_id=b, ref_seq=b)
    assert journal.last_transaction(5)["receipt_printed"] is True
    assert journal.last_transaction(6) is None


CHILD = textwrap.dedent("""
    import os, signal, sys
    import posfast
    j = posfast.Journal.open(sys.argv[1])
    txn = j.begin_payment(terminal=2, amount=8800, currency=156, client_ref="CRASH-1")
    print(txn, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL does not exist on Windows")
def test_crash_between_begin_and_finish_leaves_payment_in_doubt(tmp_path):
    path = tmp_path / "till.pfj"
    with posfast.Journal.create(path, capacity=1024) as j:
        earlier = j.begin_payment(terminal=2, amount=100)
        j.finish_payment(earlier, "approved")
    child = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True,
                           env=child_env(), cwd=CHILD_CWD)
    assert child.returncode == -signal.SIGKILL
    txn = int(child.stdout)
    with posfast.Journal.open(path) as j:
        assert [r.seq for r in j.in_doubt()] == [txn]
        assert [r.seq for r in j.in_doubt(terminal=3)] == []
        info = j.last_transaction(2)
        assert (info["txn_id"], info["state"], info["in_doubt"], info["amount"]) == \
            (txn, "pending", True, 8800)
        assert j.find("CRASH-1")["txn_id"] == txn
        j.resolve(txn, "reversed")
        assert j.in_doubt() == []
        assert j.last_transaction(2)["state"] == "reversed"


def test_last_transaction_warns_when_a_newer_record_is_damaged(tmp_path):
    from posfast import _core
    path = tmp_path / "till.pfj"
    with posfast.Journal.create(path, capacity=64) as j:
        first = j.begin_payment(terminal=3, amount=100)
        j.finish_payment(first, "approved")
        newer = j.begin_payment(terminal=3, amount=999)
        j.append(terminal=4, kind="note")                 # the newest record stays intact
        slot = j._ring.slot_of(newer)
    os.remove(str(path) + ".idx")                          # reopen must scan, as after a crash
    with open(path, "r+b") as f:                           # flip a byte of the newer payment
        f.seek(_core.DATA_OFFSET + slot * 128 + 60)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    with posfast.Journal.open(path) as j:
        info = j.last_transaction(3)
        assert info["txn_id"] == first                     # all the intact records can say
        assert info["damaged_newer"] == [newer]            # ... and that it may not be the last


def test_find_after_single_begins_then_a_bulk_batch(journal):
    singles = [journal.begin_payment(terminal=1, amount=5, client_ref="S%03d" % i) for i in range(10)]
    assert journal.find("S000")["txn_id"] == singles[0]           # lookups built, singles kept aside
    bulk = journal.append_many({"terminal": [2] * 100, "kind": "sale", "state": "pending",
                                "amount": list(range(100)),
                                "client_ref": ["B%03d" % i for i in range(100)]})
    assert journal.find("S003")["txn_id"] == singles[3]           # survived the merge with the bulk
    assert journal.find("B050")["txn_id"] == bulk[50]
    assert journal.find("B050")["amount"] == 50
