"""Initialization schemes per member: how each linear layer's initial weights are scaled for the activation that
feeds it.

- ``default``: PyTorch's ``nn.Linear`` draw, uniform within 1/sqrt(fan_in) (weight std 1/sqrt(3 fan_in)) for
  weights and biases alike, whatever the activation (what every result of this lab before ``model.init`` used).
- ``variance_preserving``: the same draw rescaled to std gain/sqrt(fan_in) and biases zeroed, where ``gain`` keeps
  the second moment of the signal constant through a layer with *its* activation: a layer's pre-activations
  y = W f(x) have E[y^2] = fan_in Var(W) E[f(x)^2], so with x ~ N(0, 1) the gain is 1/sqrt(E[f(x)^2]) for the
  activation f applied to the layer's input (He et al. 2015's sqrt(2) for ReLU, LeCun's 1 for SELU; the first layer
  of each network sees z or the images directly: gain 1). E[f(x)^2] is computed numerically once per activation and
  parameters (a fine trapezoid rule, within 1e-8 of adaptive quadrature; a test checks all 13), which covers every
  activation of the registry, parametrized ones (a leaky slope, ELU's alpha, hardtanh's bounds, PReLU's initial
  slope) included; torch's ``calculate_gain`` is exact only for some of them (its tanh gain, 5/3, is a heuristic).

The weights keep the same random draw under both schemes (rescaled, not redrawn), so each member consumes its
initialization stream identically and the two schemes differ in scale only.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from typing import Any

import torch

from gan.errors import ConfigError
from gan.model.activations import build_activation

INIT_SCHEMES = ("default", "variance_preserving")
# E[f(x)^2] by the trapezoid rule on a fine grid over +-12 standard deviations: its error is O(step^2) even at
# kinks (relu's 0, hardtanh's bounds), where Gauss-Hermite quadrature converges slowly (0.4% off for hardtanh
# with 200 nodes, measured).
_REACH, _POINTS = 12.0, 480_001


def check_init(name: Any, where: str = "model.init") -> str:
    """The scheme called ``name``, or a ConfigError naming the value and the valid choices."""
    if name not in INIT_SCHEMES:
        raise ConfigError(f"Unknown initialization {name!r} for {where}. Valid choices: {', '.join(INIT_SCHEMES)}.")
    return str(name)


@functools.cache
def _second_moment(name: str, params_json: str, scale: float) -> float:
    module = build_activation(name, json.loads(params_json)).double()
    x = torch.linspace(-_REACH, _REACH, _POINTS, dtype=torch.float64)
    with torch.no_grad():
        values = module(x * scale).double()
    density = torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return float(torch.trapezoid(values.pow(2) * density, x))


def second_moment(name: str, params: Mapping[str, Any] | None = None, variance: float = 1.0) -> float:
    """E[f(x)^2] for x ~ N(0, variance), f the activation ``name`` with ``params`` (the signal a layer passes
    on)."""
    return _second_moment(name, json.dumps(dict(params or {}), sort_keys=True), math.sqrt(variance))


def scale_sensitivity(name: str, params: Mapping[str, Any] | None = None) -> float:
    """d log E[f(x)^2] / d log Var(x) at Var(x) = 1: how a deviation of the signal's scale carries through one
    variance-preserving layer (1: kept, as ReLU's exact homogeneity does; below 1: shrunk back towards 1, a stable
    scale; above 1: amplified, so finite-width deviations grow with depth: gelu and silu)."""
    step = 1e-3
    up, down = second_moment(name, params, 1 + step), second_moment(name, params, 1 - step)
    return math.log(up / down) / math.log((1 + step) / (1 - step))


def variance_preserving_gain(name: str, params: Mapping[str, Any] | None = None) -> float:
    """The weight gain that keeps E[y^2] = 1 through a linear layer fed by activation ``name``: 1/sqrt(E[f(x)^2])."""
    moment = second_moment(name, params)
    if not moment > 0.0:
        raise ConfigError(
            f"variance_preserving initialization is undefined for activation {name!r} with {dict(params or {})}: "
            "it outputs 0 for every input of a standard normal signal."
        )
    return 1.0 / math.sqrt(moment)


def layer_gain(scheme: str, feeding: str | None, params: Mapping[str, Any] | None = None) -> float | None:
    """The gain of a linear layer whose input comes out of activation ``feeding`` (None: the network's input),
    or None for the default draw."""
    if scheme == "default":
        return None
    return 1.0 if feeding is None else variance_preserving_gain(feeding, params)


def rescale_(weight: torch.Tensor, bias: torch.Tensor, gain: float | None) -> None:
    """Turn a default ``nn.Linear`` draw (uniform, std 1/sqrt(3 fan_in)) of one member into std gain/sqrt(fan_in)
    with a zero bias, in place; ``weight`` is [in, out]."""
    if gain is None:
        return
    weight.mul_(gain * math.sqrt(3.0))
    bias.zero_()
