"""Cross-validation experiment: fold splits, config checks, the report, resume, the benchmark."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from tests.helpers import make_dataset, tiny_experiment

from cganseg.cli import main
from cganseg.errors import InputError
from cganseg.experiment.config import ExperimentConfig
from cganseg.experiment.folds import fold_splits
from cganseg.experiment.report import aggregate, write_experiment_report
from cganseg.experiment.runner import Job, plan, run_config

NAMES = [f"img{i:03d}" for i in range(23)]


def test_fold_tests_are_disjoint_and_cover_the_data():
    folds = fold_splits(NAMES, k=5, n_train=8, val_fraction=0.1, seed=3)
    tests = [set(f["N"]["test"]) for f in folds]
    assert set().union(*tests) == set(NAMES)
    assert sum(len(t) for t in tests) == len(NAMES)  # disjoint
    for fold in folds:
        n, full = fold["N"], fold["all"]
        assert n["test"] == full["test"] and n["val"] == full["val"]
        assert len(n["train"]) == 8 and set(n["train"]) <= set(full["train"])
        assert set(full["train"]) | set(full["val"]) | set(full["test"]) == set(NAMES)
        assert not set(full["train"]) & set(full["val"])
        assert not (set(full["train"]) | set(full["val"])) & set(full["test"])


def test_folds_are_seeded():
    assert fold_splits(NAMES, 4, 5, seed=1) == fold_splits(list(reversed(NAMES)), 4, 5, seed=1)
    assert fold_splits(NAMES, 4, 5, seed=1) != fold_splits(NAMES, 4, 5, seed=2)


def test_n_train_larger_than_a_fold_is_refused():
    with pytest.raises(InputError, match="n_train 30 is more than the .* pairs of fold 1"):
        fold_splits(NAMES, k=5, n_train=30)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"foldz": 3}, "unknown option"),
        ({"folds": 1}, "folds must be"),
        ({"scenarios": ["A", "E"]}, "scenarios must be among"),
        ({"scenarios": ["B", "D"]}, "scenario D needs scenario A"),
        ({"backbones": ["resnet"]}, "backbones must be among"),
        ({"seg": {"n_train": 5}}, "set by the experiment"),
        ({"synthetic": {"count": 5}}, "unknown synthetic option"),
    ],
)
def test_config_refusals(options, message):
    with pytest.raises(InputError, match=message):
        ExperimentConfig.from_dict({"data": "d", "out": "o", **options})


def test_bad_run_options_fail_before_anything_is_written(tmp_path):
    data = make_dataset(tmp_path / "data", n=8)
    options = {
        "data": str(data),
        "out": str(tmp_path / "exp"),
        "folds": 2,
        "n_train": 2,
        "seg": {"lr": -1.0},
        "fid": False,
    }
    folds, jobs = plan(ExperimentConfig.from_dict({**options, "seg": {}}))
    assert len(folds) == 2 and [j.scenario for j in jobs[:3]] == ["B", "C", "A"]
    with pytest.raises(InputError, match="seg: option lr must be a number > 0"):
        ExperimentConfig.from_dict(options)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(options))
    assert main(["experiment", str(path), "--quiet"]) == 2
    assert not (tmp_path / "exp").exists()


def test_b_takes_the_segmenter_width_of_a_unless_set():
    cfg = ExperimentConfig.from_dict({"data": "d", "out": "o", "cgan": {"preset": "cpu"}})
    fold = Path("o/fold_1")
    assert run_config(cfg, Job(0, "A", "unet"), fold).width == 16
    b = run_config(cfg, Job(0, "B", "unet"), fold)
    assert b.width == 16 and b.split_file.endswith("split_N.json") and b.model == "unet"
    assert run_config(cfg, Job(0, "C", "unet"), fold).split_file.endswith("split_all.json")
    cfg.seg = {"width": 8}
    assert run_config(cfg, Job(1, "B", "unet"), fold).width == 8
    assert run_config(cfg, Job(1, "B", "unet"), fold).seed == cfg.seed + 1


def test_the_conventional_scenarios_make_cells_as_a_does():
    fold = Path("o/fold_1")
    cfg = ExperimentConfig.from_dict({"data": "d", "out": "o", "cgan": {"preset": "cpu"}})
    assert run_config(cfg, Job(0, "A", "unet"), fold).instances == "flows"
    for scenario in "BC":
        assert run_config(cfg, Job(0, scenario, "unet"), fold).instances == "flows"
    cfg = ExperimentConfig.from_dict({"data": "d", "out": "o",
                                      "cgan": {"preset": "cpu", "instances": "watershed"}})
    assert run_config(cfg, Job(0, "B", "unet"), fold).instances == "watershed"


def _fake_result(fold: int, scenario: str, f1: float) -> dict:
    t = [round(0.5 + 0.05 * i, 2) for i in range(10)]
    curve = list(np.linspace(f1, 0.0, 10))
    result = {
        "fold": fold,
        "scenario": scenario,
        "backbone": "unet",
        "n_train_pairs": 200,
        "f1_50": f1,
        "f1_mean": float(np.mean(curve)),
        "accuracy_50": f1 / 2,
        "pq_50": f1 / 3,
        "dice": 0.8,
        "thresholds": t,
        "f1_curve": curve,
        "wall_s": 10.0,
    }
    if scenario == "A":
        result["fid"] = {
            "fid": 40.0 + fold,
            "kid_mean": 0.01,
            "kid_std": 0.001,
            "kid_subset_size": 50,
            "n_real": 50,
            "n_generated": 50,
        }
    return result


def test_report_builds_from_fake_metric_files(tmp_path):
    results = [
        _fake_result(fold, s, f1)
        for fold in range(3)
        for s, f1 in (("A", 0.8 + 0.02 * fold), ("B", 0.7), ("C", 0.9 - 0.01 * fold))
    ]
    cfg = ExperimentConfig.from_dict({"data": "d", "out": str(tmp_path / "none"), "folds": 3})
    page = write_experiment_report(cfg, results, tmp_path / "report")
    rows = {r["scenario"]: r for r in aggregate(results)}
    assert rows["A"]["f1_50"][0] == pytest.approx(0.82)
    assert rows["A"]["f1_50"][1] == pytest.approx(0.02)  # sample sd of 0.80, 0.82, 0.84
    assert rows["B"]["f1_50"][1] == pytest.approx(0.0) and rows["A"]["fid"][0] == 41.0
    assert "fid" not in rows["B"]
    html = page.read_text()
    assert '<img src="f1_vs_iou_unet.png">' in html and "0.820 ± 0.020" in html
    assert (tmp_path / "report" / "f1_vs_iou_unet.png").stat().st_size > 1000
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| A: cGAN-Seg, N pairs | unet | 200 | 0.820 ± 0.020 |" in md
    assert "| 2 | unet | 41.0 | 0.0100 | 50 / 50 |" in md  # fold 2; one KID subset: no sd
    csv_lines = (tmp_path / "report" / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 9 and csv_lines[0].startswith("fold,scenario,backbone")


def _write_yaml(tmp_path: Path, cfg: ExperimentConfig) -> Path:
    import yaml

    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


@pytest.mark.slow
def test_experiment_runs_resumes_and_refuses_other_settings(tmp_path, capsys):
    cfg = tiny_experiment(tmp_path)
    path = _write_yaml(tmp_path, cfg)
    assert main(["experiment", str(path), "--quiet"]) == 0
    exp = Path(cfg.out)
    results = sorted(exp.glob("fold_*/*_unet/result.json"))
    assert len(results) == 3 * 4
    d = json.loads((exp / "fold_2" / "D_unet" / "result.json").read_text())
    assert d["n_train_pairs"] == 2 and d["n_extra_pairs"] == 2
    c = json.loads((exp / "fold_2" / "C_unet" / "result.json").read_text())
    assert c["n_train_pairs"] > 2 and 0.0 <= c["f1_50"] <= 1.0
    report = exp / "report"
    for name in (
        "report.html",
        "report.md",
        "table.csv",
        "f1_vs_iou_unet.png",
        "segmentation_unet.png",
    ):
        assert (report / name).is_file(), name
    # run again: every run is skipped (result files untouched), the report is rebuilt
    stamps = {p: p.stat().st_mtime_ns for p in results}
    (report / "report.html").unlink()
    assert main(["experiment", str(path), "--quiet"]) == 0
    assert {p: p.stat().st_mtime_ns for p in results} == stamps
    assert (report / "report.html").is_file()
    # an unfinished run (result.json gone) is done again, from its last.pt
    (exp / "fold_1" / "B_unet" / "result.json").unlink()
    assert main(["experiment", str(path), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "resuming" in captured.out + captured.err
    assert (exp / "fold_1" / "B_unet" / "result.json").is_file()
    # other settings into the same folder are refused
    cfg.n_train = 3
    assert main(["experiment", str(_write_yaml(tmp_path, cfg)), "--quiet"]) == 2
    assert "other settings (n_train)" in capsys.readouterr().err


@pytest.mark.slow
def test_value_benchmark_quick_mode(tmp_path):
    """benchmarks/value.py --quick: both recipes, equal training CPU-seconds turned into steps,
    2 folds each, scores of the chosen checkpoint, FID for cGAN-Seg when the network is there."""
    from cganseg.models.fid_inception import find_fid_weights

    try:
        find_fid_weights()
        fid = True
    except InputError:
        fid = False  # the run says FID is missing ("-") and goes on
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "value.py"
    out = tmp_path / "value.json"
    command = [sys.executable, str(script), "--quick", "--work", str(tmp_path), "--out", str(out),
               "--recipes"]  # fmt: skip
    proc = subprocess.run(
        [*command, "conventional", "cgan", "cgan-init"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "training CPU-seconds per run" in proc.stdout and "chosen=first val" in proc.stdout
    saved = json.loads(out.read_text())
    entry = saved["sets"]["demo"]
    assert set(entry["runs"]) == {"conventional", "cgan", "cgan-init"}
    speed = entry["s_per_step"]
    for name, runs in entry["runs"].items():
        assert len(runs) == 2 and all(r["steps"] == runs[0]["steps"] for r in runs)
        # equal compute: steps x seconds per step is the same budget for every recipe
        share = 0.5 if name == "cgan-init" else 0.0  # the rest trained `conventional` first
        assert runs[0]["steps"] == max(1, int((1 - share) * 3.0 / speed[name]))
        assert all(0 <= r["f1_50_pooled"] <= 1 and 0 <= r["dice"] <= 1 for r in runs)
    init = entry["runs"]["cgan-init"][0]
    pre = init["pretrain_steps"]
    assert pre == max(1, int(0.5 * 3.0 / speed["conventional"]))
    config = (tmp_path / "quick" / "demo" / "fold_1" / f"cgan-init_{init['steps']}steps" /
              "config.yaml").read_text()  # fmt: skip
    assert f"conventional_{pre}steps" in config  # Seg started from that run
    for r in entry["runs"]["cgan"]:  # of best.pt's generator and of the last step's
        assert (r["fid"] is not None) == fid and (r["fid_last"] is not None) == fid
    assert entry["runs"]["conventional"][0]["fid_last"] is None
    assert entry["summary"]["cgan"]["n_runs"] == 2
    if fid:  # a run cached by an older value.py gets its missing FID, the same as a fresh one
        steps = entry["runs"]["cgan"][0]["steps"]
        cached = tmp_path / "quick" / "demo" / "fold_1" / f"cgan_{steps}steps"
        stored = json.loads((cached / "value.json").read_text())
        del stored["fid_last"]
        (cached / "value.json").write_text(json.dumps(stored))
        again = subprocess.run([*command, "cgan"], capture_output=True, text=True,
                               timeout=900)  # fmt: skip
        assert again.returncode == 0, again.stderr[-2000:]
        refilled = json.loads((cached / "value.json").read_text())
        assert refilled["fid_last"] == pytest.approx(entry["runs"]["cgan"][0]["fid_last"])
    # --finished-only: the finished runs are reported, a recipe never run is not trained
    listed = subprocess.run([*command, "cgan", "cgan-ema", "--finished-only"],
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert listed.returncode == 0, listed.stderr[-2000:]
    summary = json.loads(out.read_text())["sets"]["demo"]["summary"]
    assert summary["cgan"]["n_runs"] == 2 and summary["cgan-ema"]["n_runs"] == 0
    assert not list((tmp_path / "quick" / "demo").glob("fold_*/cgan-ema_*"))


@pytest.mark.slow
def test_peers_benchmark_quick_mode(tmp_path):
    """benchmarks/peers.py --quick: our flow recipe and Cellpose 3 from scratch on the same two
    folds, budgets turned into steps by their timing, Cellpose scored by our evaluation."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"
    out = tmp_path / "peers.json"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--recipes", "flows", "cellpose", "--work",
         str(tmp_path), "--out", str(out)],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    entry = json.loads(out.read_text())["sets"]["demo"]
    speed = entry["s_per_step"]
    assert speed["cellpose"] > speed["flows"] > 0  # Cellpose's network is the larger one
    for runs in entry["runs"].values():
        assert len(runs) == 2 and all(0 <= r["f1_50_pooled"] <= 1 for r in runs)
        assert set(runs[0]["thresholds"]) >= {"cellprob_threshold", "flow_threshold"}
    assert (tmp_path / "quick" / "demo" / "fold_1" / "cellpose_1steps" / "test" /
            "metrics.json").is_file()  # fmt: skip


@pytest.fixture
def value(monkeypatch):
    """benchmarks/value.py as a module (it is a script, not part of the package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "value.py"
    spec = importlib.util.spec_from_file_location("value_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look themselves up
    spec.loader.exec_module(module)
    return module


def test_value_timing_of_added_recipes_is_scaled_to_the_kept_pass(value):
    """A recipe added later is timed beside the fastest kept one, and scaled by that recipe's
    kept/now ratio: on a machine twice as slow it still gets the steps of the first pass."""
    true_speed = {"conventional": 0.3, "cgan": 3.0, "cgan-new": 1.5}
    asked: list[list[str]] = []

    def slow_machine(names: list[str]) -> dict[str, float]:
        asked.append(names)
        return {n: 2 * true_speed[n] for n in names}

    kept = {"conventional": 0.3, "cgan": 3.0}
    assert value.timed_against_kept(kept, ["cgan-new"], slow_machine) == pytest.approx(
        {"cgan-new": 1.5})
    assert asked == [["conventional", "cgan-new"]]  # the fastest kept one is the reference
    assert value.timed_against_kept({}, ["cgan"], slow_machine) == {"cgan": 6.0}


def test_value_flows_recipes_make_cells_with_flows_and_pretrain_with_flows(value, tmp_path):
    """NAME-flows is NAME with Cellpose-style flows, pre-trained by conventional-flows: one way of
    making cells on both sides of a comparison."""
    args = argparse.Namespace(seed=0, device="cpu", quick=False)
    for name in ("conventional", "cgan", "cgan-all", "cgan-all-zero"):
        plain = value.run_config(name, args, tmp_path, tmp_path, 0, 10)
        flows = value.run_config(f"{name}-flows", args, tmp_path, tmp_path, 0, 10)
        assert plain.instances == "watershed" and flows.instances == "flows"
        differ = {k for k, v in vars(flows).items() if vars(plain)[k] != v}
        assert differ == {"instances", "out"}, name
    assert value.RECIPES["cgan-all-flows"].pretrain == ("conventional-flows", 0.5)
    assert value.RECIPES["cgan-all"].pretrain == ("conventional", 0.5)


def test_value_cgan_lr_is_the_paper_recipe_with_train_segs_learning_rate(value, tmp_path):
    """The diagnosis of the paper recipe's collapsing folds changes Seg's learning rate alone."""
    args = argparse.Namespace(seed=0, device="cpu", quick=False)
    lr, paper, conventional = (value.run_config(name, args, tmp_path, tmp_path, 0, 10)
                               for name in ("cgan-lr", "cgan", "conventional"))  # fmt: skip
    assert {k for k, v in vars(lr).items() if vars(paper)[k] != v} == {"lr", "out"}
    assert lr.lr == conventional.lr != paper.lr
