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
import itertools
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


#: Lines converted at a time: only one block's text cells exist at once, whatever the size
#: of the statement (a million-line WeChat bill would be gigabytes of Python strings).
_BLOCK_ROWS = 1 << 14


def _csv_stream(lines, path, first_line=1):
    """(line number, cells) of CSV text lines (any iterable of lines), blank lines left out;
    a decoding error or a malformed line is refused with its line number.  A line without
    quotes is split on commas (the csv module's result, several times faster); a quoted one,
    with the lines a quoted line break joins to it, goes through csv."""
    number = first_line - 1
    try:
        lines = iter(lines)
        for raw in lines:
            number += 1
            start = number
            if '"' in raw:
                while raw.count('"') % 2:          # a quoted field runs on to the next line
                    more = next(lines, None)
                    if more is None:
                        raise csv.Error("unexpected end of data: a quoted field is not closed")
                    raw += more
                    number += 1
                rows = list(csv.reader([raw]))
                row = rows[0] if rows else []
            else:
                row = raw.rstrip("\r\n").split(",")
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            yield start, row
    except csv.Error as exc:
        raise SettlementError("posfast: settlement file %s, line %d: %s" % (path, number, exc),
                              path, number) from None
    except UnicodeDecodeError as exc:
        line = number + 1
        raise SettlementError("posfast: settlement file %s, line %d or the next: bytes %r are not "
                              "%s text; give its encoding with --encoding (API: encoding=...)"
                              % (path, line, exc.object[exc.start:exc.end], exc.encoding),
                              path, line, None, exc.object[exc.start:exc.end]) from None


def _merge(parts, path, fmt, channel, notes=()) -> Settlement:
    """One Settlement of the Settlements of a statement's blocks (batch names renumbered)."""
    if not parts:
        return Settlement(path, np.zeros(0, SETTLEMENT_DTYPE), format=fmt, channel=channel,
                          notes=list(notes))
    names: dict = {}
    for part in parts:
        remap = np.zeros(len(part.batches) + 1, np.uint32)
        for k, name in enumerate(part.batches):
            remap[k + 1] = names.setdefault(name, len(names) + 1)
        part.rows["batch"] = remap[part.rows["batch"]]

    def joined(name):
        # a column at a time, each part's copy let go as soon as it is joined: the parts and
        # the whole are never both held (a million-row bill: 130 MB, not 260)
        arrays = [getattr(p, name) for p in parts]
        for p in parts:
            setattr(p, name, None)
        if arrays[0] is None:
            return None
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    has_fees = parts[0].has_fees
    columns = {name: joined(name) for name in ("rows", "order_ref", "host_ref", "tid", "voucher")}
    parts.clear()
    return Settlement(path, columns.pop("rows"), format=fmt, channel=channel,
                      batches=tuple(names), has_fees=has_fees, notes=list(notes), **columns)


def _header_positions(path, header_line, header, wanted, optional=()):
    """({canonical name: position}, {canonical name: header text}) of a header row."""
    clean = [h.strip().lstrip("\ufeff").lstrip("`") for h in header]
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
    return position, where


def _clean(values, strip=""):
    """Text values stripped of blanks (and of `strip` characters, e.g. WeChat's backticks):
    one join, replace and split, not a call per value."""
    joined = "\n".join(values)
    for char in strip:
        if char in joined:
            joined = joined.replace(char, "")
    out = joined.split("\n")
    if len(out) != len(values):             # a quoted value holding a line break
        return [v.strip().translate({ord(c): None for c in strip}) for v in values]
    if " " in joined or "\t" in joined or "\r" in joined:
        out = list(map(str.strip, out))
    return out


def _cells(block, i, strip=""):
    """Column `i` of a block's rows, cleaned (:func:`_clean`)."""
    return _clean([cells[i] for _, cells in block], strip)


class _RawLines:
    """The lines of a CSV statement, taken a block at a time: a block without quotes is
    split on commas at once (the way posfast's own CSV is read), others line by line."""

    def __init__(self, lines, path, first_line=1):
        self.lines, self.path, self.number = iter(lines), path, first_line - 1
        self.text = ""

    def rows(self):
        """(line, cells) one at a time (the header, a preamble), from where the lines are."""
        while True:
            raw = next(self.lines, None)
            if raw is None:
                return
            self.number += 1
            for row in _csv_stream(itertools.chain([raw], self._continuation(raw)), self.path,
                                   self.number):
                yield row

    def _continuation(self, raw):
        while raw.count('"') % 2:
            more = next(self.lines, None)
            if more is None:
                return
            self.number += 1
            raw = more
            yield more

    def header(self):
        return next(self.rows(), (self.number + 1, []))

    def chunks(self):
        """(first line number, lines) blocks; quoted line breaks kept inside one block."""
        while True:
            try:
                chunk = list(itertools.islice(self.lines, _BLOCK_ROWS))
            except UnicodeDecodeError as exc:
                line = self.number + 1
                raise SettlementError("posfast: settlement file %s, line %d or after: bytes %r are "
                                      "not %s text; give its encoding with --encoding"
                                      % (self.path, line, exc.object[exc.start:exc.end],
                                         exc.encoding), self.path, line) from None
            if not chunk:
                return
            first = self.number + 1
            self.number += len(chunk)
            text = "".join(chunk)
            while '"' in text and text.count('"') % 2:
                more = next(self.lines, None)
                if more is None:
                    break
                chunk.append(more)
                text += more
                self.number += 1
            self.text = text               # (the block's text, for a fast reader)
            yield first, chunk


def _stream_table(path, header_line, header, rows, wanted, optional=(), strip="", pad=False,
                  stop=None, fast=None):
    """_Table blocks of `rows` (an iterator of (line, cells)): the named columns only.  A
    row of another width than the header ends the rows where ``stop(line, cells, the row
    after it or None)`` says so (a summary), else it is padded (`pad`) or refused.
    `fast(first line, lines, their text, positions, width)` may read a block of `rows`
    (a _RawLines) from its bytes instead: what it returns (not None) is yielded as is."""
    position, where = _header_positions(path, header_line, header, wanted, optional)
    width = len(header)
    raw = rows if isinstance(rows, _RawLines) else None
    chunks = raw.chunks() if raw is not None else None
    rows = iter(rows) if raw is None else iter(())
    while True:
        if raw is not None:
            got = next(chunks, None)
            if got is None:
                return
            first, chunk = got
            done = fast(first, chunk, raw.text, position, width) if fast is not None else None
            if done is not None:
                yield done
                continue
            lines = [line.rstrip("\r\n") for line in chunk]
            commas = np.fromiter(map(str.count, lines, itertools.repeat(",")), np.int64, len(lines))
            if '"' not in "".join(lines) and (commas == width - 1).all():
                flat = ",".join(lines).split(",")
                columns = {name: _clean(flat[i::width], strip) for name, i in position.items()}
                yield _Table(path, list(range(first, first + len(lines))), columns, where)
                continue
            block = list(_csv_stream(chunk, path, first))     # quotes, blanks, a summary
            rows = raw.rows()                                  # what a summary reads after it
        else:
            block = list(itertools.islice(rows, _BLOCK_ROWS))
        if not block:
            if raw is not None:
                continue
            return
        widths = [len(cells) for _, cells in block]
        if widths.count(width) != len(widths):
            for k, (line, cells) in enumerate(block):
                if len(cells) == width:
                    continue
                after = block[k + 1] if k + 1 < len(block) else next(rows, None)
                if stop is not None and stop(line, cells, after):
                    del block[k:]
                    rows, chunks = iter(()), iter(())
                    break
                if pad and len(cells) < width:
                    cells.extend([""] * (width - len(cells)))
                    continue
                raise SettlementError("posfast: settlement file %s, line %d: %d fields, the header "
                                      "(line %d) has %d" % (path, line, len(cells), header_line,
                                                            width), path, line)
        if block:
            columns = {name: _cells(block, i, strip) for name, i in position.items()}
            yield _Table(path, [line for line, _ in block], columns, where)


def _encoded(table, name, size, ascii_only):
    """Byte strings of a text column, at most `size` bytes each; refusals name the value."""
    values = table.col(name)
    if not values:
        return np.zeros(0, "S1")
    codec = "ascii" if ascii_only else "utf-8"
    try:
        parts = "\n".join(values).encode(codec).split(b"\n")
        if len(parts) != len(values):       # a value holding a line break
            parts = [v.encode(codec) for v in values]
        out = np.array(parts)
    except UnicodeEncodeError:
        k = next(k for k, v in enumerate(values) if not v.isascii())
        raise _column_error(table.path, table.lines[k], table.header_name(name), values[k],
                            "holds characters that are not ASCII") from None
    if out.dtype.itemsize > size:
        k = int(np.argmax(np.char.str_len(out) > size))
        raise _column_error(table.path, table.lines[k], table.header_name(name), values[k],
                            "is longer than %d %s" % (size, "characters" if ascii_only else
                                                      "bytes (posfast keeps at most that)"))
    return out


def _text_array(table, name, size, ascii_only=True):
    return _encoded(table, name, size, ascii_only).astype("S%d" % size)


def _refs(table, name):
    return _encoded(table, name, 64, False) if name in table.columns else None


def _currencies(table, default=None):
    n = len(table.lines)
    if "currency" not in table.columns:
        return np.full(n, default or 156, np.uint16)
    alpha = _currency_codes()
    names, inverse = np.unique(np.array(table.col("currency"), dtype=str), return_inverse=True)
    codes = np.zeros(len(names), np.uint16)
    for k, value in enumerate(names.tolist()):         # a few distinct values
        text = value.strip().upper()
        code = int(text) if text.isdigit() else alpha.get(text, {"RMB": 156}.get(text))
        if code is None and not text and default:
            code = default
        if code is None:
            i = table.col("currency").index(value)
            raise _column_error(table.path, table.lines[i], table.header_name("currency"), value,
                                "is not an ISO 4217 currency code")
        codes[k] = code
    return codes[inverse.reshape(-1)]


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
        tid = _encoded(table, "terminal", 32, False)       # (as wide as its widest value)
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
    raw = decimal_units(table.col(name), _exponents(currency) + FEE_SCALE, table.path,
                        table.lines, table.header_name(name), blank=0)
    back = np.isin(kinds, [int(Kind.REFUND), int(Kind.VOID), int(Kind.REVERSAL)])
    return np.where(back, -np.abs(raw), np.abs(raw))


def _exponents(currency):
    """The decimal places of each row's currency (a lookup per distinct currency)."""
    codes, inverse = np.unique(currency, return_inverse=True)
    return np.array([exponent_of(int(c)) for c in codes.tolist()],
                    np.int64)[inverse.reshape(-1)]


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
#: Whether blocks are read from their bytes where they can be (tests compare both paths).
_FAST = True
_WECHAT_COLUMNS = {"time": "交易时间", "terminal": "设备号", "host_ref": "微信订单号",
                   "order_ref": "商户订单号", "status": "交易状态", "currency": "货币种类",
                   "settled": "应结订单金额", "fee": "手续费"}
_WECHAT_OPTIONAL = (("refund_host_ref", "微信退款单号"), ("refund_order_ref", "商户退款单号"),
                    ("refund", "退款金额"), ("mch", "商户号"))


def _wechat_block(table, path, rule):
    """One block of a WeChat bill: its Settlement part and its sums for the summary check."""
    status = table.col("status")
    if not set(status) <= {"SUCCESS", "REFUND", "REVOKED"}:     # (the first one named)
        for line, st in zip(table.lines, status):
            if st not in ("SUCCESS", "REFUND", "REVOKED"):
                raise _column_error(path, line, "交易状态", st, "is not SUCCESS, REFUND or REVOKED")
    status = np.array(status)
    refund = status == "REFUND"
    kinds = np.where(refund, int(Kind.REFUND), int(Kind.SALE)).astype(np.uint8)
    states = np.where(status == "REVOKED", int(State.REVERSED), int(State.APPROVED)).astype(np.uint8)
    # a refund line keys on the refund's own ids where the bill gives them
    for own, original in (("refund_host_ref", "host_ref"), ("refund_order_ref", "order_ref")):
        if own in table.columns and refund.any():
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
    success = status == "SUCCESS"
    sums = {"rows": len(kinds), "success": int(settled[success].sum()),
            "not_refund": int(settled[~refund].sum()), "all": int(settled.sum()),
            "refunded": int(np.abs(refunded[refund]).sum()), "fee": int(fee.sum())}
    return _build(table, kinds, ts, currency, amount, fee, states, channel="wechat",
                  fmt="wechat"), sums


class _Parsed:
    """A block a fast reader parsed whole: its Settlement part, sums and last line."""

    def __init__(self, part, sums, last_line):
        self.part, self.sums, self.last_line = part, sums, last_line


def _wechat_fast(path, rule):
    """The fast reader of a WeChat bill's blocks (see _stream_table): the exact result of
    _wechat_block from the block's bytes (:mod:`.tokens`), or None for the text path."""
    from . import tokens
    statuses = {b"SUCCESS": None, b"REFUND": int(Kind.REFUND), b"REVOKED": None}

    def read(first, chunk, text, position, width):
        if '"' in text:
            return None
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        block = tokens.Fields.of(text.encode("utf-8"), width, blank_lines=False)
        if block is None or len(block) != len(chunk):
            return None
        del text
        n = len(block)

        def cell(name, utf8=False):
            mat, length = block.column(position[name], backtick=True)
            if mat is None or not tokens.printable(mat, length, utf8) or (mat == 96).any():
                return None, length
            return mat, length

        got = tokens.distinct(*cell("status"))
        if got is None or not set(got[0]) <= set(statuses):
            return None
        names, inverse = got
        status = np.array([{b"SUCCESS": 0, b"REFUND": 1, b"REVOKED": 2}[v] for v in names],
                          np.int8)[inverse]
        refund = status == 1
        kinds = np.where(refund, int(Kind.REFUND), int(Kind.SALE)).astype(np.uint8)
        states = np.where(status == 2, int(State.REVERSED), int(State.APPROVED)).astype(np.uint8)
        refs = {}
        for name in ("host_ref", "order_ref"):
            mat, length = cell(name, True)
            if mat is None or mat.shape[1] > 64:
                return None
            refs[name] = tokens.byte_strings(mat, length)
        for own, original in (("refund_host_ref", "host_ref"), ("refund_order_ref", "order_ref")):
            if own in position and refund.any():
                mat, length = cell(own, True)
                if mat is None or mat.shape[1] > 64:
                    return None
                theirs = tokens.byte_strings(mat, length)
                mixed = np.where(refund & (theirs != b"") & (theirs != b"0"), theirs,
                                 refs[original])
                refs[original] = mixed.astype("S%d" % max(1, int(np.char.str_len(mixed).max())))
        if "currency" in position:
            got = tokens.distinct(*cell("currency"))
            if got is None:
                return None
            alpha = _currency_codes()
            codes = []
            for value in got[0]:
                text = value.decode("ascii").strip().upper()
                code = int(text) if text.isdigit() else alpha.get(text, {"RMB": 156}.get(text))
                if code is None and not text:
                    code = 156
                if code is None or code > 0xFFFF:
                    return None
                codes.append(code)
            currency = np.array(codes, np.uint16)[got[1]]
        else:
            currency = np.full(n, 156, np.uint16)
        def amounts(name, exponent, blank=None):
            got = tokens.fixed_decimals(*block.right(position[name], backtick=True), exponent,
                                        blank)
            return got if got is not None else tokens.decimals(*cell(name), exponent, blank)
        exps = _exponents(currency)
        settled = amounts("settled", exps)
        refunded = (amounts("refund", exps, blank=0) if "refund" in position
                    else np.zeros(n, np.int64))
        fee = amounts("fee", exps + FEE_SCALE, blank=0)
        ts = tokens.naive_times(*block.column(position["time"], backtick=True, zero=False))
        mat, length = cell("terminal")
        if settled is None or refunded is None or fee is None or ts is None or mat is None \
                or mat.shape[1] > 32:
            return None
        tid = tokens.byte_strings(mat, length)
        amount = np.where(refund, np.abs(refunded), np.abs(settled))
        back = np.isin(kinds, [int(Kind.REFUND), int(Kind.VOID), int(Kind.REVERSAL)])
        fee = np.where(back, -np.abs(fee), np.abs(fee))
        rows = np.zeros(n, SETTLEMENT_DTYPE)
        rows["line"] = np.arange(first, first + n)
        rows["kind"] = kinds
        rows["ts"] = rule.local_to_us(ts)
        rows["currency"] = currency
        rows["amount"] = amount
        rows["state"] = states
        rows["fee"] = fee
        mat, length = block.right(position["terminal"], backtick=True)
        digits, number = tokens.digit_cells(mat, length, 9)
        rows["terminal"] = np.where(digits, number, 0)
        success = status == 0
        sums = {"rows": n, "success": int(settled[success].sum()),
                "not_refund": int(settled[~refund].sum()), "all": int(settled.sum()),
                "refunded": int(np.abs(refunded[refund]).sum()), "fee": int(fee.sum())}
        part = Settlement(path, rows, order_ref=refs["order_ref"], host_ref=refs["host_ref"],
                          format="wechat", channel="wechat", has_fees=True, tid=tid)
        return _Parsed(part, sums, first + n - 1)
    return read


def _read_wechat(fh, path, rule):
    """WeChat Pay trade bill (v2 downloadbill, v3 tradebill; ALL, SUCCESS or REFUND)."""
    rows = _RawLines(fh, path)
    header_line, header = rows.header()
    if not header:
        raise SettlementError("posfast: settlement file %s is empty" % path, path, 1)
    summary = []

    def at_summary(line, cells, after):
        if cells[0].strip().lstrip("`") != "总交易单数":
            return False
        summary.extend([(line, cells), after])
        return True
    parts, sums = [], {}
    last_line = header_line
    for table in _stream_table(path, header_line, header, rows, _WECHAT_COLUMNS,
                               _WECHAT_OPTIONAL, strip="`", stop=at_summary,
                               fast=_wechat_fast(path, rule) if _FAST else None):
        if isinstance(table, _Parsed):
            part, got, last_line = table.part, table.sums, table.last_line
        else:
            part, got = _wechat_block(table, path, rule)
            last_line = table.lines[-1]
        parts.append(part)
        for key, value in got.items():
            sums[key] = sums.get(key, 0) + value
    if not summary:
        raise SettlementError("posfast: settlement file %s has no summary (总交易单数 ...) after "
                              "its rows: the bill is truncated; download it again" % path, path,
                              last_line)
    (s_line, titles), values = summary
    if values is None:
        raise SettlementError("posfast: settlement file %s, line %d: the summary header has no "
                              "values after it: the bill is truncated" % (path, s_line),
                              path, s_line)
    got = dict(zip([t.strip().lstrip("`") for t in titles], [v.strip().lstrip("`")
                                                              for v in values[1]]))
    v_line = values[0]

    def stated(title, exponent=2):
        return int(decimal_units([got[title]], exponent, path, [v_line], title)[0])
    if "总交易单数" in got:
        _check_total(path, v_line, "总交易单数 (rows)", int(got["总交易单数"] or 0),
                     sums.get("rows", 0))
    if "应结订单总金额" in got:
        # bills differ on whether refund and revoked lines count in it: any of these agrees
        if stated("应结订单总金额") not in {sums.get(k, 0) for k in ("success", "not_refund", "all")}:
            _check_total(path, v_line, "应结订单总金额", stated("应结订单总金额"), sums.get("success", 0))
    if "退款总金额" in got:
        _check_total(path, v_line, "退款总金额", stated("退款总金额"), sums.get("refunded", 0))
    if "手续费总金额" in got:
        _check_total(path, v_line, "手续费总金额", stated("手续费总金额", 2 + FEE_SCALE),
                     sums.get("fee", 0))
    return _merge(parts, path, "wechat", "wechat",
                  ["summary (line %d) agrees with the %d rows" % (s_line, sums.get("rows", 0))])


# ------------------------------------------------------------------ Alipay
_ALIPAY_COLUMNS = {"host_ref": "支付宝交易号", "order_ref": "商户订单号", "type": "业务类型",
                   "time": ("完成时间", "创建时间"), "amount": "订单金额（元）"}
_ALIPAY_OPTIONAL = (("terminal", "终端号"), ("fee", "服务费（元）"),
                    ("refund_order_ref", "退款批次号/请求号"), ("store", "门店编号"),
                    ("received", "商家实收（元）"))
_TOTAL = re.compile(r"#\s*(交易|退款)合计[：:]\s*(\d+)笔[，,]\s*商家实收(?:退款)?共\s*(-?[\d.]+)\s*元")


def _alipay_block(table, path, rule):
    kinds = _lookup(table, "type", {"交易": Kind.SALE, "退款": Kind.REFUND}, "业务类型")
    refund = kinds == Kind.REFUND
    if "refund_order_ref" in table.columns and refund.any():
        table.columns["order_ref"] = [r if k and r else o for o, r, k in zip(
            table.col("order_ref"), table.col("refund_order_ref"), refund.tolist())]
    currency = np.full(len(kinds), 156, np.uint16)
    signed = decimal_units(table.col("amount"), 2, path, table.lines, "订单金额（元）")
    fee = _fee_units(table, "fee", currency, kinds) if "fee" in table.columns else None
    ts = _parse_times(path, table.lines, table.col("time"), rule)
    received = (decimal_units(table.col("received"), 2, path, table.lines, "商家实收（元）", blank=0)
                if "received" in table.columns else signed)
    sums = {(int(k), "rows"): int((kinds == k).sum()) for k in (Kind.SALE, Kind.REFUND)}
    sums.update({(int(k), "received"): int(received[kinds == k].sum())
                 for k in (Kind.SALE, Kind.REFUND)})
    return _build(table, kinds, ts, currency, np.abs(signed), fee, channel="alipay",
                  fmt="alipay"), sums


def _read_alipay(fh, path, rule):
    """Alipay 业务明细 (trade) bill: `#` preamble, header, rows, `#---业务明细列表结束`, totals."""
    lines = iter(fh)
    number = 0
    for raw in lines:
        number += 1
        if "支付宝交易号" in raw and not raw.lstrip().startswith("#"):
            header_text, header_line = raw, number
            break
    else:
        raise SettlementError("posfast: settlement file %s: no header with 支付宝交易号: not an "
                              "Alipay 业务明细 bill" % path, path, 1)
    trailer = []

    def body_lines():
        nonlocal number
        for raw in lines:
            number += 1
            if raw.lstrip().startswith("#"):
                trailer.append((number, raw))
                return
            yield raw
    rows = _RawLines(itertools.chain([header_text], body_lines()), path, first_line=header_line)
    _, header = rows.header()
    parts, sums = [], {}
    for table in _stream_table(path, header_line, header, rows, _ALIPAY_COLUMNS, _ALIPAY_OPTIONAL):
        part, got = _alipay_block(table, path, rule)
        parts.append(part)
        for key, value in got.items():
            sums[key] = sums.get(key, 0) + value
    if not trailer or "结束" not in trailer[0][1]:
        raise SettlementError("posfast: settlement file %s: no '#-----业务明细列表结束' after the rows: "
                              "the bill is truncated; download it again" % path, path, number)
    for raw in lines:
        number += 1
        trailer.append((number, raw))
    checked = 0
    for line, raw in trailer[1:]:
        match = _TOTAL.match(raw.strip())
        if not match:
            continue
        which = int(Kind.SALE if match.group(1) == "交易" else Kind.REFUND)
        _check_total(path, line, "%s合计 (rows)" % match.group(1), int(match.group(2)),
                     sums.get((which, "rows"), 0))
        stated = int(decimal_units([match.group(3)], 2, path, [line], "商家实收")[0])
        _check_total(path, line, "%s合计 商家实收" % match.group(1), stated,
                     sums.get((which, "received"), 0))
        checked += 1
    count = sum(v for (_, what), v in sums.items() if what == "rows")
    notes = ["totals (#交易合计 / #退款合计) agree with the %d rows" % count] if checked else \
        ["the bill states no #交易合计 totals: the rows were not checked against any"]
    return _merge(parts, path, "alipay", "alipay", notes)


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


def _payment_lines(table, column, payments, others):
    """The _Table of the lines whose `column` names a payment type; the others counted."""
    keep = []
    for k, value in enumerate(table.col(column)):
        if value in payments:
            keep.append(k)
        else:
            others[value] = others.get(value, 0) + 1
    if len(keep) == len(table.lines):
        return table
    return _Table(table.path, [table.lines[k] for k in keep],
                  {name: [v[k] for k in keep] for name, v in table.columns.items()}, table.where)


def _payment_blocks(path, header_line, header, rows, wanted, optional, column, payments,
                    others):
    """(table, kinds, currency, exponents) of each block's payment lines (Adyen's and
    Stripe's reports mix payments with fee and payout lines: those are counted in `others`)."""
    for table in _stream_table(path, header_line, header, rows, wanted, optional):
        table = _payment_lines(table, column, payments, others)
        if table.lines:
            kinds = _lookup(table, column, payments, "payment type")
            currency = _currencies(table)
            yield table, kinds, currency, _exponents(currency)


def _not_payments(others) -> list:
    return ["%d %s line(s) are not payments (not matched)" % (n, t) for t, n in sorted(others.items())]


def _read_adyen(fh, path, rule):
    rows = _RawLines(fh, path)
    header_line, header = rows.header()
    parts, others = [], {}
    for table, kinds, currency, exps in _payment_blocks(path, header_line, header, rows,
                                                        _ADYEN_COLUMNS, _ADYEN_OPTIONAL, "type",
                                                        _ADYEN_PAYMENTS, others):
        debit = decimal_units(table.col("debit"), exps, path, table.lines, "Gross Debit (GC)",
                              blank=0)
        credit = decimal_units(table.col("credit"), exps, path, table.lines, "Gross Credit (GC)",
                               blank=0)
        fee = None
        fee_parts = [name for name in ("commission", "markup", "scheme", "interchange")
                     if name in table.columns]
        if fee_parts:
            fee = sum(decimal_units(table.col(p), exps + FEE_SCALE, path, table.lines,
                                    table.header_name(p), blank=0) for p in fee_parts)
            fee = np.where(kinds == Kind.REFUND, -np.abs(fee), np.abs(fee))
        ts = _zone_times(path, table, "time",
                         table.col("zone") if "zone" in table.columns else None)
        parts.append(_build(table, kinds, ts, currency, np.abs(credit - debit), fee,
                            batch=table.col("batch") if "batch" in table.columns else None,
                            channel="adyen", fmt="adyen"))
    return _merge(parts, path, "adyen", "adyen", _not_payments(others))


_STRIPE_COLUMNS = {"time": "created_utc", "currency": "currency", "gross": "gross", "fee": "fee",
                   "category": "reporting_category", "host_ref": ("payment_intent_id", "charge_id",
                                                                  "source_id")}
_STRIPE_OPTIONAL = (("batch", "automatic_payout_id"),)
_STRIPE_PAYMENTS = {"charge": Kind.SALE, "refund": Kind.REFUND, "partial_capture_reversal":
                    Kind.REFUND}
#: Where Stripe's itemized report carries the merchant's order reference (payment metadata).
STRIPE_ORDER_KEYS = ("order_ref", "order_id", "order", "reference")


def _read_stripe(fh, path, rule):
    rows = _RawLines(fh, path)
    header_line, header = rows.header()
    meta = [h.strip() for h in header if h.strip().startswith("payment_metadata[")]
    order = next((m for key in STRIPE_ORDER_KEYS for m in meta if m == "payment_metadata[%s]" % key),
                 None)
    optional = _STRIPE_OPTIONAL + ((("order_ref", order),) if order else ())
    parts, others = [], {}
    for table, kinds, currency, exps in _payment_blocks(path, header_line, header, rows,
                                                        _STRIPE_COLUMNS, optional, "category",
                                                        _STRIPE_PAYMENTS, others):
        gross = decimal_units(table.col("gross"), exps, path, table.lines, "gross")
        fee = _fee_units(table, "fee", currency, kinds)
        ts = _parse_times(path, table.lines, table.col("time"), DayRule(utc_offset=0))
        parts.append(_build(table, kinds, ts, currency, np.abs(gross), fee,
                            batch=table.col("batch") if "batch" in table.columns else None,
                            channel="stripe", fmt="stripe"))
    notes = _not_payments(others)
    if order is None:
        notes.append("no payment_metadata[order_ref|order_id|order|reference] column: rows match "
                     "by payment_intent_id only")
    return _merge(parts, path, "stripe", "stripe", notes)


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


def _read_mapped(source, path, rule, column_map, encoding=None):
    spec = load_column_map(column_map)
    columns = spec["columns"]
    options = spec.get("statement", {})
    head = source.peek(4)[:4] if hasattr(source, "peek") else b""
    if head == b"PK\x03\x04":                      # a workbook (other zips were opened)
        rows = iter(_sheet_rows(source.read(), path, options.get("sheet")))
    else:
        fh = io.TextIOWrapper(source, encoding=_codec_name(encoding or options.get("encoding")),
                              newline="")
        rows = _csv_stream(fh, path)
    titles = set(columns.values())
    for header_line, header in rows:
        if titles <= {c.strip().strip("\t").lstrip("`'") for c in header}:
            break
    else:
        raise SettlementError("posfast: settlement file %s: no header row holds every column the map "
                              "%s names (%s)" % (path, os.path.basename(spec["_where"]),
                                                 ", ".join(sorted(titles))), path, 1)
    header = [c.strip().strip("\t").lstrip("`'") for c in header]
    stop = options.get("stop_at")
    if stop:
        rows = itertools.takewhile(lambda r: not (r[1] and r[1][0].strip().startswith(stop)), rows)
    types = {str(k): _KINDS[str(v)] for k, v in spec.get("types", {}).items()}
    default_currency = _currency_codes().get(str(options.get("currency", "CNY")).upper())
    unit = options.get("amount_unit", "major")
    fmt = options.get("time_format")
    parts = []
    for table in _stream_table(path, header_line, header, rows, dict(columns), strip="`'",
                               pad=True):
        if "type" in table.columns:
            kinds = _lookup(table, "type", types or dict(_KINDS), "type")
        else:
            kinds = np.full(len(table.lines), int(Kind.SALE), np.uint8)
        currency = _currencies(table, default_currency)
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
        if fmt:
            parsed = []
            for line, value in zip(table.lines, stamps):
                try:
                    parsed.append(_dt.datetime.strptime(value, fmt).isoformat(sep=" "))
                except ValueError:
                    raise _column_error(path, line, columns.get("time", columns.get("date")),
                                        value, "does not match time_format %r" % fmt) from None
            stamps = parsed
        ts = _parse_times(path, table.lines, stamps, rule)
        parts.append(_build(table, kinds, ts, currency, np.abs(signed), fee,
                            batch=table.col("batch") if "batch" in table.columns else None,
                            channel=options.get("channel"), fmt="mapped"))
    return _merge(parts, path, "mapped", options.get("channel"),
                  ["read through column map %s" % os.path.basename(spec["_where"])])


# ------------------------------------------------------------------ entry point
def _codec_name(encoding):
    import codecs
    name = encoding or "utf-8-sig"
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise SettlementError("posfast: unknown encoding %r for the settlement file (try utf-8, "
                              "gbk, gb18030, latin-1)" % name, None, None, None, name) from None
    return "utf-8-sig" if info.name in ("utf-8", "utf-8-sig") else info.name


def _binary(source, path):
    """(a buffered binary stream, its name) of a statement: a path, a stream, or the
    statement inside a zip.  Text streams are encoded back to UTF-8."""
    if isinstance(source, (str, os.PathLike)):
        handle = open(source, "rb")
    else:
        data = source.read()
        handle = io.BufferedReader(io.BytesIO(data.encode("utf-8") if isinstance(data, str)
                                              else data))
    if handle.peek(4)[:4] == b"PK\x03\x04":
        data = handle.read()
        handle.close()
        data, path = _unzip(data, path)
        handle = io.BufferedReader(io.BytesIO(data))
    return handle, path


def _sniff_alipay(handle):
    """GB18030 (what Alipay writes) unless the first bytes are UTF-8 with Chinese in them."""
    head = handle.peek(1 << 16)[:1 << 16]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:
            return "gb18030"
    return "utf-8-sig" if not head.isascii() else "gb18030"


def read_statement(source, fmt, path, rule, encoding=None, column_map=None,
                   file_date=None) -> Settlement:
    """Parse a statement of format `fmt` (not ``posfast``: settlement.py reads that one).
    It is read as a stream, a block of lines at a time."""
    handle, path = _binary(source, path)
    with handle:
        if fmt == "mapped":
            if column_map is None:
                raise SettlementError("posfast: the mapped format needs a column map "
                                      "(column_map=..., --map FILE.toml)", path)
            return _read_mapped(handle, path, rule, column_map, encoding)
        codec = _codec_name(encoding or (_sniff_alipay(handle) if fmt == "alipay" else None))
        fh = io.TextIOWrapper(handle, encoding=codec, newline="")
        readers = {"wechat": _read_wechat, "alipay": _read_alipay, "adyen": _read_adyen,
                   "stripe": _read_stripe,
                   "unionpay": lambda f, p, r: _read_unionpay(f.read(), p, r, file_date)}
        if fmt not in readers:
            raise ValueError("format must be auto or one of %s, not %r" % (", ".join(FORMATS), fmt))
        try:
            return readers[fmt](fh, path, rule)
        except UnicodeDecodeError as exc:      # in a preamble or trailer (rows name their line)
            raise SettlementError("posfast: settlement file %s: bytes %r are not %s text; give its "
                                  "encoding with --encoding (API: encoding=...)"
                                  % (path, exc.object[exc.start:exc.end], codec), path, None, None,
                                  exc.object[exc.start:exc.end]) from None
