/*
 * Payload copy between a ring and a caller's buffer, shared by the C libraries (ring.c) and
 * the Node addon (native/src/copy.c, which includes this file through binding.gyp's
 * include_dirs). Header-only and static inline so that each build inlines it into its own
 * copy loop.
 *
 * Why not memcpy: glibc copies large blocks with `rep movsb`, and on AMD Zen that instruction
 * runs ~13x slower when the destination sits a little above the source modulo 4 KiB
 * (measured: 2.6 vs 34 GiB/s from a page-aligned mapping into a malloc'd buffer; the glibc
 * tunable glibc.cpu.x86_rep_movsb_threshold removes the gap). Ring data is page aligned and
 * user buffers are not, so reads hit that case constantly. An unrolled 64-byte SSE2 loop has
 * no such cliff (C<->C 64 KiB messages: 15 -> 33 GiB/s; addon: 2.3 -> 14-17 GiB/s). SSE2 is
 * baseline on x86-64; other architectures use memcpy.
 *
 * The ranges must not overlap (a copy is always between a ring and a user buffer).
 * docs/ring-protocol.md §7: payload copies are plain copies, no ordering is implied.
 */
#ifndef KVC_COPY_H
#define KVC_COPY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <emmintrin.h>

static inline void kvc_payload_copy(void *dstv, const void *srcv, size_t n)
{
    uint8_t *dst = dstv;
    const uint8_t *src = srcv;
    while (n >= 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(const void *)(src + 0));
        __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(src + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(const void *)(src + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(const void *)(src + 48));
        _mm_storeu_si128((__m128i *)(void *)(dst + 0), a);
        _mm_storeu_si128((__m128i *)(void *)(dst + 16), b);
        _mm_storeu_si128((__m128i *)(void *)(dst + 32), c);
        _mm_storeu_si128((__m128i *)(void *)(dst + 48), d);
        src += 64;
        dst += 64;
        n -= 64;
    }
    if (n > 0)
        memcpy(dst, src, n); /* < 64 bytes: never the rep movsb path */
}
#else
static inline void kvc_payload_copy(void *dst, const void *src, size_t n)
{
    memcpy(dst, src, n);
}
#endif

#endif
