"""The checks the fuzz harnesses run on each input, importable without atheris (the regression
replay in tests/test_security.py uses them directly).

decode_all(buf, verify=True, parser=False) -> outcome tag
    Image.open(..., formats=["L3IC"]) + load() (+ LOAD_TRUNCATED_IMAGES retry on failure,
    + verify() on a fresh open, + ImageFile.Parser); raises Finding or an unexpected exception
    on a bug, returns "rejected-open" / "rejected-load" / "decoded" / "salvaged".
check_stream(data) -> "accepted" | "accepted-long" | "rejected"
    every entry point of PIL_l3ic._fse on one stream (see fuzz/fuzz_fse.py).
check_class_stream(data) -> "accepted" | "rejected"
    the class coder's decoder on the same input read as 2 bytes of n + a stream (class_input).
Allowed exceptions on bad input: OSError (ContainerError, ModelError, UnidentifiedImageError,
Pillow's own truncation errors) and Image.DecompressionBombError; FSEError for _fse.
"""
from __future__ import annotations

import io
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

_common.use_fuzz_extension()
from PIL import Image, ImageFile  # noqa: E402

import PIL_l3ic  # noqa: E402,F401  (registers the plugin)
from PIL_l3ic import container, runtime  # noqa: E402

ALLOWED = (OSError, Image.DecompressionBombError)
MODES = frozenset(container.MODES)
MAX_STREAM_N = 1 << 22   # check_stream decodes streams up to this many symbols


class Finding(AssertionError):
    """An invariant of the decode path does not hold for this input."""


# ----------------------------------------------------------------------------- whole files

def _check_image(im: Image.Image, size: tuple[int, int], mode: str) -> None:
    if im.size != size or im.mode != mode or mode not in MODES:
        raise Finding(f"decoded {im.mode} {im.size}, header says {mode} {size}")
    if len(im.tobytes()) != size[0] * size[1] * len(mode):
        raise Finding("decoded pixel buffer has the wrong length")


def _open(buf: bytes) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(buf), formats=["L3IC"])


def decode_all(buf: bytes, verify: bool = True, parser: bool = False,
               salvage: bool = True) -> str:
    """Run the decode entry points on ``buf`` (see the module docstring)."""
    try:
        im = _open(buf)
    except ALLOWED:
        return "rejected-open"
    size, mode = im.size, im.mode
    for key in ("icc_profile", "exif", "xmp"):   # metadata chunks: read and CRC-checked
        if key in im.info and not isinstance(im.info[key], bytes):
            raise Finding(f"info[{key!r}] is {type(im.info[key]).__name__}")
    outcome = "rejected-load"
    try:
        with im:
            im.load()
            _check_image(im, size, mode)
        outcome = "decoded"
    except ALLOWED:
        if salvage:
            outcome = _salvage(buf, size, mode)
    if verify:
        try:
            with _open(buf) as im:
                im.verify()
        except ALLOWED:
            pass
    if parser:
        p = ImageFile.Parser()
        try:
            for i in range(0, len(buf), 997):
                p.feed(buf[i:i + 997])
            with p.close() as im:
                _check_image(im, size, mode)
        except ALLOWED:
            pass
    return outcome


def _salvage(buf: bytes, size, mode) -> str:
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with _open(buf) as im:
            im.load()
            _check_image(im, size, mode)
        return "salvaged"
    except ALLOWED:
        return "rejected-load"
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _standin_output(shape, fill, take, up: int, down: int, c_out: int):
    """Fill a real-sized input buffer, then hand ``take`` an output of the exact shape the
    network would give: ``up`` x larger (a decoder, with some input-dependent content) or
    ``down`` x smaller, rounded up as with SAME padding (zeros)."""
    buf = np.empty(shape, np.float32)
    fill(buf)
    _, h, w, _ = shape
    if up > 1:
        out = np.full((1, up * h, up * w, c_out), 128.0, np.float32)
        out[0, ::up, ::up, :] = buf[0, :, :, :c_out] * 8.0
    else:
        out = np.zeros((1, -(-h // down), -(-w // down), c_out), np.float32)
    return take(out)


class _StandIn:
    """Same interface as runtime.Network; runs the real network only while ``real`` is set."""
    real = True

    def __init__(self, net):
        self.net, self.info, self.path, self.kind = net, net.info, net.path, net.kind

    def run(self, shape, fill, take):
        if _StandIn.real:
            return self.net.run(shape, fill, take)
        if self.kind == "decoder":
            return _standin_output(shape, fill, take, 8, 1, 3)
        return _standin_output(shape, fill, take, 1, 8, self.info.channels)


_hp_stride: list[int] = []


def _file_scale(net) -> tuple[int, int]:
    """(up, down) of an hp network (runtime.FileNetwork): the decoder (c_out 3) upsamples by
    the model's stride, the encoder (c_in 3) downsamples by it, the hyper-encoder by 4."""
    c_in, c_out = net._channels
    if not _hp_stride:
        from PIL_l3ic import hp_codec
        _hp_stride.append(hp_codec.load_model().stride)
    if c_out == 3:
        return _hp_stride[0], 1
    return 1, _hp_stride[0] if c_in == 3 else 4


def install_network_standin() -> type[_StandIn]:
    """Route runtime.network (the 0.1.0 models) and runtime.FileNetwork.run (the hp models)
    through the stand-in; set ``_StandIn.real`` per input."""
    if getattr(runtime.network, "_standin", False):
        return _StandIn
    real_network = runtime.network
    real_file_run = runtime.FileNetwork.run
    cache: dict[int, _StandIn] = {}

    def network(quality, kind):
        net = real_network(quality, kind)
        if id(net) not in cache:
            cache[id(net)] = _StandIn(net)
        return cache[id(net)]

    def file_run(self, shape, fill, take):
        if _StandIn.real:
            return real_file_run(self, shape, fill, take)
        return _standin_output(shape, fill, take, *_file_scale(self), self._channels[1])

    network._standin = True
    runtime.network = network
    runtime.FileNetwork.run = file_run
    return _StandIn


# ----------------------------------------------------------------------------- one stream

def check_stream(data: bytes) -> str:
    """Every entry point of the entropy decoder on one stream (see fuzz/fuzz_fse.py)."""
    fse = _common.fse_module()
    FSEError = fse.FSEError
    try:
        info = fse.stream_info(data)
    except FSEError:
        info = None
    if info is None:
        for n in (0, 1, 64):
            try:
                fse.decompress(data, n)
            except FSEError:
                continue
            raise Finding(f"decompress(n={n}) accepted a stream that stream_info rejected")
        return "rejected"
    n = info["n"]
    ctx = info["mode"] == "tans-ctx"
    if info["size"] != len(data) or info["mode"] not in ("tans", "tans-ctx", "run", "raw"):
        raise Finding(f"stream_info inconsistent: {info}")
    if ctx != ("context_tables" in info):
        raise Finding(f"stream_info context details inconsistent: {info}")
    width = _common.width_for(n) if n <= MAX_STREAM_N else None
    for wrong in (n - 1, n + 1):
        if 0 <= wrong <= fse.MAX_N:
            try:
                fse.decompress(data, wrong, width=width)
            except FSEError:
                continue
            raise Finding(f"decompress accepted n={wrong} for a stream of {n} symbols")
    if 2 <= n < fse.MAX_N:
        try:
            fse.decompress(data, n, width=n + 1)
        except FSEError:
            pass
        else:
            raise Finding(f"decompress accepted width {n + 1} for {n} symbols")
    if n > MAX_STREAM_N:
        return "accepted-long"
    if ctx:
        try:
            fse.decompress(data, n)
        except FSEError:
            pass
        else:
            raise Finding("a context stream decoded without a width")
    try:
        out = fse.decompress(data, n, width=width)
    except FSEError:
        try:
            fse.decompress_batch([data], n, threads=1, width=width)
        except FSEError:
            return "rejected"
        raise Finding("decompress_batch accepted a stream that decompress rejected")
    if len(out) != n:
        raise Finding(f"decoded {len(out)} symbols, stream declares {n}")
    if fse.decompress(data, width=width) != out:
        raise Finding("decompress(blob) differs from decompress(blob, n)")
    if not ctx and fse.decompress(data) != out:
        raise Finding("a plain stream decodes differently with a width")
    batch = fse.decompress_batch([data, bytearray(data)], n, threads=2, width=width)
    if batch.shape != (2, n) or batch[0].tobytes() != out or batch[1].tobytes() != out:
        raise Finding("decompress_batch differs from decompress")
    again = fse.compress(out, width=width)
    if fse.decompress(again, n, width=width) != out:
        raise Finding("re-encoded stream does not round-trip")
    return "accepted"


# ----------------------------------------------------------------------------- class coder

CLASS_SCALES = (0.3, 1.0, 3.0, 10.0)   # the fixed tables: one Laplace shape per class, counts
                                       # with min_count=0 (class 0: zero counts for |v| >= 2)
CLASS_E, CLASS_R = 6, 9                # values -6..6 in the tables, escapes beyond
_class_tables: list = []


def class_tables(fse):
    """The harnesses' fixed ClassTables (fuzz/fuzz_fse.c builds the same ones)."""
    if not _class_tables:
        v = np.arange(-CLASS_E, CLASS_E + 1)
        rows = []
        for b in CLASS_SCALES:
            p = np.exp(-np.abs(v) / b)
            rows.append(np.append(p / p.sum() * 0.98, 0.02))
        q = fse.normalize_counts(np.array(rows), CLASS_R, min_count=0)
        _class_tables.append(fse.ClassTables(q, CLASS_R))
    return _class_tables[0]


def class_input(data: bytes):
    """An input read as a class stream: n = the first 2 bytes (little-endian), the stream is
    the rest; value i has class (i // 3) % 4.  -> (n, classes, stream)"""
    n = int.from_bytes(data[:2], "little") if len(data) >= 2 else 0
    return n, ((np.arange(n) // 3) % len(CLASS_SCALES)).astype(np.uint8), bytes(data[2:])


def check_class_stream(data: bytes) -> str:
    """decompress_classes / decompress_classes_batch on class_input(data): only FSEError on a
    bad stream; an accepted one is what compress_classes writes for the decoded values."""
    fse = _common.fse_module()
    t = class_tables(fse)
    n, cls, stream = class_input(data)
    try:
        out = fse.decompress_classes(stream, cls, t)
    except fse.FSEError:
        try:
            fse.decompress_classes_batch([stream], cls[None], t, threads=1)
        except fse.FSEError:
            return "rejected"
        raise Finding("decompress_classes_batch accepted a stream decompress_classes rejected")
    if out.shape != (n,) or out.dtype != np.int32:
        raise Finding(f"decompress_classes returned {out.dtype} {out.shape} for n = {n}")
    if n and int(np.abs(out.astype(np.int64)).max()) > fse.MAX_CLASS_VALUE:
        raise Finding("decompress_classes returned a value above 2^20")
    batch = fse.decompress_classes_batch([stream, bytearray(stream)], np.stack([cls, cls]), t,
                                         threads=2)
    if not (np.array_equal(batch[0], out) and np.array_equal(batch[1], out)):
        raise Finding("decompress_classes_batch differs from decompress_classes")
    if fse.compress_classes(out, cls, t) != stream:
        raise Finding("an accepted class stream is not the encoder's stream of its values")
    return "accepted"
