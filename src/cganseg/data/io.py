"""Reading and writing microscopy images and label masks.

Images: TIFF (tifffile), PNG and JPEG (imageio); 8/16/32-bit integer or float; grayscale or
multi-channel, stored channel-last (H, W, C) or channel-first (C, H, W). They come back as
``(C, H, W)`` arrays in their own dtype; intensity normalisation is a separate step
(:mod:`cganseg.data.normalize`).

Masks: instance label images (0 = background, one integer id per cell) of any unsigned or signed
integer type, or binary masks (0/1, 0/255 or 0/65535, of any integer type), which are split into
instances by connected components (4-connectivity) with a warning, because touching cells then
merge into one. (A 0/1 mask with a single blob reads the same either way, so it is not warned.)

Every problem with a file is raised as :class:`~cganseg.errors.InputError` naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile
from PIL import Image
from skimage.measure import label as connected_components

from cganseg import checks
from cganseg.errors import InputError
from cganseg.runtime.atomic import atomic_path

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
TIFF_EXTENSIONS = (".tif", ".tiff")
#: foreground values that mark a 0/x mask of any integer type as binary, not as one cell's id
BINARY_VALUES = (1, 255, 65535)

#: ``channels`` argument of :func:`read_image`: keep all, average to gray, or pick indices.
Channels = str | Sequence[int] | None


class BinaryMaskWarning(UserWarning):
    """A mask was binary, so touching cells in it merged into one instance."""


class AlphaDroppedWarning(UserWarning):
    """An RGBA (or gray + alpha) PNG/JPEG lost its alpha channel, which carries no cell signal."""


def list_image_files(folder: str | Path) -> list[Path]:
    """Sorted image files (by extension, case-insensitive) directly inside ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("not a folder", folder)
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise InputError(f"cannot list folder ({exc.strerror or exc})", folder) from None
    files = [
        p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    ]
    return sorted(p for p in files if p.is_file())


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex): identifies a data file's content wherever it moves."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})", path) from None
    return digest.hexdigest()


def available_memory() -> int | None:
    """Bytes of memory available now (Linux ``MemAvailable``, else free pages); None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_declared_size(path: Path) -> None:
    """Refuse a TIFF whose header declares more pixels than memory can hold, before decoding.

    (Pillow refuses such PNG/JPEG headers itself, as decompression bombs.)
    """
    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            return
        series = tif.series[0]
        need = math.prod(series.shape) * np.dtype(series.dtype).itemsize
    have = available_memory()
    if have is not None and need > have:
        raise InputError(
            f"header declares {'x'.join(map(str, series.shape))} pixels "
            f"({need / 2**30:.1f} GB), more than the {have / 2**30:.1f} GB of memory available",
            path,
        )


def read_array(path: str | Path) -> np.ndarray:
    """Read a file's pixel array as stored; any failure becomes one InputError line."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise InputError(
            f"unsupported file type {suffix!r} (use {', '.join(IMAGE_EXTENSIONS)})", path
        )
    if not path.is_file():
        raise InputError("file not found", path)
    if path.stat().st_size == 0:
        raise InputError("file is empty (0 bytes)", path)
    try:
        with _tifffile_log() as notes:
            if suffix in TIFF_EXTENSIONS:
                _check_declared_size(path)
                arr = tifffile.imread(path)
            else:
                arr = iio.imread(path)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - every decoder error means the same to the user
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read image ({reason})", path) from None
    arr = np.asarray(arr)
    if arr.size == 0 or min(arr.shape) == 0:
        if notes:  # tifffile found no readable page: a corrupt file, not an empty image
            raise InputError(f"cannot read image ({_strip_object_repr(notes[0])})", path)
        raise InputError(f"image has no pixels (shape {arr.shape})", path)
    for note in notes:
        warnings.warn(f"{path}: {note}", stacklevel=2)
    return arr


def _strip_object_repr(note: str) -> str:
    """tifffile's notes start with an object repr (``<tifffile.TiffPages @8> ...``): drop it."""
    return note.split("> ", 1)[1] if note.startswith("<") and "> " in note else note


class _ListHandler(logging.Handler):
    def __init__(self, messages: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().splitlines()[0])


@contextlib.contextmanager
def _tifffile_log() -> Iterator[list[str]]:
    """Collect what tifffile logs while reading a file.

    tifffile logs file problems straight to stderr; collected, they go into the one-line error
    when the read fails, or become ordinary warnings when it succeeds.
    """
    messages: list[str] = []
    logger = logging.getLogger("tifffile")
    handler, propagate = _ListHandler(messages), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _to_chw(arr: np.ndarray, path: Path | None) -> np.ndarray:
    """Bring a 2-D or 3-D array to (C, H, W), guessing channel-last vs channel-first; ``path``:
    the file it came from (its type says whether a 2nd/4th channel is alpha), None: an array."""
    arr = np.squeeze(arr) if arr.ndim > 2 else arr
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim != 3:
        raise InputError(
            f"image has shape {arr.shape}; expected a 2-D image, optionally with channels "
            "(z-stacks and time series are not supported: save one 2-D image per file)",
            path,
        )
    if arr.shape[-1] <= 4 and arr.shape[0] > 4:
        arr = np.moveaxis(arr, -1, 0)
    elif not (arr.shape[0] <= 4 < arr.shape[-1]) and arr.shape[-1] <= arr.shape[0]:
        arr = np.moveaxis(arr, -1, 0)
    if path is not None and path.suffix.lower() not in TIFF_EXTENSIONS and arr.shape[0] in (2, 4):
        # RGBA or gray + alpha PNG/JPEG: the alpha channel carries no cell signal
        warnings.warn(
            f"{path.name}: alpha channel dropped ({'RGB' if arr.shape[0] == 4 else 'gray'} kept)",
            AlphaDroppedWarning,
            stacklevel=3,
        )
        arr = arr[: arr.shape[0] - 1]
    return arr


def read_image(path: str | Path, channels: Channels = None) -> np.ndarray:
    """Read an image as (C, H, W) in its stored dtype.

    ``channels``: ``None`` keeps every channel (RGBA PNGs lose alpha), ``"gray"`` averages the
    channels into one, a list of indices keeps those channels in that order.
    """
    path = Path(path)
    return image_to_chw(read_array(path), channels, path)


#: said once when a grey image stored with equal channels is read as one channel
GREY_AS_RGB = ("grey images stored as RGB (all channels equal) are read as one channel, so a "
               "one-channel model takes them and they train a one-channel model")  # fmt: skip


def collapse_equal_channels(image: np.ndarray) -> np.ndarray:
    """A (C, H, W) image whose channels are all equal (grey saved as RGB, as many microscopes
    and Fiji's "RGB Color" export do) as (1, H, W), with a note (once); others unchanged."""
    if image.shape[0] < 2 or any(not np.array_equal(image[0], c) for c in image[1:]):
        return image
    warnings.warn(GREY_AS_RGB, stacklevel=2)
    return image[:1]


def image_to_chw(
    arr: np.ndarray, channels: Channels = None, source: str | Path | None = None
) -> np.ndarray:
    """An image array as cganseg's functions take it: (C, H, W), from a 2-D, (H, W, C) or
    (C, H, W) array (channels are the short axis, at most 4), pixels checked, ``channels``
    chosen as :func:`read_image` does; ``source`` names it in errors (a file also decides
    whether a 2nd/4th channel is alpha)."""
    path = None if source is None else Path(source)
    arr = np.asarray(arr)
    if arr.size == 0:
        raise InputError(f"image has no pixels (shape {arr.shape})", path)
    arr = _to_chw(arr, path)
    if arr.dtype.kind not in "uif" and arr.dtype != bool:
        raise InputError(f"unsupported pixel type {arr.dtype}", path)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError("image contains NaN or infinite values", path)
    if channels is None:
        return arr
    if isinstance(channels, str):
        if channels != "gray":
            raise InputError(f"unknown channels option {channels!r} (use 'gray' or indices)")
        return arr.astype(np.float32).mean(axis=0, keepdims=True)
    idx = list(channels)
    bad = [i for i in idx if not 0 <= i < arr.shape[0]]
    if bad:
        raise InputError(
            f"image has {arr.shape[0]} channel(s); channel index {bad[0]} is out of range", path
        )
    return arr[idx]


@dataclass(frozen=True)
class PixelSize:
    """The physical size of one pixel (x, y) in ``unit`` (OME's unit symbols, e.g. ``µm``)."""

    x: float
    y: float
    unit: str = "µm"


#: the OME length units (``UnitsLength``) a microscope image's pixel size is given in
OME_UNITS = ("m", "dm", "cm", "mm", "µm", "nm", "pm", "Å", "in")


def usable_pixel_size(size: PixelSize | None) -> PixelSize | None:
    """``size`` when both sides are finite, positive numbers in an OME length unit
    (:data:`OME_UNITS`), else None: a pixel size of inf, NaN, 0, -1 or in "parsecs" is no
    calibration, and copying it into the files written would spread it."""
    if size is None or size.unit not in OME_UNITS:
        return None
    try:
        x, y = (checks.PIXEL_SIZE("pixel size", v) for v in (size.x, size.y))
    except checks.ValueProblem:
        return None
    return PixelSize(x, y, size.unit)


#: ImageJ's unit names -> OME's symbols
_UNITS = {"micron": "µm", "um": "µm", "\\u00B5m": "µm", "µm": "µm", "nm": "nm", "mm": "mm",
          "cm": "cm", "m": "m"}  # fmt: skip


def read_pixel_size(path: str | Path) -> PixelSize | None:
    """The physical pixel size a TIFF declares: OME-XML ``PhysicalSizeX/Y``, else ImageJ's
    ``unit`` with the resolution tags, else resolution tags in centimetres; None when it declares
    none (PNG/JPEG, or only the 72/96 dpi that image editors write, which is no calibration)."""
    path = Path(path)
    if path.suffix.lower() not in TIFF_EXTENSIONS:
        return None
    try:
        return usable_pixel_size(_declared_pixel_size(path))
    except Exception as exc:  # noqa: BLE001 - any flaw of the metadata (an XML entity bomb)
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        warnings.warn(f"{path}: its pixel size cannot be read ({reason}); written without one",
                      stacklevel=2)  # fmt: skip
        return None


def _declared_pixel_size(path: Path) -> PixelSize | None:
    try:
        with tifffile.TiffFile(path) as tif:
            if tif.is_ome and tif.ome_metadata:
                return _ome_pixel_size(tif.ome_metadata)
            page = tif.pages.first
            res = [page.tags.get(t) for t in ("XResolution", "YResolution")]
            if None in res or 0 in (res[0].value[0], res[1].value[0]):
                return None
            x, y = (r.value[1] / r.value[0] for r in res)
            if tif.is_imagej:
                unit = _UNITS.get(str((tif.imagej_metadata or {}).get("unit", "")))
                return PixelSize(x, y, unit) if unit else None
            if page.resolutionunit == tifffile.RESUNIT.CENTIMETER:
                return PixelSize(x * 1e4, y * 1e4)
    except (OSError, ValueError, KeyError, tifffile.TiffFileError):
        return None
    return None


def _ome_pixel_size(xml: str) -> PixelSize | None:
    image = tifffile.xml2dict(xml).get("OME", {}).get("Image", {})
    pixels = (image[0] if isinstance(image, list) else image).get("Pixels", {})
    if "PhysicalSizeX" not in pixels:
        return None
    x = float(pixels["PhysicalSizeX"])
    y = float(pixels.get("PhysicalSizeY", x))
    return PixelSize(x, y, str(pixels.get("PhysicalSizeXUnit", "µm")))


#: file types whose compression is lossy: label ids at cell edges come back changed
LOSSY_EXTENSIONS = (".jpg", ".jpeg")
#: label ids up to this (or the pixel count) are kept as they are; larger ones are renumbered
_KEPT_IDS = 2**20
#: more connected patches per distinct value than this: an intensity image, not labels
_PATCHES_PER_LABEL = 5


def _read_mask_array(path: Path) -> np.ndarray:
    """A mask file's array; indexed (palette) PNGs, as annotation tools save labels, come back
    as their indices, not as the palette's colours."""
    if path.suffix.lower() in LOSSY_EXTENSIONS:
        raise InputError(
            "masks must be stored lossless (PNG or TIFF): JPEG is lossy and changes label "
            "values around every cell, which invents cells",
            path,
        )
    arr = read_array(path)
    if path.suffix.lower() == ".png":
        with Image.open(path) as im:
            if im.mode == "P":
                return np.asarray(im)
    elif path.suffix.lower() in TIFF_EXTENSIONS:
        with tifffile.TiffFile(path) as tif:
            compression = tif.pages[0].compression if tif.pages else None
        if compression is not None and "JPEG" in getattr(compression, "name", ""):
            raise InputError(
                "mask is JPEG-compressed inside the TIFF; label values change around every cell "
                "(save it with lossless or no compression)",
                path,
            )
    return arr


def looks_like_labels(labels: np.ndarray) -> bool:
    """False for an intensity image: each of its values is scattered over many patches.

    In a label image each id is one cell, one connected patch (an annotation may split a few
    into two). In a microscopy image each grey level recurs in many separate patches. On the
    real data sets in ../shared/data, masks have at most 1.6 patches per id, images at least 60.
    """
    ids = np.count_nonzero(np.unique(labels))
    if ids == 0:
        return True
    patches = int(connected_components(labels, background=0, connectivity=1).max())
    return patches <= _PATCHES_PER_LABEL * ids


def read_labels(path: str | Path) -> np.ndarray:
    """Read an instance label mask as a 2-D int32 array. Ids are kept, unless one exceeds both
    the pixel count and 2^20 (hashes, 2^40): then all are renumbered 1..N in their order, so
    that per-id arrays stay small; the cells stay the same.

    Refused: lossy (JPEG) files, float or negative values, and images that are not labels at
    all (an intensity image given as ground truth would otherwise be scored, wrongly).
    """
    path = Path(path)
    return checked_labels(_read_mask_array(path), path)


def checked_labels(arr: np.ndarray, path: Path) -> np.ndarray:
    """A mask array as :func:`read_labels` returns it, checked the same way, whichever file
    format it came from (``path`` names the file in errors)."""
    arr = np.squeeze(arr) if arr.ndim > 2 else arr
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and (arr[..., :3] == arr[..., :1]).all():
        arr = arr[..., 0]  # a gray mask saved as RGB(A)
    if arr.ndim != 2:
        raise InputError(
            f"mask has shape {arr.shape}; expected a single-channel 2-D label image", path
        )
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        raise InputError(f"mask has float pixels ({arr.dtype}); save labels as integers", path)
    if arr.dtype.kind not in "ui":
        raise InputError(f"mask has unsupported pixel type {arr.dtype}", path)
    if arr.dtype.kind == "i" and arr.min() < 0:
        raise InputError(f"mask has negative labels (min {arr.min()})", path)
    values = np.unique(arr)
    if len(values) == 2 and values[0] == 0 and values[1] in BINARY_VALUES:
        instances = connected_components(arr > 0, connectivity=1).astype(np.int32)
        if values[1] != 1 or instances.max() > 1:
            warnings.warn(
                f"{path.name}: binary masks (0/1, 0/255) are split into instances by connected "
                "components, so touching cells merge into one; save instance label masks to keep "
                "them apart",
                BinaryMaskWarning,
                stacklevel=2,
            )
        return instances
    if not looks_like_labels(arr):
        raise InputError(
            "not a label image: each value is scattered over many separate patches, as in a "
            "microscopy image; give instance masks (0 = background, one id per cell)",
            path,
        )
    if values[-1] > max(arr.size, _KEPT_IDS):  # numbered 1..N in their order, so that no
        # per-id array (areas, bounding boxes) is sized by the largest id
        return (np.searchsorted(values, arr) + int(values[0] != 0)).astype(np.int32)
    return arr.astype(np.int32)


def write_labels(path: str | Path, labels: np.ndarray) -> None:
    """Write an instance label image as TIFF: uint16, or uint32 when ids exceed 65535."""
    labels = np.asarray(labels)
    dtype = np.uint16 if labels.max(initial=0) <= np.iinfo(np.uint16).max else np.uint32
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, labels.astype(dtype), compression="zlib")


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write a uint8/uint16 image (H, W) or (H, W, 3) as PNG."""
    _write_encoded(path, iio.imwrite("<bytes>", image, extension=".png"))


def _write_encoded(path: str | Path, data: bytes) -> None:
    """Write encoded image bytes atomically (encoding in memory first: a write error is then one
    OSError, not one more from the encoder's clean-up)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write an integer image (H, W) or (H, W, C) as TIFF (zlib) or PNG, by the file suffix."""
    path = Path(path)
    if path.suffix.lower() not in TIFF_EXTENSIONS:
        _write_encoded(path, iio.imwrite("<bytes>", image, extension=path.suffix))
        return
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, image, compression="zlib")
