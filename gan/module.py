"""The LightningModule: generator and discriminator trained with alternating manual updates.

One training iteration = one batch = ``d_steps`` discriminator updates (each on its own slice of the real batch)
followed by one generator update. Lightning counts every ``optimizer.step()`` in ``trainer.global_step``, so one
iteration advances it by ``d_steps + 1``; ``iteration`` below and the TensorBoard x-axis count iterations.

The stability toolkit lives here too, each part off by default: gradient penalties (WGAN-GP's on interpolates,
R1 on reals) added to D's loss, instance noise and differentiable augmentation on everything D sees (real and
fake, in D's and G's updates alike), and an exponential moving average of G's weights that samples come from.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from gan.activations import ACTIVATION_NAMES, ActivationError, data_range
from gan.losses import build_loss, r1_penalty, wgan_gp_penalty
from gan.networks import IMAGE_SIZE, Discriminator, Generator, NetworkConfigError

DEFAULT_ADAM: dict[str, Any] = {"_target_": "torch.optim.Adam", "lr": 2e-4, "betas": [0.5, 0.999]}


def _plain(value: Any) -> Any:
    """Hydra containers -> plain Python, so hyperparameters pickle and print cleanly."""
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


class DivergenceError(FloatingPointError):
    """A loss became NaN or infinite: the run cannot recover, so it stops."""


def _check_range(name: str, value: float, low: float, high: float, hint: str) -> None:
    if not low <= float(value) <= high:
        raise NetworkConfigError(f"model.{name} must be in [{low:g}, {high:g}], got {value!r} ({hint}).")


def instance_noise_std(initial: float, iteration: int, decay_iters: int) -> float:
    """Linear decay from ``initial`` at iteration 0 to 0 at ``decay_iters`` (and after); constant when
    ``decay_iters`` is 0 (a run without a planned length)."""
    if initial <= 0:
        return 0.0
    if decay_iters <= 0:
        return float(initial)
    return float(initial) * max(0.0, 1.0 - iteration / decay_iters)


class GANModule(L.LightningModule):
    """Holds G and D, the loss, the optimizers' configs and a fixed noise batch for sample grids."""

    def __init__(
        self,
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
    ) -> None:
        super().__init__()
        act_params = {k: dict(v or {}) for k, v in (_plain(act_params) or {}).items()}
        if d_out_act == "sigmoid":
            raise ActivationError(
                "model.d_out_act='sigmoid' would apply the sigmoid twice: the discriminator outputs a logit and the "
                "loss applies the sigmoid itself (binary_cross_entropy_with_logits), which is the seed design's "
                "sigmoid output. Use d_out_act=identity for that design, or another activation to transform the "
                f"logit. Valid names: {', '.join(n for n in ACTIVATION_NAMES if n != 'sigmoid')}."
            )
        if int(d_steps) < 1:
            raise ValueError(f"model.d_steps must be a positive integer, got {d_steps!r}.")
        _check_range("gp_weight", gp_weight, 0.0, math.inf, "the WGAN-GP penalty weight lambda; 10 is usual")
        _check_range("r1_weight", r1_weight, 0.0, math.inf, "R1's gamma; 0 = off, 1 to 10 are usual on MNIST")
        _check_range("instance_noise", instance_noise, 0.0, math.inf, "initial noise std; 0 = off, 0.1 is usual")
        if instance_noise_iters is not None and int(instance_noise_iters) < 1:
            raise NetworkConfigError(
                f"model.instance_noise_iters must be a positive number of iterations or null (the run's planned "
                f"length), got {instance_noise_iters!r}."
            )
        _check_range("g_ema_decay", g_ema_decay, 0.0, 1.0 - 1e-12, "EMA decay per iteration; 0.999 is usual")
        if d_norm == "batch" and loss == "wgan-gp":
            raise NetworkConfigError(
                "model.d_norm='batch' with model.loss='wgan-gp': the gradient penalty needs each sample's own "
                "gradient, and batch norm makes every score depend on the whole batch (Gulrajani et al. 2017 drop "
                "it for this reason). Use model.d_norm=layer or none with wgan-gp."
            )
        self.save_hyperparameters(
            {
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
                "optimizer_g": _plain(optimizer_g) or dict(DEFAULT_ADAM),
                "optimizer_d": _plain(optimizer_d) or dict(DEFAULT_ADAM),
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
            },
            logger=False,  # gan.train logs the whole composed config instead
        )
        self.automatic_optimization = False
        self.loss = build_loss(loss, label_smoothing)
        self.generator = Generator(
            self.hparams.latent_dim, self.hparams.g_hidden, g_act, g_out_act, act_params, norm=g_norm
        )
        self.discriminator = Discriminator(
            self.hparams.d_hidden,
            d_act,
            d_out_act,
            act_params,
            norm=d_norm,
            spectral_norm=bool(d_spectral_norm),
            minibatch_std_group=int(d_minibatch_std_group) if d_minibatch_std else None,
        )
        # Only G is averaged; samples, grids and metrics come from the average when it exists (see sample()).
        self.generator_ema: AveragedModel | None = None
        if g_ema:
            self.generator_ema = AveragedModel(
                self.generator, multi_avg_fn=get_ema_multi_avg_fn(float(g_ema_decay)), use_buffers=True
            )
            self.generator_ema.requires_grad_(False)
        self.data_range: tuple[float, float] = data_range(g_out_act, act_params.get(g_out_act))
        # DiffAugment from the data module (data.augment), set in setup(); identity when there is none.
        self.augment: nn.Module = nn.Identity()
        self._instance_noise_iters = 0
        self.instance_noise_now = 0.0
        # The same z all run long (and across resume: buffers are saved in checkpoints).
        gen = torch.Generator().manual_seed(int(fixed_noise_seed))
        self.register_buffer("fixed_noise", torch.randn(int(num_fixed_samples), int(latent_dim), generator=gen))

    # Lightning sets these plain bookkeeping attributes about 45 times per iteration (every hook call);
    # nn.Module.__setattr__ checks each value against parameters, buffers and submodules, which costs about 1%
    # of a CPU iteration here. They are never tensors or modules, so they skip that check.
    _BOOKKEEPING_ATTRS = frozenset({"_current_fx_name", "_param_requires_grad_state"})

    def __setattr__(self, name: str, value: Any) -> None:
        if name in GANModule._BOOKKEEPING_ATTRS:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # ----------------------------------------------------------------- sampling
    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.hparams.latent_dim, device=self.device)

    def sampling_generator(self, ema: bool | None = None) -> nn.Module:
        """The generator samples come from: the weight average when ``model.g_ema`` is on (unless ``ema=False``),
        else the trained G."""
        if ema is not False and self.generator_ema is not None:
            return self.generator_ema.module
        if ema and self.generator_ema is None:
            raise ValueError("this model has no generator weight average (it was trained with model.g_ema=false)")
        return self.generator

    def sampler_variants(self) -> list[tuple[str, bool | None]]:
        """(name suffix, ``ema`` argument of ``sample``) of each generator that grids and metrics show: the default
        sampler (suffix ""), and with a weight average also the trained G (suffix "_no_ema")."""
        return [("", None)] + ([("_no_ema", False)] if self.generator_ema is not None else [])

    @torch.no_grad()
    def sample(self, z: torch.Tensor, ema: bool | None = None) -> torch.Tensor:
        """Generator output for ``z`` (N x 1024, in the data range), G in eval mode for the call: every grid,
        metric and sample file sees the same sampling mode (batch norm uses its running statistics).
        ``ema``: None = the default sampler (``sampling_generator``), False = the trained G, True = the average."""
        generator = self.sampling_generator(ema)
        was_training = generator.training
        generator.eval()
        try:
            return generator(z.to(self.device))
        finally:
            generator.train(was_training)

    def to_unit_images(self, x: torch.Tensor) -> torch.Tensor:
        """N x 1024 samples in the data range -> N x 1 x 32 x 32 in [0, 1] for image grids."""
        lo, hi = self.data_range
        return ((x.float() - lo) / (hi - lo)).clamp(0, 1).view(-1, 1, IMAGE_SIZE, IMAGE_SIZE)

    # ----------------------------------------------------------------- training
    @property
    def iteration(self) -> int:
        """Generator iterations completed (what ``trainer.max_steps`` counts in this lab)."""
        return self.trainer.global_step // (self.hparams.d_steps + 1)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        augment = getattr(datamodule, "augment", None)
        self.augment = augment if augment is not None else nn.Identity()

    def on_fit_start(self) -> None:
        # Instance noise decays over model.instance_noise_iters iterations, by default over the whole run.
        configured = self.hparams.instance_noise_iters
        self._instance_noise_iters = int(configured) if configured is not None else self.planned_iterations()

    def planned_iterations(self) -> int:
        """Iterations this fit will run (max_epochs x batches per epoch, or max_steps if fewer); 0 if unbounded."""
        trainer = self.trainer
        trainer.estimated_stepping_batches  # noqa: B018 - loads the training data so that its length is known
        limits = []
        if trainer.max_epochs not in (None, -1) and math.isfinite(trainer.num_training_batches):
            limits.append(int(trainer.num_training_batches) * int(trainer.max_epochs))
        if trainer.max_steps is not None and trainer.max_steps > 0:
            limits.append(trainer.max_steps // (self.hparams.d_steps + 1))
        return min(limits) if limits else 0

    def update_instance_noise(self, iteration: int) -> float:
        """Set (and return) the instance-noise std for ``iteration``: one value for all of its D and G updates."""
        self.instance_noise_now = instance_noise_std(
            self.hparams.instance_noise, iteration, self._instance_noise_iters
        )
        return self.instance_noise_now

    def d_input(self, x: torch.Tensor) -> torch.Tensor:
        """What D sees of an image batch, real or fake: augmented (``data.augment``), then with instance noise
        (std ``model.instance_noise`` in units of half the data range, decaying linearly to 0)."""
        x = self.augment(x)
        if self.instance_noise_now > 0:
            lo, hi = self.data_range
            x = x + torch.randn_like(x) * (self.instance_noise_now * (hi - lo) / 2)
        return x

    def d_penalty(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(D's scores of ``real``, the gradient penalties to add to D's loss, or None without any)."""
        hp = self.hparams
        penalty = None
        if hp.r1_weight > 0:
            real_logits, r1 = r1_penalty(self.discriminator, real)
            penalty = 0.5 * hp.r1_weight * r1
        else:
            real_logits = self.discriminator(real)
        if self.loss.gradient_penalty and hp.gp_weight > 0:
            gp = hp.gp_weight * wgan_gp_penalty(self.discriminator, real, fake)
            penalty = gp if penalty is None else penalty + gp
        return real_logits, penalty

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        d_steps = self.hparams.d_steps
        noise_std = self.update_instance_noise(self.iteration)
        real_chunks = batch.chunk(d_steps) if d_steps > 1 else (batch,)

        with self.toggled_optimizer(opt_d):
            for real in real_chunks:
                with torch.no_grad():
                    fake = self.generator(self.noise(real.shape[0]))
                real_in, fake_in = self.d_input(real), self.d_input(fake)
                real_logits, penalty = self.d_penalty(real_in, fake_in)
                fake_logits = self.discriminator(fake_in)
                d_loss = self.loss.d_loss(real_logits, fake_logits)
                d_total = d_loss if penalty is None else d_loss + penalty
                opt_d.zero_grad(set_to_none=True)
                self.manual_backward(d_total)
                opt_d.step()

        with self.toggled_optimizer(opt_g):  # D's parameters need no gradients here
            fake_logits_g = self.discriminator(self.d_input(self.generator(self.noise(real_chunks[-1].shape[0]))))
            g_loss = self.loss.g_loss(fake_logits_g)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()
        if self.generator_ema is not None:
            self.generator_ema.update_parameters(self.generator)

        if self._is_logging_step():
            # Checked where the values are read anyway (a GPU syncs here once per log interval, not every step).
            if not (torch.isfinite(d_total) and torch.isfinite(g_loss)):
                raise DivergenceError(
                    f"non-finite loss in iteration {self.iteration}: d_loss={d_total.item()}, g_loss={g_loss.item()}"
                )
            logged = {
                "train/d_loss": d_loss.detach(),
                "train/g_loss": g_loss.detach(),
                "train/D_x": self.loss.d_output(real_logits.detach()).mean(),
                "train/D_G_z": self.loss.d_output(fake_logits.detach()).mean(),
            }
            if penalty is not None:
                logged["train/d_penalty"] = penalty.detach()
            if self.hparams.instance_noise > 0:
                logged["train/instance_noise_std"] = torch.tensor(noise_std)
            self.log_dict(logged, prog_bar=True, on_step=True, on_epoch=False)

    def _is_logging_step(self) -> bool:
        """Lightning writes step metrics every ``log_every_n_steps`` batches; calling self.log on the other
        steps only costs time (about a fifth of a CPU iteration here), so the step logs on those batches alone."""
        every = self.trainer.log_every_n_steps
        return every > 0 and (self.iteration + 1) % every == 0

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        opt_g = hydra.utils.instantiate(self.hparams.optimizer_g, params=self.generator.parameters())
        opt_d = hydra.utils.instantiate(self.hparams.optimizer_d, params=self.discriminator.parameters())
        return [opt_g, opt_d]

    # ----------------------------------------------------------------- exact resume
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the noise RNG so that a resumed run draws the same z as an uninterrupted one."""
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        checkpoint["gan_rng"] = rng

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("gan_rng")
        if rng is None:
            return
        # load_from_checkpoint(map_location=...) may have moved the states; RNG states live on the CPU.
        torch.set_rng_state(rng["torch"].cpu())
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"].cpu())
