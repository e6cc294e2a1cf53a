"""Segmenting images with a trained segmenter: checkpoint -> model -> instance label files.

Glue between the checkpoint format, the tiled predictor (:mod:`.tiling`) and the instance mode
(:mod:`cganseg.instances`), which turns the output into cells. A checkpoint of ``train-seg`` and
one of ``train`` both hold the segmenter under the same keys, so either works here.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cganseg import checks
from cganseg.checkpoint import SEGMENTER, load_network, resolve_checkpoint
from cganseg.data.io import collapse_equal_channels, read_image, read_pixel_size
from cganseg.data.label_formats import label_file_names, write_label_files
from cganseg.data.normalize import normalize_percentile
from cganseg.data.rescale import cell_diameter, resize_image, scaled_shape
from cganseg.errors import InputError
from cganseg.inference.regions import segment_in_regions
from cganseg.inference.tiling import check_memory, predict_outputs
from cganseg.instances.postprocessing import PostProcessing
from cganseg.models.registry import segmenter_from_config
from cganseg.reports.overlays import save_overlay
from cganseg.runtime.device import resolve_device
from cganseg.runtime.interrupt import check
from cganseg.runtime.progress import progress_bar

#: the diameters ``"auto"`` tries, as multiples of the training images' (steps of sqrt 2)
AUTO_LADDER = tuple(2.0 ** (k / 2) for k in range(-2, 7))
#: the side (pixels, as the network sees them) of the central region each try is judged on
AUTO_REGION = 512
#: the side (pixels, as the network sees them) of the regions a larger image is segmented in
#: one after another (:mod:`cganseg.inference.regions`), and the least context around each
REGION, REGION_MARGIN = 2048, 96


@dataclass(frozen=True)
class Segmenter:
    """A trained segmenter and what it needs to run: the network, the image channels it takes,
    its post-processing (:class:`~cganseg.instances.postprocessing.PostProcessing`) and the
    device. Frozen, and every call takes its own ``diameter``: one Segmenter serves many calls
    and threads at once (the notebook API's cache, the napari plugin's workers).

    Cell-size rescaling (:mod:`cganseg.data.rescale`): a network trained with cells rescaled to
    ``post.cell_diameter`` pixels sees every image rescaled by ``cell_diameter / diameter``, where
    ``diameter`` is the cells' diameter in the images to segment: a number, ``"auto"`` (the
    size at which the network is surest of its cells, then measured: :meth:`auto_diameter`) or
    None (``default_diameter``: the checkpoint's, else ``post.train_diameter``, the training
    images' own). Outputs are resized back, so labels come out at the input's size.
    ``post.cell_diameter`` None: no rescaling.
    """

    model: torch.nn.Module
    channels: Any
    post: PostProcessing
    device: torch.device
    #: what a call without a diameter uses: a shipped model's is ``"auto"``, since its training
    #: median mixes several sets and says nothing of the user's images (issue 29)
    default_diameter: float | str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", checks.checked(checks.channels, "channels",
                                                            self.channels))  # fmt: skip

    def factor(self, diameter: float | str | None = None) -> float:
        """How much images are enlarged for the network, for cells ``diameter`` px across
        (None or ``"auto"``: the training images' own); InputError when that leaves
        :data:`~cganseg.checks.SCALE_RANGE` (or the diameter is none)."""
        diameter = checks.checked(checks.diameter, "diameter", diameter)
        if diameter is None:
            diameter = self.default_diameter
        cell = self.post.cell_diameter
        if diameter is not None and not cell:
            raise InputError("diameter needs a model trained with --cell-diameter (this one sees "
                             "images as they are)")  # fmt: skip
        if not isinstance(diameter, float):
            diameter = self.post.train_diameter
        if not (cell and diameter):
            return 1.0
        try:
            return checks.scale_factor(cell / diameter)
        except checks.ValueProblem as exc:
            raise InputError(
                f"cells {diameter:g} px across, for a model that sees cells {cell:g} px "
                f"across, {exc}; check the diameter"
            ) from None

    def predict(
        self,
        image: np.ndarray,
        tile_size: int = 512,
        batch_size: int = 4,
        diameter: float | str | None = None,
        shape: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """The blended output (K, H, W) for a normalised (C, H, W) image (the instance mode's
        :meth:`~cganseg.instances.base.InstanceMode.blend` of the network's output) at the
        scale of cells ``diameter`` px across (see :meth:`factor`), resized to ``shape`` (None:
        the image's; :meth:`label_shape`: where cells are found)."""
        scaled = scaled_shape(image.shape, self.factor(diameter))
        output = predict_outputs(
            self.model,
            resize_image(image, scaled),
            activation=self.post.mode.blend,
            tile_size=tile_size,
            overlap=min(64, tile_size // 4),
            batch_size=batch_size,
            device=self.device,
            amp=self.device.type == "cuda",
        )
        return resize_image(output, shape or image.shape[-2:])

    def label_shape(self, shape: tuple[int, ...], diameter: float | str | None = None
                    ) -> tuple[int, int]:  # fmt: skip
        """The (H, W) at which the output of an image of ``shape`` becomes cells: the network's
        when it shrinks the image (cells there are ``post.cell_diameter`` px across, the size
        the network was trained at), else the image's own. Why: following the flows is most of
        segment's time on CPU, and it grows with the pixels followed: cells 60 px across seen at
        30 px are found in a quarter of the pixels (as Cellpose's ``resample=False``), then
        fitted to the image's size (:meth:`PostProcessing.labels_at`). Measured on the same
        outputs (``benchmarks/follow_scale.py``): usiigaci's 1024 px images 2.69 -> 0.61 s each,
        F1@0.5 0.863 -> 0.860; murphy's nuclei, 85 px seen at 17: 1.06 -> 0.21 s, F1@0.5 0.760
        -> 0.860 (the flows followed at the size the network learnt them)."""
        scaled = scaled_shape(shape, self.factor(diameter))
        return scaled if scaled[0] * scaled[1] < shape[-2] * shape[-1] else (shape[-2], shape[-1])

    def segment(
        self,
        image: np.ndarray,
        tile_size: int = 512,
        batch_size: int = 4,
        diameter: float | str | None = None,
    ) -> np.ndarray:
        """Instance labels (H, W) for a normalised (C, H, W) image whose cells are ``diameter``
        px across (a number, ``"auto"`` or None: see the class docstring)."""
        return self.segment_measured(image, tile_size, batch_size, diameter)[0]

    def segment_measured(
        self,
        image: np.ndarray,
        tile_size: int = 512,
        batch_size: int = 4,
        diameter: float | str | None = None,
    ) -> tuple[np.ndarray, float | str | None]:
        """:meth:`segment`'s labels and the diameter they were segmented at (``"auto"``: the
        one it measured). Why: a caller that segments the same cells again (``suggest``'s
        flipped and turned views) reuses the measurement instead of searching the scales
        once per view, which cost ~4x the network passes and mixed the scale search's own
        variation into the views' disagreement."""
        if diameter is None:
            diameter = self.default_diameter
        if diameter == "auto" and self.post.cell_diameter and self.post.train_diameter:
            tried = self.auto_diameter(image, tile_size, batch_size)
            region = _central(image, self.region_core(tried))  # the image, unless it is large
            labels = self.segment_at(region, tile_size, batch_size, tried)
            found = self._bounded(cell_diameter(labels))
            if found > 0 and abs(found / tried - 1) > 0.05:
                diameter = found
            elif region.shape == image.shape:
                return labels, tried
            else:
                diameter = tried
        return self.segment_at(image, tile_size, batch_size, diameter), diameter

    def segment_at(self, image: np.ndarray, tile_size: int, batch_size: int,
                   diameter: float | str | None) -> np.ndarray:  # fmt: skip
        """Instance labels at one scale (``diameter`` not ``"auto"`` here, or no rescaling): in
        one piece, or region by region when the image is larger than :data:`REGION` px a side
        as the network sees it (:mod:`cganseg.inference.regions`: memory bounded, cells across
        region borders whole)."""
        def whole(part: np.ndarray) -> np.ndarray:
            shape = self.label_shape(part.shape, diameter)
            output = self.predict(part, tile_size, batch_size, diameter, shape)
            return self.post.labels_at(output, part.shape[-2:])

        core = self.region_core(diameter)
        if max(image.shape[-2:]) <= core:
            return whole(image)
        return segment_in_regions(whole, image, core, self.region_margin(diameter))

    def region_core(self, diameter: float | str | None = None) -> int:
        """The side, in the image's pixels, of the regions a large image is segmented in."""
        return max(1, int(REGION / self.factor(diameter)))

    def region_margin(self, diameter: float | str | None = None) -> int:
        """The context around each region's core, in the image's pixels: three cell diameters
        as the network sees cells (at least :data:`REGION_MARGIN` px there), so that a cell
        whose centroid is in the core lies whole, and well inside, its region."""
        cell = 3 * (self.post.cell_diameter or 0)
        return int(np.ceil(max(REGION_MARGIN, cell) / self.factor(diameter)))

    def auto_diameter(self, image: np.ndarray, tile_size: int = 512, batch_size: int = 4
                      ) -> float:  # fmt: skip
        """The diameter ``"auto"`` first segments at, before it measures the cells found there.

        Each multiple of the training diameter in :data:`AUTO_LADDER` that rescaling allows is
        predicted on the image's central region (at most :data:`AUTO_REGION` px a side as the
        network sees it, so each try costs at most about one tile), and the one where the network
        is surest of its cells wins: the highest mean cell probability over the pixels it calls
        cell. Why not one pass at the training diameter, as before: on cells 4x larger than the
        training ones the network cuts each into fragments of its own size, which measure as
        small cells, and the second pass kept them (shipped ``nuclei`` on murphy's Hoechst nuclei
        of ~85 px: F1@0.5 0.003; at the diameter chosen here ~0.6-0.97 per image)."""
        train = float(self.post.train_diameter)
        best, surest = train, -1.0
        for step in AUTO_LADDER:
            try:
                factor = self.factor(train * step)
            except InputError:  # beyond what rescaling allows
                continue
            region = _central(image, int(np.ceil(AUTO_REGION / factor)))
            prob = self.post.mode.cell_probability(
                self.predict(region, tile_size, batch_size, train * step))  # fmt: skip
            cells = prob > 0.5
            sure = float(prob[cells].mean()) if cells.any() else -1.0
            if sure > surest:
                best, surest = train * step, sure
        return best

    def fixed_diameter(self, diameter: float | str | None = None) -> float | None:
        """The cell size a call with ``diameter`` assumes without measuring: a number given,
        else the default's (a user's run: its training images' median); None for ``"auto"``
        (it measures) and for a model without cell-size rescaling."""
        if diameter is None:
            diameter = self.default_diameter
        if not self.post.cell_diameter or diameter == "auto":
            return None
        return float(diameter) if diameter is not None else self.post.train_diameter

    def _bounded(self, found: float) -> float:
        """A measured diameter (``diameter="auto"``) brought into the range the rescaling
        allows, with a warning when it had to be (a few specks measured as cells)."""
        cell = self.post.cell_diameter
        if found <= 0 or not cell:
            return found
        low, high = checks.SCALE_RANGE
        bounded = min(max(found, cell / high), cell / low)
        if bounded != found:
            warnings.warn(
                f"diameter auto measured cells {found:.3g} px across; used {bounded:.3g} px, "
                "the limit of cell-size rescaling (give --diameter if that is wrong)",
                stacklevel=3,
            )
        return bounded


def _central(image: np.ndarray, side: int) -> np.ndarray:
    """The central ``side`` x ``side`` part of a (C, H, W) image (all of a smaller axis)."""
    top, left = max(0, (image.shape[-2] - side) // 2), max(0, (image.shape[-1] - side) // 2)
    return image[:, top : top + side, left : left + side]


def load_segmenter(
    path: str | Path,
    device: str = "auto",
    min_size: int | None = None,
    cellprob: float | None = None,
    flow: float | None = None,
) -> Segmenter:
    """Rebuild the segmenter of a checkpoint file or run folder; ``min_size``, ``cellprob``,
    ``flow``: the user's post-processing values, None keeps the stored ones (thresholds tuned in
    training, or Cellpose's defaults).

    A stored setting that fails its rule makes the file "not a usable cganseg model" (one line
    naming the file and the setting), whatever wrote it."""
    model, payload = load_network(path, SEGMENTER, segmenter_from_config)
    source = resolve_checkpoint(path)
    post = PostProcessing.from_checkpoint(payload, model.config["n_classes"], source)
    channels = checks.checked(checks.channels, "channels", payload.get("channels"), source,
                              f"{checks.NOT_USABLE}: ")  # fmt: skip
    given = {"min_size": min_size, "cellprob_threshold": cellprob, "flow_threshold": flow}
    post = post.replace(**{k: v for k, v in given.items() if v is not None})
    default = checks.checked(checks.diameter, "default_diameter", payload.get("default_diameter"),
                             source, f"{checks.NOT_USABLE}: ")  # fmt: skip
    dev = resolve_device(device)
    return Segmenter(model.to(dev), channels, post, dev, default)


def prepare_image(segmenter: Segmenter, image: np.ndarray, source: str | Path,
                  diameter: float | str | None = None) -> np.ndarray:  # fmt: skip
    """A (C, H, W) image with the model's channels as training saw it: percentile-normalised,
    its channel count checked, and refused in one line when segmenting it (its cells
    ``diameter`` px across) would not fit in memory (``source`` names it)."""
    expected = segmenter.model.config["in_channels"]
    if image.shape[0] != expected and expected == 1:
        image = collapse_equal_channels(image)
    image = normalize_percentile(image)
    if image.shape[0] != expected:
        hint = ("; its channels differ, so it is no grey image stored as RGB: give a model "
                "trained on such images, or train with --channels gray") if expected == 1 else ""
        raise InputError(
            f"image has {image.shape[0]} channel(s) but the model expects {expected}{hint}",
            source,
        )
    # per pixel of one region (the whole image, unless it is large): image + padded copy,
    # blended and normalised probabilities, weights (the network's arrays at the rescaled
    # size), labels, watershed; and per pixel of the image: it and its labels
    n_out = segmenter.model.config["n_classes"]
    factor = segmenter.factor(diameter)
    per_pixel = (8 * image.shape[0] + 8 * n_out) * max(1.0, factor) ** 2 + 40
    height, width = image.shape[1:]
    side = segmenter.region_core(diameter) + 2 * segmenter.region_margin(diameter)
    region = min(height, side) * min(width, side)
    check_memory(source, height, width, 4 * image.shape[0] + 4, int(per_pixel * region))
    return image


def check_output_names(inputs: Sequence[Path], formats: Sequence[str], overlays: bool) -> None:
    """Refuse inputs whose outputs would replace each other: compared by full output name, not
    by stem (``a.png``'s ``a.ome.tif`` is ``a.ome.tif``'s ``a.ome.tif`` under ``--save-format
    tif ome-tiff``)."""
    made_by: dict[str, Path] = {}
    for path in inputs:
        names = label_file_names(path, formats)
        if overlays:
            names.append(f"overlays/{path.stem}.png")
        for name in names:
            other = made_by.setdefault(name, path)
            if other != path:
                raise InputError(f"{other.name} and {path.name} would both write {name}; rename "
                                 "one (outputs would overwrite each other)")  # fmt: skip


def segment_files(
    segmenter: Segmenter,
    inputs: Sequence[Path],
    out_dir: str | Path,
    *,
    overlays: bool = False,
    tile_size: int = 512,
    batch_size: int = 4,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
    formats: Sequence[str] = ("tif",),
    diameter: float | str | None = None,
) -> list[Path]:
    """Write each input's labels into ``out_dir`` in ``formats`` (``NAME.tif``, ``NAME_seg.npy``,
    ``NAME_rois.zip``, ``NAME.ome.tif``: :mod:`cganseg.data.label_formats`), optionally
    ``OUT/overlays/NAME.png``; returns the first format's files.

    Images are read, segmented and written one at a time, so memory does not grow with the
    number of files. ``shard = (rank, world)``: this process takes every ``world``-th input
    from ``rank`` on (several processes, e.g. one per GPU under torchrun, split a folder).
    ``diameter``: of the cells in the images (:class:`Segmenter`), checked before the first.
    """
    out_dir = Path(out_dir)
    if not formats:
        raise InputError("no output format chosen")
    check_output_names(inputs, formats, overlays)
    segmenter.factor(diameter)  # a diameter far from the model's: refused before any image
    written = []
    assumed, found = segmenter.fixed_diameter(diameter), []
    mine = list(inputs)[shard[0] :: shard[1]]
    for path in progress_bar(mine, desc="segmenting", unit="img", disable=not progress):
        image = prepare_image(segmenter, read_image(path, segmenter.channels), path, diameter)
        labels = segmenter.segment(image, tile_size, batch_size, diameter)
        if assumed and labels.any():
            found.append(cell_diameter(labels))
        size = read_pixel_size(path) if "ome-tiff" in formats else None
        files = write_label_files(out_dir, path, labels, formats, size)
        if overlays:
            save_overlay(out_dir / "overlays" / f"{path.stem}.png", image, labels)
        written.append(files[0])
        check(f"stopped after {len(written)} of {len(mine)} images; their labels are complete")
    if assumed and found:
        warn_if_sizes_differ(assumed, found)
    return written


#: how far the cells found may measure from the size segment assumed before it says so
SIZE_TOLERANCE = 0.25


def warn_if_sizes_differ(assumed: float, found: Sequence[float]) -> None:
    """One warning when the cells found measure (median over the images) more than
    :data:`SIZE_TOLERANCE` away from the size the model rescaled the images for (issue 33: a
    user's cells of ~40 px segmented as the training images' 68 px scored 0.671 F1@0.5, 0.757
    at ``--diameter auto``)."""
    measured = float(np.median(found))
    if abs(measured / assumed - 1) > SIZE_TOLERANCE:
        warnings.warn(
            f"the cells found measure {measured:.0f} px across (median of {len(found)} "
            f"image(s)), but were segmented as {assumed:.0f} px cells; --diameter auto (or "
            f"--diameter {measured:.0f}) segments them at their own size",
            stacklevel=3,
        )
