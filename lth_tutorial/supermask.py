"""Supermasks: what a network at its untrained initialization can do once weights are only masked.

Owns `masked_accuracy` (an init under a fixed mask, no training), `signed_constant` (each weight replaced
by sign(w) times its layer's init std), and the learned supermask of Zhou, Lan, Liu & Yosinski,
"Deconstructing Lottery Tickets: Zeros, Signs, and the Supermask" (NeurIPS 2019): weights and biases
stay frozen at init, every masked weight gets a trainable score s, the forward pass uses a Bernoulli
sample of sigmoid(s) and the backward pass the gradient of sigmoid(s) (`straight_through_mask`,
trained by `learn_supermask` under a `SupermaskConfig`). Facts from their code (masked_networks.py,
train_supermask.py): scores start at the constant `sigmoid_bias` (0); SGD with momentum 0.9 on the
scores only, batches of 250; evaluation samples a mask too, the final test accuracy is the mean over
10 draws; `--round_mask` evaluates sigmoid(s) > 0.5; `--dynamic_scaling` multiplies each layer by
#weights / #ones of its mask on every forward pass, with the gradient flowing through that count.
The frozen model runs through torch.func.functional_call, so nothing is ever written into it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .data import DeviceLoader, Split, Splits
from .masks import Mask
from .models import weight_kinds
from .seeds import stream_seed
from .training import evaluate

Tensors = dict[str, torch.Tensor]
# sub-streams of a run's seed; the data order has its own (DeviceLoader keys by epoch)
DROPOUT_STREAM, TRAIN_SAMPLE_STREAM, EVAL_SAMPLE_STREAM = 0, 1, 2


class Progress(Protocol):
    def update(self, n: int) -> Any: ...


class _WithParameters(nn.Module):
    """`model` run with `replacements` in place of its own parameters; `evaluate` can take it."""

    def __init__(self, model: nn.Module, replacements: Tensors):
        super().__init__()
        self.model, self.replacements = model, replacements

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, self.replacements, (x,))


def _initial_parameters(model: nn.Module) -> Tensors:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def signed_constant(weights: Tensors, names) -> Tensors:
    """sigma_l * sign(w) for the tensors in `names` (sigma_l: population std of the whole tensor, as
    their tf.nn.moments); every other tensor copied unchanged. sign(0) = 0 keeps zeros at zero."""
    names = set(names)
    return {name: torch.sign(w) * torch.std(w, correction=0) if name in names else w.clone()
            for name, w in weights.items()}


def masked_weights(weights: Tensors, masks: Tensors, dynamic_scaling: bool = False) -> Tensors:
    """`weights` with each tensor in `masks` multiplied by its mask (and, with dynamic scaling, by
    #weights / #ones of that mask: the paper's DWR keeps each layer's expected input scale)."""
    out = dict(weights)
    for name, m in masks.items():
        m = m.to(weights[name].dtype)
        if dynamic_scaling:  # a layer with no ones would divide by zero; its weights are all zero anyway
            m = m * (m.numel() / m.sum().clamp_min(1))
        out[name] = weights[name] * m
    return out


def straight_through_mask(scores: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A 0/1 Bernoulli(sigmoid(scores)) sample whose gradient is that of sigmoid(scores).

    Written sample + (p - p.detach()) rather than their (sample + p) - p: the bracket is exactly 0,
    so the value is exactly the sample (1 + p - p can round to 1 +- 1 ulp in float32).
    """
    p = torch.sigmoid(scores)
    return torch.bernoulli(p.detach(), generator=generator) + (p - p.detach())


def sampled_masks(scores: Tensors, generator: torch.Generator) -> Tensors:
    """One 0/1 mask per tensor, each weight kept with probability sigmoid(score); no gradient."""
    return {name: torch.bernoulli(torch.sigmoid(s.detach()), generator=generator) for name, s in scores.items()}


def masked_accuracy(model: nn.Module, mask: Mask, split: Split, weights: Tensors | None = None) -> float:
    """Accuracy on `split` of `model` as it is (its init) with the weights in `mask` multiplied by it.

    `weights` (name -> tensor) replaces those parameters first, e.g. `signed_constant(...)`. The model
    passed in is not changed: a copy runs, in eval mode.
    """
    device = split.images.device
    frozen = copy.deepcopy(model).to(device)
    parameters = _initial_parameters(frozen)
    parameters.update({name: w.to(device) for name, w in (weights or {}).items()})
    parameters = masked_weights(parameters, {name: m.to(device) for name, m in mask.items()})
    return float(evaluate(_WithParameters(frozen, parameters), split)[1])


@dataclass(frozen=True)
class SupermaskConfig:
    """Learning a supermask: the paper's code's defaults except the budget, which the caller picks."""

    iterations: int                 # their MNIST FC runs: 2,000 epochs, far beyond a tutorial's budget
    lr: float = 100.0               # the paper's supermask lr (scores move far from 0 to saturate sigmoid)
    momentum: float = 0.9           # SGD with momentum, on the scores only
    batch_size: int = 250           # their --train_batch_size
    score_init: float = 0.0         # their --sigmoid_bias: every score starts here (sigmoid(0) = 0.5)
    eval_every: int = 100           # validation and test accuracy recorded every N iterations (and at the end)
    dynamic_scaling: bool = False   # their DWR: each layer times #weights / #ones of its sampled mask
    signed_constant: bool = False   # weights replaced by sigma_l * sign(w) before learning
    test_samples: int = 10          # final sampled test accuracy: mean over this many mask draws, as theirs

    def __post_init__(self):
        if min(self.iterations, self.batch_size, self.eval_every, self.test_samples) < 1:
            raise ValueError("iterations, batch_size, eval_every and test_samples must be positive.")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive; got {self.lr}.")


@dataclass
class LearnedSupermask:
    scores: Tensors                    # name -> real score s (keep probability sigmoid(s))
    curves: dict[str, list[float]]     # iteration, train_loss, val_accuracy, test_accuracy (sampled masks)
    sampled_test_accuracy: float       # mean over config.test_samples freshly sampled masks
    rounded_test_accuracy: float       # the deterministic mask sigmoid(s) > 0.5 (their --round_mask)
    density: float                     # expected density: mean sigmoid(s) over every masked weight

    def rounded_mask(self) -> Mask:
        return Mask({name: torch.sigmoid(s) > 0.5 for name, s in self.scores.items()})


def _mask_evaluation(frozen: nn.Module, weights: Tensors, masks: Tensors, dynamic_scaling: bool,
                     split: Split) -> torch.Tensor:
    """Accuracy (0-d tensor, no sync) of the frozen model with `weights` under `masks`."""
    return evaluate(_WithParameters(frozen, masked_weights(weights, masks, dynamic_scaling)), split)[1]


def learn_supermask(model: nn.Module, splits: Splits, config: SupermaskConfig, seed: int,
                    names: list[str] | None = None, progress: Progress | None = None) -> LearnedSupermask:
    """Learn scores for the weights in `names` (default: every weight of `weight_kinds`) of `model` at
    its current values, which stay frozen (a copy trains; `model` is not changed).

    `seed` fixes the data order, the training masks' draws, the evaluation masks' draws and dropout:
    the same seed gives bitwise the same scores. Each evaluation draws one mask for validation and
    test together (their evaluation runs a whole set in one batch, so one draw per set).
    """
    device = splits.train.images.device
    frozen = copy.deepcopy(model).to(device).train().requires_grad_(False)
    names = list(weight_kinds(frozen)) if names is None else list(names)
    weights = _initial_parameters(frozen)
    if config.signed_constant:
        weights = signed_constant(weights, names)
    scores = {name: torch.full_like(weights[name], config.score_init, requires_grad=True) for name in names}
    optimizer = torch.optim.SGD(list(scores.values()), lr=config.lr, momentum=config.momentum)
    loader = DeviceLoader(splits.train, config.batch_size, seed).batches()
    train_draws = torch.Generator(device=device).manual_seed(stream_seed(seed, TRAIN_SAMPLE_STREAM))
    eval_draws = torch.Generator(device=device).manual_seed(stream_seed(seed, EVAL_SAMPLE_STREAM))
    curves: dict[str, list[float]] = {k: [] for k in ("iteration", "train_loss", "val_accuracy", "test_accuracy")}
    running, seen, last_evaluated = torch.zeros((), device=device), 0, 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(stream_seed(seed, DROPOUT_STREAM))
        for iteration in range(1, config.iterations + 1):
            images, labels = next(loader)
            masks = {name: straight_through_mask(s, train_draws) for name, s in scores.items()}
            logits = functional_call(frozen, masked_weights(weights, masks, config.dynamic_scaling), (images,))
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running += loss.detach()
            seen += 1
            if iteration % config.eval_every == 0 or iteration == config.iterations:
                masks = sampled_masks(scores, eval_draws)
                accuracies = [_mask_evaluation(frozen, weights, masks, config.dynamic_scaling, split)
                              for split in (splits.validation, splits.test)]
                results = torch.stack([running / seen, *accuracies]).tolist()  # the one sync per evaluation
                for key, value in zip(curves, [iteration, *results]):
                    curves[key].append(value)
                running, seen = torch.zeros((), device=device), 0
                if progress is not None:
                    progress.update(iteration - last_evaluated)
                last_evaluated = iteration
        scores = {name: s.detach() for name, s in scores.items()}
        sampled = [_mask_evaluation(frozen, weights, sampled_masks(scores, eval_draws), config.dynamic_scaling,
                                    splits.test) for _ in range(config.test_samples)]
        rounded = {name: torch.sigmoid(s) > 0.5 for name, s in scores.items()}
        rounded_accuracy = _mask_evaluation(frozen, weights, rounded, config.dynamic_scaling, splits.test)
    probabilities = torch.cat([torch.sigmoid(s).flatten() for s in scores.values()])
    final = torch.stack([torch.stack(sampled).mean(), rounded_accuracy, probabilities.mean()]).tolist()
    return LearnedSupermask(scores, curves, *final)
