"""Reliability, round three (issue 27): bounded inputs, no write through links, every value
checked at every door.

Each test here is a case from the issue that the code before it got wrong: unbounded work from a
small input, writes through a symbolic link, two inputs writing one output, a value refused at
one door and taken at another, state files that are not what they seem, signals ignored in the
last phase, label ids above 2^32, and a few smaller ones. A user error exits 2 with one line that
names the file and the problem, and nothing is lost.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from tests.helpers import make_dataset, synthetic_pair, tiny_seg_config
from tests.helpers import write_image as _write

import cganseg
from cganseg import checks
from cganseg.checkpoint import VERSION, load_checkpoint, save_checkpoint, segmenter_payload
from cganseg.cli import main
from cganseg.data.io import PixelSize, read_labels, read_pixel_size
from cganseg.data.label_formats import write_ome_tiff
from cganseg.errors import InputError
from cganseg.inference.segment import Segmenter, load_segmenter
from cganseg.instances.postprocessing import RULES, PostProcessing
from cganseg.models.registry import build_segmenter
from cganseg.options import read_yaml_mapping
from cganseg.runtime.atomic import owned_folder, write_text

SRC = Path(__file__).resolve().parents[1]
TINY = ["--device", "cpu", "--quiet", "--crop", "32", "--width", "4", "--batch-size", "2",
        "--val-every", "2", "--workers", "0", "--val-fraction", "0.25", "--patience", "0",
        "--iterations", "2"]  # fmt: skip


def _refused(rc: int, err: str, *words: str) -> str:
    assert rc == 2, err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _model_file(path: Path, version: int = VERSION, **settings) -> Path:
    """A checkpoint of an untrained width-4 UNet with the given stored settings: those of the
    post-processing in its entry (version 4) or as entries of their own (version 3)."""
    model = build_segmenter("unet", 1, 3, 4)
    payload = segmenter_payload(model, None, PostProcessing("watershed"))
    post = payload.pop("postprocessing")
    post.update({k: v for k, v in settings.items() if k in RULES})
    if version == VERSION:
        payload["postprocessing"] = post
    else:
        payload.update(post, version=version)
    payload.update({k: v for k, v in settings.items() if k not in RULES})
    save_checkpoint(path, payload)
    return path


def _images(folder: Path, n: int = 2) -> Path:
    for i in range(n):
        _write(folder / f"im{i}.png", synthetic_pair((48, 48), seed=i)[0])
    return folder


# ------------------------------------------------------------- 1. unbounded work, small input
def _alias_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines)


@pytest.mark.parametrize("where", ["channels", "extra"])
def test_a_config_of_nested_aliases_is_refused_at_once(tmp_path, where):
    """A 1 KB "billion laughs" grew memory without limit and ignored SIGTERM."""
    config = tmp_path / "bomb.yaml"
    config.write_text(_alias_bomb() + f"\n{where}: *a8\n")
    assert config.stat().st_size < 1200
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(SRC / "src")])}
    proc = subprocess.run(
        [sys.executable, "-m", "cganseg", "train-seg", "--config", str(config), "--data",
         str(tmp_path), "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    _refused(proc.returncode, proc.stderr, "bomb.yaml", "aliases")
    assert not (tmp_path / "run").exists()


def test_every_yaml_read_refuses_aliases_and_oversized_files(tmp_path):
    small = tmp_path / "c.yaml"
    small.write_text("seed: &s 3\nn: *s\n")
    with pytest.raises(InputError, match="aliases"):
        read_yaml_mapping(small)
    small.write_text("x: " + "y" * (2 << 20))
    with pytest.raises(InputError, match="larger than"):
        read_yaml_mapping(small)
    small.write_bytes(b"data: \xff\xfe\n")
    with pytest.raises(InputError, match="c.yaml: cannot read config"):
        read_yaml_mapping(small)


def test_cells_of_one_pixel_with_cell_diameter_are_refused_before_training(tmp_path, capsys):
    """Cells of 1-2 px with --cell-diameter 30 enlarged every image ~22x without a word."""
    data = make_dataset(tmp_path / "data", n=6)
    specks = np.zeros((40, 52), np.uint16)
    specks[::6, ::6] = np.arange(1, specks[::6, ::6].size + 1).reshape(specks[::6, ::6].shape)
    for name in ("img00", "img01", "img02", "img03", "img04", "img05"):
        _write(data / "masks" / f"{name}.png", specks)
    rc = main(["train-seg", "--data", str(data), "--out", str(tmp_path / "run"), *TINY,
               "--cell-diameter", "30"])  # fmt: skip
    _refused(rc, capsys.readouterr().err, "training image img0", "1.13 px", "enlarge images",
             "limited to 1/8..8x")  # fmt: skip
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("value", ["1e9", "1e-6", "0.5"])
def test_cell_diameter_out_of_range_is_refused_on_the_command_line(tmp_path, capsys, value):
    """The option's rule refuses it (issue 28: one rule, checked once by the options class),
    in one line naming the flag, before the run folder exists."""
    rc = main(["train-seg", "--data", str(make_dataset(tmp_path / "d")), "--out",
               str(tmp_path / "run"), *TINY, "--cell-diameter", value])  # fmt: skip
    _refused(rc, capsys.readouterr().err, "cell_diameter must be a number in [4, 500]")
    assert not (tmp_path / "run").exists()


def test_a_diameter_that_would_enlarge_images_60x_is_refused(tmp_path, capsys):
    model = _model_file(tmp_path / "m.pt", cell_diameter=30.0, train_diameter=20.0)
    images = _images(tmp_path / "images")
    rc = main(["segment", str(model), str(images), "--out", str(tmp_path / "out"),
               "--diameter", "0.5"])  # fmt: skip
    _refused(rc, capsys.readouterr().err, "cells 0.5 px across", "enlarge images 60x")
    assert not (tmp_path / "out").exists()
    seg = load_segmenter(model, "cpu")
    assert seg.factor(20.0) == 1.5 and seg.factor(3.75) == 8.0
    with pytest.raises(InputError, match="shrink images"):
        seg.factor(1e6)


def test_diameter_auto_is_kept_within_the_rescaling_range_with_a_warning(tmp_path):
    seg = load_segmenter(_model_file(tmp_path / "m.pt", cell_diameter=30.0), "cpu")
    with pytest.warns(UserWarning, match="measured cells 0.5 px across; used 3.75 px"):
        assert seg._bounded(0.5) == 3.75
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert seg._bounded(24.0) == 24.0


# ------------------------------------------------------------- 2. no write through a link
def test_segment_does_not_write_through_a_symlinked_overlays_folder(seg_run, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    out = tmp_path / "out"
    assert main(["segment", str(seg_run), str(_images(tmp_path / "images")), "--out", str(out),
                 "--quiet"]) == 0  # fmt: skip
    (out / "overlays").symlink_to(outside, target_is_directory=True)
    rc = main(["segment", str(seg_run), str(tmp_path / "images"), "--out", str(out),
               "--overlays", "--quiet"])  # fmt: skip
    _refused(rc, capsys.readouterr().err, "overlays", "symbolic link", str(out))
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("sub", ["test", "seg_pretrain"])
def test_a_run_folder_with_a_symlinked_subfolder_is_refused_before_training(tmp_path, capsys,
                                                                           sub):  # fmt: skip
    outside = tmp_path / "outside"
    outside.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    (run / sub).symlink_to(outside, target_is_directory=True)
    rc = main(["train-seg", "--data", str(make_dataset(tmp_path / "d")), "--out", str(run),
               *TINY, "--test-fraction", "0.2"])  # fmt: skip
    _refused(rc, capsys.readouterr().err, f"run/{sub}", "symbolic link")
    assert not list(outside.iterdir()) and not (run / "last.pt").exists()


def test_a_link_made_inside_an_owned_folder_later_is_refused_at_the_write(tmp_path):
    outside, out = tmp_path / "outside", tmp_path / "out"
    outside.mkdir()
    out.mkdir()
    with owned_folder(out):
        write_text(out / "a" / "fine.txt", "ok")  # folders cganseg makes are fine
        (out / "eval").symlink_to(outside, target_is_directory=True)
        with pytest.raises(InputError, match="eval: is a symbolic link inside the output"):
            write_text(out / "eval" / "metrics.json", "{}")
        with pytest.raises(InputError, match="symbolic link"):
            write_text(out / "eval" / "deeper" / "x.csv", "")
    assert not list(outside.iterdir())
    write_text(tmp_path / "elsewhere" / "x.txt", "outside any owned folder: no rule")


# ------------------------------------------------------------- 3. two inputs, one output name
@pytest.mark.parametrize(("names", "formats", "clash"), [
    (("a.png", "a.ome.tif"), ["tif", "ome-tiff"], "a.ome.tif"),
    (("a.png", "a.tif"), ["seg.npy"], "a_seg.npy"),
])  # fmt: skip
def test_two_inputs_that_would_write_one_output_are_refused(seg_run, tmp_path, capsys, names,
                                                            formats, clash):  # fmt: skip
    images = tmp_path / "images"
    for name in names:
        _write(images / name, synthetic_pair((48, 48))[0])
    rc = main(["segment", str(seg_run), str(images), "--out", str(tmp_path / "out"),
               "--save-format", *formats])  # fmt: skip
    _refused(rc, capsys.readouterr().err, names[0], names[1], f"both write {clash}")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------- 4. one validator, every door
@pytest.mark.parametrize(("option", "value", "words"), [
    ("--cellprob-threshold", "nan", "must be a finite number, got nan"),
    ("--cellprob-threshold", "-inf", "must be a finite number, got -inf"),
    ("--flow-threshold", "nan", "must be a finite number, got nan"),
    ("--flow-threshold", "-1", "must be a number in [0, 1000000], got -1"),
    ("--min-size", "-5", "must be an integer in [0, 100000000], got -5"),
    ("--tile-size", "8", "must be an integer in [16, 8192]"),
    ("--diameter", "big", "must be a number of pixels > 0 or auto"),
    ("--diameter", "inf", "must be a finite number, got inf"),
])  # fmt: skip
def test_segment_options_are_checked_by_their_rule(seg_run, tmp_path, capsys, option, value,
                                                   words):  # fmt: skip
    rc = main(["segment", str(seg_run), str(tmp_path), "--out", str(tmp_path / "o"),
               f"{option}={value}"])  # fmt: skip
    _refused(rc, capsys.readouterr().err, f"{option} {words}")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("diameter", [-5, math.inf, math.nan, "big", 0, True, 1e6])
def test_the_notebook_api_refuses_what_the_command_line_refuses(tmp_path, diameter):
    seg = load_segmenter(_model_file(tmp_path / "m.pt", cell_diameter=30.0,
                                     train_diameter=20.0), "cpu")  # fmt: skip
    image = synthetic_pair((48, 48))[0]
    with pytest.raises(InputError, match="diameter must be|shrink images"):
        cganseg.segment(image, seg, diameter=diameter)


def test_a_segmenter_is_frozen_and_takes_the_diameter_per_call(tmp_path):
    """The notebook API changed the diameter of a cached model that napari's threads share."""
    seg = load_segmenter(_model_file(tmp_path / "m.pt", cell_diameter=30.0,
                                     train_diameter=20.0), "cpu")  # fmt: skip
    labels = cganseg.segment(synthetic_pair((48, 48))[0], seg, diameter=25)
    assert labels.shape == (48, 48)
    with pytest.raises(dataclasses.FrozenInstanceError):
        seg.post = seg.post.replace(min_size=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        seg.post.min_size = 3


@pytest.mark.parametrize(("entry", "value", "words"), [
    ("min_size", "15", "min_size must be an integer"),
    ("cellprob_threshold", [0.0], "cellprob_threshold must be a number"),
    ("flow_threshold", float("nan"), "flow_threshold must be a number"),
    ("instances", "stardist", "instances must be one of"),
    ("cell_diameter", -3.0, "cell_diameter must be a number in [4, 500]"),
    ("train_diameter", 0.0, "train_diameter must be a number in (0"),
    ("channels", "rgb", "channels must be gray or a list"),
    ("model_config", {"name": "unet", "in_channels": 1, "n_classes": 3, "width": 4, "depth": 9},
     "unknown entries: depth"),
    ("model_config", {"name": "unet", "in_channels": 1, "n_classes": 3, "width": 200000},
     "segmenter width must be an integer in [1, 1024]"),
    ("model_config", [1, 2], "segmenter config must be a mapping"),
    ("postprocessing", [1], "postprocessing must be a mapping"),
])  # fmt: skip
@pytest.mark.parametrize("version", [3, VERSION])
def test_a_checkpoint_whose_settings_fail_their_rule_is_not_a_usable_model(
    tmp_path, capsys, entry, value, words, version
):
    if entry == "postprocessing" and version != VERSION:
        pytest.skip("version 3 had no postprocessing entry")
    model = _model_file(tmp_path / "m.pt", version, **{entry: value})
    rc = main(["segment", str(model), str(_images(tmp_path / "images")), "--out",
               str(tmp_path / "out")])  # fmt: skip
    _refused(rc, capsys.readouterr().err, "m.pt: not a usable cganseg model", words)
    with pytest.raises(InputError, match="not a usable cganseg model"):
        cganseg.segment(np.zeros((32, 32)), model=model)


def test_export_of_a_run_whose_config_names_no_data_folder_says_so(seg_run, tmp_path):
    from cganseg.export.bioimageio import default_sample

    run = tmp_path / "run"
    run.mkdir()
    for name in ("best.pt", "split.json"):
        (run / name).write_bytes((seg_run / name).read_bytes())
    (run / "config.yaml").write_text("data: 123\n")
    with pytest.raises(InputError, match=r"config.yaml: its config.yaml gives data 123"):
        default_sample(run / "best.pt")


@pytest.mark.parametrize("size", [
    PixelSize(math.inf, 1.0), PixelSize(math.nan, 1.0), PixelSize(-0.5, 0.5), PixelSize(0, 0),
    PixelSize(1e300, 1.0), PixelSize(0.5, 0.5, "parsec"),
])  # fmt: skip
def test_ome_tiff_gets_no_physical_size_that_is_not_one(tmp_path, size):
    path = tmp_path / "l.ome.tif"
    write_ome_tiff(path, np.ones((8, 8), np.uint16), size)
    with tifffile.TiffFile(path) as tif:
        assert "PhysicalSizeX" not in tif.ome_metadata
    write_ome_tiff(path, np.ones((8, 8), np.uint16), PixelSize(0.65, 0.65))
    assert read_pixel_size(path) == PixelSize(0.65, 0.65, "µm")


def test_a_declared_pixel_size_that_is_not_one_is_not_read(tmp_path):
    path = tmp_path / "i.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8), ome=True,
                     metadata={"PhysicalSizeX": -1.0, "PhysicalSizeY": -1.0})  # fmt: skip
    assert read_pixel_size(path) is None


def test_every_rule_refuses_booleans_text_and_non_finite_numbers():
    for rule in (checks.MIN_SIZE, checks.CELLPROB_THRESHOLD, checks.FLOW_THRESHOLD,
                 checks.CELL_DIAMETER, checks.TILE_SIZE, checks.PIXEL_SIZE):  # fmt: skip
        for bad in (True, "3", math.nan, math.inf, -math.inf, [1]):
            with pytest.raises(checks.ValueProblem):
                rule("x", bad)
    assert checks.MIN_SIZE("x", np.int64(7)) == 7 and checks.MIN_SIZE("x", 7.0) == 7
    with pytest.raises(checks.ValueProblem):
        checks.MIN_SIZE("x", 7.5)


# ------------------------------------------------------------- 5. state files
@pytest.mark.parametrize("content", [
    b"\xff\xfe\x00garbage",
    json.dumps({"pid": 10**20, "host": "h", "since": 1}).encode(),
    json.dumps({"pid": 12, "host": "h", "since": "yesterday"}).encode(),
    json.dumps({"pid": "12", "host": "h"}).encode(),
    b"[1, 2]",
    b"{" * 5000,
])  # fmt: skip
def test_a_lock_file_cganseg_did_not_write_is_reported_with_the_file_to_delete(
    seg_run, tmp_path, capsys, content
):
    out = tmp_path / "out"
    out.mkdir()
    lock = out / ".cganseg.runtime.lock"
    lock.write_bytes(content)
    rc = main(["segment", str(seg_run), str(_images(tmp_path / "images")), "--out", str(out)])
    _refused(rc, capsys.readouterr().err, "is not a lock file cganseg wrote", f"delete {lock}")
    assert lock.read_bytes() == content  # never taken over: its holder cannot be known
    lock.unlink()
    assert main(["segment", str(seg_run), str(tmp_path / "images"), "--out", str(out),
                 "--quiet"]) == 0  # fmt: skip


def _zip_with_rdf(path: Path, rdf: str) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("rdf.yaml", rdf)
    return path


def test_a_package_is_ours_by_the_section_cganseg_writes_not_by_words_in_it(tmp_path):
    from cganseg.export.bioimageio import is_package

    foreign = _zip_with_rdf(tmp_path / "f.zip", "name: other\n# packaged_by cganseg\n"
                            "packaged_by: [{name: someone}]\ndescription: not cganseg\n")
    assert not is_package(foreign)
    ours = _zip_with_rdf(tmp_path / "o.zip", "packaged_by: [{name: cganseg 0.1.0}]\n"
                         "config: {cganseg: {version: 0.1.0, instances: flows}}\n")
    assert is_package(ours)
    bomb = _zip_with_rdf(tmp_path / "b.zip", _alias_bomb() + "\nconfig: *a8\n")
    assert not is_package(bomb)


# ------------------------------------------------------------- 6. signals in the last phase
def _stop_once(monkeypatch, owner, name):
    real = getattr(owner, name)
    calls = []

    def wrapper(*args, **kwargs):
        if not calls:
            os.kill(os.getpid(), signal.SIGTERM)
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


def test_sigterm_while_tuning_the_flow_thresholds_stops_and_resume_finishes(
    tmp_path, capsys, monkeypatch
):
    """SIGTERM during the tuning after the last step was ignored (exit 0 minutes later)."""
    from cganseg.instances import flows

    data = make_dataset(tmp_path / "d", n=8)
    run = tmp_path / "run"
    argv = ["train-seg", "--data", str(data), "--out", str(run), *TINY,
            "--instances", "flows"]  # fmt: skip
    calls = _stop_once(monkeypatch, flows.Flows, "threshold_search")
    assert main(argv) == 128 + signal.SIGTERM
    assert "choosing the post-processing thresholds" in capsys.readouterr().err
    assert len(calls) == 1  # stopped after the first validation image, not after all of them
    assert "val_mean_f1" not in load_checkpoint(run / "best.pt")
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0, capsys.readouterr().err
    assert "val_mean_f1" in load_checkpoint(run / "best.pt")


def test_sigterm_while_testing_stops_between_two_test_images(tmp_path, capsys, monkeypatch):
    from cganseg.training import final

    data = make_dataset(tmp_path / "d", n=10)
    run = tmp_path / "run"
    real = final.evaluate_pairs
    seen = []

    def evaluate_pairs(pairs):  # the test's evaluation only (validation has its own)
        os.kill(os.getpid(), signal.SIGTERM)
        return real(seen.append(p) or p for p in pairs)

    monkeypatch.setattr(final, "evaluate_pairs", evaluate_pairs)
    rc = main(["train-seg", "--data", str(data), "--out", str(run), *TINY, "--test-fraction",
               "0.3", "--no-tune-thresholds"])  # fmt: skip
    assert rc == 128 + signal.SIGTERM
    assert "while testing best.pt" in capsys.readouterr().err
    assert not (run / "test" / "metrics.json").exists()
    assert len(seen) == 1  # stopped after the first of the 3 test images


def test_sigterm_while_checking_an_export_keeps_no_package(seg_run, tmp_path, capsys,
                                                           monkeypatch):  # fmt: skip
    core = pytest.importorskip("bioimageio.core", reason="the bioimageio extra is not installed")

    class Passed:
        status = "passed"
        details = ()

    def test_model(path):
        os.kill(os.getpid(), signal.SIGTERM)
        return Passed()

    monkeypatch.setattr(core, "test_model", test_model)
    out = tmp_path / "m.zip"
    assert main(["export", str(seg_run), "--out", str(out)]) == 128 + signal.SIGTERM
    assert "nothing was written" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".m.zip*"))


# ------------------------------------------------------------- 7. ids above 2^32
def test_masks_with_huge_ids_train_with_cell_diameter_and_give_synthetic_masks(tmp_path,
                                                                               capsys):  # fmt: skip
    data = make_dataset(tmp_path / "d", n=6)
    for path in sorted((data / "masks").iterdir()):
        labels = read_labels(path).astype(np.uint64)
        huge = np.where(labels > 0, labels + 2**40, 0)
        path.unlink()
        tifffile.imwrite(path.with_suffix(".tif"), huge)
    assert read_labels(data / "masks" / "img00.tif").max() <= 10
    rc = main(["train-seg", "--data", str(data), "--out", str(tmp_path / "run"), *TINY,
               "--cell-diameter", "12"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    rc = main(["synth-masks", str(data), "--out", str(tmp_path / "synth"), "--n", "2",
               "--quiet"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert len(list((tmp_path / "synth").glob("*.tif"))) == 2


# ------------------------------------------------------------- 8. smaller ones
def test_an_xml_entity_bomb_in_a_tiff_description_is_a_warning_not_an_abort(
    seg_run, tmp_path, capsys
):
    entities = '<!ENTITY l0 "lol">' + "".join(
        f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 10)
    )
    ome = (f'<?xml version="1.0"?><!DOCTYPE OME [{entities}]><OME><Image ID="Image:0">'
           '<Pixels PhysicalSizeX="&l9;" SizeX="48" SizeY="48"/></Image></OME>')  # fmt: skip
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "bomb.tif", synthetic_pair((48, 48))[0], description=ome,
                     metadata=None)  # fmt: skip
    _write(images / "fine.png", synthetic_pair((48, 48), seed=1)[0])
    out = tmp_path / "out"
    rc = main(["segment", str(seg_run), str(images), "--out", str(out), "--save-format",
               "ome-tiff", "--quiet"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert (out / "bomb.ome.tif").is_file() and (out / "fine.ome.tif").is_file()


@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (3, 0, 4)])
def test_an_array_without_pixels_is_refused_in_words(seg_run, shape):
    with pytest.raises(InputError, match=r"image has no pixels \(shape"):
        cganseg.segment(np.zeros(shape, np.uint8), seg_run)


def test_a_flat_export_sample_is_refused_before_the_package_is_checked(seg_run, tmp_path,
                                                                       capsys):  # fmt: skip
    pytest.importorskip("bioimageio.core", reason="the bioimageio extra is not installed")
    flat = tmp_path / "flat.png"
    _write(flat, np.full((64, 64), 77, np.uint8))
    out = tmp_path / "m.zip"
    rc = main(["export", str(seg_run), "--out", str(out), "--sample", str(flat)])
    _refused(rc, capsys.readouterr().err, "flat.png", "sample image is flat")
    assert not out.exists()


def test_an_unknown_entry_of_the_postprocessing_is_refused(tmp_path):
    path = _model_file(tmp_path / "m.pt")
    payload = load_checkpoint(path)
    payload["postprocessing"]["nms_threshold"] = 0.3
    save_checkpoint(path, payload)
    with pytest.raises(InputError, match="postprocessing has unknown entries: nms_threshold"):
        load_segmenter(path, "cpu")


def test_segmenters_built_in_code_pass_the_same_rules():
    with pytest.raises(InputError, match="min_size must be"):
        PostProcessing("watershed", min_size=-1)
    with pytest.raises(InputError, match="channels must be gray"):
        Segmenter(build_segmenter("unet", 1, 3, 4), "rgb", PostProcessing("flows"),
                  torch.device("cpu"))  # fmt: skip
    with pytest.raises(InputError, match="segmenter width must be an integer in"):
        build_segmenter("unet", 1, 3, 200000)
    config = tiny_seg_config("d", "o", cellprob_threshold=float("nan"))
    with pytest.raises(InputError, match="option cellprob_threshold must be"):
        config.check()
