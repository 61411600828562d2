"""The LightningModule: a population of K GANs ("members") trained with alternating manual updates; a single run is
a population of one, through the same code.

One training iteration = one batch = ``d_steps`` discriminator updates (each on its own slice of the real batch)
followed by one generator update, for every member at once: G and D are ``gan.model.population`` networks whose tensors
carry the member axis first, each loss is one value per member, and the optimizers step all members with each
member's own hyperparameters. Summing the members' losses before ``manual_backward`` gives each member exactly the
gradient of its own loss. Every random draw of member k (its initial weights, training noise, instance noise,
augmentation, penalty interpolates) comes from streams seeded by its own seed, so member k of a pack trains as the
same config trained alone. Lightning counts every ``optimizer.step()`` in ``trainer.global_step``, so one iteration
advances it by ``d_steps + 1``; ``iteration`` below and the TensorBoard x-axis count iterations.

The stability toolkit lives here too, each part off by default and set per member: gradient penalties (WGAN-GP's
on interpolates, R1 on reals) added to D's loss, instance noise and differentiable augmentation on everything D
sees (real and fake, in D's and G's updates alike), and an exponential moving average of G's weights that samples
come from. A member whose loss becomes non-finite is marked diverged and frozen; the others go on.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from gan.errors import ConfigError, RunFailed
from gan.images import IMAGE_SIZE
from gan.model.activations import ACTIVATION_NAMES, check_activation, data_range
from gan.model.augment import diff_augment, parse_policy
from gan.model.losses import MemberLosses, check_loss, r1_penalty, wgan_gp_penalty
from gan.model.networks import Discriminator, Generator, check_minibatch_std_group, check_norm
from gan.model.optim import OPTIMIZERS, StackedOptimizer
from gan.model.population import derived_seed, member_column, member_generators

DEFAULT_ADAM: dict[str, Any] = {"_target_": "gan.model.optim.Adam", "lr": 2e-4, "betas": [0.5, 0.999]}
# torch.optim names users may still write; the member-stacked optimizer with the same formula runs instead
# and the names checkpoints written before the package's floors (gan/model/, ...) stored
OPTIMIZER_ALIASES = {
    "torch.optim.Adam": "gan.model.optim.Adam",
    "torch.optim.SGD": "gan.model.optim.SGD",
    "gan.optim.Adam": "gan.model.optim.Adam",
    "gan.optim.SGD": "gan.model.optim.SGD",
}

# What members of one pack share (shapes and the update schedule); everything else may differ per member.
SHARED_KEYS = (
    "latent_dim",
    "g_hidden",
    "d_hidden",
    "d_steps",
    "g_norm",
    "d_norm",
    "d_minibatch_std",
    "d_minibatch_std_group",
    "g_ema",
    "num_fixed_samples",
)
# Salts of each member's random streams (see gan.model.population.derived_seed).
INIT_STREAM, TRAIN_STREAM = 1, 2


def _plain(value: Any) -> Any:
    """Hydra containers -> plain Python, so hyperparameters pickle and print cleanly."""
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def _check_range(name: str, value: float, low: float, high: float, hint: str) -> None:
    if not low <= float(value) <= high:
        raise ConfigError(f"model.{name} must be in [{low:g}, {high:g}], got {value!r} ({hint}).")


def _optimizer_config(config: Mapping[str, Any] | None, key: str) -> dict[str, Any]:
    """An optimizer config with its ``_target_`` resolved to a member-stacked optimizer of ``gan.model.optim``."""
    config = dict(_plain(config) or DEFAULT_ADAM)
    target = OPTIMIZER_ALIASES.get(config.get("_target_", ""), config.get("_target_", ""))
    if target not in OPTIMIZERS:
        raise ConfigError(
            f"model.{key}._target_={config.get('_target_')!r} is not an optimizer this lab can run for a population "
            f"of GANs. Valid choices: {', '.join(OPTIMIZERS)} (torch.optim.Adam and torch.optim.SGD mean these)."
        )
    config["_target_"] = target
    options = {k: v for k, v in config.items() if k != "_target_"}
    try:  # the optimizer's own checks (a step size, betas, an argument it does not take), on a stand-in parameter
        OPTIMIZERS[target]([torch.nn.Parameter(torch.zeros(1, 1))], **options)
    except (TypeError, ValueError) as exc:
        takes = [p for p in inspect.signature(OPTIMIZERS[target]).parameters if p not in ("params", "members")]
        raise ConfigError(
            f"model.{key}: {str(exc).rstrip('.')} (asked: {options}). {target.rsplit('.', 1)[-1]} takes "
            f"{', '.join(takes)}."
        ) from None
    return config


def _check_widths(key: str, widths: Any, allow_none: bool) -> list[int]:
    """Hidden layer widths, each a positive int; G needs at least one layer (the activation under study lives
    there), D may have none (a linear critic: the closed-form checks of the losses use one)."""
    values = list(widths) if isinstance(widths, (list, tuple)) else None
    if values is None or (not values and not allow_none) or not all(_is_count(w) for w in values):
        least = "zero or more" if allow_none else "at least one"
        raise ConfigError(
            f"model.{key} must list {least} hidden layer widths, each a positive integer (e.g. [128, 256, 512]); "
            f"got {widths!r}. Without a hidden layer the generator has no hidden activation to study."
        )
    return values


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def instance_noise_std(initial: float, iteration: int, decay_iters: int) -> float:
    """Linear decay from ``initial`` at iteration 0 to 0 at ``decay_iters`` (and after); constant when
    ``decay_iters`` is 0 (a run without a planned length)."""
    if initial <= 0:
        return 0.0
    if decay_iters <= 0:
        return float(initial)
    return float(initial) * max(0.0, 1.0 - iteration / decay_iters)


def member_hparams(
    latent_dim: int = 100,
    g_hidden: Sequence[int] = (128, 256, 512),
    d_hidden: Sequence[int] = (512, 256, 128),
    g_act: str = "relu",
    g_out_act: str = "tanh",
    d_act: str = "leaky_relu",
    d_out_act: str = "identity",
    act_params: Mapping[str, Mapping[str, Any]] | None = None,
    loss: str = "ns",
    d_steps: int = 1,
    optimizer_g: Mapping[str, Any] | None = None,
    optimizer_d: Mapping[str, Any] | None = None,
    num_fixed_samples: int = 64,
    fixed_noise_seed: int = 0,
    gp_weight: float = 10.0,
    r1_weight: float = 0.0,
    d_spectral_norm: bool = False,
    g_norm: str = "none",
    d_norm: str = "none",
    label_smoothing: float = 0.0,
    instance_noise: float = 0.0,
    instance_noise_iters: int | None = None,
    d_minibatch_std: bool = False,
    d_minibatch_std_group: int = 4,
    g_ema: bool = False,
    g_ema_decay: float = 0.999,
    seed: int = 0,
    augment: str | Sequence[str] | None = None,
) -> dict[str, Any]:
    """One member's hyperparameters (``model.*`` plus its ``seed`` and ``data.augment``), checked and as plain
    values: what checkpoints store and what a population is built from."""
    act_params = {k: dict(v or {}) for k, v in (_plain(act_params) or {}).items()}
    if d_out_act == "sigmoid":
        raise ConfigError(
            "model.d_out_act='sigmoid' would apply the sigmoid twice: the discriminator outputs a logit and the "
            "loss applies the sigmoid itself (binary_cross_entropy_with_logits), which is the seed design's "
            "sigmoid output. Use d_out_act=identity for that design, or another activation to transform the "
            f"logit. Valid names: {', '.join(n for n in ACTIVATION_NAMES if n != 'sigmoid')}."
        )
    in_use = {"model.g_act": g_act, "model.g_out_act": g_out_act, "model.d_act": d_act, "model.d_out_act": d_out_act}
    for key, name in in_use.items():
        check_activation(name, act_params.get(name), key)
    for name, params in act_params.items():  # the table's other entries too: a later switch may use them
        if name not in in_use.values():
            check_activation(name, params, f"model.act_params.{name}")
    check_norm(g_norm, "model.g_norm")
    check_norm(d_norm, "model.d_norm")
    if int(d_steps) < 1:
        raise ConfigError(f"model.d_steps must be a positive integer, got {d_steps!r}.")
    for key, value, what in (
        ("latent_dim", latent_dim, "the size of z; 100 is usual"),
        ("num_fixed_samples", num_fixed_samples, "the fixed-noise grid's images; 64 is an 8x8 grid"),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model.{key} must be a positive integer ({what}), got {value!r}.")
    g_hidden = _check_widths("g_hidden", _plain(g_hidden), allow_none=False)
    d_hidden = _check_widths("d_hidden", _plain(d_hidden), allow_none=True)
    check_loss(loss, label_smoothing)
    _check_range("gp_weight", gp_weight, 0.0, math.inf, "the WGAN-GP penalty weight lambda; 10 is usual")
    _check_range("r1_weight", r1_weight, 0.0, math.inf, "R1's gamma; 0 = off, 1 to 10 are usual on MNIST")
    _check_range("instance_noise", instance_noise, 0.0, math.inf, "initial noise std; 0 = off, 0.1 is usual")
    if instance_noise_iters is not None and int(instance_noise_iters) < 1:
        raise ConfigError(
            f"model.instance_noise_iters must be a positive number of iterations or null (the run's planned "
            f"length), got {instance_noise_iters!r}."
        )
    _check_range("g_ema_decay", g_ema_decay, 0.0, 1.0 - 1e-12, "EMA decay per iteration; 0.999 is usual")
    if d_minibatch_std:
        check_minibatch_std_group(d_minibatch_std_group)
    if d_norm == "batch" and loss == "wgan-gp":
        raise ConfigError(
            "model.d_norm='batch' with model.loss='wgan-gp': the gradient penalty needs each sample's own "
            "gradient, and batch norm makes every score depend on the whole batch (Gulrajani et al. 2017 drop "
            "it for this reason). Use model.d_norm=layer or none with wgan-gp."
        )
    return {
        "latent_dim": int(latent_dim),
        "g_hidden": [int(w) for w in g_hidden],
        "d_hidden": [int(w) for w in d_hidden],
        "g_act": g_act,
        "g_out_act": g_out_act,
        "d_act": d_act,
        "d_out_act": d_out_act,
        "act_params": act_params,
        "loss": loss,
        "d_steps": int(d_steps),
        "optimizer_g": _optimizer_config(optimizer_g, "optimizer_g"),
        "optimizer_d": _optimizer_config(optimizer_d, "optimizer_d"),
        "num_fixed_samples": int(num_fixed_samples),
        "fixed_noise_seed": int(fixed_noise_seed),
        "gp_weight": float(gp_weight),
        "r1_weight": float(r1_weight),
        "d_spectral_norm": bool(d_spectral_norm),
        "g_norm": g_norm,
        "d_norm": d_norm,
        "label_smoothing": float(label_smoothing),
        "instance_noise": float(instance_noise),
        "instance_noise_iters": None if instance_noise_iters is None else int(instance_noise_iters),
        "d_minibatch_std": bool(d_minibatch_std),
        "d_minibatch_std_group": int(d_minibatch_std_group),
        "g_ema": bool(g_ema),
        "g_ema_decay": float(g_ema_decay),
        "seed": int(seed),
        "augment": list(parse_policy(_plain(augment))),
    }


def shared_settings(members: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The settings members of one pack must share (``SHARED_KEYS`` and the optimizers' kinds), checked equal."""

    def shared(m: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: m[k] for k in SHARED_KEYS}
        for key in ("optimizer_g", "optimizer_d"):
            out[key] = (m[key]["_target_"], sorted(m[key]))
        return out

    first = shared(members[0])
    for k, m in enumerate(members[1:], start=1):
        other = shared(m)
        diff = {key: (first[key], other[key]) for key in first if first[key] != other[key]}
        if diff:
            raise ConfigError(
                f"members 0 and {k} of one pack differ in settings a pack shares: "
                + "; ".join(f"{key}: {a!r} vs {b!r}" for key, (a, b) in diff.items())
                + f". Members of a pack must share {', '.join(SHARED_KEYS)} and the optimizers' kinds."
            )
    return first


class MemberStreams:
    """Each member's random stream for training draws, one ``torch.Generator`` per member on the training device.

    A member draws in a fixed order that depends on its own settings only (z for every update of an iteration,
    then per D input its augmentation and instance noise, then its penalty's interpolates), so it draws the same
    numbers in any pack.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device) -> None:
        self.device = device
        self.seeds = [int(s) for s in seeds]
        self.generators = [
            torch.Generator(device=device).manual_seed(derived_seed(s, TRAIN_STREAM)) for s in self.seeds
        ]

    def normal(self, shape: Sequence[int], members: Sequence[int] | None = None, dim: int = 0) -> torch.Tensor:
        members = range(len(self.generators)) if members is None else members
        draws = [torch.randn(*shape, generator=self.generators[k], device=self.device) for k in members]
        return torch.stack(draws, dim=dim)

    def uniform(self, shape: Sequence[int], members: Sequence[int]) -> torch.Tensor:
        return torch.stack([torch.rand(*shape, generator=self.generators[k], device=self.device) for k in members])

    def state(self) -> dict[str, Any]:
        return {"device": self.device.type, "states": [g.get_state() for g in self.generators]}

    def load(self, saved: Mapping[str, Any], iteration: int) -> None:
        """Restore the saved states; a checkpoint from another kind of device cannot continue its streams exactly,
        so they are reseeded from (seed, iteration) instead, deterministically."""
        if saved.get("device") == self.device.type:
            for gen, state in zip(self.generators, saved["states"], strict=True):
                gen.set_state(state.cpu() if self.device.type == "cpu" else state)
            return
        print(
            f"note: the checkpoint's random streams were saved on {saved.get('device')} and training now runs on "
            f"{self.device.type}; they continue from a reseed, so this resume is not bit-for-bit exact."
        )
        for gen, seed in zip(self.generators, self.seeds, strict=True):
            gen.manual_seed(derived_seed(derived_seed(seed, TRAIN_STREAM), iteration))


class GANModule(L.LightningModule):
    """K GANs as one population: G and D, their losses and optimizers' configs, a fixed noise batch per member.

    ``GANModule(members=[hparams, ...])`` builds a pack; ``GANModule(**model_config)`` a population of one (what
    ``model: mlp_gan`` instantiates). Checkpoints store ``members``.
    """

    def __init__(self, members: Sequence[Mapping[str, Any]] | None = None, **single: Any) -> None:
        super().__init__()
        if members is None:
            members = [single]
        elif single:
            raise TypeError(f"GANModule takes members=[...] or one member's settings, not both: {sorted(single)}")
        members = [member_hparams(**_plain(m)) for m in members]
        shared = shared_settings(members)
        self.save_hyperparameters({"members": members}, logger=False)  # gan.train logs the composed configs
        self.automatic_optimization = False
        self.members = len(members)
        self.member_hparams = members
        self.shared = shared
        self.losses = MemberLosses([m["loss"] for m in members], [m["label_smoothing"] for m in members])
        init = member_generators([m["seed"] for m in members], INIT_STREAM)
        acts = {key: [m[key] for m in members] for key in ("g_act", "g_out_act", "d_act", "d_out_act")}
        params = [m["act_params"] for m in members]
        first = members[0]
        self.generator = Generator(
            first["latent_dim"], first["g_hidden"], acts["g_act"], acts["g_out_act"], params, init, first["g_norm"]
        )
        self.discriminator = Discriminator(
            first["d_hidden"],
            acts["d_act"],
            acts["d_out_act"],
            params,
            init,
            norm=first["d_norm"],
            spectral_norm=[m["d_spectral_norm"] for m in members],
            minibatch_std_group=first["d_minibatch_std_group"] if first["d_minibatch_std"] else None,
        )
        # Only G is averaged; samples, grids and metrics come from the average when it exists (see sample()).
        self.generator_ema: Generator | None = None
        if first["g_ema"]:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
            self.register_buffer("generator_ema_updates", torch.zeros(self.members, dtype=torch.long))
        self.data_ranges: list[tuple[float, float]] = [
            data_range(m["g_out_act"], m["act_params"].get(m["g_out_act"])) for m in members
        ]
        self.augment_groups = self._groups([tuple(m["augment"]) for m in members], skip=())
        # Which members add which penalty, fixed for the run (looked up every update).
        self.r1_weights = [m["r1_weight"] for m in members]
        self.gp_members = [k for k, m in enumerate(members) if self.losses.gradient_penalty[k] and m["gp_weight"] > 0]
        self.noisy_members = [k for k, m in enumerate(members) if m["instance_noise"] > 0]
        self._constants: dict[tuple, torch.Tensor] = {}
        self.run_configs: list[dict[str, Any]] | None = None  # each member's composed config, set by gan.runs.training
        self._ema_started: bool | None = None  # read from the update counter once (it survives a resume)
        self.streams: MemberStreams | None = None
        self._saved_streams: Mapping[str, Any] | None = None
        self._instance_noise_iters = [0] * self.members
        self.instance_noise_now = [0.0] * self.members
        self.alive = [True] * self.members
        self.divergence: dict[int, tuple[int, str]] = {}  # member -> (iteration, reason)
        # The first iteration with a non-finite loss, per member (-1: none): set on the device in every iteration
        # (no host sync), read where the host reads anyway (logging steps) and before anything is saved or scored.
        self.register_buffer("first_nonfinite", torch.full((self.members,), -1, dtype=torch.long), persistent=False)
        self.step_metrics: dict[str, list[float]] = {}  # each member's scalars of the latest logging step
        # The same z all run long (and across resume: buffers are saved in checkpoints).
        self.register_buffer(
            "fixed_noise",
            torch.stack(
                [
                    torch.randn(
                        first["num_fixed_samples"],
                        first["latent_dim"],
                        generator=torch.Generator().manual_seed(m["fixed_noise_seed"]),
                    )
                    for m in members
                ]
            ),
        )

    def _constant(
        self, name: str, values: Sequence[float], like: torch.Tensor, dims: int = 1, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Fixed per-member values (indices, penalty weights, EMA factors) as a [K, 1, ...] tensor on ``like``'s
        device, built once: the training step does not copy them to the device at every update."""
        key = (name, like.device, dtype or like.dtype, dims)
        if key not in self._constants:
            self._constants[key] = torch.tensor(list(values), dtype=dtype or like.dtype, device=like.device).view(
                -1, *([1] * (dims - 1))
            )
        return self._constants[key]

    @staticmethod
    def _groups(values: Sequence[Any], skip: Any) -> list[tuple[Any, list[int]]]:
        """(value, members holding it) for each distinct value, leaving out members holding ``skip``."""
        groups: dict[Any, list[int]] = {}
        for k, value in enumerate(values):
            if value != skip:
                groups.setdefault(value, []).append(k)
        return list(groups.items())

    @property
    def data_range(self) -> tuple[float, float]:
        """The data range of a population of one (packs: ``data_ranges``)."""
        if self.members != 1:
            raise ValueError("a pack has one data range per member: use data_ranges")
        return self.data_ranges[0]

    # ----------------------------------------------------------------- sampling
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
        lo, hi = self.data_ranges[member]
        return ((x.float() - lo) / (hi - lo)).clamp(0, 1).view(-1, 1, IMAGE_SIZE, IMAGE_SIZE)

    # ----------------------------------------------------------------- training
    @property
    def iteration(self) -> int:
        """Generator iterations completed (what ``trainer.max_steps`` counts in this lab); 0 outside a fit."""
        if self._trainer is None:
            return 0
        return self.trainer.global_step // (self.shared["d_steps"] + 1)

    def on_fit_start(self) -> None:
        # Instance noise decays over model.instance_noise_iters iterations, by default over the whole run.
        planned = None
        for k, m in enumerate(self.member_hparams):
            if m["instance_noise_iters"] is None and planned is None:
                planned = self.planned_iterations()
            self._instance_noise_iters[k] = m["instance_noise_iters"] or planned or 0
        self.streams = MemberStreams([m["seed"] for m in self.member_hparams], self.device)
        if self._saved_streams is not None:
            self.streams.load(self._saved_streams, self.iteration)
            self._saved_streams = None
        self._set_active()

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

    def update_instance_noise(self, iteration: int) -> list[float]:
        """Set (and return) each member's instance-noise std for ``iteration``: one value per member for all of
        the iteration's D and G updates."""
        if self.noisy_members:
            self.instance_noise_now = [
                instance_noise_std(m["instance_noise"], iteration, self._instance_noise_iters[k])
                for k, m in enumerate(self.member_hparams)
            ]
        return self.instance_noise_now

    def d_input(self, x: torch.Tensor) -> torch.Tensor:
        """What D sees of an image batch [K, B, 1024], real or fake: each member's augmentation
        (``data.augment``), then its instance noise (std ``model.instance_noise`` in units of half its data range,
        decaying linearly to 0). Members without them see ``x`` unchanged, and draw nothing."""
        for g, (policy, members) in enumerate(self.augment_groups):
            index = self._constant(f"augment{g}", members, x, dtype=torch.long)
            background = self._constant(f"background{g}", [self.data_ranges[k][0] for k in members], x)
            generators = [self.streams.generators[k] for k in members]
            part = diff_augment(x[index], policy, background, generators)
            x = part if len(members) == self.members else x.index_put((index,), part)
        noisy = [k for k in self.noisy_members if self.instance_noise_now[k] > 0]
        if noisy:
            scale = [self.instance_noise_now[k] * (self.data_ranges[k][1] - self.data_ranges[k][0]) / 2 for k in noisy]
            noise = self.streams.normal(x.shape[1:], noisy) * member_column(scale, x)
            if len(noisy) == self.members:
                x = x + noise
            else:
                index = torch.tensor(noisy, device=x.device)  # changes as members' noise decays to 0
                x = x.index_put((index,), x[index] + noise)
        return x

    def d_penalty(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(D's scores of ``real`` [K, B], the gradient penalties to add to D's loss [K], or None without any).

        A penalty is computed for all members when any member has it, weighted 0 for the others (so their
        losses and gradients are what they are alone). WGAN-GP's interpolates are drawn only by the members that
        use it, and only their spectral-norm vectors take the extra forward pass's power iteration.
        """
        penalty = None
        if any(w > 0 for w in self.r1_weights):
            real_logits, r1 = r1_penalty(self.discriminator, real)
            penalty = 0.5 * self._constant("r1_weight", self.r1_weights, r1) * r1
        else:
            real_logits = self.discriminator(real)
        gp_members = self.gp_members
        if gp_members:
            eps = torch.ones(real.shape[:2] + (1,), device=real.device, dtype=real.dtype)
            drawn = self.streams.uniform((real.shape[1], 1), gp_members).to(real.dtype)
            eps = (
                drawn
                if len(gp_members) == self.members
                else eps.index_put((self._constant("gp_members", gp_members, real, dtype=torch.long),), drawn)
            )
            mask = self._constant("gp_mask", [k in gp_members for k in range(self.members)], real, dtype=torch.bool)
            with self.spectral_norm_updates(mask):
                gp = wgan_gp_penalty(self.discriminator, real, fake, eps)
            weights = [m["gp_weight"] if k in gp_members else 0.0 for k, m in enumerate(self.member_hparams)]
            gp = self._constant("gp_weight", weights, gp) * gp
            penalty = gp if penalty is None else penalty + gp
        return real_logits, penalty

    @contextmanager
    def spectral_norm_updates(self, mask: torch.Tensor) -> Iterator[None]:
        """A block in which D's power iterations update only the members in ``mask``."""
        layers = self.discriminator.linear_layers()
        for layer in layers:
            layer.sn_update_mask = mask
        try:
            yield
        finally:
            for layer in layers:
                layer.sn_update_mask = None

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        iteration = self.iteration
        d_steps = self.shared["d_steps"]
        self.update_instance_noise(self.iteration)
        real_chunks = batch.chunk(d_steps, dim=1) if d_steps > 1 else (batch,)
        size = real_chunks[-1].shape[1]
        z = self.streams.normal((d_steps + 1, size, self.shared["latent_dim"]), dim=1).to(batch.dtype)

        with self.toggled_optimizer(opt_d):
            for s, real in enumerate(real_chunks):
                with torch.no_grad():
                    fake = self.generator(z[s])
                real_in, fake_in = self.d_input(real), self.d_input(fake)
                real_logits, penalty = self.d_penalty(real_in, fake_in)
                fake_logits = self.discriminator(fake_in)
                d_loss = self.losses.d_loss(real_logits, fake_logits)
                d_total = d_loss if penalty is None else d_loss + penalty
                opt_d.zero_grad(set_to_none=True)
                self.manual_backward(d_total.sum())
                opt_d.step()

        with self.toggled_optimizer(opt_g):  # D's parameters need no gradients here
            fake_logits_g = self.discriminator(self.d_input(self.generator(z[d_steps])))
            g_loss = self.losses.g_loss(fake_logits_g)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss.sum())
            opt_g.step()
        if self.generator_ema is not None:
            self.update_generator_ema()
        bad = ~(torch.isfinite(d_total.detach()) & torch.isfinite(g_loss.detach()))
        self.first_nonfinite.masked_fill_(bad & (self.first_nonfinite < 0), iteration)

        if self._is_logging_step():
            scalars = {
                "train/d_loss": d_loss.detach(),
                "train/g_loss": g_loss.detach(),
                "train/D_x": self.losses.d_output(real_logits.detach()).mean(1),
                "train/D_G_z": self.losses.d_output(fake_logits.detach()).mean(1),
            }
            if penalty is not None:
                scalars["train/d_penalty"] = penalty.detach()
            self._record_step(scalars)

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

    def _record_step(self, scalars: dict[str, torch.Tensor]) -> None:
        """Each member's scalars of this logging step and the non-finite flags (one device-to-host copy for all):
        a member with a non-finite loss since the last read is marked diverged and frozen; when none is left, the
        run stops."""
        scalars = {**scalars, "_first_nonfinite": self.first_nonfinite}
        values = torch.stack([v.float() for v in scalars.values()]).cpu().tolist()
        table = dict(zip(scalars, values, strict=True))
        self.check_divergence(table.pop("_first_nonfinite"))
        penalised = [w > 0 or k in self.gp_members for k, w in enumerate(self.r1_weights)]
        table = {
            tag: [v if (tag != "train/d_penalty" or penalised[k]) else None for k, v in enumerate(vals)]
            for tag, vals in table.items()
        }
        if self.noisy_members:
            table["train/instance_noise_std"] = [
                std if m["instance_noise"] > 0 else None
                for std, m in zip(self.instance_noise_now, self.member_hparams, strict=True)
            ]
        self.step_metrics = table
        if not any(self.alive):
            raise RunFailed("diverged", self.divergence[max(self.divergence, key=lambda k: self.divergence[k][0])][1])
        if self.members == 1:
            self.log_dict({t: v[0] for t, v in table.items() if v[0] is not None}, prog_bar=True, logger=False)
        else:
            self.log("members_alive", float(sum(self.alive)), prog_bar=True, logger=False)

    def _set_active(self) -> None:
        for opt in self.trainer.optimizers if self._trainer is not None else []:
            if isinstance(opt, StackedOptimizer):
                opt.set_active(self.alive)

    def update_generator_ema(self) -> None:
        """G's weight average, per member with its own decay (torch's EMA formula: copy at the first update,
        then lerp towards G by 1 - decay); frozen members keep theirs."""
        averaged = [t for t in list(self.generator_ema.parameters()) + list(self.generator_ema.buffers())]
        current = [t for t in list(self.generator.parameters()) + list(self.generator.buffers())]
        with torch.no_grad():
            floats = [(a, c.detach()) for a, c in zip(averaged, current, strict=True) if a.is_floating_point()]
            others = [(a, c) for a, c in zip(averaged, current, strict=True) if not a.is_floating_point()]
            saved = self._frozen_slices([a for a, _ in floats + others])
            if self._ema_started is None:  # one host read per fit, not one per update
                self._ema_started = bool(self.generator_ema_updates.max() > 0)
            if not self._ema_started:
                for a, c in floats + others:
                    a.copy_(c)
                self._ema_started = True
            else:
                factors = [1.0 - m["g_ema_decay"] for m in self.member_hparams]
                weights = [self._constant("ema", factors, a, a.dim()) for a, _ in floats]
                torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weights)
                for a, c in others:
                    a.copy_(c)
            self.generator_ema_updates.add_(1)
            self._restore_frozen(saved)

    def _frozen_slices(self, tensors: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        frozen = [k for k, a in enumerate(self.alive) if not a]
        if not frozen:
            return []
        index = torch.tensor(frozen, device=self.device)
        return [(t, index, t[index].clone()) for t in [*tensors, self.generator_ema_updates]]

    @staticmethod
    def _restore_frozen(saved: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
        for t, index, old in saved:
            t[index] = old

    def _is_logging_step(self) -> bool:
        """Scalars are read every ``log_every_n_steps`` iterations (that is also where divergence is checked: a GPU
        syncs only there, not every step)."""
        every = self.trainer.log_every_n_steps
        return every > 0 and (self.iteration + 1) % every == 0

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [self._optimizer("optimizer_g", self.generator), self._optimizer("optimizer_d", self.discriminator)]

    def _optimizer(self, key: str, network: nn.Module) -> StackedOptimizer:
        """The configured optimizer over the network's stacked parameters, each hyperparameter one value per
        member (e.g. ``lr=[2e-4, 1e-4, ...]``)."""
        configs = [m[key] for m in self.member_hparams]
        options = {name: [c[name] for c in configs] for name in configs[0] if name != "_target_"}
        cls = OPTIMIZERS[configs[0]["_target_"]]
        try:
            return hydra.utils.instantiate(
                {"_target_": f"{cls.__module__}.{cls.__name__}"}, network.parameters(), members=self.members, **options
            )
        except hydra.errors.InstantiationException as exc:
            raise ConfigError(f"model.{key}: {exc.__cause__ or exc}") from exc

    # ----------------------------------------------------------------- exact resume
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
