"""Corrections read back as training masks (issue 30, item 1): Cellpose GUI ``_seg.npy`` files,
ImageJ ROI sets and label TIFFs pair with their images and train; the round trip segment ->
write -> read back gives the same labels; bad files are refused in one line."""

from __future__ import annotations

import pathlib
import shutil

import cellpose.io
import numpy as np
import pytest
from tests.helpers import tiny_seg_config

from cganseg.cli import main
from cganseg.data.corrections import read_cellpose_seg, read_imagej_rois, read_mask
from cganseg.data.dataset import load_samples
from cganseg.data.folders import find_pairs
from cganseg.data.io import read_image, read_labels, write_labels
from cganseg.data.label_formats import write_cellpose_seg, write_imagej_rois
from cganseg.demo import demo_data_dir
from cganseg.errors import InputError

DEMO = ("245b995878370ef4", "9586e48a9a4353f1", "3b75fc03a1d12b29")


def _labels(name: str) -> np.ndarray:
    return read_labels(demo_data_dir() / "masks" / f"{name}.png")


def test_cganseg_s_own_files_read_back_as_the_same_labels(seg_run, tiny_dataset, tmp_path):
    """segment -> _seg.npy and ROIs -> read back: the labels segment wrote as a TIFF."""
    out = tmp_path / "out"
    assert main(["segment", str(seg_run), str(tiny_dataset / "images"), "--out", str(out),
                 "--save-format", "tif", "seg.npy", "rois", "--quiet"]) == 0  # fmt: skip
    for tif in sorted(out.glob("*.tif")):
        labels = read_labels(tif)
        seg = read_mask(out / f"{tif.stem}_seg.npy", labels.shape)
        assert np.array_equal(seg, labels)
    # ROIs keep a cell's largest piece and no holes: exact on real (whole, solid) cells
    for name in DEMO:
        labels = _labels(name)
        write_imagej_rois(tmp_path / f"{name}_rois.zip", labels)
        assert np.array_equal(read_imagej_rois(tmp_path / f"{name}_rois.zip", labels.shape),
                              labels)  # fmt: skip


def test_a_cellpose_gui_file_reads_its_masks():
    """A _seg.npy as Cellpose itself writes it (cellpose.io.masks_flows_to_seg: flows, outlines,
    diameter, ...), read without unpickling anything but arrays and plain data."""
    tmp = pathlib.Path(__import__("tempfile").mkdtemp())
    labels = _labels(DEMO[0])
    h, w = labels.shape
    flows = [np.zeros((h, w, 3), np.uint8), np.zeros((2, h, w), np.float32),
             np.zeros((h, w), np.float32), np.zeros((2, h, w), np.float32)]  # fmt: skip
    cellpose.io.masks_flows_to_seg(np.zeros((h, w), np.float32), labels.astype(np.uint16),
                                   flows, str(tmp / "img.tif"), diams=30.0, channels=[0, 0])
    assert np.array_equal(read_cellpose_seg(tmp / "img_seg.npy", (h, w)), labels)
    shutil.rmtree(tmp)


def _corrected_folder(root: pathlib.Path) -> dict[str, np.ndarray]:
    """A Cellpose-style folder: one image per correction format (GUI npy, Fiji ROIs, a napari
    label TIFF)."""
    root.mkdir()
    truth = {}
    for name, kind in zip(DEMO, ("seg.npy", "rois", "tif"), strict=True):
        shutil.copy(demo_data_dir() / "images" / f"{name}.png", root / f"{name}.png")
        labels = truth[name] = _labels(name)
        if kind == "seg.npy":
            write_cellpose_seg(root / f"{name}_seg.npy", labels, root / f"{name}.png")
        elif kind == "rois":
            write_imagej_rois(root / f"{name}_rois.zip", labels)
        else:
            write_labels(root / f"{name}_masks.tif", labels)
    return truth


def test_a_folder_of_corrections_in_three_formats_trains(tmp_path, capsys):
    truth = _corrected_folder(tmp_path / "data")
    pairs = find_pairs(tmp_path / "data")
    assert [p.name for p in pairs] == sorted(DEMO)
    for sample in load_samples(pairs, progress=False):
        assert np.array_equal(sample.labels, truth[sample.name])
    cfg = tiny_seg_config(tmp_path / "data", tmp_path / "run", test_fraction=0.0,
                          val_fraction=0.0, iterations=2)  # fmt: skip
    cfg.save(tmp_path / "cfg.yaml")
    assert main(["train-seg", "--config", str(tmp_path / "cfg.yaml"), "--quiet"]) == 0, (
        capsys.readouterr().err)
    # the same in the folders layout: masks/NAME_seg.npy etc.
    folders = tmp_path / "folders"
    (folders / "images").mkdir(parents=True)
    (folders / "masks").mkdir()
    for f in (tmp_path / "data").iterdir():  # (a label image there is masks/NAME.tif)
        name = f.name.replace("_masks.tif", ".tif")
        (folders / ("images" if f.suffix == ".png" else "masks") / name).write_bytes(
            f.read_bytes())
    for sample in load_samples(find_pairs(folders), progress=False):
        assert np.array_equal(sample.labels, truth[sample.name])


def _refused(path: pathlib.Path, shape, words: str) -> None:
    with pytest.raises(InputError) as info:
        read_mask(path, shape)
    message = str(info.value)
    assert words in message and path.name in message and "\n" not in message, message


def test_bad_corrections_are_refused_in_one_line(tmp_path):
    labels = _labels(DEMO[0])
    np.save(tmp_path / "nomask_seg.npy", {"outlines": labels}, allow_pickle=True)
    _refused(tmp_path / "nomask_seg.npy", labels.shape, "holds no 'masks'")
    write_cellpose_seg(tmp_path / "small_seg.npy", labels[:100, :120], tmp_path / "x.png")
    _refused(tmp_path / "small_seg.npy", labels.shape, "masks are 100x120 but the image is")
    # a pickled object that is not an array or plain data is never built
    np.save(tmp_path / "evil_seg.npy", {"masks": labels, "x": pathlib.PurePosixPath("a")},
            allow_pickle=True)  # fmt: skip
    _refused(tmp_path / "evil_seg.npy", labels.shape, "objects other than arrays")
    np.save(tmp_path / "plain_seg.npy", labels)
    _refused(tmp_path / "plain_seg.npy", labels.shape, "not a Cellpose _seg.npy")
    (tmp_path / "broken_rois.zip").write_bytes(b"not a zip at all, but long enough to be read")
    _refused(tmp_path / "broken_rois.zip", labels.shape, "not a readable ImageJ ROI set")


def test_two_masks_for_one_image_are_refused_naming_both(tmp_path):
    _corrected_folder(tmp_path / "data")
    stale = tmp_path / "data" / f"{DEMO[0]}_masks.tif"
    write_labels(stale, _labels(DEMO[0]))
    with pytest.raises(InputError, match=f"{DEMO[0]}_seg.npy and {stale.name}|"
                       f"{stale.name} and {DEMO[0]}_seg.npy"):  # fmt: skip
        find_pairs(tmp_path / "data")
    assert read_image(demo_data_dir() / "images" / f"{DEMO[0]}.png").shape[1:] == (256, 256)
