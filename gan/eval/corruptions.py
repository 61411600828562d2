"""Real digits made worse on purpose: the corruptions that validate the evaluator's metrics (and the calibration
sets of the collapse verdicts).

A sound distance grows as images get worse. ``validate_metrics`` scores 10,000 real training images against the
evaluator's test-set reference, clean and under six corruptions at four increasing severities (as the FID-MNIST
validations do), so that docs/metrics.md can show fid, precision, recall and modes rising or falling with severity and a
test can pin it. Images are N x 28 x 28 floats in [0, 1] here; they are scored after the lab's own padding to 32x32.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from gan.data import load_split, to_flat_images
from gan.eval.classifier import Evaluator
from gan.eval.metrics import frechet_distance
from gan.files import atomic_write

Corruption = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]


def gaussian_noise(x: torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    return (x + std * torch.randn(x.shape, generator=gen)).clamp(0, 1)


def salt_and_pepper(x: torch.Tensor, fraction: float, gen: torch.Generator) -> torch.Tensor:
    """A ``fraction`` of the pixels set to black or white, half each."""
    u = torch.rand(x.shape, generator=gen)
    return torch.where(u < fraction / 2, 0.0, torch.where(u < fraction, 1.0, x))


def blur(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    size = 2 * math.ceil(3 * sigma) + 1
    return gaussian_blur(x.unsqueeze(1), [size, size], [sigma, sigma]).squeeze(1)


def blank_square(x: torch.Tensor, side: float, gen: torch.Generator) -> torch.Tensor:
    """A ``side`` x ``side`` square of background at a random place in the central 20 x 20 (where digits are)."""
    n, h, w = x.shape
    side = int(side)
    top = 4 + torch.randint(0, 20 - side + 1, (n,), generator=gen)
    left = 4 + torch.randint(0, 20 - side + 1, (n,), generator=gen)
    rows, cols = torch.arange(h), torch.arange(w)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
    return x.masked_fill(in_rows[:, :, None] & in_cols[:, None, :], 0.0)


def pixelate(x: torch.Tensor, factor: float, gen: torch.Generator) -> torch.Tensor:
    """Averaged over ``factor`` x ``factor`` blocks, then blown up again (``factor`` divides 28)."""
    f = int(factor)
    return F.interpolate(F.avg_pool2d(x.unsqueeze(1), f), scale_factor=f, mode="nearest").squeeze(1)


def translation(x: torch.Tensor, pixels: float, gen: torch.Generator) -> torch.Tensor:
    """Each image shifted by ``pixels`` in one of the 8 directions (drawn per image), background filled in."""
    p = int(pixels)
    padded = F.pad(x, (p, p, p, p))
    direction = torch.randint(0, 8, (len(x),), generator=gen)
    moves = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    out = torch.empty_like(x)
    for d, (dy, dx) in enumerate(moves):
        chosen = direction == d
        top, left = p - dy * p, p - dx * p
        out[chosen] = padded[chosen, top : top + x.shape[1], left : left + x.shape[2]]
    return out


# Each corruption with its four severities, mild to severe.
CORRUPTIONS: dict[str, tuple[Corruption, tuple[float, ...]]] = {
    "gaussian_noise": (gaussian_noise, (0.05, 0.1, 0.2, 0.4)),  # std
    "salt_and_pepper": (salt_and_pepper, (0.02, 0.05, 0.1, 0.2)),  # share of pixels
    "blur": (blur, (0.5, 1.0, 1.5, 2.5)),  # Gaussian sigma in pixels
    "blank_square": (blank_square, (4, 8, 12, 16)),  # side in pixels
    "pixelate": (pixelate, (2, 4, 7, 14)),  # block side in pixels
    "translation": (translation, (1, 2, 3, 5)),  # shift in pixels
}


def real_images(root: str, num_images: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random draw of ``num_images`` training images (N x 28 x 28 in [0, 1]) and their labels."""
    images, labels = load_split(root, "train")
    keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:num_images]
    return images[keep].float() / 255.0, labels[keep]


def flat(x: torch.Tensor) -> torch.Tensor:
    """N x 28 x 28 in [0, 1] -> the lab's N x 1024 (padded to 32 x 32) in [0, 1], through the data module's path."""
    return to_flat_images((x * 255).round().to(torch.uint8), (0.0, 1.0))


def validate_metrics(
    evaluator: Evaluator, root: str, num_images: int = 10000, seed: int = 0, fid_only: bool = False
) -> list[dict[str, Any]]:
    """Every metric (or only the fid) of ``num_images`` real training images, clean (severity 0) and under each
    corruption at each severity (1 to 4): one row each, with the corruption's parameter."""

    def score(images: torch.Tensor) -> dict[str, float]:
        if fid_only:
            return {"fid": frechet_distance(evaluator.embed(flat(images), (0.0, 1.0))[0], evaluator.test_features)}
        return evaluator.score(flat(images), (0.0, 1.0))

    x, _ = real_images(root, num_images, seed)
    clean = score(x)
    rows = []
    for name, (corrupt, levels) in CORRUPTIONS.items():
        rows.append({"corruption": name, "severity": 0, "parameter": 0.0, **clean})
        for severity, level in enumerate(levels, 1):
            gen = torch.Generator().manual_seed(seed + severity)
            rows.append(
                {"corruption": name, "severity": severity, "parameter": float(level), **score(corrupt(x, level, gen))}
            )
    return rows


def write_validation(evaluator: Evaluator, root: str, num_images: int, out: str) -> str:
    """The corruption study into ``out``: validation.md (a table per metric: rows corruptions, columns severities),
    validation.json (every row) and validation.png (each metric against severity); prints the fid table."""
    rows = validate_metrics(evaluator, root, num_images)
    folder = Path(out)
    levels = "; ".join(f"{name} {list(values)}" for name, (_, values) in CORRUPTIONS.items())
    lines = [
        f"Metrics of {num_images} real MNIST training images against the evaluator's test-set reference, clean "
        f"(severity 0) and corrupted (severities 1-4: {levels})."
    ]
    for metric in ("fid", "precision", "recall", "modes"):
        lines += ["", f"| {metric} | " + " | ".join(str(s) for s in range(5)) + " |", "|---|" + "---|" * 5]
        for name in CORRUPTIONS:
            values = [r[metric] for r in rows if r["corruption"] == name]
            lines.append(f"| {name} | " + " | ".join(f"{v:.3g}" for v in values) + " |")
    text = "\n".join(lines) + "\n"
    atomic_write(folder / "validation.md", lambda tmp: tmp.write_text(text))
    atomic_write(folder / "validation.json", lambda tmp: tmp.write_text(json.dumps(rows, indent=1)))
    plot_validation(rows, folder / "validation.png")
    print(text)
    return str(folder.resolve())


def plot_validation(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib  # only here: the backend is chosen before pyplot is imported, and training never plots

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ("fid", "precision", "recall", "modes")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2))
    for ax, metric in zip(axes, metrics, strict=True):
        for name in CORRUPTIONS:
            points = [(r["severity"], r[metric]) for r in rows if r["corruption"] == name]
            ax.plot(*zip(*points, strict=True), marker="o", label=name)
        ax.set_xlabel("severity")
        ax.set_title(metric)
        ax.set_xticks(range(5))
    axes[0].set_yscale("symlog", linthresh=1.0)
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
