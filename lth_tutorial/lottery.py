"""Iterative magnitude pruning (IMP) and its controls, round by round, through the run store.

Owns: `Experiment` (everything that defines a run, frozen), what keys its folders, where each round
starts, and `run_experiment`, which brings a run up to N pruning rounds, training only what the store
lacks (under the run's lock, so concurrent processes never train a round twice).

A round k trains the network under mask_k from its start weights, then mask_{k+1} = prune(trained_k).
Round 0 (dense) does not depend on how a run prunes, so it lives in a *dense* run shared by every
ticket of the same model, data, training and trial: changing a pruning rate trains only rounds >= 1.
Start weights by strategy:
  - `reset`      survivors back to their initial values (the winning ticket);
  - `rewind:K`   survivors back to their values after K iterations of round 0, then training *resumes*
                 at iteration K (Frankle et al. 2019/2020): the lr schedule from K, the data order from K,
                 and the remaining T - K iterations; the optimizer state starts fresh (as open_lth does);
  - `continue`   no reset: keep training the trained survivors (the paper's comparison).
`oneshot` (target densities) prunes the dense trained network of round 0 straight to each target.
Controls run on the masks a ticket run found (round k >= 1, so they need that run; it is run first),
train with the ticket's data order and start iteration, and differ from it only in what they control:
  - `reinit`     the same mask, a fresh random init (its own seed per trial and round, `seeds`);
  - `random`     a random mask with the same per-layer densities, and a fresh init;
  - `signed-constant`, `signed-reinit`, `random-signs`  the same mask and what is kept of the init
                 (Zhou et al. 2019): its signs at sigma_l (the layer's init std), its signs on a fresh
                 init's magnitudes, or its magnitudes with random signs.
`method` names what ranks the weights: magnitude after training (IMP) or Zhou et al.'s other criteria
(`masks.CRITERIA`: large-init, magnitude-increase, movement; rounds and rates as IMP's), a method at
initialization, or early-bird.
`structure` names what a round removes: single weights (the paper's IMP), or whole `units`, LeNet's
neurons and the Conv nets' filters by their L1 norm (`structured`, Li et al. 2017), through the same
rounds, strategies and controls (`reinit` on a structured mask is Liu et al. 2019's training from scratch;
`random` keeps each layer's number of units, at random).
Densities are over all weights the network has (the paper's Pm), shortcuts and output included;
per-kind densities are kept beside it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from .data import DataConfig, Splits, load_splits
from .masks import CRITERIA as _CRITERIA
from .masks import Mask, PruningRule
from .pruning_at_init import METHODS as _AT_INIT
from .rounds import (Trained, Weights, control_mask, control_start, dense_mask, initial_weights,
                     rewind_snapshot, ticket_mask, ticket_start, train_round)
from .seeds import derive_seed
from .store import RunStore, changed_fields, environment
from .structured import STRUCTURES as _STRUCTURES
from .structured import check_structure
from .training import TrainConfig, set_deterministic

AT_INIT = tuple(_AT_INIT)
SIGN_CONTROLS = ("signed-constant", "signed-reinit", "random-signs")
CONTROLS = ("none", "reinit", "random", "shuffle", "invert", *SIGN_CONTROLS)
CRITERIA = tuple(_CRITERIA)   # scored from the init and the trained weights, round by round as IMP
# a criterion after training (IMP's magnitude, or Zhou et al.'s), a method at initialization, or early-bird
METHODS = (*CRITERIA, *AT_INIT, "early-bird")
STRUCTURES = tuple(_STRUCTURES)   # what a round removes: single weights, or whole units (neurons, filters)
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
    method: str = "magnitude"         # what scores the weights: magnitude after training, or at init
    trial: int = 0                    # trials draw independent inits and data orders (`seeds`)
    structure: str = "weights"        # what a round removes: single weights, or whole units (`structured`)
    control_rounds: tuple[int, ...] = ()  # a control trains only these rounds (default every one); not
                                          # in the key: a round's result does not depend on which others ran
    preset: str = ""                  # provenance: names the store folder the run lives in
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
        if self.method not in METHODS:
            raise ValueError(f"unknown pruning method {self.method!r}; choose one of {', '.join(METHODS)}.")
        if self.method in CRITERIA[1:] and self.strategy != "reset":
            raise ValueError(f"the {self.method} criterion compares trained weights with the init they reset to "
                             f"(Zhou et al.); use strategy reset.")
        if self.method not in CRITERIA and not self.oneshot:
            when = "early in dense training" if self.method == "early-bird" else "at initialization"
            raise ValueError(f"{self.method} prunes {when}, straight to each density: give "
                             f"--oneshot D1,D2,... (e.g. 0.2,0.036).")
        if self.oneshot and self.control != "none" and self.method in CRITERIA:
            raise ValueError("controls are defined on the iterative tickets and on pruning at initialization; "
                             "run them without --oneshot, or with a --method.")
        if self.control in ("shuffle", "invert") and self.method in ("magnitude", "early-bird"):
            raise ValueError(f"the {self.control} ablation is defined for pruning at initialization; give a "
                             f"--method of {', '.join(AT_INIT)}.")
        for density in self.oneshot:
            if not 0.0 < density < 1.0:
                raise ValueError(f"one-shot density must be in (0, 1); got {density}.")
        if self.trial < 0:
            raise ValueError(f"trial must be >= 0; got {self.trial}.")
        if any(r < 1 for r in self.control_rounds):
            raise ValueError(f"control rounds are >= 1 (round 0 is dense); got {list(self.control_rounds)}.")
        check_structure(self.structure, self.model, method=self.method, oneshot=self.oneshot,
                        scope=self.pruning.scope)

    # ---- seeds: see `seeds` for what is shared on purpose -------------------------------------------

    @property
    def init_seed(self) -> int:
        """The ticket's (dense network's) initialization."""
        return derive_seed(self.trial, "ticket", 0, "init")

    @property
    def data_seed(self) -> int:
        """Data order, augmentation and dropout of every round of the ticket and its controls."""
        return derive_seed(self.trial, "ticket", 0, "data")

    def control_seed(self, round_index: int, purpose: str) -> int:
        return derive_seed(self.trial, self.control, round_index, purpose)

    # ---- derived ----------------------------------------------------------------------------------

    @property
    def rewind_iteration(self) -> int | None:
        match = _REWIND.match(self.strategy)
        return int(match.group(1)) if match else None

    @property
    def start_iteration(self) -> int:
        """Where rounds >= 1 start training: K for rewind:K (they resume there), else 0."""
        return self.rewind_iteration or 0

    @property
    def max_rounds(self) -> int | None:
        return len(self.oneshot) if self.oneshot else None

    def wanted_rounds(self, rounds: int) -> list[int]:
        """The rounds this run holds when brought up to `rounds`: 0..N for a ticket, 1..N for a control
        (its round 0 is the ticket's), capped at the one-shot targets."""
        if self.max_rounds is not None:
            rounds = min(rounds, self.max_rounds)
        if self.control != "none" and self.control_rounds:
            return [r for r in range(1, rounds + 1) if r in self.control_rounds]
        return list(range(1 if self.control != "none" else 0, rounds + 1))

    def ticket(self) -> "Experiment":
        """The ticket run whose masks a control uses."""
        return replace(self, control="none", control_rounds=())

    # ---- what names its folders ---------------------------------------------------------------------

    def dense_key(self) -> dict[str, Any]:
        """What round 0 depends on (not the pruning rule, strategy or control). Data and training hold only
        the fields off their defaults, so a precision other than fp32 (and the channels-last layout that
        comes with bf16) is keyed from round 0 on, and fp32 runs keep the folders they had before it."""
        return {"model": self.model, "data": changed_fields(self.data), "train": changed_fields(self.train),
                "dropout": self.dropout, "trial": self.trial}

    def ticket_key(self) -> dict[str, Any]:
        return {**self.dense_key(), "pruning": {"rates": dict(sorted(self.pruning.rates.items())),
                                                "scope": self.pruning.scope},
                "strategy": self.strategy, "oneshot": list(self.oneshot),
                # only when set, so runs made before methods (structures) existed keep their folders
                **({"method": self.method} if self.method != "magnitude" else {}),
                **({"structure": self.structure} if self.structure != "weights" else {})}

    @property
    def group(self) -> str:
        return f"{self.preset or self.model}-{self.profile or 'custom'}"

    @property
    def ticket_name(self) -> str:
        if self.method != "magnitude":
            return f"t{self.trial}-{self.method}"
        units = "units-" if self.structure != "weights" else ""
        return f"t{self.trial}-{units}" + ("oneshot" if self.oneshot else self.strategy.replace(":", ""))


@dataclass(frozen=True)
class RunFolders:
    """Where an experiment's files are: its dense round 0, its ticket and (for a control) its own."""

    dense: Path
    ticket: Path
    control: Path | None

    @property
    def own(self) -> Path:
        return self.control or self.ticket

    def round(self, index: int) -> Path:
        """The folder of round `index` of this run (round 0 of a ticket is the dense run's)."""
        run = self.dense if index == 0 and self.control is None else self.own
        return RunStore.round_dir(run, index)

    def finished_rounds(self) -> list[int]:
        """Rounds with metrics (for a ticket, round 0 counts when its dense run has it)."""
        own = RunStore().finished_rounds(self.own)
        dense = [0] if self.control is None and (self.round(0) / "metrics.json").exists() else []
        return sorted(set(dense + own))


def made_with(device: str | torch.device = "cpu", deterministic: bool = True) -> dict[str, Any]:
    """The environment a run made here, now, is keyed by (`store.environment`: device, threads, torch)."""
    return environment(device, deterministic)


def run_folders(experiment: Experiment, store: RunStore, device: str | torch.device = "cpu",
                deterministic: bool = True, env: dict[str, Any] | None = None) -> RunFolders:
    """The experiment's folders in `store` for runs made under `env` (default: on `device`, with this
    process's threads; a sweep passes the environment its tasks report)."""
    env = {"made_with": env if env is not None else made_with(device, deterministic)}
    dense = store.folder({**experiment.dense_key(), **env}, f"t{experiment.trial}-dense", group=experiment.group)
    ticket = store.folder({**experiment.ticket_key(), **env}, experiment.ticket_name, group=experiment.group)
    control = None
    if experiment.control != "none":
        control = store.folder({**experiment.ticket_key(), **env, "control": experiment.control},
                               experiment.control, parent=ticket)
    return RunFolders(dense, ticket, control)


def load_round(experiment: Experiment, index: int, what: str, store: RunStore | None = None,
               device: str | torch.device = "cpu", deterministic: bool = True) -> dict[str, torch.Tensor]:
    """A finished round's `mask` or `trained` weights, or the run's `init` (ticket's) as tensors."""
    folders = run_folders(experiment, store or RunStore(), device, deterministic)
    if what == "init":
        return (store or RunStore()).load_tensors(folders.dense / "init.pt", device)
    if what not in ("mask", "trained"):
        raise ValueError(f"load_round reads 'init', 'mask' or 'trained'; got {what!r}.")
    return (store or RunStore()).load_tensors(folders.round(index) / f"{what}.pt", device)


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


def _train_round(experiment: Experiment, store: RunStore, folder: Path, index: int, start: Weights,
                 mask: Mask, splits: Splits, progress: RoundProgress | None, start_iteration: int = 0,
                 snapshot_at: int | None = None, cost: dict | None = None) -> Trained:
    """`rounds.train_round` with its files: the mask first, metrics.json last (it marks the round finished)."""
    store.save_tensors(folder / "mask.pt", mask)
    if progress and progress.start_round:
        progress.start_round(experiment, index, experiment.train.iterations - start_iteration)
    result = train_round(experiment, index, start, mask, splits, start_iteration=start_iteration,
                         snapshot_at=snapshot_at, progress=progress.iterations if progress else None, cost=cost)
    store.save_tensors(folder / "trained.pt", result.weights)
    store.save_json(folder / "metrics.json", result.metrics)
    if progress and progress.end_round:
        progress.end_round(experiment, result.metrics)
    return result


def run_experiment(experiment: Experiment, rounds: int, store: RunStore | None = None,
                   device: str | torch.device = "cpu", progress: RoundProgress | None = None,
                   splits: Splits | None = None, deterministic: bool = True) -> list[dict]:
    """Bring `experiment` up to `rounds` pruning rounds; return the metrics of rounds 0..N (1..N for a
    control; capped at the one-shot targets).

    Finished rounds are read from the store, never retrained; a run interrupted at any point resumes
    from its last finished round. `deterministic` is the one determinism switch (`set_deterministic`).
    """
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0; got {rounds}.")
    set_deterministic(deterministic)
    store = store or RunStore()
    device = torch.device(device)
    folders = run_folders(experiment, store, device, deterministic)
    wanted = experiment.wanted_rounds(rounds)
    rounds = wanted[-1] if wanted else 0

    def finished() -> bool:
        return all((folders.round(k) / "metrics.json").exists() for k in wanted)

    if not finished():
        splits = splits or load_splits(experiment.data, device)
        if experiment.control != "none":
            run_experiment(experiment.ticket(), rounds, store, device, progress, splits, deterministic)
            with store.lock(folders.own):
                _run_control(experiment, wanted, store, folders, device, progress, splits)
        else:
            _run_ticket(experiment, rounds, store, folders, device, progress, splits)
    return [store.load_json(folders.round(k) / "metrics.json") for k in wanted]


def _dense_round(experiment, store, folders, device, progress, splits) -> None:
    """Round 0 (and the rewind snapshot this strategy needs), under the dense run's lock."""
    dense, k = folders.dense, experiment.rewind_iteration
    with store.lock(dense):
        if not (dense / "init.pt").exists():
            store.save_tensors(dense / "init.pt", initial_weights(experiment))
        rewind_file = dense / f"rewind_{k}.pt"
        need_rewind = k is not None and not rewind_file.exists()
        finished = (RunStore.round_dir(dense, 0) / "metrics.json").exists()
        if finished and not need_rewind:
            return
        init = store.load_tensors(dense / "init.pt", device)
        if finished:  # round 0 was trained by a run that rewinds elsewhere: replay its first k iterations
            snapshot = rewind_snapshot(experiment, init, splits)
        else:
            snapshot = _train_round(experiment, store, RunStore.round_dir(dense, 0), 0, init,
                                    dense_mask(experiment, init), splits, progress, snapshot_at=k).snapshot
        if k is not None:
            store.save_tensors(rewind_file, snapshot)


def _run_ticket(experiment, rounds, store, folders, device, progress, splits) -> None:
    _dense_round(experiment, store, folders, device, progress, splits)
    if rounds == 0:
        return
    with store.lock(folders.ticket):
        init = store.load_tensors(folders.dense / "init.pt", device)
        rewind = None
        if experiment.rewind_iteration is not None:
            rewind = store.load_tensors(folders.dense / f"rewind_{experiment.rewind_iteration}.pt", device)
        for index in range(1, rounds + 1):
            if (folders.round(index) / "metrics.json").exists():
                continue
            previous = folders.round(index - 1)
            trained = store.load_tensors(previous / "trained.pt", device)
            dense = store.load_tensors(folders.round(0) / "trained.pt", device) if experiment.oneshot else None
            mask, cost = ticket_mask(experiment, index, trained, None if experiment.oneshot else
                                     Mask(store.load_tensors(previous / "mask.pt", device)), dense, init, splits)
            _train_round(experiment, store, folders.round(index), index, ticket_start(experiment, init, trained, rewind),
                         mask, splits, progress, start_iteration=experiment.start_iteration, cost=cost)
            if index >= 3:  # older trained weights are not needed again; the previous round's are kept,
                # so deleting this round's folder (what a StoreError says) can redo it
                store.discard(folders.round(index - 2) / "trained.pt")


def _run_control(experiment, wanted, store, folders, device, progress, splits) -> None:
    ticket = replace(folders, control=None)
    init = store.load_tensors(folders.dense / "init.pt", device)
    for index in wanted:
        if (folders.round(index) / "metrics.json").exists():
            continue
        mask = control_mask(experiment, index, Mask(store.load_tensors(ticket.round(index) / "mask.pt", device)),
                            init, splits)
        _train_round(experiment, store, folders.round(index), index, control_start(experiment, index, init), mask,
                     splits, progress, start_iteration=experiment.start_iteration)
        store.discard(folders.round(index - 1) / "trained.pt")  # no later round needs a control's weights
