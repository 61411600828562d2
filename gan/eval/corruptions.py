"""Real digits made worse on purpose: the corruptions that validate the evaluator's metrics (and the calibration
sets of the collapse verdicts).

A sound distance grows as images get worse. ``validate_metrics`` scores 10,000 real training images against the
evaluator's test-set reference, clean and under six corruptions at four increasing severities (as the FID-MNIST
validations do), so that docs/metrics.md can show fid, precision, recall and modes rising or falling with severity and a
test can pin it. Images are N x 28 x 28 floats in [0, 1] here; they are scored after the lab's own padding to 32x32.

``validation_study`` adds what the metric card needs: the mixture test (a share 0, 0.1, ..., 1 of the real images
replaced by their corrupted versions at ``MIXTURE_SEVERITY``, by copies of their class's first image
(``duplicates``: variety within each class lost, the class histogram kept) or by training images of the memorization
reference (``training_copies``), each metric's linear fit against that share with its R^2), whether each metric
worsens at every step of severity (``summarize``), and ``memorized`` of training copies under each corruption.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from gan.data import load_split, to_flat_images
from gan.errors import ConfigError
from gan.eval.classifier import Evaluator, memorization_indices, say
from gan.eval.metrics import frechet_distance, memorized_share
from gan.files import atomic_write, save_figure

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
    """A fixed random draw of ``num_images`` training images (N x 28 x 28 in [0, 1]) and their labels, held out from
    the memorization check's reference (``gan.eval.classifier.memorization_indices``: with seed 0, the first 50,000
    of the same permutation never meet it)."""
    images, labels = load_split(root, "train")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    reference = torch.zeros(len(images), dtype=torch.bool)
    reference[memorization_indices(len(images))] = True
    keep = order[~reference[order]][:num_images]
    return images[keep].float() / 255.0, labels[keep]


def flat(x: torch.Tensor) -> torch.Tensor:
    """N x 28 x 28 in [0, 1] -> the lab's N x 1024 (padded to 32 x 32) in [0, 1], through the data module's path."""
    return to_flat_images((x * 255).round().to(torch.uint8), (0.0, 1.0))


# Which way each validated metric worsens as images get worse: +1 it rises (fid), -1 it falls (recall). The
# Vendi scores count variety: noise can add it, so a worse image set need not lower them (the study says so).
WORSE = {
    "fid": 1,
    "kid": 1,
    "precision": -1,
    "recall": -1,
    "density": -1,
    "coverage": -1,
    "vendi": -1,
    "vendi_within": -1,
    "memorized": 1,
    "is": -1,
    "modes": -1,
    "kl_uniform": 1,
}
BAD_SHARES = tuple(i / 10 for i in range(11))  # the mixture test's shares of bad images
MIXTURE_SEVERITY = 2  # of 1..4: the corruptions' middle severity in the mixture test
EXTRA_MIXTURES = ("duplicates", "training_copies")  # bad images that no corruption makes
COPIES_SCORED = 2000  # training copies scored under each corruption for ``memorized``

Features = tuple[torch.Tensor, torch.Tensor]  # an image set's evaluator features and logits


def _embed(evaluator: Evaluator, images: torch.Tensor) -> Features:
    return evaluator.embed(flat(images), (0.0, 1.0))


def corrupted(x: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """``x`` under corruption ``name`` at ``severity`` (1 to 4), from its own seeded generator (the same images
    every time: the mixture test reuses the severity study's)."""
    corrupt, levels = CORRUPTIONS[name]
    return corrupt(x, levels[severity - 1], torch.Generator().manual_seed(seed + severity))


def validate_metrics(
    evaluator: Evaluator,
    root: str,
    num_images: int = 10000,
    seed: int = 0,
    fid_only: bool = False,
    keep: dict[str, Features] | None = None,
) -> list[dict[str, Any]]:
    """Every metric (or only the fid) of ``num_images`` real training images, clean (severity 0) and under each
    corruption at each severity (1 to 4): one row each, with the corruption's parameter. ``keep`` (when given)
    receives the features of the clean images (``"clean"``) and of each corruption at ``MIXTURE_SEVERITY``."""
    x, _ = real_images(root, num_images, seed)
    total = 1 + sum(len(levels) for _, levels in CORRUPTIONS.values())

    def score(images: torch.Tensor, what: str, done: int) -> tuple[dict[str, float], Features]:
        feats, logits = _embed(evaluator, images)
        if fid_only:
            return {"fid": frechet_distance(feats, evaluator.test_features)}, (feats, logits)
        say(f"validation: {what} ({done}/{total} image sets)")
        return evaluator.metrics(feats, logits), (feats, logits)

    clean, clean_features = score(x, "clean images", 1)
    if keep is not None:
        keep["clean"] = clean_features
    rows, done = [], 1
    for name, (_, levels) in CORRUPTIONS.items():
        rows.append({"corruption": name, "severity": 0, "parameter": 0.0, **clean})
        for severity, level in enumerate(levels, 1):
            done += 1
            scores, features = score(corrupted(x, name, severity, seed), f"{name} at severity {severity}", done)
            rows.append({"corruption": name, "severity": severity, "parameter": float(level), **scores})
            if keep is not None and severity == MIXTURE_SEVERITY:
                keep[name] = features
    return rows


def duplicates(features: Features, labels: torch.Tensor) -> Features:
    """Each image replaced by its class's first image: the class histogram kept, the variety within a class lost."""
    first = {int(c): int((labels == c).nonzero()[0]) for c in labels.unique()}
    index = torch.tensor([first[int(c)] for c in labels])
    return features[0][index], features[1][index]


def training_copy_images(root: str, count: int) -> torch.Tensor:
    """The first ``count`` images of the memorization reference (N x 28 x 28 in [0, 1]): exact training copies."""
    images, _ = load_split(root, "train")
    return images[memorization_indices(len(images))[:count]].float() / 255.0


def mixture_rows(
    evaluator: Evaluator, clean: Features, bad: dict[str, Features], shares: tuple[float, ...] = BAD_SHARES
) -> list[dict[str, Any]]:
    """Every metric of the clean set with a share of its images replaced by their bad versions (image i by bad
    image i: the set keeps its size), for each kind of bad image and share: one row each."""
    n = len(clean[0])
    rows, base = [], None
    for name, (bad_feats, bad_logits) in bad.items():
        for share in shares:
            k = round(share * n)
            if k == 0 and base is not None:
                scores = base  # every kind's share 0 is the clean set itself
            else:
                feats = torch.cat([bad_feats[:k], clean[0][k:n]])
                scores = evaluator.metrics(feats, torch.cat([bad_logits[:k], clean[1][k:n]]))
            base = scores if k == 0 else base
            rows.append({"corruption": name, "bad_share": share, **scores})
        say(f"validation: mixtures of {name} scored")
    return rows


def copies_rows(evaluator: Evaluator, copies: torch.Tensor, seed: int = 0) -> list[dict[str, Any]]:
    """``memorized`` of exact training copies, clean and under each corruption and severity: when does a copy stop
    counting as one?"""
    train, nearest = evaluator.memorization_reference()
    if train is None or nearest is None:
        return []

    def share(images: torch.Tensor) -> float:
        return memorized_share(_embed(evaluator, images)[0], train, nearest)

    clean = share(copies)
    rows = []
    for name, (_, levels) in CORRUPTIONS.items():
        rows.append({"corruption": name, "severity": 0, "memorized": clean})
        for severity in range(1, len(levels) + 1):
            rows.append(
                {"corruption": name, "severity": severity, "memorized": share(corrupted(copies, name, severity, seed))}
            )
    return rows


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(slope, R^2) of the least-squares line through the points; R^2 is NaN when ``ys`` do not vary."""
    x, y = torch.tensor(xs, dtype=torch.float64), torch.tensor(ys, dtype=torch.float64)
    dx, dy = x - x.mean(), y - y.mean()
    slope = float((dx * dy).sum() / (dx * dx).sum())
    total = float((dy * dy).sum())
    residual = float(((dy - slope * dx) ** 2).sum())
    return slope, (1.0 - residual / total) if total > 1e-24 else math.nan


def summarize(
    rows: list[dict[str, Any]], mixture: list[dict[str, Any]], metrics: tuple[str, ...] = tuple(WORSE)
) -> list[dict[str, Any]]:
    """Per metric and kind of bad image: ``monotone`` (whether the metric worsens at every step from clean through
    severity 4; None for a mixture-only kind), ``flat`` (it never moves: memorized stays 0, modes 10), the mixture's
    ``slope`` against the bad share and its ``r2`` (NaN when the metric does not move), and ``worsens`` (whether
    that slope points the metric's bad way)."""
    kinds = list(dict.fromkeys(r["corruption"] for r in mixture)) or list(CORRUPTIONS)
    out = []
    for metric in metrics:
        for kind in kinds:
            values = [r[metric] for r in rows if r["corruption"] == kind]
            steps = list(zip(values, values[1:], strict=False))
            monotone = all(WORSE[metric] * (b - a) > 0 for a, b in steps) if steps else None
            flat = bool(steps) and all(b == a for a, b in steps)
            points = [(r["bad_share"], r[metric]) for r in mixture if r["corruption"] == kind]
            slope, r2 = linear_fit(*map(list, zip(*points, strict=True))) if len(points) > 1 else (math.nan, math.nan)
            worsens = bool(WORSE[metric] * slope > 0) if math.isfinite(r2) else False
            out.append(
                {
                    "metric": metric,
                    "corruption": kind,
                    "monotone": monotone,
                    "flat": flat,
                    "slope": slope,
                    "r2": r2,
                    "worsens": worsens,
                }
            )
    return out


def validation_study(evaluator: Evaluator, root: str, num_images: int = 10000, seed: int = 0) -> dict[str, Any]:
    """The severity study, the mixture test, the training copies under corruption and the summary, as one dict
    (validation.json's content)."""
    _, labels = real_images(root, num_images, seed)
    copies = training_copy_images(root, num_images)
    if min(len(labels), len(copies)) < num_images:  # the mixtures replace image i by copy i: both sets in full
        raise ConfigError(
            f"validate.num_images={num_images}: {root} has {len(labels)} training images held out from the "
            f"memorization reference and {len(copies)} in it; the study needs num_images of each. Use "
            f"validate.num_images={min(len(labels), len(copies))} or fewer."
        )
    keep: dict[str, Features] = {}
    rows = validate_metrics(evaluator, root, num_images, seed, keep=keep)
    bad = {name: keep[name] for name in CORRUPTIONS}
    bad["duplicates"] = duplicates(keep["clean"], labels)
    bad["training_copies"] = _embed(evaluator, copies)
    mixture = mixture_rows(evaluator, keep["clean"], bad)
    copies_scored = copies_rows(evaluator, copies[:COPIES_SCORED], seed)
    return {
        "num_images": num_images,
        "mixture_severity": MIXTURE_SEVERITY,
        "severity": rows,
        "mixture": mixture,
        "copies_under_corruption": copies_scored,
        "summary": summarize(rows, mixture),
    }


def _monotone(entry: dict[str, Any]) -> str:
    if entry["monotone"] is None:
        return "-"
    return "yes" if entry["monotone"] else "flat" if entry["flat"] else "no"


def _number(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.3g}"


def validation_markdown(study: dict[str, Any], seconds: float | None = None) -> str:
    """validation.md: the summary (monotone under each corruption; the mixture's R^2), then a table per metric for
    the severities and for the mixtures, and ``memorized`` of training copies under corruption."""
    rows, mixture, summary = study["severity"], study["mixture"], study["summary"]
    kinds = list(dict.fromkeys(r["corruption"] for r in mixture))
    levels = "; ".join(f"{name} {list(values)}" for name, (_, values) in CORRUPTIONS.items())
    took = f" Wall time {seconds / 60:.1f} minutes." if seconds is not None else ""
    lines = [
        f"Metrics of {study['num_images']} real MNIST training images (held out from the memorization reference) "
        f"against the evaluator's test-set reference, clean (severity 0) and corrupted (severities 1-4: {levels}); "
        f"the mixture test replaces a share of them by their corrupted versions at severity "
        f"{study['mixture_severity']}, by copies of their class's first image (duplicates) or by training images "
        f"of the memorization reference (training_copies).{took}",
        "",
        "## Summary",
        "",
        "Each cell: does the metric worsen at every step of severity (yes; no; flat: it never moves; - for a "
        "mixture-only kind), then the R^2 of its linear fit against the bad share (0 to 1 in steps of 0.1; - when "
        "the metric does not move), with a * where that fit's slope points the metric's good way (it improves as "
        "bad images are added).",
        "",
        "| metric | " + " | ".join(kinds) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    for metric in WORSE:
        cells = []
        for kind in kinds:
            entry = next(e for e in summary if e["metric"] == metric and e["corruption"] == kind)
            star = "" if entry["worsens"] or not math.isfinite(entry["r2"]) else "*"
            cells.append(f"{_monotone(entry)}, {_number(entry['r2'])}{star}")
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    lines += ["", "## Severity", ""]
    for metric in WORSE:
        lines += [f"| {metric} | " + " | ".join(str(s) for s in range(5)) + " |", "|---|" + "---|" * 5]
        for name in CORRUPTIONS:
            values = [r[metric] for r in rows if r["corruption"] == name]
            lines.append(f"| {name} | " + " | ".join(_number(v) for v in values) + " |")
        lines.append("")
    lines += ["## Mixtures", ""]
    for metric in WORSE:
        lines += [f"| {metric} | " + " | ".join(f"{s:g}" for s in BAD_SHARES) + " |", "|---|" + "---|" * 11]
        for kind in kinds:
            values = [r[metric] for r in mixture if r["corruption"] == kind]
            lines.append(f"| {kind} | " + " | ".join(_number(v) for v in values) + " |")
        lines.append("")
    if study["copies_under_corruption"]:
        copies = study["copies_under_corruption"]
        lines += [
            f"## memorized of {COPIES_SCORED} training copies under corruption",
            "",
            "| corruption | " + " | ".join(str(s) for s in range(5)) + " |",
            "|---|" + "---|" * 5,
        ]
        for name in CORRUPTIONS:
            values = [r["memorized"] for r in copies if r["corruption"] == name]
            lines.append(f"| {name} | " + " | ".join(_number(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


def write_validation(evaluator: Evaluator, root: str, num_images: int, out: str) -> str:
    """The corruption study (``validation_study``) into ``out``: validation.md (the summary, then a table per metric
    for the severities and the mixtures), validation.json (every row, the summary) and validation.png (each metric
    against severity and against the bad share); prints the summary."""
    start = time.perf_counter()
    study = validation_study(evaluator, root, num_images)
    seconds = time.perf_counter() - start
    study["wall_s"] = round(seconds, 1)
    folder = Path(out)
    text = validation_markdown(study, seconds)
    atomic_write(folder / "validation.md", lambda tmp: tmp.write_text(text))
    atomic_write(folder / "validation.json", lambda tmp: tmp.write_text(json.dumps(study, indent=1)))
    plot_validation(study["severity"], folder / "validation.png", study["mixture"])
    print(text.split("## Severity")[0])
    return str(folder.resolve())


def plot_validation(rows: list[dict[str, Any]], path: Path, mixture: list[dict[str, Any]] | None = None) -> None:
    """Each metric against severity (one line per corruption) and, with ``mixture``, against the bad share."""
    import matplotlib  # only here: the backend is chosen before pyplot is imported, and training never plots

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in WORSE if m in rows[0]]
    panels = [("severity", rows, m) for m in metrics] + [("bad_share", mixture or [], m) for m in metrics if mixture]
    columns = 6
    fig, axes = plt.subplots(
        math.ceil(len(panels) / columns),
        columns,
        figsize=(3.4 * columns, 2.9 * math.ceil(len(panels) / columns)),
        squeeze=False,
    )
    for ax, (x_key, table, metric) in zip(axes.flat, panels, strict=False):
        for name in dict.fromkeys(r["corruption"] for r in table):
            points = [(r[x_key], r[metric]) for r in table if r["corruption"] == name]
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=name)
        ax.set_xlabel(x_key.replace("_", " "))
        ax.set_title(metric)
        if metric in ("fid", "kid"):
            ax.set_yscale("symlog", linthresh=1.0 if metric == "fid" else 1e-3)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    if mixture:
        axes.flat[len(metrics)].legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path, 110)
    plt.close(fig)
