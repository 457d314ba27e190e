"""``stem-explorer lab``: JupyterLab on 127.0.0.1 with the explorer notebook open."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .errors import StemExplorerError

#: Environment variable the notebooks read for the data set to open.
DATA_ENV = "STEM_EXPLORER_DATA"


def free_port(preferred: int, host: str = "127.0.0.1") -> int:
    """``preferred`` if nothing listens there, else a free port the OS picks."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise StemExplorerError(f"no free TCP port on {host}")


def wait_for_server(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    """Poll ``url`` until it answers; fail with the server's exit code if it dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StemExplorerError(f"the Jupyter server exited with code {process.returncode}; see its log above")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise StemExplorerError(f"the Jupyter server did not answer {url} within {timeout:.0f} s")


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt


def run_lab(data_path: Path, *, port: int = 8888, notebooks: Path, open_notebook: str = "explorer.ipynb") -> int:
    """Start JupyterLab (bound to 127.0.0.1) on the folder ``notebooks`` with ``open_notebook``
    open and ``data_path`` as the data set; print the URL; run until interrupted.
    ``stem-explorer lab`` checks and prepares the folder first (:mod:`.lab_setup`)."""
    port = free_port(port)
    token = secrets.token_hex(16)
    # the token goes by environment, which only this user (and root) can read; a command
    # line is readable by every local user (`ps`, /proc/PID/cmdline)
    env = dict(os.environ, **{DATA_ENV: str(data_path), "JUPYTER_TOKEN": token})
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--ServerApp.allow_root=True",
        f"--ServerApp.root_dir={notebooks}",
    ]
    process = subprocess.Popen(command, env=env)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # `kill` stops the server too, like Ctrl-C
    try:
        wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", process)
        url = f"http://127.0.0.1:{port}/lab/tree/{open_notebook}?token={token}"
        print(f"\nstem_explorer: JupyterLab is running with {open_notebook} on {data_path.name}:\n\n    {url}\n", flush=True)
        print("Open the URL in a browser and run all cells; Ctrl-C stops the server.", flush=True)
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
