"""Reliability, round two (issue 13): no hang, no lost data, no silent wrong answer, runs that
own their folder.

Every case here broke the promise on the code before issue 13 (see the note on the issue and the
commit that added this file): a user error exits 2 with one line that names the file and the
problem, nothing is lost, and a stop is resumable.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from PIL import Image
from tests.helpers import (
    make_dataset,
    no_temp_files,
    synthetic_pair,
    tiny_cgan_config,
    tiny_experiment,
    tiny_seg_config,
)
from tests.helpers import write_image as _write

from cganseg.checkpoint import load_checkpoint
from cganseg.cli import main
from cganseg.data.io import read_labels

SRC = Path(__file__).resolve().parents[1]
#: a tiny conventional run on the command line (the issue's ``T``)
TINY = [
    "--device", "cpu", "--quiet", "--crop", "32", "--width", "4", "--batch-size", "2",
    "--val-every", "1", "--workers", "0", "--val-fraction", "0.25", "--patience", "0",
]  # fmt: skip


def _train(data: Path, out: Path, *extra: str, iterations: int = 2) -> list[str]:
    return ["train-seg", "--data", str(data), "--out", str(out), *TINY,
            "--iterations", str(iterations), *extra]  # fmt: skip


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err, err
    return lines[0]


def _refused(rc: int, err: str, *words: str) -> str:
    assert rc == 2, err
    line = _one_error_line(err)
    for word in words:
        assert word in line, line
    return line


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(SRC / "src"), env.get("PYTHONPATH", "")])
    return env


# ------------------------------------------------------------------ 1. no hang with workers
_FAILING_STEP = """
import sys
from cganseg.training.seg_trainer import SegTrainer
from cganseg.cli import main

def boom(self, images, targets):
    raise RuntimeError("a step failed")

SegTrainer.train_step = boom
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_failing_step_with_loader_workers_ends_the_process(tmp_path):
    data = make_dataset(tmp_path / "data", n=8)
    # the class output: flow targets would make each loader worker compile cellpose's numba
    # kernels first, which on a loaded machine eats the 60 s this test allows
    args = _train(data, tmp_path / "run", "--instances", "watershed", iterations=3)
    args[args.index("--workers") + 1] = "2"
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", _FAILING_STEP, *args],
        capture_output=True, text=True, env=_env(), timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert time.monotonic() - start < 60
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error:"), proc.stderr
    assert "a step failed" in proc.stderr


# ------------------------------------------------------------------ 2. a run folder is the run
def test_a_copied_run_resumes_in_its_copy_from_another_directory(tmp_path, monkeypatch, capsys):
    make_dataset(tmp_path / "D", n=8)
    monkeypatch.chdir(tmp_path)
    assert main(_train(Path("D"), Path("runs/A"))) == 0
    shutil.copytree(tmp_path / "runs/A", tmp_path / "runs/B")
    run_a = tmp_path / "runs/A"
    before = (run_a / "last.pt").read_bytes(), (run_a / "metrics.csv").read_text()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rc = main(["train-seg", "--out", str(tmp_path / "runs/B"), "--resume", "--iterations", "4",
               "--quiet"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert load_checkpoint(tmp_path / "runs/B/last.pt")["step"] == 4
    assert (tmp_path / "runs/A/last.pt").read_bytes() == before[0]
    assert (tmp_path / "runs/A/metrics.csv").read_text() == before[1]
    assert not (elsewhere / "runs").exists()
    saved = yaml.safe_load((tmp_path / "runs/B/config.yaml").read_text())
    assert Path(saved["out"]) == tmp_path / "runs/B"


def test_resume_after_the_data_moved_takes_data_and_checks_its_content(tmp_path, capsys):
    data = make_dataset(tmp_path / "D", n=8)
    run = tmp_path / "run"
    assert main(_train(data, run)) == 0
    moved = tmp_path / "moved"
    data.rename(moved)
    rc = main(["train-seg", "--out", str(run), "--resume", "--iterations", "3", "--quiet"])
    _refused(rc, capsys.readouterr().err, "data folder not found", "--data")
    # the same pairs elsewhere: accepted
    rc = main(["train-seg", "--out", str(run), "--resume", "--iterations", "3", "--quiet",
               "--data", str(moved)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert Path(yaml.safe_load((run / "config.yaml").read_text())["data"]) == moved
    # other content under the same names: refused by name
    split = json.loads((run / "split.json").read_text())
    changed = moved / "masks" / f"{split['train'][0]}.png"
    labels = read_labels(changed)
    labels[:5, :5] = labels.max() + 1
    _write(changed, labels.astype(np.uint16))
    rc = main(["train-seg", "--out", str(run), "--resume", "--iterations", "4", "--quiet",
               "--data", str(moved)])  # fmt: skip
    _refused(rc, capsys.readouterr().err, changed.name, "differs from")
    assert load_checkpoint(run / "last.pt")["step"] == 3


# ------------------------------------------------------------------ 3. no overwriting
def test_segment_refuses_a_folder_it_did_not_write(tmp_path, capsys, seg_run):
    data = make_dataset(tmp_path / "d", n=3, mask_ext=".tif")
    before = {p.name: p.read_bytes() for p in (data / "masks").iterdir()}
    rc = main(["segment", str(seg_run), str(data / "images"), str(data / "masks"), "--quiet"])
    _refused(rc, capsys.readouterr().err, "masks", "--overwrite")
    assert {p.name: p.read_bytes() for p in (data / "masks").iterdir()} == before
    # its own output folder it may write again; --overwrite allows a foreign one
    out = tmp_path / "pred"
    for _ in range(2):
        assert main(["segment", str(seg_run), str(data / "images"), str(out), "--quiet"]) == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    rc = main(["segment", str(seg_run), str(data / "images"), str(other), "--quiet",
               "--overwrite"])  # fmt: skip
    assert rc == 0 and (other / "notes.txt").read_text() == "mine"


def test_fid_json_refuses_to_overwrite_an_input_or_foreign_file(tmp_path, capsys, tiny_fid_network):
    real = make_dataset(tmp_path / "real", n=4)
    fake = make_dataset(tmp_path / "fake", n=4, seed=1)
    image = real / "images" / "img00.png"
    before = image.read_bytes()
    rc = main(["fid", str(real), str(fake), "--json", str(image), "--quiet"])
    _refused(rc, capsys.readouterr().err, "img00.png")
    assert image.read_bytes() == before
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    rc = main(["fid", str(real), str(fake), "--json", str(notes), "--quiet"])
    _refused(rc, capsys.readouterr().err, "notes.json", "--overwrite")
    ours = tmp_path / "fid.json"
    for _ in range(2):  # its own result it may write again
        assert main(["fid", str(real), str(fake), "--json", str(ours), "--quiet"]) == 0
    assert "fid" in json.loads(ours.read_text())


def test_evaluate_refuses_a_foreign_folder_and_may_sit_inside_the_predictions(
    tmp_path, capsys, seg_run
):
    data = make_dataset(tmp_path / "d", n=3)
    pred = tmp_path / "pred"
    assert main(["segment", str(seg_run), str(data / "images"), str(pred), "--quiet"]) == 0
    for _ in range(2):
        rc = main(["evaluate", str(data), str(pred), "--out", str(pred / "eval"), "--quiet"])
        assert rc == 0, capsys.readouterr().err
    rc = main(["evaluate", str(data), str(pred), "--out", str(pred), "--quiet"])
    _refused(rc, capsys.readouterr().err, "pred")
    rc = main(["evaluate", str(data), str(pred), "--out", str(data / "images"), "--quiet"])
    _refused(rc, capsys.readouterr().err, "images")


# ------------------------------------------------------------------ 4. one writer per folder
@pytest.mark.slow
def test_a_second_writer_of_a_run_folder_is_refused(tmp_path):
    data = make_dataset(tmp_path / "D", n=8)
    out = tmp_path / "r"
    first = subprocess.Popen(
        [sys.executable, "-m", "cganseg", *_train(data, out, iterations=100000)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    try:
        end = time.monotonic() + 120
        while not (out / "last.pt").exists():
            assert first.poll() is None, first.communicate()[1]
            assert time.monotonic() < end
            time.sleep(0.1)
        second = subprocess.run(
            [sys.executable, "-m", "cganseg", *_train(data, out, "--seed", "7")],
            capture_output=True, text=True, env=_env(), timeout=120,
        )  # fmt: skip
        line = _refused(second.returncode, second.stderr, str(first.pid), "in use")
        assert socket.gethostname() in line
        assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 0
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert not (out / ".cganseg.runtime.lock").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    data = make_dataset(tmp_path / "D", n=8)
    out = tmp_path / "r"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = {"pid": dead.pid, "host": socket.gethostname(), "command": "train-seg"}
    (out / ".cganseg.runtime.lock").write_text(json.dumps(lock))
    assert main(_train(data, out)) == 0, capsys.readouterr().err
    assert not (out / ".cganseg.runtime.lock").exists()
    (out / ".cganseg.runtime.lock").write_text(json.dumps({**lock, "host": "another-host"}))
    rc = main(["train-seg", "--out", str(out), "--resume", "--iterations", "3", "--quiet"])
    _refused(rc, capsys.readouterr().err, "another-host", ".cganseg.runtime.lock")


# ------------------------------------------------------------------ 5. full disk at every writer
@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(name)``: from now on, writing any file whose name contains ``name`` fails
    with ENOSPC, as on a full disk (the file being written is /dev/full)."""
    import tempfile

    real_mkstemp = tempfile.mkstemp
    names: list[str] = []

    def mkstemp(*args, **kwargs):
        fd, path = real_mkstemp(*args, **kwargs)
        if any(n in os.path.basename(path) for n in names):
            os.close(fd)
            os.unlink(path)
            os.symlink("/dev/full", path)
            fd = os.open(path, os.O_WRONLY)
        return fd, path

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    real_open = open

    def append_open(file, mode="r", *args, **kwargs):  # metrics.csv is appended to
        if "a" in mode and any(n in os.path.basename(str(file)) for n in names):
            return real_open("/dev/full", "w", *args, **kwargs)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", append_open)
    return names.append


TRAINING_WRITERS = ["last.pt", "best.pt", "metrics.csv", "config.yaml", "split.json"]


@pytest.mark.parametrize("name", TRAINING_WRITERS)
def test_full_disk_at_each_training_writer(tmp_path, capsys, full_disk, name):
    """On resume (last.pt, metrics.csv: the previous checkpoint stays whole), or in a new run
    (best.pt, config.yaml and split.json are first written there)."""
    data = make_dataset(tmp_path / "D", n=8)
    run = tmp_path / "run"
    assert main(_train(data, run)) == 0
    last_before = load_checkpoint(run / "last.pt")["step"]
    full_disk(name)
    if name in ("last.pt", "metrics.csv"):
        rc = main(["train-seg", "--out", str(run), "--resume", "--iterations", "4", "--quiet"])
    else:
        run = tmp_path / "new run"
        rc = main(_train(data, run))
    _refused(rc, capsys.readouterr().err, name, "No space left on device")
    if run.name == "run":
        assert load_checkpoint(run / "last.pt")["step"] == last_before  # whole, loadable
    assert no_temp_files(run)
    assert not (run / ".cganseg.runtime.lock").exists()


def test_full_disk_at_the_samples_of_cgan_training(tmp_path, capsys, full_disk):
    data = make_dataset(tmp_path / "D", n=8)
    cfg = tiny_cgan_config(data, tmp_path / "run", sample_every=1)
    cfg.save(tmp_path / "cfg.yaml")
    full_disk("samples")
    full_disk("step_")
    rc = main(["train", "--config", str(tmp_path / "cfg.yaml"), "--quiet"])
    _refused(rc, capsys.readouterr().err, "No space left on device")
    assert no_temp_files(tmp_path / "run")


def test_full_disk_at_segment_evaluate_and_fid(tmp_path, capsys, full_disk, seg_run,
                                               tiny_fid_network):  # fmt: skip
    data = make_dataset(tmp_path / "d", n=3)
    pred = tmp_path / "pred"
    assert main(["segment", str(seg_run), str(data / "images"), str(pred), "--quiet"]) == 0
    full_disk("img01")
    rc = main(["segment", str(seg_run), str(data / "images"), str(tmp_path / "p2"), "--quiet"])
    _refused(rc, capsys.readouterr().err, "img01", "No space left on device")
    assert no_temp_files(tmp_path / "p2")
    full_disk("f1_vs_iou")
    rc = main(["evaluate", str(data), str(pred), "--out", str(tmp_path / "ev"), "--quiet"])
    _refused(rc, capsys.readouterr().err, "f1_vs_iou", "No space left on device")
    report = tmp_path / "ev"
    assert not (report / "metrics.json").exists()  # no half report
    assert no_temp_files(report)
    full_disk("fid.json")
    rc = main(["fid", str(data), str(data), "--json", str(tmp_path / "fid.json"), "--quiet"])
    _refused(rc, capsys.readouterr().err, "fid.json", "No space left on device")


def test_full_disk_at_overlays_synth_masks_and_generate(
    tmp_path, capsys, full_disk, seg_run, gan_run
):
    data = make_dataset(tmp_path / "d", n=3)
    full_disk("img01.png")  # the overlay (labels are .tif)
    rc = main(["segment", str(seg_run), str(data), str(tmp_path / "p"), "--overlays", "--quiet"])
    _refused(rc, capsys.readouterr().err, "overlays", "img01.png", "No space left on device")
    full_disk("synth_00001")
    rc = main(["synth-masks", str(data), str(tmp_path / "sm"), "--n", "3", "--quiet"])
    _refused(rc, capsys.readouterr().err, "synth_00001", "No space left on device")
    full_disk("img02_s0")
    rc = main(["generate", str(gan_run), str(data), str(tmp_path / "g"), "--quiet"])
    _refused(rc, capsys.readouterr().err, "img02_s0", "No space left on device")
    for folder in ("p", "sm", "g"):
        assert no_temp_files(tmp_path / folder)
        assert not (tmp_path / folder / ".cganseg.runtime.lock").exists()


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /tmp"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a tmpfs (no user namespaces)")
def test_a_really_full_disk_ends_training_segment_and_evaluate_cleanly(tmp_path, seg_run):
    """On a 300 kB tmpfs: one error line naming a path, exit 2, no hang, no temp files left."""
    data = make_dataset(tmp_path / "D", n=8)
    disk = tmp_path / "disk"
    disk.mkdir()
    train = " ".join(_train(data, disk / "run", iterations=4)).replace("--workers 0", "--workers 2")
    script = (
        f"mount -t tmpfs -o size=300k tmpfs {disk} && "
        f"{{ timeout 90 {sys.executable} -m cganseg {train}; echo rc=$?; ls -aR {disk}; "
        f"head -c 300000 /dev/urandom > {disk}/filler 2>/dev/null; "
        f"timeout 90 {sys.executable} -m cganseg segment {seg_run} {data} {disk}/pred --quiet; "
        f"echo rc=$?; "
        f"timeout 90 {sys.executable} -m cganseg evaluate {data} {data} --out {disk}/ev --quiet; "
        f"echo rc=$?; ls -aR {disk}; }}"
    )
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=_env(),
        timeout=400,
    )  # fmt: skip
    codes = [ln for ln in proc.stdout.splitlines() if ln.startswith("rc=")]
    assert codes == ["rc=2", "rc=2", "rc=2"], proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 3 and all("No space left on device" in e for e in errors), proc.stderr
    assert "Traceback" not in proc.stderr
    assert ".tmp" not in proc.stdout and ".cganseg.runtime.lock" not in proc.stdout, proc.stdout


# ------------------------------------------------------------------ 6. values validated
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--lr", "nan"], ["lr", "finite"]),
        (["--seed", "99999999999999999999"], ["seed"]),
        (["--crop", "50"], ["crop", "16"]),
        (["--val-fraction", "-0.1"], ["val_fraction"]),
    ],
)
def test_training_options_are_validated_before_anything_is_written(tmp_path, capsys, args, words):
    data = make_dataset(tmp_path / "D", n=8)
    rc = main([*_train(data, tmp_path / "run"), *args])
    _refused(rc, capsys.readouterr().err, *words)
    assert not (tmp_path / "run").exists()


def test_cgan_learning_rates_are_validated(tmp_path, capsys):
    data = make_dataset(tmp_path / "D", n=8)
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--lr-gen", "-1",
               "--perceptual", "none"])  # fmt: skip
    _refused(rc, capsys.readouterr().err, "lr_gen")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("command", "field", "value", "word"),
    [
        ("train-seg", "weight_decay", -1, "weight_decay"),
        ("train-seg", "lr", float("nan"), "lr"),
        ("train-seg", "crop", [True, 64], "crop"),
        ("train-seg", "n_classes", 5, "n_classes"),
        ("train", "betas", ["a", "b"], "betas"),
        ("train", "w_rec_s", float("inf"), "w_rec_s"),
    ],
)
def test_yaml_fields_are_validated_and_the_yaml_is_named(
    tmp_path, capsys, command, field, value, word
):
    data = make_dataset(tmp_path / "D", n=8)
    make = tiny_seg_config if command == "train-seg" else tiny_cgan_config
    options = make(data, tmp_path / "run").to_dict()
    options[field] = value
    path = tmp_path / "my config.yaml"
    path.write_text(yaml.safe_dump(options))
    rc = main([command, "--config", str(path), "--quiet"])
    _refused(rc, capsys.readouterr().err, word, "my config.yaml")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [("backbones", 5), ("data", 123), ("scenarios", [["A"]]), ("seed", "banana"),
     ("folds", True), ("cgan", {"lr": "fast"})],
)  # fmt: skip
def test_experiment_fields_are_validated(tmp_path, capsys, field, value):

    options = tiny_experiment(tmp_path).to_dict()
    options[field] = value
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(options))
    rc = main(["experiment", str(path), "--quiet"])
    _refused(rc, capsys.readouterr().err, "exp.yaml", field)
    assert not Path(options["out"]).exists()


def test_an_exploding_loss_stops_like_a_nan(tmp_path, capsys):
    data = make_dataset(tmp_path / "D", n=8)
    # the class output: its CE grows past max_loss; the flow loss turns NaN first
    args = _train(data, tmp_path / "run", "--lr", "1e9", "--instances", "watershed", iterations=5)
    args[args.index("--val-every") + 1] = "5"
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 3, err
    line = _one_error_line(err)
    assert "max_loss" in line and "no checkpoint was saved" in line, line
    assert "kept in" not in line


# ------------------------------------------------------------------ 7. names
def test_a_long_legal_name_is_segmented(tmp_path, capsys, seg_run):
    images = tmp_path / "in"
    name = "x" * 246 + ".png"  # 250 characters, the output NAME.tif too
    _write(images / name, synthetic_pair()[0])
    rc = main(["segment", str(seg_run), str(images), str(tmp_path / "out"), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "out" / ("x" * 246 + ".tif")).is_file()


def test_a_newline_in_a_bad_file_name_stays_on_one_line(tmp_path, capsys):
    data = make_dataset(tmp_path / "D", n=6)
    bad = data / "images" / "bad\nname.png"
    bad.write_bytes(b"")
    _write(data / "masks" / "bad\nname.png", synthetic_pair()[1])
    rc = main(_train(data, tmp_path / "run"))
    line = _refused(rc, capsys.readouterr().err, "bad\\nname.png", "file is empty")
    assert "\n" not in line


def test_unicode_names_pair_after_normalisation(tmp_path, capsys):
    data = make_dataset(tmp_path / "D", n=6)
    image, labels = synthetic_pair(seed=9)
    _write(data / "images" / (unicodedata.normalize("NFC", "café") + ".png"), image)
    _write(data / "masks" / (unicodedata.normalize("NFD", "café") + ".png"), labels)
    assert main(_train(data, tmp_path / "run")) == 0, capsys.readouterr().err
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert sum(n.startswith("caf") for part in split.values() for n in part) == 1


# ------------------------------------------------------------------ 8. messages
def test_n_classes_5_in_yaml_is_named_and_writes_nothing(tmp_path, capsys):
    data = make_dataset(tmp_path / "D", n=8)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"n_classes": 5}))
    rc = main([*_train(data, tmp_path / "run"), "--config", str(path)])
    _refused(rc, capsys.readouterr().err, "n_classes", "c.yaml")
    assert not (tmp_path / "run").exists()


def test_no_validation_set_says_so_instead_of_minus_infinity(tmp_path, capsys):
    data = make_dataset(tmp_path / "D", n=1)
    args = _train(data, tmp_path / "run")
    args[args.index("--val-fraction") + 1] = "0"
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "-inf" not in out and "no validation" in out, out


def test_split_file_with_an_empty_train_list_says_so(tmp_path, capsys):
    data = make_dataset(tmp_path / "D", n=6)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [], "val": ["img00"], "test": []}))
    rc = main([*_train(data, tmp_path / "run"), "--split", str(split)])
    _refused(rc, capsys.readouterr().err, "split.json", "'train' list is empty")


def test_a_non_checkpoint_file_is_not_called_code(tmp_path, capsys):
    data = make_dataset(tmp_path / "d", n=2)
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    rc = main(["segment", str(h5), str(data / "images"), str(tmp_path / "out"), "--quiet"])
    line = _refused(rc, capsys.readouterr().err, "model.h5", "not a PyTorch checkpoint")
    assert "run code" not in line


def test_masks_that_are_jpeg_are_refused(tmp_path, capsys):
    data = make_dataset(tmp_path / "D", n=6)
    (data / "masks" / "img00.png").unlink()
    _write(data / "masks" / "img00.jpg", (synthetic_pair(seed=0)[1] * 40).astype(np.uint8))
    rc = main(_train(data, tmp_path / "run"))
    _refused(rc, capsys.readouterr().err, "img00.jpg", "lossy")


def test_palette_png_masks_are_read_as_labels(tmp_path):
    labels = synthetic_pair()[1].astype(np.uint8)
    image = Image.fromarray(labels, mode="P")
    image.putpalette([v for i in range(256) for v in ((37 * i) % 256, (91 * i) % 256, 0)])
    image.save(tmp_path / "m.png")
    assert np.array_equal(read_labels(tmp_path / "m.png"), labels)


def test_extra_pairs_inside_the_data_set_are_refused(tmp_path, capsys):
    data = make_dataset(tmp_path / "D", n=8)
    rc = main([*_train(data, tmp_path / "run"), "--extra", str(data)])
    _refused(rc, capsys.readouterr().err, "extra", "data set")
    assert not (tmp_path / "run").exists()


def test_a_data_set_without_any_cell_is_refused(tmp_path, capsys):
    data = make_dataset(tmp_path / "D", n=6)
    for mask in (data / "masks").iterdir():
        _write(mask, np.zeros((40, 52), np.uint16))
    rc = main(_train(data, tmp_path / "run"))
    _refused(rc, capsys.readouterr().err, "no cell")


def test_evaluate_refuses_ground_truth_without_any_cell(tmp_path, capsys):
    """(issue 13 asked for a warning or a refusal; issue 14 made it a refusal, as per-image
    scores of empty images are 0 by StarDist's convention)"""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for folder in (gt, pred):
        _write(folder / "a.tif", np.zeros((20, 20), np.uint16))
    rc = main(["evaluate", str(gt), str(pred), "--out", str(tmp_path / "ev"), "--quiet"])
    _refused(rc, capsys.readouterr().err, "no cell")
    assert not (tmp_path / "ev").exists()


# ------------------------------------------------------------------ 9. the Cellpose layout
def test_segment_skips_the_masks_of_a_cellpose_folder(tmp_path, capsys, seg_run):
    data = make_dataset(tmp_path / "cp", n=3, layout="cellpose", image_ext=".tif",
                        mask_ext=".tif", image_dtype=np.uint16)  # fmt: skip
    assert main(["segment", str(seg_run), str(data), str(tmp_path / "pred"), "--quiet"]) == 0
    written = sorted(p.name for p in (tmp_path / "pred").glob("*.tif"))
    assert written == ["img00.tif", "img01.tif", "img02.tif"]


def test_evaluate_reads_a_cellpose_folder_as_ground_truth(tmp_path, capsys, seg_run):
    data = make_dataset(tmp_path / "cp", n=3, layout="cellpose", image_ext=".tif",
                        mask_ext=".tif", image_dtype=np.uint16)  # fmt: skip
    pred = tmp_path / "pred"
    assert main(["segment", str(seg_run), str(data), str(pred), "--quiet"]) == 0
    rc = main(["evaluate", str(data), str(pred), "--out", str(tmp_path / "ev"), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    names = [r["name"] for r in json.loads((tmp_path / "ev/metrics.json").read_text())["images"]]
    assert names == ["img00", "img01", "img02"]


def test_evaluate_refuses_ground_truth_that_is_not_a_label_image(tmp_path, capsys):
    image, labels = synthetic_pair(image_dtype=np.uint16)
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    tifffile.imwrite(gt / "a.tif" if gt.mkdir() is None else None, image)
    tifffile.imwrite(pred / "a.tif" if pred.mkdir() is None else None, labels)
    rc = main(["evaluate", str(gt), str(pred), "--out", str(tmp_path / "ev"), "--quiet"])
    _refused(rc, capsys.readouterr().err, "a.tif", "not a label image")


def test_a_custom_mask_suffix_works_in_every_command(tmp_path, capsys, seg_run, gan_run):
    data = tmp_path / "cp"
    for i in range(3):
        image, labels = synthetic_pair(seed=i)
        _write(data / f"s{i}.tif", image)
        _write(data / f"s{i}_lbl.tif", labels)
    pred = tmp_path / "pred"
    assert main(["segment", str(seg_run), str(data), str(pred), "--mask-suffix", "_lbl",
                 "--quiet"]) == 0  # fmt: skip
    assert sorted(p.name for p in pred.glob("*.tif")) == ["s0.tif", "s1.tif", "s2.tif"]
    rc = main(["evaluate", str(data), str(pred), "--out", str(tmp_path / "ev"),
               "--mask-suffix", "_lbl", "--quiet"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    rc = main(["synth-masks", str(data), str(tmp_path / "sm"), "--n", "2", "--mask-suffix",
               "_lbl", "--quiet"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    rc = main(["generate", str(gan_run), str(data), str(tmp_path / "g"), "--mask-suffix",
               "_lbl", "--quiet"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "g" / "masks").iterdir()) == [
        "s0_s0.tif", "s1_s0.tif", "s2_s0.tif"]  # fmt: skip
