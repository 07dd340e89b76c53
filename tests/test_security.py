"""Security properties of the decoder (docs/security.md): corruption detection, resource limits,
no reads past the buffer, no leaks, thread safety, no partial files, and the replay of every
fuzzing finding kept in fuzz/regressions/.

Everything here runs on tiny images so the file stays fast; the fuzzing campaigns themselves are
fuzz/run_campaign.sh (and a short pass in tests/test_fuzz_smoke.py)."""
from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import textwrap
import threading
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

import PIL_l3ic  # noqa: F401
from PIL_l3ic import L3icImagePlugin, codec, container, runtime

ROOT = Path(__file__).resolve().parent.parent
PKG_PARENT = str(Path(PIL_l3ic.__file__).resolve().parent.parent)   # for the subprocesses
sys.path.insert(0, str(ROOT / "fuzz"))
import _common  # noqa: E402
import checks  # noqa: E402

REGRESSIONS = ROOT / "fuzz" / "regressions"


def image(mode, w, h, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([128 + 90 * np.sin(x / 5 + c + y / 7) for c in range(3)], -1)
    a = np.clip(a + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8)
    im = Image.fromarray(a, "RGB")
    if mode in ("L", "LA"):
        im = im.convert("L")
    if mode in ("RGBA", "LA"):
        im.putalpha(Image.fromarray(((x * 29 + y * 13) % 256).astype(np.uint8), "L"))
    return im


def save(im, **options):
    b = io.BytesIO()
    im.save(b, "L3IC", **options)
    return b.getvalue()


def decode(data):
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.mode, im.size, im.tobytes()


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


# ----------------------------------------------------------------------------- leaks

_LEAK_SCRIPT = textwrap.dedent(r"""
    import io, os, sys
    import numpy as np
    from PIL import Image
    sys.path.insert(0, sys.argv[1])
    import PIL_l3ic
    from PIL_l3ic import container
    runs, warmup = int(sys.argv[2]), int(sys.argv[3])
    if os.environ.get("L3IC_PLANT_LEAK"):       # the self-check: a cache that never evicts
        kept, read = [], container.read_channels
        def leaky(*a, **k):
            kept.append(np.ones(32 * 1024, np.uint8))    # 32 KiB, touched
            return read(*a, **k)
        container.read_channels = leaky
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    rng = np.random.default_rng(0)
    modes, qualities = ("RGB", "L", "RGBA", "LA"), ("16c", "32c", "64c")
    def roundtrip(i):
        a = rng.integers(0, 256, (16, 16, 4), np.uint8)
        im = Image.fromarray(a, "RGBA").convert(modes[i % 4])
        b = io.BytesIO()
        im.save(b, "L3IC", quality=qualities[i % 3], icc_profile=b"p" * (i % 5))
        with Image.open(io.BytesIO(b.getvalue())) as out:
            out.load()
            assert out.size == (16, 16)
    for i in range(warmup):
        roundtrip(i)
    before = rss()
    for i in range(runs):
        roundtrip(i)
    print(rss() - before)
""")


def _rss_growth(runs, warmup, plant=False):
    env = dict(os.environ, L3IC_NUM_THREADS="1")
    env.pop("L3IC_PLANT_LEAK", None)
    if plant:
        env["L3IC_PLANT_LEAK"] = "1"
    if "asan" in env.get("LD_PRELOAD", ""):     # run under AddressSanitizer: no quarantine
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=0"
    r = subprocess.run([sys.executable, "-c", _LEAK_SCRIPT, PKG_PARENT, str(runs), str(warmup)],
                       env=env, capture_output=True, text=True, timeout=600, cwd=PKG_PARENT)
    assert r.returncode == 0, r.stderr[-3000:]
    return int(r.stdout.split()[-1])


LEAK_LIMIT = 20 << 20


def test_no_leak_over_1000_roundtrips(capsys):
    growth = _rss_growth(1000, 100)
    planted = _rss_growth(1000, 100, plant=True)
    with capsys.disabled():
        print(f"\nRSS growth over 1000 encode/decode round trips after warm-up: "
              f"{growth / 2**20:.1f} MiB; with a planted 32 KiB/round-trip leak: "
              f"{planted / 2**20:.1f} MiB")
    assert growth < LEAK_LIMIT
    assert planted > LEAK_LIMIT, "the leak check cannot see a 32 KiB/round-trip leak"


# ----------------------------------------------------------------------------- threads

def test_threads_match_sequential_no_deadlock():
    """8 threads x 200 mixed encodes and decodes (8..64 px, every quality and mode) give the
    same bytes and pixels as sequential runs, and all finish."""
    rng = np.random.default_rng(3)
    modes, qualities = ("RGB", "L", "RGBA", "LA"), ("16c", "32c", "64c")
    tasks = []
    for i in range(24):
        w, h = (int(v) for v in rng.integers(8, 65, 2))
        tasks.append((image(modes[i % 4], w, h, seed=i), qualities[i % 3]))
    encoded = [save(im, quality=q) for im, q in tasks]
    decoded = [decode(d) for d in encoded]

    results: dict[int, list] = {}
    errors = []

    def worker(t):
        out = []
        try:
            for j in range(200):
                k = (t * 7 + j * 5) % len(tasks)
                if (t + j) % 2:
                    out.append(("enc", k, save(tasks[k][0], quality=tasks[k][1])))
                else:
                    out.append(("dec", k, decode(encoded[k])))
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(e)
        results[t] = out

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not any(th.is_alive() for th in threads), "deadlock: threads still running"
    assert not errors, errors
    for t in range(8):
        assert len(results[t]) == 200
        for kind, k, value in results[t]:
            assert value == (encoded[k] if kind == "enc" else decoded[k]), (t, kind, k)


# ----------------------------------------------------------------------------- no partial files

def _fail_encoder(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("encoder failed")
    monkeypatch.setattr(codec, "encode_image", boom)


@pytest.mark.parametrize("failure", ["encoder", "quality", "mode", "metadata"])
def test_failed_save_new_path_leaves_nothing(tmp_path, monkeypatch, failure):
    path = tmp_path / "x.l3c"
    im, options = image("RGB", 16, 16), {}
    if failure == "encoder":
        _fail_encoder(monkeypatch)
    elif failure == "quality":
        options = {"quality": 101}
    elif failure == "mode":
        im = Image.new("HSV", (16, 16))
    else:
        options = {"icc_profile": b"x" * (container.MAX_METADATA + 1)}
    with pytest.raises((RuntimeError, ValueError)):
        im.save(path, **options)
    assert not path.exists()


def test_failed_save_existing_path_is_never_partial(tmp_path, monkeypatch):
    """Pillow opens (and so truncates) the destination before the plugin runs; the plugin
    writes nothing until the whole file is encoded, so a failed save leaves either the old file
    or an empty one, never a partial .l3c (docs/security.md: save to a temporary name and
    os.replace() it for all-or-nothing replacement)."""
    path = tmp_path / "x.l3c"
    old = save(image("RGB", 16, 16))
    path.write_bytes(old)
    _fail_encoder(monkeypatch)
    with pytest.raises(RuntimeError):
        image("RGB", 24, 24).save(path)
    assert path.read_bytes() in (old, b"")


class FullDisk(io.FileIO):
    """A file on a disk that fills up after ``room`` more bytes (writes what fits, then fails)."""

    def __init__(self, path, room):
        super().__init__(path, "r+")
        self.room = room

    def write(self, b):
        b = bytes(b)
        if len(b) <= self.room:
            self.room -= len(b)
            return super().write(b)
        super().write(b[:self.room])
        self.room = 0
        raise OSError(28, "No space left on device")


def test_failed_write_leaves_no_partial_file(tmp_path):
    path = tmp_path / "x.l3c"
    path.write_bytes(b"kept: written before the save")
    with FullDisk(path, room=100) as fp:
        fp.seek(0, 2)
        with pytest.raises(OSError, match="No space"):
            image("RGB", 32, 32).save(fp, "L3IC")
    assert path.read_bytes() == b"kept: written before the save"


def test_save_into_open_files_keeps_positions(tmp_path):
    """The all-or-nothing writer keeps buffered files consistent: data written before and after
    the save lands around the .l3c bytes."""
    im = image("RGB", 16, 16)
    expected = save(im)
    for mode in ("wb", "w+b"):
        path = tmp_path / f"f{len(mode)}.bin"
        with open(path, mode) as f:
            f.write(b"head")
            im.save(f, "L3IC")
            assert f.tell() == 4 + len(expected)
            f.write(b"tail")
        assert path.read_bytes() == b"head" + expected + b"tail"


def test_failed_write_to_path_over_size_limit(tmp_path):
    """A real write failure (RLIMIT_FSIZE: the kernel refuses bytes past 1 KiB) when saving to
    a path: a new file is removed (Pillow), an existing one is cut back to empty (plugin),
    never left holding a partial .l3c."""
    script = textwrap.dedent(r"""
        import resource, signal, sys
        import numpy as np
        from PIL import Image
        sys.path.insert(0, sys.argv[1])
        import PIL_l3ic
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        a = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
        im = Image.fromarray(a, "RGB")
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
        for path in sys.argv[2:]:
            try:
                im.save(path, quality="64c")
            except OSError as e:
                print("failed", e.errno)
            else:
                print("saved")
    """)
    new, existing = tmp_path / "new.l3c", tmp_path / "old.l3c"
    existing.write_bytes(b"old")
    r = subprocess.run([sys.executable, "-c", script, PKG_PARENT, str(new), str(existing)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["failed", "27", "failed", "27"]   # EFBIG
    assert not new.exists()
    assert existing.read_bytes() == b""


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
