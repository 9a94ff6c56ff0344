"""Mask anatomy: Jaccard overlap, its exact chance baseline, the overlap table, and weight movement."""
from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
import torch

from lth_tutorial.anatomy import (MOVEMENT_COLUMNS, OVERLAP_COLUMNS, approx_random_jaccard, distance_moved,
                                  expected_random_jaccard, jaccard, layer_jaccard, movement_frame,
                                  overlap_frame)
from lth_tutorial.masks import Mask


def _mask(**layers) -> Mask:
    return Mask({n: torch.tensor(v, dtype=torch.bool) for n, v in layers.items()})


# a and b share x[0] and y[0]; hand values below come from these two
A = _mask(x=[1, 1, 0, 0], y=[1, 0])
B = _mask(x=[1, 0, 1, 0], y=[1, 1])


# ---- jaccard --------------------------------------------------------------------------------------


def test_a_mask_overlaps_itself_fully():
    mask = _mask(x=[[1, 0], [0, 1]], y=[0, 0, 1])
    assert jaccard(mask, mask) == 1.0
    assert layer_jaccard(mask, mask) == {"x": 1.0, "y": 1.0}


def test_complementary_masks_do_not_overlap():
    mask = _mask(x=[[1, 0], [0, 1]], y=[0, 0, 1])
    other = Mask({n: ~m for n, m in mask.items()})
    assert jaccard(mask, other) == 0.0
    assert layer_jaccard(mask, other) == {"x": 0.0, "y": 0.0}


def test_hand_computed_overlap():
    assert layer_jaccard(A, B) == {"x": 1 / 3, "y": 1 / 2}
    assert jaccard(A, B) == 2 / 5            # pooled: 2 shared of 5 in either, not the mean of the layers
    assert jaccard(A, B, ["x"]) == 1 / 3


def test_empty_masks_overlap_fully_by_convention():
    empty = _mask(x=[0, 0, 0])
    assert jaccard(empty, empty) == 1.0
    assert jaccard(empty, _mask(x=[0, 1, 0])) == 0.0


def test_mismatched_masks_raise():
    with pytest.raises(ValueError, match="names"):
        jaccard(A, _mask(x=[1, 1, 0, 0]))
    with pytest.raises(ValueError, match="names"):
        layer_jaccard(A, _mask(x=[1, 1, 0, 0], z=[1, 0]))
    with pytest.raises(ValueError, match=r"only in b \['z'\]"):   # extra names count too, not just missing
        jaccard(A, _mask(x=[1, 1, 0, 0], y=[1, 0], z=[1]))
    with pytest.raises(ValueError, match="names"):
        jaccard(A, B, ["x", "z"])
    with pytest.raises(ValueError, match="shape at 'y'"):
        jaccard(A, _mask(x=[1, 1, 0, 0], y=[1, 0, 0]))
    with pytest.raises(ValueError, match="names"):
        overlap_frame({"a": A, "b": _mask(x=[1, 1, 0, 0])})


# ---- expected_random_jaccard ----------------------------------------------------------------------


def _brute_force(kept_a: int, kept_b: int, total: int) -> float:
    """The mean Jaccard over every pair of subsets with these sizes, through `jaccard` itself."""
    def masks(kept):
        for on in itertools.combinations(range(total), kept):
            flat = torch.zeros(total, dtype=torch.bool)
            flat[list(on)] = True
            yield Mask({"w": flat})
    scores = [jaccard(a, b) for a, b in itertools.product(masks(kept_a), masks(kept_b))]
    return sum(scores) / len(scores)


@pytest.mark.parametrize("kept_a, kept_b, total", [(2, 3, 6), (3, 3, 6), (1, 4, 5), (4, 5, 7), (0, 2, 4),
                                                   (0, 0, 3), (5, 5, 5)])
def test_random_jaccard_equals_brute_force(kept_a, kept_b, total):
    assert expected_random_jaccard(kept_a, kept_b, total) == pytest.approx(_brute_force(kept_a, kept_b, total),
                                                                           abs=1e-12)


def test_random_jaccard_hand_value_and_symmetry():
    # total 6, kept 2 and 3: P(I = 0, 1, 2) = 4/20, 12/20, 4/20, J = 0, 1/4, 2/3
    exact = Fraction(12, 20) * Fraction(1, 4) + Fraction(4, 20) * Fraction(2, 3)
    assert expected_random_jaccard(2, 3, 6) == pytest.approx(float(exact), abs=1e-15)
    assert expected_random_jaccard(3, 2, 6) == pytest.approx(float(exact), abs=1e-15)
    # the ratio of expectations (E[I] = 1) is 1/4, not the 17/60 above: it is the approximation
    assert approx_random_jaccard(2, 3, 6) == 0.25


@pytest.mark.parametrize("total", [1, 6, 266_200])
def test_full_masks_overlap_fully(total):
    assert expected_random_jaccard(total, total, total) == 1.0


def test_random_jaccard_matches_monte_carlo():
    kept_a, kept_b, total, draws = 3_000, 5_000, 10_000, 200
    gen = torch.Generator().manual_seed(0)
    # a can be fixed to the first kept_a positions: only b's random placement matters
    b = torch.rand(draws, total, generator=gen).argsort(dim=1)[:, :kept_b]
    inter = (b < kept_a).sum(dim=1).double()
    estimate = float((inter / (kept_a + kept_b - inter)).mean())
    assert expected_random_jaccard(kept_a, kept_b, total) == pytest.approx(estimate, rel=0.01)


def test_random_jaccard_is_stable_at_lenet_size():
    total = 266_200
    for density in (0.8, 0.2, 0.0357, 0.001):
        kept = round(density * total)
        exact = expected_random_jaccard(kept, kept, total)
        # the two agree to O(1/kept) at this size; d / (2 - d) is the equal-density closed form
        assert exact == pytest.approx(approx_random_jaccard(kept, kept, total), rel=5e-3)
        assert exact >= approx_random_jaccard(kept, kept, total)       # J = I / (S - I) is convex in I
        assert exact == pytest.approx(density / (2 - density), rel=5e-3)


def test_random_jaccard_rejects_impossible_counts():
    with pytest.raises(ValueError, match="total"):
        expected_random_jaccard(7, 2, 6)
    with pytest.raises(ValueError, match="total"):
        expected_random_jaccard(-1, 2, 6)


# ---- overlap_frame ---------------------------------------------------------------------------------


def test_overlap_frame_rows_and_hand_values():
    frame = overlap_frame({"a": A, "b": B})
    assert list(frame.columns) == OVERLAP_COLUMNS
    assert frame[["a", "b", "layer"]].values.tolist() == [["a", "b", "x"], ["a", "b", "y"], ["a", "b", "all"]]
    rows = frame.set_index("layer")
    assert rows["density_a"].tolist() == [0.5, 0.5, 0.5]
    assert rows["density_b"].tolist() == [0.5, 1.0, 4 / 6]
    assert rows["jaccard"].tolist() == [1 / 3, 1 / 2, 2 / 5]
    # x: kept 2 and 2 of 4, P(I = 1, 2) = 4/6, 1/6 -> 7/18; y: b is full, so I = 1 and J = 1/2 always;
    # all: kept 3 and 4 of 6, P(I = 1, 2, 3) = 3/15, 9/15, 3/15 -> 127/300
    assert rows["random_jaccard"].tolist() == pytest.approx([7 / 18, 1 / 2, 127 / 300], abs=1e-12)
    assert rows["ratio"].tolist() == pytest.approx([(1 / 3) / (7 / 18), 1.0, (2 / 5) / (127 / 300)], abs=1e-12)


def test_overlap_frame_pairs():
    masks = {"a": A, "b": B, "c": Mask({n: ~m for n, m in A.items()})}
    frame = overlap_frame(masks)
    assert frame[["a", "b"]].drop_duplicates().values.tolist() == [["a", "b"], ["a", "c"], ["b", "c"]]
    assert len(frame) == 3 * 3
    complement = frame[(frame["b"] == "c") & (frame["a"] == "a")]
    assert complement["jaccard"].tolist() == [0.0, 0.0, 0.0]
    chosen = overlap_frame(masks, pairs=[("c", "a"), ("b", "b")])
    assert chosen[["a", "b"]].drop_duplicates().values.tolist() == [["c", "a"], ["b", "b"]]
    assert chosen[chosen["a"] == "b"]["jaccard"].tolist() == [1.0, 1.0, 1.0]


def test_overlap_frame_ratio_is_nan_when_one_layer_is_empty():
    frame = overlap_frame({"a": _mask(x=[0, 0], y=[1, 0]), "b": _mask(x=[1, 0], y=[1, 0])})
    x = frame[frame["layer"] == "x"].iloc[0]
    assert (x["jaccard"], x["random_jaccard"]) == (0.0, 0.0) and math.isnan(x["ratio"])


# ---- distance_moved / movement_frame ---------------------------------------------------------------


START = {"w": torch.tensor([3.0, 4.0, 1.0]), "v": torch.tensor([[0.0, 2.0], [0.0, 0.0]])}
TRAINED = {"w": torch.tensor([0.0, 4.0, 100.0]), "v": torch.tensor([[5.0, 7.0], [0.0, 0.0]])}
MASK = _mask(w=[1, 1, 0], v=[[0, 0], [1, 1]])


def test_distance_moved_hand_value():
    # w: survivors 3 -> 0 and 4 -> 4 move by 3 from a norm of 5; the pruned 1 -> 100 does not count.
    # v: its survivors start and stay at 0 (0/0 -> 0), though the pruned ones move
    assert distance_moved(START, TRAINED, MASK) == {"w": 0.6, "v": 0.0}
    assert distance_moved(START, TRAINED, _mask(w=[1, 1, 1], v=[[0, 1], [0, 0]]))["v"] == 2.5
    # survivors that start at 0 and move have no finite relative distance
    assert distance_moved(START, TRAINED, _mask(w=[1, 1, 0], v=[[1, 0], [0, 0]]))["v"] == math.inf


def test_distance_moved_is_zero_without_training():
    assert distance_moved(START, START, MASK) == {"w": 0.0, "v": 0.0}
    assert distance_moved(START, {n: t.clone() for n, t in START.items()},
                          _mask(w=[1, 1, 1], v=[[1, 1], [1, 1]])) == {"w": 0.0, "v": 0.0}


def test_movement_frame_rows():
    frame = movement_frame({"ticket": (START, TRAINED, MASK), "still": (START, START, MASK)})
    assert list(frame.columns) == MOVEMENT_COLUMNS
    assert frame.values.tolist() == [["ticket", "w", 2 / 3, 0.6], ["ticket", "v", 0.5, 0.0],
                                     ["still", "w", 2 / 3, 0.0], ["still", "v", 0.5, 0.0]]
