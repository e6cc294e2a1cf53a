"""A user's corrections read back as training masks (issue 30, item 1).

Biologists correct predicted cells where they are comfortable: in the Cellpose GUI (which saves
``NAME_seg.npy`` beside the image), in Fiji's ROI Manager (``NAME_rois.zip``), or in napari and
Fiji as a label image (a TIFF, read as any mask). :func:`read_mask` reads a training mask in any
of these, so ``cganseg segment --save-format seg.npy,rois`` -> correct -> ``train-seg`` closes the
loop (:mod:`cganseg.data.folders` pairs them with their images).

A ``_seg.npy`` is a pickled dict, so it is read with an unpickler that builds numpy arrays and
plain Python data only, never arbitrary objects: a shared file must not run code. An ROI set is
rasterised as ImageJ does (the pixels whose centres lie inside each polygon), which gives back
exactly the cells cganseg wrote (:func:`cganseg.data.label_formats.write_imagej_rois`).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import roifile
from skimage.draw import polygon2mask

from cganseg.data.io import checked_labels, read_labels
from cganseg.errors import InputError

#: the endings of the Cellpose GUI's and Fiji's files (also what ``--save-format`` writes)
SEG_NPY, ROIS_ZIP = "_seg.npy", "_rois.zip"
#: a zip archive without entries: what an image without cells gives Fiji's ROI Manager
EMPTY_ZIP = b"PK\x05\x06" + b"\x00" * 18


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays, numpy scalars and plain Python data, nothing else."""

    ALLOWED = {(module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
               for name in ("_reconstruct", "scalar")} | {("numpy", "ndarray"),
                                                          ("numpy", "dtype")}  # fmt: skip

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name}")


def read_cellpose_seg(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """The ``masks`` of a Cellpose GUI ``NAME_seg.npy`` (or one cganseg wrote), read without
    unpickling anything but arrays and plain data; one line naming the file when it holds no
    masks, other objects, or masks of another size than ``shape``."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)  # fmt: skip
            array_shape, _, dtype = read_header(fh)
            if dtype.kind != "O" or array_shape != ():
                raise InputError(f"not a Cellpose _seg.npy (an array {array_shape} of {dtype}, "
                                 "not a dict)", path)  # fmt: skip
            data = _ArraysOnly(fh).load()
    except pickle.UnpicklingError as exc:
        raise InputError(f"refused to load: it holds objects other than arrays and plain data "
                         f"({exc})", path) from None  # fmt: skip
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"not a readable Cellpose _seg.npy ({exc})", path) from None
    data = data.item() if isinstance(data, np.ndarray) else data
    if not isinstance(data, dict) or "masks" not in data:
        raise InputError("Cellpose _seg.npy holds no 'masks' (save it again in the GUI after "
                         "segmenting or drawing)", path)  # fmt: skip
    labels = checked_labels(np.asarray(data["masks"]), path)
    _check_shape(labels, shape, path)
    return labels


def read_imagej_rois(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Labels of an ImageJ ROI set ``NAME_rois.zip`` for an image of ``shape``: each area ROI
    rasterised as ImageJ does (pixel centres inside it), later ROIs over earlier ones; a ROI
    named ``cell_N`` (as cganseg writes them) keeps id N, others are numbered in order."""
    path = Path(path)
    try:
        rois = roifile.roiread(path) if path.stat().st_size > len(EMPTY_ZIP) else []
    except Exception as exc:  # noqa: BLE001 - roifile raises many kinds on a bad file
        raise InputError(f"not a readable ImageJ ROI set ({type(exc).__name__}: {exc})",
                         path) from None  # fmt: skip
    rois = rois if isinstance(rois, list) else [rois]
    named = [re.fullmatch(r"cell_(\d+)", roi.name or "") for roi in rois]
    ids = ([int(m.group(1)) for m in named] if all(named) and len({m.group(1) for m in named})
           == len(rois) else list(range(1, len(rois) + 1)))  # type: ignore[union-attr]
    labels = np.zeros(shape, np.int32)
    for roi, cell in zip(rois, ids, strict=True):
        xy = roi.coordinates()
        if xy is None or len(xy) < 3:
            raise InputError(f"ROI {roi.name!r} is not an area (a line or point); only area "
                             "ROIs (polygons, freehand, rectangles, ovals) are cells", path)
        labels[polygon2mask(shape, np.stack([xy[:, 1] - 0.5, xy[:, 0] - 0.5], axis=1))] = cell
    return checked_labels(labels, path) if labels.any() else labels


def _check_shape(labels: np.ndarray, shape: tuple[int, int] | None, path: Path) -> None:
    if shape is not None and labels.shape != tuple(shape):
        raise InputError(f"masks are {labels.shape[0]}x{labels.shape[1]} but the image is "
                         f"{shape[0]}x{shape[1]}", path)  # fmt: skip


#: each correction format's reader ``read(path, image shape)``, by file-name ending
READERS: dict[str, Callable[[Path, tuple[int, int]], np.ndarray]] = {
    SEG_NPY: read_cellpose_seg,
    ROIS_ZIP: read_imagej_rois,
}


def correction_stem(path: Path) -> str | None:
    """The image name a correction file (``NAME_seg.npy``, ``NAME_rois.zip``) belongs to; None
    for other files."""
    suffix = next((s for s in READERS if path.name.lower().endswith(s)), None)
    return path.name[: -len(suffix)] if suffix else None


def read_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """A training mask of an image of ``shape``, whatever it was saved as: a label image (TIFF,
    PNG; napari and Fiji save labels so), a Cellpose GUI ``_seg.npy`` or an ImageJ ROI set
    ``_rois.zip``."""
    path = Path(path)
    for suffix, read in READERS.items():
        if path.name.lower().endswith(suffix):
            return read(path, shape)
    return read_labels(path)
