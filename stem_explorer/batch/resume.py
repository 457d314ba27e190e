"""Resuming a batch: which inputs already have complete, matching results.

Each results file of a batch records, in its provenance under ``"batch"``, the
recipe, the input's path and fingerprint (size and modification time) and the run's
figures. A re-run keeps a results file when it is a complete results file of
stem_explorer (saved atomically, so a file under the final name is whole) made by
the same recipe from the input as it is now; every other input is computed again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ..errors import StemExplorerError
from ..results import Results


def batch_provenance(recipe, input_path: Path, fingerprint: dict, figures: dict) -> dict:
    """The ``"batch"`` entry of a results file's provenance."""
    return {
        "recipe": recipe.to_dict(),
        "recipe_sha256": recipe.fingerprint,
        "input": {"path": str(input_path), **fingerprint},
        "figures": figures,
    }


def recorded(path: Path) -> Optional[dict]:
    """The ``"batch"`` provenance of the results file at ``path`` (and its
    ``complete`` flag as ``"complete"``), or None when there is no readable results
    file of a batch there. Reads the provenance attribute only."""
    import h5py

    if not path.is_file():  # the usual case on a first run: no HDF5 open needed
        return None
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("software") != "stem_explorer":
                return None
            provenance = json.loads(f.attrs["provenance"])
    except (OSError, KeyError, TypeError, ValueError, RecursionError):
        return None
    entry = provenance.get("batch") if isinstance(provenance, dict) else None
    if not isinstance(entry, dict):
        return None
    return dict(entry, complete=provenance.get("complete") is True)


def up_to_date(path: Path, recipe, input_path: Path, fingerprint: dict) -> Optional[Results]:
    """The results at ``path`` when they are complete and were made by ``recipe`` from
    ``input_path`` as it is now (same size and modification time); else None."""
    entry = recorded(path)
    if entry is None or not entry["complete"] or entry.get("recipe_sha256") != recipe.fingerprint:
        return None
    if entry.get("input") != {"path": str(input_path), **fingerprint}:
        return None
    try:
        return Results.load(path)
    except StemExplorerError:  # damaged after all: compute it again
        return None


def held_by_other(out_dir: Path):
    """``taken(name, path)`` for :func:`~stem_explorer.batch.inputs.name_outputs`:
    whether ``out_dir/name`` holds a file other than this input's results (another
    input's, or a file no batch wrote: never replaced)."""

    def taken(name: str, input_path: Path) -> bool:
        target = out_dir / name
        if not target.exists():
            return False
        entry = recorded(target)
        return entry is None or entry.get("input", {}).get("path") != str(input_path)

    return taken
