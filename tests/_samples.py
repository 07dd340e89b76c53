"""Small synthetic images and in-memory save/decode helpers shared by the robustness tests."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

import PIL_l3ic  # noqa: F401  (registers the L3IC plugin)


def image(mode, w, h, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([128 + 90 * np.sin(x / 5 + c + y / 7) for c in range(3)], -1)
    a = np.clip(a + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8)
    im = Image.fromarray(a, "RGB")
    if mode in ("L", "LA"):
        im = im.convert("L")
    if mode in ("RGBA", "LA"):
        im.putalpha(Image.fromarray(((x * 29 + y * 13) % 256).astype(np.uint8), "L"))
    return im


def save(im, **options):
    b = io.BytesIO()
    im.save(b, "L3IC", **options)
    return b.getvalue()


def decode(data):
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.mode, im.size, im.tobytes()
