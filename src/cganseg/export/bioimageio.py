"""A trained segmenter as a BioImage Model Zoo package (bioimageio.spec model format 0.5).

Fiji (deepImageJ), QuPath, ilastik and bioimageio.core run such a zip without cganseg: the
network (TorchScript, and the PyTorch state dict with its architecture) and the processing the
spec can express. Pre-processing is ours, as spec operations: per image and channel, the 1st and
99.8th percentiles map to [0, 1] (``scale_range``), then to [-1, 1] (``scale_linear``) and are
clipped (``clip``), which is :func:`cganseg.data.normalize.normalize_percentile`. The network ends
in its probability head (:class:`cganseg.models.exported.ProbabilityNet`), so the output is what
every consumer can show. What the spec cannot express, turning that output into cells (the
watershed on the boundary class, connected components, or following Cellpose flows) and cell-size
rescaling, is written in the package's documentation with the run's settings.

``bioimageio.spec`` and ``bioimageio.core`` are the optional extra ``cganseg[bioimageio]``; the
package is written with the former and checked with the latter's model test before it is kept.
"""

from __future__ import annotations

import getpass
import importlib.util
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cganseg import __version__, pretrained
from cganseg.checkpoint import resolve_checkpoint
from cganseg.data.folders import find_pairs
from cganseg.data.io import read_image, write_png
from cganseg.data.normalize import DEFAULT_PERCENTILES, normalize_percentile
from cganseg.data.splits import load_split
from cganseg.errors import InputError
from cganseg.inference.segment import Segmenter, load_segmenter
from cganseg.models.base import SegmenterBase
from cganseg.models.exported import ProbabilityNet
from cganseg.options import YAML_MAX_BYTES, read_yaml_mapping, yaml_mapping
from cganseg.reports.overlays import overlay_labels
from cganseg.runtime.atomic import atomic_path
from cganseg.runtime.interrupt import check

INSTALL = "install it with: pip install 'cganseg[bioimageio]'"
#: the paper this method comes from (iScience 27, 109740)
PAPER_DOI = "10.1016/j.isci.2024.109740"
PAPER = (
    "Zargari A., Topacio B.R., Mashhadi N., Shariati S.A. Enhanced cell segmentation with limited "
    "training datasets using cycle generative adversarial networks. iScience 27, 109740 (2024)"
)
#: what a stop asked for during the export says
STOPPED = "stopped before the package was complete; nothing was written"
#: the test image: a centre crop of at most this size (multiples of the size rule)
TEST_SIZE = 256
#: the smallest input a consumer may send (sides: this plus multiples of the size rule)
MIN_SIZE = 2 * SegmenterBase.size_multiple


def available() -> bool:
    """Whether bioimageio.spec and bioimageio.core are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("bioimageio.spec",
                                                                 "bioimageio.core"))  # fmt: skip


def is_package(path: Path) -> bool:
    """Whether ``path`` is a package this module wrote, so that exporting again may replace it:
    a zip whose rdf.yaml holds the ``config: cganseg:`` section only cganseg writes (read as
    YAML, not searched as text: a foreign package that merely mentions cganseg is not ours)."""
    try:
        with zipfile.ZipFile(path) as archive:
            if archive.getinfo("rdf.yaml").file_size > YAML_MAX_BYTES:
                return False
            rdf = yaml_mapping(archive.read("rdf.yaml"))
    except (OSError, KeyError, zipfile.BadZipFile, InputError):
        return False
    ours = rdf.get("config", {}).get("cganseg") if isinstance(rdf.get("config"), dict) else None
    packers = rdf.get("packaged_by")
    return (
        isinstance(ours, dict)
        and "version" in ours
        and isinstance(packers, list)
        and any(isinstance(p, dict) and str(p.get("name", "")).startswith("cganseg ")
                for p in packers)
    )  # fmt: skip


def _require() -> None:
    if not available():
        raise InputError(f"exporting to bioimage.io needs bioimageio.spec and .core; {INSTALL}")


#: the weights' license of an exported run of yours, unless told otherwise
DEFAULT_LICENSE = "CC-BY-4.0"


def default_sample(checkpoint: Path) -> Path:
    """An image like the training images: a shipped model's bundled sample, else the first test
    (else validation, else training) image of the run, found through its config.yaml and
    split.json."""
    card = pretrained.shipped_card(checkpoint)
    if card is not None and pretrained.sample_image(card) is not None:
        return pretrained.sample_image(card)
    run = checkpoint.parent
    if not (run / "config.yaml").is_file() or not (run / "split.json").is_file():
        raise InputError("no config.yaml/split.json beside it; give --sample IMAGE", checkpoint)
    config = read_yaml_mapping(run / "config.yaml")
    where = {"data": None, "layout": "auto", "mask_suffix": "_masks", "image_suffix": ""}
    where = {key: config.get(key, default) for key, default in where.items()}
    bad = next((key for key, value in where.items() if not isinstance(value, str)), None)
    if bad is not None:
        raise InputError(f"its config.yaml gives {bad} {where[bad]!r}, not a text; give "
                         "--sample IMAGE", run / "config.yaml")  # fmt: skip
    try:
        pairs = find_pairs(*where.values())
    except InputError as exc:
        raise InputError(f"its training data cannot be read ({exc}); give --sample IMAGE",
                         checkpoint) from None  # fmt: skip
    split = load_split(run / "split.json")
    by_name = {p.name: p.image for p in pairs}
    for part in ("test", "val", "train"):
        found = [by_name[n] for n in split[part] if n in by_name]
        if found:
            return found[0]
    raise InputError("none of its split's images is in its data folder; give --sample IMAGE",
                     checkpoint)  # fmt: skip


def _test_crop(image: np.ndarray, source: Path) -> np.ndarray:
    """A centre crop of the raw (C, H, W) sample whose sides are multiples of the size rule."""
    step = SegmenterBase.size_multiple
    h, w = (min(TEST_SIZE, s) // step * step for s in image.shape[1:])
    if min(h, w) < MIN_SIZE:
        raise InputError(f"sample image is {image.shape[1:]}; give one of at least "
                         f"{MIN_SIZE} x {MIN_SIZE} pixels", source)  # fmt: skip
    top, left = (image.shape[1] - h) // 2, (image.shape[2] - w) // 2
    return image[:, top : top + h, left : left + w]


def _compile(net: torch.nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """TorchScript of ``net``: scripted, or traced where scripting fails; either way checked
    against the eager network at a size other than the example's (a trace can bake in shapes)."""
    try:
        compiled = torch.jit.script(net)
    except Exception:  # noqa: BLE001 - TorchScript raises many kinds; tracing is the fallback
        compiled = torch.jit.trace(net, example)
    other = torch.randn(1, example.shape[1], MIN_SIZE + 2 * SegmenterBase.size_multiple, MIN_SIZE)
    with torch.no_grad():
        if not torch.allclose(compiled(other), net(other), atol=1e-5):
            raise InputError("TorchScript of this network gives other outputs at other sizes")
    return compiled


def _documentation(seg: Segmenter, sample: Path) -> str:
    """The package's README: what goes in, what comes out, and how cganseg makes cells of it."""
    config = seg.model.config
    lines = [
        "# cganseg segmenter",
        "",
        f"A {config['name']} segmenter (width {config['width']}, {config['in_channels']} input "
        f"channel(s)) trained with cganseg {__version__}, the cGAN-Seg method of {PAPER}.",
        "",
        "## Input",
        f"`raw`: (batch, channel, y, x), the image's raw intensities (any range) with the "
        f"channels the model was trained on (`channels: {seg.channels}` in cganseg), "
        f"y and x at least {MIN_SIZE} and multiples of {SegmenterBase.size_multiple} above it. "
        "Pre-processing (in the package): per image and channel, the "
        f"{DEFAULT_PERCENTILES[0]}th and {DEFAULT_PERCENTILES[1]}th percentiles map to -1 and 1, "
        "clipped to [-1, 1].",
    ]
    post = seg.post
    if post.cell_diameter:
        lines += [
            "",
            "Cell size: the network saw images rescaled so cells are "
            f"{post.cell_diameter:.1f} px across (the training cells were "
            f"{post.train_diameter or 0:.1f} px). "
            "Rescale your image by cell_diameter / (your cells' diameter in px) before running it; "
            "cganseg's own `segment` does this itself (`--diameter`).",
        ]
    mode = post.mode
    lines += ["", "## Output", "", mode.describe_output(config["n_classes"]), "",
              "Cells (not expressible in the spec): "
              + mode.describe(post.min_size, **post.thresholds)]
    lines += [
        "",
        "To get the cells exactly as cganseg does, run `cganseg segment RUN IMAGES --out LABELS` "
        "on the run folder this package was exported from.",
        "",
        f"Test image: a centre crop of `{sample.name}`.",
        "",
    ]
    return "\n".join(lines)


def _cover(path: Path, raw: np.ndarray, seg: Segmenter) -> None:
    """A 2:1 cover: the test image beside cganseg's cells on it."""
    image = normalize_percentile(raw)
    labels = seg.segment(image)
    gray = np.round((np.clip(image.mean(axis=0), -1, 1) + 1) * 127.5).astype(np.uint8)
    write_png(path, np.concatenate([np.stack([gray] * 3, -1), overlay_labels(raw, labels)], 1))


def export_bioimageio(
    run: str | Path,
    out: str | Path,
    *,
    sample: str | Path | None = None,
    name: str | None = None,
    authors: list[str] | None = None,
    license: str | None = None,
    validate: bool = True,
) -> Path:
    """Write the segmenter of ``run`` (a run folder or checkpoint) as a bioimage.io zip ``out``.

    ``sample``: the test image (default: :func:`default_sample`); ``authors``: the model's
    authors (default: the user's login name); ``license``: the weights' SPDX license (default:
    a shipped model's own, from its card; else CC-BY-4.0); ``validate``: run bioimageio.core's
    model test on the package and refuse to keep it unless it passes.
    """
    _require()
    from bioimageio.core import test_model
    from bioimageio.spec import save_bioimageio_package

    checkpoint = resolve_checkpoint(run)
    if license is None:
        card = pretrained.shipped_card(checkpoint)
        license = card["license"] if card and card.get("license") else DEFAULT_LICENSE
    seg = load_segmenter(checkpoint, "cpu")
    config = seg.model.config
    net = ProbabilityNet(**config, output=seg.post.mode.output_kind).eval()
    net.net.load_state_dict(seg.model.state_dict())
    sample = Path(sample) if sample is not None else default_sample(checkpoint)
    raw = _test_crop(read_image(sample, seg.channels), sample).astype(np.float32)
    if raw.min() == raw.max():  # bioimageio.core's test would fail on it without saying why
        raise InputError(f"sample image is flat (every pixel {raw.min():g} in its centre "
                         "crop); give --sample an image with cells", sample)  # fmt: skip
    if raw.shape[0] != config["in_channels"]:
        raise InputError(f"image has {raw.shape[0]} channel(s) but the model expects "
                         f"{config['in_channels']}", sample)  # fmt: skip
    with torch.no_grad():
        expected = net(torch.from_numpy(normalize_percentile(raw))[None]).numpy()
    with tempfile.TemporaryDirectory(prefix="cganseg-export-") as tmp:
        files = Path(tmp)
        np.save(files / "test_input.npy", raw[None])
        np.save(files / "test_output.npy", expected)
        torch.save(net.state_dict(), files / "weights.pt")
        _compile(net, torch.from_numpy(raw[None])).save(str(files / "weights_torchscript.pt"))
        (files / "README.md").write_text(_documentation(seg, sample), encoding="utf-8")
        _cover(files / "cover.png", raw, seg)
        check(STOPPED)
        descr = _describe(files, seg, name or _default_name(config, checkpoint),
                          authors or [getpass.getuser()], license)  # fmt: skip
        with atomic_path(out) as target:
            save_bioimageio_package(descr, output_path=target)
            check(STOPPED)
            if validate:
                summary = test_model(target)
                check(STOPPED)  # (the model test cannot be cut short; its end is the next point)
                if summary.status != "passed":
                    failed = [d for d in summary.details if d.status == "failed"]
                    what = "; ".join(f"{d.name}: {d.errors}" for d in failed)[:400]
                    raise InputError(f"bioimageio.core's model test failed ({what})", out)
    return Path(out)


def _default_name(config: dict[str, Any], checkpoint: Path) -> str:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+- ()")
    run = "".join(c if c in allowed else "-" for c in checkpoint.parent.name)
    return f"cganseg {config['name']} {run}"[:64]


def _describe(files: Path, seg: Segmenter, name: str, authors: list[str], license: str) -> Any:
    """The model description (``ModelDescr``) of the files in ``files``."""
    from bioimageio.spec.model import v0_5 as spec

    config = seg.model.config
    mode = seg.post.mode

    step = SegmenterBase.size_multiple

    def space(axis: str) -> Any:
        size = spec.ParameterizedSize(min=MIN_SIZE, step=step)
        return spec.SpaceInputAxis(id=spec.AxisId(axis), size=size)

    def out_space(axis: str) -> Any:
        # no halo: a consumer then runs a whole image as one tensor (bioimageio.core pads a
        # halo with context the network never saw in training, changing the border outputs)
        return spec.SpaceOutputAxis(
            id=spec.AxisId(axis),
            size=spec.SizeReference(tensor_id=spec.TensorId("raw"), axis_id=spec.AxisId(axis)),
        )

    channels = [spec.Identifier(f"channel{i}") for i in range(config["in_channels"])]
    low, high = DEFAULT_PERCENTILES
    inputs = spec.InputTensorDescr(
        id=spec.TensorId("raw"),
        description="raw image intensities, channels as in training",
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=channels), space("y"), space("x")],
        test_tensor=spec.FileDescr(source=files / "test_input.npy"),
        preprocessing=[
            spec.ScaleRangeDescr(kwargs=spec.ScaleRangeKwargs(
                axes=[spec.AxisId("y"), spec.AxisId("x")], min_percentile=low,
                max_percentile=high)),
            spec.ScaleLinearDescr(kwargs=spec.ScaleLinearKwargs(gain=2.0, offset=-1.0)),
            spec.ClipDescr(kwargs=spec.ClipKwargs(min=-1.0, max=1.0)),
        ],
    )  # fmt: skip
    names = mode.output_names(config["n_classes"])
    outputs = spec.OutputTensorDescr(
        id=spec.TensorId(mode.output_tensor),
        description=mode.output_summary,
        axes=[spec.BatchAxis(),
              spec.ChannelAxis(channel_names=[spec.Identifier(n) for n in names]),
              out_space("y"), out_space("x")],
        test_tensor=spec.FileDescr(source=files / "test_output.npy"),
    )  # fmt: skip
    torch_version = spec.Version(torch.__version__.split("+")[0])
    architecture = spec.ArchitectureFromLibraryDescr(
        callable=spec.Identifier("ProbabilityNet"),
        import_from="cganseg.models.exported",
        kwargs={**config, "output": mode.output_kind},
    )
    post = seg.post
    scale = (f"; expects cells {post.cell_diameter:.1f} px across: rescale images by "
             f"{post.cell_diameter:.1f} / (your cells' diameter in px) first (training cells: "
             f"{post.train_diameter or 0:.1f} px; config.cganseg holds both)"
             if post.cell_diameter else "")  # fmt: skip
    return spec.ModelDescr(
        name=name,
        description=(f"{config['name']} cell segmenter trained with cganseg (cGAN-Seg, Zargari et "
                     f"al. 2024); outputs {mode.output_summary}{scale}"),
        authors=[spec.Author(name=a) for a in authors],
        packaged_by=[spec.Author(name=f"cganseg {__version__}")],
        cite=[spec.CiteEntry(text=PAPER, doi=spec.Doi(PAPER_DOI))],
        license=spec.LicenseId(license),
        tags=["cganseg", "cgan-seg", "cell-segmentation", "instance-segmentation", "2d",
              "pytorch", config["name"], mode.output_tag],
        documentation=spec.FileDescr(source=files / "README.md"),
        covers=[spec.FileDescr(source=files / "cover.png")],
        inputs=[inputs],
        outputs=[outputs],
        weights=spec.WeightsDescr(
            pytorch_state_dict=spec.PytorchStateDictWeightsDescr(
                source=files / "weights.pt", architecture=architecture,
                pytorch_version=torch_version),
            torchscript=spec.TorchscriptWeightsDescr(
                source=files / "weights_torchscript.pt", pytorch_version=torch_version,
                parent="pytorch_state_dict"),
        ),
        config={"cganseg": {"version": __version__, **seg.post.entry()}},
    )  # fmt: skip
