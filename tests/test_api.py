"""The notebook API (issue 18): ``cganseg.segment(image, model=RUN)`` takes what a notebook has."""

from __future__ import annotations

import numpy as np
import pytest
from tests.helpers import make_dataset, tiny_seg_config

import cganseg
from cganseg.data.io import image_to_chw, read_image, write_image
from cganseg.data.normalize import normalize_percentile
from cganseg.errors import InputError
from cganseg.inference.segment import load_segmenter
from cganseg.training.seg_trainer import train_segmenter


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    data = make_dataset(root / "data", n=6, size=(48, 48))
    out = root / "run"
    train_segmenter(tiny_seg_config(data, out, iterations=4, val_every=4, test_fraction=0.0),
                    progress=False)  # fmt: skip
    return out


def _raw(seed: int = 0) -> np.ndarray:
    """A 16-bit 2-D image using a few hundred grey levels, as microscopes write them."""
    rng = np.random.default_rng(seed)
    image = np.full((64, 80), 300.0)
    yy, xx = np.mgrid[:64, :80]
    for cy, cx in ((20, 20), (40, 55), (45, 25)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 81] += 400
    return (image + rng.normal(0, 20, image.shape)).astype(np.uint16)


def test_segment_takes_a_raw_2d_image_of_any_dtype_and_layout(run, tmp_path):
    raw = _raw()
    expected = load_segmenter(run, "cpu").segment(normalize_percentile(raw[None]))
    for variant in (raw, raw[..., None], raw[None], raw.astype(np.float64) / 7.0,
                    np.repeat(raw[..., None], 1, axis=-1).astype(np.int32)):  # fmt: skip
        labels = cganseg.segment(variant, model=run, device="cpu")
        assert labels.dtype == np.int32 and labels.shape == raw.shape
        np.testing.assert_array_equal(labels, expected)
    # the same as `cganseg segment` reads the image from a file
    write_image(tmp_path / "a.tif", raw)
    np.testing.assert_array_equal(image_to_chw(raw), read_image(tmp_path / "a.tif"))


def test_the_model_is_loaded_once(run):
    assert cganseg.load(run, "cpu") is cganseg.load(run, "cpu")
    seg = cganseg.load(run, "cpu")
    np.testing.assert_array_equal(cganseg.segment(_raw(), seg), cganseg.segment(_raw(), run))


def test_shapes_that_cannot_be_meant_are_refused(run):
    with pytest.raises(InputError, match=r"image\[None\]"):
        normalize_percentile(_raw())  # (H, W) would broadcast to (H, H, W)
    with pytest.raises(InputError, match="channel"):  # three different channels, one expected
        cganseg.segment(np.stack([_raw(s) for s in range(3)], axis=-1), model=run, device="cpu")
    with pytest.raises(InputError, match="z-stacks"):
        cganseg.segment(np.zeros((3, 5, 64, 64)), model=run, device="cpu")
    with pytest.raises(InputError, match="--cell-diameter"):
        cganseg.segment(_raw(), model=run, diameter=30, device="cpu")


def test_the_package_loads_the_api_only_when_asked():
    assert callable(cganseg.segment) and callable(cganseg.load)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = cganseg.nothing


def test_a_grey_image_saved_as_rgb_is_read_as_grey(run, tmp_path):
    """Issue 33: three equal channels (grey saved as RGB) segment as the grey image, with one
    note; channels that differ are still refused, with a hint, in one line."""
    from cganseg.data.dataset import load_samples
    from cganseg.data.folders import find_pairs
    from cganseg.data.io import GREY_AS_RGB

    raw = _raw()
    expected = cganseg.segment(raw, model=run, device="cpu")
    rgb = np.repeat(raw[..., None], 3, axis=-1)
    with pytest.warns(UserWarning, match="read as one channel"):
        np.testing.assert_array_equal(cganseg.segment(rgb, model=run, device="cpu"), expected)
    rgb[..., 1] //= 2
    with pytest.raises(InputError, match="3 channel.*expects 1; its channels differ"):
        cganseg.segment(rgb, model=run, device="cpu")
    # training data stored so: one channel, like the grey images beside it
    data = make_dataset(tmp_path / "data", n=2, size=(48, 48))
    first = sorted((data / "images").iterdir())[0]
    grey = read_image(first)[0]
    write_image(first, np.repeat(grey[..., None], 3, axis=-1))
    assert read_image(first).shape[0] == 3
    with pytest.warns(UserWarning, match=GREY_AS_RGB[:20]):
        samples = load_samples(find_pairs(data), progress=False)
    assert [s.image.shape[0] for s in samples] == [1, 1]


def test_evaluate_scores_arrays_as_the_command_does():
    truth = np.zeros((32, 32), np.int32)
    truth[2:10, 2:10], truth[20:30, 20:30] = 1, 2
    pred = np.zeros_like(truth)
    pred[2:10, 2:10] = 5  # one found, one missed
    report = cganseg.evaluate(truth, pred)
    assert report["pooled"]["f1"][0] == pytest.approx(2 / 3)
    assert cganseg.evaluate([truth, truth], [pred, truth])["pooled"]["tp"][0] == 3
    with pytest.raises(InputError, match="one shape"):
        cganseg.evaluate(truth, pred[:16])


def test_train_seg_refuses_arrays_that_do_not_pair(tmp_path):
    image = np.zeros((32, 32), np.uint8)
    with pytest.raises(InputError, match="1 image\\(s\\) and 2 mask\\(s\\)"):
        cganseg.train_seg([image], [image, image], out=tmp_path / "run")
    with pytest.raises(InputError, match=r"masks\[0\] must be an integer label image"):
        cganseg.train_seg([image], [np.zeros((16, 16), np.int32)], out=tmp_path / "run")
    assert not (tmp_path / "run").exists() and not (tmp_path / "run_data").exists()
