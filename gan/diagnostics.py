"""What each activation does inside G and D while they train: dead units, saturation, statistics, gradients.

Every ``diag.every_n_steps`` iterations (only then: hooks are attached for one extra no-grad forward pass and
removed again, so other iterations pay nothing) and for every hidden layer K of each network:

- ``diag/{G,D}/layerK/dead``: share of units whose output is ~0 (|y| <= ``dead_threshold``) for the whole batch;
- ``diag/{G,D}/layerK/saturated``: share of outputs within ``saturation_margin`` of a finite bound of the
  activation's range (tanh and sigmoid: either end; hardtanh: its clamps; ReLU family: the floor at 0 or -alpha);
  0 for activations without finite bounds (identity, leaky_relu);
- ``pre_mean``, ``pre_std``, ``act_mean``, ``act_std``: pre-activation and activation statistics;
- ``grad_norm``: L2 norm of the layer's weight and bias gradients from the latest update of that network;
- histograms ``diag/{G,D}/layerK/pre`` and ``.../act`` (``diag.histograms``).

G is probed on fresh noise from its own seeded generator (the training's random stream is untouched), D on the
current real batch together with as many fakes. A probe leaves no trace on training: the networks' buffers
(batch-norm running statistics, spectral norm's power-iteration vectors) are restored after it.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from gan.activations import output_bounds


def hidden_layers(net: nn.Sequential) -> list[tuple[int, nn.Linear, nn.Module]]:
    """(K, linear layer K, activation after it) for each hidden layer of a ``gan.networks.mlp``."""
    modules = dict(net.named_children())
    layers, k = [], 1
    while f"fc{k}" in modules:
        layers.append((k, modules[f"fc{k}"], modules[f"act{k}"]))
        k += 1
    return layers


def layer_stats(
    pre: torch.Tensor,
    act: torch.Tensor,
    bounds: tuple[float, float],
    dead_threshold: float = 1e-6,
    saturation_margin: float = 0.01,
) -> dict[str, float]:
    """Dead and saturated shares and moments of one layer's pre-activations (B x units) and activations."""
    lo, hi = bounds
    scale = (hi - lo) if math.isfinite(lo) and math.isfinite(hi) else 1.0
    near = torch.zeros_like(act, dtype=torch.bool)
    if math.isfinite(lo):
        near |= act <= lo + saturation_margin * scale
    if math.isfinite(hi):
        near |= act >= hi - saturation_margin * scale
    return {
        "dead": (act.abs() <= dead_threshold).all(0).float().mean().item(),
        "saturated": near.float().mean().item(),
        "pre_mean": pre.mean().item(),
        "pre_std": pre.std().item(),
        "act_mean": act.mean().item(),
        "act_std": act.std().item(),
    }


@torch.no_grad()
def probe(
    net: nn.Sequential,
    x: torch.Tensor,
    act_name: str,
    act_params: Mapping[str, Any] | None,
    dead_threshold: float = 1e-6,
    saturation_margin: float = 0.01,
) -> dict[int, dict[str, Any]]:
    """One forward pass of ``net`` on ``x`` with hooks: per hidden layer K its stats and raw tensors."""
    captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for k, _, act in hidden_layers(net):
        handles.append(act.register_forward_hook(lambda m, inp, out, k=k: captured.__setitem__(k, (inp[0], out))))
    try:
        net(x)
    finally:
        for handle in handles:
            handle.remove()
    bounds = output_bounds(act_name, act_params)
    return {
        k: {"stats": layer_stats(pre, out, bounds, dead_threshold, saturation_margin), "pre": pre, "act": out}
        for k, (pre, out) in captured.items()
    }


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


def grad_norms(net: nn.Sequential) -> dict[int, float]:
    """L2 norm of each hidden and output linear layer's gradients (0 where none yet)."""
    norms = {}
    for k, linear, _ in hidden_layers(net):
        grads = [p.grad for p in linear.parameters() if p.grad is not None]
        norms[k] = math.sqrt(sum(g.float().pow(2).sum().item() for g in grads)) if grads else 0.0
    return norms


class ActivationDiagnostics(Callback):
    """Logs the per-layer diagnostics above every ``every_n_steps`` iterations."""

    def __init__(
        self,
        enabled: bool = True,
        every_n_steps: int = 500,
        histograms: bool = True,
        dead_threshold: float = 1e-6,
        saturation_margin: float = 0.01,
        seed: int = 0,
    ) -> None:
        self.enabled = bool(enabled)
        self.every_n_steps = int(every_n_steps)
        self.histograms = bool(histograms)
        self.dead_threshold = float(dead_threshold)
        self.saturation_margin = float(saturation_margin)
        self.noise = torch.Generator().manual_seed(int(seed))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: torch.Tensor, batch_idx: int
    ) -> None:
        iteration = pl_module.iteration
        if not self.enabled or self.every_n_steps < 1 or iteration % self.every_n_steps:
            return
        hp = pl_module.hparams
        real = batch[: len(batch) // hp.d_steps]
        z = torch.randn(len(real), hp.latent_dim, generator=self.noise).to(real.device)
        with torch.no_grad(), buffers_restored(pl_module.generator):
            fake = pl_module.generator(z)
        d_input = torch.cat([real, fake.to(real.dtype)])
        nets = {
            "G": (pl_module.generator.net, z, hp.g_act),
            "D": (pl_module.discriminator.net, d_input, hp.d_act),
        }
        scalars: dict[str, float] = {}
        for tag, (net, x, act_name) in nets.items():
            with buffers_restored(net):
                layers = probe(
                    net, x, act_name, hp.act_params.get(act_name), self.dead_threshold, self.saturation_margin
                )
            norms = grad_norms(net)
            for k, found in layers.items():
                prefix = f"diag/{tag}/layer{k}"
                scalars.update({f"{prefix}/{name}": value for name, value in found["stats"].items()})
                scalars[f"{prefix}/grad_norm"] = norms[k]
                if self.histograms:
                    for logger in trainer.loggers:
                        if hasattr(logger.experiment, "add_histogram"):
                            logger.experiment.add_histogram(f"{prefix}/pre", found["pre"].float().cpu(), iteration)
                            logger.experiment.add_histogram(f"{prefix}/act", found["act"].float().cpu(), iteration)
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=iteration)
