"""The `lth` command end to end: runs split by trial, summaries with provenance, bad input as one line.

Runs are the real LeNet quick preset on the real MNIST splits, shrunk from the command line
(`--iterations 30 --eval-every 10`, as a researcher would); `train` is only spied on, to count the
rounds that are actually trained.
"""
from __future__ import annotations

import json

import pytest
import torch

import lth_tutorial.rounds as round_functions
from lth_tutorial.cli import main
from lth_tutorial.training import train as real_train

TINY = ["--iterations", "30", "--eval-every", "10"]


@pytest.fixture
def tiny_runs(monkeypatch, data_root):
    """Count the rounds that are actually trained (each call of `train` is one)."""
    trained = []

    def counting_train(model, mask, splits, config, seed, **kwargs):
        trained.append(seed)
        return real_train(model, mask, splits, config, seed, **kwargs)

    monkeypatch.setattr(round_functions, "train", counting_train)
    return trained


def _run(*extra: str, store, out=None) -> int:
    argv = ["run", "lenet-mnist", "--profile", "quick", "--rounds", "1", "--store", str(store), *TINY, *extra]
    return main(argv + (["--json", str(out)] if out else []))


def test_trials_split_across_calls_meet_in_one_store(tiny_runs, tmp_path, capsys):
    store = tmp_path / "store"
    assert _run("--trials", "2", "--trial", "1", "--control", "reinit", store=store, out=tmp_path / "one.json") == 0
    one = json.loads((tmp_path / "one.json").read_text())
    assert {run["trial"] for run in one["runs"]} == {1}
    assert [run["control"] for run in one["runs"]] == ["none", "reinit"]
    assert len(tiny_runs) == 3            # ticket rounds 0 and 1, reinit round 1
    assert "only 1" in capsys.readouterr().out

    assert _run("--trials", "2", "--control", "reinit", store=store, out=tmp_path / "all.json") == 0
    both = json.loads((tmp_path / "all.json").read_text())
    assert [run["trial"] for run in both["runs"]] == [0, 0, 1, 1]
    assert len(tiny_runs) == 6            # only trial 0 was trained; trial 1 came from the store
    assert both["runs"][2:] == one["runs"]
    assert set(both["provenance"]) >= {"lth_tutorial", "torch", "hardware", "python", "platform", "device", "cuda",
                                       "cudnn", "threads", "deterministic_algorithms", "cudnn_deterministic",
                                       "cudnn_benchmark", "tf32_matmul", "tf32_cudnn"}
    assert "torch threads" in both["provenance"]["hardware"] or torch.cuda.is_available()
    # the settings the runs were made with (run_experiment turns determinism on), not the defaults
    assert both["provenance"]["deterministic_algorithms"] is True and both["provenance"]["tf32_matmul"] is False


@pytest.mark.parametrize("extra, message", [
    (("--trials", "2", "--trial", "2"), "trial indices must be in 0..1"),
    (("--trial", "-1"), "trial indices must be in"),
    (("--rounds", "-1"), "--rounds must be >= 0"),
    (("--trials", "0"), "--trials must be >= 1"),
    (("--rate", "fc=1.5"), "[0, 1)"),
    (("--rate", "fc"), "KIND=RATE"),
    (("--rate", "conv=0.5"), "lenet-mnist has no conv weights to prune; its kinds are fc, output"),
    (("--rate", "shortcut=0.2"), "has no shortcut weights"),
    (("--strategy", "rewind"), "rewind"),
    (("--oneshot", "1.5"), "one-shot density must be in (0, 1)"),
    (("--iterations", "0"), "--iterations must be a positive int; got 0"),
    (("--lr", "-0.1"), "--lr must be a positive float; got -0.1"),
    (("--eval-every", "50"), "--eval-every 50 is more than the 30 iterations per round"),
    (("--batch-size", "60000"), "--batch-size 60000 is more than the 55,000 training examples"),
    (("--method", "snip"), "snip prunes at initialization, straight to each density: give --oneshot"),
    (("--control", "shuffle"), "the shuffle ablation is defined for pruning at initialization; give a --method of magnitude-init"),
    (("--method", "synflow", "--oneshot", "0.2", "--control", "invert", "--strategy", "continue"),
     "one-shot pruning resets to the initial weights"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_runs, tmp_path, capsys, extra, message):
    assert _run(*extra, store=tmp_path / "store") == 2
    err = capsys.readouterr().err
    assert err.startswith("lth: error: ") and message in err and err.count("\n") == 1
    assert tiny_runs == []                # nothing was trained


def test_rate_is_the_papers_rate_and_the_quick_profile_steps_it(tiny_runs, tmp_path, capsys):
    store = tmp_path / "store"
    assert _run("--trials", "1", store=store) == 0
    assert len(tiny_runs) == 2                       # dense round 0 and round 1
    assert "pruning fc 0.36, output 0.19 per round (layerwise)" in capsys.readouterr().out
    # the paper's own fc rate: the quick profile's own rule, so its finished rounds are read back
    assert _run("--trials", "1", "--rate", "fc=0.2", store=store) == 0
    assert len(tiny_runs) == 2
    assert "pruning fc 0.36, output 0.19 per round" in capsys.readouterr().out
    # fc alone: output at half of it; both stepped once (1 - 0.7^2, 1 - 0.85^2); only round 1 is new
    assert _run("--trials", "1", "--rate", "fc=0.3", store=store, out=tmp_path / "s.json") == 0
    assert len(tiny_runs) == 3
    assert "pruning fc 0.51, output 0.2775 per round" in capsys.readouterr().out
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["config"]["pruning"]["rates"] == {"fc": 0.51, "output": 0.2775}
    expected = (round(300 * 784 * 0.49) + round(100 * 300 * 0.49) + round(10 * 100 * 0.7225)) / 266_200
    assert summary["runs"][0]["rounds"][1]["density"] == pytest.approx(expected, abs=1.5 / 266_200)


def test_report_refuses_a_summary_of_another_preset(tiny_runs, tmp_path, capsys):
    path = tmp_path / "conv2.json"
    path.write_text(json.dumps({"preset": "conv2-cifar10", "profile": "quick", "runs": []}))
    out = tmp_path / "rep"
    assert main(["report", "lenet-mnist", "--from-json", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lth: error: ") and err.count("\n") == 1
    assert "holds conv2-cifar10 runs, not lenet-mnist" in err and f"lth report conv2-cifar10 --from-json {path}" in err
    assert main(["report", "conv2-cifar10", "--profile", "paper", "--from-json", str(path), "--out", str(out)]) == 2
    assert "holds the quick profile, not paper" in capsys.readouterr().err
    assert main(["report", "lenet-mnist", "--paper-scale", str(path), "--out", str(out), "--store",
                 str(tmp_path / "store"), "--rounds", "0"]) == 2
    assert "--paper-scale" in capsys.readouterr().err
    (tmp_path / "other.json").write_text("[1, 2]")
    assert main(["report", "lenet-mnist", "--from-json", str(tmp_path / "other.json"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is not a summary written by `lth run --json`" in err and err.count("\n") == 1
    assert not out.exists() and tiny_runs == []      # nothing drawn, nothing trained


def test_report_draws_a_curves_file_of_one_later_trial(tiny_runs, tmp_path, capsys):
    store, curves = tmp_path / "store", tmp_path / "c.json"
    assert main(["run", "lenet-mnist", "--profile", "quick", "--rounds", "2", "--trials", "2", "--trial", "1",
                 "--control", "reinit", "--store", str(store), "--curves", str(curves), *TINY]) == 0
    assert {run["trial"] for run in json.loads(curves.read_text())["runs"]} == {1}
    capsys.readouterr()
    assert main(["report", "lenet-mnist", "--from-json", str(curves), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "lenet-mnist-quick-curves.png").stat().st_size > 1000
    assert capsys.readouterr().err == ""


def test_training_overrides_are_recorded_and_get_their_own_runs(tiny_runs, tmp_path, capsys):
    store = tmp_path / "store"
    assert _run("--trials", "1", "--rounds", "0", store=store, out=tmp_path / "a.json") == 0
    assert "30 iterations at lr 0.0012, batch 60, evaluated every 10" in capsys.readouterr().out
    assert _run("--trials", "1", "--rounds", "0", "--lr", "0.002", "--batch-size", "100", store=store,
                out=tmp_path / "b.json") == 0
    assert "30 iterations at lr 0.002, batch 100, evaluated every 10" in capsys.readouterr().out
    assert len(tiny_runs) == 2                       # a new lr and batch size are a new run, not a stored one
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert (a["config"]["train"]["lr"], a["config"]["train"]["batch_size"]) == (0.0012, 60)
    assert (b["config"]["train"]["lr"], b["config"]["train"]["batch_size"]) == (0.002, 100)
    assert b["config"]["train"]["iterations"] == 30 and b["config"]["train"]["eval_every"] == 10
    assert a["runs"][0]["rounds"][0]["early_stop_iteration"] in (10, 20, 30)
    assert _run("--trials", "1", "--rounds", "0", store=store) == 0
    assert len(tiny_runs) == 2                       # the first settings again: read back, not trained


def test_unknown_preset_names_the_fix(capsys):
    assert main(["run", "lenet-cifar"]) == 2
    assert "lth list" in capsys.readouterr().err


def test_curves_file_keeps_thinned_curves_and_summary_stays_small(tiny_runs, tmp_path):
    assert _run("--trials", "1", store=tmp_path / "store", out=tmp_path / "s.json") == 0
    assert main(["run", "lenet-mnist", "--profile", "quick", "--rounds", "1", "--trials", "1", "--store",
                 str(tmp_path / "store"), "--curves", str(tmp_path / "c.json"), *TINY]) == 0
    assert len(tiny_runs) == 2            # the second call read both rounds from the store
    summary = json.loads((tmp_path / "s.json").read_text())
    curves = json.loads((tmp_path / "c.json").read_text())
    assert all("curve" not in r for run in summary["runs"] for r in run["rounds"])
    round0 = curves["runs"][0]["rounds"][0]
    # 30 iterations evaluated every 10: 3 evaluations, all kept (fewer than 50)
    assert round0["curve"]["iteration"] == [10, 20, 30]
    assert len(round0["curve"]["test_accuracy"]) == 3 and len(round0["curve"]["val_loss"]) == 3
    assert {k: v for k, v in round0.items() if k != "curve"} == summary["runs"][0]["rounds"][0]


def test_curve_thinning_keeps_every_kth_and_the_last():
    from lth_tutorial.runner import thinned

    n = 500
    curves = {"iteration": [100 * (i + 1) for i in range(n)], "val_loss": [float(i) for i in range(n)],
              "test_accuracy": [i / n for i in range(n)]}
    kept = thinned(curves, 50)["iteration"]
    assert kept == [1000 * (i + 1) for i in range(50)]
    kept = thinned({k: v[:499] for k, v in curves.items()}, 50)["iteration"]
    assert kept[-1] == 49_900 and kept[-2] == 49_000 and len(kept) == 50


def test_report_draws_a_curves_file_without_training(tiny_runs, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["run", "lenet-mnist", "--profile", "quick", "--rounds", "2", "--trials", "1", "--control", "reinit",
                 "--store", str(store), "--curves", str(tmp_path / "c.json"), *TINY]) == 0
    trained = len(tiny_runs)
    assert main(["report", "lenet-mnist", "--from-json", str(tmp_path / "c.json"), "--out", str(tmp_path / "rep")]) == 0
    assert len(tiny_runs) == trained
    names = {p.name for p in (tmp_path / "rep").iterdir()}
    assert names == {f"lenet-mnist-quick{s}" for s in ("-density.png", "-accuracy.png", "-early_stop.png",
                                                       "-curves.png", ".csv", ".md")}
    assert all((tmp_path / "rep" / n).stat().st_size > 1000 for n in names if n.endswith(".png"))


def test_divergence_is_one_line_naming_the_fix(tiny_runs, tmp_path, capsys):
    assert _run("--lr", "1e30", store=tmp_path / "store") == 2
    err = capsys.readouterr().err.rsplit("\r", 1)[-1]   # what a terminal shows once the bar is erased
    assert err.startswith("lth: error: training diverged at iteration 10 (loss nan); lower the learning rate")
    assert err.count("\n") == 1


def test_list_names_the_subset_profile_where_a_preset_has_one(capsys):
    assert main(["list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["lenet-mnist"].endswith("[quick: 3000 it/round, 8 rounds, 2 trials]")   # MNIST is complete: none
    assert lines["conv2-cifar10"].endswith("[quick: 160 it/round, 2 rounds, 1 trials; subset: 1000 it/round, 6 rounds]")
    assert all("subset:" in line for name, line in lines.items() if "cifar10" in name)
