"""Pixels (numpy uint8) <-> ``.l3c`` container bytes: padding, tiling, quantisation, entropy coding.

Public functions
    resolve_quality(q) -> "16c" | "32c" | "64c"      accepts the model names, "low"/"medium"/"high"
        and Pillow-style integers 1-100 (1-40 -> 16c, 41-75 -> 32c, 76-100 -> 64c); ValueError.
    encode(rgb, quality) -> (header_fields, streams, modes)   colour image (H, W, 3) or (H, W)
        grey (replicated to RGB) -> the latent's channel streams; header_fields is a dict of
        width, height, model_id, fingerprint (add ``mode`` to make a container.Header).
    decode(header, streams, *, gray=False) -> (H, W, 3) uint8, or (H, W) luma when ``gray``;
        a ``None`` stream (missing channel of a truncated file) decodes as the zero value.
    encode_image(pixels, mode, quality, *, icc, exif, xmp) -> bytes   a whole container; mode
        "RGB" (H, W, 3), "L" (H, W), "RGBA" (H, W, 4) or "LA" (H, W, 2); alpha is stored
        losslessly (zlib) in the ALPH chunk.
    decode_image(fp, layout, *, allow_truncated=False) -> pixels in layout.header.mode's shape.
All accept ``tile`` (pixels, a multiple of 8; default: one window up to WHOLE_IMAGE_PIXELS,
else DEFAULT_TILE) and run both networks tile by tile (below), so memory stays bounded whatever
the image size.

Quantisation: index = clip(round(latent), -15, 16) + 15 (uint8 0..31), stored as C rows of
h*w symbols (h, w = ceil(H/8), ceil(W/8)), one ``_fse`` stream per latent channel.  The decoder
gets index - 15.  L images decode to ITU-R 601 luma of the decoded RGB, exactly as Pillow's
``convert("L")`` computes it.

Tiling.  A latent cell covers 8x8 pixels.  Dependencies (TF "same" padding; every stride-2
input has an even size because tiles are multiples of 8, so each k5/s2 conv pads 1 before and
2 after, and output o reads inputs 2o-1 .. 2o+3):
  encoder: conv5/2 -> conv5/2 -> 3 residual blocks (6 conv3) at 1/4 -> conv5/2.  Latent i reads
    1/4-res cells 2i-1..2i+3, widened by 6 by the residual blocks to 2i-7..2i+9, which read
    1/2-res cells 4i-15..4i+21, which read pixels 8i-31..8i+45: latent cells i-4 .. i+5.
  decoder: conv3 at 1/8, d2s, 3 residual blocks (6 conv3) + conv3 at 1/4, d2s, conv3 at 1/2,
    d2s.  A pixel of latent cell L comes from 1/2-res cells 4L..4L+3, which read 4L-1..4L+4,
    i.e. 1/4-res cells 2L-1..2L+2; the seven 3x3 convs at 1/4 widen that to 2L-8..2L+9, i.e.
    1/8-res cells L-4..L+4, and the first conv to latent cells L-5 .. L+5.
So MARGIN = 5 latent cells (40 px) of real context on each side of a tile's core make every
kept value depend only on data inside the tile, as in whole-image inference; at the image border
the tile border coincides with the (padded) image border, so the zero padding is the same too.
The image is split into equal cores of at most ``tile`` pixels; every window has the same shape
(core + 2 margins, shifted inwards at the image border), so the interpreter is resized at most
once per image.  Overhead: (1024 + 80)^2 / 1024^2 = 1.16x the network work for large images.

Exactness: with float32/float16 models, tiled == whole-image inference up to float rounding.
With "int8" (dynamic-range quantised) models, every convolution quantises its input with a
scale taken from that whole tensor, so results depend slightly on what else is in the tile:
tiled and whole-image inference then differ by that quantisation noise (the export keeps int8
only when it costs < 0.1 dB), and the bytes depend on the tile size.  They are always
deterministic for a given input, tile size and model.
"""
from __future__ import annotations

import zlib
from typing import BinaryIO, Sequence

import numpy as np

from . import container, options, runtime, tiling
from .tiling import DEFAULT_TILE, WHOLE_IMAGE_PIXELS  # noqa: F401  (part of this API)
from . import refine as _refine
from .container import ContainerError, Header

MARGIN = 5            # latent cells of context around each tile core (see the docstring)
ZERO_INDEX = 15       # index of the codebook value 0
MAX_REFINE = 1000     # refinement steps (refine.py) accepted by encode
# Refinement runs on tiles of at most this many pixels: the refiner keeps every activation for
# its backward pass (a 1920x1080 window took 2.4 GB), a 512 px tile about 0.4 GB.
REFINE_TILE = 512
_MAX_INDEX = 31


def resolve_quality(quality: str | int) -> str:
    """Map a quality option to a model name (see the module docstring); ValueError otherwise."""
    if isinstance(quality, str):
        q = options.preset(quality)
        if q is not None:
            return q
    elif isinstance(quality, (int, np.integer)) and not isinstance(quality, bool):
        if 1 <= quality <= 40:
            return "16c"
        if 41 <= quality <= 75:
            return "32c"
        if 76 <= quality <= 100:
            return "64c"
    raise ValueError(f"invalid l3ic quality {quality!r}: use '16c', '32c', '64c', 'low', "
                     "'medium', 'high' or an integer 1-100")


def _tile_cells(tile: int | None, h: int, w: int) -> int:
    """Tile core side in latent cells for an h x w latent (tiling.tile_cells, stride 8)."""
    return tiling.tile_cells(tile, h, w, 8)


def _spans(n: int, tile: int, margin: int | None = None
           ) -> tuple[list[tuple[int, int, int]], int]:
    """tiling.spans with this model family's MARGIN by default."""
    return tiling.spans(n, tile, MARGIN if margin is None else margin)


def _check_output(net, out, shape) -> None:
    if out.shape != shape:
        raise runtime.ModelError(f"l3ic model file {net.path} gave output {list(out.shape)}, "
                                 f"expected {list(shape)}")


def _analyse(net, img: np.ndarray, tile: int | None = None, refine: int = 0) -> np.ndarray:
    """Encoder network + quantisation, tile by tile: (H, W[, 3]) uint8 -> (C, h, w) indices.
    refine > 0 runs that many refinement steps on each window's latent (refine.py)."""
    H, W = img.shape[:2]
    h, w = -(-H // 8), -(-W // 8)
    t = _tile_cells(REFINE_TILE if refine and tile is None else tile, h, w)
    C = net.info.channels
    out = np.empty((C, h, w), np.uint8)
    rows, wh = _spans(h, t)
    cols, ww = _spans(w, t)
    bh, bw = 8 * wh, 8 * ww
    refiner = None                          # windows below MIN_SIZE are too small for the
    if refine and min(bh, bw) >= _refine.MIN_SIZE:   # refiner's MS-SSIM term: not refined
        refiner = runtime.network(net.info.quality, "refiner")
    for r0, r1, rs in rows:
        for c0, c1, cs in cols:
            y0, x0 = 8 * rs, 8 * cs

            def fill(buf, y0=y0, x0=x0):
                dst = buf[0]
                src = img[y0:y0 + bh, x0:x0 + bw]     # clipped at the image border
                sh, sw = src.shape[:2]
                dst[:sh, :sw] = src[..., None] if src.ndim == 2 else src
                if sw < bw:                           # pad by edge replication
                    dst[:sh, sw:] = dst[:sh, sw - 1:sw]
                if sh < bh:
                    dst[sh:] = dst[sh - 1:sh]
                return dst

            def take(z):
                _check_output(net, z, (1, wh, ww, C))
                return z[0].copy() if refiner else np.rint(z[0])

            q = net.run((1, bh, bw, 3), fill, take)
            if refiner:
                window = fill(np.empty((1, bh, bw, 3), np.float32))
                q = _refine.refine(refiner, window, q, refine, net.info.refine_lambda,
                                   net.info.refine_lr)
            q = q[r0 - rs:r1 - rs, c0 - cs:c1 - cs]
            np.clip(q, -ZERO_INDEX, _MAX_INDEX - ZERO_INDEX, out=q)
            q += ZERO_INDEX
            out[:, r0:r1, c0:c1] = q.transpose(2, 0, 1)
    return out


def _synthesise(net, lat: np.ndarray, H: int, W: int, gray: bool = False,
                tile: int | None = None) -> np.ndarray:
    """Decoder network, tile by tile: (C, h, w) indices -> (H, W, 3) uint8 or (H, W) luma."""
    C, h, w = lat.shape
    t = _tile_cells(tile, h, w)
    dest = np.empty((H, W) if gray else (H, W, 3), np.uint8)
    rows, wh = _spans(h, t)
    cols, ww = _spans(w, t)
    zero = np.float32(ZERO_INDEX)
    for r0, r1, rs in rows:
        for c0, c1, cs in cols:
            def fill(buf, rs=rs, cs=cs):
                np.subtract(lat[:, rs:rs + wh, cs:cs + ww].transpose(1, 2, 0), zero, out=buf[0])

            def take(y, r0=r0, r1=r1, rs=rs, c0=c0, c1=c1, cs=cs):
                _check_output(net, y, (1, 8 * wh, 8 * ww, 3))
                Y0, Y1, X0, X1 = 8 * r0, min(8 * r1, H), 8 * c0, min(8 * c1, W)
                px = y[0, Y0 - 8 * rs:Y1 - 8 * rs, X0 - 8 * cs:X1 - 8 * cs]
                np.rint(px, out=px)             # in place: the output tensor is scratch now
                np.clip(px, 0, 255, out=px)
                if gray:
                    dest[Y0:Y1, X0:X1] = _luma(px)
                else:
                    dest[Y0:Y1, X0:X1] = px

            net.run((1, wh, ww, C), fill, take)
    return dest


# ----------------------------------------------------------------------------- entropy coding

# _fse.stream_info modes -> container channel-table modes
_CONTAINER_MODE = {"tans": container.STREAM_TANS, "run": container.STREAM_RUN,
                   "raw": container.STREAM_RAW, "tans-ctx": container.STREAM_TANS_CTX}
# Spatial-context coding of the channels (docs/entropy.md); False writes only the plain
# stream modes (version 1 files), for comparisons and tests.
CONTEXT_CODING = True


def _stream_modes(fse, streams: Sequence[bytes]) -> list[int]:
    return [_CONTAINER_MODE[fse.stream_info(s)["mode"]] for s in streams]


# A second entropy-coding thread pays off only with a few ms of work for it (docs/entropy.md:
# 24 M symbols code 1.6-1.75x faster on 2 threads, 1 M symbols (1080p, 32c) no faster).
SYMBOLS_PER_CODER_THREAD = 2_000_000


def _coder_threads(symbols: int) -> int:
    return max(1, min(runtime.num_threads(), symbols // SYMBOLS_PER_CODER_THREAD))


def _compress(lat: np.ndarray) -> tuple[list[bytes], list[int]]:
    from . import _fse
    width = lat.shape[2] if CONTEXT_CODING else None
    streams = _fse.compress_batch(lat.reshape(lat.shape[0], -1), threads=_coder_threads(lat.size),
                                  width=width)
    return streams, _stream_modes(_fse, streams)


def _decompress(streams: Sequence[bytes | None], C: int, h: int, w: int,
                allow_truncated: bool = False) -> np.ndarray:
    """Channel streams -> (C, h, w) indices; None (missing) channels are the zero value."""
    from . import _fse
    n = h * w
    streams = list(streams)
    for i, s in enumerate(streams):   # stream headers first: refuse before allocating C x n
        if s is None:
            continue
        try:
            sn = _fse.stream_info(s)["n"]
            problem = None if sn == n else f"holds {sn} symbols, expected {n}"
        except ValueError as e:
            problem = str(e)
        if problem is not None:
            if not allow_truncated:
                raise ContainerError(f"corrupt l3ic channel stream {i}: {problem}")
            streams[i] = None
    lat = np.full((C, n), ZERO_INDEX, np.uint8)
    present = [i for i, s in enumerate(streams) if s is not None]
    if present:
        try:
            lat[present] = _fse.decompress_batch([streams[i] for i in present], n,
                                                 threads=_coder_threads(len(present) * n),
                                                 width=w)
        except ValueError as e:
            if not allow_truncated:
                raise ContainerError(f"corrupt l3ic channel stream: {e}") from None
            for i in present:           # salvage the channels that do decode
                try:
                    lat[i] = np.frombuffer(_fse.decompress(streams[i], n, width=w), np.uint8)
                except ValueError:
                    lat[i] = ZERO_INDEX
    np.minimum(lat, _MAX_INDEX, out=lat)
    return lat.reshape(C, h, w)


# ----------------------------------------------------------------------------- public API

def _check_pixels(a: np.ndarray, ndim_ok: Sequence[tuple[int, ...]], what: str) -> None:
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8:
        raise ValueError(f"{what} must be a uint8 numpy array")
    if (a.ndim, a.shape[2] if a.ndim == 3 else None) not in ndim_ok:
        raise ValueError(f"{what} has shape {a.shape}")
    container.Header(a.shape[1], a.shape[0], "RGB", 1, bytes(8))  # size limits -> ValueError


def check_refine(refine) -> int:
    """The refinement steps option: an int 0..MAX_REFINE (0: off); ValueError otherwise."""
    if isinstance(refine, bool) or not isinstance(refine, (int, np.integer)) \
            or not 0 <= refine <= MAX_REFINE:
        raise ValueError(f"refine must be an integer 0..{MAX_REFINE} (refinement steps), "
                         f"not {refine!r}")
    return int(refine)


def encode(rgb: np.ndarray, quality: str | int = "32c", *, tile: int | None = None,
           refine: int = 0) -> tuple[dict, list[bytes], list[int]]:
    """(H, W, 3) RGB or (H, W) grey uint8 -> (header fields, channel streams, stream modes).
    refine: encoder-side refinement steps (refine.py; slower encoding, same decoder)."""
    _check_pixels(rgb, [(3, 3), (2, None)], "image")
    q = resolve_quality(quality)
    refine = check_refine(refine)
    info = runtime.model_info(q)
    lat = _analyse(runtime.network(q, "encoder"), rgb, tile, refine)
    streams, modes = _compress(lat)
    fields = {"width": rgb.shape[1], "height": rgb.shape[0], "model_id": info.model_id,
              "fingerprint": info.fingerprint}
    return fields, streams, modes


def check_model(header: Header) -> runtime.ModelInfo:
    """The model a file needs; ModelError (OSError) if its fingerprint is not the installed one."""
    info = runtime.model_info(header.model_id)
    if header.fingerprint != info.fingerprint:
        raise runtime.ModelError(
            f"this l3ic file was encoded by model {info.quality} with fingerprint "
            f"{header.fingerprint.hex()}, but the installed model {info.decoder_path} has "
            f"fingerprint {info.fingerprint.hex()} ({info.json_path.name}); it cannot be decoded")
    return info


def _luma(rgb: np.ndarray) -> np.ndarray:
    """Pillow's RGB -> L: (299 R + 587 G + 114 B) / 1000 in 16-bit fixed point."""
    px = rgb.astype(np.uint32)
    return ((px[..., 0] * 19595 + px[..., 1] * 38470 + px[..., 2] * 7471 + 0x8000) >> 16
            ).astype(np.uint8)


def decode(header: Header, streams: Sequence[bytes | None], *, gray: bool = False,
           allow_truncated: bool = False, tile: int | None = None) -> np.ndarray:
    """Channel streams -> (H, W, 3) RGB, or (H, W) luma if ``gray``."""
    if header.model_id == container.HP_MODEL_ID:
        from . import hp_codec
        rgb = hp_codec.decode(header, streams, threads=runtime.num_threads(),
                              allow_truncated=allow_truncated)
        return _luma(rgb) if gray else rgb
    info = check_model(header)
    if len(streams) != info.channels:
        raise ValueError(f"model {info.quality} needs {info.channels} streams, got {len(streams)}")
    lat = _decompress(streams, info.channels, header.latent_h, header.latent_w, allow_truncated)
    return _synthesise(runtime.network(info.quality, "decoder"), lat, header.height,
                       header.width, gray, tile)


_SHAPES = {"RGB": (3, 3), "L": (2, None), "RGBA": (3, 4), "LA": (3, 2)}


def encode_image(pixels: np.ndarray, mode: str, quality: str | int = "32c", *,
                 icc: bytes | None = None, exif: bytes | None = None, xmp: bytes | None = None,
                 tile: int | None = None, refine: int = 0, family: str = "l3ic") -> bytes:
    """A whole .l3c file in memory (see the module docstring for ``mode`` and shapes).
    family "hp" writes a version 3 file with the hyperprior model (hp_codec)."""
    options.check_family(family)
    if mode not in _SHAPES:
        raise ValueError(f"unsupported mode {mode!r} (use RGB, L, RGBA or LA)")
    _check_pixels(pixels, [_SHAPES[mode]], f"{mode} image")
    colour = {"RGB": pixels, "L": pixels, "RGBA": pixels[..., :3], "LA": pixels[..., 0]}[mode]
    alpha = None
    if mode in container.ALPHA_MODES:
        alpha = zlib.compress(np.ascontiguousarray(pixels[..., -1]), 6)
    if family == "hp":
        from . import hp_codec
        level = hp_codec.resolve_level(quality)
        if refine:
            raise ValueError("refine is not available for the hp model family (its refiner "
                             "network does not exist yet)")
        fields, streams, modes = hp_codec.encode(colour, level, threads=runtime.num_threads())
    else:
        fields, streams, modes = encode(colour, quality, tile=tile, refine=refine)
    return container.pack(Header(mode=mode, **fields), streams, modes, icc=icc, exif=exif,
                          xmp=xmp, alpha=alpha)


def _inflate_alpha(blob: bytes | None, H: int, W: int, allow_truncated: bool) -> np.ndarray:
    alpha = np.full(H * W, 255, np.uint8)      # missing alpha (truncated file): opaque
    if blob is None:
        return alpha.reshape(H, W)
    d = zlib.decompressobj()
    try:
        raw = d.decompress(blob, H * W)
        ok = len(raw) == H * W and d.eof and not d.unused_data
    except zlib.error:
        raw, ok = b"", False
    if not ok and not allow_truncated:
        raise ContainerError("alpha chunk is corrupt (not a zlib stream of width x height bytes)")
    alpha[:len(raw)] = np.frombuffer(raw, np.uint8)
    return alpha.reshape(H, W)


def decode_image(fp: BinaryIO | bytes, layout: container.Layout | None = None, *,
                 allow_truncated: bool = False, tile: int | None = None) -> np.ndarray:
    """Decode a container (a seekable file positioned at its start, or bytes) to pixels of
    the header's mode.  With ``allow_truncated`` missing channels decode as zeros and a missing
    alpha plane as opaque; otherwise a truncated or corrupt file raises ContainerError."""
    if isinstance(fp, (bytes, bytearray, memoryview)):
        from io import BytesIO
        fp = BytesIO(fp)
    if layout is None:
        layout = container.read_layout(fp)
    header = layout.header
    if header.model_id != container.HP_MODEL_ID:
        check_model(header)
    streams = container.read_channels(fp, layout, allow_truncated=allow_truncated)
    blob = container.read_alpha(fp, layout, allow_truncated=allow_truncated)
    gray = header.mode in ("L", "LA")
    colour = decode(header, streams, gray=gray, allow_truncated=allow_truncated, tile=tile)
    if not header.has_alpha:
        return colour
    alpha = _inflate_alpha(blob, header.height, header.width, allow_truncated)
    if gray:
        return np.stack((colour, alpha), axis=-1)
    out = np.empty((header.height, header.width, 4), np.uint8)
    out[..., :3] = colour
    out[..., 3] = alpha
    return out
