"""Shared fixtures (the helpers they use are in tests/helpers.py)."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import pytest
import torch
from tests.helpers import TinyFeatures, make_dataset, tiny_cgan_config, tiny_seg_config

from cganseg import pretrained
from cganseg.checkpoint import load_checkpoint, save_checkpoint, shipped_payload
from cganseg.training.cgan_trainer import train_cgan
from cganseg.training.seg_trainer import train_segmenter


@pytest.fixture
def dataset_factory():
    """The :func:`make_dataset` function, for tests that need a custom data set."""
    return make_dataset


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """Six 40x52 uint8 PNG pairs in the folders layout."""
    return make_dataset(tmp_path / "data")


def _tiny_run(tmp_path_factory, kind: str) -> Path:
    root = tmp_path_factory.mktemp(kind)
    run = root / "run"
    make, train = (tiny_seg_config, train_segmenter) if kind == "seg" else (
        tiny_cgan_config, train_cgan)  # fmt: skip
    # the class output for both kinds: a 2-step run's watershed still finds cells, a flow run's
    # flows do not yet (flow runs are tested with test_flows.py's longer flow_run)
    train(make(make_dataset(root / "data"), run, iterations=2, instances="watershed"),
          progress=False)  # fmt: skip
    return run


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory) -> Path:
    """A tiny trained conventional run folder, shared by a module's tests."""
    return _tiny_run(tmp_path_factory, "seg")


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory) -> Path:
    """A tiny trained cGAN-Seg run folder, shared by a module's tests."""
    return _tiny_run(tmp_path_factory, "gan")


@pytest.fixture
def tiny_fid_network(tmp_path, monkeypatch) -> None:
    """A tiny scripted feature network as the FID network (``$CGANSEG_FID_WEIGHTS``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(TinyFeatures()).save(str(tmp_path / "tiny.pt"))
    monkeypatch.setenv("CGANSEG_FID_WEIGHTS", str(tmp_path / "tiny.pt"))


def _ship(seg_run: Path, folder: Path, name: str = "tinyship") -> Path:
    """Package ``seg_run``'s best.pt as a shipped model in ``folder``, as the script does."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{name}.pt"
    save_checkpoint(weights, shipped_payload(load_checkpoint(seg_run / "best.pt")))
    card = {"name": name, "title": "a test model", "file": weights.name,
            "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(), "license": "CC0-1.0",
            "training_data": [{"set": "tiny", "train": 4}], "scores": {}}  # fmt: skip
    (folder / f"{name}.json").write_text(json.dumps(card))
    return weights


@pytest.fixture
def shipped(seg_run, tmp_path, monkeypatch) -> Path:
    """seg_run's best.pt shipped as the model ``tinyship`` in a folder of this test's own."""
    monkeypatch.setattr(pretrained, "FOLDER", tmp_path / "shipped")
    return _ship(seg_run, tmp_path / "shipped")
