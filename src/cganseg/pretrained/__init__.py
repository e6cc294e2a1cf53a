"""The starting models cganseg ships (issue 29): segmenters trained only on permissively licensed
data, that load offline from the installed package wherever a model is named.

Each is two files in this folder, written by ``benchmarks/start_models.py`` (the recipe, its data
and its scores): ``NAME.pt``, a segmenter checkpoint with half-precision weights (small enough
for a wheel; they are widened to float32 when loaded), and ``NAME.json``, its model card
(training data and their licenses, recipe, CPU-hours, held-out scores, intended use, limits,
and the SHA-256 of ``NAME.pt``). The checksum is checked before the weights are read, so a
damaged or replaced file is refused in one line instead of being loaded.

A path on disk wins over a shipped name: a run folder called ``nuclei`` in the working
directory is that run, not the shipped model.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from cganseg.errors import InputError

FOLDER = Path(__file__).resolve().parent


def cards(folder: Path | None = None) -> dict[str, dict[str, Any]]:
    """The model card of every shipped model, by name (sorted)."""
    return {p.stem: _card(p) for p in sorted((folder or FOLDER).glob("*.json"))}


def _card(card_path: Path) -> dict[str, Any]:
    try:
        return json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"shipped model card unreadable ({exc})", card_path) from None


def is_shipped(name: str, folder: Path | None = None) -> bool:
    """Whether ``name`` names a shipped model (a card in ``folder``)."""
    folder = folder or FOLDER
    return "/" not in name and "\\" not in name and (folder / f"{name}.json").is_file()


def weights(name: str, folder: Path | None = None) -> Path:
    """The checkpoint file of shipped model ``name``, after checking it against its card's
    SHA-256 (InputError naming the file when it is missing or differs)."""
    folder = folder or FOLDER
    if not is_shipped(name, folder):
        known = ", ".join(cards(folder)) or "none"
        raise InputError(f"no shipped model {name!r} (shipped: {known})")
    card = _card(folder / f"{name}.json")
    path = folder / card.get("file", f"{name}.pt")
    if not path.is_file():
        raise InputError(f"shipped model {name!r}: its weights file is missing; reinstall "
                         "cganseg", path)  # fmt: skip
    if _sha256(path, path.stat().st_mtime_ns) != card.get("sha256"):
        raise InputError(f"shipped model {name!r}: the file does not match its card's "
                         "SHA-256 (damaged or replaced); reinstall cganseg", path)  # fmt: skip
    return path


@lru_cache(maxsize=8)
def _sha256(path: Path, mtime_ns: int) -> str:
    """SHA-256 of ``path``, once per file version (``mtime_ns`` is the cache key's part)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_card(path: Path, folder: Path | None = None) -> dict[str, Any] | None:
    """The card of the shipped model whose weights file ``path`` is (None: not a shipped
    file), so that what is made from it (an exported package) keeps its license and sample."""
    folder = folder or FOLDER
    path = Path(path)
    if path.parent.resolve() != folder.resolve() or not (folder / f"{path.stem}.json").is_file():
        return None
    return _card(folder / f"{path.stem}.json")


def sample_image(card: dict[str, Any]) -> Path | None:
    """A bundled image like the model's training images (its card's ``sample``, a path inside
    the installed package), for an export's test image."""
    return (FOLDER.parent / card["sample"]) if card.get("sample") else None


def describe(name: str, card: dict[str, Any]) -> str:
    """A few lines on a shipped model for ``cganseg models``: what it is, its data and license,
    and its held-out scores."""
    data = ", ".join(f"{d['set']} ({d['train']} train)" for d in card.get("training_data", []))
    lines = [f"{name}: {card.get('title', '')}",
             f"  license {card.get('license', '?')}; trained on {data}",
             f"  use: {card.get('intended_use', '')}",
             f"  limits: {card.get('limits', '')}"]  # fmt: skip
    for set_name, row in card.get("scores", {}).items():
        f1 = row.get("auto", {}).get("f1_iou50_pooled", float("nan"))
        lines.append(f"  held-out {set_name}: F1@0.5 {f1:.3f} (--diameter auto), "
                     f"n={row.get('n_test')}")  # fmt: skip
    sample = sample_image(card)
    if sample is not None and sample.is_file():  # an image to try it on at once
        lines.append(f"  sample image: {sample}")
    return "\n".join(lines)
