"""Where ``reconcile`` reads the host side: an acquirer settlement file, or a back office
read through the sync package (:meth:`posfast.sync.SqliteTarget.read_day` and its
PostgreSQL twin); reconcile never writes SQL against the back-office schema.

>>> host_source("sqlite:///back.db").label
'back.db'
>>> host_source("postgresql://bo:secret@db/backoffice").label
'postgresql://bo:***@db/backoffice'
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Protocol, runtime_checkable

from ..sync import DayRecords, PostgresTarget, SqliteTarget, safe_dsn
from .settlement import Settlement

__all__ = ["DayReader", "HostSource", "host_source", "safe_dsn"]


@runtime_checkable
class DayReader(Protocol):
    """Anything reconcile can read a back office's business day from (the sync targets)."""

    def read_day(self, journal_id, first_day, last_day, terminal=None) -> DayRecords:
        ...


@dataclass
class HostSource:
    """The host side of a reconciliation, before anything is read from it."""
    kind: str                                  # "settlement" or "back_office"
    settlement: Optional[Settlement] = None    # a Settlement the caller parsed already
    path: Optional[str] = None                 # settlement CSV, or back-office SQLite file
    dsn: Optional[str] = None                  # back-office PostgreSQL DSN
    reader: Optional[DayReader] = None         # a back-office target the caller passed

    @property
    def label(self) -> str:
        """How the report names the host (a DSN's password masked)."""
        if self.path is not None:
            return self.path
        if self.dsn is not None:
            return safe_dsn(self.dsn)
        return repr(self.reader if self.reader is not None else self.settlement)

    def read_day(self, journal_id, first_day, last_day, terminal=None) -> DayRecords:
        """The back office's payment records of those days (see ``posfast.sync.BackOffice.read_day``);
        a back office given as a URL or a path is opened read-only for this and closed."""
        if self.kind != "back_office":
            raise TypeError("a settlement file is not a back office")
        if self.reader is not None:
            return self.reader.read_day(journal_id, first_day, last_day, terminal)
        if self.path is not None:
            if not os.path.exists(self.path):
                raise FileNotFoundError("posfast: no back-office database %s" % self.path)
            target = SqliteTarget(self.path, readonly=True)
        else:
            target = PostgresTarget(self.dsn, readonly=True)
        try:
            return target.read_day(journal_id, first_day, last_day, terminal)
        finally:
            target.close()


def host_source(host) -> HostSource:
    """What `host` (as :func:`posfast.reconcile.reconcile` takes it) is: a
    :class:`Settlement`, a back-office target (anything with ``read_day``), a
    ``sqlite:///FILE`` or ``postgresql://`` URL, a back-office SQLite file or a
    settlement CSV file."""
    if isinstance(host, Settlement):
        return HostSource("settlement", settlement=host)
    if isinstance(host, SqliteTarget):
        return HostSource("back_office", path=str(host.path), reader=host)
    if isinstance(host, PostgresTarget):
        return HostSource("back_office", dsn=host.dsn, reader=host)
    if isinstance(host, DayReader):
        return HostSource("back_office", reader=host)
    if isinstance(host, os.PathLike):
        host = os.fspath(host)
    if not isinstance(host, str):
        raise TypeError("host must be a back-office URL or target, a settlement CSV path or a "
                        "Settlement, not %s" % type(host).__name__)
    lower = host.lower()
    if lower.startswith("sqlite:///"):
        return HostSource("back_office", path=host[len("sqlite:///"):])
    if lower.startswith(("postgresql://", "postgres://")):
        return HostSource("back_office", dsn=host)
    if lower.startswith(("http://", "https://")):
        raise ValueError("reconcile reads the back-office database itself: give the database the "
                         "sync server writes to (sqlite:///FILE or postgresql://...), not %s" % host)
    if not os.path.exists(host):
        raise FileNotFoundError("posfast: no host file %s (give a settlement .csv, a back-office "
                                "SQLite file, sqlite:///FILE or postgresql://...)" % host)
    with open(host, "rb") as handle:
        magic = handle.read(16)
    if magic == b"SQLite format 3\x00":
        return HostSource("back_office", path=host)
    return HostSource("settlement", path=host)
