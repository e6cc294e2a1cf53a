"""A run's data: its split into training, validation and test images, read and checked.

The split is made once (seeded; or read from ``split_file``) and saved in the run folder; every
image's content hash is recorded with it, so a resumed run, or a run resumed from a moved data
folder (``--data NEW_PLACE``), is checked file by file against the data it started with. Extra
(synthetic) pairs are read apart: they are never validated or tested on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from cganseg.data.dataset import (
    Sample,
    load_samples,
)
from cganseg.data.folders import Pair, find_pairs
from cganseg.data.io import file_sha256
from cganseg.data.rescale import median_diameter, to_diameter
from cganseg.data.splits import load_split, make_split
from cganseg.errors import InputError
from cganseg.options import SegTrainConfig, parse_channels
from cganseg.runtime.outputs import inside


@dataclass
class DataSplit:
    """The samples of one run, loaded and checked before anything is written."""

    split: dict[str, list[str]]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    #: name -> SHA-256 of its image and mask files: a resumed run checks it reads the same data
    hashes: dict[str, list[str]]


def _content_hashes(pairs: list[Pair], expected: dict[str, list[str]] | None) -> dict:
    """SHA-256 of every pair's files; InputError naming a file whose content differs from
    ``expected`` (the hashes a run was trained with)."""
    hashes = {p.name: [file_sha256(p.image), file_sha256(p.mask)] for p in pairs}
    for pair in pairs:
        if expected and pair.name in expected:
            for path, now, then in zip((pair.image, pair.mask), hashes[pair.name],
                                       expected[pair.name], strict=True):  # fmt: skip
                if now != then:
                    raise InputError(
                        "differs from the file this run was trained on (same name, other "
                        "content); resume with the run's own data",
                        path,
                    )
    return hashes


def load_data_split(
    cfg: SegTrainConfig,
    split: dict[str, list[str]] | None,
    progress: bool,
    expected_hashes: dict[str, list[str]] | None = None,
) -> DataSplit:
    """Find the pairs, make (or reuse) the split and load every sample of it.

    ``expected_hashes`` (on resume): the content hashes saved with the run; a file whose
    content changed under its name is refused.
    """
    pairs = find_pairs(cfg.data, cfg.layout, cfg.mask_suffix, cfg.image_suffix)
    if split is None and cfg.split_file:
        split = load_split(cfg.split_file)
    if split is None:
        split = make_split(
            [p.name for p in pairs],
            val_fraction=cfg.val_fraction,
            test_fraction=cfg.test_fraction,
            n_train=cfg.n_train,
            seed=cfg.seed,
        )
    by_name = {p.name: p for p in pairs}
    missing = [n for part in split.values() for n in part if n not in by_name]
    if missing:
        raise InputError(f"split names {missing[0]!r}, which is not in the data set", cfg.data)
    channels = parse_channels(cfg.channels)

    def load(part: str) -> list[Sample]:
        return load_samples(
            [by_name[n] for n in split[part]], channels, progress, f"loading {part}"
        )

    used = [by_name[n] for part in split.values() for n in part]
    hashes = _content_hashes(used, expected_hashes)
    data = DataSplit(split, load("train"), load("val"), load("test"), hashes)
    for part, samples in (("training", data.train), ("validation", data.val),
                          ("test", data.test)):  # fmt: skip
        if samples and not any(s.labels.any() for s in samples):
            raise InputError(
                f"no cell in any of the {len(samples)} {part} masks; a segmenter can neither "
                "learn from nor be scored on masks that are all background",
                cfg.data,
            )
    ref = data.train[0].image.shape[0]
    for s in data.val + data.test:
        if s.image.shape[0] != ref:
            raise InputError(
                f"{s.name} has {s.image.shape[0]} channel(s), training images have {ref}"
            )
    return data


def load_extra(cfg: SegTrainConfig, channels: int, progress: bool) -> list[Sample]:
    """The extra training pairs of ``cfg.extra`` (none without it), checked against the data."""
    if cfg.extra is None:
        return []
    if inside(cfg.extra, cfg.data) or inside(cfg.data, cfg.extra):
        raise InputError(
            f"extra pairs overlap the data set {cfg.data} (its validation and test images would "
            "be trained on); give a folder of other pairs",
            cfg.extra,
        )
    pairs = find_pairs(cfg.extra, "auto", cfg.mask_suffix, cfg.image_suffix)
    samples = load_samples(pairs, parse_channels(cfg.channels), progress, "loading extra")
    for s in samples:
        if s.image.shape[0] != channels:
            raise InputError(
                f"extra pair {s.name} has {s.image.shape[0]} channel(s), training images have "
                f"{channels}",
                cfg.extra,
            )
    return samples


def rescale_cells(data: DataSplit, extra: list[Sample], target: float
                  ) -> tuple[DataSplit, list[Sample], float]:  # fmt: skip
    """Training (and extra) images rescaled so their cells are ``target`` px across, and the
    training set's own median diameter, kept for validation, testing and ``segment`` (which
    see images as they are)."""
    measured = median_diameter(data.train)
    if measured <= 0:
        raise InputError("no cell in the training masks to measure a diameter on")
    train = [to_diameter(s, target, measured) for s in data.train]
    return dataclasses.replace(data, train=train), [to_diameter(s, target, measured)
                                                    for s in extra], measured  # fmt: skip
