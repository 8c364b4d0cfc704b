"""The back office's dashboard: server-rendered HTML at ``/ui`` of ``posfast serve``.

Pages (all behind the admin login; no JavaScript, no build step, inline SVG charts):

* ``/ui`` -- the fleet: every till, the ones needing attention first (:func:`posfast.sync.fleet.fleet`);
* ``/ui/store?store=S&day=YYYY-MM-DD`` -- a store's business day: totals by method and by
  terminal, sales per hour (local time of each till's day rule) as a bar chart;
* ``/ui/doubt`` -- payments in doubt (newest record PENDING or UNKNOWN);
* ``/ui/reconciliations`` -- the reconciliation reports kept by ``posfast reconcile``;
* ``/ui/zreports`` -- the day closes (Z-reports) the tills synced;
* ``/ui/search?q=...`` -- by order ref, host ref, client ref, RRN or receipt code (``3-000123``).

Login: ``/ui/login`` takes an admin token (``posfast register --admin --issue-token``) and
keeps it in an HttpOnly, SameSite=Strict cookie scoped to ``/ui`` (Secure over HTTPS), so
the dashboard works behind any of several stateless server processes; every request
checks it again (a revoked token is refused within the token cache's few seconds).
A request may also carry ``Authorization: Bearer <admin token>``.  Every value from the
database is HTML-escaped; pages send a Content-Security-Policy that allows no script.
"""
from __future__ import annotations

import datetime as _dt
import html
import logging
import urllib.parse
import uuid

from ..receipt import format_amount
from ..records import Kind, Method, State, day_number, day_to_date
from .fleet import fleet, fleet_summary
from .protocol import SyncUnavailable
from .reads import IN_DOUBT_STATES, net_amount

log = logging.getLogger("posfast.server")

__all__ = ["COOKIE", "add_dashboard", "hour_chart_svg"]

#: The login cookie's name.
COOKIE = "posfast_admin"
#: Business days back (from the newest held) the payments-in-doubt page reads by default.
DOUBT_DAYS = 35
#: Seconds a login lasts.
LOGIN_MAX_AGE = 12 * 3600
_SEVERITY = {2: ("critical", "needs attention now"), 1: ("warning", "look today"), 0: ("ok", "fine")}
_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")


def e(value) -> str:
    """HTML-escape any value (quotes too: safe in text and in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def money(minor: int, currency: int = 156) -> str:
    """Minor units as the currency writes them: 123456 -> '1,234.56' (JPY: '123,456'; KWD,
    three decimals: '123.456'), by the ISO 4217 exponents posfast's receipts use."""
    return format_amount(int(minor), int(currency))


def _enum_name(enum, value) -> str:
    try:
        return enum(value).name.lower()
    except ValueError:
        return str(value)


def _local(ts_us: int, rule) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(ts_us / 1e6, rule.tzinfo)


def _q(**params) -> str:
    return urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})


def hour_chart_svg(per_hour: list, currency: int = 156, *, width: int = 720, height: int = 220) -> str:
    """24 bars (local hours 0..23) of net sales, as inline SVG; each bar carries
    ``data-hour`` and ``data-amount`` (minor units) and a <title> tooltip."""
    top = max([v for v in per_hour if v > 0] or [1])
    pad_l, pad_b, pad_t = 40, 24, 10
    plot_h = height - pad_b - pad_t
    bar_w = (width - pad_l) / 24
    parts = [f'<svg class="chart" role="img" aria-label="net sales per hour" xmlns="http://www.w3.org/2000/svg" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
             f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{width}" y2="{pad_t + plot_h}" stroke="#888"/>',
             f'<text x="{pad_l - 4}" y="{pad_t + 8}" text-anchor="end" font-size="10">{e(money(top, currency))}</text>']
    for hour, value in enumerate(per_hour):
        h = 0 if value <= 0 else max(1.0, plot_h * value / top)
        x = pad_l + hour * bar_w
        parts.append(f'<rect class="bar" data-hour="{hour}" data-amount="{int(value)}" x="{x + 2:.1f}" '
                     f'y="{pad_t + plot_h - h:.1f}" width="{bar_w - 4:.1f}" height="{h:.1f}" fill="#2f6fb0">'
                     f'<title>{hour:02d}:00-{hour:02d}:59: {e(money(value, currency))}</title></rect>')
        if hour % 3 == 0:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - 8}" text-anchor="middle" '
                         f'font-size="10">{hour:02d}</text>')
    parts.append("</svg>")
    return "".join(parts)


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1c1c1c;background:#f6f7f9}
header{background:#1f3b57;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center;flex-wrap:wrap}
header a{color:#fff;text-decoration:none}header a.here{text-decoration:underline}
header form{margin-left:auto;display:flex;gap:6px}
main{padding:16px}
table{border-collapse:collapse;background:#fff;margin:8px 0 16px}
th,td{border:1px solid #d5d9de;padding:4px 8px;text-align:left;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.critical td:first-child{border-left:4px solid #c0392b}tr.warning td:first-child{border-left:4px solid #e6a700}
tr.ok td:first-child{border-left:4px solid #3c9a5f}
.badge{padding:1px 6px;border-radius:8px;font-size:12px;color:#fff}
.badge.critical{background:#c0392b}.badge.warning{background:#b07f00}.badge.ok{background:#3c9a5f}
.summary span{margin-right:16px}.muted{color:#666}.error{color:#a00;font-weight:bold}
details{background:#fff;border:1px solid #d5d9de;padding:4px 8px;margin:4px 0}
"""


def _page(title: str, body: str, *, here: str = "", logged_in: bool = True, q: str = "") -> str:
    nav = ""
    if logged_in:
        links = [("/ui", "Fleet"), ("/ui/doubt", "Payments in doubt"), ("/ui/reconciliations", "Reconciliations"),
                 ("/ui/zreports", "Z-reports")]
        nav = "".join(f'<a href="{href}"{" class=here" if href == here else ""}>{label}</a>'
                      for href, label in links)
        nav += (f'<form method="get" action="/ui/search" role="search"><input name="q" value="{e(q)}" '
                'placeholder="order ref, host ref, receipt code, RRN" size="34" aria-label="search">'
                '<button>Search</button></form>'
                '<form method="post" action="/ui/logout"><button>Log out</button></form>')
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)} - posfast back office'
            f'</title><meta name="viewport" content="width=device-width"><style>{_STYLE}</style></head><body>'
            f'<header><strong>posfast back office</strong>{nav}</header><main><h1>{e(title)}</h1>{body}</main>'
            '</body></html>')


def _table(headers, rows, *, cls: str = "", num=()) -> str:
    head = "".join(f'<th{" class=num" if i in num else ""}>{e(h)}</th>' for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells, row_cls = (row[0], row[1]) if isinstance(row, tuple) and len(row) == 2 and isinstance(row[1], str) \
            else (row, "")
        body.append(f'<tr{f" class={row_cls}" if row_cls else ""}>' + "".join(
            f'<td{" class=num" if i in num else ""}>{c}</td>' for i, c in enumerate(cells)) + "</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(headers)}" class="muted">nothing</td></tr>')
    return f'<table class="{e(cls)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _age(seconds) -> str:
    if seconds is None:
        return "never"
    s = int(seconds)
    if s < 120:
        return f"{s} s ago"
    if s < 7200:
        return f"{s // 60} min ago"
    if s < 172800:
        return f"{s // 3600} h ago"
    return f"{s // 86400} days ago"


def _records_table(rows: list, regs: dict, rules: dict) -> str:
    out = []
    for r in rows:
        jid = uuid.UUID(r["journal_id"])
        reg = regs.get(jid)
        store = reg.store if reg else ""
        rule = rules.get(jid)
        when = _local(r["ts"], rule).strftime("%Y-%m-%d %H:%M:%S %z") if rule else str(r["ts"])
        code = f"{r['terminal']}-{r['receipt_no']:06d}" if r["terminal"] else f"{r['receipt_no']:06d}"
        store_link = (f'<a href="/ui/store?{e(_q(store=store, day=day_to_date(r["day"]).isoformat()))}">{e(store)}</a>'
                      if store else '<span class="muted">unregistered</span>')
        out.append(([store_link, e(reg.till if reg else r["journal_id"][:8]), e(when),
                     e(day_to_date(r["day"]).isoformat()), e(_enum_name(Kind, r["kind"])),
                     e(_enum_name(State, r["state"])), e(_enum_name(Method, r["method"])),
                     e(money(r["amount"], r["currency"])), e(code), e(r["order_ref"]), e(r["host_ref"]),
                     e(r["rrn"]), e(r["txn_id"]), e(r["seq"])],
                    "warning" if r["state"] in IN_DOUBT_STATES else ""))
    return _table(["store", "till", "time (local)", "day", "kind", "state", "method", "amount", "receipt",
                   "order ref", "host ref", "RRN", "txn", "seq"], out, cls="records", num=(7, 12, 13))


def add_dashboard(app, ctx) -> None:
    """Add the dashboard's routes to a ``posfast serve`` app (`ctx`: its ServerContext:
    the back office, the token check, the thread pool, the failed-token limiter)."""
    from aiohttp import web

    target = ctx.target

    def html_response(text: str, status: int = 200, **kw):
        resp = web.Response(text=text, status=status, content_type="text/html", charset="utf-8", **kw)
        resp.headers["Content-Security-Policy"] = _CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp

    def redirect(location: str):
        resp = web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})
        return resp

    def admin_page(handler):
        """A page behind the login: no admin token (cookie or bearer) -> the login form; a
        database that cannot be reached -> a 503 page."""
        async def page(request):
            token = request.cookies.get(COOKIE, "")
            header = request.headers.get("Authorization", "")
            if not token and header.lower().startswith("bearer "):
                token = header[7:].strip()
            addr = request.remote or "?"
            try:
                if token and ctx.limiter.retry_after(addr):
                    return redirect("/ui/login?" + _q(next=request.path_qs))   # (its form says why)
                who = await ctx.run(ctx.auth.admin, token) if token else None
                if who is None:
                    if token and ctx.limiter.failed(addr):    # a wrong token counts, as at /ui/login
                        log.warning("refused dashboard page %s from %s: unknown, revoked or not an admin "
                                    "token", request.path[:80], addr)
                    return redirect("/ui/login?" + _q(next=request.path_qs))
                return await handler(request)
            except SyncUnavailable as exc:
                log.error("dashboard: back office unavailable: %s", exc)
                return html_response(_page("Back office unavailable", "<p>The database cannot be reached; "
                                           "try again in a minute.</p>"), 503)
        return page

    def login_form(next_url: str, message: str = "") -> str:
        err = f'<p class="error" id="login-error">{e(message)}</p>' if message else ""
        return _page("Log in", f'{err}<form method="post" action="/ui/login" id="login">'
                     f'<input type="hidden" name="next" value="{e(next_url)}">'
                     '<label>Admin token <input type="password" name="token" size="50" autocomplete="off" '
                     'autofocus></label> <button>Log in</button></form>'
                     '<p class="muted">Issue one with: posfast register --db URL --admin --issue-token</p>',
                     logged_in=False)

    def safe_next(value: str) -> str:
        return value if value.startswith("/ui") and not value.startswith("//") and "\\" not in value else "/ui"

    async def login_get(request):
        return html_response(login_form(safe_next(request.query.get("next", "/ui"))))

    async def login_post(request):
        form = await request.post()
        token = str(form.get("token", "")).strip()
        nxt = safe_next(str(form.get("next", "/ui")))
        addr = request.remote or "?"
        wait = ctx.limiter.retry_after(addr)
        if wait:
            return html_response(login_form(nxt, f"too many failed tokens from {addr}; retry in {wait:.0f} s"),
                                 429, headers={"Retry-After": str(int(wait + 0.999))})
        who = await ctx.run(ctx.auth.admin, token) if token else None
        if who is None:
            if ctx.limiter.failed(addr):
                log.warning("refused dashboard login from %s: unknown, revoked or not an admin token", addr)
            return html_response(login_form(nxt, "That is not an admin token (unknown, revoked, or a till's)."),
                                 401)
        log.info("dashboard login from %s (token %s)", addr, who.token_id)
        resp = redirect(nxt)
        resp.set_cookie(COOKIE, token, max_age=LOGIN_MAX_AGE, path="/ui", httponly=True, samesite="Strict",
                        secure=request.secure)
        return resp

    async def logout(request):
        resp = redirect("/ui/login")
        resp.del_cookie(COOKIE, path="/ui")
        return resp

    async def fleet_page(request):
        rows = await ctx.run(fleet, target)
        s = fleet_summary(rows)
        summary = (f'<p class="summary"><span id="count-tills">{s["tills"]} tills</span>'
                   f'<span id="count-critical">{s["critical"]} critical</span>'
                   f'<span id="count-warning">{s["warning"]} warning</span>'
                   f'<span id="count-ok">{s["fine"]} fine</span></p>')
        out = []
        for r in rows:
            sev, label = _SEVERITY[r["severity"]]
            rec = r["last_reconciliation"]
            rec_text = "" if rec is None else (f'{e(rec["day"])}: ' + ("ok" if rec["ok"] else
                                               f'{e(rec["discrepancies"])} discrepancies'))
            store = (f'<a href="/ui/store?{e(_q(store=r["store"]))}">{e(r["store"])}</a>' if r["store"]
                     else '<span class="muted">unregistered</span>')
            ring = "" if r["ring_unsynced"] is None else f'{100 * r["ring_unsynced"]:.0f} %'
            out.append(([f'<span class="badge {sev}" title="{label}">{sev}</span>', store, e(r["till"]),
                         e(r["tid"]), e(_age(r["last_seen_age_s"])),
                         e("" if r["unsynced"] is None else r["unsynced"]), e(ring),
                         e("" if r["in_doubt"] is None else r["in_doubt"]), e(r["last_day_closed"]), rec_text,
                         e(", ".join(x.replace("_", " ") for x in r["attention"])),
                         f'<code>{e(r["journal_id"])}</code>'], sev))
        table = _table(["", "store", "till", "TID", "last seen", "unsynced", "ring unsynced", "in doubt",
                        "last day closed", "last reconciliation", "attention", "journal"], out, cls="fleet",
                       num=(5, 6, 7))
        return html_response(_page("Fleet", summary + table, here="/ui"))

    async def store_page(request):
        store = request.query.get("store", "")
        regs = [r for r in await ctx.run(target.registrations) if r.store == store]
        if not regs:
            return html_response(_page("Store not found", f"<p>No till is registered to store "
                                       f"<strong>{e(store)}</strong>.</p>"), 404)
        jids = [r.journal_id for r in regs]
        tills = {r.journal_id: r for r in regs}
        rules = await ctx.run(target.day_rules)
        day_text = request.query.get("day", "")
        try:
            day = day_number(day_text) if day_text else await ctx.run(target.latest_day, jids)
        except (ValueError, TypeError):
            return html_response(_page("Bad day", f"<p>{e(day_text)} is not a date (YYYY-MM-DD).</p>"), 400)
        if day is None:
            return html_response(_page(f"Store {store}", "<p>No payments synced yet.</p>"))
        payments = await ctx.run(target.day_payments, jids, day)
        by_method: dict = {}
        by_terminal: dict = {}
        per_hour = [0] * 24
        currency = payments[0]["currency"] if payments else 156
        doubt = 0
        for p in payments:
            net = net_amount(p)
            m = by_method.setdefault((_enum_name(Method, p["method"]), p["currency"]), [0, 0])
            jid = uuid.UUID(p["journal_id"])
            t = by_terminal.setdefault((tills[jid].till if jid in tills else p["journal_id"][:8], p["terminal"],
                                        p["currency"]), [0, 0, 0])
            doubt += p["state"] in IN_DOUBT_STATES
            if p["state"] == int(State.APPROVED):
                m[0] += 1
                m[1] += net
                t[0] += 1
                t[1] += net
                rule = rules.get(jid)
                if rule is not None and p["currency"] == currency:    # (the chart is in one currency)
                    per_hour[_local(p["first_ts"], rule).hour] += net
            elif p["state"] in IN_DOUBT_STATES:
                t[2] += 1
        date = day_to_date(day)
        nav = (f'<p><a href="/ui/store?{e(_q(store=store, day=(date - _dt.timedelta(days=1)).isoformat()))}" '
               f'id="prev-day">&larr; {e((date - _dt.timedelta(days=1)).isoformat())}</a> | '
               f'<a href="/ui/store?{e(_q(store=store, day=(date + _dt.timedelta(days=1)).isoformat()))}" '
               f'id="next-day">{e((date + _dt.timedelta(days=1)).isoformat())} &rarr;</a> | '
               f'<a href="/ui/zreports?{e(_q(store=store))}">Z-reports</a> | '
               f'<a href="/ui/reconciliations?{e(_q(store=store))}">reconciliations</a></p>')
        nets: dict = {}
        for (_, cur), v in by_method.items():                 # never one sum across currencies
            nets[cur] = nets.get(cur, 0) + v[1]
        net_text = money(nets.get(currency, 0), currency) if set(nets) <= {currency} else "; ".join(
            "%s (%s)" % (money(v, c), c) for c, v in sorted(nets.items()))
        summary = (f'<p class="summary"><span>business day <strong id="day">{e(date.isoformat())}</strong></span>'
                   f'<span>net <strong id="net">{e(net_text)}</strong></span>'
                   f'<span id="payments">{len(payments)} payments</span>'
                   f'<span id="in-doubt">{doubt} in doubt</span></p>')
        methods = _table(["method", "currency", "approved", "net"],
                         [[e(k[0]), e(k[1]), e(v[0]), e(money(v[1], k[1]))] for k, v in sorted(by_method.items())],
                         cls="by-method", num=(2, 3))
        terminals = _table(["till", "terminal", "currency", "approved", "net", "in doubt"],
                           [[e(k[0]), e(k[1]), e(k[2]), e(v[0]), e(money(v[1], k[2])), e(v[2])]
                            for k, v in sorted(by_terminal.items())], cls="by-terminal", num=(1, 3, 4, 5))
        body = (nav + summary + "<h2>Sales per hour (net, local time)</h2>" + hour_chart_svg(per_hour, currency)
                + "<h2>By method</h2>" + methods + "<h2>By terminal</h2>" + terminals)
        return html_response(_page(f"Store {store}", body))

    async def doubt_page(request):
        try:
            days = max(1, int(request.query.get("days", DOUBT_DAYS)))
        except ValueError:
            days = DOUBT_DAYS
        newest = await ctx.run(target.newest_day)
        since = None if newest is None else newest - days + 1
        rows = await ctx.run(target.payments_in_doubt, since)
        regs = {r.journal_id: r for r in await ctx.run(target.registrations)}
        rules = await ctx.run(target.day_rules)
        window = "" if since is None else (f' Payments of the {days} business days up to '
                                           f'{e(day_to_date(newest).isoformat())} (<a href="/ui/doubt?days='
                                           f'{days * 4}">{days * 4} days</a>).')
        body = (f'<p id="doubt-count">{len(rows)} payments in doubt: the host was asked and no answer is '
                'recorded yet. Look them up with the acquirer (RRN, order ref) before the day is closed.'
                f'{window}</p>' + _records_table(rows, regs, rules))
        return html_response(_page("Payments in doubt", body, here="/ui/doubt"))

    async def reconciliations_page(request):
        store = request.query.get("store") or None
        rows = await ctx.run(target.reconciliations, store, 200)
        out = []
        for r in rows:
            counts = r.get("counts") or {}
            detail = ", ".join(f"{e(k)} {e(v)}" for k, v in sorted(counts.items()) if v) if isinstance(counts, dict) \
                else e(counts)
            out.append(([e(r.get("at", "")), f'<a href="/ui/store?{e(_q(store=r["store"], day=r["day"]))}">'
                         f'{e(r["store"])}</a>', e(r["day"]), e(r.get("till", "")),
                         "ok" if r["ok"] else f'<strong>{e(r["discrepancies"])} discrepancies</strong>', detail,
                         "ok" if r["store_ok"] else f'{e(r["store_discrepancies"])} discrepancies',
                         e(r.get("host", ""))], "" if r["ok"] else "critical"))
        body = _table(["at (UTC)", "store", "day", "till", "till result", "findings", "store result", "host"], out,
                      cls="reconciliations")
        title = "Reconciliations" + (f" of {store}" if store else "")
        return html_response(_page(title, body, here="/ui/reconciliations"))

    async def zreports_page(request):
        store = request.query.get("store") or None
        regs = {r.journal_id: r for r in await ctx.run(target.registrations)}
        jids = None if store is None else [j for j, r in regs.items() if r.store == store]
        rows = await ctx.run(target.day_closes, jids, 200)
        out = []
        for r in rows:
            rep = r["report"]
            reg = regs.get(uuid.UUID(r["journal_id"]))
            txns = rep.get("txns") if isinstance(rep.get("txns"), list) else []
            lines = "".join(
                f"<tr><td>{e(_enum_name(Kind, t[0]))}</td><td>{e(_enum_name(State, t[1]))}</td>"
                f"<td>{e(_enum_name(Method, t[2]))}</td><td class=num>{e(t[4])}</td>"
                f"<td class=num>{e(money(int(t[5]), int(t[3])))}</td></tr>"
                for t in txns if isinstance(t, list) and len(t) >= 6 and all(isinstance(v, int) for v in t[:6]))
            detail = (f"<details><summary>{len(txns)} lines</summary><table><tr><th>kind</th><th>state</th>"
                      f"<th>method</th><th>count</th><th>amount</th></tr>{lines}</table></details>")
            in_doubt = rep.get("in_doubt") if isinstance(rep.get("in_doubt"), list) else []
            closed = rep.get("day") if isinstance(rep.get("day"), str) else day_to_date(r["day"]).isoformat()
            out.append(([e(reg.store if reg else ""), e(reg.till if reg else r["journal_id"][:8]),
                         e(closed), e(r["receipt_no"]),
                         e("all" if not r["terminal"] else r["terminal"]), e(money(r["amount"], r["currency"])),
                         e(len(in_doubt)), detail], "warning" if in_doubt else ""))
        body = _table(["store", "till", "day", "Z", "scope", "net", "forced with in doubt", "totals"], out,
                      cls="zreports", num=(3, 5, 6))
        return html_response(_page("Z-reports" + (f" of {store}" if store else ""), body, here="/ui/zreports"))

    async def search_page(request):
        q = request.query.get("q", "").strip()[:200]
        body = ""
        if q:
            rows = await ctx.run(target.search, q)
            regs = {r.journal_id: r for r in await ctx.run(target.registrations)}
            rules = await ctx.run(target.day_rules)
            body = f'<p id="result-count">{len(rows)} records match <strong>{e(q)}</strong>.</p>' + \
                _records_table(rows, regs, rules)
        else:
            body = "<p>Search by order ref, host ref, client ref, RRN or receipt code (3-000123).</p>"
        return html_response(_page("Search", body, q=q))

    app.router.add_get("/ui/login", login_get)
    app.router.add_post("/ui/login", login_post)
    app.router.add_post("/ui/logout", logout)
    app.router.add_get("/ui", admin_page(fleet_page))
    app.router.add_get("/ui/", admin_page(fleet_page))
    app.router.add_get("/ui/store", admin_page(store_page))
    app.router.add_get("/ui/doubt", admin_page(doubt_page))
    app.router.add_get("/ui/reconciliations", admin_page(reconciliations_page))
    app.router.add_get("/ui/zreports", admin_page(zreports_page))
    app.router.add_get("/ui/search", admin_page(search_page))
