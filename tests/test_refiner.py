"""The refiner (training/refiner.py): its explicit gradient against GradientTape, its D against
PIL_l3ic.metrics, and its TFLite conversion (builtins only, same numbers under LiteRT)."""
import collections

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from PIL_l3ic import metrics  # noqa: E402
from training import model, refiner  # noqa: E402

WEIGHTS = (0.15, 0.06)


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def case():
    """A randomly weighted 16-channel decoder (zero_init would leave the residual branches at
    zero), a codebook latent of 24x23 (192x184 pixels: odd sizes after pooling) and an image
    that resembles the decoded one, so the SSIM terms are well above their 0.01 floor."""
    rng = np.random.default_rng(0)
    decoder = model.build_decoder(16)
    for layer in decoder.layers:
        if len(layer.get_weights()) == 2:
            k, b = layer.get_weights()
            std = np.sqrt(1.0 / np.prod(k.shape[:3])) * (0.5 if layer.name == "dec_conv3" else 1)
            layer.set_weights([rng.normal(0, std, k.shape).astype(np.float32),
                               rng.normal(0, 0.05, b.shape).astype(np.float32)])
    latent = np.clip(np.round(rng.laplace(0, 2, (1, 24, 23, 16))), -15, 16).astype(np.float32)
    near = decoder(latent + rng.normal(0, 1, latent.shape).astype(np.float32)).numpy()
    image = np.clip(np.round(near * 255 + rng.normal(0, 4, near.shape)), 0, 255)
    return decoder, latent, image.astype(np.float32)


def test_decoder_output_partly_clipped(case):
    decoder, latent, _ = case
    y = decoder(latent).numpy()
    assert 0.02 < np.mean((y <= 0) | (y >= 1)) < 0.6   # the clip's mask is exercised


@pytest.mark.parametrize("weights", [(0.0, 0.0), WEIGHTS])
def test_explicit_gradient_matches_tape(case, weights):
    decoder, latent, image = case
    grad, d = refiner.refiner_function(decoder, *weights)(tf.constant(latent), tf.constant(image))
    ref_grad, ref_d = refiner.reference_gradient(decoder, latent, image, *weights)
    assert grad.shape == latent.shape and d.shape == (1,)
    assert _rel(grad, ref_grad) < 1e-3
    assert float(d[0]) == pytest.approx(float(ref_d[0]), rel=1e-5)


def test_distortion_matches_metrics():
    """D on an even size (both pooling conventions agree) against PIL_l3ic.metrics."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (192, 176, 3)).round()
    y = np.clip(x + rng.normal(0, 20, x.shape), 0, 255).round()
    d, _ = refiner.distortion_and_grad(tf.constant(x[None] / 255, tf.float32),
                                       tf.constant(y[None] / 255, tf.float32), *WEIGHTS)
    expected = (metrics.mse(x, y) / 255 ** 2 + WEIGHTS[0] * (1 - metrics.ssim(x, y))
                + WEIGHTS[1] * (1 - metrics.ms_ssim(x, y)))
    assert float(d[0]) == pytest.approx(expected, rel=1e-4)


def test_tflite_builtins_and_agreement(case):
    from ai_edge_litert.interpreter import Interpreter

    decoder, latent, image = case
    blob = refiner.convert_refiner(decoder, 16, *WEIGHTS)
    it = Interpreter(model_content=blob, num_threads=2)
    ops = collections.Counter(o["op_name"] for o in it._get_ops_details())
    assert not [op for op in ops if "FLEX" in op.upper() or "CUSTOM" in op.upper()], ops
    assert ops["CONV_2D"] == 18    # 9 forward, 9 backward
    inputs = {d["shape_signature"][-1]: d["index"] for d in it.get_input_details()}
    it.resize_tensor_input(inputs[16], latent.shape)
    it.resize_tensor_input(inputs[3], image.shape)
    it.allocate_tensors()
    it.set_tensor(inputs[16], latent)
    it.set_tensor(inputs[3], image)
    it.invoke()
    out = {len(d["shape"]): it.get_tensor(d["index"]) for d in it.get_output_details()}
    grad, d = refiner.refiner_function(decoder, *WEIGHTS)(tf.constant(latent), tf.constant(image))
    assert out[4].shape == latent.shape and out[1].shape == (1,)
    assert _rel(out[4], grad.numpy()) < 1e-4
    assert _rel(out[1], d.numpy()) < 1e-4
