"""``cganseg generate``: annotated image/mask pairs from masks with a trained generator.

For each mask, ``per_mask`` images in different styles (seeds), written as pairs any segmenter
can train on: ``OUT/images/NAME_sK.tif`` + ``OUT/masks/NAME_sK.tif`` (our layout, what
``train-seg --extra`` reads), or with ``cellpose_names`` ``OUT/NAME_sK_img.tif`` +
``OUT/NAME_sK_masks.tif`` (Cellpose's ``--img_filter _img``). Images are 16-bit TIFFs (or 8-bit
PNGs) of the generator's [-1, 1] output; masks are the input's instance labels, as uint16 (uint32
past 65535 cells). The seed of image K of mask N is derived from (seed, N, K), so outputs are
reproducible and an interrupted run resumes (see :mod:`.manifest`). The input is never written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cganseg.checkpoint import GENERATOR, resolve_checkpoint
from cganseg.data.folders import mask_files
from cganseg.data.io import file_sha256, read_labels, write_image, write_labels
from cganseg.errors import InputError
from cganseg.inference.generate import load_generator
from cganseg.inference.tiling import check_memory
from cganseg.runtime.interrupt import check
from cganseg.runtime.outputs import inside
from cganseg.runtime.progress import progress_bar
from cganseg.synth.manifest import claim_folder

MANIFEST = "generate.json"
IMAGE_FORMATS = {"tif": (".tif", np.uint16), "png": (".png", np.uint8)}


def to_integer_image(image: np.ndarray, dtype: type) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W) or (H, W, C) of ``dtype`` spanning its full range."""
    top = np.iinfo(dtype).max
    scaled = np.round((np.clip(image, -1.0, 1.0) + 1.0) / 2.0 * top).astype(dtype)
    return scaled[0] if scaled.shape[0] == 1 else np.moveaxis(scaled, 0, -1)


def output_paths(out: Path, name: str, ext: str, cellpose_names: bool) -> tuple[Path, Path]:
    """(image, mask) paths of the pair called ``name``."""
    if cellpose_names:
        return out / f"{name}_img{ext}", out / f"{name}_masks.tif"
    return out / "images" / f"{name}{ext}", out / "masks" / f"{name}.tif"


class Renderer(Protocol):
    """What makes an image of a mask: the generator (:class:`cganseg.inference.generate.Generator`)
    or the simple renderer (:class:`cganseg.synth.simple_render.SimpleRenderer`)."""

    def generate(self, labels: np.ndarray, seed: int, tile_size: int = 1024) -> np.ndarray: ...


def generate_pairs(
    checkpoint: str | Path,
    masks: str | Path,
    out: str | Path,
    *,
    device: str = "auto",
    **options: Any,
) -> list[tuple[Path, Path]]:
    """Write ``per_mask`` pairs per mask of ``masks`` with the generator of ``checkpoint`` (the
    options of :func:`write_pairs`); returns every (image, mask) path."""
    ckpt = resolve_checkpoint(checkpoint, GENERATOR)
    generator = load_generator(ckpt, device)
    return write_pairs(generator, masks, out, {"checkpoint_sha256": file_sha256(ckpt)},
                       bytes_per_pixel=4 * generator.n_classes + 16, **options)  # fmt: skip


def write_pairs(
    renderer: Renderer,
    masks: str | Path,
    out: str | Path,
    identity: dict[str, Any],
    *,
    per_mask: int = 1,
    seed: int = 0,
    cellpose_names: bool = False,
    image_format: str = "tif",
    tile_size: int = 1024,
    mask_suffix: str = "_masks",
    bytes_per_pixel: int = 16,
    progress: bool = True,
) -> list[tuple[Path, Path]]:
    """Write ``per_mask`` pairs per mask of ``masks``, each image ``renderer``'s; ``identity``
    names the renderer in the manifest (another renderer into the same folder is refused);
    ``bytes_per_pixel``: its working memory, checked per mask. Returns every (image, mask)
    path."""
    if per_mask < 1:
        raise InputError(f"--per-mask must be at least 1, got {per_mask}")
    if image_format not in IMAGE_FORMATS:
        raise InputError(f"image format must be one of {', '.join(IMAGE_FORMATS)}")
    files = mask_files(masks, mask_suffix)
    out = Path(out)
    folder = files[0].parent
    if inside(out, folder) or inside(folder, out):
        raise InputError("output folder overlaps the mask folder; choose another", out)
    stems = [f.stem.removesuffix(mask_suffix) if mask_suffix else f.stem for f in files]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise InputError(f"two masks share the name {dup!r}; outputs would overwrite each other")
    ext, dtype = IMAGE_FORMATS[image_format]
    settings = {
        **identity,
        "masks": str(Path(masks).resolve()),
        "seed": seed,
        "cellpose_names": cellpose_names,
        "image_format": image_format,
    }
    for f in progress_bar(files,
                          desc="checking masks", unit="mask", disable=not progress, leave=False):
        read_labels(f)  # a bad mask is named now, before anything is written
    claim_folder(out, MANIFEST, settings)
    jobs = [
        (i, k, f, output_paths(out, f"{stem}_s{k}", ext, cellpose_names))
        for i, (f, stem) in enumerate(zip(files, stems, strict=True))
        for k in range(per_mask)
    ]
    todo = [job for job in jobs if not all(p.exists() for p in job[3])]
    labels, current = None, None
    for i, k, f, (image_path, mask_path) in progress_bar(
        todo, desc="generate", unit="img", disable=not progress
    ):
        if current != f:
            labels, current = read_labels(f), f
            # the renderer's working memory, the integer image written
            check_memory(f, *labels.shape, bytes_per_pixel)
        sample_seed = int(np.random.SeedSequence([seed, i, k]).generate_state(1)[0])
        image = renderer.generate(labels, sample_seed, tile_size=tile_size)
        write_labels(mask_path, labels)
        write_image(image_path, to_integer_image(image, dtype))
        check("stopped; the pairs written are complete, the same command finishes the rest")
    return [paths for *_, paths in jobs]
