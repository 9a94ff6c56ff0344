"""lth_tutorial.data on the real datasets: splits, on-device batching, augmentation, and refusal of
missing, truncated or corrupted files with messages that say what to do."""
from __future__ import annotations

import gzip
import hashlib
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from lth_tutorial import data as D
from lth_tutorial.checksums import CONTENT_SHA256
from lth_tutorial.data import (NORMALIZATION, DataConfig, DataError, DeviceLoader, Split, augment_batch, augment_params, content_sha256,
                               load_split, load_splits)

CIFAR_SUBSET = DataConfig("cifar10", train_examples=4000, validation_size=500, test_examples=1000)
MNIST_FULL = DataConfig("mnist")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# --------------------------------------------------------------------------------------------------
# helpers


def _raw_mnist_bytes(root: Path, name: str) -> bytes:
    """The uncompressed bytes of an MNIST IDX file in `root`, read independently of the library."""
    raw = root / "MNIST" / "raw"
    if (raw / name).is_file():
        return (raw / name).read_bytes()
    with gzip.open(raw / f"{name}.gz", "rb") as f:
        return f.read()


def _write_new(path: Path, payload: bytes) -> Path:
    """Write `payload` to a fresh file at `path` (never through a symlink to the real data)."""
    path.unlink(missing_ok=True)
    path.write_bytes(payload)
    return path


def _to_uint8(images: torch.Tensor, dataset: str) -> torch.Tensor:
    """Undo the normalization: back to the original uint8 pixels."""
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in D.NORMALIZATION[dataset])
    return torch.round((images.cpu() * std + mean) * 255).clamp(0, 255).to(torch.uint8)


def _row_hashes(images: torch.Tensor) -> list[str]:
    flat = images.reshape(len(images), -1).numpy()
    return [hashlib.sha1(row.tobytes()).hexdigest() for row in flat]


def _index_split(n: int, device: str = "cpu") -> Split:
    """A split whose image i is the single number i (and whose label is i)."""
    return Split(torch.arange(n, dtype=torch.float32, device=device).view(n, 1, 1, 1),
                 torch.arange(n, device=device))


def _order(loader: DeviceLoader, epoch: int) -> list[int]:
    return torch.cat([y for _, y in loader.epoch(epoch)]).tolist()


# --------------------------------------------------------------------------------------------------
# fixtures: each split is loaded once per module (the real root's cache makes this fast)


@pytest.fixture(scope="module")
def mnist_splits(data_root: Path) -> D.Splits:
    return load_splits(MNIST_FULL, root=data_root)


@pytest.fixture(scope="module")
def cifar_splits(cifar_root: Path) -> D.Splits:
    return load_splits(CIFAR_SUBSET, root=cifar_root)


@pytest.fixture
def splits_for(request):
    def get(dataset: str) -> tuple[D.Splits, DataConfig, Path]:
        if dataset == "mnist":
            return request.getfixturevalue("mnist_splits"), MNIST_FULL, request.getfixturevalue("data_root")
        return request.getfixturevalue("cifar_splits"), CIFAR_SUBSET, request.getfixturevalue("cifar_root")
    return get


# --------------------------------------------------------------------------------------------------
# splits


@pytest.mark.parametrize("dataset, sizes, shape", [
    ("mnist", (55_000, 5_000, 10_000), (1, 28, 28)),
    ("cifar10", (3_500, 500, 1_000), (3, 32, 32)),
])
def test_split_sizes_shapes_and_types(splits_for, dataset, sizes, shape):
    splits, _, _ = splits_for(dataset)
    parts = (splits.train, splits.validation, splits.test)
    assert tuple(len(p) for p in parts) == sizes
    for part, n in zip(parts, sizes):
        assert part.images.shape == (n, *shape)
        assert part.images.dtype == torch.float32
        assert part.labels.shape == (n,) and part.labels.dtype == torch.int64
        assert set(part.labels.unique().tolist()) == set(range(10))


def test_mnist_training_images_are_normalized(mnist_splits):
    images = torch.cat([mnist_splits.train.images, mnist_splits.validation.images])
    # NORMALIZATION holds MNIST's training mean and std; normalized, the 60,000 images have (0, 1).
    assert abs(images.mean().item()) < 0.01
    assert abs(images.std().item() - 1) < 0.01


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_validation_is_a_random_disjoint_part_of_the_training_set(splits_for, dataset):
    splits, config, root = splits_for(dataset)
    raw_images, raw_labels = load_split(dataset, "train", config.train_examples, root)
    raw_index = {h: i for i, h in enumerate(_row_hashes(raw_images))}
    assert len(raw_index) == len(raw_images), "the real training images are all distinct"

    train = [raw_index[h] for h in _row_hashes(_to_uint8(splits.train.images, dataset))]
    val = [raw_index[h] for h in _row_hashes(_to_uint8(splits.validation.images, dataset))]
    assert not set(train) & set(val)
    assert sorted(train + val) == list(range(len(raw_images)))  # together: every training image once
    # each image keeps its own label
    assert torch.equal(splits.train.labels.cpu(), raw_labels[train])
    assert torch.equal(splits.validation.labels.cpu(), raw_labels[val])
    # held out at random, not the first or last examples
    assert val != list(range(len(val)))
    assert min(val) < len(raw_images) // 10 and max(val) > len(raw_images) * 9 // 10


def test_test_split_is_the_official_test_prefix(cifar_splits, cifar_root):
    raw_images, raw_labels = load_split("cifar10", "test", 1000, cifar_root)
    assert torch.equal(_to_uint8(cifar_splits.test.images, "cifar10"), raw_images)
    assert torch.equal(cifar_splits.test.labels, raw_labels)


def test_split_seed_fixes_the_validation_set(cifar_splits, cifar_root):
    again = load_splits(CIFAR_SUBSET, root=cifar_root)
    assert torch.equal(again.validation.images, cifar_splits.validation.images)
    assert torch.equal(again.train.labels, cifar_splits.train.labels)

    other = load_splits(DataConfig("cifar10", 4000, 500, 1000, split_seed=1), root=cifar_root)
    assert len(other.validation) == 500
    base = set(_row_hashes(cifar_splits.validation.images))
    moved = set(_row_hashes(other.validation.images))
    assert base != moved
    assert len(base & moved) < 150  # two random 500-of-4000 draws share about 62 images


def test_bad_counts_are_refused(cifar_root):
    with pytest.raises(DataError, match="cannot take the first"):
        load_split("mnist", "train", 60_001, cifar_root)
    with pytest.raises(DataError, match="cannot take the first"):
        load_split("cifar10", "test", 0, cifar_root)
    with pytest.raises(DataError, match="unknown dataset 'svhn'"):
        load_split("svhn", "train")
    with pytest.raises(DataError, match="validation_size 4000"):
        load_splits(DataConfig("cifar10", 4000, 4000, 1000), root=cifar_root)


# --------------------------------------------------------------------------------------------------
# DeviceLoader


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n, batch", [(103, 10), (100, 10), (7, 60)])
def test_loader_yields_every_example_once_per_epoch(device, n, batch):
    split = _index_split(n, device)
    loader = DeviceLoader(split, batch_size=batch, seed=3)
    expected_batches = -(-n // batch)
    assert len(loader) == expected_batches
    for epoch in (0, 1):
        batches = list(loader.epoch(epoch))
        assert len(batches) == expected_batches
        sizes = [len(y) for _, y in batches]
        assert sizes[:-1] == [batch] * (expected_batches - 1)
        assert sizes[-1] == (n % batch or batch)
        for x, y in batches:
            assert x.device == split.images.device and y.device == split.labels.device
            assert x.shape == (len(y), 1, 1, 1)
            assert torch.equal(x.view(-1).long(), y)  # images and labels stay paired
        seen = torch.cat([y for _, y in batches]).cpu()
        assert sorted(seen.tolist()) == list(range(n))


def test_loader_order_changes_by_epoch_and_follows_the_seed():
    split = _index_split(500)
    a, b, c = DeviceLoader(split, 50, seed=0), DeviceLoader(split, 50, seed=0), DeviceLoader(split, 50, seed=1)
    assert _order(a, 0) != list(range(500))  # shuffled
    assert _order(a, 0) != _order(a, 1)
    assert _order(a, 0) == _order(b, 0) and _order(a, 1) == _order(b, 1)
    assert _order(a, 0) != _order(c, 0)
    assert _order(a, 3) == _order(a, 3)  # an epoch's order does not depend on what was drawn before


def test_loader_iteration_runs_epoch_after_epoch():
    loader = DeviceLoader(_index_split(25), batch_size=10, seed=5)
    stream = iter(loader)
    drawn = [next(stream)[1] for _ in range(3 * len(loader))]
    expected = [y for e in range(3) for _, y in loader.epoch(e)]
    assert len(drawn) == len(expected) == 9
    assert all(torch.equal(d, e) for d, e in zip(drawn, expected))


def test_loader_with_augmentation_keeps_labels_and_shapes(cifar_splits):
    split = Split(cifar_splits.test.images[:200], cifar_splits.test.labels[:200])
    plain = DeviceLoader(split, 64, seed=2)
    augmented = DeviceLoader(split, 64, seed=2, augment=True)
    changed = 0
    for (x0, y0), (x1, y1) in zip(plain.epoch(0), augmented.epoch(0)):
        assert torch.equal(y0, y1) and x1.shape == x0.shape
        changed += int((x0 != x1).flatten(1).any(1).sum())
    assert changed > 150  # 1 in 162 (no flip, no shift) is left as it was


# --------------------------------------------------------------------------------------------------
# augment_batch


def _explain(original: torch.Tensor, augmented: torch.Tensor, pad: int = 4) -> list[set[tuple[int, int, int]]]:
    """For each example, every (flip, dy, dx) whose pad-and-crop of the original gives the output."""
    n, _, h, w = original.shape
    found: list[set[tuple[int, int, int]]] = [set() for _ in range(n)]
    for flip in (0, 1):
        source = original.flip(3) if flip else original
        padded = torch.nn.functional.pad(source, (pad, pad, pad, pad))
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                crop = padded[:, :, dy:dy + h, dx:dx + w]
                for i in torch.nonzero((crop == augmented).flatten(1).all(1)).flatten().tolist():
                    found[i].add((flip, dy, dx))
    return found


@pytest.mark.parametrize("device", DEVICES)
def test_augment_batch_is_a_flip_and_shift_of_each_image(device):
    images = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device) + 0.5
    out = augment_batch(images, augment_params(64, torch.Generator(device=device).manual_seed(1)))
    assert out.shape == images.shape and out.dtype == images.dtype and out.device == images.device
    found = _explain(images.cpu(), out.cpu())
    assert all(len(f) == 1 for f in found), "every output is exactly one flip/crop of its own input"
    transforms = [f.pop() for f in found]
    assert {t[0] for t in transforms} == {0, 1}  # both flipped and unflipped examples
    assert len({t[1] for t in transforms}) > 3 and len({t[2] for t in transforms}) > 3
    assert len(set(transforms)) > 32  # varies across examples


def test_augment_batch_follows_its_generator(cifar_splits):
    images = cifar_splits.train.images[:32]
    same1 = augment_batch(images, augment_params(32, torch.Generator().manual_seed(7)))
    same2 = augment_batch(images, augment_params(32, torch.Generator().manual_seed(7)))
    other = augment_batch(images, augment_params(32, torch.Generator().manual_seed(8)))
    assert torch.equal(same1, same2)
    assert not torch.equal(same1, other)
    assert all(len(f) >= 1 for f in _explain(images, same1))  # real images: also flips and crops


def test_augmentation_pads_with_black_not_with_the_mean(cifar_splits):
    """Normalized images: a padded pixel must be a raw 0 pixel normalized, (0 - mean) / std per channel."""
    split = cifar_splits.train
    black = split.black
    mean, std = NORMALIZATION["cifar10"]
    assert torch.allclose(black.flatten(), -torch.tensor(mean) / torch.tensor(std))
    images = split.images[:2]
    shifted = torch.tensor([[0, 0, 0], [1, 8, 8]])  # example 0: shift to the top-left; 1: flip, bottom-right
    out = augment_batch(images, shifted, black)
    assert torch.equal(out[0, :, :4, :], black.view(3, 1, 1).expand(3, 4, 32))  # top 4 rows padded
    assert torch.equal(out[0, :, 4:, 4:], images[0, :, :28, :28])
    assert torch.equal(out[1, :, 28:, :], black.view(3, 1, 1).expand(3, 4, 32))
    assert torch.allclose(out[1, :, :28, :28], images[1].flip(2)[:, 4:, 4:])


def test_loader_started_at_batch_k_continues_the_same_stream(cifar_splits):
    """Rewinding resumes the data order: batches(start=K) is the full stream minus its first K batches."""
    split = Split(cifar_splits.test.images[:130], cifar_splits.test.labels[:130], cifar_splits.test.black)
    loader = DeviceLoader(split, 60, seed=4, augment=True)  # 3 batches per epoch
    full, resumed = loader.batches(0), loader.batches(start=4)
    for _ in range(4):
        next(full)
    for _ in range(5):
        (x0, y0), (x1, y1) = next(full), next(resumed)
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


# --------------------------------------------------------------------------------------------------
# files: checksums, truncation, corruption, missing data, cache


@pytest.mark.parametrize("key", sorted(CONTENT_SHA256))
def test_loaded_content_matches_the_recorded_checksums(tmp_data_root, data_root, key):
    dataset, split, count = key
    fresh = tmp_data_root()  # no cache here: decoded from the raw files
    images, labels = load_split(dataset, split, count, root=fresh)
    assert len(images) == len(labels) == count
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert content_sha256(images, labels) == CONTENT_SHA256[key]
    assert (fresh / "cache" / f"{dataset}-{split}-{count}.pt").is_file()
    # the session's data root (usually through its cache) holds the same content
    assert content_sha256(*load_split(dataset, split, count, root=data_root)) == CONTENT_SHA256[key]


def test_decoding_matches_an_independent_reader(tmp_data_root):
    root = tmp_data_root()
    images, labels = load_split("mnist", "test", root=root)
    raw_images = _raw_mnist_bytes(root, "t10k-images-idx3-ubyte")
    raw_labels = _raw_mnist_bytes(root, "t10k-labels-idx1-ubyte")
    assert np.array_equal(images.numpy().ravel(), np.frombuffer(raw_images, np.uint8, offset=16))
    assert np.array_equal(labels.numpy(), np.frombuffer(raw_labels, np.uint8, offset=8))

    images, labels = load_split("cifar10", "train", 4000, root=root)
    with open(root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    assert np.array_equal(images.numpy().reshape(4000, -1), entry["data"])
    assert labels.tolist() == entry["labels"]


def test_truncated_mnist_file_is_refused(tmp_data_root, data_root):
    root = tmp_data_root(cifar=False, exclude=["train-images-idx3-ubyte"])
    full = _raw_mnist_bytes(data_root, "train-images-idx3-ubyte")
    path = _write_new(root / "MNIST" / "raw" / "train-images-idx3-ubyte", full[:16 + 784 * 1000 + 100])
    for count in (None, 500):  # refused even when the records asked for are all there
        with pytest.raises(DataError) as info:
            load_split("mnist", "train", count, root=root)
        message = str(info.value)
        assert str(path) in message
        assert "truncated" in message and "Replace it" in message
    assert not (root / "cache").exists()


def test_truncated_gzipped_mnist_file_is_refused(tmp_data_root, data_root):
    root = tmp_data_root(cifar=False, exclude=["t10k-images-idx3-ubyte"])
    compressed = gzip.compress(_raw_mnist_bytes(data_root, "t10k-images-idx3-ubyte"), compresslevel=1)
    path = _write_new(root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz", compressed[:len(compressed) // 2])
    with pytest.raises(DataError) as info:
        load_split("mnist", "test", root=root)
    assert str(path) in str(info.value) and "truncated" in str(info.value) and "Replace it" in str(info.value)


@pytest.mark.parametrize("keep", [100, 0.5, -1])
def test_truncated_cifar_file_is_refused(tmp_data_root, cifar_root, keep):
    root = tmp_data_root(mnist=False, exclude=["data_batch_1"])
    full = (cifar_root / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    cut = {100: 100, 0.5: len(full) // 2, -1: len(full) - 1}[keep]
    path = _write_new(root / "cifar-10-batches-py" / "data_batch_1", full[:cut])
    with pytest.raises(DataError) as info:
        load_split("cifar10", "train", 4000, root=root)
    message = str(info.value)
    assert str(path) in message and "truncated or corrupted" in message and "Replace it" in message


def test_corrupted_mnist_pixel_fails_the_checksum(tmp_data_root, data_root):
    root = tmp_data_root(cifar=False, exclude=["t10k-images-idx3-ubyte"])
    body = bytearray(_raw_mnist_bytes(data_root, "t10k-images-idx3-ubyte"))
    body[16 + 784 * 5000 + 400] ^= 0xFF  # one pixel of image 5,000; the file stays well-formed
    _write_new(root / "MNIST" / "raw" / "t10k-images-idx3-ubyte", bytes(body))
    with pytest.raises(DataError) as info:
        load_split("mnist", "test", root=root)
    assert "checksum" in str(info.value) and str(root) in str(info.value)
    assert not (root / "cache").exists()


def test_corrupted_cifar_pixel_fails_the_checksum(tmp_data_root, cifar_root):
    root = tmp_data_root(mnist=False, exclude=["data_batch_1"])
    body = bytearray((cifar_root / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    body[len(body) // 2] ^= 0x01  # inside the pixel array
    _write_new(root / "cifar-10-batches-py" / "data_batch_1", bytes(body))
    with pytest.raises(DataError, match="checksum"):
        load_split("cifar10", "train", 4000, root=root)


def test_cifar_subset_file_serves_subsets_and_refuses_more(tmp_data_root):
    root = tmp_data_root(mnist=False)
    assert len(load_split("cifar10", "train", 4000, root=root)[0]) == 4000
    images, labels = load_split("cifar10", "train", 1500, root=root)
    full_images, full_labels = load_split("cifar10", "train", 4000, root=root)
    assert torch.equal(images, full_images[:1500]) and torch.equal(labels, full_labels[:1500])

    with pytest.raises(DataError) as info:
        load_split("cifar10", "train", 5000, root=root)
    assert "only 4000" in str(info.value) and "5000" in str(info.value)
    assert not (root / "cache" / "cifar10-train-5000.pt").exists()
    with pytest.raises(DataError) as info:  # needs data_batch_2, which is not there: offline, named
        load_split("cifar10", "train", 10_001, root=root)
    assert "data_batch_2" in str(info.value)


@pytest.mark.parametrize("dataset, files, folder", [
    ("mnist", ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"], "MNIST/raw"),
    ("cifar10", ["data_batch_1"], "cifar-10-batches-py"),
])
def test_missing_dataset_offline_says_what_to_put_where(tmp_path, monkeypatch, dataset, files, folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("LTH_DATA_DIR", str(empty))
    with pytest.raises(DataError) as info:
        load_split(dataset, "train", 4000)  # no root given: LTH_DATA_DIR decides
    message = str(info.value)
    assert all(name in message for name in files)
    assert str(empty / folder) in message
    assert "LTH_DATA_DIR" in message and "LTH_OFFLINE" in message
    assert not any(p.is_file() for p in empty.rglob("*"))  # nothing was fetched


def test_failed_download_says_what_to_put_where(tmp_path, monkeypatch):
    calls = []

    def offline(root, dataset):
        calls.append((Path(root), dataset))
        raise urllib.error.URLError("offline")

    monkeypatch.delenv("LTH_OFFLINE", raising=False)
    monkeypatch.setattr(D, "_download", offline)
    with pytest.raises(DataError) as info:
        load_split("mnist", "test", root=tmp_path)
    assert calls == [(tmp_path, "mnist")]
    message = str(info.value)
    assert "URLError" in message and "offline" in message
    assert "t10k-images-idx3-ubyte.gz" in message and str(tmp_path / "MNIST" / "raw") in message
    assert "LTH_DATA_DIR" in message


def test_second_load_comes_from_the_cache(tmp_data_root, monkeypatch):
    root = tmp_data_root(mnist=False)
    first = load_split("cifar10", "test", 1000, root=root)
    cache = root / "cache" / "cifar10-test-1000.pt"
    assert cache.is_file()
    assert not list((root / "cache").glob("*.tmp"))

    (root / "cifar-10-batches-py" / "test_batch").unlink()  # the raw file is no longer needed

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(D, "_decode_and_verify", no_decoding)
    second = load_split("cifar10", "test", 1000, root=root)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.parametrize("damage", ["garbage", "truncated", "tampered"])
def test_corrupted_cache_is_refused_with_advice_to_delete_it(tmp_data_root, damage):
    root = tmp_data_root(mnist=False)
    original = load_split("cifar10", "test", 1000, root=root)
    cache = root / "cache" / "cifar10-test-1000.pt"
    if damage == "garbage":
        cache.write_bytes(b"\x00not a tensor file" * 100)
    elif damage == "truncated":
        cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    else:  # a well-formed file whose content no longer matches its own checksum
        stored = torch.load(cache, weights_only=True)
        stored["images"][0, 0, 0, 0] ^= 1
        torch.save(stored, cache)
    with pytest.raises(DataError) as info:
        load_split("cifar10", "test", 1000, root=root)
    assert str(cache) in str(info.value) and "Delete it" in str(info.value)

    cache.unlink()  # as the message says: the next load rebuilds it
    rebuilt = load_split("cifar10", "test", 1000, root=root)
    assert torch.equal(rebuilt[0], original[0]) and torch.equal(rebuilt[1], original[1])


def test_an_unrecorded_cifar_subset_with_a_missing_batch_file_is_one_clear_error(tmp_path):
    """5,000 images have no recorded checksum, so all original files are MD5-checked: a missing one is named."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rows = {"data": np.zeros((10_000, 3072), dtype=np.uint8), "labels": [0] * 10_000}
    (folder / "data_batch_1").write_bytes(pickle.dumps(rows))
    with pytest.raises(DataError, match="data_batch_2 is missing.*put every one of data_batch_1"):
        load_split("cifar10", "train", 5_000, root=tmp_path)
