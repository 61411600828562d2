"""cuda_graphs: the training iteration captured as one CUDA graph trains as the eager iteration does.

On a GPU (skipped without one): a captured pack against the eager pack over 1,000 iterations (every member, every
weight, within the GPU tolerance the pack-against-alone test uses), a captured member against its captured run
alone, a resumed captured pack against an uninterrupted one, a diverging member frozen while the others go on.
Everywhere: the setting's checks, and the CPU never captures.
"""

import json
import re
from pathlib import Path

import pytest
import torch

import gan.model.module
from gan import bench
from gan.errors import ConfigError
from gan.model.graphed import StepGraph, cuda_graph_setting, graphs_wanted
from gan.runs.drift import largest_difference
from gan.runs.fit import train_pack
from gan.runs.plan import check_cuda_graphs, prepare
from tests.helpers import compose_train, fast_overrides, make_mnist, weights
from tests.runs.test_packing import CUDA_ATOL, MIXED, SHARED_TRICKS, TRICKS, assert_same_run, plans_for

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
)

LONG_RUN = [
    "model.g_hidden=[32,32]",
    "model.d_hidden=[32,32]",
    "data.batch_size=16",
    "trainer.max_epochs=-1",
    "trainer.log_every_n_steps=50",
    "float32_matmul_precision=highest",
]
ITERATIONS = 1000


def _plans(tmp_path: Path, data: Path, members: dict, shared: list, tag: str, graphs: str, iterations: int, *extra):
    overrides = fast_overrides(data, **{"trainer.accelerator": "gpu"}) + LONG_RUN
    overrides += [f"trainer.max_steps={iterations}", f"cuda_graphs={graphs}", *shared, *extra]
    return [
        prepare(compose_train(overrides + list(more), tmp_path / f"{tag}_{name}")) for name, more in members.items()
    ]


def _assert_close_runs(ours: Path, theirs: Path, atol: float, what: str) -> float:
    """Every weight within ``atol``; first, exactly, what no rounding can change: each member's random stream and
    Adam step counts (a missed or extra draw or step fails here, whatever the weights' drift)."""
    ca, cb = (
        torch.load(p / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True) for p in (ours, theirs)
    )
    assert ca["global_step"] == cb["global_step"], what
    for x, y in zip(ca["gan_rng"]["members"], cb["gan_rng"]["members"], strict=True):
        assert torch.equal(x, y), f"{what}: the random streams differ"
    for oa, ob in zip(ca["optimizer_states"], cb["optimizer_states"], strict=True):
        for i, state in oa["state"].items():
            if i in ob["state"]:  # (a PReLU slot only another member of a pack used has no state alone)
                assert torch.equal(state["step"], ob["state"][i]["step"]), f"{what}: Adam step counts differ"
    a, b = weights(ours), weights(theirs)
    assert set(a) == set(b)
    worst = 0.0
    for key, value in a.items():
        if value.is_floating_point():
            worst = max(worst, float((value.float() - b[key].float()).abs().max()))
        torch.testing.assert_close(
            value.float(), b[key].float(), rtol=0, atol=atol, msg=lambda m, k=key: f"{what} {k}: {m}"
        )
    return worst


def _replays(text: str) -> tuple[int, int]:
    found = re.findall(r"CUDA graphs: the iteration was captured (\d+) time\(s\) and replayed (\d+) times", text)
    assert found, "no CUDA graph summary printed: the iteration was not captured"
    return int(found[-1][0]), int(found[-1][1])


@pytest.mark.slow
@needs_cuda
@pytest.mark.parametrize("members,shared", [(MIXED, []), (TRICKS, SHARED_TRICKS)], ids=["mixed", "tricks"])
def test_a_captured_pack_trains_as_the_eager_pack_over_1000_iterations(tmp_path, tiny_mnist, capfd, members, shared):
    """Members differing in seed, activations, loss, lr, BRE, R2 (mixed) or in every stability switch, instance
    noise decaying to 0 (a recapture) included (tricks): every weight of every member within CUDA_ATOL."""
    captured = _plans(tmp_path, tiny_mnist, members, shared, "graph", "on", ITERATIONS)
    assert {s["status"] for s in train_pack(captured)} == {"finished"}
    captures, replays = _replays(capfd.readouterr().out)
    assert replays >= ITERATIONS - 10 and captures >= 1
    eager = _plans(tmp_path, tiny_mnist, members, shared, "eager", "off", ITERATIONS)
    assert {s["status"] for s in train_pack(eager)} == {"finished"}
    assert "CUDA graphs:" not in capfd.readouterr().out
    worst = max(
        _assert_close_runs(Path(g.run_dir), Path(e.run_dir), CUDA_ATOL, name)
        for g, e, name in zip(captured, eager, members, strict=True)
    )
    print(f"captured against eager, {ITERATIONS} iterations, {len(members)} members: largest difference {worst:.3g}")


@pytest.mark.slow
@needs_cuda
def test_a_captured_member_trains_as_its_captured_run_alone(tmp_path, tiny_mnist):
    members = {"plain": MIXED["plain"], "lsgan_lr": MIXED["lsgan_lr"], "bre_elu": MIXED["bre_elu"]}
    packed = _plans(tmp_path, tiny_mnist, members, [], "pack", "on", ITERATIONS)
    train_pack(packed)
    worst = 0.0
    for plan, name in zip(packed, members, strict=True):
        alone = _plans(tmp_path, tiny_mnist, {name: members[name]}, [], "alone", "on", ITERATIONS)
        train_pack(alone)
        worst = max(worst, _assert_close_runs(Path(plan.run_dir), Path(alone[0].run_dir), CUDA_ATOL, name))
    print(f"captured pack member against captured run alone, {ITERATIONS} iterations: largest difference {worst:.3g}")


def resumed_against_straight(tmp_path: Path, data: Path, accelerator: str, first: int, total: int, atol: float):
    """``first`` captured iterations, then a resume to ``total``, against ``total`` straight: the random streams,
    the Adam state and the instance noise's decay (a recapture as it ends) continue (``cuda_graphs=auto``)."""
    members = {"plain": [], "elu_noise": ["seed=3", "model.d_act=elu", "model.instance_noise=0.1"]}
    decay = f"model.instance_noise_iters={(first + total) // 2}"

    def plans(tag: str, iterations: int, *extra: str) -> list:
        overrides = fast_overrides(data, **{"trainer.accelerator": accelerator}) + LONG_RUN
        overrides += [f"trainer.max_steps={iterations}", "cuda_graphs=auto", *extra]
        return [prepare(compose_train(overrides + more, tmp_path / f"{tag}_{name}")) for name, more in members.items()]

    halves = plans("first", first, decay)
    assert {s["status"] for s in train_pack(halves)} == {"finished"}
    resumed = [
        prepare(
            compose_train(
                fast_overrides(data, **{"trainer.accelerator": accelerator})
                + LONG_RUN
                + [f"trainer.max_steps={total}", f"ckpt_path={Path(p.run_dir) / 'checkpoints' / 'last.ckpt'}"],
                tmp_path / f"resumed_{name}",
            )
        )
        for p, name in zip(halves, members, strict=True)
    ]
    assert {s["status"] for s in train_pack(resumed)} == {"finished"}
    straight = plans("straight", total, decay)
    assert {s["status"] for s in train_pack(straight)} == {"finished"}
    for ours, theirs, name in zip(resumed, straight, members, strict=True):
        _assert_close_runs(Path(ours.run_dir), Path(theirs.run_dir), atol, name)


@pytest.mark.slow
@needs_cuda
def test_a_resumed_captured_pack_continues_as_an_uninterrupted_one(tmp_path, tiny_mnist):
    resumed_against_straight(tmp_path, tiny_mnist, "gpu", 200, 400, CUDA_ATOL)


@pytest.mark.slow
@needs_cuda
def test_a_diverging_member_stops_alone_with_the_graph_on(tmp_path, tiny_mnist, capfd):
    members = {
        "ok": [],
        "nan": ["seed=1", "model.optimizer_g.lr=1e30", "model.optimizer_d.lr=1e30"],
        "ok2": ["seed=2", "model.d_act=elu"],
    }
    packed = _plans(tmp_path, tiny_mnist, members, [], "div", "on", 300)
    assert [s["status"] for s in train_pack(packed)] == ["finished", "diverged", "finished"]
    captures, _ = _replays(capfd.readouterr().out)
    assert captures >= 2  # captured again once the diverged member was frozen
    alone = _plans(tmp_path, tiny_mnist, {"ok2": members["ok2"]}, [], "alone", "on", 300)
    train_pack(alone)
    _assert_close_runs(Path(packed[2].run_dir), Path(alone[0].run_dir), CUDA_ATOL, "ok2")


def test_the_cpu_never_captures_and_bad_settings_are_refused(tmp_path, tiny_mnist):
    assert not graphs_wanted("auto", torch.device("cpu")) and not graphs_wanted("on", torch.device("cpu"))
    assert graphs_wanted("auto", torch.device("cuda")) and not graphs_wanted("off", torch.device("cuda"))
    # YAML reads an unquoted on/off as a boolean, which a string field keeps as "True"/"False"
    assert [cuda_graph_setting(v) for v in (True, "False", "auto", "on")] == ["on", "off", "auto", "on"]
    with pytest.raises(ConfigError, match=r"cuda_graphs='sometimes': valid choices are auto, on, off"):
        prepare(compose_train([*fast_overrides(tiny_mnist), "cuda_graphs=sometimes"], tmp_path / "bad"))
    with pytest.raises(ConfigError, match=r"cuda_graphs=on with trainer.accelerator=cpu: CUDA graphs need a GPU"):
        prepare(compose_train([*fast_overrides(tiny_mnist), "cuda_graphs=on"], tmp_path / "cpu_on"))
    with pytest.raises(ConfigError, match=r"cuda_graphs=on with trainer.precision=bf16-mixed: a captured iteration"):
        check_cuda_graphs("on", "gpu", "bf16-mixed")
    check_cuda_graphs("auto", "gpu", "16-mixed")  # auto: such a run stays eager
    assert not graphs_wanted("auto", torch.device("cuda"), "16-mixed") and graphs_wanted(
        "on", torch.device("cuda"), "32-true"
    )
    assert not (tmp_path / "bad").exists() and not (tmp_path / "cpu_on").exists()


class ReplayedBody(StepGraph):
    """A graph's Python path on the CPU: the warm-ups, the key changes, the capture's ``graphed`` body (the raw
    optimizers, plain backward, the iteration and noise scales read from tensors) and the replay's bookkeeping,
    with "replay" running that body again instead of a recorded graph."""

    def _warm_up(self, batch):
        return self.body(batch, False)

    def _capture(self):
        self.graph = self

    def reset(self) -> None:  # what release() calls on a graph
        pass

    def _replay(self) -> None:
        self.outputs = self.body(self.static_batch, True)
        self.replays += 1


@pytest.fixture
def replayed_on_cpu(monkeypatch):
    monkeypatch.setattr(
        gan.model.module, "graphs_wanted", lambda setting, device, precision="32-true": setting != "off"
    )
    monkeypatch.setattr(gan.model.module, "StepGraph", ReplayedBody)


@pytest.mark.slow
@pytest.mark.parametrize("members,shared", [(MIXED, []), (TRICKS, SHARED_TRICKS)], ids=["mixed", "tricks"])
def test_the_graphed_iteration_is_the_eager_one_bit_for_bit_on_the_cpu(
    tmp_path, tiny_mnist, capfd, replayed_on_cpu, members, shared
):
    """The body a capture records, run as the replays would run it: every member's weights, optimizer state,
    random streams and logged losses equal to the eager pack's, global_step counted the same (40 iterations:
    epoch ends, the EMA starting, instance noise decaying to 0 and the recapture it causes)."""
    graphed = plans_for(tmp_path, tiny_mnist, members, [*shared, "cuda_graphs=auto"], "graphed")
    assert {s["status"] for s in train_pack(graphed)} == {"finished"}
    captures, replays = _replays(capfd.readouterr().out)
    assert replays >= 30 and captures >= 1
    eager = plans_for(tmp_path, tiny_mnist, members, shared, "eager")  # the default: eager
    assert {s["status"] for s in train_pack(eager)} == {"finished"}
    assert "CUDA graphs:" not in capfd.readouterr().out
    for g, e in zip(graphed, eager, strict=True):
        assert_same_run(Path(g.run_dir), Path(e.run_dir))


@pytest.mark.slow
def test_a_diverging_member_is_frozen_and_the_rest_recaptured(tmp_path, tiny_mnist, capfd, replayed_on_cpu):
    members = {"ok": [], "nan": ["seed=1", "model.optimizer_g.lr=1e30", "model.optimizer_d.lr=1e30"]}
    packed = plans_for(tmp_path, tiny_mnist, members, ["cuda_graphs=auto"], "div")
    assert [s["status"] for s in train_pack(packed)] == ["finished", "diverged"]
    captures, _ = _replays(capfd.readouterr().out)
    assert captures == 2
    alone = plans_for(tmp_path, tiny_mnist, {"ok": []}, [], "alone")  # the default: eager
    train_pack(alone)
    assert_same_run(Path(packed[0].run_dir), Path(alone[0].run_dir))


@pytest.mark.slow
def test_a_resumed_graphed_pack_continues_bit_for_bit_on_the_cpu(tmp_path, tiny_mnist, replayed_on_cpu):
    resumed_against_straight(tmp_path, tiny_mnist, "cpu", 20, 40, 0.0)


class OffByOne(ReplayedBody):
    """A wrong graph: every replay leaves G's output bias nudged by 1e-3, as a stale or missed update would."""

    nudged: torch.Tensor

    def _replay(self) -> None:
        super()._replay()
        with torch.no_grad():
            self.nudged.add_(1e-3)


@pytest.mark.slow
def test_drift_is_zero_for_the_graphed_body_and_shows_a_wrong_update_at_once(tmp_path, capsys, monkeypatch):
    root = make_mnist(tmp_path / "data", n_train=256, n_test=16)
    small = ["--members", "3", "data.batch_size=32", "model.g_hidden=[16]", "model.d_hidden=[16]"]
    monkeypatch.setattr(
        gan.model.module, "graphs_wanted", lambda setting, device, precision="32-true": setting != "off"
    )
    monkeypatch.setattr(gan.model.module, "StepGraph", ReplayedBody)
    summary = bench.main(["--drift", "12", f"data.root={root}", *small])
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1]) == summary
    assert [r["iteration"] for r in summary["drift"]] == [1, 2, 5, 10, 12]
    assert all(r["captured_vs_eager"] == 0 and r["eager_vs_eager"] == 0 for r in summary["drift"])
    assert "CUDA graphs: the iteration was captured 1 time(s)" in out  # the captured side did replay

    def nudging_graph(*args):
        graph = OffByOne(*args)
        graph.nudged = nudged[0]
        return graph

    original_start = gan.model.module.GANModule.on_fit_start
    nudged: list[torch.Tensor] = []

    def on_fit_start(self):
        nudged[:] = [self.generator.net.out.bias]
        original_start(self)

    monkeypatch.setattr(gan.model.module.GANModule, "on_fit_start", on_fit_start)
    monkeypatch.setattr(gan.model.module, "StepGraph", nudging_graph)
    wrong = bench.main(["--drift", "5", f"data.root={root}", *small])["drift"]
    captured_at = {r["iteration"]: r["captured_vs_eager"] for r in wrong}
    assert captured_at[5] >= 1e-3 and all(r["eager_vs_eager"] == 0 for r in wrong)


def test_largest_difference_reads_every_entry_and_says_nan():
    a = {"w": torch.zeros(3), "b": torch.ones(2)}
    assert largest_difference(a, {"w": torch.tensor([0.0, 0.5, 0.0]), "b": torch.ones(2)}) == 0.5
    assert largest_difference(a, a) == 0.0
    assert largest_difference(a, {"w": torch.zeros(3), "b": torch.tensor([1.0, float("nan")])}) != 0.0
