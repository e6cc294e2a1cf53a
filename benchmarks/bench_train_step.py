"""Seconds per training step of `train` (cGAN-Seg) and `train-seg` (not a unit test).

Builds each trainer on a data set (default: the bundled demo data) with the CPU preset's sizes
(128x128 crops, batch 4, UNet width 16, generator width 16, discriminators width 32), runs
``--steps`` steps after ``--warmup`` untimed ones, and reports the median and the ratio. Data
loading is excluded (batches are drawn before the timer starts). Prints a table and writes
benchmarks/results/train_step.json.

Run from the repository root:
``.venv/bin/python benchmarks/bench_train_step.py [--data DIR] [--perceptual hed-vgg16]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cganseg.atomic import write_text
from cganseg.demo import demo_data_dir
from cganseg.training.cgan_trainer import CGanTrainer
from cganseg.training.config import PRESETS, CGanTrainConfig, SegTrainConfig
from cganseg.training.seg_trainer import SegTrainer


def time_steps(trainer, steps: int, warmup: int) -> list[float]:
    batches = iter(trainer.loader())
    times = []
    for i in range(warmup + steps):
        batch = next(batches)
        t0 = time.perf_counter()
        trainer.train_step(*batch)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(demo_data_dir()))
    parser.add_argument("--perceptual", default="hed-vgg16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    preset = PRESETS["cpu"]
    seg_keys = set(SegTrainConfig.__dataclass_fields__)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = dict(preset, data=args.data, out=tmp, device=args.device, num_workers=0)
        configs = {
            "train (cGAN-Seg)": (CGanTrainer, CGanTrainConfig(**base, perceptual=args.perceptual)),
            "train-seg": (
                SegTrainer,
                SegTrainConfig(**{k: v for k, v in base.items() if k in seg_keys}),
            ),
        }
        for name, (cls, cfg) in configs.items():
            times = time_steps(cls(cfg, None, progress=False), args.steps, args.warmup)
            results[name] = {"median_s": statistics.median(times), "steps": len(times)}
    ratio = results["train (cGAN-Seg)"]["median_s"] / results["train-seg"]["median_s"]
    print(
        f"data {args.data}; crops 128x128, batch 4, perceptual {args.perceptual}, "
        f"device {args.device}, torch threads {torch.get_num_threads()}"
    )
    for name, r in results.items():
        print(f"{name:18s} median {r['median_s']:.3f} s/step over {r['steps']} steps")
    print(f"ratio train / train-seg: {ratio:.1f}")
    record = {
        "settings": {
            "data": args.data,
            "preset": "cpu",
            "perceptual": args.perceptual,
            "device": args.device,
            "threads": torch.get_num_threads(),
            "machine": platform.platform(),
            "processor": platform.processor(),
        },
        "results": results,
        "ratio_train_over_train_seg": ratio,
    }
    out = Path(__file__).parent / "results" / "train_step.json"
    write_text(out, json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
