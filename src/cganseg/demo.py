"""The demo behind ``make demo``: conventional and cGAN-Seg training side by side on real data.

On the 40 DSB2018 fluorescence pairs shipped in the package (CC0, see ``demo_data/README.md``),
the same small UNet segmenter is trained on CPU conventionally (the paper's baseline), then
inside cGAN-Seg with a StyleUNet generator by ``cganseg train``'s default recipe, which starts
from a conventionally trained segmenter (here the first run). Both segment the held-out test
images and are scored; the report shows both F1-vs-IoU curves, predictions, training curves,
the generator's synthetic images next to the real ones, and synthetic dense scenes (paper
Fig. 5) it makes from drawn masks. Sized for a few minutes on a 2-core laptop, so the numbers
are a smoke test of the pipeline, not a benchmark; the measured answer is ``VERDICT``.
"""

from __future__ import annotations

import html
import json
import shutil
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from cganseg import instances as modes
from cganseg.data.folders import Pair, find_pairs
from cganseg.data.io import read_image, read_labels
from cganseg.data.normalize import normalize_percentile
from cganseg.errors import InputError, WriteError
from cganseg.inference.generate import Generator, load_generator
from cganseg.inference.segment import load_segmenter, segment_files
from cganseg.options import CGanTrainConfig, SegTrainConfig
from cganseg.reports.grid import save_grid
from cganseg.reports.overlays import generation_row, overlay_labels, unit_gray
from cganseg.reports.plots import plot_f1_vs_iou, plot_training_curves
from cganseg.runtime.atomic import write_text
from cganseg.synth.masks import MaskSpec, cell_shapes, synthetic_mask
from cganseg.training.cgan_trainer import train_cgan
from cganseg.training.pretrain import resumable
from cganseg.training.seg_trainer import train_segmenter
from cganseg.training.settings import resolve

SEG_ITERATIONS = 600
CGAN_ITERATIONS = 300
N_SHOWN = 4
#: synthetic scenes shown in the report: (layout, density)
DENSE_SCENES = (("colony", 0.3), ("mixed", 0.5))


def demo_data_dir() -> Path:
    """The bundled demo data set (``images/`` + ``masks/``)."""
    return Path(str(resources.files("cganseg") / "demo_data"))


def copy_demo_data(target: str | Path) -> Path:
    """The bundled data set copied to ``target`` (new or empty), to try every command on; its
    README (provenance, licence) comes along."""
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InputError("exists and is not an empty folder; choose a new one", target)
    staged = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staged, ignore_errors=True)
    try:
        shutil.copytree(demo_data_dir(), staged)
        if target.exists():
            target.rmdir()
        staged.rename(target)
    except OSError as exc:
        shutil.rmtree(staged, ignore_errors=True)
        raise WriteError(target, exc) from None
    return target


def _common(out: Path, device: str, instances: str) -> dict[str, Any]:
    """Settings both runs share: data, split, segmenter and its output, crop, seed."""
    return dict(
        data=str(demo_data_dir()),
        instances=instances,
        model="unet",
        width=16,
        crop=[96, 96],
        patience=0,
        test_fraction=0.2,
        val_fraction=0.15,
        seed=0,
        device=device,
        num_workers=0,
        val_every=50,
    )


def demo_seg_config(
    out: Path, iterations: int, device: str, instances: str = "flows"
) -> SegTrainConfig:
    """Conventional training: UNet width 16, 96x96 crops, batch 8."""
    return SegTrainConfig(
        out=str(out / "train_seg"),
        iterations=iterations,
        batch_size=8,
        lr=2e-3,
        **_common(out, device, instances),
    )


def demo_cgan_config(
    out: Path, iterations: int, device: str, instances: str = "flows"
) -> CGanTrainConfig:
    """cGAN-Seg: ``cganseg train``'s default recipe (``--preset cpu``, issue 17) with the same
    segmenter and crops, small generator and discriminators, batch 4, started from the
    conventional run (``--init-seg``; it stands for the recipe's own pre-training)."""
    return resolve(
        CGanTrainConfig,
        {
            "preset": "cpu",
            "out": str(out / "train_cgan"),
            "init_seg": str(out / "train_seg"),
            "iterations": iterations,
            "batch_size": 4,
            "gen_width": 16,
            "style_dim": 64,
            "n_mapping": 4,
            "disc_width": 16,
            "perceptual": "hed-vgg16",
            **_common(out, device, instances),
        },
    )


def _train(train: Callable, cfg: SegTrainConfig, progress: bool) -> dict[str, float]:
    """Train (or resume/finish) one run; returns its steps and the CPU-seconds per step of this
    process (steps, data loading with ``num_workers`` 0, and validation), summed over resumed
    sessions in RUN/demo_timing.json. CPU time, not wall time: a shared machine's wall time
    ranks the two runs by what else was running."""
    run = Path(cfg.out)
    timing_file = run / "demo_timing.json"
    before = json.loads(timing_file.read_text()) if timing_file.is_file() else {"cpu_s": 0.0}
    t0 = time.process_time()
    resume = resumable(run)
    summary = train(cfg, resume=resume, progress=progress, given={"iterations": cfg.iterations})
    timing = {"cpu_s": before["cpu_s"] + time.process_time() - t0, "steps": summary["step"]}
    write_text(timing_file, json.dumps(timing) + "\n")
    return {"steps": timing["steps"], "cpu_s_per_step": timing["cpu_s"] / max(1, timing["steps"])}


def _score(run: Path, test: list[Pair], device: str, progress: bool):
    """The run's test scores (``RUN/test/``, written by training with best.pt) and its
    predictions of the test images as label TIFFs with overlays (``RUN/predictions/``)."""
    report = json.loads((run / "test" / "metrics.json").read_text(encoding="utf-8"))
    seg = load_segmenter(run, device)
    written = segment_files(
        seg, [p.image for p in test], run / "predictions", overlays=True, progress=progress
    )
    return report, [read_labels(w) for w in written]


#: what each score means, in one sentence (report and README)
METRICS = {
    "F1@0.5": "a predicted cell counts as found when it overlaps a true cell with IoU "
    "(intersection over union) of at least 0.5; F1 is the harmonic mean of precision "
    "(found / predicted) and recall (found / true), from 0 to 1, higher is better",
    "pooled": "cells of all test images counted together (large, crowded images weigh more)",
    "per image": "F1 of each test image, then their mean (every image weighs the same)",
    "mean F1 0.5:0.95": "F1 averaged over IoU thresholds 0.5, 0.55, ..., 0.95: rewards outlines "
    "that fit, not only cells found",
    "Dice": "overlap of all predicted and all true cell pixels (foreground only, cells not "
    "told apart), 0 to 1",
    "CPU-s per step": "CPU time of the training process per step (both cores count; data "
    "loading and validation included): what a step costs, whatever else the machine ran",
}


#: which training to use, as measured (README "Measured results"); the report and the end of
#: ``cganseg demo`` say it beside the two runs
#: what to run next, on one's own data: the recommended path (printed and in the report)
NEXT_STEPS = (
    "cganseg train-seg --data my_data --out runs/mine --init nuclei   # your images/ + masks/",
    "cganseg segment runs/mine my_images/ --out seg/ --save-format tif seg.npy",
    "cganseg evaluate my_data/masks seg/ --out eval/",
)
VERDICT = (
    "Which to use: at equal CPU time (benchmarks/value.py: 900 CPU-s per run, 3 folds, DSB "
    "nuclei and usiigaci phase contrast) conventional training (cganseg train-seg) and "
    "cGAN-Seg's default recipe, which starts from a conventional run and adds the joint game, "
    "gave segmenters of the same quality (level within the spread over folds), and a control "
    "without the game's synthetic and adversarial terms scored the same: the game trains a "
    "generator (synthetic images) but has not improved the segmenter. For segmentation use "
    "train-seg; use train when you also want the generator. Numbers: README, \"Measured "
    "results\"."
)


def headline(row: dict[str, Any]) -> str:
    """One run's scores in one line (printed at the end of ``cganseg demo``)."""
    return (f"{row['name']}: F1@0.5 {row['f1_iou50_pooled']:.3f} pooled, "
            f"{row['f1_iou50']:.3f} per image; mean F1 0.5:0.95 {row['f1_mean']:.3f}; Dice "
            f"{row['dice']:.3f}; {row['iterations']} steps at {row['cpu_s_per_step']:.2f} "
            "CPU-s each")  # fmt: skip


def _dense_grid(gen: Generator, train_masks: list[np.ndarray], path: Path) -> None:
    """Synthetic dense and colony masks (paper Fig. 5) and the generator's images of them."""
    shapes = cell_shapes(train_masks)
    rows, names = [], []
    for i, (layout, density) in enumerate(DENSE_SCENES):
        mask = synthetic_mask(shapes, MaskSpec(256, 256, layout, density), np.random.default_rng(i))
        image = gen.generate(mask, seed=i)
        rows.append(generation_row(mask, [image]))
        names.append(f"{layout}, density {density}")
    save_grid(path, rows, ["synthetic mask", "generated image"], names)


def _report_html(summary: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(r['name'])}</td><td>{r['f1_iou50_pooled']:.3f}</td>"
        f"<td>{r['f1_iou50']:.3f}</td><td>{r['f1_mean']:.3f}</td><td>{r['dice']:.3f}</td>"
        f"<td>{r['iterations']}</td><td>{r['cpu_s_per_step']:.2f}</td></tr>"
        for r in summary["runs"]
    )
    defs = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}.</li>"
                   for k, v in METRICS.items())  # fmt: skip
    next_steps = html.escape("\n".join(NEXT_STEPS))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>cganseg demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px}}
img{{max-width:100%}}</style></head><body>
<h1>cganseg demo: conventional vs cGAN-Seg training on 40 DSB2018 nuclei images</h1>
<p>{html.escape(summary["settings"])}</p>
<p>A few minutes of CPU training on {summary["n_train"]} images: these numbers show that the
pipeline works end to end; they are not a benchmark of the method. cGAN-Seg here starts from the
conventional run and adds its joint steps, so it is not an equal-compute comparison.</p>
<p><b>{html.escape(VERDICT)}</b></p>
<table><tr><th>training</th><th>F1@0.5 pooled</th><th>F1@0.5 per image</th>
<th>mean F1 0.5:0.95 (per image)</th><th>Dice</th><th>steps</th><th>CPU-s per step</th>
</tr>{rows}</table>
<p>On the {summary["n_test"]} test images, which neither run trained or chose its checkpoint on.
Higher is better for every score.</p><ul>{defs}</ul>
<h2>Synthetic images: the cGAN-Seg generator turns test masks into images</h2>
<img src="generated.png">
<h2>Synthetic dense scenes: masks drawn from the training cells' shapes, then generated</h2>
<p>Such pairs can be added to a small training set
(<code>cganseg synth-masks</code>, <code>cganseg generate</code>,
<code>cganseg train-seg --extra</code>).</p>
<img src="dense.png">
<h2>F1 versus IoU threshold (per image)</h2>
<p>How many cells each segmenter finds as the overlap demanded of a match rises from 50% to 95%
of their pixels: the higher and flatter, the better the outlines.</p><img src="f1_vs_iou.png">
<h2>Test images: ground truth and both segmenters</h2><img src="samples.png">
<h2>Training curves</h2><h3>conventional</h3>
<p>The loss (flows and cell probability, or classes) falls as the segmenter learns; the
validation F1 is measured every few steps on images it does not train on, and the best
validation step is the one kept (best.pt).</p><img src="train_seg/training_curves.png">
<h3>cGAN-Seg</h3>
<p>Each panel is a group of loss terms (paper Eq. 16-17). The total rises at first although
nothing goes wrong: the recipe lets the cycle and adversarial terms in only after a warm-up and
raises their weights over a ramp, so the sum grows as terms join it.</p>
<img src="train_cgan/training_curves.png">
<h2>Next: on your own data</h2>
<p>Images in <code>my_data/images/</code>, instance masks of the same names in
<code>my_data/masks/</code> (or Cellpose's <code>NAME.tif</code> + <code>NAME_masks.tif</code>):
</p><pre>{next_steps}</pre>
<p>Run folders <code>train_seg/</code> and <code>train_cgan/</code> hold each run's config,
split, checkpoints, metrics.csv, TensorBoard logs, the test scores (<code>test/</code>) and
the test predictions with overlays (<code>predictions/</code>); the cGAN-Seg run also its sample
grids (<code>train_cgan/samples/</code>).</p></body></html>
"""


def run_demo(
    out: str | Path,
    iterations: int | None = None,
    device: str = "auto",
    progress: bool = True,
    gan_iterations: int | None = None,
    instances: str = "flows",
) -> Path:
    """Run the demo into ``out``; returns the path of the HTML report. ``instances``: the
    segmenter's output for both runs."""
    out = Path(out)
    seg_cfg = demo_seg_config(out, iterations or SEG_ITERATIONS, device, instances)
    seg_timing = _train(train_segmenter, seg_cfg, progress)
    # (made now: it starts from the conventional run, whose settings it takes)
    gan_cfg = demo_cgan_config(out, gan_iterations or CGAN_ITERATIONS, device, instances)
    runs = [
        ("conventional", seg_cfg, seg_timing),
        ("cGAN-Seg", gan_cfg, _train(train_cgan, gan_cfg, progress)),
    ]
    split = json.loads((out / "train_seg" / "split.json").read_text())
    pairs = {p.name: p for p in find_pairs(demo_data_dir())}
    test = [pairs[n] for n in split["test"]]
    gts = [read_labels(p.mask) for p in test]
    images = [normalize_percentile(read_image(p.image)) for p in test[:N_SHOWN]]

    rows, curves, preds = [], {}, {}
    for name, cfg, timing in runs:
        run = Path(cfg.out)
        report, preds[name] = _score(run, test, device, progress)
        plot_training_curves(run / "metrics.csv", run / "training_curves.png")
        i50 = [round(t, 2) for t in report["thresholds"]].index(0.5)
        f1 = report["per_image"]["f1"]
        curves[name] = (report["thresholds"], f1)
        rows.append(
            {
                "name": name,
                "f1_iou50_pooled": report["pooled"]["f1"][i50],
                "f1_iou50": f1[i50],
                "f1_mean": float(np.mean(f1)),
                "dice": report["dice"],
                "cpu_s_per_step": timing["cpu_s_per_step"],
                "iterations": timing["steps"],
            }
        )
    plot_f1_vs_iou(curves, out / "f1_vs_iou.png", f"F1 vs IoU ({len(test)} test images)")
    save_grid(
        out / "samples.png",
        [
            [
                unit_gray(im),
                overlay_labels(im, g),
                overlay_labels(im, preds["conventional"][i]),
                overlay_labels(im, preds["cGAN-Seg"][i]),
            ]
            for i, (im, g) in enumerate(zip(images, gts, strict=False))
        ],
        ["image", "ground truth", "conventional", "cGAN-Seg"],
        [p.name for p in test[:N_SHOWN]],
    )
    gen = load_generator(gan_cfg.out, device)
    save_grid(
        out / "generated.png",
        [
            generation_row(g, [gen.generate(g, seed=1), gen.generate(g, seed=2)], im)
            for im, g in zip(images, gts, strict=False)
        ],
        ["test mask", "generated, seed 1", "generated, seed 2", "real image"],
        [p.name for p in test[:N_SHOWN]],
    )
    _dense_grid(gen, [read_labels(pairs[n].mask) for n in split["train"]], out / "dense.png")
    summary = {
        "settings": f"Segmenter for both: UNet width {seg_cfg.width}, instances by "
        f"{seg_cfg.instances} ({modes.mode(seg_cfg.instances).summary}), "
        f"{seg_cfg.crop[0]}x{seg_cfg.crop[1]} crops, seed {seg_cfg.seed}. "
        f"Conventional: batch {seg_cfg.batch_size}, {seg_cfg.iterations} steps. cGAN-Seg: "
        f"cganseg train's default recipe (--preset cpu) started from the conventional run's "
        f"best.pt, batch {gan_cfg.batch_size}, {gan_cfg.iterations} joint steps, generator width "
        f"{gan_cfg.gen_width}, perceptual loss {gan_cfg.perceptual}. Split: "
        f"{len(split['train'])} train / {len(split['val'])} validation / {len(split['test'])} "
        "test pairs.",
        "n_train": len(split["train"]),
        "n_test": len(test),
        "runs": rows,
    }
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    index = out / "index.html"
    write_text(index, _report_html(summary))
    return index
