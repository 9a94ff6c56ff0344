"""Figures: the paper's points by split, and report figures for whichever trials a summary holds."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from lth_tutorial.plots import PALETTE, plot_metric, report_figures, summary_curves_figure  # noqa: E402


def _round(k: int, density: float, curves: bool = True) -> dict:
    r = {"round": k, "density": density, "early_stop_iteration": 100 - 10 * k,
         "early_stop_test_accuracy": 0.70 + 0.01 * k, "final_test_accuracy": 0.69 + 0.01 * k}
    if curves:
        r["curve"] = {"iteration": [10, 20], "val_loss": [1.0, 0.9], "test_accuracy": [0.6, r["final_test_accuracy"]]}
    return r


def _summary(preset: str, trials: tuple[int, ...], rounds: int = 2, control: bool = True) -> dict:
    runs = []
    for t in trials:
        runs.append({"trial": t, "strategy": "reset", "control": "none",
                     "rounds": [_round(k, 0.64 ** k) for k in range(rounds + 1)]})
        if control:
            runs.append({"trial": t, "strategy": "reset", "control": "reinit",
                         "rounds": [_round(k, 0.64 ** k) for k in range(1, rounds + 1)]})
    return {"preset": preset, "profile": "quick", "trials": list(trials), "controls": ["reinit"] if control else [],
            "rounds": rounds, "runs": runs}


def test_validation_points_are_hollow_and_labelled_apart():
    fig, ax = plt.subplots()
    plot_metric(ax, {"": _summary("conv4-cifar10", (0,))}, "accuracy", "conv4-cifar10")
    stars = [line for line in ax.get_lines() if line.get_marker() == "*"]
    by_label = {line.get_label(): line for line in stars if not line.get_label().startswith("_")}
    assert set(by_label) == {"paper, validation accuracy (ours: test)",
                             "paper (relative points anchored on our dense run)"}
    hollow = [line for line in stars if line.get_markerfacecolor() == "none"]
    assert len(hollow) == 1 and list(hollow[0].get_xdata()) == [100.0] and list(hollow[0].get_ydata()) == [75.0]
    assert all(line.get_markerfacecolor() != "none" for line in stars if line is not hollow[0])
    plt.close(fig)


def test_test_only_references_get_no_validation_entry():
    fig, ax = plt.subplots()
    plot_metric(ax, {"": _summary("lenet-mnist", (0,))}, "accuracy", "lenet-mnist")
    labels = {line.get_label() for line in ax.get_lines() if line.get_marker() == "*"}
    assert "paper, validation accuracy (ours: test)" not in labels
    plt.close(fig)


def test_report_figures_draw_the_trials_present(tmp_path):
    summary = _summary("lenet-mnist", (1,))   # `lth run --trials 2 --trial 1 --curves`: no trial 0
    paths = report_figures(summary, tmp_path)
    assert [p.name for p in paths] == ["lenet-mnist-quick-density.png", "lenet-mnist-quick-accuracy.png",
                                       "lenet-mnist-quick-early_stop.png", "lenet-mnist-quick-curves.png"]
    fig = summary_curves_figure(summary, [0, 2], [2])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Pm", "100.0%", "41.0%", "run", "ticket", "reinit"]
    drawn = [line for line in ax.get_lines() if list(line.get_xdata()) == [10, 20]]
    assert len(drawn) == 3                    # tickets at rounds 0 and 2, the reinit control at round 2
    plt.close(fig)
    with pytest.raises(ValueError, match=r"holds trials \[1\], not trial 0"):
        summary_curves_figure(summary, [0, 2], trial=0)


def test_curves_of_the_lowest_trial_by_default():
    summary = _summary("lenet-mnist", (3, 2))
    summary["runs"][2]["rounds"][2]["density"] = 0.5   # trial 2's round 2 tells the trials apart
    fig = summary_curves_figure(summary, [2])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["Pm", "50.0%", "run", "ticket"]
    plt.close(fig)


def test_lines_are_the_mean_and_bands_the_min_max_over_trials_in_one_colour_per_series():
    summary = _summary("lenet-mnist", (0, 1))
    for run in summary["runs"]:
        if run["trial"] == 1:                  # trial 1 is 4 pp better at every round
            for r in run["rounds"]:
                r["early_stop_test_accuracy"] += 0.04
    fig, ax = plt.subplots()
    plot_metric(ax, {"": summary}, "accuracy")
    ticket = next(line for line in ax.get_lines() if list(line.get_xdata()) == pytest.approx([40.96, 64.0, 100.0]))
    assert list(ticket.get_ydata()) == pytest.approx([74.0, 73.0, 72.0])          # the mean of 70+k and 74+k
    band = ax.collections[0].get_paths()[0].vertices
    assert (band[:, 1].min(), band[:, 1].max()) == pytest.approx((70.0, 76.0))    # min of round 0, max of round 2
    assert ax.get_legend().get_title().get_text() == "line: mean, band: min-max over 2 trials"
    assert ticket.get_color() == PALETTE["winning ticket"]
    # the same series keeps its colour in a figure of another summary, where it comes second
    fig2, ax2 = plt.subplots()
    reinit_only = {**summary, "runs": [r for r in summary["runs"] if r["control"] == "reinit"]}
    plot_metric(ax2, {"": reinit_only}, "accuracy")
    assert ax2.get_lines()[0].get_color() == PALETTE["random reinit"] != PALETTE["winning ticket"]
    plt.close(fig)
    plt.close(fig2)


def test_relative_paper_points_sit_on_the_first_summarys_dense_network():
    first, second = _summary("lenet-mnist", (0,)), _summary("lenet-mnist", (0,))
    for run in second["runs"]:
        for r in run["rounds"]:
            r["early_stop_test_accuracy"] += 0.10          # dense 80% instead of 70%
    fig, ax = plt.subplots()
    plot_metric(ax, {"a: ": first, "b: ": second}, "accuracy", "lenet-mnist")
    star = next(line for line in ax.get_lines() if line.get_marker() == "*" and list(line.get_xdata()) == [13.5])
    assert list(star.get_ydata()) == pytest.approx([70.0 + 0.3])   # the paper's +0.3 pp over the first's 70%
    plt.close(fig)


def test_notebook_figures_are_stored_as_small_palette_pngs():
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from lth_tutorial.lesson import small_png

    fig, ax = plt.subplots(figsize=(6, 3), dpi=72)
    for k in range(8):
        ax.plot(range(50), [(i * (k + 1)) % 17 for i in range(50)], "o-", label=str(k))
    ax.legend()
    plain = io.BytesIO()
    fig.savefig(plain, format="png", bbox_inches="tight")
    small = small_png(fig)
    image = Image.open(io.BytesIO(small))
    assert image.mode == "P" and image.size == Image.open(io.BytesIO(plain.getvalue())).size
    assert len(small) < 0.6 * len(plain.getvalue())
    plt.close(fig)
