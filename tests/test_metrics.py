"""Tests for PIL_l3ic.metrics (PSNR, SSIM, MS-SSIM in numpy)."""
import math

import numpy as np
import pytest
from PIL import Image

from PIL_l3ic import metrics as M


def smooth(h, w, c=3, seed=0):
    """Random smooth image in 0..255 (bicubic upsampling of coarse noise), float64."""
    z = np.random.default_rng(seed).normal(size=(h // 8 + 2, w // 8 + 2, c)).astype(np.float32)
    a = np.stack([np.asarray(Image.fromarray(z[:, :, i], "F").resize((w, h), Image.BICUBIC))
                  for i in range(c)], -1).astype(np.float64)
    return (a - a.min()) / (a.max() - a.min()) * 255.0


def noisy(a, sigma, seed=1):
    return np.clip(a + np.random.default_rng(seed).normal(0, sigma, a.shape), 0, 255)


@pytest.fixture(scope="module")
def img():
    return smooth(192, 224)


def test_identical(img):
    assert M.psnr(img, img) == math.inf
    assert M.ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    assert M.ms_ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    assert M.ms_ssim_db(1.0) == math.inf


def test_psnr_value():
    a = np.zeros((4, 5, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 10  # MSE = 100 / 60
    assert M.psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 * 60 / 100))
    assert M.mse(a, b) == pytest.approx(100 / 60)


def test_monotonic_with_noise(img):
    vals = [(M.psnr(img, noisy(img, s)), M.ssim(img, noisy(img, s)), M.ms_ssim(img, noisy(img, s)))
            for s in (1, 4, 16, 48)]
    for prev, cur in zip(vals, vals[1:]):
        assert all(c < p for p, c in zip(prev, cur))
    assert all(0 < v[2] < 1 for v in vals)


def test_symmetric_and_pil_input(img):
    b = noisy(img, 10)
    assert M.ms_ssim(img, b) == pytest.approx(M.ms_ssim(b, img), abs=1e-12)
    pa, pb = (Image.fromarray(np.round(x).astype(np.uint8)) for x in (img, b))
    ra, rb = np.asarray(pa), np.asarray(pb)
    assert M.ms_ssim(pa, pb) == pytest.approx(M.ms_ssim(ra, rb), abs=1e-12)
    assert M.psnr(pa.convert("RGBA"), pb) == pytest.approx(M.psnr(ra, rb))
    assert M.ssim(pa.convert("L"), pb.convert("L")) > 0.5  # one channel


def test_channel_mean(img):
    b = noisy(img, 12)
    per = [M.ms_ssim(img[:, :, c], b[:, :, c]) for c in range(3)]
    assert M.ms_ssim(img, b) == pytest.approx(np.mean(per), abs=1e-12)


def test_errors(img):
    with pytest.raises(ValueError, match="shape"):
        M.psnr(img, img[:-1])
    with pytest.raises(ValueError, match="160"):
        M.ms_ssim(img[:160], img[:160])
    assert 0 < M.ssim(img[:8, :9], noisy(img, 5)[:8, :9]) < 1  # smaller than the window


def test_row_blocks_do_not_change_result(monkeypatch):
    a = smooth(300, 170, seed=3)
    b = noisy(a, 6)
    ref = M.ms_ssim(a, b), M.ssim(a, b)
    monkeypatch.setattr(M, "_ROW_BLOCK", 7)
    assert (M.ms_ssim(a, b), M.ssim(a, b)) == pytest.approx(ref, abs=1e-12)


def test_avg_pool_odd_sizes_match_torch_semantics():
    # torch avg_pool2d(kernel 2, stride 2, padding 1, count_include_pad=True) on a 3x5 array
    a = np.arange(15, dtype=np.float64).reshape(3, 5, 1)
    p = np.pad(a[:, :, 0], 1)
    want = np.array([[p[i:i + 2, j:j + 2].mean() for j in (0, 2, 4)] for i in (0, 2)])
    np.testing.assert_allclose(M._avg_pool2(a)[:, :, 0], want)
    assert M._avg_pool2(np.ones((4, 6, 2))).shape == (2, 3, 2)


@pytest.fixture(scope="module")
def tf():
    tf = pytest.importorskip("tensorflow")
    return tf


@pytest.mark.parametrize("shape,sigma,seed", [((256, 256), 8, 1), ((192, 320), 20, 2),
                                              ((208, 176), 3, 3)])
def test_against_tensorflow(tf, shape, sigma, seed):
    a = smooth(*shape, seed=seed)
    b = noisy(a, sigma, seed=seed + 10)
    ta, tb = (tf.constant(x[None], tf.float64) for x in (a, b))
    assert M.ms_ssim(a, b) == pytest.approx(float(tf.image.ssim_multiscale(ta, tb, 255.0)[0]),
                                            abs=1e-3)
    assert M.ssim(a, b) == pytest.approx(float(tf.image.ssim(ta, tb, 255.0)[0]), abs=1e-3)
