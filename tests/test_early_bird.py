"""Early-bird detection: the distance, the drawing rule on a scripted sequence, and a real dense run."""
from __future__ import annotations

import torch

from lth_tutorial.early_bird import EarlyBird, draw_early_bird, hamming, watch_early_bird
from lth_tutorial.masks import Mask
from lth_tutorial.pruning_at_init import keep_top


def test_hamming_is_0_for_equal_and_1_for_complementary_masks():
    a = Mask({"w": torch.tensor([True, False, True, False]), "v": torch.tensor([[True], [False]])})
    assert hamming(a, a) == 0.0
    assert hamming(a, Mask({n: ~m for n, m in a.items()})) == 1.0
    assert hamming(a, Mask({"w": torch.tensor([False, False, True, False]), "v": a["v"]})) == 1 / 6


def test_a_ticket_is_drawn_once_the_window_of_masks_agrees():
    detector = EarlyBird(density=0.5, threshold=0.0, window=3)
    moving = {10: [4.0, 3.0, 2.0, 1.0], 20: [1.0, 4.0, 3.0, 2.0], 30: [1.0, 2.0, 4.0, 3.0]}
    settled = [1.0, 2.0, 4.0, 3.5]           # the same top half as iteration 30 from here on
    drawn = [detector.observe(i, {"w": torch.tensor(moving.get(i, settled))}) for i in (10, 20, 30, 40, 50, 60)]
    assert drawn == [False, False, False, False, True, False]
    assert detector.drawn_at == 50 and detector.mask["w"].tolist() == [False, False, True, True]
    # newest against each older mask of the window, the largest: 20 vs 10; 30 vs 10; 40 vs 20; then settled
    assert [round(d, 3) for _, d, _ in detector.distances] == [0.5, 1.0, 0.5, 0.0, 0.0]


def test_on_a_real_dense_run_the_drawn_mask_is_the_magnitude_mask_at_the_draw(data_root):
    from lth_tutorial.data import load_splits
    from lth_tutorial.presets import experiment
    from lth_tutorial.rounds import initial_weights, train_round, dense_mask

    exp = experiment("lenet-mnist", "quick", train={"iterations": 400, "eval_every": 20})
    splits = load_splits(exp.data)
    init = initial_weights(exp)
    bird = draw_early_bird(exp, init, splits, density=0.2, threshold=0.1, window=5)
    assert bird.drawn_at is not None and 100 <= bird.drawn_at < 400, bird.distances
    assert all(d <= 0.1 for _, d, _ in bird.distances[-4:])
    # the same dense run replayed to the draw: its magnitude mask is the drawn one, exactly
    snapshot = train_round(exp, 0, init, dense_mask(exp, init), splits, snapshot_at=bird.drawn_at).snapshot
    names = list(bird.mask)
    replayed = keep_top({n: snapshot[n].abs() for n in names}, 0.2)
    assert all(torch.equal(replayed[n], bird.mask[n]) for n in names)

    # watching the whole dense run (never stopping) draws at the same iteration, and records distances past it
    watched = watch_early_bird(exp, init, splits, [0.2, 0.05])
    assert watched[0.2].drawn_at == bird.drawn_at
    assert watched[0.2].distances[:len(bird.distances)] == bird.distances
    assert watched[0.2].distances[-1][0] == 400 and all(torch.equal(watched[0.2].mask[n], bird.mask[n]) for n in names)
    # at 5% kept, two masks differ in at most 10% of the positions: the 0.1 rule draws at the first chance
    assert watched[0.05].drawn_at == watched[0.05].distances[3][0]
    assert all(d <= 2 * 0.05 + 1e-12 and abs(kept - d / 0.05) < 1e-12 for _, d, kept in watched[0.05].distances)
