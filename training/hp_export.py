"""Export a trained "hp" model (training.hp_model) to the files the codec runs.

    python -m training.hp_export --source training/runs/<run>/best.npz [--out-dir tflite_models]

Writes, for model name l3ic_hp:
  l3ic_hp_encoder.tflite   pixels 0..255 (1, H, W, 3) -> y (1, H/s, W/s, M), unscaled latent
  l3ic_hp_hyper_encoder.tflite   y_s (gained latent) -> z (float; the codec rounds)
  l3ic_hp_decoder.tflite   y_hat (latent, inverse gain applied) -> pixels, unclipped
  l3ic_hp_hyper.npz        the integer hyper-synthesis (PIL_l3ic.hyperprior) and the tables:
      y_counts (classes, S) normalised counts of the scale classes, z_counts (nz, S_z) the
      per-channel z tables, z_offset (nz,) integers subtracted from z before coding,
      log_gain / log_inverse_gain (levels, M) float32
  l3ic_hp.json             stride, channels, classes, table logs, fingerprint, variant
"""
import argparse
import json
import math
import os

import numpy as np

from training import hp_model

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tflite_models")
CLASSES = 64
TABLE_LOG = 12
Y_ESCAPE = 127           # y residuals |r| <= Y_ESCAPE may have table entries (S = 256)
Z_ESCAPE = 15
# latent cells of context around a window's core that make tiled inference equal whole-image
# inference (up to float rounding): gdn16's four stride-2 5x5 layers see 3 cells, its synthesis
# 2; l3ic8 as in PIL_l3ic.codec
MARGIN = {"gdn16": 3, "l3ic8": 5}
HIDDEN_HEADROOM = 2.0    # hidden activation range = HEADROOM x the largest calibration value


def load(path, transform=None):
    """A float32 HyperpriorModel with the weights of a trainer checkpoint / best.npz."""
    with np.load(path) as f:
        recipe = json.loads(str(f["meta/recipe"])) if "meta/recipe" in f.files else {}
        m = hp_model.HyperpriorModel(transform or recipe.get("transform", "gdn16"))
        for k, v in m.all_variables().items():
            v.assign(f[k].astype(np.float32))
    return m


def class_sigmas(classes=CLASSES):
    """Scale of each class: log-spaced over [SCALE_MIN, SCALE_MAX]; and the log step."""
    lo, hi = math.log(hp_model.SCALE_MIN), math.log(hp_model.SCALE_MAX)
    step = (hi - lo) / (classes - 1)
    return np.exp(lo + step * np.arange(classes)), lo, step


_ndtr = np.vectorize(lambda t: 0.5 * math.erfc(-t / math.sqrt(2.0)))


def gaussian_pmfs(sigmas, escape=Y_ESCAPE):
    """(K, 2E+2) probabilities of round(N(0, sigma)) at -E..E, and the escape (the two tails)."""
    v = np.arange(-escape, escape + 1)
    upper = _ndtr((v[None] + 0.5) / sigmas[:, None])
    lower = _ndtr((v[None] - 0.5) / sigmas[:, None])
    p = upper - lower
    tail = np.maximum(1.0 - p.sum(axis=1, keepdims=True), 0.0)
    return np.concatenate([p, tail], axis=1)


def normalize(pmf, table_log=TABLE_LOG):
    """Probabilities (rows; the last column is the escape) -> integer counts summing to
    2^table_log, chosen by the coder's own normalisation for the lowest expected cost, value
    symbols allowed a count of 0 (they are then escaped)."""
    from PIL_l3ic import _fse
    pmf = np.asarray(pmf, np.float64)
    return _fse.normalize_counts(pmf / pmf.sum(axis=1, keepdims=True), table_log,
                                 min_count=0).astype(np.int64)


def quantise_hyper(model, z_samples):
    """The integer hyper-synthesis arrays (PIL_l3ic.hyperprior) of model.h_s; hidden activation
    ranges calibrated on z_samples (a list of (h, w, nz) rounded z)."""
    from PIL_l3ic import hyperprior
    convs = [l for l in model.h_s.layers if l.__class__.__name__ == "Conv2D"]
    # calibration: the largest value after each hidden ReLU
    import keras
    probes = keras.Model(model.h_s.input, [c.output for c in convs[:-1]])
    peaks = np.zeros(len(convs) - 1)
    for z in z_samples:
        outs = probes(z[None].astype(np.float32))
        peaks = np.maximum(peaks, [float(np.max(o)) for o in outs])
    out = {}
    s_in = 1.0
    for i, conv in enumerate(convs):
        kernel, bias = (w.numpy().astype(np.float64) for w in conv.weights)
        kernel = kernel.reshape(-1, kernel.shape[-1])
        s_w = np.maximum(np.abs(kernel).max(axis=0), 1e-12) / hyperprior.WEIGHT_MAX
        out[f"layer{i}_kernel"] = np.round(kernel / s_w).astype(np.int16)
        out[f"layer{i}_bias"] = np.round(bias / (s_in * s_w)).astype(np.int64)
        if i < len(convs) - 1:
            s_act = HIDDEN_HEADROOM * max(peaks[i], 1e-6) / hyperprior.ACT_MAX
            out[f"layer{i}_requant"] = s_in * s_w / s_act
            s_in = s_act
        else:
            scale = s_in * s_w
    m = model.m
    _, lo, step = class_sigmas()
    out["mean_mul"] = scale[:m]
    out["class_mul"] = scale[m:] / step
    out["class_add"] = np.full(m, -lo / step + 0.5)
    out["meta"] = np.array([len(convs), m, CLASSES, hyperprior.ACT_MAX], np.int64)
    return out


def z_tables(model):
    """Per-channel z tables: integer offset (the median) and counts over offset -E..+E, escape."""
    import tensorflow as tf
    nz = model.nz
    grid = np.arange(-200, 201, dtype=np.float32)
    v = tf.constant(np.broadcast_to(grid, (nz, 1, grid.size)))
    cdf = tf.sigmoid(model.density.logits_cdf(v)).numpy()[:, 0]        # (nz, 401)
    offset = np.array([grid[np.searchsorted(c, 0.5)] for c in cdf]).astype(np.int64)
    zs = np.arange(-Z_ESCAPE, Z_ESCAPE + 1, dtype=np.float32)
    z = (offset[:, None] + zs[None]).astype(np.float32)                # (nz, 2E+1)
    lik = model.density.likelihood(tf.constant(z.T[None, None]))       # (1, 1, 2E+1, nz)
    p = np.transpose(lik.numpy()[0, 0])                                # (nz, 2E+1)
    tail = np.maximum(1 - p.sum(1, keepdims=True), 1e-9)
    return offset, normalize(np.concatenate([p, tail], axis=1))


def tflite_networks(model, variant="float32"):
    """{role: TFLite bytes} of the encoder, hyper-encoder and decoder (dynamic H and W)."""
    import tensorflow as tf
    from training.export import convert
    m = model.m
    fns = {"encoder": (tf.function(lambda x: model.g_a(x / 255.0, training=False)), 3, variant),
           "hyper_encoder": (tf.function(lambda y: model.h_a(y, training=False)), m, variant),
           "decoder": (tf.function(_pixel_decoder(model)), m, variant)}
    return {role: convert(fn, tf.TensorSpec([1, None, None, c], tf.float32), v)
            for role, (fn, c, v) in fns.items()}


def _pixel_decoder(model):
    """latent -> pixel values: the sub-pixel g_s for gdn16, else 255 g_s."""
    if model.transform == "gdn16":
        net = deploy_synthesis(model)
        return lambda y: net(y, training=False)
    return lambda y: 255.0 * model.g_s(y, training=False)


def calibration_z(model, count=12, size=256):
    """Rounded z of training crops at every level (for the hidden activation ranges)."""
    from training import data
    import tensorflow as tf
    sampler = data.PatchSampler(data.load_training_images(size), size, seed=777)
    out = []
    for k in range(len(hp_model.LAMBDAS)):
        x = sampler.batch(max(1, count // len(hp_model.LAMBDAS)) + 1)
        gain = tf.exp(model.log_gain[k])
        z = model.h_a(model.g_a(x, training=False) * gain, training=False)
        out.extend(np.round(z.numpy()))
    return out


def export(source, out_dir=OUT_DIR, variant="float32", name="l3ic_hp"):
    from training import weights
    model = load(source)
    arrays = {k: v.numpy() for k, v in model.all_variables().items()}
    fingerprint = weights.fingerprint({**arrays, "variant": np.frombuffer(variant.encode(), np.uint8)})
    os.makedirs(out_dir, exist_ok=True)
    files = {}
    for role, blob in tflite_networks(model, variant).items():
        files[role] = f"{name}_{role}.tflite"
        with open(os.path.join(out_dir, files[role]), "wb") as f:
            f.write(blob)
    hyper = quantise_hyper(model, calibration_z(model))
    z_offset, z_counts = z_tables(model)
    hyper.update(y_counts=normalize(gaussian_pmfs(class_sigmas()[0])), z_counts=z_counts,
                 z_offset=z_offset, log_gain=model.log_gain.numpy(),
                 log_inverse_gain=model.log_inverse_gain.numpy())
    files["hyper"] = f"{name}_hyper.npz"
    np.savez_compressed(os.path.join(out_dir, files["hyper"]), **hyper)
    with np.load(source) as f:
        state = json.loads(str(f["meta/state"])) if "meta/state" in f.files else {}
    info = {"name": name, "transform": model.transform, "stride": model.stride,
            "margin": MARGIN[model.transform], "train_steps": int(state.get("step", 0)),
            "channels": model.m, "z_channels": model.nz, "classes": CLASSES,
            "table_log": TABLE_LOG, "y_escape": Y_ESCAPE, "z_escape": Z_ESCAPE,
            "levels": len(hp_model.LAMBDAS), "lambdas": list(hp_model.LAMBDAS),
            "fingerprint": fingerprint, "variant": variant, **files}
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    print(f"{name}: {variant}, fingerprint {fingerprint}", flush=True)
    return info


def save_weights(source, path):
    """The weights of a checkpoint as compressed float16 with its state and recipe, without
    Adam's moments: the committed format (training/weights/l3ic_hp.npz), which hp_train --init
    resumes from."""
    with np.load(source) as f:
        keys = [k for k in f.files if not k.startswith(("opt/", "meta/"))]
        arrays = {k: f[k].astype(np.float16) for k in keys}
        meta = {k: f[k] for k in f.files if k.startswith("meta/")}
    np.savez_compressed(path, **arrays, **meta)
    print(f"weights: {path}, {os.path.getsize(path)} bytes", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="a trainer checkpoint or best.npz")
    p.add_argument("--out-dir", default=OUT_DIR)
    p.add_argument("--variant", default="float32", choices=("float32", "int8"))
    p.add_argument("--name", default="l3ic_hp")
    p.add_argument("--save-weights", metavar="NPZ", help="also write the weights in the "
                   "committed format (float16, no optimizer state) to NPZ")
    args = p.parse_args(argv)
    export(args.source, args.out_dir, args.variant, args.name)
    if args.save_weights:
        save_weights(args.source, args.save_weights)


# transposed 5x5 stride-2 "same" conv = 3x3 conv to 4C outputs + depth-to-space: for output
# phase p and input offset d (input j + d feeds output 2j + p), the kernel tap used
_TAP = {(0, 0): 1, (0, -1): 3, (1, 1): 0, (1, 0): 2, (1, -1): 4}


def subpixel_kernel(kernel, bias):
    """Keras Conv2DTranspose(k=5, s=2, "same") weights (5, 5, out, in) -> the equivalent 3x3
    Conv2D weights (3, 3, in, 4 out) and bias, to be followed by depth-to-space (TF's DCR
    order). TFLite runs the latter several times faster (XNNPACK delegates it)."""
    _, _, cout, cin = kernel.shape
    k3 = np.zeros((3, 3, cin, 4 * cout), kernel.dtype)
    for (py, dy), ky in _TAP.items():
        for (px, dx), kx in _TAP.items():
            phase = py * 2 + px
            k3[dy + 1, dx + 1, :, phase * cout:(phase + 1) * cout] = kernel[ky, kx].T
    return k3, np.tile(bias, 4)


def deploy_synthesis(model):
    """g_s of a gdn16 model rebuilt with sub-pixel convolutions, outputting pixel values
    (255 (t + 1) / 2 folded into the last convolution), unclipped."""
    import keras
    from keras import layers
    src = model.g_s
    y_in = keras.Input((None, None, model.m), name="latent")
    x = y_in
    deconvs = [l for l in src.layers if isinstance(l, layers.Conv2DTranspose)]
    for i, deconv in enumerate(deconvs):
        k3, b = subpixel_kernel(*(w.numpy() for w in deconv.weights))
        if i == len(deconvs) - 1:
            k3, b = k3 * 127.5, b * 127.5 + 127.5
        conv = layers.Conv2D(k3.shape[-1], 3, 1, "same", name=f"gs_conv{i}")
        x = hp_model.DepthToSpace(name=f"gs_d2s{i}")(conv(x))
        conv.set_weights([k3, b])
        if i < len(deconvs) - 1:
            igdn = hp_model.GDN(inverse=True, name=f"gs_igdn{i}")
            x = igdn(x)
            igdn.set_weights([w.numpy() for w in src.get_layer(f"gs_igdn{i}").weights])
    return keras.Model(y_in, x, name="g_s_deploy")


if __name__ == "__main__":
    main()
