"""What a sweep runs: `Grid`, one grid of presets x profiles x methods x structures x strategies x trials
x controls, and `load_grids`, grids from a TOML file whose keys are `lth sweep`'s flags.

A grid expands into cells, one per summary (preset, profile, method, structure, strategy), each with the experiments
`runner.grid_experiments` lists and the instability analyses asked for (rounds x ticket/controls), all
validated before anything starts or trains.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .lottery import CONTROLS
from .presets import current_profile, get_preset
from .runner import grid_experiments


@dataclass(frozen=True)
class Grid:
    """One grid: every preset x profile x strategy, each with its trials and controls."""

    presets: tuple[str, ...]
    profiles: tuple[str, ...] = ()        # default: $LTH_PROFILE or quick
    strategies: tuple[str, ...] = ("reset",)
    controls: tuple[str, ...] = ()
    trials: int | None = None             # default: each profile's
    rounds: int | None = None             # default: each profile's
    oneshot: tuple[float, ...] = ()       # one-shot densities instead of the strategies
    rates: dict[str, float] = field(default_factory=dict)
    scope: str | None = None
    train: dict[str, Any] = field(default_factory=dict)   # iterations, lr, eval_every, batch_size
    only_trials: tuple[int, ...] = ()
    methods: tuple[str, ...] = ("magnitude",)   # magnitude after training, or methods at initialization
    control_rounds: tuple[int, ...] = ()  # train the controls at these rounds only (default: every round)
    structures: tuple[str, ...] = ("weights",)   # single weights and/or whole units (neurons, filters)
    instability: tuple[int, ...] = ()     # rounds whose instability is analysed (`instability`), of:
    instability_of: tuple[str, ...] = ("ticket",)   # the ticket and/or controls (their start and mask)

    def cells(self) -> list[dict[str, Any]]:
        """One `run_grid`-style description per summary, each validated before anything trains."""
        out = []
        for preset in self.presets:
            for profile in self.profiles or (current_profile(),):
                prof = get_preset(preset).profile(profile)
                rounds = len(self.oneshot) if self.oneshot else (prof.rounds if self.rounds is None else self.rounds)
                trials = prof.trials if self.trials is None else self.trials
                if rounds < 0:
                    raise ValueError(f"--rounds must be >= 0; got {rounds}.")
                if trials < 1:
                    raise ValueError(f"--trials must be >= 1; got {trials}.")
                if any(not 0 <= r <= rounds for r in self.instability):
                    raise ValueError(f"instability rounds must be in 0..{rounds} (the grid's rounds); "
                                     f"got {list(self.instability)}.")
                of = tuple("none" if c == "ticket" else c for c in self.instability_of)
                unknown = [c for c in of if c not in CONTROLS]
                if unknown:
                    raise ValueError(f"instability_of takes ticket or a control ({', '.join(CONTROLS[1:])}); "
                                     f"got {', '.join(unknown)}.")
                for method, structure in ((m, s) for m in self.methods for s in self.structures):
                    for strategy in ("reset",) if self.oneshot else self.strategies:
                        cell = dict(preset=preset, profile=profile, trials=trials, strategy=strategy,
                                    controls=tuple(self.controls), oneshot=tuple(self.oneshot),
                                    rates=dict(self.rates), scope=self.scope, train=dict(self.train),
                                    only_trials=tuple(self.only_trials), method=method,
                                    control_rounds=tuple(self.control_rounds), structure=structure)
                        out.append({**cell, "rounds": rounds, "experiments": grid_experiments(**cell),
                                    "instability": tuple(self.instability), "instability_of": of})
        return out


_LISTS = {"presets", "profiles", "strategies", "controls", "oneshot", "only_trials", "methods", "control_rounds",
          "instability", "instability_of", "structures"}


def load_grids(path: str | Path) -> list[Grid]:
    """Grids from a TOML file: top-level keys are `Grid` fields (defaults for every grid); each
    `[[grid]]` table is one grid that overrides them. Without `[[grid]]`, the file is one grid."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"sweep file {path} does not exist.") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"sweep file {path} is not valid TOML: {e}.") from None
    tables = data.pop("grid", [{}])
    known = {f.name for f in fields(Grid)}
    grids = []
    for table in tables:
        merged = {**data, **table}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ValueError(f"sweep file {path}: unknown key(s) {', '.join(unknown)}; use {', '.join(sorted(known))}.")
        if "presets" not in merged:
            raise ValueError(f"sweep file {path}: every grid needs presets = [...].")
        grids.append(Grid(**{k: tuple(v) if k in _LISTS else v for k, v in merged.items()}))
    return grids
