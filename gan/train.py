"""``python -m gan.train [overrides]`` trains one GAN; ``-m`` sweeps (Hydra multirun): the command.

The work is ``gan.runs`` (``plan``: check each job; ``fit``: train packs); the config is ``conf/train.yaml`` on
the typed schema of ``gan.runs.schema``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from gan.errors import Interrupted, LabError, RunFailed
from gan.runs.fit import train
from gan.runs.plan import JobState
from gan.runs.schema import CONF_DIR, register

register()  # the schema and the folder-name resolver, before Hydra composes


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")  # absolute: the gan-train script too
def main(cfg: DictConfig) -> float:
    """Returns the final fid (the objective a Hydra sweeper minimises); NaN when the run has none.

    In a multirun a job that fails reports and returns NaN, so that the sweep goes on with the next job.
    """
    job = JobState.from_hydra()  # read once, here at the entry, and passed down
    try:
        summary = train(cfg, job)
    except Interrupted as exc:  # the whole sweep stops too: the scheduler wants the process gone
        print(f"run {exc}; recorded in {Path(cfg.run_dir).resolve() / 'results.json'}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except RunFailed as exc:
        print(f"run {exc}; recorded in {Path(cfg.run_dir).resolve() / 'results.json'}", file=sys.stderr)
        if job.multirun:
            return math.nan
        sys.exit(1)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if job.multirun:
            return math.nan
        sys.exit(2)
    return summary.get("final_metrics", {}).get("fid", math.nan)


if __name__ == "__main__":
    main()
