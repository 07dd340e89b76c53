"""Training utilities (only where TensorFlow is installed: `pip install .[train]`)."""
import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from training import model, train, weights  # noqa: E402


def test_soft_histogram_equals_entropy_on_integer_values():
    rng = np.random.default_rng(0)
    z = np.clip(np.round(rng.laplace(0, 1.5, (2, 8, 8, 4))), -15, 16).astype(np.float32)
    expected = []
    for c in range(4):
        _, counts = np.unique(z[..., c], return_counts=True)
        p = counts / counts.sum()
        expected.append(-(p * np.log2(p)).sum())
    assert float(model.soft_histogram_bits(tf.constant(z))) == pytest.approx(np.mean(expected), abs=1e-4)


def test_quantise_modes():
    z = tf.constant([[-20.0, -0.6, 0.4, 3.5, 30.0]])
    assert model.quantise(z, "eval").numpy().tolist() == [[-15, -1, 0, 4, 16]]
    with tf.GradientTape() as tape:
        tape.watch(z)
        y = tf.reduce_sum(model.quantise(z, "hard"))
    assert tape.gradient(y, z).numpy().tolist() == [[0, 1, 1, 1, 0]]  # straight-through inside range
    noisy = model.quantise(z, "noise").numpy()
    assert np.all(np.abs(noisy - np.clip(z.numpy(), -15, 16)) <= 0.5)


def test_model_shapes_and_identity_residuals():
    enc, dec = model.build_encoder(16), model.build_decoder(16)
    x = np.random.default_rng(1).random((1, 24, 40, 3)).astype(np.float32)
    z = enc(x)
    assert z.shape == (1, 3, 5, 16)
    assert dec(model.quantise(z, "eval")).shape == (1, 24, 40, 3)
    assert not np.any(enc.get_layer("enc_res0_conv2").kernel.numpy())  # branch starts at zero


def test_weights_warm_start_skips_latent_layers_and_fingerprint_is_stable():
    e32, d32 = model.build_encoder(32), model.build_decoder(32)
    arrays = weights.model_arrays(e32, d32)
    e16, d16 = model.build_encoder(16), model.build_decoder(16)
    n = weights.assign_model_arrays(e16, d16, arrays, skip_latent_layers=True)
    assert n == len(arrays) - 4  # kernel + bias of enc_latent and dec_latent
    assert weights.fingerprint(arrays) == weights.fingerprint(dict(reversed(arrays.items())))
    arrays["decoder/dec_conv3/1"] = arrays["decoder/dec_conv3/1"] + 1e-3
    assert weights.fingerprint(arrays) != weights.fingerprint(weights.model_arrays(e32, d32))


def test_learning_rate_schedule():
    args = train.parse_args(["--lr", "1e-3", "--lr-warmup", "10"])   # decay over the last 70 %
    assert train.learning_rate(args, 0, 0.0) == pytest.approx(1e-4)
    assert train.learning_rate(args, 50, 0.25) == pytest.approx(1e-3)
    assert train.learning_rate(args, 50, 1.0) == pytest.approx(1e-4)
    assert math.isclose(train.learning_rate(args, 50, 0.65), 1e-3 * (0.1 + 0.45), rel_tol=1e-6)
    # a resumed run warms up again from where it resumed; scale halves it after a rollback
    assert train.learning_rate(args, 500, 0.25, warm_from=500) == pytest.approx(1e-4)
    assert train.learning_rate(args, 520, 0.25, warm_from=500, scale=0.5) == pytest.approx(5e-4)
