"""Tiled prediction equals whole-image prediction and stays memory bounded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.helpers import border_nuclei
from torch import nn

from cganseg.errors import InputError
from cganseg.inference.tiling import predict_outputs


class PointwiseModel(nn.Module):
    """Fixed 1x1 conv: no receptive field beyond a pixel, so tiling must be exact."""

    size_multiple = 16

    def __init__(self, in_channels: int = 2, n_classes: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, n_classes, kernel_size=1)
        with torch.no_grad():
            weights = torch.arange(in_channels * n_classes, dtype=torch.float32)
            self.conv.weight.copy_(weights.reshape(n_classes, in_channels, 1, 1) - 1.5)
            self.conv.bias.copy_(torch.linspace(-0.5, 0.5, n_classes))
        self.input_shapes: list[tuple[int, ...]] = []
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2] % self.size_multiple == 0 and x.shape[-1] % self.size_multiple == 0
        self.input_shapes.append(tuple(x.shape))
        self.modes.append(self.training)
        return self.conv(x)


def _image(height: int, width: int, channels: int = 2) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, size=(channels, height, width)).astype(np.float32)


def _direct(model: nn.Module, image: np.ndarray) -> np.ndarray:
    _, h, w = image.shape
    pad_h, pad_w = -h % 16, -w % 16
    padded = np.pad(image, ((0, 0), (0, pad_h), (0, pad_w)), mode="reflect")
    with torch.no_grad():
        logits = model(torch.from_numpy(padded)[None])
    return torch.softmax(logits, dim=1)[0, :, :h, :w].numpy()


def test_tiled_equals_direct_prediction():
    model = PointwiseModel()
    image = _image(70, 93)
    probs = predict_outputs(model, image, tile_size=32, overlap=8)
    # Many tiles, each of the tile size.
    assert {shape[-2:] for shape in model.input_shapes} == {(32, 32)}
    assert sum(shape[0] for shape in model.input_shapes) > 4
    assert probs.shape == (2, 70, 93) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, _direct(model, image), atol=1e-4)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)


def test_batch_size_bounds_tiles_and_does_not_change_result():
    image = _image(70, 93)
    model_one, model_five = PointwiseModel(), PointwiseModel()
    one = predict_outputs(model_one, image, tile_size=32, overlap=8, batch_size=1)
    five = predict_outputs(model_five, image, tile_size=32, overlap=8, batch_size=5)
    np.testing.assert_allclose(one, five, atol=1e-6)
    assert max(shape[0] for shape in model_one.input_shapes) == 1
    assert max(shape[0] for shape in model_five.input_shapes) == 5


def test_small_image_is_one_padded_tile():
    model = PointwiseModel(in_channels=1, n_classes=3)
    image = _image(5, 21, channels=1)
    probs = predict_outputs(model, image, tile_size=64, overlap=8)
    assert probs.shape == (3, 5, 21)
    assert model.input_shapes == [(1, 1, 16, 32)]
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)


def test_train_mode_is_restored_and_eval_used_during_call():
    model = PointwiseModel()
    model.train()
    predict_outputs(model, _image(40, 40), tile_size=32, overlap=8)
    assert model.training
    assert model.modes and not any(model.modes)
    model.eval()
    predict_outputs(model, _image(40, 40), tile_size=32, overlap=8)
    assert not model.training


def test_blending_removes_seams_for_a_context_model():
    """A 3x3 conv sees zero padding at tile borders: hard cuts leave seams, blending does not."""
    torch.manual_seed(0)
    model = nn.Conv2d(2, 2, kernel_size=3, padding=1)
    model.size_multiple = 16
    image = _image(64, 64)
    direct = _direct(model, image)
    inner = (slice(None), slice(1, -1), slice(1, -1))  # the image edge differs by padding mode
    hard = predict_outputs(model, image, tile_size=32, overlap=0)
    blended = predict_outputs(model, image, tile_size=32, overlap=16)
    assert np.abs(hard - direct)[inner].max() > 0.05
    assert np.abs(blended - direct)[inner].max() < 0.005


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tile_size": 8}, "tile_size"),
        ({"tile_size": 32, "overlap": 32}, "overlap"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_invalid_options_are_input_errors(kwargs, message):
    with pytest.raises(InputError, match=message):
        predict_outputs(PointwiseModel(), _image(20, 20), **kwargs)


def test_non_chw_image_is_input_error():
    with pytest.raises(InputError, match="C, H, W"):
        predict_outputs(PointwiseModel(), np.zeros((20, 20), np.float32))


def test_cells_across_tile_borders_are_one_label_each():
    """Issue 32: the shipped nuclei model on a synthetic image whose 49 nuclei sit on the tile
    borders and corners of 128-px tiles (starts 0, 96, 192; edges at 96, 128, 192, 224): the
    blended output is followed as one image, so each nucleus is one label, exactly as with one
    tile for the whole image."""
    from cganseg.evaluation.evaluate import evaluate_pairs
    from cganseg.inference.segment import load_segmenter, prepare_image

    seg = load_segmenter("nuclei", "cpu")
    image, truth = border_nuclei()
    chw = prepare_image(seg, image[None], "synthetic")
    tiled = seg.segment(chw, tile_size=128, diameter=17)  # the network's own scale: no resize
    for label in range(1, truth.max() + 1):
        found, counts = np.unique(tiled[truth == label], return_counts=True)
        pieces = [f for f, c in zip(found, counts, strict=True) if f and c > 0.1 * counts.sum()]
        assert len(pieces) == 1, (label, pieces)
    report = evaluate_pairs([("synthetic", truth, tiled)])
    assert report["pooled"]["f1"][5] == 1.0, report["images"]  # all 49 matched at IoU 0.75
    whole = seg.segment(chw, tile_size=1024, diameter=17)
    assert tiled.max() == whole.max() == 49
