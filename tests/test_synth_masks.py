"""Synthetic dense / colony masks: counts, no shared pixels, one piece per cell, density, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage.measure import label as connected_components
from tests.helpers import write_image

from cganseg.cli import main
from cganseg.data.io import read_labels
from cganseg.errors import InputError
from cganseg.synth.make_masks import write_synthetic_masks
from cganseg.synth.masks import MaskSpec, cell_shapes, synthetic_mask


def _real_masks(tmp_path, n=3):
    """Label images of touching and separate irregular cells, written as PNG."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "real" / "masks"
    for i in range(n):
        labels = np.zeros((64, 80), np.uint16)
        for k in range(1, 7):
            y, x = rng.integers(6, 50), rng.integers(6, 66)
            h, w = rng.integers(5, 10, size=2)
            labels[y : y + h, x : x + w] = k
            labels[y + h // 2, x + w : x + w + 3] = k  # a small protrusion
        write_image(folder / f"m{i}.png", labels)
    return tmp_path / "real"


@pytest.fixture
def shapes(tmp_path):
    return cell_shapes(
        [read_labels(p) for p in sorted((_real_masks(tmp_path) / "masks").iterdir())]
    )


def _assert_valid(labels: np.ndarray) -> None:
    ids = np.unique(labels)
    ids = ids[ids > 0]
    assert np.array_equal(ids, np.arange(1, len(ids) + 1))  # consecutive labels, one per cell
    for i in ids:  # every label is one 4-connected cell
        assert connected_components(labels == i, connectivity=1).max() == 1, i


@pytest.mark.parametrize("layout", ["flat", "colony", "mixed"])
def test_cells_are_whole_distinct_and_density_grows(shapes, layout):
    fractions, counts = [], []
    for density in (0.05, 0.2, 0.45):
        labels = synthetic_mask(
            shapes, MaskSpec(96, 112, layout, density), np.random.default_rng(3)
        )
        assert labels.shape == (96, 112)
        _assert_valid(labels)
        fractions.append((labels > 0).mean())
        counts.append(labels.max())
    assert fractions[0] < fractions[1] < fractions[2]
    assert counts[0] < counts[2]
    assert abs(fractions[1] - 0.2) < 0.08


def test_colony_layout_packs_cells_together(shapes):
    """Colony cells touch their neighbours far more often than flat ones at the same density."""
    from cganseg.evaluation.hardness import touching_pairs

    spec = dict(height=128, width=128, density=0.25)
    flat = synthetic_mask(shapes, MaskSpec(layout="flat", **spec), np.random.default_rng(0))
    colony = synthetic_mask(shapes, MaskSpec(layout="colony", **spec), np.random.default_rng(0))
    assert touching_pairs(colony) / colony.max() > touching_pairs(flat) / flat.max()


def test_same_seed_same_mask_other_seed_other_mask(shapes):
    spec = MaskSpec(64, 64, "mixed", 0.3)
    a = synthetic_mask(shapes, spec, np.random.default_rng(5))
    assert np.array_equal(a, synthetic_mask(shapes, spec, np.random.default_rng(5)))
    assert not np.array_equal(a, synthetic_mask(shapes, spec, np.random.default_rng(6)))


def test_bad_spec_is_refused(shapes):
    for spec in (MaskSpec(64, 64, "grid"), MaskSpec(64, 64, density=1.5), MaskSpec(4, 64)):
        with pytest.raises(InputError):
            synthetic_mask(shapes, spec, np.random.default_rng(0))


def test_command_writes_count_and_resumes(tmp_path):
    real = _real_masks(tmp_path)
    out = tmp_path / "synth"
    argv = ["synth-masks", str(real), str(out), "--n", "4", "--density", "0.3", "--quiet"]
    assert main([*argv, "--size", "48x72", "--seed", "2"]) == 0
    files = sorted(out.glob("synth_*.tif"))
    assert len(files) == 4
    first = read_labels(files[0])
    assert first.shape == (48, 72)
    _assert_valid(first)
    assert json.loads((out / "synth_masks.json").read_text())["density"] == 0.3
    # interrupted run: one mask missing -> made again, identical; others untouched
    files[1].unlink()
    mtime = files[0].stat().st_mtime_ns
    assert main([*argv, "--size", "48x72", "--seed", "2", "--n", "5"]) == 0
    assert len(list(out.glob("synth_*.tif"))) == 5 and files[0].stat().st_mtime_ns == mtime
    again = write_synthetic_masks(real, tmp_path / "again", 2, density=0.3, size=(48, 72), seed=2)
    assert np.array_equal(read_labels(again[1]), read_labels(files[1]))


def test_command_refuses_other_settings_and_foreign_folders(tmp_path, capsys):
    real = _real_masks(tmp_path)
    out = tmp_path / "synth"
    assert main(["synth-masks", str(real), str(out), "--n", "1", "--quiet"]) == 0
    assert main(["synth-masks", str(real), str(out), "--n", "1", "--seed", "9", "--quiet"]) == 2
    assert "other settings (seed)" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("user file")
    assert main(["synth-masks", str(real), str(tmp_path / "busy"), "--quiet"]) == 2
    assert (tmp_path / "busy" / "keep.txt").read_text() == "user file"
    assert main(["synth-masks", str(real), str(real / "masks" / "sub"), "--quiet"]) == 2
    assert not (real / "masks" / "sub").exists()
    err = capsys.readouterr().err
    assert err.count("error:") == 2 and "not empty" in err


def test_split_limits_shapes_to_training_masks(tmp_path, capsys):
    real = _real_masks(tmp_path)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["m1"], "val": [], "test": ["m0", "m2"]}))
    out = tmp_path / "synth"
    argv = ["synth-masks", str(real), str(out), "--n", "1", "--quiet", "--split", str(split)]
    assert main(argv) == 0
    assert json.loads((out / "synth_masks.json").read_text())["names"] == ["m1"]
    split.write_text(json.dumps({"train": ["other"], "val": [], "test": []}))
    assert main([*argv[:2], str(tmp_path / "s2"), *argv[3:]]) == 2
    assert "none of the split's names" in capsys.readouterr().err
