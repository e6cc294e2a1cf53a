"""``cganseg synth-masks``: a folder of synthetic instance masks drawn from real cell shapes.

Each output ``synth_NNNNN.tif`` is drawn by :func:`cganseg.synth.masks.synthetic_mask` with its
own random generator, seeded by (seed, N), so the set is reproducible, any one mask can be made
again alone, and an interrupted run finishes where it stopped (see :mod:`.manifest`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path

import numpy as np

from cganseg import checks
from cganseg.data.folders import mask_files, stem_key
from cganseg.data.io import read_labels, write_labels
from cganseg.errors import InputError
from cganseg.runtime.interrupt import check
from cganseg.runtime.outputs import inside
from cganseg.runtime.progress import progress_bar
from cganseg.synth.manifest import claim_folder
from cganseg.synth.masks import MaskSpec, cell_shapes, synthetic_mask

MANIFEST = "synth_masks.json"


def _read_all(files: list[Path]) -> Iterator[np.ndarray]:
    for f in files:
        yield read_labels(f)


def write_synthetic_masks(
    real_masks: str | Path,
    out: str | Path,
    n: int,
    *,
    layout: str = "mixed",
    density: float = 0.4,
    size: tuple[int, int] | None = None,
    scale: tuple[float, float] = (0.8, 1.25),
    seed: int = 0,
    min_area: int = 10,
    names: Collection[str] | None = None,
    mask_suffix: str = "_masks",
    progress: bool = True,
) -> list[Path]:
    """Write ``n`` synthetic masks into ``out``; returns their paths (made now or before).

    ``size`` defaults to the size of the first real mask. ``names``: take shapes only from the
    masks of these names (file stems, ``mask_suffix`` stripped), e.g. a run's training pairs, so
    that no test cell shapes reach the synthetic training data.
    """
    files = mask_files(real_masks, mask_suffix)
    if names is not None:
        wanted = {stem_key(n) for n in names}
        files = [f for f in files if stem_key(f.stem.removesuffix(mask_suffix)) in wanted]
        if not files:
            raise InputError("none of the split's names is a mask in this folder", real_masks)
    out = Path(out)
    if inside(out, files[0].parent):
        raise InputError("output folder is inside the real mask folder; choose another", out)
    if n < 1:
        raise InputError(f"--n must be at least 1, got {n}")
    checks.checked(checks.SEED, "seed", seed)
    checks.checked(checks.MIN_SIZE, "min_area", min_area)
    if size is None:
        size = read_labels(files[0]).shape
    spec = MaskSpec(int(size[0]), int(size[1]), layout, float(density), tuple(scale))
    spec.check()
    settings = {
        "real_masks": str(Path(real_masks).resolve()),
        "layout": layout,
        "density": spec.density,
        "size": [spec.height, spec.width],
        "scale": list(spec.scale),
        "seed": seed,
        "min_area": min_area,
        "names": None if names is None else sorted(names),
    }
    shapes = cell_shapes(_read_all(files), min_area=min_area)
    claim_folder(out, MANIFEST, settings)
    paths = [out / f"synth_{i:05d}.tif" for i in range(n)]
    todo = [(i, p) for i, p in enumerate(paths) if not p.exists()]
    for i, path in progress_bar(todo, desc="synth-masks", unit="mask", disable=not progress):
        rng = np.random.default_rng([seed, i])
        write_labels(path, synthetic_mask(shapes, spec, rng, min_area))
        check("stopped; the masks written are complete, the same command finishes the rest")
    return paths
