"""Training throughput of the real Lightning run against a plain-PyTorch loop doing the same work.

    python -m gan.bench --data-root ../shared/mnist [--iters 1000 --warmup 100 --segment 50] [overrides ...]

Both sides use the same composed config (the defaults plus any Hydra overrides given), the same G, D, losses,
Adam settings, batch size and in-memory MNIST tensor, on the CPU. The Lightning side is ``gan.train``'s own
Trainer with its logger, sample-grid and last-checkpoint callbacks and progress bar; the reference is a bare loop.
They run interleaved in one process: Lightning trains ``segment`` iterations, then a callback runs the reference
for as many, and so on, so that both see the same machine state. The last line printed is one JSON object:
{"lightning_img_s", "reference_img_s", "ratio", ...}.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import tempfile
import time
from typing import Sequence

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from gan.data import ShuffledBatches
from gan.module import GANModule
from gan.train import CONF_DIR, build_datamodule, build_model, build_trainer


# Stability switches the bare reference loop does not implement (it matches them only at GANModule's defaults).
REFERENCE_SWITCHES = (
    "r1_weight", "d_spectral_norm", "g_norm", "d_norm", "label_smoothing", "instance_noise", "d_minibatch_std", "g_ema"
)


class BenchConfigError(ValueError):
    """A configuration the reference loop cannot reproduce."""


def check_reference_can_match(model: GANModule, augment: object) -> None:
    """Refuse stability switches and penalised losses: the reference would skip their work and flatter itself."""
    defaults = inspect.signature(GANModule.__init__).parameters
    changed = [f"model.{k}={model.hparams[k]!r}" for k in REFERENCE_SWITCHES if model.hparams[k] != defaults[k].default]
    if model.loss.gradient_penalty:
        changed.append(f"model.loss={model.hparams.loss!r}")
    if augment is not None:
        changed.append("data.augment")
    if changed:
        raise BenchConfigError(
            f"gan.bench compares the plain GAN iteration with a bare PyTorch loop, which does not implement "
            f"{', '.join(changed)}. Benchmark without those overrides (losses ns, minimax, lsgan and hinge are fine)."
        )


class ReferenceLoop:
    """GANModule.training_step's iteration written as a bare PyTorch loop, on its own copy of G, D and optimizers."""

    def __init__(self, cfg: DictConfig, data: torch.Tensor) -> None:
        model: GANModule = build_model(cfg)
        self.G, self.D, self.loss = model.generator, model.discriminator, model.loss
        self.opt_g, self.opt_d = model.configure_optimizers()
        self.d_steps, self.latent_dim = model.hparams.d_steps, model.hparams.latent_dim
        self.images_per_iteration = int(cfg.data.batch_size) * self.d_steps
        self.batches = ShuffledBatches(data, self.images_per_iteration, torch.Generator().manual_seed(int(cfg.seed)))
        self._iter = iter(self.batches)

    def _next_batch(self) -> torch.Tensor:
        try:
            return next(self._iter)
        except StopIteration:
            self._iter = iter(self.batches)
            return next(self._iter)

    def step(self) -> None:
        G, D, loss = self.G, self.D, self.loss
        batch = self._next_batch()
        G.requires_grad_(False)
        for real in batch.chunk(self.d_steps):
            with torch.no_grad():
                fake = G(torch.randn(real.shape[0], self.latent_dim))
            d_loss = loss.d_loss(D(real), D(fake))
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
        G.requires_grad_(True)
        D.requires_grad_(False)
        g_loss = loss.g_loss(D(G(torch.randn(real.shape[0], self.latent_dim))))
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        D.requires_grad_(True)


class Interleaved(Callback):
    """Times Lightning in segments of ``segment`` iterations and runs the reference for as many iterations
    between segments, so both sides see the same machine state (a 2-core machine drifts by several percent)."""

    def __init__(self, reference: ReferenceLoop, warmup: int, segment: int) -> None:
        self.reference, self.warmup, self.segment = reference, warmup, segment
        self.lightning_s = self.reference_s = 0.0
        self.lightning_iters = self.reference_iters = 0
        self.segment_ratios: list[float] = []  # per pair of neighbouring segments: lightning / reference speed
        self._seen = 0
        self._t0 = 0.0

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        self._seen += 1
        if self._seen < self.warmup:
            return
        if self._seen == self.warmup:
            for _ in range(self.segment):  # warm the reference up too
                self.reference.step()
        elif (self._seen - self.warmup) % self.segment == 0:
            lightning_s = time.perf_counter() - self._t0
            start = time.perf_counter()
            for _ in range(self.segment):
                self.reference.step()
            reference_s = time.perf_counter() - start
            self.lightning_s += lightning_s
            self.reference_s += reference_s
            self.lightning_iters += self.segment
            self.reference_iters += self.segment
            self.segment_ratios.append(reference_s / lightning_s)
        else:
            return
        self._t0 = time.perf_counter()  # the next segment starts here: Lightning's work between batches counts


def bench_config(data_root: str, run_dir: str, iterations: int, overrides: Sequence[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(
            "train",
            overrides=[
                f"data.root={data_root}",
                f"run_dir={run_dir}",
                f"trainer.max_steps={iterations}",
                "trainer.max_epochs=-1",
                "trainer.accelerator=cpu",
                "trainer.enable_model_summary=false",
                "eval.enabled=false",  # evaluation and diagnostics run outside the timed steady state
                "diag.enabled=false",
                *overrides,
            ],
        )


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="data", help="folder holding MNIST/raw/ (default: data)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed iterations before timing")
    parser.add_argument("--iters", type=int, default=1000, help="timed iterations of each side")
    parser.add_argument("--segment", type=int, default=50, help="iterations per alternating timed segment")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data.batch_size=128")
    args = parser.parse_args(argv)
    segments = max(1, args.iters // args.segment)

    with tempfile.TemporaryDirectory(prefix="gan-bench-") as tmp:
        cfg = bench_config(args.data_root, tmp, args.warmup + segments * args.segment, args.overrides)
        L.seed_everything(int(cfg.seed), workers=True, verbose=False)
        model = build_model(cfg)
        datamodule = build_datamodule(cfg, model)
        check_reference_can_match(model, datamodule.augment)
        reference = ReferenceLoop(cfg, datamodule.train_images)
        timer = Interleaved(reference, args.warmup, args.segment)
        trainer = build_trainer(cfg, model.hparams.d_steps)
        trainer.callbacks.append(timer)
        trainer.fit(model, datamodule=datamodule)

    images = reference.images_per_iteration
    lit = timer.lightning_iters * images / timer.lightning_s
    ref = timer.reference_iters * images / timer.reference_s
    summary = {
        "lightning_img_s": round(lit, 1),
        "reference_img_s": round(ref, 1),
        "ratio": round(lit / ref, 3),
        # robust to bursts of load from elsewhere: the median over the interleaved segment pairs
        "median_segment_ratio": round(statistics.median(timer.segment_ratios), 3),
        "batch_size": int(cfg.data.batch_size),
        "d_steps": model.hparams.d_steps,
        "timed_iterations_each": timer.lightning_iters,
        "segment": args.segment,
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
