"""What D sees of an image batch, real or fake, in D's and G's updates alike: each member's differentiable
augmentation (``model.augment``), then its instance noise (std ``model.instance_noise`` in units of half its data
range, decaying linearly to 0 over ``model.instance_noise_iters`` iterations, by default the whole run). Members
without them see the batch unchanged and draw nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from gan.model.augment import diff_augment
from gan.model.population import MemberConstants, member_column, member_groups
from gan.model.streams import MemberStreams


def instance_noise_std(initial: float, iteration: int, decay_iters: int) -> float:
    """Linear decay from ``initial`` at iteration 0 to 0 at ``decay_iters`` (and after); constant when
    ``decay_iters`` is 0 (a run without a planned length)."""
    if initial <= 0:
        return 0.0
    if decay_iters <= 0:
        return float(initial)
    return float(initial) * max(0.0, 1.0 - iteration / decay_iters)


class DiscriminatorInput:
    """Each member's augmentation and instance noise, applied to [K, B, 1024] batches."""

    def __init__(
        self,
        members: Sequence[Mapping[str, Any]],
        data_ranges: Sequence[tuple[float, float]],
        constants: MemberConstants,
    ) -> None:
        self.members = len(members)
        self.data_ranges = list(data_ranges)
        self.constants = constants
        self.augment_groups = member_groups([tuple(m["augment"]) for m in members], skip=())
        self.initial_noise = [m["instance_noise"] for m in members]
        self.noise_iters = [m["instance_noise_iters"] for m in members]
        self.noisy_members = [k for k, std in enumerate(self.initial_noise) if std > 0]
        self.decay_iters = [0] * self.members
        self.noise_now = [0.0] * self.members
        # The noise scales on the training device, one tensor per set of noisy members: filled from ``noise_now``
        # before each use (``stage`` before a CUDA graph's replay, which reads them without Python).
        self._scales: dict[tuple, torch.Tensor] = {}

    @property
    def changes_anything(self) -> bool:
        return bool(self.augment_groups or self.noisy_members)

    def plan(self, planned_iterations: int) -> None:
        """Each member's decay length: its own ``instance_noise_iters``, else the fit's planned length (0: none)."""
        self.decay_iters = [iters or planned_iterations for iters in self.noise_iters]

    def update(self, iteration: int) -> list[float]:
        """Set (and return) each member's instance-noise std for ``iteration``: one value per member for all of
        the iteration's D and G updates."""
        if self.noisy_members:
            self.noise_now = [
                instance_noise_std(std, iteration, self.decay_iters[k]) for k, std in enumerate(self.initial_noise)
            ]
        return self.noise_now

    def noisy_now(self) -> tuple[int, ...]:
        """The members that add instance noise in this iteration (their std has not decayed to 0)."""
        return tuple(k for k in self.noisy_members if self.noise_now[k] > 0)

    def _scale_values(self, noisy: Sequence[int]) -> list[float]:
        return [self.noise_now[k] * (self.data_ranges[k][1] - self.data_ranges[k][0]) / 2 for k in noisy]

    def _noise_scale(self, noisy: tuple[int, ...], x: torch.Tensor) -> torch.Tensor:
        """[n, 1, 1] scales of the ``noisy`` members' noise, a tensor kept on ``x``'s device (filled now, unless a
        CUDA graph is being captured: then ``stage`` fills it before every replay)."""
        key = (x.device, x.dtype, noisy)
        if key not in self._scales:
            self._scales[key] = member_column(self._scale_values(noisy), x)
        elif not (x.is_cuda and torch.cuda.is_current_stream_capturing()):
            self._write_scales(self._scales[key], noisy)
        return self._scales[key]

    def _write_scales(self, scales: torch.Tensor, noisy: tuple[int, ...]) -> None:
        scales.copy_(torch.tensor(self._scale_values(noisy), dtype=scales.dtype).view(-1, 1, 1))

    def stage(self) -> None:
        """Put this iteration's noise scales where a replayed CUDA graph reads them."""
        noisy = self.noisy_now()
        for (_, _, members), scales in self._scales.items():
            if members == noisy:
                self._write_scales(scales, noisy)

    def __call__(self, x: torch.Tensor, streams: MemberStreams) -> torch.Tensor:
        for g, (policy, members) in enumerate(self.augment_groups):
            index = self.constants(f"augment{g}", members, x, dtype=torch.long)
            background = self.constants(f"background{g}", [self.data_ranges[k][0] for k in members], x)
            generators = [streams.generators[k] for k in members]
            part = diff_augment(x[index], policy, background, generators)
            x = part if len(members) == self.members else x.index_put((index,), part)
        noisy = self.noisy_now()
        if noisy:
            noise = streams.normal(x.shape[1:], noisy) * self._noise_scale(noisy, x)
            if len(noisy) == self.members:
                x = x + noise
            else:  # the set changes as members' noise decays to 0: an index tensor per set
                index = self.constants(f"noisy{noisy}", noisy, x, dtype=torch.long)
                x = x.index_put((index,), x[index] + noise)
        return x
