"""training.average: the weight mean of checkpoints (needs numpy only, so it runs in CI)."""
import sys
from pathlib import Path

import numpy as np
import pytest

# training/ is not installed (a training-only tree); append the checkout so the installed
# PIL_l3ic stays first on the path
sys.path.append(str(Path(__file__).resolve().parents[1]))
from training import average, weights  # noqa: E402


def _checkpoint(path, scale, step, shape=(3, 3, 4, 8)):
    rng = np.random.default_rng(step)
    arrays = {"encoder/enc_latent/0": scale * np.ones(shape, np.float32),
              "decoder/dec_latent/1": rng.normal(size=8).astype(np.float32)}
    np.savez(path, **arrays, **{"opt/0": np.zeros(2), "meta/step": np.asarray(step),
                                "meta/lmbda": np.asarray(0.01 * step)})
    return str(path), arrays


def test_mean_of_checkpoints_drops_optimizer_and_keeps_latest_meta(tmp_path):
    p1, a1 = _checkpoint(tmp_path / "a.npz", 1.0, 100)
    p2, a2 = _checkpoint(tmp_path / "b.npz", 4.0, 200)
    p3, a3 = _checkpoint(tmp_path / "c.npz", 7.0, 300)
    arrays, meta = average.average([p3, p1, p2])   # meta: the latest step's
    assert np.all(arrays["encoder/enc_latent/0"] == 4.0)
    np.testing.assert_allclose(arrays["decoder/dec_latent/1"],
                               (a1["decoder/dec_latent/1"] + a2["decoder/dec_latent/1"]
                                + a3["decoder/dec_latent/1"]) / 3, rtol=1e-6)
    assert meta["step"] == 300
    out = tmp_path / "avg.npz"
    average.save(str(out), arrays, meta, [p1, p2, p3])
    loaded, lmeta = weights.load_npz(str(out))      # readable like a run's final.npz
    assert loaded.keys() == arrays.keys() and lmeta["optimizer"] == []
    assert lmeta["step"] == 300 and lmeta["averaged"] == 3
    assert loaded["encoder/enc_latent/0"].dtype == np.float32


def test_refuses_other_shapes_and_layers(tmp_path):
    p1, _ = _checkpoint(tmp_path / "a.npz", 1.0, 1)
    p2, _ = _checkpoint(tmp_path / "b.npz", 1.0, 2, shape=(3, 3, 4, 16))
    with pytest.raises(ValueError, match="has shape"):
        average.average([p1, p2])
    np.savez(tmp_path / "c.npz", **{"encoder/other/0": np.zeros(1, np.float32)})
    with pytest.raises(ValueError, match="other layers"):
        average.average([p1, str(tmp_path / "c.npz")])
    with pytest.raises(ValueError, match="nothing"):
        average.average([])


def test_command_line(tmp_path, capsys):
    p1, _ = _checkpoint(tmp_path / "a.npz", 2.0, 10)
    p2, _ = _checkpoint(tmp_path / "b.npz", 6.0, 20)
    average.main([str(tmp_path / "o.npz"), p1, p2])
    assert "mean of 2 checkpoints (last step 20)" in capsys.readouterr().out
    arrays, _ = weights.load_npz(str(tmp_path / "o.npz"))
    assert np.all(arrays["encoder/enc_latent/0"] == 4.0)


def test_mean_of_averages(tmp_path):
    """A soup: the mean of two averages records its own count, not its inputs'."""
    p1, _ = _checkpoint(tmp_path / "a.npz", 1.0, 10)
    p2, _ = _checkpoint(tmp_path / "b.npz", 3.0, 20)
    p3, _ = _checkpoint(tmp_path / "c.npz", 9.0, 30)
    average.main([str(tmp_path / "ab.npz"), p1, p2])
    average.main([str(tmp_path / "soup.npz"), str(tmp_path / "ab.npz"), p3])
    arrays, meta = weights.load_npz(str(tmp_path / "soup.npz"))
    assert np.all(arrays["encoder/enc_latent/0"] == 5.5)
    assert meta["averaged"] == 2 and meta["step"] == 30
