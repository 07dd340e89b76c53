"""The hyper-synthesis of the "hp" models in exact integer arithmetic (numpy only).

The entropy coder codes every latent element with the tANS table of its scale class; encoder
and decoder must therefore compute the same class for every element on every machine, every
thread count and every BLAS.  This network (z_hat -> mean and scale class of every latent
element) is run here, not by LiteRT:

* weights are integers (int16 range, one scale per output channel), biases integers at the
  accumulator's scale, activations integers (0 .. ACT_MAX after ReLU);
* a convolution is one matrix product in float64 of integer-valued operands whose every partial
  sum stays below 2^53, so it is exact in any summation order (BLAS blocking, threads, FMA);
* requantisation is one IEEE multiplication by a stored float64 constant, then floor(x + 1/2):
  correctly rounded basic operations, identical on every IEEE-754 machine;
* the class of an element is clip(floor(acc * class_mul + class_add), 0, classes - 1) with
  per-channel float64 constants stored in the model file (no exp/log at run time).

Model file (``<model>_hyper.npz``, written by training.hp_export; no pickles):
    layer<i>_kernel  int16 (k * k * cin, cout), k = 3 (rows in (ky, kx, cin) order) or 1
    layer<i>_bias    int64 (cout,)   (both may also be integer-valued float64)
    layer<i>_requant float64 (cout,)   hidden layers: accumulator -> next layer's integers
    mean_mul         float64 (M,)      last layer: mean = acc[:, :M] * mean_mul
    class_mul, class_add  float64 (M,) last layer: class from acc[:, M:]
    meta             int64 [layers, M, classes, act_max]
Hidden layers are 3x3, each followed by ReLU and depth-to-space (factor 2); the last layer is
3x3 or 1x1.
"""
from __future__ import annotations

import numpy as np

ACT_MAX = 65535            # hidden activations are integers 0 .. ACT_MAX
WEIGHT_MAX = 32767         # |kernel| <= WEIGHT_MAX
_EXACT = 2.0 ** 53


class HyperError(ValueError):
    """The hyper-synthesis model file is malformed."""


def _im2col3(x: np.ndarray) -> np.ndarray:
    """(h, w, c) -> (h * w, 9 * c): 3x3 neighbourhoods with zero padding, (ky, kx, c) order."""
    h, w, c = x.shape
    p = np.zeros((h + 2, w + 2, c), np.float64)
    p[1:-1, 1:-1] = x
    cols = np.empty((h, w, 3, 3, c), np.float64)
    for ky in range(3):
        for kx in range(3):
            cols[:, :, ky, kx] = p[ky:ky + h, kx:kx + w]
    return cols.reshape(h * w, 9 * c)


def _depth_to_space(x: np.ndarray) -> np.ndarray:
    """(h, w, 4c) -> (2h, 2w, c), TensorFlow's DCR order."""
    h, w, c4 = x.shape
    c = c4 // 4
    return x.reshape(h, w, 2, 2, c).transpose(0, 2, 1, 3, 4).reshape(2 * h, 2 * w, c)


class HyperSynthesis:
    """z_hat (h, w, nz) integers -> (mean (4h, 4w, M) float32, class (M, 4h, 4w) uint8)."""

    def __init__(self, arrays: dict):
        try:
            n_layers, m, classes, act_max = (int(v) for v in arrays["meta"])
            self.kernels = [np.asarray(arrays[f"layer{i}_kernel"], np.float64) for i in range(n_layers)]
            self.biases = [np.asarray(arrays[f"layer{i}_bias"], np.float64) for i in range(n_layers)]
            self.requants = [np.asarray(arrays[f"layer{i}_requant"], np.float64)
                             for i in range(n_layers - 1)]
            self.mean_mul = np.asarray(arrays["mean_mul"], np.float64)
            self.class_mul = np.asarray(arrays["class_mul"], np.float64)
            self.class_add = np.asarray(arrays["class_add"], np.float64)
        except (KeyError, ValueError, TypeError) as e:
            raise HyperError(f"malformed hyper-synthesis model: {e}") from None
        self.m, self.classes, self.act_max = m, classes, act_max
        self.nz = self.kernels[0].shape[0] // 9 if self.kernels else 0
        self._check()

    def _check(self) -> None:
        cin = self.nz
        for i, (k, b) in enumerate(zip(self.kernels, self.biases)):
            last = i == len(self.kernels) - 1
            sizes = (9 * cin, cin) if last else (9 * cin,)
            if k.ndim != 2 or k.shape[0] not in sizes or b.shape != (k.shape[1],):
                raise HyperError(f"layer {i}: kernel {k.shape} / bias {b.shape} do not chain")
            if np.any(k != np.round(k)) or np.abs(k).max() > WEIGHT_MAX:
                raise HyperError(f"layer {i}: kernel is not integers within {WEIGHT_MAX}")
            cout = k.shape[1]
            if not last:
                if cout % 4 or self.requants[i].shape != (cout,):
                    raise HyperError(f"layer {i}: {cout} outputs cannot depth-to-space")
                cin = cout // 4
        if self.kernels[-1].shape[1] != 2 * self.m:
            raise HyperError("last layer must give mean and scale for every latent channel")
        # every partial sum exact: |input| * sum |kernel column| + |bias| < 2^53
        bound = max(self.act_max, 1 << 20) * max(np.abs(k).sum(0).max() for k in self.kernels)
        if bound + max(np.abs(b).max() for b in self.biases) >= _EXACT:
            raise HyperError("integer ranges too wide for exact float64 accumulation")

    def __call__(self, z_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.clip(np.asarray(z_hat, np.float64), -(1 << 20), 1 << 20)
        for i, (k, b) in enumerate(zip(self.kernels, self.biases)):
            h, w, c = x.shape
            acc = (_im2col3(x) if k.shape[0] == 9 * c else x.reshape(h * w, c)) @ k
            acc += b
            if i < len(self.kernels) - 1:
                acc *= self.requants[i]
                acc += 0.5
                np.floor(acc, out=acc)
                np.clip(acc, 0, self.act_max, out=acc)
                x = _depth_to_space(acc.reshape(h, w, -1))
        m = self.m
        mean = (acc[:, :m] * self.mean_mul).astype(np.float32).reshape(h, w, m)
        cls = acc[:, m:] * self.class_mul
        cls += self.class_add
        np.floor(cls, out=cls)
        np.clip(cls, 0, self.classes - 1, out=cls)
        return mean, cls.astype(np.uint8).T.reshape(m, h, w)
