"""Plot learning curves (validation PSNR and bpp against training minutes) of several runs.

    python -m training.plot_curves RUN [RUN ...] --out docs/training_curves.png

A RUN is a run name under training/runs/ (its curve.csv) or a path to a curve.csv; curves committed
for the record live in docs/curves/. The baseline of the training-recipe issue (plain recipe, measured
on this machine kind) is drawn for reference.
"""
import argparse
import csv
import os

from training.train import RUNS_DIR

BASELINE = {"minutes": [20, 40, 60], "val_psnr": [24.98, 25.96, 26.61], "val_bpp": [0.71, 0.77, 0.81]}


def read_curve(run: str) -> dict[str, list[float]]:
    path = run if run.endswith(".csv") else os.path.join(RUNS_DIR, run, "curve.csv")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows] for k in ("step", "minutes", "val_psnr", "val_bpp")}


def main(argv=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", default="docs/training_curves.png")
    args = p.parse_args(argv)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(BASELINE["minutes"], BASELINE["val_psnr"], "k--o", label="baseline (plain recipe)")
    ax2.plot(BASELINE["minutes"], BASELINE["val_bpp"], "k--o", label="baseline (plain recipe)")
    for run in args.runs:
        c = read_curve(run)
        if not run.endswith(".csv"):
            name = run
        elif os.path.basename(run) == "curve.csv":   # training/runs/<name>/curve.csv
            name = os.path.basename(os.path.dirname(run))
        else:                                        # docs/curves/<name>.csv
            name = os.path.splitext(os.path.basename(run))[0]
        ax1.plot(c["minutes"], c["val_psnr"], label=name)
        ax2.plot(c["minutes"], c["val_bpp"], label=name)
    ax1.set(xlabel="training wall-clock minutes", ylabel="validation PSNR (dB)")
    ax2.set(xlabel="training wall-clock minutes", ylabel="validation bpp (estimate)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
