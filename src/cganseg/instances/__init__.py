"""Instance modes: how a segmenter's output becomes cells, one file per mode (issue 28).

``watershed`` (3 classes, seeded watershed), ``components`` (2 classes, connected components:
the paper) and ``flows`` (Cellpose's flows and cell probability: the default of every trainer,
since it split touching cells far better in conventional training, README "Measured results").
Everything that depends on the mode is a method of its object (:class:`~.base.InstanceMode`);
other modules find the object by name here and never test the name. A new mode is a new file
and one line in :data:`MODES`.
"""

from __future__ import annotations

from cganseg.errors import InputError
from cganseg.instances.base import InstanceMode
from cganseg.instances.components import Components
from cganseg.instances.flows import Flows
from cganseg.instances.watershed import Watershed

#: every mode by name
MODES: dict[str, InstanceMode] = {m.name: m for m in (Watershed(), Components(), Flows())}
#: the mode of a run that names none (with 3 classes; with 2, ``components``)
DEFAULT = "flows"


def mode(name: str | None) -> InstanceMode:
    """The mode called ``name``; InputError naming the choices for anything else."""
    if not isinstance(name, str) or name not in MODES:
        raise InputError(f"instances must be one of {', '.join(MODES)}, got {name!r}")
    return MODES[name]


def default_name(n_classes: int) -> str:
    """The mode of a new run that names none: :data:`DEFAULT` with 3 classes (its class count
    is then unused), the paper's ``components`` with 2."""
    return DEFAULT if n_classes == 3 else Components.name


def stored_name(n_classes: int) -> str:
    """The mode of a checkpoint of a version before modes were stored (before issue 16): its
    class count said it, 3 classes the watershed."""
    return Watershed.name if n_classes == 3 else Components.name
