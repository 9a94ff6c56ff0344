"""Every preset's paper profile, run end to end at small scale: what a user with the data and a GPU runs.

The full CIFAR-10 is not on these machines, so the paper profiles of the CIFAR presets cannot be run at
scale here. This runs each of them exactly as configured (model, dropout, optimizer, learning rate,
weight decay, augmentation, pruning rule and scope) with only the budget shrunk: 2 iterations per
round, one evaluation, and a few hundred examples of the data that exists. It checks that one pruning round removes
exactly the paper's per-layer (or global) fraction and leaves unpruned layers whole.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from lth_tutorial.lottery import run_experiment
from lth_tutorial.models import count_weights, create_model, weight_kinds
from lth_tutorial.presets import ladder
from lth_tutorial.presets import PRESETS, experiment
from lth_tutorial.store import RunStore


def small(name: str):
    exp = experiment(name, "paper")
    # VGG/ResNet also report accuracy at fixed iterations (10K/20K/30K...): here, at the one evaluation
    report_at = (2,) if exp.train.report_at else ()
    return replace(exp, train=replace(exp.train, iterations=2, eval_every=2, report_at=report_at),
                   data=replace(exp.data, train_examples=250, validation_size=50, test_examples=50))


# VGG-19's three variants differ only in learning rate and warmup (checked value by value in
# test_presets.py); one of them is run here, since a VGG-19 round writes ~250 MB of checkpoints.
RUN = sorted(n for n in PRESETS if not n.startswith("vgg19") or n == "vgg19-cifar10-warmup")


@pytest.mark.parametrize("name", RUN)
def test_paper_profile_runs_and_prunes_by_the_papers_rule(name, tmp_path, cifar_root):
    exp = small(name)
    metrics = run_experiment(exp, 1, RunStore(tmp_path))
    assert [m["round"] for m in metrics] == [0, 1]
    for m in metrics:
        assert 0 <= m["early_stop_test_accuracy"] <= 1 and m["early_stop_iteration"] == 2
        assert ("test_accuracy_at_2" in m) == bool(exp.train.report_at)
    model = create_model(exp.model, seed=0, dropout=exp.dropout)
    kinds = weight_kinds(model)
    sizes = {n: p.numel() for n, p in model.named_parameters() if n in kinds}
    dense, pruned = metrics[0]["layer_density"], metrics[1]["layer_density"]
    assert set(dense) == set(kinds) and all(v == 1.0 for v in dense.values())
    assert metrics[0]["density"] == 1.0 and set(metrics[0]["kind_density"].values()) == {1.0}
    rule = exp.pruning
    if rule.scope == "layerwise":
        for layer, kind in kinds.items():
            # each layer keeps (1 - p) of its weights, rounded to whole weights
            assert pruned[layer] == pytest.approx(1 - rule.rate(kind), abs=1e-3), layer
        kept = sum(sizes[n] - round(rule.rate(kinds[n]) * sizes[n]) for n in kinds)
    else:
        # global: 20% of the conv weights as one pool; shortcut and output weights are never pruned
        convs = [n for n, k in kinds.items() if k == "conv"]
        pool = sum(sizes[n] for n in convs)
        assert count_weights(model, ("conv",)) == pool
        assert sum(pruned[n] * sizes[n] for n in convs) / pool == pytest.approx(0.8, abs=1e-4)
        assert len({round(pruned[n], 3) for n in convs}) > 1          # layers pruned by different amounts
        assert all(pruned[n] == 1.0 for n, k in kinds.items() if k != "conv")
        assert metrics[1]["kind_density"] == {k: (pool - round(0.2 * pool)) / pool if k == "conv" else 1.0
                                              for k in set(kinds.values())}
        kept = pool - round(0.2 * pool) + sum(sizes[n] for n in kinds if kinds[n] != "conv")
    # the reported density is the paper's Pm: kept weights over *all* weights, never-pruned kinds included
    assert metrics[1]["density"] == kept / sum(sizes.values())
    if exp.model == "resnet18":   # the paper's ladder, e.g. rounds 4/6/7/10 at Pm 41.7/27.1/21.9/11.8%
        assert abs(metrics[1]["density"] - ladder("resnet18-cifar10", 1)) < 1 / sum(sizes.values())
