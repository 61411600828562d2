"""Differentiable augmentation for limited data (DiffAugment, Zhao et al. 2020), on flattened 32x32 images.

Random transformations are applied to real and generated images before the discriminator sees them, in the
training step (``GANModule.d_input``), so D cannot memorise a small training set while G still gets gradients
through the transformation (every operation here is differentiable in the images). Policies:

- ``translation``: shift each image by up to 1/8 of its side (4 pixels) in x and y, filling with background;
- ``cutout``: blank a square of half the side (16x16) at a random centre (clipped at the borders).

Blanked and shifted-in pixels take the background value (the low end of the data range, black for MNIST), where
the original DiffAugment fills with 0 (mid-grey in [-1, 1]).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from gan.errors import ConfigError
from gan.images import IMAGE_SIZE


def parse_policy(policy: str | Sequence[str] | None, key: str = "model.augment") -> tuple[str, ...]:
    """``"translation,cutout"`` / ``["translation", "cutout"]`` / ``none`` -> the policy names, validated (a bad one
    is named with ``key``, where it was set)."""
    if policy is None:
        return ()
    names = policy.split(",") if isinstance(policy, str) else list(policy)
    names = [str(n).strip() for n in names if str(n).strip() and str(n).strip() != "none"]
    for name in names:
        if name not in POLICIES:
            raise ConfigError(
                f"Unknown augmentation {name!r} in {key}={policy!r}. Valid policies: {', '.join(POLICIES)} "
                f"(comma-separated to combine, e.g. {key}=translation,cutout), or none."
            )
    return tuple(names)


def translate(images: torch.Tensor, shift: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Shift each N x 1 x H x W image by its own offset (``shift`` [2, N, 1, 1] rows/columns, integers), filling
    what comes in from outside with ``fill`` (one value per image, [N, 1, 1, 1])."""
    n, _, h, w = images.shape
    rows = torch.arange(h, device=images.device).view(1, h, 1) + shift[0]
    cols = torch.arange(w, device=images.device).view(1, 1, w) + shift[1]
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    batch = torch.arange(n, device=images.device).view(n, 1, 1).expand(n, h, w)
    moved = images[batch, 0, rows.clamp(0, h - 1).expand(n, h, w), cols.clamp(0, w - 1).expand(n, h, w)]
    return torch.where(inside.unsqueeze(1), moved.unsqueeze(1), fill)


def cutout(images: torch.Tensor, centre: torch.Tensor, fill: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Set a (ratio*H) x (ratio*W) square at each image's ``centre`` ([2, N, 1, 1]) to ``fill`` ([N, 1, 1, 1])."""
    _, _, h, w = images.shape
    size = int(h * ratio + 0.5)
    rows = torch.arange(h, device=images.device).view(1, h, 1)
    cols = torch.arange(w, device=images.device).view(1, 1, w)
    top, left = centre[0] - size // 2, centre[1] - size // 2
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return torch.where(inside.unsqueeze(1), fill, images)


def draw_translation(batch: int, side: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Offsets of up to 1/8 of the side (4 pixels) in each direction, [2, batch, 1, 1]."""
    max_shift = int(side / 8 + 0.5)
    return torch.randint(-max_shift, max_shift + 1, (2, batch, 1, 1), generator=generator, device=device)


def draw_cutout(batch: int, side: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Centres of the blanked squares, anywhere in the image, [2, batch, 1, 1]."""
    return torch.randint(0, side, (2, batch, 1, 1), generator=generator, device=device)


# policy -> (how to draw its random parameters for a batch, the transformation given them)
AUGMENTATIONS: dict[str, tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]] = {
    "translation": (draw_translation, translate),
    "cutout": (draw_cutout, cutout),
}
POLICIES = tuple(AUGMENTATIONS)


def diff_augment(
    x: torch.Tensor, policy: Sequence[str], background: torch.Tensor, generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """The policy's transformations, in order, on [n, B, 1024] images of n members.

    Member i's random parameters come from ``generators[i]`` (all of one transformation's draws before the next
    one's), and its background is ``background[i]``: a member is augmented the same whatever pack it is in.
    """
    members, batch = x.shape[:2]
    images = x.reshape(members * batch, 1, IMAGE_SIZE, IMAGE_SIZE)
    fill = background.to(x.dtype).repeat_interleave(batch).view(-1, 1, 1, 1)
    for name in policy:
        draw, transform = AUGMENTATIONS[name]
        params = torch.cat([draw(batch, IMAGE_SIZE, g, x.device) for g in generators], dim=1)
        images = transform(images, params, fill)
    return images.reshape(x.shape)
