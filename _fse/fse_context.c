/*
 * fse_context.c -- the spatial-context variant of the tANS stream: each
 * symbol of a channel of rows (width symbols each) is coded with one of
 * FSE_CTX_COUNT tables, chosen by its already coded left and upper
 * neighbours.  Format (docs/entropy.md, "Context variant"):
 *
 *   2 bits  mode 0
 *   6 bits  '1' + 5-bit value 1: the escape of the count code (a long count
 *           code of bit length 1 codes no count; old decoders reject it)
 *   n       the ordinary count code
 *   5 bits  m, the reference symbol (the channel's most frequent)
 *   3 bits  R - 5, the table log of every table
 *   3 x 2   context 0..2: 0 unused, 1 own table, 2 the table of context c-1
 *   tables  one description without R (as in plain mode 0) per tag-1 context
 *   payload and final states exactly as in plain tANS
 *
 * Context of symbol i (row r, column k): a(s) = min(|s - m|, 3),
 * d = a(left) + a(up) with a missing neighbour contributing 0; context 0 if
 * d == 0, 1 if d <= 2, else 2 (the same as with the unclamped |s - m|).
 */
#include "fse_internal.h"


/* room for the plain stream, the context stream after it, and n bytes of symbol codes
 * (context * 32 + symbol) at the end of the buffer */
size_t fse_compress_bound_ctx(size_t n) { return 3 * fse_compress_bound(n) + 16; }

/* ------------------------------------------------------------------------ */
/* header                                                                     */
/* ------------------------------------------------------------------------ */
int ctx_hdr_read(bitr *r, cdesc *c)
{
    uint32_t v;
    int e;
    if ((e = br_get(r, 5, &v))) return e;
    c->m = v;
    if ((e = br_get(r, 3, &v))) return e;
    c->R = v + FSE_MIN_TABLELOG;   /* 5..12 */
    c->ntab = 0;
    for (unsigned k = 0; k < FSE_CTX_COUNT; k++) {
        if ((e = br_get(r, 2, &v))) return e;
        if (v == 0) {
            c->tab[k] = CTX_UNUSED;
        } else if (v == 1) {
            c->tab[k] = (uint8_t)c->ntab++;
        } else if (v == 2 && k > 0 && c->tab[k - 1] != CTX_UNUSED) {
            c->tab[k] = c->tab[k - 1];
        } else {
            return FSE_ERR_CTX;
        }
    }
    if (!c->ntab) return FSE_ERR_CTX;
    for (unsigned t = 0; t < c->ntab; t++) {
        c->t[t].R = c->R;
        c->t[t].small = 1;
        if ((e = body_read(r, &c->t[t]))) return e;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* encoder                                                                    */
/* ------------------------------------------------------------------------ */
typedef struct {
    unsigned ntab;
    uint8_t tab[FSE_CTX_COUNT], tag[FSE_CTX_COUNT];
    uint32_t h[FSE_CTX_COUNT][CTX_SYMS];   /* per table, with a phantom count (see below) */
    uint64_t tot[FSE_CTX_COUNT];
    int phantom[FSE_CTX_COUNT];            /* symbol given count 1 in a one-symbol table, or -1 */
} clayout;

/* Groupings: 0 one table per context, 1 contexts 1 and 2 share, 2 contexts 0 and 1 share.
 * A table needs two symbols (q < 2^R for every symbol keeps the decoder bound of
 * docs/entropy.md), so a one-symbol table gets a neighbour of count 1. */
static void layout_for(clayout *Lo, unsigned cfg, const uint32_t hc[FSE_CTX_COUNT][CTX_SYMS],
                       const uint64_t cnt[FSE_CTX_COUNT])
{
    memset(Lo, 0, sizeof *Lo);
    for (unsigned k = 0; k < FSE_CTX_COUNT; k++) {
        if (!cnt[k]) { Lo->tab[k] = CTX_UNUSED; Lo->tag[k] = 0; continue; }
        int share = k > 0 && cnt[k - 1] && ((cfg == 1 && k == 2) || (cfg == 2 && k == 1));
        if (share) { Lo->tab[k] = Lo->tab[k - 1]; Lo->tag[k] = 2; }
        else { Lo->tab[k] = (uint8_t)Lo->ntab++; Lo->tag[k] = 1; }
        unsigned t = Lo->tab[k];
        for (unsigned s = 0; s < CTX_SYMS; s++) Lo->h[t][s] += hc[k][s];
        Lo->tot[t] += cnt[k];
    }
    for (unsigned t = 0; t < Lo->ntab; t++) {
        unsigned distinct = 0, last = 0;
        for (unsigned s = 0; s < CTX_SYMS; s++) if (Lo->h[t][s]) { distinct++; last = s; }
        Lo->phantom[t] = -1;
        if (distinct == 1) {
            unsigned p = last < CTX_SYMS - 1 ? last + 1 : last - 1;
            Lo->h[t][p] = 1; Lo->tot[t]++; Lo->phantom[t] = (int)p;
        }
    }
}

/* tables of layout Lo at table log R; returns the estimated bits of tables + payload */
static double tables_for(tdesc *T, const clayout *Lo, unsigned R)
{
    double bits = 0.0;
    for (unsigned t = 0; t < Lo->ntab; t++) {
        tdesc *d = &T[t];
        const uint32_t *h = Lo->h[t];
        d->R = R; d->small = 1;
        d->lo = 0; d->hi = CTX_SYMS - 1;
        while (!h[d->lo]) d->lo++;
        while (!h[d->hi]) d->hi--;
        normalize(d->q, h, d->lo, d->hi, Lo->tot[t], R);
        d->peak = d->lo;
        for (unsigned s = d->lo; s <= d->hi; s++) if (d->q[s] > d->q[d->peak]) d->peak = s;
        bits += (double)body_cost(d);
        for (unsigned s = d->lo; s <= d->hi; s++)
            if (h[s] && (int)s != Lo->phantom[t])
                bits += (double)h[s] * (double)((float)R - lg2[d->q[s]]);
    }
    return bits;
}

#define ENCT(x, t)                                                           \
    do {                                                                     \
        uint64_t nb_ = (uint32_t)(x + (t)->deltaNb) >> 16;                   \
        acc |= (x & ((1ull << nb_) - 1)) << nacc;                            \
        nacc += (unsigned)nb_;                                               \
        x = (t)->stp[x >> nb_];                                              \
    } while (0)

/* FLUSH and the loops below repeat fse_encode.c: as shared helpers, S=4 compress got 4 % slower */
#define FLUSH()                                                              \
    do {                                                                     \
        wr64(p, acc);                                                        \
        unsigned nbytes_ = nacc >> 3;                                        \
        p += nbytes_;                                                        \
        acc >>= nbytes_ * 8;                                                 \
        nacc &= 7;                                                           \
    } while (0)

/* symbols n-1..0: symbol i uses state i % S and the transform TT[code[i]], code = context * 32
 * + symbol; then the final states (as encode_core in fse_encode.c) */
FSE_INLINE int ctx_encode_core(bitw *w, const uint8_t *code, size_t n, const symtt *TT,
                               unsigned R, unsigned S, uint64_t hv)
{
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
        const symtt *t = &TT[code[i]];
        switch (i & (S - 1)) {
        case 0: ENCT(x0, t); break;
        case 1: ENCT(x1, t); break;
        case 2: ENCT(x2, t); break;
        default: ENCT(x3, t); break;
        }
    }
    FLUSH();
    while (i) {
        i -= 4;
        const symtt *t3 = &TT[code[i + 3]], *t2 = &TT[code[i + 2]];
        const symtt *t1 = &TT[code[i + 1]], *t0 = &TT[code[i]];
        if (S == 1) {
            ENCT(x0, t3); ENCT(x0, t2); ENCT(x0, t1); ENCT(x0, t0);
        } else if (S == 2) {
            ENCT(x1, t3); ENCT(x0, t2); ENCT(x1, t1); ENCT(x0, t0);
        } else {
            ENCT(x3, t3); ENCT(x2, t2); ENCT(x1, t1); ENCT(x0, t0);
        }
        FLUSH();
        if (FSE_UNLIKELY(p > lim)) return FSE_ERR_DST_SMALL;
    }
    return enc_finish(w, acc, nacc, p, lim, x0, x1, x2, x3, R, S);
}

static int ctx_encode_generic(bitw *w, const uint8_t *code, size_t n, const symtt *TT,
                              unsigned R, unsigned S, uint64_t hv)
{
    switch (S) {
    case 1: return ctx_encode_core(w, code, n, TT, R, 1, hv);
    case 2: return ctx_encode_core(w, code, n, TT, R, 2, hv);
    default: return ctx_encode_core(w, code, n, TT, R, 4, hv);
    }
}

#if FSE_HAVE_BMI2
__attribute__((target("bmi,bmi2")))
static int ctx_encode_bmi2(bitw *w, const uint8_t *code, size_t n, const symtt *TT,
                           unsigned R, unsigned S, uint64_t hv)
{
    switch (S) {
    case 1: return ctx_encode_core(w, code, n, TT, R, 1, hv);
    case 2: return ctx_encode_core(w, code, n, TT, R, 2, hv);
    default: return ctx_encode_core(w, code, n, TT, R, 4, hv);
    }
}
#endif

/* the context stream for layout Lo at table log R into dst (cap bytes); size or error */
static ptrdiff_t encode_ctx(uint8_t *dst, size_t cap, const uint8_t *code, size_t n, unsigned m,
                            const clayout *Lo, unsigned R, uint64_t hv)
{
    tdesc T[FSE_CTX_COUNT];
    etable E[FSE_CTX_COUNT];
    symtt TT[FSE_CTX_COUNT * CTX_SYMS];
    tables_for(T, Lo, R);
    bitw w;
    w.acc = 0; w.nacc = 0; w.p = dst; w.lim = dst + cap - 8; w.overflow = 0;
    bw_put(&w, FSE_MODE_TANS5, 2);
    bw_put(&w, 1u | (NCODE_CTX_ESCAPE << 1), 6);
    ncode_put(&w, n);
    bw_put(&w, m, 5);
    bw_put(&w, R - FSE_MIN_TABLELOG, 3);
    for (unsigned k = 0; k < FSE_CTX_COUNT; k++) bw_put(&w, Lo->tag[k], 2);
    for (unsigned t = 0; t < Lo->ntab; t++) body_write(&w, &T[t]);
    if (w.overflow) return FSE_ERR_DST_SMALL;
    for (unsigned t = 0; t < Lo->ntab; t++) build_etable(&E[t], &T[t]);
    for (unsigned k = 0; k < FSE_CTX_COUNT; k++)   /* unused contexts: never looked up */
        memcpy(&TT[k * CTX_SYMS], E[Lo->tab[k] == CTX_UNUSED ? 0 : Lo->tab[k]].tt,
               CTX_SYMS * sizeof(symtt));
    const unsigned S = fse_states_for_n(n);
    int e;
#if FSE_HAVE_BMI2
    if (have_bmi2) e = ctx_encode_bmi2(&w, code, n, TT, R, S, hv);
    else
#endif
    e = ctx_encode_generic(&w, code, n, TT, R, S, hv);
    if (e) return e;
    return w.p - dst;
}

ptrdiff_t fse_compress_ctx(uint8_t *dst, size_t cap, const uint8_t *src, size_t n, size_t width)
{
    if (!lg2_ready) fse_init();
    if (!width) return fse_compress(dst, cap, src, n);
    if (n > FSE_MAX_N) return FSE_ERR_N_RANGE;
    if (n % width) return FSE_ERR_WIDTH;
    if (cap < fse_compress_bound_ctx(n)) return FSE_ERR_DST_SMALL;
    const ptrdiff_t plain = fse_compress(dst, cap, src, n);
    if (plain < 0 || n < 2 || (dst[0] & 3) == FSE_MODE_RUN) return plain;

    uint32_t h[256];
    const uint64_t hv = histogram_hash(h, src, n);
    unsigned m = 0;
    for (unsigned s = 0; s < 256; s++) {
        if (h[s] && s >= CTX_SYMS) return plain;   /* the variant codes symbols 0..31 */
        if (h[s] > h[m]) m = s;
    }
    uint8_t A[256];
    amap_build(A, m);
    /* code[i] = context * 32 + symbol, in the spare end of dst (see fse_compress_bound_ctx) */
    uint8_t *const code = dst + cap - n;
    uint32_t hc[FSE_CTX_COUNT][CTX_SYMS];
    uint32_t h4[4][FSE_CTX_COUNT * CTX_SYMS];   /* 4 copies: repeated codes do not wait */
    uint64_t cnt[FSE_CTX_COUNT] = {0, 0, 0};
    memset(h4, 0, sizeof h4);
    for (size_t i = 0; i < n; i += width) {   /* one row */
        const uint8_t *row = src + i, *up = i ? row - width : row;   /* up: rows >= 1 only */
        uint8_t *cr = code + i;
        for (size_t k = 0; k < width; k++) {
            const unsigned d = (k ? A[row[k - 1]] : 0u) + (i ? A[up[k]] : 0u);
            const unsigned c = CT[d] * CTX_SYMS + row[k];
            h4[k & 3][c]++;
            cr[k] = (uint8_t)c;
        }
    }
    for (unsigned k = 0; k < FSE_CTX_COUNT; k++)
        for (unsigned s = 0; s < CTX_SYMS; s++) {
            unsigned c = k * CTX_SYMS + s;
            hc[k][s] = h4[0][c] + h4[1][c] + h4[2][c] + h4[3][c];
            cnt[k] += hc[k][s];
        }

    /* estimated size for every grouping and table log (long channels: stop two steps after
     * the estimate rises, as fse_compress does) */
    const unsigned S = fse_states_for_n(n);
    const double fixed = (double)(2 + 6 + ncode_bits(n) + 5 + 3 + 2 * FSE_CTX_COUNT);
    double best = 1e300;
    unsigned bcfg = 0, bR = FSE_MAX_TABLELOG;
    clayout Lo;
    tdesc T[FSE_CTX_COUNT];
    for (unsigned cfg = 0; cfg < 3; cfg++) {
        layout_for(&Lo, cfg, hc, cnt);
        if (cfg && Lo.ntab == 1) continue;   /* a single table: that is the plain stream */
        double prev = 1e300;
        unsigned rising = 0;
        for (unsigned R = FSE_MAX_TABLELOG; R >= FSE_MIN_TABLELOG; R--) {
            double est = fixed + (double)(S * R) + tables_for(T, &Lo, R);
            if (est < best) { best = est; bcfg = cfg; bR = R; }
            if (est > prev) { if (++rising >= 2 && n > 1024) break; } else rising = 0;
            prev = est;
        }
    }
    if (best / 8.0 >= (double)plain) return plain;

    layout_for(&Lo, bcfg, hc, cnt);
    uint8_t *alt = dst + plain;   /* ends before code: plain <= n + FSE_MAX_HEADER */
    ptrdiff_t r = encode_ctx(alt, (size_t)plain + 8, code, n, m, &Lo, bR, hv);
    if (r <= 0 || r >= plain) return plain;
    memmove(dst, alt, (size_t)r);
    return r;
}
