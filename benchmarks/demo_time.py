"""What ``make demo`` and a bare ``cganseg train`` cost (issue 33: the README's time claims
were 5-7x off on a shared machine; every time it states is CPU-minutes measured here, and a
test reads them back).

``--what demo`` runs ``cganseg demo --out DIR`` in a fresh folder as ``make demo`` does after
its install step (``.venv`` and the perceptual weights in place: install time depends on the
network, not on cganseg) and records the CPU time of the demo and every process it started
(its data workers included), its wall time, and the demo's own per-run summary (steps, CPU-s
per step, scores) with the settings that size a step (what ``cganseg.training.pace``
estimates from: a test holds its CPU rates to these runs). ``--what bare-train`` runs
``cganseg train --data DIR --out RUN`` with nothing else on the bundled demo data (the CPU
defaults: conventional pre-training, then the joint game) and records its CPU time beside
the estimate its start line printed. CPU time is what a test of the README
compares: wall time on a shared machine says more about the neighbours than about the demo.
From the repository root::

    .venv/bin/python benchmarks/demo_time.py [--what demo|bare-train] [--out FILE]

Run it on a quiet machine (nothing else training) for the wall time to mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: the demo's runs by their summary name: run folder, trainer
RUNS = {"conventional": ("train_seg", "train-seg"), "cGAN-Seg": ("train_cgan", "train")}
#: the settings that size a step (cganseg.training.pace.estimate_cpu_s)
SIZING = ("model", "width", "instances", "n_classes", "batch_size", "crop", "seg_extra_updates")


def children_cpu_s() -> float:
    """User + system CPU-seconds of every finished child process (and their reaped children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str]) -> tuple[float, float, str]:
    """Run ``python -m cganseg COMMAND``; its CPU-seconds (children included), wall seconds and
    output (also shown)."""
    before, wall = children_cpu_s(), time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cganseg", *command], check=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    print(done.stdout)
    return children_cpu_s() - before, time.perf_counter() - wall, done.stdout


def time_demo(tmp: Path) -> dict:
    out = tmp / "demo_output"
    cpu_s, wall_s, _ = timed(["demo", "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    for row in summary["runs"]:
        folder, row["trainer"] = RUNS[row["name"]]
        config = yaml.safe_load((out / folder / "config.yaml").read_text())
        row["sizing"] = {k: config[k] for k in SIZING if k in config}
    return {"command": "cganseg demo --out DIR (make demo after its install step)",
            "cpu_s": round(cpu_s, 1), "wall_s": round(wall_s, 1),
            "settings": summary["settings"], "runs": summary["runs"]}  # fmt: skip


def time_bare_train(tmp: Path) -> dict:
    data, run = tmp / "data", tmp / "run"
    subprocess.run([sys.executable, "-m", "cganseg", "demo-data", str(data)], check=True)
    cpu_s, wall_s, output = timed(["train", "--data", str(data), "--out", str(run)])
    said = [line for line in output.splitlines() if "estimated" in line]
    phases = []
    for trainer, folder in (("train-seg", run / "seg_pretrain"), ("train", run)):
        config = yaml.safe_load((folder / "config.yaml").read_text())
        phases.append({"trainer": trainer, "steps": config["iterations"],
                       "sizing": {k: config[k] for k in SIZING if k in config}})  # fmt: skip
    return {"command": "cganseg train --data DEMO_DATA --out RUN", "cpu_s": round(cpu_s, 1),
            "wall_s": round(wall_s, 1), "start_line": said[0] if said else None,
            "phases": phases}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--what", choices=("demo", "bare-train"), default="demo")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/demo_time.json "
                        "or bare_train_time.json")  # fmt: skip
    args = parser.parse_args(argv)
    name = "demo_time.json" if args.what == "demo" else "bare_train_time.json"
    out = args.out or ROOT / "benchmarks/results" / name
    with tempfile.TemporaryDirectory() as tmp:
        record = (time_demo if args.what == "demo" else time_bare_train)(Path(tmp))
    record = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", **record,
              "cpu_minutes": round(record["cpu_s"] / 60, 1)}  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{record['command']}: {record['cpu_minutes']} CPU-minutes, "
          f"{record['wall_s'] / 60:.1f} min wall; wrote {out}")


if __name__ == "__main__":
    main()
