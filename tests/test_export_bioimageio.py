"""cganseg export --format bioimageio (issue 19, item 1): the package passes bioimageio.core's
model test, and bioimageio.core's prediction on a raw image, its pre-processing included, equals
our network's output (class probabilities, or flows and cell probability) within 1e-4."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
import yaml

from cganseg.checkpoint import SEGMENTER, load_network
from cganseg.cli import main
from cganseg.data.normalize import normalize_percentile
from cganseg.export import bioimageio as export
from cganseg.models.registry import build_segmenter

core = pytest.importorskip(
    "bioimageio.core", reason="the bioimageio extra is not installed (make test installs it)"
)


def _ours(run, raw: np.ndarray) -> np.ndarray:
    """Our network's output for a raw (C, H, W) image: normalised as in training."""
    net, payload = load_network(run, SEGMENTER, lambda c: build_segmenter(**c))
    with torch.no_grad():
        out = net(torch.from_numpy(normalize_percentile(raw))[None])
    if payload["postprocessing"]["instances"] == "flows":
        return torch.cat([out[:, :2], torch.sigmoid(out[:, 2:])], 1).numpy()
    return torch.softmax(out, 1).numpy()


def _raw(shape=(1, 48, 80)) -> np.ndarray:
    """A raw 16-bit-like image of another size than the package's test image."""
    rng = np.random.default_rng(7)
    return (rng.gamma(2.0, 400.0, shape) + 900).round().astype(np.float32)


def _bioimageio_prediction(package, raw: np.ndarray, output: str) -> np.ndarray:
    model = core.load_description(package)
    sample = core.predict(model=model, inputs={"raw": raw[None]})
    return sample.members[output].data.values


def _rdf(package) -> dict:
    with zipfile.ZipFile(package) as archive:
        return yaml.safe_load(archive.read("rdf.yaml"))


def test_train_seg_run_exports_a_package_that_bioimageio_core_runs_as_we_do(seg_run, tmp_path,
                                                                              capsys):  # fmt: skip
    package = tmp_path / "model.zip"
    assert main(["export", str(seg_run), "--out", str(package), "--author", "A. Biologist"]) == 0
    assert "model test passed" in capsys.readouterr().out
    assert core.test_model(package).status == "passed"  # again, on the zip as a user gets it
    raw = _raw()
    got = _bioimageio_prediction(package, raw, "probabilities")
    ours = _ours(seg_run, raw)
    assert got.shape == ours.shape == (1, 3, 48, 80)
    assert np.abs(got - ours).max() < 1e-4
    rdf = _rdf(package)
    assert rdf["format_version"].startswith("0.5") and rdf["type"] == "model"
    assert [a["name"] for a in rdf["authors"]] == ["A. Biologist"]
    assert rdf["cite"][0]["doi"] == export.PAPER_DOI
    assert rdf["license"] == "CC-BY-4.0" and "cganseg" in rdf["tags"]
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript"}
    steps = [p["id"] for p in rdf["inputs"][0]["preprocessing"] if p["id"] != "ensure_dtype"]
    assert steps == ["scale_range", "scale_linear", "clip"]
    assert rdf["config"]["cganseg"]["instances"] == "watershed"
    with zipfile.ZipFile(package) as archive:
        names = set(archive.namelist())
        doc = archive.read(rdf["documentation"]["source"]).decode()
    assert {rdf["covers"][0]["source"], "test_input.npy", "test_output.npy"} <= names
    assert "watershed" in doc and "percentiles" in doc


def test_a_cgan_run_exports_with_a_given_sample(gan_run, tmp_path):
    sample = gan_run.parent / "data" / "images" / "img01.png"
    package = tmp_path / "gan.zip"
    export.export_bioimageio(gan_run, package, sample=sample)
    raw = _raw((1, 64, 32))
    got = _bioimageio_prediction(package, raw, "probabilities")
    assert np.abs(got - _ours(gan_run, raw)).max() < 1e-4
    assert "img01.png" in zipfile.ZipFile(package).read("README.md").decode()


def test_a_flow_run_exports_flows_and_cell_probability(tmp_path_factory, tmp_path):
    from tests.helpers import make_dataset, tiny_seg_config

    from cganseg.training.seg_trainer import train_segmenter

    root = tmp_path_factory.mktemp("flows")
    run = root / "run"
    train_segmenter(tiny_seg_config(make_dataset(root / "data"), run, instances="flows",
                                    iterations=2, val_every=2), progress=False)  # fmt: skip
    package = tmp_path / "flows.zip"
    export.export_bioimageio(run, package)
    raw = _raw()
    got = _bioimageio_prediction(package, raw, "flows")
    assert np.abs(got - _ours(run, raw)).max() < 1e-4
    assert 0 <= got[:, 2].min() and got[:, 2].max() <= 1


def test_a_shipped_model_exports_with_its_license_and_bundled_sample(tmp_path):
    """`cganseg export nuclei`: no run folder to find a sample in, a license of its own."""
    package = tmp_path / "nuclei.zip"
    assert main(["export", "nuclei", "--out", str(package), "--author", "cganseg"]) == 0
    rdf = _rdf(package)
    assert rdf["license"] == "CC0-1.0"
    # issue 33: the rdf itself says the cell size the network expects (not only the README)
    assert "expects cells 17.0 px across" in rdf["description"]
    assert rdf["config"]["cganseg"]["cell_diameter"] == 17.0
    assert "245b995878370ef4.png" in zipfile.ZipFile(package).read("README.md").decode()


def test_export_replaces_its_own_package_and_nothing_else(seg_run, tmp_path, capsys):
    package = tmp_path / "model.zip"
    argv = ["export", str(seg_run), "--out", str(package), "--no-validate"]
    assert main(argv) == 0 and main(argv) == 0
    foreign = tmp_path / "other.zip"
    foreign.write_bytes(b"not ours")
    assert main(["export", str(seg_run), "--out", str(foreign), "--no-validate"]) == 2
    assert "not written by this command" in capsys.readouterr().err
    assert foreign.read_bytes() == b"not ours"
    assert main(["export", str(seg_run), "--out", str(tmp_path / "m.yaml")]) == 2
    assert ".zip" in capsys.readouterr().err


def test_a_sample_that_is_too_small_is_refused_in_one_line(seg_run, tmp_path, capsys):
    import imageio.v3 as iio

    small = tmp_path / "small.png"
    iio.imwrite(small, np.zeros((20, 20), np.uint8))
    out = tmp_path / "m.zip"
    assert main(["export", str(seg_run), "--out", str(out), "--sample", str(small)]) == 2
    err = capsys.readouterr().err
    assert "small.png" in err and "at least" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_without_the_extra_export_says_how_to_install_it(seg_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(export, "available", lambda: False)
    out = tmp_path / "m.zip"
    assert main(["export", str(seg_run), "--out", str(out)]) == 2
    assert "pip install 'cganseg[bioimageio]'" in capsys.readouterr().err
    assert not out.exists()
