"""Optimizers for a population: one optimizer over stacked parameters, with each member's own hyperparameters.

Adam and SGD are elementwise, so one optimizer over tensors shaped [K, ...] updates each member exactly as its own
optimizer would, provided the hyperparameters are per member: here ``lr``, ``betas``, ``eps``, ``weight_decay``
and ``momentum`` are lists with one value per member (a single number means the same for all). Adam's step count
is per member too. Members can be frozen (``set_active``): a diverged member stops updating, and its parameters and
optimizer state stay as they were, while the others go on.

The formulas are torch.optim's (``Adam``'s single-tensor path; ``SGD`` with momentum and dampening 0); each
member's state is the slice ``[k]`` of every state tensor, and its hyperparameters element ``k`` of each list, so a
member's optimizer state can be split from a pack's and merged into another (``gan.runs.packing``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

PER_MEMBER_KEYS = ("lr", "betas", "eps", "weight_decay", "momentum")


def _per_member(value: Any, members: int, name: str, width: int = 1) -> list:
    """A hyperparameter given once or per member -> a list of ``members`` values (``width`` > 1: tuples)."""
    if width == 1 and isinstance(value, (int, float)):
        return [float(value)] * members
    values = list(value)
    if width > 1 and len(values) == width and all(isinstance(v, (int, float)) for v in values):
        return [tuple(float(v) for v in values)] * members
    if len(values) != members:
        raise ValueError(f"{name} has {len(values)} values for {members} members")
    return [tuple(float(x) for x in v) if width > 1 else float(v) for v in values]


def check_positive(name: str, value: float, zero: bool = False) -> None:
    """A finite value above 0 (or at least 0 with ``zero``): a NaN, infinite or negative step size cannot train."""
    if not (math.isfinite(value) and (value >= 0 if zero else value > 0)):
        bound = ">= 0" if zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value:g}")


class StackedOptimizer(torch.optim.Optimizer):
    """Shared machinery: the member count, per-member hyperparameters as broadcastable tensors, frozen members.

    Updates use torch's ``_foreach`` ops over a group's parameters (one call per formula term, not per parameter:
    the optimizer's Python cost does not grow with the network), with each hyperparameter a [K, 1, ...] tensor.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], members: int, defaults: dict[str, Any]) -> None:
        self.members = int(members)
        super().__init__(params, self.per_member(defaults))
        self._frozen: torch.Tensor | None = None  # indices of members that no longer update (None: all update)
        self._frozen_on: dict[torch.device, torch.Tensor] = {}
        self._columns: dict[tuple, list[torch.Tensor]] = {}

    def per_member(self, options: dict[str, Any]) -> dict[str, Any]:
        """Hyperparameters given once or per member -> per-member lists, each value checked (a subclass's rules)."""
        raise NotImplementedError

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """A parameter group may set its own hyperparameters, as torch's do: once for all members or per member."""
        own = {k: v for k, v in param_group.items() if k != "params"}
        super().add_param_group({**param_group, **self.per_member(own)})

    def set_active(self, active: Sequence[bool]) -> None:
        """Which members update from now on (a diverged member is frozen where it stopped)."""
        frozen = [k for k, a in enumerate(active) if not a]
        self._frozen = torch.tensor(frozen) if frozen else None
        self._frozen_on: dict[torch.device, torch.Tensor] = {}  # its copy on each device, made once

    def _frozen_index(self, device: torch.device) -> torch.Tensor:
        """The frozen members' indices on ``device`` (copied once: a CUDA graph's capture cannot copy from host)."""
        if device not in self._frozen_on:
            self._frozen_on[device] = self._frozen.to(device)
        return self._frozen_on[device]

    # How a hyperparameter enters the formulas (named, so that its tensors are built once and cached).
    TRANSFORMS: dict[str, Callable[[float], float]] = {"value": float, "one_minus": lambda v: 1.0 - float(v)}

    def columns(
        self,
        group: dict[str, Any],
        key: str,
        params: Sequence[torch.Tensor],
        index: int | None = None,
        transform: str = "value",
    ) -> list[torch.Tensor]:
        """``transform`` of the group's per-member ``key`` (element ``index`` of tuples), one [K, 1, ...] tensor
        per parameter, shaped to broadcast against it (built once per device, dtype and shape; a loaded state
        with other values clears the cache)."""
        out = []
        for p in params:
            cache = (id(group), key, index, transform, p.device, p.dtype, p.dim())
            column = self._columns.get(cache)
            if column is None:
                fn = self.TRANSFORMS[transform]
                values = [fn(v if index is None else v[index]) for v in group[key]]
                column = torch.tensor(values, dtype=p.dtype, device=p.device).view(-1, *([1] * (p.dim() - 1)))
                self._columns[cache] = column
            out.append(column)
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._columns = {}
        for group in self.param_groups:  # torch keeps a loaded step on the CPU; the update needs it beside p
            for p in group["params"]:
                step = self.state.get(p, {}).get("step")
                if torch.is_tensor(step) and step.device != p.device:
                    self.state[p]["step"] = step.to(device=p.device, dtype=p.dtype)

    def _step_group(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if any(group["weight_decay"]):
                grads = torch._foreach_add(
                    grads, torch._foreach_mul(params, self.columns(group, "weight_decay", params))
                )
            if self._frozen is None:
                self._step_group(group, params, grads)
                continue
            # Frozen members: update everything, then put their slices back (their values may be NaN).
            tensors = params + [t for p in params for t in self.state[p].values() if torch.is_tensor(t)]
            frozen = self._frozen_index(params[0].device)
            saved = [(t, t[frozen].clone()) for t in tensors]
            self._step_group(group, params, grads)
            for t, old in saved:
                t[frozen] = old
            for p in params:  # state created by this step (a first momentum buffer, say) starts frozen too
                for t in self.state[p].values():
                    if torch.is_tensor(t) and all(t is not s for s, _ in saved):
                        t[frozen] = 0
        return loss


class Adam(StackedOptimizer):
    """Adam (Kingma & Ba 2015) with per-member ``lr``, ``betas``, ``eps`` and ``weight_decay`` (L2, as torch's)."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float | Sequence[float] = 1e-3,
        betas: Sequence[float] | Sequence[Sequence[float]] = (0.9, 0.999),
        eps: float | Sequence[float] = 1e-8,
        weight_decay: float | Sequence[float] = 0.0,
        members: int = 1,
    ) -> None:
        self.members = int(members)
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, members, defaults)

    def per_member(self, options: dict[str, Any]) -> dict[str, Any]:
        out = {k: _per_member(v, self.members, k, width=2 if k == "betas" else 1) for k, v in options.items()}
        for b1, b2 in out.get("betas", []):
            if not (0 <= b1 < 1 and 0 <= b2 < 1):
                raise ValueError(f"betas must both be in [0, 1), got betas=[{b1:g}, {b2:g}] (0.5, 0.999 are usual)")
        for value in out.get("lr", []):
            check_positive("lr", value)
        for value in out.get("eps", []):
            check_positive("eps", value)
        for value in out.get("weight_decay", []):
            check_positive("weight_decay", value, zero=True)
        return out

    def _step_group(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        for p in params:
            state = self.state[p]
            if not state:  # the step count is per member, shaped to broadcast against p
                state["step"] = torch.zeros((self.members,) + (1,) * (p.dim() - 1), dtype=p.dtype, device=p.device)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
        steps = [self.state[p]["step"] for p in params]
        exp_avgs = [self.state[p]["exp_avg"] for p in params]
        exp_avg_sqs = [self.state[p]["exp_avg_sq"] for p in params]
        torch._foreach_add_(steps, 1)
        beta1 = self.columns(group, "betas", params, 0)
        beta2 = self.columns(group, "betas", params, 1)
        # torch's foreach Adam, with each member's hyperparameters as [K, 1, ...] factors (9 passes over the state,
        # 8 when the members share beta2)
        torch._foreach_lerp_(exp_avgs, grads, self.columns(group, "betas", params, 0, "one_minus"))
        torch._foreach_mul_(exp_avg_sqs, beta2)
        one_minus_beta2 = {1.0 - b2 for _, b2 in group["betas"]}
        if len(one_minus_beta2) == 1:  # one value for all members (a single run): no [K, ...] product of grads
            # v + c * g * g computes (c * g) * g: the same bits as v + 1 * g * (g * c) below (a product commutes)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=one_minus_beta2.pop())
        else:
            torch._foreach_addcmul_(
                exp_avg_sqs, grads, torch._foreach_mul(grads, self.columns(group, "betas", params, 1, "one_minus"))
            )
        bias_correction1 = torch._foreach_pow(beta1, steps)  # 1 - beta1^t, below (tiny [K, 1, ...] tensors)
        torch._foreach_neg_(bias_correction1)
        torch._foreach_add_(bias_correction1, 1)
        bias_correction2 = torch._foreach_pow(beta2, steps)
        torch._foreach_neg_(bias_correction2)
        torch._foreach_add_(bias_correction2, 1)
        torch._foreach_sqrt_(bias_correction2)
        step_size = torch._foreach_div(self.columns(group, "lr", params), bias_correction1)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bias_correction2)
        torch._foreach_add_(denom, self.columns(group, "eps", params))
        torch._foreach_div_(denom, step_size)  # p -= exp_avg / (denom / step_size): the step size folded in
        torch._foreach_addcdiv_(params, exp_avgs, denom, value=-1.0)


class SGD(StackedOptimizer):
    """Stochastic gradient descent with per-member ``lr``, ``momentum`` (heavy ball, as torch's with dampening 0)
    and ``weight_decay``."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float | Sequence[float] = 1e-3,
        momentum: float | Sequence[float] = 0.0,
        weight_decay: float | Sequence[float] = 0.0,
        members: int = 1,
    ) -> None:
        self.members = int(members)
        super().__init__(params, members, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    def per_member(self, options: dict[str, Any]) -> dict[str, Any]:
        out = {k: _per_member(v, self.members, k) for k, v in options.items()}
        for value in out.get("lr", []):
            check_positive("lr", value)
        for value in out.get("weight_decay", []):
            check_positive("weight_decay", value, zero=True)
        for value in out.get("momentum", []):
            if not 0 <= value < 1:
                raise ValueError(f"momentum must be in [0, 1), got {value:g}")
        return out

    def _step_group(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        if any(group["momentum"]):
            buffers = []
            for p, g in zip(params, grads, strict=True):
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = g.clone()
                else:
                    state["momentum_buffer"].mul_(self.columns(group, "momentum", [p])[0]).add_(g)
                buffers.append(state["momentum_buffer"])
            grads = buffers
        torch._foreach_sub_(params, torch._foreach_mul(grads, self.columns(group, "lr", params)))


OPTIMIZERS = {f"{cls.__module__}.{cls.__name__}": cls for cls in (Adam, SGD)}
