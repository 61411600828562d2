"""The images every part of the lab agrees on: MNIST padded to 32x32, flattened to 1024 values, and the one way
samples in a generator's data range become pixels in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence

import torch

IMAGE_SIZE = 32
IMAGE_DIM = IMAGE_SIZE * IMAGE_SIZE  # 1024: what G outputs and D reads


def to_unit(x: torch.Tensor, low: float | torch.Tensor, span: float | torch.Tensor) -> torch.Tensor:
    """Values in [low, low + span] -> [0, 1] as float, clamped as pixels are (``low`` and ``span`` may be per-member
    columns)."""
    return ((x.float() - low) / span).clamp_(0, 1)


def to_unit_images(x: torch.Tensor, value_range: Sequence[float]) -> torch.Tensor:
    """N x 1024 samples in ``value_range`` -> N x 1 x 32 x 32 in [0, 1] for image grids."""
    lo, hi = value_range
    return to_unit(x, lo, hi - lo).view(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
