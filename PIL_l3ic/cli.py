"""``l3ic``: command line of PIL_l3ic (also ``python -m PIL_l3ic``); ``l3ic COMMAND --help``.

Uses only the public API (Pillow with format "L3IC", container.read_layout, metrics, bench).
Batches (encode, decode): a failing file prints one line ``l3ic: FILE: reason`` and the batch
goes on; exit status 1 if any file failed, 2 for a usage error, else 0.  Files run through a
*runner* (``_runner``: serial, threads or processes with ``-j``): ``runner(fn, tasks)`` yields
``(task, result or exception)`` in completion order.  Batch mode (folders, quoted globs,
``--scheduler ADDRESS``, ``--workers N`` or ``--report``) hands the whole job to
``PIL_l3ic.batch`` (tree mirrored under ``-o``, resume, local process pool or Dask, report).
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path

from PIL_l3ic.runtime import QUALITIES, QUALITY_BY_ID

DEFAULT_QUALITY = "32c"
STREAM_MODES = {0: "tANS", 1: "run", 2: "raw"}


class _Fail(Exception):
    """A per-file error with a message meant for the user."""


def _pillow():
    from PIL import Image
    import PIL_l3ic  # noqa: F401  (registers the L3IC format with Pillow)
    return Image


# ----------------------------------------------------------------------------- workers

def _codec_image(im):
    """The first frame in a mode the codec stores (RGB, L, RGBA, LA), converted as the plugin
    does for the modes it knows (P, PA, 1, CMYK, I;16, I, F) and to RGB(A) for the others."""
    if im.mode in ("RGB", "L", "RGBA", "LA"):
        return im
    if im.mode.startswith("I;16"):
        import numpy as np
        Image = _pillow()
        return Image.fromarray((np.asarray(im) >> 8).astype(np.uint8), "L")
    if im.mode in ("1", "I", "F"):
        return im.convert("L")
    alpha = im.mode in ("PA", "RGBa") or (im.mode == "P" and im.has_transparency_data)
    return im.convert("RGBA" if alpha else "RGB")


def _metadata(im, strip: bool) -> dict:
    """Save options carrying ICC profile, EXIF and XMP over (or dropping them)."""
    if strip:
        return {"icc_profile": None}
    return {k: im.info[k] for k in ("icc_profile", "exif", "xmp") if im.info.get(k)}


def encode_file(src: str, dst: str, quality: str, force: bool = False,
                strip: bool = False) -> dict:
    """Encode one file Pillow can read to ``dst`` (.l3c).  Returns sizes for the summary."""
    Image = _pillow()
    _check_output(src, dst, force)
    with Image.open(src) as im:
        im.load()
        meta = _metadata(im, strip)
        img = _codec_image(im)
        buf = io.BytesIO()
        img.save(buf, format="L3IC", quality=quality, **meta)
    _write(dst, buf.getvalue())
    return {"bytes_in": os.path.getsize(src), "bytes_out": buf.tell(),
            "pixels": img.width * img.height}


def decode_file(src: str, dst: str, fmt: str, force: bool = False) -> dict:
    """Decode one .l3c file to ``dst`` in Pillow format ``fmt``."""
    Image = _pillow()
    _check_output(src, dst, force)
    with Image.open(src) as im:
        if im.format != "L3IC":
            raise _Fail(f"not an l3ic file (Pillow reads it as {im.format})")
        im.load()
        out = im
        if fmt.upper() in ("JPEG", "BMP", "PPM") and im.mode in ("RGBA", "LA"):
            out = im.convert(im.mode[:-1])  # formats without alpha
        kw = {k: v for k, v in im.info.items() if k in ("icc_profile", "exif", "xmp") and v}
        buf = io.BytesIO()
        out.save(buf, format=fmt, **kw)
        pixels = im.width * im.height
    _write(dst, buf.getvalue())
    return {"bytes_in": os.path.getsize(src), "bytes_out": buf.tell(), "pixels": pixels}


def _check_output(src: str, dst: str, force: bool) -> None:
    if os.path.abspath(src) == os.path.abspath(dst):
        raise _Fail("output would overwrite the input")
    if os.path.exists(dst) and not force:
        raise _Fail(f"{dst} exists (use -f to overwrite)")


def _write(dst: str, data: bytes) -> None:
    """Write through a temporary file so a failure never leaves a partial output."""
    tmp = f"{dst}.part{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ----------------------------------------------------------------------------- batches

def _runner(args):
    """Pick how files run: serial, threads or processes.  (Batch mode, with ``--scheduler``
    or ``--workers``, goes through PIL_l3ic.batch instead, see ``_batch_mode``.)"""
    jobs = args.jobs if args.jobs > 0 else (os.cpu_count() or 1)
    if jobs == 1:
        return _serial
    if args.processes:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        return _pool(lambda: ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context(
            "spawn")))
    from concurrent.futures import ThreadPoolExecutor
    return _pool(lambda: ThreadPoolExecutor(jobs))


def _serial(fn, tasks):
    for t in tasks:
        try:
            yield t, fn(*t)
        except Exception as e:  # reported per file, the batch goes on
            yield t, e


def _pool(make):
    def run(fn, tasks):
        with make() as ex:
            pending = {ex.submit(fn, *t): t for t in tasks}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    t = pending.pop(f)
                    e = f.exception()
                    yield t, (e if e is not None else f.result())
    return run


def _outputs(inputs: list[str], output: str | None, suffix: str) -> list[str]:
    """Output path for each input: ``-o FILE`` (one input), ``-o DIR`` (made if needed;
    a trailing slash or several inputs mean a directory), or next to the input."""
    if output and (len(inputs) > 1 or output.endswith(("/", os.sep)) or os.path.isdir(output)):
        os.makedirs(output, exist_ok=True)
        return [os.path.join(output, Path(p).stem + suffix) for p in inputs]
    if output:
        return [output]
    return [str(Path(p).with_suffix(suffix)) for p in inputs]


def _batch(args, fn, tasks, verb: str) -> int:
    """Run tasks, report failures one line each, print a summary; return the exit status."""
    # the same output twice in one batch (a.png and a.jpg -> a.l3c) is an error, not a race
    seen: dict[str, str] = {}
    failed, rows, runnable = [], [], []
    for t in tasks:
        key = os.path.abspath(t[1])
        if key in seen:
            failed.append(t[0])
            print(f"l3ic: {t[0]}: same output {t[1]} as {seen[key]}", file=sys.stderr)
        else:
            seen[key] = t[0]
            runnable.append(t)
    progress = None
    if len(runnable) > 1 and not args.quiet and not args.no_progress:
        try:
            from tqdm import tqdm
            progress = tqdm(total=len(runnable), unit="file", file=sys.stderr, leave=False)
        except ImportError:
            pass
    t0 = time.perf_counter()
    for t, res in _runner(args)(fn, runnable):
        if isinstance(res, BaseException):
            msg = str(res) if isinstance(res, _Fail) else f"{type(res).__name__}: {res}"
            failed.append(t[0])
            _say(progress, f"l3ic: {t[0]}: {msg}")
        else:
            rows.append(res)
        if progress is not None:
            progress.update()
    if progress is not None:
        progress.close()
    elapsed = time.perf_counter() - t0
    b_in, b_out, pix = (sum(r[k] for r in rows) for k in ("bytes_in", "bytes_out", "pixels"))
    l3c = b_out if verb == "encoded" else b_in
    if not args.quiet:
        if len(tasks) == 1 and rows:
            print(f"{tasks[0][0]} -> {tasks[0][1]}", file=sys.stderr)
        bpp = f", {8 * l3c / pix:.3f} bpp" if pix else ""
        fails = f" ({len(failed)} failed)" if failed else ""
        print(f"{verb} {len(rows)} of {len(tasks)} files{fails}: {_size(b_in)} -> {_size(b_out)}"
              f"{bpp}, {elapsed:.2f} s", file=sys.stderr)
    return 1 if failed else 0


def _say(progress, msg: str) -> None:
    (progress.write if progress is not None else print)(msg, file=sys.stderr)


def _size(n: float) -> str:
    return next((f"{n / 10 ** e:.1f} {u}" for e, u in ((9, "GB"), (6, "MB"), (3, "kB"))
                 if n >= 10 ** e), f"{int(n)} B")


# ----------------------------------------------------------------------------- subcommands

def _batch_mode(args) -> bool:
    """Folders, glob patterns (quoted), --scheduler, --workers or --report: PIL_l3ic.batch
    mirrors the tree under -o, skips outputs already up to date (-f redoes them), reports."""
    return bool(args.scheduler or args.workers or args.report) or any(
        os.path.isdir(p) or (glob.has_magic(p) and not os.path.exists(p)) for p in args.inputs)


def _convert(args, fn, **options) -> int:
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    rep = fn(args.inputs, args.output, scheduler=args.scheduler, force=args.force,
             workers=args.workers or (args.jobs if args.jobs != 1 else None), log=log,
             progress=not (args.quiet or args.no_progress), report=args.report, **options)
    if not args.quiet:
        print(rep.text(failures=False), file=sys.stderr)   # failures were printed as they came
    return 1 if rep.failed else 0


def cmd_encode(args) -> int:
    if _batch_mode(args):
        from PIL_l3ic import batch
        return _convert(args, batch.convert, quality=args.quality, strip=args.strip)
    outs = _outputs(args.inputs, args.output, ".l3c")
    tasks = [(s, d, args.quality, args.force, args.strip) for s, d in zip(args.inputs, outs)]
    return _batch(args, encode_file, tasks, "encoded")


def cmd_decode(args) -> int:
    Image = _pillow()
    Image.init()
    fmt = Image.EXTENSION.get("." + args.format.lower(), args.format.upper())  # jpg -> JPEG
    exts = [e for e, f in Image.EXTENSION.items() if f == fmt]
    if fmt not in Image.SAVE or not exts:
        print(f"l3ic: error: Pillow cannot write format {args.format!r}", file=sys.stderr)
        return 2
    ext = f".{args.format.lower()}" if f".{args.format.lower()}" in exts else exts[0]
    if _batch_mode(args):
        from PIL_l3ic import batch
        return _convert(args, batch.decode, format=args.format)
    outs = _outputs(args.inputs, args.output, ext)
    tasks = [(s, d, fmt, args.force) for s, d in zip(args.inputs, outs)]
    return _batch(args, decode_file, tasks, "decoded")


def file_info(path: str) -> dict:
    """What ``l3ic info`` shows, as a dict (header fields, bpp, channel table, metadata)."""
    from PIL_l3ic.container import read_layout
    with open(path, "rb") as f:
        lay = read_layout(f)
    h = lay.header
    size = lay.file_size if lay.file_size is not None else lay.end
    return {"file": path, "width": h.width, "height": h.height, "mode": h.mode,
            "model": QUALITY_BY_ID[h.model_id], "channels": h.channels,
            "latent": [h.latent_h, h.latent_w], "fingerprint": h.fingerprint.hex(),
            "bytes": size, "bpp": 8 * size / (h.width * h.height),
            "header_bytes": lay.header_length, "truncated": lay.truncated,
            "metadata": {"icc_profile": len(lay.icc or b""), "exif": len(lay.exif or b""),
                         "xmp": len(lay.xmp or b""), "alpha": lay.alpha.length if lay.alpha else 0},
            "chunks": [c.type.decode("ascii", "replace") for c in lay.chunks],
            "channel_table": [{"mode": STREAM_MODES.get(c.mode, str(c.mode)),
                               "bytes": c.length, "crc32": f"{c.crc32:08x}"}
                              for c in lay.channels]}


def cmd_info(args) -> int:
    status, out = 0, []
    for path in args.files:
        try:
            d = file_info(path)
        except (OSError, SyntaxError, ValueError) as e:
            print(f"l3ic: {path}: {e}", file=sys.stderr)
            status = 1
            continue
        if args.json:
            out.append(d)
            continue
        meta = [f"{k} ({v} B)" for k, v in d["metadata"].items() if v] or ["none"]
        print(f"{path}: {d['width']}x{d['height']} {d['mode']}, model {d['model']} "
              f"({d['channels']} channels, latent {d['latent'][0]}x{d['latent'][1]}), "
              f"{d['bytes']} bytes, {d['bpp']:.4f} bpp"
              + (", TRUNCATED" if d["truncated"] else ""))
        print(f"  header {d['header_bytes']} B, fingerprint {d['fingerprint']}, "
              f"metadata: {', '.join(meta)}")
        if not args.brief:
            cells = [f"{i:3d} {c['mode']:>4s} {c['bytes']:8d}"
                     for i, c in enumerate(d["channel_table"])]
            print("  channel table (index, stream mode, bytes):")
            for i in range(0, len(cells), 4):
                print("   " + "   ".join(cells[i:i + 4]))
    if args.json:
        print(json.dumps(out, indent=1))
    return status


def cmd_roundtrip(args) -> int:
    from PIL_l3ic import metrics
    Image = _pillow()
    qualities = QUALITIES if args.quality == "all" else (args.quality,)
    try:
        with Image.open(args.input) as im:
            im.load()
            src, meta = _codec_image(im), _metadata(im, False)
    except (OSError, SyntaxError, ValueError) as e:
        print(f"l3ic: {args.input}: {e}", file=sys.stderr)
        return 1
    os.makedirs(args.output, exist_ok=True)
    ref = src.convert("RGB" if src.mode != "L" else "L")
    status, stem = 0, Path(args.input).stem
    print(f"{args.input}: {src.width}x{src.height} {src.mode}, {os.path.getsize(args.input)} bytes")
    for q in qualities:
        name = stem if len(qualities) == 1 else f"{stem}_{q}"
        l3c, png = (os.path.join(args.output, name + ext) for ext in (".l3c", ".png"))
        try:
            for p in (l3c, png):
                _check_output(args.input, p, args.force)
            t0 = time.perf_counter()
            buf = io.BytesIO()
            src.save(buf, format="L3IC", quality=q, **meta)
            t1 = time.perf_counter()
            with Image.open(io.BytesIO(buf.getvalue())) as dec:
                dec.load()
                t2 = time.perf_counter()
                _write(l3c, buf.getvalue())
                dec.save(png)
                out = dec.convert(ref.mode)
        except Exception as e:
            print(f"l3ic: {args.input} ({q}): {e}", file=sys.stderr)
            status = 1
            continue
        n = len(buf.getvalue())
        p = metrics.psnr(ref, out)
        try:
            ms = metrics.ms_ssim(ref, out)
            ms_txt = f"MS-SSIM {ms:.4f} ({metrics.ms_ssim_db(ms):.2f} dB)"
        except ValueError:
            ms_txt = "MS-SSIM n/a (side <= 160 px)"
        print(f"  {q}: {l3c} {n} bytes, {8 * n / (src.width * src.height):.4f} bpp, "
              f"PSNR {p:.2f} dB, {ms_txt}; encode {t1 - t0:.3f} s, decode {t2 - t1:.3f} s; "
              f"decoded: {png}")
    return status


# ----------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(
        prog="l3ic", formatter_class=fmt,
        description="Learned lossy image codec (l3ic): convert to and from .l3c, inspect, "
                    "measure.  Exit status: 0 all files done, 1 some file failed, 2 usage error.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def batch_opts(sp):
        sp.add_argument("-o", "--output", metavar="OUT_OR_DIR",
                        help="output file (one input) or directory (made if needed; a trailing "
                             "'/' or several inputs mean a directory); default: next to each input")
        sp.add_argument("-j", "--jobs", type=int, default=1, metavar="JOBS",
                        help="files converted in parallel (0: one per CPU); each file's codec "
                             "also uses several threads (L3IC_NUM_THREADS)")
        sp.add_argument("--processes", action="store_true",
                        help="with -j: use a process pool instead of a thread pool")
        sp.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs")
        sp.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
        sp.add_argument("--no-progress", action="store_true", help="no progress bar")
        tree = ("folders, globs, --scheduler, --workers or --report start batch mode "
                "(PIL_l3ic.batch: tree mirrored under -o, outputs up to date skipped, report)")
        sp.add_argument("--scheduler", metavar="ADDRESS", help=f"{tree}; convert on a Dask "
                        "cluster: tcp://HOST:8786, a scheduler file (.json) or 'local' "
                        "(pip install 'PIL_l3ic[dask]')")
        sp.add_argument("--workers", type=int, metavar="N", help="batch mode: N local worker "
                        "processes (default: one per core); with --scheduler local: N Dask "
                        "workers; with an address: wait for N workers")
        sp.add_argument("--report", metavar="FILE", help="batch mode: write the report as JSON")

    sp = sub.add_parser("encode", formatter_class=fmt, help="image(s) -> .l3c",
                        description="Encode images in any format Pillow reads to .l3c.  Modes "
                                    "RGB, L, RGBA, LA are kept; others become RGB(A) or L; "
                                    "only the first frame of an animation is encoded.")
    sp.add_argument("inputs", nargs="+", metavar="IN", help="input image(s)")
    sp.add_argument("-q", "--quality", choices=QUALITIES, default=DEFAULT_QUALITY,
                    help="model: 16c (smallest files), 32c, 64c (best quality)")
    sp.add_argument("--strip", action="store_true",
                    help="do not copy ICC profile, EXIF and XMP into the .l3c file")
    batch_opts(sp)
    sp.set_defaults(func=cmd_encode)

    sp = sub.add_parser("decode", formatter_class=fmt, help=".l3c -> image(s)",
                        description="Decode .l3c files to another format (PNG by default); "
                                    "ICC profile, EXIF and XMP are carried over where the "
                                    "format allows.")
    sp.add_argument("inputs", nargs="+", metavar="IN", help="input .l3c file(s)")
    sp.add_argument("--format", default="png",
                    help="output format, any Pillow writes (png, tiff, webp, jpeg, bmp, ...)")
    batch_opts(sp)
    sp.set_defaults(func=cmd_decode)

    sp = sub.add_parser("info", formatter_class=fmt, help="describe .l3c files",
                        description="Print size, mode, model, bits per pixel, the channel table "
                                    "and which metadata are present (header only, no decoding).")
    sp.add_argument("files", nargs="+", metavar="FILE")
    sp.add_argument("--brief", action="store_true", help="omit the channel table")
    sp.add_argument("--json", action="store_true", help="print JSON instead of text")
    sp.set_defaults(func=cmd_info)

    sp = sub.add_parser("roundtrip", formatter_class=fmt,
                        help="encode + decode one image, print size, bpp, PSNR, MS-SSIM",
                        description="Encode IN, write OUTDIR/<stem>.l3c and the decoded "
                                    "OUTDIR/<stem>.png (<stem>_<q>.* with -q all), and print "
                                    "size, bpp, PSNR, MS-SSIM (8-bit, over R, G, B) and times.")
    sp.add_argument("input", metavar="IN")
    sp.add_argument("-o", "--output", default=".", metavar="OUTDIR", help="output directory")
    sp.add_argument("-q", "--quality", choices=QUALITIES + ("all",), default=DEFAULT_QUALITY,
                    help="model, or 'all' for the three")
    sp.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs")
    sp.set_defaults(func=cmd_roundtrip)

    from PIL_l3ic import bench
    sp = sub.add_parser("bench", formatter_class=fmt, help="timing table on this machine",
                        description="Time E/D (networks only) and CE/DE (whole compression to "
                                    "and from bytes in memory) at 512x512 and 1920x1080, plus "
                                    "cold start, as in docs/speed.md.")
    bench.add_arguments(sp)
    sp.set_defaults(func=bench.main)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("l3ic: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
