"""Training that honours a mask, with the paper's schedule and metrics.

Owns: `TrainConfig` (optimizer, learning-rate schedule, budget, evaluation cadence), `train` (the loop),
`evaluate`, and the derived metrics: the early-stopping iteration (iteration of minimum *validation*
loss), the test accuracy there, and the final test accuracy. The mask is applied explicitly: gradients
of pruned weights are zeroed before every optimizer step (so Adam moments and momentum never see them)
and the weights are re-zeroed after it, so pruned weights are exactly zero at every step. The
arithmetic (fp32, or bf16 autocast on fp32 weights, optionally channels-last) is `precision`'s; a
round evaluates in the precision it trains in.
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .data import DeviceLoader, Split, Splits
from .masks import Mask
from .precision import autocast, check_precision, layout
from .seeds import stream_seed


@dataclass(frozen=True)
class TrainConfig:
    """One round's training, as in the paper's Figure 2 / Appendix tables."""

    optimizer: str                      # "adam" or "sgd" (SGD always with momentum)
    lr: float
    batch_size: int
    iterations: int                     # every round trains the full budget
    momentum: float = 0.9               # SGD only
    weight_decay: float = 0.0
    warmup: int = 0                     # linear warmup from 0 over this many iterations
    milestones: tuple[int, ...] = ()    # multiply the lr by `gamma` at these iterations
    gamma: float = 0.1
    eval_every: int = 100               # validation and test evaluated every N iterations (paper: 100)
    report_at: tuple[int, ...] = ()     # extra fixed iterations whose test accuracy is reported (VGG/ResNet)
    precision: str = "fp32"             # or "bf16": autocast over fp32 weights (`precision`)
    channels_last: bool = False         # conv weights and batches NHWC (`presets` sets it with bf16 on conv nets)

    def __post_init__(self):
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd'; got {self.optimizer!r}.")
        check_precision(self.precision)
        if self.iterations < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError("iterations, batch_size and eval_every must be positive.")

    def lr_factor(self, iteration: int) -> float:
        """Learning-rate multiplier for the step taken at `iteration` (0-based)."""
        warm = min(1.0, (iteration + 1) / self.warmup) if self.warmup else 1.0
        return warm * self.gamma ** sum(iteration >= m for m in self.milestones)


class Progress(Protocol):
    def update(self, n: int) -> Any: ...


def set_deterministic(enabled: bool = True) -> None:
    """The one determinism switch (on by default): deterministic kernels, cuDNN without autotuning.

    TF32 is off either way (it changes fp32 results on Ampere+ GPUs). The state is recorded in every
    run's key and provenance (`store.environment`). On CPU, results still depend on the thread count,
    which is recorded too.
    """
    if enabled:  # cuBLAS needs this before its first use to be deterministic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # fused: the same update in one kernel per step (measured ~19% faster per LeNet step on CPU)
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay, fused=True)


def apply_mask(model: nn.Module, mask: Mask) -> None:
    """Zero the pruned weights in place."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, m in mask.items():
            params[name].mul_(m)


def eval_batch(precision: str, device: torch.device) -> int:
    """Examples per evaluation forward pass. fp32 keeps the batch its stored results were made with (a
    conv's sums may depend on the batch it runs in; fp32 runs stay bitwise reproducible). bf16 has no
    such past: on a CPU it evaluates in cache-sized batches (measured faster than 2,500 on every conv
    net, benchmarks/bench_precision.py), on a GPU in large ones."""
    return 128 if precision == "bf16" and device.type == "cpu" else 2_500


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, batch_size: int | None = None, precision: str = "fp32",
             channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss, accuracy) as 0-d tensors on the device; no host sync here.

    In `precision` (bf16: the logits, the loss and the counts are still reduced in fp32), in
    `eval_batch` examples per forward pass unless `batch_size` says otherwise. Inference mode runs the
    same kernels as no_grad (fp32 results are bitwise those of no_grad), without autograd's bookkeeping.
    """
    device = split.images.device
    batch_size = batch_size or eval_batch(precision, device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    for start in range(0, len(split), batch_size):
        with autocast(device, precision):
            logits = model(layout(split.images[start:start + batch_size], channels_last)).float()
        labels = split.labels[start:start + batch_size]
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
    model.train(was_training)
    return loss_sum / len(split), correct / len(split)


def summarize(curves: dict[str, list[float]], report_at: tuple[int, ...] = ()) -> dict[str, Any]:
    """The paper's metrics from the recorded curves."""
    best = min(range(len(curves["iteration"])), key=lambda i: (curves["val_loss"][i], i))
    summary = {
        "early_stop_iteration": curves["iteration"][best],
        "early_stop_val_loss": curves["val_loss"][best],
        "early_stop_val_accuracy": curves["val_accuracy"][best],
        "early_stop_test_accuracy": curves["test_accuracy"][best],
        "final_test_accuracy": curves["test_accuracy"][-1],
    }
    for target in report_at:
        if target not in curves["iteration"]:
            raise ValueError(f"report_at iteration {target} was not evaluated (evaluations at "
                             f"{curves['iteration'][0]}..{curves['iteration'][-1]}).")
        summary[f"test_accuracy_at_{target}"] = curves["test_accuracy"][curves["iteration"].index(target)]
    return summary


def train(model: nn.Module, mask: Mask, splits: Splits, config: TrainConfig, seed: int,
          augment: bool = False, snapshot_at: int | None = None, start_iteration: int = 0,
          progress: Progress | None = None,
          observe: Callable[[int, nn.Module], bool] | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Train `model` in place under `mask`; return (metrics, state_dict at iteration `snapshot_at`).

    `seed` fixes the data order, augmentation and dropout, so the same seed gives the same run.
    `start_iteration` K resumes a schedule (rewinding): iterations K+1..T are trained, with the lr
    schedule and the data order where they were at K (dropout draws a fresh stream from K). Evaluations
    and reported iterations count from 0 as in a run that never stopped. `observe(iteration, model)`
    is called after every evaluation; when it returns True, training ends there.
    """
    if not 0 <= start_iteration < config.iterations:
        raise ValueError(f"start_iteration must be in [0, {config.iterations}); got {start_iteration}.")
    device = splits.train.images.device
    model.to(device).train()
    if config.channels_last:  # NHWC for the whole round, back to NCHW before anyone else sees the weights
        model.to(memory_format=torch.channels_last)
    params = dict(model.named_parameters())
    masked = [params[name] for name in mask]
    factors = [m.to(device=device, dtype=params[name].dtype) for name, m in mask.items()]
    apply_mask(model, Mask(zip(mask, factors)))
    optimizer = make_optimizer(model, config)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: config.lr_factor(step + start_iteration))
    loader = DeviceLoader(splits.train, config.batch_size, seed, augment).batches(start=start_iteration)
    evaluate_at = set(config.report_at)
    evaluated = {"precision": config.precision, "channels_last": config.channels_last}
    curves: dict[str, list[float]] = {k: [] for k in ("iteration", "train_loss", "val_loss", "val_accuracy",
                                                      "test_loss", "test_accuracy")}
    snapshot = _state(model, config.channels_last) if snapshot_at == start_iteration else None
    running, seen = torch.zeros((), device=device), 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(stream_seed(seed, start_iteration))  # dropout
        for iteration in range(start_iteration + 1, config.iterations + 1):
            images, labels = next(loader)
            with autocast(device, config.precision):  # the backward pass runs outside, as autocast intends
                loss = F.cross_entropy(model(layout(images, config.channels_last)).float(), labels)
            optimizer.zero_grad()
            loss.backward()
            torch._foreach_mul_([p.grad for p in masked], factors)  # moments never see pruned weights
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                torch._foreach_mul_(masked, factors)
            running += loss.detach()
            seen += 1
            if iteration == snapshot_at:
                snapshot = _state(model, config.channels_last)
            if iteration % config.eval_every == 0 or iteration == config.iterations or iteration in evaluate_at:
                results = torch.stack([running / seen, *evaluate(model, splits.validation, **evaluated),
                                       *evaluate(model, splits.test, **evaluated)]).tolist()  # one sync per eval
                for key, value in zip(list(curves)[1:], results):
                    curves[key].append(value)
                curves["iteration"].append(iteration)
                running, seen = torch.zeros((), device=device), 0
                if progress is not None:
                    progress.update(iteration - (curves["iteration"][-2] if len(curves["iteration"]) > 1
                                                 else start_iteration))
                if not math.isfinite(results[0]):
                    raise FloatingPointError(f"training diverged at iteration {iteration} (loss {results[0]}); "
                                             f"lower the learning rate (--lr).")
                if observe is not None and observe(iteration, model):
                    break  # the observer has what it needs (an early-bird ticket was drawn)
    if config.channels_last:
        model.to(memory_format=torch.contiguous_format)
    return {"curves": curves, **summarize(curves, config.report_at)}, snapshot


def _state(model: nn.Module, channels_last: bool) -> dict[str, torch.Tensor]:
    """A copy of the weights, NCHW whatever the layout they train in (what is stored and pruned from)."""
    if not channels_last:
        return copy.deepcopy(model.state_dict())
    return {k: v.clone(memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}
