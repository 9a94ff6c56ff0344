"""IMP rounds through the run store: start weights per strategy, controls, ladders, resume, corruption.

A tiny real experiment: LeNet quick preset on real MNIST subsets (1,000 train / 200 validation / 500
test), 30 iterations per round. `train` is wrapped to record what each round starts from.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch

import lth_tutorial.rounds as round_functions
from lth_tutorial.data import load_splits
from lth_tutorial.lottery import Experiment, run_experiment, run_folders
from lth_tutorial.masks import Mask, ladder_density, prune_magnitude, prune_oneshot
from lth_tutorial.models import create_model
from lth_tutorial.presets import experiment
from lth_tutorial.store import SCHEMA, RunStore, StoreError
from lth_tutorial.training import train as real_train

NAMES = ("fc.0.weight", "fc.2.weight", "fc.4.weight")
SIZES = {"fc.0.weight": 235_200, "fc.2.weight": 30_000, "fc.4.weight": 1_000}
KINDS = {"fc.0.weight": "fc", "fc.2.weight": "fc", "fc.4.weight": "output"}


def tiny(**kwargs) -> Experiment:
    exp = experiment("lenet-mnist", "quick", **kwargs)
    return replace(exp, train=replace(exp.train, iterations=30, eval_every=10),
                   data=replace(exp.data, train_examples=1_200, validation_size=200, test_examples=500))


@pytest.fixture(scope="module")
def splits():
    return load_splits(tiny().data)


def _clone(tensors) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in tensors.items()}


class Recorder:
    """Stands in for rounds.train (the training of every round): records each call's start state, mask and end state."""

    def __init__(self, fail_on: int | None = None):
        self.calls: list[dict] = []
        self.fail_on = fail_on
        self.attempts = 0

    def __call__(self, model, mask, splits, config, seed, **kwargs):
        self.attempts += 1
        if self.attempts == self.fail_on:
            raise RuntimeError("simulated crash")
        entry = _clone(model.state_dict())
        result = real_train(model, mask, splits, config, seed, **kwargs)
        self.calls.append({"entry": entry, "mask": Mask(_clone(mask)), "exit": _clone(model.state_dict()),
                           "seed": seed, "snapshot_at": kwargs.get("snapshot_at"), "config": config,
                           "start_iteration": kwargs.get("start_iteration", 0)})
        return result


def _run(exp, rounds, store, splits, recorder=None):
    with pytest.MonkeyPatch.context() as mp:
        if recorder is not None:
            mp.setattr(round_functions, "train", recorder)
        return run_experiment(exp, rounds, store, splits=splits)


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def ticket(tmp_path_factory, splits):
    """The reset ticket run, rounds 0..3, with every round's training recorded."""
    store = RunStore(tmp_path_factory.mktemp("ticket"))
    recorder = Recorder()
    exp = tiny()
    metrics = _run(exp, 3, store, splits, recorder)
    return exp, store, run_folders(exp, store), metrics, recorder


def _copy_store(store: RunStore, tmp_path) -> RunStore:
    shutil.copytree(store.root, tmp_path / "copy")
    return RunStore(tmp_path / "copy")


# ---- strategies: where each round starts --------------------------------------------------------------


def test_reset_rounds_start_from_the_stored_init(ticket):
    exp, store, run, metrics, recorder = ticket
    assert [m["round"] for m in metrics] == [0, 1, 2, 3]
    assert len(recorder.calls) == 4
    init = _load(run.dense / "init.pt")
    assert _equal(init, create_model("lenet", seed=exp.init_seed).state_dict())  # the experiment's seed
    for k, call in enumerate(recorder.calls):
        assert _equal(call["entry"], init), k
        for name in NAMES:
            mask = call["mask"][name]
            assert torch.equal(call["entry"][name] * mask, init[name] * mask)
            # after training, the weights are the init's survivors trained; the pruned ones are zero
            assert torch.count_nonzero(call["exit"][name][~mask]) == 0
        assert _equal(_load(run.round(k) / "mask.pt"), call["mask"])
        assert call["seed"] == exp.data_seed


def test_masks_prune_the_previous_rounds_trained_weights(ticket):
    exp, store, run, metrics, recorder = ticket
    calls = recorder.calls
    assert all(bool(m.all()) for m in calls[0]["mask"].values())
    assert set(calls[0]["mask"]) == set(NAMES)
    for k in range(1, 4):
        expected = prune_magnitude(calls[k - 1]["exit"], calls[k - 1]["mask"], KINDS, exp.pruning)
        assert _equal(calls[k]["mask"], expected)
    # trained weights are kept for round 0 (one-shot) and the latest two rounds (so the latest round can
    # be deleted and redone); stored == what training left
    for k in (0, 2, 3):
        assert _equal(_load(run.round(k) / "trained.pt"), calls[k]["exit"])
    assert not (run.round(1) / "trained.pt").exists()


def test_densities_follow_the_quick_ladder_exactly(ticket):
    exp, store, run, metrics, recorder = ticket
    assert exp.pruning.rates == {"fc": 0.36, "output": 0.19}
    counts = dict(SIZES)
    for k, m in enumerate(metrics):
        mask = _load(run.round(k) / "mask.pt")
        assert {n: int(mask[n].sum()) for n in NAMES} == counts
        assert m["density"] == sum(counts.values()) / 266_200
        assert m["density"] == pytest.approx(ladder_density(exp.pruning, KINDS, SIZES, k), abs=1.5 / 266_200)
        assert m["layer_density"] == pytest.approx({n: counts[n] / SIZES[n] for n in NAMES}, rel=1e-6)
        counts = {n: c - round(exp.pruning.rate(KINDS[n]) * c) for n, c in counts.items()}
    # by hand: 235200 -> 150528 -> 96338, 30000 -> 19200 -> 12288, 1000 -> 810 -> 656
    mask2 = _load(run.round(2) / "mask.pt")
    assert [int(mask2[n].sum()) for n in NAMES] == [96_338, 12_288, 656]


def test_metrics_are_the_papers(ticket):
    exp, store, run, metrics, recorder = ticket
    for m in metrics:
        assert m["curves"]["iteration"] == [10, 20, 30]
        best = min(range(3), key=lambda i: (m["curves"]["val_loss"][i], i))
        assert m["early_stop_iteration"] == m["curves"]["iteration"][best]
        assert m["early_stop_test_accuracy"] == m["curves"]["test_accuracy"][best]
        assert m["final_test_accuracy"] == m["curves"]["test_accuracy"][-1]
    assert metrics[0]["final_test_accuracy"] > 0.5  # 30 Adam steps on real MNIST learn something


def test_rewind_rounds_resume_at_iteration_k_of_round_0(tmp_path, splits):
    store, recorder, exp = RunStore(tmp_path), Recorder(), tiny(strategy="rewind:10")
    assert exp.rewind_iteration == 10 and exp.start_iteration == 10
    metrics = _run(exp, 2, store, splits, recorder)
    run = run_folders(exp, store)
    rewind, init = _load(run.dense / "rewind_10.pt"), _load(run.dense / "init.pt")
    assert recorder.calls[0]["snapshot_at"] == 10
    assert _equal(recorder.calls[0]["entry"], init)
    # rewind_10.pt is round 0 after 10 iterations: re-train round 0 for 10 iterations with the same seed
    model = create_model("lenet", seed=0)
    model.load_state_dict(init)
    real_train(model, recorder.calls[0]["mask"], splits, replace(exp.train, iterations=10), seed=exp.data_seed)
    assert _equal(rewind, model.state_dict())
    assert not torch.equal(rewind["fc.0.weight"], init["fc.0.weight"])
    for call in recorder.calls[1:]:
        assert _equal(call["entry"], rewind)
        assert call["start_iteration"] == 10  # resumes there: iterations 11..30, evaluated at 20 and 30
    assert metrics[0]["curves"]["iteration"] == [10, 20, 30]
    assert [m["curves"]["iteration"] for m in metrics[1:]] == [[20, 30], [20, 30]]
    assert [m["start_iteration"] for m in metrics] == [0, 10, 10]
    # a control of a rewinding ticket starts where the ticket does
    control = Recorder()
    _run(replace(exp, control="reinit"), 1, store, splits, control)
    assert [c["start_iteration"] for c in control.calls] == [10]


def test_a_second_rewind_point_replays_round_0_instead_of_retraining_it(tmp_path, splits):
    store = RunStore(tmp_path)
    _run(tiny(strategy="rewind:10"), 0, store, splits)
    recorder = Recorder()
    _run(tiny(strategy="rewind:20"), 1, store, splits, recorder)
    run = run_folders(tiny(strategy="rewind:20"), store)
    assert [c["config"].iterations for c in recorder.calls] == [20, 30]  # a 20-iteration replay, then round 1
    fresh = RunStore(tmp_path / "fresh")
    _run(tiny(strategy="rewind:20"), 0, fresh, splits)
    assert _equal(_load(run.dense / "rewind_20.pt"),
                  _load(run_folders(tiny(strategy="rewind:20"), fresh).dense / "rewind_20.pt"))


def test_continue_rounds_start_from_the_previous_trained_weights(tmp_path, splits):
    store, recorder, exp = RunStore(tmp_path), Recorder(), tiny(strategy="continue")
    _run(exp, 2, store, splits, recorder)
    calls = recorder.calls
    assert len(calls) == 3
    for k in (1, 2):
        assert _equal(calls[k]["entry"], calls[k - 1]["exit"])
        assert not torch.equal(calls[k]["entry"]["fc.0.weight"], calls[0]["entry"]["fc.0.weight"])
        assert _equal(calls[k]["mask"], prune_magnitude(calls[k - 1]["exit"], calls[k - 1]["mask"], KINDS,
                                                        exp.pruning))


# ---- controls ------------------------------------------------------------------------------------


def test_reinit_control_same_mask_new_values(ticket, splits):
    exp, store, run, metrics, _ = ticket
    recorder = Recorder()
    control = replace(exp, control="reinit")
    control_metrics = _run(control, 2, store, splits, recorder)
    assert len(recorder.calls) == 2  # the ticket's rounds are not retrained
    assert [m["round"] for m in control_metrics] == [1, 2]
    init = _load(run.dense / "init.pt")
    for k, call in zip((1, 2), recorder.calls):
        assert _equal(call["mask"], _load(run.round(k) / "mask.pt"))
        assert control_metrics[k - 1]["density"] == metrics[k]["density"]
        for name in NAMES:
            mask = call["mask"][name]
            assert not torch.equal(call["entry"][name][mask], init[name][mask])
            # drawn from the same init scheme (Gaussian Glorot), just other values
            assert float(call["entry"][name].std()) == pytest.approx(float(init[name].std()), rel=0.05)
    # each round draws its own init
    assert not torch.equal(recorder.calls[0]["entry"]["fc.0.weight"], recorder.calls[1]["entry"]["fc.0.weight"])
    assert control_metrics[0]["curves"] != metrics[1]["curves"]


def test_random_control_same_counts_new_positions(ticket, splits):
    exp, store, run, metrics, _ = ticket
    recorder = Recorder()
    control_metrics = _run(replace(exp, control="random"), 2, store, splits, recorder)
    assert len(recorder.calls) == 2
    init = _load(run.dense / "init.pt")
    for k, call in zip((1, 2), recorder.calls):
        ticket_mask = _load(run.round(k) / "mask.pt")
        for name in NAMES:
            assert int(call["mask"][name].sum()) == int(ticket_mask[name].sum())
            assert not torch.equal(call["mask"][name], ticket_mask[name])
        assert control_metrics[k - 1]["layer_density"] == metrics[k]["layer_density"]
        assert not torch.equal(call["entry"]["fc.0.weight"], init["fc.0.weight"])
        # random positions: about density * survivors of them coincide with the ticket's survivors
        overlap = int((call["mask"]["fc.0.weight"] & ticket_mask["fc.0.weight"]).sum())
        density = metrics[k]["layer_density"]["fc.0.weight"]
        assert overlap == pytest.approx(density * int(ticket_mask["fc.0.weight"].sum()), rel=0.05)


def test_controls_with_zero_rounds_train_nothing(ticket, splits):
    exp, store, *_ = ticket
    recorder = Recorder()
    assert _run(replace(exp, control="reinit", trial=5), 0, store, splits, recorder) == []
    assert recorder.calls == []


# ---- the store: no retraining, resume -----------------------------------------------------------------


def _refuse(*args, **kwargs):
    raise AssertionError("train must not be called")


def test_finished_runs_are_read_not_retrained(ticket, splits):
    exp, store, run, metrics, _ = ticket
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(round_functions, "train", _refuse)
        assert run_experiment(exp, 3, store, splits=splits) == metrics
        assert run_experiment(exp, 2, store)[:3] == metrics[:3]  # no splits needed: no data is loaded either


def test_more_rounds_trains_only_the_missing_ones(ticket, splits, tmp_path):
    exp, store, run, metrics, _ = ticket
    copy = _copy_store(store, tmp_path)
    recorder = Recorder()
    more = _run(exp, 5, copy, splits, recorder)
    assert len(recorder.calls) == 2
    assert more[:4] == metrics
    assert [m["round"] for m in more] == [0, 1, 2, 3, 4, 5]
    init = _load(run_folders(exp, copy).dense / "init.pt")
    assert all(_equal(call["entry"], init) for call in recorder.calls)


def test_crash_resumes_and_matches_an_uninterrupted_run(ticket, splits, tmp_path):
    exp, _, _, metrics, _ = ticket
    store = RunStore(tmp_path)
    crashing = Recorder(fail_on=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(exp, 3, store, splits, crashing)
    run = run_folders(exp, store)
    assert run.finished_rounds() == [0, 1]
    assert not (run.round(2) / "metrics.json").exists()
    resumed = Recorder()
    again = _run(exp, 3, store, splits, resumed)
    assert len(resumed.calls) == 2  # rounds 2 and 3 only
    # bitwise: every curve value equal to the uninterrupted run's (wall time aside)
    assert _timeless(again) == _timeless(metrics)


def test_trials_differ(ticket, splits, tmp_path):
    exp, _, run, metrics, _ = ticket
    store = RunStore(tmp_path)
    other = run_experiment(replace(exp, trial=1), 0, store, splits=splits)
    assert run_folders(replace(exp, trial=1), store).dense.name.startswith("t1-dense-")
    assert other[0]["curves"]["train_loss"] != metrics[0]["curves"]["train_loss"]
    init = _load(run_folders(replace(exp, trial=1), store).dense / "init.pt")
    assert not torch.equal(init["fc.0.weight"], create_model("lenet", seed=exp.init_seed).state_dict()["fc.0.weight"])


def test_changing_the_pruning_rule_reuses_the_dense_round(ticket, splits, tmp_path):
    exp, store, run, metrics, _ = ticket
    copy = _copy_store(store, tmp_path)
    recorder = Recorder()
    steeper = replace(exp, pruning=replace(exp.pruning, rates={"fc": 0.5, "output": 0.25}))
    again = _run(steeper, 1, copy, splits, recorder)
    assert len(recorder.calls) == 1 and again[0] == metrics[0]  # only round 1 trained
    other = run_folders(steeper, copy)
    assert other.dense == run_folders(exp, copy).dense and other.ticket != run_folders(exp, copy).ticket
    assert int(recorder.calls[0]["mask"]["fc.0.weight"].sum()) == 235_200 // 2


def test_layout_is_readable_and_controls_live_under_their_ticket(ticket, splits):
    exp, store, run, *_ = ticket
    _run(replace(exp, control="reinit"), 1, store, splits)
    control = run_folders(replace(exp, control="reinit"), store)
    assert run.ticket.parent.name == "lenet-mnist-quick"
    assert run.ticket.name.startswith("t0-reset-") and run.dense.name.startswith("t0-dense-")
    assert control.own == run.ticket / "reinit"
    config = json.loads((run.ticket / "config.json").read_text())
    assert config["schema"] == SCHEMA and config["made_with"]["device"] == "cpu"
    assert config["made_with"]["threads"] == torch.get_num_threads()


def test_a_thread_count_change_is_another_run_not_a_mixed_one(ticket, splits, tmp_path):
    exp, store, run, *_ = ticket
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert run_folders(exp, store).ticket != run.ticket
    finally:
        torch.set_num_threads(threads)
    assert run_folders(exp, store).ticket == run.ticket


def test_a_folder_of_another_schema_is_refused(ticket, tmp_path):
    exp, store, *_ = ticket
    copy = _copy_store(store, tmp_path)
    config = run_folders(exp, copy).ticket / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "schema": 1}))
    with pytest.raises(StoreError, match="schema 1.*Delete it"):
        run_folders(exp, copy)


# ---- one-shot ------------------------------------------------------------------------------------


def test_oneshot_prunes_round_0_weights_straight_to_each_target(tmp_path, splits):
    store, recorder, exp = RunStore(tmp_path), Recorder(), tiny(oneshot=(0.5, 0.2))
    metrics = _run(exp, 10, store, splits, recorder)  # capped at len(oneshot)
    assert [m["round"] for m in metrics] == [0, 1, 2]
    run = run_folders(exp, store)
    trained0 = recorder.calls[0]["exit"]
    assert _equal(_load(run.round(0) / "trained.pt"), trained0)
    init = _load(run.dense / "init.pt")
    for k, target in ((1, 0.5), (2, 0.2)):
        mask = recorder.calls[k]["mask"]
        assert _equal(mask, prune_oneshot({n: trained0[n] for n in NAMES}, KINDS, exp.pruning, target))
        assert metrics[k]["density"] == pytest.approx(target, abs=1.5 / 266_200)
        for name in NAMES:  # the smallest of round 0's trained weights, layer by layer
            assert trained0[name].abs()[~mask[name]].max() <= trained0[name].abs()[mask[name]].min()
        assert _equal(recorder.calls[k]["entry"], init)
    # round 2 is not round 1's mask pruned further from round 1's weights
    iterative = prune_magnitude(recorder.calls[1]["exit"], recorder.calls[1]["mask"], KINDS, exp.pruning)
    assert not _equal(recorder.calls[2]["mask"], iterative)


# ---- checkpoints -----------------------------------------------------------------------------------


def test_checkpoints_load_with_weights_only(ticket):
    exp, store, run, _, recorder = ticket
    files = sorted(store.root.rglob("*.pt"))
    assert {p.name for p in files} == {"init.pt", "mask.pt", "trained.pt"}
    for path in files:
        tensors = torch.load(path, weights_only=True)
        assert all(isinstance(v, torch.Tensor) and v.device.type == "cpu" for v in tensors.values())
    assert not list(store.root.rglob("*.tmp"))


def test_a_missing_checkpoint_is_reported_as_missing(ticket, splits, tmp_path):
    exp, store, *_ = ticket
    copy = _copy_store(store, tmp_path)
    gone = run_folders(exp, copy).round(3) / "trained.pt"
    gone.unlink()
    with pytest.raises(StoreError, match="trained.pt is missing.*Delete"):
        _run(exp, 4, copy, splits, Recorder())


def test_corrupted_mask_names_the_folder_to_delete_and_deleting_it_recovers(ticket, splits, tmp_path):
    exp, store, run, metrics, _ = ticket
    copy = _copy_store(store, tmp_path)
    broken = run_folders(exp, copy).round(3)
    (broken / "mask.pt").write_bytes(b"not a checkpoint")
    assert run_experiment(exp, 3, copy, splits=splits) == metrics  # finished rounds need no checkpoint
    with pytest.raises(StoreError) as info:
        _run(exp, 4, copy, splits, Recorder())
    assert f"Delete {broken} " in str(info.value)
    assert "mask.pt" in str(info.value)
    shutil.rmtree(broken)  # do what the message says
    recorder = Recorder()
    recovered = _run(exp, 4, copy, splits, recorder)
    assert len(recorder.calls) == 2  # rounds 3 and 4 redone, nothing before them
    assert _timeless(recovered[:4]) == _timeless(metrics)


def test_corrupted_metrics_names_the_folder(ticket, tmp_path):
    exp, store, *_ = ticket
    copy = _copy_store(store, tmp_path)
    broken = run_folders(exp, copy).round(1)
    (broken / "metrics.json").write_text("{truncated")
    with pytest.raises(StoreError, match=f"Delete {broken} "):
        run_experiment(exp, 3, copy)


# ---- bad input -------------------------------------------------------------------------------------


def test_bad_input_is_rejected_clearly(ticket):
    exp = ticket[0]
    with pytest.raises(ValueError, match="rounds must be >= 0"):
        run_experiment(exp, -1, RunStore("/nonexistent-never-created"))
    for strategy in ("rewind:x", "foo", "rewind:", "rewind:-3"):
        with pytest.raises(ValueError, match=f"unknown strategy '{strategy}'.*rewind:K"):
            replace(exp, strategy=strategy)
    with pytest.raises(ValueError, match="unknown control 'flip'.*reinit, random, shuffle, invert"):
        replace(exp, control="flip")
    with pytest.raises(ValueError, match="the shuffle ablation is defined for pruning at initialization"):
        replace(exp, control="shuffle")
    with pytest.raises(ValueError, match="unknown pruning method 'obd'; choose one of magnitude, large-init, magnitude-increase, movement, magnitude-init"):
        replace(exp, method="obd")
    with pytest.raises(ValueError, match="snip prunes at initialization, straight to each density"):
        replace(exp, method="snip")
    with pytest.raises(ValueError, match="one-shot"):
        replace(exp, strategy="continue", oneshot=(0.5,))
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        replace(exp, oneshot=(1.0,))
    with pytest.raises(ValueError, match="controls"):
        replace(exp, control="random", oneshot=(0.5,))


def test_rewind_past_the_training_budget_is_rejected_up_front(ticket):
    exp = ticket[0]
    assert replace(exp, strategy="rewind:30").rewind_iteration == 30
    with pytest.raises(ValueError, match="rewind:31.*30 iterations"):
        replace(exp, strategy="rewind:31")


def _timeless(rounds: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rounds]


def test_oneshot_targets_are_over_all_weights_for_a_global_rule():
    """ResNet-style: 90 prunable conv weights and 10 never-pruned ones; Pm 0.5 keeps 40 of the 90."""
    from lth_tutorial.rounds import prunable_target
    from lth_tutorial.masks import PruningRule

    weights = {"conv": torch.zeros(90), "shortcut": torch.zeros(10)}
    kinds = {"conv": "conv", "shortcut": "shortcut"}
    rule = PruningRule({"conv": 0.2}, scope="global")
    assert prunable_target(0.5, weights, kinds, rule) == pytest.approx(40 / 90)
    assert prunable_target(0.5, {"fc": torch.zeros(7)}, {"fc": "fc"}, PruningRule({"fc": 0.2})) == 0.5
    with pytest.raises(ValueError, match="below the 10.00% of weights this rule never prunes"):
        prunable_target(0.05, weights, kinds, rule)


def test_folders_name_the_switch_not_torchs_current_state(ticket):
    """Reading a run (a notebook's load_round) before anything trained must find the run's folder."""
    exp, store, run, *_ = ticket
    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(not before)
        assert run_folders(exp, store) == run
        assert run_folders(exp, store, deterministic=False) != run
    finally:
        torch.use_deterministic_algorithms(before)
