"""Print the tables of docs/reproduction.md from committed summaries, so the doc never drifts from them.

    python scripts/reproduction_tables.py results/lenet-mnist-paper.json [--old OLD.json]

For a ticket + reinit summary: per round, mean and half the min-max range over trials of the test
accuracy at early stop, both series' gap to the dense network (round 0 of the same trials), early-stop
iterations as a multiple of the dense network's, and where the worst ticket beats the best reinit.
`--old` adds the old file's ticket and reinit means beside, to show what a regeneration changed.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def per_round(summary: dict, control: str, key: str) -> dict[int, list[float]]:
    values: dict[int, list[float]] = {}
    for run in summary["runs"]:
        if run["control"] == control:
            for r in run["rounds"]:
                values.setdefault(r["round"], []).append(r[key])
    return values


def densities(summary: dict) -> dict[int, float]:
    return {r["round"]: r["density"] for r in summary["runs"][0]["rounds"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("summary")
    parser.add_argument("--old", help="an earlier summary of the same grid, to print beside")
    args = parser.parse_args()
    s = json.loads(Path(args.summary).read_text())
    old = json.loads(Path(args.old).read_text()) if args.old else None
    acc, it = per_round(s, "none", "early_stop_test_accuracy"), per_round(s, "none", "early_stop_iteration")
    racc, rit = per_round(s, "reinit", "early_stop_test_accuracy"), per_round(s, "reinit", "early_stop_iteration")
    pm = densities(s)
    dense, dense_it = statistics.fmean(acc[0]), statistics.fmean(it[0])
    mean = statistics.fmean
    half = lambda v: (max(v) - min(v)) * 50
    head = ("| Pm % | ticket acc % | reinit acc % | ticket − dense | reinit − dense | ticket early stop (× dense) "
            "| reinit early stop (× dense) | worst ticket − best reinit |")
    if old:
        head += " old ticket / reinit acc % |"
    print(f"{len(s['trials'])} trials; mean ± half the min-max range over trials\n")
    print(head)
    print("|---:" * (head.count("|") - 1) + "|")
    for k in sorted(acc):
        row = f"| {pm[k] * 100:.1f} | {mean(acc[k]) * 100:.2f} ± {half(acc[k]):.2f} | "
        if k in racc:
            row += (f"{mean(racc[k]) * 100:.2f} ± {half(racc[k]):.2f} | {(mean(acc[k]) - dense) * 100:+.2f} | "
                    f"{(mean(racc[k]) - dense) * 100:+.2f} | {mean(it[k]):,.0f} ({mean(it[k]) / dense_it:.2f}) | "
                    f"{mean(rit[k]):,.0f} ({mean(rit[k]) / dense_it:.2f}) | {(min(acc[k]) - max(racc[k])) * 100:+.2f} |")
        else:
            row += f"| | | {mean(it[k]):,.0f} (1.00) | | |"
        if old:
            oacc, oracc = per_round(old, "none", "early_stop_test_accuracy"), per_round(old, "reinit",
                                                                                     "early_stop_test_accuracy")
            row += f" {mean(oacc[k]) * 100:.2f} / " + (f"{mean(oracc[k]) * 100:.2f}" if k in oracc else "") + " |"
        print(row)
    print(f"\ndense: {dense * 100:.2f}% (trials {', '.join(f'{a * 100:.2f}' for a in acc[0])}), early stop "
          f"{', '.join(str(i) for i in it[0])}")
    print("provenance:", json.dumps(s.get("provenance", {})))


if __name__ == "__main__":
    main()
