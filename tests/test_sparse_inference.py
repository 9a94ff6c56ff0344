"""A ticket at inference: CSR layers compute what the masked dense model computes, prune's reparametrization
is the mask bitwise, 2:4 masks are exact and never the ticket's own, and sizes are counted to the byte.

Models are real LeNet / Conv-2 inits with the preset's magnitude masks (`prune_oneshot`), on real MNIST
test images; nothing is trained here.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lth_tutorial.data import NORMALIZATION, load_split
from lth_tutorial.masks import Mask, PruningRule, prune_oneshot
from lth_tutorial.models import create_model, weight_kinds
from lth_tutorial.sparse_inference import (CSRLinear, csr_model, is_two_four, parameter_bytes, prune_model,
                                           semi_structured_model, semi_structured_support, two_four_mask,
                                           zeroed_model)

LENET_RULE = PruningRule({"fc": 0.2, "output": 0.1})   # the paper's LeNet rule; prune_oneshot follows its ladder


def _ticket(model_name: str, density: float, seed: int = 0) -> tuple[nn.Module, Mask]:
    model = create_model(model_name, seed=seed)
    kinds = weight_kinds(model)
    weights = {n: p.detach() for n, p in model.named_parameters() if n in kinds}
    rule = LENET_RULE if model_name == "lenet" else PruningRule({"conv": 0.1, "fc": 0.2, "output": 0.1})
    return model, prune_oneshot(weights, kinds, rule, density)


@pytest.fixture(scope="module")
def mnist_batch(data_root):
    images, labels = load_split("mnist", "test", 1_000)
    (mean,), (std,) = NORMALIZATION["mnist"]
    return (images.float() / 255 - mean) / std


@pytest.mark.parametrize("density", [1.0, 0.512, 0.107, 0.036, 0.012])
def test_csr_model_computes_what_the_masked_dense_model_computes(mnist_batch, density):
    model, mask = _ticket("lenet", density)
    assert mask.density() == pytest.approx(density, abs=1e-3)
    with torch.no_grad():
        masked = prune_model(model, mask)(mnist_batch)
        csr = csr_model(model, mask)(mnist_batch)
    # Not bitwise: a CSR row sums only its survivors, in another order than the dense GEMM's blocked
    # sums, and float32 addition is not associative. Seen here: at most 2.5e-6 on logits up to ~4.
    torch.testing.assert_close(csr, masked, rtol=1e-5, atol=1e-5)
    assert torch.equal(csr.argmax(1), masked.argmax(1))      # the same 1,000 predictions


def test_csr_layers_hold_only_the_survivors_and_conv_layers_stay_dense():
    model, mask = _ticket("conv2", 0.107)
    csr = csr_model(model, mask)
    layers = dict(csr.named_modules())
    assert [n for n, m in layers.items() if isinstance(m, CSRLinear)] == ["fc.0", "fc.2", "fc.4"]
    for name in ("fc.0", "fc.2", "fc.4"):
        assert layers[name].weight.layout == torch.sparse_csr
        assert layers[name].weight.values().numel() == int(mask[f"{name}.weight"].sum())
        assert torch.equal(layers[name].weight.to_dense(), model.get_parameter(f"{name}.weight") * mask[f"{name}.weight"])
    conv = layers["features.0"]
    assert isinstance(conv, nn.Conv2d) and torch.equal(conv.weight == 0, ~mask["features.0.weight"] |
                                                       (model.features[0].weight == 0))
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(csr(x), zeroed_model(model, mask)(x), rtol=1e-5, atol=1e-5)


def test_prune_reparametrization_is_weight_times_mask_bitwise():
    model, mask = _ticket("lenet", 0.036)
    pruned = prune_model(model, mask)
    for name, m in mask.items():
        layer = pruned.get_submodule(name.rsplit(".", 1)[0])
        original = model.get_parameter(name)
        assert torch.equal(layer.weight_orig, original) and torch.equal(layer.weight_mask, m.float())
        assert torch.equal(layer.weight, original * m)
    assert torch.equal(model.fc[0].weight, create_model("lenet", seed=0).fc[0].weight)   # the input is untouched


def _hand_built() -> tuple[nn.Module, Mask]:
    layer = nn.Linear(4, 3)
    mask = Mask({"0.weight": torch.tensor([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 0, 1]], dtype=torch.bool)})
    return nn.Sequential(layer), mask   # 5 of 12 weights survive


def test_parameter_bytes_of_each_representation_are_exact():
    model, mask = _hand_built()
    assert parameter_bytes(zeroed_model(model, mask)) == (12 + 3) * 4                    # dense fp32 weight + bias
    assert parameter_bytes(prune_model(model, mask)) == 12 * 4 + 3 * 4 + 12 * 4          # weight_orig + bias + fp32 mask
    # CSR: 5 values, 5 column indices, 3 + 1 row pointers (int32 by default), the bias
    assert parameter_bytes(csr_model(model, mask)) == 5 * 4 + 5 * 4 + 4 * 4 + 3 * 4
    assert parameter_bytes(csr_model(model, mask, index_dtype=torch.int64)) == 5 * 4 + 5 * 8 + 4 * 8 + 3 * 4
    # a compact model (what part A's compact_model builds): the empty row gone, a smaller dense layer
    assert parameter_bytes(nn.Sequential(nn.Linear(4, 2))) == (8 + 2) * 4
    # batch-norm statistics are inference state too, counted once each
    assert parameter_bytes(nn.BatchNorm1d(3)) == 4 * 3 * 4 + 8


def test_two_four_mask_keeps_the_two_largest_survivors_of_every_four():
    weights = {"w": torch.tensor([[0.1, -0.5, 0.3, 0.2, 9.0, 1.0],
                                  [0.4, 0.4, 0.4, 0.4, 0.0, 0.0]]),
               "conv": torch.ones(2, 1, 3, 3)}
    mask = Mask({"w": torch.tensor([[1, 1, 1, 1, 1, 1],
                                    [1, 1, 0, 1, 0, 1]], dtype=torch.bool),
                 "conv": torch.ones(2, 1, 3, 3, dtype=torch.bool)})
    two_four = two_four_mask(weights, mask)
    expected = torch.tensor([[0, 1, 1, 0, 1, 1],     # |-0.5|, 0.3 of the first four; both of the last (padded) group
                             [0, 1, 0, 1, 0, 1]],    # a tie of three survivors: the lower index goes first
                            dtype=torch.bool)
    assert torch.equal(two_four["w"], expected)
    assert torch.equal(two_four["conv"], mask["conv"])                  # only 2-D (Linear) weights are 2:4
    assert is_two_four(two_four["w"]) and not is_two_four(mask["w"])
    assert torch.equal(mask["w"], torch.tensor([[1] * 6, [1, 1, 0, 1, 0, 1]], dtype=torch.bool))   # the ticket is kept


def test_two_four_mask_of_a_real_ticket_is_another_sparser_mask():
    model, mask = _ticket("lenet", 0.512)
    two_four = two_four_mask(dict(model.named_parameters()), mask)
    assert all(is_two_four(m) for m in two_four.values())
    assert all(not (two_four[n] & ~mask[n]).any() for n in mask)        # only ever removes survivors
    assert two_four.density() < 0.5 < mask.density()


@pytest.mark.skipif(semi_structured_support("cuda") is None, reason="this machine has a GPU with 2:4 kernels")
def test_semi_structured_model_without_a_capable_gpu_is_one_clear_line():
    model, mask = _ticket("lenet", 0.5)
    with pytest.raises(ValueError) as error:
        semi_structured_model(model, two_four_mask(dict(model.named_parameters()), mask))
    message = str(error.value)
    assert "2:4 semi-structured" in message and "csr_model" in message and "\n" not in message


def test_a_mask_of_another_model_names_the_fix():
    model, _ = _ticket("lenet", 0.5)
    _, conv_mask = _ticket("conv2", 0.5)
    with pytest.raises(ValueError, match="pair a mask with the model it was made for"):
        csr_model(model, conv_mask)


@pytest.mark.skipif(semi_structured_support("cuda") is not None, reason="needs a CUDA GPU with 2:4 kernels")
def test_semi_structured_model_computes_its_own_masks_function_on_a_gpu(mnist_batch):
    model, mask = _ticket("lenet", 0.512)
    model = model.cuda()
    two_four = two_four_mask(dict(model.named_parameters()), mask.to("cuda"))
    with pytest.raises(ValueError, match="not 2:4"):
        semi_structured_model(model, mask.to("cuda"))               # the ticket's own mask is refused
    x = mnist_batch[:64].cuda().half()
    with torch.no_grad():
        reference = zeroed_model(model, two_four).half()(x)
        out = semi_structured_model(model, two_four)(x)
    # fp16 on both sides, another kernel: agreement to fp16 rounding of sums over up to 784 terms
    torch.testing.assert_close(out, reference, rtol=1e-2, atol=1e-2)
