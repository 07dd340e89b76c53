"""Shared data for the class coder tests (tests/test_fse_class*.py): Gaussian class tables,
latent-like values, the ideal cost, a round-trip helper.  Uses the extension under test
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


def gauss_tables(E=20, R=12, sigmas=(0.15, 0.3, 0.6, 1.2, 2.5, 5, 10, 20)):
    P = np.array([gauss_pmf(s, E) for s in sigmas])
    return fse.ClassTables(fse.normalize_counts(P, R), R), np.asarray(sigmas)


def gauss_data(n, sigmas, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, len(sigmas), n).astype(np.uint8)
    vals = np.rint(rng.normal(0.0, 1.0, n) * sigmas[cls] * scale).astype(np.int32)
    return vals, cls


def escape_bits(vals, E):
    """Bits of the escape payloads: sign + Exp-Golomb order 0 of |v| - E - 1."""
    u1 = np.abs(vals[np.abs(vals) > E]).astype(np.int64) - E
    return int((2 + 2 * np.floor(np.log2(u1))).sum())


def ideal_bits(vals, cls, t):
    E, q = t.escape_limit, t.counts.astype(np.float64)
    idx = np.where(np.abs(vals) <= E, vals + E, 2 * E + 1)
    return float(-np.log2(q[cls, idx] / (1 << t.table_log)).sum()) + escape_bits(vals, E)


TABLES, SIGMAS = gauss_tables()


def roundtrip(vals, cls, t):
    blob = fse.compress_classes(vals, cls, t)
    out = fse.decompress_classes(blob, cls, t)
    assert out.dtype == np.int32 and out.shape == (len(cls),)
    np.testing.assert_array_equal(out, vals)
    return blob
