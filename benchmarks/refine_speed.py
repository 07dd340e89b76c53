"""Encode time and peak memory of the ``refine`` save option (docs/refine.md).

    python benchmarks/refine_speed.py [--steps 10] [--threads 2] [--qualities 16c 32c 64c]

For 512x512 and 1920x1080 versions of samples/astronaut.png: the median encode time with
refine=0 and refine=STEPS, the cost of one step ((t_steps - t_0) / steps), and the peak RSS of
a fresh process that encodes the 1920x1080 image with refine=2 (tiling bounds it; see
REFINE_TILE in codec.py).  Uses only the public API.
"""
import argparse
import io
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import PIL_l3ic  # noqa: E402

SAMPLE = ROOT / "samples" / "astronaut.png"
SIZES = {"512": (512, 512), "1080": (1920, 1080)}


def encode_seconds(im: Image.Image, quality: str, refine: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        im.save(io.BytesIO(), format="L3IC", quality=quality, refine=refine)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peak_rss_mb(quality: str, size: tuple[int, int], refine: int, threads: int) -> float:
    """Peak RSS (MB) of a fresh process encoding one image of ``size`` (VmHWM: getrusage's
    maxrss would carry over this process's peak through fork and exec)."""
    code = (f"import io, PIL_l3ic; from PIL import Image; PIL_l3ic.set_num_threads({threads}); "
            f"im = Image.open({str(SAMPLE)!r}).convert('RGB').resize({size}); "
            f"im.save(io.BytesIO(), format='L3IC', quality={quality!r}, refine={refine}); "
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return int(out.stdout.split()[-1]) / 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--qualities", nargs="+", default=list(PIL_l3ic.QUALITIES))
    args = ap.parse_args(argv)
    PIL_l3ic.set_num_threads(args.threads)
    src = Image.open(SAMPLE).convert("RGB")
    print(f"threads {args.threads}, refine={args.steps}, median of {args.repeats}")
    print("| model | size | encode s, refine=0 | encode s, refine=N | s per step | "
          "peak RSS MB, refine=0 / 2 |")
    print("|---|---|---|---|---|---|")
    for q in args.qualities:
        for name, size in SIZES.items():
            im = src.resize(size)
            encode_seconds(im, q, 1, 1)                       # warm up: interpreters, tensors
            t0 = encode_seconds(im, q, 0, args.repeats)
            tn = encode_seconds(im, q, args.steps, args.repeats)
            rss = (f"{peak_rss_mb(q, size, 0, args.threads):.0f} / "
                   f"{peak_rss_mb(q, size, 2, args.threads):.0f}") if name == "1080" else ""
            print(f"| {q} | {size[0]}x{size[1]} | {t0:.2f} | {tn:.2f} | "
                  f"{(tn - t0) / args.steps:.3f} | {rss} |", flush=True)
    print(f"(this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
