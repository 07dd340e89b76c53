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

static const uint8_t CT[7] = {0, 1, 1, 2, 2, 2, 2};   /* d -> context */
#define CTX_SYMS 32u                                 /* the variant codes symbols 0..31 */

static void amap_build(uint8_t A[256], unsigned m)
{
    for (unsigned s = 0; s < 256; s++) {
        unsigned d = s > m ? s - m : m - s;
        A[s] = (uint8_t)(d > 3 ? 3 : d);
    }
}

size_t fse_compress_bound_ctx(size_t n) { return 2 * fse_compress_bound(n) + 16; }

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

#define FLUSH()                                                              \
    do {                                                                     \
        wr64(p, acc);                                                        \
        unsigned nbytes_ = nacc >> 3;                                        \
        p += nbytes_;                                                        \
        acc >>= nbytes_ * 8;                                                 \
        nacc &= 7;                                                           \
    } while (0)

/* symbols n-1..0 (symbol i: state i % S, table of its context), then the final states */
static int ctx_encode_payload(bitw *w, const uint8_t *src, size_t n, size_t wd,
                              const symtt *const *tts, const uint8_t *A, unsigned R,
                              unsigned S, uint64_t hv)
{
    const uint64_t L = 1u << R;
    uint64_t xs[4];
    for (unsigned j = 0; j < 4; j++) xs[j] = L + ((hv >> (16 * j)) & (L - 1));
    uint64_t acc = w->acc;
    unsigned nacc = w->nacc;
    uint8_t *p = w->p;
    uint8_t *const lim = w->lim;
    if (p > lim) return FSE_ERR_DST_SMALL;
    size_t col = (n - 1) % wd;
    for (size_t i = n; i-- > 0;) {
        unsigned d = (col ? A[src[i - 1]] : 0u) + (i >= wd ? A[src[i - wd]] : 0u);
        const symtt *t = &tts[CT[d]][src[i]];
        uint64_t *x = &xs[i & (S - 1)];
        ENCT(*x, t);
        if (!(i & 3)) {
            FLUSH();
            if (FSE_UNLIKELY(p > lim)) return FSE_ERR_DST_SMALL;
        }
        col = col ? col - 1 : wd - 1;
    }
    FLUSH();
    if (FSE_UNLIKELY(p > lim)) return FSE_ERR_DST_SMALL;
    /* final states: S-1 .. 1 in R bits, state 0 in R+1 bits (top bit = end marker) */
    if (S == 4) { acc |= (xs[3] - L) << nacc; nacc += R; acc |= (xs[2] - L) << nacc; nacc += R; FLUSH(); }
    if (S >= 2) { acc |= (xs[1] - L) << nacc; nacc += R; }
    acc |= xs[0] << nacc; nacc += R + 1;
    FLUSH();
    if (FSE_UNLIKELY(p > lim)) return FSE_ERR_DST_SMALL;
    wr64(p, acc);
    p += (nacc + 7) >> 3;
    w->p = p; w->acc = 0; w->nacc = 0;
    return 0;
}

/* the context stream for layout Lo at table log R into dst (cap bytes); size or error */
static ptrdiff_t encode_ctx(uint8_t *dst, size_t cap, const uint8_t *src, size_t n, size_t wd,
                            unsigned m, const uint8_t *A, const clayout *Lo, unsigned R,
                            uint64_t hv)
{
    tdesc T[FSE_CTX_COUNT];
    etable E[FSE_CTX_COUNT];
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
    const symtt *tts[FSE_CTX_COUNT];
    for (unsigned t = 0; t < Lo->ntab; t++) build_etable(&E[t], &T[t]);
    for (unsigned k = 0; k < FSE_CTX_COUNT; k++)
        tts[k] = E[Lo->tab[k] == CTX_UNUSED ? 0 : Lo->tab[k]].tt;   /* unused: never looked up */
    int e = ctx_encode_payload(&w, src, n, wd, tts, A, R, fse_states_for_n(n), hv);
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

    uint32_t h[256] = {0};
    for (size_t i = 0; i < n; i++) h[src[i]]++;
    unsigned m = 0;
    for (unsigned s = 0; s < 256; s++) {
        if (h[s] && s >= CTX_SYMS) return plain;   /* the variant codes symbols 0..31 */
        if (h[s] > h[m]) m = s;
    }
    uint8_t A[256];
    amap_build(A, m);
    uint32_t hc[FSE_CTX_COUNT][CTX_SYMS];
    uint64_t cnt[FSE_CTX_COUNT] = {0, 0, 0};
    memset(hc, 0, sizeof hc);
    for (size_t i = 0; i < n; i += width) {   /* one row */
        const uint8_t *row = src + i, *up = i ? row - width : NULL;
        for (size_t k = 0; k < width; k++) {
            unsigned d = (k ? A[row[k - 1]] : 0u) + (up ? A[up[k]] : 0u);
            hc[CT[d]][row[k]]++;
        }
    }
    for (unsigned k = 0; k < FSE_CTX_COUNT; k++)
        for (unsigned s = 0; s < CTX_SYMS; s++) cnt[k] += hc[k][s];

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
    const uint64_t hv = hash_symbols(src, n);
    uint8_t *alt = dst + plain;   /* cap >= 2 * fse_compress_bound(n) + 16: room for both */
    ptrdiff_t r = encode_ctx(alt, (size_t)plain + 8, src, n, width, m, A, &Lo, bR, hv);
    if (r <= 0 || r >= plain) return plain;
    memmove(dst, alt, (size_t)r);
    return r;
}

/* ------------------------------------------------------------------------ */
/* decoder                                                                    */
/* ------------------------------------------------------------------------ */
/* Entries of the context tables as uint32 (the dentry layout): base in bits 0-15, sym in
 * 16-23, nb in 24-27 and a(sym) = min(|sym - m|, 3) in 28-29.  One copy of the table per
 * context: the three candidate entries of a state are loaded before its context is known
 * (they depend on the state only) and the context selects one, so the chain from one
 * symbol to the next is a few ALU operations, not two dependent loads. */
#define DECC(x, j)                                                           \
    do {                                                                     \
        const uint32_t c0_ = T0[x], c1_ = T1[x], c2_ = T2[x];                \
        unsigned d_ = al + ((j) >= w ? A[dst[(j) - w]] : 0u);                \
        bad |= umask >> d_;                                                  \
        uint32_t e_ = d_ > 2 ? c2_ : c1_;                                    \
        e_ = d_ == 0 ? c0_ : e_;                                             \
        dst[j] = (uint8_t)(e_ >> 16);                                        \
        unsigned nb_ = (e_ >> 24) & 15u;                                     \
        uint32_t bits_ = (uint32_t)((c >> 1) >> (63 - nb_));                 \
        c <<= nb_;                                                           \
        cnt -= (int)nb_;                                                     \
        x = (e_ & 0xFFFFu) + bits_;                                          \
        al = e_ >> 28;                                                       \
        if (++col == w) { col = 0; al = 0; }                                 \
    } while (0)

#define REFILL_FAST()                                                        \
    do {                                                                     \
        c |= rd64(b + bp - 8) >> cnt;                                        \
        bp -= (63 - cnt) >> 3;                                               \
        cnt |= 56;                                                           \
    } while (0)

FSE_INLINE int ctx_core(uint8_t *dst, size_t n, size_t w, const uint32_t *T0,
                        const uint32_t *T1, const uint32_t *T2, unsigned umask, const uint8_t *A, unsigned R, const uint8_t *b,
                        size_t bs, size_t H, unsigned S)
{
    const uint8_t last = b[bs - 1];
    if (!last) return FSE_ERR_NO_SENTINEL;
    const int64_t E = 8 * (int64_t)(bs - 1) + highbit32(last);
    if (E < (int64_t)H + (int64_t)(S * R)) return FSE_ERR_TRUNCATED;
    int64_t bp = (int64_t)bs - 8;
    uint64_t c = 0;
    if (bs >= 8) c = rd64(b + bs - 8);
    else for (size_t j = 0; j < bs; j++) c |= (uint64_t)b[j] << (8 * (j + 8 - bs));
    c <<= (unsigned)(8 * (int64_t)bs - E);
    int cnt = 64 - (int)(8 * (int64_t)bs - E);
    uint32_t x0 = 0, x1 = 0, x2 = 0, x3 = 0;
#define RDST(x) do { x = (uint32_t)((c >> 1) >> (63 - R)); c <<= R; cnt -= (int)R; } while (0)
    RDST(x0);
    if (S >= 2) RDST(x1);
    if (S == 4) { RDST(x2); RDST(x3); }
#undef RDST
    unsigned bad = 0, al = 0;
    size_t col = 0, i = 0;
    while (i + 4 <= n && bp >= 8) {
        REFILL_FAST();
        if (S == 1) {
            DECC(x0, i); DECC(x0, i + 1); DECC(x0, i + 2); DECC(x0, i + 3);
        } else if (S == 2) {
            DECC(x0, i); DECC(x1, i + 1); DECC(x0, i + 2); DECC(x1, i + 3);
        } else {
            DECC(x0, i); DECC(x1, i + 1); DECC(x2, i + 2); DECC(x3, i + 3);
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
        uint32_t x;
        switch (i & (S - 1)) {
        case 0: x = x0; break;
        case 1: x = x1; break;
        case 2: x = x2; break;
        default: x = x3; break;
        }
        unsigned d = al + (i >= w ? A[dst[i - w]] : 0u);
        uint32_t ec = d == 0 ? T0[x] : d <= 2 ? T1[x] : T2[x];
        if (8 * bp + cnt - (int64_t)((ec >> 24) & 15u) < (int64_t)H) return FSE_ERR_TRUNCATED;
        DECC(x, i);
        switch (i & (S - 1)) {
        case 0: x0 = x; break;
        case 1: x1 = x; break;
        case 2: x2 = x; break;
        default: x3 = x; break;
        }
    }
    if (bad & 1) return FSE_ERR_CTX;
    int64_t top = 8 * bp + cnt;
    if (top > (int64_t)H) return FSE_ERR_TRAILING;
    if (top < (int64_t)H) return FSE_ERR_TRUNCATED;
    const uint64_t hv = hash_symbols(dst, n);
    const uint32_t M = (1u << R) - 1;
    uint32_t badx = x0 ^ (uint32_t)(hv & M);
    if (S >= 2) badx |= x1 ^ (uint32_t)((hv >> 16) & M);
    if (S == 4) badx |= (x2 ^ (uint32_t)((hv >> 32) & M)) | (x3 ^ (uint32_t)((hv >> 48) & M));
    if (badx) return FSE_ERR_FINAL_STATE;
    return 0;
}

#define CTX_ARGS uint8_t *dst, size_t n, size_t w, const uint32_t *T0, const uint32_t *T1, \
                 const uint32_t *T2, unsigned umask, const uint8_t *A, unsigned R,       \
                 const uint8_t *b, size_t bs, size_t H, unsigned S
#define CTX_CALL(s) ctx_core(dst, n, w, T0, T1, T2, umask, A, R, b, bs, H, s)

static int ctx_payload_generic(CTX_ARGS)
{
    switch (S) {
    case 1: return CTX_CALL(1);
    case 2: return CTX_CALL(2);
    default: return CTX_CALL(4);
    }
}

#if FSE_HAVE_BMI2
__attribute__((target("bmi,bmi2")))
static int ctx_payload_bmi2(CTX_ARGS)
{
    switch (S) {
    case 1: return CTX_CALL(1);
    case 2: return CTX_CALL(2);
    default: return CTX_CALL(4);
    }
}
#endif

int ctx_decode(uint8_t *dst, size_t n, size_t w, const cdesc *cd, const uint8_t *src,
               size_t size, size_t H)
{
    dentry T[FSE_CTX_COUNT][FSE_MAX_L];   /* one per table */
    uint32_t U[FSE_CTX_COUNT][FSE_MAX_L]; /* one per context (see DECC) */
    uint8_t A[256];
    const uint32_t L = 1u << cd->R;
    amap_build(A, cd->m);
    for (unsigned t = 0; t < cd->ntab; t++) {
        build_dtable(T[t], &cd->t[t]);
        for (uint32_t j = 0; j < L; j++) T[t][j].nb |= (uint8_t)(A[T[t][j].sym] << 4);
    }
    unsigned umask = 0;   /* bit d: sums d that select an unused context */
    for (unsigned k = 0; k < FSE_CTX_COUNT; k++) {
        unsigned tab = cd->tab[k];
        memcpy(U[k], T[tab == CTX_UNUSED ? 0 : tab], L * sizeof(uint32_t));
        if (tab == CTX_UNUSED)
            for (unsigned d = 0; d < 7; d++) if (CT[d] == k) umask |= 1u << d;
    }
    unsigned S = fse_states_for_n(n), R = cd->R;
#if FSE_HAVE_BMI2
    if (have_bmi2) return ctx_payload_bmi2(dst, n, w, U[0], U[1], U[2], umask, A, R, src, size, H, S);
#endif
    return ctx_payload_generic(dst, n, w, U[0], U[1], U[2], umask, A, R, src, size, H, S);
}
