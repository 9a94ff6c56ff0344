"""Masked training: the lr schedule, no revival of pruned weights, the paper's metrics, determinism."""
from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

import lth_tutorial.training as training
from lth_tutorial.data import Split, Splits
from lth_tutorial.masks import Mask, PruningRule, prune_magnitude
from lth_tutorial.models import create_model, weight_kinds
from lth_tutorial.training import TrainConfig, apply_mask, evaluate, summarize, train

ADAM = TrainConfig("adam", 1e-3, 32, 200, eval_every=50)
SGD = TrainConfig("sgd", 0.05, 32, 200, momentum=0.9, weight_decay=1e-3, eval_every=50)


@pytest.fixture(scope="module")
def splits() -> Splits:
    """A learnable synthetic MNIST-shaped task: labels from a fixed random linear teacher."""
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(28 * 28, 10, generator=g)

    def split(n: int) -> Split:
        images = torch.randn(n, 1, 28, 28, generator=g)
        return Split(images, (images.flatten(1) @ teacher).argmax(1))

    return Splits(split(400), split(100), split(100))


def _pruned_lenet(rounds: int = 10, seed: int = 0, dropout: float = 0.0) -> tuple[torch.nn.Module, Mask]:
    """LeNet pruned by magnitude of its init: `rounds` rounds at fc 20% / output 10% (10 -> ~90% pruned)."""
    model = create_model("lenet", seed=seed, dropout=dropout)
    kinds = weight_kinds(model)
    weights = {n: p.detach() for n, p in model.named_parameters() if n in kinds}
    mask = Mask.ones_like(weights)
    for _ in range(rounds):
        mask = prune_magnitude(weights, mask, kinds, PruningRule({"fc": 0.2, "output": 0.1}))
    return model, mask


# ---- the learning-rate schedule ----------------------------------------------------------------------


def test_lr_factor_warmup_is_linear_to_one():
    config = TrainConfig("sgd", 0.1, 64, 1_000, warmup=10)
    assert [config.lr_factor(i) for i in (0, 1, 4, 8, 9, 10, 999)] == [0.1, 0.2, 0.5, 0.9, 1.0, 1.0, 1.0]
    config = TrainConfig("sgd", 0.03, 128, 30_000, warmup=20_000)
    assert config.lr_factor(0) == 1 / 20_000
    assert config.lr_factor(9_999) == 0.5
    assert config.lr_factor(19_999) == 1.0


def test_lr_factor_milestones_multiply_by_gamma():
    config = TrainConfig("sgd", 0.1, 128, 30_000, milestones=(20_000, 25_000))
    assert config.lr_factor(0) == 1.0
    assert config.lr_factor(19_999) == 1.0
    assert config.lr_factor(20_000) == 0.1
    assert config.lr_factor(24_999) == 0.1
    assert config.lr_factor(25_000) == pytest.approx(0.01, rel=1e-12)
    assert TrainConfig("sgd", 0.1, 1, 10, milestones=(5,), gamma=0.5).lr_factor(7) == 0.5
    both = TrainConfig("sgd", 0.1, 1, 100, warmup=4, milestones=(2,))
    assert [both.lr_factor(i) for i in range(5)] == pytest.approx([0.25, 0.5, 0.075, 0.1, 0.1], rel=1e-12)


def test_steps_use_the_scheduled_lr(splits, monkeypatch):
    seen = []

    def recording(model, config):
        optimizer = make_optimizer(model, config)
        optimizer.register_step_pre_hook(lambda opt, *_: seen.append(opt.param_groups[0]["lr"]))
        return optimizer

    make_optimizer = training.make_optimizer
    monkeypatch.setattr(training, "make_optimizer", recording)
    config = TrainConfig("sgd", 0.1, 32, 8, warmup=4, milestones=(6,), eval_every=8)
    model, mask = _pruned_lenet(1)
    train(model, mask, splits, config, seed=0)
    assert seen == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.01, 0.01], rel=1e-12)


def test_config_validation():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig("rmsprop", 0.1, 1, 1)
    with pytest.raises(ValueError, match="positive"):
        TrainConfig("adam", 0.1, 1, 0)


# ---- no revival ------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [ADAM, SGD], ids=["adam", "sgd-momentum-wd"])
def test_pruned_weights_stay_exactly_zero(splits, config, monkeypatch):
    model, mask = _pruned_lenet()
    assert 0.09 < mask.density() < 0.12
    # give the pruned weights non-zero values at entry: train must zero them itself
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizers = []

    def capture(model, config):
        optimizers.append(real_make_optimizer(model, config))
        return optimizers[-1]

    real_make_optimizer = training.make_optimizer
    monkeypatch.setattr(training, "make_optimizer", capture)
    params = dict(model.named_parameters())
    violations, forwards = [], [0]

    def check(module, inputs):  # before every forward: every training step and every evaluation
        forwards[0] += 1
        for name, m in mask.items():
            if params[name][~m].abs().max() != 0:
                violations.append((forwards[0], name))

    handle = model.register_forward_pre_hook(check)
    metrics, _ = train(model, mask, splits, config, seed=3)
    handle.remove()
    assert forwards[0] >= config.iterations
    assert violations == []
    for name, m in mask.items():
        assert torch.equal(params[name].detach()[~m], torch.zeros(int((~m).sum())))
        # survivors did train
        assert not torch.equal(params[name].detach()[m], start[name][m])
    (optimizer,) = optimizers
    keys = ("exp_avg", "exp_avg_sq") if config.optimizer == "adam" else ("momentum_buffer",)
    for name, m in mask.items():
        state = optimizer.state[params[name]]
        for key in keys:
            assert torch.count_nonzero(state[key][~m]) == 0, (name, key)
            assert torch.count_nonzero(state[key][m]) > 0, (name, key)
    # and it learned something on the synthetic task
    assert metrics["curves"]["train_loss"][-1] < metrics["curves"]["train_loss"][0]


def test_apply_mask_zeroes_only_pruned():
    model = create_model("lenet", seed=1)
    mask = Mask({"fc.4.weight": torch.zeros(10, 100, dtype=torch.bool)})
    mask["fc.4.weight"][0, :7] = True
    before = copy.deepcopy(model.state_dict())
    apply_mask(model, mask)
    after = model.state_dict()
    assert torch.count_nonzero(after["fc.4.weight"]) == 7
    assert torch.equal(after["fc.4.weight"][0, :7], before["fc.4.weight"][0, :7])
    assert torch.equal(after["fc.0.weight"], before["fc.0.weight"])


# ---- metrics ---------------------------------------------------------------------------------------


def _curves(val_loss, test_accuracy, iterations=None):
    n = len(val_loss)
    return {"iteration": iterations or [100 * (i + 1) for i in range(n)], "train_loss": [1.0] * n,
            "val_loss": val_loss, "val_accuracy": [0.5 + i / 100 for i in range(n)],
            "test_loss": [1.0] * n, "test_accuracy": test_accuracy}


def test_summarize_early_stop_is_minimum_validation_loss():
    curves = _curves([0.9, 0.5, 0.3, 0.4, 0.35], [0.80, 0.85, 0.90, 0.97, 0.93])
    summary = summarize(curves)
    assert summary == {"early_stop_iteration": 300, "early_stop_val_loss": 0.3,
                       "early_stop_val_accuracy": 0.52, "early_stop_test_accuracy": 0.90,
                       "final_test_accuracy": 0.93}


def test_summarize_tie_takes_the_earliest():
    curves = _curves([0.9, 0.2, 0.5, 0.2, 0.2], [0.1, 0.2, 0.3, 0.4, 0.5])
    summary = summarize(curves)
    assert summary["early_stop_iteration"] == 200
    assert summary["early_stop_test_accuracy"] == 0.2
    assert summary["final_test_accuracy"] == 0.5


def test_summarize_report_at_is_exact_and_refuses_an_iteration_never_evaluated():
    curves = _curves([0.5] * 5, [0.1, 0.2, 0.3, 0.4, 0.5], iterations=[10, 20, 30, 40, 47])
    summary = summarize(curves, report_at=(20, 47))
    assert summary["test_accuracy_at_20"] == 0.2
    assert summary["test_accuracy_at_47"] == 0.5
    assert summary["early_stop_iteration"] == 10
    for missing in (11, 1_000):
        with pytest.raises(ValueError, match=f"report_at iteration {missing} was not evaluated"):
            summarize(curves, report_at=(missing,))


def test_train_evaluates_the_report_at_points_off_the_cadence(splits):
    model, mask = _pruned_lenet(2)
    metrics, _ = train(model, mask, splits, replace(ADAM, iterations=30, eval_every=20, report_at=(7, 30)), seed=0)
    assert metrics["curves"]["iteration"] == [7, 20, 30]
    assert metrics["test_accuracy_at_7"] == metrics["curves"]["test_accuracy"][0]


def test_resuming_at_k_continues_the_schedule_the_data_order_and_the_budget(splits):
    """Rewinding (Frankle et al.): from iteration K the lr, the batches and the count go on as in one run."""
    config = replace(ADAM, iterations=12, eval_every=4, warmup=8, milestones=(10,))
    seen: dict[str, list] = {"full": [], "resumed": []}

    def recording(key):
        def hook(module, args):
            seen[key].append(args[0].detach().clone())
        return hook

    full_model, mask = _pruned_lenet(1)
    handle = full_model.register_forward_pre_hook(recording("full"))
    lrs_full = _lrs(full_model, mask, splits, config, start=0)
    handle.remove()
    resumed_model, _ = _pruned_lenet(1)
    handle = resumed_model.register_forward_pre_hook(recording("resumed"))
    lrs_resumed = _lrs(resumed_model, mask, splits, config, start=5)
    handle.remove()
    assert lrs_resumed == lrs_full[5:]  # iterations 6..12: warmup from 6/8 on, then the milestone at 10
    assert lrs_full[:3] == pytest.approx([ADAM.lr / 8, 2 * ADAM.lr / 8, 3 * ADAM.lr / 8])
    train_batches = lambda xs: [x for x in xs if len(x) == config.batch_size]  # evaluations use other sizes
    full, resumed = train_batches(seen["full"]), train_batches(seen["resumed"])
    assert len(full) == 12 and len(resumed) == 7
    assert all(torch.equal(a, b) for a, b in zip(full[5:], resumed))
    model, _ = _pruned_lenet(1)
    metrics, _ = train(model, mask, splits, config, seed=0, start_iteration=5)
    assert metrics["curves"]["iteration"] == [8, 12]
    with pytest.raises(ValueError, match="start_iteration"):
        train(model, mask, splits, config, seed=0, start_iteration=12)


def _lrs(model, mask, splits, config, start):
    """The lr of every optimizer step train() takes (read off the optimizer through a step hook)."""
    lrs = []
    original = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        lrs.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.Adam, "step", step)
        train(model, mask, splits, config, seed=0, start_iteration=start)
    return lrs


def test_train_metrics_are_consistent_with_curves(splits):
    model, mask = _pruned_lenet(2)
    config = replace(ADAM, iterations=45, eval_every=20, report_at=(20, 45))
    metrics, snapshot = train(model, mask, splits, config, seed=0)
    assert snapshot is None
    curves = metrics["curves"]
    assert curves["iteration"] == [20, 40, 45]  # every eval_every, plus the last iteration
    assert set(curves) == {"iteration", "train_loss", "val_loss", "val_accuracy", "test_loss", "test_accuracy"}
    assert {k: v for k, v in metrics.items() if k != "curves"} == summarize(curves, (20, 45))
    # the last evaluation is of the final model
    loss, accuracy = evaluate(model, splits.test)
    assert curves["test_loss"][-1] == pytest.approx(float(loss), rel=1e-6)
    assert curves["test_accuracy"][-1] == float(accuracy)


def test_evaluate_exact_values():
    model = torch.nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    images = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 3.0]])
    labels = torch.tensor([0, 1, 1, 2])
    loss, accuracy = evaluate(model, Split(images, labels), batch_size=3)  # two batches
    assert float(accuracy) == 0.5
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(images @ model.weight.T, labels)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


# ---- determinism and snapshots ---------------------------------------------------------------------


def _run(splits, config, seed, model, mask, **kwargs):
    model = copy.deepcopy(model)
    metrics, snapshot = train(model, mask, splits, config, seed=seed, **kwargs)
    return metrics, snapshot, model.state_dict()


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_same_seed_same_run_different_seed_different_run(splits, dropout):
    model, mask = _pruned_lenet(3, seed=5, dropout=dropout)
    config = replace(ADAM, iterations=40, eval_every=10)
    a, _, state_a = _run(splits, config, 11, model, mask)
    b, _, state_b = _run(splits, config, 11, model, mask)
    c, _, state_c = _run(splits, config, 12, model, mask)
    assert a == b  # bitwise: float equality of every recorded value
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert a["curves"]["train_loss"] != c["curves"]["train_loss"]
    assert not torch.equal(state_a["fc.0.weight"], state_c["fc.0.weight"])


def test_training_does_not_touch_the_global_rng(splits):
    model, mask = _pruned_lenet(1)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(model, mask, splits, replace(ADAM, iterations=5, eval_every=5), seed=0)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("config", [ADAM, replace(SGD, warmup=10, milestones=(15,))], ids=["adam", "sgd"])
def test_snapshot_at_k_is_the_state_after_k_iterations(splits, config):
    model, mask = _pruned_lenet(2)
    config = replace(config, iterations=30, eval_every=7)
    _, snapshot, final = _run(splits, config, 4, model, mask, snapshot_at=20)
    _, none, stopped = _run(splits, replace(config, iterations=20), 4, model, mask)
    assert none is None
    assert snapshot.keys() == stopped.keys()
    assert all(torch.equal(snapshot[k], stopped[k]) for k in snapshot)
    assert not torch.equal(snapshot["fc.0.weight"], final["fc.0.weight"])
    # a snapshot is a copy, not a view of the live parameters
    assert all(snapshot[k].data_ptr() != final[k].data_ptr() for k in snapshot)


def test_snapshot_at_zero_is_the_masked_start(splits):
    model, mask = _pruned_lenet(2)
    _, snapshot, _ = _run(splits, replace(ADAM, iterations=3, eval_every=3), 0, model, mask, snapshot_at=0)
    for name, value in model.state_dict().items():
        expected = value * mask[name] if name in mask else value
        assert torch.equal(snapshot[name], expected)


def test_progress_counts_every_iteration(splits):
    class Counter:
        total = 0

        def update(self, n):
            self.total += n

    counter = Counter()
    model, mask = _pruned_lenet(1)
    train(model, mask, splits, replace(ADAM, iterations=23, eval_every=10), seed=0, progress=counter)
    assert counter.total == 23
