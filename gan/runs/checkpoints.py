"""Reading what the lab wrote: checkpoints (a run's, a pack member's) and the generator they hold.

Every checkpoint is read with ``weights_only=True`` (tensors and plain containers: loading one runs no code); a
file that is missing, unreadable or not this lab's is refused with one ``CheckpointError`` naming it. Nothing in a
checkpoint decides what code runs: its saved settings are data, each checked against the schema (no ``_target_``
but the lab's own names, no other ``_``-key, no ``${...}`` interpolation, no unknown key, the schema's types) by
``read_checkpoint`` for every reader, and the model is built from the lab's own classes; its tensors are checked
against that model (names, shapes, dtypes, finite values) by ``check_weights`` before any work.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn, Union, get_args, get_origin, get_type_hints

import torch
from omegaconf import DictConfig

from gan.errors import CheckpointError, ConfigError, check_count
from gan.eval.sampling import check_num_samples
from gan.model.augment import parse_policy
from gan.model.module import GANModule
from gan.model.optim import OPTIMIZERS
from gan.model.spec import OPTIMIZER_ALIASES, SPEC_FIELDS, SPEC_TYPES, config_key, member_hparams
from gan.runs.packing import DATAMODULE_KEY
from gan.runs.schema import DataConfig, TrainConfig

# What a resumed run keeps from its checkpoint's composed config (its model, the data it trains on and how D sees
# it); the rest of that config (where and how long it ran, its trainer, loggers, callbacks) is never read.
RESUME_INVARIANTS = ("model", "act", "data.augment", "data.train_size", "data.subset_seed")
# The ``_target_`` values this lab's checkpoints carry (today's names and older ones): they name no code here (the
# lab builds its model and optimizers from its own classes and the saved values); any other is refused.
MODEL_TARGETS = (
    "gan.model.spec.member_hparams",
    "gan.model.module.member_hparams",
    "gan.module.member_hparams",
    "gan.module.GANModule",
)
OPTIMIZER_TARGETS = (*OPTIMIZERS, *OPTIMIZER_ALIASES)
# The schema's types of the invariants outside ``model`` (``model.*``: the member spec's, SPEC_TYPES)
INVARIANT_TYPES = {
    key: get_type_hints(DataConfig)[key.removeprefix("data.")]
    if key.startswith("data.")
    else get_type_hints(TrainConfig)[key]
    for key in RESUME_INVARIANTS
    if key != "model"
}


def read_checkpoint(path: str | Path, what: str = "ckpt_path") -> dict[str, Any]:
    """A checkpoint written by this lab (tensors and plain containers only: loaded with ``weights_only=True``), its
    saved settings checked as data (``check_saved_config``); its tensors are checked by ``check_weights`` once the
    model they are for is known."""
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
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or not isinstance(hparams.get("members"), list):
        raise CheckpointError(
            f"{what}={str(path)!r} was not written by this lab's gan.train (no member hyperparameters)."
        )
    if len(hparams["members"]) != 1:
        raise CheckpointError(f"{what}={str(path)!r} holds a pack, not one run's checkpoint.")
    try:
        check_saved_config(ckpt, path, what)
    except RecursionError:
        raise CheckpointError(
            f"{what}={str(path)!r}: its saved settings are nested too deeply to be a config of this lab."
        ) from None
    return ckpt


# ----------------------------------------------------------------------------- a checkpoint's settings: data only
Refuse = Callable[[str, Any, str], NoReturn]
CODE_KEY = "is Hydra's instantiation syntax (code to call, or that code's arguments)"


def _refuser(path: str | Path, what: str) -> Refuse:
    """``refuse(key, value, why)``: one CheckpointError naming the file, the saved key and its value."""

    def refuse(key: str, value: Any, why: str) -> NoReturn:
        shown = "" if value is ... else "=" + (repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "...")
        raise CheckpointError(
            f"{what}={str(path)!r}: its saved {key}{shown} {why}. A checkpoint's settings are data: plain values "
            f"of the lab's schema (gan/runs/schema.py; model.*: gan/model/spec.py), with no code to call (_target_, "
            f"_args_, ...), no interpolation (${{...}}) and no unknown key. The file was not used and nothing was "
            f"run or written; use a checkpoint written by gan.train."
        )

    return refuse


def _plain(value: Any, key: str, targets: Mapping[str, tuple[str, ...]], refuse: Refuse) -> None:
    """Every value below ``key`` a plain one (dicts of names, lists, strings, numbers, booleans, null), no string an
    OmegaConf interpolation, no key Hydra's instantiation syntax but a ``_target_`` ``targets`` allows there."""
    if isinstance(value, dict):
        for name, sub in value.items():
            inner = f"{key}.{name}"
            if not isinstance(name, str):
                refuse(inner, sub, "has a key that is not a setting's name")
            if name.startswith("_") and not (name == "_target_" and sub in targets.get(key, ())):
                allowed = targets.get(key)
                today = [n for n in allowed or () if n in (MODEL_TARGETS[0], *OPTIMIZERS)]
                hint = f"; this lab's name(s) there: {', '.join(today)}" if name == "_target_" and today else ""
                refuse(inner, sub, CODE_KEY + hint)
            _plain(sub, inner, targets, refuse)
    elif isinstance(value, (list, tuple)):
        for i, sub in enumerate(value):
            _plain(sub, f"{key}[{i}]", targets, refuse)
    elif isinstance(value, str):
        if "${" in value:
            refuse(key, value, "is an interpolation (OmegaConf would resolve it: read an environment variable, ...)")
    elif value is not None and not isinstance(value, (bool, int, float)):
        refuse(key, value, f"is a {type(value).__name__}, not a plain value")


def _fits(kind: Any, value: Any) -> bool:
    """``value`` is of the schema's type ``kind`` (the ``typing`` forms OmegaConf reads; ``Any``: any plain value)."""
    origin, args = get_origin(kind), get_args(kind)
    if kind is Any:
        return True
    if origin is Union:
        return any(_fits(a, value) for a in args)
    if origin in (list, dict):
        if not isinstance(value, origin):
            return False
        items = value if origin is list else [x for pair in value.items() for x in pair]
        kinds = args[:1] * len(value) if origin is list else args * len(value)
        return all(_fits(k, v) for k, v in zip(kinds, items, strict=True))
    if kind is type(None):
        return value is None
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _check_type(key: str, kind: Any, value: Any, refuse: Refuse) -> None:
    if not _fits(kind, value):
        name = kind.__name__ if isinstance(kind, type) else str(kind).replace("typing.", "")
        refuse(key, value, f"is a {type(value).__name__}; the schema's type is {name}")


def _check_model(settings: Any, key: str, names: tuple[str, ...], refuse: Refuse) -> dict[str, Any]:
    """One member's saved settings (the config's ``model`` section, or the hyperparameters a checkpoint stores),
    checked like a command line's: known names, the schema's types, then the member spec's rules. Returns them
    checked (``member_hparams``: plain values, optimizer names read as today's)."""
    if not isinstance(settings, dict):
        refuse(key, settings, "is not a mapping of model settings")
    targets = {key: MODEL_TARGETS, f"{key}.optimizer_g": OPTIMIZER_TARGETS, f"{key}.optimizer_d": OPTIMIZER_TARGETS}
    _plain(settings, key, targets, refuse)
    values = {name: value for name, value in settings.items() if name != "_target_"}
    for name, value in values.items():
        if name not in names:
            refuse(f"{key}.{name}", value, f"is not a model setting of this lab (valid: {', '.join(names)})")
        _check_type(f"{key}.{name}", SPEC_TYPES[name], value, refuse)
    try:
        return member_hparams(**values)
    except (ConfigError, TypeError, ValueError) as exc:
        refuse(key, ..., f"does not pass this lab's checks: {exc}")


MODEL_NAMES = tuple(name for name in SPEC_FIELDS if config_key(name) == f"model.{name}")  # the config's model.*


def _saved_invariants(ckpt: dict[str, Any], refuse: Refuse) -> dict[str, Any]:
    """{dotted key: value} of what a resume reads of a checkpoint's config beyond ``model``: from its composed
    config, or (a checkpoint from before that was stored) the data module's training subset."""
    configs = ckpt.get("run_configs")
    if configs is not None and (not isinstance(configs, list) or len(configs) != 1 or not isinstance(configs[0], dict)):
        refuse("run_configs", configs, "is not one run's composed config")
    if configs:
        saved = configs[0]
        if not isinstance(saved.get("data", {}), dict):
            refuse("data", saved["data"], "is not a mapping of data settings")
        data = saved.get("data", {})
        read = {f"data.{k}": data[k] for k in data if f"data.{k}" in INVARIANT_TYPES}
        return read | ({"act": saved["act"]} if "act" in saved else {})
    state = ckpt.get(DATAMODULE_KEY, {})
    subset = state.get("subset") if isinstance(state, dict) else state
    if subset is not None and not isinstance(subset, dict):
        refuse(f"{DATAMODULE_KEY}.subset", subset, "is not a mapping of data settings")
    for name, value in (subset or {}).items():
        if name not in ("train_size", "subset_seed"):
            refuse(f"{DATAMODULE_KEY}.subset.{name}", value, "is not a data setting (valid: train_size, subset_seed)")
    return {f"data.{name}": value for name, value in (subset or {}).items()}


def check_saved_config(ckpt: dict[str, Any], path: str | Path, what: str = "ckpt_path") -> list[dict[str, Any]]:
    """Refuse a checkpoint whose saved settings are not plain values of the lab's schema (``CheckpointError``
    naming the key): its member hyperparameters, and what a resume reads of its composed config
    (``RESUME_INVARIANTS``). Returns the member's checked settings (what gan.sample and gan.evaluate build the
    generator from)."""
    refuse = _refuser(path, what)
    invariants = _saved_invariants(ckpt, refuse)
    if ckpt.get("run_configs") and "model" in ckpt["run_configs"][0]:
        _check_model(ckpt["run_configs"][0]["model"], "model", MODEL_NAMES, refuse)
    hparams = ckpt["hyper_parameters"]
    for name in sorted(set(hparams) - {"members"}):
        refuse(f"hyper_parameters.{name}", hparams[name], "is not a hyperparameter this lab stores (only members)")
    members = [_check_model(hparams["members"][0], "hyper_parameters.members[0]", tuple(SPEC_FIELDS), refuse)]
    for key, value in invariants.items():
        _plain(value, key, {}, refuse)
        _check_type(key, INVARIANT_TYPES[key], value, refuse)
        if key == "data.augment":
            try:
                parse_policy(value, key)
            except ConfigError as exc:
                refuse(key, value, f"does not pass this lab's checks: {exc}")
    return members


def check_weights(
    ckpt: dict[str, Any], expected: Mapping[str, torch.Tensor], path: str | Path, what: str = "ckpt_path"
) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors (``state_dict``), refused unless they fit the model they are loaded into: the same
    names, each a tensor of its shape, floating where the model's is (the same dtype otherwise), every value
    finite. Checked before any work, so a bad file never fails inside training after its run folder was written."""
    state = ckpt.get("state_dict")
    where = f"{what}={str(path)!r}"
    if not isinstance(state, dict):
        raise CheckpointError(f"{where} holds no tensors of a model (no state_dict); it was not used.")
    missing = [name for name in expected if name not in state]
    extra = [name for name in state if name not in expected]
    if missing or extra:
        raise CheckpointError(
            f"{where} does not fit the model its settings build: "
            + "; ".join(
                f"{label} {', '.join(map(str, names[:3]))}{' ...' if len(names) > 3 else ''}"
                for label, names in (("missing tensor(s)", missing), ("tensor(s) not in that model", extra))
                if names
            )
            + ". It was not used (edited, or written by other code); use a checkpoint written by gan.train."
        )
    for name, want in expected.items():
        got = state[name]
        why = None
        if not isinstance(got, torch.Tensor) or got.layout != torch.strided:
            why = f"is a {type(got).__name__ if not isinstance(got, torch.Tensor) else got.layout}, not a dense tensor"
        elif tuple(got.shape) != tuple(want.shape):
            why = f"has shape {tuple(got.shape)}; the model's is {tuple(want.shape)}"
        elif got.is_floating_point() != want.is_floating_point() or (
            not want.is_floating_point() and got.dtype != want.dtype
        ):
            why = f"is {got.dtype}; the model's is {want.dtype}"
        elif got.is_floating_point() and not bool(torch.isfinite(got).all()):
            bad = int((~torch.isfinite(got)).sum())
            why = (
                f"holds {bad} non-finite value(s) (NaN or inf): its run diverged before this checkpoint was "
                f"written (or the file was edited). Use an earlier one (checkpoints/best-fid.ckpt or "
                f"checkpoints/epochNNNN.ckpt)"
            )
        if why:
            raise CheckpointError(f"{where}: tensor {name} {why}. It was not used; nothing was run or written.")
    return state


def model_weights(member: Mapping[str, Any], path: str | Path, what: str = "ckpt_path") -> dict[str, torch.Tensor]:
    """The tensors (names, shapes, dtypes) of the population of one that ``member``'s checked settings build."""
    try:
        return GANModule(members=[dict(member)], checked=True).state_dict()
    except (RuntimeError, MemoryError) as exc:  # widths too large for this machine's memory
        raise CheckpointError(
            f"{what}={str(path)!r}: its model cannot be built here ({type(exc).__name__}: {str(exc)[:160]})."
        ) from None


def load_generator(ckpt_path: str | Path, device: str = "cpu") -> GANModule:
    """The trained GANModule (G, D, data range) from a gan.train checkpoint, in eval mode. A missing, unreadable or
    foreign file is refused with one ``CheckpointError`` (``read_checkpoint``), never a traceback."""
    path = Path(ckpt_path).expanduser()
    ckpt = read_checkpoint(path)
    members = check_saved_config(ckpt, path)  # built from the lab's own class and the checked values only
    try:
        module = GANModule(members=members, checked=True)
    except Exception as exc:  # noqa: BLE001 - a lab checkpoint that does not rebuild -> one clear message
        raise CheckpointError(f"ckpt_path={str(ckpt_path)!r} does not rebuild a generator of this lab: {exc}") from exc
    module.load_state_dict(check_weights(ckpt, module.state_dict(), path))
    module.on_load_checkpoint(ckpt)
    return module.to(device).eval()


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


def check_output_paths(cfg: DictConfig) -> None:
    """gan.sample's ``out`` and ``npy``: two different files, neither of them the checkpoint read (one would
    overwrite the other: a NumPy file named .png, or the checkpoint replaced by samples)."""
    paths = {key: Path(str(cfg[key])).expanduser().resolve() for key in ("out", "npy") if cfg.get(key)}
    if len(paths) == 2 and paths["out"] == paths["npy"]:
        raise ConfigError(
            f"out={cfg.out!r} and npy={cfg.npy!r} are the same file ({paths['out']}): the samples would overwrite the "
            f"PNG grid. Give them two names (out=samples.png npy=samples.npy), or leave one out (null)."
        )
    checkpoint = Path(str(cfg.ckpt_path)).expanduser().resolve() if cfg.get("ckpt_path") else None
    for key, path in paths.items():
        blocking = next((parent for parent in path.parents if parent.exists()), None)
        if blocking is not None and not blocking.is_dir():
            raise ConfigError(
                f"{key}={cfg[key]!r} cannot be written: {blocking} is a file, not a folder. Name a path in a folder."
            )
        if path.is_dir():
            example = path / ("samples.png" if key == "out" else "samples.npy")
            raise ConfigError(f"{key}={cfg[key]!r} is a folder ({path}); name a file in it (e.g. {key}={example}).")
        if path == checkpoint:
            raise ConfigError(
                f"{key}={cfg[key]!r} is the checkpoint being read ({path}): writing there would replace it. Write "
                f"the samples elsewhere."
            )


def check_sampling_args(cfg: DictConfig, min_samples: int = 1) -> None:
    """gan.sample's and gan.evaluate's arguments, refused before a checkpoint is read: counts, the device."""
    check_num_samples("num_samples", cfg.num_samples, min_samples, "samples to draw")
    check_count("seed", cfg.seed, 0, "the noise seed", 2**32 - 1)
    if "nrow" in cfg:
        check_count("nrow", cfg.nrow, 1, "images per row of the PNG grid")
    if cfg.get("out") and not str(cfg.out).lower().endswith(".png"):
        raise ConfigError(f"out={cfg.out!r}: the sample grid is a PNG file; name it NAME.png (or out=null for none).")
    check_output_paths(cfg)
    if cfg.device not in DEVICES:
        raise ConfigError(f"device={cfg.device!r} is not valid; valid choices: {', '.join(DEVICES)}.")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device=cuda, but this machine has no usable CUDA GPU (torch.cuda.is_available() is False); use device=cpu."
        )
