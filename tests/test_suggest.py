"""`cganseg suggest` (issue 30, item 2): images ranked by how much the model's cells change when
the image is mirrored or turned, the top N written ready to correct and to train on."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from cganseg.cli import main
from cganseg.data.corrections import read_mask
from cganseg.data.folders import find_pairs
from cganseg.evaluation.suggest import agreement, rank
from cganseg.inference.segment import load_segmenter


def test_agreement_is_one_for_the_same_cells_and_drops_for_a_lost_one():
    plain = np.zeros((20, 20), np.int32)
    plain[2:8, 2:8], plain[12:18, 12:18] = 1, 2
    f1, confidence = agreement(plain, plain.copy())
    assert f1 == 1.0 and np.all(confidence == 1.0)
    view = plain.copy()
    view[view == 2] = 0  # the view loses a cell and finds a new one
    view[12:16, 2:6] = 7
    f1, confidence = agreement(plain, view)
    assert f1 < 1.0
    assert np.all(confidence[2:8, 2:8] == 1.0) and np.all(confidence[12:18, 12:18] == 0.0)
    assert np.all(confidence[12:16, 2:6] == 0.0)  # only the view finds it: unsure there
    assert agreement(np.zeros((4, 4), np.int32), np.zeros((4, 4), np.int32))[0] == 1.0


def test_suggest_writes_the_most_uncertain_images_ready_to_correct(seg_run, tiny_dataset,
                                                                   tmp_path, capsys):  # fmt: skip
    out = tmp_path / "todo"
    rc = main(["suggest", str(seg_run), str(tiny_dataset / "images"), "--out", str(out),
               "--n", "2", "--quiet"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    with (out / "ranking.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and [r["written"] for r in rows] == ["1", "1", "0", "0", "0", "0"]
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    # the same ranking from Python
    ranked = rank(load_segmenter(seg_run, "cpu"), sorted((tiny_dataset / "images").iterdir()),
                  progress=False)  # fmt: skip
    assert [s.path.name for s in ranked] == [r["image"] for r in rows]
    top = [r["image"] for r in rows[:2]]
    pairs = find_pairs(out)  # a training folder as it is: images + their _seg.npy
    assert sorted(p.image.name for p in pairs) == sorted(top)
    by_name = {s.path.name: s for s in ranked}
    for pair in pairs:
        suggestion = by_name[pair.image.name]
        labels = read_mask(pair.mask, suggestion.labels.shape)
        assert np.array_equal(labels, suggestion.labels)
        confidence = tifffile.imread(out / "confidence" / f"{pair.name}.tif")
        assert confidence.shape == labels.shape and confidence.dtype == np.float32
        assert 0.0 <= confidence.min() and confidence.max() <= 1.0


def test_corrected_suggestions_grow_the_training_set_of_the_next_round(seg_run, tiny_dataset,
                                                                       tmp_path, capsys):
    """Round 2 of the loop (issue 30, item 3): fine-tune the user's own run on the old pairs
    plus the corrected suggestions (--extra: trained in every batch, never validated on)."""
    todo = tmp_path / "todo"
    assert main(["suggest", str(seg_run), str(tiny_dataset / "images"), "--out", str(todo),
                 "--n", "2", "--quiet"]) == 0  # fmt: skip
    run = tmp_path / "round2"
    rc = main(["train-seg", "--init", str(seg_run), "--data", str(tiny_dataset), "--extra",
               str(todo), "--out", str(run), "--iterations", "2", "--crop", "32",
               "--batch-size", "2", "--workers", "0", "--quiet"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["init_seg"] == str(seg_run) and config["extra"] == str(todo)
    assert config["lr"] == 3e-4  # fine-tuning's default, not train-seg's 1e-3
    assert (run / "best.pt").is_file()


def test_rank_at_auto_measures_each_image_once_and_segments_its_views_at_that_size(monkeypatch):
    """A view shows the same cells, so `rank` at diameter "auto" searches the scales once per
    image (on the plain image) and segments the three views at the size it measured there."""
    from cganseg.demo import demo_data_dir
    from cganseg.inference.segment import Segmenter

    events: list = []  # "search" for each scale search, else the diameter of each pass
    search, segment_at = Segmenter.auto_diameter, Segmenter.segment_at

    def counted_search(self, *args, **kwargs):
        events.append("search")
        return search(self, *args, **kwargs)

    def recorded(self, image, tile_size, batch_size, diameter):
        events.append(diameter)
        return segment_at(self, image, tile_size, batch_size, diameter)

    monkeypatch.setattr(Segmenter, "auto_diameter", counted_search)
    monkeypatch.setattr(Segmenter, "segment_at", recorded)
    images = sorted((demo_data_dir() / "images").iterdir())[:2]
    ranked = rank(load_segmenter("nuclei", "cpu"), images, diameter="auto", progress=False)
    assert len(ranked) == 2 and events.count("search") == 2 and events[0] == "search"
    cut = events.index("search", 1)
    for passes in (events[1:cut], events[cut + 1 :]):  # per image: plain pass(es), 3 views
        assert len(passes) >= 4 and all(isinstance(d, float) for d in passes)
        assert passes[-3:] == [passes[-4]] * 3  # the views at the plain image's last size


def test_suggest_refuses_its_input_folder_as_output(seg_run, tiny_dataset, capsys):
    folder = tiny_dataset / "images"
    assert main(["suggest", str(seg_run), str(folder), "--out", str(folder), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "output folder is the input folder" in err[0]


@pytest.mark.slow
def test_annotation_loop_benchmark_quick_mode(tmp_path):
    """benchmarks/annotation_loop.py --quick: both arms, two rounds, each round fine-tuned from
    the one before on the grown set."""
    from tests.helpers import tiny_seg_config

    from cganseg.demo import demo_data_dir
    from cganseg.training.seg_trainer import train_segmenter

    start = tmp_path / "start"
    train_segmenter(tiny_seg_config(demo_data_dir(), start, iterations=2, instances="flows",
                                    channels="gray"), progress=False)  # fmt: skip
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "annotation_loop.py"
    out = tmp_path / "loop.json"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--start", str(start),
                           "--work", str(tmp_path / "work"), "--out", str(out)],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["arm"], r["round"], len(r["annotated"])) for r in rows] == [
        ("suggest", 0, 3), ("suggest", 1, 6), ("random", 0, 3), ("random", 1, 6)]
    round1 = tmp_path / "work/loop/demo/seed0/suggest/round1/run/config.yaml"
    assert yaml.safe_load(round1.read_text())["init_seg"].endswith("round0/run")
