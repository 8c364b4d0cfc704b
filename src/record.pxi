# Records: head encoding/decoding between the disk layout (PFR_*) and the numpy
# row layout of RECORD_DTYPE (PFW_*), the hash-chain link, and the Record object.

ROW_SIZE = PFW_SIZE
# Stack buffers in the .pxi files are sized with these literals (Cython cannot size a C array
# by an extern constant): a layout change that forgets one fails here, at import, not on the stack.
if (PFW_SIZE, PFR_HEAD_SIZE, PFH2_SIZE, PF_MAX_EXT) != (120, 128, 256, 255):
    raise ImportError("posfast._core: buffer sizes out of step with pf_format.h")
HEAD_SIZE = PFR_HEAD_SIZE
LINK_SIZE = PF_LINK_SIZE
FORMAT_VERSION = PF_FORMAT_VERSION
MAX_PAYLOAD = PF_MAX_PAYLOAD
DATA_OFFSET = PF_DATA_OFFSET
HEADER_COPY_SIZE = PF_HEADER_COPY_SIZE
MAX_GROUP_RECORDS = PF_MAX_GROUP_RECORDS
MIN_SLOT = PF_MIN_SLOT
MAX_SLOT = PF_MAX_SLOT
MAX_EXT = PF_MAX_EXT
REF_SIZE = PF_REF_SIZE
CHANNEL_SIZE = PF_CHANNEL_SIZE
TZ_NAME_SIZE = PFH2_TZ_SIZE
CHECKPOINT_WINDOW = PF_CKPT_WINDOW


cdef inline const uint8_t *_ext_field(const uint8_t *ext, uint32_t ext_len, int tag,
                                      uint32_t *length) noexcept nogil:
    # The value of one extension TLV (tag u8, length u8, bytes), or NULL.
    cdef uint32_t i = 0, n
    while i + 2 <= ext_len:
        n = ext[i + 1]
        if i + 2 + n > ext_len:
            return NULL
        if ext[i] == tag:
            length[0] = n
            return ext + i + 2
        i += 2 + n
    return NULL


cdef inline void _decode_head(const uint8_t *head, const uint8_t *ext, uint32_t ext_len,
                              uint8_t *row, uint32_t version, int32_t offset_min,
                              int32_t start_min) noexcept nogil:
    # `ext`: the record's extension bytes (v2), contiguous, ext_len of them (NULL if none);
    # the caller read and bounded ext_len once (the head may change under a reader).
    cdef int64_t ts = <int64_t>pf_ld64(head + PFR_TS)
    cdef const uint8_t *ref
    cdef uint32_t ref_len = 0
    memcpy(row + PFW_SEQ, head + PFR_SEQ, 8)
    memcpy(row + PFW_TS, head + PFR_TS, 8)
    memcpy(row + PFW_AMOUNT, head + PFR_AMOUNT, 8)
    memcpy(row + PFW_TXN_ID, head + PFR_TXN_ID, 8)
    memcpy(row + PFW_REF_SEQ, head + PFR_REF_SEQ, 8)
    memcpy(row + PFW_TERMINAL, head + PFR_TERMINAL, 4)
    memcpy(row + PFW_RECEIPT_NO, head + PFR_RECEIPT_NO, 4)
    memcpy(row + PFW_OPERATOR, head + PFR_OPERATOR, 4)
    memcpy(row + PFW_CURRENCY, head + PFR_CURRENCY, 2)
    memcpy(row + PFW_KIND, head + PFR_KIND, 4)          # kind, state, method, flags
    memcpy(row + PFW_PAN_LAST4, head + PFR_PAN_LAST4, 4)
    memcpy(row + PFW_AUTH_CODE, head + PFR_AUTH_CODE, 6)
    memcpy(row + PFW_RRN, head + PFR_RRN, 12)
    memcpy(row + PFW_PAYLOAD_LEN, head + PFR_PAYLOAD_LEN, 2)
    row[PFW_EXT_LEN] = 0
    row[PFW_EXT_LEN + 1] = 0
    memset(row + PFW_CHANNEL, 0, PFW_SIZE - PFW_CHANNEL)
    if version == PF_FORMAT_V1:
        pf_st32(row + PFW_DAY, <uint32_t>pf_business_day(ts, offset_min, start_min))
        memcpy(row + PFW_CLIENT_REF, head + PFR_CLIENT_REF, 16)
        return
    memcpy(row + PFW_DAY, head + PFR2_DAY, 4)
    memcpy(row + PFW_CHANNEL, head + PFR2_CHANNEL, PF_CHANNEL_SIZE)
    memset(row + PFW_CLIENT_REF, 0, 16)
    row[PFW_EXT_LEN] = <uint8_t>ext_len
    if ext != NULL:
        ref = _ext_field(ext, ext_len, PF_EXT_CLIENT_REF, &ref_len)
        if ref != NULL and ref_len <= 16:
            memcpy(row + PFW_CLIENT_REF, ref, ref_len)


cdef inline void _encode_row(const uint8_t *row, uint8_t *head, uint32_t version) noexcept nogil:
    # seq, pos, crc, link, group offset, payload and extension lengths are the writer's to set.
    memcpy(head + PFR_TS, row + PFW_TS, 8)
    memcpy(head + PFR_AMOUNT, row + PFW_AMOUNT, 8)
    memcpy(head + PFR_TXN_ID, row + PFW_TXN_ID, 8)
    memcpy(head + PFR_REF_SEQ, row + PFW_REF_SEQ, 8)
    memcpy(head + PFR_TERMINAL, row + PFW_TERMINAL, 4)
    memcpy(head + PFR_RECEIPT_NO, row + PFW_RECEIPT_NO, 4)
    memcpy(head + PFR_OPERATOR, row + PFW_OPERATOR, 4)
    memcpy(head + PFR_CURRENCY, row + PFW_CURRENCY, 2)
    memcpy(head + PFR_KIND, row + PFW_KIND, 4)
    memcpy(head + PFR_PAN_LAST4, row + PFW_PAN_LAST4, 4)
    memcpy(head + PFR_AUTH_CODE, row + PFW_AUTH_CODE, 6)
    memcpy(head + PFR_RRN, row + PFW_RRN, 12)
    if version == PF_FORMAT_V1:
        memcpy(head + PFR_CLIENT_REF, row + PFW_CLIENT_REF, 16)
    else:
        # (client_ref goes into the extension, which the caller writes after the head)
        memcpy(head + PFR2_DAY, row + PFW_DAY, 4)
        memcpy(head + PFR2_CHANNEL, row + PFW_CHANNEL, PF_CHANNEL_SIZE)


cdef inline void _link_of(const uint8_t *prev_link, const uint8_t *head,
                          const uint8_t *pay1, size_t len1, const uint8_t *pay2, size_t len2,
                          uint8_t *out) noexcept nogil:
    # The link covers what a record says (seq, fields, payload), not where it
    # sits (pos) nor its checksums, so the back office can recompute it from rows.
    cdef pf_sha256_ctx ctx
    cdef uint8_t digest[32]
    pf_sha256_init(&ctx)
    pf_sha256_update(&ctx, prev_link, PF_LINK_SIZE)
    pf_sha256_update(&ctx, head + PFR_SEQ, 8)
    pf_sha256_update(&ctx, head + PFR_TS, PFR_LINK - PFR_TS)
    if len1:
        pf_sha256_update(&ctx, pay1, len1)
    if len2:
        pf_sha256_update(&ctx, pay2, len2)
    pf_sha256_final(&ctx, digest)
    memcpy(out, digest, PF_LINK_SIZE)


def genesis_link(journal_id):
    """The link that seq 1 chains from: SHA-256("posfast-chain-v1" + journal id)[:16]
    (both format versions)."""
    cdef bytes jid = bytes(journal_id)
    if len(jid) != PF_JID_SIZE:
        raise ValueError("journal id must be 16 bytes")
    return sha256(b"posfast-chain-v1" + jid)[:PF_LINK_SIZE]


def _text_bytes(value, int limit, str name):
    if value is None:
        return b""
    if isinstance(value, str):
        value = value.encode("utf-8")
    value = bytes(value)
    if len(value) > limit:
        raise InvalidRecord("posfast: %s is %d bytes; at most %d" % (name, len(value), limit))
    return value


def encode_ext(client_ref=b"", order_ref=b"", host_ref=b""):
    """The canonical version-2 record extension: a TLV (tag, length, bytes) per reference
    that is set, tags ascending (1 client_ref, 2 order_ref, 3 host_ref); b"" when none is."""
    out = []
    for tag, value, limit, name in ((PF_EXT_CLIENT_REF, client_ref, 16, "client_ref"),
                                    (PF_EXT_ORDER_REF, order_ref, PF_REF_SIZE, "order_ref"),
                                    (PF_EXT_HOST_REF, host_ref, PF_REF_SIZE, "host_ref")):
        raw = _text_bytes(value, limit, name).rstrip(b"\0")
        if raw:
            out.append(bytes((tag, len(raw))) + raw)
    return b"".join(out)


def decode_ext(ext):
    """(client_ref, order_ref, host_ref) bytes of a version-2 extension; ValueError if it is
    not canonical (unknown tag, tags out of order or twice, a length past the end)."""
    cdef bytes raw = bytes(ext)
    found = [b"", b"", b""]
    cdef int i = 0, last = 0, tag, n
    while i < len(raw):
        if i + 2 > len(raw):
            raise ValueError("extension ends inside a field header")
        tag, n = raw[i], raw[i + 1]
        if not PF_EXT_CLIENT_REF <= tag <= PF_EXT_HOST_REF or tag <= last or n == 0 \
                or i + 2 + n > len(raw) or n > (16 if tag == PF_EXT_CLIENT_REF else PF_REF_SIZE):
            raise ValueError("extension field %d at byte %d is not canonical" % (tag, i))
        found[tag - 1] = raw[i + 2:i + 2 + n]
        last = tag
        i += 2 + n
    return tuple(found)


def chain_link(prev_link, row, payload=b"", ext=None, int version=2, order_ref=b"",
               host_ref=b""):
    """Recompute the hash-chain link of one record from its decoded row.

    `row` is one RECORD_DTYPE element (or its raw bytes), `payload` its payload.  In format
    2 the link also covers the record's extension: give it as `ext` (what `Batch.exts`
    holds), or let it be rebuilt from the row's client_ref and `order_ref` / `host_ref`.
    The back office uses this to check that a batch continues the chain it already holds.
    """
    cdef bytes prev = bytes(prev_link)
    cdef bytes raw = bytes(memoryview(row).cast("B")) if not isinstance(row, bytes) else row
    cdef bytes body
    cdef bytes extension = b""
    cdef uint8_t head[128]   # PFR_HEAD_SIZE
    cdef uint8_t out[16]   # PF_LINK_SIZE
    if len(prev) != PF_LINK_SIZE or len(raw) != PFW_SIZE:
        raise ValueError("chain_link needs a 16-byte link and one RECORD_DTYPE row")
    if version not in (1, 2):
        raise ValueError("format version %d: posfast knows 1 and 2" % version)
    memset(head, 0, PFR_HEAD_SIZE)
    _encode_row(<const uint8_t *>PyBytes_AS_STRING(raw), head, version)
    memcpy(head + PFR_SEQ, PyBytes_AS_STRING(raw) + PFW_SEQ, 8)
    if version >= 2:
        extension = bytes(ext) if ext is not None else \
            encode_ext(raw[PFW_CLIENT_REF:PFW_CLIENT_REF + 16], order_ref, host_ref)
        if len(extension) > <Py_ssize_t>PF_MAX_EXT:
            raise ValueError("an extension is at most %d bytes" % PF_MAX_EXT)
        pf_st16(head + PFR2_EXT_LEN, <uint16_t>len(extension))
    body = extension + bytes(payload)
    _link_of(<const uint8_t *>PyBytes_AS_STRING(prev), head,
             <const uint8_t *>PyBytes_AS_STRING(body), len(body), NULL, 0, out)
    return PyBytes_FromStringAndSize(<char *>out, PF_LINK_SIZE)


cdef str _ref_text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


cdef inline bytes _cstr(const uint8_t *p, int n):
    # Fixed-width text fields are NUL-padded on disk.
    cdef int k = n
    while k > 0 and p[k - 1] == 0:
        k -= 1
    return PyBytes_FromStringAndSize(<const char *>p, k)


FIELDS = ("seq", "ts", "day", "terminal", "kind", "state", "method", "flags", "currency",
          "amount", "txn_id", "ref_seq", "receipt_no", "operator", "client_ref", "pan_last4",
          "auth_code", "rrn", "channel", "order_ref", "host_ref")


cdef class Record:
    """One journal record, as `Journal.get`, `last` and friends return it.

    Fields read as attributes or by name: ``rec.amount == rec["amount"]``.

    >>> rec = journal.get(1)            # doctest: +SKIP
    >>> rec.amount, rec["currency"]     # doctest: +SKIP
    (1250, 156)
    """
    cdef readonly uint64_t seq, txn_id, ref_seq
    cdef readonly int64_t ts, amount
    cdef readonly int32_t day
    cdef readonly uint32_t terminal, receipt_no, operator
    cdef readonly uint16_t currency
    cdef readonly uint8_t kind, state, method, flags
    cdef readonly bytes client_ref, pan_last4, auth_code, rrn, payload, link
    cdef readonly str channel, order_ref, host_ref
    cdef readonly bint archived

    @staticmethod
    cdef Record _from_row(const uint8_t *row, bytes payload, bytes link, bint archived,
                          str order_ref="", str host_ref=""):
        cdef Record rec = Record.__new__(Record)
        rec.seq = pf_ld64(row + PFW_SEQ)
        rec.ts = <int64_t>pf_ld64(row + PFW_TS)
        rec.amount = <int64_t>pf_ld64(row + PFW_AMOUNT)
        rec.txn_id = pf_ld64(row + PFW_TXN_ID)
        rec.ref_seq = pf_ld64(row + PFW_REF_SEQ)
        rec.day = <int32_t>pf_ld32(row + PFW_DAY)
        rec.terminal = pf_ld32(row + PFW_TERMINAL)
        rec.receipt_no = pf_ld32(row + PFW_RECEIPT_NO)
        rec.operator = pf_ld32(row + PFW_OPERATOR)
        rec.currency = pf_ld16(row + PFW_CURRENCY)
        rec.kind = row[PFW_KIND]
        rec.state = row[PFW_STATE]
        rec.method = row[PFW_METHOD]
        rec.flags = row[PFW_FLAGS]
        rec.pan_last4 = _cstr(row + PFW_PAN_LAST4, 4)
        rec.auth_code = _cstr(row + PFW_AUTH_CODE, 6)
        rec.rrn = _cstr(row + PFW_RRN, 12)
        rec.client_ref = _cstr(row + PFW_CLIENT_REF, 16)
        rec.channel = _cstr(row + PFW_CHANNEL, PF_CHANNEL_SIZE).decode("utf-8", "replace") \
            if row[PFW_CHANNEL] else ""
        rec.order_ref = order_ref
        rec.host_ref = host_ref
        rec.payload = payload
        rec.link = link
        rec.archived = archived
        return rec

    @staticmethod
    def from_row(row, payload=b"", link=b"", archived=False, order_ref="", host_ref=""):
        """Build a Record from one RECORD_DTYPE row (an archive or a back office hands these back)."""
        cdef bytes raw = bytes(memoryview(row).cast("B")) if not isinstance(row, bytes) else row
        if len(raw) != PFW_SIZE:
            raise ValueError("a RECORD_DTYPE row is %d bytes, got %d" % (PFW_SIZE, len(raw)))
        return Record._from_row(<const uint8_t *>PyBytes_AS_STRING(raw), bytes(payload),
                                bytes(link), archived, _ref_text(order_ref), _ref_text(host_ref))

    def __getitem__(self, name):
        if name == "payload" or name in FIELDS:
            return getattr(self, name)
        raise KeyError(name)

    def keys(self):
        return FIELDS + ("payload",)

    def to_dict(self):
        """All fields (and payload) as a plain dict."""
        d = {name: getattr(self, name) for name in FIELDS}
        d["payload"] = self.payload
        return d

    def __eq__(self, other):
        if not isinstance(other, Record):
            return NotImplemented
        return self.to_dict() == (<Record>other).to_dict()

    def __hash__(self):
        return hash((self.seq, self.ts, self.link))

    def __repr__(self):
        return ("Record(seq=%d, terminal=%d, kind=%d, state=%d, amount=%d, currency=%d, "
                "txn_id=%d, receipt_no=%d%s)" % (self.seq, self.terminal, self.kind, self.state,
                                                  self.amount, self.currency, self.txn_id,
                                                  self.receipt_no,
                                                  ", archived" if self.archived else ""))
