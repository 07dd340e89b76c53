"""Pack the training images for a lent GPU machine, and load them there.

    python -m training.gpu_data init SRC.npz   # gpu_data/init.npz: float16 weights to start from
    python -m training.gpu_data pack [--budget-mib auto] [--quality Q]
    python -m training.gpu_data check          # what a device call would send, in MiB

(init first: pack's automatic budget leaves room for what is already in gpu_data/.)

The sources are exactly training/data.py's: ../shared/data/photos/train/*.png and the Debian
photos of training/data_cache/ (training.fetch_data.debian_photos()), the Debian ones halved (and
halved again where the longer side is still over 2048), as data.load_training_images does. Never
the validation photos, never Kodak. Each image is stored once, at the scale data.py starts from, as
a JPEG with 4:4:4 chroma at the highest quality (95 at most) that keeps the images under the
budget (auto: what the 64 MiB a device call may send leaves, less 2 MiB of headroom, at most
36 MiB; the manifest records the quality and the PSNR of the stored images); the loader builds the 1, 3/4, 1/2 pyramid from it with data._pyramid, as data.py does.

gpu_data/ is ignored by git; a device call takes it with carry=["gpu_data"]. The working tree that
travels (tracked and untracked files that git does not ignore, plus the carried paths) must stay
under 64 MiB: `check` adds it up.
"""
import argparse
import concurrent.futures
import io
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DEFAULT_DIR = os.path.join(ROOT, "gpu_data")
MANIFEST = "manifest.json"
TRAVEL_LIMIT_MIB = 64.0
HEADROOM_MIB = 2.0
MAX_BUDGET_MIB = 36.0


def training_sources():
    """(path, image at data.py's starting scale) of every training image, as data.py reads
    them."""
    import glob
    from training import data
    from training.fetch_data import debian_photos
    for path in sorted(glob.glob(os.path.join(data.TRAIN_DIR, "*.png"))):
        yield path, data._load_rgb(path)
    for path in debian_photos():
        im = data._load_rgb(path, downscale=2)
        if max(im.size) > 2048:
            im = im.reduce(2)
        yield path, im


def _jpeg(im, quality):
    b = io.BytesIO()
    try:
        im.save(b, "JPEG", quality=quality, subsampling=0, optimize=True)
    except OSError:      # Pillow's buffer for optimize is too small for a noisy image
        b = io.BytesIO()
        im.save(b, "JPEG", quality=quality, subsampling=0)
    return b.getvalue()


def _encode_all(images, quality):
    return [_jpeg(im, quality) for im in images]


def _psnr(images, blobs):
    """PSNR (dB) of the stored JPEGs against the images, over all pixels."""
    se, n = 0.0, 0
    for im, blob in zip(images, blobs):
        with Image.open(io.BytesIO(blob)) as j:
            d = np.asarray(j.convert("RGB"), np.float32) - np.asarray(im, np.float32)
        se, n = se + float(np.square(d).sum()), n + d.size
    return round(10 * np.log10(255.0 ** 2 / max(se / n, 1e-12)), 2)


def pack(out_dir=DEFAULT_DIR, budget_mib=MAX_BUDGET_MIB, quality=None):
    """Write the images as NNN.jpg plus manifest.json; the quality: the given one, or the highest
    of 95 .. 75 whose total stays under budget_mib. Returns the manifest."""
    sources = list(training_sources())
    for path, _ in sources:
        low = path.lower()
        assert "kodak" not in low and os.sep + "val" + os.sep not in low, path
    images = [im for _, im in sources]
    if quality is None:
        lo, hi, best = 75, 95, None          # binary search: size grows with quality
        while lo <= hi:
            q = (lo + hi) // 2
            blobs = _encode_all(images, q)
            if sum(map(len, blobs)) <= budget_mib * 2 ** 20:
                best, lo = (q, blobs), q + 1
            else:
                hi = q - 1
        if best is None:
            raise SystemExit(f"the images do not fit in {budget_mib} MiB even at quality 75")
        quality, blobs = best
    else:
        blobs = _encode_all(images, quality)
    os.makedirs(out_dir, exist_ok=True)
    for f in os.listdir(out_dir):
        if f.endswith(".jpg"):
            os.remove(os.path.join(out_dir, f))
    entries = []
    for i, ((path, im), blob) in enumerate(zip(sources, blobs)):
        name = f"{i:03d}.jpg"
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(blob)
        entries.append({"file": name, "source": os.path.relpath(path, ROOT),
                        "size": list(im.size), "bytes": len(blob)})
    manifest = {"quality": quality, "subsampling": "4:4:4", "psnr": _psnr(images, blobs),
                "images": entries,
                "total_mib": round(sum(map(len, blobs)) / 2 ** 20, 2),
                "megapixels": round(sum(im.width * im.height for im in images) / 1e6, 1)}
    with open(os.path.join(out_dir, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def write_init(src, out_dir=DEFAULT_DIR):
    """gpu_data/init.npz: the weights of a Keras-layout checkpoint (hp_train's checkpoint.npz,
    best.npz, or a compact file) as compressed float16 with meta/state and meta/recipe, without
    Adam's moments (what hp_train's --save-compact writes)."""
    dst = os.path.join(out_dir, "init.npz")
    with np.load(src) as f:
        arrays = {k: (f[k] if k.startswith("meta/") else f[k].astype(np.float16))
                  for k in f.files if not k.startswith("opt/")}
    os.makedirs(out_dir, exist_ok=True)
    np.savez_compressed(dst, **arrays)
    return dst


def travel_mib(carry=("gpu_data",)):
    """MiB a device call sends: tracked and untracked-not-ignored files plus the carried paths."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True).stdout.decode()
    total = sum(os.path.getsize(os.path.join(ROOT, p)) for p in out.split("\0")
                if p and os.path.isfile(os.path.join(ROOT, p)))
    for c in carry:
        full = os.path.join(ROOT, c)
        for d, _, files in os.walk(full):
            total += sum(os.path.getsize(os.path.join(d, f)) for f in files)
    return total / 2 ** 20


def auto_budget(out_dir=DEFAULT_DIR):
    """MiB left for the images: the travel limit less the tree, what else is in out_dir (an
    init.npz) and the headroom; at most MAX_BUDGET_MIB."""
    other = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir)
                if not f.endswith(".jpg")) / 2 ** 20 if os.path.isdir(out_dir) else 0.0
    return min(MAX_BUDGET_MIB, TRAVEL_LIMIT_MIB - HEADROOM_MIB - travel_mib(()) - other)


def load_images(folder, patch):
    """The training images of a packed folder, as data.load_training_images gives them: uint8
    (H, W, 3) arrays, each image at the scales of data.SCALES that are at least patch wide."""
    from training import data
    with open(os.path.join(folder, MANIFEST)) as f:
        entries = json.load(f)["images"]

    def one(entry):
        with Image.open(os.path.join(folder, entry["file"])) as im:
            return data._pyramid(im.convert("RGB"), patch)
    with concurrent.futures.ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        levels = list(pool.map(one, entries))
    images = [a for lv in levels for a in lv]
    if not images:
        raise SystemExit(f"no training images in {folder}")
    return images


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("--out", default=DEFAULT_DIR)
    a.add_argument("--budget-mib", default="auto", help="MiB for the images, or auto")
    a.add_argument("--quality", type=int)
    b = sub.add_parser("init")
    b.add_argument("src")
    b.add_argument("--out", default=DEFAULT_DIR)
    sub.add_parser("check")
    args = p.parse_args(argv)
    if args.cmd == "pack":
        budget = auto_budget(args.out) if args.budget_mib == "auto" else float(args.budget_mib)
        print(f"budget for the images: {budget:.1f} MiB", flush=True)
        m = pack(args.out, budget, args.quality)
        print(f"{len(m['images'])} images, {m['megapixels']} MP, JPEG q{m['quality']} 4:4:4 "
              f"(PSNR {m['psnr']} dB), {m['total_mib']} MiB in {args.out}")
    elif args.cmd == "init":
        dst = write_init(args.src, args.out)
        print(f"{dst}: {os.path.getsize(dst) / 2 ** 20:.2f} MiB")
    mib = travel_mib()
    print(f"a device call with carry=['gpu_data'] sends {mib:.1f} MiB (limit {TRAVEL_LIMIT_MIB})")
    if mib > TRAVEL_LIMIT_MIB:
        sys.exit(1)


if __name__ == "__main__":
    main()
