/*
 * fse_batch.c -- fse_compress_batch / fse_decompress_batch (and the class coder's
 * fse_compress_classes_batch / fse_decompress_classes_batch): many channels of one length
 * coded in parallel, and fse_cpu_count.
 */
#include "fse_internal.h"

#include <stdlib.h>
#if !defined(_WIN32)
#include <pthread.h>
#include <unistd.h>
#endif

/* ------------------------------------------------------------------------ */
/* batches: channels spread over threads created for the call (blocking      */
/* waits, an atomic work counter; no pool, so nothing to break across fork; */
/* an idle late worker finds no work and exits on its own).                  */
/* ------------------------------------------------------------------------ */
typedef struct {
    int op;                        /* 0 compress, 1 decompress, 2/3 the same, class coder */
    size_t count;
    size_t n;
    size_t width;                  /* 0: plain coder */
    /* compress */
    const uint8_t *src;            /* count x n */
    uint8_t *dst;                  /* count x cap */
    size_t cap;
    ptrdiff_t *sizes;
    /* decompress */
    const uint8_t *const *blobs;
    const size_t *lens;
    uint8_t *out;                  /* count x n */
    int *errs;
    /* class coder: row i of values / classes (count x n); decoded values into vout */
    const fse_class_tables *tables;
    const int32_t *values;
    const uint8_t *classes;
    int32_t *vout;
    size_t next;                   /* next channel to take (atomic) */
    size_t done;                   /* channels finished (atomic) */
    int refs;                      /* threads still holding the job (atomic) */
#if !defined(_WIN32)
    pthread_mutex_t mu;
    pthread_cond_t cv;
#endif
} batch_job;

static void run_items(batch_job *j)
{
    for (;;) {
        size_t i = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        if (i >= j->count) break;
        const size_t r = i * j->n;   /* offset of row i */
        if (j->op == 0)
            j->sizes[i] = fse_compress_ctx(j->dst + i * j->cap, j->cap, j->src + r, j->n,
                                           j->width);
        else if (j->op == 1)
            j->errs[i] = fse_decompress_ctx(j->out + r, j->n, j->blobs[i], j->lens[i],
                                            j->width);
        else if (j->op == 2)
            j->sizes[i] = fse_compress_classes(j->dst + i * j->cap, j->cap, j->values + r,
                                               j->classes + r, j->n, j->tables);
        else
            j->errs[i] = fse_decompress_classes(j->vout + r, j->classes + r, j->n, j->blobs[i],
                                                j->lens[i], j->tables);
#if !defined(_WIN32)
        if (__atomic_add_fetch(&j->done, 1, __ATOMIC_ACQ_REL) == j->count) {
            pthread_mutex_lock(&j->mu);
            pthread_cond_broadcast(&j->cv);
            pthread_mutex_unlock(&j->mu);
        }
#endif
    }
}

#if !defined(_WIN32)
static void release_job(batch_job *j)
{
    if (__atomic_sub_fetch(&j->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        pthread_mutex_destroy(&j->mu);
        pthread_cond_destroy(&j->cv);
        free(j);
    }
}

/* Detached workers: the caller returns as soon as every channel is done and
 * never waits for a worker the OS has not scheduled yet (on a loaded machine
 * that wait cost more than the parallelism gained); the last thread out frees
 * the job. */
static void *batch_worker(void *arg)
{
    batch_job *j = (batch_job *)arg;
    run_items(j);
    release_job(j);
    return NULL;
}
#endif

#define BATCH_MIN_WORK 65536u   /* symbols per extra thread worth its creation */
#define BATCH_MAX_THREADS 256

int fse_cpu_count(void)
{
#if !defined(_WIN32) && defined(_SC_NPROCESSORS_ONLN)
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c > 0 ? (int)c : 1;
#else
    return 1;
#endif
}

static void run_batch(const batch_job *proto, int threads)
{
    if (!lg2_ready) fse_init();
    size_t want = (size_t)(threads > 0 ? threads : 1);
    size_t by_work = (proto->count * (proto->n + 64)) / BATCH_MIN_WORK;
    if (want > proto->count) want = proto->count;
    if (want > by_work) want = by_work ? by_work : 1;
    if (want > BATCH_MAX_THREADS) want = BATCH_MAX_THREADS;
#if !defined(_WIN32)
    batch_job *j = want > 1 ? (batch_job *)malloc(sizeof *j) : NULL;
    if (j) {
        *j = *proto;
        j->next = 0; j->done = 0; j->refs = 1;
        if (pthread_mutex_init(&j->mu, NULL) != 0) { free(j); j = NULL; }
        else if (pthread_cond_init(&j->cv, NULL) != 0) { pthread_mutex_destroy(&j->mu); free(j); j = NULL; }
    }
    if (j) {
        pthread_attr_t attr;
        int attr_ok = pthread_attr_init(&attr) == 0 &&
                      pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0;
        for (size_t t = 1; attr_ok && t < want; t++) {
            pthread_t tid;
            __atomic_add_fetch(&j->refs, 1, __ATOMIC_ACQ_REL);
            if (pthread_create(&tid, &attr, batch_worker, j) != 0) {   /* go on with fewer */
                __atomic_sub_fetch(&j->refs, 1, __ATOMIC_ACQ_REL);
                break;
            }
        }
        if (attr_ok) pthread_attr_destroy(&attr);
        run_items(j);
        pthread_mutex_lock(&j->mu);
        while (__atomic_load_n(&j->done, __ATOMIC_ACQUIRE) < j->count) pthread_cond_wait(&j->cv, &j->mu);
        pthread_mutex_unlock(&j->mu);
        release_job(j);
        return;
    }
#endif
    batch_job local = *proto;
    local.next = 0; local.done = 0;
#if !defined(_WIN32)
    /* single thread: run_items only touches mu/cv when the last item completes */
    pthread_mutex_init(&local.mu, NULL);
    pthread_cond_init(&local.cv, NULL);
    run_items(&local);
    pthread_mutex_destroy(&local.mu);
    pthread_cond_destroy(&local.cv);
#else
    run_items(&local);
#endif
}

void fse_compress_batch(uint8_t *dst, size_t cap, ptrdiff_t *sizes, const uint8_t *src,
                        size_t count, size_t n, size_t width, int threads)
{
    batch_job j;
    memset(&j, 0, sizeof j);
    j.op = 0; j.count = count; j.n = n; j.width = width; j.src = src; j.dst = dst; j.cap = cap; j.sizes = sizes;
    run_batch(&j, threads);
}

void fse_decompress_batch(uint8_t *out, int *errs, const uint8_t *const *blobs, const size_t *lens,
                          size_t count, size_t n, size_t width, int threads)
{
    batch_job j;
    memset(&j, 0, sizeof j);
    j.op = 1; j.count = count; j.n = n; j.width = width; j.blobs = blobs; j.lens = lens; j.out = out; j.errs = errs;
    run_batch(&j, threads);
}

void fse_compress_classes_batch(uint8_t *dst, size_t cap, ptrdiff_t *sizes, const int32_t *values,
                                const uint8_t *classes, size_t count, size_t n,
                                const fse_class_tables *t, int threads)
{
    batch_job j;
    memset(&j, 0, sizeof j);
    j.op = 2; j.count = count; j.n = n; j.dst = dst; j.cap = cap; j.sizes = sizes;
    j.values = values; j.classes = classes; j.tables = t;
    run_batch(&j, threads);
}

void fse_decompress_classes_batch(int32_t *out, int *errs, const uint8_t *const *blobs,
                                  const size_t *lens, const uint8_t *classes, size_t count,
                                  size_t n, const fse_class_tables *t, int threads)
{
    batch_job j;
    memset(&j, 0, sizeof j);
    j.op = 3; j.count = count; j.n = n; j.blobs = blobs; j.lens = lens; j.errs = errs;
    j.vout = out; j.classes = classes; j.tables = t;
    run_batch(&j, threads);
}
