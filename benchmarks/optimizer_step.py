"""Adam's step alone, fused kernels against the per-tensor ``foreach`` path (issue 6).

End-to-end step times on a shared 2-core CPU vary by more than the optimiser's share of a step,
so this measures the optimiser step by itself, for each network of the cpu and paper presets
(segmenter UNet, generator, discriminator), with random gradients: median of ``--steps`` steps
after one warm-up. Prints a table and writes ``benchmarks/results/optimizer_step_DEVICE.json``.
Run from the repository root: ``.venv/bin/python benchmarks/optimizer_step.py [--device cuda]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from cganseg.models.discriminator import PatchDiscriminator
from cganseg.models.generator import StyleUNet
from cganseg.models.registry import build_segmenter
from cganseg.options import PRESET_NAMES, preset_sizes
from cganseg.runtime.atomic import write_text


def _networks(preset: str) -> dict[str, torch.nn.Module]:
    p = preset_sizes(preset)
    return {
        "segmenter": build_segmenter("unet", 1, 3, p["width"]),
        "generator": StyleUNet(
            3, 1, width=p["gen_width"], style_dim=p["style_dim"], n_mapping=p["n_mapping"]
        ),
        "discriminator": PatchDiscriminator(1, p["disc_width"], 3, True),
    }


def _median_step(params: list[torch.nn.Parameter], fused: bool, steps: int, dev) -> float:
    opt = torch.optim.Adam(params, lr=1e-4, fused=fused)
    opt.step()
    times = []
    for _ in range(steps):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=9)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    dev = torch.device(args.device)
    results = []
    print(
        f"{'preset':<7}{'network':<14}{'params':>9}{'foreach ms':>12}{'fused ms':>10}{'ratio':>7}"
    )
    for preset in PRESET_NAMES[1:]:  # cpu, paper (auto is one of them)
        for name, net in _networks(preset).items():
            params = list(net.to(dev).parameters())
            for p in params:
                p.grad = torch.randn_like(p)
            foreach = _median_step(params, False, args.steps, dev)
            fused = _median_step(params, True, args.steps, dev)
            n = sum(p.numel() for p in params)
            results.append(
                {
                    "preset": preset,
                    "network": name,
                    "params": n,
                    "foreach_ms": foreach * 1e3,
                    "fused_ms": fused * 1e3,
                }
            )
            print(
                f"{preset:<7}{name:<14}{n / 1e6:>8.2f}M{foreach * 1e3:>12.1f}"
                f"{fused * 1e3:>10.1f}{foreach / fused:>7.1f}"
            )
    record = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "device": args.device,
        "torch": torch.__version__,
        "steps": args.steps,
        "results": results,
    }
    out = args.out or Path(__file__).parent / "results" / f"optimizer_step_{dev.type}.json"
    write_text(out, json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
