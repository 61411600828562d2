"""Differentiable augmentation for limited data (DiffAugment, Zhao et al. 2020), on flattened 32x32 images.

The same random transformations are applied to real and generated images before the discriminator sees them, in
the training step, so D cannot memorise a small training set while G still gets gradients through the
transformation (every operation here is differentiable in the images). Policies:

- ``translation``: shift each image by up to 1/8 of its side (4 pixels) in x and y, filling with background;
- ``cutout``: blank a square of half the side (16x16) at a random centre (clipped at the borders).

Blanked and shifted-in pixels take the background value (the low end of the data range, black for MNIST), where
the original DiffAugment fills with 0 (mid-grey in [-1, 1]).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gan.networks import IMAGE_SIZE


class AugmentError(ValueError):
    """An unknown augmentation policy."""


def parse_policy(policy: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"translation,cutout"`` / ``["translation", "cutout"]`` / ``none`` -> the policy names, validated."""
    if policy is None:
        return ()
    names = policy.split(",") if isinstance(policy, str) else list(policy)
    names = [str(n).strip() for n in names if str(n).strip() and str(n).strip() != "none"]
    for name in names:
        if name not in POLICIES:
            raise AugmentError(
                f"Unknown augmentation {name!r} in data.augment={policy!r}. Valid policies: {', '.join(POLICIES)} "
                "(comma-separated to combine, e.g. data.augment=translation,cutout), or none."
            )
    return tuple(names)


def translate(images: torch.Tensor, ratio: float, fill: float) -> torch.Tensor:
    """Shift each N x 1 x H x W image by its own random offset in [-ratio*H, ratio*H], filling with ``fill``."""
    n, _, h, w = images.shape
    max_shift = int(h * ratio + 0.5)
    shift = torch.randint(-max_shift, max_shift + 1, (2, n, 1, 1), device=images.device)
    rows = torch.arange(h, device=images.device).view(1, h, 1) + shift[0]
    cols = torch.arange(w, device=images.device).view(1, 1, w) + shift[1]
    # Pad by one pixel of background and clamp indices into it: anything shifted in from outside reads the padding.
    padded = F.pad(images, (1, 1, 1, 1), value=fill)
    rows = (rows + 1).clamp(0, h + 1).expand(n, h, w)
    cols = (cols + 1).clamp(0, w + 1).expand(n, h, w)
    batch = torch.arange(n, device=images.device).view(n, 1, 1).expand(n, h, w)
    return padded[batch, 0, rows, cols].unsqueeze(1)


def cutout(images: torch.Tensor, ratio: float, fill: float) -> torch.Tensor:
    """Set a (ratio*H) x (ratio*W) square at a random centre of each image to ``fill``."""
    n, _, h, w = images.shape
    size = int(h * ratio + 0.5)
    centre = torch.randint(0, h, (2, n, 1, 1), device=images.device)
    rows = torch.arange(h, device=images.device).view(1, h, 1)
    cols = torch.arange(w, device=images.device).view(1, 1, w)
    top, left = centre[0] - size // 2, centre[1] - size // 2
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return torch.where(inside.unsqueeze(1), torch.full_like(images, fill), images)


# policy -> (transformation, its ratio of the image side), as in DiffAugment
AUGMENTATIONS: dict[str, tuple[Callable[[torch.Tensor, float, float], torch.Tensor], float]] = {
    "translation": (translate, 1 / 8),
    "cutout": (cutout, 1 / 2),
}
POLICIES = tuple(AUGMENTATIONS)


class DiffAugment(nn.Module):
    """The configured policies, in order, on N x 1024 images (reshaped to 32x32 and back)."""

    def __init__(self, policy: str | Sequence[str] | None, background: float) -> None:
        super().__init__()
        self.policy = parse_policy(policy)
        self.background = float(background)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.policy:
            return x
        images = x.view(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
        for name in self.policy:
            transform, ratio = AUGMENTATIONS[name]
            images = transform(images, ratio, self.background)
        return images.reshape(x.shape)

    def extra_repr(self) -> str:
        return f"policy={','.join(self.policy) or 'none'}, background={self.background:g}"
