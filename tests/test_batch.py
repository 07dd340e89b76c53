"""Tests for PIL_l3ic.batch on the local process pool (tiny images; Dask: test_batch_dask.py)."""
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import PIL_l3ic  # noqa: F401
from PIL_l3ic import batch, cli, container, runtime

# subprocesses import the package under test (a checkout or an installed copy), from a neutral cwd
PKG_PARENT = str(Path(PIL_l3ic.__file__).resolve().parent.parent)


def photo(w, h, seed=0):
    """A smooth colour image."""
    z = np.random.default_rng(seed).normal(size=(h // 16 + 2, w // 16 + 2, 3)).astype(np.float32)
    a = np.stack([np.asarray(Image.fromarray(z[..., c], "F").resize((w, h), Image.BICUBIC))
                  for c in range(3)], -1)
    return Image.fromarray(np.clip(a * 60 + 128, 0, 255).astype(np.uint8))


GOOD = {  # relative path -> (width, height, mode)
    "top.png": (48, 40, "RGB"), "a/one.jpg": (64, 48, "RGB"), "a/two.png": (32, 32, "RGBA"),
    "a/b/three.png": (40, 56, "L"), "a/b/four.png": (96, 64, "P"), "c/five.tif": (56, 40, "RGB"),
    "c/d/e/six.png": (72, 32, "RGB"), "c/d/seven.bmp": (32, 48, "RGB"),
}
BROKEN = ["a/garbage.png", "c/empty.jpg", "c/d/cut.png"]


def make_tree(root: Path) -> Path:
    """GOOD images, BROKEN inputs, plus files the walk must ignore."""
    for i, (rel, (w, h, mode)) in enumerate(GOOD.items()):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        im = photo(w, h, i)
        im = im.quantize(16) if mode == "P" else im.convert(mode)
        im.save(p, **({"icc_profile": b"fake icc"} if rel == "top.png" else {}))
    (root / BROKEN[0]).write_bytes(b"garbage, not an image" * 5)
    (root / BROKEN[1]).write_bytes(b"")
    good = (root / "top.png").read_bytes()
    (root / BROKEN[2]).write_bytes(good[:len(good) // 2])
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(good)
    (root / "a" / ".cache").mkdir()
    (root / "a" / ".cache" / "x.png").write_bytes(good)
    return root


@pytest.fixture(scope="module", autouse=True)
def models(tmp_path_factory):
    """A snapshot of the models (they may be replaced while tests run), used by every process."""
    d = tmp_path_factory.mktemp("models")
    for f in runtime.model_dir().iterdir():
        if f.suffix in (".json", ".tflite"):
            shutil.copy(f, d)
    old = os.environ.get(runtime.ENV_MODEL_DIR)
    os.environ[runtime.ENV_MODEL_DIR] = str(d)
    runtime.reset()
    yield d
    if old is None:
        del os.environ[runtime.ENV_MODEL_DIR]
    else:
        os.environ[runtime.ENV_MODEL_DIR] = old
    runtime.reset()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="module")
def encoded(tree, tmp_path_factory):
    """One local conversion of the tree (2 workers), shared by several tests."""
    out = tmp_path_factory.mktemp("out")
    rep = batch.convert([tree], out, "32c", workers=2, progress=False)
    return out, rep


def outputs(root: Path, suffix=".l3c") -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*" + suffix))}


def expected(suffix=".l3c"):
    return sorted(str(Path(r).with_suffix(suffix)) for r in GOOD)


# ----------------------------------------------------------------------------- planning

def test_find_folder_glob_and_files(tree):
    rels = [r for _, r in batch.find([tree])]
    assert rels == sorted(rels) and set(rels) == set(GOOD) | set(BROKEN)
    found = batch.find(str(tree / "c" / "**" / "*.png"))
    assert [r for _, r in found] == ["d/cut.png", "d/e/six.png"]
    assert batch.find([tree / "notes.txt", tree / "missing.png"]) == [
        (str(tree / "notes.txt"), "notes.txt"), (str(tree / "missing.png"), "missing.png")]


def test_plan_mirrors_tree_and_reports_collisions(tree, tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    (tmp_path / "x.jpg").write_bytes(b"")
    pairs, fails = batch.plan([tree, tmp_path / "x.jpg", tmp_path / "x.png"], "/dst", ".l3c")
    dsts = dict(pairs)
    assert dsts[str(tree / "a/b/three.png")] == "/dst/a/b/three.l3c"
    assert dsts[str(tmp_path / "x.jpg")] == "/dst/x.l3c"
    assert fails == [(str(tmp_path / "x.png"), f"same output /dst/x.l3c as {tmp_path / 'x.jpg'}")]
    pairs, _ = batch.plan([tree / "top.png"], None, ".l3c")
    assert pairs == [(str(tree / "top.png"), str(tree / "top.l3c"))]


# ----------------------------------------------------------------------------- converting

def test_convert_tree_report(tree, encoded, tmp_path):
    out, rep = encoded
    assert sorted(outputs(out)) == expected()
    d = rep.as_dict()
    assert (d["files"], d["converted"], d["skipped"], d["failed"]) == (11, 8, 0, 3)
    assert sorted(f["file"] for f in d["failures"]) == sorted(str(tree / b) for b in BROKEN)
    reasons = {Path(f["file"]).name: f["reason"] for f in d["failures"]}
    assert "cannot identify image file" in reasons["garbage.png"]
    assert "truncated" in reasons["cut.png"] and reasons["empty.jpg"]
    assert d["bytes_out"] == sum(len(b) for b in outputs(out).values())
    assert d["bytes_in"] == sum((tree / r).stat().st_size for r in GOOD)
    assert d["pixels"] == sum(w * h for w, h, _ in GOOD.values())
    assert d["bpp"] == pytest.approx(8 * d["bytes_out"] / d["pixels"])
    assert 0 < d["mean_bpp"] < 24 and d["images_per_s"] > 0 and d["mpixels_per_s"] > 0
    assert 1 <= d["worker_processes"] <= 2     # each process loads the model once
    assert d["settings"]["quality"] == "32c"
    assert d["settings"]["fingerprint"] == runtime.model_info("32c").fingerprint.hex()
    text = rep.text()
    assert "8 converted, 0 skipped (up to date), 3 failed" in text and "garbage.png" in text
    json.dumps(d)
    # outputs open, keep mode and size, carry the ICC profile, and are exactly Pillow's bytes
    for rel, (w, h, mode) in GOOD.items():
        with Image.open(out / Path(rel).with_suffix(".l3c")) as im:
            assert im.size == (w, h)
            assert im.mode == {"P": "RGB"}.get(mode, mode)
    assert Image.open(out / "top.l3c").info["icc_profile"] == b"fake icc"
    ref = tmp_path / "ref.l3c"
    with Image.open(tree / "c/d/e/six.png") as im:
        im.save(ref, format="L3IC", quality="32c")
    assert ref.read_bytes() == (out / "c/d/e/six.l3c").read_bytes()


def test_no_stray_files(encoded):
    out, _ = encoded
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == expected()


def test_resume_skips_and_redoes_what_changed(tree, tmp_path, models, monkeypatch):
    out = tmp_path / "out"
    batch.convert([tree], out, workers=1, progress=False)
    before = outputs(out)
    rep = batch.convert([tree], out, workers=1, progress=False)
    assert (rep.converted, rep.skipped, rep.failed) == (0, 8, 3)
    assert rep.bytes_out == sum(map(len, before.values())) and outputs(out) == before
    # a newer source, a truncated output and a missing output are redone; others skipped
    src = tree / "a/one.jpg"
    os.utime(src)
    cut = out / "c/five.l3c"
    cut.write_bytes(before["c/five.l3c"][:50])
    (out / "top.l3c").unlink()
    rep = batch.convert([tree], out, workers=1, progress=False)
    assert (rep.converted, rep.skipped, rep.failed) == (3, 5, 3)
    assert outputs(out) == before
    # another quality, or strip=True over files with metadata: redone
    rep = batch.convert([tree], out, "16c", workers=1, progress=False)
    assert (rep.converted, rep.skipped) == (8, 0)
    rep = batch.convert([tree / "top.png"], out, "16c", strip=True, workers=1, progress=False)
    assert rep.converted == 1 and "icc_profile" not in Image.open(out / "top.l3c").info
    rep = batch.convert([tree / "top.png"], out, "16c", strip=True, workers=1, progress=False)
    assert rep.skipped == 1
    # other weights (same quality, another fingerprint): every output is redone
    other = tmp_path / "models"
    shutil.copytree(models, other)
    meta = json.loads((other / "l3ic_32c.json").read_text())
    meta["fingerprint"] = "0123456789abcdef"
    (other / "l3ic_32c.json").write_text(json.dumps(meta))
    monkeypatch.setenv(runtime.ENV_MODEL_DIR, str(other))
    rep = batch.convert([tree / "c"], out, workers=1, progress=False)
    assert (rep.converted, rep.skipped) == (3, 0)
    with open(out / "d/e/six.l3c", "rb") as f:
        assert container.read_layout(f).header.fingerprint == bytes.fromhex("0123456789abcdef")
    monkeypatch.setenv(runtime.ENV_MODEL_DIR, str(models))
    rep = batch.convert([tree / "c"], out, workers=1, progress=False)
    assert (rep.converted, rep.skipped) == (3, 0)
    # force redoes everything
    rep = batch.convert([tree / "c"], out, workers=1, progress=False, force=True)
    assert (rep.converted, rep.skipped) == (3, 0)


def test_write_atomic_never_leaves_partial_output(tmp_path, monkeypatch):
    dst = tmp_path / "sub" / "x.l3c"

    def half_then_fail(f, data):
        f.write(data[:len(data) // 2])
        raise OSError("disk full")
    monkeypatch.setattr(batch, "_write_data", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        batch.write_atomic(str(dst), b"x" * 1000)
    assert list((tmp_path / "sub").iterdir()) == []
    monkeypatch.undo()
    stale = tmp_path / "sub" / ".x.l3c.0123456789ab.part"       # left by a killed run
    stale.write_bytes(b"partial")
    os.utime(stale, (time.time() - 60,) * 2)
    batch.write_atomic(str(dst), b"whole")
    assert dst.read_bytes() == b"whole" and not stale.exists()


def test_killed_run_leaves_no_truncated_output(tree, tmp_path):
    """SIGKILL a whole local run (parent and its 2 pool processes) while it writes slowly:
    every .l3c left is complete, unfinished ones exist only as hidden .part files, and the
    re-run completes and removes them."""
    out, script = tmp_path / "out", tmp_path / "slow_run.py"
    # spawned pool processes import the main script as __mp_main__, so the patch reaches them
    script.write_text(
        "import time\nfrom PIL_l3ic import batch\n"
        "def slow(f, data):\n"
        "    f.write(data[:len(data) // 2]); f.flush(); time.sleep(1)\n"
        "    f.write(data[len(data) // 2:])\n"
        "batch._write_data = slow\n"
        "if __name__ == '__main__':\n"
        f"    batch.convert([{str(tree)!r}], {str(out)!r}, workers=2, progress=False)\n")
    p = subprocess.Popen([sys.executable, str(script)], start_new_session=True, cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=PKG_PARENT))
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not (list(out.rglob("*.l3c"))
                                               and list(out.rglob(".*.part"))):
            time.sleep(0.02)
    finally:
        os.killpg(p.pid, 9)
        p.wait()
    parts, done = list(out.rglob(".*.part")), list(out.rglob("*.l3c"))
    assert parts and done, "the run was not killed while writing"
    assert len(done) < len(GOOD)
    for f in done:
        with Image.open(f) as im:
            im.verify()
            assert not im.l3ic_layout.truncated
    rep = batch.convert([tree], out, workers=1, progress=False)
    assert (rep.converted, rep.skipped) == (len(GOOD) - len(done), len(done))
    assert sorted(outputs(out)) == expected()
    time.sleep(1.1)     # stale temporaries are removed when their output is next written
    batch.convert([tree], out, workers=1, progress=False, force=True)
    assert not list(out.rglob(".*.part"))


def test_decode_tree_to_png_and_resume(encoded, tmp_path):
    out, _ = encoded
    png = tmp_path / "png"
    rep = batch.decode([out], png, workers=2, progress=False)
    assert (rep.files, rep.converted, rep.failed) == (8, 8, 0)
    assert sorted(outputs(png, ".png")) == expected(".png")
    for rel in GOOD:
        with Image.open(out / Path(rel).with_suffix(".l3c")) as a, \
                Image.open(png / Path(rel).with_suffix(".png")) as b:
            assert b.format == "PNG" and np.array_equal(np.asarray(a), np.asarray(b))
    rep = batch.decode([out], png, workers=1, progress=False)
    assert (rep.converted, rep.skipped) == (0, 8)
    assert rep.as_dict()["bpp"] == pytest.approx(8 * rep.bytes_in / rep.pixels)
    rep = batch.decode([out / "a"], tmp_path / "jpg", "jpg", workers=1, progress=False)
    assert rep.converted == 4 and (tmp_path / "jpg" / "two.jpg").exists()
    (tmp_path / "fake.l3c").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 50)
    rep = batch.decode([tmp_path / "fake.l3c"], tmp_path, workers=1, progress=False)
    assert rep.failed == 1
    with pytest.raises(ValueError, match="cannot write"):
        batch.decode([out], png, "nosuchformat")


def test_cli_batch_mode(tree, tmp_path, capsys):
    out, rep_path = tmp_path / "out", tmp_path / "report.json"
    code = cli.main(["encode", str(tree / "a"), str(tree / "top.png"), "-o", str(out),
                     "--workers", "2", "--report", str(rep_path), "-q", "16c"])
    err = capsys.readouterr().err
    assert code == 1
    assert "garbage.png: UnidentifiedImageError" in err and "6 files: 5 converted" in err
    assert sorted(outputs(out)) == ["b/four.l3c", "b/three.l3c", "one.l3c", "top.l3c", "two.l3c"]
    d = json.loads(rep_path.read_text())
    assert (d["converted"], d["failed"], d["settings"]["quality"]) == (5, 1, "16c")
    code = cli.main(["encode", str(tree / "c" / "**" / "*.png"), "-o", str(tmp_path / "g"),
                     "--quiet"])
    assert code == 1 and sorted(outputs(tmp_path / "g")) == ["d/e/six.l3c"]
    code = cli.main(["decode", str(out), "-o", str(tmp_path / "png"), "--no-progress"])
    assert code == 0 and len(outputs(tmp_path / "png", ".png")) == 5
    assert "5 converted" in capsys.readouterr().err


def test_plain_use_does_not_import_dask(tree, tmp_path):
    code = (f"import sys; from PIL_l3ic import batch; "
            f"r = batch.convert([{str(tree / 'top.png')!r}], {str(tmp_path)!r}, workers=1, "
            f"progress=False); assert r.converted == 1, r.text(); "
            f"assert not {{'dask', 'distributed'}} & set(sys.modules), 'dask imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path,
                   env=dict(os.environ, PYTHONPATH=PKG_PARENT))


def test_survives_a_profiler_holding_frames(tree, tmp_path):
    """Dask's worker profiler holds sampled frames for a moment; a frame of the codec then
    keeps a view of a LiteRT tensor alive and the next invoke raises.  batch retries that."""
    main, stop = threading.get_ident(), threading.Event()

    def sampler():      # far more aggressive than Dask's (every 10 ms)
        while not stop.is_set():
            f = sys._current_frames().get(main)
            time.sleep(0.0005)
            del f
            time.sleep(0.0005)
    t = threading.Thread(target=sampler, daemon=True)
    t.start()
    try:
        pairs = [(str(tree / "top.png"), str(tmp_path / f"{i}.l3c")) for i in range(150)]
        rows = batch.run_chunk("encode", pairs, {"quality": "32c", "fsync": False})
    finally:
        stop.set()
        t.join()
    assert [r["status"] for r in rows] == ["converted"] * len(pairs), \
        [r["reason"] for r in rows if r["status"] == "failed"][:3]


def test_a_file_that_kills_its_worker_fails_alone(tree, tmp_path):
    """A file that makes the worker process die (here: os._exit, as a crash or an OOM kill
    would) breaks the pool; the pool is replaced, the chunk is retried one file per task, and
    only that file is reported, with the reason."""
    src = tmp_path / "src"
    shutil.copytree(tree, src)
    shutil.copy(src / "top.png", src / "a" / "crash.png")
    out, report, script = tmp_path / "out", tmp_path / "report.json", tmp_path / "crash_run.py"
    script.write_text(
        "import os\nfrom PIL_l3ic import batch\n_encode = batch._encode\n"
        "def crashing(src, dst, opts):\n"
        "    if 'crash' in src:\n        os._exit(3)\n    return _encode(src, dst, opts)\n"
        "batch._encode = crashing\n"
        "if __name__ == '__main__':\n"
        f"    batch.convert([{str(src)!r}], {str(out)!r}, workers=2, chunksize=4, "
        f"progress=False, report={str(report)!r})\n")
    subprocess.run([sys.executable, str(script)], check=True, timeout=300, cwd=tmp_path,
                   env=dict(os.environ, PYTHONPATH=PKG_PARENT))
    d = json.loads(report.read_text())
    # files of the crashed chunk written before the crash are skipped by the retry
    assert (d["converted"] + d["skipped"], d["failed"]) == (len(GOOD), len(BROKEN) + 1), d
    reasons = {Path(f["file"]).name: f["reason"] for f in d["failures"]}
    assert reasons["crash.png"].startswith("BrokenProcessPool")
    assert "cannot identify" in reasons["garbage.png"] and "truncated" in reasons["cut.png"]
    assert "BrokenProcessPool" not in reasons["empty.jpg"]
    assert sorted(outputs(out)) == expected()
