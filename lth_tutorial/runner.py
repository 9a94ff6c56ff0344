"""Running a grid: every trial's ticket run and its controls for one preset, gathered into a summary.

Owns `run_grid` (the one place that asks for training; everything else only reads its summary) and
what a summary keeps of each round: the metrics in ROUND_KEYS, fixed-iteration accuracies, and
optionally its training curves thinned to a few points. The summary format is
`{"preset", "profile", "config", "trials", "controls", "rounds", "runs": [{"trial", "strategy",
"control", "rounds": [...]}]}`; `reports` turns it into tables and files.
"""
from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

import torch

from .data import Splits, load_splits
from .lottery import Experiment, RoundProgress, run_experiment
from .presets import experiment
from .reports import COST_KEYS
from .store import RunStore

ROUND_KEYS = ("round", "density", "kind_density", "units", "early_stop_iteration", "early_stop_val_loss",
              "early_stop_test_accuracy", "final_test_accuracy", *COST_KEYS)
CURVE_KEYS = ("iteration", "val_loss", "test_accuracy")


class SplitsMismatch(ValueError):
    pass


def check_splits(splits: Splits, exp: Experiment) -> None:
    """Splits loaded for another data config would train every round on the wrong examples, silently."""
    if splits.config != exp.data:
        raise SplitsMismatch(f"the splits passed in were loaded for {splits.config}, but {exp.preset} "
                             f"({exp.profile} profile) trains on {exp.data}; load them with "
                             f"`load_splits(experiment({exp.preset!r}, {exp.profile!r}).data)`, or pass none.")


def grid_experiments(preset: str, profile: str, *, trials: int, strategy: str = "reset",
                     controls: tuple[str, ...] = (), oneshot: tuple[float, ...] = (),
                     rates: dict[str, float] | None = None, scope: str | None = None,
                     train: dict[str, Any] | None = None, only_trials: tuple[int, ...] = (),
                     method: str = "magnitude", control_rounds: tuple[int, ...] = (),
                     structure: str = "weights") -> list[Experiment]:
    """Every run of a grid, in summary order: per trial, the ticket run, then each control (trained at
    `control_rounds` only, when given)."""
    if any(not 0 <= t < trials for t in only_trials):
        raise ValueError(f"trial indices must be in 0..{trials - 1} (trials={trials}); got {list(only_trials)}.")
    return [experiment(preset, profile, strategy=strategy, oneshot=oneshot, rates=rates, scope=scope, train=train,
                       control=control, trial=trial, method=method, control_rounds=control_rounds,
                       structure=structure)
            for trial in only_trials or range(trials) for control in ("none", *controls)]


def summary_of(runs: list[tuple[Experiment, list[dict]]], rounds: int, controls: tuple[str, ...] = (),
               curve_points: int = 0) -> dict[str, Any]:
    """The summary of a grid's runs from each run's round metrics (as `run_experiment` returns them)."""
    first = runs[0][0]
    described = {k: v for k, v in asdict(replace(first, trial=0, control="none")).items()
                 if k not in ("trial", "control", "control_rounds")
                 and (k, v) not in (("method", "magnitude"), ("structure", "weights"))}  # as before they existed
    described["train"] = {k: v for k, v in described["train"].items()   # fp32 runs too, as before precision
                          if (k, v) not in (("precision", "fp32"), ("channels_last", False))}
    kept = [{"trial": exp.trial, "strategy": "oneshot" if exp.oneshot else exp.strategy, "control": exp.control,
             **({"method": exp.method} if exp.method != "magnitude" else {}),
             **({"structure": exp.structure} if exp.structure != "weights" else {}),
             "rounds": [_kept(m, curve_points) for m in metrics]} for exp, metrics in runs]
    return {"preset": first.preset, "profile": first.profile, "config": described,
            "trials": sorted({r["trial"] for r in kept}), "controls": list(controls), "rounds": rounds, "runs": kept}


def run_grid(preset: str, profile: str, *, rounds: int, trials: int, strategy: str = "reset",
             controls: tuple[str, ...] = (), oneshot: tuple[float, ...] = (),
             rates: dict[str, float] | None = None, scope: str | None = None,
             train: dict[str, Any] | None = None, store: RunStore | None = None,
             device: str | torch.device = "cpu", progress: RoundProgress | None = None,
             splits: Splits | None = None, only_trials: tuple[int, ...] = (), curve_points: int = 0,
             method: str = "magnitude", control_rounds: tuple[int, ...] = (),
             structure: str = "weights") -> dict[str, Any]:
    """Run (or read from the store) each trial's ticket run and its controls; return the summary.

    `rates` are the paper's per-round rates, stepped by the profile, and `train` overrides the
    profile's training (iterations, lr, eval_every, batch_size), both as `presets.experiment` takes
    them. `only_trials` picks some of the `trials` (one per process or machine); a later call without
    it reads them all back from the store. `curve_points` > 0 keeps each round's training curves,
    thinned to about that many evaluations, under "curve". `structure="units"` prunes whole neurons or
    filters (`structured`). `sweep.run_sweep` runs the same grids as a Ray task graph.
    """
    exps = grid_experiments(preset, profile, trials=trials, strategy=strategy, controls=controls, oneshot=oneshot,
                            rates=rates, scope=scope, train=train, only_trials=only_trials, method=method,
                            control_rounds=control_rounds, structure=structure)
    if splits is not None:
        check_splits(splits, exps[0])
    store = store or RunStore()
    runs = []
    for exp in exps:
        if splits is None:
            splits = load_splits(exp.data, device)
        runs.append((exp, run_experiment(exp, rounds, store, device, progress, splits)))
    return summary_of(runs, rounds, controls, curve_points)


def _kept(metrics: dict, curve_points: int) -> dict:
    """The round's metrics, its fixed-iteration accuracies (VGG/ResNet report these), and its curve."""
    kept = {k: metrics[k] for k in ROUND_KEYS if k in metrics}
    kept |= {k: v for k, v in metrics.items() if k.startswith("test_accuracy_at_")}
    if curve_points > 0:
        kept["curve"] = thinned(metrics["curves"], curve_points)
    return kept


def thinned(curves: dict[str, list[float]], points: int) -> dict[str, list[float]]:
    """Every k-th evaluation (and the last), so that a paper-scale curve stays a few hundred bytes."""
    n = len(curves["iteration"])
    stride = -(-n // points)  # ceil(n / points)
    keep = sorted(set(range(stride - 1, n, stride)) | {n - 1})
    return {k: [round(curves[k][i], 5) for i in keep] for k in CURVE_KEYS}


def without_curves(summary: dict) -> dict:
    return {**summary, "runs": [{**run, "rounds": [{k: v for k, v in r.items() if k != "curve"} for r in run["rounds"]]}
                                for run in summary["runs"]]}


__all__ = ["run_grid", "grid_experiments", "summary_of", "check_splits", "SplitsMismatch", "without_curves", "thinned", "ROUND_KEYS"]
