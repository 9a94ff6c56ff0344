"""Supermasks: the straight-through estimator, signed constants, masked inits, learning and determinism."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lth_tutorial.data import Split, Splits
from lth_tutorial.masks import Mask
from lth_tutorial.models import glorot_init
from lth_tutorial.supermask import (SupermaskConfig, learn_supermask, masked_accuracy, masked_weights,
                                    signed_constant, straight_through_mask)
from lth_tutorial.training import evaluate

TOY = SupermaskConfig(200, batch_size=50, eval_every=50)  # the paper's lr 100 and momentum 0.9


def _toy_model(seed: int = 0, hidden: int = 64) -> nn.Module:
    """8 -> hidden -> 3 ReLU net with the package's init and kinds, so weight_kinds sees both weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hidden_layer, output = nn.Linear(8, hidden), nn.Linear(hidden, 3)
        hidden_layer.lth_kind, output.lth_kind = "fc", "output"
        model = nn.Sequential(hidden_layer, nn.ReLU(), output)
        glorot_init(model)
    return model


@pytest.fixture(scope="module")
def splits() -> Splits:
    """Linearly separable 3-class task: labels are the argmax of a fixed random linear teacher."""
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(8, 3, generator=g)

    def split(n: int) -> Split:
        x = torch.randn(n, 8, generator=g)
        return Split(x, (x @ teacher).argmax(1))

    return Splits(split(500), split(200), split(200))


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if n.endswith("weight")}


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# ---- the straight-through estimator ----------------------------------------------------------------


def test_straight_through_value_is_the_sample_and_gradient_is_that_of_sigmoid():
    g = torch.Generator().manual_seed(0)
    x, target = torch.randn(5, 4, generator=g), torch.randn(5, 3, generator=g)
    w = torch.randn(3, 4, generator=g)
    scores = torch.randn(3, 4, generator=g).mul(2).requires_grad_()
    m = straight_through_mask(scores, torch.Generator().manual_seed(7))
    sample = torch.bernoulli(torch.sigmoid(scores.detach()), generator=torch.Generator().manual_seed(7))
    assert torch.equal(m.detach(), sample)  # exactly 0/1, no 1 + p - p rounding
    assert 0 < int(sample.sum()) < sample.numel()
    loss = 0.5 * ((x @ (w * m).T - target) ** 2).sum()
    (grad,) = torch.autograd.grad(loss, scores)
    # by hand: dL/dW_eff = r^T x with r the residual at the sample; dL/dm = dL/dW_eff * w; times dsigmoid
    residual = x @ (w * sample).T - target
    p = torch.sigmoid(scores.detach())
    expected = (residual.T @ x) * w * p * (1 - p)
    assert torch.allclose(grad, expected, rtol=1e-5, atol=1e-7)
    # straight-through: a weight the sample dropped still gets its gradient
    assert (grad[sample == 0] != 0).all()


def test_straight_through_value_is_exactly_zero_or_one_at_scale():
    """(1 + p) - p rounds away from 1 for about a fifth of float32 p; the sample must not."""
    scores = torch.randn(10_000, generator=torch.Generator().manual_seed(1)).mul(3).requires_grad_()
    m = straight_through_mask(scores, torch.Generator().manual_seed(2))
    sample = torch.bernoulli(torch.sigmoid(scores.detach()), generator=torch.Generator().manual_seed(2))
    assert torch.equal(m.detach(), sample)


def test_dynamic_scaling_multiplies_by_weights_over_ones():
    w = torch.arange(1.0, 11.0).view(2, 5)
    m = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 0, 0, 1]], dtype=torch.bool)
    plain = masked_weights({"w": w, "b": torch.ones(2)}, {"w": m})
    scaled = masked_weights({"w": w, "b": torch.ones(2)}, {"w": m}, dynamic_scaling=True)
    assert torch.equal(plain["w"], w * m)
    assert torch.equal(scaled["w"], w * m * 2.5)  # 10 weights / 4 ones
    assert torch.equal(scaled["b"], torch.ones(2))


# ---- signed constants ------------------------------------------------------------------------------


def test_signed_constant_keeps_signs_and_takes_each_layers_std():
    g = torch.Generator().manual_seed(3)
    weights = {"a.weight": torch.randn(6, 4, generator=g), "b.weight": 5 * torch.randn(3, 6, generator=g),
               "a.bias": torch.randn(6, generator=g)}
    weights["a.weight"][0, :3] = 0.0
    out = signed_constant(weights, ["a.weight", "b.weight"])
    for name in ("a.weight", "b.weight"):
        w = weights[name]
        assert torch.equal(torch.sign(out[name]), torch.sign(w))
        magnitudes = out[name][w != 0].abs()
        assert torch.equal(magnitudes, torch.full_like(magnitudes, magnitudes[0]))
        assert float(magnitudes[0]) == pytest.approx(float(np.std(w.numpy())), rel=1e-6)  # np.std: ddof 0
    assert torch.equal(out["a.weight"][0, :3], torch.zeros(3))
    assert float(out["b.weight"].abs().max()) > 3 * float(out["a.weight"].abs().max())  # per layer
    assert torch.equal(out["a.bias"], weights["a.bias"])
    assert out["a.bias"].data_ptr() != weights["a.bias"].data_ptr()


# ---- masked inits ----------------------------------------------------------------------------------


def test_masked_accuracy_all_ones_is_the_model_and_all_zeros_predicts_class_zero(splits):
    model = _toy_model()
    before = _state(model)
    ones = masked_accuracy(model, Mask.ones_like(_weights(model)), splits.test)
    assert ones == float(evaluate(model, splits.test)[1])
    zeros = Mask({n: torch.zeros_like(m) for n, m in Mask.ones_like(_weights(model)).items()})
    expected = float((splits.test.labels == 0).float().mean())  # zero biases: all logits 0, argmax 0
    assert masked_accuracy(model, zeros, splits.test) == expected
    assert expected != ones
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_masked_accuracy_applies_the_weights_given(splits):
    model = _toy_model()
    constants = signed_constant(_weights(model), list(_weights(model)))
    reference = _toy_model()
    with torch.no_grad():
        for name, p in reference.named_parameters():
            p.copy_(constants.get(name, p))
    got = masked_accuracy(model, Mask.ones_like(constants), splits.test, weights=constants)
    assert got == float(evaluate(reference, splits.test)[1])
    assert got != masked_accuracy(model, Mask.ones_like(constants), splits.test)


# ---- learning a supermask --------------------------------------------------------------------------


def test_learned_supermask_beats_chance_and_leaves_the_model_untouched(splits):
    model = _toy_model().eval()
    before = _state(model)
    init_accuracy = masked_accuracy(model, Mask.ones_like(_weights(model)), splits.test)

    class Counter:
        total = 0

        def update(self, n):
            self.total += n

    counter = Counter()
    result = learn_supermask(model, splits, replace(TOY, iterations=190), seed=1, progress=counter)
    assert init_accuracy < 0.45  # chance is 1/3: the init alone does not solve the task
    assert result.sampled_test_accuracy > 0.7
    assert result.rounded_test_accuracy > 0.7
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training and all(p.requires_grad for p in model.parameters())  # a copy learned
    assert result.curves["iteration"] == [50, 100, 150, 190]
    assert counter.total == 190
    probabilities = torch.cat([torch.sigmoid(s).flatten() for s in result.scores.values()])
    assert result.density == pytest.approx(float(probabilities.mean()), rel=1e-6)
    assert 0.0 < result.density < 1.0
    rounded = result.rounded_mask()
    assert set(rounded) == {"0.weight", "2.weight"} and rounded["0.weight"].dtype == torch.bool
    # the rounded mask on the init is what learn_supermask reported for it
    assert masked_accuracy(model, rounded, splits.test) == result.rounded_test_accuracy


@pytest.mark.parametrize("flags", [{"dynamic_scaling": True}, {"signed_constant": True}], ids=["dwr", "signed"])
def test_variants_learn_too(splits, flags):
    model = _toy_model()
    result = learn_supermask(model, splits, replace(TOY, **flags), seed=1)
    assert result.sampled_test_accuracy > 0.7
    if flags.get("signed_constant"):
        constants = signed_constant(_weights(model), list(_weights(model)))
        assert masked_accuracy(model, result.rounded_mask(), splits.test, weights=constants) \
            == result.rounded_test_accuracy


def test_same_seed_same_scores_different_seed_different_scores(splits):
    model = _toy_model()
    config = replace(TOY, iterations=60, eval_every=30)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = learn_supermask(model, splits, config, seed=4)
    assert torch.equal(torch.rand(3), expected)  # the global RNG is not touched
    b = learn_supermask(model, splits, config, seed=4)
    c = learn_supermask(model, splits, config, seed=5)
    assert all(torch.equal(a.scores[n], b.scores[n]) for n in a.scores)
    assert (a.curves, a.sampled_test_accuracy, a.rounded_test_accuracy) == \
        (b.curves, b.sampled_test_accuracy, b.rounded_test_accuracy)
    assert not torch.equal(a.scores["0.weight"], c.scores["0.weight"])


def test_names_limit_the_masked_weights(splits):
    model = _toy_model()
    result = learn_supermask(model, splits, replace(TOY, iterations=10, eval_every=10), seed=0,
                             names=["2.weight"])
    assert list(result.scores) == ["2.weight"]


def test_config_validation():
    with pytest.raises(ValueError, match="positive"):
        SupermaskConfig(0)
    with pytest.raises(ValueError, match="lr"):
        SupermaskConfig(10, lr=0.0)
