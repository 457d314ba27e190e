"""The notebooks run top to bottom in a real Jupyter kernel (nbclient), headless."""

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from stem_explorer.sample import make_sample

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ALL = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))


def test_the_notebooks_exist():
    assert {"explorer.ipynb", "quickstart.ipynb", "custom_masks.ipynb", "custom_analysis.ipynb", "compare.ipynb"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_notebook_is_committed_clean(name):
    """No outputs, execution counts or widget state in the repository's notebooks."""
    nb = json.loads((NOTEBOOKS / name).read_text())
    assert "widgets" not in nb.get("metadata", {}), f"{name}: strip the widget state"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{name}: clear the outputs"


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_notebook_runs(name, tmp_path, monkeypatch):
    data = make_sample(tmp_path / "explorer_sample.h5", nav_shape=(24, 32), sig_shape=(48, 40))
    monkeypatch.setenv("STEM_EXPLORER_DATA", str(data))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(NOTEBOOKS.parent), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    expected = {
        "quickstart.ipynb": "CoM error vs the known beam shift",
        "custom_masks.ipynb": "virtual images equal the numpy reference",
        "explorer.ipynb": "session.compute(",
        "custom_analysis.ipynb": "the custom analysis equals the numpy reference",
        "compare.ipynb": "stem-explorer batch",
    }
    assert expected.get(name, "") in text
