""""Do I need more annotations?" (issue 30, item 4): the learning curve of your own data.

A biologist with 20 annotated images wants to know whether annotating 20 more is worth a day.
:func:`run_curve` holds out a seeded part of the pairs as test images, trains ``train-seg`` on
nested subsets of the rest (fractions of it; within a draw each smaller subset lies inside the
larger, so the curve measures more annotations, not other ones), several draws of the smaller
subsets, and scores every run on the same held-out pairs. It then fits

    F(k) = a - b * r**k,    k = log2(annotated pairs),

to pooled F1@0.5: a saturating power law, in which each doubling of the annotations gains ``r``
times what the doubling before it gained, and ``a`` is where the curve levels off. The expected
gain from doubling all the annotations is ``F(k + 1) - F(k)``. Its stated uncertainty is a
prediction interval for the gain a user will *see*, the next run's score minus that of the runs
they have: (1) the curve's own uncertainty, from a bootstrap that resamples the held-out images
and, within each size, the draws (each resample rescored, refitted), plus (2) the draw-to-draw
scatter of single training runs, since the next run is one draw and the current score an average
of a few (the sd over draws of the largest size measured more than once). The bootstrap over the
held-out images alone, as first shipped, stated intervals far too narrow:
``benchmarks/curve_check.py`` found the real gain outside it on both sets. Every run is a
``train-seg`` run folder under ``OUT/runs``: a finished one is kept, an interrupted one
resumed, so running the command again goes on where it stopped. The CPU budget is measured and
stated before the first step.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from cganseg.data.folders import find_pairs
from cganseg.data.io import read_image, read_labels
from cganseg.data.splits import make_split, save_split
from cganseg.errors import InputError
from cganseg.evaluation.matching import match_counts
from cganseg.inference.segment import load_segmenter, prepare_image
from cganseg.options import SegTrainConfig
from cganseg.runtime.atomic import write_text
from cganseg.runtime.progress import progress_bar
from cganseg.training.seg_trainer import SegTrainer, train_segmenter
from cganseg.training.settings import resolve

#: bootstrap resamples of the held-out images behind the stated uncertainty
RESAMPLES = 200


def plan(names: Sequence[str], fractions: Sequence[float], draws: int, test_fraction: float,
         seed: int) -> tuple[list[str], list[dict[str, Any]]]:  # fmt: skip
    """The held-out test pairs and one entry per run: fraction, draw and its annotated pairs."""
    split = make_split(names, val_fraction=0.0, test_fraction=test_fraction, seed=seed)
    test, pool = split["test"], split["train"]
    if len(test) < 2 or len(pool) < 2:
        raise InputError(f"{len(names)} pairs are too few for a learning curve: it needs at "
                         "least 2 to hold out and 2 to train on")  # fmt: skip
    runs = []
    for draw in range(draws):
        order = [pool[i] for i in np.random.default_rng([seed, draw]).permutation(len(pool))]
        for fraction in sorted(fractions):
            if fraction >= 1 and draw > 0:
                continue  # all the pairs are the same pairs in every draw
            n = max(1, round(fraction * len(pool)))
            runs.append({"fraction": fraction, "draw": draw, "pairs": sorted(order[:n])})
    return test, runs


def _run_dir(out: Path, run: dict[str, Any]) -> Path:
    return out / "runs" / f"n{len(run['pairs'])}_draw{run['draw']}"


def _config(data: Path, out: Path, run: dict[str, Any], options: dict[str, Any]
            ) -> SegTrainConfig:  # fmt: skip
    folder = _run_dir(out, run)
    folder.mkdir(parents=True, exist_ok=True)
    split = {**make_split(run["pairs"], seed=run["draw"]), "test": []}  # train-seg's own rule
    save_split(folder / "annotated.json", split)
    return resolve(SegTrainConfig, {**options, "data": str(data), "out": str(folder / "run"),
                                    "split_file": str(folder / "annotated.json"),
                                    "seed": run["draw"]})  # fmt: skip


def seconds_per_step(cfg: SegTrainConfig, steps: int = 3) -> float:
    """CPU-seconds of one training step of ``cfg`` here (median of a few, in memory)."""
    trainer = SegTrainer.from_config(cfg)
    batches = iter(trainer.train_loader)
    times = []
    for _ in range(steps):
        images, targets = next(batches)
        start = time.process_time()
        trainer.train_step(images, targets)
        times.append(time.process_time() - start)
    return float(np.median(times))


def held_out_counts(run: Path, data_pairs: dict[str, Any], test: list[str]) -> list[list[int]]:
    """Per test image: TP, FP, FN at IoU 0.5 of the run's best model (as segment runs it)."""
    seg = load_segmenter(run, "cpu")
    rows = []
    for name in test:
        pair = data_pairs[name]
        image = prepare_image(seg, read_image(pair.image, seg.channels), pair.image)
        c = match_counts(read_labels(pair.mask), seg.segment(image), [0.5])
        rows.append([int(c["tp"][0]), int(c["fp"][0]), int(c["fn"][0])])
    return rows


def _f1(counts: np.ndarray) -> float:
    tp, fp, fn = counts.sum(axis=0)
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0


def _saturating(k: np.ndarray, a: float, b: float, r: float) -> np.ndarray:
    return a - b * r**k


def fit(points: dict[int, list[float]]) -> tuple[float, float, float] | None:
    """``(a, b, r)`` of F(k) = a - b r^k through the mean score of each number of annotated
    pairs (None with fewer than three sizes, or when no fit converges)."""
    if len(points) < 3:
        return None
    n = np.array(sorted(points), float)
    y = np.array([np.mean(points[int(v)]) for v in n])
    k = np.log2(n)
    try:
        with warnings.catch_warnings():  # a degenerate resample has no covariance: no matter
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(_saturating, k, y, p0=(min(1.0, y.max() + 0.05), 0.5, 0.5),
                                  bounds=([0, 0, 0], [1, 10, 0.999]), maxfev=5000)  # fmt: skip
    except (RuntimeError, ValueError):
        return None
    return float(params[0]), float(params[1]), float(params[2])


def doubling_gain(params: tuple[float, float, float], n: int) -> float:
    a, b, r = params
    k = math.log2(n)
    return float(_saturating(np.array(k + 1), a, b, r) - _saturating(np.array(k), a, b, r))


def _draw_sd(by_size: dict[int, list[np.ndarray]]) -> float | None:
    """sd over draws of pooled F1@0.5 at the largest size run more than once (None if none)."""
    repeated = [n for n, runs in by_size.items() if len(runs) > 1]
    if not repeated:
        return None
    return float(np.std([_f1(c) for c in by_size[max(repeated)]], ddof=1))


def analyse(results: list[dict[str, Any]], seed: int = 0, new_runs: int = 1) -> dict[str, Any]:
    """Mean and sd per size, the fitted curve, and the expected gain from doubling the largest
    size with its 90% prediction interval (module docstring) for the gain that the mean of
    ``new_runs`` new runs at twice the size will show over the runs at the largest size."""
    by_size: dict[int, list[np.ndarray]] = {}
    for r in results:
        by_size.setdefault(len(r["pairs"]), []).append(np.array(r["counts"]))
    sizes = sorted(by_size)

    def points(runs: dict[int, list[np.ndarray]], index: np.ndarray | None = None
               ) -> dict[int, list[float]]:  # fmt: skip
        return {n: [_f1(c if index is None else c[index]) for c in cs] for n, cs in runs.items()}

    seen = points(by_size)
    summary: dict[str, Any] = {
        "sizes": {str(n): {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1))
                           if len(v) > 1 else 0.0, "runs": len(v)} for n, v in seen.items()},
    }  # fmt: skip
    params = fit(seen)
    largest = sizes[-1]
    if len(sizes) > 1:
        prev = sizes[-2]
        summary["last_doubling"] = {"from": prev, "to": largest,
                                    "gain": float(np.mean(seen[largest]) - np.mean(seen[prev]))}
    if params is None:
        summary["fit"] = None
        return summary
    n_test = len(results[0]["counts"])
    draw_sd = _draw_sd(by_size)
    scatter = (draw_sd or 0.0) * math.sqrt(1 / new_runs + 1 / len(by_size[largest]))
    rng = np.random.default_rng(seed)
    gains = []
    for _ in range(RESAMPLES):
        drawn = {n: [cs[i] for i in rng.integers(0, len(cs), len(cs))]
                 for n, cs in by_size.items()}  # fmt: skip
        refit = fit(points(drawn, rng.integers(0, n_test, n_test)))
        if refit is not None:
            gains.append(doubling_gain(refit, largest) + rng.normal(0.0, scatter))
    gain = doubling_gain(params, largest)
    summary["fit"] = {"a": params[0], "b": params[1], "r": params[2],
                      "expected_gain_doubling": gain, "to": 2 * largest,
                      "gain_sd": float(np.std(gains)) if gains else None,
                      "gain_interval_90": [float(np.percentile(gains, 5)),
                                           float(np.percentile(gains, 95))] if gains else None,
                      "draw_sd": draw_sd, "new_runs": new_runs,
                      "resamples": len(gains)}  # fmt: skip
    return summary


def in_words(summary: dict[str, Any]) -> str:
    """The answer in plain words."""
    sizes = {int(n): v for n, v in summary["sizes"].items()}
    largest = max(sizes)
    lines = [f"With all {largest} annotated pairs: F1@0.5 {sizes[largest]['mean']:.3f} on the "
             "held-out images."]  # fmt: skip
    last = summary.get("last_doubling")
    if last:
        lines.append(f"Going from {last['from']} to {last['to']} pairs gained "
                     f"{last['gain']:+.3f}.")  # fmt: skip
    f = summary.get("fit")
    if f:
        interval = f["gain_interval_90"]
        spread = (f" (90% interval {interval[0]:+.3f} to {interval[1]:+.3f})"
                  if interval else "")  # fmt: skip
        lines.append(f"Annotating {f['to'] - largest} more ({f['to']} in all) is expected to gain "
                     f"{f['expected_gain_doubling']:+.3f}{spread}; the curve levels off near "
                     f"{f['a']:.3f} (each doubling gains {f['r']:.2f} x the one before).")
    else:
        lines.append("Too few sizes (or too noisy a curve) to extrapolate: add fractions.")
    if f and last and last["gain"] <= 0:
        lines.append("The last doubling gained nothing, which the fitted curve (it only rises) "
                     "cannot show: more of the same training is not likely to help; try longer "
                     "training (--iterations) before more annotations.")  # fmt: skip
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = {int(n): v for n, v in summary["sizes"].items()}
    ns = sorted(sizes)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar(ns, [sizes[n]["mean"] for n in ns], yerr=[sizes[n]["sd"] for n in ns],
                marker="o", capsize=3, label="measured (mean +- sd over draws)")  # fmt: skip
    f = summary.get("fit")
    if f:
        grid = np.geomspace(ns[0], 2 * ns[-1], 50)
        ax.plot(grid, _saturating(np.log2(grid), f["a"], f["b"], f["r"]), "--",
                label="fit a - b r^log2(n), extrapolated")  # fmt: skip
        low, high = f["gain_interval_90"] or (0, 0)
        gain = f["expected_gain_doubling"]
        ax.errorbar([2 * ns[-1]], [sizes[ns[-1]]["mean"] + gain],
                    yerr=[[max(0.0, gain - low)], [max(0.0, high - gain)]],
                    fmt="s", capsize=3, label="expected with twice the pairs")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel("annotated pairs")
    ax.set_ylabel("F1@0.5 (pooled, held-out)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_curve(data: str | Path, out: str | Path, options: dict[str, Any], *,
              fractions: Sequence[float] = (0.125, 0.25, 0.5, 1.0), draws: int = 2,
              test_fraction: float = 0.25, seed: int = 0, progress: bool = True
              ) -> dict[str, Any]:  # fmt: skip
    """Train, score, fit and report (module docstring); writes ``OUT/curve.json``,
    ``OUT/curve.png`` and ``OUT/answer.txt``; returns the summary. ``options``: train-seg's
    options for every run (e.g. ``init_seg``, ``iterations``)."""
    data, out = Path(data), Path(out)
    layout = {k: options[k] for k in ("layout", "mask_suffix", "image_suffix") if k in options}
    pairs = {p.name: p for p in find_pairs(data, **layout)}
    test, runs = plan(sorted(pairs), fractions, draws, test_fraction, seed)
    configs = [_config(data, out, run, options) for run in runs]
    todo = [c for c, r in zip(configs, runs, strict=True)
            if not (_run_dir(out, r) / "result.json").is_file()]  # fmt: skip
    if todo:
        per_step = seconds_per_step(todo[0])
        steps = sum(c.iterations for c in todo)
        print(f"learning curve: {len(runs)} runs ({len(todo)} to train) on "
              f"{sorted({len(r['pairs']) for r in runs})} of {len(pairs) - len(test)} pairs, "
              f"{len(test)} held out; {steps} steps at {per_step:.2f} CPU-s each here: about "
              f"{steps * per_step / 60:.0f} CPU-minutes (plus scoring)", flush=True)
    results = []
    for cfg, run in progress_bar(list(zip(configs, runs, strict=True)), desc="curve", unit="run",
                         disable=not progress):  # fmt: skip
        done = _run_dir(out, run) / "result.json"
        if not done.is_file():
            resume = (Path(cfg.out) / "last.pt").is_file()
            train_segmenter(cfg, resume=resume, progress=False,
                            given={"iterations": cfg.iterations})  # fmt: skip
            counts = held_out_counts(Path(cfg.out), pairs, test)
            write_text(done, json.dumps({**run, "counts": counts}))
        results.append(json.loads(done.read_text()))
    summary = {**analyse(results, seed), "test": test, "data": str(data)}
    write_text(out / "curve.json", json.dumps({**summary, "runs": results}, indent=1) + "\n")
    plot(summary, out / "curve.png")
    write_text(out / "answer.txt", in_words(summary) + "\n")
    return summary
