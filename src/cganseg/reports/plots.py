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


#: panels of the training curves, by column: each loss term with the terms it is weighed against
CURVE_PANELS: dict[str, tuple[str, ...]] = {
    "total losses (Eq. 16, 17)": ("loss", "loss_d"),
    "segmenter terms": ("id_s", "rec_s", "d2_s"),
    "generator terms": ("id_g", "rec_g", "d1_g"),
    "discriminator terms": ("real_d1", "fake_d1", "real_d2", "fake_d2"),
}


def plot_training_curves(metrics_csv: Path, path: Path) -> None:
    """:func:`training_curves_figure` of ``metrics_csv``, saved as ``path``."""
    save_figure(training_curves_figure(metrics_csv), path)


def training_curves_figure(metrics_csv: Path) -> Figure:
    """The numeric columns of a trainer ``metrics.csv`` against its ``step`` column, one
    panel per group of terms (:data:`CURVE_PANELS`; a conventional run has its loss alone) and
    the validation scores (``val_*``, in [0, 1]) in a panel of their own, each legend beside
    its panel, so that no curve hides another. Empty cells (not logged at a step) are skipped.
    """
    metrics_csv = Path(metrics_csv)
    columns = _read_numeric_columns(metrics_csv)
    if "step" not in columns:
        raise InputError("training metrics CSV has no numeric 'step' column", metrics_csv)
    step = columns.pop("step")
    has_values = {n for n, v in columns.items() if any(math.isfinite(x) for x in v)}
    panels = CURVE_PANELS if "loss_d" in has_values else {"training loss": ("loss",)}
    placed = {n for names in panels.values() for n in names}
    groups = {title: [n for n in names if n in has_values] for title, names in panels.items()}
    groups["other losses"] = [n for n in columns if n not in placed and not n.startswith("val_")
                              and n in has_values]  # fmt: skip
    groups["validation scores"] = [n for n in columns if n.startswith("val_") and n in has_values]
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        raise InputError("training metrics CSV has no numeric column besides 'step'", metrics_csv)
    fig = Figure(figsize=(8.0, 2.4 * len(groups) + 0.4))
    axes = fig.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, names) in zip(axes, groups.items(), strict=True):
        for name in names:
            pts = [(s, v) for s, v in zip(step, columns[name], strict=True) if math.isfinite(v)]
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, label=name, linewidth=1.0, marker="o" if len(xs) < 30 else None,
                    markersize=3)  # fmt: skip
        ax.set_title(label, fontsize="medium", loc="left")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    return fig
