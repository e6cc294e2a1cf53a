"""Where to follow the flows: at the image's size or at the network's? (issue 32, item 2)

``segment`` spent 92% of its time on 1024 px phase-contrast images following Cellpose-style
flows at the image's full size (``benchmarks/vs_cellpose.py``), although the network saw the
image shrunk to cells ``cell_diameter`` px across. Since 2026-12-07 the output becomes cells at
the network's scale when that is the smaller (``Segmenter.label_shape``) and the labels are
resized to the image. This script measures both ways on the same models, images and outputs,
interleaved image by image: the seconds of turning the output into labels (the network's
output is computed once per image and shared) and the quality of the labels (pooled F1@0.5,
mean F1 over IoU 0.5:0.95 per image, Dice), each set at its test images' true median diameter
(the user who states the cells' size; so the scale is the same for both ways).

- ``usiigaci_phase``: the shipped ``cells`` model on its test images (1024 px; cells ~60 px
  across, seen at 30);
- ``murphy_nih3t3_hoechst``: the shipped ``nuclei`` (never saw it), all 18 images (1024x1344;
  nuclei ~85 px across, seen at 17);
- ``dsb2018_fluo_256``: the shipped ``nuclei`` on its test images (256 px; nuclei mostly
  near the size the network sees: the two ways differ little).

Writes ``benchmarks/results/follow_scale.json`` and prints one line per set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from start_models import MODELS, ROOT, SHARED, set_split  # noqa: E402

from cganseg.data.io import read_image, read_labels  # noqa: E402
from cganseg.data.rescale import cell_diameter  # noqa: E402
from cganseg.evaluation.evaluate import evaluate_pairs  # noqa: E402
from cganseg.inference.segment import load_segmenter, prepare_image  # noqa: E402
from cganseg.runtime.atomic import write_text  # noqa: E402

#: set -> (model, test image names or None for all the set's images)
SETS = {
    "usiigaci_phase": ("cells", lambda: set_split("usiigaci_phase", MODELS["cells"])["test"]),
    "murphy_nih3t3_hoechst": ("nuclei", None),
    "dsb2018_fluo_256": ("nuclei", lambda: set_split("dsb2018_fluo_256",
                                                     MODELS["nuclei"])["test"]),  # fmt: skip
}
WAYS = ("image", "network")


def _scores(pairs: list[tuple[str, np.ndarray, np.ndarray]]) -> dict[str, float]:
    rep = evaluate_pairs(pairs)
    return {"f1_50_pooled": float(rep["pooled"]["f1"][0]),
            "mean_f1_per_image": float(np.mean(rep["per_image"]["f1"])),
            "dice": float(rep["dice"])}  # fmt: skip


def measure(set_name: str, limit: int | None) -> dict[str, Any]:
    model, names = SETS[set_name]
    folder = SHARED / set_name
    stems = names() if names else sorted(p.stem for p in (folder / "images").glob("*.png"))
    stems = stems[:limit] if limit else stems
    seg = load_segmenter(model, "cpu")
    truths = [read_labels(folder / "masks" / f"{s}.png") for s in stems]
    diameter = float(np.median([cell_diameter(t) for t in truths]))
    pairs: dict[str, list] = {w: [] for w in WAYS}
    seconds: dict[str, list[float]] = {w: [] for w in WAYS}
    for k, (stem, truth) in enumerate(zip(stems, truths, strict=True)):
        chw = prepare_image(seg, read_image(folder / "images" / f"{stem}.png", seg.channels),
                            stem, diameter)  # fmt: skip
        small = seg.label_shape(chw.shape, diameter)
        at = {"network": seg.predict(chw, diameter=diameter, shape=small)}
        at["image"] = seg.predict(chw, diameter=diameter)
        if k == 0:  # warm-up, untimed: numba's compile, caches
            for way in WAYS:
                seg.post.labels_at(at[way], chw.shape[-2:])
        for way in WAYS if k % 2 else WAYS[::-1]:  # interleaved, alternating which goes first
            start = time.perf_counter()
            labels = seg.post.labels_at(at[way], chw.shape[-2:])
            seconds[way].append(time.perf_counter() - start)
            pairs[way].append((stem, truth, labels))
    return {"set": set_name, "model": model, "images": len(stems), "diameter": diameter,
            "factor": seg.factor(diameter), "shape": list(chw.shape[-2:]),
            "label_shape": list(small),
            **{way: {**_scores(pairs[way]), "follow_s_median": float(np.median(seconds[way]))}
               for way in WAYS}}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--limit", type=int, help="the first N test images of each set")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/follow_scale.json")
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"error: {SHARED} not found: the test sets live there", file=sys.stderr)
        return 2
    rows = []
    for name in args.sets:
        row = measure(name, args.limit)
        rows.append(row)
        print(f"{name} ({row['images']} images, factor {row['factor']:.2f}): " + "; ".join(
            f"{w} F1@0.5 {row[w]['f1_50_pooled']:.3f}, mean F1 {row[w]['mean_f1_per_image']:.3f}"
            f", Dice {row[w]['dice']:.3f}, {row[w]['follow_s_median']:.2f} s/image"
            for w in WAYS), flush=True)  # fmt: skip
    write_text(args.out, json.dumps(rows, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
