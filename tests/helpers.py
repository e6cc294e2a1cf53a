"""Helpers shared by the tests: tiny synthetic data written to disk in either supported
layout, tiny training and experiment configs, a stand-in FID network. Fixtures that use them
live in conftest.py."""

from __future__ import annotations

import csv
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile
import torch
from skimage.draw import disk
from torch import nn

from cganseg.experiment.config import ExperimentConfig
from cganseg.options import CGanTrainConfig, SegTrainConfig

TIFF = (".tif", ".tiff")


def synthetic_pair(
    size: tuple[int, int] = (40, 52),
    image_dtype: type = np.uint8,
    channels: int = 1,
    seed: int = 0,
    n_cells: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image (H, W) or (H, W, C) of bright discs on a dark background, and its labels.

    Cells are placed on a coarse grid so they never touch: each disc is its own instance.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    labels = np.zeros((h, w), np.uint16)
    radius = max(2, min(h, w) // 8)
    step = 2 * radius + 3
    slots = [
        (y, x)
        for y in range(radius + 1, h - radius - 1, step)
        for x in range(radius + 1, w - radius - 1, step)
    ]
    picks = rng.choice(len(slots), size=min(n_cells, len(slots)), replace=False)
    for cell_id, k in enumerate(sorted(picks), start=1):
        rr, cc = disk(slots[k], radius, shape=(h, w))
        labels[rr, cc] = cell_id
    signal = (labels > 0).astype(np.float32) + rng.normal(0, 0.05, size=(h, w))
    if channels > 1:
        gains = np.linspace(1.0, 0.5, channels)
        signal = np.stack([signal * g for g in gains], axis=-1)
    signal = np.clip(signal, 0.0, 1.2) / 1.2
    if image_dtype == np.uint8:
        image = np.round(20 + 200 * signal).astype(np.uint8)
    elif image_dtype == np.uint16:
        image = np.round(1000 + 300 * signal).astype(np.uint16)  # small 16-bit dynamic range
    elif image_dtype == np.float32:
        image = signal.astype(np.float32)
    else:
        raise ValueError(f"unsupported image dtype {image_dtype}")
    return image, labels


def write_image(path: Path, array: np.ndarray) -> None:
    """Write with tifffile for TIFF, imageio (Pillow) otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in TIFF:
        tifffile.imwrite(path, array)
    else:
        iio.imwrite(path, array, extension=path.suffix)


def make_dataset(
    root: str | Path,
    n: int = 6,
    size: tuple[int, int] = (40, 52),
    layout: str = "folders",
    image_ext: str = ".png",
    mask_ext: str = ".png",
    image_dtype: type = np.uint8,
    channels: int = 1,
    seed: int = 0,
) -> Path:
    """Write ``n`` image/mask pairs named ``img00``... and return ``root``.

    ``layout="folders"``: ``root/images/NAME{image_ext}`` + ``root/masks/NAME{mask_ext}``;
    ``layout="cellpose"``: ``root/NAME{image_ext}`` + ``root/NAME_masks{mask_ext}``.
    Masks are uint16 instance labels; multi-channel images are stored channel-last.
    """
    root = Path(root)
    if layout not in ("folders", "cellpose"):
        raise ValueError(f"unknown layout {layout!r}")
    if image_dtype == np.float32 and image_ext.lower() not in TIFF:
        raise ValueError("float32 images need a TIFF extension")
    for i in range(n):
        image, labels = synthetic_pair(size, image_dtype, channels, seed=seed * 1000 + i)
        name = f"img{i:02d}"
        if layout == "folders":
            img_path = root / "images" / f"{name}{image_ext}"
            mask_path = root / "masks" / f"{name}{mask_ext}"
        else:
            img_path = root / f"{name}{image_ext}"
            mask_path = root / f"{name}_masks{mask_ext}"
        write_image(img_path, image)
        write_image(mask_path, labels)
    return root


#: what the tiny test runs share: width-4 UNet, 32x32 crops, CPU, no workers, no warm-up
_TINY_RUN = dict(
    model="unet",
    width=4,
    crop=[32, 32],
    log_every=1,
    patience=0,
    val_fraction=0.2,
    device="cpu",
    num_workers=0,
    warmup_fraction=0.0,
)


def tiny_seg_config(data, out, **kw) -> SegTrainConfig:
    """Conventional training sized for tests: UNet width 4, 32x32 crops, a few steps."""
    base = dict(_TINY_RUN, data=str(data), out=str(out), batch_size=4, iterations=6, lr=5e-3,
                val_every=3, test_fraction=0.2, seed=3)  # fmt: skip
    return SegTrainConfig(**{**base, **kw})


def tiny_cgan_config(data, out, **kw) -> CGanTrainConfig:
    """cGAN-Seg training sized for tests: every network width 4, 32x32 crops, no perceptual loss."""
    base = dict(_TINY_RUN, data=str(data), out=str(out), gen_width=4, style_dim=8, n_mapping=2,
                disc_width=4, disc_layers=2, batch_size=2, iterations=4, val_every=2,
                test_fraction=0.0, seed=5, perceptual="none", tile_size=64)  # fmt: skip
    return CGanTrainConfig(**{**base, **kw})



def in_memory_cgan_trainer(tmp_path: Path, n: int = 4, **kw):
    """A tiny cGAN-Seg trainer on ``n`` synthetic 40x40 pairs, all training, nothing written."""
    from cganseg.data.dataset import Sample
    from cganseg.data.normalize import normalize_percentile
    from cganseg.training.cgan_trainer import CGanTrainer
    from cganseg.training.run_data import DataSplit

    samples = []
    for i in range(n):
        image, labels = synthetic_pair((40, 40), seed=i)
        samples.append(Sample(f"s{i}", normalize_percentile(image[None]), labels.astype(np.int32)))
    names = [s.name for s in samples]
    data = DataSplit({"train": names, "val": [], "test": []}, samples, [], [], hashes={})
    cfg = tiny_cgan_config(tmp_path / "d", tmp_path / "run", batch_size=2, **kw)
    return CGanTrainer(cfg, data, progress=False)

def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run's metrics.csv."""
    with open(run_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def no_temp_files(folder: Path) -> bool:
    """True when ``folder`` (if it exists) holds no temporary file of an atomic write."""
    return not folder.exists() or not [p for p in folder.rglob(".*") if ".tmp" in p.name]


class TinyFeatures(nn.Module):
    """Stand-in for Inception: channel means and spreads on a 4x4 grid (32 features)."""

    num_features = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.adaptive_avg_pool2d(x[:, :1] / 255.0, 4).flatten(1)
        spread = nn.functional.adaptive_avg_pool2d((x[:, :1] / 255.0) ** 2, 4).flatten(1)
        return torch.cat([pooled, spread], dim=1)


def tiny_experiment(tmp_path: Path, **kw) -> ExperimentConfig:
    data = make_dataset(tmp_path / "data", n=9, size=(48, 48))
    net = {
        "width": 4,
        "crop": [32, 32],
        "batch_size": 2,
        "iterations": 2,
        "val_every": 2,
        "num_workers": 0,
        "tile_size": 64,
        "log_every": 1,
    }
    options = {
        "data": str(data),
        "out": str(tmp_path / "exp"),
        "folds": 3,
        "n_train": 2,
        "scenarios": ["A", "B", "C", "D"],
        "device": "cpu",
        "cgan": {
            **net,
            "gen_width": 4,
            "style_dim": 8,
            "n_mapping": 1,
            "disc_width": 4,
            "disc_layers": 2,
            "perceptual": "none",
        },
        "seg": net,
        "synthetic": {"n": 2, "density": 0.2},
        "fid": False,
        **kw,
    }
    return ExperimentConfig.from_dict(options)


def border_nuclei() -> tuple[np.ndarray, np.ndarray]:
    """(image float32 (320, 320), truth int32): 49 blurred elliptic nuclei 14-20 px across, the
    shipped nuclei model's own scale, centred at 48, 96, 128, 160, 192, 224 and 272 on both axes
    (on the borders and corners of tiles and regions that tests cut there)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(0)
    centres = [48, 96, 128, 160, 192, 224, 272]
    yy, xx = np.mgrid[:320, :320]
    truth = np.zeros((320, 320), np.int32)
    for label, (y, x) in enumerate([(y, x) for y in centres for x in centres], 1):
        ry, rx = rng.uniform(7, 10, 2)
        truth[((yy - y) / ry) ** 2 + ((xx - x) / rx) ** 2 <= 1] = label
    image = ndi.gaussian_filter((truth > 0).astype(np.float32), 1.5)
    image += rng.normal(0.05, 0.02, truth.shape).astype(np.float32)
    return image, truth
