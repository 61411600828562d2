"""``python -m gan.sample ckpt_path=PATH [num_samples=N out=grid.png npy=samples.npy]``: samples from a checkpoint.

The PNG is for eyes; the ``.npy`` (N x 1024 float32, in the generator's output range) is for scoring with your
own tools. The generator is rebuilt from the hyperparameters stored in the checkpoint, so no config is needed.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from torchvision.utils import save_image

from gan.errors import CheckpointError, ConfigError, exits_on_error
from gan.evaluation import eval_noise
from gan.module import GANModule


def load_generator(ckpt_path: str | Path, device: str = "cpu") -> GANModule:
    """The trained GANModule (G, D, data range) from a gan.train checkpoint, in eval mode."""
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={str(ckpt_path)!r}: no such checkpoint file (looked at {path.resolve()}).")
    module = GANModule.load_from_checkpoint(path, map_location=device, weights_only=True)
    return module.eval()


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


def draw(module: GANModule, num_samples: int, seed: int, chunk: int = 2000, ema: bool | None = None) -> torch.Tensor:
    """``num_samples`` outputs of a population of one (N x 1024, on the CPU) from seeded noise: the same z as
    training's evaluations with the same seed (``gan.evaluation.eval_noise``).

    The noise comes from its own generator: drawing never disturbs a training stream. ``ema`` as in
    ``GANModule.sample`` (None: the weight average when the model keeps one).
    """
    z = eval_noise(num_samples, module.shared["latent_dim"], seed)
    return torch.cat([module.sample(part, ema=ema)[0].float().cpu() for part in z.split(chunk)])


def run(cfg: DictConfig) -> dict[str, str]:
    if int(cfg.num_samples) < 1:
        raise ConfigError(f"num_samples must be a positive integer, got {cfg.num_samples!r}.")
    if cfg.device not in ("cpu", "cuda"):
        raise ConfigError(f"device={cfg.device!r} is not valid; valid choices: cpu, cuda.")
    module = load_generator(cfg.ckpt_path, cfg.device)
    samples = draw(module, int(cfg.num_samples), int(cfg.seed), ema=checked_ema(module, cfg))
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
