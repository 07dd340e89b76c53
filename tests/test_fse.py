"""Round-trip, API and property tests for the tANS entropy coder PIL_l3ic._fse.

Set L3IC_FSE_SO=/path/to/_fse.so to test another build of the extension (the
sanitizer script benchmarks/fse_asan.sh does this).
"""
import math

import numpy as np
import pytest
from _fse_build import load_fse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


fse = load_fse()
FSEError = fse.FSEError


def laplace_channel(n, b, seed=0, center=15, alphabet=32):
    rng = np.random.default_rng(seed)
    y = rng.laplace(0.0, b, n)
    return np.clip(np.rint(y) + center, 0, alphabet - 1).astype(np.uint8)


def entropy_bytes(a):
    a = np.frombuffer(bytes(a), np.uint8)
    c = np.bincount(a, minlength=256)
    p = c[c > 0] / len(a)
    return float(-(p * np.log2(p)).sum()) * len(a) / 8 if len(p) > 1 else 0.0


def stream_prefix_bits(mode, n):
    """Bits (LSB-first order) of a stream's mode and symbol count (see docs/entropy.md)."""
    bits = [mode & 1, (mode >> 1) & 1]
    if n < 1 << 15:
        bits += [0] + [(n >> i) & 1 for i in range(15)]
    else:
        b = n.bit_length()
        bits += [1] + [(b >> i) & 1 for i in range(5)] + [(n >> i) & 1 for i in range(b - 1)]
    return bits


def bits_to_bytes(bits):
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        out[i >> 3] |= b << (i & 7)
    return bytes(out)


def bytes_to_bits(data):
    return [(data[i >> 3] >> (i & 7)) & 1 for i in range(8 * len(data))]


def run_stream(n, sym):
    return bits_to_bytes(stream_prefix_bits(2, n) + [(sym >> i) & 1 for i in range(8)])


def roundtrip(data):
    data = bytes(data)
    blob = fse.compress(data)
    assert isinstance(blob, bytes)
    assert fse.decompress(blob) == data
    assert fse.decompress(blob, len(data)) == data
    assert fse.decompress(blob, n=len(data)) == data
    return blob


# --------------------------------------------------------------------------
# edge cases
# --------------------------------------------------------------------------
EDGE = {
    "empty": b"",
    "one_symbol": b"\x07",
    "one_zero": b"\x00",
    "one_255": b"\xff",
    "constant": b"\x0f" * 1000,
    "constant_long": b"\x1f" * 100_003,
    "two_symbols_short": b"\x0f\x10",
    "two_symbols": bytes(np.where(np.random.default_rng(1).random(5000) < 0.9, 15, 16).astype(np.uint8)),
    "two_far_symbols": bytes(np.where(np.random.default_rng(2).random(3000) < 0.5, 0, 255).astype(np.uint8)),
    "one_rare": b"\x0f" * 9999 + b"\x10",
    "rare_first": b"\x00" + b"\x0f" * 9999,
    "alternating": b"\x01\x02" * 2500,
    "uniform32": bytes(np.random.default_rng(3).integers(0, 32, 20000).astype(np.uint8)),
    "uniform256": bytes(np.random.default_rng(4).integers(0, 256, 20000).astype(np.uint8)),
    "all_bytes_once": bytes(range(256)),
    "all_bytes_shuffled": bytes(np.random.default_rng(5).permutation(np.repeat(np.arange(256), 40)).astype(np.uint8)),
    "symbols_31_32": bytes(np.random.default_rng(6).integers(31, 33, 4000).astype(np.uint8)),
    "symbol_31_max": bytes(np.random.default_rng(7).integers(0, 32, 4000).astype(np.uint8)),
    "sparse_alphabet": bytes(np.random.default_rng(8).choice([0, 7, 31, 200, 255], 6000).astype(np.uint8)),
    "laplace_tiny": bytes(laplace_channel(3, 0.7)),
    "laplace_64": bytes(laplace_channel(64, 0.7)),
    "laplace_4096": bytes(laplace_channel(4096, 0.7)),
    "laplace_32640": bytes(laplace_channel(32640, 1.5)),
    "laplace_wide": bytes(laplace_channel(50000, 40.0, alphabet=256, center=128)),
    "peaked_extreme": bytes(np.where(np.random.default_rng(9).random(70000) < 0.9995, 15, 3).astype(np.uint8)),
}


@pytest.mark.parametrize("name", sorted(EDGE))
def test_roundtrip_edge_cases(name):
    roundtrip(EDGE[name])


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 100, 16383, 16384, 16385,
                               31999, 32000, 32001, 32767, 32768, 32769, 65536, 65539])
def test_roundtrip_lengths_around_block_and_state_boundaries(n):
    roundtrip(laplace_channel(n, 0.7, seed=n))
    roundtrip(np.random.default_rng(n).integers(0, 256, n).astype(np.uint8))


def test_roundtrip_maximum_length_class():
    """A long channel (4 Mi + 3 symbols, well past the 2-state range) and every table log."""
    data = laplace_channel((1 << 22) + 3, 0.7, seed=11)
    blob = roundtrip(data)
    info = fse.stream_info(blob)
    assert info["mode"] == "tans" and info["n"] == len(data)
    assert info["table_log"] >= 11


def test_maximum_n_limit():
    assert fse.MAX_N == 2**31 - 1
    # the longest count the header can express is MAX_N: a valid 6-byte run stream
    blob = run_stream(fse.MAX_N, 15)
    assert len(blob) == 6
    assert fse.stream_info(blob)["n"] == fse.MAX_N
    # with the expected n the mismatch is reported without allocating 2 GiB
    with pytest.raises(FSEError, match="expected 5"):
        fse.decompress(blob, 5)
    with pytest.raises(ValueError):
        fse.decompress(blob, fse.MAX_N + 1)
    # a long-form count below 2^15 is not canonical
    bits = [0, 1] + [1] + [(15 >> i) & 1 for i in range(5)] + [0] * 14 + [1] * 8
    with pytest.raises(FSEError, match="count field"):
        fse.decompress(bits_to_bytes(bits))


# --------------------------------------------------------------------------
# modes and table sizes
# --------------------------------------------------------------------------
def test_modes_are_explicit():
    assert fse.stream_info(fse.compress(b""))["mode"] == "raw"
    assert fse.stream_info(fse.compress(b"\x05" * 77))["mode"] == "run"
    assert fse.stream_info(fse.compress(EDGE["uniform256"]))["mode"] == "raw"
    assert fse.stream_info(fse.compress(EDGE["laplace_4096"]))["mode"] == "tans"
    raw = fse.compress(EDGE["uniform256"])
    assert len(raw) == 20000 + 3  # mode + count (18 bits) + data: raw never costs more


def test_run_and_empty_streams_are_tiny():
    assert fse.compress(b"") == b"\x03\x00\x00"
    assert fse.compress(b"\x0f" * 1000) == run_stream(1000, 15)
    assert len(fse.compress(b"\x0f" * 1000)) == 4
    assert len(fse.compress(b"\x0f" * 524288)) == 5


def test_table_log_grows_with_length():
    short = fse.stream_info(fse.compress(laplace_channel(256, 1.5)))
    mid = fse.stream_info(fse.compress(laplace_channel(4096, 1.5)))
    long = fse.stream_info(fse.compress(laplace_channel(524288, 1.5)))
    assert short["table_log"] < long["table_log"]
    assert short["table_log"] <= mid["table_log"] <= long["table_log"]
    assert fse.MIN_TABLE_LOG <= short["table_log"] and long["table_log"] <= fse.MAX_TABLE_LOG
    assert short["states"] == 1 and long["states"] == 4


@pytest.mark.parametrize("n,b,limit", [(4096, 0.3, 3.0), (4096, 0.7, 2.5), (4096, 3.0, 2.5),
                                        (32640, 0.3, 0.8), (32640, 0.7, 0.6), (32640, 3.0, 0.6),
                                        (262144, 0.7, 0.3)])
def test_size_close_to_entropy(n, b, limit):
    data = laplace_channel(n, b, seed=int(b * 10))
    size = len(fse.compress(data))
    bound = entropy_bytes(data)
    assert size <= bound * (1 + limit / 100), (size, bound)


def test_incompressible_small_channels_fall_back_to_raw():
    for n in (1, 2, 3, 5, 10):
        data = bytes(np.random.default_rng(n).integers(0, 256, n).astype(np.uint8))
        blob = roundtrip(data)
        assert len(blob) <= n + 3


# --------------------------------------------------------------------------
# API and argument checking
# --------------------------------------------------------------------------
def test_error_type_is_value_error():
    assert issubclass(FSEError, ValueError)


def test_accepts_bytes_like_and_arrays():
    data = laplace_channel(3000, 0.7)
    ref = fse.compress(bytes(data))
    assert fse.compress(data) == ref
    assert fse.compress(bytearray(data)) == ref
    assert fse.compress(memoryview(bytes(data))) == ref
    big = np.zeros(6000, np.uint8)
    big[::2] = data
    assert fse.compress(big[::2]) == ref            # non-contiguous view
    assert fse.decompress(bytearray(ref)) == bytes(data)
    assert fse.decompress(np.frombuffer(ref, np.uint8)) == bytes(data)
    assert fse.decompress(memoryview(ref)) == bytes(data)
    assert fse.decompress(ref, np.int64(3000)) == bytes(data)


@pytest.mark.parametrize("bad", [[1, 2, 3], "abc", 5, None, np.zeros(5, np.int32),
                                 np.zeros((2, 3), np.uint8), np.zeros(4, np.float32)])
def test_compress_rejects_wrong_types(bad):
    with pytest.raises(TypeError):
        fse.compress(bad)


def test_decompress_argument_errors():
    blob = fse.compress(b"\x01\x02\x03\x01")
    with pytest.raises(TypeError):
        fse.decompress("text")
    with pytest.raises(TypeError):
        fse.decompress(blob, "4")
    with pytest.raises(TypeError):
        fse.decompress(blob, 4.0)
    with pytest.raises(ValueError):
        fse.decompress(blob, -1)
    with pytest.raises(FSEError, match="expected 5"):
        fse.decompress(blob, 5)
    with pytest.raises(FSEError):
        fse.decompress(b"")


def test_n_mismatch_raises_before_allocating():
    # a forged run stream claiming 2^31-1 symbols, decoded with the container's n
    blob = run_stream(2**31 - 1, 15)
    with pytest.raises(FSEError, match="symbols"):
        fse.decompress(blob, 10)


def test_forged_tiny_tans_stream_cannot_claim_huge_n():
    blob = fse.compress(laplace_channel(100, 0.7))
    assert fse.stream_info(blob)["mode"] == "tans"
    bits = bytes_to_bits(blob)
    # replace the 16-bit short count by the long form of 2^31-1, keep the rest
    forged = bits[:2] + stream_prefix_bits(0, 2**31 - 1)[2:] + bits[18:]
    with pytest.raises(FSEError):
        fse.decompress(bits_to_bytes(forged))


# --------------------------------------------------------------------------
# batch calls
# --------------------------------------------------------------------------
def _channels(C, n, seed=0):
    rng = np.random.default_rng(seed)
    rows = [laplace_channel(n, float(rng.choice([0.3, 0.7, 1.5, 3.0])), seed=seed + i) for i in range(C)]
    arr = np.stack(rows) if C else np.zeros((0, n), np.uint8)
    if C > 2:
        arr[1] = 15                                  # a run row
        arr[2] = rng.integers(0, 256, n)             # a raw row
    return arr


@pytest.mark.parametrize("threads", [0, 1, 2, 3])
def test_batch_roundtrip(threads):
    arr = _channels(7, 5000)
    blobs = fse.compress_batch(arr, threads=threads)
    assert blobs == [fse.compress(row) for row in arr]
    out = fse.decompress_batch(blobs, 5000, threads=threads)
    assert out.dtype == np.uint8 and out.shape == (7, 5000) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, arr)


def test_batch_edge_shapes():
    assert fse.compress_batch(np.zeros((0, 10), np.uint8)) == []
    assert fse.decompress_batch([], 10).shape == (0, 10)
    blobs = fse.compress_batch(np.zeros((3, 0), np.uint8))
    assert fse.decompress_batch(blobs, 0).shape == (3, 0)
    arr = _channels(5, 9000)
    view = np.asfortranarray(arr)
    assert fse.compress_batch(view) == fse.compress_batch(arr)
    assert (fse.decompress_batch(tuple(fse.compress_batch(arr)), 9000) == arr).all()
    gen = (b for b in fse.compress_batch(arr))
    assert (fse.decompress_batch(gen, 9000) == arr).all()


def test_batch_argument_errors():
    arr = _channels(3, 100)
    with pytest.raises(TypeError):
        fse.compress_batch(arr.astype(np.int16))
    with pytest.raises(TypeError):
        fse.compress_batch(arr[0])
    with pytest.raises(TypeError):
        fse.compress_batch(arr.tolist())
    with pytest.raises(ValueError):
        fse.compress_batch(arr, threads=-1)
    with pytest.raises(TypeError):
        fse.compress_batch(arr, threads=1.5)
    blobs = fse.compress_batch(arr)
    with pytest.raises(TypeError):
        fse.decompress_batch(blobs, None)
    with pytest.raises(TypeError):
        fse.decompress_batch(blobs + [123], 100)
    with pytest.raises(FSEError, match="channel 1"):
        fse.decompress_batch([blobs[0], blobs[1][:-1], blobs[2]], 100)
    with pytest.raises(FSEError, match="channel 2"):
        fse.decompress_batch([blobs[0], blobs[1], fse.compress(b"\x01" * 99)], 100)


def test_batch_large_parallel():
    arr = _channels(16, 40000, seed=3)
    blobs = fse.compress_batch(arr, threads=0)
    np.testing.assert_array_equal(fse.decompress_batch(blobs, 40000, threads=0), arr)


# --------------------------------------------------------------------------
# property-based
# --------------------------------------------------------------------------
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.binary(max_size=3000))
def test_property_roundtrip_any_bytes(data):
    roundtrip(data)


@st.composite
def skewed_channels(draw):
    k = draw(st.integers(1, 40))
    weights = draw(st.lists(st.floats(0.0, 1.0), min_size=k, max_size=k))
    lo = draw(st.integers(0, 255 - k + 1))
    n = draw(st.integers(0, 20000))
    seed = draw(st.integers(0, 2**32 - 1))
    w = np.array(weights) ** 4 + 1e-9
    rng = np.random.default_rng(seed)
    return (rng.choice(k, size=n, p=w / w.sum()) + lo).astype(np.uint8)


@FAST
@given(skewed_channels())
def test_property_roundtrip_skewed(data):
    blob = roundtrip(data)
    n = len(data)
    # never much worse than storing the bytes
    assert len(blob) <= n + 6


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(0, 3000), st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 2]))
def test_property_batch_matches_single(C, n, seed, threads):
    arr = _channels(C, n, seed=seed % 1000)
    blobs = fse.compress_batch(arr, threads=threads)
    assert blobs == [fse.compress(r) for r in arr]
    np.testing.assert_array_equal(fse.decompress_batch(blobs, n, threads=threads), arr)


@FAST
@given(st.binary(min_size=0, max_size=400))
def test_property_garbage_never_crashes(blob):
    """Arbitrary bytes decode to FSEError or to some output, never another exception."""
    try:
        n = fse.stream_info(blob)["n"]
    except FSEError:
        n = 1000
    if n > 1_000_000:   # a valid run stream may claim up to 2^31-1 symbols: don't allocate that
        with pytest.raises(FSEError):
            fse.decompress(blob, 1000)
        return
    for arg in ((blob,), (blob, n), (blob, 1000)):
        try:
            out = fse.decompress(*arg)
        except FSEError:
            continue
        assert isinstance(out, bytes)


def test_gil_released_during_coding():
    """The main thread keeps running Python code while another thread is inside
    one long compress / decompress call."""
    import threading

    data = laplace_channel(1 << 23, 0.7, seed=21)
    blob = fse.compress(data)
    for call in (lambda: fse.compress(data), lambda: fse.decompress(blob, len(data))):
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
        # a call holding the GIL would block this loop until it returns
        assert ticks > 1000
