"""Does torch.compile (or channels-last, for the conv nets) make our training step faster here?

Times the step the library's loop takes (forward, cross-entropy, backward, gradients masked, fused
optimizer step, weights re-zeroed) for one model on random batches of the paper's shape, eager vs
`torch.compile(model)` (and, for conv models, channels-last memory format), alternating the variants
`--repeats` times so that load from other processes hits each of them alike. Prints the median
ms/step of each and the speed-up over eager. The library adopts a variant only where this shows it
helps; see docs/reproduction.md for the figures measured here.

Usage: python benchmarks/bench_compile.py [--model lenet] [--steps 300] [--repeats 3] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bench_loader import sync  # the script beside this one
from lth_tutorial.models import INPUT_SHAPES, MODELS, create_model, weight_kinds
from lth_tutorial.presets import PRESETS


def make_step(model, batch: int, dataset: str, channels_last: bool, device: torch.device):
    params = dict(model.named_parameters())
    names = list(weight_kinds(model))
    masks = [torch.ones_like(params[n]) for n in names]
    masked = [params[n] for n in names]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    x = torch.randn(batch, *INPUT_SHAPES[dataset], device=device)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(10, (batch,), device=device)

    def step():
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        torch._foreach_mul_([p.grad for p in masked], masks)
        optimizer.step()
        with torch.no_grad():
            torch._foreach_mul_(masked, masks)
    return step


def time_steps(step, steps: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet", choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    preset = next(p for p in PRESETS.values() if p.model == args.model)
    batch, dataset = preset.paper.train.batch_size, preset.paper.data.dataset
    variants = {"eager": (False, False), "torch.compile": (True, False)}
    if args.model != "lenet":
        variants |= {"channels-last": (False, True), "compile + channels-last": (True, True)}
    steps = {}
    for name, (compiled, channels_last) in variants.items():
        model = create_model(args.model, seed=0).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        run = torch.compile(model) if compiled else model
        step = make_step(run, batch, dataset, channels_last, device)
        start = time.perf_counter()
        for _ in range(3):  # warm-up (and compilation)
            step()
        print(f"{name:<24} warm-up {time.perf_counter() - start:6.1f} s")
        steps[name] = step
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, step in steps.items():
            times[name].append(time_steps(step, args.steps, device))
    eager = statistics.median(times["eager"])
    print(f"\n{args.model}, batch {batch}, {device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for name, ts in times.items():
        median = statistics.median(ts)
        print(f"{name:<24} {median * 1e3:8.3f} ms/step  ({eager / median:4.2f}x eager; runs: "
              f"{', '.join(f'{t * 1e3:.3f}' for t in ts)})")


if __name__ == "__main__":
    main()
