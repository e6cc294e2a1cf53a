"""Per-run logging shared by the trainers: ``metrics.csv`` and TensorBoard scalars.

The CSV has a fixed header (``step`` and the run's metric names); a metric not measured at a
step is left empty. On resume, rows written after the checkpoint's step are dropped, so the file
describes exactly the training that the checkpoint holds.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from cganseg.errors import WriteError
from cganseg.runtime.atomic import write_text


class RunLog:
    """Append-only metrics table plus TensorBoard writer for one run folder."""

    def __init__(
        self, run_dir: Path, columns: Sequence[str], resume_step: int | None = None
    ) -> None:
        self.path = run_dir / "metrics.csv"
        self.columns = ["step", *columns]
        if resume_step is not None and self.path.exists():
            self._truncate_after(resume_step)
        elif not self.path.exists() or resume_step is None:
            write_text(self.path, ",".join(self.columns) + "\n")
        self.tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=resume_step)

    def _truncate_after(self, step: int) -> None:
        with open(self.path, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("step") and int(r["step"]) <= step]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        write_text(self.path, buf.getvalue())

    def log(
        self, step: int, values: dict[str, float], tb_only: dict[str, float] | None = None
    ) -> None:
        """Append one CSV row and the same scalars (plus ``tb_only``) to TensorBoard."""
        row = [str(step)] + [f"{values[c]:.6g}" if c in values else "" for c in self.columns[1:]]
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(",".join(row) + "\n")
        except OSError as exc:
            raise WriteError(self.path, exc) from None
        for name, value in {**values, **(tb_only or {})}.items():
            self.tb.add_scalar(name, value, step)

    def close(self) -> None:
        self.tb.close()
