"""How close does the generator get to real images, per CPU-second? Generator recipes (issue 31).

The instrument of issue 31, item 1 (not a unit test). For each data set, recipe and seed it trains
one ``cganseg train --val-fid`` run and reads the generator's curve from its ``metrics.csv``:

- **held-out images**: every run of a set validates on the same ``--held-out`` groups of images
  (DSB: 37 images; usiigaci_phase: 5 source images = 20 tiles of value.py's 2x2 tiling), and
  a second set of as many groups is the test set. At each of ``--validations`` evenly spaced
  steps the run logs FID and KID of its generator's images of the validation masks against the
  real validation images. At the end, the last step's generator (what ``generate`` uses) makes
  the test masks' images, scored against the real test images.
- **the floor**: FID/KID of the real validation images against the real test images, two real
  samples of this size; FID is biased upwards at few images, so only this floor says how far a
  generator is from real (the issue's aim: within 1.5x of it on DSB).
- **recipes** (``RECIPES``), all with the CPU preset's sizes (UNet width 16 with flows, Gen
  width 16, D width 32, 128 px crops, batch 4) and the HED VGG16 perceptual network: ``paper``
  (Eq. 16's weights, every term), ``idg`` (Id_G alone: L1 + perceptual, no discriminator;
  value.py's ``cgan-zero``, the best FID measured before), ``gan`` (Id_G + D1: the generator
  half of the game, no cycle), and ``gan`` with one change: ``-ema`` (``--gen-ema 0.995``),
  ``-cheap`` (perceptual loss on 3 VGG blocks at half size), ``-crop256``, ``-nodiffaug``
  (``--p-diff 0``), ``-lr`` (Gen and D learning rates 1e-3), ``-d64`` (D width 64). The
  segmenter still trains beside the generator on Id_S (its cost is in every recipe's steps).
- **CPU-seconds**: ``--budget-s`` per run (default 7200, the issue's 2 CPU-hours) turned into
  steps by an interleaved timing pass on this CPU (value.py's: kept in ``timing.json``, new
  recipes scaled against the kept ones), so the curve's x axis is steps x CPU-seconds per step
  wherever the runs train (``--device cuda`` trains on a GPU; the axis stays CPU-seconds).

Writes ``benchmarks/results/generator_fid.json`` (``--out``) and a plot beside it (FID against
CPU-seconds per recipe, mean +- sd over seeds, with the floor). Runs live in ``--work``; a
finished run is not run again (``--finished-only`` trains nothing). ``--quick``: tiny networks on
the bundled data in about a minute. Needs ``cganseg fetch-weights fid-inception``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from value import (  # noqa: E402
    _CGAN,
    _CGAN_TINY,
    ZERO,
    data_set,
    seconds_per_step,
    timed_against_kept,
)

from cganseg.data.dataset import load_samples  # noqa: E402
from cganseg.data.folders import find_pairs  # noqa: E402
from cganseg.data.splits import save_split  # noqa: E402
from cganseg.errors import InputError  # noqa: E402
from cganseg.evaluation.fid import HeldOutFid, fid_kid, image_features  # noqa: E402
from cganseg.inference.generate import load_generator  # noqa: E402
from cganseg.models.fid_inception import load_fid_features  # noqa: E402
from cganseg.options import CGanTrainConfig  # noqa: E402
from cganseg.runtime.atomic import write_text  # noqa: E402
from cganseg.runtime.device import resolve_device  # noqa: E402
from cganseg.training.cgan_trainer import train_cgan  # noqa: E402
from cganseg.training.settings import resolve  # noqa: E402

N_TRAIN = 200
#: the generator half of the game: Id_G + D1_G (and Id_S for the segmenter beside it)
GAN = {"w_rec_s": 0.0, "w_rec_g": 0.0, "w_adv_s": 0.0}
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    "idg": ZERO,
    "gan": GAN,
    "gan-ema": {**GAN, "gen_ema": 0.995},
    "gan-cheap": {**GAN, "perceptual_depth": 3, "perceptual_scale": 0.5},
    "gan-crop256": {**GAN, "crop": [256, 256]},
    "gan-nodiffaug": {**GAN, "p_diff": 0.0},
    "gan-lr": {**GAN, "lr_gen": 1e-3, "lr_disc": 1e-3},
    "gan-d64": {**GAN, "disc_width": 64},
}
DEFAULT_RECIPES = ["idg", "gan", "gan-ema", "gan-cheap"]
#: every recipe's base: the CPU preset's sizes, flows, the generator scored at each validation
BASE = {**_CGAN, "instances": "flows", "val_fid": True}


def held_out_split(groups: dict[str, str], n_groups: int, seed: int,
                   n_train: int | None) -> dict[str, list[str]]:  # fmt: skip
    """Validation = ``n_groups`` seeded groups, test = the next ``n_groups``, training = at most
    ``n_train`` pairs of the rest (pairs of a group stay on one side)."""
    keys = sorted(set(groups.values()))
    order = [keys[i] for i in np.random.default_rng(seed).permutation(len(keys))]
    val, test = set(order[:n_groups]), set(order[n_groups:2 * n_groups])
    train = [n for n in sorted(groups) if groups[n] not in val | test]
    train = [train[i] for i in np.random.default_rng(seed + 1).permutation(len(train))][:n_train]
    return {"train": sorted(train), "val": sorted(n for n in groups if groups[n] in val),
            "test": sorted(n for n in groups if groups[n] in test)}  # fmt: skip


def run_config(name: str, args: argparse.Namespace, data: Path, set_dir: Path, steps: int,
               seed: int, device: str | None = None) -> CGanTrainConfig:  # fmt: skip
    """Recipe ``name``'s run of ``steps`` steps with ``seed`` (on ``device``, else --device)."""
    fixed = {
        "data": str(data),
        "out": str(set_dir / f"{name}_{steps}steps_s{seed}"),
        "split_file": str(set_dir / "split.json"),
        "iterations": steps,
        "val_every": max(1, steps // args.validations),
        "patience": 0,
        "seed": seed,
        "device": device or args.device,
    }
    # --quick: the watershed, whose validation of an untrained segmenter is quick (flows' is not)
    tiny = {**_CGAN_TINY, "instances": "watershed"} if args.quick else {}
    return resolve(CGanTrainConfig, {**BASE, **RECIPES[name], **tiny, **fixed})


def measure(names: list[str], *, args: argparse.Namespace, data: Path, set_dir: Path,
            rounds: int) -> dict[str, float]:  # fmt: skip
    """CPU-seconds per step of each recipe in ``names``, on the CPU, steps interleaved."""
    return seconds_per_step({n: run_config(n, args, data, set_dir, 1, 0, "cpu") for n in names},
                            rounds)  # fmt: skip


def _samples(data: Path, names: list[str]) -> list:
    by_name = {p.name: p for p in find_pairs(data)}
    return load_samples([by_name[n] for n in names], None, False)


def floor(data: Path, split: dict[str, list[str]], extractor, device) -> dict[str, Any]:
    """FID/KID of the real validation images against the real test images."""
    feats = [image_features(((s.name, s.image) for s in _samples(data, split[part])), extractor,
                            device=device) for part in ("val", "test")]  # fmt: skip
    return fid_kid(*feats)


def curve(run: Path, s_per_step: float) -> list[dict[str, float]]:
    """The generator's FID/KID at each validation of a run, with its CPU-seconds of steps."""
    with open(run / "metrics.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val_fid")]
    return [{"step": int(r["step"]), "cpu_s": int(r["step"]) * s_per_step,
             "fid": float(r["val_fid"]), "kid": float(r["val_kid"])} for r in rows]  # fmt: skip


def run_one(cfg: CGanTrainConfig, test: HeldOutFid, s_per_step: float,
            device: str) -> dict[str, Any]:  # fmt: skip
    """Train (or finish) one run; its curve and its last generator's test FID (cached)."""
    run = Path(cfg.out)
    done = run / "genfid.json"
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    start = time.process_time()
    train_cgan(cfg, resume=(run / "last.pt").is_file(), progress=False,
               given={"iterations": cfg.iterations})  # fmt: skip
    cpu_run = time.process_time() - start
    gen = load_generator(run / "last.pt", device)
    final = test.score(test.generate(gen.generate))
    result = {"steps": cfg.iterations, "cpu_s_run": cpu_run, "curve": curve(run, s_per_step),
              "test_fid": final["fid"], "test_kid": final["kid_mean"]}  # fmt: skip
    write_text(done, json.dumps(result, indent=2) + "\n")
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sd over seeds: the curve point by point, the last generator's test FID/KID."""

    def mean_sd(values: list[float]) -> dict[str, float]:
        return {"mean": statistics.fmean(values),
                "sd": statistics.stdev(values) if len(values) > 1 else 0.0}  # fmt: skip

    points = min(len(r["curve"]) for r in runs)
    return {
        "n_runs": len(runs),
        "curve": [{"cpu_s": runs[0]["curve"][i]["cpu_s"],
                   "fid": mean_sd([r["curve"][i]["fid"] for r in runs]),
                   "kid": mean_sd([r["curve"][i]["kid"] for r in runs])}
                  for i in range(points)],
        "test_fid": mean_sd([r["test_fid"] for r in runs]),
        "test_kid": mean_sd([r["test_kid"] for r in runs]),
    }  # fmt: skip


def plot(record: dict[str, Any], path: Path) -> None:
    """FID against CPU-seconds per recipe (mean +- sd over seeds), the floor dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(record["sets"])
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4), squeeze=False)
    for ax, set_name in zip(axes[0], sets, strict=True):
        entry = record["sets"][set_name]
        for name, summ in entry["summary"].items():
            if not summ:
                continue
            x = [p["cpu_s"] / 60 for p in summ["curve"]]
            y = np.array([p["fid"]["mean"] for p in summ["curve"]])
            sd = np.array([p["fid"]["sd"] for p in summ["curve"]])
            ax.plot(x, y, marker="o", label=name)
            ax.fill_between(x, y - sd, y + sd, alpha=0.2)
        ax.axhline(entry["floor"]["fid"], ls="--", color="k", label="real vs real")
        ax.set_xlabel("training CPU-minutes")
        ax.set_ylabel("FID, validation masks")
        ax.set_title(set_name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=None,
                        help="dsb2018_fluo_256, usiigaci_phase, demo (default: the first two)")
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=DEFAULT_RECIPES)
    parser.add_argument("--budget-s", type=float, default=7200.0,
                        help="training CPU-seconds per run (default 7200)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--validations", type=int, default=8)
    parser.add_argument("--held-out", type=int, default=None,
                        help="groups of images that validate (and as many that test); default: "
                        "DSB 37, usiigaci 5 (20 tiles), demo 5")  # fmt: skip
    parser.add_argument("--timing-rounds", type=int, default=7)
    parser.add_argument("--device", default="cpu", help="where the runs train (timing: CPU)")
    parser.add_argument("--quick", action="store_true", help="tiny networks on the demo data")
    parser.add_argument("--finished-only", action="store_true")
    parser.add_argument("--work", type=Path,
                        default=Path(__file__).parent / ".work" / "generator_fid")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "generator_fid.json")
    args = parser.parse_args()
    sets = args.sets or (["demo"] if args.quick else ["dsb2018_fluo_256", "usiigaci_phase"])
    budget = 3.0 if args.quick else args.budget_s
    rounds = 2 if args.quick else args.timing_rounds
    if args.quick:
        args.validations = min(args.validations, 2)
    device = resolve_device(args.device)
    try:
        extractor = load_fid_features(None, device)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    record: dict[str, Any] = {
        "budget": f"{budget:g} training CPU-seconds per run (validation and FID not counted)",
        "recipes": {n: RECIPES[n] for n in args.recipes},
        "sets": {},
    }
    for set_name in sets:
        data, groups = data_set(set_name, args.work)
        n_held = args.held_out or (37 if set_name == "dsb2018_fluo_256" else 5)
        split = held_out_split(groups, n_held, 0, None if set_name == "demo" else N_TRAIN)
        set_dir = args.work / ("quick" if args.quick else "full") / set_name
        save_split(set_dir / "split.json", split)
        timing = set_dir / "timing.json"
        speed = json.loads(timing.read_text(encoding="utf-8")) if timing.is_file() else {}
        missing = [n for n in args.recipes if n not in speed]
        if missing and not args.finished_only:
            speed.update(timed_against_kept(speed, missing, functools.partial(
                measure, args=args, data=data, set_dir=set_dir, rounds=rounds)))
            write_text(timing, json.dumps(speed) + "\n")
        test = HeldOutFid(_samples(data, split["test"]), extractor, device)
        entry: dict[str, Any] = {
            "split": {k: len(v) for k, v in split.items()},
            "floor": floor(data, split, extractor, device),
            "s_per_step": {n: speed[n] for n in args.recipes if n in speed},
            "runs": {},
        }
        print(f"{set_name}: real-vs-real FID {entry['floor']['fid']:.1f}; s/step "
              f"{entry['s_per_step']}", flush=True)  # fmt: skip
        for name in args.recipes:
            if name not in speed:
                continue
            steps = max(1, int(budget / speed[name]))
            runs = []
            for seed in range(args.seeds):
                cfg = run_config(name, args, data, set_dir, steps, seed)
                if args.finished_only and not (Path(cfg.out) / "genfid.json").is_file():
                    continue
                runs.append(run_one(cfg, test, speed[name], args.device))
                print(f"  {set_name} {name} seed {seed}: test FID {runs[-1]['test_fid']:.1f}, "
                      f"curve {[round(p['fid'], 1) for p in runs[-1]['curve']]}", flush=True)
            entry["runs"][name] = runs
        entry["summary"] = {n: summarise(r) if r else {} for n, r in entry["runs"].items()}
        record["sets"][set_name] = entry
    write_text(args.out, json.dumps(record, indent=2) + "\n")
    plot(record, args.out.with_suffix(".png"))
    for set_name, entry in record["sets"].items():
        print(f"\n{set_name}: floor FID {entry['floor']['fid']:.1f}")
        for name, summ in entry["summary"].items():
            if summ:
                f = summ["test_fid"]
                print(f"  {name:14s} test FID {f['mean']:.1f} +- {f['sd']:.1f} "
                      f"({summ['n_runs']} runs)")  # fmt: skip
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
