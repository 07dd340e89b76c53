"""The class coder of PIL_l3ic._fse (static tables, docs/entropy.md "Class coder"): round
trips, sizes against the ideal cost, batches and threads, the table set, normalize_counts,
the shared table build with 256 symbols (bucket counter regression), GIL release.  Bad
streams and argument errors: tests/test_fse_class_errors.py; zero counts, the escape
payload and min_count=0: tests/test_fse_class_zero.py.

Set L3IC_FSE_SO=/path/to/_fse.so to test another build (benchmarks/fse_asan.sh)."""
import threading

import numpy as np
import pytest
from _fse_class_data import (FSEError, SIGMAS, SIGMAS0, TABLES, TABLES0, VMAX, escaped, fse,
                             gauss_data, gauss_pmf, ideal_bits, roundtrip)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


# ----------------------------------------------------------------------------- round trips

@st.composite
def table_sets(draw):
    E = draw(st.integers(1, 127))
    S = 2 * E + 2
    R = draw(st.integers(max(5, (S - 1).bit_length()), 12))
    K = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    zeros = draw(st.booleans())   # value counts >= 0 (escape >= 1) instead of all >= 1
    rng = np.random.default_rng(seed)
    L = 1 << R
    counts = np.ones((K, S), np.int64)   # random compositions of L into S parts >= 1
    if zeros:
        counts[:, :-1] = 0
    for k in range(K):
        alpha = np.ones(S) * (0.3 if not zeros else rng.choice([0.02, 0.3]))
        counts[k] += np.bincount(rng.choice(S, L - counts[k].sum(), p=rng.dirichlet(alpha)),
                                 minlength=S)
    return fse.ClassTables(counts, R)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=table_sets(), n=st.integers(0, 3000), seed=st.integers(0, 2**32 - 1),
       esc_rate=st.sampled_from([0.0, 0.01, 0.3, 1.0]))
def test_roundtrip_random_tables(t, n, seed, esc_rate):
    rng = np.random.default_rng(seed)
    E = t.escape_limit
    vals = rng.integers(-E, E + 1, n)
    esc = rng.random(n) < esc_rate
    mags = (E + 1 + np.minimum(rng.pareto(0.3, n), VMAX)).astype(np.int64).clip(max=VMAX)
    vals[esc] = np.where(rng.random(n) < 0.5, -1, 1)[esc] * mags[esc]
    cls = rng.integers(0, t.classes, n).astype(np.uint8)
    blob = roundtrip(vals.astype(np.int32), cls, t)
    assert fse.compress_classes(vals, cls, t) == blob   # int64 input: the same stream


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 100, 16383, 16384, 31999, 32000, 32003])
def test_roundtrip_lengths(n):
    vals, cls = gauss_data(n, SIGMAS, seed=n, scale=3.0)   # many escapes
    roundtrip(vals, cls, TABLES)


def test_empty_stream():
    assert fse.compress_classes(np.zeros(0, np.int32), np.zeros(0, np.uint8), TABLES) == b""
    assert fse.compress_classes([], [], TABLES) == b""
    out = fse.decompress_classes(b"", np.zeros(0, np.uint8), TABLES)
    assert out.dtype == np.int32 and out.shape == (0,)
    with pytest.raises(FSEError, match="left over"):
        fse.decompress_classes(b"\x01", [], TABLES)
    with pytest.raises(FSEError, match="empty"):
        fse.decompress_classes(b"", [0], TABLES)


@pytest.mark.parametrize("v", [0, 1, -1, 20, -20, 21, -21, 22, 1000, -1000, VMAX, -VMAX])
@pytest.mark.parametrize("c", [0, 7])
def test_one_value(v, c):
    blob = roundtrip(np.array([v], np.int32), np.array([c], np.uint8), TABLES)
    # <= 12 state bits, <= 42 escape bits, the 12-bit final state and the end marker
    assert 2 <= len(blob) <= (4 if abs(v) <= 20 else 9)


def test_extreme_values_every_class():
    n = 4000
    rng = np.random.default_rng(3)
    vals = rng.choice([VMAX, -VMAX, 21, -21, 0, VMAX - 1, -(VMAX - 1)], n).astype(np.int32)
    cls = rng.integers(0, TABLES.classes, n).astype(np.uint8)
    roundtrip(vals, cls, TABLES)


def test_accepted_streams_are_canonical():
    """Decoding is the inverse of encoding: re-encoding what a stream decodes to gives the
    stream back, so a changed stream that decodes gives different values."""
    vals, cls = gauss_data(5000, SIGMAS, seed=9, scale=2.0)
    blob = fse.compress_classes(vals, cls, TABLES)
    out = fse.decompress_classes(blob, cls, TABLES)
    assert fse.compress_classes(out, cls, TABLES) == blob


# ----------------------------------------------------------------------------- sizes

@pytest.mark.parametrize("zeros", [False, True])
@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_size_near_ideal(scale, zeros):
    """Ideal: -log2(q / 2^R) of each value's symbol, escaped values (|v| > E or count 0)
    charged the escape symbol and their payload bits."""
    t, sigmas = (TABLES0, SIGMAS0) if zeros else (TABLES, SIGMAS)
    vals, cls = gauss_data(100_000, sigmas, seed=1, scale=scale)
    blob = roundtrip(vals, cls, t)
    if zeros and scale == 2.0:   # values on zero-count symbols are escaped
        assert (escaped(vals, cls, t) & (np.abs(vals) <= t.escape_limit)).sum() > 10
    ideal = ideal_bits(vals, cls, t) / 8
    assert len(blob) <= ideal * 1.01 + 16, (len(blob), ideal)
    assert len(blob) >= ideal * 0.99 - 16


# ----------------------------------------------------------------------------- batches

@pytest.mark.parametrize("C, n", [(5, 3000), (4, 40_000), (3, 1), (6, 0)])
def test_batch_equals_single(C, n):
    vals, cls = gauss_data(C * n, SIGMAS, seed=C + n, scale=1.5)
    v2, c2 = vals.reshape(C, n), cls.reshape(C, n)
    single = [fse.compress_classes(v2[i], c2[i], TABLES) for i in range(C)]
    one = fse.compress_classes_batch(v2, c2, TABLES, threads=1)
    two = fse.compress_classes_batch(v2, c2, TABLES, threads=2)
    assert one == single and two == single
    for threads in (0, 1, 2, np.int64(3)):
        out = fse.decompress_classes_batch(single, c2, TABLES, threads=threads)
        assert out.dtype == np.int32 and out.shape == (C, n)
        np.testing.assert_array_equal(out, v2)


def test_batch_empty_and_noncontiguous():
    assert fse.compress_classes_batch(np.zeros((0, 5), np.int32), np.zeros((0, 5), np.uint8),
                                      TABLES) == []
    out = fse.decompress_classes_batch([], np.zeros((0, 5), np.uint8), TABLES)
    assert out.shape == (0, 5) and out.dtype == np.int32
    vals, cls = gauss_data(4 * 600, SIGMAS, seed=4)
    v2, c2 = vals.reshape(600, 4).T, cls.reshape(600, 4).T   # Fortran-ordered views
    blobs = fse.compress_classes_batch(v2, c2, TABLES)
    np.testing.assert_array_equal(fse.decompress_classes_batch(blobs, c2, TABLES), v2)


def test_batch_reports_bad_channel():
    vals, cls = gauss_data(3 * 2000, SIGMAS, seed=5)
    v2, c2 = vals.reshape(3, 2000), cls.reshape(3, 2000)
    blobs = fse.compress_classes_batch(v2, c2, TABLES)
    blobs[1] = blobs[1][:-1]
    with pytest.raises(FSEError, match="channel 1: "):
        fse.decompress_classes_batch(blobs, c2, TABLES, threads=2)
    bad = v2.copy()
    bad[2, 7] = VMAX + 1
    with pytest.raises(ValueError, match=r"channel 2: .*2\^20"):
        fse.compress_classes_batch(bad, c2, TABLES)


# ----------------------------------------------------------------------------- tables

def test_table_attributes():
    assert (TABLES.classes, TABLES.symbols, TABLES.table_log, TABLES.escape_limit) == (8, 42, 12, 20)
    assert TABLES.counts.dtype == np.uint16 and TABLES.counts.shape == (8, 42)
    assert (TABLES.counts.sum(axis=1) == 4096).all()
    for name in ("classes", "symbols", "table_log", "escape_limit", "counts"):
        with pytest.raises(AttributeError):
            setattr(TABLES, name, 3)
    with pytest.raises(ValueError):
        TABLES.counts[0, 0] = 5
    assert "escape_limit=20" in repr(TABLES)


def flat(K, S, R):
    c = np.full((K, S), (1 << R) // S, np.int64)
    c[:, 0] += (1 << R) - c.sum(axis=1)
    return c


@pytest.mark.parametrize("counts, R, match", [
    (flat(2, 8, 6) + [[8, 0, 0, 0, 0, 0, 0, -8], [0] * 8], 6, r"escape count \[0, 7\] is 0"),
    (np.array([[0, 0, 0, 0, 0, 0, 64, 0]]), 6, r"escape count \[0, 7\] is 0"),
    (np.where(np.arange(8) == 3, -1, flat(1, 8, 6)), 6, r"count \[0, 3\] is -1"),
    (flat(3, 8, 6) + np.eye(3, 8, k=1, dtype=np.int64), 6, "row 0 of counts sums to 65"),
    (flat(1, 7, 6), 6, "even number of columns"),
    (flat(1, 2, 6), 6, "even number of columns"),
    (flat(1, 258, 9), 9, "even number of columns"),
    (flat(1, 64, 6)[:, :40], 5, "even number of columns"),   # 40 symbols > 2^5
    (flat(257, 8, 6), 6, "rows"),
    (np.zeros((0, 8), np.int64), 6, "rows"),
    (flat(1, 8, 6)[0], 6, "2-D"),
    (flat(1, 8, 6), 4, "table_log"),
    (flat(1, 8, 6), 13, "table_log"),
])
def test_invalid_tables(counts, R, match):
    with pytest.raises(ValueError, match=match):
        fse.ClassTables(counts, R)


def test_table_argument_types():
    with pytest.raises(TypeError, match="integer"):
        fse.ClassTables(flat(1, 8, 6).astype(np.float64), 6)
    with pytest.raises(TypeError, match="table_log"):
        fse.ClassTables(flat(1, 8, 6), 6.0)
    with pytest.raises(TypeError, match="table_log"):
        fse.ClassTables(flat(1, 8, 6), True)
    t = fse.ClassTables(flat(1, 8, 6).astype(np.uint16), np.int64(6))   # numpy scalars
    assert t.table_log == 6 and t.escape_limit == 3
    t = fse.ClassTables(flat(256, 256, 8).tolist(), 8)   # nested lists; S = 2^R: all ones
    vals = np.arange(-200, 200, dtype=np.int32)
    roundtrip(vals, (np.arange(400) % 256).astype(np.uint8), t)


def test_bucket_counter_256_symbols():
    """255 symbols of count 3 and one of 4096 - 765 put 256 occurrences into one bucket of
    the spread (a uint8 counter wrapped: the plain coder's decoder crashed on such a
    stream); the class tables and the plain coder both build it correctly now."""
    q = np.array([3] * 255 + [4096 - 765])
    data = np.repeat(np.arange(256, dtype=np.uint8), q * 16)
    np.random.default_rng(0).shuffle(data)
    blob = fse.compress(data)
    assert fse.stream_info(blob)["table_log"] == 12
    assert fse.decompress(blob, len(data)) == data.tobytes()
    t = fse.ClassTables(np.stack([q, np.roll(q, 100)]), 12)
    vals = np.random.default_rng(1).integers(-300, 300, 20_000).astype(np.int32)
    roundtrip(vals, (np.arange(20_000) % 2).astype(np.uint8), t)


# ----------------------------------------------------------------------------- normalize_counts

def kl_bits(p, q, R):
    p = p / p.sum()
    nz = p > 0
    return float((p[nz] * np.log2(p[nz] / (q[nz] / (1 << R)))).sum())


@pytest.mark.parametrize("R", [5, 8, 12])
def test_normalize_counts(R):
    E = 15 if R > 5 else 7
    P = np.array([gauss_pmf(s, E) for s in (0.05, 0.3, 1, 3, 10, 100)])
    P[0, :3] = 0.0   # exact zeros still get count 1
    q = fse.normalize_counts(P, R)
    assert q.dtype == np.uint16 and q.shape == P.shape
    assert (q >= 1).all() and (q.sum(axis=1) == 1 << R).all()
    for p, row in zip(P, q.astype(np.int64)):
        best = kl_bits(p, row, R)
        for a in range(len(row)):   # no single unit move lowers the cost
            for b in range(len(row)):
                if a != b and row[b] > 1:
                    m = row.copy()
                    m[a] += 1
                    m[b] -= 1
                    assert kl_bits(p, m, R) >= best - 1e-6
    np.testing.assert_array_equal(fse.normalize_counts(P[2], R), q[2])   # 1-D row
    np.testing.assert_array_equal(fse.normalize_counts(P * 7.5, R), q)   # unnormalised rows


def test_normalize_counts_errors():
    with pytest.raises(ValueError, match="finite"):
        fse.normalize_counts([[0.5, np.nan, 0.5]], 6)
    with pytest.raises(ValueError, match="finite"):
        fse.normalize_counts([[0.5, -0.1, 0.6]], 6)
    with pytest.raises(ValueError, match="row 1 of pmf sums to 0"):
        fse.normalize_counts([[0.5, 0.5], [0.0, 0.0]], 6)
    with pytest.raises(ValueError, match="do not fit"):
        fse.normalize_counts(np.ones((1, 33)), 5)
    with pytest.raises(ValueError, match="table_log"):
        fse.normalize_counts(np.ones((1, 4)), 13)
    with pytest.raises(TypeError):
        fse.normalize_counts([["a", "b"]], 6)
    with pytest.raises(ValueError):
        fse.normalize_counts(np.ones((2, 2, 2)), 6)


# ----------------------------------------------------------------------------- GIL

def test_gil_released_during_coding():
    """The main thread keeps running Python code while another thread is inside one long
    compress_classes / decompress_classes call."""
    vals, cls = gauss_data(1 << 23, SIGMAS, seed=21)
    blob = fse.compress_classes(vals, cls, TABLES)
    for call in (lambda: fse.compress_classes(vals, cls, TABLES),
                 lambda: fse.decompress_classes(blob, cls, TABLES)):
        started = threading.Event()

        def work():
            started.set()
            call()

        t = threading.Thread(target=work)
        t.start()
        started.wait()
        ticks = 0
        while t.is_alive():
            ticks += 1
        t.join()
        assert ticks > 1000   # a call holding the GIL would block this loop until it returns
