"""A finished (or still running) sweep as the report reads it: its job folders, each a ``Run`` with its overrides,
its results record, the label of its configuration (the overrides that vary, seed and tuning draw aside), its
collapse verdicts and its mechanism measures."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gan.eval.metrics import collapse_verdict
from gan.runs.names import is_where_how
from gan.runs.rundir import RESULTS_NAME, RunResults

UNREADABLE = "(overrides unreadable)"  # the level of every factor for a run whose overrides.yaml is damaged
# Overrides that tell a configuration's runs apart rather than configurations: the seed, and a tuning study's draw
# (the draws of one configuration are its runs, as seeds are: gan.study.tuning reads them).
NOT_CONFIGURATION = ("seed", "tuning.draw")


@dataclass
class Run:
    """One job folder of a sweep."""

    path: Path
    overrides: dict[str, str]
    results: RunResults | None  # its results.json, the one record type the writer uses too
    label: str = ""
    varying: dict[str, str] = field(default_factory=dict)

    problem: str | None = None  # why its results.json cannot be read (listed in report.md)

    @property
    def status(self) -> str:
        """The record's status (``killed`` for a ``running`` record whose writer is gone: see ``RunResults.state``);
        ``unreadable`` for a results.json that is not a record; else no results."""
        if self.results is not None:
            return self.results.state()
        return "unreadable" if self.problem else "no results (refused or not started)"

    @property
    def seed(self) -> str:
        if "seed" in self.overrides:
            return self.overrides["seed"]
        return str(self.results.seed) if self.results else ""

    @property
    def latest(self) -> dict[str, Any] | None:
        """The final evaluation, or for a running job its latest one."""
        return self.results.latest if self.results else None

    @cached_property
    def final_verdict(self) -> str | None:
        """The collapse verdict of its latest evaluation (read once: summary and csv both use it)."""
        return verdict_of(self.latest)

    @cached_property
    def first_collapse(self) -> int | None:
        """The iteration of its first evaluation judged collapsed: see ``first_collapse``."""
        return first_collapse(self)

    @cached_property
    def mechanism_measures(self) -> dict[str, float]:
        """Its mechanism measurements: see ``mechanism_values``."""
        return mechanism_values(self)


def verdict_of(record: dict[str, Any] | None) -> str | None:
    """An evaluation's collapse verdict. One recorded before verdicts were (a sweep of an older version of the lab)
    is judged now by the same thresholds from its classes covered (and its diversity, when it was recorded)."""
    if not record:
        return None
    if record.get("verdict"):
        return str(record["verdict"])
    modes = record.get("modes")
    if not isinstance(modes, (int, float)):
        return None
    diversity = record.get("diversity")
    return collapse_verdict(float(modes), float(diversity) if isinstance(diversity, (int, float)) else math.nan)


def first_collapse(run: Run) -> int | None:
    """The iteration of the run's first evaluation judged collapsed (recorded, or judged now for older records)."""
    if run.results is None:
        return None
    # the earliest of the recorded one and any found now (an older run resumed by a newer lab records only the
    # collapses after the resume)
    found = [e.get("iteration") for e in run.results.evaluations if verdict_of(e) == "collapsed"]
    found.append(run.results.data.get("first_collapse_iteration"))
    numbers = [int(i) for i in found if isinstance(i, (int, float)) and math.isfinite(i)]
    return min(numbers, default=None)


def _overrides(job: Path) -> dict[str, str]:
    path = job / ".hydra" / "overrides.yaml"
    # read as text, never resolved: an interpolation in a job's overrides is not evaluated by a report
    items = OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.is_file() else []
    parsed = {}
    for item in items or []:
        key, _, value = str(item).lstrip("+~").partition("=")
        parsed[key] = value
    return parsed


def find_runs(sweep: Path, progress: Callable[[int, int], None] | None = None) -> list[Run]:
    """Every job folder under ``sweep`` (one holding .hydra/ or results.json), labelled by what varies (where and
    how a run ran, e.g. ``data.root`` or ``trainer.enable_progress_bar``, is not a configuration).
    ``progress`` is told (folders read, folders found) after each folder: a large sweep takes a while."""
    jobs = sorted({p.parent for p in sweep.rglob(RESULTS_NAME)} | {p.parent for p in sweep.rglob(".hydra")})
    runs, damaged = [], set()
    for done, job in enumerate(jobs, 1):
        problem = RunResults.problem(job)
        try:
            overrides = _overrides(job)
        except Exception as exc:  # noqa: BLE001 - a damaged overrides.yaml: the run is listed, not the report lost
            overrides, problem = {}, f".hydra/overrides.yaml unreadable ({type(exc).__name__})"
            damaged.add(job)
        results = RunResults.load(job) if problem in (None, "no results.json") else None
        runs.append(Run(job, overrides, results, problem=None if problem == "no results.json" else problem))
        if progress:
            progress(done, len(jobs))
    # what varies, over the runs whose overrides could be read (a damaged one would make every key look varied)
    readable = [r for r in runs if r.path not in damaged]
    keys = sorted({k for r in readable for k in r.overrides if k not in NOT_CONFIGURATION and not is_where_how(k)})
    varying = [k for k in keys if len({r.overrides.get(k) for r in readable}) > 1]
    for run in runs:
        fallback = UNREADABLE if run.path in damaged else "(default)"
        run.varying = {k: run.overrides.get(k, fallback) for k in varying}
        run.label = " ".join(f"{k}={v}" for k, v in run.varying.items()) or "(one configuration)"
    return runs


MECHANISMS = {  # name in the report -> how to read it from a run's results.json
    "G dead-unit share": ("diagnostics", "G_dead"),
    "G saturated share": ("diagnostics", "G_saturated"),
    "D dead-unit share": ("diagnostics", "D_dead"),
    "D saturated share": ("diagnostics", "D_saturated"),
    "G Jacobian log condition number": ("latest", "jacobian_log_cond_mean"),
    "D unit entropy (fake)": ("diagnostics", "D_unit_entropy_fake"),
    "D unit entropy (real)": ("diagnostics", "D_unit_entropy_real"),
    "D pattern similarity (fake)": ("diagnostics", "D_pattern_similarity_fake"),
    "D input-gradient norm (fake)": ("diagnostics", "D_grad_norm_fake"),
    "D input-gradient norm (real)": ("diagnostics", "D_grad_norm_real"),
    "D learning-signal diversity": ("diagnostics", "D_grad_diversity"),
}


def mechanism_values(run: Run) -> dict[str, float]:
    """A run's mechanism measurements (NaN when it has none): its last diagnostics probe, and G's Jacobian
    conditioning at its latest evaluation (or at the last probe)."""
    data = run.results.data if run.results else {}
    sources = {"diagnostics": data.get("diagnostics") or {}, "latest": run.latest or {}}
    values = {}
    for name, (source, key) in MECHANISMS.items():
        value = sources[source].get(key)
        if value is None and key.startswith("jacobian"):
            value = sources["diagnostics"].get(f"G_{key}")
        values[name] = float(value) if isinstance(value, (int, float)) else math.nan
    return values


def tuned_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings an equal-budget study tunes, as the run's recorded config says it trained with them."""
    model = config.get("model", {})
    g, d = model.get("optimizer_g", {}), model.get("optimizer_d", {})
    return {
        "lr_g": g.get("lr"),
        "lr_d": d.get("lr"),
        "beta1": (g.get("betas") or [None])[0],
        "init": model.get("init", "default"),
        "loss": model.get("loss"),
    }


def latest_grid(run_dir: Path) -> Path | None:
    """The run's last main sample grid (``samples/epochNNNN.png``; with a weight average, not ``*_no_ema``)."""
    grids = sorted(p for p in (run_dir / "samples").glob("epoch*.png") if not p.stem.endswith("_no_ema"))
    return grids[-1] if grids else None
