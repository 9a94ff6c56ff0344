"""Time LeNet-300-100 rounds through the library's own training loop, and compare with the machine's peak.

What it prints, in one run on one machine:
  - dense matmul peak: the best FLOP/s of repeated fp32 (2048 x 2048) @ (2048 x 2048) products;
  - our loop's training throughput (lth_tutorial.training.train, masked Adam step, batch 60): steps/s,
    examples/s, and the achieved FLOP/s (3 x forward FLOPs per example: forward, input and weight
    gradients) as a fraction of that peak;
  - the same for a conventional loop (torchvision MNIST through a DataLoader, per-sample transforms,
    plain Adam, no masks: less work per step than ours), and the ratio of the two throughputs;
  - the wall time of one whole quick-profile round (3,000 iterations, evaluation every 250) and of one
    paper-profile round (50,000 iterations, evaluation every 100) -- the latter measured on
    `--paper-iterations` iterations (default: all 50,000) and scaled if fewer;
  - peak memory (process max RSS on CPU; max allocated on CUDA).

Usage: python benchmarks/bench_training.py [--device cpu|cuda] [--threads N] [--paper-iterations 50000]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import time
from pathlib import Path

import torch

import bench_loader  # the conventional pipeline, from the script beside this one
from bench_loader import sync
from lth_tutorial.data import data_root, load_splits
from lth_tutorial.masks import Mask
from lth_tutorial.models import create_model, weight_kinds
from lth_tutorial.presets import get_preset
from lth_tutorial.training import train

LENET_FORWARD_FLOPS = 2 * (784 * 300 + 300 * 100 + 100 * 10)  # multiply-adds x 2, per example


def matmul_peak(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def timed_round(config, splits, device) -> float:
    model = create_model("lenet", seed=0).to(device)
    mask = Mask.ones_like({n: p for n, p in model.named_parameters() if n in weight_kinds(model)})
    sync(device)
    start = time.perf_counter()
    train(model, mask, splits, config, seed=0)
    sync(device)
    return time.perf_counter() - start


def conventional_throughput(splits, device, root, steps: int) -> float:
    """Examples/s of the textbook loop: torchvision MNIST + DataLoader (per-sample PIL -> ToTensor ->
    Normalize, host-side batches copied to the device), a plain Adam step, no masks."""
    dataloader = bench_loader.conventional_dataloader(root, seed=0)
    model = create_model("lenet", seed=0).to(device)
    scratch = torch.optim.Adam(model.parameters(), lr=bench_loader.LR)
    for i, (x, y) in enumerate(dataloader):  # warm-up
        bench_loader.step(model, scratch, x.to(device), y.to(device))
        if i == bench_loader.WARMUP_BATCHES:
            break
    model = create_model("lenet", seed=0).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=bench_loader.LR)
    seen, done = 0, 0
    sync(device)
    start = time.perf_counter()
    while done < steps:
        for x, y in dataloader:
            bench_loader.step(model, optimizer, x.to(device, non_blocking=True), y.to(device, non_blocking=True))
            seen, done = seen + len(y), done + 1
            if done == steps:
                break
    sync(device)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice)")
    parser.add_argument("--steps", type=int, default=2_000, help="steps timed for each loop's throughput")
    parser.add_argument("--paper-iterations", type=int, default=50_000,
                        help="iterations of the paper round actually run (scaled to 50,000 if fewer)")
    parser.add_argument("--root", type=Path, default=None, help="data root (default: LTH_DATA_DIR or data/)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    preset = get_preset("lenet-mnist")
    splits = load_splits(preset.paper.data, device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")

    peak = matmul_peak(device)
    print(f"dense fp32 matmul peak:        {peak / 1e9:8.1f} GFLOP/s")

    # Pure training throughput: a round with a single evaluation at the end.
    steps = args.steps
    throughput_config = dataclasses.replace(preset.paper.train, iterations=steps, eval_every=steps)
    timed_round(dataclasses.replace(throughput_config, iterations=50, eval_every=50), splits, device)  # warm-up
    seconds = timed_round(throughput_config, splits, device)
    ours = 60 * steps / seconds
    flops = 3 * LENET_FORWARD_FLOPS * ours
    print(f"our loop (lth_tutorial.training.train, masked Adam): {steps / seconds:6.0f} steps/s, "
          f"{ours:8.0f} examples/s, {flops / 1e9:6.1f} GFLOP/s = {flops / peak:5.1%} of the matmul peak")
    conventional = conventional_throughput(splits, device, args.root or data_root(), steps)
    print(f"conventional loop (torchvision DataLoader, plain Adam):        {conventional:8.0f} examples/s")
    print(f"ratio, our loop / conventional loop: {ours / conventional:.2f}x")

    quick = timed_round(preset.quick.train, splits, device)
    print(f"one quick round  ({preset.quick.train.iterations:>6} it, eval every {preset.quick.train.eval_every}): "
          f"{quick:7.1f} s")
    n = min(args.paper_iterations, preset.paper.train.iterations)
    paper = timed_round(dataclasses.replace(preset.paper.train, iterations=n), splits, device)
    scale = preset.paper.train.iterations / n
    print(f"one paper round  ({preset.paper.train.iterations:>6} it, eval every {preset.paper.train.eval_every}): "
          f"{paper * scale:7.1f} s" + (f" (measured on {n} iterations)" if scale != 1 else ""))

    if device.type == "cuda":
        print(f"peak memory: {torch.cuda.max_memory_allocated(device) / 2 ** 20:.0f} MiB allocated on the GPU")
    else:
        print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10:.0f} MiB (max RSS)")
    print(f"load average {os.getloadavg()[0]:.2f} at the end (other work on the machine slows every figure)")


if __name__ == "__main__":
    main()
