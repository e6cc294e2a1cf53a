"""Conventional training end to end on tiny synthetic data: loss, checkpoints, resume, CLI."""

from __future__ import annotations

import csv
import html
import json
import os
import signal

import numpy as np
import pytest
import torch
import yaml
from tests.helpers import tiny_seg_config as _cfg
from tests.helpers import write_image

from cganseg.checkpoint import load_checkpoint
from cganseg.cli import main
from cganseg.data.io import list_image_files, read_labels
from cganseg.demo import VERDICT
from cganseg.errors import InputError, TrainingDiverged
from cganseg.options import SegTrainConfig
from cganseg.runtime.interrupt import Interrupted
from cganseg.training.seg_trainer import SegTrainer, train_segmenter


def _loss_column(run_dir) -> list[float]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh) if r["loss"]]


@pytest.fixture
def data(tmp_path, dataset_factory):
    return dataset_factory(tmp_path / "data", n=10, size=(40, 52))


def test_training_lowers_loss_and_writes_a_run_folder(data, tmp_path):
    out = tmp_path / "run"
    summary = train_segmenter(_cfg(data, out, iterations=60, val_every=30, lr=1e-2), progress=False)
    losses = _loss_column(out)
    assert len(losses) == 60
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    for name in ("config.yaml", "split.json", "metrics.csv", "best.pt", "last.pt"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())
    assert (out / "test" / "metrics.json").is_file()
    assert summary["step"] == 60 and 0.0 <= summary["test_f1_iou50"] <= 1.0
    best = load_checkpoint(out / "best.pt")  # weights_only load
    assert best["model_config"]["width"] == 4 and "optimizer" not in best
    split = json.loads((out / "split.json").read_text())
    assert len(split["train"]) + len(split["val"]) + len(split["test"]) == 10
    assert SegTrainConfig.load(out / "config.yaml").iterations == 60


def test_interrupted_run_resumes_exactly(data, tmp_path, monkeypatch):
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    train_segmenter(_cfg(data, straight, model="deepsea"), progress=False)

    real_step = SegTrainer.train_step

    def interrupted_step(self, images, targets):
        if self.step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during step 4: it finishes, then stops
        return real_step(self, images, targets)

    monkeypatch.setattr(SegTrainer, "train_step", interrupted_step)
    with pytest.raises(Interrupted, match="stopped at step 4"):
        train_segmenter(_cfg(data, halves, model="deepsea"), progress=False)
    assert load_checkpoint(halves / "last.pt")["step"] == 4
    monkeypatch.setattr(SegTrainer, "train_step", real_step)
    train_segmenter(_cfg(data, halves, model="deepsea"), resume=True, progress=False)
    a = load_checkpoint(straight / "last.pt")
    b = load_checkpoint(halves / "last.pt")
    assert b["step"] == 6
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    assert _loss_column(straight) == _loss_column(halves)


def test_second_interrupt_stops_at_once_and_keeps_the_last_checkpoint(data, tmp_path, monkeypatch):
    real_step = SegTrainer.train_step

    def interrupted_step(self, images, targets):
        if self.step == 4:
            raise KeyboardInterrupt  # as a second Ctrl-C would, in the middle of a step
        return real_step(self, images, targets)

    monkeypatch.setattr(SegTrainer, "train_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        train_segmenter(_cfg(data, tmp_path / "run"), progress=False)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 3  # the validation's, intact
    assert not list((tmp_path / "run").glob(".*.tmp*"))


def test_resume_refuses_changed_model_options(data, tmp_path):
    out = tmp_path / "run"
    train_segmenter(_cfg(data, out, iterations=2), progress=False)
    with pytest.raises(InputError, match="--width"):
        train_segmenter(_cfg(data, out), resume=True, progress=False, given={"width": 8})


def test_existing_run_is_not_overwritten(data, tmp_path):
    out = tmp_path / "run"
    train_segmenter(_cfg(data, out, iterations=2), progress=False)
    before = (out / "last.pt").read_bytes()
    with pytest.raises(InputError, match="--resume"):
        train_segmenter(_cfg(data, out, iterations=2), progress=False)
    assert (out / "last.pt").read_bytes() == before


def test_same_seed_same_weights(data, tmp_path):
    for name in ("a", "b"):
        train_segmenter(_cfg(data, tmp_path / name, iterations=3, model="cellpose"), progress=False)
    a = load_checkpoint(tmp_path / "a" / "last.pt")["model_state"]
    b = load_checkpoint(tmp_path / "b" / "last.pt")["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_train_segment_evaluate(data, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(
        [
            "train-seg",
            "--data",
            str(data),
            "--out",
            str(run),
            "--model",
            "unet",
            "--width",
            "4",
            "--crop",
            "32",
            "--batch-size",
            "2",
            "--iterations",
            "4",
            "--val-every",
            "2",
            "--device",
            "cpu",
            "--workers",
            "0",
            "--quiet",
            "--classes",
            "2",
        ]
    )
    assert code == 0
    assert "validation F1@0.5" in capsys.readouterr().out
    pred = tmp_path / "pred"
    assert (
        main(["segment", str(run), str(data / "images"), str(pred), "--overlays", "--quiet"]) == 0
    )
    tifs = sorted(pred.glob("*.tif"))
    assert len(tifs) == 10 and len(list((pred / "overlays").glob("*.png"))) == 10
    ev = tmp_path / "eval"
    assert main(["evaluate", str(data), str(pred), "--out", str(ev), "--quiet"]) == 0
    report = json.loads((ev / "metrics.json").read_text())
    assert report["n_images"] == 10 and len(report["per_image"]["f1"]) == 10
    assert (ev / "f1_vs_iou.png").is_file()


@pytest.mark.slow
def test_demo_writes_its_report(tmp_path, capsys):
    from cganseg.models.vgg import hed_weights_path

    if not hed_weights_path().is_file():
        pytest.skip(
            "hed-vgg16 weights missing: run `cganseg fetch-weights hed-vgg16` (make test does)"
        )
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--iterations", "10", "--gan-iterations", "4", "--quiet"]
    assert main(args) == 0
    for name in (
        "index.html",
        "samples.png",
        "generated.png",
        "dense.png",
        "f1_vs_iou.png",
        "train_seg/training_curves.png",
        "train_cgan/samples/final.png",
    ):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in summary["runs"]] == ["conventional", "cGAN-Seg"]
    assert all(0.0 <= r["f1_iou50"] <= 1.0 for r in summary["runs"])
    for run in ("train_seg", "train_cgan"):
        assert len(list((out / run / "predictions").glob("*.tif"))) == 8
        assert not (out / run / "evaluation").exists()  # test/ holds the scores, once
    # issue 18: pooled and per-image scores, CPU-seconds per step, every metric defined, and the
    # headline numbers printed at the end
    row = summary["runs"][0]
    assert {"f1_iou50_pooled", "cpu_s_per_step"} <= set(row) and row["iterations"] == 10
    page = (out / "index.html").read_text()
    assert "CPU-s per step" in page and "harmonic mean of precision" in page
    assert "training seconds" not in page
    printed = capsys.readouterr().out
    assert "conventional: F1@0.5" in printed and "pooled" in printed and "per image" in printed
    # issue 33: the recommended path (flows), each curve explained, what to run next
    assert "instances by flows" in summary["settings"]
    assert "Next: on your own data" in page and "nothing goes wrong" in page
    assert "next, on your own data:\n  cganseg train-seg --data my_data" in printed
    # issue 17: cGAN-Seg is train's default recipe started from the conventional run, and the
    # measured answer to "which one?" is said beside them
    cgan = yaml.safe_load((out / "train_cgan" / "config.yaml").read_text())
    assert cgan["init_seg"] == str(out / "train_seg") and cgan["seg_extra_updates"] == 3
    assert VERDICT in printed and html.escape(VERDICT) in page


def test_binary_masks_warn_once_per_run_and_train(data, tmp_path, capsys):
    """Once per command run: a second run in the same process warns again."""
    for mask in list_image_files(data / "masks"):
        write_image(mask, (read_labels(mask) > 0).astype(np.uint8) * 255)
    for run in ("run1", "run2"):
        code = main(
            [
                "train-seg",
                "--data",
                str(data),
                "--out",
                str(tmp_path / run),
                "--width",
                "4",
                "--crop",
                "32",
                "--iterations",
                "1",
                "--device",
                "cpu",
                "--workers",
                "0",
                "--quiet",
            ]
        )
        assert code == 0
        err = capsys.readouterr().err.splitlines()
        warnings = [ln for ln in err if ln.startswith("warning:")]
        assert len(warnings) == 1 and "binary masks" in warnings[0], run


def _diverging_step(real_step, bad_steps: set[int], once: bool):
    """A train_step whose loss is NaN at the given (1-based) steps; ``once``: the first time."""
    seen: set[int] = set()

    def step(self, images, targets):
        terms = real_step(self, images, targets)
        n = self.step + 1
        if n in bad_steps and not (once and n in seen):
            seen.add(n)
            terms["loss"] = torch.tensor(float("nan"))
        return terms

    return step


def test_divergence_rolls_back_with_lower_learning_rate(data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    monkeypatch.setattr(
        SegTrainer, "train_step", _diverging_step(SegTrainer.train_step, {5}, once=True)
    )
    cfg = _cfg(data, out, schedule="constant", on_divergence="rollback")
    summary = train_segmenter(cfg, progress=False)
    assert summary["step"] == 6
    assert "loss became nan by step 5: rolled back to step 3, learning rates x0.5" in (
        capsys.readouterr().out
    )
    last = load_checkpoint(out / "last.pt")
    assert last["rollbacks"] == 1 and last["lr_scale"] == 0.5
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(cfg.lr * 0.5)
    with open(out / "metrics.csv", newline="") as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh)]
    assert steps == [1, 2, 3, 4, 5, 6]  # the rolled-back rows were replaced, not repeated


def test_divergence_gives_up_after_max_rollbacks(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(
        SegTrainer, "train_step", _diverging_step(SegTrainer.train_step, {2}, once=False)
    )
    cfg = _cfg(data, out, on_divergence="rollback", max_rollbacks=2)
    with pytest.raises(TrainingDiverged, match="loss became nan by step 2"):
        train_segmenter(cfg, progress=False)
    assert load_checkpoint(out / "last.pt")["step"] == 0  # the state saved before step 1


def test_nonfinite_weights_stop_before_they_are_saved(data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_step = SegTrainer.train_step

    def poisoning(self, images, targets):
        terms = real_step(self, images, targets)
        if self.step == 3:  # during step 4; the loss it returns is still finite
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("inf"))
        return terms

    monkeypatch.setattr(SegTrainer, "train_step", poisoning)
    _cfg(data, out, val_every=2).save(tmp_path / "cfg.yaml")
    rc = main(["train-seg", "--config", str(tmp_path / "cfg.yaml"), "--quiet"])
    assert rc == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "weights of the segmenter" in err and "by step 4" in err
    assert load_checkpoint(out / "last.pt")["step"] == 2
    saved = load_checkpoint(out / "last.pt")["model_state"]
    assert all(torch.isfinite(v.float()).all() for v in saved.values())
