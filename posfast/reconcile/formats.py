"""The statements merchants really receive, read into a :class:`Settlement`: WeChat Pay
trade bills, Alipay 业务明细 bills, UnionPay online (全渠道) settlement files, any bank or
acquirer statement through a column map (CSV or XLSX), Adyen's Settlement details report and
Stripe's itemized payout reconciliation report.  :func:`detect_format` tells them apart
by their header or preamble; :func:`read_statement` parses one.

Columns are found by header name, never position (merchant setups add columns).  Amounts
are decimal text in major units, parsed exactly into minor units (``amounts``); a file
is refused as a whole (:class:`SettlementError` naming file, line, column and value) when
a value is malformed, has more decimals than its currency, or when its own summary
disagrees with its rows.

>>> detect_format("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号\\n")
'wechat'
>>> detect_format("Company Account,Merchant Account,Psp Reference,Merchant Reference\\n")
'adyen'
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import os
import re
import zipfile
from typing import Optional

import numpy as np

from ..errors import SettlementError
from ..records import DayRule, Kind, State
from .amounts import FEE_SCALE, decimal_units, exponent_of
from .rows import SETTLEMENT_DTYPE, Settlement, _column_error, _currency_codes, _parse_times

__all__ = ["FORMATS", "detect_format", "read_statement", "load_column_map"]

#: Every statement format ``read_settlement`` takes (``"auto"`` detects one of them).
FORMATS = ("posfast", "wechat", "alipay", "unionpay", "mapped", "adyen", "stripe")
#: The channel each format covers (None: any; a column map may name one).
CHANNELS = {"wechat": "wechat", "alipay": "alipay", "unionpay": "unionpay", "adyen": "adyen",
            "stripe": "stripe", "posfast": None, "mapped": None}

_KINDS = {"sale": Kind.SALE, "refund": Kind.REFUND, "void": Kind.VOID, "reversal": Kind.REVERSAL,
          "preauth": Kind.PREAUTH, "completion": Kind.COMPLETION}


# ------------------------------------------------------------------ detection
def detect_format(head: str) -> Optional[str]:
    """The format whose header or preamble begins `head` (the file's first text), or None."""
    lines = [line.strip().lstrip("\ufeff") for line in head.splitlines()[:40] if line.strip()]
    if not lines:
        return None
    first = lines[0].replace("`", "")
    if first.startswith("交易时间,") and "微信订单号" in first:
        return "wechat"
    if any("支付宝交易号" in line for line in lines) or (
            lines[0].startswith("#") and "支付宝" in lines[0]):
        return "alipay"
    if "Psp Reference" in first and "Merchant Reference" in first:
        return "adyen"
    if "balance_transaction_id" in first and "reporting_category" in first:
        return "stripe"
    names = {c.strip().lower() for c in first.split(",")}
    if {"terminal", "time", "amount", "currency", "type"} <= names:
        return "posfast"
    if re.match(r"^[A-Z0-9]{3} \d{11} \d{11} \d{6} \d{10} ", lines[0]):
        return "unionpay"
    return None


# ------------------------------------------------------------------ reading the bytes
def _bytes_of(source, path):
    """(bytes, name) of a statement: a path, a binary stream, or a zip holding one."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            data = handle.read()
    else:
        data = source.read()
        if isinstance(data, str):
            return data, path
    if data[:4] == b"PK\x03\x04":
        return _unzip(data, path)
    return data, path


def _unzip(data, path):
    """The statement inside a zip (Alipay sends its bills zipped: 业务明细 beside a 汇总)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if any(m.filename == "[Content_Types].xml" for m in members):
                return data, path                 # an XLSX workbook: the mapped reader opens it

            def name(m):
                if m.flag_bits & 0x800:
                    return m.filename
                try:
                    return m.filename.encode("cp437").decode("gbk")
                except (UnicodeError, LookupError):
                    return m.filename
            detail = [m for m in members if "明细" in name(m) and "汇总" not in name(m)]
            chosen = detail or members
            if len(chosen) != 1:
                raise SettlementError(
                    "posfast: settlement file %s is a zip of %d files (%s); unzip it and give "
                    "the statement itself" % (path, len(members), ", ".join(map(name, members))),
                    path)
            return archive.read(chosen[0]), "%s!%s" % (path, name(chosen[0]))
    except (zipfile.BadZipFile, EOFError, OSError, zipfile.LargeZipFile) as exc:
        raise SettlementError("posfast: settlement file %s is a damaged or truncated zip (%s); "
                              "download it again" % (path, exc), path) from None


def _decode(data, path, encodings):
    """Text of `data` in the first of `encodings` that decodes it all; refuses naming the
    first undecodable line otherwise."""
    if isinstance(data, str):
        return data
    for codec in encodings:
        try:
            return data.decode(codec)
        except UnicodeDecodeError as exc:
            last = (codec, exc)
    codec, exc = last
    line = data.count(b"\n", 0, exc.start) + 1
    raise SettlementError("posfast: settlement file %s, line %d: bytes %r are not %s text; give "
                          "its encoding with --encoding (API: encoding=...)"
                          % (path, line, data[exc.start:exc.end], " or ".join(encodings)),
                          path, line, None, data[exc.start:exc.end])


def head_text(source, path, encoding=None) -> str:
    """The first text of a statement, for :func:`detect_format` (a zip's member's)."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            data = handle.read(1 << 16)
        if data[:4] == b"PK\x03\x04":
            data = _bytes_of(source, path)[0][:1 << 16]
        for codec in ([encoding] if encoding else ["utf-8-sig", "gb18030"]):
            try:
                return data.decode(codec, errors="strict")
            except UnicodeDecodeError as exc:
                if exc.start > len(data) - 4:          # cut inside a character at the end
                    return data[:exc.start].decode(codec)
        return data.decode("latin-1")
    raise TypeError("head_text reads paths")


# ------------------------------------------------------------------ common row building
class _Table:
    """Text columns of a statement's payment lines, by canonical name, and their lines."""

    def __init__(self, path, lines, columns, where):
        self.path, self.lines, self.columns, self.where = path, lines, columns, where

    def col(self, name):
        return self.columns[name]

    def header_name(self, name):
        return self.where.get(name, name)


def _csv_rows(text, path, first_line=1, strip_cell=None):
    """[(line number, cells)] of CSV text, blank lines left out."""
    out = []
    reader = csv.reader(io.StringIO(text))
    try:
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            if strip_cell is not None:
                row = [strip_cell(c) for c in row]
            out.append((first_line - 1 + reader.line_num, row))
    except csv.Error as exc:
        line = first_line - 1 + reader.line_num
        raise SettlementError("posfast: settlement file %s, line %d: %s" % (path, line, exc),
                              path, line) from None
    return out


def _columns(path, header_line, header, rows, wanted, optional=()):
    """{canonical name: [text per row]} of the columns named `wanted` (name -> header text or
    tuple of alternatives); refuses a header lacking one, or a row of another width."""
    clean = [h.strip().lstrip("\ufeff") for h in header]
    where, position = {}, {}
    for name, titles in list(wanted.items()) + list(optional):
        for title in (titles if isinstance(titles, tuple) else (titles,)):
            if title in clean:
                position[name], where[name] = clean.index(title), title
                break
        else:
            if name in wanted:
                raise SettlementError(
                    "posfast: settlement file %s, line %d: header lacks column %s; it has %s"
                    % (path, header_line, " or ".join(titles if isinstance(titles, tuple)
                                                        else (titles,)), ",".join(clean)),
                    path, header_line, name)
    width = len(header)
    for line, cells in rows:
        if len(cells) != width:
            raise SettlementError("posfast: settlement file %s, line %d: %d fields, the header "
                                  "(line %d) has %d" % (path, line, len(cells), header_line, width),
                                  path, line)
    columns = {name: [cells[i].strip() for _, cells in rows] for name, i in position.items()}
    return _Table(path, [line for line, _ in rows], columns, where)


def _text_array(table, name, size, ascii_only=True):
    values = table.col(name)
    if not values:
        return np.zeros(0, "S%d" % size)
    for line, value in zip(table.lines, values):
        if len(value) > size:
            raise _column_error(table.path, line, table.header_name(name), value,
                                "is longer than %d characters" % size)
    try:
        return np.array([v.encode("ascii" if ascii_only else "utf-8") for v in values],
                        dtype="S%d" % size)
    except UnicodeEncodeError:
        for line, value in zip(table.lines, values):
            if not value.isascii():
                raise _column_error(table.path, line, table.header_name(name), value,
                                    "holds characters that are not ASCII") from None
        raise


def _refs(table, name):
    if name not in table.columns:
        return None
    values = table.col(name)
    for line, value in zip(table.lines, values):
        if len(value.encode("utf-8")) > 64:
            raise _column_error(table.path, line, table.header_name(name), value,
                                "is longer than 64 bytes (posfast keeps references of 64 at most)")
    return np.array([v.encode("utf-8") for v in values], dtype="S%d" % max(
        1, max((len(v.encode("utf-8")) for v in values), default=1)))


def _currencies(table, default=None):
    n = len(table.lines)
    if "currency" not in table.columns:
        return np.full(n, default or 156, np.uint16)
    alpha = _currency_codes()
    known = {}
    out = np.zeros(n, np.uint16)
    for i, value in enumerate(table.col("currency")):
        code = known.get(value)
        if code is None:
            text = value.strip().upper()
            code = int(text) if text.isdigit() else alpha.get(text, {"RMB": 156}.get(text))
            if code is None and not text and default:
                code = default
            if code is None:
                raise _column_error(table.path, table.lines[i], table.header_name("currency"),
                                    value, "is not an ISO 4217 currency code")
            known[value] = code
        out[i] = code
    return out


def _build(table, kinds, ts, currency, amount, fee=None, states=None, batch=None,
           tid=None, channel=None, fmt="mapped", path=None, notes=()) -> Settlement:
    """The Settlement of parsed columns: `amount` unsigned minor units, `fee` signed
    thousandths of a minor unit (None: the statement states no fee)."""
    n = len(table.lines)
    rows = np.zeros(n, SETTLEMENT_DTYPE)
    rows["line"] = table.lines
    rows["kind"] = kinds
    rows["ts"] = ts
    rows["currency"] = currency
    rows["amount"] = amount
    rows["state"] = int(State.APPROVED) if states is None else states
    if fee is not None:
        rows["fee"] = fee
    for name, size in (("rrn", 12), ("auth_code", 6)):
        if name in table.columns:
            rows[name] = _text_array(table, name, size)
    voucher = _text_array(table, "voucher", 12) if "voucher" in table.columns else None
    if tid is None and "terminal" in table.columns:
        tid = _text_array(table, "terminal", 32, ascii_only=False)
    if tid is not None:
        digits = np.char.isdigit(np.char.decode(tid, "utf-8")) & (np.char.str_len(tid) <= 9) \
            if n else np.zeros(0, bool)
        rows["terminal"][digits] = tid[digits].astype(np.uint64).astype(np.uint32) if digits.any() \
            else 0
    names = ()
    if batch is not None and n:
        names, index = np.unique(np.asarray(batch, dtype=str), return_inverse=True)
        rows["batch"] = index.reshape(-1) + 1
        names = tuple(names.tolist())
        if names and names[0] == "":
            rows["batch"] -= 1                # no batch named: 0
            names = names[1:]
    return Settlement(path or table.path, rows, order_ref=_refs(table, "order_ref"),
                      host_ref=_refs(table, "host_ref"), format=fmt, channel=channel,
                      batches=tuple(names), has_fees=fee is not None, notes=list(notes), tid=tid,
                      voucher=voucher)


def _fee_units(table, name, currency, kinds):
    """Signed fees (thousandths of a minor unit) of a column: charged on payments, given
    back on refunds and voids, whatever sign the statement writes them with."""
    exps = np.array([exponent_of(c) for c in currency.tolist()], np.int64) + FEE_SCALE
    raw = decimal_units(table.col(name), exps, table.path, table.lines,
                        table.header_name(name), blank=0)
    back = np.isin(kinds, [int(Kind.REFUND), int(Kind.VOID), int(Kind.REVERSAL)])
    return np.where(back, -np.abs(raw), np.abs(raw))


def _exponents(currency):
    table = {int(c): exponent_of(int(c)) for c in np.unique(currency).tolist()}
    return np.array([table[int(c)] for c in currency.tolist()], np.int64)


def _lookup(table, name, mapping, what):
    out = np.zeros(len(table.lines), np.uint8)
    for i, value in enumerate(table.col(name)):
        key = value.strip()
        if key not in mapping:
            raise _column_error(table.path, table.lines[i], table.header_name(name), value,
                                "is not a %s this reader knows (%s)" % (what, ", ".join(mapping)))
        out[i] = int(mapping[key])
    return out


def _check_total(path, line, what, stated, counted):
    if stated != counted:
        raise SettlementError("posfast: settlement file %s, line %d: the summary says %s is %s, "
                              "the rows add up to %s; the file is incomplete or edited: download "
                              "it again" % (path, line, what, stated, counted), path, line, what,
                              stated)


# ------------------------------------------------------------------ WeChat Pay
_WECHAT_COLUMNS = {"time": "交易时间", "terminal": "设备号", "host_ref": "微信订单号",
                   "order_ref": "商户订单号", "status": "交易状态", "currency": "货币种类",
                   "settled": "应结订单金额", "fee": "手续费"}
_WECHAT_OPTIONAL = (("refund_host_ref", "微信退款单号"), ("refund_order_ref", "商户退款单号"),
                    ("refund", "退款金额"), ("mch", "商户号"))


def _read_wechat(text, path, rule):
    """WeChat Pay trade bill (v2 downloadbill, v3 tradebill; ALL, SUCCESS or REFUND)."""
    rows = _csv_rows(text, path, strip_cell=lambda c: c.strip().lstrip("`"))
    if not rows:
        raise SettlementError("posfast: settlement file %s is empty" % path, path, 1)
    header_line, header = rows[0]
    body = rows[1:]
    summary = None
    for k, (line, cells) in enumerate(body):
        if cells and cells[0].strip() == "总交易单数":
            summary = (line, cells, body[k + 1] if k + 1 < len(body) else None)
            body = body[:k]
            break
    if summary is None:
        raise SettlementError("posfast: settlement file %s has no summary (总交易单数 ...) after "
                              "its rows: the bill is truncated; download it again" % path, path,
                              rows[-1][0])
    table = _columns(path, header_line, header, body, _WECHAT_COLUMNS, _WECHAT_OPTIONAL)
    status = table.col("status")
    kinds = np.array([Kind.REFUND if s == "REFUND" else Kind.SALE for s in status], np.uint8)
    for line, s in zip(table.lines, status):
        if s not in ("SUCCESS", "REFUND", "REVOKED"):
            raise _column_error(path, line, "交易状态", s, "is not SUCCESS, REFUND or REVOKED")
    states = np.array([State.REVERSED if s == "REVOKED" else State.APPROVED for s in status],
                      np.uint8)
    refund = kinds == Kind.REFUND
    # a refund line keys on the refund's own ids where the bill gives them
    for own, original in (("refund_host_ref", "host_ref"), ("refund_order_ref", "order_ref")):
        if own in table.columns:
            table.columns[original] = [r if k and r not in ("", "0") else o for o, r, k in zip(
                table.col(original), table.col(own), refund.tolist())]
    currency = _currencies(table, 156)
    exps = _exponents(currency)
    settled = decimal_units(table.col("settled"), exps, path, table.lines, "应结订单金额")
    refunded = (decimal_units(table.col("refund"), exps, path, table.lines, "退款金额", blank=0)
                if "refund" in table.columns else np.zeros(len(kinds), np.int64))
    amount = np.where(refund, np.abs(refunded), np.abs(settled))
    fee = _fee_units(table, "fee", currency, kinds)
    ts = _parse_times(path, table.lines, table.col("time"), rule)
    if summary is not None:
        s_line, titles, values = summary
        if values is None:
            raise SettlementError("posfast: settlement file %s, line %d: the summary header has no "
                                  "values after it: the bill is truncated" % (path, s_line),
                                  path, s_line)
        got = dict(zip([t.strip() for t in titles], values[1]))
        v_line = values[0]
        if "总交易单数" in got:
            _check_total(path, v_line, "总交易单数 (rows)", int(got["总交易单数"] or 0), len(kinds))
        success = np.array([s == "SUCCESS" for s in status], bool)
        if "应结订单总金额" in got:
            stated = int(decimal_units([got["应结订单总金额"]], 2, path, [v_line], "应结订单总金额")[0])
            # bills differ on whether refund and revoked lines count in it: any of these agrees
            sums = {int(settled[success].sum()), int(settled[~refund].sum()), int(settled.sum())}
            if stated not in sums:
                _check_total(path, v_line, "应结订单总金额", stated, int(settled[success].sum()))
        if "退款总金额" in got:
            stated = int(decimal_units([got["退款总金额"]], 2, path, [v_line], "退款总金额")[0])
            _check_total(path, v_line, "退款总金额", stated, int(np.abs(refunded[refund]).sum()))
        if "手续费总金额" in got:
            stated = int(decimal_units([got["手续费总金额"]], 2 + FEE_SCALE, path, [v_line],
                                       "手续费总金额")[0])
            _check_total(path, v_line, "手续费总金额", stated, int(fee.sum()))
    return _build(table, kinds, ts, currency, amount, fee, states, channel="wechat",
                  fmt="wechat", notes=["summary (line %d) agrees with the %d rows"
                                       % (summary[0], len(kinds))])


# ------------------------------------------------------------------ Alipay
_ALIPAY_COLUMNS = {"host_ref": "支付宝交易号", "order_ref": "商户订单号", "type": "业务类型",
                   "time": ("完成时间", "创建时间"), "amount": "订单金额（元）"}
_ALIPAY_OPTIONAL = (("terminal", "终端号"), ("fee", "服务费（元）"),
                    ("refund_order_ref", "退款批次号/请求号"), ("store", "门店编号"),
                    ("received", "商家实收（元）"))
_TOTAL = re.compile(r"#\s*(交易|退款)合计[：:]\s*(\d+)笔[，,]\s*商家实收(?:退款)?共\s*(-?[\d.]+)\s*元")


def _read_alipay(text, path, rule):
    """Alipay 业务明细 (trade) bill: `#` preamble, header, rows, `#---业务明细列表结束`, totals."""
    lines = text.splitlines()
    header_at = next((i for i, line in enumerate(lines) if "支付宝交易号" in line
                      and not line.lstrip().startswith("#")), None)
    if header_at is None:
        raise SettlementError("posfast: settlement file %s: no header with 支付宝交易号: not an "
                              "Alipay 业务明细 bill" % path, path, 1)
    end = next((i for i in range(header_at + 1, len(lines)) if lines[i].lstrip().startswith("#")),
               None)
    if end is None or "结束" not in lines[end]:
        raise SettlementError("posfast: settlement file %s: no '#-----业务明细列表结束' after the rows: "
                              "the bill is truncated; download it again" % path, path, len(lines))
    body_text = "\n".join(lines[header_at:end])
    rows = _csv_rows(body_text, path, first_line=header_at + 1)
    header_line, header = rows[0]
    table = _columns(path, header_line, header, rows[1:], _ALIPAY_COLUMNS, _ALIPAY_OPTIONAL)
    kinds = _lookup(table, "type", {"交易": Kind.SALE, "退款": Kind.REFUND}, "业务类型")
    refund = kinds == Kind.REFUND
    if "refund_order_ref" in table.columns:
        table.columns["order_ref"] = [r if k and r else o for o, r, k in zip(
            table.col("order_ref"), table.col("refund_order_ref"), refund.tolist())]
    currency = np.full(len(kinds), 156, np.uint16)
    signed = decimal_units(table.col("amount"), 2, path, table.lines, "订单金额（元）")
    fee = _fee_units(table, "fee", currency, kinds) if "fee" in table.columns else None
    ts = _parse_times(path, table.lines, table.col("time"), rule)
    received = (decimal_units(table.col("received"), 2, path, table.lines, "商家实收（元）", blank=0)
                if "received" in table.columns else signed)
    checked = 0
    for i in range(end + 1, len(lines)):
        match = _TOTAL.match(lines[i].strip())
        if not match:
            continue
        which = Kind.SALE if match.group(1) == "交易" else Kind.REFUND
        mine = kinds == which
        _check_total(path, i + 1, "%s合计 (rows)" % match.group(1), int(match.group(2)),
                     int(mine.sum()))
        stated = int(decimal_units([match.group(3)], 2, path, [i + 1], "商家实收")[0])
        _check_total(path, i + 1, "%s合计 商家实收" % match.group(1), stated,
                     int(received[mine].sum()))
        checked += 1
    notes = ["totals (#交易合计 / #退款合计) agree with the %d rows" % len(kinds)] if checked else \
        ["the bill states no #交易合计 totals: the rows were not checked against any"]
    return _build(table, kinds, ts, currency, np.abs(signed), fee, channel="alipay",
                  fmt="alipay", notes=notes)


# ------------------------------------------------------------------ UnionPay 全渠道
#: The fields of a UnionPay online (全渠道) ZM/INN settlement line, in order, with their
#: widths; fields are separated by one space.  Reconcile reads those it names.
UNIONPAY_LAYOUT = (("code", 3), ("acq_ins", 11), ("send_ins", 11), ("trace", 6),
                   ("time", 10), ("account", 19), ("amount", 12), ("mcc", 4),
                   ("term_type", 2), ("host_ref", 21), ("old_pay_type", 2),
                   ("order_ref", 32), ("card_type", 2), ("orig_trace", 6),
                   ("orig_time", 10), ("fee", 13), ("settled", 13), ("pay_type", 4),
                   ("group_mer", 15), ("txn_type", 2), ("txn_sub_type", 2), ("biz_type", 6),
                   ("acc_type", 2), ("bill_type", 4), ("bill_no", 32), ("interact", 1),
                   ("orig_host_ref", 21), ("merchant", 15))
_UNIONPAY_TYPES = {"01": Kind.SALE, "31": Kind.VOID, "04": Kind.REFUND, "02": Kind.PREAUTH,
                   "03": Kind.COMPLETION}


def _file_date(path, file_date):
    if file_date is not None:
        return _dt.date.fromisoformat(str(file_date)) if not isinstance(file_date, _dt.date) \
            else file_date
    match = re.search(r"IN[A-Z](\d{6})", os.path.basename(path or ""))
    if match:
        return _dt.datetime.strptime(match.group(1), "%y%m%d").date()
    raise SettlementError("posfast: settlement file %s: a UnionPay file's times have no year; "
                          "name the file's date (file_date='2026-11-20', --file-date) or keep its "
                          "INNyymmdd name" % path, path)


def _read_unionpay(text, path, rule, file_date=None):
    day = _file_date(path, file_date)
    starts, at = {}, 0
    for name, width in UNIONPAY_LAYOUT:
        starts[name] = (at, at + width)
        at += width + 1
    minimum = at - 1
    lines, cells = [], {name: [] for name, _ in UNIONPAY_LAYOUT}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if len(line) < minimum:
            raise SettlementError("posfast: settlement file %s, line %d: %d characters, a UnionPay "
                                  "line has at least %d" % (path, number, len(line), minimum),
                                  path, number)
        lines.append(number)
        for name, (a, b) in starts.items():
            cells[name].append(line[a:b].strip())
    table = _Table(path, lines, cells, {})
    kinds = _lookup(table, "txn_type", _UNIONPAY_TYPES, "交易类型")
    n = len(lines)
    for line, value in zip(lines, cells["amount"]):
        if not value.isdigit():
            raise _column_error(path, line, "amount", value, "is not an amount in fen")
    amount = np.array([int(v) for v in cells["amount"]], np.int64) if n else np.zeros(0, np.int64)

    def signed_fen(name):
        out = np.zeros(n, np.int64)
        for i, (line, value) in enumerate(zip(lines, cells[name])):
            sign, digits = (-1 if value[:1] == "C" else 1), value.lstrip("CD")
            if not digits.isdigit():
                raise _column_error(path, line, name, value, "is not C/D and an amount in fen")
            out[i] = sign * int(digits)
        return out
    fee = signed_fen("fee") * 10 ** FEE_SCALE
    back = np.isin(kinds, [int(Kind.REFUND), int(Kind.VOID)])
    fee = np.where(back, -np.abs(fee), np.abs(fee))
    stamps = []
    for line, value in zip(lines, cells["time"]):
        try:
            moment = _dt.datetime.strptime("%04d%s" % (day.year, value), "%Y%m%d%H%M%S")
        except ValueError:
            raise _column_error(path, line, "time", value, "is not MMDDhhmmss") from None
        if moment.date() > day + _dt.timedelta(days=1):    # December's lines in January's file
            moment = moment.replace(year=day.year - 1)
        stamps.append(moment.isoformat(sep=" "))
    ts = _parse_times(path, lines, stamps, rule)
    return _build(table, kinds, ts, np.full(n, 156, np.uint16), amount, fee, channel="unionpay",
                  fmt="unionpay")


# ------------------------------------------------------------------ Adyen, Stripe
_ADYEN_COLUMNS = {"host_ref": "Psp Reference", "order_ref": "Merchant Reference",
                  "time": "Creation Date", "type": "Type", "currency": "Gross Currency",
                  "debit": "Gross Debit (GC)", "credit": "Gross Credit (GC)"}
_ADYEN_OPTIONAL = (("zone", "TimeZone"), ("batch", "Batch Number"),
                   ("commission", "Commission (NC)"), ("markup", "Markup (NC)"),
                   ("scheme", "Scheme Fees (NC)"), ("interchange", "Interchange (NC)"),
                   ("net_currency", "Net Currency"))
_ADYEN_PAYMENTS = {"Settled": Kind.SALE, "SettledBulk": Kind.SALE, "Refunded": Kind.REFUND,
                   "RefundedBulk": Kind.REFUND}
_ZONES = {"UTC": 0, "GMT": 0, "CET": 60, "CEST": 120, "EET": 120, "EEST": 180, "WET": 0,
          "WEST": 60, "BST": 60, "EST": -300, "EDT": -240, "CST": -360, "CDT": -300,
          "MST": -420, "MDT": -360, "PST": -480, "PDT": -420, "HKT": 480, "SGT": 480,
          "AEST": 600, "AEDT": 660, "JST": 540}


def _zone_times(path, table, column, zones):
    """UTC microseconds of naive times in the zone each row names (Adyen's TimeZone)."""
    ts = _parse_times(path, table.lines, table.col(column), DayRule(utc_offset=0))
    if zones is None:
        return ts
    offsets = np.zeros(len(ts), np.int64)
    for i, zone in enumerate(zones):
        if zone not in _ZONES:
            raise _column_error(path, table.lines[i], "TimeZone", zone,
                                "is not a time zone this reader knows (%s)" % ", ".join(_ZONES))
        offsets[i] = _ZONES[zone]
    return ts - offsets * 60_000_000


def _read_adyen(text, path, rule):
    rows = _csv_rows(text, path)
    header_line, header = rows[0]
    table = _columns(path, header_line, header, rows[1:], _ADYEN_COLUMNS, _ADYEN_OPTIONAL)
    types = table.col("type")
    pay = [t in _ADYEN_PAYMENTS for t in types]
    others = {}
    for t, p in zip(types, pay):
        if not p:
            others[t] = others.get(t, 0) + 1
    keep = [k for k, p in enumerate(pay) if p]
    table = _Table(path, [table.lines[k] for k in keep],
                   {name: [v[k] for k in keep] for name, v in table.columns.items()}, table.where)
    kinds = _lookup(table, "type", _ADYEN_PAYMENTS, "payment type")
    currency = _currencies(table)
    exps = _exponents(currency)
    debit = decimal_units(table.col("debit"), exps, path, table.lines, "Gross Debit (GC)", blank=0)
    credit = decimal_units(table.col("credit"), exps, path, table.lines, "Gross Credit (GC)",
                           blank=0)
    fee = None
    parts = [name for name in ("commission", "markup", "scheme", "interchange")
             if name in table.columns]
    if parts:
        fee = sum(decimal_units(table.col(p), exps + FEE_SCALE, path, table.lines,
                                table.header_name(p), blank=0) for p in parts)
        back = kinds == Kind.REFUND
        fee = np.where(back, -np.abs(fee), np.abs(fee))
    ts = _zone_times(path, table, "time", table.col("zone") if "zone" in table.columns else None)
    notes = ["%d %s line(s) are not payments (not matched)" % (n, t) for t, n in sorted(others.items())]
    return _build(table, kinds, ts, currency, np.abs(credit - debit), fee,
                  batch=table.col("batch") if "batch" in table.columns else None,
                  channel="adyen", fmt="adyen", notes=notes)


_STRIPE_COLUMNS = {"time": "created_utc", "currency": "currency", "gross": "gross", "fee": "fee",
                   "category": "reporting_category", "host_ref": ("payment_intent_id", "charge_id",
                                                                  "source_id")}
_STRIPE_OPTIONAL = (("batch", "automatic_payout_id"),)
_STRIPE_PAYMENTS = {"charge": Kind.SALE, "refund": Kind.REFUND, "partial_capture_reversal":
                    Kind.REFUND}
#: Where Stripe's itemized report carries the merchant's order reference (payment metadata).
STRIPE_ORDER_KEYS = ("order_ref", "order_id", "order", "reference")


def _read_stripe(text, path, rule):
    rows = _csv_rows(text, path)
    header_line, header = rows[0]
    meta = [h.strip() for h in header if h.strip().startswith("payment_metadata[")]
    order = next((m for key in STRIPE_ORDER_KEYS for m in meta if m == "payment_metadata[%s]" % key),
                 None)
    optional = _STRIPE_OPTIONAL + ((("order_ref", order),) if order else ())
    table = _columns(path, header_line, header, rows[1:], _STRIPE_COLUMNS, optional)
    cats = table.col("category")
    others = {}
    keep = []
    for k, c in enumerate(cats):
        if c in _STRIPE_PAYMENTS:
            keep.append(k)
        else:
            others[c] = others.get(c, 0) + 1
    table = _Table(path, [table.lines[k] for k in keep],
                   {name: [v[k] for k in keep] for name, v in table.columns.items()}, table.where)
    kinds = _lookup(table, "category", _STRIPE_PAYMENTS, "reporting_category")
    currency = _currencies(table)
    exps = _exponents(currency)
    gross = decimal_units(table.col("gross"), exps, path, table.lines, "gross")
    fee = _fee_units(table, "fee", currency, kinds)
    ts = _parse_times(path, table.lines, table.col("time"), DayRule(utc_offset=0))
    notes = ["%d %s line(s) are not payments (not matched)" % (n, c) for c, n in sorted(others.items())]
    if order is None:
        notes.append("no payment_metadata[order_ref|order_id|order|reference] column: rows match "
                     "by payment_intent_id only")
    return _build(table, kinds, ts, currency, np.abs(gross), fee,
                  batch=table.col("batch") if "batch" in table.columns else None,
                  channel="stripe", fmt="stripe", notes=notes)


# ------------------------------------------------------------------ a column map (TOML)
_MAP_KEYS = ("time", "date", "clock", "terminal", "rrn", "auth_code", "amount", "fee", "type",
             "batch", "voucher", "currency", "order_ref", "host_ref")


def load_column_map(column_map) -> dict:
    """A column map: a dict, or the path of a TOML file (see the README's example)."""
    if isinstance(column_map, dict):
        spec = column_map
        where = "<column map>"
    else:
        import tomllib
        where = os.fspath(column_map)
        try:
            with open(where, "rb") as handle:
                spec = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise SettlementError("posfast: column map %s is not TOML: %s" % (where, exc),
                                  where) from None
    columns = spec.get("columns", {})
    unknown = sorted(set(columns) - set(_MAP_KEYS))
    if unknown:
        raise SettlementError("posfast: column map %s: unknown key(s) %s under [columns]; keys are "
                              "%s" % (where, ", ".join(unknown), ", ".join(_MAP_KEYS)), where)
    if "amount" not in columns or not ({"time"} <= set(columns) or {"date", "clock"} <= set(columns)):
        raise SettlementError("posfast: column map %s must name the amount and the time (or date "
                              "and clock) columns under [columns]" % where, where)
    return dict(spec, _where=where)


def _sheet_rows(data, path, sheet=None):
    """[(row number, cells)] of an XLSX statement (openpyxl, the optional 'xlsx' extra)."""
    try:
        import openpyxl
    except ImportError:
        raise SettlementError("posfast: settlement file %s is an XLSX workbook; reading it needs "
                              "openpyxl (pip install 'posfast[xlsx]')" % path, path) from None
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:      # openpyxl raises many types for a damaged workbook
        raise SettlementError("posfast: settlement file %s is not a readable XLSX workbook (%s)"
                              % (path, exc), path) from None
    ws = book[sheet] if sheet else book.worksheets[0]
    out = []
    for number, row in enumerate(ws.iter_rows(values_only=True), 1):
        cells = ["" if v is None else _cell_text(v) for v in row]
        if any(c.strip() for c in cells):
            out.append((number, cells))
    book.close()
    return out


def _cell_text(value):
    if isinstance(value, _dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, float):
        # a number cell: its shortest repr is the decimal the bank typed (12.5 for 12.50)
        return repr(value) if value != int(value) else str(int(value))
    return str(value)


def _read_mapped(data, path, rule, column_map, encoding=None):
    spec = load_column_map(column_map)
    columns = spec["columns"]
    options = spec.get("statement", {})
    if data[:4] == b"PK\x03\x04":                  # a workbook (other zips were opened)
        rows = _sheet_rows(data, path, options.get("sheet"))
    else:
        text = _decode(data, path, [encoding or options.get("encoding") or "utf-8-sig"])
        rows = _csv_rows(text, path, strip_cell=lambda c: c.strip().strip("\t").lstrip("`'"))
    titles = set(columns.values())
    header_at = next((k for k, (_, cells) in enumerate(rows)
                      if titles <= {c.strip() for c in cells}), None)
    if header_at is None:
        raise SettlementError("posfast: settlement file %s: no header row holds every column the map "
                              "%s names (%s)" % (path, spec["_where"], ", ".join(sorted(titles))),
                              path, 1)
    header_line, header = rows[header_at]
    body = rows[header_at + 1:]
    stop = options.get("stop_at")
    if stop:
        body = body[:next((k for k, (_, c) in enumerate(body) if c and c[0].startswith(stop)),
                          len(body))]
    width = len(header)
    body = [(line, cells + [""] * (width - len(cells)) if len(cells) < width else cells)
            for line, cells in body]
    table = _columns(path, header_line, header, body, {k: v for k, v in columns.items()})
    types = {str(k): _KINDS[str(v)] for k, v in spec.get("types", {}).items()}
    if "type" in table.columns:
        kinds = _lookup(table, "type", types or {k: v for k, v in _KINDS.items()}, "type")
    else:
        kinds = np.full(len(table.lines), int(Kind.SALE), np.uint8)
    currency = _currencies(table, _currency_codes().get(str(options.get("currency", "CNY")).upper()))
    unit = options.get("amount_unit", "major")
    exps = _exponents(currency) if unit == "major" else np.zeros(len(currency), np.int64)
    signed = decimal_units(table.col("amount"), exps, path, table.lines, columns["amount"])
    fee = None
    if "fee" in table.columns:
        fee = decimal_units(table.col("fee"), exps + FEE_SCALE, path, table.lines,
                            columns["fee"], blank=0)
        back = np.isin(kinds, [int(Kind.REFUND), int(Kind.VOID), int(Kind.REVERSAL)])
        fee = np.where(back, -np.abs(fee), np.abs(fee))
    if "time" in table.columns:
        stamps = table.col("time")
    else:
        stamps = [d + " " + c for d, c in zip(table.col("date"), table.col("clock"))]
    fmt = options.get("time_format")
    if fmt:
        parsed = []
        for line, value in zip(table.lines, stamps):
            try:
                parsed.append(_dt.datetime.strptime(value, fmt).isoformat(sep=" "))
            except ValueError:
                raise _column_error(path, line, columns.get("time", columns.get("date")), value,
                                    "does not match time_format %r" % fmt) from None
        stamps = parsed
    ts = _parse_times(path, table.lines, stamps, rule)
    return _build(table, kinds, ts, currency, np.abs(signed), fee,
                  batch=table.col("batch") if "batch" in table.columns else None,
                  channel=options.get("channel"), fmt="mapped",
                  notes=["read through column map %s" % os.path.basename(spec["_where"])])


# ------------------------------------------------------------------ entry point
def read_statement(source, fmt, path, rule, encoding=None, column_map=None,
                   file_date=None) -> Settlement:
    """Parse a statement of format `fmt` (not ``posfast``: settlement.py reads that one)."""
    data, path = _bytes_of(source, path)
    if fmt == "mapped":
        if column_map is None:
            raise SettlementError("posfast: the mapped format needs a column map "
                                  "(column_map=..., --map FILE.toml)", path)
        if isinstance(data, str):
            data = data.encode("utf-8")
        return _read_mapped(data, path, rule, column_map, encoding)
    if fmt == "alipay":
        text = _decode(data, path, [encoding] if encoding else ["gb18030", "utf-8-sig"])
        return _read_alipay(text, path, rule)
    text = _decode(data, path, [encoding or "utf-8-sig"])
    if fmt == "wechat":
        return _read_wechat(text, path, rule)
    if fmt == "unionpay":
        return _read_unionpay(text, path, rule, file_date)
    if fmt == "adyen":
        return _read_adyen(text, path, rule)
    if fmt == "stripe":
        return _read_stripe(text, path, rule)
    raise ValueError("format must be auto or one of %s, not %r" % (", ".join(FORMATS), fmt))
