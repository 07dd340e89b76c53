#!/usr/bin/env python3
"""Other codecs side by side with L3IC, in one run on one machine: encode and decode time at
512x512 and 1920x1080, each classical codec set to the quality that matches L3IC.

    python benchmarks/codecs.py --out out/codecs                 # match 32c on PSNR
    python benchmarks/codecs.py --models 16c,32c,64c --match msssim --threads 2
    python benchmarks/codecs.py --phase match --out out/codecs   # only find the settings
    python benchmarks/codecs.py --phase time --out out/codecs    # reuse out/codecs/matched.json

Matching: L3IC encodes the 512x512 image with a model; for each other codec, a bisection over
its quality parameter finds the setting whose PSNR (or MS-SSIM) on that image is closest to
L3IC's.  The same setting is used at 1920x1080 (the bpp and PSNR reached there are reported).
Codec settings (and the codec table) are benchmarks/rd.py's, after ../shared/bench.  Timing
as ../shared/bench/speed.py: whole call in process (``Image.save`` to BytesIO,
``Image.open(BytesIO).load()``), median of --runs after --warmup, CPU time alongside
(CPU > wall: the codec used several threads).  Test images as benchmarks/speed.py.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))          # rd.py next to this file
sys.path.insert(0, str(HERE.parent))   # PIL_l3ic from this checkout

import numpy as np  # noqa: E402

from PIL_l3ic import bench, metrics  # noqa: E402
from rd import build_codecs, decode, encode  # noqa: E402

# searchable range of each codec's quality parameter (integers unless a float range)
RANGES = {"jpeg": (1, 95), "webp": (0, 100), "jp2": (0.02, 8.0), "avif": (0, 100),
          "heif": (0, 100), "jxl": (1, 99)}


def quality_of(codec, q, im, ref, match: str) -> tuple[float, int]:
    data = encode(im, codec, q)[0]
    got = np.asarray(decode(data)[0].convert("RGB"))
    value = metrics.psnr(ref, got) if match == "psnr" else metrics.ms_ssim(ref, got)
    return value, len(data)


def match_setting(codec, im, target: float, match: str):
    """The quality parameter whose metric on ``im`` is closest to ``target`` (bisection on the
    parameter, assuming the metric grows with it; log scale for JPEG 2000's target bpp)."""
    ref = np.asarray(im)
    lo, hi = RANGES[codec.name]
    is_float = isinstance(lo, float)
    seen = {}

    def f(q):
        q = round(q, 4) if is_float else int(q)
        if q not in seen:
            seen[q] = quality_of(codec, q, im, ref, match)[0]
        return seen[q]

    a, b = lo, hi
    for _ in range(14 if is_float else 8):
        if (not is_float and b - a <= 1) or (is_float and b / a < 1.01):
            break
        mid = math.sqrt(a * b) if is_float else (a + b) // 2
        a, b = (mid, b) if f(mid) < target else (a, mid)
    best = min((f(a), f(b)), key=lambda v: abs(v - target))
    return next(q for q, v in seen.items() if v == best), seen


def timed(im, codec, q, runs: int, warmup: int) -> dict:
    for _ in range(warmup):
        decode(encode(im, codec, q)[0])
    enc = [encode(im, codec, q) for _ in range(runs)]
    data = enc[-1][0]
    dec = [decode(data) for _ in range(runs)]
    ref, got = np.asarray(im), np.asarray(dec[-1][0].convert("RGB"))
    ms = metrics.ms_ssim(ref, got) if min(im.size) > 160 else math.nan
    return {"bytes": len(data), "bpp": 8 * len(data) / (im.width * im.height),
            "psnr": metrics.psnr(ref, got), "msssim": ms,
            "enc_s": statistics.median(e[1] for e in enc) / 1e3,
            "enc_cpu_s": statistics.median(e[2] for e in enc) / 1e3,
            "dec_s": statistics.median(d[1] for d in dec) / 1e3,
            "dec_cpu_s": statistics.median(d[2] for d in dec) / 1e3}


def table(rows: list[dict], model: str, match: str) -> str:
    L = [f"Matched to L3IC {model} on {match.upper()} at 512x512 (seconds; CPU seconds in "
         "brackets):", "",
         "| codec | setting | bpp-512 | PSNR-512 | MS-SSIM-512 | enc-512 | dec-512 "
         "| bpp-1080 | PSNR-1080 | enc-1080 | dec-1080 |", "|---" * 11 + "|"]
    for name in dict.fromkeys(r["codec"] for r in rows):
        a = next((r for r in rows if r["codec"] == name and r["size"] == "512"), None)
        b = next((r for r in rows if r["codec"] == name and r["size"] == "1080"), None)
        if not (a and b):
            continue
        L.append(f"| {name} | {a['setting']} | {a['bpp']:.3f} | {a['psnr']:.2f} | "
                 f"{a['msssim']:.4f} | {a['enc_s']:.3f} ({a['enc_cpu_s']:.3f}) | "
                 f"{a['dec_s']:.3f} ({a['dec_cpu_s']:.3f}) | {b['bpp']:.3f} | {b['psnr']:.2f} | "
                 f"{b['enc_s']:.3f} ({b['enc_cpu_s']:.3f}) | {b['dec_s']:.3f} "
                 f"({b['dec_cpu_s']:.3f}) |")
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--image", default=str(HERE.parent / "samples" / "astronaut.png"))
    ap.add_argument("--models", default="32c", help="L3IC models to match (comma list)")
    ap.add_argument("--match", choices=("psnr", "msssim"), default="psnr")
    ap.add_argument("--codecs", default="default", help="comma list or 'default' (all here)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="threads for every codec that can use them (L3IC too)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--phase", choices=("all", "match", "time"), default="all",
                    help="'time' reuses OUT/matched.json from a 'match' run")
    ap.add_argument("--out", default="out/codecs", help="folder for matched.json, codecs.md, "
                    "codecs.json")
    args = ap.parse_args(argv)

    codecs, info = build_codecs(args.threads)
    if "l3ic" not in codecs:
        sys.exit(f"L3IC is not available: {info.get('l3ic')}")
    # the classical codecs (rd.py's table also lists L3IC variants such as l3ic-r30)
    names = [n for n in codecs if n in RANGES] if args.codecs == "default" else \
        [n for n in args.codecs.split(",") if n != "l3ic"]
    if missing := [n for n in names if n not in codecs or n not in RANGES]:
        sys.exit(f"not available here: {missing}; {info}")
    models = args.models.split(",")
    src, desc = bench.source_image(args.image)
    imgs = {"512": bench.cover_crop(src, 512, 512), "1080": bench.cover_crop(src, 1920, 1080)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mfile = out / "matched.json"

    if args.phase == "time":
        matched = json.loads(mfile.read_text())
    else:
        matched = {}
        ref = np.asarray(imgs["512"])
        for m in models:
            target, n = quality_of(codecs["l3ic"], m, imgs["512"], ref, args.match)
            matched[m] = {"target": target, "l3ic_bpp": 8 * n / 512 ** 2, "settings": {}}
            for name in names:
                t0 = time.time()
                q, seen = match_setting(codecs[name], imgs["512"], target, args.match)
                matched[m]["settings"][name] = q
                print(f"{m}: {args.match} {target:.4f}; {name} setting {q} -> {seen[q]:.4f} "
                      f"({len(seen)} tries, {time.time() - t0:.1f} s)", file=sys.stderr)
        mfile.write_text(json.dumps({"match": args.match, "image": desc, **matched}, indent=1))
        if args.phase == "match":
            return 0

    load0 = os.getloadavg()
    res, md = [], []
    for m in models:
        rows = []
        for name in ["l3ic"] + names:
            q = m if name == "l3ic" else matched[m]["settings"][name]
            for key, im in imgs.items():
                r = dict(timed(im, codecs[name], q, args.runs, args.warmup), codec=name,
                         setting=q, size=key, model=m)
                rows.append(r)
                print(f"{m} {name} q={q} {key}: enc {r['enc_s']:.3f} s dec {r['dec_s']:.3f} s "
                      f"{r['bpp']:.3f} bpp {r['psnr']:.2f} dB", file=sys.stderr)
        res += rows
        md += [table(rows, m, matched.get("match", args.match)), ""]
    head = [f"{bench.machine()}; image `{Path(desc).name}` (512x512 crop, 1920x1080 by resize-"
            f"to-cover + crop); threads={args.threads} for L3IC, AVIF, HEIF (x265 pools, "
            "decoder) and JPEG XL (JPEG, WebP and OpenJPEG use one); median of "
            f"{args.runs} after {args.warmup} warm-up; load average {load0[0]:.2f} at start, "
            f"{os.getloadavg()[0]:.2f} at end.", "",
            "Libraries: " + "; ".join(f"{k}: {v}" for k, v in info.items()), ""]
    text = "\n".join(head + md)
    (out / "codecs.md").write_text(text)
    (out / "codecs.json").write_text(json.dumps({"rows": res, "versions": info,
                                                 "matched": matched}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
