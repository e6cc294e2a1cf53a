"""Speed against Cellpose 3 on a CPU (issue 32, item 2; not a unit test).

Two costs a user waits for, ours and Cellpose 3's (a dependency of cganseg) measured the same
way, interleaved in one run (``--rounds`` rounds; each measurement in a fresh subprocess, so
its peak resident memory is its own), medians over rounds:

- **a training step** of the conventional flows trainer at the same crop (Cellpose's 224 px)
  and batch (8), on the bundled demo pairs: ours (``train-seg``'s CPU preset: UNet width 16)
  and Cellpose's (its CPnet, nbase 32, and its own step: ``random_rotate_and_resize`` on flows
  made once before training, as ``train_seg`` does, the network, ``_loss_fn_seg``, AdamW).
  *Compute*: the step on a batch made before the timer; *with loading*: our data loader (its
  worker processes) or Cellpose's augmentation included. Wall seconds; CPU-seconds of the
  compute step (this process, all its threads); GFLOP of the forward pass over the batch.
- **segmenting** 1024 px phase-contrast images (usiigaci_phase, ``../shared/data``), cells
  given as ``--diameter`` px across to both (default: the model's training median, 63 px for
  the shipped ``cells``: ours sees cells 30 px across, as Cellpose does, so both networks see
  the images at about half size). Ours: ``--model`` (default the shipped ``cells``) as
  ``cganseg segment`` runs it. Cellpose: ``CellposeModel.eval`` with CPnet
  at random weights (timing only: no Cellpose weights can be fetched here, and weights do not
  change a network's time); its flow following (``resize_and_compute_masks`` with its defaults,
  ``niter`` 200 / rescale as ``eval`` sets it, at the image's size as its default
  ``resample=True`` does) runs on *our* network's flows of the same image, so that both follow
  real cells; ours follows at its network's scale, as ``segment`` does since 2026-12-07
  (``Segmenter.label_shape``; Cellpose's ``resample=False`` would do the same). Split into I/O
  (read, normalise, write the labels TIFF), network (rescaling and tiles included) and flow
  following; the first image is segmented once
  untimed before the timed pass (numba compiles, caches fill: once per process for a user).

The physical limit of each network: its forward GFLOP (times 3 for a training step: forward and
backward) over this machine's measured peak, the median GFLOP/s of a 2048x2048 fp32 matrix
product (``torch.mm``) with all threads. Prints a table and writes
``benchmarks/results/vs_cellpose.json``. From the repository root::

    .venv/bin/python benchmarks/vs_cellpose.py [--rounds 3] [--images 4]

``--quick``: 2 tiny steps, 2 bundled 256 px demo images and the shipped ``nuclei`` model (the
tests run it).
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
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import _cellpose_net  # noqa: E402
from speed import _median_step  # noqa: E402
from start_models import ROOT, SHARED  # noqa: E402

from cganseg.data.folders import find_pairs  # noqa: E402
from cganseg.data.io import read_image  # noqa: E402
from cganseg.data.label_formats import write_label_files  # noqa: E402
from cganseg.data.rescale import resize_image  # noqa: E402
from cganseg.demo import demo_data_dir  # noqa: E402
from cganseg.runtime.atomic import write_text  # noqa: E402

TOOLS = ("ours", "cellpose")
CROP, BATCH = 224, 8  # Cellpose 3's train_seg defaults (bsize, batch_size)


def gflop(net: torch.nn.Module, batch: torch.Tensor) -> float:
    """Forward GFLOP of ``net`` over ``batch`` (counted, not timed)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(batch)
    return counter.get_total_flops() / 1e9


def peak_gflops(rounds: int = 5) -> float:
    """This machine's fp32 matrix-product rate (GFLOP/s, median of ``rounds``)."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        torch.mm(a, b)
        rates.append(2 * 2048**3 / (time.perf_counter() - t0) / 1e9)
    return statistics.median(rates)


def _cpu_step(step, batch, steps: int) -> tuple[float, float]:
    """(median wall-s, median CPU-s) of ``step(batch)`` over ``steps`` calls after one."""
    step(batch)
    wall, cpu = [], []
    for _ in range(steps):
        w, c = time.perf_counter(), time.process_time()
        step(batch)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def train_ours(steps: int, quick: bool, tmp: str) -> dict[str, Any]:
    from cganseg.options import SegTrainConfig
    from cganseg.training.seg_trainer import SegTrainer
    from cganseg.training.settings import resolve

    crop, batch = (32, 2) if quick else (CROP, BATCH)
    cfg = resolve(SegTrainConfig, {"data": str(demo_data_dir()), "out": tmp, "device": "cpu",
                                   "preset": "cpu", "crop": [crop, crop], "batch_size": batch,
                                   "val_fraction": 0.1})  # fmt: skip
    trainer = SegTrainer.from_config(cfg)
    workers, trainer.cfg.num_workers = trainer.cfg.num_workers, 0
    images, targets = next(iter(trainer.loader()))
    trainer.cfg.num_workers = workers
    wall, cpu = _cpu_step(lambda b: trainer.train_step(*b), (images, targets), steps)
    return {"network": f"UNet width {cfg.width}", "crop": crop, "batch": batch,
            "compute_s": wall, "compute_cpu_s": cpu,
            "with_loading_s": _median_step(trainer, steps, 1, with_loading=True),
            "gflop": gflop(trainer.model.eval(), images)}  # fmt: skip


#: Cellpose 3's default scale (px): its CPnet sees cells this size across
CELLPOSE_DIAMETER = 30.0


def train_cellpose(steps: int, quick: bool) -> dict[str, Any]:
    from cellpose import dynamics, transforms, utils
    from cellpose.train import _loss_fn_seg

    crop, batch = (32, 2) if quick else (CROP, BATCH)
    pairs = find_pairs(demo_data_dir())[:batch]
    grey = [transforms.normalize99(read_image(p.image)[0]) for p in pairs]
    images = [np.stack([g, np.zeros_like(g)]) for g in grey]
    labels = [read_image(p.mask)[0].astype(np.int32) for p in pairs]
    flows = [f[1:] for f in dynamics.labels_to_flows([lab[None] for lab in labels],
                                                      device=torch.device("cpu"))]  # fmt: skip
    diams = np.array([utils.diameters(lab)[0] for lab in labels])
    model = _cellpose_net(CELLPOSE_DIAMETER)
    net, device = model.net, model.device
    net.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.005, weight_decay=1e-5)

    def augment(_: Any) -> tuple[torch.Tensor, np.ndarray]:
        imgi, lbl = transforms.random_rotate_and_resize(
            images, Y=flows, rescale=diams / net.diam_mean.item(), xy=(crop, crop))[:2]
        return torch.from_numpy(imgi).to(device), lbl

    def step(batch_: tuple[torch.Tensor, np.ndarray]) -> None:
        loss = _loss_fn_seg(batch_[1], net(batch_[0])[0], device)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    made = augment(None)
    wall, cpu = _cpu_step(step, made, steps)
    loading, _ = _cpu_step(lambda b: step(augment(b)), None, steps)
    return {"network": "CPnet nbase 32", "crop": crop, "batch": batch, "compute_s": wall,
            "compute_cpu_s": cpu, "with_loading_s": loading,
            "gflop": gflop(net.eval(), made[0])}  # fmt: skip


def _images(quick: bool, n: int) -> list[Path]:
    folder = demo_data_dir() / "images" if quick else SHARED / "usiigaci_phase" / "images"
    if not folder.is_dir():
        raise SystemExit(f"{folder} is missing (the real run needs ../shared/data)")
    return sorted(folder.iterdir())[:n]


def segment_tool(tool: str, paths: list[Path], model_name: str, diameter: float,
                 flows_dir: Path) -> dict[str, Any]:  # fmt: skip
    """Per image: I/O, network and flow-following seconds of one tool; ours writes its
    network's output to ``flows_dir`` for Cellpose's flow following to read."""
    from cganseg.inference.segment import load_segmenter, prepare_image

    ours = load_segmenter(model_name, device="cpu")
    rows = []
    with tempfile.TemporaryDirectory() as out:
        if tool == "cellpose":
            from cellpose import dynamics

            model = _cellpose_net(CELLPOSE_DIAMETER)
        for i, path in enumerate([paths[0], *paths]):  # the first, untimed: compiles, caches
            t0 = time.perf_counter()
            image = prepare_image(ours, read_image(path, ours.channels), path, diameter)
            t1 = time.perf_counter()
            if tool == "ours":  # as segment does: cells found at the network's scale
                output = ours.predict(image, diameter=diameter,
                                      shape=ours.label_shape(image.shape, diameter))
                t2 = time.perf_counter()
                labels = ours.post.labels_at(output, image.shape[-2:])
            else:
                model.eval(image[0], channels=[0, 0], diameter=diameter, compute_masks=False,
                           normalize=False)  # fmt: skip (normalised as ours is, above)
                t2 = time.perf_counter()
                output = np.load(flows_dir / f"{path.stem}.npy")
                rescale = model.diam_mean / diameter
                labels = dynamics.resize_and_compute_masks(
                    output[:2], output[2], niter=int(200 / rescale))
            t3 = time.perf_counter()
            write_label_files(Path(out), path, labels.astype(np.int32), ["tif"], None)
            t4 = time.perf_counter()
            if tool == "ours":  # Cellpose follows at the image's size, as its eval does
                np.save(flows_dir / f"{path.stem}.npy", resize_image(output, image.shape[-2:]))
            if i == 0:
                continue
            rows.append({"io_s": (t1 - t0) + (t4 - t3), "network_s": t2 - t1,
                         "flows_s": t3 - t2, "cells": int(labels.max()),
                         "pixels": int(image.shape[-2] * image.shape[-1])})  # fmt: skip
    return {"images": rows}


def network_gflop(tool: str, model_name: str, diameter: float, size: int) -> float:
    """Forward GFLOP of the tool's network over a ``size`` px square image at the scale it
    segments it (tiles' overlap not counted: the lower bound)."""
    from cganseg.inference.segment import load_segmenter

    ours = load_segmenter(model_name, device="cpu")
    factor = ours.factor(diameter) if tool == "ours" else CELLPOSE_DIAMETER / diameter
    side = max(32, round(size * factor / 32) * 32)
    if tool == "ours":
        return gflop(ours.model.eval(), torch.zeros(1, 1, side, side))
    return gflop(_cellpose_net(CELLPOSE_DIAMETER).net.eval(), torch.zeros(1, 2, side, side))


def worker(job: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        if job["kind"] == "train":
            result = (train_ours(job["steps"], job["quick"], tmp) if job["tool"] == "ours"
                      else train_cellpose(job["steps"], job["quick"]))  # fmt: skip
        else:
            paths = [Path(p) for p in job["paths"]]
            result = segment_tool(job["tool"], paths, job["model"], job["diameter"],
                                  Path(job["flows_dir"]))  # fmt: skip
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {**job, **result, "peak_rss_gb": rss}


def _run(job: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{job['kind']} {job['tool']} failed: {proc.stderr.strip()[-800:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict[str, Any]], peak: float, model_name: str, diameter: float,
              size: int) -> dict[str, Any]:  # fmt: skip
    """Medians over rounds per (kind, tool), and each network's physical limit."""
    table: dict[str, Any] = {}
    for tool in TOOLS:
        train = [r for r in runs if (r["kind"], r["tool"]) == ("train", tool)]
        seg = [r for r in runs if (r["kind"], r["tool"]) == ("segment", tool)]
        g = train[0]["gflop"]
        per_image = {k: statistics.median(statistics.mean(i[k] for i in r["images"]) for r in seg)
                     for k in ("io_s", "network_s", "flows_s")}  # fmt: skip
        total = sum(per_image.values())
        seg_gflop = network_gflop(tool, model_name, diameter, size)
        table[tool] = {
            "network": train[0]["network"],
            "train_step": {
                "crop": train[0]["crop"], "batch": train[0]["batch"], "gflop_forward": g,
                "compute_s": statistics.median(r["compute_s"] for r in train),
                "compute_cpu_s": statistics.median(r["compute_cpu_s"] for r in train),
                "with_loading_s": statistics.median(r["with_loading_s"] for r in train),
                "limit_s": 3 * g / peak,
                "peak_rss_gb": max(r["peak_rss_gb"] for r in train)},
            "segment": {
                **per_image, "images_per_s": 1 / total,
                "gflop_per_image": seg_gflop, "network_limit_s": seg_gflop / peak,
                "cells_per_image": statistics.mean(i["cells"] for i in seg[0]["images"]),
                "peak_rss_gb": max(r["peak_rss_gb"] for r in seg)},
        }  # fmt: skip
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--model", help="ours (default: cells; --quick: nuclei)")
    parser.add_argument("--diameter", type=float, help="of the cells (default: the model's "
                        "training median)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/vs_cellpose.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    rounds, steps = (1, 2) if args.quick else (args.rounds, args.steps)
    paths = _images(args.quick, 2 if args.quick else args.images)
    model = args.model or ("nuclei" if args.quick else "cells")
    from cganseg.inference.segment import load_segmenter

    diameter = args.diameter or load_segmenter(model, device="cpu").post.train_diameter
    peak = peak_gflops()
    runs = []
    with tempfile.TemporaryDirectory() as flows_dir:
        for r in range(rounds):
            for kind in ("train", "segment"):
                for tool in TOOLS:  # ours first: Cellpose's flow following reads its flows
                    job = {"kind": kind, "tool": tool, "steps": steps, "quick": args.quick,
                           "paths": [str(p) for p in paths], "model": model,
                           "diameter": diameter, "flows_dir": flows_dir}  # fmt: skip
                    runs.append(_run(job))
                    print(f"round {r}: {kind} {tool} done", flush=True)
    size = max(read_image(paths[0]).shape[-2:])
    table = summarise(runs, peak, model, diameter, size)
    print(f"peak fp32 rate (2048x2048 mm): {peak:.0f} GFLOP/s; medians over {rounds} rounds")
    for tool, row in table.items():
        t, s = row["train_step"], row["segment"]
        print(f"{tool:9s} {row['network']:16s} train step {t['compute_s']:.3f} s "
              f"({t['with_loading_s']:.3f} with loading; limit {t['limit_s']:.3f}; "
              f"{t['gflop_forward']:.1f} GFLOP) | segment {s['images_per_s']:.3f} img/s: "
              f"I/O {s['io_s']:.2f} s, network {s['network_s']:.2f} s (limit "
              f"{s['network_limit_s']:.2f}), flows {s['flows_s']:.2f} s; "
              f"peak {s['peak_rss_gb']:.2f} GB")  # fmt: skip
    record = {"machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
              "torch": torch.__version__, "peak_gflops": peak, "rounds": rounds,
              "steps": steps, "model": model, "diameter": diameter, "image_size": size,
              "images": [p.name for p in paths], "tools": table, "runs": runs}  # fmt: skip
    write_text(args.out, json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
