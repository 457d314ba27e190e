"""The documentation site (docs/, Sphinx) builds with warnings as errors and nitpicky
references; its notebooks are rendered with the outputs of their Binder run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from binder_fixtures import NOTEBOOKS, WORKERS_CELL

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

pytestmark = pytest.mark.slow


def sphinx(source: Path, out: Path) -> subprocess.CompletedProcess:
    """``sphinx-build -W --keep-going -n`` (warnings fail, every reference must resolve),
    rendering notebooks as they are (no execution)."""
    env = dict(os.environ, STEM_EXPLORER_DOCS_EXECUTE="off")
    return subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
                           str(source), str(out)], env=env, capture_output=True, text=True, timeout=600)


def docs_copy(target: Path) -> Path:
    """docs/ without its build folder and with the notebooks link left out."""
    shutil.copytree(DOCS, target, ignore=shutil.ignore_patterns("_build", "notebooks"))
    return target


@pytest.mark.cluster
def test_docs_build_with_every_reference_resolved(binder_notebooks, tmp_path):
    source = docs_copy(tmp_path / "docs")
    (source / "notebooks").mkdir()
    for name in NOTEBOOKS:
        nb = nbformat.read(binder_notebooks[name], as_version=4)
        nb.cells = [c for c in nb.cells if c.source != WORKERS_CELL]  # the Binder test's own probe
        nbformat.write(nb, source / "notebooks" / name)
    done = sphinx(source, tmp_path / "html")
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    html = tmp_path / "html"
    page = lambda name: (html / name).read_text()  # noqa: E731
    assert "CoM error vs the known beam shift" in page("notebooks/quickstart.html")  # rendered with outputs
    assert "virtual images equal the numpy reference" in page("notebooks/custom_masks.html")
    explorer = page("notebooks/explorer.html")  # the widgets with their state, for the embed manager
    assert "application/vnd.jupyter.widget-state+json" in explorer and "explorer.session.n_workers" not in explorer
    assert 'id="stem_explorer.Session.run"' in page("api/session.html")  # the API from the docstrings
    assert 'id="stem_explorer.engine.Job"' in page("api/engine.html")
    assert 'id="stem_explorer.masks.Disk"' in page("api/masks.html")
    assert "<p>raw_partitions</p>" in page("guide/formats.html")  # the readers table, made at build time


def test_a_broken_reference_fails_the_build(tmp_path):
    """The configuration's -W -n really fails on a reference to nothing."""
    source = tmp_path / "docs"
    shutil.copytree(DOCS / "_ext", source / "_ext")
    shutil.copy(DOCS / "conf.py", source / "conf.py")
    (source / "index.md").write_text("# Broken\n\nSee {class}`stem_explorer.NoSuchThing`.\n")
    done = sphinx(source, tmp_path / "html")
    assert done.returncode != 0
    assert "py:class reference target not found: stem_explorer.NoSuchThing" in done.stdout + done.stderr
