"""The cheaper-tickets table: accuracy and cost per method and density, from committed summaries.

Reads results/cheaper-tickets/*.json (`lth sweep ... --method ... --oneshot ...`, the LeNet paper
profile) and IMP at the same budget (results/lenet-mnist-paper.json, each trial's round nearest each
density), and prints one markdown table (`costs.cost_table`): per method and density, the test accuracy
at early stop (mean [min, max] over trials) and the training iterations spent to find the mask and to
train it. With --ablations, results/cheaper-tickets-ablations/*.json instead, beside IMP and its random reinit.

Usage: python scripts/cheaper_tickets_table.py [--results results] [--ablations]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from lth_tutorial.costs import at_targets, cost_frame, cost_table
from lth_tutorial.reports import load_summary

IMP = "IMP (winning ticket)"


def pruned(folder: Path) -> pd.DataFrame:
    rows = pd.concat([cost_frame(load_summary(p)) for p in sorted(folder.glob("*.json"))], ignore_index=True)
    rows = rows[rows["round"] > 0]
    return rows.assign(target=rows["density"].round(4))


def rows(results: Path, ablations: bool = False) -> pd.DataFrame:
    found = pruned(results / ("cheaper-tickets-ablations" if ablations else "cheaper-tickets"))
    imp = cost_frame(load_summary(results / "lenet-mnist-paper.json"))
    targets = sorted(found["target"].unique(), reverse=True)
    parts = [found, at_targets(imp, targets).assign(series=IMP)]
    if ablations:
        parts.append(at_targets(imp, targets, "random reinit"))   # the committed IMP runs have no random sparsity
    return pd.concat(parts, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--ablations", action="store_true", help="the shuffle / invert / reinit grid instead")
    args = parser.parse_args()
    table = cost_table(rows(Path(args.results), args.ablations))
    print(table.drop(columns=["accuracy", "accuracy_min", "accuracy_max", "target"]).to_markdown(index=False))


if __name__ == "__main__":
    main()
