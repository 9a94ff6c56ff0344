"""Sweeps: grids of presets x profiles x strategies x trials x controls, run as one Ray task graph.

Owns `run_sweep`, the driver of a list of `grids.Grid`: it plans the graph against the run store (finished rounds are read, never
retrained), runs it on Ray (locally with no setup, or on a cluster at `address`), writes every round
into the store as it arrives, and returns the same summaries `runner.run_grid` gives. Ticket round k+1
depends on round k and a control's round k on the ticket's round-k mask; everything else runs at once.
Weights and masks travel between tasks as object references and the datasets are put in the object
store once, so only the driver needs the data files and the store (no shared disk). A worker that dies
is retried by Ray (`RETRIES`); a task that fails for a real reason stops its chain, named, and the rest
of the grid still finishes. The tasks themselves are `sweep_tasks`.
"""
from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import sweep_tasks as tasks
from .data import load_splits
from .lottery import Experiment, RunFolders, run_folders
from .grids import Grid, load_grids
from .instability import Instability, analysis_folder
from .instability import line as instability_line
from .reports import round_line
from .rounds import initial_weights
from .runner import summary_of
from .store import RunStore

RETRIES = 3  # a task whose worker process or node dies is run again, up to this many times
INSTALL = 'lth sweep needs Ray: pip install -e ".[sweep]" (or pip install "ray>=2.9").'


@dataclass
class SweepResult:
    """What a sweep did: the summaries of its finished cells, what it trained and found, what failed."""

    summaries: list[dict[str, Any]]
    trained: int = 0                      # rounds trained by this call
    found: int = 0                        # rounds already in the store
    failures: list[str] = field(default_factory=list)
    skipped: int = 0                      # rounds not run because an earlier one of their chain failed
    nodes: Counter = field(default_factory=Counter)   # Ray node id -> rounds trained there
    provenance: dict[str, Any] = field(default_factory=dict)


class RayMissing(ImportError):
    pass


def _ray():
    try:
        import ray
    except ImportError:
        raise RayMissing(INSTALL) from None
    return ray


def run_sweep(grids: list[Grid], *, store: RunStore | None = None, address: str | None = None,
              num_cpus: int | None = None, cpus_per_task: int = 1, gpus_per_task: float = 0.0,
              curve_points: int = 0, progress: bool = True) -> SweepResult:
    """Run every grid as one Ray task graph; return its summaries (as `run_grid` would give them).

    `cpus_per_task` is each task's Ray CPUs and torch threads (part of the run key, as the thread
    count of `lth run` is); `gpus_per_task` > 0 trains on CUDA, fractions packing several tasks on a
    GPU. Ray starts locally (`num_cpus` of this machine, default all) unless `address` names a cluster.
    """
    if cpus_per_task < 1 or gpus_per_task < 0:
        raise ValueError(f"--cpus-per-task must be >= 1 and --gpus-per-task >= 0; got {cpus_per_task}, {gpus_per_task}.")
    cells = [cell for grid in grids for cell in grid.cells()]
    if not cells:
        raise ValueError("the sweep has nothing to run (no presets).")
    ray = _ray()
    store = store or RunStore()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                 logging_level="ERROR", log_to_driver=True)
    try:
        return _Driver(ray, store, cells, cpus_per_task, gpus_per_task, curve_points, progress).run()
    finally:
        if started_here:
            ray.shutdown()


@dataclass
class _Node:
    """One round of one run in the graph (or a rewind replay): its task's refs, or none when stored."""

    exp: Experiment
    kind: str                              # dense | ticket | control | rewind
    folder: Path
    index: int
    upstream: tuple["_Node", ...] = ()
    refs: dict[str, Any] = field(default_factory=dict)
    save: tuple[str, ...] = ("mask", "trained")   # the outputs written into the round's folder
    rewind_file: Path | None = None       # where a snapshot it gives is written
    failed: bool = False

    @property
    def head(self) -> str:
        exp = self.exp
        run = exp.method if exp.method != "magnitude" else ("oneshot" if exp.oneshot else exp.strategy)
        return f"{exp.preset} ({exp.profile}, {run}{', units' if exp.structure != 'weights' else ''})"

    @property
    def label(self) -> str:
        who = {"dense": "dense", "rewind": "rewind replay", "ticket": "ticket"}.get(self.kind, self.exp.control)
        return f"{self.head} trial {self.exp.trial} {who}"


class _Driver:
    def __init__(self, ray, store, cells, cpus, gpus, curve_points, progress):
        self.ray, self.store, self.cells, self.curve_points = ray, store, cells, curve_points
        self.device = "cuda" if gpus > 0 else "cpu"
        self.threads, self.gpus = cpus, gpus
        self.options = dict(num_cpus=cpus, num_gpus=gpus, max_retries=RETRIES, retry_exceptions=False)
        self.show = progress
        self.result = SweepResult([])
        self.pending: dict[Any, _Node] = {}          # the ref whose arrival finishes a node -> the node
        self.nodes: dict[tuple[Path, int], _Node] = {}
        self.rewinds: dict[Path, Any] = {}           # rewind snapshot file -> the ref that will hold it
        self.loaded: dict[Path, Any] = {}
        self.data: dict[Any, list] = {}
        self.remote = {name: ray.remote(getattr(tasks, name)) for name in
                       ("probe", "dense_task", "ticket_task", "control_task", "rewind_task", "instability_task")}

    def _task(self, name: str, returns: int, *args):
        return self.remote[name].options(**self.options, num_returns=returns).remote(*args)

    def _stored(self, path: Path):
        """A stored tensor file, put in the object store once."""
        if path not in self.loaded:
            self.loaded[path] = self.ray.put(self.store.load_tensors(path))
        return self.loaded[path]

    def _check_resources(self) -> None:
        have = self.ray.cluster_resources()
        for name, need in (("CPU", self.threads), ("GPU", self.gpus)):
            if need > have.get(name, 0):
                raise ValueError(f"each task asks for {need:g} {name}(s), but the Ray cluster has "
                                 f"{have.get(name, 0):g}; lower --{name.lower()}s-per-task or add nodes.")

    def run(self) -> SweepResult:
        self._check_resources()
        probe = self._task("probe", 1, self.device, self.threads)
        self._data(self.cells[0]["experiments"][0])  # loaded here while the probe's worker starts
        self.env, self.result.provenance = self.ray.get(probe)
        runs = [(cell, exp, run_folders(exp, self.store, env=self.env)) for cell in self.cells
                for exp in cell["experiments"]]
        analyses = [(cell, a, *analysis_folder(a, self.store, env=self.env)) for cell in self.cells
                    for a in _analyses(cell)]
        folders = sorted({p for _, _, f in runs for p in (f.dense, f.ticket, f.control) if p is not None}
                         | {folder for _, _, folder, _ in analyses})
        with contextlib.ExitStack() as locks:
            for folder in folders:  # one order for every process: two sweeps never wait on each other in a cycle
                locks.enter_context(self.store.lock(folder))
            for cell, exp, run in runs:
                self._plan(exp, run, cell["rounds"])
            for _, analysis, folder, run in analyses:
                self._analysis(analysis, folder, run)
            self._drain()
        summaries = (self._summary(cell, [(e, f) for c, e, f in runs if c is cell],
                                   [folder for c, _, folder, _ in analyses if c is cell]) for cell in self.cells)
        self.result.summaries = [s for s in summaries if s is not None]
        return self.result

    # ---- planning: one node per round, a task only for a round the store lacks -------------------

    def _data(self, exp: Experiment) -> list:
        """The experiment's splits in the object store (once per data config), wrapped for `sweep_tasks`."""
        if exp.data not in self.data:
            self.data[exp.data] = [self.ray.put(tasks.cpu_splits(load_splits(exp.data)))]
        return self.data[exp.data]

    def _ref(self, node: _Node, what: str):
        """A round's mask or trained weights: its task's output, or the stored file."""
        if what in node.refs:
            return node.refs[what]
        return self._stored(RunStore.round_dir(node.folder, node.index) / f"{what}.pt")

    def _add(self, node: _Node, rounds_key: tuple[Path, int] | None) -> _Node:
        if rounds_key is not None:
            self.nodes[rounds_key] = node
        if self._done(node):
            self.result.found += 1
        return node

    def _submit(self, node: _Node, name: str, *args) -> None:
        mask, trained, metrics, *snapshot = self._task(name, 4 if name == "dense_task" else 3, *args)
        node.refs = {"mask": mask, "trained": trained, "metrics": metrics}
        if snapshot and node.rewind_file is not None:
            node.refs["rewind"] = self.rewinds[node.rewind_file] = snapshot[0]
        self.pending[metrics] = node

    def _plan(self, exp: Experiment, run: RunFolders, rounds: int) -> None:
        wanted = exp.wanted_rounds(rounds)
        if exp.control != "none":
            for index in wanted:
                self._control_round(exp, run, index, last=index == wanted[-1])
            return
        previous = self._dense(exp, run)
        init, rewind = self._stored(run.dense / "init.pt"), self._rewind(exp, run)
        for index in wanted[1:]:
            previous = self._ticket_round(exp, run, index, previous, init, rewind)

    def _dense(self, exp: Experiment, run: RunFolders) -> _Node:
        if (run.dense, 0) in self.nodes:
            return self.nodes[(run.dense, 0)]
        if not (run.dense / "init.pt").exists():
            self.store.save_tensors(run.dense / "init.pt", initial_weights(exp))
        k = exp.rewind_iteration
        node = self._add(_Node(exp, "dense", run.dense, 0), (run.dense, 0))
        if not self._done(node):
            if k is not None and not (run.dense / f"rewind_{k}.pt").exists():
                node.rewind_file = run.dense / f"rewind_{k}.pt"
            self._submit(node, "dense_task", exp, self.device, self.threads, self.env, self._data(exp),
                         self._stored(run.dense / "init.pt"), k if node.rewind_file else None)
        return node

    def _rewind(self, exp: Experiment, run: RunFolders):
        k = exp.rewind_iteration
        if k is None:
            return None
        path = run.dense / f"rewind_{k}.pt"
        if path in self.rewinds:
            return self.rewinds[path]
        if path.exists():
            return self._stored(path)
        # round 0 was trained (or is being trained) without this snapshot: replay its first k iterations
        ref = self._task("rewind_task", 1, exp, self.device, self.threads, self.env, self._data(exp),
                         self._stored(run.dense / "init.pt"))
        self.rewinds[path] = ref
        self.pending[ref] = _Node(exp, "rewind", run.dense, 0, save=(), rewind_file=path)
        return ref

    def _done(self, node: _Node) -> bool:
        return (self._metrics_file(node)).exists()

    @staticmethod
    def _metrics_file(node: _Node) -> Path:
        if node.kind == "instability":  # a branch folder of its own, not a round's
            return node.folder / "metrics.json"
        return RunStore.round_dir(node.folder, node.index) / "metrics.json"

    def _analysis(self, analysis: Instability, folder: Path, run: RunFolders) -> None:
        """An instability analysis after its ticket's round (its mask) and the dense run (init, W_k)."""
        exp, index = analysis.experiment.ticket(), analysis.round
        source = self.nodes[(run.dense, 0) if index == 0 else (run.ticket, index)]
        node = self._add(_Node(analysis.experiment, "instability", folder, index, (source,), save=()), None)
        if self._done(node):
            return
        mask = self._ref(source, "mask") if index else None
        metrics = self._task("instability_task", 1, analysis, self.device, self.threads, self.env, self._data(exp),
                             self._stored(run.dense / "init.pt"), self._rewind(exp, run), mask)
        node.refs = {"metrics": metrics}
        self.pending[metrics] = node

    def _ticket_round(self, exp, run, index, previous: _Node, init, rewind) -> _Node:
        node = self._add(_Node(exp, "ticket", run.ticket, index, (previous,)), (run.ticket, index))
        if self._done(node):
            return node
        trained_previous = self._ref(previous, "trained")
        start = {"reset": init, "continue": trained_previous}.get(exp.strategy, rewind)
        mask_previous = None if exp.oneshot else self._ref(previous, "mask")
        dense = self._ref(self.nodes[(run.dense, 0)], "trained") if exp.oneshot else None
        self._submit(node, "ticket_task", exp, index, self.device, self.threads, self.env, self._data(exp),
                     start, trained_previous, mask_previous, dense)
        return node

    def _control_round(self, exp, run, index, last: bool) -> None:
        source = self.nodes[(run.ticket, index)]
        # the serial runner keeps a control's last trained weights only; nothing reads the others
        node = self._add(_Node(exp, "control", run.own, index, (source,), save=("mask", "trained") if last
                               else ("mask",)), None)
        if not self._done(node):
            self._submit(node, "control_task", exp, index, self.device, self.threads, self.env, self._data(exp),
                         self._ref(source, "mask"), self._stored(run.dense / "init.pt"))

    # ---- running: write each round into the store as it arrives ----------------------------------

    def _drain(self) -> None:
        from tqdm.auto import tqdm

        rounds = sum(node.kind != "rewind" for node in self.pending.values())
        bar = tqdm(total=rounds, desc="sweep", unit="round", disable=not self.show, leave=False)
        while self.pending:
            ready, _ = self.ray.wait(list(self.pending), num_returns=1)
            node = self.pending.pop(ready[0])
            try:
                value = self.ray.get(ready[0])
                outputs = {what: self.ray.get(node.refs[what]) for what in node.save}
                snapshot = self.ray.get(node.refs["rewind"]) if "rewind" in node.refs else None
            except Exception as error:  # a task's own error, or its worker lost more than RETRIES times
                self._failed(node, error)
                bar.update(node.kind != "rewind")
                continue
            if node.kind == "rewind":
                self.store.save_tensors(node.rewind_file, value)
                continue
            if node.kind == "instability":
                self.store.save_json(node.folder / "metrics.json", value)
                self.result.trained += 1
                self.result.nodes[value["ray_node"]] += 1
                bar.update(1)
                if self.show:
                    tqdm.write(f"{node.head}: instability {instability_line(value)}")
                continue
            folder = RunStore.round_dir(node.folder, node.index)
            for what, tensors in outputs.items():
                self.store.save_tensors(folder / f"{what}.pt", tensors)
            if snapshot is not None:
                self.store.save_tensors(node.rewind_file, snapshot)
            self.store.save_json(folder / "metrics.json", value)  # last: marks the round finished
            if node.kind == "ticket" and node.index >= 3:  # as the serial runner: the last two are kept
                self.store.discard(RunStore.round_dir(node.folder, node.index - 2) / "trained.pt")
            self.result.trained += 1
            self.result.nodes[value["ray_node"]] += 1
            bar.update(1)
            if self.show:
                who = "ticket" if node.kind in ("dense", "ticket") else node.exp.control
                tqdm.write(f"{node.head}: {round_line(node.exp.trial, who, value)}")
        bar.close()

    def _failed(self, node: _Node, error: Exception) -> None:
        node.failed = True
        if self._upstream_failed(node):
            self.result.skipped += 1
            return
        cause = getattr(error, "cause", None) or error
        self.result.failures.append(f"{node.label} round {node.index} failed: {type(cause).__name__}: {cause}")

    def _upstream_failed(self, node: _Node) -> bool:
        """Whether an earlier round of its chain failed (Ray fails the dependents of a failed task too),
        whether or not the driver has taken that failure from `pending` yet."""
        for up in node.upstream:
            if up.failed:
                return True
            ref = up.refs.get("metrics")
            if ref is not None and ref in self.pending and self.ray.wait([ref], timeout=0)[0]:
                try:
                    self.ray.get(ref)
                except Exception:
                    return True
            if self._upstream_failed(up):
                return True
        return False

    def _summary(self, cell, runs, analyses: list[Path]) -> dict[str, Any] | None:
        """The cell's summary, read from the store as `run_grid` reads it (with its instability analyses
        under "instability"); None if a round or an analysis is missing."""
        found = []
        for exp, run in runs:
            wanted = exp.wanted_rounds(cell["rounds"])
            if not all((run.round(k) / "metrics.json").exists() for k in wanted):
                return None
            found.append((exp, [self.store.load_json(run.round(k) / "metrics.json") for k in wanted]))
        if not all((folder / "metrics.json").exists() for folder in analyses):
            return None
        summary = summary_of(found, cell["rounds"], cell["controls"], self.curve_points)
        if analyses:
            summary["instability"] = [self.store.load_json(folder / "metrics.json") for folder in analyses]
        return summary


def _analyses(cell: dict[str, Any]) -> list[Instability]:
    """The cell's instability analyses: each trial's ticket (and controls asked for) at each round."""
    tickets = [exp for exp in cell["experiments"] if exp.control == "none"]
    return [Instability(exp if of == "none" else replace(exp, control=of), index)
            for exp in tickets for index in cell["instability"] for of in cell["instability_of"]
            if index > 0 or of == "none"]


__all__ = ["run_sweep", "SweepResult", "Grid", "load_grids", "RETRIES", "RayMissing"]
