"""The GPU check (benchmarks/gpu_check.sh) runs every step in its CPU dry mode and reports it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


@pytest.mark.slow
def test_gpu_check_dry_mode_runs_every_step(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run([str(SCRIPT), "--device", "cpu", "--out", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    record = json.loads((tmp_path / "gpu_check_cpu.json").read_text())
    steps = record["steps"]
    assert proc.returncode == 0, json.dumps(steps)[-2000:] + proc.stderr[-1000:]
    assert record["dry_mode"] and set(steps) == {"env", "speed", "train-seg", "segment", "ddp"}
    assert all(s["status"] == "ok" for s in steps.values())
    kinds = {r["kind"]: r for r in steps["speed"]["rows"]}
    assert kinds["train"]["s_per_step"] > 0 and kinds["train-seg"]["s_per_step"] > 0
    assert steps["train-seg"]["last_validation"] is not None
    assert steps["segment"]["network_s"] > 0 and steps["segment"]["flow_following_s"] > 0
    assert steps["ddp"]["process_group"] == {"backend": "gloo", "world": 1, "all_reduce": 1.0}
    assert steps["ddp"]["train_seg_under_torchrun"]


def test_gpu_check_names_the_missing_wheels(tmp_path):
    """An interpreter without the packages and no .whl folder: one line saying what to run."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    copy = tmp_path / "repo" / "benchmarks"
    copy.mkdir(parents=True)
    (copy / "gpu_check.sh").write_text(SCRIPT.read_text())
    (copy / "gpu_check.sh").chmod(0o755)
    proc = subprocess.run([str(copy / "gpu_check.sh")], env={**os.environ, "PYTHON": str(fake)},
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2
    assert "gpu_check.sh --wheels" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
