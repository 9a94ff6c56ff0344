"""Instability analysis: the path and barrier on toy problems with known answers, and analyses through the store.

The barrier is the paper's: sup over the path minus the mean of the endpoints' errors. It is 0 for identical
endpoints and for a convex problem (two perfect linear classifiers: the set of weights classifying a point
correctly is a half-space, so the whole segment is perfect too), and on a toy two-basin problem it equals
what the error of each alpha gives by hand.
"""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from lth_tutorial.data import Split, Splits, load_splits
from lth_tutorial.instability import (POINTS, Instability, alphas, analysis_folder, barrier, error_path,
                                      interpolate, run_instability)
from lth_tutorial.lottery import run_experiment, run_folders
from lth_tutorial.masks import Mask
from lth_tutorial.presets import experiment
from lth_tutorial.store import RunStore
from lth_tutorial.training import TrainConfig, train


class Squared(nn.Module):
    """Two basins, theta = -1 and +1: class 1 exactly when theta^2 * x > 0.5."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return torch.stack([torch.zeros_like(x[:, 0]), self.theta ** 2 * x[:, 0] - 0.5], 1)


def _split(x, y) -> Split:
    return Split(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y), None)


def test_alphas_are_the_papers_thirty_evenly_spaced_points():
    a = alphas()
    assert len(a) == POINTS == 30 and a[0] == 0.0 and a[-1] == 1.0
    assert all(abs((b - c) - 1 / 29) < 1e-12 for b, c in zip(a[1:], a))


def test_identical_endpoints_have_no_barrier():
    model = nn.Linear(3, 2)
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    split = Split(x, (x[:, 0] > 0).long(), None)
    w = {k: v.detach().clone() for k, v in model.state_dict().items()}
    path = error_path(model, w, w, split)
    assert len(set(path)) == 1 and barrier(path) == 0.0


def test_a_convex_problem_has_no_barrier_between_two_sgd_copies():
    """Logistic regression on separable data, trained twice with different data orders: both copies are
    perfect and differ, and every point between them is perfect as well."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 2, generator=g)
    x = x[(x[:, 0] + x[:, 1]).abs() > 0.3]  # a margin: separable by x0 + x1 = 0
    split = _split(x, (x[:, 0] + x[:, 1] > 0).long())
    splits = Splits(split, split, split, None)
    config = TrainConfig("sgd", 0.5, 16, 400, momentum=0.0, eval_every=400)
    copies = []
    for seed in (1, 2):
        model = nn.Linear(2, 2)
        with torch.no_grad():
            model.weight.zero_(), model.bias.zero_()
        train(model, Mask(weight=torch.ones(2, 2, dtype=torch.bool)), splits, config, seed=seed)
        copies.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    assert not torch.equal(copies[0]["weight"], copies[1]["weight"])
    path = error_path(nn.Linear(2, 2), copies[0], copies[1], split)
    assert path[0] == path[-1] == 0.0
    assert max(path) == 0.0 and barrier(path) == 0.0


def test_two_basins_give_the_hand_computed_path_and_barrier():
    x = [[1.0], [2.0], [4.0]]
    split = _split(x, [1, 1, 1])
    a, b = {"theta": torch.tensor(-1.0)}, {"theta": torch.tensor(1.0)}
    path = error_path(Squared(), a, b, split)
    # theta(alpha) = alpha * (-1) + (1 - alpha) * 1 = 1 - 2 alpha; a point x is wrong when theta^2 x <= 0.5
    by_hand = [sum((1 - 2 * t) ** 2 * xi[0] <= 0.5 for xi in x) / 3 for t in alphas()]
    assert path == pytest.approx(by_hand, abs=1e-7)
    assert path[0] == path[-1] == 0.0 and max(path) == 1.0
    assert barrier(path) == 1.0
    # unequal endpoints: theta = 0.5 gets only x = 4 right (error 2/3), so the barrier is 1 - (0 + 2/3) / 2
    path = error_path(Squared(), a, {"theta": torch.tensor(0.5)}, split)
    assert path[0] == pytest.approx(2 / 3) and path[-1] == 0.0
    assert barrier(path) == pytest.approx(2 / 3)


def test_interpolation_is_linear_and_keeps_integer_buffers():
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(7)}
    b = {"w": torch.tensor([3.0, -1.0]), "n": torch.tensor(2)}
    mid = interpolate(a, b, 0.25)
    assert torch.equal(mid["w"], torch.tensor([2.5, 0.0])) and int(mid["n"]) == 7


def test_barrier_needs_both_endpoints():
    with pytest.raises(ValueError, match="endpoints"):
        barrier([0.1])


# ---- through the store, on a tiny real LeNet experiment -------------------------------------------------

def tiny(**kwargs):
    exp = experiment("lenet-mnist", "quick", **kwargs)
    return replace(exp, train=replace(exp.train, iterations=30, eval_every=10),
                   data=replace(exp.data, train_examples=1_200, validation_size=200, test_examples=500))


@pytest.fixture(scope="module")
def splits():
    return load_splits(tiny().data)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory, splits):
    store = RunStore(tmp_path_factory.mktemp("instability"))
    ticket = tiny()
    results = {(of, r): run_instability(Instability(ticket if of == "none" else replace(ticket, control=of), r),
                                        store, splits=splits)
               for of, r in (("none", 0), ("none", 2), ("reinit", 2))}
    return store, ticket, results


def test_an_analysis_stores_both_copies_and_its_paths_under_the_ticket(analysed):
    store, ticket, results = analysed
    m = results[("none", 2)]
    assert len(m["test_error"]) == len(m["train_error"]) == POINTS
    assert m["barrier"] == pytest.approx(barrier(m["test_error"])) and m["start_iteration"] == 0
    assert m["endpoint_test_error"] == [m["test_error"][-1], m["test_error"][0]]
    folder, folders = analysis_folder(Instability(ticket, 2), store)
    assert folder.parent == folders.ticket and (folder / "copy_0.pt").exists() and (folder / "copy_1.pt").exists()
    ticket_mask = store.load_tensors(folders.round(2) / "mask.pt")
    assert m["density"] == pytest.approx(Mask(ticket_mask).density())
    for c in (0, 1):  # both copies keep the ticket's mask: pruned weights exactly zero
        copy = store.load_tensors(folder / f"copy_{c}.pt")
        assert all(bool((copy[n][~ticket_mask[n]] == 0).all()) for n in ticket_mask)
    assert m["distance"] > 0


def test_copies_differ_only_in_data_order_and_controls_only_in_start(analysed, splits):
    store, ticket, results = analysed
    copies = {}
    for of in ("none", "reinit"):
        folder, folders = analysis_folder(Instability(ticket if of == "none" else replace(ticket, control=of), 2), store)
        copies[of] = [store.load_tensors(folder / f"copy_{c}.pt") for c in (0, 1)]
    assert not torch.equal(copies["none"][0]["fc.0.weight"], copies["none"][1]["fc.0.weight"])
    assert not torch.equal(copies["none"][0]["fc.0.weight"], copies["reinit"][0]["fc.0.weight"])
    assert Instability(ticket, 2).seeds == Instability(replace(ticket, control="reinit"), 2).seeds
    assert Instability(ticket, 2).seeds != Instability(ticket, 1).seeds
    # the reinit analysis has the ticket's mask
    assert results[("reinit", 2)]["density"] == results[("none", 2)]["density"]


def test_a_finished_analysis_is_read_and_an_interrupted_one_resumes(analysed, splits, tmp_path):
    store, ticket, results = analysed
    analysis = Instability(ticket, 2)
    folder, _ = analysis_folder(analysis, store)
    before = json.loads((folder / "metrics.json").read_text())
    assert run_instability(analysis, store, splits=splits) == before
    (folder / "metrics.json").unlink()  # as if stopped after both copies: measured again, same numbers
    copy_1 = store.load_tensors(folder / "copy_1.pt")
    (folder / "copy_1.pt").unlink()      # and after the first copy: the second is trained again, bitwise
    assert run_instability(analysis, store, splits=splits) == before
    assert all(torch.equal(copy_1[k], v) for k, v in store.load_tensors(folder / "copy_1.pt").items())


def test_the_dense_network_at_k_starts_from_round_0s_weights_at_k(tmp_path, splits):
    store = RunStore(tmp_path)
    exp = tiny(strategy="rewind:10")
    m = run_instability(Instability(exp, 0), store, splits=splits)
    assert m["start_iteration"] == 10 and m["density"] == 1.0
    assert (run_folders(exp, store).dense / "rewind_10.pt").exists()


def test_bad_analyses_are_refused_in_one_line():
    with pytest.raises(ValueError, match="continue strategy"):
        Instability(tiny(strategy="continue"), 1)
    with pytest.raises(ValueError, match="round 0 is dense"):
        Instability(tiny(control="reinit"), 0)
    with pytest.raises(ValueError, match="points"):
        Instability(tiny(), 1, points=1)
