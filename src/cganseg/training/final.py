"""The end of a training run: the flow thresholds chosen on the validation images, and
``best.pt`` scored on the test images.

Tuning (:func:`cganseg.training.tuning.tune_thresholds`) rewrites ``best.pt``'s post-processing
entry, so ``segment`` uses what validation chose; the test images are segmented as ``segment``
would and scored (``RUN/test/``). A stop asked for while testing ends it between two images
(``--resume`` of the finished run tests again).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cganseg.checkpoint import load_checkpoint, save_checkpoint
from cganseg.evaluation.evaluate import evaluate_pairs, write_report
from cganseg.inference.segment import Segmenter
from cganseg.instances.postprocessing import ENTRY as POST_ENTRY
from cganseg.runtime.atomic import write_text
from cganseg.runtime.interrupt import check
from cganseg.training.tuning import tune_thresholds

#: a :class:`cganseg.training.loop.TrainerBase` (not imported: the loop imports this module)
TrainerBase = Any


def tune_and_test(trainer: TrainerBase) -> dict[str, Any]:
    """Tune the thresholds of ``best.pt`` (flow modes, ``tune_thresholds``) and score it on the
    test split (if any); returns the run's summary."""
    data, run_dir = trainer.data, trainer.run_dir
    summary: dict[str, Any] = {"step": trainer.step, "best_val_f1_iou50": trainer.early.best}
    tune = trainer.mode.threshold_grid and trainer.cfg.tune_thresholds and data.val
    if not trainer.rank.main:
        return summary
    best = load_checkpoint(run_dir / "best.pt", map_location=trainer.device)
    summary["best_step"] = best["step"]  # 0: a fine-tuned run kept its start
    if not (data.test or tune):
        return summary
    trainer.segmenter.load_state_dict(best["model_state"])
    seg = trainer.as_segmenter(trainer.segmenter)
    if tune:
        tuned = tune_thresholds(seg, data.val, trainer.cfg.tile_size)
        post = seg.post.replace(**{k: tuned[k] for k in trainer.mode.threshold_grid})
        seg = dataclasses.replace(seg, post=post)
        save_checkpoint(run_dir / "best.pt", {**best, POST_ENTRY: post.entry(),
                                              "val_mean_f1": tuned["val_mean_f1"]})  # fmt: skip
        summary["postprocessing"] = tuned
        note_tuned(run_dir / "config.yaml", {k: tuned[k] for k in trainer.mode.threshold_grid})
    if data.test:
        report = evaluate_pairs(_test_pairs(seg, trainer))
        write_report(report, run_dir / "test")
        summary["test_f1_iou50"] = report["per_image"]["f1"][0]
    return summary


def note_tuned(config: Path, values: dict[str, float]) -> None:
    """Say at the end of ``config.yaml`` which thresholds ``best.pt`` uses (issue 33: the file
    kept the given 0.4 while the tuned 0.6 lived only in the checkpoint). A YAML comment: the
    options above stay the ones the run was started with, as ``--resume`` reads them."""
    if not config.is_file():
        return
    text = config.read_text(encoding="utf-8").split("# tuned after training")[0]
    tuned = ", ".join(f"{k} {v:g}" for k, v in values.items())
    write_text(config, f"{text}# tuned after training on the validation images, used by best.pt "
                       f"(and segment): {tuned}\n")  # fmt: skip


def _test_pairs(seg: Segmenter, trainer: TrainerBase) -> Iterator[tuple[str, np.ndarray,
                                                                       np.ndarray]]:  # fmt: skip
    """(name, truth, prediction) of each test image; a stop asked for ends it between two
    images."""
    for s in trainer.data.test:
        yield s.name, s.labels, seg.segment(s.image, tile_size=trainer.cfg.tile_size)
        check("stopped while testing best.pt after the last step; --resume tests again")
