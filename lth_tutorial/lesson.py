"""One setup call for the numbered notebooks, and the few helpers every lesson uses.

Owns `setup(preset)` -> `Lesson`: the profile switch (`LTH_PROFILE`), the run store, the device, the
data splits (loaded once per data config), the preset's profile beside the paper's, and the committed
paper-scale results (`results/<preset>-paper.json`) when this checkout has them; `Lesson.grid`,
which runs a grid through `runner.run_grid` with all of that and a progress bar; `progress_bar`
(one `tqdm.auto` bar that the rounds a cell trains share); `show_table` (every table a notebook shows, as HTML rendered by
pandas); and the figure defaults that keep saved notebooks small (72 dpi, PNGs of 256 colours: `small_png`).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import HTML, display
from tqdm.auto import tqdm

from .data import DataConfig, Splits, load_splits
from .lottery import Experiment, RoundProgress, resolve_device
from .presets import Preset, Profile, current_profile, experiment, get_preset
from .reports import load_summary, to_html
from .runner import run_grid
from .store import RunStore

RESULTS = Path(__file__).resolve().parents[1] / "results"


def committed(name: str) -> Path | None:
    """A file under the repository's results/ (or ./results, ../results from a notebook folder)."""
    for folder in (RESULTS, Path("..") / "results", Path("results")):
        if (folder / name).exists():
            return folder / name
    return None


def progress_bar(label: str = "") -> RoundProgress:
    """One `tqdm.auto` bar (a widget in Jupyter, text elsewhere) that every round the cell trains reuses:
    a bar per round would leave dozens of dead widgets in the saved notebook. Rounds read from the
    store show none; `close(progress)` ends it."""
    progress = RoundProgress()

    def start(exp: Experiment, index: int, iterations: int) -> None:
        who = "ticket" if exp.control == "none" else exp.control
        desc = f"{label or exp.preset}: trial {exp.trial}, {who}, round {index}"
        if progress.iterations is None:
            progress.iterations = tqdm(total=iterations, desc=desc, unit="it")
        else:
            progress.iterations.reset(total=iterations)
            progress.iterations.set_description(desc, refresh=True)

    progress.start_round = start
    return progress


def close(progress: RoundProgress) -> None:
    if progress.iterations is not None:
        progress.iterations.close()


def show_table(data: dict | pd.DataFrame) -> None:
    """A summary's table (`reports.table`) or any DataFrame, as HTML rendered by pandas."""
    display(HTML(to_html(shown=data) if isinstance(data, pd.DataFrame) else to_html(data)))


@dataclass
class Lesson:
    preset: str
    profile: str
    prof: Profile                 # this profile's data, training, pruning rule, rounds and trials
    paper: Profile                # the paper's, to print beside it
    store: RunStore
    device: torch.device
    paper_scale: dict | None      # committed paper-profile runs, when the profile is not already paper
    paper_scale_path: Path | None
    _splits: dict[DataConfig, Splits] = field(default_factory=dict, repr=False)
    _bar: RoundProgress | None = field(default=None, repr=False)   # the running cell's bar, shared by its grids

    @property
    def spec(self) -> Preset:
        return get_preset(self.preset)

    def experiment(self, preset: str | None = None, **selections) -> Experiment:
        return experiment(preset or self.preset, self.profile, **selections)

    def splits(self, preset: str | None = None) -> Splits:
        """The data `preset` (default: the lesson's) trains on, loaded once per data config."""
        config = self.experiment(preset).data
        if config not in self._splits:
            self._splits[config] = load_splits(config, self.device)
        return self._splits[config]

    def grid(self, preset: str | None = None, *, rounds: int | None = None, trials: int | None = None,
             **selections) -> dict:
        """`runner.run_grid` for `preset` (default: the lesson's) with this lesson's store, device and
        splits, the profile's rounds and trials unless given, and a progress bar for what it trains."""
        preset = preset or self.preset
        prof = get_preset(preset).profile(self.profile)
        shell = _shell()
        if shell is None:    # a script: one bar per grid
            bar = progress_bar()
        elif self._bar is None:   # a notebook: one bar per cell, whatever the grids it runs (each is saved)
            bar = self._bar = progress_bar()
            shell.events.register("post_run_cell", self._close_bar)
        else:
            bar = self._bar
        try:
            return run_grid(preset, self.profile, rounds=prof.rounds if rounds is None else rounds,
                            trials=prof.trials if trials is None else trials, store=self.store, device=self.device,
                            splits=self.splits(preset), progress=bar, **selections)
        finally:
            if shell is None:
                close(bar)

    def _close_bar(self, *_) -> None:
        if self._bar is not None:
            close(self._bar)
        self._bar = None
        _shell().events.unregister("post_run_cell", self._close_bar)


def small_png(figure: plt.Figure) -> bytes:
    """A figure as a PNG of at most 256 colours: a third of the bytes of matplotlib's, the same look for
    line and bar charts, so that a notebook with eight figures and a panel stays small when saved."""
    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB").quantize(colors=256)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _shell():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def _use_small_pngs() -> None:
    """Show figures through `small_png` in IPython (after `%matplotlib inline`, which sets its own)."""
    shell = _shell()
    if shell is not None:
        shell.display_formatter.formatters["image/png"].for_type(plt.Figure, small_png)


def setup(preset: str, *, profile: str | None = None, device: str = "auto", load_data: bool = True) -> Lesson:
    """Everything a lesson on `preset` needs. The profile is the one switch, `LTH_PROFILE` (quick or
    paper); the store is `LTH_RUNS_DIR` (finished rounds are never trained twice); the device is a CUDA
    GPU when there is one."""
    profile = profile or current_profile()
    chosen = get_preset(preset)
    path = committed(f"{preset}-paper.json") if profile != "paper" else None
    lesson = Lesson(preset=chosen.name, profile=profile, prof=chosen.profile(profile), paper=chosen.paper,
                    store=RunStore(), device=resolve_device(device),
                    paper_scale=load_summary(path) if path else None, paper_scale_path=path)
    plt.rcParams.update({"figure.dpi": 72, "savefig.dpi": 72})   # inline PNGs: a few hundred KB per notebook at most
    _use_small_pngs()
    if load_data:
        lesson.splits()
    return lesson


__all__ = ["setup", "Lesson", "committed", "progress_bar", "close", "show_table", "small_png"]
