"""Instance labels in the formats other tools open (issue 19): the Cellpose GUI's ``_seg.npy``,
Fiji/ImageJ ROI sets, and OME-TIFF that keeps the input's physical pixel size.

A label TIFF (:func:`cganseg.data.io.write_labels`) opens everywhere as an image, but a biologist
who wants to *correct* masks does it in the Cellpose GUI (which loads ``NAME_seg.npy`` beside
``NAME.tif``), measures cells in Fiji's ROI Manager (``NAME_rois.zip``), or keeps calibrated data
in OME-TIFF for QuPath, napari and OMERO. Each writer here follows its format's documented
layout:

- ``_seg.npy``: the dict of Cellpose's documentation ("Outputs"): ``masks``, ``outlines``,
  ``chan_choose``, ``ismanual``, ``filename``, ``est_diam``; no ``flows`` (the GUI then simply has
  no flow view);
- ROI sets: one polygon ROI per cell in a zip (``roifile``), traced along the cell's outer pixel
  edges, so ImageJ's rasterisation (pixel centres inside the polygon) gives the cell's pixels
  back; ROIs hold no holes, and a cell in several pieces keeps its largest piece;
- OME-TIFF: the labels with ``PhysicalSizeX/Y`` and their units from the input (see
  :func:`cganseg.data.io.read_pixel_size`), written by ``tifffile``.

The first two are also read back, as a user's corrections (:mod:`cganseg.data.corrections`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import roifile
import tifffile
from scipy import ndimage
from skimage.measure import find_contours
from skimage.segmentation import find_boundaries

from cganseg.data.corrections import EMPTY_ZIP, ROIS_ZIP, SEG_NPY
from cganseg.data.io import PixelSize, usable_pixel_size, write_labels
from cganseg.data.rescale import cell_diameter
from cganseg.runtime.atomic import atomic_path


def label_outlines(labels: np.ndarray) -> np.ndarray:
    """Each cell's inner boundary pixels carrying its id, 0 elsewhere (Cellpose's ``outlines``)."""
    labels = np.asarray(labels)
    return np.where(find_boundaries(labels, mode="inner"), labels, 0)


def _label_dtype(labels: np.ndarray) -> type:
    return np.uint16 if labels.max(initial=0) <= np.iinfo(np.uint16).max else np.uint32


def write_cellpose_seg(
    path: str | Path, labels: np.ndarray, image_file: str | Path, diameter: float | None = None
) -> None:
    """``NAME_seg.npy`` for the Cellpose GUI: it opens ``image_file`` (or an image of the same
    name beside the npy) with these masks on it, ready for correction. ``diameter``: shown as the
    GUI's cell diameter (None: measured from the labels)."""
    labels = np.asarray(labels)
    dtype = _label_dtype(labels)
    n_cells = int(labels.max(initial=0))
    data = {
        "masks": labels.astype(dtype),
        "outlines": label_outlines(labels).astype(dtype),
        "chan_choose": [0, 0],  # gray: cganseg's channels are already chosen in the image
        "ismanual": np.zeros(n_cells, bool),
        "filename": str(Path(image_file).resolve()),
        "est_diam": float(cell_diameter(labels) if diameter is None else diameter),
    }
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.save(fh, data, allow_pickle=True)  # the format is a pickled dict, as Cellpose's


def cell_polygon(cell: np.ndarray) -> np.ndarray | None:
    """The outer outline of a boolean cell mask as an (N, 2) array of ImageJ (x, y) coordinates
    (pixel corners at integers), running along pixel edges (cut diagonally at corners, through
    edge midpoints), so every pixel centre of the cell lies inside it and none outside; None for
    an empty mask. Of several pieces the largest is kept, holes are ignored."""
    if not cell.any():
        return None
    pieces, n = ndimage.label(cell, structure=np.ones((3, 3)))
    if n > 1:
        sizes = np.bincount(pieces.ravel())[1:]
        cell = pieces == 1 + int(np.argmax(sizes))
    padded = np.pad(cell.astype(np.float32), 1)
    # fully_connected="high": diagonal neighbours of the cell are joined, as 8-connected pieces
    contours = find_contours(padded, 0.5, fully_connected="high")
    outer = max(contours, key=lambda c: float(np.ptp(c, axis=0).sum()))  # holes lie inside
    # (row, col) of pixel centres in the padded array -> ImageJ (x, y) of the unpadded image
    return outer[:-1, ::-1] - 1 + 0.5


def write_imagej_rois(path: str | Path, labels: np.ndarray) -> int:
    """``NAME_rois.zip``: one ImageJ polygon ROI per cell, named by its id, for Fiji's ROI
    Manager (File > Open, or drag the zip onto Fiji). Returns the number of ROIs."""
    labels = np.asarray(labels)
    rois = []
    for index, box in enumerate(ndimage.find_objects(labels.astype(np.int64)), start=1):
        if box is None:
            continue
        points = cell_polygon(labels[box] == index)
        if points is None:
            continue
        points = points + [box[1].start, box[0].start]
        roi = roifile.ImagejRoi.frompoints(points.astype(np.float32), name=f"cell_{index:05d}")
        rois.append(roi)
    with atomic_path(path) as tmp:
        tmp.unlink()  # roifile appends to an existing zip
        if rois:
            roifile.roiwrite(tmp, rois)
        else:
            tmp.write_bytes(EMPTY_ZIP)
    return len(rois)


def write_ome_tiff(path: str | Path, labels: np.ndarray, pixel_size: PixelSize | None) -> None:
    """``NAME.ome.tif``: the labels as OME-TIFF (uint16/32, zlib), with the input's physical
    pixel size when it had one."""
    labels = np.asarray(labels)
    metadata: dict[str, object] = {"axes": "YX"}
    pixel_size = usable_pixel_size(pixel_size)  # never an infinite, negative or unknown size
    if pixel_size is not None:
        metadata.update(
            PhysicalSizeX=pixel_size.x,
            PhysicalSizeXUnit=pixel_size.unit,
            PhysicalSizeY=pixel_size.y,
            PhysicalSizeYUnit=pixel_size.unit,
        )
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            labels.astype(_label_dtype(labels)),
            ome=True,
            photometric="minisblack",
            compression="zlib",
            metadata=metadata,
        )


class LabelFormat(NamedTuple):
    """A ``--save-format``: the file it writes beside the input's name (NAME + ``suffix``) and
    its writer ``write(path, labels, source image, pixel size)`` (a format users correct labels
    in is also read back: :mod:`cganseg.data.corrections`)."""

    suffix: str
    write: Callable[[Path, np.ndarray, Path, PixelSize | None], object]


#: ``--save-format`` choices; a new format is its writer above and one entry here
SAVE_FORMATS: dict[str, LabelFormat] = {
    "tif": LabelFormat(".tif", lambda path, labels, source, size: write_labels(path, labels)),
    "seg.npy": LabelFormat(SEG_NPY, lambda path, labels, source, size:
                           write_cellpose_seg(path, labels, source)),
    "rois": LabelFormat(ROIS_ZIP, lambda path, labels, source, size:
                        write_imagej_rois(path, labels)),
    "ome-tiff": LabelFormat(".ome.tif", lambda path, labels, source, size:
                            write_ome_tiff(path, labels, size)),
}  # fmt: skip


def label_file_names(source: str | Path, formats: Sequence[str]) -> list[str]:
    """The names :func:`write_label_files` gives the labels of image ``source`` in ``formats``."""
    return [f"{Path(source).stem}{SAVE_FORMATS[fmt].suffix}" for fmt in formats]


def write_label_files(
    out_dir: str | Path,
    source: str | Path,
    labels: np.ndarray,
    formats: Sequence[str] = ("tif",),
    pixel_size: PixelSize | None = None,
) -> list[Path]:
    """Write ``labels`` of the image ``source`` into ``out_dir`` in each of ``formats`` (keys of
    :data:`SAVE_FORMATS`), named after ``source``; returns the files written."""
    out_dir, source = Path(out_dir), Path(source)
    written = []
    for fmt, name in zip(formats, label_file_names(source, formats), strict=True):
        SAVE_FORMATS[fmt].write(out_dir / name, labels, source, pixel_size)
        written.append(out_dir / name)
    return written
