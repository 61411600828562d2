"""Activation registry: one name -> one module factory, with the output bounds the lab needs.

Every activation the lab can place in a network is listed here once. The bounds serve two purposes: the data
range follows the generator's output activation (``data_range``), and later diagnostics measure saturation near
them. Parameters (e.g. the leaky slope) come from the config's ``model.act_params.<name>`` table.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gan.errors import ConfigError

INF = math.inf


@dataclass(frozen=True)
class ActivationSpec:
    """How to build one activation and what values it can output."""

    factory: Callable[..., nn.Module]
    bounds: Callable[[Mapping[str, Any]], tuple[float, float]]
    doc: str


def _const(lo: float, hi: float) -> Callable[[Mapping[str, Any]], tuple[float, float]]:
    return lambda _params: (lo, hi)


# Lower bounds of the smooth ReLU relatives are their global minima (rounded outward).
ACTIVATIONS: dict[str, ActivationSpec] = {
    "relu": ActivationSpec(nn.ReLU, _const(0.0, INF), "max(0, x)"),
    "leaky_relu": ActivationSpec(nn.LeakyReLU, _const(-INF, INF), "x if x > 0 else negative_slope * x"),
    "prelu": ActivationSpec(nn.PReLU, _const(-INF, INF), "leaky ReLU with a learned slope (one per layer)"),
    "elu": ActivationSpec(nn.ELU, lambda p: (-float(p.get("alpha", 1.0)), INF), "x if x > 0 else alpha*(exp(x)-1)"),
    "selu": ActivationSpec(nn.SELU, _const(-1.7581, INF), "scaled ELU (self-normalising)"),
    "gelu": ActivationSpec(nn.GELU, _const(-0.1700, INF), "x * Phi(x)"),
    "silu": ActivationSpec(nn.SiLU, _const(-0.2785, INF), "x * sigmoid(x) (swish)"),
    "mish": ActivationSpec(nn.Mish, _const(-0.3089, INF), "x * tanh(softplus(x))"),
    "softplus": ActivationSpec(nn.Softplus, _const(0.0, INF), "log(1 + exp(beta*x)) / beta"),
    "tanh": ActivationSpec(nn.Tanh, _const(-1.0, 1.0), "tanh(x), bounded in (-1, 1)"),
    "sigmoid": ActivationSpec(nn.Sigmoid, _const(0.0, 1.0), "1 / (1 + exp(-x)), bounded in (0, 1)"),
    "hardtanh": ActivationSpec(
        nn.Hardtanh,
        lambda p: (float(p.get("min_val", -1.0)), float(p.get("max_val", 1.0))),
        "clamp(x, min_val, max_val)",
    ),
    "identity": ActivationSpec(nn.Identity, _const(-INF, INF), "x (a linear control: no nonlinearity)"),
}

ACTIVATION_NAMES: tuple[str, ...] = tuple(ACTIVATIONS)


def _spec(name: str, where: str) -> ActivationSpec:
    if name not in ACTIVATIONS:
        raise ConfigError(f"Unknown activation {name!r} for {where}. Valid names: {', '.join(ACTIVATION_NAMES)}.")
    return ACTIVATIONS[name]


def _valid_params(spec: ActivationSpec) -> list[str]:
    return [p for p in inspect.signature(spec.factory).parameters if p not in ("inplace", "self")]


def _defaults(spec: ActivationSpec) -> dict[str, Any]:
    """Each parameter of an activation with its default (what a message offers as the valid form)."""
    signature = inspect.signature(spec.factory).parameters
    return {p: signature[p].default for p in _valid_params(spec)}


def check_activation(name: str, params: Mapping[str, Any] | None = None, where: str = "activation") -> None:
    """Raise ConfigError naming the bad value and the valid choices; build nothing."""
    spec = _spec(name, where)
    valid = _valid_params(spec)
    for key in params or {}:
        if key not in valid:
            raise ConfigError(
                f"Unknown parameter {key!r} for activation {name!r} (model.act_params.{name}). "
                f"Valid parameters: {', '.join(valid) or 'none'}."
            )
    try:  # the values too: the module is built and applied once, as a network would
        module = spec.factory(**dict(params or {}))
        with torch.no_grad():
            out = module(torch.linspace(-2, 2, 2 * getattr(module, "num_parameters", 1)).view(2, -1))
        if not bool(torch.isfinite(out).all()):
            raise ValueError("it outputs NaN or infinite values for inputs in [-2, 2]")
        spec.bounds(dict(params or {}))
    except (TypeError, ValueError, RuntimeError, AssertionError) as exc:
        raise ConfigError(
            f"model.act_params.{name}={dict(params or {})} is not valid for {name!r} ({where}): "
            f"{str(exc).rstrip('.')}. "
            f"Its parameters are {', '.join(f'{p}={d}' for p, d in _defaults(spec).items()) or 'none'}."
        ) from None


def build_activation(name: str, params: Mapping[str, Any] | None = None, where: str = "activation") -> nn.Module:
    """A fresh activation module (fresh, so a learned PReLU slope is never shared between layers)."""
    check_activation(name, params, where)
    return ACTIVATIONS[name].factory(**dict(params or {}))


def output_bounds(name: str, params: Mapping[str, Any] | None = None) -> tuple[float, float]:
    """The closed hull of the values the activation can output, e.g. (-1, 1) for tanh."""
    return _spec(name, "activation").bounds(dict(params or {}))


def data_range(name: str, params: Mapping[str, Any] | None = None) -> tuple[float, float]:
    """The range real images are scaled to when ``name`` is the generator's output activation.

    Bounded activations use their bounds (tanh -> [-1, 1], sigmoid -> [0, 1], hardtanh -> [min_val, max_val]).
    Unbounded ones get the usual pixel range that the generator can still reach: [-1, 1] when the output can go
    down to -1 (identity, leaky_relu, prelu, elu, selu), else [0, 1] (relu, softplus, gelu, silu, mish).
    """
    lo, hi = output_bounds(name, params)
    if math.isfinite(lo) and math.isfinite(hi):
        return (lo, hi)
    return (-1.0, 1.0) if lo <= -1.0 else (0.0, 1.0)
