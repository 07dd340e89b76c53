"""Tests for the .l3c container (PIL_l3ic/container.py, format in docs/format.md)."""
import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from PIL_l3ic import container as c
from PIL_l3ic.container import (ChecksumError, ContainerError, Header, NotL3icError,
                                TruncatedError)

FP = bytes(range(1, 9))


def streams(n, seed=0):
    return [bytes((seed + i + k) & 0xFF for k in range(i % 5 + 1)) for i in range(n)]


def make(mode="RGB", model_id=1, width=13, height=9, **chunks):
    h = Header(width, height, mode, model_id, FP)
    s = streams(h.channels)
    if mode in c.ALPHA_MODES and "alpha" not in chunks:
        chunks["alpha"] = b"\x78\x9c" + bytes(range(7))
    modes = [i % 3 for i in range(h.channels)]
    return h, s, modes, c.pack(h, s, modes, **chunks)


def forge(*, version=1, mode=1, model_id=1, width=8, height=8, latent=None, channels=16,
          fingerprint=FP, table=None, directory=(), body=b""):
    """Build a container by hand, independent of c.pack, with a valid header CRC."""
    latent = latent or ((height + 7) // 8, (width + 7) // 8)
    table = table if table is not None else [(0, 0, 0)] * channels
    raw = (c.MAGIC + struct.pack("<BBBB", version, mode, model_id, len(directory))
           + struct.pack("<IIHHH", width, height, latent[0], latent[1], channels) + fingerprint
           + b"".join(struct.pack("<BII", *e) for e in table)
           + b"".join(struct.pack("<4sII", *e) for e in directory))
    return raw + struct.pack("<I", zlib.crc32(raw)) + body


class Recorder(io.BytesIO):
    """BytesIO that records the furthest byte ever read."""
    furthest = 0

    def read(self, n=-1):
        b = super().read(n)
        self.furthest = max(self.furthest, self.tell())
        return b


class NoSize(io.BytesIO):
    """A stream whose size cannot be learned by seeking to the end."""

    def seek(self, pos, whence=0):
        if whence == 2:
            raise io.UnsupportedOperation("no seek to end")
        return super().seek(pos, whence)


def test_accept():
    assert c.accept(c.MAGIC + b"\0" * 8)
    assert not c.accept(b"\x89PNG\r\n\x1a\n")
    assert not c.accept(c.MAGIC[:7])
    assert not c.accept(b"")


def test_header_derived():
    h = Header(2049, 17, "RGBA", 3, FP)
    assert (h.channels, h.latent_h, h.latent_w, h.n_symbols) == (64, 3, 257, 771)
    assert h.has_alpha and h.size == (2049, 17)
    assert Header(65535, 65535, "L", 2, FP).latent_w == 8192
    h2 = Header(np.int64(2049), np.uint16(17), "RGBA", np.int32(3), bytearray(FP))
    assert h2 == h and type(h2.width) is int and type(h2.fingerprint) is bytes
    for bad in [(0, 1, "RGB", 1, FP), (65536, 1, "RGB", 1, FP), (1, 1, "P", 1, FP),
                (1, 1, "RGB", 4, FP), (1, 1, "RGB", 1, b"short"), (1.0, 1, "RGB", 1, FP),
                ("1", 1, "RGB", 1, FP), (1, 1, "RGB", 1, "12345678")]:
        with pytest.raises(ValueError):
            Header(*bad)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA"])
@pytest.mark.parametrize("model_id", [1, 2, 3])
@pytest.mark.parametrize("meta", [{}, {"icc": b"ICC" * 9}, {"exif": b"Exif\0\0MM"},
                                  {"xmp": b"<x:xmpmeta/>"},
                                  {"icc": b"", "exif": b"E", "xmp": b"X" * 300}])
def test_roundtrip(mode, model_id, meta):
    h, s, modes, data = make(mode, model_id, **meta)
    layout, chans, alpha = c.unpack(data)
    assert layout.header == h and chans == s
    assert [e.mode for e in layout.channels] == modes
    assert (layout.icc, layout.exif, layout.xmp) == tuple(map(meta.get, ("icc", "exif", "xmp")))
    assert (alpha is not None) == h.has_alpha == (layout.alpha is not None)
    assert layout.end == len(data) and not layout.truncated and layout.missing == ()
    assert layout.header_length == 38 + 9 * h.channels + 12 * len(layout.chunks)
    fp = io.BytesIO(data)
    lay = c.read_layout(fp)
    assert c.read_channel(fp, lay, h.channels - 1) == s[-1]   # random access
    assert c.read_channel(fp, lay, 0) == s[0]
    with pytest.raises(IndexError):
        c.read_channel(fp, lay, h.channels)


def test_golden_bytes():
    h = Header(9, 8, "LA", 1, bytes.fromhex("0123456789abcdef"))
    s = [b""] * 15 + [b"\xAB\xCD"]
    data = c.pack(h, s, [1] * 15 + [0], icc=b"P", alpha=b"a")
    fixed = bytes.fromhex(
        "894c33430d0a1a0a"   # magic
        "01" "04" "01" "02"  # version 1, mode LA, model 16c, 2 chunks
        "09000000" "08000000"  # width 9, height 8
        "0100" "0200" "1000"   # latent_h 1, latent_w 2, 16 channels
        "0123456789abcdef")    # fingerprint
    table = bytes.fromhex("01" "00000000" "00000000") * 15 + bytes.fromhex("00" "02000000") \
        + struct.pack("<I", zlib.crc32(b"\xAB\xCD"))
    directory = (b"iccp" + bytes.fromhex("01000000") + struct.pack("<I", zlib.crc32(b"P"))
                 + b"ALPH" + bytes.fromhex("01000000") + struct.pack("<I", zlib.crc32(b"a")))
    head = fixed + table + directory
    assert len(fixed) == 34 and len(head) == 34 + 16 * 9 + 2 * 12
    crc = struct.pack("<I", zlib.crc32(head))
    assert data == head + crc + b"P" + b"a" + b"\xAB\xCD"
    assert len(data) == 210
    assert zlib.crc32(b"\xAB\xCD") == 0xE9FFC9D0 and crc == bytes.fromhex("dccbe294")


def test_layout_reads_no_payload():
    _, _, _, data = make("RGBA", 2, icc=b"I" * 40, exif=b"E" * 10, xmp=b"X")
    fp = Recorder(data)
    layout = c.read_layout(fp)
    assert fp.furthest == layout.header_length + 51 == layout.alpha.offset
    assert layout.channels[0].offset == layout.alpha.offset + layout.alpha.length


def test_bad_magic():
    _, _, _, data = make()
    for bad in [b"", b"\x89PNG\r\n\x1a\n" + data[8:], b"GIF89a", data[:7] + b"x",
                data.replace(b"\r\n", b"\n", 1)]:
        with pytest.raises(NotL3icError) as ei:
            c.read_layout(io.BytesIO(bad))
        assert isinstance(ei.value, SyntaxError) and not isinstance(ei.value, OSError)


@pytest.mark.parametrize("version", [0, 4, 255])
def test_unsupported_version(version):
    with pytest.raises(ContainerError, match=f"unsupported l3ic version {version} "):
        c.read_layout(io.BytesIO(forge(version=version)))


def test_context_mode_needs_version_2():
    """Stream mode 3 (context tANS) exists from version 2 on: a version 1 file with it is
    invalid, a version 2 file reads, and an unknown mode fails with a clear message."""
    table = [(3, 0, 0)] + [(0, 0, 0)] * 15
    with pytest.raises(ContainerError, match="invalid stream mode 3 in a version 1 file"):
        c.read_layout(io.BytesIO(forge(version=1, table=table)))
    layout = c.read_layout(io.BytesIO(forge(version=2, table=table)))
    assert layout.channels[0].mode == c.STREAM_TANS_CTX
    with pytest.raises(ContainerError, match="channel 0: invalid stream mode 4 in a version 2"):
        c.read_layout(io.BytesIO(forge(version=2, table=[(4, 0, 0)] + table[1:])))


def test_pack_writes_lowest_version():
    """pack writes version 1 (bytes as before) unless a channel is context-coded."""
    h = Header(16, 8, "RGB", 1, FP)
    streams = [bytes([i]) for i in range(16)]
    v1 = c.pack(h, streams, [0, 1, 2] * 5 + [0])
    assert v1[8] == 1
    v2 = c.pack(h, streams, [c.STREAM_TANS_CTX] + [0, 1, 2] * 5)
    assert v2[8] == 2 and v2[9:] != v1[9:]
    layout, chans, _ = c.unpack(v2)
    assert [ch.mode for ch in layout.channels][:2] == [c.STREAM_TANS_CTX, 0]
    assert chans == streams
    with pytest.raises(ValueError, match="invalid stream mode 4"):
        c.pack(h, streams, [4] + [0] * 15)


def test_every_truncation():
    h, s, _, data = make("RGBA", 1, icc=b"icc-profile", exif=b"exif")
    lay = c.read_layout(io.BytesIO(data))
    meta_end = lay.header_length + 15
    alpha = lay.alpha
    for n in range(1, len(data)):
        cut = data[:n]
        with pytest.raises(TruncatedError):
            c.unpack(cut)
        if n < meta_end:
            with pytest.raises(TruncatedError):
                c.unpack(cut, allow_truncated=True)
            continue
        layout, chans, a = c.unpack(cut, allow_truncated=True)
        assert layout.truncated
        for i, e in enumerate(layout.channels):
            intact = e.offset + e.length <= n
            assert chans[i] == (s[i] if intact else None)
            assert (i in layout.missing) == (not intact)
        assert (a is not None) == (alpha.offset + alpha.length <= n)


def test_header_bit_flips():
    _, _, _, data = make("LA", 1, icc=b"abc", exif=b"de")
    hl = c.read_layout(io.BytesIO(data)).header_length
    for bit in range(hl * 8):
        bad = bytearray(data)
        bad[bit // 8] ^= 1 << (bit % 8)
        expected = NotL3icError if bit < 64 else ContainerError
        with pytest.raises(expected):
            c.unpack(bytes(bad))


def test_payload_bit_flips():
    h, s, _, data = make("RGBA", 1, xmp=b"xmp!")
    lay = c.read_layout(io.BytesIO(data))
    for target in (lay.chunks[0], lay.alpha, lay.channels[3]):
        bad = bytearray(data)
        bad[target.offset] ^= 0x10
        with pytest.raises(ChecksumError):
            c.unpack(bytes(bad))
    bad = bytearray(data)
    bad[lay.channels[3].offset] ^= 0x10
    _, chans, alpha = c.unpack(bytes(bad), allow_truncated=True)
    assert chans[3] is None and chans[:3] == s[:3] and chans[4:] == s[4:] and alpha is not None


@pytest.mark.parametrize("kwargs, message", [
    ({"channels": 0}, "channel count"),
    ({"channels": 65535}, "channel count"),
    ({"channels": 32}, "has 16 channels"),
    ({"directory": [(b"zzzz", 0, 0)] * 17}, "chunk count"),
    ({"width": 0xFFFFFFFF, "latent": (1, 1)}, "width"),
    ({"height": 65536, "latent": (8192, 1)}, "height"),
    ({"latent": (1, 2)}, "latent shape"),
    ({"latent": (0xFFFF, 0xFFFF)}, "latent shape"),
    ({"mode": 0}, "mode"), ({"mode": 5}, "mode"), ({"model_id": 0}, "model"),
    ({"table": [(3, 0, 0)] * 16}, "stream mode"),
    ({"directory": [(b"iccp", 0xFFFFFFFF, 0)]}, "exceeds"),
    ({"directory": [(b"exif", c.MAX_METADATA + 1, 0)]}, "exceeds"),
    ({"directory": [(b"QQQQ", 0, 0)]}, "unknown critical"),
    ({"directory": [(b"ab1d", 0, 0)]}, "chunk type"),
    ({"directory": [(b"xmpm", 0, 0)] * 2}, "duplicate"),
    ({"directory": [(b"ALPH", 0, 0)]}, "forbids"),
    ({"mode": 3}, "requires"),
])
def test_invalid_headers(kwargs, message):
    with pytest.raises(ContainerError, match=message):
        c.read_layout(io.BytesIO(forge(**kwargs)))


def test_valid_forged_header():
    layout, chans, _ = c.unpack(forge())
    assert chans == [b""] * 16 and layout.header.size == (8, 8)


class NoSizeFile(io.FileIO):
    """An unbuffered real file (FileIO.read(n) pre-allocates n bytes) of unknown size."""

    def seek(self, pos, whence=0):
        if whence == 2:
            raise io.UnsupportedOperation("no seek to end")
        return super().seek(pos, whence)


def test_huge_declared_lengths_do_not_allocate(tmp_path):
    big = 0xFFFFFFFF
    cases = [forge(table=[(0, big, 0)] * 16),
             forge(mode=3, table=[(0, 1, 0)] * 16, directory=[(b"ALPH", big, 0)]),
             forge(directory=[(b"iccp", c.MAX_METADATA, 0)]),
             forge(table=[(0, 1, 0)] * 16,
                   directory=[(bytes([97 + i]) + b"zzz", big, 0) for i in range(16)])]
    path = tmp_path / "f.l3c"

    def opener(kind, data):
        if kind in ("BytesIO", "NoSize"):
            return (io.BytesIO if kind == "BytesIO" else NoSize)(data)
        path.write_bytes(data)
        return (io.FileIO if kind == "FileIO" else NoSizeFile)(path)

    tracemalloc.start()
    try:
        for data in cases:
            for kind in ("BytesIO", "NoSize", "FileIO", "NoSizeFile"):
                with opener(kind, data) as fp:
                    try:
                        layout = c.read_layout(fp)
                    except TruncatedError:
                        continue
                    assert layout.truncated == (kind in ("BytesIO", "FileIO"))
                    with pytest.raises(TruncatedError):
                        c.read_channels(fp, layout)
                    assert c.read_channels(fp, layout, allow_truncated=True) == [None] * 16
                    if layout.alpha is not None:
                        with pytest.raises(TruncatedError):
                            c.read_alpha(fp, layout)
                        assert c.read_alpha(fp, layout, allow_truncated=True) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_unknown_ancillary_chunk_ignored_and_trailing_data():
    h = Header(5, 5, "RGB", 1, FP)
    s = streams(16)
    data = c.pack(h, s, [2] * 16, icc=b"icc", extra_chunks=[(b"zNew", b"future data")])
    assert c.unpack(data + b"trailing")[1] == s
    fp = io.BytesIO(b"junk" + data + b"trailing")
    fp.seek(4)
    layout = c.read_layout(fp)
    assert layout.base == 4 and layout.icc == b"icc" and c.read_channels(fp, layout) == s
    assert [ch.type for ch in layout.chunks] == [b"iccp", b"zNew"]
    assert not layout.chunks[1].critical and c.read_alpha(fp, layout) is None


def test_pack_rejects_bad_arguments():
    h = Header(5, 5, "RGB", 1, FP)
    s, m = streams(16), [0] * 16
    for args, kw in [((s[:15], m[:15]), {}), ((s, [4] * 16), {}), ((s, m), {"alpha": b"a"}),
                     ((s, m), {"extra_chunks": [(b"iccp", b"x")], "icc": b"y"}),
                     ((s, m), {"extra_chunks": [(b"a b!", b"x")]}),
                     ((s, m), {"extra_chunks": [(bytes([97 + i]) * 4, b"") for i in range(17)]})]:
        with pytest.raises(ValueError):
            c.pack(h, *args, **kw)
    with pytest.raises(ValueError, match="requires"):
        c.pack(Header(5, 5, "LA", 1, FP), s, m)


_chunk = st.one_of(st.none(), st.binary(max_size=40))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=st.integers(1, 65535), h=st.integers(1, 65535), mode=st.sampled_from(sorted(c.MODES)),
       model=st.sampled_from([1, 2]), fp=st.binary(min_size=8, max_size=8),
       data=st.data(), icc=_chunk, exif=_chunk, xmp=_chunk)
def test_property_roundtrip(w, h, mode, model, fp, data, icc, exif, xmp):
    head = Header(w, h, mode, model, fp)
    s = data.draw(st.lists(st.binary(max_size=12), min_size=head.channels,
                           max_size=head.channels))
    modes = data.draw(st.lists(st.integers(0, 2), min_size=head.channels,
                               max_size=head.channels))
    alpha = data.draw(st.binary(max_size=30)) if head.has_alpha else None
    blob = c.pack(head, s, modes, icc=icc, exif=exif, xmp=xmp, alpha=alpha)
    layout, chans, a = c.unpack(blob)
    assert (layout.header, chans, a, layout.icc, layout.exif, layout.xmp) == \
        (head, s, alpha, icc, exif, xmp)
    assert [e.mode for e in layout.channels] == modes
    # any corruption of one byte is either detected or harmless (never another exception)
    pos = data.draw(st.integers(0, len(blob) - 1))
    bad = bytearray(blob)
    bad[pos] ^= data.draw(st.integers(1, 255))
    try:
        c.unpack(bytes(bad))
    except (ContainerError, NotL3icError):
        pass
    else:
        raise AssertionError(f"corruption at byte {pos} not detected")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(tail):
    for data in (c.MAGIC + tail, forge()[:38] + tail):
        try:
            c.unpack(data, allow_truncated=True)
        except (ContainerError, NotL3icError):
            pass
