"""The speed benchmark (benchmarks/speed.py) runs in its quick mode and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


@pytest.mark.slow
def test_speed_benchmark_quick_mode(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--backbones", "unet", "--out", str(out)]
        + ["--variants", "before", "default"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "s/step" in proc.stdout and "MP/s" in proc.stdout
    record = json.loads(out.read_text())
    rows = {(r["variant"], r["kind"]) for r in record["results"]}
    assert rows == {(v, k) for v in ("before", "default") for k in ("train", "train-seg")} | {
        ("default", "segment")
    }
    by_kind = {r["kind"]: r for r in record["results"] if r["variant"] == "default"}
    assert by_kind["train"]["s_per_step"] > 0 and by_kind["segment"]["megapixels_per_s"] > 0
    assert by_kind["train-seg"]["s_per_step_with_loading"] > 0
    assert all(r["peak_memory_mb"] > 50 for r in record["results"])
