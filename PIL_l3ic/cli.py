"""``l3ic``: command line of PIL_l3ic (also ``python -m PIL_l3ic``); ``l3ic COMMAND --help``.

Uses only the public API (Pillow with format "L3IC", container.read_layout, metrics, bench).
Here: the parser, ``main`` and the commands ``info`` and ``roundtrip``; ``encode`` and ``decode``
(one line per failed file, runners for ``-j``, batch mode through ``PIL_l3ic.batch``) are in
``cli_convert.py``.  Exit status 1 if any file failed, 2 for a usage error, else 0.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

from PIL_l3ic.cli_convert import check_output, cmd_decode, cmd_encode, codec_image, write_output
from PIL_l3ic.conversion import metadata, pillow
from PIL_l3ic.runtime import QUALITIES, QUALITY_BY_ID

DEFAULT_QUALITY = "32c"
STREAM_MODES = {0: "tANS", 1: "run", 2: "raw", 3: "tANS-ctx"}


# ----------------------------------------------------------------------------- info, roundtrip

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


def refine_steps(text: str) -> int:
    """argparse type of --refine: an int 0..codec.MAX_REFINE."""
    from PIL_l3ic import codec
    try:
        return codec.check_refine(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer 0..{codec.MAX_REFINE}, "
                                         f"not {text!r}") from None


def cmd_roundtrip(args) -> int:
    from PIL_l3ic import metrics
    Image = pillow()
    qualities = QUALITIES if args.quality == "all" else (args.quality,)
    try:
        with Image.open(args.input) as im:
            im.load()
            src, meta = codec_image(im), metadata(im)
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
                check_output(args.input, p, args.force)
            t0 = time.perf_counter()
            buf = io.BytesIO()
            src.save(buf, format="L3IC", quality=q, refine=args.refine, **meta)
            t1 = time.perf_counter()
            with Image.open(io.BytesIO(buf.getvalue())) as dec:
                dec.load()
                t2 = time.perf_counter()
                write_output(l3c, buf.getvalue())
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

    def refine_opt(sp):
        sp.add_argument("--refine", type=refine_steps, default=0, metavar="STEPS",
                        help="encoder-side refinement steps (0-1000, default 0 = off): better "
                             "quality per byte, each step costs about 0.2 s per 512x512 pixels on 2 cores; "
                             "30 gets most of the gain (docs/refine.md)")

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
    refine_opt(sp)
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
    refine_opt(sp)
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
