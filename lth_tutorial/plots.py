"""Figures in the paper's style: metrics against the fraction of weights remaining.

Owns: accuracy-vs-density and early-stop-vs-density panels (mean line, min-max band over trials,
density on a reversed log axis as in the paper's Figures 3-5), the paper's reference points drawn on
the same axes (relative points anchored on our dense round 0, and labelled as the paper's; points the
paper gives as *validation* accuracy are drawn hollow under their own label, since our axes show test
accuracy), training curves per round, and `report_figures`, which saves the standard set as PNG.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import FixedLocator, NullLocator

from .paper import references_for
from .reports import by_round, series

COLORS = {"winning ticket": "tab:blue", "random reinit": "tab:orange", "random sparsity": "tab:green",
          "continued training": "tab:purple", "one-shot": "tab:red"}
METRICS = {"accuracy": ("early_stop_test_accuracy", "test accuracy at early stop (%)", 100),
           "early_stop": ("early_stop_iteration", "early-stop iteration", 1),
           "final": ("final_test_accuracy", "final test accuracy (%)", 100)}


def _density_axis(ax) -> None:
    ax.set_xscale("log")
    ax.invert_xaxis()
    ticks = [100, 51.3, 21.1, 7.0, 3.6, 1.9, 1.2]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_xlabel("percent of weights remaining (Pm)")
    ax.grid(True, alpha=0.3)


def plot_metric(ax, summaries: dict[str, dict], metric: str = "accuracy", preset: str | None = None,
                paper_scale: dict | None = None) -> None:
    """One panel: `metric` vs density for every series of every summary (label prefix = dict key)."""
    key, ylabel, scale = METRICS[metric]
    dense = None
    for prefix, summary in summaries.items():
        for name, trials in series(summary).items():
            rows = by_round(trials, key)
            if not rows:
                continue
            x = [r[0] * 100 for r in rows]
            color = COLORS.get(name)
            text = f"{prefix}{name}" + (f" ({len(trials)} trials)" if len(trials) > 1 else "")
            ax.plot(x, [r[1] * scale for r in rows], "o-", color=color, label=text, ms=4)
            if len(trials) > 1:
                ax.fill_between(x, [r[2] * scale for r in rows], [r[3] * scale for r in rows], color=color,
                                alpha=0.2)
            if dense is None and name == "winning ticket" and rows[0][0] == 1.0:
                dense = rows[0][1]
    if paper_scale:
        for name, trials in series(paper_scale).items():
            rows = by_round(trials, key)
            if rows:
                ax.plot([r[0] * 100 for r in rows], [r[1] * scale for r in rows], "s--", ms=3, alpha=0.7,
                        color=COLORS.get(name), label=f"ours, paper profile: {name} ({len(trials)} trials)")
    if preset:
        _draw_references(ax, preset, metric, dense, scale)
    _density_axis(ax)
    ax.set_ylabel(ylabel)


REFERENCE_LABELS = {"test": "paper (relative points anchored on our dense run)",
                    "validation": "paper, validation accuracy (ours: test)"}


def _draw_references(ax, preset: str, metric: str, dense: float | None, scale: float) -> None:
    """The paper's points: filled stars for test accuracy (what our axes show), hollow stars with their
    own legend entry for the paper's validation accuracies, which are a different split than ours."""
    points = [r for r in references_for(preset) if r.metric == metric]
    labelled: set[str] = set()
    for r in points:
        if r.mode == "absolute":
            y = r.value * scale
        elif dense is None:
            continue
        elif r.mode == "delta_pp":
            y = dense * scale + r.value
        else:
            y = dense * r.value * scale
        ax.plot(r.density * 100, y, marker="*", ms=13, color="black", ls="none",
                mfc="none" if r.split == "validation" else "black",
                label=None if r.split in labelled else REFERENCE_LABELS[r.split])
        ax.annotate(r.note, (r.density * 100, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
        labelled.add(r.split)


def density_figure(summaries: dict[str, dict], preset: str | None = None, paper_scale: dict | None = None,
                   title: str = "") -> plt.Figure:
    """Two panels side by side: early-stop iteration and test accuracy at early stop vs density."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    plot_metric(axes[0], summaries, "early_stop", preset, paper_scale)
    plot_metric(axes[1], summaries, "accuracy", preset, paper_scale)
    axes[1].legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def curves_figure(metrics: list[dict], title: str = "") -> plt.Figure:
    """Test accuracy over training for several rounds (the paper's Figure 3 view)."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for m in metrics:
        c = m["curves"]
        ax.plot(c["iteration"], [a * 100 for a in c["test_accuracy"]], label=f"Pm {m['density'] * 100:.1f}%")
    ax.set_xlabel("training iteration")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def summary_curves_figure(summary: dict, rounds: list[int], control_rounds: list[int] = (), trial: int | None = None,
                          title: str = "") -> plt.Figure:
    """Figure 3 from a summary written with curves (`lth run --curves`): one trial's tickets at `rounds`
    (solid), and its control at `control_rounds` (dashed, in the colour of the ticket of the same round).
    `trial` defaults to the lowest trial the summary holds (a file of `--trial 1` alone has no trial 0)."""
    present = sorted({run["trial"] for run in summary["runs"]})
    trial = present[0] if trial is None and present else trial
    if trial not in present:
        raise ValueError(f"the summary holds trials {present}, not trial {trial}; pick one of those.")
    runs = {run["control"]: {r["round"]: r for r in run["rounds"]} for run in summary["runs"] if run["trial"] == trial}
    fig = curves_figure([{"density": runs["none"][k]["density"], "curves": runs["none"][k]["curve"]} for k in rounds],
                        title=title)
    ax = fig.axes[0]
    colors = {k: line.get_color() for k, line in zip(rounds, ax.get_lines())}
    control = next((c for c in runs if c != "none"), None)
    for k in control_rounds if control else ():
        r = runs[control][k]
        ax.plot(r["curve"]["iteration"], [a * 100 for a in r["curve"]["test_accuracy"]], "--", color=colors.get(k),
                label=f"{control}, Pm {r['density'] * 100:.1f}%")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def report_figures(summary: dict, out: str | Path, paper_scale: dict | None = None) -> list[Path]:
    """Save the standard figures of a summary as PNG in `out`; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{summary['preset']}-{summary['profile']}"
    paths = []
    fig = density_figure({"": summary}, summary["preset"], paper_scale, title=f"{summary['preset']} ({summary['profile']} profile)")
    paths.append(out / f"{name}-density.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    for metric in ("accuracy", "early_stop"):
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        plot_metric(ax, {"": summary}, metric, summary["preset"], paper_scale)
        ax.legend(fontsize=7)
        ax.set_title(f"{summary['preset']}: ticket vs controls ({summary['profile']} profile)")
        fig.tight_layout()
        paths.append(out / f"{name}-{metric}.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    last = max(r["round"] for run in summary["runs"] for r in run["rounds"])
    if last >= 1 and all("curve" in r for run in summary["runs"] for r in run["rounds"]):
        shown = sorted({0, last // 4, last // 2, (3 * last) // 4, last})
        trial = min(run["trial"] for run in summary["runs"])   # the trials present, not always 0
        fig = summary_curves_figure(summary, shown, [k for k in shown[-2:] if k > 0],  # controls start at round 1
                                    trial=trial,
                                    title=f"{summary['preset']}, trial {trial}: tickets (solid), controls (dashed)")
        paths.append(out / f"{name}-curves.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths
