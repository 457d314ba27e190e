"""The notebooks run top to bottom (their code cells, in a fresh interpreter)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.cluster
@pytest.mark.parametrize("name", ["quickstart.ipynb"])
def test_notebook_runs(name, tmp_path):
    cells = json.loads((NOTEBOOKS / name).read_text())["cells"]
    code = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    (tmp_path / "notebook_cells.py").write_text(code)
    # worker processes are spawned and re-import __main__: keep the cells out of it,
    # as a Jupyter kernel does
    script = tmp_path / "run_notebook.py"
    script.write_text('if __name__ == "__main__":\n    import runpy\n    runpy.run_path("notebook_cells.py", run_name="notebook")\n')
    env = dict(os.environ, PYTHONPATH=str(NOTEBOOKS.parent))
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "CoM error vs the known beam shift" in run.stdout
