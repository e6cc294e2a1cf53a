"""Tests for the three segmentation backbones and their registry (cganseg.models)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cganseg.errors import InputError
from cganseg.models.registry import DEFAULT_WIDTHS, SEGMENTERS, build_segmenter

SMALL_WIDTHS = (4, 8)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", SEGMENTERS)
@pytest.mark.parametrize("width", SMALL_WIDTHS)
@pytest.mark.parametrize(("in_channels", "n_classes"), [(1, 2), (3, 3)])
@pytest.mark.parametrize(("height", "width_px"), [(32, 32), (48, 80)])
def test_output_shape(name, width, in_channels, n_classes, height, width_px):
    torch.manual_seed(0)
    model = build_segmenter(name, in_channels, n_classes, width)
    x = torch.randn(2, in_channels, height, width_px)
    for train in (True, False):
        model.train(train)
        with torch.no_grad():
            y = model(x)
        assert y.shape == (2, n_classes, height, width_px)
        assert y.dtype == torch.float32
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", SEGMENTERS)
def test_full_width_forward_on_meta_device(name):
    with torch.device("meta"):
        model = build_segmenter(name, 1, 2)
        y = model(torch.empty(2, 1, 64, 96))
    assert y.shape == (2, 2, 64, 96)


@pytest.mark.parametrize("name", SEGMENTERS)
def test_parameter_count_grows_with_width(name):
    with torch.device("meta"):
        counts = [n_params(build_segmenter(name, 1, 2, w)) for w in (4, 8, 16)]
        default = n_params(build_segmenter(name, 1, 2))
    assert counts[0] < counts[1] < counts[2] < default


def test_unet_full_width_channels():
    with torch.device("meta"):
        model = build_segmenter("unet", 1, 2, 64)
    out_channels = {m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)}
    assert out_channels == {2, 64, 128, 256, 512, 1024}
    # The classic UNet (with BatchNorm, no conv bias) has about 31 million parameters.
    assert 30_000_000 < n_params(model) < 32_000_000


@pytest.mark.parametrize("name", SEGMENTERS)
def test_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = build_segmenter(name, 1, 3, 4)
    x = torch.randn(2, 1, 32, 48)
    target = torch.randint(0, 3, (2, 32, 48))
    F.cross_entropy(model(x), target).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", SEGMENTERS)
def test_config_rebuilds_model(name):
    torch.manual_seed(0)
    model = build_segmenter(name, 3, 3, 4)
    assert model.config == {"name": name, "in_channels": 3, "n_classes": 3, "width": 4}
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))  # move BatchNorm running stats off their defaults
    rebuilt = build_segmenter(**model.config)
    rebuilt.load_state_dict(model.state_dict())
    model.eval()
    rebuilt.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


@pytest.mark.parametrize("name", SEGMENTERS)
def test_default_width_and_size_multiple(name):
    with torch.device("meta"):
        model = build_segmenter(name, 1, 2)
    assert model.config["width"] == DEFAULT_WIDTHS[name]
    assert model.size_multiple == 16


def test_default_widths_match_original_networks():
    assert DEFAULT_WIDTHS == {"unet": 64, "deepsea": 64, "cellpose": 32}


def test_unknown_name_raises_input_error():
    with pytest.raises(InputError) as info:
        build_segmenter("resnet", 1, 2)
    message = str(info.value)
    assert "\n" not in message
    assert "resnet" in message
    for name in SEGMENTERS:
        assert name in message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_channels": 0, "n_classes": 2},
        {"in_channels": 1, "n_classes": 1},
        {"in_channels": 1, "n_classes": 2, "width": 0},
    ],
)
def test_bad_sizes_raise_input_error(kwargs):
    with pytest.raises(InputError):
        build_segmenter("unet", **kwargs)
