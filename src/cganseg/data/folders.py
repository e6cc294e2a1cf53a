"""Finding image/mask pairs in a user's data-set folder.

Two layouts are understood:

* ``folders`` (the layout of the bundled data): ``DIR/images/NAME.ext`` + ``DIR/masks/NAME.ext``,
  paired by file stem, any supported extension on either side.
* ``cellpose`` (Cellpose's flat folders): ``DIR/NAME.tif`` + ``DIR/NAME_masks.tif``; the mask
  suffix (default ``_masks``) and an optional image suffix (e.g. ``_img``) are configurable.
  Cellpose's own ``*_flows.tif`` outputs are ignored.

A mask may also be a correction saved by another tool (issue 30): a Cellpose GUI
``NAME_seg.npy`` or an ImageJ ROI set ``NAME_rois.zip`` (:mod:`cganseg.data.corrections`), in
``masks/`` or beside ``NAME.ext``; napari and Fiji label images are TIFFs like any other. Two
masks for one image (say a stale ``NAME_masks.tif`` beside the corrected ``NAME_seg.npy``) are
refused, naming both, rather than one chosen silently.

``auto`` picks ``folders`` when ``images/`` and ``masks/`` exist, else ``cellpose`` when any file
carries the mask suffix or is a correction. An image without a mask (or the reverse) is an
error, not a silent skip: a forgotten annotation should not shrink a 200-image training set
unnoticed.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

from cganseg.data.corrections import correction_stem
from cganseg.data.io import IMAGE_EXTENSIONS, list_image_files
from cganseg.errors import InputError

LAYOUTS = ("auto", "folders", "cellpose")


@dataclass(frozen=True)
class Pair:
    """One annotated example: its name (the image stem) and its two files."""

    name: str
    image: Path
    mask: Path


def stem_key(stem: str) -> str:
    """The name a file pairs by: its stem in Unicode NFC, so ``café`` typed on Linux (NFC) and
    ``café`` saved by macOS (NFD) are one name."""
    return unicodedata.normalize("NFC", stem)


def _corrections(folder: Path) -> list[Path]:
    """The correction files (``NAME_seg.npy``, ``NAME_rois.zip``) directly inside ``folder``."""
    return sorted(p for p in folder.iterdir()
                  if correction_stem(p) is not None and not p.name.startswith("."))  # fmt: skip


def _by_stem(files: list[Path], strip: str = "") -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        own = correction_stem(f)
        stem = stem_key(own if own is not None else
                        f.stem[: len(f.stem) - len(strip)] if strip else f.stem)  # fmt: skip
        if stem in out:
            raise InputError(
                f"two files share the name {stem!r}: {out[stem].name} and {f.name}; keep one",
                f.parent
            )
        out[stem] = f
    return out


def _pair_up(images: dict[str, Path], masks: dict[str, Path]) -> list[Pair]:
    for name, path in images.items():
        if name not in masks:
            raise InputError("image has no mask (expected a mask file with the same name)", path)
    for name, path in masks.items():
        if name not in images:
            raise InputError("mask has no image (expected an image file with the same name)", path)
    return [Pair(n, images[n], masks[n]) for n in sorted(images)]


def find_pairs(
    root: str | Path, layout: str = "auto", mask_suffix: str = "_masks", image_suffix: str = ""
) -> list[Pair]:
    """List the image/mask pairs of a data-set folder, sorted by name."""
    root = Path(root)
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r} (use one of {', '.join(LAYOUTS)})")
    if not root.is_dir():
        raise InputError("data folder not found", root)
    if layout == "auto":
        if (root / "images").is_dir() and (root / "masks").is_dir():
            layout = "folders"
        elif any(p.stem.endswith(mask_suffix) for p in list_image_files(root)) or _corrections(
            root
        ):
            layout = "cellpose"
        else:
            raise InputError(
                "unknown layout: expected DIR/images/NAME.ext + DIR/masks/NAME.ext, "
                f"or DIR/NAME.ext + DIR/NAME{mask_suffix}.ext",
                root,
            )
    if layout == "folders":
        masks = list_image_files(root / "masks") + _corrections(root / "masks")
        pairs = _pair_up(_by_stem(list_image_files(root / "images")), _by_stem(masks))
    else:
        files = [p for p in list_image_files(root) if not p.stem.endswith("_flows")]
        masks = [p for p in files if p.stem.endswith(mask_suffix)]
        images = [
            p for p in files if not p.stem.endswith(mask_suffix) and p.stem.endswith(image_suffix)
        ]
        pairs = _pair_up(_by_stem(images, image_suffix),
                         _by_stem(masks + _corrections(root), mask_suffix))  # fmt: skip
    if not pairs:
        raise InputError("no image/mask pairs found", root)
    return pairs


def mask_files(path: str | Path, mask_suffix: str = "_masks") -> list[Path]:
    """Label images of ``path``: a file; a data-set folder's ``masks/``; the ``*_masks`` files
    (``mask_suffix``) of a Cellpose-style folder; else every image in the folder."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError("mask folder not found", path)
    folder = path / "masks" if (path / "masks").is_dir() else path
    files = list_image_files(folder)
    named = [f for f in files if mask_suffix and f.stem.endswith(mask_suffix)]
    files = named or files
    if not files:
        raise InputError("no mask images found", folder)
    return files


def collect_inputs(path: str | Path, mask_suffix: str = "_masks") -> list[Path]:
    """An image file, or every image in a folder (or in its ``images/`` subfolder).

    In a folder, files whose stem ends with ``mask_suffix`` (Cellpose-style ``NAME_masks``) or
    ``_flows`` are masks and Cellpose outputs, not images, and are skipped.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise InputError(f"unsupported file type {path.suffix!r}", path)
        return [path]
    if not path.exists():
        raise InputError("input not found", path)
    folder = path / "images" if (path / "images").is_dir() else path
    skip = tuple(s for s in (mask_suffix, "_flows") if s)
    files = [f for f in list_image_files(folder) if not f.stem.endswith(skip)]
    if not files:
        raise InputError("no images found", folder)
    return files
