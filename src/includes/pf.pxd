# C declarations of posfast's own headers: the on-disk format and the checksums.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t

cdef extern from "pf_format.h" nogil:
    const char *PF_MAGIC
    unsigned PF_FORMAT_VERSION, PF_HEADER_COPY_SIZE, PF_DATA_OFFSET, PF_MIN_SLOT, PF_MAX_SLOT
    unsigned PF_MAX_PAYLOAD, PF_MAX_GROUP_RECORDS, PF_LINK_SIZE, PF_JID_SIZE, PF_FORMAT_V1
    unsigned PF_MAX_EXT, PF_CKPT_WINDOW
    int PF_CHANNEL_SIZE, PF_EXT_CLIENT_REF, PF_EXT_ORDER_REF, PF_EXT_HOST_REF, PF_REF_SIZE
    int PFH_MAGIC, PFH_VERSION, PFH_HEADER_SIZE, PFH_GENERATION, PFH_SLOT_SIZE, PFH_MAX_PAYLOAD
    int PFH_CAPACITY, PFH_JOURNAL_ID, PFH_CREATED_US, PFH_DAY_OFFSET_MIN, PFH_DAY_START_MIN
    int PFH_RETENTION, PFH_FLAGS, PFH_SYNC_WATERMARK, PFH_CRC, PFH_SIZE
    int PFH2_TZ, PFH2_TZ_SIZE, PFH2_CKPT_SEQ, PFH2_CKPT_POS, PFH2_CKPT_WINDOW, PFH2_CKPT_LINK
    int PFH2_CLEAN, PFH2_FLAGS, PFH2_INDEX_DIGEST, PFH2_INDEX_HEAD, PFH2_CRC, PFH2_SIZE
    int PFR_CRC, PFR_PAYLOAD_LEN, PFR_GROUP_OFF, PFR_SEQ, PFR_POS, PFR_TS, PFR_TERMINAL, PFR_KIND
    int PFR_STATE, PFR_METHOD, PFR_FLAGS, PFR_CURRENCY, PFR_PAN_LAST4, PFR_AUTH_CODE, PFR_RECEIPT_NO
    int PFR_AMOUNT, PFR_TXN_ID, PFR_REF_SEQ, PFR_OPERATOR, PFR_RRN, PFR_CLIENT_REF, PFR_LINK
    int PFR_HEAD_SIZE, PFR2_DAY, PFR2_EXT_LEN, PFR2_CHANNEL
    int PFW_SEQ, PFW_TS, PFW_AMOUNT, PFW_TXN_ID, PFW_REF_SEQ, PFW_DAY, PFW_TERMINAL, PFW_RECEIPT_NO
    int PFW_OPERATOR, PFW_CURRENCY, PFW_KIND, PFW_STATE, PFW_METHOD, PFW_FLAGS, PFW_PAN_LAST4
    int PFW_AUTH_CODE, PFW_RRN, PFW_CLIENT_REF, PFW_PAYLOAD_LEN, PFW_EXT_LEN, PFW_CHANNEL, PFW_SIZE
    int pf_host_is_le()
    uint64_t pf_ld64(const uint8_t *p)
    uint32_t pf_ld32(const uint8_t *p)
    uint16_t pf_ld16(const uint8_t *p)
    void pf_st64(uint8_t *p, uint64_t v)
    void pf_st32(uint8_t *p, uint32_t v)
    void pf_st16(uint8_t *p, uint16_t v)
    int32_t pf_business_day(int64_t ts_us, int32_t offset_min, int32_t start_min)
    uint64_t pf_record_slots(uint32_t body_len, uint32_t slot_size)
    uint32_t pf_body_len(const uint8_t *head, uint32_t version)
    void pf_prefetch(const void *addr)

cdef extern from "pf_crc32c.h" nogil:
    uint32_t pf_crc32c(uint32_t crc, const void *data, size_t len)
    const char *pf_crc32c_impl()
    void pf_crc32c_force_table(int on)

cdef extern from "pf_sha256.h" nogil:
    ctypedef struct pf_sha256_ctx:
        pass
    void pf_sha256_init(pf_sha256_ctx *ctx)
    void pf_sha256_update(pf_sha256_ctx *ctx, const void *data, size_t len)
    void pf_sha256_final(pf_sha256_ctx *ctx, uint8_t *out)
    void pf_sha256(const void *data, size_t len, uint8_t *out)
    const char *pf_sha256_impl()
    void pf_sha256_force_portable(int on)

cdef extern from "pf_io.h" nogil:
    int pf_open(const char *path, int writable, int create)
    int pf_close(int fd)
    long long pf_pwrite(int fd, const void *buf, size_t len, uint64_t off)
    long long pf_pread(int fd, void *buf, size_t len, uint64_t off)
    int pf_datasync(int fd)
    int pf_fullsync(int fd)
    int pf_allocate(int fd, uint64_t size)
    int pf_zero_fill(int fd, uint64_t off, uint64_t end)
    long long pf_file_size(int fd)
    void *pf_map(int fd, size_t len)
    int pf_unmap(void *addr, size_t len)
    int pf_sync_dir(const char *dirpath)
    int pf_lock_writer(int fd)
    int pf_errno()
