"""gan.model.optim: the member-stacked Adam and SGD against torch.optim's, one torch optimizer per member (an
oracle: an independent implementation of the same formulas).

Measured (CPU, torch 2.14): not bit-exact with torch's in float32 (torch adds ``alpha * b`` in one fused rounding,
folds ``lr`` in a different order and computes Adam's bias corrections as Python doubles) but equal to rounding:
|diff| <= 4e-6 (1 + |x|) after 20 steps in float32 (1.1e-6 measured) and 1e-13 (1 + |x|) in float64 (9e-16
measured).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from torch import nn

from gan.model.optim import SGD, Adam

# --------------------------------------------------------------------------------------------------------------
# 1. gan.model.optim against torch.optim

K = 3  # members
SHAPES = [(K, 4, 5), (K, 6), (K,)]  # a weight, a bias, one value per member (a PReLU slope's shape)
STEPS = 20
# |stacked - torch| <= tol * (1 + |torch|): rounding differences only (see the module docstring; measured worst
# 1.1e-6 in float32 and 9e-16 in float64 over 25 gradient seeds). A wrong formula (a bias correction one step off,
# a member's lr applied to another, weight decay after the moments, ...) is off by 1e-5 or far more.
TOLERANCE = {torch.float32: 4e-6, torch.float64: 1e-13}

# (gan.model.optim options, member k's torch.optim options): every option both take, per member and given once.
ADAM_CASES = {
    "defaults": ({}, [{}] * K),
    "lr_per_member": ({"lr": [1e-3, 1e-2, 3e-4]}, [{"lr": 1e-3}, {"lr": 1e-2}, {"lr": 3e-4}]),
    "everything_per_member": (
        {
            "lr": [1e-3, 1e-2, 3e-4],
            "betas": [(0.9, 0.999), (0.5, 0.99), (0.0, 0.9)],
            "eps": [1e-8, 1e-6, 1e-3],
            "weight_decay": [0.0, 1e-2, 0.5],
        },
        [
            {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
            {"lr": 1e-2, "betas": (0.5, 0.99), "eps": 1e-6, "weight_decay": 1e-2},
            {"lr": 3e-4, "betas": (0.0, 0.9), "eps": 1e-3, "weight_decay": 0.5},
        ],
    ),
    "everything_given_once": (
        {"lr": 3e-3, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 1e-2},
        [{"lr": 3e-3, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 1e-2}] * K,
    ),
}
SGD_CASES = {
    "defaults": ({}, [{}] * K),
    "lr_per_member": ({"lr": [1e-3, 1e-2, 0.3]}, [{"lr": 1e-3}, {"lr": 1e-2}, {"lr": 0.3}]),
    "everything_per_member": (  # one member without momentum, one without weight decay
        {"lr": [1e-3, 1e-2, 0.3], "momentum": [0.0, 0.9, 0.5], "weight_decay": [0.1, 0.0, 1e-3]},
        [
            {"lr": 1e-3, "momentum": 0.0, "weight_decay": 0.1},
            {"lr": 1e-2, "momentum": 0.9, "weight_decay": 0.0},
            {"lr": 0.3, "momentum": 0.5, "weight_decay": 1e-3},
        ],
    ),
    "everything_given_once": (
        {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3},
        [{"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}] * K,
    ),
}


def stacked_against_torch(
    make_stacked: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
    make_torch: Callable[[int, list[nn.Parameter]], torch.optim.Optimizer],
    dtype: torch.dtype,
    steps: int = STEPS,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run the stacked optimizer over parameters shaped [K, ...] and, for each member k, a torch optimizer over the
    slices [k] (starting equal), feeding both the same fresh random gradients at every step (set in a closure, so
    ``step(closure)`` is exercised too). Returns (stacked slice, torch parameter) pairs after ``steps`` steps."""
    gen = torch.Generator().manual_seed(0)
    stacked = [nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in SHAPES]
    alone = [[nn.Parameter(p.detach()[k].clone()) for p in stacked] for k in range(K)]
    opt = make_stacked(stacked)
    refs = [make_torch(k, alone[k]) for k in range(K)]
    for step in range(steps):
        grads = [torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES]

        def closure(params=stacked, grads=grads, step=step):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            return step

        assert opt.step(closure) == step  # the closure's loss comes back, as from torch's
        for k in range(K):
            for p, g in zip(alone[k], grads, strict=True):
                p.grad = g[k].clone()
            refs[k].step()
    return [(p.detach()[k], q.detach()) for k in range(K) for p, q in zip(stacked, alone[k], strict=True)]


def assert_agree(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], dtype: torch.dtype) -> None:
    tol = TOLERANCE[dtype]
    for i, (ours, theirs) in enumerate(pairs):
        torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol, msg=lambda m, i=i: f"member/param {i}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", ADAM_CASES)
def test_stacked_adam_steps_each_member_as_torch_adam_does(case, dtype):
    """gan.model.optim.Adam over [K, ...] tensors == K torch.optim.Adam, member k with member k's lr, betas, eps
    and weight decay, over 20 steps of fresh random gradients (to rounding: see TOLERANCE)."""
    ours, theirs = ADAM_CASES[case]
    pairs = stacked_against_torch(
        lambda params: Adam(params, members=K, **ours),
        lambda k, params: torch.optim.Adam(params, **theirs[k]),
        dtype,
    )
    assert_agree(pairs, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", SGD_CASES)
def test_stacked_sgd_steps_each_member_as_torch_sgd_does(case, dtype):
    """gan.model.optim.SGD over [K, ...] tensors == K torch.optim.SGD (heavy-ball momentum, dampening 0, L2 weight
    decay), member k with its own lr, momentum and weight decay, over 20 steps (to rounding: see TOLERANCE)."""
    ours, theirs = SGD_CASES[case]
    pairs = stacked_against_torch(
        lambda params: SGD(params, members=K, **ours),
        lambda k, params: torch.optim.SGD(params, **theirs[k]),
        dtype,
    )
    assert_agree(pairs, dtype)


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_parameter_groups_with_their_own_per_member_values_step_as_torch_groups_do(kind):
    """Two parameter groups, the second with its own per-member values (lists), against torch optimizers with the
    same two groups per member."""
    if kind == "adam":
        group = {"lr": [5e-3, 1e-3, 2e-2], "betas": [(0.5, 0.999), (0.9, 0.99), (0.8, 0.9)]}
        defaults = {"lr": [1e-3, 1e-2, 3e-4], "weight_decay": [0.0, 0.1, 0.0]}
        stacked_cls, torch_cls = Adam, torch.optim.Adam
    else:
        group = {"lr": [0.1, 0.02, 0.3], "momentum": [0.5, 0.0, 0.9]}
        defaults = {"lr": [1e-3, 1e-2, 0.3], "momentum": [0.9, 0.9, 0.0], "weight_decay": [0.0, 0.1, 0.0]}
        stacked_cls, torch_cls = SGD, torch.optim.SGD

    def member(values: dict[str, list[Any]], k: int) -> dict[str, Any]:
        return {name: v[k] for name, v in values.items()}

    pairs = stacked_against_torch(
        lambda p: stacked_cls([{"params": p[:2]}, {"params": p[2:], **group}], members=K, **defaults),
        lambda k, p: torch_cls([{"params": p[:2]}, {"params": p[2:], **member(group, k)}], **member(defaults, k)),
        torch.float64,
    )
    assert_agree(pairs, torch.float64)


def test_a_parameter_group_may_give_one_value_for_all_members():
    """Found by this oracle and fixed: a group's own value given once (torch's way) is every member's, and checked."""
    params = [nn.Parameter(torch.zeros(K, 2)), nn.Parameter(torch.zeros(K, 2))]
    opt = Adam([{"params": params[:1]}, {"params": params[1:], "lr": 0.1}], members=K)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    assert torch.allclose(params[1], torch.full_like(params[1], -0.1))
    with pytest.raises(ValueError, match="lr must be a finite number > 0, got -1"):
        Adam([{"params": params[:1]}, {"params": params[1:], "lr": -1.0}], members=K)
