# cython: language_level=3
"""posfast._core: the compiled ring file (formats 1 and 2), its checksums and records.

Services never import this module; they use posfast.Journal.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t, INT64_MIN, INT64_MAX
from libc.string cimport memcpy, memset, memcmp
from libc.stdlib cimport malloc, calloc, free
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING

from pf cimport *

from posfast.errors import (CorruptRecord, FormatVersionError, IOFailure, JournalClosed,
                            JournalExists, JournalFull, JournalLocked, JournalNotFound,
                            InvalidRecord)

include "checksum.pxi"
include "record.pxi"
include "fields.pxi"
include "ring.pxi"
include "bulk.pxi"
