"""The package as users meet it: ``python -m build`` (the sdist, then the wheel from the
sdist; no Node.js on PATH), the wheel installed into fresh virtual environments
(tests/venv_fixtures.py: no index, no network), then ``stem-explorer lab`` and the
explorer notebook run there."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import nbformat
import pytest

from stem_explorer.widgets._bundle import inputs_digest
from cgroup_fixtures import own_cpu_group
from deploy_commands import build_command, install_target
from venv_fixtures import FreshVenv, wheel_requirements

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
#: What a user's installation needs besides the modules, inside the package.
PACKAGE_DATA = [
    "static/mask_editor.js",
    "static/build-info.json",
    "io/schemas/raw_partitions.schema.json",
    "masks/schema.json",
    "widgets/colormaps.json",
    *(f"notebooks/{name}" for name in NOTEBOOKS),
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """(sdist, wheel): ``python -m build`` of the checkout (the sdist, then the wheel
    from the sdist) with only this interpreter's folder on PATH: no node, no npm."""
    out = tmp_path_factory.mktemp("dist")
    no_node = dict(os.environ, PATH=str(Path(sys.executable).parent))
    assert shutil.which("node", path=no_node["PATH"]) is None and shutil.which("npm", path=no_node["PATH"]) is None
    command = [sys.executable, *build_command(out, ROOT, offline=True)[1:]]
    done = subprocess.run(command, capture_output=True, text=True, env=no_node, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (sdist,) = out.glob("stem_explorer-*.tar.gz")
    (wheel,) = out.glob("stem_explorer-*.whl")
    return sdist, wheel


def test_sdist_and_wheel_from_it_carry_the_package_data(dists):
    sdist, wheel = dists
    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        in_sdist = set(tar.getnames())
        info = json.load(tar.extractfile(f"{top}/stem_explorer/static/build-info.json"))
    with zipfile.ZipFile(wheel) as z:
        in_wheel = set(z.namelist())
    for name in PACKAGE_DATA:
        assert f"{top}/stem_explorer/{name}" in in_sdist, f"sdist lacks {name}"
        assert f"stem_explorer/{name}" in in_wheel, f"wheel (from the sdist) lacks {name}"
    # the bundle shipped is the one built from the sources shipped beside it
    assert info["inputs_sha256"] == inputs_digest(ROOT)
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in in_wheel)


@pytest.fixture
def fresh(dists, tmp_path):
    """A fresh venv with the wheel installed without extras."""
    _, wheel = dists
    venv = FreshVenv(tmp_path / "venv")
    own = wheel_requirements(wheel)
    venv.provide([r for r in own if "extra ==" not in r], set(), own)
    done = venv.pip_install(str(wheel))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    venv.wheel, venv.own = wheel, own
    return venv


def test_installed_without_jupyter_offers_what_works(fresh, tmp_path):
    """No benchmark suite in a wheel, so no `bench`; `lab` names the extra it needs
    before it writes anything."""
    done = fresh.run("stem-explorer", "--help", cwd=tmp_path)
    assert done.returncode == 0 and "lab" in done.stdout and "bench" not in done.stdout, done.stdout
    done = fresh.run("stem-explorer", "bench", cwd=tmp_path)
    assert done.returncode == 2 and "invalid choice: 'bench'" in done.stderr
    done = fresh.run("stem-explorer", "lab", "--dir", "data", cwd=tmp_path)
    assert done.returncode == 2 and "pip install 'stem_explorer[jupyter]'" in done.stderr, done.stderr
    assert "setup.sh" not in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["venv"]


class Lab:
    """``stem-explorer lab`` in its own process group, its output collected by a thread."""

    def __init__(self, venv, args, cwd):
        self.process = subprocess.Popen(["stem-explorer", "lab", *args], cwd=cwd, env=venv.env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True).start()

    def url(self, timeout=180.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            found = re.search(r"http://127\.0\.0\.1:\d+/lab/tree/\S+", "".join(self.lines))
            if found:
                return found.group(0)
            time.sleep(0.2)
        pytest.fail(f"no URL from `stem-explorer lab`:\n{''.join(self.lines)}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(30)
            finally:
                if self.process.poll() is None:
                    os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.returncode


@pytest.mark.cluster
def test_installed_wheel_serves_and_runs_the_explorer(fresh, tmp_path):
    """With the jupyter extra: `stem-explorer lab` copies the notebooks to a folder it
    names, writes the small sample asked for and serves the explorer notebook; the
    notebook then runs headless (Explorer, MaskEditor, jobs) on the venv's Python."""
    fresh.provide(["stem_explorer[jupyter]"], set(), fresh.own)
    done = fresh.pip_install(install_target(fresh.wheel))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    work = tmp_path / "work"
    work.mkdir()
    lab = Lab(fresh, ["--nav-shape", "16", "16", "--sig-shape", "32", "32"], work)
    try:
        url = lab.url()
        with urllib.request.urlopen(url.replace("/lab/tree/", "/api/contents/"), timeout=30) as response:
            served = json.load(response)
    finally:
        assert lab.stop() == 0, "".join(lab.lines)
    notebooks = work / "stem_explorer_notebooks"
    assert f"into {notebooks}" in "".join(lab.lines)
    assert served["name"] == "explorer.ipynb" and served["content"]["cells"]
    assert sorted(p.name for p in notebooks.iterdir()) == NOTEBOOKS
    sample = work / "sample_data" / "sample_16x16x32x32.h5"

    # numba compiles the kernels on their first use in a fresh install; embedded workers
    # do it at the lowest priority, so on a busy machine that can take minutes: do it
    # once here, at normal priority, as the first worker would (into numba's cache)
    done = fresh.run(str(fresh.python), "-c", "from stem_explorer.engine.warmup import warm_up; warm_up()", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    # the explorer notebook, headless (nbclient) on the venv's Python: the Explorer and
    # its MaskEditor open on the sample and compute; then (a cell added to the copy) a
    # mask drawn as the editor would gives the numpy reference image
    check = (
        "import h5py, numpy as np\n"
        "from stem_explorer.masks import rasterize\n"
        "explorer.editor.shapes = [{'kind': 'ring', 'cy': 15.5, 'cx': 15.5, 'r_inner': 4, 'r_outer': 12, 'op': 'add'}]\n"
        "explorer.wait(300)\n"
        "data = h5py.File(path)['data/frames'][()]\n"
        "reference = np.einsum('abyx,yx->ab', data, rasterize(explorer.editor.mask(), data.shape[2:]))\n"
        "np.testing.assert_allclose(explorer.navigation_image(), reference, rtol=1e-6)\n"
        "print('explorer image equals numpy')\n"
    )
    runner = (
        "import sys, nbformat\n"
        "from nbclient import NotebookClient\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        "nb.cells.append(nbformat.v4.new_code_cell(sys.argv[3]))\n"
        "NotebookClient(nb, timeout=600, kernel_name='python3').execute()\n"
        "nbformat.write(nb, sys.argv[2])\n"
    )
    executed = tmp_path / "executed.ipynb"
    env = dict(fresh.env, STEM_EXPLORER_DATA=str(sample))
    with own_cpu_group(f"stem-explorer-wheel-{os.getpid()}") as prefix:  # see tests/cgroup_fixtures.py
        done = fresh.run(*prefix, str(fresh.python), "-c", runner, str(notebooks / "explorer.ipynb"), str(executed),
                         check, cwd=notebooks, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    outputs = [o for c in nbformat.read(executed, as_version=4).cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs)
    assert "session.compute(" in printed and "explorer image equals numpy" in printed
