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
from gan.runs.fit import train_pack
from gan.runs.plan import JobState, prepare
from gan.runs.rundir import claim_run_dir, hydra_record, note_refused, withdraw_run_dir, write_hydra_record
from gan.runs.schema import CONF_DIR, register

register()  # the schema and the folder-name resolver, before Hydra composes


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")  # absolute: the gan-train script too
def main(cfg: DictConfig) -> float:
    """Returns the final fid (the objective a Hydra sweeper minimises); NaN when the run has none.

    In a multirun a job that fails reports and returns NaN, so that the sweep goes on with the next job (a sweep
    with a refused job ends with exit status 2). A refused job writes nothing: its ``.hydra/`` is written only once
    it is checked and will train, and a finished job a study rerun skips is left as it is.
    """
    job = JobState.from_hydra()  # read once, here at the entry, and passed down
    record = hydra_record(cfg)  # the job's .hydra/ files, before the checks resolve cfg
    try:
        plan = prepare(cfg, job)
        if plan.done is None:
            claim_run_dir(plan.run_dir)  # held while it trains: no other run writes here meanwhile
            write_hydra_record(plan.run_dir, record)
        summary = train_pack([plan])[0]
    except Interrupted as exc:  # the whole sweep stops too: the scheduler wants the process gone
        print(f"run {str(exc).rstrip('.')}; {recorded(exc, cfg)}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except RunFailed as exc:
        print(f"run {str(exc).rstrip('.')}; {recorded(exc, cfg)}", file=sys.stderr)
        if job.multirun:
            return math.nan
        sys.exit(1)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        withdraw_run_dir(str(cfg.run_dir))  # what the job wrote before it was refused: its lock, its folder
        if job.multirun:
            note_refused(job.name)
            return math.nan
        sys.exit(2)
    return summary.get("final_metrics", {}).get("fid", math.nan)


def recorded(exc: RunFailed, cfg: DictConfig) -> str:
    """Where the run's end is recorded, or that it could not be (a full disk): never claimed when not written."""
    path = Path(cfg.run_dir).resolve() / "results.json"
    if exc.recorded:
        return f"recorded in {path}"
    return f"NOT recorded: {path} could not be written and still says running"


if __name__ == "__main__":
    main()
