"""Iterative magnitude pruning (IMP) and its controls, round by round, through the run store.

Owns: `Experiment` (everything that defines a run, frozen; its hash names the run's folder) and
`run_experiment`, which brings a run up to N pruning rounds, training only what the store lacks.

A round k trains the network under mask_k from its start weights, then mask_{k+1} = prune(trained_k).
Start weights by strategy:
  - `reset`      survivors back to their initial values (the winning ticket);
  - `rewind:K`   survivors back to their values after K iterations of round 0 (late resetting);
  - `continue`   no reset: keep training the trained survivors (the paper's comparison).
`oneshot` (target densities) prunes the dense trained network of round 0 straight to each target.
Controls run on the masks a ticket run found (round k >= 1, so they need that run; it is run first):
  - `reinit`     the same mask, a fresh random init from an independent seed;
  - `random`     a random mask with the same per-layer densities, and a fresh init.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from .data import DataConfig, Splits, load_splits
from .masks import Mask, PruningRule, prune_magnitude, prune_oneshot, random_mask_like
from .models import create_model, weight_kinds
from .store import RunStore
from .training import TrainConfig, train

CONTROLS = ("none", "reinit", "random")
_REWIND = re.compile(r"^rewind:(\d+)$")


def check_strategy(strategy: str) -> None:
    if strategy not in ("reset", "continue") and not _REWIND.match(strategy):
        raise ValueError(f"unknown strategy {strategy!r}; use reset, continue or rewind:K (K iterations).")


@dataclass(frozen=True)
class Experiment:
    """One run: a model, its data and training, how it prunes, and which strategy/control/trial."""

    model: str
    data: DataConfig
    train: TrainConfig
    pruning: PruningRule
    dropout: float = 0.0
    strategy: str = "reset"
    control: str = "none"
    oneshot: tuple[float, ...] = ()   # target densities; empty means iterative pruning
    trial: int = 0                    # trial t uses seed 1000 * t + base: inits and data orders differ
    preset: str = ""                  # provenance (part of the hash, so presets never share a folder)
    profile: str = ""

    def __post_init__(self):
        check_strategy(self.strategy)
        if (self.rewind_iteration or 0) > self.train.iterations:  # round 0 would never reach it
            raise ValueError(f"{self.strategy} rewinds past the end of training ({self.train.iterations} "
                             f"iterations per round); choose K <= {self.train.iterations}.")
        if self.control not in CONTROLS:
            raise ValueError(f"unknown control {self.control!r}; choose one of {', '.join(CONTROLS)}.")
        if self.oneshot and self.strategy != "reset":
            raise ValueError("one-shot pruning resets to the initial weights (strategy reset).")
        if self.oneshot and self.control != "none":
            raise ValueError("controls are defined on the iterative tickets; run them without --oneshot.")
        for density in self.oneshot:
            if not 0.0 < density < 1.0:
                raise ValueError(f"one-shot density must be in (0, 1); got {density}.")

    @property
    def seed(self) -> int:
        return 1000 * self.trial + 7

    @property
    def rewind_iteration(self) -> int | None:
        match = _REWIND.match(self.strategy)
        return int(match.group(1)) if match else None

    @property
    def max_rounds(self) -> int | None:
        return len(self.oneshot) if self.oneshot else None

    def ticket(self) -> "Experiment":
        """The ticket run whose masks a control uses."""
        return replace(self, control="none")


@dataclass
class RoundProgress:
    """Callbacks the CLI and widgets use to show progress; all optional."""

    start_round: Callable[[Experiment, int, int], Any] | None = None   # (experiment, round, iterations)
    iterations: Any = None                                             # a tqdm-like object with update(n)
    end_round: Callable[[Experiment, dict], Any] | None = None        # (experiment, metrics)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but no CUDA device is available; use --device cpu.")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda.")
    return torch.device(device)


def _prunable_density(mask: Mask, experiment: Experiment, kinds: dict[str, str]) -> float:
    names = experiment.pruning.prunable(kinds) or list(mask)
    return mask.density(names)


def _train_round(experiment: Experiment, store: RunStore, run, index: int, model: torch.nn.Module,
                 mask: Mask, splits: Splits, kinds: dict[str, str], progress: RoundProgress | None,
                 snapshot_at: int | None = None) -> dict:
    folder = store.round_dir(run, index)
    store.save_tensors(folder / "mask.pt", mask)
    if progress and progress.start_round:
        progress.start_round(experiment, index, experiment.train.iterations)
    started = time.perf_counter()
    metrics, snapshot = train(model, mask, splits, experiment.train, seed=experiment.seed,
                              augment=experiment.data.augment, snapshot_at=snapshot_at,
                              progress=progress.iterations if progress else None)
    if snapshot is not None:
        store.save_tensors(run / "rewind.pt", snapshot)
    store.save_tensors(folder / "trained.pt", model.state_dict())
    metrics = {"round": index, "density": _prunable_density(mask, experiment, kinds),
               "seconds": round(time.perf_counter() - started, 2), "device": str(splits.train.images.device),
               "layer_density": mask.layer_densities(), **metrics}
    store.save_json(folder / "metrics.json", metrics)  # last: marks the round finished
    if index >= 3:  # older trained weights are not needed again (round 0 feeds one-shot; keep it). The
        # previous round's are kept, so deleting this round's folder (what a StoreError says) can redo it.
        store.discard(store.round_dir(run, index - 2) / "trained.pt")
    if progress and progress.end_round:
        progress.end_round(experiment, metrics)
    return metrics


def _fresh_model(experiment: Experiment, seed: int, device: torch.device) -> torch.nn.Module:
    return create_model(experiment.model, seed=seed, dropout=experiment.dropout).to(device)


def run_experiment(experiment: Experiment, rounds: int, store: RunStore | None = None,
                   device: str | torch.device = "cpu", progress: RoundProgress | None = None,
                   splits: Splits | None = None) -> list[dict]:
    """Bring `experiment` up to `rounds` pruning rounds (rounds 0..N); return every round's metrics.

    Finished rounds are read from the store, never retrained; a run interrupted at any point resumes
    from its last finished round.
    """
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0; got {rounds}.")
    if experiment.max_rounds is not None:
        rounds = min(rounds, experiment.max_rounds)
    store = store or RunStore()
    device = torch.device(device)
    run = store.run_dir(experiment)
    done = set(store.finished_rounds(run))
    wanted = range(1 if experiment.control != "none" else 0, rounds + 1)
    if all(k in done for k in wanted):
        return store.load_metrics(run)
    splits = splits or load_splits(experiment.data, device)
    if experiment.control != "none":
        _run_control(experiment, rounds, store, run, done, device, progress, splits)
    else:
        _run_ticket(experiment, rounds, store, run, done, device, progress, splits)
    return store.load_metrics(run)


def _run_ticket(experiment, rounds, store, run, done, device, progress, splits) -> None:
    model = _fresh_model(experiment, experiment.seed, device)
    kinds = weight_kinds(model)
    if not (run / "init.pt").exists():
        store.save_tensors(run / "init.pt", model.state_dict())
    init = store.load_tensors(run / "init.pt", device)
    for index in range(rounds + 1):
        if index in done:
            continue
        if index == 0:
            mask = Mask.ones_like({n: p for n, p in model.named_parameters() if n in kinds})
            model.load_state_dict(init)
            _train_round(experiment, store, run, 0, model, mask, splits, kinds, progress,
                         snapshot_at=experiment.rewind_iteration)
            continue
        previous = store.round_dir(run, index - 1)
        base = store.round_dir(run, 0) if experiment.oneshot else previous
        trained = store.load_tensors(base / "trained.pt", device)
        if experiment.oneshot:
            mask = prune_oneshot({n: trained[n] for n in kinds}, kinds, experiment.pruning,
                                 experiment.oneshot[index - 1])
        else:
            mask = prune_magnitude(trained, Mask(store.load_tensors(previous / "mask.pt", device)),
                                   kinds, experiment.pruning)
        start = {"reset": init, "continue": trained}.get(experiment.strategy)
        if start is None:  # rewind:K
            start = store.load_tensors(run / "rewind.pt", device)
        model.load_state_dict(start)
        _train_round(experiment, store, run, index, model, mask, splits, kinds, progress)


def _run_control(experiment, rounds, store, run, done, device, progress, splits) -> None:
    ticket_store_run = store.run_dir(experiment.ticket())
    run_experiment(experiment.ticket(), rounds, store, device, progress, splits)
    for index in range(1, rounds + 1):
        if index in done:
            continue
        mask = Mask(store.load_tensors(store.round_dir(ticket_store_run, index) / "mask.pt", device))
        seed = experiment.seed + 100 * index + (1 if experiment.control == "reinit" else 2)
        if experiment.control == "random":
            mask = random_mask_like(mask, seed)
        model = _fresh_model(experiment, seed, device)
        _train_round(experiment, store, run, index, model, mask, splits, weight_kinds(model), progress)
