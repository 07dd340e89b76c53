/*
 * fse_classdec.c -- decoder of the class coder (format: fse_class.c, docs/entropy.md
 * "Class coder").  The stream has no header: the payload is read backwards from the end
 * marker exactly as plain tANS with a table description of zero bits, each value with the
 * table of its class; an escape symbol's payload is read right after its state bits.
 */
#include "fse_internal.h"

#if defined(__GNUC__)
#define FSE_NOINLINE __attribute__((noinline))
#else
#define FSE_NOINLINE
#endif

/* reading state: stream bits [8 bp, 8 bp + cnt) left-aligned in c (as in decode_core) */
typedef struct { uint64_t c; int cnt; int64_t bp; } brev;

/* REFILL_FAST and the careful refill repeat fse_decode.c (shared, its loops got slower) */
#define REFILL_FAST()                                                        \
    do {                                                                     \
        c |= rd64(b + bp - 8) >> cnt;                                        \
        bp -= (63 - cnt) >> 3;                                               \
        cnt |= 56;                                                           \
    } while (0)

#define REFILL_CAREFUL()                                                     \
    do {                                                                     \
        int k_ = (63 - cnt) >> 3;                                            \
        if (k_ > bp) k_ = (int)bp;                                           \
        for (int j_ = 0; j_ < k_; j_++)                                      \
            c |= (uint64_t)b[bp - 1 - j_] << (56 - cnt - 8 * j_);            \
        bp -= k_;                                                            \
        cnt += 8 * k_;                                                       \
    } while (0)

/* The payload of an escape (rare: out of the hot loop): z <= CLASS_ESC_ZEROS zero bits, the
 * z + 1 bits of u + 1 = |v| + 1, then a sign bit if v != 0; |v| must not exceed 2^20, and v
 * must not be a value its class codes directly (row: the class's encoder transforms, whose
 * esc flag marks the value symbols of count 0). */
static FSE_NOINLINE int esc_read(brev *r, const uint8_t *b, unsigned E, const symtt *row,
                                 int32_t *out)
{
    uint64_t c = r->c;
    int cnt = r->cnt;
    int64_t bp = r->bp;
    if (bp >= 8) REFILL_FAST();
    else if (bp > 0) REFILL_CAREFUL();
    /* bits of the stream in c: cnt (>= 56) while bp > 0, else 8 bp + cnt (the rest are 0) */
    const int64_t have = bp > 0 ? cnt : 8 * bp + cnt;
    const unsigned z = c ? (unsigned)__builtin_clzll(c) : 64u;
    if (z > CLASS_ESC_ZEROS) return (int64_t)z < have ? FSE_ERR_ESCAPE : FSE_ERR_TRUNCATED;
    const unsigned nb = 2 * z + 1;
    if ((int64_t)nb > have) return FSE_ERR_TRUNCATED;
    const uint32_t mag = (uint32_t)(c >> (64 - nb)) - 1;
    if (mag > FSE_CLASS_MAX_VALUE) return FSE_ERR_ESCAPE;
    c <<= nb;
    uint32_t neg = 0;
    if (mag) {   /* no sign bit for 0: there is no negative zero */
        if ((int64_t)nb + 1 > have) return FSE_ERR_TRUNCATED;
        neg = (uint32_t)(c >> 63);
        c <<= 1;
    }
    const int32_t v = neg ? -(int32_t)mag : (int32_t)mag;
    if (mag <= E && !row[(int64_t)v + E].esc) return FSE_ERR_ESCAPE_CANON;
    *out = v;
    r->c = c;
    r->cnt = cnt - (int)nb - (mag != 0);
    r->bp = bp;
    return 0;
}

/* one value: its class's table entry e for state x; the next state into x */
#define DSTEP(e, x, j)                                                       \
    do {                                                                     \
        dst[j] = (int32_t)(e).sym - (int32_t)E;                              \
        unsigned nb_ = (e).nb;                                               \
        uint32_t bits_ = (uint32_t)((c >> 1) >> (63 - nb_));                 \
        c <<= nb_;                                                           \
        cnt -= (int)nb_;                                                     \
        x = (e).base + bits_;                                                \
    } while (0)
/* the same in the fast path; an escape symbol jumps to its payload */
#define DECC(x, j)                                                           \
    do {                                                                     \
        const dentry e_ = T[((size_t)cls[j] << R) + x];                      \
        DSTEP(e_, x, j);                                                     \
        if (FSE_UNLIKELY(e_.sym == esc)) { i = (j); goto escape; }           \
    } while (0)

FSE_INLINE int class_core(int32_t *dst, const uint8_t *cls, size_t n, const dentry *T,
                          unsigned R, unsigned E, const uint8_t *b, size_t bs, unsigned S,
                          const symtt *const *rows)
{
    const unsigned esc = 2 * E + 1;
    const uint8_t last = b[bs - 1];
    if (!last) return FSE_ERR_NO_SENTINEL;
    const int64_t top = 8 * (int64_t)(bs - 1) + highbit32(last);
    if (top < (int64_t)(S * R)) return FSE_ERR_TRUNCATED;
    int64_t bp = (int64_t)bs - 8;
    uint64_t c = 0;
    if (bs >= 8) c = rd64(b + bs - 8);
    else for (size_t j = 0; j < bs; j++) c |= (uint64_t)b[j] << (8 * (j + 8 - bs));
    c <<= (unsigned)(8 * (int64_t)bs - top);   /* 1..8: end marker + padding */
    int cnt = 64 - (int)(8 * (int64_t)bs - top);
    uint32_t x0 = 0, x1 = 0, x2 = 0, x3 = 0;
#define RDST(x) do { x = (uint32_t)((c >> 1) >> (63 - R)); c <<= R; cnt -= (int)R; } while (0)
    RDST(x0);
    if (S >= 2) RDST(x1);
    if (S == 4) { RDST(x2); RDST(x3); }
#undef RDST
    size_t i = 0;
    while (i < n) {
        /* fast path: groups of 4 (48 state bits at most) while 8 bytes can be loaded */
        if (!(i & 3)) {
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
            if (i >= n) break;
        }
        /* one value with every check: alignment, the start of the buffer, the tail */
        if (bp >= 8) REFILL_FAST();
        else if (bp > 0) REFILL_CAREFUL();
        {
            uint32_t x;
            dec_state(&x, S, i, x0, x1, x2, x3);
            const dentry e = T[((size_t)cls[i] << R) + x];
            if (8 * bp + cnt - (int64_t)e.nb < 0) return FSE_ERR_TRUNCATED;
            DSTEP(e, x, i);
            dec_set_state(x, S, i, &x0, &x1, &x2, &x3);
            if (FSE_LIKELY(e.sym != esc)) { i++; continue; }
        }
    escape:   /* value i is an escape symbol (state already updated): its payload */
        {
            brev r = {c, cnt, bp};
            int er = esc_read(&r, b, E, rows[cls[i]], &dst[i]);
            if (er) return er;
            c = r.c; cnt = r.cnt; bp = r.bp;
        }
        i++;
    }
    return dec_end((const uint8_t *)dst, 4 * n, 8 * bp + cnt, 0, R, S, x0, x1, x2, x3);
}

#define DEC_ARGS int32_t *dst, const uint8_t *cls, size_t n, const dentry *T, unsigned R, \
                 unsigned E, const uint8_t *b, size_t bs, unsigned S, const symtt *const *rows

static int class_decode_generic(DEC_ARGS)
{
    switch (S) {
    case 1: return class_core(dst, cls, n, T, R, E, b, bs, 1, rows);
    case 2: return class_core(dst, cls, n, T, R, E, b, bs, 2, rows);
    default: return class_core(dst, cls, n, T, R, E, b, bs, 4, rows);
    }
}

#if FSE_HAVE_BMI2
__attribute__((target("bmi,bmi2")))
static int class_decode_bmi2(DEC_ARGS)
{
    switch (S) {
    case 1: return class_core(dst, cls, n, T, R, E, b, bs, 1, rows);
    case 2: return class_core(dst, cls, n, T, R, E, b, bs, 2, rows);
    default: return class_core(dst, cls, n, T, R, E, b, bs, 4, rows);
    }
}
#endif

int fse_decompress_classes(int32_t *dst, const uint8_t *classes, size_t n, const uint8_t *src,
                           size_t size, const fse_class_tables *t)
{
    if (!lg2_ready) fse_init();
    if (n > FSE_MAX_N) return FSE_ERR_N_RANGE;
    uint8_t cmax = 0;   /* every class must have a table (a max reduction: vectorised) */
    for (size_t i = 0; i < n; i++) cmax = classes[i] > cmax ? classes[i] : cmax;
    if (n && cmax >= t->K) return FSE_ERR_CLASS;
    if (!n) return size ? FSE_ERR_TRAILING : 0;   /* n = 0: the empty stream */
    if (!size) return FSE_ERR_EMPTY;
    const unsigned S = fse_states_for_n(n);
#if FSE_HAVE_BMI2
    if (have_bmi2)
        return class_decode_bmi2(dst, classes, n, t->dt, t->R, t->E, src, size, S, t->row);
#endif
    return class_decode_generic(dst, classes, n, t->dt, t->R, t->E, src, size, S, t->row);
}
