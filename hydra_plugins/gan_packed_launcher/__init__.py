"""The lab's packed launchers, named where Hydra looks for launchers (the ``hydra_plugins`` namespace).

The code is ``gan.runs.launcher``; see it for what packing does. ``hydra/launcher=packed`` trains packs in this process,
``packed_slurm`` (or ``packed_submitit_slurm``) sends each pack to SLURM, ``packed_submitit_local`` to local
processes (tests).
"""

from gan.runs.launcher import PackedLauncherBase, PackedSubmititBase, register_configs


class PackedLauncher(PackedLauncherBase):
    """Packs trained one after another in this process."""


class PackedLocalLauncher(PackedSubmititBase):
    """Each pack a local submitit job (what the SLURM path runs, without a cluster)."""

    _EXECUTOR = "local"


class PackedSlurmLauncher(PackedSubmititBase):
    """Each pack one SLURM job."""

    _EXECUTOR = "slurm"


register_configs(__name__)
