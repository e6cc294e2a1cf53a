"""Bad input to the ``cganseg`` command: exit code 2, one ``error:`` line, nothing half-written.

Every case here fails while the input is checked, before any training starts.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.helpers import synthetic_pair, write_image

from cganseg.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, list[str]]:
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err.splitlines()


def assert_one_error(rc: int, err: list[str], *names: str) -> None:
    assert rc == 2
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    for name in names:
        assert name in err[0]


def train(capsys, data: Path, out: Path, *extra: str | Path) -> tuple[int, list[str]]:
    """train-seg with a one-step budget: a check that regresses fails fast, not after training."""
    base = ["--quiet", "--device", "cpu", "--workers", "0", "--iterations", "1"]
    return run_cli(capsys, "train-seg", "--data", data, "--out", out, *base, *extra)


# ---------------------------------------------------------------- train-seg


def test_train_missing_data_folder(tmp_path: Path, capsys) -> None:
    rc, err = train(capsys, tmp_path / "nope", tmp_path / "run")
    assert_one_error(rc, err, "nope", "not found")
    assert not (tmp_path / "run").exists()


def test_train_empty_data_folder(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    rc, err = train(capsys, tmp_path / "empty", tmp_path / "run")
    assert_one_error(rc, err, "empty", "layout")
    assert not (tmp_path / "run").exists()


def test_train_image_without_mask(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    (tiny_dataset / "masks/img04.png").unlink()
    rc, err = train(capsys, tiny_dataset, tmp_path / "run")
    assert_one_error(rc, err, "img04.png", "no mask")
    assert not (tmp_path / "run").exists()


def test_train_corrupt_image(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    path = tiny_dataset / "images/img01.png"
    path.write_bytes(path.read_bytes()[:100])
    rc, err = train(capsys, tiny_dataset, tmp_path / "run", "--val-fraction", "0.5")
    assert_one_error(rc, err, "img01.png", "cannot read")
    assert not (tmp_path / "run").exists()


def test_train_size_mismatch(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    write_image(tiny_dataset / "images/img05.png", synthetic_pair((41, 52))[0])
    rc, err = train(capsys, tiny_dataset, tmp_path / "run", "--val-fraction", "0.5")
    assert_one_error(rc, err, "img05.png", "img05.png is 40x52")
    assert not (tmp_path / "run").exists()


def test_train_unknown_layout(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("layout: zarr\n")
    rc, err = train(capsys, tiny_dataset, tmp_path / "run", "--config", config)
    assert_one_error(rc, err, "c.yaml", "layout must be one of auto, folders, cellpose")
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit) as exc:  # on the command line, argparse refuses it
        main(["train-seg", "--data", str(tiny_dataset), "--layout", "zarr"])
    assert exc.value.code == 2


def test_train_layout_mismatch(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    rc, err = train(capsys, tiny_dataset, tmp_path / "run", "--layout", "cellpose")
    assert_one_error(rc, err, str(tiny_dataset), "no image/mask pairs")
    assert not (tmp_path / "run").exists()


def test_train_n_train_too_large(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    # six pairs, none held out for validation by default (fewer than 10)
    rc, err = train(capsys, tiny_dataset, tmp_path / "run", "--n-train", "7")
    assert_one_error(rc, err, "--n-train 7", "6 pairs left")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("crop: [64,\n  lr: 3\n", "cannot read config"),
        ("- a\n- b\n", "YAML mapping"),
        ("bogus_option: 1\n", "unknown option(s) in config: bogus_option"),
        ("batch_size: many\n", "option batch_size must be int"),
        ("crop: [0, 16]\n", "option crop"),
        ("lr: fast\n", "option lr must be a number"),
        ("seed: -1\n", "option seed must be an integer in [0, 4294967295]"),
    ],
)
def test_train_bad_config(tiny_dataset: Path, tmp_path: Path, capsys, text: str, match: str):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    rc, err = train(capsys, tiny_dataset, tmp_path / "run", "--config", config)
    assert_one_error(rc, err, "bad.yaml", match)
    assert not (tmp_path / "run").exists()


def test_train_missing_config_file(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    rc, err = train(capsys, tiny_dataset, tmp_path / "run", "--config", tmp_path / "none.yaml")
    assert_one_error(rc, err, "none.yaml", "cannot read config")


def test_train_bad_channels(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    rc, err = train(capsys, tiny_dataset, tmp_path / "run", "--channels", "2")
    assert_one_error(rc, err, ".png", "channel index 2 is out of range")
    assert not (tmp_path / "run").exists()


def test_train_leaky_split_file(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    split = tmp_path / "split.json"
    split.write_text('{"train": ["img00", "img01"], "val": ["img02"], "test": ["img01"]}')
    rc, err = train(capsys, tiny_dataset, tmp_path / "run", "--split", split)
    assert_one_error(rc, err, "split.json", "'img01' in both")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- segment


@pytest.fixture
def seg_inputs(tiny_dataset: Path, tmp_path: Path) -> tuple[Path, Path]:
    """An input folder of images and an output folder that does not exist yet."""
    return tiny_dataset / "images", tmp_path / "labels"


def test_segment_missing_checkpoint(tmp_path: Path, seg_inputs, capsys) -> None:
    images, out = seg_inputs
    rc, err = run_cli(capsys, "segment", tmp_path / "best.pt", images, out, "--quiet")
    assert_one_error(rc, err, "best.pt", "not found")
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"this is not a checkpoint\n", "not a PyTorch checkpoint"),
        (b"", "not a PyTorch checkpoint"),
        ("torch-list", "not a cganseg checkpoint"),
    ],
)
def test_segment_not_a_checkpoint(tmp_path: Path, seg_inputs, capsys, content, match) -> None:
    images, out = seg_inputs
    ckpt = tmp_path / "model.pt"
    if content == "torch-list":
        torch.save([1, 2, 3], ckpt)
    else:
        ckpt.write_bytes(content)
    rc, err = run_cli(capsys, "segment", ckpt, images, out, "--quiet")
    assert_one_error(rc, err, "model.pt", match)
    assert not out.exists()


@pytest.mark.parametrize("wrap", ["raw-pickle", "torch-save"])
def test_segment_refuses_code_in_checkpoint(tmp_path: Path, seg_inputs, capsys, wrap) -> None:
    images, out = seg_inputs
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ckpt = tmp_path / "evil.pt"
    if wrap == "raw-pickle":
        ckpt.write_bytes(pickle.dumps({"format": "cganseg.segmenter/1", "x": Payload()}))
    else:
        torch.save({"format": "cganseg.segmenter/1", "x": Payload()}, ckpt)
    rc, err = run_cli(capsys, "segment", ckpt, images, out, "--quiet")
    # a bare pickle is not even opened; a torch.save zip is read without running its code
    problem = "not a PyTorch checkpoint" if wrap == "raw-pickle" else "refused to load"
    assert_one_error(rc, err, "evil.pt", problem)
    assert "weights_only" not in err[0]  # no advice to switch the safety off
    assert not marker.exists()
    assert not out.exists()


def test_segment_output_is_input_folder(tmp_path: Path, seg_inputs, capsys) -> None:
    images, _ = seg_inputs
    before = sorted(p.name for p in images.iterdir())
    rc, err = run_cli(capsys, "segment", tmp_path / "missing.pt", images, images, "--quiet")
    assert_one_error(rc, err, str(images.name), "output folder is the input folder")
    assert sorted(p.name for p in images.iterdir()) == before


def test_segment_missing_input(tmp_path: Path, capsys) -> None:
    rc, err = run_cli(capsys, "segment", tmp_path / "m.pt", tmp_path / "in", tmp_path / "o")
    assert_one_error(rc, err, "in", "input not found")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- evaluate


def test_evaluate_missing_partner(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    pred = tmp_path / "pred"
    pred.mkdir()
    for p in sorted((tiny_dataset / "masks").iterdir())[:-1]:
        (pred / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "report"
    rc, err = run_cli(capsys, "evaluate", tiny_dataset, pred, "--out", out, "--quiet")
    assert_one_error(rc, err, "img05.png", "no prediction")
    assert not out.exists()


def test_evaluate_extra_prediction(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    pred = tmp_path / "pred"
    pred.mkdir()
    for p in (tiny_dataset / "masks").iterdir():
        (pred / p.name).write_bytes(p.read_bytes())
    write_image(pred / "stray.png", np.zeros((40, 52), np.uint8))
    out = tmp_path / "report"
    rc, err = run_cli(capsys, "evaluate", tiny_dataset, pred, "--out", out, "--quiet")
    assert_one_error(rc, err, "stray.png", "no ground truth")
    assert not out.exists()


# ---------------------------------------------------------------- a real process


def test_python_m_cganseg_exit_code_and_no_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cganseg",
            "train-seg",
            "--data",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    expected = f"error: {tmp_path / 'nope'}: data folder not found"
    assert proc.stderr.strip().splitlines() == [expected]
    assert not (tmp_path / "run").exists()
