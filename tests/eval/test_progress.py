"""Progress lines of long work: the evaluator's training, evaluations of many samples (gan.eval.classifier.Progress,
fed by the evaluator's batches and gan.eval.sampling), and the in-training evaluation that prints them."""

import pytest
import torch

from gan.eval.classifier import Evaluator, MNISTClassifier, Progress, embed, train_classifier
from gan.eval.metrics import kth_neighbour_radius
from gan.eval.sampling import score_members
from gan.model.module import GANModule
from gan.model.spec import member_hparams
from gan.runs import quality
from tests.helpers import make_mnist, run


def counted(lines: list[str]) -> list[str]:
    """Each progress line up to its parenthesis: ``LABEL: done/total WHAT``."""
    return [line.split(" (")[0] for line in lines]


def test_a_line_every_fifth_with_the_time_left_then_the_end():
    lines: list[str] = []
    progress = Progress("job", write=lines.append, min_interval=0)
    progress.say("starting")
    progress.phase("samples featurized", 10)
    for _ in range(10):
        progress.advance(1)
    progress.finish()
    assert lines[0] == "job: starting"
    assert counted(lines[1:6]) == [f"job: {n}/10 samples featurized" for n in (2, 4, 6, 8, 10)]
    assert all(", about " in line and line.endswith(" left)") for line in lines[1:5])
    assert "(100%; " in lines[5] and "left" not in lines[5]  # the end says how long it took, nothing is left
    assert lines[6].startswith("job: done in ") and len(lines) == 7


def test_a_jump_past_several_marks_is_one_line_and_a_quick_phase_shows_only_its_end():
    lines: list[str] = []
    progress = Progress("job", write=lines.append, min_interval=0)
    progress.phase("images", 10)
    progress.advance(7)  # 70%: one line, not one per mark passed
    progress.advance(1)  # 80%: the next mark
    assert counted(lines) == ["job: 7/10 images", "job: 8/10 images"]
    lines.clear()
    slow_lines = Progress("job", write=lines.append, min_interval=3600)  # lines at most hourly: the end still shows
    slow_lines.phase("images", 10)
    for _ in range(10):
        slow_lines.advance(1)
    assert counted(lines) == ["job: 10/10 images"]


def test_disabled_progress_is_silent_and_a_note_is_read_only_for_a_line():
    lines: list[str] = []
    reads: list[int] = []

    def note() -> str:
        reads.append(1)
        return "loss 0.1"

    quiet = Progress("job", enabled=False, write=lines.append, min_interval=0)
    quiet.say("starting")
    quiet.phase("batches", 4)
    for _ in range(4):
        quiet.advance(1, note)
    quiet.finish()
    assert lines == [] and reads == []
    loud = Progress("job", write=lines.append, lines=2, min_interval=0)
    loud.phase("batches", 4)
    for _ in range(4):
        loud.advance(1, note)
    assert len(reads) == 2 and all("loss 0.1" in line for line in lines)  # read at 2/4 and 4/4 only


def test_the_evaluator_counts_each_batch_of_images():
    lines: list[str] = []
    progress = Progress("e", write=lines.append, lines=10, min_interval=0)
    progress.phase("images featurized", 50)
    feats, _ = embed(MNISTClassifier(), torch.rand(50, 1024), (0.0, 1.0), batch_size=20, progress=progress)
    assert counted(lines) == ["e: 20/50 images featurized", "e: 40/50 images featurized", "e: 50/50 images featurized"]
    assert feats.shape == (50, 256)


def test_scoring_members_reports_samples_then_the_metrics_and_scores_the_same(tmp_path):
    torch.manual_seed(0)
    real = torch.randn(64, 256)
    evaluator = Evaluator(
        MNISTClassifier().eval(), 1.0, real, torch.randn(64, 10), kth_neighbour_radius(real), tmp_path / "e.pt"
    )
    pack = GANModule(members=[member_hparams(seed=0), member_hparams(seed=1)]).eval()
    lines: list[str] = []
    progress = Progress("eval", write=lines.append, min_interval=0)
    with torch.no_grad():
        scored = score_members(evaluator, pack, [0, 1], 300, 3, None, images_per_pass=300, progress=progress)
        plain = score_members(evaluator, pack, [0, 1], 300, 3, None, images_per_pass=300)
    assert scored == plain  # counting changes nothing
    assert counted(lines[:-1]) == [
        "eval: 300/600 samples generated and featurized",  # one member per pass: the first group
        "eval: 600/600 samples generated and featurized",
    ]
    assert lines[-1].startswith("eval: computing the metrics (fid, ")  # once, before the last group's metrics


def test_training_the_evaluator_says_what_how_long_where_and_how_far(tmp_path, capsys):
    root = make_mnist(tmp_path / "data", n_train=256, n_test=16)
    cache = tmp_path / "cache" / "mnist_evaluator.pt"
    train_classifier(root, epochs=1, batch_size=32, cache=cache)  # 8 batches
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("evaluator: training the MNIST evaluator classifier once")
    assert "1 epoch over 256 images (about " in err[0] and f"on 2 CPU cores; cached in {cache} for later" in err[0]
    assert counted(err[1:]) == [f"evaluator: {n}/8 batches" for n in (2, 4, 5, 7, 8)]  # every fifth of the epoch
    assert "(100%, epoch 1/1, batch loss " in err[-1]
    train_classifier(root, epochs=1, batch_size=32, log=False)
    assert capsys.readouterr().err == ""


@pytest.mark.slow  # a training run with its evaluation
def test_an_evaluation_in_training_prints_progress_above_the_progress_bar(tmp_path, tiny_mnist, monkeypatch, capsys):
    monkeypatch.setattr(quality, "PROGRESS_MIN_IMAGES", 200)  # what a 10,000-sample evaluation prints, on 200
    run(
        tmp_path,
        "run",
        tiny_mnist,
        "eval.enabled=true",
        "eval.num_samples=200",
        "eval.min_evaluator_accuracy=0",
        "trainer.max_steps=2",
        "trainer.enable_progress_bar=true",
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("evaluation at iteration 2: ")]
    assert err[0] == "evaluation at iteration 2: scoring 200 samples"
    assert "200/200 samples generated and featurized (100%" in err[-3]
    assert err[-2].startswith("evaluation at iteration 2: computing the metrics")
    assert err[-1].startswith("evaluation at iteration 2: done in ")
    monkeypatch.setattr(quality, "PROGRESS_MIN_IMAGES", 201)  # below the threshold: silent
    run(tmp_path, "quiet", tiny_mnist, "eval.enabled=true", "eval.num_samples=200", "eval.min_evaluator_accuracy=0")
    assert "evaluation at iteration" not in capsys.readouterr().err
