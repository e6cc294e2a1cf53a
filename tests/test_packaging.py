"""Issue 18, item 6: users install a wheel, not a checkout. The wheel is built, installed apart
from the source tree, and its ``cganseg`` entry point runs the demo on the bundled data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cganseg.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def _build_isolation() -> list[str]:
    """No build isolation when this environment has the build backend (offline machines)."""
    try:
        import setuptools

        return ["--no-build-isolation"] if int(setuptools.__version__.split(".")[0]) >= 77 else []
    except ImportError:
        return []


@pytest.mark.slow
def test_the_wheel_installs_apart_and_runs_the_demo(tmp_path):
    from cganseg.models.vgg import hed_weights_path

    try:
        hed_weights_path()
    except InputError:
        pytest.skip("the demo needs `cganseg fetch-weights hed-vgg16` (make test fetches it)")
    source = tmp_path / "source"  # a copy: building writes build/ and egg-info beside it
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))  # fmt: skip
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", str(source), "--no-deps", *_build_isolation(), "-w",
                    str(tmp_path / "dist")], check=True, timeout=600)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("cganseg-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True,
                   timeout=600)  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(site)}  # before the checkout's editable install
    where = subprocess.run([sys.executable, "-c", "import cganseg, cganseg.demo as d; "
                            "print(cganseg.__file__); print(len(list((d.demo_data_dir() / "
                            "'images').iterdir())))"], env=env, cwd=tmp_path, check=True,
                           capture_output=True, text=True).stdout.split()  # fmt: skip
    assert where[0].startswith(str(site)) and where[1] == "40"  # code and data from the wheel
    demo = subprocess.run([str(site / "bin" / "cganseg"), "demo", "--out", "demo", "--iterations",
                           "4", "--gan-iterations", "2", "--quiet"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert "conventional: F1@0.5" in demo.stdout and (tmp_path / "demo" / "index.html").is_file()
