/* SHA-256 (FIPS 180-4) with run-time selected hardware block functions
 * (x86 SHA-NI, ARMv8 crypto extensions) and a portable fallback. */
#ifndef PF_SHA256_H
#define PF_SHA256_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint32_t state[8];
    uint64_t bitlen;   /* message bits already folded into state */
    uint8_t buf[64];   /* partial block waiting for more input */
    size_t buflen;
} pf_sha256_ctx;

void pf_sha256_init(pf_sha256_ctx *ctx);
/* data may be NULL when len == 0. */
void pf_sha256_update(pf_sha256_ctx *ctx, const void *data, size_t len);
/* Writes the digest; ctx must be re-initialised before reuse. */
void pf_sha256_final(pf_sha256_ctx *ctx, uint8_t out[32]);
void pf_sha256(const void *data, size_t len, uint8_t out[32]);

/* "sha-ni", "armv8-ce" or "portable": the block function in use now. */
const char *pf_sha256_impl(void);

/* For tests: on=1 forces the portable block function, on=0 returns to auto-detection. */
void pf_sha256_force_portable(int on);

#ifdef __cplusplus
}
#endif

#endif /* PF_SHA256_H */
