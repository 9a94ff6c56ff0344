"""The paper's reported numbers (from ../shared/paper-facts.md), as data for plots and comparisons.

Owns: reference points per experiment family. The paper reports most LeNet and Conv results *relative
to the unpruned network*, so a point is either absolute, or relative to our own dense round 0
(`delta_pp`: percentage points of test accuracy; `ratio`: early-stop iteration as a fraction of the
dense network's). Plots anchor relative points on our dense run and label them as the paper's.
A point also says which split the paper measured (`split`): most are test accuracy, but the Conv nets'
dense accuracies are *validation* accuracy, and plots draw those apart (hollow, own label).
Densities are the paper's Pm: the fraction of *all* weights that remain, the never-pruned shortcut
and output weights of ResNet-18 / VGG-19 included (the same axis as our rounds' `density`).
Nothing here is a result of ours.
"""
from __future__ import annotations

from dataclasses import dataclass

from .presets import ladder

SPLITS = ("test", "validation")


@dataclass(frozen=True)
class Reference:
    density: float      # Pm: fraction of all weights remaining
    metric: str         # "accuracy" or "early_stop"
    value: float        # absolute accuracy (fraction), delta in pp, or ratio to dense
    mode: str           # "absolute", "delta_pp" (vs dense) or "ratio" (vs dense)
    note: str
    split: str = "test"  # the split the paper's accuracy is on; ours are test accuracies

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {self.split!r}.")


REFERENCES: dict[str, list[Reference]] = {
    "lenet": [
        Reference(0.211, "early_stop", 0.62, "ratio", "38% earlier than dense at Pm 21.1%"),
        Reference(0.036, "early_stop", 1.0, "ratio", "back to dense speed at Pm 3.6%"),
        Reference(0.135, "accuracy", 0.3, "delta_pp", "+0.3 pp at Pm 13.5%"),
        Reference(0.036, "accuracy", 0.0, "delta_pp", "back to dense accuracy at Pm 3.6%"),
    ],
    "conv2": [
        Reference(0.088, "early_stop", 1 / 3.5, "ratio", "3.5x faster at Pm 8.8%"),
        Reference(0.046, "accuracy", 3.4, "delta_pp", "+3.4 pp at Pm 4.6%"),
        Reference(1.0, "accuracy", 0.676, "absolute", "dense validation accuracy ~67.6%", split="validation"),
    ],
    "conv4": [
        Reference(0.092, "early_stop", 1 / 3.5, "ratio", "3.5x faster at Pm 9.2%"),
        Reference(0.111, "accuracy", 3.5, "delta_pp", "+3.5 pp at Pm 11.1%"),
        Reference(1.0, "accuracy", 0.75, "absolute", "dense validation accuracy ~75%", split="validation"),
        Reference(0.054, "accuracy", 0.786, "absolute", "ticket ~78.6% at Pm 5.4%"),
    ],
    "conv6": [
        Reference(0.151, "early_stop", 1 / 2.5, "ratio", "2.5x faster at Pm 15.1%"),
        Reference(0.264, "accuracy", 3.3, "delta_pp", "+3.3 pp at Pm 26.4%"),
        Reference(1.0, "accuracy", 0.79, "absolute", "dense validation accuracy ~79%", split="validation"),
        Reference(0.093, "accuracy", 0.815, "absolute", "ticket ~81.5% at Pm 9.3%"),
    ],
    "conv4-dropout": [
        Reference(0.076, "early_stop", 1 / 1.58, "ratio", "1.58x faster at Pm 7.6% (with dropout)"),
    ],
    # placed on the ladder the paper's Pm come from (its rounds 6, 4 and 7), so they sit on our rounds
    "resnet18": [
        Reference(1.0, "accuracy", 0.905, "absolute", "dense at lr 0.1: 90.5%"),
        Reference(ladder("resnet18-cifar10", 6), "accuracy", 0.905, "absolute", "warmup ticket 90.5% at Pm 27.1%"),
        Reference(ladder("resnet18-cifar10", 4), "accuracy", 0.895, "absolute", "lr 0.01 best tickets 89.5% (Pm 41.7%-21.9%)"),
        Reference(ladder("resnet18-cifar10", 7), "accuracy", 0.895, "absolute", "lr 0.01 best tickets 89.5% (Pm 41.7%-21.9%)"),
    ],
    "vgg19": [],
}

# Statements that are not points on a curve, quoted where a notebook or report compares.
CLAIMS: dict[str, list[str]] = {
    "lenet": [
        "Winning tickets learn faster as Pm falls to 21.1% (early stopping 38% earlier), then slow again.",
        "Test accuracy rises by more than 0.3 pp at Pm = 13.5%, back to the original's at Pm = 3.6%.",
        "Random reinitialization: accuracy starts falling at Pm = 21.1% (winning tickets: 2.9%).",
        "At Pm = 21%, the ticket reaches minimum validation loss 2.51x faster and is 0.5 pp more accurate.",
        "One-shot: more accurate than the original for 95.0% >= Pm >= 5.17%; iterative better at small Pm.",
    ],
    "conv": [
        "Conv-2: 3.5x faster at Pm 8.8%, +3.4 pp at Pm 4.6%.",
        "Conv-4: 3.5x faster at Pm 9.2%, +3.5 pp at Pm 11.1%.",
        "Conv-6: 2.5x faster at Pm 15.1%, +3.3 pp at Pm 26.4%.",
        "All stay above the original's test accuracy while Pm > 2%.",
    ],
    "dropout": [
        "Dropout alone adds 2.1 / 3.0 / 2.4 pp (Conv-2/4/6); pruning then adds up to 2.3 / 4.6 / 4.7 pp more.",
        "Speed-ups with dropout are smaller (Conv-4: 1.58x at Pm 7.6% vs 4.27x without).",
    ],
    "deep": [
        "At lr 0.1 (no warmup) IMP finds no winning tickets in VGG-19 or ResNet-18.",
        "VGG-19 at lr 0.01: within 1 pp of the original for Pm >= 3.5%; with warmup, tickets down to 1.5%.",
        "ResNet-18 with warmup (0.03, 20K): 90.5% at Pm 27.1%, winning tickets down to Pm 11.8%.",
        "Global pruning finds smaller tickets than layer-wise on these deep nets (VGG-19: 1.5% vs 6.9%).",
    ],
}


def references_for(preset: str) -> list[Reference]:
    """Reference points for a preset name (e.g. 'conv4-cifar10-dropout' -> conv4-dropout)."""
    model = preset.split("-")[0]
    key = f"{model}-dropout" if preset.endswith("-dropout") else model
    return REFERENCES.get(key, [])
