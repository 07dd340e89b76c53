"""Security properties of the decoder (docs/security.md): corruption detection, resource limits,
no reads past the buffer, and the replay of every fuzzing finding kept in fuzz/regressions/
(leaks, threads and partial files: tests/test_stability.py).

Everything here runs on tiny images so the file stays fast; the fuzzing campaigns themselves are
fuzz/run_campaign.sh (and a short pass in tests/test_fuzz_smoke.py)."""
from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zlib
from pathlib import Path

import pytest
from PIL import Image

import PIL_l3ic
from PIL_l3ic import container, runtime
from _samples import decode, image, save

ROOT = Path(__file__).resolve().parent.parent
PKG_PARENT = str(Path(PIL_l3ic.__file__).resolve().parent.parent)   # for the subprocesses
sys.path.insert(0, str(ROOT / "fuzz"))
import _common  # noqa: E402
import checks  # noqa: E402

REGRESSIONS = ROOT / "fuzz" / "regressions"


# ----------------------------------------------------------------------------- bit flips

def _flip_all(data, reference):
    """Flip every bit in turn: returns (detected, undetected-but-right-size positions)."""
    detected, silent = 0, []
    ref_mode, ref_size, _ = reference
    for pos in range(len(data)):
        for bit in range(8):
            b = bytearray(data)
            b[pos] ^= 1 << bit
            try:
                mode, size, pixels = decode(bytes(b))
            except (OSError, Image.DecompressionBombError):
                detected += 1
                continue
            assert (mode, size) == (ref_mode, ref_size), f"flip {pos}.{bit}: {mode} {size}"
            assert len(pixels) == size[0] * size[1] * len(mode)
            silent.append(pos)
    return detected, silent


def test_bitflip_every_bit_detected(capsys):
    """A file as the writer makes it (RGBA, ICC + EXIF + XMP, alpha): every CRC-covered byte,
    i.e. every byte, so all single-bit flips must raise."""
    data = save(image("RGBA", 24, 16), quality="16c", icc_profile=b"icc!", exif=b"Exif\0\0MM",
                xmp="<x/>")
    reference = decode(data)
    detected, silent = _flip_all(data, reference)
    total = 8 * len(data)
    with capsys.disabled():
        print(f"\nbit flips: {detected}/{total} detected ({100 * detected / total:.2f} %) "
              f"in a {len(data)}-byte RGBA file with metadata")
    assert detected == total, f"undetected flips at bytes {sorted(set(silent))}"


def test_bitflip_documented_exceptions(capsys):
    """Unknown ancillary chunks (skipped unread) and bytes after the declared end (ignored, as
    after PNG's IEND) are the only places a flip may go unnoticed; there it must not change
    the image at all."""
    base = save(image("LA", 17, 9), quality="16c")
    layout, streams, alpha = container.unpack(base)
    data = container.pack(layout.header, streams, [c.mode for c in layout.channels],
                          alpha=alpha, extra_chunks=[(b"zzzz", b"future")]) + b"tail"
    reference = decode(data)
    layout = container.read_layout(io.BytesIO(data))
    (anc,) = [c for c in layout.chunks if c.type == b"zzzz"]
    allowed = set(range(anc.offset, anc.offset + anc.length)) | set(range(layout.end, len(data)))
    detected, silent = _flip_all(data, reference)
    total = 8 * len(data)
    with capsys.disabled():
        print(f"\nbit flips: {detected}/{total} detected; {len(silent)} undetected, all in the "
              f"{len(allowed)} bytes of an unknown ancillary chunk / trailing data; outside them "
              f"{detected}/{total - 8 * len(allowed)} = 100 %")
    assert set(silent) <= allowed
    assert len(silent) == 8 * len(allowed)
    for pos in sorted(allowed):      # the image itself is untouched
        b = bytearray(data)
        b[pos] ^= 0x10
        assert decode(bytes(b)) == reference


# ----------------------------------------------------------------------------- resource limits

def _header(width, height, *, mode=1, model_id=1, channels=None, n_chunks=0, table=None,
            directory=b"", fingerprint=None, body=b""):
    """Raw container bytes with a valid header CRC (fields not validated)."""
    channels = container.MODEL_CHANNELS.get(model_id, 16) if channels is None else channels
    if fingerprint is None:
        fingerprint = runtime.model_info(model_id).fingerprint
    fixed = struct.pack("<8sBBBBIIHHH8s", container.MAGIC, 1, mode, model_id, n_chunks, width,
                        height, min((height + 7) // 8, 0xFFFF), min((width + 7) // 8, 0xFFFF),
                        channels, fingerprint)
    if table is None:
        table = b"".join(struct.pack("<BII", 1, 0, 0) for _ in range(channels))
    head = fixed + table + directory
    return head + struct.pack("<I", zlib.crc32(head)) + body


class CountingReader(io.BytesIO):
    """BytesIO that records how many bytes every read() asks for."""

    def __init__(self, data):
        super().__init__(data)
        self.requested = 0
        self.largest = 0

    def read(self, n=-1):
        want = len(self.getbuffer()) - self.tell() if n is None or n < 0 else n
        self.requested += want
        self.largest = max(self.largest, want)
        return super().read(n)


def _open_load(data):
    fp = CountingReader(data)
    tracemalloc.start()
    try:
        with pytest.raises((OSError, Image.DecompressionBombError)) as e:
            with Image.open(fp) as im:
                im.load()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return e.value, peak, fp


@pytest.mark.parametrize("w, h", [(65535, 65535), (65535, 3000), (30000, 30000)])
def test_huge_dimensions_refused_before_allocation(w, h):
    err, peak, fp = _open_load(_header(w, h))
    assert isinstance(err, Image.DecompressionBombError)
    assert peak < 1 << 20 and fp.requested < 4096


@pytest.mark.parametrize("w, h", [(0, 8), (8, 0), (65536, 8), (8, 1 << 31), (0xFFFFFFFF, 1)])
def test_dimensions_outside_the_format(w, h):
    err, peak, _ = _open_load(_header(w, h))
    assert isinstance(err, container.ContainerError) and peak < 1 << 20


def test_large_dimensions_within_pixel_limit_bad_streams(monkeypatch):
    """Under MAX_IMAGE_PIXELS, a header with large dimensions and bogus streams is refused when
    the stream headers are checked, before the (channels x symbols) latent is allocated."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1 << 26)
    table = b"".join(struct.pack("<BII", 0, 1, zlib.crc32(b"\x07")) for _ in range(16))
    data = _header(8000, 8000, table=table, body=b"\x07" * 16)
    err, peak, _ = _open_load(data)
    assert isinstance(err, container.ContainerError), err
    assert peak < 4 << 20, f"{peak} bytes allocated for a {len(data)}-byte file"


@pytest.mark.parametrize("channels", [0, 257, 4096, 65535])
def test_huge_channel_count_refused_before_reading_the_table(channels):
    data = _header(16, 16, channels=channels, table=b"")
    err, peak, fp = _open_load(data + bytes(64))
    assert isinstance(err, container.ContainerError) and "channel count" in str(err)
    assert fp.requested < 256 and peak < 1 << 20


def test_channel_count_not_matching_the_model():
    data = _header(16, 16, channels=256)          # model 16c, 256-entry table: read, then refused
    err, peak, fp = _open_load(data)
    assert isinstance(err, container.ContainerError) and "channels" in str(err)
    assert fp.requested < 4096 and peak < 1 << 20


def _chunk(ctype, length, crc=0):
    return struct.pack("<4sII", ctype, length, crc)


@pytest.mark.parametrize("ctype, length", [(b"iccp", 0xFFFFFFFF), (b"exif", (16 << 20) + 1),
                                           (b"xmpm", 0x80000000)])
def test_huge_metadata_chunk_refused(ctype, length):
    data = _header(16, 16, n_chunks=1, directory=_chunk(ctype, length))
    err, peak, fp = _open_load(data)
    assert isinstance(err, container.ContainerError) and "exceeds" in str(err)
    assert fp.requested < 4096 and peak < 1 << 20


def test_metadata_chunk_longer_than_file():
    data = _header(16, 16, n_chunks=1, directory=_chunk(b"iccp", 16 << 20), body=b"x" * 100)
    err, peak, fp = _open_load(data)
    assert isinstance(err, container.TruncatedError)
    assert fp.requested < 4096 and peak < 1 << 20


@pytest.mark.parametrize("where", ["alpha", "channel", "ancillary"])
def test_huge_stream_and_alpha_lengths(where):
    """Lengths up to 4 GiB in the channel table or for ALPH: the image opens (they are read
    only on load), and load refuses them from the file size, without reading or allocating."""
    mode, n_chunks, directory = 1, 0, b""
    table = [struct.pack("<BII", 1, 0, 0)] * 16
    if where == "alpha":
        mode, n_chunks, directory = 3, 1, _chunk(b"ALPH", 0xFFFFFFFF)
    elif where == "channel":
        table[5] = struct.pack("<BII", 0, 0xFFFFFFFF, 0)
    else:
        n_chunks, directory = 1, _chunk(b"zzzz", 0xFFFFFFF0)
        table[0] = struct.pack("<BII", 0, 0xFFFFFFFF, 0)
    data = _header(16, 16, mode=mode, n_chunks=n_chunks, directory=directory,
                   table=b"".join(table), body=bytes(300))
    err, peak, fp = _open_load(data)
    assert isinstance(err, container.TruncatedError), err
    assert fp.requested < 8192 and peak < 1 << 20


def test_unknown_file_size_reads_in_bounded_blocks():
    """Without a known size (a non-seekable stream) a declared 4 GiB stream is read in 1 MiB
    blocks until the data ends: the memory used is bounded by the real data, not the claim."""
    good = save(image("RGB", 16, 16), quality="16c")
    layout = container.read_layout(io.BytesIO(good))
    bad_layout = container.Layout(
        layout.header, (container.ChannelEntry(0, layout.header_length, 0xFFFFFFFF, 0),)
        + layout.channels[1:], layout.chunks, None, None, None, 0, layout.header_length,
        layout.end, None)
    tracemalloc.start()
    try:
        with pytest.raises(container.TruncatedError):
            container.read_channel(io.BytesIO(good), bad_layout, 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_entropy_decoder_never_reads_past_the_buffer(tmp_path):
    """Every stream (and every prefix and single-bit flip of it) decoded from the very end of a
    page followed by an inaccessible page: one byte read too far is a segfault.  Runs in a
    subprocess so a fault is reported as a failure."""
    script = textwrap.dedent(r"""
        import ctypes, mmap, sys
        import numpy as np
        sys.path[:0] = [sys.argv[2], sys.argv[1]]     # the package under test, fuzz/
        import _common
        fse = _common.fse_module()
        PAGE = mmap.PAGESIZE
        region = mmap.mmap(-1, 3 * PAGE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(region))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        assert libc.mprotect(base + 2 * PAGE, PAGE, 0) == 0     # PROT_NONE guard page
        view = memoryview(region)
        end = 2 * PAGE
        if len(sys.argv) > 3:                 # self-check: one byte past the end must fault
            ctypes.string_at(base + end, 1)
            sys.exit(0)
        rng = np.random.default_rng(5)
        chans = [np.full(40, 7, np.uint8), rng.integers(0, 256, 50).astype(np.uint8),
                 np.array([3, 4], np.uint8)]
        for n, b in ((64, 0.7), (300, 1.5), (1000, 0.4), (2500, 3.0)):
            chans.append(np.clip(np.rint(rng.laplace(0, b, n)) + 15, 0, 31).astype(np.uint8))
        chans.append(np.clip(np.rint(rng.laplace(0, 30, 900)) + 128, 0, 255).astype(np.uint8))
        checked = 0
        for sym in chans:
            s = fse.compress(sym)
            assert len(s) <= 2 * PAGE
            variants = [s[:k] for k in range(len(s) + 1)]
            variants += [bytes(s[:i]) + bytes([s[i] ^ (1 << j)]) + bytes(s[i + 1:])
                         for i in range(len(s)) for j in range(8)]
            for v in variants:
                view[end - len(v):end] = v
                blob = view[end - len(v):end]
                for n in (len(sym), None):
                    try:
                        fse.decompress(blob, n)
                    except ValueError:
                        pass
                try:
                    fse.stream_info(blob)
                except ValueError:
                    pass
                checked += 1
        del blob, view
        print(checked)
    """)
    args = [sys.executable, "-c", script, str(ROOT / "fuzz"), PKG_PARENT]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert int(r.stdout.split()[-1]) > 10000
    probe = subprocess.run(args + ["probe"], capture_output=True, timeout=60, cwd=tmp_path)
    assert probe.returncode != 0, "the guard page does not catch a read past the buffer"


# ----------------------------------------------------------------------------- regressions

def _regression_files(kind):
    d = REGRESSIONS / kind
    return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")) \
        if d.is_dir() else []


@pytest.mark.parametrize("path", _regression_files("decode"), ids=lambda p: p.name)
def test_regression_decode(path, monkeypatch):
    """Every full-path finding, as found and re-stamped with the installed model's fingerprint
    and CRCs (so it reaches the same code with whatever models are installed)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 128 * 128)
    data = path.read_bytes()
    for buf in {data, _common.fix_crcs(data)}:
        checks.decode_all(buf, verify=True, parser=True)


@pytest.mark.parametrize("path", _regression_files("fse"), ids=lambda p: p.name)
def test_regression_fse(path):
    checks.check_stream(path.read_bytes())


def test_regression_corpus_is_replayed():
    """The directories exist and hold only small files (findings, not seeds)."""
    for kind in ("decode", "fse"):
        for p in _regression_files(kind):
            assert p.stat().st_size <= 65536, p
