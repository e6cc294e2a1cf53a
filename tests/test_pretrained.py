"""Shipped starting models (issue 29): found by name wherever a model is named, checked against
their card's SHA-256, stored in half precision and segmenting as the run they came from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cganseg import pretrained
from cganseg.checkpoint import load_checkpoint, resolve_checkpoint
from cganseg.cli import main
from cganseg.data.io import read_labels
from cganseg.inference.segment import load_segmenter


def test_a_shipped_name_resolves_to_its_checked_weights(shipped):
    assert resolve_checkpoint("tinyship") == shipped
    state = load_checkpoint(shipped)["model_state"]
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    assert "optimizer" not in " ".join(load_checkpoint(shipped))
    assert list(pretrained.cards()) == ["tinyship"]
    assert "tinyship: a test model" in pretrained.describe(
        "tinyship", pretrained.cards()["tinyship"]
    )


def test_a_path_on_disk_wins_over_a_shipped_name(shipped, seg_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(seg_run, tmp_path / "tinyship")
    assert resolve_checkpoint("tinyship") == Path("tinyship") / "best.pt"


def test_segment_by_shipped_name_matches_the_run_it_came_from(shipped, seg_run, tiny_dataset,
                                                              tmp_path):  # fmt: skip
    images = sorted((tiny_dataset / "images").iterdir())
    folder = str(tiny_dataset / "images")
    assert main(["segment", "tinyship", folder, "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert main(["segment", str(seg_run), folder, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    for image in images:
        a = read_labels(next((tmp_path / "a").glob(f"{image.stem}*.tif")))
        b = read_labels(next((tmp_path / "b").glob(f"{image.stem}*.tif")))
        # half-precision weights: the same cells up to a few pixels at their borders
        assert np.mean((a > 0) == (b > 0)) > 0.98
    # and the network itself: outputs equal to half precision's rounding, not merely similar
    ours, theirs = load_segmenter("tinyship", "cpu"), load_segmenter(seg_run, "cpu")
    assert ours.post == theirs.post and ours.channels == theirs.channels
    x = torch.rand(
        1, ours.model.config["in_channels"], 32, 32, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        out, ref = ours.model(x), theirs.model(x)
    assert torch.allclose(out, ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item())


def test_a_damaged_shipped_file_is_refused_in_one_line(shipped, tiny_dataset, tmp_path, capsys):
    shipped.write_bytes(shipped.read_bytes()[:-10] + b"0123456789")
    image = str(next((tiny_dataset / "images").iterdir()))
    rc = main(["segment", "tinyship", image, "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "does not match its card's SHA-256" in err[0], err
    assert not (tmp_path / "o").exists()


def test_an_unknown_name_is_not_found(shipped):
    with pytest.raises(Exception, match="checkpoint not found"):
        resolve_checkpoint("no_such_model")


def test_models_lists_the_shipped_cards(shipped, capsys):
    assert main(["models"]) == 0
    assert "tinyship: a test model" in capsys.readouterr().out
    assert main(["models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tinyship"]["license"] == "CC0-1.0"
