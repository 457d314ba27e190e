"""``stem-explorer lab`` checks everything before it writes: real processes, a real
read-only mount and a real small file system (mount namespaces, as root)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stem_explorer import bench
from stem_explorer.cli import build_parser
from stem_explorer.lab_setup import LabSetupError, bundled_notebooks, prepare_lab
from stem_explorer.sample import DiskSpaceError, check_free_space
from stem_explorer.widgets import _bundle
from cgroup_fixtures import needs_mounts

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--nav-shape", "8", "8", "--sig-shape", "16", "16"]

def run_cli(args, cwd, timeout=120, wrap=None):
    """``python -m stem_explorer ARGS`` as its own process group (a server it might
    start dies with it); ``wrap`` is a shell script run first, in a private mount
    namespace, that ends by exec-ing the command ("$@")."""
    command = [sys.executable, "-m", "stem_explorer", *args]
    if wrap:
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-ec", wrap, "sh", *command]
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"`stem-explorer {' '.join(args)}` did not stop within {timeout} s:\n{out}\n{err}")
    return process.returncode, out, err


def test_port_in_use_is_refused_before_anything_is_written(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc, out, err = run_cli(["lab", "--port", str(port), "--dir", "data", *SMALL], tmp_path)
    assert rc == 2, out + err
    assert f"port {port} on 127.0.0.1 is not available" in err and "--port" in err
    assert list(tmp_path.iterdir()) == []  # no sample, no notebook folder


@needs_mounts
@pytest.mark.parametrize("which, option", [("notebooks", "--notebook-dir"), ("data", "--dir")])
def test_read_only_folder_is_refused_before_anything_is_written(tmp_path, which, option):
    for name in ("notebooks", "data"):
        (tmp_path / name).mkdir()
    folder = tmp_path / which
    read_only = f'mount --bind "{folder}" "{folder}"; mount -o remount,bind,ro "{folder}"; exec "$@"'
    rc, out, err = run_cli(["lab", "--notebook-dir", "notebooks", "--dir", "data", *SMALL], tmp_path, wrap=read_only)
    assert rc == 2, out + err
    assert "cannot write the" in err and str(folder) in err and option in err and "read-only file system" in err
    assert list((tmp_path / "data").iterdir()) == [] and list((tmp_path / "notebooks").iterdir()) == []


@needs_mounts
def test_sample_too_large_for_the_disk_is_refused_with_a_shape_that_fits(tmp_path):
    """A 96 MiB file system: 128 MiB of frames are refused before any byte is written,
    and the scan shape the message proposes is then written there."""
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (
        f'mount -t tmpfs -o size=96m tmpfs "{disk}"; "$@" || echo "lab rc=$?"; '
        f'ls -A "{disk}"; echo "listed"; '
        f'exec "$1" -m stem_explorer sample "{disk}/fits.h5" --nav-shape 32 32 --sig-shape 128 128 -q'
    )
    args = ["lab", "--dir", str(disk), "--notebook-dir", "nb", "--nav-shape", "64", "64", "--sig-shape", "128", "128"]
    rc, out, err = run_cli(args, tmp_path, wrap=script)
    assert "lab rc=2" in out, out + err
    assert "needs 128.0 MiB" in err and "--nav-shape 32 32" in err
    assert out.split("lab rc=2\n", 1)[1].startswith("listed"), f"something was written: {out}"
    assert not (tmp_path / "nb").exists()  # refused before the notebooks were copied
    assert rc == 0 and "fits.h5" in out.split("listed", 1)[1], out + err


def test_free_space_check_names_a_scan_that_fits(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    side = int((free / 2**15) ** 0.5) * 2  # twice as many rows and columns as fit
    with pytest.raises(DiskSpaceError, match=r"pass a smaller nav_shape") as caught:
        check_free_space(tmp_path / "x.h5", (side, side), (128, 128))
    assert "--nav-shape" in str(caught.value) and list(tmp_path.iterdir()) == []
    assert check_free_space(tmp_path / "x.h5", (8, 8), (16, 16)) == 8 * 8 * 16 * 16 * 2


def test_notebooks_are_copied_once_and_edits_kept(tmp_path):
    kwargs = dict(notebook="explorer.ipynb", sample_dir=tmp_path / "data", nav_shape=(8, 8), sig_shape=(16, 16), port=None)
    plan = prepare_lab(notebook_dir=tmp_path / "nb", **kwargs)
    bundled = sorted(p.name for p in bundled_notebooks().glob("*.ipynb"))
    assert {"explorer.ipynb", "quickstart.ipynb", "custom_masks.ipynb"} <= set(bundled)
    assert sorted(p.name for p in plan.notebook_dir.iterdir()) == bundled  # no temporary left
    assert (plan.notebook_dir / "explorer.ipynb").read_bytes() == (bundled_notebooks() / "explorer.ipynb").read_bytes()
    assert not plan.sample_path.exists()  # prepared, not written
    edited = plan.notebook_dir / "explorer.ipynb"
    edited.write_text("my work")
    (plan.notebook_dir / "quickstart.ipynb").unlink()
    prepare_lab(notebook_dir=tmp_path / "nb", **kwargs)
    assert edited.read_text() == "my work" and (plan.notebook_dir / "quickstart.ipynb").exists()


def test_unknown_notebook_is_refused_before_the_sample(tmp_path):
    with pytest.raises(LabSetupError, match=r"'nope.ipynb' is not one of the notebooks: .*explorer.ipynb"):
        prepare_lab(notebook_dir=tmp_path / "nb", notebook="nope.ipynb", sample_dir=tmp_path / "data",
                    nav_shape=(8, 8), sig_shape=(16, 16), port=None)
    assert list(tmp_path.iterdir()) == []


def test_source_checkout_serves_its_notebooks_in_place(monkeypatch):
    monkeypatch.chdir(ROOT)
    from stem_explorer.lab_setup import choose_notebook_dir

    assert choose_notebook_dir() == Path("notebooks")


def test_missing_bundle_of_an_installed_package_says_reinstall(tmp_path, monkeypatch):
    """An installed package has no scripts/setup.sh: its advice is to reinstall."""
    monkeypatch.setattr(_bundle, "STATIC_DIR", tmp_path / "site-packages" / "stem_explorer" / "static")
    monkeypatch.setattr(_bundle, "REPO_ROOT", tmp_path / "site-packages")
    with pytest.raises(_bundle.BundleError) as caught:
        _bundle.esm_path("mask_editor.js")
    assert "setup.sh" not in str(caught.value) and "pip install --force-reinstall stem_explorer" in str(caught.value)


def test_bench_is_offered_in_the_source_checkout():
    """(The installed wheel, without the suite, does not offer it: tests/test_packaging.py.)"""
    assert bench.available()
    assert "bench" in build_parser().format_help()
