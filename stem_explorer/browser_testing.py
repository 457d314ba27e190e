"""Real Jupyter servers and a real Chromium, for the browser tests and the browser benchmark.

Servers (JupyterLab, Notebook 7, Voila) bind to 127.0.0.1 with a random token, run in
their own process group with a fresh config/runtime folder, and are stopped by PID.
Chromium is Debian's (``/usr/bin/chromium``) driven by Playwright for Python; Playwright
never downloads a browser here.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running Jupyter server: ``url(path)`` adds the token."""

    kind: str
    process: subprocess.Popen
    port: int
    token: str
    log: Path
    runtime_dir: Path  # the kernels' connection files are under it

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}{sep}token={self.token}"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def start_server(kind: str, root: Path, workdir: Path, env: dict, notebook: str = "explorer.ipynb") -> Server:
    """Start ``kind`` ("lab", "notebook" or "voila") serving ``root`` and wait until it answers."""
    port, token = free_port(), secrets.token_hex(12)
    config = workdir / f"jupyter-{kind}"
    shutil.rmtree(config, ignore_errors=True)
    (config / "runtime").mkdir(parents=True)
    server_env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(config / "config"),
        JUPYTER_RUNTIME_DIR=str(config / "runtime"),
        JUPYTERLAB_WORKSPACES_DIR=str(config / "workspaces"),
        JUPYTERLAB_SETTINGS_DIR=str(config / "settings"),
        **env,
    )
    # JupyterLab 4 asks on first start, in a toast over the page's bottom right corner
    # (where a click or drag then lands), whether to fetch its news: answered "no"
    notification = config / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text('{"fetchNews": "false"}')
    common = ["--no-browser", "--ServerApp.port_retries=0", "--ServerApp.allow_root=True"]
    if kind == "lab":
        args = [sys.executable, "-m", "jupyterlab", *common, "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
                f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    elif kind == "notebook":
        args = [sys.executable, "-m", "notebook", *common, "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
                f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"]
    elif kind == "voila":
        args = [sys.executable, "-m", "voila", str(root / notebook), "--no-browser", "--Voila.ip=127.0.0.1",
                f"--Voila.port={port}", "--Voila.port_retries=0", f"--token={token}",
                f"--Voila.connection_dir_root={config / 'runtime'}"]
    else:
        raise ValueError(kind)
    log = workdir / f"{kind}-server.log"
    process = subprocess.Popen(args, env=server_env, cwd=root, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(kind, process, port, token, log, config / "runtime")
    probe = server.url("api/status" if kind != "voila" else "")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(probe, timeout=5):
                return server
        except OSError:
            time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"{kind} server did not answer within 90 s:\n{log.read_text()[-3000:]}")


def launch_browser(playwright, user_data_dir: Path):
    """Debian's Chromium, headless, with a fresh profile; returns a BrowserContext."""
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=CHROMIUM,
        args=CHROMIUM_FLAGS,
        headless=True,
        viewport={"width": 1400, "height": 1000},
    )


def kernel_client(runtime_dir: Path, timeout: float = 60.0):
    """A jupyter_client connected to the (only) kernel the server started."""
    from jupyter_client import BlockingKernelClient

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = sorted(runtime_dir.rglob("kernel-*.json"), key=lambda p: p.stat().st_mtime)
        if files:
            client = BlockingKernelClient(connection_file=str(files[-1]))
            client.load_connection_file()
            client.start_channels()
            client.wait_for_ready(timeout=30)
            return client
        time.sleep(0.3)
    raise AssertionError(f"no kernel connection file in {runtime_dir}")


def run_in_kernel(client, code: str, timeout: float = 120.0) -> str:
    """Execute ``code`` in the notebook's kernel; return its stdout (fails on an error)."""
    out, errors = [], []

    def hook(msg):
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "error":
            errors.append("\n".join(content["traceback"]))

    reply = client.execute_interactive(code, timeout=timeout, output_hook=hook, store_history=False)
    assert reply["content"]["status"] == "ok" and not errors, "".join(errors)[-3000:]
    return "".join(out)


def run_notebook(page, server, notebook: str = "explorer.ipynb") -> None:
    """Open ``notebook`` (Voila: the one it serves) in the server's front end and run all cells."""
    if server.kind == "voila":
        # voila runs the notebook while it streams the page, so "load" waits for every
        # cell (a cluster start on a busy machine can pass goto's 30 s); the callers
        # wait for the widgets they need with their own timeouts
        page.goto(server.url(""), wait_until="commit")
        return
    path = f"lab/tree/{notebook}" if server.kind == "lab" else f"notebooks/{notebook}"
    page.goto(server.url(path))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_function("() => document.body.innerHTML.includes('Idle')", timeout=60_000)  # the kernel is up
    started = "() => [...document.querySelectorAll('.jp-InputPrompt')].some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))"
    for _attempt in range(4):  # the first click can land before the kernel connection is ready
        accept = page.locator(".jp-Dialog .jp-mod-accept")  # e.g. "Select Kernel": take the proposed one
        if accept.count():
            accept.first.click()
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            page.wait_for_function(started, timeout=10_000)
            return
        except Exception:
            page.keyboard.press("Escape")
    raise AssertionError("Run All Cells did not start the notebook")


def detector_point(page, y: float, x: float) -> tuple[float, float]:
    """Page coordinates of detector pixel (y, x) in the mask editor's canvas."""
    view = json.loads(page.get_attribute(".se-mask-editor", "data-view"))
    box = page.locator(".se-mask-editor-canvas").bounding_box()
    return box["x"] + view["offset_x"] + view["scale"] * x, box["y"] + view["offset_y"] + view["scale"] * y
