"""Structured pruning: whole hidden units (LeNet's neurons, the Conv nets' filters) instead of single weights.

Owns: which units of a mask are alive (`alive_units`, `unit_counts`), the per-weight mask a set of alive
units implies (`units_mask`: a removed unit loses its incoming row or filter AND its outgoing column or
input channel in the next layer; after the last conv, the H*W flattened columns of each removed
channel), the unit scores (`unit_scores`), one round of structured IMP (`prune_units`), its random
control (`random_units_like`), `STRUCTURES` (what `Experiment.structure` selects: the prune and random
functions of each), and `compact_model`, a structured ticket materialized as a genuinely smaller network.

A unit's score is the L1 norm of its surviving incoming weights: Li et al. (2017)'s filter score,
used for neurons too (the issue asks only for "a norm"; L1 keeps one rule for both kinds). Scores use
the masked weights, so kernels of channels removed in earlier rounds no longer count (the "greedy"
sums a secondary summary attributes to Li et al.); within a round, every layer is scored on the
previous round's mask, independently of what the other layers lose in it.
Each round removes round(rate * alive units) of each layer, the rate being its kind's rate in the
`PruningRule` (conv or fc), ties broken by position as in `masks`; never the last unit of a layer.
The 10 output units are the classes and are never removed; the output layer only loses the columns
of removed fc units. Only the sequential nets (LeNet, Conv-2/4/6) are supported: VGG's batch norm and
ResNet's shortcuts would need channels removed across branches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .masks import Mask, PruningRule, Score, _drop_smallest, prune_magnitude, random_mask_like
from .models import MODELS, create_model, weight_kinds

STRUCTURED_MODELS = ("lenet", "conv2", "conv4", "conv6")
UNIT_KINDS = ("conv", "fc")   # kinds whose units may be removed; "output" units never are


def check_structure(structure: str, model: str, *, method: str, oneshot: tuple[float, ...], scope: str) -> None:
    """Refuse, in one line, a structure that does not exist or a run it cannot make."""
    if structure not in STRUCTURES:
        raise ValueError(f"unknown structure {structure!r}; choose one of {', '.join(STRUCTURES)}.")
    if structure == "weights":
        return
    if model not in STRUCTURED_MODELS:
        raise ValueError(f"structured pruning removes neurons or filters of {', '.join(STRUCTURED_MODELS)}; "
                         f"{model} is not supported: use --structure weights.")
    if method != "magnitude" or oneshot:
        raise ValueError("structured pruning is iterative magnitude pruning of units (L1 norm): drop "
                         "--method and --oneshot, or use --structure weights.")
    if scope != "layerwise":
        raise ValueError("structured pruning ranks the units of each layer on their own: drop --scope global.")


def _links(kinds: dict[str, str], like: Mask) -> list[tuple[str, int]]:
    """(name, group) per layer in forward order: each unit of the previous layer feeds `group`
    consecutive inputs of this one (1, or H*W where the last conv is flattened into the first fc)."""
    links, previous = [], None
    for name, kind in kinds.items():
        if kind not in (*UNIT_KINDS, "output"):
            raise ValueError(f"structured pruning handles conv, fc and output layers; {name} is {kind} "
                             f"(only {', '.join(STRUCTURED_MODELS)} are supported).")
        shape = like[name].shape
        if previous is None:
            links.append((name, 1))
        else:
            units, inputs = like[previous].shape[0], shape[1]
            if inputs % units or (len(shape) == 4 and inputs != units):
                raise ValueError(f"{name} takes {inputs} inputs, which {previous}'s {units} units cannot feed; "
                                 f"structured pruning needs a sequential net ({', '.join(STRUCTURED_MODELS)}).")
            links.append((name, inputs // units))
        previous = name
    return links


def alive_units(mask: Mask) -> dict[str, torch.Tensor]:
    """Per layer, which of its units (rows of a linear weight, filters of a conv) keep an incoming weight."""
    return {name: m.flatten(1).any(1) for name, m in mask.items()}


def unit_counts(mask: Mask) -> dict[str, int]:
    """Per layer, how many of its units are alive."""
    return {name: int(alive.sum()) for name, alive in alive_units(mask).items()}


def units_mask(alive: dict[str, torch.Tensor], kinds: dict[str, str], like: Mask) -> Mask:
    """The per-weight mask in which exactly the `alive` units survive: a weight is kept iff its unit is
    alive and so is the unit (of the previous layer) feeding its input. The first layer's inputs (the
    pixels) are always kept; shapes and devices are `like`'s."""
    new, feeding = Mask(), None
    for name, group in _links(kinds, like):
        shape = like[name].shape
        rows = alive[name].to(torch.bool).cpu()
        cols = torch.ones(shape[1], dtype=torch.bool) if feeding is None else feeding.repeat_interleave(group)
        keep = rows[:, None] & cols[None, :]
        new[name] = keep.view(*keep.shape, *([1] * (len(shape) - 2))).expand(shape).clone().to(like[name].device)
        feeding = rows
    return new


def check_structured(mask: Mask, kinds: dict[str, str]) -> None:
    """Refuse a mask that is not whole units (e.g. an unstructured ticket's): one line that says so."""
    if any(not torch.equal(a.cpu(), b.cpu()) for a, b in
           zip(mask.values(), units_mask(alive_units(mask), kinds, mask).values())):
        raise ValueError("the mask does not remove whole units (rows/filters and their outgoing columns); "
                         "only a structured ticket (structure='units') becomes a compact model.")


def unit_scores(weights: dict[str, torch.Tensor], mask: Mask, score: Score = torch.abs) -> dict[str, torch.Tensor]:
    """Per layer, each unit's score: the sum of `score` over its surviving incoming weights (with
    `torch.abs`, the L1 norm of its row or filter, Li et al.'s score)."""
    return {name: (score(weights[name].detach()) * m.to(weights[name].device)).flatten(1).sum(1).cpu()
            for name, m in mask.items()}


def prune_units(weights: dict[str, torch.Tensor], mask: Mask, kinds: dict[str, str], rule: PruningRule,
                score: Score = torch.abs) -> Mask:
    """One round of structured IMP: each conv or fc layer loses round(rate * alive units) of its
    lowest-scoring alive units (at its kind's rate in `rule`, never its last one), with their weights in
    the next layer; output units stay. The same signature as `masks.prune_magnitude`."""
    if rule.scope != "layerwise":
        raise ValueError("structured pruning ranks the units of each layer on their own; use scope layerwise.")
    scores, alive = unit_scores(weights, mask, score), alive_units(mask)
    kept = {}
    for name, kind in kinds.items():
        units = alive[name].cpu()
        count = round(rule.rate(kind) * int(units.sum())) if kind in UNIT_KINDS else 0
        kept[name] = _drop_smallest(scores[name], units, min(count, int(units.sum()) - 1))
    return units_mask(kept, kinds, mask)


def random_units_like(mask: Mask, kinds: dict[str, str], seed: int) -> Mask:
    """The random control of a structured ticket: per layer the same number of alive units, drawn at
    random positions (output units all kept), with the weights that implies."""
    rng = torch.Generator().manual_seed(seed)
    alive = {}
    for name, count in unit_counts(mask).items():
        units = mask[name].shape[0]
        flags = torch.zeros(units, dtype=torch.bool)
        flags[torch.randperm(units, generator=rng)[:count]] = True   # output layers: count == units, all kept
        alive[name] = flags
    return units_mask(alive, kinds, mask)


@dataclass(frozen=True)
class Structure:
    """What a run prunes: the IMP step `(weights, mask, kinds, rule, score) -> mask` and the random
    control's mask `(ticket mask, kinds, seed) -> mask`."""

    prune: Callable[..., Mask]
    random_like: Callable[[Mask, dict[str, str], int], Mask]


STRUCTURES: dict[str, Structure] = {
    "weights": Structure(prune_magnitude, lambda mask, kinds, seed: random_mask_like(mask, seed)),
    "units": Structure(prune_units, random_units_like),
}


class CompactNet(nn.Module):
    """A structured ticket as a small dense net: `features` (convs, ReLU, pooling; empty for LeNet), then
    the flattened `fc` stack, with the layer names of the model it came from (its state_dict keys match)."""

    def __init__(self, features: nn.Sequential, fc: nn.Sequential, description: str):
        super().__init__()
        self.features, self.fc = features, fc
        self.description = description

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))

    def extra_repr(self) -> str:
        return self.description


def _shrunk(layer: nn.Module, rows: torch.Tensor, cols: torch.Tensor, weight: torch.Tensor,
            bias: torch.Tensor | None) -> nn.Module:
    weight = weight[rows][:, cols].detach().clone()
    if isinstance(layer, nn.Conv2d):
        new = nn.Conv2d(weight.shape[1], weight.shape[0], layer.kernel_size, layer.stride, layer.padding,
                        bias=bias is not None)
    else:
        new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    new.weight = nn.Parameter(weight)
    if bias is not None:
        new.bias = nn.Parameter(bias[rows].detach().clone())
    return new


def compact_model(model_name: str, weights: dict[str, torch.Tensor], mask: Mask, dropout: float = 0.0) -> CompactNet:
    """Model `model_name` with `weights` (a state_dict) under the structured `mask`, rebuilt with only
    its alive units, on the CPU: the same function (up to float summation order), fewer conv channels
    and fc units, built from torch layers only (so `torch.export` and `torch.load(weights_only=True)`
    take it). Its `description` names the widths kept."""
    if model_name not in STRUCTURED_MODELS:
        raise ValueError(f"compact models are built for {', '.join(STRUCTURED_MODELS)}; {model_name} is not "
                         f"a sequential net of whole units.")
    with torch.device("meta"):
        reference = create_model(model_name, dropout=dropout)
    kinds = weight_kinds(reference)
    if set(mask) != set(kinds):
        raise ValueError(f"the mask covers {sorted(mask)}, not {model_name}'s weights {sorted(kinds)}.")
    check_structured(mask, kinds)
    alive = {name: rows.cpu() for name, rows in alive_units(mask).items()}
    columns, feeding = {}, None
    for name, group in _links(kinds, mask):
        columns[name] = (torch.ones(mask[name].shape[1], dtype=torch.bool) if feeding is None
                         else feeding.repeat_interleave(group))
        feeding = alive[name]
    parts = {}
    for part in ("features", "fc"):
        layers = []
        for child, module in (getattr(reference, part, nn.Sequential())).named_children():
            name = f"{part}.{child}.weight"
            if name in kinds:
                w = weights[name].detach().cpu() * mask[name].cpu()
                bias = weights.get(f"{part}.{child}.bias")
                module = _shrunk(module, alive[name], columns[name], w, None if bias is None else bias.cpu())
            layers.append(module if name in kinds else type(module)(**_arguments(module)))
        parts[part] = nn.Sequential(*layers)
    full = [mask[n].shape[0] for n in kinds]
    kept = [int(alive[n].sum()) for n in kinds]
    description = (f"{MODELS[model_name][2]} compact: units {'-'.join(map(str, kept))} of "
                   f"{'-'.join(map(str, full))}")
    return CompactNet(parts["features"], parts["fc"], description)


def _arguments(module: nn.Module) -> dict:
    """What rebuilds a parameter-free layer (ReLU, MaxPool2d, Dropout) off the meta device."""
    if isinstance(module, nn.MaxPool2d):
        return {"kernel_size": module.kernel_size, "stride": module.stride}
    if isinstance(module, nn.Dropout):
        return {"p": module.p}
    if isinstance(module, nn.ReLU):
        return {}
    raise ValueError(f"compact_model cannot rebuild a {type(module).__name__} layer.")
