"""The HTTP target (:class:`HttpTarget`, a client of ``posfast serve``) and :func:`target_from_url`."""
from __future__ import annotations

import base64
import binascii
import http.client
import json
import os
import threading
import urllib.parse
from typing import Optional

from .postgres import PostgresTarget
from .protocol import (ECHO_LIMIT, REASONS, Ack, clean_status, JournalState, SyncBadAck, SyncConfigError, SyncRefused,
                       SyncUnavailable, as_uuid, clip, encode_batch, safe_dsn)
from .sqlite import SqliteTarget

__all__ = ["HttpTarget", "target_from_url"]


class HttpTarget:
    """Client of ``posfast serve`` using only the standard library.

    One keep-alive connection, re-opened once on a dropped connection (a re-sent
    batch is safe: the server de-duplicates).  HTTP 409/400/401/403/413 become
    :class:`SyncRefused`; connection errors, time-outs, 408/429 and 5xx
    :class:`SyncUnavailable`.  A 200 counts only if it acknowledges exactly the
    batch sent (journal id, first and last seq, stored + duplicates = count, the
    last record's link), else :class:`SyncBadAck` and the watermark stays.

    TLS (``https://``): the server's certificate is checked against the system's
    trust store, or only against ``ca_file`` (a PEM file of CA certificates) when
    given.  ``client_cert`` for mutual TLS (``posfast serve --client-ca``) is either
    the path of one PEM file holding the certificate and its private key, or a
    ``(cert_file, key_file)`` tuple.

    >>> target = HttpTarget("https://bo.example:8443", token=tok, ca_file="store-ca.pem",
    ...                     client_cert=("till-7.crt", "till-7.key"))       # doctest: +SKIP
    """

    def __init__(self, url: str, token: str, *, timeout: float = 30.0, ca_file=None, client_cert=None):
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise SyncConfigError(f"sync URL {clip(url)!r} is malformed ({exc}); write it as "
                                  "http(s)://HOST:PORT, e.g. https://10.0.0.5:8443 or http://[::1]:8080") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SyncConfigError(f"not an http(s) URL: {clip(url)!r}; write it as http(s)://HOST:PORT")
        if not token:
            raise SyncConfigError(f"{clip(url)} needs the journal's token: --token-file FILE, or the "
                                  "POSFAST_SYNC_TOKEN environment variable")
        if (ca_file or client_cert) and parts.scheme != "https":
            raise SyncConfigError(f"--ca-file / client certificates need an https:// URL, not {clip(url)!r}")
        self.url = url.rstrip("/")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = port
        self._prefix = parts.path.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.ca_file = None if ca_file is None else str(ca_file)
        self.client_cert = client_cert
        self._ssl = self._ssl_context() if parts.scheme == "https" else None
        self._conn: Optional[http.client.HTTPConnection] = None
        self._lock = threading.Lock()

    def _ssl_context(self):
        import ssl
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise SyncConfigError(f"cannot read CA file {self.ca_file}: {exc}") from None
        cert = self.client_cert
        if cert is not None:
            certfile, keyfile = (cert, None) if isinstance(cert, (str, os.PathLike)) else tuple(cert)
            try:
                ctx.load_cert_chain(str(certfile), None if keyfile is None else str(keyfile))
            except (OSError, ssl.SSLError) as exc:
                raise SyncConfigError(f"cannot load client certificate {certfile} (key {keyfile}): {exc}") from None
        return ctx

    def __repr__(self):
        return f"HttpTarget({self.url!r})"

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._scheme == "https":
                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout,
                                                         context=self._ssl)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        return self._conn

    def _request(self, method: str, path: str, body: Optional[bytes] = None) -> tuple:
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        with self._lock:
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    conn.request(method, self._prefix + path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    if resp.will_close:
                        conn.close()
                        self._conn = None
                    return resp.status, data
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                        http.client.BadStatusLine) as exc:
                    conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise SyncUnavailable(f"{self.url}: connection lost ({exc})") from exc
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    self._conn = None
                    import ssl
                    if isinstance(exc, ssl.SSLCertVerificationError):
                        raise SyncUnavailable(f"{self.url}: the server's TLS certificate is not trusted "
                                              f"({exc.verify_message or exc}); pass the CA that signed it "
                                              "with --ca-file") from exc
                    raise SyncUnavailable(f"{self.url}: {exc or type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    @staticmethod
    def _error(status: int, data: bytes, where: dict):
        try:
            doc = json.loads(data)
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        message = doc.get("message")
        message = clip(message if isinstance(message, str) and message else
                       data[:ECHO_LIMIT].decode("utf-8", "replace") or f"HTTP {status}")
        if status >= 500 or status in (408, 429) or not 400 <= status < 500:
            return SyncUnavailable(f"server answered {status}: {message}")
        reason = doc.get("reason")
        if reason not in REASONS:
            reason = "auth" if status in (401, 403) else "invalid"
        high = doc.get("high_seq")
        return SyncRefused(message, reason, high_seq=high if isinstance(high, int) else None,
                           status=status, **where)

    def push(self, batch, *, anchor: bool = False, day_rule=None) -> Ack:
        """POST a batch; return the server's ack or raise SyncRefused / SyncUnavailable / SyncBadAck."""
        jid = as_uuid(batch.journal_id)
        body = encode_batch(batch, anchor=anchor, day_rule=day_rule)
        seqs = batch.rows["seq"]
        first, last, count = int(seqs[0]), int(seqs[-1]), len(seqs)
        where = dict(journal_id=jid, first_seq=first, last_seq=last)
        status, data = self._request("POST", f"/v1/journals/{jid}/batches", body)
        if status != 200:
            raise self._error(status, data, where)
        return self._check_ack(data, jid, first, last, count, bytes(batch.links[-1]))

    def _check_ack(self, data: bytes, jid, first: int, last: int, count: int, last_link: bytes) -> Ack:
        """The 200's body must acknowledge exactly this batch; anything else is SyncBadAck."""
        def bad(why):
            return SyncBadAck(f"{self.url} answered 200 but {why}; the records of journal {jid} seqs {first}..{last} "
                              "are not counted as synced (is this URL really a posfast sync server?)")
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            raise bad(f"not with JSON ({clip(data[:ECHO_LIMIT].decode('utf-8', 'replace'))!r})") from None
        if not isinstance(doc, dict) or doc.get("ok") is not True:
            raise bad("not with an acknowledgement")
        ints = {k: doc.get(k) for k in ("high_seq", "stored", "duplicates", "first_seq", "last_seq", "count")}
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in ints.values()):
            raise bad("the acknowledgement lacks the seq range and counts")
        if doc.get("journal_id") != str(jid):
            raise bad(f"for journal {clip(doc.get('journal_id'))!r}")
        if (ints["first_seq"], ints["last_seq"], ints["count"]) != (first, last, count):
            raise bad(f"for seqs {ints['first_seq']}..{ints['last_seq']} ({ints['count']} records), not the "
                      f"{count} sent")
        if ints["stored"] + ints["duplicates"] != count:
            raise bad(f"says {ints['stored']} stored + {ints['duplicates']} duplicates for {count} records")
        if ints["high_seq"] < last:
            raise bad(f"holds only up to seq {ints['high_seq']}")
        try:
            link = base64.b64decode(doc.get("last_link") or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            link = b""
        if link != last_link:
            raise bad(f"with another link for seq {last} than the journal's")
        return Ack(jid, ints["high_seq"], ints["stored"], ints["duplicates"], first, last, link)

    def report_status(self, journal_id, status: Optional[dict]) -> None:
        """A heartbeat: ``POST /v1/journals/<id>/status`` with what the terminal says of itself
        (``{"terminal": {...}}``).  A server of an older posfast (404) is left alone."""
        jid = as_uuid(journal_id)
        body = json.dumps({"terminal": clean_status(status) or {}}, separators=(",", ":")).encode("ascii")
        code, data = self._request("POST", f"/v1/journals/{jid}/status", body)
        if code not in (200, 404, 405):
            raise self._error(code, data, dict(journal_id=jid))

    def state(self, journal_id) -> Optional[JournalState]:
        """What the server's back office holds of this journal (None if nothing)."""
        jid = as_uuid(journal_id)
        status, data = self._request("GET", f"/v1/journals/{jid}")
        if status != 200:
            raise self._error(status, data, dict(journal_id=jid))
        doc = json.loads(data)
        if not doc.get("high_seq"):
            return None
        return JournalState(jid, doc["anchor_seq"], doc["high_seq"], base64.b64decode(doc["last_link"]),
                            doc["records"])


def target_from_url(url: str, token: Optional[str] = None, **options):
    """Build a target from a URL (what ``posfast sync --to URL`` takes).

    >>> target_from_url("sqlite:///back.db")                          # doctest: +SKIP
    SqliteTarget('back.db')
    >>> target_from_url("http://10.0.0.5:8080", token="s3cret")       # doctest: +SKIP
    HttpTarget('http://10.0.0.5:8080')

    ``sqlite:///relative.db`` and ``sqlite:////absolute/path.db`` (SQLAlchemy style);
    ``postgresql://`` / ``postgres://`` DSNs; ``http(s)://`` needs ``token``.
    """
    create = options.pop("create", False)
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        if not url.startswith("sqlite:///"):
            raise SyncConfigError(f"SQLite URLs look like sqlite:///back.db (relative to the current directory) "
                                  f"or sqlite:////abs/back.db (absolute), not {clip(url)!r}")
        path = url[len("sqlite:///"):]
        if not path:
            raise SyncConfigError(f"no database file in {clip(url)!r}")
        return SqliteTarget(path, create=create, **options)
    if scheme in ("postgresql", "postgres"):
        return PostgresTarget(url, **options)
    if scheme in ("http", "https"):
        if not token:
            raise SyncConfigError(f"{clip(url)} needs a token (the journal's token on the sync server): pass "
                                  "--token-file FILE or set POSFAST_SYNC_TOKEN")
        return HttpTarget(url, token, **options)
    raise SyncConfigError(f"unknown sync target {clip(safe_dsn(url))!r}: use sqlite:///FILE, postgresql://... or "
                          "http(s)://HOST:PORT")
