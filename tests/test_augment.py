"""Tests for the paper's conventional augmentation (cganseg.data.augment)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cganseg.data.augment import GEOMETRIC_OPS, OP_NAMES, AugmentStep, ConventionalAugment
from cganseg.errors import InputError

SHAPES = [(1, 32, 40), (3, 32, 32)]
PHOTOMETRIC_OPS = tuple(name for name in OP_NAMES if name not in GEOMETRIC_OPS)


def _mask(height: int, width: int) -> torch.Tensor:
    """Blocky instance mask with non-consecutive ids, so interpolated labels would show."""
    mask = torch.zeros(height, width, dtype=torch.int64)
    mask[2:12, 3:15] = 3
    mask[14:30, 5:12] = 7
    mask[8:26, 18:30] = 12
    return mask


def _pair(shape: tuple[int, int, int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    values = np.random.default_rng(seed).uniform(-0.9, 0.9, size=shape).astype(np.float32)
    return torch.from_numpy(values), _mask(*shape[1:])


def _encode(mask: torch.Tensor, channels: int) -> torch.Tensor:
    """An image whose pixel value is a function of the mask id at that pixel."""
    return (mask.float() / 12.0 * 1.6 - 0.8).expand(channels, *mask.shape).clone()


def _uniform_3x3(mask: torch.Tensor) -> torch.Tensor:
    """For each interior pixel: is its 3x3 neighbourhood a single label?"""
    labels = mask[None, None].double()
    high = torch.nn.functional.max_pool2d(labels, 3, 1)
    low = -torch.nn.functional.max_pool2d(-labels, 3, 1)
    return (high == low)[0, 0]


def _run(aug: ConventionalAugment, image, mask, seed: int):
    return aug(image.clone(), mask.clone(), np.random.default_rng(seed))


@pytest.mark.parametrize("shape", SHAPES)
def test_same_seed_is_bitwise_identical_and_ignores_torch_rng(shape):
    image, mask = _pair(shape)
    aug = ConventionalAugment(p_vanilla=1.0, p_op=1.0)
    torch.manual_seed(0)
    first = _run(aug, image, mask, seed=5)
    torch.manual_seed(123)
    torch.rand(10)
    second = _run(aug, image, mask, seed=5)
    assert torch.equal(first[0], second[0])
    assert torch.equal(first[1], second[1])


@pytest.mark.parametrize("shape", SHAPES)
def test_different_seeds_give_different_outputs(shape):
    image, mask = _pair(shape)
    aug = ConventionalAugment(p_vanilla=1.0, p_op=1.0)
    out_a, _ = _run(aug, image, mask, seed=1)
    out_b, _ = _run(aug, image, mask, seed=2)
    assert not torch.equal(out_a, out_b)


def test_op_choice_and_order_are_random():
    aug = ConventionalAugment(p_vanilla=1.0, p_op=1.0)
    orders = {tuple(aug.sample_ops(np.random.default_rng(seed))) for seed in range(5)}
    assert all(sorted(order) == sorted(OP_NAMES) for order in orders)
    assert len(orders) > 1


def test_application_and_choice_rates_follow_probabilities():
    aug = ConventionalAugment()  # p_vanilla = p_op = 0.5, as in the paper
    runs = [aug.sample_ops(np.random.default_rng(seed)) for seed in range(400)]
    applied = [ops for ops in runs if ops]
    assert 0.4 < len(applied) / len(runs) < 0.6
    counts = [sum(name in ops for ops in applied) / len(applied) for name in OP_NAMES]
    assert all(0.35 < rate < 0.65 for rate in counts)


@pytest.mark.parametrize("shape", SHAPES)
def test_p_vanilla_zero_leaves_pair_unchanged(shape):
    image, mask = _pair(shape)
    aug = ConventionalAugment(p_vanilla=0.0, p_op=1.0)
    for seed in range(5):
        out_image, out_mask = _run(aug, image, mask, seed)
        assert torch.equal(out_image, image)
        assert torch.equal(out_mask, mask)


@pytest.mark.parametrize("shape", SHAPES)
def test_flips_move_mask_exactly_like_image(shape):
    mask = _mask(*shape[1:])
    image = _encode(mask, shape[0])
    aug = ConventionalAugment(p_vanilla=1.0, ops=("hflip", "vflip"))
    changed = 0
    for seed in range(8):
        out_image, out_mask = _run(aug, image, mask, seed)
        assert torch.equal(out_image, _encode(out_mask, shape[0]))
        changed += not torch.equal(out_mask, mask)
    assert changed > 0


@pytest.mark.parametrize("shape", SHAPES)
def test_crop_keeps_image_and_mask_aligned(shape):
    """Away from label edges the bilinear image must still encode the nearest-resized mask."""
    mask = _mask(*shape[1:])
    image = _encode(mask, shape[0])
    aug = ConventionalAugment(p_vanilla=1.0, p_op=1.0, ops=("crop",), crop_scale=(0.6, 0.8))
    for seed in range(5):
        out_image, out_mask = _run(aug, image, mask, seed)
        assert out_image.shape == image.shape and out_mask.shape == mask.shape
        assert not torch.equal(out_mask, mask)
        uniform = _uniform_3x3(out_mask)
        interior = out_image[:, 1:-1, 1:-1][:, uniform]
        expected = _encode(out_mask, shape[0])[:, 1:-1, 1:-1][:, uniform]
        assert uniform.sum() > 0.5 * uniform.numel()
        torch.testing.assert_close(interior, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_mask_ids_are_never_interpolated(shape):
    image, mask = _pair(shape)
    aug = ConventionalAugment(p_vanilla=1.0, crop_scale=(0.6, 0.7))
    input_ids = set(mask.unique().tolist())
    for seed in range(20):
        _, out_mask = _run(aug, image, mask, seed)
        assert out_mask.dtype == torch.int64
        assert out_mask.shape == mask.shape
        assert set(out_mask.unique().tolist()) <= input_ids


@pytest.mark.parametrize("shape", SHAPES)
def test_photometric_ops_leave_mask_untouched(shape):
    image, mask = _pair(shape)
    aug = ConventionalAugment(p_vanilla=1.0, p_op=1.0, ops=PHOTOMETRIC_OPS)
    out_image, out_mask = _run(aug, image, mask, seed=3)
    assert torch.equal(out_mask, mask)
    assert not torch.equal(out_image, image)


@pytest.mark.parametrize("shape", [*SHAPES, (4, 24, 24)])
@pytest.mark.parametrize("p_op", [0.5, 1.0])
def test_output_image_is_finite_float32_in_range(shape, p_op):
    image, mask = _pair(shape)
    image[0, 0, 0], image[-1, -1, -1] = -1.0, 1.0
    aug = ConventionalAugment(p_vanilla=1.0, p_op=p_op, noise_std=(0.2, 0.3))
    for seed in range(6):
        out_image, _ = _run(aug, image, mask, seed)
        assert out_image.dtype == torch.float32 and out_image.shape == image.shape
        assert torch.isfinite(out_image).all()
        assert out_image.min() >= -1.0 and out_image.max() <= 1.0


@pytest.mark.parametrize("channels", [1, 4])
def test_saturation_is_noop_unless_rgb(channels):
    image, mask = _pair((channels, 32, 32))
    aug = ConventionalAugment(p_vanilla=1.0, p_op=1.0, ops=("saturation",))
    out_image, _ = _run(aug, image, mask, seed=0)
    assert torch.equal(out_image, image)


def test_saturation_changes_rgb():
    image, mask = _pair((3, 32, 32))
    aug = ConventionalAugment(p_vanilla=1.0, p_op=1.0, ops=("saturation",))
    out_image, _ = _run(aug, image, mask, seed=0)
    assert not torch.equal(out_image, image)


@pytest.mark.parametrize("name", OP_NAMES)
def test_each_op_alone_changes_the_pair(name):
    image, mask = _pair((3, 32, 32))
    aug = ConventionalAugment(p_vanilla=1.0, p_op=1.0, ops=(name,), crop_scale=(0.6, 0.8))
    assert aug.sample_ops(np.random.default_rng(0)) == [name]
    out_image, out_mask = _run(aug, image, mask, seed=0)
    assert out_image.shape == image.shape and out_image.dtype == torch.float32
    assert out_mask.dtype == torch.int64
    assert not torch.equal(out_image, image)
    assert torch.equal(out_mask, mask) == (name not in GEOMETRIC_OPS)


def test_unknown_op_raises_input_error_listing_valid_names():
    with pytest.raises(InputError, match="rotate.*equalize.*blur"):
        ConventionalAugment(ops=("hflip", "rotate"))


BAD_CONFIGS = [
    {"p_vanilla": 1.5},
    {"p_op": -0.1},
    {"crop_scale": (0.0, 1.0)},
    {"crop_scale": (0.9, 1.2)},
    {"blur_sigma": (0.0, 1.0)},
]


@pytest.mark.parametrize("kwargs", BAD_CONFIGS)
def test_invalid_config_raises_input_error(kwargs):
    with pytest.raises(InputError):
        ConventionalAugment(**kwargs)


def test_a_draw_is_plain_data_that_replays_exactly():
    """Issue 28: parameters are drawn apart from their application, as DiffAugment's policy."""
    aug = ConventionalAugment(p_vanilla=1.0, p_op=1.0)
    image, mask = torch.rand(3, 33, 41) * 2 - 1, torch.randint(0, 4, (33, 41))
    steps = aug.draw(np.random.default_rng(5), (33, 41))
    assert sorted(s.op for s in steps) == sorted(OP_NAMES)
    logged = json.loads(json.dumps([{"op": s.op, "params": s.params} for s in steps]))
    replayed = aug.apply(image, mask, [AugmentStep(s["op"], s["params"]) for s in logged])
    called = aug(image, mask, np.random.default_rng(5))
    assert torch.equal(replayed[0], called[0]) and torch.equal(replayed[1], called[1])
    crop = next(s for s in steps if s.op == "crop").params
    assert 0.6 * 33 - 1 <= crop["height"] <= 33 and crop["top"] + crop["height"] <= 33
