"""Evaluate the shipped models with the real codec (real bytes) on Kodak and write docs/results.md.

    python -m training.evaluate [--qualities 16c 32c 64c] [--out docs/results.md] [--refine N]

Kodak (../shared/data/kodak) is for reporting only: nothing here feeds back into training.
For each model: mean bpp (file bytes * 8 / pixels), PSNR, SSIM and MS-SSIM (averaged over R, G, B)
on the full 768x512 images and on their central 512x512 crops, next to the original l3ic's operating
points (the targets of the training issue) and JPEG measured in the same run at similar rates.
--refine N adds rows for the crops saved with ``refine=N`` (encoder-side refinement, the same
models and decoder; slow: N refiner runs per image).  Uses only the public API: Pillow with
`import PIL_l3ic`, and PIL_l3ic.metrics.
"""
import argparse
import datetime
import glob
import io
import json
import os

import numpy as np
from PIL import Image

import PIL_l3ic  # noqa: F401  (registers the L3IC plugin)
from PIL_l3ic import metrics, runtime

KODAK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "kodak")
TARGETS = {"16c": (0.50, 0.875, 0.973), "32c": (0.85, 0.918, 0.984), "64c": (1.45, 0.952, 0.990)}
JPEG_QUALITIES = (25, 50, 75, 90)


def central_crop(im: Image.Image, size: int = 512) -> Image.Image:
    left, top = (im.width - size) // 2, (im.height - size) // 2
    return im.crop((left, top, left + size, top + size))


def measure(images, save_kwargs) -> dict[str, float]:
    rows = []
    for im in images:
        buf = io.BytesIO()
        im.save(buf, **save_kwargs)
        with Image.open(io.BytesIO(buf.getvalue())) as back:
            out = np.asarray(back.convert("RGB"))
        ref = np.asarray(im)
        rows.append((buf.tell() * 8 / (im.width * im.height), metrics.psnr(ref, out),
                     metrics.ssim(ref, out), metrics.ms_ssim(ref, out)))
    return dict(zip(("bpp", "psnr", "ssim", "ms_ssim"), np.mean(rows, axis=0).tolist()))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--qualities", nargs="+", default=["16c", "32c", "64c"])
    p.add_argument("--kodak", default=KODAK)
    p.add_argument("--out", default="docs/results.md")
    p.add_argument("--json", default="docs/results.json")
    p.add_argument("--refine", type=int, default=0, metavar="N",
                   help="also measure the crops with the save option refine=N")
    args = p.parse_args(argv)
    paths = sorted(glob.glob(os.path.join(args.kodak, "*.png")))
    full = [Image.open(f).convert("RGB") for f in paths]
    sets = {"crop512": [central_crop(im) for im in full], "full": full}
    results = {}
    if os.path.exists(args.json):  # keep figures of models not re-evaluated in this run
        with open(args.json) as f:
            results = {k: v for k, v in json.load(f).items() if k.startswith("l3ic")}
    for q in args.qualities:
        for name, images in sets.items():
            results[f"l3ic {q} {name}"] = measure(images, {"format": "L3IC", "quality": q})
            print(q, name, results[f"l3ic {q} {name}"], flush=True)
        if args.refine:
            key = f"l3ic {q} crop512-refine{args.refine}"
            results[key] = measure(sets["crop512"], {"format": "L3IC", "quality": q,
                                                     "refine": args.refine})
            print(key, results[key], flush=True)
    for jq in JPEG_QUALITIES:
        results[f"jpeg q{jq} crop512"] = measure(sets["crop512"], {"format": "JPEG", "quality": jq,
                                                                     "optimize": True})
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    models = {}
    for q in sorted({k.split()[1] for k in results if k.startswith("l3ic")}):
        with open(os.path.join(runtime.model_dir(), f"l3ic_{q}.json")) as f:
            models[q] = json.load(f)
    write_markdown(args.out, results, models, len(paths))


def write_markdown(out, results, models, n_images):
    lines = [
        "# Results on Kodak", "",
        f"Measured {datetime.date.today()} by `python -m training.evaluate` with the real codec (file "
        f"bytes), {n_images} Kodak images: full 768x512 and central 512x512 crops. SSIM and MS-SSIM "
        "are averaged over R, G, B (PIL_l3ic.metrics, the pytorch-msssim definition).", "",
        "| model | weights (steps, variant) | set | bpp | PSNR dB | SSIM | MS-SSIM | target (bpp ≤, SSIM ≥, MS-SSIM ≥) |",
        "|---|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        if not key.startswith("l3ic"):
            continue
        _, q, name = key.split()
        m = models[q]
        target = "≤ {} / ≥ {} / ≥ {}".format(*TARGETS[q]) if name.startswith("crop512") else ""
        name = name.replace("-refine", ", refine=")
        lines.append(f"| {q} | {m['train_steps']} steps, {m['variant']} | {name} | {r['bpp']:.3f} | "
                     f"{r['psnr']:.2f} | {r['ssim']:.4f} | {r['ms_ssim']:.4f} | {target} |")
    if any("refine" in k for k in results):
        lines += ["", "Rows with `refine=N`: saved with that many steps of encoder-side latent "
                  "refinement (the save option, docs/refine.md); same models, same decoder, "
                  "ordinary files.  Rows without: the default encoder."]
    lines += ["", "JPEG (Pillow, libjpeg-turbo, 4:2:0, optimised Huffman) on the same crops, same run:", "",
              "| codec | bpp | PSNR dB | SSIM | MS-SSIM |", "|---|---|---|---|---|"]
    for key, r in results.items():
        if key.startswith("jpeg"):
            lines.append(f"| {key.rsplit(' ', 1)[0]} | {r['bpp']:.3f} | {r['psnr']:.2f} | {r['ssim']:.4f} "
                         f"| {r['ms_ssim']:.4f} |")
    lines += ["", "## Against other codecs", "",
              "Rate-distortion on the same crops against JPEG, WebP, JPEG 2000, AVIF, HEIF and "
              "JPEG XL (`benchmarks/rd.py`; BD-rates against JPEG and the settings of every "
              "codec in [rd_kodak.md](rd_kodak.md)):", "", "![RD curves on Kodak](rd_kodak.png)", "",
              "Encode and decode times of all of them at 512x512 and 1920x1080 at matched quality, "
              "measured in one run on one machine (`benchmarks/codecs.py`): "
              "[speed.md, \"Against other codecs, side by side\"](speed.md#against-other-codecs-side-by-side).",
              ""]
    with open(out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
