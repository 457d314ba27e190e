"""Fixtures of the browser tests: a small sample, Jupyter servers, Chromium, a kernel client."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from stem_explorer.browser_testing import CHROMIUM, kernel_client, launch_browser, run_in_kernel, start_server

from stem_explorer.sample import make_sample

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("STEM_EXPLORER_ARTIFACTS", ROOT / "test-artifacts" / "browser"))
NAV, SIG = (24, 32), (48, 40)

pytestmark = pytest.mark.browser


def pytest_terminal_summary(terminalreporter):
    if ARTIFACTS.exists():
        terminalreporter.write_line(f"browser test screenshots: {ARTIFACTS}")


@pytest.fixture(scope="session")
def browser_env(tmp_path_factory):
    """The notebooks and a small sample in a temporary root; skips when Chromium is missing."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"browser tests need Debian's chromium at {CHROMIUM} (bash scripts/setup.sh installs it as root)")
    pytest.importorskip("playwright.sync_api", reason="browser tests need playwright (pip install -e '.[test]')")
    work = tmp_path_factory.mktemp("browser")
    root = work / "notebooks"
    shutil.copytree(ROOT / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "*.h5"))
    data = make_sample(work / "browser_sample.h5", nav_shape=NAV, sig_shape=SIG)
    env = {"STEM_EXPLORER_DATA": str(data), "PYTHONPATH": str(ROOT)}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return {"work": work, "root": root, "data": data, "env": env}


@pytest.fixture(scope="session")
def playwright_instance():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module", params=["lab", "notebook", "voila"])
def server(request, browser_env):
    srv = start_server(request.param, browser_env["root"], browser_env["work"], browser_env["env"])
    yield srv
    srv.stop()


@pytest.fixture
def page(playwright_instance, server, browser_env, request):
    """A fresh Chromium profile and page; collects page errors and failed requests."""
    profile = browser_env["work"] / f"profile-{server.kind}-{request.node.name}"
    context = launch_browser(playwright_instance, profile)
    page = context.new_page()
    page.problems = []
    # console errors too: a front end's broken extension often only logs there
    page.on("console", lambda m: m.type == "error" and page.problems.append(f"console error: {m.text} ({m.location.get('url')})"))
    page.on("pageerror", lambda e: page.problems.append(f"page error: {e}\n{(e.stack or '')[:800]}"))
    page.on("requestfailed", lambda r: page.problems.append(f"request failed: {r.url} {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and page.problems.append(f"HTTP {r.status}: {r.url}"))
    yield page
    try:  # the last state, for failures
        page.screenshot(path=str(ARTIFACTS / f"last-{request.node.name.replace('[', '-').replace(']', '')}.png"))
    except Exception:
        pass
    context.close()
    shutil.rmtree(profile, ignore_errors=True)


class Shots:
    """Numbered screenshots of one test under ARTIFACTS/<test name>/."""

    def __init__(self, page, name: str):
        self.page = page
        self.folder = ARTIFACTS / name
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.n = 0

    def __call__(self, step: str, locator=None) -> Path:
        self.n += 1
        path = self.folder / f"{self.n:02d}-{step}.png"
        (locator or self.page).screenshot(path=str(path))
        return path


@pytest.fixture
def shots(page, request):
    return Shots(page, request.node.name.replace("[", "-").replace("]", ""))


@pytest.fixture
def kernel(server, browser_env):
    """Lazily connects to the server's kernel (call it once the notebook runs)."""
    clients = []

    def connect():
        client = kernel_client(server.runtime_dir)
        clients.append(client)
        return lambda code, timeout=120.0: run_in_kernel(client, code, timeout)

    yield connect
    for c in clients:
        c.stop_channels()


def load_json(text: str):
    """The last line of ``text`` parsed as JSON (kernel cells print one JSON line)."""
    return json.loads(text.strip().splitlines()[-1])
