"""The `lth` command: list presets, print model sizes, run experiments headless, report figures.

Owns argument parsing, progress bars and per-round tables on the terminal, and turning every bad
input into one clear line on stderr with a non-zero exit (never a traceback).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm.auto import tqdm

from .data import DataError
from .lottery import CONTROLS, METHODS, STRUCTURES, RoundProgress, check_strategy, resolve_device
from .masks import PruningRule
from .models import MODELS, UnknownModelError, count_weights, create_model, weight_kinds
from .presets import PRESETS, PROFILES, TRAIN_OVERRIDES, current_profile, experiment, get_preset
from .reports import load_summary, provenance, round_line, save_summary, to_csv, to_markdown
from .runner import run_grid, without_curves
from .store import RunStore, StoreError, key_hash


class UsageError(ValueError):
    pass


def _rates(values: list[str]) -> dict[str, float]:
    rates = {}
    for item in values or []:
        kind, _, text = item.partition("=")
        try:
            rates[kind] = float(text)
        except ValueError:
            raise UsageError(f"--rate takes KIND=RATE (e.g. fc=0.2); got {item!r}.") from None
    PruningRule(rates)  # validates kinds and [0, 1)
    return rates


def _oneshot(text: str | None) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--oneshot takes densities like 0.2 or 0.5,0.2,0.07; got {text!r}.") from None


def cmd_list(args) -> None:
    width = max(len(n) for n in PRESETS)
    for preset in PRESETS.values():
        q, sub = preset.quick, preset.subset
        subset = f"; subset: {sub.train.iterations} it/round, {sub.rounds} rounds" if sub else ""
        print(f"{preset.name:<{width}}  {preset.reproduces}  [quick: {q.train.iterations} it/round, "
              f"{q.rounds} rounds, {q.trials} trials{subset}]")


def cmd_models(args) -> None:
    print(f"{'model':<10} {'name':<60} {'weights':>12} {'pruned by the paper':>20}")
    for name, (_, _, description) in MODELS.items():
        model = create_model(name, seed=0)
        preset = next(p for p in PRESETS.values() if p.model == name)
        kinds = weight_kinds(model)
        prunable = tuple({kinds[n] for n in preset.paper.pruning.prunable(kinds)})
        print(f"{name:<10} {description:<60} {count_weights(model):>12,} {count_weights(model, prunable):>20,}")
    print("Weights: conv and linear weights only (no biases, no batch norm). Conv-6 as the paper describes "
          "it has 2,261,184 weights, not the 1.7M its Figure 2 states.")


def _round_printer(bar_holder: dict):
    def start(experiment, index, iterations):
        if bar_holder.get("bar"):
            bar_holder["bar"].close()
        desc = f"trial {experiment.trial} {experiment.control if experiment.control != 'none' else 'ticket'} round {index}"
        bar_holder["bar"] = tqdm(total=iterations, desc=desc, leave=False, unit="it", file=sys.stderr)
        progress.iterations = bar_holder["bar"]

    def end(experiment, m):
        bar_holder["bar"].close()
        bar_holder["bar"] = None
        who = "ticket" if experiment.control == "none" else experiment.control
        tqdm.write(round_line(experiment.trial, who, m))

    progress = RoundProgress(start_round=start, end_round=end)
    return progress


def _grid(args, progress=None):
    preset = get_preset(args.preset)
    profile = args.profile or current_profile()
    prof = preset.profile(profile)
    rounds = prof.rounds if args.rounds is None else args.rounds
    if rounds < 0:
        raise UsageError(f"--rounds must be >= 0; got {rounds}.")
    trials = prof.trials if args.trials is None else args.trials
    if trials < 1:
        raise UsageError(f"--trials must be >= 1; got {trials}.")
    check_strategy(args.strategy)
    oneshot = _oneshot(args.oneshot)
    rates = _rates(args.rate)
    train = {k: getattr(args, k) for k in TRAIN_OVERRIDES if getattr(args, k) is not None}
    # the whole selection checked here, before any data is loaded or anything is printed or trained
    experiment(preset.name, profile, strategy=args.strategy, oneshot=oneshot, rates=rates, scope=args.scope,
               train=train, method=args.method, control=args.control, structure=args.structure)
    controls = () if args.control == "none" else (args.control,)
    return dict(preset=preset.name, profile=profile, rounds=len(oneshot) if oneshot else rounds, trials=trials,
                strategy=args.strategy, controls=controls, oneshot=oneshot, rates=rates,
                scope=args.scope, train=train, store=RunStore(args.store), device=resolve_device(args.device), progress=progress,
                only_trials=tuple(args.trial or ()), method=args.method, structure=args.structure)


def _ints(text: str | None, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in (text or "").split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{option} takes round numbers like 0,3,10; got {text!r}.") from None


def cmd_run(args) -> None:
    holder: dict = {}
    progress = _round_printer(holder)
    grid = _grid(args, progress)
    grid["curve_points"] = 50 if args.curves else 0
    which = f" (only {', '.join(map(str, grid['only_trials']))})" if grid["only_trials"] else ""
    chosen = experiment(grid["preset"], grid["profile"], rates=grid["rates"], scope=grid["scope"], train=grid["train"])
    rule, config = chosen.pruning, chosen.train
    units = ", of whole units" if grid["structure"] == "units" else ""
    pruning = ", ".join(f"{kind} {rate:.4g}" for kind, rate in rule.rates.items()
                        if rate > 0 and not (units and kind == "output"))   # the classes are never removed
    print(f"{grid['preset']} ({grid['profile']} profile) on {grid['device']}: {grid['trials']} trial(s){which}, "
          f"rounds 0..{grid['rounds']}, strategy {grid['strategy']}, pruning {pruning} per round ({rule.scope}{units}), "
          f"{config.iterations:,} iterations at lr {config.lr:g}, batch {config.batch_size}, "
          f"evaluated every {config.eval_every}" + (", in bf16" if config.precision == "bf16" else "")
          + (f", controls {', '.join(grid['controls'])}" if grid["controls"] else "") + f"; store {grid['store'].root}")
    try:
        summary = run_grid(**grid)
    finally:  # an error below is then one clean line, not appended to a half-drawn bar
        if holder.get("bar"):
            holder["bar"].close()
    print("\n" + to_markdown(summary))
    if args.curves:
        save_summary({**summary, "provenance": provenance(grid["device"])}, args.curves, compact=True)
        print(f"curves written to {args.curves}")
    if args.json:
        save_summary({**without_curves(summary), "provenance": provenance(grid["device"])}, args.json)
        print(f"summary written to {args.json}")


def _values(text: str | None, option: str, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    values = tuple(v.strip() for v in (text or "").split(",") if v.strip())
    for v in values:
        if allowed is not None and v not in allowed:
            raise UsageError(f"{option} takes {', '.join(allowed[:-1])} or {allowed[-1]} (comma-separated); got {v!r}.")
    return values


def _sweep_grids(args):
    from .sweep import Grid, load_grids

    if args.config:
        if args.presets:
            raise UsageError("give presets on the command line or in --config, not both.")
        return load_grids(args.config)
    if not args.presets:
        raise UsageError("name at least one preset (see `lth list`), or give a grid file with --config.")
    for name in args.presets:
        get_preset(name)
    controls = tuple(c for c in _values(args.control, "--control", CONTROLS) if c != "none")
    train = {k: getattr(args, k) for k in TRAIN_OVERRIDES if getattr(args, k) is not None}
    return [Grid(tuple(args.presets), _values(args.profile, "--profile", PROFILES),
                 _values(args.strategy, "--strategy") or ("reset",), controls, args.trials, args.rounds,
                 _oneshot(args.oneshot), _rates(args.rate), args.scope, train, tuple(args.trial or ()),
                 _values(args.method, "--method", METHODS) or ("magnitude",),
                 control_rounds=_ints(args.control_rounds, "--control-rounds"),
                 structures=_values(args.structure, "--structure", STRUCTURES) or ("weights",),
                 instability=_ints(args.instability, "--instability"),
                 instability_of=_values(args.instability_of, "--instability-of") or ("ticket",))]


def _outputs(path: str, summaries: list[dict], suffix: str) -> list[Path]:
    """One file for one summary; a folder of `<preset>-<profile>-<strategy>[-curves].json` for several."""
    if len(summaries) == 1 and path.endswith(".json"):
        return [Path(path)]
    if path.endswith(".json"):
        raise UsageError(f"the sweep made {len(summaries)} summaries; give a folder, not {path}.")
    names = [f"{s['preset']}-{s['profile']}-{s['runs'][0].get('method') or s['runs'][0]['strategy'].replace(':', '')}"
             + ("-units" if s["runs"][0].get("structure") else "") for s in summaries]
    # grids that differ only in training or rates: the name alone would collide, the config's hash does not
    names = [n if names.count(n) == 1 else f"{n}-{key_hash(s['config'])[:6]}" for n, s in zip(names, summaries)]
    return [Path(path) / f"{name}{suffix}.json" for name in names]


def cmd_sweep(args) -> int:
    from .sweep import RayMissing, run_sweep

    grids = _sweep_grids(args)
    try:
        result = run_sweep(grids, store=RunStore(args.store), address=args.address, num_cpus=args.num_cpus,
                           cpus_per_task=args.cpus_per_task, gpus_per_task=args.gpus_per_task,
                           curve_points=50 if args.curves else 0)
    except RayMissing as e:
        raise UsageError(str(e)) from None
    except ConnectionError as e:
        raise UsageError(f"cannot reach the Ray cluster at {args.address} ({e}); start one with "
                         f"`ray start --head` and pass the address it prints.") from None
    print(f"\nsweep: {result.trained} round(s) trained, {result.found} found in the store, on "
          f"{len(result.nodes)} node(s); store {RunStore(args.store).root}")
    for summary in result.summaries:
        units = ", units" if summary["runs"][0].get("structure") else ""
        print(f"\n{summary['preset']} ({summary['profile']} profile, {summary['runs'][0]['strategy']}{units})\n"
              + to_markdown(summary))
    made = {**result.provenance, "sweep": {"cpus_per_task": args.cpus_per_task, "gpus_per_task": args.gpus_per_task,
                                          "nodes": len(result.nodes)}}
    for option, suffix, compact in (("curves", "-curves", True), ("json", "", False)):
        if getattr(args, option) and result.summaries:
            for path, summary in zip(_outputs(getattr(args, option), result.summaries, suffix), result.summaries):
                save_summary({**(summary if compact else without_curves(summary)), "provenance": made}, path, compact)
                print(f"{'curves' if compact else 'summary'} written to {path}")
    for failure in result.failures:
        print(f"lth: {failure}", file=sys.stderr)
    if result.failures:
        print(f"lth: {len(result.failures)} chain(s) failed ({result.skipped} later round(s) not run); the rest "
              f"of the grid finished and is in the store.", file=sys.stderr)
    return 1 if result.failures else 0


def cmd_report(args) -> None:
    from .plots import report_figures  # matplotlib only when drawing

    # files first: a wrong one is reported before anything is trained
    paper_scale = _summary_file(args.paper_scale, "--paper-scale", args.preset) if args.paper_scale else None
    if args.from_json:
        summary = _summary_file(args.from_json, "--from-json", args.preset, args.profile)
    else:
        summary = run_grid(**_grid(args, _round_printer({})))
    out = Path(args.out)
    paths = report_figures(summary, out, paper_scale)
    name = f"{summary['preset']}-{summary['profile']}"
    (out / f"{name}.csv").write_text(to_csv(summary))
    (out / f"{name}.md").write_text(to_markdown(summary) + "\n")
    for p in [*paths, out / f"{name}.csv", out / f"{name}.md"]:
        print(p)


def _summary_file(path: str, option: str, preset: str, profile: str | None = None) -> dict:
    """A summary JSON, refused unless it holds `preset` (and `profile`): the positional preset would
    otherwise be ignored and the file's own drawn under the other's name."""
    try:
        summary = load_summary(path)
        held = summary["preset"], summary["profile"], summary["runs"]
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{option} {path} is not a summary written by `lth run --json` or --curves.") from None
    if held[0] != preset:
        raise UsageError(f"{option} {path} holds {held[0]} runs, not {preset}; name the file's preset "
                         f"(`lth report {held[0]} {option} {path}`) or give a file of {preset}.")
    if profile is not None and held[1] != profile:
        raise UsageError(f"{option} {path} holds the {held[1]} profile, not {profile}; drop --profile or give a "
                         f"file of the {profile} profile.")
    return summary


def _selectors(p: argparse.ArgumentParser) -> None:
    p.add_argument("preset", help="a preset name (see `lth list`)")
    p.add_argument("--profile", choices=PROFILES, help="quick (CPU, minutes), subset (CIFAR-10: converged on the subset held here) or paper; "
                   "default $LTH_PROFILE or quick")
    p.add_argument("--rounds", type=int, help="pruning rounds after the dense round 0 (default: the profile's)")
    p.add_argument("--trials", type=int, help="trials with different seeds (default: the profile's)")
    p.add_argument("--trial", type=int, action="append", metavar="N",
                   help="run only trial N of --trials (repeatable): split trials across processes or machines; "
                        "the same store then holds them all")
    p.add_argument("--strategy", default="reset", help="reset | continue | rewind:K (default reset)")
    p.add_argument("--control", default="none", choices=CONTROLS,
                   help="also run a control on each ticket's masks (shuffle and invert: the ablations of "
                        "pruning at initialization, with --method)")
    p.add_argument("--method", default="magnitude", choices=METHODS,
                   help="what scores the weights: magnitude after training (IMP, default), or a method at "
                        "initialization, pruning straight to each --oneshot density")
    p.add_argument("--oneshot", metavar="DENSITY", help="prune once, straight to DENSITY (or a comma list)")
    p.add_argument("--structure", default="weights", choices=STRUCTURES,
                   help="what a round removes: single weights (default) or whole units, LeNet's neurons and the "
                        "Conv nets' filters by L1 norm, at the fc and conv rates (output units stay)")
    p.add_argument("--rate", action="append", metavar="KIND=RATE",
                   help="override a layer kind's pruning rate: the paper's rate per round (conv, fc, output, "
                        "shortcut; the model's kinds only); the quick profile prunes 1-(1-RATE)^2 per round, "
                        "as for the preset's own rates; fc alone keeps output at half of it (LeNet, Conv)")
    p.add_argument("--scope", choices=("layerwise", "global"), help="override the pruning scope")
    p.add_argument("--iterations", type=int, help="training iterations per round (default: the profile's); "
                   "warmup, lr milestones and report points scale with it")
    p.add_argument("--lr", type=float, help="learning rate (default: the profile's)")
    p.add_argument("--eval-every", type=int, help="evaluate validation and test every N iterations")
    p.add_argument("--batch-size", type=int, help="minibatch size (default: the profile's)")
    p.add_argument("--precision", help="fp32 (default, the paper's) or bf16: autocast over fp32 weights, "
                   "channels-last on the conv nets; part of the run's key when bf16")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--store", help="run store folder (default $LTH_RUNS_DIR or ./runs)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="lth", description="The Lottery Ticket Hypothesis, reproduced.")
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="presets and what each reproduces").set_defaults(func=cmd_list)
    sub.add_parser("models", help="the six models and their weight counts").set_defaults(func=cmd_models)
    run = sub.add_parser("run", help="run IMP (and controls) for a preset; finished rounds are reused")
    _selectors(run)
    run.add_argument("--json", help="write the summary JSON here")
    run.add_argument("--curves", metavar="JSON", help="also write every round's training curves (thinned to "
                     "about 50 evaluations: iteration, validation loss, test accuracy) here")
    run.set_defaults(func=cmd_run)
    report = sub.add_parser("report", help="figures (PNG) and tables (CSV, markdown) for a preset")
    _selectors(report)
    report.add_argument("--out", default="reports", help="output folder (default ./reports)")
    report.add_argument("--from-json", help="draw a summary written by `lth run --json` instead of the store")
    report.add_argument("--paper-scale", help="a paper-profile summary JSON to draw beside")
    report.set_defaults(func=cmd_report)
    sweep = sub.add_parser("sweep", help="run a grid (presets x profiles x strategies x trials x controls) as "
                           "a Ray task graph, on this machine or a cluster")
    sweep.add_argument("presets", nargs="*", help="preset names (see `lth list`)")
    sweep.add_argument("--config", metavar="TOML", help="the grid(s) as a TOML file instead of these flags "
                       "(keys as the flags, lists for several values; [[grid]] tables for several grids)")
    sweep.add_argument("--profile", help="quick, subset, paper, or several comma-separated (default $LTH_PROFILE or quick)")
    sweep.add_argument("--rounds", type=int, help="pruning rounds after round 0 (default: each profile's)")
    sweep.add_argument("--trials", type=int, help="trials with different seeds (default: each profile's)")
    sweep.add_argument("--trial", type=int, action="append", metavar="N", help="only trial N of --trials (repeatable)")
    sweep.add_argument("--strategy", help="reset | continue | rewind:K, comma-separated (default reset)")
    sweep.add_argument("--control", help="reinit, random, or both comma-separated")
    sweep.add_argument("--control-rounds", metavar="ROUNDS", help="train the controls at these rounds only (comma list)")
    sweep.add_argument("--instability", metavar="ROUNDS", help="also analyse the instability of these rounds "
                       "(comma list; 0 = the dense network at the strategy's k)")
    sweep.add_argument("--instability-of", metavar="RUNS", help="ticket and/or controls to analyse (default ticket)")
    sweep.add_argument("--oneshot", metavar="DENSITY", help="prune once, straight to each DENSITY (comma list)")
    sweep.add_argument("--method", help="magnitude (IMP, default) and/or methods at initialization, comma-separated")
    sweep.add_argument("--structure", help="weights (default) and/or units (neurons, filters), comma-separated")
    sweep.add_argument("--rate", action="append", metavar="KIND=RATE", help="as for `lth run`")
    sweep.add_argument("--scope", choices=("layerwise", "global"), help="override the pruning scope")
    for name, kind, text in (("--iterations", int, "training iterations per round"), ("--lr", float, "learning rate"),
                             ("--eval-every", int, "evaluate every N iterations"), ("--batch-size", int, "minibatch size"),
                             ("--precision", str, "fp32 (default) or bf16")):
        sweep.add_argument(name, type=kind, help=f"{text} (as for `lth run`)")
    sweep.add_argument("--address", help="join a running Ray cluster (`ray start --head` prints it); "
                       "default: start Ray on this machine")
    sweep.add_argument("--num-cpus", type=int, help="CPUs a local Ray may use (default: all)")
    sweep.add_argument("--cpus-per-task", type=int, default=1,
                       help="Ray CPUs and torch threads of each task (default 1; part of each run's key)")
    sweep.add_argument("--gpus-per-task", type=float, default=0.0,
                       help="GPUs per task; > 0 trains on CUDA, 0.25 packs four tasks on one GPU (default 0)")
    sweep.add_argument("--store", help="run store folder (default $LTH_RUNS_DIR or ./runs)")
    sweep.add_argument("--json", help="write the summary here (a folder when the sweep makes several)")
    sweep.add_argument("--curves", metavar="JSON", help="also write the curves (a folder when several)")
    sweep.set_defaults(func=cmd_sweep)
    from .cli_instability import add_parser as add_instability_parser  # lth instability: its own module
    add_instability_parser(sub)
    from .cli_export import add_parser as add_export_parser  # lth export lives in its own module
    add_export_parser(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code = args.func(args)
    except (UsageError, ValueError, DataError, StoreError, UnknownModelError, FileNotFoundError,
            FloatingPointError) as e:
        print(f"lth: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lth: interrupted; finished rounds are kept in the store and the next run resumes.", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
