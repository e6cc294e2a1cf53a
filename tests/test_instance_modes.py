"""Instance modes as objects (issue 28): one class per way of making cells, found by name.

Each mode's pieces agree with each other (targets fit its output channels and loss, its labels
recover the cells of a perfect output), no module outside ``cganseg.instances`` tests a mode's
name, and a fourth mode is one class plus one registry entry: training, validation, threshold
tuning, checkpoints and ``segment`` then work with it unchanged.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.draw import disk
from tests.helpers import make_dataset

from cganseg.checkpoint import load_checkpoint
from cganseg.cli import main
from cganseg.instances import MODES, default_name, mode, stored_name
from cganseg.instances.cleanup import components, numbered
from cganseg.instances.components import Components

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cganseg"
#: compares its ``output`` kind ("classes" or "flows": a mode's ``output_kind``), the argument
#: that packages already exported pass it; not a mode name
EXPORTED = PACKAGE / "models" / "exported.py"


def _touching() -> np.ndarray:
    labels = np.zeros((48, 64), np.int32)
    labels[disk((24, 22), 10, shape=labels.shape)] = 1
    labels[disk((24, 40), 10, shape=labels.shape)] = 2  # overlaps the first: they touch
    return labels


def _perfect_output(m, labels: np.ndarray) -> np.ndarray:
    """What a perfect network of mode ``m`` would output (as blended for post-processing)."""
    target = m.targets(labels, 3)
    if target.dtype == torch.int64:  # classes: one-hot probabilities
        return np.moveaxis(np.eye(3, dtype=np.float32)[target.numpy()], -1, 0)
    out = target.numpy().copy()
    out[:2] *= 5.0  # flows are regressed at 5x (Cellpose's convention)
    out[2] = np.where(out[2] > 0.5, 6.0, -6.0)  # a confident cell-probability logit
    return out


@pytest.mark.parametrize("name", list(MODES))
def test_each_mode_agrees_with_itself(name):
    m = mode(name)
    labels = _touching()
    target = m.targets(labels, 3)
    channels = m.output_channels(3)
    perfect = torch.from_numpy(_perfect_output(m, labels))[None]
    logits = perfect if m.output_kind == "flows" else torch.log(perfect.clamp(1e-4, 1))
    assert logits.shape[1] == channels
    assert m.loss()(logits, target[None]).item() < 0.2
    assert m.class_probabilities(logits).shape[1] == m.mask_classes(3)
    assert m.target_mask(target[None], 3).shape[1] == m.mask_classes(3)
    cells = m.to_labels(_perfect_output(m, labels), 15)
    assert cells.dtype == np.int32
    expected = 1 if name == "components" else 2  # the 2-class view merges touching cells
    assert cells.max() == expected, name
    assert m.describe(15) and m.output_names(3) and m.summary


def test_the_threshold_search_visits_the_grid_in_order():
    m = mode("flows")
    output = _perfect_output(m, _touching())
    points = [point for point, _ in m.threshold_search(output, 15)]
    grid = m.threshold_grid
    assert len(points) == np.prod([len(v) for v in grid.values()])
    assert points[0] == {k: v[0] for k, v in grid.items()}  # the defaults first
    assert mode("watershed").threshold_grid == {}


def test_defaults_of_new_runs_and_of_old_checkpoints():
    assert default_name(3) == "flows" and default_name(2) == "components"
    assert stored_name(3) == "watershed" and stored_name(2) == "components"


def test_no_module_outside_the_modes_compares_a_mode_name():
    """The issue's rule: every other module asks the mode object."""
    names = set(MODES)
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "instances" in path.relative_to(PACKAGE).parts or path == EXPORTED:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                for side in (node.left, *node.comparators):
                    if isinstance(side, ast.Constant) and side.value in names:
                        offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, offenders


class _Thresholded(Components):
    """A fourth mode for the test: 2 classes, cells where p(cell) > 0.7."""

    name = "thresholded"
    summary = "2 classes, p(cell) > 0.7"

    def to_labels(self, output: np.ndarray, min_size: int, **thresholds: float) -> np.ndarray:
        return numbered(components(np.asarray(output)[1] > 0.7, min_size))


def test_a_fourth_mode_is_one_class_and_one_registry_entry(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(MODES, _Thresholded.name, _Thresholded())
    data = make_dataset(tmp_path / "data", n=6)
    run = tmp_path / "run"
    rc = main(["train-seg", "--data", str(data), "--out", str(run), "--instances", "thresholded",
               "--classes", "2", "--device", "cpu", "--quiet", "--crop", "32", "--width", "4",
               "--batch-size", "2", "--iterations", "2", "--val-every", "2", "--workers", "0",
               "--patience", "0"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert load_checkpoint(run / "best.pt")["postprocessing"]["instances"] == "thresholded"
    out = tmp_path / "labels"
    assert main(["segment", str(run), str(data / "images"), "--out", str(out), "--quiet"]) == 0
    assert len(list(out.glob("*.tif"))) == 6
