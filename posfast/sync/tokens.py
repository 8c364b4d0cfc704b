"""Sync and admin tokens kept in the back-office database, and who a presented token is.

A token is issued once (``posfast register --issue-token``, :meth:`BackOffice.issue_token`),
shown once, and stored only as its SHA-256 digest (hex) in the ``tokens`` table, with its
role: ``terminal`` (it pushes and reads one journal, nothing else) or ``admin`` (head
office: the admin API, ``/metrics`` and the dashboard; it cannot push records).  Revoking
(:meth:`BackOffice.revoke_token`, ``posfast register --revoke``) stamps ``revoked_us``.

:class:`TokenAuth` is what a running ``posfast serve`` asks: it looks a digest up in the
database and caches the answer for ``ttl`` seconds (default 5), so a token issued or
revoked while the server runs takes effect within that time, with no restart and one
small query per token per ``ttl`` at most.  Tokens given to the server itself
(``--token``, ``--tokens-file``: the 0.x way) stay valid beside the database's, as
terminal tokens of their journal.
"""
from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

from ..errors import SyncConfigError

__all__ = ["ADMIN", "DEFAULT_TOKEN_TTL", "MIN_TOKEN_LENGTH", "Principal", "ROLES", "TERMINAL", "TokenAuth",
           "TokenInfo", "check_token_text", "new_token", "token_digest", "token_id_of"]

TERMINAL = "terminal"
ADMIN = "admin"
ROLES = (TERMINAL, ADMIN)
#: Shortest token accepted (characters).
MIN_TOKEN_LENGTH = 16
#: Seconds a running server trusts its cached answer for a token (issued / revoked tokens
#: take effect within this time).
DEFAULT_TOKEN_TTL = 5.0
#: How issued tokens start (so a leaked one is recognisable in logs and secret scanners).
TOKEN_PREFIX = "pft_"


def token_digest(token: str) -> str:
    """The SHA-256 digest (hex) a token is stored and looked up by."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_id_of(digest_hex: str) -> str:
    """A token's public id: the first 12 hex digits of its digest (what lists and
    ``--revoke`` name; it tells nothing of the token)."""
    return digest_hex[:12]


def new_token() -> str:
    """A fresh token: ``pft_`` and 32 random bytes, base64url (47 characters)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_token_text(token: str, journal_id=None, where: str = "") -> str:
    """A token as posfast accepts it (at least 16 printable characters, no spaces); errors
    never repeat the token."""
    whose = f"token of journal {journal_id}" if journal_id is not None else "token"
    if len(token) < MIN_TOKEN_LENGTH:
        raise SyncConfigError(f"{where}{whose} is {len(token)} characters; tokens must be at "
                              f"least {MIN_TOKEN_LENGTH} (make one with: python3 -c 'import secrets; "
                              "print(secrets.token_urlsafe(24))', or let posfast register --issue-token "
                              "make it)")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise SyncConfigError(f"{where}{whose} holds spaces or control characters")
    return token


@dataclass(frozen=True)
class TokenInfo:
    """A token as the back office keeps it (never the token itself)."""
    token_id: str
    role: str
    journal_id: Optional[uuid.UUID]
    label: str
    issued_us: int
    revoked_us: Optional[int] = None

    @property
    def revoked(self) -> bool:
        return self.revoked_us is not None

    def to_dict(self) -> dict:
        return {"token_id": self.token_id, "role": self.role,
                "journal_id": "" if self.journal_id is None else str(self.journal_id),
                "label": self.label, "issued_us": self.issued_us, "revoked_us": self.revoked_us,
                "revoked": self.revoked}


@dataclass(frozen=True)
class Principal:
    """Who a request's token is: its role, the journal of a terminal token, and where the
    token came from (``"db"`` or ``"static"`` for ``--token`` / ``--tokens-file``)."""
    role: str
    journal_id: Optional[uuid.UUID]
    token_id: str
    label: str = ""
    source: str = "db"

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


class TokenAuth:
    """Who a token is, for a running server: static tokens (``{token: journal_id}``, or
    ``{sha256 digest bytes: journal_id}``) first, then the back office's ``tokens`` table through
    ``target.token_lookup(digest)``, cached for ``ttl`` seconds (issued and revoked
    tokens take effect within ``ttl``; 0: ask the database every time).

    >>> auth = TokenAuth(SqliteTarget("back.db"))              # doctest: +SKIP
    >>> auth.identify("pft_...").journal_id                     # doctest: +SKIP
    UUID('0b1c9f3e-...')
    """

    def __init__(self, target=None, static: Optional[Mapping] = None, *, ttl: float = DEFAULT_TOKEN_TTL,
                 clock: Callable[[], float] = time.monotonic, max_cached: int = 100_000):
        self.target = target
        self.ttl = float(ttl)
        self._clock = clock
        self._max = max_cached
        self._static: dict = {}
        for key, jid in (static or {}).items():   # bytes keys: SHA-256 digests; str keys: tokens
            digest = key.hex() if isinstance(key, bytes) else token_digest(str(key))
            self._static[digest] = uuid.UUID(str(jid))
        self._cache: dict = {}       # digest -> (expires, Principal or None)
        self._lock = threading.Lock()

    @property
    def static_count(self) -> int:
        return len(self._static)

    def identify(self, token: str) -> Optional[Principal]:
        """The :class:`Principal` of a token, or None (unknown or revoked).  Raises what the
        database raises when it cannot be asked (SyncUnavailable): an unreachable back office
        is never taken for an unknown token."""
        digest = token_digest(token)
        jid = self._static.get(digest)
        if jid is not None:
            return Principal(TERMINAL, jid, token_id_of(digest), "", "static")
        if self.target is None or not hasattr(self.target, "token_lookup"):
            return None
        now = self._clock()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        info = self.target.token_lookup(digest)
        who = None if info is None else Principal(info.role, info.journal_id, info.token_id, info.label, "db")
        if self.ttl > 0:
            with self._lock:
                if len(self._cache) >= self._max:
                    self._cache.clear()
                self._cache[digest] = (now + self.ttl, who)
        return who

    def admin(self, token: str) -> Optional[Principal]:
        """The principal of an admin token, else None (unknown, revoked or a terminal's).
        What the dashboard's login and the admin endpoints check."""
        if not token:
            return None
        who = self.identify(token)
        return who if who is not None and who.is_admin else None

    def forget(self) -> None:
        """Drop the cache (the next request of every token asks the database)."""
        with self._lock:
            self._cache.clear()
