"""``stem-explorer bench``: runs the benchmark suite of the source checkout.

The suite lives in the top-level ``benchmarks/`` package of the repository (it is
not part of the installed distribution, which ``setup.py`` limits to
``stem_explorer``). This module finds it: importable as is (running from the
repository root), or beside this package in an editable/development install, in
which case the repository root is put on ``sys.path`` (the cluster's worker
processes inherit it, so the plain-read tasks unpickle there too).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def _import_suite():
    """The ``benchmarks.runner`` module, or a StemExplorerError saying where it is."""
    from .errors import StemExplorerError

    root = Path(__file__).resolve().parents[1]
    try:
        return importlib.import_module("benchmarks.runner")
    except ModuleNotFoundError as exc:
        if exc.name not in ("benchmarks", "benchmarks.runner"):
            raise
    if not (root / "benchmarks" / "runner.py").is_file():
        raise StemExplorerError(
            "the benchmark suite is part of the source checkout (benchmarks/ at the "
            "repository root) and is not installed with the package; run "
            "`stem-explorer bench` from an editable install of a checkout"
        )
    sys.path.insert(0, str(root))
    return importlib.import_module("benchmarks.runner")


def main(argv=None) -> int:
    """Run the benchmark suite with ``argv`` (the options of ``python -m benchmarks``)."""
    return _import_suite().main(argv, prog="stem-explorer bench")
