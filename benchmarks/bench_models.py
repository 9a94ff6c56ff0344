"""Paper-profile throughput of every model, and what a full reproduction of each preset costs here.

For each paper preset's model (one variant per model: the warmup/lr variants cost the same), on
synthetic batches of the right shape (speed does not depend on the pixel values):
  - one training step through the library's own loop (lth_tutorial.training.train: masked step, the
    preset's optimizer, on-device augmentation where the preset uses it), at the preset's batch size;
  - evaluation throughput (images/s, eval mode, batches of 2,500 as the loop evaluates);
and from those two, one paper round (iterations x step + evaluations of 5,000 validation + 10,000 test
images every `eval_every` iterations) and one whole paper experiment: the preset's rounds + 1 ticket
rounds and as many reinit rounds, times its trials.

Usage: python benchmarks/bench_models.py [--device cpu|cuda] [--threads N] [--steps 5] [--only conv2,vgg19]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time

import torch

from bench_loader import sync  # the script beside this one
from lth_tutorial.data import Split, Splits
from lth_tutorial.masks import Mask
from lth_tutorial.models import INPUT_SHAPES, create_model, weight_kinds
from lth_tutorial.presets import PRESETS
from lth_tutorial.training import evaluate, train

EVAL_IMAGES = 5_000 + 10_000   # validation + test, evaluated together every eval_every iterations
ONE_PER_MODEL = ("lenet-mnist", "conv2-cifar10", "conv4-cifar10", "conv6-cifar10", "conv2-cifar10-dropout",
                 "vgg19-cifar10-warmup", "resnet18-cifar10-warmup")


def synthetic(dataset: str, n: int, device: torch.device, classes: int = 10) -> Split:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, *INPUT_SHAPES[dataset], generator=g).to(device)
    return Split(images, torch.randint(classes, (n,), generator=g).to(device))


def step_seconds(name: str, device: torch.device, steps: int) -> float:
    preset = PRESETS[name]
    prof = preset.paper
    batch = prof.train.batch_size
    train_split = synthetic(prof.data.dataset, batch * (steps + 2), device)
    tiny = synthetic(prof.data.dataset, 10, device)
    splits = Splits(train_split, tiny, tiny)
    model = create_model(preset.model, seed=0, dropout=preset.dropout).to(device)
    mask = Mask.ones_like({n: p for n, p in model.named_parameters() if n in weight_kinds(model)})

    def run(iterations: int) -> float:
        config = dataclasses.replace(prof.train, iterations=iterations, eval_every=iterations, warmup=0,
                                     milestones=(), report_at=())
        sync(device)
        start = time.perf_counter()
        train(model, mask, splits, config, seed=0, augment=prof.data.augment)
        sync(device)
        return time.perf_counter() - start

    run(1)  # warm-up: allocator, kernels
    # (steps + 1) iterations minus 1 iteration: the difference is `steps` steps without the fixed costs
    return (run(steps + 1) - run(1)) / steps


def eval_images_per_second(name: str, device: torch.device) -> float:
    preset = PRESETS[name]
    model = create_model(preset.model, seed=0, dropout=preset.dropout).to(device)
    split = synthetic(preset.paper.data.dataset, 2_500, device)
    evaluate(model, split)  # warm-up
    sync(device)
    start = time.perf_counter()
    loss, _ = evaluate(model, split)
    loss.item()
    return len(split) / (time.perf_counter() - start)


def hours(seconds: float) -> str:
    return f"{seconds / 3600:8.1f} h" if seconds >= 3600 else f"{seconds / 60:8.1f} m"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per model")
    parser.add_argument("--only", help="comma-separated model names (lenet, conv2, ..., vgg19, resnet18)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = [n for n in ONE_PER_MODEL if not args.only or PRESETS[n].model in args.only.split(",")]
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f}; synthetic batches, paper profiles")
    print(f"{'preset':<24} {'batch':>5} {'ms/step':>9} {'img/s train':>11} {'img/s eval':>10} "
          f"{'iterations':>10} {'paper round':>11} {'experiment':>10}  (rounds+1 ticket, rounds reinit, trials)")
    for name in names:
        prof = PRESETS[name].paper
        step = step_seconds(name, device, args.steps)
        evals = eval_images_per_second(name, device)
        round_s = prof.train.iterations * step + (prof.train.iterations / prof.train.eval_every) * EVAL_IMAGES / evals
        experiment_s = round_s * (2 * prof.rounds + 1) * prof.trials
        print(f"{name:<24} {prof.train.batch_size:>5} {step * 1e3:9.1f} {prof.train.batch_size / step:11,.0f} "
              f"{evals:10,.0f} {prof.train.iterations:>10,} {hours(round_s):>11} {hours(experiment_s):>10}  "
              f"({prof.rounds + 1} + {prof.rounds}, x{prof.trials})")


if __name__ == "__main__":
    main()
