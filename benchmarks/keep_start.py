"""Can a few-image fine-tune tell, from the user's own annotated images, that its start was
better (issue 29)?

Under 10 annotated pairs ``train-seg --init`` holds out no validation image, so nothing stops
a few images from lowering a start that already fits the data (DSB: the start 0.866 F1@0.5,
fine-tuned on 1 image 0.718). The only labelled images such a run has are its training images.
This check asks, of the learning curve's finished fine-tuning runs, whether a choice made on
them would have kept the right model:

- each run's start model and its fine-tuned model (the options' default thresholds, as the
  product leaves them under 10 pairs) segment the run's own training images at
  ``--diameter auto``; F1@0.5 pooled against their annotations;
- two rules: **threshold** (keep the start when it scores at least ``t`` on the training
  images; the start never saw them, so its score there is unbiased but rests on 1-3 images) and
  **compare** (keep the start when it scores at least what the fine-tuned model scores on the
  images that model trained on: conservative, the trained model is favoured);
- each rule's test score is the chosen model's on the learning curve's test images: the
  start's zero-shot row in ``benchmarks/results/fewshot.json``, and the fine-tuned model scored
  here as the product now segments with it (default thresholds, ``--diameter auto``; the
  record's rows of these runs were partly scored at the training median, before auto became
  the default under 10 pairs).

Reads a fewshot.py work folder (``--work``, the runs' ``split.json`` and ``run/``), prints a
table per run and per rule and writes ``benchmarks/results/keep_start.json``. From the
repository root (needs ../shared/data)::

    .venv/bin/python benchmarks/keep_start.py --work benchmarks/.work/fewshot

``--quick START`` checks the runs of ``fewshot.py --quick --start START`` (CI runs it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fewshot  # noqa: E402

from cganseg.data.flows import CELLPROB_THRESHOLD, FLOW_THRESHOLD  # noqa: E402

#: the threshold rule's values of t tried
THRESHOLDS = (0.8, 0.85, 0.9, 0.95)


def f1_50(checkpoint: str, folder: Path, names: list[str], **thresholds: float) -> float:
    """F1@0.5 pooled of a model on the named pairs of ``folder``, at ``--diameter auto``."""
    return fewshot.score(checkpoint, folder, names, "auto", **thresholds)["f1_50_pooled"]


def runs_of(
    work: Path, record: dict[tuple, dict[str, Any]], starts: dict[str, str], quick: bool
) -> list[dict[str, Any]]:
    """Every finished fine-tuning run under 10 pairs in ``work`` of the sets in ``starts`` (set:
    its start model), its start and its fine-tuned model scored on its training images, and the
    fine-tuned one on the test images (``quick``: fewshot.py --quick's first three)."""
    given = {"cellprob": CELLPROB_THRESHOLD, "flow": FLOW_THRESHOLD}  # the options' defaults
    out = []
    for set_name, start in starts.items():
        runs = sorted((work / set_name / "finetune").glob("N*_d*/run/best.pt"))
        if not runs:
            continue
        folder, _, test, _ = fewshot.set_parts(set_name, work)
        test = test[:3] if quick else test
        start_test = record[(set_name, "zero-shot", 0, 0)]["scores"]["f1_50_pooled"]
        for best in runs:
            run = best.parent.parent
            n, draw = (int(x) for x in run.name[1:].split("_d"))
            if n >= 10:
                continue
            train = json.loads((run / "split.json").read_text())["train"]
            row = {"set": set_name, "n": n, "draw": draw,
                   "start_train": f1_50(start, folder, train),
                   "tuned_train": f1_50(str(run / "run"), folder, train, **given),
                   "start_test": start_test,
                   "tuned_test": f1_50(str(run / "run"), folder, test, **given)}  # fmt: skip
            print(row, flush=True)
            out.append(row)
    return out


def rules(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each rule's mean test F1@0.5 and how often it kept the start, against always
    fine-tuning and the better of the two per run (the oracle)."""

    def mean_of(keep: list[bool]) -> dict[str, Any]:
        scores = [
            r["start_test"] if k else r["tuned_test"] for r, k in zip(rows, keep, strict=True)
        ]
        return {"mean_test_f1": statistics.fmean(scores), "kept_start": sum(keep)}

    out = {
        "always fine-tune": mean_of([False] * len(rows)),
        "oracle": mean_of([r["start_test"] > r["tuned_test"] for r in rows]),
        "compare": mean_of([r["start_train"] >= r["tuned_train"] for r in rows]),
    }
    for t in THRESHOLDS:
        out[f"threshold {t}"] = mean_of([r["start_train"] >= t for r in rows])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=fewshot.WORK / "fewshot")
    parser.add_argument(
        "--record", type=Path, default=fewshot.ROOT / "benchmarks/results/fewshot.json"
    )
    parser.add_argument(
        "--out", type=Path, default=fewshot.ROOT / "benchmarks/results/keep_start.json"
    )
    parser.add_argument(
        "--quick",
        metavar="START",
        help="the check of fewshot.py --quick's runs (the demo set, fine-tuned from START)",
    )
    args = parser.parse_args()
    if not args.quick and not fewshot.SHARED.is_dir():
        print(f"error: {fewshot.SHARED} not found: the data sets live there", file=sys.stderr)
        return 2
    starts = {"demo": args.quick} if args.quick else fewshot.STARTS
    record = fewshot.recorded_runs(args.record)
    rows = runs_of(args.work, record, starts, quick=bool(args.quick))
    if not rows:
        print(f"error: no finished fine-tuning run under 10 pairs in {args.work}", file=sys.stderr)
        return 2
    summary = rules(rows)
    for name, cell in summary.items():
        print(
            f"{name:18s} test F1@0.5 {cell['mean_test_f1']:.3f}, start kept in "
            f"{cell['kept_start']} of {len(rows)} runs"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": rows, "rules": summary}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
