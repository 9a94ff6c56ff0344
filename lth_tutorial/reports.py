"""From summaries to tables and files: one tidy table, and everything shown rendered from it.

Owns: `frame` (a summary as a pandas DataFrame, one row per trial x series x round, with every metric
and the per-kind densities), `aggregate` (mean, min and max over trials per series and round),
`table` (what a reader is shown, the spread named in its column header), the two questions a claim
asks of them (`early_stops`: did the rounds pass their minimum before the end; `beyond_spread`: is a
gap larger than the spread of trials), its renderings (markdown,
HTML, CSV: all pandas), `provenance` (what made the numbers), and summary files (save, load, merge).
Density is the paper's Pm: the fraction of all weights that remain, never-pruned kinds included.
`runner.run_grid` makes the summaries; nothing here trains.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .store import environment

def _cpu_name() -> str:
    try:  # Linux names the CPU model here; platform.processor() is often empty
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def provenance(device: str | torch.device | None = None) -> dict[str, Any]:
    """What made a summary's numbers: versions, hardware, and the settings that change results on
    `device` (default: CUDA if available), read now, so call it after the runs it describes.

    The run store keys every run by `store.environment`; this records the same, plus the flags behind
    its `deterministic` and `tf32`, so a reader can tell why two files differ. CUDA and cuDNN are None
    on CPU (not used there, whatever the torch build has).
    """
    from . import __version__
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    env = environment(device)
    hardware = (torch.cuda.get_device_name(device) if device.type == "cuda"
                else f"{_cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads")
    return {"lth_tutorial": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "hardware": hardware, "platform": platform.platform(), "device": env["device"],
            "cuda": env.get("cuda"), "cudnn": env.get("cudnn"), "threads": torch.get_num_threads(),
            "deterministic_algorithms": env["deterministic"],
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32}


def round_line(trial: int, who: str, m: dict) -> str:
    """The line `lth run` and `lth sweep` print for each trained round (`who`: ticket or a control)."""
    return (f"trial {trial} {who} round {m['round']}: Pm {m['density']:.2%}, early stop at "
            f"{m['early_stop_iteration']} (val loss {m['early_stop_val_loss']:.4f}, test acc "
            f"{m['early_stop_test_accuracy']:.2%}), final test acc {m['final_test_accuracy']:.2%}")


# what a round's mask cost (`rounds.mask_cost`): training iterations to find it and to train it, scoring passes,
# and for early-bird tickets the iteration of the draw (None: never drawn)
COST_KEYS = ("mask_iterations", "scoring_passes", "train_iterations", "early_bird_iteration")
SERIES_ORDER = ("winning ticket", "random reinit", "random sparsity", "continued training", "one-shot")
# Zhou et al.'s controls on the ticket's mask: what each keeps of the init (see rounds.control_start)
SIGN_SERIES = {"signed-constant": "signed constant", "signed-reinit": "signed reinit", "random-signs": "random signs"}
METRICS = ("early_stop_iteration", "early_stop_val_loss", "early_stop_test_accuracy", "final_test_accuracy")


def label(run: dict) -> str:
    """A run's series name: the ticket by its strategy (or its method at initialization), a control by
    what it randomizes."""
    if run.get("method"):
        ablation = {"reinit": "reinit", "random": "random sparsity", "shuffle": "layer-wise shuffle",
                    "invert": "inverted"}.get(run["control"])
        return run["method"] + (f" ({ablation})" if ablation else "")
    if run["control"] in SIGN_SERIES:
        return SIGN_SERIES[run["control"]]
    if run["control"] == "reinit":
        return "random reinit"
    if run["control"] == "random":
        return "random sparsity"
    return {"reset": "winning ticket", "continue": "continued training", "oneshot": "one-shot"}.get(
        run["strategy"], f"ticket ({run['strategy']})")


def frame(summary: dict, source: str = "") -> pd.DataFrame:
    """The tidy table: one row per (trial, series, round). Columns: source (a name for the summary when
    several share a figure), preset, profile, series, method (what chose the mask), strategy, control,
    trial, round, density (Pm), density_<kind> per layer kind, the metrics, test_accuracy_at_<N> where
    the preset reports them, and what the round's mask cost (`COST_KEYS`) where it was recorded."""
    rows = []
    for run in summary["runs"]:
        for r in run["rounds"]:
            row = {"source": source, "preset": summary["preset"], "profile": summary["profile"],
                   "series": label(run), "method": run.get("method", "magnitude"),
                   "strategy": run["strategy"], "control": run["control"],
                   "trial": run["trial"], "round": r["round"], "density": r["density"]}
            row |= {f"density_{kind}": d for kind, d in r.get("kind_density", {}).items()}
            row |= {k: r[k] for k in METRICS if k in r}
            row |= {k: r[k] for k in COST_KEYS if k in r}
            row |= {k: v for k, v in r.items() if k.startswith("test_accuracy_at_")}
            rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    order = [s for s in SERIES_ORDER if s in set(df["series"])] + sorted(set(df["series"]) - set(SERIES_ORDER))
    df["series"] = pd.Categorical(df["series"], categories=order)
    return df.sort_values(["source", "series", "trial", "round"], kind="stable").reset_index(drop=True)


def _frame(data: dict | pd.DataFrame) -> pd.DataFrame:
    return data if isinstance(data, pd.DataFrame) else frame(data)


def aggregate(data: dict | pd.DataFrame) -> pd.DataFrame:
    """Per (source, series, round): `trials` (how many hold the round), `density` and every metric's
    mean over them, and `<metric>_min` / `<metric>_max`. Only rounds that every trial of a series
    holds, so a mean is never taken over a different set of trials from one round to the next."""
    df = _frame(data)
    metrics = [c for c in df.columns if c in METRICS or c.startswith("test_accuracy_at_")]
    groups = df.groupby(["source", "series", "round"], observed=True)
    out = groups[["density", *metrics]].mean()
    out.insert(0, "trials", groups.size())
    for m in metrics:
        out[f"{m}_min"], out[f"{m}_max"] = groups[m].min(), groups[m].max()
    out = out.reset_index()
    held = df.groupby(["source", "series"], observed=True)["trial"].nunique().rename("held")
    out = out.join(held, on=["source", "series"])
    return out[out["trials"] == out["held"]].drop(columns="held").reset_index(drop=True)


def spread_name(trials: int) -> str:
    return f"mean [min, max] over {trials} trials" if trials > 1 else "1 trial"


def table(data: dict | pd.DataFrame, metrics: dict[str, str] | None = None) -> pd.DataFrame:
    """What a reader is shown: per series and round, Pm, the early-stop iteration (mean), and each
    accuracy as "mean [min, max]" in percent, the spread named in the header; rounds in order."""
    agg = aggregate(data)
    trials = int(agg["trials"].max()) if len(agg) else 1
    metrics = metrics or {"early_stop_test_accuracy": "test acc at early stop %",
                          "final_test_accuracy": "final test acc %"}
    shown = pd.DataFrame({"series": agg["series"].astype(str), "round": agg["round"],
                          "Pm %": agg["density"].mul(100).round(1)})
    if agg["source"].ne("").any():
        shown.insert(0, "source", agg["source"])
    if "early_stop_iteration" in agg:
        shown["early-stop iteration"] = agg["early_stop_iteration"].round().astype(int)
    for key, name in metrics.items():
        if key not in agg:
            continue
        cells = agg[key].mul(100).map("{:.2f}".format)
        if trials > 1:
            cells += " [" + agg[f"{key}_min"].mul(100).map("{:.2f}".format) + ", " \
                     + agg[f"{key}_max"].mul(100).map("{:.2f}".format) + "]"
        shown[f"{name}, {spread_name(trials)}" if trials > 1 else name] = cells
    shown["trials"] = agg["trials"]
    return shown


def early_stops(summary: dict) -> pd.DataFrame:
    """Per series: how many of its rounds (every trial's) early-stop before their last evaluation, so
    that their validation loss passed its minimum within the round, and how many at it (still improving
    when training ended: the early-stop iteration then measures the budget, not the network)."""
    df = frame(summary)
    last = summary["config"]["train"]["iterations"]
    df["before the end"] = df["early_stop_iteration"] < last
    out = df.groupby("series", observed=True)["before the end"].agg(["sum", "size"]).reset_index()
    out.columns = ["series", "before the end", "rounds"]
    out["at the last evaluation"] = out["rounds"] - out["before the end"]
    return out[["series", "rounds", "before the end", "at the last evaluation"]]


def beyond_spread(data: dict | pd.DataFrame, metric: str, series: str, versus: str | None = None) -> pd.DataFrame:
    """Per round both hold: `series` against `versus` (another series at the same round; None: the dense
    network, round 0 of the winning ticket) on `metric`. `gap` is the difference of the means; `verdict`
    is "above" when every trial of `series` is above every trial of the other, "below" when every one is
    below, else "within the spread": the only claim a few trials support without a model of the noise."""
    agg = aggregate(data).set_index(["series", "round"])
    mine = agg.loc[series]
    if versus is None:
        dense = agg.loc[("winning ticket", 0)]
        other = pd.DataFrame({c: dense[c] for c in (metric, f"{metric}_min", f"{metric}_max")}, index=mine.index)
        mine = mine.drop(index=0, errors="ignore")   # the dense network against itself
    else:
        other = agg.loc[versus]
    rounds = mine.index.intersection(other.index)
    mine, other = mine.loc[rounds], other.loc[rounds]
    verdict = pd.Series("within the spread", index=rounds)
    verdict[mine[f"{metric}_min"] > other[f"{metric}_max"]] = "above"
    verdict[mine[f"{metric}_max"] < other[f"{metric}_min"]] = "below"
    return pd.DataFrame({"round": rounds, "density": mine["density"].to_numpy(), series: mine[metric].to_numpy(),
                         versus or "dense": other[metric].to_numpy(), "gap": (mine[metric] - other[metric]).to_numpy(),
                         "verdict": verdict.to_numpy()})


def to_markdown(data: dict | pd.DataFrame) -> str:
    return table(data).to_markdown(index=False, floatfmt=".1f")


def to_html(data: dict | pd.DataFrame | None = None, shown: pd.DataFrame | None = None) -> str:
    """A summary's table (or any table already `shown`) as an HTML table for notebooks and the panel."""
    shown = table(data) if shown is None else shown
    return shown.to_html(index=False, classes="lth-table", border=0, escape=True, float_format="{:.1f}".format)


def to_csv(data: dict | pd.DataFrame) -> str:
    """The tidy table itself, every trial's row: what a reader loads into pandas or R."""
    df = _frame(data)
    if df["source"].eq("").all():
        df = df.drop(columns="source")
    return df.to_csv(index=False, float_format="%.6f")


def merge(*summaries: dict) -> dict:
    """One summary holding the runs of several (same preset and profile)."""
    return {**summaries[0], "runs": [run for s in summaries for run in s["runs"]]}


def save_summary(summary: dict, path: str | Path, compact: bool = False) -> None:
    """Indented JSON (diffs read well); `compact` for curve files, which nobody reads by eye."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(summary, separators=(",", ":")) if compact else json.dumps(summary, indent=1)
    path.write_text(text + "\n")


def load_summary(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
