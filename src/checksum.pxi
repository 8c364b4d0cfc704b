# CRC32C and SHA-256 as seen from Python (tests, the sync server's chain check).

def crc32c(data, uint32_t crc=0):
    """CRC-32C (Castagnoli) of `data`, continuing from `crc`.

    >>> hex(crc32c(b"123456789"))
    '0xe3069283'
    """
    cdef const uint8_t[::1] view = memoryview(data).cast("B")
    cdef size_t n = view.shape[0]
    if n == 0:
        return pf_crc32c(crc, NULL, 0)
    with nogil:
        crc = pf_crc32c(crc, &view[0], n)
    return crc


def sha256(data):
    """SHA-256 digest of `data` (the hash behind the record chain).

    >>> sha256(b"abc").hex()[:16]
    'ba7816bf8f01cfea'
    """
    cdef const uint8_t[::1] view = memoryview(data).cast("B")
    cdef uint8_t out[32]
    cdef size_t n = view.shape[0]
    if n == 0:
        pf_sha256(NULL, 0, out)
    else:
        with nogil:
            pf_sha256(&view[0], n, out)
    return PyBytes_FromStringAndSize(<char *>out, 32)


def checksum_impl():
    """Which CRC32C and SHA-256 code paths this CPU uses ("sse4.2", "sha-ni", "table", ...)."""
    return {"crc32c": pf_crc32c_impl().decode(), "sha256": pf_sha256_impl().decode()}


def _force_portable_checksums(bint on):
    """Tests only: force the portable table/software paths (True) or restore run-time choice."""
    pf_crc32c_force_table(on)
    pf_sha256_force_portable(on)
