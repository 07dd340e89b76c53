/*
 * fse_class.c -- the class coder: static tANS tables shipped with a model, one per class,
 * and a stream of signed values each coded with the table of its class (known to encoder
 * and decoder, not stored).  This file: table set layout and build, probability
 * normalisation, and the encoder (generic + BMI2 clone).  Decoder: fse_classdec.c.
 * Format (docs/entropy.md, "Class coder"): no header; the payload of plain tANS (values
 * n-1 .. 0, value i with state i mod S and the table of its class; an escape symbol followed
 * by its payload), the final states, hash-seeded, with the end marker; n = 0: no bytes.
 * Value symbols may have count 0 (their values are escaped); the escape has count >= 1.
 */
#include "fse_internal.h"

#include <math.h>

/* ------------------------------------------------------------------------ */
/* table set: the struct, then the decoder tables, the encoder transforms    */
/* and the encoder state slots (with 2^R slack slots in front: stp points    */
/* up to q slots before a symbol's first slot), each 64-byte aligned         */
/* ------------------------------------------------------------------------ */
typedef struct { size_t dt, tt, st, total; } tlayout;

FSE_INLINE size_t al64(size_t x) { return (x + 63) & ~(size_t)63; }

static int table_layout(tlayout *o, unsigned K, unsigned S, unsigned R)
{
    if (K < 1 || K > FSE_CLASS_MAX_CLASSES || S < FSE_CLASS_MIN_SYMBOLS ||
        S > FSE_CLASS_MAX_SYMBOLS || (S & 1) || R < FSE_MIN_TABLELOG ||
        R > FSE_MAX_TABLELOG || S > (1u << R))
        return FSE_ERR_TABLE_SHAPE;
    const size_t L = (size_t)1 << R;
    o->dt = al64(sizeof(fse_class_tables));
    o->tt = o->dt + al64((size_t)K * L * sizeof(dentry));
    o->st = o->tt + al64((size_t)K * S * sizeof(symtt));
    o->total = o->st + ((size_t)K + 1) * L * sizeof(uint16_t);
    return 0;
}

size_t fse_class_tables_size(unsigned classes, unsigned symbols, unsigned table_log)
{
    tlayout o;
    return table_layout(&o, classes, symbols, table_log) ? 0 : o.total;
}

int fse_class_tables_init(void *mem, size_t size, const uint32_t *counts, unsigned classes,
                          unsigned symbols, unsigned table_log)
{
    tlayout o;
    const unsigned K = classes, S = symbols, R = table_log;
    int e = table_layout(&o, K, S, R);
    if (e) return e;
    if (!mem || size < o.total || ((uintptr_t)mem & 15)) return FSE_ERR_TABLE_MEM;
    if (!lg2_ready) fse_init();
    const uint32_t L = 1u << R;
    for (size_t k = 0; k < K; k++) {   /* escape count >= 1, rows summing to L */
        uint64_t sum = 0;
        for (size_t s = 0; s < S; s++) {
            const uint32_t q = counts[k * S + s];
            if (q > L) return FSE_ERR_TABLE_COUNTS;
            sum += q;
        }
        if (sum != L || counts[k * S + S - 1] < 1) return FSE_ERR_TABLE_COUNTS;
    }
    uint8_t *const base = (uint8_t *)mem;
    fse_class_tables *t = (fse_class_tables *)mem;
    dentry *dt = (dentry *)(base + o.dt);
    symtt *tt = (symtt *)(base + o.tt);
    uint16_t *st = (uint16_t *)(base + o.st);
    memset(t, 0, sizeof *t);
    t->K = K; t->S = S; t->R = R; t->E = (S - 2) / 2;
    t->dt = dt;
    tdesc d;
    memset(&d, 0, sizeof d);
    d.R = R; d.lo = 0; d.hi = S - 1;
    for (size_t k = 0; k < K; k++) {
        for (size_t s = 0; s < S; s++) d.q[s] = counts[k * S + s];
        build_dtable(dt + (k << R), &d);
        build_etable_into(st + ((k + 1) << R), tt + k * S, &d);
        symtt *row = tt + k * S;   /* count 0: never in the tables, coded as the escape */
        row[S - 1].esc = 1;
        for (size_t s = 0; s + 1 < S; s++) {
            row[s].esc = !d.q[s];
            if (!d.q[s]) { row[s].stp = row[S - 1].stp; row[s].deltaNb = row[S - 1].deltaNb; }
        }
        t->row[k] = tt + k * S;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* normalisation of probabilities.  min_count 1: integer weights p * 2^30     */
/* (at least 1, so every symbol gets a count) through the coder's own         */
/* normalize(), which maximises sum w log q exactly (greedy unit moves on a   */
/* separable concave objective).  min_count 0: see normalize_zero below.      */
/* ------------------------------------------------------------------------ */
#define PMF_SCALE 1073741824.0   /* 2^30 */
#define W_MIN (1.0 / PMF_SCALE)  /* weight of a symbol of probability 0 that keeps a count */

/* escape payload bits of the value v = s - E: Exp-Golomb of |v| + 1, a sign if v != 0 */
FSE_INLINE unsigned esc_bits(unsigned s, unsigned E)
{
    const unsigned m = s > E ? s - E : E - s;
    return 2 * highbit32(m + 1) + 1 + (m != 0);
}

/* gain (nats) of one more unit of count and loss of one unit less; -1 / +inf if impossible */
FSE_INLINE void unit_deltas(double *g, double *l, double w, uint32_t q)
{
    *g = !(w > 0.0) ? -1.0 : q ? w * log1p(1.0 / q) : HUGE_VAL;
    *l = (w > 0.0 && q > 1) ? -w * log1p(-1.0 / q) : HUGE_VAL;
}

/* Maximise sum W log q over the symbols with W > 0 (q >= 1; the others stay at 0) with
 * sum q = L: greedy unit moves from any start (separable concave: a point no unit move
 * improves is optimal). */
static void settle(uint32_t *q, const double *W, unsigned S, uint32_t L)
{
    double g[FSE_CLASS_MAX_SYMBOLS], l[FSE_CLASS_MAX_SYMBOLS];
    int64_t sum = 0;
    for (unsigned s = 0; s < S; s++) {
        sum += q[s];
        unit_deltas(&g[s], &l[s], W[s], q[s]);
    }
    for (unsigned it = 0; it < 8 * FSE_MAX_L; it++) {
        unsigned sa = 0, sr = 0;
        for (unsigned s = 1; s < S; s++) {
            if (g[s] > g[sa]) sa = s;
            if (l[s] < l[sr]) sr = s;
        }
        if (sum < (int64_t)L) { q[sa]++; sum++; sr = sa; }
        else if (sum > (int64_t)L) { q[sr]--; sum--; sa = sr; }
        else if (sa != sr && g[sa] > l[sr] * (1.0 + 1e-12)) { q[sa]++; q[sr]--; }
        else break;
        unit_deltas(&g[sa], &l[sa], W[sa], q[sa]);
        unit_deltas(&g[sr], &l[sr], W[sr], q[sr]);
    }
}

/* expected bits per value of counts q for the normalised probabilities pn: R - log2 q per
 * symbol with a count; the value symbols with q = 0 escaped: escape code + payload bits */
static double row_cost(const uint32_t *q, const double *pn, unsigned S, unsigned R)
{
    const unsigned E = (S - 2) / 2, esc = S - 1;
    double c = 0.0, pe = pn[esc];
    for (unsigned s = 0; s < esc; s++) {
        if (q[s]) c += pn[s] > 0.0 ? pn[s] * (R - log2((double)q[s])) : 0.0;
        else { c += pn[s] * esc_bits(s, E); pe += pn[s]; }
    }
    return c + pe * (R - log2((double)q[esc]));
}

/* min_count 0 (class table rows, S even >= 4, the escape last): the candidates for count 0
 * are the value symbols with p * 2^R < 2, taken in order of increasing p * (escape payload
 * bits) (farther values first on ties); for every prefix of that order, the other counts are
 * re-optimised (settle, the prefix's mass added to the escape's weight) and the expected
 * cost row_cost evaluated exactly; the cheapest prefix wins (the empty one, min_count 1's
 * optimum under the same float arithmetic, on ties). */
static void normalize_zero(uint32_t *q, const double *pn, unsigned S, unsigned R)
{
    const unsigned E = (S - 2) / 2, esc = S - 1;
    const uint32_t L = 1u << R;
    double W[FSE_CLASS_MAX_SYMBOLS], key[FSE_CLASS_MAX_SYMBOLS];
    unsigned cand[FSE_CLASS_MAX_SYMBOLS], C = 0;
    uint32_t best[FSE_CLASS_MAX_SYMBOLS];
    for (unsigned s = 0; s < S; s++) {
        W[s] = pn[s] > W_MIN ? pn[s] : W_MIN;
        const double x = floor(pn[s] * L + 0.5);
        q[s] = x < 1.0 ? 1u : x > L ? L : (uint32_t)x;
    }
    settle(q, W, S, L);
    double bestc = row_cost(q, pn, S, R), zmass = 0.0;
    memcpy(best, q, S * sizeof *q);
    for (unsigned s = 0; s < esc; s++) {   /* candidates, insertion-sorted by key */
        if (!(pn[s] * L < 2.0)) continue;
        const double k = pn[s] * esc_bits(s, E);
        unsigned j = C++;
        for (; j > 0 && (key[j - 1] > k || (key[j - 1] == k &&
                                             esc_bits(cand[j - 1], E) < esc_bits(s, E))); j--) {
            key[j] = key[j - 1];
            cand[j] = cand[j - 1];
        }
        key[j] = k;
        cand[j] = s;
    }
    for (unsigned m = 0; m < C; m++) {
        const unsigned s = cand[m];
        q[s] = 0;
        W[s] = 0.0;
        zmass += pn[s];
        W[esc] = pn[esc] + zmass > W_MIN ? pn[esc] + zmass : W_MIN;
        settle(q, W, S, L);
        const double c = row_cost(q, pn, S, R);
        if (c < bestc - 1e-12) {
            bestc = c;
            memcpy(best, q, S * sizeof *q);
        }
    }
    memcpy(q, best, S * sizeof *q);
}

int fse_normalize_pmf(uint32_t *q, const double *p, unsigned symbols, unsigned table_log,
                      unsigned min_count)
{
    const unsigned S = symbols, R = table_log;
    if (R < FSE_MIN_TABLELOG || R > FSE_MAX_TABLELOG || S < 1 || S > (1u << R) ||
        min_count > 1 || (!min_count && (S < FSE_CLASS_MIN_SYMBOLS ||
                                         S > FSE_CLASS_MAX_SYMBOLS || (S & 1))))
        return FSE_ERR_TABLE_SHAPE;
    if (!lg2_ready) fse_init();
    double sum = 0.0;
    for (unsigned s = 0; s < S; s++) {
        if (!(p[s] >= 0.0) || !isfinite(p[s])) return FSE_ERR_PMF;
        sum += p[s];
    }
    if (!(sum > 0.0) || !isfinite(sum)) return FSE_ERR_PMF;
    if (!min_count) {
        double pn[FSE_CLASS_MAX_SYMBOLS];
        for (unsigned s = 0; s < S; s++) pn[s] = p[s] / sum;
        normalize_zero(q, pn, S, R);
        return 0;
    }
    uint32_t w[FSE_MAX_L];
    uint64_t tot = 0;
    for (unsigned s = 0; s < S; s++) {
        const double x = p[s] / sum * PMF_SCALE;   /* <= 2^30 */
        w[s] = x < 1.0 ? 1u : (uint32_t)(x + 0.5);
        tot += w[s];
    }
    normalize(q, w, 0, S - 1, tot, R);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* encoder                                                                    */
/* ------------------------------------------------------------------------ */
size_t fse_class_bound(size_t n)
{
    /* per value at most R <= 12 state bits + 42 escape bits; final states <= 49 bits */
    return 7 * n + 64;
}

/* classes < K and |v| <= 2^20 (max reductions: vectorised) */
static int check_input(const int32_t *v, const uint8_t *c, size_t n, unsigned K)
{
    const uint32_t M = FSE_CLASS_MAX_VALUE;
    uint32_t vmax = 0;
    uint8_t cmax = 0;
    for (size_t i = 0; i < n; i++) {
        const uint32_t a = (uint32_t)v[i] + M;   /* in [0, 2M] iff |v| <= M */
        vmax = a > vmax ? a : vmax;
        cmax = c[i] > cmax ? c[i] : cmax;
    }
    if (n && cmax >= K) return FSE_ERR_CLASS;
    if (vmax > 2 * M) return FSE_ERR_VALUE;
    return 0;
}

#define FLUSH()                                                              \
    do {                                                                     \
        wr64(p, acc);                                                        \
        unsigned nbytes_ = nacc >> 3;                                        \
        p += nbytes_;                                                        \
        acc >>= nbytes_ * 8;                                                 \
        nacc &= 7;                                                           \
    } while (0)

/* escape payload of v (|v| > E, or its symbol has count 0), written before the escape
 * symbol's state bits so that the decoder reads it right after them: the sign bit if v != 0,
 * then u + 1 = |v| + 1 in 2z + 1 bits (z leading zeros; the decoder reads the zeros first and
 * the sign last).  Flushes around it keep the 64-bit accumulator from overflowing (<= 49). */
#define ESCBITS(v)                                                           \
    do {                                                                     \
        const uint32_t m_ = (v) < 0 ? 0u - (uint32_t)(v) : (uint32_t)(v);    \
        const uint32_t u1_ = m_ + 1;                                         \
        FLUSH();                                                             \
        acc |= (uint64_t)((v) < 0) << nacc;                                  \
        nacc += m_ != 0;                                                     \
        acc |= (uint64_t)u1_ << nacc;                                        \
        nacc += 2 * highbit32(u1_) + 1;                                      \
        FLUSH();                                                             \
    } while (0)

#define ENCC(x, j)                                                           \
    do {                                                                     \
        const int32_t v_ = val[j];                                           \
        const uint32_t a_ = (uint32_t)v_ + E;                                \
        const symtt *t_ = row[cls[j]];                                       \
        if (FSE_LIKELY(a_ < esc)) {                                          \
            t_ += a_;                                                        \
            if (FSE_UNLIKELY(t_->esc)) ESCBITS(v_);                          \
        } else {                                                             \
            t_ += esc;                                                       \
            ESCBITS(v_);                                                     \
        }                                                                    \
        uint64_t nb_ = (uint32_t)(x + t_->deltaNb) >> 16;                    \
        acc |= (x & ((1ull << nb_) - 1)) << nacc;                            \
        nacc += (unsigned)nb_;                                               \
        x = t_->stp[x >> nb_];                                               \
    } while (0)

/* values n-1 .. 0, value i with state i % S; then the final states (as encode_core) */
FSE_INLINE int class_encode_core(bitw *w, const int32_t *val, const uint8_t *cls, size_t n,
                                 const fse_class_tables *t, unsigned S, uint64_t hv)
{
    const unsigned R = t->R, E = t->E, esc = 2 * t->E + 1;
    const symtt *const *row = t->row;
    uint64_t x0 = enc_state(hv, 0, R), x1 = enc_state(hv, 1, R);
    uint64_t x2 = enc_state(hv, 2, R), x3 = enc_state(hv, 3, R);
    uint64_t acc = w->acc;
    unsigned nacc = w->nacc;
    uint8_t *p = w->p;
    uint8_t *const lim = w->lim;
    size_t i = n;
    if (p > lim) return FSE_ERR_DST_SMALL;
    while (i & 3) {
        i--;
        switch (i & (S - 1)) {
        case 0: ENCC(x0, i); break;
        case 1: ENCC(x1, i); break;
        case 2: ENCC(x2, i); break;
        default: ENCC(x3, i); break;
        }
        FLUSH();
        if (FSE_UNLIKELY(p > lim)) return FSE_ERR_DST_SMALL;
    }
    while (i) {
        i -= 4;
        if (S == 1) {
            ENCC(x0, i + 3); ENCC(x0, i + 2); ENCC(x0, i + 1); ENCC(x0, i);
        } else if (S == 2) {
            ENCC(x1, i + 3); ENCC(x0, i + 2); ENCC(x1, i + 1); ENCC(x0, i);
        } else {
            ENCC(x3, i + 3); ENCC(x2, i + 2); ENCC(x1, i + 1); ENCC(x0, i);
        }
        FLUSH();
        if (FSE_UNLIKELY(p > lim)) return FSE_ERR_DST_SMALL;
    }
    return enc_finish(w, acc, nacc, p, lim, x0, x1, x2, x3, R, S);
}

#define ENC_ARGS bitw *w, const int32_t *val, const uint8_t *cls, size_t n, \
                 const fse_class_tables *t, unsigned S, uint64_t hv

static int class_encode_generic(ENC_ARGS)
{
    switch (S) {
    case 1: return class_encode_core(w, val, cls, n, t, 1, hv);
    case 2: return class_encode_core(w, val, cls, n, t, 2, hv);
    default: return class_encode_core(w, val, cls, n, t, 4, hv);
    }
}

#if FSE_HAVE_BMI2
__attribute__((target("bmi,bmi2")))
static int class_encode_bmi2(ENC_ARGS)
{
    switch (S) {
    case 1: return class_encode_core(w, val, cls, n, t, 1, hv);
    case 2: return class_encode_core(w, val, cls, n, t, 2, hv);
    default: return class_encode_core(w, val, cls, n, t, 4, hv);
    }
}
#endif

ptrdiff_t fse_compress_classes(uint8_t *dst, size_t cap, const int32_t *values,
                               const uint8_t *classes, size_t n, const fse_class_tables *t)
{
    if (!lg2_ready) fse_init();
    if (n > FSE_MAX_N) return FSE_ERR_N_RANGE;
    if (cap < fse_class_bound(n)) return FSE_ERR_DST_SMALL;
    int e = check_input(values, classes, n, t->K);
    if (e) return e;
    if (!n) return 0;
    /* the initial states come from a hash of the values (their bytes, little-endian) */
    const uint64_t hv = hash_symbols((const uint8_t *)values, 4 * n);
    bitw w;
    /* 40 bytes of margin: one group of 4 values moves p by at most 27 bytes between checks
     * (4 x (12 + 42) bits), then an 8-byte store */
    w.acc = 0; w.nacc = 0; w.p = dst; w.lim = dst + cap - 40; w.overflow = 0;
    const unsigned S = fse_states_for_n(n);
#if FSE_HAVE_BMI2
    if (have_bmi2) e = class_encode_bmi2(&w, values, classes, n, t, S, hv);
    else
#endif
    e = class_encode_generic(&w, values, classes, n, t, S, hv);
    if (e) return e;
    return w.p - dst;
}
