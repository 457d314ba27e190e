"""What ``stem-explorer lab`` checks and prepares before it starts JupyterLab.

Everything the lab needs is checked before anything is written, so that a missing
package, a read-only folder, a port in use or a full disk is reported at once instead
of after minutes spent writing the sample: JupyterLab and the widgets importable, the
widgets' JavaScript bundle present, the notebook and sample folders writable, the
port free, the sample's size within the free space. Then the notebooks shipped with
the package are copied into the working folder (never over a file that is there:
the user's edits stay) and the lab serves that folder.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .errors import StemExplorerError

#: The notebook folder of a source checkout, served in place when it is there.
CHECKOUT_NOTEBOOKS = Path("notebooks")
#: Where an installed package's notebooks are copied when no folder is named.
DEFAULT_NOTEBOOKS = Path("stem_explorer_notebooks")
#: Port tried first when none is asked for (JupyterLab's usual one).
DEFAULT_PORT = 8888
#: Modules the lab and the explorer notebook import (the ``jupyter`` extra).
JUPYTER_MODULES = ("jupyterlab", "ipykernel", "ipywidgets", "anywidget", "bqplot", "bqplot_image_gl")


class LabSetupError(StemExplorerError, RuntimeError):
    """``stem-explorer lab`` cannot start: software missing, a folder not writable, a port in use."""


@dataclass(frozen=True)
class LabPlan:
    """Checked inputs of a lab: the folder it serves, the notebook, sample and port."""

    notebook_dir: Path
    notebook: str
    sample_path: Path
    port: int


def bundled_notebooks() -> Path:
    """The notebooks shipped with the package (``stem_explorer/notebooks``)."""
    return Path(__file__).resolve().parent / "notebooks"


def choose_notebook_dir(requested: Optional[Path] = None) -> Path:
    """``requested``, else ``./notebooks`` when it holds the explorer (a source
    checkout), else ``./stem_explorer_notebooks``."""
    if requested is not None:
        return Path(requested)
    if (CHECKOUT_NOTEBOOKS / "explorer.ipynb").is_file():
        return CHECKOUT_NOTEBOOKS
    return DEFAULT_NOTEBOOKS


def check_jupyter() -> None:
    """Raise LabSetupError naming the extra to install when a module of it is missing."""
    missing = [name for name in JUPYTER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise LabSetupError(
            f"`stem-explorer lab` needs JupyterLab and the widgets, and {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed in {sys.prefix}: "
            f"pip install 'stem_explorer[jupyter]'"
        )


def check_bundle() -> None:
    """Raise the bundle's own error (naming its fix) when the MaskEditor cannot load."""
    from .widgets._bundle import esm_path

    esm_path("mask_editor.js")


def check_writable(folder: Path, what: str, option: str) -> None:
    """Raise LabSetupError naming ``what`` the folder is for and the command-line
    ``option`` to change unless files can be created in ``folder`` (or, where it does
    not exist yet, in the folder that will hold it); nothing is created."""
    from ._atomic import check_writable_folder
    from .errors import SaveError

    try:
        check_writable_folder(folder)
    except SaveError:
        raise LabSetupError(
            f"cannot write the {what} into {str(folder.absolute())!r}: not writable (read-only "
            f"file system or permissions, or a file there); pass {option} with a writable "
            f"folder, or make this one writable"
        ) from None


def check_port(port: Optional[int], host: str = "127.0.0.1") -> int:
    """``port`` if it is free; with ``port=None`` :data:`DEFAULT_PORT` or, if that is
    taken, one the OS picks. A port asked for and in use raises LabSetupError."""
    from .lab import free_port

    if port is None:
        return free_port(DEFAULT_PORT, host)
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise LabSetupError(
                f"port {port} on {host} is not available ({exc.strerror or exc}; another "
                f"Jupyter server?): pass another --port, or leave --port out to use a free one"
            ) from None
    return port


def copy_notebooks(folder: Path) -> list[Path]:
    """Copy the bundled notebooks missing from ``folder`` (made if need be) into it; return the copies.

    A notebook already there is left as it is (it may hold the user's work). Each copy
    is written under a temporary name and renamed, so none is ever half written.
    """
    copied = []
    folder.mkdir(parents=True, exist_ok=True)
    for source in sorted(bundled_notebooks().glob("*.ipynb")):
        target = folder / source.name
        if target.exists():
            continue
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{source.name}.", suffix=".tmp", delete=False) as tmp:
            tmp.write(source.read_bytes())
        try:
            os.link(tmp.name, target)  # fails if a file appeared meanwhile: never replaces one
        except FileExistsError:
            continue
        finally:
            os.unlink(tmp.name)
        copied.append(target)
    return copied


def prepare_lab(
    *,
    notebook_dir: Optional[Path],
    notebook: str,
    sample_dir: Path,
    nav_shape: Sequence[int],
    sig_shape: Sequence[int],
    port: Optional[int],
) -> LabPlan:
    """Check everything the lab needs, then copy the notebooks; the sample is not written.

    Raises :class:`LabSetupError` (or the bundle's or sample's own error) naming the
    problem and the option that changes it.
    """
    from .sample import check_free_space, standard_sample_path

    check_jupyter()
    check_bundle()
    bundled = sorted(p.name for p in bundled_notebooks().glob("*.ipynb"))
    if notebook not in bundled:
        raise LabSetupError(f"--notebook {notebook!r} is not one of the notebooks: {', '.join(bundled)}")
    chosen_port = check_port(port)
    sample = standard_sample_path(sample_dir, nav_shape, sig_shape)
    if not sample.exists():
        check_free_space(sample, nav_shape, sig_shape)
    folder = choose_notebook_dir(notebook_dir)
    check_writable(folder, "notebooks", "--notebook-dir")
    if not sample.exists():
        check_writable(Path(sample_dir), "sample data set", "--dir")
    copied = copy_notebooks(folder)
    if copied:
        print(f"copied {', '.join(p.name for p in copied)} into {folder.resolve()}", flush=True)
    return LabPlan(notebook_dir=folder.resolve(), notebook=notebook, sample_path=sample, port=chosen_port)
