import json

import pytest

from gan import bench
from tests.conftest import make_mnist


def test_bench_prints_one_json_line_with_both_throughputs(tmp_path, capsys):
    root = make_mnist(tmp_path / "data", n_train=512, n_test=16)
    summary = bench.main(["--data-root", str(root), "--warmup", "3", "--iters", "8", "--segment", "4",
                          "data.batch_size=32", "trainer.enable_progress_bar=false"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    parsed = json.loads(last)
    assert parsed == summary
    assert parsed["lightning_img_s"] > 0 and parsed["reference_img_s"] > 0
    assert parsed["ratio"] == pytest.approx(parsed["lightning_img_s"] / parsed["reference_img_s"], abs=2e-3)
    assert parsed["timed_iterations_each"] == 8 and parsed["batch_size"] == 32


def test_reference_loop_trains_the_same_model(tmp_path):
    """The reference does real updates of the same architecture (it is not an empty loop)."""
    import torch

    from gan.bench import ReferenceLoop, bench_config

    root = make_mnist(tmp_path / "data", n_train=64, n_test=8)
    cfg = bench_config(str(root), str(tmp_path / "run"), 4, ["data.batch_size=16"])
    data = torch.rand(64, 1024) * 2 - 1
    ref = ReferenceLoop(cfg, data)
    before = {k: v.clone() for k, v in ref.G.state_dict().items()} | {
        f"D.{k}": v.clone() for k, v in ref.D.state_dict().items()
    }
    ref.step()
    after = ref.G.state_dict() | {f"D.{k}": v for k, v in ref.D.state_dict().items()}
    assert all(not torch.equal(before[k], after[k]) for k in before)
    assert len(ref.opt_g.state) == 8 and len(ref.opt_d.state) == 8


@pytest.mark.parametrize("override", ["stability=r1", "stability=wgan_gp", "stability=g_ema", "data.augment=cutout"])
def test_bench_refuses_switches_the_reference_does_not_implement(tmp_path, override):
    root = make_mnist(tmp_path / "data", n_train=512, n_test=16)
    with pytest.raises(bench.BenchConfigError, match="does not implement"):
        bench.main(["--data-root", str(root), "--warmup", "1", "--iters", "2", "--segment", "2", override])
