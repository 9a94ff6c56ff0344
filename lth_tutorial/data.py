"""Datasets as tensors on the device.

Owns: finding (or downloading) MNIST and CIFAR-10 in the data root, decoding the standard files into
uint8 tensors, verifying their *content* against recorded checksums, caching one tensor file per split,
the paper's train/validation/test splits, normalization, and batching by index on the device (with
optional on-device augmentation for CIFAR). Nothing here runs a per-sample Python transform.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .checksums import CIFAR10_ORIGINAL_MD5, CONTENT_SHA256
from .seeds import stream_seed

DATASETS = ("mnist", "cifar10")
FULL_SIZES = {("mnist", "train"): 60_000, ("mnist", "test"): 10_000,
              ("cifar10", "train"): 50_000, ("cifar10", "test"): 10_000}
# Per-dataset normalization (mean, std per channel) of the training images scaled to [0, 1].
NORMALIZATION = {"mnist": ((0.1307,), (0.3081,)),
                 "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))}
MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CIFAR_ROWS_PER_FILE = 10_000


class DataError(RuntimeError):
    """A dataset is missing, truncated or corrupted; the message says which file and how to fix it."""


def data_root() -> Path:
    """`LTH_DATA_DIR` if set, else the repository's `data/` folder (else `./data`)."""
    if os.environ.get("LTH_DATA_DIR"):
        return Path(os.environ["LTH_DATA_DIR"]).expanduser()
    repo_data = Path(__file__).resolve().parent.parent / "data"
    return repo_data if repo_data.is_dir() else Path.cwd() / "data"


# --------------------------------------------------------------------------------------------------
# Reading the standard files


def _read_idx(path: Path, count: int | None) -> np.ndarray:
    """First `count` records of an IDX file (or its .gz), refusing a truncated file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            header = f.read(4)
            ndim = header[3]
            dims = [int.from_bytes(f.read(4), "big") for _ in range(ndim)]
            n = dims[0] if count is None else min(count, dims[0])
            record = int(np.prod(dims[1:])) if ndim > 1 else 1
            body = f.read(n * record)
    except (OSError, EOFError, IndexError) as e:
        raise DataError(f"{path} cannot be read ({e}); it is corrupted or truncated. "
                        f"Replace it with a complete copy of the original file.") from e
    if header[:2] != b"\x00\x00" or header[2] != 0x08:
        raise DataError(f"{path} is not an IDX uint8 file; replace it with the original MNIST file.")
    if len(body) < n * record:
        raise DataError(f"{path} is truncated: it holds {len(body) // record} of the {n} records asked "
                        f"for. Replace it with a complete copy of the original file.")
    return np.frombuffer(body, dtype=np.uint8).reshape([n, *dims[1:]])


def _mnist_file(root: Path, name: str) -> Path | None:
    for candidate in (root / "MNIST" / "raw" / name, root / "MNIST" / "raw" / f"{name}.gz"):
        if candidate.exists():
            return candidate
    return None


def _read_mnist(root: Path, split: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    paths = [_mnist_file(root, name) for name in MNIST_FILES[split]]
    images, labels = (_read_idx(p, count) for p in paths)
    images = images[:, None]  # (N, 1, 28, 28)
    return images, labels.astype(np.int64)


def _read_cifar(root: Path, split: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels, have = [], [], 0
    for name in CIFAR_FILES[split]:
        if have >= count:
            break
        path = root / "cifar-10-batches-py" / name
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            target = np.asarray(entry["labels"], dtype=np.int64)
        except Exception as e:  # a truncated pickle fails in many ways; all mean the same to a user
            raise DataError(f"{path} is truncated or corrupted ({type(e).__name__}: {e}). Replace it "
                            f"with the original file from cifar-10-python.tar.gz.") from e
        if len(data) != len(target):
            raise DataError(f"{path} holds {len(data)} images but {len(target)} labels; replace it.")
        images.append(data)
        labels.append(target)
        have += len(data)
        if len(data) < CIFAR_ROWS_PER_FILE:
            break  # a well-formed partial file can only be the end of what we have
    images, labels = np.concatenate(images)[:count], np.concatenate(labels)[:count]
    return images, labels


def _files_present(root: Path, dataset: str, split: str, count: int) -> bool:
    if dataset == "mnist":
        return all(_mnist_file(root, name) for name in MNIST_FILES[split])
    needed = -(-count // CIFAR_ROWS_PER_FILE)
    return all((root / "cifar-10-batches-py" / n).exists() for n in CIFAR_FILES[split][:needed])


def _missing_message(root: Path, dataset: str, split: str, count: int, reason: str) -> str:
    if dataset == "mnist":
        where = root / "MNIST" / "raw"
        files = ", ".join(f"{a}.gz" for pair in MNIST_FILES.values() for a in pair)
        source = "the original MNIST files (torchvision's mirrors)"
    else:
        where = root / "cifar-10-batches-py"
        needed = -(-count // CIFAR_ROWS_PER_FILE)
        files = ", ".join(CIFAR_FILES[split][:needed])
        source = "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html (extract it)"
    return (f"{dataset} {split} split is not in the data root {root} and could not be downloaded "
            f"({reason}). Put {files} into {where} ({source}), or point LTH_DATA_DIR at a folder "
            f"that has them.")


def _download(root: Path, dataset: str) -> None:
    """Fetch the md5-checked archives through torchvision; raises on any failure (e.g. offline)."""
    if os.environ.get("LTH_OFFLINE"):
        raise ConnectionError("LTH_OFFLINE is set")
    from torchvision import datasets as tv

    root.mkdir(parents=True, exist_ok=True)
    cls = tv.MNIST if dataset == "mnist" else tv.CIFAR10
    for train in (True, False):
        cls(root=str(root), train=train, download=True)


# --------------------------------------------------------------------------------------------------
# Verification and cache


def content_sha256(images: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> tuple[str, str]:
    """SHA-256 of the image bytes (uint8, C order, N x C x H x W) and of the labels (int64 LE)."""
    images = images.numpy() if isinstance(images, torch.Tensor) else images
    labels = labels.numpy() if isinstance(labels, torch.Tensor) else labels
    return (hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes()).hexdigest(),
            hashlib.sha256(np.ascontiguousarray(labels, dtype="<i8").tobytes()).hexdigest())


def _reference(dataset: str, split: str, count: int) -> tuple[int, tuple[str, str]] | None:
    """The smallest recorded prefix that covers `count` examples, with its checksums."""
    sizes = sorted(n for (d, s, n) in CONTENT_SHA256 if (d, s) == (dataset, split) and n >= count)
    return (sizes[0], CONTENT_SHA256[(dataset, split, sizes[0])]) if sizes else None


def _verify_original_cifar_files(root: Path, split: str) -> None:
    """Full CIFAR-10 has no recorded content checksum (it cannot be had here): check file MD5s."""
    missing = [n for n in CIFAR_FILES[split] if not (root / "cifar-10-batches-py" / n).exists()]
    if missing:
        raise DataError(f"{root / 'cifar-10-batches-py' / missing[0]} is missing: a CIFAR-10 {split} subset "
                        f"without a recorded content checksum is checked against all the original batch "
                        f"files, so put every one of {', '.join(CIFAR_FILES[split])} into "
                        f"{root / 'cifar-10-batches-py'}, or use a recorded subset size (4,000 train / "
                        f"1,000 test, as the quick profiles do).")
    for name in CIFAR_FILES[split]:
        path = root / "cifar-10-batches-py" / name
        digest = hashlib.md5(path.read_bytes()).hexdigest()
        if digest != CIFAR10_ORIGINAL_MD5[name]:
            raise DataError(f"{path} is not the original file (md5 {digest}); replace it with the file "
                            f"from cifar-10-python.tar.gz, or use a profile that needs only a subset.")


def _decode_and_verify(root: Path, dataset: str, split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    reference = _reference(dataset, split, count)
    read_count = reference[0] if reference else count
    reader = _read_mnist if dataset == "mnist" else _read_cifar
    images, labels = reader(root, split, read_count)
    if len(images) < read_count:
        raise DataError(f"the {dataset} {split} files in {root} hold only {len(images)} examples; "
                        f"{read_count} are needed. Replace them with the complete original files.")
    if reference:
        if content_sha256(images, labels) != reference[1]:
            raise DataError(f"the first {read_count} {dataset} {split} examples in {root} do not match "
                            f"the recorded content checksum: the files are corrupted or not the "
                            f"original data. Replace them with the original files.")
    else:
        _verify_original_cifar_files(root, split)
    return torch.from_numpy(images[:count].copy()), torch.from_numpy(labels[:count].copy())


def load_split(dataset: str, split: str, count: int | None = None,
               root: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` examples (official order) of a split as (uint8 images NCHW, int64 labels)."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}.")
    full = FULL_SIZES[(dataset, split)]
    count = full if count is None else count
    if not 0 < count <= full:
        raise DataError(f"{dataset} {split} has {full} examples; cannot take the first {count}.")
    root = Path(root) if root is not None else data_root()
    cache = root / "cache" / f"{dataset}-{split}-{count}.pt"
    if cache.exists():
        try:
            stored = torch.load(cache, weights_only=True)
            images, labels = stored["images"], stored["labels"]
            intact = content_sha256(images, labels) == tuple(stored["sha256"])
        except Exception:
            intact = False
        if not intact:
            raise DataError(f"the cache file {cache} is corrupted. Delete it; the next load rebuilds it "
                            f"from the original files.")
        return images, labels
    if not _files_present(root, dataset, split, count):
        try:
            _download(root, dataset)
        except Exception as e:
            raise DataError(_missing_message(root, dataset, split, count, f"{type(e).__name__}: {e}")) from e
    images, labels = _decode_and_verify(root, dataset, split, count)
    cache.parent.mkdir(parents=True, exist_ok=True)
    # a unique temporary name in the cache folder: concurrent first loads each write their own, and
    # the rename leaves one whole file whoever finishes last (the contents are identical)
    handle, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save({"images": images, "labels": labels, "sha256": list(content_sha256(images, labels))}, tmp)
        os.replace(tmp, cache)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return images, labels


# --------------------------------------------------------------------------------------------------
# Splits and batching on the device


@dataclass(frozen=True)
class DataConfig:
    """Which examples an experiment trains, validates and tests on."""

    dataset: str                       # "mnist" or "cifar10"
    train_examples: int | None = None  # first N of the official training set (None: all of it)
    validation_size: int = 5_000       # held out at random (seeded) from those N; used for early stopping
    test_examples: int | None = None   # first N of the official test set (None: all of it)
    split_seed: int = 0                # the validation split is fixed across trials
    augment: bool = False              # random flip + 4-pixel pad-and-crop (VGG/ResNet on CIFAR)


@dataclass
class Split:
    """Normalized float images and labels, already on the device."""

    images: torch.Tensor
    labels: torch.Tensor
    black: torch.Tensor | None = None  # (1, C, 1, 1): a raw 0 pixel, normalized (augmentation pads with it)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Splits:
    train: Split
    validation: Split
    test: Split
    config: DataConfig | None = None   # what they were loaded for: runs check it against their own


def _normalize(images: torch.Tensor, dataset: str, device: torch.device) -> torch.Tensor:
    mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in NORMALIZATION[dataset])
    return (images.to(device).float().div_(255) - mean) / std


def load_splits(config: DataConfig, device: str | torch.device = "cpu", root: Path | None = None) -> Splits:
    """The paper's train / validation / test splits of `config`, normalized, on `device`."""
    device = torch.device(device)
    images, labels = load_split(config.dataset, "train", config.train_examples, root)
    if not 0 < config.validation_size < len(labels):
        raise DataError(f"validation_size {config.validation_size} must be between 1 and {len(labels) - 1}.")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(config.split_seed))
    val_idx, train_idx = order[:config.validation_size].sort().values, order[config.validation_size:].sort().values
    test_images, test_labels = load_split(config.dataset, "test", config.test_examples, root)

    def split(x: torch.Tensor, y: torch.Tensor) -> Split:
        black = _normalize(torch.zeros(1, x.shape[1], 1, 1, dtype=torch.uint8), config.dataset, device)
        return Split(_normalize(x, config.dataset, device), y.to(device), black)

    return Splits(split(images[train_idx], labels[train_idx]), split(images[val_idx], labels[val_idx]),
                  split(test_images, test_labels), config)


def augment_params(n: int, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Per example: (flip, dy, dx) for `augment_batch`, drawn at once on the generator's device."""
    device = generator.device
    flip = (torch.rand(n, device=device, generator=generator) < 0.5).long()
    shifts = torch.randint(0, 2 * pad + 1, (2, n), device=device, generator=generator)
    return torch.stack([flip, shifts[0], shifts[1]], 1)


def augment_batch(images: torch.Tensor, params: torch.Tensor, black: torch.Tensor | None = None,
                  pad: int = 4) -> torch.Tensor:
    """Random horizontal flip and `pad`-pixel pad-and-crop, per example, on the device.

    `black` (1, C, 1, 1) is the normalized value of a raw 0 pixel: the padding is black, as padding the
    raw image and normalizing afterwards gives (not 0, which is the dataset mean after normalization).
    """
    n, c, h, w = images.shape
    device = images.device
    flip, dy, dx = params[:, 0].bool(), params[:, 1], params[:, 2]
    images = torch.where(flip.view(n, 1, 1, 1), images.flip(3), images)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    if black is not None:  # a where, not (x - black) + black, so that the image's own pixels stay bitwise
        inside = torch.zeros(1, 1, h + 2 * pad, w + 2 * pad, dtype=torch.bool, device=device)
        inside[..., pad:pad + h, pad:pad + w] = True
        padded = torch.where(inside, padded, black.to(padded.dtype))
    rows = (dy.view(n, 1) + torch.arange(h, device=device)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w, device=device)).view(n, 1, 1, w)
    return padded[torch.arange(n, device=device).view(n, 1, 1, 1), torch.arange(c, device=device).view(1, c, 1, 1),
                  rows, cols]


class DeviceLoader:
    """Shuffled minibatches of a split, by index, on its device; a new order every epoch.

    Every example appears exactly once per epoch (the last batch of an epoch may be smaller). The
    order and augmentation depend only on (seed, epoch), so two loaders with the same seed yield the
    same batches, and `batches(start=K)` yields exactly what the K+1-th batch onwards would have been.
    """

    def __init__(self, split: Split, batch_size: int, seed: int, augment: bool = False):
        self.split, self.batch_size, self.seed, self.augment = split, batch_size, seed, augment
        self.device = split.images.device

    def __len__(self) -> int:
        """Batches per epoch."""
        return -(-len(self.split) // self.batch_size)

    def epoch(self, index: int, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rng = torch.Generator().manual_seed(stream_seed(self.seed, index, 0))
        order = torch.randperm(len(self.split), generator=rng).to(self.device)
        params = None
        if self.augment:
            aug_rng = torch.Generator(device=self.device).manual_seed(stream_seed(self.seed, index, 1))
            params = augment_params(len(order), aug_rng)
        for start in range(skip * self.batch_size, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            images = self.split.images[idx]
            if params is not None:
                images = augment_batch(images, params[start:start + self.batch_size], self.split.black)
            yield images, self.split.labels[idx]

    def batches(self, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless, epoch after epoch, from batch number `start` (0-based, counted over epochs)."""
        index, skip = divmod(start, len(self))
        while True:
            yield from self.epoch(index, skip)
            index, skip = index + 1, 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches(0)


def record_checksums(root: Path | None = None) -> None:
    """Print content checksums of what the data root holds (for maintainers adding a record)."""
    root = Path(root) if root is not None else data_root()
    for (dataset, split), full in FULL_SIZES.items():
        reader = _read_mnist if dataset == "mnist" else _read_cifar
        try:
            images, labels = reader(root, split, full)
        except Exception as e:  # report and go on: this is a maintainer's survey, not a load
            warnings.warn(f"{dataset} {split}: {e}")
            continue
        print(f'("{dataset}", "{split}", {len(labels)}): {content_sha256(images, labels)},')


if __name__ == "__main__":
    record_checksums()
