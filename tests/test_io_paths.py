"""open_dataset on paths that are not plain readable data: pipes, loops, folders,
files the user may not read. Each gets the package's error naming the path and the
fix, never a hang or a raw OSError."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

from stem_explorer.errors import DataSetError, DataSetNotFoundError, FormatError
from stem_explorer.io import open_dataset


def _open_in_subprocess(path, timeout=60, **options):
    """Run open_dataset(path) in a fresh interpreter; returns (exit code, output).
    A hang shows as a timeout instead of blocking the test run."""
    code = textwrap.dedent(
        f"""
        from stem_explorer.io import open_dataset
        from stem_explorer.errors import StemExplorerError
        try:
            open_dataset({str(path)!r}, **{options!r})
        except StemExplorerError as exc:
            print(type(exc).__name__, exc)
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("name", ["pipe", "pipe.npy", "pipe.h5", "pipe.mib"])
def test_named_pipe_is_refused_without_blocking(tmp_path, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    result = _open_in_subprocess(fifo)  # a reader that opened the pipe would wait forever
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("DataSetError"), result.stdout
    assert "named pipe" in result.stdout and str(fifo) in result.stdout
    assert "regular file" in result.stdout


def test_named_pipe_with_explicit_format_is_refused(tmp_path):
    fifo = tmp_path / "stream"
    os.mkfifo(fifo)
    result = _open_in_subprocess(fifo, format="raw", nav_shape=(2,), sig_shape=(2, 2), dtype="u1")
    assert result.stdout.startswith("DataSetError") and "named pipe" in result.stdout


def test_symlink_loop_is_not_called_missing(tmp_path):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(DataSetError, match="symbolic link.*loop") as info:
        open_dataset(a)
    assert not isinstance(info.value, DataSetNotFoundError)
    assert str(a) in str(info.value)


def test_dangling_symlink_names_its_target(tmp_path):
    link = tmp_path / "data.npy"
    link.symlink_to(tmp_path / "moved" / "data.npy")
    with pytest.raises(DataSetNotFoundError, match="symbolic link") as info:
        open_dataset(link)
    assert str(tmp_path / "moved" / "data.npy") in str(info.value)


def test_folder_named_like_a_file_format(tmp_path):
    folder = tmp_path / "x.npy"
    folder.mkdir()
    with pytest.raises(DataSetError, match="is a folder") as info:
        open_dataset(folder)
    assert str(folder) in str(info.value)
    with pytest.raises(DataSetError, match="is a folder"):
        open_dataset(folder, format="npy")
    with pytest.raises(DataSetError, match="is a folder"):
        open_dataset(folder, format="raw", nav_shape=(2,), sig_shape=(2, 2), dtype="u1")


# -- files another user may not read: a real second user (root drops to nobody) ----------
_AS_NOBODY = textwrap.dedent(
    """
    import json, os, sys
    from stem_explorer.io import open_dataset
    from stem_explorer.errors import StemExplorerError
    os.setgid(65534)
    os.setuid(65534)
    try:
        ds = open_dataset(sys.argv[1], **json.loads(sys.argv[2]))
        ds.read_frames(0, 1)
        print("opened")
    except StemExplorerError as exc:
        print(type(exc).__name__, exc)
    except Exception as exc:
        print("RAW", type(exc).__name__, exc)
    """
)


@pytest.fixture
def private_folder():
    """A folder others may enter, for files they may not read (created and removed
    here); the check runs as ``nobody``, so it needs root."""
    if os.geteuid() != 0:
        pytest.skip("dropping to another user needs root")
    folder = tempfile.mkdtemp(prefix="stem-explorer-perm-")
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder)  # root removes what the test made, whatever its mode


def _as_nobody(path, **options):
    result = subprocess.run(
        [sys.executable, "-c", _AS_NOBODY, str(path), json.dumps(options)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _write_mib(path):
    header = b"MQ1,000001,00384,01,0004,0004,U08,   1x1,01,2021-05-07 18:51:10.905800,0.1,0,0,0"
    path.write_bytes((header.ljust(384, b"\0") + bytes(16)) * 2)


@pytest.mark.parametrize("kind", ["raw", "npy", "mib"])
def test_unreadable_file_is_a_permission_error(private_folder, kind):
    path = os.path.join(private_folder, f"data.{kind}")
    options = {}
    if kind == "raw":
        with open(path, "wb") as f:
            f.write(bytes(2 * 4 * 4))
        options = {"nav_shape": [2], "sig_shape": [4, 4], "dtype": "u1"}
    elif kind == "npy":
        np.save(path, np.zeros((2, 4, 4), "u1"))
    else:
        from pathlib import Path
        _write_mib(Path(path))
    os.chmod(path, 0o600)
    out = _as_nobody(path, **options)
    assert out.startswith("DataSetPermissionError"), out
    assert path in out and "permission" in out.lower()


def test_folder_that_cannot_be_entered(private_folder):
    inner = os.path.join(private_folder, "closed")
    os.mkdir(inner, 0o700)
    path = os.path.join(inner, "data.npy")
    np.save(path, np.zeros((2, 4, 4), "u1"))
    out = _as_nobody(path)
    assert out.startswith("DataSetPermissionError"), out
    assert path in out
