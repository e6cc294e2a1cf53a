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

from cganseg.checkpoint import SEGMENTER, load_checkpoint, resolve_checkpoint, save_checkpoint
from cganseg.evaluation.evaluate import evaluate_pairs, write_report
from cganseg.inference.segment import Segmenter
from cganseg.instances.postprocessing import ENTRY as POST_ENTRY
from cganseg.instances.postprocessing import PostProcessing
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
    if not trainer.rank.main:
        return summary
    best = load_checkpoint(run_dir / "best.pt", map_location=trainer.device)
    summary["best_step"] = best["step"]
    kept = start_entries(trainer, best)
    few = few_images_diameter(trainer, best) if kept is None else None
    if kept is not None or few is not None:
        best = {**best, **(kept or few)}
        save_checkpoint(run_dir / "best.pt", best)
    tune = (kept is None and trainer.mode.threshold_grid and trainer.cfg.tune_thresholds
            and data.val)  # fmt: skip
    if not (data.test or tune):
        return summary
    trainer.segmenter.load_state_dict(best["model_state"])
    seg = trainer.as_segmenter(trainer.segmenter)
    if kept is not None:
        post = PostProcessing.from_checkpoint(best, trainer.cfg.n_classes, run_dir)
        seg = dataclasses.replace(seg, post=post, default_diameter=best.get("default_diameter"))
    if few is not None:
        seg = dataclasses.replace(seg, default_diameter=few["default_diameter"])
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


def start_entries(trainer: TrainerBase, best: dict[str, Any]) -> dict[str, Any] | None:
    """When fine-tuning's guard kept the start (``best.pt`` is step 0 of a run with
    ``init_seg``), the start's own way of segmenting for ``best.pt``: its thresholds and
    training diameter (tuned and measured on its own data, not on one or two validation images
    of yours) and its default diameter (a shipped model's is auto), the run's ``min_size``
    kept. Then ``best.pt`` segments exactly as the start does (DSB nuclei, 10 images: the kept
    start scored 0.82-0.86 F1@0.5 with thresholds tuned on the one validation image and the
    ten images' median size, the start itself 0.87). None when training beat the start."""
    if not (trainer.validates_start(trainer.cfg) and best["step"] == 0):
        return None
    start = load_checkpoint(resolve_checkpoint(trainer.cfg.init_seg, SEGMENTER))
    kept = {POST_ENTRY: {**start[POST_ENTRY], "min_size": best[POST_ENTRY]["min_size"]}}
    if start.get("default_diameter") is not None:
        kept["default_diameter"] = start["default_diameter"]
    return kept


def few_images_diameter(trainer: TrainerBase, best: dict[str, Any]) -> dict[str, Any] | None:
    """A run fine-tuned on so few pairs that none is held out for validation (fewer than 10),
    from a start that measures the cells' size itself (default diameter ``auto``, as the
    shipped models), keeps that default: the median size of one to nine images says little of
    the next image's. Measured on the learning curve's runs (``benchmarks/fewshot.py``, each
    scored both ways): with 3 images, ``auto`` against the images' median scored +0.052 (DSB,
    mixed magnifications), +0.009 (murphy) and +0.028 (usiigaci) pooled F1@0.5, mean of 3
    draws each (with 1 image, usiigaci +0.023); trained on 2 of 3 (the guard's arm, not
    kept) +0.035, -0.004 and -0.054: where the few images made a weak model of cells the start
    never saw, measuring them can lose. A run that validates keeps its images' median: with
    10 or more, ``auto`` lost 0.054 on usiigaci, whose images share one magnification.

    The flow thresholds stay the options' (Cellpose's defaults), not the start's: the start's
    tuned ones, kept under 10 pairs, were measured (2026-12-07, 3 images, 3 draws each) and
    helped only where the start fits the data: DSB +0.016 pooled F1@0.5, murphy -0.006,
    usiigaci -0.222 (the shipped ``nuclei``'s cell-probability logit 1.0 on phase contrast)."""
    if not trainer.cfg.init_seg or trainer.data.val or best.get("default_diameter") is not None:
        return None
    start = load_checkpoint(resolve_checkpoint(trainer.cfg.init_seg, SEGMENTER))
    return {"default_diameter": "auto"} if start.get("default_diameter") == "auto" else None


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
