"""The paper's Table 2 at few annotations: do generated pairs of synthetic masks help (issue 31)?

The instrument of issue 31, item 2 (not a unit test). For each data set, each number N of real
annotated images and each draw of them (fewshot.py's sets, test images and draws), three
segmenters are trained the same way and scored on the same test images:

- ``real``: train-seg on the N real pairs alone;
- ``real+gen``: the same plus K generated pairs: K synthetic masks (``synth-masks --scene mixed``,
  cell shapes of the N training masks only) turned into images by a generator that a
  ``cganseg train`` run learnt from the same N pairs (``--gen-recipe``, a recipe of
  generator_fid.py; its CPU-seconds are reported beside the row);
- ``real+simple``: the same K masks rendered by the simple renderer fitted to the N real pairs
  (:mod:`cganseg.synth.simple_render`): a gain over it is the generator's own.

Every segmenter: fewshot.py's network (UNet width 16, flows, cells rescaled to 17 px) and
``--base`` recipe (``scratch``: 1500 steps, lr 1e-3; ``finetune``: from the start that never
saw the set), the synthetic pairs making ``--fraction`` of every batch (``train-seg --extra
DIR:FRACTION``); fewer than 10 real images: no validation, the last step is kept, else 10%
validate and choose the checkpoint, on real images only. Scores: pooled F1@0.5 and mean F1 0.5:0.95
over all test images, and pooled F1@0.5 on the easy and on the hard ones (touching cells or
dense scenes, :mod:`cganseg.evaluation.hardness`, the paper's split).

Writes ``benchmarks/results/synthetic_value.json`` (``--out``) and prints mean +- sd per set, N
and arm. Runs live in ``--work``; finished ones are reused. ``--quick``: tiny networks on the
bundled data.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fewshot import (  # noqa: E402
    STARTS,
    _cpu_seconds,
    arm_options,
    draw,
    score,
    set_parts,
)
from generator_fid import BASE as GEN_BASE  # noqa: E402
from generator_fid import RECIPES as GEN_RECIPES  # noqa: E402
from value import _CGAN_TINY  # noqa: E402

from cganseg.data.dataset import load_samples  # noqa: E402
from cganseg.data.folders import find_pairs  # noqa: E402
from cganseg.data.io import read_labels  # noqa: E402
from cganseg.evaluation.hardness import hardness  # noqa: E402
from cganseg.inference.generate import load_generator  # noqa: E402
from cganseg.options import CGanTrainConfig, SegTrainConfig  # noqa: E402
from cganseg.runtime.atomic import write_text  # noqa: E402
from cganseg.synth.make_masks import write_synthetic_masks  # noqa: E402
from cganseg.synth.pairs import write_pairs  # noqa: E402
from cganseg.synth.simple_render import SimpleRenderer  # noqa: E402
from cganseg.training.cgan_trainer import train_cgan  # noqa: E402
from cganseg.training.seg_trainer import train_segmenter  # noqa: E402
from cganseg.training.settings import resolve  # noqa: E402

ARMS = ("real", "real+simple", "real+gen")


def pooled_f1(counts: list[list[int]]) -> float | None:
    """F1 of summed (TP, FP, FN) counts; None without any cell."""
    tp, fp, fn = (sum(c[i] for c in counts) for i in range(3))
    return None if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def easy_hard(scores: dict[str, Any], hard: list[bool]) -> dict[str, float | None]:
    """Pooled F1@0.5 over the easy and over the hard test images."""
    counts = scores["counts_50"]
    return {"f1_50_easy": pooled_f1([c for c, h in zip(counts, hard, strict=True) if not h]),
            "f1_50_hard": pooled_f1([c for c, h in zip(counts, hard, strict=True) if h])}


def generator_run(folder: Path, split_file: Path, out: Path, seed: int,
                  args: argparse.Namespace) -> float:  # fmt: skip
    """Train the draw's generator (cganseg train on its N pairs); its CPU-seconds (cached)."""
    done = out / "genrun.json"
    if done.is_file():
        return json.loads(done.read_text())["cpu_s"]
    options = {**GEN_BASE, **GEN_RECIPES[args.gen_recipe],
               **(_CGAN_TINY if args.quick else {}), "data": str(folder), "out": str(out),
               "split_file": str(split_file), "iterations": args.gen_steps, "patience": 0,
               "seed": seed, "device": "cpu", "val_fid": False}  # fmt: skip
    before = _cpu_seconds()
    train_cgan(resolve(CGanTrainConfig, options), resume=(out / "last.pt").is_file(),
               progress=not args.quiet, given={"iterations": args.gen_steps})  # fmt: skip
    cpu = _cpu_seconds() - before
    write_text(done, json.dumps({"cpu_s": cpu}) + "\n")
    return cpu


def run_draw(set_name: str, n: int, seed: int, args: argparse.Namespace,
             parts: tuple) -> dict[str, Any]:  # fmt: skip
    """The three arms of one draw (each cached in its folder's result.json)."""
    folder, _, test, pool = parts
    here = args.work / set_name / f"N{n}_d{seed}"
    split = draw(pool, n, seed)
    split_file = here / "split.json"
    write_text(split_file, json.dumps({**split, "test": []}))
    by_name = {p.name: p for p in find_pairs(folder)}
    hard = [hardness(read_labels(by_name[t].mask)).hard for t in test]  # in score()'s order
    masks = here / "synth_masks"
    write_synthetic_masks(folder / "masks", masks, args.k, layout="mixed", density=0.5,
                          seed=seed, names=split["train"], progress=False)  # fmt: skip
    out: dict[str, Any] = {"set": set_name, "n": n, "draw": seed, "k": args.k, "arms": {}}
    for arm in args.arms:
        result_file = here / arm / "result.json"
        if result_file.is_file():
            out["arms"][arm] = json.loads(result_file.read_text())
            continue
        extra: dict[str, Any] = {}
        cost = 0.0
        if arm != "real":
            pairs = here / f"pairs_{arm.split('+')[1]}"
            if arm == "real+gen":
                cost = generator_run(folder, split_file, here / "generator", seed, args)
                renderer: Any = load_generator(here / "generator" / "last.pt", "cpu")
                identity = {"generator": args.gen_recipe}
            else:
                train = load_samples([by_name[x] for x in split["train"]], None, False)
                renderer, identity = SimpleRenderer.fit(train), {"renderer": "simple"}
            write_pairs(renderer, masks, pairs, identity, seed=seed, progress=False)
            extra = {"extra": str(pairs), "extra_fraction": args.fraction}
        start = args.start or STARTS.get(set_name, "nuclei")
        options = {**arm_options(args.base, start, args), **extra, "data": str(folder),
                   "out": str(here / arm / "run"), "split_file": str(split_file), "seed": seed}
        before, wall = _cpu_seconds(), time.time()
        train_segmenter(resolve(SegTrainConfig, options), progress=not args.quiet)
        scores = score(str(here / arm / "run"), folder, test, None)
        result = {"cpu_s": _cpu_seconds() - before, "wall_s": time.time() - wall,
                  "generator_cpu_s": cost, "f1_50_pooled": scores["f1_50_pooled"],
                  "mean_f1_per_image": scores["mean_f1_per_image"],
                  **easy_hard(scores, hard), "n_hard": sum(hard), "n_test": len(test)}  # fmt: skip
        write_text(result_file, json.dumps(result, indent=1) + "\n")
        out["arms"][arm] = result
    return out


SCORES = ("f1_50_pooled", "mean_f1_per_image", "f1_50_easy", "f1_50_hard")


def summarise(draws: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sd over draws per set, N, arm and score."""
    table: dict[str, Any] = {}
    for d in draws:
        for arm, r in d["arms"].items():
            cell = table.setdefault(d["set"], {}).setdefault(str(d["n"]), {}).setdefault(arm, [])
            cell.append(r)
    out: dict[str, Any] = {}
    for set_name, by_n in table.items():
        for n, arms in by_n.items():
            for arm, rows in arms.items():
                entry: dict[str, Any] = {"draws": len(rows),
                                         "generator_cpu_s": statistics.fmean(
                                             r["generator_cpu_s"] for r in rows)}  # fmt: skip
                for key in SCORES:
                    values = [r[key] for r in rows if r.get(key) is not None]
                    if values:
                        entry[key] = {"mean": statistics.fmean(values),
                                      "sd": statistics.stdev(values) if len(values) > 1 else 0.0}
                out.setdefault(set_name, {}).setdefault(n, {})[arm] = entry
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["dsb2018_fluo_256", "usiigaci_phase"])
    parser.add_argument("--n", nargs="+", type=int, default=[3, 10, 30])
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--k", type=int, default=100, help="synthetic masks per draw")
    parser.add_argument("--fraction", type=float, default=0.5,
                        help="share of every batch from the synthetic pairs")
    parser.add_argument("--base", choices=("scratch", "finetune"), default="scratch")
    parser.add_argument("--gen-recipe", choices=list(GEN_RECIPES), default="gan")
    parser.add_argument("--gen-steps", type=int, default=2000)
    parser.add_argument("--scratch-steps", type=int, default=1500)
    parser.add_argument("--start", help="start model of --base finetune (default: fewshot's)")
    parser.add_argument("--work", type=Path,
                        default=Path(__file__).parent / ".work" / "synthetic_value")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "synthetic_value.json")
    parser.add_argument("--quick", action="store_true", help="tiny networks on the demo data")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.sets, args.n, args.draws = ["demo"], [3], 1
        args.k, args.gen_steps, args.scratch_steps = 2, 2, 2
    draws = []
    for set_name in args.sets:
        parts = set_parts(set_name, args.work)
        for n in args.n:
            for seed in range(args.draws):
                d = run_draw(set_name, n, seed, args, parts)
                draws.append(d)
                print(f"{set_name} N={n} draw {seed}: " + ", ".join(
                    f"{arm} F1@0.5 {r['f1_50_pooled']:.3f} (hard {r['f1_50_hard'] or 0:.3f})"
                    for arm, r in d["arms"].items()), flush=True)  # fmt: skip
    record = {"settings": {k: str(v) for k, v in vars(args).items()}, "draws": draws,
              "summary": summarise(draws)}  # fmt: skip
    write_text(args.out, json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
