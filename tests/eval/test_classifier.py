"""gan.eval.classifier: the evaluator's cache, its embedding, and its accuracy on real MNIST."""

import os
import stat

import pytest
import torch

from gan.data import raw_folder
from gan.errors import DataError
from gan.eval import classifier as ev_mod
from gan.eval.classifier import cache_path, load_evaluator
from tests.helpers import make_mnist, needs_real_mnist


@pytest.fixture()
def small_mnist(tmp_path):
    return make_mnist(tmp_path / "data", n_train=256, n_test=64)


def _count_training(monkeypatch):
    calls = []
    real = ev_mod.train_classifier

    def counting(*args, **kwargs):
        calls.append(1)
        kwargs["epochs"] = 1
        return real(*args, **kwargs)

    monkeypatch.setattr(ev_mod, "train_classifier", counting)
    return calls


@pytest.mark.slow  # trains the evaluator
def test_trained_once_then_loaded_from_cache(small_mnist, monkeypatch, capsys):
    calls = _count_training(monkeypatch)
    first = load_evaluator(small_mnist, min_accuracy=0.0)
    assert calls == [1] and first.path == small_mnist / "evaluator" / "mnist_evaluator.pt" and first.path.is_file()
    said = capsys.readouterr().err.splitlines()  # what it does and where it keeps it, then how it went
    assert said[0].startswith("evaluator: training the MNIST evaluator") and f"cached in {first.path}" in said[0]
    assert said[-1].startswith("evaluator trained in ") and said[-1].endswith(f"saved to {first.path}")
    assert first.test_features.shape == (64, 256) and first.test_logits.shape == (64, 10)
    assert first.test_radii.shape == (64,)
    second = load_evaluator(small_mnist, min_accuracy=0.0)
    assert calls == [1] and capsys.readouterr().err == ""  # no retraining, nothing to say
    assert second.test_accuracy == first.test_accuracy
    assert torch.equal(second.test_features, first.test_features)


@pytest.mark.slow  # trains the evaluator
def test_stale_and_corrupted_caches_are_rebuilt(small_mnist, monkeypatch, capsys):
    calls = _count_training(monkeypatch)
    path = load_evaluator(small_mnist, min_accuracy=0.0).path
    path.write_bytes(b"garbage")
    load_evaluator(small_mnist, min_accuracy=0.0)
    assert calls == [1, 1] and "unreadable" in capsys.readouterr().err  # stderr: stdout keeps a command's JSON
    labels = raw_folder(small_mnist) / "t10k-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    data[-1] = (data[-1] + 1) % 10
    labels.write_bytes(bytes(data))  # other data than the cache was made from
    load_evaluator(small_mnist, min_accuracy=0.0)
    assert calls == [1, 1, 1] and "other data" in capsys.readouterr().err


@pytest.mark.slow  # trains the evaluator
def test_weak_evaluator_is_refused_and_not_cached(small_mnist, monkeypatch):
    _count_training(monkeypatch)
    with pytest.raises(DataError, match="below the 0.99 it must reach"):
        load_evaluator(small_mnist)  # random pixels cannot be classified
    assert not cache_path(small_mnist).exists()


def test_read_only_data_folder_caches_per_user(tmp_path, monkeypatch):
    root = make_mnist(tmp_path / "ro", n_train=8, n_test=8)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    os.chmod(root, stat.S_IRUSR | stat.S_IXUSR)
    try:
        path = cache_path(root)
    finally:
        os.chmod(root, stat.S_IRWXU)
    assert path.is_relative_to(tmp_path / "cache" / "gan-activation-lab")


@pytest.mark.slow  # trains the evaluator
def test_embedding_is_the_same_in_either_value_range(small_mnist, monkeypatch):
    _count_training(monkeypatch)
    ev = load_evaluator(small_mnist, min_accuracy=0.0)
    x01 = torch.rand(20, 1024, generator=torch.Generator().manual_seed(0))
    f1, l1 = ev.embed(x01, (0.0, 1.0))
    f2, l2 = ev.embed(x01 * 2 - 1, (-1.0, 1.0))
    assert torch.allclose(f1, f2, atol=1e-5) and torch.allclose(l1, l2, atol=1e-5)
    f3, _ = ev.embed(x01 * 3, (0.0, 1.0))  # out-of-range pixels are clamped like an image would be
    assert torch.allclose(f3, ev.embed((x01 * 3).clamp(0, 1), (0.0, 1.0))[0])


@needs_real_mnist
@pytest.mark.slow
def test_evaluator_reaches_99_percent(evaluator):
    assert evaluator.test_accuracy >= 0.99
