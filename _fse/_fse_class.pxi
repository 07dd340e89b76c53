# Included by _fse.pyx: the class coder (static tables, docs/entropy.md "Class coder").
#
#   ClassTables(counts, table_log)                   tables of K classes over S = 2E + 2 symbols
#   compress_classes(values, classes, tables) -> bytes
#   decompress_classes(blob, classes, tables) -> int32 array of len(classes)
#   compress_classes_batch(values2d, classes2d, tables, threads=0) -> list[bytes]
#   decompress_classes_batch(blobs, classes2d, tables, threads=0) -> int32 (C, n)
#   normalize_counts(pmf, table_log, min_count=1) -> uint16 counts (rows summing to 2^R)
from libc.stdint cimport int32_t, uint32_t

cdef extern from "fse.h" nogil:
    ctypedef struct fse_class_tables:
        pass
    int FSE_CLASS_MAX_CLASSES
    int FSE_CLASS_MIN_SYMBOLS
    int FSE_CLASS_MAX_SYMBOLS
    int FSE_CLASS_MAX_VALUE
    int FSE_ERR_CLASS
    int FSE_ERR_VALUE
    size_t fse_class_tables_size(unsigned classes, unsigned symbols, unsigned table_log)
    int fse_class_tables_init(void *mem, size_t size, const uint32_t *counts, unsigned classes,
                              unsigned symbols, unsigned table_log)
    size_t fse_class_bound(size_t n)
    Py_ssize_t fse_compress_classes(uint8_t *dst, size_t cap, const int32_t *values,
                                    const uint8_t *classes, size_t n, const fse_class_tables *t)
    int fse_decompress_classes(int32_t *dst, const uint8_t *classes, size_t n,
                               const uint8_t *src, size_t size, const fse_class_tables *t)
    int fse_normalize_pmf(uint32_t *q, const double *p, unsigned symbols, unsigned table_log,
                          unsigned min_count)
    void fse_compress_classes_batch(uint8_t *dst, size_t cap, Py_ssize_t *sizes,
                                    const int32_t *values, const uint8_t *classes, size_t count,
                                    size_t n, const fse_class_tables *t, int threads)
    void fse_decompress_classes_batch(int32_t *out, int *errs, const uint8_t *const *blobs,
                                      const size_t *lens, const uint8_t *classes, size_t count,
                                      size_t n, const fse_class_tables *t, int threads)

MAX_CLASS_VALUE = FSE_CLASS_MAX_VALUE
__all__ += ["ClassTables", "compress_classes", "decompress_classes", "compress_classes_batch",
            "decompress_classes_batch", "normalize_counts", "MAX_CLASS_VALUE"]


cdef int _int_arg(object x, str what) except? -1:
    if not isinstance(x, (int, np.integer)) or isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{what} must be an int, got {type(x).__name__}")
    if not -2**31 < int(x) < 2**31:
        raise ValueError(f"{what} out of range: {x}")
    return int(x)


cdef int _table_log(object table_log) except -1:
    cdef int R = _int_arg(table_log, "table_log")
    if not FSE_MIN_TABLELOG <= R <= FSE_MAX_TABLELOG:
        raise ValueError(f"table_log must be in {FSE_MIN_TABLELOG}..{FSE_MAX_TABLELOG}, got {R}")
    return R


cdef class ClassTables:
    """Static tANS tables of a class coder: counts (K classes x S symbols, S = 2E + 2 even,
    4..256; K 1..256), value counts >= 0, the escape count (last column) >= 1, every row
    summing to 2^table_log.  Symbol j <= 2E codes the value j - E, symbol 2E + 1 the escape
    (values with |v| > E or a count of 0 in their class are escaped).  Built once; read-only
    attributes classes (K), symbols (S), table_log, escape_limit (E), counts (uint16 copy)."""
    cdef void *_mem
    cdef const fse_class_tables *_t
    cdef readonly int classes, symbols, table_log, escape_limit
    cdef readonly object counts

    def __cinit__(self, counts, table_log):
        self._mem = NULL
        cdef int R = _table_log(table_log)
        q = _table_counts(counts, R)
        cdef unsigned K = q.shape[0], S = q.shape[1]
        cdef size_t size = fse_class_tables_size(K, S, R)
        cdef const uint32_t[:, ::1] qv = q
        self._mem = malloc(size)
        if self._mem == NULL:
            raise MemoryError()
        cdef int e = fse_class_tables_init(self._mem, size, &qv[0, 0], K, S, R)
        if e:
            raise ValueError(f"invalid class tables: {_msg(e)}")
        self._t = <const fse_class_tables *>self._mem
        self.classes, self.symbols, self.table_log = K, S, R
        self.escape_limit = (S - 2) // 2
        c16 = q.astype(np.uint16)
        c16.flags.writeable = False
        self.counts = c16

    def __dealloc__(self):
        free(self._mem)

    def __repr__(self):
        return (f"ClassTables(classes={self.classes}, symbols={self.symbols}, "
                f"table_log={self.table_log}, escape_limit={self.escape_limit})")


cdef object _table_counts(object counts, int R):
    """counts -> C-contiguous uint32 (K, S), or ValueError / TypeError saying what is wrong."""
    arr = np.asarray(counts)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"counts must be an integer array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"counts must be 2-D (classes x symbols), got shape {arr.shape}")
    K, S = arr.shape
    if not 1 <= K <= FSE_CLASS_MAX_CLASSES:
        raise ValueError(f"counts must have 1..{FSE_CLASS_MAX_CLASSES} rows (classes), got {K}")
    if S % 2 or not FSE_CLASS_MIN_SYMBOLS <= S <= min(FSE_CLASS_MAX_SYMBOLS, 1 << R):
        raise ValueError(f"counts must have an even number of columns (symbols 2E + 2), "
                         f"{FSE_CLASS_MIN_SYMBOLS}..{min(FSE_CLASS_MAX_SYMBOLS, 1 << R)} at "
                         f"table_log {R}, got {S}")
    bad = np.argwhere(arr < 0)
    if len(bad):
        k, s = (int(v) for v in bad[0])
        raise ValueError(f"count [{k}, {s}] is {arr[k, s]}: counts must be >= 0")
    bad = np.flatnonzero(arr[:, S - 1] < 1)
    if len(bad):
        k = int(bad[0])
        raise ValueError(f"escape count [{k}, {S - 1}] is 0: the escape symbol (last column) "
                         f"must have count >= 1 in every row")
    sums = arr.sum(axis=1, dtype=np.float64)
    wrong = np.flatnonzero(sums != float(1 << R))
    if len(wrong):
        k = int(wrong[0])
        raise ValueError(f"row {k} of counts sums to {int(arr[k].sum(dtype=np.uint64))}, "
                         f"expected 2^{R} = {1 << R}")
    return np.ascontiguousarray(arr, dtype=np.uint32)


cdef ClassTables _tables_arg(object tables):
    if not isinstance(tables, ClassTables):
        raise TypeError(f"tables must be a ClassTables, got {type(tables).__name__}")
    return <ClassTables>tables


cdef object _int_array(object obj, str what, int ndim):
    """np.asarray(obj) checked: integer dtype (empty arrays of any dtype), ndim dimensions."""
    arr = np.asarray(obj)
    if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind in "fiub"):
        raise TypeError(f"{what} must be an integer array, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise TypeError(f"{what} must be {ndim}-D, got shape {arr.shape}")
    return arr


cdef object _as_int32(object arr):
    """values -> C-contiguous int32; wider dtypes are range-checked before the cast."""
    if arr.dtype != np.int32 and arr.size and not np.can_cast(arr.dtype, np.int32):
        if arr.min() < -FSE_CLASS_MAX_VALUE or arr.max() > FSE_CLASS_MAX_VALUE:
            raise ValueError(_msg(FSE_ERR_VALUE))
    return np.ascontiguousarray(arr, dtype=np.int32)


cdef object _as_classes(object arr, int K):
    """classes -> C-contiguous uint8; other integer dtypes are range-checked before the cast
    (uint8 classes >= K are refused by the C code)."""
    if arr.dtype != np.uint8 and arr.size and (arr.min() < 0 or arr.max() >= K):
        raise ValueError(_msg(FSE_ERR_CLASS))
    return np.ascontiguousarray(arr, dtype=np.uint8)


cdef object _class_error(int code, str where=""):
    """Error of a coding call: argument errors (value, class) are ValueError."""
    if code == FSE_ERR_CLASS or code == FSE_ERR_VALUE:
        return ValueError(where + _msg(code))
    return RuntimeError(f"{where}fse_compress_classes failed: {_msg(code)}")



def compress_classes(values, classes, tables):
    """Code values (1-D integers, |v| <= 2^20) with the table of each one's class (classes:
    1-D uint8 of the same length, each < tables.classes) -> bytes (no header: the decoder
    needs the same classes and tables; n = 0 gives b"")."""
    cdef ClassTables t = _tables_arg(tables)
    v = _int_array(values, "values", 1)
    c = _int_array(classes, "classes", 1)
    if v.shape[0] != c.shape[0]:
        raise ValueError(f"values and classes differ in length: {v.shape[0]} != {c.shape[0]}")
    if v.shape[0] > FSE_MAX_N_C:
        raise ValueError(f"too many values: {v.shape[0]} (maximum {FSE_MAX_N_C})")
    cdef const int32_t[::1] vv = _as_int32(v)
    cdef const uint8_t[::1] cv = _as_classes(c, t.classes)
    cdef size_t n = vv.shape[0]
    cdef size_t cap = fse_class_bound(n)
    cdef uint8_t *buf = <uint8_t *>malloc(cap)
    cdef Py_ssize_t r
    if buf == NULL:
        raise MemoryError()
    try:
        with nogil:
            r = fse_compress_classes(buf, cap, &vv[0] if n else NULL, &cv[0] if n else NULL,
                                     n, t._t)
        if r < 0:
            raise _class_error(<int>r)
        return PyBytes_FromStringAndSize(<char *>buf, r)
    finally:
        free(buf)


def decompress_classes(blob, classes, tables):
    """Decode a stream of compress_classes with the same classes and tables -> numpy int32
    array of len(classes).  A malformed stream (or wrong classes, at the rate of the final
    state check) raises FSEError."""
    cdef ClassTables t = _tables_arg(tables)
    c = _int_array(classes, "classes", 1)
    cdef const uint8_t[::1] src = _bytes_like(blob, "blob")
    if c.shape[0] > FSE_MAX_N_C:
        raise ValueError(f"too many values: {c.shape[0]} (maximum {FSE_MAX_N_C})")
    cdef const uint8_t[::1] cv = _as_classes(c, t.classes)
    cdef size_t n = cv.shape[0], size = src.shape[0]
    out = np.empty(n, dtype=np.int32)
    cdef int32_t[::1] ov = out
    cdef int e
    with nogil:
        e = fse_decompress_classes(&ov[0] if n else NULL, &cv[0] if n else NULL, n,
                                   &src[0] if size else <const uint8_t *>b"", size, t._t)
    if e == FSE_ERR_CLASS:
        raise ValueError(_msg(e))
    if e:
        raise FSEError(_msg(e))
    return out


cdef tuple _batch_shape(object v, object c):
    if v.shape != c.shape:
        raise ValueError(f"values2d and classes2d differ in shape: {v.shape} != {c.shape}")
    if v.shape[1] > FSE_MAX_N_C:
        raise ValueError(f"too many values per channel: {v.shape[1]} (maximum {FSE_MAX_N_C})")
    return v.shape


def compress_classes_batch(values2d, classes2d, tables, threads=0):
    """compress_classes of every row (channel) of values2d / classes2d (same shape, C x n),
    in parallel (threads: 0 = all cores) -> list of C streams."""
    cdef ClassTables t = _tables_arg(tables)
    v = _int_array(values2d, "values2d", 2)
    c = _int_array(classes2d, "classes2d", 2)
    C, n = _batch_shape(v, c)
    cdef int nt = _threads(threads)
    if C == 0:
        return []
    cdef const int32_t[:, ::1] vv = _as_int32(v)
    cdef const uint8_t[:, ::1] cv = _as_classes(c, t.classes)
    cdef size_t nn = n, count = C, cap = fse_class_bound(nn), i
    cdef const int32_t *vp = &vv[0, 0] if nn else NULL
    cdef const uint8_t *cp = &cv[0, 0] if nn else NULL
    cdef uint8_t *bufs = <uint8_t *>malloc(count * cap)
    cdef Py_ssize_t *sizes = <Py_ssize_t *>malloc(count * sizeof(Py_ssize_t))
    if bufs == NULL or sizes == NULL:
        free(bufs)
        free(sizes)
        raise MemoryError()
    try:
        with nogil:
            fse_compress_classes_batch(bufs, cap, sizes, vp, cp, count, nn, t._t, nt)
        out = []
        for i in range(count):
            if sizes[i] < 0:
                raise _class_error(<int>sizes[i], f"channel {i}: ")
            out.append(PyBytes_FromStringAndSize(<char *>(bufs + i * cap), sizes[i]))
        return out
    finally:
        free(bufs)
        free(sizes)


def decompress_classes_batch(blobs, classes2d, tables, threads=0):
    """decompress_classes of every stream with its row of classes2d (C x n, C = len(blobs)),
    in parallel -> int32 (C, n).  The first bad stream raises FSEError("channel i: ...")."""
    cdef ClassTables t = _tables_arg(tables)
    c = _int_array(classes2d, "classes2d", 2)
    try:
        seq = list(blobs)
    except TypeError:
        raise TypeError("blobs must be an iterable of bytes-like streams") from None
    if len(seq) != c.shape[0]:
        raise ValueError(f"{len(seq)} streams but {c.shape[0]} rows of classes")
    if c.shape[1] > FSE_MAX_N_C:
        raise ValueError(f"too many values per channel: {c.shape[1]} (maximum {FSE_MAX_N_C})")
    cdef int nt = _threads(threads)
    objs = [_bytes_like(b, f"blobs[{i}]") for i, b in enumerate(seq)]
    cdef const uint8_t[:, ::1] cv = _as_classes(c, t.classes)
    cdef size_t count = c.shape[0], nn = c.shape[1], i, got = 0
    out = np.empty((count, nn), dtype=np.int32)
    if count == 0:
        return out
    cdef int32_t[:, ::1] ov = out
    cdef int32_t dummy = 0
    cdef Py_buffer *views = <Py_buffer *>malloc(count * sizeof(Py_buffer))
    cdef const uint8_t **ptrs = <const uint8_t **>malloc(count * sizeof(uint8_t *))
    cdef size_t *lens = <size_t *>malloc(count * sizeof(size_t))
    cdef int *errs = <int *>malloc(count * sizeof(int))
    if views == NULL or ptrs == NULL or lens == NULL or errs == NULL:
        free(views)
        free(ptrs)
        free(lens)
        free(errs)
        raise MemoryError()
    try:
        for i in range(count):
            PyObject_GetBuffer(objs[i], &views[i], PyBUF_SIMPLE)
            got += 1
            ptrs[i] = <const uint8_t *>views[i].buf
            lens[i] = <size_t>views[i].len
        with nogil:
            fse_decompress_classes_batch(&ov[0, 0] if nn else &dummy, errs, ptrs, lens,
                                         &cv[0, 0] if nn else NULL, count, nn, t._t, nt)
        for i in range(count):
            if errs[i] == FSE_ERR_CLASS:
                raise ValueError(f"channel {i}: {_msg(errs[i])}")
            if errs[i]:
                raise FSEError(f"channel {i}: {_msg(errs[i])}")
        return out
    finally:
        for i in range(got):
            PyBuffer_Release(&views[i])
        free(views)
        free(ptrs)
        free(lens)
        free(errs)


def normalize_counts(pmf, table_log, *, min_count=1):
    """Probabilities (rows: classes, columns: symbols; each row summing to ~1, any positive
    sum is accepted) -> uint16 counts of the same shape, each row summing to 2^table_log.

    min_count=1: every count >= 1, maximising sum p log q (minimum sum p log(p / q)) row by
    row (exact up to the coder's float log2 table).
    min_count=0 (rows laid out as class tables: S = 2E + 2 columns, the last the escape):
    value symbols may get 0, the escape always >= 1.  The expected cost of a row is
    sum p (R - log2 q) over the symbols with a count, plus, for those with 0, p times the
    escape's code length and the escape payload bits of their value (2 floor(log2(|v| + 1))
    + 1, + 1 sign bit if v != 0).  Candidates for 0 are the value symbols with p * 2^R < 2,
    ordered by p * payload bits; for each prefix of that order the other counts are
    re-optimised exactly (unit moves) with the prefix's mass added to the escape, and the
    cheapest prefix wins (none if nothing gains: then the min_count=1 optimum, up to float
    rounding).  Value symbols of probability 0 always get 0."""
    cdef int R = _table_log(table_log)
    if isinstance(min_count, (bool, np.bool_)) or min_count not in (0, 1):
        raise ValueError(f"min_count must be 0 or 1, got {min_count!r}")
    cdef unsigned mc = int(min_count)
    try:
        p = np.array(pmf, dtype=np.float64, order="C", ndmin=1)
    except (TypeError, ValueError):
        raise TypeError("pmf must be an array of numbers") from None
    if p.ndim > 2 or p.size == 0:
        raise ValueError(f"pmf must be 1-D or 2-D with at least one symbol, got shape {p.shape}")
    p2 = p.reshape(p.size // p.shape[p.ndim - 1], p.shape[p.ndim - 1])
    cdef size_t K = p2.shape[0], S = p2.shape[1], k
    if S > (1u << R):
        raise ValueError(f"{S} symbols do not fit a table of 2^{R} = {1 << R} entries "
                         f"with every count >= 1")
    if mc == 0 and (S % 2 or not FSE_CLASS_MIN_SYMBOLS <= S <= FSE_CLASS_MAX_SYMBOLS):
        raise ValueError(f"min_count=0 needs class table rows (an even number of symbols "
                         f"2E + 2, {FSE_CLASS_MIN_SYMBOLS}..{FSE_CLASS_MAX_SYMBOLS}), got {S}")
    if not np.isfinite(p2).all() or (p2 < 0).any():
        raise ValueError("pmf must be finite and >= 0")
    bad = np.flatnonzero(~(p2.sum(axis=1) > 0))
    if len(bad):
        raise ValueError(f"row {int(bad[0])} of pmf sums to 0")
    q = np.empty((K, S), dtype=np.uint32)
    cdef uint32_t[:, ::1] qv = q
    cdef const double[:, ::1] pv = p2
    cdef int e = 0
    with nogil:
        for k in range(K):
            e = fse_normalize_pmf(&qv[k, 0], &pv[k, 0], <unsigned>S, <unsigned>R, mc)
            if e:
                break
    if e:
        raise ValueError(f"normalize_counts: {_msg(e)}")
    return q.astype(np.uint16).reshape(p.shape)
