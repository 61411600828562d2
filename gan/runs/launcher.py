"""The packed launcher: a Hydra sweep's jobs grouped into packs of compatible configs, each pack trained as one
population in one process (``gan.runs.fit.train_pack``).

    python -m gan.train -m experiment=activation_grid hydra/launcher=packed             # packs in this process
    python -m gan.train -m ... hydra/launcher=packed_slurm                                # one SLURM job (GPU) per pack
    python -m gan.train -m ... hydra/launcher=packed hydra.launcher.max_members=32        # packs of at most 32

Every job first goes through Hydra's own job setup (its folder) and ``gan.runs.plan.prepare`` (all values checked,
resume settled). A bad value in any job, or a job folder another live run holds, stops the sweep before any pack
starts, naming each bad job, with nothing written; then each job to train gets its folder's lock and its ``.hydra/``
(the composed config and overrides), and a finished job is skipped with its folder left as it is. Jobs whose
configs agree on what a pack shares (``gan.runs.packing.pack_key``) train together, at most ``max_members`` at a
time; each member writes its own run directory, and each job returns its final fid to the sweeper (NaN when it has
none), so Optuna's batches of ``n_jobs`` trials train as packs too.

Hydra finds launchers only in the ``hydra_plugins`` namespace: ``hydra_plugins/gan_packed_launcher`` names the
classes there and registers their configs (``register_configs``); the code is here.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from gan.errors import Interrupted, LabError, RunFailed

log = logging.getLogger(__name__)


def prepare_job(cfg: DictConfig) -> tuple[Any, dict[str, str]]:
    """Hydra's task for one job of a packed sweep: check it and return its plan (``gan.runs.plan.prepare``), with
    the job's state read here, where Hydra runs the job, and its ``.hydra/`` files (written once every job of the
    sweep is accepted)."""
    # Imported here, not at the top (here and below): Hydra imports every launcher plugin when it scans for plugins,
    # and torch + Lightning would add seconds to the start of every command.
    from gan.runs.plan import JobState, prepare
    from gan.runs.rundir import hydra_record

    record = hydra_record(cfg)  # before the checks resolve cfg
    return prepare(cfg, JobState.from_hydra()), record


def run_pack(plans: Sequence[Any]) -> list[dict[str, Any]]:
    """Train one pack (in this process, or as a cluster job); a pack that cannot run reports it per member."""
    from gan.runs.fit import train_pack  # lazily, as above

    try:
        return train_pack(plans)
    except Interrupted as exc:  # a signal stops the sweep (each member's last.ckpt and results.json are written)
        print(f"{', '.join(p.job for p in plans)}: run {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except RunFailed as exc:  # a pack of one that diverged, or a pack that failed: recorded in the results.json
        print(f"{', '.join(p.job for p in plans)}: run {exc}", file=sys.stderr)
        return [{"status": exc.status, "reason": str(exc)} for _ in plans]
    except LabError as exc:  # refused before it trained: what its members wrote is taken back
        from gan.runs.rundir import withdraw_run_dir

        print(f"error: {', '.join(p.job for p in plans)}: {exc}", file=sys.stderr)
        for plan in plans:
            withdraw_run_dir(plan.run_dir)
        return [{"status": "refused", "reason": str(exc)} for _ in plans]


class PackedLauncherBase(Launcher):
    """Groups the sweep's jobs into packs and trains them; subclasses choose where a pack runs (``run_packs``)."""

    _HOLDS_LOCKS = True  # the packs train in this process, which keeps its jobs' folders from their claim on

    def __init__(self, max_members: Optional[int] = None, **executor: Any) -> None:
        self.max_members = int(max_members) if max_members else None
        self.executor = {
            k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in executor.items()
        }
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from gan.runs.packing import group_packs, pack_key  # lazily: see prepare_job
        from gan.runs.rundir import note_refused, release_run_dir, write_hydra_record

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        returns = [self._prepare(initial_job_idx + i, overrides) for i, overrides in enumerate(job_overrides)]
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        bad = [(r, r._return_value) for r in returns if r.status != JobStatus.COMPLETED]
        if bad:
            self._refuse(returns, bad)
        plans = [r._return_value[0] for r in returns]
        todo = [i for i, p in enumerate(plans) if p.done is None]
        busy = self._claim([plans[i] for i in todo], [returns[i] for i in todo])
        if busy:
            self._refuse(returns, busy)
        for i in todo:  # each job's .hydra/, now that every job of the sweep is accepted
            write_hydra_record(plans[i].run_dir, returns[i]._return_value[1])
        if not self._HOLDS_LOCKS:
            for i in todo:  # each pack's own process takes its members' folders
                release_run_dir(plans[i].run_dir)
        packs = [
            [todo[j] for j in pack]
            for pack in group_packs([pack_key(plans[i].config, plans[i].resume_step) for i in todo], self.max_members)
        ]
        for plan in plans:
            if plan.done is not None:
                log.info(plan.skipped_line())
        log.info(
            f"Training {len(todo)} of {len(plans)} jobs in {len(packs)} pack(s): "
            + "; ".join(f"{len(p)} members" for p in packs)
        )
        results = self.run_packs([[plans[i] for i in pack] for pack in packs])
        summaries: dict[int, dict[str, Any]] = {}
        for pack, pack_results in zip(packs, results, strict=True):
            summaries.update(zip(pack, pack_results, strict=True))
        for i, summary in sorted(summaries.items()):
            if summary.get("status") == "refused":  # said by run_pack; the sweep ends with exit status 2
                note_refused(plans[i].job)
        for i, (ret, plan) in enumerate(zip(returns, plans, strict=True)):
            summary = summaries.get(i) or ({"final_metrics": (plan.done or {}).get("final") or {}})
            fid = (summary.get("final_metrics") or {}).get("fid", math.nan)
            ret.return_value = math.nan if fid is None else float(fid)
            ret.status = JobStatus.COMPLETED
        return returns

    def _claim(self, plans: Sequence[Any], returns: Sequence[JobReturn]) -> list[tuple[JobReturn, Exception]]:
        """Take the folders of the jobs to train (no other run may write there from now on); the jobs whose folder a
        live run holds, each with its error (and then none is kept)."""
        from gan.runs.rundir import claim_run_dir, withdraw_run_dir  # lazily: see prepare_job

        busy = []
        for plan, ret in zip(plans, returns, strict=True):
            try:
                claim_run_dir(plan.run_dir)
            except LabError as exc:
                busy.append((ret, exc))
        if busy:
            for plan in plans:
                withdraw_run_dir(plan.run_dir)
        return busy

    def _refuse(self, returns: Sequence[JobReturn], bad: Sequence[tuple[JobReturn, Any]]) -> None:
        """A sweep with a bad job trains none: each bad job named with its error, every job's folder as it was (the
        empty folders Hydra made for them taken back), exit status 2."""
        from gan.runs.rundir import withdraw_run_dir  # lazily: see prepare_job

        for r, error in bad:
            job = f"job {r.hydra_cfg.hydra.job.num} ({' '.join(r.overrides) or 'no overrides'})"
            print(f"error: {error}" if str(error).startswith(job) else f"error: {job}: {error}", file=sys.stderr)
        for r in returns:
            withdraw_run_dir(r.hydra_cfg.hydra.runtime.output_dir)
        print(f"error: {len(bad)} of {len(returns)} jobs refused; no pack was started.", file=sys.stderr)
        sys.exit(2)

    def _prepare(self, idx: int, overrides: Sequence[str]) -> JobReturn:
        """Hydra's job setup (its folder) with ``prepare_job`` as the task: a plan and the job's ``.hydra/`` files,
        or the job's error."""
        assert self.config is not None and self.hydra_context is not None
        # the sweep's own logging again: the previous job's set-up left its train.log as the root's file handler
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
        return run_job(
            hydra_context=self.hydra_context,
            task_function=prepare_job,
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )

    def run_packs(self, packs: Sequence[Sequence[Any]]) -> list[list[dict[str, Any]]]:
        """Each pack in this process, one after another."""
        return [run_pack(pack) for pack in packs]


class PackedSubmititBase(PackedLauncherBase):
    """Each pack one job of submitit's executor (``_EXECUTOR``: ``slurm``, or ``local`` for tests), all submitted
    together as an array; the executor settings are hydra-submitit-launcher's."""

    _EXECUTOR = "abstract"
    _HOLDS_LOCKS = False

    def run_packs(self, packs: Sequence[Sequence[Any]]) -> list[list[dict[str, Any]]]:
        import submitit

        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        params = dict(self.executor)
        folder = params.pop("submitit_folder")
        init = (
            {f"{self._EXECUTOR}_max_num_timeout": params.pop("max_num_timeout")} if "max_num_timeout" in params else {}
        )
        executor = submitit.AutoExecutor(folder=folder, cluster=self._EXECUTOR, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})
        log.info(f"Submitting {len(packs)} pack(s) to submitit '{self._EXECUTOR}' (folder {folder})")
        jobs = executor.map_array(run_pack, list(packs))
        return [job.result() for job in jobs]


@dataclass
class PackedLauncherConf:
    _target_: str = "hydra_plugins.gan_packed_launcher.PackedLauncher"
    max_members: Optional[int] = None  # members per pack at most (null: every compatible job in one pack)


def register_configs(plugin_module: str) -> None:
    """``hydra/launcher=packed``, and with hydra-submitit-launcher installed ``packed_submitit_local`` and
    ``packed_submitit_slurm`` (its settings plus ``max_members``; ``conf/hydra/launcher/packed_slurm.yaml`` sets
    this lab's defaults on the latter)."""
    store = ConfigStore.instance()
    store.store(group="hydra/launcher", name="packed", node=PackedLauncherConf, provider="gan-activation-lab")
    try:
        from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
    except ImportError:  # the `sweep` extra is not installed: no cluster launchers
        return
    for name, base, cls in (
        ("packed_submitit_local", LocalQueueConf, "PackedLocalLauncher"),
        ("packed_submitit_slurm", SlurmQueueConf, "PackedSlurmLauncher"),
    ):
        node = make_dataclass(
            f"{cls}Conf",
            [
                ("_target_", str, field(default=f"{plugin_module}.{cls}")),
                ("max_members", Optional[int], field(default=None)),
            ],
            bases=(base,),
        )
        store.store(group="hydra/launcher", name=name, node=node, provider="gan-activation-lab")
