"""``python -m gan.sample ckpt_path=PATH [num_samples=N out=grid.png npy=samples.npy]``: samples from a checkpoint.

The PNG is for eyes; the ``.npy`` (N x 1024 float32, in the generator's output range) is for scoring with your
own tools. The generator is rebuilt from the hyperparameters stored in the checkpoint, so no config is needed.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig
from torchvision.utils import save_image

from gan.checkpoints import checked_ema, finite_samples, load_generator
from gan.errors import ConfigError, exits_on_error
from gan.sample_quality import draw


def run(cfg: DictConfig) -> dict[str, str]:
    if int(cfg.num_samples) < 1:
        raise ConfigError(f"num_samples must be a positive integer, got {cfg.num_samples!r}.")
    if cfg.device not in ("cpu", "cuda"):
        raise ConfigError(f"device={cfg.device!r} is not valid; valid choices: cpu, cuda.")
    module = load_generator(cfg.ckpt_path, cfg.device)
    samples = finite_samples(
        draw(module, int(cfg.num_samples), int(cfg.seed), ema=checked_ema(module, cfg)), cfg.ckpt_path
    )
    written: dict[str, str] = {}
    if cfg.out:
        save_image(module.to_unit_images(samples), cfg.out, nrow=int(cfg.nrow), padding=2, pad_value=0.5)
        written["png"] = str(Path(cfg.out).resolve())
    if cfg.npy:
        np.save(cfg.npy, samples.numpy().astype(np.float32))
        written["npy"] = str(Path(cfg.npy).resolve())
    lo, hi = module.data_range
    print(f"{len(samples)} samples in [{lo:g}, {hi:g}] from {cfg.ckpt_path}: " + ", ".join(written.values()))
    return written


@hydra.main(version_base="1.3", config_path="../conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    with exits_on_error():
        run(cfg)


if __name__ == "__main__":
    main()
