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
from tqdm.auto import tqdm

from cganseg import checks
from cganseg import instances as modes
from cganseg.checkpoint import NOT_USABLE, SEGMENTER, load_network, resolve_checkpoint
from cganseg.data.flows import CELLPROB_THRESHOLD, FLOW_THRESHOLD
from cganseg.data.io import read_image, read_pixel_size
from cganseg.data.label_formats import label_file_names, write_label_files
from cganseg.data.normalize import normalize_percentile
from cganseg.data.rescale import cell_diameter, resize_image, scaled_shape
from cganseg.errors import InputError
from cganseg.inference.tiling import check_memory, predict_outputs
from cganseg.instances import InstanceMode
from cganseg.models.registry import segmenter_from_config
from cganseg.reports.overlays import save_overlay
from cganseg.runtime.device import resolve_device
from cganseg.runtime.interrupt import check


def _instances(name: str, value: Any) -> str | None:
    if value is not None and value not in modes.MODES:
        raise checks.ValueProblem(f"{name} must be one of {', '.join(modes.MODES)}, got {value!r}")
    return value


#: the post-processing settings of a :class:`Segmenter` and the rule each must pass
SETTINGS: dict[str, Any] = {
    "channels": checks.channels,
    "min_size": checks.MIN_SIZE,
    "instances": _instances,
    "cellprob_threshold": checks.CELLPROB_THRESHOLD,
    "flow_threshold": checks.FLOW_THRESHOLD,
    "cell_diameter": checks.CELL_DIAMETER,
    "train_diameter": checks.TRAIN_DIAMETER,
    "diameter": checks.diameter,
}
#: where each setting is stored in a checkpoint, and its value when the entry is absent (older
#: checkpoints); ``diameter`` is the user's, never stored
_STORED = {"channels": None, "min_size": 15, "instances": None,
           "cellprob_threshold": CELLPROB_THRESHOLD, "flow_threshold": FLOW_THRESHOLD,
           "cell_diameter": None, "train_diameter": None}  # fmt: skip


@dataclass
class Segmenter:
    """A trained segmenter and what it needs to run: channels and post-processing settings.

    ``instances``: how cells come out of the output (a name of :mod:`cganseg.instances`; None:
    by the model's class count, as checkpoints before issue 16); :attr:`mode` is its object. The
    two thresholds serve the modes that have them (:attr:`InstanceMode.threshold_grid`).

    Cell-size rescaling (:mod:`cganseg.data.rescale`): a network trained with cells rescaled to
    ``cell_diameter`` pixels sees every image rescaled by ``cell_diameter / diameter``, where
    ``diameter`` is the cells' diameter in the images to segment: a number, ``"auto"`` (segment
    once at ``train_diameter``, measure the cells found, segment again at their size) or None
    (``train_diameter``, the training images' own). Outputs are resized back, so labels come out
    at the input's size. ``cell_diameter`` None: no rescaling.
    """

    model: torch.nn.Module
    channels: Any
    min_size: int
    device: torch.device
    instances: str | None = None
    cellprob_threshold: float = CELLPROB_THRESHOLD
    flow_threshold: float = FLOW_THRESHOLD
    cell_diameter: float | None = None
    train_diameter: float | None = None
    diameter: float | str | None = None

    def __post_init__(self) -> None:
        """Every setting checked by its rule (:data:`SETTINGS`), whichever door it came through
        (a checkpoint, the command line, the notebook API, the napari widget)."""
        for name, rule in SETTINGS.items():
            setattr(self, name, checks.checked(rule, name, getattr(self, name)))
        if self.instances is None:
            self.instances = modes.stored_name(self.model.config["n_classes"])
        self.mode: InstanceMode = modes.mode(self.instances)
        self.factor()  # a diameter far from the model's is refused now, before any image

    def factor(self, diameter: float | None = None) -> float:
        """How much images are enlarged for the network, for cells ``diameter`` px across
        (None: :attr:`diameter` when a number, else ``train_diameter``); InputError when that
        leaves :data:`~cganseg.checks.SCALE_RANGE`."""
        if diameter is None:
            diameter = self.diameter if isinstance(self.diameter, int | float) else None
        diameter = diameter or self.train_diameter
        if not (self.cell_diameter and diameter):
            return 1.0
        try:
            return checks.scale_factor(self.cell_diameter / diameter)
        except checks.ValueProblem as exc:
            raise InputError(
                f"cells {diameter:g} px across, for a model that sees cells "
                f"{self.cell_diameter:g} px across, {exc}; check the diameter"
            ) from None

    def predict(
        self,
        image: np.ndarray,
        tile_size: int = 512,
        batch_size: int = 4,
        diameter: float | None = None,
    ) -> np.ndarray:
        """The blended output (K, H, W) for a normalised (C, H, W) image: class probabilities,
        or flows and cell-probability logits in the flow mode; ``diameter``: of the image's cells
        (None: :attr:`diameter` when a number, else ``train_diameter``)."""
        shape = scaled_shape(image.shape, self.factor(diameter))
        output = predict_outputs(
            self.model,
            resize_image(image, shape),
            activation=self.mode.blend,
            tile_size=tile_size,
            overlap=min(64, tile_size // 4),
            batch_size=batch_size,
            device=self.device,
            amp=self.device.type == "cuda",
        )
        return resize_image(output, image.shape[-2:])

    def to_instances(self, output: np.ndarray) -> np.ndarray:
        """Instance labels (H, W) from an output of :meth:`predict`."""
        thresholds = {name: getattr(self, name) for name in self.mode.threshold_grid}
        return self.mode.to_labels(output, self.min_size, **thresholds)

    def segment(self, image: np.ndarray, tile_size: int = 512, batch_size: int = 4) -> np.ndarray:
        """Instance labels (H, W) for a normalised (C, H, W) image."""
        labels = self.to_instances(self.predict(image, tile_size, batch_size))
        if self.diameter == "auto" and self.cell_diameter:
            found = self._bounded(cell_diameter(labels))
            if found > 0 and abs(found / (self.train_diameter or found) - 1) > 0.05:
                labels = self.to_instances(self.predict(image, tile_size, batch_size, found))
        return labels

    def _bounded(self, found: float) -> float:
        """A measured diameter (``diameter="auto"``) brought into the range the rescaling
        allows, with a warning when it had to be (a few specks measured as cells)."""
        if found <= 0 or not self.cell_diameter:
            return found
        low, high = checks.SCALE_RANGE
        bounded = min(max(found, self.cell_diameter / high), self.cell_diameter / low)
        if bounded != found:
            warnings.warn(
                f"diameter auto measured cells {found:.3g} px across; used {bounded:.3g} px, "
                "the limit of cell-size rescaling (give --diameter if that is wrong)",
                stacklevel=3,
            )
        return bounded


def load_segmenter(
    path: str | Path,
    device: str = "auto",
    min_size: int | None = None,
    diameter: float | str | None = None,
    cellprob: float | None = None,
    flow: float | None = None,
) -> Segmenter:
    """Rebuild the segmenter of a checkpoint file or run folder; ``diameter``: of the cells in
    the images it will segment (see :class:`Segmenter`); ``cellprob``, ``flow``: the flow
    thresholds, None keeps those tuned in training (or Cellpose's defaults).

    A stored setting that fails its rule makes the file "not a usable cganseg model" (one line
    naming the file and the setting), whatever wrote it."""
    model, payload = load_network(path, SEGMENTER, segmenter_from_config)
    source = resolve_checkpoint(path)
    stored = {name: checks.checked(SETTINGS[name], name, payload.get(name, default), source,
                                   f"{NOT_USABLE}: ")
              for name, default in _STORED.items()}  # fmt: skip
    given = {"min_size": min_size, "cellprob_threshold": cellprob, "flow_threshold": flow}
    stored.update({k: v for k, v in given.items() if v is not None})
    dev = resolve_device(device)
    return Segmenter(model.to(dev), device=dev, diameter=diameter, **stored)


def prepare_image(segmenter: Segmenter, image: np.ndarray, source: str | Path) -> np.ndarray:
    """A (C, H, W) image with the model's channels as training saw it: percentile-normalised,
    its channel count checked, and refused in one line when segmenting it would not fit in
    memory (``source`` names it)."""
    image = normalize_percentile(image)
    expected = segmenter.model.config["in_channels"]
    if image.shape[0] != expected:
        raise InputError(
            f"image has {image.shape[0]} channel(s) but the model expects {expected}", source
        )
    # image + padded copy, blended and normalised probabilities, weights, labels, watershed
    # (the network's arrays at the rescaled size)
    n_out = segmenter.model.config["n_classes"]
    per_pixel = (8 * image.shape[0] + 8 * n_out) * max(1.0, segmenter.factor()) ** 2
    check_memory(source, *image.shape[1:], int(per_pixel) + 40)
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
) -> list[Path]:
    """Write each input's labels into ``out_dir`` in ``formats`` (``NAME.tif``, ``NAME_seg.npy``,
    ``NAME_rois.zip``, ``NAME.ome.tif``: :mod:`cganseg.data.label_formats`), optionally
    ``OUT/overlays/NAME.png``; returns the first format's files.

    Images are read, segmented and written one at a time, so memory does not grow with the
    number of files. ``shard = (rank, world)``: this process takes every ``world``-th input
    from ``rank`` on (several processes, e.g. one per GPU under torchrun, split a folder).
    """
    out_dir = Path(out_dir)
    if not formats:
        raise InputError("no output format chosen")
    check_output_names(inputs, formats, overlays)
    written = []
    mine = list(inputs)[shard[0] :: shard[1]]
    for path in tqdm(mine, desc="segmenting", unit="img", disable=not progress):
        image = prepare_image(segmenter, read_image(path, segmenter.channels), path)
        labels = segmenter.segment(image, tile_size=tile_size, batch_size=batch_size)
        size = read_pixel_size(path) if "ome-tiff" in formats else None
        files = write_label_files(out_dir, path, labels, formats, size)
        if overlays:
            save_overlay(out_dir / "overlays" / f"{path.stem}.png", image, labels)
        written.append(files[0])
        check(f"stopped after {len(written)} of {len(mine)} images; their labels are complete")
    return written
