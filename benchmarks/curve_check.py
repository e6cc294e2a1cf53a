"""Does ``cganseg curve`` predict what more annotations gain? (issue 30, item 5, second half)

``cganseg curve`` fits F(k) = a - b r^k (k = log2 annotated pairs) to runs on nested parts of a
user's pairs and states the expected gain from doubling them, with a 90% bootstrap interval over
the held-out images (:mod:`cganseg.experiment.curve`). This script checks that statement against
the real gain, on the learning-curve runs of benchmarks/fewshot.py (one arm, e.g. ``finetune``):
their draws are nested by construction (draw d's N images are the first N of one seeded order of
the pool), trained with the product's defaults and scored on each set's fixed test part, so they
are the runs ``curve`` would make, with sizes ``--fit`` instead of curve's default fractions.

For each set: the runs of sizes ``--fit`` (all their draws) go through curve's own fit and
bootstrap (:func:`cganseg.experiment.curve.analyse`), which predicts the gain from the largest
fitted size to twice it; the real gain is the mean pooled F1@0.5 of the finished runs at the
check size (``--check``, which must be twice the largest fitted size) minus the mean at the
largest fitted size. The runs and their per-test-image counts at IoU 0.5 are read from
fewshot's record (``--record``, default benchmarks/results/fewshot.json). Train the runs first,
e.g.::

    .venv/bin/python benchmarks/fewshot.py --sets usiigaci_phase --arms finetune --n 1 3 10 20
    .venv/bin/python benchmarks/curve_check.py --sets usiigaci_phase

Writes ``benchmarks/results/curve_check.json`` and prints one line per set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from start_models import ROOT  # noqa: E402

from cganseg.experiment.curve import analyse  # noqa: E402
from cganseg.runtime.atomic import write_text  # noqa: E402


def finished_runs(record: dict[str, Any], set_name: str, arm: str, n: int
                  ) -> list[dict[str, Any]]:  # fmt: skip
    """fewshot's recorded runs of one set, arm and size, as ``curve`` keeps its own: the pairs
    and per-test-image TP, FP, FN at IoU 0.5."""
    runs = []
    for r in record["runs"]:
        if (r["set"], r["arm"], int(r["n"])) != (set_name, arm, n):
            continue
        if "counts_50" not in r["scores"]:
            raise LookupError(f"{set_name} {arm} N={n} draw {r['draw']} was recorded without "
                              "per-image counts: run it again with fewshot.py")
        runs.append({"pairs": r["train"] + r["val"], "draw": r["draw"],
                     "counts": r["scores"]["counts_50"]})  # fmt: skip
    return runs


def summary_sd(runs: list[dict[str, Any]]) -> float:
    """sd over draws of the pooled F1@0.5 of runs of one size."""
    return next(iter(analyse(runs)["sizes"].values()))["sd"]


def check(record: dict[str, Any], set_name: str, args: argparse.Namespace) -> dict[str, Any]:
    fitted = [r for n in args.fit for r in finished_runs(record, set_name, args.arm, n)]
    real = finished_runs(record, set_name, args.arm, args.check)
    largest = max(args.fit)
    if not real or not any(len(r["pairs"]) == largest for r in fitted):
        raise LookupError(f"{set_name}: no finished {args.arm} runs of N={largest} and "
                          f"N={args.check}; run benchmarks/fewshot.py first")  # fmt: skip
    summary = analyse(fitted, new_runs=len(real))
    means = {int(n): v["mean"] for n, v in analyse(fitted + real)["sizes"].items()}
    gain = means[args.check] - means[largest]
    fit = summary.get("fit") or {}
    interval = fit.get("gain_interval_90")
    return {"set": set_name, "arm": args.arm, "fit_sizes": args.fit, "check_size": args.check,
            "runs_fitted": len(fitted), "runs_checked": len(real),
            "predicted_gain": fit.get("expected_gain_doubling"), "interval_90": interval,
            "real_gain": gain, "real_sd": summary_sd(real),
            "within_interval": bool(interval and interval[0] <= gain <= interval[1]),
            "fit": fit, "sizes": summary["sizes"]}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=["usiigaci_phase", "dsb2018_fluo_256"])
    parser.add_argument("--arm", default="finetune")
    parser.add_argument("--fit", nargs="+", type=int, default=[1, 3, 10])
    parser.add_argument("--check", type=int, default=20)
    parser.add_argument("--record", type=Path, default=ROOT / "benchmarks/results/fewshot.json")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/curve_check.json")
    args = parser.parse_args()
    if args.check != 2 * max(args.fit):
        parser.error("--check must be twice the largest --fit size (curve predicts a doubling)")
    if not args.record.is_file():
        print(f"error: {args.record} not found: run benchmarks/fewshot.py first", file=sys.stderr)
        return 2
    record = json.loads(args.record.read_text())
    try:
        rows = [check(record, s, args) for s in args.sets]
    except LookupError as err:
        print(f"error: {args.record}: {err}", file=sys.stderr)
        return 2
    for r in rows:
        low, high = r["interval_90"] or (float("nan"), float("nan"))
        print(f"{r['set']} {r['arm']}: N {max(r['fit_sizes'])} -> {r['check_size']}: predicted "
              f"{r['predicted_gain'] or float('nan'):+.3f} (90% {low:+.3f} to {high:+.3f}), "
              f"real {r['real_gain']:+.3f} +- {r['real_sd']:.3f} over {r['runs_checked']} draws:"
              f" {'within' if r['within_interval'] else 'OUTSIDE'} the interval")  # fmt: skip
    write_text(args.out, json.dumps(rows, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
