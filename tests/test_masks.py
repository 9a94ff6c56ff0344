"""Masks and pruning rules: exact counts, tie-breaking, agreement with torch.nn.utils.prune."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from lth_tutorial.masks import (Mask, PruningRule, ladder_density, ladder_pm, prune_global, prune_layerwise,
                                prune_magnitude, prune_oneshot, random_mask_like)
from lth_tutorial.models import create_model, weight_kinds

LAYERWISE_FC = PruningRule({"fc": 0.2, "output": 0.1})
GLOBAL_CONV = PruningRule({"conv": 0.2}, scope="global")


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    kinds = weight_kinds(model)
    return {n: p.detach().clone() for n, p in model.named_parameters() if n in kinds}


@pytest.fixture(scope="module")
def lenet():
    model = create_model("lenet", seed=0)
    return _weights(model), weight_kinds(model)


@pytest.fixture(scope="module")
def resnet():
    model = create_model("resnet18", seed=0)
    return _weights(model), weight_kinds(model)


def _counts(mask: Mask) -> dict[str, int]:
    return {n: int(m.sum()) for n, m in mask.items()}


# ---- prune_layerwise on hand-written tensors --------------------------------------------------------


def test_layerwise_removes_the_smallest_magnitudes_exactly():
    w = {"a": torch.tensor([[0.5, -0.1, 3.0], [-2.0, 0.05, 0.7]])}
    mask = prune_layerwise(w, Mask.ones_like(w), {"a": 0.5})
    # round(0.5 * 6) = 3 smallest |w|: 0.05, -0.1, 0.5
    assert mask["a"].tolist() == [[False, False, True], [True, False, True]]
    assert mask["a"].dtype == torch.bool


def test_layerwise_rounding_is_pythons_round():
    w = {"a": torch.arange(1.0, 11.0), "b": torch.arange(1.0, 7.0), "c": torch.arange(1.0, 15.0)}
    mask = prune_layerwise(w, Mask.ones_like(w), {"a": 0.25, "b": 0.25, "c": 0.25})
    # 2.5 -> 2, 1.5 -> 2, 3.5 -> 4 (round half to even, as torch.nn.utils.prune does)
    assert _counts(mask) == {"a": 8, "b": 4, "c": 10}
    assert mask["a"].tolist() == [False, False] + [True] * 8
    assert mask["c"].tolist() == [False] * 4 + [True] * 10


def test_layerwise_ties_broken_by_position():
    w = {"a": torch.ones(2, 3)}
    mask = prune_layerwise(w, Mask.ones_like(w), {"a": 0.5})
    assert mask["a"].tolist() == [[False, False, False], [True, True, True]]
    # equal magnitudes with mixed signs; the 1s sit at flat positions 1, 2, 3, 5
    w = {"a": torch.tensor([[2.0, -1.0, 1.0], [-1.0, 3.0, 1.0]])}
    mask = prune_layerwise(w, Mask.ones_like(w), {"a": 0.5})
    assert mask["a"].tolist() == [[True, False, False], [False, True, True]]


def test_layerwise_pruned_weights_never_come_back_and_are_not_counted():
    w = {"a": torch.tensor([9.0, 8.0, 0.1, 0.2, 5.0, 6.0, 0.3, 7.0])}
    mask = Mask({"a": torch.tensor([False, False, True, True, True, True, True, True])})
    new = prune_layerwise(w, mask, {"a": 0.5})
    # 6 survivors -> round(3.0) = 3 removed: 0.1, 0.2, 0.3; the big pruned ones stay pruned
    assert new["a"].tolist() == [False, False, False, False, True, True, False, True]
    again = prune_layerwise(w, new, {"a": 0.5})
    # 3 survivors -> round(1.5) = 2 removed: 5.0, 6.0
    assert again["a"].tolist() == [False] * 7 + [True]
    # zeros at pruned positions (what training leaves there) are not candidates either
    zeroed = {"a": w["a"] * new["a"]}
    assert torch.equal(prune_layerwise(zeroed, new, {"a": 0.5})["a"], again["a"])
    # the input mask is not modified
    assert mask["a"].tolist() == [False, False, True, True, True, True, True, True]


def test_layerwise_leaves_unlisted_tensors_alone():
    w = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([1.0, 2.0])}
    mask = prune_layerwise(w, Mask.ones_like(w), {"a": 0.5})
    assert mask["a"].tolist() == [False, True]
    assert mask["b"].tolist() == [True, True]


# ---- prune_magnitude under a rule --------------------------------------------------------------------


def test_layerwise_rule_counts_follow_the_closed_form(lenet):
    weights, kinds = lenet
    mask = Mask.ones_like(weights)
    expected = {n: w.numel() for n, w in weights.items()}
    history = []
    for _ in range(5):
        mask = prune_magnitude(weights, mask, kinds, LAYERWISE_FC)
        expected = {n: c - round(LAYERWISE_FC.rate(kinds[n]) * c) for n, c in expected.items()}
        assert _counts(mask) == expected
        history.append(_counts(mask))
    # hand-computed: 235200 -> 188160 -> 150528 -> 120422, 30000 -> 24000 -> 19200 -> 15360,
    # 1000 -> 900 -> 810 -> 729 (the 0.1 rate on the output layer)
    assert [h["fc.0.weight"] for h in history[:3]] == [188160, 150528, 120422]
    assert [h["fc.2.weight"] for h in history[:3]] == [24000, 19200, 15360]
    assert [h["fc.4.weight"] for h in history[:4]] == [900, 810, 729, 656]


def test_rate_zero_kinds_are_untouched(lenet):
    weights, kinds = lenet
    rule = PruningRule({"fc": 0.5})
    mask = prune_magnitude(weights, Mask.ones_like(weights), kinds, rule)
    assert bool(mask["fc.4.weight"].all())
    assert _counts(mask)["fc.0.weight"] == 235200 // 2
    rule = PruningRule({"fc": 0.5, "output": 0.0})
    assert bool(prune_magnitude(weights, Mask.ones_like(weights), kinds, rule)["fc.4.weight"].all())


def test_layerwise_rule_prunes_smallest_within_each_layer(lenet):
    weights, kinds = lenet
    mask = prune_magnitude(weights, Mask.ones_like(weights), kinds, LAYERWISE_FC)
    for name, w in weights.items():
        removed, kept = w.abs()[~mask[name]], w.abs()[mask[name]]
        assert removed.max() <= kept.min()


def test_global_rule_one_threshold_and_exclusions(resnet):
    weights, kinds = resnet
    conv = [n for n, k in kinds.items() if k == "conv"]
    excluded = [n for n, k in kinds.items() if k != "conv"]
    assert {kinds[n] for n in excluded} == {"shortcut", "output"}
    total = sum(weights[n].numel() for n in conv)
    mask = Mask.ones_like(weights)
    survivors = total
    for _ in range(3):
        previous = mask
        mask = prune_magnitude(weights, mask, kinds, GLOBAL_CONV)
        survivors -= round(0.2 * survivors)
        assert sum(_counts(mask)[n] for n in conv) == survivors
        # one threshold: every weight removed this round is no larger than any survivor, in any tensor
        removed = torch.cat([weights[n].abs()[previous[n] & ~mask[n]] for n in conv])
        kept = torch.cat([weights[n].abs()[mask[n]] for n in conv])
        assert removed.max() <= kept.min()
        # and nothing pruned comes back
        assert all(bool((mask[n] <= previous[n]).all()) for n in conv)
        for n in excluded:
            assert bool(mask[n].all())
    # global pruning does not prune each layer at the same rate
    densities = {n: _counts(mask)[n] / weights[n].numel() for n in conv}
    assert max(densities.values()) - min(densities.values()) > 0.05


def test_ladder_pm_counts_the_never_pruned_weights(resnet, lenet):
    weights, kinds = resnet
    sizes = {n: w.numel() for n, w in weights.items()}
    conv = sum(s for n, s in sizes.items() if kinds[n] == "conv")
    assert (conv, sum(sizes.values())) == (267_696, 270_896)   # 2,560 shortcut + 640 output never pruned
    mask = Mask.ones_like(weights)
    survivors = conv
    for k in range(1, 4):
        mask = prune_magnitude(weights, mask, kinds, GLOBAL_CONV)
        survivors -= round(0.2 * survivors)
        # Pm over all weights, exactly what a round reports; the ladder is its unrounded form
        assert mask.density() == (survivors + 3_200) / 270_896
        assert ladder_pm(GLOBAL_CONV, kinds, sizes, k) == pytest.approx((conv * 0.8 ** k + 3_200) / 270_896,
                                                                        rel=1e-12)
        assert abs(mask.density() - ladder_pm(GLOBAL_CONV, kinds, sizes, k)) < 1 / 270_896
        assert ladder_density(GLOBAL_CONV, kinds, sizes, k) == pytest.approx(0.8 ** k, rel=1e-12)  # convs only
    # where every kind is pruned (LeNet) the two are one ladder
    weights, kinds = lenet
    sizes = {n: w.numel() for n, w in weights.items()}
    for k in (1, 3, 7):
        assert ladder_pm(LAYERWISE_FC, kinds, sizes, k) == pytest.approx(ladder_density(LAYERWISE_FC, kinds, sizes, k),
                                                                         rel=1e-12)
        assert ladder_pm(LAYERWISE_FC, kinds, sizes, k) == pytest.approx(
            (265_200 * 0.8 ** k + 1_000 * 0.9 ** k) / 266_200, rel=1e-12)


def test_global_union_is_exactly_the_globally_smallest():
    torch.manual_seed(0)
    weights = {"a": torch.randn(7, 5, dtype=torch.float64), "b": torch.randn(40, dtype=torch.float64) * 3}
    kinds = {"a": "conv", "b": "conv"}
    mask = prune_magnitude(weights, Mask.ones_like(weights), kinds, PruningRule({"conv": 0.3}, "global"))
    pool = torch.cat([weights["a"].abs().flatten(), weights["b"].abs().flatten()])
    smallest = set(torch.argsort(pool)[:round(0.3 * 75)].tolist())
    alive = torch.cat([mask["a"].flatten(), mask["b"].flatten()])
    assert set((~alive).nonzero().flatten().tolist()) == smallest


def test_global_ties_broken_by_position_across_tensors():
    weights = {"a": torch.ones(3), "b": torch.ones(3)}
    mask = prune_global(weights, Mask.ones_like(weights), 0.5, ["a", "b"])
    assert mask["a"].tolist() == [False, False, False]
    assert mask["b"].tolist() == [True, True, True]


# ---- agreement with torch.nn.utils.prune ------------------------------------------------------------


def _distinct_linear(seed: int, shape=(30, 41)) -> nn.Linear:
    layer = nn.Linear(shape[1], shape[0]).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    assert layer.weight.abs().unique().numel() == layer.weight.numel()  # topk vs stable sort can't differ
    return layer


@pytest.mark.parametrize("amount", [0.2, 0.1, 0.15, 0.25])
def test_layerwise_agrees_with_torch_l1_unstructured_over_rounds(amount):
    layer = _distinct_linear(1)
    weights = {"w": layer.weight.detach().clone()}
    mask, survivors = Mask.ones_like(weights), weights["w"].numel()
    for _ in range(6):
        prune.l1_unstructured(layer, "weight", amount=amount)  # iterative: relative to remaining entries
        mask = prune_layerwise(weights, mask, {"w": amount})
        assert torch.equal(layer.weight_mask.bool(), mask["w"])
        survivors -= round(amount * survivors)
        assert int(mask["w"].sum()) == survivors


@pytest.mark.parametrize("amount", [0.2, 0.35])
def test_global_agrees_with_torch_global_unstructured_over_rounds(amount):
    layers = [_distinct_linear(2, (20, 30)), _distinct_linear(3, (10, 20)), _distinct_linear(4, (5, 7))]
    with torch.no_grad():
        layers[1].weight.mul_(2.0)  # different scales, so per-layer densities differ
    names = ["l0", "l1", "l2"]
    weights = {n: l.weight.detach().clone() for n, l in zip(names, layers)}
    assert torch.cat([w.flatten() for w in weights.values()]).abs().unique().numel() == 600 + 200 + 35
    mask = Mask.ones_like(weights)
    for _ in range(4):
        prune.global_unstructured([(l, "weight") for l in layers], pruning_method=prune.L1Unstructured,
                                  amount=amount)
        mask = prune_global(weights, mask, amount, names)
        for n, l in zip(names, layers):
            assert torch.equal(l.weight_mask.bool(), mask[n])
    assert len({round(mask.density([n]), 3) for n in names}) == 3


# ---- one-shot --------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [0.5, 0.211, 0.0357])
def test_oneshot_layerwise_density_and_ladder(lenet, target):
    weights, kinds = lenet
    mask = prune_oneshot(weights, kinds, LAYERWISE_FC, target)
    total = mask.total()
    assert abs(mask.surviving() - target * total) <= 0.5 * len(weights)  # each layer rounds once
    assert abs(mask.density() - target) <= 1.5 / total
    # the real number of rounds k from the biggest layer; every layer sits on its rate's ladder at k
    k = math.log(mask.density(["fc.0.weight"])) / math.log(0.8)
    for name, w in weights.items():
        keep = (1 - LAYERWISE_FC.rate(kinds[name])) ** k
        assert abs(int(mask[name].sum()) - keep * w.numel()) <= 1.0
        # and removes the smallest of each layer
        assert w.abs()[~mask[name]].max() <= w.abs()[mask[name]].min()
    # the same k on the ladder gives the target
    sizes = {n: w.numel() for n, w in weights.items()}
    assert ladder_density(LAYERWISE_FC, kinds, sizes, k) == pytest.approx(target, abs=2 / total)


def test_oneshot_at_integer_rounds_matches_iterative_counts(lenet):
    weights, kinds = lenet
    sizes = {n: w.numel() for n, w in weights.items()}
    target = ladder_density(LAYERWISE_FC, kinds, sizes, 3)
    mask = prune_oneshot(weights, kinds, LAYERWISE_FC, target)
    # iterative counts after 3 rounds: 120422 / 15360 / 729; one-shot rounds each layer once: within 1
    for name, count in {"fc.0.weight": 120422, "fc.2.weight": 15360, "fc.4.weight": 729}.items():
        assert abs(int(mask[name].sum()) - count) <= 1


def test_oneshot_global_removes_exactly_the_smallest(resnet):
    weights, kinds = resnet
    conv = [n for n, k in kinds.items() if k == "conv"]
    total = sum(weights[n].numel() for n in conv)
    mask = prune_oneshot(weights, kinds, GLOBAL_CONV, 0.3)
    assert sum(int(mask[n].sum()) for n in conv) == total - round(0.7 * total)
    removed = torch.cat([weights[n].abs()[~mask[n]] for n in conv])
    kept = torch.cat([weights[n].abs()[mask[n]] for n in conv])
    assert removed.max() <= kept.min()
    assert all(bool(mask[n].all()) for n, k in kinds.items() if k != "conv")


def test_oneshot_rejects_bad_density(lenet):
    weights, kinds = lenet
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="density"):
            prune_oneshot(weights, kinds, LAYERWISE_FC, bad)


# ---- random control -------------------------------------------------------------------------------


def test_random_mask_like(lenet):
    weights, kinds = lenet
    mask = prune_magnitude(weights, Mask.ones_like(weights), kinds, LAYERWISE_FC)
    mask = prune_magnitude(weights, mask, kinds, LAYERWISE_FC)
    a, b, c = random_mask_like(mask, 1), random_mask_like(mask, 2), random_mask_like(mask, 1)
    assert _counts(a) == _counts(b) == _counts(mask)
    for n in mask:
        assert a[n].shape == mask[n].shape and a[n].dtype == torch.bool
        assert torch.equal(a[n], c[n])
        assert not torch.equal(a[n], b[n])
        assert not torch.equal(a[n], mask[n])


# ---- Mask helpers ----------------------------------------------------------------------------------


def test_mask_counts_and_densities():
    mask = Mask({"a": torch.tensor([True, False, False, False]), "b": torch.tensor([[True, True], [True, False]])})
    assert mask.surviving() == 4 and mask.total() == 8
    assert mask.density() == 0.5 and mask.density(["a"]) == 0.25
    assert mask.layer_densities() == {"a": 0.25, "b": 0.75}


# ---- PruningRule validation ------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5])
def test_rule_rejects_rates_outside_unit_interval(rate):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        PruningRule({"fc": rate})


def test_rule_rejects_unknown_kind_and_scope():
    with pytest.raises(ValueError, match="unknown layer kind 'bias'"):
        PruningRule({"bias": 0.2})
    with pytest.raises(ValueError, match="scope"):
        PruningRule({"fc": 0.2}, scope="local")


def test_global_rule_needs_one_rate():
    with pytest.raises(ValueError, match="one rate"):
        PruningRule({"conv": 0.2, "fc": 0.1}, scope="global")
    rule = PruningRule({"conv": 0.2, "fc": 0.0, "output": 0.2}, scope="global")  # zero rates are fine
    assert rule.prunable({"x": "conv", "y": "fc", "z": "output"}) == ["x", "z"]


def test_rule_is_hashable_by_content():
    assert hash(PruningRule({"fc": 0.2, "output": 0.1})) == hash(PruningRule({"output": 0.1, "fc": 0.2}))
    assert PruningRule({"fc": 0.2}) == PruningRule({"fc": 0.2})
    assert PruningRule({"fc": 0.2}) != PruningRule({"fc": 0.2}, scope="global")
