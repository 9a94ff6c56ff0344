"""What a ticket cost: iterations per round from recorded costs or IMP's definition, matched sizes, the table."""
from __future__ import annotations

import pandas as pd
import pytest

from lth_tutorial.costs import at_targets, cost_frame, cost_table


def _round(k, density, acc, **cost):
    return {"round": k, "density": density, "early_stop_iteration": 10, "early_stop_val_loss": 0.1,
            "early_stop_test_accuracy": acc, "final_test_accuracy": acc, **cost}


def _summary(runs, iterations=100):
    return {"preset": "lenet-mnist", "profile": "quick", "config": {"train": {"iterations": iterations}},
            "trials": sorted({r["trial"] for r in runs}), "controls": [], "rounds": 2, "runs": runs}


IMP_OLD = _summary([  # written before rounds recorded their cost: IMP's by definition
    {"trial": t, "strategy": "reset", "control": "none",
     "rounds": [_round(0, 1.0, 0.97), _round(1, 0.51, 0.98 + t / 100), _round(2, 0.26, 0.975 + t / 100)]}
    for t in (0, 1)])
SNIP = _summary([
    {"trial": t, "strategy": "oneshot", "control": "none", "method": "snip",
     "rounds": [_round(0, 1.0, 0.97, mask_iterations=0, scoring_passes=0, train_iterations=100),
                _round(1, 0.25, 0.96 + t / 100, mask_iterations=0, scoring_passes=1, train_iterations=100)]}
    for t in (0, 1)])


def test_imp_rounds_without_recorded_costs_cost_k_trainings_and_recorded_ones_are_kept():
    imp = cost_frame(IMP_OLD)
    assert imp["mask_iterations"].tolist() == [0, 100, 200] * 2
    assert imp["total_iterations"].tolist() == [100, 200, 300] * 2
    snip = cost_frame(SNIP)
    assert snip["method"].tolist() == ["snip"] * 4 and snip["total_iterations"].tolist() == [100] * 4
    assert snip["scoring_passes"].tolist() == [0, 1, 0, 1]


def test_a_non_imp_run_without_costs_is_refused_in_one_line():
    old = _summary([{"trial": 0, "strategy": "continue", "control": "none", "rounds": [_round(1, 0.5, 0.9)]}])
    with pytest.raises(ValueError, match="record no cost and are not reset IMP"):
        cost_frame(old)


def test_each_trial_is_matched_by_its_nearest_round_and_tabled_with_its_spread():
    matched = at_targets(cost_frame(IMP_OLD), [0.25, 0.5])
    assert matched[["trial", "round", "target"]].values.tolist() == [[0, 2, 0.25], [1, 2, 0.25], [0, 1, 0.5], [1, 1, 0.5]]
    snip = cost_frame(SNIP).query("round > 0").assign(target=0.25)
    table = cost_table(pd.concat([matched.assign(series="IMP"), snip], ignore_index=True))
    row = table[(table["series"] == "IMP") & (table["target"] == 0.25)].iloc[0]
    assert row["accuracy %, mean [min, max] over 2 trials"] == "98.00 [97.50, 98.50]"
    assert (row["Pm %"], row["mask iterations"], row["total iterations"]) == (26.0, 200, 300)
    snip_row = table[table["series"] == "snip"].iloc[0]
    assert (snip_row["total iterations"], snip_row["accuracy"]) == (100, pytest.approx(0.965))
    assert table["target"].tolist() == [0.5, 0.25, 0.25]   # largest first, then the costlier series first
    with pytest.raises(ValueError, match="no 'random reinit' rounds"):
        at_targets(cost_frame(IMP_OLD), [0.25], "random reinit")


def test_the_cost_figure_draws_each_row_at_its_total_iterations_and_accuracy():
    import matplotlib
    matplotlib.use("Agg")
    from lth_tutorial.plots import cost_figure

    matched = at_targets(cost_frame(IMP_OLD), [0.25, 0.5]).assign(series="IMP")
    table = cost_table(pd.concat([matched, cost_frame(SNIP).query("round > 0").assign(target=0.25)]))
    fig = cost_figure(table)
    left, right = fig.axes
    points = sorted((line.get_xdata()[0], round(line.get_ydata()[0], 6)) for line in right.lines
                    if line.get_marker() not in (None, "None", ""))
    assert points == sorted(zip(table["total iterations"], (table["accuracy"] * 100).round(6)))
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["IMP", "snip"]

