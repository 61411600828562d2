"""gan.eval.corruptions: the fid rises with every corruption's severity on real MNIST; the metric card's study (the
mixture test, the summary) on synthetic features and tiny data, and on real MNIST."""

import json
import math

import pytest
import torch

from gan.eval.classifier import Evaluator, MNISTClassifier, embed, memorization_indices
from gan.eval.metrics import CARD_NAMES, METRIC_NAMES, kth_neighbour_radius, nearest_other_distance
from tests.helpers import REAL_MNIST, needs_real_mnist


def _untrained_evaluator(root, tmp_path) -> Evaluator:
    """An evaluator of random weights over the data under ``root`` (what the study computes does not need a good
    one: this checks its bookkeeping), with the real references of that data."""
    from gan.data import load_split, to_flat_images

    torch.manual_seed(0)
    model = MNISTClassifier().eval()
    test_x, _ = load_split(root, "test")
    feats, logits = embed(model, to_flat_images(test_x, (0.0, 1.0)), (0.0, 1.0))
    return Evaluator(model, 1.0, feats, logits, kth_neighbour_radius(feats), tmp_path / "e.pt", root=str(root))


def test_linear_fit_and_the_summary_on_known_rows():
    from gan.eval.corruptions import linear_fit, summarize

    assert linear_fit([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx((2.0, 1.0))
    slope, r2 = linear_fit([0, 1, 2, 3], [0, 1, 0, 1])
    assert slope == pytest.approx(0.2) and r2 == pytest.approx(0.2)
    assert math.isnan(linear_fit([0, 1, 2], [4, 4, 4])[1])  # a metric that does not move has no fit
    rows = [
        {"corruption": "blur", "severity": s, "fid": f, "recall": r}
        for s, f, r in zip(range(5), [0.3, 2.0, 9.0, 30.0, 90.0], [0.8, 0.8, 0.5, 0.3, 0.1], strict=True)
    ]
    shares = [i / 10 for i in range(11)]
    mixture = [{"corruption": "blur", "bad_share": b, "fid": 0.3 + 10 * b * b, "recall": 0.8 - 0.5 * b} for b in shares]
    mixture += [{"corruption": "duplicates", "bad_share": b, "fid": 0.3, "recall": 0.8 + 0.1 * b} for b in shares]
    found = {(e["metric"], e["corruption"]): e for e in summarize(rows, mixture, ("fid", "recall"))}
    assert found["fid", "blur"]["monotone"] is True and found["fid", "blur"]["worsens"] is True
    assert 0.9 < found["fid", "blur"]["r2"] < 1.0  # a parabola's straight-line fit on [0, 1]
    assert found["recall", "blur"]["monotone"] is False and not found["recall", "blur"]["flat"]  # a tie at step 1
    assert found["recall", "blur"]["r2"] == pytest.approx(1.0)
    assert found["fid", "duplicates"]["monotone"] is None and math.isnan(found["fid", "duplicates"]["r2"])
    assert found["recall", "duplicates"]["worsens"] is False  # recall rising with the bad share: the good way


def test_mixture_rows_replace_the_first_share_of_the_images_by_their_bad_versions(tmp_path):
    from gan.eval.corruptions import duplicates, mixture_rows

    gen = torch.Generator().manual_seed(0)
    real = torch.randn(200, 16, generator=gen).abs()
    ev = Evaluator(MNISTClassifier(), 1.0, real, torch.randn(200, 10), kth_neighbour_radius(real), tmp_path / "e.pt")
    ev.train_features = torch.randn(50, 16, generator=gen).abs() + 5
    ev.train_nearest = nearest_other_distance(ev.train_features)
    clean = (torch.randn(40, 16, generator=gen).abs(), torch.randn(40, 10, generator=gen))
    copies = (ev.train_features[:40], torch.randn(40, 10, generator=gen))
    rows = mixture_rows(ev, clean, {"training_copies": copies}, shares=(0.0, 0.25, 1.0))
    assert [r["bad_share"] for r in rows] == [0.0, 0.25, 1.0]
    assert [r["memorized"] for r in rows] == pytest.approx([0.0, 0.25, 1.0])  # 10 of 40 copies, then all
    mixed = torch.cat([copies[0][:10], clean[0][10:]])
    assert rows[1]["vendi"] == pytest.approx(ev.metrics(mixed, torch.cat([copies[1][:10], clean[1][10:]]))["vendi"])
    assert set(rows[0]) == {"corruption", "bad_share", *METRIC_NAMES, *CARD_NAMES}
    # duplicates: each image becomes its class's first one; the labels (the class histogram) stay
    labels = torch.tensor([3, 1, 3, 3, 1, 0])
    feats, logits = duplicates((torch.arange(6.0).unsqueeze(1), torch.arange(6.0).unsqueeze(1)), labels)
    assert feats.squeeze(1).tolist() == [0, 1, 0, 0, 1, 5] and torch.equal(feats, logits)


def test_the_real_images_are_held_out_from_the_memorization_reference(tiny_mnist):
    from gan.data import load_split
    from gan.eval.corruptions import real_images

    train, _ = load_split(tiny_mnist, "train")
    reference = memorization_indices(len(train))
    assert len(reference) == len(train) // 2  # at most half a small split
    images, _ = real_images(str(tiny_mnist), 1000)
    assert len(images) == len(train) - len(reference)
    held = {img.numpy().tobytes() for img in (train[reference].float() / 255.0)}
    assert not any(img.numpy().tobytes() in held for img in images)


def test_the_study_writes_its_tables_json_and_figure(tiny_mnist, tmp_path, capsys):
    """The whole corruption study on tiny data with an untrained evaluator: every metric of the card is scored at
    every severity and share, and validation.md/json/png are written."""
    from gan.eval.corruptions import BAD_SHARES, CORRUPTIONS, EXTRA_MIXTURES, WORSE, write_validation

    ev = _untrained_evaluator(tiny_mnist, tmp_path)
    folder = write_validation(ev, str(tiny_mnist), 40, str(tmp_path / "out"))
    study = json.loads((tmp_path / "out" / "validation.json").read_text())
    kinds = [*CORRUPTIONS, *EXTRA_MIXTURES]
    assert len(study["severity"]) == 5 * len(CORRUPTIONS) and len(study["mixture"]) == len(BAD_SHARES) * len(kinds)
    assert all(set(WORSE) <= set(row) for row in study["severity"] + study["mixture"])
    assert len(study["summary"]) == len(WORSE) * len(kinds) and study["wall_s"] > 0
    copies = [r for r in study["copies_under_corruption"] if r["severity"] == 0]
    assert all(r["memorized"] == 1.0 for r in copies)  # exact training copies are flagged, whatever the weights
    mixture = [r["memorized"] for r in study["mixture"] if r["corruption"] == "training_copies"]
    assert mixture == pytest.approx(list(BAD_SHARES), abs=0.03)
    text = (tmp_path / "out" / "validation.md").read_text()
    assert "| metric | gaussian_noise |" in text and "| vendi_within |" in text and "## Mixtures" in text
    assert (tmp_path / "out" / "validation.png").stat().st_size > 10_000 and folder.endswith("out")
    assert "## Summary" in capsys.readouterr().out


@needs_real_mnist
@pytest.mark.slow
def test_fid_rises_with_every_corruption_s_severity(evaluator):
    """The corruption study (``python -m gan.evaluator validate.enabled=true``) on 600 real images: for each of
    the six corruptions the fid grows strictly from clean through severities 1 to 4."""
    from gan.eval.corruptions import CORRUPTIONS, validate_metrics

    rows = validate_metrics(evaluator, str(REAL_MNIST), num_images=600, fid_only=True)
    for name in CORRUPTIONS:
        fids = [r["fid"] for r in rows if r["corruption"] == name]
        assert len(fids) == 5 and all(a < b for a, b in zip(fids, fids[1:], strict=False)), (name, fids)


@needs_real_mnist
@pytest.mark.slow
def test_the_card_s_metrics_answer_the_bad_images_they_are_for(evaluator):
    """On 600 real images: kid rises strictly with every corruption's severity (as the fid); in the mixture test
    memorized rises in a straight line with the share of training copies, within-class Vendi falls with the share
    of each class's images replaced by one of them (the class histogram kept), and a corruption at its middle
    severity is never taken for a copy."""
    from gan.eval.corruptions import (
        CORRUPTIONS,
        duplicates,
        flat,
        mixture_rows,
        real_images,
        summarize,
        training_copy_images,
        validate_metrics,
    )

    root = str(REAL_MNIST)
    keep: dict = {}
    rows = validate_metrics(evaluator, root, num_images=600, keep=keep)
    for name in CORRUPTIONS:
        kids = [r["kid"] for r in rows if r["corruption"] == name]
        assert all(a < b for a, b in zip(kids, kids[1:], strict=False)), (name, kids)
        assert all(r["memorized"] < 0.01 for r in rows if r["corruption"] == name)
    _, labels = real_images(root, 600)
    bad = {
        "duplicates": duplicates(keep["clean"], labels),
        "training_copies": evaluator.embed(flat(training_copy_images(root, 600)), (0.0, 1.0)),
    }
    mixture = mixture_rows(evaluator, keep["clean"], bad, shares=(0.0, 0.25, 0.5, 0.75, 1.0))
    found = {(e["metric"], e["corruption"]): e for e in summarize([], mixture, ("memorized", "vendi_within"))}
    assert found["memorized", "training_copies"]["r2"] > 0.99 and found["memorized", "training_copies"]["worsens"]
    assert found["vendi_within", "duplicates"]["r2"] > 0.9 and found["vendi_within", "duplicates"]["worsens"]
