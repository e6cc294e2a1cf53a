"""napari dock widgets (magicgui): segment an Image layer into a Labels layer with a trained run
or a shipped starting model (:mod:`cganseg.pretrained`), and generate an image from a Labels
layer with a trained cGAN-Seg generator.

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
from cganseg.api import segment
from cganseg.errors import InputError, one_line
from cganseg.inference.generate import load_generator


class _RunWidget(Container):
    """A run folder, a layer, options and a button that starts the work in a thread."""

    #: what the button says, and the layer type the widget works on
    action = ""
    layer_type: Any = None

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.run_folder = FileEdit(label="run folder", mode="d")
        self.layer = create_widget(annotation=self.layer_type, label="layer")
        self.button = PushButton(text=self.action)
        self.status = Label(value="")
        super().__init__(widgets=[self.run_folder, self.layer, *self.options(), self.button,
                                  self.status])  # fmt: skip
        self.button.changed.connect(self.start)
        self.worker: FunctionWorker | None = None

    def options(self) -> list[Any]:
        return []

    def model(self) -> str | Path | None:
        """The model the work uses: the chosen run folder (None when none is chosen)."""
        run = Path(self.run_folder.value)
        if not run.exists() or str(self.run_folder.value) in ("", "."):
            return None
        return run

    def start(self) -> FunctionWorker | None:
        """Check the inputs and start the work; returns the running worker (None if refused)."""
        layer, run = self.layer.value, self.model()
        if layer is None:
            return self._fail(f"choose a layer to {self.action.lower()}")
        if run is None:
            return self._fail("choose a run folder (or best.pt) made by cganseg")
        self.status.value = f"{self.action.lower()}: {layer.name} ..."
        self.button.enabled = False
        worker = self.work(np.asarray(layer.data), run)
        worker.returned.connect(lambda result: self._done(layer, result))
        worker.errored.connect(self._failed)
        worker.finished.connect(lambda: setattr(self.button, "enabled", True))
        self.worker = worker
        worker.start()
        return worker

    def work(self, data: np.ndarray, run: str | Path) -> FunctionWorker:
        raise NotImplementedError

    def _done(self, layer: Any, result: np.ndarray) -> None:
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
    """Segment the chosen Image layer with a run's segmenter into a new Labels layer."""

    action = "Segment"
    layer_type = napari.layers.Image
    #: the model chooser's entry that means "the run folder below"
    RUN_FOLDER = "run folder"

    def options(self) -> list[Any]:
        self.source = ComboBox(label="model", value=self.RUN_FOLDER,
                               choices=[self.RUN_FOLDER, *pretrained.cards()])  # fmt: skip
        self.diameter = FloatSpinBox(label="cell diameter (0: the model's)", min=0, max=10000,
                                     value=0)  # fmt: skip
        return [self.source, self.diameter]

    def model(self) -> str | Path | None:
        """A shipped model by name, or the run folder when the chooser says so."""
        if self.source.value != self.RUN_FOLDER:
            return str(self.source.value)
        return super().model()

    def work(self, data: np.ndarray, run: str | Path) -> FunctionWorker:
        diameter = self.diameter.value or None

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


class GenerateWidget(_RunWidget):
    """Generate an image from the chosen Labels layer with a ``cganseg train`` run's generator."""

    action = "Generate"
    layer_type = napari.layers.Labels

    def options(self) -> list[Any]:
        self.seed = SpinBox(label="seed", min=0, max=2**31 - 1, value=0)
        return [self.seed]

    def work(self, data: np.ndarray, run: Path) -> FunctionWorker:
        seed = int(self.seed.value)

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
