"""End-to-end: every numbered notebook, opened in JupyterLab and run no further, shows its panel's figure.

A reader who opens a notebook sees its saved outputs; the LotteryPanel's figure lives in the saved
widget state (the panel is run once before the notebook is saved), which JupyterLab renders on opening
once the notebook is trusted (an untrusted notebook shows widgets as their text: `jupyter trust
notebooks/*.ipynb`, as the README says). For each notebook this trusts it in the server's fresh HOME,
opens it, waits for the panel (an output with a "rounds" slider and a Run button) and checks that its
Output holds a PNG, without running a cell. Screenshots: artifacts/e2e-open-<name>.png.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from test_jupyterlab import wait_for_kernel_idle, wait_or_fail

pytestmark = pytest.mark.browser

NOTEBOOKS = ("00_overview", "01_lenet_mnist", "02_conv_cifar10", "03_vgg_resnet", "04_dropout", "05_strategies",
             "06_cheaper_tickets", "07_anatomy",
             "08_structured_and_speed")
OPEN_TIMEOUT_S = 120


@pytest.mark.timeout(len(NOTEBOOKS) * 4 * 60, method="signal")
def test_every_notebook_opens_with_its_panel_figure_visible(browser_page, jupyter_lab, artifacts_dir):
    page = browser_page
    seen = {}
    try:
        _open_each(page, jupyter_lab, artifacts_dir, seen)
    except BaseException:
        page.screenshot(path=str(artifacts_dir / "e2e-open-failure.png"), full_page=False)
        (artifacts_dir / "e2e-open-failure.html").write_text(page.content())
        raise
    print(f"\npanel figures seen on opening (PNG data URL lengths): {seen}")


def _open_each(page, jupyter_lab, artifacts_dir, seen: dict) -> None:
    home = jupyter_lab.runtime_dir.parent / "home"   # the server's HOME, where its trust database lives
    for name in NOTEBOOKS:
        path = jupyter_lab.root_dir / "notebooks" / f"{name}.ipynb"
        subprocess.run([sys.executable, "-m", "jupyter", "trust", str(path)], check=True, capture_output=True,
                       env={k: v for k, v in os.environ.items() if k != "JUPYTER_DATA_DIR"} | {"HOME": str(home)})
        page.goto(jupyter_lab.lab_url(path), timeout=120_000)
        tab = page.locator(".lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel", has_text=f"{name}.ipynb")
        wait_or_fail(lambda: tab.first.wait_for(state="visible", timeout=OPEN_TIMEOUT_S * 1000),
                     f"JupyterLab did not bring {name} to the front within {OPEN_TIMEOUT_S} s")
        wait_or_fail(lambda: page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").first.wait_for(
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
