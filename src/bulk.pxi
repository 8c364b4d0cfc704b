# Bulk readers beside the Ring (module functions, so that they merge apart from ring.pxi's
# read and append paths): references of many records straight into byte-string columns, and
# the mapped pages of a large read handed back to the page cache.

cdef extern from *:
    """
    #if !defined(_WIN32)
    #include <sys/mman.h>
    static int pf_drop_pages(void *addr, size_t len) {
    #ifdef MADV_DONTNEED
        return madvise(addr, len, MADV_DONTNEED);
    #else
        (void)addr; (void)len; return 0;
    #endif
    }
    #else
    static int pf_drop_pages(void *addr, size_t len) { (void)addr; (void)len; return 0; }
    #endif
    """
    int pf_drop_pages(void *addr, size_t length) nogil


cdef enum:
    _REFS_NOT_CANONICAL = 1

REFS_NOT_CANONICAL = _REFS_NOT_CANONICAL


cdef inline int _refs_into(const uint8_t *ext, uint32_t elen, uint8_t *order, uint8_t *host,
                           uint32_t *order_len, uint32_t *host_len) noexcept nogil:
    # decode_ext's rules (tags 1..3 ascending, each once, lengths bounded), 0 if canonical
    cdef uint32_t i = 0, n, last = 0, tag
    while i < elen:
        if i + 2 > elen:
            return _REFS_NOT_CANONICAL
        tag = ext[i]
        n = ext[i + 1]
        if tag < <uint32_t>PF_EXT_CLIENT_REF or tag > <uint32_t>PF_EXT_HOST_REF or tag <= last \
                or n == 0 or i + 2 + n > elen \
                or n > (<uint32_t>16 if tag == <uint32_t>PF_EXT_CLIENT_REF else <uint32_t>PF_REF_SIZE):
            return _REFS_NOT_CANONICAL
        if tag == <uint32_t>PF_EXT_ORDER_REF:
            memcpy(order, ext + i + 2, n)
            order_len[0] = n
        elif tag == <uint32_t>PF_EXT_HOST_REF:
            memcpy(host, ext + i + 2, n)
            host_len[0] = n
        last = tag
        i += 2 + n
    return 0


def ring_refs_into(Ring ring, const uint64_t[::1] seqs, uint8_t[:, ::1] order,
                   uint8_t[:, ::1] host):
    """(order_ref, host_ref) of each seq written into rows of `order` and `host` (zeroed
    uint8 arrays of PF_REF_SIZE bytes a row: the bytes of an ``S64`` array), what
    `decode_ext` reads from `Ring.exts`: nothing where a record has no reference or is
    not live and intact.  Returns (status array: 0, or REFS_NOT_CANONICAL where the
    extension is not canonical (decode_ext names why), widest order_ref, widest
    host_ref)."""
    import numpy
    cdef uint64_t n = seqs.shape[0], i, seq, pos, elen, ring_bytes, start, first
    cdef uint32_t olen, hlen, wo = 0, wh = 0
    cdef const uint8_t *h
    cdef const uint8_t *ext
    cdef uint8_t tmp[256]   # PF_MAX_EXT + 1
    cdef uint8_t o_buf[64]  # PF_REF_SIZE
    cdef uint8_t h_buf[64]
    status_arr = numpy.zeros(n, dtype=numpy.uint8)
    cdef uint8_t[::1] status = status_arr
    cdef int r
    if <uint64_t>order.shape[0] < n or <uint64_t>host.shape[0] < n \
            or order.shape[1] != PF_REF_SIZE or host.shape[1] != PF_REF_SIZE:
        raise ValueError("order and host must hold %d bytes per seq" % PF_REF_SIZE)
    if ring.fd < 0:
        raise JournalClosed("posfast: journal %s is closed" % (ring.path,))
    if ring.version < 2:
        return status_arr, 0, 0
    ring_bytes = ring.capacity * ring.slot_size
    with nogil:
        ring._note_lap()
        for i in range(n):
            seq = seqs[i]
            pos = ring._pos(seq) if ring.oldest_seq <= seq <= ring.head_seq else 0
            if pos == 0 or ring._check_at(pos, seq) != CHK_OK:
                continue
            h = ring._head_of(pos)
            elen = ring._ext_len(h)
            if elen == 0 or elen > PF_MAX_EXT or PFR_HEAD_SIZE + elen > ring_bytes:
                continue
            start = ring._slot(pos) * ring.slot_size + PFR_HEAD_SIZE
            if start >= ring_bytes:
                start -= ring_bytes
            if start + elen <= ring_bytes:
                ext = ring.map + PF_DATA_OFFSET + start
            else:
                first = ring_bytes - start
                memcpy(tmp, ring.map + PF_DATA_OFFSET + start, first)
                memcpy(tmp + first, ring.map + PF_DATA_OFFSET, elen - first)
                ext = tmp
            olen = hlen = 0
            r = _refs_into(ext, <uint32_t>elen, o_buf, h_buf, &olen, &hlen)
            if not ring.writable and ring._check_at(pos, seq) != CHK_OK:
                continue        # overwritten by the writer while we copied: gone
            if r:
                status[i] = <uint8_t>r
                continue
            if olen:
                memcpy(&order[i, 0], o_buf, olen)
                if olen > wo:
                    wo = olen
            if hlen:
                memcpy(&host[i, 0], h_buf, hlen)
                if hlen > wh:
                    wh = hlen
    return status_arr, wo, wh


def ring_drop_pages(Ring ring):
    """Hand the journal's mapped pages back to the page cache (madvise MADV_DONTNEED: the
    map is read-only and shared, so nothing is lost; the next read maps them again).  A
    scan of a whole journal then does not keep its file in the process's resident set.
    Returns 0, or -1 where the system refused (the pages simply stay)."""
    if ring.map == NULL or ring.map_len == 0:
        return 0
    with nogil:
        r = pf_drop_pages(<void *>ring.map, ring.map_len)
    return r


def pack_columns(uint8_t[:, ::1] out, list columns):
    """Copy columns into rows, one pass over the rows: `columns` holds (offset, array) pairs,
    each array C-contiguous and one-dimensional, of the row field's exact dtype, with one value
    per row or a single value for every row.  (make_rows validates; this only moves bytes:
    numpy's field by field assignment went over the 120-byte rows once a column.)"""
    cdef Py_ssize_t n = out.shape[0], ncols = len(columns), i, c, w
    cdef const uint8_t *base[32]
    cdef Py_ssize_t step[32]
    cdef Py_ssize_t off[32]
    cdef Py_ssize_t width[32]
    cdef const uint8_t[::1] view
    cdef uint8_t *row
    cdef const uint8_t *src
    keep = []
    if ncols > 32:
        raise ValueError("at most 32 columns")
    if n == 0:
        return
    for c in range(ncols):
        offset, arr = columns[c]
        w = arr.dtype.itemsize
        if arr.ndim != 1 or not arr.flags.c_contiguous or w == 0 or \
                (arr.shape[0] != n and arr.shape[0] != 1) or offset < 0 or \
                offset + w > out.shape[1]:
            raise ValueError("column %d does not fit the rows" % c)
        view = arr.view(numpy_uint8())
        keep.append(view)
        base[c] = &view[0]
        step[c] = w if arr.shape[0] == n else 0
        off[c] = offset
        width[c] = w
    with nogil:
        for i in range(n):
            row = &out[i, 0]
            for c in range(ncols):
                src = base[c] + i * step[c]
                w = width[c]
                if w == 8:
                    memcpy(row + off[c], src, 8)
                elif w == 4:
                    memcpy(row + off[c], src, 4)
                elif w == 1:
                    row[off[c]] = src[0]
                elif w == 2:
                    memcpy(row + off[c], src, 2)
                else:
                    memcpy(row + off[c], src, w)


cdef object numpy_uint8():
    import numpy
    return numpy.uint8
