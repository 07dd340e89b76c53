"""Pixels <-> entropy-coded streams for the "hp" model family (variable-rate mean-scale
hyperprior; training.hp_model describes the networks).

    image (H, W, 3) -> pad to a multiple of PAD (edge replication)
      -> encoder network -> y (H/s, W/s, M) -> y_s = y * gain(level)
      -> hyper-encoder network -> z -> z_hat = round(z)          (H/4s, W/4s, NZ)
      -> hyper-synthesis (hyperprior.HyperSynthesis, exact integers) -> mean, class of y_s
      -> r = round(y_s - mean): one class-coded stream per latent channel;
         z_hat - z_offset: one class-coded stream per z channel (class = the channel)
    decoding: z streams -> z_hat -> mean, class -> r -> y_hat = (r + mean) * inverse_gain(level)
      -> decoder network -> pixels.

``level`` is a float in [0, levels - 1]: the gains interpolate the trained levels' log-gains
linearly, so every level in between is a valid rate.

Functions take an ``HpModel`` (load_model()) and work on whole images.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import runtime, tiling
from .hyperprior import HyperError, HyperSynthesis

MODEL_NAME = "l3ic_hp"
_lock = threading.Lock()
_models: dict[str, "HpModel"] = {}


@dataclass
class HpModel:
    info: dict
    json_path: Path
    hyper: HyperSynthesis
    y_tables: object          # _fse.ClassTables
    z_tables: object
    z_offset: np.ndarray      # (NZ,) int64
    log_gain: np.ndarray      # (levels, M) float64
    log_inverse_gain: np.ndarray
    encoder: runtime.FileNetwork
    hyper_encoder: runtime.FileNetwork
    decoder: runtime.FileNetwork

    @property
    def stride(self) -> int:
        return int(self.info["stride"])

    @property
    def pad(self) -> int:
        """Image sides are padded to a multiple of this (z is 4x below the latent)."""
        return 4 * self.stride

    @property
    def channels(self) -> int:
        return int(self.info["channels"])

    @property
    def z_channels(self) -> int:
        return int(self.info["z_channels"])

    @property
    def levels(self) -> int:
        return int(self.info["levels"])

    @property
    def fingerprint(self) -> bytes:
        return bytes.fromhex(self.info["fingerprint"])

    def gains(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """(gain, inverse gain) per latent channel at a level in [0, levels - 1]."""
        if not 0.0 <= level <= self.levels - 1:
            raise ValueError(f"level {level} outside 0..{self.levels - 1}")
        i = min(int(level), self.levels - 2)
        f = level - i
        g = (1 - f) * self.log_gain[i] + f * self.log_gain[i + 1]
        ig = (1 - f) * self.log_inverse_gain[i] + f * self.log_inverse_gain[i + 1]
        return np.exp(g).astype(np.float32), np.exp(ig).astype(np.float32)

    def geometry(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(latent h, latent w, z h, z w) of an image."""
        zh, zw = -(-height // self.pad), -(-width // self.pad)
        return 4 * zh, 4 * zw, zh, zw


def load_model(name: str = MODEL_NAME) -> HpModel:
    """The hp model described by ``<name>.json`` in runtime.model_dir(), cached."""
    directory = runtime.model_dir()
    path = directory / f"{name}.json"
    with _lock:
        cached = _models.get(str(path))
    if cached is not None:
        return cached
    from . import _fse
    try:
        info = json.loads(path.read_text())
        with np.load(directory / info["hyper"], allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        m, nz = int(info["channels"]), int(info["z_channels"])
        model = HpModel(
            info=info, json_path=path, hyper=HyperSynthesis(arrays),
            y_tables=_fse.ClassTables(arrays["y_counts"], int(info["table_log"])),
            z_tables=_fse.ClassTables(arrays["z_counts"], int(info["table_log"])),
            z_offset=arrays["z_offset"].astype(np.int64),
            log_gain=arrays["log_gain"].astype(np.float64),
            log_inverse_gain=arrays["log_inverse_gain"].astype(np.float64),
            encoder=runtime.file_network(directory / info["encoder"], 3, m),
            hyper_encoder=runtime.file_network(directory / info["hyper_encoder"], m, nz),
            decoder=runtime.file_network(directory / info["decoder"], m, 3))
    except FileNotFoundError as e:
        raise runtime.ModelError(f"l3ic hp model file not found: {e.filename}") from None
    except (OSError, KeyError, ValueError, TypeError, HyperError) as e:
        raise runtime.ModelError(f"invalid l3ic hp model {path}: {type(e).__name__}: {e}") from None
    if model.hyper.m != model.channels or model.z_offset.shape != (model.z_channels,):
        raise runtime.ModelError(f"invalid l3ic hp model {path}: inconsistent channel counts")
    # every class the decoder can compute must have a table: z classes are the z channels,
    # y classes the hyper-synthesis's 0..classes-1
    if (model.z_tables.classes, model.y_tables.classes) != (model.z_channels, model.hyper.classes):
        raise runtime.ModelError(
            f"invalid l3ic hp model {path}: {model.z_tables.classes} z and "
            f"{model.y_tables.classes} y tables, the model needs {model.z_channels} and "
            f"{model.hyper.classes}")
    with _lock:
        _models[str(path)] = model
    return model


def _run(net, x: np.ndarray) -> np.ndarray:
    """One network on a (h, w, c) float32 array -> (h', w', c') float32 copy."""
    def fill(buf):
        buf[0] = x
    return net.run((1, *x.shape), fill, lambda out: out[0].copy())


def _tiled(model: HpModel, net, src: np.ndarray, out: np.ndarray, src_cell: int,
           dst_cell: int, tile: int | None, pixels: bool = False) -> None:
    """Run ``net`` window by window over the latent grid (tiling.spans, the model's margin in
    latent cells) and write each window's core into ``out``: src has src_cell x src_cell
    values per latent cell, out dst_cell x dst_cell. pixels: round and clip to 0..255 (in the
    interpreter's output tensor, which is scratch by then) for a uint8 ``out``."""
    h, w = src.shape[0] // src_cell, src.shape[1] // src_cell
    t = tiling.tile_cells(tile, h, w, model.stride)
    margin = int(model.info.get("margin", 4))
    rows, wh = tiling.spans(h, t, margin)
    cols, ww = tiling.spans(w, t, margin)
    H, W = out.shape[:2]
    for r0, r1, rs in rows:
        for c0, c1, cs in cols:
            def fill(buf, rs=rs, cs=cs):
                buf[0] = src[rs * src_cell:(rs + wh) * src_cell, cs * src_cell:(cs + ww) * src_cell]

            def take(y, r0=r0, r1=r1, rs=rs, c0=c0, c1=c1, cs=cs):
                Y0, Y1 = r0 * dst_cell, min(r1 * dst_cell, H)
                X0, X1 = c0 * dst_cell, min(c1 * dst_cell, W)
                core = y[0, Y0 - rs * dst_cell:Y1 - rs * dst_cell, X0 - cs * dst_cell:X1 - cs * dst_cell]
                if pixels:
                    np.rint(core, out=core)
                    np.clip(core, 0, 255, out=core)
                out[Y0:Y1, X0:X1] = core

            shape = (1, wh * src_cell, ww * src_cell, src.shape[2])
            net.run(shape, fill, take)


def _pad(rgb: np.ndarray, multiple: int) -> np.ndarray:
    H, W = rgb.shape[:2]
    ph, pw = -H % multiple, -W % multiple
    if rgb.ndim == 2:
        rgb = rgb[..., None].repeat(3, axis=2)
    return np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="edge") if ph or pw else rgb


def analyse(model: HpModel, rgb: np.ndarray, level: float, tile: int | None = None):
    """(H, W, 3) or (H, W) uint8 -> (r (M, h, w) int32, class (M, h, w) uint8,
    z values (NZ, zh, zw) int32 minus offsets)."""
    gain, _ = model.gains(level)
    x = _pad(rgb, model.pad)
    h, w = x.shape[0] // model.stride, x.shape[1] // model.stride
    y_s = np.empty((h, w, model.channels), np.float32)
    _tiled(model, model.encoder, x, y_s, model.stride, 1, tile)
    y_s *= gain
    z_hat = np.rint(_run(model.hyper_encoder, y_s)).astype(np.int64)
    z_hat = np.clip(z_hat, -(1 << 20), 1 << 20)
    mean, classes = model.hyper(z_hat)
    r = np.rint(y_s - mean).astype(np.int32).transpose(2, 0, 1)
    z_vals = (z_hat - model.z_offset).astype(np.int32).transpose(2, 0, 1)
    return np.ascontiguousarray(r), classes, np.ascontiguousarray(z_vals)


def hyper(model: HpModel, z_vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(NZ, zh, zw) z values minus offsets -> (mean (h, w, M), class (M, h, w))."""
    return model.hyper(z_vals.transpose(1, 2, 0).astype(np.int64) + model.z_offset)


def synthesise(model: HpModel, mean: np.ndarray, r: np.ndarray, level: float,
               height: int, width: int, tile: int | None = None) -> np.ndarray:
    """Means (h, w, M) and residuals (M, h, w) -> (H, W, 3) uint8."""
    _, inverse_gain = model.gains(level)
    y_hat = (r.transpose(1, 2, 0).astype(np.float32) + mean) * inverse_gain
    px = np.empty((height, width, 3), np.uint8)
    _tiled(model, model.decoder, y_hat, px, 1, model.stride, tile, pixels=True)
    return px


def z_classes(model: HpModel, zh: int, zw: int) -> np.ndarray:
    """Every z element's class is its channel: (NZ, zh * zw) uint8."""
    return np.repeat(np.arange(model.z_channels, dtype=np.uint8)[:, None], zh * zw, axis=1)


def _compress_rows(values: np.ndarray, classes: np.ndarray, tables, threads: int) -> list:
    """One class-coded stream per row; a row of zeros is the empty stream (a channel that
    carries nothing costs one byte of the stream table)."""
    from . import _fse
    busy = np.flatnonzero(values.any(axis=1))
    out = [b""] * values.shape[0]
    if busy.size:
        coded = _fse.compress_classes_batch(np.ascontiguousarray(values[busy]),
                                            np.ascontiguousarray(classes[busy]), tables,
                                            threads=threads)
        for i, s in zip(busy, coded):
            out[i] = s
    return out


def compress(model: HpModel, r, classes, z_vals, threads: int = 1) -> tuple[list, list]:
    """(z streams, y streams)."""
    nz, m = z_vals.shape[0], r.shape[0]
    z_streams = _compress_rows(z_vals.reshape(nz, -1), z_classes(model, *z_vals.shape[1:]),
                               model.z_tables, threads)
    y_streams = _compress_rows(r.reshape(m, -1), classes.reshape(m, -1), model.y_tables, threads)
    return z_streams, y_streams


def _decompress_rows(streams, classes: np.ndarray, tables, threads: int) -> np.ndarray:
    """Inverse of _compress_rows: (len(streams), n) int32; FSEError for a bad stream."""
    from . import _fse
    out = np.zeros(classes.shape, np.int32)
    busy = [i for i, s in enumerate(streams) if len(s)]
    if busy:
        out[busy] = _fse.decompress_classes_batch([streams[i] for i in busy],
                                                  np.ascontiguousarray(classes[busy]), tables,
                                                  threads=threads)
    return out


def _salvage(streams, classes, tables) -> np.ndarray:
    """Channel by channel: a stream that is missing (None) or does not decode gives zeros."""
    from . import _fse
    out = np.zeros(classes.shape, np.int32)
    for i, s in enumerate(streams):
        if s:
            try:
                out[i] = _fse.decompress_classes(s, classes[i], tables)
            except ValueError:
                pass
    return out


def _decode_streams(streams, classes, tables, threads, allow_truncated):
    """(C, n) values of class-coded streams; ContainerError for a missing or corrupt one
    unless ``allow_truncated``, which decodes those as zeros."""
    from .container import ContainerError
    if allow_truncated:
        return _salvage(streams, classes, tables)
    if any(s is None for s in streams):
        raise ContainerError("l3ic file is missing channel streams")
    try:
        return _decompress_rows(streams, classes, tables, threads)
    except ValueError as e:
        raise ContainerError(f"corrupt l3ic channel stream: {e}") from None


def decompress_z(model: HpModel, z_streams, zh: int, zw: int, threads: int = 1,
                 allow_truncated: bool = False) -> np.ndarray:
    """z streams -> (NZ, zh, zw) z values minus offsets (see _decode_streams for errors)."""
    z = _decode_streams(z_streams, z_classes(model, zh, zw), model.z_tables, threads,
                        allow_truncated)
    return z.reshape(model.z_channels, zh, zw)


def decompress_y(model: HpModel, y_streams, classes, threads: int = 1,
                 allow_truncated: bool = False) -> np.ndarray:
    """y streams of the channels in ``classes`` (rows in the same order) -> (len, h, w)."""
    c, h, w = classes.shape
    return _decode_streams(y_streams, classes.reshape(c, -1), model.y_tables, threads,
                           allow_truncated).reshape(c, h, w)


# ----------------------------------------------------------------------------- container glue

def level_code(model: HpModel, level: float) -> int:
    """The header's level field (level in 1/LEVEL_ONE steps); ValueError outside the range."""
    from .container import LEVEL_ONE
    code = int(round(float(level) * LEVEL_ONE))
    if not 0 <= code <= (model.levels - 1) * LEVEL_ONE:
        raise ValueError(f"level {level} outside 0..{model.levels - 1}")
    return code


def encode(rgb: np.ndarray, level: float, threads: int = 1, model: HpModel | None = None):
    """(H, W, 3) or (H, W) uint8 -> (header fields, streams, stream modes) of a version 3 file."""
    from .container import LEVEL_ONE, STREAM_CLASS, HP_MODEL_ID
    model = model or load_model()
    code = level_code(model, level)
    r, classes, z_vals = analyse(model, rgb, code / LEVEL_ONE)
    z_streams, y_streams = compress(model, r, classes, z_vals, threads)
    fields = {"width": rgb.shape[1], "height": rgb.shape[0], "model_id": HP_MODEL_ID,
              "fingerprint": model.fingerprint, "level": code, "z_channels": model.z_channels,
              "y_channels": model.channels, "stride": model.stride}
    streams = z_streams + y_streams
    return fields, streams, [STREAM_CLASS] * len(streams)


def check_header(header, model: HpModel | None = None) -> HpModel:
    """The model a version 3 file needs; ModelError / ContainerError when it does not fit."""
    from .container import LEVEL_ONE, ContainerError
    model = model or load_model()
    if header.fingerprint != model.fingerprint:
        raise runtime.ModelError(
            f"this l3ic file was encoded by an hp model with fingerprint "
            f"{header.fingerprint.hex()}, but the installed one ({model.json_path.name}) has "
            f"{model.fingerprint.hex()}; it cannot be decoded")
    if (header.z_channels, header.y_channels, header.stride) != \
            (model.z_channels, model.channels, model.stride):
        raise ContainerError("l3ic header does not match its model's geometry")
    if header.level > (model.levels - 1) * LEVEL_ONE:
        raise ContainerError(f"l3ic header level {header.level / LEVEL_ONE} outside the "
                             f"model's 0..{model.levels - 1}")
    return model


def decode(header, streams, threads: int = 1, model: HpModel | None = None,
           allow_truncated: bool = False) -> np.ndarray:
    """Streams of a version 3 file (z's then y's) -> (H, W, 3) uint8.  A missing or corrupt
    stream raises ContainerError; with ``allow_truncated`` it decodes as zeros (a y channel
    then holds just its predicted means), unless no stream at all is intact."""
    from .container import LEVEL_ONE, ContainerError
    model = check_header(header, model)
    nz = model.z_channels
    if len(streams) != header.channels:
        raise ContainerError(f"l3ic file has {len(streams)} streams, its model {header.channels}")
    if allow_truncated and all(s is None for s in streams):
        raise ContainerError("no channel stream of this l3ic file is intact")
    _, _, zh, zw = model.geometry(header.height, header.width)
    mean, classes = hyper(model, decompress_z(model, streams[:nz], zh, zw, threads,
                                              allow_truncated))
    r = decompress_y(model, streams[nz:], classes, threads, allow_truncated)
    return synthesise(model, mean, r, header.level / LEVEL_ONE, header.height, header.width)


def resolve_level(quality, model: HpModel | None = None) -> float:
    """The rate level of a save quality (options module): a preset's level from the model
    description, or a number 0..100 mapped linearly onto 0..levels - 1; ValueError otherwise."""
    from . import options
    model = model or load_model()
    name = options.preset(quality)
    if name is not None:
        return float(model.info.get("presets", {}).get(name, _DEFAULT_PRESETS[name] * (model.levels - 1)))
    q = options.number(quality)
    if q is None or not 0 <= q <= options.QUALITY_MAX:
        raise ValueError(f"invalid l3ic quality {quality!r}: use '16c', '32c', '64c', 'low', "
                         f"'medium', 'high' or a number 0-{options.QUALITY_MAX}")
    return q / options.QUALITY_MAX * (model.levels - 1)


# presets as fractions of the level range, until the model description calibrates them
_DEFAULT_PRESETS = {"16c": 0.35, "32c": 0.55, "64c": 0.8}
