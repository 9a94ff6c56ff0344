"""Seeds: one independent stream per (trial, run kind, round, purpose).

Owns `derive_seed`. Each seed is drawn from `numpy.random.SeedSequence` with the tuple as its spawn
key, so every distinct tuple gets a statistically independent 63-bit seed (no arithmetic such as
`1000 * trial + 100 * round`, which made trial t's round k + 10 equal trial t + 1's round k).

What shares a seed, on purpose:
  - a ticket's initialization is the dense network's (trial, "ticket", 0, "init"): every round resets to it;
  - a ticket and its controls train with one data order and dropout stream, (trial, "ticket", 0, "data"),
    so a control differs from its ticket only in what it controls (initialization or mask).
Everything else is distinct: a reinit control draws (trial, "reinit", k, "init") in round k, the random
control its mask from (trial, "random", k, "mask") and its init from (trial, "random", k, "init"); a
method at initialization draws its scoring batch (and random scores) from (trial, "ticket", k, "score"),
which its inverted ablation shares, so both rank one set of scores. The sign controls draw from their own
(trial, kind, k, "init"); the two copies of an instability analysis of round k from
(trial, "instability", k, "data"), shared by a ticket and its controls so they differ only in the start;
a learned supermask its data order and mask draws from (trial, "supermask", k, "data"), a random mask
drawn to compare with a ticket's from (trial, "supermask", k, "mask").
"""
from __future__ import annotations

import numpy as np

# Fixed forever: changing any of these changes every run's result (the store's schema would have to change).
ENTROPY = 0x1077_7EC4_E75  # "lottery tickets"
RUN_KINDS = ("ticket", "reinit", "random", "shuffle", "invert",  # append only, as PURPOSES
             "signed-constant", "signed-reinit", "random-signs", "instability", "supermask")
PURPOSES = ("init", "data", "mask", "score")  # append only: an index is part of every seed's key


def derive_seed(trial: int, kind: str, round_index: int, purpose: str) -> int:
    """A 63-bit seed for torch.manual_seed / torch.Generator, independent for every distinct tuple."""
    if kind not in RUN_KINDS:
        raise ValueError(f"unknown run kind {kind!r} for a seed; kinds are {', '.join(RUN_KINDS)}.")
    if purpose not in PURPOSES:
        raise ValueError(f"unknown seed purpose {purpose!r}; purposes are {', '.join(PURPOSES)}.")
    if trial < 0 or round_index < 0:
        raise ValueError(f"trial and round must be >= 0; got trial {trial}, round {round_index}.")
    key = (trial, RUN_KINDS.index(kind), round_index, PURPOSES.index(purpose))
    state = np.random.SeedSequence(ENTROPY, spawn_key=key).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))  # 63 bits: fits every torch seed API


def stream_seed(seed: int, *key: int) -> int:
    """A seed for a sub-stream of `seed` (an epoch's order, its augmentation): independent per key."""
    state = np.random.SeedSequence(seed, spawn_key=tuple(key)).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))
