"""Images from masks without a network: the simple renderer, issue 31's control for Table 2.

The paper's Table 2 adds generated pairs of synthetic dense/colony masks to the real ones. A gain
there could come from the masks alone (more cells, denser scenes) as much as from the learnt
generator. This renderer makes an image of any mask from the real pairs' statistics only: one
real image is drawn per output, its background's mean and spread fill the background, each cell
takes the mean and spread of a random cell of that image, the texture is Gaussian noise
smoothed over about a pixel, and the whole image is blurred so that cell edges are soft as a
microscope's are. Real + generated pairs must beat real + these pairs for the generator itself
to count.

:class:`SimpleRenderer` has the generator's ``generate(labels, seed, tile_size)``, so
:func:`cganseg.synth.pairs.write_pairs` writes its pairs exactly as ``cganseg generate`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cganseg.data.dataset import Sample
from cganseg.errors import InputError

#: the texture's correlation length and the blur of the whole image, in pixels
TEXTURE_SIGMA = 1.0
BLUR_SIGMA = 1.0


@dataclass
class _Source:
    """One real image's statistics: background mean/sd and each cell's, per channel."""

    background: np.ndarray  # (2, C): mean, sd
    cells: np.ndarray  # (n, 2, C)


class SimpleRenderer:
    """Renders masks with intensities of real cells and backgrounds (fit with :meth:`fit`)."""

    def __init__(self, sources: list[_Source]) -> None:
        self.sources = sources
        self.channels = sources[0].background.shape[1]

    @classmethod
    def fit(cls, samples: Sequence[Sample]) -> SimpleRenderer:
        """The statistics of real (normalised image, labels) pairs, image by image."""
        sources = []
        for s in samples:
            pixels = s.image.reshape(s.image.shape[0], -1).T  # (H*W, C)
            labels = s.labels.ravel()
            ids = np.unique(labels[labels > 0])
            if not ids.size or ids.size == labels.size:
                continue  # no cell, or no background: nothing to learn a scene from
            bg = pixels[labels == 0]
            cells = [pixels[labels == i] for i in ids]
            sources.append(_Source(
                np.stack([bg.mean(0), bg.std(0)]),
                np.stack([np.stack([c.mean(0), c.std(0)]) for c in cells])))  # fmt: skip
        if not sources:
            raise InputError("the simple renderer needs real pairs with both cells and "
                             "background")  # fmt: skip
        return cls(sources)

    def generate(self, labels: np.ndarray, seed: int, tile_size: int = 1024) -> np.ndarray:
        """A (C, H, W) image in [-1, 1] of an instance label mask (``tile_size`` is unused: the
        renderer needs no tiles; it is there to match the generator's call)."""
        rng = np.random.default_rng(seed)
        source = self.sources[rng.integers(len(self.sources))]
        n = int(labels.max())
        # row 0: the background; row i: cell i's mean and sd, drawn from the source's cells
        stats = np.concatenate([source.background[None],
                                source.cells[rng.integers(len(source.cells), size=n)]])  # fmt: skip
        index = labels.astype(np.int64)
        out = np.empty((self.channels, *labels.shape), np.float32)
        for c in range(self.channels):
            noise = ndimage.gaussian_filter(rng.standard_normal(labels.shape), TEXTURE_SIGMA)
            noise /= max(float(noise.std()), 1e-6)
            image = stats[index, 0, c] + stats[index, 1, c] * noise
            out[c] = ndimage.gaussian_filter(image, BLUR_SIGMA)
        return np.clip(out, -1.0, 1.0)
