"""Average the weights of several checkpoints of one model (stochastic weight averaging, "model
soup"): ``python -m training.average OUT.npz IN.npz ...``.

Checkpoints taken a few hundred steps apart late in a run sit in one basin; their mean lands
nearer its floor than any of them (measured on 16c, docs/training.md: two checkpoints 640 steps
apart +0.02 dB, two runs of the same parent +0.0003 SSIM over their midpoint).  The inputs must
have the same layers and shapes.  OUT has the run-checkpoint layout (float32, no optimizer
state, the meta/ keys of the input with the latest step), so export, qat and evaluation read
it like a final.npz.  `train.py --snapshot-every N` keeps the checkpoints to average.
"""
import argparse

import numpy as np

from . import weights


def average(paths: list[str]) -> tuple[dict[str, np.ndarray], dict]:
    """Uniform mean of the weight arrays of ``paths``; returns (arrays, meta of the latest step)."""
    if not paths:
        raise ValueError("nothing to average")
    total, meta = None, None
    for path in paths:
        arrays, m = weights.load_npz(path)
        if meta is None or m.get("step", -1) >= meta.get("step", -1):
            meta = m
        if total is None:
            total = {k: v.astype(np.float64) for k, v in arrays.items()}
            continue
        if arrays.keys() != total.keys():
            raise ValueError(f"{path} has other layers than {paths[0]}: "
                             f"{sorted(arrays.keys() ^ total.keys())[:4]}")
        for k, v in arrays.items():
            if v.shape != total[k].shape:
                raise ValueError(f"{path}: {k} has shape {v.shape}, {paths[0]} {total[k].shape}")
            total[k] += v
    return {k: (v / len(paths)).astype(np.float32) for k, v in total.items()}, meta


def save(path: str, arrays: dict[str, np.ndarray], meta: dict, sources: list[str]) -> None:
    # optimizer: load_npz's list, not a key; averaged: an input's own count (a soup of averages)
    keep = {k: v for k, v in meta.items() if k not in ("optimizer", "averaged")}
    weights.save_arrays(path, arrays, **keep, averaged=len(sources))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the averaged weights (.npz)")
    p.add_argument("inputs", nargs="+", help="checkpoints of one model (.npz)")
    args = p.parse_args(argv)
    arrays, meta = average(args.inputs)
    save(args.out, arrays, meta, args.inputs)
    print(f"{args.out}: mean of {len(args.inputs)} checkpoints (last step {meta.get('step')})")


if __name__ == "__main__":
    main()
