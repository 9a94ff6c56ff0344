"""Print the tables of docs/reproduction.md from committed summaries, so the doc never drifts from them.

    python scripts/reproduction_tables.py results/lenet-mnist-paper.json [--old OLD.json]

For a ticket + reinit summary, from the tidy table (`reports.aggregate`): per round, the mean and the
min-max range over trials of the test accuracy at early stop, both series' gap to the dense network
(round 0 of the same trials), early-stop iterations as a multiple of the dense network's, and the worst
ticket minus the best reinit. `--old` adds an earlier file's ticket and reinit means beside, to show
what a regeneration changed. Rendered by pandas (markdown).
"""
from __future__ import annotations

import argparse
import json

import pandas as pd

from lth_tutorial.reports import aggregate, load_summary

ACC = "early_stop_test_accuracy"
IT = "early_stop_iteration"


def comparison(summary: dict, old: dict | None = None) -> pd.DataFrame:
    agg = aggregate(summary)
    ticket = agg[agg["series"] == "winning ticket"].set_index("round")
    reinit = agg[agg["series"] == "random reinit"].set_index("round").reindex(ticket.index)
    dense, dense_it = ticket.loc[0, ACC], ticket.loc[0, IT]

    def spread(rows: pd.DataFrame) -> pd.Series:
        cells = (rows[ACC] * 100).map("{:.2f}".format) + " [" + (rows[f"{ACC}_min"] * 100).map("{:.2f}".format) \
                + ", " + (rows[f"{ACC}_max"] * 100).map("{:.2f}".format) + "]"
        return cells.where(rows[ACC].notna(), "")

    def signed(values: pd.Series) -> pd.Series:
        return (values * 100).map(lambda v: "" if pd.isna(v) else f"{v:+.2f}")

    def stops(rows: pd.DataFrame) -> pd.Series:
        return rows[IT].map(lambda v: "" if pd.isna(v) else f"{v:,.0f} ({v / dense_it:.2f})")

    table = pd.DataFrame({"Pm %": (ticket["density"] * 100).map("{:.1f}".format),
                          "ticket acc %": spread(ticket), "reinit acc %": spread(reinit),
                          "ticket − dense": signed(ticket[ACC] - dense),
                          "reinit − dense": signed(reinit[ACC] - dense),
                          "ticket early stop (× dense)": stops(ticket),
                          "reinit early stop (× dense)": stops(reinit),
                          "worst ticket − best reinit": signed(ticket[f"{ACC}_min"] - reinit[f"{ACC}_max"])})
    if old is not None:
        before = aggregate(old).pivot_table(index="round", columns="series", values=ACC, observed=True) * 100
        table["old ticket / reinit acc %"] = [
            " / ".join(f"{before.loc[k, s]:.2f}" for s in ("winning ticket", "random reinit")
                       if s in before and k in before.index and pd.notna(before.loc[k, s]))
            for k in ticket.index]
    return table.reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("summary")
    parser.add_argument("--old", help="an earlier summary of the same grid, to print beside")
    args = parser.parse_args()
    summary = load_summary(args.summary)
    old = load_summary(args.old) if args.old else None
    trials = len({run["trial"] for run in summary["runs"]})
    print(f"{trials} trials; accuracy as mean [min, max] over trials\n")
    print(comparison(summary, old).to_markdown(index=False, disable_numparse=True,
                                            colalign=["right"] * (9 if old else 8)))
    print("\nprovenance:", json.dumps(summary.get("provenance", {})))


if __name__ == "__main__":
    main()
