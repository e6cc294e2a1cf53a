"""The real annotated sets in ../shared/data load, pair and evaluate (skipped where absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cganseg.data.dataset import load_samples
from cganseg.data.folders import find_pairs
from cganseg.evaluation.evaluate import evaluate_pairs

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = (
    sorted(p.name for p in SHARED.iterdir() if (p / "images").is_dir()) if SHARED.is_dir() else []
)

pytestmark = pytest.mark.skipif(
    not SETS, reason=f"real data sets not found at {SHARED} (only in the development workspace)"
)


@pytest.mark.parametrize("name", SETS)
def test_real_set_loads_and_scores_itself_perfectly(name):
    pairs = find_pairs(SHARED / name)
    samples = load_samples(pairs[:3], progress=False)
    for s in samples:
        assert s.image.dtype == np.float32 and s.image.shape[1:] == s.labels.shape
        assert -1.0 <= s.image.min() and s.image.max() <= 1.0
        assert s.labels.max() > 0
    report = evaluate_pairs((s.name, s.labels, s.labels) for s in samples)
    assert report["per_image"]["f1"] == [1.0] * 10
