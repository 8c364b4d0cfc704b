"""The statement readers' fast path (posfast/reconcile/tokens.py: a block's cells from its
bytes with numpy) against the text path it stands in for, on tricky statements: both must
give the same Settlement (rows, references, terminal ids, batches) or the same refusal,
word for word (line, column and value).  The text path is what read_settlement did before
the fast path existed; it still reads every block the fast path declines."""
import contextlib
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import posfast.reconcile.formats as formats
import posfast.reconcile.settlement as settlement
from posfast import DayRule
from posfast.reconcile import SettlementError, read_settlement
from posfast.reconcile import tokens

RULE = DayRule(utc_offset="+08:00", starts_at="04:00")
ZONED = DayRule(tz="Europe/Berlin")


@contextlib.contextmanager
def text_path_only():
    """Every block through the text path (the fast path declines them all)."""
    saved = settlement._fast_block, formats._FAST
    settlement._fast_block = lambda *args: None
    formats._FAST = False
    try:
        yield
    finally:
        settlement._fast_block, formats._FAST = saved


@contextlib.contextmanager
def blocks(chars=None, rows=None):
    saved = settlement._BLOCK_CHARS, formats._BLOCK_ROWS
    settlement._BLOCK_CHARS = chars or saved[0]
    formats._BLOCK_ROWS = rows or saved[1]
    try:
        yield
    finally:
        settlement._BLOCK_CHARS, formats._BLOCK_ROWS = saved


def outcome(read):
    """('ok', the Settlement's every column as lists) or ('refused', the message)."""
    try:
        s = read()
    except SettlementError as exc:
        return "refused", str(exc)
    columns = {name: None if getattr(s, name) is None else
               (str(getattr(s, name).dtype), getattr(s, name).tolist())
               for name in ("rows", "host_ref", "order_ref", "tid", "voucher")}
    return "ok", columns, s.batches, s.has_fees, s.notes, s.format, s.channel


def both_paths(read):
    fast = outcome(read)
    with text_path_only():
        text = outcome(read)
    assert fast == text
    return fast


# ------------------------------------------------------------------ posfast CSV
HEADER = ["terminal", "time", "rrn", "auth_code", "amount", "currency", "type"]
OPTIONAL = ["host_ref", "order_ref", "fee", "batch"]
TRICKY = {
    "terminal": ["3", "0", "4294967295", "4294967296", "0007", " 3", "+3", "\u0663", "", "x",
                 "99999999999999999999"],
    "time": ["2026-11-20 13:45:12", "2026-11-20T13:45:12", "2026-11-20t13:45:12",
             "2026-11-20 13:45:12+08:00", "2026-11-20 13:45", "2026-11-20 13:45:12.250",
             " 2026-11-20 13:45:12", "2026-02-29 10:00:00", "2028-02-29 10:00:00",
             "2026-11-20 24:00:00", "2026-13-01 00:00:00", "0000-01-01 00:00:00", "2026-11-20",
             "2026-11-20Z13:45:12", "2026-11-20 13:45:12Z"],
    "rrn": ["", "123456789012", "1234567890123", "A1 B2", " 12", "\u00e912", "12\t"],
    "auth_code": ["", "A1B2C3", "A1B2C3D", "ab", " A1"],
    "amount": ["1250", "-500", "0", "-0", "12.50", "", " 5", "+5", "1_000", "-", "5-",
               "4611686018427387904", "999999999999999999", "1,0"],
    "currency": ["156", "CNY", "cny", " 156", "XXX", "", "1560", "978", "EUR"],
    "type": ["sale", "refund", "SALE", "pre-auth", "pre_auth", "void", "reversal",
             "completion", " sale ", "x", ""],
    "host_ref": ["", "4200001234202611201111111111", "\u4e2d\u6587ref", "a b", " lead", "t\t",
                 "x" * 65, "x" * 64, "0"],
    "order_ref": ["", "ORD-1", "ORD 2", "\u00fcber", "y" * 70],
    "fee": ["", "0", "25", "-7", "1.5", "+3", "9" * 16, " 4"],
    "batch": ["", "B1", " B2", "B1 "],
}
PLAIN = {"terminal": ["3", "12"], "time": ["2026-11-20 13:45:12", "2026-11-21 03:59:59"],
         "rrn": ["", "123456789012"], "auth_code": ["", "A1B2C3"], "amount": ["1250", "99"],
         "currency": ["156", "CNY"], "type": ["sale", "refund"],
         "host_ref": ["", "42000012"], "order_ref": ["ORD-1", ""], "fee": ["", "25"],
         "batch": ["", "B1"]}


@st.composite
def posfast_csv(draw):
    names = HEADER + draw(st.lists(st.sampled_from(OPTIONAL), unique=True, max_size=4))
    names = draw(st.permutations(names))
    tricky = draw(st.floats(0, 1))
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    lines = [",".join(names)]
    for _ in range(draw(st.integers(0, 30))):
        if draw(st.integers(0, 15)) == 0:
            lines.append(draw(st.sampled_from(["", "   ", "3,x"])))   # blank, or short
            continue
        cells = []
        for name in names:
            pool = TRICKY[name] if draw(st.floats(0, 1)) < tricky * 0.3 else PLAIN[name]
            cells.append(draw(st.sampled_from(pool)))
        if draw(st.integers(0, 40)) == 0:
            cells[0] = '"%s"' % cells[0]                               # a quoted cell
        lines.append(",".join(cells))
    text = ending.join(lines) + draw(st.sampled_from([ending, "", ending + ending]))
    if draw(st.booleans()):
        text = ending * draw(st.integers(1, 2)) + text                 # blank lines first
    return text


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=posfast_csv(), chars=st.sampled_from([16, 64, 300, 1 << 21]),
       bom=st.booleans(), rule=st.sampled_from([RULE, ZONED]))
def test_posfast_csv_both_paths_alike(tmp_path_factory, text, chars, bom, rule):
    path = tmp_path_factory.mktemp("csv") / "statement.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    with blocks(chars=chars):
        both_paths(lambda: read_settlement(path, format="posfast", utc_offset=rule))
        both_paths(lambda: read_settlement(io.StringIO(text), format="posfast", utc_offset=rule))


def plain_statement(n, fee=True):
    rng = np.random.default_rng(3)
    rows = ["terminal,time,rrn,auth_code,amount,currency,type,host_ref,order_ref"
            + (",fee" if fee else "")]
    for k in range(n):
        rows.append("%d,2026-11-20 %02d:%02d:%02d,%s,%s,%d,156,%s,42%010d,%s%s" % (
            rng.integers(1, 40), k % 24, k % 60, (7 * k) % 60, "" if k % 3 else "%012d" % k,
            "A%05d" % k if k % 2 else "", rng.integers(-500, 50_000) if k % 7 == 0 else
            rng.integers(1, 50_000), "refund" if k % 7 == 0 else "sale", k,
            "ORD-\u4e2d%d" % k if k % 5 else "", ",%d" % (k % 30) if fee else ""))
    return "\r\n".join(rows) + "\r\n"


@pytest.mark.parametrize("chars", [200, 4096, 1 << 21])
def test_plain_statement_takes_the_fast_path(tmp_path, chars):
    """A plain statement (CRLF, refunds with negative amounts, non-ASCII order references)
    is read by the fast path, block after block, and reads as the text path reads it."""
    path = tmp_path / "s.csv"
    path.write_text(plain_statement(500), encoding="utf-8", newline="")
    taken = []
    real = settlement._fast_block

    def spy(*args):
        got = real(*args)
        taken.append(got is not None)
        return got
    with blocks(chars=chars):
        settlement._fast_block = spy
        try:
            kind, columns, *_ = both_paths(lambda: read_settlement(path, utc_offset=RULE))
        finally:
            settlement._fast_block = real
    assert kind == "ok" and len(columns["rows"][1]) == 500
    assert taken and all(taken[:len(taken) // 2])   # (spy saw the fast run first)
    s = read_settlement(path, utc_offset=RULE)
    assert s.order_ref[1].decode("utf-8") == "ORD-\u4e2d1"
    assert s.rows["kind"][0] == 2 and s.rows["amount"][0] >= 0    # a refund, its amount unsigned


@pytest.mark.parametrize("bad, message", [
    ("3,2026-11-20 13:45:12,1,,12.50,156,sale", "line 3, column amount: '12.50' is not an "
     "integer number of minor units (write 1250 for 12.50)"),
    ("3,2026-11-20 13:45:12,1,,1x0,156,sale", "line 3, column amount: '1x0' is not an integer"),
    ("3,2026-11-20 13:45:12,1234567890123,,10,156,sale", "line 3, column rrn: "
     "'1234567890123' is longer than 12 characters"),
    ("3,2026-11-20 13:45:12,,,-10,156,sale", "line 3, column amount: '-10' is negative for a sale"),
    ("3,2026-11-31 13:45:12,,,10,156,sale", "line 3, column time: '2026-11-31 13:45:12' is not"),
    ("3,2026-11-20 13:45:12,,,10,156,sale,extra", "line 3: 8 fields, the header (line 1) has 7"),
    ("\u0663,2026-11-20 13:45:12,,,10,156,sale", None),        # int() reads an Arabic-Indic 3
])
def test_refusals_name_the_value_as_before(tmp_path, bad, message):
    good = "3,2026-11-20 13:45:12,123456789012,A1B2C3,1250,156,sale"
    text = "terminal,time,rrn,auth_code,amount,currency,type\n%s\n%s\n%s\n" % (good, bad, good)
    path = tmp_path / "s.csv"
    path.write_text(text, encoding="utf-8")
    got = both_paths(lambda: read_settlement(path, utc_offset=RULE))
    if message is None:
        assert got[0] == "ok" and got[1]["rows"][1][1][1] == 3
    else:
        assert got[0] == "refused" and message in got[1]


# ------------------------------------------------------------------ WeChat Pay bill
WECHAT_HEADER = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,"
                 "付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,"
                 "退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注")
WECHAT_TRICKY = {
    "time": ["2026-11-20 13:45:12", "2026-11-20 13:45", "2026-11-20T13:45:12+08:00",
             "2026-11-20 25:00:00", " 2026-11-20 13:45:12"],
    "device": ["1", "0042", "T-01", "", "1234567890", "\u4e2d1", "x" * 33],
    "host": ["4200001234202611201111111111", "", "a b", "\u4e2d", "z" * 65],
    "order": ["ORD-1", "", "O`2"],
    "status": ["SUCCESS", "REFUND", "REVOKED", "success", "PAID", ""],
    "currency": ["CNY", "", "RMB", "156", "XXX", "cny"],
    "settled": ["12.50", "0.00", "12.5", "12", "-0.07", "12.505", "", "+1.00", "1.2.3",
                "99999999999999999.00", ".50", "5."],
    "refund_id": ["0", "", "50300001234202611203333333333"],
    "refund": ["0.00", "12.50", "", "-3.00", "1.5"],
    "fee": ["0.07500", "0.00000", "0.075", "", "-0.01000", "0.000001", "1"],
}
WECHAT_PLAIN = {"time": ["2026-11-20 13:45:12"], "device": ["1", "12"],
                "host": ["4200001234202611201111111111"], "order": ["ORD-1", ""],
                "status": ["SUCCESS", "REFUND"], "currency": ["CNY"],
                "settled": ["12.50", "0.00"], "refund_id": ["0", "503000012342"],
                "refund": ["0.00", "12.50"], "fee": ["0.07500", "0.00000"]}


@st.composite
def wechat_bill(draw):
    tricky = draw(st.floats(0, 1))
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    lines = [WECHAT_HEADER]
    n = draw(st.integers(0, 20))
    for _ in range(n):
        def pick(name):
            pool = (WECHAT_TRICKY if draw(st.floats(0, 1)) < tricky * 0.3 else WECHAT_PLAIN)[name]
            return draw(st.sampled_from(pool))
        cells = [pick("time"), "wx1", "1900000109", "0", pick("device"), pick("host"),
                 pick("order"), "o1", "MICROPAY", pick("status"), "CMB", pick("currency"),
                 pick("settled"), "0.00", pick("refund_id"), pick("refund_id"), pick("refund"),
                 "0.00", "", "", draw(st.sampled_from(["g", "咖啡 大杯", "a b"])), "",
                 pick("fee"), "0.60%", "12.50", "0.00", ""]
        tick = "" if draw(st.integers(0, 30)) == 0 else "`"
        line = ",".join(tick + c for c in cells)
        if draw(st.integers(0, 40)) == 0:
            line = draw(st.sampled_from([line + ",`x", "", '"`1",' + line.split(",", 1)[1]]))
        lines.append(line)
    lines.append("总交易单数,应结订单总金额,退款总金额")
    lines.append("`%d,`0.00,`0.00" % n if draw(st.booleans()) else "`%d" % n)
    return ending.join(lines) + ending


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=wechat_bill(), rows=st.sampled_from([1, 2, 5, 1 << 14]), bom=st.booleans())
def test_wechat_bill_both_paths_alike(tmp_path_factory, text, rows, bom):
    path = tmp_path_factory.mktemp("wx") / "bill.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    with blocks(rows=rows):
        both_paths(lambda: read_settlement(path, format="wechat", utc_offset=RULE))


def test_wechat_plain_bill_takes_the_fast_path(tmp_path):
    rows = ["`2026-11-20 10:%02d:00,`wx1,`1900000109,`0,`%d,`42000012%08d,`ORD-%d,`o1,`MICROPAY,"
            "`%s,`CMB,`CNY,`%d.%02d,`0.00,`%s,`0,`%s,`0.00,`,`,`咖啡,`,`0.0%d000,`0.60%%,`1.00,`0.00,`"
            % (k % 60, k % 9 + 1, k, k, "REFUND" if k % 4 == 0 else "SUCCESS", k, k % 100,
               "5030%06d" % k if k % 4 == 0 else "0", "1.00" if k % 4 == 0 else "0.00", k % 10)
            for k in range(40)]
    text = "\r\n".join([WECHAT_HEADER] + rows + ["总交易单数", "`40"]) + "\r\n"
    path = tmp_path / "bill.csv"
    path.write_text(text, encoding="utf-8", newline="")
    calls = []
    real = formats._wechat_fast

    def spy(p, r):
        read = real(p, r)

        def counted(*args):
            got = read(*args)
            calls.append(got is not None)
            return got
        return counted
    formats._wechat_fast = spy
    try:
        with blocks(rows=8):
            kind, columns, *_ = both_paths(lambda: read_settlement(path, utc_offset=RULE))
    finally:
        formats._wechat_fast = real
    assert kind == "ok" and len(columns["rows"][1]) == 40
    assert calls[:5] == [True] * 5            # the five blocks of rows; the summary's: text
    s = read_settlement(path, utc_offset=RULE)
    assert s.host_ref[4] == b"5030000004"     # a refund keys on its own refund id
    assert s.rows["fee"][4] < 0 and s.rows["fee"][5] == 5000


# ------------------------------------------------------------------ the pieces
@settings(max_examples=300, deadline=None)
@given(cells=st.lists(st.text(alphabet="0123456789-+. x", max_size=22), min_size=1, max_size=12),
       exponent=st.integers(0, 6))
def test_decimals_as_decimal_units(cells, exponent):
    from posfast.reconcile.amounts import decimal_units
    data = ("\n".join("a," + c for c in cells) + "\n").encode()
    block = tokens.Fields.of(data, 2, blank_lines=False)
    if block is None:                          # (an empty cell list line: never here)
        return
    try:
        want = decimal_units(cells, exponent, "f", list(range(len(cells))), "c", blank=0).tolist()
    except (SettlementError, OverflowError):
        want = None
    got = tokens.decimals(*block.column(1), exponent, blank=0)
    fixed = tokens.fixed_decimals(*block.right(1), exponent, blank=0)
    if got is not None:
        assert got.tolist() == want
    if fixed is not None:
        assert fixed.tolist() == want


@settings(max_examples=300, deadline=None)
@given(st.lists(st.datetimes(min_value=__import__("datetime").datetime(1, 1, 1)), min_size=1,
                max_size=8), st.sampled_from([" ", "T"]))
def test_naive_times_as_numpy(moments, sep):
    cells = [m.strftime("%Y-%m-%d" + sep + "%H:%M:%S").rjust(19, "0") for m in moments]
    block = tokens.Fields.of(("\n".join("a," + c for c in cells) + "\n").encode(), 2)
    got = tokens.naive_times(*block.column(1, zero=False))
    want = np.array([c.replace(" ", "T") for c in cells], "datetime64[us]").astype(np.int64)
    assert got is not None and got.tolist() == want.tolist()


# ------------------------------------------------------------------ matching by hashed keys
@settings(max_examples=150, deadline=None)
@given(j=st.lists(st.tuples(st.sampled_from([b"", b"a", b"b", b"ab", b"a" * 20]),
                            st.integers(1, 3), st.booleans()), max_size=30),
       h=st.lists(st.tuples(st.sampled_from([b"", b"a", b"b", b"ba", b"a" * 20, b"c" * 9]),
                            st.integers(1, 3)), max_size=30),
       collide=st.booleans())
def test_pair_keys_as_key_ids(j, h, collide):
    """pair_keys (each side's hashes sorted once) pairs exactly what key_ids, dedupe and
    join pair, the approved journal payment first; where two values share a hash (forced
    here) it says so and the caller falls back to key_ids."""
    from posfast.reconcile import matching
    j_ref = np.array([r for r, _, _ in j] or [b""], "S20")[:len(j)]
    j_kind = np.array([k for _, k, _ in j], np.uint8)
    approved = np.array([a for _, _, a in j], bool)
    h_ref = np.array([r for r, _ in h] or [b""], "S9")[:len(h)]
    h_kind = np.array([k for _, k in h], np.uint8)
    jidx, hidx = np.arange(len(j)), np.arange(len(h))
    jids, hids = matching.split_ids_at({"r": j_ref, "k": j_kind}, jidx, {"r": h_ref, "k": h_kind},
                                       hidx, ("r", "k")) if len(j) and len(h) else (None, None)
    saved = matching.hashes
    if collide:
        matching.hashes = lambda columns, at, dtypes=None: np.zeros(len(at), np.uint64)
    try:
        got = matching.pair_keys([j_ref, j_kind], jidx, [h_ref, h_kind], hidx,
                                 (~approved).astype(np.int8))
        keys = matching.HashedKeys([h_ref, h_kind], hidx)
    finally:
        matching.hashes = saved
    distinct_values = len(set(zip(j_ref.tolist(), j_kind.tolist()))
                          | set(zip(h_ref.tolist(), h_kind.tolist())))
    if collide and distinct_values > 1:
        assert got is None            # a shared hash is never taken for equal values
        return
    if jids is None:
        return
    assert got is not None and keys.exact
    rep, _ = matching.dedupe(jids, (~approved).astype(np.int8))
    hrep, hrep_of = matching.dedupe(hids, np.zeros(len(h), np.int8))
    a, b = matching.join(jids[rep], hids[hrep])
    assert got[0].tolist() == jidx[rep][a].tolist()
    assert got[1].tolist() == hidx[hrep][b].tolist()
    assert got[2].tolist() == rep.tolist()
    assert keys.rep.tolist() == hrep.tolist() and keys.rep_of.tolist() == hrep_of.tolist()
