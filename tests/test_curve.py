"""`cganseg curve` (issue 30, item 4): nested subsets trained and scored on the same held-out
pairs, a saturating fit, the expected gain from doubling in plain words; resumable."""

from __future__ import annotations

import json
from itertools import pairwise

import numpy as np
import pytest
import yaml
from tests.helpers import make_dataset, tiny_seg_config

from cganseg.cli import main
from cganseg.experiment.curve import analyse, doubling_gain, fit, in_words, plan


def test_the_plan_nests_the_subsets_and_holds_out_the_same_pairs():
    names = [f"p{i:02d}" for i in range(40)]
    test, runs = plan(names, [0.125, 0.25, 0.5, 1.0], draws=2, test_fraction=0.25, seed=1)
    assert len(test) == 10 and not set(test) & {n for r in runs for n in r["pairs"]}
    assert [len(r["pairs"]) for r in runs] == [4, 8, 15, 30, 4, 8, 15]  # all once: one draw
    for draw in (0, 1):
        mine = [set(r["pairs"]) for r in runs if r["draw"] == draw]
        assert all(a < b for a, b in pairwise(mine))  # each inside the next
    assert runs[0]["pairs"] != runs[4]["pairs"]
    with pytest.raises(Exception, match="too few"):
        plan(["a", "b", "c"], [0.5, 1.0], 1, 0.25, 0)


def test_the_fit_recovers_a_saturating_curve_and_its_next_doubling():
    a, b, r = 0.9, 0.5, 0.6
    points = {n: [a - b * r ** np.log2(n)] for n in (2, 4, 8, 16)}
    params = fit(points)
    assert params is not None and np.allclose(params, (a, b, r), atol=1e-3)
    assert doubling_gain(params, 16) == pytest.approx(b * r**4 * (1 - r), abs=1e-4)
    assert fit({2: [0.5], 4: [0.6]}) is None  # two sizes do not make a curve


def test_analyse_states_the_gain_with_an_interval():
    rng = np.random.default_rng(0)
    results = []
    for n, p_hit in ((2, 0.5), (4, 0.65), (8, 0.75), (16, 0.8)):
        for draw in range(2):
            tp = rng.binomial(20, p_hit, size=12)
            results.append({"pairs": list(range(n)), "draw": draw,
                            "counts": [[int(t), 20 - int(t), 20 - int(t)] for t in tp]})
    summary = analyse(results)
    f = summary["fit"]
    low, high = f["gain_interval_90"]
    assert low <= f["expected_gain_doubling"] <= high and f["resamples"] > 100
    assert summary["last_doubling"]["from"] == 8 and summary["sizes"]["16"]["runs"] == 2


def _runs(scatter: float) -> list[dict]:
    """Four sizes, three draws each, the same mean hit rate per size; the draws of a size differ
    by ``scatter`` in hit rate (what one draw of training images does to a score)."""
    results = []
    for n, p_hit in ((2, 0.5), (4, 0.65), (8, 0.75), (16, 0.8)):
        for draw, shift in enumerate((-scatter, 0.0, scatter)):
            tp = round(20 * (p_hit + shift))
            results.append({"pairs": list(range(n)), "draw": draw,
                            "counts": [[tp, 20 - tp, 20 - tp]] * 12})
    return results


def test_the_interval_counts_the_scatter_between_draws():
    steady, scattered = analyse(_runs(0.0))["fit"], analyse(_runs(0.1))["fit"]
    assert steady["draw_sd"] < 1e-9 and scattered["draw_sd"] > 0.05
    width = {k: f["gain_interval_90"][1] - f["gain_interval_90"][0]
             for k, f in (("steady", steady), ("scattered", scattered))}  # fmt: skip
    assert width["scattered"] > 5 * max(width["steady"], 1e-3)
    # the mean of more new runs scatters less
    many = analyse(_runs(0.1), new_runs=8)["fit"]["gain_interval_90"]
    assert many[1] - many[0] < width["scattered"]


def test_a_doubling_that_gained_nothing_is_said_plainly():
    results = _runs(0.0)
    for r in results:  # the largest size scores below the one before it
        if len(r["pairs"]) == 16:
            r["counts"] = [[14, 6, 6]] * 12
    words = in_words(analyse(results))
    assert "gained -0.0" in words and "last doubling gained nothing" in words


@pytest.mark.slow
def test_curve_runs_states_its_budget_and_resumes(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n=12)
    run_options = {k: v for k, v in tiny_seg_config(data, tmp_path / "x", iterations=2).to_dict()
                   .items() if k not in ("data", "out", "split_file", "seed")}  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run_options))
    command = ["curve", str(data), "--out", str(tmp_path / "curve"), "--config",
               str(tmp_path / "run.yaml"), "--fractions", "0.25", "0.5", "1", "--draws", "1",
               "--quiet"]  # fmt: skip
    assert main(command) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "CPU-minutes" in out and "With all 9 annotated pairs" in out
    saved = json.loads((tmp_path / "curve" / "curve.json").read_text())
    assert sorted(saved["sizes"], key=int) == ["2", "4", "9"] and len(saved["test"]) == 3
    assert (tmp_path / "curve" / "curve.png").stat().st_size > 0
    # again: every run is finished, nothing is trained, the same answer
    assert main(command) == 0
    again = capsys.readouterr().out
    assert "CPU-minutes" not in again
    assert json.loads((tmp_path / "curve" / "curve.json").read_text())["sizes"] == saved["sizes"]


def _fewshot_record(sizes: tuple[int, ...], with_counts: bool = True) -> dict:
    """A benchmarks/fewshot.py record of finetune runs whose per-image hit rate saturates."""
    rng = np.random.default_rng(1)
    runs = []
    for n in sizes:
        p_hit = 0.9 - 0.5 * 0.6 ** np.log2(n)
        for draw in range(3):
            tp = rng.binomial(20, p_hit, size=12)
            scores = {"f1_50_pooled": 0.0}
            if with_counts:
                scores["counts_50"] = [[int(t), 20 - int(t), 20 - int(t)] for t in tp]
            runs.append({"set": "s", "arm": "finetune", "n": n, "draw": draw, "scores": scores,
                         "train": [f"p{i}" for i in range(n)], "val": []})  # fmt: skip
    return {"runs": runs}


def test_curve_check_sets_curves_prediction_against_the_real_doubling(tmp_path):
    """benchmarks/curve_check.py on a fewshot record: curve's fit on N 1/3/10 predicts the gain
    to N 20 with an interval, the real gain is the mean difference; a run recorded without
    per-image counts is one clear error (exit 2)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "curve_check.py"
    record, out = tmp_path / "fewshot.json", tmp_path / "check.json"
    record.write_text(json.dumps(_fewshot_record((1, 3, 10, 20))))
    cmd = [sys.executable, str(script), "--sets", "s", "--record", str(record), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(out.read_text())
    assert row["runs_fitted"] == 9 and row["runs_checked"] == 3
    low, high = row["interval_90"]
    assert low <= row["predicted_gain"] <= high and 0 < row["real_gain"] < 0.2
    assert ("within" if row["within_interval"] else "OUTSIDE") in proc.stdout
    record.write_text(json.dumps(_fewshot_record((1, 3, 10, 20), with_counts=False)))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "without per-image counts" in proc.stderr
    assert proc.stderr.count("\n") == 1  # one line, no traceback
