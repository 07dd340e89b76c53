/*
 * fse_tables.c -- shared state (fse_init: log2 table, CPU features), small
 * public helpers, count normalisation, the table description (cost, write,
 * read) and the decoder / encoder coding tables.  See fse_internal.h for the
 * stream layout and docs/entropy.md for the format.
 */
#include "fse_internal.h"

#include <math.h>

float lg2[FSE_MAX_L + 2];   /* lg2[i] = log2(i), lg2[0] unused */
int lg2_ready = 0;

#if FSE_HAVE_BMI2
int have_bmi2 = 0;
int have_avx2 = 0;
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
    case FSE_ERR_NEED_WIDTH: return "context-coded stream: the row width (symbols per row) is needed to decode it";
    case FSE_ERR_WIDTH: return "symbol count is not a multiple of the row width";
    case FSE_ERR_CTX: return "invalid context tables in a context-coded stream";
    case FSE_ERR_CLASS: return "class index out of range (every class must be below the number of class tables)";
    case FSE_ERR_VALUE: return "value out of range for the class coder (|v| must be <= 2^20)";
    case FSE_ERR_ESCAPE: return "escape payload too long (magnitude above 2^20: corrupt stream)";
    case FSE_ERR_TABLE_SHAPE: return "invalid class table shape (1..256 classes; an even number of symbols, 4..256 and at most 2^table_log; table log 5..12)";
    case FSE_ERR_TABLE_COUNTS: return "invalid class table counts (value counts >= 0, the escape count (last column) >= 1, every row summing to 2^table_log)";
    case FSE_ERR_TABLE_MEM: return "class table storage too small or misaligned";
    case FSE_ERR_PMF: return "invalid probabilities (must be finite, >= 0, with a positive sum)";
    case FSE_ERR_ESCAPE_CANON: return "escape of a value its class codes directly (non-canonical stream: corrupt)";
    default: return "unknown error";
    }
}

size_t fse_compress_bound(size_t n)
{
    return FSE_MAX_HEADER + n + 16;
}

/* ------------------------------------------------------------------------ */
/* normalisation: integer q[s] >= 1 for every present symbol, sum = 2^R,     */
/* maximising sum c[s] log q[s] (minimum ideal code length).  The objective is */
/* separable and concave, so a start from rounding followed by greedy unit    */
/* moves until no move gains is optimal.                                      */
/* ------------------------------------------------------------------------ */
void normalize(uint32_t *q, const uint32_t *cnt, unsigned lo, unsigned hi,
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
unsigned hdr_cost(tdesc *t) { return 3 + body_cost(t); }

unsigned body_cost(tdesc *t)
{
    unsigned m = t->hi - t->lo;
    unsigned base = (t->small ? 5 : 8) + (2 * bitlen32(m) - 1) + bitlen32(m);
    if (m == 1) { t->d = D_FIXED; return base + counts_cost(t, D_FIXED); }
    unsigned best = ~0u, bd = 0;
    for (unsigned d = 0; d < 4; d++) {
        unsigned c = counts_cost(t, d);
        if (c < best) { best = c; bd = d; }
    }
    t->d = bd;
    return base + 2 + best;
}

void hdr_write(bitw *w, const tdesc *t)
{
    bw_put(w, t->R - FSE_MIN_TABLELOG, 3);
    body_write(w, t);
}

void body_write(bitw *w, const tdesc *t)
{
    const uint32_t L = 1u << t->R;
    unsigned m = t->hi - t->lo, bm = bitlen32(m);
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

int hdr_read(bitr *r, tdesc *t, unsigned mode)   /* after mode and n */
{
    uint32_t v;
    int e;
    t->small = (mode == FSE_MODE_TANS5);
    if ((e = br_get(r, 3, &v))) return e;
    t->R = v + FSE_MIN_TABLELOG;
    if (t->R > FSE_MAX_TABLELOG) return FSE_ERR_TABLELOG;
    return body_read(r, t);
}

int body_read(bitr *r, tdesc *t)   /* t->R and t->small set */
{
    uint32_t v;
    int e;
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
/* start[b] = number of occurrences in buckets < b */
static void bucket_starts(uint16_t *start, const tdesc *t)
{
    const uint32_t L = 1u << t->R;
    /* at most one occurrence of a symbol per bucket, so <= 256 (255 symbols of count 3
     * and one of count 2^12 - 765 all put one in bucket 2047): uint8 would wrap */
    uint16_t cnt[FSE_MAX_L];
    memset(cnt, 0, L * sizeof cnt[0]);
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

void build_dtable(dentry *T, const tdesc *t)
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

void build_etable(etable *E, const tdesc *t)
{
    build_etable_into(E->st + FSE_MAX_L, E->tt, t);
}

/* slots: the 2^R state slots, with at least max q entries readable before them (stp
 * points q entries before a symbol's slots); tt indexed by symbol */
void build_etable_into(uint16_t *slots, symtt *tt, const tdesc *t)
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
        uint16_t *o = slots + cumul;
        uint32_t k = 0;
        for (; k + 2 <= q; k += 2) {
            o[k] = (uint16_t)(L + start[pos >> 32]++); pos += step;
            o[k + 1] = (uint16_t)(L + start[pos >> 32]++); pos += step;
        }
        for (; k < q; k++, pos += step) o[k] = (uint16_t)(L + start[pos >> 32]++);
        const unsigned maxBits = (q == 1) ? R : R - highbit32(q - 1);
        const uint32_t minStatePlus = q << maxBits;
        tt[s].deltaNb = (maxBits << 16) - minStatePlus;
        /* x >> nb lies in [q, 2q): stp points q entries before this symbol's slots */
        tt[s].stp = slots + cumul - q;
        cumul += q;
    }
}
