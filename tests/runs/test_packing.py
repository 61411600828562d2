"""gan.runs.packing: a pack's members train as they do alone; checkpoints split and merge; pack keys."""

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from gan.runs.fit import train_pack
from gan.runs.packing import group_packs, member_checkpoint, merge_checkpoints, pack_key
from gan.runs.plan import MemberPlan, prepare
from tests.helpers import compose_train, fast_overrides, scalars, weights

SMALL = [
    "model.g_hidden=[32,32]",
    "model.d_hidden=[32,32]",
    "data.batch_size=16",
    "trainer.max_epochs=-1",
    "trainer.max_steps=40",  # 2.5 epochs of the tiny data: epoch boundaries, the EMA and noise decay
    "trainer.log_every_n_steps=10",
]
# Members that differ in everything a pack lets them differ in.
MIXED = {
    "plain": [],
    "other_seed_tanh_sigmoid_out": ["seed=7", "model.g_act=tanh", "model.g_out_act=sigmoid", "model.d_act=elu"],
    "lsgan_lr": [
        "seed=3",
        "model.loss=lsgan",
        "model.optimizer_g.lr=1e-3",
        "model.optimizer_d.betas=[0.9,0.99]",
        "model.g_out_act=hardtanh",
        "model.act_params.hardtanh.max_val=2",
    ],
    "hinge_prelu": [
        "seed=4",
        "model.loss=hinge",
        "model.g_act=prelu",
        "model.d_act=leaky_relu",
        "model.act_params.leaky_relu.negative_slope=0.1",
    ],
    "minimax_identity_out": ["seed=5", "model.loss=minimax", "model.g_act=gelu", "model.d_out_act=tanh"],
    "bre_elu": ["seed=7", "model.bre_weight=1.0", "model.d_act=elu"],
    "rpgan_r2_variance_preserving": [
        "seed=6",
        "model.loss=rpgan",
        "model.r2_weight=2.0",
        "model.init=variance_preserving",
        "model.g_act=silu",
        "model.optimizer_g.betas=[0.0,0.99]",
    ],
}
# Members with every stability switch (the pack shares batch norm in G, layer norm in D, minibatch std and EMA).
SHARED_TRICKS = ["model.g_norm=batch", "model.d_norm=layer", "model.d_minibatch_std=true", "model.g_ema=true"]
TRICKS = {
    "spectral_norm_r1": ["model.d_spectral_norm=true", "model.r1_weight=1.0", "model.g_ema_decay=0.9"],
    "wgan_gp_noise": ["seed=1", "model.loss=wgan-gp", "model.instance_noise=0.1", "model.g_act=elu"],
    "augment_smoothing": [
        "seed=2",
        "data.augment=[translation,cutout]",
        "model.label_smoothing=0.1",
        "model.g_ema_decay=0.5",
    ],
    "plain_with_tricks": ["seed=3", "model.d_act=tanh"],
    "r3gan_spectral_norm": ["seed=4", "stability=r3gan", "model.d_spectral_norm=true"],
}


def plans_for(tmp_path: Path, data: Path, members: dict[str, list[str]], shared: list[str], tag: str) -> list:
    return [
        prepare(compose_train(fast_overrides(data) + SMALL + shared + extra, tmp_path / f"{tag}_{name}"))
        for name, extra in members.items()
    ]


def checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def assert_same_run(a: Path, b: Path) -> None:
    """Two run directories hold the same training: weights, optimizer states, random streams, logged losses."""
    ca, cb = checkpoint(a), checkpoint(b)
    assert ca["hyper_parameters"] == cb["hyper_parameters"]
    assert set(ca["state_dict"]) == set(cb["state_dict"])
    for name, value in ca["state_dict"].items():
        assert torch.allclose(value.float(), cb["state_dict"][name].float(), atol=1e-5, rtol=0), name
    for oa, ob in zip(ca["optimizer_states"], cb["optimizer_states"], strict=True):
        assert oa["param_groups"] == ob["param_groups"]
        for i, state in oa["state"].items():
            for key, value in state.items():
                if i in ob["state"]:
                    assert torch.allclose(value, ob["state"][i][key], atol=1e-5, rtol=0), (i, key)
                elif key != "step":  # a slot only another member of the pack used (a PReLU slope): untouched
                    assert not value.any(), (i, key)
    assert all(torch.equal(x, y) for x, y in zip(ca["gan_rng"]["members"], cb["gan_rng"]["members"], strict=True))
    sa, sb = scalars(a), scalars(b)
    assert {t for t in sa if t.startswith("train/")} == {t for t in sb if t.startswith("train/")}
    for tag in (t for t in sa if t.startswith("train/")):
        assert [s for s, _ in sa[tag]] == [s for s, _ in sb[tag]]
        assert [v for _, v in sa[tag]] == pytest.approx([v for _, v in sb[tag]], abs=1e-5), tag
    assert json.loads((a / "results.json").read_text())["status"] == "finished"


@pytest.mark.slow
@pytest.mark.parametrize("members,shared", [(MIXED, []), (TRICKS, SHARED_TRICKS)], ids=["mixed", "tricks"])
def test_each_member_of_a_pack_trains_exactly_as_it_does_alone(tmp_path, tiny_mnist, members, shared):
    """40 iterations: a pack of members that differ in seed, activations (output ones included), loss and
    learning rates, or in every stability switch, against each member trained alone."""
    packed = plans_for(tmp_path, tiny_mnist, members, shared, "pack")
    summaries = train_pack(packed)
    assert [s["status"] for s in summaries] == ["finished"] * len(members)
    for plan, name in zip(packed, members, strict=True):
        alone = plans_for(tmp_path, tiny_mnist, {name: members[name]}, shared, "alone")
        train_pack(alone)
        assert_same_run(Path(plan.run_dir), Path(alone[0].run_dir))


@pytest.mark.slow
def test_member_checkpoints_split_from_a_pack_and_merge_back(tmp_path, tiny_mnist):
    plans = plans_for(tmp_path, tiny_mnist, {"a": [], "b": ["seed=2", "model.g_act=tanh"]}, [], "split")
    train_pack(plans)
    members = [checkpoint(Path(p.run_dir)) for p in plans]
    pack = merge_checkpoints(members)
    assert pack["state_dict"]["fixed_noise"].shape[0] == 2
    assert pack["optimizer_states"][0]["param_groups"][0]["lr"] == [2e-4, 2e-4]
    for k, member in enumerate(members):
        again = member_checkpoint(pack, k)
        assert again["hyper_parameters"] == member["hyper_parameters"]
        assert all(torch.equal(again["state_dict"][n], v) for n, v in member["state_dict"].items())
        assert again["optimizer_states"][1]["param_groups"] == member["optimizer_states"][1]["param_groups"]
    members[1]["global_step"] += 2
    with pytest.raises(ValueError, match="different steps"):
        merge_checkpoints(members)


def test_pack_keys_separate_what_a_pack_must_share():
    base = compose_train(["trainer.max_epochs=3"])

    def key(*overrides: str) -> str:
        return pack_key(OmegaConf.to_container(compose_train(["trainer.max_epochs=3", *overrides]), resolve=True))

    same = {
        key(),
        key("seed=4"),
        key("model.g_act=tanh", "model.d_act=elu"),
        key("model.loss=hinge"),
        key("model.optimizer_g.lr=1e-3"),
        key("data.augment=cutout"),
        key("model.augment=cutout"),
        key("model.d_spectral_norm=true"),
        key("model.r1_weight=2"),
        key("stability=instance_noise"),
    }
    assert len(same) == 1 and base is not None
    different = [
        key("model.g_hidden=[64]"),
        key("data.batch_size=32"),
        key("model.d_steps=2"),
        key("trainer.max_epochs=4"),
        key("data.train_size=1000"),
        key("model.g_norm=batch"),
        key("model.g_ema=true"),
        key("model.optimizer_g._target_=gan.model.optim.SGD", "~model.optimizer_g.betas"),
    ]
    assert len(set(different) | same) == len(different) + 1
    assert group_packs(["a", "b", "a", "a", "b"], max_members=2) == [[0, 2], [3], [1, 4]]
    assert group_packs(["a", "b", "a"]) == [[0, 2], [1]]


@pytest.mark.slow
def test_a_diverging_member_stops_alone(tmp_path, tiny_mnist):
    """A learning rate of 1e30 makes member 1's losses non-finite within a few iterations: it is recorded diverged
    and frozen, the others train exactly as they do alone."""
    members = {
        "ok": [],
        "nan": ["seed=1", "model.optimizer_g.lr=1e30", "model.optimizer_d.lr=1e30"],
        "ok2": ["seed=2", "model.d_act=elu"],
    }
    packed = plans_for(tmp_path, tiny_mnist, members, [], "div")
    summaries = train_pack(packed)
    assert [s["status"] for s in summaries] == ["finished", "diverged", "finished"]
    results = json.loads((Path(packed[1].run_dir) / "results.json").read_text())
    assert results["status"] == "diverged"
    assert re.fullmatch(r"non-finite loss in iteration \d+( \(found at iteration \d+\))?", results["reason"])
    assert not (Path(packed[1].run_dir) / "checkpoints" / "last.ckpt").exists()  # it never had a good epoch end
    alone = plans_for(tmp_path, tiny_mnist, {"ok2": members["ok2"]}, [], "div_alone")
    train_pack(alone)
    assert_same_run(Path(packed[2].run_dir), Path(alone[0].run_dir))


# --------------------------------------------------------------------------------------------------------------
# 3. On a GPU: a member of a pack against the same member alone

PACK_RUN = [
    "model.g_hidden=[32,32]",
    "model.d_hidden=[32,32]",
    "data.batch_size=16",
    "trainer.max_epochs=-1",
    "trainer.max_steps=20",  # iterations: 1.25 epochs of the tiny data
    "trainer.log_every_n_steps=10",
    "float32_matmul_precision=highest",  # no TF32: a member's matmuls differ between pack and alone only in order
]
# Members that differ in seed, loss, learning rate and both hidden activations.
PACK_MEMBERS = {
    "plain": [],
    "lsgan_elu_tanh_lr": [
        "seed=3",
        "model.loss=lsgan",
        "model.optimizer_g.lr=1e-3",
        "model.g_act=elu",
        "model.d_act=tanh",
    ],
}
# On CUDA a pack's batched matmul (one bmm over K members) may sum in another order than a population of one's.
CUDA_ATOL = 1e-4


def pack_against_alone(tmp_path: Path, data: Path, accelerator: str, atol: float) -> None:
    """Train PACK_MEMBERS as one pack and each alone (gan.runs.fit.train_pack, as tests/test_packing.py does on the
    CPU), and compare each member's last checkpoint with its run alone: every weight within ``atol``."""

    def plans(names: Sequence[str], tag: str) -> list[MemberPlan]:
        overrides = fast_overrides(data, **{"trainer.accelerator": accelerator}) + PACK_RUN
        return [prepare(compose_train(overrides + PACK_MEMBERS[n], tmp_path / f"{tag}_{n}")) for n in names]

    packed = plans(list(PACK_MEMBERS), "pack")
    assert [s["status"] for s in train_pack(packed)] == ["finished"] * len(PACK_MEMBERS)
    alone = {name: plans([name], "alone")[0] for name in PACK_MEMBERS}
    for plan in alone.values():
        assert [s["status"] for s in train_pack([plan])] == ["finished"]
    for plan, name in zip(packed, PACK_MEMBERS, strict=True):
        ours, theirs = weights(Path(plan.run_dir)), weights(Path(alone[name].run_dir))
        assert set(ours) == set(theirs)
        for key, value in ours.items():
            torch.testing.assert_close(
                value.float(), theirs[key].float(), rtol=0, atol=atol, msg=lambda m, n=f"{name}: {key}": f"{n}: {m}"
            )
    # not vacuous: the two members' runs are far apart (in the weights both have from the first iteration on)
    a, b = (weights(Path(alone[n].run_dir))["generator.net.out.weight"] for n in PACK_MEMBERS)
    assert (a - b).abs().max() > 100 * atol


@pytest.mark.slow  # trains through Lightning
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
def test_a_pack_member_on_cuda_trains_as_it_does_alone(tmp_path, tiny_mnist):
    """20 iterations on CUDA: each member of a pack of two (different seed, loss, lr, activations) within 1e-4 of
    the same member trained alone on CUDA."""
    pack_against_alone(tmp_path, tiny_mnist, "gpu", CUDA_ATOL)


def test_every_draw_of_a_tuning_study_packs_together(tmp_path, tiny_mnist):
    """The draws differ in per-member values only (learning rates, beta1, init, seed): one pack for the study."""
    keys = set()
    for j in (0, 1, 3):
        for g in ("relu", "tanh"):
            overrides = [
                "experiment=tuning_budget",
                f"tuning.draw={j}",
                f"model.g_act={g}",
                *fast_overrides(tiny_mnist),
            ]
            keys.add(pack_key(prepare(compose_train(overrides, tmp_path / f"{g}{j}")).config))
    assert len(keys) == 1
