"""Train one l3ic model on the CPU with a time budget; resumable, logs a learning curve.

    python -m training.train --channels 32 --minutes 150 [--resume] [--init-from 32c]

The defaults are the recipe chosen in docs/training.md:
- residual branches start at zero (see training.model);
- learning-rate warm-up to --lr, constant, then cosine decay over the last 30 % of the budget;
- a warm-up phase with additive uniform noise instead of rounding (--noise-steps), then hard
  rounding with a straight-through gradient;
- a per-channel soft-histogram rate estimate (matches the channel-wise entropy coder);
- rate control: lambda follows the measured rate towards --target-bpp, so every run lands at the
  intended operating point and runs are compared at equal rate;
- adaptive gradient clipping at 2x the running mean gradient norm;
- optionally an MS-SSIM term in the distortion (--ms-ssim-weight).
Checkpoints (weights + optimizer) go to training/runs/<name>/ every --checkpoint-minutes; the
learning curve to training/runs/<name>/curve.csv; the final weights to training/weights/ (committed)
when the run has the default name (e.g. 32c), else to training/runs/<name>/final.npz.
"""
import argparse
import csv
import math
import os
import time

import numpy as np

from PIL_l3ic import metrics
from training import data, model, weights

DEFAULT_TARGET_BPP = {16: 0.46, 32: 0.76, 64: 1.35}
RUNS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, choices=(16, 32, 64), default=32)
    p.add_argument("--minutes", type=float, default=150.0, help="wall-clock budget of this run")
    p.add_argument("--name", help="run name (default: <channels>c)")
    p.add_argument("--resume", action="store_true", help="continue the run's last checkpoint, "
                   "else the committed weights of this quality")
    p.add_argument("--init-from", help="warm start: a quality (e.g. 32c) or an .npz; all layers "
                   "but the two that touch the latent")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=64, help="patch side; 64 beat 128 at equal CPU")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate")
    p.add_argument("--lr-warmup", type=int, default=300, help="steps of linear lr warm-up")
    p.add_argument("--decay-fraction", type=float, default=0.7, help="final part of the budget "
                   "with cosine decay to lr/10 (a 32c run held 5e-4 for 5,500 steps, then "
                   "collapsed)")
    p.add_argument("--noise-steps", type=int, default=1000, help="steps with uniform noise "
                   "instead of rounding")
    p.add_argument("--target-bpp", type=float, help="rate target of the estimate (rate control)")
    p.add_argument("--lmbda", type=float, help="initial lambda (per bpp, MSE on [0,1]; default "
                   "2e-3, or the resumed run's); rate control moves it towards --target-bpp")
    p.add_argument("--ms-ssim-weight", type=float, default=0.03, help="distortion = MSE + this x "
                   "(1 - MS-SSIM), images on [0,1]; 0: MSE only")
    p.add_argument("--ssim-weight", type=float, default=0.01, help="adds this x (1 - SSIM) at "
                   "full resolution to the distortion")
    p.add_argument("--ssim-ramp", type=int, default=0, help="move the SSIM weight linearly from "
                   "--ssim-start to --ssim-weight over this many steps from the start (or resume) "
                   "of the run, so Adam's moment estimates follow the changing loss")
    p.add_argument("--ssim-start", type=float, default=0.0, help="SSIM weight at the ramp's start")
    p.add_argument("--ms-ssim-start", type=float, help="MS-SSIM weight at the ramp's start (moved "
                   "to --ms-ssim-weight over --ssim-ramp steps; default: no ramp)")
    p.add_argument("--rate-model", choices=("plain", "context"), default="plain",
                   help="rate estimate (training and validation bpp): 'plain' = per-channel order-0 "
                   "entropy; 'context' = entropy given the context coder's 3 neighbour contexts, "
                   "about 7 %% lower for the same latent, so --target-bpp must be lower too")
    p.add_argument("--revive-dead", type=float, default=0.0, metavar="STD",
                   help="at the start, give latent channels that are constant on every validation "
                   "crop fresh encoder filters (scaled so their latent has this standard "
                   "deviation, e.g. 0.25: few values leave 0, so little rate at first) and small "
                   "random decoder weights, so gradients reach them again (64c had 27 of 64 "
                   "channels dead since its wider warm start)")
    p.add_argument("--revive-decoder-gain", type=float, default=0.3, metavar="G",
                   help="decoder weights of revived channels: random with G x the standard "
                   "deviation of the live channels' (1e-3 absolute, ~0.02 x, let all 27 of 64c's "
                   "die again within 2,900 steps)")
    p.add_argument("--revive-free-steps", type=int, default=0, metavar="N",
                   help="revived channels' rate counts 0 at first, rising linearly to full over N "
                   "steps, so the distortion gradient can put them to use before the rate term "
                   "pulls them back to a constant")
    p.add_argument("--rate-gain", type=float, default=0.003, help="0 disables rate control")
    p.add_argument("--reset-optimizer", action="store_true", help="resume the weights but start Adam "
                   "afresh: after a change of the loss, moment estimates at the old gradient scale "
                   "make the first few hundred steps far too large")
    p.add_argument("--no-clip", action="store_true")
    p.add_argument("--rollback-db", type=float, default=2.0, help="validation PSNR this far under "
                   "the best (or a non-finite loss) reloads the best checkpoint and halves the lr")
    p.add_argument("--plain", action="store_true", help="baseline recipe: He init everywhere, no "
                   "noise phase, no warm-up, no clipping, global histogram, fixed lambda")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--patience", type=int, default=8, help="evaluations without improvement "
                   "before stopping (0: never)")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0)
    p.add_argument("--snapshot-every", type=int, default=0, metavar="N",
                   help="also keep the weights every N steps as snap_<step>.npz, to average the "
                   "last ones with training.average (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="TF intra-op threads (0: all cores)")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                   help="bfloat16: the wide layers compute in bfloat16 (float32 weights and "
                        "latent layers; ~3x faster on CPUs with AMX, slower without); "
                        "validation always runs in float32")
    args = p.parse_args(argv)
    args.name = args.name or f"{args.channels}c"
    if args.target_bpp is None:
        args.target_bpp = DEFAULT_TARGET_BPP[args.channels]
    if args.plain:
        args.noise_steps, args.lr_warmup, args.no_clip, args.rate_gain = 0, 0, True, 0.0
    return args


def latent_channels_to_keep(arrays, channels, images, patch):
    """Which latent channels of a warm-start source model to carry over, and the source's latent
    means: all of them for a wider model; for a narrower one those whose rounded latent varies
    most over 64 training patches (a proxy for the information they carry)."""
    source_channels = arrays["encoder/enc_latent/1"].shape[0]
    if source_channels <= channels:
        return list(range(source_channels)), None
    source = model.build_encoder(source_channels)
    weights.assign_model_arrays(source, model.build_decoder(source_channels), arrays)
    batch = data.PatchSampler(images, patch, seed=12345).batch(64)
    z = model.quantise(source(batch, training=False), "eval").numpy().reshape(-1, source_channels)
    keep = sorted(np.argsort(-z.std(axis=0))[:channels].tolist())
    return keep, z.mean(axis=0)


def learning_rate(args, step, elapsed_fraction, warm_from=0, scale=1.0):
    """Linear warm-up over lr_warmup steps from step warm_from (0, or where a run resumed), then
    constant, then cosine decay to lr/10 over the last decay_fraction of the time budget."""
    lr = scale * args.lr * min(1.0, (step - warm_from + 1) / max(1, args.lr_warmup))
    start = 1.0 - args.decay_fraction
    if elapsed_fraction > start:
        t = min(1.0, (elapsed_fraction - start) / args.decay_fraction)
        lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))
    return lr


def main(argv=None):
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    run_dir = os.path.join(RUNS_DIR, args.name)
    os.makedirs(run_dir, exist_ok=True)
    ckpt_path = os.path.join(run_dir, "checkpoint.npz")
    best_path = os.path.join(run_dir, "best.npz")  # best validation loss so far: the rollback point
    quality = f"{args.channels}c"

    bf16 = args.precision == "bfloat16"
    encoder = model.build_encoder(args.channels, zero_init=not args.plain, bfloat16=bf16)
    decoder = model.build_decoder(args.channels, zero_init=not args.plain, bfloat16=bf16)
    # validation in float32 (as the exported networks run): copies of the weights when training
    # in bfloat16
    eval_encoder = model.build_encoder(args.channels) if bf16 else encoder
    eval_decoder = model.build_decoder(args.channels) if bf16 else decoder
    variables = encoder.trainable_variables + decoder.trainable_variables
    optimizer = keras.optimizers.Adam(learning_rate=args.lr)
    optimizer.build(variables)

    def restore(path):
        """Weights, optimizer state and run state of a checkpoint."""
        arrays, meta = weights.load_npz(path)
        weights.assign_model_arrays(encoder, decoder, arrays)
        if not (args.reset_optimizer and path == ckpt_path):
            for v, a in zip(optimizer.variables, meta["optimizer"]):
                v.assign(a)
        clip = float(meta.get("clip_ema", "nan"))
        best = np.ravel(meta.get("best_val", np.inf)).astype(float)  # (distortion, bpp); older
        best = (best[0], best[1] if best.size > 1 else 0.0)           # checkpoints: a scalar loss
        return (int(meta["step"]), float(meta["lmbda"]), best,
                float(meta.get("best_psnr", "-inf")), clip if math.isfinite(clip) else None)

    print("loading images ...", flush=True)
    images = data.load_training_images(args.patch)
    # best_val: (distortion, bpp) of the best validation so far, compared at the current lambda
    # (rate control moves lambda, so losses at different lambdas are not comparable)
    step, lmbda, best_val, best_psnr, clip_ema = 0, 2e-3, (np.inf, 0.0), float("-inf"), None
    stale, lr_scale = 0, 1.0
    if args.resume and os.path.exists(ckpt_path):
        step, lmbda, best_val, best_psnr, clip_ema = restore(ckpt_path)
        print(f"resumed {ckpt_path} at step {step}", flush=True)
    elif args.resume and os.path.exists(weights.committed_path(quality)):
        arrays, meta = weights.load_npz(weights.committed_path(quality))
        weights.assign_model_arrays(encoder, decoder, arrays)
        step, lmbda = int(meta.get("step", 0)), float(meta.get("lmbda", lmbda))
        print(f"resumed committed weights {quality} at step {step}", flush=True)
    elif args.init_from:
        path = args.init_from if args.init_from.endswith(".npz") else weights.committed_path(args.init_from)
        arrays, _ = weights.load_npz(path)
        n = weights.assign_model_arrays(encoder, decoder, arrays, skip_latent_layers=True)
        keep, means = latent_channels_to_keep(arrays, args.channels, images, args.patch)
        weights.assign_latent_channels(encoder, decoder, arrays, keep, means)
        print(f"warm start from {path}: {n} tensors, latent channels {keep}", flush=True)
    if args.lmbda is not None:  # e.g. a resumed run with a new distortion term, whose validation
        lmbda, best_val = args.lmbda, (np.inf, 0.0)  # not comparable with the old best
    start_step = step  # the learning rate warms up from here (a resumed run warms up again)

    sampler = data.PatchSampler(images, args.patch, seed=args.seed + step)
    val_images = data.load_validation_images()
    print(f"{len(sampler.images)} training images (with scales), {len(val_images)} validation crops", flush=True)
    bpp_per_bit = args.channels / 64.0

    def rate_bits(z):
        if args.plain:  # one global histogram over all channels
            return model.soft_histogram_bits(tf.reshape(z, [-1, 1]))
        if args.rate_model == "context":
            return model.soft_histogram_bits_context(z, rate_weights)
        return model.soft_histogram_bits(z, rate_weights)

    # per-channel weight of the rate term: revived channels start rate-free (--revive-free-steps)
    rate_weights = tf.Variable(tf.ones([args.channels]), trainable=False)
    revived = []
    empirical_bits = (model.empirical_bits_context if args.rate_model == "context"
                      else model.empirical_bits)

    uses_ms_ssim = bool(args.ms_ssim_weight or args.ms_ssim_start)
    uses_ssim = bool(args.ssim_weight or args.ssim_start)

    def make_step(mode):
        @tf.function(jit_compile=False, reduce_retracing=True)
        def train_step(x, lr, lam, clip, ssim_weight, ms_ssim_weight):
            with tf.GradientTape() as tape:
                z = encoder(x, training=True)
                x_hat = decoder(model.quantise(z, mode), training=True)
                distortion, mse = model.distortion(
                    x, x_hat, ms_ssim_weight if uses_ms_ssim else None,
                    ssim_weight if uses_ssim else None, structural=mode == "hard")
                bpp = rate_bits(z) * bpp_per_bit
                loss = distortion + lam * bpp
            grads = tape.gradient(loss, variables)
            norm = tf.linalg.global_norm(grads)
            grads, _ = tf.clip_by_global_norm(grads, clip, use_norm=norm)
            optimizer.learning_rate.assign(lr)
            optimizer.apply_gradients(zip(grads, variables))
            return loss, mse, bpp, norm
        return train_step

    steps = {"noise": make_step("noise"), "hard": make_step("hard")}

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)])
    def infer(x):
        q = model.quantise(eval_encoder(x, training=False), "eval")
        return q, eval_decoder(q, training=False)

    def revive_dead_channels(target_std):
        """Channels whose rounded latent is one value on every validation crop get a fresh start
        (weights.revive_channels), their encoder filters scaled to latent std target_std."""
        latents = [encoder(im[None], training=False).numpy()[0] for im in val_images]
        rounded = [np.round(z) for z in latents]
        dead = [c for c in range(args.channels)
                if all(r[..., c].min() == r[..., c].max() == rounded[0][..., c].flat[0]
                       for r in rounded)]
        if not dead:
            print("revive: no dead channels", flush=True)
            return
        live = [c for c in range(args.channels) if c not in dead]
        live_std = float(np.std(decoder.get_layer("dec_latent").weights[0].numpy()[:, :, live]))
        weights.revive_channels(encoder, decoder, dead, np.random.default_rng(args.seed + step),
                                decoder_std=args.revive_decoder_gain * live_std)
        z = np.concatenate([encoder(im[None], training=False).numpy()[0][..., dead].reshape(-1, len(dead))
                            for im in val_images])
        gain = np.ones(args.channels, np.float32)     # bias is 0, so the latent scales with it
        gain[dead] = target_std / np.maximum(z.std(axis=0), 1e-6)
        layer = encoder.get_layer("enc_latent")
        layer.weights[0].assign(layer.weights[0].numpy() * gain)
        bias = layer.weights[1].numpy()                # centre the new latents on 0
        latent_scale = float(encoder.get_layer("latent_scale").weights[0].numpy())
        bias[dead] = -gain[dead] * z.mean(axis=0) / latent_scale
        layer.weights[1].assign(bias)
        revived.extend(dead)
        print(f"revive: {len(dead)} dead channels {dead} re-initialised (latent std {target_std}, "
              f"decoder weight std {args.revive_decoder_gain * live_std:.4f})", flush=True)

    def validate():
        """Mean PSNR, MS-SSIM, SSIM and estimated bpp on the validation crops (8-bit pixels)."""
        psnrs, ms_ssims, ssims, bpps = [], [], [], []
        if bf16:
            eval_encoder.set_weights(encoder.get_weights())
            eval_decoder.set_weights(decoder.get_weights())
        for im in val_images:
            q, x_hat = infer(im[None])
            decoded, original = np.round(x_hat[0].numpy() * 255), np.round(im * 255)
            psnrs.append(metrics.psnr(decoded, original))
            ms_ssims.append(metrics.ms_ssim(decoded, original))
            ssims.append(metrics.ssim(decoded, original))
            bits = empirical_bits(q[0].numpy().astype(np.int32))
            bpps.append(bits / (im.shape[0] * im.shape[1]))
        return tuple(float(np.mean(v)) for v in (psnrs, ms_ssims, ssims, bpps))

    def save_checkpoint(path=ckpt_path):
        weights.save_checkpoint(path, encoder, decoder, optimizer, step=step, lmbda=lmbda,
                                best_val=np.array(best_val), best_psnr=best_psnr,
                                clip_ema=clip_ema if clip_ema is not None else float("nan"))

    rollbacks = 0

    def rollback(reason):
        """Back to the best checkpoint with half the learning rate (a run that collapsed):
        (step, lmbda, best_val, best_psnr, clip_ema, lr_scale)."""
        nonlocal rollbacks
        rollbacks += 1
        if rollbacks > 5 or not os.path.exists(best_path):
            raise SystemExit(f"{reason} at step {step}; no checkpoint to roll back to")
        print(f"{reason} at step {step}: back to {best_path}, lr x {lr_scale / 2:g}", flush=True)
        return (*restore(best_path), lr_scale / 2)

    curve_path = os.path.join(run_dir, "curve.csv")
    new_curve = not os.path.exists(curve_path) or step == 0
    curve = open(curve_path, "w" if new_curve else "a", newline="")
    writer = csv.writer(curve)
    if new_curve:
        writer.writerow(["step", "minutes", "loss", "mse", "bpp_estimate", "lambda", "lr",
                         "val_psnr", "val_bpp", "val_ms_ssim", "val_ssim"])
    minutes_before = 0.0
    if not new_curve:
        with open(curve_path) as f:
            rows = list(csv.reader(f))[1:]
            minutes_before = float(rows[-1][1]) if rows else 0.0

    if args.revive_dead:
        revive_dead_channels(args.revive_dead)
    t0 = time.time()
    last_ckpt = t0
    budget = args.minutes * 60
    stats = []
    while True:
        elapsed = time.time() - t0
        if elapsed > budget:
            break
        lr = learning_rate(args, step, elapsed / budget, warm_from=start_step, scale=lr_scale)
        mode = "noise" if step < args.noise_steps else "hard"
        clip = 1e9 if (args.no_clip or clip_ema is None) else 2.0 * clip_ema
        ramp = min(1.0, (step - start_step + 1) / max(1, args.ssim_ramp))
        if revived and 0 < args.revive_free_steps and step - start_step <= args.revive_free_steps:
            w = np.ones(args.channels, np.float32)
            w[revived] = min(1.0, (step - start_step) / args.revive_free_steps)
            rate_weights.assign(w)
        ssim_weight = args.ssim_start + ramp * (args.ssim_weight - args.ssim_start)
        ms_start = args.ms_ssim_weight if args.ms_ssim_start is None else args.ms_ssim_start
        ms_ssim_weight = ms_start + ramp * (args.ms_ssim_weight - ms_start)
        loss, mse, bpp, norm = steps[mode](tf.constant(sampler.batch(args.batch)),
                                           tf.constant(lr, tf.float32), tf.constant(lmbda, tf.float32),
                                           tf.constant(clip, tf.float32),
                                           tf.constant(ssim_weight, tf.float32),
                                           tf.constant(ms_ssim_weight, tf.float32))
        norm = float(norm)
        if math.isfinite(norm):
            clip_ema = norm if clip_ema is None else 0.98 * clip_ema + 0.02 * min(norm, 2.0 * clip_ema)
        bpp = float(bpp)
        if args.rate_gain > 0:
            lmbda *= math.exp(args.rate_gain * (bpp - args.target_bpp) / args.target_bpp)
            lmbda = min(max(lmbda, 1e-5), 1.0)
        step += 1
        if not math.isfinite(float(loss)):
            step, lmbda, best_val, best_psnr, clip_ema, lr_scale = rollback("loss is not finite")
            stats = []
            continue
        stats.append((float(loss), float(mse), bpp))
        if args.snapshot_every and step % args.snapshot_every == 0:
            weights.save_snapshot(os.path.join(run_dir, f"snap_{step}.npz"), encoder, decoder,
                                  step=step, lmbda=lmbda)
        if step % args.eval_every == 0 or time.time() - t0 > budget:
            val_psnr, val_ms_ssim, val_ssim, val_bpp = validate()
            l, m, b = np.mean(stats, axis=0)
            stats = []
            minutes = minutes_before + (time.time() - t0) / 60
            writer.writerow([step, f"{minutes:.2f}", f"{l:.6f}", f"{m:.6f}", f"{b:.4f}", f"{lmbda:.3e}",
                             f"{lr:.2e}", f"{val_psnr:.3f}", f"{val_bpp:.4f}", f"{val_ms_ssim:.5f}", f"{val_ssim:.5f}"])
            curve.flush()
            print(f"step {step} {minutes:.1f} min  loss {l:.5f} train-psnr {10*np.log10(1/m):.2f} "
                  f"bpp-est {b:.3f} lambda {lmbda:.2e} lr {lr:.1e} | val psnr {val_psnr:.2f} "
                  f"ms-ssim {val_ms_ssim:.4f} ssim {val_ssim:.4f} bpp {val_bpp:.3f}", flush=True)
            if val_psnr < best_psnr - args.rollback_db:
                step, lmbda, best_val, best_psnr, clip_ema, lr_scale = rollback(
                    f"validation PSNR fell to {val_psnr:.2f} dB (best {best_psnr:.2f})")
                continue
            val_distortion = (10 ** (-val_psnr / 10) + args.ms_ssim_weight * (1 - val_ms_ssim)
                              + args.ssim_weight * (1 - val_ssim))
            best_psnr = max(best_psnr, val_psnr)
            if val_distortion + lmbda * val_bpp < best_val[0] + lmbda * best_val[1]:
                best_val, stale = (val_distortion, val_bpp), 0
                save_checkpoint(best_path)
            else:
                stale += 1
                if args.patience and stale >= args.patience and step - start_step > 2000:
                    print("validation loss stopped improving: stopping", flush=True)
                    break
        if time.time() - last_ckpt > args.checkpoint_minutes * 60:
            save_checkpoint()
            last_ckpt = time.time()
    save_checkpoint()
    # a production run (default name) updates the committed weights; an experiment keeps its own
    path = (weights.committed_path(quality) if args.name == quality
            else os.path.join(run_dir, "final.npz"))
    weights.save_weights(path, weights.model_arrays(encoder, decoder), step=step, lmbda=lmbda,
                         channels=args.channels)
    print(f"done: {step} steps; weights in {path}", flush=True)


if __name__ == "__main__":
    main()
