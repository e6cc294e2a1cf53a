"""``cganseg generate``: K distinct images per mask, at the mask's size, safe folders, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tests.helpers import make_dataset, tiny_cgan_config, write_image

from cganseg.cli import main
from cganseg.data.folders import find_pairs
from cganseg.data.io import read_array, read_labels
from cganseg.inference.generate import load_generator
from cganseg.synth.pairs import generate_pairs
from cganseg.training.cgan_trainer import train_cgan


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A cGAN-Seg run of two steps on tiny data: its generator is untrained but real."""
    tmp = tmp_path_factory.mktemp("gen")
    data = make_dataset(tmp / "data", n=4, size=(32, 40))
    cfg = tiny_cgan_config(data, tmp / "run", iterations=2, val_fraction=0.25,
                           instances="watershed")  # 3-class masks for the generator
    train_cgan(cfg, progress=False)
    return tmp / "run"


@pytest.fixture
def masks_only(tmp_path):
    """A folder that holds only masks (no images), of two sizes."""
    folder = tmp_path / "masks_only"
    for name, shape in (("a", (30, 44)), ("b", (50, 36))):
        labels = np.zeros(shape, np.uint16)
        labels[3:12, 4:15], labels[15:25, 20:30] = 1, 2
        write_image(folder / f"{name}.png", labels)
    return folder


def test_k_distinct_images_per_mask_at_its_size(run_dir, masks_only, tmp_path):
    out = tmp_path / "pairs"
    pairs = generate_pairs(
        run_dir, masks_only, out, per_mask=3, seed=4, device="cpu", progress=False
    )
    assert len(pairs) == 6
    found = find_pairs(out)  # our own layout: train-seg --extra reads it
    assert [p.name for p in found] == ["a_s0", "a_s1", "a_s2", "b_s0", "b_s1", "b_s2"]
    for stem, shape in (("a", (30, 44)), ("b", (50, 36))):
        images = [read_array(out / "images" / f"{stem}_s{k}.tif") for k in range(3)]
        assert all(im.shape == shape and im.dtype == np.uint16 for im in images)
        assert not np.array_equal(images[0], images[1]) and not np.array_equal(images[1], images[2])
        mask = read_labels(out / "masks" / f"{stem}_s0.tif")
        assert np.array_equal(mask, read_labels(masks_only / f"{stem}.png"))
    assert sorted(p.name for p in masks_only.iterdir()) == ["a.png", "b.png"]  # input untouched


def test_cellpose_names_png_and_resume(run_dir, masks_only, tmp_path, capsys):
    out = tmp_path / "cp"
    argv = [
        "generate",
        str(run_dir),
        str(masks_only),
        str(out),
        "--cellpose-names",
        "--image-format",
        "png",
        "--device",
        "cpu",
        "--quiet",
    ]
    assert main(argv) == 0
    assert sorted(p.name for p in out.glob("*.*") if p.suffix != ".json") == [
        "a_s0_img.png",
        "a_s0_masks.tif",
        "b_s0_img.png",
        "b_s0_masks.tif",
    ]
    assert read_array(out / "a_s0_img.png").dtype == np.uint8
    before = read_array(out / "b_s0_img.png")
    (out / "b_s0_img.png").unlink()  # as if interrupted
    mtime = (out / "a_s0_img.png").stat().st_mtime_ns
    assert main(argv) == 0
    assert np.array_equal(read_array(out / "b_s0_img.png"), before)
    assert (out / "a_s0_img.png").stat().st_mtime_ns == mtime
    assert json.loads((out / "generate.json").read_text())["cellpose_names"] is True
    assert main([*argv, "--seed", "1"]) == 2
    assert "other settings (seed)" in capsys.readouterr().err


def test_refuses_to_write_into_the_input(run_dir, masks_only, tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n=2)
    before = sorted(p.name for p in (data / "masks").iterdir())
    assert main(["generate", str(run_dir), str(data), str(data), "--quiet"]) == 2
    assert main(["generate", str(run_dir), str(masks_only), str(masks_only / "x"), "--quiet"]) == 2
    assert (
        main(
            [
                "generate",
                str(run_dir),
                str(masks_only),
                str(tmp_path / "o"),
                "--per-mask",
                "0",
                "--quiet",
            ]
        )
        == 2
    )
    assert sorted(p.name for p in (data / "masks").iterdir()) == before
    assert not (masks_only / "x").exists() and not (tmp_path / "o").exists()
    assert capsys.readouterr().err.count("error:") == 3


def test_large_masks_are_generated_in_tiles(run_dir):
    gen = load_generator(run_dir, "cpu")
    labels = np.zeros((70, 90), np.int32)
    labels[10:30, 10:40], labels[40:65, 50:85] = 1, 2
    tiled = gen.generate(labels, seed=3, tile_size=32)
    assert tiled.shape == (1, 70, 90) and np.isfinite(tiled).all() and np.abs(tiled).max() <= 1
    assert np.array_equal(tiled, gen.generate(labels, seed=3, tile_size=32))
    seen = []
    forward = gen.model.forward

    def spy(mask, z=None, **kw):
        seen.append((tuple(mask.shape), z.clone()))
        return forward(mask, z, **kw)

    gen.model.forward = spy
    gen.generate(labels, seed=3, tile_size=32)
    assert len(seen) > 4 and all(shape == (1, 3, 32, 32) for shape, _ in seen)
    assert all(torch.equal(z, seen[0][1]) for _, z in seen)  # one style for the whole image
    seen.clear()
    gen.generate(labels, seed=3, tile_size=1024)
    assert [shape for shape, _ in seen] == [(1, 3, 80, 96)]  # small enough: one padded pass
