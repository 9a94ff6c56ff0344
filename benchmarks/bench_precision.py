"""fp32 vs bf16, NCHW vs channels-last: training step time and evaluation throughput of every model.

For each model at its preset's batch size (the paper profile's), on random batches of its dataset's
shape, in one run on one machine:
  - a training step as `training.train` takes it: forward and cross-entropy under
    `precision.autocast`, backward outside it, gradients masked, fused Adam step, weights re-zeroed
    (a random half of every prunable weight pruned: dense kernels, masked arithmetic), in ms/step;
  - evaluation as `training.evaluate` runs it (inference mode, `eval_batch` examples per pass, or all
    the evaluated images where they are fewer), in images/s;
for fp32, fp32 + channels-last, bf16 and bf16 + channels-last (LeNet has no conv: its two
channels-last rows are left out). The variants of a model alternate `--repeats` times so that load
from other processes hits each alike; each figure is the median, with the ratio to fp32 beside it.
`precision.CHANNELS_LAST` (the models that train channels-last under bf16) follows what this prints.

Usage: python benchmarks/bench_precision.py [--models conv2,conv4] [--threads 1] [--repeats 3] [--scale 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from bench_loader import sync  # the script beside this one
from lth_tutorial.data import Split
from lth_tutorial.models import INPUT_SHAPES, MODELS, create_model, weight_kinds
from lth_tutorial.precision import autocast, layout
from lth_tutorial.presets import PRESETS
from lth_tutorial.training import eval_batch, evaluate

# Steps and evaluated images per timing, sized so that the default run (3 repeats) stays near 3 minutes
# on 2 busy cores: a VGG-19 step costs ~10x a Conv-2 step here, so it gets one of each and few images.
WORK = {"lenet": (100, 5_000), "conv2": (4, 512), "conv4": (3, 384), "conv6": (2, 256),
        "vgg19": (1, 64), "resnet18": (2, 256)}
VARIANTS = {"fp32": ("fp32", False), "fp32 + channels-last": ("fp32", True),
            "bf16": ("bf16", False), "bf16 + channels-last": ("bf16", True)}


def make_step(model, batch: int, dataset: str, precision: str, channels_last: bool, device: torch.device):
    params = dict(model.named_parameters())
    names = list(weight_kinds(model))
    g = torch.Generator().manual_seed(0)
    factors = [(torch.rand(params[n].shape, generator=g) < 0.5).float().to(device) for n in names]
    masked = [params[n] for n in names]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    x = torch.randn(batch, *INPUT_SHAPES[dataset], device=device)
    y = torch.randint(10, (batch,), device=device)

    def step():
        with autocast(device, precision):
            loss = F.cross_entropy(model(layout(x, channels_last)).float(), y)
        optimizer.zero_grad()
        loss.backward()
        torch._foreach_mul_([p.grad for p in masked], factors)
        optimizer.step()
        with torch.no_grad():
            torch._foreach_mul_(masked, factors)
    return step


def timed(run, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    run()
    sync(device)
    return time.perf_counter() - start


def bench_model(name: str, args, device: torch.device) -> None:
    preset = next(p for p in PRESETS.values() if p.model == name)
    batch, dataset = preset.paper.train.batch_size, preset.paper.data.dataset
    steps, images = (max(1, round(n * args.scale)) for n in WORK[name])
    split = Split(torch.randn(images, *INPUT_SHAPES[dataset], device=device),
                  torch.randint(10, (images,), device=device))
    variants = {v: spec for v, spec in VARIANTS.items() if name != "lenet" or not spec[1]}
    runs = {}
    for variant, (precision, channels_last) in variants.items():
        model = create_model(name, seed=0).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        step = make_step(model, batch, dataset, precision, channels_last, device)

        def steps_run(step=step):
            for _ in range(steps):
                step()

        def eval_run(model=model, precision=precision, channels_last=channels_last):
            evaluate(model, split, precision=precision, channels_last=channels_last)[0].item()

        step(), step(), eval_run()  # warm-up: oneDNN builds its kernels (and picks them) on first use
        runs[variant] = (steps_run, eval_run)
    times = {v: ([], []) for v in runs}
    for _ in range(args.repeats):
        for variant, (steps_run, eval_run) in runs.items():
            times[variant][0].append(timed(steps_run, device) / steps)
            times[variant][1].append(timed(eval_run, device))
    step32, eval32 = (statistics.median(t) for t in times["fp32"])
    for variant, (step_times, eval_times) in times.items():
        step, evaluation = statistics.median(step_times), statistics.median(eval_times)
        per_pass = min(images, eval_batch(variants[variant][0], device))
        print(f"{name:<9} {batch:>5}  {variant:<21} {step * 1e3:9.2f}  {step32 / step:5.2f}x  "
              f"{images / evaluation:10.0f}  {eval32 / evaluation:5.2f}x  {per_pass:>5}   "
              f"{', '.join(f'{t * 1e3:.1f}' for t in step_times)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: all six)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, a sweep task's; CPU figures depend on it)")
    parser.add_argument("--repeats", type=int, default=3, help="alternated timings of every variant")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every model's steps and images")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}.")
    cpu = torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"device {device} ({cpu}), torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; median of "
          f"{args.repeats} alternated repeats")
    print(f"{'model':<9} {'batch':>5}  {'variant':<21} {'ms/step':>9}  {'vs fp32':>6}  {'eval img/s':>10}  "
          f"{'vs fp32':>6}  {'per pass':>5}   step ms per repeat")
    for name in models:
        bench_model(name, args, device)
    print(f"load average {os.getloadavg()[0]:.2f} at the end (other work on the machine slows every figure)")


if __name__ == "__main__":
    main()
