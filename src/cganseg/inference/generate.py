"""Synthetic images from masks with a trained cGAN-Seg generator (paper Fig. 4).

The generator maps a mask's class map (background / cell [/ boundary]) plus a seed to an image;
different seeds give different plausible images of the same mask. Masks of any size work: they
are padded to the generator's size multiple and, when larger than ``tile_size``, generated in
overlapping tiles blended by :func:`cganseg.inference.tiling.blend_tiles`, so memory stays
bounded. All tiles share one latent z (one style for the whole image); only the per-layer noise
differs between tiles, and the blending hides that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cganseg.checkpoint import GENERATOR, load_network
from cganseg.data.targets import labels_to_classes, one_hot
from cganseg.inference.tiling import blend_tiles
from cganseg.models.generator import StyleUNet, build_generator
from cganseg.runtime.device import resolve_device


@dataclass
class Generator:
    """A trained generator on its device, with the number of mask classes it expects."""

    model: StyleUNet
    device: torch.device

    @property
    def n_classes(self) -> int:
        return self.model.config["in_channels"]

    @torch.inference_mode()
    def generate(self, labels: np.ndarray, seed: int, tile_size: int = 1024) -> np.ndarray:
        """A (C, H, W) image in [-1, 1] for an instance label mask (H, W) and a seed."""
        classes = torch.from_numpy(labels_to_classes(labels, self.n_classes))
        onehot = one_hot(classes, self.n_classes).numpy()
        rng = torch.Generator(self.device).manual_seed(seed)
        z = torch.randn(1, self.model.style_dim, generator=rng, device=self.device)
        was_training = self.model.training
        self.model.eval()

        def images(tiles: np.ndarray) -> np.ndarray:
            batch = torch.from_numpy(tiles).to(self.device)
            out = self.model(batch, z.expand(len(tiles), -1), generator=rng)
            return out.float().cpu().numpy()

        try:
            return blend_tiles(
                images,
                onehot,
                multiple=self.model.size_multiple,
                tile_size=tile_size,
                overlap=min(64, tile_size // 4),
                batch_size=1,
            )
        finally:
            self.model.train(was_training)


def load_generator(path: str | Path, device: str = "auto") -> Generator:
    """The generator of a ``cganseg train`` checkpoint file or run folder."""
    model, _ = load_network(path, GENERATOR, build_generator)
    dev = resolve_device(device)
    return Generator(model.to(dev), dev)
