# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Entropy coder for l3ic latent channels: table-based ANS (Finite State Entropy design).

One channel is a run of uint8 symbols (codebook indices, typically 0..31).
Every coded channel is a self-describing stream: it stores the symbol count n
and its mode (tANS, single-symbol run, or raw).  See docs/entropy.md.

    compress(data, width=None) -> bytes
    decompress(blob, n=None, width=None) -> bytes
    compress_batch(array2d, threads=0, width=None) -> list[bytes]
    decompress_batch(blobs, n, threads=0, width=None) -> numpy.ndarray (len(blobs), n) uint8
    stream_info(blob) -> dict

width (symbols per row; n must be a multiple of it) lets the encoder use the
spatial-context variant ('tans-ctx': one table per context of the left and upper
neighbours) when that is smaller; decoding such a stream needs the same width.

The class coder (_fse_class.pxi, included below) codes signed values with static tables
known to both sides, one per class: ClassTables, compress_classes, decompress_classes,
their batch calls and normalize_counts.

Malformed streams raise FSEError (a ValueError subclass) and nothing else;
arguments of the wrong type raise TypeError.  All coding runs with the GIL
released; the batch calls spread the channels over threads started for the
call (blocking waits, no pool left behind, safe across fork()).
"""
from libc.stdint cimport uint8_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
import os

import numpy as np

cdef extern from "fse.h" nogil:
    unsigned int FSE_MAX_N_C "FSE_MAX_N"
    int FSE_MIN_TABLELOG
    int FSE_MAX_TABLELOG
    int FSE_MODE_TANS5
    int FSE_MODE_TANS8
    int FSE_MODE_RUN
    int FSE_MODE_RAW
    int FSE_MODE_TANS_CTX
    int FSE_ERR_N_MISMATCH
    int FSE_ERR_NEED_WIDTH
    int FSE_ERR_WIDTH
    void fse_init()
    size_t fse_compress_bound(size_t n)
    size_t fse_compress_bound_ctx(size_t n)
    Py_ssize_t fse_compress_ctx(uint8_t *dst, size_t cap, const uint8_t *src, size_t n,
                                size_t width)
    int fse_decompress_ctx(uint8_t *dst, size_t n, const uint8_t *src, size_t size, size_t width)
    int fse_ctx_info(const uint8_t *src, size_t size, int *m, int *tables)
    Py_ssize_t fse_compress(uint8_t *dst, size_t cap, const uint8_t *src, size_t n)
    int fse_stream_info(const uint8_t *src, size_t size, uint64_t *n, int *mode,
                        int *tablelog, int *states)
    int fse_decompress(uint8_t *dst, size_t n, const uint8_t *src, size_t size)
    unsigned fse_states_for_n(uint64_t n)
    const char *fse_error_string(int code)
    void fse_compress_batch(uint8_t *dst, size_t cap, Py_ssize_t *sizes, const uint8_t *src,
                            size_t count, size_t n, size_t width, int threads)
    void fse_decompress_batch(uint8_t *out, int *errs, const uint8_t *const *blobs,
                              const size_t *lens, size_t count, size_t n, size_t width,
                              int threads)
    int fse_cpu_count()

fse_init()

MAX_N = FSE_MAX_N_C
MIN_TABLE_LOG = FSE_MIN_TABLELOG
MAX_TABLE_LOG = FSE_MAX_TABLELOG
_MODE_NAMES = {FSE_MODE_TANS5: "tans", FSE_MODE_TANS8: "tans", FSE_MODE_RUN: "run", FSE_MODE_RAW: "raw",
               FSE_MODE_TANS_CTX: "tans-ctx"}

__all__ = ["FSEError", "compress", "decompress", "compress_batch", "decompress_batch",
           "stream_info", "MAX_N"]


class FSEError(ValueError):
    """A coded channel is malformed (truncated, extended, corrupt) or does not
    hold the expected number of symbols."""


cdef str _msg(int code):
    return fse_error_string(code).decode("ascii")


cdef object _bytes_like(object obj, str what):
    """Return an object exposing a C-contiguous 1-D unsigned-byte buffer, or raise TypeError."""
    if isinstance(obj, (bytes, bytearray)):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype != np.uint8:
            raise TypeError(f"{what} must be a uint8 array, got dtype {obj.dtype}")
        if obj.ndim != 1:
            raise TypeError(f"{what} must be 1-D, got shape {obj.shape}")
        return np.ascontiguousarray(obj)
    try:
        mv = memoryview(obj)
    except TypeError:
        raise TypeError(f"{what} must be bytes-like or a 1-D uint8 array, "
                        f"got {type(obj).__name__}") from None
    if mv.itemsize != 1 or mv.ndim > 1:
        raise TypeError(f"{what} must be a 1-D buffer of bytes, got format "
                        f"{mv.format!r} with {mv.ndim} dimensions")
    if mv.format != "B":
        mv = mv.cast("B")
    if not mv.c_contiguous:
        return mv.tobytes()
    return mv


cdef int _threads(object threads) except -1:
    if not isinstance(threads, (int, np.integer)) or isinstance(threads, (bool, np.bool_)):
        raise TypeError("threads must be an int")
    threads = int(threads)
    if threads < 0:
        raise ValueError("threads must be >= 0 (0 = all cores)")
    if threads == 0:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            return max(1, fse_cpu_count())
    return min(threads, 256)


cdef size_t _width(object width) except? 0:
    """None -> 0 (no rows); else an int >= 1."""
    if width is None:
        return 0
    if not isinstance(width, (int, np.integer)) or isinstance(width, bool):
        raise TypeError("width must be an int or None")
    width = int(width)
    if width < 1 or width > FSE_MAX_N_C:
        raise ValueError(f"width must be in 1..{FSE_MAX_N_C}")
    return <size_t>width


def compress(data, width=None):
    """Code one channel (bytes-like or 1-D uint8 array) into a self-describing stream.
    With width (symbols per row, n a multiple of it) the context variant is used when
    it is smaller."""
    cdef size_t w = _width(width)
    cdef const uint8_t[::1] src = _bytes_like(data, "data")
    cdef size_t n = src.shape[0]
    cdef const uint8_t *sp = &src[0] if n else <const uint8_t *>b""
    if n > FSE_MAX_N_C:
        raise FSEError(f"channel too long: {n} symbols (maximum {FSE_MAX_N_C})")
    if w and n % w:
        raise ValueError(f"{n} symbols are not rows of width {w}")
    cdef size_t cap = fse_compress_bound_ctx(n) if w else fse_compress_bound(n)
    cdef uint8_t *buf = <uint8_t *>malloc(cap)
    cdef Py_ssize_t r
    if buf == NULL:
        raise MemoryError()
    try:
        with nogil:
            r = fse_compress_ctx(buf, cap, sp, n, w)
        if r < 0:
            raise RuntimeError(f"fse_compress failed: {_msg(<int>r)}")
        return PyBytes_FromStringAndSize(<char *>buf, r)
    finally:
        free(buf)


cdef uint64_t _checked_n(const uint8_t *p, size_t size, object n,
                         size_t width) except? 0xFFFFFFFFFFFFFFFF:
    """Parse the header; return the symbol count, checked against n and width."""
    cdef uint64_t sn = 0
    cdef int mode = 0
    cdef int e = fse_stream_info(p, size, &sn, &mode, NULL, NULL)
    if e:
        raise FSEError(_msg(e))
    if n is not None and sn != <uint64_t>n:
        raise FSEError(f"stream holds {sn} symbols, expected {n}")
    if mode == FSE_MODE_TANS_CTX and not width:
        raise FSEError(_msg(FSE_ERR_NEED_WIDTH))
    if width and sn % width:
        raise FSEError(f"stream holds {sn} symbols, not a multiple of the row width {width}")
    return sn


cdef object _check_n_arg(object n):
    if n is None:
        return None
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
        raise TypeError("n must be an int or None")
    n = int(n)
    if n < 0 or n > FSE_MAX_N_C:
        raise ValueError(f"n must be in 0..{FSE_MAX_N_C}")
    return n


def decompress(blob, n=None, width=None):
    """Decode one stream.  With n, the stream must hold exactly n symbols
    (checked from the header before any allocation).  A context stream ('tans-ctx')
    needs the width it was coded with.  Returns bytes of length n."""
    n = _check_n_arg(n)
    cdef size_t w = _width(width)
    cdef const uint8_t[::1] src = _bytes_like(blob, "blob")
    cdef size_t size = src.shape[0]
    cdef const uint8_t *sp = &src[0] if size else <const uint8_t *>b""
    cdef uint64_t sn = _checked_n(sp, size, n, w)
    out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>sn)
    cdef uint8_t *op = <uint8_t *>PyBytes_AS_STRING(out)
    cdef int e
    with nogil:
        e = fse_decompress_ctx(op, <size_t>sn, sp, size, w)
    if e:
        raise FSEError(_msg(e))
    return out


def stream_info(blob):
    """Header of a stream: dict(n=, mode='tans'|'tans-ctx'|'run'|'raw', table_log=, states=,
    size=); a 'tans-ctx' stream adds ref_symbol= (m) and context_tables= (per context 0..2
    the index of its table, or None when no symbol has that context)."""
    cdef const uint8_t[::1] src = _bytes_like(blob, "blob")
    cdef size_t size = src.shape[0]
    cdef const uint8_t *sp = &src[0] if size else <const uint8_t *>b""
    cdef uint64_t sn = 0
    cdef int mode = 0, tl = 0, st = 0
    cdef int e = fse_stream_info(sp, size, &sn, &mode, &tl, &st)
    if e:
        raise FSEError(_msg(e))
    info = {"n": sn, "mode": _MODE_NAMES[mode], "table_log": tl, "states": st, "size": size}
    cdef int m = 0
    cdef int tabs[3]
    if mode == FSE_MODE_TANS_CTX:
        e = fse_ctx_info(sp, size, &m, tabs)
        if e:
            raise FSEError(_msg(e))
        info["ref_symbol"] = m
        info["context_tables"] = tuple(None if tabs[k] < 0 else tabs[k] for k in range(3))
    return info


def compress_batch(array2d, threads=0, width=None):
    """Code every row of a 2-D uint8 array (channels x symbols) in parallel.
    threads: 0 = all cores; width: symbols per row of each channel (see compress).
    Returns a list of streams, one per row."""
    cdef int nt = _threads(threads)
    cdef size_t w = _width(width)
    if not isinstance(array2d, np.ndarray):
        raise TypeError("array2d must be a numpy.ndarray")
    if array2d.dtype != np.uint8:
        raise TypeError(f"array2d must be uint8, got dtype {array2d.dtype}")
    if array2d.ndim != 2:
        raise TypeError(f"array2d must be 2-D (channels x symbols), got shape {array2d.shape}")
    arr = np.ascontiguousarray(array2d)
    cdef Py_ssize_t C = arr.shape[0]
    cdef size_t n = <size_t>arr.shape[1]
    if n > FSE_MAX_N_C:
        raise FSEError(f"channel too long: {n} symbols (maximum {FSE_MAX_N_C})")
    if w and n % w:
        raise ValueError(f"{n} symbols are not rows of width {w}")
    if C == 0:
        return []
    cdef const uint8_t[:, ::1] v = arr
    cdef const uint8_t *base = &v[0, 0] if n else <const uint8_t *>b""
    cdef size_t cap = fse_compress_bound_ctx(n) if w else fse_compress_bound(n)
    cdef uint8_t *bufs = <uint8_t *>malloc(<size_t>C * cap)
    cdef Py_ssize_t *sizes = <Py_ssize_t *>malloc(<size_t>C * sizeof(Py_ssize_t))
    cdef Py_ssize_t i
    if bufs == NULL or sizes == NULL:
        free(bufs)
        free(sizes)
        raise MemoryError()
    try:
        with nogil:
            fse_compress_batch(bufs, cap, sizes, base, <size_t>C, n, w, nt)
        out = []
        for i in range(C):
            if sizes[i] < 0:
                raise RuntimeError(f"fse_compress failed on row {i}: {_msg(<int>sizes[i])}")
            out.append(PyBytes_FromStringAndSize(<char *>(bufs + <size_t>i * cap), sizes[i]))
        return out
    finally:
        free(bufs)
        free(sizes)


def decompress_batch(blobs, n, threads=0, width=None):
    """Decode a sequence of streams that each hold exactly n symbols, in parallel
    (width: needed for context streams, see decompress).
    Returns a C-contiguous uint8 array of shape (len(blobs), n)."""
    cdef int nt = _threads(threads)
    cdef size_t w = _width(width)
    if n is None:
        raise TypeError("n is required for decompress_batch")
    n = _check_n_arg(n)
    cdef size_t nn = <size_t>n
    try:
        seq = list(blobs)
    except TypeError:
        raise TypeError("blobs must be an iterable of bytes-like streams") from None
    cdef Py_ssize_t C = len(seq)
    cdef Py_ssize_t i
    objs = [_bytes_like(b, f"blobs[{i}]") for i, b in enumerate(seq)]
    out = np.empty((C, nn), dtype=np.uint8)
    if C == 0:
        return out
    cdef uint8_t[:, ::1] ov = out
    cdef uint8_t *obase = &ov[0, 0] if nn else NULL
    cdef Py_buffer *views = <Py_buffer *>malloc(<size_t>C * sizeof(Py_buffer))
    cdef const uint8_t **ptrs = <const uint8_t **>malloc(<size_t>C * sizeof(uint8_t *))
    cdef size_t *lens = <size_t *>malloc(<size_t>C * sizeof(size_t))
    cdef int *errs = <int *>malloc(<size_t>C * sizeof(int))
    cdef Py_ssize_t got = 0
    cdef uint8_t dummy = 0
    if views == NULL or ptrs == NULL or lens == NULL or errs == NULL:
        free(views)
        free(ptrs)
        free(lens)
        free(errs)
        raise MemoryError()
    try:
        for i in range(C):
            PyObject_GetBuffer(objs[i], &views[i], PyBUF_SIMPLE)
            got += 1
            ptrs[i] = <const uint8_t *>views[i].buf
            lens[i] = <size_t>views[i].len
        with nogil:
            fse_decompress_batch(obase if nn else &dummy, errs, ptrs, lens, <size_t>C, nn, w, nt)
        for i in range(C):
            if errs[i]:
                if errs[i] == FSE_ERR_N_MISMATCH:
                    raise FSEError(f"channel {i}: stream does not hold {nn} symbols")
                raise FSEError(f"channel {i}: {_msg(errs[i])}")
        return out
    finally:
        for i in range(got):
            PyBuffer_Release(&views[i])
        free(views)
        free(ptrs)
        free(lens)
        free(errs)


include "_fse_class.pxi"
