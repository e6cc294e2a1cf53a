"""Easy/hard test images (paper Table 2) and ``evaluate --split-hard``."""

from __future__ import annotations

import numpy as np
from tests.helpers import write_image

from cganseg.cli import main
from cganseg.evaluation.hardness import hardness, touching_pairs


def test_touching_pairs_counts_distinct_neighbours():
    labels = np.zeros((10, 10), np.int32)
    labels[1:4, 1:4], labels[1:4, 4:6] = 1, 2  # 1 and 2 share a boundary
    labels[4:6, 1:3] = 3  # touches 1 from below
    labels[8:10, 8:10] = 4  # alone
    labels[7, 7] = 5  # diagonal to 4 only: not a shared boundary
    assert touching_pairs(labels) == 2
    assert hardness(labels).hard
    apart = np.zeros((10, 10), np.int32)
    apart[1:3, 1:3], apart[6:8, 6:8] = 1, 2
    h = hardness(apart)
    assert (h.touching_pairs, h.hard) == (0, False)
    assert hardness(apart, dense_fraction=0.05).hard  # dense enough counts as hard


def test_evaluate_split_hard_reports_both_groups(tmp_path, capsys):
    easy = np.zeros((20, 20), np.uint16)
    easy[2:6, 2:6], easy[12:16, 12:16] = 1, 2
    hard = np.zeros((20, 20), np.uint16)
    hard[2:8, 2:6], hard[2:8, 6:10], hard[2:8, 10:14] = 1, 2, 3
    write_image(tmp_path / "gt" / "a.png", easy)
    write_image(tmp_path / "gt" / "b.png", hard)
    write_image(tmp_path / "pred" / "a.png", easy)  # perfect on the easy image
    merged = (hard > 0).astype(np.uint16) * 7  # the touching pair merged: IoU 1/3 with each
    write_image(tmp_path / "pred" / "b.png", merged)
    out = tmp_path / "ev"
    argv = ["evaluate", str(tmp_path / "gt"), str(tmp_path / "pred"), "--out", str(out)]
    assert main([*argv, "--split-hard", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "easy 1 images: F1@0.5 1.000" in printed and "hard 1 images: F1@0.5 0.000" in printed
    assert (out / "easy" / "metrics.json").is_file() and (out / "hard" / "metrics.json").is_file()
    rows = (out / "hardness.csv").read_text().splitlines()
    assert rows[1].startswith("a,easy,0,") and rows[2].startswith("b,hard,2,")
    assert main([*argv, "--split-hard", "--dense-fraction", "0", "--quiet"]) == 2
