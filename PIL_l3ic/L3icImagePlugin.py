"""Pillow plugin for l3ic (``.l3c``): ``Image.open`` / ``Image.save(..., format="L3IC")``.

Opening parses the header only (``container.read_layout``): size, mode and ``info``
(``icc_profile``, ``exif``, ``xmp``) are available at once, Pillow's decompression-bomb check
runs on the size before any decoding, and the networks run on ``load()`` (through the
"l3ic" ``ImageFile.PyDecoder``, so paths, BytesIO and open files, ``thumbnail``, ``convert``
and ``ImageOps.exif_transpose`` behave as for any other format).  Modes: RGB, L, RGBA, LA.
With ``ImageFile.LOAD_TRUNCATED_IMAGES = True`` a file cut inside its channel streams decodes
the intact channels and the missing ones as zeros (a missing alpha plane as opaque).
``im.verify()`` checks every CRC without decoding; an opened image also carries
``im.l3ic_model`` ("16c"/"32c"/"64c", or "hp") and ``im.l3ic_layout`` (``container.Layout``).

Save options
    quality       "16c" | "32c" (default) | "64c", or "low" | "medium" | "high" (the same three
                  models), or a Pillow-style int: 1-40 -> "16c", 41-75 -> "32c", 76-100 -> "64c".
    icc_profile   bytes; default ``im.info["icc_profile"]``; None or b"" drops it.
    exif          bytes or ``Image.Exif`` (not copied from ``im.info`` unless given, as in
                  Pillow's JPEG/PNG/WebP plugins).
    xmp           bytes or str (UTF-8), likewise only when given.
    model         "l3ic" (default: the three release 0.1.0 models) or "hp" (the
                  variable-rate hyperprior model, file format version 3: quality then takes
                  the presets or any number 0-100; see docs/hyperprior.md).
    refine        int 0..1000, default 0: encoder-side refinement steps (``refine.py``): each
                  step runs the model's refiner network (about 0.2 s at 512x512 on 2 cores), so
                  encoding is slower; decoding and the file format are unchanged.  ~30 steps
                  close most of the gain (docs/refine.md).
Invalid values raise ValueError.  Image modes are stored as:
    RGB, L, RGBA, LA   as they are
    P                  RGBA if it has transparency, else RGB;  PA -> RGBA
    1                  L (0/255);  CMYK -> RGB (Pillow's conversion)
    I;16, I;16L/B/N    L, the high byte (value >> 8), i.e. 0..65535 scaled to 0..255
    I, F               L, Pillow's convert("L") (values clipped to 0..255)
anything else: ValueError.  The file is encoded completely in memory before the first byte is
written, so a failing encode never leaves a partial file; a failing write (full disk) cuts the
file back to where the save started.
"""
from __future__ import annotations

import errno
import io
from io import BytesIO
from typing import IO

import numpy as np
from PIL import Image, ImageFile

from . import codec, container, options, runtime

FORMAT = "L3IC"
EXTENSIONS = [".l3c"]
MIME = "image/x-l3ic"
DEFAULT_QUALITY = "32c"
_I16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _accept(prefix: bytes) -> bool:
    return container.accept(prefix)


class L3icImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "l3ic learned lossy image"

    def _open(self) -> None:
        layout = container.read_layout(self.fp)   # NotL3icError is a SyntaxError: not ours
        header = layout.header
        self._size = header.size
        self._mode = header.mode
        for key, value in (("icc_profile", layout.icc), ("exif", layout.exif),
                           ("xmp", layout.xmp)):
            if value is not None:
                self.info[key] = value
        self.l3ic_layout = layout                         # container.Layout
        self.l3ic_model = ("hp" if header.model_id == container.HP_MODEL_ID
                           else runtime.QUALITY_BY_ID[header.model_id])
        self.tile = [ImageFile._Tile("l3ic", (0, 0) + header.size, layout.base, (layout,))]

    def verify(self) -> None:
        """Check every CRC (channel streams, alpha plane) without running the networks."""
        if self.fp is None:
            raise RuntimeError("verify must be called directly after open")
        container.read_channels(self.fp, self.l3ic_layout)
        container.read_alpha(self.fp, self.l3ic_layout)
        super().verify()


class L3icDecoder(ImageFile.PyDecoder):
    """Decodes the whole image in one call, reading the streams from the file itself.  Fed
    through ``ImageFile.Parser`` instead (no file), it buffers the data until the container
    is complete."""
    _pulls_fd = True
    _buffer: bytearray | None = None

    def decode(self, buffer: bytes | Image.SupportsArrayInterface) -> tuple[int, int]:
        (layout,) = self.args
        fp = self.fd
        if fp is None:     # ImageFile.Parser: data arrives in pieces, from the container start
            if self._buffer is None:
                self._buffer = bytearray()
            self._buffer += buffer
            if len(self._buffer) < layout.end:
                return len(buffer), 0
            fp = BytesIO(self._buffer)
            layout = container.read_layout(fp)
        pixels = codec.decode_image(fp, layout,
                                    allow_truncated=bool(ImageFile.LOAD_TRUNCATED_IMAGES))
        self.set_as_raw(memoryview(pixels).cast("B"), layout.header.mode)
        return -1, 0


# ----------------------------------------------------------------------------- saving

def _codec_image(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode in container.MODES:
        return im
    if mode == "P":
        return im.convert("RGBA" if im.has_transparency_data else "RGB")
    if mode == "PA":
        return im.convert("RGBA")
    if mode in ("1", "I", "F"):
        return im.convert("L")
    if mode == "CMYK":
        return im.convert("RGB")
    if mode in _I16_MODES:
        a = np.asarray(im)
        return Image.fromarray((a >> 8).astype(np.uint8), "L")
    raise ValueError(f"cannot write mode {mode} as L3IC (supported: RGB, L, RGBA, LA, P, PA, "
                     "1, CMYK, I;16, I, F)")


def _bytes_option(name: str, value) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str) and name == "xmp":
        value = value.encode("utf-8")
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ValueError(f"L3IC save option {name} must be bytes, not {type(value).__name__}")
    return bytes(value) or None


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    info = im.encoderinfo
    family = options.check_family(info.get("model", options.DEFAULT_FAMILY))
    quality = info.get("quality", DEFAULT_QUALITY)
    if family == "l3ic":
        quality = codec.resolve_quality(quality)
    refine = codec.check_refine(info.get("refine", 0))
    icc = _bytes_option("icc_profile", info.get("icc_profile", im.info.get("icc_profile")))
    exif = info.get("exif")
    if isinstance(exif, Image.Exif):
        exif = exif.tobytes()
    exif = _bytes_option("exif", exif)
    xmp = _bytes_option("xmp", info.get("xmp"))
    for name, value in (("icc_profile", icc), ("exif", exif), ("xmp", xmp)):
        if value is not None and len(value) > container.MAX_METADATA:
            raise ValueError(f"L3IC save option {name} is {len(value)} bytes, "
                             f"limit {container.MAX_METADATA}")
    frame = _codec_image(im)
    frame.load()
    data = codec.encode_image(np.asarray(frame), frame.mode, quality, icc=icc, exif=exif,
                              xmp=xmp, refine=refine, family=family)
    _write_all_or_nothing(fp, data)


def _write_all_or_nothing(fp: IO[bytes], data: bytes) -> None:
    """Write ``data``; if the write fails (e.g. a full disk), cut the file back to where it
    started so that no partial .l3c is left behind, then re-raise.  A buffered file (what
    Pillow opens for a path) is written through its raw file: data left in the buffer after a
    failed write would otherwise be written again, partially, when the file is closed."""
    raw = getattr(fp, "raw", None)
    if isinstance(fp, (io.BufferedWriter, io.BufferedRandom)) and raw is not None \
            and raw.seekable():
        fp.flush()                    # whatever the caller wrote before us goes out first
        start = fp.tell()
        raw.seek(start)
        view, done = memoryview(data), 0
        try:
            while done < len(view):
                n = raw.write(view[done:])
                if n is None:             # non-blocking file that cannot take more now
                    raise BlockingIOError(errno.EAGAIN, "write would block")
                done += n
        except BaseException:
            try:
                raw.truncate(start)
            except OSError:
                pass
            fp.seek(start)            # buffer empty, positions consistent again
            raise
        fp.seek(start + done)
        return
    try:
        start = fp.tell()
    except (AttributeError, OSError, ValueError):
        start = None
    try:
        fp.write(data)
        flush = getattr(fp, "flush", None)
        if flush is not None:
            flush()
    except BaseException:
        if start is not None:
            try:
                fp.seek(start)
                fp.truncate()
            except (AttributeError, OSError, ValueError):
                pass
        raise


Image.register_open(FORMAT, L3icImageFile, _accept)
Image.register_save(FORMAT, _save)
Image.register_extensions(FORMAT, EXTENSIONS)
Image.register_mime(FORMAT, MIME)
Image.register_decoder("l3ic", L3icDecoder)
