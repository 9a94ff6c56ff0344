"""A finished round of a stored run, written so that plain PyTorch (or any safetensors reader) can use it.

Owns: finding a finished round in the run store without creating anything (`find_round`), what an
export holds and what its metadata says (`ticket_metadata`), writing it (`export_round`), the hook that
exports any module the same way (`export_compact`: a structured ticket's compact model), and
`load_ticket`, the way back into this package. Files, by `--format`:

  safetensors  ticket.safetensors   the round's trained state_dict under its own names, each mask as
                                    `<name>.mask` (bool), and the metadata in the header;
  prune        model.pt2            the model reparametrized by torch.nn.utils.prune (weight_orig,
                                    weight_mask) in eval mode, through torch.export with a dynamic batch
                                    dimension: `torch.export.load(path).module()` runs it without this
                                    package; the metadata rides along as the extra file ticket.json;
               prune_state_dict.pt  that module's state_dict, for `torch.load(..., weights_only=True)`.
  compact      compact.pt2 and compact.safetensors: a structured ticket (`--structure units`) as the genuinely
               smaller dense network (`structured.compact_model`), exported the same way;
  all          safetensors and prune, and compact for a structured ticket.

The weights are the round's `trained.pt`: the weights at the end of training (iteration T). Their test
accuracy is the round's `final_test_accuracy`, and that is the accuracy recorded (the early-stop
iteration's weights are not stored). Evaluated on the same device with the same threads and batches
(`training.evaluate`), an export gives that accuracy back exactly.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from . import __version__
from .data import FULL_SIZES, NORMALIZATION
from .lottery import Experiment, made_with, run_folders
from .masks import Mask
from .models import INPUT_SHAPES, MODELS, create_model
from .sparse_inference import prune_model
from .store import RunStore
from .structured import compact_model

FORMATS = {"safetensors": ("ticket.safetensors",), "prune": ("model.pt2", "prune_state_dict.pt"),
           "compact": ("compact.pt2", "compact.safetensors"),
           "all": ("ticket.safetensors", "model.pt2", "prune_state_dict.pt", "compact.pt2", "compact.safetensors")}
METADATA_FILE = "ticket.json"   # inside model.pt2 (torch.export's extra_files)


class ExportError(ValueError):
    """A round that cannot be exported, or a file that is not a ticket; one line that names the fix."""


class _Lookup(RunStore):
    """The run store, read only: looking up a run that was never made must not create its folder."""

    def folder(self, key: dict, name: str, parent: Path | None = None, group: str = "runs") -> Path:
        path = self.folder_path(key, name, parent, group)
        return super().folder(key, name, parent, group) if (path / "config.json").exists() else path


@dataclass(frozen=True)
class StoredRound:
    """A finished round with its trained weights in the store, and what it was made with."""

    experiment: Experiment
    index: int
    folder: Path
    metrics: dict[str, Any]
    made_with: dict[str, Any]

    def weights(self) -> dict[str, torch.Tensor]:
        return RunStore().load_tensors(self.folder / "trained.pt")

    def mask(self) -> Mask:
        return Mask(RunStore().load_tensors(self.folder / "mask.pt"))


def _who(e: Experiment) -> str:
    return (f"{e.preset} ({e.profile} profile) trial {e.trial}, strategy {e.strategy}"
            + (f", method {e.method}" if e.method != "magnitude" else "")
            + (f", structure {e.structure}" if e.structure != "weights" else "")
            + (f", control {e.control}" if e.control != "none" else "") + f", {e.train.iterations:,} iterations")


def _env_text(env: dict[str, Any]) -> str:
    threads = f" {env['threads']} thread(s)" if "threads" in env else ""
    return f"{env['device']}{threads}, torch {env['torch']}"


def _others(store: RunStore, experiment: Experiment, folder: Path) -> str:
    """What the store holds under the same readable name: runs made with other settings are other runs."""
    made, name = set(), folder.name.rsplit("-", 1)[0]
    for config in (store.root / experiment.group).glob(f"{name}-{'?' * 10}/config.json"):   # name-<key hash>
        made.add(_env_text(json.loads(config.read_text()).get("made_with", {"device": "?", "torch": "?"})))
    if not made:
        return ""
    return f" (the store's {name} runs were made with {'; '.join(sorted(made))})"


def find_round(experiment: Experiment, index: int, store: RunStore | None = None,
               device: str | torch.device = "cpu", threads: int | None = None) -> StoredRound:
    """Round `index` of `experiment` as the store holds it, for runs made on `device` with `threads` CPU
    threads (default: this process's); ExportError, saying what to do, where it is not there to export."""
    store = store or RunStore()
    env = made_with(device)
    if threads is not None and "threads" in env:
        env["threads"] = threads
    folders = run_folders(experiment, _Lookup(store.root), env=env)
    who, made = _who(experiment), _env_text(env)
    if experiment.control != "none" and index == 0:
        raise ExportError("a control starts at round 1 (its round 0 is the ticket's dense network); export "
                          "round >= 1, or the ticket's round 0 without --control.")
    run = folders.dense if index == 0 else folders.own
    if not (run / "config.json").exists():
        raise ExportError(f"no run of {who} made with {made} in {store.root}{_others(store, experiment, run)}: "
                          f"run it first (`lth run` with the same selectors and --rounds {index}), or give the "
                          f"--threads and --device it was made with.")
    finished = [k for k in folders.finished_rounds() if k > 0 or experiment.control == "none"]
    if index not in finished:
        have = ("none yet" if not finished else f"rounds {finished[0]}..{finished[-1]}"
                if finished == list(range(finished[0], finished[-1] + 1)) else f"rounds {', '.join(map(str, finished))}")
        raise ExportError(f"round {index} of {who} is not finished (finished: {have}); train it first (`lth run` "
                          f"with the same selectors and --rounds {index}), or export a finished round.")
    folder = folders.round(index)
    if not (folder / "trained.pt").exists():
        kept = [k for k in finished if (folders.round(k) / "trained.pt").exists()]
        raise ExportError(f"round {index}'s trained weights were not kept (a run keeps those of its last rounds "
                          f"only; kept: rounds {', '.join(map(str, kept))}); export one of those, or run the same "
                          f"selectors with --rounds {index} in a fresh --store.")
    config = store.load_json(folder.parent / "config.json")
    return StoredRound(experiment, index, folder, store.load_json(folder / "metrics.json"), config["made_with"])


def ticket_metadata(stored: StoredRound) -> dict[str, str]:
    """What an export says about itself (strings: safetensors headers hold nothing else)."""
    e, m = stored.experiment, stored.metrics
    mean, std = NORMALIZATION[e.data.dataset]
    return {
        "format": "lth-ticket 1", "preset": e.preset, "profile": e.profile, "trial": str(e.trial),
        "strategy": e.strategy, "control": e.control, "method": e.method, "structure": e.structure,
        "round": str(stored.index),
        "density": repr(m["density"]), "architecture": e.model, "architecture_name": MODELS[e.model][2],
        "dropout": repr(e.dropout), "input_shape": json.dumps(INPUT_SHAPES[e.data.dataset]),
        "input_normalization": json.dumps({"mean": mean, "std": std, "of": "pixels scaled to [0, 1]"}),
        "dataset": e.data.dataset, "test_examples": str(e.data.test_examples or FULL_SIZES[(e.data.dataset, "test")]),
        "weights": f"trained: the end of training, iteration {e.train.iterations}",
        "final_test_accuracy": repr(m["final_test_accuracy"]),
        # a bf16 round's accuracy was measured in bf16: an fp32 evaluation of these weights comes close, not exact
        **({"precision": e.train.precision} if e.train.precision != "fp32" else {}),
        "made_with": json.dumps(stored.made_with, sort_keys=True),
        "run": f"{stored.folder.parent.parent.name}/{stored.folder.parent.name}/{stored.folder.name}",
        "torch": torch.__version__, "lth_tutorial": __version__,
    }


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """A whole file or none: written beside its target, then renamed over it."""
    # the temporary keeps the suffix: torch.export.save warns about an archive whose name lacks .pt2
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(handle)
    try:
        write(Path(name))
        os.replace(name, path)
    finally:
        Path(name).unlink(missing_ok=True)


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _atomic(path, lambda tmp: save_file(cpu, str(tmp), metadata=metadata))


def _save_program(module: nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, str]) -> None:
    """`module` in eval mode through torch.export, batch dimension dynamic, metadata as an extra file."""
    with warnings.catch_warnings():
        # prune's forward pre-hook assigns module.weight = weight_orig * weight_mask at every call; export
        # warns that the attribute is not a buffer, but records the product in the graph, which is the point
        warnings.filterwarnings("ignore", message=r".*(was|were) assigned during export")
        program = torch.export.export(module.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    _atomic(path, lambda tmp: torch.export.save(program, tmp, extra_files={METADATA_FILE: json.dumps(metadata)}))


def ticket_model(stored: StoredRound) -> nn.Module:
    """The round's model with its trained weights (seeded build: leaves the global RNG alone)."""
    model = create_model(stored.experiment.model, seed=0, dropout=stored.experiment.dropout)
    model.load_state_dict(stored.weights())
    return model.eval()


def export_round(stored: StoredRound, out: str | Path, format: str = "all") -> list[Path]:
    """Write `stored` into folder `out` in `format` (see FORMATS); return the files written."""
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}.")
    structured = stored.experiment.structure == "units"
    if format == "compact" and not structured:
        raise ExportError("--format compact needs a structured ticket (whole neurons or filters removed); export "
                          "a run made with --structure units, or use --format all.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metadata, model, mask = ticket_metadata(stored), ticket_model(stored), stored.mask()
    written = []
    if "ticket.safetensors" in FORMATS[format]:
        tensors = {**model.state_dict(), **{f"{name}.mask": m for name, m in mask.items()}}
        _save_safetensors(tensors, out / "ticket.safetensors", metadata)
        written.append(out / "ticket.safetensors")
    if "model.pt2" in FORMATS[format]:
        pruned = prune_model(model, mask)
        example = torch.zeros(2, *INPUT_SHAPES[stored.experiment.data.dataset])  # 2: export keeps batch 1 general
        _save_program(pruned, example, out / "model.pt2", metadata)
        _atomic(out / "prune_state_dict.pt", lambda tmp: torch.save(pruned.state_dict(), tmp))
        written += [out / "model.pt2", out / "prune_state_dict.pt"]
    if "compact.pt2" in FORMATS[format] and structured:
        compact = compact_model(stored.experiment.model, model.state_dict(), mask, stored.experiment.dropout).eval()
        example = torch.zeros(2, *INPUT_SHAPES[stored.experiment.data.dataset])
        written += export_compact(compact, example, out, {**metadata, "widths": compact.description})
    return written


def export_compact(module: nn.Module, example: torch.Tensor, out: str | Path,
                   metadata: dict[str, str]) -> list[Path]:
    """Export a compact model (what `structured.compact_model` builds for a structured ticket, or any
    module) as a ticket is exported: compact.pt2 (torch.export, dynamic batch, `metadata` inside) and
    compact.safetensors (its state_dict, `metadata` in the header). `example` is one input batch."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "lth-ticket 1", "representation": "compact", **metadata}
    _save_program(module, example, out / "compact.pt2", metadata)
    _save_safetensors(module.state_dict(), out / "compact.safetensors", metadata)
    return [out / "compact.pt2", out / "compact.safetensors"]


# ---- reading an export back ----------------------------------------------------------------------------


@dataclass
class Ticket:
    """An exported ticket: a module to call (eval mode), its mask, and the metadata as stored (strings)."""

    model: nn.Module
    mask: Mask
    metadata: dict[str, str]


class ExportedModule(nn.Module):
    """A torch.export program as a module. It was captured in eval mode and its own module refuses
    train()/eval(), so here they only set the flag (and `training.evaluate` can run it)."""

    def __init__(self, program: nn.Module):
        super().__init__()
        self.program = program

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)

    def train(self, mode: bool = True) -> "ExportedModule":
        self.training = mode
        return self


def load_ticket(path: str | Path, device: str | torch.device = "cpu") -> Ticket:
    """A ticket from `ticket.safetensors` (rebuilt as this package's model, on `device`), `model.pt2`
    (torch.export's program; CPU, where it was exported) or a folder `lth export` wrote (its safetensors
    file first)."""
    path = Path(path)
    if path.is_dir():
        found = [path / n for n in ("ticket.safetensors", "model.pt2") if (path / n).exists()]
        if not found:
            raise ExportError(f"{path} holds no ticket.safetensors or model.pt2; give a folder `lth export` wrote.")
        path = found[0]
    if not path.exists():
        raise ExportError(f"{path} does not exist; give ticket.safetensors, model.pt2 or their folder.")
    if path.suffix == ".pt2":
        if torch.device(device).type != "cpu":
            raise ExportError(f"{path.name} was exported on the CPU and runs there; load ticket.safetensors for {device}.")
        extra = {METADATA_FILE: ""}
        program = torch.export.load(path, extra_files=extra)
        mask = Mask({k.removesuffix("_mask"): v.bool() for k, v in program.state_dict.items() if k.endswith(".weight_mask")})
        return Ticket(ExportedModule(program.module()), mask, json.loads(extra[METADATA_FILE] or "{}"))
    if path.suffix != ".safetensors":
        raise ExportError(f"{path.name} is not a ticket; give ticket.safetensors, model.pt2 or their folder.")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device=str(torch.device(device))) as f:
        metadata = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if "architecture" not in metadata:
        raise ExportError(f"{path} has no lth-ticket metadata; give a file `lth export` wrote.")
    model = create_model(metadata["architecture"], seed=0, dropout=float(metadata["dropout"]))
    model.load_state_dict({k: v for k, v in tensors.items() if not k.endswith(".mask")})
    mask = Mask({k.removesuffix(".mask"): v for k, v in tensors.items() if k.endswith(".mask")})
    return Ticket(model.to(device).eval(), mask, metadata)
