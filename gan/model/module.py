"""The LightningModule: a population of K GANs ("members") trained with alternating manual updates, as in
Lightning's GAN example; a single run is a population of one, through the same code.

One training iteration = one batch = ``d_steps`` discriminator updates (each on its own slice of the real batch)
followed by one generator update, for every member at once: G and D are ``gan.model.population`` networks whose
tensors carry the member axis first, each loss is one value per member, and the optimizers step all members with
each member's own hyperparameters. Summing the members' losses before ``manual_backward`` gives each member exactly
the gradient of its own loss. Every random draw of member k comes from streams seeded by its own seed
(``gan.model.streams``), so member k of a pack trains as the same config trained alone. Lightning counts every
``optimizer.step()`` in ``trainer.global_step``, so one iteration advances it by ``d_steps + 1``; ``iteration``
and the TensorBoard x-axis count iterations.

The stability toolkit's parts live in their own modules, each off by default and set per member: what D sees
(augmentation and instance noise, ``gan.model.d_input``), the gradient penalties (``gan.model.penalties``) and G's
weight average (``gan.model.ema``). A member whose loss becomes non-finite is marked diverged and frozen; the
others go on.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from torch import nn

from gan.errors import ConfigError, RunFailed
from gan.images import to_unit_images
from gan.model.d_input import DiscriminatorInput
from gan.model.ema import update_average
from gan.model.graphed import StepGraph, cuda_graph_setting, graphs_wanted
from gan.model.losses import MemberLosses
from gan.model.networks import Discriminator, Generator
from gan.model.optim import OPTIMIZERS, StackedOptimizer
from gan.model.penalties import DiscriminatorPenalties
from gan.model.population import MemberConstants, buffers_restored, member_generators
from gan.model.spec import member_data_range, member_hparams, shared_settings
from gan.model.streams import INIT_STREAM, MemberStreams


@contextmanager
def frozen(network: nn.Module) -> Iterator[None]:
    """A block in which ``network``'s parameters take no gradient (what Lightning's ``toggled_optimizer`` does for
    the other network's optimizer, without its walk over every optimizer's parameters at each update)."""
    network.requires_grad_(False)
    try:
        yield
    finally:
        network.requires_grad_(True)


class GANModule(L.LightningModule):
    """K GANs as one population: G and D, their losses and optimizers' configs, a fixed noise batch per member.

    ``GANModule(members=[hparams, ...])`` builds a pack; ``GANModule(**settings)`` a population of one. Each
    member's settings are ``gan.model.spec.member_hparams``' (checked here, unless ``checked=True`` says the caller
    did); checkpoints store them as ``members``.
    """

    def __init__(
        self, members: Sequence[Mapping[str, Any]] | None = None, checked: bool = False, **single: Any
    ) -> None:
        super().__init__()
        if members is None:
            members = [single]
        elif single:
            raise TypeError(f"GANModule takes members=[...] or one member's settings, not both: {sorted(single)}")
        members = [dict(m) for m in members] if checked else [member_hparams(**m) for m in members]
        self.save_hyperparameters({"members": members}, logger=False)  # gan.train logs the composed configs
        self.automatic_optimization = False
        self.members = len(members)
        self.member_hparams = members
        self.shared = shared_settings(members)
        self.losses = MemberLosses([m["loss"] for m in members], [m["label_smoothing"] for m in members])
        self.generator, self.discriminator = self._networks(members)
        # Only G is averaged; samples, grids and metrics come from the average when it exists (see sample()).
        self.generator_ema: Generator | None = None
        if self.shared["g_ema"]:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
            self.register_buffer("generator_ema_updates", torch.zeros(self.members, dtype=torch.long))
        self.data_ranges = [member_data_range(m) for m in members]
        self.constants = MemberConstants()
        self.d_view = DiscriminatorInput(members, self.data_ranges, self.constants)
        self.penalties = DiscriminatorPenalties(members, self.losses, self.constants)
        self.run_configs: list[dict[str, Any]] | None = None  # each member's composed config, set by gan.runs
        self._ema_started: bool | None = None  # read from the update counter once (it survives a resume)
        self.streams: MemberStreams | None = None
        self._saved_streams: Mapping[str, Any] | None = None
        self.alive = [True] * self.members
        self.divergence: dict[int, tuple[int, str]] = {}  # member -> (iteration, reason)
        # The first iteration with a non-finite loss, per member (-1: none): set on the device in every iteration
        # (no host sync), read where the host reads anyway (logging steps) and before anything is saved or scored.
        self.register_buffer("first_nonfinite", torch.full((self.members,), -1, dtype=torch.long), persistent=False)
        # The iteration a captured step reads (a graph cannot take a Python number that changes).
        self.register_buffer("_iteration_now", torch.zeros((), dtype=torch.long), persistent=False)
        self.cuda_graphs = "off"  # gan.runs sets the run's cuda_graphs (use_cuda_graphs)
        self.step_graph: StepGraph | None = None
        self.step_metrics: dict[str, list[float | None]] = {}  # each member's scalars of the latest logging step
        # The same z all run long (and across resume: buffers are saved in checkpoints).
        self.register_buffer("fixed_noise", self._fixed_noise(members))

    def _networks(self, members: Sequence[Mapping[str, Any]]) -> tuple[Generator, Discriminator]:
        init = member_generators([m["seed"] for m in members], INIT_STREAM)
        acts = {key: [m[key] for m in members] for key in ("g_act", "g_out_act", "d_act", "d_out_act")}
        params = [m["act_params"] for m in members]
        s = self.shared
        schemes = [m["init"] for m in members]
        generator = Generator(
            s["latent_dim"], s["g_hidden"], acts["g_act"], acts["g_out_act"], params, init, s["g_norm"], schemes
        )
        discriminator = Discriminator(
            s["d_hidden"],
            acts["d_act"],
            acts["d_out_act"],
            params,
            init,
            norm=s["d_norm"],
            spectral_norm=[m["d_spectral_norm"] for m in members],
            minibatch_std_group=s["d_minibatch_std_group"] if s["d_minibatch_std"] else None,
            init=schemes,
        )
        return generator, discriminator

    def _fixed_noise(self, members: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        shape = (self.shared["num_fixed_samples"], self.shared["latent_dim"])
        return torch.stack(
            [torch.randn(*shape, generator=torch.Generator().manual_seed(m["fixed_noise_seed"])) for m in members]
        )

    @property
    def data_range(self) -> tuple[float, float]:
        """The data range of a population of one (packs: ``data_ranges``)."""
        if self.members != 1:
            raise ValueError("a pack has one data range per member: use data_ranges")
        return self.data_ranges[0]

    # ----------------------------------------------------------------- sampling
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Samples for ``z`` from the default sampler (G's weight average when the run keeps one), in eval mode."""
        return self.sample(z)

    def sampling_generator(self, ema: bool | None = None) -> nn.Module:
        """The generator samples come from: the weight average when ``model.g_ema`` is on (unless ``ema=False``),
        else the trained G."""
        if ema is not False and self.generator_ema is not None:
            return self.generator_ema
        if ema and self.generator_ema is None:
            raise ValueError("this model has no generator weight average (it was trained with model.g_ema=false)")
        return self.generator

    def sampler_variants(self) -> list[tuple[str, bool | None]]:
        """(name suffix, ``ema`` argument of ``sample``) of each generator that grids and metrics show: the default
        sampler (suffix ""), and with a weight average also the trained G (suffix "_no_ema")."""
        return [("", None)] + ([("_no_ema", False)] if self.generator_ema is not None else [])

    @torch.no_grad()
    def sample(self, z: torch.Tensor, ema: bool | None = None) -> torch.Tensor:
        """Generator output for ``z`` ([K, N, latent], or [N, latent] for the same z in every member): [K, N, 1024]
        in each member's data range, G in eval mode for the call: every grid, metric and sample file sees the
        same sampling mode (batch norm uses its running statistics). ``ema``: None = the default sampler
        (``sampling_generator``), False = the trained G, True = the average."""
        generator = self.sampling_generator(ema)
        z = z.to(self.device)
        if z.dim() == 2:
            z = z.unsqueeze(0).expand(self.members, -1, -1)
        was_training = generator.training
        generator.eval()
        try:
            return generator(z)
        finally:
            generator.train(was_training)

    def to_unit_images(self, x: torch.Tensor, member: int = 0) -> torch.Tensor:
        """N x 1024 samples of ``member`` in its data range -> N x 1 x 32 x 32 in [0, 1] for image grids."""
        return to_unit_images(x, self.data_ranges[member])

    # ----------------------------------------------------------------- training
    @property
    def iteration(self) -> int:
        """Generator iterations completed (what ``trainer.max_steps`` counts in this lab); 0 outside a fit."""
        if self._trainer is None:
            return 0
        return self.trainer.global_step // (self.shared["d_steps"] + 1)

    def on_fit_start(self) -> None:
        # Instance noise decays over model.instance_noise_iters iterations, by default over the whole run.
        needs_plan = any(m["instance_noise_iters"] is None for m in self.member_hparams) and self.d_view.noisy_members
        self.d_view.plan(self.planned_iterations() if needs_plan else 0)
        self.streams = MemberStreams([m["seed"] for m in self.member_hparams], self.device)
        if self._saved_streams is not None:
            self.streams.load(self._saved_streams, self.iteration)
            self._saved_streams = None
        self._set_active()
        self.step_graph = (
            StepGraph(
                self.device,
                self.streams.generators,
                lambda batch, graphed: self._iteration(batch, self._iteration_now, graphed),
                self._count_optimizer_steps,
                self._drop_gradients,
            )
            if graphs_wanted(self.cuda_graphs, self.device, self.trainer.precision)
            else None
        )

    def planned_iterations(self) -> int:
        """Iterations this fit will run (max_epochs x batches per epoch, or max_steps if fewer); 0 if unbounded."""
        trainer = self.trainer
        trainer.estimated_stepping_batches  # noqa: B018 - loads the training data so that its length is known
        limits = []
        if trainer.max_epochs not in (None, -1) and math.isfinite(trainer.num_training_batches):
            limits.append(int(trainer.num_training_batches) * int(trainer.max_epochs))
        if trainer.max_steps is not None and trainer.max_steps > 0:
            limits.append(trainer.max_steps // (self.shared["d_steps"] + 1))
        return min(limits) if limits else 0

    def d_input(self, x: torch.Tensor) -> torch.Tensor:
        """What D sees of an image batch [K, B, 1024], real or fake (``gan.model.d_input``)."""
        return self.d_view(x, self.streams) if self.d_view.changes_anything else x

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        """D's ``d_steps`` updates, then G's update, for every member at once (replayed as one CUDA graph when
        ``cuda_graphs`` captures it: ``gan.model.graphed``)."""
        iteration = self.iteration
        self.d_view.update(iteration)
        if self.step_graph is None:
            out = self._iteration(batch, iteration, graphed=False)
        else:
            self._iteration_now.fill_(iteration)
            self.d_view.stage()
            out = self.step_graph.run(self._graph_key(), batch)
        if self._is_logging_step():
            scalars = {
                "train/d_loss": out["d_loss"],
                "train/g_loss": out["g_loss"],
                "train/D_x": self.losses.d_output(out["real_logits"]).mean(1),
                "train/D_G_z": self.losses.d_output(out["fake_logits"]).mean(1),
            }
            if out["penalty"] is not None:
                scalars["train/d_penalty"] = out["penalty"]
            self._record_step(scalars)

    def _iteration(self, batch: torch.Tensor, iteration: int | torch.Tensor, graphed: bool) -> dict[str, Any]:
        """The iteration's work: D's updates, G's update, the weight average, the non-finite flags; returns the
        losses and logits (detached). ``graphed``: inside a CUDA graph capture, where Lightning's optimizer
        wrappers and ``manual_backward`` (Python bookkeeping around the same calls) are left out."""
        opt_g, opt_d = self.optimizers()
        if graphed:
            opt_g, opt_d = opt_g.optimizer, opt_d.optimizer
        backward = (lambda loss: loss.backward()) if graphed else self.manual_backward
        d_steps = self.shared["d_steps"]
        real_chunks = batch.chunk(d_steps, dim=1) if d_steps > 1 else (batch,)
        size = real_chunks[-1].shape[1]
        z = self.streams.normal((d_steps + 1, size, self.shared["latent_dim"]), dim=1).to(batch.dtype)

        for s, real in enumerate(real_chunks):  # D's updates: G's samples are made without a graph
            with torch.no_grad():
                fake = self.generator(z[s])
            real_in, fake_in = self.d_input(real), self.d_input(fake)
            real_logits, fake_logits, penalty = self.penalties(self.discriminator, real_in, fake_in, self.streams)
            d_loss = self.losses.d_loss(real_logits, fake_logits)
            d_total = d_loss if penalty is None else d_loss + penalty
            opt_d.zero_grad(set_to_none=True)
            backward(d_total.sum())
            opt_d.step()

        with frozen(self.discriminator):  # G's update: D's parameters take no gradient
            real_scores = self._real_scores_for_g(real_in)
            g_loss = self.losses.g_loss(self.discriminator(self.d_input(self.generator(z[d_steps]))), real_scores)
            opt_g.zero_grad(set_to_none=True)
            backward(g_loss.sum())
            opt_g.step()

        if self.generator_ema is not None:
            self.update_generator_ema()
        bad = ~(torch.isfinite(d_total.detach()) & torch.isfinite(g_loss.detach()))
        # where, not masked_fill_: masked_fill_ reads a tensor value on the host (a sync a capture cannot hold)
        first = self.first_nonfinite
        first.copy_(torch.where(bad & (first < 0), iteration, first))
        return {
            "d_loss": d_loss.detach(),
            "g_loss": g_loss.detach(),
            "real_logits": real_logits.detach(),
            "fake_logits": fake_logits.detach(),
            "penalty": None if penalty is None else penalty.detach(),
        }

    # ----------------------------------------------------------------- CUDA graphs
    def use_cuda_graphs(self, setting: str) -> None:
        """``cuda_graphs``: auto/on capture the iteration as a CUDA graph on a GPU (from ``on_fit_start``), off
        never; the CPU always runs eagerly."""
        graphs_wanted(setting, torch.device("cpu"))  # checks the value
        self.cuda_graphs = cuda_graph_setting(setting)

    def on_train_end(self) -> None:
        """Say how the iterations ran, and let the graph go (its memory pool, the generators' registration): a
        finished fit replays nothing more, and a resumed one captures anew."""
        if self.step_graph is not None:
            done = self.step_graph.summary()
            print(
                f"CUDA graphs: the iteration was captured {done['captures']} time(s) and replayed "
                f"{done['replays']} times; {done['eager']} iteration(s) ran eagerly (warm-ups before a capture)."
            )
            self.step_graph.release()
            self.step_graph = None

    def _graph_key(self) -> tuple:
        """What the captured iteration depends on that Python decides: a change means a new capture."""
        return (tuple(self.alive), self.d_view.noisy_now(), self._ema_started)

    def _count_optimizer_steps(self) -> None:
        """For a replayed iteration, Lightning's count of optimizer steps (``global_step``): what the optimizer
        wrappers do around each of the ``d_steps + 1`` steps of an eager iteration."""
        opt_g, opt_d = self.optimizers()
        for opt in [opt_d] * self.shared["d_steps"] + [opt_g]:
            opt._on_before_step()
            opt._on_after_step()

    def _drop_gradients(self) -> None:
        for opt in self.optimizers():
            opt.optimizer.zero_grad(set_to_none=True)

    def _real_scores_for_g(self, real_in: torch.Tensor) -> torch.Tensor | None:
        """D's scores, after its update, of the last real batch it saw, for a relativistic G loss (rpgan pairs each
        fake with a real); None when no member's loss reads them. A pure read: no graph, and D's buffers (batch-norm
        statistics, spectral norm's vectors) are put back, so D stays exactly as its own update left it."""
        if not self.losses.any_real_in_g:
            return None
        with torch.no_grad(), buffers_restored(self.discriminator):
            return self.discriminator(real_in)

    def update_generator_ema(self) -> None:
        if self._ema_started is None:  # one host read per fit, not one per update
            self._ema_started = bool(self.generator_ema_updates.max() > 0)
        decays = [m["g_ema_decay"] for m in self.member_hparams]
        update_average(
            self.generator_ema,
            self.generator,
            self.generator_ema_updates,
            decays,
            self.alive,
            self.constants,
            self._ema_started,
        )
        self._ema_started = True

    # ----------------------------------------------------------------- divergence, per member
    def check_divergence(self, first: Sequence[float] | None = None) -> list[int]:
        """Mark each live member whose loss became non-finite (``first_nonfinite``, read now unless given) as
        diverged and freeze it; returns the members found."""
        first = self.first_nonfinite.tolist() if first is None else first
        found = [k for k in range(self.members) if self.alive[k] and first[k] >= 0]
        for k in found:
            at = int(first[k]) + 1  # iterations are counted from 1 here, as in the summaries
            seen = f" (found at iteration {self.iteration})" if at < self.iteration else ""
            self.mark_diverged(k, at, f"non-finite loss in iteration {at}{seen}")
        return found

    def mark_diverged(self, member: int, iteration: int, reason: str) -> None:
        """Freeze ``member`` where it stopped: its folder keeps what it had, the others train on."""
        if self.alive[member]:
            self.divergence[member] = (iteration, reason)
            self.alive[member] = False
            self._set_active()

    def stop_if_all_diverged(self) -> None:
        """End the fit with ``RunFailed("diverged", ...)`` (the latest divergence's reason) when no member is left
        training: nothing is left to step, sample, score or save, and the run must end as diverged, not crash on an
        empty population."""
        if self.divergence and not any(self.alive):
            raise RunFailed("diverged", self.divergence[max(self.divergence, key=lambda k: self.divergence[k][0])][1])

    def _record_step(self, scalars: dict[str, torch.Tensor]) -> None:
        """Each member's scalars of this logging step and the non-finite flags (one device-to-host copy for all):
        a member with a non-finite loss since the last read is marked diverged and frozen; when none is left, the
        run stops."""
        scalars = {**scalars, "_first_nonfinite": self.first_nonfinite}
        values = torch.stack([v.float() for v in scalars.values()]).cpu().tolist()
        table: dict[str, list[float | None]] = dict(zip(scalars, values, strict=True))
        self.check_divergence(table.pop("_first_nonfinite"))
        if "train/d_penalty" in table:
            table["train/d_penalty"] = [
                v if self.penalties.penalised(k) else None for k, v in enumerate(table["train/d_penalty"])
            ]
        if self.d_view.noisy_members:
            table["train/instance_noise_std"] = [
                std if initial > 0 else None
                for std, initial in zip(self.d_view.noise_now, self.d_view.initial_noise, strict=True)
            ]
        self.step_metrics = table  # what the callbacks log per member and the progress bar shows
        self.stop_if_all_diverged()

    def _set_active(self) -> None:
        for opt in self.trainer.optimizers if self._trainer is not None else []:
            if isinstance(opt, StackedOptimizer):
                opt.set_active(self.alive)

    def _is_logging_step(self) -> bool:
        """Scalars are read every ``log_every_n_steps`` iterations (that is also where divergence is checked: a GPU
        syncs only there, not every step). Asked after the iteration's optimizer steps, so ``iteration`` counts it:
        the 50th, 100th, ... iteration is logged, as the evaluations after 50, 100, ... iterations are."""
        every = self.trainer.log_every_n_steps
        return every > 0 and self.iteration % every == 0

    # ----------------------------------------------------------------- optimizers and checkpoints
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [self._optimizer("optimizer_g", self.generator), self._optimizer("optimizer_d", self.discriminator)]

    def _optimizer(self, key: str, network: nn.Module) -> StackedOptimizer:
        """The configured optimizer over the network's stacked parameters, each hyperparameter one value per
        member (e.g. ``lr=[2e-4, 1e-4, ...]``)."""
        configs = [m[key] for m in self.member_hparams]
        options = {name: [c[name] for c in configs] for name in configs[0] if name != "_target_"}
        try:
            return OPTIMIZERS[configs[0]["_target_"]](network.parameters(), members=self.members, **options)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model.{key}: {exc}") from exc

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep each member's random stream so that a resumed run draws the same numbers as an uninterrupted one,
        and each member's composed config (``run_configs``: what a resume compares its invariants against)."""
        if self.run_configs is not None:
            checkpoint["run_configs"] = list(self.run_configs)
        if self.streams is not None:
            state = self.streams.state()
            checkpoint["gan_rng"] = {"device": state["device"], "members": [s.cpu() for s in state["states"]]}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("gan_rng")
        if rng is not None and "members" in rng:
            self._saved_streams = {"device": rng["device"], "states": rng["members"]}
