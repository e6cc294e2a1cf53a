"""Large images segmented region by region (issue 32, item 3): memory bounded by one region,
and every cell that straddles a region border is one label, written once."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label as connected
from tests.helpers import border_nuclei

import cganseg.inference.segment as segment_module
from cganseg.inference.regions import segment_in_regions


def _discs(shape: tuple[int, int], centres: list[tuple[int, int]], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    truth = np.zeros(shape, np.int32)
    for i, (y, x) in enumerate(centres, 1):
        truth[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = i
    return truth


def _same_cells(truth: np.ndarray, found: np.ndarray) -> None:
    """Each true cell is exactly one found label with the same pixels, and nothing else."""
    assert found.max() == truth.max() == len(np.unique(found)) - 1
    for i in range(1, truth.max() + 1):
        ids = np.unique(found[truth == i])
        assert len(ids) == 1 and ids[0] > 0, (i, ids)
        assert np.array_equal(found == ids[0], truth == i), i


def test_cells_across_region_borders_are_one_label_each():
    """An oracle segmenter (connected components) on discs that sit on region borders and
    corners (cores of 40 px: borders at 40, 80): each disc comes back whole, once."""
    centres = [(y, x) for y in (20, 40, 61, 80, 100) for x in (19, 40, 60, 80, 113)]
    truth = _discs((120, 120), centres, 6.5)
    image = (truth > 0).astype(np.float32)[None]
    calls = []

    def oracle(part: np.ndarray) -> np.ndarray:
        calls.append(part.shape)
        return connected(part[0] > 0.5)

    found = segment_in_regions(oracle, image, core=40, margin=16)
    _same_cells(truth, found)
    assert len(calls) == 9 and max(max(s[1:]) for s in calls) <= 40 + 2 * 16
    with pytest.raises(ValueError, match="core"):
        segment_in_regions(oracle, image, core=0, margin=4)


def test_a_large_image_is_segmented_in_regions_with_the_same_cells(monkeypatch):
    """The shipped nuclei model on 49 synthetic nuclei at the network's own scale: with regions
    of 160 px (instead of 2048) the cells on the region borders are found whole and once, as
    when the image is one region."""
    from cganseg.evaluation.evaluate import evaluate_pairs
    from cganseg.inference.segment import load_segmenter, prepare_image

    seg = load_segmenter("nuclei", "cpu")
    image, truth = border_nuclei()
    chw = prepare_image(seg, image[None], "synthetic")
    whole = seg.segment(chw, tile_size=512, diameter=17)
    monkeypatch.setattr(segment_module, "REGION", 160)  # one border through the 7 at 160
    assert seg.region_core(17) == 160 and seg.region_margin(17) == 96
    regions = seg.segment(chw, tile_size=512, diameter=17)
    assert regions.max() == whole.max() == 49
    report = evaluate_pairs([("synthetic", truth, regions)])
    assert report["pooled"]["f1"][5] == 1.0, report["images"]  # all 49 matched at IoU 0.75
