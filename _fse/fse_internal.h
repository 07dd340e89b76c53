/*
 * fse_internal.h -- internals shared by the C files of the table-based ANS
 * coder (Finite State Entropy design) for PIL_l3ic.  Not part of the API
 * (that is fse.h); nothing here is exported from the extension.
 *
 * Written from scratch for this project (no third-party coder vendored).
 * Stream format, design notes and measurements: docs/entropy.md.
 *
 *   fse_tables.c   fse_init (log2 table, CPU features), small public helpers,
 *                  count normalisation, table description, coding tables
 *   fse_hash.c     content hash + histogram (generic, BMI2, AVX2)
 *   fse_encode.c   fse_compress and the encoder loop (generic + BMI2 clone)
 *   fse_decode.c   header parsing, fse_decompress and the decoder loop
 *   fse_batch.c    the threaded batch calls
 *   fse_context.c  the spatial-context variant: header, fse_compress_ctx
 *   fse_ctxdec.c   its decoder
 *   fse_class.c    the class coder (static tables, no header): tables, encoder
 *   fse_classdec.c its decoder
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
#ifndef L3IC_FSE_INTERNAL_H
#define L3IC_FSE_INTERNAL_H

#include "fse.h"

#include <string.h>

#if defined(__GNUC__)
#define FSE_INLINE static inline __attribute__((always_inline))
#define FSE_LIKELY(x) __builtin_expect(!!(x), 1)
#define FSE_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define FSE_INLINE static inline
#define FSE_LIKELY(x) (x)
#define FSE_UNLIKELY(x) (x)
#endif

/* internal symbols shared between the C files: not exported from the shared object */
#if defined(__GNUC__) && !defined(_WIN32)
#define FSE_HIDDEN __attribute__((visibility("hidden")))
#else
#define FSE_HIDDEN
#endif

#define FSE_MAX_L (1u << FSE_MAX_TABLELOG)
#define RICE_ESC 6u          /* unary prefix length that switches to a plain R-bit count */

/* ------------------------------------------------------------------------ */
/* small helpers                                                              */
/* ------------------------------------------------------------------------ */
FSE_INLINE uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; } /* LE host */
FSE_INLINE void wr64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
FSE_INLINE unsigned highbit32(uint32_t v) { return 31u - (unsigned)__builtin_clz(v); } /* v > 0 */
FSE_INLINE unsigned bitlen32(uint32_t v) { return v ? highbit32(v) + 1u : 0u; }

#if !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
#error "the fse coder assumes a little-endian host"
#endif

/* set up by fse_init() (fse_tables.c) */
FSE_HIDDEN extern float lg2[FSE_MAX_L + 2];   /* lg2[i] = log2(i), lg2[0] unused */
FSE_HIDDEN extern int lg2_ready;

/* x86-64 with GCC/Clang: the hot loops are also compiled for BMI2 and picked at run time */
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(FSE_NO_BMI2)
#define FSE_HAVE_BMI2 1
FSE_HIDDEN extern int have_bmi2;
FSE_HIDDEN extern int have_avx2;
#else
#define FSE_HAVE_BMI2 0
#endif

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

/* forward bit reader with bounds checks (stream header and table description only) */
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

/* ------------------------------------------------------------------------ */
/* tables                                                                     */
/* ------------------------------------------------------------------------ */
/* table description (format: fse_tables.c): table log R, symbol range
 * [lo, hi], the most frequent symbol, Rice parameter offset d, and the
 * normalised counts q[lo..hi] (sum 2^R) */
typedef struct {
    unsigned R, lo, hi, peak, d, small;
    uint32_t q[256];
} tdesc;

/* decoder table entry: state x decodes sym, reads nb bits, next state = base + bits */
typedef struct { uint16_t base; uint8_t sym; uint8_t nb; } dentry;
/* encoder symbol transform: nb = (x + deltaNb) >> 16, next x = stp[x >> nb] */
/* esc: class coder only, 1 where the symbol is coded as the escape followed by a payload:
 * the escape itself and the value symbols of count 0 (stp and deltaNb copied from the
 * escape's); 0 for the others (the plain coder leaves it unset and never reads it) */
typedef struct { const uint16_t *stp; uint32_t deltaNb; uint32_t esc; } symtt;

typedef struct {
    /* state table at st[FSE_MAX_L ..]: stp = slots - q stays inside the array */
    uint16_t st[2 * FSE_MAX_L];
    symtt tt[256];
} etable;

/* fse_tables.c */
FSE_HIDDEN void normalize(uint32_t *q, const uint32_t *cnt, unsigned lo, unsigned hi,
                          uint64_t n, unsigned R);
FSE_HIDDEN unsigned hdr_cost(tdesc *t);              /* chooses t->d */
FSE_HIDDEN void hdr_write(bitw *w, const tdesc *t);
FSE_HIDDEN int hdr_read(bitr *r, tdesc *t, unsigned mode);   /* after mode and n */
/* the description without the 3-bit table log (t->R and t->small set by the caller) */
FSE_HIDDEN unsigned body_cost(tdesc *t);             /* chooses t->d */
FSE_HIDDEN void body_write(bitw *w, const tdesc *t);
FSE_HIDDEN int body_read(bitr *r, tdesc *t);
FSE_HIDDEN void build_dtable(dentry *T, const tdesc *t);
FSE_HIDDEN void build_etable(etable *E, const tdesc *t);
FSE_HIDDEN void build_etable_into(uint16_t *slots, symtt *tt, const tdesc *t);

/* fse_encode.c: the symbol count code */
FSE_HIDDEN unsigned ncode_bits(uint64_t n);
FSE_HIDDEN void ncode_put(bitw *w, uint64_t n);

/* context variant (fse_context.c, format in docs/entropy.md) */
#define NCODE_CTX_ESCAPE 1u   /* count code '1' + 5-bit length 1 (never a count): context stream */
typedef struct {
    unsigned m, R;             /* reference symbol, shared table log */
    unsigned ntab;             /* distinct tables (1..FSE_CTX_COUNT) */
    uint8_t tab[FSE_CTX_COUNT];   /* context -> table index; CTX_UNUSED: no symbol has it */
    tdesc t[FSE_CTX_COUNT];
} cdesc;
#define CTX_UNUSED 255u
#define CTX_SYMS 32u          /* the variant codes symbols 0..31 */
/* context of d = a(left) + a(up), a(s) = min(|s - m|, 3): 0 if d == 0, 1 if d <= 2, else 2 */
static const uint8_t CT[7] = {0, 1, 1, 2, 2, 2, 2};
FSE_INLINE void amap_build(uint8_t A[256], unsigned m)
{
    for (unsigned s = 0; s < 256; s++) {
        unsigned d = s > m ? s - m : m - s;
        A[s] = (uint8_t)(d > 3 ? 3 : d);
    }
}
/* after mode, escape and n (mode must be FSE_MODE_TANS5) */
FSE_HIDDEN int ctx_hdr_read(bitr *r, cdesc *c);
/* fse_ctxdec.c: payload of a context stream; H: header bits; n % w == 0 checked by the caller */
FSE_HIDDEN int ctx_decode(uint8_t *dst, size_t n, size_t w, const cdesc *c,
                          const uint8_t *src, size_t size, size_t H);

/* class coder (fse_class.c: tables and encoder, fse_classdec.c: decoder; format in
 * docs/entropy.md, "Class coder").  Escape payload, in the decoder's reading order: z zero
 * bits, the z + 1 bits of u + 1 = |v| + 1 (top bit 1), then a sign bit (1 = negative) only
 * if v != 0.  An escape of a value its class codes directly (|v| <= E, count > 0) is
 * invalid (FSE_ERR_ESCAPE_CANON): every accepted stream is the encoder's. */
#define CLASS_ESC_ZEROS 20u   /* longest zero run: u + 1 <= 2^20 + 1 < 2^21 */
struct fse_class_tables {
    unsigned K, S, R, E;                      /* classes, symbols (2E + 2), table log */
    const dentry *dt;                         /* decoder table of class k: dt + (k << R) */
    const symtt *row[FSE_CLASS_MAX_CLASSES];  /* encoder transforms of class k (S of them) */
};

/* fse_hash.c */
/* histogram of the symbols and the content hash, in one pass; returns the hash */
FSE_HIDDEN uint64_t histogram_hash(uint32_t h[256], const uint8_t *src, size_t n);
FSE_HIDDEN uint64_t hash_symbols(const uint8_t *src, size_t n);

/* ------------------------------------------------------------------------ */
/* pieces of the coding loops shared by the plain and the context cores      */
/* ------------------------------------------------------------------------ */
/* Used by encode_core (fse_encode.c) and ctx_encode_core (fse_context.c), decode_core
 * (fse_decode.c) and ctx_core (fse_ctxdec.c), where S is a constant.  They take the bit
 * buffer by value and write at most the states: so they inline to the same instructions as
 * the code written out (GCC 12, -O3).  As helpers that update the bit buffer through
 * pointers or a struct, the flush, the refills and the symbol steps changed the register
 * allocation of the hot loops (up to 4 % slower), so those stay in the cores. */
/* initial encoder state k (0..3): 2^R + R bits of the hash, 16 bits apart */
FSE_INLINE uint64_t enc_state(uint64_t hv, unsigned k, unsigned R)
{
    const uint64_t L = 1u << R;
    return L + ((hv >> (16 * k)) & (L - 1));
}

/* after symbol 0: the final states S-1 .. 1 in R bits and state 0 in R+1 bits (its top
 * bit is the end marker), then the last partial byte; w continues at the next byte */
FSE_INLINE int enc_finish(bitw *w, uint64_t acc, unsigned nacc, uint8_t *p, const uint8_t *lim,
                          uint64_t x0, uint64_t x1, uint64_t x2, uint64_t x3, unsigned R,
                          unsigned S)
{
    const uint64_t L = 1u << R;
    if (S == 4) {
        acc |= (x3 - L) << nacc; nacc += R;
        acc |= (x2 - L) << nacc; nacc += R;
        wr64(p, acc); p += nacc >> 3; acc >>= (nacc >> 3) * 8; nacc &= 7;   /* flush */
    }
    if (S >= 2) { acc |= (x1 - L) << nacc; nacc += R; }
    acc |= x0 << nacc; nacc += R + 1;
    wr64(p, acc); p += nacc >> 3; acc >>= (nacc >> 3) * 8; nacc &= 7;       /* flush */
    if (FSE_UNLIKELY(p > lim)) return FSE_ERR_DST_SMALL;
    wr64(p, acc);
    p += (nacc + 7) >> 3;
    w->p = p; w->acc = 0; w->nacc = 0;
    return 0;
}

/* after the last symbol (decoder): the payload must be consumed exactly (top: the bit
 * position reached), and every state must be back at its initial value, which the encoder
 * took from the hash of the symbols */
FSE_INLINE int dec_end(const uint8_t *dst, size_t n, int64_t top, size_t H, unsigned R,
                       unsigned S, uint32_t x0, uint32_t x1, uint32_t x2, uint32_t x3)
{
    if (top > (int64_t)H) return FSE_ERR_TRAILING;
    if (top < (int64_t)H) return FSE_ERR_TRUNCATED;
    const uint64_t hv = hash_symbols(dst, n);
    const uint32_t M = (1u << R) - 1;
    uint32_t bad = x0 ^ (uint32_t)(hv & M);
    if (S >= 2) bad |= x1 ^ (uint32_t)((hv >> 16) & M);
    if (S == 4) bad |= (x2 ^ (uint32_t)((hv >> 32) & M)) | (x3 ^ (uint32_t)((hv >> 48) & M));
    if (bad) return FSE_ERR_FINAL_STATE;
    return 0;
}

/* decoder, careful path: *x = the state of symbol i, and its update (a switch on i, not an
 * array: inlined, the states stay in registers) */
FSE_INLINE void dec_state(uint32_t *x, unsigned S, size_t i, uint32_t x0, uint32_t x1,
                          uint32_t x2, uint32_t x3)
{
    switch (i & (S - 1)) {
    case 0: *x = x0; break;
    case 1: *x = x1; break;
    case 2: *x = x2; break;
    default: *x = x3; break;
    }
}
FSE_INLINE void dec_set_state(uint32_t x, unsigned S, size_t i, uint32_t *x0, uint32_t *x1,
                              uint32_t *x2, uint32_t *x3)
{
    switch (i & (S - 1)) {
    case 0: *x0 = x; break;
    case 1: *x1 = x; break;
    case 2: *x2 = x; break;
    default: *x3 = x; break;
    }
}

#endif
