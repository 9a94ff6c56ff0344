"""Time one epoch of LeNet-300-100 on MNIST with our on-device loader and with a torchvision DataLoader.

What it measures: wall-clock time of full training epochs (forward, cross-entropy, backward, Adam step
with lr 1.2e-3, batch 60) over the same 55,000 MNIST training images (the paper's split: 60,000 minus
the 5,000-image validation set), from the same initial weights, on the same machine, in one run:

  (a) ours:         lth_tutorial.data.load_splits -> the whole split is a normalized float tensor on
                    the device; lth_tutorial.data.DeviceLoader indexes shuffled batches out of it.
  (b) conventional: torchvision.datasets.MNIST(transform=ToTensor() + Normalize) wrapped in
                    torch.utils.data.Subset (the same 55,000 images) and
                    torch.utils.data.DataLoader(batch_size=60, shuffle=True, num_workers=0): every
                    image goes through PIL and a per-sample Python transform, batches are collated on
                    the host and copied to the device.

Only the epochs are timed; loading the data (decoding files, building the tensors) is reported apart.
Both pipelines get a short warm-up first (a few batches on a throwaway copy of the model), so that
lazy initialization (allocator, kernels, first file reads) is not counted. On CUDA the timer waits for
the device to finish. The numbers depend on the machine and on what else runs on it.

torchvision's MNIST reads the uncompressed IDX files in <root>/MNIST/raw; if only the .gz files are
there, it is created with download=True, which finds the .gz files (md5-checked) and extracts them next
to them without using the network.

Usage: python benchmarks/bench_loader.py [--epochs 1] [--device cpu|cuda] [--root DATA_ROOT]
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lth_tutorial.data import NORMALIZATION, DataConfig, DeviceLoader, data_root, load_splits
from lth_tutorial.models import create_model

BATCH = 60
LR = 1.2e-3
CONFIG = DataConfig("mnist")  # 55,000 train / 5,000 validation / 10,000 test
RAW_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
WARMUP_BATCHES = 20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def train_train_indices(config: DataConfig, n: int) -> list[int]:
    """The training indices load_splits keeps (same seeded permutation), so both pipelines see the
    same 55,000 images."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.split_seed))
    return order[config.validation_size:].sort().values.tolist()


def conventional_dataloader(root: Path, seed: int) -> torch.utils.data.DataLoader:
    """The textbook pipeline: torchvision MNIST, per-sample PIL -> ToTensor -> Normalize, host batches."""
    from torchvision import datasets, transforms

    extracted = all((root / "MNIST" / "raw" / name).is_file() for name in RAW_NAMES)
    mean, std = NORMALIZATION["mnist"]
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    full = datasets.MNIST(str(root), train=True, transform=transform, download=not extracted)
    subset = torch.utils.data.Subset(full, train_train_indices(CONFIG, len(full)))
    return torch.utils.data.DataLoader(subset, batch_size=BATCH, shuffle=True, num_workers=0,
                                       generator=torch.Generator().manual_seed(seed))


def run_epochs(batches_of_epoch, model: nn.Module, epochs: int, device: torch.device,
               to_device: bool) -> tuple[list[float], float, int]:
    """Train `epochs` epochs; returns per-epoch seconds, mean loss of the last epoch, examples seen."""
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    model.train()
    times, seen, last_loss = [], 0, float("nan")
    for epoch in range(epochs):
        sync(device)
        start = time.perf_counter()
        loss_sum, batches = torch.zeros((), device=device), 0
        for x, y in batches_of_epoch(epoch):
            if to_device:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss_sum += step(model, optimizer, x, y)
            batches += 1
            seen += len(y)
        sync(device)
        times.append(time.perf_counter() - start)
        last_loss = loss_sum.item() / batches
    return times, last_loss, seen


@torch.no_grad()
def test_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    return (model(images).argmax(1) == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per pipeline (default 1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--root", type=Path, default=None, help="data root (default: LTH_DATA_DIR or data/)")
    parser.add_argument("--seed", type=int, default=0, help="model init and shuffling seed")
    args = parser.parse_args()
    device = torch.device(args.device)
    root = args.root or data_root()

    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads, data root {root}")

    # --- data (not timed as training) ---
    t0 = time.perf_counter()
    splits = load_splits(CONFIG, device=device, root=root)
    sync(device)
    ours_load = time.perf_counter() - t0

    t0 = time.perf_counter()
    dataloader = conventional_dataloader(root, args.seed)
    conventional_load = time.perf_counter() - t0
    assert len(dataloader.dataset) == len(splits.train) == 55_000

    ours_loader = DeviceLoader(splits.train, BATCH, seed=args.seed)

    def ours_epoch(epoch: int):
        return ours_loader.epoch(epoch)

    def conventional_epoch(epoch: int):
        return iter(dataloader)

    initial = create_model("lenet", seed=args.seed).to(device)

    # --- warm-up: a few batches of each pipeline on a throwaway copy ---
    for batches_of_epoch, to_device in ((ours_epoch, False), (conventional_epoch, True)):
        scratch = copy.deepcopy(initial)
        optimizer = torch.optim.Adam(scratch.parameters(), lr=LR)
        for i, (x, y) in enumerate(batches_of_epoch(0)):
            step(scratch, optimizer, x.to(device), y.to(device))
            if i + 1 == WARMUP_BATCHES:
                break
        sync(device)

    # --- timed epochs, same initial weights ---
    ours_model, conventional_model = copy.deepcopy(initial), copy.deepcopy(initial)
    ours_times, ours_loss, ours_seen = run_epochs(ours_epoch, ours_model, args.epochs, device, False)
    conv_times, conv_loss, conv_seen = run_epochs(conventional_epoch, conventional_model, args.epochs, device, True)

    test_x, test_y = splits.test.images, splits.test.labels
    rows = [("ours (on-device tensors + DeviceLoader)", ours_load, ours_times, ours_seen, ours_loss,
             test_accuracy(ours_model, test_x, test_y)),
            ("torchvision MNIST + DataLoader(num_workers=0)", conventional_load, conv_times, conv_seen, conv_loss,
             test_accuracy(conventional_model, test_x, test_y))]
    print(f"\nLeNet-300-100, Adam lr {LR}, batch {BATCH}, {len(splits.train):,} training images, "
          f"{args.epochs} epoch(s) after a {WARMUP_BATCHES}-batch warm-up\n")
    print(f"{'pipeline':48} {'data setup s':>12} {'epoch s':>9} {'examples/s':>11} {'train loss':>10} {'test acc':>8}")
    for name, load_s, times, seen, loss, acc in rows:
        total = sum(times)
        per_epoch = total / len(times)
        print(f"{name:48} {load_s:12.2f} {per_epoch:9.2f} {seen / total:11,.0f} {loss:10.4f} {acc:8.4f}")
        if len(times) > 1:
            print(f"{'':48} {'':12} epochs: {', '.join(f'{t:.2f}' for t in times)}")
    ratio = sum(conv_times) / sum(ours_times)
    print(f"\nconventional / ours epoch time: {ratio:.2f}x "
          f"({'ours faster' if ratio > 1 else 'conventional faster'})")


if __name__ == "__main__":
    main()
