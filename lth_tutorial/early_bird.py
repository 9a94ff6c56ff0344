"""Early-bird tickets: drawing the mask during dense training, once it has stopped changing.

Owns `hamming` (the normalized Hamming distance of two masks), `EarlyBird` (the detector: the global
magnitude mask at a target density at every evaluation; a ticket is drawn when the newest mask is
within `threshold` of each of the previous `window - 1`, as You et al. 2020's code does with 5 masks,
4 distances and 0.1), `draw_early_bird` (replays the dense round from the init with the detector
watching, and stops where it draws), and `watch_early_bird` (detectors at several densities over the whole
dense round, for figures of the distances). Applying the rule to unstructured magnitude masks at evaluations
(You et al. use BN-scale channel masks at epochs) is our extension: `../shared/followups-facts.md` s. 8.
Because a fixed count of weights is kept, two masks differ at most in 2 * min(d, 1 - d) of the
positions; the detector records distances normalized by the kept count too, so both can be shown.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .masks import Mask
from .models import model_weight_kinds
from .pruning_at_init import keep_top


def hamming(a: Mask, b: Mask) -> float:
    """The fraction of positions where two masks over the same tensors differ (0 equal, 1 complementary)."""
    differ = sum(int((a[n] != b[n]).sum()) for n in a)
    return differ / sum(a[n].numel() for n in a)


@dataclass
class EarlyBird:
    """Watches a training run; `observe(iteration, weights)` returns True when the ticket is drawn."""

    density: float
    threshold: float = 0.1
    window: int = 5
    names: tuple[str, ...] = ()                       # the weights to mask (default: every one given)
    history: list[tuple[int, Mask]] = field(default_factory=list)
    distances: list[tuple[int, float, float]] = field(default_factory=list)  # (iteration, max d, max d / kept)
    drawn_at: int | None = None
    mask: Mask | None = None

    def observe(self, iteration: int, weights: dict[str, torch.Tensor]) -> bool:
        names = self.names or tuple(weights)
        mask = keep_top({n: weights[n].detach().abs() for n in names}, self.density)
        self.history = (self.history + [(iteration, mask)])[-self.window:]
        if len(self.history) > 1:
            worst = max(hamming(mask, older) for _, older in self.history[:-1])
            self.distances.append((iteration, worst, worst / self.density))
        if self.drawn_at is None and len(self.history) == self.window and self.distances[-1][1] <= self.threshold:
            self.drawn_at, self.mask = iteration, mask
            return True
        return False


def _watch_dense(experiment, init, splits, detectors: list[EarlyBird], stop: bool) -> None:
    """Train the dense network from `init` as round 0 does, every detector observing each evaluation;
    `stop`: end training at the first detector's draw."""
    from .models import create_model
    from .training import train

    model = create_model(experiment.model, dropout=experiment.dropout).to(splits.train.images.device)
    model.load_state_dict(init)
    params = dict(model.named_parameters())
    dense = Mask.ones_like({n: params[n] for n in model_weight_kinds(experiment.model, experiment.dropout)})

    def observe(iteration, m):
        weights = dict(m.named_parameters())
        drawn = [d.observe(iteration, weights) for d in detectors]   # every detector sees every evaluation
        return stop and any(drawn)

    train(model, dense, splits, replace(experiment.train, report_at=()), seed=experiment.data_seed,
          augment=experiment.data.augment, observe=observe)


def _detector(experiment, density: float, threshold: float, window: int) -> EarlyBird:
    kinds = model_weight_kinds(experiment.model, experiment.dropout)
    return EarlyBird(density, threshold, window, tuple(experiment.pruning.prunable(kinds)))


def draw_early_bird(experiment, init, splits, density: float, threshold: float = 0.1, window: int = 5) -> EarlyBird:
    """Train the dense network from `init` as round 0 does, watching with `EarlyBird`; stop at the draw.

    If no ticket is drawn by the end of training, `drawn_at` stays None and `mask` is the last mask
    (the magnitude mask after full training: no saving).
    """
    detector = _detector(experiment, density, threshold, window)
    _watch_dense(experiment, init, splits, [detector], stop=True)
    if detector.mask is None:
        detector.mask = detector.history[-1][1]
    return detector


def watch_early_bird(experiment, init, splits, densities: list[float], threshold: float = 0.1,
                     window: int = 5) -> dict[float, EarlyBird]:
    """One detector per density (of the prunable weights) over the whole dense training, never stopping
    it: every evaluation's distances, and where each would have drawn (`drawn_at`), for figures."""
    detectors = {d: _detector(experiment, d, threshold, window) for d in densities}
    _watch_dense(experiment, init, splits, list(detectors.values()), stop=False)
    return detectors
