"""The paper's experiments as data: one `Preset` per experiment, each with a `paper` and a `quick` profile,
and the CIFAR-10 ones a `subset` profile.

Owns: the presets (hyperparameters exactly as in ../shared/paper-facts.md, Figure 2 and Appendices G-I),
what each quick profile changes and why, the profile switch (`LTH_PROFILE`, default "quick"), and
`experiment()`, which turns a preset + selections into a hashable `Experiment`. Rate overrides are
always the paper's per-round rates: a profile that takes several paper rounds per round steps them
exactly as it steps the preset's own.

The quick profiles run on a 2-core CPU in minutes. They keep the architecture, optimizer, learning
rate, batch size and the per-kind pruning rates' *ladder*, and change only:
  - iterations per round (and evaluation cadence, warmup and lr milestones scaled with them);
  - bigger pruning steps: one quick round = two paper rounds (rate 1 - (1 - p)^2: 20% -> 36%,
    10% -> 19%, 15% -> 27.75%), so quick round k lands exactly on paper round 2k's density;
  - CIFAR-10: the exact subset available offline (first 4,000 training images: 3,500 train / 500
    validation; first 1,000 test images), since the full set cannot be had on the machines here;
  - CIFAR-10: bf16 autocast over fp32 weights, channels-last (`precision`): 2-2.5x a conv step on a CPU
    with bf16 units, accuracy within the spread of trials (benchmarks/bench_precision.py, issue 16).

The subset profiles (CIFAR-10 only) are what the quick ones are not: converged. The same subset, the
paper's optimizer, learning rate, batch size and per-kind rates (one round = two paper rounds, as in
quick), bf16, and iterations enough that the validation loss passes its minimum well before the end of
a round, so that the early-stopping iteration and the accuracy there mean what they mean in the paper
(`SUBSET`). Their committed results are results/subset/; notebooks 02-04 draw them.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from functools import lru_cache

import torch

from .data import FULL_SIZES, DataConfig
from .lottery import Experiment
from .masks import PruningRule, ladder_pm
from .models import create_model, model_kinds, weight_kinds
from .precision import channels_last_for
from .training import TrainConfig

PROFILES = ("quick", "subset", "paper")


def current_profile() -> str:
    """The one switch: `LTH_PROFILE` (quick, subset or paper); notebooks and the CLI default to it."""
    profile = os.environ.get("LTH_PROFILE", "quick")
    if profile not in PROFILES:
        raise ValueError(f"LTH_PROFILE={profile!r}; use one of {', '.join(PROFILES)}.")
    return profile


@dataclass(frozen=True)
class Profile:
    data: DataConfig
    train: TrainConfig
    pruning: PruningRule
    rounds: int   # default number of pruning rounds (after the dense round 0)
    trials: int   # default number of trials
    step: int = 1  # paper rounds per round: `pruning` is the paper's rule stepped this many times


@dataclass(frozen=True)
class Preset:
    name: str
    reproduces: str
    model: str
    paper: Profile
    quick: Profile
    dropout: float = 0.0
    subset: Profile | None = None   # CIFAR-10 presets: converged training on the subset held here

    @property
    def profiles(self) -> tuple[str, ...]:
        """The profiles this preset has: every one but `subset` where its dataset is complete here."""
        return tuple(name for name in PROFILES if getattr(self, name) is not None)

    def profile(self, name: str) -> Profile:
        if name not in PROFILES:
            raise ValueError(f"unknown profile {name!r}; use one of {', '.join(PROFILES)}.")
        if getattr(self, name) is None:
            raise ValueError(f"{self.name} has no {name} profile (its dataset is complete here); "
                             f"use quick or paper.")
        return getattr(self, name)


def stepped(rule: PruningRule, paper_rounds: int) -> PruningRule:
    """The rule whose one round removes what `paper_rounds` rounds of `rule` remove: 1 - (1 - p)^n."""
    if paper_rounds == 1:
        return rule
    # rounded so that stored keys stay short and stable (0.36, not 0.3599999999999999)
    return replace(rule, rates={k: round(1 - (1 - r) ** paper_rounds, 6) for k, r in rule.rates.items()})


def double_step(rule: PruningRule) -> PruningRule:
    """One quick round = two paper rounds."""
    return stepped(rule, 2)


def scaled(config: TrainConfig, iterations: int, eval_every: int) -> TrainConfig:
    """The same schedule squeezed into `iterations` (warmup, milestones, report points scale too)."""
    f = iterations / config.iterations
    return replace(config, iterations=iterations, eval_every=eval_every, warmup=round(config.warmup * f),
                   milestones=tuple(round(m * f) for m in config.milestones),
                   report_at=tuple(round(r * f) for r in config.report_at))


MNIST = DataConfig("mnist")                       # 55,000 / 5,000 / 10,000
CIFAR = DataConfig("cifar10")                     # 45,000 / 5,000 / 10,000
CIFAR_SUBSET = DataConfig("cifar10", train_examples=4_000, validation_size=500, test_examples=1_000)
LAYERWISE_FC = PruningRule({"fc": 0.2, "output": 0.1})
GLOBAL_CONV = PruningRule({"conv": 0.2}, scope="global")   # shortcut and output weights are not pruned

# The subset profiles' (iterations, evaluation cadence) per round. 3,500 training images at batch 60 are
# 58 iterations an epoch. Dense Conv-2, Conv-4 and Conv-6 pass their validation-loss minimum near
# iterations 350, 325 and 400 (6-7 epochs; bf16, 1 thread) and overfit after; sparse tickets get there
# sooner and random reinitializations later, so rounds run 1.5-3x the dense minimum, less for the costly
# nets (a Conv-6 round is 2.5x a Conv-2 one here); an evaluation every 25 iterations (under half an
# epoch) resolves where the minimum is. Dropout slows learning and overfitting (the paper triples its
# budget): 1,500 iterations, evaluated every 50. The deep networks train the paper's epochs on the
# subset, their schedules scaled alike.
SUBSET = {"conv2": (1_000, 25), "conv4": (800, 25), "conv6": (600, 25), "dropout": (1_500, 50),
          "vgg19": (8_750, 125),      # 112,480 iterations x 64 / 45,000 = 160 epochs of 3,500 images
          "resnet18": (2_333, 50)}    # 30,000 x 128 / 45,000 = 85.3 epochs


def bf16(config: TrainConfig) -> TrainConfig:
    return replace(config, precision="bf16")


def _lenet() -> Preset:
    paper = Profile(MNIST, TrainConfig("adam", 1.2e-3, 60, 50_000), LAYERWISE_FC, rounds=20, trials=5)
    quick = Profile(MNIST, scaled(paper.train, 3_000, 250), double_step(LAYERWISE_FC), rounds=8, trials=2, step=2)
    return Preset("lenet-mnist", "Section 2, Figures 3-4: LeNet-300-100 on MNIST", "lenet", paper, quick)


def _conv(depth: int, dropout: bool) -> Preset:
    lr = {2: 2e-4, 4: 3e-4, 6: 3e-4}[depth] if not dropout else {2: 3e-4, 4: 2e-4, 6: 2e-4}[depth]
    iterations = {2: 20_000, 4: 25_000, 6: 30_000}[depth] * (3 if dropout else 1)
    rule = PruningRule({"conv": 0.15 if depth == 6 else 0.1, "fc": 0.2, "output": 0.1})
    paper = Profile(CIFAR, TrainConfig("adam", lr, 60, iterations), rule, rounds=24, trials=5)
    # CPU-sized: a Conv-2 step at batch 60 is ~15 GFLOP (~0.13 s on 2 cores in fp32), so a round is ~15 s in bf16.
    quick_iterations = {2: 160, 4: 120, 6: 100}[depth] * (2 if dropout else 1)
    quick = Profile(CIFAR_SUBSET, bf16(scaled(paper.train, quick_iterations, 20)), double_step(rule), rounds=2,
                    trials=1, step=2)
    subset = Profile(CIFAR_SUBSET, bf16(scaled(paper.train, *SUBSET["dropout" if dropout else f"conv{depth}"])),
                     double_step(rule), rounds=6, trials=2, step=2)
    name = f"conv{depth}-cifar10" + ("-dropout" if dropout else "")
    what = f"Section 3, Figure {6 if dropout else 5}: Conv-{depth} on CIFAR-10" + (" with dropout 0.5" if dropout else "")
    return Preset(name, what, f"conv{depth}", paper, quick, dropout=0.5 if dropout else 0.0, subset=subset)


# The deep networks (Section 4): SGD with momentum 0.9 and weight decay 1e-4, augmentation, global pruning
# of the convs at 20% (shortcut and output weights excluded), three learning-rate variants each.
# VGG-19: 45,000 / 64 = 703.125 iterations per epoch, so epochs 80 and 120 are iterations 56,250 and 84,375.
DEEP = {
    "vgg19": dict(batch=64, iterations=112_480, milestones=(56_250, 84_375), report_at=(30_000, 60_000, 112_480),
                  quick_iterations=20, quick_eval=10, figure=7, name="VGG-19",
                  variants={"": (0.1, 0), "-lr0.01": (0.01, 0), "-warmup": (0.1, 10_000)}),
    "resnet18": dict(batch=128, iterations=30_000, milestones=(20_000, 25_000), report_at=(10_000, 20_000, 30_000),
                     quick_iterations=60, quick_eval=20, figure=8, name="ResNet-18",
                     variants={"": (0.1, 0), "-lr0.01": (0.01, 0), "-warmup": (0.03, 20_000)}),
}


def _deep(model: str, variant: str) -> Preset:
    spec = DEEP[model]
    lr, warmup = spec["variants"][variant]
    train = TrainConfig("sgd", lr, spec["batch"], spec["iterations"], weight_decay=1e-4, warmup=warmup,
                        milestones=spec["milestones"], report_at=spec["report_at"])
    paper = Profile(replace(CIFAR, augment=True), train, GLOBAL_CONV, rounds=20, trials=5)
    quick = Profile(replace(CIFAR_SUBSET, augment=True), bf16(scaled(train, spec["quick_iterations"], spec["quick_eval"])),
                    double_step(GLOBAL_CONV), rounds=1, trials=1, step=2)
    subset = Profile(replace(CIFAR_SUBSET, augment=True), bf16(scaled(train, *SUBSET[model])),
                     double_step(GLOBAL_CONV), rounds=6, trials=2, step=2)
    what = f"lr {lr}" + (f" with {warmup // 1000}K warmup" if warmup else (", no warmup" if lr == 0.1 else ""))
    return Preset(f"{model}-cifar10{variant}", f"Section 4, Figure {spec['figure']}: {spec['name']}, global pruning, "
                  f"{what}", model, paper, quick, subset=subset)


PRESETS: dict[str, Preset] = {p.name: p for p in [
    _lenet(),
    *(_conv(d, False) for d in (2, 4, 6)),
    *(_conv(d, True) for d in (2, 4, 6)),
    *(_deep(m, v) for m in DEEP for v in DEEP[m]["variants"]),
]}


class UnknownPresetError(ValueError):
    pass


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UnknownPresetError(f"unknown preset {name!r}; run `lth list` to see them "
                                 f"({', '.join(PRESETS)}).")
    return PRESETS[name]


def experiment(preset: str, profile: str | None = None, *, strategy: str = "reset", control: str = "none",
               trial: int = 0, oneshot: tuple[float, ...] = (), rates: dict[str, float] | None = None,
               scope: str | None = None, train: dict | None = None, method: str = "magnitude",
               control_rounds: tuple[int, ...] = (), structure: str = "weights") -> Experiment:
    """The Experiment for a preset and profile, with optional overrides of the pruning rule and training.

    `rates` are the paper's per-round rates per kind (as in paper-facts.md), whatever the profile: the
    quick profile steps them to 1 - (1 - p)^2 exactly as it steps the preset's own. Where the paper
    prunes the output layer at half the fc rate (LeNet, Conv nets), giving `fc` alone keeps that rule.
    `train` overrides the profile's training (`trained_with`); the overrides change the run's hash,
    so they get a store folder of their own. `train={"precision": "bf16"}` trains and evaluates in bf16
    autocast, channels-last on the conv nets (`precision.CHANNELS_LAST`); fp32 (the default, and the
    paper's) keeps its key and its results. `structure="units"` removes whole neurons or filters per
    round at the same per-kind rates (fc, conv; output units are never removed), stepped alike.
    """
    chosen = get_preset(preset)
    prof = chosen.profile(profile or current_profile())
    rule = prof.pruning
    if rates or scope:
        rule = stepped(PruningRule(paper_rates(chosen, rates or {}), scope or chosen.paper.pruning.scope), prof.step)
    config = trained_with(prof.train, train or {}, prof.data)
    config = replace(config, channels_last=channels_last_for(chosen.model, config.precision))
    return Experiment(model=chosen.model, data=prof.data, train=config, pruning=rule,
                      dropout=chosen.dropout, strategy=strategy, control=control, oneshot=tuple(oneshot),
                      trial=trial, preset=chosen.name, profile=profile or current_profile(), method=method,
                      control_rounds=tuple(control_rounds) if control != "none" else (), structure=structure)


def paper_rates(preset: Preset, overrides: dict[str, float]) -> dict[str, float]:
    """The preset's paper rates with `overrides`; a kind the model lacks would silently prune nothing."""
    kinds = model_kinds(preset.model)
    for kind in overrides:
        if kind not in kinds:
            raise ValueError(f"{preset.name} has no {kind} weights to prune; its kinds are "
                             f"{', '.join(sorted(kinds))}: drop the rate for {kind}.")
    rates = {**preset.paper.pruning.rates, **overrides}
    paper = preset.paper.pruning.rates
    if "fc" in overrides and "output" not in overrides and paper.get("fc") and \
            math.isclose(paper.get("output", 0.0), paper["fc"] / 2):
        rates["output"] = overrides["fc"] / 2   # the paper's rule: output pruned at half the fc rate
    return rates


TRAIN_OVERRIDES = {"iterations": int, "lr": float, "eval_every": int, "batch_size": int, "precision": str}


def trained_with(config: TrainConfig, overrides: dict, data: DataConfig) -> TrainConfig:
    """`config` with the overrides a researcher changes most. A new `iterations` squeezes or stretches
    the schedule (warmup, lr milestones, report points) as the quick profiles do, and moves the
    evaluation cadence only where `eval_every` is not given and the old one no longer fits. `precision`
    is fp32 or bf16 (`precision`)."""
    unknown = set(overrides) - set(TRAIN_OVERRIDES)
    if unknown:
        raise ValueError(f"unknown training override {sorted(unknown)[0]!r}; use {', '.join(TRAIN_OVERRIDES)}.")
    for name, kind in TRAIN_OVERRIDES.items():
        value = overrides.get(name)
        if kind is str or value is None:   # precision: TrainConfig says what it takes
            continue
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or (kind is int and value != int(value)) or not value > 0):
            raise ValueError(f"--{name.replace('_', '-')} must be a positive {kind.__name__}; got {value!r}.")
    train_size = (data.train_examples or FULL_SIZES[(data.dataset, "train")]) - data.validation_size
    if overrides.get("batch_size") is not None and overrides["batch_size"] > train_size:
        raise ValueError(f"--batch-size {overrides['batch_size']} is more than the {train_size:,} training examples.")
    if overrides.get("iterations") is not None:
        iterations = int(overrides["iterations"])
        eval_every = int(overrides.get("eval_every") or min(config.eval_every, iterations))
        config = scaled(config, iterations, eval_every)
    if overrides.get("eval_every") is not None:
        if overrides["eval_every"] > config.iterations:
            raise ValueError(f"--eval-every {overrides['eval_every']} is more than the {config.iterations:,} "
                             "iterations per round: no round would be evaluated.")
        config = replace(config, eval_every=int(overrides["eval_every"]))
    if overrides.get("lr") is not None:
        config = replace(config, lr=float(overrides["lr"]))
    if overrides.get("batch_size") is not None:
        config = replace(config, batch_size=int(overrides["batch_size"]))
    if overrides.get("precision") is not None:
        config = replace(config, precision=overrides["precision"])
    return config


@lru_cache(maxsize=None)
def _weights(model: str) -> tuple[dict[str, str], dict[str, int]]:
    with torch.device("meta"):   # shapes only: no memory, no init
        net = create_model(model)
    kinds = weight_kinds(net)
    params = dict(net.named_parameters())
    return kinds, {name: params[name].numel() for name in kinds}


def ladder(preset: str, rounds: float, profile: str = "paper") -> float:
    """Pm after `rounds` rounds of a preset's profile from dense: the fraction of all weights left,
    never-pruned kinds counted whole (`masks.ladder_pm` on the preset's model). Every density a
    notebook, test or reference names comes from here; a round's measured `density` matches it to
    one weight per layer."""
    chosen = get_preset(preset)
    kinds, sizes = _weights(chosen.model)
    return ladder_pm(chosen.profile(profile).pruning, kinds, sizes, rounds)
