"""Tests for the PatchGAN discriminators D1/D2 and their linear-attention block."""

from __future__ import annotations

import time

import pytest
import torch

from cganseg.errors import InputError
from cganseg.models.discriminator import (
    LinearAttention,
    PatchDiscriminator,
    build_discriminator,
)


def expected_side(side: int, n_layers: int) -> int:
    """Output side of the conv stack, computed layer by layer from the conv size formula."""
    for _ in range(n_layers):
        side = (side + 2 - 4) // 2 + 1
    for _ in range(2):
        side = side + 2 - 4 + 1
    return side


@pytest.mark.parametrize("n_layers", [2, 3, 4])
@pytest.mark.parametrize("size", [(48, 48), (70, 94), (97, 51)])
def test_output_shape(n_layers, size):
    torch.manual_seed(0)
    d = PatchDiscriminator(in_channels=3, width=4, n_layers=n_layers)
    with torch.no_grad():
        y = d(torch.randn(2, 3, *size))
    expected = tuple(expected_side(s, n_layers) for s in size)
    assert y.shape == (2, 1, *expected)
    assert d.output_size(*size) == expected
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(("n_layers", "minimum"), [(1, 6), (2, 12), (3, 24), (4, 48)])
def test_minimum_input_size(n_layers, minimum):
    d = PatchDiscriminator(in_channels=2, width=4, n_layers=n_layers)
    assert d.min_input_size == minimum
    with torch.no_grad():
        assert d(torch.randn(1, 2, minimum, minimum + 5)).shape == (
            1,
            1,
            1,
            expected_side(minimum + 5, n_layers),
        )
        with pytest.raises(InputError, match="too small"):
            d(torch.randn(1, 2, minimum - 1, 64))


def test_raw_logits_not_squashed():
    torch.manual_seed(0)
    d = PatchDiscriminator(in_channels=1, width=4, n_layers=2)
    with torch.no_grad():
        d.model[-1].bias.fill_(5.0)
        y = d(torch.randn(1, 1, 32, 32))
    assert (y > 1).any()


def test_attention_position_and_toggle():
    with_att = PatchDiscriminator(in_channels=1, width=4, n_layers=3)
    without = PatchDiscriminator(in_channels=1, width=4, n_layers=3, attention=False)
    blocks = [m for m in with_att.modules() if isinstance(m, LinearAttention)]
    assert len(blocks) == 1
    assert blocks[0].value.in_channels == 16  # width * 2**(n_layers - 1): last stride-2 stage
    assert not any(isinstance(m, LinearAttention) for m in without.modules())


def test_attention_is_identity_at_init_and_gets_gradient():
    torch.manual_seed(0)
    block = LinearAttention(8, heads=2)
    x = torch.randn(2, 8, 5, 7)
    y = block(x)
    assert torch.equal(y, x)
    (y * torch.randn_like(y)).sum().backward()
    assert block.gamma.grad is not None and block.gamma.grad.abs() > 0


def test_attention_matches_quadratic_form():
    """The linear-cost result equals the explicit (HW x HW) attention it replaces."""
    torch.manual_seed(0)
    block = LinearAttention(8, heads=2, key_channels=4)
    with torch.no_grad():
        block.gamma.fill_(0.7)
        x = torch.randn(2, 8, 3, 5)
        b, c, h, w = x.shape
        q = block.query(x).reshape(b, 2, 2, h * w).softmax(dim=2)
        k = block.key(x).reshape(b, 2, 2, h * w).softmax(dim=3)
        v = block.value(x).reshape(b, 2, 4, h * w)
        weights = q.transpose(2, 3) @ k  # (b, heads, n, n): weight of position j for query i
        attended = (weights @ v.transpose(2, 3)).transpose(2, 3).reshape(b, c, h, w)
        expected = x + 0.7 * block.out(attended)
        assert torch.allclose(block(x), expected, atol=1e-5)


def test_attention_cost_is_linear_in_positions():
    # 65536 positions: a (HW x HW) map would need 17 GB, the linear form a few MB.
    block = LinearAttention(4)
    x = torch.randn(1, 4, 256, 256)
    start = time.perf_counter()
    with torch.no_grad():
        y = block(x)
    assert y.shape == x.shape
    assert time.perf_counter() - start < 5.0


def test_attention_rejects_bad_heads():
    with pytest.raises(ValueError, match="divisible"):
        LinearAttention(6, heads=4)


def test_gradient_reaches_input_and_attention():
    torch.manual_seed(0)
    d = PatchDiscriminator(in_channels=3, width=4, n_layers=3)
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    ((d(x) - 1) ** 2).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    block = next(m for m in d.modules() if isinstance(m, LinearAttention))
    assert block.gamma.grad.abs() > 0


def test_discriminator_runs_with_batch_of_one():
    d = PatchDiscriminator(in_channels=2, width=4, n_layers=3)
    d.train()
    assert d(torch.rand(1, 2, 24, 24)).shape == (1, 1, 1, 1)


def test_config_round_trip():
    d = PatchDiscriminator(in_channels=3, width=8, n_layers=2, attention=False)
    assert d.config == {
        "name": "patchgan",
        "in_channels": 3,
        "width": 8,
        "n_layers": 2,
        "attention": False,
    }
    rebuilt = build_discriminator(d.config)
    rebuilt.load_state_dict(d.state_dict())
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), d(x))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"name": "dcgan", "in_channels": 1}, "unknown discriminator"),
        ({"name": "patchgan", "in_channels": 1, "depth": 3}, "depth"),
        ({"name": "patchgan"}, "in_channels"),
        ({"name": "patchgan", "in_channels": 1, "n_layers": 0}, "n_layers"),
    ],
)
def test_build_discriminator_errors(config, message):
    with pytest.raises(InputError, match=message):
        build_discriminator(config)
