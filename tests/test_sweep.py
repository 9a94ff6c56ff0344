"""`lth sweep` on Ray: the same summaries as serial `lth run`, on one machine or a two-node cluster,
through a killed worker and a killed driver, with a failing chain that leaves the rest of the grid.

The grid is the real LeNet quick preset on the real MNIST splits, shrunk with the CLI overrides. Serial
runs use 1 torch thread, as each sweep task does (`--cpus-per-task 1`): the thread count is part of a
run's key, so the two make the same runs and must agree bitwise.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray
import torch
from ray.cluster_utils import Cluster

from lth_tutorial.cli import main
from lth_tutorial.store import RunStore
from lth_tutorial.sweep import Grid, load_grids, run_sweep

TINY = ["--iterations", "30", "--eval-every", "10"]
GRID = ["--trials", "2", "--rounds", "2", *TINY]          # 2 trials x (3 ticket + 2 reinit + 2 random) = 14 rounds
ROUNDS = 14
pytestmark = pytest.mark.timeout(600)


def _summary(path: Path) -> dict:
    summary = json.loads(path.read_text())
    summary.pop("provenance")
    return summary


@pytest.fixture(scope="module")
def serial(data_root, tmp_path_factory) -> dict:
    """The grid run by `lth run` at 1 thread: what every sweep below must reproduce exactly."""
    out = tmp_path_factory.mktemp("serial")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", "lenet-mnist", "--profile", "quick", "--control", "reinit", *GRID,
                     "--store", str(out / "store"), "--json", str(out / "reinit.json")]) == 0
        assert main(["run", "lenet-mnist", "--profile", "quick", "--control", "random", *GRID,
                     "--store", str(out / "store"), "--json", str(out / "random.json")]) == 0
    finally:
        torch.set_num_threads(threads)
    reinit, random = _summary(out / "reinit.json"), _summary(out / "random.json")
    # one summary with both controls, in the order a sweep (and run_grid) lists them
    by_trial = {}
    for run in reinit["runs"] + [r for r in random["runs"] if r["control"] == "random"]:
        by_trial.setdefault(run["trial"], []).append(run)
    return {**reinit, "controls": ["reinit", "random"], "runs": [r for t in sorted(by_trial) for r in by_trial[t]]}


def _sweep_cli(store: Path, out: Path, *extra: str) -> list[str]:
    return ["sweep", "lenet-mnist", "--profile", "quick", "--control", "reinit,random", *GRID,
            "--store", str(store), "--json", str(out), *extra]


def test_local_sweep_gives_the_serial_summary_exactly(serial, tmp_path, capsys):
    assert main(_sweep_cli(tmp_path / "store", tmp_path / "sweep.json", "--num-cpus", "2")) == 0
    assert _summary(tmp_path / "sweep.json") == serial
    printed = capsys.readouterr().out
    assert f"sweep: {ROUNDS} round(s) trained, 0 found in the store" in printed
    assert len(re.findall(r"trial \d (ticket|reinit|random) round \d: Pm", printed)) == ROUNDS
    assert "| winning ticket" in printed and "| random sparsity" in printed  # the closing table
    # a second call finds every round and trains none
    assert main(_sweep_cli(tmp_path / "store", tmp_path / "again.json", "--num-cpus", "2")) == 0
    assert f"sweep: 0 round(s) trained, {ROUNDS} found in the store" in capsys.readouterr().out
    assert _summary(tmp_path / "again.json") == serial


def test_two_node_cluster_uses_both_nodes_and_gives_the_same_summary(serial, tmp_path):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        grid = Grid(("lenet-mnist",), ("quick",), controls=("reinit", "random"), trials=2, rounds=2,
                    train={"iterations": 30, "eval_every": 10})
        result = run_sweep([grid], store=RunStore(tmp_path / "store"), address=cluster.address, progress=False)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert result.failures == [] and result.trained == ROUNDS
    assert len(result.nodes) == 2, result.nodes               # rounds were trained on both nodes
    assert json.loads(json.dumps(result.summaries[0])) == serial


def _ray_workers(title: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(title.encode()):
                pids.append(int(entry.name))
        except OSError:
            pass
    return pids


SLOW = {"iterations": 300, "eval_every": 100}   # rounds long enough to be killed in the middle of one
SLOW_GRID = Grid(("lenet-mnist",), ("quick",), controls=("reinit",), trials=1, rounds=2, train=SLOW)


@pytest.fixture(scope="module")
def serial_slow(data_root, tmp_path_factory) -> dict:
    """SLOW_GRID run serially at 1 thread."""
    from lth_tutorial.runner import run_grid

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_grid("lenet-mnist", "quick", rounds=2, trials=1, controls=("reinit",), train=SLOW,
                        store=RunStore(tmp_path_factory.mktemp("serial-slow")))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds Ray's worker processes in /proc")
def test_a_worker_killed_mid_task_is_retried_and_the_results_are_identical(serial_slow, tmp_path):
    killed: list[int] = []
    stop = threading.Event()

    def kill_one_ticket_round():
        while not stop.is_set() and not killed:
            workers = _ray_workers("ray::ticket_task")
            if workers:
                time.sleep(0.2)
                for pid in workers:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                    except ProcessLookupError:
                        pass
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_ticket_round)
    killer.start()
    try:
        result = run_sweep([SLOW_GRID], store=RunStore(tmp_path / "sweep"), num_cpus=2, progress=False)
    finally:
        stop.set()
        killer.join()
    assert killed, "no ticket_task worker was seen running"
    assert result.failures == [] and result.trained == 5
    assert result.summaries[0] == serial_slow


def test_a_lost_node_is_survived_and_the_results_are_identical(serial_slow, tmp_path):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    store = tmp_path / "store"
    lost, removed = threading.Event(), []
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()

        def lose_the_worker_node():
            while _finished(store) < 2 and not lost.is_set():
                time.sleep(0.05)
            if not lost.is_set():
                cluster.remove_node(worker, allow_graceful=False)   # as a machine that loses power
                removed.append(_finished(store))
                lost.set()

        remover = threading.Thread(target=lose_the_worker_node)
        remover.start()
        try:
            result = run_sweep([SLOW_GRID], store=RunStore(store), address=cluster.address, progress=False)
        finally:
            lost.set()
            remover.join()
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert removed and removed[0] < 5, removed     # the node went while rounds were still to be trained
    assert result.failures == [] and result.trained == 5
    assert result.summaries[0] == serial_slow


def _finished(store: Path) -> int:
    return len(list(store.rglob("metrics.json")))


def test_a_killed_driver_resumes_and_trains_only_the_missing_rounds(serial, tmp_path):
    store, out = tmp_path / "store", tmp_path / "sweep.json"
    slow = ["--iterations", "300", "--eval-every", "100"]
    command = [sys.executable, "-m", "lth_tutorial.cli", *_sweep_cli(store, out, "--num-cpus", "2", *slow)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.monotonic() + 300
    while _finished(store) < 3 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)   # the driver and the Ray processes it started
    driver.wait()
    time.sleep(2)
    before = _finished(store)
    assert 3 <= before < ROUNDS, before
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"sweep: {ROUNDS - before} round(s) trained, {before} found in the store" in done.stdout
    assert len(re.findall(r"trial \d (ticket|reinit|random) round \d: Pm", done.stdout)) == ROUNDS - before
    # the same as a run that was never interrupted: the grid serially at 1 thread, in this process (a sweep
    # equals its serial run bitwise, test_local_sweep_gives_the_serial_summary_exactly; no third Ray start)
    from lth_tutorial.runner import run_grid

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        uninterrupted = run_grid("lenet-mnist", "quick", rounds=2, trials=2, controls=("reinit", "random"),
                                 train={"iterations": 300, "eval_every": 100}, store=RunStore(tmp_path / "serial"))
    finally:
        torch.set_num_threads(threads)
    assert _summary(out)["runs"] == uninterrupted["runs"]
    assert not list(store.rglob("*.tmp"))


def test_a_failing_chain_is_named_and_the_rest_of_the_grid_finishes(data_root, tmp_path, capsys):
    grids = tmp_path / "grids.toml"
    grids.write_text('presets = ["lenet-mnist"]\nprofiles = ["quick"]\ntrials = 1\nrounds = 2\n'
                     'controls = ["reinit"]\n\n'
                     '[[grid]]\ntrain = {iterations = 30, eval_every = 10}\n\n'
                     '[[grid]]\ntrain = {iterations = 30, eval_every = 10, lr = 1e30}\n')
    assert [g.train for g in load_grids(grids)] == [{"iterations": 30, "eval_every": 10},
                                                     {"iterations": 30, "eval_every": 10, "lr": 1e30}]
    code = main(["sweep", "--config", str(grids), "--num-cpus", "2", "--store", str(tmp_path / "store"),
                 "--json", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 1
    assert ("lth: lenet-mnist (quick, reset) trial 0 dense round 0 failed: FloatingPointError: training diverged "
            "at iteration 10 (loss nan)") in captured.err
    assert "1 chain(s) failed (4 later round(s) not run)" in captured.err
    assert "sweep: 5 round(s) trained" in captured.out            # the healthy grid, all of it
    written = list((tmp_path / "out").glob("*.json"))
    assert [p.name for p in written] == ["lenet-mnist-quick-reset.json"]
    assert json.loads(written[0].read_text())["config"]["train"]["lr"] == pytest.approx(1.2e-3)


@pytest.mark.parametrize("argv, message", [
    (["sweep"], "name at least one preset"),
    (["sweep", "lenet-mnst"], "unknown preset 'lenet-mnst'"),
    (["sweep", "lenet-mnist", "--control", "reinit,bogus"], "--control takes none, reinit, random"),
    (["sweep", "lenet-mnist", "--profile", "fast"], "--profile takes quick, subset or paper"),
    (["sweep", "lenet-mnist", "--strategy", "reset,rewind"], "unknown strategy 'rewind'"),
    (["sweep", "lenet-mnist", "--rounds", "-1"], "--rounds must be >= 0"),
    (["sweep", "lenet-mnist", "--cpus-per-task", "0"], "--cpus-per-task must be >= 1"),
    (["sweep", "lenet-mnist", "--rate", "conv=0.5"], "has no conv weights to prune"),
    (["sweep", "--config", "no-such.toml"], "sweep file no-such.toml does not exist"),
])
def test_bad_input_is_one_line_before_ray_starts(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lth: error: ") and message in err and err.count("\n") == 1
    assert not ray.is_initialized()


def test_a_grid_file_with_an_unknown_key_is_refused(tmp_path, capsys):
    path = tmp_path / "grid.toml"
    path.write_text('presets = ["lenet-mnist"]\ncontrol = ["reinit"]\n')
    assert main(["sweep", "--config", str(path)]) == 2
    assert "unknown key(s) control; use " in capsys.readouterr().err


def test_asking_for_gpus_the_cluster_lacks_is_one_line(data_root, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["sweep", "lenet-mnist", *GRID, "--gpus-per-task", "0.25", "--num-cpus", "1",
                 "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "each task asks for 0.25 GPU(s), but the Ray cluster has 0" in err and err.count("\n") == 1


def test_the_papers_grid_file_parses_and_validates():
    """docs/sweeps/paper.toml: every preset at the paper profile, 5 trials, both controls; 4,325 rounds."""
    grids = load_grids(Path(__file__).resolve().parent.parent / "docs" / "sweeps" / "paper.toml")
    cells = [cell for grid in grids for cell in grid.cells()]
    assert len(cells) == 13 and {c["profile"] for c in cells} == {"paper"}
    rounds = sum(c["rounds"] + (0 if e.control == "none" else -1) + 1 for c in cells for e in c["experiments"])
    assert rounds == 4325


def test_methods_at_initialization_and_their_ablations_sweep_as_they_run(data_root, tmp_path):
    """SNIP, GraSP and SynFlow masks with the inverted and shuffled ablations, and early-bird tickets
    (drawn at the earliest the 5-mask window allows here): sweep == serial, exactly."""
    from lth_tutorial.runner import run_grid

    tiny = {"iterations": 30, "eval_every": 10}
    grid = Grid(("lenet-mnist",), ("quick",), controls=("invert", "shuffle"), trials=1, oneshot=(0.2, 0.036),
                train=tiny, methods=("snip", "grasp", "synflow"))
    early = {"iterations": 60, "eval_every": 10}
    bird = Grid(("lenet-mnist",), ("quick",), controls=("reinit",), trials=1, oneshot=(0.2, 0.036), train=early,
                methods=("early-bird",))
    result = run_sweep([grid, bird], store=RunStore(tmp_path / "sweep"), num_cpus=2, progress=False)
    assert result.failures == [] and result.trained == 1 + 3 * 3 * 2 + 1 + 2 * 2   # a dense round 0 per grid
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for summary, method in zip(result.summaries, grid.methods):
            expected = run_grid("lenet-mnist", "quick", rounds=2, trials=1, controls=("invert", "shuffle"),
                                oneshot=(0.2, 0.036), train=tiny, method=method, store=RunStore(tmp_path / "serial"))
            assert summary == expected
            assert {r.get("method") for r in summary["runs"]} == {method}
        expected = run_grid("lenet-mnist", "quick", rounds=2, trials=1, controls=("reinit",), oneshot=(0.2, 0.036),
                            train=early, method="early-bird", store=RunStore(tmp_path / "serial"))
        assert result.summaries[-1] == expected
        assert [r["early_bird_iteration"] for r in expected["runs"][0]["rounds"][1:]] == [50, 50]
    finally:
        torch.set_num_threads(threads)


def test_the_cheaper_tickets_grid_file_parses_and_validates():
    """docs/sweeps/cheaper-tickets.toml, the planned paper-budget runs of notebook 06."""
    grids = load_grids(Path(__file__).resolve().parent.parent / "docs" / "sweeps" / "cheaper-tickets.toml")
    cells = [cell for grid in grids for cell in grid.cells()]
    assert len(cells) == 5 + 4 + 1 and {e.method for c in cells for e in c["experiments"]} == {
        "magnitude-init", "random", "snip", "grasp", "synflow", "early-bird"}
    assert {e.control for c in cells for e in c["experiments"]} == {"none", "shuffle", "invert", "reinit"}
    ablated = {e.method for c in cells for e in c["experiments"] if e.control != "none"}
    assert ablated == {"magnitude-init", "snip", "grasp", "synflow"}   # random's ablations are random again


def test_instability_and_sign_controls_sweep_as_they_run(data_root, tmp_path):
    """Instability analyses (dense, a ticket round and its reinit) and sign controls trained at one round
    only: the sweep's summary holds them, equal to the serial library's, exactly."""
    from dataclasses import replace

    from lth_tutorial.instability import Instability, run_instability
    from lth_tutorial.presets import experiment
    from lth_tutorial.runner import run_grid

    tiny = {"iterations": 30, "eval_every": 10}
    grid = Grid(("lenet-mnist",), ("quick",), controls=("signed-constant", "random-signs"), trials=1, rounds=2,
                train=tiny, control_rounds=(2,), instability=(0, 2), instability_of=("ticket", "reinit"))
    result = run_sweep([grid], store=RunStore(tmp_path / "sweep"), num_cpus=2, progress=False)
    assert result.failures == [] and result.trained == 3 + 2 + 3   # 3 ticket rounds, 2 controls, 3 analyses
    (summary,) = result.summaries
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        store = RunStore(tmp_path / "serial")
        expected = run_grid("lenet-mnist", "quick", rounds=2, trials=1, controls=("signed-constant", "random-signs"),
                            train=tiny, store=store, control_rounds=(2,))
        assert {k: v for k, v in summary.items() if k != "instability"} == expected
        assert [[r["round"] for r in run["rounds"]] for run in summary["runs"]] == [[0, 1, 2], [2], [2]]
        ticket = experiment("lenet-mnist", "quick", train=tiny)
        serial = [run_instability(Instability(ticket, 0), store), run_instability(Instability(ticket, 2), store),
                  run_instability(Instability(replace(ticket, control="reinit"), 2), store)]
        assert [{k: v for k, v in m.items() if k != "ray_node"} for m in summary["instability"]] == serial
    finally:
        torch.set_num_threads(threads)


def test_the_anatomy_grid_file_parses_and_validates():
    """docs/sweeps/anatomy.toml, the planned paper-budget runs of notebook 07."""
    (grid,) = load_grids(Path(__file__).resolve().parent.parent / "docs" / "sweeps" / "anatomy.toml")
    (cell,) = grid.cells()
    assert cell["instability"] == (0, 3, 10) and cell["instability_of"] == ("none", "reinit", "random")
    assert {e.control_rounds for e in cell["experiments"] if e.control != "none"} == {(10,)}


def test_the_structured_grid_file_parses_and_validates():
    """docs/sweeps/structured.toml, notebook 08's paper-budget structured tickets."""
    (grid,) = load_grids(Path(__file__).resolve().parent.parent / "docs" / "sweeps" / "structured.toml")
    (cell,) = grid.cells()
    assert {e.structure for e in cell["experiments"]} == {"units"}
    assert {e.control for e in cell["experiments"]} == {"none", "reinit", "random"}
    assert {e.control_rounds for e in cell["experiments"] if e.control != "none"} == {(4, 8)}


def test_the_subset_grid_file_is_what_the_committed_subset_results_hold():
    """docs/sweeps/subset.toml made results/subset (issue 16): the file and the results agree."""
    root = Path(__file__).resolve().parent.parent
    cells = [c for g in load_grids(root / "docs" / "sweeps" / "subset.toml") for c in g.cells()]
    assert [c["preset"] for c in cells] == ["conv2-cifar10", "conv4-cifar10", "conv6-cifar10"]
    for cell in cells:
        summary = json.loads((root / "results" / "subset" / f"{cell['preset']}-subset-reset.json").read_text())
        assert (summary["profile"], summary["trials"], summary["rounds"]) == ("subset", [0, 1], 6)
        held = {(run["trial"], run["control"]): [r["round"] for r in run["rounds"]] for run in summary["runs"]}
        assert held == {(e.trial, e.control): e.wanted_rounds(6) for e in cell["experiments"]}
        assert summary["config"]["train"]["precision"] == "bf16"


def test_without_ray_the_sweep_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)   # `import ray` now fails as on a machine without it
    assert main(["sweep", "lenet-mnist", *GRID]) == 2
    err = capsys.readouterr().err
    assert err == 'lth: error: lth sweep needs Ray: pip install -e ".[sweep]" (or pip install "ray>=2.9").\n'
