"""Tests for the ``l3ic`` command line (PIL_l3ic/cli.py), run in-process on small images."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import PIL_l3ic  # noqa: F401
from PIL_l3ic import bench, cli


def photo(w, h, seed=0):
    """A smooth colour image (uint8)."""
    z = np.random.default_rng(seed).normal(size=(h // 16 + 2, w // 16 + 2, 3)).astype(np.float32)
    a = np.stack([np.asarray(Image.fromarray(z[..., c], "F").resize((w, h), Image.BICUBIC))
                  for c in range(3)], -1)
    return Image.fromarray(np.clip(a * 60 + 128, 0, 255).astype(np.uint8))


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    photo(48, 40).save(d / "a.png", icc_profile=b"fake icc profile")
    photo(40, 24, 1).save(d / "b.jpg", quality=90)
    photo(32, 32, 2).convert("RGBA").save(d / "c.png")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    return d


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_encode_batch_with_broken_file(images, tmp_path, capsys):
    out = tmp_path / "out"
    ins = [images / n for n in ("a.png", "broken.png", "b.jpg", "c.png")]
    code, _, err = run(capsys, "encode", *ins, "-o", out, "-q", "16c", "-j", "2")
    assert code == 1
    failures = [line for line in err.splitlines() if line.startswith("l3ic:")]
    assert len(failures) == 1 and "broken.png" in failures[0]
    assert sorted(p.name for p in out.iterdir()) == ["a.l3c", "b.l3c", "c.l3c"]
    assert "encoded 3 of 4 files (1 failed)" in err and "bpp" in err
    with Image.open(out / "c.l3c") as im:
        assert (im.format, im.mode, im.size) == ("L3IC", "RGBA", (32, 32))
    with Image.open(out / "a.l3c") as im:
        assert im.info["icc_profile"] == b"fake icc profile"
        assert cli.file_info(str(out / "a.l3c"))["model"] == "16c"


def test_encode_single_output_file_and_overwrite(images, tmp_path, capsys):
    dst = tmp_path / "x.l3c"
    assert run(capsys, "encode", images / "a.png", "-o", dst, "--strip")[0] == 0
    with Image.open(dst) as im:
        assert im.size == (48, 40) and "icc_profile" not in im.info
        assert cli.file_info(str(dst))["model"] == "32c"   # default quality
    code, _, err = run(capsys, "encode", images / "a.png", "-o", dst)
    assert code == 1 and "exists" in err
    assert run(capsys, "encode", images / "a.png", "-o", dst, "-f", "-q", "64c")[0] == 0
    assert cli.file_info(str(dst))["model"] == "64c"


def test_encode_next_to_input_and_duplicate_outputs(images, capsys):
    (images / "a.jpg").write_bytes((images / "b.jpg").read_bytes())
    code, _, err = run(capsys, "encode", images / "a.png", images / "a.jpg", "--no-progress")
    assert code == 1 and "same output" in err
    assert (images / "a.l3c").exists()


def test_decode_and_info(images, tmp_path, capsys):
    enc = tmp_path / "enc"
    assert run(capsys, "encode", images / "a.png", images / "c.png", "-o", enc)[0] == 0
    dec = tmp_path / "dec"
    code, _, err = run(capsys, "decode", enc / "a.l3c", enc / "c.l3c", "-o", dec, "-j", "2")
    assert code == 0, err
    with Image.open(dec / "a.png") as im:
        assert (im.format, im.mode, im.size) == ("PNG", "RGB", (48, 40))
        assert im.info.get("icc_profile") == b"fake icc profile"
    with Image.open(dec / "c.png") as im:
        assert im.mode == "RGBA"
    assert run(capsys, "decode", enc / "c.l3c", "-o", tmp_path / "c.jpg", "--format", "jpg")[0] == 0
    with Image.open(tmp_path / "c.jpg") as im:
        assert (im.format, im.mode) == ("JPEG", "RGB")
    code, _, err = run(capsys, "decode", images / "a.png", "-o", tmp_path / "z.png")
    assert code == 1 and "not an l3ic file" in err
    assert run(capsys, "decode", enc / "a.l3c", "--format", "nosuchformat")[0] == 2

    code, out, err = run(capsys, "info", enc / "a.l3c", enc / "c.l3c")
    assert code == 0, err
    assert "48x40 RGB, model 32c" in out and "32x32 RGBA" in out
    assert "channel table" in out and "icc_profile" in out and "alpha" in out
    code, out, _ = run(capsys, "info", "--json", enc / "a.l3c", images / "broken.png")
    assert code == 1
    (d,) = json.loads(out)
    assert d["width"] == 48 and len(d["channel_table"]) == 32
    assert d["bpp"] == pytest.approx(8 * os.path.getsize(enc / "a.l3c") / (48 * 40))


def test_roundtrip(tmp_path, capsys):
    src = tmp_path / "p.png"
    photo(176, 168).save(src)
    out = tmp_path / "rt"
    code, text, err = run(capsys, "roundtrip", src, "-o", out, "-q", "16c")
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {"p.l3c", "p.png"}
    assert "bpp" in text and "PSNR" in text and "MS-SSIM 0." in text
    code, text, _ = run(capsys, "roundtrip", src, "-o", out, "-q", "all")
    assert code == 0 and text.count("PSNR") == 3
    assert run(capsys, "roundtrip", src, "-o", out, "-q", "16c")[0] == 1   # exists, no -f
    assert run(capsys, "roundtrip", src, "-o", tmp_path, "-f")[0] == 1     # would overwrite IN
    assert run(capsys, "roundtrip", tmp_path / "missing.png")[0] == 1


def test_help(capsys):
    for argv in ([], ["encode"], ["decode"], ["info"], ["roundtrip"], ["bench"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv + ["--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "usage: l3ic" in out
    with pytest.raises(SystemExit) as e:
        cli.main(["encode", "x.png", "-q", "99c"])
    assert e.value.code == 2
    capsys.readouterr()
    parser = cli.build_parser()
    enc = parser.parse_args(["encode", "x"])
    assert (enc.quality, enc.jobs, enc.output) == ("32c", 1, None)


def test_processes_and_module_entry(images, tmp_path):
    out = tmp_path / "o"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(PIL_l3ic.__file__)))
    p = subprocess.run([sys.executable, "-m", "PIL_l3ic", "encode", str(images / "a.png"),
                        str(images / "b.jpg"), "-o", str(out), "-j", "2", "--processes"],
                       capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr   # (cwd: not the checkout, which has no built _fse)
    assert sorted(x.name for x in out.iterdir()) == ["a.l3c", "b.l3c"]


def test_bench_tables():
    rows = [{"quality": "32c", "size": s, "E": 0.1, "D": 0.2, "CE": 0.3, "DE": 0.4, "bpp": 0.5}
            for s in ("512x512", "1920x1080")]
    t = bench.timing_table(rows, "here")
    assert t.count("\n") == 5 and "| here | 32c | 0.100 | 0.200 | 0.300 | 0.400 |" in t
    img = bench.cover_crop(photo(100, 50), 64, 64)
    assert img.size == (64, 64)
    r = bench.measure("16c", np.asarray(photo(64, 48)), runs=1, warmup=0)
    assert r["CE"] > 0 and r["DE"] > 0 and r["E"] > 0 and r["D"] > 0 and r["bytes"] > 0
    flat = np.full((48, 64, 3), 128, np.uint8)      # several photos: the mean of each figure
    m = bench.measure_photos("16c", [np.asarray(photo(64, 48)), flat], runs=1, warmup=0)
    assert m["photos"] == 2 and m["size"] == "64x48" and len(m["per_photo"]) == 2
    assert m["bytes"] == (m["per_photo"][0]["bytes"] + m["per_photo"][1]["bytes"]) / 2
    assert m["per_photo"][0]["bytes"] == r["bytes"] > m["per_photo"][1]["bytes"]
    assert bench.measure_photos("16c", [flat], runs=1, warmup=0).keys() == r.keys()
