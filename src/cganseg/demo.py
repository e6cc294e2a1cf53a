"""The demo behind ``make demo``: train, segment, evaluate and report on bundled real data.

It runs the paper's conventional baseline on the 40 DSB2018 fluorescence pairs shipped in the
package (CC0, see ``demo_data/README.md``): a small UNet is trained on CPU, the held-out test images
are segmented, scored, and a report folder with metrics, the F1-vs-IoU curve, training curves and
overlays is written. Sized to finish in a few minutes on a 2-core laptop.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path

import numpy as np

from cganseg.atomic import write_text
from cganseg.data.folders import find_pairs
from cganseg.data.io import read_image, read_labels
from cganseg.data.normalize import normalize_percentile
from cganseg.evaluation.evaluate import evaluate_pairs, write_report
from cganseg.inference.segment import load_segmenter, segment_files
from cganseg.reports.grid import save_grid
from cganseg.reports.overlays import overlay_labels
from cganseg.reports.plots import plot_training_curves
from cganseg.training.config import SegTrainConfig
from cganseg.training.seg_trainer import train_segmenter

DEMO_ITERATIONS = 600


def demo_data_dir() -> Path:
    """The bundled demo data set (``images/`` + ``masks/``)."""
    return Path(str(resources.files("cganseg") / "demo_data"))


def demo_config(out: Path, iterations: int, device: str) -> SegTrainConfig:
    """A CPU-sized conventional run: UNet width 16, 128x128 crops, 20% of the pairs for testing."""
    return SegTrainConfig(
        data=str(demo_data_dir()),
        out=str(out / "train_seg"),
        model="unet",
        width=16,
        crop=[128, 128],
        batch_size=8,
        iterations=iterations,
        lr=2e-3,
        val_every=50,
        patience=0,
        test_fraction=0.2,
        val_fraction=0.15,
        seed=0,
        device=device,
        num_workers=0,
    )


def _report_html(out: Path, summary: dict, report: dict) -> str:
    t = report["thresholds"]
    rows = "".join(
        f"<tr><td>{th:.2f}</td><td>{p:.3f}</td><td>{r:.3f}</td><td>{f:.3f}</td><td>{a:.3f}</td></tr>"
        for th, p, r, f, a in zip(
            t,
            report["per_image"]["precision"],
            report["per_image"]["recall"],
            report["per_image"]["f1"],
            report["per_image"]["accuracy"],
            strict=True,
        )
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>cganseg demo</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px}}
img{{max-width:100%}}</style></head><body>
<h1>cganseg demo: conventional training on 40 DSB2018 nuclei images</h1>
<p>{html.escape(summary["settings"])}</p>
<p>Test set: {report["n_images"]} images. F1 at IoU 0.5 (mean per image):
<b>{summary["test_f1_iou50"]:.3f}</b>; pixel Dice {report["dice"]:.3f};
training took {summary["train_seconds"]:.0f} s.</p>
<h2>F1 versus IoU threshold</h2><img src="evaluation/f1_vs_iou.png">
<h2>Test images: image | ground truth | prediction</h2><img src="samples.png">
<h2>Training curves</h2><img src="training_curves.png">
<h2>Scores per IoU threshold (mean over test images)</h2>
<table><tr><th>IoU</th><th>precision</th><th>recall</th><th>F1</th><th>accuracy</th></tr>{rows}
</table><p>Files: <code>train_seg/</code> (run folder: config, split, checkpoints, metrics.csv,
TensorBoard logs), <code>predictions/</code> (label TIFFs and overlays), <code>evaluation/</code>
(metrics.json, metrics.csv, per_image.csv).</p></body></html>
"""


def run_demo(
    out: str | Path, iterations: int | None = None, device: str = "auto", progress: bool = True
) -> Path:
    """Run the demo into ``out``; returns the path of the HTML report."""
    import time

    out = Path(out)
    iterations = iterations or DEMO_ITERATIONS
    cfg = demo_config(out, iterations, device)
    t0 = time.perf_counter()
    resume = (out / "train_seg" / "last.pt").exists()
    train_segmenter(cfg, resume=resume, progress=progress, given={"iterations": iterations})
    train_seconds = time.perf_counter() - t0

    split = json.loads((out / "train_seg" / "split.json").read_text())
    pairs = {p.name: p for p in find_pairs(demo_data_dir())}
    test = [pairs[n] for n in split["test"]]
    seg = load_segmenter(out / "train_seg", device)
    written = segment_files(
        seg, [p.image for p in test], out / "predictions", overlays=True, progress=progress
    )
    gts = [read_labels(p.mask) for p in test]
    preds = [read_labels(w) for w in written]
    report = evaluate_pairs((p.name, g, q) for p, g, q in zip(test, gts, preds, strict=True))
    write_report(report, out / "evaluation")
    plot_training_curves(out / "train_seg" / "metrics.csv", out / "training_curves.png")

    shown = test[:4]
    images = [normalize_percentile(read_image(p.image)) for p in shown]
    save_grid(
        out / "samples.png",
        [
            [np.clip((im[0] + 1) / 2, 0, 1), overlay_labels(im, g), overlay_labels(im, q)]
            for im, g, q in zip(images, gts, preds, strict=False)
        ],
        ["image", "ground truth", "prediction"],
        [p.name for p in shown],
    )
    summary = {
        "settings": f"UNet width {cfg.width}, {cfg.n_classes} classes, crops {cfg.crop[0]}x"
        f"{cfg.crop[1]}, batch {cfg.batch_size}, {iterations} iterations, seed {cfg.seed}; "
        f"{len(split['train'])} train / {len(split['val'])} validation / {len(split['test'])} "
        "test pairs",
        "test_f1_iou50": report["per_image"]["f1"][report["thresholds"].index(0.5)],
        "train_seconds": train_seconds,
    }
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    index = out / "index.html"
    write_text(index, _report_html(out, summary, report))
    return index
