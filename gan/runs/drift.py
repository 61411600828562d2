"""How far a captured pack drifts from the eager pack, iteration by iteration (``gan.bench --drift N``).

GAN training amplifies differences in the last bits: two runs that differ by one rounding per iteration drift
apart exponentially, while a wrong update (a missed draw, a stale tensor) shows at once, by about a learning rate.
So the pack is trained three times from the same seeds, ``cuda_graphs=on`` once and eagerly twice, and every
member's weights are compared at iterations 1, 2, 5, 10, 20, ...: the captured-against-eager column says whether
the graph computes the eager iteration (tiny at iteration 1, growing smoothly, or 0 where the kernels match), the
eager-against-eager column what the device's own run-to-run determinism gives for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from gan.model.module import GANModule
from gan.runs.build import build_callbacks, build_datamodule, build_trainer

MARKS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class Snapshots(Callback):
    """Every floating-point entry of the module's state (weights, optimizer-free) on the CPU at the given
    iterations."""

    def __init__(self, marks: Sequence[int]) -> None:
        self.marks = set(marks)
        self.taken: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if pl_module.iteration in self.marks and pl_module.iteration not in self.taken:
            state = pl_module.state_dict()
            self.taken[pl_module.iteration] = {
                k: v.detach().to("cpu", copy=True) for k, v in state.items() if v.is_floating_point()
            }


def fit_members(
    cfg: DictConfig, members: list[dict[str, Any]], iterations: int, callback: Callback, cuda_graphs: str
) -> None:
    """``gan.train``'s Trainer on ``members`` as one pack for ``iterations`` (the lab's ``max_steps``), seeded as
    every bench fit is, with ``callback`` watching (the bench's timer, the snapshots here)."""
    L.seed_everything(0, verbose=False)
    module = GANModule(members=members, checked=True)
    module.use_cuda_graphs(cuda_graphs)
    datamodule = build_datamodule(cfg, [m["seed"] for m in members], module.data_ranges, module.shared["d_steps"])
    with_steps = OmegaConf.merge(cfg, {"trainer": {"max_steps": iterations}})
    trainer = build_trainer(with_steps, module.shared["d_steps"], build_callbacks(with_steps))
    trainer.callbacks.append(callback)
    trainer.fit(module, datamodule=datamodule)


def snapshot_fit(
    cfg: DictConfig, members: list[dict[str, Any]], iterations: int, marks: Sequence[int], cuda_graphs: str
) -> dict[int, dict[str, torch.Tensor]]:
    """Train ``members`` as one pack for ``iterations`` and return its weights at ``marks``."""
    snapshots = Snapshots(marks)
    fit_members(cfg, members, iterations, snapshots, cuda_graphs)
    return snapshots.taken


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest absolute difference over every entry (NaN where either side is not finite)."""
    worst = 0.0
    for key, value in a.items():
        diff = (value.double() - b[key].double()).abs().max().item() if value.numel() else 0.0
        worst = max(worst, diff) if diff == diff else float("nan")
    return worst


def drift(cfg: DictConfig, members: list[dict[str, Any]], iterations: int) -> list[dict[str, Any]]:
    """Rows (iteration, captured against eager, eager against eager) over the marks up to ``iterations``."""
    marks = [m for m in MARKS if m < iterations] + [iterations]
    captured = snapshot_fit(cfg, members, iterations, marks, "on")
    eager = snapshot_fit(cfg, members, iterations, marks, "off")
    again = snapshot_fit(cfg, members, iterations, marks, "off")
    return [
        {
            "iteration": m,
            "captured_vs_eager": largest_difference(captured[m], eager[m]),
            "eager_vs_eager": largest_difference(eager[m], again[m]),
        }
        for m in marks
    ]
