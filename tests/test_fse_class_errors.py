"""The class coder's error paths (docs/entropy.md "Class coder"): truncated, extended,
corrupted streams, wrong classes or tables, over-long and non-canonical escapes (only
FSEError, never a crash, never the original values from a changed stream), encoder input
errors and argument checks.

Set L3IC_FSE_SO=/path/to/_fse.so to test another build (benchmarks/fse_asan.sh)."""
import numpy as np
import pytest
from _fse_class_data import (FSEError, SIGMAS, TABLES, VMAX, fse, gauss_data, gauss_tables,
                             payload)


# ----------------------------------------------------------------------------- bad streams

def small_stream(n=300, seed=11):
    vals, cls = gauss_data(n, SIGMAS, seed=seed, scale=2.0)
    return vals, cls, fse.compress_classes(vals, cls, TABLES)


def decode_or_error(blob, cls, t=TABLES):
    """None if FSEError, else the decoded values (any other exception propagates)."""
    try:
        return fse.decompress_classes(blob, cls, t)
    except FSEError:
        return None


@pytest.mark.parametrize("n", [1, 5, 300, 20_000])
def test_truncation_always_fails(n):
    vals, cls, blob = small_stream(n)
    cuts = range(len(blob)) if len(blob) < 400 else np.linspace(0, len(blob) - 1, 200).astype(int)
    for k in cuts:
        with pytest.raises(FSEError):
            fse.decompress_classes(blob[:k], cls, TABLES)
        if k:
            assert decode_or_error(blob[k:], cls) is None or n == 1


@pytest.mark.parametrize("n", [1, 300, 20_000])
def test_trailing_bytes(n):
    vals, cls, blob = small_stream(n)
    with pytest.raises(FSEError, match="end marker"):
        fse.decompress_classes(blob + b"\0", cls, TABLES)
    silent = 0
    for extra in (b"\x01", b"\x80", b"\xff", b"\x01\x00\x01", bytes(range(1, 9))):
        out = decode_or_error(blob + extra, cls)
        silent += out is not None
        assert out is None or not np.array_equal(out, vals)
    assert silent == 0 or n < 16384


@pytest.mark.parametrize("n", [300, 4096, 40_000])
def test_byte_flips(n):
    """Every byte (or 600 sampled) xor-ed with a random value: FSEError, or (at the rate of
    the S*R-bit final state check) different values; never a crash or the same values."""
    vals, cls, blob = small_stream(n, seed=n)
    rng = np.random.default_rng(n)
    where = range(len(blob)) if len(blob) <= 600 else rng.choice(len(blob), 600, replace=False)
    silent = 0
    for i in where:
        b = bytearray(blob)
        b[i] ^= int(rng.integers(1, 256))
        out = decode_or_error(bytes(b), cls)
        if out is not None:
            assert not np.array_equal(out, vals)
            silent += 1
    # 1 state x 12 bits below 16,384 values, 4 x 12 from 32,000 on
    assert silent <= (3 if n < 16384 else 0), silent


def test_wrong_classes():
    vals, cls, blob = small_stream(40_000)
    other = (cls + 1) % TABLES.classes
    with pytest.raises(FSEError):
        fse.decompress_classes(blob, other, TABLES)
    swapped = cls.copy()
    swapped[[10, 20]] = (cls[[10, 20]] + 3) % TABLES.classes
    with pytest.raises(FSEError):
        fse.decompress_classes(blob, swapped, TABLES)
    with pytest.raises(FSEError):   # wrong n: too few or too many classes
        fse.decompress_classes(blob, cls[:-1], TABLES)
    with pytest.raises(FSEError):
        fse.decompress_classes(blob, np.append(cls, cls[:1]), TABLES)
    t2, _ = gauss_tables(E=20, R=11)   # other tables
    with pytest.raises(FSEError):
        fse.decompress_classes(blob, cls, t2)


def test_class_out_of_range_at_decode():
    vals, cls, blob = small_stream(50)
    bad = cls.copy()
    bad[7] = TABLES.classes
    with pytest.raises(ValueError, match="class index out of range") as e:
        fse.decompress_classes(blob, bad, TABLES)
    assert not isinstance(e.value, FSEError)
    with pytest.raises(ValueError, match="channel 0: class index"):
        fse.decompress_classes_batch([blob], bad[None], TABLES)


def forge(v0, bits, nbits, t=TABLES, c=0):
    """The one-value stream of the escaped value v0 (class c) with its escape payload (the
    low bits of the stream: written first) replaced by the nbits bits `bits`."""
    blob = fse.compress_classes(np.array([v0], np.int32), np.array([c], np.uint8), t)
    x = int.from_bytes(blob, "little")
    pb, pn = payload(v0)
    assert x & ((1 << pn) - 1) == pb                    # the documented payload
    y = ((x >> pn) << nbits) | bits
    return y.to_bytes((y.bit_length() + 7) // 8, "little")


def eg(u1, zeros=None, sign=0):
    """Payload bits: the sign bit, then u1 in 2 zeros + 1 bits (zeros: bitlen(u1) - 1)."""
    z = u1.bit_length() - 1 if zeros is None else zeros
    return (u1 << 1) | sign, 2 * z + 2


def test_escape_payload_too_long():
    one, E = np.zeros(1, np.uint8), TABLES.escape_limit
    assert fse.decompress_classes(forge(E + 1, *payload(E + 1)), one, TABLES)[0] == E + 1
    for u1 in (1 << 21, 1 << 40, (1 << 21) - 1, VMAX + 2):   # z = 21, 40; |v| > 2^20
        with pytest.raises(FSEError, match="escape payload too long"):
            fse.decompress_classes(forge(E + 1, *eg(u1)), one, TABLES)
    for bits, nbits in ((0, 0), (0, 5), (1 << 20, 41)):   # zeros down to the stream start
        with pytest.raises(FSEError, match="too short"):
            fse.decompress_classes(forge(E + 1, bits, nbits), one, TABLES)
    # a well-formed code for another escaped value: decodes, fails the final state check
    with pytest.raises(FSEError, match="final decoder state"):
        fse.decompress_classes(forge(E + 1, *eg(63)), one, TABLES)


def test_escape_of_directly_coded_value():
    """Canonical streams: an escape whose value its class codes directly (|v| <= E, count
    > 0) is refused, so there is one stream per value sequence."""
    one, E = np.zeros(1, np.uint8), TABLES.escape_limit
    for v in (0, 5, -5, E, -E):
        with pytest.raises(FSEError, match="escape of a value its class codes directly"):
            fse.decompress_classes(forge(E + 1, *payload(v)), one, TABLES)
    with pytest.raises(FSEError, match="final decoder state"):   # |v| > E: a valid escape
        fse.decompress_classes(forge(E + 1, *payload(-(E + 1))), one, TABLES)


# ----------------------------------------------------------------------------- encoder errors

def test_value_out_of_range_at_encode():
    cls = np.zeros(3, np.uint8)
    for bad in (VMAX + 1, -VMAX - 1, 2**31 - 1, -2**31):
        with pytest.raises(ValueError, match=r"2\^20"):
            fse.compress_classes(np.array([0, bad, 0], np.int32), cls, TABLES)
    for bad in (2**32 + 5, -2**40, 2**20 + 1):   # wider dtypes: checked before the cast
        with pytest.raises(ValueError, match=r"2\^20"):
            fse.compress_classes(np.array([0, bad, 0], np.int64), cls, TABLES)
    with pytest.raises(ValueError, match=r"2\^20"):
        fse.compress_classes(np.array([0, 2**32 - 1, 0], np.uint32), cls, TABLES)


def test_class_out_of_range_at_encode():
    vals = np.zeros(4, np.int32)
    for bad in ([0, 8, 0, 0], [255, 0, 0, 0]):
        with pytest.raises(ValueError, match="class index out of range"):
            fse.compress_classes(vals, np.array(bad, np.uint8), TABLES)
    for bad in ([0, -1, 0, 0], [0, 256, 0, 0], [0, 8, 0, 0]):
        with pytest.raises(ValueError, match="class index out of range"):
            fse.compress_classes(vals, np.array(bad, np.int64), TABLES)
    with pytest.raises(ValueError, match="channel 1: class index"):
        fse.compress_classes_batch(np.zeros((2, 4), np.int32),
                                   np.array([[0, 1, 2, 3], [0, 9, 0, 0]], np.uint8), TABLES)


# ----------------------------------------------------------------------------- arguments

def test_argument_checks():
    vals, cls = np.zeros(4, np.int32), np.zeros(4, np.uint8)
    with pytest.raises(TypeError, match="ClassTables"):
        fse.compress_classes(vals, cls, TABLES.counts)
    with pytest.raises(TypeError, match="ClassTables"):
        fse.decompress_classes(b"", cls[:0], None)
    with pytest.raises(TypeError, match="integer"):
        fse.compress_classes(vals.astype(np.float32), cls, TABLES)
    with pytest.raises(TypeError, match="integer"):
        fse.compress_classes(vals, cls.astype(np.float64), TABLES)
    with pytest.raises(TypeError, match="1-D"):
        fse.compress_classes(vals.reshape(2, 2), cls.reshape(2, 2), TABLES)
    with pytest.raises(ValueError, match="differ in length"):
        fse.compress_classes(vals, cls[:3], TABLES)
    with pytest.raises(TypeError, match="blob"):
        fse.decompress_classes(12, cls, TABLES)
    with pytest.raises(TypeError, match="2-D"):
        fse.compress_classes_batch(vals, cls, TABLES)
    with pytest.raises(ValueError, match="differ in shape"):
        fse.compress_classes_batch(vals.reshape(2, 2), cls.reshape(1, 4), TABLES)
    with pytest.raises(ValueError, match="2 streams but 1 rows"):
        fse.decompress_classes_batch([b"", b""], cls.reshape(1, 4), TABLES)
    with pytest.raises(TypeError, match="iterable"):
        fse.decompress_classes_batch(5, cls.reshape(1, 4), TABLES)
    with pytest.raises(TypeError, match="threads"):
        fse.compress_classes_batch(vals.reshape(2, 2), cls.reshape(2, 2), TABLES, threads=1.0)
    assert len(fse.compress_classes_batch(vals.reshape(2, 2), cls.reshape(2, 2), TABLES,
                                          threads=np.int32(2))) == 2


def test_argument_checks_before_allocation():
    """Huge broadcast views (no memory behind them) are refused by the cheap checks first."""
    big_v = np.broadcast_to(np.int64(0), (4096, 1 << 24))
    big_c = np.broadcast_to(np.uint8(0), (4096, 1 << 24))
    with pytest.raises(ValueError, match="threads"):
        fse.compress_classes_batch(big_v, big_c, TABLES, threads=-1)
    with pytest.raises(ValueError, match="threads"):
        fse.decompress_classes_batch([b""] * 4096, big_c, TABLES, threads=-1)
    with pytest.raises(ValueError, match="differ in length"):
        fse.compress_classes(big_v[0], big_c[0, 1:], TABLES)
