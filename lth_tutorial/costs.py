"""What a ticket costs: the training iterations spent finding its mask and training it, beside its accuracy.

Owns `cost_frame` (a summary's tidy table, `reports.frame`, with `mask_iterations`, `train_iterations`
and their sum `total_iterations` on every round), `at_targets` (IMP's rounds nearest each target
density, one per trial, so that a method is compared with IMP at the same size), and `cost_table`
(per series and density: accuracy as mean [min, max] over trials, and the iterations spent).
`plots.cost_figure` draws accuracy against total iterations from the same rows.

Costs in iterations of the round's own training budget T (`rounds.mask_cost`): IMP's round-k mask took
k trainings (kT), a method at initialization none (only scoring passes: forward + backward on one
batch, recorded beside), an early-bird mask the iterations of dense training up to its draw; training
the ticket takes T more. Summaries written before rounds recorded their cost (the committed IMP
paper-profile results) get IMP's by that definition, which holds for the reset strategy.
"""
from __future__ import annotations

import pandas as pd

from .reports import frame, spread_name


def cost_frame(summary: dict, source: str = "") -> pd.DataFrame:
    """`reports.frame(summary)` with `mask_iterations`, `train_iterations` and `total_iterations` filled."""
    df = frame(summary, source)
    T = summary["config"]["train"]["iterations"]
    for key in ("mask_iterations", "train_iterations", "scoring_passes"):
        if key not in df:
            df[key] = pd.NA
    missing = df["mask_iterations"].isna()
    if missing.any():
        imp = (df["method"] == "magnitude") & (df["strategy"] == "reset")
        if (missing & ~imp).any():
            raise ValueError(f"{summary['preset']} ({summary['profile']}): some rounds record no cost and are not "
                             "reset IMP, whose cost is known; re-run them with this version (lth run / lth sweep).")
        df.loc[missing, "mask_iterations"] = df.loc[missing, "round"] * T   # round k: k trainings of T
        df.loc[missing, "train_iterations"] = T
        df.loc[missing, "scoring_passes"] = 0
    for key in ("mask_iterations", "train_iterations"):
        df[key] = df[key].astype("int64")
    df["total_iterations"] = df["mask_iterations"] + df["train_iterations"]
    return df


def at_targets(df: pd.DataFrame, targets: list[float], series: str = "winning ticket") -> pd.DataFrame:
    """For each target density, every trial's round of `series` nearest it (IMP's ladder seldom hits a
    one-shot target exactly; the chosen round's own Pm stays in `density`), with `target` added."""
    rows = df[df["series"] == series]
    if rows.empty:
        raise ValueError(f"no {series!r} rounds to match to the targets.")
    picked = []
    for target in targets:
        nearest = (rows["density"] - target).abs().groupby(rows["trial"]).idxmin()
        picked.append(rows.loc[nearest].assign(target=target))
    return pd.concat(picked, ignore_index=True)


def cost_table(df: pd.DataFrame, metric: str = "early_stop_test_accuracy") -> pd.DataFrame:
    """Per series and `target` density (rows without one use their own Pm, to 0.01%): trials, Pm, accuracy as
    mean [min, max] over trials in percent (and as fractions in `accuracy`, `accuracy_min`, `accuracy_max`
    for figures), and the iterations spent on the mask, its training, and both."""
    df = df.assign(target=df["target"] if "target" in df else pd.NA).copy()
    df["target"] = df["target"].fillna(df["density"].round(4)).astype(float)   # a one-shot Pm, to 0.01%
    out, trials = [], int(df.groupby([df["series"].astype(str), "target"])["trial"].nunique().max())
    for (series, target), group in df.groupby([df["series"].astype(str), "target"], sort=False):
        acc = group[metric] * 100
        spread = f"{acc.mean():.2f} [{acc.min():.2f}, {acc.max():.2f}]" if len(group) > 1 else f"{acc.mean():.2f}"
        out.append({"series": series, "Pm %": round(100 * group["density"].mean(), 1), "trials": len(group),
                    f"accuracy %, {spread_name(trials)}": spread, "accuracy": acc.mean() / 100,
                    "accuracy_min": acc.min() / 100, "accuracy_max": acc.max() / 100,
                    "mask iterations": int(group["mask_iterations"].mean()),
                    "train iterations": int(group["train_iterations"].mean()),
                    "total iterations": int(group["total_iterations"].mean()), "target": target})
    return pd.DataFrame(out).sort_values(["target", "total iterations"], ascending=[False, False],
                                         kind="stable").reset_index(drop=True)


__all__ = ["cost_frame", "at_targets", "cost_table"]
