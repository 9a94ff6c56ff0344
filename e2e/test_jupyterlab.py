"""End-to-end: the LeNet notebook in a real JupyterLab, driven by headless system Chromium through Playwright.

Opens notebooks/01_lenet_mnist.ipynb, clears its saved outputs, runs all cells (Run menu > Run All Cells)
and waits until every code cell has an execution count and the kernel is idle; then, in the notebook's
LotteryPanel, it types a new fc pruning rate into the slider's readout, moves the rounds slider with the
keyboard, sets the control to "none" and presses Run. It checks that the progress bar becomes visible while
training (a tqdm bar in the panel's Output, gone when done), and that afterwards the figure (a PNG in the panel's Output) is a new image and the table
(`table.lth-table`) lists rounds 0..N with the densities the new rate implies. Artifacts in artifacts/:
e2e-1-before.png, e2e-2-progress.png, e2e-3-after.png, e2e-browser-console.log, jupyterlab-server.log, and
e2e-failure.png / e2e-failure.html when something goes wrong.

In CI (`make test`) the notebooks have just run under nbval in the same LTH_RUNS_DIR, so Run All hits the
run store; standalone, from an empty store, it trains everything (minutes), hence the generous timeouts.
The new fc rate is one the run store has never seen, so Run always trains (and shows the progress bar).
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

RUN_ALL_TIMEOUT_S = 15 * 60      # every cell of the notebook, from an empty store on a busy 2-core machine
STUCK_IDLE_S = 20                # kernel idle this long while cells are still unexecuted: Run All stopped
PANEL_TIMEOUT_S = 120            # widget panel rendered after its cell ran
PROGRESS_TIMEOUT_S = 180         # Run pressed -> progress bar visible (loads MNIST, then starts round 0)
TRAIN_TIMEOUT_S = 10 * 60        # a few LeNet quick rounds (~6 s each when idle)
REDRAW_TIMEOUT_S = 60            # status "done" -> figure and table redrawn

# LeNet-300-100's prunable weights: fc 784x300 + 300x100, output 100x10.
LENET_FC_WEIGHTS = 784 * 300 + 300 * 100
LENET_OUTPUT_WEIGHTS = 100 * 10


def per_round(paper_rate: float) -> float:
    """The rate a round applies for a slider's paper rate: the quick profile takes two paper rounds at once."""
    return 1 - (1 - paper_rate) ** 2 if os.environ.get("LTH_PROFILE", "quick") == "quick" else paper_rate


def expected_density(fc_rate: float, output_rate: float, round_index: int) -> float:
    """Overall density (%) of LeNet's weights after `round_index` rounds at the sliders' paper rates."""
    fc, out = per_round(fc_rate), per_round(output_rate)
    kept = LENET_FC_WEIGHTS * (1 - fc) ** round_index + LENET_OUTPUT_WEIGHTS * (1 - out) ** round_index
    return 100 * kept / (LENET_FC_WEIGHTS + LENET_OUTPUT_WEIGHTS)


def stored_fc_rates(runs_dir: Path) -> set[float]:
    """Every fc rate (as a slider's paper rate) some LeNet ticket in the store was configured with."""
    rates = set()
    for config in runs_dir.glob("lenet-mnist-*/*/config.json"):
        try:
            cfg = json.loads(config.read_text())
        except (OSError, ValueError):
            continue
        fc = cfg.get("pruning", {}).get("rates", {}).get("fc")
        if fc is not None:  # stored per round; invert the profile's step to compare with slider values
            step = 2 if os.environ.get("LTH_PROFILE", "quick") == "quick" else 1
            rates.add(round(1 - (1 - float(fc)) ** (1 / step), 2))
    return rates


def pick_new_rate(runs_dir: Path, current: float) -> float:
    """An fc rate in 0.40..0.80 that the store has no run for (so Run really trains), nearest 0.50 first."""
    taken = stored_fc_rates(runs_dir) | {round(current, 2)}
    candidates = sorted((round(0.40 + i / 100, 2) for i in range(41)), key=lambda r: (abs(r - 0.50), r))
    for rate in candidates:
        if rate not in taken:
            return rate
    pytest.fail(f"every fc rate in 0.40..0.80 already has a lenet-mnist run in {runs_dir}; "
                "point LTH_RUNS_DIR at a fresh folder")


# --- page helpers -----------------------------------------------------------------------------------

CELL_STATE_JS = r"""() => {
  const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
  if (!nb) return null;
  const prompts = [...nb.querySelectorAll('.jp-Cell.jp-CodeCell')].map(
      c => (c.querySelector('.jp-InputArea-prompt') || {}).textContent || '');
  // The status bar's kernel item ("Python 3 (ipykernel) | Idle"); the toolbar's execution indicator says
  // "idle" even before a kernel is connected ("No Kernel | Initializing"), so it is not used.
  const kernel = [...document.querySelectorAll('.jp-StatusBar-TextItem')].map(e => e.textContent.trim())
      .find(t => /\|\s*\w+/.test(t) && !/^Ln \d/.test(t)) || '';
  const m = kernel.match(/^(.*?)\s*\|\s*(\w[\w ]*)$/);
  const status = !m || /^No Kernel/.test(m[1]) ? 'no kernel' : m[2].trim().toLowerCase();
  const stderr = [...nb.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
      .map(e => e.textContent);
  const kinds = [...nb.querySelectorAll('.jp-Cell')].map(
      c => c.classList.contains('jp-CodeCell') ? 'code' : c.classList.contains('jp-MarkdownCell') ? 'markdown' : 'raw');
  return {prompts, kinds, status, kernel, stderr};
}"""


def cell_state(page) -> dict:
    return page.evaluate(CELL_STATE_JS) or {"prompts": [], "kinds": [], "status": None, "kernel": "", "stderr": []}


def executed(prompt: str) -> bool:
    return re.fullmatch(r"\[\d+\]:", prompt.strip()) is not None


def menu_command(page, menu: str, item: str) -> None:
    """Open a main-menu-bar menu and click one of its items, by their labels."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(rf"^{menu}$")).click()
    entry = page.locator(".lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel",
                         has_text=re.compile(rf"^{re.escape(item)}$")).first
    wait_or_fail(lambda: entry.click(timeout=10_000), f"JupyterLab's {menu} menu has no enabled item {item!r}")


def dialog_text(page) -> str:
    """The text of an open JupyterLab dialog (e.g. "Kernel Restarting"), for failure messages."""
    dialog = page.locator(".jp-Dialog")
    return f"dialog open: {dialog.first.inner_text()!r}; " if dialog.count() and dialog.first.is_visible() else ""


def wait_for_kernel_idle(page, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while cell_state(page)["status"] != "idle":
        # A notebook without kernel metadata asks which kernel to start: take the default.
        select_kernel = page.locator(".jp-Dialog", has_text="Select Kernel")
        if select_kernel.count() and select_kernel.first.is_visible():
            select_kernel.locator(".jp-mod-accept").first.click()
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: the kernel was not idle within {timeout_s:.0f} s "
                        f"({dialog_text(page)}status bar: {cell_state(page)['kernel']!r})")
        time.sleep(0.5)


def run_all_cells(page, timeout_s: float) -> list[str]:
    """Clear saved outputs, Run All Cells, wait for every code cell's execution count and an idle kernel."""
    menu_command(page, "Edit", "Clear Outputs of All Cells")
    wait_or_fail(lambda: page.wait_for_function(
        f"() => (s => s && s.prompts.every(p => !/\\d/.test(p)))(({CELL_STATE_JS})())", timeout=30_000),
        lambda: f"Clear Outputs of All Cells left execution counts: {cell_state(page)['prompts']}")
    menu_command(page, "Run", "Run All Cells")
    start = time.monotonic()
    idle_since = None
    while True:
        state = cell_state(page)
        prompts = state["prompts"]
        if prompts and all(executed(p) for p in prompts) and state["status"] == "idle":
            return prompts
        elapsed = time.monotonic() - start
        pending = [i for i, p in enumerate(prompts) if not executed(p)]
        running = any("*" in p for p in prompts)
        if state["status"] == "idle" and not running and elapsed > 10:
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > STUCK_IDLE_S:
                pytest.fail(f"Run All Cells stopped: kernel idle, code cells {pending} (0-based) never ran; "
                            f"prompts {prompts}; {dialog_text(page)}stderr/errors in the notebook:\n"
                            + "\n---\n".join(state["stderr"])[-4000:])
        else:
            idle_since = None
        if elapsed > timeout_s:
            pytest.fail(f"Run All Cells did not finish within {timeout_s:.0f} s: code cells {pending} (0-based) "
                        f"have no execution count yet (prompts {prompts}, {dialog_text(page)}kernel {state['kernel']!r})")
        time.sleep(1)


def wait_or_fail(action, message: str) -> None:
    """Run a bounded Playwright wait; on timeout fail with `message` alone (no call log or aria snapshot)."""
    from playwright.sync_api import Error as PlaywrightError

    try:
        action()
        return
    except (AssertionError, PlaywrightError):
        pass
    pytest.fail(message() if callable(message) else message)


def slider_readout(slider) -> str:
    return slider.locator(".widget-readout").inner_text().strip()


def set_slider_by_readout(slider, text: str) -> None:
    """Type a value into an ipywidgets slider's editable readout (Enter commits it)."""
    readout = slider.locator(".widget-readout")
    readout.click()
    readout.press("Control+A")
    readout.type(text)
    readout.press("Enter")


def panel_state(panel) -> dict:
    return panel.evaluate("""(root) => {
      const img = root.querySelector('.widget-output img');
      const table = root.querySelector('table.lth-table');
      const rows = table ? [...table.querySelectorAll('tbody tr')].map(
          tr => [...tr.querySelectorAll('td')].map(td => td.textContent.trim())) : [];
      const header = table ? [...table.querySelectorAll('thead th')].map(th => th.textContent.trim()) : [];
      const progress = root.querySelector(".widget-hprogress, .widget-progress");
      return {img: img ? img.getAttribute('src') : null, header, rows,
              tableHtml: table ? table.outerHTML : '',
              progressVisibility: progress ? getComputedStyle(progress).visibility : null};
    }""")


def shot(page, path: Path, element=None) -> None:
    if element is not None:
        element.scroll_into_view_if_needed()
    page.screenshot(path=str(path), full_page=False)


# --- the test -----------------------------------------------------------------------------------------

# Outer guard; "signal" raises inside the test, so the fixtures' finalizers still stop server and browser.
@pytest.mark.timeout(RUN_ALL_TIMEOUT_S + TRAIN_TIMEOUT_S + 10 * 60, method="signal")
def test_lenet_notebook_panel_retrains_and_redraws(browser_page, jupyter_lab, notebook_path, artifacts_dir):
    page = browser_page
    for old in [*artifacts_dir.glob("e2e-*.png"), artifacts_dir / "e2e-failure.html"]:
        old.unlink(missing_ok=True)
    try:
        _drive(page, jupyter_lab, notebook_path, artifacts_dir)
    except BaseException:
        try:
            page.screenshot(path=str(artifacts_dir / "e2e-failure.png"), full_page=False)
            (artifacts_dir / "e2e-failure.html").write_text(page.content())
        except Exception:
            pass
        print(f"\nJupyterLab server log tail ({jupyter_lab.log_path}):\n{jupyter_lab.log_tail()}")
        raise


def _drive(page, lab, notebook_path: Path, artifacts: Path) -> None:
    from playwright.sync_api import expect

    page.goto(lab.lab_url(notebook_path), timeout=120_000)
    wait_or_fail(lambda: page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(state="visible", timeout=120_000),
                 f"JupyterLab did not show the notebook {notebook_path.name} within 120 s")
    wait_for_kernel_idle(page, 180, "opening the notebook")

    prompts = run_all_cells(page, RUN_ALL_TIMEOUT_S)
    print(f"\nran all {len(prompts)} code cells: {' '.join(p.strip() for p in prompts)}")

    # The LotteryPanel: the (last) output holding an "fc rate" slider and a Run button.
    panel = (page.locator(".jp-OutputArea-output")
             .filter(has=page.locator(".widget-slider", has_text="fc rate"))
             .filter(has=page.locator("button", has_text="Run")).last)
    wait_or_fail(lambda: panel.wait_for(state="visible", timeout=PANEL_TIMEOUT_S * 1000),
                 f"the LotteryPanel widget did not render within {PANEL_TIMEOUT_S} s after Run All "
                 "(no output with an 'fc rate' slider and a Run button; is the jupyterlab_widgets "
                 "labextension found?)")
    fc = panel.locator(".widget-slider").filter(has_text="fc rate")
    output_rate = panel.locator(".widget-slider").filter(has_text="output rate")
    rounds = panel.locator(".widget-slider").filter(has_text="rounds")
    control = panel.locator(".widget-dropdown").filter(has_text="control").locator("select")
    run_button = panel.locator("button", has_text="Run")
    progress = panel.locator(".widget-hprogress, .widget-progress").first
    status = panel.locator("div.widget-label").last   # the Label widget (descriptions are <label>s)

    cells_before = cell_state(page)["kinds"]
    before = panel_state(panel)
    assert not progress.is_visible(), \
        f"no progress bar should show before Run; its visibility is {before['progressVisibility']!r}"
    old_fc, old_rounds = float(slider_readout(fc)), int(slider_readout(rounds))
    out_rate = float(slider_readout(output_rate))
    new_fc = pick_new_rate(lab.runs_dir, old_fc)
    new_rounds = 2 if old_rounds != 2 else 3
    print(f"panel before: fc {old_fc}, output {out_rate}, rounds {old_rounds}, table rows {len(before['rows'])}, "
          f"figure {'yes' if before['img'] else 'none'}; setting fc {new_fc}, rounds {new_rounds}")
    shot(page, artifacts / "e2e-1-before.png", panel)

    # Rate: typed into the slider's editable readout.
    set_slider_by_readout(fc, f"{new_fc:.2f}")
    wait_or_fail(lambda: expect(fc.locator(".widget-readout")).to_have_text(f"{new_fc:.2f}", timeout=10_000),
                 lambda: f"typing {new_fc:.2f} into the fc rate readout left it at {slider_readout(fc)!r}")
    # Rounds: keyboard on the slider handle.
    handle = rounds.locator(".noUi-handle")
    handle.focus()
    key = "ArrowLeft" if new_rounds < old_rounds else "ArrowRight"
    for _ in range(abs(new_rounds - old_rounds)):
        handle.press(key)
    wait_or_fail(lambda: expect(rounds.locator(".widget-readout")).to_have_text(str(new_rounds), timeout=10_000),
                 lambda: f"{key} x{abs(new_rounds - old_rounds)} on the rounds slider handle left it at "
                         f"{slider_readout(rounds)!r}, not {new_rounds}")
    control.select_option("none")
    assert fc.locator(".widget-readout").inner_text().strip() == f"{new_fc:.2f}", "the fc rate readout changed back"

    assert cell_state(page)["kinds"] == cells_before, \
        "typing into the widgets changed the notebook's cells (keystrokes leaked to JupyterLab's shortcuts)"

    done_text = f"done: 1 run(s), rounds 0..{new_rounds}"   # what the status label says when this Run ends
    status_before = status.inner_text()
    assert status_before != done_text, f"the status label already says {done_text!r} before Run"

    def finished() -> str | None:
        """The status label if this Run has ended (a new "done..." or an "error..."), else None."""
        text = status.inner_text()
        return text if text.startswith("error") or (text.startswith("done") and text != status_before) else None

    run_button.click()
    deadline = time.monotonic() + PROGRESS_TIMEOUT_S
    while not progress.is_visible():
        text = status.inner_text()
        if finished() or time.monotonic() > deadline:
            pytest.fail(f"the progress bar never became visible after pressing Run (fc {new_fc}, rounds {new_rounds}, "
                        f"a setting the store lacks, so Run must train); waited "
                        f"{PROGRESS_TIMEOUT_S - max(0, deadline - time.monotonic()):.0f} s; status label: {text!r}")
        time.sleep(0.2)
    try:  # a screenshot with some progress on the bar, if training gets there soon (not required)
        panel.locator(".progress-bar").wait_for(state="visible", timeout=30_000)
        page.wait_for_function("(el) => parseFloat(el.style.width) > 5",
                               arg=panel.locator(".progress-bar").element_handle(), timeout=30_000)
    except Exception:
        pass
    shot(page, artifacts / "e2e-2-progress.png", panel)
    print(f"progress bar visible; status {status.inner_text()!r}")

    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while not (text := finished()):
        if time.monotonic() > deadline:
            pytest.fail(f"training did not finish within {TRAIN_TIMEOUT_S} s (status label: {status.inner_text()!r})")
        time.sleep(1)
    if text != done_text:
        pytest.fail(f"Run ended with status {text!r}, expected {done_text!r}")
    wait_or_fail(lambda: expect(progress).to_be_hidden(timeout=30_000),
                 "the progress bar stayed visible 30 s after the status said done")

    # Figure and table redrawn for the new settings.
    want_rounds = [str(k) for k in range(new_rounds + 1)]
    deadline = time.monotonic() + REDRAW_TIMEOUT_S
    while True:
        after = panel_state(panel)
        ticket_rows = [r for r in after["rows"] if r and r[0] == "winning ticket"]
        if after["img"] and after["img"] != before["img"] and [r[1] for r in ticket_rows] == want_rounds:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"figure/table not redrawn within {REDRAW_TIMEOUT_S} s after '{status.inner_text()}': "
                        f"figure changed: {bool(after['img']) and after['img'] != before['img']}; "
                        f"table rows {after['rows']} (want winning-ticket rounds {want_rounds})")
        time.sleep(0.5)
    shot(page, artifacts / "e2e-3-after.png", panel)

    assert after["img"].startswith("data:image/png;base64,") and len(after["img"]) > 5000, \
        f"the figure is not a PNG image: {after['img'][:80]!r}"
    assert after["header"][:3] == ["series", "round", "Pm %"], f"unexpected table header {after['header']}"
    assert all(r[0] == "winning ticket" for r in after["rows"]), \
        f"control 'none' should leave only winning-ticket rows, the table has {[r[0] for r in after['rows']]}"
    densities = [float(r[2]) for r in ticket_rows]
    want = [expected_density(new_fc, out_rate, k) for k in range(new_rounds + 1)]
    assert all(abs(d - w) <= 0.15 for d, w in zip(densities, want)), \
        f"table densities {densities} do not match fc {new_fc}, output {out_rate}: expected ~{[round(x, 1) for x in want]}"
    assert after["tableHtml"] != before["tableHtml"], "the table did not change"
    print(f"after: densities {densities}, figure changed, status {status.inner_text()!r}")
