"""One member's settings, declared once: ``MemberSpec`` holds each model setting with its default, whether the members
of a pack may differ in it, and what it means. Everything else derives from it: ``member_hparams`` (the checked
settings a GANModule member is built from and checkpoints store), ``SHARED_KEYS`` (what a pack's members share),
the config schema's ``model`` node (``gan.runs.schema``), the keys a pack's jobs may differ in
(``gan.runs.packing``), ``gan.bench``'s check that a member is at the defaults the reference loop implements, and
the ``model.*`` rows of docs/knobs.md's knob table (``knob_rows``; a test keeps them equal).

Adding a per-member setting is one field here (name, default, ``shared=False``, its meaning) plus the code that
uses it.

The field types are the ``typing`` forms (``List[int]``, ``Optional[int]``) because OmegaConf 2.3 reads those, not
``list[int]`` or ``int | None``, when the schema is derived from this class.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional, get_type_hints

import torch

from gan.errors import ConfigError
from gan.model.activations import ACTIVATION_NAMES, check_activation, data_range
from gan.model.augment import parse_policy
from gan.model.init import check_init
from gan.model.losses import check_loss
from gan.model.networks import check_minibatch_std_group, check_norm
from gan.model.optim import OPTIMIZERS

# torch.optim names users may still write, and the names checkpoints written before the package's floors stored:
# the member-stacked optimizer with the same formula runs instead.
OPTIMIZER_ALIASES = {
    "torch.optim.Adam": "gan.model.optim.Adam",
    "torch.optim.SGD": "gan.model.optim.SGD",
    "gan.optim.Adam": "gan.model.optim.Adam",
    "gan.optim.SGD": "gan.model.optim.SGD",
}
ADAM = {"_target_": "gan.model.optim.Adam", "lr": 2.0e-4, "betas": [0.5, 0.999]}
ACT_PARAMS = {
    "leaky_relu": {"negative_slope": 0.2},
    "prelu": {"init": 0.25},
    "elu": {"alpha": 1.0},
    "gelu": {"approximate": "none"},
    "softplus": {"beta": 1.0, "threshold": 20.0},
    "hardtanh": {"min_val": -1.0, "max_val": 1.0},
}


def setting(default: Any, shared: bool, meaning: str, key: str | None = None, config_default: Any = None) -> Any:
    """A field of ``MemberSpec``: its default, whether a pack's members must share it, what it means; ``key`` is
    where it lives in the config when not ``model.NAME``, ``config_default`` what the config file says instead of
    the default (an interpolation such as ``${seed}``)."""
    meta = {"shared": shared, "meaning": meaning, "key": key, "config_default": config_default}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: _plain(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class MemberSpec:
    """One GAN of a population: architecture, activations, loss, stability switches, optimizers, seed."""

    latent_dim: int = setting(100, True, "noise dimension")
    g_hidden: List[int] = setting([128, 256, 512], True, "G's hidden widths: z -> 128 -> 256 -> 512 -> 1024")
    d_hidden: List[int] = setting([512, 256, 128], True, "D's hidden widths: 1024 -> 512 -> 256 -> 128 -> 1 logit")
    g_act: str = setting("relu", False, "generator hidden activation")
    g_out_act: str = setting(
        "tanh", False, "generator output activation; the data range follows it (tanh: [-1, 1], sigmoid: [0, 1])"
    )
    d_act: str = setting("leaky_relu", False, "discriminator hidden activation")
    d_out_act: str = setting("identity", False, "transform of D's logit (the sigmoid is in the loss)")
    act_params: Dict[str, Dict[str, Any]] = setting(
        ACT_PARAMS, False, "activation parameters (`model.act_params.NAME.PARAM`), shared by every layer using NAME"
    )
    loss: str = setting(
        "ns",
        False,
        "`ns` non-saturating, `minimax` the saturating original, `lsgan` least squares, `hinge`, `wgan-gp`, "
        "`rpgan` relativistic pairing (R3GAN's)",
    )
    d_steps: int = setting(1, True, "discriminator updates per generator update, each on its own batch (WGAN-GP: 5)")
    optimizer_g: Dict[str, Any] = setting(
        ADAM,
        False,
        "G's optimizer: `gan.model.optim.Adam` or `gan.model.optim.SGD` (`lr`, `momentum`, `weight_decay`) with "
        "each member's own values (`torch.optim.Adam` / `SGD` mean these); a pack shares the kind",
    )
    optimizer_d: Dict[str, Any] = setting(ADAM, False, "D's optimizer, as `optimizer_g`")
    num_fixed_samples: int = setting(64, True, "size of the fixed-noise sample grid (64: 8x8)")
    fixed_noise_seed: int = setting(0, False, "seed of the fixed noise", config_default="${seed}")
    gp_weight: float = setting(10.0, False, "`wgan-gp`: weight of the gradient penalty on real/fake interpolates")
    r1_weight: float = setting(0.0, False, "R1 penalty gamma on real data, with any loss (0: off)")
    r2_weight: float = setting(0.0, False, "R2 penalty gamma on fake samples (through D only), with any loss (0: off)")
    bre_weight: float = setting(
        0.0,
        False,
        "binarized representation entropy penalty on D's hidden layers (Cao et al. 2018; `gan/model/bre.py`): "
        "raises the diversity of D's activation patterns and so of G's learning signal (0: off)",
    )
    d_spectral_norm: bool = setting(False, False, "spectral normalization of every linear layer of D")
    g_norm: str = setting("none", True, "`none`, `batch` or `layer` normalization in G's hidden layers")
    d_norm: str = setting("none", True, "`none`, `batch` or `layer` in D's hidden layers (`wgan-gp` refuses batch)")
    label_smoothing: float = setting(0.0, False, "one-sided: real target 1 - s (`ns`, `minimax`, `lsgan`; 0: off)")
    instance_noise: float = setting(0.0, False, "std of Gaussian noise on D's inputs, in half data ranges (0: off)")
    instance_noise_iters: Optional[int] = setting(
        None, False, "iterations the instance noise takes to decay linearly to 0 (null: the run's planned length)"
    )
    d_minibatch_std: bool = setting(False, True, "minibatch standard deviation feature before D's output layer")
    d_minibatch_std_group: int = setting(4, True, "samples per group of that feature")
    g_ema: bool = setting(False, True, "exponential moving average of G's weights, used for samples and metrics")
    g_ema_decay: float = setting(0.999, False, "the average's decay per iteration")
    init: str = setting(
        "default",
        False,
        "initial weights: `default` (PyTorch's nn.Linear draw, whatever the activation) or `variance_preserving` "
        "(each layer scaled by 1/sqrt(E[f(x)^2]) for the activation f feeding it, biases 0; `gan/model/init.py`)",
    )
    seed: int = setting(0, False, "seeds the member's weights and random streams", key="seed")
    augment: Any = setting(
        "none",
        False,
        "DiffAugment on everything D sees: `translation`, `cutout`, or both as `[translation,cutout]` "
        "(`data.augment`, its old place, still works)",
    )


SPEC_FIELDS = {f.name: f for f in fields(MemberSpec)}
SPEC_TYPES = get_type_hints(MemberSpec)  # the fields' types as objects (the schema is made from them)
# What members of one pack share (shapes and the update schedule); everything else may differ per member.
SHARED_KEYS = tuple(name for name, f in SPEC_FIELDS.items() if f.metadata["shared"])


def default(name: str) -> Any:
    """The default of setting ``name``."""
    f = SPEC_FIELDS[name]
    return f.default_factory() if f.default is MISSING else f.default


def config_key(name: str) -> str:
    """Where setting ``name`` lives in gan.train's config (``model.NAME`` unless the spec says otherwise)."""
    return SPEC_FIELDS[name].metadata["key"] or f"model.{name}"


def per_member_config_keys() -> tuple[str, ...]:
    """The config keys of the settings a pack's members may differ in."""
    return tuple(config_key(n) for n, f in SPEC_FIELDS.items() if not f.metadata["shared"])


def _plain(value: Any) -> Any:
    """Config containers (any mapping or list) -> plain dicts and lists, so settings pickle and print cleanly."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


def _as_declared(name: str, value: Any) -> Any:
    """A checked value as its field's declared type says (``8`` for ``8.0`` given as an int, ...): a new field
    needs no code here."""
    kind = SPEC_TYPES[name]
    if kind in (int, float, bool):
        return kind(value)
    if kind == List[int]:
        return [int(v) for v in value]
    if kind == Optional[int]:
        return None if value is None else int(value)
    return value


def member_data_range(member: Mapping[str, Any]) -> tuple[float, float]:
    """The range a member's real images are scaled to: its generator's output activation's."""
    return data_range(member["g_out_act"], member["act_params"].get(member["g_out_act"]))


def _check_range(name: str, value: float, low: float, high: float, hint: str) -> None:
    if not low <= float(value) <= high:
        raise ConfigError(f"model.{name} must be in [{low:g}, {high:g}], got {value!r} ({hint}).")
    if not math.isfinite(float(value)):  # an infinite weight or noise makes the losses non-finite at once
        raise ConfigError(f"model.{name} must be a finite number, got {value!r}: the losses would be NaN ({hint}).")


def optimizer_config(config: Mapping[str, Any] | None, key: str) -> dict[str, Any]:
    """An optimizer config with its ``_target_`` resolved to a member-stacked optimizer of ``gan.model.optim``."""
    config = dict(_plain(config) or default(key))
    target = OPTIMIZER_ALIASES.get(config.get("_target_", ""), config.get("_target_", ""))
    if target not in OPTIMIZERS:
        raise ConfigError(
            f"model.{key}._target_={config.get('_target_')!r} is not an optimizer this lab can run for a population "
            f"of GANs. Valid choices: {', '.join(OPTIMIZERS)} (torch.optim.Adam and torch.optim.SGD mean these)."
        )
    config["_target_"] = target
    options = {k: v for k, v in config.items() if k != "_target_"}
    try:  # the optimizer's own checks (a step size, betas, an argument it does not take), on a stand-in parameter
        OPTIMIZERS[target]([torch.nn.Parameter(torch.zeros(1, 1))], **options)
    except (TypeError, ValueError) as exc:
        takes = [p for p in inspect.signature(OPTIMIZERS[target]).parameters if p not in ("params", "members")]
        raise ConfigError(
            f"model.{key}: {str(exc).rstrip('.')} (asked: {options}). {target.rsplit('.', 1)[-1]} takes "
            f"{', '.join(takes)}."
        ) from None
    return config


def _check_widths(key: str, widths: Any, allow_none: bool) -> list[int]:
    """Hidden layer widths, each a positive int; G needs at least one layer (the activation under study lives
    there), D may have none (a linear critic: the closed-form checks of the losses use one)."""
    values = list(widths) if isinstance(widths, (list, tuple)) else None
    if values is None or (not values and not allow_none) or not all(_is_count(w) for w in values):
        least = "zero or more" if allow_none else "at least one"
        raise ConfigError(
            f"model.{key} must list {least} hidden layer widths, each a positive integer (e.g. [128, 256, 512]); "
            f"got {widths!r}. Without a hidden layer the generator has no hidden activation to study."
        )
    return values


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_activations(m: Mapping[str, Any]) -> None:
    act_params = m["act_params"]
    if m["d_out_act"] == "sigmoid":
        raise ConfigError(
            "model.d_out_act='sigmoid' would apply the sigmoid twice: the discriminator outputs a logit and the "
            "loss applies the sigmoid itself (binary_cross_entropy_with_logits), which is the seed design's "
            "sigmoid output. Use d_out_act=identity for that design, or another activation to transform the "
            f"logit. Valid names: {', '.join(n for n in ACTIVATION_NAMES if n != 'sigmoid')}."
        )
    in_use = {f"model.{key}": m[key] for key in ("g_act", "g_out_act", "d_act", "d_out_act")}
    for key, name in in_use.items():
        check_activation(name, act_params.get(name), key)
    for name, params in act_params.items():  # the table's other entries too: a later switch may use them
        if name not in in_use.values():
            check_activation(name, params, f"model.act_params.{name}")


def member_hparams(**settings: Any) -> dict[str, Any]:
    """One member's settings (``model.*`` plus its ``seed`` and ``augment``; ``MemberSpec``'s defaults for the
    rest), checked, as plain values: what checkpoints store and what a population is built from."""
    unknown = sorted(set(settings) - set(SPEC_FIELDS))
    if unknown:
        raise ConfigError(
            f"Unknown model setting(s) {', '.join(unknown)}. Valid settings: {', '.join(SPEC_FIELDS)} "
            f"(gan/model/spec.py; docs/knobs.md's knob table says what each does)."
        )
    m = {name: _plain(settings[name]) if name in settings else default(name) for name in SPEC_FIELDS}
    m["act_params"] = {k: dict(v or {}) for k, v in (m["act_params"] or {}).items()}
    _check_activations(m)
    check_init(m["init"])
    check_norm(m["g_norm"], "model.g_norm")
    check_norm(m["d_norm"], "model.d_norm")
    if int(m["d_steps"]) < 1:
        raise ConfigError(f"model.d_steps must be a positive integer, got {m['d_steps']!r}.")
    for key, what in (
        ("latent_dim", "the size of z; 100 is usual"),
        ("num_fixed_samples", "the fixed-noise grid's images; 64 is an 8x8 grid"),
    ):
        value = m[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model.{key} must be a positive integer ({what}), got {value!r}.")
    m["g_hidden"] = _check_widths("g_hidden", m["g_hidden"], allow_none=False)
    m["d_hidden"] = _check_widths("d_hidden", m["d_hidden"], allow_none=True)
    check_loss(m["loss"], m["label_smoothing"])
    _check_range("gp_weight", m["gp_weight"], 0.0, math.inf, "the WGAN-GP penalty weight lambda; 10 is usual")
    _check_range("r1_weight", m["r1_weight"], 0.0, math.inf, "R1's gamma; 0 = off, 1 to 10 are usual on MNIST")
    _check_range("r2_weight", m["r2_weight"], 0.0, math.inf, "R2's gamma; 0 = off, R3GAN sets it equal to R1's")
    _check_range("bre_weight", m["bre_weight"], 0.0, math.inf, "BRE's weight; 0 = off, 1 is Cao et al.'s")
    _check_range("instance_noise", m["instance_noise"], 0.0, math.inf, "initial noise std; 0 = off, 0.1 is usual")
    if m["instance_noise_iters"] is not None and int(m["instance_noise_iters"]) < 1:
        raise ConfigError(
            f"model.instance_noise_iters must be a positive number of iterations or null (the run's planned "
            f"length), got {m['instance_noise_iters']!r}."
        )
    _check_range("g_ema_decay", m["g_ema_decay"], 0.0, 1.0 - 1e-12, "EMA decay per iteration; 0.999 is usual")
    if m["d_minibatch_std"]:
        check_minibatch_std_group(m["d_minibatch_std_group"])
    if m["d_norm"] == "batch" and m["loss"] == "wgan-gp":
        raise ConfigError(
            "model.d_norm='batch' with model.loss='wgan-gp': the gradient penalty needs each sample's own "
            "gradient, and batch norm makes every score depend on the whole batch (Gulrajani et al. 2017 drop "
            "it for this reason). Use model.d_norm=layer or none with wgan-gp."
        )
    m["optimizer_g"] = optimizer_config(m["optimizer_g"], "optimizer_g")
    m["optimizer_d"] = optimizer_config(m["optimizer_d"], "optimizer_d")
    m["augment"] = list(parse_policy(m["augment"]))
    spec = MemberSpec(**{name: _as_declared(name, value) for name, value in m.items()})
    return asdict(spec)


def shared_settings(members: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The settings members of one pack must share (``SHARED_KEYS`` and the optimizers' kinds), checked equal."""

    def shared(m: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: m[k] for k in SHARED_KEYS}
        for key in ("optimizer_g", "optimizer_d"):
            out[key] = (m[key]["_target_"], sorted(m[key]))
        return out

    first = shared(members[0])
    for k, m in enumerate(members[1:], start=1):
        other = shared(m)
        diff = {key: (first[key], other[key]) for key in first if first[key] != other[key]}
        if diff:
            raise ConfigError(
                f"members 0 and {k} of one pack differ in settings a pack shares: "
                + "; ".join(f"{key}: {a!r} vs {b!r}" for key, (a, b) in diff.items())
                + f". Members of a pack must share {', '.join(SHARED_KEYS)} and the optimizers' kinds."
            )
    return first


def _shown(value: Any) -> str:
    """A default as docs/knobs.md's knob table writes it (YAML's spelling)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping):
        return ", ".join(
            f"{k}.{p}={_shown(v)}" if isinstance(sub, Mapping) else f"{k}={_shown(sub)}"
            for k, sub in value.items()
            for p, v in (sub.items() if isinstance(sub, Mapping) else [(None, sub)])
        )
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def knob_rows() -> list[str]:
    """The README knob table's ``model.*`` rows, one per setting (``| key | default | meaning | per member |``)."""
    rows = []
    for name, f in SPEC_FIELDS.items():
        if f.metadata["key"]:
            continue  # kept in the table with the other top-level keys
        shown = f.metadata["config_default"] or _shown(default(name))
        shown = f"`{shown}`" if str(shown).startswith("$") else shown
        per_member = "shared" if f.metadata["shared"] else "yes"
        rows.append(f"| `{config_key(name)}` | {shown} | {f.metadata['meaning']} | {per_member} |")
    return rows


if __name__ == "__main__":  # python -m gan.model.spec: the README knob table's model.* rows
    print("\n".join(knob_rows()))
