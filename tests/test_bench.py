import json
import statistics

import pytest
import torch
from omegaconf import OmegaConf

from gan import bench
from gan.errors import ConfigError
from gan.model.spec import member_hparams
from tests.helpers import make_mnist


@pytest.mark.slow  # a gan.bench run
def test_bench_prints_one_json_line_with_every_throughput(tmp_path, capsys):
    root = make_mnist(tmp_path / "data", n_train=512, n_test=16)
    summary = bench.main(
        [
            "--data-root",
            str(root),
            "--members",
            "3",
            "--warmup",
            "2",
            "--iters",
            "6",
            "--pack-iters",
            "3",
            "--rounds",
            "1",
            "--sequential",
            "2",
            "data.batch_size=32",
            "model.g_hidden=[16]",
            "model.d_hidden=[16]",
            "trainer.enable_progress_bar=false",
        ]
    )
    last = capsys.readouterr().out.strip().splitlines()[-1]
    parsed = json.loads(last)
    assert parsed == summary
    throughputs = ("reference_img_s", "single_img_s", "sequential_member_img_s", "pack_member_img_s")
    assert min(parsed[k] for k in throughputs) > 0
    paired = [s / r for s, r in zip(parsed["rounds"]["single"], parsed["rounds"]["reference"], strict=True)]
    assert parsed["single_vs_reference_rounds"] == pytest.approx(paired, abs=2e-3)
    assert parsed["single_vs_reference"] == pytest.approx(statistics.median(paired), abs=2e-3)
    ratio = parsed["pack_member_img_s"] / parsed["sequential_member_img_s"]
    assert parsed["pack_vs_sequential"] == pytest.approx(ratio, abs=0.01) and parsed["sequential_runs_timed"] == 2
    assert parsed["timed_iterations"] == {"reference": 6, "single": 6, "sequential": 3, "pack": 3}
    assert parsed["batch_size"] == 32


def test_pack_members_cycle_through_the_activation_grid():
    members = bench.pack_members(member_hparams(), 9)
    assert [m["seed"] for m in members] == list(range(9))
    assert [m["d_act"] for m in members[:8]] == [*bench.GRID_ACTIVATIONS, "relu"]
    assert {m["g_act"] for m in members} == {"relu", "leaky_relu"}
    assert bench.pack_members(member_hparams(g_act="tanh"), 1)[0]["g_act"] == "tanh"  # a single run: as configured


def test_reference_loop_trains_the_same_model():
    """The reference does real updates of the same architecture, with torch's own layers (not an empty loop)."""
    member = member_hparams(g_hidden=[16, 16], d_hidden=[16])
    images = torch.randint(0, 256, (64, 1024), dtype=torch.uint8)
    ref = bench.ReferenceLoop(member, images, 16, torch.device("cpu"))
    assert [m.out_features for m in ref.G if isinstance(m, torch.nn.Linear)] == [16, 16, 1024]
    before = {k: v.clone() for k, v in ref.G.state_dict().items()} | {
        f"D.{k}": v.clone() for k, v in ref.D.state_dict().items()
    }
    ref.step()
    after = ref.G.state_dict() | {f"D.{k}": v for k, v in ref.D.state_dict().items()}
    assert all(not torch.equal(before[k], after[k]) for k in before)
    assert len(ref.opt_g.state) == 6 and len(ref.opt_d.state) == 4


@pytest.mark.parametrize(
    "override", ["stability=r1", "stability=wgan_gp", "stability=g_ema", "model.augment=cutout", "stability=r3gan"]
)
def test_bench_refuses_switches_the_reference_does_not_implement(tmp_path, override, capsys):
    root = make_mnist(tmp_path / "data", n_train=512, n_test=16)
    with pytest.raises(SystemExit) as exit_info:  # a clear message and status 2, no traceback
        bench.main([f"data.root={root}", override, "--warmup", "1", "--iters", "2"])  # flags after overrides too
    assert exit_info.value.code == 2 and "does not implement" in capsys.readouterr().err
    cfg = OmegaConf.merge(bench.bench_config(str(root), str(tmp_path), "cpu", [override]), {"seed": 0})
    with pytest.raises(ConfigError, match="does not implement"):  # the check itself
        bench.check_reference_can_match(bench.member_config(cfg))


def test_the_data_folder_is_data_root_as_everywhere_and_the_old_flag_still_works(tmp_path):
    split = bench.data_root_and_overrides
    assert split(None, ["data.root=../m", "data.batch_size=8"]) == ("../m", ["data.batch_size=8"])
    assert split("../m", ["data.batch_size=8"]) == ("../m", ["data.batch_size=8"])  # --data-root, the old flag
    assert split("../m", ["data.root=../m"]) == ("../m", [])  # both, agreeing
    assert split(None, ["model.g_act=elu"]) == (None, ["model.g_act=elu"])  # neither: the config's default
    with pytest.raises(ConfigError, match=r"two data folders, data.root=a and --data-root b: give one, as data.root="):
        split("b", ["data.root=a"])
    root = make_mnist(tmp_path / "data", n_train=64, n_test=16)
    data_root, rest = split(None, [f"data.root={root}", "data.batch_size=8"])
    cfg = bench.bench_config(data_root, str(tmp_path), "cpu", rest)
    assert cfg.data.root == str(root) and cfg.data.batch_size == 8
    assert bench.bench_config(None, str(tmp_path), "cpu", []).data.root == "data"  # conf/data/mnist.yaml's


def test_two_different_data_folders_are_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--data-root", str(tmp_path / "a"), f"data.root={tmp_path / 'b'}", "--iters", "2"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"two data folders, data.root={tmp_path / 'b'} and --data-root " in err


def test_a_pack_no_memory_holds_is_refused_before_any_work(tmp_path, capsys):
    """Issue 23's probe: --members 100000000 built members for minutes until the machine ran out of memory; it is
    refused with the memory it would need, before the data folder (absent here) is read."""
    with pytest.raises(SystemExit) as exit_info:
        bench.main([f"data.root={tmp_path / 'absent'}", "--members", "100000000", "--sequential", "1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert "a pack of --members 100000000 would need about " in err and " PB of memory" in err


def test_bench_metrics_times_the_card_on_held_out_digits(tmp_path, capsys, monkeypatch):
    """``gan.bench --metrics``: one evaluation's metrics without and with the card, their ratio and the card's
    parts, printed and returned as one JSON line (an untrained evaluator over tiny data: the timing is the same
    work)."""
    from gan.data import load_split, to_flat_images
    from gan.eval import classifier
    from gan.eval.metrics import kth_neighbour_radius

    root = make_mnist(tmp_path / "data", n_train=256, n_test=64)
    torch.manual_seed(0)
    model = classifier.MNISTClassifier().eval()
    feats, logits = classifier.embed(model, to_flat_images(load_split(root, "test")[0], (0.0, 1.0)), (0.0, 1.0))
    untrained = classifier.Evaluator(
        model, 1.0, feats, logits, kth_neighbour_radius(feats), tmp_path / "e.pt", root=str(root)
    )
    monkeypatch.setattr(bench, "load_evaluator", lambda data_root: untrained)
    summary = bench.main(["--metrics", "--samples", "100", "--rounds", "1", f"data.root={root}"])
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1]) == summary and "without the metric card" in out[-2]
    assert summary["samples"] == 100 and summary["ratio_rounds"] == [summary["ratio"]]
    assert summary["after_s"] > 0 and summary["parts_s"]["memorized"] >= 0
    with pytest.raises(SystemExit):
        bench.main(["--metrics", "--samples", "2", f"data.root={root}"])  # fewer than the k-NN metrics need


@pytest.mark.parametrize("override", ["seed=3", "+model.fixed_noise_seed=1"])
def test_seeds_the_bench_sets_itself_are_refused_not_ignored(override):
    with pytest.raises(ConfigError, match=r"the bench gives its members their seeds itself"):
        bench.data_root_and_overrides(None, [override])
