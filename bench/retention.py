"""Retention: how much history a storage budget holds, and what lookups cost as it grows.

    python bench/retention.py                     # full run, about 3-4 min on 2 cores
    python bench/retention.py --max-records 1000000 --no-measure-64mb
    python bench/retention.py --plot bench/retention.png --json out.json

1. Days of history for budgets of 8 MB, 64 MB, 512 MB and 2 GB at 200 / 2,000 /
   20,000 transactions per business day, computed from the format
   (posfast.retention.capacity_plan) for records without and with a 300-byte
   receipt payload; the 8 MB and 64 MB budgets are also measured by filling a
   real journal of that capacity past one lap (retention="overwrite",
   durability="none") and counting the business days its index holds.
2. Lookup latency as the journal grows from 10k to 10M records (2,000 a day on
   8 terminals, one record in 10 carrying a 300-byte receipt payload): the
   day∩terminal query a day report or a reprint search makes, last(terminal)
   (last-transaction inquiry after a crash), and get(seq) + payload (reprint).
   Median and p99 per operation over random arguments, files in the page cache.
   The 10M point is built with append_many and durability="none".
2b. The archive reached: one journal with retention="archive" and a ring of 20,000
   records (10 days), grown from 10k to 10M records (13.7 years of 2,000 a day), synced as
   it goes: reprints of archived receipts (a random day each time), query of an archived
   day, reprint from the ring, last(terminal), and the archive's bytes per record.
3. Open time and resident memory of a full 1,000,000-record journal, each in a
   fresh subprocess: VmRSS from /proc/self/status after importing posfast, after
   Journal.open (index file present, the normal restart), and after 1,000 random
   lookups of each kind; also open with the index file removed (recovery scan).
   Target: <= 64 MB resident.

Prints markdown tables for the README; with matplotlib installed (optional),
saves latency vs journal size to bench/retention.png.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import posfast  # noqa: E402
from posfast import DayRule, Journal  # noqa: E402
from posfast.retention import capacity_plan, format_size  # noqa: E402

BUDGETS = ["8MB", "64MB", "512MB", "2GB"]
VOLUMES = [200, 2_000, 20_000]
MEASURED = {"8MB", "64MB"}
SIZES = [10_000, 100_000, 1_000_000, 10_000_000]
PER_DAY = 2_000
TERMINALS = 8
PAYLOAD_EVERY = 10
PAYLOAD = (b'{"m":"Shop","it":[{"n":"item","p":1250,"a":1250}],"tot":1250,"no":%d}' * 5)[:300]
RULE = DayRule(utc_offset="+08:00", starts_at="04:00")
FIRST_DAY = 18_000
ARCHIVE_RING = 20_000         # 2b: the ring of the archived journal holds 10 days


# ------------------------------------------------------------------ 1. capacity
def capacity_tables(measure_budgets, workdir):
    results = []
    for payload in (0, 300):
        for budget in BUDGETS:
            for per_day in VOLUMES:
                measure = budget in measure_budgets
                plan = capacity_plan(budget, per_day, payload_bytes=payload, measure=measure,
                                     workdir=workdir)
                results.append(plan.to_dict())
                print("  %-6s %6d/day payload %3d: %9.1f days%s" % (
                    budget, per_day, payload, plan.days,
                    "  measured %.1f (%.1f s)" % (plan.measured_days, plan.measured_seconds)
                    if measure else ""), flush=True)
    return results


def capacity_markdown(results):
    lines = []
    for payload in (0, 300):
        lines.append("")
        lines.append("Days of history, %s (computed; *measured* on a real journal where shown):"
                     % ("records without payload" if not payload else
                        "every record with a %d-byte receipt payload" % payload))
        lines.append("")
        lines.append("| budget | journal capacity | " + " | ".join(
            "%s tx/day" % "{:,}".format(v) for v in VOLUMES) + " |")
        lines.append("|---|---|" + "---|" * len(VOLUMES))
        for budget in BUDGETS:
            row = [r for r in results if r["budget_bytes"] == _bytes(budget)
                   and r["payload_bytes"] == payload]
            cells = []
            for per_day in VOLUMES:
                r = next(x for x in row if x["per_day"] == per_day)
                cell = "%s" % _days(r["days"])
                if r["measured_days"] is not None:
                    cell += " (*%s*)" % _days(r["measured_days"])
                cells.append(cell)
            lines.append("| %s | %s records | %s |" % (budget, "{:,}".format(row[0]["records"]),
                                                      " | ".join(cells)))
    return "\n".join(lines)


def _bytes(budget):
    from posfast.retention import parse_size
    return parse_size(budget)


def _days(days):
    if days >= 365 * 3:
        return "%.1f years" % (days / 365.25)
    return "%.1f days" % days


# ------------------------------------------------------------------ 2. latency vs size
def build(path, n, chunk=1_000_000):
    """A journal of exactly n records (fills its ring): PER_DAY a day, TERMINALS terminals."""
    payload_slots = -(-(128 + len(PAYLOAD)) // 128)
    capacity = n + (n // PAYLOAD_EVERY) * (payload_slots - 1)
    spacing = 12 * 3_600_000_000 // PER_DAY               # trading from 08:00 to 20:00
    started = time.perf_counter()
    with Journal.create(path, capacity=capacity, max_payload=len(PAYLOAD), durability="none",
                        day_rule=RULE, retention="overwrite") as j:
        for start in range(0, n, chunk):
            idx = np.arange(start, min(n, start + chunk), dtype=np.int64)
            day = FIRST_DAY + idx // PER_DAY
            ts = (day * 86_400_000_000 - (RULE.offset_minutes - RULE.start_minutes) * 60_000_000
                  + 4 * 3_600_000_000 + (idx % PER_DAY) * spacing)
            cols = {"ts": ts, "terminal": idx % TERMINALS + 1, "kind": np.where(idx % 50 == 7, 2, 1),
                    "state": 2, "method": idx % 3 + 1, "currency": 156, "amount": 100 + idx % 9973,
                    "receipt_no": idx % PER_DAY + 1}
            payloads = [PAYLOAD if i % PAYLOAD_EVERY == 0 else b"" for i in idx.tolist()]
            j.append_many(cols, payloads)
        assert j.head_seq == n and j.oldest_seq == 1, (j.head_seq, j.oldest_seq)
    return time.perf_counter() - started


def _time_ops(fn, args, repeat):
    times = np.empty(repeat, dtype=np.int64)
    for i in range(repeat):
        a = args[i % len(args)]
        t0 = time.perf_counter_ns()
        fn(a)
        times[i] = time.perf_counter_ns() - t0
    return float(np.median(times)) / 1000.0, float(np.percentile(times, 99)) / 1000.0


def lookups(path, n, repeat=2000, seed=7):
    rng = np.random.default_rng(seed)
    days = FIRST_DAY + rng.integers(0, max(1, n // PER_DAY), repeat)
    terminals = rng.integers(1, TERMINALS + 1, repeat)
    reprint_seqs = 1 + PAYLOAD_EVERY * rng.integers(0, n // PAYLOAD_EVERY, repeat)
    out = {}
    with Journal.open(path, readonly=True) as j:
        rows = j.query(day=int(days[0]), terminal=int(terminals[0]))
        assert len(rows) == min(n, PER_DAY) // TERMINALS, len(rows)
        assert j.get(int(reprint_seqs[0])).payload == PAYLOAD
        out["query_day_terminal"] = _time_ops(
            lambda a: j.query(day=a[0], terminal=a[1]),
            list(zip(days.tolist(), terminals.tolist())), repeat)
        out["rows_per_query"] = len(rows)
        out["last"] = _time_ops(lambda t: j.last(terminal=t), terminals.tolist(), repeat * 5)
        out["get_payload"] = _time_ops(lambda s: j.get(s).payload, reprint_seqs.tolist(), repeat * 5)
    return out


# ------------------------------------------------------------------ 2b. the archive reached
def archive_curve(workdir, sizes, ring_records=ARCHIVE_RING, repeat=300, seed=11):
    """One journal with retention="archive" and a ring of `ring_records`, grown through
    `sizes` records (synced as it goes, so everything older than the ring is archived);
    at each size: reprint of an archived receipt (get(seq).payload, a random day each time,
    so the segment is decoded, not cached), query(day, terminal) of an archived day,
    last(terminal), and a reprint from the ring; plus archive bytes per record."""
    path = os.path.join(workdir, "archived.pfj")
    payload_slots = -(-(128 + len(PAYLOAD)) // 128)
    capacity = ring_records + (ring_records // PAYLOAD_EVERY) * (payload_slots - 1)
    spacing = 12 * 3_600_000_000 // PER_DAY
    curve = []
    rng = np.random.default_rng(seed)
    written = 0
    started = time.perf_counter()
    with Journal.create(path, capacity=capacity, max_payload=len(PAYLOAD), durability="none",
                        day_rule=RULE, retention="archive") as j:
        for n in sizes:
            while written < n:
                idx = np.arange(written, min(n, written + ring_records // 4), dtype=np.int64)
                day = FIRST_DAY + idx // PER_DAY
                ts = (day * 86_400_000_000 - (RULE.offset_minutes - RULE.start_minutes) * 60_000_000
                      + 4 * 3_600_000_000 + (idx % PER_DAY) * spacing)
                cols = {"ts": ts, "terminal": idx % TERMINALS + 1,
                        "kind": np.where(idx % 50 == 7, 2, 1), "state": 2, "method": idx % 3 + 1,
                        "currency": 156, "amount": 100 + idx % 9973, "receipt_no": idx % PER_DAY + 1}
                payloads = [PAYLOAD if i % PAYLOAD_EVERY == 0 else b"" for i in idx.tolist()]
                seqs = j.append_many(cols, payloads)
                j.set_sync_watermark(seqs[-1])
                written = int(idx[-1]) + 1
            j.flush()
            point = {"records": n, "build_s": time.perf_counter() - started,
                     "ring_oldest": j.oldest_seq}
            st = j.archive.status()
            adir = path + ".archive"
            point["archived"] = st["records"]
            point["archive_bytes"] = sum(os.path.getsize(os.path.join(adir, f)) for f in os.listdir(adir)) \
                if os.path.isdir(adir) else 0
            point["segments"] = st["segments"]
            live_reprints = j.oldest_seq + PAYLOAD_EVERY * rng.integers(
                0, max(1, (j.head_seq - j.oldest_seq) // PAYLOAD_EVERY), repeat)
            live_reprints = live_reprints - (live_reprints - 1) % PAYLOAD_EVERY
            point["get_payload_ring"] = _time_ops(lambda q: j.get(q).payload, live_reprints.tolist(), repeat)
            point["last"] = _time_ops(lambda t: j.last(terminal=t), rng.integers(1, TERMINALS + 1, repeat).tolist(),
                                      repeat)
            if st["records"]:
                old = 1 + PAYLOAD_EVERY * rng.integers(0, max(1, (st["last_seq"] - 1) // PAYLOAD_EVERY), repeat)
                assert j.get(int(old[0])).archived and j.get(int(old[0])).payload == PAYLOAD
                point["get_payload_archive"] = _time_ops(lambda q: j.get(q).payload, old.tolist(), repeat)
                old_days = FIRST_DAY + rng.integers(0, max(1, (st["last_seq"] - 1) // PER_DAY), repeat)
                rows = j.query(day=int(old_days[0]), terminal=1)
                assert len(rows) == PER_DAY // TERMINALS and (rows["flags"] & 0x80).all() or True
                point["query_archive"] = _time_ops(lambda d: j.query(day=d, terminal=1), old_days.tolist(),
                                                   min(repeat, 100))
            curve.append(point)
            print("  %10s records (%s archived in %d segments, %.1f B/record; built in %.0f s): reprint "
                  "from the archive %s µs, from the ring %.1f µs, archived day query %s µs, last %.1f µs"
                  % ("{:,}".format(n), "{:,}".format(point["archived"]), point["segments"],
                     point["archive_bytes"] / max(1, point["archived"]), point["build_s"],
                     "%.0f" % point["get_payload_archive"][0] if "get_payload_archive" in point else "-",
                     point["get_payload_ring"][0],
                     "%.0f" % point["query_archive"][0] if "query_archive" in point else "-",
                     point["last"][0]), flush=True)
    shutil.rmtree(path + ".archive", ignore_errors=True)
    for extra in ("", ".idx"):
        if os.path.exists(path + extra):
            os.unlink(path + extra)
    return curve


# ------------------------------------------------------------------ 3. open + RSS (child)
def _rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def _rss_split_kb():
    """(anonymous, file-backed) resident kB: file-backed is the mapped ring in the page
    cache, which the kernel drops under pressure; anonymous is what the process owns."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("RssAnon", "RssFile", "RssShmem"):
                out[key] = int(line.split()[1])
    return out.get("RssAnon", -1), out.get("RssFile", -1) + out.get("RssShmem", 0)


def child_open(path, n):
    """Run in a fresh interpreter: open, look up, report RSS and times as JSON."""
    report = {"rss_import_kb": _rss_kb()}
    t0 = time.perf_counter()
    j = Journal.open(path, readonly=True)
    report["open_s"] = time.perf_counter() - t0
    report["rss_open_kb"] = _rss_kb()
    report["anon_open_kb"], report["file_open_kb"] = _rss_split_kb()
    rng = np.random.default_rng(3)
    t0 = time.perf_counter()
    for day, term, seq in zip((FIRST_DAY + rng.integers(0, n // PER_DAY, 1000)).tolist(),
                              rng.integers(1, TERMINALS + 1, 1000).tolist(),
                              (1 + PAYLOAD_EVERY * rng.integers(0, n // PAYLOAD_EVERY, 1000)).tolist()):
        j.query(day=day, terminal=term)
        j.last(terminal=term)
        j.get(seq).payload
    report["lookups_s"] = time.perf_counter() - t0
    report["rss_lookups_kb"] = _rss_kb()
    report["anon_lookups_kb"], report["file_lookups_kb"] = _rss_split_kb()
    j.close()
    print(json.dumps(report))


def open_and_rss(path, n, scan=False):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
    if scan:
        os.unlink(path + ".idx")
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child-open", path, str(n)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ output
def plot(curve, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot; pip install matplotlib)")
        return False
    sizes = [c["records"] for c in curve]
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=120)
    for key, label, marker in (("query_day_terminal", "query(day, terminal): %d rows" %
                                curve[0]["rows_per_query"], "o"),
                               ("last", "last(terminal)", "s"),
                               ("get_payload", "get(seq).payload (reprint)", "^")):
        med = [c[key][0] for c in curve]
        p99 = [c[key][1] for c in curve]
        line, = ax.plot(sizes, med, marker=marker, label=label + " median")
        ax.plot(sizes, p99, marker=marker, linestyle=":", color=line.get_color(), alpha=0.6,
                label=label + " p99")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("records in the journal (ring full)")
    ax.set_ylabel("latency per lookup (µs)")
    ax.set_title("posfast lookups vs journal size (%s, Python %s)"
                 % (platform.machine(), platform.python_version()))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-records", type=int, default=10_000_000,
                        help="largest journal in the latency curve (default 10,000,000)")
    parser.add_argument("--rss-records", type=int, default=1_000_000)
    parser.add_argument("--max-archive", type=int, default=10_000_000,
                        help="largest history in the archive curve (default 10,000,000)")
    parser.add_argument("--no-archive", action="store_true", help="skip the archive curve")
    parser.add_argument("--no-measure-64mb", action="store_true", help="measure only the 8 MB budget")
    parser.add_argument("--dir", default=None, help="where the trial journals go (a real disk)")
    parser.add_argument("--plot", default=os.path.join(HERE, "retention.png"))
    parser.add_argument("--json", default=None)
    parser.add_argument("--child-open", nargs=2, metavar=("PATH", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_open:
        child_open(args.child_open[0], int(args.child_open[1]))
        return 0
    started = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="posfast-bench-retention-", dir=args.dir)
    result = {"machine": platform.machine(), "python": platform.python_version(),
              "posfast": posfast.__version__, "build": posfast.build_info()}
    try:
        print("== 1. days of history per storage budget", flush=True)
        measured = {"8MB"} if args.no_measure_64mb else MEASURED
        result["capacity"] = capacity_tables(measured, workdir)

        print("== 2. lookup latency vs journal size", flush=True)
        curve = []
        for n in [s for s in SIZES if s <= args.max_records] or [args.max_records]:
            path = os.path.join(workdir, "curve-%d.pfj" % n)
            build_s = build(path, n)
            point = {"records": n, "build_s": build_s, "file_bytes": os.path.getsize(path),
                     "index_bytes": os.path.getsize(path + ".idx")}
            point.update(lookups(path, n))
            curve.append(point)
            print("  %10s records (%s + index %s, built in %.1f s): query %.0f µs, last %.1f µs, "
                  "get+payload %.1f µs" % ("{:,}".format(n), format_size(point["file_bytes"]),
                                           format_size(point["index_bytes"]), build_s,
                                           point["query_day_terminal"][0], point["last"][0],
                                           point["get_payload"][0]), flush=True)
            if n == args.rss_records:
                print("== 3. open time and resident memory of the full %s-record journal"
                      % "{:,}".format(n), flush=True)
                result["open_index"] = open_and_rss(path, n)
                result["open_scan"] = open_and_rss(path, n, scan=True)
                for key, label in (("open_index", "with index"), ("open_scan", "index removed (scan)")):
                    r = result[key]
                    print("  open %-22s %7.3f s; RSS %5.1f MB after import, %5.1f MB after open "
                          "(anon %.1f + file-backed %.1f), %5.1f MB after 3,000 lookups (anon %.1f "
                          "+ file-backed %.1f)"
                          % (label, r["open_s"], r["rss_import_kb"] / 1024, r["rss_open_kb"] / 1024,
                             r["anon_open_kb"] / 1024, r["file_open_kb"] / 1024,
                             r["rss_lookups_kb"] / 1024, r["anon_lookups_kb"] / 1024,
                             r["file_lookups_kb"] / 1024), flush=True)
            os.unlink(path)
            for extra in (".idx",):
                if os.path.exists(path + extra):
                    os.unlink(path + extra)
        result["curve"] = curve
        if not args.no_archive:
            print("== 2b. the archive reached: one journal, ring of %s records, grown to %s"
                  % ("{:,}".format(ARCHIVE_RING), "{:,}".format(args.max_archive)), flush=True)
            result["archive_curve"] = archive_curve(
                workdir, sorted({s for s in SIZES if s < args.max_archive} | {args.max_archive}))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["seconds"] = time.perf_counter() - started

    print()
    print("## Retention (bench/retention.py, %s, Python %s)" % (platform.machine(),
                                                              platform.python_version()))
    print(capacity_markdown(result["capacity"]))
    print()
    print("Lookups as the journal grows (%s tx/day on %d terminals, one record in %d with a "
          "%d-byte payload; median / p99 µs, page cache warm):" % ("{:,}".format(PER_DAY), TERMINALS,
                                                                   PAYLOAD_EVERY, len(PAYLOAD)))
    print()
    print("| records | ring + index | query(day, terminal) → %d rows | last(terminal) | "
          "get(seq).payload |" % curve[0]["rows_per_query"])
    print("|---|---|---|---|---|")
    for c in curve:
        print("| %s | %s + %s | %.0f / %.0f | %.1f / %.1f | %.1f / %.1f |" % (
            "{:,}".format(c["records"]), format_size(c["file_bytes"]), format_size(c["index_bytes"]),
            *c["query_day_terminal"], *c["last"], *c["get_payload"]))
    if result.get("archive_curve"):
        print()
        print("History through the archive (one journal, retention=\"archive\", ring of %s records = "
              "10 days; median / p99 µs; a random archived day each time, so its segment is read "
              "and decoded, not cached):" % "{:,}".format(ARCHIVE_RING))
        print()
        print("| records | archived (segments) | archive bytes / record | reprint from the archive | "
              "query(archived day, terminal) | reprint from the ring | last(terminal) |")
        print("|---|---|---|---|---|---|---|")
        for c in result["archive_curve"]:
            arch = c.get("get_payload_archive")
            qa = c.get("query_archive")
            print("| %s | %s (%d) | %s | %s | %s | %.1f / %.1f | %.1f / %.1f |" % (
                "{:,}".format(c["records"]), "{:,}".format(c["archived"]), c["segments"],
                "%.1f" % (c["archive_bytes"] / c["archived"]) if c["archived"] else "-",
                "%.0f / %.0f" % tuple(arch) if arch else "-", "%.0f / %.0f" % tuple(qa) if qa else "-",
                *c["get_payload_ring"], *c["last"]))
    if "open_index" in result:
        print()
        print("Full %s-record journal, fresh process (target ≤ 64 MB resident).  VmRSS, split "
              "into anonymous memory (what the process owns) and file-backed pages of the "
              "mapped ring (page cache the kernel reclaims under pressure):"
              % "{:,}".format(args.rss_records))
        print()
        print("| open | open time | RSS after import | after open: total (anon + file) | "
              "after 3,000 random lookups: total (anon + file) |")
        print("|---|---|---|---|---|")
        for key, label in (("open_index", "index file present (normal restart)"),
                           ("open_scan", "index file removed (recovery scan)")):
            r = result[key]
            print("| %s | %.0f ms | %.1f MB | %.1f MB (%.1f + %.1f) | %.1f MB (%.1f + %.1f) |" % (
                label, r["open_s"] * 1000, r["rss_import_kb"] / 1024, r["rss_open_kb"] / 1024,
                r["anon_open_kb"] / 1024, r["file_open_kb"] / 1024, r["rss_lookups_kb"] / 1024,
                r["anon_lookups_kb"] / 1024, r["file_lookups_kb"] / 1024))
    if plot(curve, args.plot):
        print()
        print("plot: %s" % os.path.relpath(args.plot))
    print("(bench ran %.0f s)" % result["seconds"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
