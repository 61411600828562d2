"""The gradient penalties added to D's loss, per member: R1 on real data (any loss) and WGAN-GP's on real/fake
interpolates. A penalty is computed for all members when any member has it, weighted 0 for the others, so their
losses and gradients are what they are alone; WGAN-GP's interpolates are drawn only by the members that use it,
and only their spectral-norm vectors take the extra forward pass's power iteration."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from gan.model.losses import MemberLosses, r1_penalty, wgan_gp_penalty
from gan.model.networks import Discriminator
from gan.model.population import MemberConstants
from gan.model.streams import MemberStreams


@contextmanager
def spectral_norm_updates(discriminator: Discriminator, mask: torch.Tensor) -> Iterator[None]:
    """A block in which D's power iterations update only the members in ``mask``."""
    layers = discriminator.linear_layers()
    for layer in layers:
        layer.sn_update_mask = mask
    try:
        yield
    finally:
        for layer in layers:
            layer.sn_update_mask = None


class DiscriminatorPenalties:
    """Which members add which penalty (fixed for the run) and the penalised scores of a real batch."""

    def __init__(self, members: Sequence[Mapping[str, Any]], losses: MemberLosses, constants: MemberConstants) -> None:
        self.members = len(members)
        self.constants = constants
        self.r1_weights = [m["r1_weight"] for m in members]
        self.gp_members = [k for k, m in enumerate(members) if losses.gradient_penalty[k] and m["gp_weight"] > 0]
        self.gp_weights = [m["gp_weight"] if k in self.gp_members else 0.0 for k, m in enumerate(members)]

    def penalised(self, member: int) -> bool:
        return self.r1_weights[member] > 0 or member in self.gp_members

    def __call__(
        self, discriminator: Discriminator, real: torch.Tensor, fake: torch.Tensor, streams: MemberStreams
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(D's scores of ``real`` [K, B], the penalties to add to D's loss [K], or None without any)."""
        penalty = None
        if any(w > 0 for w in self.r1_weights):
            real_logits, r1 = r1_penalty(discriminator, real)
            penalty = 0.5 * self.constants("r1_weight", self.r1_weights, r1) * r1
        else:
            real_logits = discriminator(real)
        gp_members = self.gp_members
        if gp_members:
            eps = torch.ones(real.shape[:2] + (1,), device=real.device, dtype=real.dtype)
            drawn = streams.uniform((real.shape[1], 1), gp_members).to(real.dtype)
            eps = (
                drawn
                if len(gp_members) == self.members
                else eps.index_put((self.constants("gp_members", gp_members, real, dtype=torch.long),), drawn)
            )
            mask = self.constants("gp_mask", [k in gp_members for k in range(self.members)], real, dtype=torch.bool)
            with spectral_norm_updates(discriminator, mask):
                gp = wgan_gp_penalty(discriminator, real, fake, eps)
            gp = self.constants("gp_weight", self.gp_weights, gp) * gp
            penalty = gp if penalty is None else penalty + gp
        return real_logits, penalty
