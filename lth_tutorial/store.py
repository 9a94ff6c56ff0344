"""The run store: readable folders named by what changes a result, safe for concurrent processes.

Owns: where runs live (`runs/` by default, `LTH_RUNS_DIR` or an explicit root overrides), how a folder
is named (a readable prefix + a hash of the run's key), the store's schema version, per-run locks
(`filelock`), atomic writes (a unique temporary file in the target folder, then rename), and safe
reads (`torch.load(weights_only=True)`; a missing or corrupted file is an error that says what to do).

The caller (`lottery`) decides what a key holds; the store adds its schema version and the
environment that changes results (`environment()`: device, CPU threads, torch version, determinism),
so runs made under other settings never share a folder and never mix rounds. A layout::

    runs/lenet-mnist-quick/t0-dense-3f2a9c1b07/     config.json, init.pt, rewind_100.pt, round_000/
    runs/lenet-mnist-quick/t0-reset-8be01d44a2/     config.json, round_001/ ... (its round 0 is the dense run's)
    runs/lenet-mnist-quick/t0-reset-8be01d44a2/reinit/   a control, under the ticket it controls

Each round folder holds `mask.pt`, `trained.pt` (kept where later rounds need it) and `metrics.json`,
written last: a round is finished iff its metrics.json exists.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch
from filelock import FileLock, Timeout

SCHEMA = 2  # bump when a stored file's meaning changes; folders of another schema are never read


class StoreError(RuntimeError):
    """A stored file is missing or unreadable, or a folder belongs to another schema; says what to do."""


def default_root() -> Path:
    return Path(os.environ.get("LTH_RUNS_DIR", "runs")).expanduser()


def changed_fields(config: Any) -> Any:
    """A dataclass as a dict of only the fields that differ from their defaults (recursively).

    Keys built from this survive a new field with a default: existing runs keep their folders.
    """
    if not dataclasses.is_dataclass(config):
        return config
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.default is not dataclasses.MISSING and value == f.default:
            continue
        if f.default_factory is not dataclasses.MISSING and value == f.default_factory():
            continue
        out[f.name] = changed_fields(value)
    return out


def environment(device: torch.device | str, deterministic: bool | None = None) -> dict[str, Any]:
    """What, besides the experiment, changes a run's numbers: recorded in and keyed into every run.

    `deterministic` is the switch a run is made under (`training.set_deterministic`); None reads
    torch's current setting.
    """
    device = torch.device(device)
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    env: dict[str, Any] = {"torch": torch.__version__.split("+")[0], "deterministic": deterministic}
    if device.type == "cuda":
        env["device"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
        env["tf32"] = torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32
    else:
        env["device"] = "cpu"
        env["threads"] = torch.get_num_threads()   # CPU kernels split reductions by thread count
    return env


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]


class RunStore:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()

    def folder(self, key: dict, name: str, parent: Path | None = None, group: str = "runs") -> Path:
        """The run folder for `key` (created, with config.json, on first use).

        `name` is the readable part; `parent` nests a folder under another (a control under its
        ticket); otherwise it lives under `root/group`.
        """
        full = {"schema": SCHEMA, **key}
        folder = self.folder_path(key, name, parent, group)
        config = folder / "config.json"
        if config.exists():
            stored = self.load_json(config)
            if stored.get("schema") != SCHEMA:
                raise StoreError(f"{folder} was made by store schema {stored.get('schema')}; this version "
                                 f"reads schema {SCHEMA}. Delete it (or use another LTH_RUNS_DIR).")
            if key_hash(stored) != key_hash(full):
                raise StoreError(f"{folder} holds another run than this one (its config.json differs); "
                                 f"delete the folder and run again.")
        else:
            folder.mkdir(parents=True, exist_ok=True)
            self._write(config, lambda tmp: tmp.write_text(json.dumps(full, indent=2, sort_keys=True,
                                                                      default=str)))
        return folder

    def folder_path(self, key: dict, name: str, parent: Path | None = None, group: str = "runs") -> Path:
        """Where `folder` puts the run for `key`, without creating anything (a reader that only looks)."""
        base = parent if parent is not None else self.root / group
        return base / (name if parent is not None else f"{name}-{key_hash({'schema': SCHEMA, **key})}")

    @staticmethod
    def round_dir(run: Path, index: int) -> Path:
        return run / f"round_{index:03d}"

    def finished_rounds(self, run: Path) -> list[int]:
        return sorted(int(p.parent.name.split("_")[1]) for p in run.glob("round_*/metrics.json"))

    # ---- locks ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, run: Path) -> Iterator[None]:
        """Hold the run's lock: another process working on it waits here, then finds its rounds done."""
        lock = FileLock(str(run / ".lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            print(f"waiting for another process working on {run} ...", file=sys.stderr, flush=True)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    # ---- atomic writes, safe reads ---------------------------------------------------------------

    @staticmethod
    def _write(path: Path, write) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        tmp = Path(name)
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _unreadable(path: Path, error: Exception) -> StoreError:
        if isinstance(error, FileNotFoundError) or not path.exists():
            return StoreError(f"{path} is missing (deleted, or never written by an interrupted run). Delete "
                              f"{path.parent} and run again: finished work before it is kept, this part is redone.")
        return StoreError(f"{path} is corrupted ({type(error).__name__}). Delete {path.parent} and run "
                          f"again: finished work before it is kept, this part is redone.")

    def save_tensors(self, path: Path, tensors: dict[str, torch.Tensor]) -> None:
        cpu = {k: v.detach().cpu() for k, v in tensors.items()}
        self._write(path, lambda tmp: torch.save(cpu, tmp))

    def load_tensors(self, path: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        try:
            return torch.load(path, map_location=device, weights_only=True)
        except Exception as e:
            raise self._unreadable(path, e) from e

    def save_json(self, path: Path, data: dict) -> None:
        self._write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1)))

    def load_json(self, path: Path) -> dict:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise self._unreadable(path, e) from e

    def load_metrics(self, run: Path, rounds: list[int] | None = None) -> list[dict]:
        """Metrics of the finished rounds (or of `rounds`), in order."""
        chosen = self.finished_rounds(run) if rounds is None else rounds
        return [self.load_json(self.round_dir(run, k) / "metrics.json") for k in chosen]

    def discard(self, path: Path) -> None:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
