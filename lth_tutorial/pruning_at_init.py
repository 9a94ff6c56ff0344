"""Pruning at initialization: scoring functions as data, and the masks they give.

Owns `METHODS` (name -> a pure scoring function `(model, batch, seed) -> {weight name: score}`, higher
score = kept), `scoring_batch` (the class-balanced examples SNIP and GraSP score on), `prune_at_init`
(scores -> a mask at a target density: one-shot, or SynFlow's iterative schedule), and the "missing the
mark" ablations that act on scores (`inverted`); the layer-wise shuffle is `masks.random_mask_like`.
Facts and the choices made where the papers leave room: `../shared/followups-facts.md` sections 4-7.

  - `magnitude-init`  |w| at initialization.
  - `random`          uniform scores from the seed (a random mask of the target density).
  - `snip`            |w * dL/dw| on one class-balanced batch, eval mode (Lee et al. 2019; SNIP's own
                      code scores with is_train=False).
  - `grasp`           GraSP removes the weights with the HIGHEST S = -w * (H g), g = dL/dw and H the
                      Hessian, both of the loss of logits / T with T = 200 (Wang et al. 2020, their
                      code); as a keep-score that is -S = w * (H g). g and Hg come from the same batch
                      (as "missing the mark"'s code), the model in train mode as GraSP's code leaves it.
  - `synflow`         S = dR/dw * w with R = 1^T (prod_l |W_l|) 1, evaluated in float64 with every
                      parameter replaced by its absolute value and an all-ones input (Tanaka et al.
                      2020), iterated 100 times on the exponential schedule density^(k/100), pruned
                      weights scoring 0, eval mode.
Every method ranks globally over all prunable weights (conv and linear, output included), as the
three papers and "missing the mark" do.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .data import Split
from .masks import Mask, _drop_smallest
from .models import weight_kinds

Scores = dict[str, torch.Tensor]
GRASP_TEMPERATURE = 200.0
SYNFLOW_ITERATIONS = 100


def _weights(model: nn.Module) -> dict[str, nn.Parameter]:
    params = dict(model.named_parameters())
    return {name: params[name] for name in weight_kinds(model)}


def scoring_batch(split: Split, per_class: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` examples of every class from `split`, drawn at random (seeded), in class order."""
    rng = torch.Generator().manual_seed(seed)
    labels = split.labels.cpu()
    chosen = []
    for label in labels.unique().tolist():
        where = (labels == label).nonzero().flatten()
        if len(where) < per_class:
            raise ValueError(f"class {label} has {len(where)} examples, fewer than the {per_class} asked for.")
        chosen.append(where[torch.randperm(len(where), generator=rng)[:per_class]])
    index = torch.cat(chosen).to(split.labels.device)
    return split.images[index], split.labels[index]


def magnitude_scores(model: nn.Module, batch=None, seed: int = 0) -> Scores:
    return {n: w.detach().abs() for n, w in _weights(model).items()}


def random_scores(model: nn.Module, batch=None, seed: int = 0) -> Scores:
    rng = torch.Generator().manual_seed(seed)
    return {n: torch.rand(w.shape, generator=rng).to(w.device) for n, w in _weights(model).items()}


def snip_scores(model: nn.Module, batch, seed: int = 0) -> Scores:
    model = copy.deepcopy(model).eval()
    weights = _weights(model)
    images, labels = batch
    grads = torch.autograd.grad(F.cross_entropy(model(images), labels), list(weights.values()))
    return {n: (w.detach() * g).abs() for (n, w), g in zip(weights.items(), grads)}


def hessian_gradient_product(model: nn.Module, batch, temperature: float = GRASP_TEMPERATURE) -> Scores:
    """H g for the weights, g = dL/dw, L the cross-entropy of logits / `temperature` on `batch`."""
    weights = _weights(model)
    images, labels = batch
    params = list(weights.values())
    loss = F.cross_entropy(model(images) / temperature, labels)
    g = [x.detach() for x in torch.autograd.grad(loss, params)]
    grads = torch.autograd.grad(F.cross_entropy(model(images) / temperature, labels), params, create_graph=True)
    z = sum((a * b).sum() for a, b in zip(grads, g))
    return dict(zip(weights, torch.autograd.grad(z, params)))


def grasp_scores(model: nn.Module, batch, seed: int = 0) -> Scores:
    model = copy.deepcopy(model).train()
    hg = hessian_gradient_product(model, batch)
    return {n: w.detach() * hg[n] for n, w in _weights(model).items()}


def synflow_scores(model: nn.Module, batch=None, seed: int = 0, mask: Mask | None = None) -> Scores:
    """One SynFlow scoring pass (float64, |parameters|, all-ones input); pruned weights score 0."""
    model = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
        if mask is not None:
            for name, w in _weights(model).items():
                if name in mask:
                    w.mul_(mask[name].to(w.device))
    weights = _weights(model)
    shape = batch[0].shape[1:] if batch is not None else _input_shape(model)
    ones = torch.ones((1, *shape), dtype=torch.float64, device=next(model.parameters()).device)
    grads = torch.autograd.grad(model(ones).sum(), list(weights.values()))
    return {n: w.detach() * g for (n, w), g in zip(weights.items(), grads)}


def _input_shape(model: nn.Module) -> tuple[int, ...]:
    first = next(m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    return (first.in_channels, 32, 32)


METHODS: dict[str, Callable[..., Scores]] = {
    "magnitude-init": magnitude_scores,
    "random": random_scores,
    "snip": snip_scores,
    "grasp": grasp_scores,
    "synflow": synflow_scores,
}


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; choose one of {', '.join(METHODS)}.")


def check_density(density: float) -> None:
    if not 0.0 < density < 1.0:
        raise ValueError(f"density must be in (0, 1); got {density}.")


def inverted(scores: Scores) -> Scores:
    """The inversion ablation: keep what the method would prune (the lowest scores)."""
    return {n: -s for n, s in scores.items()}


def keep_top(scores: Scores, density: float, mask: Mask | None = None) -> Mask:
    """Keep round(density * all weights) of the highest scores, one ranking over every tensor (global),
    only survivors of `mask` eligible; ties by position (as `masks`)."""
    check_density(density)
    names = list(scores)
    flat = torch.cat([scores[n].detach().flatten().double().cpu() for n in names])
    alive = (torch.cat([mask[n].flatten().cpu() for n in names]) if mask is not None
             else torch.ones_like(flat, dtype=torch.bool))
    keep = round(density * flat.numel())
    alive = _drop_smallest(flat, alive, int(alive.sum()) - keep)
    out, start = Mask(), 0
    for n in names:
        size = scores[n].numel()
        out[n] = alive[start:start + size].view(scores[n].shape).to(scores[n].device)
        start += size
    return out


def scoring_passes(method: str, iterations: int | None = None) -> int:
    """How many scoring passes (forward + backward) `method` makes: its cost before any training."""
    return {"magnitude-init": 0, "random": 0, "snip": 1, "grasp": 2}.get(
        method, SYNFLOW_ITERATIONS if iterations is None else iterations)


def prune_at_init(method: str, model: nn.Module, density: float, batch=None, seed: int = 0,
                  invert: bool = False, iterations: int | None = None, names: list[str] | None = None) -> Mask:
    """The mask `method` gives `model` at `density` of the weights `names` (default: every conv and
    linear weight; any other weight is kept whole): one scoring pass, or for SynFlow `iterations`
    (default 100) passes on the exponential schedule density^(k/n)."""
    check_method(method)
    check_density(density)
    if method in ("snip", "grasp") and batch is None:
        raise ValueError(f"{method} scores on a batch of training data; pass batch=scoring_batch(...).")
    every = _weights(model)
    names = list(every) if names is None else names
    whole = Mask({n: torch.ones_like(w, dtype=torch.bool) for n, w in every.items() if n not in names})

    def pick(scores: Scores) -> Scores:
        chosen = {n: scores[n] for n in names}
        return inverted(chosen) if invert else chosen

    if method != "synflow":
        return Mask({**whole, **keep_top(pick(METHODS[method](model, batch, seed)), density)})
    steps = scoring_passes(method, iterations)
    mask = Mask.ones_like({n: every[n] for n in names})
    for k in range(1, steps + 1):
        mask = keep_top(pick(synflow_scores(model, batch, seed, mask)), density ** (k / steps), mask)
    return Mask({**whole, **mask})
