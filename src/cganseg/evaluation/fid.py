"""FID and KID between a folder of real and a folder of generated images (paper Table 3).

Standard FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) of the 2048-d pool3 features of
the TF FID Inception-v3 (:mod:`cganseg.models.fid_inception`); KID with torchmetrics, FID's
Frechet distance by :func:`frechet_distance` (the same number as torchmetrics', ~1000x faster on
few images). Each image runs through the network once; both metrics then read the same features.

Microscopy images are 8- or 16-bit with any intensity range, and the generator works on images
normalised per image, so by default both sets get the same per-image percentile normalisation
(:func:`cganseg.data.normalize.normalize_percentile`) before they become 0..255 RGB (gray is
repeated into three channels). ``normalize=False`` scales by the dtype's range instead.

The reference cGAN-Seg code's "FID" uses classifier logits and another formula; its numbers are
not standard FID and cannot be compared with these.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cganseg.data.dataset import Sample
from cganseg.data.folders import collect_inputs
from cganseg.data.io import read_image
from cganseg.data.normalize import normalize_percentile
from cganseg.errors import InputError
from cganseg.models.fid_inception import load_fid_features
from cganseg.runtime.atomic import write_text
from cganseg.runtime.device import resolve_device
from cganseg.runtime.progress import progress_bar

#: below this many images per set FID is strongly biased upwards (and noisy); we warn
FEW_IMAGES = 2048
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


class FewImagesWarning(UserWarning):
    """FID/KID computed on fewer images than they need to be unbiased and stable."""


class _Precomputed(nn.Module):
    """Identity 'feature extractor', so torchmetrics reads features we computed once."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def to_rgb255(image: np.ndarray, path: Path, normalize: bool = True) -> np.ndarray:
    """A (C, H, W) image as float32 (3, H, W) in [0, 255]."""
    if image.shape[0] not in (1, 3):
        raise InputError(
            f"FID needs gray or RGB images, this one has {image.shape[0]} channels", path
        )
    if normalize:
        x = (normalize_percentile(image) + 1.0) * 127.5
    elif np.issubdtype(image.dtype, np.integer):
        x = image.astype(np.float32) * (255.0 / np.iinfo(image.dtype).max)
    else:
        x = np.clip(image.astype(np.float32), 0.0, 1.0) * 255.0
    if not np.isfinite(x).all():
        raise InputError("image holds NaN or infinite values", path)
    return np.repeat(x, 3, axis=0) if x.shape[0] == 1 else x.astype(np.float32, copy=False)


@torch.no_grad()
def image_features(
    images: Iterable[tuple[Path | str, np.ndarray]],
    extractor: nn.Module,
    normalize: bool = True,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """``(N, D)`` features of ``(source, (C, H, W) image)`` items, each resized to 299 first."""
    size = (299, 299)
    out: list[torch.Tensor] = []
    batch: list[torch.Tensor] = []

    def flush() -> None:
        if batch:
            out.append(extractor(torch.stack(batch).to(device)).double().cpu())
            batch.clear()

    for source, image in images:
        x = torch.from_numpy(to_rgb255(image, Path(source), normalize))[None]
        if tuple(x.shape[-2:]) != size:
            x = nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        batch.append(x[0])
        if len(batch) == batch_size:
            flush()
    flush()
    if not out:
        raise InputError("no images to compute features of")
    return torch.cat(out)


def folder_features(
    files: Sequence[Path],
    extractor: nn.Module,
    normalize: bool = True,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    desc: str = "features",
    progress: bool = True,
) -> torch.Tensor:
    """:func:`image_features` of image files, read one by one."""
    bar = progress_bar(files, desc=desc, unit="img", disable=not progress)
    return image_features(
        ((p, read_image(p)) for p in bar), extractor, normalize, batch_size, device
    )


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID's Frechet distance between Gaussians fitted to two ``(N, D)`` feature sets, with
    unbiased covariances as torchmetrics and pytorch-fid:
    ``|mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2)``.

    Why not torchmetrics' own: it takes ``tr sqrt(S1 S2)`` from the eigenvalues of the
    non-symmetric 2048 x 2048 product, which cost 100 CPU-seconds on our 2-core machine, at every
    validation of ``train --val-fid``. The same trace exactly, cheaply: with ``S_i = A_i^T A_i``
    (``A_i``: the centred features over ``sqrt(N_i - 1)``, ``N_i x D``), the non-zero eigenvalues
    of ``S1 S2`` are the squared singular values of ``A1 A2^T``, so the trace is that small
    ``N1 x N2`` matrix's nuclear norm; with more images than features, the eigenvalues of the
    symmetric ``sqrt(S1) S2 sqrt(S1)`` give it (tests: equal to torchmetrics')."""
    x, y = real.double(), fake.double()
    mu_x, mu_y = x.mean(0), y.mean(0)
    a = (x - mu_x) / math.sqrt(len(x) - 1)
    b = (y - mu_y) / math.sqrt(len(y) - 1)
    if min(len(a), len(b)) <= a.shape[1]:
        cross = torch.linalg.matrix_norm(a @ b.T, ord="nuc")
    else:
        w, v = torch.linalg.eigh(a.T @ a)
        root = (v * w.clamp(min=0).sqrt()) @ v.T
        cross = torch.linalg.eigvalsh(root @ (b.T @ b) @ root).clamp(min=0).sqrt().sum()
    return float((mu_x - mu_y).square().sum() + a.square().sum() + b.square().sum() - 2 * cross)


def fid_kid(real: torch.Tensor, fake: torch.Tensor, seed: int = 0) -> dict[str, Any]:
    """FID and KID (mean, sd over random subsets) of two ``(N, D)`` feature sets."""
    from torchmetrics.image.kid import KernelInceptionDistance

    n_real, n_fake = len(real), len(fake)
    if min(n_real, n_fake) < 2:
        raise InputError(f"FID needs at least 2 images per set, got {n_real} and {n_fake}")
    subset = min(KID_SUBSET_SIZE, n_real, n_fake)
    with warnings.catch_warnings():  # its note on keeping all features: ours are few, 2048-d
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        kid = KernelInceptionDistance(feature=_Precomputed(real.shape[1]), subsets=KID_SUBSETS,
                                      subset_size=subset)  # fmt: skip
    kid.update(real.double(), real=True)
    kid.update(fake.double(), real=False)
    state = torch.get_rng_state()
    torch.manual_seed(seed)  # KID draws its subsets with torch's global generator
    try:
        kid_mean, kid_std = kid.compute()
    finally:
        torch.set_rng_state(state)
    return {
        "fid": frechet_distance(real, fake),
        "kid_mean": float(kid_mean),
        "kid_std": float(kid_std),
        "kid_subset_size": subset,
        "n_real": n_real,
        "n_generated": n_fake,
    }


class HeldOutFid:
    """FID/KID of a generator's images of held-out masks against the real images of those masks
    (one image per mask, seeded ``seed + i``; issue 31: how far the generator is from real).

    The real images' features are computed once, so scoring a generator again, at every
    validation of a ``cganseg train --val-fid`` run, costs only its own images' features."""

    def __init__(self, samples: Sequence[Sample], extractor: nn.Module,
                 device: str | torch.device = "cpu", seed: int = 0) -> None:  # fmt: skip
        if len(samples) < 2:
            raise InputError(f"FID needs at least 2 held-out images, got {len(samples)}")
        self.samples, self.extractor, self.device, self.seed = samples, extractor, device, seed
        self.real = image_features(((s.name, s.image) for s in samples), extractor,
                                   device=device)  # fmt: skip

    def generate(self, generate: Callable[[np.ndarray, int], np.ndarray],
                 progress: bool = False) -> list[np.ndarray]:  # fmt: skip
        """``generate(labels, seed)``'s image of every held-out mask."""
        bar = progress_bar(self.samples, desc="generate", unit="img", disable=not progress)
        return [generate(s.labels, self.seed + i) for i, s in enumerate(bar)]

    def score(self, fakes: Sequence[np.ndarray]) -> dict[str, Any]:
        """:func:`fid_kid` of the generated images (in the held-out masks' order) vs the real."""
        fake = image_features(((s.name, f) for s, f in zip(self.samples, fakes, strict=True)),
                              self.extractor, device=self.device)  # fmt: skip
        return fid_kid(self.real, fake, seed=self.seed)


def compute_fid(
    real: str | Path,
    generated: str | Path,
    *,
    extractor: nn.Module | None = None,
    weights: str | Path | None = None,
    normalize: bool = True,
    batch_size: int = 16,
    device: str = "auto",
    json_path: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """FID/KID between two image folders; writes ``json_path`` when given.

    ``extractor`` replaces the standard network (tests use a tiny one); otherwise it is loaded
    from ``weights`` (see :func:`cganseg.models.fid_inception.find_fid_weights`).
    """

    real_files, fake_files = collect_inputs(real), collect_inputs(generated)
    dev = resolve_device(device)
    if extractor is None:
        extractor = load_fid_features(weights, dev)
    feats = [
        folder_features(files, extractor, normalize, batch_size, dev, desc, progress)
        for files, desc in ((real_files, "real"), (fake_files, "generated"))
    ]
    result = fid_kid(*feats)
    result["normalize"] = "percentile" if normalize else "dtype-range"
    if min(result["n_real"], result["n_generated"]) < FEW_IMAGES:
        warnings.warn(
            f"FID on {result['n_real']} real and {result['n_generated']} generated images is "
            f"biased upwards and noisy (below {FEW_IMAGES} per set); compare only numbers made "
            "with the same image counts",
            FewImagesWarning,
            stacklevel=2,
        )
    if json_path is not None:
        write_text(json_path, json.dumps(result, indent=2) + "\n")
    return result


def is_fid_json(path: Path) -> bool:
    """True when ``path`` holds a result written by :func:`compute_fid` (so it may be replaced)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"fid", "kid_mean", "n_real"} <= set(data)


def kid_text(result: dict[str, Any]) -> str:
    """KID as text; its sd over subsets only when the subsets differ (smaller than the sets)."""
    spread = result["kid_subset_size"] < min(result["n_real"], result["n_generated"])
    return f"{result['kid_mean']:.4f}" + (f" ± {result['kid_std']:.4f}" if spread else "")


def summary_line(result: dict[str, Any]) -> str:
    return (
        f"FID {result['fid']:.2f}, KID {kid_text(result)} "
        f"({result['n_real']} real, {result['n_generated']} generated images)"
    )
