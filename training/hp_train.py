"""Train the variable-rate hyperprior model ("hp") on the CPU; resumable, with a time budget.

    python -m training.hp_train --name gdn16 --transform gdn16 --minutes 600 [--threads 1]

Every step draws one rate-distortion level per patch (training.hp_model.LAMBDAS), so the one
network learns all rates. The run directory training/runs/<name>/ holds checkpoint.npz (weights,
Adam's state and the trainer state, written every --checkpoint-minutes and at the end), best.npz
(best validation loss) and curve.csv. A run with an existing checkpoint resumes it; otherwise it
starts from --init (committed hp weights) or from scratch (gdn16) / the l3ic 64c weights (l3ic8).

Validation: central 256x256 crops of the validation photos at every level; the figure compared
between runs is the mean over levels of bpp + lambda * 255^2 * MSE (the training loss), with the
rate estimated from the model's likelihoods.
"""
import argparse
import csv
import dataclasses
import json
import math
import os
import time

import numpy as np

RUNS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs")


@dataclasses.dataclass
class Recipe:
    """The live training settings."""
    transform: str = "gdn16"
    batch: int = 8
    patch: int = 128
    lr: float = 3e-4
    lr_warmup: int = 500
    clip_factor: float = 2.0       # clip the gradient norm at this x its running mean
    eval_every: int = 500
    checkpoint_minutes: float = 5.0
    val_crop: int = 256
    precision: str = "bfloat16"
    warm_lr_scale: float = 0.1     # l3ic8: the warm-started transform learns 10x slower


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="run name (training/runs/<name>/)")
    p.add_argument("--minutes", type=float, default=600.0, help="wall-clock budget of this call")
    p.add_argument("--threads", type=int, default=0, help="TF intra-op threads (0: all cores)")
    p.add_argument("--init", help="start from these weights (.npz, e.g. the committed "
                   "training/weights/l3ic_hp.npz) when the run has no checkpoint")
    p.add_argument("--save-compact", metavar="NPZ", help="at the end, also write the weights "
                   "as float16 without Adam's state (the committed format)")
    p.add_argument("--seed", type=int, default=0)
    for f in dataclasses.fields(Recipe):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    args = p.parse_args(argv)
    recipe = Recipe(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Recipe)})
    return args, recipe


@dataclasses.dataclass
class State:
    step: int = 0
    minutes: float = 0.0
    clip_ema: float = 0.0
    best_val: float = float("inf")


class Trainer:
    def __init__(self, recipe: Recipe, run_dir: str, threads: int = 0, seed: int = 0):
        import keras
        import tensorflow as tf
        from training import data, hp_model, weights

        self.tf, self.hp = tf, hp_model
        keras.utils.set_random_seed(seed)
        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        self.recipe, self.run_dir, self.state = recipe, run_dir, State()
        os.makedirs(run_dir, exist_ok=True)
        init = None
        if recipe.transform == "l3ic8":
            init, _ = weights.load_npz(weights.committed_path("64c"))
        self.model = hp_model.HyperpriorModel(recipe.transform, recipe.precision == "bfloat16",
                                              init_arrays=init)
        # warm-started transform layers (l3ic8) learn at lr x warm_lr_scale, the rest at lr
        warm = recipe.transform == "l3ic8" and recipe.warm_lr_scale != 1.0
        transform = {id(v) for net in (self.model.g_a, self.model.g_s)
                     for v in net.trainable_variables} if warm else set()
        self.groups = [[v for v in self.model.trainable_variables if id(v) not in transform]]
        if transform:
            self.groups.append([v for v in self.model.trainable_variables if id(v) in transform])
        self.variables = [v for g in self.groups for v in g]
        self.optimizers = [keras.optimizers.Adam(learning_rate=recipe.lr) for _ in self.groups]
        for opt, group in zip(self.optimizers, self.groups):
            opt.build(group)
        self.lr_scales = [1.0, recipe.warm_lr_scale][:len(self.groups)]
        self.lambdas = tf.constant(np.array(hp_model.LAMBDAS, np.float32) * 255.0 ** 2)
        print("loading images ...", flush=True)
        self.sampler = data.PatchSampler(data.load_training_images(recipe.patch), recipe.patch,
                                         seed=seed)
        self.val_images = data.load_validation_images(recipe.val_crop)
        self.rng = np.random.default_rng(seed)
        self._step = self._make_step()

    # -- checkpoints --------------------------------------------------------------------------
    def save(self, path):
        arrays = {k: v.numpy() for k, v in self.model.all_variables().items()}
        opt = {f"opt/{i}": v.numpy() for i, v in enumerate(self._optimizer_variables())}
        meta = {"meta/state": np.array(json.dumps(dataclasses.asdict(self.state))),
                "meta/recipe": np.array(json.dumps(dataclasses.asdict(self.recipe)))}
        tmp = path + ".tmp.npz"
        np.savez(tmp, **arrays, **opt, **meta)
        os.replace(tmp, path)

    def save_compact(self, path):
        """The weights as compressed float16 with the trainer state, without Adam's moments:
        what is committed (training/weights/), and what a later run resumes from."""
        arrays = {k: v.numpy().astype(np.float16) for k, v in self.model.all_variables().items()}
        meta = {"meta/state": np.array(json.dumps(dataclasses.asdict(self.state))),
                "meta/recipe": np.array(json.dumps(dataclasses.asdict(self.recipe)))}
        np.savez_compressed(path, **arrays, **meta)

    def load(self, path, with_optimizer=True):
        """Weights (and, from a checkpoint, Adam's state) of a checkpoint or compact file; the
        trainer state when the file has one."""
        with np.load(path) as f:
            for k, v in self.model.all_variables().items():
                v.assign(f[k].astype(np.float32))
            if "meta/state" in f.files:
                self.state = State(**json.loads(str(f["meta/state"])))
            if with_optimizer and "opt/0" in f.files:
                for i, v in enumerate(self._optimizer_variables()):
                    v.assign(f[f"opt/{i}"])
            else:   # fresh moments: warm the learning rate up again from here
                self.warm_from = self.state.step
        self.sampler.rng = np.random.default_rng(self.state.step)

    def _optimizer_variables(self):
        return [v for opt in self.optimizers for v in opt.variables]

    # -- one step -----------------------------------------------------------------------------
    def _make_step(self):
        tf, model, variables = self.tf, self.model, self.variables
        groups, optimizers, scales = self.groups, self.optimizers, self.lr_scales
        lambdas = self.lambdas
        pixels = float(self.recipe.patch ** 2)

        @tf.function(reduce_retracing=True)
        def step(x, level, lr, clip):
            with tf.GradientTape() as tape:
                x_hat, bits_y, bits_z = model.forward(x, level, training=True)
                mse = tf.reduce_mean(tf.square(x - x_hat), axis=[1, 2, 3])
                bpp = (bits_y + bits_z) / pixels
                loss = tf.reduce_mean(bpp + tf.gather(lambdas, level) * mse)
            grads = tape.gradient(loss, variables)
            norm = tf.linalg.global_norm(grads)
            grads, _ = tf.clip_by_global_norm(grads, clip, use_norm=norm)
            start = 0
            for group, opt, scale in zip(groups, optimizers, scales):
                opt.learning_rate.assign(lr * scale)
                opt.apply_gradients(zip(grads[start:start + len(group)], group))
                start += len(group)
            return loss, tf.reduce_mean(mse), tf.reduce_mean(bpp), norm
        return step

    warm_from = 0

    def learning_rate(self):
        r = self.recipe
        return r.lr * min(1.0, (self.state.step - self.warm_from + 1) / max(1, r.lr_warmup))

    def train_step(self):
        r, s, tf = self.recipe, self.state, self.tf
        x = self.sampler.batch(r.batch)
        level = self.rng.integers(0, len(self.hp.LAMBDAS), r.batch).astype(np.int32)
        clip = r.clip_factor * s.clip_ema if s.clip_ema > 0 else 1e9
        loss, mse, bpp, norm = self._step(tf.constant(x), tf.constant(level),
                                          tf.constant(self.learning_rate(), tf.float32),
                                          tf.constant(clip, tf.float32))
        norm = float(norm)
        if math.isfinite(norm):
            s.clip_ema = norm if s.clip_ema <= 0 else 0.98 * s.clip_ema + 0.02 * min(norm, 2 * s.clip_ema)
        s.step += 1
        return float(loss), float(mse), float(bpp)

    # -- validation ---------------------------------------------------------------------------
    def validate(self):
        """Per level: (bpp, PSNR) on the validation crops; and the mean RD loss over levels."""
        tf, hp = self.tf, self.hp
        per_level = []
        for k, lam in enumerate(hp.LAMBDAS):
            bpps, mses = [], []
            for im in self.val_images:
                x_hat, by, bz = self.model.forward(tf.constant(im[None]), tf.constant([k]),
                                                   training=False)
                x8 = np.round(np.clip(x_hat.numpy()[0], 0, 1) * 255)
                mses.append(np.mean((x8 - np.round(im * 255)) ** 2) / 255.0 ** 2)
                bpps.append(float(by[0] + bz[0]) / (im.shape[0] * im.shape[1]))
            per_level.append((float(np.mean(bpps)), float(np.mean(mses))))
        val_loss = float(np.mean([b + lam * 255 ** 2 * m
                                  for (b, m), lam in zip(per_level, hp.LAMBDAS)]))
        return val_loss, [(b, 10 * np.log10(1 / m)) for b, m in per_level]

    # -- the loop -----------------------------------------------------------------------------
    def run(self, minutes):
        r, s = self.recipe, self.state
        curve_path = os.path.join(self.run_dir, "curve.csv")
        new = not os.path.exists(curve_path)
        curve = open(curve_path, "a", newline="")
        writer = csv.writer(curve)
        if new:
            writer.writerow(["step", "minutes", "loss", "train_psnr", "train_bpp", "val_loss"]
                            + [f"{k}_{i}" for i in range(len(self.hp.LAMBDAS)) for k in ("bpp", "psnr")])
        t0 = last_ckpt = time.time()
        minutes0, stats = s.minutes, []
        while time.time() - t0 < minutes * 60:
            loss, mse, bpp = self.train_step()
            stats.append((loss, mse, bpp))
            s.minutes = minutes0 + (time.time() - t0) / 60
            if s.step % r.eval_every == 0:
                val_loss, levels = self.validate()
                l, m, b = np.mean(stats, axis=0)
                stats = []
                writer.writerow([s.step, f"{s.minutes:.2f}", f"{l:.5f}", f"{10 * np.log10(1 / m):.3f}",
                                 f"{b:.4f}", f"{val_loss:.5f}"]
                                + [f"{v:.4f}" for lv in levels for v in lv])
                curve.flush()
                print(f"step {s.step} {s.minutes:.1f} min loss {l:.4f} val {val_loss:.4f} | "
                      + " ".join(f"{b:.3f}/{p:.2f}" for b, p in levels), flush=True)
                if val_loss < s.best_val:
                    s.best_val = val_loss
                    self.save(os.path.join(self.run_dir, "best.npz"))
            if time.time() - last_ckpt > r.checkpoint_minutes * 60:
                self.save(os.path.join(self.run_dir, "checkpoint.npz"))
                last_ckpt = time.time()
        self.save(os.path.join(self.run_dir, "checkpoint.npz"))
        curve.close()


def main(argv=None):
    args, recipe = parse_args(argv)
    run_dir = os.path.join(RUNS_DIR, args.name)
    ckpt = os.path.join(run_dir, "checkpoint.npz")
    if os.path.exists(ckpt):   # a resumed run keeps its own recipe, except what the flags change
        with np.load(ckpt) as f:
            saved = json.loads(str(f["meta/recipe"]))
        recipe = Recipe(**{**saved, **{k: v for k, v in dataclasses.asdict(recipe).items()
                                       if v != getattr(Recipe, k, v) or k not in saved}})
    trainer = Trainer(recipe, run_dir, args.threads, args.seed)
    if os.path.exists(ckpt):
        trainer.load(ckpt)
        print(f"resumed {ckpt} at step {trainer.state.step}", flush=True)
    elif args.init:
        trainer.load(args.init, with_optimizer=False)
        print(f"started from {args.init} at step {trainer.state.step}", flush=True)
    trainer.run(args.minutes)
    if args.save_compact:
        trainer.save_compact(args.save_compact)
    print(f"done: step {trainer.state.step}", flush=True)


if __name__ == "__main__":
    main()
