"""MNIST as a LightningDataModule: raw IDX files decoded once into memory, padded to 32x32, flattened to 1024.

The pixel range is not a data setting: ``gan.train`` passes the generator's ``data_range`` so the two always match.
torchvision supplies the download (with its mirrors); reading is our own so that a missing, truncated or
corrupted file gets a clear error naming it instead of a numpy traceback.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path
from typing import Any, Iterator, Sequence

import lightning as L
import torch
import torch.nn.functional as F

from gan.networks import IMAGE_SIZE

SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
MNIST_SIDE = 28


class MNISTDataError(RuntimeError):
    """MNIST files are missing, truncated or not MNIST."""


def raw_folder(root: str | Path) -> Path:
    """Where torchvision's layout keeps the raw files: ``ROOT/MNIST/raw``."""
    return Path(root).expanduser().resolve() / "MNIST" / "raw"


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
    raise MNISTDataError(
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
        raise MNISTDataError(f"Cannot read {path}: {exc}. Delete it to download it again, or replace it.") from exc


def read_idx(path: Path, magic: int, item_shape: Sequence[int]) -> torch.Tensor:
    """An IDX file of unsigned bytes -> uint8 tensor (N, *item_shape), with its header and length checked."""
    data = _read_bytes(path)
    ndim = 1 + len(item_shape)
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise MNISTDataError(f"{path} is truncated: {len(data)} bytes, shorter than an IDX header.")
    found_magic = struct.unpack(">I", data[:4])[0]
    if found_magic != magic:
        raise MNISTDataError(
            f"{path} is not an MNIST IDX file of this kind: magic number 0x{found_magic:08x}, expected 0x{magic:08x}."
        )
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    if tuple(dims[1:]) != tuple(item_shape):
        raise MNISTDataError(f"{path} holds items of shape {tuple(dims[1:])}, expected {tuple(item_shape)}.")
    expected = header_len + dims[0] * math.prod(item_shape)
    if len(data) != expected:
        raise MNISTDataError(
            f"{path} is truncated or corrupted: its header promises {dims[0]} items ({expected} bytes), the file "
            f"has {len(data)} bytes. Delete it to download it again, or replace it."
        )
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=header_len).view(dims[0], *item_shape)


def load_split(root: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 N x 28 x 28, labels int64 N) of the ``train`` or ``test`` split."""
    folder = raw_folder(root)
    names = SPLIT_FILES[split]
    paths = [_existing(folder, n) for n in names]
    if None in paths:
        raise MNISTDataError(f"MNIST {split} files missing in {folder}: {', '.join(names)}.")
    images = read_idx(paths[0], IMAGES_MAGIC, (MNIST_SIDE, MNIST_SIDE))
    labels = read_idx(paths[1], LABELS_MAGIC, ())
    if len(images) != len(labels):
        raise MNISTDataError(f"{paths[0]} holds {len(images)} images but {paths[1]} holds {len(labels)} labels.")
    return images, labels.long()


def to_flat_images(images: torch.Tensor, value_range: Sequence[float]) -> torch.Tensor:
    """uint8 N x 28 x 28 -> float32 N x 1024: padded with background to 32x32, scaled to ``value_range``."""
    lo, hi = float(value_range[0]), float(value_range[1])
    pad = (IMAGE_SIZE - MNIST_SIDE) // 2
    padded = F.pad(images, (pad, pad, pad, pad))
    return padded.reshape(len(images), -1).float().mul_((hi - lo) / 255.0).add_(lo)


class ShuffledBatches:
    """Shuffled, full batches sliced from an in-memory tensor: one index op per batch, no per-item collation."""

    def __init__(self, data: torch.Tensor, batch_size: int, generator: torch.Generator) -> None:
        self.data = data
        self.batch_size = batch_size
        self.generator = generator

    def __len__(self) -> int:
        return len(self.data) // self.batch_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        order = torch.randperm(len(self.data), generator=self.generator)
        for i in range(len(self)):
            yield self.data[order[i * self.batch_size : (i + 1) * self.batch_size]]


class MNISTDataModule(L.LightningDataModule):
    """Train split for training; the test split (``test_images``) for evaluation."""

    def __init__(
        self,
        root: str = "data",
        batch_size: int = 64,
        download: bool = True,
        seed: int = 0,
        value_range: Sequence[float] = (-1.0, 1.0),
        batches_per_iteration: int = 1,
    ) -> None:
        super().__init__()
        if int(batch_size) < 1:
            raise ValueError(f"data.batch_size must be a positive integer, got {batch_size!r}.")
        self.root = root
        self.batch_size = int(batch_size)
        self.download = bool(download)
        self.value_range = (float(value_range[0]), float(value_range[1]))
        # With model.d_steps = k each iteration needs k real batches: one for each discriminator update.
        self.batches_per_iteration = int(batches_per_iteration)
        self.shuffle_generator = torch.Generator().manual_seed(int(seed))
        self.train_images: torch.Tensor | None = None
        self.train_labels: torch.Tensor | None = None
        self._test: tuple[torch.Tensor, torch.Tensor] | None = None

    def prepare_data(self) -> None:
        ensure_mnist(self.root, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.train_images is None:
            images, self.train_labels = load_split(self.root, "train")
            self.train_images = to_flat_images(images, self.value_range)

    def train_dataloader(self) -> ShuffledBatches:
        self.setup("fit")
        return ShuffledBatches(self.train_images, self.batch_size * self.batches_per_iteration, self.shuffle_generator)

    def test_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The 10k test split (N x 1024 in the data range, labels), decoded once."""
        if self._test is None:
            images, labels = load_split(self.root, "test")
            self._test = (to_flat_images(images, self.value_range), labels)
        return self._test

    def state_dict(self) -> dict[str, Any]:
        """The shuffle RNG, so that a resumed run sees the batches an uninterrupted one would have seen."""
        return {"shuffle_rng": self.shuffle_generator.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "shuffle_rng" in state_dict:
            self.shuffle_generator.set_state(state_dict["shuffle_rng"])
