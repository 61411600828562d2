"""The classic MLP GAN: a generator from noise to a flattened 32x32 image and a discriminator to one logit."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from gan.activations import build_activation

IMAGE_SIZE = 32
IMAGE_DIM = IMAGE_SIZE * IMAGE_SIZE  # 1024: MNIST padded to 32x32, flattened


def mlp(
    sizes: Sequence[int],
    hidden_act: str,
    out_act: str,
    act_params: Mapping[str, Mapping[str, Any]],
    where: tuple[str, str],
) -> nn.Sequential:
    """Linear layers ``sizes[0] -> ... -> sizes[-1]``; ``hidden_act`` after each hidden one, ``out_act`` last.

    Layers are named ``fc1, act1, fc2, act2, ..., out, out_act`` so that diagnostics can find hidden layer K.
    ``where`` names the two config keys (hidden, output) for error messages.
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    n_hidden = len(sizes) - 2
    for k in range(n_hidden):
        layers[f"fc{k + 1}"] = nn.Linear(sizes[k], sizes[k + 1])
        layers[f"act{k + 1}"] = build_activation(hidden_act, act_params.get(hidden_act), where[0])
    layers["out"] = nn.Linear(sizes[-2], sizes[-1])
    layers["out_act"] = build_activation(out_act, act_params.get(out_act), where[1])
    return nn.Sequential(layers)


class Generator(nn.Module):
    """z (latent_dim) -> hidden widths -> 1024 pixels in the output activation's range."""

    def __init__(
        self,
        latent_dim: int,
        hidden: Sequence[int],
        act: str,
        out_act: str,
        act_params: Mapping[str, Mapping[str, Any]],
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = mlp([latent_dim, *hidden, IMAGE_DIM], act, out_act, act_params, ("model.g_act", "model.g_out_act"))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Discriminator(nn.Module):
    """1024 pixels -> hidden widths -> one logit per image (the probability is sigmoid(logit), in the loss)."""

    def __init__(
        self,
        hidden: Sequence[int],
        act: str,
        out_act: str,
        act_params: Mapping[str, Mapping[str, Any]],
    ) -> None:
        super().__init__()
        self.net = mlp([IMAGE_DIM, *hidden, 1], act, out_act, act_params, ("model.d_act", "model.d_out_act"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)
