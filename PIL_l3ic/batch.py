"""Convert collections of images to and from ``.l3c``: a list, a glob or a folder tree, mirrored
under a destination, on a local process pool (``PIL_l3ic.batch_local``) or a Dask cluster
(``PIL_l3ic.batch_dask``); the ``Report`` is ``PIL_l3ic.batch_report``'s.

    from PIL_l3ic import batch
    rep = batch.convert(["photos/"], "out/", quality="32c")            # local pool, one per core
    rep = batch.convert("photos/**/*.jpg", "out/", client=client)      # a dask.distributed Client
    rep = batch.decode("out/", "png/")                                 # .l3c -> PNG, same tree
    print(rep.text()); rep.as_dict()                                   # report (text, JSON)

Sources: files (taken whatever their extension), folders (walked recursively; hidden entries
skipped; only extensions Pillow opens, minus .l3c, for ``convert``; only .l3c for ``decode``) and
glob patterns (``**`` recurses; same extension filter).  A file's path relative to its folder, or
to the glob's leading folder, is kept under ``dest`` with the new suffix; a single file goes to
``dest/<name>``; ``dest=None`` writes next to each input.  Two inputs with one output fail.

Per file, on the worker: a failure (unreadable image, bad mode, ...) becomes a row with its reason
and the batch goes on.  Outputs are written to a hidden temporary name in the target folder,
fsync'ed, then renamed, so a killed run leaves no truncated output (at most hidden ``.*.part``
files, removed when that output is next written).  Unless ``force``, an output that is already
complete, newer than its input, of the same size and made with the same settings (``convert``:
same model id and model fingerprint, read from the .l3c header, no metadata if ``strip``;
``decode``: same format) is skipped, so re-running resumes.  Each worker process loads a model
once (runtime's per-process cache, warmed at start) and gets ``cores // workers`` codec threads.

Runners share the CLI's contract: ``runner(fn, tasks)`` yields ``(task, result or exception)``
in completion order; here a task is ``(kind, [(src, dst), ...], options)`` (a chunk of files).
Dask is imported only when ``client`` or ``scheduler`` is given.
"""
from __future__ import annotations

import glob
import io
import os
import socket
import sys
import time
import uuid

from PIL_l3ic.batch_local import cpu_count, init_worker, local_runner  # noqa: F401  (batch's API)
from PIL_l3ic.batch_report import Report
from PIL_l3ic.conversion import decode_as, metadata, output_format, pillow

L3C = ".l3c"
_PLUGIN_MODES = {"RGB", "L", "RGBA", "LA", "P", "PA", "1", "CMYK", "I", "F", "I;16", "I;16L",
                 "I;16B", "I;16N"}


# ----------------------------------------------------------------------------- planning

def _extensions(kind: str) -> set[str]:
    if kind == "decode":
        return {L3C}
    Image = pillow()
    return {e for e, f in Image.registered_extensions().items() if f in Image.OPEN} - {L3C}


def _magic(p: str) -> bool:
    return glob.has_magic(p) and not os.path.exists(p)


def find(sources, kind: str = "encode") -> list[tuple[str, str]]:
    """``(path, path relative to its source root)`` for every input file, sorted per source."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    exts, out = _extensions(kind), []
    for s in map(os.fspath, sources):
        if os.path.isdir(s):
            found = []
            for root, dirs, files in os.walk(s):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [os.path.join(root, f) for f in files
                          if not f.startswith(".") and os.path.splitext(f)[1].lower() in exts]
            out += [(p, os.path.relpath(p, s)) for p in sorted(found)]
        elif _magic(s):
            parts = s.split(os.sep)
            base = os.sep.join(parts[:next(i for i, c in enumerate(parts) if glob.has_magic(c))])
            out += [(p, os.path.relpath(p, base or "."))
                    for p in sorted(glob.glob(s, recursive=True))
                    if os.path.isfile(p) and os.path.splitext(p)[1].lower() in exts]
        else:
            out.append((s, os.path.basename(s)))   # missing files fail later, with the reason
    return out


def plan(sources, dest, suffix: str, kind: str = "encode"):
    """``(pairs, failures)``: ``[(src, dst)]`` to run and ``[(src, reason)]`` for collisions."""
    pairs, failures, seen = [], [], {}
    for src, rel in find(sources, kind):
        stem = os.path.splitext(rel if dest is not None else src)[0] + suffix
        dst = os.path.join(os.fspath(dest), stem) if dest is not None else stem
        key = os.path.abspath(dst)
        if key in seen or key == os.path.abspath(src):
            failures.append((src, f"same output {dst} as {seen.get(key, 'the input')}"))
        else:
            seen[key] = src
            pairs.append((src, dst))
    return pairs, failures


# ----------------------------------------------------------------------------- workers

def run_chunk(kind: str, pairs, opts: dict) -> list[dict]:
    """Convert a chunk of ``(src, dst)``; one row per file, never raises for a file's fault."""
    return [_one(kind, src, dst, opts) for src, dst in pairs]


def _one(kind, src, dst, opts) -> dict:
    try:
        row = None if opts.get("force") else _fresh(kind, src, dst, opts)
    except Exception:   # an unreadable output (cut, foreign): redo; an unreadable input fails below
        row = None
    if row is not None:
        return dict(row, status="skipped")
    try:
        row = retrying(_encode if kind == "encode" else _decode, src, dst, opts)
        return dict(row, status="converted")
    except Exception as e:  # reported per file; the batch goes on
        return {"src": src, "status": "failed", "reason": f"{type(e).__name__}: {e}"}


def retrying(fn, *args, attempts: int = 5):
    """``fn(*args)``, retried when LiteRT refused to run because something still held a view
    of its tensors: Dask's worker profiler holds the frames it samples (every 10 ms) for a
    moment, and a sampled frame of the codec keeps its tensor view alive until released."""
    for i in range(attempts):
        try:
            return fn(*args)
        except RuntimeError as e:
            if i == attempts - 1 or "reference to internal data" not in str(e):
                raise
            time.sleep(0.005 * (i + 1))


def _row(src, dst, pixels, bpp_bytes):
    return {"src": src, "bytes_in": os.path.getsize(src), "bytes_out": os.path.getsize(dst),
            "pixels": pixels, "bpp": 8 * bpp_bytes / max(pixels, 1),
            "proc": f"{socket.gethostname()}:{os.getpid()}"}


def _encode(src, dst, opts) -> dict:
    Image = pillow()
    with Image.open(src) as im:
        im.load()
        meta = metadata(im, opts.get("strip"))
        if im.mode not in _PLUGIN_MODES:     # YCbCr, LAB, HSV, RGBX, ...: as the CLI does
            im = im.convert("RGBA" if {"A", "a"} & set(im.getbands()) else "RGB")
        buf = io.BytesIO()
        im.save(buf, format="L3IC", quality=opts["quality"], refine=opts.get("refine", 0), **meta)
        pixels = im.width * im.height
    write_atomic(dst, buf.getvalue(), opts.get("fsync", True))
    return _row(src, dst, pixels, len(buf.getvalue()))


def _decode(src, dst, opts) -> dict:
    data, pixels = decode_as(src, opts["format"])
    write_atomic(dst, data, opts.get("fsync", True))
    return _row(src, dst, pixels, os.path.getsize(src))


def _fresh(kind, src, dst, opts) -> dict | None:
    """The row of an existing output that needs no redo (see the module docstring), else None."""
    try:
        if os.stat(dst).st_mtime < os.stat(src).st_mtime:
            return None
    except FileNotFoundError:
        return None
    Image = pillow()
    if kind == "encode":
        from PIL_l3ic import container, runtime
        with open(dst, "rb") as f:
            lay = container.read_layout(f)
        h, info = lay.header, runtime.model_info(opts["quality"])
        if (lay.truncated or lay.file_size != lay.end or h.model_id != info.model_id
                or h.fingerprint != info.fingerprint
                or (opts.get("strip") and (lay.icc or lay.exif or lay.xmp))):
            return None
        with Image.open(src) as im:
            ok = im.size == h.size
        return _row(src, dst, h.width * h.height, os.path.getsize(dst)) if ok else None
    with Image.open(src) as im, Image.open(dst) as out:
        if im.format != "L3IC" or out.format != opts["format"] or out.size != im.size:
            return None
        return _row(src, dst, im.width * im.height, os.path.getsize(src))


def write_atomic(dst: str, data: bytes, fsync: bool = True) -> None:
    """Write ``dst`` through ``.<name>.<random>.part`` in the same folder, then rename; stale
    temporaries of the same output (from killed runs) are removed afterwards."""
    folder, name = os.path.split(os.path.abspath(dst))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.part")
    t0 = time.time()
    try:
        with open(tmp, "wb") as f:
            _write_data(f, data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    for stale in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.part")):
        try:
            if os.stat(stale).st_mtime < t0 - 1:
                os.unlink(stale)
        except OSError:
            pass


def _write_data(f, data: bytes) -> None:   # a seam for tests (slow writes, kill mid-write)
    f.write(data)


# ----------------------------------------------------------------------------- API

def convert(sources, dest=None, quality="32c", *, client=None, scheduler=None, workers=None,
            force=False, strip=False, refine=0, progress=True, report=None, log=None,
            chunksize=None, fsync=True) -> Report:
    """Encode images (list, glob or folder tree) to ``.l3c`` under ``dest`` (tree mirrored).

    client: a ``dask.distributed.Client``; scheduler: an address (``tcp://host:8786``), a
    scheduler file (``*.json``) or ``"local"`` (a LocalCluster of ``workers`` processes).
    Neither: a local process pool of ``workers`` (default: one per core).  force: redo
    outputs that are up to date.  refine: encoder-side refinement steps (the ``refine`` save
    option; refined files are not redone).  report: path for the JSON report.  log: called with one
    line per failed file as it happens (e.g. ``print``).  Returns the ``Report``."""
    from PIL_l3ic import codec, runtime
    q = codec.resolve_quality(quality)
    settings = {"quality": q, "strip": bool(strip), "refine": codec.check_refine(refine)}
    try:
        settings["fingerprint"] = runtime.model_info(q).fingerprint.hex()
    except OSError:
        pass
    return _run("encode", sources, dest, L3C, settings, dict(settings, force=force, fsync=fsync),
                (q,), client, scheduler, workers, progress, report, log, chunksize)


def decode(sources, dest=None, format="png", *, client=None, scheduler=None, workers=None,
           force=False, progress=True, report=None, log=None, chunksize=None,
           fsync=True) -> Report:
    """Decode ``.l3c`` files (list, glob or folder tree) to ``format`` (any Pillow writes;
    "png", "jpg", "tiff", ...) under ``dest``; other arguments as for ``convert``."""
    fmt, suffix = output_format(format)
    return _run("decode", sources, dest, suffix, {"format": fmt},
                {"format": fmt, "force": force, "fsync": fsync}, (), client, scheduler, workers,
                progress, report, log, chunksize)


def _run(kind, sources, dest, suffix, settings, opts, warm, client, scheduler, workers,
         progress, report, log, chunksize) -> Report:
    t0 = time.perf_counter()
    pairs, collisions = plan(sources, dest, suffix, kind)
    rep = Report(kind, settings, files=len(pairs) + len(collisions))
    say = log or (lambda msg: None)
    for src, reason in collisions:
        rep.failures.append((src, reason))
        say(f"l3ic: {src}: {reason}")
    close = None
    if client is not None or scheduler is not None:
        from PIL_l3ic import batch_dask
        if client is None:
            client = close = batch_dask.connect(scheduler, workers)
        runner, slots = batch_dask.runner(client, warm=warm, progress=progress and bool(pairs))
    else:
        runner, slots = local_runner(workers, warm=warm), workers or cpu_count()
    rep.runner = runner.description
    size = chunksize or max(1, min(64, len(pairs) // (8 * slots)))
    tasks = [(kind, pairs[i:i + size], opts) for i in range(0, len(pairs), size)]
    bar = _bar(len(pairs)) if progress and pairs and not hasattr(runner, "dask") else None
    try:
        for task, res in _with_retries(runner, tasks):
            rows = res if not isinstance(res, BaseException) else [
                {"src": s, "status": "failed", "reason": f"{type(res).__name__}: {res}"}
                for s, _ in task[1]]
            for row in rows:
                rep.add(row)
                if row["status"] == "failed" and log is not None:
                    msg = f"l3ic: {row['src']}: {row['reason']}"
                    bar.write(msg, file=sys.stderr) if bar is not None else log(msg)
            if bar is not None:
                bar.update(len(rows))
    finally:
        if bar is not None:
            bar.close()
        if close is not None:
            batch_dask.disconnect(close)
    rep.elapsed_s = time.perf_counter() - t0
    if report:
        with open(report, "w") as f:
            f.write(rep.to_json() + "\n")
    return rep


def _with_retries(runner, tasks, retries: int = 2):
    """``runner(run_chunk, tasks)``; a task that raised (its worker process died, e.g. on a
    file that crashes the codec, or was killed) is run again, one task per file, up to
    ``retries`` times, the last time one task at a time, so only the file at fault fails
    (files already written are skipped)."""
    for attempt in range(retries + 1):
        again, kw = [], ({"in_flight": 1} if attempt == retries and attempt else {})
        for task, res in runner(run_chunk, tasks, **kw):
            if isinstance(res, BaseException) and attempt < retries:
                again += [(task[0], [pair], task[2]) for pair in task[1]]
            else:
                yield task, res
        if not again:
            return
        tasks = again


def _bar(total: int):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="file", file=sys.stderr, leave=False, dynamic_ncols=True)
