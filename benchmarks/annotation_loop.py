"""The annotation loop, simulated (issue 30, item 5): does ``cganseg suggest`` choose the images
worth correcting better than chance?

The ground truth plays the annotator. For each set and seed: 3 images drawn at random are
annotated and a model is fine-tuned on them from the set's start model (as benchmarks/fewshot.py
chooses it: one that never saw the set; this first model is shared by both arms); then, for
``--rounds`` rounds, 3 more images are chosen from an unannotated candidate pool (``--pool``
images drawn once per seed) either by ``suggest`` (:func:`cganseg.evaluation.suggest.rank`
with the current model) or at random, annotated, and the model is fine-tuned again from the
previous round's model on all the annotated images (``train-seg --init RUN``, fine-tuning's
defaults). After every round both arms are scored on the same held-out test images
(fewshot.py's test part): F1@0.5 pooled and mean F1 over IoU 0.5:0.95 per image.

Writes ``benchmarks/results/annotation_loop.json`` (every round of every run) and prints the mean
+- sd per round and arm. Each round is kept in ``--work`` and not run again. From the repository
root (needs ../shared/data)::

    .venv/bin/python benchmarks/annotation_loop.py [--sets usiigaci_phase] [--seeds 0 1 2]

``--quick`` runs a tiny version on the bundled demo data from a given start (CI runs it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fewshot import NETWORK, QUICK, STARTS, TRAINING, WORK, score, set_parts  # noqa: E402
from start_models import ROOT, SHARED  # noqa: E402

from cganseg.data.splits import make_split  # noqa: E402
from cganseg.evaluation.suggest import rank  # noqa: E402
from cganseg.inference.segment import load_segmenter  # noqa: E402
from cganseg.options import SegTrainConfig  # noqa: E402
from cganseg.runtime.atomic import write_text  # noqa: E402
from cganseg.training.seg_trainer import train_segmenter  # noqa: E402
from cganseg.training.settings import resolve  # noqa: E402

ARMS = ("suggest", "random")
PER_ROUND = 3


def train_round(folder: Path, annotated: list[str], start: str, run: Path, seed: int,
                args: argparse.Namespace) -> None:  # fmt: skip
    """Fine-tune ``start`` on the annotated images (the product's split rule and defaults)."""
    split = {**make_split(annotated, seed=seed), "test": []}
    run.mkdir(parents=True, exist_ok=True)
    write_text(run / "annotated.json", json.dumps(split))
    options = {**NETWORK, **TRAINING, **(QUICK if args.quick else {})}
    if args.quick:
        options["iterations"] = 2
    cfg = resolve(SegTrainConfig, {**options, "init_seg": start, "data": str(folder),
                                   "out": str(run / "run"), "seed": seed,
                                   "split_file": str(run / "annotated.json")})  # fmt: skip
    train_segmenter(cfg, progress=False)


def choose(arm: str, model: Path, folder: Path, candidates: list[str], seed: int,
           round_: int) -> list[str]:  # fmt: skip
    """The next images to annotate: the top of suggest's ranking, or a seeded random draw."""
    if arm == "random":
        rng = np.random.default_rng([seed, round_])
        return sorted(candidates[i] for i in rng.permutation(len(candidates))[:PER_ROUND])
    files = {p.stem: p for p in (folder / "images").iterdir()}
    ranked = rank(load_segmenter(model, "cpu"), [files[c] for c in candidates], progress=False)
    return [s.path.stem for s in ranked[:PER_ROUND]]


def run_seed(set_name: str, seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    folder, _, test, pool = set_parts(set_name, args.work)
    if args.quick:
        test = test[:3]
    start = args.start or STARTS.get(set_name, "nuclei")
    rng = np.random.default_rng(2000 + seed)
    drawn = [pool[i] for i in rng.permutation(len(pool))[: args.pool + PER_ROUND]]
    first, candidates0 = sorted(drawn[:PER_ROUND]), drawn[PER_ROUND:]
    rows = []
    for arm in ARMS:
        annotated, candidates, previous = list(first), list(candidates0), start
        for round_ in range(args.rounds + 1):
            # round 0 (the first 3 images) is the same model for both arms: trained once
            run = (args.work / "loop" / set_name / f"seed{seed}" / (arm if round_ else "both")
                   / f"round{round_}")  # fmt: skip
            done = run / "result.json"
            if done.is_file():
                result = {**json.loads(done.read_text()), "arm": arm}
            else:
                if round_ > 0:
                    picked = choose(arm, Path(previous), folder, candidates, seed, round_)
                    annotated = sorted(annotated + picked)
                train_round(folder, annotated, previous if round_ else start, run, seed, args)
                result = {"set": set_name, "seed": seed, "arm": arm, "round": round_,
                          "annotated": annotated,
                          "scores": score(str(run / "run"), folder, test, None)}  # fmt: skip
                write_text(done, json.dumps(result, indent=1) + "\n")
            annotated = result["annotated"]
            candidates = [c for c in candidates0 if c not in annotated]
            previous = str(run / "run")
            rows.append(result)
            print(f"{set_name} seed {seed} {arm} round {round_}: {len(annotated)} annotated, "
                  f"F1@0.5 {result['scores']['f1_50_pooled']:.3f}", flush=True)  # fmt: skip
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in rows:
        cell = out.setdefault(r["set"], {}).setdefault(r["arm"], {}).setdefault(
            str(r["round"]), {"f1_50_pooled": [], "mean_f1_per_image": []})
        for key in cell:
            cell[key].append(r["scores"][key])
    for arms in out.values():
        for rounds in arms.values():
            for key, cell in rounds.items():
                rounds[key] = {k: {"mean": statistics.fmean(v),
                                   "sd": statistics.stdev(v) if len(v) > 1 else 0.0,
                                   "seeds": len(v)} for k, v in cell.items()}  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=["dsb2018_fluo_256", "usiigaci_phase"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pool", type=int, default=40, help="unannotated candidates per seed")
    parser.add_argument("--start", help="start model of every set (default: fewshot's STARTS)")
    parser.add_argument("--work", type=Path, default=WORK / "fewshot")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks/results/annotation_loop.json")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        if not args.start:
            parser.error("--quick needs --start RUN")
        args.sets, args.seeds, args.rounds, args.pool = ["demo"], [0], 1, 6
    elif not SHARED.is_dir():
        print(f"error: {SHARED} not found: the data sets live there", file=sys.stderr)
        return 2
    rows = [r for s in args.sets for seed in args.seeds for r in run_seed(s, seed, args)]
    summary = summarise(rows)
    for set_name, arms in summary.items():
        for arm, rounds in arms.items():
            cells = "  ".join(f"r{k} {v['f1_50_pooled']['mean']:.3f}+-{v['f1_50_pooled']['sd']:.3f}"
                              for k, v in sorted(rounds.items(), key=lambda kv: int(kv[0])))
            print(f"{set_name:20s} {arm:8s} {cells}")
    write_text(args.out, json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
