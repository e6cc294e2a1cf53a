"""How long does ``cganseg suggest`` take per image at ``--diameter auto``? (issue 30, 2026-12-08)

``suggest`` segments each image as it is and in three views (mirrored twice, turned). At
``--diameter auto`` (a shipped model's default, kept by runs fine-tuned on fewer than 10 pairs)
it used to run the whole scale search in every view; now it measures the cells once, on the
plain image, and segments the views at that size (:meth:`Segmenter.segment_measured`). This
times both on the same images, interleaved image by image (the machine is shared: medians), and
reports how far the views' own searches landed from the plain image's size.

    .venv/bin/python benchmarks/suggest_speed.py MODEL IMAGE_DIR [--n 10]

Writes ``benchmarks/results/suggest_speed.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from cganseg.data.io import read_image
from cganseg.evaluation.suggest import VIEWS
from cganseg.inference.segment import Segmenter, load_segmenter, prepare_image
from cganseg.runtime.atomic import write_text


def per_view_search(seg: Segmenter, image: np.ndarray) -> list[float | str | None]:
    """The former ranking's passes: every view measured on its own; the sizes each used."""
    used = [seg.segment_measured(image, diameter="auto")[1]]
    for forward, _ in VIEWS.values():
        used.append(seg.segment_measured(np.ascontiguousarray(forward(image)), diameter="auto")[1])
    return used


def measured_once(seg: Segmenter, image: np.ndarray) -> None:
    """Today's ranking's passes: the plain image measured, the views at its size."""
    _, used = seg.segment_measured(image, diameter="auto")
    for forward, _ in VIEWS.values():
        seg.segment(np.ascontiguousarray(forward(image)), diameter=used)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("images", type=Path)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent
                        / "results" / "suggest_speed.json")  # fmt: skip
    args = parser.parse_args()
    seg = load_segmenter(args.model, "cpu")
    paths = sorted(p for p in args.images.iterdir() if p.is_file())[: args.n]
    times: dict[str, list[float]] = {"per_view_search": [], "measured_once": []}
    drift: list[float] = []  # |view's size / plain image's - 1|, per view
    for path in paths:
        image = prepare_image(seg, read_image(path, seg.channels), path, "auto")
        start = time.perf_counter()
        used = per_view_search(seg, image)
        times["per_view_search"].append(time.perf_counter() - start)
        drift += [abs(float(u) / float(used[0]) - 1) for u in used[1:]]
        start = time.perf_counter()
        measured_once(seg, image)
        times["measured_once"].append(time.perf_counter() - start)
        print(f"{path.name}: {times['per_view_search'][-1]:.2f} s vs "
              f"{times['measured_once'][-1]:.2f} s", flush=True)  # fmt: skip
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {"model": args.model, "images": [p.name for p in paths],
              "median_s_per_image": medians,
              "speedup": medians["per_view_search"] / medians["measured_once"],
              "view_size_drift": {"median": statistics.median(drift), "max": max(drift),
                                  "over_5_percent": sum(d > 0.05 for d in drift),
                                  "views": len(drift)},
              "seconds": times}  # fmt: skip
    print(json.dumps({k: v for k, v in result.items() if k != "seconds"}, indent=1))
    write_text(args.out, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
