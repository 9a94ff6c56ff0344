"""Zhou et al.'s sign and magnitude controls and mask criteria, on toy tensors and a tiny real run.

Signed constant: exactly the ticket's mask and the init's signs, one magnitude per layer (its init std).
Signed reinit: the init's signs on a fresh draw's magnitudes. Random signs: the init's magnitudes.
Criteria: which weights each keeps on hand-written init/final pairs.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lth_tutorial.data import load_splits
from lth_tutorial.lottery import SIGN_CONTROLS, Experiment, run_experiment, run_folders
from lth_tutorial.masks import CRITERIA, Mask, PruningRule, criterion_scores, prune_layerwise
from lth_tutorial.presets import experiment
from lth_tutorial.rounds import control_start, initial_weights
from lth_tutorial.store import RunStore

WEIGHTS = ("fc.0.weight", "fc.2.weight", "fc.4.weight")


def tiny(**kwargs) -> Experiment:
    exp = experiment("lenet-mnist", "quick", **kwargs)
    return replace(exp, train=replace(exp.train, iterations=30, eval_every=10),
                   data=replace(exp.data, train_examples=1_200, validation_size=200, test_examples=500))


def test_signed_constant_keeps_exactly_the_signs_at_the_layers_std():
    ticket = tiny()
    init = initial_weights(ticket)
    start = control_start(replace(ticket, control="signed-constant"), 1, init)
    for name in WEIGHTS:
        w, s = init[name], start[name]
        assert torch.equal(torch.sign(s), torch.sign(w))
        sigma = w.std(correction=0)
        assert torch.allclose(s.abs(), torch.full_like(s, float(sigma)))
    for name in init:  # biases are the ticket's
        if name not in WEIGHTS:
            assert torch.equal(start[name], init[name])


def test_signed_reinit_and_random_signs_keep_one_of_the_two():
    ticket = tiny()
    init = initial_weights(ticket)
    signed = control_start(replace(ticket, control="signed-reinit"), 1, init)
    flipped = control_start(replace(ticket, control="random-signs"), 1, init)
    for name in WEIGHTS:
        w = init[name]
        assert torch.equal(torch.sign(signed[name]), torch.sign(w))
        assert not torch.equal(signed[name].abs(), w.abs())
        assert torch.equal(flipped[name].abs(), w.abs())
        agree = float((torch.sign(flipped[name]) == torch.sign(w)).float().mean())
        assert 0.45 < agree < 0.55, agree  # fair coins (30,000+ weights in the larger layers)
    # each draws from its own seed per round: another round, another draw
    assert not torch.equal(control_start(replace(ticket, control="random-signs"), 2, init)["fc.0.weight"],
                           flipped["fc.0.weight"])


def test_sign_controls_train_the_tickets_mask(tmp_path):
    store = RunStore(tmp_path)
    ticket = tiny()
    splits = load_splits(ticket.data)
    for control in SIGN_CONTROLS:
        exp = replace(ticket, control=control, control_rounds=(2,))
        metrics = run_experiment(exp, 2, store, splits=splits)
        assert [m["round"] for m in metrics] == [2]  # only the round asked for
        folders = run_folders(exp, store)
        mine = store.load_tensors(folders.round(2) / "mask.pt")
        theirs = store.load_tensors(run_folders(ticket, store).round(2) / "mask.pt")
        assert all(torch.equal(mine[n], theirs[n]) for n in theirs)
        assert not (folders.round(1) / "metrics.json").exists()


def test_criteria_keep_what_their_scores_rank_highest():
    init = {"w": torch.tensor([0.1, -0.9, 0.5, -0.2])}
    final = {"w": torch.tensor([0.8, -0.1, 0.5, 0.6])}
    kept = {}
    for criterion in CRITERIA:
        scores, score = criterion_scores(criterion, init, final, ["w"])
        kept[criterion] = prune_layerwise(scores, Mask.ones_like(init), {"w": 0.5}, score)["w"].tolist()
    assert kept["magnitude"] == [True, False, False, True]           # |w_f| 0.8, 0.1, 0.5, 0.6
    assert kept["large-init"] == [False, True, True, False]          # |w_i| 0.1, 0.9, 0.5, 0.2
    assert kept["magnitude-increase"] == [True, False, False, True]  # 0.7, -0.8, 0, 0.4
    assert kept["movement"] == [False, True, False, True]            # |w_f - w_i| 0.7, 0.8, 0, 0.8
    with pytest.raises(ValueError, match="unknown mask criterion"):
        criterion_scores("smallest", init, final, ["w"])


def test_a_criterion_runs_as_imp_and_is_refused_where_it_is_undefined(tmp_path):
    store = RunStore(tmp_path)
    splits = load_splits(tiny().data)
    imp = run_experiment(tiny(), 1, store, splits=splits)
    moved = run_experiment(tiny(method="movement"), 1, store, splits=splits)
    assert moved[0] == imp[0]  # the same dense round 0
    assert moved[1]["density"] == pytest.approx(imp[1]["density"])  # IMP's rates
    a = store.load_tensors(run_folders(tiny(), store).round(1) / "mask.pt")
    b = store.load_tensors(run_folders(tiny(method="movement"), store).round(1) / "mask.pt")
    assert not all(torch.equal(a[n], b[n]) for n in a)
    assert moved[1]["mask_iterations"] == imp[1]["mask_iterations"]  # as costly as IMP
    with pytest.raises(ValueError, match="strategy reset"):
        tiny(method="movement", strategy="rewind:10")
    with pytest.raises(ValueError, match="control rounds"):
        tiny(control="reinit", control_rounds=(0,))
