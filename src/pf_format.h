/* posfast ring file, format versions 1 and 2: the one place the on-disk layout lives
 * (FORMAT.md at the top of the repository describes it for readers in other languages).
 *
 * File = two header copies (PF_HEADER_COPY_SIZE each) followed by `capacity`
 * slots of `slot_size` bytes.  Everything on disk is little-endian whatever the
 * CPU; fields are read and written with pf_ld / pf_st (memcpy + byte order), never
 * through casted pointers, so armv7l and big-endian hosts read the same bytes.
 */
#ifndef PF_FORMAT_H
#define PF_FORMAT_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>

#define PF_MAGIC "POSFJRNL"           /* 8 bytes, no terminator on disk */
#define PF_FORMAT_VERSION 2u            /* what new journals are; version 1 files are read and appended as v1 */
#define PF_FORMAT_V1 1u
#define PF_HEADER_COPY_SIZE 4096u      /* one copy per 4 KiB sector group: a torn header write damages one copy only */
#define PF_DATA_OFFSET (2u * PF_HEADER_COPY_SIZE)
#define PF_MIN_SLOT 128u
#define PF_MAX_SLOT 65536u
#define PF_MAX_PAYLOAD 65535u          /* payload_len is a u16 */
#define PF_MAX_GROUP_RECORDS 65535u    /* commit group: records written between two syncs (group_off is a u16) */
#define PF_LINK_SIZE 16u               /* SHA-256 truncated to 128 bits */
#define PF_JID_SIZE 16u

/* Header copy layout (offsets inside one PF_HEADER_COPY_SIZE block). */
#define PFH_MAGIC 0            /* char[8] */
#define PFH_VERSION 8          /* u32 format version */
#define PFH_HEADER_SIZE 12     /* u32 bytes covered by the header CRC */
#define PFH_GENERATION 16      /* u64: newest valid copy wins */
#define PFH_SLOT_SIZE 24       /* u32 */
#define PFH_MAX_PAYLOAD 28     /* u32 */
#define PFH_CAPACITY 32        /* u64 slots */
#define PFH_JOURNAL_ID 40      /* u8[16] UUID bytes */
#define PFH_CREATED_US 56      /* i64 microseconds since epoch UTC */
#define PFH_DAY_OFFSET_MIN 64  /* i32 business-day rule: UTC offset in minutes */
#define PFH_DAY_START_MIN 68   /* i32 business-day rule: minutes after local midnight the day starts */
#define PFH_RETENTION 72       /* u32 0 synced, 1 overwrite, 2 archive */
#define PFH_FLAGS 76           /* u32 reserved, zero */
#define PFH_SYNC_WATERMARK 80  /* u64 highest seq the back office acknowledged */
#define PFH_RESERVED 88        /* v1: zero up to PFH_CRC */
#define PFH_CRC 124            /* v1: u32 CRC32C of bytes [0, PFH_CRC) */
#define PFH_SIZE 128           /* v1 header bytes */

/* Version 2 header: the v1 fields up to PFH_SYNC_WATERMARK, then */
#define PFH2_TZ 88             /* char[32] IANA zone name of the day rule, NUL-padded ("" = fixed offset) */
#define PFH2_TZ_SIZE 32
#define PFH2_CKPT_SEQ 120      /* u64 newest seq when the tail mark was written */
#define PFH2_CKPT_POS 128      /* u64 next free position then: no record starts at or past CKPT_POS + CKPT_WINDOW */
#define PFH2_CKPT_WINDOW 136   /* u64 slots the writer may fill past CKPT_POS before it writes a new mark */
#define PFH2_CKPT_LINK 144     /* u8[16] link of CKPT_SEQ */
#define PFH2_CLEAN 160         /* u32 1: closed cleanly, nothing written at or past CKPT_POS */
#define PFH2_FLAGS 164         /* u32 reserved, zero */
#define PFH2_INDEX_DIGEST 168  /* u8[16] SHA-256[:16] of the index file's directory saved with this journal */
#define PFH2_INDEX_HEAD 184    /* u64 newest seq that index covers */
#define PFH2_RESERVED 192      /* zero up to PFH2_CRC */
#define PFH2_CRC 252           /* u32 CRC32C of bytes [0, PFH2_CRC) */
#define PFH2_SIZE 256

/* Record head layout: the first slot of every record.  The payload follows the
 * head and runs on into the next slots (a record spans ceil((head + body)/slot)
 * slots).  Record positions count slots since the journal began (1, 2, ...);
 * position p lives in slot (p - 1) % capacity, so a record of one slot has
 * position == seq and the rule `slot = (seq - 1) % capacity` holds; a spanning
 * record moves the positions of the records after it and the index keeps the map.
 */
#define PFR_CRC 0          /* u32 CRC32C over journal id + bytes [4, head + body); body = v2 extension + payload */
#define PFR_PAYLOAD_LEN 4  /* u16 */
#define PFR_GROUP_OFF 6    /* u16 seq minus the first seq of its commit group: tells a torn tail from old damage */
#define PFR_SEQ 8          /* u64 1, 2, 3 ... without gaps */
#define PFR_POS 16         /* u64 slot position, see above */
#define PFR_TS 24          /* i64 microseconds since epoch UTC */
#define PFR_TERMINAL 32    /* u32 */
#define PFR_KIND 36        /* u8 */
#define PFR_STATE 37       /* u8 */
#define PFR_METHOD 38      /* u8 */
#define PFR_FLAGS 39       /* u8 */
#define PFR_CURRENCY 40    /* u16 ISO 4217 numeric */
#define PFR_PAN_LAST4 42   /* char[4] */
#define PFR_AUTH_CODE 46   /* char[6] */
#define PFR_RECEIPT_NO 52  /* u32 */
#define PFR_AMOUNT 56      /* i64 minor units */
#define PFR_TXN_ID 64      /* u64 */
#define PFR_REF_SEQ 72     /* u64 */
#define PFR_OPERATOR 80    /* u32 */
#define PFR_RRN 84         /* char[12] */
#define PFR_CLIENT_REF 96  /* v1: u8[16] */
#define PFR_LINK 112       /* u8[16] SHA-256(prev link || seq || bytes [24,112) || body)[:16] */
#define PFR_HEAD_SIZE 128
/* Version 2 record head: bytes [96, 112) hold */
#define PFR2_DAY 96        /* i32 business day (days since 1970-01-01), as the writer's day rule gave it */
#define PFR2_EXT_LEN 100   /* u16 bytes of the extension between the head and the payload */
#define PFR2_CHANNEL 102   /* char[10] payment channel (wechat, alipay, unionpay, an acquirer code) */
#define PF_CHANNEL_SIZE 10
#define PF_MAX_EXT 255u    /* extension: TLVs (tag u8, length u8, bytes), tags ascending, each once */
#define PF_EXT_CLIENT_REF 1
#define PF_EXT_ORDER_REF 2
#define PF_EXT_HOST_REF 3
#define PF_REF_SIZE 64     /* order_ref and host_ref: at most 64 bytes of text */
#define PF_CKPT_WINDOW 65536u  /* slots past the tail mark (more than any commit group) */

/* Row layout of posfast.RECORD_DTYPE (the decoded, numpy side; little-endian). */
#define PFW_SEQ 0
#define PFW_TS 8
#define PFW_AMOUNT 16
#define PFW_TXN_ID 24
#define PFW_REF_SEQ 32
#define PFW_DAY 40
#define PFW_TERMINAL 44
#define PFW_RECEIPT_NO 48
#define PFW_OPERATOR 52
#define PFW_CURRENCY 56
#define PFW_KIND 58
#define PFW_STATE 59
#define PFW_METHOD 60
#define PFW_FLAGS 61
#define PFW_PAN_LAST4 62
#define PFW_AUTH_CODE 66
#define PFW_RRN 72
#define PFW_CLIENT_REF 84
#define PFW_PAYLOAD_LEN 100
#define PFW_EXT_LEN 102    /* u8: extension bytes of the record (v2) */
#define PFW_CHANNEL 104
#define PFW_SIZE 120

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(PFR_LINK + PF_LINK_SIZE == PFR_HEAD_SIZE, "record head is exactly 128 bytes");
_Static_assert(PFR_HEAD_SIZE <= PF_MIN_SLOT, "a head fits the smallest slot");
_Static_assert(PFH_CRC + 4 == PFH_SIZE, "header CRC closes the header");
_Static_assert(PFR_CLIENT_REF + 16 == PFR_LINK, "client_ref runs up to the link");
_Static_assert(PFR2_CHANNEL + PF_CHANNEL_SIZE == PFR_LINK, "v2: the channel runs up to the link");
_Static_assert(PFH2_CRC + 4 == PFH2_SIZE, "v2 header CRC closes the header");
_Static_assert(PFH2_TZ + PFH2_TZ_SIZE == PFH2_CKPT_SEQ, "v2: zone name runs up to the tail mark");
_Static_assert(PFW_PAYLOAD_LEN + 2 <= PFW_SIZE, "row fits its dtype");
#endif

static inline int pf_host_is_le(void) {
    const uint16_t one = 1;
    uint8_t first;
    memcpy(&first, &one, 1);
    return first == 1;
}

/* Little-endian loads and stores.  Where the compiler says the CPU is little-endian (every
 * CPU posfast ships wheels for), one memcpy: a single unaligned load or store.  Elsewhere,
 * byte by byte (GCC did not merge the loop of bytes into one load: 8 loads, shifts and ors
 * each, in every check and decode of a record). */
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define PF_LE_HOST 1
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86) || defined(_M_ARM64))
#define PF_LE_HOST 1
#else
#define PF_LE_HOST 0
#endif

#if PF_LE_HOST
static inline uint64_t pf_ld64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t pf_ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint16_t pf_ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline void pf_st64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline void pf_st32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void pf_st16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
#else
static inline uint64_t pf_ld64(const uint8_t *p) {
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static inline uint32_t pf_ld32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint16_t pf_ld16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline void pf_st64(uint8_t *p, uint64_t v) {
    int i;
    for (i = 0; i < 8; i++) { p[i] = (uint8_t)v; v >>= 8; }
}
static inline void pf_st32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void pf_st16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
#endif

/* Cache prefetch hint for scattered gathers (a terminal's records of one day). */
#if defined(__GNUC__) || defined(__clang__)
#define pf_prefetch(addr) __builtin_prefetch(addr)
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
#include <xmmintrin.h>
#define pf_prefetch(addr) _mm_prefetch((const char *)(addr), _MM_HINT_T0)
#else
#define pf_prefetch(addr) ((void)(addr))
#endif

/* Business day of a timestamp: days since 1970-01-01 of (local time - day start). */
static inline int32_t pf_business_day(int64_t ts_us, int32_t offset_min, int32_t start_min) {
    int64_t shifted = ts_us + ((int64_t)offset_min - (int64_t)start_min) * 60000000LL;
    int64_t day = shifted / 86400000000LL;
    if (shifted % 86400000000LL < 0) day -= 1;
    return (int32_t)day;
}

/* Slots a record of `body_len` bytes after its head (v2: extension + payload) occupies. */
static inline uint64_t pf_record_slots(uint32_t body_len, uint32_t slot_size) {
    return ((uint64_t)PFR_HEAD_SIZE + body_len + slot_size - 1) / slot_size;
}

/* Bytes after the head: the payload, and in version 2 the extension before it. */
static inline uint32_t pf_body_len(const uint8_t *head, uint32_t version) {
    uint32_t n = pf_ld16(head + PFR_PAYLOAD_LEN);
    if (version >= 2) n += pf_ld16(head + PFR2_EXT_LEN);
    return n;
}

#endif
