"""Shared pytest fixtures. Each section belongs to one area of the test suite; keep them apart."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import pytest


# --- data fixtures ---
#
# Tests read the datasets from one writable data root: $LTH_DATA_DIR if set, else the repository's
# data/ folder (what lth_tutorial.data.data_root() returns). The root is fixed once, when the session
# starts, so a test that points LTH_DATA_DIR at a temporary folder cannot move it for later tests.
# No test ever touches the network: LTH_OFFLINE=1 is set for the whole session.

MNIST_RAW = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_SUBSET = ("data_batch_1", "test_batch")

_SESSION_DATA_ROOT: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _SESSION_DATA_ROOT
    os.environ["LTH_OFFLINE"] = "1"
    from lth_tutorial.data import data_root

    _SESSION_DATA_ROOT = data_root()


def _mnist_source(root: Path, name: str) -> Path | None:
    """The file the library would read for `name`: the uncompressed IDX file first, else its .gz."""
    for candidate in (root / "MNIST" / "raw" / name, root / "MNIST" / "raw" / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _mnist_present(root: Path) -> bool:
    return all(_mnist_source(root, name) for name in MNIST_RAW)


def _cifar_present(root: Path) -> bool:
    return all((root / "cifar-10-batches-py" / name).is_file() for name in CIFAR_SUBSET)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The session's data root; skips the test if the MNIST files are not in it."""
    assert _SESSION_DATA_ROOT is not None
    if not _mnist_present(_SESSION_DATA_ROOT):
        pytest.skip(f"MNIST files ({', '.join(MNIST_RAW)}, or their .gz) are not in "
                    f"{_SESSION_DATA_ROOT / 'MNIST' / 'raw'}; set LTH_DATA_DIR to a folder that has them")
    return _SESSION_DATA_ROOT


@pytest.fixture(scope="session")
def cifar_root(data_root: Path) -> Path:
    """The session's data root; skips the test if the CIFAR-10 subset files are not in it."""
    if not _cifar_present(data_root):
        pytest.skip(f"CIFAR-10 files ({', '.join(CIFAR_SUBSET)}) are not in "
                    f"{data_root / 'cifar-10-batches-py'}; set LTH_DATA_DIR to a folder that has them")
    return data_root


@pytest.fixture
def tmp_data_root(tmp_path: Path, data_root: Path) -> Callable[..., Path]:
    """Factory for a private data root under tmp_path, holding links to the real dataset files.

    `make(mnist=True, cifar=True, exclude=())` links the MNIST raw files (whichever form the real root
    has: uncompressed or .gz) and the CIFAR-10 subset files into tmp_path/data, leaving out the names
    in `exclude` (with or without .gz), and returns that root. There is no cache in it.

    The entries are symlinks to the real files: never write into one in place (``unlink`` it first,
    then write a new file), or the real dataset is changed.
    """

    def make(mnist: bool = True, cifar: bool = True, exclude: Iterable[str] = ()) -> Path:
        exclude = {name.removesuffix(".gz") for name in exclude}
        root = tmp_path / "data"
        root.mkdir(exist_ok=True)
        if mnist:
            (root / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)
            for name in MNIST_RAW:
                if name in exclude:
                    continue
                source = _mnist_source(data_root, name)
                assert source is not None, f"{name} missing from {data_root}"
                (root / "MNIST" / "raw" / source.name).symlink_to(source.resolve())
        if cifar:
            if not _cifar_present(data_root):
                pytest.skip(f"CIFAR-10 subset files are not in {data_root / 'cifar-10-batches-py'}")
            (root / "cifar-10-batches-py").mkdir(exist_ok=True)
            for name in CIFAR_SUBSET:
                if name not in exclude:
                    (root / "cifar-10-batches-py" / name).symlink_to(
                        (data_root / "cifar-10-batches-py" / name).resolve())
        return root

    return make



# --- engine fixtures ---


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is as fast, and avoids oversubscription stalls on a shared CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
