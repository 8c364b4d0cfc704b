"""The payment maps (client_ref, order_ref, host_ref, receipt code, and which records name a
payment) saved with the index: a reopened journal maps them from its index file instead of
reading every record, answers exactly as maps built from the records do, and never trusts
maps that are damaged, edited or disagree with the records: they are rebuilt from the
records and the rebuild is reported."""
import shutil
import struct

import numpy as np
import pytest

from posfast import Journal, _core
from posfast.index import Index
from posfast.payments import MAPS_BLOB, Payments, _Catchup, _hash_one


def fill(j, n=480):
    """Payments of every shape: client and order refs, host refs, receipts, outcomes, prints,
    refunds, some left in doubt; and plain records with no reference between them."""
    txns = []
    for i in range(n):
        t = j.begin_payment(terminal=1 + i % 3, amount=1000 + i, client_ref="K-%d" % i,
                            order_ref="WX-%d" % i if i % 2 else None,
                            channel="wechat" if i % 2 else None,
                            payload=b"receipt %d" % i if i % 3 == 0 else b"")
        txns.append(t)
        if i % 5:
            j.finish_payment(t, "approved", host_ref="H%d" % i)
        if i % 7 == 1:
            j.append(kind="print", terminal=1 + i % 3, ref_seq=t, txn_id=t, state="ok")
        if i % 10 == 1:
            refund = j.begin_payment(terminal=1 + (i + 1) % 3, kind="refund", amount=10, ref_seq=t)
            j.finish_payment(refund, "approved")
        if i % 4 == 0:
            j.append(kind="note", terminal=1 + i % 3)
    return txns


def answers(j, txns, n):
    """Everything the maps answer, for every key written (and a few never written)."""
    out = []
    for i in range(n):
        out.append(j.find("K-%d" % i)["txn_id"])
        out.append((j.find(order_ref="WX-%d" % i) or {}).get("txn_id"))
        out.append((j.find(host_ref="H%d" % i) or {}).get("state"))
        rec = j.get(txns[i])
        out.append(j.receipt_payments(rec.terminal, rec.receipt_no))
        out.append(j.txn_records(txns[i])["seq"].tolist())
    out.append([j.find("never"), j.find(order_ref="never"), j.find(host_ref="never")])
    out.append(sorted(r.seq for r in j.in_doubt()))
    return out


def from_records(j):
    """The same answers from maps built afresh from the records."""
    j._payments = Payments(j._storage)
    j._payments._saved_tried = True             # (do not look at the index file)
    return j._payments


@pytest.fixture
def journal(tmp_path):
    path = str(tmp_path / "till.pfj")
    j = Journal.create(path, capacity=8192, durability="none")
    txns = fill(j)
    j.close()
    return path, txns


def test_a_reopened_journal_maps_them_and_reads_no_record(journal, monkeypatch):
    path, txns = journal
    absorbed = []
    original = _Catchup._absorb

    def counting(self, store, rows):
        absorbed.append(len(rows))
        return original(self, store, rows)

    monkeypatch.setattr(_Catchup, "_absorb", counting)
    with Journal.open(path) as j:
        got = answers(j, txns, 480)
        assert j._payments._catchup.from_file and absorbed == [] and j.index_problems == []
        # in memory: nothing of the maps (their arrays are pages of the index file)
        catchup = j._payments._catchup
        assert sum(p.nbytes() for p in catchup._sections()) == 0
        assert sum(len(p.saved_packed) + len(p.saved_keys) for p in catchup._sections()) > 240
        from_records(j)
        assert answers(j, txns, 480) == got
        assert sum(absorbed) == j.head_seq           # (that one read every record)


def test_after_a_crash_only_the_records_since_the_flush_are_read(journal, tmp_path, monkeypatch):
    path, txns = journal
    crashed = str(tmp_path / "crashed.pfj")
    with Journal.open(path) as j:
        j.flush()                                   # the maps go with the index
        flushed = j.head_seq
        more = fill(j, 12)                          # (K-0.. again: idempotent, no new payment)
        t = j.begin_payment(terminal=2, amount=5, client_ref="AFTER", order_ref="WX-AFTER")
        j.finish_payment(t, "declined", host_ref="H-AFTER")
        j.append(kind="print", terminal=2, ref_seq=t, txn_id=t, state="ok")
        shutil.copyfile(path, crashed)              # as a SIGKILL leaves it: no close
        shutil.copyfile(path + ".idx", crashed + ".idx")
        assert more == txns[:12]
        want = answers(j, txns, 480) + [j.find("AFTER")["state"], j.txn_records(t)["seq"].tolist()]
    read = []
    original = _Catchup._absorb
    monkeypatch.setattr(_Catchup, "_absorb", lambda self, store, rows: (
        read.extend(rows["seq"].tolist()), original(self, store, rows)))
    with Journal.open(crashed) as j:
        got = answers(j, txns, 480) + [j.find("AFTER")["state"], j.txn_records(t)["seq"].tolist()]
        assert got == want and got[-1] == [t, t + 1, t + 2]
        assert read == list(range(flushed + 1, j.head_seq + 1))
        assert j._payments._catchup.from_file and j.index_problems == []


def test_timed_checkpoints_leave_the_maps_out(journal, monkeypatch):
    """The checkpoints every 300 s do not rewrite 8 bytes a payment; after a crash past one,
    the maps are built from the records (no problem to report: they were not there)."""
    path, txns = journal
    with Journal.open(path) as j:
        j.append(kind="note", terminal=1)
        j._save_index(maps=False)                   # what _maybe_checkpoint does
        index = Index.load(path + ".idx", j.journal_id.bytes)[0]
        assert index.blob_offset(MAPS_BLOB) < 0
        crashed = path + ".crashed"
        shutil.copyfile(path, crashed)
        shutil.copyfile(path + ".idx", crashed + ".idx")
    with Journal.open(crashed) as j:
        assert j.find("K-3")["txn_id"] == txns[3]
        assert not j._payments._catchup.from_file and j.index_problems == []
    with Journal.open(path) as j:                   # closed cleanly: saved with them again
        assert j.find("K-3")["txn_id"] == txns[3] and j._payments._catchup.from_file


def test_an_edited_index_does_not_bring_its_maps(journal):
    """An index saved by anyone but the journal's writer (its digest is not the one the
    journal's header names) is cross-checked, and its maps are not used: an attacker who drops
    a client_ref from them does not get a second sale for the same key."""
    path, txns = journal
    with Journal.open(path, readonly=True) as j:
        jid = j.journal_id.bytes
    index, head, oldest, link, positions = Index.load(path + ".idx", jid)[:5]
    catchup = _Catchup()
    catchup.load_saved(index.blob_view(MAPS_BLOB), head, _core.crc32c)
    packed = np.array(catchup.by_client_ref.pairs.saved_packed)
    victim = _hash_one(b"K-5") >> 32
    kept = packed[(packed >> np.uint64(32)) != np.uint64(victim)]
    assert len(kept) == len(packed) - 1
    catchup.by_client_ref.pairs.saved_packed = kept
    index.set_blob(MAPS_BLOB, catchup.saved_pieces(_core.crc32c))
    index.save(path + ".idx", jid, head, oldest, link, np.array(positions))
    with Journal.open(path) as j:
        assert j.begin_payment(terminal=2, amount=1005, client_ref="K-5") == txns[5]
        assert not j._payments._catchup.from_file and j.head_seq == head


@pytest.mark.parametrize("where", ["heads", "client_ref map"])
def test_a_damaged_maps_blob_is_rebuilt_and_reported(journal, where):
    """A flipped bit in the maps' heads is found at the first lookup; one in a map's arrays
    when that map is first used (each map is checked then, not the whole blob at open)."""
    path, txns = journal
    with Journal.open(path, readonly=True) as j:
        index = Index.load(path + ".idx", j.journal_id.bytes)[0]
        upto, sections, pending = read_blob(bytes(index.blob_view(MAPS_BLOB)))
    heads_end = 24 + 6 * 32 + 8 * len(pending)
    at = index.blob_offset(MAPS_BLOB) + (200 if where == "heads" else heads_end + 16)
    with open(path + ".idx", "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x40]))
    with Journal.open(path) as j:
        assert j.find("K-77")["txn_id"] == txns[77]
        assert j.begin_payment(terminal=3, amount=1, client_ref="K-78") == txns[78]
        assert not j._payments._catchup.from_file
        problems = j.status()["index_problems"]
        assert len(problems) == 1 and "payment maps" in problems[0] and "checksum" in problems[0]
        assert ("client_ref map" in problems[0]) == (where == "client_ref map")


def read_blob(data):
    """The paymaps blob decoded as FORMAT.md §2 describes it (an independent reader)."""
    version, count, crc, upto, n_pending = struct.unpack_from("<BB2xIQQ", data, 0)
    heads = [struct.unpack_from("<QQQB3xI", data, 24 + 32 * k) for k in range(count)]
    end = 24 + 32 * count
    assert crc == _core.crc32c(data[:4] + bytes(4) + data[8:end + 8 * n_pending])
    pending = list(struct.unpack_from("<%dQ" % n_pending, data, end))
    offset = end + 8 * n_pending
    sections = []
    for base, n_packed, n_wide, width, body_crc in heads:
        size = 8 * n_packed + n_wide * width + (-(n_wide * width) % 8) + 8 * n_wide
        assert _core.crc32c(data[offset:offset + size]) == body_crc
        packed = struct.unpack_from("<%dQ" % n_packed, data, offset)
        keys = struct.unpack_from("<%d%s" % (n_wide, "I" if width == 4 else "Q"), data,
                                  offset + 8 * n_packed)
        seqs = struct.unpack_from("<%dQ" % n_wide, data, offset + size - 8 * n_wide)
        pairs = [(p >> 32, base + (p & 0xFFFFFFFF)) for p in packed] + list(zip(keys, seqs))
        sections.append(sorted(pairs))
        offset += size
    assert offset == len(data) and version == 1 and count == 6
    return upto, sections, pending


def write_blob(upto, sections, pending, version=1):
    """A paymaps blob of these (key, seq) pairs per section, all wide, as FORMAT.md says."""
    widths = (4, 4, 4, 4, 4, 8)
    heads, bodies = [], []
    for pairs, width in zip(sections, widths):
        keys = [k for k, _ in pairs]
        body = struct.pack("<%d%s" % (len(keys), "I" if width == 4 else "Q"), *keys)
        body += bytes(-len(body) % 8) + struct.pack("<%dQ" % len(pairs), *[q for _, q in pairs])
        heads.append(struct.pack("<QQQB3xI", 0, 0, len(pairs), width, _core.crc32c(body)))
        bodies.append(body)
    tail = b"".join(heads) + struct.pack("<%dQ" % len(pending), *pending)
    crc = _core.crc32c(struct.pack("<BB2xIQQ", version, 6, 0, upto, len(pending)) + tail)
    return struct.pack("<BB2xIQQ", version, 6, crc, upto, len(pending)) + tail + b"".join(bodies)


def test_the_saved_blob_is_what_format_md_describes(journal):
    path, txns = journal
    with Journal.open(path, readonly=True) as j:
        index = Index.load(path + ".idx", j.journal_id.bytes)[0]
        upto, sections, pending = read_blob(bytes(index.blob_view(MAPS_BLOB)))
        assert upto == j.head_seq and index.blob_offset(MAPS_BLOB) % 8 == 0
        client = dict((key, seq) for key, seq in sections[0])
        assert all(client[_hash_one(b"K-%d" % i) >> 32] == txns[i] for i in range(480))
        rows = j.query()
        assert len(sections[0]) == int(np.count_nonzero((rows["client_ref"] != b"")
                                                        & (rows["txn_id"] == rows["seq"])))
        mix = 0x9E3779B97F4A7C15                 # FORMAT.md: the code's hash
        assert sorted(sections[3]) == sorted(
            ((((j.get(t).terminal << 32 | j.get(t).receipt_no) * mix) % 2**64 >> 32, t)
             for i, t in enumerate(txns) if i % 3 == 0))
        referrers = sorted(sections[4] + sections[5])
        want = sorted({(int(r["txn_id"]), int(r["seq"])) for r in rows
                       if r["txn_id"] and r["txn_id"] != r["seq"]} |
                      {(int(r["ref_seq"]), int(r["seq"])) for r in rows if r["ref_seq"]})
        assert referrers == want
        assert pending == sorted(r.seq for r in j.in_doubt())


@pytest.mark.parametrize("forgery", ["version", "unsorted", "past the head", "checksum",
                                     "cut short"])
def test_maps_the_writer_saved_wrong_are_rebuilt_and_reported(journal, monkeypatch, forgery):
    """Maps under the right digest but not what they must be (another version, unsorted,
    naming seqs past the records they cover, a map's arrays failing their CRC, cut short)
    are not taken: the lookups answer from the records, and the index problem is reported."""
    path, txns = journal

    def forged(self):
        upto = self._store.head_seq
        sections = [[(_hash_one(b"K-5") >> 32, txns[5]), (_hash_one(b"K-6") >> 32, txns[6])],
                    [], [], [], [], []]
        if forgery == "unsorted":
            sections[0].reverse()
        elif forgery == "past the head":
            sections[0][1] = (sections[0][1][0], upto + 5)
        blob = bytearray(write_blob(upto, sections, [], version=9 if forgery == "version" else 1))
        if forgery == "checksum":
            blob[-1] ^= 1
        elif forgery == "cut short":
            blob = blob[:-8]
        return [bytes(blob)]

    with Journal.open(path) as j:
        monkeypatch.setattr(Payments, "saved_maps", forged)
        j.append(kind="note", terminal=1)           # (something to save)
    monkeypatch.undo()
    with Journal.open(path) as j:
        assert j.begin_payment(terminal=2, amount=1005, client_ref="K-5") == txns[5]
        assert j.find("K-200")["txn_id"] == txns[200]
        assert j.find(order_ref="WX-201")["txn_id"] == txns[201]
        assert not j._payments._catchup.from_file
        problems = j.status()["index_problems"]
        assert len(problems) == 1 and "payment maps" in problems[0], (forgery, problems)
        assert {"version": "version 9", "unsorted": "not sorted", "past the head": "past",
                "checksum": "checksum", "cut short": "cut short"}[forgery] in problems[0]


@pytest.mark.parametrize("which", ["client_ref", "receipt_code", "referrer"])
def test_a_map_naming_a_record_that_does_not_fit_is_rebuilt_and_reported(journal, which):
    """A map taken from the file that names a record not carrying its key (as a forged blob
    with a matching CRC would) is dropped at that lookup, reported, and rebuilt: the answer
    is the records' own."""
    path, txns = journal
    with Journal.open(path) as j:
        catchup = j._payments._derived()
        assert catchup.from_file
        note = int(j.query(kind="note")["seq"][0])          # carries no key at all
        if which == "client_ref":
            catchup.by_client_ref.recent[b"K-9"] = note
            assert j.find("K-9")["txn_id"] == txns[9]
        elif which == "receipt_code":
            rec = j.get(txns[9])
            catchup.by_receipt_code.recent[(rec.terminal << 32) | rec.receipt_no] = [note]
            assert j.receipt_payments(rec.terminal, rec.receipt_no) == [txns[9]]
        else:
            catchup.by_referrer.recent[txns[9]] = [note]
            assert j.txn_records(txns[9])["seq"].tolist() == \
                [s for s in range(txns[9], j.head_seq + 1)
                 if j.get(s).txn_id == txns[9] or j.get(s).ref_seq == txns[9]]
        assert not j._payments._catchup.from_file
        problems = j.status()["index_problems"]
        assert len(problems) == 1 and "disagree with the records" in problems[0], problems


def test_maps_fed_at_append_equal_a_fresh_read(tmp_path):
    """The referrer map fed one append at a time holds what reading the records gives."""
    j = Journal.create(str(tmp_path / "fed.pfj"), capacity=8192, durability="none")
    j.find("warm-up")                               # the maps exist from here on
    txns = fill(j, 120)
    fed = j._payments._catchup
    fresh = _Catchup()
    fresh.catch_up(j._storage)
    for seq in range(1, j.head_seq + 1):
        assert fed.by_referrer.find(seq) == fresh.by_referrer.find(seq), seq
    assert fed.by_referrer.find(txns[1]) == [s for s in range(txns[1] + 1, j.head_seq + 1)
                                            if j.get(s).txn_id == txns[1] or j.get(s).ref_seq == txns[1]]
    j.close()


def test_a_small_journal_keeps_its_index_as_it_was(tmp_path):
    """Below SAVE_MAPS_FROM live records the maps are not saved (building them reads little):
    the index, and the digest the journal's header names, stay as before (golden files)."""
    path = str(tmp_path / "small.pfj")
    j = Journal.create(path, capacity=4096, durability="none")
    txns = fill(j, 20)
    j.close()
    with Journal.open(path) as j:
        assert j.find("K-3")["txn_id"] == txns[3] and not j._payments._catchup.from_file
        jid = j.journal_id.bytes
    assert Index.load(path + ".idx", jid)[0].blob_offset(MAPS_BLOB) < 0


def test_a_format_1_journal_builds_them_from_the_records(tmp_path):
    path = str(tmp_path / "v1.pfj")
    j = Journal.create(path, capacity=4096, format_version=1, durability="none")
    for i in range(1200):                          # (format 1: no order or host refs)
        j.finish_payment(j.begin_payment(terminal=1, amount=5, client_ref="V1-%d" % i), "approved")
    t = j.begin_payment(terminal=1, amount=5, client_ref="OLD")
    j.close()
    with Journal.open(path) as j:
        assert j.find("OLD")["txn_id"] == t and not j._payments._catchup.from_file
        jid = j.journal_id.bytes
    assert Index.load(path + ".idx", jid)[0].blob_offset(MAPS_BLOB) < 0


def test_a_save_after_a_bulk_import_reads_no_record_for_the_maps(tmp_path, monkeypatch):
    """A flush or close right after a bulk import does not read every record to build maps
    nothing has used (that made append_many + flush of 1M records three times slower): the
    maps are left out, built at the first lookup, and saved by the next close."""
    import posfast.payments
    monkeypatch.setattr(posfast.payments, "SAVE_CATCHUP_MAX", 3000)
    absorbed = []
    original = _Catchup._absorb
    monkeypatch.setattr(_Catchup, "_absorb", lambda self, store, rows: (
        absorbed.append(len(rows)), original(self, store, rows)))
    path = str(tmp_path / "import.pfj")
    n = 5000
    with Journal.create(path, capacity=8192, slot_size=192, durability="none") as j:
        j.append_many({"terminal": np.arange(n) % 4 + 1, "kind": "sale", "amount": 100,
                       "client_ref": np.char.add(b"B-", np.arange(n).astype("S6"))})
        j.flush()
        assert absorbed == []                            # no record read for the maps
    assert Index.load(path + ".idx", j.journal_id.bytes)[0].blob_offset(MAPS_BLOB) < 0
    with Journal.open(path) as j:
        assert j.find(b"B-4321")["seq"] == 4322          # built now, from the records
        assert sum(absorbed) == n
    absorbed.clear()
    assert Index.load(path + ".idx", j.journal_id.bytes)[0].blob_offset(MAPS_BLOB) >= 0
    with Journal.open(path) as j:
        assert j.find(b"B-17")["seq"] == 18 and absorbed == []   # mapped from the index file
        assert j.index_problems == []
