"""``python -m gan.evaluator``: train (or verify) the MNIST evaluator and print its test accuracy as JSON; with
``validate.enabled=true`` also the metric's corruption study (``gan.eval.corruptions``). The evaluator itself is
``gan.eval.classifier``.

    python -m gan.evaluator data.root=../shared/mnist     # train (or verify) and print accuracy as JSON
    gan-evaluator data.root=../shared/mnist               # the same, as the installed console script

Training the evaluator (once per MNIST copy) says what it does, about how long it takes and how far it has come
on stderr; stdout holds the JSON alone.
"""

from __future__ import annotations

import json
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from gan.errors import ConfigError, check_count, exits_on_error
from gan.eval.classifier import MEMORIZATION_IMAGES, architecture, load_evaluator
from gan.eval.corruptions import write_validation
from gan.runs.schema import CONF_DIR


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


# An absolute config path: the console script (gan-evaluator) imports this module by name, and Hydra reads a relative
# path from a named module as a package (pkg://conf), which conf/ is not.
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluator")
def main(cfg: DictConfig) -> dict[str, object]:
    with exits_on_error():
        for key in ("data.download", "validate.enabled"):
            if not isinstance(OmegaConf.select(cfg, key), bool):
                raise ConfigError(f"{key}={OmegaConf.select(cfg, key)!r}: valid choices are true and false.")
        if cfg.validate.enabled:  # check the numbers before anything is trained or read
            check_count(
                "validate.num_images",
                cfg.validate.num_images,
                100,
                "real images scored per row, and as many training copies: MNIST's memorization reference holds "
                f"{MEMORIZATION_IMAGES:,}",
                MEMORIZATION_IMAGES,
            )
        arch = cfg.get("evaluator", "cnn")
        architecture(arch, "evaluator")
        ev = load_evaluator(cfg.data.root, download=bool(cfg.data.download), arch=arch)
        summary: dict[str, object] = {
            "evaluator": arch,
            "test_accuracy": round(ev.test_accuracy, 4),
            "cache": str(ev.path),
        }
        if cfg.validate.enabled:
            summary["validation"] = write_validation(ev, cfg.data.root, int(cfg.validate.num_images), cfg.validate.out)
    print(json.dumps(summary))
    return summary


def cli() -> None:
    """``python -m gan.evaluator`` and the ``gan-evaluator`` console script: the old flags rewritten, then Hydra's
    main (which returns nothing, as a console script's exit status wants)."""
    sys.argv[1:] = legacy_flags(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
