"""The paper's reference points: which split each accuracy is on, and where on the Pm axis they sit."""
from __future__ import annotations

import pytest
import torch

from lth_tutorial.masks import ladder_pm
from lth_tutorial.models import create_model, weight_kinds
from lth_tutorial.paper import REFERENCES, Reference, references_for
from lth_tutorial.presets import get_preset, ladder


# the paper's ladders in closed form (paper-facts: LeNet fc 20% / output 10%; ResNet-18 and VGG-19 prune
# their convs globally at 20% and keep 3,200 and 5,120 shortcut/output weights whole)
def lenet_ladder(k):
    return (265_200 * 0.8 ** k + 1_000 * 0.9 ** k) / 266_200


def resnet18_ladder(k):
    return (267_696 * 0.8 ** k + 3_200) / 270_896


def vgg19_ladder(k):
    return (20_018_880 * 0.8 ** k + 5_120) / 20_024_000


def test_the_conv_nets_dense_accuracies_are_validation_accuracies():
    validation = {(key, r.value) for key, refs in REFERENCES.items() for r in refs if r.split == "validation"}
    assert validation == {("conv2", 0.676), ("conv4", 0.75), ("conv6", 0.79)}
    assert all("validation" in r.note and r.density == 1.0 and r.mode == "absolute"
               for refs in REFERENCES.values() for r in refs if r.split == "validation")
    assert all("validation" not in r.note for refs in REFERENCES.values() for r in refs if r.split == "test")
    assert [r.split for r in references_for("conv4-cifar10-dropout")] == ["test"]


def test_reference_split_is_checked():
    assert Reference(0.5, "accuracy", 0.9, "absolute", "x").split == "test"
    with pytest.raises(ValueError, match="split must be one of test, validation; got 'train'"):
        Reference(0.5, "accuracy", 0.9, "absolute", "x", split="train")


def _all_weights_ladder(model: str, k: int) -> float:
    with torch.device("meta"):
        net = create_model(model)
    kinds = weight_kinds(net)
    sizes = {n: p.numel() for n, p in net.named_parameters() if n in kinds}
    return ladder_pm(get_preset(f"{model}-cifar10").paper.pruning, kinds, sizes, k)


def test_deep_ladders_are_over_all_weights_as_the_papers_pm():
    for k in range(0, 21):
        assert resnet18_ladder(k) == pytest.approx(_all_weights_ladder("resnet18", k), rel=1e-12)
        assert vgg19_ladder(k) == pytest.approx(_all_weights_ladder("vgg19", k), rel=1e-12)
    # the Pm the paper quotes for ResNet-18 (rounds 4, 6, 7, 10) and VGG-19 (rounds 12, 15, 19)
    assert [round(resnet18_ladder(k) * 100, 1) for k in (4, 6, 7, 10)] == [41.7, 27.1, 21.9, 11.8]
    assert [round(vgg19_ladder(k) * 100, 1) for k in (12, 15, 19)] == [6.9, 3.5, 1.5]
    assert round(lenet_ladder(15) * 100, 1) == 3.6
    # the one ladder the package uses everywhere is these, for every preset's model
    for k in (0, 1, 4, 15, 19):
        assert ladder("lenet-mnist", k) == pytest.approx(lenet_ladder(k), rel=1e-12)
        assert ladder("resnet18-cifar10", k) == pytest.approx(resnet18_ladder(k), rel=1e-12)
        assert ladder("vgg19-cifar10", k) == pytest.approx(vgg19_ladder(k), rel=1e-12)
        assert ladder("lenet-mnist", k, "quick") == pytest.approx(lenet_ladder(2 * k), rel=1e-12)


def test_resnet_references_sit_on_our_rounds_not_on_the_conv_only_ladder():
    densities = [r.density for r in REFERENCES["resnet18"]]
    assert densities == pytest.approx([1.0, resnet18_ladder(6), resnet18_ladder(4), resnet18_ladder(7)], rel=1e-12)
    assert [round(d * 100, 1) for d in densities] == [100.0, 27.1, 41.7, 21.9]   # as the notes say
    assert all(abs(d - 0.8 ** k) > 0.005 for d, k in zip(densities[1:], (6, 4, 7)))
