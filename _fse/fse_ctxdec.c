/*
 * fse_ctxdec.c -- decoder of the spatial-context variant (format and context rule:
 * fse_context.c, docs/entropy.md).  Called by fse_decompress_ctx (fse_decode.c) after the
 * header, including the context tables, has been parsed and validated.
 */
#include "fse_internal.h"

/* ------------------------------------------------------------------------ */
/* decoder                                                                    */
/* ------------------------------------------------------------------------ */
/* Entries of the context tables as uint32 (the dentry layout): base in bits 0-15, sym in
 * 16-23, nb in 24-27 and a(sym) = min(|sym - m|, 3) in 28-29.  One copy of the table per
 * context: the three candidate entries of a state are loaded before its context is known
 * (they depend on the state only) and the context selects one (conditional moves), so the
 * chain from one symbol to the next is a few ALU operations, not two dependent loads.
 * (Measured alternatives, all slower: a table pointer per d; branches on the context;
 * masks instead of conditional moves; thresholds compared with the previous entry.) */
#define UP_ANY(j) ((j) >= w ? A[dst[(j) - w]] : 0u)   /* upper neighbour's a, 0 in row 0 */
#define UP_IN(j) A[dst[(j) - w]]                        /* j >= w */
#define DECC(x, j, UP)                                                       \
    do {                                                                     \
        const uint32_t c0_ = T0[x], c1_ = T1[x], c2_ = T2[x];                \
        unsigned d_ = al + UP(j);                                            \
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

/* REFILL_FAST, the start and the careful refill repeat fse_decode.c: shared, S=4 got 1-2 % slower */
#define REFILL_FAST()                                                        \
    do {                                                                     \
        c |= rd64(b + bp - 8) >> cnt;                                        \
        bp -= (63 - cnt) >> 3;                                               \
        cnt |= 56;                                                           \
    } while (0)

FSE_INLINE int ctx_core(uint8_t *dst, size_t n, size_t w, const uint32_t *T0,
                        const uint32_t *T1, const uint32_t *T2, unsigned umask,
                        const uint8_t *A, unsigned R, const uint8_t *b, size_t bs, size_t H,
                        unsigned S)
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
    unsigned bad = 0, al = 0;   /* al: a(left neighbour), 0 in column 0 */
    size_t col = 0, i = 0;
    while (i < n) {
        /* fast path: groups of 4 from row 1 on, while 8 bytes can be loaded */
        if (i >= w && !(i & 3)) {
            while (i + 4 <= n && bp >= 8) {
                REFILL_FAST();
                if (S == 1) {
                    DECC(x0, i, UP_IN); DECC(x0, i + 1, UP_IN);
                    DECC(x0, i + 2, UP_IN); DECC(x0, i + 3, UP_IN);
                } else if (S == 2) {
                    DECC(x0, i, UP_IN); DECC(x1, i + 1, UP_IN);
                    DECC(x0, i + 2, UP_IN); DECC(x1, i + 3, UP_IN);
                } else {
                    DECC(x0, i, UP_IN); DECC(x1, i + 1, UP_IN);
                    DECC(x2, i + 2, UP_IN); DECC(x3, i + 3, UP_IN);
                }
                i += 4;
            }
            if (i >= n) break;
        }
        /* one symbol with every check: row 0, alignment, the start of the buffer, the tail */
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
        dec_state(&x, S, i, x0, x1, x2, x3);
        unsigned d = al + UP_ANY(i);
        uint32_t ec = d == 0 ? T0[x] : d <= 2 ? T1[x] : T2[x];
        if (8 * bp + cnt - (int64_t)((ec >> 24) & 15u) < (int64_t)H) return FSE_ERR_TRUNCATED;
        DECC(x, i, UP_ANY);
        dec_set_state(x, S, i, &x0, &x1, &x2, &x3);
        i++;
    }
    if (bad & 1) return FSE_ERR_CTX;
    return dec_end(dst, n, 8 * bp + cnt, H, R, S, x0, x1, x2, x3);
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
    dentry T[FSE_MAX_L];                  /* one table at a time */
    uint32_t U[FSE_CTX_COUNT][FSE_MAX_L]; /* one per context (see DECC) */
    uint8_t A[256];
    const uint32_t L = 1u << cd->R;
    amap_build(A, cd->m);
    unsigned first = FSE_CTX_COUNT;       /* a context with table 0 */
    for (unsigned t = 0; t < cd->ntab; t++) {
        build_dtable(T, &cd->t[t]);
        for (uint32_t j = 0; j < L; j++) T[j].nb |= (uint8_t)(A[T[j].sym] << 4);
        for (unsigned k = 0; k < FSE_CTX_COUNT; k++) {
            if (cd->tab[k] != t) continue;
            memcpy(U[k], T, L * sizeof(uint32_t));
            if (!t && first > k) first = k;
        }
    }
    unsigned umask = 0;   /* bit d: sums d that select an unused context (fails the stream) */
    for (unsigned k = 0; k < FSE_CTX_COUNT; k++) {
        if (cd->tab[k] != CTX_UNUSED) continue;
        memcpy(U[k], U[first], L * sizeof(uint32_t));   /* any valid table: never accepted */
        for (unsigned d = 0; d < 7; d++) if (CT[d] == k) umask |= 1u << d;
    }
    unsigned S = fse_states_for_n(n), R = cd->R;
#if FSE_HAVE_BMI2
    if (have_bmi2)
        return ctx_payload_bmi2(dst, n, w, U[0], U[1], U[2], umask, A, R, src, size, H, S);
#endif
    return ctx_payload_generic(dst, n, w, U[0], U[1], U[2], umask, A, R, src, size, H, S);
}
