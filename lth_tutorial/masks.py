"""Masks and the pruning rules that make them.

Owns: `Mask` (a plain mapping of weight name -> bool tensor, True = the weight survives), `PruningRule`
(per-kind rates, layer-wise or global, as data), and pruning strategies written as pure functions
`(weights, mask, ...) -> new mask`: magnitude pruning layer-wise or global, one-shot pruning to a target
density, and the random-sparsity control; and `CRITERIA`, the scores Zhou et al. (2019) rank by instead
of the trained magnitude (each strategy takes `score`, the function that turns a tensor into its ranks).
Pruning only ever removes survivors, so a pruned weight never comes back. Counts are exact: pruning p of n survivors removes round(p * n) of them (Python's round, as
torch.nn.utils.prune does); ties in magnitude are broken by position (lower flat index goes first).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .models import KINDS


class Mask(dict):
    """name -> bool tensor; True marks a surviving weight."""

    @classmethod
    def ones_like(cls, weights: dict[str, torch.Tensor]) -> "Mask":
        return cls({name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()})

    def surviving(self) -> int:
        return int(sum(int(m.sum()) for m in self.values()))

    def total(self) -> int:
        return sum(m.numel() for m in self.values())

    def density(self, names: list[str] | None = None) -> float:
        """Fraction of the weights (of `names`, default all) that survive."""
        names = list(self) if names is None else names
        return sum(int(self[n].sum()) for n in names) / sum(self[n].numel() for n in names)

    def layer_densities(self) -> dict[str, float]:
        return {name: float(m.float().mean()) for name, m in self.items()}

    def to(self, device: torch.device | str) -> "Mask":
        return Mask({name: m.to(device) for name, m in self.items()})


@dataclass(frozen=True)
class PruningRule:
    """How much of the surviving weights each round removes, per layer kind (0 = never pruned).

    `scope="layerwise"` prunes each tensor on its own at its kind's rate (LeNet, Conv nets).
    `scope="global"` ranks all tensors of the kinds with a non-zero rate together under one threshold
    (VGG, ResNet); those kinds must then share one rate.
    """

    rates: dict[str, float] = field(default_factory=dict)
    scope: str = "layerwise"

    def __post_init__(self):
        for kind, rate in self.rates.items():
            if kind not in KINDS:
                raise ValueError(f"unknown layer kind {kind!r}; kinds are {', '.join(KINDS)}.")
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"pruning rate for {kind} must be in [0, 1); got {rate}.")
        if self.scope not in ("layerwise", "global"):
            raise ValueError(f"scope must be 'layerwise' or 'global'; got {self.scope!r}.")
        if self.scope == "global" and len({r for r in self.rates.values() if r > 0}) > 1:
            raise ValueError("global pruning ranks all pruned kinds together, so they need one rate.")

    def __hash__(self):  # frozen dataclass with a dict field: hash by content
        return hash((tuple(sorted(self.rates.items())), self.scope))

    def rate(self, kind: str) -> float:
        return self.rates.get(kind, 0.0)

    def prunable(self, kinds: dict[str, str]) -> list[str]:
        """Names of the tensors this rule prunes."""
        return [name for name, kind in kinds.items() if self.rate(kind) > 0]


def _drop_smallest(scores: torch.Tensor, alive: torch.Tensor, count: int) -> torch.Tensor:
    """New alive flags (flat) with the `count` lowest-scoring survivors removed; ties by position."""
    alive = alive.clone()
    if count <= 0:
        return alive
    candidates = alive.nonzero().flatten()
    order = torch.argsort(scores[candidates], stable=True)
    alive[candidates[order[:count]]] = False
    return alive


Score = Callable[[torch.Tensor], torch.Tensor]


def prune_layerwise(weights: dict[str, torch.Tensor], mask: Mask, rates: dict[str, float],
                    score: Score = torch.abs) -> Mask:
    """Each tensor on its own: remove round(rate * survivors) of its lowest-scoring (smallest-magnitude) survivors."""
    new = Mask(mask)
    for name, rate in rates.items():
        alive = mask[name].flatten()
        count = round(rate * int(alive.sum()))
        new[name] = _drop_smallest(score(weights[name].detach()).flatten().cpu(), alive.cpu(), count) \
            .to(mask[name].device).view_as(mask[name])
    return new


def prune_global(weights: dict[str, torch.Tensor], mask: Mask, rate: float, names: list[str],
                 score: Score = torch.abs) -> Mask:
    """One threshold across `names`: remove round(rate * survivors) of their lowest-scoring survivors."""
    scores = torch.cat([score(weights[n].detach()).flatten().cpu() for n in names])
    alive = torch.cat([mask[n].flatten().cpu() for n in names])
    alive = _drop_smallest(scores, alive, round(rate * int(alive.sum())))
    new, start = Mask(mask), 0
    for n in names:
        size = mask[n].numel()
        new[n] = alive[start:start + size].to(mask[n].device).view_as(mask[n])
        start += size
    return new


def prune_magnitude(weights: dict[str, torch.Tensor], mask: Mask, kinds: dict[str, str],
                    rule: PruningRule, score: Score = torch.abs) -> Mask:
    """One round of magnitude pruning under `rule` (the IMP step)."""
    names = rule.prunable(kinds)
    if rule.scope == "global":
        return prune_global(weights, mask, rule.rate(kinds[names[0]]), names, score) if names else Mask(mask)
    return prune_layerwise(weights, mask, {n: rule.rate(kinds[n]) for n in names}, score)


def ladder_density(rule: PruningRule, kinds: dict[str, str], sizes: dict[str, int], rounds: float) -> float:
    """Overall density of the prunable weights after `rounds` rounds of `rule` from dense."""
    names = rule.prunable(kinds)
    kept = sum(sizes[n] * (1 - rule.rate(kinds[n])) ** rounds for n in names)
    return kept / sum(sizes[n] for n in names)


def ladder_pm(rule: PruningRule, kinds: dict[str, str], sizes: dict[str, int], rounds: float) -> float:
    """The paper's Pm after `rounds` rounds of `rule` from dense: the fraction of *all* weights left,
    kinds the rule never prunes (shortcuts, VGG/ResNet outputs) counted whole. This is the axis our
    rounds' `density` and the paper's figures use; `ladder_density` is the pruned pool's own fraction."""
    kept = sum(sizes[n] * (1 - rule.rate(kind)) ** rounds for n, kind in kinds.items())
    return kept / sum(sizes[n] for n in kinds)


def prune_oneshot(weights: dict[str, torch.Tensor], kinds: dict[str, str], rule: PruningRule,
                  density: float, score: Score = torch.abs) -> Mask:
    """From dense straight to `density` of the prunable weights, in one magnitude step.

    The per-layer densities follow `rule`'s ladder (so one-shot and iterative agree layer by layer at the
    same overall density): find the real number of rounds k with that overall density, then keep
    (1 - rate)^k of each tensor (layer-wise) or of the pool (global).
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"one-shot density must be in (0, 1]; got {density}.")
    sizes = {n: w.numel() for n, w in weights.items()}
    low, high = 0.0, 1.0
    while ladder_density(rule, kinds, sizes, high) > density:
        high *= 2
    for _ in range(100):  # bisection on a monotone function
        mid = (low + high) / 2
        low, high = (mid, high) if ladder_density(rule, kinds, sizes, mid) > density else (low, mid)
    rounds = high
    dense = Mask.ones_like(weights)
    names = rule.prunable(kinds)
    if rule.scope == "global":
        return prune_global(weights, dense, 1 - density, names, score) if names else dense
    return prune_layerwise(weights, dense, {n: 1 - (1 - rule.rate(kinds[n])) ** rounds for n in names}, score)


def random_mask_like(mask: Mask, seed: int) -> Mask:
    """The random-sparsity control: per tensor, the same number of survivors at random positions."""
    rng = torch.Generator().manual_seed(seed)
    new = Mask()
    for name, m in mask.items():
        keep = int(m.sum())
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[torch.randperm(m.numel(), generator=rng)[:keep]] = True
        new[name] = flat.view_as(m).to(m.device)
    return new


def _identity(scores: torch.Tensor) -> torch.Tensor:
    return scores


# Zhou et al. (2019)'s mask criteria: a score per weight from its initial and trained values, higher kept.
# `magnitude` is their large_final, the paper's; the others are ranked the same way (`criterion_scores`).
CRITERIA: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "magnitude": lambda init, final: final.abs(),
    "large-init": lambda init, final: init.abs(),
    "magnitude-increase": lambda init, final: final.abs() - init.abs(),
    "movement": lambda init, final: (final - init).abs(),
}


def criterion_scores(criterion: str, init: dict[str, torch.Tensor], trained: dict[str, torch.Tensor],
                     names: list[str]) -> tuple[dict[str, torch.Tensor], Score]:
    """The criterion's scores of `names` and the `score` to rank them by (as they are: they are scores)."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown mask criterion {criterion!r}; choose one of {', '.join(CRITERIA)}.")
    rank = CRITERIA[criterion]
    return {n: rank(init[n].detach().to(trained[n].device), trained[n].detach()) for n in names}, _identity
