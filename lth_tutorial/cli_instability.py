"""`lth instability`: instability analyses (linear mode connectivity) of stored tickets and controls.

Owns the subcommand's arguments and what it prints; `cli.parser()` registers it. Bad input raises
ValueError, which `cli.main` prints as one line.
"""
from __future__ import annotations

import argparse

from tqdm.auto import tqdm

from .cli import _ints, _values
from .lottery import CONTROLS, resolve_device
from .presets import PROFILES, current_profile, experiment, get_preset
from .reports import provenance, save_summary
from .store import RunStore


def add_parser(sub: argparse._SubParsersAction) -> None:
    inst = sub.add_parser("instability", help="train two copies of a ticket (or control) round with different "
                          "data orders and measure the error barrier between them (linear mode connectivity)")
    inst.add_argument("preset", help="a preset name (see `lth list`)")
    inst.add_argument("--profile", choices=PROFILES, help="quick, subset or paper; default $LTH_PROFILE or quick")
    inst.add_argument("--at", metavar="ROUNDS", help="rounds to analyse, comma-separated (default 0: the dense network)")
    inst.add_argument("--of", metavar="RUNS", help="ticket and/or controls (reinit, random, ...), comma-separated")
    inst.add_argument("--strategy", default="reset", help="reset (k = 0) or rewind:K (start at iteration K)")
    inst.add_argument("--trials", type=int, help="trials (default: the profile's)")
    inst.add_argument("--trial", type=int, action="append", metavar="N", help="only trial N (repeatable)")
    inst.add_argument("--points", type=int, default=30, help="evenly spaced points on the path (default 30, the paper's)")
    inst.add_argument("--device", default="auto", help="auto | cpu | cuda")
    inst.add_argument("--store", help="run store folder (default $LTH_RUNS_DIR or ./runs)")
    inst.add_argument("--json", help="write the analyses here")
    inst.set_defaults(func=cmd_instability)


def cmd_instability(args) -> None:
    """Instability analyses of each trial's ticket (and controls) at the rounds asked for, one by one."""
    from .instability import Instability, line, run_instability

    profile = args.profile or current_profile()
    prof = get_preset(args.preset).profile(profile)
    trials = prof.trials if args.trials is None else args.trials
    at = _ints(args.at, "--at") or (0,)
    of = tuple("none" if c == "ticket" else c for c in _values(args.of, "--of", ("ticket", *CONTROLS[1:])) or ("ticket",))
    analyses = [Instability(experiment(args.preset, profile, strategy=args.strategy, control=c, trial=t), r, args.points)
                for t in (args.trial or range(trials)) for r in at for c in of if r > 0 or c == "none"]
    device, store = resolve_device(args.device), RunStore(args.store)
    results = []
    for analysis in tqdm(analyses, desc="instability", unit="analysis"):
        results.append(run_instability(analysis, store, device))
        tqdm.write(f"{args.preset} ({profile}, {args.strategy}): {line(results[-1])}")
    if args.json:
        save_summary({"preset": args.preset, "profile": profile, "strategy": args.strategy, "instability": results,
                      "provenance": provenance(device)}, args.json)
        print(f"summary written to {args.json}")
