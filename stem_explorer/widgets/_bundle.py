"""The widgets' JavaScript bundle: where it is, and whether it is there and current.

``npm run build`` (run by ``scripts/build_js.sh``, itself run by ``scripts/setup.sh``)
bundles ``js/src`` into ``stem_explorer/static/`` and writes ``build-info.json`` there
with a digest of the bundle's inputs (:data:`INPUTS`). In a source checkout (``js/src``
beside the package) a bundle built from other inputs is stale; an installed package has
no ``js/src`` and trusts its bundle.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import StemExplorerError

__all__ = ["INPUTS", "BundleError", "REPO_ROOT", "STATIC_DIR", "esm_path", "inputs_digest"]

#: Where the built bundles live (inside the package, shipped as package data).
STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
#: The source checkout holding the package; its ``js/src`` is absent once installed.
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Inputs of the bundle relative to the repository root (as in ``js/digest.mjs``).
INPUTS = ("js/src", "stem_explorer/widgets/colormaps.json")

_CHECKOUT_FIX = "run `bash scripts/setup.sh` (or `npm run build` in the source checkout)"
# an installed package has no build script to run: its wheel was made without the bundle
_INSTALLED_FIX = (
    "this installation of stem_explorer lacks its package data; reinstall it from a "
    "complete wheel or sdist (`pip install --force-reinstall stem_explorer`); a wheel "
    "built from a git checkout needs Node.js 20+ with npm while it is built"
)


def _fix() -> str:
    """What to do about a missing bundle: rebuild in a source checkout, else reinstall."""
    return _CHECKOUT_FIX if (REPO_ROOT / "js" / "src").is_dir() else _INSTALLED_FIX


class BundleError(StemExplorerError, RuntimeError):
    """A widget's JavaScript bundle is missing or older than its sources."""


def _input_files(root: Path):
    for name in INPUTS:
        path = root / name
        if path.is_file():
            yield path
        elif path.is_dir():
            for child in path.rglob("*"):
                if child.is_file() and not any(p.startswith(".") for p in child.relative_to(path).parts):
                    yield child


def inputs_digest(root: Path) -> str:
    """Hex sha256 of the bundle's :data:`INPUTS` under ``root``, as ``js/digest.mjs`` computes it.

    Regular files (no path component starting with ``.``), sorted by their UTF-8 path
    relative to ``root`` with ``/`` separators; each adds ``path \\0 length \\0 bytes``.
    """
    files = sorted((p.relative_to(root).as_posix().encode("utf-8"), p) for p in _input_files(root))
    digest = hashlib.sha256()
    for key, path in files:
        content = path.read_bytes()
        digest.update(key + b"\0" + str(len(content)).encode("ascii") + b"\0")
        digest.update(content)
    return digest.hexdigest()


def esm_path(name: str) -> Path:
    """Path of the built bundle ``name`` (e.g. ``"mask_editor.js"``).

    Raises :class:`BundleError` naming the fix when the bundle is missing, or when this
    is a source checkout and the bundle's inputs changed since it was built.
    """
    path = STATIC_DIR / name
    info_path = STATIC_DIR / "build-info.json"
    if not path.is_file() or not info_path.is_file():
        missing = path if not path.is_file() else info_path
        raise BundleError(
            f"the widgets' JavaScript bundle is not built ({missing} is missing); {_fix()}"
        )
    sources = REPO_ROOT / "js" / "src"
    if sources.is_dir():
        try:
            built_from = json.loads(info_path.read_text(encoding="utf-8")).get("inputs_sha256")
        except (ValueError, AttributeError):
            built_from = None
        if built_from != inputs_digest(REPO_ROOT):
            raise BundleError(
                f"the widgets' JavaScript bundle {path} is stale: its sources ({sources} and "
                f"{', '.join(INPUTS[1:])}) changed since it was built; {_CHECKOUT_FIX}"
            )
    return path
