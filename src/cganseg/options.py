"""Options of a conventional training run (``cganseg train-seg``), saved as ``config.yaml``.

Every option is recorded with the run, so a run folder says how it was made and ``--resume`` can
continue it with the same settings.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cganseg.errors import InputError
from cganseg.losses.cgan_objective import LossWeights
from cganseg.runtime.atomic import write_text

#: Python types accepted for each annotation used below
_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "None": (type(None),),
    "list[int]": (list, tuple),
    "list[float]": (list, tuple),
    "list[str]": (list, tuple),
    "dict[str, Any]": (dict,),
}
#: the type of each item of a list option
_ITEM_TYPES: dict[str, tuple[type, ...]] = {
    "list[int]": (int,),
    "list[float]": (int, float),
    "list[str]": (str,),
}
#: options YAML may read as strings (``1e-3`` without a dot) that must be floats
FLOAT_OPTIONS = (
    "lr",
    "weight_decay",
    "warmup_fraction",
    "lr_gen",
    "lr_disc",
    "extra_fraction",
    "rollback_lr_factor",
    "max_loss",
    "p_vanilla",
    "p_diff",
    "mix_prob",
    "w_adv_g",
    "w_adv_s",
    "w_rec_g",
    "w_rec_s",
    "w_id_g",
    "w_id_s",
    "w_disc",
)
#: largest seed: what NumPy's legacy seeding and every torch generator accept
SEED_MAX = 2**32 - 1
#: allowed range (low, high; None: open) of numeric options, for every config class
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "iterations": (1, None),
    "batch_size": (1, None),
    "val_every": (1, None),
    "log_every": (1, None),
    "patience": (0, None),
    "num_workers": (0, None),
    "seed": (0, SEED_MAX),
    "min_size": (0, None),
    "tile_size": (16, None),
    "n_train": (1, None),
    "width": (1, None),
    "gen_width": (1, None),
    "disc_width": (1, None),
    "disc_layers": (1, None),
    "style_dim": (1, None),
    "n_mapping": (1, None),
    "sample_every": (0, None),
    "max_rollbacks": (0, None),
    "weight_decay": (0, None),
    "p_vanilla": (0, 1),
    "extra_fraction": (0, 1),
    "p_diff": (0, 1),
    "mix_prob": (0, 1),
    "pool_size": (0, None),
    "w_adv_g": (0, None),
    "w_adv_s": (0, None),
    "w_rec_g": (0, None),
    "w_rec_s": (0, None),
    "w_id_g": (0, None),
    "w_id_s": (0, None),
    "w_disc": (0, None),
}
#: options that must be strictly positive
_POSITIVE = ("lr", "lr_gen", "lr_disc", "max_loss")
#: options with a fixed set of values
_CHOICES: dict[str, tuple[Any, ...]] = {
    "model": ("unet", "deepsea", "cellpose"),
    "n_classes": (2, 3),
    "layout": ("auto", "folders", "cellpose"),
    "schedule": ("cosine", "constant"),
    "on_divergence": ("stop", "rollback"),
    "amp_dtype": ("fp16", "bf16"),
}


def check_type(name: str, annotation: str, value: Any, bad) -> None:
    """Refuse ``value`` (``bad(message)`` makes the error) unless it has the annotated type;
    numbers must be finite, list items of the item type (YAML ``crop: [true, 64]`` is no size)."""
    allowed = tuple(t for part in annotation.split("|") for t in _TYPES[part.strip()])
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        raise bad(f"{name} must be {annotation}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise bad(f"{name} must be a finite number, got {value}")
    if isinstance(value, list | tuple):
        item = next(t for part, t in _ITEM_TYPES.items() if part in annotation)
        for v in value:
            if isinstance(v, bool) or not isinstance(v, item):
                raise bad(f"{name} must be {annotation}, got {value!r}")
            if isinstance(v, float) and not math.isfinite(v):
                raise bad(f"{name} must hold finite numbers, got {value!r}")


@dataclass
class SegTrainConfig:
    """Conventional training: the paper's baseline scenarios B (N pairs) and C (all pairs)."""

    data: str
    out: str
    layout: str = "auto"
    mask_suffix: str = "_masks"
    image_suffix: str = ""
    channels: str | None = None  # None: all; "gray"; or "0,1,2"
    model: str = "unet"
    width: int | None = None  # None: the backbone's default
    n_classes: int = 3  # 2: background/cell (the paper); 3: + boundary, separates touching cells
    crop: list[int] = field(default_factory=lambda: [256, 256])
    batch_size: int = 8
    iterations: int = 2000
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_fraction: float = 0.05
    schedule: str = "cosine"  # or "constant"
    val_every: int = 100
    patience: int = 10  # validations without improvement before stopping; 0 = never stop early
    log_every: int = 10
    n_train: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    split_file: str | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision, used on CUDA only
    amp_dtype: str = "fp16"  # or "bf16" (Ampere and newer; float32's range, no loss scaling)
    # NaN/inf in losses or weights: "stop", or "rollback" to last.pt with the learning rates
    # times rollback_lr_factor (compounding), at most max_rollbacks times
    on_divergence: str = "stop"
    rollback_lr_factor: float = 0.5
    max_rollbacks: int = 3
    # a loss above this also counts as divergence; None: MAX_LOSS_FACTOR (1e4) times the first
    # step's loss (training/loop.py)
    max_loss: float | None = None
    # speed only: results change by float rounding at most (see the README's Speed section)
    fused_adam: bool = True  # Adam's fused kernels (CPU and CUDA)
    channels_last: bool = False  # NHWC memory layout of networks and batches
    compile: bool = False  # torch.compile the training passes (the first steps compile)
    num_workers: int = 2
    p_vanilla: float = 0.5
    min_size: int = 15
    tile_size: int = 512
    # extra (e.g. synthetic) pairs mixed into every training batch, never validated or tested on
    extra: str | None = None
    extra_fraction: float | None = None  # share of each batch; None: their share of all pairs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> SegTrainConfig:
        refuse_unknown(cls, data, source)
        data = apply_preset(data, source)
        crop = data.get("crop")
        if isinstance(crop, int | str) and not isinstance(crop, bool):
            data["crop"] = parse_size(str(crop))  # "crop: 256" in YAML means 256x256
        for key in FLOAT_OPTIONS:
            if isinstance(data.get(key), str):  # YAML reads 1e-3 (no dot) as a string
                try:
                    data[key] = float(data[key])
                except ValueError:
                    raise InputError(
                        f"option {key} must be a number, got {data[key]!r}", source
                    ) from None
        try:
            cfg = cls(**data)
        except TypeError as exc:
            raise InputError(f"incomplete config ({exc})", source) from None
        cfg.check(source)
        return cfg

    def check(self, source: str | Path | None = None) -> None:
        """Refuse wrong types and out-of-range values now, before a run folder is written."""

        def bad(message: str) -> InputError:
            return InputError(f"option {message}", source)

        for f in dataclasses.fields(self):
            check_type(f.name, str(f.type), getattr(self, f.name), bad)
        crop = self.crop
        if len(crop) != 2 or not all(c >= 16 and c % 16 == 0 for c in crop):
            raise bad(f"crop must be two sizes divisible by 16 (the networks halve it 4 "
                      f"times), got {crop}")  # fmt: skip
        for name, (low, high) in _RANGES.items():
            value = getattr(self, name, None)
            if value is None:
                continue
            if not (low is None or value >= low) or not (high is None or value <= high):
                span = f"at least {low}" if high is None else f"in [{low}, {high}]"
                raise bad(f"{name} must be {span}, got {value}")
        for name in _POSITIVE:
            value = getattr(self, name, None)
            if value is not None and not value > 0:
                raise bad(f"{name} must be > 0, got {value}")
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise bad(f"{name} must be one of {', '.join(map(str, choices))}, got "
                          f"{getattr(self, name)!r}")  # fmt: skip
        for name in ("val_fraction", "test_fraction", "warmup_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise bad(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.extra_fraction is not None and self.extra is None:
            raise bad("extra_fraction needs extra")
        if not 0.0 < self.rollback_lr_factor < 1.0:
            raise bad(f"rollback_lr_factor must be in (0, 1), got {self.rollback_lr_factor}")
        if self.channels is not None:
            try:
                parse_channels(self.channels)
            except InputError as exc:
                raise bad(str(exc)) from None

    def save(self, path: str | Path) -> None:
        write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> SegTrainConfig:
        return cls.from_dict(read_yaml_mapping(path), path)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file of ``option: value`` lines (safe_load: no Python objects), or InputError."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read config ({str(exc).splitlines()[0]})", path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError("config must be a YAML mapping of option: value", path)
    return data


def refuse_unknown(cls: type, data: dict[str, Any], source: str | Path | None) -> None:
    """InputError naming the options of ``data`` that dataclass ``cls`` does not have."""
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise InputError(f"unknown option(s) in config: {', '.join(unknown)}", source)


def parse_size(text: str) -> list[int]:
    """``"256"`` -> [256, 256]; ``"128x192"`` -> [128, 192]."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise InputError(f"size must look like 256 or 256x320, got {text!r}")
    return parts


def split_extra(text: str) -> tuple[str, float | None]:
    """``"DIR"`` -> (DIR, None); ``"DIR:0.5"`` -> (DIR, 0.5) (a colon not before a number is
    part of the path)."""
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return text, None


def parse_channels(text: str | None):
    """The ``channels`` option as :func:`cganseg.data.io.read_image` wants it."""
    if text is None or text == "gray":
        return text
    try:
        return [int(c) for c in text.split(",")]
    except ValueError:
        raise InputError(f"--channels must be 'gray' or indices like 0,1,2, got {text!r}") from None


#: ``--preset``: CPU-sized networks, or the paper's full-size networks for GPUs
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "crop": [128, 128],
        "width": 16,
        "gen_width": 16,
        "disc_width": 32,
        "style_dim": 128,
        "n_mapping": 4,
        "batch_size": 4,
    },
    "paper": {
        "crop": [512, 512],
        "width": None,
        "gen_width": 64,
        "disc_width": 64,
        "style_dim": 256,
        "n_mapping": 8,
        "batch_size": 4,
    },
}


def apply_preset(options: dict[str, Any], source: str | Path | None = None) -> dict[str, Any]:
    """``options`` over the values of its ``preset`` (if it names one): the one place presets
    are applied, so the CLI, the Python API, the experiment and config.yaml agree
    (precedence: defaults < preset < config file < command line)."""
    preset = options.get("preset")
    if preset is None:
        return dict(options)
    if not isinstance(preset, str) or preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r} (use {', '.join(PRESETS)})", source)
    return {**PRESETS[preset], **options}


@dataclass
class CGanTrainConfig(SegTrainConfig):
    """cGAN-Seg training (``cganseg train``): the segmenter's options plus Gen, D1, D2 and losses.

    ``seg_to_gen`` says how the segmenter's output reaches D2 and the image cycle: ``argmax``
    (default; the public reference code: hard one-hot, no gradient to Seg), ``soft`` (softmax
    probabilities, differentiable) or ``straight-through`` (hard one-hot forward, softmax
    gradient). In our one measurement (DSB2018, 300 CPU steps) argmax gave validation F1@0.5
    0.638 and soft 0.583; see the README.
    """

    lr: float = 2e-4
    lr_gen: float = 2e-4
    lr_disc: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    gen_width: int = 32
    style_dim: int = 256
    n_mapping: int = 8
    mix_prob: float = 0.9
    disc_width: int = 64
    disc_layers: int = 3
    disc_attention: bool = True
    perceptual: str = "vgg19"
    perceptual_weights: str | None = None
    p_diff: float = 0.6
    seg_to_gen: str = "argmax"
    pool_size: int = 0
    # Eq. 16-17 weights; the paper's values live in LossWeights
    w_adv_g: float = LossWeights.adv_g
    w_adv_s: float = LossWeights.adv_s
    w_rec_g: float = LossWeights.rec_g
    w_rec_s: float = LossWeights.rec_s
    w_id_g: float = LossWeights.id_g
    w_id_s: float = LossWeights.id_s
    w_disc: float = LossWeights.disc
    sample_every: int = 100
    preset: str | None = None

    def loss_weights(self) -> LossWeights:
        return LossWeights(
            self.w_adv_g, self.w_adv_s, self.w_rec_g, self.w_rec_s, self.w_id_g, self.w_id_s,
            self.w_disc,
        )

    def check(self, source: str | Path | None = None) -> None:
        super().check(source)
        if self.seg_to_gen not in SEG_TO_GEN:
            choices = ", ".join(SEG_TO_GEN)
            raise InputError(
                f"option seg_to_gen must be one of {choices}, got {self.seg_to_gen!r}", source
            )
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise InputError(
                f"option betas must be two numbers in [0, 1), got {self.betas}", source
            )
        if self.perceptual not in ("vgg19", "hed-vgg16", "none"):
            raise InputError(
                f"option perceptual must be vgg19, hed-vgg16 or none, got {self.perceptual!r}",
                source,
            )
        if self.extra is not None:
            raise InputError(
                "extra pairs are for train-seg; cGAN-Seg training uses real pairs", source
            )
        if self.preset is not None and self.preset not in PRESETS:
            raise InputError(f"unknown preset {self.preset!r} (use {', '.join(PRESETS)})", source)
        if self.weight_decay:
            raise InputError(
                "option weight_decay is for train-seg; cGAN-Seg training does not use it", source
            )


SEG_TO_GEN = ("soft", "straight-through", "argmax")
