"""Mask anatomy: how much two tickets overlap, against chance, and how far their survivors moved.

Owns `jaccard` / `layer_jaccard` (|a AND b| / |a OR b| of two masks over the same tensors), the chance
baseline `expected_random_jaccard` (the exact E[J] of two independent uniformly random masks with given
counts, not the ratio of expectations), `overlap_frame` (one row per pair x layer, plus a pooled row),
and `distance_moved` / `movement_frame` (the relative L2 distance the surviving weights travelled in
training). Everything is a pure function of tensors; tables are tidy pandas frames.
"""
from __future__ import annotations

import itertools
import math

import pandas as pd
import torch

from .masks import Mask

OVERLAP_COLUMNS = ["a", "b", "layer", "density_a", "density_b", "jaccard", "random_jaccard", "ratio"]
MOVEMENT_COLUMNS = ["run", "layer", "density", "relative_distance"]


def _check_same_tensors(a: Mask, b: Mask, names: list[str] | None = None) -> list[str]:
    """The names to compare (default all); ValueError unless both masks hold them with equal shapes."""
    if names is None:
        if set(a) != set(b):
            raise ValueError(f"masks differ in names: only in a {sorted(set(a) - set(b))}, "
                             f"only in b {sorted(set(b) - set(a))}.")
        names = list(a)
    missing = [n for n in names if n not in a or n not in b]
    if missing:
        raise ValueError(f"masks differ in names: {missing} not in both.")
    for n in names:
        if a[n].shape != b[n].shape:
            raise ValueError(f"masks differ in shape at {n!r}: {tuple(a[n].shape)} vs {tuple(b[n].shape)}.")
    return names


def _jaccard(a: Mask, b: Mask, names: list[str]) -> float:
    inter = sum(int((a[n] & b[n].to(a[n].device)).sum()) for n in names)
    union = sum(int((a[n] | b[n].to(a[n].device)).sum()) for n in names)
    # Two empty masks are identical, so they get the identity's score rather than 0/0.
    return 1.0 if union == 0 else inter / union


def jaccard(a: Mask, b: Mask, names: list[str] | None = None) -> float:
    """|a AND b| / |a OR b| over `names` pooled (default: all; the masks must then share every name).

    1.0 when both are empty there (by convention: two empty masks are the same mask).
    """
    return _jaccard(a, b, _check_same_tensors(a, b, names))


def layer_jaccard(a: Mask, b: Mask) -> dict[str, float]:
    """name -> the Jaccard index of that tensor alone."""
    return {n: _jaccard(a, b, [n]) for n in _check_same_tensors(a, b)}


def expected_random_jaccard(kept_a: int, kept_b: int, total: int) -> float:
    """E[J] of two independent uniformly random masks keeping `kept_a` and `kept_b` of `total` positions.

    Exact: fixing a, the intersection I of b with it is hypergeometric (population `total`, `kept_a`
    successes, `kept_b` draws), so E[J] = sum_i P(I = i) * i / (kept_a + kept_b - i). 1.0 when both
    counts are 0, as in `jaccard`.
    """
    if not (0 <= kept_a <= total and 0 <= kept_b <= total):
        raise ValueError(f"kept counts must lie in [0, total]; got {kept_a}, {kept_b} of {total}.")
    if kept_a == 0 and kept_b == 0:
        return 1.0
    i = torch.arange(max(0, kept_a + kept_b - total), min(kept_a, kept_b) + 1, dtype=torch.float64)

    def log_choose(n, k):
        return torch.lgamma(n + 1.0) - torch.lgamma(k + 1.0) - torch.lgamma(n - k + 1.0)

    # Log space because C(266000, k) overflows any float; normalising by the log-sum rather than by
    # log C(total, kept_b) cancels the lgamma rounding common to every term, so the weights sum to 1.
    log_p = log_choose(torch.tensor(float(kept_a)), i) + log_choose(torch.tensor(float(total - kept_a)),
                                                                    kept_b - i)
    p = torch.exp(log_p - torch.logsumexp(log_p, dim=0))
    return float((p * i / (kept_a + kept_b - i)).sum())


def approx_random_jaccard(kept_a: int, kept_b: int, total: int) -> float:
    """The ratio of expectations E[I] / (kept_a + kept_b - E[I]), E[I] = kept_a * kept_b / total.

    For equal densities d it is d / (2 - d), the closed form worth showing in a notebook; it differs from
    the exact E[J] by O(1 / kept) and is biased low for tiny layers, so the tables use the exact one.
    """
    if kept_a == 0 and kept_b == 0:
        return 1.0
    inter = kept_a * kept_b / total
    return inter / (kept_a + kept_b - inter)


def _overlap_row(label_a: str, label_b: str, layer: str, a: Mask, b: Mask, names: list[str]) -> dict:
    kept_a, kept_b = (sum(int(m[n].sum()) for n in names) for m in (a, b))
    total = sum(a[n].numel() for n in names)
    observed = _jaccard(a, b, names)
    chance = expected_random_jaccard(kept_a, kept_b, total)
    return {"a": label_a, "b": label_b, "layer": layer, "density_a": kept_a / total,
            "density_b": kept_b / total, "jaccard": observed, "random_jaccard": chance,
            # chance is 0 only when exactly one mask is empty, and then so is the overlap: 0/0 is NaN
            "ratio": observed / chance if chance > 0 else math.nan}


def overlap_frame(masks: dict[str, Mask], pairs: list[tuple[str, str]] | None = None) -> pd.DataFrame:
    """Per pair of labelled masks (default every unordered pair): one row per layer and one layer="all".

    `random_jaccard` is `expected_random_jaccard` of the row's own counts, so on the "all" row it is the
    baseline of masks random over the pooled weights (a global random mask), not of masks random within
    each layer at these layer densities; `ratio` = jaccard / random_jaccard (NaN where both are 0).
    """
    pairs = list(itertools.combinations(masks, 2)) if pairs is None else list(pairs)
    rows = []
    for label_a, label_b in pairs:
        a, b = masks[label_a], masks[label_b]
        names = _check_same_tensors(a, b)
        rows += [_overlap_row(label_a, label_b, n, a, b, [n]) for n in names]
        rows.append(_overlap_row(label_a, label_b, "all", a, b, names))
    return pd.DataFrame(rows, columns=OVERLAP_COLUMNS)


def distance_moved(start: dict[str, torch.Tensor], trained: dict[str, torch.Tensor],
                   mask: Mask) -> dict[str, float]:
    """name -> ||(trained - start) * mask|| / ||start * mask|| for each masked tensor (L2, survivors only).

    0/0 (no survivors, or survivors that start and stay at 0) is 0; survivors that start at 0 and move
    give inf.
    """
    moved = {}
    for n, m in mask.items():
        keep = m.to(start[n].device)
        before = start[n].detach().double()[keep]
        delta = trained[n].detach().to(start[n].device).double()[keep] - before
        num, den = float(torch.linalg.vector_norm(delta)), float(torch.linalg.vector_norm(before))
        moved[n] = 0.0 if num == 0 else (num / den if den > 0 else math.inf)
    return moved


def movement_frame(runs: dict[str, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], Mask]]
                   ) -> pd.DataFrame:
    """One row per run x masked layer: the layer's density and its `distance_moved`."""
    rows = []
    for run, (start, trained, mask) in runs.items():
        # counted in ints: Mask.layer_densities averages in float32, which is off in the 8th digit
        rows += [{"run": run, "layer": n, "density": int(mask[n].sum()) / mask[n].numel(),
                  "relative_distance": d} for n, d in distance_moved(start, trained, mask).items()]
    return pd.DataFrame(rows, columns=MOVEMENT_COLUMNS)
