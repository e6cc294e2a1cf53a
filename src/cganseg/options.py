"""Options of a conventional training run (``cganseg train-seg``), saved as ``config.yaml``.

Every option is recorded with the run, so a run folder says how it was made and ``--resume`` can
continue it with the same settings.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import yaml

from cganseg import checks
from cganseg import instances as modes
from cganseg.data.flows import CELLPROB_THRESHOLD, FLOW_THRESHOLD
from cganseg.errors import InputError
from cganseg.instances.postprocessing import PostProcessing
from cganseg.losses.cgan_objective import LossWeights
from cganseg.models.base import SegmenterBase
from cganseg.models.registry import SEGMENTERS
from cganseg.runtime.atomic import write_text
from cganseg.runtime.device import resolve_device

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
#: options that name files or folders: made absolute when a run starts (config.yaml then works
#: from anywhere)
PATH_OPTIONS = ("data", "out", "split_file", "extra", "init_seg")
#: where ``cganseg train --seg-pretrain N`` keeps the conventional run that starts its segmenter
SEG_PRETRAIN_DIR = "seg_pretrain"
#: allowed range (low, high; None: open) of numeric options, for every config class
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "iterations": (1, None),
    "batch_size": (1, None),
    "val_every": (1, None),
    "log_every": (1, None),
    "patience": (0, None),
    "num_workers": (0, None),
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
    "warmup_gen": (0, None),
    "ramp_steps": (0, None),
    "seg_extra_updates": (0, None),
    "seg_pretrain": (0, None),
    "seg_ema": (0, 0.99999),
    "perceptual_depth": (1, 5),
    "perceptual_scale": (0.125, 1),
}

#: options that must be strictly positive
_POSITIVE = ("lr", "lr_gen", "lr_disc", "max_loss")
#: options that ``segment``, the notebook API and checkpoints also take: one rule each
#: (:mod:`cganseg.checks`), the same words at every door
_RULES = {
    "seed": checks.SEED,
    "min_size": checks.MIN_SIZE,
    "tile_size": checks.TILE_SIZE,
    "cellprob_threshold": checks.CELLPROB_THRESHOLD,
    "flow_threshold": checks.FLOW_THRESHOLD,
    "cell_diameter": checks.CELL_DIAMETER,
}
#: how Seg's output reaches D2 and Gen (see CGanTrainConfig)
SEG_TO_GEN = ("soft", "straight-through", "argmax")
#: options with a fixed set of values (None is allowed where the option's type allows it)
CHOICES: dict[str, tuple[Any, ...]] = {
    "model": SEGMENTERS,
    "n_classes": (2, 3),
    "instances": modes.MODES.keys(),  # a live view: a mode registered later is a choice
    "layout": ("auto", "folders", "cellpose"),
    "schedule": ("cosine", "constant"),
    "on_divergence": ("stop", "rollback"),
    "amp_dtype": ("fp16", "bf16"),
    "perceptual": ("vgg19", "hed-vgg16", "none"),
    "seg_to_gen": SEG_TO_GEN,
    "preset": ("auto", "cpu", "paper"),
}


def float_options(cls: type) -> list[str]:
    """The options of config class ``cls`` whose type is a float (read from the dataclass, so
    that no list of them can drift: YAML reads ``1e-3`` without a dot as a string)."""
    return [f.name for f in dataclasses.fields(cls)
            if "float" in (part.strip() for part in str(f.type).split("|"))]  # fmt: skip


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

    #: options of the dataclass that the command line does not offer (config files only)
    cli_exclude: ClassVar[tuple[str, ...]] = ()

    data: str
    out: str
    # network sizes for the hardware: cpu, paper (GPU), auto (by the device; what a config file
    # or the command line gets when it names none), None: the fields as they are
    preset: str | None = None
    layout: str = "auto"
    mask_suffix: str = "_masks"
    image_suffix: str = ""
    channels: str | None = None  # None: all; "gray"; or "0,1,2"
    model: str = "unet"
    width: int | None = None  # None: the backbone's default
    n_classes: int = 3  # 2: background/cell (the paper); 3: + boundary, separates touching cells
    # how cells come out: watershed (3 classes), components (2: the paper), flows (Cellpose's
    # flows, n_classes unused); None: by n_classes, resolved when the config is made
    instances: str | None = None
    cellprob_threshold: float = CELLPROB_THRESHOLD  # flows: cell-probability logit threshold
    flow_threshold: float = FLOW_THRESHOLD  # flows: largest flow error of a kept cell
    # flows: choose both thresholds on the validation images at the end (training/tuning.py)
    tune_thresholds: bool = True
    # rescale images so cells are this many pixels across (data/rescale.py); None: as they are
    cell_diameter: float | None = None
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

    def __post_init__(self) -> None:
        """An instance mode named by none is the default of every trainer (with 3 classes
        ``flows``, with 2 the paper's ``components``: :func:`cganseg.instances.default_name`),
        recorded in config.yaml."""
        if self.instances is None and self.n_classes in (2, 3):
            self.instances = modes.default_name(self.n_classes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def postprocessing(self, train_diameter: float | None = None) -> PostProcessing:
        """How the segmenter's output becomes cells (stored in every checkpoint);
        ``train_diameter``: the training images' own cell diameter when they were rescaled."""
        return PostProcessing(str(self.instances), self.min_size, self.cellprob_threshold,
                              self.flow_threshold, self.cell_diameter, train_diameter)  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> SegTrainConfig:
        refuse_unknown(cls, data, source)
        data = apply_preset({"preset": "auto", **data}, source, cls.__dataclass_fields__)
        crop = data.get("crop")
        if isinstance(crop, int | str) and not isinstance(crop, bool):
            data["crop"] = parse_size(str(crop))  # "crop: 256" in YAML means 256x256
        for key in float_options(cls):
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
        step = SegmenterBase.size_multiple  # the backbones' own rule, not a copy of it
        if len(crop) != 2 or not all(c >= step and c % step == 0 for c in crop):
            raise bad(f"crop must be two sizes divisible by {step} (the networks halve it "
                      f"{step.bit_length() - 1} times), got {crop}")  # fmt: skip
        for name, (low, high) in _RANGES.items():
            value = getattr(self, name, None)
            if value is None:
                continue
            if not (low is None or value >= low) or not (high is None or value <= high):
                span = f"at least {low}" if high is None else f"in [{low}, {high}]"
                raise bad(f"{name} must be {span}, got {value}")
        for name, rule in _RULES.items():
            checks.checked(rule, name, getattr(self, name), source, "option ")
        for name in _POSITIVE:
            value = getattr(self, name, None)
            if value is not None and not value > 0:
                raise bad(f"{name} must be > 0, got {value}")
        for name, choices in CHOICES.items():
            value = getattr(self, name, None)
            if value is not None and value not in choices:
                raise bad(f"{name} must be one of {', '.join(map(str, choices))}, got "
                          f"{value!r}")  # fmt: skip
        for name in ("val_fraction", "test_fraction", "warmup_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise bad(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.extra_fraction is not None and self.extra is None:
            raise bad("extra_fraction needs extra")
        why = self.instances and modes.mode(self.instances).check_classes(self.n_classes)
        if why is not None:
            raise bad(why)
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


#: the largest config file read (a config is a page of ``option: value`` lines)
YAML_MAX_BYTES = 1 << 20


class _PlainYamlLoader(yaml.SafeLoader):
    """YAML without aliases (``*name``): a 1 KB file of nested aliases (a "billion laughs")
    stands for gigabytes once expanded, and an option file has no use for them."""

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(
                f"aliases (*name) are not allowed in a cganseg config (line {mark.line + 1}); "
                "write the value out"
            )
        return super().compose_node(parent, index)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file of ``option: value`` lines (safe and alias-free: no Python objects, no
    expansion), or InputError."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(YAML_MAX_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read config ({exc.strerror or exc})", path) from None
    return yaml_mapping(raw, path)


def yaml_mapping(raw: bytes, source: str | Path | None = None) -> dict[str, Any]:
    """The mapping a YAML document holds (see :func:`read_yaml_mapping`); ``source`` names it
    in the InputError."""
    if len(raw) > YAML_MAX_BYTES:
        raise InputError(f"config is larger than {YAML_MAX_BYTES >> 20} MB; not a config file",
                         source)  # fmt: skip
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=_PlainYamlLoader)  # noqa: S506 - safe
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read config ({reason})", source) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError("config must be a YAML mapping of option: value", source)
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


@dataclass(frozen=True)
class StepShare:
    """A preset value that is a share of the run's ``iterations``, turned into steps when the
    config is made (so ``--iterations`` scales it; config.yaml records the steps)."""

    share: float

    def steps(self, iterations: int) -> int:
        return int(self.share * iterations)

    def __str__(self) -> str:
        return f"{self.share:g} x iterations"


#: ``cganseg train``'s recipe per preset (issue 17). ``paper``: the paper's (every lever off).
#: ``cpu``: the best recipe measured at CPU budgets (benchmarks/value.py, recipe ``cgan-all``;
#: README "Measured results"): the segmenter first trains conventionally for about the CPU time
#: of the joint game (a conventional step costs ~1/9 of a joint step with these levers), the
#: cycle and adversarial weights wait 20% of the steps and ramp up over 30%, 3 extra Id_S
#: updates per step, validation on Seg's moving average, Seg's Adam betas 0.9/0.999, and the
#: perceptual loss on 3 VGG blocks at half resolution.
RECIPES: dict[str, dict[str, Any]] = {
    "cpu": {
        "seg_pretrain": StepShare(9.0),
        "warmup_gen": StepShare(0.2),
        "ramp_steps": StepShare(0.3),
        "seg_extra_updates": 3,
        "seg_ema": 0.99,
        "betas_seg": [0.9, 0.999],
        "perceptual_depth": 3,
        "perceptual_scale": 0.5,
    },
    "paper": {
        "seg_pretrain": 0,
        "warmup_gen": 0,
        "ramp_steps": 0,
        "seg_extra_updates": 0,
        "seg_ema": 0.0,
        "betas_seg": None,
        "perceptual_depth": 5,
        "perceptual_scale": 1.0,
    },
}


def resolve_preset(preset: str, device: str) -> str:
    """``auto``: ``paper`` on a CUDA GPU, ``cpu`` elsewhere (CPU, and Apple's MPS, whose memory
    and speed suit the small networks better); other names as they are."""
    if preset != "auto":
        return preset
    return "paper" if resolve_device(device).type == "cuda" else "cpu"


def apply_preset(
    options: dict[str, Any],
    source: str | Path | None = None,
    fields: Collection[str] | None = None,
) -> dict[str, Any]:
    """``options`` over the values of its ``preset`` (if it names one): the one place presets
    are applied, so the CLI, the Python API, the experiment and config.yaml agree
    (precedence: defaults < preset < config file < command line). ``auto`` is resolved by the
    device (:func:`resolve_preset`) and recorded as resolved; ``fields``: the config's fields
    (``train-seg`` takes a preset's segmenter values only)."""
    preset = options.get("preset")
    if preset is None:
        return dict(options)
    if not isinstance(preset, str) or preset not in CHOICES["preset"]:
        raise InputError(f"unknown preset {preset!r} (use {', '.join(CHOICES['preset'])})",
                         source)  # fmt: skip
    preset = resolve_preset(preset, str(options.get("device", "auto")))
    values = {**PRESETS[preset], **RECIPES[preset]}
    values = {k: v for k, v in values.items() if fields is None or k in fields}
    merged = {**values, **options, "preset": preset}
    if fields is not None:  # a config is being made: shares of the steps become steps
        iterations = merged.get("iterations", fields["iterations"].default)
        merged = {k: v.steps(int(iterations)) if isinstance(v, StepShare) else v
                  for k, v in merged.items()}  # fmt: skip
    return merged


@dataclass
class CGanTrainConfig(SegTrainConfig):
    """cGAN-Seg training (``cganseg train``): the segmenter's options plus Gen, D1, D2 and losses.

    ``seg_to_gen`` says how the segmenter's output reaches D2 and the image cycle: ``argmax``
    (default; the public reference code: hard one-hot, no gradient to Seg), ``soft`` (softmax
    probabilities, differentiable) or ``straight-through`` (hard one-hot forward, softmax
    gradient). In our one measurement (DSB2018, 300 CPU steps) argmax gave validation F1@0.5
    0.638 and soft 0.583; see the README.
    """

    cli_exclude: ClassVar[tuple[str, ...]] = ("extra",)  # cGAN-Seg trains on real pairs only

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
    # the reference code's BatchNorm running statistics, half from generated images (Seg sees
    # Gen(mask) in train mode); off: they come from real images only (issue 15)
    bn_stats_from_generated: bool = False
    # also compute, train and log what cannot change any weight: D2 and D2_S under argmax, a
    # cycle of weight 0 (diagnostics; costs time)
    log_unused_terms: bool = False
    # --- recipe levers (issue 17); these defaults are the paper's recipe
    # start Seg from a trained segmenter (a run folder or checkpoint of the same architecture)
    init_seg: str | None = None
    # or first train it conventionally for N steps (train-seg's recipe, in RUN/seg_pretrain/;
    # training/pretrain.py), then start Seg from that
    seg_pretrain: int = 0
    # the first N steps train Gen on Id_G and Seg on Id_S alone (the discriminators still learn)
    warmup_gen: int = 0
    # then Rec_S, Rec_G, D1_G and D2_S rise linearly from 0 to their Eq. 16 weights over N steps
    ramp_steps: int = 0
    # extra Id_S-only updates of Seg per cGAN step, each on a further batch of real crops
    seg_extra_updates: int = 0
    # exponential moving average of Seg's weights (decay; 0: off): what validation, best.pt
    # and the test scores use
    seg_ema: float = 0.0
    # Adam betas per network (None: ``betas``)
    betas_seg: list[float] | None = None
    betas_gen: list[float] | None = None
    betas_disc: list[float] | None = None
    # a cheaper perceptual loss: the first N VGG blocks (5: all, the paper), on images resized
    # by this factor
    perceptual_depth: int = 5
    perceptual_scale: float = 1.0

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> CGanTrainConfig:
        if data.get("init_seg") and "seg_pretrain" not in data:
            data = {**data, "seg_pretrain": 0}  # the given segmenter replaces the preset's start
        return cast(CGanTrainConfig, super().from_dict(data, source))

    def loss_weights(self) -> LossWeights:
        return LossWeights(
            self.w_adv_g, self.w_adv_s, self.w_rec_g, self.w_rec_s, self.w_id_g, self.w_id_s,
            self.w_disc,
        )

    def check(self, source: str | Path | None = None) -> None:
        super().check(source)
        for name in ("betas", "betas_seg", "betas_gen", "betas_disc"):
            betas = getattr(self, name)
            if betas is not None and (len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas)):
                raise InputError(f"option {name} must be two numbers in [0, 1), got {betas}",
                                 source)  # fmt: skip
        if self.extra is not None:
            raise InputError(
                "extra pairs are for train-seg; cGAN-Seg training uses real pairs", source
            )
        if self.init_seg and self.seg_pretrain:
            raise InputError("options init_seg and seg_pretrain both start the segmenter: give "
                             "one of them", source)  # fmt: skip
        if self.weight_decay:
            raise InputError(
                "option weight_decay is for train-seg; cGAN-Seg training does not use it", source
            )



# --------------------------------------------------------------------- the command line
@dataclass(frozen=True)
class CliOption:
    """How an option appears on the command line; its type, choices and default come from the
    dataclass, so the CLI cannot drift from the config."""

    help: str
    group: str = "training"
    flag: str | None = None  # default: --the-field-name
    parse: Callable[[str], dict[str, Any]] | None = None  # text -> config entries
    metavar: str | None = None
    default_text: str | None = None  # what the default means, where the value does not say


def _parse_crop(text: str) -> dict[str, Any]:
    return {"crop": parse_size(text)}


def _parse_extra(text: str) -> dict[str, Any]:
    folder, fraction = split_extra(text)
    return {"extra": folder} if fraction is None else {"extra": folder, "extra_fraction": fraction}


def _betas_parser(name: str) -> Callable[[str], dict[str, Any]]:
    def parse(text: str) -> dict[str, Any]:
        try:
            return {name: [float(b) for b in text.split(",")]}
        except ValueError:
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} must look like 0.5,0.999, got {text!r}") from None

    return parse


#: the options ``train-seg`` and ``train`` offer, by config field; a field not here is set in a
#: --config YAML file only (e.g. weight_decay, warmup_fraction, the loss weights)
CLI: dict[str, CliOption] = {
    "data": CliOption("data-set folder (DIR/images + DIR/masks, or Cellpose-style)", "run"),
    "out": CliOption("run folder to create (or to continue with --resume)", "run"),
    "preset": CliOption(
        "network and crop sizes for the hardware: cpu (128x128 crops, width 16, batch 4), "
        "paper (512x512 crops, the backbone's width, batch 4: for GPUs), auto (paper on a CUDA "
        "GPU, else cpu; the run records which)",
        "run",
        default_text="auto",
    ),
    "model": CliOption("segmentation backbone", "segmenter"),
    "width": CliOption("base channels", "segmenter", default_text="the backbone's own"),
    "n_classes": CliOption(
        "2: background/cell (paper); 3: +boundary, separates touching cells",
        "segmenter",
        flag="--classes",
    ),
    "instances": CliOption(
        "how cells are separated: watershed (3 classes), components (connected components, "
        "the paper with --classes 2), flows (Cellpose's flows; cganseg.instances)",
        "segmenter",
        default_text="flows with 3 classes, components with 2 (train and train-seg alike)",
    ),
    "cellprob_threshold": CliOption(
        "flows: cell-probability logit above which a pixel is in a cell", "segmenter"
    ),
    "flow_threshold": CliOption(
        "flows: largest flow error of a kept cell (0: keep all)", "segmenter"
    ),
    "tune_thresholds": CliOption(
        "flows: keep the two thresholds as given instead of choosing them on the validation "
        "images after training",
        "segmenter",
        flag="--no-tune-thresholds",
    ),
    "cell_diameter": CliOption(
        "rescale every image so its cells are this many pixels across (Cellpose: 30 for "
        "cells, 17 for nuclei); the training cells' own diameter is measured and kept for "
        "segment",
        "segmenter",
        metavar="PX",
        default_text="no rescaling",
    ),
    "crop": CliOption("training crop, e.g. 256 or 256x320", parse=_parse_crop),
    "batch_size": CliOption("crops per step (the global batch under torchrun)"),
    "iterations": CliOption("training steps"),
    "lr": CliOption("learning rate (of the segmenter)"),
    "schedule": CliOption("learning-rate schedule after the warm-up"),
    "p_vanilla": CliOption("probability of conventional augmentation"),
    "val_every": CliOption("validate and checkpoint every N steps"),
    "patience": CliOption("early stopping after N validations without improvement (0: off)"),
    "seed": CliOption("seed of the split, the weights and the data stream"),
    "device": CliOption("auto (CUDA, else Apple's MPS, else CPU), cpu, cuda, cuda:N or mps"),
    "amp": CliOption("disable mixed precision on CUDA", flag="--no-amp"),
    "amp_dtype": CliOption("mixed-precision type on CUDA"),
    "num_workers": CliOption("data-loading processes", flag="--workers"),
    "on_divergence": CliOption(
        "NaN/inf or an exploding loss: stop, or go back to last.pt with the learning rates "
        "halved (at most --max-rollbacks times)"
    ),
    "max_rollbacks": CliOption("rollbacks allowed"),
    "max_loss": CliOption(
        "a loss above this also counts as divergence",
        default_text="10^4 times the first step's loss",
    ),
    "channels_last": CliOption(
        "NHWC memory layout (can help CUDA convolutions with AMP)", "speed"
    ),
    "compile": CliOption(
        "torch.compile the training passes (the first steps compile; needs a C++ compiler on "
        "CPU)",
        "speed",
    ),
    "fused_adam": CliOption("Adam without its fused kernels", "speed", flag="--no-fused-adam"),
    "n_train": CliOption(
        "use only N training pairs (e.g. the paper's 200)", "data", default_text="all"
    ),
    "val_fraction": CliOption("share of the pairs held out for validation", "data"),
    "test_fraction": CliOption("share of the pairs held out for testing", "data"),
    "split_file": CliOption("JSON split file (train/val/test names)", "data", flag="--split"),
    "layout": CliOption("data-set layout", "data"),
    "mask_suffix": CliOption("Cellpose layout: mask file suffix", "data"),
    "image_suffix": CliOption("Cellpose layout: image file suffix", "data"),
    "channels": CliOption("'gray' or channel indices like 0,1,2", "data", default_text="all"),
    "min_size": CliOption("smallest object kept, in pixels", "data"),
    "extra": CliOption(
        "extra (e.g. synthetic) pairs mixed into every batch; FRACTION is their share of each "
        "batch",
        "data",
        parse=_parse_extra,
        metavar="DIR[:FRACTION]",
        default_text="none; FRACTION: their share of all pairs",
    ),
    "gen_width": CliOption("generator base channels", "cGAN-Seg"),
    "style_dim": CliOption("latent/style vector size", "cGAN-Seg"),
    "disc_width": CliOption("discriminator base channels", "cGAN-Seg"),
    "disc_layers": CliOption("PatchGAN downsampling layers", "cGAN-Seg"),
    "lr_gen": CliOption("learning rate of the generator", "cGAN-Seg"),
    "lr_disc": CliOption("learning rate of the discriminators", "cGAN-Seg"),
    "betas": CliOption(
        "Adam betas, e.g. 0.5,0.999 (CycleGAN) or 0.9,0.999",
        "cGAN-Seg",
        parse=_betas_parser("betas"),
    ),
    "perceptual": CliOption(
        "perceptual-loss network (vgg19: ImageNet VGG19 as in the paper)", "cGAN-Seg"
    ),
    "perceptual_weights": CliOption("weights file of the perceptual network", "cGAN-Seg"),
    "p_diff": CliOption("probability of DiffAugment", "cGAN-Seg"),
    "seg_to_gen": CliOption(
        "how Seg's output reaches D2 and Gen (argmax: the reference code, no gradient)",
        "cGAN-Seg",
    ),
    "pool_size": CliOption("history pool of fakes (0: off)", "cGAN-Seg"),
    "sample_every": CliOption("also write a sample grid every N steps", "cGAN-Seg"),
    "init_seg": CliOption(
        "start the segmenter from a trained one: a run folder or checkpoint of the same "
        "architecture (e.g. a train-seg run)",
        "cGAN-Seg recipe",
        metavar="RUN",
        default_text="random weights",
    ),
    "seg_pretrain": CliOption(
        "first train the segmenter conventionally for N steps (train-seg's recipe, kept in "
        "RUN/seg_pretrain/), then start the joint game from it",
        "cGAN-Seg recipe",
        metavar="N",
    ),
    "warmup_gen": CliOption(
        "first N steps: Gen on Id_G and Seg on Id_S alone", "cGAN-Seg recipe", metavar="N"
    ),
    "ramp_steps": CliOption(
        "then the cycle and adversarial weights rise from 0 over N steps",
        "cGAN-Seg recipe",
        metavar="N",
    ),
    "seg_extra_updates": CliOption(
        "extra Id_S-only segmenter updates per step, each on another real batch",
        "cGAN-Seg recipe",
        metavar="N",
    ),
    "seg_ema": CliOption(
        "moving-average decay of the segmenter's weights that validation and best.pt use "
        "(e.g. 0.999; 0: off)",
        "cGAN-Seg recipe",
        metavar="DECAY",
    ),
    "betas_seg": CliOption(
        "Adam betas of the segmenter", "cGAN-Seg recipe", parse=_betas_parser("betas_seg"),
        default_text="--betas",
    ),
    "betas_gen": CliOption(
        "Adam betas of the generator", "cGAN-Seg recipe", parse=_betas_parser("betas_gen"),
        default_text="--betas",
    ),
    "betas_disc": CliOption(
        "Adam betas of the discriminators", "cGAN-Seg recipe",
        parse=_betas_parser("betas_disc"), default_text="--betas",
    ),
    "perceptual_depth": CliOption(
        "VGG blocks the perceptual loss uses (5: all, as the paper)", "cGAN-Seg recipe",
        metavar="N",
    ),
    "perceptual_scale": CliOption(
        "resize images by this factor before the perceptual network (cheaper)",
        "cGAN-Seg recipe",
        metavar="FACTOR",
    ),
}
_GROUP_TITLES = {"speed": "speed (results change by float rounding at most)"}


def _field_type(annotation: str) -> type:
    base = annotation.split("|")[0].strip()
    return {"int": int, "float": float}.get(base, str)


def _shown(name: str, value: Any, spec: CliOption) -> str:
    if isinstance(value, StepShare):
        return str(value)
    if value is None and spec.default_text is not None:
        return spec.default_text
    if isinstance(value, list):
        return "x".join(map(str, value)) if name == "crop" else ",".join(map(str, value))
    return "none" if value is None or value == "" else str(value)


def _default_text(f: dataclasses.Field, spec: CliOption) -> str:
    for table in (PRESETS, RECIPES):
        if f.name in table["cpu"]:  # what --preset (auto by default) sets
            return "by --preset: " + ", ".join(f"{name} {_shown(f.name, values[f.name], spec)}"
                                               for name, values in table.items())  # fmt: skip
    if spec.default_text is not None:
        return spec.default_text
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return _shown(f.name, value, spec)


def add_cli_options(parser: Any, cls: type[SegTrainConfig]) -> None:
    """Add an argparse option for every :data:`CLI` field of ``cls`` (default None: an option
    not given is not in the result of :func:`cli_options`)."""
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        spec = CLI.get(f.name)
        if spec is None or f.name in cls.cli_exclude:
            continue
        if spec.group not in groups:
            title = _GROUP_TITLES.get(spec.group, spec.group)
            groups[spec.group] = parser if spec.group == "run" else parser.add_argument_group(title)
        flag = spec.flag or "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": spec.help}
        if str(f.type) == "bool":
            kwargs["action"] = "store_false" if f.default else "store_true"
        else:
            kwargs["type"] = str if spec.parse else _field_type(str(f.type))
            if f.name in CHOICES:
                kwargs["choices"] = CHOICES[f.name]
            else:
                kwargs["metavar"] = spec.metavar or flag.lstrip("-").replace("-", "_").upper()
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if not required:
                kwargs["help"] += f" (default: {_default_text(f, spec)})"
        groups[spec.group].add_argument(flag, **kwargs)


def cli_options(values: dict[str, Any], cls: type[SegTrainConfig]) -> dict[str, Any]:
    """The config entries the command line gave (parsed argparse ``values``)."""
    given: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        value = values.get(f.name)
        if value is None or f.name not in CLI:
            continue
        spec = CLI[f.name]
        given.update(spec.parse(value) if spec.parse else {f.name: value})
    return given
