"""The run store: one folder per experiment, named by a hash of its full config.

Owns: where runs live (`runs/` by default, `LTH_RUNS_DIR` or an explicit root overrides), atomic
writes (write to a temporary name, then rename), and safe reads (`torch.load(weights_only=True)`;
a corrupted file is an error that names the folder to delete). Layout of a run::

    runs/<hash>/config.json            the experiment, as JSON
                init.pt                initial weights (state_dict)
                rewind.pt              weights at the rewind iteration (strategy rewind:K only)
                round_003/mask.pt      the mask this round trains under
                round_003/trained.pt   weights after training (kept for round 0 and the latest two rounds)
                round_003/metrics.json written last: a round is finished iff this file exists
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch


class StoreError(RuntimeError):
    """A stored file is unreadable; the message names what to delete."""


def default_root() -> Path:
    return Path(os.environ.get("LTH_RUNS_DIR", "runs")).expanduser()


def config_dict(config: Any) -> dict:
    return asdict(config) if is_dataclass(config) else dict(config)


def config_hash(config: Any) -> str:
    text = json.dumps(config_dict(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class RunStore:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()

    def run_dir(self, config: Any) -> Path:
        """The run's folder (created, with config.json, on first use)."""
        folder = self.root / config_hash(config)
        if not (folder / "config.json").exists():
            folder.mkdir(parents=True, exist_ok=True)
            self._write(folder / "config.json", lambda tmp: tmp.write_text(
                json.dumps(config_dict(config), indent=2, sort_keys=True, default=str)))
        return folder

    @staticmethod
    def round_dir(run: Path, index: int) -> Path:
        return run / f"round_{index:03d}"

    def finished_rounds(self, run: Path) -> list[int]:
        return sorted(int(p.parent.name.split("_")[1]) for p in run.glob("round_*/metrics.json"))

    # ---- atomic writes, safe reads ---------------------------------------------------------------

    @staticmethod
    def _write(path: Path, write) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        write(tmp)
        os.replace(tmp, path)

    def save_tensors(self, path: Path, tensors: dict[str, torch.Tensor]) -> None:
        cpu = {k: v.detach().cpu() for k, v in tensors.items()}
        self._write(path, lambda tmp: torch.save(cpu, tmp))

    def load_tensors(self, path: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        try:
            return torch.load(path, map_location=device, weights_only=True)
        except Exception as e:
            raise StoreError(f"{path} is corrupted ({type(e).__name__}). Delete {path.parent} and run "
                             f"again: finished work before it is kept, this part is redone.") from e

    def save_json(self, path: Path, data: dict) -> None:
        self._write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1)))

    def load_json(self, path: Path) -> dict:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise StoreError(f"{path} is corrupted ({type(e).__name__}). Delete {path.parent} and run "
                             f"again: finished work before it is kept, this part is redone.") from e

    def load_metrics(self, run: Path) -> list[dict]:
        """Metrics of every finished round, in order."""
        return [self.load_json(self.round_dir(run, k) / "metrics.json") for k in self.finished_rounds(run)]

    def discard(self, path: Path) -> None:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
