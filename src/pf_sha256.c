/* SHA-256 (FIPS 180-4) with run-time dispatch of the block function.
 *
 * Only the compression of whole 64-byte blocks differs between paths; buffering and
 * padding are shared, so all paths agree by construction outside the block function.
 * Hardware paths are enabled per function (setup.py passes no -m/-march flags) and
 * called only after a CPU check.
 */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE 1 /* -std=c99 hides getauxval() */
#endif

#include "pf_sha256.h"

#include <string.h>

/* ---- which hardware path can this compiler/target build? ---------------------- */

#if (defined(__x86_64__) || defined(__i386__)) &&                                  \
    (defined(__clang__) || __GNUC__ >= 5)
/* gcc >= 5 and clang expose the SHA intrinsics without -msha. */
#define PF_SHA_X86_GNU 1
#include <cpuid.h>
#include <immintrin.h>
#define PF_TARGET_SHANI __attribute__((target("sha,sse4.1")))
#elif (defined(_M_X64) || defined(_M_IX86)) && defined(_MSC_VER) && !defined(__clang__)
/* MSVC allows every intrinsic regardless of /arch. */
#define PF_SHA_X86_MSVC 1
#include <intrin.h>
#include <immintrin.h>
#define PF_TARGET_SHANI
#elif defined(__aarch64__) && !defined(__AARCH64EB__) &&                              \
    (defined(__clang__) || __GNUC__ >= 6) &&                                          \
    (defined(__ARM_FEATURE_SHA2) || defined(__ARM_FEATURE_CRYPTO) ||                  \
     defined(__linux__) || defined(__APPLE__))
/* Little-endian only: the lane layout the code below relies on is the LE one. */
#define PF_SHA_ARM64 1
#if defined(__ARM_FEATURE_SHA2) || defined(__ARM_FEATURE_CRYPTO)
#define PF_SHA_ARM64_ALWAYS 1 /* the whole build already assumes it */
#endif
#if defined(__clang__) && defined(PF_SHA_ARM64_ALWAYS)
#include <arm_neon.h>
#define PF_TARGET_SHA2
#elif defined(__clang__)
/* clang before 18 declares the SHA-2 intrinsics only when the feature is on for the
 * whole translation unit.  Pretend it is while the header is read, and give the
 * functions it declares the target attribute so that they may only be inlined into
 * functions that carry it too.  Newer clang ignores the macros. */
#pragma clang attribute push(__attribute__((target("crypto"))), apply_to = function)
#define __ARM_FEATURE_SHA2 1
#define __ARM_FEATURE_CRYPTO 1
#include <arm_neon.h>
#undef __ARM_FEATURE_SHA2
#undef __ARM_FEATURE_CRYPTO
#pragma clang attribute pop
#define PF_TARGET_SHA2 __attribute__((target("crypto")))
#else
/* gcc's arm_neon.h turns on "+crypto" (not merely "+sha2") around the intrinsics, so
 * the caller needs "+crypto" too, even when -march already includes sha2. */
#include <arm_neon.h>
#define PF_TARGET_SHA2 __attribute__((target("+crypto")))
#endif
#if defined(__linux__) && !defined(PF_SHA_ARM64_ALWAYS)
#include <sys/auxv.h>
#ifndef HWCAP_SHA2
#define HWCAP_SHA2 (1UL << 6) /* old libc headers lack it; the bit is kernel ABI */
#endif
#endif
#if defined(__APPLE__)
#include <TargetConditionals.h>
#endif
#endif

typedef void (*pf_sha256_blocks_fn)(uint32_t state[8], const unsigned char *p, size_t n);

static const uint32_t pf_sha256_k[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u,
    0x923f82a4u, 0xab1c5ed5u, 0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u,
    0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u, 0xe49b69c1u, 0xefbe4786u,
    0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u,
    0x06ca6351u, 0x14292967u, 0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u,
    0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u, 0xa2bfe8a1u, 0xa81a664bu,
    0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au,
    0x5b9cca4fu, 0x682e6ff3u, 0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u,
    0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u};

/* The only mutable state: NULL until the first call (or after force_portable(0)).
 * Threads racing on the first call all store the same pointer, which is harmless. */
static pf_sha256_blocks_fn pf_sha256_active;

/* ---- portable -------------------------------------------------------------------- */

#define PF_ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static uint32_t pf_load_be32(const unsigned char *p)
{
    /* Byte assembly is endian- and alignment-neutral; compilers emit load+bswap. */
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void pf_store_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void pf_sha256_blocks_portable(uint32_t state[8], const unsigned char *p, size_t n)
{
    uint32_t w[64];
    int i;

    while (n--) {
        uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
        uint32_t e = state[4], f = state[5], g = state[6], h = state[7];

        for (i = 0; i < 16; i++)
            w[i] = pf_load_be32(p + 4 * i);
        for (i = 16; i < 64; i++) {
            uint32_t s0 = PF_ROTR(w[i - 15], 7) ^ PF_ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = PF_ROTR(w[i - 2], 17) ^ PF_ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        for (i = 0; i < 64; i++) {
            uint32_t t1 = h + (PF_ROTR(e, 6) ^ PF_ROTR(e, 11) ^ PF_ROTR(e, 25)) +
                          ((e & f) ^ (~e & g)) + pf_sha256_k[i] + w[i];
            uint32_t t2 = (PF_ROTR(a, 2) ^ PF_ROTR(a, 13) ^ PF_ROTR(a, 22)) +
                          ((a & b) ^ (a & c) ^ (b & c));
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        state[0] += a;
        state[1] += b;
        state[2] += c;
        state[3] += d;
        state[4] += e;
        state[5] += f;
        state[6] += g;
        state[7] += h;
        p += 64;
    }
}

/* ---- x86 SHA-NI ------------------------------------------------------------------ */

#if defined(PF_SHA_X86_GNU) || defined(PF_SHA_X86_MSVC)

/* Four rounds with schedule vector m = W[4i..4i+3]. */
#define PF_SHANI_ROUNDS(i, m)                                                              \
    do {                                                                                   \
        t = _mm_add_epi32(                                                                 \
            (m), _mm_loadu_si128((const __m128i *)(const void *)&pf_sha256_k[4 * (i)]));   \
        s1 = _mm_sha256rnds2_epu32(s1, s0, t);                                             \
        s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(t, 0x0E));                    \
    } while (0)

/* Replace the oldest vector m0 by the next four schedule words (m0..m3 oldest first). */
#define PF_SHANI_SCHEDULE(m0, m1, m2, m3)                                                  \
    (m0) = _mm_sha256msg2_epu32(                                                           \
        _mm_add_epi32(_mm_sha256msg1_epu32((m0), (m1)), _mm_alignr_epi8((m3), (m2), 4)), (m3))

PF_TARGET_SHANI
static void pf_sha256_blocks_shani(uint32_t state[8], const unsigned char *p, size_t n)
{
    const __m128i bswap = _mm_setr_epi8(3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12);
    __m128i s0, s1, t, m0, m1, m2, m3;
    int i;

    /* sha256rnds2 wants the state as {A,B,E,F} and {C,D,G,H} (high to low lanes). */
    t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(const void *)&state[0]), 0xB1);
    s1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(const void *)&state[4]), 0x1B);
    s0 = _mm_alignr_epi8(t, s1, 8);
    s1 = _mm_blend_epi16(s1, t, 0xF0);

    while (n--) {
        const __m128i save0 = s0, save1 = s1;

        /* Named vectors rather than an array indexed by the round: compilers do not
         * always unroll such a loop, and then the array lives on the stack. */
        m0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 0)), bswap);
        m1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 16)), bswap);
        m2 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 32)), bswap);
        m3 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 48)), bswap);
        PF_SHANI_ROUNDS(0, m0);
        PF_SHANI_ROUNDS(1, m1);
        PF_SHANI_ROUNDS(2, m2);
        PF_SHANI_ROUNDS(3, m3);
        for (i = 4; i < 16; i += 4) {
            PF_SHANI_SCHEDULE(m0, m1, m2, m3);
            PF_SHANI_ROUNDS(i, m0);
            PF_SHANI_SCHEDULE(m1, m2, m3, m0);
            PF_SHANI_ROUNDS(i + 1, m1);
            PF_SHANI_SCHEDULE(m2, m3, m0, m1);
            PF_SHANI_ROUNDS(i + 2, m2);
            PF_SHANI_SCHEDULE(m3, m0, m1, m2);
            PF_SHANI_ROUNDS(i + 3, m3);
        }
        s0 = _mm_add_epi32(s0, save0);
        s1 = _mm_add_epi32(s1, save1);
        p += 64;
    }

    t = _mm_shuffle_epi32(s0, 0x1B);
    s1 = _mm_shuffle_epi32(s1, 0xB1);
    _mm_storeu_si128((__m128i *)(void *)&state[0], _mm_blend_epi16(t, s1, 0xF0));
    _mm_storeu_si128((__m128i *)(void *)&state[4], _mm_alignr_epi8(s1, t, 8));
}

static int pf_cpu_has_shani(void)
{
    /* SHA (leaf 7 EBX bit 29) plus SSSE3 and SSE4.1 (leaf 1 ECX bits 9 and 19) for the
     * shuffles and blends around it. */
#if defined(PF_SHA_X86_GNU)
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    if (!((c >> 9) & 1) || !((c >> 19) & 1))
        return 0;
    if (__get_cpuid_max(0, NULL) < 7)
        return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b >> 29) & 1;
#else
    int r[4];
    __cpuid(r, 0);
    if (r[0] < 7)
        return 0;
    __cpuid(r, 1);
    if (!((r[2] >> 9) & 1) || !((r[2] >> 19) & 1))
        return 0;
    __cpuidex(r, 7, 0);
    return (r[1] >> 29) & 1;
#endif
}

#define PF_SHA_HW_FN pf_sha256_blocks_shani
#define PF_SHA_HW_NAME "sha-ni"
#define PF_SHA_HW_AVAILABLE() pf_cpu_has_shani()

/* ---- ARMv8 crypto extensions ----------------------------------------------------- */

#elif defined(PF_SHA_ARM64)

/* Four rounds with schedule vector m = W[4i..4i+3]. */
#define PF_SHA2CE_ROUNDS(i, m)                                                             \
    do {                                                                                   \
        wk = vaddq_u32((m), vld1q_u32(&pf_sha256_k[4 * (i)]));                             \
        prev = abcd;                                                                       \
        abcd = vsha256hq_u32(abcd, efgh, wk);                                              \
        efgh = vsha256h2q_u32(efgh, prev, wk);                                             \
    } while (0)

/* Replace the oldest vector m0 by the next four schedule words (m0..m3 oldest first). */
#define PF_SHA2CE_SCHEDULE(m0, m1, m2, m3)                                                 \
    (m0) = vsha256su1q_u32(vsha256su0q_u32((m0), (m1)), (m2), (m3))

PF_TARGET_SHA2
static void pf_sha256_blocks_armv8(uint32_t state[8], const unsigned char *p, size_t n)
{
    uint32x4_t abcd = vld1q_u32(&state[0]);
    uint32x4_t efgh = vld1q_u32(&state[4]);
    uint32x4_t m0, m1, m2, m3, wk, prev;
    int i;

    while (n--) {
        const uint32x4_t save_abcd = abcd, save_efgh = efgh;

        /* Named vectors rather than an array indexed by the round: compilers do not
         * always unroll such a loop, and then the array lives on the stack. */
        m0 = vreinterpretq_u32_u8(vrev32q_u8(vld1q_u8(p + 0)));
        m1 = vreinterpretq_u32_u8(vrev32q_u8(vld1q_u8(p + 16)));
        m2 = vreinterpretq_u32_u8(vrev32q_u8(vld1q_u8(p + 32)));
        m3 = vreinterpretq_u32_u8(vrev32q_u8(vld1q_u8(p + 48)));
        PF_SHA2CE_ROUNDS(0, m0);
        PF_SHA2CE_ROUNDS(1, m1);
        PF_SHA2CE_ROUNDS(2, m2);
        PF_SHA2CE_ROUNDS(3, m3);
        for (i = 4; i < 16; i += 4) {
            PF_SHA2CE_SCHEDULE(m0, m1, m2, m3);
            PF_SHA2CE_ROUNDS(i, m0);
            PF_SHA2CE_SCHEDULE(m1, m2, m3, m0);
            PF_SHA2CE_ROUNDS(i + 1, m1);
            PF_SHA2CE_SCHEDULE(m2, m3, m0, m1);
            PF_SHA2CE_ROUNDS(i + 2, m2);
            PF_SHA2CE_SCHEDULE(m3, m0, m1, m2);
            PF_SHA2CE_ROUNDS(i + 3, m3);
        }
        abcd = vaddq_u32(abcd, save_abcd);
        efgh = vaddq_u32(efgh, save_efgh);
        p += 64;
    }
    vst1q_u32(&state[0], abcd);
    vst1q_u32(&state[4], efgh);
}

static int pf_cpu_has_sha2(void)
{
#if defined(PF_SHA_ARM64_ALWAYS)
    return 1;
#elif defined(__APPLE__)
    /* Every Apple Silicon Mac has it; other Apple arm64 targets are not worth a probe. */
    return TARGET_OS_OSX ? 1 : 0;
#else
    return (getauxval(AT_HWCAP) & HWCAP_SHA2) != 0;
#endif
}

#define PF_SHA_HW_FN pf_sha256_blocks_armv8
#define PF_SHA_HW_NAME "armv8-ce"
#define PF_SHA_HW_AVAILABLE() pf_cpu_has_sha2()

#endif

/* ---- dispatch -------------------------------------------------------------------- */

static pf_sha256_blocks_fn pf_sha256_blocks(void)
{
    pf_sha256_blocks_fn fn = pf_sha256_active;
    if (fn == NULL) {
        fn = pf_sha256_blocks_portable;
#ifdef PF_SHA_HW_FN
        if (PF_SHA_HW_AVAILABLE())
            fn = PF_SHA_HW_FN;
#endif
        pf_sha256_active = fn;
    }
    return fn;
}

const char *pf_sha256_impl(void)
{
#ifdef PF_SHA_HW_FN
    if (pf_sha256_blocks() == PF_SHA_HW_FN)
        return PF_SHA_HW_NAME;
#endif
    return "portable";
}

void pf_sha256_force_portable(int on)
{
    pf_sha256_active = on ? pf_sha256_blocks_portable : NULL;
}

/* ---- streaming API --------------------------------------------------------------- */

void pf_sha256_init(pf_sha256_ctx *ctx)
{
    static const uint32_t iv[8] = {0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
                                   0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u};
    memcpy(ctx->state, iv, sizeof iv);
    ctx->bitlen = 0;
    ctx->buflen = 0;
}

void pf_sha256_update(pf_sha256_ctx *ctx, const void *data, size_t len)
{
    const unsigned char *p = (const unsigned char *)data;
    pf_sha256_blocks_fn blocks;
    size_t n;

    if (len == 0)
        return; /* also keeps NULL data away from memcpy */
    blocks = pf_sha256_blocks();
    ctx->bitlen += (uint64_t)len << 3;

    if (ctx->buflen) {
        size_t take = 64 - ctx->buflen;
        if (take > len)
            take = len;
        memcpy(ctx->buf + ctx->buflen, p, take);
        ctx->buflen += take;
        p += take;
        len -= take;
        if (ctx->buflen < 64)
            return;
        blocks(ctx->state, ctx->buf, 1);
        ctx->buflen = 0;
    }
    /* Whole blocks straight from the caller's memory: no copy for large inputs. */
    n = len / 64;
    if (n) {
        blocks(ctx->state, p, n);
        p += n * 64;
        len -= n * 64;
    }
    if (len) {
        memcpy(ctx->buf, p, len);
        ctx->buflen = len;
    }
}

void pf_sha256_final(pf_sha256_ctx *ctx, uint8_t out[32])
{
    pf_sha256_blocks_fn blocks = pf_sha256_blocks();
    uint64_t bitlen = ctx->bitlen;
    size_t i = ctx->buflen;
    int k;

    ctx->buf[i++] = 0x80;
    if (i > 56) {
        memset(ctx->buf + i, 0, 64 - i);
        blocks(ctx->state, ctx->buf, 1);
        i = 0;
    }
    memset(ctx->buf + i, 0, 56 - i);
    for (k = 0; k < 8; k++)
        ctx->buf[56 + k] = (uint8_t)(bitlen >> (56 - 8 * k));
    blocks(ctx->state, ctx->buf, 1);

    for (k = 0; k < 8; k++)
        pf_store_be32(out + 4 * k, ctx->state[k]);
}

void pf_sha256(const void *data, size_t len, uint8_t out[32])
{
    pf_sha256_ctx ctx;
    pf_sha256_init(&ctx);
    pf_sha256_update(&ctx, data, len);
    pf_sha256_final(&ctx, out);
}
