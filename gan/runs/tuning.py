"""Equal-budget tuning: every configuration of a study gets the same k hyperparameter draws (a paired design:
draw j is the same learning rates, Adam beta1, initialization and, when asked, loss for every configuration).

The draws are a pure function of the ``tuning`` config node: draw j's value of each tuned setting comes from its
own NumPy stream seeded by ``(tuning.seed, j, setting)``, so it never depends on k, on which configuration asks,
on the other settings tuned, or on the order jobs run in; raising k keeps draws 1..k and adds new ones. Draw 0 is
the baseline: the lab's defaults (Adam 2e-4, beta1 0.5, ``default`` init, the default loss), the setting every
earlier result of the lab used, for the ranking that Kendall's tau compares with.

A study config reads the draws through the ``tuning`` resolver (``model.optimizer_g.lr: ${tuning:lr_g}``; see
``conf/experiment/tuning_budget.yaml``), so the composed config of each job holds the values it trains with. The
confirmation (``conf/experiment/tuning_confirm.yaml``) reads ``${tuning_best:lr_g}``: each configuration's best
draw, as ``gan.report`` recorded it in the study's ``best_draws.json`` (a finished study's only, matched by the
values of the settings the study varied, after checking that the job shares the study's other settings).
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from gan.errors import ConfigError
from gan.model.init import INIT_SCHEMES
from gan.model.losses import LOSSES
from gan.model.spec import ADAM, default

BEST_DRAWS = "best_draws.json"  # written by gan.report into a tuning study's folder
RANGES = ("lr_g", "lr_d")  # log-uniform
CHOICES = {"beta1": None, "init": INIT_SCHEMES, "loss": tuple(LOSSES)}  # uniform over the listed values
TUNED = (*RANGES, *CHOICES)


def baseline() -> dict[str, Any]:
    """Draw 0: the lab's defaults for every tuned setting."""
    return {
        "lr_g": float(ADAM["lr"]),
        "lr_d": float(ADAM["lr"]),
        "beta1": float(ADAM["betas"][0]),
        "init": default("init"),
        "loss": default("loss"),
    }


def _check_draws(draws: Any) -> None:
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ConfigError(f"tuning.draws must be a positive integer (k, the draws per configuration), got {draws!r}.")


def check_tuning(tuning: Mapping[str, Any]) -> None:
    """Refuse a tuning node that cannot draw: k < 1, an empty or non-positive range, a beta1 outside [0, 1), an
    unknown init or loss, a draw index outside 0..k; each message names the key, the value and what is valid."""
    draws = tuning.get("draws")
    _check_draws(draws)
    for key in RANGES:
        bounds = list(tuning.get(key) or [])
        ok = len(bounds) == 2 and all(isinstance(b, (int, float)) and math.isfinite(b) for b in bounds)
        if not ok or not 0 < bounds[0] <= bounds[1]:
            raise ConfigError(
                f"tuning.{key}={bounds!r} is not a range to draw from: it must be [low, high] with 0 < low <= high "
                f"(a learning rate, drawn log-uniformly), e.g. [2e-5, 2e-3]."
            )
    for key, valid in CHOICES.items():
        values = tuning.get(key)
        if values is None and key == "loss":
            continue  # the loss is tuned only when asked
        values = list(values or [])
        if not values:
            raise ConfigError(f"tuning.{key} must list at least one value to draw from, got {values!r}.")
        for value in values:
            bad = not (isinstance(value, (int, float)) and 0 <= value < 1) if valid is None else value not in valid
            if bad:
                allowed = "numbers in [0, 1) (Adam's beta1)" if valid is None else ", ".join(valid)
                raise ConfigError(f"tuning.{key} holds {value!r}. Valid choices: {allowed}.")
    seed = tuning.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"tuning.seed must be an integer from 0 to 2**32 - 1 (the sampler's seed), got {seed!r}.")
    draw = tuning.get("draw")
    if draw is not None and not (isinstance(draw, int) and 0 <= draw <= draws):
        raise ConfigError(
            f"tuning.draw={draw!r} is not a draw of this study: 0 (the baseline, the lab's defaults) or 1..{draws} "
            f"(tuning.draws={draws})."
        )


def _stream(seed: int, draw: int, name: str) -> np.random.Generator:
    """Setting ``name``'s own stream for draw ``draw`` (negative: a block of balanced choices)."""
    return np.random.default_rng([int(seed), int(draw) % 2**32, zlib.crc32(name.encode())])


def draw_settings(tuning: Mapping[str, Any], draw: int) -> dict[str, Any]:
    """Draw ``draw``'s value of every tuned setting (draw 0: ``baseline()``). Learning rates: log-uniform, to 4
    significant digits (readable tables). Choices (beta1, init, loss): balanced jointly, so that a small k still
    compares them and no choice is confounded with another: with M combinations of the listed options (2 x 2 = 4
    by default), draws 1..M hold each combination once in a random order, draws M+1..2M again, and so on."""
    values = baseline()
    if draw == 0:
        return values
    for key in RANGES:
        low, high = (float(b) for b in tuning[key])
        value = math.exp(_stream(tuning["seed"], draw, key).uniform(math.log(low), math.log(high)))
        values[key] = float(f"{value:.4g}")
    choices = [(key, list(tuning[key])) for key in CHOICES if tuning.get(key) is not None]
    combinations = list(itertools.product(*(options for _, options in choices)))
    block, position = divmod(draw - 1, len(combinations))
    picked = combinations[int(_stream(tuning["seed"], -1 - block, "choices").permutation(len(combinations))[position])]
    for (key, _), value in zip(choices, picked, strict=True):
        values[key] = float(value) if key == "beta1" else str(value)
    return values


# Where the tuned settings live in a job's config: the study's fixed settings leave them out (they are the draws').
TUNED_PATHS = (
    "model.optimizer_g.lr",
    "model.optimizer_g.betas",
    "model.optimizer_d.lr",
    "model.optimizer_d.betas",
    "model.init",
    "model.loss",
)
# What a configuration is made of, beside the settings a study varies: these, read as values.
FIXED_ROOTS = ("model", "data.train_size", "data.subset_seed", "data.augment")


def flat_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """A run's (resolved) config as dotted paths -> values, for ``FIXED_ROOTS`` minus the tuned settings, the seed's
    shadow (``model.fixed_noise_seed``) and the builder's name: what a confirmation must share with its study."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, sub in value.items():
                walk(f"{prefix}.{key}", sub)
        else:
            out[prefix] = value

    for root in FIXED_ROOTS:
        node: Any = config
        for part in root.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        walk(root, node)
    skipped = (*TUNED_PATHS, "model.fixed_noise_seed", "model._target_")
    return {k: v for k, v in out.items() if not any(k == s or k.startswith(f"{s}.") for s in skipped)}


def same_value(a: Any, b: Any) -> bool:
    """Config values compared as values: 1 == 1.0, a list to a list; a string to a string."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or str(a).lower() == str(b).lower()
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _value(root: DictConfig, key: str) -> Any:
    node = OmegaConf.select(root, key)
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def read_best_draws(source: str) -> tuple[Path, dict[str, Any]]:
    """The best-draws file of a tuning study (its folder, or the file), checked to be a finished study's."""
    path = Path(source)
    path = path if path.suffix == ".json" else path / BEST_DRAWS
    try:
        data = json.loads(path.read_text())
        entries = data["configurations"]
        expected = int(data["draws_per_configuration"])
        unfinished = [f"{e['label']} ({e['draws_done']} of {expected})" for e in entries if e["draws_done"] < expected]
        for entry in entries:
            entry["configuration"], entry["draw"]  # noqa: B018 - the keys every entry must have
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise ConfigError(
            f"tuning.best_from={source!r}: cannot read {path} ({type(exc).__name__}: {exc}). It is written by "
            f"`python -m gan.report STUDY_DIR` on a finished tuning study; run that first."
        ) from None
    if unfinished:
        raise ConfigError(
            f"tuning.best_from={source!r}: the study is not finished: {', '.join(unfinished)} draws done. Its best "
            f"draws may still change: run the study's command again to finish it, then `python -m gan.report` on it."
        )
    return path, data


def _best_draw(root: DictConfig, source: str) -> dict[str, Any]:
    """This job's configuration's best draw, from ``source`` (a tuning study's folder or its best_draws.json): the
    entry whose varying settings equal this job's, after checking that the job shares the study's fixed ones."""
    path, data = read_best_draws(source)
    fixed = data.get("fixed") or {}
    differ = [
        f"{k}: study {v!r}, this job {_value(root, k)!r}"
        for k, v in fixed.items()
        if not same_value(_value(root, k), v)
    ]
    if differ:
        raise ConfigError(
            f"tuning.best_from={source!r}: this job is not a configuration of that study: "
            + "; ".join(differ[:5])
            + ". Give the confirmation the study's settings (the same overrides and presets, its grid aside)."
        )
    entries = data["configurations"]
    for entry in entries:
        if all(same_value(_value(root, key), value) for key, value in entry["configuration"].items()):
            if entry["draw"] is None:
                raise ConfigError(
                    f"tuning.best_from={source!r}: {entry['label']} has no scored draw in the study (every draw "
                    "diverged or failed), so there is no best draw to confirm: leave it out of the grid."
                )
            return entry["settings"]
    known = "; ".join(e["label"] for e in entries)
    raise ConfigError(
        f"tuning.best_from={source!r} has no best draw for this job's configuration. The study has: {known}."
    )


def resolve(name: str, *, _root_: DictConfig) -> Any:
    """The ``tuning`` resolver: setting ``name`` of this job's draw (the baseline's when it has none)."""
    _check_name(name, "tuning")
    tuning = OmegaConf.to_container(_root_.tuning, resolve=True)
    check_tuning(tuning)
    return draw_settings(tuning, int(tuning.get("draw") or 0))[name]


def resolve_best(name: str, *, _root_: DictConfig) -> Any:
    """The ``tuning_best`` resolver: setting ``name`` of this job's configuration's best draw in the study
    ``tuning.best_from``."""
    _check_name(name, "tuning_best")
    source = OmegaConf.select(_root_, "tuning.best_from")
    if not source:
        raise ConfigError(NO_STUDY)
    return _best_draw(_root_, str(source))[name]


NO_STUDY = (
    "tuning.best_from is not set: this config (experiment=tuning_confirm) trains each configuration at its best "
    "draw in a tuning study. Give tuning.best_from=STUDY_DIR, the study's folder, where `python -m gan.report "
    "STUDY_DIR` wrote best_draws.json."
)


def _check_name(name: str, resolver: str) -> None:
    if name not in TUNED:
        raise ConfigError(f"${{{resolver}:{name}}}: {name!r} is not a tuned setting. Valid: {', '.join(TUNED)}.")


def check_job(cfg: DictConfig) -> None:
    """A job's tuning node checked before anything else reads the config (a resolver's own error would reach the
    user wrapped in OmegaConf's): its values; for a confirmation, that ``best_from`` is given and holds this
    configuration."""
    check_tuning(OmegaConf.to_container(cfg.tuning, resolve=True))
    raw = json.dumps(OmegaConf.to_container(cfg.model, resolve=False), default=str)
    if "${tuning_best:" in raw:
        if not cfg.tuning.best_from:
            raise ConfigError(NO_STUDY)
        _best_draw(cfg, str(cfg.tuning.best_from))


def draw_count(draws: Any) -> int:
    """The ``tuning_draws`` resolver for a sweep over every draw: k checked, plus the baseline (draw 0).

    Hydra's sweeper resolves it before any job exists, where an exception reaches the user as a page of
    traceback: a bad k ends the command here, with the lab's one-paragraph message and exit code 2."""
    try:
        _check_draws(draws)
    except ConfigError as exc:
        print(f"error: {exc} Nothing was run.", file=sys.stderr)
        raise SystemExit(2) from None
    return int(draws) + 1


def register_resolvers() -> None:
    """Make ``${tuning:NAME}``, ``${tuning_best:NAME}`` and ``${tuning_draws:K}`` known to OmegaConf
    (idempotent)."""
    if not OmegaConf.has_resolver("tuning"):
        OmegaConf.register_new_resolver("tuning", resolve)
    if not OmegaConf.has_resolver("tuning_best"):
        OmegaConf.register_new_resolver("tuning_best", resolve_best)
    if not OmegaConf.has_resolver("tuning_draws"):
        OmegaConf.register_new_resolver("tuning_draws", draw_count)
