"""Footprint on a terminal: what a terminal's session (record, look up, reprint) loads into
its process, and how much memory the payment lookups keep per payment.  The numbers
themselves (RSS, bytes read and written per operation) are measured by bench/footprint.py."""
import json
import subprocess
import sys

import numpy as np

import posfast
from posfast import payments

from _child_env import CHILD_CWD, child_env  # noqa: E402

SESSION = r"""
import json, sys
import posfast
from posfast.printing import reprint
from posfast.receipt import Payment, Receipt, ReceiptItem
path = sys.argv[1]
j = posfast.Journal.create(path, capacity=4096, max_payload=1024, durability="none")
for k in range(600):            # (1,200 records: past SAVE_MAPS_FROM, the maps are saved)
    r = Receipt(merchant="Shop", receipt_no=k + 1, terminal=3, currency=156,
                items=[ReceiptItem("Tea", unit_price=600)], total=600,
                payments=[Payment("card", 600, pan_last4="1234")])
    txn = j.begin_payment(terminal=3, amount=600, currency=156, method="card",
                          client_ref="K-%d" % k, receipt_no=k + 1, payload=r.to_payload())
    j.finish_payment(txn, "approved", auth_code="123456", rrn="000000000042")
j.close()
j = posfast.Journal.open(path)
from posfast import payments
absorbed = []
_absorb = payments._Catchup._absorb
payments._Catchup._absorb = lambda self, store, rows: (absorbed.append(len(rows)),
                                                       _absorb(self, store, rows))
last = j.last_transaction(3)
found = j.find("K-7")
rec = j.get(found["txn_id"])
assert rec.receipt_no == 8
preview = reprint(j, seq=rec.seq, printer=None, now=1_795_000_000_000_000)
maps = j._payments._catchup
print(json.dumps({"modules": sorted(sys.modules), "last_state": str(last["state"]),
                  "copy": "COPY" in preview.text, "records_read_for_maps": sum(absorbed),
                  "maps_from_file": maps.from_file,
                  "maps_bytes_in_memory": sum(p.nbytes() for p in maps._sections())}))
j.close()
"""


def test_a_terminal_session_loads_no_numpy_random_and_no_libcrypto(tmp_path):
    """Record payments, restart, last_transaction, find, reprint: the process never loads
    numpy.random (3 MB resident) or hashlib/libcrypto (3 MB): posfast's own SHA-256 and
    fixed hash weights serve instead."""
    out = subprocess.run([sys.executable, "-c", SESSION, str(tmp_path / "till.pfj")],
                         capture_output=True, text=True, env=child_env(), cwd=CHILD_CWD, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["copy"] and "approved" in report["last_state"].lower()
    loaded = set(report["modules"])
    assert "numpy.random" not in loaded
    assert "hashlib" not in loaded and "_hashlib" not in loaded


def test_after_a_restart_lookups_map_the_saved_maps_and_a_preview_loads_no_printer_db(tmp_path):
    """The same session: after the restart, find / reprint take the payment maps the index
    file holds (mapped: no byte of them in the process's own memory, no record read to build
    them, where a 1M-record journal read its whole ring and kept 8 MB); the reprint preview
    does not load python-escpos's printer database (about 5 MB resident)."""
    out = subprocess.run([sys.executable, "-c", SESSION, str(tmp_path / "till.pfj")],
                         capture_output=True, text=True, env=child_env(), cwd=CHILD_CWD, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["copy"]
    assert report["maps_from_file"] and report["records_read_for_maps"] == 0
    assert report["maps_bytes_in_memory"] == 0
    assert not [m for m in report["modules"] if m == "escpos" or m.startswith("escpos.")]


def test_hash_weights_are_the_ones_the_maps_were_built_with():
    """The client_ref/order_ref hash weights are written out in payments.py; they are the
    values numpy's generator gave when they were chosen (a change would not lose data, the
    maps are rebuilt at each open, but it would change nothing for the better either)."""
    want = np.random.default_rng(20261201).integers(1, 2**63, size=64, dtype=np.uint64) | np.uint64(1)
    assert payments._HASH_WEIGHTS.dtype == np.uint64
    assert np.array_equal(payments._HASH_WEIGHTS, want)


def test_reference_map_keeps_8_bytes_a_payment_and_finds_every_key():
    refs = payments._RefMap()
    n = 100_000
    keys = [b"T%d-%07d" % (k % 8, k) for k in range(n)]
    for start in range(0, n, 10_000):
        refs.add(keys[start:start + 10_000], list(range(start + 1, start + 10_001)))
    for k in (0, 1, 4095, 4096, 54_321, n - 1):
        assert k + 1 in refs.find(keys[k])
    assert refs.find(b"never-written") == [] or all(s >= 1 for s in refs.find(b"never-written"))
    pairs = refs.pairs
    assert pairs.nbytes() == 8 * n


def test_code_map_seqs_beyond_32_bits_keep_their_values():
    codes = payments._CodeMap()
    big = 2**40
    rows = np.zeros(100, dtype=posfast.RECORD_DTYPE)
    rows["seq"] = np.arange(100, dtype=np.uint64) * np.uint64(2**33) + np.uint64(big)
    rows["txn_id"] = rows["seq"]
    rows["payload_len"] = 10
    rows["receipt_no"] = np.arange(1, 101)
    rows["terminal"] = 2
    rows["kind"] = int(posfast.Kind.SALE)
    codes.add_rows(rows)
    assert codes.find(payments.receipt_code_key(2, 57)) == [int(rows["seq"][56])]


def test_reference_map_leaves_the_packed_layout_for_far_seqs():
    """Seqs more than 2^32 apart (a journal past 4 billion records) still come back exact."""
    refs = payments._RefMap()
    keys = [b"K%d" % k for k in range(200)]
    refs.add(keys[:100], list(range(10, 110)))
    assert refs.find(b"K5") == [15]
    far = 2**33 + 7
    refs.add(keys[100:], list(range(far, far + 100)))
    assert refs.find(b"K5") == [15] and refs.find(b"K150") == [far + 50]
    assert refs.pairs.packed is None
    earlier = payments._RefMap()
    earlier.add(keys[:100], list(range(1000, 1100)))
    earlier.add(keys[100:], list(range(1, 101)))        # below the first base
    assert earlier.find(b"K0") == [1000] and earlier.find(b"K199") == [100]
