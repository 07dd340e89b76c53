"""Encoder-side latent refinement: a few Adam steps on one window's latent through the fixed decoder.

The encoder network is one fixed function for all images; the best latent for a given image is
usually a little different (the "amortisation gap").  ``refine`` starts from the encoder's float
latent z and minimises, like training does,

    loss = D(image, decoder(round(z))) + lambda * bits(round(z)) / pixels

with a straight-through gradient through the rounding:
  * dD/dlatent comes from the model's refiner network (``l3ic_<q>_refiner.tflite``, written by
    ``training.export``: the decoder with its vector-Jacobian product spelled out in forward ops,
    D = MSE + w_ssim (1 - SSIM) + w_ms (1 - MS-SSIM), the weights the model was trained with);
  * the rate gradient is computed here from the soft histograms of the context coder
    (docs/entropy.md): for a value between codebook entries f and f + 1 it is the difference of
    their code lengths in the value's context, L(f + 1) - L(f).
The step size follows a cosine from ``lr`` to 0, and the iterate with the lowest exact loss
(the real distortion of the rounded latent plus its ideal context-coded bits) is kept, so the
result is never worse than the encoder's own latent by that measure.  Decoding is unchanged:
refined files are ordinary files.  Cost: one refiner run per step (about 0.2 s at 512x512 on 2 cores, docs/refine.md).
"""
from __future__ import annotations

import math

import numpy as np

CODEBOOK_MIN, CODEBOOK_MAX = -15, 16
_SYMBOLS = CODEBOOK_MAX - CODEBOOK_MIN + 1
MIN_SIZE = 176                # pixels: windows below this are not refined (the refiner's
                              # MS-SSIM term needs 11 px at the coarsest of its 5 scales)
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-7   # Adam, as in training (Keras defaults)


def contexts(q: np.ndarray) -> np.ndarray:
    """The coder context (0, 1, 2) of every symbol of an integer-valued latent q (h, w, C):
    m = the channel's most frequent value (ties: the lowest), a = min(|s - m|, 3),
    d = a(left) + a(up) with 0 outside the latent; 0 if d = 0, 1 if d <= 2, else 2."""
    C = q.shape[-1]
    idx = (q - CODEBOOK_MIN).astype(np.int64) + np.arange(C) * _SYMBOLS
    counts = np.bincount(idx.ravel(), minlength=C * _SYMBOLS).reshape(C, _SYMBOLS)
    mode = counts.argmax(axis=1) + CODEBOOK_MIN              # argmax: the first (lowest) maximum
    a = np.minimum(np.abs(q - mode), 3).astype(np.int8)
    d = np.zeros_like(a)
    d[:, 1:] += a[:, :-1]
    d[1:] += a[:-1]
    return np.where(d == 0, 0, np.where(d <= 2, 1, 2)).astype(np.int64)


def _flat_index(ctx: np.ndarray, sym: np.ndarray) -> np.ndarray:
    """Index of (channel, context, symbol) in a C x 3 x 32 table, for (h, w, C) arrays."""
    C = ctx.shape[-1]
    return (np.arange(C) * 3 + ctx) * _SYMBOLS + sym


def context_bits(q: np.ndarray, ctx: np.ndarray | None = None) -> float:
    """Ideal bits of the context coder for an integer-valued latent q (h, w, C): the sum over
    channels and contexts of the order-0 entropy of the symbols (table costs left out).
    ctx: contexts(q), when already computed."""
    C = q.shape[-1]
    ctx = contexts(q) if ctx is None else ctx
    n = np.bincount(_flat_index(ctx, (q - CODEBOOK_MIN).astype(np.int64)).ravel(),
                    minlength=C * 3 * _SYMBOLS).reshape(C * 3, _SYMBOLS).astype(np.float64)
    total = n.sum(axis=1, keepdims=True)
    nz = n > 0
    return float(-(n[nz] * np.log2((n / np.maximum(total, 1))[nz])).sum())


def rate_gradient(z: np.ndarray, ctx: np.ndarray) -> np.ndarray:
    """d(soft context-coded bits)/dz for a float latent z (h, w, C), contexts ctx fixed: each
    value spreads its mass over its two codebook neighbours f, f + 1 (weights 1 - t, t), so the
    derivative is L(f + 1) - L(f), L = -log2 of the soft probability in the value's context.
    Zero outside the codebook range (the quantiser clips there)."""
    C = z.shape[-1]
    zc = np.clip(z, CODEBOOK_MIN, CODEBOOK_MAX)
    f = np.minimum(np.floor(zc), CODEBOOK_MAX - 1)
    t = (zc - f).astype(np.float64)
    lo = _flat_index(ctx, (f - CODEBOOK_MIN).astype(np.int64))
    size = C * 3 * _SYMBOLS
    hist = (np.bincount(lo.ravel(), (1.0 - t).ravel(), size)
            + np.bincount(lo.ravel() + 1, t.ravel(), size)).reshape(C * 3, _SYMBOLS)
    code_length = -np.log2((hist + 1e-9) / (hist.sum(axis=1, keepdims=True) + 1e-9)).ravel()
    grad = code_length[lo + 1] - code_length[lo]
    grad[(z < CODEBOOK_MIN) | (z > CODEBOOK_MAX)] = 0.0
    return grad.astype(np.float32)


def refine(refiner, image: np.ndarray, z: np.ndarray, iterations: int, lam: float,
           lr: float = 0.05) -> np.ndarray:
    """The refined, rounded latent (h, w, C float32 codebook values) of one window.

    refiner: callable (latent (h, w, C), image) -> (dD/dlatent (h, w, C), D);
    image: (8h, 8w, 3) float32 pixels 0..255; z: the encoder's float latent (h, w, C);
    lam: bits weight (per bpp); lr: Adam step size in latent units (the model's refine_lr)."""
    pixels = float(image.shape[0] * image.shape[1])
    z = np.array(z, np.float32)                  # our own copy: it is updated in place
    m, v = np.zeros_like(z), np.zeros_like(z)
    best_loss, best = math.inf, None
    for i in range(iterations + 1):
        q = np.clip(np.rint(z), CODEBOOK_MIN, CODEBOOK_MAX)
        grad_d, distortion = refiner(q, image)
        ctx = contexts(q)
        loss = float(distortion) + lam * context_bits(q, ctx) / pixels
        if loss < best_loss:
            best_loss, best = loss, q
        if i == iterations:
            break
        g = grad_d * ((z >= CODEBOOK_MIN) & (z <= CODEBOOK_MAX))   # the clip's gradient
        g += (lam / pixels) * rate_gradient(z, ctx)
        m = _BETA1 * m + (1 - _BETA1) * g
        v = _BETA2 * v + (1 - _BETA2) * g * g
        step = lr * 0.5 * (1 + math.cos(math.pi * i / iterations))
        step *= math.sqrt(1 - _BETA2 ** (i + 1)) / (1 - _BETA1 ** (i + 1))
        z -= step * m / (np.sqrt(v) + _EPS)
    return best
