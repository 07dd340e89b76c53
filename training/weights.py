"""Saving and loading model weights as .npz keyed by layer name, independent of the channel count.

Keys look like "encoder/enc_res0_conv1/0". Committed weights (training/weights/l3ic_<q>.npz) are
float16 to keep git history small; run checkpoints (training/runs/, not committed) are float32 and
also hold the optimizer state so a run resumes exactly.
"""
import hashlib
import os

import numpy as np

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
LATENT_LAYERS = ("enc_latent", "dec_latent")  # the layers whose shape depends on the channel count


def model_arrays(encoder, decoder) -> dict[str, np.ndarray]:
    arrays = {}
    for role, model in (("encoder", encoder), ("decoder", decoder)):
        for layer in model.layers:
            for i, w in enumerate(layer.weights):
                arrays[f"{role}/{layer.name}/{i}"] = np.asarray(w.numpy(), np.float32)
    return arrays


def assign_model_arrays(encoder, decoder, arrays, skip_latent_layers=False) -> int:
    """Assign stored arrays to matching layers; returns how many tensors were set."""
    count = 0
    for role, model in (("encoder", encoder), ("decoder", decoder)):
        for layer in model.layers:
            if skip_latent_layers and layer.name in LATENT_LAYERS:
                continue
            for i, w in enumerate(layer.weights):
                key = f"{role}/{layer.name}/{i}"
                if key in arrays:
                    if tuple(arrays[key].shape) != tuple(w.shape):
                        raise ValueError(f"shape mismatch for {key}: {arrays[key].shape} vs {w.shape}")
                    w.assign(arrays[key].astype(np.float32))
                    count += 1
    return count


def assign_latent_channels(encoder, decoder, arrays, keep, latent_means=None) -> None:
    """Warm start of the two latent layers from a model with another channel count: source channel
    keep[i] becomes channel i.  Channels beyond len(keep) (a wider model) keep their fresh
    encoder weights (their latent must vary, or no gradient reaches them) and get zero decoder
    weights, so the wider model starts out decoding exactly like the source.  For a narrower
    model, latent_means (per source channel) moves the dropped channels' mean contribution into
    the decoder bias."""
    enc, dec = encoder.get_layer("enc_latent"), decoder.get_layer("dec_latent")
    ek, eb = (arrays[f"encoder/enc_latent/{i}"].astype(np.float32) for i in (0, 1))
    dk, db = (arrays[f"decoder/dec_latent/{i}"].astype(np.float32) for i in (0, 1))
    keep = list(keep)
    new_ek = np.asarray(enc.weights[0].numpy())   # fresh weights for the channels beyond keep
    new_eb = np.zeros(enc.weights[1].shape, np.float32)
    new_dk = np.zeros(dec.weights[0].shape, np.float32)
    new_ek[..., :len(keep)], new_eb[:len(keep)] = ek[..., keep], eb[keep]
    new_dk[:, :, :len(keep)] = dk[:, :, keep]
    new_db = db.copy()
    if latent_means is not None:   # the decoder sees latent x inverse scale
        inverse_scale = float(arrays["decoder/inverse_scale/0"])
        for c in sorted(set(range(ek.shape[-1])) - set(keep)):
            new_db += inverse_scale * latent_means[c] * dk[:, :, c].sum(axis=(0, 1))
    enc.weights[0].assign(new_ek)
    enc.weights[1].assign(new_eb)
    dec.weights[0].assign(new_dk)
    dec.weights[1].assign(new_db)


def fingerprint(arrays: dict[str, np.ndarray]) -> str:
    """16 hex chars: first 8 bytes of SHA-256 over the weights (sorted keys, float32 bytes)."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        h.update(key.encode())
        h.update(np.ascontiguousarray(arrays[key], np.float32).tobytes())
    return h.hexdigest()[:16]


def committed_path(quality: str) -> str:
    return os.path.join(WEIGHTS_DIR, f"l3ic_{quality}.npz")


def _meta_entries(meta: dict) -> dict[str, np.ndarray]:
    """``meta`` as the meta/ keys every weights file carries (load_npz strips the prefix)."""
    return {f"meta/{k}": np.asarray(v) for k, v in meta.items()}


def save_weights(path: str, arrays: dict[str, np.ndarray], **info) -> str:
    """Weights as compressed float16 with ``info`` as meta/ keys (the committed format)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez_compressed(path, **{k: v.astype(np.float16) for k, v in arrays.items()},
                        **_meta_entries(info))
    return path


def save_checkpoint(path: str, encoder, decoder, optimizer, **meta) -> None:
    """A resumable run checkpoint: float32 weights, Adam's state (opt/<i>, in
    optimizer.variables order) and ``meta`` as meta/ keys; written atomically."""
    opt = {f"opt/{i}": v.numpy() for i, v in enumerate(optimizer.variables)}
    tmp = path + ".tmp.npz"
    np.savez(tmp, **model_arrays(encoder, decoder), **opt, **_meta_entries(meta))
    os.replace(tmp, path)


def save_arrays(path: str, arrays: dict[str, np.ndarray], **meta) -> None:
    """float32 weights and ``meta`` as meta/ keys, without optimizer state: the layout of a
    run's final.npz minus Adam, which load_npz, export and qat read (snapshots, averages)."""
    np.savez(path, **arrays, **_meta_entries(meta))


def save_snapshot(path: str, encoder, decoder, **meta) -> None:
    """The model's current weights for training.average (train.py --snapshot-every)."""
    save_arrays(path, model_arrays(encoder, decoder), **meta)


def load_npz(path: str) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if not k.startswith(("meta/", "opt/"))}
        meta = {k[5:]: v.item() if v.size == 1 else v      # best_val is a (distortion, bpp) pair
                for k, v in ((k, f[k]) for k in f.files if k.startswith("meta/"))}
        opt = [f[f"opt/{i}"] for i in range(sum(k.startswith("opt/") for k in f.files))]
    meta["optimizer"] = opt
    return arrays, meta


def revive_channels(encoder, decoder, dead, rng, encoder_gain=1.0, decoder_std=1e-3) -> None:
    """Fresh random encoder filters (He normal times encoder_gain, zero bias) and small random
    decoder weights for the latent channels `dead`.  A channel whose latent rounds to one value
    on every input gets no gradient: its decoder weights see a constant, and with zero decoder
    weights (how a wider warm start adds channels) no distortion gradient reaches its encoder,
    so the rate term keeps it dead.  Other channels are untouched."""
    enc, dec = encoder.get_layer("enc_latent"), decoder.get_layer("dec_latent")
    ek, eb = enc.weights[0].numpy(), enc.weights[1].numpy()
    dk = dec.weights[0].numpy()
    fan_in = int(np.prod(ek.shape[:3]))
    for c in dead:
        ek[..., c] = rng.normal(0.0, encoder_gain * np.sqrt(2.0 / fan_in), ek.shape[:3])
        eb[c] = 0.0
        dk[:, :, c, :] = rng.normal(0.0, decoder_std, dk.shape[:2] + dk.shape[3:])
    enc.weights[0].assign(ek)
    enc.weights[1].assign(eb)
    dec.weights[0].assign(dk)
