"""Mutation tests for PIL_l3ic._fse: truncate, extend, flip bits, splice.

Every mutated stream must either decode or raise FSEError: no other exception,
no crash, no hang.  Wrong data of the right length may only come out where the
format cannot see the change:

* raw streams: the stored bytes themselves (no redundancy), and run streams:
  the symbol byte;
* tANS streams (plain and context variant, 'tans-ctx'): the format has no checksum; a change is caught by the strict
  decoder checks (header validation, exact end of the bit stream, every state
  back at its initial value).  Those checks are probabilistic for a change in
  the payload: a corrupted stream passes them with a probability of roughly
  2^-(S*R) times the chance of ending on the exact bit, so the tests require
  zero silent corruptions for channels of realistic size and a small bounded
  rate for tiny ones (table log 5, one state).

Set L3IC_FSE_SO=/path/to/_fse.so to test another build (benchmarks/fse_asan.sh).
"""
import random

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
    return bytes(np.clip(np.rint(y) + center, 0, alphabet - 1).astype(np.uint8))


def ctx_channel(h, w, seed=0):
    """Latent-like 2-D channel (busy regions over quiet ones) on which the context
    variant wins; coded with width w."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    busy = (np.sin(yy / 6.0 + seed) + np.cos(xx / 4.5)) > 0.9
    y = rng.laplace(0.0, 1.0, (h, w)) * np.where(busy, 2.5, 0.35)
    return bytes(np.clip(np.rint(y) + 15, 0, 31).astype(np.uint8).ravel())


TANS = ("tans", "tans-ctx")
WIDTH = {}   # data -> row width, for the context-coded channels


def _corpus():
    rng = np.random.default_rng(1234)
    c = {
        "tans_n12": b"\x0f" * 10 + b"\x10\x0f",
        "tans_n40": laplace_channel(40, 0.7, 1),
        "tans_n300": laplace_channel(300, 1.5, 2),
        "tans_two_4096": bytes(np.where(rng.random(4096) < 0.9, 15, 16).astype(np.uint8)),
        "tans_lap_4096": laplace_channel(4096, 0.7, 3),
        "tans_lap_20000_S2": laplace_channel(20000, 0.3, 4),
        "tans_lap_70000_S4": laplace_channel(70000, 3.0, 5),
        "tans8_wide": laplace_channel(3000, 30.0, 6, center=128, alphabet=256),
        "run": b"\x0f" * 5000,
        "run_1": b"\x03",
        "raw": bytes(rng.integers(0, 256, 700).astype(np.uint8)),
        "empty": b"",
    }
    for name, (h, w) in {"tans-ctx_24x40": (24, 40), "tans-ctx_64x64": (64, 64),
                         "tans-ctx_130x130_S2": (130, 130),
                         "tans-ctx_136x240_S4": (136, 240)}.items():
        c[name] = ctx_channel(h, w, seed=h)
        WIDTH[c[name]] = w
    out = {}
    for name, data in c.items():
        blob = fse.compress(data, width=WIDTH.get(data))
        mode = fse.stream_info(blob)["mode"]
        assert name.startswith(mode) or name == "empty", (name, mode)
        assert name.startswith("tans-ctx") == (mode == "tans-ctx"), (name, mode)
        out[name] = (data, blob, mode)
    return out


CORPUS = _corpus()


def _prefix_bits(n):
    """Bits used by the mode (2) and the symbol count."""
    return 2 + (16 if n < 1 << 15 else 6 + n.bit_length() - 1)


def undetectable_bits(mode, data):
    """Bit positions whose change the format cannot detect: the stored bytes of
    a raw stream and the symbol of a run stream.  Everything else is checked."""
    p = _prefix_bits(len(data))
    if mode == "raw":
        start = 8 * ((p + 7) // 8)
        return set(range(start, start + 8 * len(data)))
    if mode == "run":
        return set(range(p, p + 8))
    return set()


def changed_bits(a, b):
    return [8 * i + j for i in range(min(len(a), len(b))) for j in range(8) if (a[i] ^ b[i]) >> j & 1]


def decode_outcome(mutated, data):
    """'error', 'same' (decodes to the original) or 'silent' (other data, same length).
    Also exercises the call without n.  Any exception but FSEError fails the test.
    Context-coded channels (WIDTH) are decoded with their width."""
    width = WIDTH.get(data)
    try:
        out = fse.decompress(mutated, width=width)
    except FSEError:
        pass
    else:
        assert isinstance(out, bytes)
    try:
        out = fse.decompress(mutated, len(data), width=width)
    except FSEError:
        return "error"
    assert len(out) == len(data)
    return "same" if out == data else "silent"


class Tally:
    def __init__(self):
        self.total = 0
        self.silent = 0
        self.examples = []

    def add(self, name, what, outcome):
        self.total += 1
        if outcome == "silent":
            self.silent += 1
            if len(self.examples) < 5:
                self.examples.append((name, what))


def check_bits(blob):
    """Strength of a tANS stream's end check: S states of R bits each."""
    info = fse.stream_info(blob)
    return info["states"] * info["table_log"]


def silent_limit(total, bits):
    """Allowed silent corruptions for an S*R-bit check: zero for realistic
    channels (S*R >= 16), else twice the expected 2^-bits rate."""
    return 0 if bits >= 16 else int(2 * total * 2.0 ** -bits)


def _check_tally(name, mode, tally, data):
    if mode in TANS:
        blob = CORPUS[name][1]
        limit = silent_limit(tally.total, check_bits(blob))
        assert tally.silent <= limit, (name, tally.silent, tally.total, limit, tally.examples)


# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_truncate(name):
    data, blob, mode = CORPUS[name]
    t = Tally()
    cuts = range(len(blob)) if len(blob) <= 600 else \
        sorted(set(list(range(0, 64)) + list(range(len(blob) - 64, len(blob))) +
                   random.Random(1).sample(range(len(blob)), 100)))
    for k in cuts:
        out = decode_outcome(blob[:k], data)
        if mode in ("raw", "run"):
            assert out == "error", (name, k)          # exact size check
        t.add(name, ("cut", k), out)
    _check_tally(name, mode, t, data)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_extend(name):
    data, blob, mode = CORPUS[name]
    rnd = random.Random(2)
    t = Tally()
    for extra in [b"\x00", b"\x00" * 7, b"\x01", b"\x80", b"\xff", blob[-1:], blob[:8]] + \
                 [bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 9))) for _ in range(60)]:
        out = decode_outcome(blob + extra, data)
        if mode in ("raw", "run") or extra[-1] == 0:
            assert out == "error", (name, extra)       # exact size / zero last byte
        t.add(name, ("extend", extra), out)
    for k in range(1, 4):                                 # prepend
        out = decode_outcome(b"\x00" * k + blob, data)
        t.add(name, ("prepend", k), out)
    _check_tally(name, mode, t, data)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_flip_bits(name):
    data, blob, mode = CORPUS[name]
    rnd = random.Random(3)
    nbits = 8 * len(blob)
    bits = range(nbits) if nbits <= 4000 else \
        sorted(set(list(range(0, 400)) + list(range(nbits - 400, nbits)) + rnd.sample(range(nbits), 1200)))
    t = Tally()
    for b in bits:
        m = bytearray(blob)
        m[b >> 3] ^= 1 << (b & 7)
        out = decode_outcome(bytes(m), data)
        if out == "silent" and b in undetectable_bits(mode, data):
            continue
        t.add(name, ("flip", b), out)
        if mode not in TANS:
            assert out != "silent", (name, b)
    for _ in range(300):                                   # double flips and byte changes
        m = bytearray(blob)
        i, j = rnd.randrange(nbits), rnd.randrange(nbits)
        m[i >> 3] ^= 1 << (i & 7)
        m[j >> 3] ^= 1 << (j & 7)
        k = rnd.randrange(len(blob))
        m[k] = rnd.getrandbits(8)
        out = decode_outcome(bytes(m), data)
        if out == "silent" and set(changed_bits(blob, m)) <= undetectable_bits(mode, data):
            continue
        t.add(name, ("multi", i, j, k), out)
        if mode not in TANS:
            assert out != "silent", (name, i, j, k)
    _check_tally(name, mode, t, data)


def test_splice_streams():
    names = sorted(CORPUS)
    rnd = random.Random(4)
    tallies = {}
    for a in names:
        da, ba, ma = CORPUS[a]
        for b in names:
            db, bb, mb = CORPUS[b]
            if a == b:
                continue
            t = tallies.setdefault(a, Tally())
            for _ in range(25):
                i = rnd.randrange(len(ba) + 1)
                j = rnd.randrange(len(bb) + 1)
                m = ba[:i] + bb[j:]
                for data in (da, db):
                    out = decode_outcome(m, data)
                    if m == fse.compress(data, width=WIDTH.get(data)):
                        continue
                    t.add(a, ("splice", b, i, j), out)
                    if len(data) >= 4096 and CORPUS[a if data is da else b][2] in TANS:
                        assert out != "silent", (a, b, i, j)
    for a, t in tallies.items():
        assert t.silent <= max(2, t.total // 50), (a, t.silent, t.total, t.examples)


def test_splice_same_length_channels():
    """Head of one channel's stream + tail of another channel of the same length
    (the likely mix-up inside a container)."""
    n = 32640
    streams = [fse.compress(laplace_channel(n, b, seed=s)) for s, b in enumerate([0.3, 0.7, 0.7, 1.5, 3.0])]
    datas = [fse.decompress(s) for s in streams]
    rnd = random.Random(5)
    for x in range(len(streams)):
        for y in range(len(streams)):
            if x == y:
                continue
            for _ in range(40):
                i = rnd.randrange(1, len(streams[x]))
                j = rnd.randrange(1, len(streams[y]))
                m = streams[x][:i] + streams[y][j:]
                for data in (datas[x], datas[y]):
                    assert decode_outcome(m, data) in ("error", "same")


def test_splice_same_length_context_channels():
    """As above for context-coded channels of a 1080p latent (136 x 240), also spliced
    with the plain stream of the same data, and decoded with the wrong width."""
    h, w = 136, 240
    datas = [ctx_channel(h, w, seed=s) for s in range(4)]
    streams = [fse.compress(d, width=w) for d in datas] + [fse.compress(datas[0])]
    datas.append(datas[0])
    assert [fse.stream_info(s)["mode"] for s in streams] == ["tans-ctx"] * 4 + ["tans"]
    rnd = random.Random(6)
    for x in range(len(streams)):
        for y in range(len(streams)):
            if x == y:
                continue
            for _ in range(20):
                i = rnd.randrange(1, len(streams[x]))
                j = rnd.randrange(1, len(streams[y]))
                m = streams[x][:i] + streams[y][j:]
                for data in (datas[x], datas[y]):
                    try:
                        out = fse.decompress(m, h * w, width=w)
                    except FSEError:
                        continue
                    assert out == data
    for s in streams[:4]:
        for wrong in (120, 480, 1, h * w):
            with pytest.raises(FSEError):
                fse.decompress(s, h * w, width=wrong)


def _bits_to_bytes(bits):
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        out[i >> 3] |= b << (i & 7)
    return bytes(out)


def _prefix(mode, n):
    return [mode & 1, mode >> 1] + [0] + [(n >> i) & 1 for i in range(15)]   # n < 2^15


def test_corrupt_header_fields_are_named():
    data = laplace_channel(4096, 0.7, 7)
    blob = fse.compress(data)
    with pytest.raises(FSEError, match="expected"):
        fse.decompress(blob, 4095)
    with pytest.raises(FSEError, match="end marker"):
        fse.decompress(blob + b"\x00")
    with pytest.raises(FSEError, match="count field"):
        fse.decompress(b"\x03")                                   # count cut short
    with pytest.raises(FSEError, match="empty"):
        fse.decompress(b"")
    raw5 = _bits_to_bytes(_prefix(3, 5))
    assert len(raw5) == 3
    assert fse.decompress(raw5 + b"abcde") == b"abcde"
    with pytest.raises(FSEError, match="size"):
        fse.decompress(raw5 + b"ab")                              # raw, 2 of 5 bytes
    with pytest.raises(FSEError, match="size"):
        fse.decompress(raw5 + b"abcdef")                          # raw, trailing byte
    with pytest.raises(FSEError, match="mode"):
        fse.decompress(_bits_to_bytes(_prefix(3, 5) + [0, 1]) + b"abcde")   # padding not zero
    with pytest.raises(FSEError, match="mode"):
        fse.decompress(_bits_to_bytes(_prefix(3, 1)) + b"a")     # raw single symbol: not canonical
    run = _bits_to_bytes(_prefix(2, 5) + [1, 0, 0, 0, 0, 0, 0, 0])
    assert fse.decompress(run) == b"\x01" * 5
    with pytest.raises(FSEError, match="size"):
        fse.decompress(run + b"\x00")                             # run with a trailing byte
    with pytest.raises(FSEError, match="mode"):
        fse.decompress(_bits_to_bytes(_prefix(2, 0) + [1] + [0] * 7))   # empty run
    with pytest.raises(FSEError, match="table description"):
        fse.decompress(blob[:3])
    with pytest.raises(FSEError, match="at least 2"):
        fse.decompress(_bits_to_bytes(_prefix(0, 1) + [0] * 16))


# --------------------------------------------------------------------------
MUT = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@MUT
@given(st.sampled_from(sorted(CORPUS)), st.data())
def test_property_random_mutations(name, draw):
    data, blob, mode = CORPUS[name]
    m = bytearray(blob)
    for _ in range(draw.draw(st.integers(1, 4))):
        op = draw.draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        if op == "flip" and m:
            i = draw.draw(st.integers(0, 8 * len(m) - 1))
            m[i >> 3] ^= 1 << (i & 7)
        elif op == "set" and m:
            m[draw.draw(st.integers(0, len(m) - 1))] = draw.draw(st.integers(0, 255))
        elif op == "cut":
            m = m[:draw.draw(st.integers(0, len(m)))]
        elif op == "insert":
            i = draw.draw(st.integers(0, len(m)))
            m[i:i] = draw.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and m:
            i = draw.draw(st.integers(0, len(m) - 1))
            del m[i:i + draw.draw(st.integers(1, 8))]
    decode_outcome(bytes(m), data)    # asserts: only FSEError, right length on success
