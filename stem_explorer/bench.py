"""``stem-explorer bench``: runs the benchmark suite of the source checkout.

The suite lives in the top-level ``benchmarks/`` package of the repository; it is not
part of the installed distribution (``pyproject.toml`` packages ``stem_explorer``
only), so the command is offered only where the suite is found (:func:`available`):
importable as is (running from the repository root), or beside this package in an
editable/development install, in which case the repository root is put on
``sys.path`` (the cluster's worker processes inherit it, so the plain-read tasks
unpickle there too).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

#: The source checkout holding this package (the suite's home, when it is one).
_CHECKOUT = Path(__file__).resolve().parents[1]


def _importable() -> bool:
    """Whether ``import benchmarks.runner`` finds the suite without help (e.g. from the checkout's root)."""
    spec = importlib.util.find_spec("benchmarks")
    locations = (spec.submodule_search_locations or []) if spec else []
    return any((Path(p) / "runner.py").is_file() for p in locations)


def available() -> bool:
    """Whether the benchmark suite is here: a source checkout, not an installed wheel."""
    return _importable() or (_CHECKOUT / "benchmarks" / "runner.py").is_file()


def _import_suite():
    """The ``benchmarks.runner`` module, or a StemExplorerError saying where it is."""
    from .errors import StemExplorerError

    if _importable():
        return importlib.import_module("benchmarks.runner")
    if not (_CHECKOUT / "benchmarks" / "runner.py").is_file():
        raise StemExplorerError(
            "the benchmark suite is part of the source checkout (benchmarks/ at the "
            "repository root) and is not installed with the package; run "
            "`stem-explorer bench` from an editable install of a checkout"
        )
    sys.path.insert(0, str(_CHECKOUT))
    return importlib.import_module("benchmarks.runner")


def main(argv=None) -> int:
    """Run the benchmark suite with ``argv`` (the options of ``python -m benchmarks``)."""
    return _import_suite().main(argv, prog="stem-explorer bench")
