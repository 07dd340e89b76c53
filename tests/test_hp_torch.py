"""The PyTorch port of the hp model (training/hp_torch.py) against the Keras model
(training/hp_model.py): same weights, same outputs; and the Keras checkpoint layout round trip.
Needs torch (`pip install torch`, or the extra `.[gpu]`); the comparisons also need TensorFlow."""
import ast
import json
import os
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training import hp_torch  # noqa: E402

HP_MODEL = os.path.join(os.path.dirname(__file__), "..", "training", "hp_model.py")


def _hp_model_constants():
    """LAMBDAS, SCALE_MIN, SCALE_MAX, LIKELIHOOD_MIN as hp_model.py assigns them (no import:
    hp_model imports TensorFlow)."""
    out = {}
    for node in ast.parse(open(HP_MODEL).read()).body:
        if isinstance(node, ast.Assign):
            names = [t.id if isinstance(t, ast.Name) else [e.id for e in t.elts]
                     for t in node.targets]
            value = ast.literal_eval(node.value) if not isinstance(node.value, ast.Call) else None
            for n in names:
                if isinstance(n, list):
                    out.update(zip(n, value))
                else:
                    out[n] = value
    return out


def test_constants_equal_hp_model():
    c = _hp_model_constants()
    assert hp_torch.LAMBDAS == c["LAMBDAS"]
    assert (hp_torch.SCALE_MIN, hp_torch.SCALE_MAX) == (c["SCALE_MIN"], c["SCALE_MAX"])
    assert hp_torch.LIKELIHOOD_MIN == c["LIKELIHOOD_MIN"]


@pytest.mark.parametrize("size,k", [(5, 1), (8, 2), (7, 2), (256, 2), (65, 2)])
def test_same_padding_is_tf_same(size, k):
    tf = pytest.importorskip("tensorflow")
    x = tf.ones((1, size, 1, 1))
    w = tf.ones((5, 1, 1, 1))
    before, after = hp_torch.same_padding(size, 5, k)
    want = tf.nn.conv2d(tf.pad(x, [[0, 0], [before, after], [0, 0], [0, 0]]), w, [1, k, 1, 1],
                        "VALID")
    got = tf.nn.conv2d(x, w, [1, k, 1, 1], "SAME")
    np.testing.assert_array_equal(want.numpy(), got.numpy())


def test_depth_to_space_is_tf_dcr():
    tf = pytest.importorskip("tensorflow")
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 16)).astype(np.float32)   # NHWC
    want = tf.nn.depth_to_space(x, 2).numpy()
    got = hp_torch.depth_to_space(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    np.testing.assert_array_equal(got.numpy(), want)


def _keras_model(seed=0, bfloat16=False):
    """A Keras gdn16 model with every variable perturbed (non-zero biases, non-diagonal GDN,
    level-dependent gains), so that a layout error shows."""
    tf = pytest.importorskip("tensorflow")
    from training import hp_model
    tf.random.set_seed(seed)
    model = hp_model.HyperpriorModel("gdn16", bfloat16=bfloat16)
    rng = np.random.default_rng(seed)
    # larger gains and hyper kernels than at initialisation: z and y - mu of several integers
    scale = {"log_gain": 2.5, "h_a/": 2.0, "h_s/hs_out": 10.0}
    for key, v in model.all_variables().items():
        a = v.numpy()
        if key.endswith("gamma_root"):
            a = a + np.abs(rng.normal(0, 0.02, a.shape))
        elif key.endswith("kernel"):
            a = (a + rng.normal(0, 0.2 * a.std(), a.shape)) * next(
                (f for k, f in scale.items() if key.startswith(k)), 1.0)
        else:
            a = a + rng.normal(0, 0.1, a.shape) + (2.5 if key == "log_gain" else 0.0)
        v.assign(a.astype(np.float32))
    return model


def _keras_npz(model, path):
    arrays = {k: v.numpy() for k, v in model.all_variables().items()}
    np.savez(path, **arrays, **{"meta/state": np.array(json.dumps({"step": 7})),
                                "meta/recipe": np.array(json.dumps({"transform": "gdn16"}))})


def _image(h, w, seed=1):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in range(3)], -1)
    return np.clip(0.5 + 0.35 * base + rng.normal(0, 0.05, (h, w, 3)), 0, 1).astype(np.float32)


@pytest.mark.parametrize("h,w", [(64, 64), (64, 128)])
def test_forward_matches_keras(tmp_path, h, w):
    tf = pytest.importorskip("tensorflow")
    keras_model = _keras_model()
    _keras_npz(keras_model, str(tmp_path / "k.npz"))
    model = hp_torch.model_from_keras_npz(str(tmp_path / "k.npz")).eval()
    x = np.stack([_image(h, w, 1), _image(h, w, 2)])
    level = np.array([0, 6], np.int32)
    k_xhat, k_by, k_bz = (t.numpy() for t in keras_model.forward(
        tf.constant(x), tf.constant(level), training=False))
    with torch.no_grad():
        t_xhat, t_by, t_bz = model(torch.from_numpy(x).permute(0, 3, 1, 2),
                                   torch.from_numpy(level).long())
    t_xhat = t_xhat.permute(0, 2, 3, 1).numpy()
    assert t_xhat.shape == k_xhat.shape
    np.testing.assert_allclose(t_xhat, k_xhat, atol=2e-4)
    np.testing.assert_allclose(t_by.numpy(), k_by, rtol=1e-4)
    np.testing.assert_allclose(t_bz.numpy(), k_bz, rtol=1e-4)
    assert np.all(k_by > 0) and np.all(k_bz > 0) and k_by[0] < k_by[1]


def test_transforms_match_keras_at_odd_sizes(tmp_path):
    """g_a, h_a, g_s alone at sizes whose "same" padding is symmetric or not (the full forward
    needs multiples of 64)."""
    tf = pytest.importorskip("tensorflow")
    keras_model = _keras_model(seed=3)
    _keras_npz(keras_model, str(tmp_path / "k.npz"))
    model = hp_torch.model_from_keras_npz(str(tmp_path / "k.npz")).eval()
    x = _image(50, 70)[None]
    y_k = keras_model.g_a(tf.constant(x)).numpy()
    with torch.no_grad():
        y_t = model.analysis(torch.from_numpy(x).permute(0, 3, 1, 2))
        z_t = y_t
        for name in ("ha_conv0", "ha_conv1", "ha_conv2"):
            z_t = model.h_a[name](z_t)
        x_t = model.synthesis(y_t)
    assert y_k.shape == (1, 4, 5, 192)
    np.testing.assert_allclose(y_t.permute(0, 2, 3, 1).numpy(), y_k, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(z_t.permute(0, 2, 3, 1).numpy(),
                               keras_model.h_a(tf.constant(y_k)).numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(x_t.permute(0, 2, 3, 1).numpy(),
                               keras_model.g_s(tf.constant(y_k)).numpy(), atol=1e-4)


def test_forward_matches_keras_bfloat16(tmp_path):
    """Keras mixed_bfloat16 against the port's bf16=True: within bfloat16 rounding (each side
    rounds its own way, and rounding flips of y_s - mu follow)."""
    tf = pytest.importorskip("tensorflow")
    keras_model = _keras_model(bfloat16=True)
    _keras_npz(keras_model, str(tmp_path / "k.npz"))
    model = hp_torch.model_from_keras_npz(str(tmp_path / "k.npz"), bf16=True).eval()
    x = np.stack([_image(64, 64, 3), _image(64, 64, 4)])
    level = np.array([2, 7], np.int32)
    k_xhat, k_by, k_bz = (t.numpy() for t in keras_model.forward(
        tf.constant(x), tf.constant(level), training=False))
    y_k = keras_model.g_a(tf.constant(x)).numpy()
    with torch.no_grad():
        t_xhat, t_by, t_bz = model(torch.from_numpy(x).permute(0, 3, 1, 2),
                                   torch.from_numpy(level).long())
        y_t = model.analysis(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x_t = model.synthesis(torch.from_numpy(y_k).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def rel(a, b):
        return np.linalg.norm(a - b) / np.linalg.norm(b)
    assert rel(y_t.numpy(), y_k) < 2e-2
    assert rel(x_t.numpy(), keras_model.g_s(tf.constant(y_k)).numpy()) < 1e-2
    assert rel(t_xhat.permute(0, 2, 3, 1).numpy(), k_xhat) < 5e-2
    np.testing.assert_allclose(t_by.numpy() + t_bz.numpy(), k_by + k_bz, rtol=1e-2)


def test_keys_and_shapes_are_keras(tmp_path):
    pytest.importorskip("tensorflow")
    from training import hp_model
    want = {k: tuple(v.shape) for k, v in hp_model.HyperpriorModel("gdn16").all_variables().items()}
    got = {k: a.shape for k, a in hp_torch.to_keras_arrays(hp_torch.HyperpriorTorch()).items()}
    assert got == want


def test_round_trip_is_exact(tmp_path):
    model = hp_torch.HyperpriorTorch(n=16, m=24, nz=8, hidden=12)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    path = str(tmp_path / "w.npz")
    hp_torch.save_keras_npz(model, path, {"step": 42}, {"transform": "gdn16"})
    other = hp_torch.model_from_keras_npz(path)
    a, b = model.state_dict(), other.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert hp_torch.load_meta(path) == ({"step": 42}, {"transform": "gdn16"})
    with np.load(path) as f:
        assert all(f[k].dtype == np.float32 for k in f.files if not k.startswith("meta/"))


def test_trainer_load_accepts_torch_npz(tmp_path):
    """hp_train.Trainer.load (without building a Trainer: it loads the training images) takes
    what save_keras_npz writes, float32 and float16 compact, with the step count."""
    pytest.importorskip("tensorflow")
    from training import hp_model, hp_train
    model = hp_torch.HyperpriorTorch()
    state = {"step": 1234, "minutes": 8.0, "clip_ema": 0.5,
                                 "best_val": float("inf")}
    recipe = {"transform": "gdn16", "batch": 16, "patch": 256}
    for dtype, compressed in ((np.float32, False), (np.float16, True)):
        path = str(tmp_path / f"w_{np.dtype(dtype).name}.npz")
        hp_torch.save_keras_npz(model, path, state, recipe, dtype=dtype, compressed=compressed)
        stub = types.SimpleNamespace(model=hp_model.HyperpriorModel("gdn16"),
                                     sampler=types.SimpleNamespace(), state=hp_train.State())
        hp_train.Trainer.load(stub, path, with_optimizer=True)
        assert stub.state == hp_train.State(**state) and stub.warm_from == 1234
        want = hp_torch.to_keras_arrays(model, dtype)
        for k, v in stub.model.all_variables().items():
            np.testing.assert_array_equal(v.numpy(), want[k].astype(np.float32))


def test_initialisation_is_keras_like():
    """From scratch the port starts where HyperpriorModel does: same kernel spreads (glorot
    uniform; hs_out truncated normal), the same GDN, gain and density constants."""
    pytest.importorskip("tensorflow")
    from training import hp_model
    want = {k: v.numpy() for k, v in hp_model.HyperpriorModel("gdn16").all_variables().items()}
    got = hp_torch.to_keras_arrays(hp_torch.HyperpriorTorch())
    for k, a in want.items():
        if k.endswith("kernel"):
            assert got[k].std() == pytest.approx(a.std(), rel=0.1), k
            assert np.abs(got[k]).max() <= np.abs(a).max() * 1.05, k
        elif "/bias" in k and k.startswith("z_density"):
            assert got[k].min() >= -0.5 and got[k].max() <= 0.5
        else:
            np.testing.assert_allclose(got[k], a, rtol=1e-6, err_msg=k)
