"""Figures for evaluation and training reports.

``plot_f1_vs_iou`` draws F-score against the IoU matching threshold, the curve of the cGAN-Seg
paper's Fig. 2 (Zargari et al., iScience 2024). ``plot_training_curves`` draws the trainer's
``metrics.csv``. Figures are built with the object-oriented Matplotlib API on the Agg canvas
(no pyplot state, safe in threads and without a display) and written atomically, so a reader
never sees a half-written PNG.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cganseg.errors import InputError
from cganseg.runtime.atomic import atomic_path


def save_figure(fig: Figure, path: Path, dpi: int = 120) -> None:
    """Save ``fig`` as PNG atomically (temporary file in the same folder, then ``os.replace``)."""
    with atomic_path(path) as tmp:
        FigureCanvasAgg(fig)  # attaches the Agg canvas to the figure
        fig.savefig(tmp, format="png", dpi=dpi)


def plot_f1_vs_iou(
    curves: dict[str, tuple[list[float], list[float]]],
    path: Path,
    title: str = "",
    bands: dict[str, list[float]] | None = None,
) -> None:
    """One line per named ``(thresholds, f1)`` curve; IoU threshold vs F1, both in [0, 1].

    ``bands``: per curve name, a +-spread (e.g. the sd over folds) drawn as a shaded band.
    """
    fig = Figure(figsize=(5.0, 4.0))
    ax = fig.add_subplot()
    for name, (thresholds, f1) in curves.items():
        (line,) = ax.plot(thresholds, f1, marker="o", markersize=3, label=name)
        if bands and name in bands:
            low = [m - s for m, s in zip(f1, bands[name], strict=True)]
            high = [m + s for m, s in zip(f1, bands[name], strict=True)]
            ax.fill_between(thresholds, low, high, color=line.get_color(), alpha=0.2, lw=0)
    all_t = [t for thresholds, _ in curves.values() for t in thresholds]
    ax.set_xlim(min(all_t, default=0.0) - 0.02, max(all_t, default=1.0) + 0.02)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("IoU threshold")
    ax.set_ylabel("F1")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    if curves:
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def _read_numeric_columns(metrics_csv: Path) -> dict[str, list[float]]:
    """Columns of a CSV whose every non-empty cell is a number; empty cells become NaN."""
    with open(metrics_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise InputError("training metrics CSV has no rows", metrics_csv)
    columns: dict[str, list[float]] = {}
    for name in rows[0]:
        values = []
        for row in rows:
            cell = (row.get(name) or "").strip()
            try:
                values.append(float(cell) if cell else math.nan)
            except ValueError:
                break
        else:
            columns[name] = values
    return columns


def plot_training_curves(metrics_csv: Path, path: Path) -> None:
    """Plot every numeric column of a trainer ``metrics.csv`` against its ``step`` column.

    Columns starting with ``val_`` (validation metrics) go on their own axis below the losses,
    because their scale (scores in [0, 1]) differs from that of the losses. Empty cells (a
    metric not logged at that step) are skipped.
    """
    metrics_csv = Path(metrics_csv)
    columns = _read_numeric_columns(metrics_csv)
    if "step" not in columns:
        raise InputError("training metrics CSV has no numeric 'step' column", metrics_csv)
    step = columns.pop("step")
    groups = {
        "loss": [n for n in columns if not n.startswith("val_")],
        "validation": [n for n in columns if n.startswith("val_")],
    }
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        raise InputError("training metrics CSV has no numeric column besides 'step'", metrics_csv)
    fig = Figure(figsize=(7.0, 3.2 * len(groups)))
    axes = fig.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, names) in zip(axes, groups.items(), strict=True):
        for name in names:
            pts = [(s, v) for s, v in zip(step, columns[name], strict=True) if math.isfinite(v)]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, label=name, linewidth=1.0)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    save_figure(fig, path)
