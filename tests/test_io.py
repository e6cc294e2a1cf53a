"""Reading images and masks of every supported format, and refusing bad files with one line."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from tests.helpers import synthetic_pair, write_image

from cganseg.data.io import (
    AlphaDroppedWarning,
    BinaryMaskWarning,
    list_image_files,
    read_image,
    read_labels,
    write_labels,
)
from cganseg.data.normalize import normalize_percentile
from cganseg.errors import InputError


def _assert_one_line_naming(exc: pytest.ExceptionInfo[InputError], path: Path) -> None:
    message = str(exc.value)
    assert path.name in message
    assert "\n" not in message
    assert exc.value.path == path


# ---------------------------------------------------------------- images: formats and bit depths


@pytest.mark.parametrize(
    ("ext", "dtype"),
    [
        (".png", np.uint8),
        (".png", np.uint16),
        (".tif", np.uint8),
        (".tif", np.uint16),
        (".tiff", np.float32),
    ],
)
def test_read_image_keeps_dtype_and_pixels(tmp_path: Path, ext: str, dtype: type) -> None:
    image, _ = synthetic_pair((37, 53), dtype)  # odd size on purpose
    path = tmp_path / f"a{ext}"
    write_image(path, image)
    out = read_image(path)
    assert out.shape == (1, 37, 53)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out[0], image)


def test_read_jpeg_gray_and_rgb(tmp_path: Path) -> None:
    gray, _ = synthetic_pair((37, 53))
    rgb, _ = synthetic_pair((37, 53), channels=3)
    write_image(tmp_path / "g.jpg", gray)
    write_image(tmp_path / "c.jpeg", rgb)
    g, c = read_image(tmp_path / "g.jpg"), read_image(tmp_path / "c.jpeg")
    assert g.shape == (1, 37, 53) and c.shape == (3, 37, 53)
    assert g.dtype == np.uint8
    assert np.abs(g[0].astype(int) - gray).mean() < 8  # lossy, but the same picture


def test_rgb_channel_last_becomes_channel_first(tmp_path: Path) -> None:
    rgb = np.zeros((40, 52, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
    write_image(tmp_path / "c.png", rgb)
    write_image(tmp_path / "c.tif", rgb)
    for name in ("c.png", "c.tif"):
        out = read_image(tmp_path / name)
        assert out.shape == (3, 40, 52)
        assert out[:, 0, 0].tolist() == [10, 20, 30]


def test_channel_first_tiff_is_kept(tmp_path: Path) -> None:
    chw = np.stack([np.full((40, 52), v, np.uint16) for v in (100, 200, 300)])
    tifffile.imwrite(tmp_path / "cf.tif", chw, photometric="minisblack")  # ImageJ-style planes
    tifffile.imwrite(tmp_path / "rgb.tif", chw, photometric="rgb", planarconfig="separate")
    for name in ("cf.tif", "rgb.tif"):
        out = read_image(tmp_path / name)
        assert out.shape == (3, 40, 52)
        assert out[:, 5, 5].tolist() == [100, 200, 300]


def test_rgba_png_drops_alpha(tmp_path: Path) -> None:
    rgba = np.zeros((40, 52, 4), np.uint8)
    rgba[..., :3] = 50
    rgba[..., 3] = 255
    iio.imwrite(tmp_path / "a.png", rgba)
    with pytest.warns(AlphaDroppedWarning, match="a.png: alpha channel dropped .RGB kept."):
        out = read_image(tmp_path / "a.png")
    assert out.shape == (3, 40, 52)
    assert (out == 50).all()


def test_gray_and_channel_selection(tmp_path: Path) -> None:
    chw = np.stack([np.full((40, 52), v, np.uint8) for v in (30, 60, 90)])
    tifffile.imwrite(tmp_path / "c.tif", chw, photometric="minisblack")
    gray = read_image(tmp_path / "c.tif", channels="gray")
    assert gray.shape == (1, 40, 52) and gray.dtype == np.float32
    assert np.allclose(gray, 60.0)
    picked = read_image(tmp_path / "c.tif", channels=[2, 0])
    assert picked[:, 0, 0].tolist() == [90, 30]


@pytest.mark.parametrize("bad", [[3], [-1]])
def test_out_of_range_channel_index(tmp_path: Path, bad: list[int]) -> None:
    write_image(tmp_path / "g.png", synthetic_pair()[0])
    with pytest.raises(InputError, match="channel index") as exc:
        read_image(tmp_path / "g.png", channels=bad)
    _assert_one_line_naming(exc, tmp_path / "g.png")


def test_unknown_channels_word_is_input_error(tmp_path: Path) -> None:
    write_image(tmp_path / "g.png", synthetic_pair()[0])
    with pytest.raises(InputError, match="channels"):
        read_image(tmp_path / "g.png", channels="green")


# ---------------------------------------------------------------- masks


@pytest.mark.parametrize(
    ("ext", "dtype"),
    [(".png", np.uint8), (".png", np.uint16), (".tif", np.uint16), (".tif", np.uint32)],
)
def test_instance_masks_keep_ids(tmp_path: Path, ext: str, dtype: type) -> None:
    labels = np.zeros((37, 53), dtype)
    labels[2:6, 2:6], labels[10:20, 10:20], labels[25:30, 40:50] = 3, 7, 200
    write_image(tmp_path / f"m{ext}", labels)
    out = read_labels(tmp_path / f"m{ext}")
    assert out.ndim == 2 and out.dtype.kind == "i"
    np.testing.assert_array_equal(out, labels.astype(np.int64))


def test_uint32_ids_above_65535_preserved(tmp_path: Path) -> None:
    labels = np.zeros((300, 400), np.uint32)
    labels[2:6, 2:6], labels[10:20, 10:20] = 70_000, 90_000
    tifffile.imwrite(tmp_path / "m.tif", labels)
    out = read_labels(tmp_path / "m.tif")
    assert set(np.unique(out).tolist()) == {0, 70_000, 90_000}
    np.testing.assert_array_equal(out, labels.astype(np.int64))


@pytest.mark.parametrize("background", [True, False])
def test_ids_above_the_pixel_count_are_renumbered_in_order(tmp_path: Path, background) -> None:
    """Issue 27: an id of 2^40 made every per-id array (areas, boxes) terabytes long."""
    labels = np.full((40, 52), 2**41 + 5, np.uint64) if not background else np.zeros((40, 52),
                                                                                    np.uint64)
    labels[2:6, 2:6], labels[10:20, 10:20], labels[30:35, 1:3] = 70_000, 2**40, 4_000_000_000
    tifffile.imwrite(tmp_path / "m.tif", labels)
    out = read_labels(tmp_path / "m.tif")
    assert out.dtype == np.int32
    expected = np.searchsorted(np.unique(labels), labels) + (0 if background else 1)
    np.testing.assert_array_equal(out, expected)
    assert out.max() == len(np.unique(labels)) - background


def _two_blobs(dtype: type, value: int) -> np.ndarray:
    mask = np.zeros((40, 52), dtype)
    mask[2:8, 2:8] = value
    mask[20:30, 30:40] = value
    return mask


@pytest.mark.parametrize(
    ("ext", "dtype", "value"),
    [
        (".png", np.uint8, 1),
        (".png", np.uint8, 255),
        (".tif", np.uint8, 255),
        (".tif", np.uint16, 1),
        (".tif", np.uint16, 255),
        (".tif", np.uint16, 65535),
        (".tif", bool, True),
    ],
)
def test_binary_masks_split_into_instances(
    tmp_path: Path, ext: str, dtype: type, value: int
) -> None:
    write_image(tmp_path / f"b{ext}", _two_blobs(dtype, value))
    with pytest.warns(BinaryMaskWarning, match=f"b{ext}"):
        out = read_labels(tmp_path / f"b{ext}")
    assert sorted(np.unique(out).tolist()) == [0, 1, 2]
    assert out[4, 4] != out[25, 35]


def test_single_cell_instance_mask_is_not_warned(tmp_path: Path) -> None:
    mask = np.zeros((40, 52), np.uint16)
    mask[5:15, 5:15] = 1
    tifffile.imwrite(tmp_path / "one.tif", mask)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = read_labels(tmp_path / "one.tif")
    np.testing.assert_array_equal(out, mask)


def test_rgb_stored_gray_mask_accepted(tmp_path: Path) -> None:
    labels = np.zeros((40, 52), np.uint8)
    labels[5:10, 5:10], labels[20:30, 20:30] = 4, 9
    iio.imwrite(tmp_path / "m.png", np.stack([labels] * 3, axis=-1))
    np.testing.assert_array_equal(read_labels(tmp_path / "m.png"), labels)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.full((40, 52), 0.5, np.float32), "float"),
        (np.array([[-1, 0], [2, 3]], np.int32).repeat(20, 0).repeat(26, 1), "negative"),
        (
            np.stack([np.zeros((40, 52)), np.ones((40, 52)), np.zeros((40, 52))], -1).astype(
                np.uint8
            ),
            "single-channel",
        ),
    ],
    ids=["float", "negative", "multichannel"],
)
def test_bad_masks(tmp_path: Path, array: np.ndarray, match: str) -> None:
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, array)
    with pytest.raises(InputError, match=match) as exc:
        read_labels(path)
    _assert_one_line_naming(exc, path)


@pytest.mark.parametrize(("top", "dtype"), [(65535, np.uint16), (65536, np.uint32)])
def test_write_labels_round_trip(tmp_path: Path, top: int, dtype: type) -> None:
    labels = np.zeros((37, 53), np.int64)
    labels[3:9, 3:9], labels[20:30, 30:40] = 1, top
    path = tmp_path / "sub" / "out.tif"
    write_labels(path, labels)
    assert tifffile.imread(path).dtype == dtype
    np.testing.assert_array_equal(read_labels(path), labels)
    assert [p.name for p in path.parent.iterdir()] == ["out.tif"]  # no temp file left


# ---------------------------------------------------------------- bad files


def _png_bytes(tmp_path: Path) -> bytes:
    iio.imwrite(tmp_path / "ok.png", synthetic_pair()[0])
    return (tmp_path / "ok.png").read_bytes()


def _tiff_bytes(tmp_path: Path) -> bytes:
    tifffile.imwrite(tmp_path / "ok.tif", synthetic_pair(image_dtype=np.uint16)[0])
    return (tmp_path / "ok.tif").read_bytes()


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("empty.png", lambda t: b"", "empty"),
        ("trunc.png", lambda t: _png_bytes(t)[:200], "cannot read"),
        ("header.png", lambda t: _png_bytes(t)[:40], "cannot read"),
        ("trunc.tif", lambda t: _tiff_bytes(t)[: len(_tiff_bytes(t)) // 2], "cannot read"),
        ("header.tif", lambda t: _tiff_bytes(t)[:8], "cannot read image .invalid offset"),
        ("random.png", lambda t: np.random.default_rng(0).bytes(500), "cannot read"),
        ("random.tif", lambda t: np.random.default_rng(1).bytes(500), "cannot read"),
        ("notes.txt", lambda t: b"hello", "unsupported file type"),
    ],
)
@pytest.mark.parametrize("reader", [read_image, read_labels])
@pytest.mark.filterwarnings("ignore:The legacy `DICOM` plugin:DeprecationWarning")
def test_bad_files_are_one_line_input_errors(
    tmp_path: Path, name: str, content, match: str, reader, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / name
    path.write_bytes(content(tmp_path))
    with pytest.raises(InputError, match=match) as exc:
        reader(path)
    _assert_one_line_naming(exc, path)
    # tifffile's own log lines would reach stderr next to the error line; they are held back
    assert not [r for r in caplog.records if r.name.startswith("tifffile")]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found") as exc:
        read_image(tmp_path / "nope.tif")
    _assert_one_line_naming(exc, tmp_path / "nope.tif")


def test_4d_stack_refused(tmp_path: Path) -> None:
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros((2, 3, 40, 52), np.uint8), photometric="minisblack")
    with pytest.raises(InputError, match="z-stack") as exc:
        read_image(path)
    _assert_one_line_naming(exc, path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_float_image_refused(tmp_path: Path, bad: float) -> None:
    image = np.zeros((40, 52), np.float32)
    image[3, 4] = bad
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, image)
    with pytest.raises(InputError, match="NaN") as exc:
        read_image(path)
    _assert_one_line_naming(exc, path)


def test_tifffile_log_is_restored_after_read(tmp_path: Path) -> None:
    (tmp_path / "h.tif").write_bytes(_tiff_bytes(tmp_path)[:8])
    logger = logging.getLogger("tifffile")
    before = (list(logger.handlers), logger.propagate)
    with pytest.raises(InputError):
        read_image(tmp_path / "h.tif")
    assert (list(logger.handlers), logger.propagate) == before


def test_list_image_files(tmp_path: Path) -> None:
    for name in ("b.TIF", "a.png", "c.jpeg", ".hidden.png", "notes.txt", "d.npy"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.png").mkdir()
    assert [p.name for p in list_image_files(tmp_path)] == ["a.png", "b.TIF", "c.jpeg"]
    with pytest.raises(InputError, match="not a folder"):
        list_image_files(tmp_path / "a.png")


# ---------------------------------------------------------------- normalisation


def test_normalize_16bit_small_range_spans_minus_one_to_one() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(1000, 1300, size=(1, 40, 52)).astype(np.uint16)
    out = normalize_percentile(image)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert out.min() == -1.0 and out.max() == 1.0
    assert abs(float(out.mean())) < 0.1


def test_normalize_constant_image_is_zero() -> None:
    out = normalize_percentile(np.full((2, 8, 8), 4000, np.uint16))
    assert (out == 0).all()


def test_normalize_per_channel() -> None:
    ramp = np.linspace(0, 1, 40 * 52, dtype=np.float32).reshape(40, 52)
    image = np.stack([ramp * 10, ramp * 60000 + 5, np.full_like(ramp, 7)])
    out = normalize_percentile(image)
    np.testing.assert_allclose(out[0], out[1], atol=1e-4)  # same shape, own range each
    assert out[0].min() == -1.0 and out[0].max() == 1.0
    assert (out[2] == 0).all()
    assert np.all(np.diff(out[0].ravel()) >= 0)


def test_outputs_get_ordinary_file_permissions(tmp_path):
    import os
    import stat

    from cganseg.runtime.atomic import write_text

    umask = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(umask)
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode & 0o044  # readable by group/others like any file the user writes (umask 022)
