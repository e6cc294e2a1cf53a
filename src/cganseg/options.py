"""Options of a training run (``cganseg train-seg`` and ``cganseg train``), saved as
``config.yaml``.

Every option is recorded with the run, so a run folder says how it was made and ``--resume`` can
continue it with the same settings. Each option is declared once, as a field with its
:class:`~cganseg.optionspec.Spec` (help, flag, group, choices, rule, path, resumable, preset
values): the command line, config files, presets and resume read them from there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import yaml

from cganseg import checks
from cganseg import instances as modes
from cganseg.checks import Number
from cganseg.data.flows import CELLPROB_THRESHOLD, FLOW_THRESHOLD
from cganseg.data.splits import DEFAULT_VAL_FRACTION, MIN_PAIRS_TO_VALIDATE
from cganseg.errors import InputError
from cganseg.instances.postprocessing import PostProcessing
from cganseg.losses.cgan_objective import LossWeights
from cganseg.models.base import SegmenterBase
from cganseg.models.registry import SEGMENTERS
from cganseg.optionspec import check_fields, float_fields, option, preset_values, specs
from cganseg.runtime.atomic import write_text
from cganseg.runtime.device import resolve_device

#: where ``cganseg train --seg-pretrain N`` keeps the conventional run that starts its segmenter
SEG_PRETRAIN_DIR = "seg_pretrain"
#: ``--preset``: CPU-sized networks and the recipe measured best at CPU budgets, or the paper's
#: full-size networks and recipe for GPUs; ``auto`` picks by the device (:func:`resolve_preset`)
PRESET_NAMES = ("auto", "cpu", "paper")

# the --help groups
_RUN, _SEG, _TRAIN, _DATA = None, "segmenter", "training", "data"
_SPEED = "speed (results change by float rounding at most)"
_CGAN, _RECIPE = "cGAN-Seg", "cGAN-Seg recipe"
#: rules shared by many options
_COUNT = Number(1, integer=True)  # at least one
_STEPS = Number(0, integer=True)  # none or more
_SHARE = Number(0, 1)
_FRACTION = Number(0, 1, below=True)
_RATE = Number(0, above=True)
_WEIGHT = Number(0)


@dataclass(frozen=True)
class StepShare:
    """A preset value that is a share of the run's ``iterations``, turned into steps when the
    config is made (so ``--iterations`` scales it; config.yaml records the steps)."""

    share: float

    def steps(self, iterations: int) -> int:
        return int(self.share * iterations)

    def __str__(self) -> str:
        return f"{self.share:g} x iterations"


#: train-seg's defaults when it fine-tunes (``--init``): a learning rate low enough to keep what
#: the start knows and few steps, as a few images need (benchmarks/fewshot.py measured them;
#: README "Few annotations"); given options and the config file still win
FINE_TUNING: dict[str, Any] = {"lr": 3e-4, "iterations": 500}


def _parse_crop(text: str) -> dict[str, Any]:
    return {"crop": parse_size(text)}


def _parse_extra(text: str) -> dict[str, Any]:
    folder, fraction = split_extra(text)
    return {"extra": folder} if fraction is None else {"extra": folder, "extra_fraction": fraction}


def _betas_parser(name: str):
    def parse(text: str) -> dict[str, Any]:
        try:
            return {name: [float(b) for b in text.split(",")]}
        except ValueError:
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} must look like 0.5,0.999, got {text!r}") from None

    return parse


@dataclass
class SegTrainConfig:
    """Conventional training of a segmenter on annotated images: the recommended command (and
    the paper's baseline, scenarios B with N pairs and C with all pairs)."""

    #: options of the dataclass that the command line does not offer (config files only)
    cli_exclude: ClassVar[tuple[str, ...]] = ()
    #: the defaults a run that starts from a trained segmenter (``init_seg``) takes instead
    fine_tuning: ClassVar[dict[str, Any]] = FINE_TUNING

    data: str = option(help="data-set folder (DIR/images + DIR/masks, or Cellpose-style)",
                       path=True)  # fmt: skip
    out: str = option(help="run folder to create (or to continue with --resume)", path=True)
    preset: str | None = option(
        None,
        choices=PRESET_NAMES,
        default_text="auto",
        help="network and crop sizes for the hardware: cpu (128x128 crops, width 16, batch 4), "
        "paper (512x512 crops, the backbone's width, batch 4: for GPUs), auto (paper on a CUDA "
        "GPU, else cpu; the run records which); None in a config file: the fields as they are",
    )
    layout: str = option("auto", group=_DATA, choices=("auto", "folders", "cellpose"),
                         help="data-set layout")  # fmt: skip
    mask_suffix: str = option("_masks", group=_DATA, help="Cellpose layout: mask file suffix")
    image_suffix: str = option("", group=_DATA, help="Cellpose layout: image file suffix")
    channels: str | None = option(None, group=_DATA, default_text="all",
                                  help="'gray' or channel indices like 0,1,2")  # fmt: skip
    model: str = option("unet", group=_SEG, choices=SEGMENTERS, help="segmentation backbone")
    width: int | None = option(None, group=_SEG, rule=_COUNT, presets={"cpu": 16, "paper": None},
                               default_text="the backbone's own", help="base channels")  # fmt: skip
    n_classes: int = option(3, group=_SEG, flag="--classes", choices=(2, 3),
                            help="2: background/cell (paper); 3: +boundary, which the watershed "
                            "mode needs to part touching cells (flows, the default, part them "
                            "by themselves)")  # fmt: skip
    instances: str | None = option(
        None,
        group=_SEG,
        choices=modes.MODES.keys(),  # a live view: a mode registered later is a choice
        default_text="flows with 3 classes, components with 2 (train and train-seg alike)",
        help="how cells are separated: watershed (3 classes), components (connected "
        "components, the paper with --classes 2), flows (Cellpose's flows; cganseg.instances)",
    )
    cellprob_threshold: float = option(
        CELLPROB_THRESHOLD, group=_SEG, rule=checks.CELLPROB_THRESHOLD,
        help="flows: cell-probability logit above which a pixel is in a cell",
    )
    flow_threshold: float = option(FLOW_THRESHOLD, group=_SEG, rule=checks.FLOW_THRESHOLD,
                                   help="flows: largest flow error of a kept cell (0: keep "
                                   "all)")  # fmt: skip
    tune_thresholds: bool = option(
        True, group=_SEG, flag="--no-tune-thresholds",
        help="flows: keep the two thresholds as given instead of choosing them on the "
        "validation images after training (training/tuning.py)",
    )
    cell_diameter: float | None = option(
        None, group=_SEG, rule=checks.CELL_DIAMETER, metavar="PX", default_text="no rescaling",
        help="rescale every image so its cells are this many pixels across (Cellpose: 30 for "
        "cells, 17 for nuclei); the training cells' own diameter is measured and kept for "
        "segment",
    )
    crop: list[int] = option(default_factory=lambda: [256, 256], group=_TRAIN, parse=_parse_crop,
                             presets={"cpu": [128, 128], "paper": [512, 512]},
                             help="training crop, e.g. 256 or 256x320")  # fmt: skip
    batch_size: int = option(8, group=_TRAIN, rule=_COUNT, presets={"cpu": 4, "paper": 4},
                             help="crops per step (the global batch under torchrun)")  # fmt: skip
    iterations: int = option(2000, group=_TRAIN, rule=_COUNT, resumable=True,
                             help="training steps")  # fmt: skip
    lr: float = option(1e-3, group=_TRAIN, rule=_RATE, help="learning rate (of the segmenter)")
    weight_decay: float = option(0.0, cli=False, rule=_WEIGHT)
    warmup_fraction: float = option(0.05, cli=False, rule=_FRACTION)
    schedule: str = option("cosine", group=_TRAIN, choices=("cosine", "constant"),
                           help="learning-rate schedule after the warm-up")  # fmt: skip
    val_every: int = option(100, group=_TRAIN, rule=_COUNT, resumable=True,
                            help="validate and checkpoint every N steps")  # fmt: skip
    patience: int = option(10, group=_TRAIN, rule=_STEPS, resumable=True,
                           help="early stopping after N validations without improvement "
                           "(0: off)")  # fmt: skip
    log_every: int = option(10, cli=False, rule=_COUNT, resumable=True)
    n_train: int | None = option(None, group=_DATA, rule=_COUNT, default_text="all",
                                 help="use only N training pairs (e.g. the paper's 200)")
    val_fraction: float | None = option(
        None, group=_DATA, rule=_FRACTION,
        default_text=f"{DEFAULT_VAL_FRACTION}, none when fewer than {MIN_PAIRS_TO_VALIDATE} pairs",
        help="share of the pairs held out for validation (without validation the last step is "
        "kept and the flow thresholds are not tuned)",
    )
    test_fraction: float = option(0.0, group=_DATA, rule=_FRACTION,
                                  help="share of the pairs held out for testing")
    split_file: str | None = option(None, group=_DATA, flag="--split", path=True,
                                    help="JSON split file (train/val/test names)")
    seed: int = option(0, group=_TRAIN, rule=checks.SEED,
                       help="seed of the split, the weights and the data stream")
    device: str = option("auto", group=_TRAIN, resumable=True,
                         help="auto (CUDA, else Apple's MPS, else CPU), cpu, cuda, cuda:N or mps")
    amp: bool = option(True, group=_TRAIN, flag="--no-amp",
                       help="disable mixed precision (used on CUDA only)")
    amp_dtype: str = option("fp16", group=_TRAIN, choices=("fp16", "bf16"),
                            help="mixed-precision type on CUDA (bf16: Ampere and newer; "
                            "float32's range, no loss scaling)")  # fmt: skip
    # NaN/inf in losses or weights: "stop", or "rollback" to last.pt with the learning rates
    # times rollback_lr_factor (compounding), at most max_rollbacks times
    on_divergence: str = option(
        "stop", group=_TRAIN, choices=("stop", "rollback"), resumable=True,
        help="NaN/inf or an exploding loss: stop, or go back to last.pt with the learning "
        "rates halved (at most --max-rollbacks times)",
    )
    rollback_lr_factor: float = option(0.5, cli=False, rule=Number(0, 1, above=True, below=True))
    max_rollbacks: int = option(3, group=_TRAIN, rule=_STEPS, resumable=True,
                                help="rollbacks allowed")  # fmt: skip
    max_loss: float | None = option(None, group=_TRAIN, rule=_RATE, resumable=True,
                                    default_text="10^4 times the first step's loss",
                                    help="a loss above this also counts as divergence")
    fused_adam: bool = option(True, group=_SPEED, flag="--no-fused-adam", resumable=True,
                              help="Adam without its fused kernels")  # fmt: skip
    channels_last: bool = option(False, group=_SPEED, resumable=True,
                                 help="NHWC memory layout (can help CUDA convolutions with AMP)")
    compile: bool = option(False, group=_SPEED, resumable=True,
                           help="torch.compile the training passes (the first steps compile; "
                           "needs a C++ compiler on CPU)")  # fmt: skip
    num_workers: int = option(2, group=_TRAIN, flag="--workers", rule=_STEPS, resumable=True,
                              help="data-loading processes")  # fmt: skip
    p_vanilla: float = option(0.5, group=_TRAIN, rule=_SHARE,
                              help="probability of conventional augmentation")
    min_size: int = option(15, group=_DATA, rule=checks.MIN_SIZE,
                           help="smallest object kept, in pixels")
    tile_size: int = option(512, cli=False, rule=checks.TILE_SIZE)
    extra: str | None = option(
        None, group=_DATA, parse=_parse_extra, metavar="DIR[:FRACTION]", path=True,
        default_text="none; FRACTION: their share of all pairs",
        help="extra (e.g. synthetic) pairs mixed into every batch, never validated or tested "
        "on; FRACTION is their share of each batch",
    )
    extra_fraction: float | None = option(None, cli=False, rule=_SHARE)
    init_seg: str | None = option(
        None, group=_SEG, flag="--init", aliases=("--init-seg",), metavar="MODEL",
        default_text="random weights",
        help="start the segmenter from a trained one (fine-tuning): a shipped model (cganseg "
        "models), a run folder or a checkpoint; backbone, width, classes, instance mode, "
        "channels and cell diameter are then the start's, and train-seg's defaults become "
        "fine-tuning's (FINE_TUNING)",
    )

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
        if data.get("init_seg"):
            data = {**cls.fine_tuning, **data}
        data = apply_preset({"preset": "auto", **data}, source, cls)
        crop = data.get("crop")
        if isinstance(crop, int | str) and not isinstance(crop, bool):
            data["crop"] = parse_size(str(crop))  # "crop: 256" in YAML means 256x256
        for key in float_fields(cls):
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
        """Refuse wrong types, values outside their rules or choices, and options that do not
        go together, now, before a run folder is written."""

        def bad(message: str) -> InputError:
            return InputError(f"option {message}", source)

        check_fields(self, source)
        crop = self.crop
        step = SegmenterBase.size_multiple  # the backbones' own rule, not a copy of it
        if len(crop) != 2 or not all(c >= step and c % step == 0 for c in crop):
            raise bad(f"crop must be two sizes divisible by {step} (the networks halve it "
                      f"{step.bit_length() - 1} times), got {crop}")  # fmt: skip
        if self.extra_fraction is not None and self.extra is None:
            raise bad("extra_fraction needs extra")
        why = self.instances and modes.mode(self.instances).check_classes(self.n_classes)
        if why is not None:
            raise bad(why)
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




def resolve_preset(preset: str, device: str) -> str:
    """``auto``: ``paper`` on a CUDA GPU, ``cpu`` elsewhere (CPU, and Apple's MPS, whose memory
    and speed suit the small networks better); other names as they are."""
    if preset != "auto":
        return preset
    return "paper" if resolve_device(device).type == "cuda" else "cpu"


def apply_preset(options: dict[str, Any], source: str | Path | None = None,
                 cls: type | None = None) -> dict[str, Any]:  # fmt: skip
    """``options`` over the values its ``preset`` (if it names one) gives the fields of ``cls``
    (default :class:`CGanTrainConfig`, every field a preset sets): the one place presets are
    applied, so the CLI, the Python API, the experiment and config.yaml agree (precedence:
    defaults < preset < config file < command line). ``auto`` is resolved by the device
    (:func:`resolve_preset`) and recorded as resolved; shares of the steps become steps."""
    preset = options.get("preset")
    if preset is None:
        return dict(options)
    if not isinstance(preset, str) or preset not in PRESET_NAMES:
        raise InputError(f"unknown preset {preset!r} (use {', '.join(PRESET_NAMES)})", source)
    cls = CGanTrainConfig if cls is None else cls
    preset = resolve_preset(preset, str(options.get("device", "auto")))
    merged = {**preset_values(cls, preset), **options, "preset": preset}
    iterations = int(merged.get("iterations", specs(cls)["iterations"][0].default))
    return {k: v.steps(iterations) if isinstance(v, StepShare) else v for k, v in merged.items()}


def preset_recipe(preset: str) -> dict[str, Any]:
    """The ``cGAN-Seg recipe`` levers ``--preset preset`` sets (shares of the steps as
    :class:`StepShare`)."""
    return preset_values(CGanTrainConfig, preset, group=_RECIPE)


def preset_sizes(preset: str) -> dict[str, Any]:
    """The network, crop and batch sizes ``--preset preset`` sets (every preset value but the
    recipe's and ``train``'s steps)."""
    recipe = preset_recipe(preset)
    return {k: v for k, v in preset_values(CGanTrainConfig, preset).items()
            if k not in recipe and k != "iterations"}  # fmt: skip


def _with_loss_weights(cls: type) -> type:
    """Give config class ``cls`` one option ``w_NAME`` per field of
    :class:`~cganseg.losses.cgan_objective.LossWeights` (Eq. 16-17), with its default: a
    weight is declared once, there (config files only; they are recorded in config.yaml)."""
    for f in dataclasses.fields(LossWeights):
        cls.__annotations__["w_" + f.name] = "float"
        setattr(cls, "w_" + f.name, option(f.default, cli=False, rule=_WEIGHT,
                                           help=f"weight of {f.metadata['term']}"))  # fmt: skip
    return cls


def redefault(cls: type, name: str, default: Any) -> Any:
    """Field ``name`` of config ``cls`` with another default (a subclass's), its spec kept."""
    parent = cls.__dataclass_fields__[name]
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=parent.metadata)
    return dataclasses.field(default=default, metadata=parent.metadata)


@dataclass
@_with_loss_weights  # w_adv_g .. w_disc: Eq. 16-17's weights, declared in LossWeights
class CGanTrainConfig(SegTrainConfig):
    """cGAN-Seg training (``cganseg train``): the segmenter's options plus Gen, D1, D2 and losses.

    ``seg_to_gen`` says how the segmenter's output reaches D2 and the image cycle: ``argmax``
    (default; the public reference code: hard one-hot, no gradient to Seg), ``soft`` (softmax
    probabilities, differentiable) or ``straight-through`` (hard one-hot forward, softmax
    gradient). In our one measurement (DSB2018, 300 CPU steps) argmax gave validation F1@0.5
    0.638 and soft 0.583; see the README.

    The ``cGAN-Seg recipe`` options (issue 17) default to the paper's recipe (every lever off);
    ``--preset cpu`` sets the best recipe measured at CPU budgets (benchmarks/value.py, recipe
    ``cgan-all``; README "Measured results"): the segmenter first trains conventionally for about
    the CPU time of the joint game (a conventional step costs ~1/9 of a joint step with these
    levers), the cycle and adversarial weights wait 20% of the steps and ramp up over 30%, 3 extra
    Id_S updates per step, validation on Seg's moving average, Seg's Adam betas 0.9/0.999, and the
    perceptual loss on 3 VGG blocks at half resolution.
    """

    cli_exclude: ClassVar[tuple[str, ...]] = ("extra",)  # cGAN-Seg trains on real pairs only
    fine_tuning: ClassVar[dict[str, Any]] = {}  # the joint game keeps its own recipe

    # a bare `train` on a CPU: 300 joint steps after 9 x 300 conventional ones, 35 CPU-minutes
    # (benchmarks/results/bare_train_time.json); 2000 joint steps were a day
    iterations: int = option(2000, group=_TRAIN, rule=_COUNT, resumable=True,
                             presets={"cpu": 300, "paper": 2000},
                             help="cGAN-Seg steps (default: by --preset: cpu 300, paper 2000)")
    lr: float = redefault(SegTrainConfig, "lr", 2e-4)
    lr_gen: float = option(2e-4, group=_CGAN, rule=_RATE, help="learning rate of the generator")
    lr_disc: float = option(2e-4, group=_CGAN, rule=_RATE,
                            help="learning rate of the discriminators")  # fmt: skip
    betas: list[float] = option(default_factory=lambda: [0.5, 0.999], group=_CGAN,
                                parse=_betas_parser("betas"),
                                help="Adam betas, e.g. 0.5,0.999 (CycleGAN) or 0.9,0.999")
    gen_width: int = option(32, group=_CGAN, rule=_COUNT, presets={"cpu": 16, "paper": 64},
                            help="generator base channels")  # fmt: skip
    style_dim: int = option(256, group=_CGAN, rule=_COUNT, presets={"cpu": 128, "paper": 256},
                            help="latent/style vector size")  # fmt: skip
    n_mapping: int = option(8, cli=False, rule=_COUNT, presets={"cpu": 4, "paper": 8})
    mix_prob: float = option(0.9, cli=False, rule=_SHARE)
    disc_width: int = option(64, group=_CGAN, rule=_COUNT, presets={"cpu": 32, "paper": 64},
                             help="discriminator base channels")  # fmt: skip
    disc_layers: int = option(3, group=_CGAN, rule=_COUNT, help="PatchGAN downsampling layers")
    disc_attention: bool = option(True, cli=False)
    perceptual: str = option("vgg19", group=_CGAN, choices=("vgg19", "hed-vgg16", "none"),
                             help="perceptual-loss network (vgg19: ImageNet VGG19 as in the "
                             "paper)")  # fmt: skip
    perceptual_weights: str | None = option(None, group=_CGAN,
                                            help="weights file of the perceptual network")
    p_diff: float = option(0.6, group=_CGAN, rule=_SHARE, help="probability of DiffAugment")
    seg_to_gen: str = option("argmax", group=_CGAN, choices=("soft", "straight-through", "argmax"),
                             help="how Seg's output reaches D2 and Gen (argmax: the reference "
                             "code, no gradient)")  # fmt: skip
    pool_size: int = option(0, group=_CGAN, rule=_STEPS, help="history pool of fakes (0: off)")
    sample_every: int = option(100, group=_CGAN, rule=_STEPS, resumable=True,
                               help="also write a sample grid every N steps")  # fmt: skip
    val_fid: bool = option(False, group=_CGAN,
                           help="at each validation also score the generator: FID and KID of "
                           "its images of the validation masks against the real images "
                           "(metrics.csv val_fid, val_kid; needs `cganseg fetch-weights "
                           "fid-inception`)")  # fmt: skip
    # the reference code's BatchNorm running statistics, half from generated images (Seg sees
    # Gen(mask) in train mode); off: they come from real images only (issue 15)
    bn_stats_from_generated: bool = option(False, cli=False)
    # also compute, train and log what cannot change any weight: D2 and D2_S under argmax, a
    # cycle of weight 0 (diagnostics; costs time)
    log_unused_terms: bool = option(False, cli=False)
    seg_pretrain: int = option(
        0, group=_RECIPE, metavar="N", rule=_STEPS,
        presets={"cpu": StepShare(9.0), "paper": 0},
        help="first train the segmenter conventionally for N steps (train-seg's recipe, kept "
        "in RUN/seg_pretrain/; training/pretrain.py), then start the joint game from it",
    )
    warmup_gen: int = option(0, group=_RECIPE, metavar="N", rule=_STEPS,
                             presets={"cpu": StepShare(0.2), "paper": 0},
                             help="first N steps: Gen on Id_G and Seg on Id_S alone (the "
                             "discriminators still learn)")  # fmt: skip
    ramp_steps: int = option(0, group=_RECIPE, metavar="N", rule=_STEPS,
                             presets={"cpu": StepShare(0.3), "paper": 0},
                             help="then Rec_S, Rec_G, D1_G and D2_S rise from 0 to their Eq. 16 "
                             "weights over N steps")  # fmt: skip
    seg_extra_updates: int = option(0, group=_RECIPE, metavar="N", rule=_STEPS,
                                    presets={"cpu": 3, "paper": 0},
                                    help="extra Id_S-only segmenter updates per step, each on "
                                    "another real batch")  # fmt: skip
    seg_ema: float = option(
        0.0, group=_RECIPE, metavar="DECAY", rule=Number(0, 0.99999),
        presets={"cpu": 0.99, "paper": 0.0},
        help="moving-average decay of the segmenter's weights that validation, best.pt and the "
        "test scores use (e.g. 0.999; 0: off)",
    )
    gen_ema: float = option(
        0.0, group=_RECIPE, metavar="DECAY", rule=Number(0, 0.99999),
        help="moving-average decay of the generator's weights that its samples, --val-fid, "
        "best.pt and last.pt's generator (what `generate` uses) hold (e.g. 0.999; 0: off)",
    )
    betas_seg: list[float] | None = option(None, group=_RECIPE, parse=_betas_parser("betas_seg"),
                                           presets={"cpu": [0.9, 0.999], "paper": None},
                                           default_text="--betas",
                                           help="Adam betas of the segmenter")  # fmt: skip
    betas_gen: list[float] | None = option(None, group=_RECIPE, parse=_betas_parser("betas_gen"),
                                           default_text="--betas",
                                           help="Adam betas of the generator")  # fmt: skip
    betas_disc: list[float] | None = option(None, group=_RECIPE,
                                            parse=_betas_parser("betas_disc"),
                                            default_text="--betas",
                                            help="Adam betas of the discriminators")
    perceptual_depth: int = option(5, group=_RECIPE, metavar="N", rule=Number(1, 5, integer=True),
                                   presets={"cpu": 3, "paper": 5},
                                   help="VGG blocks the perceptual loss uses (5: all, as the "
                                   "paper)")  # fmt: skip
    perceptual_scale: float = option(1.0, group=_RECIPE, metavar="FACTOR",
                                     rule=Number(0.125, 1), presets={"cpu": 0.5, "paper": 1.0},
                                     help="resize images by this factor before the perceptual "
                                     "network (cheaper)")  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> CGanTrainConfig:
        if data.get("init_seg") and "seg_pretrain" not in data:
            data = {**data, "seg_pretrain": 0}  # the given segmenter replaces the preset's start
        return cast(CGanTrainConfig, super().from_dict(data, source))

    def loss_weights(self) -> LossWeights:
        """Eq. 16-17's weights from the ``w_`` options, matched by name."""
        return LossWeights(**{f.name: getattr(self, "w_" + f.name)
                              for f in dataclasses.fields(LossWeights)})  # fmt: skip

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
