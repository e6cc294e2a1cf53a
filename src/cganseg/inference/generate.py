"""Synthetic images from masks with a trained cGAN-Seg generator (paper Fig. 4).

The generator maps a mask's class map (background / cell [/ boundary]) plus a seed to an image;
different seeds give different plausible images of the same mask. Masks of any size are padded
to the generator's size multiple and the image is cropped back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cganseg.data.targets import labels_to_classes
from cganseg.inference.segment import resolve_device
from cganseg.models.generator import StyleUNet, build_generator
from cganseg.training.checkpoint import load_network


@dataclass
class Generator:
    """A trained generator on its device, with the number of mask classes it expects."""

    model: StyleUNet
    device: torch.device

    @property
    def n_classes(self) -> int:
        return self.model.config["in_channels"]

    @torch.no_grad()
    def generate(self, labels: np.ndarray, seed: int) -> np.ndarray:
        """A (C, H, W) image in [-1, 1] for an instance label mask (H, W) and a seed."""
        classes = torch.from_numpy(labels_to_classes(labels, self.n_classes))
        onehot = F.one_hot(classes, self.n_classes).permute(2, 0, 1)[None].float()
        h, w = labels.shape
        m = self.model.size_multiple
        pad_h, pad_w = (-h) % m, (-w) % m
        onehot = F.pad(onehot, (0, pad_w, 0, pad_h))  # padding is background (all-zero one-hot)
        onehot[:, 0, h:, :] = 1.0
        onehot[:, 0, :, w:] = 1.0
        rng = torch.Generator(self.device).manual_seed(seed)
        image = self.model(onehot.to(self.device), generator=rng)
        return image[0, :, :h, :w].float().cpu().numpy()


def load_generator(path: str | Path, device: str = "auto") -> Generator:
    """The generator of a ``cganseg train`` checkpoint file or run folder."""
    model, _ = load_network(path, "generator", build_generator)
    dev = resolve_device(device)
    return Generator(model.to(dev), dev)
