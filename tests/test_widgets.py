"""The notebooks' panel: its rate sliders are the paper's per-round rates, stepped once by the profile."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

import lth_tutorial.widgets as widgets  # noqa: E402
from lth_tutorial.presets import experiment, get_preset  # noqa: E402
from lth_tutorial.store import RunStore  # noqa: E402


@pytest.fixture
def grids(monkeypatch):
    """Record what Run asks run_grid for, without training."""
    calls = []

    def fake_run_grid(preset, profile, **kwargs):
        calls.append({"preset": preset, "profile": profile, **kwargs})
        return {"preset": preset, "profile": profile, "runs": []}

    monkeypatch.setattr(widgets, "run_grid", fake_run_grid)
    monkeypatch.setattr(widgets.LotteryPanel, "redraw", lambda self: None)
    return calls


@pytest.mark.parametrize("preset, shown", [
    ("lenet-mnist", {"fc": 0.2, "output": 0.1}),
    ("conv6-cifar10", {"conv": 0.15, "fc": 0.2, "output": 0.1}),
    ("resnet18-cifar10", {"conv": 0.2}),
])
def test_sliders_show_and_pass_the_papers_rates(grids, tmp_path, preset, shown):
    for profile in ("quick", "paper"):
        panel = widgets.LotteryPanel(preset, profile, store=RunStore(tmp_path))
        assert {k: s.value for k, s in panel.rate_sliders.items()} == shown
        panel.run()
        rates = grids[-1]["rates"]
        assert rates == shown
        # untouched sliders run exactly the profile's own rule (quick: 1 - (1 - p)^2 once, not twice)
        assert experiment(preset, profile, rates=rates).pruning == get_preset(preset).profile(profile).pruning


def test_a_moved_slider_is_a_paper_rate(grids, tmp_path):
    panel = widgets.LotteryPanel("lenet-mnist", "quick", store=RunStore(tmp_path))
    panel.rate_sliders["fc"].value = 0.5
    panel.run()
    assert grids[-1]["rates"] == {"fc": 0.5, "output": 0.1}
    assert experiment("lenet-mnist", "quick", rates=grids[-1]["rates"]).pruning.rates == {"fc": 0.75, "output": 0.19}


def test_the_method_menu_names_every_method_and_runs_it_at_its_density(grids, tmp_path):
    from lth_tutorial.lottery import CRITERIA, METHODS
    # every way to find a ticket cheaper than IMP, and IMP; Zhou et al.'s criteria are IMP with other scores
    assert list(widgets.METHOD_NAMES) == [m for m in METHODS if m not in CRITERIA[1:]]
    plain = widgets.LotteryPanel("lenet-mnist", "quick", store=RunStore(tmp_path))
    assert "method" not in plain.settings()          # the other notebooks' panels are as they were
    panel = widgets.LotteryPanel("lenet-mnist", "quick", store=RunStore(tmp_path), methods=True, control="none")
    assert panel.settings()["method"] == "magnitude" and panel.density.disabled and not panel.rounds.disabled
    panel.run()
    assert grids[-1]["rounds"] == panel.rounds.value and "oneshot" not in grids[-1]
    assert list(panel.control.options) == ["none", "reinit", "random"]
    panel.method.value = "snip"
    assert list(panel.control.options) == ["none", "reinit", "random", "shuffle", "invert"]
    assert panel.rounds.disabled and not panel.density.disabled
    panel.control.value = "shuffle"
    panel.density.value = 0.05
    panel.run()
    call = grids[-1]
    assert (call["rounds"], call["oneshot"], call["method"], call["controls"]) == (1, (0.05,), "snip", ("shuffle",))
    panel.method.value = "early-bird"                # no shuffle ablation there: the control falls back to none
    assert panel.control.value == "none" and "shuffle" not in panel.control.options
    started = widgets.LotteryPanel("lenet-mnist", "quick", store=RunStore(tmp_path), methods=True, method="grasp",
                                   control="invert", density=0.029)
    assert started.settings() | {"rates": None} == {"rates": None, "rounds": 8, "strategy": "reset",
                                                    "control": "invert", "method": "grasp", "density": 0.029}


def test_sign_controls_are_offered_only_when_asked_and_run_as_controls(grids, tmp_path):
    plain = widgets.LotteryPanel("lenet-mnist", "quick", store=RunStore(tmp_path))
    assert list(plain.control.options) == ["none", "reinit", "random"]
    panel = widgets.LotteryPanel("lenet-mnist", "quick", store=RunStore(tmp_path), sign_controls=True,
                                 control="signed-constant", rounds=5)
    assert list(panel.control.options) == ["none", "reinit", "random", "signed-constant", "signed-reinit",
                                           "random-signs"]
    panel.run()
    assert (grids[-1]["controls"], grids[-1]["rounds"]) == (("signed-constant",), 5)


def test_the_structure_menu_is_offered_only_when_asked_and_runs_whole_units(grids, tmp_path):
    plain = widgets.LotteryPanel("lenet-mnist", "quick", store=RunStore(tmp_path))
    plain.run()
    assert "structure" not in plain.settings() and "structure" not in grids[-1]
    panel = widgets.LotteryPanel("lenet-mnist", "quick", store=RunStore(tmp_path), structures=True, structure="units",
                                 rounds=5)
    assert panel.settings()["structure"] == "units"
    panel.run()
    assert (grids[-1]["structure"], grids[-1]["rounds"]) == ("units", 5)
    panel.structure.value = "weights"
    panel.run()
    assert "structure" not in grids[-1]
