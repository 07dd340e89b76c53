/*
 * libFuzzer harness for the entropy decoder alone (_fse/fse_*.c), built by fuzz/build_sanitized.sh
 * with -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all.
 *
 * The input is one stream as it would appear in a channel of a .l3c file.  Checked properties:
 *   - fse_stream_info and fse_decompress never read outside the input (libFuzzer hands us an
 *     exact-size heap copy, so ASan catches any over-read) nor write outside dst (allocated with
 *     exactly n bytes);
 *   - they agree: decompress succeeds only if stream_info does, and with the n it reports;
 *     a wrong n (n - 1, n + 1) is refused with FSE_ERR_N_MISMATCH before anything is decoded;
 *   - streams declaring more than MAX_FUZZ_N symbols are only checked up to the allocation
 *     (run mode legitimately codes 2^31 - 1 symbols in 5 bytes);
 *   - every accepted stream round-trips: compress(decoded) decodes back to the same symbols
 *     (the encoder runs only on streams the decoder accepted, so the campaign stays a decoder
 *     campaign);
 *   - the decoder is deterministic (decoding twice gives the same bytes), and the batch call
 *     (fse_decompress_batch, two copies, up to two threads) agrees with the single call;
 *   - context streams (FSE_MODE_TANS_CTX) are refused without a width and with one that does
 *     not divide n, and decoded with a width taken from n (its largest divisor <= sqrt(n)),
 *     plain streams with that width too (same result as without); the round trip then goes
 *     through fse_compress_ctx with that width.
 *   - read as a class-coder input (2 bytes of n, little-endian, then the stream; value i has
 *     class (i / 3) % 4; fixed tables: those of fuzz/checks.class_tables), fse_decompress_classes
 *     reads only the stream (an exact-size copy) and writes only n values, the batch call
 *     agrees, and an accepted stream is byte for byte what fse_compress_classes writes for the
 *     decoded values (|v| <= 2^20).
 * Any violation calls abort(), which libFuzzer reports as a crash, as does an input that takes
 * more than LIMIT_CPU_S seconds of CPU time (a hang; libFuzzer's own -timeout is wall-clock and
 * fires when the campaign is merely paused or starved, so run_campaign.sh sets it far higher).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fse.h"

#define MAX_FUZZ_N (1u << 22)   /* symbols we are willing to allocate per input */
#define LIMIT_CPU_S 2.0

static void fail(const char *what, int code)
{
    fprintf(stderr, "fuzz_fse: %s (code %d: %s)\n", what, code, fse_error_string(code));
    abort();
}

/* the class coder's fixed tables: per class a Laplace shape over -6..6 (mass 0.98), escape 0.02,
 * normalised with min_count 0 (class 0 has zero counts: escapes of values inside -6..6) */
#define CLASS_K 4
#define CLASS_E 6
#define CLASS_S (2 * CLASS_E + 2)
#define CLASS_R 9
static const fse_class_tables *class_tables;

static void class_init(void)
{
    static const double scale[CLASS_K] = {0.3, 1.0, 3.0, 10.0};
    uint32_t q[CLASS_K * CLASS_S];
    for (int k = 0; k < CLASS_K; k++) {
        double p[CLASS_S], sum = 0.0;
        for (int v = -CLASS_E; v <= CLASS_E; v++) {
            p[v + CLASS_E] = exp(-abs(v) / scale[k]);
            sum += p[v + CLASS_E];
        }
        for (int j = 0; j <= 2 * CLASS_E; j++) p[j] = p[j] / sum * 0.98;
        p[CLASS_S - 1] = 0.02;
        int e = fse_normalize_pmf(q + k * CLASS_S, p, CLASS_S, CLASS_R, 0);
        if (e) fail("fse_normalize_pmf", e);
    }
    size_t size = fse_class_tables_size(CLASS_K, CLASS_S, CLASS_R);
    void *mem = malloc(size);
    int e = mem ? fse_class_tables_init(mem, size, q, CLASS_K, CLASS_S, CLASS_R) : -1;
    if (e) fail("fse_class_tables_init", e);
    class_tables = (const fse_class_tables *)mem;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    fse_init();
    class_init();
    return 0;
}

static void check_class(const uint8_t *data, size_t size)
{
    const size_t n = size >= 2 ? (size_t)data[0] | (size_t)data[1] << 8 : 0;
    const size_t ss = size >= 2 ? size - 2 : 0;
    uint8_t *stream = malloc(ss ? ss : 1), *cls = malloc(n ? n : 1);
    int32_t *out = malloc(n ? 4 * n : 4), *two = malloc(n ? 8 * n : 4);
    if (ss) memcpy(stream, data + 2, ss);   /* exact size: ASan sees any read outside it */
    for (size_t i = 0; i < n; i++) cls[i] = (uint8_t)((i / 3) % CLASS_K);
    int e = fse_decompress_classes(out, cls, n, stream, ss, class_tables);
    if (e > 0) fail("decompress_classes returned a positive code", e);
    {   /* the batch call (two copies, up to two threads) agrees */
        uint8_t *cls2 = malloc(n ? 2 * n : 1);
        const uint8_t *blobs[2] = {stream, stream};
        size_t lens[2] = {ss, ss};
        int errs[2] = {1, 1};
        if (n) { memcpy(cls2, cls, n); memcpy(cls2 + n, cls, n); }
        fse_decompress_classes_batch(two, errs, blobs, lens, cls2, 2, n, class_tables, 2);
        if (errs[0] != e || errs[1] != e) fail("class batch status differs", errs[0]);
        if (e == 0 && n && (memcmp(out, two, 4 * n) || memcmp(out, two + n, 4 * n)))
            fail("class batch output differs", 0);
        free(cls2);
    }
    if (e == 0) {   /* canonical: re-encoding gives the stream back */
        for (size_t i = 0; i < n; i++)
            if (out[i] > FSE_CLASS_MAX_VALUE || out[i] < -FSE_CLASS_MAX_VALUE)
                fail("class value above 2^20", out[i]);
        size_t cap = fse_class_bound(n);
        uint8_t *enc = malloc(cap);
        ptrdiff_t r = fse_compress_classes(enc, cap, out, cls, n, class_tables);
        if (r < 0) fail("compress_classes failed on decoded values", (int)r);
        if ((size_t)r != ss || (ss && memcmp(enc, stream, ss)))
            fail("accepted class stream differs from the encoder's", 0);
        free(enc);
    }
    free(stream); free(cls); free(out); free(two);
}

/* the width the harness decodes with: the largest divisor of n up to sqrt(n) (1 for primes) */
static size_t pick_width(uint64_t n)
{
    size_t w = 1;
    for (size_t d = 2; (uint64_t)d * d <= n; d++) if (n % d == 0) w = d;
    return w;
}

static int check_one(const uint8_t *data, size_t size)
{
    uint64_t n = 0;
    int mode = -1, tablelog = -1, states = -1;
    int info = fse_stream_info(data, size, &n, &mode, &tablelog, &states);

    if (info != 0) {
        if (info > 0) fail("stream_info returned a positive code", info);
        /* a rejected header must be rejected by decompress too, whatever n the caller expects */
        uint8_t small[64];
        for (size_t want = 0; want < sizeof small; want += 21) {
            int e = fse_decompress(small, want, data, size);
            if (e == 0) fail("decompress accepted a stream that stream_info rejected", info);
        }
        return 0;
    }
    if (mode < FSE_MODE_TANS5 || mode > FSE_MODE_TANS_CTX) fail("stream_info: bad mode", mode);
    if (n > FSE_MAX_N) fail("stream_info: n above FSE_MAX_N", (int)(n & 0x7fffffff));
    const int ctx = mode == FSE_MODE_TANS_CTX;
    if (mode == FSE_MODE_TANS5 || mode == FSE_MODE_TANS8 || ctx) {
        if (tablelog < FSE_MIN_TABLELOG || tablelog > FSE_MAX_TABLELOG)
            fail("stream_info: table log out of range", tablelog);
        if ((unsigned)states != fse_states_for_n(n)) fail("stream_info: state count", states);
    }
    if (mode == FSE_MODE_RAW && n + 1 > size) fail("raw stream claims more bytes than it has", 0);
    {   /* context details: only for context streams, m a 5-bit symbol, a table somewhere */
        int m = -1, tabs[FSE_CTX_COUNT] = {-2, -2, -2};
        int ci = fse_ctx_info(data, size, &m, tabs);
        if (ctx != (ci == 0)) fail("ctx_info disagrees with stream_info", ci);
        if (ctx && (m < 0 || m > 31 || (tabs[0] < 0 && tabs[1] < 0 && tabs[2] < 0)))
            fail("ctx_info: bad reference symbol or no table", m);
    }

    /* wrong symbol counts: refused up front */
    {
        uint8_t small[4];
        if (n > 0 && n - 1 <= sizeof small
            && fse_decompress(small, (size_t)(n - 1), data, size) == 0)
            fail("decompress accepted n - 1", 0);
        if (n + 1 <= sizeof small && fse_decompress(small, (size_t)(n + 1), data, size) == 0)
            fail("decompress accepted n + 1", 0);
    }
    if (n > MAX_FUZZ_N) return 0;   /* a legitimate long stream: too big to allocate here */

    uint8_t *dst = malloc(n ? (size_t)n : 1);
    if (!dst) return 0;
    const size_t w = n ? pick_width(n) : 1;
    int e = fse_decompress(dst, (size_t)n, data, size);
    if (ctx && e != FSE_ERR_NEED_WIDTH) fail("context stream decoded without a width", e);
    if (n >= 2 && fse_decompress_ctx(dst, (size_t)n, data, size, (size_t)n + 1) == 0)
        fail("decompress accepted a width that does not divide n", 0);
    if (!ctx && e == 0) {   /* plain streams ignore a dividing width */
        uint8_t *plain = malloc(n ? (size_t)n : 1);
        memcpy(plain, dst, n);
        if (fse_decompress_ctx(dst, (size_t)n, data, size, w) != 0 || (n && memcmp(dst, plain, n)))
            fail("plain stream decodes differently with a width", 0);
        free(plain);
    }
    e = fse_decompress_ctx(dst, (size_t)n, data, size, w);
    if (e > 0) fail("decompress returned a positive code", e);
    {   /* the batch call (two copies of the stream) agrees with the single call */
        uint8_t *two = malloc(n ? 2 * (size_t)n : 1);
        const uint8_t *blobs[2] = {data, data};
        size_t lens[2] = {size, size};
        int errs[2] = {1, 1};
        fse_decompress_batch(two, errs, blobs, lens, 2, (size_t)n, w, 2);
        if (errs[0] != e || errs[1] != e)
            fail("batch status differs from the single call", errs[0]);
        if (e == 0 && n && (memcmp(dst, two, n) || memcmp(dst, two + n, n)))
            fail("batch output differs from the single call", 0);
        free(two);
    }
    if (e == 0) {
        uint8_t *again = malloc(n ? (size_t)n : 1);
        if (fse_decompress_ctx(again, (size_t)n, data, size, w) != 0
            || (n && memcmp(dst, again, n)))
            fail("decoder is not deterministic", 0);
        free(again);
        if (mode == FSE_MODE_TANS5 || ctx) {   /* small alphabet: every symbol must be <= 31 */
            for (uint64_t i = 0; i < n; i++)
                if (dst[i] > 31) fail("tANS5 stream decoded a symbol above 31", dst[i]);
        }
        /* round trip through the encoder */
        size_t cap = fse_compress_bound_ctx((size_t)n);
        uint8_t *enc = malloc(cap);
        ptrdiff_t r = fse_compress_ctx(enc, cap, dst, (size_t)n, w);
        if (r <= 0) fail("compress failed on decoded symbols", (int)r);
        uint8_t *back = malloc(n ? (size_t)n : 1);
        int e2 = fse_decompress_ctx(back, (size_t)n, enc, (size_t)r, w);
        if (e2 != 0) fail("re-encoded stream does not decode", e2);
        if (n && memcmp(dst, back, n)) fail("re-encoded stream decodes differently", 0);
        free(back);
        free(enc);
    }
    free(dst);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    clock_t t0 = clock();   /* CPU time of the process (both batch threads count) */
    check_one(data, size);
    check_class(data, size);
    if ((double)(clock() - t0) / CLOCKS_PER_SEC > LIMIT_CPU_S)
        fail("input took more than 2 s of CPU time", 0);
    return 0;
}
