"""Summaries' provenance: versions, hardware, and the settings that change a run's numbers."""
from __future__ import annotations

import json

import pytest
import torch

from lth_tutorial.reports import beyond_spread, early_stops, provenance
from lth_tutorial.store import environment
from lth_tutorial.training import set_deterministic


@pytest.fixture
def restore_determinism():
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    yield
    torch.use_deterministic_algorithms(saved[0])
    (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
     torch.backends.cudnn.allow_tf32) = saved[1:]


@pytest.mark.parametrize("enabled", [True, False])
def test_provenance_on_cpu_records_determinism_and_no_cuda(restore_determinism, enabled):
    set_deterministic(enabled)
    prov = provenance("cpu")
    assert {k: prov[k] for k in ("device", "cuda", "cudnn", "deterministic_algorithms", "cudnn_deterministic",
                                 "cudnn_benchmark", "tf32_matmul", "tf32_cudnn")} == {
        "device": "cpu", "cuda": None, "cudnn": None, "deterministic_algorithms": enabled,
        "cudnn_deterministic": enabled, "cudnn_benchmark": not enabled, "tf32_matmul": False, "tf32_cudnn": False}
    assert prov["threads"] == torch.get_num_threads() == environment("cpu")["threads"]
    assert prov["deterministic_algorithms"] == environment("cpu")["deterministic"]
    assert f"{torch.get_num_threads()} torch threads" in prov["hardware"]
    assert set(prov) >= {"lth_tutorial", "torch", "python", "platform"}
    assert json.loads(json.dumps(prov)) == prov   # it goes into summary JSON as it is


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_provenance_on_cuda_records_its_versions(restore_determinism):
    set_deterministic(True)
    prov = provenance("cuda")
    env = environment("cuda")
    assert (prov["cuda"], prov["cudnn"], prov["device"]) == (torch.version.cuda, torch.backends.cudnn.version(),
                                                             env["device"])
    assert prov["cuda"] is not None and prov["cudnn"] is not None
    assert (prov["deterministic_algorithms"], prov["cudnn_benchmark"], prov["tf32_matmul"]) == (True, False, False)


def _toy_summary() -> dict:
    """Two trials of a ticket (rounds 0-1) and its reinit control (round 1), values chosen exactly."""
    def rounds(trial, ks, base):
        return [{"round": k, "density": 0.8 ** k, "kind_density": {"fc": 0.8 ** k, "output": 0.9 ** k},
                 "early_stop_iteration": 100 * (k + 1) + 10 * trial,
                 "early_stop_test_accuracy": base + 0.01 * k + 0.02 * trial,
                 "final_test_accuracy": base - 0.01} for k in ks]
    runs = []
    for t in (0, 1):
        runs.append({"trial": t, "strategy": "reset", "control": "none", "rounds": rounds(t, (0, 1), 0.90)})
        runs.append({"trial": t, "strategy": "reset", "control": "reinit", "rounds": rounds(t, (1,), 0.80)})
    return {"preset": "lenet-mnist", "profile": "quick", "runs": runs}


def test_frame_is_one_row_per_trial_series_and_round():
    from lth_tutorial.reports import frame

    df = frame(_toy_summary())
    assert len(df) == 2 * 2 + 2 * 1
    assert list(df["series"].astype(str)) == ["winning ticket"] * 4 + ["random reinit"] * 2   # tickets first
    assert list(df["trial"]) == [0, 0, 1, 1, 0, 1] and list(df["round"]) == [0, 1, 0, 1, 1, 1]
    assert df.loc[1, "density_output"] == pytest.approx(0.9) and df.loc[1, "density_fc"] == pytest.approx(0.8)
    assert df.loc[3, "early_stop_test_accuracy"] == pytest.approx(0.93)


def test_every_control_has_a_series_of_its_own():
    from lth_tutorial.lottery import CONTROLS
    from lth_tutorial.reports import label

    names = {c: label({"strategy": "reset", "control": c}) for c in CONTROLS if c not in ("shuffle", "invert")}
    assert names == {"none": "winning ticket", "reinit": "random reinit", "random": "random sparsity",
                     "signed-constant": "signed constant", "signed-reinit": "signed reinit",
                     "random-signs": "random signs"}


def test_aggregate_and_table_name_the_spread():
    from lth_tutorial.reports import aggregate, table, to_csv, to_html, to_markdown

    agg = aggregate(_toy_summary()).set_index(["series", "round"])
    ticket1 = agg.loc[("winning ticket", 1)]
    assert ticket1["trials"] == 2 and ticket1["early_stop_iteration"] == 205
    assert (ticket1["early_stop_test_accuracy"], ticket1["early_stop_test_accuracy_min"],
            ticket1["early_stop_test_accuracy_max"]) == pytest.approx((0.92, 0.91, 0.93))
    shown = table(_toy_summary())
    header = "test acc at early stop %, mean [min, max] over 2 trials"
    assert list(shown.columns) == ["series", "round", "Pm %", "early-stop iteration", header,
                                   "final test acc %, mean [min, max] over 2 trials", "trials"]
    assert list(shown[header]) == ["91.00 [90.00, 92.00]", "92.00 [91.00, 93.00]", "82.00 [81.00, 83.00]"]
    assert f"<th>{header}</th>" in to_html(_toy_summary()) and header in to_markdown(_toy_summary())
    lines = to_csv(_toy_summary()).splitlines()
    assert len(lines) == 7 and lines[0].startswith("preset,profile,series,method,strategy,control,trial,round,density,")


def test_a_round_some_trials_lack_is_left_out_of_the_means():
    from lth_tutorial.reports import aggregate

    summary = _toy_summary()
    summary["runs"][0]["rounds"].append({**summary["runs"][0]["rounds"][1], "round": 2, "density": 0.64})
    rounds = aggregate(summary).query("series == 'winning ticket'")["round"].tolist()
    assert rounds == [0, 1]             # round 2 exists in trial 0 only: no "mean" of one trial beside others


def test_splits_loaded_for_another_data_config_are_refused(tmp_path):
    from lth_tutorial.data import Splits
    from lth_tutorial.presets import experiment
    from lth_tutorial.runner import SplitsMismatch, run_grid

    wrong = Splits(None, None, None, config=experiment("conv2-cifar10", "quick").data)
    with pytest.raises(SplitsMismatch, match="trains on DataConfig\\(dataset='mnist'"):
        run_grid("lenet-mnist", "quick", rounds=0, trials=1, splits=wrong, store=None)
    with pytest.raises(SplitsMismatch, match="were loaded for None"):
        run_grid("lenet-mnist", "quick", rounds=0, trials=1, splits=Splits(None, None, None))


def test_early_stops_count_the_rounds_that_passed_their_minimum():
    summary = {**_toy_summary(), "config": {"train": {"iterations": 210}}}
    # ticket early stops: trial 0 at 100, 200; trial 1 at 110, 210 (the last evaluation); reinit 200, 210
    counts = early_stops(summary).set_index("series")
    assert counts.loc["winning ticket"].tolist() == [4, 3, 1]
    assert counts.loc["random reinit"].tolist() == [2, 1, 1]


def test_beyond_spread_says_above_only_when_every_trial_is():
    summary = _toy_summary()
    # round 1: ticket 0.91 / 0.93, reinit 0.81 / 0.83: every ticket trial above every reinit trial
    vs_reinit = beyond_spread(summary, "early_stop_test_accuracy", "winning ticket", "random reinit")
    assert vs_reinit["round"].tolist() == [1] and vs_reinit["verdict"].tolist() == ["above"]
    assert vs_reinit["gap"].iloc[0] == pytest.approx(0.10)
    # against the dense network (round 0: 0.90 / 0.92): 0.91 / 0.93 overlap it
    vs_dense = beyond_spread(summary, "early_stop_test_accuracy", "winning ticket")
    assert vs_dense["verdict"].tolist() == ["within the spread"] and vs_dense["gap"].iloc[0] == pytest.approx(0.01)
    # early stopping: ticket round 1 at 200 / 210 against dense 100 / 110; reinit below the ticket? no: equal
    assert beyond_spread(summary, "early_stop_iteration", "winning ticket")["verdict"].tolist() == ["above"]
    assert beyond_spread(summary, "early_stop_iteration", "random reinit", "winning ticket")["verdict"].tolist() == \
        ["within the spread"]
    assert beyond_spread(summary, "early_stop_test_accuracy", "random reinit")["verdict"].tolist() == ["below"]
