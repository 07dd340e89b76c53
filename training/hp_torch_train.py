"""Train the "gdn16" hp model in PyTorch (a lent GPU machine: no TensorFlow there) and write the
weights in hp_train's Keras checkpoint layout.

    python -m training.hp_torch_train --data gpu_data --init gpu_data/init.npz \
        --out $OUT/hp_gpu.npz --minutes 8 [--batch 16 --patch 256 --lr 3e-4]
    python -m training.hp_torch_train --validate NPZ     # hp_train's validation, on the CPU

The step is hp_train's: one random level per patch, loss = mean(bpp + lambda * 255^2 * MSE),
the gradient's global norm clipped at clip_factor x its running mean, Adam (Keras' epsilon
1e-7), the learning rate warmed up over lr_warmup steps from the step the weights come with
(Adam's moments start fresh, as hp_train does from a compact file). One deviation: a step whose
gradient norm is not finite applies a zero gradient instead of NaNs. bf16 as hp_train's
precision "bfloat16": the g_a / g_s convolutions but the last ones in bfloat16, the rest in
float32 (TF32 matrix units allowed on the GPU).

The images (training.gpu_data) live on the device as uint8; a batch is one gather (random
image in proportion to area, random crop, random horizontal / vertical flips). --minutes is
the wall-clock budget of the whole process, loading included; the weights are written to --out
every --save-minutes and at the end (float16, compressed: a float32 file is ~18 MB, over what a
device call brings back per file; --out-dtype float32 where that does not matter).
"""
import argparse
import dataclasses
import math
import os
import time

import numpy as np
import torch

from training import hp_torch
from training.hp_train import Recipe, State

T0 = time.time()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="gpu_data", help="folder written by training.gpu_data")
    p.add_argument("--init", help="Keras-layout npz to start from (else Keras' initialisers)")
    p.add_argument("--out", help="Keras-layout npz to write")
    p.add_argument("--out-dtype", choices=("float16", "float32"), default="float16")
    p.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget, loading included")
    p.add_argument("--save-minutes", type=float, default=2.0)
    p.add_argument("--print-seconds", type=float, default=30.0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--lr-warmup", type=int, default=500)
    p.add_argument("--clip-factor", type=float, default=2.0)
    p.add_argument("--precision", choices=("bfloat16", "float32"), default="bfloat16")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (eager if "
                   "compiling fails)")
    p.add_argument("--max-steps", type=int, default=0,
                   help="stop after this many steps of this call (0: no limit)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--validate", metavar="NPZ", help="only report hp_train's validation figure "
                   "for these weights (../shared/data/photos/val, float32, CPU)")
    return p.parse_args(argv)


class GpuPatchSampler:
    """data.PatchSampler on the device: the images concatenated into one uint8 buffer, a batch
    gathered by one indexing kernel; randomness from a device generator (no host sync)."""

    def __init__(self, images, patch, device, seed=0):
        self.patch, self.device = patch, device
        sizes = [im.size for im in images]
        self.buffer = torch.from_numpy(np.concatenate([im.reshape(-1) for im in images])).to(device)
        self.base = torch.tensor(np.cumsum([0] + sizes[:-1]), dtype=torch.int64, device=device)
        self.h = torch.tensor([im.shape[0] for im in images], dtype=torch.int64, device=device)
        self.w = torch.tensor([im.shape[1] for im in images], dtype=torch.int64, device=device)
        self.p = (self.h * self.w).double() / float((self.h * self.w).sum())
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.ramp = torch.arange(patch, device=device)
        self.channels = torch.arange(3, device=device)

    def batch(self, size):
        """(size, 3, patch, patch) float32 in [0, 1]."""
        P, g = self.patch, self.gen
        k = torch.multinomial(self.p, size, replacement=True, generator=g)
        h, w = self.h[k], self.w[k]
        y0 = (torch.rand(size, device=self.device, generator=g) * (h - P + 1)).long()
        x0 = (torch.rand(size, device=self.device, generator=g) * (w - P + 1)).long()
        flips = torch.rand(size, 2, device=self.device, generator=g) < 0.5
        rows = torch.where(flips[:, :1], P - 1 - self.ramp, self.ramp) + y0[:, None]   # (B, P)
        cols = torch.where(flips[:, 1:], P - 1 - self.ramp, self.ramp) + x0[:, None]
        idx = (self.base[k][:, None, None, None] + self.channels
               + (rows[:, :, None, None] * w[:, None, None, None] + cols[:, None, :, None]) * 3)
        x = self.buffer[idx]                                          # (B, P, P, 3) uint8
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        return x.contiguous(memory_format=torch.channels_last)


class TorchTrainer:
    def __init__(self, args, images=None):
        self.args, dev = args, torch.device(args.device)
        torch.manual_seed(args.seed)
        bf16 = args.precision == "bfloat16"
        if args.init:
            self.model = hp_torch.model_from_keras_npz(args.init, bf16=bf16)
            state, recipe = hp_torch.load_meta(args.init)
        else:
            self.model, state, recipe = hp_torch.HyperpriorTorch(bf16=bf16), {}, {}
        self.model.to(dev).train()
        if dev.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        fields = {f.name for f in dataclasses.fields(State)}
        self.state = State(**{k: v for k, v in state.items() if k in fields})
        self.state.best_val = float("inf")      # new weights: no validation figure yet
        self.warm_from = self.state.step
        rfields = {f.name for f in dataclasses.fields(Recipe)}
        self.recipe = Recipe(**{k: v for k, v in recipe.items() if k in rfields})
        self.recipe = dataclasses.replace(self.recipe, transform="gdn16", batch=args.batch,
                                          patch=args.patch, lr=args.lr, lr_warmup=args.lr_warmup,
                                          clip_factor=args.clip_factor, precision=args.precision)
        self.params = list(self.model.parameters())
        fused = dev.type == "cuda"
        self.opt = torch.optim.Adam(self.params, lr=args.lr, eps=1e-7, fused=fused)
        self.lambdas = torch.tensor(hp_torch.LAMBDAS, device=dev) * 255.0 ** 2
        self.clip_ema = torch.tensor(float(self.state.clip_ema), device=dev)
        if images is None:
            from training import gpu_data
            images = gpu_data.load_images(args.data, args.patch)
        self.sampler = GpuPatchSampler(images, args.patch, dev, args.seed + self.state.step)
        self.gen = torch.Generator(device=dev).manual_seed(args.seed + 1 + self.state.step)
        self.forward = self.model
        if args.compile:
            self.forward = torch.compile(self.model)
        levels = len(hp_torch.LAMBDAS)
        self.sums = torch.zeros(3, levels, device=dev)   # bpp, mse, count per level

    def learning_rate(self):
        return self.args.lr * min(1.0, (self.state.step - self.warm_from + 1)
                                  / max(1, self.args.lr_warmup))

    def step(self):
        a = self.args
        x = self.sampler.batch(a.batch)
        level = torch.randint(0, len(hp_torch.LAMBDAS), (a.batch,), device=x.device,
                              generator=self.gen)
        x_hat, bits_y, bits_z = self.forward(x, level)
        mse = (x - x_hat).square().mean(dim=(1, 2, 3))
        bpp = (bits_y + bits_z) / float(a.patch ** 2)
        loss = (bpp + self.lambdas[level] * mse).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self.params]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        ema = self.clip_ema
        clip = torch.where(ema > 0, a.clip_factor * ema, torch.full_like(ema, 1e9))
        finite = torch.isfinite(norm)
        coef = torch.where(finite, clip / torch.maximum(norm, clip), torch.zeros_like(norm))
        torch._foreach_mul_(grads, coef)
        for group in self.opt.param_groups:
            group["lr"] = self.learning_rate()
        self.opt.step()
        new = torch.where(ema <= 0, norm, 0.98 * ema + 0.02 * torch.minimum(norm, 2 * ema))
        self.clip_ema = torch.where(finite, new, ema).detach()
        with torch.no_grad():
            one = torch.ones_like(bpp)
            for i, v in enumerate((bpp.detach(), mse.detach(), one)):
                self.sums[i].index_add_(0, level, v.float())
        self.state.step += 1

    def report(self, steps, seconds):
        s = self.sums.cpu().numpy().copy()   # (on the CPU, .numpy() would share memory)
        self.sums.zero_()
        n = np.maximum(s[2], 1)
        bpp, mse = s[0] / n, np.maximum(s[1] / n, 1e-12)
        loss = float(np.sum(s[0] + np.array(hp_torch.LAMBDAS) * 255 ** 2 * s[1]) / n.sum())
        self.state.clip_ema = float(self.clip_ema)
        print(f"step {self.state.step} {time.time() - T0:.0f}s {steps / max(seconds, 1e-9):.1f} "
              f"steps/s loss {loss:.4f} clip_ema {self.state.clip_ema:.3g} lr "
              f"{self.learning_rate():.2e} | "
              + " ".join(f"{b:.3f}/{10 * math.log10(1 / m):.2f}" if c else "-"
                         for b, m, c in zip(bpp, mse, s[2])), flush=True)

    def save(self, path):
        self.state.clip_ema = float(self.clip_ema)
        dtype = np.float16 if self.args.out_dtype == "float16" else np.float32
        hp_torch.save_keras_npz(self.model, path, dataclasses.asdict(self.state),
                                dataclasses.asdict(self.recipe), dtype=dtype, compressed=True)
        print(f"saved {path} ({os.path.getsize(path) / 2 ** 20:.1f} MiB) at step "
              f"{self.state.step}", flush=True)

    def first_step(self):
        """The first step, falling back to eager mode if torch.compile fails."""
        try:
            self.step()
        except Exception as e:   # noqa: BLE001 (any compiler error)
            if self.forward is self.model:
                raise
            print(f"torch.compile failed ({type(e).__name__}: {e}); eager mode", flush=True)
            self.forward = self.model
            self.opt.zero_grad(set_to_none=True)
            self.step()

    def run(self):
        a = self.args
        deadline = T0 + a.minutes * 60 - 15        # leave time for the last save
        minutes0, t_start, step0 = self.state.minutes, time.time(), self.state.step
        last_save = last_print = time.time()
        steps_since = 0
        self.first_step()
        self.report(1, time.time() - last_print)      # the first loss, early in the log
        last_print = time.time()
        while time.time() < deadline:
            if a.max_steps and self.state.step - step0 >= a.max_steps:
                break
            self.step()
            steps_since += 1
            now = time.time()
            if now - last_print > a.print_seconds:
                self.report(steps_since, now - last_print)
                last_print, steps_since = now, 0
            if a.out and now - last_save > a.save_minutes * 60:
                self.state.minutes = minutes0 + (now - t_start) / 60
                self.save(a.out)
                last_save = time.time()
        self.report(steps_since, max(time.time() - last_print, 1e-9))
        self.state.minutes = minutes0 + (time.time() - t_start) / 60
        if a.out:
            self.save(a.out)


def validate(path, crop=256):
    """hp_train.Trainer.validate for a Keras-layout npz, in float32 torch on the CPU."""
    from training import data
    model = hp_torch.model_from_keras_npz(path).eval()
    images = data.load_validation_images(crop)
    per_level = []
    with torch.no_grad():
        for k, lam in enumerate(hp_torch.LAMBDAS):
            bpps, mses = [], []
            for im in images:
                x = torch.from_numpy(im[None]).permute(0, 3, 1, 2)
                x_hat, by, bz = model(x, torch.tensor([k]))
                x8 = np.round(np.clip(x_hat[0].permute(1, 2, 0).numpy(), 0, 1) * 255)
                mses.append(np.mean((x8 - np.round(im * 255)) ** 2) / 255.0 ** 2)
                bpps.append(float(by[0] + bz[0]) / (im.shape[0] * im.shape[1]))
            per_level.append((float(np.mean(bpps)), float(np.mean(mses))))
    val = float(np.mean([b + lam * 255 ** 2 * m
                         for (b, m), lam in zip(per_level, hp_torch.LAMBDAS)]))
    print(f"{path}: val {val:.4f} | "
          + " ".join(f"{b:.3f}/{10 * np.log10(1 / m):.2f}" for b, m in per_level), flush=True)
    return val, per_level


def main(argv=None):
    args = parse_args(argv)
    if args.validate:
        validate(args.validate)
        return
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        print(f"{torch.cuda.get_device_name()} torch {torch.__version__}", flush=True)
    trainer = TorchTrainer(args)
    n = sum(p.numel() for p in trainer.params)
    print(f"{len(trainer.sampler.h)} training images ({trainer.sampler.buffer.numel() / 3e6:.0f} "
          f"MP) on {args.device}; {n} weights; from step {trainer.state.step} "
          f"({args.init or 'scratch'}); loading took {time.time() - T0:.0f}s", flush=True)
    trainer.run()
    print(f"done: step {trainer.state.step}", flush=True)


if __name__ == "__main__":
    main()
