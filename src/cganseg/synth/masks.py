"""Synthetic high-density and colony instance masks from real cell shapes (paper Fig. 5, Table 2).

The cGAN-Seg paper draws synthetic masks of dense scenes and colonies, which are slow to annotate
by hand, turns them into images with the trained generator, and adds the pairs to a small real
training set. Here a mask is drawn by placing *real* cell shapes, taken from the instances of
the user's own masks, each with a random rotation, flip and scale, without overlap (touching is
allowed, as in real dense scenes):

- ``flat``: cell positions uniform over the image;
- ``colony``: cells packed inside a few random blobs (unions of discs) that together cover about
  ``density / 0.55`` of the image, 0.55 being roughly how densely random placement fills a region;
- ``mixed``: half of the cell area in colonies, the rest flat.

``density`` (0 to 1) is the fraction of the image area to cover with cells; placement stops when
it is reached or when no free spot is found after many tries, so very high densities saturate at
what random packing allows. Every cell keeps its own label and is one 4-connected piece; cells at
the image edge are cut by it, as in real images. The reference code's version of this step lost
its rescaling and its last output; here every mask is kept and scaling is one of the draws.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.measure import label as connected_components
from skimage.measure import regionprops
from skimage.transform import rotate

from cganseg import checks
from cganseg.errors import InputError

LAYOUTS = ("flat", "colony", "mixed")
#: area fraction that random sequential placement of cell shapes reaches inside a region
PACKING = 0.55
#: positions tried for one transformed shape before a new shape is drawn
TRIES_PER_SHAPE = 12


@dataclass(frozen=True)
class MaskSpec:
    """What to draw: size, layout, target density and the scale range of the cell shapes."""

    height: int
    width: int
    layout: str = "mixed"
    density: float = 0.4
    scale: tuple[float, float] = (0.8, 1.25)

    def check(self) -> None:
        """Each value by its rule (:mod:`cganseg.checks`): a scale of 1e9 or a side of 10^5
        would make work without bound from a one-line command."""
        if self.layout not in LAYOUTS:
            raise InputError(f"unknown layout {self.layout!r}; choose one of {', '.join(LAYOUTS)}")
        checks.checked(checks.DENSITY, "density", self.density)
        for side in (self.height, self.width):
            checks.checked(checks.MASK_SIDE, "mask size", side)
        low, high = (checks.checked(checks.SHAPE_SCALE, "scale", v) for v in self.scale)
        if not low <= high:
            raise InputError(f"scale range must satisfy min <= max, got {low:g},{high:g}")


def _keep_largest(shape: np.ndarray) -> np.ndarray:
    """Only the largest 4-connected piece of a boolean shape (same array size)."""
    pieces = connected_components(shape, connectivity=1)
    if pieces.max() <= 1:
        return pieces == 1
    sizes = np.bincount(pieces.ravel())
    sizes[0] = 0
    return pieces == sizes.argmax()


def _largest_piece(shape: np.ndarray) -> np.ndarray:
    """The largest 4-connected piece of a boolean shape, cropped to its bounding box."""
    shape = _keep_largest(shape)
    rows, cols = np.flatnonzero(shape.any(axis=1)), np.flatnonzero(shape.any(axis=0))
    if rows.size == 0:
        return shape[:0, :0]
    return shape[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def cell_shapes(
    masks: Iterable[np.ndarray], min_area: int = 10, max_shapes: int = 5000
) -> list[np.ndarray]:
    """Boolean crops of the cells in ``masks``; cells cut by the image edge are left out.

    Edge cells are partial, so they are used only when a mask set has no other cells.
    """
    inner: list[np.ndarray] = []
    edge: list[np.ndarray] = []
    for labels in masks:
        h, w = labels.shape
        for region in regionprops(np.asarray(labels)):
            if region.area < min_area:
                continue
            y0, x0, y1, x1 = region.bbox
            shape = _largest_piece(region.image)
            (edge if y0 == 0 or x0 == 0 or y1 == h or x1 == w else inner).append(shape)
        if len(inner) >= max_shapes:
            break
    shapes = inner or edge
    if not shapes:
        raise InputError(f"the real masks hold no cell of at least {min_area} pixels")
    return shapes[:max_shapes]


def _transformed(shape: np.ndarray, rng: np.random.Generator, scale: tuple[float, float]):
    """``shape`` flipped, scaled and rotated at random (smooth edges, one piece)."""
    if rng.random() < 0.5:
        shape = shape[:, ::-1]
    if rng.random() < 0.5:
        shape = shape[::-1]
    factor = rng.uniform(*scale)
    smooth = ndimage.zoom(np.pad(shape, 1).astype(np.float32), factor, order=1)
    smooth = rotate(smooth, rng.uniform(0.0, 360.0), resize=True, order=1)
    return _largest_piece(smooth > 0.5)


def _colony_region(spec: MaskSpec, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Random blobs (each a union of overlapping discs) covering about ``fraction`` of the image."""
    h, w = spec.height, spec.width
    region = np.zeros((h, w), bool)
    yy, xx = np.mgrid[0:h, 0:w]
    n_colonies = int(rng.integers(1, 4))
    target = fraction * h * w
    for _ in range(n_colonies * 8):
        if region.sum() >= target:
            break
        cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
        radius = np.sqrt(target / n_colonies / np.pi)
        for _ in range(int(rng.integers(1, 5))):  # lobes of one colony
            r = radius * rng.uniform(0.5, 0.9)
            oy, ox = rng.normal(0.0, radius * 0.4, size=2)
            region |= (yy - cy - oy) ** 2 + (xx - cx - ox) ** 2 <= r * r
    return region


def _place(
    canvas: np.ndarray, shape: np.ndarray, cy: int, cx: int, label: int, min_area: int
) -> int:
    """Paint ``shape`` centred at (cy, cx) if it overlaps no cell; returns the pixels painted."""
    sh, sw = shape.shape
    y0, x0 = cy - sh // 2, cx - sw // 2
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + sh, canvas.shape[0]), min(x0 + sw, canvas.shape[1])
    if ye <= ys or xe <= xs:
        return 0
    piece = shape[ys - y0 : ye - y0, xs - x0 : xe - x0]
    if (ys, xs, ye, xe) != (y0, x0, y0 + sh, x0 + sw):  # cut by the edge: keep one piece
        piece = _keep_largest(piece)
    area = int(piece.sum())
    window = canvas[ys:ye, xs:xe]
    if area < min_area or window[piece].any():
        return 0
    window[piece] = label
    return area


def synthetic_mask(
    shapes: Sequence[np.ndarray], spec: MaskSpec, rng: np.random.Generator, min_area: int = 10
) -> np.ndarray:
    """One synthetic instance mask (H, W) int32, labels 1..N, drawn as the module describes."""
    spec.check()
    h, w = spec.height, spec.width
    canvas = np.zeros((h, w), np.int32)
    target = spec.density * h * w
    colony_share = {"flat": 0.0, "colony": 1.0, "mixed": 0.5}[spec.layout]
    mean_area = float(np.mean([s.sum() for s in shapes])) * float(np.mean(spec.scale)) ** 2
    budgets = [("colony", colony_share * target), ("flat", (1.0 - colony_share) * target)]
    covered, label = 0, 0
    for where, budget in budgets:
        if budget <= 0:
            continue
        if where == "colony":
            region = _colony_region(spec, min(0.95, budget / (h * w) / PACKING), rng)
            spots = np.argwhere(region) if region.any() else None  # too small: place flat
        else:
            spots = None
        goal = covered + budget
        max_shapes = int(4 * budget / max(mean_area, 1.0)) + 20
        for _ in range(max_shapes):
            if covered >= goal:
                break
            shape = _transformed(shapes[int(rng.integers(len(shapes)))], rng, spec.scale)
            if shape.size == 0:
                continue
            for _ in range(TRIES_PER_SHAPE):
                if spots is None:
                    cy, cx = int(rng.integers(h)), int(rng.integers(w))
                else:
                    cy, cx = spots[int(rng.integers(len(spots)))]
                area = _place(canvas, shape, int(cy), int(cx), label + 1, min_area)
                if area:
                    label += 1
                    covered += area
                    break
    return canvas
