"""`lth export`: a finished round of a stored run as files plain PyTorch can load (see `export`).

Owns the subcommand's arguments and what it prints; `cli.parser()` registers it. Bad input raises
ValueError (`cli.UsageError`, `export.ExportError`), which `cli.main` prints as one line.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .cli import UsageError, _oneshot, _rates
from .lottery import CONTROLS, METHODS, STRUCTURES, resolve_device
from .presets import TRAIN_OVERRIDES, current_profile, experiment
from .store import RunStore


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a finished round (weights, masks, metadata) as safetensors and a "
                       "torch.export program that plain PyTorch loads")
    p.add_argument("preset", help="a preset name (see `lth list`)")
    p.add_argument("--round", type=int, required=True, metavar="K", help="the round to export (0 = dense)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write into (created)")
    p.add_argument("--format", default="all", help="safetensors (ticket.safetensors), prune (model.pt2 and "
                   "prune_state_dict.pt: torch.nn.utils.prune's weight_orig / weight_mask), compact (a structured ticket as a "
                   "smaller dense network: compact.pt2, compact.safetensors) or all (default; compact when structured)")
    p.add_argument("--profile", help="quick, subset or paper; default $LTH_PROFILE or quick")
    p.add_argument("--strategy", default="reset", help="reset | continue | rewind:K (default reset)")
    p.add_argument("--control", default="none", help=f"a control's round instead of the ticket's ({', '.join(CONTROLS[1:])})")
    p.add_argument("--trial", type=int, default=0, metavar="N", help="which trial (default 0)")
    p.add_argument("--method", default="magnitude", help=f"how the run pruned ({', '.join(METHODS)})")
    p.add_argument("--structure", default="weights", help=f"what the run pruned ({', '.join(STRUCTURES)}; default weights)")
    p.add_argument("--oneshot", metavar="DENSITY", help="the run's one-shot densities, as given to `lth run`")
    p.add_argument("--rate", action="append", metavar="KIND=RATE", help="the run's rate overrides, as for `lth run`")
    p.add_argument("--scope", choices=("layerwise", "global"), help="the run's pruning scope override")
    for name, kind in (("--iterations", int), ("--lr", float), ("--eval-every", int), ("--batch-size", int),
                       ("--precision", str)):
        p.add_argument(name, type=kind, help="the run's training override, as given to `lth run`")
    p.add_argument("--threads", type=int, help="CPU threads the run was made with (part of its key; default: "
                   "this process's, as `lth run` uses; a sweep's tasks use --cpus-per-task, 1 by default)")
    p.add_argument("--device", default="auto", help="the device the run was made on: auto | cpu | cuda")
    p.add_argument("--store", help="run store folder (default $LTH_RUNS_DIR or ./runs)")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> None:
    from .export import FORMATS, export_round, find_round

    if args.format not in FORMATS:   # checked first: a typo costs nothing
        raise UsageError(f"unknown --format {args.format!r}; use one of {', '.join(FORMATS)}.")
    if args.round < 0:
        raise UsageError(f"--round must be >= 0; got {args.round}.")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1; got {args.threads}.")
    profile = args.profile or current_profile()
    train = {k: getattr(args, k) for k in TRAIN_OVERRIDES if getattr(args, k) is not None}
    chosen = experiment(args.preset, profile, strategy=args.strategy, control=args.control, trial=args.trial,
                        method=args.method, oneshot=_oneshot(args.oneshot), rates=_rates(args.rate),
                        scope=args.scope, train=train, structure=args.structure)
    stored = find_round(chosen, args.round, RunStore(args.store), resolve_device(args.device), args.threads)
    paths = export_round(stored, Path(args.out), args.format)
    m = stored.metrics
    print(f"{chosen.preset} ({profile} profile) trial {chosen.trial} round {args.round}: density {m['density']:.2%}, "
          f"final test accuracy {m['final_test_accuracy']:.4f} (the exported weights, at the end of training)")
    for path in paths:
        print(path)
