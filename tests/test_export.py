"""`lth export` end to end: a stored round comes back from its files with the stored test accuracy, exactly;
plain PyTorch loads it without this package; prune's reparametrization is the mask bitwise; bad input is
one line; the compact-model hook exports any module the same way.

The run is the real LeNet quick preset on the real MNIST splits, shrunk from the command line
(`--iterations 30 --eval-every 10`, 3 rounds), made once for the module.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from lth_tutorial.cli import main
from lth_tutorial.data import load_splits
from lth_tutorial.export import ExportError, export_compact, find_round, load_ticket
from lth_tutorial.masks import Mask
from lth_tutorial.models import create_model
from lth_tutorial.presets import experiment
from lth_tutorial.sparse_inference import prune_model
from lth_tutorial.store import RunStore
from lth_tutorial.training import evaluate

TINY = ["--iterations", "30", "--eval-every", "10"]
SELECT = ["lenet-mnist", "--profile", "quick", *TINY]


@pytest.fixture(scope="module")
def store(tmp_path_factory, data_root):
    """Rounds 0..3 of trial 0, trained here with the suite's one thread (as the exports look them up)."""
    root = tmp_path_factory.mktemp("store")
    assert main(["run", *SELECT, "--rounds", "3", "--trials", "1", "--store", str(root)]) == 0
    return root


@pytest.fixture(scope="module")
def test_split(data_root):
    return load_splits(experiment("lenet-mnist", "quick").data).test


def _stored(store, index: int):
    chosen = experiment("lenet-mnist", "quick", train={"iterations": 30, "eval_every": 10})
    return find_round(chosen, index, RunStore(store))


@pytest.mark.parametrize("index", [0, 3])
def test_both_routes_give_back_the_stored_accuracy_exactly(store, test_split, tmp_path, capsys, index):
    out = tmp_path / "ticket"
    assert main(["export", *SELECT, "--round", str(index), "--out", str(out), "--store", str(store)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.pt2", "prune_state_dict.pt", "ticket.safetensors"]
    printed = capsys.readouterr().out
    assert f"round {index}: density" in printed and str(out / "model.pt2") in printed
    metrics = _stored(store, index).metrics
    # trained.pt is the state at the end of training, which final_test_accuracy was measured on. Exact:
    # the same device (CPU), the same threads (the suite runs with one, as the run was made) and the same
    # batches (evaluate's 2,500), so the same kernels see the same numbers. Both routes must give it back.
    for route in ("ticket.safetensors", "model.pt2"):
        ticket = load_ticket(out / route)
        assert evaluate(ticket.model, test_split)[1].item() == metrics["final_test_accuracy"], route
        assert ticket.metadata["final_test_accuracy"] == repr(metrics["final_test_accuracy"])
        assert (ticket.metadata["preset"], ticket.metadata["profile"], ticket.metadata["round"]) == \
               ("lenet-mnist", "quick", str(index))
        assert ticket.metadata["density"] == repr(metrics["density"]) and ticket.metadata["architecture"] == "lenet"
        assert ticket.metadata["torch"] == torch.__version__
        assert ticket.mask.density() == metrics["density"]
    assert metrics["density"] == (1.0 if index == 0 else pytest.approx(0.64 ** 3, abs=0.01))


def test_the_masks_and_prunes_reparametrization_are_the_stored_ones_bitwise(store, tmp_path):
    out = tmp_path / "ticket"
    assert main(["export", *SELECT, "--round", "3", "--out", str(out), "--store", str(store)]) == 0
    stored = _stored(store, 3)
    weights, mask = stored.weights(), stored.mask()
    from safetensors.torch import load_file

    tensors = load_file(str(out / "ticket.safetensors"))
    assert set(tensors) == set(weights) | {f"{n}.mask" for n in mask}
    assert all(torch.equal(tensors[n], weights[n]) for n in weights)
    assert all(torch.equal(tensors[f"{n}.mask"], mask[n]) for n in mask)
    # torch.nn.utils.prune as the cross-check: its state_dict rebuilds a module whose effective weight is
    # weight * mask bitwise (and the trained weight itself: training keeps pruned weights at exactly 0)
    state = torch.load(out / "prune_state_dict.pt", weights_only=True)
    rebuilt = prune_model(create_model("lenet", seed=1), Mask({n: torch.ones_like(m) for n, m in mask.items()}))
    rebuilt.load_state_dict(state)
    for name, m in mask.items():
        layer = rebuilt.get_submodule(name.rsplit(".", 1)[0])
        layer(torch.zeros(1, layer.in_features))          # prune's pre-hook recomputes weight from the loaded parts
        assert torch.equal(layer.weight_mask.bool(), m)
        assert torch.equal(layer.weight, weights[name] * m) and torch.equal(layer.weight, weights[name])
    program = load_ticket(out / "model.pt2")
    assert set(program.mask) == set(mask) and all(torch.equal(program.mask[n], mask[n]) for n in mask)


def test_plain_pytorch_loads_the_export_without_this_package(store, test_split, tmp_path):
    out = tmp_path / "ticket"
    assert main(["export", *SELECT, "--round", "3", "--out", str(out), "--store", str(store)]) == 0
    torch.save(test_split.images[:100].clone(), tmp_path / "x.pt")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["lth_tutorial"] = None     # importing this package now fails: plain PyTorch only
        import torch
        torch.set_num_threads(1)
        x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True)
        model = torch.export.load({str(out / 'model.pt2')!r}).module()   # the README's lines
        logits = model(x)
        torch.save(logits, {str(tmp_path / 'y.pt')!r})
        state = torch.load({str(out / 'prune_state_dict.pt')!r}, weights_only=True)
        assert sorted(state)[:3] == ["fc.0.bias", "fc.0.weight_mask", "fc.0.weight_orig"], sorted(state)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    with torch.no_grad():
        expected = load_ticket(out / "ticket.safetensors").model(test_split.images[:100])
    assert torch.equal(torch.load(tmp_path / "y.pt", weights_only=True), expected)


def test_a_structured_round_is_found_by_its_structure_and_exported_alike(tmp_path, test_split, capsys):
    store, out = tmp_path / "store", tmp_path / "ticket"
    assert main(["run", *SELECT, "--structure", "units", "--rounds", "1", "--trials", "1", "--store", str(store)]) == 0
    assert main(["export", *SELECT, "--round", "1", "--out", str(out), "--store", str(store)]) == 2
    assert "no run of lenet-mnist (quick profile) trial 0, strategy reset, 30" in capsys.readouterr().err
    assert main(["export", *SELECT, "--structure", "units", "--round", "1", "--out", str(out), "--store", str(store),
                 "--format", "safetensors"]) == 0
    assert [p.name for p in out.iterdir()] == ["ticket.safetensors"]
    ticket = load_ticket(out)
    stored = find_round(experiment("lenet-mnist", "quick", train={"iterations": 30, "eval_every": 10},
                                   structure="units"), 1, RunStore(store))
    assert evaluate(ticket.model, test_split)[1].item() == stored.metrics["final_test_accuracy"]
    assert ticket.metadata["structure"] == "units"
    assert not ticket.mask["fc.0.weight"].any(1).all()          # whole neurons (rows) gone
    # all: the compact model too, a smaller dense network; it sums fewer zeros in another order, so its
    # logits match the masked model's to float rounding (1e-5); its test accuracy is the stored one (here exactly;
    # allowed one test image, since a near-tie within rounding could flip on another machine)
    assert main(["export", *SELECT, "--structure", "units", "--round", "1", "--out", str(out), "--store", str(store)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["compact.pt2", "compact.safetensors", "model.pt2",
                                                     "prune_state_dict.pt", "ticket.safetensors"]
    compact = load_ticket(out / "compact.pt2")
    kept = int(ticket.mask["fc.0.weight"].any(1).sum())
    assert compact.metadata["widths"].startswith(f"LeNet-300-100 compact: units {kept}-")
    assert sum(p.numel() for p in compact.model.program.parameters()) < sum(p.numel() for p in ticket.model.parameters())
    with torch.no_grad():
        assert torch.allclose(compact.model(test_split.images[:500]), ticket.model(test_split.images[:500]), atol=1e-5)
    assert abs(evaluate(compact.model, test_split)[1].item() - stored.metrics["final_test_accuracy"]) <= 1 / len(test_split.labels)


def test_compact_is_refused_for_an_unstructured_ticket(store, tmp_path, capsys):
    assert main(["export", *SELECT, "--round", "3", "--format", "compact", "--out", str(tmp_path / "o"),
                 "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert "--format compact needs a structured ticket" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["--round", "3", "--store", "{empty}"], "no run of lenet-mnist (quick profile) trial 0, strategy reset, 30 "
                                            "iterations made with cpu 1 thread(s)"),
    (["--round", "3", "--trial", "1"], "no run of lenet-mnist (quick profile) trial 1"),
    (["--round", "3", "--threads", "2"], "made with cpu 2 thread(s), torch"),
    (["--round", "5"], "round 5 of lenet-mnist (quick profile) trial 0, strategy reset, 30 iterations is not "
                       "finished (finished: rounds 0..3); train it first (`lth run` with the same selectors and "
                       "--rounds 5)"),
    (["--round", "1"], "round 1's trained weights were not kept (a run keeps those of its last rounds only; kept: "
                       "rounds 0, 2, 3)"),
    (["--round", "0", "--control", "reinit"], "a control starts at round 1"),
    (["--round", "3", "--format", "onnx"], "unknown --format 'onnx'; use one of safetensors, prune, compact, all."),
    (["--round", "-1"], "--round must be >= 0"),
])
def test_bad_input_is_one_line_naming_the_fix(store, tmp_path, capsys, argv, message):
    empty = tmp_path / "empty"
    argv = [a.replace("{empty}", str(empty)) for a in argv]
    argv = argv if "--store" in argv else [*argv, "--store", str(store)]
    assert main(["export", *SELECT, "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lth: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists() and not empty.exists()   # nothing written, no store folder made
    if "--threads" in argv:   # a run made with other threads is another run: the line says what there is
        assert "(the store's t0-reset runs were made with cpu 1 thread(s)" in err


def test_unknown_preset_is_one_line(tmp_path, capsys):
    assert main(["export", "lenet-cifar", "--round", "1", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lth: error: unknown preset 'lenet-cifar'; run `lth list`") and err.count("\n") == 1


def test_load_ticket_refuses_what_is_not_a_ticket(tmp_path):
    (tmp_path / "weights.pt").write_bytes(b"")
    with pytest.raises(ExportError, match="is not a ticket; give ticket.safetensors, model.pt2 or their folder"):
        load_ticket(tmp_path / "weights.pt")
    with pytest.raises(ExportError, match="holds no ticket.safetensors or model.pt2"):
        load_ticket(tmp_path)


def test_export_compact_hook_writes_any_module_as_a_ticket_is_written(tmp_path):
    torch.manual_seed(0)
    compact = nn.Sequential(nn.Flatten(), nn.Linear(784, 7), nn.ReLU(), nn.Linear(7, 10))  # a 7-neuron "ticket"
    written = export_compact(compact, torch.zeros(2, 1, 28, 28), tmp_path, {"preset": "lenet-mnist", "round": "4"})
    assert [p.name for p in written] == ["compact.pt2", "compact.safetensors"]
    x = torch.randn(3, 1, 28, 28)
    program = load_ticket(tmp_path / "compact.pt2")
    with torch.no_grad():
        assert torch.equal(program.model(x), compact(x)) and torch.equal(program.model(x[:1]), compact(x[:1]))
    assert program.metadata == {"format": "lth-ticket 1", "representation": "compact", "preset": "lenet-mnist",
                                "round": "4"}
    from safetensors import safe_open

    with safe_open(str(tmp_path / "compact.safetensors"), framework="pt") as f:
        assert f.metadata()["representation"] == "compact"
        assert all(torch.equal(f.get_tensor(k), v) for k, v in compact.state_dict().items())
        assert sorted(f.keys()) == sorted(compact.state_dict())
