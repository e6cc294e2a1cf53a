"""Loading pairs into memory, keyed random crops and the resumable seeded sample stream."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.helpers import synthetic_pair, write_image

from cganseg.data.augment import ConventionalAugment
from cganseg.data.dataset import CropDataset, Sample, SeededSampler, load_samples
from cganseg.data.folders import find_pairs
from cganseg.data.targets import labels_to_classes
from cganseg.errors import InputError


def test_load_samples_normalises_and_keeps_labels(tiny_dataset: Path) -> None:
    samples = load_samples(find_pairs(tiny_dataset), progress=False)
    assert [s.name for s in samples] == [f"img{i:02d}" for i in range(6)]
    for s in samples:
        assert s.image.dtype == np.float32 and s.image.shape == (1, 40, 52)
        assert -1.0 <= s.image.min() < -0.9 and 0.9 < s.image.max() <= 1.0
        assert s.labels.shape == (40, 52) and s.labels.max() >= 1


@pytest.mark.parametrize(
    ("dtype", "ext", "channels"),
    [(np.uint16, ".tif", 3), (np.float32, ".tif", 1), (np.uint8, ".jpg", 3)],
)
def test_load_samples_formats(
    tmp_path: Path, dataset_factory, dtype: type, ext: str, channels: int
) -> None:
    root = dataset_factory(
        tmp_path, n=2, image_ext=ext, mask_ext=".tif", image_dtype=dtype, channels=channels
    )
    samples = load_samples(find_pairs(root), progress=False)
    assert samples[0].image.shape == (channels, 40, 52)
    gray = load_samples(find_pairs(root), channels="gray", progress=False)
    assert gray[0].image.shape == (1, 40, 52)


def test_load_samples_size_mismatch_names_the_image(tiny_dataset: Path) -> None:
    write_image(tiny_dataset / "masks/img03.png", synthetic_pair((40, 50))[1])
    with pytest.raises(InputError, match="40x52 but its mask img03.png is 40x50") as exc:
        load_samples(find_pairs(tiny_dataset), progress=False)
    assert exc.value.path == tiny_dataset / "images/img03.png"


def test_load_samples_mixed_channel_counts(tiny_dataset: Path) -> None:
    write_image(tiny_dataset / "images/img02.png", synthetic_pair(channels=3)[0])
    with pytest.raises(InputError, match="3 channel") as exc:
        load_samples(find_pairs(tiny_dataset), progress=False)
    assert exc.value.path == tiny_dataset / "images/img02.png"


def _sample(h: int, w: int, channels: int = 1) -> Sample:
    rng = np.random.default_rng(h * w)
    labels = np.zeros((h, w), np.int32)
    labels[1 : h // 2, 1 : w // 2] = 1
    labels[h // 2 + 1 :, w // 2 + 1 :] = 5
    image = rng.uniform(-1, 1, (channels, h, w)).astype(np.float32)
    return Sample("s", image, labels)


def _classes(n_classes: int):
    """The training targets of the class modes: int64 classes of the crop's mask."""
    return lambda labels: torch.from_numpy(labels_to_classes(labels, n_classes))


@pytest.mark.parametrize("n_classes", [2, 3])
def test_crop_dataset_shape_and_targets(n_classes: int) -> None:
    ds = CropDataset([_sample(40, 52, channels=2)], (16, 24), _classes(n_classes))
    img, target = ds[(0, 123)]
    assert img.shape == (2, 16, 24) and img.dtype == torch.float32
    assert target.shape == (16, 24) and target.dtype == torch.int64
    assert set(target.unique().tolist()) <= set(range(n_classes))


def test_crop_dataset_pads_small_images() -> None:
    sample = _sample(11, 13)
    ds = CropDataset([sample], (32, 32), _classes(2))
    img, target = ds[(0, 0)]
    assert img.shape == (1, 32, 32) and target.shape == (32, 32)
    torch.testing.assert_close(img[:, :11, :13], torch.from_numpy(sample.image))
    assert (target > 0).any()


def test_crop_is_a_window_of_the_sample() -> None:
    sample = _sample(40, 52)
    img, _ = CropDataset([sample], (16, 16), _classes(2))[(0, 9)]
    windows = np.lib.stride_tricks.sliding_window_view(sample.image[0], (16, 16))
    assert (windows == img[0].numpy()).all(axis=(2, 3)).any()


def test_crop_key_is_deterministic_with_augmentation() -> None:
    ds = CropDataset([_sample(40, 52), _sample(30, 60)], (16, 16), _classes(3),
                     ConventionalAugment())  # fmt: skip
    a_img, a_t = ds[(1, 77)]
    b_img, b_t = ds[(1, 77)]
    torch.testing.assert_close(a_img, b_img)
    torch.testing.assert_close(a_t, b_t)
    others = [ds[(1, s)][0] for s in range(78, 84)]
    assert any(not torch.equal(a_img, o) for o in others)


def _take(sampler: SeededSampler, n: int) -> list[tuple[int, int]]:
    return list(itertools.islice(iter(sampler), n))


def test_sampler_start_resumes_the_same_stream() -> None:
    full = _take(SeededSampler(7, seed=5), 30)
    for k in (1, 7, 13):
        assert _take(SeededSampler(7, seed=5, start=k), 30 - k) == full[k:]


def test_sampler_covers_every_index_once_per_epoch() -> None:
    stream = _take(SeededSampler(7, seed=5), 21)
    for epoch in range(3):
        assert sorted(i for i, _ in stream[epoch * 7 : epoch * 7 + 7]) == list(range(7))
    assert [i for i, _ in stream[:7]] != [i for i, _ in stream[7:14]]  # reshuffled
    assert len({s for _, s in stream}) == 21  # every draw has its own sample seed
    assert _take(SeededSampler(7, seed=6), 21) != stream
