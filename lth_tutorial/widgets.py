"""The notebooks' control panel: sliders for the pruning rates and rounds, strategy and control, a Run button.

Owns `LotteryPanel`. Run trains only what the run store lacks
(finished rounds redraw at once), shows a `tqdm.auto` bar while it trains, then redraws the density
figure and the table (`reports.to_html`). Everything it prints goes into its own Output widgets, so
executing a notebook leaves no stray stdout for nbval to trip on.
"""
from __future__ import annotations

import ipywidgets as w
import matplotlib.pyplot as plt
from IPython.display import display
from tqdm.auto import tqdm

from .lottery import RoundProgress
from .presets import current_profile, get_preset
from .reports import to_html
from .runner import run_grid
from .store import RunStore


class LotteryPanel:
    """Interactive IMP for one preset. `panel.box` is the widget; `panel.run()` is what Run does."""

    def __init__(self, preset: str, profile: str | None = None, *, rounds: int | None = None, trials: int = 1,
                 control: str = "reinit", store: RunStore | None = None, device: str = "cpu", splits=None,
                 paper_scale: dict | None = None):
        self.preset = get_preset(preset)
        self.profile = profile or current_profile()
        self.store = store or RunStore()
        self.device, self.splits, self.paper_scale, self.trials = device, splits, paper_scale, trials
        prof = self.preset.profile(self.profile)
        # the paper's per-round rates (LeNet fc 0.20, output 0.10), which is what `rates` means: the quick
        # profile then steps them once, as it does the preset's own (showing its 0.36 would step twice)
        self.rate_sliders = {
            kind: w.FloatSlider(value=rate, min=0.0, max=0.9, step=0.01, description=f"{kind} rate",
                                continuous_update=False, readout_format=".2f", style={"description_width": "80px"})
            for kind, rate in self.preset.paper.pruning.rates.items() if rate > 0}
        self.rounds = w.IntSlider(value=rounds if rounds is not None else prof.rounds, min=0, max=max(prof.rounds, 12),
                                  description="rounds", continuous_update=False, style={"description_width": "80px"})
        # late resetting to ~1% of training (Frankle et al. 2019 rewind to 0.1-7%); K must fit the profile's budget
        rewind = f"rewind:{max(1, prof.train.iterations // 100)}"
        self.strategy = w.Dropdown(options=["reset", "continue", rewind], value="reset", description="strategy")
        self.control = w.Dropdown(options=["none", "reinit", "random"], value=control, description="control")
        self.run_button = w.Button(description="Run", button_style="primary", icon="play")
        self.progress = w.Output()   # the tqdm bar of the round being trained
        self.status = w.Label(value="")
        self.figure_out = w.Output()
        self.table = w.HTML(value="")
        self.summary: dict | None = None
        self.figure: plt.Figure | None = None
        self.run_button.on_click(lambda _: self.run())
        controls = w.HBox([w.VBox(list(self.rate_sliders.values()) + [self.rounds]),
                           w.VBox([self.strategy, self.control, self.run_button])])
        self.box = w.VBox([w.HTML(f"<b>{self.preset.name}</b> ({self.profile} profile): {self.preset.reproduces}"),
                           controls, w.HBox([self.progress, self.status]), self.figure_out, self.table])

    def settings(self) -> dict:
        return {"rates": {k: round(s.value, 4) for k, s in self.rate_sliders.items()}, "rounds": self.rounds.value,
                "strategy": self.strategy.value, "control": self.control.value}

    def _progress(self) -> RoundProgress:
        """One tqdm bar in the panel's Output, reused by every round a Run trains (closed in `run`)."""
        progress = RoundProgress()

        def start(experiment, index, iterations):
            who = "ticket" if experiment.control == "none" else experiment.control
            self.status.value = f"training trial {experiment.trial}, {who}, round {index} ({iterations} iterations)"
            if progress.iterations is None:
                with self.progress:
                    progress.iterations = tqdm(total=iterations, desc=f"{who} r{index}", unit="it")
            else:
                progress.iterations.reset(total=iterations)
                progress.iterations.set_description(f"{who} r{index}", refresh=True)

        progress.start_round = start
        return progress

    def run(self) -> dict:
        """Bring the selected runs up to date (training only what is missing), then redraw."""
        s = self.settings()
        self.run_button.disabled = True
        progress = self._progress()
        try:
            self.summary = run_grid(self.preset.name, self.profile, rounds=s["rounds"], trials=self.trials,
                                    strategy=s["strategy"], controls=() if s["control"] == "none" else (s["control"],),
                                    rates=s["rates"], store=self.store, device=self.device,
                                    progress=progress, splits=self.splits)
            self.status.value = f"done: {len(self.summary['runs'])} run(s), rounds 0..{s['rounds']}"
        except Exception as e:  # shown in the panel: a widget callback's traceback would be lost
            self.status.value = f"error: {e}"
            raise
        finally:
            if progress.iterations is not None:
                progress.iterations.close()
            self.progress.clear_output()
            self.run_button.disabled = False
        self.redraw()
        return self.summary

    def redraw(self) -> None:
        from .plots import density_figure

        if self.summary is None:
            return
        rates = ", ".join(f"{k} {v:.2f}" for k, v in self.settings()["rates"].items())
        self.figure = density_figure({"": self.summary}, self.preset.name, self.paper_scale,
                                     title=f"{self.preset.name}: paper rates per round {rates}")
        with self.figure_out:
            self.figure_out.clear_output(wait=True)
            display(self.figure)
        plt.close(self.figure)  # shown once, in the panel: an open pyplot figure would be drawn again below the cell
        self.table.value = to_html(self.summary)

    def show(self) -> None:
        display(self.box)


__all__ = ["LotteryPanel"]
