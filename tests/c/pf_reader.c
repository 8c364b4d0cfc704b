/* pf_reader: an independent reader of posfast journal files (formats 1 and 2), written from
 * FORMAT.md alone.  It picks the newest valid header copy, walks the records from seq 1
 * (or, once the ring has wrapped, from the oldest live record), checks every record's
 * CRC32C and recomputes every link, and prints one JSON line per record on stdout
 * (a JSON line describing the header goes to stderr).
 *
 *   pf_reader JOURNAL.pfj
 *
 * Exit status: 0 every record intact and chained, 1 some record failed a check,
 * 2 the file could not be read as a journal.
 * Only the CRC32C and SHA-256 primitives come from posfast (src/pf_crc32c.c, pf_sha256.c).
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pf_crc32c.h"
#include "pf_sha256.h"

#define COPY_SIZE 4096u
#define DATA_OFFSET 8192u
#define HEAD 128u

static uint64_t ld64(const uint8_t *p) {
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint32_t ld32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

typedef struct {
    uint32_t version, slot_size, max_payload, retention, header_size;
    uint64_t generation, capacity, sync_watermark;
    uint8_t jid[16];
    int64_t created_us;
    int32_t offset_min, start_min;
    char tz[33];
    int copy;
} header_t;

static const uint8_t *file_data;
static uint64_t file_size, avail_slots;
static header_t H;

/* One header copy: 1 if valid (magic, known version, size, CRC). */
static int parse_header(const uint8_t *b, header_t *h) {
    uint32_t crc_at;
    if (memcmp(b, "POSFJRNL", 8) != 0) return 0;
    h->version = ld32(b + 8);
    h->header_size = ld32(b + 12);
    if (h->version == 1) crc_at = 124;
    else if (h->version == 2) {
        if (h->header_size != 256) return 0;
        crc_at = 252;
    } else return 0;
    if (ld32(b + crc_at) != pf_crc32c(0, b, crc_at)) return 0;
    h->generation = ld64(b + 16);
    h->slot_size = ld32(b + 24);
    h->max_payload = ld32(b + 28);
    h->capacity = ld64(b + 32);
    memcpy(h->jid, b + 40, 16);
    h->created_us = (int64_t)ld64(b + 56);
    h->offset_min = (int32_t)ld32(b + 64);
    h->start_min = (int32_t)ld32(b + 68);
    h->retention = ld32(b + 72);
    h->sync_watermark = ld64(b + 80);
    memset(h->tz, 0, sizeof h->tz);
    if (h->version == 2) memcpy(h->tz, b + 88, 32);
    return 1;
}

/* Copy `len` bytes of the ring starting at ring byte offset `off`, wrapping at the end. */
static void ring_read(uint64_t off, uint8_t *out, uint64_t len) {
    uint64_t ring = H.capacity * H.slot_size, k;
    for (k = 0; k < len; k++) {
        uint64_t o = (off + k) % ring;
        uint64_t at = DATA_OFFSET + o;
        out[k] = at < file_size ? file_data[at] : 0;
    }
}

static const uint8_t *slot_ptr(uint64_t slot) {
    return file_data + DATA_OFFSET + slot * H.slot_size;
}

static uint32_t body_len(const uint8_t *h) {
    uint32_t n = ld16(h + 4);
    if (H.version >= 2) n += ld16(h + 100);
    return n;
}

static uint64_t nslots(const uint8_t *h) {
    return (HEAD + body_len(h) + H.slot_size - 1) / H.slot_size;
}

/* Does a head at position p claim p, with lengths in range and all its slots in the file? */
static int plausible(uint64_t p, const uint8_t **head) {
    uint64_t slot = (p - 1) % H.capacity, n;
    const uint8_t *h;
    if (slot >= avail_slots) return 0;
    h = slot_ptr(slot);
    if (ld64(h + 16) != p || ld64(h + 8) == 0 || ld64(h + 8) > p || p > ((uint64_t)1 << 62)) return 0;
    if (ld16(h + 4) > H.max_payload) return 0;
    if (H.version >= 2 && ld16(h + 100) > 255) return 0;
    n = nslots(h);
    if (n > H.capacity) return 0;
    if (avail_slots < H.capacity && (slot + n > avail_slots)) return 0;
    *head = h;
    return 1;
}

/* CRC32C over the journal id, then record bytes [4, 128 + body). `rec` holds the record. */
static int crc_ok(const uint8_t *rec, uint32_t blen) {
    uint32_t crc = pf_crc32c(0, H.jid, 16);
    crc = pf_crc32c(crc, rec + 4, HEAD + blen - 4);
    return crc == ld32(rec);
}

static void link_of(const uint8_t *prev, const uint8_t *rec, uint32_t blen, uint8_t out[16]) {
    pf_sha256_ctx ctx;
    uint8_t d[32];
    pf_sha256_init(&ctx);
    pf_sha256_update(&ctx, prev, 16);
    pf_sha256_update(&ctx, rec + 8, 8);
    pf_sha256_update(&ctx, rec + 24, 112 - 24);
    if (blen) pf_sha256_update(&ctx, rec + HEAD, blen);
    pf_sha256_final(&ctx, d);
    memcpy(out, d, 16);
}

static void put_text(const char *name, const uint8_t *p, size_t n) {
    size_t k;
    while (n > 0 && p[n - 1] == 0) n--;
    printf("\"%s\":\"", name);
    for (k = 0; k < n; k++) {
        uint8_t c = p[k];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20 || c == 0x7f) printf("\\u%04x", c);
        else putchar(c);              /* UTF-8 bytes pass through */
    }
    printf("\",");
}

static void put_hex(const char *name, const uint8_t *p, size_t n) {
    size_t k;
    printf("\"%s\":\"", name);
    for (k = 0; k < n; k++) printf("%02x", p[k]);
    printf("\",");
}

static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

/* Extension TLVs: fills refs[tag-1] (pointer, length); 1 if canonical. */
static int parse_ext(const uint8_t *e, uint32_t len, const uint8_t *ref[3], uint32_t rlen[3]) {
    uint32_t i = 0;
    int last = 0, ok = 1;
    while (i < len) {
        int tag;
        uint32_t n;
        if (i + 2 > len) return 0;
        tag = e[i];
        n = e[i + 1];
        if (tag < 1 || tag > 3 || tag <= last || n == 0 || i + 2 + n > len
            || n > (tag == 1 ? 16u : 64u)) {
            ok = 0;
            if (i + 2 + n > len) break;
        } else {
            ref[tag - 1] = e + i + 2;
            rlen[tag - 1] = n;
            last = tag;
        }
        i += 2 + n;
    }
    return ok;
}

/* Find where to start once seq 1 is gone: FORMAT.md 1.4 step 3. */
static int find_oldest(uint64_t *seq_out, uint64_t *pos_out, uint8_t *buf) {
    uint64_t slot, best_seq = 0, best_pos = 0, end, start_seq, start_pos;
    const uint8_t *h;
    uint64_t *seqs = malloc(sizeof(uint64_t) * (avail_slots ? avail_slots : 1));
    uint64_t *poss = malloc(sizeof(uint64_t) * (avail_slots ? avail_slots : 1));
    size_t n = 0, i;
    if (!seqs || !poss) { free(seqs); free(poss); return 0; }
    for (slot = 0; slot < avail_slots; slot++) {
        uint64_t p = ld64(slot_ptr(slot) + 16);
        if (p == 0 || (p - 1) % H.capacity != slot || !plausible(p, &h)) continue;
        ring_read(slot * H.slot_size, buf, HEAD + body_len(h));
        if (!crc_ok(buf, body_len(h))) continue;
        seqs[n] = ld64(h + 8);
        poss[n] = p;
        if (seqs[n] > best_seq) { best_seq = seqs[n]; best_pos = p; }
        n++;
    }
    if (n == 0) { free(seqs); free(poss); return 0; }
    end = best_pos + nslots(slot_ptr((best_pos - 1) % H.capacity));
    start_seq = best_seq;
    start_pos = best_pos;
    for (i = 0; i < n; i++)
        if (poss[i] + H.capacity >= end && seqs[i] < start_seq && poss[i] < start_pos) {
            start_seq = seqs[i];
            start_pos = poss[i];
        }
    free(seqs);
    free(poss);
    *seq_out = start_seq;
    *pos_out = start_pos;
    return 1;
}

int main(int argc, char **argv) {
    FILE *f;
    uint8_t *data, *rec;
    long sz;
    header_t c[2];
    int valid[2], i, bad = 0, have_prev;
    uint64_t seq, pos, start_pos;
    uint8_t prev[16];
    const uint8_t *h;

    if (argc != 2) {
        fprintf(stderr, "usage: %s JOURNAL.pfj\n", argv[0]);
        return 2;
    }
    f = fopen(argv[1], "rb");
    if (!f || fseek(f, 0, SEEK_END) != 0 || (sz = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "pf_reader: cannot read %s\n", argv[1]);
        return 2;
    }
    data = malloc((size_t)sz + 1);
    if (!data || fread(data, 1, (size_t)sz, f) != (size_t)sz) {
        fprintf(stderr, "pf_reader: cannot read %s\n", argv[1]);
        return 2;
    }
    fclose(f);
    file_data = data;
    file_size = (uint64_t)sz;

    /* 1. the newest valid header copy (equal generations: copy 0) */
    for (i = 0; i < 2; i++)
        valid[i] = file_size >= (uint64_t)i * COPY_SIZE + 256 && parse_header(data + i * COPY_SIZE, &c[i]);
    if (!valid[0] && !valid[1]) {
        fprintf(stderr, "pf_reader: no valid header copy in %s\n", argv[1]);
        return 2;
    }
    i = !valid[0] || (valid[1] && c[1].generation > c[0].generation) ? 1 : 0;
    H = c[i];
    H.copy = i;
    if (H.slot_size < 128 || H.slot_size > 65536 || H.capacity < 2 || H.max_payload > 65535
        || H.capacity > ((uint64_t)1 << 40) / H.slot_size) {
        fprintf(stderr, "pf_reader: header holds impossible sizes\n");
        return 2;
    }
    avail_slots = file_size > DATA_OFFSET ? (file_size - DATA_OFFSET) / H.slot_size : 0;
    if (avail_slots > H.capacity) avail_slots = H.capacity;
    fprintf(stderr, "{\"copy\":%d,\"version\":%" PRIu32 ",\"generation\":%" PRIu64
            ",\"slot_size\":%" PRIu32 ",\"capacity\":%" PRIu64 ",\"max_payload\":%" PRIu32
            ",\"day_offset_min\":%" PRId32 ",\"day_start_min\":%" PRId32 ",\"tz\":\"%s\""
            ",\"sync_watermark\":%" PRIu64 "}\n", H.copy, H.version, H.generation, H.slot_size,
            H.capacity, H.max_payload, H.offset_min, H.start_min, H.tz, H.sync_watermark);

    rec = malloc(HEAD + 255 + 65535 + 16);
    if (!rec) return 2;

    /* 2. where the walk starts: seq 1 at position 1, or the oldest live record */
    seq = 1;
    pos = 1;
    have_prev = 1;
    {
        /* genesis link = SHA-256("posfast-chain-v1" || journal id)[:16] */
        uint8_t g[32], in[32];
        memcpy(in, "posfast-chain-v1", 16);
        memcpy(in + 16, H.jid, 16);
        pf_sha256(in, 32, g);
        memcpy(prev, g, 16);
    }
    if (avail_slots == 0 || ld64(slot_ptr(0) + 16) != 1 || ld64(slot_ptr(0) + 8) != 1) {
        if (!find_oldest(&seq, &pos, rec)) {
            free(rec);
            free(data);
            return 0;                 /* no record at all */
        }
        have_prev = seq == 1;
    }
    start_pos = pos;

    /* 3. the walk */
    while (pos < start_pos + H.capacity && plausible(pos, &h) && ld64(h + 8) == seq) {
        uint32_t blen = body_len(h), plen = ld16(h + 4), elen = H.version >= 2 ? ld16(h + 100) : 0;
        uint8_t link[16];
        const uint8_t *ref[3] = {NULL, NULL, NULL};
        uint32_t rlen[3] = {0, 0, 0};
        int cok, lok, eok = 1;
        int64_t ts, day;
        ring_read(((pos - 1) % H.capacity) * H.slot_size, rec, HEAD + blen);
        cok = crc_ok(rec, blen);
        link_of(prev, rec, blen, link);
        lok = memcmp(link, rec + 112, 16) == 0;
        ts = (int64_t)ld64(rec + 24);
        if (H.version == 1) {
            day = floor_div(ts + ((int64_t)H.offset_min - H.start_min) * 60000000LL, 86400000000LL);
            ref[0] = rec + 96;
            rlen[0] = 16;
        } else {
            day = (int32_t)ld32(rec + 96);
            eok = parse_ext(rec + HEAD, elen, ref, rlen);
        }
        printf("{\"seq\":%" PRIu64 ",\"pos\":%" PRIu64 ",\"slot\":%" PRIu64 ",\"ts\":%" PRId64
               ",\"day\":%" PRId64 ",\"terminal\":%" PRIu32 ",\"kind\":%u,\"state\":%u"
               ",\"method\":%u,\"flags\":%u,\"amount\":%" PRId64 ",\"currency\":%u"
               ",\"txn_id\":%" PRIu64 ",\"ref_seq\":%" PRIu64 ",\"receipt_no\":%" PRIu32
               ",\"operator\":%" PRIu32 ",\"group_off\":%u,",
               seq, pos, (pos - 1) % H.capacity, ts, day, ld32(rec + 32), rec[36], rec[37],
               rec[38], rec[39], (int64_t)ld64(rec + 56), ld16(rec + 40), ld64(rec + 64),
               ld64(rec + 72), ld32(rec + 52), ld32(rec + 80), ld16(rec + 6));
        put_text("pan_last4", rec + 42, 4);
        put_text("auth_code", rec + 46, 6);
        put_text("rrn", rec + 84, 12);
        put_text("client_ref", ref[0] ? ref[0] : rec, rlen[0]);
        put_text("order_ref", ref[1] ? ref[1] : rec, rlen[1]);
        put_text("host_ref", ref[2] ? ref[2] : rec, rlen[2]);
        put_text("channel", rec + 102, H.version >= 2 ? 10 : 0);
        put_hex("payload", rec + HEAD + elen, plen);
        put_hex("link", rec + 112, 16);
        printf("\"crc_ok\":%s,\"link_ok\":%s,\"ext_ok\":%s}\n", cok ? "true" : "false",
               have_prev ? (lok ? "true" : "false") : "null", eok ? "true" : "false");
        if (!cok || (have_prev && !lok) || !eok) bad = 1;
        memcpy(prev, rec + 112, 16);   /* the chain goes on from the stored link */
        have_prev = 1;
        pos += nslots(h);
        seq++;
    }
    free(rec);
    free(data);
    return bad ? 1 : 0;
}
