"""Fixtures for the JupyterLab browser test: a throw-away JupyterLab server and headless system Chromium.

Everything started here is stopped here, by PID, even when the test fails:

* the JupyterLab server runs in its own process group (`start_new_session`); teardown shuts its kernels down
  through the REST API, sends SIGTERM to the group (SIGKILL after a grace period), then kills any kernel
  process left over, found by the unique temporary runtime directory in its command line (jupyter_client
  starts kernels in their own session, so the group signal does not reach them);
* Chromium is closed through Playwright (`browser.close()`, then `playwright.stop()`).

Isolation: a fresh HOME, JUPYTER_CONFIG_DIR, JUPYTER_RUNTIME_DIR, JupyterLab user-settings, app-settings and
workspaces directories under a temporary folder. JUPYTER_PATH / JUPYTER_DATA_DIR keep their defaults so the
venv's kernelspec and the ipywidgets labextension (.venv/share/jupyter/labextensions) are still found.
LTH_RUNS_DIR / LTH_PROFILE / LTH_DATA_DIR pass through to the kernel unchanged (an unset LTH_RUNS_DIR
becomes the repository's git-ignored runs/, made absolute, since the kernel's working directory is
notebooks/). The notebook is never written back: autosave is off and a server pre-save hook refuses saves.

Environment knobs (for development only): LTH_E2E_NOTEBOOK=<path to .ipynb> opens another notebook (the
server's root becomes the repository if the notebook is inside it, else the notebook's folder).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
DEFAULT_NOTEBOOK = REPO / "notebooks" / "01_lenet_mnist.ipynb"
SYSTEM_CHROMIUM = Path("/usr/bin/chromium")
# Exactly these flags (no downloaded browser, no network beyond loopback, no GPU).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_TIMEOUT_S = 180
SERVER_STOP_GRACE_S = 20

# Quiet and deterministic JupyterLab: no news/update toasts, no autosave (the notebook must not be rewritten),
# every cell kept in the DOM (no virtual scrolling) so execution counts can be read from all of them, and the
# notebook's kernel started without a "Select Kernel" dialog.
LAB_OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none", "autoStartDefaultKernel": True},
}

SERVER_CONFIG = '''\
from tornado.web import HTTPError


def _refuse_save(model, path, contents_manager, **kwargs):
    """The browser test must never write a notebook (or anything else) back into the repository."""
    raise HTTPError(403, f"the e2e browser test does not save files ({path})")


# (JupyterLab applies the server config twice, so the server log shows one harmless "Overriding existing
# pre_save_hook (_refuse_save) with a new one (_refuse_save)" warning.)
c.FileContentsManager.pre_save_hook = _refuse_save
'''


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives JupyterLab in headless Chromium (needs the chromium package)")


def chromium_executable() -> str | None:
    if SYSTEM_CHROMIUM.is_file() and os.access(SYSTEM_CHROMIUM, os.X_OK):
        return str(SYSTEM_CHROMIUM)
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = chromium_executable()
    if path is None:
        pytest.skip("no system Chromium: /usr/bin/chromium is missing and `chromium` is not on PATH "
                    "(install the Debian package `chromium`; .ci/run does)")
    return path


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def notebook_path() -> Path:
    path = Path(os.environ.get("LTH_E2E_NOTEBOOK") or DEFAULT_NOTEBOOK).resolve()
    if not path.is_file():
        pytest.fail(f"the notebook to drive is missing: {path}")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


def _log_tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no server log)"


@dataclass
class JupyterLab:
    url: str            # base URL, ends with "/"
    root_dir: Path
    runs_dir: Path      # LTH_RUNS_DIR as the kernel sees it
    log_path: Path
    process: subprocess.Popen
    runtime_dir: Path

    def lab_url(self, notebook: Path) -> str:
        return f"{self.url}lab/tree/{notebook.resolve().relative_to(self.root_dir).as_posix()}"

    def log_tail(self) -> str:
        return _log_tail(self.log_path)


def _kernel_pids(marker: str) -> list[int]:
    """PIDs of live processes whose command line contains `marker` (our unique temporary runtime dir)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(proc.name))
    return pids


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        try:
            state = (Path(f"/proc/{pid}") / "stat").read_text().split(")")[-1].split()[0]
            if state == "Z":  # a zombie whose parent has not reaped it yet: it is dead
                return True
        except OSError:
            return True
        time.sleep(0.2)
    return False


def _stop_server(server: JupyterLab) -> None:
    proc = server.process
    # 1. Kernels first, politely, while the server still answers (a DELETE needs the _xsrf cookie + header).
    if proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{server.url}lab", timeout=15) as r:
                cookies = [c.split(";")[0] for c in r.headers.get_all("Set-Cookie") or []]
            xsrf = next((c.split("=", 1)[1] for c in cookies if c.startswith("_xsrf=")), "")
            for kernel in _get_json(f"{server.url}api/kernels"):
                req = urllib.request.Request(f"{server.url}api/kernels/{kernel['id']}", method="DELETE",
                                             headers={"Cookie": "; ".join(cookies), "X-XSRFToken": xsrf})
                urllib.request.urlopen(req, timeout=30).close()
        except (OSError, ValueError):
            pass
    # 2. The server's process group.
    for sig, wait in ((signal.SIGTERM, SERVER_STOP_GRACE_S), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    # 3. Kernels that survived (own session): found by our unique runtime dir in their command line.
    for pid in _kernel_pids(str(server.runtime_dir)):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            if _wait_gone(pid, 10):
                break


@pytest.fixture
def jupyter_lab(notebook_path: Path, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A JupyterLab server on 127.0.0.1 (free port, no token) whose root holds the notebook; stopped after."""
    tmp = tmp_path_factory.mktemp("jupyterlab")
    home, config, runtime = tmp / "home", tmp / "config", tmp / "runtime"
    user_settings, app_settings, workspaces = tmp / "user-settings", tmp / "app-settings", tmp / "workspaces"
    for d in (home, config, runtime, user_settings, app_settings, workspaces):
        d.mkdir()
    (app_settings / "overrides.json").write_text(json.dumps(LAB_OVERRIDES, indent=1))
    (config / "jupyter_server_config.py").write_text(SERVER_CONFIG)

    root_dir = REPO if notebook_path.is_relative_to(REPO) else notebook_path.parent
    runs_dir = Path(os.environ.get("LTH_RUNS_DIR") or REPO / "runs").expanduser().resolve()
    venv_bin = str(Path(sys.executable).parent)
    env = dict(os.environ, HOME=str(home), JUPYTER_CONFIG_DIR=str(config), JUPYTER_RUNTIME_DIR=str(runtime),
               LTH_RUNS_DIR=str(runs_dir), PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""),
               PYTHONUNBUFFERED="1")
    env.setdefault("LTH_OFFLINE", "1")   # the test machine has loopback only
    for var in ("JUPYTER_TOKEN", "JUPYTER_PASSWORD"):
        env.pop(var, None)

    port = _free_port()
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.port_retries=0",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={root_dir}", "--IdentityProvider.token=",
           "--ServerApp.password=", "--ServerApp.open_browser=False", "--LabApp.news_url=",
           f"--LabApp.user_settings_dir={user_settings}", f"--LabApp.app_settings_dir={app_settings}",
           f"--LabApp.workspaces_dir={workspaces}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log_path = artifacts_dir / "jupyterlab-server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=root_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    server = JupyterLab(url=f"http://127.0.0.1:{port}/", root_dir=root_dir, runs_dir=runs_dir,
                        log_path=log_path, process=proc, runtime_dir=runtime)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {proc.returncode} before it served; "
                            f"log {log_path}:\n{server.log_tail()}")
            try:
                _get_json(f"{server.url}api/status", timeout=2)
                break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer {server.url}api/status within {SERVER_START_TIMEOUT_S} s; "
                            f"log {log_path}:\n{server.log_tail()}")
            time.sleep(0.5)
        yield server
    finally:
        _stop_server(server)


@pytest.fixture
def browser_page(chromium_path: str, jupyter_lab: JupyterLab, artifacts_dir: Path):
    """A Playwright page in headless system Chromium (never a downloaded browser); closed after.

    The browser console goes to artifacts/e2e-browser-console.log."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    pw = sync_api.sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS,
                                     timeout=60_000)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(30_000)
            console = open(artifacts_dir / "e2e-browser-console.log", "w")
            page.on("console", lambda msg: console.write(f"{msg.type}: {msg.text}\n"))
            page.on("pageerror", lambda err: console.write(f"pageerror: {err}\n"))
            try:
                yield page
            finally:
                console.close()
        finally:
            browser.close()
    finally:
        pw.stop()
