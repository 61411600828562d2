"""The LightningModule: generator and discriminator trained with alternating manual updates.

One training iteration = one batch = ``d_steps`` discriminator updates (each on its own slice of the real batch)
followed by one generator update. Lightning counts every ``optimizer.step()`` in ``trainer.global_step``, so one
iteration advances it by ``d_steps + 1``; ``iteration`` below and the TensorBoard x-axis count iterations.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from gan.activations import ACTIVATION_NAMES, ActivationError, data_range
from gan.losses import build_loss
from gan.networks import IMAGE_SIZE, Discriminator, Generator

DEFAULT_ADAM: dict[str, Any] = {"_target_": "torch.optim.Adam", "lr": 2e-4, "betas": [0.5, 0.999]}


def _plain(value: Any) -> Any:
    """Hydra containers -> plain Python, so hyperparameters pickle and print cleanly."""
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


class DivergenceError(FloatingPointError):
    """A loss became NaN or infinite: the run cannot recover, so it stops."""


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
            },
            logger=False,  # gan.train logs the whole composed config instead
        )
        self.automatic_optimization = False
        self.loss = build_loss(loss)
        self.generator = Generator(self.hparams.latent_dim, self.hparams.g_hidden, g_act, g_out_act, act_params)
        self.discriminator = Discriminator(self.hparams.d_hidden, d_act, d_out_act, act_params)
        self.data_range: tuple[float, float] = data_range(g_out_act, act_params.get(g_out_act))
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

    @torch.no_grad()
    def sample(self, z: torch.Tensor) -> torch.Tensor:
        """Generator output for ``z`` (N x 1024, in the data range), G in eval mode for the call: every grid,
        metric and sample file sees the same sampling mode, should G ever hold dropout or batch norm."""
        was_training = self.generator.training
        self.generator.eval()
        try:
            return self.generator(z.to(self.device))
        finally:
            self.generator.train(was_training)

    def to_unit_images(self, x: torch.Tensor) -> torch.Tensor:
        """N x 1024 samples in the data range -> N x 1 x 32 x 32 in [0, 1] for image grids."""
        lo, hi = self.data_range
        return ((x.float() - lo) / (hi - lo)).clamp(0, 1).view(-1, 1, IMAGE_SIZE, IMAGE_SIZE)

    # ----------------------------------------------------------------- training
    @property
    def iteration(self) -> int:
        """Generator iterations completed (what ``trainer.max_steps`` counts in this lab)."""
        return self.trainer.global_step // (self.hparams.d_steps + 1)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        d_steps = self.hparams.d_steps
        real_chunks = batch.chunk(d_steps) if d_steps > 1 else (batch,)

        with self.toggled_optimizer(opt_d):
            for real in real_chunks:
                with torch.no_grad():
                    fake = self.generator(self.noise(real.shape[0]))
                real_logits = self.discriminator(real)
                fake_logits = self.discriminator(fake)
                d_loss = self.loss.d_loss(real_logits, fake_logits)
                opt_d.zero_grad(set_to_none=True)
                self.manual_backward(d_loss)
                opt_d.step()

        with self.toggled_optimizer(opt_g):  # D's parameters need no gradients here
            fake_logits_g = self.discriminator(self.generator(self.noise(real_chunks[-1].shape[0])))
            g_loss = self.loss.g_loss(fake_logits_g)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()

        if self._is_logging_step():
            # Checked where the values are read anyway (a GPU syncs here once per log interval, not every step).
            if not (torch.isfinite(d_loss) and torch.isfinite(g_loss)):
                raise DivergenceError(
                    f"non-finite loss in iteration {self.iteration}: d_loss={d_loss.item()}, g_loss={g_loss.item()}"
                )
            self.log_dict(
                {
                    "train/d_loss": d_loss.detach(),
                    "train/g_loss": g_loss.detach(),
                    "train/D_x": self.loss.d_output(real_logits.detach()).mean(),
                    "train/D_G_z": self.loss.d_output(fake_logits.detach()).mean(),
                },
                prog_bar=True,
                on_step=True,
                on_epoch=False,
            )

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
