"""The classic MLP GAN: a generator from noise to a flattened 32x32 image and a discriminator to one logit.

Optional parts, each off by default: a normalization layer in every hidden layer (``batch`` or ``layer``, between
the linear layer and the activation, so the activation always sees normalized inputs, as in DCGAN), spectral
normalization of D's linear layers, and a minibatch-standard-deviation feature before D's output layer.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gan.activations import build_activation

IMAGE_SIZE = 32
IMAGE_DIM = IMAGE_SIZE * IMAGE_SIZE  # 1024: MNIST padded to 32x32, flattened

NORMS: dict[str, Callable[[int], nn.Module] | None] = {
    "none": None,
    "batch": nn.BatchNorm1d,  # statistics over the batch (running averages at eval time)
    "layer": nn.LayerNorm,  # statistics over each sample's units: no batch dependence (safe with penalties)
}


class NetworkConfigError(ValueError):
    """A network option in the config is not valid."""


def check_norm(name: str, where: str) -> None:
    if name not in NORMS:
        raise NetworkConfigError(f"Unknown normalization {name!r} for {where}. Valid choices: {', '.join(NORMS)}.")


class MinibatchStd(nn.Module):
    """Appends one feature: the mean over units of the standard deviation across a group of samples.

    Karras et al. 2018 (ProGAN): a discriminator that sees how varied a group of samples is can penalise a
    generator that produces the same image over and over. Groups of ``group_size`` consecutive samples (the whole
    batch when it does not divide evenly); every sample of a group gets the group's value.
    """

    def __init__(self, group_size: int = 4) -> None:
        super().__init__()
        if int(group_size) < 2:
            raise NetworkConfigError(
                f"model.d_minibatch_std_group must be at least 2 (a standard deviation needs two samples), "
                f"got {group_size!r}."
            )
        self.group_size = int(group_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        n, units = h.shape
        group = self.group_size if n % self.group_size == 0 else n
        grouped = h.view(-1, group, units)  # (n / group) x group x units
        std = (grouped.var(dim=1, unbiased=False) + 1e-8).sqrt().mean(dim=1)  # one value per group
        feature = std.repeat_interleave(group).view(n, 1)
        return torch.cat([h, feature.to(h.dtype)], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


def mlp(
    sizes: Sequence[int],
    hidden_act: str,
    out_act: str,
    act_params: Mapping[str, Mapping[str, Any]],
    where: tuple[str, str],
    norm: str = "none",
    before_out: nn.Module | None = None,
    extra_out_features: int = 0,
) -> nn.Sequential:
    """Linear layers ``sizes[0] -> ... -> sizes[-1]``; ``hidden_act`` after each hidden one, ``out_act`` last.

    Layers are named ``fc1, [norm1,] act1, fc2, ..., [mbstd,] out, out_act`` so that diagnostics can find hidden
    layer K. ``norm`` adds a normalization layer between each hidden linear layer and its activation;
    ``before_out`` (adding ``extra_out_features`` inputs) goes right before the output layer. ``where`` names the
    two config keys (hidden, output) for error messages.
    """
    make_norm = NORMS[norm]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    n_hidden = len(sizes) - 2
    for k in range(n_hidden):
        layers[f"fc{k + 1}"] = nn.Linear(sizes[k], sizes[k + 1])
        if make_norm is not None:
            layers[f"norm{k + 1}"] = make_norm(sizes[k + 1])
        layers[f"act{k + 1}"] = build_activation(hidden_act, act_params.get(hidden_act), where[0])
    if before_out is not None:
        layers["mbstd"] = before_out
    layers["out"] = nn.Linear(sizes[-2] + extra_out_features, sizes[-1])
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
        norm: str = "none",
    ) -> None:
        super().__init__()
        check_norm(norm, "model.g_norm")
        self.latent_dim = latent_dim
        self.net = mlp(
            [latent_dim, *hidden, IMAGE_DIM], act, out_act, act_params, ("model.g_act", "model.g_out_act"), norm
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Discriminator(nn.Module):
    """1024 pixels -> hidden widths -> one logit per image (the probability is sigmoid(logit), in the loss).

    ``spectral_norm`` divides every linear layer's weight by its largest singular value (Miyato et al. 2018, one
    power iteration per training forward pass), which bounds D's Lipschitz constant by the activations'.
    """

    def __init__(
        self,
        hidden: Sequence[int],
        act: str,
        out_act: str,
        act_params: Mapping[str, Mapping[str, Any]],
        norm: str = "none",
        spectral_norm: bool = False,
        minibatch_std_group: int | None = None,
    ) -> None:
        super().__init__()
        check_norm(norm, "model.d_norm")
        mbstd = MinibatchStd(minibatch_std_group) if minibatch_std_group else None
        self.net = mlp(
            [IMAGE_DIM, *hidden, 1],
            act,
            out_act,
            act_params,
            ("model.d_act", "model.d_out_act"),
            norm,
            before_out=mbstd,
            extra_out_features=1 if mbstd is not None else 0,
        )
        if spectral_norm:
            apply_spectral_norm(self.net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def apply_spectral_norm(net: nn.Module) -> None:
    """Spectral normalization (torch's parametrization) on every linear layer of ``net``."""
    for name, layer in list(net.named_children()):
        if isinstance(layer, nn.Linear):
            setattr(net, name, spectral_norm(layer))
