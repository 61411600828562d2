"""gan.data: reading MNIST's IDX files, padding and scaling, packed batches, limited-data subsets."""

import gzip
from pathlib import Path

import pytest
import torch

from gan.data import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    MNISTDataModule,
    PackedBatches,
    balanced_subset,
    load_split,
    padded_bytes,
    raw_folder,
    scale_bytes,
    to_flat_images,
)
from gan.errors import DataError
from tests.helpers import CPU, REAL_MNIST, gens, make_mnist, needs_real_mnist, write_idx


def test_loads_pads_flattens_and_scales_to_tanh_range(tiny_mnist):
    dm = MNISTDataModule(root=str(tiny_mnist), batch_size=32, value_range=(-1.0, 1.0), download=False)
    dm.prepare_data()
    dm.setup("fit")
    x = dm.train_images
    assert x.shape == (256, 1024) and x.dtype == torch.float32
    assert dm.train_bytes.shape == (256, 1024) and dm.train_bytes.dtype == torch.uint8  # kept once, as bytes
    assert dm.value_range == (-1.0, 1.0)
    images, labels = load_split(tiny_mnist, "train")
    img = x.view(-1, 32, 32)
    # 2-pixel background border from the padding, at the low end of the range
    assert (img[:, :2, :] == -1).all() and (img[:, :, :2] == -1).all() and (img[:, -2:, :] == -1).all()
    # the 28x28 content is the raw bytes mapped linearly 0 -> -1, 255 -> 1
    assert torch.allclose(img[:, 2:30, 2:30], images.float() / 255 * 2 - 1, atol=1e-6)
    assert x.min() >= -1 and x.max() <= 1 and x.max() > 0.99
    assert labels.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert torch.equal(padded_bytes(images), dm.train_bytes)
    assert torch.equal(to_flat_images(images, (-1.0, 1.0)), x) and torch.equal(scale_bytes(dm.train_bytes, (-1, 1)), x)


def test_sigmoid_range_and_test_split(tiny_mnist):
    dm = MNISTDataModule(root=str(tiny_mnist), value_range=(0.0, 1.0), download=False)
    dm.setup("fit")
    assert dm.train_images.min() == 0 and dm.train_images.max() <= 1
    test_x, test_y = dm.test_images()
    assert test_x.shape == (64, 1024) and len(test_y) == 64
    assert dm.test_images()[0] is test_x  # decoded once


def test_gz_files_are_read(tmp_path):
    make_mnist(tmp_path, n_train=20, n_test=10, gz=True)
    images, labels = load_split(tmp_path, "train")
    assert images.shape == (20, 28, 28) and len(labels) == 20


def epoch_indices(batches):
    """One epoch of a PackedBatches as the [steps, K, batch] plan it yields (checked to be one plan, in order)."""
    steps = list(batches)
    assert [s for _, s in steps] == list(range(len(batches)))
    assert all(plan is steps[0][0] for plan, _ in steps)
    return steps[0][0]


def test_batches_are_full_shuffled_and_seeded():
    batches = PackedBatches(100, 32, gens(0))
    plan = epoch_indices(batches)
    assert len(batches) == 3 and plan.shape == (3, 1, 32)
    seen = plan[:, 0].flatten()
    assert len(set(seen.tolist())) == 96  # no repeats within an epoch
    assert not torch.equal(seen, torch.arange(96))  # shuffled
    assert torch.equal(epoch_indices(PackedBatches(100, 32, gens(0))), plan)
    assert not torch.equal(epoch_indices(batches), plan)  # a new order each epoch
    pack = epoch_indices(PackedBatches(100, 32, gens(5, 0)))
    assert torch.equal(pack[:, 1], plan[:, 0])  # each member's order is the one it has alone
    assert not torch.equal(pack[:, 0], pack[:, 1])


def test_each_member_gets_its_own_shuffle_and_range(tiny_mnist):
    cpu = torch.device("cpu")
    dm = MNISTDataModule(
        root=str(tiny_mnist), batch_size=32, download=False, seed=[3, 4], value_range=[(-1.0, 1.0), (0.0, 1.0)]
    )
    plan, step = next(iter(dm.train_dataloader()))
    batch = dm.transfer_batch_to_device((plan, step), cpu, 0)
    assert batch.shape == (2, 32, 1024)
    for k, (seed, value_range) in enumerate([(3, (-1.0, 1.0)), (4, (0.0, 1.0))]):
        assert torch.allclose(batch[k], scale_bytes(dm.train_bytes[plan[step, k]], value_range))
        alone = MNISTDataModule(root=str(tiny_mnist), batch_size=32, download=False, seed=seed, value_range=value_range)
        assert torch.equal(batch[k], alone.transfer_batch_to_device(next(iter(alone.train_dataloader())), cpu, 0)[0])
    assert dm.value_ranges == [(-1.0, 1.0), (0.0, 1.0)]
    with pytest.raises(ValueError, match="one value range per member"):
        _ = dm.value_range
    with pytest.raises(ValueError, match="3 member seeds but 2 value ranges"):
        MNISTDataModule(root=str(tiny_mnist), seed=[1, 2, 3], value_range=[(-1.0, 1.0), (0.0, 1.0)])


@pytest.mark.parametrize("size", [0, -1, 32.0, "32"])
def test_batch_size_must_be_a_positive_integer(size):
    with pytest.raises(ValueError, match="data.batch_size must be a positive integer"):
        MNISTDataModule(batch_size=size)


def test_state_dict_restores_the_next_epoch_order(tiny_mnist):
    cpu = torch.device("cpu")
    dm = MNISTDataModule(root=str(tiny_mnist), batch_size=32, download=False, seed=[3, 4], train_size=128)
    loader = dm.train_dataloader()
    first = [dm.transfer_batch_to_device(b, cpu, 0) for b in loader]
    state = dm.state_dict()
    assert len(state["shuffle_rng"]) == 2 and state["subset"] == {"train_size": 128, "subset_seed": 0}
    expected = [dm.transfer_batch_to_device(b, cpu, 0) for b in loader]
    assert len(expected) == 8 and not torch.equal(first[0], expected[0])
    dm2 = MNISTDataModule(root=str(tiny_mnist), batch_size=32, download=False, seed=[3, 4], train_size=128)
    dm2.load_state_dict(state)
    again = [dm2.transfer_batch_to_device(b, cpu, 0) for b in dm2.train_dataloader()]
    assert len(again) == len(expected) and all(torch.equal(a, b) for a, b in zip(again, expected, strict=True))


def test_d_steps_batches_hold_one_batch_per_discriminator_update(tiny_mnist):
    dm = MNISTDataModule(root=str(tiny_mnist), batch_size=32, download=False, batches_per_iteration=2)
    loader = dm.train_dataloader()
    batch = dm.transfer_batch_to_device(next(iter(loader)), torch.device("cpu"), 0)
    assert len(loader) == 4 and batch.shape == (1, 64, 1024)


def test_missing_files_offline_name_files_folder_and_data_root(tmp_path):
    dm = MNISTDataModule(root=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(DataError) as err:
        dm.prepare_data()
    msg = str(err.value)
    assert str(raw_folder(tmp_path / "nowhere")) in msg
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        assert name in msg
    assert "data.root=" in msg and "data.download=false" in msg


def test_failed_download_is_reported_clearly(tmp_path, monkeypatch):
    import torchvision.datasets

    class Offline:
        def __init__(self, *a, **k):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    dm = MNISTDataModule(root=str(tmp_path), download=True)
    with pytest.raises(DataError, match="download failed.*Error downloading.*Put the four raw IDX files"):
        dm.prepare_data()


def _corrupt(tmp_path, how):
    root = make_mnist(tmp_path, n_train=20, n_test=10)
    path = raw_folder(root) / "train-images-idx3-ubyte"
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "header":
        path.write_bytes(data[:6])
    elif how == "magic":
        write_idx(path, torch.zeros(20, 28, 28, dtype=torch.uint8), LABELS_MAGIC + 1)
    elif how == "shape":
        write_idx(path, torch.zeros(20, 27, 28, dtype=torch.uint8), IMAGES_MAGIC)
    elif how == "count":
        write_idx(path, torch.zeros(19, 28, 28, dtype=torch.uint8), IMAGES_MAGIC)
    elif how == "gzip":
        path.unlink()
        (path.parent / (path.name + ".gz")).write_bytes(b"not gzip at all")
    return root, path


@pytest.mark.parametrize(
    "how,pattern",
    [
        ("truncated", "truncated or corrupted: its header promises 20 items"),
        ("header", "truncated.*shorter than an IDX header"),
        ("magic", "not an MNIST IDX file.*expected 0x00000803"),
        ("shape", r"items of shape \(27, 28\), expected \(28, 28\)"),
        ("count", "holds 19 images but .* holds 20 labels"),
        ("gzip", "Cannot read .*gz"),
    ],
)
def test_bad_files_get_a_clear_error_naming_the_file(tmp_path, how, pattern):
    root, path = _corrupt(tmp_path, how)
    with pytest.raises(DataError, match=pattern) as err:
        MNISTDataModule(root=str(root), download=False).setup("fit")
    assert "train-images-idx3-ubyte" in str(err.value)


def _swap(folder, first, second):
    (folder / first).rename(folder / "tmp")
    (folder / second).rename(folder / first)
    (folder / "tmp").rename(folder / second)


def _misplaced(tmp_path, how, gz):
    """A small MNIST (30 training, 10 test items) with one thing wrong that headers and lengths do not show."""
    root = make_mnist(tmp_path, n_train=30, n_test=10, gz=gz)
    folder, ext = raw_folder(root), ".gz" if gz else ""
    if how == "pairs_swapped":
        _swap(folder, f"train-images-idx3-ubyte{ext}", f"t10k-images-idx3-ubyte{ext}")
        _swap(folder, f"train-labels-idx1-ubyte{ext}", f"t10k-labels-idx1-ubyte{ext}")
    elif how == "images_swapped":
        _swap(folder, f"train-images-idx3-ubyte{ext}", f"t10k-images-idx3-ubyte{ext}")
    elif how == "labels_swapped":
        _swap(folder, f"train-labels-idx1-ubyte{ext}", f"t10k-labels-idx1-ubyte{ext}")
    elif how == "label_200":
        labels = torch.arange(10, dtype=torch.uint8) % 10
        labels[7] = 200
        (folder / f"t10k-labels-idx1-ubyte{ext}").unlink()
        write_idx(folder / "t10k-labels-idx1-ubyte", labels, LABELS_MAGIC, gz)
    elif how == "short_test_pixels":
        path = folder / "t10k-images-idx3-ubyte"
        if gz:
            (folder / "t10k-images-idx3-ubyte.gz").unlink()
        write_idx(path, torch.zeros(10, 28, 28, dtype=torch.uint8), IMAGES_MAGIC, gz)
        if not gz:
            path.write_bytes(path.read_bytes()[:-28])  # one row of the last image missing
        else:
            data = gzip.decompress(Path(f"{path}.gz").read_bytes())[:-28]
            Path(f"{path}.gz").write_bytes(gzip.compress(data))
    return root, folder


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize(
    "how,pattern,files",
    [
        (
            "pairs_swapped",
            r"The training files \(train-images-idx3-ubyte.*, train-labels-idx1-ubyte.*\) hold 10 items and the test "
            r"files \(t10k-images-idx3-ubyte.*, t10k-labels-idx1-ubyte.*\) hold 30: .* look swapped",
            ["train-images", "train-labels", "t10k-images", "t10k-labels"],
        ),
        (
            "images_swapped",
            r"train-images-idx3-ubyte.* and t10k-images-idx3-ubyte.* look swapped: .* holds 10 images and .* holds 30, "
            r"while the labels files hold 30 \(training\) and 10 \(test\)",
            ["train-images", "t10k-images"],
        ),
        (
            "labels_swapped",
            r"train-labels-idx1-ubyte.* and t10k-labels-idx1-ubyte.* look swapped: .* holds 10 labels and .* holds 30",
            ["train-labels", "t10k-labels"],
        ),
        (
            "label_200",
            r"t10k-labels-idx1-ubyte.* holds the label 200 at index 7; .* digits 0..9 \(labels outside them: 1 of 10\)",
            ["t10k-labels"],
        ),
        (
            "short_test_pixels",
            r"t10k-images-idx3-ubyte.* is truncated or corrupted: its header promises 10",
            ["t10k-im"],
        ),
    ],
)
def test_files_in_the_wrong_place_or_with_bad_labels_are_named_before_any_work(tmp_path, how, pattern, files, gz):
    root, folder = _misplaced(tmp_path, how, gz)
    with pytest.raises(DataError, match=pattern) as err:
        MNISTDataModule(root=str(root), download=False).prepare_data()  # headers, counts and labels: no decoding
    assert str(folder) in str(err.value) and all(name in str(err.value) for name in files)


def test_small_sets_pass_unless_the_training_split_is_the_smaller(tmp_path):
    """The count rule lets any training split pass that is not smaller than the test split (equal ones included)."""
    from gan.data import check_files

    check_files(make_mnist(tmp_path / "equal", n_train=8, n_test=8))
    check_files(make_mnist(tmp_path / "small", n_train=30, n_test=10))


def test_a_data_root_that_is_a_symlink_loop_is_one_clear_error(tmp_path, capsys):
    from gan.data import prepare_files
    from gan.errors import exits_on_error

    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(DataError, match=f"data.root='{loop}' cannot be followed: it is a symbolic link loop"):
        MNISTDataModule(root=str(loop), download=False).prepare_data()
    with pytest.raises(SystemExit) as stop, exits_on_error():  # as every entry point words it
        prepare_files(loop, download=True)
    err = capsys.readouterr().err
    assert (
        stop.value.code == 2 and err.startswith(f"error: data.root='{loop}' cannot be followed") and "Trace" not in err
    )


def test_gzip_helper_is_really_gzip(tmp_path):
    make_mnist(tmp_path, n_train=2, n_test=2, gz=True)
    with gzip.open(raw_folder(tmp_path) / "t10k-labels-idx1-ubyte.gz") as fh:
        assert fh.read(4) == LABELS_MAGIC.to_bytes(4, "big")


def test_balanced_subset_is_fixed_per_seed_and_class_balanced():
    labels = torch.arange(5000) % 10
    a, b, c = balanced_subset(labels, 1005, 0), balanced_subset(labels, 1005, 0), balanced_subset(labels, 1005, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    counts = torch.bincount(labels[a], minlength=10)
    assert len(a) == len(set(a.tolist())) == 1005
    assert sorted(counts.tolist()) == [100] * 5 + [101] * 5
    with pytest.raises(DataError, match="needs 501 images of class 0.*has 500"):
        balanced_subset(labels, 5010, 0)


def test_data_module_subset_keeps_the_full_epoch_length(tiny_mnist):
    full = MNISTDataModule(str(tiny_mnist), batch_size=16)
    small = MNISTDataModule(str(tiny_mnist), batch_size=16, train_size=40)
    full.setup(), small.setup()
    assert len(small.train_images) == 40 and torch.bincount(small.train_labels).tolist() == [4] * 10
    assert len(small.train_dataloader()) == len(full.train_dataloader()) == 256 // 16
    batches = [small.transfer_batch_to_device(b, CPU, 0) for b in small.train_dataloader()]
    assert len(batches) == 16 and all(b.shape == (1, 16, 1024) for b in batches)
    seen = torch.cat(batches[:2], dim=1)[0]  # 32 images: only subset images
    assert all(any(torch.equal(img, s) for s in small.train_images) for img in seen)
    with pytest.raises(ValueError, match="data.train_size=8 is smaller than one iteration's real images"):
        MNISTDataModule(str(tiny_mnist), batch_size=16, train_size=8)
    with pytest.raises(DataError, match="data.train_size=999 is larger than the training split"):
        MNISTDataModule(str(tiny_mnist), batch_size=16, train_size=999).setup()


def test_packed_batches_beyond_one_pass_visit_every_item_each_pass():
    loader = PackedBatches(10, 5, gens(0, 1), num_batches=6)
    steps = list(loader)
    assert len(steps) == 6 and [s for _, s in steps] == list(range(6))
    plan = steps[0][0]
    assert plan.shape == (6, 2, 5)
    for k in range(2):
        for p in range(3):
            assert sorted(plan[2 * p, k].tolist() + plan[2 * p + 1, k].tolist()) == list(range(10))
    assert not torch.equal(plan[:, 0], plan[:, 1])  # each member its own order


@needs_real_mnist
@pytest.mark.slow
def test_real_splits_decode_to_60k_and_10k_padded_images():
    images, labels = load_split(REAL_MNIST, "train")
    assert images.shape == (60000, 28, 28) and labels.bincount().tolist()[0] == 5923
    dm = MNISTDataModule(root=str(REAL_MNIST), value_range=(-1.0, 1.0), download=False)
    dm.prepare_data()
    dm.setup("fit")
    x = dm.train_images
    assert x.shape == (60000, 1024)
    img = x.view(-1, 32, 32)
    assert (img[:, :2] == -1).all() and (img[:, :, -2:] == -1).all()
    assert x.max() == 1.0 and x.min() == -1.0
    test_x, test_y = dm.test_images()
    assert test_x.shape == (10000, 1024) and test_y.shape == (10000,)
    assert len(dm.train_dataloader()) == 60000 // 64


@needs_real_mnist
@pytest.mark.slow
def test_real_limited_data_subset_is_balanced_and_fixed():
    a = MNISTDataModule(root=str(REAL_MNIST), download=False, train_size=2000, seed=0)
    b = MNISTDataModule(root=str(REAL_MNIST), download=False, train_size=2000, seed=7)  # another training seed
    a.setup(), b.setup()
    assert a.train_labels.bincount().tolist() == [200] * 10
    assert torch.equal(a.train_images, b.train_images)  # the subset follows data.subset_seed, not the seed
    assert len(a.train_dataloader()) == 60000 // 64  # an epoch is still 60,000 images' worth of batches
