"""Presets: the paper profiles match the paper exactly; quick profiles change only what they say."""
from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import pytest
import torch

from lth_tutorial.data import FULL_SIZES, DataConfig
from lth_tutorial.lottery import Experiment
from lth_tutorial.masks import PruningRule, ladder_density, ladder_pm
from lth_tutorial.models import create_model, weight_kinds
from lth_tutorial.presets import (PRESETS, PROFILES, UnknownPresetError, current_profile, double_step, ladder,
                                  experiment, get_preset, paper_rates, stepped)
from lth_tutorial.store import key_hash
from lth_tutorial.training import TrainConfig

CONV = {"conv2": (2e-4, 20_000, 0.1), "conv4": (3e-4, 25_000, 0.1), "conv6": (3e-4, 30_000, 0.15)}
CONV_DROPOUT = {"conv2": (3e-4, 60_000), "conv4": (2e-4, 75_000), "conv6": (2e-4, 90_000)}


def split_sizes(data: DataConfig) -> tuple[int, int, int]:
    train = data.train_examples or FULL_SIZES[(data.dataset, "train")]
    return train - data.validation_size, data.validation_size, data.test_examples or FULL_SIZES[(data.dataset, "test")]


@lru_cache(maxsize=None)
def shapes(model: str) -> tuple[dict[str, str], dict[str, int]]:
    with torch.device("meta"):  # sizes only: no memory, no init cost (VGG-19 has 20M weights)
        net = create_model(model)
    kinds = weight_kinds(net)
    params = dict(net.named_parameters())
    return kinds, {n: params[n].numel() for n in kinds}


def test_all_presets_exist():
    assert set(PRESETS) == {
        "lenet-mnist", "conv2-cifar10", "conv4-cifar10", "conv6-cifar10", "conv2-cifar10-dropout",
        "conv4-cifar10-dropout", "conv6-cifar10-dropout", "vgg19-cifar10", "vgg19-cifar10-lr0.01",
        "vgg19-cifar10-warmup", "resnet18-cifar10", "resnet18-cifar10-lr0.01", "resnet18-cifar10-warmup"}
    assert all(get_preset(name).name == name and get_preset(name).reproduces for name in PRESETS)


# ---- paper profiles ----------------------------------------------------------------------------------


def test_lenet_paper_profile():
    preset = get_preset("lenet-mnist")
    paper = preset.paper
    assert preset.model == "lenet" and preset.dropout == 0.0
    assert paper.train == TrainConfig("adam", 1.2e-3, 60, 50_000, eval_every=100)
    assert (paper.train.weight_decay, paper.train.warmup, paper.train.milestones) == (0.0, 0, ())
    assert paper.pruning == PruningRule({"fc": 0.2, "output": 0.1}, scope="layerwise")
    assert paper.data.dataset == "mnist" and not paper.data.augment
    assert split_sizes(paper.data) == (55_000, 5_000, 10_000)
    assert paper.trials == 5


@pytest.mark.parametrize("depth", ["conv2", "conv4", "conv6"])
def test_conv_paper_profiles(depth):
    lr, iterations, conv_rate = CONV[depth]
    preset = get_preset(f"{depth}-cifar10")
    paper = preset.paper
    assert preset.model == depth and preset.dropout == 0.0
    assert paper.train == TrainConfig("adam", lr, 60, iterations, eval_every=100)
    assert paper.pruning == PruningRule({"conv": conv_rate, "fc": 0.2, "output": 0.1}, scope="layerwise")
    assert paper.data.dataset == "cifar10" and not paper.data.augment
    assert split_sizes(paper.data) == (45_000, 5_000, 10_000)


@pytest.mark.parametrize("depth", ["conv2", "conv4", "conv6"])
def test_conv_dropout_paper_profiles(depth):
    lr, iterations = CONV_DROPOUT[depth]
    preset = get_preset(f"{depth}-cifar10-dropout")
    assert preset.model == depth and preset.dropout == 0.5
    assert preset.paper.train == TrainConfig("adam", lr, 60, iterations, eval_every=100)
    assert preset.paper.pruning == get_preset(f"{depth}-cifar10").paper.pruning
    assert split_sizes(preset.paper.data) == (45_000, 5_000, 10_000)
    # and the model really has dropout on its fc layers
    net = create_model(depth, seed=0, dropout=preset.dropout)
    assert [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)] == [0.5, 0.5]


@pytest.mark.parametrize("variant,lr,warmup", [("", 0.1, 0), ("-lr0.01", 0.01, 0), ("-warmup", 0.1, 10_000)])
def test_vgg_paper_profiles(variant, lr, warmup):
    preset = get_preset(f"vgg19-cifar10{variant}")
    train = preset.paper.train
    assert preset.model == "vgg19" and preset.dropout == 0.0
    assert (train.optimizer, train.lr, train.momentum, train.weight_decay, train.batch_size) == ("sgd", lr, 0.9, 1e-4, 64)
    assert train.iterations == 112_480  # 160 epochs of 45,000 / 64
    assert train.warmup == warmup
    # epochs 80 and 120 at 45,000 / 64 = 703.125 iterations per epoch
    assert train.milestones == (56_250, 84_375) == (round(80 * 45_000 / 64), round(120 * 45_000 / 64))
    assert train.gamma == 0.1 and train.eval_every == 100
    assert train.report_at == (30_000, 60_000, 112_480)
    assert preset.paper.pruning == PruningRule({"conv": 0.2}, scope="global")
    kinds, _ = shapes("vgg19")
    assert preset.paper.pruning.prunable(kinds) == [n for n, k in kinds.items() if k == "conv"]
    assert "output.weight" not in preset.paper.pruning.prunable(kinds)
    assert preset.paper.data.augment is True
    assert split_sizes(preset.paper.data) == (45_000, 5_000, 10_000)


@pytest.mark.parametrize("variant,lr,warmup", [("", 0.1, 0), ("-lr0.01", 0.01, 0), ("-warmup", 0.03, 20_000)])
def test_resnet_paper_profiles(variant, lr, warmup):
    preset = get_preset(f"resnet18-cifar10{variant}")
    train = preset.paper.train
    assert preset.model == "resnet18" and preset.dropout == 0.0
    assert (train.optimizer, train.lr, train.momentum, train.weight_decay, train.batch_size) == ("sgd", lr, 0.9, 1e-4, 128)
    assert train.iterations == 30_000 and train.warmup == warmup
    assert train.milestones == (20_000, 25_000) and train.gamma == 0.1 and train.eval_every == 100
    assert train.report_at == (10_000, 20_000, 30_000)
    rule = preset.paper.pruning
    assert rule == PruningRule({"conv": 0.2}, scope="global")
    kinds, sizes = shapes("resnet18")
    excluded = [n for n in kinds if n not in rule.prunable(kinds)]
    assert {kinds[n] for n in excluded} == {"shortcut", "output"}
    # the paper: not the 2,560 shortcut 1x1 weights nor the 640 fc weights
    assert sum(sizes[n] for n in excluded if kinds[n] == "shortcut") == 2_560
    assert sum(sizes[n] for n in excluded if kinds[n] == "output") == 640
    assert preset.paper.data.augment is True
    assert split_sizes(preset.paper.data) == (45_000, 5_000, 10_000)


def test_warmup_reaches_the_papers_rates():
    vgg = get_preset("vgg19-cifar10-warmup").paper.train
    assert vgg.lr * vgg.lr_factor(0) == pytest.approx(0.1 / 10_000)
    assert vgg.lr * vgg.lr_factor(9_999) == 0.1
    resnet = get_preset("resnet18-cifar10-warmup").paper.train
    assert resnet.lr * resnet.lr_factor(19_999) == 0.03
    assert resnet.lr * resnet.lr_factor(20_000) == pytest.approx(0.003)


# ---- quick profiles ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_quick_rates_are_the_double_step_and_land_on_even_paper_rounds(name):
    preset = get_preset(name)
    paper, quick = preset.paper.pruning, preset.quick.pruning
    assert quick.scope == paper.scope
    assert quick.rates.keys() == paper.rates.keys()
    for kind, rate in paper.rates.items():
        assert quick.rates[kind] == pytest.approx(1 - (1 - rate) ** 2, abs=1e-12)
    kinds, sizes = shapes(preset.model)
    for k in range(preset.quick.rounds + 1):
        # on the reported axis (Pm, all weights) and on the pruned pool alike
        assert ladder_pm(quick, kinds, sizes, k) == pytest.approx(ladder_pm(paper, kinds, sizes, 2 * k), rel=1e-9)
        assert ladder_density(quick, kinds, sizes, k) == pytest.approx(ladder_density(paper, kinds, sizes, 2 * k),
                                                                       rel=1e-9)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_profile_prunes_the_paper_rule_stepped_by_its_rounds(name):
    preset = get_preset(name)
    assert (preset.paper.step, preset.quick.step) == (1, 2)
    for profile in preset.profiles:
        prof = preset.profile(profile)
        assert prof.pruning == stepped(preset.paper.pruning, prof.step)


def test_global_presets_ladder_counts_every_weight():
    # ResNet-18: 267,696 conv weights pruned; 2,560 shortcut + 640 output weights never, but in Pm
    kinds, sizes = shapes("resnet18")
    rule = get_preset("resnet18-cifar10").paper.pruning
    assert sum(sizes.values()) == 270_896
    assert ladder_pm(rule, kinds, sizes, 1) == pytest.approx((267_696 * 0.8 + 3_200) / 270_896, rel=1e-12)
    # the paper's rounds 4, 6, 7, 10: Pm 41.7, 27.1, 21.9, 11.8% (over the convs alone: 41.0, 26.2, 21.0, 10.7)
    assert [round(ladder_pm(rule, kinds, sizes, k) * 100, 1) for k in (4, 6, 7, 10)] == [41.7, 27.1, 21.9, 11.8]
    assert [round(ladder_density(rule, kinds, sizes, k) * 100, 1) for k in (4, 6, 7, 10)] == [41.0, 26.2, 21.0, 10.7]
    quick = get_preset("resnet18-cifar10").quick.pruning
    assert ladder_pm(quick, kinds, sizes, 1) == pytest.approx(ladder("resnet18-cifar10", 2), rel=1e-9)
    assert ladder("resnet18-cifar10", 2) == pytest.approx((267_696 * 0.64 + 3_200) / 270_896, rel=1e-12)  # 64.43%, not 64%
    # VGG-19: 20,018,880 conv weights pruned, the 5,120 output weights never
    kinds, sizes = shapes("vgg19")
    rule = get_preset("vgg19-cifar10").paper.pruning
    assert sum(sizes.values()) == 20_024_000
    for k in (1, 12, 15, 19):
        assert ladder_pm(rule, kinds, sizes, k) == pytest.approx(ladder("vgg19-cifar10", k), rel=1e-12)
    assert [round(ladder("vgg19-cifar10", k) * 100, 1) for k in (12, 15, 19)] == [6.9, 3.5, 1.5]


def test_double_step_values():
    assert double_step(PruningRule({"fc": 0.2, "output": 0.1})).rates == {"fc": 0.36, "output": 0.19}
    assert double_step(PruningRule({"conv": 0.15})).rates == {"conv": 0.2775}
    assert double_step(PruningRule({"conv": 0.2}, "global")).scope == "global"


def test_lenet_quick_ladder_hits_the_papers_rounds():
    kinds, sizes = shapes("lenet")
    quick = get_preset("lenet-mnist").quick.pruning
    # paper rounds 2, 4, 6, 8: Pm = (265,200 * 0.8^k + 1,000 * 0.9^k) / 266,200
    for k in range(1, 5):
        expected = (265_200 * 0.8 ** (2 * k) + 1_000 * 0.9 ** (2 * k)) / 266_200
        assert ladder_density(quick, kinds, sizes, k) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_quick_keeps_everything_but_budget_steps_and_cifar_subset(name):
    preset = get_preset(name)
    paper, quick = preset.paper, preset.quick
    for field in ("optimizer", "lr", "batch_size", "momentum", "weight_decay", "gamma"):
        assert getattr(quick.train, field) == getattr(paper.train, field), field
    assert quick.train.iterations < paper.train.iterations
    assert quick.train.iterations % quick.train.eval_every == 0
    scale = quick.train.iterations / paper.train.iterations
    assert quick.train.warmup == round(paper.train.warmup * scale)
    assert quick.train.milestones == tuple(round(m * scale) for m in paper.train.milestones)
    assert quick.train.report_at == tuple(round(r * scale) for r in paper.train.report_at)
    assert quick.data.augment == paper.data.augment
    assert quick.data.dataset == paper.data.dataset
    if paper.data.dataset == "cifar10":
        assert quick.data == DataConfig("cifar10", train_examples=4_000, validation_size=500, test_examples=1_000,
                                        augment=paper.data.augment)
        assert split_sizes(quick.data) == (3_500, 500, 1_000)
    else:
        assert quick.data == paper.data
    assert quick.rounds >= 1 and quick.trials >= 1


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_subset_profile_is_the_papers_recipe_converged_on_the_cifar_subset(name):
    preset = get_preset(name)
    if preset.paper.data.dataset != "cifar10":   # MNIST is complete here: no subset profile, one clear line
        assert preset.subset is None and preset.profiles == ("quick", "paper")
        with pytest.raises(ValueError, match="lenet-mnist has no subset profile.*use quick or paper"):
            experiment(name, "subset")
        return
    paper, quick, subset = preset.paper, preset.quick, preset.subset
    assert preset.profiles == PROFILES
    for field in ("optimizer", "lr", "batch_size", "momentum", "weight_decay", "gamma"):
        assert getattr(subset.train, field) == getattr(paper.train, field), field
    assert subset.data == quick.data and subset.pruning == quick.pruning and subset.step == 2
    # converged: many times quick's budget; an evaluation at least every half epoch of 3,500 images
    assert subset.train.iterations >= 4 * quick.train.iterations
    assert subset.train.eval_every * subset.train.batch_size <= 3_500 or preset.model in ("vgg19", "resnet18")
    assert subset.train.iterations % subset.train.eval_every == 0 or preset.model in ("vgg19", "resnet18")
    scale = subset.train.iterations / paper.train.iterations
    assert subset.train.milestones == tuple(round(m * scale) for m in paper.train.milestones)
    assert subset.train.warmup == round(paper.train.warmup * scale)
    assert subset.trials >= 2 and ladder(name, subset.rounds, "subset") <= 0.11   # down to Pm of about 10%
    # bf16 on every CIFAR profile but the paper's (fp32, as the paper trained); channels-last on the conv nets
    assert (quick.train.precision, subset.train.precision, paper.train.precision) == ("bf16", "bf16", "fp32")
    assert experiment(name, "subset").train.channels_last and not experiment(name, "paper").train.channels_last
    assert experiment(name, "subset", train={"precision": "fp32"}).train == replace(subset.train, precision="fp32")


def test_subset_deep_networks_train_the_papers_epochs():
    # VGG-19: 112,480 x 64 / 45,000 = 160 epochs = 8,750 iterations of 64 on 3,500 images; ResNet: 85.3 epochs
    vgg, resnet = get_preset("vgg19-cifar10").subset.train, get_preset("resnet18-cifar10-warmup").subset.train
    assert vgg.iterations == 8_750 and vgg.milestones == (4_376, 6_564)   # epochs 80 and 120
    assert resnet.iterations == 2_333 and resnet.warmup == 1_555 and resnet.milestones == (1_555, 1_944)


def test_quick_vgg_schedule_keeps_the_epoch_fractions():
    quick = get_preset("vgg19-cifar10-warmup").quick.train
    assert (quick.iterations, quick.milestones) == (20, (10, 15))  # epochs 80 and 120 of 160
    assert quick.warmup == 2  # 10,000 of 112,480


# ---- the profile switch ------------------------------------------------------------------------------


def test_profile_switch(monkeypatch):
    monkeypatch.delenv("LTH_PROFILE", raising=False)
    assert current_profile() == "quick"
    assert experiment("lenet-mnist").train == get_preset("lenet-mnist").quick.train
    monkeypatch.setenv("LTH_PROFILE", "paper")
    assert current_profile() == "paper"
    exp = experiment("lenet-mnist")
    assert exp.train == get_preset("lenet-mnist").paper.train and exp.profile == "paper"
    assert experiment("lenet-mnist", "quick").profile == "quick"  # an explicit profile wins
    monkeypatch.setenv("LTH_PROFILE", "fast")
    with pytest.raises(ValueError, match="LTH_PROFILE='fast'.*quick, subset, paper"):
        current_profile()
    assert PROFILES == ("quick", "subset", "paper")
    monkeypatch.setenv("LTH_PROFILE", "subset")
    assert experiment("conv2-cifar10").train == replace(get_preset("conv2-cifar10").subset.train, channels_last=True)


def test_unknown_names():
    with pytest.raises(UnknownPresetError, match="unknown preset 'lenet'.*`lth list`"):
        get_preset("lenet")
    with pytest.raises(UnknownPresetError, match="lth list"):
        experiment("resnet50-imagenet", "quick")
    assert issubclass(UnknownPresetError, ValueError)
    with pytest.raises(ValueError, match="unknown profile 'full'"):
        get_preset("lenet-mnist").profile("full")


# ---- experiment() ------------------------------------------------------------------------------------


def test_experiment_carries_the_preset():
    exp = experiment("conv6-cifar10-dropout", "paper", strategy="rewind:100", trial=2)
    preset = get_preset("conv6-cifar10-dropout")
    assert isinstance(exp, Experiment)
    assert (exp.model, exp.dropout, exp.data, exp.train, exp.pruning) == (
        "conv6", 0.5, preset.paper.data, preset.paper.train, preset.paper.pruning)
    assert (exp.strategy, exp.rewind_iteration, exp.trial, exp.preset, exp.profile) == (
        "rewind:100", 100, 2, "conv6-cifar10-dropout", "paper")
    trial0 = experiment("conv6-cifar10-dropout", "paper")
    assert exp.init_seed != trial0.init_seed and exp.data_seed != trial0.data_seed


def test_experiment_rule_overrides():
    exp = experiment("lenet-mnist", "paper", rates={"output": 0.2})
    assert exp.pruning == PruningRule({"fc": 0.2, "output": 0.2})
    exp = experiment("lenet-mnist", "paper", rates={"fc": 0.2, "output": 0.2}, scope="global")
    assert exp.pruning.scope == "global"
    with pytest.raises(ValueError, match="one rate"):
        experiment("lenet-mnist", "paper", scope="global")  # 0.2 and 0.1 cannot share a threshold


def test_rate_overrides_are_the_papers_rates_stepped_like_the_presets_own():
    quick = get_preset("lenet-mnist").quick.pruning
    # the paper's own rate, given: the quick profile's own rule, hence its store folder
    exp = experiment("lenet-mnist", "quick", rates={"fc": 0.2})
    assert exp.pruning == quick == PruningRule({"fc": 0.36, "output": 0.19})
    assert exp.ticket_key() == experiment("lenet-mnist", "quick").ticket_key()
    # fc alone: output follows at half of it (0.15), then both are stepped: 1 - 0.7^2, 1 - 0.85^2
    assert experiment("lenet-mnist", "quick", rates={"fc": 0.3}).pruning.rates == {"fc": 0.51, "output": 0.2775}
    assert experiment("lenet-mnist", "paper", rates={"fc": 0.3}).pruning.rates == {"fc": 0.3, "output": 0.15}
    # output given too: taken as given
    assert experiment("lenet-mnist", "quick", rates={"fc": 0.3, "output": 0.2}).pruning.rates == {
        "fc": 0.51, "output": 0.36}
    assert experiment("lenet-mnist", "paper", rates={"output": 0.3}).pruning.rates == {"fc": 0.2, "output": 0.3}
    assert experiment("conv6-cifar10", "quick", rates={"conv": 0.1}).pruning.rates == {
        "conv": 0.19, "fc": 0.36, "output": 0.19}
    exp = experiment("resnet18-cifar10", "quick", rates={"conv": 0.3})
    assert exp.pruning == PruningRule({"conv": 0.51}, scope="global")   # no output rate appears
    assert experiment("resnet18-cifar10", "quick", rates={"conv": 0.3, "shortcut": 0.3}).pruning.rates == {
        "conv": 0.51, "shortcut": 0.51}
    assert experiment("lenet-mnist", "quick", scope="layerwise").pruning == quick


def test_output_follows_fc_only_where_the_paper_prunes_it_at_half():
    conv2 = get_preset("conv2-cifar10")
    assert paper_rates(conv2, {"fc": 0.4}) == {"conv": 0.1, "fc": 0.4, "output": 0.2}
    other = replace(conv2, paper=replace(conv2.paper, pruning=PruningRule({"conv": 0.1, "fc": 0.2, "output": 0.2})))
    assert paper_rates(other, {"fc": 0.4}) == {"conv": 0.1, "fc": 0.4, "output": 0.2}   # output kept as it was
    assert paper_rates(conv2, {"fc": 0.4, "output": 0.05}) == {"conv": 0.1, "fc": 0.4, "output": 0.05}


@pytest.mark.parametrize("preset, rates, message", [
    ("lenet-mnist", {"conv": 0.5}, "lenet-mnist has no conv weights to prune; its kinds are fc, output"),
    ("lenet-mnist", {"shortcut": 0.1}, "has no shortcut weights"),
    ("vgg19-cifar10", {"fc": 0.2}, "vgg19-cifar10 has no fc weights to prune; its kinds are conv, output"),
    ("conv4-cifar10", {"shortcut": 0.2}, "its kinds are conv, fc, output"),
    ("lenet-mnist", {"fc": 1.0}, r"\[0, 1\)"),
    ("lenet-mnist", {"output": -0.1}, r"\[0, 1\)"),
    ("resnet18-cifar10", {"output": 0.1}, "one rate"),
])
def test_bad_rate_overrides_are_rejected(preset, rates, message):
    for profile in get_preset(preset).profiles:
        with pytest.raises(ValueError, match=message):
            experiment(preset, profile, rates=rates)


def _key(exp: Experiment) -> str:
    """What names a run's store folder: its ticket's key and its control."""
    return key_hash({**exp.ticket_key(), "control": exp.control})


def test_experiment_hashes():
    base = dict(preset="lenet-mnist", profile="quick")
    same = _key(experiment(**base)), _key(experiment(**base, strategy="reset", control="none", trial=0))
    assert same[0] == same[1]
    assert _key(experiment(**base)) == _key(replace(experiment(**base)))
    variants = [experiment(**base), experiment(**base, trial=1), experiment(**base, trial=2),
                experiment(**base, control="reinit"), experiment(**base, control="random"),
                experiment(**base, strategy="continue"), experiment(**base, strategy="rewind:100"),
                experiment(**base, strategy="rewind:200"), experiment(**base, oneshot=(0.5,)),
                experiment("lenet-mnist", "paper"), experiment(**base, rates={"output": 0.2}),
                experiment("conv2-cifar10", "quick"), experiment("vgg19-cifar10", "quick"),
                experiment("vgg19-cifar10-lr0.01", "quick"), experiment("vgg19-cifar10-warmup", "quick")]
    hashes = [_key(v) for v in variants]
    assert len(set(hashes)) == len(hashes)
    assert all(len(h) == 10 and int(h, 16) >= 0 for h in hashes)
