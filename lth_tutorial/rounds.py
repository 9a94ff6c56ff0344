"""One pruning round as pure functions of tensors: no store, no files, no locks.

Owns what round k of an experiment is: its start weights (the init, a rewind snapshot, the previous
round's trained weights, or a control's fresh init), its mask (pruned from round k-1, one-shot from
round 0, or a control's from the ticket's), and training it into metrics and trained weights.
`lottery` runs these through the run store in one process; `sweep` runs the very same functions as
Ray tasks with the tensors passed as object references, so both give bitwise the same rounds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from .data import Splits
from .masks import CRITERIA, Mask, PruningRule, criterion_scores, prune_oneshot
from .models import create_model, model_weight_kinds, weight_kinds
from .pruning_at_init import prune_at_init, scoring_batch, scoring_passes
from .seeds import derive_seed
from .structured import STRUCTURES, unit_counts
from .supermask import signed_constant
from .training import Progress, train

EARLY_BIRD_THRESHOLD, EARLY_BIRD_WINDOW = 0.1, 5   # You et al.'s code: 5 masks, 4 distances, each <= 0.1
SCORING_PER_CLASS = 10  # SNIP / GraSP score on 10 examples of every class (the "missing the mark" code's snip10)

Weights = dict[str, torch.Tensor]


@dataclass
class Trained:
    """What training one round gives: its metrics, its trained weights, and the rewind snapshot asked for."""

    metrics: dict[str, Any]
    weights: Weights
    snapshot: Weights | None = None


def initial_weights(experiment, seed: int | None = None) -> Weights:
    """A fresh init of the experiment's model (the ticket's by default, a control's with its seed)."""
    seed = experiment.init_seed if seed is None else seed
    return create_model(experiment.model, seed=seed, dropout=experiment.dropout).state_dict()


def dense_mask(experiment, weights: Weights) -> Mask:
    """Round 0's mask: every prunable weight kept."""
    kinds = model_weight_kinds(experiment.model, experiment.dropout)
    return Mask.ones_like({n: weights[n] for n in kinds})


def kind_densities(mask: Mask, kinds: dict[str, str]) -> dict[str, float]:
    return {kind: mask.density([n for n in mask if kinds[n] == kind]) for kind in sorted(set(kinds.values()))}


def prunable_target(density: float, weights: Weights, kinds: dict[str, str], rule: PruningRule) -> float:
    """A one-shot target is a Pm (over all weights); the fraction of the *prunable* weights that gives it.

    Equal for LeNet and the Conv nets (every kind is pruned); for VGG/ResNet the never-pruned shortcut
    and output weights count towards the target, as in the paper's Pm.
    """
    prunable = set(rule.prunable(kinds))
    sizes = {n: weights[n].numel() for n in kinds}
    fixed = sum(v for n, v in sizes.items() if n not in prunable)
    total = sum(sizes.values())
    share = (density * total - fixed) / (total - fixed)
    if share <= 0:
        raise ValueError(f"one-shot density {density} is below the {fixed / total:.2%} of weights this rule "
                         f"never prunes; choose a larger target.")
    return share


def at_init_mask(experiment, index: int, init: Weights, splits: Splits, invert: bool = False) -> Mask:
    """Round `index`'s mask from `experiment.method` scored on the initialization, at the round's
    one-shot target (a Pm, as `prunable_target` converts it); `invert` keeps what it would prune."""
    model = create_model(experiment.model, dropout=experiment.dropout).to(splits.train.images.device)
    model.load_state_dict(init)
    kinds = weight_kinds(model)
    share = prunable_target(experiment.oneshot[index - 1], init, kinds, experiment.pruning)
    seed = derive_seed(experiment.trial, "ticket", index, "score")
    batch = scoring_batch(splits.train, SCORING_PER_CLASS, seed) if experiment.method in ("snip", "grasp") else None
    return prune_at_init(experiment.method, model, share, batch, seed=seed, invert=invert,
                         names=experiment.pruning.prunable(kinds))


def mask_cost(experiment, index: int) -> dict[str, int | None]:
    """What obtaining round `index`'s mask cost: training iterations (IMP: every earlier round) and
    scoring passes (pruning at initialization); a control's mask costs what its ticket's did."""
    t, k = experiment.train.iterations, experiment.start_iteration
    if index == 0:
        iterations, passes = 0, 0
    elif experiment.method == "early-bird":  # known once drawn: its ticket records it (`ticket_mask`)
        iterations, passes = None, 0
    elif experiment.method not in CRITERIA:
        iterations, passes = 0, scoring_passes(experiment.method)
    elif experiment.oneshot:
        iterations, passes = t, 0
    else:  # rounds 0..index-1, each after round 0 resuming at k
        iterations, passes = t + (index - 1) * (t - k), 0
    return {"mask_iterations": iterations, "scoring_passes": passes, "train_iterations": t - (k if index else 0)}


def early_bird_mask(experiment, index: int, init: Weights, splits: Splits) -> tuple[Mask, int | None]:
    """Round `index`'s early-bird mask at its one-shot target, and the iteration it was drawn at (None:
    never drawn, the mask after full dense training)."""
    from .early_bird import draw_early_bird

    kinds = model_weight_kinds(experiment.model, experiment.dropout)
    share = prunable_target(experiment.oneshot[index - 1], init, kinds, experiment.pruning)
    bird = draw_early_bird(experiment, init, splits, share, EARLY_BIRD_THRESHOLD, EARLY_BIRD_WINDOW)
    whole = {n: torch.ones_like(init[n], dtype=torch.bool) for n in kinds if n not in bird.mask}
    return Mask({**whole, **bird.mask}), bird.drawn_at


def ticket_mask(experiment, index: int, trained_previous: Weights | None, mask_previous: Mask | None,
                trained_dense: Weights | None = None, init: Weights | None = None,
                splits: Splits | None = None) -> tuple[Mask, dict[str, Any] | None]:
    """The ticket's mask of round `index` >= 1: the previous round's survivors pruned by magnitude (single
    weights or whole units, as `experiment.structure` says),
    (one-shot) the dense trained network pruned straight to the round's target, (a method at
    initialization) the init scored by that method, or (early-bird) drawn during dense training; and,
    where `mask_cost` cannot know it from the experiment alone, what the mask cost (else None)."""
    if experiment.method == "early-bird":
        mask, drawn = early_bird_mask(experiment, index, init, splits)
        spent = experiment.train.iterations if drawn is None else drawn
        return mask, {**mask_cost(experiment, index), "mask_iterations": spent, "early_bird_iteration": drawn}
    if experiment.method not in CRITERIA:
        return at_init_mask(experiment, index, init, splits), None
    kinds = model_weight_kinds(experiment.model, experiment.dropout)
    base = trained_dense if experiment.oneshot and trained_dense is not None else trained_previous
    scores, score = {n: base[n] for n in kinds}, torch.abs
    if experiment.method != "magnitude":  # Zhou et al.'s criteria compare the trained weights with the init
        scores, score = criterion_scores(experiment.method, init, base, list(kinds))
    if experiment.oneshot:
        share = prunable_target(experiment.oneshot[index - 1], base, kinds, experiment.pruning)
        return prune_oneshot(scores, kinds, experiment.pruning, share, score), None
    prune = STRUCTURES[experiment.structure].prune
    return prune(scores, Mask(mask_previous), kinds, experiment.pruning, score), None


def ticket_start(experiment, init: Weights, trained_previous: Weights | None, rewind: Weights | None) -> Weights:
    """Where a ticket round starts, by strategy: the init, the previous trained weights, or iteration K."""
    if experiment.strategy == "reset":
        return init
    if experiment.strategy == "continue":
        return trained_previous
    return rewind


def control_mask(experiment, index: int, ticket_mask_of_round: Mask, init: Weights | None = None,
                 splits: Splits | None = None) -> Mask:
    """A control's mask of round `index`: the ticket's own (`reinit`), one at random positions with its
    per-layer counts of weights or units (`random`, and `shuffle`, the same draw), or the method's
    inverted scores (`invert`)."""
    if experiment.control in ("random", "shuffle"):
        random_like = STRUCTURES[experiment.structure].random_like
        return random_like(Mask(ticket_mask_of_round), model_weight_kinds(experiment.model, experiment.dropout),
                           experiment.control_seed(index, "mask"))
    if experiment.control == "invert":
        return at_init_mask(experiment, index, init, splits, invert=True)
    return Mask(ticket_mask_of_round)


def control_start(experiment, index: int, init: Weights | None = None) -> Weights:
    """A control's start: a fresh init of its own per trial and round (`reinit`, `random`), the ticket's
    init (`shuffle`, `invert`: "missing the mark" changes only the mask), or (the sign controls) the
    ticket's init with its magnitudes or its signs replaced; biases are the ticket's in every sign control."""
    if experiment.control in ("shuffle", "invert"):
        return init
    if experiment.control == "signed-constant":
        return signed_constant(init, list(model_weight_kinds(experiment.model, experiment.dropout)))
    fresh = initial_weights(experiment, experiment.control_seed(index, "init"))
    if experiment.control not in ("signed-reinit", "random-signs"):
        return fresh
    start = dict(init)
    for name in model_weight_kinds(experiment.model, experiment.dropout):
        w = init[name]
        if experiment.control == "signed-reinit":  # the original signs on a fresh draw's magnitudes
            start[name] = torch.sign(w) * fresh[name].to(w.device).abs()
        else:  # the original magnitudes, each sign a fair coin (the fresh init's signs are exactly that)
            start[name] = w.abs() * torch.sign(fresh[name].to(w.device))
    return start


def train_round(experiment, index: int, start: Weights, mask: Mask, splits: Splits, *, start_iteration: int = 0,
                snapshot_at: int | None = None, progress: Progress | None = None,
                cost: dict[str, Any] | None = None) -> Trained:
    """Train round `index` from `start` under `mask` with the experiment's data order; `cost` (what the
    mask cost) defaults to `mask_cost`."""
    device = splits.train.images.device
    model = create_model(experiment.model, dropout=experiment.dropout).to(device)
    model.load_state_dict(start)
    kinds = weight_kinds(model)
    started = time.perf_counter()
    metrics, snapshot = train(model, mask, splits, experiment.train, seed=experiment.data_seed,
                              augment=experiment.data.augment, snapshot_at=snapshot_at,
                              start_iteration=start_iteration, progress=progress)
    metrics = {"round": index, "density": mask.density(), "kind_density": kind_densities(mask, kinds),
               "start_iteration": start_iteration, **(cost or mask_cost(experiment, index)), "seconds": round(time.perf_counter() - started, 2),
               "device": str(device), "layer_density": mask.layer_densities(),
               **({"units": unit_counts(mask)} if experiment.structure == "units" else {}), **metrics}
    return Trained(metrics, model.state_dict(), snapshot)


def rewind_snapshot(experiment, init: Weights, splits: Splits) -> Weights:
    """The dense network's weights after K = `experiment.rewind_iteration` iterations of round 0.

    Replays round 0's first K iterations (same seed, same order: bitwise the weights a full round 0
    passes through) for a dense run that was trained without this snapshot.
    """
    k = experiment.rewind_iteration
    short = replace(experiment, strategy="reset", train=replace(experiment.train, iterations=max(k, 1),
                                                                  eval_every=max(k, 1), report_at=()))
    return train_round(short, 0, init, dense_mask(experiment, init), splits, snapshot_at=k).snapshot
