"""The cheaper-tickets table: accuracy and cost per method and density, from committed summaries.

Reads results/cheaper-tickets/*.json (`lth sweep ... --method ... --oneshot ...`, the LeNet paper
profile) and IMP at the same budget (results/lenet-mnist-paper.json, the rounds nearest each density),
and prints one markdown table: per method and density, the test accuracy at early stop (mean [min, max]
over trials) and the training iterations spent to obtain the mask and to train it.

Usage: python scripts/cheaper_tickets_table.py [--results results]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from lth_tutorial.reports import frame, load_summary


def rows(results: Path) -> pd.DataFrame:
    methods = [frame(load_summary(p)) for p in sorted((results / "cheaper-tickets").glob("*.json"))]
    found = pd.concat(methods, ignore_index=True)
    found = found[found["round"] > 0].assign(method=lambda d: d["series"].astype(str))
    imp = frame(load_summary(results / "lenet-mnist-paper.json"))
    imp = imp[imp["control"] == "none"]
    picked = []
    for density in sorted(found["density"].round(4).unique()):
        nearest = imp.loc[(imp["density"] - density).abs().groupby(imp["trial"]).idxmin()]
        picked.append(nearest.assign(method="IMP (winning ticket)", target=density))
    imp = pd.concat(picked, ignore_index=True)
    return pd.concat([found.assign(target=found["density"].round(4)), imp], ignore_index=True)


def table(data: pd.DataFrame) -> str:
    out = []
    for (method, target), group in data.groupby(["method", "target"], sort=False):
        acc = group["early_stop_test_accuracy"] * 100
        out.append({"method": method, "Pm %": round(100 * target, 1), "trials": len(group),
                    "test acc at early stop %, mean [min, max]": f"{acc.mean():.2f} [{acc.min():.2f}, {acc.max():.2f}]",
                    "iterations to find the mask": int(group["mask_iterations"].mean()) if "mask_iterations" in group
                    and group["mask_iterations"].notna().all() else int(50_000 * group["round"].mean()),
                    "iterations to train it": 50_000})
    frame_ = pd.DataFrame(out).sort_values(["Pm %", "method"], ascending=[False, True])
    return frame_.to_markdown(index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="results")
    print(table(rows(Path(parser.parse_args().results))))


if __name__ == "__main__":
    main()
