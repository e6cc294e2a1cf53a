"""Training and segmentation speed per preset and backbone (issue 6's table; not a unit test).

For each preset (cpu, paper) and backbone (unet, deepsea, cellpose), in a fresh subprocess each
(so its peak memory is its own):

- ``train`` (cGAN-Seg) and ``train-seg`` seconds per step, median over ``--steps`` steps after
  ``--warmup`` untimed ones, batches drawn before the timer starts (compute only);
- ``train-seg`` seconds per step *with* its data loader (crops, augmentation, ``num_workers``
  worker processes, default 2), because on small machines loading can cost more than the step;
- segmentation throughput of the network: megapixels per second of tiled prediction
  (:func:`cganseg.inference.tiling.predict_outputs`) on a 1024x1024 image, instance
  extraction excluded (it depends on trained weights);
- peak memory: resident set of the subprocess on CPU, ``torch.cuda.max_memory_allocated`` on CUDA.

``--variants`` measures the training speed options against each other: ``before`` (Adam without
fused kernels, as before issue 6), ``default``, ``channels-last`` and ``compile`` (the first
steps compile: raise ``--warmup`` so that they are not timed), ``all-terms`` (D2 trained and
D2_S computed under argmax, as before issue 15 skipped them), ``perceptual-d3``,
``perceptual-half``, ``perceptual-d3-half`` (issue 17's cheaper perceptual loss: 3 VGG blocks,
images at half size, both). A variant named twice runs twice,
so ``--variants all-terms default all-terms default`` interleaves two.

Data: the bundled demo images (256x256 nuclei), so the run needs nothing else. Prints a table and
writes ``benchmarks/results/speed_DEVICE.json``. Run from the repository root:
``.venv/bin/python benchmarks/speed.py [--device cuda] [--presets cpu paper] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cganseg.demo import demo_data_dir
from cganseg.models.registry import SEGMENTERS
from cganseg.options import PRESET_NAMES, CGanTrainConfig, SegTrainConfig, preset_sizes
from cganseg.runtime.atomic import write_text

KINDS = ("train", "train-seg", "segment")
#: config options of each variant (``--variants``); segmentation is measured for ``default`` only
VARIANTS: dict[str, dict[str, Any]] = {
    "before": {"fused_adam": False},
    "default": {},
    "channels-last": {"channels_last": True},
    "compile": {"compile": True},
    # as before issue 15: D2 and D2_S computed and trained although argmax gives them no effect
    "all-terms": {"log_unused_terms": True},
    # issue 17's cheaper perceptual loss: 3 VGG blocks, and/or images at half size
    "perceptual-d3": {"perceptual_depth": 3},
    "perceptual-half": {"perceptual_scale": 0.5},
    "perceptual-d3-half": {"perceptual_depth": 3, "perceptual_scale": 0.5},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_step(trainer, steps: int, warmup: int, with_loading: bool) -> float:
    workers = trainer.cfg.num_workers
    if not with_loading:  # no worker may prefetch (and take CPU) while a step is timed
        trainer.cfg.num_workers = 0
    try:
        batches = iter(trainer.loader())
    finally:
        trainer.cfg.num_workers = workers
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(batches)
        if not with_loading:
            t0 = time.perf_counter()
        trainer.train_step(*batch)
        _sync(trainer.device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _configs(
    preset: str, backbone: str, variant: str, device: str, tmp: str, quick: bool,
    perceptual: str = "hed-vgg16", perceptual_weights: str | None = None,
) -> dict[str, Any]:
    options = {
        **preset_sizes(preset),
        **VARIANTS[variant],
        "data": str(demo_data_dir()),
        "out": tmp,
        "device": device,
        "model": backbone,
        "val_fraction": 0.1,
    }
    if quick:
        options.update(
            crop=[32, 32],
            batch_size=2,
            width=4,
            gen_width=4,
            disc_width=4,
            style_dim=8,
            n_mapping=1,
        )
    if options["crop"][0] > 256:  # the demo images are 256x256
        options["crop"] = [256, 256]
    seg_keys = set(SegTrainConfig.__dataclass_fields__)
    return {
        "cgan": CGanTrainConfig(**options, perceptual="none" if quick else perceptual,
                                perceptual_weights=perceptual_weights),
        "seg": SegTrainConfig(**{k: v for k, v in options.items() if k in seg_keys}),
    }


def measure(
    kind: str,
    preset: str,
    backbone: str,
    variant: str,
    device: str,
    steps: int,
    warmup: int,
    quick: bool,
    perceptual: str = "hed-vgg16",
    perceptual_weights: str | None = None,
) -> dict[str, Any]:
    """One measurement, in this process (called in a fresh subprocess by :func:`main`)."""
    from cganseg.inference.tiling import predict_outputs
    from cganseg.runtime.device import resolve_device
    from cganseg.training.cgan_trainer import CGanTrainer
    from cganseg.training.seg_trainer import SegTrainer

    dev = resolve_device(device)
    result: dict[str, Any] = {
        "kind": kind, "preset": preset, "backbone": backbone, "variant": variant
    }
    with tempfile.TemporaryDirectory() as tmp:
        cfgs = _configs(preset, backbone, variant, device, tmp, quick, perceptual,
                        perceptual_weights)
        if kind == "train":
            cfg = cfgs["cgan"]
            trainer = CGanTrainer.from_config(cfg)
            result["s_per_step"] = _median_step(trainer, steps, warmup, with_loading=False)
        elif kind == "train-seg":
            cfg = cfgs["seg"]
            trainer = SegTrainer.from_config(cfg)
            result["s_per_step"] = _median_step(trainer, steps, warmup, with_loading=False)
            result["s_per_step_with_loading"] = _median_step(trainer, steps, warmup, True)
        else:
            cfg = cfgs["seg"]
            model = SegTrainer.from_config(cfg).model.eval()
            size = 128 if quick else 1024
            image = np.random.default_rng(0).uniform(-1, 1, (1, size, size)).astype(np.float32)
            times = []
            for i in range(warmup + steps):
                t0 = time.perf_counter()
                predict_outputs(model, image, tile_size=cfg.tile_size, device=dev)
                _sync(dev)
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
            result["megapixels_per_s"] = size * size / 1e6 / statistics.median(times)
        result.update(crop=list(cfg.crop), batch_size=cfg.batch_size)
    if dev.type == "cuda":
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        result["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return result


def _run_worker(job: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {**job, "error": tail[0]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _row(r: dict[str, Any]) -> str:
    if "error" in r:
        value = f"failed: {r['error']}"
    elif r["kind"] == "segment":
        value = f"{r['megapixels_per_s']:.2f} MP/s"
    else:
        value = f"{r['s_per_step']:.3f} s/step"
        if "s_per_step_with_loading" in r:
            value += f" ({r['s_per_step_with_loading']:.3f} with loading)"
    memory = f"{r['peak_memory_mb']:.0f} MB" if "peak_memory_mb" in r else ""
    name = f"{r['preset']:<8}{r['backbone']:<9}{r['variant']:<14}{r['kind']:<10}"
    return f"{name}{value:<40}{memory:>9}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--presets", nargs="+", choices=sorted(PRESET_NAMES[1:]), default=["cpu"])
    parser.add_argument("--backbones", nargs="+", choices=SEGMENTERS, default=list(SEGMENTERS))
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["default"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny networks and crops, 1 step")
    parser.add_argument("--perceptual", choices=("hed-vgg16", "vgg19"), default="hed-vgg16",
                        help="the cGAN step's perceptual network")
    parser.add_argument("--perceptual-weights", help="its weights file (any weights time the "
                        "same: gpu_check.py passes random VGG19 weights where none are cached)")
    parser.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/...)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(measure(**job)))
        return 0
    steps, warmup = (1, 0) if args.quick else (args.steps, args.warmup)
    jobs = [
        {
            "kind": k,
            "preset": p,
            "backbone": b,
            "variant": v,
            "device": args.device,
            "steps": steps,
            "warmup": warmup,
            "quick": args.quick,
            "perceptual": args.perceptual,
            "perceptual_weights": args.perceptual_weights,
        }
        for p in args.presets
        for b in args.backbones
        for v in args.variants
        for k in args.kinds
        if k != "segment" or v == "default"
    ]
    head = f"{'preset':<8}{'model':<9}{'variant':<14}{'kind':<10}{'median':<40}{'peak mem':>9}"
    print(head)
    results = []
    for job in jobs:
        results.append(_run_worker(job))
        print(_row(results[-1]), flush=True)
    record = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "device": args.device,
        "cuda": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
        "torch": torch.__version__,
        "steps": steps,
        "warmup": warmup,
        "data": "bundled demo images (256x256); segment: 1024x1024",
        "results": results,
    }
    out = args.out or Path(__file__).parent / "results" / f"speed_{args.device.split(':')[0]}.json"
    write_text(out, json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
