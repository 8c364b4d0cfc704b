"""Finding a running agent and calling it, with the standard library only (what the CLI's
write verbs use when an agent holds the journal).

An agent writes a discovery file beside its journal (``JOURNAL.agent``, mode 0600) naming its
socket or address; :func:`find_agent` reads it and checks it live: the agent must answer on
that socket and hold the same journal, else the file is stale (an agent killed with SIGKILL
leaves it behind) and None is returned.

>>> find_agent("/nowhere/till.pfj") is None
True
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import uuid
from typing import Any, Optional, Tuple
from urllib.parse import urlsplit

from ..errors import InvalidArgument, IOFailure, JournalFull, PosfastError

__all__ = ["AgentClient", "discovery_path", "find_agent", "socket_path_for"]


def discovery_path(journal_path) -> str:
    """Where an agent of `journal_path` writes its discovery file: ``JOURNAL.agent``."""
    return os.fspath(journal_path) + ".agent"


def socket_path_for(journal_path) -> str:
    """The agent's default Unix socket: ``JOURNAL.sock``, beside the journal."""
    return os.fspath(journal_path) + ".sock"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class AgentClient:
    """A connection to a posfast agent: its Unix socket, or its ``http(s)://host:port`` with
    a bearer token.  ``call`` returns ``(status, document)``; ``request`` raises the posfast
    error of a refusal (``conflict``: the class for 404 and 409 answers).

    >>> AgentClient(socket_path="/run/posfast/till.pfj.sock")   # doctest: +SKIP
    """

    def __init__(self, socket_path: Optional[str] = None, url: Optional[str] = None,
                 token: Optional[str] = None, timeout: float = 60.0, ca_file: Optional[str] = None):
        if (socket_path is None) == (url is None):
            raise InvalidArgument("AgentClient: give socket_path or url")
        self.socket_path, self.url, self.token, self.timeout = socket_path, url, token, timeout
        self.ca_file = ca_file
        self._conn: Optional[http.client.HTTPConnection] = None

    def describe(self) -> str:
        return "unix:%s" % self.socket_path if self.socket_path else str(self.url)

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.socket_path is not None:
                self._conn = _UnixConnection(self.socket_path, self.timeout)
            else:
                parts = urlsplit(str(self.url))
                if parts.scheme == "https":
                    context = ssl.create_default_context(cafile=self.ca_file)
                    self._conn = http.client.HTTPSConnection(parts.hostname or "", parts.port,
                                                             timeout=self.timeout, context=context)
                else:
                    self._conn = http.client.HTTPConnection(parts.hostname or "", parts.port,
                                                            timeout=self.timeout)
        return self._conn

    def call(self, method: str, path: str, body: Any = None) -> Tuple[int, Any]:
        """One request; ``(HTTP status, the JSON answer)``."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        conn = self._connection()
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (http.client.HTTPException, OSError):
            self.close()
            raise
        if resp.getheader("Connection", "").lower() == "close":
            self.close()
        return resp.status, json.loads(raw) if raw else None

    def request(self, method: str, path: str, body: Any = None, conflict=PosfastError,
                unavailable=IOFailure) -> Any:
        """`call`, raising the posfast error of a 4xx or 5xx answer (its message, the field):
        `conflict` for 404 and 409, `unavailable` for a 503 other than a full journal."""
        status, doc = self.call(method, path, body)
        if status < 400:
            return doc
        message = "posfast: the agent (%s) refused it: %s" % (self.describe(), _refusal_text(doc))
        reason = doc.get("reason") if isinstance(doc, dict) else None
        if status == 400:
            raise InvalidArgument(message)
        if status == 401:
            raise PermissionError(message)
        if status in (404, 409):
            raise conflict(message)
        if reason == "full":
            raise JournalFull(message)
        raise unavailable(message)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _refusal_text(doc) -> str:
    if not isinstance(doc, dict):
        return repr(doc)[:200]
    field = doc.get("field")
    return "%s%s" % ("%s: " % field if field and not str(doc.get("message", "")).startswith(field)
                     else "", doc.get("message", ""))


def find_agent(journal_path, timeout: float = 60.0) -> Optional[AgentClient]:
    """A client of the agent that holds `journal_path` now, or None (no discovery file, or a
    stale one: nothing answers there, or what answers holds another journal)."""
    try:
        with open(discovery_path(journal_path), encoding="utf-8") as fh:
            info = json.load(fh)
        journal_id = uuid.UUID(str(info["journal_id"]))
        if not os.path.samefile(info["journal"], os.fspath(journal_path)):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    token = None
    if info.get("token_file"):
        try:
            with open(info["token_file"], encoding="utf-8") as fh:
                token = fh.read().strip()
        except OSError:
            return None
    if info.get("socket"):
        client = AgentClient(socket_path=info["socket"], timeout=timeout)
    elif info.get("url"):
        client = AgentClient(url=info["url"], token=token, timeout=timeout, ca_file=info.get("ca_file"))
    else:
        return None
    try:
        status, doc = client.call("GET", "/v1/health")
    except (OSError, http.client.HTTPException, ValueError):
        client.close()
        return None
    if status != 200 or not isinstance(doc, dict) or doc.get("journal_id") != str(journal_id):
        client.close()
        return None
    return client
