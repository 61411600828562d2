"""G's exponential moving average, per member with its own decay (torch's EMA formula: a copy at the first update,
then a lerp towards G by 1 - decay); frozen (diverged) members keep theirs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gan.model.population import MemberConstants


def update_average(
    average: nn.Module,
    current: nn.Module,
    updates: torch.Tensor,
    decays: Sequence[float],
    alive: Sequence[bool],
    constants: MemberConstants,
    started: bool,
) -> None:
    """One EMA update of ``average`` towards ``current`` (``updates``: each member's count, advanced by one)."""
    averaged = list(average.parameters()) + list(average.buffers())
    now = list(current.parameters()) + list(current.buffers())
    with torch.no_grad():
        floats = [(a, c.detach()) for a, c in zip(averaged, now, strict=True) if a.is_floating_point()]
        others = [(a, c) for a, c in zip(averaged, now, strict=True) if not a.is_floating_point()]
        frozen = [k for k, a in enumerate(alive) if not a]
        saved = []
        if frozen:
            index = constants(f"ema_frozen{frozen}", frozen, updates, dtype=torch.long)  # built once per set
            saved = [(t, index, t[index].clone()) for t in [*(a for a, _ in floats + others), updates]]
        if not started:
            for a, c in floats + others:
                a.copy_(c)
        else:
            factors = [1.0 - d for d in decays]
            weights = [constants("ema", factors, a, a.dim()) for a, _ in floats]
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weights)
            for a, c in others:
                a.copy_(c)
        updates.add_(1)
        for t, index, old in saved:
            t[index] = old
