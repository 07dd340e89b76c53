/*
 * fse.h -- table-based ANS (Finite State Entropy design) coder for one
 * channel of uint8 symbols.  Written for PIL_l3ic; see docs/entropy.md for
 * the stream format.
 *
 * Every function is reentrant (no global mutable state after fse_init()),
 * does not allocate, and never reads or writes outside the buffers it is
 * given.  Errors are negative return codes (FSE_ERR_*), never asserts.
 */
#ifndef L3IC_FSE_H
#define L3IC_FSE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FSE_MAX_N          0x7FFFFFFFu   /* largest channel length (2^31 - 1) */
#define FSE_MIN_TABLELOG   5
#define FSE_MAX_TABLELOG   12
#define FSE_MAX_HEADER     5             /* bytes of mode + symbol count (raw/run header) */

/* stream modes (2 bits at the start of the byte after the length field) */
#define FSE_MODE_TANS5     0   /* tANS, symbols 0..31: 5-bit symbol fields */
#define FSE_MODE_TANS8     1   /* tANS, symbols 0..255: 8-bit symbol fields */
#define FSE_MODE_RUN       2   /* one symbol repeated n times */
#define FSE_MODE_RAW       3   /* the n bytes stored as they are */
/* reported by fse_stream_info only (on the wire: mode 0 plus the context escape,
 * see docs/entropy.md): tANS with one table per spatial context */
#define FSE_MODE_TANS_CTX  4
#define FSE_CTX_COUNT      3   /* contexts of the context variant */

enum {
    FSE_ERR_EMPTY        = -1,   /* zero-length stream */
    FSE_ERR_VARINT       = -2,   /* symbol count field truncated or not canonical */
    FSE_ERR_N_TOO_LARGE  = -3,   /* length field above FSE_MAX_N */
    FSE_ERR_N_MISMATCH   = -4,   /* stored symbol count != expected count */
    FSE_ERR_MODE         = -5,   /* mode byte invalid (reserved bits set / missing) */
    FSE_ERR_SIZE         = -6,   /* raw/run stream has the wrong total size */
    FSE_ERR_HDR_TRUNC    = -7,   /* table description runs past the end */
    FSE_ERR_TABLELOG     = -8,   /* table log out of bounds */
    FSE_ERR_SYMBOLS      = -9,   /* symbol range invalid */
    FSE_ERR_COUNTS       = -10,  /* normalised counts invalid (sum, range) */
    FSE_ERR_NO_SENTINEL  = -11,  /* last byte is zero: no end marker */
    FSE_ERR_TRUNCATED    = -12,  /* bit stream ended before n symbols */
    FSE_ERR_TRAILING     = -13,  /* bits left over after n symbols */
    FSE_ERR_FINAL_STATE  = -14,  /* decoder did not end in the initial state */
    FSE_ERR_DST_SMALL    = -15,  /* output capacity too small (encoder) */
    FSE_ERR_TOO_FEW      = -16,  /* tANS stream for fewer than 2 symbols */
    FSE_ERR_N_RANGE      = -17,  /* n above FSE_MAX_N (encoder input) */
    FSE_ERR_NEED_WIDTH   = -18,  /* context stream decoded without a row width */
    FSE_ERR_WIDTH        = -19,  /* symbol count not a multiple of the row width */
    FSE_ERR_CTX          = -20,  /* context table layout invalid / symbol in an unused context */
    FSE_ERR_CLASS        = -21,  /* class coder: a class >= the number of tables */
    FSE_ERR_VALUE        = -22,  /* class coder (encoder): |value| > FSE_CLASS_MAX_VALUE */
    FSE_ERR_ESCAPE       = -23,  /* class coder (decoder): escape payload too long */
    FSE_ERR_TABLE_SHAPE  = -24,  /* class tables: classes, symbols or table log out of range */
    FSE_ERR_TABLE_COUNTS = -25,  /* class tables: escape count 0, or a row not summing to 2^R */
    FSE_ERR_TABLE_MEM    = -26,  /* class tables: storage too small or misaligned */
    FSE_ERR_PMF          = -27,  /* fse_normalize_pmf: probabilities negative / not finite */
    FSE_ERR_ESCAPE_CANON = -28,  /* class coder (decoder): escape of a directly codeable value */
};

/* Build the static lookup tables; call once before anything else (idempotent). */
void fse_init(void);

/* Worst-case compressed size for n symbols (raw mode + slack). */
size_t fse_compress_bound(size_t n);

/* Compress n symbols.  cap must be >= fse_compress_bound(n).
 * Returns the stream size (> 0) or a negative FSE_ERR_*. */
ptrdiff_t fse_compress(uint8_t *dst, size_t cap, const uint8_t *src, size_t n);

/* Parse the stream header without decoding.  Any pointer may be NULL.
 * mode: FSE_MODE_*; tablelog/states: 0 unless tANS.
 * Returns 0 or a negative FSE_ERR_* (header errors only). */
int fse_stream_info(const uint8_t *src, size_t size, uint64_t *n, int *mode,
                    int *tablelog, int *states);

/* Context streams only (else FSE_ERR_MODE): the reference symbol m and, per context
 * 0..FSE_CTX_COUNT-1, the index of its table (0, 1, ...) or -1 if no symbol has it.
 * Returns 0 or a negative FSE_ERR_*. */
int fse_ctx_info(const uint8_t *src, size_t size, int *m, int tables[FSE_CTX_COUNT]);

/* Decompress a stream that must hold exactly n symbols into dst[0..n).
 * Returns 0 or a negative FSE_ERR_*; dst contents are unspecified on error. */
int fse_decompress(uint8_t *dst, size_t n, const uint8_t *src, size_t size);

/* Context variant (fse_context.c): the n symbols are rows of width symbols
 * (n % width == 0).  fse_compress_ctx writes the plain stream of fse_compress,
 * or the context variant when that is smaller; cap must be >=
 * fse_compress_bound_ctx(n); width 0 means fse_compress.
 * fse_decompress_ctx decodes any stream; width 0 = no width given (a context
 * stream then fails with FSE_ERR_NEED_WIDTH); a width that does not divide n
 * fails with FSE_ERR_WIDTH.  fse_decompress(...) = fse_decompress_ctx(..., 0). */
size_t fse_compress_bound_ctx(size_t n);
ptrdiff_t fse_compress_ctx(uint8_t *dst, size_t cap, const uint8_t *src, size_t n, size_t width);
int fse_decompress_ctx(uint8_t *dst, size_t n, const uint8_t *src, size_t size, size_t width);

/* Number of interleaved tANS states used for a channel of n symbols. */
unsigned fse_states_for_n(uint64_t n);

/* Batches (threads: how many threads at most; the call may use fewer for
 * little work).  Compress: row i of src (count x n) goes to dst + i*cap
 * (cap >= fse_compress_bound(n)), its size or error to sizes[i].
 * Decompress: blobs[i] (lens[i] bytes) must hold n symbols; they go to
 * out + i*n, the status to errs[i]. */
/* width: symbols per row for the context variant, 0 = none (then cap >=
 * fse_compress_bound(n), else cap >= fse_compress_bound_ctx(n)). */
void fse_compress_batch(uint8_t *dst, size_t cap, ptrdiff_t *sizes, const uint8_t *src,
                        size_t count, size_t n, size_t width, int threads);
void fse_decompress_batch(uint8_t *out, int *errs, const uint8_t *const *blobs, const size_t *lens,
                          size_t count, size_t n, size_t width, int threads);

/* ---- class coder: static tables shipped with a model (docs/entropy.md, "Class coder").
 * A stream codes n signed values; value i is coded with the table of its class classes[i]
 * (known to both sides).  Table symbol j <= 2E codes the value j - E, symbol 2E+1 = S-1 is
 * the escape: Exp-Golomb(|v|) and a sign bit (v != 0 only) follow in the bit stream.  Values
 * with |v| > E or whose symbol has count 0 in their class are escaped.  The stream stores
 * neither n nor the tables; n = 0 is the empty stream. */
#define FSE_CLASS_MAX_CLASSES 256
#define FSE_CLASS_MIN_SYMBOLS 4
#define FSE_CLASS_MAX_SYMBOLS 256
#define FSE_CLASS_MAX_VALUE   (1 << 20)   /* largest |value| */
typedef struct fse_class_tables fse_class_tables;

/* Bytes of storage for a table set, 0 if the shape is invalid (classes 1..256, symbols even
 * in 4..256 and <= 2^table_log, table_log FSE_MIN_TABLELOG..FSE_MAX_TABLELOG). */
size_t fse_class_tables_size(unsigned classes, unsigned symbols, unsigned table_log);
/* Build the coding tables in mem (size bytes, 16-byte aligned, e.g. from malloc; it must not
 * move afterwards: the tables hold pointers into it) from counts (classes x symbols, row-major;
 * value counts >= 0, the escape count (last column) >= 1, every row summing to 2^table_log).
 * 0 or FSE_ERR_TABLE_*. */
int fse_class_tables_init(void *mem, size_t size, const uint32_t *counts, unsigned classes,
                          unsigned symbols, unsigned table_log);
/* Worst-case stream size for n values (7 n + 64). */
size_t fse_class_bound(size_t n);
/* Returns the stream size (0 for n = 0) or FSE_ERR_CLASS / FSE_ERR_VALUE / FSE_ERR_N_RANGE /
 * FSE_ERR_DST_SMALL (cap < fse_class_bound(n)). */
ptrdiff_t fse_compress_classes(uint8_t *dst, size_t cap, const int32_t *values,
                               const uint8_t *classes, size_t n, const fse_class_tables *t);
/* Decode n values into dst; 0 or a negative FSE_ERR_* (FSE_ERR_CLASS for a bad class). */
int fse_decompress_classes(int32_t *dst, const uint8_t *classes, size_t n, const uint8_t *src,
                           size_t size, const fse_class_tables *t);
/* Counts q[0..symbols-1] summing to 2^table_log; p need not be normalised.  min_count 1:
 * every q >= 1, maximising sum p log q (minimum sum p log(p/q)); symbols 1..2^table_log.
 * min_count 0 (class table rows: symbols even, >= 4, the last one the escape): value
 * symbols may get 0, their mass then charged the escape's code and payload bits; the
 * escape keeps >= 1 (fse_class.c).  0 or an error (FSE_ERR_TABLE_SHAPE, FSE_ERR_PMF). */
int fse_normalize_pmf(uint32_t *q, const double *p, unsigned symbols, unsigned table_log,
                      unsigned min_count);
/* Batches of count streams of n values (row i of values / classes, count x n); as
 * fse_compress_batch / fse_decompress_batch (cap >= fse_class_bound(n)). */
void fse_compress_classes_batch(uint8_t *dst, size_t cap, ptrdiff_t *sizes, const int32_t *values,
                                const uint8_t *classes, size_t count, size_t n,
                                const fse_class_tables *t, int threads);
void fse_decompress_classes_batch(int32_t *out, int *errs, const uint8_t *const *blobs,
                                  const size_t *lens, const uint8_t *classes, size_t count,
                                  size_t n, const fse_class_tables *t, int threads);

/* Online processors (for threads = "all cores"). */
int fse_cpu_count(void);

/* Human-readable message for an error code. */
const char *fse_error_string(int code);

#ifdef __cplusplus
}
#endif
#endif
