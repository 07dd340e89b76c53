"""Training and validation images, held in memory as uint8 arrays; random patches for the batches.

Training sources (only these): ../shared/data/photos/train and the Debian photo packages fetched by
training.fetch_data. The Debian JPEGs are downscaled by 2 first so the model does not learn JPEG
artefacts. Each image is also kept at 3/4 and 1/2 scale ("random downscaling"), so patches cover
several scales of detail. Validation: central crops of ../shared/data/photos/val.
"""
import glob
import os

import numpy as np
from PIL import Image

from training.fetch_data import debian_photos

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")
TRAIN_DIR = os.path.join(SHARED, "photos", "train")
VAL_DIR = os.path.join(SHARED, "photos", "val")
SCALES = (1.0, 0.75, 0.5)


def _load_rgb(path: str, downscale: int = 1) -> Image.Image:
    with Image.open(path) as im:
        im = im.convert("RGB")
        if downscale > 1:
            im = im.reduce(downscale)
        return im


def _pyramid(im: Image.Image, patch: int) -> list[np.ndarray]:
    levels = []
    for s in SCALES:
        w, h = round(im.width * s), round(im.height * s)
        if min(w, h) < patch:
            continue
        levels.append(np.asarray(im if s == 1.0 else im.resize((w, h), Image.LANCZOS)))
    return levels


def load_training_images(patch: int) -> list[np.ndarray]:
    images = []
    for path in sorted(glob.glob(os.path.join(TRAIN_DIR, "*.png"))):
        images += _pyramid(_load_rgb(path), patch)
    for path in debian_photos():
        im = _load_rgb(path, downscale=2)
        if max(im.size) > 2048:  # very large wallpapers: another halving keeps memory modest
            im = im.reduce(2)
        images += _pyramid(im, patch)
    if not images:
        raise SystemExit(f"no training images found in {TRAIN_DIR}")
    return images


class PatchSampler:
    """Random crops with random horizontal/vertical flips; images drawn in proportion to area."""

    def __init__(self, images: list[np.ndarray], patch: int, seed: int = 0):
        self.images, self.patch = images, patch
        areas = np.array([im.shape[0] * im.shape[1] for im in images], dtype=np.float64)
        self.p = areas / areas.sum()
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> np.ndarray:
        out = np.empty((size, self.patch, self.patch, 3), np.float32)
        for i, k in enumerate(self.rng.choice(len(self.images), size, p=self.p)):
            im = self.images[k]
            y = self.rng.integers(0, im.shape[0] - self.patch + 1)
            x = self.rng.integers(0, im.shape[1] - self.patch + 1)
            crop = im[y:y + self.patch, x:x + self.patch]
            if self.rng.random() < 0.5:
                crop = crop[:, ::-1]
            if self.rng.random() < 0.5:
                crop = crop[::-1]
            out[i] = crop
        return out / 255.0


def load_validation_images(crop: int = 512) -> list[np.ndarray]:
    """Central crops (multiples of 8) of the validation photos, float32 in [0,1]."""
    images = []
    for path in sorted(glob.glob(os.path.join(VAL_DIR, "*.png"))):
        a = np.asarray(_load_rgb(path))
        h, w = (min(crop, s) // 8 * 8 for s in a.shape[:2])
        y, x = (a.shape[0] - h) // 2, (a.shape[1] - w) // 2
        images.append(a[y:y + h, x:x + w].astype(np.float32) / 255.0)
    return images
