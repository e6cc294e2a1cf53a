"""Options of ``cganseg experiment`` (one YAML file): data, folds, scenarios and run options.

Example::

    data: ../shared/data/dsb2018_fluo_256
    out: experiments/dsb2018
    folds: 5
    n_train: 200            # N pairs for scenarios A, B and D; C uses every training pair
    backbones: [unet, deepsea]
    scenarios: [A, B, C]    # add D for N real + synthetic pairs from the fold's generator
    cgan: {preset: cpu, iterations: 2000}     # options of `cganseg train` (scenario A)
    seg: {iterations: 2000, crop: 256}         # options of `cganseg train-seg` (B, C, D)
    synthetic: {n: 700, layout: mixed, density: 0.5}   # scenario D
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cganseg import checks
from cganseg.data.folders import Pair, find_pairs
from cganseg.errors import InputError
from cganseg.models.registry import SEGMENTERS
from cganseg.options import CGanTrainConfig, SegTrainConfig, read_yaml_mapping, refuse_unknown
from cganseg.optionspec import check_fields, float_fields, option
from cganseg.training.settings import resolve

SCENARIOS = {
    "A": "cGAN-Seg, N pairs",
    "B": "conventional, N pairs",
    "C": "conventional, all pairs",
    "D": "conventional, N real + synthetic pairs",
}
#: options the experiment sets itself for every run; not allowed in ``cgan`` / ``seg``
RUN_OWNED = ("data", "out", "split_file", "n_train", "model", "seed", "extra", "test_fraction")
SYNTH_DEFAULTS: dict[str, Any] = {
    "n": 700,
    "layout": "mixed",
    "density": 0.5,
    "per_mask": 1,
    "fraction": None,
}


@dataclass
class ExperimentConfig:
    """k-fold cross-validation of the paper's scenarios A, B, C (and optional D)."""

    data: str = option(help="the data set (a folder of pairs)", path=True)
    out: str = option(help="the experiment's folder", path=True)
    folds: int = option(5, rule=checks.Number(2, integer=True), help="cross-validation folds")
    n_train: int = option(200, rule=checks.Number(1, integer=True),
                          help="N real pairs of scenarios A, B and D")  # fmt: skip
    val_fraction: float = option(0.1, rule=checks.Number(0, 1, below=True),
                                 help="share of each fold's training pairs held out for "
                                 "validation")  # fmt: skip
    seed: int = option(0, rule=checks.SEED, help="seed of the folds; fold k's runs use seed + k")
    backbones: list[str] = field(default_factory=lambda: ["unet"])
    scenarios: list[str] = field(default_factory=lambda: ["A", "B", "C"])
    layout: str = "auto"
    mask_suffix: str = "_masks"
    image_suffix: str = ""
    channels: str | None = None
    device: str = "auto"
    cgan: dict[str, Any] = field(default_factory=dict)
    seg: dict[str, Any] = field(default_factory=dict)
    synthetic: dict[str, Any] = field(default_factory=dict)
    fid: bool = True
    fid_weights: str | None = None

    @classmethod
    def load(cls, path: str | Path) -> ExperimentConfig:
        return cls.from_dict(read_yaml_mapping(path), path)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> ExperimentConfig:
        refuse_unknown(cls, data, source)
        missing = [k for k in ("data", "out") if not data.get(k)]
        if missing:
            raise InputError(f"config needs {' and '.join(missing)}", source)
        data = dict(data)
        for key in ("backbones", "scenarios"):
            if isinstance(data.get(key), str):
                data[key] = [data[key]]
        for key in float_fields(cls):  # YAML reads 1e-1 (no dot) as a string
            if isinstance(data.get(key), str):
                try:
                    data[key] = float(data[key])
                except ValueError:
                    pass  # refused by check() below, by name
        cfg = cls(**data)
        cfg.check(source)
        return cfg

    def check(self, source: str | Path | None = None) -> None:
        def bad(message: str) -> InputError:
            return InputError(message, source)

        check_fields(self, source)
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown or not self.scenarios:
            raise bad(f"scenarios must be among {', '.join(SCENARIOS)}, got {self.scenarios}")
        if "D" in self.scenarios and "A" not in self.scenarios:
            raise bad("scenario D needs scenario A (its synthetic pairs come from A's generator)")
        wrong = [b for b in self.backbones if b not in SEGMENTERS]
        if wrong or not self.backbones:
            raise bad(f"backbones must be among {', '.join(SEGMENTERS)}, got {self.backbones}")
        for name in ("cgan", "seg", "synthetic"):
            if not isinstance(getattr(self, name), dict):
                raise bad(f"option {name} must be a mapping of option: value")
        for name in ("cgan", "seg"):
            owned = sorted(set(getattr(self, name)) & set(RUN_OWNED))
            if owned:
                raise bad(f"{name}: {', '.join(owned)} is set by the experiment for each run")
        odd = sorted(set(self.synthetic) - set(SYNTH_DEFAULTS))
        if odd:
            raise bad(f"unknown synthetic option(s): {', '.join(odd)}")
        for name, cls in (("cgan", CGanTrainConfig), ("seg", SegTrainConfig)):
            options = getattr(self, name)
            try:  # the runs' own options, checked now (data and out are the experiment's)
                resolve(cls, {**options, "data": self.data, "out": self.out})
            except InputError as exc:
                raise bad(f"{name}: {exc}") from None

    def pairs(self) -> list[Pair]:
        """The image/mask pairs of the experiment's data set."""
        return find_pairs(self.data, self.layout, self.mask_suffix, self.image_suffix)

    def synth(self) -> dict[str, Any]:
        return {**SYNTH_DEFAULTS, **self.synthetic}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
