"""``python -m gan.evaluator``: train (or verify) the MNIST evaluator and print its test accuracy as JSON; with
``validate.enabled=true`` also the metric's corruption study (``gan.eval.corruptions``). The evaluator itself is
``gan.eval.classifier``.

    python -m gan.evaluator data.root=../shared/mnist     # train (or verify) and print accuracy as JSON
"""

from __future__ import annotations

import json
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from gan.errors import ConfigError, check_count, exits_on_error
from gan.eval.classifier import load_evaluator
from gan.eval.corruptions import write_validation


def legacy_flags(argv: list[str]) -> list[str]:
    """The command's old argparse spelling (``--data-root ROOT``, ``--download``) as the Hydra overrides every
    entry point takes now (``data.root=ROOT``, ``data.download=true``)."""
    out, args = [], iter(argv)
    for arg in args:
        if arg == "--data-root":
            out.append(f"data.root={next(args, '')}")
        elif arg.startswith("--data-root="):
            out.append("data.root=" + arg.split("=", 1)[1])
        elif arg == "--download":
            out.append("data.download=true")
        else:
            out.append(arg)
    return out


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluator")
def main(cfg: DictConfig) -> dict[str, object]:
    with exits_on_error():
        for key in ("data.download", "validate.enabled"):
            if not isinstance(OmegaConf.select(cfg, key), bool):
                raise ConfigError(f"{key}={OmegaConf.select(cfg, key)!r}: valid choices are true and false.")
        if cfg.validate.enabled:  # check the numbers before anything is trained or read
            check_count("validate.num_images", cfg.validate.num_images, 100, "real images scored per row")
        ev = load_evaluator(cfg.data.root, download=bool(cfg.data.download))
        summary: dict[str, object] = {"test_accuracy": round(ev.test_accuracy, 4), "cache": str(ev.path)}
        if cfg.validate.enabled:
            summary["validation"] = write_validation(ev, cfg.data.root, int(cfg.validate.num_images), cfg.validate.out)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.argv[1:] = legacy_flags(sys.argv[1:])
    main()
