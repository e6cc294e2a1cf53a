"""Labels for other tools (issue 19, item 2): each file is read back with its format's own reader
(roifile for ImageJ ROIs, tifffile's OME-XML for OME-TIFF) or checked against its documented
layout (Cellpose's ``_seg.npy`` dict), never with our writer's code."""

from __future__ import annotations

import numpy as np
import pytest
import roifile
import tifffile
from scipy import ndimage
from skimage.draw import disk, polygon2mask

from cganseg.cli import main
from cganseg.data.io import PixelSize, read_labels, read_pixel_size
from cganseg.data.label_formats import write_cellpose_seg, write_imagej_rois, write_ome_tiff


def _cells() -> np.ndarray:
    """Touching discs, an irregular cell, a ring (a hole), a diagonal chain, a one-pixel cell."""
    labels = np.zeros((64, 72), np.uint16)
    labels[disk((14, 14), 9, shape=labels.shape)] = 1
    labels[disk((14, 30), 9, shape=labels.shape)] = 2  # touches 1
    labels[30:50, 4:12] = 3
    labels[40:50, 12:28] = 3  # an L
    labels[disk((44, 50), 10, shape=labels.shape)] = 4
    labels[disk((44, 50), 4, shape=labels.shape)] = 0  # a hole in 4
    for k in range(6):
        labels[5 + k, 50 + k] = 5  # pixels touching only diagonally
    labels[60, 70] = 6
    return labels


def _rasterise(roi: roifile.ImagejRoi, shape: tuple[int, int]) -> np.ndarray:
    """ImageJ's rule: a pixel belongs to a polygon ROI when its centre lies inside."""
    xy = roi.coordinates()
    return polygon2mask(shape, xy[:, ::-1] - 0.5)  # ImageJ corners -> pixel-centre (row, col)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_imagej_rois_give_every_cell_back(tmp_path):
    labels = _cells()
    path = tmp_path / "x_rois.zip"
    assert write_imagej_rois(path, labels) == 6
    rois = roifile.roiread(path)
    assert [r.name for r in rois] == [f"cell_{i:05d}" for i in range(1, 7)]
    for index, roi in enumerate(rois, start=1):
        cell = labels == index
        got = _rasterise(roi, labels.shape)
        filled = ndimage.binary_fill_holes(cell)  # ROIs hold no holes
        assert _iou(got, filled) >= 0.95, index
        if index != 4:
            assert np.array_equal(got, cell), index


def test_imagej_rois_of_an_image_without_cells_is_an_empty_set(tmp_path):
    path = tmp_path / "empty_rois.zip"
    assert write_imagej_rois(path, np.zeros((8, 8), np.uint16)) == 0
    assert roifile.roiread(path) == []


def test_imagej_rois_replace_an_older_set(tmp_path):
    path = tmp_path / "x_rois.zip"
    write_imagej_rois(path, _cells())
    write_imagej_rois(path, (_cells() == 1).astype(np.uint16))
    assert len(roifile.roiread(path)) == 1


def test_cellpose_seg_npy_has_the_documented_layout(tmp_path):
    labels = _cells()
    image = tmp_path / "x.tif"
    tifffile.imwrite(image, np.zeros(labels.shape, np.uint16))
    path = tmp_path / "x_seg.npy"
    write_cellpose_seg(path, labels, image)
    data = np.load(path, allow_pickle=True).item()  # our own file, as the Cellpose GUI loads it
    assert {"masks", "outlines", "chan_choose", "ismanual", "filename", "est_diam"} <= set(data)
    assert data["masks"].dtype == np.uint16 and np.array_equal(data["masks"], labels)
    outlines = data["outlines"]
    assert outlines.dtype == np.uint16 and outlines.shape == labels.shape
    on = outlines > 0
    assert np.array_equal(outlines[on], labels[on])  # an outline pixel carries its cell's id
    assert set(np.unique(outlines[on])) == set(range(1, 7))
    interior = ndimage.binary_erosion(labels == 1)
    assert not on[interior].any()
    assert data["ismanual"].dtype == bool and data["ismanual"].shape == (6,)
    assert list(data["chan_choose"]) == [0, 0]
    assert data["filename"] == str(image.resolve())
    assert data["est_diam"] > 0


def _ome_input(path, pixel_um: float) -> None:
    tifffile.imwrite(
        path,
        np.random.default_rng(0).integers(0, 4000, (64, 72), dtype=np.uint16),
        ome=True,
        metadata={"axes": "YX", "PhysicalSizeX": pixel_um, "PhysicalSizeY": pixel_um,
                  "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"},
    )  # fmt: skip


def test_pixel_size_from_ome_imagej_and_centimetre_tiffs_not_from_dpi(tmp_path):
    image = np.zeros((8, 8), np.uint16)
    _ome_input(tmp_path / "ome.tif", 0.65)
    tifffile.imwrite(tmp_path / "ij.tif", image, imagej=True, resolution=(1 / 0.325, 1 / 0.325),
                     metadata={"unit": "micron"})  # fmt: skip
    tifffile.imwrite(tmp_path / "cm.tif", image, resolution=(1e4 / 2.0, 1e4 / 2.0),
                     resolutionunit="CENTIMETER")  # fmt: skip
    tifffile.imwrite(tmp_path / "dpi.tif", image, resolution=(72, 72), resolutionunit="INCH")
    tifffile.imwrite(tmp_path / "plain.tif", image)
    assert read_pixel_size(tmp_path / "ome.tif") == PixelSize(0.65, 0.65, "µm")
    ij = read_pixel_size(tmp_path / "ij.tif")
    assert ij.unit == "µm" and ij.x == pytest.approx(0.325, rel=1e-5)
    assert read_pixel_size(tmp_path / "cm.tif").x == pytest.approx(2.0, rel=1e-5)
    assert read_pixel_size(tmp_path / "dpi.tif") is None
    assert read_pixel_size(tmp_path / "plain.tif") is None


def _ome_pixels(path) -> dict:
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        return tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]


def test_ome_tiff_keeps_labels_and_pixel_size(tmp_path):
    labels = _cells()
    write_ome_tiff(tmp_path / "a.ome.tif", labels, PixelSize(0.65, 0.7, "µm"))
    assert np.array_equal(tifffile.imread(tmp_path / "a.ome.tif"), labels)
    pixels = _ome_pixels(tmp_path / "a.ome.tif")
    assert pixels["PhysicalSizeX"] == pytest.approx(0.65)
    assert pixels["PhysicalSizeY"] == pytest.approx(0.7)
    assert pixels["PhysicalSizeXUnit"] == "µm"
    write_ome_tiff(tmp_path / "b.ome.tif", labels, None)
    assert "PhysicalSizeX" not in _ome_pixels(tmp_path / "b.ome.tif")


def test_segment_writes_every_format_from_the_same_labels(tmp_path, seg_run, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _ome_input(folder / "cells.tif", 0.65)
    out = tmp_path / "out"
    argv = ["segment", str(seg_run), str(folder), "--out", str(out), "--quiet", "--save-format",
            "tif", "seg.npy", "rois", "ome-tiff"]  # fmt: skip
    assert main(argv) == 0
    assert "(tif, seg.npy, rois, ome-tiff)" in capsys.readouterr().out
    labels = read_labels(out / "cells.tif")
    assert np.array_equal(tifffile.imread(out / "cells.ome.tif"), labels)
    assert _ome_pixels(out / "cells.ome.tif")["PhysicalSizeX"] == pytest.approx(0.65)
    seg = np.load(out / "cells_seg.npy", allow_pickle=True).item()
    assert np.array_equal(seg["masks"], labels)
    assert seg["filename"] == str((folder / "cells.tif").resolve())
    rois = roifile.roiread(out / "cells_rois.zip")
    assert len(rois) == len(np.unique(labels[labels > 0])) > 0
    for roi in rois:
        cell = labels == int(roi.name.split("_")[1])
        assert _iou(_rasterise(roi, labels.shape), ndimage.binary_fill_holes(cell)) >= 0.95


def test_segment_refuses_an_unknown_format(tmp_path, seg_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", str(seg_run), str(tmp_path), "--out", str(tmp_path / "o"),
              "--save-format", "zarr"])  # fmt: skip
    assert exit_info.value.code == 2
    assert "zarr" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
