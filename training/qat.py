"""Quantisation-aware fine-tuning (QAT) for the full-integer ("static") int8 TFLite export.

    python -m training.qat --quality 32c --source training/runs/32t/best.npz --steps 800 \
        --out training/runs/32c_qat/qat.npz

The forward pass simulates what TFLite's full-integer int8 conversion does to the networks
(training/export.py, variant "int8-static"), with straight-through gradients:
- weights: per-output-channel symmetric int8 (scale max|w| / 127), as the converter stores them;
- activations: per-tensor asymmetric 8 bits over a fixed [min, max] range (0 included) on every
  tensor the converter quantises: each convolution, LeakyReLU, residual Add and Scale output,
  the encoder's latent (before the codec rounds it) and the decoder's input (the integer latent).
  Depth-to-space only moves values (TFLite keeps its input's parameters); the encoder's input
  (8-bit pixels) quantises without loss and is left alone. As the converter does (seen in its
  output), the second convolution of a residual branch takes its Add's range, and the latent
  scales are folded into the adjacent convolutions (FOLDED).
- ranges: min/max of the float networks over CALIBRATION crops of the training photos, the way
  the converter calibrates with the same crops at export (`calibration_crops` is used by both),
  re-measured every --calibrate-every steps as the weights move.
The loss is training.train's (MSE + MS-SSIM and SSIM terms + lambda x bpp, lambda from the
source checkpoint, hard rounding with a straight-through gradient), at a low learning rate with
training.train's cosine decay to lr/10 over the run, and Adam continues from the source's
optimizer state when it has one (a run checkpoint such as best.npz): a fresh Adam moves every
weight by about lr per step at first, which cost 0.6 dB in float32 within 200 steps at 3e-5.
"""
import argparse
import os
import time

import numpy as np

from training import data, model, train, weights

CALIBRATION_CROPS, CALIBRATION_SIZE, CALIBRATION_SEED = 32, 256, 0
NOT_REQUANTISED = ("InputLayer", "DepthToSpace", "Lambda")  # no tensor of their own in TFLite
# the converter folds the latent scale into the encoder's last convolution (one output tensor,
# latent_scale's) and the decoder's inverse scale into its first (the quantised input feeds it)
FOLDED = ("enc_latent", "inverse_scale")


def calibration_crops(images, n=CALIBRATION_CROPS, size=CALIBRATION_SIZE, seed=CALIBRATION_SEED):
    """n deterministic size x size crops (float32 [0,1], shape (1, size, size, 3)) of training
    images (never validation or Kodak): the converter's representative dataset and the QAT
    range calibration set."""
    rng = np.random.default_rng(seed)
    usable = [im for im in images if min(im.shape[:2]) >= size]
    out = []
    for k in rng.choice(len(usable), n):
        im = usable[k]
        y, x = (rng.integers(0, s - size + 1) for s in im.shape[:2])
        out.append((im[y:y + size, x:x + size].astype(np.float32) / 255.0)[None])
    return out


def fake_quant_weights(w):
    """Per-output-channel (last axis) symmetric int8 weights [-127, 127], straight-through."""
    import tensorflow as tf

    m = tf.stop_gradient(tf.reduce_max(tf.abs(tf.reshape(w, [-1, w.shape[-1]])), axis=0))
    m = tf.maximum(m, 1e-8)
    return tf.quantization.fake_quant_with_min_max_vars_per_channel(w, -m, m, num_bits=8,
                                                                    narrow_range=True)


def fake_quant_activation(x, lo, hi):
    """Per-tensor asymmetric 8-bit quantisation over [lo, hi] (widened to hold 0, zero point
    nudged onto the grid, as TFLite does); gradient passes inside the range, 0 outside."""
    import tensorflow as tf

    return tf.quantization.fake_quant_with_min_max_vars(x, tf.minimum(lo, 0.0),
                                                        tf.maximum(hi, 0.0), num_bits=8)


class QuantSim:
    """A Keras functional model (encoder or decoder) run op by op with fake quantisation.

    Shares the model's variables. Modes: "float" (the plain model), "quant" (weights and
    activations fake-quantised with the current ranges), "weights" (weights only: what the
    dynamic-range int8 export does, whose activations XNNPACK quantises per pixel at run time),
    "calibrate" (float, and also returns every quantised tensor's (min, max))."""

    def __init__(self, keras_model, quantise_input):
        import tensorflow as tf

        self.model, self.quantise_input = keras_model, quantise_input
        names = ["input"] if quantise_input else []
        names += [l.name for l in keras_model.layers
                  if type(l).__name__ not in NOT_REQUANTISED and l.name not in FOLDED]
        # a residual branch's last convolution is quantised with its Add's parameters
        self.alias = {n[:-len("_add")] + "_conv2": n for n in names if n.endswith("_add")}
        self.names = [n for n in names if n not in self.alias]
        self.ranges = tf.Variable(tf.zeros([len(self.names), 2]), trainable=False, name="qat_ranges")

    def __call__(self, x, mode="quant"):
        import keras
        import tensorflow as tf

        index = {n: i for i, n in enumerate(self.names)}
        index.update({a: index[n] for a, n in self.alias.items()})
        seen = {}

        def act(name, y):
            if mode == "calibrate":
                if name not in self.alias:  # (the Add's range is the one that counts)
                    seen[name] = tf.stack([tf.reduce_min(y), tf.reduce_max(y)])
            elif mode == "quant":
                r = self.ranges[index[name]]
                y = fake_quant_activation(y, r[0], r[1])
            return y

        def call(op, *args, **kwargs):
            kwargs.pop("training", None)
            if mode in ("quant", "weights") and isinstance(op, keras.layers.Conv2D):
                y = tf.nn.conv2d(args[0], fake_quant_weights(op.kernel), strides=op.strides,
                                 padding=op.padding.upper()) + op.bias
            else:
                y = op(*args, **kwargs)
            return y if op.name not in index else act(op.name, y)

        if self.quantise_input:
            x = act("input", x)
        # Keras 3's functional-graph runner (what clone_model's call_function uses), private API:
        # tests/test_qat.py checks that mode "float" reproduces the model exactly
        y = self.model._run_through_graph(x, operation_fn=lambda op: op, call_fn=call)
        return (y, tf.stack([seen[n] for n in self.names])) if mode == "calibrate" else y


def _min_max(sim, inputs):
    """Per-tensor (min, max) of sim's float network over inputs, and its outputs."""
    import tensorflow as tf

    channels = sim.model.input.shape[-1]
    fn = tf.function(lambda x: sim(x, "calibrate"),
                     input_signature=[tf.TensorSpec([1, None, None, channels], tf.float32)])
    ranges, outputs = [], []
    for x in inputs:
        y, r = fn(tf.constant(x))
        ranges.append(r.numpy())
        outputs.append(y)
    ranges = np.stack(ranges)
    return np.stack([ranges[:, :, 0].min(axis=0), ranges[:, :, 1].max(axis=0)], axis=1), outputs


def calibrate(enc_sim, dec_sim, crops):
    """Set both networks' activation ranges to the float networks' min/max over the crops, the
    decoder's on the rounded latents of the float encoder (export's representative data)."""
    ranges, latents = _min_max(enc_sim, crops)
    enc_sim.ranges.assign(ranges)
    ranges, _ = _min_max(dec_sim, [model.quantise(z, "eval").numpy() for z in latents])
    dec_sim.ranges.assign(ranges)


def representative_latents(encoder, crops):
    """The decoder's representative dataset: rounded float-encoder latents of the crops."""
    return [model.quantise(encoder(x, training=False), "eval").numpy() for x in crops]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quality", default="32c", choices=("16c", "32c", "64c"))
    p.add_argument("--source", help=".npz to fine-tune (default: the committed weights)")
    p.add_argument("--out", required=True, help="where the fine-tuned weights go (.npz, float32 "
                   "with meta, loadable by training.export --source)")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--lr", type=float, default=2e-5, help="peak learning rate")
    p.add_argument("--lr-warmup", type=int, default=50, help="steps of linear lr warm-up")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--halves", choices=("both", "encoder", "decoder"), default="both",
                   help="which networks run fake-quantised (the export variant to aim at: "
                   "int8-static, int8-static-encoder or int8-static-decoder)")
    p.add_argument("--dynamic", action="store_true", help="aim at the dynamic-range int8 "
                   "export (variant int8): fake-quantise the weights of both networks only")
    p.add_argument("--calibrate-every", type=int, default=100)
    p.add_argument("--ms-ssim-weight", type=float, default=0.03)
    p.add_argument("--ssim-weight", type=float, default=0.01)
    p.add_argument("--lmbda", type=float, help="default: the source checkpoint's lambda")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--threads", type=int, default=1, help="TF intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    channels = int(args.quality[:-1])
    encoder, decoder = model.build_encoder(channels), model.build_decoder(channels)
    arrays, meta = weights.load_npz(args.source or weights.committed_path(args.quality))
    weights.assign_model_arrays(encoder, decoder, arrays)
    lmbda = args.lmbda if args.lmbda is not None else float(meta.get("lmbda", 2e-3))
    enc_sim, dec_sim = QuantSim(encoder, False), QuantSim(decoder, True)
    variables = encoder.trainable_variables + decoder.trainable_variables
    optimizer = keras.optimizers.Adam(learning_rate=args.lr)
    optimizer.build(variables)
    if meta["optimizer"]:   # same variable order as training.train
        for v, a in zip(optimizer.variables, meta["optimizer"]):
            v.assign(a)
        print(f"Adam state restored (iteration {int(optimizer.iterations.numpy())})", flush=True)
    else:
        print("no optimizer state in the source: a fresh Adam moves every weight by ~lr per step "
              "at first (prefer a run checkpoint, e.g. training/runs/<name>/best.npz)", flush=True)
    args.decay_fraction = 1.0   # training.train.learning_rate: cosine decay over the whole run
    print("loading images ...", flush=True)
    images = data.load_training_images(args.patch)
    crops = calibration_crops(images)
    sampler = data.PatchSampler(images, args.patch, seed=args.seed + 1000)
    bpp_per_bit = channels / 64.0

    enc_mode = "quant" if args.halves in ("both", "encoder") else "float"
    dec_mode = "quant" if args.halves in ("both", "decoder") else "float"
    if args.dynamic:
        enc_mode = dec_mode = "weights"

    @tf.function(reduce_retracing=True)
    def train_step(x, lr):
        with tf.GradientTape() as tape:
            z = enc_sim(x, enc_mode)
            x_hat = dec_sim(model.quantise(z, "hard"), dec_mode)
            distortion, mse = model.distortion(x, x_hat, args.ms_ssim_weight, args.ssim_weight)
            bpp = model.soft_histogram_bits(z) * bpp_per_bit
            loss = distortion + lmbda * bpp
        grads = tape.gradient(loss, variables)
        optimizer.learning_rate.assign(lr)
        optimizer.apply_gradients(zip(grads, variables))
        return loss, mse, bpp

    def save(step):
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        weights.save_checkpoint(args.out, encoder, decoder, optimizer, lmbda=lmbda,
                                step=int(meta.get("step", 0)) + step, qat_steps=step,
                                channels=channels)

    t0, stats = time.time(), []
    for step in range(args.steps):
        if step % args.calibrate_every == 0 and not args.dynamic:
            tc = time.time()
            calibrate(enc_sim, dec_sim, crops)
            print(f"step {step}: ranges calibrated ({time.time() - tc:.0f} s); latent "
                  f"[{enc_sim.ranges[-1, 0].numpy():.2f}, {enc_sim.ranges[-1, 1].numpy():.2f}]",
                  flush=True)
        lr = train.learning_rate(args, step, step / args.steps)
        loss, mse, bpp = train_step(tf.constant(sampler.batch(args.batch)), tf.constant(lr, tf.float32))
        stats.append((float(loss), float(mse), float(bpp)))
        if (step + 1) % args.log_every == 0:
            l, m, b = np.mean(stats, axis=0)
            stats = []
            print(f"step {step + 1} {(time.time() - t0) / 60:.1f} min loss {l:.5f} "
                  f"psnr {10 * np.log10(1 / m):.2f} bpp-est {b:.3f}", flush=True)
        if (step + 1) % args.save_every == 0:
            save(step + 1)
    save(args.steps)
    print(f"done: {args.steps} QAT steps in {(time.time() - t0) / 60:.1f} min; {args.out}", flush=True)


if __name__ == "__main__":
    main()
