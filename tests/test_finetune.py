"""Fine-tuning from a trained segmenter (issue 29): ``train-seg --init MODEL`` and
``train --init-seg MODEL`` take the start's architecture and outputs, refuse a mismatch in one
line, start from its weights and record where they started; few images are not split for
validation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tests.helpers import tiny_seg_config

from cganseg.checkpoint import load_checkpoint, save_checkpoint, shipped_payload
from cganseg.cli import main
from cganseg.data.splits import MIN_PAIRS_TO_VALIDATE, make_split
from cganseg.errors import InputError
from cganseg.inference.segment import load_segmenter
from cganseg.options import FINE_TUNING, CGanTrainConfig, SegTrainConfig
from cganseg.training.seg_trainer import SegTrainer, train_segmenter
from cganseg.training.settings import resolve

#: what the start model fixes; a fine-tuning run's config names none of them
ARCHITECTURE = ("model", "width", "n_classes", "instances", "cell_diameter", "channels")


def _knobs(tiny_dataset, out) -> dict:
    """A tiny run's options without the architecture (which the start gives)."""
    cfg = tiny_seg_config(tiny_dataset, out, iterations=2).to_dict()
    return {k: v for k, v in cfg.items() if k not in ARCHITECTURE and v is not None}


def test_a_fine_tuning_run_takes_the_start_models_settings_and_defaults(seg_run, tiny_dataset,
                                                                        tmp_path):  # fmt: skip
    cfg = resolve(SegTrainConfig, {"data": str(tiny_dataset), "out": str(tmp_path / "run"),
                                   "init_seg": str(seg_run), "device": "cpu"})  # fmt: skip
    start = load_checkpoint(seg_run / "best.pt")
    assert (cfg.model, cfg.width) == (start["model_config"]["name"], start["model_config"]["width"])
    assert cfg.instances == start["postprocessing"]["instances"] == "watershed"
    assert (cfg.lr, cfg.iterations) == (FINE_TUNING["lr"], FINE_TUNING["iterations"])
    assert cfg.init_seg == str(seg_run.resolve())
    # given options still win over fine-tuning's defaults; the joint game keeps its own
    given = {"data": str(tiny_dataset), "out": str(tmp_path / "r2"), "init_seg": str(seg_run),
             "lr": 1e-2}  # fmt: skip
    assert resolve(SegTrainConfig, given).lr == 1e-2
    del given["lr"]
    assert resolve(CGanTrainConfig, given).lr == CGanTrainConfig(data="d", out="o").lr


def test_the_start_weights_are_loaded(seg_run, tiny_dataset, tmp_path):
    cfg = tiny_seg_config(tiny_dataset, tmp_path / "run", init_seg=str(seg_run),
                          instances="watershed")  # fmt: skip
    trainer = SegTrainer.from_config(cfg)
    start = load_checkpoint(seg_run / "best.pt")["model_state"]
    ours = trainer.model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in start.items())
    fresh = SegTrainer.from_config(tiny_seg_config(tiny_dataset, tmp_path / "r2",
                                                   instances="watershed"))  # fmt: skip
    assert not all(torch.equal(fresh.model.state_dict()[k], v) for k, v in start.items())


def test_train_seg_init_a_shipped_model_runs_and_records_its_start(shipped, tiny_dataset,
                                                                   tmp_path, capsys):  # fmt: skip
    run = tmp_path / "run"
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(_knobs(tiny_dataset, run)))
    rc = main(["train-seg", "--config", str(tmp_path / "cfg.yaml"), "--init", "tinyship",
               "--quiet"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["init_seg"] == "tinyship" and saved["instances"] == "watershed"
    assert load_checkpoint(run / "best.pt")["model_config"] == load_checkpoint(shipped)[
        "model_config"]


@pytest.mark.parametrize(("flag", "value"), [("--model", "deepsea"), ("--width", "8"),
                                             ("--instances", "flows")])  # fmt: skip
def test_a_mismatched_start_is_refused_in_one_line(shipped, tiny_dataset, tmp_path, capsys,
                                                   flag, value):  # fmt: skip
    run = tmp_path / "run"
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(_knobs(tiny_dataset, run)))
    rc = main(["train-seg", "--config", str(tmp_path / "cfg.yaml"), "--init", "tinyship", flag,
               value, "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert flag[2:] in err[0] and "start model tinyship" in err[0], err
    assert not run.exists()


def test_train_init_seg_keeps_a_shipped_name(shipped, tiny_dataset, tmp_path):
    cfg = resolve(CGanTrainConfig, {"data": str(tiny_dataset), "out": str(tmp_path / "run"),
                                    "init_seg": "tinyship"})  # fmt: skip
    assert cfg.init_seg == "tinyship" and cfg.instances == "watershed" and cfg.seg_pretrain == 0


def test_an_unknown_start_is_refused(tiny_dataset, tmp_path):
    with pytest.raises(InputError, match="shipped model"):
        resolve(SegTrainConfig, {"data": str(tiny_dataset), "out": str(tmp_path / "run"),
                                 "init_seg": "no_such_model"})  # fmt: skip


def test_a_fine_tuning_run_keeps_its_start_when_no_step_beats_it(seg_run, tiny_dataset,
                                                                  tmp_path):  # fmt: skip
    """The guard: with validation images the start is validated before the first step (a
    metrics.csv row at step 0) and best.pt stays the start unless a step scores better; steps at
    an absurd learning rate ruin the network, so best.pt must be the start's weights."""
    start = load_checkpoint(seg_run / "best.pt")  # with thresholds of its own
    start["postprocessing"].update(cellprob_threshold=0.5, flow_threshold=0.7)
    save_checkpoint(tmp_path / "start.pt", start)
    cfg = tiny_seg_config(tiny_dataset, tmp_path / "run", init_seg=str(tmp_path / "start.pt"),
                          instances="watershed", val_fraction=0.4, lr=50.0,
                          iterations=4, val_every=2, on_divergence="stop")  # fmt: skip
    summary = train_segmenter(cfg, progress=False)
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert rows[1].startswith("0,")  # the start's validation, before any step
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert summary["best_step"] == 0 and "postprocessing" not in summary  # nothing tuned
    assert all(torch.equal(best["model_state"][k], v) for k, v in start["model_state"].items())
    # and it segments as the start does: the start's thresholds and training diameter
    assert best["postprocessing"] == {**start["postprocessing"],
                                      "min_size": cfg.min_size}  # fmt: skip
    assert summary["best_val_f1_iou50"] == pytest.approx(float(rows[1].split(",")[2]), abs=1e-5)
    # without validation images (six pairs: none by default) there is nothing to guard with:
    # the last step is kept
    few = tiny_seg_config(tiny_dataset, tmp_path / "few", init_seg=str(seg_run),
                          instances="watershed", iterations=2, val_fraction=None,
                          test_fraction=0.0)  # fmt: skip
    assert train_segmenter(few, progress=False)["best_step"] == 2
    assert "default_diameter" not in load_checkpoint(tmp_path / "few" / "best.pt")


def test_few_pairs_fine_tuned_from_a_shipped_start_keep_its_auto_diameter(tiny_dataset,
                                                                            tmp_path):  # fmt: skip
    """Under 10 pairs (no validation), a start that measures the cells' size itself (a shipped
    model: default diameter auto) passes that default on; the few images' median does not
    replace it."""
    start_run = tmp_path / "start"
    train_segmenter(tiny_seg_config(tiny_dataset, start_run, instances="watershed",
                                    cell_diameter=12.0, iterations=2), progress=False)  # fmt: skip
    save_checkpoint(tmp_path / "ship.pt", shipped_payload(load_checkpoint(start_run / "best.pt")))
    assert load_checkpoint(tmp_path / "ship.pt")["default_diameter"] == "auto"
    few = tiny_seg_config(tiny_dataset, tmp_path / "few", init_seg=str(tmp_path / "ship.pt"),
                          instances="watershed", cell_diameter=12.0, iterations=2,
                          val_fraction=None, test_fraction=0.0)  # fmt: skip
    assert train_segmenter(few, progress=False)["best_step"] == 2
    assert load_checkpoint(tmp_path / "few" / "best.pt")["default_diameter"] == "auto"
    assert load_segmenter(tmp_path / "few", "cpu").default_diameter == "auto"


def test_few_pairs_fine_tuned_take_the_options_thresholds(tiny_dataset, tmp_path):
    """Under 10 pairs nothing can tune the flow thresholds; best.pt takes the options' (the
    start's were measured and lost 0.22 F1@0.5 on phase contrast from ``nuclei``), not the
    start's tuned ones."""
    start_run = tmp_path / "start"
    train_segmenter(tiny_seg_config(tiny_dataset, start_run, instances="flows", iterations=2,
                                    val_fraction=None, test_fraction=0.0),
                    progress=False)  # fmt: skip
    start = load_checkpoint(start_run / "best.pt")
    start["postprocessing"].update(cellprob_threshold=1.0, flow_threshold=0.0)
    save_checkpoint(tmp_path / "start.pt", start)
    few = tiny_seg_config(tiny_dataset, tmp_path / "few", init_seg=str(tmp_path / "start.pt"),
                          instances="flows", iterations=2, val_fraction=None, test_fraction=0.0,
                          cellprob_threshold=-0.5, flow_threshold=0.3)  # fmt: skip
    assert train_segmenter(few, progress=False)["best_step"] == 2
    kept = load_checkpoint(tmp_path / "few" / "best.pt")["postprocessing"]
    assert (kept["cellprob_threshold"], kept["flow_threshold"]) == (-0.5, 0.3)


def test_few_pairs_are_not_split_for_validation():
    few = [f"p{i}" for i in range(MIN_PAIRS_TO_VALIDATE - 1)]
    split = make_split(few, seed=1)
    assert split["val"] == [] and len(split["train"]) == len(few)
    many = [f"p{i}" for i in range(30)]
    assert len(make_split(many, seed=1)["val"]) == 3
    # a fraction given is a fraction taken, however few the pairs
    assert len(make_split(few, val_fraction=0.2, seed=1)["val"]) == 2
    assert make_split(["only"], seed=0) == {"train": ["only"], "val": [], "test": []}


@pytest.mark.slow
def test_fewshot_benchmark_quick_mode(tmp_path):
    """benchmarks/fewshot.py --quick: every arm at N 1 and 3 on the demo data, from a tiny start
    run; the fine-tuned runs record their start, the table and plot are written."""
    from cganseg.demo import demo_data_dir

    start = tmp_path / "start"
    train_segmenter(tiny_seg_config(demo_data_dir(), start, iterations=2, instances="flows",
                                    channels="gray"), progress=False)  # fmt: skip
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "fewshot.py"
    out = tmp_path / "fewshot.json"
    # a run an earlier invocation recorded (another set) is kept beside this invocation's
    earlier = {"set": "elsewhere", "arm": "scratch", "n": 3, "draw": 0, "cpu_s": 9.0,
               "scores": dict.fromkeys(("f1_50_pooled", "f1_50_per_image", "mean_f1_per_image",
                                        "ap_50_per_image"), 0.5)}  # fmt: skip
    out.write_text(json.dumps({"runs": [earlier]}))
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--start", str(start), "--work",
         str(tmp_path / "work"), "--out", str(out), "--quiet", "--table"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(out.read_text())
    # the README's table: one row per N, the arms as columns
    assert "| N | zero-shot | scratch | finetune |" in proc.stdout
    assert sum(line.startswith(("| 1 |", "| 3 |")) for line in proc.stdout.splitlines()) >= 2
    assert set(record["summary"]["demo"]) == {"zero-shot", "scratch", "finetune"}
    assert earlier in record["runs"]
    assert record["summary"]["elsewhere"]["scratch"]["3"]["draws"] == 1
    tuned = [r for r in record["runs"] if r["arm"] == "finetune"]
    assert [r["n"] for r in tuned] == [1, 3] and all(r["train"] for r in tuned)
    saved = yaml.safe_load((tmp_path / "work/demo/finetune/N3_d0/run/config.yaml").read_text())
    assert saved["init_seg"] == str(start)
    assert out.with_suffix(".png").stat().st_size > 0
    assert "AP@0.5/img" in proc.stdout and "loss fall" in proc.stdout
    assert all("loss_fall" in r for r in tuned)  # the plateau rule's figure (None: too few logs)
    # benchmarks/keep_start.py reads those runs: each fine-tuned run and its start, scored
    keep = tmp_path / "keep_start.json"
    proc = subprocess.run(
        [sys.executable, str(script.with_name("keep_start.py")), "--quick", str(start),
         "--work", str(tmp_path / "work"), "--record", str(out), "--out", str(keep)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    checked = json.loads(keep.read_text())
    assert sorted((r["n"], r["draw"]) for r in checked["runs"]) == [(1, 0), (3, 0)]
    zero_shot = record["summary"]["demo"]["zero-shot"]["0"]["f1_50_pooled"]["mean"]
    assert all(r["start_test"] == pytest.approx(zero_shot) for r in checked["runs"])
    assert checked["rules"]["always fine-tune"]["kept_start"] == 0
    oracle = checked["rules"]["oracle"]["mean_test_f1"]
    assert all(rule["mean_test_f1"] <= oracle + 1e-9 for rule in checked["rules"].values())
