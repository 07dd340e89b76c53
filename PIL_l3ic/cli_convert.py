"""``l3ic encode`` and ``l3ic decode`` (the parser and the other commands are in ``cli.py``).

Files run one by one through a *runner* (``_runner``: serial, threads or processes with ``-j``):
``runner(fn, tasks)`` yields ``(task, result or exception)`` in completion order.  A failing file
prints one line ``l3ic: FILE: reason`` and the batch goes on; exit status 1 if any file failed,
2 for a usage error, else 0.  Batch mode (folders, quoted globs, ``--scheduler ADDRESS``,
``--workers N`` or ``--report``) hands the whole job to ``PIL_l3ic.batch`` (tree mirrored under
``-o``, resume, local process pool or Dask, report).
"""
from __future__ import annotations

import glob
import io
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path

from PIL_l3ic.conversion import decode_as, metadata, output_format, pillow, size_text


class _Fail(Exception):
    """A per-file error with a message meant for the user."""


# ----------------------------------------------------------------------------- workers

def codec_image(im):
    """The first frame in a mode the codec stores (RGB, L, RGBA, LA), converted as the plugin
    does for the modes it knows (P, PA, 1, CMYK, I;16, I, F) and to RGB(A) for the others."""
    if im.mode in ("RGB", "L", "RGBA", "LA"):
        return im
    if im.mode.startswith("I;16"):
        import numpy as np
        Image = pillow()
        return Image.fromarray((np.asarray(im) >> 8).astype(np.uint8), "L")
    if im.mode in ("1", "I", "F"):
        return im.convert("L")
    alpha = im.mode in ("PA", "RGBa") or (im.mode == "P" and im.has_transparency_data)
    return im.convert("RGBA" if alpha else "RGB")


def encode_file(src: str, dst: str, quality: str, force: bool = False,
                strip: bool = False, refine: int = 0) -> dict:
    """Encode one file Pillow can read to ``dst`` (.l3c).  Returns sizes for the summary."""
    Image = pillow()
    check_output(src, dst, force)
    with Image.open(src) as im:
        im.load()
        meta = metadata(im, strip)
        img = codec_image(im)
        buf = io.BytesIO()
        img.save(buf, format="L3IC", quality=quality, refine=refine, **meta)
    write_output(dst, buf.getvalue())
    return {"bytes_in": os.path.getsize(src), "bytes_out": buf.tell(),
            "pixels": img.width * img.height}


def decode_file(src: str, dst: str, fmt: str, force: bool = False) -> dict:
    """Decode one .l3c file to ``dst`` in Pillow format ``fmt``."""
    check_output(src, dst, force)
    data, pixels = decode_as(src, fmt, _Fail)
    write_output(dst, data)
    return {"bytes_in": os.path.getsize(src), "bytes_out": len(data), "pixels": pixels}


def check_output(src: str, dst: str, force: bool) -> None:
    if os.path.abspath(src) == os.path.abspath(dst):
        raise _Fail("output would overwrite the input")
    if os.path.exists(dst) and not force:
        raise _Fail(f"{dst} exists (use -f to overwrite)")


def write_output(dst: str, data: bytes) -> None:
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
        print(f"{verb} {len(rows)} of {len(tasks)} files{fails}: {size_text(b_in)} -> "
              f"{size_text(b_out)}{bpp}, {elapsed:.2f} s", file=sys.stderr)
    return 1 if failed else 0


def _say(progress, msg: str) -> None:
    (progress.write if progress is not None else print)(msg, file=sys.stderr)


# ----------------------------------------------------------------------------- commands

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
        return _convert(args, batch.convert, quality=args.quality, strip=args.strip,
                        refine=args.refine)
    outs = _outputs(args.inputs, args.output, ".l3c")
    tasks = [(s, d, args.quality, args.force, args.strip, args.refine)
             for s, d in zip(args.inputs, outs)]
    return _batch(args, encode_file, tasks, "encoded")


def cmd_decode(args) -> int:
    try:
        fmt, ext = output_format(args.format)
    except ValueError as e:
        print(f"l3ic: error: {e}", file=sys.stderr)
        return 2
    if _batch_mode(args):
        from PIL_l3ic import batch
        return _convert(args, batch.decode, format=args.format)
    outs = _outputs(args.inputs, args.output, ext)
    tasks = [(s, d, fmt, args.force) for s, d in zip(args.inputs, outs)]
    return _batch(args, decode_file, tasks, "decoded")
