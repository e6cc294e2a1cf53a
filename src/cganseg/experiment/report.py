"""Report of a cross-validation experiment: the paper's Table 1 / Fig. 2 / Table 3 for your data.

From one result dict per run (fold, scenario, backbone, test scores, FID for scenario A) it
writes into the report folder: ``results.csv`` (one row per run), ``table.csv`` and
``summary.json`` (mean and sd over folds per scenario and backbone), F1-vs-IoU curves with +-sd
bands (``f1_vs_iou_BACKBONE.png``, the paper's Fig. 2), sample grids when the run folders are
there, and ``report.md`` + ``report.html`` showing all of it.
"""

from __future__ import annotations

import html
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cganseg.data.dataset import load_samples
from cganseg.data.splits import load_split
from cganseg.evaluation.evaluate import csv_text
from cganseg.evaluation.fid import kid_text
from cganseg.experiment.config import SCENARIOS, ExperimentConfig
from cganseg.inference.segment import load_segmenter
from cganseg.options import parse_channels
from cganseg.reports.grid import save_grid
from cganseg.reports.overlays import overlay_labels, unit_gray
from cganseg.reports.plots import plot_f1_vs_iou
from cganseg.runtime.atomic import atomic_path, write_text

#: (result key, column title) of the scores in the table, all per-image means on the test set
METRICS = (
    ("f1_50", "F1@0.5"),
    ("f1_mean", "F1 mean 0.5:0.95"),
    ("accuracy_50", "accuracy@0.5"),
    ("pq_50", "PQ@0.5"),
    ("dice", "Dice"),
)
SEGMENTATION_ROWS = 3


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample sd (ddof 1; NaN for one value: no spread can be estimated)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else float("nan")


def aggregate(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (scenario, backbone): mean/sd over folds of each score, FID, wall time."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["scenario"], r["backbone"]), []).append(r)
    rows = []
    for (scenario, backbone), runs in sorted(groups.items()):
        runs = sorted(runs, key=lambda r: r["fold"])
        row: dict[str, Any] = {
            "scenario": scenario,
            "label": SCENARIOS[scenario],
            "backbone": backbone,
            "folds": len(runs),
            "train_pairs": float(np.mean([r["n_train_pairs"] for r in runs])),
            "extra_pairs": float(np.mean([r.get("n_extra_pairs", 0) for r in runs])),
            "wall_s": float(sum(r.get("wall_s", 0.0) for r in runs)),
        }
        for key, _ in METRICS:
            row[key] = _mean_sd([r[key] for r in runs])
        curves = np.asarray([r["f1_curve"] for r in runs], dtype=float)
        row["thresholds"] = runs[0]["thresholds"]
        row["f1_curve"] = curves.mean(axis=0).tolist()
        row["f1_curve_sd"] = (
            curves.std(axis=0, ddof=1) if len(runs) > 1 else 0 * curves[0]
        ).tolist()
        fids = [r["fid"] for r in runs if "fid" in r]
        if fids:
            row["fid"] = _mean_sd([f["fid"] for f in fids])
            row["kid"] = _mean_sd([f["kid_mean"] for f in fids])
        rows.append(row)
    return rows


def _pm(value: tuple[float, float], digits: int = 3) -> str:
    mean, sd = value
    return f"{mean:.{digits}f}" if np.isnan(sd) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["scenario", "backbone", "training pairs", *(t for _, t in METRICS), "FID", "folds"]
    body = [
        [
            f"{r['scenario']}: {r['label']}",
            r["backbone"],
            f"{r['train_pairs']:.0f}" + (f" + {r['extra_pairs']:.0f}" if r["extra_pairs"] else ""),
            *(_pm(r[k]) for k, _ in METRICS),
            _pm(r["fid"], 1) if "fid" in r else "",
            str(r["folds"]),
        ]
        for r in rows
    ]
    return header, body


def _markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def _html_table(header: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body
    )
    return f"<table><tr>{head}</tr>{rows}</table>"


def _fid_rows(results: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["fold", "backbone", "FID", "KID", "real / generated images"]
    body = [
        [
            str(r["fold"] + 1),
            r["backbone"],
            f"{r['fid']['fid']:.1f}",
            kid_text(r["fid"]),
            f"{r['fid']['n_real']} / {r['fid']['n_generated']}",
        ]
        for r in sorted(results, key=lambda r: (r["backbone"], r["fold"]))
        if "fid" in r
    ]
    return header, body


def _results_csv(results: Sequence[dict[str, Any]]) -> str:
    header = [
        "fold",
        "scenario",
        "backbone",
        "n_train_pairs",
        "steps",
        "best_val_f1_50",
        *(k for k, _ in METRICS),
        "fid",
        "kid",
        "wall_s",
        "peak_rss_mb",
    ]
    rows = [
        [
            r["fold"] + 1,
            r["scenario"],
            r["backbone"],
            r["n_train_pairs"],
            r.get("steps", ""),
            r.get("best_val_f1_50", ""),
            *(r[k] for k, _ in METRICS),
            r["fid"]["fid"] if "fid" in r else "",
            r["fid"]["kid_mean"] if "fid" in r else "",
            r.get("wall_s", ""),
            r.get("peak_rss_mb", ""),
        ]
        for r in sorted(results, key=lambda r: (r["fold"], r["scenario"], r["backbone"]))
    ]
    return csv_text(header, rows)


def _segmentation_grid(cfg: ExperimentConfig, backbone: str, scenarios: list[str], path: Path):
    """Fold 1's first test images: image, ground truth and each scenario's segmentation."""

    fold = Path(cfg.out) / "fold_1"
    runs = [fold / f"{s}_{backbone}" for s in scenarios]
    if not (fold / "split_N.json").is_file() or not all((r / "best.pt").is_file() for r in runs):
        return False
    names = load_split(fold / "split_N.json")["test"][:SEGMENTATION_ROWS]
    by_name = {p.name: p for p in cfg.pairs()}
    samples = load_samples([by_name[n] for n in names], parse_channels(cfg.channels), False)
    segmenters = [load_segmenter(r, cfg.device) for r in runs]
    rows = [
        [unit_gray(s.image), overlay_labels(s.image, s.labels)]
        + [overlay_labels(s.image, seg.segment(s.image)) for seg in segmenters]
        for s in samples
    ]
    save_grid(path, rows, ["image", "ground truth", *scenarios], names)
    return True


def _code_spans(text: str) -> str:
    """Escape ``text`` for HTML, turning Markdown `code` spans into <code> elements."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def write_experiment_report(
    cfg: ExperimentConfig, results: Sequence[dict[str, Any]], out_dir: Path
) -> Path:
    """Write the report files (module docstring) into ``out_dir``; returns ``report.html``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = aggregate(results)
    header, body = _table(rows)
    write_text(out_dir / "results.csv", _results_csv(results))
    write_text(out_dir / "table.csv", csv_text(header, body))
    write_text(
        out_dir / "summary.json", json.dumps({"rows": rows, "runs": list(results)}, indent=2) + "\n"
    )
    figures: list[tuple[str, str]] = []
    backbones = sorted({r["backbone"] for r in rows})
    for backbone in backbones:
        mine = [r for r in rows if r["backbone"] == backbone]
        name = f"f1_vs_iou_{backbone}.png"
        plot_f1_vs_iou(
            {r["scenario"] + ": " + r["label"]: (r["thresholds"], r["f1_curve"]) for r in mine},
            out_dir / name,
            title=f"{backbone}: F1 vs IoU, mean ± sd over {mine[0]['folds']} fold(s)",
            bands={r["scenario"] + ": " + r["label"]: r["f1_curve_sd"] for r in mine},
        )
        figures.append((f"F1 versus IoU threshold ({backbone})", name))
    for backbone in backbones:
        grid = Path(cfg.out) / "fold_1" / f"A_{backbone}" / "generated_vs_real.png"
        if grid.is_file():
            name = f"generated_vs_real_{backbone}.png"
            with atomic_path(out_dir / name) as tmp:
                shutil.copyfile(grid, tmp)
            figures.append((f"Fold 1: the cGAN-Seg generator on test masks ({backbone})", name))
        scenarios = sorted({r["scenario"] for r in rows if r["backbone"] == backbone})
        name = f"segmentation_{backbone}.png"
        if _segmentation_grid(cfg, backbone, scenarios, out_dir / name):
            figures.append((f"Fold 1: test images segmented in each scenario ({backbone})", name))
    fid_header, fid_body = _fid_rows(results)
    settings = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    with_n = " and ".join(x for x in ("A", "B", "D") if x in cfg.scenarios) or "A, B and D"
    intro = (
        f"{cfg.folds}-fold cross-validation on `{cfg.data}`: N = {cfg.n_train} training pairs for "
        f"{with_n}; C uses every training pair of the fold; all scenarios of a fold share its "
        "validation and test sets. Scores are per-image means on the test set of each fold, then "
        "mean ± sd over folds."
    )
    md = [f"# cganseg experiment\n\n{intro}\n\n", _markdown_table(header, body)]
    if fid_body:
        md += [
            "\n## FID of the cGAN-Seg generator per fold (test masks vs test images)\n\n",
            _markdown_table(fid_header, fid_body),
        ]
    md += [f"\n## {title}\n\n![{title}]({name})\n" for title, name in figures]
    md += [f"\n## Settings\n\n```yaml\n{settings}```\n"]
    write_text(out_dir / "report.md", "".join(md))
    parts = [f"<h1>cganseg experiment</h1><p>{_code_spans(intro)}</p>", _html_table(header, body)]
    if fid_body:
        parts += [
            "<h2>FID of the cGAN-Seg generator per fold (test masks vs test images)</h2>",
            _html_table(fid_header, fid_body),
            "<p>FID on a few hundred images is biased upwards; compare only numbers made "
            "with the same image counts.</p>",
        ]
    parts += [f'<h2>{html.escape(t)}</h2><img src="{html.escape(n)}">' for t, n in figures]
    parts += [f"<h2>Settings</h2><pre>{html.escape(settings)}</pre>"]
    page = (
        '<!doctype html><html><head><meta charset="utf-8"><title>cganseg experiment</title>'
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}"
        "td{white-space:nowrap}"
        "img{max-width:100%}</style></head><body>" + "".join(parts) + "</body></html>\n"
    )
    write_text(out_dir / "report.html", page)
    return out_dir / "report.html"
