"""What a sweep's Ray tasks run: `rounds`' pure functions, inside a worker, on tensors passed by reference.

Owns the worker side of a sweep: preparing a worker as the sweep's run key says (torch threads,
determinism, device) and refusing to train on a node whose environment differs from it; the datasets,
fetched from Ray's object store once per worker process; and one function per kind of task (dense
round 0, a ticket round, a control round, a rewind replay). Each returns plain CPU tensors and metrics;
only the driver (`sweep`) writes files. Imports no Ray at module level except inside the functions
that need it, so the package imports without the `sweep` extra.
"""
from __future__ import annotations

from typing import Any

import torch

from .data import Split, Splits
from .lottery import Experiment
from .masks import Mask
from .rounds import Weights, control_mask, control_start, dense_mask, rewind_snapshot, ticket_mask, train_round
from .store import environment
from .training import set_deterministic


class EnvironmentMismatch(RuntimeError):
    """A node would make rounds under other settings than the sweep's run key says."""


def on_device(splits: Splits, device: str) -> Splits:
    def move(split: Split) -> Split:
        black = None if split.black is None else split.black.to(device)
        return Split(split.images.to(device), split.labels.to(device), black)

    return Splits(move(splits.train), move(splits.validation), move(splits.test), splits.config)


def cpu_splits(splits: Splits) -> Splits:
    return on_device(splits, "cpu")


# One worker process trains many rounds of the same data: fetch and move it once (keyed by its object id).
_DATA: dict[tuple[str, str], Splits] = {}


def _prepare(device: str, threads: int, expected: dict[str, Any] | None) -> None:
    if device == "cpu":
        torch.set_num_threads(threads)
    set_deterministic(bool(expected["deterministic"]) if expected else True)
    if expected is not None:
        found = environment(device, expected["deterministic"])
        if found != expected:
            import ray

            differ = {k: (found.get(k), expected.get(k)) for k in sorted(set(found) | set(expected))
                      if found.get(k) != expected.get(k)}
            raise EnvironmentMismatch(f"node {ray.get_runtime_context().get_node_id()[:12]} makes runs under "
                                      f"{differ} (found, expected by the sweep's run key); install the same "
                                      f"torch on every node and give every task the same resources.")


def _splits(data: list, device: str) -> Splits:
    import ray

    ref = data[0]  # wrapped in a list so Ray hands over the reference, not a fresh copy per task
    key = (ref.hex(), device)
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = on_device(ray.get(ref), device)
    return _DATA[key]


def _done(metrics: dict[str, Any]) -> dict[str, Any]:
    import ray

    return {**metrics, "ray_node": ray.get_runtime_context().get_node_id()}


def _cpu(tensors: Weights | None) -> Weights | None:
    return None if tensors is None else {k: v.detach().cpu() for k, v in tensors.items()}


def probe(device: str, threads: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The environment (run key) and provenance of a task with these resources, read inside one."""
    from .reports import provenance

    _prepare(device, threads, None)
    return environment(device, True), provenance(device)


def dense_task(exp: Experiment, device: str, threads: int, env: dict, data: list, init: Weights,
               snapshot_at: int | None):
    """Round 0: (mask, trained, metrics, snapshot at `snapshot_at` or None)."""
    _prepare(device, threads, env)
    splits = _splits(data, device)
    mask = dense_mask(exp, init)
    result = train_round(exp, 0, init, mask, splits, snapshot_at=snapshot_at)
    return mask, _cpu(result.weights), _done(result.metrics), _cpu(result.snapshot)


def ticket_task(exp: Experiment, index: int, device: str, threads: int, env: dict, data: list, start: Weights,
                trained_previous: Weights, mask_previous: Mask | None, trained_dense: Weights | None):
    """Ticket round `index` >= 1: prune the previous round, start as the strategy says, train."""
    _prepare(device, threads, env)
    splits = _splits(data, device)
    start = {k: v.to(device) for k, v in start.items()}
    mask, cost = ticket_mask(exp, index, trained_previous, mask_previous, trained_dense, init=start, splits=splits)
    result = train_round(exp, index, start, mask, splits, start_iteration=exp.start_iteration, cost=cost)
    return _cpu(mask), _cpu(result.weights), _done(result.metrics)


def control_task(exp: Experiment, index: int, device: str, threads: int, env: dict, data: list,
                 ticket_mask_of_round: Mask, init: Weights):
    """A control's round `index`: its mask from the ticket's (or the method's inverted scores), its start
    (a fresh init, or the ticket's `init`), the ticket's data order."""
    _prepare(device, threads, env)
    splits = _splits(data, device)
    init = {k: v.to(device) for k, v in init.items()}
    mask = control_mask(exp, index, ticket_mask_of_round, init, splits)
    result = train_round(exp, index, control_start(exp, index, init), mask, splits,
                         start_iteration=exp.start_iteration)
    return _cpu(mask), _cpu(result.weights), _done(result.metrics)


def rewind_task(exp: Experiment, device: str, threads: int, env: dict, data: list, init: Weights) -> Weights:
    """The rewind snapshot of a dense run trained earlier without it (a replay of its first K iterations)."""
    _prepare(device, threads, env)
    return _cpu(rewind_snapshot(exp, init, _splits(data, device)))


def instability_task(analysis, device: str, threads: int, env: dict, data: list, init: Weights,
                     rewind: Weights | None, ticket_mask_of_round: Mask | None) -> dict[str, Any]:
    """An instability analysis: its start and mask from the ticket's, both copies trained, the paths."""
    from .instability import analyze, instability_inputs

    _prepare(device, threads, env)
    splits = _splits(data, device)
    move = lambda t: None if t is None else {k: v.to(device) for k, v in t.items()}  # noqa: E731
    start, mask = instability_inputs(analysis, move(init), move(rewind), move(ticket_mask_of_round), splits)
    return _done(analyze(analysis, start, mask, splits))
