"""Cell-size rescaling (issue 16): diameters measured, training images rescaled, segment rescales
and returns labels at the input's size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from skimage.draw import disk
from tests.helpers import make_dataset, tiny_seg_config

from cganseg.checkpoint import load_checkpoint
from cganseg.cli import main
from cganseg.data.dataset import Sample
from cganseg.data.rescale import cell_diameter, median_diameter, resize_labels, to_diameter
from cganseg.errors import InputError
from cganseg.inference.segment import Segmenter, load_segmenter
from cganseg.instances.cleanup import fit_labels
from cganseg.instances.postprocessing import PostProcessing
from cganseg.models.registry import build_segmenter
from cganseg.options import SegTrainConfig
from cganseg.training.seg_trainer import SegTrainer, train_segmenter


def _discs(radii: list[int], size: int = 96) -> np.ndarray:
    labels = np.zeros((size, size), np.int32)
    for i, r in enumerate(radii, start=1):
        labels[disk((12 + 24 * (i - 1) % 72, 30 + 30 * ((i - 1) // 3)), r,
                    shape=labels.shape)] = i  # fmt: skip
    return labels


def test_diameter_is_the_median_equivalent_disc_diameter():
    assert cell_diameter(_discs([10])) == pytest.approx(20, abs=1)
    assert cell_diameter(_discs([4, 10, 10])) == pytest.approx(20, abs=1)  # median, not mean
    assert cell_diameter(np.zeros((8, 8), np.int32)) == 0.0


def test_rescaling_a_sample_brings_its_cells_to_the_target_diameter():
    labels = _discs([5, 5])
    sample = Sample("a", np.random.default_rng(0).normal(size=(2, 96, 96)).astype(np.float32),
                    labels)  # fmt: skip
    big = to_diameter(sample, 20.0, fallback=10.0)
    side = round(96 * 20.0 / cell_diameter(labels))  # a drawn disc of radius 5 is ~9.4 across
    assert big.image.shape == (2, side, side) and big.labels.shape == (side, side)
    assert set(np.unique(big.labels)) == {0, 1, 2}  # ids move, never blend
    assert cell_diameter(big.labels) == pytest.approx(20, abs=1.5)
    empty = Sample("b", sample.image, np.zeros_like(labels))
    assert to_diameter(empty, 20.0, fallback=10.0).labels.shape == (192, 192)  # the fallback
    assert median_diameter([sample, empty]) == pytest.approx(cell_diameter(labels))


def test_resize_labels_is_a_nearest_lookup():
    labels = np.arange(16, dtype=np.int32).reshape(4, 4)
    np.testing.assert_array_equal(resize_labels(labels, (8, 8))[::2, ::2], labels)


def test_training_images_are_rescaled_and_the_diameters_stored(tmp_path):
    data = make_dataset(tmp_path / "data")  # discs of radius 5: about 10 px across
    cfg = SegTrainConfig.from_dict(
        tiny_seg_config(data, tmp_path / "run", cell_diameter=20.0, iterations=2,
                        val_every=2).to_dict()  # fmt: skip
    )
    trainer = SegTrainer.from_config(cfg)
    assert trainer.train_diameter == pytest.approx(10, abs=1.5)
    for s in trainer.data.train:
        assert cell_diameter(s.labels) == pytest.approx(20, abs=2)
    assert all(s.image.shape[1:] == (40, 52) for s in trainer.data.val)  # scored as given
    train_segmenter(cfg, progress=False)
    payload = load_checkpoint(tmp_path / "run" / "best.pt")
    assert payload["postprocessing"]["cell_diameter"] == 20.0
    assert payload["postprocessing"]["train_diameter"] == pytest.approx(trainer.train_diameter)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["cell_diameter"] == 20
    seg = load_segmenter(tmp_path / "run", "cpu")
    assert seg.factor() == pytest.approx(20.0 / trainer.train_diameter)
    assert seg.factor(5.0) == pytest.approx(4.0)
    assert seg.factor(40.0) == pytest.approx(0.5)


class _Recording(Segmenter):
    """A Segmenter that records the diameters it predicts for; one cell, 16 px across, of which
    the network is surest at diameter 20."""

    def predict(self, image, tile_size=512, batch_size=4, diameter=None, shape=None):
        self.calls.append(diameter)
        sure = 0.9 if isinstance(diameter, float) and round(diameter) == 20 else 0.6
        out = np.zeros((3, *image.shape[1:]), np.float32)
        out[0] = 1.0
        cell = _discs([8], image.shape[1]) > 0
        out[0][cell], out[1][cell] = 1.0 - sure, sure  # interior wins: one cell
        return out


@pytest.mark.parametrize(("diameter", "calls"), [(None, [None]), (30.0, [None]),
                                                 ("auto", [5, 7, 10, 14, 20, 28, 40, 57, 80,
                                                           20, 16])])  # fmt: skip
def test_auto_diameter_tries_each_scale_then_measures_the_surest(diameter, calls):
    """``auto``: the ladder of 0.5x..8x the training diameter (10 px) on the central region,
    the surest (20) segmented, its cell measured (16 px) and segmented again at that size."""
    model = build_segmenter("unet", 1, 3, 4)
    post = PostProcessing("watershed", 15, cell_diameter=30.0, train_diameter=10.0)
    seg = _Recording(model, None, post, torch.device("cpu"))
    object.__setattr__(seg, "calls", [])
    labels = seg.segment(np.zeros((1, 96, 96), np.float32), diameter=diameter)
    assert labels.shape == (96, 96) and labels.max() == 1
    expected = [diameter if c is None else c for c in calls]  # the call's own, or auto's
    assert [c if not isinstance(c, float) else round(c) for c in seg.calls] == expected


def test_predict_returns_the_input_size_at_any_factor():
    model = build_segmenter("unet", 1, 3, 4).eval()
    image = np.random.default_rng(0).normal(size=(1, 37, 50)).astype(np.float32)
    for diameter in (5.0, 10.0, 23.0):
        post = PostProcessing("watershed", 15, cell_diameter=10.0, train_diameter=10.0)
        seg = Segmenter(model, None, post, torch.device("cpu"))
        out = seg.predict(image, tile_size=64, diameter=diameter)
        assert out.shape == (3, 37, 50)
        np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-4)  # still probabilities


def test_cells_are_found_at_the_network_scale_when_it_shrinks_the_image():
    """Issue 32: flows followed at the smaller of the two sizes, the labels brought back."""
    post = PostProcessing("flows", 15, cell_diameter=10.0, train_diameter=10.0)
    seg = Segmenter(build_segmenter("unet", 1, 3, 4), None, post, torch.device("cpu"))
    assert seg.label_shape((1, 200, 100), 40.0) == (50, 25)  # cells 40 px seen at 10
    assert seg.label_shape((1, 200, 100), 5.0) == (200, 100)  # enlarged: the image's own
    assert seg.label_shape((1, 200, 100), 10.0) == (200, 100)


def test_labels_found_small_are_fitted_to_the_outline_at_full_size():
    """Nearest-neighbour steps of 4 px are trimmed to the full-size foreground; a foreground
    pixel within one source pixel of a cell joins it; ids stay consecutive."""
    full = _discs([10, 7, 11], size=96)
    small = resize_labels(full, (24, 24))
    small[small == 2] = 0  # a cell the small scale lost: its pixels stay background
    fitted = fit_labels(small, full > 0)
    assert fitted.shape == full.shape and fitted.max() == 2
    assert not (fitted[full == 0]).any()  # nothing outside the foreground
    for ours, theirs in ((1, 1), (2, 3)):
        overlap = ((fitted == ours) & (full == theirs)).sum()
        assert overlap / ((fitted == ours) | (full == theirs)).sum() > 0.97
    nearest = resize_labels(small, full.shape)
    assert (nearest[full == 0] > 0).sum() > 0  # what the fitting removed
    assert not fit_labels(np.zeros((5, 5), np.int32), np.ones((20, 20), bool)).any()


@pytest.mark.parametrize("value", [0, 1e-6, 3.9, 501, 1e9, -30])
def test_cell_diameter_option_is_checked(value):
    """Issue 27: 1e9 crashed, 1e-6 trained on 1-pixel images."""
    with pytest.raises(InputError, match=r"option cell_diameter must be a number in \[4, 500\]"):
        SegTrainConfig.from_dict({"data": "d", "out": "o", "cell_diameter": value})


def test_segment_diameter_needs_a_rescaling_model(seg_run, tmp_path, capsys):
    images = seg_run.parent / "data" / "images"
    assert main(["segment", str(seg_run), str(images), str(tmp_path / "p"),
                 "--diameter", "20"]) == 2  # fmt: skip
    assert "needs a model trained with --cell-diameter" in capsys.readouterr().err
    assert main(["segment", str(seg_run), str(images), str(tmp_path / "q"),
                 "--diameter", "big"]) == 2  # fmt: skip
    assert "--diameter must be a number of pixels > 0 or auto" in capsys.readouterr().err
    assert not (tmp_path / "p").exists() and not (tmp_path / "q").exists()
