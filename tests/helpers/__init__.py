"""Shared test helpers: small real IDX files, composing the real configs, short runs (in process and on the command
line), reading TensorBoard event files and checkpoints, and the small helpers tests of several modules use. Test modules
import their helpers from here (``from tests.helpers import ...``); the fixtures are in ``tests/conftest.py``."""

from __future__ import annotations

import gzip
import itertools
import os
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from gan.data import IMAGES_MAGIC, LABELS_MAGIC, SPLIT_FILES
from gan.model.module import GANModule
from gan.runs.fit import train
from gan.runs.plan import JobState, member_config
from gan.runs.schema import CONF_DIR

REPO = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")
REAL_MNIST = (REPO.parent / "shared" / "mnist").resolve()
needs_real_mnist = pytest.mark.skipif(
    not (REAL_MNIST / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file(),
    reason=f"real MNIST not found at {REAL_MNIST}/MNIST/raw (CI and the lab machines have it there)",
)


def write_idx(path: Path, array: torch.Tensor, magic: int, gz: bool = False) -> None:
    """An IDX file of unsigned bytes, as MNIST ships them."""
    data = struct.pack(">I", magic) + struct.pack(f">{array.dim()}I", *array.shape) + array.numpy().tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(f"{path}.gz", "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


def make_mnist(root: Path, n_train: int = 256, n_test: int = 64, seed: int = 0, gz: bool = False) -> Path:
    """A tiny MNIST in torchvision's layout: ROOT/MNIST/raw/ with the four IDX files."""
    gen = torch.Generator().manual_seed(seed)
    raw = root / "MNIST" / "raw"
    for split, n in (("train", n_train), ("test", n_test)):
        images = torch.randint(0, 256, (n, 28, 28), generator=gen, dtype=torch.uint8)
        images[:, :4] = 0  # a dark border like MNIST's
        labels = torch.arange(n, dtype=torch.uint8) % 10
        img_name, lbl_name = SPLIT_FILES[split]
        write_idx(raw / img_name, images, IMAGES_MAGIC, gz)
        write_idx(raw / lbl_name, labels, LABELS_MAGIC, gz)
    return root


def compose_train(overrides: Sequence[str] = (), run_dir: Path | None = None, keep_hydra: bool = False) -> DictConfig:
    """The real train config as `python -m gan.train OVERRIDES` composes it (HydraConfig set, so the overrides
    are visible to the code as on the command line)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    if keep_hydra:
        return cfg
    with open_dict(cfg):
        del cfg["hydra"]
        if run_dir is not None:
            cfg.run_dir = str(run_dir)
    return cfg


def fast_overrides(data_root: Path, **extra: object) -> list[str]:
    """Overrides for a short CPU run on the tiny data: 32-image batches -> 8 iterations per epoch."""
    base = {
        "data.root": str(data_root),
        "data.batch_size": 32,
        "trainer.accelerator": "cpu",
        "trainer.enable_progress_bar": False,
        "trainer.enable_model_summary": False,
        "trainer.max_epochs": 1,
        "trainer.log_every_n_steps": 1,
        "eval.enabled": False,
        "diag.enabled": False,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in the run's TensorBoard event files: tag -> [(step, value), ...]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(Path(run_dir)), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def image_tags(run_dir: Path) -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(Path(run_dir)), size_guidance={"images": 0})
    acc.Reload()
    return acc.Tags()["images"]


SCALAR_TAGS = {"train/d_loss", "train/g_loss", "train/D_x", "train/D_G_z"}


def run(tmp_path: Path, name: str, data: Path, *extra: str) -> tuple[dict, Path]:
    """A short in-process run (fast_overrides plus EXTRA) in TMP_PATH/NAME: its summary and run directory."""
    run_dir = tmp_path / name
    cfg = compose_train(fast_overrides(data) + list(extra), run_dir)
    summary = train(cfg, JobState.from_hydra())  # as gan.train's entry point reads the command line
    return summary, run_dir


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The state dict of the run's last checkpoint."""
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m ARGS`` in CWD with this checkout first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def build_model(cfg: DictConfig) -> GANModule:
    """A population of one as ``cfg`` configures it (what gan.train builds for a new run)."""
    return GANModule(members=[member_config(cfg)], checked=True)


def gens(*seeds):
    """One seeded random generator per seed (a population's members, each from its own)."""
    return [torch.Generator().manual_seed(s) for s in seeds]


def exact_u_p_value(a, b):
    """Two-sided exact Mann-Whitney p: the share of all splits of the pooled values whose U is as extreme."""
    pooled = a + b

    def u(x, y):
        return sum((xi > yi) + 0.5 * (xi == yi) for xi in x for yi in y)

    observed = abs(u(a, b) - len(a) * len(b) / 2)
    splits = list(itertools.combinations(range(len(pooled)), len(a)))
    extreme = 0
    for idx in splits:
        x = [pooled[i] for i in idx]
        y = [pooled[i] for i in range(len(pooled)) if i not in idx]
        extreme += abs(u(x, y) - len(a) * len(b) / 2) >= observed - 1e-12
    return extreme / len(splits)
