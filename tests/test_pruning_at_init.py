"""Pruning at initialization on toy networks with exact values: SNIP against a hand-written backward
pass, GraSP's Hessian-gradient product against finite differences, SynFlow's conservation law, the
iterative schedule's exact density, the ablations, and bad input."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lth_tutorial.data import Split
from lth_tutorial.masks import random_mask_like
from lth_tutorial.models import create_model, weight_kinds
from lth_tutorial.pruning_at_init import (METHODS, hessian_gradient_product, inverted, keep_top, prune_at_init,
                                          scoring_batch, snip_scores, synflow_scores)


def _tagged(*layers: nn.Module) -> nn.Sequential:
    """A toy net whose Linear layers carry the kinds `weight_kinds` reads."""
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    for i, m in enumerate(linears):
        m.lth_kind = "output" if i == len(linears) - 1 else "fc"
    return nn.Sequential(*layers)


def _two_layer(dtype=torch.float64, bias=True) -> nn.Sequential:
    torch.manual_seed(0)
    return _tagged(nn.Linear(3, 4, bias=bias), nn.ReLU(), nn.Linear(4, 2, bias=bias)).to(dtype)


def _batch(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return torch.randn(5, 3, generator=g, dtype=dtype), torch.tensor([0, 1, 1, 0, 1])


def test_snip_scores_equal_w_times_the_hand_computed_gradient():
    net, (x, y) = _two_layer(), _batch()
    w1, b1, w2, b2 = (p.detach() for p in net.parameters())
    z = x @ w1.T + b1
    h = z.clamp(min=0)
    logits = h @ w2.T + b2
    dlogits = (logits.softmax(1) - torch.nn.functional.one_hot(y, 2)) / len(y)  # mean cross-entropy
    dw2 = dlogits.T @ h
    dz = (dlogits @ w2) * (z > 0)
    dw1 = dz.T @ x
    scores = snip_scores(net, (x, y))
    assert torch.allclose(scores["0.weight"], (w1 * dw1).abs(), atol=1e-12)
    assert torch.allclose(scores["2.weight"], (w2 * dw2).abs(), atol=1e-12)


def test_grasp_hessian_gradient_product_equals_finite_differences():
    net, batch = _two_layer(), _batch()
    net[1] = nn.Tanh()  # a smooth net: the finite difference of the gradient is then exact to O(eps^2)
    hg = hessian_gradient_product(net, batch, temperature=2.0)
    params = [net[0].weight, net[2].weight]

    def gradient() -> list[torch.Tensor]:
        loss = nn.functional.cross_entropy(net(batch[0]) / 2.0, batch[1])
        return [g.detach() for g in torch.autograd.grad(loss, params)]

    g = gradient()
    eps = 1e-5
    with torch.no_grad():
        for p, d in zip(params, g):
            p.add_(eps * d)
    plus = gradient()
    with torch.no_grad():
        for p, d in zip(params, g):
            p.sub_(2 * eps * d)
    minus = gradient()
    for name, a, b in zip(("0.weight", "2.weight"), plus, minus):
        assert torch.allclose(hg[name], (a - b) / (2 * eps), atol=1e-9, rtol=1e-6)


def test_synflow_layer_sums_are_equal_for_a_bias_free_relu_net():
    torch.manual_seed(0)
    net = _tagged(nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 4, bias=False), nn.ReLU(),
                  nn.Linear(4, 3, bias=False)).double()
    scores = synflow_scores(net, (torch.zeros(1, 6), None))
    sums = [float(s.sum()) for s in scores.values()]
    r = float((torch.ones(1, 3, dtype=torch.float64) @ net[4].weight.detach().abs()
               @ net[2].weight.detach().abs() @ net[0].weight.detach().abs() @ torch.ones(6, 1, dtype=torch.float64)).squeeze())
    assert sums == pytest.approx([r, r, r], rel=1e-6)        # each layer's total is R_SF itself
    # and per hidden unit: incoming scores sum to its outgoing scores (neuron-wise conservation)
    assert torch.allclose(scores["0.weight"].sum(1), scores["2.weight"].sum(0), rtol=1e-6)


@pytest.mark.parametrize("density", [0.5, 0.036, 0.012])
def test_iterative_synflow_lands_on_the_exact_target_density(density):
    model = create_model("lenet", seed=0)
    mask = prune_at_init("synflow", model, density, iterations=10)
    total = mask.total()
    assert mask.surviving() == round(density * total)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_keeps_exactly_the_target_count(method, data_root):
    from lth_tutorial.data import load_splits
    from lth_tutorial.presets import experiment

    splits = load_splits(experiment("lenet-mnist", "quick").data)
    model = create_model("lenet", seed=0)
    batch = scoring_batch(splits.train, per_class=10, seed=0)
    assert batch[1].tolist() == sorted(batch[1].tolist()) and batch[1].bincount().tolist() == [10] * 10
    mask = prune_at_init(method, model, 0.2, batch, iterations=5)
    assert mask.surviving() == round(0.2 * mask.total())
    assert set(mask) == set(weight_kinds(model))


def test_keep_top_ranks_globally_with_ties_by_position():
    scores = {"a": torch.tensor([3.0, 1.0, 2.0]), "b": torch.tensor([[1.0, 5.0], [0.5, 1.0]])}
    mask = keep_top(scores, 3 / 7)
    assert mask["a"].tolist() == [True, False, True] and mask["b"].tolist() == [[False, True], [False, False]]
    inverse = keep_top(inverted(scores), 3 / 7)
    # -0.5 first, then two of the three tied -1s: the tie at the lowest position (a[1]) goes first
    assert inverse["a"].tolist() == [False, False, False] and inverse["b"].tolist() == [[True, False], [True, True]]


def test_shuffle_ablation_keeps_every_layers_count():
    mask = prune_at_init("magnitude-init", create_model("lenet", seed=0), 0.1)
    shuffled = random_mask_like(mask, seed=3)
    assert {n: int(m.sum()) for n, m in shuffled.items()} == {n: int(m.sum()) for n, m in mask.items()}
    assert any(not torch.equal(shuffled[n], mask[n]) for n in mask)


@pytest.mark.parametrize("method, density, message", [
    ("snip", 0.0, "density must be in (0, 1); got 0.0"),
    ("synflow", 1.0, "density must be in (0, 1); got 1.0"),
    ("grasp", -0.5, "density must be in (0, 1)"),
    ("obd", 0.5, "unknown pruning method 'obd'; choose one of magnitude-init, random, snip, grasp, synflow"),
    ("snip", 0.5, "snip scores on a batch of training data"),
])
def test_bad_input_is_one_line(method, density, message):
    with pytest.raises(ValueError) as error:
        prune_at_init(method, create_model("lenet", seed=0), density)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_scoring_batch_refuses_too_few_examples():
    split = Split(torch.zeros(4, 1, 2, 2), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="class 0 has 2 examples, fewer than the 3"):
        scoring_batch(split, per_class=3)


def test_mask_cost_counts_the_training_and_scoring_a_mask_took():
    from lth_tutorial.presets import experiment
    from lth_tutorial.rounds import mask_cost

    def cost(index, **kw):
        return mask_cost(experiment("lenet-mnist", "quick", **kw), index)   # 3,000 iterations per round

    assert cost(0) == {"mask_iterations": 0, "scoring_passes": 0, "train_iterations": 3000}
    assert cost(3) == {"mask_iterations": 9000, "scoring_passes": 0, "train_iterations": 3000}  # rounds 0-2
    assert cost(3, strategy="rewind:100") == {"mask_iterations": 8800, "scoring_passes": 0, "train_iterations": 2900}
    assert cost(2, oneshot=(0.5, 0.2))["mask_iterations"] == 3000                                # the dense round
    assert cost(1, oneshot=(0.2,), method="snip") == {"mask_iterations": 0, "scoring_passes": 1,
                                                       "train_iterations": 3000}
    assert cost(1, oneshot=(0.2,), method="synflow")["scoring_passes"] == 100
    assert cost(1, oneshot=(0.2,), method="grasp", control="invert")["scoring_passes"] == 2
