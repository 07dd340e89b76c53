"""The class coder with zero counts (docs/entropy.md "Class coder"): value symbols of count 0
are escaped, the escape payload (Exp-Golomb of |v| + 1, then a sign bit if v != 0) bit for
bit, canonical escapes, edge tables (everything escaped, one value symbol), and
normalize_counts(min_count=0): validity, cost against min_count=1, local optimality, errors,
and the gain for the narrowest scale classes.

Set L3IC_FSE_SO=/path/to/_fse.so to test another build (benchmarks/fse_asan.sh)."""
import numpy as np
import pytest
from _fse_class_data import (FSEError, SIGMAS0, TABLES0, VMAX, escape_bits, escaped, fse,
                             gauss_data, gauss_pmf, ideal_bits, payload, roundtrip)

# E = 3, R = 6: class 0 codes -1, 1, 2 directly (0 has count 0), class 1 escapes everything
# (escape count 2^R: no state bits), class 2 codes only 0, class 3 has every count >= 1
ZQ = np.array([[0, 0, 10, 0, 20, 30, 0, 4],
               [0, 0, 0, 0, 0, 0, 0, 64],
               [0, 0, 0, 63, 0, 0, 0, 1],
               [8, 8, 8, 8, 8, 8, 8, 8]])
ZT = fse.ClassTables(ZQ, 6)


def one(v, c):
    return fse.compress_classes(np.array([v], np.int32), np.array([c], np.uint8), ZT)


def test_zero_count_tables():
    assert (ZT.counts == ZQ).all() and ZT.escape_limit == 3
    fse.ClassTables([[4095] + [0] * 40 + [1]], 12)   # one value symbol and the escape
    with pytest.raises(ValueError, match=r"escape count \[1, 7\] is 0"):
        fse.ClassTables([[0] * 7 + [32], [32] + [0] * 7], 5)
    with pytest.raises(ValueError, match=r"count \[0, 2\] is -1"):
        fse.ClassTables([[0, 0, -1, 0, 0, 0, 0, 33]], 5)


@pytest.mark.parametrize("n", [1, 7, 300, 20_000, 40_000])
def test_roundtrip_zero_counts(n):
    rng = np.random.default_rng(n)
    vals = rng.integers(-5, 6, n)
    big = rng.random(n) < 0.05
    vals[big] = rng.choice([-1, 1], int(big.sum())) * rng.integers(0, VMAX + 1, int(big.sum()))
    cls = rng.integers(0, 4, n).astype(np.uint8)
    roundtrip(vals.astype(np.int32), cls, ZT)
    esc = escaped(vals, cls, ZT)
    assert esc[cls == 1].all() and (esc[(cls == 0) & (vals == 0)]).all()


@pytest.mark.parametrize("v", [0, 1, -1, 2, -2, 3, -3, 4, -4, 1000, -1000, VMAX, -VMAX])
def test_payload_bits(v):
    """Class 1 (escape count 2^R, 0 state bits): the stream is exactly the payload, then
    the final state (R = 6 bits) and the end marker, then zero padding."""
    x = int.from_bytes(one(v, 1), "little")
    bits, nbits = payload(v)
    assert x & ((1 << nbits) - 1) == bits
    assert x.bit_length() == nbits + 7
    assert nbits == 2 * (abs(v) + 1).bit_length() - 1 + (v != 0)
    if v == -2:   # |v| + 1 = 3 = 11b, z = 1: sign 1, then 1, 1, 0 (LSB first)
        assert (bits, nbits) == (0b0111, 4)


def test_zero_count_value_is_escaped():
    """v = 0 in class 0 (count 0) is the escape symbol with payload '1' (no sign bit); v = 1
    is coded directly; v = 0 in class 2 directly."""
    assert payload(0) == (1, 1)
    for v, c in ((0, 0), (-2, 0), (3, 0), (1, 0), (0, 2), (1, 2), (0, 3), (4, 3)):
        np.testing.assert_array_equal(
            fse.decompress_classes(one(v, c), np.array([c], np.uint8), ZT), [v])
    vals = np.zeros(5000, np.int32)
    cls = np.zeros(5000, np.uint8)
    small = len(fse.compress_classes(vals, cls + 2, ZT))   # ~0.02 bits per value
    assert len(fse.compress_classes(vals, cls, ZT)) > 5000 * 4 / 8 > 10 * small


def forge(v0, c, bits, nbits):
    """The one-value stream of escaped v0 in class c, its payload replaced by `bits`."""
    x = int.from_bytes(one(v0, c), "little")
    pb, pn = payload(v0)
    assert x & ((1 << pn) - 1) == pb
    y = ((x >> pn) << nbits) | bits
    return y.to_bytes((y.bit_length() + 7) // 8, "little")


@pytest.mark.parametrize("c, v", [(0, 1), (0, -1), (0, 2), (2, 0), (3, 0), (3, -3), (3, 3)])
def test_escape_of_codeable_value_rejected(c, v):
    with pytest.raises(FSEError, match="escape of a value its class codes directly"):
        fse.decompress_classes(forge(4, c, *payload(v)), np.array([c], np.uint8), ZT)


def test_escapes_of_zero_count_values_valid():
    cls = np.array([0], np.uint8)
    for v in (0, -2, 3, -3, 5):   # zero-count or out of range in class 0: decodes, then
        blob = forge(4, 0, *payload(v))   # the final state (of value 4) does not match
        with pytest.raises(FSEError, match="final decoder state"):
            fse.decompress_classes(blob, cls, ZT)
        assert forge(v, 0, *payload(v)) == one(v, 0)


def test_no_negative_zero():
    """0 has no sign bit: a '1' after its payload is a bit left over, not a sign."""
    for c in (0, 1):
        with pytest.raises(FSEError, match="left over"):
            fse.decompress_classes(forge(0, c, 0b11, 2), np.array([c], np.uint8), ZT)


@pytest.mark.parametrize("zt", [True, False])
def test_byte_flips_canonical(zt):
    """Changed streams (zero-count tables): FSEError, or different values whose stream is
    exactly the changed one (at R = 6 about 1 change in 64 passes the final state check)."""
    rng = np.random.default_rng(3)
    if zt:
        t, vals, cls = ZT, rng.integers(-6, 7, 300), rng.integers(0, 4, 300).astype(np.uint8)
    else:
        t, (vals, cls) = TABLES0, gauss_data(300, SIGMAS0, seed=3, scale=2.0)
    blob = fse.compress_classes(vals, cls, t)
    accepted = 0
    for i in range(len(blob)):
        for _ in range(8):
            b = bytearray(blob)
            b[i] ^= int(rng.integers(1, 256))
            try:
                out = fse.decompress_classes(bytes(b), cls, t)
            except FSEError:
                continue
            accepted += 1
            assert not np.array_equal(out, vals)
            assert fse.compress_classes(out, cls, t) == bytes(b)
    assert accepted < len(blob) * 8 // 16


def test_everything_escaped_and_single_symbol():
    rng = np.random.default_rng(5)
    vals = rng.integers(-40, 41, 40_000).astype(np.int32)
    blob = roundtrip(vals, np.ones(40_000, np.uint8), ZT)
    assert len(blob) == (escape_bits(vals) + 4 * 6 + 1 + 7) // 8   # payloads + final states
    t = fse.ClassTables([[0] * 20 + [4095] + [0] * 20 + [1]], 12)
    vals = np.zeros(100_000, np.int32)
    vals[::10_000] = [3, 0, -1, 0, 0, 20, -21, 0, 0, 7]
    blob = roundtrip(vals, np.zeros(100_000, np.uint8), t)
    assert len(blob) * 8 <= ideal_bits(vals, np.zeros(100_000, np.uint8), t) + 64


# ----------------------------------------------------------------------------- normalize_counts

def cost(p, q, R):
    """Expected bits per value (row_cost of fse_class.c): zero-count values escaped."""
    p = p / p.sum()
    E, L = (len(p) - 2) // 2, 1 << R
    v = np.arange(len(p) - 1) - E
    zero = np.append(q[:-1] == 0, False)
    pe = p[-1] + p[:-1][zero[:-1]].sum()
    live = (q > 0) & (p > 0) & ~np.eye(1, len(p), len(p) - 1, dtype=bool)[0]
    pay = 2 * np.floor(np.log2(np.abs(v) + 1)) + 1 + (v != 0)
    return float((p[live] * (R - np.log2(q[live]))).sum() + pe * (R - np.log2(q[-1]))
                 + (p[:-1][zero[:-1]] * pay[zero[:-1]]).sum())


SIG = (0.05, 0.11, 0.2, 0.4, 1, 3, 10, 100)


@pytest.mark.parametrize("E, R", [(3, 5), (15, 8), (30, 12)])
def test_normalize_min_count_zero(E, R):
    P = np.array([gauss_pmf(s, E) for s in SIG])
    P[-1, 2] = 0.0   # probability 0: count 0
    q0 = fse.normalize_counts(P, R, min_count=0).astype(np.int64)
    q1 = fse.normalize_counts(P, R).astype(np.int64)
    assert (q0.sum(axis=1) == 1 << R).all() and (q0[:, -1] >= 1).all() and q0[-1, 2] == 0
    assert (q0[0] == 0).any() and (q0[5, E - 3:E + 4] > 0).all()   # sigma 0.05; 3: |v| <= 3
    for p, a, b in zip(P, q0, q1):
        best = cost(p, a, R)
        assert best <= cost(p, b, R) + 1e-9
        for i in range(len(a)):   # no unit move lowers the cost, to or from 0 included
            for j in range(len(a)):
                if i != j and a[j] > (1 if j == len(a) - 1 else 0):
                    m = a.copy()
                    m[i] += 1
                    m[j] -= 1
                    assert cost(p, m, R) >= best - 1e-9, (i, j)
    np.testing.assert_array_equal(fse.normalize_counts(P[1], R, min_count=0), q0[1])
    np.testing.assert_array_equal(fse.normalize_counts(P * 3, R, min_count=0), q0)


def test_normalize_min_count_errors():
    for bad in (2, -1, True, 0.5, "0"):
        with pytest.raises(ValueError, match="min_count"):
            fse.normalize_counts(np.ones(8), 6, min_count=bad)
    for S in (7, 2, 258):
        with pytest.raises(ValueError, match="min_count=0 needs class table rows"):
            fse.normalize_counts(np.ones(S), 9, min_count=0)
    with pytest.raises(TypeError):
        fse.normalize_counts(np.ones(8), 6, 0)   # keyword only


@pytest.mark.parametrize("E, R", [(30, 12), (20, 10)])
def test_narrow_class_gain(E, R):
    """sigma = 0.11 (p(0) ~ 1 - 5.5e-6): min_count=1 caps q(0) at 2^R - 2E - 1 (0.02 bit per
    value at R = 12), min_count=0 gives q(0) = 2^R - 1."""
    p = gauss_pmf(0.11, E)
    rng = np.random.default_rng(0)
    vals = np.rint(rng.normal(0.0, 0.11, 400_000)).astype(np.int32)
    cls = np.zeros(len(vals), np.uint8)
    size = {}
    for mc in (0, 1):
        t = fse.ClassTables(fse.normalize_counts(p[None], R, min_count=mc), R)
        blob = roundtrip(vals, cls, t)
        size[mc] = len(blob) * 8 / len(vals)
        assert len(blob) * 8 <= ideal_bits(vals, cls, t) * 1.02 + 64
    assert t.counts[0, E] == (1 << R) - 2 * E - 1
    assert size[0] < 2.0 / (1 << R) + 1e-4 and size[1] > 0.005 + size[0]
