"""Tests for DiffAugment (cganseg.augment.diffaugment)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cganseg.augment.diffaugment import OPS, apply_policy, sample_policy
from cganseg.errors import InputError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def policy_with(ops: tuple[str, ...], batch: int = 4, size=(16, 20), seed: int = 0, **kwargs):
    """A policy in which exactly ``ops`` run on every sample, in the order given."""
    policy = sample_policy(batch, 1.0, generator=gen(seed), device="cpu", image_size=size, **kwargs)
    active = torch.zeros(batch, len(OPS), dtype=torch.bool)
    indices = [OPS.index(op) for op in ops]
    active[:, indices] = True
    rest = [k for k in range(len(OPS)) if k not in indices]
    order = torch.tensor(indices + rest).expand(batch, -1).clone()
    return dataclasses.replace(policy, active=active, order=order)


def naive_translate(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    for i in range(h):
        for j in range(w):
            if 0 <= i - dy < h and 0 <= j - dx < w:
                out[..., i, j] = x[..., i - dy, j - dx]
    return out


def test_translation_matches_naive_shift():
    policy = policy_with(("translation",), batch=6, size=(9, 13), translation=0.3)
    assert policy.shift.abs().max() > 0
    x = torch.randn(6, 2, 9, 13)
    y = apply_policy(x, policy)
    for b in range(6):
        dy, dx = policy.shift[b].tolist()
        assert abs(dy) <= 3 and abs(dx) <= 4  # round(0.3 * side)
        assert torch.equal(y[b], naive_translate(x[b], dy, dx))


def test_cutout_zeroes_one_rectangle_of_the_given_size():
    policy = policy_with(("cutout",), batch=8, size=(20, 24), cutout=0.5)
    x = torch.rand(8, 1, 20, 24) + 1.0  # never zero
    y = apply_policy(x, policy)
    for b in range(8):
        hole = y[b, 0] == 0
        rows, cols = hole.any(dim=1), hole.any(dim=0)
        assert hole.sum() == rows.sum() * cols.sum()  # a rectangle
        assert rows.sum() <= 10 and cols.sum() <= 12
        assert torch.equal(y[b, 0][~hole], x[b, 0][~hole])
    assert (y == 0).sum() > 0


def test_same_policy_transforms_two_batches_alike():
    """Translation and cutout are linear: T(x + c) - T(x) must be T(c), the shifted/cut c."""
    policy = policy_with(("translation", "cutout"), batch=5, size=(16, 20))
    x = torch.randn(5, 3, 16, 20)
    c = torch.full_like(x, 2.0)
    diff = apply_policy(x + c, policy) - apply_policy(x, policy)
    assert torch.allclose(diff, apply_policy(c, policy), atol=1e-6)
    assert (apply_policy(c, policy) == 0).any() and (apply_policy(c, policy) == 2).any()


def augment(p_diff: float, *batches: torch.Tensor, generator: torch.Generator):
    """One policy drawn for the batches' size and applied to each, as the cGAN step does."""
    first = batches[0]
    policy = sample_policy(
        first.shape[0], p_diff, generator=generator, device=first.device,
        image_size=tuple(first.shape[-2:]),
    )  # fmt: skip
    return tuple(apply_policy(b, policy) for b in batches)


def test_one_policy_applies_alike_to_all_batches():
    x = torch.randn(4, 3, 24, 24)
    real, fake = augment(1.0, x, x.clone(), generator=gen(3))
    assert torch.equal(real, fake)
    assert not torch.equal(real, x)


def test_brightness_contrast_saturation_definitions():
    x = torch.rand(4, 3, 16, 20) * 2 - 1
    p = policy_with(("brightness",))
    delta = apply_policy(x, p) - x
    assert torch.allclose(delta, p.brightness.view(-1, 1, 1, 1).expand_as(x), atol=1e-6)
    assert (p.brightness.abs() <= 0.5).all()

    p = policy_with(("contrast",))
    y = apply_policy(x, p)
    assert torch.allclose(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-5)
    assert ((p.contrast >= 0.5) & (p.contrast <= 1.5)).all()

    p = policy_with(("saturation",))
    y = apply_policy(x, p)
    assert torch.allclose(y.mean(dim=1), x.mean(dim=1), atol=1e-5)
    assert not torch.allclose(y, x)
    assert ((p.saturation >= 0) & (p.saturation <= 2)).all()


def test_saturation_is_noop_on_one_channel():
    p = policy_with(("saturation",))
    x = torch.randn(4, 1, 16, 20)
    assert torch.equal(apply_policy(x, p), x)
    x3 = torch.randn(4, 3, 16, 20)
    assert not torch.equal(apply_policy(x3, p), x3)  # the same policy does act on colour


def test_order_of_ops_is_honoured():
    """Brightness after translation also lifts the zero border; before it, it does not."""
    x = torch.zeros(4, 1, 16, 20)
    first = apply_policy(x, policy_with(("brightness", "translation")))
    second = apply_policy(x, policy_with(("translation", "brightness")))
    assert not torch.equal(first, second)
    assert torch.allclose(second, policy_with(()).brightness.view(-1, 1, 1, 1).expand_as(x))


def test_gradients_flow_to_input():
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    (y,) = augment(1.0, x, generator=gen(1))
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_input_is_not_modified():
    x = torch.randn(4, 3, 16, 16)
    before = x.clone()
    augment(1.0, x, generator=gen(2))
    assert torch.equal(x, before)


def test_p_zero_is_identity():
    x = torch.randn(4, 3, 16, 16)
    (y,) = augment(0.0, x, generator=gen(0))
    assert torch.equal(y, x)


def test_seeded_generator_is_deterministic_and_seeds_differ():
    x = torch.randn(4, 3, 16, 16)
    a = augment(1.0, x, generator=gen(7))[0]
    assert torch.equal(a, augment(1.0, x, generator=gen(7))[0])
    assert not torch.equal(a, augment(1.0, x, generator=gen(8))[0])


@pytest.mark.parametrize("size", [(16, 16), (17, 23)])
def test_all_ops_keep_shape(size):
    x = torch.randn(3, 3, *size)
    assert apply_policy(x, policy_with(OPS, batch=3, size=size)).shape == x.shape


def test_parameters_are_drawn_per_sample():
    p = sample_policy(8, 1.0, generator=gen(0), device="cpu", image_size=(32, 32))
    for values in (p.brightness, p.saturation, p.contrast):
        assert values.unique().numel() == 8
    assert p.shift.unique(dim=0).shape[0] > 1
    assert p.cutout_center.unique(dim=0).shape[0] > 1
    assert p.order.unique(dim=0).shape[0] > 1


def test_selection_frequencies():
    p = sample_policy(4000, 0.5, generator=gen(0), device="cpu", image_size=(8, 8))
    per_op = p.active.float().mean(dim=0)  # p_diff * 0.5 for each op
    assert ((per_op - 0.25).abs() < 0.04).all()
    assert torch.equal(p.order.sort(dim=1).values, torch.arange(5).expand(4000, -1))
    none = sample_policy(64, 0.0, generator=gen(0), device="cpu", image_size=(8, 8))
    assert not none.active.any()


def test_bad_options_and_shapes():
    with pytest.raises(InputError, match="p_diff"):
        sample_policy(2, 1.5, generator=gen(), device="cpu", image_size=(8, 8))
    with pytest.raises(InputError, match="cutout"):
        sample_policy(2, 0.5, generator=gen(), device="cpu", image_size=(8, 8), cutout=-0.1)
    policy = sample_policy(2, 0.5, generator=gen(), device="cpu", image_size=(8, 8))
    with pytest.raises(ValueError, match="policy is for"):
        apply_policy(torch.zeros(2, 1, 8, 9), policy)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_for_a_cpu_generator():
    x = torch.randn(4, 3, 16, 16)
    cpu = augment(1.0, x, generator=gen(5))[0]
    cuda = augment(1.0, x.cuda(), generator=gen(5))[0]
    assert cuda.device.type == "cuda"
    assert torch.allclose(cuda.cpu(), cpu, atol=1e-5)
