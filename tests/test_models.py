"""lth_tutorial.models: the paper's six networks, their sizes, initialization and weight kinds."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from lth_tutorial.data import NORMALIZATION, load_split
from lth_tutorial.models import (INPUT_SHAPES, KINDS, MODELS, UnknownModelError, count_weights, create_model,
                                 model_kinds, weight_kinds)

NAMES = ("lenet", "conv2", "conv4", "conv6", "vgg19", "resnet18")

# Weights (conv + linear, no biases, no batch norm) of each network, as in the paper's Figure 2 / Table 1.
TOTAL_WEIGHTS = {"lenet": 266_200, "conv2": 4_300_992, "conv4": 2_425_024, "conv6": 2_261_184,
                 "vgg19": 20_024_000, "resnet18": 270_896}


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    return {name: create_model(name, seed=0) for name in NAMES}


def _normalized(images: torch.Tensor, dataset: str) -> torch.Tensor:
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in NORMALIZATION[dataset])
    return (images.float() / 255 - mean) / std


@pytest.fixture(scope="module")
def real_batches(data_root: Path, cifar_root: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Eight real test images of each dataset, normalized as training sees them."""
    mnist_x, mnist_y = load_split("mnist", "test", root=data_root)
    cifar_x, cifar_y = load_split("cifar10", "test", 1000, root=cifar_root)
    return {"mnist": (_normalized(mnist_x[:8], "mnist"), mnist_y[:8]),
            "cifar10": (_normalized(cifar_x[:8], "cifar10"), cifar_y[:8])}


def test_registry_holds_the_six_networks():
    assert tuple(MODELS) == NAMES
    assert MODELS["lenet"][1] == "mnist"
    assert all(MODELS[name][1] == "cifar10" for name in NAMES[1:])


@pytest.mark.parametrize("name", NAMES)
def test_weight_counts(models, name):
    model = models[name]
    assert count_weights(model) == TOTAL_WEIGHTS[name]
    # the kinds partition the weights
    assert sum(count_weights(model, (kind,)) for kind in KINDS) == TOTAL_WEIGHTS[name]
    # and the kinds are exactly the conv and linear weights: no bias or batch norm is ever a weight
    expected = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert set(weight_kinds(model)) == expected


def test_paper_pruning_scheme_sizes(models):
    vgg, resnet = models["vgg19"], models["resnet18"]
    # VGG-19 and ResNet prune the convolutions only; the output layer and shortcuts are left dense
    assert count_weights(vgg, ("conv",)) == 20_018_880
    assert count_weights(vgg, ("output",)) == 5_120
    assert count_weights(vgg, ("fc", "shortcut")) == 0
    assert count_weights(resnet, ("conv",)) == 267_696
    assert count_weights(resnet, ("shortcut",)) == 2_560
    assert count_weights(resnet, ("output",)) == 640
    assert count_weights(resnet, ("fc",)) == 0
    # LeNet: fc layers and the output layer (pruned at half the rate in the paper)
    assert count_weights(models["lenet"], ("fc",)) == 265_200
    assert count_weights(models["lenet"], ("output",)) == 1_000
    for name in ("conv2", "conv4", "conv6"):
        assert count_weights(models[name], ("output",)) == 2_560


def test_weight_kind_tags(models):
    assert list(weight_kinds(models["lenet"]).values()) == ["fc", "fc", "output"]
    for name, convs in (("conv2", 2), ("conv4", 4), ("conv6", 6)):
        assert list(weight_kinds(models[name]).values()) == ["conv"] * convs + ["fc", "fc", "output"]
    assert list(weight_kinds(models["vgg19"]).values()) == ["conv"] * 16 + ["output"]
    resnet = weight_kinds(models["resnet18"])
    shortcuts = [name for name, kind in resnet.items() if kind == "shortcut"]
    assert len(shortcuts) == 2
    assert all(tuple(dict(models["resnet18"].named_parameters())[n].shape[2:]) == (1, 1) for n in shortcuts)
    assert sum(kind == "conv" for kind in resnet.values()) == 19
    assert [kind for kind in resnet.values() if kind == "output"] == ["output"]
    assert list(resnet)[-1] == "output.weight"
    params = dict(models["resnet18"].named_parameters())
    assert all(name in params for name in resnet)


@pytest.mark.parametrize("name", NAMES)
def test_forward_on_real_images(models, real_batches, name):
    dataset = MODELS[name][1]
    images, _ = real_batches[dataset]
    assert images.shape[1:] == INPUT_SHAPES[dataset]
    model = models[name].eval()
    with torch.no_grad():
        out = model(images)
    assert out.shape == (8, 10)
    assert torch.isfinite(out).all()
    assert out.std(0).mean() > 0  # different images, different logits


def _fans(weight: torch.Tensor) -> tuple[int, int]:
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


@pytest.mark.parametrize("name", NAMES)
def test_gaussian_glorot_initialization(models, name):
    checked = 0
    for module in models[name].modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            weight = module.weight.detach()
            if weight.numel() >= 10_000:  # enough samples for a 3% test (standard error <= 0.7%)
                fan_in, fan_out = _fans(weight)
                expected = math.sqrt(2 / (fan_in + fan_out))
                assert abs(weight.std().item() / expected - 1) < 0.03, (name, tuple(weight.shape))
                assert abs(weight.mean().item()) < 5 * expected / math.sqrt(weight.numel())
                # Gaussian, not uniform: about 31.7% of a normal lies beyond one standard deviation
                beyond = (weight.abs() > expected).float().mean().item()
                assert abs(beyond - 0.3173) < 0.02
                checked += 1
            if module.bias is not None:
                assert torch.count_nonzero(module.bias) == 0
        elif isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
    assert checked >= 2


def test_create_model_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = create_model("conv2", seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    b = create_model("conv2", seed=5)
    c = create_model("conv2", seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["features.0.weight"], sc["features.0.weight"])
    assert torch.equal(torch.get_rng_state(), state)
    # without a seed, the global generator decides
    torch.manual_seed(9)
    d = create_model("lenet")
    torch.manual_seed(9)
    e = create_model("lenet")
    assert torch.equal(d.state_dict()["fc.0.weight"], e.state_dict()["fc.0.weight"])


def test_unknown_model_lists_the_names():
    with pytest.raises(UnknownModelError) as info:
        create_model("resnet50")
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "resnet50" in message
    assert all(name in message for name in NAMES)


@pytest.mark.parametrize("name", ["lenet", "conv2", "conv4", "conv6"])
def test_dropout_goes_into_the_fc_head(name):
    plain = create_model(name, seed=0)
    assert not any(isinstance(m, nn.Dropout) for m in plain.modules())
    model = create_model(name, seed=0, dropout=0.5)
    dropouts = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 2  # after each hidden fc layer
    assert all(n.startswith("fc.") and m.p == 0.5 for n, m in dropouts)
    assert count_weights(model) == TOTAL_WEIGHTS[name]
    assert list(weight_kinds(model).values()) == list(weight_kinds(plain).values())
    # each dropout follows a hidden fc layer (Linear, ReLU, Dropout), never the output
    head = list(model.fc)
    for i, layer in enumerate(head):
        if isinstance(layer, nn.Dropout):
            assert isinstance(head[i - 1], nn.ReLU) and isinstance(head[i - 2], nn.Linear)
    assert isinstance(head[-1], nn.Linear) and head[-1].out_features == 10
    # same seed, same initial weights with or without dropout
    assert all(torch.equal(p, q) for p, q in zip(plain.state_dict().values(), model.state_dict().values()))


@pytest.mark.parametrize("name", ["vgg19", "resnet18"])
def test_no_dropout_for_batch_norm_networks(name):
    with pytest.raises(ValueError, match="no dropout"):
        create_model(name, dropout=0.5)


@pytest.mark.parametrize("name", NAMES)
def test_model_kinds_are_the_kinds_of_a_real_build(models, name):
    # model_kinds builds on the meta device; it must agree with a real model, e.g. lenet {fc, output}
    assert model_kinds(name) == frozenset(weight_kinds(models[name]).values())
    assert model_kinds(name) == {"lenet": {"fc", "output"}, "conv2": {"conv", "fc", "output"},
                                 "conv4": {"conv", "fc", "output"}, "conv6": {"conv", "fc", "output"},
                                 "vgg19": {"conv", "output"}, "resnet18": {"conv", "shortcut", "output"}}[name]
