"""One prepared check for a lent GPU (issue 32, item 4): everything a first GPU session must learn.

A session is lent a GPU for about 15 minutes in all, so it must not be spent finding out how to
run. ``benchmarks/gpu_check.sh`` (which sets up Python and calls this script) runs these steps,
each in its own subprocess with its own time limit, so that one failure or hang costs only its
own minutes and the others still report (under 8 minutes in all on one H100 or H200):

- ``env``: torch, CUDA visible, the device's name, memory, bf16 support;
- ``speed``: ``benchmarks/speed.py --presets paper --backbones unet`` on the device: seconds per
  cGAN-Seg step and per ``train-seg`` step (AMP on, the trainers' default on CUDA) and tiled
  prediction's megapixels per second. The cGAN step's perceptual network is VGG19 with random
  weights (the GPU image has no weights cache and cannot download; any weights time the same);
- ``train-seg``: a 200-step ``cganseg train-seg`` run on the bundled demo data, its wall time,
  seconds per step with loading and validation, and its last validation F1;
- ``segment``: ``segment`` with the shipped ``cells`` model on 1024x1024 phase-contrast images
  (the bundled usiigaci sample mirrored to 1024x1024): images per second end to end (at
  ``--diameter auto``, the default) and split into the network and flow following at the
  model's training diameter, peak memory;
- ``ddp``: ``torchrun`` with one process: a process group (NCCL on CUDA, gloo on CPU), an
  all-reduce and one DistributedDataParallel step, then ``cganseg train-seg`` under torchrun.

Writes ``gpu_check_DEVICE.json`` in ``--out`` (default ``benchmarks/results``), one entry per
step with its status, wall seconds and figures. ``--device cpu`` is the dry mode: the same steps
with tiny sizes, so that CI proves the script runs before a GPU is ever lent.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shutil
import signal
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
from cganseg.runtime.atomic import write_text

ROOT = Path(__file__).resolve().parents[1]
#: each step's time limit in seconds on a GPU (7.7 minutes in all)
LIMITS = {"env": 40, "speed": 180, "train-seg": 100, "segment": 60, "ddp": 80}
#: the dry mode's limits are this many times longer: a 2-core CPU is slower at everything
DRY_SLACK = 3
#: the dry mode's tiny network and data (``--device cpu``)
DRY = ["--width", "4", "--crop", "32", "--batch-size", "2", "--workers", "0", "--val-every", "2",
       "--n-train", "4"]


# ------------------------------------------------------------------ the steps (in subprocesses)
def step_env(device: str, work: Path, dry: bool) -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(),
                            "cuda_available": torch.cuda.is_available()}  # fmt: skip
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available to torch")
        props = torch.cuda.get_device_properties(0)
        info.update(name=props.name, memory_gb=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count,
                    bf16=torch.cuda.is_bf16_supported(), cuda=torch.version.cuda)  # fmt: skip
        smi = shutil.which("nvidia-smi")
        if smi:
            info["nvidia_smi"] = subprocess.run([smi, "-L"], capture_output=True, text=True,
                                                timeout=30).stdout.strip()  # fmt: skip
    else:
        info.update(name=platform.processor() or platform.machine(),
                    threads=torch.get_num_threads())  # fmt: skip
    return info


def _limit(name: str, dry: bool) -> float:
    return LIMITS[name] * (DRY_SLACK if dry else 1)


def step_speed(device: str, work: Path, dry: bool) -> dict[str, Any]:
    from cganseg.models.vgg import vgg19_features

    weights = work / "vgg19_random.pt"  # timing only: any weights cost the same
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in vgg19_features().state_dict().items()}
    torch.save(state, weights)
    out = work / "speed.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--device", device,
               "--presets", "paper", "--backbones", "unet", "--perceptual", "vgg19",
               "--perceptual-weights", str(weights), "--out", str(out)]  # fmt: skip
    _run(command + (["--quick"] if dry else []), _limit("speed", dry) - 10)
    return {"rows": json.loads(out.read_text())["results"]}


def step_train_seg(device: str, work: Path, dry: bool) -> dict[str, Any]:
    iterations = 4 if dry else 200
    run = work / "train_seg"
    command = [sys.executable, "-m", "cganseg", "train-seg", "--data", str(demo_data_dir()),
               "--out", str(run), "--iterations", str(iterations), "--device", device,
               "--quiet"] + (DRY if dry else ["--val-every", "100"])  # fmt: skip
    t0 = time.perf_counter()
    _run(command, _limit("train-seg", dry) - 10)
    wall = time.perf_counter() - t0
    with open(run / "metrics.csv", newline="", encoding="utf-8") as fh:
        validated = [r for r in csv.DictReader(fh) if r.get("val_f1_iou50")]
    return {"iterations": iterations, "run_wall_s": wall, "s_per_step_all_in": wall / iterations,
            "last_validation": validated[-1] if validated else None}  # fmt: skip


def _phase_contrast_1024(size: int) -> np.ndarray:
    """The bundled usiigaci sample (512x512) mirrored to ``size`` x ``size``."""
    from cganseg.data.io import read_image
    from cganseg.pretrained import cards, sample_image

    image = read_image(sample_image(cards()["cells"]), "gray")
    reps = [(0, 0)] + [(0, max(0, size - s)) for s in image.shape[1:]]
    return np.pad(image, reps, mode="symmetric")[:, :size, :size]


def step_segment(device: str, work: Path, dry: bool) -> dict[str, Any]:
    from cganseg.inference.segment import load_segmenter, prepare_image

    size, count = (256, 1) if dry else (1024, 4)
    seg = load_segmenter("cells", device)
    chw = prepare_image(seg, _phase_contrast_1024(size), "sample")
    train = seg.post.train_diameter
    sync = torch.cuda.synchronize if seg.device.type == "cuda" else (lambda: None)
    network, following, whole = [], [], []
    for i in range(count + 1):  # the first is warm-up (cuDNN autotuning, numba compile)
        t0 = time.perf_counter()
        output = seg.predict(chw, diameter=train, shape=seg.label_shape(chw.shape, train))
        sync()
        t1 = time.perf_counter()
        seg.post.labels_at(output, chw.shape[-2:])
        t2 = time.perf_counter()
        seg.segment(chw)  # as `cganseg segment` does it: --diameter auto
        sync()
        t3 = time.perf_counter()
        if i:
            network.append(t1 - t0)
            following.append(t2 - t1)
            whole.append(t3 - t2)
    if seg.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(seg.device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"image": f"{size}x{size} phase contrast", "images": count,
            "images_per_s_auto": 1 / statistics.median(whole),
            "network_s": statistics.median(network),
            "flow_following_s": statistics.median(following),
            "peak_memory_mb": peak}  # fmt: skip


def step_ddp(device: str, work: Path, dry: bool) -> dict[str, Any]:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "1"]  # fmt: skip
    group = _run(torchrun + [__file__, "--ddp-worker", device], _limit("ddp", dry) / 3)
    run = work / "ddp_run"
    command = torchrun + ["-m", "cganseg", "train-seg", "--data", str(demo_data_dir()),
                          "--out", str(run), "--iterations", "4", "--device", device,
                          "--quiet"] + DRY  # fmt: skip
    _run(command, _limit("ddp", dry) * 2 / 3 - 5)
    return {"process_group": json.loads(group.strip().splitlines()[-1]),
            "train_seg_under_torchrun": (run / "last.pt").is_file()}  # fmt: skip


def ddp_worker(device: str) -> dict[str, Any]:
    """Under torchrun: join a process group, all-reduce, one DDP step (NCCL on CUDA)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    cuda = device.startswith("cuda")
    backend = "nccl" if cuda else "gloo"
    dev = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if cuda else "cpu")
    dist.init_process_group(backend)
    try:
        value = torch.ones(1, device=dev)
        dist.all_reduce(value)
        model = DistributedDataParallel(torch.nn.Conv2d(1, 4, 3).to(dev),
                                        device_ids=[dev.index] if cuda else None)  # fmt: skip
        model(torch.randn(2, 1, 16, 16, device=dev)).mean().backward()
        return {"backend": backend, "world": dist.get_world_size(),
                "all_reduce": float(value.item())}  # fmt: skip
    finally:
        dist.destroy_process_group()


STEPS = {"env": step_env, "speed": step_speed, "train-seg": step_train_seg,
         "segment": step_segment, "ddp": step_ddp}  # fmt: skip


# ------------------------------------------------------------------ orchestration
def _run(command: list[str], limit: float) -> str:
    """Run a command in a process group of its own; its stdout, RuntimeError with the last line
    it printed on stderr, or TimeoutExpired after ``limit`` seconds with the whole group (data
    workers, torchrun's children) killed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT, start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if proc.returncode != 0:
        lines = (err.strip() or out.strip()).splitlines()
        raise RuntimeError(f"exit {proc.returncode}: {lines[-1] if lines else 'no output'}")
    return out


def run_step(name: str, device: str, work: Path, dry: bool) -> dict[str, Any]:
    """One step in a subprocess within its time limit: status, wall seconds, its figures."""
    t0 = time.perf_counter()
    command = [sys.executable, __file__, "--step", name, "--device", device, "--work", str(work)]
    try:
        out = _run(command + (["--dry"] if dry else []), _limit(name, dry))
        result = {"status": "ok", **json.loads(out.strip().splitlines()[-1])}
    except subprocess.TimeoutExpired:
        result = {"status": "timeout", "limit_s": _limit(name, dry)}
    except (RuntimeError, ValueError, IndexError) as exc:
        result = {"status": "failed", "error": str(exc)}
    return {"wall_s": round(time.perf_counter() - t0, 1), **result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (the check) or cpu (dry mode)")
    parser.add_argument("--steps", nargs="+", choices=list(STEPS), default=list(STEPS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--step", choices=list(STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dry", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ddp-worker", metavar="DEVICE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ddp_worker:
        print(json.dumps(ddp_worker(args.ddp_worker)))
        return 0
    if args.step:
        print(json.dumps(STEPS[args.step](args.device, args.work, args.dry)))
        return 0
    dry = not args.device.startswith("cuda")
    record: dict[str, Any] = {"device": args.device, "dry_mode": dry, "machine":
                              f"{platform.machine()}, {os.cpu_count()} CPUs", "steps": {}}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.steps:
            work = Path(tmp) / name
            work.mkdir()
            record["steps"][name] = run_step(name, args.device, work, dry)
            print(f"{name:<10} {json.dumps(record['steps'][name])}", flush=True)
    record["wall_s"] = round(time.perf_counter() - t0, 1)
    out = args.out / f"gpu_check_{args.device.split(':')[0]}.json"
    write_text(out, json.dumps(record, indent=2) + "\n")
    print(f"wrote {out} ({record['wall_s']} s)")
    return 0 if all(s["status"] == "ok" for s in record["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
