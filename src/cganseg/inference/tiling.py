"""Tiled, memory-bounded prediction of class probabilities for images of any size.

The segmenter Seg of cGAN-Seg (Zargari et al., iScience 2024) is a fully convolutional UNet-like
network trained on crops; whole microscopy images can be larger than fits in memory at once and
need not be multiples of the network's ``size_multiple``. This module pads the image, cuts
overlapping tiles, runs them batch by batch and blends the softmax outputs with a smooth weight
window so that tile borders (where the network lacks context) leave no seams. The same tiling
(:func:`blend_tiles`) serves the generator, which turns large masks into images.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from cganseg.data.io import available_memory
from cganseg.errors import InputError


def check_memory(path: str | Path, height: int, width: int, bytes_per_pixel: int,
                 fixed: int = 0) -> None:  # fmt: skip
    """Refuse, naming the file, an image whose host arrays (``bytes_per_pixel`` of the image
    and ``fixed`` bytes more) would not fit in available memory.

    The network sees bounded tiles, but the blended outputs and the result can be as large as
    the image; failing here beats the system's out-of-memory killer halfway through a folder.
    """
    need, have = height * width * bytes_per_pixel + fixed, available_memory()
    if have is not None and need > have:
        raise InputError(
            f"{height}x{width} needs about {need / 2**30:.1f} GB of memory here, "
            f"{have / 2**30:.1f} GB are available; cut it into smaller images",
            path,
        )


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def _pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Pad bottom/right to a multiple; reflect where the axis is long enough, else zeros.

    Zero is the middle of the normalised intensity range, so constant padding is neutral.
    """
    padded = image
    for axis in (1, 2):
        size = padded.shape[axis]
        extra = _round_up(max(size, 1), multiple) - size
        if extra == 0:
            continue
        widths = [(0, 0)] * 3
        widths[axis] = (0, extra)
        mode = "reflect" if extra < size else "constant"
        padded = np.pad(padded, widths, mode=mode)
    return padded


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile start offsets covering ``length``; the last tile is flush with the end."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _window_1d(length: int, overlap: int) -> np.ndarray:
    """Raised-cosine ramps of ``overlap`` pixels at both ends, 1 in the middle.

    Every value is strictly positive, so pixels seen by a single tile (image edges) keep their
    prediction after normalisation by the summed weights.
    """
    window = np.ones(length, dtype=np.float32)
    ramp_len = min(overlap, length // 2)
    if ramp_len > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp_len) + 0.5) / ramp_len)
        window[:ramp_len] = ramp
        window[length - ramp_len :] = ramp[::-1]
    return window


def _batches(items: list[tuple[int, int]], size: int) -> Iterator[list[tuple[int, int]]]:
    for first in range(0, len(items), size):
        yield items[first : first + size]


def blend_tiles(
    fn: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    *,
    multiple: int = 1,
    tile_size: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
) -> np.ndarray:
    """Apply ``fn`` to overlapping tiles of ``image`` (C, H, W) and blend the outputs.

    ``fn`` maps a batch of tiles (B, C, h, w) to outputs (B, K, h, w); the result is
    (K, H, W) float32. The image is padded to a multiple of ``multiple`` (the network's size
    multiple); ``tile_size`` is rounded down to one. Overlaps are blended with a raised-cosine
    window. At most ``batch_size`` tiles go to ``fn`` at a time; outputs accumulate on the host
    in arrays the size of the (padded) image.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or min(image.shape) == 0:
        raise InputError(f"image must be a non-empty (C, H, W) array, got shape {image.shape}")
    tile = (tile_size // multiple) * multiple
    if tile < multiple:
        raise InputError(f"tile_size {tile_size} is below the model's size multiple {multiple}")
    if not 0 <= overlap < tile:
        raise InputError(f"overlap must be in [0, {tile}) for tile_size {tile}, got {overlap}")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")

    _, height, width = image.shape
    padded = _pad_to_multiple(image, multiple)
    padded_h, padded_w = padded.shape[1:]
    tile_h, tile_w = min(tile, padded_h), min(tile, padded_w)
    weight = np.outer(_window_1d(tile_h, overlap), _window_1d(tile_w, overlap))
    origins = [(y, x) for y in _starts(padded_h, tile_h, overlap)
               for x in _starts(padded_w, tile_w, overlap)]
    accumulated: np.ndarray | None = None
    weight_sum = np.zeros((padded_h, padded_w), dtype=np.float32)
    for batch in _batches(origins, batch_size):
        tiles = np.stack([padded[:, y : y + tile_h, x : x + tile_w] for y, x in batch])
        outputs = fn(tiles)
        if accumulated is None:
            accumulated = np.zeros((outputs.shape[1], padded_h, padded_w), np.float32)
        for (y, x), tile_out in zip(batch, outputs, strict=True):
            accumulated[:, y : y + tile_h, x : x + tile_w] += tile_out * weight
            weight_sum[y : y + tile_h, x : x + tile_w] += weight
    assert accumulated is not None  # at least one tile always exists
    result = accumulated[:, :height, :width] / weight_sum[:height, :width]
    return np.ascontiguousarray(result, dtype=np.float32)


def predict_outputs(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    activation: Callable[[torch.Tensor], torch.Tensor] = lambda raw: raw.softmax(dim=1),
    tile_size: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    amp: bool = False,
) -> np.ndarray:
    """Softmax probabilities (n_classes, H, W) float32 for a normalised image (C, H, W), or
    another ``activation`` of the raw outputs (an instance mode's
    :meth:`~cganseg.instances.base.InstanceMode.blend`: a flow output blends its flows and
    cell-probability logits linearly as they are).

    ``model`` must already live on ``device``. Tiling as :func:`blend_tiles`; an image no larger
    than a tile is predicted as one padded tile. A model in train mode is switched to eval mode
    for the call and restored afterwards.
    """
    device = torch.device(device)
    use_amp = amp and device.type == "cuda"
    autocast = torch.autocast("cuda") if use_amp else contextlib.nullcontext()

    def outputs(tiles: np.ndarray) -> np.ndarray:
        raw = model(torch.from_numpy(tiles).to(device)).float()
        return activation(raw).cpu().numpy()

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast:
            return blend_tiles(
                outputs,
                image,
                multiple=int(getattr(model, "size_multiple", 1)),
                tile_size=tile_size,
                overlap=overlap,
                batch_size=batch_size,
            )
    finally:
        model.train(was_training)
