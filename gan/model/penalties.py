"""The penalties added to D's loss, per member: R1 on real data and R2 on fake samples (any loss), WGAN-GP's on
real/fake interpolates, and BRE's on D's hidden activation patterns (``gan.model.bre``). A penalty is computed for
all members when any member has it, weighted 0 for the others, so their losses and gradients are what they are
alone; WGAN-GP's interpolates are drawn only by the members that use it, and only their spectral-norm vectors take
the extra forward pass's power iteration."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from gan.model.bre import bre_penalty, hidden_pre_activations
from gan.model.losses import MemberLosses, squared_gradient_penalty, wgan_gp_penalty
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
    """Which members add which penalty (fixed for the run), and D's penalised scores of a real and a fake batch."""

    def __init__(self, members: Sequence[Mapping[str, Any]], losses: MemberLosses, constants: MemberConstants) -> None:
        self.members = len(members)
        self.constants = constants
        self.r1_weights = [m["r1_weight"] for m in members]
        self.r2_weights = [m["r2_weight"] for m in members]
        self.gp_members = [k for k, m in enumerate(members) if losses.gradient_penalty[k] and m["gp_weight"] > 0]
        self.gp_weights = [m["gp_weight"] if k in self.gp_members else 0.0 for k, m in enumerate(members)]
        self.bre_weights = [m.get("bre_weight", 0.0) for m in members]  # 0 where a caller leaves it out
        self.bre = any(w > 0 for w in self.bre_weights)

    def penalised(self, member: int) -> bool:
        return (
            self.r1_weights[member] > 0
            or self.r2_weights[member] > 0
            or self.bre_weights[member] > 0
            or member in self.gp_members
        )

    def __call__(
        self, discriminator: Discriminator, real: torch.Tensor, fake: torch.Tensor, streams: MemberStreams
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(D's scores of ``real`` [K, B], of ``fake`` [K, B], the penalties to add to D's loss [K] or None without
        any). D scores the real batch, then WGAN-GP's interpolates, then the fake batch: a fixed order, since each
        training-mode pass advances spectral norm's power iteration."""
        with hidden_pre_activations(discriminator, self.bre) as real_pre:
            real_logits, penalty = self._squared("r1_weight", self.r1_weights, discriminator, real)
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
        with hidden_pre_activations(discriminator, self.bre) as fake_pre:
            fake_logits, r2 = self._squared("r2_weight", self.r2_weights, discriminator, fake)
        if r2 is not None:
            penalty = r2 if penalty is None else penalty + r2
        if self.bre:
            entropy = self.constants("bre_weight", self.bre_weights, real) * bre_penalty(real_pre, fake_pre)
            penalty = entropy if penalty is None else penalty + entropy
        return real_logits, fake_logits, penalty

    def _squared(
        self, name: str, weights: Sequence[float], discriminator: Discriminator, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(D(x), gamma / 2 E||grad D(x)||^2 per member, or None when no member has this penalty)."""
        if not any(w > 0 for w in weights):
            return discriminator(x), None
        scores, squared = squared_gradient_penalty(discriminator, x)
        return scores, 0.5 * self.constants(name, weights, squared) * squared
