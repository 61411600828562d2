"""The MNIST evaluator: a small CNN trained on MNIST itself, the feature extractor behind every sample metric.

Inception features do not suit 32x32 digits; the field's practice is a classifier trained on MNIST. It is trained
once (``python -m gan.evaluator data.root=ROOT``, the command in ``gan/evaluator.py``, or automatically on first
use) and cached with the SHA-256 of the files it was trained on and its test accuracy. A cache whose checksums,
version or contents do not match is rebuilt, never silently used. The cache also holds the test split's features and
logits: the real reference statistics every evaluation compares against.

Training it says on stderr what it does, about how long it takes and where the result goes, then how far it has
come (a line every fifth of an epoch); ``Progress`` prints those lines, and an evaluation's (samples generated and
featurized, then the metrics) for evaluations of ``PROGRESS_MIN_IMAGES`` images or more.

    python -m gan.evaluator data.root=../shared/mnist     # train (or verify) and print accuracy as JSON

A second feature space, ``strided`` (``StridedClassifier``: strided 5x5 convolutions, no pooling layers), is trained
the same way on the same data, checked against the same accuracy floor and cached beside the first under its own
name (``load_evaluator(root, arch="strided")``, ``gan.evaluate evaluator=strided``): re-scoring runs under it says
whether their ranking depends on the evaluator (``gan.eval.metrics.ranking_agreement``).

The cache also keeps the memorization check's training reference (``memorization_indices``: 10,000 training images'
features, each with its nearest other's distance); a cache from before it lacks them, and they are computed on first
use and added to it.
"""

from __future__ import annotations

import copy
import hashlib
import os
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gan.data import SPLIT_FILES, _existing, check_files, ensure_mnist, load_split, raw_folder, to_flat_images
from gan.errors import ConfigError, DataError, StorageError, stops_on_signals
from gan.eval.metrics import METRIC_NAMES, features_metrics, kth_neighbour_radius, nearest_other_distance
from gan.files import save_torch_atomic
from gan.images import IMAGE_SIZE, to_unit

EVALUATOR_VERSION = 2  # bump when the architecture or training recipe changes: old caches are rebuilt
MIN_TEST_ACCURACY = 0.99
CACHE_NAME = "mnist_evaluator.pt"
# The memorization check's reference: the last MEMORIZATION_IMAGES of the seed-0 permutation of the training split,
# so that the first 50,000 (the corruption study's real images, ``gan.eval.corruptions.real_images``) are held out.
MEMORIZATION_IMAGES = 10_000
# Measured: 4 epochs over the 60k training images took about 90 s on 2 CPU cores (the README's setup machine); the
# announcement scales it by the images and epochs, so that a user knows whether to wait or get a coffee.
TRAIN_SECONDS_PER_IMAGE_EPOCH = 90 / (60_000 * 4)
# Evaluations of fewer images (samples x members) print no progress: they end within seconds on 2 CPU cores (10,000
# samples take 5 to 15 s), and lines for a few seconds' work would be noise in every evaluation's output.
PROGRESS_MIN_IMAGES = 5_000


def say(line: str) -> None:
    """One progress line on stderr: a command's stdout keeps its result alone (gan.evaluate's JSON, for a pipe)."""
    print(line, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """``0.3 s``, ``12 s`` or ``1.5 minutes``: how long, the way a user reads it."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} minutes"


class Progress:
    """Lines that say how far long work has come, so that minutes of silence never look like a hang.

    Work comes in phases (``phase``: what is counted, how many); ``advance`` prints ``LABEL: done/total WHAT (pct,
    time so far, about T left)`` each time another ``1/lines`` of the phase is done, at most one line every
    ``min_interval`` seconds (the phase's end always), so a quick phase prints only its end. ``enabled=False``
    silences everything: callers switch it off for work that ends in seconds. ``write`` takes each line (default:
    stderr; in training, above Lightning's progress bar). Counting costs nothing measurable: no device sync.
    """

    def __init__(
        self,
        label: str,
        enabled: bool = True,
        write: Callable[[str], None] | None = None,
        lines: int = 5,
        min_interval: float = 1.0,
    ) -> None:
        self.label = label
        self.enabled = enabled
        self.write = write or say
        self.lines = max(1, int(lines))
        self.min_interval = float(min_interval)
        self.started = time.perf_counter()
        self.phase("", 0)

    def say(self, text: str) -> None:
        """A line of its own (what starts, what is done), when enabled."""
        if self.enabled:
            self.write(f"{self.label}: {text}")

    def phase(self, what: str, total: int) -> None:
        """Start counting ``total`` units of ``what`` (e.g. ``samples featurized``)."""
        self.what, self.total, self.done = what, int(total), 0
        self._next_mark = 1  # the next line is due when done / total >= _next_mark / lines
        self._phase_start = self._last_line = time.perf_counter()

    def advance(self, count: int = 1, note: Callable[[], str] | None = None) -> None:
        """``count`` more units done; a line when one is due (``note()``, read only then, is added to it)."""
        self.done += int(count)
        if not self.enabled or self.total <= 0 or self.done * self.lines < self._next_mark * self.total:
            return
        self._next_mark = self.done * self.lines // self.total + 1
        now = time.perf_counter()
        finished = self.done >= self.total
        if not finished and now - self._last_line < self.min_interval:
            return
        self._last_line = now
        elapsed = now - self._phase_start
        fraction = min(1.0, self.done / self.total)
        timing = duration(elapsed)
        if not finished:
            timing += f", about {duration(elapsed * (1 - fraction) / fraction)} left"
        extra = f", {note()}" if note is not None else ""
        self.say(f"{self.done}/{self.total} {self.what} ({fraction:.0%}{extra}; {timing})")

    def finish(self, text: str = "done") -> None:
        """The closing line, with the time since the start."""
        self.say(f"{text} in {duration(time.perf_counter() - self.started)}")


class MNISTClassifier(nn.Module):
    """Three conv blocks and a small classifier head; input N x 1024 images in [0, 1].

    Features for the distance-based metrics are the last conv maps average-pooled to 64 x 2 x 2 = 256 values.
    (The 128-unit layer before the logits was tried first: uniform noise lands near its origin, inside the
    k-NN balls of faint real digits, and scored precision 1.0; in the conv features it scores 0.)
    """

    num_features = 256

    def __init__(self) -> None:
        super().__init__()
        self.conv = self.trunk()
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 16, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, 10)
        )

    @staticmethod
    def trunk() -> nn.Sequential:
        """The convolutions: 1 x 32 x 32 images to 64 x 4 x 4 maps."""
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 32 -> 16
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 16 -> 8
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8 -> 4
        )

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.conv(x.view(-1, 1, IMAGE_SIZE, IMAGE_SIZE))
        return F.avg_pool2d(maps, 2).flatten(1), self.head(maps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[1]


class StridedClassifier(MNISTClassifier):
    """The second feature space: strided 5x5 and 3x3 convolutions in place of 3x3 convolutions and max pooling, the
    same head; features are its last maps average-pooled to 64 x 2 x 2 = 256 values, as the first one's (the k-NN
    metrics cost the same). Another architecture, trained by the same recipe: its features differ, its task is the
    same (99.09% test accuracy, against the first one's 99.14%)."""

    @staticmethod
    def trunk() -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(1, 32, 5, stride=2, padding=2),  # 32 -> 16
            nn.ReLU(),
            nn.Conv2d(32, 64, 5, stride=2, padding=2),  # 16 -> 8
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1),  # 8 -> 4
            nn.ReLU(),
        )


@dataclass(frozen=True)
class Architecture:
    """An evaluator architecture: its classifier, its cache file's name and version (bumped when it changes)."""

    model: type[MNISTClassifier]
    cache_name: str
    version: int
    about: str


EVALUATORS = {
    "cnn": Architecture(MNISTClassifier, CACHE_NAME, EVALUATOR_VERSION, "the lab's evaluator, every metric's default"),
    "strided": Architecture(StridedClassifier, "mnist_evaluator_strided.pt", 1, "the second feature space"),
}


def architecture(name: object, key: str = "evaluator") -> Architecture:
    """The architecture called ``name``; a ConfigError naming ``key`` and the choices otherwise (before any work)."""
    if not isinstance(name, str) or name not in EVALUATORS:
        choices = "; ".join(f"{k} ({a.about})" for k, a in EVALUATORS.items())
        raise ConfigError(f"{key}={name!r} is not an evaluator architecture; valid choices: {choices}.")
    return EVALUATORS[name]


@dataclass
class Evaluator:
    """The trained classifier plus the real test split's features and logits (the reference for every metric)."""

    model: MNISTClassifier
    test_accuracy: float
    test_features: torch.Tensor  # 10k x 256
    test_logits: torch.Tensor  # 10k x 10
    test_radii: torch.Tensor  # distance of each test feature to its k-th nearest neighbour (precision's balls)
    path: Path
    # the memorization check's training reference (None until computed: ``memorization_reference``)
    train_features: torch.Tensor | None = None  # MEMORIZATION_IMAGES x 256
    train_nearest: torch.Tensor | None = None  # each one's distance to its nearest other
    root: str | None = None  # the MNIST it was trained on (to compute the reference when a cache lacks it)
    arch: str = "cnn"

    def embed(
        self,
        images: torch.Tensor,
        value_range: Sequence[float],
        batch_size: int = 2000,
        progress: Progress | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and logits of N x 1024 images given in ``value_range`` (clamped to it, as pixels are), on the
        CPU; ``progress`` advances by each batch's images."""
        feats, logits = self.embed_members(images.unsqueeze(0), [value_range], batch_size, progress)
        return feats[0].cpu(), logits[0].cpu()

    def embed_members(
        self,
        images: torch.Tensor,
        value_ranges: Sequence[Sequence[float]],
        batch_size: int = 2000,
        progress: Progress | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features [n, N, 256] and logits [n, N, 10] of n members' images [n, N, 1024], member i's given in
        ``value_ranges[i]``; all members' images pass through the classifier together, ``batch_size`` at a time,
        on the evaluator's device (a member's results do not depend on the others: each image is its own)."""
        n, count = images.shape[:2]
        device = next(self.model.parameters()).device
        lows = torch.tensor([float(r[0]) for r in value_ranges], device=device).view(-1, 1, 1)
        spans = torch.tensor([float(r[1]) - float(r[0]) for r in value_ranges], device=device).view(-1, 1, 1)
        unit = to_unit(images.to(device), lows, spans).view(n * count, -1)
        feats, logits = embed(self.model, unit, (0.0, 1.0), batch_size, keep_device=True, progress=progress)
        return feats.view(n, count, -1), logits.view(n, count, -1)

    def score(
        self, samples: torch.Tensor, value_range: Sequence[float], progress: Progress | None = None
    ) -> dict[str, float]:
        """All metrics of N x 1024 samples (in ``value_range``) against the MNIST test split; ``progress`` (when
        given) counts the samples featurized, then says when the metrics are computed."""
        if progress is not None:
            progress.phase("samples featurized", len(samples))
        feats, logits = self.embed(samples, value_range, progress=progress)
        if progress is not None:
            progress.say(f"computing the metrics ({', '.join(METRIC_NAMES)})")
        return self.metrics(feats, logits)

    def metrics(self, feats: torch.Tensor, logits: torch.Tensor) -> dict[str, float]:
        """Every metric (``features_metrics``) of samples' features and logits, against this evaluator's references,
        on the features' device."""
        device = feats.device
        train, nearest = self.memorization_reference()
        return features_metrics(
            feats,
            logits,
            self.test_features.to(device),
            self.test_radii.to(device),
            None if train is None else train.to(device),
            None if nearest is None else nearest.to(device),
        )

    def memorization_reference(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The training reference of ``memorized``: computed once (a few seconds) when the cache lacks it, and
        added to the cache; (None, None) for an evaluator that knows no training data (built by hand in tests)."""
        if self.train_features is None and self.root is not None:
            device = self.test_features.device
            feats, nearest = _train_reference(self.model, self.root)
            self.train_features, self.train_nearest = feats.to(device), nearest.to(device)
            _add_to_cache(self.path, self.test_features, {"train_features": feats, "train_nearest": nearest})
        return self.train_features, self.train_nearest

    def to(self, device: torch.device | str) -> Evaluator:
        """This evaluator with its classifier and reference statistics on ``device``."""
        device = torch.device(device)
        if next(self.model.parameters()).device == device:
            return self
        model = copy.deepcopy(self.model).to(device)
        train, nearest = self.memorization_reference()
        return Evaluator(
            model,
            self.test_accuracy,
            self.test_features.to(device),
            self.test_logits.to(device),
            self.test_radii.to(device),
            self.path,
            None if train is None else train.to(device),
            None if nearest is None else nearest.to(device),
            self.root,
            self.arch,
        )


@torch.no_grad()
def embed(
    model: MNISTClassifier,
    images: torch.Tensor,
    value_range: Sequence[float],
    batch_size: int = 2000,
    keep_device: bool = False,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and logits of N x 1024 images given in ``value_range`` (clamped to it, as pixels are); on the
    CPU, or on the model's device with ``keep_device``. ``progress`` advances by each batch's images."""
    lo, hi = float(value_range[0]), float(value_range[1])
    model.eval()
    device = next(model.parameters()).device
    feats, logits = [], []
    for chunk in images.split(batch_size):
        unit = to_unit(chunk.to(device), lo, hi - lo)
        f, lg = model.features_and_logits(unit)
        feats.append(f if keep_device else f.cpu())
        logits.append(lg if keep_device else lg.cpu())
        if progress is not None:
            progress.advance(len(chunk))
    return torch.cat(feats), torch.cat(logits)


def data_checksums(root: str | Path) -> dict[str, str]:
    """SHA-256 of each raw MNIST file (plain or .gz) under ``root``."""
    folder = raw_folder(root)
    sums = {}
    for name in (n for pair in SPLIT_FILES.values() for n in pair):
        path = _existing(folder, name)
        if path is None:
            raise DataError(f"MNIST file {name} missing in {folder}.")
        sums[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return sums


def cache_path(root: str | Path, arch: str = "cnn") -> Path:
    """``ROOT/evaluator/`` when the data folder is writable, else a per-user cache keyed by the data's path; each
    architecture's file under its own name there."""
    name = architecture(arch).cache_name
    folder = raw_folder(root).parent.parent
    if os.access(folder, os.W_OK) and folder.stat().st_mode & stat.S_IWUSR:
        return folder / "evaluator" / name
    key = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "gan-activation-lab" / f"evaluator-{key}" / name


def train_classifier(
    root: str | Path,
    epochs: int = 4,
    batch_size: int = 128,
    seed: int = 0,
    log: bool = True,
    cache: Path | None = None,
    check: Callable[[], None] | None = None,
    arch: str = "cnn",
) -> tuple[MNISTClassifier, float]:
    """Train on the 60k train split, return the model and its accuracy on the 10k test split.

    With ``log`` it says up front what it does and about how long it takes (minutes on a laptop's CPU, once), then
    a line every fifth of an epoch (batches done, epoch, loss, time left): a first run waits for it silently
    otherwise. ``cache`` is where the result will be kept, named in the announcement. ``check()`` is called
    between two batches (it raises to stop: ``gan.errors.stops_on_signals``). ``arch``: which of ``EVALUATORS``
    (every architecture by the same recipe)."""
    torch.manual_seed(seed)
    train_x, train_y = load_split(root, "train")
    x = to_flat_images(train_x, (0.0, 1.0))
    model = architecture(arch).model()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    per_epoch = len(x) // batch_size
    steps = epochs * per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    progress = Progress("evaluator", enabled=log, lines=5 * epochs, min_interval=0.0)
    estimate = duration(TRAIN_SECONDS_PER_IMAGE_EPOCH * len(x) * epochs)
    kept = f"; cached in {cache} for later runs" if cache is not None else ""
    which = "" if arch == "cnn" else f" ({arch}, {architecture(arch).about})"
    progress.say(
        f"training the MNIST evaluator classifier{which} once, the feature extractor of every sample metric: {epochs} "
        f"epoch{'s' if epochs != 1 else ''} over {len(x)} images (about {estimate} on 2 CPU cores{kept})"
    )
    progress.phase("batches", steps)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            loss = F.cross_entropy(model(x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if check is not None:
                check()
            progress.advance(1, lambda e=epoch, lo=loss: f"epoch {e + 1}/{epochs}, batch loss {lo.item():.4f}")
    model.eval()
    return model, _accuracy(model, root)


def _accuracy(model: MNISTClassifier, root: str | Path) -> float:
    test_x, test_y = load_split(root, "test")
    _, logits = embed(model, to_flat_images(test_x, (0.0, 1.0)), (0.0, 1.0))
    return (logits.argmax(1) == test_y).float().mean().item()


def _reference(model: MNISTClassifier, root: str | Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    test_x, _ = load_split(root, "test")
    feats, logits = embed(model, to_flat_images(test_x, (0.0, 1.0)), (0.0, 1.0))
    return feats, logits, kth_neighbour_radius(feats)


def memorization_indices(num_train: int, count: int = MEMORIZATION_IMAGES) -> torch.Tensor:
    """Which training images form the memorization reference: the last ``count`` of the seed-0 permutation (at most
    half the split, so that a small test split of MNIST keeps images held out from it)."""
    order = torch.randperm(num_train, generator=torch.Generator().manual_seed(0))
    return order[len(order) - min(count, max(2, num_train // 2)) :]


def _train_reference(model: MNISTClassifier, root: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The memorization reference's features and each one's distance to its nearest other (on the CPU)."""
    train_x, _ = load_split(root, "train")
    chosen = train_x[memorization_indices(len(train_x))]
    feats, _ = embed(model, to_flat_images(chosen, (0.0, 1.0)), (0.0, 1.0))
    return feats, nearest_other_distance(feats)


def _train_reference_or_none(blob: dict, num_features: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The cache's memorization reference when it holds a sound one; else (None, None): computed on first use
    (a cache from before the reference, or one whose reference is damaged, is otherwise used as it is)."""
    feats, nearest = blob.get("train_features"), blob.get("train_nearest")
    if not isinstance(feats, torch.Tensor) or not isinstance(nearest, torch.Tensor):
        return None, None
    if feats.dim() != 2 or feats.shape[1] != num_features or tuple(nearest.shape) != (len(feats),) or not len(feats):
        return None, None
    if not (feats.is_floating_point() and nearest.is_floating_point()):
        return None, None
    if not (torch.isfinite(feats).all() and torch.isfinite(nearest).all()):
        return None, None
    return feats, nearest


def _add_to_cache(path: Path, test_features: torch.Tensor, extra: dict[str, torch.Tensor]) -> None:
    """``extra`` added to the evaluator's cache file when it still holds this evaluator (the same test features);
    a cache that cannot be read or written is left as it is (the values serve this process only, and say so)."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not torch.equal(blob["test_features"], test_features.cpu()):
            return  # another process rebuilt it meanwhile: its own reference will be computed on its first use
        save_torch_atomic(path, blob | extra)
    except (OSError, StorageError, RuntimeError, KeyError, TypeError) as exc:
        say(f"evaluator: could not add the memorization reference to {path} ({type(exc).__name__}); kept in memory")


def _check_cache(
    model: MNISTClassifier, feats: torch.Tensor, logits: torch.Tensor, radii: torch.Tensor, accuracy: float
) -> None:
    """A ValueError unless the cache's values are what the evaluator computes: finite float weights (loaded into
    the lab's own classifier, which checked names and shapes), one feature row, 10 logits and a radius per test
    image, all finite, and an accuracy in [0, 1]. A damaged or edited cache is rebuilt, never used."""
    tensors = {f"state_dict.{k}": v for k, v in model.state_dict().items() if v.is_floating_point()}
    tensors |= {"test_features": feats, "test_logits": logits, "test_radii": radii}
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or not torch.isfinite(value).all():
            raise ValueError(f"{name} is not a tensor of finite floats")
    n = len(feats)
    if feats.dim() != 2 or tuple(logits.shape) != (n, 10) or tuple(radii.shape) != (n,) or n == 0:
        shapes = f"features {tuple(feats.shape)}, logits {tuple(logits.shape)}, radii {tuple(radii.shape)}"
        raise ValueError(f"the test split's {shapes} do not fit one another")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"test_accuracy {accuracy} is not in [0, 1]")


def _load_cache(
    path: Path, checksums: dict[str, str], arch: str = "cnn", root: str | Path | None = None
) -> Evaluator | None:
    """The cached evaluator if it is intact and was made from exactly these files; else None (and why)."""
    if not path.is_file():
        return None
    kind = architecture(arch)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = kind.model()
        model.load_state_dict(blob["state_dict"])
        stale = blob["version"] != kind.version or blob["data_sha256"] != checksums
        feats, logits, radii = blob["test_features"], blob["test_logits"], blob["test_radii"]
        accuracy = float(blob["test_accuracy"])
        _check_cache(model, feats, logits, radii, accuracy)
    except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt
        say(f"evaluator cache {path} is unreadable ({type(exc).__name__}: {str(exc)[:120]}); rebuilding it")
        return None
    if stale:
        say(f"evaluator cache {path} was made from other data or an older version; rebuilding it")
        return None
    train, nearest = _train_reference_or_none(blob, feats.shape[1])
    where = None if root is None else str(root)
    return Evaluator(model.eval(), accuracy, feats, logits, radii, path, train, nearest, where, arch)


def load_evaluator(
    root: str | Path,
    download: bool = False,
    train_if_missing: bool = True,
    min_accuracy: float = MIN_TEST_ACCURACY,
    arch: str = "cnn",
) -> Evaluator:
    """The cached evaluator for the MNIST under ``root``, trained and cached first when needed.

    ``min_accuracy`` guards the metrics: an evaluator below it is refused (tests on tiny fake data lower it).
    ``arch``: which architecture (``EVALUATORS``: ``cnn``, the lab's, or ``strided``, the second feature space).
    The global random state is left as it was, so that a run with evaluation trains exactly as one without.
    """
    architecture(arch)  # an unknown name is refused before any work
    with torch.random.fork_rng(devices=[]):
        return _load_or_train(root, download, train_if_missing, min_accuracy, arch)


def _load_or_train(
    root: str | Path, download: bool, train_if_missing: bool, min_accuracy: float, arch: str = "cnn"
) -> Evaluator:
    ensure_mnist(root, download)
    check_files(root)  # a damaged file is named now, not after minutes of training the evaluator
    checksums = data_checksums(root)
    path = cache_path(root, arch)
    cached = _load_cache(path, checksums, arch, root)
    if cached is not None and cached.test_accuracy >= min_accuracy:
        return cached
    if not train_if_missing:
        which = "" if arch == "cnn" else f" evaluator={arch}"
        raise DataError(f"No valid evaluator cache at {path}; run python -m gan.evaluator data.root={root}{which}.")
    start = time.perf_counter()
    # a signal stops the training between two batches (minutes of work: a scheduler's SIGTERM must not wait them
    # out), and a run that needed the evaluator ends ``interrupted``
    after = f"the evaluator is cached ({path}) only once trained whole; run the command again"
    with stops_on_signals("training the MNIST evaluator", after) as check:
        model, accuracy = train_classifier(root, cache=path, check=check, arch=arch)
        check()
        evaluator = _keep(model, accuracy, root, path, checksums, min_accuracy, start, arch)
        check()  # a signal during the last seconds (reference features, the cache's write) is not lost
    return evaluator


def _keep(
    model: MNISTClassifier,
    accuracy: float,
    root: str | Path,
    path: Path,
    checksums: dict[str, str],
    min_accuracy: float,
    start: float,
    arch: str = "cnn",
) -> Evaluator:
    """A freshly trained evaluator, checked against ``min_accuracy``, with its reference statistics (the test
    split's, and the memorization check's training reference), cached."""
    if accuracy < min_accuracy:
        raise DataError(
            f"The evaluator reached {accuracy:.4f} test accuracy, below the {min_accuracy} it must reach; "
            f"not caching it. Is {raw_folder(root)} the real MNIST?"
        )
    say(f"evaluator: test accuracy {accuracy:.4f}; computing the test split's reference features")
    feats, logits, radii = _reference(model, root)
    train, nearest = _train_reference(model, root)
    cache = {
        "version": architecture(arch).version,
        "state_dict": model.state_dict(),
        "test_accuracy": accuracy,
        "data_sha256": checksums,
        "test_features": feats,
        "test_logits": logits,
        "test_radii": radii,
        "train_features": train,
        "train_nearest": nearest,
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    save_torch_atomic(path, cache)
    say(f"evaluator trained in {duration(time.perf_counter() - start)}: test accuracy {accuracy:.4f}, saved to {path}")
    return Evaluator(model, accuracy, feats, logits, radii, path, train, nearest, str(root), arch)
