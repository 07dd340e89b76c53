"""What the command line (``cli.py``, ``cli_convert.py``) and batch conversion (``batch.py``)
share, so each rule lives in one place: Pillow with L3IC registered, the metadata carried from
file to file, the format, suffix and bytes a decode writes, byte counts as text.  Public API only.
"""
from __future__ import annotations

import io

META = ("icc_profile", "exif", "xmp")
_NO_ALPHA = ("JPEG", "BMP", "PPM")


def pillow():
    """``PIL.Image`` with the L3IC format registered (imported when first needed, so that
    importing the CLI or ``batch`` stays cheap)."""
    from PIL import Image
    import PIL_l3ic  # noqa: F401  (registers the L3IC format with Pillow)
    return Image


def metadata(im, strip: bool = False) -> dict:
    """Save options carrying ICC profile, EXIF and XMP over (or dropping them: an explicit
    ``icc_profile=None``, as the L3IC plugin otherwise keeps the image's own profile)."""
    if strip:
        return {"icc_profile": None}
    return {k: im.info[k] for k in META if im.info.get(k)}


def output_format(name: str) -> tuple[str, str]:
    """``(Pillow format, file suffix)`` a decode writes for ``name`` ("png", "jpg", "TIFF",
    ...); ValueError if Pillow cannot write it."""
    Image = pillow()
    Image.init()
    fmt = Image.EXTENSION.get("." + name.lower(), name.upper())  # jpg -> JPEG
    exts = [e for e, f in Image.EXTENSION.items() if f == fmt]
    if fmt not in Image.SAVE or not exts:
        raise ValueError(f"Pillow cannot write format {name!r}")
    return fmt, (f".{name.lower()}" if f".{name.lower()}" in exts else exts[0])


def decode_as(src: str, fmt: str, error=ValueError) -> tuple[bytes, int]:
    """``src`` (.l3c) decoded and saved in memory as Pillow format ``fmt``, with ICC profile,
    EXIF and XMP (alpha dropped for formats without it): ``(data, pixels)``.  ``error``: the
    exception for a file that is not l3ic (the CLI passes one it prints without a type name)."""
    Image = pillow()
    with Image.open(src) as im:
        if im.format != "L3IC":
            raise error(f"not an l3ic file (Pillow reads it as {im.format})")
        im.load()
        out = im
        if fmt.upper() in _NO_ALPHA and im.mode in ("RGBA", "LA"):
            out = im.convert(im.mode[:-1])
        buf = io.BytesIO()
        out.save(buf, format=fmt, **metadata(im))
        return buf.getvalue(), im.width * im.height


def size_text(n: float) -> str:
    """A byte count for summaries: ``12.5 kB`` (decimal units)."""
    return next((f"{n / 10 ** e:.1f} {u}" for e, u in ((9, "GB"), (6, "MB"), (3, "kB"))
                 if n >= 10 ** e), f"{int(n)} B")
