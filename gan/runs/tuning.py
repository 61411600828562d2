"""Equal-budget tuning: every configuration of a study gets the same k hyperparameter draws (a paired design:
draw j is the same learning rates, Adam beta1, initialization and, when asked, loss for every configuration).

The draws are a pure function of the ``tuning`` config node: draw j's value of each tuned setting comes from its
own NumPy stream seeded by ``(tuning.seed, j, setting)``, so it never depends on k, on which configuration asks,
on the other settings tuned, or on the order jobs run in; raising k keeps draws 1..k and adds new ones. Draw 0 is
the baseline: the lab's defaults (Adam 2e-4, beta1 0.5, ``default`` init, the default loss), the setting every
earlier result of the lab used, for the ranking that Kendall's tau compares with.

A study config reads the draws through the ``tuning`` resolver (``model.optimizer_g.lr: ${tuning:lr_g}``; see
``conf/experiment/tuning_budget.yaml``), so the composed config of each job holds the values it trains with. With
``tuning.best_from`` set the resolver gives instead each configuration's best draw, as ``gan.report`` recorded it
in that study's ``best_draws.json`` (the confirmation step re-runs those over more seeds).
"""

from __future__ import annotations

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


def check_tuning(tuning: Mapping[str, Any]) -> None:
    """Refuse a tuning node that cannot draw: k < 1, an empty or non-positive range, a beta1 outside [0, 1), an
    unknown init or loss, a draw index outside 0..k; each message names the key, the value and what is valid."""
    draws = tuning.get("draws")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ConfigError(f"tuning.draws must be a positive integer (k, the draws per configuration), got {draws!r}.")
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
    significant digits (readable tables). Choices (beta1, init, loss): balanced, so that a small k still compares
    them: draws 1..m hold each of the m options once in a random order, draws m+1..2m again, and so on."""
    values = baseline()
    if draw == 0:
        return values
    for key in RANGES:
        low, high = (float(b) for b in tuning[key])
        values[key] = float(
            f"{math.exp(_stream(tuning['seed'], draw, key).uniform(math.log(low), math.log(high))):.4g}"
        )
    for key in CHOICES:
        options = tuning.get(key)
        if options is not None:  # balanced: each block of len(options) draws holds every option once, in a random order
            options = list(options)
            block, position = divmod(draw - 1, len(options))
            picked = options[int(_stream(tuning["seed"], -1 - block, key).permutation(len(options))[position])]
            values[key] = float(picked) if key == "beta1" else str(picked)
    return values


def _best_draw(root: DictConfig, source: str) -> dict[str, Any]:
    """This job's configuration's best draw, from ``source`` (a tuning study's folder or its best_draws.json)."""
    path = Path(source)
    path = path if path.suffix == ".json" else path / BEST_DRAWS
    try:
        entries = json.loads(path.read_text())["configurations"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"tuning.best_from={source!r}: cannot read {path} ({type(exc).__name__}). It is written by "
            f"`python -m gan.report STUDY_DIR` on a finished tuning study; run that first."
        ) from None
    for entry in entries:
        if all(str(OmegaConf.select(root, key)) == str(value) for key, value in entry["configuration"].items()):
            return entry["settings"]
    known = "; ".join(" ".join(f"{k}={v}" for k, v in e["configuration"].items()) for e in entries)
    raise ConfigError(
        f"tuning.best_from={source!r} has no best draw for this job's configuration. The study has: {known}."
    )


def resolve(name: str, *, _root_: DictConfig) -> Any:
    """The ``tuning`` resolver: setting ``name`` for this job (its draw's, its configuration's best draw's, or
    the baseline's when the job has no draw)."""
    if name not in TUNED:
        raise ConfigError(f"${{tuning:{name}}}: {name!r} is not a tuned setting. Valid: {', '.join(TUNED)}.")
    tuning = OmegaConf.to_container(_root_.tuning, resolve=True)
    if tuning.get("best_from"):
        return _best_draw(_root_, str(tuning["best_from"]))[name]
    check_tuning(tuning)
    return draw_settings(tuning, int(tuning.get("draw") or 0))[name]


def check_job(cfg: DictConfig) -> None:
    """A job's tuning node checked before anything else reads the config (a resolver's own error would reach the
    user wrapped in OmegaConf's): its values, and with ``best_from`` that the study holds this configuration."""
    tuning = OmegaConf.to_container(cfg.tuning, resolve=True)
    if tuning.get("best_from"):
        _best_draw(cfg, str(tuning["best_from"]))
    else:
        check_tuning(tuning)


def draw_count(draws: Any) -> int:
    """The ``tuning_draws`` resolver for a sweep over every draw: k checked, plus the baseline (draw 0).

    Hydra's sweeper resolves it before any job exists, where an exception reaches the user as a page of
    traceback: a bad k ends the command here, with the lab's one-paragraph message and exit code 2."""
    try:
        check_tuning({**_DEFAULTS, "draws": draws})
    except ConfigError as exc:
        print(f"error: {exc} Nothing was run.", file=sys.stderr)
        raise SystemExit(2) from None
    return int(draws) + 1


_DEFAULTS = {"draws": 8, "lr_g": [2e-5, 2e-3], "lr_d": [2e-5, 2e-3], "beta1": [0.0, 0.5], "init": list(INIT_SCHEMES)}


def register_resolvers() -> None:
    """Make ``${tuning:NAME}`` and ``${tuning_draws:K}`` known to OmegaConf (idempotent)."""
    if not OmegaConf.has_resolver("tuning"):
        OmegaConf.register_new_resolver("tuning", resolve)
    if not OmegaConf.has_resolver("tuning_draws"):
        OmegaConf.register_new_resolver("tuning_draws", draw_count)
