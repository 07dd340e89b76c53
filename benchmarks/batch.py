#!/usr/bin/env python3
"""Throughput of batch conversion (PIL_l3ic.batch): images/s and MP/s for 1 and 2 local worker
processes, a plain in-process Pillow loop for reference, and optionally a Dask LocalCluster;
the numbers behind docs/batch.md.

    python benchmarks/batch.py --out out/batch                    # local pool, 1 and 2 workers
    python benchmarks/batch.py --workers 1,2,4 --dask --repeat 3

Two collections are made from ``samples/astronaut.png`` (random crops, flips and rotations, so
no two files are equal): SMALL images of 256x256 and LARGE images of 1024x768 (upscaled with
Lanczos first), saved as PNG.  Each configuration converts a whole collection to .l3c
(``convert(force=True)``) and back to PNG (``decode``); the time is the wall time of the call,
pool start and model loading included (the Dask cluster is started before the clock, its workers
load the model when the call registers the worker plugin, inside the clock).  ``startup`` is
the wall time for one 32x32 image: the fixed cost of a call.  Best of ``--repeat`` runs.
CPU s/image: user + system time of this process and its pool processes (not measured for
Dask).  A busy-loop probe at start and end measures how many cores the benchmark really gets.
Writes batch.json and batch.md (a table) into ``--out``; other processes distort the times (the
load average at start and end is recorded).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # PIL_l3ic from this checkout

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import PIL_l3ic  # noqa: E402,F401
from PIL_l3ic import batch  # noqa: E402


def make_set(folder: Path, n: int, size: tuple[int, int], src: Image.Image, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    w, h = size
    scale = max(1.0, 1.5 * max(w, h) / min(src.size))
    big = src.resize((round(src.width * scale), round(src.height * scale)), Image.LANCZOS)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        x, y = rng.integers(0, big.width - w + 1), rng.integers(0, big.height - h + 1)
        im = big.crop((x, y, x + w, y + h))
        if rng.integers(2):
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        if rng.integers(2) and w == h:
            im = im.transpose(Image.ROTATE_90)
        im.save(folder / f"{i:04d}.png")
    return folder


def cpu_time() -> float:
    """User + system CPU seconds of this process and its reaped children (pool processes)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def available_cores(seconds: float = 3.0) -> float:
    """CPU seconds per second that ``cpu_count`` busy processes get, at this process's
    priority: the share of the machine this benchmark can actually use."""
    code = ("import time\nt = time.time() + %r\nwhile time.time() < t: pass\n"
            "print(time.process_time())" % seconds)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
             for _ in range(batch.cpu_count())]
    return sum(float(p.communicate()[0]) for p in procs) / seconds


def loop(kind: str, src: Path, dst: Path, quality: str) -> dict:
    """The reference: a plain loop in this process (models already loaded, all cores)."""
    t0, n, pixels = time.perf_counter(), 0, 0
    for p in sorted(src.iterdir()):
        with Image.open(p) as im:
            im.load()
            buf = io.BytesIO()
            if kind == "encode":
                im.save(buf, format="L3IC", quality=quality)
            else:
                im.save(buf, format="PNG")
            (dst / (p.stem + (".l3c" if kind == "encode" else ".png"))).write_bytes(
                buf.getvalue())
            n, pixels = n + 1, pixels + im.width * im.height
    t = time.perf_counter() - t0
    return {"elapsed_s": t, "images_per_s": n / t, "mpixels_per_s": pixels / t / 1e6}


def run(config: str, kind: str, src: Path, dst: Path, quality: str, client) -> dict:
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    c0 = cpu_time()
    if config == "loop":
        r = loop(kind, src, dst, quality)
        return dict(r, cpu_s_per_image=(cpu_time() - c0) / len(os.listdir(src)))
    kw = {"client": client} if config == "dask" else {"workers": int(config)}
    if kind == "encode":
        rep = batch.convert([src], dst, quality, force=True, progress=False, **kw)
    else:
        rep = batch.decode([src], dst, force=True, progress=False, **kw)
    assert rep.failed == 0, rep.text()
    d = rep.as_dict()
    cpu = (cpu_time() - c0) / rep.converted if config != "dask" else None  # Dask: not ours
    return dict({k: d[k] for k in ("elapsed_s", "images_per_s", "mpixels_per_s", "bpp")},
                cpu_s_per_image=cpu)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--image", default=str(ROOT / "samples" / "astronaut.png"))
    ap.add_argument("--small", type=int, default=32, help="number of 256x256 images")
    ap.add_argument("--large", type=int, default=8, help="number of 1024x768 images")
    ap.add_argument("--workers", default="1,2", help="comma list of local pool sizes")
    ap.add_argument("--dask", action="store_true",
                    help="also a Dask LocalCluster (processes, 1 thread each) of the largest size")
    ap.add_argument("-q", "--quality", default="32c")
    ap.add_argument("--repeat", type=int, default=2, help="runs per configuration (best kept)")
    ap.add_argument("--out", default="out/batch")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workers = [int(w) for w in args.workers.split(",")]
    configs = ["loop"] + [str(w) for w in workers] + (["dask"] if args.dask else [])
    client = None
    if args.dask:
        from distributed import Client, LocalCluster
        client = Client(LocalCluster(n_workers=max(workers), threads_per_worker=1,
                                     processes=True, dashboard_address=None))
    src_im = Image.open(args.image).convert("RGB")
    result = {"machine": f"{platform.node()}, {batch.cpu_count()} cores, {platform.processor()}",
              "quality": args.quality, "load_start": os.getloadavg(), "sets": {}, "startup": {},
              "cores_start": available_cores()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sets = {"small 256x256": make_set(tmp / "small", args.small, (256, 256), src_im, 1),
                "large 1024x768": make_set(tmp / "large", args.large, (1024, 768), src_im, 2)}
        tiny = make_set(tmp / "tiny", 1, (32, 32), src_im, 3)
        Image.open(tiny / "0000.png").save(io.BytesIO(), format="L3IC")   # warm the loop
        for c in configs[1:]:
            result["startup"][c] = min(
                run(c, "encode", tiny, tmp / "o", args.quality, client)["elapsed_s"]
                for _ in range(args.repeat))
            print(f"startup {c}: {result['startup'][c]:.2f} s", flush=True)
        for name, folder in sets.items():
            rows = result["sets"][name] = {"images": len(os.listdir(folder)), "configs": {}}
            for c in configs:
                row = rows["configs"][c] = {}
                for kind, s in (("encode", folder), ("decode", tmp / "l3c")):
                    dst = tmp / "l3c" if kind == "encode" else tmp / "png"
                    runs = [run(c, kind, s, dst, args.quality, client) for _ in range(args.repeat)]
                    row[kind] = min(runs, key=lambda r: r["elapsed_s"])
                    print(f"{name} {c:>4s} {kind}: {row[kind]['images_per_s']:.2f} images/s, "
                          f"{row[kind]['mpixels_per_s']:.3f} MP/s", flush=True)
    if client is not None:
        client.close()
    result["load_end"] = os.getloadavg()
    result["cores_end"] = available_cores()
    (out / "batch.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "batch.md").write_text(table(result))
    print(table(result))
    return 0


def table(r: dict) -> str:
    names = {"loop": "Pillow loop (1 process, all cores)", "dask": "Dask LocalCluster"}
    lines = [f"Machine: {r['machine']}; model {r['quality']}; load average "
             f"{r['load_start'][0]:.1f} at start, {r['load_end'][0]:.1f} at end; cores "
             f"available to the benchmark (busy-loop probe): {r['cores_start']:.2f} at start, "
             f"{r['cores_end']:.2f} at end.", "",
             "| images | runner | encode images/s | encode MP/s | encode CPU s/image | "
             "decode images/s | decode MP/s | decode CPU s/image |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in r["sets"].items():
        for c, row in s["configs"].items():
            label = names.get(c, f"local pool, {c} worker{'s' * (c != '1')}")
            e, d = row["encode"], row["decode"]
            cpu = [f"{x['cpu_s_per_image']:.3f}" if x["cpu_s_per_image"] else "-" for x in (e, d)]
            lines.append(f"| {s['images']} x {name.split()[1]} | {label} | "
                         f"{e['images_per_s']:.2f} | {e['mpixels_per_s']:.3f} | {cpu[0]} | "
                         f"{d['images_per_s']:.2f} | {d['mpixels_per_s']:.3f} | {cpu[1]} |")
    lines += ["", "Startup (one 32x32 image, wall): " + ", ".join(
        f"{names.get(c, c + ' worker(s)')} {t:.2f} s" for c, t in r["startup"].items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
