"""Synthetic run folders as the lab writes them (``.hydra/overrides.yaml``, ``results.json``, TensorBoard losses), for
the report's tests: a sweep of any shape in milliseconds, without training."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def write_run(
    sweep: Path,
    name: str,
    overrides: Sequence[str],
    fid: float,
    collapsed_at: int | None = None,
    dead: float | None = None,
    iterations: Sequence[int] = (10,),
) -> Path:
    """A finished run whose evaluations (one per entry of ``iterations``) all score ``fid``; ``collapsed_at``: the
    iteration of its first evaluation judged collapsed (its final one is judged collapsed); ``dead``: G's dead
    share at its last diagnostics probe. The last override is ``seed=N``."""
    run = sweep / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    evaluations = [
        {
            "fid": fid,
            "is": 1.0,
            "modes": 10.0,
            "kl_uniform": 0.1,
            "precision": 0.5,
            "recall": 0.5,
            "iteration": iteration,
            "epochs": float(k + 1),
        }
        for k, iteration in enumerate(iterations)
    ]
    final = evaluations[-1]
    if collapsed_at is not None:
        final.update(verdict="collapsed", iteration=max(collapsed_at, final["iteration"]))
    record = {
        "first_collapse_iteration": collapsed_at,
        "diagnostics": {} if dead is None else {"G_dead": dead},
        "status": "finished",
        "seed": int(overrides[-1].split("=")[1]),
        "config": {},
        "iterations": final["iteration"],
        "wall_s": 1.0,
        "evaluations": evaluations,
        "best": final,
        "final": final,
    }
    (run / "results.json").write_text(json.dumps(record))
    return run


def write_losses(run: Path, steps: Sequence[int], tags: Sequence[str] = ("train/d_loss", "train/g_loss")) -> None:
    """TensorBoard scalars at ``steps`` (the steps the lab's event files hold) for each of ``tags``."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run))
    for step in steps:
        for k, tag in enumerate(tags):
            writer.add_scalar(tag, 1.0 + k + 0.01 * step, step)
    writer.close()
