"""The notebooks' control panel: sliders for the pruning rates and rounds, strategy and control, a Run button.

Owns `LotteryPanel`. With `methods=True` (notebook 06) it also has a method menu (IMP, or a method at
initialization, or early-bird) and a density slider: a method other than IMP prunes straight to that
density, and the control menu offers the "missing the mark" ablations where they are defined. With
`sign_controls=True` (notebook 07) IMP's control menu adds Zhou et al.'s sign controls; with
`structures=True` (notebook 08) a structure menu prunes single weights or whole neurons/filters.
Run trains only what the run store lacks
(finished rounds redraw at once), shows a `tqdm.auto` bar while it trains, then redraws the density
figure and the table (`reports.to_html`). Everything it prints goes into its own Output widgets, so
executing a notebook leaves no stray stdout for nbval to trip on.
"""
from __future__ import annotations

import ipywidgets as w
import matplotlib.pyplot as plt
from IPython.display import display
from tqdm.auto import tqdm

from .lottery import AT_INIT, SIGN_CONTROLS, RoundProgress
from .presets import current_profile, get_preset
from .reports import to_html
from .runner import run_grid
from .store import RunStore


METHOD_NAMES = {"magnitude": "IMP (magnitude after training)", "magnitude-init": "magnitude at init",
                "random": "random at init", "snip": "SNIP", "grasp": "GraSP", "synflow": "SynFlow",
                "early-bird": "early-bird"}


class LotteryPanel:
    """Interactive IMP for one preset. `panel.box` is the widget; `panel.run()` is what Run does."""

    def __init__(self, preset: str, profile: str | None = None, *, rounds: int | None = None, trials: int = 1,
                 control: str = "reinit", store: RunStore | None = None, device: str = "cpu", splits=None,
                 paper_scale: dict | None = None, methods: bool = False, method: str = "magnitude",
                 density: float = 0.036, sign_controls: bool = False, structures: bool = False,
                 structure: str = "weights"):
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
        self.control = w.Dropdown(options=["none", "reinit", "random"], value="none", description="control")
        self.methods, self.sign_controls, self.structures = methods, sign_controls, structures
        self.structure = w.Dropdown(options=[("single weights", "weights"), ("whole neurons/filters", "units")],
                                    value=structure, description="structure")
        self.method = w.Dropdown(options=[(METHOD_NAMES[m], m) for m in METHOD_NAMES], value="magnitude",
                                 description="method")
        # one-shot target Pm, on a log scale as the figures' x axis: 1% to 89% of the weights
        self.density = w.FloatLogSlider(value=density, base=10, min=-2, max=-0.05, step=0.01, description="density",
                                        continuous_update=False, readout_format=".3f",
                                        style={"description_width": "80px"})
        self.method.value = method
        self._method_changed()
        self.control.value = control
        self.method.observe(lambda _: self._method_changed(), names="value")
        self.run_button = w.Button(description="Run", button_style="primary", icon="play")
        self.progress = w.Output()   # the tqdm bar of the round being trained
        self.status = w.Label(value="")
        self.figure_out = w.Output()
        self.table = w.HTML(value="")
        self.summary: dict | None = None
        self.figure: plt.Figure | None = None
        self.run_button.on_click(lambda _: self.run())
        left = list(self.rate_sliders.values()) + [self.rounds] + ([self.density] if methods else [])
        right = (([self.method] if methods else []) + ([self.structure] if structures else [])
                 + [self.strategy, self.control, self.run_button])
        controls = w.HBox([w.VBox(left), w.VBox(right)])
        self.box = w.VBox([w.HTML(f"<b>{self.preset.name}</b> ({self.profile} profile): {self.preset.reproduces}"),
                           controls, w.HBox([self.progress, self.status]), self.figure_out, self.table])

    def _method_changed(self) -> None:
        """IMP uses the rates, rounds and strategy; any other method one density (and, at initialization,
        offers the shuffle and invert ablations). The sign controls, when offered, are IMP's."""
        imp = self.method.value == "magnitude"
        options = (["none", "reinit", "random"] + (list(SIGN_CONTROLS) if imp and self.sign_controls else [])
                   + (["shuffle", "invert"] if self.method.value in AT_INIT else []))
        keep = self.control.value if self.control.value in options else "none"
        self.control.options = options
        self.control.value = keep
        for slider in (*self.rate_sliders.values(), self.rounds, self.strategy):
            slider.disabled = not imp
        self.density.disabled = imp

    def settings(self) -> dict:
        chosen = {"rates": {k: round(s.value, 4) for k, s in self.rate_sliders.items()}, "rounds": self.rounds.value,
                  "strategy": self.strategy.value, "control": self.control.value}
        if self.methods:
            chosen |= {"method": self.method.value, "density": self.density.value}
        if self.structures:
            chosen["structure"] = self.structure.value
        return chosen

    def _grid(self, s: dict) -> dict:
        """What `run_grid` is asked for: IMP's rounds, or one density pruned straight to by the method."""
        if s.get("method", "magnitude") == "magnitude":
            return {"rounds": s["rounds"], "strategy": s["strategy"],
                    **({"structure": s["structure"]} if s.get("structure", "weights") != "weights" else {})}
        return {"rounds": 1, "oneshot": (s["density"],), "method": s["method"]}

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
            grid = self._grid(s)
            self.summary = run_grid(self.preset.name, self.profile, trials=self.trials,
                                    controls=() if s["control"] == "none" else (s["control"],),
                                    rates=s["rates"], store=self.store, device=self.device,
                                    progress=progress, splits=self.splits, **grid)
            self.status.value = f"done: {len(self.summary['runs'])} run(s), rounds 0..{grid['rounds']}"
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
        s = self.settings()
        rates = ", ".join(f"{k} {v:.2f}" for k, v in s["rates"].items())
        title = (f"{self.preset.name}: paper rates per round {rates}" if s.get("method", "magnitude") == "magnitude"
                 else f"{self.preset.name}: {METHOD_NAMES[s['method']]} straight to Pm {s['density']:.1%}")
        if s.get("structure") == "units":
            title += ", whole neurons/filters"
        self.figure = density_figure({"": self.summary}, self.preset.name, self.paper_scale, title=title)
        with self.figure_out:
            self.figure_out.clear_output(wait=True)
            display(self.figure)
        plt.close(self.figure)  # shown once, in the panel: an open pyplot figure would be drawn again below the cell
        self.table.value = to_html(self.summary)

    def show(self) -> None:
        display(self.box)


__all__ = ["LotteryPanel", "METHOD_NAMES"]
