"""The PyTorch trainer of the hp model (training/hp_torch_train.py) and the packed GPU data
(training/gpu_data.py), on the CPU with small images and a small model. Needs torch."""
import dataclasses
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training import data, gpu_data, hp_torch, hp_torch_train  # noqa: E402
from training.hp_train import Recipe, State  # noqa: E402


def _coded_image(h, w):
    """Pixels that say where they are: R = y % 256, G = x % 256, B = 16 (y // 256) + x // 256."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([y % 256, x % 256, 16 * (y // 256) + x // 256], -1).astype(np.uint8)


def _decode(patch):
    """(P, P, 3) uint8 -> the source rows and columns of a patch of a _coded_image."""
    p = patch.astype(np.int64)
    return p[..., 0] + 256 * (p[..., 2] // 16), p[..., 1] + 256 * (p[..., 2] % 16)


def test_the_gpu_side_imports_no_tensorflow():
    """The device machine has PyTorch but no TensorFlow: the trainer and the loader must not
    import it (nor keras), directly or through hp_train / data."""
    code = ("import sys, training.hp_torch_train, training.gpu_data; "
            "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    root = os.path.join(os.path.dirname(__file__), "..")
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_sampler_gives_flipped_crops_of_the_images():
    images = [_coded_image(300, 420), _coded_image(260, 270)]
    sampler = hp_torch_train.GpuPatchSampler(images, 64, torch.device("cpu"), seed=1)
    flips = set()
    for _ in range(8):
        batch = sampler.batch(8)
        assert batch.shape == (8, 3, 64, 64) and batch.dtype == torch.float32
        for x in batch:
            rows, cols = _decode(np.round(x.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
            r, c = rows[:, 0], cols[0]
            assert np.all(rows == r[:, None]) and np.all(cols == c[None, :])
            dr, dc = np.diff(r), np.diff(c)
            assert np.all(dr == dr[0]) and abs(dr[0]) == 1
            assert np.all(dc == dc[0]) and abs(dc[0]) == 1
            assert 0 <= r.min() and r.max() < 300 and 0 <= c.min() and c.max() < 420
            flips.add((int(dr[0]), int(dc[0])))
    assert len(flips) == 4


def _small_npz(path, step=5):
    model = hp_torch.HyperpriorTorch(n=8, m=16, nz=8, hidden=8)
    recipe = dataclasses.asdict(Recipe())
    hp_torch.save_keras_npz(model, path, {"step": step, "minutes": 1.0, "clip_ema": 0.0,
                                          "best_val": 3.0}, recipe)
    return model


def test_trainer_runs_and_writes_a_keras_checkpoint(tmp_path):
    init, out = str(tmp_path / "init.npz"), str(tmp_path / "out.npz")
    before = _small_npz(init)
    args = hp_torch_train.parse_args(["--init", init, "--out", out, "--batch", "2", "--patch",
                                      "64", "--max-steps", "3", "--device", "cpu",
                                      "--precision", "float32", "--print-seconds", "0"])
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(2)]
    trainer = hp_torch_train.TorchTrainer(args, images=images)
    trainer.run()
    state, recipe = hp_torch.load_meta(out)
    assert state["step"] == 5 + 3 and state["clip_ema"] > 0 and state["best_val"] == float("inf")
    assert State(**state).minutes > 1.0
    assert Recipe(**recipe).patch == 64 and recipe["batch"] == 2 and recipe["transform"] == "gdn16"
    after = hp_torch.model_from_keras_npz(out)
    with np.load(out) as f:
        assert all(f[k].dtype == np.float16 for k in f.files if not k.startswith("meta/"))
    changed = [k for k, v in before.state_dict().items()
               if not torch.allclose(v, after.state_dict()[k])]
    assert "g_a.ga_conv0.weight" in changed and "z_density.matrices.0" in changed
    assert all(torch.isfinite(v).all() for v in after.state_dict().values())


def test_clipping_keeps_the_norm_under_twice_its_running_mean(tmp_path):
    init = str(tmp_path / "init.npz")
    _small_npz(init)
    args = hp_torch_train.parse_args(["--init", init, "--batch", "2", "--patch", "64",
                                      "--device", "cpu", "--precision", "float32"])
    rng = np.random.default_rng(1)
    trainer = hp_torch_train.TorchTrainer(args, images=[rng.integers(0, 256, (80, 80, 3),
                                                                     dtype=np.uint8)])
    trainer.clip_ema = torch.tensor(1e-3)    # a tiny running norm: every gradient gets clipped
    grads = {}
    trainer.opt.step = lambda: grads.update(
        norm=float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in trainer.params]))))
    trainer.step()
    assert grads["norm"] == pytest.approx(2e-3, rel=1e-3)


def _fake_sources(tmp_path):
    rng = np.random.default_rng(2)
    from PIL import Image
    out = []
    for i, (h, w) in enumerate(((200, 300), (120, 90))):
        a = np.clip(rng.normal(128, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        out.append((str(tmp_path / f"src{i}.png"), Image.fromarray(a)))
    return out


def test_pack_and_load(tmp_path, monkeypatch):
    sources = _fake_sources(tmp_path)
    monkeypatch.setattr(gpu_data, "training_sources", lambda: iter(sources))
    folder = str(tmp_path / "gpu_data")
    manifest = gpu_data.pack(folder, budget_mib=1.0)
    assert manifest["quality"] == 95 and len(manifest["images"]) == 2
    images = gpu_data.load_images(folder, 100)
    # as data._pyramid: 200x300 at 1, 3/4 and 1/2 (100x150); 120x90 not at all (narrower than 100)
    assert [im.shape for im in images] == [(200, 300, 3), (150, 225, 3), (100, 150, 3)]
    err = np.abs(images[0].astype(int) - np.asarray(sources[0][1]).astype(int)).mean()
    assert err < 4.0     # JPEG q95 4:4:4 of noise
    budget = 0.8 * manifest["total_mib"]
    small = gpu_data.pack(folder, budget_mib=budget)
    assert small["quality"] < 95 and small["total_mib"] <= budget
    assert sorted(f for f in os.listdir(folder) if f.endswith(".jpg")) == ["000.jpg", "001.jpg"]


def test_sources_are_data_py_sources_only():
    """The packed images come from where data.load_training_images reads, never val / Kodak."""
    from training.fetch_data import debian_photos
    want = sorted(glob.glob(os.path.join(data.TRAIN_DIR, "*.png"))) + debian_photos()
    if not want:
        pytest.skip("no training images here")
    paths = [p for p, _ in gpu_data.training_sources()]
    assert paths == want
    assert not any("kodak" in p.lower() or "/val/" in p for p in paths)


def test_write_init_is_float16_without_optimizer(tmp_path):
    src = str(tmp_path / "ckpt.npz")
    model = hp_torch.HyperpriorTorch(n=8, m=16, nz=8, hidden=8)
    arrays = hp_torch.to_keras_arrays(model)
    meta = {"opt/0": np.zeros(3), "meta/state": np.array(json.dumps({"step": 9}))}
    np.savez(src, **arrays, **meta)
    dst = gpu_data.write_init(src, str(tmp_path / "g"))
    with np.load(dst) as f:
        assert "opt/0" not in f.files and json.loads(str(f["meta/state"])) == {"step": 9}
        for k, a in arrays.items():
            assert f[k].dtype == np.float16
            np.testing.assert_array_equal(f[k], a.astype(np.float16))
