/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78: the iSCSI / ext4 / SSE4.2 one).
 *
 * The fastest path the CPU offers is picked at run time, so the library needs no
 * -m flags at build time and one wheel serves every CPU of an architecture.
 */
#ifndef PF_CRC32C_H
#define PF_CRC32C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* crc = 0 to start.  The usual pre/post inversion happens inside, so calls chain:
 * pf_crc32c(pf_crc32c(0, a, n), b, m) == pf_crc32c(0, a||b, n+m).
 * data may be NULL when len == 0. */
uint32_t pf_crc32c(uint32_t crc, const void *data, size_t len);

/* "sse4.2", "armv8" or "table": the path pf_crc32c() uses now. */
const char *pf_crc32c_impl(void);

/* For tests: on=1 forces the portable table path, on=0 returns to auto-detection. */
void pf_crc32c_force_table(int on);

#ifdef __cplusplus
}
#endif

#endif /* PF_CRC32C_H */
