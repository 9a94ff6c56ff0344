"""Structured IMP (whole neurons and filters): exact counts, L1 scores, compact models, runs through the store.

Toy tensors and seeded inits for the pruning functions; real MNIST (LeNet) and the CIFAR-10 subset
(Conv-2) batches for the compact models; a tiny real LeNet run (1,200 MNIST examples, 30 iterations
per round) for the rounds, controls and the store.
"""
from __future__ import annotations

import io
import json
from dataclasses import replace

import pytest
import torch

import lth_tutorial.rounds as round_functions
from lth_tutorial.cli import main
from lth_tutorial.data import DataConfig, load_splits
from lth_tutorial.grids import Grid
from lth_tutorial.lottery import run_experiment, run_folders
from lth_tutorial.masks import Mask, PruningRule
from lth_tutorial.models import create_model, weight_kinds
from lth_tutorial.presets import experiment
from lth_tutorial.runner import summary_of
from lth_tutorial.store import RunStore
from lth_tutorial.structured import (alive_units, check_structured, compact_model, prune_units, random_units_like,
                                     unit_counts, unit_scores, units_mask)

QUICK_LENET = PruningRule({"fc": 0.36, "output": 0.19})            # the quick profile's stepped rates
QUICK_CONV2 = PruningRule({"conv": 0.19, "fc": 0.36, "output": 0.19})
TOLERANCE = 1e-5   # float32: dropping the zero terms changes the summation order, not the function


def _model(name: str, seed: int = 0, biases: bool = True):
    """A seeded model's weights and kinds; random biases (training moves them off zero), so a removed
    unit's bias would leak into the next layer unless its outgoing weights are removed too."""
    model = create_model(name, seed=seed)
    weights = model.state_dict()
    if biases:
        generator = torch.Generator().manual_seed(seed)
        weights = {k: torch.randn(v.shape, generator=generator) if k.endswith(".bias") else v
                   for k, v in weights.items()}
    kinds = weight_kinds(model)
    return weights, kinds, Mask.ones_like({n: weights[n] for n in kinds})


def _kill(mask: Mask, kinds: dict[str, str], dead: dict[str, list[int]]) -> Mask:
    """The structured mask with the listed units (layer name -> unit indices) removed too."""
    alive = alive_units(mask)
    for name, units in dead.items():
        alive[name] = alive[name].clone()
        alive[name][units] = False
    return units_mask(alive, kinds, mask)


def _removed(before: Mask, after: Mask) -> dict[str, int]:
    return {n: int(before[n].sum()) - int(after[n].sum()) for n in before}


# ---- what removing a unit removes ------------------------------------------------------------------


def test_a_lenet_neuron_takes_its_row_and_its_outgoing_column():
    _, kinds, dense = _model("lenet", biases=False)
    mask = _kill(dense, kinds, {"fc.0.weight": [5]})
    assert _removed(dense, mask) == {"fc.0.weight": 784, "fc.2.weight": 100, "fc.4.weight": 0}
    assert not mask["fc.0.weight"][5].any() and not mask["fc.2.weight"][:, 5].any()
    # a neuron of the second layer: its 300 inputs (one already gone with neuron 5) and 10 outgoing weights
    both = _kill(mask, kinds, {"fc.2.weight": [7]})
    assert _removed(mask, both) == {"fc.0.weight": 0, "fc.2.weight": 299, "fc.4.weight": 10}
    assert unit_counts(both) == {"fc.0.weight": 299, "fc.2.weight": 99, "fc.4.weight": 10}
    check_structured(both, kinds)


def test_a_conv_filter_takes_its_kernels_the_next_convs_channel_and_its_flattened_fc_columns():
    _, kinds, dense = _model("conv2", biases=False)
    assert dense["fc.0.weight"].shape == (256, 64 * 16 * 16)   # 64 channels of 16 x 16 after the pool
    first = _kill(dense, kinds, {"features.0.weight": [1]})
    assert _removed(dense, first) == {"features.0.weight": 27, "features.2.weight": 64 * 9, "fc.0.weight": 0,
                                      "fc.2.weight": 0, "fc.4.weight": 0}
    last = _kill(first, kinds, {"features.2.weight": [3]})
    # its 3x3 kernels over the 63 channels left, and the 256 flattened columns of channel 3, in each of 256 rows
    assert _removed(first, last) == {"features.0.weight": 0, "features.2.weight": 63 * 9,
                                     "fc.0.weight": 256 * 256, "fc.2.weight": 0, "fc.4.weight": 0}
    fc = last["fc.0.weight"]
    assert not fc[:, 3 * 256:4 * 256].any() and fc[:, :3 * 256].all() and fc[:, 4 * 256:].all()
    conv = last["features.2.weight"]
    assert not conv[3].any() and not conv[:, 1].any() and conv[torch.arange(64) != 3][:, [0, *range(2, 64)]].all()


# ---- scores and one round ---------------------------------------------------------------------------


def test_unit_scores_are_l1_norms_of_the_surviving_incoming_weights():
    weights = {"a": torch.tensor([[1.0, -2.0, 3.0], [0.5, -0.5, 0.0]]),
               "b": torch.arange(-8.0, 8.0).view(2, 2, 2, 2)}
    mask = Mask({"a": torch.tensor([[True, False, True], [True, True, True]]), "b": torch.ones(2, 2, 2, 2, dtype=torch.bool)})
    scores = unit_scores(weights, mask)
    assert scores["a"].tolist() == [4.0, 1.0]          # |1| + |3| (the -2 is pruned); |0.5| + |-0.5| + 0
    assert scores["b"].tolist() == [36.0, 28.0]        # 8+7+...+1 ; 0+1+...+7 (each filter's L1 norm)


def test_one_round_removes_round_rate_times_units_lowest_scores_first_and_never_output_units():
    weights, kinds, dense = _model("lenet")
    mask = prune_units(weights, dense, kinds, QUICK_LENET)
    # round(0.36 * 300) = 108 and round(0.36 * 100) = 36 fewer; the output rate is ignored: classes stay
    assert unit_counts(mask) == {"fc.0.weight": 192, "fc.2.weight": 64, "fc.4.weight": 10}
    assert {n: int(m.sum()) for n, m in mask.items()} == {"fc.0.weight": 192 * 784, "fc.2.weight": 64 * 192,
                                                          "fc.4.weight": 10 * 64}
    scores, alive = unit_scores(weights, dense), alive_units(mask)
    for name in ("fc.0.weight", "fc.2.weight"):
        assert scores[name][~alive[name]].max() <= scores[name][alive[name]].min()
    again = prune_units(weights, mask, kinds, QUICK_LENET)
    # 192 -> 192 - round(69.12) = 123, 64 -> 64 - round(23.04) = 41; nothing removed comes back
    assert unit_counts(again) == {"fc.0.weight": 123, "fc.2.weight": 41, "fc.4.weight": 10}
    assert all(bool((again[n] <= mask[n]).all()) for n in mask)
    conv_weights, conv_kinds, conv_dense = _model("conv2")
    conv = prune_units(conv_weights, conv_dense, conv_kinds, QUICK_CONV2)
    # round(0.19 * 64) = 12 filters, round(0.36 * 256) = 92 units
    assert unit_counts(conv) == {"features.0.weight": 52, "features.2.weight": 52, "fc.0.weight": 164,
                                 "fc.2.weight": 164, "fc.4.weight": 10}
    assert int(conv["fc.0.weight"].sum()) == 164 * 52 * 256


def test_a_round_never_removes_a_layers_last_unit_and_ties_go_by_position():
    weights = {"h": torch.ones(2, 3), "out": torch.ones(2, 2)}
    kinds = {"h": "fc", "out": "output"}
    mask = prune_units(weights, Mask.ones_like(weights), kinds, PruningRule({"fc": 0.9, "output": 0.5}))
    assert mask["h"].tolist() == [[False] * 3, [True] * 3]     # round(1.8) = 2 capped at 1; unit 0 goes first
    assert mask["out"].tolist() == [[False, True], [False, True]]
    again = prune_units(weights, mask, kinds, PruningRule({"fc": 0.9}))   # one unit left: it stays
    assert {n: m.tolist() for n, m in again.items()} == {n: m.tolist() for n, m in mask.items()}


def test_the_random_control_keeps_each_layers_unit_count_at_other_units():
    weights, kinds, dense = _model("conv2")
    ticket = prune_units(weights, dense, kinds, QUICK_CONV2)
    random = random_units_like(ticket, kinds, seed=3)
    assert unit_counts(random) == unit_counts(ticket)
    check_structured(random, kinds)
    assert not torch.equal(alive_units(random)["features.0.weight"], alive_units(ticket)["features.0.weight"])
    assert torch.equal(random["features.0.weight"], random_units_like(ticket, kinds, seed=3)["features.0.weight"])


# ---- compact models ----------------------------------------------------------------------------------


def _masked_model(name: str, weights, mask):
    model = create_model(name)
    model.load_state_dict({k: v * mask[k] if k in mask else v for k, v in weights.items()})
    return model.eval()


@pytest.mark.parametrize("name, rule, widths, data", [
    ("lenet", QUICK_LENET, [123, 41, 10], DataConfig("mnist", 1_200, 200, test_examples=500)),
    ("conv2", QUICK_CONV2, [42, 42, 105, 105, 10], DataConfig("cifar10", 4_000, 500, test_examples=1_000)),
])
def test_a_compact_model_computes_what_the_masked_model_does(name, rule, widths, data, request):
    request.getfixturevalue("cifar_root" if data.dataset == "cifar10" else "data_root")
    weights, kinds, mask = _model(name)
    for _ in range(2):   # two quick rounds
        mask = prune_units(weights, mask, kinds, rule)
    compact = compact_model(name, weights, mask).eval()
    layers = [m for m in compact.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert [getattr(m, "out_channels", None) or m.out_features for m in layers] == widths
    assert f"units {'-'.join(map(str, widths))} of" in compact.description
    kept = sum(p.numel() for n, p in compact.named_parameters() if n.endswith(".weight"))
    assert kept == mask.surviving()   # every surviving weight, nothing else
    images = load_splits(data).test.images[:128]     # a batch of real MNIST / CIFAR-10 test images
    with torch.no_grad():
        expected, got = _masked_model(name, weights, mask)(images), compact(images)
    assert float((got - expected).abs().max()) <= TOLERANCE
    assert torch.equal(got.argmax(1), expected.argmax(1))
    # its state_dict loads with weights_only, into itself, under the full model's layer names
    buffer = io.BytesIO()
    torch.save(compact.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert set(state) == {f"{n[:-len('.weight')]}.{p}" for n in kinds for p in ("weight", "bias")}
    compact.load_state_dict(state)
    exported = torch.export.export(compact, (images[:4],)).module()
    assert torch.equal(exported(images[:4]), compact(images[:4]))


def test_only_structured_masks_of_sequential_nets_become_compact_models():
    weights, kinds, dense = _model("lenet", biases=False)
    unstructured = Mask(dense)
    unstructured["fc.0.weight"] = dense["fc.0.weight"].clone()
    unstructured["fc.0.weight"][0, 0] = False
    with pytest.raises(ValueError, match="does not remove whole units.*structure='units'"):
        compact_model("lenet", weights, unstructured)
    with pytest.raises(ValueError, match="compact models are built for lenet, conv2, conv4, conv6; vgg19"):
        compact_model("vgg19", weights, dense)


# ---- runs: rounds, controls, the store, keys -----------------------------------------------------------


def tiny(**kwargs):
    exp = experiment("lenet-mnist", "quick", **kwargs)
    return replace(exp, train=replace(exp.train, iterations=30, eval_every=10),
                   data=replace(exp.data, train_examples=1_200, validation_size=200, test_examples=500))


def _refuse(*args, **kwargs):
    raise AssertionError("train must not be called")


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_structured_imp_runs_with_its_controls_and_resumes_from_the_store(tmp_path, data_root):
    store, exp = RunStore(tmp_path), tiny(structure="units")
    splits = load_splits(exp.data)
    metrics = run_experiment(exp, 2, store, splits=splits)
    run = run_folders(exp, store)
    counts = [{"fc.0.weight": 300, "fc.2.weight": 100, "fc.4.weight": 10},
              {"fc.0.weight": 192, "fc.2.weight": 64, "fc.4.weight": 10},
              {"fc.0.weight": 123, "fc.2.weight": 41, "fc.4.weight": 10}]
    assert [m["units"] for m in metrics] == counts
    # Pm is still the fraction of weights: 192*784 + 64*192 + 10*64 of 266,200 after round 1
    assert metrics[1]["density"] == (192 * 784 + 64 * 192 + 640) / 266_200
    kinds = weight_kinds(create_model("lenet"))
    trained1 = _load(run.round(1) / "trained.pt")
    mask1, mask2 = Mask(_load(run.round(1) / "mask.pt")), Mask(_load(run.round(2) / "mask.pt"))
    expected = prune_units(trained1, mask1, kinds, exp.pruning)   # round 1's trained weights, by unit L1
    assert all(torch.equal(mask2[n], expected[n]) for n in kinds)
    for control in ("reinit", "random"):
        ran = run_experiment(replace(exp, control=control), 2, store, splits=splits)
        assert [m["units"] for m in ran] == counts[1:]
        own = Mask(_load(run_folders(replace(exp, control=control), store).round(2) / "mask.pt"))
        check_structured(own, kinds)
        assert all(torch.equal(own[n], mask2[n]) for n in kinds) == (control == "reinit")
    # everything is in the store now: asking again trains nothing and gives the same rounds
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(round_functions, "train", _refuse)
        assert run_experiment(exp, 2, store, splits=splits) == metrics
        assert run_experiment(replace(exp, control="random"), 2, store, splits=splits)[-1]["units"] == counts[2]
    # the dense round 0 is shared with the unstructured ticket; the tickets are apart
    plain = run_folders(tiny(), store)
    assert plain.dense == run.dense and plain.ticket != run.ticket
    assert run.ticket.name.startswith("t0-units-reset-") and plain.ticket.name.startswith("t0-reset-")
    rewound = run_experiment(tiny(structure="units", strategy="rewind:10"), 1, store, splits=splits)
    assert rewound[1]["start_iteration"] == 10 and rewound[1]["units"] == counts[1]


def test_existing_run_keys_and_summaries_are_unchanged():
    plain = tiny()
    assert plain.structure == "weights"
    assert "structure" not in plain.ticket_key() and "structure" not in plain.dense_key()
    units = tiny(structure="units")
    assert units.ticket_key() == {**plain.ticket_key(), "structure": "units"}
    assert units.dense_key() == plain.dense_key()
    assert "structure" not in summary_of([(plain, [])], 1)["config"]
    summary = summary_of([(units, [])], 1)
    assert summary["config"]["structure"] == "units" and summary["runs"][0]["structure"] == "units"
    cells = Grid(("lenet-mnist",), ("quick",), trials=1, rounds=1, structures=("weights", "units")).cells()
    assert [[e.structure for e in c["experiments"]] for c in cells] == [["weights"], ["units"]]


# ---- bad input ---------------------------------------------------------------------------------------


def test_bad_structures_are_one_clear_line():
    exp = tiny()
    with pytest.raises(ValueError, match="unknown structure 'bricks'; choose one of weights, units"):
        replace(exp, structure="bricks")
    with pytest.raises(ValueError, match="removes neurons or filters of lenet, conv2, conv4, conv6; vgg19"):
        experiment("vgg19-cifar10", "quick", structure="units")
    with pytest.raises(ValueError, match="iterative magnitude pruning of units.*drop --method and --oneshot"):
        tiny(structure="units", method="movement")
    with pytest.raises(ValueError, match="drop --method and --oneshot"):
        tiny(structure="units", oneshot=(0.5,))
    with pytest.raises(ValueError, match="drop --scope global"):
        tiny(structure="units", scope="global", rates={"fc": 0.2, "output": 0.2})


def test_the_cli_takes_structure_units_and_refuses_what_it_cannot_do(tmp_path, capsys, data_root):
    out = tmp_path / "units.json"
    assert main(["run", "lenet-mnist", "--profile", "quick", "--rounds", "1", "--trials", "1", "--structure", "units",
                 "--iterations", "30", "--eval-every", "10", "--store", str(tmp_path / "store"),
                 "--json", str(out)]) == 0
    assert "pruning fc 0.36 per round (layerwise, of whole units)" in capsys.readouterr().out
    summary = json.loads(out.read_text())
    assert summary["runs"][0]["structure"] == "units"
    assert summary["runs"][0]["rounds"][1]["units"] == {"fc.0.weight": 192, "fc.2.weight": 64, "fc.4.weight": 10}
    assert main(["run", "resnet18-cifar10", "--structure", "units", "--store", str(tmp_path / "store")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "lth: error: structured pruning removes neurons or filters of lenet, conv2, conv4, conv6; resnet18 is not "
        "supported: use --structure weights."]
    assert main(["sweep", "lenet-mnist", "--structure", "bricks"]) == 2
    assert capsys.readouterr().err.strip() == "lth: error: --structure takes weights or units (comma-separated); got 'bricks'."
