"""Each member's random streams: its training draws come from its own ``torch.Generator``, seeded from its own seed,
so member k of a pack draws the same numbers as the same config trained alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from gan.model.population import derived_seed

# Salts of each member's random streams (see gan.model.population.derived_seed).
INIT_STREAM, TRAIN_STREAM = 1, 2


class MemberStreams:
    """Each member's random stream for training draws, one ``torch.Generator`` per member on the training device.

    A member draws in a fixed order that depends on its own settings only (z for every update of an iteration,
    then per D input its augmentation and instance noise, then its penalty's interpolates), so it draws the same
    numbers in any pack.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device) -> None:
        self.device = device
        self.seeds = [int(s) for s in seeds]
        self.generators = [
            torch.Generator(device=device).manual_seed(derived_seed(s, TRAIN_STREAM)) for s in self.seeds
        ]

    def normal(self, shape: Sequence[int], members: Sequence[int] | None = None, dim: int = 0) -> torch.Tensor:
        if members is None and len(self.generators) == 1:  # a population of one: no stack's copy
            return torch.randn(*shape, generator=self.generators[0], device=self.device).unsqueeze(dim)
        members = range(len(self.generators)) if members is None else members
        draws = [torch.randn(*shape, generator=self.generators[k], device=self.device) for k in members]
        return torch.stack(draws, dim=dim)

    def uniform(self, shape: Sequence[int], members: Sequence[int]) -> torch.Tensor:
        return torch.stack([torch.rand(*shape, generator=self.generators[k], device=self.device) for k in members])

    def state(self) -> dict[str, Any]:
        return {"device": self.device.type, "states": [g.get_state() for g in self.generators]}

    def load(self, saved: Mapping[str, Any], iteration: int) -> None:
        """Restore the saved states; a checkpoint from another kind of device cannot continue its streams exactly,
        so they are reseeded from (seed, iteration) instead, deterministically."""
        if saved.get("device") == self.device.type:
            for gen, state in zip(self.generators, saved["states"], strict=True):
                gen.set_state(state.cpu() if self.device.type == "cpu" else state)
            return
        print(
            f"note: the checkpoint's random streams were saved on {saved.get('device')} and training now runs on "
            f"{self.device.type}; they continue from a reseed, so this resume is not bit-for-bit exact."
        )
        for gen, seed in zip(self.generators, self.seeds, strict=True):
            gen.manual_seed(derived_seed(derived_seed(seed, TRAIN_STREAM), iteration))
