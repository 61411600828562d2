"""The typed schema of ``gan.train``'s config (Hydra structured configs): one dataclass per group.

Registered in Hydra's ConfigStore as ``train_schema`` and named first in ``conf/train.yaml``'s defaults, so the
YAML groups merge into it: a value of the wrong type (``data.batch_size=abc``) or a key that does not exist
(``+model.lr=1``) is refused by the schema while the config is composed, before any code of ours runs. The YAML
files keep the defaults and their comments; the schema keeps the types. The ``model`` node is derived from the
member spec (``gan.model.spec``), where each model setting's default is written once. Rules that tie values
together (wgan-gp with batch norm, label smoothing with hinge, ``d_out_act=sigmoid``, ...) are checked once per job
by ``gan.runs.plan.prepare`` (through ``gan.model.spec.member_hparams`` and the data module), before anything is
written.

Left open on purpose: ``trainer``, ``logger`` and ``callbacks`` hold Lightning's own constructor arguments (any
``+trainer.NAME=VALUE`` Lightning takes), which Lightning checks when ``prepare`` builds them.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, make_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import SI, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gan.errors import ConfigError
from gan.model.init import INIT_SCHEMES
from gan.model.spec import SPEC_FIELDS, SPEC_TYPES, config_key
from gan.runs.names import run_subdir, safe_dirname
from gan.runs.tuning import register_resolvers

SCHEMA_NAME = "train_schema"
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def _model_config() -> type:
    """``model.*``: the member spec's settings (``gan.model.spec.MemberSpec``: names, types, defaults) that live
    under ``model``, and the ``_target_`` that checks them."""
    specs = [
        (
            name,
            SPEC_TYPES[name],
            field(default=f.metadata["config_default"] or f.default)
            if f.default is not MISSING
            else field(default_factory=f.default_factory),
        )
        for name, f in SPEC_FIELDS.items()
        if config_key(name) == f"model.{name}"
    ]
    return make_dataclass("ModelConfig", [("_target_", str, field(default="gan.model.spec.member_hparams")), *specs])


ModelConfig = _model_config()


@dataclass
class DataConfig:
    """``data.*``: MNIST, its batches, the training subset and the augmentation."""

    _target_: str = "gan.data.MNISTDataModule"
    root: str = "data"
    batch_size: int = 64
    download: bool = True
    seed: int = SI("${seed}")
    train_size: Optional[int] = None
    subset_seed: int = 0
    augment: Any = None  # the old place of model.augment, still read (None: not set here)


@dataclass
class EvalConfig:
    """``eval.*``: sample quality while training (``gan.runs.quality.SampleQuality``)."""

    _target_: str = "gan.runs.quality.SampleQuality"
    enabled: bool = True
    every_n_epochs: int = 5
    num_samples: int = 10000
    seed: int = 0
    min_evaluator_accuracy: float = 0.99
    jacobian_samples: int = 16


@dataclass
class DiagConfig:
    """``diag.*``: per-layer activation diagnostics (``gan.runs.diagnostics.ActivationDiagnostics``)."""

    _target_: str = "gan.runs.diagnostics.ActivationDiagnostics"
    enabled: bool = True
    every_n_steps: int = 500
    histograms: bool = True
    dead_threshold: float = 1.0e-6
    saturation_margin: float = 0.01
    jacobian_samples: int = 16


@dataclass
class TuningConfig:
    """``tuning.*``: the equal-budget draws of a tuning study (``gan.runs.tuning``)."""

    draw: Optional[int] = None
    draws: int = 8
    seed: int = 0
    lr_g: List[float] = field(default_factory=lambda: [2.0e-5, 2.0e-3])
    lr_d: List[float] = field(default_factory=lambda: [2.0e-5, 2.0e-3])
    beta1: List[float] = field(default_factory=lambda: [0.0, 0.5])
    init: List[str] = field(default_factory=lambda: list(INIT_SCHEMES))
    loss: Optional[List[str]] = None
    best_from: Optional[str] = None


@dataclass
class TrainConfig:
    """The whole of ``gan.train``'s config."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    diag: DiagConfig = field(default_factory=DiagConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    trainer: Dict[str, Any] = field(default_factory=dict)
    logger: Optional[Dict[str, Any]] = None
    callbacks: Dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    ckpt_path: Optional[str] = None
    run_dir: Optional[str] = SI("${hydra:runtime.output_dir}")  # None outside a Hydra job
    float32_matmul_precision: str = "highest"
    cuda_graphs: str = "off"
    act: Optional[str] = None  # the one hidden activation of ``activation=same``


def check_schema(cfg: DictConfig) -> None:
    """Refuse what composing let through: keys added with ``+`` that the schema does not have (Hydra's ``+``
    adds a key even to a typed node), and ``act`` given without the ``activation=same`` preset that reads it."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    try:
        OmegaConf.merge(OmegaConf.structured(TrainConfig), plain)
    except OmegaConfBaseException as exc:
        key = str(getattr(exc, "full_key", None) or "")
        parent = OmegaConf.select(OmegaConf.structured(TrainConfig), key.rpartition(".")[0]) if "." in key else None
        valid = (
            f" Valid keys there: {', '.join(k for k in parent if not k.startswith('_'))}."
            if isinstance(parent, DictConfig)
            else ""
        )
        raise ConfigError(
            f"{key or 'config'}: {str(exc).splitlines()[0].rstrip('.')}.{valid} The config's keys and types are "
            f"gan/runs/schema.py's (model.*: gan/model/spec.py's); docs/knobs.md's knob table says what each does."
        ) from None
    model = plain.get("model", {})
    if plain.get("act") is not None and "${act}" not in (model.get("g_act"), model.get("d_act")):
        raise ConfigError(
            f"act={plain['act']!r} is read only by the activation=same preset (which sets model.g_act and "
            f"model.d_act to it); add activation=same, or set model.g_act / model.d_act themselves."
        )


def register() -> None:
    """Put the schema where ``conf/train.yaml``'s defaults find it, and the resolvers its sweep folder names and
    tuning studies use (idempotent)."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=TrainConfig)
    register_resolvers()
    if not OmegaConf.has_resolver("safe_dirname"):
        OmegaConf.register_new_resolver("safe_dirname", safe_dirname)
    if not OmegaConf.has_resolver("run_subdir"):
        OmegaConf.register_new_resolver("run_subdir", run_subdir)


register()
