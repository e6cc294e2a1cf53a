"""Tests for the cGAN-Seg generator StyleUNet (cganseg.models.generator)."""

from __future__ import annotations

import pytest
import torch

from cganseg.errors import InputError
from cganseg.models.generator import ModulatedConv2d, StyleUNet, build_generator

SMALL = {"width": 4, "style_dim": 16, "n_mapping": 2}


def make(in_channels: int = 2, out_channels: int = 1, **options) -> StyleUNet:
    torch.manual_seed(0)
    return StyleUNet(in_channels, out_channels, **{**SMALL, **options})


def one_hot_mask(in_channels: int, height: int, width: int, batch: int = 2) -> torch.Tensor:
    """A random class map as the generator sees it: float one-hot (B, K, H, W)."""
    labels = torch.randint(0, in_channels, (batch, height, width), generator=seeded(123))
    return torch.nn.functional.one_hot(labels, in_channels).permute(0, 3, 1, 2).float()


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def switch_on_noise(model: StyleUNet) -> None:
    """Noise strengths start at 0; make them non-zero so the noise inputs matter."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("noise_strength"):
                param.fill_(0.5)


@pytest.mark.parametrize(("in_channels", "out_channels"), [(2, 1), (3, 3), (3, 1), (2, 3)])
@pytest.mark.parametrize(("height", "width"), [(32, 48), (16, 16), (64, 32)])
def test_output_shape_and_range(in_channels, out_channels, height, width):
    model = make(in_channels, out_channels)
    with torch.no_grad():
        image = model(one_hot_mask(in_channels, height, width), generator=seeded(0))
    assert image.shape == (2, out_channels, height, width)
    assert image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1
    assert image.std() > 0


def test_same_seed_same_image_different_seeds_different_images():
    model = make(width=8)
    switch_on_noise(model)
    mask = one_hot_mask(2, 32, 48)
    with torch.no_grad():
        first = model(mask, generator=seeded(7))
        again = model(mask, generator=seeded(7))
        others = [model(mask, generator=seeded(seed)) for seed in (8, 9)]
    assert torch.equal(first, again)
    for other in others:
        assert (first - other).abs().mean() > 1e-3
    assert (others[0] - others[1]).abs().mean() > 1e-3


def test_explicit_z_reproducible_and_noise_matters():
    model = make()
    switch_on_noise(model)
    mask = one_hot_mask(2, 32, 48)
    z = torch.randn(2, SMALL["style_dim"], generator=seeded(3))
    with torch.no_grad():
        first = model(mask, z, generator=seeded(1))
        again = model(mask, z.clone(), generator=seeded(1))
        other_noise = model(mask, z, generator=seeded(2))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other_noise)


def test_noise_has_no_effect_at_initialisation():
    model = make()
    mask = one_hot_mask(2, 32, 32)
    z = torch.randn(2, SMALL["style_dim"], generator=seeded(3))
    with torch.no_grad():
        assert torch.equal(model(mask, z, generator=seeded(1)), model(mask, z, generator=seeded(2)))


def test_style_mixing_changes_the_image():
    model = make()  # noise strengths are 0, so only the mixing can change the output
    mask = one_hot_mask(2, 32, 48)
    z = torch.randn(2, SMALL["style_dim"], generator=seeded(3))
    with torch.no_grad():
        plain = model(mask, z, generator=seeded(1), mix_prob=0.0)
        mixed = model(mask, z, generator=seeded(1), mix_prob=1.0)
        mixed_again = model(mask, z, generator=seeded(1), mix_prob=1.0)
    assert mixed.shape == plain.shape
    assert not torch.allclose(plain, mixed)
    assert torch.equal(mixed, mixed_again)


def test_mix_prob_out_of_range_is_rejected():
    model = make()
    with pytest.raises(InputError, match="mix_prob"):
        model(one_hot_mask(2, 16, 16), mix_prob=1.5)


def test_gradients_reach_every_part():
    model = make()
    switch_on_noise(model)
    image = model(one_hot_mask(2, 32, 32), generator=seeded(0), mix_prob=1.0)
    image.square().mean().backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    groups = {
        "mapping": [n for n in grads if n.startswith("mapping.")],
        "affine": [n for n in grads if ".affine." in n],
        "noise": [n for n in grads if n.endswith("noise_strength")],
        "encoder": [n for n in grads if n.startswith("encoder.")],
    }
    for group, names in groups.items():
        assert names, group
        for name in names:
            assert grads[name] is not None, name
            assert grads[name].abs().sum() > 0, name


def test_config_rebuild_loads_weights():
    model = make(3, 1, width=6, depth=3)
    rebuilt = build_generator(model.config)
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.config == model.config
    assert rebuilt.size_multiple == 8
    mask = one_hot_mask(3, 24, 40)
    with torch.no_grad():
        assert torch.equal(model(mask, generator=seeded(4)), rebuilt(mask, generator=seeded(4)))


def test_default_config_and_size_multiple():
    model = StyleUNet(3, 1, width=4)
    assert model.size_multiple == 16
    assert model.config == {
        "name": "styleunet",
        "in_channels": 3,
        "out_channels": 1,
        "width": 4,
        "style_dim": 256,
        "n_mapping": 8,
        "depth": 4,
    }
    assert model.num_style_layers == 9


def test_build_generator_rejects_unknown_name_and_bad_options():
    with pytest.raises(InputError, match="unknown generator"):
        build_generator({"name": "pix2pix", "in_channels": 2, "out_channels": 1})
    with pytest.raises(InputError, match="invalid generator config"):
        build_generator({"name": "styleunet", "in_channels": 2, "out_channels": 1, "foo": 1})
    with pytest.raises(InputError, match="depth"):
        build_generator({"name": "styleunet", "in_channels": 2, "out_channels": 1, "depth": 0})


@pytest.mark.parametrize(("height", "width"), [(40, 48), (32, 50)])
def test_size_not_a_multiple_is_rejected(height, width):
    model = make()
    with pytest.raises(InputError, match=rf"{height}x{width}.*multiple of 16"):
        model(one_hot_mask(2, height, width))


def test_wrong_channels_and_latent_shape_are_rejected():
    model = make()
    with pytest.raises(InputError, match="B, 2, H, W"):
        model(torch.zeros(1, 3, 16, 16))
    with pytest.raises(InputError, match="latent z"):
        model(one_hot_mask(2, 16, 16), torch.zeros(2, 7))


def test_demodulation_keeps_activation_scale():
    torch.manual_seed(0)
    conv = ModulatedConv2d(32, 48, style_dim=16)
    x = torch.randn(4, 32, 24, 24)
    for scale in (0.1, 1.0, 10.0):
        w = torch.randn(4, 16) * scale
        with torch.no_grad():
            out = conv(x, w)
        per_sample_std = out.std(dim=(1, 2, 3))
        assert ((per_sample_std > 1 / 3) & (per_sample_std < 3)).all(), (scale, per_sample_std)


def test_modulation_depends_on_the_style():
    torch.manual_seed(0)
    conv = ModulatedConv2d(8, 8, style_dim=16)
    x = torch.randn(1, 8, 16, 16).expand(2, -1, -1, -1)
    with torch.no_grad():
        out = conv(x, torch.randn(2, 16) * 3)
    assert not torch.allclose(out[0], out[1])
