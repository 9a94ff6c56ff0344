"""Figures in the paper's style, drawn with seaborn from the tidy table (`reports.frame`).

Owns: metric-vs-density panels (a line per series at the mean over trials, a band over the min-max
range of trials, named in the legend; density on a reversed log axis as in the paper's Figures 3-5),
one palette per series used by every figure and notebook, the paper's reference points on the same
axes (relative points anchored on our dense round 0; points the paper gives as *validation* accuracy
hollow, under their own label), training curves per round, and `report_figures`, which saves the
standard set as PNG. matplotlib stays underneath: every function takes or returns its Axes/Figure.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FixedLocator, NullLocator

from .paper import references_for
from .reports import SERIES_ORDER, aggregate, frame

# one colour per series, in every figure (colour-blind safe); other series take the next free colours
_COLORS = sns.color_palette("colorblind", 10)
PALETTE = dict(zip(SERIES_ORDER, [_COLORS[0], _COLORS[1], _COLORS[2], _COLORS[4], _COLORS[3]]))
METRICS = {"accuracy": ("early_stop_test_accuracy", "test accuracy at early stop (%)", 100),
           "early_stop": ("early_stop_iteration", "early-stop iteration", 1),
           "final": ("final_test_accuracy", "final test accuracy (%)", 100)}
DENSITY_TICKS = (100, 51.3, 21.1, 7.0, 3.6, 1.9, 1.2)


_SERIES_COLORS = list(PALETTE.values())   # the paper's series; other series draw from the rest
PALETTE["IMP (winning ticket)"] = PALETTE["winning ticket"]   # what notebook 06 calls it beside other methods
# the methods at initialization and early-bird tickets (notebook 06): the same colour in every figure
PALETTE |= {"magnitude-init": _COLORS[5], "random": _COLORS[7], "snip": _COLORS[8], "grasp": _COLORS[6],
            "synflow": _COLORS[9], "early-bird": sns.color_palette("dark", 10)[3]}


def palette(series: list[str]) -> dict[str, tuple]:
    """PALETTE for the known series, the remaining colour-blind colours for any other (then darker ones)."""
    taken = set(_SERIES_COLORS) | {PALETTE[s] for s in series if s in PALETTE}
    spare = iter([c for c in _COLORS if c not in taken] + sns.color_palette("dark", 10))
    return {s: PALETTE.get(s) or next(spare) for s in series}


def density_axis(ax) -> None:
    """The paper's x axis: percent of weights remaining, log scale, decreasing to the right."""
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.xaxis.set_major_locator(FixedLocator(DENSITY_TICKS))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:g}" for t in DENSITY_TICKS])
    ax.set_xlabel("percent of weights remaining (Pm)")
    ax.grid(True, alpha=0.3)


def long_frame(summaries: dict[str, dict]) -> pd.DataFrame:
    """The tidy tables of several summaries, one `source` per dict key, with the x each round is drawn at
    (its mean Pm over trials, in percent, so that a round's trials share one x)."""
    parts = [frame(summary, source) for source, summary in summaries.items()]
    df = pd.concat([p for p in parts if not p.empty], ignore_index=True)
    df["Pm %"] = df.groupby(["source", "series", "round"], observed=True)["density"].transform("mean") * 100
    df["series"] = df["series"].astype(str)
    return df


def plot_metric(ax, summaries: dict[str, dict], metric: str = "accuracy", preset: str | None = None,
                paper_scale: dict | None = None) -> None:
    """One panel: `metric` vs density for every series of every summary. Colour = series, line style =
    summary (dict key) when there are several; the band is the min-max range over trials."""
    key, ylabel, scale = METRICS[metric]
    df = long_frame(summaries)
    df["value"] = df[key] * scale
    counts = df.groupby(["source", "series"])["trial"].nunique()
    trials = int(counts.max())
    held = f"{counts.min()}-{trials}" if counts.min() != trials else f"{trials}"
    sources = list(summaries)
    styled = {"style": "source", "markers": True, "dashes": True} if len(sources) > 1 else {"marker": "o"}
    sns.lineplot(data=df, x="Pm %", y="value", hue="series", palette=palette(list(dict.fromkeys(df["series"]))),
                 estimator="mean", errorbar=("pi", 100) if trials > 1 else None, ms=5, ax=ax, **styled)
    if paper_scale:
        agg = aggregate(paper_scale)
        for name, rows in agg.groupby("series", observed=True):
            ax.plot(rows["density"] * 100, rows[key] * scale, "s--", ms=3, alpha=0.7, color=palette([str(name)])[str(name)],
                    label=f"ours, paper profile: {name} ({int(rows['trials'].max())} trials)")
    if preset:
        # relative points sit on the first summary's dense network (the one the others are compared to)
        ticket = df[(df["source"] == sources[0]) & (df["series"] == "winning ticket") & (df["round"] == 0)
                    & (df["density"] == 1.0)]
        _draw_references(ax, preset, metric, ticket[key].mean() if len(ticket) else None, scale)
    density_axis(ax)
    ax.set_ylabel(ylabel)
    handles, labels = ax.get_legend_handles_labels()
    band = f"line: mean, band: min-max over {held} trials" if trials > 1 else "1 trial"
    ax.legend(handles, labels, fontsize=7, title=band, title_fontsize=7)


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
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    plot_metric(axes[0], summaries, "early_stop", preset, paper_scale)
    plot_metric(axes[1], summaries, "accuracy", preset, paper_scale)
    axes[0].get_legend().remove()   # one legend for both panels
    axes[1].legend(*axes[1].get_legend_handles_labels(), fontsize=7, loc="best",
                   title=axes[1].get_legend().get_title().get_text(), title_fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def curves_frame(summary: dict, trial: int) -> pd.DataFrame:
    """One trial's training curves (a summary written with `--curves`) as a long table."""
    rows = []
    for run in summary["runs"]:
        if run["trial"] != trial:
            continue
        for r in run["rounds"]:
            c = r["curve"]
            rows += [{"control": run["control"], "round": r["round"], "Pm": f"{r['density'] * 100:.1f}%",
                      "iteration": i, "test accuracy (%)": a * 100} for i, a in zip(c["iteration"], c["test_accuracy"])]
    return pd.DataFrame(rows)


def curves_figure(metrics: list[dict], title: str = "") -> plt.Figure:
    """Test accuracy over training for several rounds (the paper's Figure 3 view), from round metrics."""
    rows = [{"Pm": f"{m['density'] * 100:.1f}%", "iteration": i, "test accuracy (%)": a * 100}
            for m in metrics for i, a in zip(m["curves"]["iteration"], m["curves"]["test_accuracy"])]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.lineplot(data=pd.DataFrame(rows), x="iteration", y="test accuracy (%)", hue="Pm", palette="viridis", ax=ax)
    ax.set_xlabel("training iteration")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, title="Pm", title_fontsize=8)
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
    df = curves_frame(summary, trial)
    control = next((c for c in df["control"].unique() if c != "none"), None)
    shown = df[((df["control"] == "none") & df["round"].isin(rounds))
               | ((df["control"] == control) & df["round"].isin(control_rounds if control else []))].copy()
    shown["run"] = shown["control"].map(lambda c: "ticket" if c == "none" else c)
    order = [f"{d}" for d in df[df["control"] == "none"].drop_duplicates("round").set_index("round").loc[rounds, "Pm"]]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.lineplot(data=shown, x="iteration", y="test accuracy (%)", hue="Pm", hue_order=order, style="run",
                 style_order=[r for r in ("ticket", control) if r in set(shown["run"])], palette="viridis", ax=ax)
    ax.set_xlabel("training iteration")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
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


_DENSITY_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def cost_figure(table: pd.DataFrame, title: str = "") -> plt.Figure:
    """What a ticket costs, from `costs.cost_table`: accuracy vs Pm (left, a line per series, bars over
    the min-max range of trials) and accuracy vs the training iterations spent to find the mask and
    train it (right, log scale; colour = series, marker = target density)."""
    series = list(dict.fromkeys(table["series"]))
    colors = palette(series)
    targets = sorted(table["target"].unique(), reverse=True)
    markers = dict(zip(targets, _DENSITY_MARKERS))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in series:
        rows = table[table["series"] == name].sort_values("target", ascending=False)
        acc = rows["accuracy"] * 100
        bars = [acc - rows["accuracy_min"] * 100, rows["accuracy_max"] * 100 - acc]
        left.errorbar(rows["Pm %"], acc, yerr=bars, fmt="o-", ms=4, capsize=2, color=colors[name], label=name)
        right.plot(rows["total iterations"], acc, "-", color=colors[name], alpha=0.4, lw=1)
        for _, r in rows.iterrows():
            right.plot(r["total iterations"], r["accuracy"] * 100, markers[r["target"]], color=colors[name], ms=6)
    density_axis(left)
    ticks = sorted({round(p, 1) for p in table["Pm %"]} | ({100.0} if (table["Pm %"] > 60).any() else set()))
    left.xaxis.set_major_locator(FixedLocator(ticks))
    left.set_xticklabels([f"{t:g}" for t in ticks])
    left.set_ylabel("test accuracy at early stop (%)")
    left.legend(fontsize=7, loc="lower left", title="mean, bars: min-max over trials", title_fontsize=7)
    right.set_xscale("log")
    totals = sorted(table["total iterations"].unique())
    right.xaxis.set_major_locator(FixedLocator(totals))
    right.xaxis.set_minor_locator(NullLocator())
    right.set_xticklabels([f"{t / 1000:g}k" for t in totals], rotation=45, fontsize=7)
    right.set(xlabel="training iterations spent: finding the mask + training it (log)",
              ylabel="test accuracy at early stop (%)")
    right.grid(True, alpha=0.3)
    handles = [plt.Line2D([], [], ls="", marker=markers[t], color="0.3", label=f"Pm {100 * t:.1f}%") for t in targets]
    right.legend(handles=handles, fontsize=7, loc="lower right", title="colour: as left", title_fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
