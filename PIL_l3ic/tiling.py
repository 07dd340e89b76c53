"""Splitting a latent grid into equal overlapping windows (both model families)."""
from __future__ import annotations

DEFAULT_TILE = 1024   # pixels per tile core side
# With the default tile, images up to this many pixels (1920x1080 and a little more) run in one
# window: no overlap work, and int8 output equals whole-image inference.  Memory for one such
# window is about twice that of a 1024 px tile.
WHOLE_IMAGE_PIXELS = 2_300_000


def tile_cells(tile: int | None, h: int, w: int, stride: int) -> int:
    """Tile core side in latent cells for an h x w latent of the given stride: the whole latent
    up to WHOLE_IMAGE_PIXELS, else DEFAULT_TILE pixels; ``tile`` (pixels, a positive multiple
    of the stride) overrides it (ValueError otherwise)."""
    if tile is None:
        return max(h, w) if h * w * stride * stride <= WHOLE_IMAGE_PIXELS else DEFAULT_TILE // stride
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < stride or tile % stride:
        raise ValueError(f"tile must be a positive multiple of {stride} pixels, not {tile!r}")
    return tile // stride


def spans(n: int, tile: int, margin: int) -> tuple[list[tuple[int, int, int]], int]:
    """Split n latent cells into near-equal cores of at most ``tile`` cells.  Returns
    ([(core_start, core_end, window_start)], window_size): every window has the same size,
    contains its core and at least ``margin`` cells either side where the image goes on."""
    if n <= tile + 2 * margin:
        return [(0, n, 0)], n
    count = -(-n // tile)
    core = -(-n // count)
    size = core + 2 * margin
    out = []
    for start in range(0, n, core):
        end = min(start + core, n)
        out.append((start, end, min(max(start - margin, 0), n - size)))
    return out, size
