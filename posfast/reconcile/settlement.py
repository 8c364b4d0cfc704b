"""Acquirer settlement files (CSV): :func:`read_settlement` -> :class:`Settlement`.

Read block by block (a file of millions of lines never exists as one string),
columns parsed with numpy; a malformed file raises :class:`SettlementError`
naming the line, the column and the value.
"""
from __future__ import annotations

import csv
import io
import os
from itertools import compress

import numpy as np

from ..errors import SettlementError
from ..records import KIND_SIGN_TABLE, RECEIPT_KINDS, DayRule, Kind, State
from . import formats, tokens
from .rows import (OPTIONAL_COLUMNS, SETTLEMENT_DTYPE, Settlement, _column_error, _currency_codes,
                   _find_bad, _parse_times, release_heap)

__all__ = ["OPTIONAL_COLUMNS", "SETTLEMENT_COLUMNS", "SETTLEMENT_DTYPE", "Settlement", "SettlementError",
           "read_settlement"]

SETTLEMENT_COLUMNS = ("terminal", "time", "rrn", "auth_code", "amount", "currency", "type")
_ALIASES = {"auth": "auth_code", "authcode": "auth_code", "auth_no": "auth_code",
            "approval_code": "auth_code", "timestamp": "time", "datetime": "time",
            "date_time": "time", "kind": "type", "txn_type": "type", "transaction_type": "type",
            "terminal_id": "terminal", "tid": "terminal", "reference": "rrn",
            "retrieval_reference_number": "rrn", "ref_no": "rrn"}
_US = 1_000_000


#: Characters of text parsed at a time: the file is read, split and converted
#: block by block, so only one block's Python strings exist at once and the
#: parsed rows (SETTLEMENT_DTYPE, 45 bytes each) are all that grows with the file.
_BLOCK_CHARS = 1 << 21


def _codec(encoding):
    """The codec name to decode with: UTF-8 (the default) strips a byte-order mark."""
    import codecs
    name = "utf-8" if encoding is None else str(encoding)
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise SettlementError("posfast: unknown encoding %r for the settlement file (try utf-8, "
                              "gbk, gb18030, latin-1, cp1252)" % name, None, None, None,
                              name) from None
    return "utf-8-sig" if info.name in ("utf-8", "utf-8-sig") else info.name


def read_settlement(source, format="auto", utc_offset=0, path=None, encoding=None,
                    column_map=None, file_date=None) -> Settlement:
    """Parse a statement (a path, or an open file) of `format`.

    `format`: ``"auto"`` (detected from the header or preamble), ``"posfast"`` (the CSV
    below), ``"wechat"``, ``"alipay"``, ``"unionpay"``, ``"mapped"`` (any statement through
    `column_map`, a TOML file or a dict; CSV or XLSX), ``"adyen"`` or ``"stripe"`` (see
    :mod:`posfast.reconcile.formats`).  `utc_offset` (minutes, or a DayRule: its fixed
    offset or its time zone) is the local time of rows without an offset.  `encoding` is
    the file's text encoding (default UTF-8, with or without a byte-order mark; Alipay
    bills GB18030; e.g. ``"gbk"`` for Chinese bank exports).  `file_date` gives a
    UnionPay file's date where its name does not.

    The posfast CSV: columns terminal, time, rrn, auth_code, amount (integer minor units),
    currency, type, and optionally host_ref, order_ref, fee and batch.  Line endings may be
    LF, CRLF or CR alone.  It is read in blocks: memory grows with the
    parsed rows only, not with the text.  Raises :class:`SettlementError` with line,
    column and value on the first malformed value; never returns part of a file.

    >>> import io
    >>> s = read_settlement(io.StringIO("terminal,time,rrn,auth_code,amount,currency,type\\n"
    ...                                 "3,2026-11-20 13:45:12,123456789012,A1B2C3,1250,156,sale\\n"),
    ...                     utc_offset=480)
    >>> s.rows[["line", "terminal", "amount", "rrn"]].tolist()
    [(2, 3, 1250, b'123456789012')]
    >>> read_settlement(io.StringIO("terminal,time,rrn,auth_code,amount,currency,type\\n"
    ...                             "3,2026-11-20 13:45:12,1,,12.50,156,sale\\n"))
    Traceback (most recent call last):
    ...
    posfast.errors.SettlementError: posfast: settlement file <stream>, line 2, column amount: '12.50' is not an integer number of minor units (write 1250 for 12.50)
    """
    try:
        return _read_any(source, format, utc_offset, path, encoding, column_map, file_date)
    finally:
        release_heap()        # the blocks' freed buffers: not kept resident after the read


def _read_any(source, format, utc_offset, path, encoding, column_map, file_date) -> Settlement:
    if isinstance(format, (int, DayRule)) and not isinstance(format, bool):
        format, utc_offset = "auto", format            # read_settlement(path, rule): 0.1's call
    rule = (utc_offset if isinstance(utc_offset, DayRule) else
            DayRule(utc_offset=int(getattr(utc_offset, "offset_minutes", utc_offset))))
    fmt = str(format).lower()
    if fmt not in ("auto",) + formats.FORMATS:
        raise ValueError("format must be auto or one of %s, not %r"
                         % (", ".join(formats.FORMATS), format))
    named = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
    path = path or named or getattr(source, "name", "<stream>")
    if fmt == "auto" and column_map is not None:
        fmt = "mapped"
    if fmt == "auto":
        if named is None:
            text = source.read()
            if not isinstance(text, str):
                raise TypeError("read_settlement(format='auto') reads text streams or paths; give "
                                "format= for a binary stream")
            source, head = io.StringIO(text), text[:1 << 16]
        else:
            head = formats.head_text(named, path, None if encoding is None else _codec(encoding))
        fmt = formats.detect_format(head)
        first_line = head.lstrip("\ufeff").strip().splitlines()[0].lower() if head.strip() else ""
        if fmt is None and (not first_line or any(
                name in first_line for name in SETTLEMENT_COLUMNS + tuple(_ALIASES))):
            fmt = "posfast"       # empty, or a posfast header lacking a column: its own refusal
        if fmt is None:
            first = head.splitlines()[0][:120] if head.strip() else ""
            raise SettlementError(
                "posfast: settlement file %s: its format is not one posfast recognises (first "
                "line %r); give it: --format posfast|wechat|alipay|unionpay|adyen|stripe, or "
                "--format mapped --map COLUMNS.toml for another bank's statement"
                % (path, first), path, 1, None, first)
    if fmt != "posfast":
        return formats.read_statement(source, fmt, path, rule, encoding=encoding,
                                      column_map=column_map, file_date=file_date)
    if named is not None:
        codec = _codec(encoding)
        try:
            with open(source, encoding=codec, newline="") as handle:
                return _read_settlement(handle, path, rule)
        except UnicodeDecodeError as exc:
            raise _undecodable(path, codec, encoding, exc) from None
    return _read_settlement(source, path, rule)


def _undecodable(path, codec, asked, exc):
    """The error for a file that is not text in `codec`: names the first bad line
    (found by decoding the file again line by line) and suggests --encoding."""
    line, bad = None, exc.object[exc.start:exc.end]
    try:
        with open(path, "rb") as handle:
            number = 0
            for raw in handle:
                for piece in raw.rstrip(b"\n").rstrip(b"\r").split(b"\r"):
                    number += 1
                    try:
                        piece.decode(codec)
                    except UnicodeDecodeError as err:
                        line, bad = number, piece[err.start:err.end]
                        break
                if line is not None:
                    break
    except OSError:
        pass
    name = {"utf-8-sig": "UTF-8"}.get(codec, codec)
    hint = ("it may be in another encoding: give it with --encoding (e.g. --encoding gbk for a "
            "Chinese bank export; API: read_settlement(..., encoding='gbk'))" if asked is None
            else "check the --encoding given (%s)" % asked)
    return SettlementError("posfast: settlement file %s%s: bytes %r are not %s text; %s"
                           % (path, "" if line is None else ", line %d" % line, bytes(bad), name,
                              hint), path, line, None, bytes(bad))


def _text_blocks(handle):
    """(first line number, text) of blocks of whole lines, newlines made "\\n" (LF,
    CRLF and CR alone all end a line).  A block never ends inside a quoted field."""
    line, carry = 1, ""
    while True:
        chunk = handle.read(_BLOCK_CHARS)
        if not isinstance(chunk, str):
            raise TypeError("read_settlement reads text: open the file in text mode, or give "
                            "its path (and encoding=...)")
        text = carry + chunk
        if not chunk:
            if text:
                yield line, text.replace("\r\n", "\n").replace("\r", "\n")
            return
        # a CR at the end may be the first half of a CRLF: keep it for the next block
        cut = len(text) - 1 if text.endswith("\r") else len(text)
        end = max(text.rfind("\n", 0, cut), text.rfind("\r", 0, cut)) + 1
        if end <= 0 or ('"' in text and text.count('"', 0, end) % 2):
            carry = text                   # no whole line yet, or inside a quoted field
            continue
        block, carry = text[:end], text[end:]
        if "\r" in block:
            block = block.replace("\r\n", "\n").replace("\r", "\n")
        yield line, block
        line += block.count("\n")


def _split_block(text, line0, path, width, header_line):
    """(header or None, its line, data line numbers, columns) of one block of text.

    `width` is None until the header is found (then the block's first non-blank
    row is the header).  Blocks without quotes are split with str.split (several
    times faster than the csv module, same result); others go through csv."""
    header = None
    if '"' not in text:
        split = text.split("\n")
        # map over C functions, not a loop of tuples: a block holds ~50,000 lines
        kept = np.fromiter(map(bool, map(str.strip, split)), bool, len(split))
        numbers = np.flatnonzero(kept) + line0
        data = list(compress(split, kept)) if not kept.all() else split
        del split
        if width is None:
            if not len(data):
                return None, 0, [], []
            header_line, first = int(numbers[0]), data[0]
            numbers, data = numbers[1:], data[1:]
            header = first.split(",")
            width = len(header)
        lines = numbers.tolist()
        commas = np.fromiter(map(str.count, data, [","] * len(data)), np.int64, len(data))
        if (commas != width - 1).any():
            i = int(np.argmax(commas != width - 1))
            raise SettlementError("posfast: settlement file %s, line %d: %d fields, the header "
                                  "(line %d) has %d" % (path, lines[i], commas[i] + 1, header_line,
                                                        width), path, lines[i])
        cells = ",".join(data).split(",") if data else []
        return header, header_line, lines, [cells[k::width] for k in range(width)]
    reader = csv.reader(io.StringIO(text))
    lines, records = [], []
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if width is None:
                header, header_line, width = row, line0 - 1 + reader.line_num, len(row)
                continue
            if len(row) != width:
                number = line0 - 1 + reader.line_num
                raise SettlementError("posfast: settlement file %s, line %d: %d fields, the header "
                                      "(line %d) has %d" % (path, number, len(row), header_line,
                                                            width), path, number)
            lines.append(line0 - 1 + reader.line_num)
            records.append(row)
    except csv.Error as exc:
        number = line0 - 1 + reader.line_num
        raise SettlementError("posfast: settlement file %s, line %d: %s" % (path, number, exc),
                              path, number) from None
    columns = [list(c) for c in zip(*records)] if records else [[] for _ in range(width or 0)]
    return header, header_line, lines, columns


def _column_names(header, header_line, path):
    """The SETTLEMENT_COLUMNS position of each column; refuses a header that lacks
    a column or names one twice (directly, or through an alias)."""
    if header:
        header = [header[0].lstrip("\ufeff")] + list(header[1:])
    keys = [h.strip().lower().replace(" ", "_").replace("-", "_") for h in header]
    names = [_ALIASES.get(k, k) for k in keys]
    where = {}
    for i, name in enumerate(names):
        if name not in SETTLEMENT_COLUMNS and name not in OPTIONAL_COLUMNS:
            continue
        if name in where:
            j = where[name]
            raise SettlementError(
                "posfast: settlement file %s, line %d: the header names column %s twice: %r "
                "(field %d) and %r (field %d); keep one of them, or rename the other"
                % (path, header_line, name, header[j].strip(), j + 1, header[i].strip(), i + 1),
                path, header_line, name, (header[j].strip(), header[i].strip()))
        where[name] = i
    missing = [c for c in SETTLEMENT_COLUMNS if c not in where]
    if missing:
        raise SettlementError("posfast: settlement file %s, line %d: header lacks column(s) %s; "
                              "columns are %s" % (path, header_line, ", ".join(missing),
                                                  ",".join(SETTLEMENT_COLUMNS)),
                              path, header_line, missing[0])
    return where


class _Rows:
    """The parsed rows of a file, block after block, in one array that grows.  Its size is
    guessed from the file's size and the first block's lines, generously: zeroed pages
    that are never written cost no memory, where a list of blocks concatenated at the end
    would hold the rows twice."""

    def __init__(self, file_chars):
        self.file_chars, self.rows, self.used = file_chars, None, 0

    def reserve(self, n, block_chars):
        """The next `n` rows of the array, to be filled in place (:meth:`commit` keeps them)."""
        if self.rows is None:
            guess = (int(self.file_chars * 1.25 * n / max(block_chars, 1)) + 1024
                     if self.file_chars else n)
            self.rows = np.zeros(max(guess, n), SETTLEMENT_DTYPE)
        if self.used + n > len(self.rows):
            grown = np.zeros(max(2 * len(self.rows), self.used + n), SETTLEMENT_DTYPE)
            grown[:self.used] = self.rows[:self.used]
            self.rows = grown
        return self.rows[self.used:self.used + n]

    def commit(self, n):
        self.used += n

    def add(self, block_rows, block_chars):
        n = len(block_rows)
        self.reserve(n, block_chars)[:] = block_rows
        self.commit(n)

    def result(self):
        return np.zeros(0, SETTLEMENT_DTYPE) if self.rows is None else self.rows[:self.used]


def _read_settlement(handle, path, rule) -> Settlement:
    header = where = width = None
    header_line = 0
    try:
        file_chars = os.fstat(handle.fileno()).st_size
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        file_chars = 0
    parts = _Rows(file_chars)
    refs = {"host_ref": [], "order_ref": []}
    batches: dict = {}
    for line0, text in _text_blocks(handle):
        fast = _fast_block(text, line0, path, width, header_line, where, rule, batches, parts)
        if fast is not None:
            found, header_line, where, n, block_refs = fast
            if found is not None:
                header, width = found, len(found)
            for name, values in block_refs.items():
                refs[name].append(values)
            parts.commit(n)
            del text, fast
            continue
        found, header_line, lines, columns = _split_block(text, line0, path, width, header_line)
        if found is not None:
            header, width = found, len(found)
            where = _column_names(header, header_line, path)
        if lines:
            col = {name: columns[i] for name, i in where.items()}
            rows = _settlement_rows(col, lines, path, rule)
            _optional_columns(rows, col, lines, path, refs, batches)
            parts.add(rows, len(text))
            del rows, col
        del text, lines, columns
    if header is None:
        raise SettlementError("posfast: settlement file %s is empty; it needs a header row: %s"
                              % (path, ",".join(SETTLEMENT_COLUMNS)), path, 1)
    given = {name: (np.concatenate(v) if len(v) > 1 else v[0]) if name in where else None
             for name, v in refs.items() if v or name not in where}
    return Settlement(path, parts.result(), order_ref=given.get("order_ref"),
                      host_ref=given.get("host_ref"), batches=tuple(batches),
                      has_fees="fee" in where)


def _fast_block(text, line0, path, width, header_line, where, rule, batches, parts):
    """(header or None, its line, column positions, rows, {ref: values}) of a block read
    from its bytes with numpy (:mod:`.tokens`) into the next rows of `parts` (a _Rows;
    :meth:`_Rows.commit` keeps them), the exact result of the text path; None
    where the block needs the text path (quotes, odd widths, blanks in cells, other time
    shapes, anything out of range: that path accepts it or names the bad value)."""
    if '"' in text:
        return None
    header = None
    if width is None:
        pos, number = 0, line0
        while True:
            end = text.find("\n", pos)
            piece = text[pos:] if end < 0 else text[pos:end]
            if piece.strip():
                break
            if end < 0:
                return None
            pos, number = end + 1, number + 1
        header, header_line = piece.split(","), number
        width = len(header)
        rest = "" if end < 0 else text[end + 1:]
        first = number + 1
    else:
        rest, first = text, line0
    block = tokens.Fields.of(rest.encode("utf-8"), width)
    if block is None:
        return None
    if header is not None:
        where = _column_names(header, header_line, path)
    n = len(block)
    if not n:
        return header, header_line, where, 0, {}
    rows = parts.reserve(n, len(text))
    refs = _fast_rows(block, where, rule, batches, rows)
    if refs is None:
        return None
    rows["line"] = block.lines + first
    return header, header_line, where, n, refs


def _fast_rows(block, where, rule, batches, rows):
    """Fill `rows` (SETTLEMENT_DTYPE, every field written) from a tokenised block; its
    references, or None."""
    refs: dict = {}
    terminal = tokens.integers(*block.right(where["terminal"]), 0, 2**32 - 1)
    amount = tokens.signed_integers(*block.right(where["amount"]))
    if terminal is None or amount is None:
        return None
    rows["terminal"] = terminal
    for name, table in (("type", _kind_of), ("currency", _currency_of)):
        got = tokens.distinct(*block.column(where[name]))
        if got is None:
            return None
        values, inverse = got
        codes = []
        for value in values:
            code = table(value.decode("utf-8").strip())
            if code is None:
                return None
            codes.append(code)
        rows["kind" if name == "type" else "currency"] = np.array(codes, np.int64)[inverse]
    negative = amount < 0
    if negative.any() and (negative & (KIND_SIGN_TABLE[rows["kind"]] >= 0)).any():
        return None
    rows["amount"] = np.abs(amount)
    for name, size in (("rrn", 12), ("auth_code", 6)):
        mat, length = block.column(where[name])
        if mat is None or mat.shape[1] > size or not tokens.printable(mat, length):
            return None
        rows[name] = tokens.byte_strings(mat, length, size)
    ts = tokens.naive_times(*block.column(where["time"], zero=False))
    if ts is None:
        return None
    for name in ("host_ref", "order_ref"):
        if name in where:
            mat, length = block.column(where[name])
            if mat is None or mat.shape[1] > 64 or not tokens.printable(mat, length, True):
                return None
            refs[name] = tokens.byte_strings(mat, length)
    if "fee" in where:
        from .amounts import FEE_SCALE
        fee = tokens.signed_integers(*block.right(where["fee"]), blank=0)
        if fee is None or (np.abs(fee) >= 10**15).any():
            return None
        rows["fee"] = fee * 10**FEE_SCALE
    if "batch" in where:
        mat, length = block.column(where["batch"])
        if mat is None:
            return None
        values = [v.decode("utf-8") for v in tokens.byte_strings(mat, length).tolist()]
        for value in set(values):
            if value.strip() and value.strip() not in batches:
                batches[value.strip()] = len(batches) + 1
        rows["batch"] = [batches.get(v.strip(), 0) for v in values]
    else:
        rows["batch"] = 0
    if "fee" not in where:
        rows["fee"] = 0
    rows["ts"] = rule.local_to_us(ts)
    rows["state"] = int(State.APPROVED)
    return refs


def _kind_of(text):
    name = text.lower().replace("-", "_")
    kind = Kind.__members__.get({"pre_auth": "preauth"}.get(name, name).upper())
    return int(kind) if kind in RECEIPT_KINDS else None


_ALPHA: dict = {}


def _currency_of(text):
    if text.isdigit() and len(text) <= 3:
        return int(text)
    if not _ALPHA:
        _ALPHA.update(_currency_codes())
    return _ALPHA.get(text.upper())


def _byte_strings(values):
    """UTF-8 bytes of each text value, stripped (one join, encode and split: no loop)."""
    joined = "\n".join(values)
    if " " in joined or "\t" in joined:
        joined = "\n".join(v.strip() for v in values)
    return joined.encode("utf-8").split(b"\n") if values else []


def _optional_columns(rows, col, lines, path, refs, batches):
    """host_ref, order_ref (beside the rows), fee (integer minor units), batch of a block."""
    for name in ("host_ref", "order_ref"):
        if name in col:
            values = np.array(_byte_strings(col[name]))
            if values.dtype.itemsize > 64:
                i = int(np.argmax(np.char.str_len(values) > 64))
                raise _column_error(path, lines[i], name, col[name][i], "is longer than 64 bytes")
            refs[name].append(values)
    if "fee" in col:
        from .amounts import FEE_SCALE, decimal_units
        if "." in "".join(col["fee"]):
            i = next(k for k, v in enumerate(col["fee"]) if "." in v)
            raise _column_error(path, lines[i], "fee", col["fee"][i],
                                "is not an integer number of minor units")
        rows["fee"] = decimal_units(col["fee"], FEE_SCALE, path, lines, "fee", blank=0)
    if "batch" in col:
        for value in set(col["batch"]):
            if value.strip() and value.strip() not in batches:
                batches[value.strip()] = len(batches) + 1
        rows["batch"] = [batches.get(v.strip(), 0) for v in col["batch"]]


def _settlement_rows(col, lines, path, rule) -> np.ndarray:
    """SETTLEMENT_DTYPE rows of one block: {column: list of text values}, line numbers."""
    n = len(lines)
    rows = np.zeros(n, SETTLEMENT_DTYPE)
    rows["line"] = lines

    def integers(name, why, lo, hi):
        values = col[name]
        try:
            arr = np.fromiter(map(int, values), np.int64, n)
        except (ValueError, OverflowError):
            for line, value in zip(lines, values):
                try:
                    number = int(value)
                except ValueError:
                    raise _column_error(path, line, name, value, why) from None
                if not lo <= number <= hi:
                    raise _column_error(path, line, name, value,
                                        "is out of range %d..%d" % (lo, hi)) from None
            raise
        bad = (arr < lo) | (arr > hi)
        if bad.any():
            i = int(np.argmax(bad))
            raise _column_error(path, lines[i], name, values[i], "is out of range %d..%d" % (lo, hi))
        return arr

    def lookup(name, table, dtype):
        # few distinct values (types, currencies): each is checked once
        known = {}
        for value in set(col[name]):
            known[value] = table(value.strip())
            if known[value] is None:
                i = col[name].index(value)
                raise _column_error(path, lines[i], name, value, {
                    "type": "is not a payment type; use sale, refund, void, reversal, preauth or "
                            "completion",
                    "currency": "is not an ISO 4217 currency code (156 or CNY)"}[name])
        return np.fromiter(map(known.__getitem__, col[name]), dtype, n)

    rows["terminal"] = integers("terminal", "is not a terminal number", 0, 2**32 - 1)
    joined = "\x00".join(col["amount"])
    if "." in joined or "," in joined:
        i = next(k for k, v in enumerate(col["amount"]) if "." in v or "," in v)
        raise _column_error(path, lines[i], "amount", col["amount"][i],
                            "is not an integer number of minor units (write 1250 for 12.50)")
    del joined
    amount = integers("amount", "is not an integer number of minor units", -(2**62), 2**62)

    rows["kind"] = lookup("type", _kind_of, np.uint8)
    rows["currency"] = lookup("currency", _currency_of, np.uint16)
    negative = amount < 0
    if negative.any():
        bad = negative & (KIND_SIGN_TABLE[rows["kind"]] >= 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise _column_error(path, lines[i], "amount", col["amount"][i],
                                "is negative for a %s; only refunds, voids and reversals may be "
                                "negative" % Kind(int(rows["kind"][i])).name.lower())
    rows["amount"] = np.abs(amount)
    for name, size in (("rrn", 12), ("auth_code", 6)):
        values = col[name]
        if " " in "".join(values):
            values = [v.strip() for v in values]
        if max(map(len, values)) > size:
            i = next(k for k, v in enumerate(values) if len(v) > size)
            raise _column_error(path, lines[i], name, col[name][i], "is longer than %d characters"
                                % size)
        try:
            rows[name] = np.array(values, dtype="S%d" % size)
        except UnicodeEncodeError:
            _find_bad(path, lines, name, col[name], lambda v: v.encode("ascii"),
                      "holds characters that are not ASCII")
    rows["ts"] = _parse_times(path, lines, col["time"], rule)
    rows["state"] = int(State.APPROVED)
    return rows
