"""How the `posfast` command shows things: tables, JSON, CSV, local times, ages, money.

Human output (tables, ``key value`` lines) shows times in the journal's local time (the
fixed offset or the time zone of its day rule); JSON keeps ISO 8601 with the offset in
force at each time, CSV too.  One set of columns per kind of row, whether or not there
are rows: a CSV always starts with its header, JSON of nothing is ``[]``.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import sys

from ..records import Kind, Method, State, format_day, ts_datetime

FORMATS = ("table", "json", "csv")

#: Every field of a record row, in the order JSON and CSV show them.
ROW_FIELDS = ("seq", "time", "day", "terminal", "kind", "state", "method", "amount", "currency",
              "txn_id", "ref_seq", "receipt_no", "operator", "flags", "pan_last4", "auth_code",
              "rrn", "client_ref", "ts")
#: The columns of a record table.
TABLE_COLUMNS = ("seq", "time", "terminal", "kind", "state", "method", "amount", "currency",
                 "txn_id", "receipt_no", "auth_code")


# ------------------------------------------------------------------ time
def journal_tz(rule=None) -> _dt.tzinfo:
    """The local time of a day rule: its fixed offset or its time zone (UTC for None)."""
    return _dt.timezone.utc if rule is None else rule.tzinfo


def local_time(ts, tz=None, human=True) -> str:
    """`ts` (microseconds since 1970 UTC) in `tz`: ``2026-11-20 10:00:00 +08:00`` for people,
    ISO 8601 with offset (``2026-11-20T10:00:00+08:00``) for JSON and CSV, or
    ``impossible time (ts=N)`` when no calendar shows it."""
    when = ts_datetime(ts)
    if when is None:
        return "impossible time (ts=%d)" % int(ts)
    try:
        when = when.astimezone(tz or _dt.timezone.utc)
    except (OverflowError, ValueError):
        return "impossible time (ts=%d)" % int(ts)
    if not human:
        return when.isoformat(timespec="seconds")
    text = when.strftime("%Y-%m-%d %H:%M:%S")
    offset = when.strftime("%z")
    return "%s %s:%s" % (text, offset[:3], offset[3:])


def age(seconds) -> str:
    """A duration as people read it: ``45 s ago``, ``3 h 12 min ago``, ``2 d 4 h ago``."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 0:
        return "in the future (%s)" % age(-seconds)[:-4]
    if seconds < 60:
        return "%d s ago" % seconds
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return "%d min ago" % minutes
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return "%d h %d min ago" % (hours, minutes) if minutes else "%d h ago" % hours
    days, hours = divmod(hours, 24)
    return "%d d %d h ago" % (days, hours) if hours else "%d d ago" % days


# ------------------------------------------------------------------ rows
def _enum_name(enum_cls, value):
    try:
        return enum_cls(int(value)).name.lower()
    except ValueError:
        return str(int(value))


def row_dict(row, tz=None, human=False) -> dict:
    """A RECORD_DTYPE row (or Record) as a JSON-friendly dict with enum names and times in
    `tz` (ISO 8601 with offset; ``human=True``: the table's form)."""
    get = row.__getitem__
    ts = int(get("ts"))
    return {
        "seq": int(get("seq")),
        "time": local_time(ts, tz, human=human),
        "day": format_day(get("day")),
        "terminal": int(get("terminal")),
        "kind": _enum_name(Kind, get("kind")),
        "state": _enum_name(State, get("state")),
        "method": _enum_name(Method, get("method")),
        "amount": int(get("amount")),
        "currency": int(get("currency")),
        "txn_id": int(get("txn_id")),
        "ref_seq": int(get("ref_seq")),
        "receipt_no": int(get("receipt_no")),
        "operator": int(get("operator")),
        "flags": int(get("flags")),
        "pan_last4": bytes(get("pan_last4")).decode(errors="replace"),
        "auth_code": bytes(get("auth_code")).decode(errors="replace"),
        "rrn": bytes(get("rrn")).decode(errors="replace"),
        "client_ref": bytes(get("client_ref")).decode(errors="replace"),
        "ts": ts,                      # the stored value, microseconds since 1970-01-01 UTC
    }


def format_rows(rows, fmt="table", columns=TABLE_COLUMNS, tz=None) -> str:
    """Record rows as a table (local times), JSON (``[]`` for none) or CSV (header always)."""
    human = fmt == "table"
    dicts = [row_dict(r, tz, human=human) for r in rows]
    if fmt == "table":
        return table([{c: d[c] for c in columns} for d in dicts], columns)
    return format_dicts(dicts, fmt, ROW_FIELDS)


def format_dicts(dicts, fmt, fields) -> str:
    """A list of dicts as JSON (a list, ``[]`` for none), CSV (the same header with or
    without rows) or a table, with `fields` as the columns."""
    if fmt == "json":
        return json.dumps(list(dicts), ensure_ascii=False, indent=1, default=str)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: _csv_value(v) for k, v in d.items()} for d in dicts)
        return buf.getvalue().rstrip("\r\n")
    return table(dicts, fields)


def _csv_value(value):
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return "" if value is None else value


def format_mapping(mapping, fmt, human_lines=None) -> str:
    """One object: JSON object, CSV of one row (its keys as the header), or ``key value``
    lines for people (`human_lines`, when given, replaces the values shown)."""
    if fmt == "json":
        return json.dumps(mapping, ensure_ascii=False, indent=1, default=str)
    if fmt == "csv":
        return format_dicts([mapping], "csv", list(mapping))
    shown = human_lines if human_lines is not None else mapping
    width = max([len(str(k)) for k in shown] + [12])
    return "\n".join("%-*s %s" % (width, key, value) for key, value in shown.items())


def table(dicts, columns) -> str:
    cells = [[str(c) for c in columns]] + [[str(d.get(c, "")) for c in columns] for d in dicts]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(v.rjust(w) if v.lstrip("-").isdigit() else v.ljust(w)
                       for v, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ------------------------------------------------------------------ money
def money(amount: int, currency: int = 156) -> str:
    """``12.50`` in the currency's minor-unit exponent."""
    try:
        from ..receipt import format_amount
        return format_amount(int(amount), int(currency))
    except Exception:   # pragma: no cover - an amount no currency formats
        return "%d" % amount


def money_with_code(amount: int, currency: int) -> str:
    """``CNY 12.50``: the amount with its alphabetic currency code."""
    from ..receipt import currency_alpha
    return "%s %s" % (currency_alpha(int(currency)), money(amount, currency))


# ------------------------------------------------------------------ progress
def progress_enabled(stream=None) -> bool:
    """Progress bars only when stderr is a terminal (never in logs, cron mail or pipes)."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """A one-line ``[#####     ] done/total records  N rec/s`` bar on stderr, drawn only
    when stderr is a terminal."""

    def __init__(self, total, stream=None):
        import time
        self._time = time.perf_counter
        self.total = total
        self.stream = sys.stderr if stream is None else stream
        self.enabled = progress_enabled(self.stream)
        self.started = self._time()
        self.drawn = False

    def update(self, done):
        if not self.enabled:
            return
        frac = min(1.0, done / self.total) if self.total else 1.0
        rate = done / max(self._time() - self.started, 1e-9)
        print("\r[%-30s] %d/%d records  %.0f rec/s" % ("#" * int(30 * frac), done, self.total, rate),
              end="", file=self.stream, flush=True)
        self.drawn = True

    def finish(self):
        if self.drawn:
            print(file=self.stream)
