"""BD-rate (Bjontegaard delta rate) for benchmarks/rd.py: as ../shared/bench/rd.py, log(rate) as
a PCHIP function of quality, mean difference over the common quality range; the PCHIP is written
in numpy (same slopes as scipy.interpolate.PchipInterpolator) so scipy is not needed.
"""
from __future__ import annotations

import math

import numpy as np


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Derivatives of the monotone PCHIP interpolant (as scipy.interpolate.PchipInterpolator)."""
    h, m = np.diff(x), np.diff(y) / np.diff(x)
    if len(x) == 2:
        return np.array([m[0], m[0]])
    d = np.zeros_like(y)
    w1, w2 = 2 * h[1:] + h[:-1], h[1:] + 2 * h[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        dk = (w1 + w2) / (w1 / m[:-1] + w2 / m[1:])
    flat = (np.sign(m[1:]) != np.sign(m[:-1])) | (m[1:] == 0) | (m[:-1] == 0)
    d[1:-1] = np.where(flat, 0.0, dk)

    def edge(h0, h1, m0, m1):
        e = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
        if np.sign(e) != np.sign(m0):
            return 0.0
        if np.sign(m0) != np.sign(m1) and abs(e) > 3 * abs(m0):
            return 3 * m0
        return e
    d[0] = edge(h[0], h[1], m[0], m[1])
    d[-1] = edge(h[-1], h[-2], m[-1], m[-2])
    return d


def pchip_integral(x, y, lo: float, hi: float) -> float:
    """Exact integral over [lo, hi] (inside [x0, xn]) of the PCHIP through (x, y)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    d = _pchip_slopes(x, y)
    total = 0.0
    for i in range(len(x) - 1):
        a, b = max(lo, x[i]), min(hi, x[i + 1])
        if b <= a:
            continue
        h = x[i + 1] - x[i]
        c = (y[i], h * d[i], 3 * (y[i + 1] - y[i]) - h * (2 * d[i] + d[i + 1]),
             2 * (y[i] - y[i + 1]) + h * (d[i] + d[i + 1]))
        ta, tb = (a - x[i]) / h, (b - x[i]) / h
        total += h * sum(ck * (tb ** (k + 1) - ta ** (k + 1)) / (k + 1) for k, ck in enumerate(c))
    return total


def _clean_curve(rate, dist):
    """Sort by rate, keep points whose quality strictly increases (shared/bench/rd.py)."""
    out = []
    for r, q in sorted((r, q) for r, q in zip(rate, dist)
                       if r > 0 and math.isfinite(r) and math.isfinite(q)):
        if not out or q > out[-1][1]:
            out.append((r, q))
    return [p[0] for p in out], [p[1] for p in out]


def bd_rate(rate_ref, dist_ref, rate_test, dist_test):
    """BD-rate (%) of test vs ref; (pct, lo, hi, n_ref, n_test).  After shared/bench/rd.py:
    log(rate) as a PCHIP function of quality, mean difference over the common quality range."""
    r1, d1 = _clean_curve(rate_ref, dist_ref)
    r2, d2 = _clean_curve(rate_test, dist_test)
    if len(r1) < 2 or len(r2) < 2:
        return math.nan, math.nan, math.nan, len(r1), len(r2)
    lo, hi = max(min(d1), min(d2)), min(max(d1), max(d2))
    if not hi > lo:
        return math.nan, lo, hi, len(r1), len(r2)
    diff = pchip_integral(d2, np.log(r2), lo, hi) - pchip_integral(d1, np.log(r1), lo, hi)
    return (math.exp(diff / (hi - lo)) - 1) * 100, lo, hi, len(r1), len(r2)
