/*
 * fse_decode.c -- stream header parsing (fse_stream_info), fse_decompress
 * and the tANS decoder loop (generic code and a BMI2 clone picked at run
 * time).  See fse_internal.h for the stream layout.
 */
#include "fse_internal.h"

/* ------------------------------------------------------------------------ */
/* decoder                                                                    */
/* ------------------------------------------------------------------------ */
typedef struct {
    uint64_t n;
    int mode;
    int ctx;           /* context variant (mode 0 + count-code escape) */
    tdesc t;
    cdesc c;
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
    hi->ctx = 0;
again:
    if ((e = br_get(&br, 1, &v))) return FSE_ERR_VARINT;
    if (!v) {
        if ((e = br_get(&br, 15, &v))) return FSE_ERR_VARINT;
        hi->n = v;
    } else {
        uint32_t b, low;
        if ((e = br_get(&br, 5, &b))) return FSE_ERR_VARINT;
        if (b == NCODE_CTX_ESCAPE && !hi->ctx) {   /* context stream: the count follows */
            if (hi->mode != FSE_MODE_TANS5) return FSE_ERR_MODE;
            hi->ctx = 1;
            goto again;
        }
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
    e = hi->ctx ? ctx_hdr_read(&br, &hi->c) : hdr_read(&br, &hi->t, (unsigned)hi->mode);
    if (e) return e;
    if (hi->ctx) hi->t.R = hi->c.R;
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
    if (mode) *mode = h.ctx ? FSE_MODE_TANS_CTX : h.mode;
    int tans = h.mode == FSE_MODE_TANS5 || h.mode == FSE_MODE_TANS8;
    if (tablelog) *tablelog = tans ? (int)h.t.R : 0;
    if (states) *states = tans ? (int)fse_states_for_n(h.n) : 0;
    return 0;
}

int fse_ctx_info(const uint8_t *src, size_t size, int *m, int tables[FSE_CTX_COUNT])
{
    hinfo h;
    int e = parse_header(src, size, &h);
    if (e) return e;
    if (!h.ctx) return FSE_ERR_MODE;
    if (m) *m = (int)h.c.m;
    for (unsigned k = 0; k < FSE_CTX_COUNT; k++)
        tables[k] = h.c.tab[k] == CTX_UNUSED ? -1 : (int)h.c.tab[k];
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

/* REFILL_FAST, the start and the careful refill repeat fse_ctxdec.c: shared, S=4 got 1-2 % slower */
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
        uint32_t x;
        dec_state(&x, S, i, x0, x1, x2, x3);
        if (8 * bp + cnt - (int64_t)T[x].nb < (int64_t)H) return FSE_ERR_TRUNCATED;
        DEC1(x, i);
        dec_set_state(x, S, i, &x0, &x1, &x2, &x3);
    }
    return dec_end(dst, n, 8 * bp + cnt, H, R, S, x0, x1, x2, x3);
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
    return fse_decompress_ctx(dst, n, src, size, 0);
}

int fse_decompress_ctx(uint8_t *dst, size_t n, const uint8_t *src, size_t size, size_t width)
{
    hinfo h;
    int e = parse_header(src, size, &h);
    if (e) return e;
    if (h.n != (uint64_t)n) return FSE_ERR_N_MISMATCH;
    if (width && n % width) return FSE_ERR_WIDTH;
    if (h.ctx) {
        if (!width) return FSE_ERR_NEED_WIDTH;
        return ctx_decode(dst, n, width, &h.c, src, size, h.hdr_bits);
    }
    if (h.mode == FSE_MODE_RAW) { if (n) memcpy(dst, src + h.data_off, n); return 0; }
    if (h.mode == FSE_MODE_RUN) { memset(dst, (int)h.run_sym, n); return 0; }
    dentry T[FSE_MAX_L];
    build_dtable(T, &h.t);
    /* the payload is read backwards from the end; positions count from src[0] */
    return decode_payload(dst, n, T, h.t.R, src, size, h.hdr_bits, fse_states_for_n(n));
}
