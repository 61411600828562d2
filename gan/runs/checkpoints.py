"""Reading what the lab wrote: checkpoints (a run's, a pack member's) and the generator they hold.

Every checkpoint is read with ``weights_only=True`` (tensors and plain containers: loading one runs no code); a
file that is missing, unreadable or not this lab's is refused with one ``CheckpointError`` naming it.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from gan.errors import CheckpointError, ConfigError, check_count
from gan.model.module import GANModule


def read_checkpoint(path: str | Path, what: str = "ckpt_path") -> dict[str, Any]:
    """A checkpoint written by this lab (tensors and plain containers only: loaded with ``weights_only=True``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{what}={str(path)!r}: no such checkpoint file (looked at {path.resolve()}).")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's refusal of anything but tensors and plain containers
        why = "it holds objects other than tensors and plain containers (such a file can run code when loaded)"
        if "Weights only load failed" not in str(exc):
            why = f"it is damaged or not a torch file ({str(exc).splitlines()[0][:120]})"
        raise CheckpointError(
            f"{what}={str(path)!r} is not a readable checkpoint of this lab: {why}. It was not loaded; use a "
            f"checkpoint written by gan.train (RUN_DIR/checkpoints/*.ckpt)."
        ) from None
    except Exception as exc:  # noqa: BLE001 - unreadable or foreign file -> one clear message
        first = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise CheckpointError(
            f"{what}={str(path)!r} is not a readable checkpoint of this lab ({type(exc).__name__}: {first}); use a "
            f"checkpoint written by gan.train (RUN_DIR/checkpoints/*.ckpt)."
        ) from None
    if not isinstance(ckpt, dict) or "members" not in ckpt.get("hyper_parameters", {}):
        raise CheckpointError(
            f"{what}={str(path)!r} was not written by this lab's gan.train (no member hyperparameters)."
        )
    if len(ckpt["hyper_parameters"]["members"]) != 1:
        raise CheckpointError(f"{what}={str(path)!r} holds a pack, not one run's checkpoint.")
    return ckpt


def load_generator(ckpt_path: str | Path, device: str = "cpu") -> GANModule:
    """The trained GANModule (G, D, data range) from a gan.train checkpoint, in eval mode. A missing, unreadable or
    foreign file is refused with one ``CheckpointError`` (``read_checkpoint``), never a traceback."""
    path = Path(ckpt_path).expanduser()
    read_checkpoint(path)
    try:
        module = GANModule.load_from_checkpoint(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a lab checkpoint that does not rebuild -> one clear message
        raise CheckpointError(f"ckpt_path={str(ckpt_path)!r} does not rebuild a generator of this lab: {exc}") from exc
    return module.eval()


def finite_samples(samples: torch.Tensor, ckpt_path: str | Path) -> torch.Tensor:
    """``samples``, refused when any is NaN or infinite: such a generator diverged, and neither an image file nor a
    metric of it means anything (the Frechet distance of NaN features can even crash)."""
    if not bool(torch.isfinite(samples).all()):
        raise CheckpointError(
            f"The generator in {ckpt_path} produces non-finite samples (NaN or inf): its run diverged before this "
            f"checkpoint was written. Use an earlier one (checkpoints/best-fid.ckpt or checkpoints/epochNNNN.ckpt)."
        )
    return samples


def checked_ema(module: GANModule, cfg: DictConfig) -> bool | None:
    """The ``ema`` argument (null: the average when there is one), refused when the checkpoint has no average."""
    ema = cfg.get("ema")
    if ema is not None and not isinstance(ema, bool):
        raise ConfigError(f"ema={ema!r} is not valid; valid choices: null (the default sampler), true, false.")
    if ema and module.generator_ema is None:
        raise ConfigError(
            f"ema=true, but {cfg.ckpt_path} holds no generator weight average (it was trained with model.g_ema=false)."
        )
    return ema


DEVICES = ("cpu", "cuda")


def check_sampling_args(cfg: DictConfig, min_samples: int = 1) -> None:
    """gan.sample's and gan.evaluate's arguments, refused before a checkpoint is read: counts, the device."""
    check_count("num_samples", cfg.num_samples, min_samples, "samples to draw")
    check_count("seed", cfg.seed, 0, "the noise seed")
    if "nrow" in cfg:
        check_count("nrow", cfg.nrow, 1, "images per row of the PNG grid")
    if cfg.get("out") and not str(cfg.out).lower().endswith(".png"):
        raise ConfigError(f"out={cfg.out!r}: the sample grid is a PNG file; name it NAME.png (or out=null for none).")
    if cfg.device not in DEVICES:
        raise ConfigError(f"device={cfg.device!r} is not valid; valid choices: {', '.join(DEVICES)}.")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device=cuda, but this machine has no usable CUDA GPU (torch.cuda.is_available() is False); use device=cpu."
        )
