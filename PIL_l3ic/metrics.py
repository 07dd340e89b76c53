"""Image quality metrics in numpy only: PSNR, SSIM and MS-SSIM.

The definitions are those of pytorch-msssim 1.0 (and of the benchmark scripts in
``../shared/bench``), so numbers are comparable with published learned-codec results:

* PSNR: ``10 log10(data_range**2 / MSE)``, the MSE taken over all samples (all channels)
  at once; ``inf`` for identical images.
* SSIM: Gaussian window 11x11, sigma 1.5 (separable, normalised), ``K = (0.01, 0.03)``,
  ``data_range = 255``, *valid* filtering (no padding; an axis shorter than the window is not
  filtered), computed per channel and averaged over the channels (R, G, B).
* MS-SSIM: 5 scales with the standard weights ``(0.0448, 0.2856, 0.3001, 0.2363, 0.1333)``;
  between scales a 2x2 average pool with stride 2, zero-padded by one sample on both ends of an
  axis of odd length with the zeros counted in the mean (torch ``avg_pool2d(padding=s % 2)``);
  the contrast-structure terms of the first 4 scales and the SSIM of the last, each clipped at 0,
  are raised to the weights and multiplied, per channel, then averaged over the channels.
  The short side must be > 160 pixels (``(11 - 1) * 2**4``), else ``ValueError``.
  On even sizes (a multiple of 16) this equals ``tf.image.ssim_multiscale``; on odd sizes
  TensorFlow pads differently (symmetric, at the end) and differs slightly.

Inputs: numpy arrays ``HxW`` or ``HxWxC`` (any numeric dtype; every channel is used) or Pillow
images (``L`` stays one channel, everything else is converted to ``RGB``).  Both inputs must
have the same shape.  Memory stays bounded for large images: the filtered statistics are
computed one channel and one block of rows at a time (about 60 MB for a 6000-pixel-wide image).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["psnr", "mse", "ssim", "ms_ssim", "ms_ssim_db", "gaussian_window",
           "MS_SSIM_WEIGHTS"]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_ROW_BLOCK = 256  # output rows of the filtered maps computed at a time


def _as_array(img) -> np.ndarray:
    """HxWxC float64 array from a numpy array or a Pillow image."""
    if hasattr(img, "mode") and hasattr(img, "getbands"):  # PIL.Image.Image, without importing PIL
        if img.mode not in ("L", "RGB"):
            img = img.convert("RGB")
        img = np.asarray(img)
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[0] < 1 or a.shape[1] < 1 or a.shape[2] < 1:
        raise ValueError(f"expected an HxW or HxWxC image, got shape {a.shape}")
    return a


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_array(a), _as_array(b)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} vs {y.shape}")
    return x, y


def mse(a, b) -> float:
    """Mean squared error over all samples."""
    x, y = _pair(a, b)
    d = x - y
    return float(np.mean(d * d))


def psnr(a, b, data_range: float = 255.0) -> float:
    """PSNR in dB over all samples (``inf`` when the images are identical)."""
    m = mse(a, b)
    return math.inf if m == 0 else 10.0 * math.log10(data_range * data_range / m)


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on a dB scale: ``-10 log10(1 - value)`` (``inf`` for 1)."""
    return math.inf if value >= 1 else 0.0 - 10.0 * math.log10(1.0 - value)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian (pytorch-msssim ``_fspecial_gauss_1d``)."""
    coords = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(coords ** 2) / (2.0 * sigma ** 2))
    return g / g.sum()


def _filter(a: np.ndarray, win: np.ndarray, axis: int) -> np.ndarray:
    """Valid correlation of ``a`` with the (symmetric) 1-D ``win`` along ``axis``;
    an axis shorter than the window is returned unfiltered (as pytorch-msssim does)."""
    n, k = a.shape[axis], len(win)
    if n < k:
        return a
    m = n - k + 1
    sl = [slice(None)] * a.ndim
    sl[axis] = slice(0, m)
    out = win[0] * a[tuple(sl)]
    for i in range(1, k):
        sl[axis] = slice(i, i + m)
        out += win[i] * a[tuple(sl)]
    return out


def _ssim_sums(x: np.ndarray, y: np.ndarray, win: np.ndarray, c1: float, c2: float):
    """For one channel (HxW): (sum of the SSIM map, sum of the CS map, number of map samples)."""
    h, k = x.shape[0], len(win)
    filt_rows = h >= k
    out_rows = h - k + 1 if filt_rows else h
    s_sum = cs_sum = 0.0
    count = 0
    for r0 in range(0, out_rows, _ROW_BLOCK):
        r1 = min(out_rows, r0 + _ROW_BLOCK)
        in1 = r1 + k - 1 if filt_rows else r1
        xs, ys = x[r0:in1], y[r0:in1]
        # five statistics filtered together: mu_x, mu_y, E[x^2], E[y^2], E[xy]
        st = np.stack((xs, ys, xs * xs, ys * ys, xs * ys))
        if filt_rows:
            st = _filter(st, win, 1)
        st = _filter(st, win, 2)
        mu1, mu2 = st[0], st[1]
        mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
        s1, s2, s12 = st[2] - mu1_sq, st[3] - mu2_sq, st[4] - mu12
        cs_map = (2.0 * s12 + c2) / (s1 + s2 + c2)
        ssim_map = (2.0 * mu12 + c1) / (mu1_sq + mu2_sq + c1) * cs_map
        s_sum += float(ssim_map.sum())
        cs_sum += float(cs_map.sum())
        count += cs_map.size
    return s_sum, cs_sum, count


def _ssim_per_channel(x, y, data_range, win, k):
    c1, c2 = (k[0] * data_range) ** 2, (k[1] * data_range) ** 2
    ss, cs = [], []
    for c in range(x.shape[2]):
        s_sum, cs_sum, n = _ssim_sums(np.ascontiguousarray(x[:, :, c]),
                                      np.ascontiguousarray(y[:, :, c]), win, c1, c2)
        ss.append(s_sum / n)
        cs.append(cs_sum / n)
    return np.array(ss), np.array(cs)


def ssim(a, b, data_range: float = 255.0, win_size: int = 11, sigma: float = 1.5,
         k: tuple[float, float] = (0.01, 0.03)) -> float:
    """Mean SSIM, per channel then averaged over channels (not clipped at 0)."""
    x, y = _pair(a, b)
    s, _ = _ssim_per_channel(x, y, data_range, gaussian_window(win_size, sigma), k)
    return float(s.mean())


def _avg_pool2(a: np.ndarray) -> np.ndarray:
    """2x2 mean, stride 2, over axes 0 and 1; an odd axis gets one zero on each end,
    counted in the mean (torch avg_pool2d(kernel_size=2, padding=size % 2))."""
    for axis in (0, 1):
        n = a.shape[axis]
        if n % 2:
            pad = [(0, 0)] * a.ndim
            pad[axis] = (1, 1)
            a = np.pad(a, pad)
        m = (n + 2 * (n % 2) - 2) // 2 + 1
        sl0 = [slice(None)] * a.ndim
        sl1 = [slice(None)] * a.ndim
        sl0[axis] = slice(0, 2 * m, 2)
        sl1[axis] = slice(1, 2 * m, 2)
        a = 0.5 * (a[tuple(sl0)] + a[tuple(sl1)])
    return a


def ms_ssim(a, b, data_range: float = 255.0, win_size: int = 11, sigma: float = 1.5,
            weights=MS_SSIM_WEIGHTS, k: tuple[float, float] = (0.01, 0.03)) -> float:
    """Multi-scale SSIM (pytorch-msssim ``ms_ssim``), averaged over channels."""
    x, y = _pair(a, b)
    w = np.asarray(weights, dtype=np.float64)
    levels = len(w)
    need = (win_size - 1) * 2 ** (levels - 1)
    if min(x.shape[:2]) <= need:
        raise ValueError(f"MS-SSIM with {levels} scales needs both sides > {need} pixels, "
                         f"got {x.shape[1]}x{x.shape[0]}")
    win = gaussian_window(win_size, sigma)
    mcs = []
    for i in range(levels):
        s, cs = _ssim_per_channel(x, y, data_range, win, k)
        if i < levels - 1:
            mcs.append(np.maximum(cs, 0.0))
            x, y = _avg_pool2(x), _avg_pool2(y)
    stack = np.stack(mcs + [np.maximum(s, 0.0)])          # (levels, channels)
    per_channel = np.prod(stack ** w[:, None], axis=0)
    return float(per_channel.mean())
