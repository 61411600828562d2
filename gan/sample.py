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

from gan.errors import exits_on_error
from gan.eval.sampling import draw
from gan.files import atomic_write
from gan.runs.checkpoints import check_sampling_args, checked_ema, finite_samples, load_generator
from gan.runs.schema import CONF_DIR


def run(cfg: DictConfig) -> dict[str, str]:
    check_sampling_args(cfg)
    module = load_generator(cfg.ckpt_path, cfg.device)
    samples = finite_samples(
        draw(module, int(cfg.num_samples), int(cfg.seed), ema=checked_ema(module, cfg)), cfg.ckpt_path
    )
    written: dict[str, str] = {}
    # written beside their paths and renamed (folders made as needed): a failure leaves no half file behind
    if cfg.out:
        images = module.to_unit_images(samples)
        png = atomic_write(
            cfg.out, lambda tmp: save_image(images, tmp, format="png", nrow=int(cfg.nrow), padding=2, pad_value=0.5)
        )
        written["png"] = str(png.resolve())
    if cfg.npy:
        array = samples.numpy().astype(np.float32)
        written["npy"] = str(atomic_write(cfg.npy, lambda tmp: _save_npy(tmp, array)).resolve())
    lo, hi = module.data_range
    print(f"{len(samples)} samples in [{lo:g}, {hi:g}] from {cfg.ckpt_path}: " + ", ".join(written.values()))
    return written


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as fh:  # a file object: np.save would add ".npy" to a path
        np.save(fh, array)


# An absolute config path: the console script (gan-sample) imports this module by name, and Hydra reads a relative
# path from a named module as a package (pkg://conf), which conf/ is not.
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="sample")
def main(cfg: DictConfig) -> None:
    with exits_on_error():
        run(cfg)


if __name__ == "__main__":
    main()
