/*
 * fse.c -- table-based ANS coder (Finite State Entropy design) for PIL_l3ic.
 *
 * Written from scratch for this project (no third-party coder vendored).
 * Stream format, design notes and measurements: docs/entropy.md.
 *
 * Layout of a stream: one bit stream, LSB-first inside each byte:
 *
 *   2 bits  mode: 0 tANS (symbols <= 31), 1 tANS (any byte), 2 run, 3 raw
 *   n       '0' + 15 bits if n < 2^15, else '1' + 5-bit length b + low b-1 bits
 *   run:    8-bit symbol, zero padding to the byte; nothing else.
 *   raw:    zero padding to the byte, then the n bytes; nothing else.
 *   tANS:   table description (see hdr_write), then the tANS payload written
 *           forwards by the encoder (symbols n-1 .. 0), then the final
 *           states (state S-1 .. 1 in R bits, state 0 in R+1 bits whose top
 *           bit, always 1, is the end marker), then zero padding to a byte.
 *
 * The S states start at 2^R + (R bits of a 64-bit hash of the symbols), so no
 * checksum bytes are stored: the decoder reads the table description
 * forwards and the payload backwards from the end marker, must consume the
 * payload exactly (ending on its first bit), and every state must end at the
 * value the hash of the decoded symbols gives.
 */
#include "fse.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if !defined(_WIN32)
#include <pthread.h>
#include <unistd.h>
#endif

#if defined(__GNUC__)
#define FSE_INLINE static inline __attribute__((always_inline))
#define FSE_LIKELY(x) __builtin_expect(!!(x), 1)
#define FSE_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define FSE_INLINE static inline
#define FSE_LIKELY(x) (x)
#define FSE_UNLIKELY(x) (x)
#endif

#define FSE_MAX_L (1u << FSE_MAX_TABLELOG)
#define RICE_ESC 6u          /* unary prefix length that switches to a plain R-bit count */
#define TRIAL_MAX_N 1024u    /* up to this n the encoder tries several table logs */
#define TRIAL_COUNT 3

/* ------------------------------------------------------------------------ */
/* small helpers                                                              */
/* ------------------------------------------------------------------------ */
FSE_INLINE uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; } /* LE host */
FSE_INLINE void wr64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
FSE_INLINE unsigned highbit32(uint32_t v) { return 31u - (unsigned)__builtin_clz(v); } /* v > 0 */
FSE_INLINE unsigned bitlen32(uint32_t v) { return v ? highbit32(v) + 1u : 0u; }

#if !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
#error "fse.c assumes a little-endian host"
#endif

static float lg2[FSE_MAX_L + 2];   /* lg2[i] = log2(i), lg2[0] unused */
static int lg2_ready = 0;

/* x86-64 with GCC/Clang: the hot loops are also compiled for BMI2 and picked at run time */
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(FSE_NO_BMI2)
#define FSE_HAVE_BMI2 1
static int have_bmi2 = 0;
static int have_avx2 = 0;
#include <immintrin.h>
#else
#define FSE_HAVE_BMI2 0
#endif

void fse_init(void)
{
    if (lg2_ready) return;
#if FSE_HAVE_BMI2
    __builtin_cpu_init();
    have_bmi2 = __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("bmi");
    have_avx2 = have_bmi2 && __builtin_cpu_supports("avx2");
#endif
    lg2[0] = 0.0f;
    for (unsigned i = 1; i < FSE_MAX_L + 2; i++) lg2[i] = (float)log2((double)i);
    lg2_ready = 1;
}

unsigned fse_states_for_n(uint64_t n)
{
    if (n < 16384) return 1;
    if (n < 32000) return 2;
    return 4;
}

const char *fse_error_string(int code)
{
    switch (code) {
    case FSE_ERR_EMPTY: return "empty stream";
    case FSE_ERR_VARINT: return "symbol count field truncated, overlong or not canonical";
    case FSE_ERR_N_TOO_LARGE: return "symbol count in stream exceeds the maximum channel length";
    case FSE_ERR_N_MISMATCH: return "stream holds a different number of symbols than expected";
    case FSE_ERR_MODE: return "invalid mode byte";
    case FSE_ERR_SIZE: return "stream size does not match its mode (truncated or trailing bytes)";
    case FSE_ERR_HDR_TRUNC: return "table description truncated";
    case FSE_ERR_TABLELOG: return "table log out of bounds";
    case FSE_ERR_SYMBOLS: return "invalid symbol range in table description";
    case FSE_ERR_COUNTS: return "invalid normalised counts (must sum to the table size)";
    case FSE_ERR_NO_SENTINEL: return "missing end marker (last byte is zero: trailing bytes or truncation)";
    case FSE_ERR_TRUNCATED: return "bit stream too short for the symbol count (truncated or corrupt)";
    case FSE_ERR_TRAILING: return "bit stream has bits left over after the last symbol (corrupt or extended)";
    case FSE_ERR_FINAL_STATE: return "final decoder state does not match the decoded symbols (corrupt stream)";
    case FSE_ERR_DST_SMALL: return "output buffer too small";
    case FSE_ERR_TOO_FEW: return "tANS stream must code at least 2 symbols";
    case FSE_ERR_N_RANGE: return "channel too long (more than 2^31-1 symbols)";
    default: return "unknown error";
    }
}

size_t fse_compress_bound(size_t n)
{
    return FSE_MAX_HEADER + n + 16;
}

/* ------------------------------------------------------------------------ */
/* forward bit writer (LSB-first).  Invariant: nacc <= 7 after a flush.        */
/* ------------------------------------------------------------------------ */
typedef struct {
    uint64_t acc;
    unsigned nacc;
    uint8_t *p;
    uint8_t *lim;     /* p must stay <= lim so that an 8-byte store fits */
    int overflow;
} bitw;

FSE_INLINE void bw_add(bitw *w, uint64_t v, unsigned nb) { w->acc |= v << w->nacc; w->nacc += nb; }
FSE_INLINE void bw_flush(bitw *w)
{
    if (FSE_UNLIKELY(w->p > w->lim)) { w->overflow = 1; return; }
    wr64(w->p, w->acc);
    unsigned nbytes = w->nacc >> 3;
    w->p += nbytes;
    w->acc >>= nbytes * 8;   /* nbytes <= 7 */
    w->nacc &= 7;
}
/* put up to 32 bits and flush */
FSE_INLINE void bw_put(bitw *w, uint32_t v, unsigned nb) { bw_add(w, v, nb); bw_flush(w); }

/* symbol count: '0' + 15 bits for n < 2^15, else '1' + 5-bit bit length b + the low b-1 bits */
#define NCODE_SHORT_LIMIT 32768u
static unsigned ncode_bits(uint64_t n)
{
    return n < NCODE_SHORT_LIMIT ? 16 : 6 + bitlen32((uint32_t)n) - 1;
}

static void ncode_put(bitw *w, uint64_t n)
{
    if (n < NCODE_SHORT_LIMIT) { bw_put(w, (uint32_t)n << 1, 16); return; }
    unsigned b = bitlen32((uint32_t)n);
    bw_put(w, 1u | (b << 1), 6);
    bw_put(w, (uint32_t)n & ((1u << (b - 1)) - 1), b - 1);
}

/* bits before the table description / payload: mode + n code */
static unsigned prefix_bits(uint64_t n) { return 2 + ncode_bits(n); }

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

static uint64_t hash_symbols(const uint8_t *src, size_t n)
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

/* ------------------------------------------------------------------------ */
/* normalisation: integer q[s] >= 1 for every present symbol, sum = 2^R,     */
/* maximising sum c[s] log q[s] (minimum ideal code length).  The objective is */
/* separable and concave, so a start from rounding followed by greedy unit    */
/* moves until no move gains is optimal.                                      */
/* ------------------------------------------------------------------------ */
static void normalize(uint32_t *q, const uint32_t *cnt, unsigned lo, unsigned hi,
                      uint64_t n, unsigned R)
{
    const uint32_t L = 1u << R;
    int64_t sum = 0;
    for (unsigned s = lo; s <= hi; s++) {
        if (!cnt[s]) { q[s] = 0; continue; }
        uint64_t v = ((uint64_t)cnt[s] * L + n / 2) / n;
        if (v < 1) v = 1;
        if (v > L - 1) v = L - 1;
        q[s] = (uint32_t)v;
        sum += (int64_t)v;
    }
    /* fix the sum */
    while (sum < (int64_t)L) {
        unsigned best = lo; double bg = -1.0;
        for (unsigned s = lo; s <= hi; s++) {
            if (!cnt[s]) continue;
            double g = (double)cnt[s] * (double)(lg2[q[s] + 1] - lg2[q[s]]);
            if (g > bg) { bg = g; best = s; }
        }
        q[best]++; sum++;
    }
    while (sum > (int64_t)L) {
        unsigned best = lo; double bl = 1e300;
        for (unsigned s = lo; s <= hi; s++) {
            if (q[s] <= 1) continue;
            double l = (double)cnt[s] * (double)(lg2[q[s]] - lg2[q[s] - 1]);
            if (l < bl) { bl = l; best = s; }
        }
        q[best]--; sum--;
    }
    /* exchange until optimal */
    for (unsigned iter = 0; iter < 4 * FSE_MAX_L; iter++) {
        unsigned sa = lo, sr = lo; double ga = -1.0, lr = 1e300;
        for (unsigned s = lo; s <= hi; s++) {
            if (!cnt[s]) continue;
            double g = (double)cnt[s] * (double)(lg2[q[s] + 1] - lg2[q[s]]);
            if (g > ga) { ga = g; sa = s; }
            if (q[s] > 1) {
                double l = (double)cnt[s] * (double)(lg2[q[s]] - lg2[q[s] - 1]);
                if (l < lr) { lr = l; sr = s; }
            }
        }
        if (sa == sr || !(ga > lr * (1.0 + 1e-9) + 1e-9)) break;
        q[sa]++; q[sr]--;
    }
}

/* ------------------------------------------------------------------------ */
/* table description                                                          */
/*   3 bits R-5 | lo (5 or 8 bits) | gamma(hi-lo) | peak-lo in bitlen(hi-lo)  */
/*   bits | 2 bits d | counts of every symbol in [lo,hi] but the peak, from   */
/*   peak-1 down to lo, then peak+1 up to hi, each as an adaptive Rice code:  */
/*   v = q - (1 if the symbol is lo or hi), k = max(0, bitlen(prev)-1-d)     */
/*   (prev: previous count in this direction, 2^(R-1) at the start), unary    */
/*   u = v>>k (u ones and a zero) then k bits; u >= RICE_ESC: RICE_ESC ones   */
/*   then v in R bits.  The peak count is 2^R minus the others.               */
/* ------------------------------------------------------------------------ */
typedef struct {
    unsigned R, lo, hi, peak, d, small;
    uint32_t q[256];
} tdesc;

FSE_INLINE unsigned rice_k(uint32_t prev, unsigned d)
{
    unsigned b = bitlen32(prev);
    return b > 1 + d ? b - 1 - d : 0;
}

/* cost in bits of the count list for a given d */
static unsigned counts_cost(const tdesc *t, unsigned d)
{
    unsigned bits = 0;
    const uint32_t L = 1u << t->R;
    for (int dir = -1; dir <= 1; dir += 2) {
        uint32_t prev = L >> 1;
        for (int s = (int)t->peak + dir; s >= (int)t->lo && s <= (int)t->hi; s += dir) {
            uint32_t v = t->q[s] - ((unsigned)s == t->lo || (unsigned)s == t->hi);
            unsigned k = rice_k(prev, d);
            uint32_t u = v >> k;
            bits += (u < RICE_ESC) ? u + 1 + k : RICE_ESC + t->R;
            prev = t->q[s];
        }
    }
    return bits;
}

#define D_FIXED 2u   /* d when only one count is coded (two symbols): not stored */

/* choose d, return the table description cost (mode and n excluded) */
static unsigned hdr_cost(tdesc *t)
{
    unsigned m = t->hi - t->lo;
    unsigned base = 3 + (t->small ? 5 : 8) + (2 * bitlen32(m) - 1) + bitlen32(m);
    if (m == 1) { t->d = D_FIXED; return base + counts_cost(t, D_FIXED); }
    unsigned best = ~0u, bd = 0;
    for (unsigned d = 0; d < 4; d++) {
        unsigned c = counts_cost(t, d);
        if (c < best) { best = c; bd = d; }
    }
    t->d = bd;
    return base + 2 + best;
}

static void hdr_write(bitw *w, const tdesc *t)
{
    const uint32_t L = 1u << t->R;
    unsigned m = t->hi - t->lo, bm = bitlen32(m);
    bw_put(w, t->R - FSE_MIN_TABLELOG, 3);
    bw_put(w, t->lo, t->small ? 5 : 8);
    /* gamma(m): bm-1 zeros, a one, then the bm-1 low bits of m */
    bw_put(w, 1u << (bm - 1), bm);
    if (bm > 1) bw_put(w, m & ((1u << (bm - 1)) - 1), bm - 1);
    bw_put(w, t->peak - t->lo, bm);
    if (m > 1) bw_put(w, t->d, 2);
    for (int dir = -1; dir <= 1; dir += 2) {
        uint32_t prev = L >> 1;
        for (int s = (int)t->peak + dir; s >= (int)t->lo && s <= (int)t->hi; s += dir) {
            uint32_t v = t->q[s] - ((unsigned)s == t->lo || (unsigned)s == t->hi);
            unsigned k = rice_k(prev, t->d);
            uint32_t u = v >> k;
            if (u < RICE_ESC) {
                bw_put(w, (1u << u) - 1, u + 1);
                if (k) bw_put(w, v & ((1u << k) - 1), k);
            } else {
                bw_put(w, (1u << RICE_ESC) - 1, RICE_ESC);
                bw_put(w, v, t->R);
            }
            prev = t->q[s];
        }
    }
}

/* forward bit reader with bounds checks (table description only) */
typedef struct {
    const uint8_t *p;
    size_t nbits;   /* bits available */
    size_t pos;
} bitr;

FSE_INLINE int br_get(bitr *r, unsigned nb, uint32_t *out)   /* nb <= 32 */
{
    if (nb > r->nbits - r->pos || r->pos > r->nbits) return FSE_ERR_HDR_TRUNC;
    uint64_t v = 0;
    size_t byte = r->pos >> 3;
    unsigned sh = (unsigned)(r->pos & 7);
    unsigned need = (sh + nb + 7) >> 3;   /* <= 5 bytes */
    for (unsigned j = 0; j < need; j++) v |= (uint64_t)r->p[byte + j] << (8 * j);
    *out = (uint32_t)((v >> sh) & ((nb == 32) ? 0xFFFFFFFFull : ((1ull << nb) - 1)));
    r->pos += nb;
    return 0;
}

static int hdr_read(bitr *r, tdesc *t, unsigned mode)   /* after mode and n */
{
    uint32_t v;
    int e;
    t->small = (mode == FSE_MODE_TANS5);
    if ((e = br_get(r, 3, &v))) return e;
    t->R = v + FSE_MIN_TABLELOG;
    if (t->R > FSE_MAX_TABLELOG) return FSE_ERR_TABLELOG;
    const uint32_t L = 1u << t->R;
    const unsigned maxsym = t->small ? 31 : 255;
    if ((e = br_get(r, t->small ? 5 : 8, &v))) return e;
    t->lo = v;
    unsigned z = 0;   /* gamma(m) */
    for (;;) {
        if ((e = br_get(r, 1, &v))) return e;
        if (v) break;
        if (++z > 7) return FSE_ERR_SYMBOLS;
    }
    uint32_t m = 1;
    if (z) { if ((e = br_get(r, z, &v))) return e; m = (1u << z) | v; }
    if (t->lo + m > maxsym) return FSE_ERR_SYMBOLS;
    t->hi = t->lo + m;
    if (!t->small && t->hi <= 31) return FSE_ERR_SYMBOLS;   /* canonical: small mode */
    if ((e = br_get(r, bitlen32(m), &v))) return e;
    if (v > m) return FSE_ERR_SYMBOLS;
    t->peak = t->lo + v;
    if (m > 1) {
        if ((e = br_get(r, 2, &v))) return e;
        t->d = v;
    } else {
        t->d = D_FIXED;
    }
    uint32_t sum = 0;
    for (int dir = -1; dir <= 1; dir += 2) {
        uint32_t prev = L >> 1;
        for (int s = (int)t->peak + dir; s >= (int)t->lo && s <= (int)t->hi; s += dir) {
            unsigned k = rice_k(prev, t->d);
            unsigned u = 0;
            for (;;) {
                if ((e = br_get(r, 1, &v))) return e;
                if (!v) break;
                if (++u == RICE_ESC) break;
            }
            uint32_t val;
            if (u < RICE_ESC) {
                uint32_t low = 0;
                if (k && (e = br_get(r, k, &low))) return e;
                val = (u << k) | low;
            } else {
                if ((e = br_get(r, t->R, &val))) return e;
            }
            uint32_t q = val + ((unsigned)s == t->lo || (unsigned)s == t->hi);
            if (q >= L || sum + q >= L) return FSE_ERR_COUNTS;   /* peak must keep >= 1 */
            t->q[s] = q;
            sum += q;
            prev = q;
        }
    }
    t->q[t->peak] = L - sum;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* symbol spread + state tables                                               */
/* Occurrence k (0-based) of symbol s ideally sits at (k + 1/2) * L / q[s];   */
/* the table lists all occurrences ordered by the integer part of that       */
/* position (ties: lower symbol first).  Occurrence k of s is then also the  */
/* k-th slot of s in table order, i.e. state value q[s] + k.                 */
/* ------------------------------------------------------------------------ */
typedef struct { uint16_t base; uint8_t sym; uint8_t nb; } dentry;
/* encoder symbol transform: nb = (x + deltaNb) >> 16, next x = stp[x >> nb] */
typedef struct { const uint16_t *stp; uint32_t deltaNb; uint32_t pad; } symtt;

typedef struct {
    /* state table at st[FSE_MAX_L ..]: stp = slots - q stays inside the array */
    uint16_t st[2 * FSE_MAX_L];
    symtt tt[256];
} etable;

/* start[b] = number of occurrences in buckets < b */
static void bucket_starts(uint16_t *start, const tdesc *t)
{
    const uint32_t L = 1u << t->R;
    uint8_t cnt[FSE_MAX_L];   /* at most one occurrence of a symbol per bucket: <= 255 */
    memset(cnt, 0, L);
    for (unsigned s = t->lo; s <= t->hi; s++) {
        uint32_t q = t->q[s];
        if (!q) continue;
        uint64_t step = ((uint64_t)L << 32) / q, pos = step >> 1;
        uint32_t k = 0;
        for (; k + 4 <= q; k += 4) {
            cnt[pos >> 32]++; pos += step;
            cnt[pos >> 32]++; pos += step;
            cnt[pos >> 32]++; pos += step;
            cnt[pos >> 32]++; pos += step;
        }
        for (; k < q; k++, pos += step) cnt[pos >> 32]++;
    }
    uint32_t acc = 0;
    for (uint32_t b = 0; b < L; b += 4) {   /* L >= 32 */
        uint32_t c0 = cnt[b], c1 = cnt[b + 1], c2 = cnt[b + 2], c3 = cnt[b + 3];
        start[b] = (uint16_t)acc;
        start[b + 1] = (uint16_t)(acc + c0);
        start[b + 2] = (uint16_t)(acc + c0 + c1);
        start[b + 3] = (uint16_t)(acc + c0 + c1 + c2);
        acc += c0 + c1 + c2 + c3;
    }
}

static void build_dtable(dentry *T, const tdesc *t)
{
    uint16_t start[FSE_MAX_L];
    const uint32_t L = 1u << t->R;
    const unsigned R = t->R;
    bucket_starts(start, t);
    for (unsigned s = t->lo; s <= t->hi; s++) {
        const uint32_t q = t->q[s];
        if (!q) continue;
        uint64_t step = ((uint64_t)L << 32) / q, pos = step >> 1;
        /* occurrence k has state value v = q + k; nb and base change only at powers of 2 */
        uint32_t v = q;
        const uint32_t end = 2 * q;
        while (v < end) {
            const unsigned hb = highbit32(v);
            const uint32_t seg_end = (2u << hb) < end ? (2u << hb) : end;
            const unsigned nb = R - hb;
            dentry e;
            e.sym = (uint8_t)s;
            e.nb = (uint8_t)nb;
            uint32_t base = (v << nb) - L;
            const uint32_t inc = 1u << nb;
            for (; v < seg_end; v++, pos += step, base += inc) {
                e.base = (uint16_t)base;
                T[start[pos >> 32]++] = e;
            }
        }
    }
}

static void build_etable(etable *E, const tdesc *t)
{
    uint16_t start[FSE_MAX_L];
    const uint32_t L = 1u << t->R;
    const unsigned R = t->R;
    bucket_starts(start, t);
    uint32_t cumul = 0;
    for (unsigned s = t->lo; s <= t->hi; s++) {
        const uint32_t q = t->q[s];
        if (!q) continue;
        uint64_t step = ((uint64_t)L << 32) / q, pos = step >> 1;
        uint16_t *o = E->st + FSE_MAX_L + cumul;
        uint32_t k = 0;
        for (; k + 2 <= q; k += 2) {
            o[k] = (uint16_t)(L + start[pos >> 32]++); pos += step;
            o[k + 1] = (uint16_t)(L + start[pos >> 32]++); pos += step;
        }
        for (; k < q; k++, pos += step) o[k] = (uint16_t)(L + start[pos >> 32]++);
        const unsigned maxBits = (q == 1) ? R : R - highbit32(q - 1);
        const uint32_t minStatePlus = q << maxBits;
        E->tt[s].deltaNb = (maxBits << 16) - minStatePlus;
        /* x >> nb lies in [q, 2q): stp points q entries before this symbol's slots */
        E->tt[s].stp = E->st + FSE_MAX_L + cumul - q;
        cumul += q;
    }
}

/* ------------------------------------------------------------------------ */
/* encoder core: symbols n-1..0, symbol i uses state i % S                    */
/* ------------------------------------------------------------------------ */
#define ENC1(x, sym)                                                         \
    do {                                                                     \
        const symtt *t_ = &tt[sym];                                          \
        uint64_t nb_ = (uint32_t)(x + t_->deltaNb) >> 16;                    \
        acc |= (x & ((1ull << nb_) - 1)) << nacc;                            \
        nacc += (unsigned)nb_;                                               \
        x = t_->stp[x >> nb_];                                               \
    } while (0)

#define FLUSH()                                                              \
    do {                                                                     \
        wr64(p, acc);                                                        \
        unsigned nbytes_ = nacc >> 3;                                        \
        p += nbytes_;                                                        \
        acc >>= nbytes_ * 8;                                                 \
        nacc &= 7;                                                           \
    } while (0)

FSE_INLINE int encode_core(bitw *w, const uint8_t *src, size_t n, const etable *E,
                           unsigned R, unsigned S, uint64_t hv)
{
    const symtt *tt = E->tt;
    const uint64_t L = 1u << R;
    uint64_t x0 = L + (hv & (L - 1));
    uint64_t x1 = L + ((hv >> 16) & (L - 1));
    uint64_t x2 = L + ((hv >> 32) & (L - 1));
    uint64_t x3 = L + ((hv >> 48) & (L - 1));
    uint64_t acc = w->acc;
    unsigned nacc = w->nacc;
    uint8_t *p = w->p;
    uint8_t *const lim = w->lim;
    size_t i = n;

    if (p > lim) return FSE_ERR_DST_SMALL;
    while (i & 3) {
        i--;
        switch (i & (S - 1)) {
        case 0: ENC1(x0, src[i]); break;
        case 1: ENC1(x1, src[i]); break;
        case 2: ENC1(x2, src[i]); break;
        default: ENC1(x3, src[i]); break;
        }
        FLUSH();
        if (FSE_UNLIKELY(p > lim)) return FSE_ERR_DST_SMALL;
    }
    while (i) {
        i -= 4;
        if (S == 1) {
            ENC1(x0, src[i + 3]); ENC1(x0, src[i + 2]); ENC1(x0, src[i + 1]); ENC1(x0, src[i]);
        } else if (S == 2) {
            ENC1(x1, src[i + 3]); ENC1(x0, src[i + 2]); ENC1(x1, src[i + 1]); ENC1(x0, src[i]);
        } else {
            ENC1(x3, src[i + 3]); ENC1(x2, src[i + 2]); ENC1(x1, src[i + 1]); ENC1(x0, src[i]);
        }
        FLUSH();
        if (FSE_UNLIKELY(p > lim)) return FSE_ERR_DST_SMALL;
    }
    /* final states: S-1 .. 1 in R bits, state 0 in R+1 bits (top bit = end marker) */
    if (S == 4) { acc |= (x3 - L) << nacc; nacc += R; acc |= (x2 - L) << nacc; nacc += R; FLUSH(); }
    if (S >= 2) { acc |= (x1 - L) << nacc; nacc += R; }
    acc |= x0 << nacc; nacc += R + 1;
    FLUSH();
    if (FSE_UNLIKELY(p > lim)) return FSE_ERR_DST_SMALL;
    wr64(p, acc);
    p += (nacc + 7) >> 3;
    w->p = p; w->acc = 0; w->nacc = 0;
    return 0;
}

static int encode_payload_generic(bitw *w, const uint8_t *src, size_t n, const etable *E,
                                  unsigned R, unsigned S, uint64_t hv)
{
    switch (S) {
    case 1: return encode_core(w, src, n, E, R, 1, hv);
    case 2: return encode_core(w, src, n, E, R, 2, hv);
    default: return encode_core(w, src, n, E, R, 4, hv);
    }
}

#if FSE_HAVE_BMI2
/* same code compiled for BMI2 (shlx/shrx/bzhi: variable shifts without CL) */
__attribute__((target("bmi,bmi2")))
static int encode_payload_bmi2(bitw *w, const uint8_t *src, size_t n, const etable *E,
                               unsigned R, unsigned S, uint64_t hv)
{
    switch (S) {
    case 1: return encode_core(w, src, n, E, R, 1, hv);
    case 2: return encode_core(w, src, n, E, R, 2, hv);
    default: return encode_core(w, src, n, E, R, 4, hv);
    }
}
#endif

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
static uint64_t histogram_hash(uint32_t h[256], const uint8_t *src, size_t n)
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

static int encode_payload(bitw *w, const uint8_t *src, size_t n, const etable *E, unsigned R,
                          unsigned S, uint64_t hv)
{
#if FSE_HAVE_BMI2
    if (have_bmi2) return encode_payload_bmi2(w, src, n, E, R, S, hv);
#endif
    return encode_payload_generic(w, src, n, E, R, S, hv);
}

/* write the mode and n; returns the writer positioned after them */
static void begin_stream(bitw *w, uint8_t *dst, size_t cap, unsigned mode, uint64_t n)
{
    w->acc = 0; w->nacc = 0; w->p = dst; w->lim = dst + cap - 8; w->overflow = 0;
    bw_put(w, mode, 2);
    ncode_put(w, n);
}

/* flush the partial byte (zero padding); returns bytes written */
static size_t end_stream(bitw *w, uint8_t *dst)
{
    wr64(w->p, w->acc);
    return (size_t)(w->p - dst) + ((w->nacc + 7) >> 3);
}

static ptrdiff_t store_raw(uint8_t *dst, size_t cap, const uint8_t *src, size_t n)
{
    bitw w;
    begin_stream(&w, dst, cap, FSE_MODE_RAW, n);
    size_t h = end_stream(&w, dst);
    if (n) memcpy(dst + h, src, n);
    return (ptrdiff_t)(h + n);
}

/* complete tANS stream with table t; returns its size or an error (output too big) */
static ptrdiff_t encode_tans(uint8_t *dst, size_t cap, const uint8_t *src, size_t n,
                             const tdesc *t, etable *E, uint64_t hash)
{
    bitw w;
    begin_stream(&w, dst, cap, t->small ? FSE_MODE_TANS5 : FSE_MODE_TANS8, n);
    hdr_write(&w, t);
    if (w.overflow) return FSE_ERR_DST_SMALL;
    build_etable(E, t);
    int e = encode_payload(&w, src, n, E, t->R, fse_states_for_n(n), hash);
    if (e) return e;
    return w.p - dst;
}

ptrdiff_t fse_compress(uint8_t *dst, size_t cap, const uint8_t *src, size_t n)
{
    if (!lg2_ready) fse_init();
    if (n > FSE_MAX_N) return FSE_ERR_N_RANGE;
    if (cap < fse_compress_bound(n)) return FSE_ERR_DST_SMALL;
    const size_t raw_total = ((prefix_bits(n) + 7) >> 3) + n;

    if (n == 0) return store_raw(dst, cap, src, 0);

    uint32_t h[256];
    uint64_t hash = histogram_hash(h, src, n);
    unsigned lo = 0, hi = 255, k = 0;
    while (!h[lo]) lo++;
    while (!h[hi]) hi--;
    for (unsigned s = lo; s <= hi; s++) k += h[s] != 0;

    if (k == 1) {
        bitw w;
        begin_stream(&w, dst, cap, FSE_MODE_RUN, n);
        bw_put(&w, lo, 8);
        return (ptrdiff_t)end_stream(&w, dst);
    }

    /* estimated size for every table log; the estimate is unimodal in practice,
     * so for long channels stop two steps after it starts rising */
    const unsigned S = fse_states_for_n(n);
    unsigned Rmin = bitlen32(k - 1);
    if (Rmin < FSE_MIN_TABLELOG) Rmin = FSE_MIN_TABLELOG;
    tdesc cand[FSE_MAX_TABLELOG + 1];
    double est[FSE_MAX_TABLELOG + 1];
    unsigned order[FSE_MAX_TABLELOG + 1], no = 0, rising = 0;
    const double fixed = (double)prefix_bits(n);
    for (unsigned R = FSE_MAX_TABLELOG; R >= Rmin; R--) {
        tdesc *t = &cand[R];
        t->R = R; t->lo = lo; t->hi = hi; t->small = hi <= 31;
        normalize(t->q, h, lo, hi, n, R);
        t->peak = lo;
        for (unsigned s = lo; s <= hi; s++) if (t->q[s] > t->q[t->peak]) t->peak = s;
        double bits = fixed + (double)hdr_cost(t) + (double)(S * R);
        for (unsigned s = lo; s <= hi; s++)
            if (h[s]) bits += (double)h[s] * (double)((float)R - lg2[t->q[s]]);
        est[R] = bits;
        order[no++] = R;
        if (R < FSE_MAX_TABLELOG && est[R] > est[R + 1]) {
            if (++rising >= 2 && n > TRIAL_MAX_N) break;
        } else {
            rising = 0;
        }
    }
    for (unsigned a = 1; a < no; a++)   /* insertion sort by estimate */
        for (unsigned b = a; b > 0 && est[order[b]] < est[order[b - 1]]; b--) {
            unsigned tmp = order[b]; order[b] = order[b - 1]; order[b - 1] = tmp;
        }

    if ((size_t)(est[order[0]] / 8.0) >= raw_total) return store_raw(dst, cap, src, n);

    etable E;
    /* never let tANS output grow past the raw size */
    size_t cap_t = raw_total + 8 < cap ? raw_total + 8 : cap;
    ptrdiff_t best = encode_tans(dst, cap_t, src, n, &cand[order[0]], &E, hash);
    if (n <= TRIAL_MAX_N && best > 0) {
        /* short channels: also try the next candidates and keep the smallest */
        uint8_t tmp[TRIAL_MAX_N + 64];
        for (unsigned c = 1; c < no && c < TRIAL_COUNT; c++) {
            size_t cap2 = (size_t)best + 8 < sizeof tmp ? (size_t)best + 8 : sizeof tmp;
            ptrdiff_t r = encode_tans(tmp, cap2, src, n, &cand[order[c]], &E, hash);
            if (r > 0 && r < best) { memcpy(dst, tmp, (size_t)r); best = r; }
        }
    }
    if (best < 0 || (size_t)best >= raw_total) return store_raw(dst, cap, src, n);
    return best;
}

/* ------------------------------------------------------------------------ */
/* decoder                                                                    */
/* ------------------------------------------------------------------------ */
typedef struct {
    uint64_t n;
    int mode;
    tdesc t;
    size_t hdr_bits;   /* bits used by mode, n and the table description */
    size_t data_off;   /* raw: offset of the stored bytes */
    unsigned run_sym;
} hinfo;

/* the bits from pos to the end of their byte must be zero */
static int zero_pad(const bitr *r)
{
    size_t pos = r->pos;
    if (pos & 7) {
        uint8_t b = r->p[pos >> 3];
        if (b >> (pos & 7)) return 0;
    }
    return 1;
}

static int parse_header(const uint8_t *src, size_t size, hinfo *hi)
{
    bitr br;
    uint32_t v;
    int e;
    if (size == 0) return FSE_ERR_EMPTY;
    br.p = src; br.nbits = 8 * (size_t)size; br.pos = 0;
    if ((e = br_get(&br, 2, &v))) return e;
    hi->mode = (int)v;
    if ((e = br_get(&br, 1, &v))) return FSE_ERR_VARINT;
    if (!v) {
        if ((e = br_get(&br, 15, &v))) return FSE_ERR_VARINT;
        hi->n = v;
    } else {
        uint32_t b, low;
        if ((e = br_get(&br, 5, &b))) return FSE_ERR_VARINT;
        if (b < 16) return FSE_ERR_VARINT;   /* canonical: n >= 2^15 */
        if ((e = br_get(&br, b - 1, &low))) return FSE_ERR_VARINT;
        hi->n = ((uint64_t)1 << (b - 1)) | low;
        if (hi->n > FSE_MAX_N) return FSE_ERR_N_TOO_LARGE;
    }
    if (hi->mode == FSE_MODE_RAW || hi->mode == FSE_MODE_RUN) {
        if (hi->mode == FSE_MODE_RUN) {
            if (hi->n == 0) return FSE_ERR_MODE;
            if ((e = br_get(&br, 8, &v))) return FSE_ERR_SIZE;
            hi->run_sym = v;
        } else if (hi->n == 1) {
            return FSE_ERR_MODE;   /* canonical: one symbol is always a run */
        }
        if (!zero_pad(&br)) return FSE_ERR_MODE;
        size_t h = (br.pos + 7) >> 3;
        hi->data_off = h;
        hi->hdr_bits = br.pos;
        size_t want = h + (hi->mode == FSE_MODE_RAW ? (size_t)hi->n : 0);
        if (size != want) return FSE_ERR_SIZE;
        return 0;
    }
    if (hi->n < 2) return FSE_ERR_TOO_FEW;
    e = hdr_read(&br, &hi->t, (unsigned)hi->mode);
    if (e) return e;
    hi->hdr_bits = br.pos;
    /* A decoded symbol either consumes a bit or moves its state to a strictly
     * lower index, so a state runs at most 2^R symbols without reading: a
     * stream of B bits holds at most S * 2^R * (B + 1) symbols.  Checked so
     * that a tiny forged stream cannot make the caller allocate ~n bytes. */
    {
        uint64_t B = 8 * (uint64_t)size;
        uint64_t S = fse_states_for_n(hi->n);
        if (hi->n > S * ((uint64_t)1 << hi->t.R) * (B + 1)) return FSE_ERR_TRUNCATED;
    }
    return 0;
}

int fse_stream_info(const uint8_t *src, size_t size, uint64_t *n, int *mode, int *tablelog, int *states)
{
    hinfo h;
    int e = parse_header(src, size, &h);
    if (e) return e;
    if (n) *n = h.n;
    if (mode) *mode = h.mode;
    int tans = h.mode == FSE_MODE_TANS5 || h.mode == FSE_MODE_TANS8;
    if (tablelog) *tablelog = tans ? (int)h.t.R : 0;
    if (states) *states = tans ? (int)fse_states_for_n(h.n) : 0;
    return 0;
}

#define DEC1(x, idx)                                                         \
    do {                                                                     \
        const dentry e_ = T[x];                                              \
        dst[idx] = e_.sym;                                                   \
        unsigned nb_ = e_.nb;                                                \
        uint32_t bits_ = (uint32_t)((c >> 1) >> (63 - nb_));                 \
        c <<= nb_;                                                           \
        cnt -= (int)nb_;                                                     \
        x = e_.base + bits_;                                                 \
    } while (0)

#define REFILL_FAST()                                                        \
    do {                                                                     \
        c |= rd64(b + bp - 8) >> cnt;                                        \
        bp -= (63 - cnt) >> 3;                                               \
        cnt |= 56;                                                           \
    } while (0)

/* b: bit stream (starts at the mode byte), bs bytes; H: table description bits */
FSE_INLINE int decode_core(uint8_t *dst, size_t n, const dentry *T, unsigned R,
                           const uint8_t *b, size_t bs, size_t H, unsigned S)
{
    const uint8_t last = b[bs - 1];
    if (!last) return FSE_ERR_NO_SENTINEL;
    const int64_t E = 8 * (int64_t)(bs - 1) + highbit32(last);
    if (E < (int64_t)H + (int64_t)(S * R)) return FSE_ERR_TRUNCATED;

    /* container: valid bits = stream bits [8bp, 8bp+cnt), left-aligned in c */
    int64_t bp = (int64_t)bs - 8;
    uint64_t c = 0;
    if (bs >= 8) c = rd64(b + bs - 8);
    else for (size_t j = 0; j < bs; j++) c |= (uint64_t)b[j] << (8 * (j + 8 - bs));
    {
        unsigned drop = (unsigned)(8 * (int64_t)bs - E);   /* 1..8: end marker + padding */
        c <<= drop;
    }
    int cnt = 64 - (int)(8 * (int64_t)bs - E);
    uint32_t x0 = 0, x1 = 0, x2 = 0, x3 = 0;
#define RDST(x) do { x = (uint32_t)((c >> 1) >> (63 - R)); c <<= R; cnt -= (int)R; } while (0)
    RDST(x0);
    if (S >= 2) RDST(x1);
    if (S == 4) { RDST(x2); RDST(x3); }
#undef RDST

    size_t i = 0;
    while (i + 4 <= n && bp >= 8) {
        REFILL_FAST();
        if (S == 1) {
            DEC1(x0, i); DEC1(x0, i + 1); DEC1(x0, i + 2); DEC1(x0, i + 3);
        } else if (S == 2) {
            DEC1(x0, i); DEC1(x1, i + 1); DEC1(x0, i + 2); DEC1(x1, i + 3);
        } else {
            DEC1(x0, i); DEC1(x1, i + 1); DEC1(x2, i + 2); DEC1(x3, i + 3);
        }
        i += 4;
    }
    for (; i < n; i++) {
        if (bp >= 8) {
            REFILL_FAST();
        } else if (bp > 0) {
            int k = (63 - cnt) >> 3;
            if (k > bp) k = (int)bp;
            for (int j = 0; j < k; j++) c |= (uint64_t)b[bp - 1 - j] << (56 - cnt - 8 * j);
            bp -= k;
            cnt += 8 * k;
        }
        /* no address-taking of the states: they must stay in registers */
        uint32_t x;
        switch (i & (S - 1)) {
        case 0: x = x0; break;
        case 1: x = x1; break;
        case 2: x = x2; break;
        default: x = x3; break;
        }
        if (8 * bp + cnt - (int64_t)T[x].nb < (int64_t)H) return FSE_ERR_TRUNCATED;
        DEC1(x, i);
        switch (i & (S - 1)) {
        case 0: x0 = x; break;
        case 1: x1 = x; break;
        case 2: x2 = x; break;
        default: x3 = x; break;
        }
    }
    int64_t top = 8 * bp + cnt;
    if (top > (int64_t)H) return FSE_ERR_TRAILING;
    if (top < (int64_t)H) return FSE_ERR_TRUNCATED;
    /* every state must be back at its initial value, which the encoder took
     * from the hash of the symbols */
    const uint64_t hv = hash_symbols(dst, n);
    const uint32_t M = (1u << R) - 1;
    uint32_t bad = x0 ^ (uint32_t)(hv & M);
    if (S >= 2) bad |= x1 ^ (uint32_t)((hv >> 16) & M);
    if (S == 4) bad |= (x2 ^ (uint32_t)((hv >> 32) & M)) | (x3 ^ (uint32_t)((hv >> 48) & M));
    if (bad) return FSE_ERR_FINAL_STATE;
    return 0;
}

static int decode_payload_generic(uint8_t *dst, size_t n, const dentry *T, unsigned R,
                                  const uint8_t *b, size_t bs, size_t H, unsigned S)
{
    switch (S) {
    case 1: return decode_core(dst, n, T, R, b, bs, H, 1);
    case 2: return decode_core(dst, n, T, R, b, bs, H, 2);
    default: return decode_core(dst, n, T, R, b, bs, H, 4);
    }
}

#if FSE_HAVE_BMI2
__attribute__((target("bmi,bmi2")))
static int decode_payload_bmi2(uint8_t *dst, size_t n, const dentry *T, unsigned R,
                               const uint8_t *b, size_t bs, size_t H, unsigned S)
{
    switch (S) {
    case 1: return decode_core(dst, n, T, R, b, bs, H, 1);
    case 2: return decode_core(dst, n, T, R, b, bs, H, 2);
    default: return decode_core(dst, n, T, R, b, bs, H, 4);
    }
}
#endif

static int decode_payload(uint8_t *dst, size_t n, const dentry *T, unsigned R,
                          const uint8_t *b, size_t bs, size_t H, unsigned S)
{
#if FSE_HAVE_BMI2
    if (have_bmi2) return decode_payload_bmi2(dst, n, T, R, b, bs, H, S);
#endif
    return decode_payload_generic(dst, n, T, R, b, bs, H, S);
}

int fse_decompress(uint8_t *dst, size_t n, const uint8_t *src, size_t size)
{
    hinfo h;
    int e = parse_header(src, size, &h);
    if (e) return e;
    if (h.n != (uint64_t)n) return FSE_ERR_N_MISMATCH;
    if (h.mode == FSE_MODE_RAW) { if (n) memcpy(dst, src + h.data_off, n); return 0; }
    if (h.mode == FSE_MODE_RUN) { memset(dst, (int)h.run_sym, n); return 0; }
    dentry T[FSE_MAX_L];
    build_dtable(T, &h.t);
    /* the payload is read backwards from the end; positions count from src[0] */
    return decode_payload(dst, n, T, h.t.R, src, size, h.hdr_bits, fse_states_for_n(n));
}

/* ------------------------------------------------------------------------ */
/* batches: channels spread over threads created for the call (blocking      */
/* waits, an atomic work counter; no pool, so nothing to break across fork; */
/* an idle late worker finds no work and exits on its own).                  */
/* ------------------------------------------------------------------------ */
typedef struct {
    int op;                        /* 0 compress, 1 decompress */
    size_t count;
    size_t n;
    /* compress */
    const uint8_t *src;            /* count x n */
    uint8_t *dst;                  /* count x cap */
    size_t cap;
    ptrdiff_t *sizes;
    /* decompress */
    const uint8_t *const *blobs;
    const size_t *lens;
    uint8_t *out;                  /* count x n */
    int *errs;
    size_t next;                   /* next channel to take (atomic) */
    size_t done;                   /* channels finished (atomic) */
    int refs;                      /* threads still holding the job (atomic) */
#if !defined(_WIN32)
    pthread_mutex_t mu;
    pthread_cond_t cv;
#endif
} batch_job;

static void run_items(batch_job *j)
{
    for (;;) {
        size_t i = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        if (i >= j->count) break;
        if (j->op == 0)
            j->sizes[i] = fse_compress(j->dst + i * j->cap, j->cap, j->src + i * j->n, j->n);
        else
            j->errs[i] = fse_decompress(j->out + i * j->n, j->n, j->blobs[i], j->lens[i]);
#if !defined(_WIN32)
        if (__atomic_add_fetch(&j->done, 1, __ATOMIC_ACQ_REL) == j->count) {
            pthread_mutex_lock(&j->mu);
            pthread_cond_broadcast(&j->cv);
            pthread_mutex_unlock(&j->mu);
        }
#endif
    }
}

#if !defined(_WIN32)
static void release_job(batch_job *j)
{
    if (__atomic_sub_fetch(&j->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        pthread_mutex_destroy(&j->mu);
        pthread_cond_destroy(&j->cv);
        free(j);
    }
}

/* Detached workers: the caller returns as soon as every channel is done and
 * never waits for a worker the OS has not scheduled yet (on a loaded machine
 * that wait cost more than the parallelism gained); the last thread out frees
 * the job. */
static void *batch_worker(void *arg)
{
    batch_job *j = (batch_job *)arg;
    run_items(j);
    release_job(j);
    return NULL;
}
#endif

#define BATCH_MIN_WORK 65536u   /* symbols per extra thread worth its creation */
#define BATCH_MAX_THREADS 256

int fse_cpu_count(void)
{
#if !defined(_WIN32) && defined(_SC_NPROCESSORS_ONLN)
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c > 0 ? (int)c : 1;
#else
    return 1;
#endif
}

static void run_batch(const batch_job *proto, int threads)
{
    if (!lg2_ready) fse_init();
    size_t want = (size_t)(threads > 0 ? threads : 1);
    size_t by_work = (proto->count * (proto->n + 64)) / BATCH_MIN_WORK;
    if (want > proto->count) want = proto->count;
    if (want > by_work) want = by_work ? by_work : 1;
    if (want > BATCH_MAX_THREADS) want = BATCH_MAX_THREADS;
#if !defined(_WIN32)
    batch_job *j = want > 1 ? (batch_job *)malloc(sizeof *j) : NULL;
    if (j) {
        *j = *proto;
        j->next = 0; j->done = 0; j->refs = 1;
        if (pthread_mutex_init(&j->mu, NULL) != 0) { free(j); j = NULL; }
        else if (pthread_cond_init(&j->cv, NULL) != 0) { pthread_mutex_destroy(&j->mu); free(j); j = NULL; }
    }
    if (j) {
        pthread_attr_t attr;
        int attr_ok = pthread_attr_init(&attr) == 0 &&
                      pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0;
        for (size_t t = 1; attr_ok && t < want; t++) {
            pthread_t tid;
            __atomic_add_fetch(&j->refs, 1, __ATOMIC_ACQ_REL);
            if (pthread_create(&tid, &attr, batch_worker, j) != 0) {   /* go on with fewer */
                __atomic_sub_fetch(&j->refs, 1, __ATOMIC_ACQ_REL);
                break;
            }
        }
        if (attr_ok) pthread_attr_destroy(&attr);
        run_items(j);
        pthread_mutex_lock(&j->mu);
        while (__atomic_load_n(&j->done, __ATOMIC_ACQUIRE) < j->count) pthread_cond_wait(&j->cv, &j->mu);
        pthread_mutex_unlock(&j->mu);
        release_job(j);
        return;
    }
#endif
    batch_job local = *proto;
    local.next = 0; local.done = 0;
#if !defined(_WIN32)
    /* single thread: run_items only touches mu/cv when the last item completes */
    pthread_mutex_init(&local.mu, NULL);
    pthread_cond_init(&local.cv, NULL);
    run_items(&local);
    pthread_mutex_destroy(&local.mu);
    pthread_cond_destroy(&local.cv);
#else
    run_items(&local);
#endif
}

void fse_compress_batch(uint8_t *dst, size_t cap, ptrdiff_t *sizes, const uint8_t *src,
                        size_t count, size_t n, int threads)
{
    batch_job j;
    memset(&j, 0, sizeof j);
    j.op = 0; j.count = count; j.n = n; j.src = src; j.dst = dst; j.cap = cap; j.sizes = sizes;
    run_batch(&j, threads);
}

void fse_decompress_batch(uint8_t *out, int *errs, const uint8_t *const *blobs, const size_t *lens,
                          size_t count, size_t n, int threads)
{
    batch_job j;
    memset(&j, 0, sizeof j);
    j.op = 1; j.count = count; j.n = n; j.blobs = blobs; j.lens = lens; j.out = out; j.errs = errs;
    run_batch(&j, threads);
}
