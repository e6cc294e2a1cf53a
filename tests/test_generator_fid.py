"""The generator's FID/KID on held-out masks, after training and during it (issue 31)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tests.helpers import TinyFeatures, make_dataset, metrics_rows, synthetic_pair
from tests.helpers import tiny_cgan_config as _cfg

from cganseg.cli import main
from cganseg.data.dataset import Sample
from cganseg.data.normalize import normalize_percentile
from cganseg.errors import InputError
from cganseg.evaluation.fid import HeldOutFid
from cganseg.training.cgan_trainer import train_cgan


def _samples(n: int) -> list[Sample]:
    out = []
    for i in range(n):
        image, labels = synthetic_pair((40, 40), seed=i)
        out.append(Sample(f"s{i}", normalize_percentile(image[None]), labels.astype(np.int32)))
    return out


def test_held_out_fid_is_zero_for_the_real_images_and_positive_for_a_poor_generator():
    samples = _samples(6)
    held_out = HeldOutFid(samples, TinyFeatures(), seed=3)
    real = {s.name: s.image for s in samples}
    seeds: list[int] = []

    def copy(labels: np.ndarray, seed: int) -> np.ndarray:
        seeds.append(seed)
        return next(s.image for s in samples if s.labels is labels)

    assert held_out.score(held_out.generate(copy))["fid"] == pytest.approx(0.0, abs=1e-6)
    assert seeds == [3, 4, 5, 6, 7, 8]  # one seeded image per mask
    flat = held_out.score([np.zeros_like(real[s.name]) + 0.1 * (i % 2)
                           for i, s in enumerate(samples)])  # fmt: skip
    assert flat["fid"] > 1.0 and flat["n_real"] == flat["n_generated"] == 6


def test_held_out_fid_needs_two_images():
    with pytest.raises(InputError, match="at least 2 held-out images"):
        HeldOutFid(_samples(1), TinyFeatures())


def test_val_fid_logs_the_generators_fid_and_kid_at_each_validation(tmp_path, tiny_fid_network):
    data = make_dataset(tmp_path / "data", n=8, size=(37, 53))
    out = tmp_path / "run"
    train_cgan(_cfg(data, out, iterations=4, val_every=2, val_fraction=0.25, val_fid=True),
               progress=False)  # fmt: skip
    rows = metrics_rows(out)
    scored = [r for r in rows if r["val_fid"]]
    assert [r["step"] for r in scored] == ["2", "4"]  # each validation, nothing in between
    assert all(math.isfinite(float(r["val_fid"])) and float(r["val_fid"]) >= 0 for r in scored)
    assert all(r["val_kid"] for r in scored) and not any(r["val_kid"] for r in rows
                                                         if not r["val_fid"])  # fmt: skip
    plain = tmp_path / "plain"  # without the option the columns are not there
    train_cgan(_cfg(data, plain, iterations=2, val_every=2, val_fraction=0.25), progress=False)
    assert "val_fid" not in metrics_rows(plain)[0]


def test_val_fid_without_the_network_stops_before_training(tmp_path, monkeypatch, capsys):
    data = make_dataset(tmp_path / "data", n=8, size=(37, 53))
    monkeypatch.setenv("CGANSEG_FID_WEIGHTS", str(tmp_path / "missing.pt"))
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--iterations", "2",
            "--val-fid", "--perceptual", "none", "--quiet"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "FID weights file not found" in err[0]
    assert not (out / "last.pt").exists()


def test_val_fid_needs_two_validation_images(tmp_path, tiny_fid_network):
    data = make_dataset(tmp_path / "data", n=8, size=(37, 53))
    with pytest.raises(InputError, match="at least 2 validation images"):
        train_cgan(_cfg(data, tmp_path / "run", val_fraction=0.1, val_fid=True), progress=False)


@pytest.mark.slow
def test_generator_benchmark_quick_mode(tmp_path, tiny_fid_network):
    """benchmarks/generator_fid.py --quick: a recipe's FID curve against CPU-seconds on fixed
    validation images, the last generator's test FID, the real-vs-real floor, a cached rerun."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "generator_fid.py"
    out = tmp_path / "genfid.json"
    command = [sys.executable, str(script), "--quick", "--work", str(tmp_path), "--out", str(out),
               "--recipes", "gan", "--seeds", "1"]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    entry = json.loads(out.read_text())["sets"]["demo"]
    assert entry["split"] == {"train": 30, "val": 5, "test": 5}
    assert entry["floor"]["fid"] > 0 and entry["floor"]["n_real"] == 5
    (run,) = entry["runs"]["gan"]
    speed = entry["s_per_step"]["gan"]
    assert run["steps"] == max(1, int(3.0 / speed))  # equal CPU-seconds, as value.py's
    steps = [p["step"] for p in run["curve"]]
    assert steps and steps[-1] == run["steps"] and steps == sorted(set(steps))
    assert all(p["cpu_s"] == pytest.approx(p["step"] * speed) and p["fid"] > 0
               for p in run["curve"])  # fmt: skip
    assert run["test_fid"] > 0 and (tmp_path / "genfid.png").is_file()
    assert entry["summary"]["gan"]["test_fid"]["mean"] == pytest.approx(run["test_fid"])
    again = subprocess.run([*command, "--finished-only"], capture_output=True, text=True,
                           timeout=900)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    cached = json.loads(out.read_text())["sets"]["demo"]["runs"]["gan"]
    assert cached == [run]
