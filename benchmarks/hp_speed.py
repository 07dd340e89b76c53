#!/usr/bin/env python3
"""Encode and decode times of the hp model family against release 0.1.0's models, side by
side in one process, through Pillow (whole call, bytes in memory), plus the hp decoder's parts.

    python benchmarks/hp_speed.py [--size 1920x1080] [--runs 5] [--threads 2]

The test image is samples/astronaut.png resized to cover the size and centre-cropped (as
benchmarks/speed.py). Rows alternate between the codecs run by run, so drift of the machine's
speed hits both alike; the median of the runs is reported.
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

import PIL_l3ic  # noqa: E402
from PIL_l3ic import container, hp_codec  # noqa: E402


def test_image(size):
    with Image.open(ROOT / "samples" / "astronaut.png") as im:
        return ImageOps.fit(im.convert("RGB"), size, Image.LANCZOS)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def save(im, **opts):
    buf = io.BytesIO()
    im.save(buf, "L3IC", **opts)
    return buf.getvalue()


def load(data):
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im


def hp_parts(data, model):
    """Seconds of the hp decoder's parts: entropy decoding of z and y, hyper-synthesis, networks."""
    layout, streams, _ = container.unpack(data)
    h = layout.header
    lh, lw, zh, zw = model.geometry(h.height, h.width)
    nz = model.z_channels
    z, t_z = timed(lambda: hp_codec.decompress_z(model, streams[:nz], zh, zw, 2))
    (mean, classes), t_hyper = timed(lambda: hp_codec.hyper(model, z))
    r, t_y = timed(lambda: hp_codec.decompress_y(model, streams[nz:], classes, 2))
    level = h.level / container.LEVEL_ONE
    _, t_net = timed(lambda: hp_codec.synthesise(model, mean, r, level, h.height, h.width))
    return {"z decode": t_z, "hyper-synthesis": t_hyper, "y decode": t_y, "decoder network": t_net}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quality", default="32c")
    args = ap.parse_args(argv)
    PIL_l3ic.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.split("x"))
    im = test_image((w, h))
    rows = {"0.1.0": dict(quality=args.quality), "hp": dict(quality=args.quality, model="hp")}
    data = {k: save(im, **o) for k, o in rows.items()}          # warm-up: interpreters built
    times = {k: {"encode": [], "decode": []} for k in rows}
    for _ in range(args.runs):
        for k, opts in rows.items():
            data[k], t = timed(lambda: save(im, **opts))
            times[k]["encode"].append(t)
            _, t = timed(lambda: load(data[k]))
            times[k]["decode"].append(t)
    print(f"{args.size}, quality {args.quality}, {args.threads} threads, median of {args.runs}")
    print("| codec | bpp | encode s | decode s |\n|---|---|---|---|")
    for k in rows:
        bpp = 8 * len(data[k]) / (w * h)
        print(f"| {k} | {bpp:.3f} | {statistics.median(times[k]['encode']):.3f} | "
              f"{statistics.median(times[k]['decode']):.3f} |")
    model = hp_codec.load_model()
    parts = [hp_parts(data["hp"], model) for _ in range(args.runs)]
    print("\nhp decoder parts (median s): " + ", ".join(
        f"{p} {statistics.median(x[p] for x in parts):.3f}" for p in parts[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
