"""Loading a data set into memory and serving random training crops to PyTorch.

The paper's data sets are small (hundreds of pairs), so every pair is read, checked and normalised
once, up front: a bad file stops the run before anything is written, and training never waits on
the disk.

Randomness is keyed, not global: :class:`SeededSampler` yields ``(index, sample_seed)`` pairs that
depend only on the run seed and the sample's position in the stream. Crops and augmentation draw
from ``numpy.random.default_rng(sample_seed)``. So results do not depend on the number of DataLoader
workers, and a run resumed at step ``s`` sees exactly the batches it would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from cganseg.data.augment import ConventionalAugment
from cganseg.data.corrections import read_mask
from cganseg.data.folders import Pair
from cganseg.data.io import Channels, collapse_equal_channels, read_image
from cganseg.data.normalize import normalize_percentile
from cganseg.errors import InputError
from cganseg.runtime.progress import progress_bar


@dataclass
class Sample:
    """One loaded pair: normalised image (C, H, W) float32 and instance labels (H, W)."""

    name: str
    image: np.ndarray
    labels: np.ndarray


def load_samples(
    pairs: Sequence[Pair], channels: Channels = None, progress: bool = True, desc: str = "loading"
) -> list[Sample]:
    """Read, check and normalise pairs; all images must share one channel count."""
    samples: list[Sample] = []
    for pair in progress_bar(pairs, desc=desc, unit="img", disable=not progress, leave=False):
        image = read_image(pair.image, channels)
        if channels is None:
            image = collapse_equal_channels(image)
        labels = read_mask(pair.mask, image.shape[1:])
        if image.shape[1:] != labels.shape:
            raise InputError(
                f"image is {image.shape[1]}x{image.shape[2]} but its mask {pair.mask.name} is "
                f"{labels.shape[0]}x{labels.shape[1]}",
                pair.image,
            )
        if samples and image.shape[0] != samples[0].image.shape[0]:
            raise InputError(
                f"image has {image.shape[0]} channel(s) but {samples[0].name} has "
                f"{samples[0].image.shape[0]}; choose them with --channels (gray or 0,1,2)",
                pair.image,
            )
        samples.append(Sample(pair.name, normalize_percentile(image), labels))
    return samples


def pad_to_at_least(image: np.ndarray, labels: np.ndarray, size: tuple[int, int]):
    """Reflect-pad an image and its labels at the bottom/right up to ``size`` (no-op if larger)."""
    ph, pw = max(0, size[0] - labels.shape[0]), max(0, size[1] - labels.shape[1])
    if ph == 0 and pw == 0:
        return image, labels
    return (
        np.pad(image, ((0, 0), (0, ph), (0, pw)), mode="reflect"),
        np.pad(labels, ((0, ph), (0, pw)), mode="reflect"),
    )


def make_image_targets(samples: Sequence[Sample], crop: tuple[int, int],
                       targets: Callable[[np.ndarray], torch.Tensor], progress: bool = True
                       ) -> list[np.ndarray]:  # fmt: skip
    """``targets`` of each sample's whole mask (padded as its crops are), made once per run in
    the main process: what :class:`CropDataset` moves with each crop instead of making them per
    crop (flows; issue 32: Cellpose's masks_to_flows per crop, and its numba compile in every
    loader worker, were a large share of a CPU step)."""
    return [targets(pad_to_at_least(s.image, s.labels, crop)[1]).numpy()
            for s in progress_bar(samples, desc="training targets", unit="img",
                                  disable=not progress, leave=False)]  # fmt: skip


class CropDataset(Dataset):
    """Random crops of loaded samples with conventional augmentation and their training
    targets: ``targets(labels)`` of the augmented crop's mask (an instance mode's classes,
    :meth:`cganseg.instances.base.InstanceMode.targets`), so they fit the augmented mask; or,
    where ``image_targets`` are given (:func:`make_image_targets`: flows), the same crop of the
    whole image's targets moved by the same augmentation (``vector``: the (y, x) channels of
    their vector field), except for the cells the crop cuts, whose targets are made again on
    their visible part (:meth:`_remake_cut`). So moved flows differ from the crop's own only by
    the zoom's nearest-neighbour resampling."""

    def __init__(
        self,
        samples: Sequence[Sample],
        crop: tuple[int, int],
        targets: Callable[[np.ndarray], torch.Tensor],
        augment: ConventionalAugment | None = None,
        image_targets: Sequence[np.ndarray] | None = None,
        vector: tuple[int, int] | None = None,
    ) -> None:
        self.samples = list(samples)
        self.crop = crop
        self.targets = targets
        self.augment = augment
        self.image_targets = image_targets
        self.vector = vector

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key
        rng = np.random.default_rng(seed)
        sample = self.samples[index]
        image, labels = pad_to_at_least(sample.image, sample.labels, self.crop)
        ch, cw = self.crop
        y = int(rng.integers(0, labels.shape[0] - ch + 1))
        x = int(rng.integers(0, labels.shape[1] - cw + 1))
        img = torch.from_numpy(np.ascontiguousarray(image[:, y : y + ch, x : x + cw]))
        mask = torch.from_numpy(labels[y : y + ch, x : x + cw].astype(np.int64))
        steps = [] if self.augment is None else self.augment.draw(rng, (ch, cw))
        if steps:
            img, mask = self.augment.apply(img, mask, steps)
        if self.image_targets is None:
            return img, self.targets(mask.numpy())
        field = torch.from_numpy(np.ascontiguousarray(
            self.image_targets[index][:, y : y + ch, x : x + cw]))  # fmt: skip
        if steps:
            field = self.augment.move_field(field, steps, self.vector)
        return img, self._remake_cut(field, mask.numpy())

    def _remake_cut(self, field: torch.Tensor, mask: np.ndarray) -> torch.Tensor:
        """``field`` with the targets of the cells on the crop's edge made on the crop's mask.

        Whole-image flows of a cell the crop cuts point to its centre outside the crop, as in
        Cellpose's training; but a user's cells cut by the *image's* border are annotated as
        their visible part, which the network then learns to lose: on murphy's Hoechst nuclei
        (3 images, fine-tuned from ``nuclei``, one draw) moved flows found 22 of the 62 test
        nuclei on the image border, flows made per crop 38, and the same 202-204 of the 218
        inside. Remaking the edge's cells costs about what flows per crop cost at the CPU
        recipe's scale (benchmarks/flow_targets.py), less with large cells."""
        edge = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
        cut = np.unique(edge[edge > 0])
        if cut.size == 0:
            return field
        inside = np.isin(mask, cut)
        own = self.targets(np.where(inside, mask, 0))
        return torch.where(torch.from_numpy(inside), own.to(field.dtype), field)


class SeededSampler(Sampler):
    """Endless stream of ``(index, sample_seed)``: epoch-wise permutations keyed by the seed.

    ``start`` skips the first samples of the stream, so resuming at step ``s`` with batch size
    ``b`` uses ``start = s * b``. ``stream`` keys an independent stream for the same seed (the
    synthetic pairs of :class:`MixedSampler`); None keeps the plain stream.
    """

    def __init__(self, n: int, seed: int, start: int = 0, stream: int | None = None) -> None:
        self.n, self.seed, self.start = n, seed, start
        self.key = [seed] if stream is None else [seed, stream]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        i = self.start
        while True:
            epoch, pos = divmod(i, self.n)
            perm = np.random.default_rng([*self.key, epoch]).permutation(self.n)
            state = np.random.SeedSequence([*self.key, epoch, pos]).generate_state(1)[0]
            yield int(perm[pos]), int(state)
            i += 1


def extra_count(batch: int, batch_size: int, fraction: float) -> int:
    """Extra (synthetic) samples in batch number ``batch`` (from 0) of a mixed stream.

    ``floor((j + 1) f B) - floor(j f B)``: every batch mixes the two sources as evenly as whole
    samples allow, the share over many batches is exactly ``f``, and it depends only on ``j``,
    so a resumed run continues the same mix.
    """
    return math.floor((batch + 1) * fraction * batch_size) - math.floor(
        batch * fraction * batch_size
    )


class MixedSampler(Sampler):
    """Batches of real samples (indices ``0..n_real-1``) and extra ones (``n_real..``) mixed.

    Each batch of ``batch_size`` keys holds :func:`extra_count` extra samples, drawn from their
    own seeded stream, after the real ones; ``start_batch`` resumes at that batch.
    """

    def __init__(
        self,
        n_real: int,
        n_extra: int,
        batch_size: int,
        fraction: float,
        seed: int,
        start_batch: int = 0,
    ) -> None:
        self.n_real, self.n_extra = n_real, n_extra
        self.batch_size, self.fraction = batch_size, fraction
        self.seed, self.start_batch = seed, start_batch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        j, b, f = self.start_batch, self.batch_size, self.fraction
        n_extra_before = math.floor(j * f * b)
        real = iter(SeededSampler(self.n_real, self.seed, start=j * b - n_extra_before))
        extra = iter(SeededSampler(self.n_extra, self.seed, start=n_extra_before, stream=1))
        while True:
            k = extra_count(j, b, f)
            for _ in range(b - k):
                yield next(real)
            for _ in range(k):
                index, state = next(extra)
                yield self.n_real + index, state
            j += 1


class ShardSampler(Sampler):
    """One process's share of each global batch of a key stream (data-parallel training).

    Every process runs the same ``stream`` and keeps keys ``rank * b .. (rank + 1) * b - 1`` of
    each global batch of ``world * b`` keys, so the processes together see exactly the batches a
    single process would, whatever their number.
    """

    def __init__(self, stream: Sampler, global_batch: int, rank: int, world: int) -> None:
        if global_batch % world:
            raise InputError(
                f"the batch size {global_batch} (the global batch) must be a multiple of the "
                f"{world} processes"
            )
        self.stream, self.global_batch = stream, global_batch
        self.local = global_batch // world
        self.first = rank * self.local

    def __iter__(self) -> Iterator[tuple[int, int]]:
        keys = iter(self.stream)
        while True:
            batch = list(islice(keys, self.global_batch))
            yield from batch[self.first : self.first + self.local]
