"""napari dock widgets (magicgui): segment an Image layer into a Labels layer with a trained run
or a shipped starting model (:mod:`cganseg.pretrained`), suggest which images of a folder to
correct next (:mod:`cganseg.evaluation.suggest`), and generate an image from a Labels layer with
a trained cGAN-Seg generator.

The work runs in a napari thread worker with a progress bar in the viewer, so the window stays
responsive; a problem the user can fix (a folder that is not a run, a run without a generator, a
z-stack) is shown in one line in the widget and as a napari notification, never as a traceback.
The segmentation is :func:`cganseg.api.segment`, so a layer gets exactly the labels that
``cganseg segment`` writes for the same image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.qt.threading import FunctionWorker, thread_worker
from napari.utils.notifications import show_error

from cganseg import pretrained
from cganseg.api import load, segment
from cganseg.data.folders import collect_inputs
from cganseg.data.io import read_image
from cganseg.errors import InputError, one_line
from cganseg.evaluation.suggest import Suggestion, rank
from cganseg.inference.generate import load_generator


class _RunWidget(Container):
    """A model, what to work on (a layer, or a folder), options and a button that starts the
    work in a thread."""

    #: what the button says, and the layer type the widget works on
    action = ""
    layer_type: Any = None
    #: whether the model may also be a shipped starting model (a chooser above the run folder)
    shipped = False
    #: the model chooser's entry that means "the run folder below"
    RUN_FOLDER = "run folder"

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.source = ComboBox(label="model", value=self.RUN_FOLDER,
                               choices=[self.RUN_FOLDER, *pretrained.cards()])  # fmt: skip
        self.run_folder = FileEdit(label="run folder", mode="d")
        self.input = self.input_widget()
        self.button = PushButton(text=self.action)
        self.status = Label(value="")
        chooser = [self.source] if self.shipped else []
        super().__init__(widgets=[*chooser, self.run_folder, self.input, *self.options(),
                                  self.button, self.status])  # fmt: skip
        self.button.changed.connect(self.start)
        self.worker: FunctionWorker | None = None

    def input_widget(self) -> Any:
        """The widget that chooses what the work runs on (a layer of ``layer_type``)."""
        return create_widget(annotation=self.layer_type, label="layer")

    def target(self) -> tuple[Any, str] | None:
        """What the work runs on and its name in messages (None: nothing chosen)."""
        layer = self.input.value
        return None if layer is None else (layer, layer.name)

    def options(self) -> list[Any]:
        return []

    def model(self) -> str | Path | None:
        """A shipped model by name when the chooser says so, else the chosen run folder (None
        when none is chosen)."""
        if self.shipped and self.source.value != self.RUN_FOLDER:
            return str(self.source.value)
        run = Path(self.run_folder.value)
        if not run.exists() or str(self.run_folder.value) in ("", "."):
            return None
        return run

    def start(self) -> FunctionWorker | None:
        """Check the inputs and start the work; returns the running worker (None if refused)."""
        target, run = self.target(), self.model()
        if target is None:
            what = "a layer" if self.layer_type is not None else "a folder of images"
            return self._fail(f"choose {what} to {self.action.lower()}")
        if run is None:
            return self._fail("choose a run folder (or best.pt) made by cganseg")
        self.status.value = f"{self.action.lower()}: {target[1]} ..."
        self.button.enabled = False
        worker = self.work(target[0], run)
        worker.returned.connect(lambda result: self._done(target[0], result))
        worker.errored.connect(self._failed)
        worker.finished.connect(lambda: setattr(self.button, "enabled", True))
        self.worker = worker
        worker.start()
        return worker

    def work(self, target: Any, run: str | Path) -> FunctionWorker:
        raise NotImplementedError

    def _done(self, target: Any, result: Any) -> None:
        raise NotImplementedError

    def _failed(self, exc: Exception) -> None:
        """A user error in its one line; anything else with its type, for a bug report."""
        message = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
        self._fail(one_line(message))

    def _fail(self, message: str) -> None:
        self.status.value = message
        show_error(message)
        return None


class SegmentWidget(_RunWidget):
    """Segment the chosen Image layer with a run's segmenter (or a shipped model) into a new
    Labels layer."""

    action = "Segment"
    layer_type = napari.layers.Image
    shipped = True

    def options(self) -> list[Any]:
        self.diameter = FloatSpinBox(label="cell diameter (0: the model's)", min=0, max=10000,
                                     value=0)  # fmt: skip
        return [self.diameter]

    def work(self, layer: Any, run: str | Path) -> FunctionWorker:
        diameter = self.diameter.value or None
        data = np.asarray(layer.data)

        # ignore_errors: _failed shows the error; re-raised, it would print a traceback too
        @thread_worker(progress={"total": 0, "desc": "cganseg: segmenting"}, ignore_errors=True)
        def run_segmentation() -> np.ndarray:
            if data.ndim == 3 and min(data.shape) > 4:
                raise InputError(f"the layer is a stack {data.shape}; choose one 2-D image")
            return segment(data, model=run, diameter=diameter)

        return run_segmentation()

    def _done(self, layer: Any, labels: np.ndarray) -> None:
        name = f"{layer.name} cells"
        if name in self.viewer.layers:
            self.viewer.layers[name].data = labels
        else:
            self.viewer.add_labels(labels, name=name, scale=layer.scale[-2:],
                                   translate=layer.translate[-2:])  # fmt: skip
        self.status.value = f"{int(labels.max())} cells in {name!r}"


class SuggestWidget(_RunWidget):
    """Which images of a folder to correct next (``cganseg suggest``): the N the model is least
    sure of come in as layers, each image with its predicted cells (Labels, ready to correct)
    and its confidence map (0: a cell only some mirrored or turned views find)."""

    action = "Suggest"
    shipped = True

    def input_widget(self) -> Any:
        return FileEdit(label="images folder", mode="d")

    def target(self) -> tuple[Any, str] | None:
        folder = Path(self.input.value)
        if not folder.is_dir() or str(self.input.value) in ("", "."):
            return None
        return folder, folder.name

    def options(self) -> list[Any]:
        self.n = SpinBox(label="images to suggest", min=1, max=1000, value=3)
        return [self.n]

    def work(self, folder: Path, run: str | Path) -> FunctionWorker:
        n = int(self.n.value)

        @thread_worker(progress={"total": 0, "desc": "cganseg: ranking"}, ignore_errors=True)
        def run_ranking() -> list[Suggestion]:
            return rank(load(run), collect_inputs(folder), progress=False)[:n]

        return run_ranking()

    def _done(self, folder: Path, top: list[Suggestion]) -> None:
        for s in top:
            name = s.path.stem
            self.viewer.add_image(read_image(s.path, "gray")[0], name=name)
            self.viewer.add_labels(s.labels, name=f"{name} cells")
            self.viewer.add_image(s.confidence, name=f"{name} confidence", colormap="magma",
                                  contrast_limits=(0, 1), opacity=0.5, visible=False)  # fmt: skip
        names = ", ".join(f"{s.path.name} ({s.score:.2f})" for s in top)
        self.status.value = f"correct first: {names}"


class GenerateWidget(_RunWidget):
    """Generate an image from the chosen Labels layer with a ``cganseg train`` run's generator."""

    action = "Generate"
    layer_type = napari.layers.Labels

    def options(self) -> list[Any]:
        self.seed = SpinBox(label="seed", min=0, max=2**31 - 1, value=0)
        return [self.seed]

    def work(self, layer: Any, run: str | Path) -> FunctionWorker:
        seed = int(self.seed.value)
        data = np.asarray(layer.data)

        @thread_worker(progress={"total": 0, "desc": "cganseg: generating"}, ignore_errors=True)
        def run_generation() -> np.ndarray:
            if data.ndim != 2:
                raise InputError(f"the layer has shape {data.shape}; choose 2-D labels")
            image = load_generator(run).generate(data.astype(np.int64), seed)
            return (image + 1) / 2  # [-1, 1] -> [0, 1]

        return run_generation()

    def _done(self, layer: Any, image: np.ndarray) -> None:
        name = f"{layer.name} generated (seed {self.seed.value})"
        rgb = image.shape[0] == 3
        data = np.moveaxis(image, 0, -1) if rgb else image[0] if image.shape[0] == 1 else image
        self.viewer.add_image(data, name=name, rgb=rgb, contrast_limits=(0, 1),
                              scale=layer.scale[-2:], translate=layer.translate[-2:])  # fmt: skip
        self.status.value = f"generated {name!r}"
