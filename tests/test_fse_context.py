"""The spatial-context variant of the entropy coder ('tans-ctx', docs/entropy.md).

Round trips on random and structured 2-D channels, the choice (only when smaller),
determinism, the width checks, stream_info, hand-made header errors, and plain streams
unchanged byte for byte (hashes of streams written before the variant existed).
"""
import hashlib

import numpy as np
import pytest
from _fse_build import load_fse
from hypothesis import HealthCheck, given, settings, strategies as st


fse = load_fse()
FSEError = fse.FSEError


def lap(n, b, seed, center=15, alphabet=32):
    y = np.random.default_rng(seed).laplace(0.0, b, n)
    return bytes(np.clip(np.rint(y) + center, 0, alphabet - 1).astype(np.uint8))


def field(h, w, seed=0, quiet=0.35, busy=2.5):
    """Latent-like channel: mostly the zero index 15, with busy regions (larger
    values) that extend over neighbouring rows and columns."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    ph = rng.uniform(0, 6.3, 2)
    busy_region = (np.sin(yy / 6.0 + ph[0]) + np.cos(xx / 4.5 + ph[1])) > 0.9
    scale = np.where(busy_region, busy, quiet)
    y = rng.laplace(0.0, 1.0, (h, w)) * scale
    return np.clip(np.rint(y) + 15, 0, 31).astype(np.uint8)


def roundtrip(data, width):
    data = bytes(data)
    plain = fse.compress(data)
    blob = fse.compress(data, width=width)
    assert fse.decompress(blob, len(data), width=width) == data
    assert len(blob) <= len(plain)
    info = fse.stream_info(blob)
    if info["mode"] == "tans-ctx":
        assert len(blob) < len(plain)
    else:
        assert blob == plain   # not smaller: the plain stream, byte for byte
    return blob, info


# ---------------------------------------------------------------- round trips and choice
@pytest.mark.parametrize("h, w", [(64, 64), (136, 240), (130, 130), (8, 512), (512, 8),
                                  (300, 1), (1, 300)])
def test_structured_roundtrip(h, w):
    a = field(h, w, seed=h * 1000 + w)
    blob, info = roundtrip(a.ravel(), w)
    if min(h, w) >= 8:
        assert info["mode"] == "tans-ctx", (h, w)


def test_structured_gain():
    """On latent-like data the context tables save a few per cent."""
    a = field(136, 240, seed=7).ravel()
    plain, ctx = len(fse.compress(a)), len(fse.compress(a, width=240))
    assert ctx < 0.97 * plain, (ctx, plain)


@pytest.mark.parametrize("width", [1, 7, 4096])
def test_widths_one_and_n(width):
    data = lap(4096 // width * width, 0.7, 11)
    roundtrip(data, width)


def test_width_n_and_one_use_one_neighbour():
    """Width n: one row, only left neighbours; width 1: one column, only upper ones.
    Both code the same sequence with the same contexts, so the streams are equal."""
    a = field(1, 5000, seed=3).ravel()
    assert fse.compress(a, width=5000) == fse.compress(a, width=1)
    assert fse.stream_info(fse.compress(a, width=1))["mode"] == "tans-ctx"


@pytest.mark.parametrize("n", [1, 2, 5000])
def test_all_equal(n):
    data = b"\x0f" * n
    blob, info = roundtrip(data, 1 if n < 50 else 50)
    assert info["mode"] == "run"


def test_only_some_contexts():
    """A channel whose non-m symbols (m + 1) lie on one colour of a checkerboard: no
    symbol has d > 2, so context 2 is unused; and one in which only contexts 0 and 2
    occur (every non-m symbol is 10 away from m, on even rows and columns)."""
    a = np.full((64, 64), 15, np.uint8)
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:64, 0:64]
    a[((yy + xx) % 2 == 0) & (rng.random((64, 64)) < 0.5)] = 16   # a checkerboard's squares
    blob, info = roundtrip(a.ravel(), 64)
    assert info["mode"] == "tans-ctx"
    assert [_get_bits(blob, TAGS + 2 * k, 2) for k in range(3)] == [1, 1, 0]
    b = np.full((64, 64), 15, np.uint8)
    b[::2, ::2] = np.where(rng.random((32, 32)) < 0.5, 25, 15)
    blob, info = roundtrip(b.ravel(), 64)
    assert info["mode"] == "tans-ctx"
    assert [_get_bits(blob, TAGS + 2 * k, 2) for k in range(3)] == [1, 0, 1]


def test_symbol_in_an_unused_context_fails():
    """A stream whose context 2 has no table (symbols m and m + 1 only): bit flips that make
    the decoder meet context 2 (e.g. a table changed to hold m + 3) fail with the context
    error; no flip decodes to wrong data."""
    a = np.full((64, 64), 15, np.uint8)
    yy, xx = np.mgrid[0:64, 0:64]
    a[((yy + xx) % 2 == 0) & (np.random.default_rng(4).random((64, 64)) < 0.5)] = 16
    data = a.tobytes()
    blob = fse.compress(data, width=64)
    assert fse.stream_info(blob)["context_tables"][2] is None
    messages = set()
    for bit in range(8 * len(blob)):
        m = bytearray(blob)
        m[bit >> 3] ^= 1 << (bit & 7)
        try:
            out = fse.decompress(bytes(m), 4096, width=64)
        except FSEError as e:
            messages.add(str(e))
            continue
        assert out == data, bit
    assert any("context tables" in msg for msg in messages), messages


def test_single_symbol_contexts():
    """Contexts whose symbols are all equal need a (two-symbol) table of their own."""
    a = np.full((40, 40), 15, np.uint8)
    a[:, 20:] = np.where(np.random.default_rng(2).random((40, 20)) < 0.5, 14, 16)
    roundtrip(a.ravel(), 40)


def test_symbols_above_31_stay_plain():
    data = lap(4096, 20.0, 5, center=128, alphabet=256)
    blob, info = roundtrip(data, 64)
    assert info["mode"] == "tans"


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1),
       st.sampled_from([0.2, 0.7, 2.0]), st.booleans())
def test_property_roundtrip(h, w, seed, busy, structured):
    a = field(h, w, seed, busy=busy) if structured else \
        np.frombuffer(lap(h * w, busy, seed), np.uint8).reshape(h, w)
    roundtrip(a.ravel(), w)


@SETTINGS
@given(st.integers(1, 64), st.binary(min_size=0, max_size=3000))
def test_property_arbitrary_bytes(w, raw):
    data = bytes(b & 31 for b in raw)[: len(raw) // w * w]
    roundtrip(data, w)


# ---------------------------------------------------------------- determinism and batches
def test_deterministic_and_batch_equals_single():
    rows = np.stack([field(68, 120, seed=s).ravel() for s in range(6)])
    single = [fse.compress(r, width=120) for r in rows]
    assert single == [fse.compress(r.tobytes(), width=120) for r in rows]
    for threads in (1, 2, 3):
        assert fse.compress_batch(rows, threads=threads, width=120) == single
        out = fse.decompress_batch(single, rows.shape[1], threads=threads, width=120)
        assert (out == rows).all()
    assert hashlib.sha256(b"".join(single)).hexdigest() == \
        hashlib.sha256(b"".join(fse.compress_batch(rows, width=120))).hexdigest()


# ---------------------------------------------------------------- width and n checks
CTX = fse.compress(field(64, 96, seed=5).ravel(), width=96)


def test_context_stream_needs_width():
    assert fse.stream_info(CTX)["mode"] == "tans-ctx"
    with pytest.raises(FSEError, match="row width"):
        fse.decompress(CTX)
    with pytest.raises(FSEError, match="row width"):
        fse.decompress(CTX, 64 * 96)
    with pytest.raises(FSEError, match="channel 0: .*row width"):
        fse.decompress_batch([CTX], 64 * 96)


def test_wrong_width_or_n():
    n = 64 * 96
    with pytest.raises(FSEError, match="multiple of the row width"):
        fse.decompress(CTX, n, width=100)
    with pytest.raises(FSEError, match="multiple of the row width"):
        fse.decompress(CTX, width=100)
    with pytest.raises(FSEError, match="channel 0"):
        fse.decompress_batch([CTX], n, width=100)
    for wrong in (48, 64, 192, 1, n):   # divides n, but the contexts differ
        with pytest.raises(FSEError):
            fse.decompress(CTX, n, width=wrong)
    with pytest.raises(FSEError, match="expected"):
        fse.decompress(CTX, n - 96, width=96)
    with pytest.raises(FSEError):
        fse.decompress_batch([CTX], n + 96, width=96)


def test_plain_streams_decode_with_any_dividing_width():
    data = lap(4096, 0.7, 3)
    blob = fse.compress(data)
    assert fse.decompress(blob, 4096, width=64) == data
    with pytest.raises(FSEError, match="multiple"):
        fse.decompress(blob, 4096, width=100)


def test_width_argument_checks():
    with pytest.raises(ValueError, match="rows of width"):
        fse.compress(b"\x01\x02\x03", width=2)
    with pytest.raises(ValueError, match="rows of width"):
        fse.compress_batch(np.zeros((2, 9), np.uint8), width=2)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="width"):
            fse.compress(b"\x01\x02", width=bad)
        with pytest.raises(ValueError, match="width"):
            fse.decompress(CTX, width=bad)
    for bad in (1.0, "2", True):
        with pytest.raises(TypeError, match="width"):
            fse.compress(b"\x01\x02", width=bad)
    assert fse.compress(b"", width=3) == fse.compress(b"")


def test_stream_info():
    info = fse.stream_info(CTX)
    assert info["n"] == 64 * 96 and info["size"] == len(CTX)
    assert 5 <= info["table_log"] <= 12 and info["states"] == 1
    assert info["ref_symbol"] == 15
    tags = [_get_bits(CTX, TAGS + 2 * k, 2) for k in range(3)]
    tabs = info["context_tables"]
    assert [t is not None for t in tabs] == [t != 0 for t in tags]
    assert "ref_symbol" not in fse.stream_info(fse.compress(b"\x01\x02" * 50))
    big = fse.compress(field(136, 240, seed=9).ravel(), width=240)
    assert fse.stream_info(big)["mode"] == "tans-ctx" and fse.stream_info(big)["states"] == 4


# ---------------------------------------------------------------- hand-made headers
def _set_bits(blob, pos, value, nbits):
    m = bytearray(blob)
    for k in range(nbits):
        byte, bit = (pos + k) >> 3, (pos + k) & 7
        m[byte] = (m[byte] & ~(1 << bit)) | (((value >> k) & 1) << bit)
    return bytes(m)


def _get_bits(blob, pos, nbits):
    return sum(((blob[(pos + k) >> 3] >> ((pos + k) & 7)) & 1) << k for k in range(nbits))


TAGS = 2 + 6 + 16 + 5 + 3   # bit position of the context tags (n < 2^15)


def test_header_layout():
    assert _get_bits(CTX, 0, 2) == 0                        # mode 0
    assert _get_bits(CTX, 2, 6) == 0b000011                 # '1' + 5-bit 1: the escape
    assert _get_bits(CTX, 8, 16) == (64 * 96) << 1          # '0' + 15-bit n
    assert _get_bits(CTX, 24, 5) == 15                      # m
    assert [_get_bits(CTX, TAGS + 2 * k, 2) for k in range(3)] != [0, 0, 0]


@pytest.mark.parametrize("tags, message", [
    ((3, 1, 1), "context tables"), ((2, 1, 1), "context tables"), ((0, 2, 1), "context tables"),
    ((0, 0, 0), "context tables"),
])
def test_bad_context_tags(tags, message):
    m = CTX
    for k, t in enumerate(tags):
        m = _set_bits(m, TAGS + 2 * k, t, 2)
    with pytest.raises(FSEError, match=message):
        fse.decompress(m, 64 * 96, width=96)
    with pytest.raises(FSEError, match=message):
        fse.stream_info(m)


def _bits_to_bytes(bits):
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        out[i >> 3] |= b << (i & 7)
    return bytes(out)


def test_escape_only_with_mode_0_and_once():
    with pytest.raises(FSEError, match="mode"):
        fse.stream_info(_set_bits(CTX, 0, 1, 2))          # mode 1 (8-bit symbols)
    bits = [_get_bits(CTX, i, 1) for i in range(8 * len(CTX))]
    twice = _bits_to_bytes(bits[:8] + bits[2:8] + bits[8:])  # the escape repeated
    with pytest.raises(FSEError, match="count field"):
        fse.stream_info(twice)
    for mode in (2, 3):                                     # run / raw with the escape
        with pytest.raises(FSEError, match="mode"):
            fse.stream_info(_set_bits(CTX, 0, mode, 2))


@pytest.mark.parametrize("length", [0, 2, 3, 8, 15])
def test_other_short_count_lengths_stay_invalid(length):
    """Only bit length 1 of the long count code is the escape; every other length below 16
    is still refused, as older decoders refuse all of them (hence also the escape: they
    never mis-decode a context stream)."""
    with pytest.raises(FSEError, match="count field"):
        fse.stream_info(_set_bits(CTX, 3, length, 5))


# ---------------------------------------------------------------- plain streams unchanged
GOLDEN = {   # sha256[:16] of fse.compress before the context variant (main @ f3fe38c)
    "lap_300": ("bec5708ef9f00780", lambda: lap(300, 1.5, 2)),
    "lap_4096": ("3f46afc8e770ef53", lambda: lap(4096, 0.7, 3)),
    "lap_20000": ("6489a904e10d44a5", lambda: lap(20000, 0.3, 4)),
    "lap_32640": ("036bed27ee7ab9a1", lambda: lap(32640, 0.7, 5)),
    "wide_3000": ("01a0c8c2f7bb599c", lambda: lap(3000, 30.0, 6, 128, 256)),
    "run": ("67426c017d0f7d15", lambda: b"\x0f" * 5000),
    "raw": ("6067630bd6058db1", lambda: bytes(range(256)) * 3),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_plain_streams_unchanged(name):
    digest, make = GOLDEN[name]
    data = make()
    blob = fse.compress(data)
    assert hashlib.sha256(blob).hexdigest()[:16] == digest
    assert fse.decompress(blob) == data and fse.decompress(blob, len(data)) == data
    assert fse.decompress_batch([blob], len(data), threads=1).tobytes() == data
