"""Packs: which jobs of a sweep can train together, and member checkpoints split from a pack's and merged into one.

A pack is a list of jobs whose configs agree on everything a population shares (widths, batch size, ``d_steps``,
the training subset, the normalization layers, the budget, the trainer, evaluation and callback settings); they may
differ in the per-member settings (``MEMBER_CONFIG_KEYS``: seed, activations, loss, optimizer values, penalties,
label smoothing, instance noise, augmentation, spectral norm, EMA decay). ``pack_key`` is what must match.

Every tensor a population keeps has the member axis first (``gan.model.population``), so member k's checkpoint is slice
``[k:k+1]`` of each entry of the pack's, with its hyperparameters, optimizer values, data order and random streams
picked from the per-member lists: exactly the checkpoint a population of one writes, which ``gan.sample``,
``gan.evaluate`` and ``ckpt_path=`` accept. Merging does the inverse, to resume a pack from its members' files.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from gan.errors import CheckpointError
from gan.model.optim import PER_MEMBER_KEYS
from gan.model.spec import per_member_config_keys

# Config entries (dotted paths) that may differ between members of one pack: the member spec's per-member settings
# (the optimizers' kinds are shared: pack_key keeps them), and where each member writes. ``data.augment`` is
# ``model.augment``'s old place; ``tuning`` a tuning study's draw (its values are in model.*, resolved).
MEMBER_CONFIG_KEYS = tuple(
    k for k in per_member_config_keys() if k not in ("model.optimizer_g", "model.optimizer_d")
) + (
    "run_dir",
    "ckpt_path",
    "act",
    "data.seed",
    "data.augment",
    "logger.save_dir",
    "trainer.default_root_dir",
    "tuning",
)
DATAMODULE_KEY = "MNISTDataModule"
MEMBER_RNG_KEYS = ("shuffle_rng", "epoch_rng")  # the data module's per-member entries (one generator state each)
# Checkpoint entries that hold one part per member; every other entry (loops, epoch, step, ...) the pack shares.
PER_MEMBER_ENTRIES = ("state_dict", "hyper_parameters", "optimizer_states", DATAMODULE_KEY, "gan_rng", "run_configs")


def _drop(config: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(leaf, None)


def pack_key(config: Mapping[str, Any], resume_step: int | None = None) -> str:
    """What jobs must share to train in one pack: the config without its per-member entries (optimizers reduced to
    their kind and the names of their settings), and the step a resumed member continues from."""
    shared = copy.deepcopy(dict(config))
    for dotted in MEMBER_CONFIG_KEYS:
        _drop(shared, dotted)
    for key in ("optimizer_g", "optimizer_d"):
        optimizer = shared.get("model", {}).get(key)
        if isinstance(optimizer, dict):
            shared["model"][key] = {"_target_": optimizer.get("_target_"), "settings": sorted(optimizer)}
    return json.dumps({"config": shared, "resume_step": resume_step}, sort_keys=True, default=str)


def group_packs(keys: Sequence[str], max_members: int | None = None) -> list[list[int]]:
    """Indices of jobs grouped by equal keys (first-seen order), each group cut into packs of ``max_members``."""
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    size = max_members if max_members and max_members > 0 else None
    packs = []
    for members in groups.values():
        step = size or len(members)
        packs.extend(members[i : i + step] for i in range(0, len(members), step))
    return packs


def activation_order(members: Sequence[Mapping[str, Any]]) -> list[int]:
    """An order of a pack's members that puts members with the same discriminator (then generator) activations
    side by side, so that each activation group is a view, not a gather (see ``MemberActivation``)."""

    def signature(k: int) -> tuple[str, ...]:
        m = members[k]
        return (m["d_act"], m["d_out_act"], m["g_act"], m["g_out_act"])

    return sorted(range(len(members)), key=signature)


def _slice(t: torch.Tensor, k: int) -> torch.Tensor:
    """Member k's slice of a stacked tensor, as its own CPU tensor (a view would save the whole pack's storage)."""
    return t[k : k + 1].detach().to("cpu", copy=True)


# ----------------------------------------------------------------------------- optimizer states
def _member_optimizer_state(state: Mapping[str, Any], k: int) -> dict[str, Any]:
    groups = []
    for group in state["param_groups"]:
        groups.append({key: ([value[k]] if key in PER_MEMBER_KEYS else value) for key, value in group.items()})
    return {
        "state": {i: {name: _slice(t, k) for name, t in s.items()} for i, s in state["state"].items()},
        "param_groups": groups,
    }


def _merged_optimizer_state(states: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    groups = []
    for parts in zip(*(s["param_groups"] for s in states), strict=True):
        groups.append(
            {
                key: ([v for p in parts for v in p[key]] if key in PER_MEMBER_KEYS else value)
                for key, value in parts[0].items()
            }
        )
    # A parameter no member of a checkpoint ever updated (a PReLU slope in a pack without PReLU, say) has no state
    # there: it joins the merged state as zeros (the state an optimizer keeps for a parameter whose gradient is 0).
    indices = sorted({i for s in states for i in s["state"]})
    merged = {}
    for i in indices:
        like = next(s["state"][i] for s in states if i in s["state"])
        merged[i] = {
            name: torch.cat([s["state"][i][name] if i in s["state"] else torch.zeros_like(t) for s in states])
            for name, t in like.items()
        }
    return {"state": merged, "param_groups": groups}


# ----------------------------------------------------------------------------- checkpoints
def member_checkpoint(pack: Mapping[str, Any], k: int) -> dict[str, Any]:
    """Member ``k``'s checkpoint, as a population of one would have written it."""
    out = {key: value for key, value in pack.items() if key not in PER_MEMBER_ENTRIES}
    out["state_dict"] = {name: _slice(t, k) for name, t in pack["state_dict"].items()}
    out["hyper_parameters"] = {"members": [pack["hyper_parameters"]["members"][k]]}
    out["optimizer_states"] = [_member_optimizer_state(s, k) for s in pack.get("optimizer_states", [])]
    if DATAMODULE_KEY in pack:
        data = pack[DATAMODULE_KEY]
        out[DATAMODULE_KEY] = {**data, **{key: [data[key][k]] for key in MEMBER_RNG_KEYS if key in data}}
    if "gan_rng" in pack:
        out["gan_rng"] = {**pack["gan_rng"], "members": [pack["gan_rng"]["members"][k]]}
    if "run_configs" in pack:
        out["run_configs"] = [pack["run_configs"][k]]
    return out


def merge_checkpoints(members: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One pack checkpoint from members' checkpoints (each a population of one) taken at the same step."""
    first = members[0]
    steps = {m.get("global_step") for m in members}
    if len(steps) != 1:
        raise CheckpointError(f"member checkpoints from different steps cannot resume as one pack: {sorted(steps)}")
    out = {key: value for key, value in first.items() if key not in PER_MEMBER_ENTRIES}
    out["state_dict"] = {name: torch.cat([m["state_dict"][name] for m in members]) for name in first["state_dict"]}
    out["hyper_parameters"] = {"members": [h for m in members for h in m["hyper_parameters"]["members"]]}
    out["optimizer_states"] = [
        _merged_optimizer_state([m["optimizer_states"][i] for m in members])
        for i in range(len(first.get("optimizer_states", [])))
    ]
    if DATAMODULE_KEY in first:
        out[DATAMODULE_KEY] = {
            **first[DATAMODULE_KEY],
            **{
                key: [s for m in members for s in m[DATAMODULE_KEY][key]]
                for key in MEMBER_RNG_KEYS
                if key in first[DATAMODULE_KEY]
            },
        }
    if "gan_rng" in first:
        out["gan_rng"] = {**first["gan_rng"], "members": [s for m in members for s in m["gan_rng"]["members"]]}
    if all("run_configs" in m for m in members):
        out["run_configs"] = [c for m in members for c in m["run_configs"]]
    return out


def members_of(checkpoints: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(h) for c in checkpoints for h in c["hyper_parameters"]["members"]]
