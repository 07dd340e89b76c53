"""Quantisation-aware fine-tuning (training.qat) and the full-integer export (training.export)."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from training import export, model, qat  # noqa: E402


def _trained_looking(enc, dec, seed):
    rng = np.random.default_rng(seed)
    for w in enc.weights + dec.weights:
        if len(w.shape) == 4:
            w.assign(rng.normal(0, 0.05, w.shape).astype(np.float32))


@pytest.fixture(scope="module")
def nets():
    enc, dec = model.build_encoder(16), model.build_decoder(16)
    _trained_looking(enc, dec, 0)
    rng = np.random.default_rng(1)
    crops = [(rng.integers(0, 256, (1, 32, 32, 3)) / 255).astype(np.float32) for _ in range(3)]
    es, ds = qat.QuantSim(enc, False), qat.QuantSim(dec, True)
    qat.calibrate(es, ds, crops)
    return enc, dec, es, ds, crops


def test_weight_fake_quant_is_per_channel_symmetric_int8():
    rng = np.random.default_rng(2)
    w = tf.Variable((rng.normal(0, 1, (3, 3, 4, 5)) * np.arange(1, 6)).astype(np.float32))
    with tf.GradientTape() as tape:
        q = qat.fake_quant_weights(w)
        loss = tf.reduce_sum(q * 2.0)
    q, w_np = q.numpy(), w.numpy()
    scale = np.abs(w_np).reshape(-1, 5).max(axis=0) / 127
    steps = q / scale
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)     # on each channel's grid
    assert np.abs(np.round(steps)).max() <= 127
    np.testing.assert_allclose(np.abs(q).reshape(-1, 5).max(axis=0), scale * 127, rtol=1e-5)
    assert np.abs(q - w_np).max() <= scale.max() / 2 + 1e-6
    np.testing.assert_allclose(tape.gradient(loss, w).numpy(), 2.0)   # straight through


def test_activation_fake_quant_matches_tflite_int8():
    lo, hi = -1.3, 4.1     # TFLite: scale (hi - lo) / 255, integer zero point, 0 exact
    x = tf.constant(np.linspace(-3, 6, 1001, dtype=np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = qat.fake_quant_activation(x, tf.constant(lo), tf.constant(hi))
    scale = (hi - lo) / 255
    zero = np.round(-128 - lo / scale)
    want = (np.clip(np.round(x.numpy() / scale) + zero, -128, 127) - zero) * scale
    np.testing.assert_allclose(y.numpy(), want, atol=1e-5)
    assert float(qat.fake_quant_activation(tf.constant(0.0), lo, hi)) == 0.0
    g = tape.gradient(y, x).numpy()
    assert g[0] == 0 and g[-1] == 0 and g[500] == 1     # zero outside the range
    # a range that excludes 0 is widened to include it
    assert float(qat.fake_quant_activation(tf.constant(0.0), 1.0, 2.0)) == 0.0


def test_quantsim_float_mode_is_the_keras_model_and_calibration_is_min_max(nets):
    enc, dec, es, ds, crops = nets
    x = np.random.default_rng(3).random((2, 24, 40, 3)).astype(np.float32)
    np.testing.assert_array_equal(es(x, "float").numpy(), enc(x).numpy())
    z = model.quantise(enc(x), "eval")
    np.testing.assert_array_equal(ds(z, "float").numpy(), dec(z).numpy())
    latents = [enc(c).numpy() for c in crops]
    last = es.ranges.numpy()[-1]                # the latent (latent_scale's output)
    assert es.names[-1] == "latent_scale" and "enc_latent" not in es.names
    assert last[0] == pytest.approx(min(l.min() for l in latents), rel=1e-5)
    assert last[1] == pytest.approx(max(l.max() for l in latents), rel=1e-5)
    first = ds.ranges.numpy()[0]                # the decoder's input: the rounded latents
    assert ds.names[0] == "input"
    assert first[0] == min(np.round(np.clip(l, -15, 16)).min() for l in latents)
    # quantised mode stays near float, and is not float
    zq, zf = es(x, "quant").numpy(), enc(x).numpy()
    assert 0 < np.abs(zq - zf).mean() < 0.05 * np.abs(zf).mean()


def test_quantsim_gradients_reach_every_weight(nets):
    enc, dec, es, ds, crops = nets
    variables = enc.trainable_variables + dec.trainable_variables
    with tf.GradientTape() as tape:
        z = es(crops[0], "quant")
        y = ds(model.quantise(z, "hard"), "quant")
        loss = tf.reduce_mean(tf.square(y - crops[0])) + 1e-3 * model.soft_histogram_bits(z)
    grads = tape.gradient(loss, variables)
    assert all(g is not None and np.any(g.numpy() != 0) for g in grads)


def test_calibration_crops_are_deterministic_training_crops():
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (300, 280, 3), dtype=np.uint8),
              rng.integers(0, 256, (100, 500, 3), dtype=np.uint8)]   # too small: never used
    a = qat.calibration_crops(images, n=5, size=256)
    b = qat.calibration_crops(images, n=5, size=256)
    assert len(a) == 5 and all(c.shape == (1, 256, 256, 3) and c.dtype == np.float32 for c in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(0 <= c.min() and c.max() <= 1 for c in a)


def test_static_export_is_full_integer_with_the_ranges_qat_trains_with(nets):
    from ai_edge_litert.interpreter import Interpreter

    enc, dec, es, ds, crops = nets
    rep = ([np.round(c * 255) for c in crops], qat.representative_latents(enc, crops))
    halves = export.tflite_halves(enc, dec, 16, {"int8-static"}, rep)
    for role, sim, shape in (("encoder", es, (1, 16, 24, 3)), ("decoder", ds, (1, 2, 3, 16))):
        it = Interpreter(model_content=halves[role, "int8-static"])
        ops = {o["op_name"] for o in it._get_ops_details()}
        assert ops >= {"CONV_2D", "QUANTIZE", "DEQUANTIZE"}
        tensors = it.get_tensor_details()
        kernels = [t for t in tensors if len(t["shape"]) == 4 and t["dtype"] == np.int8
                   and len(t["quantization_parameters"]["scales"]) > 1]   # per-channel weights
        convs = [l for l in sim.model.layers if isinstance(l, tf.keras.layers.Conv2D)]
        assert len(kernels) == len(convs) == 9
        assert not [t for t in tensors if t["dtype"] == np.float32 and len(t["shape"]) == 4
                    and t["name"] not in (it.get_input_details()[0]["name"],
                                          it.get_output_details()[0]["name"])]
        for d in it.get_input_details() + it.get_output_details():   # the runtime's interface
            assert d["dtype"] == np.float32
        tflite_scales = {round(float(t["quantization_parameters"]["scales"][0]), 7) for t in tensors
                         if t["dtype"] == np.int8 and len(t["quantization_parameters"]["scales"]) == 1}
        r = sim.ranges.numpy()
        ours = (np.maximum(r[:, 1], 0) - np.minimum(r[:, 0], 0)) / 255
        if role == "decoder":
            ours[-1] *= 127.5      # the export folds 255 (y + 1) / 2 into the last convolution
        for s in ours:
            assert min(abs(s - t) / s for t in tflite_scales) < 1e-4, (role, s)
        x = np.random.default_rng(5).random(shape).astype(np.float32) * (255 if role == "encoder" else 3)
        it.resize_tensor_input(it.get_input_details()[0]["index"], shape)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()


def test_variant_pairs_cover_every_half_choice():
    assert export.PAIRS["int8-static-decoder"] == ("int8", "int8-static")
    assert export.PAIRS["int8-static-encoder"] == ("int8-static", "int8")
    assert set(export.VARIANTS) >= {"float32", "float16", "int8", "int8-static"}


def test_export_rule_holds_quality_and_rate():
    ref = {"psnr": 31.0, "ms_ssim": 0.985, "bpp_estimate": 0.80, "network_seconds": 9.0}
    results = {"float32": ref,
               "int8": {**ref, "psnr": 30.93, "ms_ssim": 0.9845, "bpp_estimate": 0.801},
               "int8-static": {**ref, "psnr": 30.95, "ms_ssim": 0.9838},            # MS-SSIM
               "int8-static-decoder": {**ref, "psnr": 30.89},                        # PSNR
               "int8-static-encoder": {**ref, "psnr": 31.05, "bpp_estimate": 0.82}}  # rate
    assert export.within_rule(results) == ["float32", "int8"]


def test_weights_mode_is_the_model_with_int8_weights(nets):
    """Mode "weights" (QAT for the dynamic-range int8 export): the float network run with
    per-channel int8 kernels, activations untouched."""
    enc, dec, es, ds, crops = nets
    x = np.random.default_rng(5).random((1, 32, 48, 3)).astype(np.float32)
    z = model.quantise(enc(x), "eval")
    got_z, got_y = es(x, "weights").numpy(), ds(z, "weights").numpy()
    float_z, float_y = enc(x).numpy(), dec(z).numpy()
    kept = [w.numpy() for w in enc.weights + dec.weights]
    try:
        for w in enc.weights + dec.weights:
            if len(w.shape) == 4:
                w.assign(qat.fake_quant_weights(w))
        np.testing.assert_allclose(got_z, enc(x).numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got_y, dec(z).numpy(), rtol=1e-4, atol=1e-4)
    finally:
        for w, k in zip(enc.weights + dec.weights, kept):
            w.assign(k)
    assert np.abs(got_z - float_z).max() > 0 and np.abs(got_y - float_y).max() > 0
