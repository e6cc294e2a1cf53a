"""The speed comparison with Cellpose 3 (benchmarks/vs_cellpose.py) runs in its quick mode and
reports every figure of its table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "vs_cellpose.py"


@pytest.mark.slow
def test_vs_cellpose_quick_mode(tmp_path):
    out = tmp_path / "vs.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["peak_gflops"] > 0 and set(record["tools"]) == {"ours", "cellpose"}
    for tool, row in record["tools"].items():
        step, seg = row["train_step"], row["segment"]
        assert step["crop"] == 32 and step["batch"] == 2, tool
        assert 0 < step["limit_s"] and step["compute_s"] > 0 and step["with_loading_s"] > 0
        assert seg["images_per_s"] > 0 and seg["network_s"] > 0 and seg["flows_s"] > 0
        assert seg["peak_rss_gb"] > 0.05
    # Cellpose's network is the larger one (CPnet nbase 32 against UNet width 16)
    assert record["tools"]["cellpose"]["train_step"]["gflop_forward"] > \
        record["tools"]["ours"]["train_step"]["gflop_forward"]
    # both follow the flows of the same images (ours), so they find cells alike
    cells = [row["segment"]["cells_per_image"] for row in record["tools"].values()]
    assert min(cells) > 0
