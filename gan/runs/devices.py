"""Whether the accelerator a run asks for is here: checked where a run starts, before Hydra writes its folder.

Lightning finds out only when it builds the Trainer (``No supported gpu backend found!``), after the run folder,
its ``.hydra/`` and the data were prepared; the lab answers the same question first, with the fix.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.accelerators import AcceleratorRegistry

from gan.errors import ConfigError

# What each accelerator name needs, as a user would say it.
DEVICE_WORDS = {"cuda": "CUDA device (GPU)", "mps": "GPU of an Apple machine (MPS)", "xla": "TPU (XLA device)"}


# What this lab trains on: Lightning's names for a CPU or a GPU (``gpu`` and ``cuda`` alike; ``mps``: Apple's).
# Lightning registers others (``tpu``), which this lab's packed training has never run on.
LAB_ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


def accelerator_names() -> list[str]:
    """The values ``trainer.accelerator`` takes: Lightning's registered accelerators this lab trains on, ``auto``
    and ``gpu``."""
    return [name for name in LAB_ACCELERATORS if name in AcceleratorRegistry.available_accelerators() | {"auto", "gpu"}]


def trains_elsewhere(launcher_target: Any) -> bool:
    """Whether a sweep's launcher sends its jobs to other machines (SLURM through submitit): their devices, not
    this machine's, are the ones a job will use."""
    return "slurm" in str(launcher_target or "").lower()


def check_accelerator(accelerator: Any, here: bool = True) -> None:
    """A ConfigError unless ``accelerator`` is a known name whose device is visible to this process (``here``;
    for jobs that train on other machines only the name is checked): what was asked, what is missing, and
    ``trainer.accelerator=auto`` / ``cpu`` (or ``trainer=cpu``) as the fix."""
    name = str(accelerator)
    names = accelerator_names()
    if name in AcceleratorRegistry.available_accelerators() and name not in names:
        raise ConfigError(
            f"trainer.accelerator={name} is Lightning's, but this lab trains on a CPU or a GPU only; valid choices: "
            f"{', '.join(names)} (auto: a GPU when there is one, else the CPU). Nothing was written."
        )
    if name not in names:
        raise ConfigError(f"trainer.accelerator={name!r} is not known. Available names are: {', '.join(names)}.")
    registered = {"gpu": "cuda"}.get(name, name)
    if not here or registered == "auto" or AcceleratorRegistry[registered]["accelerator"].is_available():
        return
    device = DEVICE_WORDS.get(registered, f"{registered} device")
    hint = " (CUDA_VISIBLE_DEVICES may hide it, or torch may be a CPU build)" if registered == "cuda" else ""
    raise ConfigError(
        f"trainer.accelerator={name} asks for a {device}, but no {device} is visible on this machine{hint}. Use "
        f"trainer.accelerator=auto (a GPU when there is one, else the CPU) or trainer.accelerator=cpu (the presets: "
        f"trainer=cpu, trainer=gpu). Nothing was written."
    )
