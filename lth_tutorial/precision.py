"""The arithmetic a run trains and evaluates in: fp32, or bf16 autocast over fp32 master weights.

Owns: `PRECISIONS` and what each means, the context a forward pass and its loss run in (`autocast`),
the memory format of a conv net's weights and batches (channels-last), and which models train
channels-last under bf16 (`CHANNELS_LAST`, decided by benchmarks/bench_precision.py).

bf16 is `torch.autocast(device, torch.bfloat16)` around the forward pass and the loss only: the
weights, their gradients, the masks and the optimizer's moments stay fp32, so the masked update of
`training` is unchanged and pruned weights stay exactly zero. fp32 is the paper's and the default; it
runs exactly the code it ran before precision existed (no autocast, no layout change), so its
results are bitwise those of earlier runs.
"""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16")

# Models that train channels-last (NHWC) under bf16: every conv net, faster so on an AVX-512 BF16 CPU in
# both the step (1.02x VGG-19 .. 1.33x Conv-4 over bf16 NCHW) and evaluation (1.10x ResNet .. 1.88x
# Conv-2; bench_precision.py, 1 thread). LeNet has no conv. fp32 stays NCHW on every model, whatever a
# benchmark says, so that its results stay bitwise those of the runs already stored.
CHANNELS_LAST = frozenset({"conv2", "conv4", "conv6", "vgg19", "resnet18"})


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r} "
                         f"(--precision fp32 or --precision bf16).")


def channels_last_for(model: str, precision: str) -> bool:
    """Whether `model` trains channels-last at `precision` (only bf16 on the models in CHANNELS_LAST)."""
    check_precision(precision)
    return precision == "bf16" and model in CHANNELS_LAST


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context a forward pass and its loss run in; fp32 is no context at all."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def layout(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A batch of images in the memory format its model's weights are in (4-d batches only)."""
    if channels_last and images.dim() == 4:
        return images.contiguous(memory_format=torch.channels_last)
    return images
