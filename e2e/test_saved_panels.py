"""End-to-end: every numbered notebook, opened in JupyterLab and run no further, shows its panel's figure.

A reader who opens a notebook sees its saved outputs; the LotteryPanel's figure lives in the saved
widget state (the panel is run once before the notebook is saved), which JupyterLab renders on opening.
For each notebook this waits for the panel (an output with a "rounds" slider and a Run button) and
checks that its Output holds a PNG, without running a cell. Screenshots: artifacts/e2e-open-<name>.png.
"""
from __future__ import annotations

import pytest

from test_jupyterlab import wait_for_kernel_idle, wait_or_fail

pytestmark = pytest.mark.browser

NOTEBOOKS = ("00_overview", "01_lenet_mnist", "02_conv_cifar10", "03_vgg_resnet", "04_dropout", "05_strategies")
OPEN_TIMEOUT_S = 120


@pytest.mark.timeout(len(NOTEBOOKS) * 4 * 60, method="signal")
def test_every_notebook_opens_with_its_panel_figure_visible(browser_page, jupyter_lab, artifacts_dir):
    page = browser_page
    seen = {}
    for name in NOTEBOOKS:
        path = jupyter_lab.root_dir / "notebooks" / f"{name}.ipynb"
        page.goto(jupyter_lab.lab_url(path), timeout=120_000)
        wait_or_fail(lambda: page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(
            state="visible", timeout=OPEN_TIMEOUT_S * 1000), f"JupyterLab did not show {name} within {OPEN_TIMEOUT_S} s")
        wait_for_kernel_idle(page, 180, f"opening {name}")
        notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
        panel = (notebook.locator(".jp-OutputArea-output")
                 .filter(has=page.locator(".widget-slider", has_text="rounds"))
                 .filter(has=page.locator("button", has_text="Run")).last)
        wait_or_fail(lambda: panel.wait_for(state="attached", timeout=OPEN_TIMEOUT_S * 1000),
                     f"{name}: no LotteryPanel rendered from the saved widget state within {OPEN_TIMEOUT_S} s "
                     "(was the panel cell executed before the notebook was saved?)")
        figure = panel.locator(".widget-output img").first
        wait_or_fail(lambda: figure.wait_for(state="attached", timeout=60_000),
                     f"{name}: the panel rendered but its Output holds no figure: the saved widget state has "
                     "empty controls (run the panel once before saving: `make notebooks`)")
        figure.scroll_into_view_if_needed()
        src = figure.get_attribute("src") or ""
        page.screenshot(path=str(artifacts_dir / f"e2e-open-{name}.png"), full_page=False)
        seen[name] = len(src)
        assert src.startswith("data:image/png;base64,") and len(src) > 5000, \
            f"{name}: the panel's figure is not a PNG: {src[:80]!r}"
        # nothing was run: the execution counts are the saved ones, no cell is running
        assert not page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputArea-prompt",
                                has_text="[*]").count(), f"{name}: a cell is running, but nothing was run"
    print(f"\npanel figures seen on opening (PNG data URL lengths): {seen}")
