/* Self-test and microbenchmark for src/pf_crc32c.c and src/pf_sha256.c.
 *
 *   make -C tests/c test        # vectors + cross-path agreement, forced and auto
 *   make -C tests/c bench       # also prints ns per 128-byte CRC / SHA-256 per path
 *
 * or by hand:
 *   gcc -std=c99 -O3 -Wall -Wextra -pedantic -Isrc tests/c/test_checksums.c \
 *       src/pf_crc32c.c src/pf_sha256.c -o /tmp/test_checksums && /tmp/test_checksums [--bench] [seed]
 *
 * Exit status 0 when every check passed.
 */
#define _POSIX_C_SOURCE 199309L /* clock_gettime under -std=c99 */

#include "pf_crc32c.h"
#include "pf_sha256.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int failures;

#define CHECK(cond, ...)                                                               \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            failures++;                                                                \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                       \
            fprintf(stderr, __VA_ARGS__);                                              \
            fputc('\n', stderr);                                                       \
        }                                                                              \
    } while (0)

/* xorshift64*: deterministic per seed so a failure can be replayed. */
static unsigned long long rng_state = 0x9E3779B97F4A7C15ULL;

static unsigned long long rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static size_t rng_below(size_t n) { return n ? (size_t)(rng() % n) : 0; }

/* Bit-at-a-time CRC-32C: too slow to ship, too simple to share a bug with the tables. */
static uint32_t ref_crc32c(uint32_t crc, const unsigned char *p, size_t len)
{
    int k;
    crc = ~crc;
    while (len--) {
        crc ^= *p++;
        for (k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static void hex(const uint8_t *d, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;
    for (i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
}

static void set_forced(int on)
{
    pf_crc32c_force_table(on);
    pf_sha256_force_portable(on);
}

/* ---- published vectors ------------------------------------------------------------ */

static void check_vectors(void)
{
    unsigned char buf[32];
    char got[65];
    uint8_t md[32];
    int i;
    static const struct {
        const char *msg;
        const char *digest;
    } sha[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };

    CHECK(pf_crc32c(0, "123456789", 9) == 0xE3069283u, "crc '123456789' = %08x",
          (unsigned)pf_crc32c(0, "123456789", 9));
    memset(buf, 0, 32);
    CHECK(pf_crc32c(0, buf, 32) == 0x8A9136AAu, "crc zeros = %08x", (unsigned)pf_crc32c(0, buf, 32));
    memset(buf, 0xFF, 32);
    CHECK(pf_crc32c(0, buf, 32) == 0x62A8AB43u, "crc ones = %08x", (unsigned)pf_crc32c(0, buf, 32));
    for (i = 0; i < 32; i++)
        buf[i] = (unsigned char)i;
    CHECK(pf_crc32c(0, buf, 32) == 0x46DD794Eu, "crc incr = %08x", (unsigned)pf_crc32c(0, buf, 32));
    for (i = 0; i < 32; i++)
        buf[i] = (unsigned char)(31 - i);
    CHECK(pf_crc32c(0, buf, 32) == 0x113FDB5Cu, "crc decr = %08x", (unsigned)pf_crc32c(0, buf, 32));
    CHECK(pf_crc32c(0, NULL, 0) == 0 && pf_crc32c(0x1234u, NULL, 0) == 0x1234u,
          "crc of nothing must return the running value unchanged");

    for (i = 0; i < (int)(sizeof sha / sizeof sha[0]); i++) {
        pf_sha256(sha[i].msg, strlen(sha[i].msg), md);
        hex(md, 32, got);
        CHECK(strcmp(got, sha[i].digest) == 0, "sha256('%s') = %s", sha[i].msg, got);
    }
    {
        /* One million 'a' streamed in uneven pieces so buffering is exercised too. */
        static unsigned char a[1100]; /* > largest step below */
        pf_sha256_ctx ctx;
        size_t done = 0, step = 1;
        memset(a, 'a', sizeof a);
        pf_sha256_init(&ctx);
        while (done < 1000000) {
            size_t n = step < 1000000 - done ? step : 1000000 - done;
            pf_sha256_update(&ctx, a, n);
            done += n;
            step = step % 997 + 61;
        }
        pf_sha256_final(&ctx, md);
        hex(md, 32, got);
        CHECK(strcmp(got, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0,
              "sha256(1e6 x 'a') = %s", got);
    }
}

/* ---- random agreement, misalignment, chaining --------------------------------------- */

#define MAXLEN 1000

static void check_random(int rounds)
{
    static unsigned char buf[MAXLEN + 64];
    int r;
    size_t i;

    for (i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)rng();

    for (r = 0; r < rounds; r++) {
        size_t len = rng_below(MAXLEN + 1), off = rng_below(17);
        const unsigned char *p = buf + off;
        uint32_t c_ref = ref_crc32c(0, p, len), c_tab, c_auto, c_chain;
        uint8_t d_port[32], d_auto[32], d_stream[32];
        pf_sha256_ctx ctx;
        size_t pos;

        set_forced(1);
        c_tab = pf_crc32c(0, p, len);
        pf_sha256(p, len, d_port);
        set_forced(0);
        c_auto = pf_crc32c(0, p, len);
        pf_sha256(p, len, d_auto);

        CHECK(c_tab == c_ref, "table crc len=%u off=%u: %08x != ref %08x", (unsigned)len,
              (unsigned)off, (unsigned)c_tab, (unsigned)c_ref);
        CHECK(c_auto == c_ref, "%s crc len=%u off=%u: %08x != ref %08x", pf_crc32c_impl(),
              (unsigned)len, (unsigned)off, (unsigned)c_auto, (unsigned)c_ref);
        CHECK(memcmp(d_port, d_auto, 32) == 0, "%s sha256 len=%u off=%u differs from portable",
              pf_sha256_impl(), (unsigned)len, (unsigned)off);

        /* Random chunking; odd rounds force the portable path so both are chained. */
        set_forced(r & 1);
        c_chain = 0;
        pf_sha256_init(&ctx);
        for (pos = 0; pos < len;) {
            size_t n = rng_below(len - pos + 1);
            if (rng() & 1)
                n = rng_below(9); /* plenty of tiny pieces around the 4/8-byte steps */
            if (n > len - pos)
                n = len - pos;
            c_chain = pf_crc32c(c_chain, p + pos, n);
            pf_sha256_update(&ctx, p + pos, n);
            pos += n;
        }
        pf_sha256_final(&ctx, d_stream);
        CHECK(c_chain == c_ref, "chained crc (%s) len=%u: %08x != %08x", pf_crc32c_impl(),
              (unsigned)len, (unsigned)c_chain, (unsigned)c_ref);
        CHECK(memcmp(d_stream, d_port, 32) == 0, "streamed sha256 (%s) len=%u differs",
              pf_sha256_impl(), (unsigned)len);
        set_forced(0);
    }
}

/* ---- microbenchmark ------------------------------------------------------------------ */

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void bench(void)
{
    static unsigned char rec[4096 + 1];
    volatile uint32_t sink32 = 0;
    volatile uint8_t sink8 = 0;
    int forced, rep;
    size_t i;

    for (i = 0; i < sizeof rec; i++)
        rec[i] = (unsigned char)rng();

    for (forced = 1; forced >= 0; forced--) {
        const long n_crc = 4000000, n_sha = 400000, n_crc4k = 200000;
        double best_crc = 1e30, best_sha = 1e30, best_crc4k = 1e30, t;
        long k;
        uint8_t md[32];

        set_forced(forced);
        /* Best of 3 so a scheduler hiccup on a small shared machine does not count. */
        for (rep = 0; rep < 3; rep++) {
            uint32_t c = 0;
            t = now_ns();
            for (k = 0; k < n_crc; k++)
                c = pf_crc32c(c, rec + (k & 1), 128); /* chained: latency, like a journal scan */
            t = (now_ns() - t) / (double)n_crc;
            sink32 ^= c;
            if (t < best_crc)
                best_crc = t;

            t = now_ns();
            for (k = 0; k < n_crc4k; k++)
                c = pf_crc32c(c, rec, 4096);
            t = (now_ns() - t) / (double)n_crc4k;
            sink32 ^= c;
            if (t < best_crc4k)
                best_crc4k = t;

            t = now_ns();
            for (k = 0; k < n_sha; k++) {
                rec[0] = (unsigned char)k; /* defeat any hoisting */
                pf_sha256(rec, 128, md);
                sink8 ^= md[0];
            }
            t = (now_ns() - t) / (double)n_sha;
            if (t < best_sha)
                best_sha = t;
        }
        printf("bench crc32c %-7s %7.1f ns/128B  (%6.2f GB/s on 4 KiB)\n", pf_crc32c_impl(),
               best_crc, 4096.0 / best_crc4k);
        printf("bench sha256 %-8s %6.1f ns/128B  (one-shot, incl. padding block)\n",
               pf_sha256_impl(), best_sha);
    }
    set_forced(0);
    (void)sink32;
    (void)sink8;
}

int main(int argc, char **argv)
{
    int do_bench = 0, i, forced;
    unsigned long long seed = 0;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--bench") == 0)
            do_bench = 1;
        else
            seed = strtoull(argv[i], NULL, 0);
    }
    if (seed)
        rng_state = seed;

    set_forced(0);
    printf("auto paths: crc32c=%s sha256=%s (seed %llu)\n", pf_crc32c_impl(), pf_sha256_impl(),
           seed);
    for (forced = 1; forced >= 0; forced--) {
        set_forced(forced);
        printf("vectors with crc32c=%s sha256=%s\n", pf_crc32c_impl(), pf_sha256_impl());
        check_vectors();
    }
    set_forced(1);
    CHECK(strcmp(pf_crc32c_impl(), "table") == 0, "forced crc path is %s", pf_crc32c_impl());
    CHECK(strcmp(pf_sha256_impl(), "portable") == 0, "forced sha path is %s", pf_sha256_impl());
    set_forced(0);
    check_random(3000);

    if (do_bench)
        bench();

    if (failures) {
        printf("%d check(s) FAILED\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
