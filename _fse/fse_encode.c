/*
 * fse_encode.c -- fse_compress: histogram, choice of mode and table log,
 * and the tANS encoder loop (generic code and a BMI2 clone picked at run
 * time).  See fse_internal.h for the stream layout.
 */
#include "fse_internal.h"

#define TRIAL_MAX_N 1024u    /* up to this n the encoder tries several table logs */
#define TRIAL_COUNT 3

/* symbol count: '0' + 15 bits for n < 2^15, else '1' + 5-bit bit length b + the low b-1 bits */
#define NCODE_SHORT_LIMIT 32768u
unsigned ncode_bits(uint64_t n)
{
    return n < NCODE_SHORT_LIMIT ? 16 : 6 + bitlen32((uint32_t)n) - 1;
}

void ncode_put(bitw *w, uint64_t n)
{
    if (n < NCODE_SHORT_LIMIT) { bw_put(w, (uint32_t)n << 1, 16); return; }
    unsigned b = bitlen32((uint32_t)n);
    bw_put(w, 1u | (b << 1), 6);
    bw_put(w, (uint32_t)n & ((1u << (b - 1)) - 1), b - 1);
}

/* bits before the table description / payload: mode + n code */
static unsigned prefix_bits(uint64_t n) { return 2 + ncode_bits(n); }

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

/* FLUSH and the loops below repeat fse_context.c: as shared helpers, S=4 compress got 4 % slower */
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
    return enc_finish(w, acc, nacc, p, lim, x0, x1, x2, x3, R, S);
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
