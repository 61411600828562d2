"""gan.eval.sampling: a pack's batched evaluation equals each member scored alone."""

import pytest

from gan.eval.classifier import load_evaluator
from gan.eval.sampling import draw, score_members
from gan.model.module import GANModule
from gan.model.spec import member_hparams


@pytest.mark.slow  # trains the evaluator
def test_batched_evaluation_equals_each_member_scored_alone(tmp_path, tiny_mnist):
    evaluator = load_evaluator(tiny_mnist, min_accuracy=0.0)
    members = [member_hparams(seed=0), member_hparams(seed=1, g_out_act="sigmoid", g_act="tanh")]
    pack = GANModule(members=members).eval()
    scores = score_members(evaluator, pack, [0, 1], num_samples=300, seed=3, ema=None, images_per_pass=450)
    for k, member in enumerate(members):
        alone = GANModule(members=[member]).eval()
        expected = evaluator.score(draw(alone, 300, 3), alone.data_range)
        assert scores[k] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert scores[0] != scores[1]
