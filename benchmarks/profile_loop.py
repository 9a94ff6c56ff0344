"""Where a LeNet training step spends its time: torch.profiler over the library's own loop.

Runs `lth_tutorial.training.train` (paper profile: masked Adam, batch 60) for `--steps` iterations with
one evaluation at the end, under torch.profiler, and prints the operators by self CPU time, grouped
into what the step is made of: matrix products (the compute), the optimizer, mask application, data
indexing, and the rest (autograd bookkeeping, elementwise ops, Python). The "not compute" share is
what the loop can still lose.

Usage: python benchmarks/profile_loop.py [--steps 500] [--threads N] [--top 15]
"""
from __future__ import annotations

import argparse
import dataclasses
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from lth_tutorial.data import load_splits
from lth_tutorial.masks import Mask
from lth_tutorial.models import create_model, weight_kinds
from lth_tutorial.presets import get_preset
from lth_tutorial.training import train

GROUPS = {  # operator name fragments -> what they are in the step
    "matrix products": ("addmm", "aten::mm", "aten::bmm", "matmul", "linear"),
    "optimizer (fused Adam)": ("adam", "optimizer"),
    # on the CPU, _foreach_mul_ runs one mul_ per tensor; the loop's only other mul_ is inside evaluation
    "masks (_foreach_mul_)": ("_foreach_mul", "aten::mul_"),
    "data (index a batch)": ("index", "randperm", "gather"),
    "loss": ("cross_entropy", "log_softmax", "nll_loss"),
}


def group_of(name: str) -> str:
    lowered = name.lower()
    return next((g for g, keys in GROUPS.items() if any(k in lowered for k in keys)), "other")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = get_preset("lenet-mnist")
    splits = load_splits(preset.paper.data)
    model = create_model("lenet", seed=0)
    mask = Mask.ones_like({n: p for n, p in model.named_parameters() if n in weight_kinds(model)})
    config = dataclasses.replace(preset.paper.train, iterations=args.steps, eval_every=args.steps)
    train(model, mask, splits, dataclasses.replace(config, iterations=20, eval_every=20), seed=0)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train(model, mask, splits, config, seed=0)
    events = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")]
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{args.steps} steps, {torch.get_num_threads()} threads, {total / 1e3 / args.steps:.3f} ms of operator "
          f"self time per step (includes the one final evaluation)\n")
    print(f"{'operator':<44} {'self ms/step':>12} {'share':>7}  group")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.top]:
        print(f"{e.key[:44]:<44} {e.self_cpu_time_total / 1e3 / args.steps:12.4f} "
              f"{e.self_cpu_time_total / total:7.1%}  {group_of(e.key)}")
    shares = defaultdict(float)
    for e in events:
        shares[group_of(e.key)] += e.self_cpu_time_total
    print("\nby group:")
    for g, t in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"  {g:<28} {t / 1e3 / args.steps:8.4f} ms/step {t / total:7.1%}")


if __name__ == "__main__":
    main()
