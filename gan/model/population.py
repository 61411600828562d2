"""Layers of a population: K networks of one shape stored as one, every tensor with the member axis first.

A pack of K GANs trains as one batched model (the "model ensembling" recipe): each weight is stacked along a
leading member dimension and activations flow as ``[members, batch, features]``, so one batched matmul
(``torch.baddbmm``) does the work of K small ones. A single run is a population of one and uses these same layers.

The invariant every module here keeps: **every parameter and buffer has the member axis first** (size K), also
those a given member does not use (a PReLU slope in a layer where its member uses ReLU, spectral norm's vectors
for a member without spectral norm). A member's state is then ``tensor[k:k+1]`` of each entry, and a pack's state
is the members' states concatenated: checkpoints split and merge without knowing the architecture.

Member k's computation never reads another member's slice, so member k of a pack computes what a population of
one computes with member k's settings (on the CPU to the last bit: the tests pin it), and a member whose values
become NaN leaves the others alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gan.errors import ConfigError
from gan.model.activations import build_activation
from gan.model.init import rescale_


def member_generators(seeds: Sequence[int], salt: int) -> list[torch.Generator]:
    """One CPU generator per member for a purpose named by ``salt``: the same member seed gives the same stream
    whatever pack the member is in, and two purposes of one member never share a stream."""
    return [torch.Generator().manual_seed(derived_seed(seed, salt)) for seed in seeds]


def derived_seed(seed: int, salt: int) -> int:
    """A 63-bit seed from (seed, salt), by splitmix64 (independent streams from nearby seeds)."""
    mask = (1 << 64) - 1
    z = (int(seed) * 0x9E3779B97F4A7C15 + int(salt) * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)) >> 1


def member_column(values: Sequence[float], like: torch.Tensor, dims: int = 3) -> torch.Tensor:
    """Per-member values as a tensor shaped [K, 1, ..., 1] (``dims`` dimensions) on ``like``'s device."""
    return torch.tensor(list(values), dtype=like.dtype, device=like.device).view(-1, *([1] * (dims - 1)))


def batched_matmul(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` [K, B, i] times ``w`` [K, i, o] (plus ``bias`` [K, o]) -> [K, B, o], member by member.

    On a GPU this is one batched matmul. On the CPU it is one matmul per member: BLAS libraries split a batched
    product's work differently by batch count (measured: a member's result differed in the last bits between a
    batch of 1 and of 4), so per member the product is computed exactly as it is for a population of one, and
    member k of a pack trains bit for bit as it does alone. The CPU's cores are busy either way.
    """
    if x.device.type != "cpu":
        return torch.bmm(x, w) if bias is None else torch.baddbmm(bias.unsqueeze(1), x, w)
    if x.shape[0] == 1:  # a population of one: the same product, without a stack's copy
        # squeeze, not x[0]: a view whose backward is a view too (select's backward zero-fills a copy of the whole
        # weight for its gradient: measured 0.7 ms of a 20 ms iteration)
        x, w = x.squeeze(0), w.squeeze(0)
        return (torch.mm(x, w) if bias is None else torch.addmm(bias.squeeze(0), x, w)).unsqueeze(0)
    # unbind, not x[k]: indexing one member's slice per member would make autograd zero-fill a whole [K, ...]
    # gradient for each of them (K^2 work, measured as a third of a CPU pack's time); unbind's backward is one stack
    if bias is None:
        return torch.stack([torch.mm(xk, wk) for xk, wk in zip(x.unbind(0), w.unbind(0), strict=True)])
    return torch.stack(
        [torch.addmm(bk, xk, wk) for xk, wk, bk in zip(x.unbind(0), w.unbind(0), bias.unbind(0), strict=True)]
    )


def contiguous_runs(indices: Sequence[int]) -> slice | None:
    """``slice(a, b)`` when ``indices`` are a, a+1, ..., b-1 (then a view serves instead of a gather)."""
    if list(indices) == list(range(indices[0], indices[0] + len(indices))):
        return slice(indices[0], indices[0] + len(indices))
    return None


class StackedLinear(nn.Module):
    """K linear layers ``in -> out``: ``weight`` [K, in, out], ``bias`` [K, out]; input [K, B, in].

    Each member's initial values are drawn as ``nn.Linear`` draws them (uniform within 1/sqrt(in)) from that
    member's own generator, then rescaled by its ``gains`` entry when it has one (``gan.model.init``). With
    ``spectral_norm`` (a per-member switch) the weight of the members that have it is divided by its largest
    singular value, estimated by one power iteration per forward pass in training mode
    (Miyato et al. 2018, as torch's ``spectral_norm`` parametrization does); ``sn_u`` [K, out] and ``sn_v``
    [K, in] are kept for every member, and stay untouched for a member without it.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        generators: Sequence[torch.Generator],
        spectral_norm: Sequence[bool] | None = None,
        gains: Sequence[float | None] | None = None,
    ) -> None:
        super().__init__()
        members = len(generators)
        gains = list(gains) if gains is not None else [None] * members
        self.in_features, self.out_features = int(in_features), int(out_features)
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        weights, biases = [], []
        for gen, gain in zip(generators, gains, strict=True):
            w = torch.empty(out_features, in_features).uniform_(-bound, bound, generator=gen).t().contiguous()
            b = torch.empty(out_features).uniform_(-bound, bound, generator=gen)
            rescale_(w, b, gain)
            weights.append(w)
            biases.append(b)
        self.weight = nn.Parameter(torch.stack(weights))
        self.bias = nn.Parameter(torch.stack(biases))
        sn = [bool(s) for s in (spectral_norm or [False] * members)]
        self.register_buffer("sn_mask", torch.tensor(sn), persistent=False)
        self.any_spectral_norm = any(sn)
        u = torch.stack([F.normalize(torch.randn(out_features, generator=g), dim=0, eps=1e-12) for g in generators])
        v = torch.stack([F.normalize(torch.randn(in_features, generator=g), dim=0, eps=1e-12) for g in generators])
        self.register_buffer("sn_u", u)
        self.register_buffer("sn_v", v)
        # Only power-iteration updates of these members are kept (all, unless a caller narrows it; see below).
        self.sn_update_mask: torch.Tensor | None = None
        if self.any_spectral_norm:
            with torch.no_grad():
                for _ in range(15):  # as torch's parametrization does at registration
                    self._power_iteration()

    def _power_iteration(self) -> None:
        """One step of the power iteration for every member with spectral norm (the rest keep their vectors)."""
        w = self.weight.detach()
        v = F.normalize(batched_matmul(w, self.sn_u.unsqueeze(2)).squeeze(2), dim=1, eps=1e-12)
        u = F.normalize(batched_matmul(w.transpose(1, 2), v.unsqueeze(2)).squeeze(2), dim=1, eps=1e-12)
        keep = self.sn_mask if self.sn_update_mask is None else self.sn_mask & self.sn_update_mask
        self.sn_u.copy_(torch.where(keep.unsqueeze(1), u, self.sn_u))
        self.sn_v.copy_(torch.where(keep.unsqueeze(1), v, self.sn_v))

    def effective_weight(self) -> torch.Tensor:
        if not self.any_spectral_norm:
            return self.weight
        if self.training:
            with torch.no_grad():
                self._power_iteration()
        u, v = self.sn_u.clone(), self.sn_v.clone()
        sigma = batched_matmul(v.unsqueeze(1), batched_matmul(self.weight, u.unsqueeze(2))).view(-1)
        return self.weight / torch.where(self.sn_mask, sigma, torch.ones_like(sigma)).view(-1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return batched_matmul(x, self.effective_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"members={self.weight.shape[0]}, in={self.in_features}, out={self.out_features}"


class StackedBatchNorm(nn.Module):
    """Batch norm per member: statistics over each member's own batch (dim 1), running averages per member
    (``nn.BatchNorm1d``'s momentum 0.1 and eps 1e-5, unbiased running variance)."""

    def __init__(self, members: int, features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(members, features))
        self.bias = nn.Parameter(torch.zeros(members, features))
        self.register_buffer("running_mean", torch.zeros(members, features))
        self.register_buffer("running_var", torch.ones(members, features))
        self.register_buffer("num_batches_tracked", torch.zeros(members, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean = x.mean(1)
            var = x.var(1, unbiased=False)
            with torch.no_grad():
                n = x.shape[1]
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach() * (n / max(n - 1, 1)), self.momentum)
                self.num_batches_tracked.add_(1)
        else:
            mean, var = self.running_mean, self.running_var
        x = (x - mean.unsqueeze(1)) * torch.rsqrt(var.unsqueeze(1) + self.eps)
        return x * self.weight.unsqueeze(1) + self.bias.unsqueeze(1)


class StackedLayerNorm(nn.Module):
    """Layer norm per member: each sample normalized over its own units, affine weights per member."""

    def __init__(self, members: int, features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(members, features))
        self.bias = nn.Parameter(torch.zeros(members, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        return x * self.weight.unsqueeze(1) + self.bias.unsqueeze(1)


NORMS: dict[str, Callable[[int, int], nn.Module] | None] = {
    "none": None,
    "batch": StackedBatchNorm,  # statistics over the batch (running averages at eval time)
    "layer": StackedLayerNorm,  # statistics over each sample's units: no batch dependence (safe with penalties)
}


class MemberActivation(nn.Module):
    """Each member's own activation function, applied to its slice of a [K, B, F] tensor.

    Members that share an activation (name and parameters) form one group and are computed with one call: a view
    when the group's members are neighbours in the pack, a gather otherwise (packs are ordered so that the
    discriminator's groups are neighbours). PReLU's learned slope is a parameter with one value per member
    (``prelu_weight``, present whenever the registry has PReLU so that every layer has the same state layout;
    members that do not use PReLU never touch it).
    """

    def __init__(self, names: Sequence[str], params: Sequence[Mapping[str, Any] | None], where: str) -> None:
        super().__init__()
        self.names = list(names)
        groups: dict[tuple[str, str], list[int]] = {}
        modules: dict[tuple[str, str], nn.Module] = {}
        for k, (name, p) in enumerate(zip(names, params, strict=True)):
            p = dict(p or {})
            module = build_activation(name, p, where)  # validates the name and the parameters
            if name == "prelu" and int(p.get("num_parameters", 1)) != 1:
                raise ConfigError(
                    f"model.act_params.prelu.num_parameters={p['num_parameters']!r} for {where}: this lab learns one "
                    "PReLU slope per layer (per member of a pack). Drop num_parameters, or set it to 1."
                )
            key = (name, repr(sorted(p.items())) if name != "prelu" else "")
            groups.setdefault(key, []).append(k)
            modules.setdefault(key, module)
        self.prelu_weight = nn.Parameter(torch.tensor([float(dict(p or {}).get("init", 0.25)) for p in params]))
        self.groups = [(key[0], idx, contiguous_runs(idx)) for key, idx in groups.items()]
        self.functions = nn.ModuleList([nn.Identity() if key[0] == "prelu" else modules[key] for key in groups])
        self._index_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        # every member with one parameter-free function (a population of one, say): that function's forward alone
        alone = len(self.groups) == 1 and self.groups[0][0] != "prelu"
        self._only_forward = self.functions[0].forward if alone else None

    def _apply_group(self, g: int, x: torch.Tensor, slopes: torch.Tensor) -> torch.Tensor:
        if self.groups[g][0] == "prelu":
            return torch.where(x >= 0, x, slopes.to(x.dtype).view(-1, *([1] * (x.dim() - 1))) * x)
        return self.functions[g](x)

    def _permutation(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(order that puts each group's members side by side, its inverse), on ``device``."""
        if device not in self._index_cache:
            order = torch.tensor([k for _, idx, _ in self.groups for k in idx], device=device)
            self._index_cache[device] = (order, torch.argsort(order))
        return self._index_cache[device]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._only_forward is not None:
            return self._only_forward(x)
        if len(self.groups) == 1:
            return self._apply_group(0, x, self.prelu_weight)
        if all(run is not None for _, _, run in self.groups):  # groups are neighbours: views, one cat
            return torch.cat(
                [self._apply_group(g, x[run], self.prelu_weight[run]) for g, (_, _, run) in enumerate(self.groups)]
            )
        # Otherwise one gather puts the groups side by side and one puts the members back.
        order, inverse = self._permutation(x.device)
        grouped, slopes = x.index_select(0, order), self.prelu_weight.index_select(0, order)
        parts, start = [], 0
        for g, (_, idx, _) in enumerate(self.groups):
            parts.append(self._apply_group(g, grouped[start : start + len(idx)], slopes[start : start + len(idx)]))
            start += len(idx)
        return torch.cat(parts).index_select(0, inverse)

    def extra_repr(self) -> str:
        return ", ".join(f"{name}: {len(idx)}" for name, idx, _ in self.groups)


class MinibatchStd(nn.Module):
    """Appends one feature per member: the mean over units of the standard deviation across a group of samples.

    Karras et al. 2018 (ProGAN): a discriminator that sees how varied a group of samples is can penalise a
    generator that produces the same image over and over. Groups of ``group_size`` consecutive samples of a
    member's batch (the whole batch when it does not divide evenly); every sample of a group gets its value.
    """

    def __init__(self, group_size: int = 4) -> None:
        super().__init__()
        self.group_size = int(group_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        members, n, units = h.shape
        group = self.group_size if n % self.group_size == 0 else n
        grouped = h.view(members, -1, group, units)
        std = (grouped.var(dim=2, unbiased=False) + 1e-8).sqrt().mean(dim=2)  # [K, n / group]
        feature = std.repeat_interleave(group, dim=1).unsqueeze(2)
        return torch.cat([h, feature.to(h.dtype)], dim=2)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


class MemberConstants:
    """Fixed per-member values (indices, penalty weights, EMA factors) as [K, 1, ...] tensors on a device, each
    built once: the training step does not copy them to the device at every update."""

    def __init__(self) -> None:
        self._cache: dict[tuple, torch.Tensor] = {}

    def __call__(
        self, name: str, values: Sequence[float], like: torch.Tensor, dims: int = 1, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        key = (name, like.device, dtype or like.dtype, dims)
        if key not in self._cache:
            self._cache[key] = torch.tensor(list(values), dtype=dtype or like.dtype, device=like.device).view(
                -1, *([1] * (dims - 1))
            )
        return self._cache[key]


def member_groups(values: Sequence[Any], skip: Any = None) -> list[tuple[Any, list[int]]]:
    """(value, members holding it) for each distinct value, leaving out members holding ``skip``."""
    groups: dict[Any, list[int]] = {}
    for k, value in enumerate(values):
        if value != skip:
            groups.setdefault(value, []).append(k)
    return list(groups.items())


@contextmanager
def buffers_restored(*modules: nn.Module) -> Iterator[None]:
    """Run a block and put every buffer of ``modules`` back as it was (a forward pass in training mode updates
    batch-norm statistics and spectral-norm vectors; a diagnostic probe must not)."""
    saved = [(buf, buf.detach().clone()) for module in modules for buf in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)
