"""Calibrate the hp model's presets ("16c", "32c", "64c") on the validation photos.

    python -m training.hp_presets [--model-dir tflite_models]

Each preset gets the level at which the real codec's mean rate on the central 512x512 crops of
the validation photos (never Kodak) equals the preset's target: the release 0.1.0 operating
point on Kodak (at most 0.48 / 0.80 / 1.40 bpp) divided by KODAK_OVER_VAL, the ratio of Kodak
to validation rates measured with the 0.1.0 models (1.02-1.03), with a little margin. The
levels are written into l3ic_hp.json ("presets") with the validation figures.
"""
import argparse
import json
import os

import numpy as np

TARGET_KODAK_BPP = {"16c": 0.48, "32c": 0.80, "64c": 1.40}
KODAK_OVER_VAL = 1.04


def measure(model, images, level):
    """Mean (bpp, PSNR) of the real codec at a level."""
    from PIL_l3ic import container, hp_codec
    bpps, psnrs = [], []
    for im in images:
        fields, streams, modes = hp_codec.encode(im, level, model=model)
        header = container.Header(mode="RGB", **fields)
        data = container.pack(header, streams, modes)
        out = hp_codec.decode(header, streams, model=model)
        bpps.append(8 * len(data) / (im.shape[0] * im.shape[1]))
        mse = np.mean((out.astype(np.float64) - im) ** 2)
        psnrs.append(10 * np.log10(255 ** 2 / mse))
    return float(np.mean(bpps)), float(np.mean(psnrs))


def calibrate(model, images):
    """{preset: (level, bpp, psnr)} by bisection on the level (rate grows with it)."""
    out = {}
    for name, kodak in TARGET_KODAK_BPP.items():
        target = kodak / KODAK_OVER_VAL
        lo, hi = 0.0, float(model.levels - 1)
        for _ in range(9):
            mid = (lo + hi) / 2
            bpp, _ = measure(model, images, mid)
            lo, hi = (mid, hi) if bpp < target else (lo, mid)
        level = round(lo, 3)
        out[name] = (level, *measure(model, images, level))
        print(f"{name}: level {level} -> {out[name][1]:.4f} bpp, {out[name][2]:.2f} dB "
              f"(target {target:.4f})", flush=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", help="directory of l3ic_hp.json (default: the runtime's)")
    args = p.parse_args(argv)
    if args.model_dir:
        os.environ["L3IC_MODEL_DIR"] = args.model_dir
    from PIL_l3ic import hp_codec, runtime
    from training.data import load_validation_images
    runtime.reset()
    model = hp_codec.load_model()
    images = [np.round(im * 255).astype(np.uint8) for im in load_validation_images(512)]
    found = calibrate(model, images)
    info = dict(model.info)
    info["presets"] = {k: v[0] for k, v in found.items()}
    info["presets_validation"] = {k: {"bpp": round(v[1], 4), "psnr": round(v[2], 3)}
                                  for k, v in found.items()}
    with open(model.json_path, "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
