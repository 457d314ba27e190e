"""The explorer on a live Merlin acquisition in real Chromium (JupyterLab only, to keep
it short): a simulator process sends a synthetic scan slowly, the navigation image
fills in on the page while the frames arrive, and once the scan ends it equals numpy."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import load_json
from test_explorer_browser import KNOWN_UPSTREAM, kernel_until, wait_until

from stem_explorer.browser_testing import run_notebook, start_server
from stem_explorer.io.synthetic import write_mib
from stem_explorer.live import SimulatorProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.cluster]

NAV, SIG, FPS = (6, 8), (32, 32), 2  # 48 frames: 24 s of scanning, so the first image comes mid-scan

#: the notebook a user would write: warm the cluster's kernels, then explore the scan
#: while it is recorded (the scan starts when merlin() connects)
CELLS = [
    "import os\n"
    "import numpy as np\n"
    "from distributed import Client, LocalCluster\n"
    "from stem_explorer import Session, SumFrame, VirtualDetector, masks\n"
    "from stem_explorer.live import merlin\n"
    "from stem_explorer.widgets import Explorer\n"
    "client = Client(LocalCluster(n_workers=2, threads_per_worker=1, host='127.0.0.1', dashboard_address='127.0.0.1:0'))\n"
    f"with Session(np.zeros((2, 3, *{SIG}), '>u2'), client=client) as warm:\n"
    "    warm.run(SumFrame(), VirtualDetector(masks.Disk(15, 17, 6))).result(120)",
    "live = merlin('127.0.0.1', control_port=int(os.environ['SIM_CONTROL']), data_port=int(os.environ['SIM_DATA']),\n"
    f"              nav_shape={NAV}, record='recording')\n"
    "explorer = Explorer(live, client=client)\n"
    "explorer",
]

#: the scan's state and what the page's navigation view was sent, at one moment
STATE = """
import json, numpy as np
image = explorer.navigation_image()
print(json.dumps({"ended": live.ended, "frames": live.frames_available, "progress": explorer.progress.value,
                  "filled": 0 if image is None else int(np.isfinite(image).sum())}))
"""

REFERENCE = f"""
import json, numpy as np
from stem_explorer.masks import rasterize
explorer.wait(120)
frames = np.load("frames.npy").astype(np.float64)
reference = np.einsum("fyx,yx->f", frames, rasterize(explorer.editor.mask(), {SIG})).reshape({NAV})
print(json.dumps({{"error": explorer.error, "ended": live.ended, "dropped": live.stats().frames_dropped,
                  "shown_equal": bool(np.allclose(explorer.navigation_image(), reference, rtol=1e-6)),
                  "sum_equal": bool(np.array_equal(explorer.detector_image(), frames.sum(0))),
                  "progress": explorer.progress.value, "status": explorer.status.value}}))
"""

#: the tick labels of the navigation view's two scan axes (not its colour bar)
AXIS_LABELS = """() => [...document.querySelectorAll('.se-nav-view g.axis')].filter(a => !a.closest('g.ColorBar'))
  .map(a => [...a.querySelectorAll('.tick text')].map(t => t.textContent))"""


def notebook(cells: list) -> str:
    return json.dumps({
        "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": c} for c in cells],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    })


@pytest.fixture(scope="module")
def server(browser_env):
    """JupyterLab serving the live notebook, a simulator process waiting for its receiver."""
    work = browser_env["work"] / "live"
    root = work / "notebooks"
    root.mkdir(parents=True)
    yy, xx = np.mgrid[: SIG[0], : SIG[1]]
    beam = (yy - 15) ** 2 + (xx - 17) ** 2 <= 36
    rng = np.random.default_rng(5)
    # the beam's intensity varies over the scan, so the image has something to show
    frames = rng.integers(0, 20, (NAV[0] * NAV[1], *SIG)) + beam * rng.integers(100, 400, NAV[0] * NAV[1])[:, None, None]
    np.save(root / "frames.npy", frames)
    mib = write_mib(work / "scan.mib", frames, pixel_depth="U16", counter_depth=12)
    (root / "live.ipynb").write_text(notebook(CELLS))
    with SimulatorProcess(mib, nav_shape=NAV, fps=FPS) as sim:
        env = dict(browser_env["env"], SIM_CONTROL=str(sim.control_port), SIM_DATA=str(sim.data_port))
        srv = start_server("lab", root, work, env)
        yield srv
        srv.stop()


def test_live_scan_fills_in_in_the_browser(page, server, kernel, shots):
    run_notebook(page, server, "live.ipynb")
    page.wait_for_selector(".se-explorer", timeout=120_000)
    run = kernel()
    nav = page.locator(".se-nav-view")
    kernel_until(run, "'explorer' in globals() and explorer.navigation_image() is not None"
                 " and np.isfinite(explorer.navigation_image()).any()", "the first scan positions",
                 timeout=120)  # 60 s ran out once in a full suite (the first live job in a cold kernel)
    # two moments of the scan: the page's navigation view changes between them while
    # the frames still arrive, and so do the progress bar and the image the kernel sent
    first, state = nav.screenshot(), load_json(run(STATE))
    shots("filling")
    # the acquisition line counts the frames received while they arrive
    counted = wait_until(lambda: re.search(r"recording (\d+) of 48 frames", page.inner_text(".se-explorer")), 10,
                         "the acquisition line")
    assert 0 < int(counted[1]) < 48, counted[0]

    def filled_further():
        # the progress bar is throttled (PROGRESS_RATE), so it may trail the image by
        # one interval: wait for both
        now = load_json(run(STATE))
        advanced = now["filled"] > state["filled"] and now["progress"] > state["progress"]
        return now if advanced and nav.screenshot() != first else None

    later = wait_until(filled_further, 30, "the navigation view to fill in further")
    shots("filled-further")
    assert not load_json(run(STATE))["ended"], f"the scan ended before the view had changed: {state}, {later}"
    assert 0 < state["filled"] < later["filled"] < NAV[0] * NAV[1], (state, later)
    assert state["progress"] < later["progress"] < 1, (state, later)

    final = load_json(run(REFERENCE, timeout=150))
    assert final["ended"] and final["dropped"] == 0 and final["error"] is None, final
    assert final["shown_equal"] and final["sum_equal"] and final["progress"] == 1.0, final
    shots("scan-ended")
    wait_until(lambda: "acquisition complete: 48 of 48 frames" in page.inner_text(".se-explorer"), 10,
               "the acquisition line's end")
    # the scan axes: whole numbers, evenly spaced (a 6-row scan was labelled 0 1 1 2 2 3 3 ...)
    axes = page.evaluate(AXIS_LABELS)
    steps = [set(np.diff(sorted(int(label) for label in labels))) for labels in axes]
    assert len(axes) == 2 and all(len(s) == 1 and s.pop() > 0 for s in steps), axes
    run("explorer.close(); client.close()")
    real_problems = [p for p in page.problems if not any(k in p for k in KNOWN_UPSTREAM)]
    assert not real_problems, real_problems
