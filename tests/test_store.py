"""The run store: atomic writes with unique temporary names, missing vs corrupted, keys that survive
new fields, locks, and concurrent processes that never train a round twice."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from lth_tutorial.store import RunStore, StoreError, changed_fields, environment


def test_writes_leave_no_temporary_files_and_use_unique_names(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    names = []
    real = os.replace

    def spy(src, dst):
        names.append(Path(src).name)
        return real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    for _ in range(2):
        store.save_json(tmp_path / "a" / "metrics.json", {"x": 1})
    assert len(set(names)) == 2 and all(n.startswith(".metrics.json.") and n.endswith(".tmp") for n in names)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["metrics.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    store = RunStore(tmp_path)
    path = tmp_path / "t.pt"
    store.save_tensors(path, {"w": torch.ones(2)})

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        store._write(path, broken)
    assert torch.equal(store.load_tensors(path)["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["t.pt"]


def test_missing_and_corrupted_files_say_different_things(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(StoreError, match=r"missing \(deleted, or never written.*Delete"):
        store.load_tensors(tmp_path / "run" / "round_001" / "mask.pt")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(StoreError, match=r"corrupted \(JSONDecodeError\)"):
        store.load_json(tmp_path / "bad.json")


@dataclass(frozen=True)
class Old:
    lr: float
    iterations: int = 10


@dataclass(frozen=True)
class New:  # the same config, one release later, with a new field at its default
    lr: float
    iterations: int = 10
    precision: str = "fp32"


def test_a_new_field_at_its_default_keeps_the_key():
    assert changed_fields(Old(0.1)) == changed_fields(New(0.1)) == {"lr": 0.1}
    assert changed_fields(New(0.1, precision="bf16")) == {"lr": 0.1, "precision": "bf16"}


def test_folder_names_are_readable_and_keyed(tmp_path):
    store = RunStore(tmp_path)
    a = store.folder({"x": 1}, "t0-reset", group="lenet-mnist-quick")
    assert a.parent == tmp_path / "lenet-mnist-quick" and a.name.startswith("t0-reset-")
    assert store.folder({"x": 1}, "t0-reset", group="lenet-mnist-quick") == a
    assert store.folder({"x": 2}, "t0-reset", group="lenet-mnist-quick") != a
    assert json.loads((a / "config.json").read_text()) == {"schema": 2, "x": 1}


def test_folder_path_is_where_folder_puts_a_run_and_creates_nothing(tmp_path):
    store, key = RunStore(tmp_path), {"model": "lenet", "trial": 0}
    path = store.folder_path(key, "t0-dense", group="lenet-mnist-quick")
    assert not (tmp_path / "lenet-mnist-quick").exists()     # a reader that only looks leaves no trace
    assert store.folder(key, "t0-dense", group="lenet-mnist-quick") == path
    assert (path / "config.json").exists()
    assert store.folder_path(key, "reinit", parent=path) == path / "reinit"


def test_environment_records_what_changes_results():
    env = environment("cpu")
    assert env["device"] == "cpu" and env["threads"] == torch.get_num_threads()
    assert env["torch"] == torch.__version__.split("+")[0] and "deterministic" in env


# ---- concurrent processes ----------------------------------------------------------------------

WORKER = textwrap.dedent("""
    import json, sys
    from dataclasses import replace
    import torch
    from lth_tutorial.lottery import RoundProgress, run_experiment
    from lth_tutorial.presets import experiment
    from lth_tutorial.store import RunStore

    torch.set_num_threads(1)
    trial, root, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    trained = []
    progress = RoundProgress(end_round=lambda e, m: trained.append([e.trial, e.control, m["round"]]))
    results = {}
    for control in ("none", "reinit"):
        exp = experiment("lenet-mnist", "quick", trial=trial, control=control)
        exp = replace(exp, train=replace(exp.train, iterations=40, eval_every=20),
                      data=replace(exp.data, train_examples=1_200, validation_size=200, test_examples=500))
        metrics = run_experiment(exp, 2, RunStore(root), progress=progress)
        results[control] = [{k: v for k, v in m.items() if k != "seconds"} for m in metrics]
    open(log, "w").write(json.dumps({"trained": trained, "results": results}))
""")


def _start(trial, root, log, data_root):
    env = {**os.environ, "LTH_DATA_DIR": str(data_root), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", WORKER, str(trial), str(root), str(log)], env=env,
                            stderr=subprocess.PIPE, text=True)


def test_three_processes_two_on_one_trial_train_each_round_once(tmp_path, tmp_data_root):
    """Fresh data root (no cache) and fresh store; trials 0, 0 and 1 at once; then a serial run."""
    data = tmp_data_root(cifar=False)
    procs = [_start(t, tmp_path / "store", tmp_path / f"log{i}.json", data) for i, t in enumerate((0, 0, 1))]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    logs = [json.loads((tmp_path / f"log{i}.json").read_text()) for i in range(3)]
    trained = [tuple(r) for log in logs for r in log["trained"]]
    # every round of both trials trained exactly once (ticket rounds 0-2, reinit rounds 1-2), in whichever process
    expected = {(t, c, k) for t in (0, 1) for c, ks in (("none", (0, 1, 2)), ("reinit", (1, 2))) for k in ks}
    assert sorted(trained) == sorted(expected)
    assert not list((tmp_path / "store").rglob("*.tmp")) and not list(data.rglob("*.tmp"))
    serial = _start(0, tmp_path / "serial", tmp_path / "serial.json", data)
    assert serial.wait(timeout=600) == 0
    alone = json.loads((tmp_path / "serial.json").read_text())["results"]
    assert logs[0]["results"] == logs[1]["results"] == alone  # what the concurrent trial-0 runs read back
