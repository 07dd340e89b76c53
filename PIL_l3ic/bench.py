"""Timing of l3ic on this machine (``l3ic bench``; ``benchmarks/speed.py`` builds docs/speed.md on it).

Columns, as published for the original l3ic (batch 1):
    E   encoder network only: pixels -> quantised latent (the codec's tiled network pass +
        rounding, no entropy coding), D   decoder network only: latent -> pixels;
    CE  whole compression to bytes in memory: ``Image.save(BytesIO, format="L3IC", quality=q)``;
    DE  whole decompression from bytes in memory: ``Image.open(BytesIO(data)).load()``.
Each is the median of ``runs`` calls after ``warmup`` untimed calls, in this process, with the
interpreters already created (the cold start is reported apart).

Cold start (one fresh ``python`` per model): ``import PIL_l3ic``, creating the two interpreters
(model load), the first CE and DE at 512x512 (tensor allocation for a new size), then warm ones.
Peak RSS (one fresh ``python`` per measurement): the process's high-water mark (VmHWM, reset
after the input is loaded where Linux allows it, else ``ru_maxrss``) for one cold CE or DE.

Test images: 512x512 and 1920x1080 made from each image given (center crop, resized to cover
when smaller: as ../shared/bench/speed.py), else ``samples/astronaut.png`` of a source
checkout, else a synthetic smooth image (an installed package has no sample photo).  With
several photos each column is the mean over them of the per-photo medians (the original's
figures are means over 39 photos); cold start and peak RSS use the first.
"""
from __future__ import annotations

import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

QUALITIES = ("16c", "32c", "64c")
SIZES = {"512": (512, 512), "1080": (1920, 1080)}
ORIGINAL = [  # published by the original l3ic, medium model (32 channels), mean over 39 photos
    ("original, i7-7700, 4 cores", 0.227, 0.332, 1.875, 2.790),
    ("original, i7-9770, 8 cores", 0.076, 0.140, 0.608, 1.173),
    ("original, GTX 1080 GPU", 0.074, 0.050, 0.181, 0.171)]
_SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "astronaut.png"


# ----------------------------------------------------------------------------- images

def cover_crop(img, w: int, h: int):
    """Center crop a Pillow image to w x h; resize it (Lanczos) first so that it covers w x h
    when it is smaller, or more than twice as large in both directions."""
    from PIL import Image
    if img.width < w or img.height < h or (img.width > 2 * w and img.height > 2 * h):
        s = max(w / img.width, h / img.height)
        img = img.resize((math.ceil(img.width * s), math.ceil(img.height * s)), Image.LANCZOS)
    left, top = (img.width - w) // 2, (img.height - h) // 2
    return img.crop((left, top, left + w, top + h))


def source_image(path: str | None = None):
    """(RGB Pillow image, description) used to make the test sizes."""
    from PIL import Image
    if path is None and _SAMPLE.is_file():
        path = str(_SAMPLE)
    if path is not None:
        with Image.open(path) as im:
            return im.convert("RGB"), path
    rng = np.random.default_rng(0)
    z = rng.normal(size=(70, 70, 3)).astype(np.float32)
    planes = [np.asarray(Image.fromarray(z[..., c], "F").resize((512, 512), Image.BICUBIC))
              for c in range(3)]
    a = np.stack(planes, -1)
    a = (a - a.min()) / (a.max() - a.min()) * 255 + rng.normal(0, 4, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)), "synthetic (smooth noise)"


def test_images(path: str | None = None, sizes=SIZES) -> tuple[dict, str]:
    src, desc = source_image(path)
    return {k: np.asarray(cover_crop(src, w, h)) for k, (w, h) in sizes.items()}, desc


# ----------------------------------------------------------------------------- timing

def _times(fn, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def network_fns(q: str, rgb: np.ndarray):
    """(E, D) callables running only the networks, as the codec runs them (tiled)."""
    from PIL_l3ic import codec, runtime
    enc, dec = runtime.network(q, "encoder"), runtime.network(q, "decoder")
    H, W = rgb.shape[:2]
    # codec._analyse / codec._synthesise are the codec's network passes (tiling + rounding)
    lat = codec._analyse(enc, rgb)
    return (lambda: codec._analyse(enc, rgb)), (lambda: codec._synthesise(dec, lat, H, W))


def measure(q: str, rgb: np.ndarray, runs: int = 5, warmup: int = 1) -> dict:
    """E, D, CE, DE for one model and image: medians and minima in seconds, bytes, bpp."""
    from PIL import Image
    import PIL_l3ic  # noqa: F401
    im = Image.fromarray(rgb)
    buf = io.BytesIO()
    im.save(buf, format="L3IC", quality=q)
    data = buf.getvalue()

    def ce():
        im.save(io.BytesIO(), format="L3IC", quality=q)

    def de():
        Image.open(io.BytesIO(data)).load()

    e, d = network_fns(q, rgb)
    res = {"quality": q, "size": f"{rgb.shape[1]}x{rgb.shape[0]}", "bytes": len(data),
           "bpp": 8 * len(data) / (rgb.shape[0] * rgb.shape[1])}
    for name, fn in (("E", e), ("D", d), ("CE", ce), ("DE", de)):
        t = _times(fn, runs, warmup)
        res[name], res[name + "_min"] = statistics.median(t), min(t)
    return res


def measure_photos(q: str, rgbs: list[np.ndarray], runs: int = 5, warmup: int = 1) -> dict:
    """``measure`` on every photo (all of one size): the mean of each figure over the photos,
    with the per-photo results under "per_photo" when there are several."""
    per = [measure(q, rgb, runs, warmup) for rgb in rgbs]
    if len(per) == 1:
        return per[0]
    res = {k: v if isinstance(v, str) else statistics.fmean(r[k] for r in per)
           for k, v in per[0].items()}
    return dict(res, photos=len(per), per_photo=per)


# ----------------------------------------------------------------------------- subprocesses

def _child_env() -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _run_child(*args: str, timeout: float = 600) -> dict:
    code = ("import time; t0 = time.perf_counter(); import sys; "
            "from PIL_l3ic.bench import _child; _child(sys.argv[1:], t0)")
    cmd = [sys.executable, "-c", code, *args]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(), timeout=timeout)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {p.returncode}: {p.stderr.strip()[-500:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["process_wall"] = wall
    return res


def cold_start(q: str, rgb: np.ndarray, threads: int | None = None) -> dict:
    """Import, interpreter creation, first and warm CE/DE in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        np.save(os.path.join(tmp, "in.npy"), rgb)
        return _run_child("cold", q, os.path.join(tmp, "in.npy"), str(threads or 0))


def peak_rss(q: str, rgb: np.ndarray, threads: int | None = None) -> dict:
    """Peak RSS (MiB) of a fresh process doing one CE, and of one doing one DE."""
    with tempfile.TemporaryDirectory() as tmp:
        src, l3c = os.path.join(tmp, "in.npy"), os.path.join(tmp, "in.l3c")
        np.save(src, rgb)
        enc = _run_child("rss-encode", q, src, str(threads or 0), l3c)
        dec = _run_child("rss-decode", q, l3c, str(threads or 0))
    return {"quality": q, "size": f"{rgb.shape[1]}x{rgb.shape[0]}", "encode": enc,
            "decode": dec}


def _rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB."""
    try:
        with open("/proc/self/status") as f:
            kv = dict(line.split(":", 1) for line in f if ":" in line)
        return int(kv["VmRSS"].split()[0]) / 1024, int(kv["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return float("nan"), peak


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")   # Linux >= 4.0: reset VmHWM to the current RSS
        return True
    except OSError:
        return False


def _child(argv: list[str], t0: float) -> None:
    """One measurement in a fresh interpreter (``t0``: its clock before ``import PIL_l3ic``)."""
    kind, q, path, threads = argv[:4]
    from PIL import Image
    import PIL_l3ic
    from PIL_l3ic import runtime
    if int(threads):
        PIL_l3ic.set_num_threads(int(threads))
    out: dict = {"threads": runtime.num_threads()}
    if kind == "cold":
        out["import"] = time.perf_counter() - t0
        rgb = np.load(path)
        t = time.perf_counter()
        runtime.network(q, "encoder")
        runtime.network(q, "decoder")
        out["model_load"] = time.perf_counter() - t
        im = Image.fromarray(rgb)
        for k in ("first", "warm"):
            t = time.perf_counter()
            buf = io.BytesIO()
            im.save(buf, format="L3IC", quality=q)
            out[f"{k}_CE"] = time.perf_counter() - t
            t = time.perf_counter()
            Image.open(io.BytesIO(buf.getvalue())).load()
            out[f"{k}_DE"] = time.perf_counter() - t
    else:
        if kind == "rss-encode":
            im = Image.fromarray(np.load(path))
        else:
            with open(path, "rb") as f:
                data = f.read()
        out["baseline_mib"], _ = _rss_mib()   # interpreter + imports + input
        out["reset"] = _reset_peak()
        t = time.perf_counter()
        if kind == "rss-encode":
            buf = io.BytesIO()
            im.save(buf, format="L3IC", quality=q)
            with open(argv[4], "wb") as f:
                f.write(buf.getvalue())
        else:
            Image.open(io.BytesIO(data)).load()
        out["seconds"] = time.perf_counter() - t
        _, out["peak_mib"] = _rss_mib()
    print(json.dumps(out))


# ----------------------------------------------------------------------------- tables

def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count()
    return f"{cpu}, {n} cores"


def timing_table(rows: list[dict], label: str, original: bool = True) -> str:
    """Markdown table with the original's columns, one line per model (seconds)."""
    by = {(r["quality"], r["size"]): r for r in rows}
    cols = [(k, s) for s in ("512", "1080") for k in ("E", "D", "CE", "DE")]
    L = ["| hardware | model | " + " | ".join(f"{k}-{s}" for k, s in cols) + " | bpp-512 "
         "| bpp-1080 |", "|---" * (len(cols) + 4) + "|"]
    if original:
        for name, ce5, de5, ce10, de10 in ORIGINAL:
            L.append(f"| {name} | 32c | – | – | {ce5:.3f} | {de5:.3f} | – | – | {ce10:.3f} "
                     f"| {de10:.3f} | – | – |")
    for q in QUALITIES:
        r5, r10 = by.get((q, "512x512")), by.get((q, "1920x1080"))
        if not (r5 or r10):
            continue
        cells = []
        for k, s in cols:
            r = r5 if s == "512" else r10
            cells.append(f"{r[k]:.3f}" if r else "–")
        L.append(f"| {label} | {q} | " + " | ".join(cells) + " | "
                 + " | ".join(f"{r['bpp']:.3f}" if r else "–" for r in (r5, r10)) + " |")
    return "\n".join(L)


def cold_table(rows: list[dict]) -> str:
    L = ["| model | import s | model load s | first CE-512 s | first DE-512 s | warm CE-512 s "
         "| warm DE-512 s | whole process s |", "|---" * 8 + "|"]
    for r in rows:
        L.append(f"| {r['quality']} | {r['import']:.3f} | {r['model_load']:.3f} | "
                 f"{r['first_CE']:.3f} | {r['first_DE']:.3f} | {r['warm_CE']:.3f} | "
                 f"{r['warm_DE']:.3f} | {r['process_wall']:.2f} |")
    return "\n".join(L)


def rss_table(rows: list[dict]) -> str:
    L = ["| model | image | peak RSS CE MiB (above baseline) | CE s (cold) "
         "| peak RSS DE MiB (above baseline) | DE s (cold) |", "|---" * 6 + "|"]
    for r in rows:
        e, d = r["encode"], r["decode"]
        L.append(f"| {r['quality']} | {r['size']} | {e['peak_mib']:.0f} "
                 f"({e['peak_mib'] - e['baseline_mib']:.0f}) | {e['seconds']:.2f} | "
                 f"{d['peak_mib']:.0f} ({d['peak_mib'] - d['baseline_mib']:.0f}) | "
                 f"{d['seconds']:.2f} |")
    return "\n".join(L)


# ----------------------------------------------------------------------------- command line

def add_arguments(p) -> None:
    p.add_argument("images", nargs="*", metavar="IMAGES",
                   help="photos to make the 512x512 and 1920x1080 test images from; with "
                        "several, each figure is the mean over them of the per-photo medians "
                        "(default: samples/astronaut.png of a source checkout, else a "
                        "synthetic image)")
    p.add_argument("-q", "--quality", default="all", help="models: comma list of "
                   "16c,32c,64c or 'all'")
    p.add_argument("--runs", type=int, default=5, help="timed calls per measurement (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first")
    p.add_argument("--threads", type=int, default=0,
                   help="threads for networks and entropy coder (0: L3IC_NUM_THREADS or all "
                        "cores)")
    p.add_argument("--no-cold", action="store_true", help="skip the cold-start measurement")
    p.add_argument("--rss", action="store_true",
                   help="also measure peak RSS of one CE and one DE at 1920x1080")
    p.add_argument("--json", metavar="FILE", help="also write all results as JSON")


def run(args) -> dict:
    """Measure what ``args`` asks for; returns {"timing", "cold", "rss", "info"}."""
    import PIL_l3ic
    qs = QUALITIES if args.quality == "all" else tuple(args.quality.split(","))
    bad = [q for q in qs if q not in QUALITIES]
    if bad:
        raise ValueError(f"unknown model(s) {bad}; use {', '.join(QUALITIES)} or all")
    if args.threads:
        PIL_l3ic.set_num_threads(args.threads)
    from PIL_l3ic import runtime
    photos = [test_images(path) for path in (args.images or [None])]
    imgs, desc = photos[0]
    if len(photos) > 1:
        desc = f"{len(photos)} photos ({desc}, ...)"
    res = {"timing": [], "cold": [], "rss": [],
           "info": {"machine": machine(), "threads": runtime.num_threads(), "source": desc,
                    "photos": len(photos),
                    "runs": args.runs, "warmup": args.warmup, "python": platform.python_version(),
                    "loadavg_start": os.getloadavg()}}
    for q in qs:
        info = runtime.model_info(q)
        res["info"][q] = {"variant": info.variant, "fingerprint": info.fingerprint.hex(),
                          "train_steps": info.train_steps}
        for key in ("512", "1080"):
            r = measure_photos(q, [p[0][key] for p in photos], args.runs, args.warmup)
            res["timing"].append(r)
            print(f"  {q} {r['size']}: E {r['E']:.3f}  D {r['D']:.3f}  CE {r['CE']:.3f}  "
                  f"DE {r['DE']:.3f} s  ({r['bpp']:.3f} bpp)", file=sys.stderr)
        if not args.no_cold:
            res["cold"].append(dict(cold_start(q, imgs["512"], args.threads), quality=q))
        if args.rss:
            res["rss"].append(peak_rss(q, imgs["1080"], args.threads))
    res["info"]["loadavg_end"] = os.getloadavg()
    return res


def report(res: dict) -> str:
    i = res["info"]
    label = f"this machine ({i['threads']} threads)"
    out = [f"{i['machine']}; {i['threads']} threads; images from {i['source']}; median of "
           f"{i['runs']} after {i['warmup']} warm-up"
           + (" per photo, mean over the photos" if i["photos"] > 1 else "") + "; seconds",
           "",
           timing_table(res["timing"], label)]
    if res["cold"]:
        out += ["", "Cold start (fresh process):", "", cold_table(res["cold"])]
    if res["rss"]:
        out += ["", "Peak RSS (fresh process per measurement):", "", rss_table(res["rss"])]
    return "\n".join(out)


def main(args) -> int:
    try:
        res = run(args)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"l3ic bench: {e}", file=sys.stderr)
        return 1
    print(report(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(prog="python -m PIL_l3ic.bench", description=__doc__)
    add_arguments(ap)
    sys.exit(main(ap.parse_args()))
