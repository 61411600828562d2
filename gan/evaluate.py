"""``python -m gan.evaluate ckpt_path=PATH data.root=ROOT``: the lab's sample-quality metrics for a checkpoint.

Draws ``num_samples`` samples from the checkpoint's generator (the same evaluation noise as training uses by
default) and prints the metrics of ``gan.eval.metrics``, the fixed-noise grid's diversity and the collapse verdict
(as a training run's evaluation gives it) as one JSON object on stdout, and the verdict beside the fid on stderr.
``evaluator=strided`` scores under the second feature space (``gan.eval.classifier.EVALUATORS``; trained and cached
on first use, as the first); ``score_checkpoint`` does the same from Python. An evaluation of ``PROGRESS_MIN_IMAGES``
samples or more says how far it has come on stderr (samples generated,
featurized, then the metrics): 10,000 samples take 5 to 15 s on 2 CPU cores, more for a large generator or a
busy machine.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from gan.errors import ConfigError, check_fraction, exits_on_error
from gan.eval.classifier import PROGRESS_MIN_IMAGES, Progress, architecture, load_evaluator
from gan.eval.metrics import K_NEAREST, collapse_verdict, diversity
from gan.eval.sampling import draw
from gan.runs.checkpoints import check_sampling_args, checked_ema, finite_samples, load_generator
from gan.runs.schema import CONF_DIR


def run(cfg: DictConfig) -> dict[str, float]:
    arch = cfg.get("evaluator", "cnn")
    architecture(arch, "evaluator")  # an unknown one is refused before anything is read
    check_sampling_args(cfg, min_samples=K_NEAREST + 1)
    min_accuracy = check_fraction("min_evaluator_accuracy", cfg.min_evaluator_accuracy, "0.99 is usual")
    module = load_generator(cfg.ckpt_path, cfg.device)
    evaluator = load_evaluator(cfg.data.root, min_accuracy=min_accuracy, arch=arch)
    start = time.perf_counter()
    ema = checked_ema(module, cfg)
    num_samples = int(cfg.num_samples)
    generator = "weight average" if module.sampling_generator(ema) is not module.generator else "trained"
    progress = Progress("evaluate", enabled=num_samples >= PROGRESS_MIN_IMAGES)
    progress.say(f"scoring {num_samples} samples of the {generator} generator of {cfg.ckpt_path}")
    samples = finite_samples(draw(module, num_samples, int(cfg.seed), ema=ema, progress=progress), cfg.ckpt_path)
    metrics = evaluator.score(samples, module.data_range, progress=progress)
    # the verdict as training gives it: the classes covered and the fixed-noise grid's diversity
    grid = module.sample(module.fixed_noise, ema=ema)[0]
    grid_features, _ = evaluator.embed(grid, module.data_range)
    metrics["diversity"] = diversity(grid_features, evaluator.test_features.cpu())
    progress.finish()
    verdict = collapse_verdict(metrics["modes"], metrics["diversity"])
    result = {
        "verdict": verdict,
        **{k: round(v, 5) for k, v in metrics.items()},
        "num_samples": num_samples,
        "generator": generator,
        "evaluator": arch,
        "eval_s": round(time.perf_counter() - start, 2),
        "ckpt_path": str(cfg.ckpt_path),
    }
    print(json.dumps(result))
    print(f"Verdict: {verdict}, fid {metrics['fid']:.3g} ({num_samples} samples of {cfg.ckpt_path})", file=sys.stderr)
    return result


def score_checkpoint(ckpt_path: str | Path, data_root: str | Path, evaluator: str = "cnn", **settings: Any) -> dict:
    """``gan.evaluate``'s result for one checkpoint, from Python: e.g. each run of a study re-scored under the second
    feature space (``evaluator="strided"``), then ``gan.eval.metrics.ranking_agreement`` of the two fid lists.
    ``settings`` are gan.evaluate's other keys (``num_samples``, ``seed``, ``device``, ``ema``, ...)."""
    cfg = OmegaConf.load(Path(CONF_DIR) / "evaluate.yaml")
    for key in ("hydra", "defaults"):
        cfg.pop(key, None)
    unknown = sorted(set(settings) - set(cfg) - {"ckpt_path", "evaluator"})
    if unknown:
        known = ", ".join(k for k in cfg if k not in ("ckpt_path", "evaluator", "data"))
        raise ConfigError(f"score_checkpoint: unknown setting(s) {', '.join(unknown)}; gan.evaluate's are {known}.")
    merged = OmegaConf.merge(cfg, {"ckpt_path": str(ckpt_path), "evaluator": evaluator, **settings})
    merged.data.root = str(data_root)
    return run(merged)


# An absolute config path: the console script (gan-evaluate) imports this module by name, and Hydra reads a relative
# path from a named module as a package (pkg://conf), which conf/ is not.
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with exits_on_error():
        run(cfg)


if __name__ == "__main__":
    main()
