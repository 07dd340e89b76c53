"""Stability of the codec under load (docs/security.md): no memory leak over many round trips,
thread safety, and no partial files when a save fails."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import PIL_l3ic
from PIL_l3ic import codec, container
from _samples import decode, image, save

PKG_PARENT = str(Path(PIL_l3ic.__file__).resolve().parent.parent)   # for the subprocesses


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
