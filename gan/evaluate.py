"""``python -m gan.evaluate ckpt_path=PATH data.root=ROOT``: the lab's sample-quality metrics for a checkpoint.

Draws ``num_samples`` samples from the checkpoint's generator (the same evaluation noise as training uses by
default) and prints the metrics of ``gan.eval.metrics``, the fixed-noise grid's diversity and the collapse verdict
(as a training run's evaluation gives it) as one JSON object on stdout, and the verdict beside the fid on stderr.
An evaluation of ``PROGRESS_MIN_IMAGES`` samples or more says how far it has come on stderr (samples generated,
featurized, then the metrics): 10,000 samples take 5 to 15 s on 2 CPU cores, more for a large generator or a
busy machine.
"""

from __future__ import annotations

import json
import sys
import time

import hydra
from omegaconf import DictConfig

from gan.errors import check_fraction, exits_on_error
from gan.eval.classifier import PROGRESS_MIN_IMAGES, Progress, load_evaluator
from gan.eval.metrics import K_NEAREST, collapse_verdict, diversity
from gan.eval.sampling import draw
from gan.runs.checkpoints import check_sampling_args, checked_ema, finite_samples, load_generator
from gan.runs.schema import CONF_DIR


def run(cfg: DictConfig) -> dict[str, float]:
    check_sampling_args(cfg, min_samples=K_NEAREST + 1)
    min_accuracy = check_fraction("min_evaluator_accuracy", cfg.min_evaluator_accuracy, "0.99 is usual")
    module = load_generator(cfg.ckpt_path, cfg.device)
    evaluator = load_evaluator(cfg.data.root, min_accuracy=min_accuracy)
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
        "eval_s": round(time.perf_counter() - start, 2),
        "ckpt_path": str(cfg.ckpt_path),
    }
    print(json.dumps(result))
    print(f"Verdict: {verdict}, fid {metrics['fid']:.3g} ({num_samples} samples of {cfg.ckpt_path})", file=sys.stderr)
    return result


# An absolute config path: the console script (gan-evaluate) imports this module by name, and Hydra reads a relative
# path from a named module as a package (pkg://conf), which conf/ is not.
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with exits_on_error():
        run(cfg)


if __name__ == "__main__":
    main()
