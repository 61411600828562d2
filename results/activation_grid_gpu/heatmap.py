"""The G x D heatmap of the full activation grid (147 runs, 10 epochs, one H100) from cells.csv.

cells.csv transcribes the study's table (mean final fid over 3 seeds, and how many of the 3 collapsed); the run
folders are not kept. Run from anywhere:

    python results/activation_grid_gpu/heatmap.py      # writes results/activation_grid_gpu/fid_heatmap.png
"""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ORDER = ["relu", "leaky_relu", "elu", "gelu", "silu", "tanh", "sigmoid"]


def read_cells(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fid = np.full((len(ORDER), len(ORDER)), np.nan)
    coll = np.zeros_like(fid, dtype=int)
    seeds = np.zeros_like(fid, dtype=int)
    with path.open() as fh:
        for row in csv.DictReader(fh):
            i, j = ORDER.index(row["g_act"]), ORDER.index(row["d_act"])
            fid[i, j], seeds[i, j], coll[i, j] = float(row["mean_fid"]), int(row["seeds"]), int(row["collapsed"])
    if np.isnan(fid).any():
        raise SystemExit(f"{path}: the grid is incomplete")
    return fid, seeds, coll


def main() -> None:
    fid, seeds, coll = read_cells(HERE / "cells.csv")
    fig, ax = plt.subplots(figsize=(8.6, 6.6))
    cmap = plt.get_cmap("viridis_r")
    vmin, vmax = fid.min(), fid.max()
    im = ax.imshow(fid, cmap=cmap, vmin=vmin, vmax=vmax)
    for i in range(len(ORDER)):
        for j in range(len(ORDER)):
            r, g, b, _ = cmap((fid[i, j] - vmin) / (vmax - vmin))
            text = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
            ax.text(j, i - 0.12, f"{fid[i, j]:.0f}", ha="center", va="center", color=text, fontsize=12,
                    fontweight="bold")  # fmt: skip
            ax.text(j, i + 0.22, f"{coll[i, j]}/{seeds[i, j]} coll.", ha="center", va="center", color=text, fontsize=8)
    ax.set_xticks(range(len(ORDER)), ORDER, rotation=30, ha="right")
    ax.set_yticks(range(len(ORDER)), ORDER)
    ax.set_xlabel("discriminator hidden activation (model.d_act)")
    ax.set_ylabel("generator hidden activation (model.g_act)")
    ax.set_title("Full activation grid: 7 x 7 x 3 seeds, 10 epochs, one H100\nns loss, no stabilizer, tanh output")
    fig.colorbar(im, ax=ax, label="mean final fid, lower is better")
    fig.tight_layout()
    out = HERE / "fid_heatmap.png"
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
