"""The integer hyper-synthesis (PIL_l3ic.hyperprior): exact, hence identical on every machine."""
import numpy as np
import pytest

from PIL_l3ic import hyperprior
from PIL_l3ic.hyperprior import HyperError, HyperSynthesis


def random_model(rng, nz=8, hidden=6, m=5, classes=16, act_max=hyperprior.ACT_MAX, last=3):
    arrays = {}
    cin = nz
    for i, cout in enumerate((4 * hidden, 4 * hidden, 2 * m)):
        k = last if i == 2 else 3
        arrays[f"layer{i}_kernel"] = rng.integers(-hyperprior.WEIGHT_MAX, hyperprior.WEIGHT_MAX + 1,
                                                  (k * k * cin, cout)).astype(np.float64)
        arrays[f"layer{i}_bias"] = rng.integers(-1 << 30, 1 << 30, cout).astype(np.float64)
        if i < 2:
            arrays[f"layer{i}_requant"] = rng.uniform(1e-9, 1e-6, cout)
            cin = hidden
    arrays["mean_mul"] = rng.uniform(1e-10, 1e-8, m)
    arrays["class_mul"] = rng.uniform(1e-10, 1e-9, m)
    arrays["class_add"] = rng.uniform(0, classes, m)
    arrays["meta"] = np.array([3, m, classes, act_max])
    return arrays


def reference(arrays, z):
    """The same network in int64 (exact by construction) with Python-level requantisation."""
    x = z.astype(np.int64)
    n = int(arrays["meta"][0])
    for i in range(n):
        h, w, c = x.shape
        kernel = arrays[f"layer{i}_kernel"].astype(np.int64)
        if kernel.shape[0] == 9 * c:
            p = np.pad(x, ((1, 1), (1, 1), (0, 0)))
            cols = np.stack([p[ky:ky + h, kx:kx + w] for ky in range(3) for kx in range(3)], axis=2)
        else:
            cols = x
        acc = cols.reshape(h * w, -1) @ kernel
        acc += arrays[f"layer{i}_bias"].astype(np.int64)
        if i < n - 1:
            a = np.floor(acc.astype(np.float64) * arrays[f"layer{i}_requant"] + 0.5)
            a = np.clip(a, 0, int(arrays["meta"][3])).astype(np.int64).reshape(h, w, -1)
            c4 = a.shape[-1] // 4
            x = a.reshape(h, w, 2, 2, c4).transpose(0, 2, 1, 3, 4).reshape(2 * h, 2 * w, c4)
    m, classes = int(arrays["meta"][1]), int(arrays["meta"][2])
    mean = (acc[:, :m].astype(np.float64) * arrays["mean_mul"]).astype(np.float32)
    cls = np.floor(acc[:, m:].astype(np.float64) * arrays["class_mul"] + arrays["class_add"])
    cls = np.clip(cls, 0, classes - 1).astype(np.uint8)
    return mean.reshape(h, w, m), cls.T.reshape(m, h, w)


@pytest.mark.parametrize("seed", range(4))
def test_matches_exact_integer_reference(seed):
    rng = np.random.default_rng(seed)
    arrays = random_model(rng, last=1 if seed % 2 else 3)
    z = rng.integers(-40, 41, (3 + seed, 5, 8))
    mean, cls = HyperSynthesis(arrays)(z)
    ref_mean, ref_cls = reference(arrays, z)
    assert mean.shape == (4 * z.shape[0], 4 * z.shape[1], 5) and cls.dtype == np.uint8
    np.testing.assert_array_equal(cls, ref_cls)
    np.testing.assert_array_equal(mean, ref_mean)
    assert len(np.unique(cls)) > 3        # the classes are not all clipped to one end


def test_same_result_whatever_the_tiling_of_the_product():
    """Splitting the z grid into pieces changes BLAS blocking but not the result in the
    interior (the exactness argument)."""
    rng = np.random.default_rng(9)
    net = HyperSynthesis(random_model(rng))
    z = rng.integers(-40, 41, (6, 7, 8))
    whole = net(z)
    for _ in range(2):   # repeated calls, other shapes in between
        net(rng.integers(-40, 41, (2, 9, 8)))
        again = net(z)
        np.testing.assert_array_equal(whole[1], again[1])
        np.testing.assert_array_equal(whole[0], again[0])


def test_rejects_kernels_that_could_overflow_exactness():
    rng = np.random.default_rng(1)
    arrays = random_model(rng)
    arrays["layer1_kernel"] = arrays["layer1_kernel"] * 1000
    with pytest.raises(HyperError, match="integers within"):
        HyperSynthesis(arrays)


def test_rejects_non_integer_and_malformed_arrays():
    rng = np.random.default_rng(2)
    arrays = random_model(rng)
    arrays["layer0_kernel"] = arrays["layer0_kernel"] + 0.5
    with pytest.raises(HyperError, match="integers"):
        HyperSynthesis(arrays)
    arrays = random_model(rng)
    del arrays["mean_mul"]
    with pytest.raises(HyperError, match="malformed"):
        HyperSynthesis(arrays)
    arrays = random_model(rng)
    arrays["layer1_kernel"] = arrays["layer1_kernel"][:-9]
    with pytest.raises(HyperError, match="do not chain"):
        HyperSynthesis(arrays)
