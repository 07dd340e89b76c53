#!/usr/bin/env python3
"""Rate-distortion on Kodak: L3IC (16c, 32c, 64c) against JPEG, WebP, JPEG 2000, AVIF, HEIF and
JPEG XL, with BD-rates against JPEG 4:2:0 and plots (bpp vs PSNR, bpp vs MS-SSIM).

    python benchmarks/rd.py ../shared/data/kodak                      # full 768x512 images
    python benchmarks/rd.py ../shared/data/kodak --crop 512 --out out/rd512
    python benchmarks/rd.py IMGDIR --codecs jpeg,l3ic --max-images 4 --md docs/rd_kodak.md

Method and codec settings are those of ../shared/bench/rd.py (see its README): every codec
goes through Pillow (``img.save(BytesIO, format, **params)``, ``Image.open(...).load()``);
the codec table below is adapted from there (default codecs only).  Metrics come from
``PIL_l3ic.metrics`` (PSNR over all RGB samples; MS-SSIM with pytorch-msssim's definition),
per image, then averaged over images at each quality point.  BD-rate: as shared/bench/rd.py
(PCHIP of log-rate as a function of quality on the mean curves, over the overlapping quality
range; MS-SSIM in dB), with the PCHIP written in numpy so scipy is not needed (``bdrate.py``).

Needs ``pip install .[bench]`` (matplotlib, tqdm, pillow-heif, pillow-jxl-plugin); a codec
whose library is missing is skipped and listed as such.  Kodak is evaluation-only data.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, features

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # PIL_l3ic from the checkout
sys.path.append(str(Path(__file__).resolve().parent))   # bdrate.py, also under python -m
from PIL_l3ic import metrics  # noqa: E402
from bdrate import bd_rate, pchip_integral  # noqa: E402,F401  (pchip_integral: still rd's API)

ANCHOR = "jpeg"
KODAK = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "kodak"


# ----------------------------------------------------------------------------- codecs
@dataclass
class Codec:
    name: str
    fmt: str                       # Pillow format name
    qualities: list
    params: Callable[[Any], dict]  # quality -> Image.save keyword arguments
    desc: str


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def build_codecs(threads: int = 1) -> tuple[dict[str, Codec], dict[str, str]]:
    """Codecs available here (adapted from ../shared/bench/rd.py) and {name: library or why
    not}.  ``threads``: AVIF max_threads, JXL num_threads, x265 pools, HEIF/AVIF/JXL decoding."""
    c: dict[str, Codec] = {}
    info = {"python": platform.python_version(), "Pillow": Image.__version__}
    if features.check("jpg"):
        lib = (f"libjpeg-turbo {features.version_feature('libjpeg_turbo')}"
               if features.check_feature("libjpeg_turbo") else f"libjpeg {features.version('jpg')}")
        info["jpeg"] = lib
        c["jpeg"] = Codec("jpeg", "JPEG", [5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 85, 90, 95],
                          lambda q: dict(quality=q, subsampling=2, optimize=True),
                          f"{lib}, 4:2:0, optimized Huffman")
    if features.check("webp"):
        info["webp"] = lib = f"libwebp {features.version('webp')}"
        c["webp"] = Codec("webp", "WEBP", [0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95],
                          lambda q: dict(quality=q, method=4), f"{lib}, lossy, method 4")
    if features.check("jpg_2000"):
        info["jp2"] = lib = f"OpenJPEG {features.version('jpg_2000')}"
        c["jp2"] = Codec("jp2", "JPEG2000",
                         [0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0],
                         lambda bpp: dict(quality_mode="rates", quality_layers=[24.0 / bpp],
                                          irreversible=True, mct=1),
                         f"{lib}, 9/7, MCT, 1 layer; quality = target bpp")
    if features.check("avif"):
        info["avif"] = lib = f"libavif {features.version('avif')} (Pillow built-in)"
        try:
            from PIL import AvifImagePlugin
            AvifImagePlugin.DEFAULT_MAX_THREADS = max(1, threads)
        except Exception:
            pass
        c["avif"] = Codec("avif", "AVIF", [5, 10, 20, 30, 40, 50, 60, 70, 80, 90],
                          lambda q: dict(quality=q, speed=6, subsampling="4:2:0",
                                         max_threads=threads),
                          f"{lib}, 8-bit 4:2:0, speed 6, tune=ssim (libavif default)")
    try:
        import pillow_heif
        pillow_heif.register_heif_opener(decode_threads=max(1, threads))
        li = pillow_heif.libheif_info()
        x265 = li.get("encoders", {}).get("x265") or ""
        if "x265" in str(x265):
            info["heif"] = lib = (f"pillow-heif {pillow_heif.__version__}, libheif "
                                  f"{li.get('libheif')}, {x265}")
            pools = {"x265:pools": "none" if threads <= 1 else str(threads)}
            c["heif"] = Codec("heif", "HEIF", [0, 5, 10, 15, 20, 30, 40, 50, 60, 70],
                              lambda q: dict(quality=q, chroma=420, enc_params=dict(pools)),
                              f"{lib}; 4:2:0, x265 defaults (tune=ssim), stands in for BPG")
        else:
            info["heif"] = "pillow-heif without an x265 encoder"
    except Exception as e:
        info["heif"] = f"unavailable ({type(e).__name__}: {e}); pip install pillow-heif"
    try:
        import pillow_jxl  # noqa: F401  (registers JXL)
        from pillow_jxl import JpegXLImagePlugin
        if hasattr(JpegXLImagePlugin, "DECODE_THREADS"):
            JpegXLImagePlugin.DECODE_THREADS = max(1, threads)
        info["jxl"] = lib = f"pillow-jxl-plugin {_version('pillow-jxl-plugin')}"
        c["jxl"] = Codec("jxl", "JXL", [5, 10, 20, 30, 40, 50, 60, 70, 80, 85, 90, 95],
                         lambda q: dict(quality=q, effort=7, num_threads=threads),
                         f"{lib}, VarDCT, effort 7")
    except Exception as e:
        info["jxl"] = f"unavailable ({type(e).__name__}: {e}); pip install pillow-jxl-plugin"
    try:
        import PIL_l3ic
        from PIL_l3ic import runtime
        if threads:
            PIL_l3ic.set_num_threads(max(1, threads))
        models = {q: f"{runtime.model_info(q).variant}, {runtime.model_info(q).train_steps} steps"
                  for q in runtime.QUALITIES}
        info["l3ic"] = lib = f"PIL_l3ic {PIL_l3ic.__version__} (models {models})"
        c["l3ic"] = Codec("l3ic", "L3IC", ["16c", "32c", "64c"], lambda q: dict(quality=q), lib)
        c["l3ic-r30"] = Codec("l3ic-r30", "L3IC", ["16c", "32c", "64c"],
                              lambda q: dict(quality=q, refine=30),
                              f"{lib}, save option refine=30 (docs/refine.md)")
    except Exception as e:
        info["l3ic"] = f"unavailable ({type(e).__name__}: {e})"
    try:
        from PIL_l3ic import hp_codec
        hp = hp_codec.load_model()
        info["l3ic-hp"] = lib = (f"PIL_l3ic hp model ({hp.info['transform']}, "
                                 f"{hp.info.get('train_steps', '?')} steps, {hp.info['variant']})")
        c["l3ic-hp"] = Codec("l3ic-hp", "L3IC", [0, 12.5, 25, 37.5, 50, 62.5, 75, 87.5, 100],
                             lambda q: dict(quality=q, model="hp"), f"{lib}, save option model='hp'")
    except Exception as e:
        info["l3ic-hp"] = f"unavailable ({type(e).__name__}: {e})"
    Image.init()
    return c, info


def encode(im: Image.Image, codec: Codec, q) -> tuple[bytes, float, float]:
    """(data, wall ms, process CPU ms) of one in-process encode."""
    buf = io.BytesIO()
    t0, c0 = time.perf_counter(), time.process_time()
    im.save(buf, format=codec.fmt, **codec.params(q))
    return (buf.getvalue(), (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3)


def decode(data: bytes) -> tuple[Image.Image, float, float]:
    """(image, wall ms, process CPU ms) of one in-process Image.open + load."""
    t0, c0 = time.perf_counter(), time.process_time()
    im = Image.open(io.BytesIO(data))
    im.load()
    return im, (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3


def load_image(path: Path, crop: int = 0) -> Image.Image:
    with Image.open(path) as im:
        im = im.convert("RGB")
    if crop:
        cw, ch = min(crop, im.width), min(crop, im.height)
        left, top = (im.width - cw) // 2, (im.height - ch) // 2
        im = im.crop((left, top, left + cw, top + ch))
    return im


# ----------------------------------------------------------------------------- tables, plots
def summarize(rows: list[dict], codecs: dict[str, Codec], n_images: int) -> list[dict]:
    out = []
    for name, c in codecs.items():
        for q in c.qualities:
            rs = [r for r in rows if r["codec"] == name and str(r["quality"]) == str(q)]
            if rs:
                mean = {k: float(np.mean([r[k] for r in rs])) for k in ("bpp", "psnr", "msssim")}
                out.append(dict(codec=name, quality=q, n=len(rs), complete=len(rs) == n_images,
                                msssim_db=metrics.ms_ssim_db(mean["msssim"]),
                                enc_ms=float(np.median([r["enc_ms"] for r in rs])),
                                dec_ms=float(np.median([r["dec_ms"] for r in rs])), **mean))
    return out


def bd_table(summary: list[dict], names: list[str]) -> list[dict]:
    def curve(name, key):
        s = [r for r in summary if r["codec"] == name and r["complete"]]
        return [r["bpp"] for r in s], [r[key] for r in s]
    res = []
    for name in names:
        if name == ANCHOR or ANCHOR not in names:
            continue
        row = {"codec": name}
        for key, label in (("psnr", "psnr"), ("msssim_db", "msssim")):
            bd, lo, hi, n1, n2 = bd_rate(*curve(ANCHOR, key), *curve(name, key))
            row.update({f"bd_{label}": bd, f"{label}_range": f"{lo:.2f}-{hi:.2f}"
                        if hi > lo else "none", f"{label}_pts": f"{n1}/{n2}"})
        res.append(row)
    return res


def markdown(summary, bds, codecs, args, n_images, png: str) -> str:
    f = (lambda v: "n/a" if not math.isfinite(v) else f"{v:+.1f}")
    L = ["# Rate-distortion on Kodak\n",
         f"{n_images} Kodak images{f', center crop {args.crop}' if args.crop else ' (full 768x512)'}"
         f"; made by `benchmarks/rd.py` on {platform.machine()}, {os.cpu_count()} CPUs, "
         f"threads={args.threads}. PSNR over all RGB samples, MS-SSIM as pytorch-msssim "
         "(`PIL_l3ic.metrics`), both averaged over images; times are medians, whole call, "
         "in process (see docs/speed.md for careful timing).\n", f"![RD curves]({png})\n",
         f"## BD-rate against {ANCHOR} (4:2:0); negative = fewer bits for the same quality\n",
         "| codec | BD-rate PSNR % | over PSNR dB | BD-rate MS-SSIM % | over MS-SSIM dB "
         "| points anchor/test |", "|---|---|---|---|---|---|"]
    L += [f"| {b['codec']} | {f(b['bd_psnr'])} | {b['psnr_range']} | {f(b['bd_msssim'])} | "
          f"{b['msssim_range']} | {b['psnr_pts']} |" for b in bds]
    L += ["\nL3IC has only 3 points, so its BD-rates cover only its own quality range; l3ic-r30 "
          "is the same models saved with `refine=30` (docs/refine.md).\n",
          "## Codecs\n"] + [f"- **{n}**: {c.desc}" for n, c in codecs.items()]
    L += ["\n## Mean over images\n", "| codec | quality | bpp | PSNR dB | MS-SSIM | MS-SSIM dB "
          "| enc ms | dec ms |", "|---|---|---|---|---|---|---|---|"]
    L += [f"| {r['codec']} | {r['quality']} | {r['bpp']:.3f} | {r['psnr']:.2f} | "
          f"{r['msssim']:.4f} | {r['msssim_db']:.2f} | {r['enc_ms']:.1f} | {r['dec_ms']:.1f} |"
          for r in summary]
    return "\n".join(L) + "\n"


def plot(path: Path, summary, names, max_bpp: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = (("psnr", "PSNR (RGB) [dB]"), ("msssim", "MS-SSIM (RGB mean)"),
            ("msssim_db", "MS-SSIM [dB] = -10 log10(1 - MS-SSIM)"))
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    for name in names:
        s = sorted((r for r in summary if r["codec"] == name and r["complete"]),
                   key=lambda r: r["bpp"])
        for ax, (k, _) in zip(axes, keys):
            ax.plot([r["bpp"] for r in s], [r[k] for r in s], marker="o", ms=4,
                    lw=2.4 if name.startswith("l3ic") else 1.2, label=name)
            if name.startswith("l3ic"):
                for r in s:
                    ax.annotate(r["quality"], (r["bpp"], r[k]), fontsize=8)
    for ax, (k, label) in zip(axes, keys):
        ys = [r[k] for r in summary if r["bpp"] <= max_bpp and math.isfinite(r[k])]
        if ys:
            pad = 0.03 * (max(ys) - min(ys) or 1)
            ax.set_ylim(min(ys) - pad, max(ys) + pad)
        ax.set(xlabel="bits per pixel", ylabel=label, xlim=(0, max_bpp))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Kodak: rate-distortion (mean over images)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def _merged_rows(path: str, codecs: dict, images: list) -> list[dict]:
    """Rows of an earlier per_image.csv for the images of this run and codecs not run now; the
    codecs found there join the report (with their sweeps as measured then)."""
    if not path:
        return []
    wanted = {p.name for p in images}
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["codec"] not in codecs and r["image"] in wanted]
    all_codecs, _ = build_codecs()
    for r in rows:
        r["bytes"] = int(r["bytes"])
        for k in ("bpp", "psnr", "msssim", "enc_ms", "dec_ms"):
            r[k] = float(r[k])
        if not r["codec"].startswith("l3ic"):
            r["quality"] = float(r["quality"]) if "." in r["quality"] else int(r["quality"])
        if r["codec"] not in codecs:
            c = all_codecs[r["codec"]]
            codecs[r["codec"]] = Codec(c.name, c.fmt, [], c.params, c.desc)
        if r["quality"] not in codecs[r["codec"]].qualities:
            codecs[r["codec"]].qualities.append(r["quality"])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("images", nargs="?", default=str(KODAK), help="folder of PNGs (or one PNG)")
    ap.add_argument("--codecs", default="default", help="comma list or 'default' (all here)")
    ap.add_argument("--max-images", type=int, default=0, help="first N images (0: all)")
    ap.add_argument("--crop", type=int, default=0, help="center crop to at most NxN (0: none)")
    ap.add_argument("--threads", type=int, default=1, help="threads per codec (see build_codecs)")
    ap.add_argument("--qualities", action="append", default=[], metavar="CODEC=Q1,Q2",
                    help="replace a codec's sweep (repeatable)")
    ap.add_argument("--out", default="out/rd_kodak", help="folder for per_image.csv, "
                    "summary.csv, bdrate.csv, run_info.json")
    ap.add_argument("--md", default="", help="markdown report (e.g. docs/rd_kodak.md); the "
                    "plot goes next to it as <name>.png (default: into --out)")
    ap.add_argument("--merge", default="", help="per_image.csv of an earlier run on the same "
                    "images: its rows for codecs not run now are reused (e.g. measure the "
                    "classical codecs once, then only l3ic after each training run)")
    ap.add_argument("--max-bpp-plot", type=float, default=2.2)
    ap.add_argument("--list", action="store_true", help="list the codecs available and exit")
    args = ap.parse_args(argv)

    codecs, info = build_codecs(args.threads)
    if args.list:
        print("\n".join(f"{k:8s} {v}" for k, v in info.items()))
        return 0
    names = list(codecs) if args.codecs == "default" else args.codecs.split(",")
    if missing := [n for n in names if n not in codecs]:
        sys.exit(f"not available here: {missing}: {[info.get(m, '?') for m in missing]}")
    if ANCHOR not in names and ANCHOR in codecs:
        names.insert(0, ANCHOR)
    codecs = {n: codecs[n] for n in names}
    for spec in args.qualities:
        n, _, qs = spec.partition("=")
        codecs[n].qualities = [s if n in ("l3ic", "l3ic-r30") else (float(s) if "." in s else int(s))
                               for s in qs.split(",")]
    src = Path(args.images)
    images = sorted(src.glob("*.png")) if src.is_dir() else [src]
    images = images[: args.max_images or None]
    if not images:
        sys.exit(f"no PNG images in {src}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = Path(args.md) if args.md else out / "rd_kodak.md"
    md.parent.mkdir(parents=True, exist_ok=True)

    run_now = dict(codecs)
    rows, failures, t_start = _merged_rows(args.merge, codecs, images), [], time.time()
    names = list(codecs)  # with the merged ones
    load0 = os.getloadavg()
    for i, p in enumerate(images):
        im = load_image(p, args.crop)
        ref = np.asarray(im)
        for name, c in run_now.items():
            for q in c.qualities:
                try:
                    data, enc_ms, _ = encode(im, c, q)
                    dec, dec_ms, _ = decode(data)
                    got = np.asarray(dec.convert("RGB"))
                    row = dict(image=p.name, codec=name, quality=q, bytes=len(data),
                               bpp=8 * len(data) / (im.width * im.height),
                               psnr=metrics.psnr(ref, got), msssim=metrics.ms_ssim(ref, got),
                               enc_ms=enc_ms, dec_ms=dec_ms)
                except Exception as e:
                    failures.append(f"{p.name} {name} q={q}: {type(e).__name__}: {e}")
                    print("FAIL", failures[-1], file=sys.stderr)
                    continue
                rows.append(row)
        print(f"[{i + 1}/{len(images)}] {p.name} ({time.time() - t_start:.0f} s)", file=sys.stderr)

    def write_csv(path, items):
        if items:
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(items[0]))
                w.writeheader()
                w.writerows({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in r.items()}
                            for r in items)
    summary = summarize(rows, codecs, len(images))
    bds = bd_table(summary, names)
    write_csv(out / "per_image.csv", rows)
    write_csv(out / "summary.csv", summary)
    write_csv(out / "bdrate.csv", bds)
    md.write_text(markdown(summary, bds, codecs, args, len(images), md.with_suffix(".png").name))
    plot(md.with_suffix(".png"), summary, names, args.max_bpp_plot)
    (out / "run_info.json").write_text(json.dumps(dict(
        argv=sys.argv, images=[p.name for p in images], crop=args.crop, threads=args.threads,
        versions=info, qualities={n: c.qualities for n, c in codecs.items()},
        loadavg_start=load0, loadavg_end=os.getloadavg(), failures=failures,
        elapsed_s=time.time() - t_start), indent=1))
    print(md.read_text())
    print(f"wrote {md}, {md.with_suffix('.png')} and {out}/*.csv", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
