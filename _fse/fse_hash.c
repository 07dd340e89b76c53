/*
 * fse_hash.c -- the content hash that seeds the tANS states, and the symbol
 * histogram, computed together in one pass over the input (generic code, a
 * BMI2 clone and an AVX2 variant, picked at run time).
 */
#include "fse_internal.h"

#if FSE_HAVE_BMI2
#include <immintrin.h>
#endif

/* ------------------------------------------------------------------------ */
/* content hash.  The tANS states start at L + (bits of this hash) instead of */
/* a constant, so the decoder's "back to the initial state" check becomes an  */
/* S*R-bit check of the decoded symbols (no extra bytes in the stream).  Four */
/* 64-bit lanes over 32-byte blocks; the tail and n go through a finaliser.   */
/* ------------------------------------------------------------------------ */
#define HK1 0x9E3779B97F4A7C15ull
#define HK2 0xC2B2AE3D27D4EB4Full
#define HK3 0x165667B19E3779F9ull

FSE_INLINE uint64_t rotl64(uint64_t x, unsigned r) { return (x << r) | (x >> (64 - r)); }
FSE_INLINE uint64_t hround(uint64_t h, uint64_t w) { return rotl64((h ^ w) * HK1, 29); }

typedef struct { uint64_t a, b, c, d; } hstate;

FSE_INLINE void hash_begin(hstate *H)
{
    H->a = HK2; H->b = HK3; H->c = HK1 ^ HK2; H->d = ~HK3;
}

static uint64_t hash_finish(const hstate *H, const uint8_t *tail, size_t tlen, uint64_t n)
{
    uint64_t a = H->a, b = H->b, c = H->c, d = H->d;
    size_t i = 0;
    for (; i + 8 <= tlen; i += 8) a = hround(a, rd64(tail + i)) ^ rotl64(b, 7);
    uint64_t w = 0;
    for (size_t j = 0; i + j < tlen; j++) w |= (uint64_t)tail[i + j] << (8 * j);
    uint64_t h = hround(a ^ HK3, w) ^ rotl64(b, 17) ^ rotl64(c, 31) ^ rotl64(d, 47) ^ (n * HK2);
    h ^= h >> 33; h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33; h *= 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 33;
    return h;
}

/* the hash alone (the decoder checks its final states against it) */
uint64_t hash_symbols(const uint8_t *src, size_t n)
{
    hstate H;
    hash_begin(&H);
    size_t i = 0;
    uint64_t a = H.a, b = H.b, c = H.c, d = H.d;
    for (; i + 32 <= n; i += 32) {
        a = hround(a, rd64(src + i));
        b = hround(b, rd64(src + i + 8));
        c = hround(c, rd64(src + i + 16));
        d = hround(d, rd64(src + i + 24));
    }
    H.a = a; H.b = b; H.c = c; H.d = d;
    return hash_finish(&H, src + i, n - i, n);
}

/* ------------------------------------------------------------------------ */
/* histogram (fused with the hash: one pass over the input)                   */
/* ------------------------------------------------------------------------ */
#define HIST8(t, w)                                                          \
    do {                                                                     \
        c[t][(w) & 255]++; c[t + 1][((w) >> 8) & 255]++;                     \
        c[t][((w) >> 16) & 255]++; c[t + 1][((w) >> 24) & 255]++;            \
        c[t][((w) >> 32) & 255]++; c[t + 1][((w) >> 40) & 255]++;            \
        c[t][((w) >> 48) & 255]++; c[t + 1][(w) >> 56]++;                    \
    } while (0)

FSE_INLINE uint64_t histogram_hash_bytes(uint32_t h[256], const uint8_t *src, size_t n)
{
    uint32_t c[8][256];
    memset(c, 0, sizeof c);
    hstate H;
    hash_begin(&H);
    uint64_t a = H.a, b = H.b, cc = H.c, d = H.d;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        uint64_t w0 = rd64(src + i), w1 = rd64(src + i + 8);
        uint64_t w2 = rd64(src + i + 16), w3 = rd64(src + i + 24);
        a = hround(a, w0); b = hround(b, w1); cc = hround(cc, w2); d = hround(d, w3);
        HIST8(0, w0); HIST8(2, w1); HIST8(4, w2); HIST8(6, w3);
    }
    H.a = a; H.b = b; H.c = cc; H.d = d;
    uint64_t hv = hash_finish(&H, src + i, n - i, n);
    for (; i < n; i++) c[0][src[i]]++;
    for (unsigned s = 0; s < 256; s++)
        h[s] = c[0][s] + c[1][s] + c[2][s] + c[3][s] + c[4][s] + c[5][s] + c[6][s] + c[7][s];
    return hv;
}

/* Symbols < 32 (the usual case): count pairs of adjacent bytes in a 32x32
 * table, half the memory updates.  Returns 0 (and h undefined) if a byte >= 32
 * was seen; *hv gets the hash either way. */
#define PAIRS4(w)                                                            \
    do {                                                                     \
        uint64_t u_ = ((w) & 0x001F001F001F001Full) | (((w) >> 3) & 0x03E003E003E003E0ull); \
        orr |= (w);                                                          \
        c[0][u_ & 1023]++; c[1][(u_ >> 16) & 1023]++;                       \
        c[2][(u_ >> 32) & 1023]++; c[3][u_ >> 48]++;                         \
    } while (0)

FSE_INLINE int histogram_hash_pairs(uint32_t h[256], const uint8_t *src, size_t n, uint64_t *hv)
{
    uint32_t c[4][1024];
    memset(c, 0, sizeof c);
    hstate H;
    hash_begin(&H);
    uint64_t a = H.a, b = H.b, cc = H.c, d = H.d, orr = 0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        uint64_t w0 = rd64(src + i), w1 = rd64(src + i + 8);
        uint64_t w2 = rd64(src + i + 16), w3 = rd64(src + i + 24);
        a = hround(a, w0); b = hround(b, w1); cc = hround(cc, w2); d = hround(d, w3);
        PAIRS4(w0); PAIRS4(w1); PAIRS4(w2); PAIRS4(w3);
    }
    H.a = a; H.b = b; H.c = cc; H.d = d;
    *hv = hash_finish(&H, src + i, n - i, n);
    if (orr & 0xE0E0E0E0E0E0E0E0ull) return 0;
    memset(h, 0, 256 * sizeof(uint32_t));
    for (; i < n; i++) h[src[i]]++;
    for (unsigned x = 0; x < 32; x++) {
        uint32_t t = 0;
        for (unsigned y = 0; y < 32; y++) {
            unsigned ix = x | (y << 5), iy = y | (x << 5);   /* x as even / as odd byte */
            t += c[0][ix] + c[1][ix] + c[2][ix] + c[3][ix] + c[0][iy] + c[1][iy] + c[2][iy] + c[3][iy];
        }
        h[x] += t;
    }
    return 1;
}

#define PAIRS_MIN_N 8192

static uint64_t histogram_hash_generic(uint32_t h[256], const uint8_t *src, size_t n)
{
    uint64_t hv;
    if (n >= PAIRS_MIN_N && histogram_hash_pairs(h, src, n, &hv)) return hv;
    return histogram_hash_bytes(h, src, n);
}

#if FSE_HAVE_BMI2
__attribute__((target("bmi,bmi2")))
static uint64_t histogram_hash_bmi2(uint32_t h[256], const uint8_t *src, size_t n)
{
    uint64_t hv;
    if (n >= PAIRS_MIN_N && histogram_hash_pairs(h, src, n, &hv)) return hv;
    return histogram_hash_bytes(h, src, n);
}
#endif

#if FSE_HAVE_BMI2
/* AVX2, for channels whose symbols span at most 32 values (the latents): one pass for min/max + hash, then byte counters per symbol
 * (compare + subtract, 32 bytes at a time).  Returns 0 if the span is wider. */
#define AVX2_CHUNK 255   /* vectors per chunk: byte counters cannot overflow */

__attribute__((target("avx2,bmi,bmi2")))
static void count8_avx2(uint32_t *h, const uint8_t *p, size_t nv, unsigned b0)
{
    const __m256i c0 = _mm256_set1_epi8((char)(b0 + 0)), c1 = _mm256_set1_epi8((char)(b0 + 1));
    const __m256i c2 = _mm256_set1_epi8((char)(b0 + 2)), c3 = _mm256_set1_epi8((char)(b0 + 3));
    const __m256i c4 = _mm256_set1_epi8((char)(b0 + 4)), c5 = _mm256_set1_epi8((char)(b0 + 5));
    const __m256i c6 = _mm256_set1_epi8((char)(b0 + 6)), c7 = _mm256_set1_epi8((char)(b0 + 7));
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (size_t v = 0; v < nv; v++) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(p + 32 * v));
        a0 = _mm256_sub_epi8(a0, _mm256_cmpeq_epi8(x, c0));
        a1 = _mm256_sub_epi8(a1, _mm256_cmpeq_epi8(x, c1));
        a2 = _mm256_sub_epi8(a2, _mm256_cmpeq_epi8(x, c2));
        a3 = _mm256_sub_epi8(a3, _mm256_cmpeq_epi8(x, c3));
        a4 = _mm256_sub_epi8(a4, _mm256_cmpeq_epi8(x, c4));
        a5 = _mm256_sub_epi8(a5, _mm256_cmpeq_epi8(x, c5));
        a6 = _mm256_sub_epi8(a6, _mm256_cmpeq_epi8(x, c6));
        a7 = _mm256_sub_epi8(a7, _mm256_cmpeq_epi8(x, c7));
    }
    const __m256i z = _mm256_setzero_si256();
    __m256i acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
    for (unsigned j = 0; j < 8; j++) {
        __m256i s4 = _mm256_sad_epu8(acc[j], z);   /* 4 x u64 partial sums */
        uint64_t t[4];
        _mm256_storeu_si256((__m256i *)t, s4);
        h[b0 + j] += (uint32_t)(t[0] + t[1] + t[2] + t[3]);
    }
}

__attribute__((target("avx2,bmi,bmi2")))
static int histogram_hash_avx2(uint32_t h[256], const uint8_t *src, size_t n, uint64_t *hv)
{
    hstate H;
    hash_begin(&H);
    uint64_t a = H.a, b = H.b, cc = H.c, d = H.d;
    __m256i mn = _mm256_set1_epi8((char)0xFF), mx = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(src + i));
        mn = _mm256_min_epu8(mn, x);
        mx = _mm256_max_epu8(mx, x);
        a = hround(a, rd64(src + i)); b = hround(b, rd64(src + i + 8));
        cc = hround(cc, rd64(src + i + 16)); d = hround(d, rd64(src + i + 24));
    }
    H.a = a; H.b = b; H.c = cc; H.d = d;
    *hv = hash_finish(&H, src + i, n - i, n);
    uint8_t tmn[32], tmx[32];
    _mm256_storeu_si256((__m256i *)tmn, mn);
    _mm256_storeu_si256((__m256i *)tmx, mx);
    unsigned lo = 255, hi = 0;
    for (unsigned j = 0; j < 32; j++) {
        if (tmn[j] < lo) lo = tmn[j];
        if (tmx[j] > hi) hi = tmx[j];
    }
    for (size_t t = i; t < n; t++) {
        if (src[t] < lo) lo = src[t];
        if (src[t] > hi) hi = src[t];
    }
    if (hi - lo > 31) return 0;
    memset(h, 0, 256 * sizeof(uint32_t));
    const unsigned b0 = lo > 224 ? 224 : lo;
    const size_t nvec = i / 32;
    for (size_t v = 0; v < nvec; v += AVX2_CHUNK) {   /* a chunk (8 KB) stays in L1 across passes */
        size_t nv = nvec - v < AVX2_CHUNK ? nvec - v : AVX2_CHUNK;
        for (unsigned g = b0; g <= hi; g += 8) count8_avx2(h, src + 32 * v, nv, g);
    }
    for (; i < n; i++) h[src[i]]++;
    return 1;
}
#endif

/* histogram of the symbols and the content hash, in one pass */
uint64_t histogram_hash(uint32_t h[256], const uint8_t *src, size_t n)
{
#if FSE_HAVE_BMI2
    if (have_avx2 && n >= 1024) {
        uint64_t hv;
        if (histogram_hash_avx2(h, src, n, &hv)) return hv;
    }
    if (have_bmi2) return histogram_hash_bmi2(h, src, n);
#endif
    return histogram_hash_generic(h, src, n);
}
