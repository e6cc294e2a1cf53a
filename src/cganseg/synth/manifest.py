"""The settings file of an output folder, so that an interrupted command resumes safely.

``synth-masks`` and ``generate`` write many files, each atomically, and are deterministic per
output index. Run again into the same folder with the same settings, they skip what is already
there and finish the rest. With other settings they stop instead: mixing outputs of two settings
in one folder, or replacing the user's files, would lose work silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cganseg.errors import InputError
from cganseg.runtime.atomic import write_text
from cganseg.runtime.outputs import foreign_entries


def claim_folder(out: Path, name: str, settings: dict[str, Any]) -> bool:
    """Create ``out`` with ``out/name`` recording ``settings``; True when resuming a run.

    Refuses a non-empty folder that holds no such file, and one whose file records other
    settings.
    """
    out = Path(out)
    manifest = out / name
    if manifest.is_file():
        try:
            saved = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read ({exc})", manifest) from None
        if saved != json.loads(json.dumps(settings)):
            changed = sorted(k for k in {**saved, **settings} if saved.get(k) != settings.get(k))
            raise InputError(
                f"holds outputs made with other settings ({', '.join(changed)}); choose another "
                "output folder",
                out,
            )
        return True
    if out.exists() and (not out.is_dir() or foreign_entries(out)):
        raise InputError("output folder exists and is not empty; choose another", out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder ({exc.strerror or exc})", out) from None
    write_text(manifest, json.dumps(settings, indent=2) + "\n")
    return False

