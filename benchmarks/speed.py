#!/usr/bin/env python3
"""L3IC timing table on this machine, with the original l3ic's columns, plus cold start and
peak RSS; the numbers behind docs/speed.md.

    python benchmarks/speed.py --out out/speed                     # all models, all cores
    python benchmarks/speed.py --threads 2,1 --rss-sizes 1920x1080,6000x4000

E/D = networks only, CE/DE = whole compression to and from bytes in memory (definitions and
method in PIL_l3ic/bench.py, which ``l3ic bench`` runs too), at 512x512 and 1920x1080 made from
``samples/astronaut.png`` (the 1080p one by Lanczos resize-to-cover + center crop, as
../shared/bench/speed.py).  Cold start: a fresh ``python`` per model.  Peak RSS: a fresh
``python`` per measurement (one cold CE, one cold DE) at each ``--rss-sizes`` size (6000x4000 =
a 24 MP photo).  Writes speed.md (tables) and speed.json into ``--out``.

Other processes distort the times: run it on an idle machine (the load average at start and
end is recorded).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # PIL_l3ic from this checkout

import numpy as np  # noqa: E402

import PIL_l3ic  # noqa: E402
from PIL_l3ic import bench, runtime  # noqa: E402

GOAL = {"quality": "32c", "threads": 2, "CE-1080": 0.5, "DE-1080": 0.5}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--image", default=str(ROOT / "samples" / "astronaut.png"),
                    help="photo the test images are made from")
    ap.add_argument("-q", "--quality", default="all", help="comma list of models or 'all'")
    ap.add_argument("--threads", default="0", help="comma list of thread counts (0: all cores)")
    ap.add_argument("--runs", type=int, default=5, help="timed calls (median)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls first")
    ap.add_argument("--no-cold", action="store_true", help="skip cold start")
    ap.add_argument("--no-timing", action="store_true",
                    help="skip the timing table and cold start (to measure only peak RSS)")
    ap.add_argument("--rss-sizes", default="1920x1080,6000x4000",
                    help="sizes for peak RSS ('' to skip)")
    ap.add_argument("--rss-quality", default="all", help="models for peak RSS")
    ap.add_argument("--out", default="out/speed", help="folder for speed.md and speed.json")
    args = ap.parse_args(argv)

    qs = runtime.QUALITIES if args.quality == "all" else tuple(args.quality.split(","))
    rss_qs = runtime.QUALITIES if args.rss_quality == "all" else tuple(args.rss_quality.split(","))
    threads = [int(t) or runtime._cpu_count() for t in args.threads.split(",")]
    imgs, desc = bench.test_images(args.image)
    src, _ = bench.source_image(args.image)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"machine": bench.machine(), "source": desc, "runs": args.runs, "warmup": args.warmup,
           "loadavg_start": os.getloadavg(), "models": {}, "timing": [], "cold": [], "rss": []}
    for q in qs:
        info = runtime.model_info(q)
        res["models"][q] = {"variant": info.variant, "fingerprint": info.fingerprint.hex(),
                            "train_steps": info.train_steps}
    t_start = time.time()
    for n in threads if not args.no_timing else []:
        PIL_l3ic.set_num_threads(n)
        for q in qs:
            for key in ("512", "1080"):
                r = dict(bench.measure(q, imgs[key], args.runs, args.warmup), threads=n)
                res["timing"].append(r)
                print(f"{n} threads {q} {r['size']}: E {r['E']:.3f} D {r['D']:.3f} "
                      f"CE {r['CE']:.3f} DE {r['DE']:.3f} s, {r['bpp']:.3f} bpp "
                      f"({time.time() - t_start:.0f} s)", file=sys.stderr)
            if not args.no_cold:
                c = dict(bench.cold_start(q, imgs["512"], n), quality=q)
                res["cold"].append(c)
                print(f"{n} threads {q} cold: {c}", file=sys.stderr)
    n0 = threads[0]
    for size in filter(None, args.rss_sizes.split(",")):
        w, h = (int(v) for v in size.split("x"))
        rgb = np.asarray(bench.cover_crop(src, w, h))
        for q in rss_qs:
            r = dict(bench.peak_rss(q, rgb, n0), threads=n0)
            res["rss"].append(r)
            print(f"rss {q} {size}: CE {r['encode']['peak_mib']:.0f} MiB, "
                  f"DE {r['decode']['peak_mib']:.0f} MiB", file=sys.stderr)
    res["loadavg_end"] = os.getloadavg()
    res["elapsed_s"] = time.time() - t_start

    L = [f"{res['machine']}; images from `{Path(desc).name}` (512x512 crop, 1920x1080 by "
         f"resize-to-cover + crop); median of {args.runs} calls after {args.warmup} warm-up; "
         f"seconds; load average {res['loadavg_start'][0]:.2f} at start, "
         f"{res['loadavg_end'][0]:.2f} at end", ""]
    for i, n in enumerate(threads if res["timing"] else []):
        rows = [r for r in res["timing"] if r["threads"] == n]
        table = bench.timing_table(rows, f"this machine, {n} threads", original=i == 0)
        L += table.splitlines()[(0 if i == 0 else 2):]
    for r in res["timing"]:
        if (r["quality"], r["threads"], r["size"]) == (GOAL["quality"], GOAL["threads"],
                                                       "1920x1080"):
            ok = r["CE"] <= GOAL["CE-1080"] and r["DE"] <= GOAL["DE-1080"]
            L += ["", f"Goal (32c, 2 threads: CE-1080 <= 0.5 s and DE-1080 <= 0.5 s): CE-1080 "
                  f"{r['CE']:.3f} s, DE-1080 {r['DE']:.3f} s: {'met' if ok else 'NOT met'}."]
    if res["cold"]:
        L += ["", "Cold start (fresh process, 512x512):", ""]
        for n in threads:
            rows = [c for c in res["cold"] if c["threads"] == n]
            L += [f"{n} threads:", "", bench.cold_table(rows), ""]
    if res["rss"]:
        L += ["", f"Peak RSS ({n0} threads; fresh process per measurement):", "",
              bench.rss_table(res["rss"])]
    md = "\n".join(L) + "\n"
    (out / "speed.md").write_text(md)
    (out / "speed.json").write_text(json.dumps(res, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
