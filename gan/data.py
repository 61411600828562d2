"""MNIST as a LightningDataModule: raw IDX files decoded once into memory, padded to 32x32, flattened to 1024.

The pixel range is not a data setting: ``gan.train`` passes the generator's ``data_range`` so the two always match.
torchvision supplies the download (with its mirrors); reading is our own so that a missing, truncated or
corrupted file gets a clear error naming it instead of a numpy traceback.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from gan.errors import ConfigError, DataError
from gan.images import IMAGE_SIZE

SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
MNIST_SIDE = 28


def raw_folder(root: str | Path) -> Path:
    """Where torchvision's layout keeps the raw files: ``ROOT/MNIST/raw``; a DataError naming ``data.root`` when
    the path cannot be followed (a symbolic link that points back to itself)."""
    try:
        return Path(root).expanduser().resolve() / "MNIST" / "raw"
    except (OSError, RuntimeError) as exc:  # Python 3.11 says RuntimeError("Symlink loop from ..."), 3.13 ELOOP
        raise DataError(
            f"data.root={str(root)!r} cannot be followed: it is a symbolic link loop ({exc}). Point data.root at the "
            f"folder that holds MNIST/raw/ (on this lab's machines: data.root=../shared/mnist)."
        ) from None


def _existing(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def missing_files(root: str | Path) -> list[str]:
    folder = raw_folder(root)
    return [n for pair in SPLIT_FILES.values() for n in pair if _existing(folder, n) is None]


def ensure_mnist(root: str | Path, download: bool) -> None:
    """Download the raw files when some are missing and allowed; otherwise explain exactly what to put where."""
    missing = missing_files(root)
    if not missing:
        return
    reason = "downloading is off (data.download=false)"
    if download:
        try:
            from torchvision.datasets import MNIST

            MNIST(str(Path(root).expanduser().resolve()), train=True, download=True)
            missing = missing_files(root)
            if not missing:
                return
            reason = "the download finished without them"
        except Exception as exc:  # noqa: BLE001 - any failure becomes the one clear message below
            reason = f"the download failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    raise DataError(
        f"MNIST files missing in {raw_folder(root)}: {', '.join(missing)}; {reason}. Put the four raw IDX files "
        f"(plain or .gz: {', '.join(n for pair in SPLIT_FILES.values() for n in pair)}) in that folder, or point "
        f"the lab at a folder that holds MNIST/raw/ with data.root=PATH (on this lab's machines: "
        f"data.root=../shared/mnist)."
    )


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"Cannot read {path}: {exc}. Delete it to download it again, or replace it.") from exc


def _check_idx(path: Path, header: bytes, size: int, magic: int, item_shape: Sequence[int]) -> tuple[int, int]:
    """(items, header length) of an IDX file whose first bytes are ``header`` and whose length is ``size``;
    a DataError naming the file when the header or the length is wrong."""
    ndim = 1 + len(item_shape)
    header_len = 4 + 4 * ndim
    if len(header) < header_len:
        raise DataError(f"{path} is truncated: {size} bytes, shorter than an IDX header.")
    found_magic = struct.unpack(">I", header[:4])[0]
    if found_magic != magic:
        raise DataError(
            f"{path} is not an MNIST IDX file of this kind: magic number 0x{found_magic:08x}, expected 0x{magic:08x}."
        )
    dims = struct.unpack(f">{ndim}I", header[4:header_len])
    if tuple(dims[1:]) != tuple(item_shape):
        raise DataError(f"{path} holds items of shape {tuple(dims[1:])}, expected {tuple(item_shape)}.")
    expected = header_len + dims[0] * math.prod(item_shape)
    if size != expected:
        raise DataError(
            f"{path} is truncated or corrupted: its header promises {dims[0]} items ({expected} bytes), the file "
            f"has {size} bytes. Delete it to download it again, or replace it."
        )
    return dims[0], header_len


def read_idx(path: Path, magic: int, item_shape: Sequence[int]) -> torch.Tensor:
    """An IDX file of unsigned bytes -> uint8 tensor (N, *item_shape), with its header and length checked."""
    data = _read_bytes(path)
    items, header_len = _check_idx(path, data[:16], len(data), magic, item_shape)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=header_len).view(items, *item_shape)


def _header_and_size(path: Path) -> tuple[bytes, int]:
    """The first 16 bytes of a raw file and its (uncompressed) length, without reading all of it: a gzip file's
    length is its trailer's ISIZE field (a truncated download has a wrong one)."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                header = fh.read(16)
            with path.open("rb") as fh:
                fh.seek(-4, os.SEEK_END)
                return header, struct.unpack("<I", fh.read(4))[0]
        with path.open("rb") as fh:
            return fh.read(16), path.stat().st_size
    except (OSError, EOFError) as exc:
        raise DataError(f"Cannot read {path}: {exc}. Delete it to download it again, or replace it.") from exc


def check_files(root: str | Path) -> None:
    """All four raw files, checked for what they are before any work starts (milliseconds), so that a damaged or
    misplaced one is named then, not when a split is first read or after minutes of training the evaluator: each
    file's header and length, the counts of each split's images and labels, the training split not smaller than
    the test split (a swapped pair), and every label a digit 0..9 (the label files are read: 70 kB)."""
    folder = raw_folder(root)
    counts: dict[tuple[str, str], tuple[Path, int]] = {}
    for split, (images_name, labels_name) in SPLIT_FILES.items():
        for kind, name, magic, shape in (
            ("images", images_name, IMAGES_MAGIC, (MNIST_SIDE, MNIST_SIDE)),
            ("labels", labels_name, LABELS_MAGIC, ()),
        ):
            path = _existing(folder, name)
            if path is None:
                raise DataError(f"MNIST {split} file {name} missing in {folder}.")
            counts[split, kind] = (path, _check_idx(path, *_header_and_size(path), magic, shape)[0])
    check_counts(counts, folder)
    for split in SPLIT_FILES:
        check_labels(counts[split, "labels"][0], folder)


def check_counts(counts: dict[tuple[str, str], tuple[Path, int]], folder: Path) -> None:
    """Each split's images and labels match in number, and the training split is not the smaller one.

    ``counts``: (split, kind) -> (path, items). MNIST's training files hold 60,000 items and its test files 10,000,
    so a file (or a pair) put in the other split's place is told by its count. Files of other sizes (the small sets
    tests make) pass as long as the training split is not smaller than the test split; two splits of equal size
    cannot be told apart, and pass.
    """
    n = {key: items for key, (_, items) in counts.items()}
    path = {key: file for key, (file, _) in counts.items()}
    advice = (
        f"Put each file in its place in {folder} (MNIST's training files hold 60,000 items, its test files 10,000)."
    )
    for kind, other in (("images", "labels"), ("labels", "images")):  # one kind's two files exchanged
        train, test = n["train", kind], n["test", kind]
        if train < test and (train, test) == (n["test", other], n["train", other]):
            raise DataError(
                f"{path['train', kind].name} and {path['test', kind].name} look swapped: {path['train', kind]} holds "
                f"{train} {kind} and {path['test', kind]} holds {test}, while the {other} files hold {test} "
                f"(training) and {train} (test). {advice}"
            )
    for split in SPLIT_FILES:
        if n[split, "images"] != n[split, "labels"]:
            raise DataError(
                f"{path[split, 'images']} holds {n[split, 'images']} images but {path[split, 'labels']} holds "
                f"{n[split, 'labels']} labels. {advice}"
            )
    if n["train", "images"] < n["test", "images"]:
        raise DataError(
            f"The training files ({path['train', 'images'].name}, {path['train', 'labels'].name}) hold "
            f"{n['train', 'images']} items and the test files ({path['test', 'images'].name}, "
            f"{path['test', 'labels'].name}) hold {n['test', 'images']}: the training split is never the smaller, so "
            f"the two pairs look swapped. {advice}"
        )


def check_labels(path: Path, folder: Path) -> None:
    """Every label in ``path`` is a digit 0..9 (a damaged or foreign file fails here, not in the middle of
    training the evaluator with an IndexError)."""
    labels = read_idx(path, LABELS_MAGIC, ())
    bad = (labels > 9).nonzero()
    if len(bad):
        index = int(bad[0, 0])
        raise DataError(
            f"{path} holds the label {int(labels[index])} at index {index}; MNIST's labels are the digits 0..9 (labels "
            f"outside them: {len(bad)} of {len(labels)}). It is damaged or not MNIST's: replace it in {folder}."
        )


def load_split(root: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 N x 28 x 28, labels int64 N) of the ``train`` or ``test`` split."""
    folder = raw_folder(root)
    names = SPLIT_FILES[split]
    paths = [_existing(folder, n) for n in names]
    if None in paths:
        raise DataError(f"MNIST {split} files missing in {folder}: {', '.join(names)}.")
    images = read_idx(paths[0], IMAGES_MAGIC, (MNIST_SIDE, MNIST_SIDE))
    labels = read_idx(paths[1], LABELS_MAGIC, ())
    if len(images) != len(labels):
        raise DataError(f"{paths[0]} holds {len(images)} images but {paths[1]} holds {len(labels)} labels.")
    return images, labels.long()


def padded_bytes(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x 28 x 28 -> uint8 N x 1024: padded with background (0) to 32x32 and flattened."""
    pad = (IMAGE_SIZE - MNIST_SIDE) // 2
    return F.pad(images, (pad, pad, pad, pad)).reshape(len(images), -1)


def scale_bytes(images: torch.Tensor, value_range: Sequence[float]) -> torch.Tensor:
    """uint8 pixels -> float32 in ``value_range`` (0 -> low end, 255 -> high end)."""
    lo, hi = float(value_range[0]), float(value_range[1])
    return images.float().mul_((hi - lo) / 255.0).add_(lo)


def to_flat_images(images: torch.Tensor, value_range: Sequence[float]) -> torch.Tensor:
    """uint8 N x 28 x 28 -> float32 N x 1024: padded with background to 32x32, scaled to ``value_range``."""
    return scale_bytes(padded_bytes(images), value_range)


def balanced_subset(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Sorted indices of ``size`` items with the classes as equal as possible, drawn with ``seed``.

    Each class gets ``size // classes`` items; the remainder goes to randomly chosen classes, one extra each.
    """
    classes = labels.unique()
    gen = torch.Generator().manual_seed(int(seed))
    quota = torch.full((len(classes),), size // len(classes))
    quota[torch.randperm(len(classes), generator=gen)[: size % len(classes)]] += 1
    picked = []
    for cls, n in zip(classes.tolist(), quota.tolist(), strict=True):
        members = (labels == cls).nonzero().squeeze(1)
        if n > len(members):
            raise DataError(
                f"data.train_size={size} needs {n} images of class {cls} for a class-balanced subset; the training "
                f"split has {len(members)}. Use at most {len(members) * len(classes)} (or null for all images)."
            )
        picked.append(members[torch.randperm(len(members), generator=gen)[:n]])
    return torch.cat(picked).sort().values


def check_settings(batch_size: object, train_size: object, batches_per_iteration: int) -> None:
    """The data settings' own rules, checked before anything is built or read (and again by the data module)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"data.batch_size must be a positive integer, got {batch_size!r}.")
    if train_size is not None and int(train_size) < batch_size * int(batches_per_iteration):
        raise ConfigError(
            f"data.train_size={train_size} is smaller than one iteration's real images "
            f"({batch_size * int(batches_per_iteration)} = data.batch_size x model.d_steps). Use a larger "
            "train_size, or null for the whole training split."
        )


def prepare_files(root: str | Path, download: bool) -> None:
    """MNIST's four files under ``root``, downloaded when missing and allowed, each checked from its header."""
    ensure_mnist(root, download)
    check_files(root)


class PackedBatches:
    """Each member's shuffled batches of an in-memory image set, as indices: per step a [K, batch] index tensor.

    Member k's order comes from its own generator (``data.seed``), so it sees the batches it would see alone.
    An epoch's whole plan ([steps, K, batch] indices) is drawn when the epoch starts; each step yields
    ``(plan, step)`` and the data module's ``transfer_batch_to_device`` gathers the images on the training device
    (the plan moves there once per epoch: no per-step host transfer). ``num_batches`` larger than one pass gives
    consecutive passes, each in a fresh order (a small training subset then serves as many batches per epoch as
    the full data set would).
    """

    def __init__(
        self,
        num_images: int,
        batch_size: int,
        generators: Sequence[torch.Generator],
        num_batches: int | None = None,
        start_step: int = 0,
    ) -> None:
        self.num_images = int(num_images)
        self.batch_size = int(batch_size)
        self.generators = list(generators)
        self.num_batches = self.num_images // batch_size if num_batches is None else int(num_batches)
        self.start_step = int(start_step)  # the first epoch served resumes here (a run stopped mid-epoch)
        self.epoch_rng: list[torch.Tensor] | None = None  # the generators' states before this epoch's plan

    def __len__(self) -> int:
        return self.num_batches

    def epoch_plan(self) -> torch.Tensor:
        """[steps, K, batch] image indices of one epoch, each member's from its own generator."""
        passes = max(1, math.ceil(self.num_batches * self.batch_size / self.num_images))
        used = self.num_batches * self.batch_size
        orders = [
            torch.cat([torch.randperm(self.num_images, generator=g) for _ in range(passes)])[:used]
            for g in self.generators
        ]
        return torch.stack(orders).view(len(orders), self.num_batches, self.batch_size).transpose(0, 1).contiguous()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        self.epoch_rng = [g.get_state() for g in self.generators]
        plan = self.epoch_plan()
        start, self.start_step = self.start_step, 0
        for i in range(start, self.num_batches):
            yield plan, i


class MNISTDataModule(L.LightningDataModule):
    """Train split (or a class-balanced subset of it) for training; the test split (``test_images``) for evaluation.

    Serves a population: ``seed`` and ``value_range`` may be given per member (lists), and each training batch is
    [K, batch_size x d_steps, 1024], member k's real images in its own shuffle order and its own data range (the
    range of its generator's output activation). The images are kept once, as bytes, on the training device.

    An epoch is always one full training split's worth of batches (60,000 images): with ``train_size`` N it is
    about 60,000 / N passes over the subset, so limited-data runs keep the budget and the per-epoch logging,
    evaluation and checkpoint cadence of full-data runs. Augmentation (DiffAugment) is what D sees, a per-member
    setting of the model (``model.augment``), not of the data.
    """

    def __init__(
        self,
        root: str = "data",
        batch_size: int = 64,
        download: bool = True,
        seed: int | Sequence[int] = 0,
        value_range: Sequence[float] | Sequence[Sequence[float]] = (-1.0, 1.0),
        batches_per_iteration: int = 1,
        train_size: int | None = None,
        subset_seed: int = 0,
    ) -> None:
        super().__init__()
        check_settings(batch_size, train_size, batches_per_iteration)
        self.root = root
        self.batch_size = int(batch_size)
        self.download = bool(download)
        seeds = [int(seed)] if isinstance(seed, (int, str)) else [int(s) for s in seed]
        ranges = [value_range] if isinstance(value_range[0], (int, float)) else list(value_range)
        if len(ranges) == 1 and len(seeds) > 1:
            ranges = ranges * len(seeds)
        if len(ranges) != len(seeds):
            raise ValueError(f"{len(seeds)} member seeds but {len(ranges)} value ranges")
        self.value_ranges = [(float(lo), float(hi)) for lo, hi in ranges]
        # With model.d_steps = k each iteration needs k real batches: one for each discriminator update.
        self.batches_per_iteration = int(batches_per_iteration)
        self.train_size = None if train_size is None else int(train_size)
        self.subset_seed = int(subset_seed)
        self.shuffle_generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.train_bytes: torch.Tensor | None = None  # N x 1024 uint8, padded
        self.train_labels: torch.Tensor | None = None
        self.batches_per_epoch = 0
        self._test: tuple[torch.Tensor, torch.Tensor] | None = None
        self._on_device: dict[str, Any] = {}
        self._loader: PackedBatches | None = None
        self._resume_step = 0

    @property
    def value_range(self) -> tuple[float, float]:
        """The data range of a population of one."""
        if len(self.value_ranges) != 1:
            raise ValueError("a pack has one value range per member: use value_ranges")
        return self.value_ranges[0]

    def prepare_data(self) -> None:
        prepare_files(self.root, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.train_bytes is None:
            images, labels = load_split(self.root, "train")
            self.batches_per_epoch = len(images) // (self.batch_size * self.batches_per_iteration)
            if self.batches_per_epoch == 0:
                raise ConfigError(
                    f"data.batch_size={self.batch_size} (x model.d_steps={self.batches_per_iteration} batches per "
                    f"iteration) is larger than the {len(images)} training images in {raw_folder(self.root)}: an "
                    f"epoch would hold no iteration. Use at most {len(images) // self.batches_per_iteration}."
                )
            if self.train_size is not None and self.train_size > len(images):
                raise DataError(
                    f"data.train_size={self.train_size} is larger than the training split ({len(images)} images in "
                    f"{raw_folder(self.root)}). Use at most {len(images)}, or null for all of them."
                )
            if self.train_size is not None and self.train_size < len(images):
                keep = balanced_subset(labels, self.train_size, self.subset_seed)
                images, labels = images[keep], labels[keep]
            self.train_labels = labels
            self.train_bytes = padded_bytes(images)

    @property
    def train_images(self) -> torch.Tensor:
        """The training images as float32 N x 1024 in the (first) member's data range."""
        self.setup("fit")
        return scale_bytes(self.train_bytes, self.value_ranges[0])

    def train_dataloader(self) -> PackedBatches:
        self.setup("fit")
        self._loader = PackedBatches(
            len(self.train_bytes),
            self.batch_size * self.batches_per_iteration,
            self.shuffle_generators,
            num_batches=self.batches_per_epoch,
            start_step=self._resume_step,
        )
        self._resume_step = 0
        return self._loader

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> torch.Tensor:
        """``(epoch plan, step)`` -> the step's real images [K, B, 1024] on ``device``, each member's in its range.

        The images (bytes) go to the device once, the epoch's plan once per epoch; each step is one gather.
        """
        plan, step = batch
        cache = self._on_device
        if cache.get("device") != device:
            cache.clear()
            cache.update(device=device, images=self.train_bytes.to(device))
            lows = torch.tensor([lo for lo, _ in self.value_ranges], device=device).view(-1, 1, 1)
            scales = torch.tensor([(hi - lo) / 255.0 for lo, hi in self.value_ranges], device=device).view(-1, 1, 1)
            cache.update(lows=lows, scales=scales)
        if cache.get("plan_source") is not plan:
            cache.update(plan_source=plan, plan=plan.to(device, non_blocking=True))
        real = cache["images"][cache["plan"][step]]  # [K, B, 1024] uint8
        return real.float().mul_(cache["scales"]).add_(cache["lows"])

    def test_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The 10k test split (N x 1024 in the (first) member's data range, labels), decoded once."""
        if self._test is None:
            images, labels = load_split(self.root, "test")
            self._test = (to_flat_images(images, self.value_ranges[0]), labels)
        return self._test

    def state_dict(self) -> dict[str, Any]:
        """Each member's shuffle RNG, so that a resumed run sees the batches an uninterrupted one would have seen,
        and the training subset, so that it trains on the same data (``gan.train`` reads it back)."""
        subset = {"train_size": self.train_size, "subset_seed": self.subset_seed}
        state = {"shuffle_rng": [g.get_state() for g in self.shuffle_generators], "subset": subset}
        # Saved mid-epoch (a run stopped by a signal): the epoch's plan is drawn again from the generators' states
        # before it, and the resumed epoch starts at the first batch not trained yet (Lightning counts them).
        trainer = self.trainer
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed if trainer is not None else 0
        if self._loader is not None and self._loader.epoch_rng and 0 < done < trainer.num_training_batches:
            state.update(epoch_rng=list(self._loader.epoch_rng), epoch_step=int(done))
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = state_dict.get("epoch_rng") or state_dict.get("shuffle_rng")
        if states is not None:
            for gen, state in zip(self.shuffle_generators, states, strict=True):
                gen.set_state(state)
        self._resume_step = int(state_dict.get("epoch_step", 0))
