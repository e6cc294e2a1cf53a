"""The napari plugin (issue 19, item 3), in napari's own viewer fixture, off-screen: the widgets
come from the npe2 manifest of the installed package, segment an Image layer into the Labels
that ``cganseg.segment`` gives, and generate an image from a Labels layer."""

from __future__ import annotations

import os

import imageio.v3 as iio
import numpy as np
import pytest

napari = pytest.importorskip("napari", reason="the napari extra is not installed (make test "
                             "installs it)")  # fmt: skip
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytestmark = pytest.mark.skipif(
    not os.environ.get("DISPLAY"),
    reason="napari's canvas needs OpenGL on an X display: install Debian's xvfb (pytest-xvfb then "
    "starts a virtual screen; .ci/run installs it)",
)

import cganseg  # noqa: E402


def _dock(viewer, name: str):
    _, widget = viewer.window.add_plugin_dock_widget("cganseg", name)
    return widget


def _wait(qtbot, widget) -> None:
    worker = widget.start()
    assert worker is not None, widget.status.value
    qtbot.waitUntil(lambda: worker.is_running is False and widget.button.enabled, timeout=120_000)


def test_the_manifest_is_the_installed_package_s():
    import npe2

    manifest = npe2.PluginManifest.from_distribution("cganseg")
    names = {w.display_name for w in manifest.contributions.widgets}
    assert names == {"Segment cells", "Suggest images to correct", "Generate image from labels"}


def test_segment_widget_adds_the_labels_cganseg_segment_gives(make_napari_viewer, qtbot, seg_run):
    viewer = make_napari_viewer()
    image = iio.imread(seg_run.parent / "data" / "images" / "img00.png")
    layer = viewer.add_image(image, name="cells")
    widget = _dock(viewer, "Segment cells")
    widget.run_folder.value = seg_run
    widget.input.value = layer
    _wait(qtbot, widget)
    labels = viewer.layers["cells cells"]
    assert isinstance(labels, napari.layers.Labels)
    assert np.array_equal(labels.data, cganseg.segment(image, model=seg_run))
    assert "cells in" in widget.status.value


def test_segment_widget_offers_the_shipped_models(make_napari_viewer, qtbot, shipped, seg_run):
    viewer = make_napari_viewer()
    image = iio.imread(seg_run.parent / "data" / "images" / "img00.png")
    layer = viewer.add_image(image, name="cells")
    widget = _dock(viewer, "Segment cells")
    assert "tinyship" in widget.source.choices
    widget.source.value = "tinyship"  # no run folder chosen: the shipped model is the model
    widget.input.value = layer
    _wait(qtbot, widget)
    assert np.array_equal(viewer.layers["cells cells"].data,
                          cganseg.segment(image, model="tinyship"))  # fmt: skip


def test_suggest_widget_loads_the_images_to_correct_first(make_napari_viewer, qtbot, seg_run):
    from cganseg.evaluation.suggest import rank
    from cganseg.inference.segment import load_segmenter

    viewer = make_napari_viewer()
    widget = _dock(viewer, "Suggest images to correct")
    folder = seg_run.parent / "data" / "images"
    widget.run_folder.value = seg_run
    widget.input.value = folder
    widget.n.value = 2
    _wait(qtbot, widget)
    top = rank(load_segmenter(seg_run, "cpu"), sorted(folder.iterdir()), progress=False)[:2]
    names = [layer.name for layer in viewer.layers]
    assert names == [n for s in top for n in (s.path.stem, f"{s.path.stem} cells",
                                              f"{s.path.stem} confidence")]  # fmt: skip
    assert np.array_equal(viewer.layers[f"{top[0].path.stem} cells"].data, top[0].labels)
    assert "correct first" in widget.status.value


def test_segment_widget_refuses_a_folder_that_is_not_a_run(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((40, 52), np.uint8), name="img")
    widget = _dock(viewer, "Segment cells")
    widget.run_folder.value = tmp_path
    widget.input.value = layer
    _wait(qtbot, widget)
    assert "best.pt" in widget.status.value or "checkpoint" in widget.status.value
    assert [lay.name for lay in viewer.layers] == ["img"]


def test_generate_widget_makes_an_image_from_labels(make_napari_viewer, qtbot, gan_run):
    viewer = make_napari_viewer()
    labels = iio.imread(gan_run.parent / "data" / "masks" / "img00.png").astype(np.int32)
    layer = viewer.add_labels(labels, name="mask")
    widget = _dock(viewer, "Generate image from labels")
    widget.run_folder.value = gan_run
    widget.input.value = layer
    widget.seed.value = 3
    _wait(qtbot, widget)
    out = viewer.layers["mask generated (seed 3)"]
    assert out.data.shape[:2] == labels.shape and 0 <= out.data.min() <= out.data.max() <= 1
    assert out.data.std() > 0
