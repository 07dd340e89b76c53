"""Files written by release 0.1.0 keep decoding to the same pixels (tests/fixtures/v0_1_0).

The fixtures (11 small .l3c files: RGB crops of samples/astronaut.png at 16c/32c/64c in a
96x80 and an odd 75x51 size, L, RGBA, LA, one encoded with refine=5, one with ICC/EXIF/XMP)
were written once by tests/fixtures/make_v010.py with the 0.1.0 code and models; manifest.json
holds each file's SHA-256 and the SHA-256 of its decoded pixels (``Image.open(f).tobytes()``).

Exact equality is asserted, because decoding was measured to be bit-exact on every path of the
default runtime (LiteRT 2.3.0 with XNNPACK, on the CPU) that could be tried (2026-12-06, Intel
Xeon with AMX, AVX-512 VNNI and AVX-VNNI):
  * AMX permitted (the default) vs refused (benchmarks/no_amx.py): identical, 11/11 files;
  * L3IC_NUM_THREADS 1, 2 and 4: identical;
  * the same Python stack under qemu-user 7.2 with CPU models Haswell (AVX2+FMA, no AVX-512),
    SandyBridge (AVX) and Nehalem (SSE4.1), where XNNPACK picks those kernels: identical
    (the encoder is bit-exact on AMX / no-AMX / Haswell too).
Not bit-exact: TFLite's own kernels, i.e. the same runtime with XNNPACK switched off
(OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES: 4 of 11 files differ, max abs difference 2,
PSNR >= 56.4 dB against the XNNPACK pixels; BUILTIN_REF: 6 of 11, max 2, PSNR >= 54.6 dB).  The
codec never selects those itself, but a GPU delegate (L3IC_GPU_DELEGATE) would be another such
path, so these tests clear it.  Not measured: ARM (NEON / dot-product / i8mm kernels).  A failure
of the pixel test therefore means either a decoding change in this package (a real 0.1.0
compatibility break) or a runtime whose kernels compute differently (a LiteRT upgrade, another
architecture): the message says which hash was expected; telling the two apart needs the 0.1.0
code (make_v010.py's docstring shows how to get it).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import PIL_l3ic
from PIL_l3ic import runtime

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v0_1_0"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
FILES = sorted(MANIFEST["files"])
PKG_PARENT = str(Path(PIL_l3ic.__file__).resolve().parent.parent)   # for the subprocess


def _sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def cpu_threads(request, monkeypatch):
    """Decode on the CPU (no GPU delegate) with the given thread count; restore afterwards."""
    monkeypatch.delenv(runtime.ENV_GPU_DELEGATE, raising=False)
    runtime.set_num_threads(request.param)
    yield request.param
    runtime.set_num_threads(None)


def test_manifest_lists_every_fixture():
    assert MANIFEST["release"] == "0.1.0"
    assert len(FILES) >= 10
    assert sorted(p.name for p in FIXTURES.glob("*.l3c")) == FILES


@pytest.mark.parametrize("name", FILES)
def test_fixture_file_unchanged(name):
    data = (FIXTURES / name).read_bytes()
    want = MANIFEST["files"][name]
    assert (len(data), _sha256(data)) == (want["file_size"], want["file_sha256"]), \
        f"{name} was modified: the 0.1.0 fixtures must never change (regenerate only with 0.1.0)"


@pytest.mark.parametrize("cpu_threads", [1, 2], indirect=True)
@pytest.mark.parametrize("name", FILES)
def test_decodes_to_v010_pixels(name, cpu_threads):
    want = MANIFEST["files"][name]
    with Image.open(FIXTURES / name) as im:
        assert (im.mode, list(im.size), im.l3ic_model) == (want["mode"], want["size"],
                                                           want["model"])
        im.load()
        got = _sha256(im.tobytes())
        info = {k: _sha256(v.encode() if isinstance(v, str) else v or b"")
                for k, v in im.info.items() if k in want.get("info_sha256", {})}
    assert got == want["pixels_sha256"], (
        f"{name} ({cpu_threads} thread(s)) no longer decodes to the 0.1.0 pixels: sha256 {got}, "
        f"expected {want['pixels_sha256']} (see this module's docstring)")
    assert info == want.get("info_sha256", {})


@pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                    reason="benchmarks/no_amx.py is Linux x86-64 only")
def test_decodes_to_v010_pixels_without_amx(tmp_path):
    """The same pixels when XNNPACK may not use AMX (its AVX-512 VNNI / AVX2 kernels instead);
    on a machine without AMX this is the default path again."""
    script = tmp_path / "decode.py"
    script.write_text(
        "import hashlib, json, sys\n"
        "from pathlib import Path\n"
        "from PIL import Image\n"
        "import PIL_l3ic\n"
        "out = {}\n"
        f"for p in sorted(Path({str(FIXTURES)!r}).glob('*.l3c')):\n"
        "    with Image.open(p) as im:\n"
        "        out[p.name] = hashlib.sha256(im.tobytes()).hexdigest()\n"
        "print(json.dumps(out))\n")
    env = {k: v for k, v in os.environ.items() if k != runtime.ENV_GPU_DELEGATE}
    env["PYTHONPATH"] = PKG_PARENT
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "no_amx.py"), str(script)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got == {n: MANIFEST["files"][n]["pixels_sha256"] for n in FILES}
