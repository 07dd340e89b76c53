"""Shared data for the class coder tests (tests/test_fse_class*.py): Gaussian class tables
(every count >= 1: TABLES; with zero counts: TABLES0), latent-like values, the escape payload,
the ideal cost, a round-trip helper.  Uses the extension under test
(_fse_build.load_fse: L3IC_FSE_SO names another build)."""
import math

import numpy as np
from _fse_build import load_fse

fse = load_fse()
FSEError = fse.FSEError
VMAX = 1 << 20


def gauss_pmf(sigma, E):
    """Discretised N(0, sigma) over -E..E, then the escape's mass (>= 1e-6)."""
    cdf = [0.5 * (1 + math.erf((v + 0.5) / (sigma * math.sqrt(2)))) for v in range(-E - 1, E + 1)]
    p = np.diff(cdf)
    return np.append(p, max(1e-6, 1.0 - p.sum()))


def gauss_tables(E=20, R=12, sigmas=(0.15, 0.3, 0.6, 1.2, 2.5, 5, 10, 20), min_count=1):
    P = np.array([gauss_pmf(s, E) for s in sigmas])
    return (fse.ClassTables(fse.normalize_counts(P, R, min_count=min_count), R),
            np.asarray(sigmas))


def gauss_data(n, sigmas, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, len(sigmas), n).astype(np.uint8)
    vals = np.rint(rng.normal(0.0, 1.0, n) * sigmas[cls] * scale).astype(np.int32)
    return vals, cls


def payload(v):
    """The escape payload of v as (bits, length), bit 0 written first: the sign bit if v != 0
    (1 = negative), then u + 1 = |v| + 1 in 2z + 1 bits, z = bitlen(u + 1) - 1 (top z zero)."""
    u1 = abs(int(v)) + 1
    z = u1.bit_length() - 1
    if v == 0:
        return u1, 2 * z + 1
    return (u1 << 1) | (v < 0), 2 * z + 2


def escaped(vals, cls, t):
    """Which values are escapes: |v| > E, or a count of 0 in their class."""
    E, q = t.escape_limit, t.counts
    inside = np.abs(vals) <= E
    esc = ~inside
    esc[inside] = q[cls[inside], vals[inside] + E] == 0
    return esc


def escape_bits(vals):
    """Bits of the escape payloads of vals: Exp-Golomb of |v| + 1, a sign bit if v != 0."""
    m = np.abs(vals.astype(np.int64))
    return int((2 * np.floor(np.log2(m + 1)) + 1 + (m != 0)).sum())


def ideal_bits(vals, cls, t):
    """sum -log2(q / 2^R) of every value's symbol (the escape's for escaped values) plus the
    escape payload bits."""
    E, q = t.escape_limit, t.counts.astype(np.float64)
    esc = escaped(vals, cls, t)
    idx = np.where(esc, 2 * E + 1, vals + E)
    return float(-np.log2(q[cls, idx] / (1 << t.table_log)).sum()) + escape_bits(vals[esc])


TABLES, SIGMAS = gauss_tables()
# zero counts: min_count=0 tables (40 of 41 value counts are 0 for sigma 0.11, none at 6, 12)
TABLES0, SIGMAS0 = gauss_tables(sigmas=(0.11, 0.2, 0.4, 0.8, 1.6, 3, 6, 12), min_count=0)


def roundtrip(vals, cls, t):
    blob = fse.compress_classes(vals, cls, t)
    out = fse.decompress_classes(blob, cls, t)
    assert out.dtype == np.int32 and out.shape == (len(cls),)
    np.testing.assert_array_equal(out, vals)
    return blob
