"""Inference latency and parameter bytes of a ticket's representations, from dense down to ~1% of the weights.

What it prints, in one run on one machine, for LeNet-300-100 (or `--model conv2`: its Linear layers get
CSR, its convs stay dense) at each density of the paper's ladder (100, 51.2, 26.2, 10.7, 3.6, 1.2%) and at
batch 1 and `--batch` (default 1024):
  - the median forward latency of
      dense     the pruned weights zeroed, plain nn.Linear / nn.Conv2d (what training leaves);
      masked    torch.nn.utils.prune's reparametrization, weight_orig * weight_mask at every call (what
                `lth export` writes as model.pt2);
      CSR       Linear layers on torch.sparse CSR weights (int32 indices);
      compact   a structured ticket materialized as a smaller dense model (`structured.compact_model`), on
                a structured mask made here at the same density (`neuron_mask`: the same fraction of every
                hidden Linear layer's neurons, by L1 norm; Conv-2's filters all stay);
    and each one's ratio against dense at the same density and batch (< 1: faster);
  - the parameter bytes of each (`sparse_inference.parameter_bytes`) and their ratio against dense;
  - per batch size, the densities at which each representation beats dense (is at least 10% faster);
  - with `--device cuda` on a GPU with 2:4 kernels, a second table: 2:4 semi-structured fp16 weights on
    their own 2:4 mask (`two_four_mask`: sparser than the ticket, never in its place) against dense fp16.
Masks are one-shot magnitude masks of a real init (seed 0) along the preset's per-layer ladder, or the
masks of every finished round of a stored ticket run (`--run FOLDER`); timing and bytes do not depend on
the weights' values. Timing: torch.utils.benchmark.Timer (it synchronizes a GPU), warm-up calls first, then
the representations take `--repeats` turns of blocked_autorange medians (together `--min-time` seconds each),
and the median over turns is reported; under inference_mode, with torch's threads set and printed.

Usage: python benchmarks/bench_inference.py [--model lenet|conv2] [--device cpu|cuda] [--threads 1]
       [--batch 1024] [--densities 1,0.512,0.262,0.107,0.036,0.012] [--min-time 0.25] [--repeats 5]
       [--run FOLDER]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import torch
from torch.utils.benchmark import Timer

from lth_tutorial.masks import Mask, prune_oneshot
from lth_tutorial.models import INPUT_SHAPES, MODELS, create_model, weight_kinds
from lth_tutorial.presets import PRESETS
from lth_tutorial.structured import compact_model, unit_scores, units_mask
from lth_tutorial.sparse_inference import (csr_model, parameter_bytes, prune_model, semi_structured_model,
                                           semi_structured_support, two_four_mask, zeroed_model)

LADDER = "1,0.512,0.262,0.107,0.036,0.012"   # LeNet's Pm after 0, 3, 6, 10, 15, 20 paper rounds (0.8^r)
REPRESENTATIONS = ("dense", "masked", "CSR", "compact")
BEATS = 0.9   # "beats dense": at least 10% faster; smaller differences are within a shared machine's noise


def neuron_mask(weights: dict[str, torch.Tensor], kinds: dict[str, str], density: float) -> Mask:
    """A structured mask at about `density` of the weights, for the compact column: the same fraction of
    every hidden Linear layer's neurons kept (largest L1 norm of incoming weights, `structured.unit_scores`),
    the weights that implies (`structured.units_mask`); conv filters all stay. Speed and bytes only."""
    scores = unit_scores(weights, Mask.ones_like(weights))
    hidden = [n for n, w in weights.items() if w.dim() == 2 and kinds[n] != "output"]
    total = sum(w.numel() for w in weights.values())

    def build(fraction: float) -> Mask:
        alive = {n: torch.ones(w.shape[0], dtype=torch.bool) for n, w in weights.items()}
        for n in hidden:
            rows = weights[n].shape[0]
            alive[n] = torch.zeros(rows, dtype=torch.bool)
            alive[n][scores[n].argsort(descending=True, stable=True)[:max(1, round(fraction * rows))]] = True
        return units_mask(alive, kinds, Mask.ones_like(weights))

    low, high = 0.0, 1.0
    for _ in range(30):  # bisection: the kept count only grows with the fraction
        mid = (low + high) / 2
        low, high = (low, mid) if build(mid).surviving() >= density * total else (mid, high)
    return build(high)


def seconds(modules: dict[str, torch.nn.Module], x: torch.Tensor, min_time: float, repeats: int) -> dict[str, float]:
    """Median forward seconds of each module on `x`. The modules take turns, `repeats` times, each turn a
    blocked_autorange median, so a burst of other work on a shared machine hits them all alike; the
    median over the turns is reported."""
    taken: dict[str, list[float]] = {name: [] for name in modules}
    with torch.inference_mode():
        for module in modules.values():
            for _ in range(3):  # warm-up: first calls allocate, and sparse kernels build their plans
                module(x)
        for turn in range(repeats):
            names = list(modules)[turn % len(modules):] + list(modules)[:turn % len(modules)]
            for name in names:
                timer = Timer("module(x)", globals={"module": modules[name], "x": x},
                              num_threads=torch.get_num_threads())
                taken[name].append(timer.blocked_autorange(min_run_time=min_time / repeats).median)
    return {name: statistics.median(times) for name, times in taken.items()}


def masks_to_time(args, model: torch.nn.Module) -> list[Mask]:
    kinds = weight_kinds(model)
    weights = {n: p.detach() for n, p in model.named_parameters() if n in kinds}
    if args.run:
        rounds = sorted(Path(args.run).glob("round_*/mask.pt"))
        if not rounds:
            raise SystemExit(f"{args.run} holds no round_*/mask.pt; give a ticket run's folder in the store "
                             f"(runs/<preset>-<profile>/t0-reset-<hash>).")
        return [Mask.ones_like(weights)] + [Mask(torch.load(p, weights_only=True)) for p in rounds]
    rule = next(p for p in PRESETS.values() if p.model == args.model).paper.pruning
    densities = [float(d) for d in args.densities.split(",")]
    return [Mask.ones_like(weights) if d == 1 else prune_oneshot(weights, kinds, rule, d) for d in densities]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet", choices=("lenet", "conv2"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--batch", type=int, default=1024, help="the large batch (batch 1 is always timed)")
    parser.add_argument("--densities", default=LADDER, help="comma-separated fractions of the weights kept")
    parser.add_argument("--min-time", type=float, default=0.25, help="seconds of timed calls per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="turns the representations take (median reported)")
    parser.add_argument("--run", help="a ticket run's folder in the store: time its rounds' masks instead")
    parser.add_argument("--json", help="also write every figure (one record per density x batch x representation) here")
    args = parser.parse_args()
    if args.run:
        args.model = json.loads((Path(args.run) / "config.json").read_text())["model"]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"{MODELS[args.model][2]}, device {device}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"torch thread(s), {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    model = create_model(args.model, seed=0).to(device).eval()
    kinds = weight_kinds(model)
    shape = INPUT_SHAPES[MODELS[args.model][1]]
    generator = torch.Generator().manual_seed(0)
    inputs = {b: torch.randn(b, *shape, generator=generator).to(device) for b in (1, args.batch)}
    rows, wins = [], {(r, b): [] for r in REPRESENTATIONS[1:] for b in inputs}
    for mask in masks_to_time(args, model):
        mask = mask.to(device)
        density = mask.density()
        built = {"dense": zeroed_model(model, mask), "masked": prune_model(model, mask), "CSR": csr_model(model, mask)}
        structured = neuron_mask({n: p.detach() for n, p in model.named_parameters() if n in mask}, kinds, density)
        state = zeroed_model(model, structured).state_dict()
        built["compact"] = compact_model(args.model, state, structured).to(device).eval()
        size = {name: parameter_bytes(m) for name, m in built.items()}
        for batch, x in inputs.items():
            took = seconds(built, x, args.min_time, args.repeats)
            rows.append((density, batch, took, size))
            for name in built:
                if name != "dense" and took[name] < BEATS * took["dense"]:
                    wins[name, batch].append(density)
    bool_mask = sum(m.numel() for m in mask.values())   # one byte per weight

    def cell(values: dict, name: str, text: str) -> str:
        if name not in values:
            return f" {'skipped':>17}"
        ratio = values[name] / values["dense"]
        return f" {text if name == 'dense' else f'{text} ({ratio:.2f}x)':>17}"

    head = f"{'density':>8} {'batch':>6} |" + "".join(f" {r + ' ms':>17}" for r in REPRESENTATIONS) + " |" + \
        "".join(f" {r + ' KB':>17}" for r in REPRESENTATIONS)
    print("\n" + head + "\n" + "-" * len(head))
    for density, batch, took, size in rows:
        print(f"{density:>8.1%} {batch:>6} |" + "".join(cell(took, r, f"{took.get(r, 0) * 1e3:.3f}") for r in REPRESENTATIONS)
              + " |" + "".join(cell(size, r, f"{size.get(r, 0) / 1024:.1f}") for r in REPRESENTATIONS))
    print("ratios: against dense at the same density and batch (< 1: faster or smaller). masked holds prune's "
          f"fp32 weight_mask; a bool mask would add {bool_mask / 1024:.1f} KB to dense instead."
          + " compact at 100% is the dense net rebuilt: its time ratio there is this run's noise.")
    for batch in inputs:
        said = []
        for name in REPRESENTATIONS[1:]:
            found = wins[name, batch]
            said.append(f"{name} at {', '.join(f'{d:.1%}' for d in found)}" if found else f"{name} at no density")
        print(f"beats dense (>= 10% faster) at batch {batch}: " + "; ".join(said))
    two_four = semi_structured(args, model, inputs, device)
    print(f"load average {os.getloadavg()[0]:.2f} at the end (other work on the machine slows every figure)")
    if args.json:
        records = [{"density": density, "batch": batch, "representation": name, "seconds": took[name],
                    "bytes": size[name], "time_ratio": took[name] / took["dense"], "bytes_ratio": size[name] / size["dense"]}
                   for density, batch, took, size in rows for name in took]
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"model": args.model, "device": str(device), "threads": torch.get_num_threads(),
                                               "torch": torch.__version__, "cpu": _cpu_name(), "beats": BEATS,
                                               "records": records, "two_four": two_four}, indent=1))
        print(f"figures written to {args.json}")


def _cpu_name() -> str:
    from lth_tutorial.reports import _cpu_name as name

    return name()


def semi_structured(args, model, inputs, device) -> list[dict]:
    """2:4 fp16 against dense fp16, each density's ticket made 2:4 first (another mask: its density is printed)."""
    reason = semi_structured_support(device)
    if reason:
        print(f"2:4 semi-structured: skipped ({reason})")
        return []
    records = []
    print(f"\n2:4 semi-structured (fp16, the ticket's mask made 2:4: another, sparser mask) against dense fp16")
    print(f"{'ticket':>8} {'2:4 mask':>9} {'batch':>6} | {'dense fp16 ms':>14} {'2:4 ms':>16}")
    for mask in masks_to_time(args, model):
        mask = mask.to(device)
        two_four = two_four_mask(dict(model.named_parameters()), mask)
        dense = zeroed_model(model, two_four).half()
        sparse = semi_structured_model(model, two_four)
        for batch, x in inputs.items():
            took = seconds({"dense": dense, "2:4": sparse}, x.half(), args.min_time, args.repeats)
            d, s = took["dense"], took["2:4"]
            print(f"{mask.density():>8.1%} {two_four.density():>9.1%} {batch:>6} | {d * 1e3:>14.3f} "
                  f"{s * 1e3:>8.3f} ({s / d:.2f}x)")
            records.append({"density": mask.density(), "two_four_density": two_four.density(), "batch": batch,
                            "dense_fp16_seconds": d, "two_four_seconds": s})
    return records


if __name__ == "__main__":
    main()
