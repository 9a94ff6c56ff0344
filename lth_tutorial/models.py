"""The paper's six networks, their initialization, and the kind of every prunable weight.

Owns: LeNet-300-100, Conv-2/4/6 (optional dropout on the fc layers), VGG-19 for CIFAR and the paper's
"ResNet-18" (the 20-layer CIFAR ResNet); Gaussian Glorot init with zero biases; a registry that creates
models by name; and `weight_kinds`, which tags each prunable weight tensor as conv / fc / output /
shortcut so that pruning rules can be stated as data (`model_kinds`: the kinds a model has). Biases and
batch norm are never prunable.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn

KINDS = ("conv", "fc", "output", "shortcut")
INPUT_SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def _tag(layer: nn.Module, kind: str) -> nn.Module:
    layer.lth_kind = kind  # read by weight_kinds(); a plain attribute survives copy and state_dict
    return layer


def glorot_init(model: nn.Module) -> None:
    """Gaussian Glorot (normal Xavier) for conv and linear weights, zero biases, BN at (1, 0)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def weight_kinds(model: nn.Module) -> dict[str, str]:
    """Parameter name -> kind, for every conv and linear weight (the tensors a mask covers)."""
    return {f"{name}.weight": module.lth_kind for name, module in model.named_modules()
            if hasattr(module, "lth_kind")}


@functools.lru_cache(maxsize=None)
def _meta_weight_kinds(name: str, dropout: float) -> tuple[tuple[str, str], ...]:
    with torch.device("meta"):
        return tuple(weight_kinds(create_model(name, dropout=dropout)).items())


def model_weight_kinds(name: str, dropout: float = 0.0) -> dict[str, str]:
    """`weight_kinds` of model `name` from a cached meta-device build (no memory, no init cost)."""
    return dict(_meta_weight_kinds(name, dropout))


@functools.lru_cache(maxsize=None)
def model_kinds(name: str) -> frozenset[str]:
    """The kinds of weights model `name` has, from a meta-device build (no memory, no init cost)."""
    with torch.device("meta"):
        return frozenset(weight_kinds(create_model(name)).values())


def count_weights(model: nn.Module, kinds: tuple[str, ...] = KINDS) -> int:
    params = dict(model.named_parameters())
    return sum(params[name].numel() for name, kind in weight_kinds(model).items() if kind in kinds)


def _fc_head(in_features: int, hidden: tuple[int, ...], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [_tag(nn.Linear(in_features, width), "fc"), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        in_features = width
    layers.append(_tag(nn.Linear(in_features, 10), "output"))
    return nn.Sequential(*layers)


class LeNet300100(nn.Module):
    """Fully connected 784-300-100-10 with ReLU (Figure 2)."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.fc = _fc_head(28 * 28, (300, 100), dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class ConvNet(nn.Module):
    """Conv-2/4/6: pairs of 3x3 convs (padding 1) each followed by 2x2 max pool, then fc 256-256-10."""

    def __init__(self, widths: tuple[int, ...], dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for i, width in enumerate(widths):
            layers += [_tag(nn.Conv2d(channels, width, 3, padding=1), "conv"), nn.ReLU()]
            if i % 2 == 1:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.features = nn.Sequential(*layers)
        side = 32 // 2 ** (len(widths) // 2)
        self.fc = _fc_head(channels * side * side, (256, 256), dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


VGG19_PLAN = (64, 64, "pool", 128, 128, "pool", 256, 256, 256, 256, "pool",
              512, 512, 512, 512, "pool", 512, 512, 512, 512)


class VGG19(nn.Module):
    """VGG-19 for CIFAR: 16 convs with batch norm, global average pool, one 10-way linear layer."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for step in VGG19_PLAN:
            if step == "pool":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [_tag(nn.Conv2d(channels, step, 3, padding=1, bias=False), "conv"),
                           nn.BatchNorm2d(step), nn.ReLU()]
                channels = step
        self.features = nn.Sequential(*layers)
        self.output = _tag(nn.Linear(channels, 10), "output")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.features(x).mean((2, 3)))


class ResidualBlock(nn.Module):
    """Two 3x3 convs with batch norm; a 1x1 projection shortcut where the shape changes."""

    def __init__(self, channels_in: int, channels_out: int, stride: int):
        super().__init__()
        self.conv1 = _tag(nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False), "conv")
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = _tag(nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False), "conv")
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(
                _tag(nn.Conv2d(channels_in, channels_out, 1, stride, bias=False), "shortcut"),
                nn.BatchNorm2d(channels_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet20(nn.Module):
    """The paper's "ResNet-18": 20-layer CIFAR ResNet, 16 then 3x[16,16], 3x[32,32], 3x[64,64]."""

    def __init__(self):
        super().__init__()
        self.conv = _tag(nn.Conv2d(3, 16, 3, 1, 1, bias=False), "conv")
        self.bn = nn.BatchNorm2d(16)
        blocks, channels = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for i in range(3):
                blocks.append(ResidualBlock(channels, width, 2 if (i == 0 and stage > 0) else 1))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.output = _tag(nn.Linear(64, 10), "output")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(torch.relu(self.bn(self.conv(x))))
        return self.output(out.mean((2, 3)))


MODELS: dict[str, tuple[Callable[..., nn.Module], str, str]] = {
    # name: (constructor, dataset, description)
    "lenet": (LeNet300100, "mnist", "LeNet-300-100"),
    "conv2": (lambda dropout=0.0: ConvNet((64, 64), dropout), "cifar10", "Conv-2"),
    "conv4": (lambda dropout=0.0: ConvNet((64, 64, 128, 128), dropout), "cifar10", "Conv-4"),
    "conv6": (lambda dropout=0.0: ConvNet((64, 64, 128, 128, 256, 256), dropout), "cifar10", "Conv-6"),
    "vgg19": (VGG19, "cifar10", "VGG-19 (CIFAR, batch norm)"),
    "resnet18": (ResNet20, "cifar10", "ResNet-18 (the paper's name for the 20-layer CIFAR ResNet)"),
}


class UnknownModelError(ValueError):
    pass


def create_model(name: str, seed: int | None = None, dropout: float = 0.0) -> nn.Module:
    """A freshly initialized model; `seed` makes the init reproducible without touching global RNG."""
    if name not in MODELS:
        raise UnknownModelError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}.")
    constructor = MODELS[name][0]
    kwargs = {"dropout": dropout} if dropout else {}
    if dropout and name in ("vgg19", "resnet18"):
        raise ValueError(f"{name} takes no dropout (the paper uses dropout only on LeNet and Conv nets).")
    if seed is None:
        model = constructor(**kwargs)
        glorot_init(model)
        return model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = constructor(**kwargs)
        glorot_init(model)
    return model
