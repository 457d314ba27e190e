"""Binder without Docker: an environment built exactly from binder/ as repo2docker
builds it, and the notebooks run there within Binder's limits, one core and 2 GiB, as
a container has them (session fixtures: the Binder test checks the run, the
documentation build renders its outputs)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from cgroup_fixtures import CONTAINER_VIEW, cgroups_available, new_cgroup
from venv_fixtures import FreshVenv

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
MEMORY_LIMIT = 2 * 2**30
#: What repo2docker's Python image has before binder/requirements.txt (its
#: buildpacks/conda/environment.py-3.x.yml: JupyterLab 4, Notebook 7, ipywidgets 8;
#: nbclient comes with them), plus the build backend pip would fetch for `.`.
REPO2DOCKER_BASE = ["jupyterlab>=4", "notebook>=7", "ipywidgets>=8", "ipykernel", "nbclient", "setuptools>=77"]
NOTEBOOKS = ("explorer.ipynb", "quickstart.ipynb", "custom_masks.ipynb")
#: A cell appended to the explorer notebook's copy: the worker count it ran on.
WORKERS_CELL = 'print("workers:", explorer.session.n_workers)'


def repository_copy(target: Path) -> Path:
    """The files Binder gets (git's, committed or not ignored) and the bundle that its
    Node.js would build (copied: tests run offline and the bundle here is current)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source, copy = ROOT / name, target / name
        if not os.path.lexists(source):
            continue  # deleted in the work tree, not committed yet
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, copy, follow_symlinks=False)
    shutil.copytree(ROOT / "stem_explorer" / "static", target / "stem_explorer" / "static")
    return target


@contextlib.contextmanager
def binder_limits(stage: Path):
    """A command prefix that runs a process as in a Binder container: a CPU quota of one
    core and a memory limit of 2 GiB (real cgroups, the kernel enforces them), which
    dask sees where a container's processes see them; yields (prefix, peak-bytes
    reader). Without root and cgroup v1 (memory, cpu), it falls back to one core of
    CPU affinity and no memory limit (the reader is then None)."""
    if not cgroups_available():
        yield [shutil.which("taskset"), "-c", "0"], None
        return
    name = f"stem-explorer-binder-{os.getpid()}-{stage.name}"
    with new_cgroup("memory", name) as memory, new_cgroup("cpu", name) as cpu:
        (memory / "memory.limit_in_bytes").write_text(str(MEMORY_LIMIT))
        (cpu / "cpu.cfs_period_us").write_text("100000")
        (cpu / "cpu.cfs_quota_us").write_text("100000")
        stage.mkdir()
        prefix = [shutil.which("unshare"), "--mount", "--propagation", "private",
                  shutil.which("sh"), "-ec", CONTAINER_VIEW, "sh", str(memory), str(cpu), str(stage)]
        yield prefix, lambda: int((memory / "memory.max_usage_in_bytes").read_text())


@pytest.fixture(scope="session")
def binder(tmp_path_factory):
    """A repository copy with a venv built from binder/ as repo2docker would: the base
    image's packages, `pip install -r binder/requirements.txt` in the repository, then
    binder/postBuild, within the limits."""
    repo = repository_copy(tmp_path_factory.mktemp("binder") / "repo")
    venv = FreshVenv(repo.parent / "venv")
    lines = [l.strip() for l in (BINDER / "requirements.txt").read_text().splitlines() if l.strip() and not l.startswith("#")]
    # a local requirement (`.[widgets]`) is this package: its own requirements, linked
    as_names = [f"stem_explorer{l[1:]}" if l.startswith(".") else l for l in lines]
    venv.provide(REPO2DOCKER_BASE + as_names, set(), metadata.requires("stem_explorer"))
    # Binder's image has Node.js (for the build hook); offline here, hence no index and
    # no build isolation (the backend is linked in above)
    venv.env["PATH"] += os.pathsep + str(Path(shutil.which("npm")).parent)
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv.python), "install", "--no-index",
                           "--no-build-isolation", "-r", "binder/requirements.txt"],
                          cwd=repo, env=venv.env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with binder_limits(repo.parent / "postbuild-mounts") as (prefix, peak):
        done = venv.run(*prefix, str(repo / "binder" / "postBuild"), cwd=repo, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        venv.postbuild_peak = peak() if peak else None
    venv.repo = repo
    return venv


@pytest.fixture(scope="session")
def binder_notebooks(binder, tmp_path_factory):
    """The notebooks executed in the Binder environment, each launched through
    binder/start as a Binder session is, within the limits: {name: executed copy, with
    the widgets' state as JupyterLab saves it}, and ``peak`` (bytes of memory at most,
    or None without the memory cgroup)."""
    out = tmp_path_factory.mktemp("binder_notebooks")
    runner = out / "run_notebooks.py"
    runner.write_text(
        "import sys, nbformat\n"
        "from nbclient import NotebookClient\n"
        "for source, target in zip(sys.argv[1::2], sys.argv[2::2]):\n"
        "    nb = nbformat.read(source, as_version=4)\n"
        "    if source.endswith('explorer.ipynb'):\n"
        f"        nb.cells.append(nbformat.v4.new_code_cell({WORKERS_CELL!r}))\n"
        "    NotebookClient(nb, timeout=300, kernel_name='python3', store_widget_state=True).execute()\n"
        "    nbformat.write(nb, target)\n"
    )
    notebooks = binder.repo / "notebooks"
    pairs = [str(p) for name in NOTEBOOKS for p in (notebooks / name, out / name)]
    with binder_limits(out / "mounts") as (prefix, peak):
        done = binder.run(*prefix, str(binder.repo / "binder" / "start"), str(binder.python), str(runner), *pairs,
                          cwd=notebooks, timeout=900)
        used = peak() if peak else None
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"peak": used, **{name: out / name for name in NOTEBOOKS}}
