"""A sweep member's folder name (and so its TensorBoard run name): the keys that say what the run is, short.

``3_g_act:elu+d_act:tanh+seed:1``: the job's number, then its overrides with ``model.`` dropped, the activations
first and the seed last; where and how it runs (``data.root``, ``trainer.accelerator``, ...) is left out, and so
is its budget (``trainer.max_steps``, ``eval.num_samples``, ...) unless the sweep varies it. ``:`` and ``+`` are
characters Hydra's override grammar takes unquoted, so a path into the folder works as ``ckpt_path=...`` as it is.

A sweep folder made before these names (Hydra's ``override_dirname``, keys sorted) keeps its folders: when the
job's old-style folder exists, that is its folder, so the study resume finds every run it started.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf


def safe_dirname(text: str, limit: int = 200) -> str:
    """A job's overrides as one folder name (Hydra's ``override_dirname``, written ``key:value+key:value``).

    Only characters Hydra's override grammar takes unquoted remain, so a path into the folder can be passed back
    as ``ckpt_path=...`` as it is: lists lose their brackets (``[32,32]`` -> ``32-32``), anything else odd becomes
    ``-``; a name over ``limit`` characters is cut and ends in a short hash of the whole.
    """
    name = re.sub(r"\[([^\]]*)\]", lambda m: m.group(1).replace(",", "-"), str(text))
    name = re.sub(r"[^A-Za-z0-9_.:@+%-]", "-", name) or "defaults"
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]  # stable: the same job gets the same folder every time
    return name if len(name) <= limit else f"{name[: limit - 9]}@{digest}"


# Where and how a run runs, not what it is: never in a name (nor in the old names: conf/train.yaml's exclude_keys).
WHERE_HOW = frozenset(
    {
        "data.root",
        "data.download",
        "data.num_workers",
        "ckpt_path",
        "run_dir",
        "experiment",
        "hparams_search",
        "debug",
        "logger",
        "tuning.best_from",
        "float32_matmul_precision",
        "cuda_graphs",
        "trainer.accelerator",
        "trainer.devices",
        "trainer.enable_progress_bar",
        "trainer.enable_model_summary",
        "trainer.enable_checkpointing",
    }
)
WHERE_HOW_PREFIXES = ("hydra.", "hydra/", "logger.")
# How long and how closely a run is watched: in a name only when the sweep varies it.
BUDGET_PREFIXES = ("trainer.", "trainer", "eval.", "diag.", "callbacks.")
# What a reader looks for first; everything else keeps the command line's order, the seeds come last.
FIRST = ("g_act", "g_out_act", "d_act", "d_out_act", "act", "activation", "loss", "stability", "init")
LAST = ("seed", "data.seed")


def short_key(key: str) -> str:
    """``model.g_act`` -> ``g_act``: the model's settings are what a run is, the prefix says nothing."""
    return key.removeprefix("model.")


def is_where_how(key: str) -> bool:
    """Where or how a run runs (its data folder, device, launcher, logger, ...): never what the run is."""
    return key in WHERE_HOW or key.startswith(WHERE_HOW_PREFIXES)


def _is_budget(key: str) -> bool:
    return key == "trainer" or key.startswith(BUDGET_PREFIXES)


@functools.lru_cache(maxsize=8)
def swept_keys(sweep_dir: str) -> frozenset[str]:
    """The keys a sweep varies: its command line's sweep overrides and its sweeper's params, read from the
    ``multirun.yaml`` Hydra's sweeper writes before the first job (empty when there is none). Read as text, never
    resolved: an interpolation in the file is not evaluated."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return frozenset()
    try:
        hydra = OmegaConf.to_container(OmegaConf.load(path), resolve=False).get("hydra") or {}
        task = [str(o) for o in (hydra.get("overrides") or {}).get("task") or []]
        params = (hydra.get("sweeper") or {}).get("params") or {}
        overrides = OverridesParser.create().parse_overrides(task)
    except Exception:  # noqa: BLE001 - an unreadable multirun.yaml only costs the budget keys their place
        return frozenset()
    return frozenset(
        [o.key_or_group for o in overrides if o.is_sweep_override()] + [str(k).lstrip("+~") for k in params]
    )


def named_overrides(overrides: Sequence[str], swept: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """(key, value) of the overrides that say what the run is, in the command line's order: not where or how it
    runs, and its budget only when the sweep varies it."""
    parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides])
    return [
        (o.key_or_group, o.get_value_element_as_str())
        for o in parsed
        if not is_where_how(o.key_or_group) and (o.key_or_group in swept or not _is_budget(o.key_or_group))
    ]


def run_name(overrides: Sequence[str], swept: frozenset[str] = frozenset()) -> str:
    """The name of the run these overrides make (without the job's number), ``defaults`` when none is kept."""
    kept = [(short_key(key), value) for key, value in named_overrides(overrides, swept)]

    def rank(item: tuple[int, tuple[str, str]]) -> tuple[int, int]:
        position, (key, _) = item
        if key in FIRST:
            return (0, FIRST.index(key))
        return (2, LAST.index(key)) if key in LAST else (1, position)

    ordered = [pair for _, pair in sorted(enumerate(kept), key=rank)]
    return safe_dirname("+".join(f"{k}:{v}" for k, v in ordered) or "defaults")


def run_subdir(sweep_dir: Any, num: Any, old_dirname: Any, overrides: Any) -> str:
    """``hydra.sweep.subdir``: ``NUM_NAME`` (``run_name``), or the job's folder from before these names when the
    sweep folder already holds it (``NUM_`` + Hydra's ``override_dirname``)."""
    old = f"{num}_{safe_dirname(str(old_dirname))}"
    if (Path(str(sweep_dir)) / old).is_dir():
        return old
    task = list(overrides) if overrides is not None else []
    return f"{num}_{run_name(task, swept_keys(str(Path(str(sweep_dir)).resolve())))}"


# The settings that define a run, as TensorBoard's HPARAMS columns (in this order), beside whatever its command
# line names (``named_overrides``); the stabilizers in one column, those switched on.
HPARAM_KEYS = (
    "model.g_act",
    "model.d_act",
    "model.g_out_act",
    "model.d_out_act",
    "model.loss",
    "model.init",
    "model.optimizer_g.lr",
    "model.optimizer_d.lr",
    "model.optimizer_g.betas",
    "model.optimizer_d.betas",
    "seed",
)
STABILIZERS_OFF = {
    "r1_weight": 0.0,
    "r2_weight": 0.0,
    "bre_weight": 0.0,
    "d_spectral_norm": False,
    "g_norm": "none",
    "d_norm": "none",
    "label_smoothing": 0.0,
    "instance_noise": 0.0,
    "d_minibatch_std": False,
    "g_ema": False,
    "augment": None,
}


def _hparam_value(value: Any) -> bool | int | float | str:
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def stabilizers(model: dict[str, Any]) -> str:
    """The stabilizers a model config switches on, e.g. ``r1_weight=1.0, d_spectral_norm`` (``none``)."""
    on = []
    for key, off in STABILIZERS_OFF.items():
        value = model.get(key, off)
        if value in (off, "none", [], None) or (key == "augment" and not value):
            continue
        on.append(key if value is True else f"{key}={value}")
    return ", ".join(on) or "none"


def run_hparams(config: dict[str, Any], named: Sequence[Sequence[str]] = ()) -> dict[str, bool | int | float | str]:
    """The few settings that define a run, for TensorBoard's HPARAMS tab: ``HPARAM_KEYS``, the stabilizers switched
    on, and each (key, value) of ``named`` (``named_overrides``: what the sweep varies; a config group's choice,
    such as ``stability``, by its name), keyed ``model/g_act`` as TensorBoard groups them."""
    chosen: dict[str, bool | int | float | str] = {}
    plain = OmegaConf.create(config)
    named_values = {str(key): str(value) for key, value in named}
    for key in (*HPARAM_KEYS, *named_values):
        value = OmegaConf.select(plain, key, default=None, throw_on_missing=False)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        if key in named_values and (value is None or isinstance(value, dict)):  # a config group's choice
            value = named_values[key]  # (stability=r1, trainer=gpu): its name, not its keys
        if value is not None:
            chosen[key.replace(".", "/")] = _hparam_value(value)
        if key == "model.loss":
            chosen["model/stabilizers"] = stabilizers(config.get("model") or {})
    return chosen
