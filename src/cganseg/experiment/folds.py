"""Fold splits of the cross-validation (paper "Evaluation": 5-fold, three scenarios).

Each fold's test set is one of k disjoint parts of the data (together they cover it). The rest
is shuffled by (seed, fold); a validation set is cut first, and the N-pair training set of
scenarios A, B and D is the first N of what is left, so it lies inside scenario C's set (all
pairs left) and every scenario of a fold is tested on the same images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cganseg.data.splits import kfold_indices, validation_count
from cganseg.errors import InputError

Split = dict[str, list[str]]


def fold_splits(
    names: Sequence[str], k: int, n_train: int, val_fraction: float = 0.1, seed: int = 0
) -> list[dict[str, Split]]:
    """Per fold ``{"N": split, "all": split}`` (train/val/test name lists, sorted)."""
    order = sorted(names)
    folds = []
    for i, (train_idx, test_idx) in enumerate(kfold_indices(len(order), k, seed)):
        rest = [order[j] for j in train_idx]
        rest = [rest[j] for j in np.random.default_rng([seed, i]).permutation(len(rest))]
        n_val = validation_count(len(rest), val_fraction)
        val, pool = sorted(rest[:n_val]), rest[n_val:]
        if n_train > len(pool):
            raise InputError(
                f"n_train {n_train} is more than the {len(pool)} training pairs of fold {i + 1} "
                f"({len(order)} pairs, {len(test_idx)} test, {n_val} validation); lower n_train "
                "or folds"
            )
        test = sorted(order[j] for j in test_idx)
        folds.append(
            {
                "N": {"train": sorted(pool[:n_train]), "val": val, "test": test},
                "all": {"train": sorted(pool), "val": val, "test": test},
            }
        )
    return folds
