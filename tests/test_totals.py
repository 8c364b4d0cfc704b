"""Day totals (``Journal.totals``, posfast.totals): kept as records are appended, they must
give what a brute force over ``Journal.payments(day=..., terminal=...)`` gives, and what
``close_day`` writes into the Z-report, through random workloads of begin / finish /
resolve / refund / void / reversal / bulk appends across days and terminals; after a
reopen (rebuilt from the records) and through a reader; through a ring that evicts old
days (retention "overwrite"); and through ``to_bytes`` / ``from_bytes``."""
import copy
import pickle
import random
import timeit

import numpy as np
import pytest

import posfast
from posfast import DayRule, Flag, Journal, Kind, State
from posfast.errors import PaymentError
from posfast.totals import CurrencyTotals, DayTotals, Sum, Totals

from conftest import totals_of_payments

RULE = DayRule(utc_offset="+08:00", starts_at="04:00")
D = posfast.records.day_number("2025-11-20")
MIN = 60_000_000
DAY_US = 86_400_000_000
TERMINALS = (1, 2, 3)
PAYMENT_KINDS = sorted(int(k) for k in posfast.records.PAYMENT_KINDS)


def at(day, minutes):
    return RULE.day_start_us(day) + int(minutes * MIN)


def brute(j, day, terminal=None):
    """{currency: CurrencyTotals} of ``j.payments(day, terminal)``, by plain Python."""
    return totals_of_payments(j.payments(day=day, terminal=terminal))


def z_tables(j, day, terminal=None):
    """The Z-report's txns and terminals tables from ``payments()``, by plain Python."""
    cube, terms = {}, {}
    names = posfast.dayclose.TXN_DTYPE.names + ("signed", "net")
    for r in j.payments(day=day, terminal=terminal).tolist():
        p = dict(zip(names, r))
        key = (p["kind"], p["state"], p["method"], p["currency"])
        c, a = cube.get(key, (0, 0))
        cube[key] = (c + 1, a + p["amount"])
        key = (p["terminal"], p["state"], p["currency"])
        c, a, s = terms.get(key, (0, 0, 0))
        terms[key] = (c + 1, a + p["amount"], s + p["signed"])
    return ([k + v for k, v in sorted(cube.items())], [k + v for k, v in sorted(terms.items())])


def remembered(j):
    """How many payments DayTotals must remember: the PENDING ones, and those with records on
    more than one business day (their first record live)."""
    rows = j.query(kind=PAYMENT_KINDS)
    rows = rows[(rows["flags"] & Flag.TRAINING) == 0]
    begins = {int(r["seq"]): int(r["day"]) for r in rows[rows["seq"] == rows["txn_id"]]}
    spread = {int(t) for t, d in zip(rows["txn_id"], rows["day"]) if int(t) in begins
              and int(d) != begins[int(t)]}
    pays = j.payments()
    pending = {int(t) for t in pays["txn_id"][pays["state"] == State.PENDING]}
    return len(spread | pending)


def assert_totals(j, days, terminals=TERMINALS):
    for day in days:
        for terminal in (None,) + tuple(terminals):
            got = j.totals(day, terminal)
            assert got == brute(j, day, terminal), (day, terminal)
            assert (got.txns, got.terminals) == z_tables(j, day, terminal), (day, terminal)
            assert (got.day, got.terminal) == (day, terminal)


class Till:
    """A random workload through the payment API and raw appends, over days and terminals."""

    def __init__(self, journal, seed, first_day=D):
        self.j = journal
        self.rng = random.Random(seed)
        self.clock = 0                      # minutes since the first business day began
        self.first_day = first_day
        self.open = []                      # txn ids in doubt
        self.approved = []                  # approved sales / completions / pre-auths
        self.final = []                     # finished payments (any state)
        self.days = set()

    def now(self):
        self.clock += self.rng.randrange(1, 25)
        day = self.first_day + self.clock // (24 * 60)
        self.days.add(day)
        return at(self.first_day, self.clock), day

    def step(self):
        rng, j = self.rng, self.j
        ts, _day = self.now()
        op = rng.random()
        terminal = rng.choice(TERMINALS)
        if op < 0.25:
            kind = rng.choice(["sale"] * 6 + ["preauth", "cash_in", "cash_out"])
            txn = j.begin_payment(terminal=terminal, kind=kind, amount=rng.randrange(1, 50_000),
                                  currency=rng.choice([156, 156, 978]),
                                  method=rng.choice(["card", "cash", "qr", "wallet"]), ts=ts,
                                  flags=Flag.TRAINING if rng.random() < 0.05 else 0)
            self.open.append(txn)
        elif op < 0.45 and self.open:
            txn = self.open.pop(rng.randrange(len(self.open)))
            state = rng.choice(["approved"] * 4 + ["declined", "failed", "reversed", "voided"])
            later = rng.random()
            if later < 0.1:
                ts += DAY_US                          # answered after the cut-off: next day
            elif later < 0.15:
                ts -= DAY_US                          # a clock set back: dated before its day
            if rng.random() < 0.2:
                j.resolve(txn, state, ts=ts)
            else:
                j.finish_payment(txn, state, ts=ts)
            self.final.append(txn)
            if state == "approved" and j.get(txn).kind in (Kind.SALE, Kind.PREAUTH,
                                                           Kind.COMPLETION):
                self.approved.append(txn)
        elif op < 0.55 and self.approved:
            original = j.get(rng.choice(self.approved))
            kind = rng.choice(["refund", "refund", "void", "reversal", "completion"])
            try:
                txn = j.begin_payment(terminal=original.terminal, kind=kind, ref_seq=original.seq,
                                      amount=rng.randrange(1, max(2, original.amount // 2)),
                                      currency=original.currency, method="card", ts=ts)
            except PaymentError:
                return
            self.open.append(txn)
        elif op < 0.75:
            n = rng.randrange(1, 60)
            j.append_many({
                "ts": [ts + i for i in range(n)],
                "terminal": [rng.choice(TERMINALS) for _ in range(n)],
                "kind": [rng.choice(PAYMENT_KINDS + [int(Kind.PRINT), int(Kind.NOTE)])
                         for _ in range(n)],
                "state": [rng.choice([1, 2, 2, 2, 3, 4, 5, 6]) for _ in range(n)],
                "method": [rng.randrange(0, 7) for _ in range(n)],
                "currency": [rng.choice([156, 978, 840]) for _ in range(n)],
                "amount": [rng.randrange(0, 100_000) for _ in range(n)],
                "flags": [rng.choice([0, 0, 0, 0, int(Flag.TRAINING), int(Flag.OFFLINE)])
                          for _ in range(n)]})
        elif op < 0.85:
            # begin and outcome records of several payments in one append_many (an import)
            first = j.head_seq + 1
            cols = {name: [] for name in ("ts", "terminal", "kind", "state", "txn_id", "amount")}
            for i in range(rng.randrange(1, 12)):
                txn = first + 2 * i
                kind, amount = rng.choice([1, 1, 2, 6]), rng.randrange(1, 9999)
                later = rng.choice([0, 0, 0, 1, DAY_US])
                for state, dt in ((1, 0), (rng.choice([1, 2, 2, 3]), later)):
                    for name, value in zip(cols, (ts + i * 10 + dt, terminal, kind, state, txn,
                                                  amount)):
                        cols[name].append(value)
            j.append_many(dict(cols, currency=156, method="card"))
        elif op < 0.93 and self.final:
            # a raw record changing a finished payment (the totals read it back to move it)
            txn = rng.choice(self.final)
            rec = j.get(txn)
            j.append(terminal=rec.terminal, kind=int(rec.kind), txn_id=txn, ts=ts,
                     state=rng.choice(["approved", "voided", "declined"]),
                     amount=rec.amount + rng.randrange(0, 3), currency=rec.currency or 156,
                     method=rng.choice(["card", "cash"]), flags=int(rec.flags))
        else:
            # records that are no payment's: a print naming a payment, a txn id not begun
            j.append(terminal=terminal, kind="print", state="ok", ts=ts,
                     txn_id=rng.choice(self.final or [1]))
            j.append(terminal=terminal, kind="sale", state="approved", amount=5, currency=156,
                     txn_id=2**40 + rng.randrange(99), ts=ts)

    def all_days(self):
        return sorted(self.days | {d - 1 for d in self.days} | {d + 1 for d in self.days})


@pytest.fixture
def journal(tmp_path):
    j = Journal.create(tmp_path / "till.pfj", capacity=1 << 16, day_rule=RULE, durability="none",
                       slot_size=512, max_payload=60_000)
    yield j
    j.close()


# ---------------------------------------------------------------- against the brute force
@pytest.mark.parametrize("seed", range(6))
def test_random_workload_matches_payments_and_the_z_report(journal, seed):
    till = Till(journal, seed)
    journal.totals(D)                       # built now: every later record is fed as appended
    for k in range(250):
        till.step()
        if k % 25 == 0:
            assert_totals(journal, till.all_days())
    assert_totals(journal, till.all_days())
    assert journal._totals.remembered == remembered(journal)
    # the Z-reports are built from the totals, and say what the records say
    for terminal in (2, None):
        for day in sorted(till.days):
            totals = journal.totals(day, terminal)
            close = journal.close_day(day, terminal=terminal, force=True)
            assert (close.txns, close.terminals) == (totals.txns, totals.terminals)
            assert (close.txns, close.terminals) == z_tables(journal, day, terminal)
            assert {c: n for c, (n, _a) in close.day_totals().items()} == \
                {c: t.net for c, t in totals.items() if t.by_state.get("approved")}
            pays = journal.payments(day=day, terminal=terminal)
            assert close.in_doubt == pays["txn_id"][pays["state"] == State.PENDING].tolist()
            assert close.records[2] == totals.records == int(pays["records"].sum())
            assert close.records[0] == (int(pays["first_seq"].min()) if len(pays) else 0)
    assert journal.verify().ok


def test_built_late_or_fed_as_appended_gives_the_same_totals(tmp_path):
    """Folding records as they are appended and folding them all at once (the first totals()
    call, a reopen) give identical totals, byte for byte."""
    a = Journal.create(tmp_path / "a.pfj", capacity=1 << 15, day_rule=RULE, durability="none")
    a.totals(D)
    till = Till(a, 11)
    for _ in range(400):
        till.step()
    fed = a._totals_book().to_bytes()
    a.close()
    with Journal.open(tmp_path / "a.pfj") as again:
        assert again.totals(D) is not None
        assert again._totals == DayTotals.from_bytes(fed)
        assert_totals(again, till.all_days())


def test_a_reader_follows_the_writer(tmp_path):
    path = tmp_path / "till.pfj"
    j = Journal.create(path, capacity=1 << 14, day_rule=RULE, durability="none")
    till = Till(j, 3)
    for _ in range(50):
        till.step()
    j.flush()
    with Journal.open(path, readonly=True) as reader:
        assert reader.totals(D) == brute(reader, D)
        for _ in range(100):
            till.step()
        j.flush()
        assert_totals(reader, till.all_days(), terminals=(2,))
    j.close()


def test_bulk_appends_of_final_state_sales(tmp_path):
    """A big append_many (past the parallel-index threshold) of single-record payments."""
    journal = Journal.create(tmp_path / "big.pfj", capacity=1 << 17, day_rule=RULE,
                             durability="none")
    journal.totals(D)
    n = 120_000
    rng = np.random.default_rng(5)
    cols = {"ts": np.sort(at(D, 0) + rng.integers(0, 3 * DAY_US, n)),
            "terminal": rng.choice([1, 2, 3, 4_000_000_000], n),
            "kind": rng.choice([1, 1, 1, 2, 3, 6, 7], n), "state": rng.choice([2, 2, 2, 3, 6], n),
            "method": rng.choice([1, 2, 3], n), "currency": rng.choice([156, 978], n),
            "amount": rng.integers(1, 10**9, n),
            "flags": rng.choice([0, 0, 0, int(Flag.TRAINING)], n).astype(np.uint8)}
    journal.append_many(cols)
    assert_totals(journal, [D, D + 1, D + 2, D + 3], terminals=(1, 4_000_000_000))
    assert journal._totals.remembered == 0
    journal.close()


def test_outcome_dated_after_the_scan_widens_the_z_report(journal):
    """An outcome dated a day ahead (another till's clock) counts, and the Z-report reads it."""
    txn = journal.begin_payment(terminal=1, amount=900, currency=156, ts=at(D, 5))
    ahead = posfast.records.now_us() + DAY_US // 2
    journal.finish_payment(txn, "approved", ts=ahead)
    assert journal.totals(D)[156].by_state == {"approved": Sum(1, 900, 900)}
    assert journal.totals(D) == brute(journal, D)
    close = journal.close_day(D)
    assert close.net(156) == 900 and close.scan[1] == RULE.day_number(ahead)
    assert journal.verify().ok


def test_training_and_non_payments_are_left_out(journal):
    journal.append(terminal=1, kind="sale", state="approved", amount=100, currency=156,
                   ts=at(D, 1), flags=Flag.TRAINING)
    journal.append(terminal=1, kind="print", state="ok", ts=at(D, 2))
    journal.append(terminal=1, kind="day_close", state="ok", amount=5, currency=156, ts=at(D, 3),
                   payload=b"{}")
    assert journal.totals(D) == {} and journal.totals(D).records == 0
    assert journal.totals(D + 40) == {} and journal.totals("2025-11-20", terminal=9) == {}


# ---------------------------------------------------------------- the result
def test_the_result_is_read_only_comparable_and_printable(journal):
    sale = journal.begin_payment(terminal=2, amount=1000, currency=156, method="card", ts=at(D, 9))
    journal.finish_payment(sale, "approved", ts=at(D, 9) + 1)
    journal.append(terminal=3, kind="void", state="approved", amount=300, currency=156,
                   method="cash", ref_seq=sale, ts=at(D, 10))
    journal.begin_payment(terminal=3, amount=50, currency=978, method="qr", ts=at(D, 11))
    t = journal.totals(D)
    assert isinstance(t, Totals) and t.date.isoformat() == "2025-11-20" and t.terminal is None
    assert list(t) == [156, 978] and t.net(156) == 700 and t.net(840) == 0
    assert t[156] == CurrencyTotals(
        count=2, amount=1300, net=700,
        by_state={"approved": Sum(2, 1300, 700)},
        by_kind={"sale": Sum(1, 1000, 1000), "void": Sum(1, 300, -300)},
        by_method={"cash": Sum(1, 300, -300), "card": Sum(1, 1000, 1000)},
        by_terminal={2: Sum(1, 1000, 1000), 3: Sum(1, 300, -300)})
    assert t[978].by_state["pending"] == (1, 50, 0)
    assert "Totals(day=2025-11-20, terminal=None, {156: CurrencyTotals(count=2" in repr(t)
    assert t.as_dict()[156]["by_kind"]["void"] == {"count": 1, "amount": 300, "net": -300}
    with pytest.raises(TypeError, match="read-only"):
        t[156] = None
    with pytest.raises(TypeError, match="read-only"):
        t[156].by_state["approved"] = Sum(0, 0, 0)
    mine = dict(t)
    mine.pop(978)
    assert list(t) == [156, 978]
    assert pickle.loads(pickle.dumps(t)) == t and copy.deepcopy(t) == t
    assert pickle.loads(pickle.dumps(t)).txns == t.txns
    # the same object until the day changes
    assert journal.totals(D) is t and journal.totals(D, terminal=3) is journal.totals(D, 3)
    journal.append(terminal=1, kind="sale", state="approved", amount=1, currency=156, ts=at(D, 12))
    assert journal.totals(D) is not t and journal.totals(D).net(156) == 701
    assert t.net(156) == 700                                # what was handed out stays as it was


def test_totals_is_a_dict_lookup(tmp_path):
    j = Journal.create(tmp_path / "till.pfj", capacity=1 << 17, day_rule=RULE, durability="none")
    n = 100_000
    rng = np.random.default_rng(1)
    j.append_many({"ts": np.sort(at(D, 0) + rng.integers(0, 5 * DAY_US, n)),
                   "terminal": rng.integers(1, 17, n), "kind": "sale", "state": "approved",
                   "method": rng.choice([1, 2, 3], n), "currency": 156,
                   "amount": rng.integers(100, 50_000, n)})
    j.totals(D)
    best = min(timeit.repeat(lambda: j.totals(D + 2), number=2000, repeat=5)) / 2000
    assert best < 50e-6          # ~1 µs; generous for slow CI machines
    j.close()


# ---------------------------------------------------------------- eviction
def test_eviction_keeps_live_days_whole_and_drops_gone_ones(tmp_path):
    """A small overwriting ring beside a big one fed the same payments (none across a cut-off):
    a day the small ring still holds part of keeps its whole totals; a day all of whose
    records went is dropped; a day whose records are all live gives what payments() gives;
    a reopen loads the totals saved with the index: every day as it was kept."""
    small = Journal.create(tmp_path / "s.pfj", capacity=300, day_rule=RULE, durability="none",
                           retention="overwrite")
    big = Journal.create(tmp_path / "b.pfj", capacity=1 << 16, day_rule=RULE, durability="none")
    small.totals(D)
    big.totals(D)
    rng = random.Random(7)
    clock, open_ = 0, []
    checked_partial = False
    for step in range(2500):
        day = D + clock // 1440
        ts = at(D, clock)
        clock += rng.randrange(1, 20)
        same_day = D + clock // 1440 == day
        op = rng.random()
        if op < 0.3 and same_day:
            amount, terminal = rng.randrange(1, 999), rng.choice(TERMINALS)
            txns = [j.begin_payment(terminal=terminal, amount=amount, currency=156, ts=ts)
                    for j in (small, big)]
            assert txns[0] == txns[1]
            open_.append((txns[0], day))
        elif op < 0.6 and open_:
            txn, begun = open_.pop(rng.randrange(len(open_)))
            if begun == day:
                state = rng.choice(["approved", "declined", "voided"])
                for j in (small, big):
                    j.finish_payment(txn, state, ts=ts)
        else:
            n = rng.randrange(1, 6)
            cols = {"ts": [ts] * n, "terminal": [rng.choice(TERMINALS) for _ in range(n)],
                    "kind": [rng.choice([1, 2, 3, 7]) for _ in range(n)],
                    "state": [rng.choice([2, 3]) for _ in range(n)],
                    "amount": [rng.randrange(1, 99) for _ in range(n)], "currency": 156}
            for j in (small, big):
                j.append_many(cols)
        open_ = [(t, b) for t, b in open_ if b == D + clock // 1440]
        if step % 100 == 99:
            held = small._totals.days()
            for d in range(D, D + clock // 1440 + 1):
                firsts = big.payments(day=d)["first_seq"]
                whole = all(int(s) >= small.oldest_seq for s in firsts)
                if d in held:
                    for terminal in (None, 2):
                        assert small.totals(d, terminal) == big.totals(d, terminal), d
                    if whole:
                        assert small.totals(d) == brute(small, d)
                    else:
                        checked_partial = True
                else:
                    # dropped: every record folded into the day is gone
                    assert small.totals(d) == {}
                    assert all(int(s) < small.oldest_seq for s in big.payments(day=d)["final_seq"])
            pending = sum(int((big.payments(day=d)["state"] == State.PENDING).sum()) for d in held)
            assert small._totals.remembered == pending
    assert checked_partial and len(small._totals.days()) <= 3
    # the Z-report of a day partly overwritten: the whole day, marked so verify leaves it be
    partial = min(small._totals.days())
    assert big.payments(day=partial)["first_seq"].min() < small.oldest_seq
    close = small.close_day(partial, force=True)
    assert (close.txns, close.terminals) == (big.totals(partial).txns, big.totals(partial).terminals)
    assert close.records[0] < small.oldest_seq
    assert small.verify().ok
    days = range(D - 1, D + clock // 1440 + 2)
    kept = {(d, t): small.totals(d, t) for d in days for t in (None,) + TERMINALS}
    small.close()
    with Journal.open(tmp_path / "s.pfj") as again:
        assert again._saved_totals() is not None
        for d in days:
            whole = all(int(s) >= again.oldest_seq for s in big.payments(day=d)["first_seq"])
            for terminal in (None,) + TERMINALS:
                assert again.totals(d, terminal) == kept[d, terminal], (d, terminal)
                if whole or d not in again._totals.days():
                    assert again.totals(d, terminal) == brute(again, d, terminal), (d, terminal)
    big.close()


def test_a_payment_answered_after_the_cut_off_moves_with_its_evicted_first_record(tmp_path):
    """Begun on day D-1, answered on day D: the fold counts it for D-1 while its first record
    is live, and for D (its outcome's own day) once the ring overwrote it; the totals do the
    same, so a Z-report of D is what the records give either way."""
    j = Journal.create(tmp_path / "s.pfj", capacity=16, day_rule=RULE, durability="none",
                       retention="overwrite", max_payload=1024)
    j.totals(D)
    j.append(terminal=1, kind="sale", state="approved", amount=100, currency=156, ts=at(D - 1, 10))
    late = j.begin_payment(terminal=1, amount=777, currency=156, ts=at(D - 1, 24 * 60 - 1))
    j.finish_payment(late, "approved", ts=at(D, 1))
    j.append(terminal=1, kind="sale", state="approved", amount=5, currency=156, ts=at(D, 2))
    assert (j.totals(D - 1).net(156), j.totals(D).net(156)) == (877, 5)
    assert j._totals.remembered == 1           # spans two days while its first record lives
    k = 0
    while j.oldest_seq <= late:
        j.append(terminal=2, kind="sale", state="approved", amount=1, currency=156,
                 ts=at(D, 3 + k))
        k += 1
    assert j._totals.remembered == 0
    assert j.totals(D) == brute(j, D) and j.totals(D).net(156) == 5 + 777 + k
    assert j.totals(D, terminal=1) == brute(j, D, 1)
    assert j.totals(D - 1).net(156) == 100      # what is left of D-1: kept as it was
    tables = z_tables(j, D)
    close = j.close_day(D)          # (its DAY_CLOSE record, three slots, evicts some more)
    assert (close.txns, close.terminals) == tables
    assert j.verify().ok
    j.close()


# ---------------------------------------------------------------- bytes
def test_to_bytes_and_back(journal):
    journal.totals(D)
    till = Till(journal, 21)
    for _ in range(300):
        till.step()
    book = journal._totals
    blob = book.to_bytes()
    assert blob[0] == DayTotals.VERSION and len(blob) < 60_000
    again = DayTotals.from_bytes(blob, lookup=book.lookup)
    assert again == book and again.to_bytes() == blob
    assert (again.floor, again.upto, again.oldest) == (book.floor, book.upto, book.oldest)
    for day in till.all_days():
        for terminal in (None,) + TERMINALS:
            assert again.totals(day, terminal) == book.totals(day, terminal)
            assert again.totals(day, terminal).txns == book.totals(day, terminal).txns
        assert again.in_doubt(day) == book.in_doubt(day)
    # a loaded blob carries on as the original does (the journal's tail replayed into it)
    journal._totals = again
    for _ in range(200):
        till.step()
    assert_totals(journal, till.all_days())
    for bad in (b"", b"\x09" + blob[1:], blob[:-1], blob + b"\0"):
        with pytest.raises(ValueError):
            DayTotals.from_bytes(bad)
    assert DayTotals.from_bytes(DayTotals().to_bytes()) == DayTotals()


def test_a_day_totals_blob_is_compact(tmp_path):
    j = Journal.create(tmp_path / "till.pfj", capacity=1 << 16, day_rule=RULE, durability="none")
    n = 50_000
    rng = np.random.default_rng(2)
    j.append_many({"ts": np.sort(at(D, 0) + rng.integers(0, 30 * DAY_US, n)),
                   "terminal": rng.integers(1, 9, n), "kind": rng.choice([1, 2, 3], n),
                   "state": rng.choice([2, 3], n), "method": rng.choice([1, 2], n),
                   "currency": 156, "amount": rng.integers(100, 50_000, n)})
    j.totals(D)
    blob = j._totals.to_bytes()
    # 30 days x 8 terminals x (kind x state x method) cells: ~29 bytes a cell, 36 a scope
    assert len(blob) < 30 * 8 * (12 * 29 + 36) + 64
    j.close()


def test_a_day_totals_by_itself():
    rows = np.zeros(5, posfast.RECORD_DTYPE)
    rows["seq"] = [1, 2, 3, 4, 5]
    rows["txn_id"] = [1, 2, 1, 2, 3]
    rows["day"] = [D, D, D, D + 1, D]
    rows["kind"] = [1, 1, 1, 1, 7]
    rows["state"] = [1, 1, 2, 3, 7]
    rows["amount"] = [100, 200, 100, 200, 0]
    rows["currency"] = 156
    rows["terminal"] = [1, 2, 1, 2, 1]
    book = DayTotals()
    book.add_rows(rows[:2], oldest=1)
    assert book.in_doubt(D) == [1, 2] and book.in_doubt(D, terminal=2) == [2]
    book.add_rows(rows[2:3], oldest=1)
    book.add_rows(rows[3:], oldest=1)
    t = book.totals(D)
    assert t[156].by_state == {"approved": Sum(1, 100, 100), "declined": Sum(1, 200, 0)}
    assert (t.records, t.first_seq, t.last_day) == (4, 1, D + 1)
    assert book.in_doubt(D) == [] and book.remembered == 1      # txn 2 spans two days
    assert book.totals(D + 1) == {}
    # all at once gives the same
    other = DayTotals()
    other.add_rows(rows, oldest=1)
    assert other == book


def test_archive_days_close_from_the_records_when_the_totals_did_not_see_them(tmp_path):
    """retention "archive": a day the totals folded keeps its totals after it went to the
    archive; after a reopen (totals built from the ring only) the close of an archived day
    is computed from the records, archive included, as before."""
    path = tmp_path / "till.pfj"
    j = Journal.create(path, capacity=64, day_rule=RULE, durability="none", retention="archive",
                       max_payload=4096)
    j.totals(D)
    for day in range(D, D + 6):
        for k in range(20):
            txn = j.begin_payment(terminal=1 + k % 3, amount=100 + k, currency=156,
                                  method="card", ts=at(day, 10 + k))
            j.finish_payment(txn, "approved" if k % 5 else "declined", ts=at(day, 10 + k) + 1)
            j.set_sync_watermark(j.head_seq)
    assert j.oldest_seq > j.query(day=D + 2)["seq"].max()          # D..D+2: archive only
    assert D in j._totals.dropped and D + 5 not in j._totals.dropped
    assert DayTotals.from_bytes(j._totals.to_bytes()).dropped == j._totals.dropped
    for day in range(D, D + 6):
        for terminal in (None, 2):
            assert j.totals(day, terminal) == brute(j, day, terminal)   # (archive included)
    assert j.totals(D)[156].count == 20
    for day in range(D, D + 6):       # from the records (D..D+3), from the totals (D+4, D+5)
        tables = z_tables(j, day)
        assert tables == (j.totals(day).txns, j.totals(day).terminals)
        z = j.close_day(day)
        assert (z.txns, z.terminals) == tables
    assert j.verify().ok
    j.close()
    with Journal.open(path) as again:
        assert again.totals(D + 2) == brute(again, D + 2)
        assert again._totals.totals(D + 2) == {}             # the ring holds none of it
        close = again.close_day(D + 1, terminal=2)
        assert (close.txns, close.terminals) == z_tables(again, D + 1, 2)
        assert close.net(156) == sum(100 + k for k in range(20) if k % 5 and k % 3 == 1)
        assert again.verify().ok


def test_a_payment_answered_after_its_totals_were_loaded_moves_every_sum():
    """Totals read back from bytes hold their cells until a day is asked for; an outcome that
    comes first passes its kind's, method's and terminal's sums through a count of 0, and
    must keep their net (it was dropped with the zero count)."""
    rows = np.zeros(3, posfast.RECORD_DTYPE)
    rows["seq"] = [1, 2, 3]
    rows["txn_id"] = [1, 2, 1]
    rows["day"] = 20717
    rows["kind"] = int(Kind.SALE)
    rows["state"] = [int(State.PENDING), int(State.PENDING), int(State.APPROVED)]
    rows["amount"] = [100, 500, 100]
    rows["currency"] = 156
    rows["terminal"] = 1
    kept = DayTotals()
    kept.add_rows(rows[:2], oldest=1)
    loaded = DayTotals.from_bytes(kept.to_bytes())
    for book in (kept, loaded):
        book.add_rows(rows[2:], oldest=1)
    want = kept.totals(20717)[156]
    assert want.by_kind["sale"] == Sum(count=2, amount=600, net=100)
    assert loaded.totals(20717)[156] == want


def test_totals_are_saved_with_the_index_and_only_the_tail_is_read(tmp_path, monkeypatch):
    """A reopened journal takes its day totals from the index file its writer saved and folds
    only the records appended after that save."""
    path = str(tmp_path / "t.pfj")
    j = Journal.create(path, capacity=4096, durability="none")
    for i in range(300):
        t = j.begin_payment(terminal=1 + i % 4, amount=100 + i)
        j.finish_payment(t, "approved" if i % 5 else "declined")
    day = j.get(1).day
    before = j.totals(day)                      # built now, then kept and saved
    j.flush()                                   # an index checkpoint, the totals with it
    extra = j.begin_payment(terminal=2, amount=999)
    j.finish_payment(extra, "approved")
    want = j.totals(day)
    assert want[156].net == before[156].net + 999
    drop = tmp_path / "copy.pfj"
    import shutil
    shutil.copyfile(path, str(drop))
    shutil.copyfile(path + ".idx", str(drop) + ".idx")
    j.close()
    fed = []
    original = Journal._feed_totals

    def counting(self, book, first, last, chunk=1 << 20):
        fed.append((first, last))
        return original(self, book, first, last, chunk)

    monkeypatch.setattr(Journal, "_feed_totals", counting)
    again = Journal.open(path)                   # closed cleanly: the index holds everything
    assert again.totals(day) == want
    assert fed == [(again.head_seq + 1, again.head_seq)]     # nothing read
    again.close()
    fed.clear()
    crashed = Journal.open(str(drop))            # as a crash left it: the flush's checkpoint
    assert crashed.totals(day) == want
    assert fed == [(601, 602)]                   # only the two records after the checkpoint
    crashed.close()
