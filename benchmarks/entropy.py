"""The l3ic tANS entropy coder (PIL_l3ic._fse) as ``bytes -> bytes`` callables for
../shared/bench/entropy_bench.py, plus a batch (multi-thread) benchmark.

Single-channel benchmark (sizes vs the Shannon bound, single-thread MB/s):

    cd /work/main && PYTHONPATH=/work/main taskset -c 1 \
        python ../shared/bench/entropy_bench.py --coder benchmarks.entropy:compress,decompress

``compress`` returns a self-describing stream (it stores n and its mode), so
``decompress`` needs nothing but the bytes.

Batch benchmark (compress_batch / decompress_batch, 1 vs N threads):

    PYTHONPATH=/work/main python -m benchmarks.entropy --channels 32 --n 32640 --threads 1,2

Real latents, plain streams (no width) vs the spatial-context variant (width given), one thread:

    PYTHONPATH=. python -m benchmarks.entropy --image samples/astronaut.png --size 1920x1088 \
        --quality 32c
"""
from __future__ import annotations

import argparse
import statistics
import time

from PIL_l3ic._fse import compress, decompress  # noqa: F401

CODER_NAME = "l3ic-fse"
__all__ = ["compress", "decompress", "CODER_NAME"]


def _channels(C: int, n: int, seed: int = 0):
    """C synthetic latent channels: discretised Laplacians of mixed widths (codebook 0..31)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    scales = rng.choice([0.3, 0.7, 1.5, 3.0], size=C)
    y = rng.laplace(0.0, 1.0, (C, n)) * scales[:, None]
    return np.clip(np.rint(y) + 15, 0, 31).astype(np.uint8)


def _median_time(fn, min_time: float, min_samples: int = 7) -> float:
    fn()
    samples, start = [], time.perf_counter()
    while len(samples) < min_samples or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def batch_bench(channels: int, n: int, threads: list[int], min_time: float) -> list[dict]:
    from PIL_l3ic import _fse

    arr = _channels(channels, n)
    blobs = _fse.compress_batch(arr, threads=1)
    assert (_fse.decompress_batch(blobs, n, threads=1) == arr).all()
    rows = []
    for t in threads:
        enc = _median_time(lambda: _fse.compress_batch(arr, threads=t), min_time)
        dec = _median_time(lambda: _fse.decompress_batch(blobs, n, threads=t), min_time)
        rows.append(dict(threads=t, enc_mbs=arr.size / enc / 1e6, dec_mbs=arr.size / dec / 1e6,
                         enc_ms=enc * 1e3, dec_ms=dec * 1e3))
    return rows


def latent_bench(image: str, size: str | None, quality: str, min_time: float) -> list[dict]:
    """The latent of an image (installed model, resized to WxH first if size is given), coded
    plain and with the context variant: bytes, compress_batch / decompress_batch ms."""
    import numpy as np
    from PIL import Image

    from PIL_l3ic import _fse, codec, runtime

    im = Image.open(image).convert("RGB")
    if size:
        im = im.resize(tuple(int(v) for v in size.lower().split("x")), Image.LANCZOS)
    lat = codec._analyse(runtime.network(quality, "encoder"), np.asarray(im), None)
    C, h, w = lat.shape
    arr = lat.reshape(C, -1)
    rows = []
    for name, width in (("plain", None), ("context", w)):
        blobs = _fse.compress_batch(arr, threads=1, width=width)
        assert (_fse.decompress_batch(blobs, h * w, threads=1, width=width) == arr).all()
        enc = _median_time(lambda: _fse.compress_batch(arr, threads=1, width=width), min_time)
        dec = _median_time(lambda: _fse.decompress_batch(blobs, h * w, threads=1, width=width),
                           min_time)
        modes = [_fse.stream_info(b)["mode"] for b in blobs]
        rows.append(dict(coder=name, shape=f"{C}x{h}x{w}", bytes=sum(map(len, blobs)),
                         ctx_channels=modes.count("tans-ctx"), enc_ms=enc * 1e3, dec_ms=dec * 1e3))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="batch benchmark of PIL_l3ic._fse")
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--n", type=int, default=32640, help="symbols per channel")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--image", help="benchmark the latent of this image instead (see above)")
    ap.add_argument("--size", help="resize the image to WxH first")
    ap.add_argument("--quality", default="32c")
    args = ap.parse_args(argv)
    if args.image:
        rows = latent_bench(args.image, args.size, args.quality, args.min_time)
        print(f"latent {rows[0]['shape']} of {args.image} ({args.quality}), 1 thread")
        print("| coder | bytes | context channels | compress_batch ms | decompress_batch ms |")
        print("|---|--:|--:|--:|--:|")
        for r in rows:
            print(f"| {r['coder']} | {r['bytes']:,} | {r['ctx_channels']} | {r['enc_ms']:.2f} "
                  f"| {r['dec_ms']:.2f} |")
        return 0
    threads = [int(t) for t in args.threads.split(",")]
    rows = batch_bench(args.channels, args.n, threads, args.min_time)
    base = rows[0]
    print(f"{args.channels} channels x {args.n} symbols")
    print("| threads | compress_batch MB/s | speed-up | decompress_batch MB/s | speed-up |")
    print("|--:|--:|--:|--:|--:|")
    for r in rows:
        print(f"| {r['threads']} | {r['enc_mbs']:.0f} | {r['enc_mbs'] / base['enc_mbs']:.2f}x "
              f"| {r['dec_mbs']:.0f} | {r['dec_mbs'] / base['dec_mbs']:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
