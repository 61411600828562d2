"""What each activation does inside G and D while they train: dead units, saturation, statistics, gradients.

Every ``diag.every_n_steps`` iterations (only then: hooks are attached for one extra no-grad forward pass and
removed again, so other iterations pay nothing), for each member of the pack into its own logs, and for every
hidden layer K of each network:

- ``diag/{G,D}/layerK/dead``: share of units whose output is ~0 (|y| <= ``dead_threshold``) for the whole batch;
- ``diag/{G,D}/layerK/saturated``: share of outputs within ``saturation_margin`` of a finite bound of the
  activation's range (tanh and sigmoid: either end; hardtanh: its clamps; ReLU family: the floor at 0 or -alpha);
  0 for activations without finite bounds (identity, leaky_relu);
- ``pre_mean``, ``pre_std``, ``act_mean``, ``act_std``: pre-activation and activation statistics;
- ``grad_norm``: L2 norm of the layer's weight and bias gradients from the latest update of that network;
- histograms ``diag/{G,D}/layerK/pre`` and ``.../act`` (``diag.histograms``).

G is probed on fresh noise from each member's own seeded generator (the training's random stream is untouched), D on the
current real batch together with as many fakes. A probe leaves no trace on training: the networks' buffers
(batch-norm running statistics, spectral norm's power-iteration vectors) are restored after it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

import lightning as L
import torch
from torch import nn

from gan.activations import output_bounds
from gan.callbacks import MemberCallback
from gan.population import member_generators

DIAGNOSTICS_STREAM = 3  # salt of each member's probe-noise stream


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
    bounds: Sequence[tuple[float, float]],
    dead_threshold: float = 1e-6,
    saturation_margin: float = 0.01,
) -> dict[str, torch.Tensor]:
    """Dead and saturated shares and moments of one layer's pre-activations and activations, [K, B, units], for
    each of the K members (whose activations have the output ``bounds``): each statistic a [K] tensor."""
    lo = torch.tensor([b[0] for b in bounds], dtype=act.dtype, device=act.device).view(-1, 1, 1)
    hi = torch.tensor([b[1] for b in bounds], dtype=act.dtype, device=act.device).view(-1, 1, 1)
    finite = torch.isfinite(lo) & torch.isfinite(hi)
    scale = torch.where(finite, hi - lo, torch.ones_like(lo))
    near = (act <= lo + saturation_margin * scale) | (act >= hi - saturation_margin * scale)
    return {
        "dead": (act.abs() <= dead_threshold).all(1).float().mean(1),
        "saturated": near.float().mean((1, 2)),
        "pre_mean": pre.mean((1, 2)),
        "pre_std": pre.flatten(1).std(1),
        "act_mean": act.mean((1, 2)),
        "act_std": act.flatten(1).std(1),
    }


@torch.no_grad()
def probe(
    net: nn.Sequential,
    x: torch.Tensor,
    act_names: Sequence[str],
    act_params: Sequence[Mapping[str, Any] | None],
    dead_threshold: float = 1e-6,
    saturation_margin: float = 0.01,
) -> dict[int, dict[str, Any]]:
    """One forward pass of ``net`` on ``x`` [K, B, in] with hooks: per hidden layer its per-member stats ([K]
    tensors) and raw [K, B, units] tensors. Member k's activation is ``act_names[k]``."""
    captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for k, _, act in hidden_layers(net):
        handles.append(act.register_forward_hook(lambda m, inp, out, k=k: captured.__setitem__(k, (inp[0], out))))
    try:
        net(x)
    finally:
        for handle in handles:
            handle.remove()
    bounds = [output_bounds(name, params) for name, params in zip(act_names, act_params)]
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


def grad_norms(net: nn.Sequential) -> dict[int, torch.Tensor]:
    """L2 norm of each hidden linear layer's gradients per member, [K] (0 where none yet)."""
    norms = {}
    for k, linear, _ in hidden_layers(net):
        squares = [p.grad.float().pow(2).flatten(1).sum(1) for p in linear.parameters() if p.grad is not None]
        norms[k] = torch.stack(squares).sum(0).sqrt() if squares else torch.zeros(linear.weight.shape[0])
    return norms


class ActivationDiagnostics(MemberCallback):
    """Logs the per-layer diagnostics above every ``every_n_steps`` iterations, for each member into its own
    loggers (its probe noise from its own seed)."""

    def __init__(
        self,
        enabled: bool = True,
        every_n_steps: int = 500,
        histograms: bool = True,
        dead_threshold: float = 1e-6,
        saturation_margin: float = 0.01,
    ) -> None:
        self.enabled = bool(enabled)
        self.every_n_steps = int(every_n_steps)
        self.histograms = bool(histograms)
        self.dead_threshold = float(dead_threshold)
        self.saturation_margin = float(saturation_margin)
        self.noise: list[torch.Generator] | None = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: torch.Tensor, batch_idx: int
    ) -> None:
        iteration = pl_module.iteration
        if not self.enabled or self.every_n_steps < 1 or iteration % self.every_n_steps:
            return
        hp = pl_module.member_hparams
        if self.noise is None:
            self.noise = member_generators([m["seed"] for m in hp], DIAGNOSTICS_STREAM)
        real = batch[:, : batch.shape[1] // pl_module.shared["d_steps"]]
        size, latent = real.shape[1], pl_module.shared["latent_dim"]
        z = torch.stack([torch.randn(size, latent, generator=g) for g in self.noise]).to(real.device)
        with torch.no_grad(), buffers_restored(pl_module.generator):
            fake = pl_module.generator(z)
        d_input = torch.cat([real, fake.to(real.dtype)], dim=1)
        params = [m["act_params"] for m in hp]
        nets = {
            "G": (pl_module.generator.net, z, [m["g_act"] for m in hp]),
            "D": (pl_module.discriminator.net, d_input, [m["d_act"] for m in hp]),
        }
        live = self.live(pl_module)
        scalars: dict[int, dict[str, float]] = {run.index: {} for run in live}
        for tag, (net, x, names) in nets.items():
            with buffers_restored(net):
                layers = probe(net, x, names, [p.get(n) for p, n in zip(params, names)],
                               self.dead_threshold, self.saturation_margin)
            norms = grad_norms(net)
            for k, found in layers.items():
                prefix = f"diag/{tag}/layer{k}"
                table = {name: values.tolist() for name, values in found["stats"].items()}
                table["grad_norm"] = norms[k].tolist()
                for run in live:
                    scalars[run.index].update({f"{prefix}/{name}": v[run.index] for name, v in table.items()})
                    if self.histograms:
                        for experiment in run.experiments("add_histogram"):
                            experiment.add_histogram(f"{prefix}/pre", found["pre"][run.index].float().cpu(), iteration)
                            experiment.add_histogram(f"{prefix}/act", found["act"][run.index].float().cpu(), iteration)
        for run in live:
            run.log_metrics(scalars[run.index], iteration)
