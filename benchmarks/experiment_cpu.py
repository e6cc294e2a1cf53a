"""A CPU-sized run of the paper's cross-validation protocol (``cganseg experiment``).

For each data set: 3-fold cross-validation of scenario A (cGAN-Seg on N pairs), B (conventional
on the same N) and C (conventional on every training pair of the fold), with the CPU preset's
networks and a few hundred steps, plus the FID of each fold's generator (scenario D, synthetic
pairs, is left out to keep the run near an hour on two cores). Prints the table (mean +- sd over
folds), the wall time and the peak memory of each data set, and writes them to
``benchmarks/results/experiment_cpu.json``; each experiment's HTML report lies in ``--work``.

These budgets are far below the paper's (hundreds of GPU epochs): the numbers show what a laptop
gets in about 80 minutes, not what the method can do. For the full-size protocol on a GPU, run
``cganseg experiment benchmarks/configs/dsb2018_paper.yaml`` (see the README).

Run from the repository root: ``.venv/bin/python benchmarks/experiment_cpu.py [--sets dsb2018]``;
``--quick`` runs a tiny version on the bundled demo data (used by the tests).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from cganseg.demo import demo_data_dir
from cganseg.experiment.config import ExperimentConfig
from cganseg.experiment.report import METRICS, aggregate
from cganseg.experiment.runner import run_experiment
from cganseg.runtime.atomic import write_text

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CGAN_CPU = {"preset": "cpu", "perceptual": "hed-vgg16", "val_every": 40, "patience": 0}
SEG_CPU = {"crop": 128, "batch_size": 8, "val_every": 50, "patience": 0}


def _cpu_set(folder: str, n_train: int) -> dict[str, Any]:
    """Experiment options of one shared data set at the CPU budget (``out`` is added)."""
    return {
        "data": str(SHARED / folder),
        "folds": 3,
        "n_train": n_train,
        "scenarios": ["A", "B", "C"],
        "cgan": {**CGAN_CPU, "iterations": 120},
        "seg": {**SEG_CPU, "iterations": 200},
    }


#: name -> experiment options
SETS: dict[str, dict[str, Any]] = {
    "dsb2018": _cpu_set("dsb2018_fluo_256", n_train=50),
    "usiigaci": _cpu_set("usiigaci_phase", n_train=10),
}
QUICK = {
    "data": str(demo_data_dir()),
    "folds": 2,
    "n_train": 6,
    "scenarios": ["A", "B", "C"],
    "cgan": {
        **CGAN_CPU,
        "iterations": 2,
        "crop": 64,
        "batch_size": 2,
        "gen_width": 8,
        "disc_width": 8,
        "width": 8,
        "style_dim": 16,
        "n_mapping": 1,
        "val_every": 2,
        "num_workers": 0,
    },
    "seg": {**SEG_CPU, "iterations": 2, "crop": 64, "batch_size": 2, "num_workers": 0},
}


def peak_memory_mb() -> float:
    """Peak resident memory of this process and of its finished children (data workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    titles = [t for _, t in METRICS]
    lines = [
        f"{'scenario':<9}{'backbone':<9}{'pairs':>9}  " + "  ".join(f"{t:>16}" for t in titles)
    ]
    for r in rows:
        pairs = f"{r['train_pairs']:.0f}" + (f"+{r['extra_pairs']:.0f}" if r["extra_pairs"] else "")
        cells = [f"{r[k][0]:.3f} ± {r[k][1]:.3f}" for k, _ in METRICS]
        fid = f"  FID {r['fid'][0]:.1f} ± {r['fid'][1]:.1f}" if "fid" in r else ""
        lines.append(
            f"{r['scenario']:<9}{r['backbone']:<9}{pairs:>9}  "
            + "  ".join(f"{c:>16}" for c in cells)
            + fid
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", choices=sorted(SETS), default=sorted(SETS))
    parser.add_argument("--work", type=Path, default=Path("bench_runs"), help="experiment folders")
    parser.add_argument("--quick", action="store_true", help="tiny run on the bundled demo data")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/...)")
    args = parser.parse_args()
    sets = {"quick": QUICK} if args.quick else {name: SETS[name] for name in args.sets}
    default_out = Path(__file__).parent / "results" / "experiment_cpu.json"
    out_json = args.out or (args.work / "experiment_quick.json" if args.quick else default_out)
    previous = json.loads(out_json.read_text(encoding="utf-8")) if out_json.is_file() else {}
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"torch threads, {args.device}",
        "torch": torch.__version__,
        "sets": previous.get("sets", {}),  # sets not run in this call keep their figures
    }
    for name, options in sets.items():
        if not Path(options["data"]).is_dir():
            print(f"skipping {name}: {options['data']} not found", file=sys.stderr)
            continue
        cfg = ExperimentConfig.from_dict(
            {**options, "out": str(args.work / f"experiment_{name}"), "device": args.device}
        )
        t0 = time.perf_counter()
        report = run_experiment(cfg, progress=not args.quick)
        wall = time.perf_counter() - t0
        summary = json.loads((report.parent / "summary.json").read_text(encoding="utf-8"))
        rows = aggregate(summary["runs"])
        print(
            f"\n{name}: {cfg.folds} folds, N = {cfg.n_train}; wall {wall / 60:.1f} min this "
            f"call (runs' own total {sum(r['wall_s'] for r in rows) / 60:.1f} min), peak "
            f"memory {peak_memory_mb():.0f} MB; report {report}"
        )
        print("\n".join(table_lines(rows)))
        results["sets"][name] = {
            "settings": cfg.to_dict(),
            "wall_s_this_call": round(wall, 1),
            "runs_wall_s": round(sum(r["wall_s"] for r in rows), 1),
            "peak_memory_mb": round(peak_memory_mb(), 1),
            "rows": [{k: v for k, v in r.items() if k != "f1_curve_sd"} for r in rows],
            "report": str(report),
        }
    write_text(out_json, json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
