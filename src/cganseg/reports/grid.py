"""Sample grids: rows of images side by side (e.g. image | ground truth | prediction).

Numbers alone do not show *how* a segmenter fails; a grid of overlays does, so the demo and the
trainers write one the user can open.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from cganseg.reports.plots import save_figure


def save_grid(
    path: str | Path,
    rows: Sequence[Sequence[np.ndarray]],
    column_titles: Sequence[str],
    row_titles: Sequence[str] | None = None,
    panel_size: float = 2.6,
) -> None:
    """Save a PNG grid; each panel is an (H, W) gray or (H, W, 3) RGB array."""
    n_rows, n_cols = len(rows), len(column_titles)
    fig = Figure(figsize=(panel_size * n_cols, panel_size * n_rows + 0.4))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            ax = axes[r, c]
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(column_titles[c], fontsize=10)
            if c == 0 and row_titles:
                title = row_titles[r]
                ax.set_ylabel(title if len(title) <= 20 else title[:18] + "…", fontsize=8)
    fig.tight_layout()
    save_figure(fig, Path(path))
