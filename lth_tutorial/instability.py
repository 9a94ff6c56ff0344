"""Instability analysis: linear mode connectivity of two copies trained from one start (Frankle, Dziugaite,
Roy, Carbin, ICML 2020).

Owns: the error along the straight line between two networks (`error_path`), the barrier as the paper
defines it (`barrier`), the start point and mask of an analysis (`instability_inputs`), the two copies
(`analyze`), and `run_instability`, which does it for a run's round through the run store, as a branch
under the ticket (like a control: resumable, cached, keyed by what changes its result).

The paper's procedure (facts: ../shared/followups-facts.md section 1):
  - from W_k (the init for k = 0, else the dense network's weights after k iterations), under the
    round's mask m, train two copies A^{k->T}(m * W_k, u1) and A^{k->T}(m * W_k, u2) whose SGD noise u
    (data order, augmentation, dropout) is drawn independently; the lr schedule continues from k and the
    optimizer starts fresh at k (as open_lth does, and as our rewinding does);
  - E_alpha = test error of alpha W1 + (1 - alpha) W2 at 30 evenly spaced alpha in [0, 1];
  - the barrier (instability) is sup_alpha E_alpha - (E(W1) + E(W2)) / 2; stable means below 2%.
A ticket and its controls share u1 and u2 (`seeds`), so they differ only in where they start. Choices
where the sheet leaves room: train error is measured on the first `TRAIN_EXAMPLES` training examples;
BatchNorm buffers (VGG/ResNet) are interpolated like the weights; the copies are evaluated only at T
(the path needs the endpoints, not the early-stopping iteration). The L2 distance between the copies'
weights is stored too: "Stabilizing the LTH"'s stability to data order (Frankle et al. 2019, Fig. 3).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from .data import Split, Splits, load_splits
from .lottery import Experiment, made_with, run_experiment, run_folders
from .masks import Mask
from .models import create_model
from .rounds import Weights, control_mask, control_start, dense_mask
from .seeds import derive_seed, stream_seed
from .store import RunStore
from .training import evaluate, set_deterministic, train

POINTS = 30             # the paper's evenly spaced alphas
STABLE = 0.02           # the paper's threshold on the test-error barrier
TRAIN_EXAMPLES = 10_000  # training examples the train-error path is measured on


def alphas(points: int = POINTS) -> list[float]:
    return torch.linspace(0, 1, points, dtype=torch.float64).tolist()


def interpolate(a: Weights, b: Weights, alpha: float) -> Weights:
    """alpha * a + (1 - alpha) * b for every floating tensor (weights, biases, BatchNorm buffers); others a's."""
    return {n: alpha * a[n] + (1 - alpha) * b[n] if a[n].is_floating_point() else a[n] for n in a}


@torch.no_grad()
def error_path(model: nn.Module, a: Weights, b: Weights, split: Split, points: int = POINTS,
               precision: str = "fp32") -> list[float]:
    """Classification error of `model` with alpha * a + (1 - alpha) * b, alpha = 0 .. 1 (`alphas`),
    evaluated in `precision` (the copies' training's)."""
    errors = []
    for alpha in alphas(points):
        model.load_state_dict(interpolate(a, b, alpha))
        errors.append(1 - evaluate(model, split, precision=precision)[1])
    return torch.stack(errors).tolist()  # one sync for the whole path


def line(m: dict[str, Any]) -> str:
    """One analysis in a line, as the CLI and sweeps print it."""
    who = "ticket" if m["control"] == "none" else m["control"]
    return (f"trial {m['trial']} {who} round {m['round']}: Pm {m['density']:.2%}, k = {m['start_iteration']}, "
            f"barrier {m['barrier']:.2%} (train {m['train_barrier']:.2%}), endpoints "
            f"{m['endpoint_test_error'][0]:.2%} / {m['endpoint_test_error'][1]:.2%} error, distance {m['distance']:.1f}")


def barrier(errors: list[float]) -> float:
    """The paper's error barrier height: the path's highest error minus the mean of its endpoints'."""
    if len(errors) < 2:
        raise ValueError("a path needs at least its two endpoints.")
    return max(errors) - (errors[0] + errors[-1]) / 2


def distance(a: Weights, b: Weights, mask: Mask) -> float:
    """L2 distance between the masked weights of two networks (pruned weights are zero in both)."""
    return float(torch.sqrt(sum(((a[n] - b[n]) ** 2).sum() for n in mask)))


@dataclass(frozen=True)
class Instability:
    """One analysis: round `round` of `experiment` (a ticket, or a control for its mask and start), from
    iteration k = the ticket's start (0 for reset, K for rewind:K; round 0 is the dense network at k)."""

    experiment: Experiment
    round: int
    points: int = POINTS

    def __post_init__(self):
        if self.experiment.strategy == "continue":
            raise ValueError("instability needs a start point to train two copies from; the continue strategy "
                             "has none (use reset or rewind:K).")
        if self.round < 0 or (self.round == 0 and self.experiment.control != "none"):
            raise ValueError(f"round must be >= 0, and >= 1 for a control (round 0 is dense); got {self.round}.")
        if self.experiment.max_rounds is not None and self.round > self.experiment.max_rounds:
            raise ValueError(f"round {self.round} is past the run's {self.experiment.max_rounds} one-shot targets.")
        if self.points < 2:
            raise ValueError(f"points must be >= 2 (the endpoints); got {self.points}.")

    @property
    def start_iteration(self) -> int:
        return self.experiment.rewind_iteration or 0

    @property
    def seeds(self) -> tuple[int, int]:
        """The two copies' data orders (and dropout), shared by a ticket and its controls."""
        base = derive_seed(self.experiment.trial, "instability", self.round, "data")
        return stream_seed(base, 0), stream_seed(base, 1)

    def key(self) -> dict[str, Any]:
        return {"round": self.round, "points": self.points, "train_examples": TRAIN_EXAMPLES}

    @property
    def name(self) -> str:
        return f"instability-{self.experiment.control}-r{self.round}"


def instability_inputs(analysis: Instability, init: Weights, rewind: Weights | None, ticket_mask: Mask | None,
                       splits: Splits | None = None) -> tuple[Weights, Mask]:
    """(start weights, mask) of an analysis: round 0's dense network at k, the ticket's round (reset to the
    init or rewound to k), or a control's own start and mask from the ticket's."""
    exp, k = analysis.experiment, analysis.experiment.rewind_iteration
    start = init if k is None else rewind
    if analysis.round == 0:
        return start, dense_mask(exp, init)
    if exp.control == "none":
        return start, Mask(ticket_mask)
    return control_start(exp, analysis.round, init), control_mask(exp, analysis.round, Mask(ticket_mask), init, splits)


def train_copy(analysis: Instability, start: Weights, mask: Mask, splits: Splits, copy: int,
               progress=None) -> Weights:
    """Copy 0 or 1: trained from `start` under `mask` from iteration k to T with its own data order."""
    exp = analysis.experiment
    model = create_model(exp.model, dropout=exp.dropout).to(splits.train.images.device)
    model.load_state_dict(start)
    config = replace(exp.train, eval_every=exp.train.iterations, report_at=())  # the endpoint is all the path needs
    train(model, mask, splits, config, seed=analysis.seeds[copy], augment=exp.data.augment,
          start_iteration=analysis.start_iteration, progress=progress)
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


def measure(analysis: Instability, copies: tuple[Weights, Weights], mask: Mask, splits: Splits) -> dict[str, Any]:
    """The paths between the two copies (test, and train on its first examples), their barriers, distance."""
    exp = analysis.experiment
    model = create_model(exp.model, dropout=exp.dropout).to(splits.train.images.device)
    train_part = Split(splits.train.images[:TRAIN_EXAMPLES], splits.train.labels[:TRAIN_EXAMPLES], None)
    test = error_path(model, copies[0], copies[1], splits.test, analysis.points, exp.train.precision)
    trained = error_path(model, copies[0], copies[1], train_part, analysis.points, exp.train.precision)
    return {"round": analysis.round, "control": exp.control, "trial": exp.trial, "density": mask.density(),
            "start_iteration": analysis.start_iteration, "alphas": alphas(analysis.points),
            "test_error": test, "train_error": trained, "barrier": barrier(test), "train_barrier": barrier(trained),
            "endpoint_test_error": [test[-1], test[0]], "distance": distance(copies[0], copies[1], mask),
            "stable": barrier(test) < STABLE}


def analyze(analysis: Instability, start: Weights, mask: Mask, splits: Splits, progress=None) -> dict[str, Any]:
    """Train both copies and measure them (no store): what a sweep task runs."""
    copies = tuple(train_copy(analysis, start, mask, splits, c, progress) for c in (0, 1))
    return measure(analysis, copies, mask, splits)


def analysis_folder(analysis: Instability, store: RunStore, device="cpu", deterministic: bool = True,
                    env: dict[str, Any] | None = None):
    """Its folder: a branch under the ticket's, keyed by the ticket, the environment (this process's, or
    the one a sweep's tasks report), the control and itself; and the ticket's folders."""
    exp = analysis.experiment
    folders = run_folders(exp.ticket(), store, device, deterministic, env)
    key = {**exp.ticket_key(), "made_with": env if env is not None else made_with(device, deterministic),
           "control": exp.control, "instability": analysis.key()}
    return store.folder(key, analysis.name, parent=folders.ticket), folders


def run_instability(analysis: Instability, store: RunStore | None = None, device: str | torch.device = "cpu",
                    progress=None, splits: Splits | None = None, deterministic: bool = True) -> dict[str, Any]:
    """The analysis's metrics, from the store or made now (after bringing its ticket up to its round).

    Each copy is saved as it finishes and the metrics last, under the branch's lock, so an interrupted
    analysis resumes with the copy it lacks and two processes never train the same copy.
    """
    set_deterministic(deterministic)
    store, device = store or RunStore(), torch.device(device)
    folder, folders = analysis_folder(analysis, store, device, deterministic)
    if (folder / "metrics.json").exists():
        return store.load_json(folder / "metrics.json")
    exp, k = analysis.experiment, analysis.experiment.rewind_iteration
    splits = splits or load_splits(exp.data, device)
    run_experiment(exp.ticket(), analysis.round, store, device, splits=splits, deterministic=deterministic)
    with store.lock(folder):
        if (folder / "metrics.json").exists():
            return store.load_json(folder / "metrics.json")
        init = store.load_tensors(folders.dense / "init.pt", device)
        rewind = store.load_tensors(folders.dense / f"rewind_{k}.pt", device) if k is not None else None
        ticket_mask = (Mask(store.load_tensors(folders.round(analysis.round) / "mask.pt", device))
                       if analysis.round else None)
        start, mask = instability_inputs(analysis, init, rewind, ticket_mask, splits)
        copies = []
        for c in (0, 1):
            path = folder / f"copy_{c}.pt"
            if not path.exists():
                store.save_tensors(path, train_copy(analysis, start, mask, splits, c, progress))
            copies.append(store.load_tensors(path, device))
        metrics = measure(analysis, tuple(copies), mask, splits)
        store.save_json(folder / "metrics.json", metrics)
    return metrics
