"""The simple renderer (issue 31's control): images of masks from real cells' statistics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from tests.helpers import synthetic_pair

from cganseg.data.dataset import Sample
from cganseg.data.folders import find_pairs
from cganseg.data.io import read_array, read_labels, write_labels
from cganseg.data.normalize import normalize_percentile
from cganseg.errors import InputError
from cganseg.synth.pairs import write_pairs
from cganseg.synth.simple_render import SimpleRenderer


def _samples(n: int = 4) -> list[Sample]:
    out = []
    for i in range(n):
        image, labels = synthetic_pair((48, 56), seed=i)
        out.append(Sample(f"s{i}", normalize_percentile(image[None]), labels.astype(np.int32)))
    return out


def _dense_mask() -> np.ndarray:
    labels = np.zeros((64, 64), np.int32)
    for k, (y, x) in enumerate((y, x) for y in range(4, 60, 14) for x in range(4, 60, 14)):
        labels[y:y + 10, x:x + 10] = k + 1  # touching-free squares: 16 cells
    return labels


def test_cells_take_real_cells_intensities_and_seeds_give_other_images():
    samples = _samples()
    renderer = SimpleRenderer.fit(samples)
    labels = _dense_mask()
    image = renderer.generate(labels, seed=3)
    assert image.shape == (1, 64, 64) and image.dtype == np.float32
    assert -1.0 <= image.min() and image.max() <= 1.0
    inside = ndimage.binary_erosion(labels > 0, iterations=2)  # away from the blurred edges
    outside = ndimage.binary_erosion(labels == 0, iterations=2)
    real_cells = np.mean([s.image[0][s.labels > 0].mean() for s in samples])
    real_bg = np.mean([s.image[0][s.labels == 0].mean() for s in samples])
    assert real_cells - real_bg > 0.5  # the real discs are bright on a dark background
    assert image[0][inside].mean() == pytest.approx(real_cells, abs=0.15)
    assert image[0][outside].mean() == pytest.approx(real_bg, abs=0.15)
    assert np.array_equal(image, renderer.generate(labels, seed=3))  # seeded
    assert not np.array_equal(image, renderer.generate(labels, seed=4))


def test_fit_needs_cells_and_background():
    empty = Sample("e", np.zeros((1, 8, 8), np.float32), np.zeros((8, 8), np.int32))
    with pytest.raises(InputError, match="both cells and background"):
        SimpleRenderer.fit([empty])


def test_pairs_are_written_as_generate_writes_them(tmp_path):
    masks = tmp_path / "masks"
    for name in ("a", "b"):
        write_labels(masks / f"{name}.tif", _dense_mask())
    out = tmp_path / "pairs"
    pairs = write_pairs(SimpleRenderer.fit(_samples()), masks, out, {"renderer": "simple"},
                        per_mask=2, seed=1, progress=False)  # fmt: skip
    assert len(pairs) == 4 and [p.name for p in find_pairs(out)] == ["a_s0", "a_s1", "b_s0",
                                                                      "b_s1"]  # fmt: skip
    image = read_array(out / "images" / "a_s0.tif")
    assert image.shape == (64, 64) and image.dtype == np.uint16
    assert np.array_equal(read_labels(out / "masks" / "a_s1.tif"), _dense_mask())
    assert json.loads((out / "generate.json").read_text())["renderer"] == "simple"


@pytest.mark.slow
def test_synthetic_value_benchmark_quick_mode(tmp_path):
    """benchmarks/synthetic_value.py --quick: real pairs alone, + simple-rendered and + generated
    pairs of the same synthetic masks, the same segmenter, scores overall and easy/hard."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "synthetic_value.py"
    out = tmp_path / "sv.json"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--quiet", "--work",
                           str(tmp_path), "--out", str(out)],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (d,) = json.loads(out.read_text())["draws"]
    here = tmp_path / "demo" / "N3_d0"
    split = json.loads((here / "split.json").read_text())
    assert len(split["train"]) == 3 and d["k"] == 2
    for arm, folder in (("real+simple", "pairs_simple"), ("real+gen", "pairs_gen")):
        assert len(list((here / folder / "images").glob("*.tif"))) == 2
        assert f"{folder}\n" in (here / arm / "run" / "config.yaml").read_text()
    assert "extra:" not in (here / "real" / "run" / "config.yaml").read_text().replace(
        "extra: null", "")  # fmt: skip
    costs = {arm: r["generator_cpu_s"] for arm, r in d["arms"].items()}
    assert costs["real+gen"] > 0 and costs["real"] == costs["real+simple"] == 0
    assert all(0 <= r["f1_50_pooled"] <= 1 and r["n_test"] >= r["n_hard"]
               for r in d["arms"].values())  # fmt: skip
