"""What the parts of a journal see of it.

`Journal` composes its parts (`payments.Payments`, `dayclose.DayBook`, and the
`archive.Archive` of a journal with retention="archive"); each part is handed a
`Storage`, never the Journal itself, and uses nothing else of it.  The Journal
implements it (`journal._JournalStorage`); a test may give a part any object that
does.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, List, Optional, Protocol, Tuple

import numpy as np

if TYPE_CHECKING:
    from .index import Index
    from .records import DayRule


@dataclass
class Problem:
    """One finding of `Journal.verify()`: where (slot), which record (seq), why."""
    seq: int
    slot: object
    cause: str
    code: int = 0

    def __str__(self):
        where = "slot %s" % self.slot if self.slot is not None else "slot unknown"
        return "seq %d (%s): %s" % (self.seq, where, self.cause)


class Storage(Protocol):
    path: str
    journal_id: bytes
    readonly: bool
    day_rule: "DayRule"
    lock: threading.RLock          # held for any read-modify-append sequence

    @property
    def index(self) -> "Index": ...
    @property
    def oldest_seq(self) -> int: ...
    @property
    def head_seq(self) -> int: ...
    @property
    def sync_watermark(self) -> int: ...
    @property
    def max_payload(self) -> int: ...
    @property
    def damaged(self) -> List[Tuple[int, Any, str]]: ...   # (seq, slot, cause) found at open

    def refresh(self) -> None: ...                      # a reader catches up with the writer
    def check_writable(self, what: str) -> None: ...    # open, and not read-only
    def get(self, seq: int) -> Any: ...                 # a live or archived Record
    def get_live(self, seq: int) -> Any: ...            # a Record of the ring only
    def slot_of(self, seq: int) -> int: ...             # KeyError if not live
    def read_rows(self, seqs: np.ndarray) -> np.ndarray: ...   # readable rows of live seqs
    def read_rows_status(self, seqs: np.ndarray, out: np.ndarray) -> np.ndarray: ...
    def read_range(self, first_seq: int, last_seq: int) -> Any: ...   # a journal.Batch
    def query(self, day=None, terminal=None, kind=None, since=None, until=None,
              state=None) -> np.ndarray: ...
    def records_where(self, days, terminal: Optional[int] = None) -> np.ndarray: ...
    def payloads(self, seqs) -> list: ...
    def links(self, seqs) -> list: ...                  # stored chain links of live seqs
    def refs(self, seqs) -> list: ...                   # (order_ref, host_ref) bytes of live seqs
    def append(self, payload: bytes = b"", **fields) -> int: ...
    def distrust_index(self, why: str) -> None: ...
    # (optional) a blob saved with the index this open trusted, mapped, and the head it covers
    def saved_blob(self, name: bytes) -> Optional[Tuple[memoryview, int]]: ...
    def index_problem(self, why: str) -> None: ...      # (optional) reported like distrust_index
    def crc32c(self, data: Any, crc: int = 0) -> int: ...   # (optional) the core's CRC32C
    # the day's payment totals (posfast.totals.Totals), kept as records are appended; None when
    # they cannot hold all of the day (part of it archived before they were built)
    def day_totals(self, day: int, terminal: Optional[int] = None) -> Any: ...
    def in_doubt_of_day(self, day: int, terminal: Optional[int] = None) -> List[int]: ...
