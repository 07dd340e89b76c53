"""Encoder-side latent refinement (PIL_l3ic/refine.py): the rate model, the Adam loop, the option."""
import io

import numpy as np
import pytest
from PIL import Image

import PIL_l3ic  # noqa: F401
from PIL_l3ic import codec, refine, runtime


def test_contexts_by_hand():
    # one channel, mode 0, so a = min(|s|, 3):   a = 0 0 2 / 0 1 0 / 3 0 0
    # d = a(left) + a(up):                        d = 0 0 0 / 0 0 3 / 0 4 0
    q = np.array([[0, 0, 2],
                  [0, 1, 0],
                  [5, 0, 0]], np.float32)[..., None]
    assert refine.contexts(q)[..., 0].tolist() == [[0, 0, 0], [0, 0, 2], [0, 2, 0]]


def test_contexts_use_the_channel_mode_lowest_on_ties():
    q = np.zeros((2, 2, 2), np.float32)
    q[..., 0] = [[4, 4], [-2, -2]]      # tie between -2 and 4: the mode is -2
    q[..., 1] = 7
    ctx = refine.contexts(q)
    # a = 3 3 / 0 0 (with mode 4 it would be 0 0 / 3 3, giving [[0, 0], [0, 2]])
    assert ctx[..., 0].tolist() == [[0, 2], [2, 2]]
    assert ctx[..., 1].tolist() == [[0, 0], [0, 0]]


def _soft_bits(z, ctx):
    """Independent statement of the soft context rate: per (channel, context) a histogram in
    which each value adds 1 - t to floor(z) and t to floor(z) + 1; bits = sum -n log2(n / N)."""
    C = z.shape[-1]
    hist = np.zeros((C, 3, 32))
    for (i, j, c), v in np.ndenumerate(z):
        v = min(max(v, -15.0), 16.0)
        f = min(np.floor(v), 15.0)
        t = v - f
        hist[c, ctx[i, j, c], int(f) + 15] += 1 - t
        hist[c, ctx[i, j, c], int(f) + 16] += t
    total = hist.sum(axis=2, keepdims=True)
    p = (hist + 1e-9) / (total + 1e-9)
    return float(-(hist * np.log2(p)).sum())


def test_rate_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    z = (rng.normal(0, 1.5, (6, 5, 3)) + rng.uniform(-0.4, 0.4, (6, 5, 3))).astype(np.float64)
    ctx = refine.contexts(np.rint(z))
    grad = refine.rate_gradient(z.astype(np.float32), ctx)
    eps = 1e-4
    for idx in [(0, 0, 0), (2, 3, 1), (5, 4, 2), (3, 1, 0)]:
        hi, lo = z.copy(), z.copy()
        hi[idx] += eps
        lo[idx] -= eps
        numeric = (_soft_bits(hi, ctx) - _soft_bits(lo, ctx)) / (2 * eps)
        assert grad[idx] == pytest.approx(numeric, rel=1e-3, abs=1e-3)


def test_rate_gradient_is_zero_outside_the_codebook():
    z = np.full((2, 2, 1), 20.0, np.float32)
    z[0, 0, 0] = -40
    assert not refine.rate_gradient(z, np.zeros((2, 2, 1), np.int64)).any()


def test_context_bits_is_the_ideal_code_length():
    q = np.zeros((4, 4, 1), np.float32)
    q[0, 0, 0] = 3                      # contexts: (0,1) and (1,0) see a = 3 -> context 2
    ctx = refine.contexts(q)
    counts = {}
    for (i, j, _), k in np.ndenumerate(ctx):
        counts.setdefault(k, []).append(q[i, j, 0])
    expected = 0.0
    for values in counts.values():
        _, n = np.unique(values, return_counts=True)
        expected -= float((n * np.log2(n / n.sum())).sum())
    assert refine.context_bits(q) == pytest.approx(expected)
    assert refine.context_bits(np.ones((3, 3, 2), np.float32)) == 0.0


class QuadraticRefiner:
    """A stand-in for the refiner network: D = mean((q - target)^2)."""

    def __init__(self, target):
        self.target = target
        self.calls = 0

    def __call__(self, q, image):
        self.calls += 1
        diff = q - self.target
        return (2 * diff / diff.size).astype(np.float32), float(np.mean(diff ** 2))


def test_refine_reaches_the_distortion_optimum_without_rate():
    rng = np.random.default_rng(2)
    target = rng.integers(-5, 6, (4, 4, 2)).astype(np.float32)
    start = target + rng.uniform(-1.4, 1.4, target.shape).astype(np.float32)
    net = QuadraticRefiner(target)
    q = refine.refine(net, np.zeros((32, 32, 3), np.float32), start, 60, lam=0.0)
    assert net.calls == 61
    assert np.array_equal(q, target)


def test_refine_never_returns_a_worse_latent_and_stays_in_the_codebook():
    rng = np.random.default_rng(3)
    target = rng.normal(0, 8, (5, 6, 3)).astype(np.float32)
    start = np.clip(target + rng.normal(0, 2, target.shape), -30, 30).astype(np.float32)
    image = np.zeros((40, 48, 3), np.float32)
    lam = 0.05

    def loss(q):
        return float(np.mean((q - target) ** 2)) + lam * refine.context_bits(q) / (40 * 48)

    q0 = np.clip(np.rint(start), -15, 16)
    for steps, lr in ((0, 0.05), (3, 5.0), (25, 0.3)):
        q = refine.refine(QuadraticRefiner(target), image, start, steps, lam, lr)
        assert q.min() >= -15 and q.max() <= 16 and np.array_equal(q, np.rint(q))
        assert loss(q) <= loss(q0)
    assert loss(q) < loss(q0)


@pytest.mark.parametrize("bad", [-1, codec.MAX_REFINE + 1, 2.5, "10", True, None])
def test_refine_option_is_checked(bad):
    with pytest.raises(ValueError, match="refine must be an integer"):
        Image.new("RGB", (16, 16)).save(io.BytesIO(), format="L3IC", refine=bad)


@pytest.fixture
def edited_16c(tmp_path, monkeypatch):
    """A copy of the 16c model files whose JSON the test edits: edit(fn) applies fn to it."""
    import json
    import shutil
    for f in runtime.model_dir().glob("l3ic_16c*"):
        shutil.copy(f, tmp_path)
    path = tmp_path / "l3ic_16c.json"
    monkeypatch.setenv(runtime.ENV_MODEL_DIR, str(tmp_path))

    def edit(fn):
        meta = json.loads(path.read_text())
        fn(meta)
        path.write_text(json.dumps(meta))
        runtime.reset()
    yield edit
    runtime.reset()


def test_a_model_without_refiner_refuses_refine(edited_16c):
    edited_16c(lambda meta: meta.pop("refiner", None))
    with pytest.raises(runtime.ModelError, match="has no refiner"):
        Image.new("RGB", (192, 192)).save(io.BytesIO(), format="L3IC", quality="16c", refine=2)
    Image.new("RGB", (192, 192)).save(io.BytesIO(), format="L3IC", quality="16c", refine=0)


@pytest.mark.parametrize("bad", ["-1", "1001", "2.5", "many"])
def test_cli_refine_option_is_checked(bad, capsys):
    from PIL_l3ic import cli
    with pytest.raises(SystemExit) as e:
        cli.main(["encode", "x.png", "--refine", bad])
    assert e.value.code == 2
    assert "--refine: must be an integer 0..1000" in capsys.readouterr().err
    assert cli.build_parser().parse_args(["encode", "x", "--refine", "30"]).refine == 30


def test_refiner_file_must_have_the_refiner_interface(edited_16c):
    # the decoder has one input and one output: not a refiner
    edited_16c(lambda meta: meta.update(refiner=meta["decoder"]))
    with pytest.raises(runtime.ModelError, match="refiner file .* does not match"):
        Image.new("RGB", (192, 192)).save(io.BytesIO(), format="L3IC", quality="16c", refine=1)


def test_small_images_are_not_refined():
    rng = np.random.default_rng(5)
    im = Image.fromarray(rng.integers(0, 256, (120, 200, 3), np.uint8))   # 120 < MIN_SIZE
    plain, refined = io.BytesIO(), io.BytesIO()
    im.save(plain, format="L3IC", quality="16c")
    im.save(refined, format="L3IC", quality="16c", refine=5)
    assert plain.getvalue() == refined.getvalue()


def test_refinement_buys_quality_at_no_more_bytes():
    """32c on a 256x256 crop of the sample photo, 8 steps (measured: SSIM +0.003, MS-SSIM
    +0.0009, +0.2 dB at -2 % bytes); the refined file is an ordinary file."""
    from PIL_l3ic import metrics
    from pathlib import Path
    src = Image.open(Path(__file__).parent.parent / "samples" / "astronaut.png").convert("RGB")
    src = src.crop((128, 96, 384, 352))
    ref = np.asarray(src)
    out = {}
    for steps in (0, 8):
        buf = io.BytesIO()
        src.save(buf, format="L3IC", quality="32c", refine=steps)
        with Image.open(io.BytesIO(buf.getvalue())) as back:
            assert (back.format, back.size, back.l3ic_model) == ("L3IC", (256, 256), "32c")
            dec = np.asarray(back.convert("RGB"))
        out[steps] = (buf.tell(), metrics.ssim(ref, dec), metrics.ms_ssim(ref, dec),
                      metrics.psnr(ref, dec))
    (b0, s0, m0, p0), (b1, s1, m1, p1) = out[0], out[8]
    assert b1 <= b0 * 1.01
    assert s1 >= s0 + 0.002 and m1 >= m0 and p1 >= p0


def test_refine_keeps_modes_and_alpha():
    rng = np.random.default_rng(6)
    grey = Image.fromarray(rng.integers(0, 256, (184, 200), np.uint8), "L")
    rgba = Image.fromarray(rng.integers(0, 256, (184, 200, 4), np.uint8), "RGBA")
    for im in (grey, rgba):
        buf = io.BytesIO()
        im.save(buf, format="L3IC", quality="32c", refine=2)
        with Image.open(io.BytesIO(buf.getvalue())) as back:
            assert (back.mode, back.size) == (im.mode, im.size)
            back.load()
            if im.mode == "RGBA":       # alpha is lossless, refinement or not
                assert back.getchannel("A").tobytes() == im.getchannel("A").tobytes()
