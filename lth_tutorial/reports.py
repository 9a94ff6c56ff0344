"""From runs to summaries: a grid of trials x controls for one preset, as the JSON the CLI writes.

Owns: `run_grid` (run or read every trial's ticket and controls), the summary format
`{"preset", "profile", "runs": [{"trial", "strategy", "control", "rounds": [...]}]}` (density is the
paper's Pm: the fraction of all weights that remain, never-pruned kinds included), `provenance` (what
made the numbers), grouping runs into labelled series, and tables (markdown / CSV) of the mean and
spread over trials.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .data import load_splits
from .lottery import RoundProgress, run_experiment
from .presets import experiment
from .store import RunStore, environment

ROUND_KEYS = ("round", "density", "kind_density", "early_stop_iteration", "early_stop_test_accuracy",
              "final_test_accuracy")


def run_grid(preset: str, profile: str, *, rounds: int, trials: int, strategy: str = "reset",
             controls: tuple[str, ...] = (), oneshot: tuple[float, ...] = (),
             rates: dict[str, float] | None = None, scope: str | None = None,
             store: RunStore | None = None, device: str | torch.device = "cpu",
             progress: RoundProgress | None = None, splits=None,
             only_trials: tuple[int, ...] = (), curve_points: int = 0) -> dict[str, Any]:
    """Run (or read from the store) each trial's ticket run and its controls; return the summary.

    `rates` are the paper's per-round rates, stepped by the profile (`presets.experiment`).
    `only_trials` picks some of the `trials` (e.g. one per machine or process); a later call without
    it reads them all back from the store. `curve_points` > 0 keeps each round's training curves,
    thinned to about that many evaluations, under "curve".
    """
    store = store or RunStore()
    if any(not 0 <= t < trials for t in only_trials):
        raise ValueError(f"trial indices must be in 0..{trials - 1} (trials={trials}); got {list(only_trials)}.")
    runs = []
    for trial in only_trials or range(trials):
        for control in ("none", *controls):
            exp = experiment(preset, profile, strategy=strategy, control=control, trial=trial,
                             oneshot=oneshot, rates=rates, scope=scope)
            if splits is None:
                splits = load_splits(exp.data, device)
            metrics = run_experiment(exp, rounds, store, device, progress, splits)
            runs.append({"trial": trial, "strategy": "oneshot" if oneshot else strategy, "control": control,
                         "rounds": [{k: m[k] for k in ROUND_KEYS} | _extra(m) | _curve(m, curve_points)
                                    for m in metrics if m["round"] <= rounds]})
    config = experiment(preset, profile, strategy=strategy, oneshot=oneshot, rates=rates, scope=scope)
    described = {k: v for k, v in asdict(config).items() if k not in ("trial", "control")}
    return {"preset": preset, "profile": profile, "config": described, "trials": sorted({r["trial"] for r in runs}),
            "controls": list(controls), "rounds": rounds, "runs": runs}


def _extra(metrics: dict) -> dict:
    """Fixed-iteration accuracies (VGG/ResNet report these) carried into the summary."""
    return {k: v for k, v in metrics.items() if k.startswith("test_accuracy_at_")}


CURVE_KEYS = ("iteration", "val_loss", "test_accuracy")


def _curve(metrics: dict, points: int) -> dict:
    """Every k-th evaluation (and the last), so that a paper-scale curve stays a few hundred bytes."""
    if points <= 0:
        return {}
    curves = metrics["curves"]
    n = len(curves["iteration"])
    stride = -(-n // points)  # ceil(n / points)
    keep = sorted(set(range(stride - 1, n, stride)) | {n - 1})
    return {"curve": {k: [round(curves[k][i], 5) for i in keep] for k in CURVE_KEYS}}


def without_curves(summary: dict) -> dict:
    return {**summary, "runs": [{**run, "rounds": [{k: v for k, v in r.items() if k != "curve"} for r in run["rounds"]]}
                                for run in summary["runs"]]}


def _cpu_name() -> str:
    try:  # Linux names the CPU model here; platform.processor() is often empty
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def provenance(device: str | torch.device | None = None) -> dict[str, Any]:
    """What made a summary's numbers: versions, hardware, and the settings that change results on
    `device` (default: CUDA if available), read now, so call it after the runs it describes.

    The run store keys every run by `store.environment`; this records the same, plus the flags behind
    its `deterministic` and `tf32`, so a reader can tell why two files differ. CUDA and cuDNN are None
    on CPU (not used there, whatever the torch build has).
    """
    from . import __version__
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    env = environment(device)
    hardware = (torch.cuda.get_device_name(device) if device.type == "cuda"
                else f"{_cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads")
    return {"lth_tutorial": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "hardware": hardware, "platform": platform.platform(), "device": env["device"],
            "cuda": env.get("cuda"), "cudnn": env.get("cudnn"), "threads": torch.get_num_threads(),
            "deterministic_algorithms": env["deterministic"],
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32}


def label(run: dict) -> str:
    if run["control"] == "reinit":
        return "random reinit"
    if run["control"] == "random":
        return "random sparsity"
    return {"reset": "winning ticket", "continue": "continued training", "oneshot": "one-shot"}.get(
        run["strategy"], f"ticket ({run['strategy']})")


def series(summary: dict) -> dict[str, list[list[dict]]]:
    """label -> one list of round dicts per trial."""
    grouped: dict[str, list[list[dict]]] = {}
    for run in summary["runs"]:
        grouped.setdefault(label(run), []).append(run["rounds"])
    return grouped


def by_round(trials: list[list[dict]], key: str) -> list[tuple[float, float, float, float]]:
    """(density, mean, min, max) of `key` per round index present in every trial."""
    rounds = sorted(set.intersection(*(set(r["round"] for r in t) for t in trials))) if trials else []
    rows = []
    for k in rounds:
        picked = [next(r for r in t if r["round"] == k) for t in trials]
        values = [p[key] for p in picked]
        rows.append((picked[0]["density"], statistics.fmean(values), min(values), max(values)))
    return rows


def markdown_table(summary: dict) -> str:
    lines = ["| series | round | density % | early-stop iter | test acc at early stop % | final test acc % | trials |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, trials in series(summary).items():
        its = by_round(trials, "early_stop_iteration")
        accs = by_round(trials, "early_stop_test_accuracy")
        finals = by_round(trials, "final_test_accuracy")
        rounds = sorted(set.intersection(*(set(r["round"] for r in t) for t in trials)))
        for k, it, acc, fin in zip(rounds, its, accs, finals):
            spread = f" ± {(acc[3] - acc[2]) * 50:.2f}" if len(trials) > 1 else ""
            lines.append(f"| {name} | {k} | {acc[0] * 100:.1f} | {it[1]:.0f} | {acc[1] * 100:.2f}{spread} "
                         f"| {fin[1] * 100:.2f} | {len(trials)} |")
    return "\n".join(lines)


def csv_text(summary: dict) -> str:
    lines = ["series,trial,round,density,early_stop_iteration,early_stop_test_accuracy,final_test_accuracy"]
    for run in summary["runs"]:
        for r in run["rounds"]:
            lines.append(f"{label(run)},{run['trial']},{r['round']},{r['density']:.6f},{r['early_stop_iteration']},"
                         f"{r['early_stop_test_accuracy']:.6f},{r['final_test_accuracy']:.6f}")
    return "\n".join(lines) + "\n"


def save_summary(summary: dict, path: str | Path, compact: bool = False) -> None:
    """Indented JSON (diffs read well); `compact` for curve files, which nobody reads by eye."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(summary, separators=(",", ":")) if compact else json.dumps(summary, indent=1)
    path.write_text(text + "\n")


def load_summary(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def merge(*summaries: dict) -> dict:
    """One summary holding the runs of several (same preset and profile)."""
    return {**summaries[0], "runs": [run for s in summaries for run in s["runs"]]}
