"""Generate the fuzzing seed corpora with the installed models and extension (never committed:
the models are retrained and their fingerprints change, so seeds are made at run time).

    python fuzz/make_corpus.py OUTDIR          -> OUTDIR/decode/*.l3c   whole files
                                                  OUTDIR/fse/*.fse      single channel streams

decode/: every mode (RGB, L, RGBA, LA) x every quality (16c, 32c, 64c) x every size class
    (1x1; below one latent cell; exact multiples of 8; non-multiples; thin strips; the largest
    the full-path harness decodes, 160x96), content varied (smooth + noise, flat, noise-only,
    transparent/opaque/partial alpha), plus files with metadata chunks (ICC, EXIF, XMP), an
    unknown ancillary chunk, and a file with trailing bytes.  With the hp model installed, also
    version 3 files (hp_*.l3c): every mode x 5 sizes (1x1 .. 128x96, the harness's pixel limit)
    at qualities 0, 50 and 100, a flat image (mostly empty streams) and one with metadata;
    without it they are left out (the summary's hp_files is 0).
fse/: every distinct channel stream of those files, plus streams from ``_fse.compress`` on
    synthetic channels covering every stream mode (run, raw, tANS with 5- and 8-bit symbols,
    context tANS coded with the width the harnesses decode with, fuzz/_common.width_for)
    and every state count (1, 2, 4 states: n < 16384, < 32000, larger), edge lengths 0..3;
    and class-coder inputs (cls_*.fse: 2 bytes of n, then a stream; fuzz/checks.class_input).
Prints a summary; deterministic for given models and extension.
"""
from __future__ import annotations

import hashlib
import io
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

SIZES = [(1, 1), (3, 5), (7, 7), (8, 8), (16, 16), (9, 8), (33, 17), (64, 48), (5, 120),
         (120, 3), (160, 96)]
QUALITIES = ("16c", "32c", "64c")
MODES = ("RGB", "L", "RGBA", "LA")
HP_SIZES = [(1, 1), (17, 9), (64, 64), (65, 33), (128, 96)]
HP_QUALITIES = (0, 50, 100)


def _image(mode: str, w: int, h: int, seed: int, content: str = "smooth"):
    from PIL import Image
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    if content == "smooth":
        a = np.stack([128 + 100 * np.sin(x / 7 + c + y / 11) for c in range(3)], -1)
        a = a + rng.normal(0, 8, a.shape)
    elif content == "flat":
        a = np.full((h, w, 3), 77.0)
    else:   # noise
        a = rng.integers(0, 256, (h, w, 3)).astype(np.float64)
    rgb = np.clip(a, 0, 255).astype(np.uint8)
    im = Image.fromarray(rgb, "RGB")
    if mode in ("L", "LA"):
        im = im.convert("L")
    if mode in ("RGBA", "LA"):
        alpha = {0: np.full((h, w), 255, np.uint8), 1: np.zeros((h, w), np.uint8),
                 2: ((x * 37 + y * 11) % 256).astype(np.uint8)}[seed % 3]
        im.putalpha(Image.fromarray(alpha, "L"))
    return im


def _save(im, **options) -> bytes:
    b = io.BytesIO()
    im.save(b, "L3IC", **options)
    return b.getvalue()


def make(outdir: str) -> dict[str, int]:
    os.environ.setdefault("L3IC_NUM_THREADS", "1")
    fse = _common.fse_module()
    import PIL_l3ic  # noqa: F401
    from PIL_l3ic import container

    ddir, fdir = os.path.join(outdir, "decode"), os.path.join(outdir, "fse")
    os.makedirs(ddir, exist_ok=True)
    os.makedirs(fdir, exist_ok=True)
    files: dict[str, bytes] = {}
    seed = 0
    for mode in MODES:
        for q in QUALITIES:
            for w, h in SIZES:
                seed += 1
                files[f"{mode}_{q}_{w}x{h}"] = _save(_image(mode, w, h, seed), quality=q)
    for mode in MODES:
        for content in ("flat", "noise"):
            seed += 1
            files[f"{mode}_32c_{content}_24x16"] = _save(_image(mode, 24, 16, seed, content),
                                                          quality="32c")
    base = _image("RGB", 20, 12, 99)
    files["RGB_16c_meta"] = _save(base, quality="16c", icc_profile=b"ICC-profile" * 3,
                                  exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00",
                                  xmp="<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    files["LA_16c_meta"] = _save(_image("LA", 12, 20, 98), quality="16c", icc_profile=b"P")
    files["RGB_16c_trailing"] = files["RGB_16c_16x16"] + b"trailing bytes"
    # an unknown ancillary chunk, written with the container API
    layout, streams, alpha = container.unpack(files["RGBA_16c_16x16"])
    files["RGBA_16c_ancillary"] = container.pack(
        layout.header, streams, [c.mode for c in layout.channels], alpha=alpha,
        extra_chunks=[(b"zzzz", b"ancillary data")])
    hp_files = _hp_files(files)
    for name, data in files.items():
        with open(os.path.join(ddir, name + ".l3c"), "wb") as f:
            f.write(data)

    streams: dict[bytes, str] = {}
    for name, data in files.items():
        layout, chans, _ = container.unpack(data)
        if layout.header.model_id == container.HP_MODEL_ID:
            continue    # class-coded streams: no header, decodable only with the model's tables
        for s in chans:
            streams.setdefault(s, f"ch_{hashlib.sha1(s).hexdigest()[:12]}")
    rng = np.random.default_rng(7)

    def lap(n, b, center=15, top=31):
        return np.clip(np.rint(rng.laplace(0, b, n)) + center, 0, top).astype(np.uint8)

    synthetic = {
        "empty": np.zeros(0, np.uint8), "one": np.array([9], np.uint8),
        "two": np.array([15, 16], np.uint8), "three": np.array([0, 31, 0], np.uint8),
        "run_1000": np.full(1000, 15, np.uint8), "run_70000": np.full(70000, 3, np.uint8),
        "two_sym_4096": np.where(rng.random(4096) < 0.9, 15, 16).astype(np.uint8),
        "lap_64": lap(64, 0.8), "lap_300": lap(300, 1.5), "lap_4096": lap(4096, 0.7),
        "lap_16383": lap(16383, 0.5), "lap_16384_S2": lap(16384, 0.5),
        "lap_31999_S2": lap(31999, 0.3), "lap_32000_S4": lap(32000, 0.3),
        "lap_40000_S4_wide": lap(40000, 3.0),
        "tans8_3000": lap(3000, 30.0, center=128, top=255),
        "tans8_sparse": np.where(rng.random(2000) < 0.5, 0, 255).astype(np.uint8),
        "raw_uniform_512": rng.integers(0, 256, 512).astype(np.uint8),
        "raw_uniform32_100": rng.integers(0, 32, 100).astype(np.uint8),
        "extremes": np.tile(np.array([0, 31], np.uint8), 500),
    }
    for name, sym in synthetic.items():
        s = fse.compress(sym)
        if fse.decompress(s, len(sym)) != sym.tobytes():
            raise RuntimeError(f"synthetic stream {name} does not round-trip")
        streams.setdefault(s, f"syn_{name}")

    def field(n):   # latent-like rows (busy regions over quiet ones), width as the harness's
        w = _common.width_for(n)
        yy, xx = np.mgrid[0:n // w, 0:w]
        busy = (np.sin(yy / 6.0) + np.cos(xx / 4.5)) > 0.9
        y = rng.laplace(0.0, 1.0, (n // w, w)) * np.where(busy, 2.5, 0.35)
        return np.clip(np.rint(y) + 15, 0, 31).astype(np.uint8).ravel(), w

    for n in (300, 4096, 16900, 32640):   # context streams: S = 1, 1, 2, 4
        sym, w = field(n)
        s = fse.compress(sym, width=w)
        if fse.stream_info(s)["mode"] != "tans-ctx" or fse.decompress(s, n, width=w) != sym.tobytes():
            raise RuntimeError(f"synthetic context stream of {n} symbols failed")
        streams.setdefault(s, f"syn_ctx_{n}")
    for s, name in streams.items():
        with open(os.path.join(fdir, name + ".fse"), "wb") as f:
            f.write(s)
    nclass = _class_seeds(fse, fdir, rng)
    modes = {}
    for s in streams:
        m = fse.stream_info(s)
        key = f"{m['mode']}/S{m['states']}" if m["mode"].startswith("tans") else m["mode"]
        modes[key] = modes.get(key, 0) + 1
    summary = {"decode_files": len(files), "hp_files": hp_files, "fse_streams": len(streams),
               **modes, "class_streams": nclass}
    return summary


def _hp_files(files: dict[str, bytes]) -> int:
    """Version 3 seeds (see the module docstring); 0 when the hp model is not installed."""
    from PIL_l3ic import hp_codec
    try:
        hp_codec.load_model()
    except OSError:            # ModelError: no (or a broken) hp model here
        return 0
    count, seed = 0, 1000
    for i, mode in enumerate(MODES):
        for j, (w, h) in enumerate(HP_SIZES):
            seed += 1
            q = HP_QUALITIES[(i + j) % len(HP_QUALITIES)]
            files[f"hp_{mode}_q{q}_{w}x{h}"] = _save(_image(mode, w, h, seed), model="hp",
                                                     quality=q)
            count += 1
    files["hp_RGB_flat_96x64"] = _save(_image("RGB", 96, 64, 5, "flat"), model="hp", quality=50)
    files["hp_RGBA_meta"] = _save(_image("RGBA", 40, 24, 6), model="hp", quality=100,
                                  icc_profile=b"ICC-profile", xmp="<x:xmpmeta/>")
    return count + 2


def _class_seeds(fse, fdir, rng) -> int:
    """Class-coder inputs (checks.class_input: 2 bytes of n, then the stream) with the
    harnesses' fixed tables: 1, 2, 4 states, no escapes, some, many (up to 2^20); esc = -1:
    values uniform in -6..6 (escapes of the zero-count values of class 0)."""
    import checks
    t = checks.class_tables(fse)
    count = 0
    for n, esc in ((0, 0.0), (1, 0.0), (1, 1.0), (7, 0.3), (300, 0.0), (4096, 0.01),
                   (16384, 0.05), (40000, 0.002), (65535, 0.0), (600, -1)):
        _, cls, _ = checks.class_input(n.to_bytes(2, "little"))
        scale = np.asarray(checks.CLASS_SCALES)[cls]
        vals = np.clip(np.rint(rng.laplace(0.0, 1.0, n) * scale), -checks.CLASS_E, checks.CLASS_E)
        if esc < 0:
            vals = rng.integers(-checks.CLASS_E, checks.CLASS_E + 1, n).astype(np.float64)
        wide = rng.random(n) < esc
        tail = np.minimum(rng.pareto(0.5, int(wide.sum())), 1 << 20).astype(np.int64)
        vals[wide] = rng.choice([-1, 1], int(wide.sum())) * np.minimum(
            checks.CLASS_E + 1 + tail, 1 << 20)
        s = fse.compress_classes(vals.astype(np.int32), cls, t)
        if not np.array_equal(fse.decompress_classes(s, cls, t), vals):
            raise RuntimeError(f"class seed of {n} values does not round-trip")
        with open(os.path.join(fdir, f"cls_{n}_{esc}.fse"), "wb") as f:
            f.write(n.to_bytes(2, "little") + s)
        count += 1
    return count


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(make(sys.argv[1]))
