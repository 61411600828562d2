"""The classic MLP GAN, as a population: K generators from noise to a flattened 32x32 image and K discriminators to
one logit each, stored as one network of ``gan.model.population`` layers (a single run is K = 1).

Shapes: G maps z [K, B, latent] to images [K, B, 1024]; D maps images [K, B, 1024] to logits [K, B].
Members share widths and the switches that add parameters or change shapes (normalization layers, the minibatch
feature); each has its own activations (hidden and output), activation parameters and spectral-norm switch.

Optional parts, each off by default: a normalization layer in every hidden layer (``batch`` or ``layer``, between
the linear layer and the activation, so the activation always sees normalized inputs, as in DCGAN), spectral
normalization of D's linear layers, and a minibatch-standard-deviation feature before D's output layer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from gan.errors import ConfigError
from gan.images import IMAGE_DIM
from gan.model.init import layer_gain
from gan.model.population import NORMS, MemberActivation, MinibatchStd, StackedLinear


def check_norm(name: str, where: str) -> None:
    if name not in NORMS:
        raise ConfigError(f"Unknown normalization {name!r} for {where}. Valid choices: {', '.join(NORMS)}.")


def check_minibatch_std_group(group_size: int) -> None:
    if int(group_size) < 2:
        raise ConfigError(
            f"model.d_minibatch_std_group must be at least 2 (a standard deviation needs two samples), "
            f"got {group_size!r}."
        )


def mlp(
    sizes: Sequence[int],
    hidden_acts: Sequence[str],
    out_acts: Sequence[str],
    act_params: Sequence[Mapping[str, Mapping[str, Any]]],
    where: tuple[str, str],
    generators: Sequence[torch.Generator],
    norm: str = "none",
    before_out: nn.Module | None = None,
    extra_out_features: int = 0,
    spectral_norm: Sequence[bool] | None = None,
    init: Sequence[str] | None = None,
) -> nn.Sequential:
    """Stacked linear layers ``sizes[0] -> ... -> sizes[-1]``; each member's hidden activation after each hidden
    one, its output activation last.

    Layers are named ``fc1, [norm1,] act1, fc2, ..., [mbstd,] out, out_act`` so that diagnostics can find hidden
    layer K. ``norm`` adds a normalization layer between each hidden linear layer and its activation;
    ``before_out`` (adding ``extra_out_features`` inputs) goes right before the output layer. ``where`` names the
    two config keys (hidden, output) for error messages. Initial weights come from each member's generator, scaled
    by its ``init`` scheme (``gan.model.init``: the first layer for its raw input, every later one for the hidden
    activation that feeds it).
    """
    members = len(generators)
    make_norm = NORMS[norm]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    hidden_params = [p.get(a) for a, p in zip(hidden_acts, act_params, strict=True)]
    out_params = [p.get(a) for a, p in zip(out_acts, act_params, strict=True)]
    schemes = list(init or ["default"] * members)
    first_gains = [layer_gain(s, None) for s in schemes]
    later_gains = [layer_gain(s, a, p) for s, a, p in zip(schemes, hidden_acts, hidden_params, strict=True)]
    for k in range(len(sizes) - 2):
        gains = first_gains if k == 0 else later_gains
        layers[f"fc{k + 1}"] = StackedLinear(sizes[k], sizes[k + 1], generators, spectral_norm, gains)
        if make_norm is not None:
            layers[f"norm{k + 1}"] = make_norm(members, sizes[k + 1])
        layers[f"act{k + 1}"] = MemberActivation(hidden_acts, hidden_params, where[0])
    if before_out is not None:
        layers["mbstd"] = before_out
    out_gains = first_gains if len(sizes) == 2 else later_gains
    layers["out"] = StackedLinear(sizes[-2] + extra_out_features, sizes[-1], generators, spectral_norm, out_gains)
    layers["out_act"] = MemberActivation(out_acts, out_params, where[1])
    return nn.Sequential(layers)


class Generator(nn.Module):
    """z [K, B, latent] -> hidden widths -> [K, B, 1024] pixels, each member in its output activation's range."""

    def __init__(
        self,
        latent_dim: int,
        hidden: Sequence[int],
        acts: Sequence[str],
        out_acts: Sequence[str],
        act_params: Sequence[Mapping[str, Mapping[str, Any]]],
        generators: Sequence[torch.Generator],
        norm: str = "none",
        init: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        check_norm(norm, "model.g_norm")
        self.latent_dim = latent_dim
        self.net = mlp(
            [latent_dim, *hidden, IMAGE_DIM],
            acts,
            out_acts,
            act_params,
            ("model.g_act", "model.g_out_act"),
            generators,
            norm,
            init=init,
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Discriminator(nn.Module):
    """[K, B, 1024] pixels -> hidden widths -> one logit per image, [K, B] (the probability is sigmoid(logit), in
    the loss).

    ``spectral_norm`` (per member) divides every linear layer's weight by its largest singular value (one power
    iteration per training forward pass), which bounds D's Lipschitz constant by the activations'.
    """

    def __init__(
        self,
        hidden: Sequence[int],
        acts: Sequence[str],
        out_acts: Sequence[str],
        act_params: Sequence[Mapping[str, Mapping[str, Any]]],
        generators: Sequence[torch.Generator],
        norm: str = "none",
        spectral_norm: Sequence[bool] | None = None,
        minibatch_std_group: int | None = None,
        init: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        check_norm(norm, "model.d_norm")
        if minibatch_std_group:
            check_minibatch_std_group(minibatch_std_group)
        mbstd = MinibatchStd(minibatch_std_group) if minibatch_std_group else None
        self.net = mlp(
            [IMAGE_DIM, *hidden, 1],
            acts,
            out_acts,
            act_params,
            ("model.d_act", "model.d_out_act"),
            generators,
            norm,
            before_out=mbstd,
            extra_out_features=1 if mbstd is not None else 0,
            spectral_norm=spectral_norm,
            init=init,
        )

    def linear_layers(self) -> list[StackedLinear]:
        return [m for m in self.net if isinstance(m, StackedLinear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(2)
