"""The save options' vocabulary, in one place: model families, quality presets and aliases.

Families
    "l3ic"  the three fixed-rate models of release 0.1.0 (16c, 32c, 64c), format versions 1-2;
    "hp"    the variable-rate mean-scale hyperprior model, format version 3 (hp_codec).
Quality
    presets "16c", "32c", "64c" and their aliases "low", "medium", "high" (case-insensitive);
    numbers: l3ic takes integers 1-100 (1-40 -> 16c, 41-75 -> 32c, 76-100 -> 64c), hp takes any
    number 0-100 (int or float), mapped continuously onto the model's rate range.
"""
from __future__ import annotations

import numbers

FAMILIES = ("l3ic", "hp")
DEFAULT_FAMILY = "l3ic"
PRESETS = ("16c", "32c", "64c")
QUALITY_ALIASES = {"low": "16c", "medium": "32c", "high": "64c"}
QUALITY_MAX = 100


def check_family(family) -> str:
    if family not in FAMILIES:
        raise ValueError(f"unknown l3ic model family {family!r} (use {' or '.join(FAMILIES)})")
    return family


def preset(quality) -> str | None:
    """The preset a string quality names ("32c", "Medium", ...), else None."""
    if isinstance(quality, str):
        q = quality.strip().lower()
        q = QUALITY_ALIASES.get(q, q)
        if q in PRESETS:
            return q
    return None


def number(quality) -> float | None:
    """A numeric quality (not bool) as float, else None."""
    if isinstance(quality, numbers.Real) and not isinstance(quality, bool):
        return float(quality)
    return None
