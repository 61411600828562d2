"""gan.eval.classifier: the evaluator's cache, its embedding, and its accuracy on real MNIST."""

import os
import signal
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


def _signal_at_first_batch(monkeypatch, *signums):
    """Each of ``signums`` sent to this process after the evaluator's first training batch."""
    real = ev_mod.Progress.advance

    def advance(self, *args, **kwargs):
        if self.what == "batches" and self.done == 0:
            for signum in signums:
                os.kill(os.getpid(), signum)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ev_mod.Progress, "advance", advance)


@pytest.mark.parametrize("twice", [False, True], ids=["sigterm", "sigint_twice"])
def test_a_signal_stops_the_evaluators_training_and_caches_nothing(small_mnist, monkeypatch, capsys, twice):
    """SIGTERM stops the training at the next batch (not minutes later); a second Ctrl-C at once; the handlers
    before are back after, and no cache is written."""
    from gan.errors import Interrupted

    _signal_at_first_batch(monkeypatch, *((signal.SIGINT, signal.SIGINT) if twice else (signal.SIGTERM,)))
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    batches = []
    real_step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: batches.append(1) or real_step(self, *a, **k))
    with pytest.raises(Interrupted) as err:
        load_evaluator(small_mnist, min_accuracy=0.0)
    name = "SIGINT" if twice else "SIGTERM"
    assert err.value.signum == (signal.SIGINT if twice else signal.SIGTERM)
    assert err.value.reason.startswith(f"{name} while training the MNIST evaluator; the evaluator is cached (")
    assert err.value.reason.endswith("only once trained whole; run the command again")
    assert len(batches) == (1 if twice else 2)  # stopped between two batches, or at once when asked twice
    assert f"{name} received: stopping training the MNIST evaluator" in capsys.readouterr().err
    assert {s: signal.getsignal(s) for s in before} == before and not cache_path(small_mnist).exists()


@pytest.mark.slow  # trains through Lightning
def test_a_signal_while_a_run_trains_its_evaluator_ends_the_run_interrupted(small_mnist, tmp_path, monkeypatch):
    """gan.train with a cold evaluator cache: SIGTERM during the evaluator's training stops the run before its first
    iteration, results.json says ``interrupted`` (not ``running``), exit status 143, and no checkpoint is written."""
    import json

    from gan.errors import Interrupted
    from tests.helpers import run

    _signal_at_first_batch(monkeypatch, signal.SIGTERM)
    with pytest.raises(Interrupted) as err:
        run(tmp_path, "cold", small_mnist, "eval.enabled=true", "eval.min_evaluator_accuracy=0")
    folder = tmp_path / "cold"
    results = json.loads((folder / "results.json").read_text())
    assert err.value.exit_code == 143 and err.value.recorded
    assert results["status"] == "interrupted" and results["iterations"] == 0
    assert results["reason"].startswith("SIGTERM while training the MNIST evaluator")
    assert not (folder / "checkpoints").exists() and not cache_path(small_mnist).exists()


def test_the_evaluator_architecture_is_chosen_by_name_and_cached_apart(tmp_path):
    from gan.errors import ConfigError
    from gan.eval.classifier import EVALUATORS, MNISTClassifier, StridedClassifier, architecture

    with pytest.raises(
        ConfigError, match=r"evaluator='mlp' is not an evaluator architecture; valid choices: cnn .*strided"
    ):
        architecture("mlp")
    with pytest.raises(ConfigError, match="evaluator='mlp'"):  # refused before the data is looked at
        load_evaluator(tmp_path / "no_such_data", arch="mlp")
    root = make_mnist(tmp_path / "data", n_train=8, n_test=8)
    assert cache_path(root, "strided").parent == cache_path(root).parent
    assert cache_path(root, "strided").name == "mnist_evaluator_strided.pt" != cache_path(root).name
    assert EVALUATORS["strided"].model is StridedClassifier and EVALUATORS["cnn"].model is MNISTClassifier
    x = torch.rand(6, 1024, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    first = MNISTClassifier().eval()
    torch.manual_seed(0)
    second = StridedClassifier().eval()
    with torch.no_grad():
        (f1, l1), (f2, l2) = first.features_and_logits(x), second.features_and_logits(x)
    assert f1.shape == f2.shape == (6, 256) and l1.shape == l2.shape == (6, 10)  # the k-NN metrics cost the same
    assert not torch.allclose(f1, f2)
    assert set(first.state_dict()) != set(second.state_dict())  # one cache can never load into the other


def _old_cache(root, model) -> torch.Tensor:
    """An evaluator cache as the lab wrote it before the memorization reference (no train_* keys)."""
    feats, logits, radii = ev_mod._reference(model, root)
    blob = {
        "version": ev_mod.EVALUATOR_VERSION,
        "state_dict": model.state_dict(),
        "test_accuracy": 0.5,
        "data_sha256": ev_mod.data_checksums(root),
        "test_features": feats,
        "test_logits": logits,
        "test_radii": radii,
    }
    cache_path(root).parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob, cache_path(root))
    return feats


def test_an_old_cache_loads_and_gains_the_memorization_reference_on_first_use(small_mnist, capsys):
    torch.manual_seed(0)
    model = ev_mod.MNISTClassifier().eval()
    test_features = _old_cache(small_mnist, model)
    ev = load_evaluator(small_mnist, min_accuracy=0.0, train_if_missing=False)  # no training: the old cache serves
    assert torch.equal(ev.test_features, test_features) and ev.train_features is None
    train, nearest = ev.memorization_reference()
    assert train.shape == (128, 256) and nearest.shape == (128,)  # half of a small split
    blob = torch.load(cache_path(small_mnist), weights_only=True)
    assert torch.equal(blob["train_features"], train) and torch.equal(blob["train_nearest"], nearest)
    assert torch.equal(blob["test_features"], test_features)  # the rest of the cache as it was
    again = load_evaluator(small_mnist, min_accuracy=0.0, train_if_missing=False)
    assert torch.equal(again.train_features, train)  # read back, not computed again
    scores = again.score(torch.rand(40, 1024), (0.0, 1.0))
    assert 0.0 <= scores["memorized"] <= 1.0 and scores["vendi"] >= 1.0
    # a damaged reference is left out and computed again; the evaluator itself still loads
    blob["train_nearest"][0] = float("nan")
    torch.save(blob, cache_path(small_mnist))
    damaged = load_evaluator(small_mnist, min_accuracy=0.0, train_if_missing=False)
    assert damaged.train_features is None and torch.equal(damaged.memorization_reference()[1], nearest)
    assert "unreadable" not in capsys.readouterr().err


@pytest.mark.slow  # trains two evaluators (one epoch each, tiny data)
def test_the_strided_evaluator_is_trained_by_the_same_recipe_and_kept_apart(small_mnist, monkeypatch, capsys):
    calls = _count_training(monkeypatch)
    strided = load_evaluator(small_mnist, min_accuracy=0.0, arch="strided")
    assert strided.path == small_mnist / "evaluator" / "mnist_evaluator_strided.pt" and strided.arch == "strided"
    assert "(strided, the second feature space)" in capsys.readouterr().err.splitlines()[0]
    assert strided.train_features is not None  # a fresh cache holds the memorization reference
    first = load_evaluator(small_mnist, min_accuracy=0.0)
    assert calls == [1, 1] and first.path.name == "mnist_evaluator.pt"
    assert load_evaluator(small_mnist, min_accuracy=0.0, arch="strided").test_accuracy == strided.test_accuracy
    assert calls == [1, 1]  # each read back from its own cache
    assert not torch.allclose(strided.test_features, first.test_features)
    with pytest.raises(DataError, match="below the 0.99 it must reach"):
        load_evaluator(small_mnist, arch="strided")  # the same accuracy floor: random pixels fail it


@needs_real_mnist
@pytest.mark.slow  # trains the second evaluator on first use (minutes), then reads it from its cache
def test_the_strided_evaluator_reaches_99_percent_in_its_own_feature_space(evaluator):
    from gan.data import to_flat_images
    from gan.eval.corruptions import real_images
    from tests.helpers import REAL_MNIST

    strided = load_evaluator(REAL_MNIST, arch="strided")
    assert strided.test_accuracy >= 0.99 and strided.path != evaluator.path
    images, _ = real_images(str(REAL_MNIST), 2000)
    flat = to_flat_images((images * 255).round().to(torch.uint8), (0.0, 1.0))
    same, other = strided.score(flat, (0.0, 1.0)), evaluator.score(flat, (0.0, 1.0))
    assert same["fid"] < 5 and same["modes"] == 10 and same["memorized"] < 0.01  # real digits score as real
    assert same["fid"] != pytest.approx(other["fid"], rel=0.05)  # another feature space: other distances
    noise = strided.score(torch.rand(2000, 1024, generator=torch.Generator().manual_seed(0)), (0.0, 1.0))
    assert noise["fid"] > 50 and noise["precision"] < 0.05 and noise["memorized"] == 0.0


def test_a_cache_that_cannot_be_rewritten_keeps_the_reference_for_this_process(small_mnist, monkeypatch, capsys):
    from gan.errors import StorageError

    torch.manual_seed(0)
    _old_cache(small_mnist, ev_mod.MNISTClassifier().eval())
    before = cache_path(small_mnist).read_bytes()

    def full_disk(path, obj):
        raise StorageError(f"Cannot write {path}: the disk is full")

    monkeypatch.setattr(ev_mod, "save_torch_atomic", full_disk)
    ev = load_evaluator(small_mnist, min_accuracy=0.0, train_if_missing=False)
    train, _ = ev.memorization_reference()
    assert train.shape == (128, 256) and ev.memorization_reference()[0] is train  # computed once, kept
    assert "could not add the memorization reference" in capsys.readouterr().err
    assert cache_path(small_mnist).read_bytes() == before  # the cache as it was
