"""Training utilities (only where TensorFlow is installed: `pip install .[train]`)."""
import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from PIL_l3ic import metrics  # noqa: E402
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



def _coder_contexts(ch):
    """The context coder's rule (docs/entropy.md) written out for one (h, w) channel."""
    values, counts = np.unique(ch, return_counts=True)
    m = values[np.argmax(counts)]                       # the lowest of the most frequent
    a = np.minimum(np.abs(ch - m), 3)
    ctx = np.zeros(ch.shape, int)
    for y in range(ch.shape[0]):
        for x in range(ch.shape[1]):
            d = (a[y, x - 1] if x else 0) + (a[y - 1, x] if y else 0)
            ctx[y, x] = 0 if d == 0 else 1 if d <= 2 else 2
    return ctx


def _correlated_latent(seed, shape=(1, 24, 32, 3)):
    """Integer latent with spatially clustered magnitudes, like a real one (mostly zeros)."""
    rng = np.random.default_rng(seed)
    scale = np.repeat(np.repeat(rng.gamma(0.6, 1.5, (shape[0], shape[1] // 4, shape[2] // 4,
                                                       shape[3])), 4, axis=1), 4, axis=2)
    return np.clip(np.round(rng.laplace(0, 1, shape) * scale), -15, 16).astype(np.float32)


def test_context_ids_follow_the_coder_rule():
    z = _correlated_latent(2)
    z[0, :, :, 2] = np.where(np.arange(32) % 2, 1.0, -1.0)   # a tie: -1 and 1 equally frequent
    ids = model._context_ids(tf.constant(z), axes=(0, 1, 2)).numpy()
    for c in range(z.shape[-1]):
        assert (ids[0, ..., c] == _coder_contexts(z[0, ..., c])).all()
    assert set(np.unique(ids)) == {0, 1, 2}


def test_soft_context_bits_equal_conditional_entropy_on_integer_values():
    z = _correlated_latent(3)
    expected = []
    for c in range(z.shape[-1]):
        ch, ctx = z[0, ..., c], _coder_contexts(z[0, ..., c])
        bits = 0.0
        for k in range(3):
            _, counts = np.unique(ch[ctx == k], return_counts=True)
            bits -= (counts * np.log2(counts / counts.sum())).sum()
        expected.append(bits / ch.size)
    soft = float(model.soft_histogram_bits_context(tf.constant(z)))
    assert soft == pytest.approx(np.mean(expected), abs=1e-4)
    assert soft < float(model.soft_histogram_bits(tf.constant(z)))   # contexts help here
    no_tables = model.empirical_bits_context(z[0].astype(np.int32), table_bytes_per_channel=0)
    assert no_tables / z[0].size == pytest.approx(np.mean(expected), abs=1e-4)


def test_context_estimate_tracks_the_real_coder():
    from PIL_l3ic import _fse
    z = _correlated_latent(4, (1, 64, 96, 4))
    idx = (z[0] - model.CODEBOOK_MIN).astype(np.uint8)
    real = sum(len(_fse.compress(np.ascontiguousarray(idx[..., c]).tobytes(), width=96)) * 8
               for c in range(4))
    estimate = model.empirical_bits_context(z[0].astype(np.int32))
    assert estimate == pytest.approx(real, rel=0.03)
    assert estimate < model.empirical_bits(z[0].astype(np.int32))


def test_soft_context_bits_have_a_gradient():
    z = tf.Variable(_correlated_latent(5) + 0.3)
    with tf.GradientTape() as tape:
        bits = model.soft_histogram_bits_context(z)
    grad = tape.gradient(bits, z).numpy()
    assert np.isfinite(grad).all() and np.abs(grad).max() > 0


def test_rate_channel_weights_leave_channels_out():
    z = tf.constant(_correlated_latent(7))
    per_channel = [float(model.soft_histogram_bits(z[..., c:c + 1])) for c in range(3)]
    weighted = float(model.soft_histogram_bits(z, tf.constant([1.0, 0.0, 0.5])))
    assert weighted == pytest.approx((per_channel[0] + 0.5 * per_channel[2]) / 3, abs=1e-5)
    per_channel = [float(model.soft_histogram_bits_context(z[..., c:c + 1])) for c in range(3)]
    weighted = float(model.soft_histogram_bits_context(z, tf.constant([1.0, 0.0, 0.5])))
    assert weighted == pytest.approx((per_channel[0] + 0.5 * per_channel[2]) / 3, abs=1e-5)

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


def test_bfloat16_model_shares_weights_and_keeps_latent_layers_float32():
    """--precision bfloat16: same weight names and shapes (checkpoints and exports unchanged),
    float32 variables, the latent-touching and output layers computed in float32, and outputs
    within bfloat16 precision of the float32 model with the same weights."""
    enc, dec = model.build_encoder(16), model.build_decoder(16)
    benc, bdec = model.build_encoder(16, bfloat16=True), model.build_decoder(16, bfloat16=True)
    rng = np.random.default_rng(3)
    for m in (enc, dec):   # non-zero residual branches, so the bfloat16 layers matter
        for v in m.trainable_variables:
            v.assign(rng.normal(0, 0.05, v.shape).astype(np.float32))
    arrays = weights.model_arrays(enc, dec)
    assert weights.assign_model_arrays(benc, bdec, arrays) == len(arrays)
    assert weights.fingerprint(weights.model_arrays(benc, bdec)) == weights.fingerprint(arrays)
    assert all(v.dtype == "float32" for v in benc.trainable_variables + bdec.trainable_variables)
    assert benc.get_layer("enc_res0_conv1").compute_dtype == "bfloat16"
    assert bdec.get_layer("dec_conv2").compute_dtype == "bfloat16"
    for m, name in ((benc, "enc_latent"), (benc, "latent_scale"), (bdec, "dec_latent"),
                    (bdec, "dec_conv3")):
        assert m.get_layer(name).compute_dtype == "float32", name
    x = rng.random((1, 32, 48, 3)).astype(np.float32)
    z, bz = enc(x).numpy(), benc(x).numpy()
    assert bz.dtype == np.float32
    assert 0 < np.abs(bz - z).max() <= 0.02 * np.abs(z).max()
    y, by = dec(np.round(z)).numpy(), bdec(np.round(z)).numpy()
    assert by.dtype == np.float32 and np.abs(by - y).max() <= 0.02


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


def _trained_looking(enc, dec, seed):
    """Give every layer (the zero-initialised ones too) random weights."""
    rng = np.random.default_rng(seed)
    for w in enc.weights + dec.weights:
        if len(w.shape) == 4:
            w.assign(rng.normal(0, 0.05, w.shape).astype(np.float32))


def test_wider_warm_start_decodes_like_its_source():
    e32, d32 = model.build_encoder(32), model.build_decoder(32)
    _trained_looking(e32, d32, 2)
    arrays = weights.model_arrays(e32, d32)
    e64, d64 = model.build_encoder(64), model.build_decoder(64)
    weights.assign_model_arrays(e64, d64, arrays, skip_latent_layers=True)
    keep, means = train.latent_channels_to_keep(arrays, 64, None, 16)
    assert keep == list(range(32)) and means is None
    weights.assign_latent_channels(e64, d64, arrays, keep, means)
    x = np.random.default_rng(3).random((1, 32, 32, 3)).astype(np.float32)
    z32, z64 = e32(x).numpy(), e64(x).numpy()
    np.testing.assert_allclose(z64[..., :32], z32, rtol=1e-5, atol=1e-5)
    assert np.std(z64[..., 32:]) > 0.1      # new channels vary, so gradients reach them
    q = np.round(z64)
    np.testing.assert_allclose(d64(q).numpy(), d32(q[..., :32]).numpy(), atol=1e-5)


def test_narrower_warm_start_keeps_the_most_varying_channels():
    e32, d32 = model.build_encoder(32), model.build_decoder(32)
    _trained_looking(e32, d32, 4)
    arrays = weights.model_arrays(e32, d32)
    images = [np.random.default_rng(5).random((80, 80, 3)).astype(np.float32)]
    keep, means = train.latent_channels_to_keep(arrays, 16, images, 16)
    batch = train.data.PatchSampler(images, 16, seed=12345).batch(64)
    z = np.round(np.clip(e32(batch).numpy(), -15, 16)).reshape(-1, 32)
    assert keep == sorted(np.argsort(-z.std(axis=0))[:16].tolist())
    e16, d16 = model.build_encoder(16), model.build_decoder(16)
    weights.assign_latent_channels(e16, d16, arrays, keep, means)
    np.testing.assert_array_equal(d16.get_layer("dec_latent").kernel.numpy(),
                                  arrays["decoder/dec_latent/0"][:, :, keep])
    # a latent that sits at its means everywhere decodes the same with or without the dropped channels
    mean_latent = np.broadcast_to(means.astype(np.float32), (1, 4, 4, 32))
    inner = (slice(None), slice(1, 3), slice(1, 3))   # away from the zero padding
    dec_in_32 = d32.get_layer("dec_latent")(d32.get_layer("inverse_scale")(mean_latent)).numpy()
    dec_in_16 = d16.get_layer("dec_latent")(d16.get_layer("inverse_scale")(
        np.ascontiguousarray(mean_latent[..., keep]))).numpy()
    np.testing.assert_allclose(dec_in_16[inner], dec_in_32[inner], rtol=1e-4, atol=1e-4)


def test_ms_ssim_loss_matches_tensorflow_and_stays_finite():
    rng = np.random.default_rng(6)
    x = tf.constant(rng.random((4, 64, 64, 3)).astype(np.float32))
    y = tf.clip_by_value(x + rng.normal(0, 0.05, x.shape).astype(np.float32), 0, 1)
    ref = 1 - tf.reduce_mean(tf.image.ssim_multiscale(x, y, 1.0,
                                                      power_factors=model.PATCH_MS_SSIM_WEIGHTS))
    assert float(model.ms_ssim_loss(x, y)) == pytest.approx(float(ref), abs=1e-5)
    anti = tf.Variable(1.0 - x)      # contrast-structure terms < 0: tf's version has inf gradients
    with tf.GradientTape() as tape:
        loss = model.ms_ssim_loss(x, anti)
    assert np.all(np.isfinite(tape.gradient(loss, anti).numpy()))


def test_ssim_loss_matches_the_metric_of_the_results_table():
    rng = np.random.default_rng(7)
    x = rng.random((2, 48, 48, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.08, x.shape), 0, 1).astype(np.float32)
    want = np.mean([metrics.ssim(y[i] * 255, x[i] * 255) for i in range(2)])
    assert 1 - float(model.ssim_loss(tf.constant(x), tf.constant(y))) == pytest.approx(want, abs=1e-5)
    assert float(model.ssim_loss(tf.constant(x), tf.constant(x))) == pytest.approx(0.0, abs=1e-6)


def test_distortion_composes_the_terms_and_skips_them_in_the_warm_up():
    rng = np.random.default_rng(8)
    x = tf.constant(rng.random((2, 64, 64, 3)).astype(np.float32))
    y = tf.clip_by_value(x + rng.normal(0, 0.05, x.shape).astype(np.float32), 0, 1)
    mse = float(tf.reduce_mean(tf.square(x - y)))
    total, got_mse = model.distortion(x, y, 0.03, 0.2)
    want = mse + 0.03 * float(model.ms_ssim_loss(x, y)) + 0.2 * float(model.ssim_loss(x, y))
    assert float(got_mse) == pytest.approx(mse, rel=1e-6)
    assert float(total) == pytest.approx(want, rel=1e-5)
    assert float(model.distortion(x, y, 0.03, None)[0]) == pytest.approx(
        mse + 0.03 * float(model.ms_ssim_loss(x, y)), rel=1e-5)
    # the noise warm-up: no SSIM-family terms, so an anti-correlated output keeps finite gradients
    anti = tf.Variable(1.0 - x)
    with tf.GradientTape() as tape:
        total, _ = model.distortion(x, anti, 0.03, 0.2, structural=False)
    assert float(total) == pytest.approx(float(tf.reduce_mean(tf.square(x - anti))), rel=1e-6)
    assert np.all(np.isfinite(tape.gradient(total, anti).numpy()))


def test_checkpoint_keeps_weights_optimizer_state_and_meta(tmp_path):
    import keras
    encoder, decoder = model.build_encoder(16), model.build_decoder(16)
    variables = encoder.trainable_variables + decoder.trainable_variables
    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(variables)
    optimizer.apply_gradients([(tf.ones_like(v), v) for v in variables])   # non-zero moments
    path = str(tmp_path / "checkpoint.npz")
    weights.save_checkpoint(path, encoder, decoder, optimizer, step=123, lmbda=2.5e-3,
                            best_val=np.array([0.01, 0.5]))
    arrays, meta = weights.load_npz(path)
    assert arrays.keys() == weights.model_arrays(encoder, decoder).keys()
    assert all(np.array_equal(arrays[k], v) for k, v in weights.model_arrays(encoder, decoder).items())
    assert meta["step"] == 123 and meta["lmbda"] == pytest.approx(2.5e-3)
    assert list(meta["best_val"]) == pytest.approx([0.01, 0.5])
    assert len(meta["optimizer"]) == len(optimizer.variables)
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(meta["optimizer"], optimizer.variables))
    assert not list(tmp_path.glob("*.tmp.npz"))


def test_snapshots_average_back_to_the_model(tmp_path):
    from training import average
    encoder, decoder = model.build_encoder(16), model.build_decoder(16)
    weights.save_snapshot(str(tmp_path / "snap_1.npz"), encoder, decoder, step=1, lmbda=0.5)
    first = weights.model_arrays(encoder, decoder)
    kernel = encoder.get_layer("enc_latent").weights[0]
    kernel.assign(kernel + 1.0)
    weights.save_snapshot(str(tmp_path / "snap_2.npz"), encoder, decoder, step=2, lmbda=0.5)
    arrays, meta = average.average([str(tmp_path / "snap_1.npz"), str(tmp_path / "snap_2.npz")])
    assert meta["step"] == 2 and meta["optimizer"] == []
    np.testing.assert_allclose(arrays["encoder/enc_latent/0"],
                               first["encoder/enc_latent/0"] + 0.5, rtol=1e-6)
    assert all(np.array_equal(arrays[k], v) for k, v in first.items() if "enc_latent/0" not in k)
    fresh_enc, fresh_dec = model.build_encoder(16), model.build_decoder(16)
    assert weights.assign_model_arrays(fresh_enc, fresh_dec, arrays) == len(first)


def test_revive_channels_restarts_only_the_dead_ones():
    enc, dec = model.build_encoder(16), model.build_decoder(16)
    dead = [3, 7]
    layer, dlayer = enc.get_layer("enc_latent"), dec.get_layer("dec_latent")
    k, b, dk = layer.weights[0].numpy(), layer.weights[1].numpy(), dlayer.weights[0].numpy()
    k[..., dead], b[dead], dk[:, :, dead] = 0.0, 0.0, 0.0     # how a wider warm start adds them
    layer.weights[0].assign(k), layer.weights[1].assign(b), dlayer.weights[0].assign(dk)
    x = tf.constant(np.random.default_rng(6).random((2, 32, 48, 3)).astype(np.float32))

    def dead_kernel_grad():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(dec(model.quantise(enc(x), "hard")) - x))
        return tape.gradient(loss, layer.weights[0]).numpy()[..., dead]

    assert not dead_kernel_grad().any()          # stuck: no gradient reaches them
    before = enc(x).numpy()
    weights.revive_channels(enc, dec, dead, np.random.default_rng(0))
    after = enc(x).numpy()
    live = [c for c in range(16) if c not in dead]
    assert np.array_equal(after[..., live], before[..., live])
    assert after[..., dead].std() > 0
    assert np.abs(dlayer.weights[0].numpy()[:, :, dead]).max() > 0
    assert np.abs(dead_kernel_grad()).max() > 0
