"""What each activation does inside G and D while they train: dead units, saturation, statistics, gradients.

Every ``diag.every_n_steps`` iterations (only then: hooks are attached for one extra no-grad forward pass and
removed again, so other iterations pay nothing), for each member of the pack into its own logs, and for every
hidden layer K of each network:

- ``train_diag/{G,D}/layerK/dead``: share of units whose output is ~0 (|y| <= ``dead_threshold``) for the whole batch;
- ``train_diag/{G,D}/layerK/saturated``: share of outputs within ``saturation_margin`` of a finite bound of the
  activation's range (tanh and sigmoid: either end; hardtanh: its clamps; ReLU family: the floor at 0 or -alpha);
  0 for activations without finite bounds (identity, leaky_relu);
- ``pre_mean``, ``pre_std``, ``act_mean``, ``act_std``: pre-activation and activation statistics;
- ``grad_norm``: L2 norm of the layer's weight and bias gradients from the latest update of that network;
- histograms ``train_diag/{G,D}/layerK/pre`` and ``.../act`` (``diag.histograms``);
- ``train_diag/G/jacobian_log_cond_mean`` and ``..._std``: G's conditioning (Odena et al. 2018): the log condition
  number (largest over smallest singular value) of G's input-output Jacobian at each of ``diag.jacobian_samples``
  probe z, its mean and spread over those z;
- D's side, on the real half and the fake half of its probe batch separately, per hidden layer K:
  ``train_diag/D/layerK/{unit_entropy,pattern_entropy,pattern_similarity}_{real,fake}``: how varied D's binarized
  activation patterns are (each unit on when its pre-activation is > 0; ``gan.eval.probes.pattern_entropies``
  says exactly which entropies: per unit, as BRE's marginal term, and of the whole layer's joint pattern);
- ``train_diag/D/grad_norm_{real,fake}``: the mean norm of the gradient of D's logit with respect to its input, and
  ``train_diag/D/grad_diversity``: 1 minus the mean pairwise cosine similarity of those gradients over the fakes
  (the diversity of G's learning signal, Cao et al. 2018); ``train_diag/D/logit_{real,fake}``: D's mean logits.

Probes happen at the cadence and at every evaluation's iteration (so each evaluation has its mechanism beside it).
The latest probe's summary (per network the dead and saturated shares averaged over hidden layers, and G's
conditioning, D's pattern measures averaged over its layers and its learning signal) is kept in results.json under
``diagnostics``, and every probe's summary in order under ``diagnostics_history`` (what ``gan.report``'s early
warning reads); the run's last iteration is always probed, so a finished run's record says what its final networks
do.

G is probed on fresh noise from each member's own seeded generator (the training's random stream is untouched), D on the
current real batch together with as many fakes. A probe leaves no trace on training: the networks' buffers
(batch-norm running statistics, spectral norm's power-iteration vectors) are restored after it.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from gan.errors import check_count, check_fraction
from gan.eval.probes import (
    DIAG_TAG,
    grad_norms,
    jacobian_conditioning,
    learning_signal,
    pattern_entropies,
    probe,
    summarize,
)
from gan.model.population import buffers_restored, member_generators
from gan.runs.callbacks import MemberCallback, Population, epoch_due
from gan.runs.quality import SampleQuality

DIAGNOSTICS_STREAM = 3  # salt of each member's probe-noise stream


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
        jacobian_samples: int = 16,
    ) -> None:
        self.enabled = bool(enabled)
        self.jacobian_samples = check_count("diag.jacobian_samples", jacobian_samples, 0, "0 = off")
        self.every_n_steps = check_count("diag.every_n_steps", every_n_steps, 0, "iterations between probes; 0 = off")
        self.histograms = bool(histograms)
        self.dead_threshold = float(dead_threshold)
        self.saturation_margin = check_fraction("diag.saturation_margin", saturation_margin, "0.01 is usual")
        self.noise: list[torch.Generator] | None = None
        self._last_batch: torch.Tensor | None = None
        self._probed_at = -1

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Population, outputs: Any, batch: torch.Tensor, batch_idx: int
    ) -> None:
        if not self.enabled or self.every_n_steps < 1:
            return
        self._last_batch = batch
        if pl_module.iteration % self.every_n_steps == 0:
            self.probe(pl_module, batch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Population) -> None:
        """Every evaluation's iteration is probed too, so each evaluation has the mechanism beside its metrics."""
        if not self.enabled or self.every_n_steps < 1 or self._last_batch is None:
            return
        due = any(
            isinstance(c, SampleQuality) and c.enabled and epoch_due(trainer, c.every_n_epochs)
            for c in trainer.callbacks
        )
        if due and self._probed_at != pl_module.iteration:
            self.probe(pl_module, self._last_batch)

    def on_train_end(self, trainer: L.Trainer, pl_module: Population) -> None:
        """The final networks are always probed: the record's ``diagnostics`` describe what the run ended with."""
        if self._last_batch is not None and self._probed_at != pl_module.iteration:
            self.probe(pl_module, self._last_batch)
        self._last_batch = None

    def probe(self, pl_module: Population, batch: torch.Tensor) -> None:
        """Probe every live member on ``batch`` (real images) and fresh noise; log and keep the summary."""
        iteration = pl_module.iteration
        self._probed_at = iteration
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
                layers = probe(
                    net,
                    x,
                    names,
                    [p.get(n) for p, n in zip(params, names, strict=True)],
                    self.dead_threshold,
                    self.saturation_margin,
                )
            norms = grad_norms(net)
            for k, found in layers.items():
                prefix = f"{DIAG_TAG}/{tag}/layer{k}"
                table = {name: values.tolist() for name, values in found["stats"].items()}
                table["grad_norm"] = norms[k].tolist()
                if tag == "D":  # its first half saw the real batch, its second half the fakes
                    for side, pre in zip(("real", "fake"), found["pre"].split(size, dim=1), strict=True):
                        table.update({f"{n}_{side}": v.tolist() for n, v in pattern_entropies(pre).items()})
                for run in live:
                    scalars[run.index].update({f"{prefix}/{name}": v[run.index] for name, v in table.items()})
                    if self.histograms:
                        for experiment in run.experiments("add_histogram"):
                            experiment.add_histogram(f"{prefix}/pre", found["pre"][run.index].float().cpu(), iteration)
                            experiment.add_histogram(f"{prefix}/act", found["act"][run.index].float().cpu(), iteration)
        with buffers_restored(pl_module.discriminator):
            signal = learning_signal(pl_module.discriminator, real, fake.to(real.dtype))
        for name, values in signal.items():
            for run, value in zip(live, values[[run.index for run in live]].tolist(), strict=True):
                scalars[run.index][f"{DIAG_TAG}/D/{name}"] = value
        if self.jacobian_samples > 0:
            conditioning = jacobian_conditioning(pl_module.generator, z[:, : self.jacobian_samples])
            for name, values in conditioning.items():
                for run, value in zip(live, values[[run.index for run in live]].tolist(), strict=True):
                    scalars[run.index][f"{DIAG_TAG}/G/jacobian_{name}"] = value
        for run in live:
            run.log_metrics(scalars[run.index], iteration)
            summary = {"iteration": iteration, **summarize(scalars[run.index])}
            run.record.data["diagnostics"] = summary
            history = run.record.data.setdefault("diagnostics_history", [])
            if not history or history[-1]["iteration"] != iteration:
                history.append(summary)
