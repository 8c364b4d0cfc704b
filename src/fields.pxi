# One record's keyword fields packed straight into a RECORD_DTYPE row: the path of a single
# append (Journal.append, begin_payment, finish_payment), which pays for every Python step it
# takes after each fdatasync (the caches are cold by then).
#
# It only accepts: every field exactly as the documented common case gives it (an int, an
# enum's lower-case name, ASCII text or bytes that fit) and everything valid.  Anything else
# -- an unknown field, a float, a negative amount, a time far off, non-ASCII text -- makes it
# decline (return 0), and the caller validates in Python (posfast.records.row_values), which
# accepts the rest and words every refusal.  So there is one place that decides what is
# refused and how it is said; this one only agrees with it faster.

from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.bool cimport PyBool_Check
cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME

DEF F_TS = 0
DEF F_TERMINAL = 1
DEF F_KIND = 2
DEF F_STATE = 3
DEF F_METHOD = 4
DEF F_FLAGS = 5
DEF F_CURRENCY = 6
DEF F_AMOUNT = 7
DEF F_TXN_ID = 8
DEF F_REF_SEQ = 9
DEF F_RECEIPT_NO = 10
DEF F_OPERATOR = 11
DEF F_CLIENT_REF = 12
DEF F_PAN_LAST4 = 13
DEF F_AUTH_CODE = 14
DEF F_RRN = 15
DEF F_CHANNEL = 16

cdef dict _FIELD_CODES = {
    "ts": F_TS, "terminal": F_TERMINAL, "kind": F_KIND, "state": F_STATE, "method": F_METHOD,
    "flags": F_FLAGS, "currency": F_CURRENCY, "amount": F_AMOUNT, "txn_id": F_TXN_ID,
    "ref_seq": F_REF_SEQ, "receipt_no": F_RECEIPT_NO, "operator": F_OPERATOR,
    "client_ref": F_CLIENT_REF, "pan_last4": F_PAN_LAST4, "auth_code": F_AUTH_CODE,
    "rrn": F_RRN, "channel": F_CHANNEL}
# (row offset, width) of the text fields, by code - F_CLIENT_REF
cdef int _TEXT_AT[5]
_TEXT_AT[:] = [PFW_CLIENT_REF, PFW_PAN_LAST4, PFW_AUTH_CODE, PFW_RRN, PFW_CHANNEL]
cdef int _TEXT_WIDTH[5]
_TEXT_WIDTH[:] = [16, 4, 6, 12, 10]

cdef list _enum_names = [None, None, None]   # kind, state, method: {lower-case name: value}
cdef uint8_t _enum_ok[3][256]
cdef uint8_t _payment_kind[256]
cdef bint _tables_set = False
cdef int64_t _ts_min = 0, _ts_ahead = 0


def set_field_tables(kinds, states, methods, payment_kinds, int64_t ts_min, int64_t ts_ahead):
    """What the fast path accepts, from posfast.records (which owns the enums and the time
    bounds): three {lower-case name: value} maps, the payment kinds' values, the oldest
    accepted ts and how far ahead of the clock one may be."""
    global _tables_set, _ts_min, _ts_ahead
    cdef int e, v
    memset(_enum_ok, 0, sizeof(_enum_ok))
    memset(_payment_kind, 0, sizeof(_payment_kind))
    for e, names in enumerate((kinds, states, methods)):
        _enum_names[e] = dict(names)
        for v in names.values():
            _enum_ok[e][<uint8_t>v] = 1
    for v in payment_kinds:
        _payment_kind[<uint8_t>v] = 1
    _ts_min, _ts_ahead = ts_min, ts_ahead
    _tables_set = True


cdef inline bint _int_in(object value, int64_t lo, int64_t hi, int64_t *out):
    cdef int overflow = 0
    cdef long long v
    if type(value) is not int:
        return False
    v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow or v < lo or v > hi:
        return False
    out[0] = v
    return True


cdef inline bint _text_into(object value, uint8_t *dst, int width):
    cdef const char *p
    cdef Py_ssize_t n
    if type(value) is bytes:
        p = PyBytes_AS_STRING(value)
        n = len(<bytes>value)
    elif type(value) is str and PyUnicode_IS_ASCII(value):
        value = (<str>value).encode("ascii")
        p = PyBytes_AS_STRING(value)
        n = len(<bytes>value)
    else:
        return False
    if n > width or (n and p[n - 1] == 0):
        return False
    memcpy(dst, p, n)
    return True


cdef int _pack_fields(dict fields, uint8_t *row, int64_t day_shift, object day_of) except -1:
    """Pack `fields` into `row` (PFW_SIZE bytes); 1 when it did, 0 when the caller must take
    Python's path (see the top of this file)."""
    cdef int64_t v = 0, ts = 0, amount = 0, currency = -1, shifted
    cdef int code, e, kind = -1
    cdef bint have_ts = False
    cdef timespec now
    if not _tables_set:
        return 0
    memset(row, 0, PFW_SIZE)
    for name, value in fields.items():
        if value is None:
            continue
        found = _FIELD_CODES.get(name)
        if found is None:
            return 0
        code = found
        if F_KIND <= code <= F_METHOD:
            e = code - F_KIND
            if type(value) is str:
                known = (<dict>_enum_names[e]).get(value)
                if known is None:
                    return 0
                v = known
            elif isinstance(value, int) and not PyBool_Check(value):
                if not _int_in(int(value), 0, 255, &v) or not _enum_ok[e][v]:
                    return 0
            else:
                return 0
            row[PFW_KIND + e] = <uint8_t>v
            if code == F_KIND:
                kind = <int>v
        elif code >= F_CLIENT_REF:
            if not _text_into(value, row + _TEXT_AT[code - F_CLIENT_REF],
                              _TEXT_WIDTH[code - F_CLIENT_REF]):
                return 0
        elif code == F_TS:
            if not _int_in(value, _ts_min, <int64_t>1 << 62, &ts):
                return 0
            have_ts = True
        elif code == F_AMOUNT:
            if not _int_in(value, INT64_MIN, INT64_MAX, &amount):
                return 0
        elif code == F_TERMINAL or code == F_RECEIPT_NO or code == F_OPERATOR:
            if not _int_in(value, 0, 0xFFFFFFFF, &v):
                return 0
            pf_st32(row + (PFW_TERMINAL if code == F_TERMINAL else
                           PFW_RECEIPT_NO if code == F_RECEIPT_NO else PFW_OPERATOR), <uint32_t>v)
        elif code == F_CURRENCY:
            if not _int_in(value, 0, 999, &currency):
                return 0
        elif code == F_FLAGS:
            if not _int_in(value, 0, 255, &v):
                return 0
            row[PFW_FLAGS] = <uint8_t>v
        else:                                       # txn_id, ref_seq
            if not _int_in(value, 0, INT64_MAX, &v):
                return 0
            pf_st64(row + (PFW_TXN_ID if code == F_TXN_ID else PFW_REF_SEQ), <uint64_t>v)
    if kind < 0:
        return 0                                    # (a record needs a kind: Python says so)
    if _payment_kind[kind] and (amount < 0 or currency == 0 or currency == 999):
        return 0
    clock_gettime(CLOCK_REALTIME, &now)
    v = <int64_t>now.tv_sec * 1000000 + now.tv_nsec // 1000
    if not have_ts:
        ts = v
    elif ts > v + _ts_ahead:
        return 0
    if day_of is None:
        shifted = ts + day_shift
        if shifted < 0:
            return 0
        v = shifted // 86400000000
    else:
        v = day_of(ts)
    pf_st64(row + PFW_TS, <uint64_t>ts)
    pf_st64(row + PFW_AMOUNT, <uint64_t>amount)
    pf_st32(row + PFW_DAY, <uint32_t><int32_t>v)
    pf_st16(row + PFW_CURRENCY, <uint16_t>(currency if currency > 0 else 0))
    return 1


cdef inline uint64_t _client_ext_len(const uint8_t *row) noexcept nogil:
    """Bytes of the extension a row's client_ref makes (its TLV; 0 when it has none).  The
    key is the field without its trailing NULs (as numpy reads an S16 field); NULs inside it
    are its own bytes."""
    cdef uint64_t k = 16
    while k and row[PFW_CLIENT_REF + k - 1] == 0:
        k -= 1
    return k + 2 if k else 0


cdef inline Py_ssize_t _put_tlv(uint8_t *out, int tag, const uint8_t *p, Py_ssize_t n) noexcept nogil:
    if n == 0:
        return 0
    out[0] = <uint8_t>tag
    out[1] = <uint8_t>n
    memcpy(out + 2, p, n)
    return n + 2


def pack_fields(dict fields, int64_t day_shift=0, day_of=None):
    """The RECORD_DTYPE row (bytes, seq 0) the fast path makes of `fields`, or None where it
    declines: what `Ring.append_fields` writes, for tests that hold it to row_values."""
    cdef uint8_t row[120]       # PFW_SIZE
    if not _pack_fields(fields, row, day_shift, day_of):
        return None
    return PyBytes_FromStringAndSize(<char *>row, PFW_SIZE)
