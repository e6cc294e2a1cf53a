"""Deterministic, seeded splits of a data set.

The paper compares training on 200 pairs with training on 1000 pairs of the same data set, on the
same test set. So the split works in this order: names are sorted (file order on disk must not
matter), shuffled by the seed, the test set is cut first, then the validation set, and the
training subset of ``n_train`` pairs is the *first* ``n_train`` of the remaining pool. Hence for one
seed the test set never depends on ``n_train`` and the 200-pair set is inside the 1000-pair set.

Validation takes ``val_fraction`` of the pairs left after the test part, at least one; by
default (``val_fraction`` None) 10%, and none when fewer than :data:`MIN_PAIRS_TO_VALIDATE`
pairs are left: one or two validation images would choose a checkpoint by their noise and
take a third of a few-image set from training (issue 29). Such a run keeps its last step.

The split is written to every run folder (``split.json``) so a run can be reproduced exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cganseg.errors import InputError
from cganseg.runtime.atomic import write_text

#: the default validation share, and the fewest pairs (after the test part) it is taken from
DEFAULT_VAL_FRACTION, MIN_PAIRS_TO_VALIDATE = 0.1, 10


def make_split(
    names: Sequence[str],
    *,
    val_fraction: float | None = None,
    test_fraction: float = 0.0,
    n_train: int | None = None,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Split names into ``train``/``val``/``test`` lists (order: module docstring)."""
    for label, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if frac is not None and not 0.0 <= frac < 1.0:
            raise InputError(f"{label} must be in [0, 1), got {frac}")
    order = sorted(names)
    perm = np.random.default_rng(seed).permutation(len(order))
    shuffled = [order[i] for i in perm]
    n_test = math.ceil(test_fraction * len(shuffled)) if test_fraction > 0 else 0
    n_val = validation_count(len(shuffled) - n_test, val_fraction)
    test, rest = shuffled[:n_test], shuffled[n_test:]
    val, pool = rest[:n_val], rest[n_val:]
    if n_train is not None:
        if n_train < 1:
            raise InputError(f"--n-train must be at least 1, got {n_train}")
        if n_train > len(pool):
            raise InputError(
                f"--n-train {n_train} is more than the {len(pool)} pairs left for training "
                f"({len(order)} in total, {len(test)} test, {len(val)} validation)"
            )
        pool = pool[:n_train]
    if not pool:
        raise InputError(f"no pairs left for training ({len(order)} in total)")
    return {"train": sorted(pool), "val": sorted(val), "test": sorted(test)}


def validation_count(n_pairs: int, val_fraction: float | None = None) -> int:
    """How many of ``n_pairs`` (the pairs left after the test part) validate (module
    docstring)."""
    if val_fraction is None:
        if n_pairs < MIN_PAIRS_TO_VALIDATE:
            return 0
        val_fraction = DEFAULT_VAL_FRACTION
    return max(1, round(val_fraction * n_pairs)) if val_fraction > 0 else 0


def kfold_indices(n: int, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded k-fold split of ``range(n)``: ``(train_idx, test_idx)`` per fold, disjoint tests."""
    if not 2 <= k <= n:
        raise InputError(f"k-fold needs 2 <= k <= number of pairs ({n}), got k={k}")
    perm = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(perm, k)
    return [
        (np.sort(np.concatenate([f for j, f in enumerate(folds) if j != i])), np.sort(folds[i]))
        for i in range(k)
    ]


def save_split(path: str | Path, split: dict[str, list[str]]) -> None:
    write_text(path, json.dumps(split, indent=2) + "\n")


def load_split(path: str | Path) -> dict[str, list[str]]:
    """Read a split written by :func:`save_split` (or by hand, with the same keys)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read split file ({exc})", path) from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k, []), list) for k in ("train", "val", "test")
    ):
        raise InputError(
            "split file must hold a JSON object with lists 'train', 'val', 'test'", path
        )
    if not data.get("train"):
        raise InputError("split file's 'train' list is empty: nothing to train on", path)
    split = {k: [str(n) for n in data.get(k, [])] for k in ("train", "val", "test")}
    seen: dict[str, str] = {}
    for part, names in split.items():
        for name in names:
            if name in seen:
                # a test image that is also trained on would inflate the reported scores
                where = "twice in" if seen[name] == part else f"in both {seen[name]!r} and"
                raise InputError(f"split file lists {name!r} {where} {part!r}", path)
            seen[name] = part
    return split
